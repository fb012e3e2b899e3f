#!/usr/bin/python3
"""RSS cost of idle, logged-in clients: sluice (workers = 1 and 4) and PgBouncer.

usage:
  bench/idle_memory.py [--clients N] [--workers 1,4] [--sluice BIN]
                       [--pgbouncer BIN | --no-pgbouncer]
      Starts the integration tests' cluster if it is not running (same
      SLUICE_TEST_CLUSTER_DIR / _PORT / SLUICE_TEST_REDIS_PORT overrides;
      stopped again at the end if this started it), then for each sluice
      workers value and for PgBouncer: starts the pooler (auth_type md5,
      transaction pooling, max_client_conn N + 100, open-files limit 20000),
      logs in one client that runs a query (pool and one server in the
      baseline), reads VmRSS, logs in N more clients with md5 and leaves them
      idle, reads VmRSS again. Prints a table of bytes per idle client.
      Defaults: 10,000 clients, build/release/sluice, /usr/sbin/pgbouncer.
      Sanitizer builds of sluice inflate memory: measure the release build.
      Needs root when the cluster must be started (PostgreSQL runs as postgres).

  bench/idle_memory.py PORT N PID [USER] [DBNAME]
      Measures an already running pooler (pid PID, listening on PORT): logs
      in N idle clients as USER (default trust_user: auth_type trust or any)
      and prints the difference per client.
"""
import argparse
import resource
import shutil
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests/integration"))

import sluice_fixture as fx  # noqa: E402


def login(port, packet):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(packet)
    buf = b""
    while not buf.endswith(b"Z\0\0\0\x05I"):
        data = s.recv(4096)
        if not data:
            raise RuntimeError(f"connection closed after {buf[:200]!r}")
        buf += data
    return s


def running_pooler(argv):
    """The original mode: a running pooler with trust auth."""
    port, n, pid = int(argv[0]), int(argv[1]), int(argv[2])
    user = argv[3] if len(argv) > 3 else "trust_user"
    db = argv[4] if len(argv) > 4 else "mydb"
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    params = f"user\0{user}\0database\0{db}\0\0".encode()
    packet = struct.pack("!ii", 8 + len(params), 196608) + params
    socks = [login(port, packet)]
    time.sleep(0.5)
    base = fx.rss_kib(pid)
    for _ in range(n):
        socks.append(login(port, packet))
    time.sleep(1)
    after = fx.rss_kib(pid)
    print(f"baseline {base} KiB, after {n} idle clients {after} KiB, "
          f"{(after - base) * 1024 / n:.0f} bytes per client")


def version(binary):
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True,
                             timeout=10).stdout
    except OSError:
        return "?"
    return out.splitlines()[0] if out else "?"


def measure(cluster, run_dir, name, binary, workers, clients):
    workdir = run_dir / name.replace(" ", "-").replace("=", "")
    workdir.mkdir()
    fx.chown_run_as(workdir)
    pooler = fx.Sluice(cluster, workdir, {"pgbouncer": {"max_client_conn": clients + 100}},
                       binary=binary, workers=workers)
    pooler.start()
    try:
        limit = open_files_limit(pooler.pid)
        if limit < clients + 50:
            raise RuntimeError(f"{name}: open-files limit {limit} < {clients} clients")
        return fx.idle_client_cost(pooler.port, pooler.pid, clients)
    finally:
        pooler.stop()


def open_files_limit(pid):
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                return int(line.split()[3])
    return 0


def compare(args):
    fx.raise_nofile_limit(args.clients + 1000)
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < args.clients + 100:
        sys.exit(f"open-files limit {soft} is too low for {args.clients} clients")
    runs = [(f"sluice workers={w}", args.sluice, w) for w in args.workers]
    if args.pgbouncer:
        runs.append(("pgbouncer", args.pgbouncer, None))
    for _, binary, _ in runs:
        if not Path(binary).exists():
            sys.exit(f"{binary} does not exist (`make` builds build/release/sluice)")
    cluster = fx.Cluster()
    started = cluster.start()
    run_dir = fx.make_run_dir()
    rows = []
    try:
        for name, binary, workers in runs:
            base, after, per_client = measure(cluster, run_dir, name, binary, workers,
                                              args.clients)
            rows.append((name, version(binary), base, after, per_client))
            print(f"{name}: {per_client:.0f} bytes per idle client", file=sys.stderr)
    except BaseException:
        print(f"configs and logs kept in {run_dir}", file=sys.stderr)
        raise
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
    finally:
        if started:
            cluster.stop()
    print(f"\nRSS per idle, logged-in client ({args.clients} clients, md5 auth, "
          f"transaction pooling):\n")
    head = ("pooler", "version", "baseline KiB", f"+{args.clients} clients KiB",
            "bytes/client")
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(3)]
    widths += [len(head[3]), len(head[4])]
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)))
    for name, ver, base, after, per_client in rows:
        cells = (name, ver, str(base), str(after), f"{per_client:.0f}")
        print("  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                        for i, (c, w) in enumerate(zip(cells, widths))))


def main():
    if len(sys.argv) > 1 and sys.argv[1].isdigit():
        return running_pooler(sys.argv[1:])
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clients", type=int, default=10000)
    p.add_argument("--workers", default="1,4",
                   type=lambda v: [int(x) for x in v.split(",") if x],
                   help="sluice workers values to measure (comma-separated)")
    p.add_argument("--sluice", default=str(REPO / "build/release/sluice"))
    p.add_argument("--pgbouncer", default="/usr/sbin/pgbouncer")
    p.add_argument("--no-pgbouncer", dest="pgbouncer", action="store_const", const=None)
    compare(p.parse_args())


if __name__ == "__main__":
    main()
