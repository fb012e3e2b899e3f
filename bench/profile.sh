#!/bin/sh
# `sh bench/profile.sh`: instructions per transaction of the release sluice
# (build/release/sluice, workers = 1) under valgrind --tool=callgrind, for
# pgbench -S -M simple and -M extended with a fixed number of transactions;
# prints the total per transaction and the top functions by inclusive and by
# self cost, and writes that summary to bench/results/profile.txt.
# Takes well under a minute on the 2-core development machine.
#
# Env:
#   PROFILE_CLIENTS=10       pgbench -c
#   PROFILE_XACTS=2000       pgbench -t (per client) of the measured run
#   PROFILE_WARMUP=50        pgbench -t of the warm-up run (not counted)
#   PROFILE_PROTOCOLS="simple extended"   (prepared also accepted)
#   PROFILE_POOL_MODE=transaction   (session, statement)
#   PROFILE_WORKLOAD=select-only     (tpcb-like: pgbench's default script)
#   PROFILE_SPLIT=on|off     streaming replicas as for `make bench`'s split part, the
#                            database entry with replicas=<the first>, read_write_split
#                            on (every read to the replica) or off; unset: no replicas
#   PROFILE_CACHE=off|memory  cache = off or memory, both with a [cache] rule for a table
#                            the workload never touches (what the cache's bookkeeping costs);
#                            hit: cache = memory, rule public.pgbench_accounts, the workload
#                            bench/cache_bench.py's cached select (1,000 statements, filled
#                            first; use PROFILE_PROTOCOLS=simple): instructions per hit
#   PROFILE_INSIGHTS=on|off  insights (per-query statistics); unset: the default (on)
#   PROFILE_RYW=off|user|... read_your_writes with PROFILE_SPLIT; unset: the default (user);
#                            PROFILE_WORKLOAD=rw-90-10 is bench/ryw_bench.py's 90/10 mix
#   PROFILE_TOP=15           functions listed per table
#   PROFILE_OUT=bench/results/profile.txt
#   PROFILE_RAW_DIR=/tmp/sluice-callgrind   where the raw callgrind dumps are
#                            copied (for callgrind_annotate / kcachegrind); empty: not kept
#   SLUICE_BIN=build/release/sluice   (run `make` first)
#   BENCH_DIR, BENCH_PORT, BENCH_KEEP as for bench/run.sh; sluice listens on BENCH_PORT+10.
# Needs root and valgrind. Shares /tmp/sluice-bench and its lock with
# bench/run.sh, so it never runs beside a benchmark.
set -eu

REPO=$(cd "$(dirname "$0")/.." && pwd)
. "$REPO/bench/supervise.sh"
bench_supervise bench/profile.sh "$REPO/bench/profile_callgrind.py"
