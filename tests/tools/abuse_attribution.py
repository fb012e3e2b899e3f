"""Who had the CPUs while test_abuse.py's good clients waited.

usage: abuse_attribution.py TIMINGS.json PERF_SCRIPT.txt

TIMINGS.json: one scenario's queries, written by test_abuse.py when
ABUSE_TIMINGS is set (when each query was sent, on CLOCK_MONOTONIC, and
its latency). PERF_SCRIPT.txt: the scheduler's switches over the same run,
from

    perf record -a -k monotonic -e sched:sched_switch -o perf.data  (for the run)
    perf script -i perf.data -F cpu,time,trace > PERF_SCRIPT.txt

For each window (quiet, abused) prints the share of the CPUs each group of
tasks had over the whole window and over the slowest 1% of its queries
(the union of their [sent, answered] intervals), with the idle share: a
slow query that waited while the CPUs were busy with PostgreSQL or the
abuser process waited for the box; one that waited while sluice ran
waited for sluice."""

import json
import os
import re
import sys
from collections import defaultdict

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from abuse_lib import percentile  # noqa: E402  (the p99 test_abuse.py reports)

SWITCH = re.compile(r"\[(\d+)\]\s+([\d.]+):.*?next_comm=(.+?) next_pid=(\d+)")


def group(comm):
    """A task's group, by its name: one line per kind of work."""
    for prefix, name in (("swapper", "idle"), ("postgres", "postgres"), ("sluice", "sluice"),
                         ("goodclients", "good clients"), ("ksoftirqd", "kernel"),
                         ("kworker", "kernel"), ("rcu_", "kernel"), ("migration", "kernel")):
        if comm.startswith(prefix):
            return name
    if comm in ("slowloris", "connstorm", "python3") or comm.startswith("python"):
        return "abuser / pytest"
    return "other: " + re.sub(r"[-/:.]?\d+$", "", comm)  # the box's other tasks, by name


def load_segments(path):
    """[(start, end, group)]: what each CPU ran, switch to switch; and how
    many CPUs the trace has."""
    last = {}
    segments = []
    with open(path) as f:
        for line in f:
            m = SWITCH.search(line)
            if not m:
                continue
            cpu, t, comm = int(m.group(1)), float(m.group(2)), m.group(3)
            if cpu in last:
                start, running = last[cpu]
                segments.append((start, t, running))
            last[cpu] = (t, group(comm))
    return segments, len(last)


def union(intervals):
    merged = []
    for a, b in sorted(intervals):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return merged


def shares(segments, intervals, ncpu):
    """Each group's share of ncpu CPUs over the intervals (sorted, disjoint)."""
    total = sum(b - a for a, b in intervals) * ncpu
    used = defaultdict(float)
    i = 0
    for start, end, who in sorted(segments):
        while i < len(intervals) and intervals[i][1] <= start:
            i += 1
        j = i
        while j < len(intervals) and intervals[j][0] < end:
            used[who] += max(0.0, min(end, intervals[j][1]) - max(start, intervals[j][0]))
            j += 1
    return {who: t / total for who, t in used.items()} if total else {}


def main():
    timings = json.load(open(sys.argv[1]))
    segments, ncpu = load_segments(sys.argv[2])
    print(f"{timings['scenario']}: {ncpu} CPUs, {len(segments)} runs between scheduler switches")
    columns = {}
    for window in ("quiet", "abused"):
        sent, latency = timings[window]["sent"], timings[window]["latency"]
        whole = [[min(sent), max(s + lat for s, lat in zip(sent, latency))]]
        cut = percentile(latency, 99)
        slowest = [[s, s + lat] for s, lat in zip(sent, latency) if lat >= cut]
        slow = union(slowest)
        span = sum(b - a for a, b in slow)
        print(f"  {window}: {len(sent)} queries, p99 {cut * 1e3:.2f} ms; slowest 1%: "
              f"{len(slowest)} queries over {span * 1e3:.1f} ms")
        columns[f"{window} window"] = shares(segments, whole, ncpu)
        columns[f"{window} slowest 1%"] = shares(segments, slow, ncpu)
    # Tasks under 0.5% in every column go together on one line.
    small = {g for col in columns.values() for g in col
             if all(c.get(g, 0) < 0.005 for c in columns.values())}
    for col in columns.values():
        col["the rest"] = sum(col.pop(g, 0) for g in small)
    groups = sorted({g for col in columns.values() for g in col},
                    key=lambda g: -columns["abused slowest 1%"].get(g, 0))
    print("  share of the CPUs, %".ljust(26) + "".join(f"{c:>20}" for c in columns))
    for g in groups:
        print(f"  {g:<24}" + "".join(f"{100 * col.get(g, 0):>20.1f}" for col in columns.values()))


if __name__ == "__main__":
    main()
