"""The wire protocol through the pooler: simple and extended query, pipelines,
COPY both ways, notices, notifications, errors mid-batch, large messages."""

import asyncio
import hashlib
import select
import time
from concurrent.futures import ThreadPoolExecutor

import asyncpg
import psycopg
import pytest

from sluice_fixture import PASSWORDS, RawConn, query_message


@pytest.fixture
def table(primary_conn):
    """A fresh table proto_t (id int primary key, payload text, CHECK id <= 100000)."""
    primary_conn.execute("DROP TABLE IF EXISTS proto_t")
    primary_conn.execute("CREATE TABLE proto_t (id int PRIMARY KEY CHECK (id <= 100000), "
                         "payload text)")
    primary_conn.execute("GRANT ALL ON proto_t TO PUBLIC")
    yield "proto_t"
    primary_conn.execute("DROP TABLE IF EXISTS proto_t")


def test_simple_and_extended_query(sluice):
    s = sluice()
    with s.connect() as conn:
        # No parameters: psycopg sends a simple Query.
        assert conn.execute("SELECT 'simple', 1 + 1").fetchone() == ("simple", 2)
        # Parameters: Parse/Bind/Describe/Execute/Sync with the unnamed statement.
        assert conn.execute("SELECT %s::text || %s, %s::int * 2",
                            ("ext", "ended", 21)).fetchone() == ("extended", 42)
        # Binary parameters and results.
        cur = conn.cursor(binary=True)
        assert cur.execute("SELECT %b::int8 + 1, %b::bytea",
                           (2**40, b"\x00\xff")).fetchone() == (2**40 + 1, b"\x00\xff")
        # executemany in a transaction.
        with conn.transaction():
            conn.execute("CREATE TEMP TABLE em (x int) ON COMMIT DROP")
            conn.cursor().executemany("INSERT INTO em VALUES (%s)", [(i,) for i in range(50)])
            assert conn.execute("SELECT sum(x) FROM em").fetchone() == (1225,)


@pytest.mark.skipif(not psycopg.Pipeline.is_supported(), reason="libpq without pipeline mode")
def test_pipeline_mode(sluice):
    """Many Parse/Bind/Execute messages before one Sync."""
    s = sluice()
    with s.connect() as conn:
        with conn.pipeline():
            cursors = [conn.execute("SELECT %s::int", (i,)) for i in range(100)]
        assert [c.fetchone()[0] for c in cursors] == list(range(100))
        # An error inside a pipeline, then the connection still works.
        with pytest.raises(psycopg.errors.DivisionByZero):
            with conn.pipeline():
                conn.execute("SELECT 1")
                conn.execute("SELECT 1/%s::int", (0,))
                conn.execute("SELECT 2")
        assert conn.execute("SELECT %s::int", (3,)).fetchone() == (3,)


def test_asyncpg_extended_unnamed(sluice):
    s = sluice()

    async def run():
        conn = await asyncpg.connect(host="127.0.0.1", port=s.port, user="md5_user",
                                     password=PASSWORDS["md5_user"], database="mydb",
                                     statement_cache_size=0)
        try:
            rows = await conn.fetch("SELECT g, g::text FROM generate_series(1, $1::int) g", 5)
            assert [tuple(r) for r in rows] == [(i, str(i)) for i in range(1, 6)]
            assert await conn.fetchval("SELECT $1::jsonb ->> 'k'", '{"k": "v"}') == "v"
            with pytest.raises(asyncpg.exceptions.UndefinedTableError):
                await conn.fetch("SELECT * FROM no_such_table WHERE x = $1", 1)
            assert await conn.fetchval("SELECT $1::int", 7) == 7
        finally:
            await conn.close()

    asyncio.run(asyncio.wait_for(run(), 30))


ROWS = 100_000


def row_payload(i):
    return f"row {i} " + "x" * 40


def test_copy_from_stdin_and_to_stdout(sluice, primary_conn, table):
    s = sluice()
    with s.connect() as conn:
        with conn.cursor().copy(f"COPY {table} (id, payload) FROM STDIN") as copy:
            for i in range(1, ROWS + 1):
                copy.write_row((i, row_payload(i)))
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (ROWS,)
        expected = hashlib.md5()
        for i in range(1, ROWS + 1):
            expected.update(f"{i}\t{row_payload(i)}\n".encode())
        got = hashlib.md5()
        size = 0
        with conn.cursor().copy(f"COPY (SELECT id, payload FROM {table} ORDER BY id) "
                                "TO STDOUT") as copy:
            for block in copy:
                got.update(block)
                size += len(block)
        assert size > 5_000_000
        assert got.hexdigest() == expected.hexdigest()
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert primary_conn.execute(f"SELECT count(*), sum(length(payload)) FROM {table}").fetchone() \
        == (ROWS, sum(len(row_payload(i)) for i in range(1, ROWS + 1)))


def test_copy_fails_midway(sluice, primary_conn, table):
    """The server rejects row 100001 while the client is still sending: the
    error reaches the client, nothing is stored, the connection works after."""
    s = sluice({"pgbouncer": {"default_pool_size": 1}})
    with s.connect() as conn:
        with pytest.raises(psycopg.errors.CheckViolation):
            with conn.cursor().copy(f"COPY {table} (id, payload) FROM STDIN") as copy:
                for i in range(1, ROWS + 20_001):
                    copy.write_row((i, row_payload(i)))
        assert conn.execute("SELECT 1").fetchone() == (1,)
        # A client-side abort (CopyFail) as well.
        with pytest.raises(psycopg.errors.QueryCanceled):
            with conn.cursor().copy(f"COPY {table} (id, payload) FROM STDIN") as copy:
                copy.write_row((1, "one"))
                raise RuntimeError("client gives up")
        assert conn.execute("SELECT 2").fetchone() == (2,)
    with s.connect() as other:
        assert other.execute("SELECT txid_current_if_assigned() IS NULL").fetchone() == (True,)
    assert primary_conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)


def test_notice_reaches_client(sluice):
    s = sluice()
    with s.connect() as conn:
        notices = []
        conn.add_notice_handler(lambda diag: notices.append(diag.message_primary))
        conn.execute("DO $$ BEGIN RAISE NOTICE 'hello %', 42; END $$")
        conn.execute("SET client_min_messages = warning")
        assert notices == ["hello 42"]


def test_notification_in_session_mode(sluice, primary_conn):
    s = sluice({"pgbouncer": {"pool_mode": "session"}})
    with s.connect() as listener, s.connect() as sender:
        listener.execute("LISTEN sluice_channel")
        sender.execute("NOTIFY sluice_channel, 'through the pooler'")
        primary_conn.execute("NOTIFY sluice_channel, 'from the primary'")
        # Wait for the asynchronous NotificationResponse while the listener is idle.
        received = []
        deadline = time.monotonic() + 5
        while len(received) < 2 and time.monotonic() < deadline:
            select.select([listener.fileno()], [], [], 0.2)
            listener.pgconn.consume_input()
            while (n := listener.pgconn.notifies()) is not None:
                received.append((n.relname.decode(), n.extra.decode()))
        assert received == [("sluice_channel", "through the pooler"),
                            ("sluice_channel", "from the primary")]
        assert listener.execute("SELECT 1").fetchone() == (1,)


def test_error_in_middle_of_batch(sluice, primary_conn, table):
    s = sluice({"pgbouncer": {"default_pool_size": 1}})
    with s.connect() as conn:
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1; SELECT 1/0; SELECT 2")
        assert conn.execute("SELECT 3").fetchone() == (3,)
        # A simple-query string is one implicit transaction: nothing is kept.
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute(f"INSERT INTO {table} VALUES (1, 'a'); SELECT 1/0; "
                         f"INSERT INTO {table} VALUES (2, 'b')")
        assert conn.execute("SELECT 4").fetchone() == (4,)
    # The only server is clean for the next client.
    with s.connect() as other:
        assert other.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)
        assert other.execute("SELECT txid_current_if_assigned() IS NULL").fetchone() == (True,)
    assert primary_conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)


@pytest.mark.timeout(120)
def test_large_result_intact(sluice):
    """About 50 MB of rows arrive intact."""
    rows, width = 50_000, 1024
    s = sluice()
    expected = hashlib.md5()
    for i in range(1, rows + 1):
        expected.update(f"{i}:{hashlib.md5(str(i).encode()).hexdigest() * (width // 32)}".encode())
    with s.connect() as conn:
        cur = conn.execute("SELECT i, repeat(md5(i::text), %s) FROM generate_series(1, %s) i",
                           (width // 32, rows))
        got, n = hashlib.md5(), 0
        for i, text in cur:
            got.update(f"{i}:{text}".encode())
            n += 1
        assert n == rows
        assert got.hexdigest() == expected.hexdigest()
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_large_query_text(sluice):
    s = sluice()
    literal = "".join(chr(ord("a") + i % 26) for i in range(1_000_000))
    digest = hashlib.md5(literal.encode()).hexdigest()
    with s.connect() as conn:
        # Simple protocol: the 1 MB literal is in the Query message.
        assert conn.execute(f"SELECT length('{literal}'), md5('{literal}')").fetchone() \
            == (1_000_000, digest)
        # Extended protocol: 1 MB in Parse and 1 MB more in Bind.
        assert conn.execute(f"SELECT length('{literal}') + length(%s), md5(%s)",
                            (literal, literal)).fetchone() == (2_000_000, digest)
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_long_query_sent_in_pieces(sluice):
    """A Query longer than the read buffer, sent in pieces with pauses
    between them: it takes a server once a buffer's worth is here and the
    rest streams through, whole and in order."""
    s = sluice()
    literal = "".join(chr(ord("a") + i % 26) for i in range(200_000))
    msg = query_message(f"SELECT length('{literal}'), md5('{literal}')")
    with RawConn(s.port) as conn:
        conn.login()
        for at in range(0, len(msg), 30_000):
            conn.send(msg[at:at + 30_000])
            time.sleep(0.1)
        rows, error, _ = conn.read_result()
    assert error is None, error
    assert rows == [["200000", hashlib.md5(literal.encode()).hexdigest()]]


@pytest.mark.timeout(120)
def test_concurrent_large_results(sluice):
    """Eight clients fetch 10 MB each at once on a pool of 4: every result
    intact."""
    s = sluice({"pgbouncer": {"default_pool_size": 4}})
    rows = 10_000

    def fetch(n):
        with s.connect() as conn:
            got = hashlib.md5()
            for (text,) in conn.execute("SELECT repeat(md5((i + %s)::text), 32) "
                                        "FROM generate_series(1, %s) i", (n, rows)):
                got.update(text.encode())
            return got.hexdigest()

    def expected(n):
        h = hashlib.md5()
        for i in range(1, rows + 1):
            h.update(hashlib.md5(str(i + n).encode()).hexdigest().encode() * 32)
        return h.hexdigest()

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(fetch, range(8), timeout=100))
    assert results == [expected(n) for n in range(8)]
