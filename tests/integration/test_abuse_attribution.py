"""tests/tools/abuse_attribution.py on a made-up trace whose answer is
known: docs/reliability.md's table of who had the CPUs rests on it."""

import json
import os
import subprocess
import sys

TOOL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools",
                    "abuse_attribution.py")


def switch(cpu, t, prev, nxt):
    return (f"[{cpu:03d}] {t:.6f}: prev_comm={prev} prev_pid=1 prev_prio=120 prev_state=S "
            f"==> next_comm={nxt} next_pid=2 next_prio=120\n")


def test_shares_over_whole_windows_and_the_slowest_queries(tmp_path):
    # Quiet window, [10, 11): CPU 0 runs sluice; CPU 1 postgres for half a
    # second, nothing for 0.4, then kdamond for the last 0.1, when the two
    # slow queries wait. Abused window, [20, 21): the same, with the abuser
    # in postgres's place and CPU 1 idle while the slow ones wait.
    trace = "".join([
        switch(0, 10.0, "swapper/0", "sluice"), switch(1, 10.0, "swapper/1", "postgres"),
        switch(1, 10.5, "postgres", "swapper/1"), switch(1, 10.9, "swapper/1", "kdamond.0"),
        switch(0, 11.0, "sluice", "swapper/0"), switch(1, 11.0, "kdamond.0", "swapper/1"),
        switch(0, 20.0, "swapper/0", "sluice"), switch(1, 20.0, "swapper/1", "python3"),
        switch(1, 20.5, "python3", "swapper/1"),
        switch(0, 21.0, "sluice", "swapper/0"), switch(1, 21.0, "swapper/1", "swapper/1"),
    ])
    # 99 quick queries and 2 slow ones (100 ms, over the window's last
    # 0.1 s): the p99 is the slow ones' latency, and they are the slowest 1%.
    def window(start):
        return {"sent": [start + i * 0.005 for i in range(99)] + [start + 0.9] * 2,
                "latency": [0.001] * 99 + [0.1] * 2}
    (tmp_path / "sched.txt").write_text(trace)
    (tmp_path / "t.json").write_text(json.dumps(
        {"scenario": "made_up", "quiet": window(10.0), "abused": window(20.0)}))
    out = subprocess.run([sys.executable, TOOL, str(tmp_path / "t.json"),
                          str(tmp_path / "sched.txt")],
                         capture_output=True, text=True, check=True).stdout
    rows = {line[:26].strip(): [float(x) for x in line[26:].split()]
            for line in out.splitlines()[4:]}
    # Columns: quiet window, quiet slowest 1%, abused window, abused slowest 1%.
    assert "quiet: 101 queries, p99 100.00 ms; slowest 1%: 2 queries over 100.0 ms" in out, out
    assert rows["sluice"] == [50.0, 50.0, 50.0, 50.0], out
    assert rows["postgres"] == [25.0, 0.0, 0.0, 0.0], out
    assert rows["other: kdamond"] == [5.0, 50.0, 0.0, 0.0], out
    assert rows["abuser / pytest"] == [0.0, 0.0, 25.0, 0.0], out
    assert rows["idle"] == [20.0, 0.0, 25.0, 50.0], out
