#!/bin/sh
# `make bench`: pgbench through PgBouncer and through sluice, same pool settings,
# same machine, against one throwaway PostgreSQL 15 primary in /tmp/sluice-bench.
# Writes docs/benchmarks.md (generated section) and bench/results/latest.json.
#
# Env:
#   BENCH_SECONDS=15     duration of each pgbench run
#   BENCH_QUICK=1        smoke test: 5 s runs, clients 20 and 100, fewer baseline runs
#   BENCH_FULL=1         add the 2,000-client points
#   BENCH_CLIENTS="20 100"  override the client counts
#   BENCH_JOBS=2         pgbench -j
#   BENCH_REPEAT=1       passes over the matrix; tables show per-point medians
#   BENCH_NO_PREPARED=1  skip the sluice -M prepared points
#   BENCH_WORKLOADS="select-only tpcb-like", BENCH_PROTOCOLS="simple extended"  subsets
#   SLUICE_BIN           pooler in the "sluice" slot (default build/release/sluice);
#                        SLUICE_BIN=/usr/sbin/pgbouncer validates the harness
#   PGBOUNCER_BIN        /usr/sbin/pgbouncer
#   SLUICE_WORKERS       if set, `workers = N` in sluice's ini (default: sluice's own)
#   BENCH_REPORT, BENCH_JSON  output paths (default docs/benchmarks.md,
#                        bench/results/latest.json)
#   BENCH_KEEP=1         keep /tmp/sluice-bench after the run
# Needs root: PostgreSQL and the poolers run as the postgres user (runuser).
# `sh bench/run.sh --report` regenerates the markdown from the JSON only.
set -eu

REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=/usr/bin/python3
BENCH="$REPO/bench/bench.py"

case "${1:-}" in
--report) exec "$PY" "$BENCH" --report ;;
esac

if [ "$(id -u)" != 0 ]; then
    echo "bench/run.sh: run as root (PostgreSQL and the poolers run as user postgres via runuser)" >&2
    exit 1
fi

# bench.py stops what it started on exit, error or signal. This trap is the
# backstop if bench.py itself is killed: it stops, by the PIDs recorded in
# the bench dir's state file, whatever is still running, then removes the dir.
cleanup() {
    "$PY" "$BENCH" --cleanup || true
}
trap cleanup EXIT

# In the background so that a signal to this shell is acted on at once: it is
# passed on to bench.py, which stops pgbench, the poolers and PostgreSQL.
"$PY" "$BENCH" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true' INT TERM HUP
rc=0
wait $pid || rc=$?
while kill -0 $pid 2>/dev/null; do
    rc=0
    wait $pid || rc=$?
done
exit $rc
