"""Transaction pooling that applications don't notice: protocol-level and
SQL-level prepared statements, session settings, pinning and pipelining,
driven by hand (RawConn) so that every response is checked in order."""

import struct
import threading

import psycopg
import pytest

from sluice_fixture import IS_PGBOUNCER, RawConn, error_fields, message

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="sluice's transaction pooling state")

CONFIG = {"pgbouncer": {"default_pool_size": 2, "reserve_pool_size": 0,
                        "max_prepared_statements": 10}}


def cstr(s):
    return s.encode() + b"\0"


def parse(name, sql, types=()):
    return message(b"P", cstr(name) + cstr(sql) + struct.pack("!h", len(types)) +
                   b"".join(struct.pack("!i", t) for t in types))


def bind(stmt, params=(), portal=""):
    body = cstr(portal) + cstr(stmt) + struct.pack("!h", 0) + struct.pack("!h", len(params))
    for p in params:
        if p is None:
            body += struct.pack("!i", -1)
        else:
            b = str(p).encode()
            body += struct.pack("!i", len(b)) + b
    return message(b"B", body + struct.pack("!h", 0))


def describe(kind, name):
    return message(b"D", kind + cstr(name))


def execute(portal="", rows=0):
    return message(b"E", cstr(portal) + struct.pack("!i", rows))


def close(kind, name):
    return message(b"C", kind + cstr(name))


SYNC = message(b"S")
FLUSH = message(b"H")


def read_until_ready(conn):
    """Message kinds (with errors' SQLSTATE and data rows) up to ReadyForQuery."""
    out = []
    while True:
        kind, payload = conn.read_msg()
        if kind == b"E":
            f = error_fields(payload)
            out.append(("E", f.get("C"), f.get("M")))
        elif kind == b"D":
            n = struct.unpack("!h", payload[:2])[0]
            pos, vals = 2, []
            for _ in range(n):
                ln = struct.unpack("!i", payload[pos:pos + 4])[0]
                pos += 4
                vals.append(None if ln < 0 else payload[pos:pos + ln].decode())
                pos += max(ln, 0)
            out.append(("D", *vals))
        elif kind == b"C":
            out.append(("C", payload[:-1].decode()))
        elif kind in (b"N", b"S"):
            continue
        elif kind == b"Z":
            out.append(("Z", payload.decode()))
            return out
        else:
            out.append(kind.decode())


def run(conn, *msgs):
    conn.send(b"".join(msgs))
    return read_until_ready(conn)


def backend_of(conn):
    return int(conn.query("SELECT pg_backend_pid()")[0][0])


def test_parse_bind_execute_across_servers(sluice):
    """A statement prepared once is usable on whichever server the client
    gets next; the client sees exactly the answers PostgreSQL would give."""
    s = sluice(CONFIG)
    with RawConn(s.port).login() as a, RawConn(s.port).login() as b:
        assert run(a, parse("s1", "SELECT $1::int + 1"), SYNC) == ["1", ("Z", "I")]
        pids = set()
        for i in range(6):
            # b holds a server inside a transaction half of the time, so a
            # moves between the two.
            if i % 2:
                b.query("BEGIN")
            pids.add(backend_of(a))
            assert run(a, bind("s1", [i]), execute(), SYNC) == \
                ["2", ("D", str(i + 1)), ("C", "SELECT 1"), ("Z", "I")]
            if i % 2:
                b.query("COMMIT")
        # Describe statement and portal.
        assert run(a, describe(b"S", "s1"), bind("s1", [5]), describe(b"P", ""), execute(),
                   SYNC) == ["t", "T", "2", "T", ("D", "6"), ("C", "SELECT 1"), ("Z", "I")]
        assert len(pids) == 2, "the test meant a to use both servers"


@pytest.mark.parametrize("length", [1100, 5000, 20000])
def test_long_statement_names(sluice, length):
    """Statement and portal names of any length are renamed in Bind and
    Describe, however long the message (a Describe over PostgreSQL's 10,000
    byte limit for small messages would make it drop the connection)."""
    s = sluice(CONFIG)
    name, portal = "n" * (length - 1) + "1", "p" * 200
    with RawConn(s.port).login() as a, RawConn(s.port).login() as b:
        assert run(a, parse(name, "SELECT $1::int + 1"), SYNC) == ["1", ("Z", "I")]
        for i in range(2):
            if i:
                b.query("BEGIN")  # a gets the other server, which lacks the statement
            assert run(a, describe(b"S", name), bind(name, [i], portal), execute(portal),
                       SYNC) == ["t", "T", "2", ("D", str(i + 1)), ("C", "SELECT 1"),
                                 ("Z", "I")]
            if i:
                b.query("COMMIT")
        assert run(a, close(b"S", name), SYNC) == ["3", ("Z", "I")]
        assert run(a, bind(name, [1]), SYNC)[0][:2] == ("E", "26000")


def test_errors_keep_postgres_semantics(sluice):
    s = sluice(CONFIG)
    with RawConn(s.port).login() as a:
        assert run(a, parse("x", "SELECT 1"), SYNC) == ["1", ("Z", "I")]
        # A name reused without Close.
        out = run(a, parse("x", "SELECT 2"), bind("x"), execute(), SYNC)
        assert out == [("E", "42P05", 'prepared statement "x" already exists'), ("Z", "I")]
        # The old statement is still there.
        assert run(a, bind("x"), execute(), SYNC) == ["2", ("D", "1"), ("C", "SELECT 1"),
                                                     ("Z", "I")]
        # Close: answered by sluice; the name is gone for this client.
        assert run(a, close(b"S", "x"), SYNC) == ["3", ("Z", "I")]
        out = run(a, bind("x"), execute(), SYNC)
        assert out == [("E", "26000", 'prepared statement "x" does not exist'), ("Z", "I")]
        # After Close the name can be reused for another statement.
        assert run(a, parse("x", "SELECT 3"), bind("x"), execute(), SYNC) == \
            ["1", "2", ("D", "3"), ("C", "SELECT 1"), ("Z", "I")]
        # A Parse that fails leaves no statement behind.
        out = run(a, parse("bad", "SELEKT 1"), SYNC)
        assert out[0][:2] == ("E", "42601") and out[-1] == ("Z", "I")
        out = run(a, bind("bad"), execute(), SYNC)
        assert out[0][:2] == ("E", "26000")
        # Closing an unknown statement is not an error (as in PostgreSQL).
        assert run(a, close(b"S", "never"), SYNC) == ["3", ("Z", "I")]


def test_error_mid_pipeline_skips_to_sync(sluice):
    s = sluice(CONFIG)
    with RawConn(s.port).login() as a:
        a.send(parse("p1", "SELECT 1/$1::int") + bind("p1", [0]) + execute() +
               parse("p2", "SELECT 2") + close(b"S", "p1") + SYNC)
        first = read_until_ready(a)
        # The error may come at Bind (custom plans fold constants) or Execute;
        # nothing after it but ReadyForQuery.
        assert first[0] == "1" and first[-2][:2] == ("E", "22012") and first[-1] == ("Z", "I")
        assert first[1:-2] in ([], ["2"])
        # p2's Parse and p1's Close were skipped: p1 exists, p2 does not.
        assert run(a, bind("p1", [1]), execute(), SYNC) == \
            ["2", ("D", "1"), ("C", "SELECT 1"), ("Z", "I")]
        assert run(a, bind("p2"), execute(), SYNC)[0][:2] == ("E", "26000")


def test_parse_answered_by_sluice_when_server_has_it(sluice, cluster):
    """Two clients with the same statement share it on the server; the
    second client's Parse is answered without reaching the server."""
    s = sluice({"pgbouncer": {"default_pool_size": 1, "max_prepared_statements": 10}})
    with RawConn(s.port).login() as a, RawConn(s.port).login() as b:
        assert run(a, parse("a1", "SELECT 42"), SYNC) == ["1", ("Z", "I")]
        assert run(b, parse("b1", "SELECT 42"), bind("b1"), execute(), SYNC) == \
            ["1", "2", ("D", "42"), ("C", "SELECT 1"), ("Z", "I")]
        rows = b.query("SELECT name FROM pg_prepared_statements ORDER BY name")
        assert len(rows) == 1 and rows[0][0].startswith("sl_")


def test_lru_eviction(sluice):
    s = sluice({"pgbouncer": {"default_pool_size": 1, "max_prepared_statements": 3}})
    with RawConn(s.port).login() as a:
        for i in range(8):
            assert run(a, parse(f"q{i}", f"SELECT {i}"), SYNC) == ["1", ("Z", "I")]
        assert int(a.query("SELECT count(*) FROM pg_prepared_statements")[0][0]) <= 3
        # Every statement is still usable: evicted ones are prepared again.
        for i in range(8):
            assert run(a, bind(f"q{i}"), execute(), SYNC) == \
                ["2", ("D", str(i)), ("C", "SELECT 1"), ("Z", "I")]
        assert int(a.query("SELECT count(*) FROM pg_prepared_statements")[0][0]) <= 3


def test_pipeline_without_waiting(sluice):
    """Many Syncs in flight, statements prepared on the way: answers in
    order; the server is released only after the last ReadyForQuery."""
    s = sluice({"pgbouncer": {"default_pool_size": 1, "max_prepared_statements": 4}})
    with RawConn(s.port).login() as a, RawConn(s.port).login() as b:
        batch = b""
        for i in range(50):
            batch += parse(f"s{i}", f"SELECT {i}::int + $1::int") + bind(f"s{i}", [i]) + \
                execute() + SYNC
        a.send(batch)
        for i in range(50):
            assert read_until_ready(a) == ["1", "2", ("D", str(2 * i)), ("C", "SELECT 1"),
                                           ("Z", "I")]
        # Again with every statement known (re-prepared past the LRU limit),
        # one Sync at the end and Flush in between.
        batch = b"".join(bind(f"s{i}", [1]) + execute() + FLUSH for i in range(50))
        a.send(batch + SYNC)
        out = read_until_ready(a)
        assert [x for x in out if x[0] == "D"] == [("D", str(i + 1)) for i in range(50)]
        assert out[-1] == ("Z", "I")
        assert b.query("SELECT 1") == [["1"]]


def test_sql_prepare_execute_deallocate(sluice):
    s = sluice(CONFIG)
    with RawConn(s.port).login() as a, RawConn(s.port).login() as b:
        a.query("PREPARE foo(int) AS SELECT $1 * 2")
        pids = set()
        for i in range(4):
            if i % 2:
                b.query("BEGIN")
            pids.add(backend_of(a))
            assert a.query(f"EXECUTE foo({i})") == [[str(i * 2)]]
            if i % 2:
                b.query("COMMIT")
        assert len(pids) == 2
        with pytest.raises(Exception) as e:
            a.query("PREPARE foo AS SELECT 1")
        assert e.value.fields["C"] == "42P05"
        a.send_query("DEALLOCATE foo")
        rows, err, status = a.read_result()
        assert err is None and status == "I"
        with pytest.raises(Exception) as e:
            a.query("EXECUTE foo(1)")
        assert e.value.fields["C"] == "26000" and '"foo"' in e.value.fields["M"]
        # DEALLOCATE ALL and DISCARD ALL clear only this client's view.
        b.query("PREPARE bar AS SELECT 7")
        a.query("PREPARE foo AS SELECT 8")
        a.query("DEALLOCATE ALL")
        with pytest.raises(Exception):
            a.query("EXECUTE foo")
        assert b.query("EXECUTE bar") == [["7"]]
        a.query("PREPARE foo AS SELECT 9")
        a.query("DISCARD ALL")
        assert b.query("EXECUTE bar") == [["7"]]
        with pytest.raises(Exception):
            a.query("EXECUTE foo")


def test_session_settings_follow_the_client(sluice):
    s = sluice(CONFIG)
    with RawConn(s.port).login(options="-c statement_timeout=1234") as a, \
            RawConn(s.port).login() as b:
        a.query("SET search_path TO pg_catalog, public")
        a.query("SET lock_timeout = '3s'")
        a.query("SET myapp.tenant = 'acme'")
        a.query("SET LOCAL work_mem = '3MB'")  # outside a transaction: no effect
        seen = set()
        for i in range(4):
            if i % 2:
                b.query("BEGIN")
            seen.add(backend_of(a))
            row = a.query("SELECT current_setting('search_path'), current_setting('lock_timeout'),"
                          " current_setting('myapp.tenant'), current_setting('statement_timeout')")
            assert row == [["pg_catalog, public", "3s", "acme", "1234ms"]]
            # b never sees a's settings.
            assert b.query("SELECT current_setting('lock_timeout'), "
                           "current_setting('myapp.tenant', true)") in ([["0", None]], [["0", ""]])
            if i % 2:
                b.query("COMMIT")
        assert len(seen) == 2
        a.query("RESET lock_timeout")
        a.query("SET statement_timeout TO DEFAULT")
        for i in range(2):
            if i % 2 == 0:
                b.query("BEGIN")
            assert a.query("SELECT current_setting('lock_timeout'), "
                           "current_setting('statement_timeout')") == [["0", "0"]]
            if i % 2 == 0:
                b.query("COMMIT")
        # A failing SET is not remembered.
        with pytest.raises(Exception):
            a.query("SET lock_timeout = 'soon'")
        b.query("BEGIN")
        assert a.query("SELECT current_setting('lock_timeout')") == [["0"]]
        b.query("COMMIT")
        a.query("RESET ALL")
        assert a.query("SELECT current_setting('myapp.tenant', true)") in ([[None]], [[""]])


def test_no_window_decides_a_query(sluice):
    """A SET behind a comment of over 1 KiB is remembered, and a session
    advisory lock named after 1 KiB of a SELECT pins the client: the whole
    query decides, not its first kilobyte."""
    s = sluice(CONFIG)
    with RawConn(s.port).login() as a, RawConn(s.port).login() as b:
        a.query("/* " + "x" * 1500 + " */ SET lock_timeout = '7s'")
        for i in range(2):
            if i:
                b.query("BEGIN")  # a gets the other server
            assert a.query("SELECT current_setting('lock_timeout')") == [["7s"]]
            if i:
                b.query("COMMIT")
        a.query("SELECT '" + "y" * 1500 + "' AS pad, pg_advisory_lock(4242)")
        pid = backend_of(a)
        b.query("BEGIN")
        assert backend_of(b) != pid, "a's server, holding its lock, went to b"
        b.query("COMMIT")
        assert backend_of(a) == pid
        a.query("SELECT pg_advisory_unlock(4242)")


def set_stays_with_its_client(s, query):
    """Client a sends query, which sets lock_timeout to 7s: a sees it on its
    server and on the other one (b holding a's first in a transaction), b
    never does."""
    with RawConn(s.port).login() as a, RawConn(s.port).login() as b:
        a.query(query)
        for i in range(2):
            if i:
                b.query("BEGIN")  # a gets the other server
            assert a.query("SELECT current_setting('lock_timeout')") == [["7s"]]
            assert b.query("SELECT current_setting('lock_timeout')") == [["0"]]
            if i:
                b.query("COMMIT")


def test_a_line_comment_ends_at_a_carriage_return(sluice):
    """PostgreSQL ends a -- comment at a carriage return as at a line
    feed: a SET after one is remembered for its client and never left on
    a server for another."""
    set_stays_with_its_client(sluice(CONFIG), "-- the application's note\rSET lock_timeout = '7s'")


@pytest.mark.parametrize("query", ["SELECT 1; SET lock_timeout = '7s'",
                                   "VALUES (1); SET lock_timeout = '7s'",
                                   "WITH w AS (SELECT 1) SELECT * FROM w;SET lock_timeout = '7s'"])
def test_a_set_after_another_statement_in_one_query_is_remembered(sluice, query):
    """A SET that is not a query's first statement: sluice read only the
    first one, so the SET stayed on the server for whichever client got it
    next, and was not replayed for its own client on another server."""
    set_stays_with_its_client(sluice(CONFIG), query)


@pytest.mark.parametrize("create", ["CREATE TEMP TABLE t (x int)",
                                    "SELECT 1 AS x INTO TEMP t WHERE false",
                                    "select 1 as x into temporary t where false",
                                    "WITH w AS (SELECT 1 AS x) "
                                    "SELECT * INTO TEMP t FROM w WHERE false",
                                    "SELECT 1; CREATE TEMP TABLE t (x int)"])
def test_temp_table_pins(sluice, create):
    """A temporary table, made by CREATE TEMP or by SELECT INTO TEMP (which
    sluice did not see: its server went back to the pool with the table,
    for the next client to find), pins its client to its server."""
    s = sluice({"pgbouncer": {"default_pool_size": 2, "max_prepared_statements": 10}})
    with RawConn(s.port).login() as a, RawConn(s.port).login() as b:
        a.query(create)
        pid = backend_of(a)
        for _ in range(3):
            assert backend_of(b) != pid
            a.query("INSERT INTO t VALUES (1)")
            assert backend_of(a) == pid
        assert a.query("SELECT count(*) FROM t") == [["3"]]
    # The pinned server goes away with its client: nobody inherits t.
    with RawConn(s.port).login() as c:
        with pytest.raises(Exception):
            c.query("SELECT * FROM t")


def test_psycopg_prepare_threshold_zero_and_pipeline(sluice):
    s = sluice({"pgbouncer": {"default_pool_size": 2, "max_prepared_statements": 20}})
    errors = []

    def worker(n):
        try:
            with s.connect(prepare_threshold=0) as conn:
                for i in range(30):
                    assert conn.execute("SELECT %s::int + %s::int", (i, n)).fetchone() == (i + n,)
                    with conn.transaction():
                        conn.execute("SELECT %s::text", (str(i),))
                with conn.pipeline():
                    curs = [conn.execute("SELECT %s::int * 2", (i,)) for i in range(20)]
                    conn.execute("SET application_name = 'pipe'")
                    conn.execute("SET lock_timeout = '7s'")
                assert [c.fetchone()[0] for c in curs] == [i * 2 for i in range(20)]
                assert conn.execute("SHOW lock_timeout").fetchone() == ("7s",)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors


def test_idle_parse_of_known_statement_needs_no_server(sluice):
    """A client that prepares synchronously (PQprepare: Parse + Sync) while
    another holds the only server gets its answer at once when a server has
    parsed that text before; the statement is prepared where it is used."""
    s = sluice({"pgbouncer": {"default_pool_size": 1, "reserve_pool_size": 0,
                              "max_prepared_statements": 10}})
    with RawConn(s.port).login() as a, RawConn(s.port).login() as b:
        assert run(a, parse("k", "SELECT 11"), SYNC) == ["1", ("Z", "I")]
        a.query("BEGIN")  # a holds the only server
        b.sock.settimeout(2)
        assert run(b, parse("mine", "SELECT 11"), close(b"S", "nothing"), SYNC) == \
            ["1", "3", ("Z", "I")]
        a.query("COMMIT")
        assert run(b, bind("mine"), execute(), SYNC) == ["2", ("D", "11"), ("C", "SELECT 1"),
                                                        ("Z", "I")]
        # Unknown text still goes to a server (errors are the server's).
        out = run(b, parse("bad", "SELEKT"), SYNC)
        assert out[0][:2] == ("E", "42601")


def test_statement_mode_prepared(sluice):
    s = sluice({"pgbouncer": {"pool_mode": "statement", "default_pool_size": 2,
                              "max_prepared_statements": 10}})
    with RawConn(s.port).login() as a, RawConn(s.port).login() as b:
        assert run(a, parse("st", "SELECT $1::int * 10"), SYNC) == ["1", ("Z", "I")]
        for i in range(4):
            assert run(a, bind("st", [i]), execute(), SYNC) == \
                ["2", ("D", str(i * 10)), ("C", "SELECT 1"), ("Z", "I")]
            assert b.query("SELECT 1") == [["1"]]


def test_set_role_pins(sluice, cluster):
    s = sluice({"pgbouncer": {"default_pool_size": 2, "max_prepared_statements": 10}})
    with RawConn(s.port).login() as a, RawConn(s.port).login() as b:
        a.query("SET ROLE md5_user")
        pid = backend_of(a)
        for _ in range(3):
            assert backend_of(b) != pid
            assert backend_of(a) == pid


def answered(conn, kinds):
    got = "".join(conn.read_msg()[0].decode() for _ in kinds)
    assert got == kinds


def test_a_client_that_leaves_mid_transaction_leaves_its_server_rolled_back_for_the_next(
        sluice, cluster):
    """A client that goes in the middle of a transaction, or of a batch it
    never synced, costs no backend: sluice rolls back what it left (a Query
    ROLLBACK, or a Sync after an error) and the next client gets the same
    server, with nothing of it committed, no setting of it left and no
    statement sluice believed prepared that the server skipped. In session
    pooling too (then DISCARD ALL). Before, each such server was closed
    ("client disconnect while server was not ready") and another started."""
    s = sluice({"databases": {"sessdb": "host=127.0.0.1 port={primary_port} dbname=mydb "
                                        "pool_mode=session"},
                "pgbouncer": {"default_pool_size": 1, "max_prepared_statements": 10}})
    primary = cluster.primary_conn()
    primary.execute("CREATE TABLE IF NOT EXISTS rescue_rows (tag text)")
    primary.execute("GRANT ALL ON rescue_rows TO PUBLIC")
    primary.execute("CREATE OR REPLACE FUNCTION rescue_lock() RETURNS void LANGUAGE sql "
                    "AS 'SELECT pg_advisory_lock(4242)'")
    insert = "INSERT INTO rescue_rows VALUES ('{}')"
    cases = {
        # BEGIN, a SET, a write and a session advisory lock sluice does not
        # see (taken in a function: docs/pooling.md), then gone.
        "block": lambda c, tag: [c.query(q) for q in ("BEGIN", "SET statement_timeout = '7s'",
                                                     insert.format(tag), "SELECT rescue_lock()")],
        # A batch answered so far (Flush) and never synced: a Sync would
        # commit its implicit transaction.
        "batch": lambda c, tag: (
            c.send(parse("", "SET statement_timeout = '7s'") + bind("") + execute() +
                   parse("", insert.format(tag)) + bind("") + execute() + FLUSH),
            answered(c, "12C12C")),
        # A batch that failed: the server skips the rest (a Parse of a
        # named statement among it) up to a Sync that never comes.
        "failed": lambda c, tag: (
            c.send(parse("", "SELEC 1") + bind("") + execute() +
                   parse("p1", "SELECT 41 + 1") + FLUSH),
            answered(c, "E")),
        # A malformed Flush in a transaction: sluice refuses it (08P01,
        # closed; test_bad_input.py) and the server, idle in the
        # transaction, is rolled back. Before sluice checked shapes,
        # PostgreSQL answered it with an error where none was expected.
        "malformed": lambda c, tag: (
            c.query("BEGIN"), c.send(message(b"H", b"junk")), answered(c, "E")),
    }
    # "failed" first: no client has prepared p1 on the server yet.
    for dbname, name in [("mydb", "failed"), ("mydb", "batch"), ("mydb", "block"),
                         ("mydb", "malformed"), ("sessdb", "block")]:
        tag = f"{dbname}-{name}"
        a = RawConn(s.port).login(dbname=dbname)
        pid = a.query("SELECT pg_backend_pid()")[0][0]
        cases[name](a, tag)
        a.close()
        b = RawConn(s.port).login(dbname=dbname)
        assert b.query("SELECT pg_backend_pid()")[0][0] == pid, f"{tag}: server not kept"
        assert b.query("SHOW statement_timeout") == [["0"]], tag
        b.send(parse("p1", "SELECT 41 + 1") + bind("p1") + execute() + SYNC)
        assert read_until_ready(b) == ["1", "2", ("D", "42"), ("C", "SELECT 1"), ("Z", "I")], tag
        b.close()
        assert primary.execute("SELECT count(*) FROM rescue_rows WHERE tag = %s",
                               (tag,)).fetchone()[0] == 0, f"{tag}: committed"
        assert primary.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                               "AND pid = %s", (pid,)).fetchone()[0] == 0, f"{tag}: lock kept"
    log = s.log_text()
    assert log.count("kept: what its client left undone was ended") == 1, log  # failed
    assert log.count("kept: what its client left undone was rolled back") == 4, log
    assert "client disconnect while server was not ready" not in log
    # Counted per database, in SHOW STATS and /metrics alike.
    with psycopg.connect(s.dsn(user="sluice", dbname="pgbouncer"), autocommit=True) as console:
        cur = console.execute("SHOW STATS")
        kept = [d.name for d in cur.description].index("total_server_kept_count")
        stats = {row[0]: row[kept] for row in cur.fetchall()}
    assert (stats["mydb"], stats["sessdb"]) == (4, 1), stats
    primary.execute("DROP TABLE rescue_rows")
    primary.execute("DROP FUNCTION rescue_lock()")
    primary.close()
