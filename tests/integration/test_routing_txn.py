"""Transactions under read/write splitting, as drivers and ORMs send them:
a BEGIN answered without a server, a READ COMMITTED transaction reading on
a replica until its first write and moving to the primary then (its BEGIN
and SET LOCALs replayed), REPEATABLE READ / SERIALIZABLE ones on the
primary, READ ONLY ones on a replica, a failed one staying failed. Where a
statement ran is what the server says (inet_server_port())."""

import asyncio
import struct

import psycopg
import pytest

from sluice_fixture import IS_PGBOUNCER, PASSWORDS, RawConn, message, query_message
from test_routing import admin, routing_objects, split_config  # noqa: F401 - the fixture is used

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="sluice's read/write splitting")

PORT = "SELECT inet_server_port()"


def one(conn, sql, params=None):
    return conn.execute(sql, params).fetchone()[0]


def linked(s):
    """Clients of mydb holding a server now (SHOW CLIENTS link); the lag
    monitor's own connections hold none."""
    with admin(s) as a:
        cur = a.execute("SHOW CLIENTS")
        names = [d.name for d in cur.description]
        rows = [dict(zip(names, r)) for r in cur.fetchall()]
    return sum(1 for r in rows if r["database"] == "mydb" and r["link"])


def stats_xacts(s):
    with admin(s) as a:
        cur = a.execute("SHOW STATS")
        names = [d.name for d in cur.description]
        row = next(dict(zip(names, r)) for r in cur.fetchall() if r[0] == "mydb")
        return row["total_xact_count"]


def rows_on_primary(cluster, v):
    with cluster.primary_conn() as direct:
        return direct.execute("SELECT count(*) FROM routing_t WHERE v = %s", (v,)).fetchone()[0]


def cleanup(cluster, v):
    with cluster.primary_conn() as direct:
        direct.execute("DELETE FROM routing_t WHERE v = %s", (v,))


def test_reads_then_a_write_then_reads(sluice, cluster):
    """psycopg's default (a transaction opened before the first statement):
    reads on a replica, the write and what follows on the primary, the
    commit keeps the write."""
    s = sluice(split_config())
    with s.connect(autocommit=False) as conn:
        assert one(conn, PORT) in cluster.replica_ports
        assert one(conn, "SELECT inet_server_port() FROM routing_t LIMIT 1") in cluster.replica_ports
        assert one(conn, "INSERT INTO routing_t (v) VALUES (-20) RETURNING inet_server_port()") \
            == cluster.primary_port
        # After the write the transaction is the primary's: it sees its row.
        assert one(conn, "SELECT count(*) FROM routing_t WHERE v = -20") == 1
        assert one(conn, PORT) == cluster.primary_port
        conn.commit()
        # The next transaction starts over on a replica.
        assert one(conn, PORT) in cluster.replica_ports
        conn.rollback()
    assert rows_on_primary(cluster, -20) == 1
    cleanup(cluster, -20)


def test_a_begin_holds_no_server(sluice, cluster):
    """A client that opened a transaction and thinks holds no server; an
    empty transaction never reaches one."""
    s = sluice(split_config())
    with s.connect() as conn:
        conn.execute("BEGIN")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        assert linked(s) == 0
        conn.execute("COMMIT")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        before = stats_xacts(s)
        conn.execute("START TRANSACTION")
        conn.execute("ROLLBACK")
        assert stats_xacts(s) == before  # no server ran anything
        conn.execute("BEGIN")
        assert one(conn, PORT) in cluster.replica_ports
        assert linked(s) == 1  # the replica's, until the end
        conn.execute("COMMIT")
        assert linked(s) == 0


def test_isolation_and_set_local_follow_the_move(sluice, cluster):
    """The BEGIN's options and the SET LOCALs made on the replica are in
    force on the primary after the move."""
    s = sluice(split_config())
    with s.connect() as conn:
        conn.execute("BEGIN ISOLATION LEVEL READ COMMITTED")
        conn.execute("SET LOCAL statement_timeout = '4321ms'")
        assert one(conn, PORT) in cluster.replica_ports
        assert one(conn, "SHOW statement_timeout") == "4321ms"
        assert one(conn, "UPDATE routing_t SET v = v WHERE id = 1 RETURNING inet_server_port()") \
            == cluster.primary_port
        assert one(conn, "SHOW statement_timeout") == "4321ms"
        assert one(conn, "SHOW transaction_isolation") == "read committed"
        conn.execute("ROLLBACK")
        # SET LOCAL ended with the transaction.
        assert one(conn, "SHOW statement_timeout") != "4321ms"


@pytest.mark.parametrize("begin", ["BEGIN ISOLATION LEVEL REPEATABLE READ",
                                   "START TRANSACTION ISOLATION LEVEL SERIALIZABLE"])
def test_repeatable_read_and_serializable_run_on_the_primary(sluice, cluster, begin):
    s = sluice(split_config())
    with s.connect() as conn:
        conn.execute(begin)
        assert one(conn, PORT) == cluster.primary_port
        assert one(conn, "SELECT count(*) FROM routing_t WHERE id = 1") == 1
        assert one(conn, PORT) == cluster.primary_port
        conn.execute("COMMIT")


def test_session_default_isolation_puts_transactions_on_the_primary(sluice, cluster):
    s = sluice(split_config())
    with psycopg.connect(s.dsn(options="-c default_transaction_isolation=serializable"),
                         autocommit=False) as conn:
        assert one(conn, PORT) == cluster.primary_port
        conn.rollback()


@pytest.mark.parametrize("first", ["LOCK TABLE routing_t IN ACCESS SHARE MODE",
                                   "SAVEPOINT a",
                                   "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ",
                                   "DECLARE c CURSOR FOR SELECT 1"])
def test_statements_that_keep_a_transaction_on_the_primary(sluice, cluster, first):
    s = sluice(split_config())
    with s.connect() as conn:
        conn.execute("BEGIN")
        conn.execute(first)
        assert one(conn, PORT) == cluster.primary_port
        conn.execute("ROLLBACK")


def test_a_savepoint_after_reads_moves_the_transaction(sluice, cluster):
    s = sluice(split_config())
    with s.connect(autocommit=False) as conn:
        assert one(conn, PORT) in cluster.replica_ports
        with conn.transaction():  # a savepoint inside the open transaction
            assert one(conn, PORT) == cluster.primary_port
            conn.execute("INSERT INTO routing_t (v) VALUES (-21)")
        assert one(conn, PORT) == cluster.primary_port
        conn.rollback()
    assert rows_on_primary(cluster, -21) == 0


def test_read_only_transaction_stays_on_a_replica(sluice, cluster):
    s = sluice(split_config())
    with s.connect() as conn:
        conn.execute("BEGIN READ ONLY")
        port = one(conn, PORT)
        assert port in cluster.replica_ports
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("INSERT INTO routing_t (v) VALUES (-22)")
        conn.execute("ROLLBACK")
    assert rows_on_primary(cluster, -22) == 0


def test_a_failed_transaction_stays_failed(sluice, cluster):
    """An error on the replica aborts the transaction: the write after it
    fails as on any server (it is not run in a fresh transaction on the
    primary)."""
    s = sluice(split_config())
    with s.connect() as conn:
        conn.execute("BEGIN")
        assert one(conn, PORT) in cluster.replica_ports
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1 / 0")
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("INSERT INTO routing_t (v) VALUES (-23)")
        conn.execute("ROLLBACK")
        assert one(conn, PORT) in cluster.replica_ports
    assert rows_on_primary(cluster, -23) == 0


def test_rollback_after_the_move_undoes_the_write(sluice, cluster):
    s = sluice(split_config())
    with s.connect() as conn:
        conn.execute("BEGIN")
        assert one(conn, PORT) in cluster.replica_ports
        conn.execute("INSERT INTO routing_t (v) VALUES (-24)")
        conn.execute("ROLLBACK")
    assert rows_on_primary(cluster, -24) == 0


def test_psycopg2_default_transactions(sluice, cluster):
    psycopg2 = pytest.importorskip("psycopg2")
    s = sluice(split_config())
    conn = psycopg2.connect(s.dsn())
    try:
        cur = conn.cursor()
        cur.execute(PORT)
        assert cur.fetchone()[0] in cluster.replica_ports
        cur.execute("INSERT INTO routing_t (v) VALUES (-25) RETURNING inet_server_port()")
        assert cur.fetchone()[0] == cluster.primary_port
        conn.commit()
        cur.execute(PORT)
        assert cur.fetchone()[0] in cluster.replica_ports
        conn.commit()
    finally:
        conn.close()
    assert rows_on_primary(cluster, -25) == 1
    cleanup(cluster, -25)


def test_sqlalchemy_session_reads_then_writes(sluice, cluster):
    sqlalchemy = pytest.importorskip("sqlalchemy")
    from sqlalchemy.orm import Session

    s = sluice(split_config())
    engine = sqlalchemy.create_engine("postgresql+psycopg2://", creator=lambda: __import__(
        "psycopg2").connect(s.dsn()))
    try:
        with Session(engine) as session:
            port = session.execute(sqlalchemy.text(PORT)).scalar()
            assert port in cluster.replica_ports
            n = session.execute(sqlalchemy.text("SELECT count(*) FROM routing_t")).scalar()
            assert n >= 10
            port = session.execute(sqlalchemy.text(
                "INSERT INTO routing_t (v) VALUES (-26) RETURNING inet_server_port()")).scalar()
            assert port == cluster.primary_port
            session.commit()
    finally:
        engine.dispose()
    assert rows_on_primary(cluster, -26) == 1
    cleanup(cluster, -26)


def test_asyncpg_transaction(sluice, cluster):
    asyncpg = pytest.importorskip("asyncpg")
    s = sluice(split_config())

    async def run():
        conn = await asyncpg.connect(host="127.0.0.1", port=s.port, user="md5_user",
                                     password=PASSWORDS["md5_user"], database="mydb",
                                     statement_cache_size=0, timeout=30)
        try:
            async with conn.transaction():
                assert await conn.fetchval(PORT) in cluster.replica_ports
                assert await conn.fetchval(
                    "INSERT INTO routing_t (v) VALUES (-27) RETURNING inet_server_port()") \
                    == cluster.primary_port
                assert await conn.fetchval(PORT) == cluster.primary_port
        finally:
            await conn.close()

    asyncio.run(run())
    assert rows_on_primary(cluster, -27) == 1
    cleanup(cluster, -27)


def cstr(s):
    return s.encode() + b"\0"


def parse(sql, name=""):
    return message(b"P", cstr(name) + cstr(sql) + struct.pack("!h", 0))


def bind(name=""):
    return message(b"B", cstr("") + cstr(name) + struct.pack("!hhh", 0, 0, 0))


def execute():
    return message(b"E", cstr("") + struct.pack("!i", 0))


SYNC = message(b"S")


def read_batch(conn):
    """Messages up to ReadyForQuery -> (data rows, error fields, status)."""
    return conn.read_result()


def test_jdbc_batch_begin(sluice, cluster):
    """JDBC sends BEGIN in the same batch as the first statement: a read
    batch opens the transaction on a replica, the write batch after it moves
    it to the primary, the commit ends it there."""
    s = sluice(split_config())
    with RawConn(s.port) as conn:
        conn.login()
        conn.send(parse("BEGIN") + bind() + execute() + parse(PORT) + bind() + execute() + SYNC)
        rows, err, status = read_batch(conn)
        assert err is None and status == "T" and int(rows[0][0]) in cluster.replica_ports
        conn.send(parse("INSERT INTO routing_t (v) VALUES (-28) RETURNING inet_server_port()")
                  + bind() + execute() + SYNC)
        rows, err, status = read_batch(conn)
        assert err is None and status == "T" and int(rows[0][0]) == cluster.primary_port
        conn.send(parse("COMMIT") + bind() + execute() + SYNC)
        rows, err, status = read_batch(conn)
        assert err is None and status == "I"
        conn.send(query_message(PORT))
        rows, err, status = read_batch(conn)
        assert int(rows[0][0]) in cluster.replica_ports
    assert rows_on_primary(cluster, -28) == 1
    cleanup(cluster, -28)


def test_idle_transaction_timeout_applies_to_a_begin_answered_here(sluice, cluster):
    s = sluice(split_config(idle_transaction_timeout=1))
    with s.connect() as conn:
        conn.execute("BEGIN")
        with pytest.raises(psycopg.OperationalError, match="idle transaction timeout"):
            import time
            time.sleep(2.5)
            conn.execute(PORT)


def test_an_extended_begin_holds_no_server(sluice, cluster):
    """BEGIN by the extended protocol (pgbench -M extended, libpq's
    PQexecParams): answered here message by message like the simple one,
    without a server; the transaction opens where its first statement goes,
    and an empty one never reaches a server."""
    s = sluice(split_config())
    describe_portal = message(b"D", b"P\0")
    with RawConn(s.port) as conn:
        conn.login()
        before = stats_xacts(s)
        conn.send(parse("BEGIN") + bind() + describe_portal + execute() + SYNC)
        kinds = []
        while True:
            kind, payload = conn.read_msg()
            kinds.append(kind)
            if kind == b"Z":
                break
        assert kinds == [b"1", b"2", b"n", b"C", b"Z"] and payload == b"T"
        assert linked(s) == 0
        conn.send(parse("COMMIT") + bind() + execute() + SYNC)
        rows, err, status = read_batch(conn)
        assert err is None and status == "I"
        assert stats_xacts(s) == before  # no server ran anything
        conn.send(parse("BEGIN") + bind() + execute() + SYNC)
        assert read_batch(conn)[2] == "T"
        conn.send(parse(PORT) + bind() + execute() + SYNC)
        rows, err, status = read_batch(conn)
        assert err is None and status == "T" and int(rows[0][0]) in cluster.replica_ports
        conn.send(parse("INSERT INTO routing_t (v) VALUES (-29) RETURNING inet_server_port()")
                  + bind() + execute() + SYNC)
        rows, err, status = read_batch(conn)
        assert err is None and status == "T" and int(rows[0][0]) == cluster.primary_port
        conn.send(parse("COMMIT") + bind() + execute() + SYNC)
        assert read_batch(conn)[2] == "I"
    assert rows_on_primary(cluster, -29) == 1
    cleanup(cluster, -29)


def test_a_server_ending_while_the_transaction_opens_sends_the_request_elsewhere(sluice, cluster):
    """A transaction opens where its first statement goes (its BEGIN sent
    there first). When that server ends meanwhile (terminated here, as in
    a restart), nothing of the statement went there: it waits for another
    server, where the transaction opens anew, and the client sees nothing.
    It was closed with "transaction resolution unknown"."""
    from chaos_lib import FaultProxy
    proxy = FaultProxy(cluster.primary_port)
    try:
        config = split_config(default_pool_size=1, reserve_pool_size=0)
        config["databases"]["mydb"] = config["databases"]["mydb"].replace(
            "port={primary_port}", f"port={proxy.port}")
        s = sluice(config)
        with s.connect() as conn:
            # The primary's one server, now idle in the pool.
            pid = one(conn, "INSERT INTO routing_t (v) VALUES (-31) RETURNING pg_backend_pid()")
            mark = s.log_mark()
            # Its end reaches sluice late; the BEGIN is sent before.
            with proxy.ending_late(cluster, pid):
                conn.execute("BEGIN")
                port, pid2 = conn.execute("INSERT INTO routing_t (v) VALUES (-31) "
                                          "RETURNING inet_server_port(), pg_backend_pid()").fetchone()
                conn.execute("COMMIT")
            assert port == cluster.primary_port and pid2 != pid
            s.wait_for_log(r"its server went while its transaction was opened .*: it waits",
                           since=mark)
        assert rows_on_primary(cluster, -31) == 2
    finally:
        proxy.stop()
        cleanup(cluster, -31)
