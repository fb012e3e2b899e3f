"""Real drivers through sluice in transaction mode, with a small pool and many
more clients than servers, each using server-side prepared statements the way
it does by default (or as configured below)."""

import asyncio
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

from sluice_fixture import IS_PGBOUNCER, PASSWORDS

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="sluice's prepared statement tracking")

USER = "md5_user"


def config(pool=3, clients=200):
    return {"pgbouncer": {"default_pool_size": pool, "reserve_pool_size": 0,
                          "max_prepared_statements": 50, "max_client_conn": clients}}


def test_asyncpg_statement_cache(sluice):
    asyncpg = pytest.importorskip("asyncpg")
    s = sluice(config())

    async def client(n):
        conn = await asyncpg.connect(host="127.0.0.1", port=s.port, user=USER,
                                     password=PASSWORDS[USER], database="mydb")
        try:
            for i in range(20):
                assert await conn.fetchval("SELECT $1::int + $2::int", i, n) == i + n
                row = await conn.fetchrow("SELECT $1::text AS a, $2::int AS b", str(i), n)
                assert (row["a"], row["b"]) == (str(i), n)
                async with conn.transaction():
                    await conn.execute("SELECT pg_sleep(0)")
                    assert await conn.fetchval("SELECT $1::bigint * 2", i) == 2 * i
            stmt = await conn.prepare("SELECT $1::int * 3")
            for i in range(10):
                assert await stmt.fetchval(i) == 3 * i
        finally:
            await conn.close()

    async def main():
        await asyncio.gather(*(client(n) for n in range(20)))

    asyncio.run(main())


def test_sqlalchemy_over_psycopg2(sluice):
    sqlalchemy = pytest.importorskip("sqlalchemy")
    pytest.importorskip("psycopg2")
    s = sluice(config())
    engine = sqlalchemy.create_engine(
        f"postgresql+psycopg2://{USER}:{PASSWORDS[USER]}@127.0.0.1:{s.port}/mydb",
        pool_size=10, max_overflow=0)
    errors = []

    def work(n):
        try:
            for i in range(20):
                with engine.begin() as conn:
                    v = conn.execute(sqlalchemy.text("SELECT :a + :b"), {"a": i, "b": n}).scalar()
                    assert v == i + n
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    engine.dispose()
    assert not errors, errors


def test_sqlalchemy_over_asyncpg(sluice):
    sqlalchemy = pytest.importorskip("sqlalchemy")
    pytest.importorskip("asyncpg")
    from sqlalchemy.ext.asyncio import create_async_engine

    s = sluice(config())

    async def main():
        engine = create_async_engine(
            f"postgresql+asyncpg://{USER}:{PASSWORDS[USER]}@127.0.0.1:{s.port}/mydb",
            pool_size=10, max_overflow=0)

        async def work(n):
            for i in range(20):
                async with engine.begin() as conn:
                    r = await conn.execute(sqlalchemy.text("SELECT CAST(:a AS int) + :b"),
                                           {"a": i, "b": n})
                    assert r.scalar() == i + n

        await asyncio.gather(*(work(n) for n in range(10)))
        await engine.dispose()

    asyncio.run(main())


def test_psycopg_prepare_threshold_zero_many_clients(sluice):
    s = sluice(config())
    errors = []

    def work(n):
        try:
            with s.connect(prepare_threshold=0) as conn:
                for i in range(20):
                    assert conn.execute("SELECT %s::int + %s", (i, n)).fetchone() == (i + n,)
                with conn.pipeline():
                    curs = [conn.execute("SELECT %s::int", (i,)) for i in range(10)]
                assert [c.fetchone()[0] for c in curs] == list(range(10))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors


JAVA_PROGRAM = r"""
import java.sql.*;
import java.util.*;
import java.util.concurrent.*;

public class TxnClients {
    public static void main(String[] args) throws Exception {
        String url = args[0];
        int threads = Integer.parseInt(args[1]);
        Properties p = new Properties();
        p.setProperty("user", args[2]);
        p.setProperty("password", args[3]);
        p.setProperty("prepareThreshold", "1");
        ExecutorService ex = Executors.newFixedThreadPool(threads);
        List<Future<Integer>> fs = new ArrayList<>();
        for (int t = 0; t < threads; t++) {
            final int n = t;
            fs.add(ex.submit(() -> {
                try (Connection c = DriverManager.getConnection(url, p)) {
                    int ok = 0;
                    try (PreparedStatement ps = c.prepareStatement("SELECT ?::int + ?::int")) {
                        for (int i = 0; i < 30; i++) {
                            ps.setInt(1, i);
                            ps.setInt(2, n);
                            try (ResultSet rs = ps.executeQuery()) {
                                rs.next();
                                if (rs.getInt(1) != i + n) throw new RuntimeException("bad result");
                                ok++;
                            }
                        }
                    }
                    c.setAutoCommit(false);
                    try (PreparedStatement ps = c.prepareStatement("SELECT ?::text || 'x'")) {
                        for (int i = 0; i < 10; i++) {
                            ps.setString(1, "v" + i);
                            try (ResultSet rs = ps.executeQuery()) {
                                rs.next();
                                if (!rs.getString(1).equals("v" + i + "x")) throw new RuntimeException("bad");
                                ok++;
                            }
                            c.commit();
                        }
                    }
                    return ok;
                }
            }));
        }
        int total = 0;
        for (Future<Integer> f : fs) total += f.get();
        ex.shutdown();
        System.out.println("OK " + total);
    }
}
"""


def test_jdbc_prepare_threshold_1(sluice, tmp_path):
    jar = Path("/usr/share/java/postgresql.jar")
    if not shutil.which("javac") or not jar.exists():
        pytest.skip("javac or libpostgresql-jdbc-java (scripts/deps.sh) missing")
    s = sluice(config())
    (tmp_path / "TxnClients.java").write_text(JAVA_PROGRAM)
    subprocess.run(["javac", "-cp", str(jar), "TxnClients.java"], cwd=tmp_path, check=True,
                   timeout=120)
    url = f"jdbc:postgresql://127.0.0.1:{s.port}/mydb"
    r = subprocess.run(["java", "-cp", f"{jar}:{tmp_path}", "TxnClients", url, "12", USER,
                        PASSWORDS[USER]], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip() == f"OK {12 * 40}"


NODE_PROGRAM = r"""
const { Client } = require('pg');
async function one(n) {
  const c = new Client({ host: '127.0.0.1', port: +process.argv[2], user: process.argv[3],
                         password: process.argv[4], database: 'mydb' });
  await c.connect();
  for (let i = 0; i < 20; i++) {
    const r = await c.query({ name: 'add', text: 'SELECT $1::int + $2::int AS v', values: [i, n] });
    if (r.rows[0].v !== i + n) throw new Error('bad result');
    const r2 = await c.query({ name: 'txt', text: 'SELECT $1::text AS t', values: ['x' + i] });
    if (r2.rows[0].t !== 'x' + i) throw new Error('bad text');
  }
  await c.end();
}
Promise.all([...Array(15).keys()].map(one)).then(() => console.log('OK'),
  (e) => { console.error(e); process.exit(1); });
"""

NODE_DIR = Path(tempfile.gettempdir()) / "sluice-test-node-pg"


def node_pg_dir():
    """A test-local install of npm's pg (kept between runs)."""
    if not shutil.which("node") or not shutil.which("npm"):
        pytest.skip("node/npm not installed")
    if not (NODE_DIR / "node_modules" / "pg").exists():
        NODE_DIR.mkdir(exist_ok=True)
        r = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix",
                            str(NODE_DIR), "pg@8"], capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            pytest.skip(f"npm install pg failed (registry unreachable?): {r.stderr[-500:]}")
    return NODE_DIR


def test_node_postgres_named_queries(sluice):
    d = node_pg_dir()
    s = sluice(config())
    (d / "txn.js").write_text(NODE_PROGRAM)
    r = subprocess.run(["node", "txn.js", str(s.port), USER, PASSWORDS[USER]], cwd=d,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip() == "OK"


def test_pgbench_prepared_100_clients_pool_10(sluice, tmp_path):
    if not shutil.which("pgbench"):
        pytest.skip("pgbench not installed")
    s = sluice(config(pool=10, clients=300))
    script = tmp_path / "bench.sql"
    script.write_text("\\set a random(1, 1000)\n"
                      "SELECT :a::int + 1;\n"
                      "BEGIN;\nSELECT :a::int * 2;\nSELECT now();\nEND;\n")
    env = dict(os.environ, PGPASSWORD=PASSWORDS[USER])
    r = subprocess.run(["pgbench", "-n", "-h", "127.0.0.1", "-p", str(s.port), "-U", USER,
                        "-M", "prepared", "-c", "100", "-j", "4", "-t", "30", "-f", str(script),
                        "mydb"], capture_output=True, text=True, timeout=120, env=env)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert "already exists" not in out and "does not exist" not in out, out[-3000:]
    assert "number of transactions actually processed: 3000/3000" in out, out[-3000:]
