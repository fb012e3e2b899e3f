"""The chaos suite's own tools, tested (the proxy's faults do what they
say, the checker counts what it should), and what they found: a server
connection lost in the middle of a message the client had the beginning of."""

import contextlib
import socket
import threading
import time

import psycopg
import pytest

from chaos_lib import FaultProxy, Workload, create_table
from sluice_fixture import IS_PGBOUNCER, RawConn


@pytest.fixture
def echo():
    """A TCP echo server on a thread; yields its port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)

    def serve(conn):
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    def accept():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield listener.getsockname()[1]
    listener.close()


@pytest.fixture
def echo_proxy(echo):
    p = FaultProxy(echo)
    yield p
    p.stop()


def recv_all(sock, n, timeout=5):
    sock.settimeout(timeout)
    data = b""
    while len(data) < n:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_proxy_forwards_and_adds_latency(echo_proxy):
    with socket.create_connection(("127.0.0.1", echo_proxy.port)) as s:
        s.sendall(b"hello")
        assert recv_all(s, 5) == b"hello"
        echo_proxy.set_latency(0.2)
        t = time.monotonic()
        s.sendall(b"slow")
        assert recv_all(s, 4) == b"slow"
        assert time.monotonic() - t >= 0.4  # 0.2 each way
        echo_proxy.heal()
        t = time.monotonic()
        s.sendall(b"fast")
        assert recv_all(s, 4) == b"fast"
        assert time.monotonic() - t < 0.2


def test_proxy_cuts_bandwidth_and_heals(echo_proxy):
    """200 kB at 100 kB/s each way take about 2 s; healed, a blink."""
    payload = bytes(range(256)) * 800
    with socket.create_connection(("127.0.0.1", echo_proxy.port)) as s:
        echo_proxy.set_bandwidth(100_000)
        t = time.monotonic()
        s.sendall(payload)
        assert recv_all(s, len(payload), timeout=10) == payload
        slow = time.monotonic() - t
        assert 1.8 <= slow < 6, slow
        echo_proxy.heal()
        t = time.monotonic()
        s.sendall(payload)
        assert recv_all(s, len(payload)) == payload
        assert time.monotonic() - t < 0.5


def test_proxy_cuts_after_n_bytes(echo_proxy):
    with socket.create_connection(("127.0.0.1", echo_proxy.port)) as s:
        s.sendall(b"x")
        assert recv_all(s, 1) == b"x"
        assert echo_proxy.cut(7, direction="down") == 1
        s.sendall(b"0123456789")
        data = recv_all(s, 10)
        assert data == b"0123456"  # 7 bytes, then the connection ends
        assert echo_proxy.cuts == 1


def test_proxy_blackhole_holds_without_fin_and_heals(echo_proxy):
    with socket.create_connection(("127.0.0.1", echo_proxy.port)) as s:
        s.sendall(b"a")
        assert recv_all(s, 1) == b"a"
        echo_proxy.blackhole()
        s.sendall(b"held")
        s.settimeout(1)
        with pytest.raises(socket.timeout):  # no data, no FIN, no RST
            s.recv(10)
        # A new connection is accepted and then never answered.
        with socket.create_connection(("127.0.0.1", echo_proxy.port)) as s2:
            s2.sendall(b"new")
            s2.settimeout(0.5)
            with pytest.raises(socket.timeout):
                s2.recv(10)
            echo_proxy.heal()
            assert recv_all(s2, 3) == b"new"
        assert recv_all(s, 4) == b"held"  # what was held arrives after the heal


def test_checker_counts_lost_phantom_and_unknown(primary_conn):
    """The checker's verdicts, from made-up outcomes against the table."""
    create_table(primary_conn)
    w = Workload(lambda app: "", clients=1, run="checkself")
    c = w.clients[0]
    c.outcomes = {"checkself-0-1": "committed", "checkself-0-2": "committed",
                  "checkself-0-3": "failed", "checkself-0-4": "unknown",
                  "checkself-0-5": "unknown"}
    for n in (1, 3, 4):  # 2 lost, 3 committed although it failed, 4 committed
        primary_conn.execute("INSERT INTO chaos_w VALUES (%s, 'checkself', 0, %s)",
                             (f"checkself-0-{n}", n))
    primary_conn.execute("INSERT INTO chaos_w VALUES ('checkself-9-9', 'checkself', 9, 9)")
    c.mixed.append("read nonce: got 'a', expected 'b'")
    # 4 committed although its client heard of a lost connection only.
    c.unknown_why = {"checkself-0-4": "commit:OperationalError"}
    # COPYs: 6 has 2 of its 3 rows, 7 all of its 3.
    c.outcomes.update({"checkself-0-6": "committed", "checkself-0-7": "committed"})
    c.copies = {"checkself-0-6": 3, "checkself-0-7": 3}
    for nonce, rows in (("checkself-0-6", 2), ("checkself-0-7", 3)):
        for i in range(rows):
            primary_conn.execute("INSERT INTO chaos_w VALUES (%s, 'checkself', 0, 6)",
                                 (f"{nonce}/{i}",))
    counts, _, _, details = w.check(primary_conn)
    assert (counts["acknowledged"], counts["lost"], counts["failed"], counts["unknown"],
            counts["unknown_committed"], counts["phantom"], counts["mixed"],
            counts["unflagged_commits"], counts["copies"], counts["partial"]) == \
        (4, 1, 1, 2, 1, 2, 1, 1, 2, 1), details


def test_checker_sees_session_state_not_the_clients_own(cluster, primary_conn):
    """The checker's session-state verdicts, on connections straight to the
    primary: a pinned client (every 2nd here) reads its own temporary table
    and advisory lock, an unpinned one none, and each is counted in mixed
    when its backend holds state that is not its own, or when its own is
    gone under a live connection."""
    create_table(primary_conn)
    w = Workload(lambda app: "", clients=2, run="checkpin", pinned_every=2)
    pinned, plain = w.clients
    assert (pinned.pinned, plain.pinned) == (True, False)
    with cluster.connect() as a, cluster.connect() as b:
        for conn, c in ((a, pinned), (b, plain)):
            conn.execute("SELECT set_config('chaos.session', %s, false)", (c.session,))
            conn.execute("SELECT set_config('application_name', %s, false)", (c.appname,))
        w._pin(a, pinned)
        w._read(a, pinned, "checkpin-0-1", 10)
        w._read(b, plain, "checkpin-1-1", 10)
        assert (pinned.mixed, plain.mixed, pinned.reads) == ([], [], 1)
        # Another's lock and temporary table on the unpinned client's backend.
        b.execute("SELECT pg_try_advisory_lock(7)")
        b.execute("CREATE TEMP TABLE chaos_pin (nonce text)")
        w._read(b, plain, "checkpin-1-2", 10)
        assert [m.split(":")[0] for m in plain.mixed] == [
            "read advisory locks (none taken)", "read no temporary table (none made)"]
        # The pinned client's state gone while its connection stays.
        a.execute("DISCARD TEMP")
        a.execute("SELECT pg_advisory_unlock_all()")
        w._read(a, pinned, "checkpin-0-2", 10)
        assert pinned.pin_lost == 1 and len(pinned.mixed) == 3, pinned.mixed
    counts, _, _, _ = w.check(primary_conn)
    assert (counts["mixed"], counts["pinned_clients"], counts["pin_lost"]) == (5, 1, 1)


@pytest.mark.skipif(IS_PGBOUNCER, reason="sluice's own fix")
def test_server_lost_mid_message_sends_no_error_inside_it(sluice, cluster, pool_user):
    """Regression (found by test_chaos.py's cuts): a server connection lost
    after sluice had forwarded the beginning of a message (a large DataRow)
    to the client. sluice appended its ErrorResponse "server conn crashed?"
    to the half message, so the client read the error's bytes as the rest of
    the row and then garbage ('got message type "a", length 1936221540').
    Now the client gets the beginning and then the end of the connection."""
    proxy = FaultProxy(cluster.primary_port)
    try:
        s = sluice({"databases": {"mydb": f"host=127.0.0.1 port={proxy.port} dbname=mydb"},
                    "pgbouncer": {"default_pool_size": 1, "reserve_pool_size": 0}})
        with RawConn(s.port).login(user=pool_user) as conn:
            conn.query("SELECT 1")  # the server connection exists, idle in the pool
            assert proxy.cut(3000, direction="down") == 1
            conn.send_query("SELECT repeat('x', 200000)")
            data = conn.read_until_closed(10)
        assert data is not None, "the client's connection stayed open"
        assert 0 < len(data) <= 3000, len(data)
        assert b"server conn crashed" not in data
        # What arrived is whole messages then the beginning of one.
        pos = 0
        while pos + 5 <= len(data):
            assert data[pos:pos + 1] in (b"T", b"D"), data[pos:pos + 20]
            pos += 1 + int.from_bytes(data[pos + 1:pos + 5], "big")
        assert pos > len(data), "the last message is the cut one"
        # psycopg: a lost connection, not a garbled stream (DatabaseError).
        with s.connect(user=pool_user) as pconn:
            pconn.execute("SELECT 1")
            assert proxy.cut(3000, direction="down") == 1
            with pytest.raises(psycopg.OperationalError) as e:
                pconn.execute("SELECT repeat('x', 200000)").fetchone()
            assert "got message type" not in str(e.value)
        # And sluice serves again.
        proxy.heal()
        with s.connect(user=pool_user) as pconn:
            assert pconn.execute("SELECT 1").fetchone() == (1,)
    finally:
        proxy.stop()


@contextlib.contextmanager
def proxied_primary(sluice, cluster, primary_conn, table):
    """A fresh table (x int) that everyone may write, and a sluice whose
    primary is behind a FaultProxy: (proxy, sluice)."""
    primary_conn.execute(f"DROP TABLE IF EXISTS {table}")
    primary_conn.execute(f"CREATE TABLE {table} (x int)")
    primary_conn.execute(f"GRANT ALL ON {table} TO PUBLIC")
    proxy = FaultProxy(cluster.primary_port)
    try:
        yield proxy, sluice({"databases": {"mydb": f"host=127.0.0.1 port={proxy.port} dbname=mydb"},
                             "pgbouncer": {"default_pool_size": 2, "reserve_pool_size": 0}})
    finally:
        proxy.stop()
        primary_conn.execute(f"DROP TABLE IF EXISTS {table}")


def commit_through_trap(proxy, conn, sql="COMMIT", run=None):
    """sql (COMMIT) on conn while the proxy drops the server's answer and
    then resets that server connection: the error psycopg raises (None if
    it succeeded). run: what the client does instead of executing sql."""
    proxy.trap(sql.encode() + b"\0")

    def drop():
        if proxy.sprung.wait(10):
            time.sleep(0.1)  # the server has run the COMMIT by now
            proxy.drop_held()

    t = threading.Thread(target=drop)
    t.start()
    try:
        (run or (lambda: conn.execute(sql)))()
    except psycopg.Error as e:
        return e
    finally:
        t.join()
    return None


@pytest.mark.skipif(IS_PGBOUNCER, reason="sluice's own fix")
def test_server_lost_at_commit_reports_resolution_unknown(sluice, cluster, pool_user,
                                                          primary_conn):
    """Regression (issue 17): a server lost while a COMMIT was in flight was
    reported as 08006 "server conn crashed?", which says the connection
    failed, and applications take for "not committed". Here the COMMIT did
    commit (the server ran it, only its answer was lost): the client must be
    told the outcome is unknown, 08007 transaction_resolution_unknown, with
    the SQLSTATE visible to the driver (a ReadyForQuery follows the FATAL
    error: libpq reports an error only at the end of its request). In a
    failed transaction nothing can commit: 08006 still."""
    with proxied_primary(sluice, cluster, primary_conn, "chaos_commit") as (proxy, s):
        with s.connect(user=pool_user) as conn:
            conn.execute("BEGIN")
            conn.execute("INSERT INTO chaos_commit VALUES (1)")
            e = commit_through_trap(proxy, conn)
        assert e is not None, "COMMIT succeeded although its answer was lost"
        assert e.sqlstate == "08007", (e.sqlstate, str(e))
        assert "transaction resolution unknown" in str(e)
        assert primary_conn.execute("SELECT count(*) FROM chaos_commit").fetchone() == (1,)
        # A COMMIT of a failed transaction only rolls back: not unknown.
        with s.connect(user=pool_user) as conn:
            conn.execute("BEGIN")
            with pytest.raises(psycopg.errors.DivisionByZero):
                conn.execute("SELECT 1 / 0")
            e = commit_through_trap(proxy, conn)
        assert isinstance(e, psycopg.OperationalError), e
        assert e.sqlstate != "08007" and "resolution unknown" not in str(e), str(e)
        assert "server conn crashed?" in str(e)  # 08006, as a lost connection
        # An autocommit write is its own COMMIT.
        with s.connect(user=pool_user) as conn:
            e = commit_through_trap(proxy, conn, "INSERT INTO chaos_commit VALUES (2)")
        assert e is not None and e.sqlstate == "08007", (e and e.sqlstate, str(e))
        assert primary_conn.execute("SELECT count(*) FROM chaos_commit").fetchone() == (2,)
        # A lone BEGIN commits nothing: 08006, and the driver sees the
        # connection broken at once. (With 08007 and its ReadyForQuery,
        # psycopg 3.1 kept the connection, its count of transactions left
        # at one by the failed BEGIN: the next conn.transaction() raised
        # AssertionError, CI's test_primary_restart_under_load.)
        with s.connect(user=pool_user, autocommit=False) as conn:
            def block():
                with conn.transaction():
                    conn.execute("INSERT INTO chaos_commit VALUES (3)")
            e = commit_through_trap(proxy, conn, "BEGIN", run=block)
            assert isinstance(e, psycopg.OperationalError), e
            assert "resolution unknown" not in str(e) and "server conn crashed?" in str(e), str(e)
            assert conn.closed, "the connection looks usable after its server was lost"
        assert primary_conn.execute("SELECT count(*) FROM chaos_commit").fetchone() == (2,)


@pytest.mark.skipif(IS_PGBOUNCER, reason="sluice's own fix")
def test_server_cut_inside_commit_answer_reports_resolution_unknown(sluice, cluster, pool_user,
                                                                    primary_conn):
    """Regression (issue 17, chaos cut_mid_message: 6 in 600 s): a server
    connection cut inside its COMMIT's answer. sluice passed the beginning
    of the CommandComplete on as it came, so when the rest never came it
    could only close the client in the middle of a message, with no error:
    "server closed the connection unexpectedly", for a COMMIT that had
    committed. A message that fits the buffer now goes whole: the client is
    told 08007, whether the cut is inside the CommandComplete's header, its
    text, or the ReadyForQuery after it."""
    with proxied_primary(sluice, cluster, primary_conn, "chaos_cut_commit") as (proxy, s):
        # CommandComplete "COMMIT" is 12 bytes, its ReadyForQuery 6.
        for i, n in enumerate((3, 8, 15)):
            with s.connect(user=pool_user) as conn:
                conn.execute("BEGIN")
                conn.execute("INSERT INTO chaos_cut_commit VALUES (%s)", (i,))
                proxy.trap(b"COMMIT\0", cut=("down", n))
                with pytest.raises(psycopg.Error) as ei:
                    conn.execute("COMMIT")
            e = ei.value
            assert e.sqlstate == "08007", (n, e.sqlstate, str(e))
            assert "transaction resolution unknown" in str(e), (n, str(e))
            assert primary_conn.execute(
                "SELECT count(*) FROM chaos_cut_commit WHERE x = %s", (i,)).fetchone() == (1,)


@pytest.mark.skipif(IS_PGBOUNCER, reason="sluice's read-your-writes")
def test_server_lost_after_commit_before_its_position(sluice, cluster, pool_user, primary_conn):
    """Regression (issue 17, chaos commit_killed): with the split and
    read_your_writes, the position query rides behind a COMMIT and the
    COMMIT's ReadyForQuery waits for its answer. A server lost between the
    two answers was taken for one with nothing in flight: the client heard
    "server conn crashed?" for a COMMIT that had committed (its
    CommandComplete had come). Now it gets its ReadyForQuery, the COMMIT
    succeeds, and its next read goes to the primary (the position is not
    known), where it sees its row."""
    primary_conn.execute("DROP TABLE IF EXISTS chaos_ride")
    primary_conn.execute("CREATE TABLE chaos_ride (x int)")
    primary_conn.execute("GRANT ALL ON chaos_ride TO PUBLIC")
    cluster.wait_replayed()
    proxy = FaultProxy(cluster.primary_port)
    try:
        s = sluice({"databases": {"mydb": (
            f"host=127.0.0.1 port={proxy.port} dbname=mydb "
            "replicas=127.0.0.1:{replica1_port},127.0.0.1:{replica2_port}")},
            "pgbouncer": {"read_write_split": "on", "read_your_writes": "user"}})
        with s.connect(user=pool_user, autocommit=False) as conn:
            conn.execute("INSERT INTO chaos_ride VALUES (1)")
            # The COMMIT (psycopg sends it by the extended protocol) and its
            # position query go up in one send; 33 bytes come down
            # (ParseComplete, BindComplete, NoData, CommandComplete "COMMIT",
            # ReadyForQuery), then the link is reset before the position's
            # answer.
            proxy.trap(b"pg_current_wal_insert_lsn", cut=("down", 33))
            conn.commit()
            assert proxy.trapped == 1 and proxy.cuts == 1
            got = conn.execute("SELECT count(*), inet_server_port() FROM chaos_ride").fetchone()
            conn.commit()
        assert got == (1, cluster.primary_port), got
        assert primary_conn.execute("SELECT count(*) FROM chaos_ride").fetchone() == (1,)
        s.wait_for_log(r"lost before the position of a write it committed")
    finally:
        proxy.stop()
        primary_conn.execute("DROP TABLE IF EXISTS chaos_ride")
