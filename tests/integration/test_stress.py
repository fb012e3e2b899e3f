"""Stress: 2,000 clients on one transaction pool of 10 servers, spread over 4
worker threads, for a minute. Every client runs short queries and
transactions back to back; every one must be answered, correctly and
without error, the primary must never see more than 10 backends of the
pool's user, and no client may starve: each completes a query in every
window of the run, and none waits anywhere near query_wait_timeout.

The config sets workers = 4 whatever SLUICE_TEST_WORKERS says (PgBouncer
gets no workers key). Knobs, for slow builds (ThreadSanitizer):
SLUICE_STRESS_SECONDS (60), SLUICE_STRESS_CLIENTS (2000),
SLUICE_STRESS_WINDOW (10 seconds, at most query_wait_timeout)."""

import asyncio
import os
import random
import time

import asyncpg
import pytest

from sluice_fixture import PASSWORDS, BackendMonitor, raise_nofile_limit, wait_no_backends

SECONDS = float(os.environ.get("SLUICE_STRESS_SECONDS", "60"))
CLIENTS = int(os.environ.get("SLUICE_STRESS_CLIENTS", "2000"))
POOL_SIZE = 10
WORKERS = 4
QUERY_WAIT_TIMEOUT = 30
WINDOW = min(float(os.environ.get("SLUICE_STRESS_WINDOW", "10")), QUERY_WAIT_TIMEOUT)
# Time to log 2,000 clients in, spread as an application's start would be.
CONNECT_SPREAD = 4.0


def open_files_limit(pid):
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                return int(line.split()[3])
    raise RuntimeError("no open files limit")


class Client:
    """One connection's record: completions per window, its slowest query."""

    def __init__(self, n_windows):
        self.per_window = [0] * n_windows
        self.queries = 0
        self.max_wait = 0.0
        self.errors = []


async def run_client(i, conn, rec, start, end, latencies):
    rng = random.Random(i)
    k = 0
    while True:
        now = time.monotonic()
        if now >= end:
            return
        k += 1
        value = i * 100000 + k
        kind = rng.random()
        try:
            if kind < 0.5:
                # Extended protocol, one statement.
                t0 = time.monotonic()
                got = await conn.fetchval("SELECT $1::int", value)
                steps = [(time.monotonic() - t0, got == value)]
            elif kind < 0.8:
                # A transaction of two statements; the wait for a server
                # (at BEGIN) counts into the first one.
                steps = []
                t0 = time.monotonic()
                async with conn.transaction():
                    got = await conn.fetchval("SELECT $1::int + 1", value)
                    steps.append((time.monotonic() - t0, got == value + 1))
                    t0 = time.monotonic()
                    got = await conn.fetchval("SELECT $1::text || 'x'", str(value))
                    steps.append((time.monotonic() - t0, got == f"{value}x"))
            else:
                # Simple query protocol.
                t0 = time.monotonic()
                got = await conn.fetchval(f"SELECT {value}")
                steps = [(time.monotonic() - t0, got == value)]
        except Exception as e:  # noqa: BLE001 - every failure is a finding
            rec.errors.append(f"client {i} query {k}: {type(e).__name__}: {e}")
            if conn.is_closed() or len(rec.errors) > 5:
                return
            continue
        done = time.monotonic()
        for wait, ok in steps:
            latencies.append(wait)
            rec.max_wait = max(rec.max_wait, wait)
            if not ok:
                rec.errors.append(f"client {i} query {k}: wrong answer {got!r} for {value}")
        window = int((done - start) // WINDOW)
        if window < len(rec.per_window) and done < end:
            rec.per_window[window] += 1
        rec.queries += 1
        # A pause of up to 2 ms, so that the clients do not move in lockstep.
        await asyncio.sleep(rng.random() * 0.002)


@pytest.mark.timeout(SECONDS + CONNECT_SPREAD + 180)
def test_stress_two_thousand_clients_four_workers(sluice, cluster, pool_user):
    user = pool_user
    raise_nofile_limit(20000)
    max_clients = max(2100, CLIENTS + 200)
    s = sluice({"pgbouncer": {"default_pool_size": POOL_SIZE, "reserve_pool_size": 0,
                              "max_client_conn": max_clients,
                              "query_wait_timeout": QUERY_WAIT_TIMEOUT}},
               workers=WORKERS)
    limit = open_files_limit(s.pid)
    assert limit >= CLIENTS + POOL_SIZE + 50, f"pooler's open files limit is {limit}"
    wait_no_backends(cluster, user)
    n_windows = max(1, int(SECONDS // WINDOW))
    records = [Client(n_windows) for _ in range(CLIENTS)]
    latencies = []

    async def run():
        async def connect(i):
            await asyncio.sleep(i * CONNECT_SPREAD / CLIENTS)
            return await asyncpg.connect(host="127.0.0.1", port=s.port, user=user,
                                         password=PASSWORDS[user], database="mydb",
                                         statement_cache_size=0, timeout=60)

        conns = await asyncio.gather(*(connect(i) for i in range(CLIENTS)),
                                     return_exceptions=True)
        failed = [f"client {i}: {c!r}" for i, c in enumerate(conns)
                  if isinstance(c, BaseException)]
        try:
            assert not failed, f"{len(failed)} clients could not log in: {failed[:10]}"
            start = time.monotonic()
            end = start + SECONDS
            await asyncio.wait_for(
                asyncio.gather(*(run_client(i, c, records[i], start, end, latencies)
                                 for i, c in enumerate(conns))),
                SECONDS + QUERY_WAIT_TIMEOUT + 30)
            return time.monotonic() - start
        finally:
            await asyncio.gather(*(c.close(timeout=10) for c in conns
                                   if not isinstance(c, BaseException)),
                                 return_exceptions=True)

    with BackendMonitor(cluster, user, interval=0.25) as monitor:
        elapsed = asyncio.run(run())

    errors = [e for r in records for e in r.errors]
    total = sum(r.queries for r in records)
    latencies.sort()
    p50 = latencies[len(latencies) // 2] if latencies else 0
    p99 = latencies[len(latencies) * 99 // 100] if latencies else 0
    max_wait = latencies[-1] if latencies else 0
    summary = (f"{CLIENTS} clients, {WORKERS} workers, pool {POOL_SIZE}: {total} queries and "
               f"transactions in {elapsed:.1f}s ({total / elapsed:.0f}/s); statement latency "
               f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, max {max_wait:.2f}s; "
               f"peak {monitor.peak} backends in {monitor.samples} samples")
    print(summary)

    assert not errors, f"{len(errors)} errors, e.g.:\n" + "\n".join(errors[:20])
    waited_out = [e for e in errors if "query_wait_timeout" in e]
    assert not waited_out
    assert monitor.samples >= SECONDS, f"pg_stat_activity sampled only {monitor.samples} times"
    assert monitor.peak <= POOL_SIZE, (
        f"{monitor.peak} backends of {user} on the primary, pool_size {POOL_SIZE}")
    assert monitor.peak >= POOL_SIZE // 2, f"only {monitor.peak} backends used"
    starved = [(i, w) for i, r in enumerate(records)
               for w, n in enumerate(r.per_window) if n == 0]
    assert not starved, (
        f"{len(starved)} (client, {WINDOW:.0f}s window) pairs without a completed query, "
        f"e.g. {starved[:10]}\n{summary}")
    assert max_wait < QUERY_WAIT_TIMEOUT * 0.8, summary
