"""Many clients on a small pool: every query answered, the server side
bounded by pool size + reserve."""

import asyncio
import time

import asyncpg
import pytest

from sluice_fixture import PASSWORDS, BackendMonitor, raise_nofile_limit, wait_no_backends


@pytest.mark.timeout(240)
def test_thousand_clients_on_pool_of_twenty(sluice, cluster, pool_user):
    user, clients, pool_size, reserve = pool_user, 1000, 20, 5
    raise_nofile_limit(20000)
    s = sluice({"pgbouncer": {"default_pool_size": pool_size, "reserve_pool_size": reserve,
                              "reserve_pool_timeout": 1, "max_client_conn": 2000}})
    wait_no_backends(cluster, user)

    async def run():
        async def connect(i):
            # Spread the connects a little, as a real application's start would.
            await asyncio.sleep(i * 0.002)
            return await asyncpg.connect(host="127.0.0.1", port=s.port, user=user,
                                         password=PASSWORDS[user], database="mydb",
                                         statement_cache_size=0, timeout=60)

        conns = await asyncio.gather(*(connect(i) for i in range(clients)))
        try:
            async def work(i, conn):
                answers = []
                for k in range(3):
                    async with conn.transaction():
                        answers.append(await conn.fetchval(
                            "SELECT $1::int + $2::int FROM pg_sleep(0.005)", i, k))
                answers.append(await conn.fetchval("SELECT $1::text", f"client {i}"))
                return answers

            return await asyncio.wait_for(
                asyncio.gather(*(work(i, c) for i, c in enumerate(conns))), 150)
        finally:
            await asyncio.gather(*(c.close(timeout=10) for c in conns),
                                 return_exceptions=True)

    with BackendMonitor(cluster, user) as monitor:
        started = time.monotonic()
        results = asyncio.run(run())
        elapsed = time.monotonic() - started
    assert results == [[i, i + 1, i + 2, f"client {i}"] for i in range(clients)]
    assert monitor.samples > 10
    assert monitor.peak <= pool_size + reserve, (
        f"{monitor.peak} server connections on the primary (pool {pool_size} + {reserve})")
    assert monitor.peak >= pool_size // 2, f"only {monitor.peak} server connections used"
    print(f"{clients} clients in {elapsed:.1f}s, peak {monitor.peak} server connections")
