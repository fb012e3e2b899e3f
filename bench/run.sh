#!/bin/sh
# `make bench`: pgbench through PgBouncer and through sluice with `workers = 1`
# and `workers = 2`, same pool settings, same machine, against one throwaway
# PostgreSQL 15 primary in /tmp/sluice-bench, plus PostgreSQL directly with 20
# connections as the reference. Matrix: select-only (-S) and TPC-B-like x
# -M simple / extended (and -M prepared through sluice only) x 20, 100, 500
# and 2,000 clients. Before that matrix, the read/write split
# (bench/split_bench.py): two streaming replicas of that primary, and sluice
# with read_write_split on against the same ini with it off: (a) CPU per
# pgbench -S transaction over one replica, (b) TPS of SELECT pg_sleep(0.005)
# at 60 clients, pools of 10, over two replicas with primary_reads = share,
# (c) make bench-classify's figures. Then read-your-writes (bench/ryw_bench.py):
# the same two replicas made again, pgbench -b select-only@9 -b simple-update@1
# -M extended, 100 clients, through the split with read_your_writes = user
# against off (primary with synchronous_commit = on for that part): CPU per
# transaction, where the reads went, how many waited and how long. Then the
# result cache (bench/cache_bench.py, the primary alone): (a) a pgbench script
# of 1,000 distinct cached SELECTs (-M simple) against PostgreSQL directly,
# PgBouncer, sluice with cache = off and sluice with cache = memory: TPS
# ratios, hit ratio (SHOW CACHE), CPU per hit; (b) TPC-B-like and -S through
# sluice with cache = memory and a rule for a table they never touch, against
# cache = off: CPU per transaction.
# Writes docs/benchmarks.md (the generated sections only),
# bench/results/latest.json, bench/results/split.json, bench/results/ryw.json
# and bench/results/cache.json.
# About 28 minutes (the split part about 1.7, read-your-writes about 1.5, the
# cache about 6.5); BENCH_QUICK=1 about 5.5.
#
# Env:
#   BENCH_SECONDS=15     duration of each pgbench run (quick: 4)
#   BENCH_QUICK=1        smoke test: 4 s runs, clients 20 and 2000, one reference run
#   BENCH_CLIENTS="20 100 500 2000"  override the client counts
#   SLUICE_WORKERS="1 2" the sluice slots: one per value, `workers = N` in its ini
#   BENCH_JOBS=2         pgbench -j (at most the client count)
#   BENCH_SAMPLING_RATE=1  pgbench --sampling-rate for the per-transaction log
#                        that p50/p99 come from (1: every transaction)
#   BENCH_REPEAT=1       passes over the matrix; tables show per-point medians
#   BENCH_NO_PREPARED=1  skip the sluice -M prepared points
#   BENCH_WORKLOADS="select-only tpcb-like", BENCH_PROTOCOLS="simple extended"  subsets
#   SLUICE_BIN           binary in the sluice slots (default build/release/sluice);
#                        SLUICE_BIN=/usr/sbin/pgbouncer BENCH_NO_PREPARED=1 is an A/A run
#   PGBOUNCER_BIN        /usr/sbin/pgbouncer
#   BENCH_PORT=27432     PostgreSQL's port; PgBouncer +1, sluice slots +2, +3, ...
#   BENCH_REPORT, BENCH_JSON  output paths (default docs/benchmarks.md,
#                        bench/results/latest.json)
#   BENCH_KEEP=1         keep /tmp/sluice-bench after the run
#   BENCH_FULL           accepted and ignored (2,000 clients are in the default run)
# The read/write split part:
#   BENCH_SPLIT=0        skip it;  BENCH_SPLIT_ONLY=1  run only it (about 2 minutes)
#   BENCH_SPLIT_SECONDS=8  duration of each of its runs (quick: 4)
#   BENCH_SPLIT_REPEAT   passes per variant (default: 3 for (a), 2 for (b); quick: 1)
#   BENCH_SPLIT_CLIENTS=100  clients of (a); BENCH_SPLIT_CAPACITY_CLIENTS=60  of (b)
#   BENCH_SPLIT_PROTOCOL=extended  pgbench -M of both (simple: every pgbench -S
#                        statement has its own text, so each one is parsed cold)
#   BENCH_SPLIT_WORKERS=1  sluice's `workers`
#   BENCH_SPLIT_JSON     default bench/results/split.json
#   CLASSIFY_BENCH_BIN   default build/release/bench/classify_bench (make bench builds it)
#   Replicas on BENCH_PORT + 20 and + 21, sluice on + 22 (each moves 20 further on
#   while its port is taken, e.g. by an outgoing connection if BENCH_PORT > 32767).
# The read-your-writes part:
#   BENCH_RYW=0          skip it;  BENCH_RYW_ONLY=1  run only it (about 1.5 minutes;
#                        with BENCH_SPLIT_ONLY=1 too: those two parts)
#   BENCH_RYW_SECONDS=10 duration of each run (quick: 4)
#   BENCH_RYW_REPEAT=3   passes per variant, off and user alternating (quick: 1)
#   BENCH_RYW_CLIENTS=100  BENCH_RYW_POOL_SIZE=20 (default_pool_size, per endpoint)
#   BENCH_RYW_PROTOCOL=extended  pgbench -M
#   BENCH_RYW_WORKERS=1  sluice's `workers`
#   BENCH_RYW_SETTINGS   more sluice settings for both variants, "key=value ..."
#                        (e.g. replica_wait_timeout=0)
#   BENCH_RYW_JSON       default bench/results/ryw.json
#   Replicas as for the split part; sluice on BENCH_PORT + 23, /metrics on + 24.
# The result cache part:
#   BENCH_CACHE=0        skip it;  BENCH_CACHE_ONLY=1  run only it (about 6.5 minutes;
#                        with the other _ONLY flags: those parts)
#   BENCH_CACHE_SECONDS=8  duration of each run (quick: 4)
#   BENCH_CACHE_REPEAT=3   passes (quick: 1); each pass runs every target or variant once,
#                        the first one rotating
#   BENCH_CACHE_CLIENTS="20 100" clients of (a), the cached select (every target, each count)
#   BENCH_CACHE_WORKING_SET=1000 distinct statements of (a): aid = random(1, N)
#   BENCH_CACHE_COST_CLIENTS=20  clients of (b)
#   BENCH_CACHE_COST_WORKLOADS="tpcb-like select-only"  BENCH_CACHE_COST_PROTOCOLS=simple
#                        (add extended: nothing is cacheable either way, but every
#                        Bind's text is looked at for writes)
#   BENCH_CACHE_NO_HITS=1  (b) only
#   BENCH_CACHE_POOL_SIZE=20  BENCH_CACHE_WORKERS=1  BENCH_CACHE_JSON (bench/results/cache.json)
#   sluice on BENCH_PORT + 25, PgBouncer on + 26 (each moves 20 further on while taken).
# Insights' cost (bench/insights_bench.py, after the cache; about 4.5 minutes):
#   BENCH_INSIGHTS=0     skip it;  BENCH_INSIGHTS_ONLY=1  run only it
#   BENCH_INSIGHTS_SECONDS=8, BENCH_INSIGHTS_REPEAT=3, BENCH_INSIGHTS_CLIENTS=20,
#   BENCH_INSIGHTS_WORKLOADS="select-only tpcb-like", BENCH_INSIGHTS_PROTOCOLS="simple extended",
#   BENCH_INSIGHTS_JSON=bench/results/insights.json; sluice on BENCH_PORT + 27
# Needs root: PostgreSQL and the poolers run as the postgres user (runuser).
# `sh bench/run.sh --report` regenerates the markdown from the JSON files only.
# `sh bench/profile.sh`: instructions per transaction under callgrind.
set -eu

REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=/usr/bin/python3
BENCH="$REPO/bench/bench.py"

case "${1:-}" in
--report) exec "$PY" "$BENCH" --report ;;
esac

. "$REPO/bench/supervise.sh"
bench_supervise bench/run.sh "$BENCH"
