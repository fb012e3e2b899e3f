#!/usr/bin/python3
"""Instructions per transaction of sluice under callgrind. Driven by
bench/profile.sh.

One run: initdb the same throwaway PostgreSQL as bench/bench.py (same
directory, lock and ports, so it never runs beside `make bench`), then for
each protocol (-M simple, -M extended):

  1. start the release sluice with `workers = 1` under
     `valgrind --tool=callgrind`, same pool settings as the benchmark;
  2. warm up: pgbench -S -t PROFILE_WARMUP per client, so the server
     connections exist and every code path has run once;
  3. zero callgrind's counters (vgdb monitor command `zero`);
  4. pgbench -S -c PROFILE_CLIENTS -t PROFILE_XACTS;
  5. dump the counters (vgdb `dump`), stop sluice;
  6. callgrind_annotate the dump: total instructions (Ir) / transactions, and
     the top PROFILE_TOP functions by inclusive and by self cost, per
     transaction.

The measured window holds the measured pgbench's connection set-up and
tear-down (PROFILE_CLIENTS logins, amortized over all its transactions) and
whatever sluice's timers did meanwhile. Writes bench/results/profile.txt;
the raw callgrind files are copied to PROFILE_RAW_DIR.

Env: PROFILE_CLIENTS=10, PROFILE_XACTS=2000 (per client), PROFILE_WARMUP=50,
PROFILE_POOL_MODE=transaction (session, statement),
PROFILE_WORKLOAD=select-only (tpcb-like: pgbench's default script),
PROFILE_PROTOCOLS="simple extended", PROFILE_TOP=15,
PROFILE_OUT=bench/results/profile.txt, PROFILE_RAW_DIR=/tmp/sluice-callgrind,
SLUICE_BIN=build/release/sluice, plus bench.py's BENCH_DIR / BENCH_PORT /
BENCH_KEEP. PROFILE_DEBUG=1 keeps callgrind_annotate's output beside the dumps.
PROFILE_SPLIT=on|off: streaming replicas are made as for the read/write split
part of the benchmark (bench/split_bench.py) and the database entry gets
`replicas=` the first of them, with `read_write_split` on or off (primary_reads
= fallback: with it on, every read goes to the replica): what routing a
request costs, off against on, with the same ini otherwise.
"""

import datetime
import fcntl
import os
import re
import shlex
import shutil
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench as B  # noqa: E402

VALGRIND = "valgrind"
VGDB = "vgdb"
ANNOTATE = "callgrind_annotate"
# Its own port, past the benchmark's (PostgreSQL, PgBouncer, sluice slots).
PORT = B.PG_PORT + 10
# PROFILE_WORKLOAD: select-only (pgbench -S, the default) or tpcb-like.
WORKLOAD = os.environ.get("PROFILE_WORKLOAD", "").strip() or "select-only"
# PROFILE_SPLIT: empty (no replicas), off or on (read_write_split).
SPLIT = os.environ.get("PROFILE_SPLIT", "").strip().lower()
# PROFILE_CACHE: empty (no cache settings), off or memory (cache = off |
# memory, both with bench/cache_bench.py's [cache] rule for a table the
# workload never touches), or hit (cache = memory, the rule for
# pgbench_accounts, the workload cache_bench.py's cached select of 1,000
# statements, filled before the counters are zeroed; -M simple only).
CACHE = os.environ.get("PROFILE_CACHE", "").strip().lower()
# PROFILE_INSIGHTS: empty (the default: on), on or off (per-query statistics).
INSIGHTS = os.environ.get("PROFILE_INSIGHTS", "").strip().lower()
# PROFILE_RYW: empty (the default: user), or a read_your_writes value; with
# PROFILE_SPLIT=on and PROFILE_WORKLOAD=rw-90-10 (bench/ryw_bench.py's mix:
# select-only 9, simple-update 1), what read-your-writes costs a transaction.
RYW = os.environ.get("PROFILE_RYW", "").strip().lower()
B.EXTRA_WORKLOADS["rw-90-10"] = ["-b", "select-only@9", "-b", "simple-update@1"]
if CACHE == "hit":
    WORKLOAD = "cache-select"


def env_str(name, default):
    v = os.environ.get(name, "").strip()
    return v or default


def vgdb(pid, command, timeout=60):
    """A callgrind monitor command through vgdb, as the postgres user (vgdb
    finds the FIFOs by user name). --max-invoke-ms=0: no ptrace invoker,
    valgrind picks the command up at its next poll (--vgdb-poll below;
    sluice's 250 ms janitor timer wakes it even when no client talks)."""
    cmd = ["runuser", "-u", B.RUN_AS, "--", VGDB, "--pid=%d" % pid, "--max-invoke-ms=0", command]
    p = B.run(cmd, timeout, check=False)
    if p.returncode != 0:
        raise RuntimeError("vgdb %s failed (exit %d): %s" % (command, p.returncode, p.stdout[-500:]))
    return p.stdout


def pgbench(port, protocol, clients, xacts):
    cmd = B.pgbench_cmd(port, WORKLOAD, protocol, clients, None, 2, None, transactions=xacts)
    t0 = time.monotonic()
    p = B.run(cmd, 1800, check=False)
    r = B.parse_pgbench(p.stdout)
    r["wall_s"] = round(time.monotonic() - t0, 2)
    r["command"] = shlex.join(cmd)
    r["exit_code"] = p.returncode
    if p.returncode != 0 or not r.get("xacts") or r.get("failed"):
        raise RuntimeError("pgbench failed (exit %d):\n%s" % (
            p.returncode, "\n".join(B.error_lines(p.stdout) or p.stdout.splitlines()[-12:])))
    return r


LINE = re.compile(r"^\s*([\d,]+)\s+(?:\(\s*[\d.]+%\)\s+)?(\S.*)$")
ROOTS = ("main", "(below main)")


def annotate(path, inclusive):
    """The total Ir and [(Ir, function, where)] from callgrind_annotate's
    function table, one row per function: callgrind lists the pieces of a
    function that come from other files (inlined headers) as separate rows,
    summed here. `where`: the source file of the largest piece, or the object
    file when there is no debug information."""
    cmd = [ANNOTATE, "--inclusive=%s" % ("yes" if inclusive else "no"), "--auto=no",
           "--threshold=100", path]
    out = B.run(cmd, 300).stdout
    if os.environ.get("PROFILE_DEBUG"):
        with open(path + (".incl" if inclusive else ".self") + ".txt", "w") as f:
            f.write(out)
    total, state = None, 0
    fns = {}
    for line in out.splitlines():
        if state == 1 and line.startswith("-----"):
            state = 2
            continue
        if "file:function" in line:
            state = 1
            continue
        if state == 2 and not line.strip():
            break
        m = LINE.match(line)
        if not m:
            continue
        n = int(m.group(1).replace(",", ""))
        what = m.group(2).strip()
        if "PROGRAM TOTALS" in what:
            total = n
            continue
        if state != 2:
            continue
        obj = ""
        mo = re.search(r"\s*\[([^\]]*)\]\s*$", what)
        if mo:
            obj = os.path.basename(mo.group(1))
            what = what[:mo.start()]
        f, _, fn = what.rpartition(":")
        fn = re.sub(r"@@?GLIBC_[\d.]+$", "", fn)
        fns.setdefault(fn, {"pieces": []})["pieces"].append((n, f, obj))
    if total is None:
        raise RuntimeError("could not parse %s output:\n%s" % (ANNOTATE, out[-1500:]))
    rows = []
    for fn, e in fns.items():
        # The same file can be named twice, relative as in the debug info
        # (fl=) and absolute as the callee of call arcs (cfi=); callgrind_annotate
        # then lists the function's inclusive cost under both names: count one.
        by_file = {}
        for n, f, obj in e["pieces"]:
            k = os.path.basename(f) if f not in ("???", "") else "?" + obj
            by_file[k] = max(by_file.get(k, 0), n)
        n, f, obj = max(e["pieces"])
        objs = [o for _, _, o in e["pieces"] if o]
        where = (objs[0] if objs else "?") if f in ("???", "") else os.path.basename(f)
        rows.append((sum(by_file.values()), fn, where))
    rows.sort(key=lambda r: -r[0])
    return total, rows


def table_rows(rows, total, inclusive):
    """Leave out the program's roots (main and what calls it, whose inclusive
    cost is the whole run) and, for self cost, the frames that were on the
    stack when the counters were zeroed: callgrind charges them the whole
    measured window as self cost."""
    out = []
    for n, fn, where in rows:
        if fn in ROOTS or fn.startswith("__libc_start") or where.startswith("ld-linux"):
            continue
        if not inclusive and total and n >= 0.99 * total:
            continue
        out.append((n, fn, where))
    return out


def profile_protocol(protocol, sluice_bin, cfg, raw_dir):
    out_dir = os.path.join(B.BENCH_DIR, "callgrind")
    os.makedirs(out_dir, exist_ok=True)
    B.chown_pg(out_dir)
    out_file = os.path.join(out_dir, "callgrind.out.%s" % protocol)
    wrapper = [VALGRIND, "--tool=callgrind", "--callgrind-out-file=" + out_file,
               "--vgdb=yes", "--vgdb-poll=200", "--dump-instr=no"]
    db_extra, settings = "", []
    if SPLIT:
        db_extra = "replicas=127.0.0.1:%d" % B.REPLICA_PORT[B.REPLICAS[0]]
        settings = [("read_write_split", SPLIT), ("primary_reads", "fallback")]
    if INSIGHTS:
        settings += [("insights", INSIGHTS)]
    if RYW:
        settings += [("read_your_writes", RYW)]
    if CACHE:
        import cache_bench
        settings += [("admin_users", B.DBUSER), ("cache", "off" if CACHE == "off" else "memory")]
        pooler = cache_bench.CachePooler(
            "sluice-callgrind-%s" % protocol, sluice_bin, PORT, 1, wrapper,
            pool_mode=cfg["pool_mode"], db_extra=db_extra, settings=settings,
            cache_rules=[cache_bench.HIT_RULE if CACHE == "hit" else cache_bench.UNUSED_RULE])
    else:
        pooler = B.Pooler("sluice-callgrind-%s" % protocol, sluice_bin, PORT, 1, wrapper,
                          pool_mode=cfg["pool_mode"], db_extra=db_extra, settings=settings)
    res = {"protocol": protocol, "valgrind_command": shlex.join(wrapper + [sluice_bin, pooler.ini])}
    B.log("%s: starting sluice (workers = 1) under callgrind on port %d" % (protocol, PORT))
    err = pooler.start()
    try:
        if err:
            raise RuntimeError("%s\n%s" % (err, "\n".join(pooler.log_tail(20))))
        B.log("%s: warm-up, %d clients x %d" % (protocol, cfg["clients"], cfg["warmup"]))
        res["warmup"] = pgbench(PORT, protocol, cfg["clients"], cfg["warmup"])
        if CACHE == "hit":
            import cache_bench
            walks, entries = cache_bench.fill(PORT, {"working_set": 1000})
            B.log("%s: the cache holds %d entries after %d walks" % (protocol, entries, walks))
        vgdb(pooler.pid, "zero")
        B.log("%s: measured, %d clients x %d transactions" % (protocol, cfg["clients"], cfg["xacts"]))
        res["pgbench"] = pgbench(PORT, protocol, cfg["clients"], cfg["xacts"])
        before = set(os.listdir(out_dir))
        vgdb(pooler.pid, "dump")
        deadline = time.monotonic() + 30
        dumps = []
        while time.monotonic() < deadline:
            dumps = sorted(f for f in set(os.listdir(out_dir)) - before if f.startswith("callgrind.out."))
            if dumps:
                break
            time.sleep(0.2)
        if not dumps:
            raise RuntimeError("callgrind wrote no dump in %s" % out_dir)
        time.sleep(0.5)  # let the dump finish writing
    finally:
        note = pooler.stop()
        if note:
            res["pooler_note"] = note
    dump = os.path.join(out_dir, dumps[0])
    xacts = res["pgbench"]["xacts"]
    total, incl = annotate(dump, True)
    _, selfc = annotate(dump, False)
    res["xacts"] = xacts
    res["ir_total"] = total
    res["ir_per_xact"] = total / float(xacts)
    res["inclusive"] = [(n / float(xacts), fn, w) for n, fn, w in table_rows(incl, total, True)]
    res["self"] = [(n / float(xacts), fn, w) for n, fn, w in table_rows(selfc, total, False)]
    if raw_dir:
        os.makedirs(raw_dir, exist_ok=True)
        res["raw"] = os.path.join(raw_dir, "callgrind.out.%s" % protocol)
        shutil.copyfile(dump, res["raw"])
    B.log("%s: %d transactions, %.0f instructions per transaction in sluice" % (
        protocol, xacts, res["ir_per_xact"]))
    return res


def report(results, cfg, env):
    L = []
    a = L.append
    a("sluice under callgrind: instructions per transaction (bench/profile.sh)")
    a("=" * 72)
    a("")
    a("Run:        %s UTC" % env["started"])
    a("Binary:     %s (copied from %s), sha256 %s" % (env["sluice"], env["sluice_src"], env["sha256"][:16]))
    a("Tree:       commit %s" % env["git_commit"])
    a("Valgrind:   %s; PostgreSQL: %s" % (env["valgrind"], env["postgresql"]))
    a("Machine:    %s CPUs, %s" % (env["nproc"], env["cpu_model"]))
    a("Workload:   pgbench %s(%s), %d clients x %d transactions each, after a "
      "warm-up of %d each;" % ("-S " if WORKLOAD == "select-only" else "", WORKLOAD,
                              cfg["clients"], cfg["xacts"], cfg["warmup"]))
    a("            sluice workers = 1, pool_mode = %s, default_pool_size = 20, trust auth."
      % cfg["pool_mode"])
    if SPLIT:
        a("Split:      replicas=127.0.0.1:%d (a streaming replica), read_write_split = %s,"
          % (B.REPLICA_PORT[B.REPLICAS[0]], SPLIT))
        a("            primary_reads = fallback (PROFILE_SPLIT)")
    a("Insights:   insights = %s (PROFILE_INSIGHTS)" % (INSIGHTS or "on, the default"))
    if SPLIT:
        a("Read-your-writes: read_your_writes = %s (PROFILE_RYW)" % (RYW or "user, the default"))
    if CACHE:
        import cache_bench
        rule = cache_bench.HIT_RULE if CACHE == "hit" else cache_bench.UNUSED_RULE
        a("Cache:      cache = %s, [cache] %s = %s (PROFILE_CACHE=%s)%s"
          % ("off" if CACHE == "off" else "memory", rule[0], rule[1], CACHE,
             "; the 1,000 statements filled before the count" if CACHE == "hit" else ""))
    a("Counted:    every instruction sluice executed (user space: sluice, libev, libc, OpenSSL,")
    a("            ...; not the kernel) between callgrind's `zero` before the measured pgbench")
    a("            and `dump` after it, so the measured clients' logins and logouts are in it.")
    a("            Per transaction = that count / pgbench's transactions processed.")
    a("Tables:     inclusive = the function and everything it calls; self = its own")
    a("            instructions. main and its callers are left out (inclusive: always the")
    a("            whole run; self: callgrind charges the frames that were on the stack at")
    a("            `zero` with the whole window). A function's inlined-header pieces are")
    a("            summed. -O2 inlines small functions into their callers.")
    a("")
    a("Summary")
    a("-------")
    for r in results:
        a("  -M %-9s %10.0f instructions per transaction  (%d transactions, %.0f M instructions)" % (
            r["protocol"], r["ir_per_xact"], r["xacts"], r["ir_total"] / 1e6))
    a("")
    top = cfg["top"]
    for r in results:
        for kind in ("inclusive", "self"):
            a("-M %s: top %d functions by %s cost, instructions per transaction" % (
                r["protocol"], top, kind))
            a("-" * 72)
            a("  %10s  %6s  %-40s %s" % ("Ir/xact", "share", "function", "file or object"))
            for per, fn, where in r[kind][:top]:
                a("  %10.1f  %5.1f%%  %-40s %s" % (
                    per, 100.0 * per / r["ir_per_xact"] if r["ir_per_xact"] else 0, fn, where))
            a("")
    a("Commands")
    a("--------")
    for r in results:
        a("  runuser -u postgres -- sh -c 'ulimit -n %d; exec \"$@\"' sh %s" % (B.NOFILE, r["valgrind_command"]))
        a("  %s" % r["warmup"]["command"])
        a("  runuser -u postgres -- vgdb --pid=PID --max-invoke-ms=0 zero")
        a("  %s" % r["pgbench"]["command"])
        a("  runuser -u postgres -- vgdb --pid=PID --max-invoke-ms=0 dump")
        a("  callgrind_annotate --inclusive=yes|no --threshold=100 DUMP")
        if r.get("raw"):
            a("  (raw dump kept as %s)" % r["raw"])
        a("")
    return "\n".join(L) + "\n"


def main_run():
    if os.geteuid() != 0:
        sys.exit("profile: run as root (PostgreSQL and sluice run as the postgres user via runuser)")
    for tool in (VALGRIND, VGDB, ANNOTATE):
        if not shutil.which(tool):
            sys.exit("profile: %s not found (apt-get install valgrind)" % tool)
    if SPLIT not in ("", "on", "off"):
        sys.exit("profile: PROFILE_SPLIT must be on or off, not %r" % SPLIT)
    if CACHE not in ("", "off", "memory", "hit"):
        sys.exit("profile: PROFILE_CACHE must be off, memory or hit, not %r" % CACHE)
    if RYW not in ("", "off", "connection", "user", "database"):
        sys.exit("profile: PROFILE_RYW must be off, connection, user or database, not %r" % RYW)
    if WORKLOAD not in B.WORKLOADS and WORKLOAD not in B.EXTRA_WORKLOADS and CACHE != "hit":
        sys.exit("profile: PROFILE_WORKLOAD must be one of %s, not %r"
                 % (", ".join(B.WORKLOADS), WORKLOAD))
    src = os.path.abspath(os.environ.get("SLUICE_BIN", os.path.join(B.REPO, "build/release/sluice")))
    if not os.access(src, os.X_OK):
        sys.exit("profile: %s is not executable (run `make` first)" % src)
    cfg = {
        "clients": B.env_int("PROFILE_CLIENTS", 10),
        "xacts": B.env_int("PROFILE_XACTS", 2000),
        "warmup": B.env_int("PROFILE_WARMUP", 50),
        "top": B.env_int("PROFILE_TOP", 15),
        "pool_mode": env_str("PROFILE_POOL_MODE", "transaction"),
        "protocols": [p for p in env_str("PROFILE_PROTOCOLS", "simple extended").split()
                      if p in ("simple", "extended", "prepared")],
    }
    out = os.path.abspath(env_str("PROFILE_OUT", os.path.join(B.REPO, "bench/results/profile.txt")))
    raw_dir = env_str("PROFILE_RAW_DIR", "/tmp/sluice-callgrind")
    started = datetime.datetime.now(datetime.timezone.utc)
    B.cleanup(remove=True, force=True)
    os.makedirs(B.BENCH_DIR, exist_ok=True)
    os.chmod(B.BENCH_DIR, 0o755)
    binp = os.path.join(B.BENCH_DIR, "bin", "sluice-under-test")
    os.makedirs(os.path.dirname(binp), exist_ok=True)
    shutil.copy2(src, binp)
    os.chmod(binp, 0o755)
    env = B.environment({}, binp, "/bin/true")
    env.update({"started": started.isoformat(timespec="seconds"), "sluice_src": src,
                "sha256": B.sha256(binp), "valgrind": B.first_line([VALGRIND, "--version"])})
    B.setup_postgres()
    if CACHE == "hit":
        import cache_bench
        cache_bench.write_scripts(1000)
    if SPLIT:
        import split_bench
        split_bench.setup_replicas()
    results = [profile_protocol(p, binp, cfg, raw_dir) for p in cfg["protocols"]]
    text = report(results, cfg, env)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out + ".tmp", "w") as f:
        f.write(text)
    os.replace(out + ".tmp", out)
    print()
    print(text, end="")
    B.log("took %.1f min; summary in %s" % (
        (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds() / 60.0, out))


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--cleanup":
        B.main()  # bench.py --cleanup: same dir, same lock
        return
    os.makedirs(os.path.dirname(B.LOCK_FILE) or "/", exist_ok=True)
    lock = open(B.LOCK_FILE, "a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        sys.exit("profile: a benchmark or profile run holds %s" % B.LOCK_FILE)

    def on_signal(signum, frame):
        raise SystemExit("profile: interrupted by signal %d" % signum)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    try:
        main_run()
    finally:
        B.log("cleaning up")
        B.cleanup()


if __name__ == "__main__":
    main()
