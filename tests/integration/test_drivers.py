"""Real drivers and frameworks, configured as applications configure them."""

import asyncio
from concurrent.futures import ThreadPoolExecutor

import asyncpg
import pytest
import sqlalchemy

from sluice_fixture import IS_PGBOUNCER, PASSWORDS


@pytest.mark.skipif(IS_PGBOUNCER, reason="PgBouncer 1.18 refuses the options startup parameter")
def test_sqlalchemy_psycopg2_pool(sluice):
    s = sluice({"pgbouncer": {"default_pool_size": 5}})
    engine = sqlalchemy.create_engine(
        f"postgresql+psycopg2://md5_user:{PASSWORDS['md5_user']}@127.0.0.1:{s.port}/mydb",
        pool_size=10, max_overflow=20, pool_pre_ping=True, pool_recycle=1800,
        connect_args={"application_name": "sa-test",
                      "options": "-c statement_timeout=30000",
                      "connect_timeout": 5})
    query = sqlalchemy.text("SELECT current_setting('statement_timeout'), "
                            "current_setting('application_name'), CAST(:n AS int) * 2")

    def worker(t):
        results = []
        for i in range(10):
            with engine.connect() as conn:
                n = t * 100 + i
                results.append(tuple(conn.execute(query, {"n": n}).one()) == ("30s", "sa-test", 2 * n))
                assert conn.execute(sqlalchemy.text("SHOW statement_timeout")).scalar() == "30s"
                assert conn.execute(sqlalchemy.text("SHOW application_name")).scalar() == "sa-test"
        return results

    try:
        with ThreadPoolExecutor(20) as pool:
            results = [r for rs in pool.map(worker, range(20), timeout=90) for r in rs]
        assert len(results) == 200 and all(results)
        # An ORM-style transaction with a rollback.
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text("CREATE TEMP TABLE sa_t (x int) ON COMMIT DROP"))
            conn.execute(sqlalchemy.text("INSERT INTO sa_t VALUES (1), (2)"))
            assert conn.execute(sqlalchemy.text("SELECT sum(x) FROM sa_t")).scalar() == 3
    finally:
        engine.dispose()


def test_sqlalchemy_without_options(sluice):
    """The same pool setup without startup options works on both poolers."""
    s = sluice({"pgbouncer": {"default_pool_size": 5}})
    engine = sqlalchemy.create_engine(
        f"postgresql+psycopg2://md5_user:{PASSWORDS['md5_user']}@127.0.0.1:{s.port}/mydb",
        pool_size=10, max_overflow=20, pool_pre_ping=True, pool_recycle=1800,
        connect_args={"application_name": "sa-test", "connect_timeout": 5})

    def worker(t):
        with engine.connect() as conn:
            return [conn.execute(sqlalchemy.text("SELECT CAST(:n AS int), "
                                                 "current_setting('application_name')"),
                                 {"n": t * 10 + i}).one() == (t * 10 + i, "sa-test")
                    for i in range(10)]

    try:
        with ThreadPoolExecutor(20) as pool:
            results = [r for rs in pool.map(worker, range(20), timeout=90) for r in rs]
        assert len(results) == 200 and all(results)
    finally:
        engine.dispose()


def test_asyncpg_concurrent_tasks(sluice):
    s = sluice({"pgbouncer": {"default_pool_size": 10, "max_client_conn": 200}})

    async def task(n):
        conn = await asyncpg.connect(host="127.0.0.1", port=s.port, user="md5_user",
                                     password=PASSWORDS["md5_user"], database="mydb",
                                     statement_cache_size=0, timeout=30)
        try:
            out = [await conn.fetchval("SELECT $1::int * 2", n),
                   await conn.fetchval("SELECT $1::text || $2::text", "task", str(n))]
            async with conn.transaction():
                row = await conn.fetchrow("SELECT $1::int AS n, $2::numeric AS x, $3::bool AS b",
                                          n, 1.5, n % 2 == 0)
                out.append((row["n"], float(row["x"]), row["b"]))
            out.append(await conn.fetch("SELECT g FROM generate_series(1, $1::int) g", 3))
            await conn.executemany("SELECT $1::int", [(i,) for i in range(5)])
            return out
        finally:
            await conn.close()

    async def run():
        return await asyncio.wait_for(asyncio.gather(*(task(n) for n in range(100))), 90)

    results = asyncio.run(run())
    for n, out in enumerate(results):
        assert out[0] == 2 * n
        assert out[1] == f"task{n}"
        assert out[2] == (n, 1.5, n % 2 == 0)
        assert [r["g"] for r in out[3]] == [1, 2, 3]


def test_asyncpg_pool(sluice):
    s = sluice({"pgbouncer": {"default_pool_size": 4}})

    async def run():
        pool = await asyncpg.create_pool(host="127.0.0.1", port=s.port, user="md5_user",
                                         password=PASSWORDS["md5_user"], database="mydb",
                                         statement_cache_size=0, min_size=5, max_size=20)
        try:
            async def one(n):
                async with pool.acquire() as conn:
                    return await conn.fetchval("SELECT $1::int + 1 FROM pg_sleep(0.01)", n)
            return await asyncio.gather(*(one(n) for n in range(300)))
        finally:
            await pool.close()

    assert asyncio.run(asyncio.wait_for(run(), 60)) == [n + 1 for n in range(300)]
