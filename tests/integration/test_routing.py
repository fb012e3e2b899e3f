"""Read/write splitting against the cluster's primary and two streaming
replicas: where each kind of statement runs (the server says: its port, or
SHOW REPLICAS' read counts), that no write ever reaches a replica, and what
happens when a replica goes away and comes back."""

import threading
import time

import psycopg
import pytest

from sluice_fixture import (IS_PGBOUNCER, RawConn, error_fields, message, query_message,
                            wait_until)

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="sluice's read/write splitting")

SPLIT = {
    "databases": {
        "mydb": "host=127.0.0.1 port={primary_port} dbname=mydb "
                "replicas=127.0.0.1:{replica1_port},127.0.0.1:{replica2_port}",
    },
    # read_your_writes off: these tests say where each statement runs, and a
    # read right after a write would go to the primary (test_ryw.py).
    "pgbouncer": {"read_write_split": "on", "replica_ban_time": "1", "replica_check_interval": "0.2",
                  "read_your_writes": "off"},
}


def split_config(**general):
    config = {"databases": dict(SPLIT["databases"]), "pgbouncer": dict(SPLIT["pgbouncer"])}
    config["pgbouncer"].update({k: str(v) for k, v in general.items()})
    return config


@pytest.fixture(scope="module", autouse=True)
def routing_objects(cluster):
    """A table, a sequence and functions of each volatility, on the primary
    and replayed by both replicas before any test runs."""
    with cluster.primary_conn() as conn:
        conn.execute("DROP TABLE IF EXISTS routing_t")
        conn.execute("CREATE TABLE routing_t (id serial PRIMARY KEY, v int)")
        conn.execute("INSERT INTO routing_t (v) SELECT generate_series(1, 10)")
        conn.execute("GRANT ALL ON routing_t, routing_t_id_seq TO PUBLIC")
        conn.execute("GRANT CREATE ON SCHEMA public TO PUBLIC")
        conn.execute("CREATE OR REPLACE FUNCTION routing_stable() RETURNS int "
                     "LANGUAGE sql STABLE AS 'SELECT 1'")
        conn.execute("CREATE OR REPLACE FUNCTION routing_volatile() RETURNS int "
                     "LANGUAGE sql VOLATILE AS 'SELECT 1'")
        lsn = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
    for port in cluster.replica_ports:
        with cluster.connect(port=port) as r:
            wait_until(lambda: r.execute("SELECT pg_last_wal_replay_lsn() >= %s", (lsn,))
                       .fetchone()[0], 10, f"replica on {port} to replay the test objects")
    yield
    with cluster.primary_conn() as conn:
        conn.execute("DROP TABLE IF EXISTS routing_t")
        conn.execute("DROP FUNCTION IF EXISTS routing_stable(), routing_volatile()")


def admin(s):
    return psycopg.connect(s.dsn(user="sluice", dbname="pgbouncer"), autocommit=True)


def replica_reads(s):
    """Reads the router has sent to each replica, by port."""
    with admin(s) as conn:
        cur = conn.execute("SHOW REPLICAS")
        names = [d.name for d in cur.description]
        rows = [dict(zip(names, r)) for r in cur.fetchall()]
    return {r["port"]: r["reads"] for r in rows if r["role"] == "replica"}


def runs_on_replica(s, conn, sql, params=None):
    """Whether sql (which need not say where it runs) went to a replica."""
    before = sum(replica_reads(s).values())
    conn.execute(sql, params)
    return sum(replica_reads(s).values()) == before + 1


def port_of(conn, sql="SELECT inet_server_port()", params=None):
    return conn.execute(sql, params).fetchone()[-1]


def test_reads_spread_over_both_replicas(sluice, cluster):
    s = sluice(split_config())
    with s.connect() as conn:
        ports = [port_of(conn) for _ in range(20)]
    assert set(ports) == set(cluster.replica_ports), ports
    assert cluster.primary_port not in ports


def all_reads(s):
    """Reads the router sent to each endpoint, by role and port."""
    with admin(s) as conn:
        cur = conn.execute("SHOW REPLICAS")
        names = [d.name for d in cur.description]
        return {(r["role"], r["port"]): r["reads"]
                for r in (dict(zip(names, row)) for row in cur.fetchall())}


@pytest.mark.parametrize("primary_reads", ["fallback", "share"])
def test_primary_reads(sluice, cluster, primary_reads):
    """fallback: the primary reads only when no replica may; share: it is
    one more read endpoint, and SHOW REPLICAS counts what it read."""
    s = sluice(split_config(primary_reads=primary_reads, replica_load_balance="round_robin"))
    with s.connect() as conn:
        ports = {port_of(conn) for _ in range(9)}
    reads = all_reads(s)
    if primary_reads == "share":
        assert ports == {cluster.primary_port, *cluster.replica_ports}
        assert reads[("primary", cluster.primary_port)] >= 1
    else:
        assert ports == set(cluster.replica_ports)
        assert reads[("primary", cluster.primary_port)] == 0
    assert sum(reads.values()) == 9


def test_writes_go_to_the_primary(sluice, cluster):
    s = sluice(split_config())
    with s.connect() as conn:
        assert port_of(conn, "INSERT INTO routing_t (v) VALUES (0) RETURNING inet_server_port()") \
            == cluster.primary_port
        assert port_of(conn, "UPDATE routing_t SET v = v WHERE id = 1 RETURNING inet_server_port()") \
            == cluster.primary_port
        conn.execute("DELETE FROM routing_t WHERE v = 0")


@pytest.mark.parametrize("sql", [
    "SELECT inet_server_port() FROM routing_t LIMIT 1 FOR UPDATE",
    "SELECT inet_server_port() FROM routing_t LIMIT 1 FOR SHARE",
    "SELECT inet_server_port() FROM routing_t LIMIT 1 FOR NO KEY UPDATE",
    "SELECT inet_server_port() FROM routing_t LIMIT 1 FOR KEY SHARE",
    "WITH x AS (UPDATE routing_t SET v = v WHERE id = 1 RETURNING 1) "
    "SELECT inet_server_port() FROM x",
    "WITH a AS (SELECT 1 AS k), b AS (DELETE FROM routing_t WHERE false RETURNING 1) "
    "SELECT inet_server_port() FROM a LEFT JOIN (SELECT count(*) FROM b) c ON true",
    "SELECT nextval('routing_t_id_seq'), inet_server_port()",
    "SELECT CASE WHEN false THEN nextval('routing_t_id_seq') END, inet_server_port()",
    "SELECT routing_volatile(), inet_server_port()",
    "SELECT pg_advisory_xact_lock(4242), inet_server_port()",
    "SELECT set_config('application_name', 'x', true), inet_server_port()",
])
def test_statements_that_may_write_go_to_the_primary(sluice, cluster, sql):
    s = sluice(split_config())
    with s.connect() as conn:
        # Twice, and after the router had time to ask pg_proc about any
        # function it did not know.
        assert port_of(conn, sql) == cluster.primary_port
        time.sleep(0.6)
        assert port_of(conn, sql) == cluster.primary_port


@pytest.mark.parametrize("sql", [
    "SELECT v FROM routing_t WHERE id = 1",
    "VALUES (1), (2)",
    "TABLE routing_t",
    "SHOW work_mem",
    "EXPLAIN SELECT * FROM routing_t",
    "SELECT count(*), now(), lower('A'), random() FROM routing_t",
    "SELECT 1 FROM routing_t t JOIN routing_t u USING (id) WHERE t.v > 3",
])
def test_reads_go_to_a_replica(sluice, sql):
    s = sluice(split_config())
    with s.connect() as conn:
        assert runs_on_replica(s, conn, sql)


def test_explain_analyze_and_select_into_go_to_the_primary(sluice, cluster):
    """A replica would refuse both ("cannot execute ... in a read-only
    transaction"): that they succeed shows the primary ran them."""
    s = sluice(split_config())
    with s.connect() as conn:
        assert not runs_on_replica(s, conn, "EXPLAIN ANALYZE DELETE FROM routing_t WHERE false")
        assert not runs_on_replica(s, conn, "EXPLAIN ANALYZE SELECT 1")
        conn.execute("DROP TABLE IF EXISTS routing_into")
        assert not runs_on_replica(s, conn, "SELECT 1 AS x INTO routing_into")
        conn.execute("DROP TABLE routing_into")


def test_a_stable_function_is_looked_up_then_read_on_a_replica(sluice, cluster):
    """replica_function_check = strict: the first call goes to the primary
    while pg_proc is asked; once it says STABLE, calls go to replicas."""
    s = sluice(split_config())
    with s.connect() as conn:
        assert port_of(conn, "SELECT routing_stable(), inet_server_port()") == cluster.primary_port
        wait_until(lambda: port_of(conn, "SELECT routing_stable(), inet_server_port()")
                   in cluster.replica_ports, 5, "the lookup of routing_stable()")


def test_function_lists_from_the_config(sluice, cluster):
    s = sluice(split_config(replica_write_functions="routing_stable",
                            replica_read_functions="routing_volatile"))
    with s.connect() as conn:
        for _ in range(3):
            assert port_of(conn, "SELECT routing_stable(), inet_server_port()") \
                == cluster.primary_port
            assert port_of(conn, "SELECT routing_volatile(), inet_server_port()") \
                in cluster.replica_ports
            time.sleep(0.3)


def test_list_mode_takes_unknown_functions_as_reads(sluice, cluster):
    s = sluice(split_config(replica_function_check="list"))
    with s.connect() as conn:
        assert port_of(conn, "SELECT routing_volatile(), inet_server_port()") \
            in cluster.replica_ports
        assert port_of(conn, "SELECT nextval('routing_t_id_seq'), inet_server_port()") \
            == cluster.primary_port


def test_hints(sluice, cluster):
    s = sluice(split_config())
    with s.connect() as conn:
        assert port_of(conn, "SELECT /* sluice:primary */ inet_server_port()") \
            == cluster.primary_port
        assert port_of(conn, "SELECT inet_server_port() /* sluice:replica */") \
            in cluster.replica_ports
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction, match="cannot run on a replica"):
            conn.execute("/* sluice:replica */ INSERT INTO routing_t (v) VALUES (1)")
        # The session goes on, and the refused write never ran.
        assert port_of(conn) in cluster.replica_ports
    with cluster.primary_conn() as direct:
        assert direct.execute("SELECT count(*) FROM routing_t WHERE v = 1").fetchone()[0] == 1


def read_until_ready(conn):
    """The kinds of the messages up to ReadyForQuery, and the first error's fields."""
    kinds, error = [], None
    while True:
        kind, payload = conn.read_msg()
        kinds.append(kind)
        if kind == b"E" and error is None:
            error = error_fields(payload)
        if kind == b"Z":
            return kinds, error


def test_a_hinted_write_batch_not_all_buffered_gets_one_ready_for_query(sluice, cluster):
    """A write hinted to a replica is refused only once its whole request is
    here: a batch whose Parse arrives alone, or that ends with Flush, goes
    to the primary with the rest (a refusal would answer ReadyForQuery
    before the Sync, and the Sync get another). tests/fuzz/fuzz_router.c
    found it."""
    hinted = b"/* sluice:replica */ INSERT INTO routing_t (v) VALUES (-2)"
    s = sluice(split_config())
    with RawConn(s.port) as conn:
        conn.login()
        # The Parse alone, the rest of the batch later.
        conn.send(message(b"P", b"\0" + hinted + b"\0\0\0"))
        time.sleep(0.3)
        conn.send(message(b"B", b"\0\0\0\0\0\0\0\0") + message(b"E", b"\0\0\0\0\0")
                  + message(b"S"))
        kinds, error = read_until_ready(conn)
        assert error is None and kinds == [b"1", b"2", b"C", b"Z"]
        # Prepared and described, ended by Flush (asyncpg): its Execute,
        # all buffered with its Sync, is refused.
        conn.send(message(b"P", b"s1\0" + hinted + b"\0\0\0") + message(b"D", b"Ss1\0")
                  + message(b"H"))
        assert [conn.read_msg()[0] for _ in range(3)] == [b"1", b"t", b"n"]
        conn.send(message(b"S"))
        assert read_until_ready(conn) == ([b"Z"], None)
        conn.send(message(b"B", b"\0s1\0\0\0\0\0\0\0") + message(b"E", b"\0\0\0\0\0")
                  + message(b"S"))
        kinds, error = read_until_ready(conn)
        assert error["C"] == "25006" and kinds == [b"E", b"Z"]
        # Nothing more: the next Query's answer is its own.
        conn.send_query("SELECT 7")
        rows, error, _ = conn.read_result()
        assert (rows, error) == ([["7"]], None)
    with cluster.primary_conn() as direct:
        assert direct.execute("SELECT count(*) FROM routing_t WHERE v = -2").fetchone()[0] == 1
        direct.execute("DELETE FROM routing_t WHERE v = -2")


def test_a_write_pipelined_behind_a_read_waits_for_the_primary(sluice, cluster):
    """Both Queries arrive in one packet while the client is on a replica:
    the write is held until the replica's answer is done, then goes to the
    primary; the client sees the answers in order."""
    s = sluice(split_config())
    with RawConn(s.port) as conn:
        conn.login()
        conn.send(query_message("SELECT pg_sleep(0.2), inet_server_port()")
                  + query_message("INSERT INTO routing_t (v) VALUES (-1) RETURNING inet_server_port()")
                  + query_message("SELECT inet_server_port()"))
        rows1, err1, _ = conn.read_result()
        rows2, err2, _ = conn.read_result()
        rows3, err3, _ = conn.read_result()
    assert (err1, err2, err3) == (None, None, None)
    assert int(rows1[0][1]) in cluster.replica_ports
    assert int(rows2[0][0]) == cluster.primary_port
    # The read after the write rides along on the primary's server.
    assert int(rows3[0][0]) == cluster.primary_port
    with cluster.primary_conn() as direct:
        direct.execute("DELETE FROM routing_t WHERE v = -1")


def test_extended_protocol_and_prepared_statements(sluice, cluster):
    s = sluice(split_config())
    with s.connect() as conn:
        for _ in range(3):
            assert port_of(conn, "SELECT v, inet_server_port() FROM routing_t WHERE id = %s", (2,)) \
                in cluster.replica_ports
            assert port_of(conn, "SELECT v, inet_server_port() FROM routing_t WHERE id = %s", (2,),
                           ) in cluster.replica_ports
        cur = conn.cursor()
        for _ in range(6):  # psycopg prepares it server-side after a few runs
            cur.execute("SELECT inet_server_port() FROM routing_t WHERE id = %s", (3,), prepare=True)
            assert cur.fetchone()[0] in cluster.replica_ports
            cur.execute("UPDATE routing_t SET v = v WHERE id = %s RETURNING inet_server_port()",
                        (3,), prepare=True)
            assert cur.fetchone()[0] == cluster.primary_port


def test_no_write_ever_reaches_a_replica(sluice, cluster):
    """A write-heavy mix from 10 clients: every row arrives, and no
    statement is refused by a replica."""
    s = sluice(split_config(default_pool_size=4))
    errors = []

    def client(k):
        try:
            with s.connect() as conn:
                for i in range(30):
                    conn.execute("INSERT INTO routing_t (v) VALUES (%s)", (1000 + k,))
                    conn.execute("SELECT count(*) FROM routing_t WHERE v = %s", (1000 + k,))
                    with conn.transaction():
                        conn.execute("UPDATE routing_t SET v = v WHERE v = %s", (1000 + k,))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with cluster.primary_conn() as direct:
        assert direct.execute("SELECT count(*) FROM routing_t WHERE v >= 1000").fetchone()[0] == 300
        direct.execute("DELETE FROM routing_t WHERE v >= 1000")


def test_split_off_sends_everything_to_the_primary(sluice, cluster):
    s = sluice(split_config(read_write_split="off"))
    with s.connect() as conn:
        assert {port_of(conn) for _ in range(5)} == {cluster.primary_port}


def test_split_on_for_one_database_entry_only(sluice, cluster):
    config = split_config(read_write_split="off")
    config["databases"]["mydb"] += " read_write_split=on"
    s = sluice(config)
    with s.connect() as conn:
        assert port_of(conn) in cluster.replica_ports


def test_session_mode(sluice, cluster):
    s = sluice(split_config(pool_mode="session"))
    with s.connect() as conn:
        assert {port_of(conn) for _ in range(3)} == {cluster.primary_port}
    ro = s.dsn(options="-c default_transaction_read_only=on")
    with psycopg.connect(ro, autocommit=True) as conn:
        ports = {port_of(conn) for _ in range(3)}
        assert len(ports) == 1 and ports <= set(cluster.replica_ports)


def stats_of(s, db="mydb"):
    with admin(s) as a:
        cur = a.execute("SHOW STATS")
        names = [d.name for d in cur.description]
        return next(dict(zip(names, r)) for r in cur.fetchall() if r[0] == db)


def test_a_killed_replica_is_banned_and_comes_back(sluice, cluster):
    """replica1 stops as in a crash while 20 clients read from both
    replicas: no client query fails (reads in flight there are sent again,
    new ones go to replica2), SHOW REPLICAS says banned, and once it runs
    again a passing check puts it back in rotation."""
    s = sluice(split_config(default_pool_size=5))
    r1 = cluster.replica_ports[0]
    stop = threading.Event()
    errors, ports = [], []

    def reader():
        try:
            with s.connect() as conn:
                while not stop.is_set():
                    ports.append(port_of(conn, "SELECT pg_sleep(0.002), inet_server_port()"))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=reader) for _ in range(20)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: r1 in ports and len(set(ports)) == 2, 10, "reads on both replicas")
        cluster.stop_node("replica1", "immediate")
        stopped_at = len(ports)
        time.sleep(1.5)
        stop.set()
        for t in threads:
            t.join()
        assert errors == []
        assert len(ports) > stopped_at + 20  # reading went on
        with admin(s) as a:
            state = {r[2]: r[4] for r in a.execute("SHOW REPLICAS").fetchall()}
        assert state[r1] == "banned"
        assert r1 not in ports[stopped_at + 40:]
    finally:
        stop.set()
        cluster.start_node("replica1")
    with s.connect() as conn:
        wait_until(lambda: port_of(conn) == r1, 15, "replica1 back in rotation")


def test_a_read_whose_replica_fails_before_answering_is_sent_again(sluice, cluster):
    """The replica's backend is terminated (57P01, as at a shutdown) while
    it runs a read: the client gets its answer from elsewhere, and SHOW
    STATS counts one retry."""
    s = sluice(split_config(replica_load_balance="round_robin"))
    result = []
    with s.connect() as conn:
        assert runs_on_replica(s, conn, "SELECT 1")
        t = threading.Thread(target=lambda: result.append(
            conn.execute("SELECT 'retried', pg_sleep(1), inet_server_port()").fetchone()))
        t.start()
        try:
            killed = None
            deadline = time.time() + 10
            while killed is None and time.time() < deadline:
                for port in cluster.replica_ports:
                    with cluster.connect(port=port) as r:
                        row = r.execute("SELECT pg_terminate_backend(pid), inet_server_port() "
                                        "FROM pg_stat_activity WHERE query LIKE 'SELECT ''retried''%' "
                                        "AND pid <> pg_backend_pid()").fetchone()
                        if row:
                            killed = row[1]
                            break
                time.sleep(0.02)
        finally:
            t.join()
    assert killed is not None
    assert result and result[0][0] == "retried" and result[0][2] != killed
    stats = stats_of(s)
    assert stats["total_retry_count"] == 1 and stats["total_replica_read_count"] >= 2
    with admin(s) as a:
        assert dict(a.execute("SHOW TOTALS").fetchall())["total_retry_count"] == 1


def test_a_read_whose_answer_began_is_not_sent_again(sluice, cluster):
    """Once a byte of the answer reached the client, a failure is the
    client's to see: its connection ends with an error, nothing runs twice."""
    s = sluice(split_config())
    with s.connect() as conn:
        assert runs_on_replica(s, conn, "SELECT 1")
        # The rows go out first (a cursor's rows flush before pg_sleep).
        errs = []

        def run():
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT g, CASE WHEN g = 2000 THEN pg_sleep(1) END "
                                "FROM generate_series(1, 2000) g /* answer-began */")
                    cur.fetchall()
            except psycopg.Error as e:
                errs.append(e)
        t = threading.Thread(target=run)
        t.start()
        try:
            pids = []
            deadline = time.time() + 10
            while not pids and time.time() < deadline:
                for port in cluster.replica_ports:
                    with cluster.connect(port=port) as r:
                        rows = r.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                         "WHERE query LIKE '%answer-began%' AND "
                                         "wait_event = 'PgSleep'").fetchall()
                        pids += rows
                time.sleep(0.02)
        finally:
            t.join()
    assert pids and len(errs) == 1
    assert stats_of(s)["total_retry_count"] == 0
