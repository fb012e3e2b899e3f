"""Timeouts on the client side (query, idle, idle in transaction, login) and
on the server side (connect, login retry)."""

import socket
import struct
import threading
import time

import psycopg
import pytest

from sluice_fixture import (IS_PGBOUNCER, RawConn, TcpProxy, first_error, free_port, message,
                            startup_packet, wait_until)


def sleeping_backends(cluster, marker):
    with cluster.primary_conn() as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                            "AND query LIKE %s AND pid <> pg_backend_pid()",
                            (f"%{marker}%",)).fetchone()[0]


def test_query_timeout(sluice, cluster):
    s = sluice({"pgbouncer": {"query_timeout": 1}})
    with s.connect() as conn:
        assert conn.execute("SELECT pg_sleep(0.2), 1").fetchone() == ("", 1)
        started = time.monotonic()
        with pytest.raises(psycopg.Error, match=r"query.timeout"):
            conn.execute("SELECT pg_sleep(5) /* qt-marker */")
        elapsed = time.monotonic() - started
        assert 0.9 <= elapsed <= 2.5, f"query_timeout=1 fired after {elapsed:.2f}s"
    if not IS_PGBOUNCER:
        # sluice cancels it on the server (PgBouncer 1.18 only closes the
        # connection, and the backend sleeps on).
        wait_until(lambda: sleeping_backends(cluster, "qt-marker") == 0, 2,
                   "the timed-out query gone from the server")
    with s.connect() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_query_timeout_counts_the_wait(sluice):
    """A client queued for a server longer than query_timeout gets PgBouncer's
    "query_timeout" and its connection closed, well before
    query_wait_timeout."""
    # The holder keeps the only server by session pooling, idle outside a
    # transaction: PgBouncer's query_timeout also closes a client idle in a
    # transaction that long after its last query (it checks every server not
    # ready for a new query); sluice does not (docs/configuration.md).
    s = sluice({"pgbouncer": {"pool_mode": "session", "default_pool_size": 1,
                              "reserve_pool_size": 0, "query_timeout": 2,
                              "query_wait_timeout": 30}})
    with s.connect() as holder, s.connect() as waiter:
        holder.execute("SELECT 1")  # the holder has the only server
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError, match=r"query_timeout"):
            waiter.execute("SELECT 1")
        elapsed = time.monotonic() - started
        assert 1.8 <= elapsed <= 4, f"query_timeout=2 fired after {elapsed:.2f}s of waiting"
        assert waiter.closed or waiter.broken
        assert holder.execute("SELECT 1").fetchone() == (1,)


def test_idle_transaction_timeout(sluice, primary_conn):
    primary_conn.execute("DROP TABLE IF EXISTS itt_t")
    primary_conn.execute("CREATE TABLE itt_t (x int)")
    primary_conn.execute("GRANT ALL ON itt_t TO PUBLIC")
    s = sluice({"pgbouncer": {"idle_transaction_timeout": 1}})
    with s.connect() as conn:
        conn.execute("BEGIN")
        conn.execute("INSERT INTO itt_t VALUES (1)")
        time.sleep(2.5)
        with pytest.raises(psycopg.OperationalError, match=r"idle.transaction.timeout"):
            conn.execute("COMMIT")
    assert primary_conn.execute("SELECT count(*) FROM itt_t").fetchone() == (0,)
    # Idle outside a transaction is fine.
    with s.connect() as conn:
        conn.execute("SELECT 1")
        time.sleep(2)
        assert conn.execute("SELECT 2").fetchone() == (2,)
    primary_conn.execute("DROP TABLE itt_t")


def test_idle_transaction_timeout_counts_from_the_end_of_the_query(sluice):
    """A 2.5 s query then 1 s of idle, under a 2 s timeout: idle for 1 s,
    not 3.5 (PgBouncer counts from when the transaction went idle)."""
    s = sluice({"pgbouncer": {"idle_transaction_timeout": 2}})
    with s.connect() as conn:
        conn.execute("BEGIN")
        conn.execute("SELECT pg_sleep(2.5)")
        time.sleep(1)
        assert conn.execute("SELECT 3").fetchone() == (3,)
        conn.execute("COMMIT")


def test_client_idle_timeout(sluice):
    s = sluice({"pgbouncer": {"client_idle_timeout": 1}})
    with s.connect() as busy, s.connect() as idle:
        idle.execute("SELECT 1")
        for _ in range(10):
            busy.execute("SELECT pg_sleep(0.25)")
        with pytest.raises(psycopg.OperationalError, match=r"client.idle.timeout"):
            idle.execute("SELECT 1")
        # Activity keeps a client alive.
        assert busy.execute("SELECT 2").fetchone() == (2,)


@pytest.mark.parametrize("sends", ["nothing", "partial startup", "startup, no password"])
def test_client_login_timeout(sluice, sends):
    s = sluice({"pgbouncer": {"client_login_timeout": 1}})
    conn = RawConn(s.port)
    try:
        if sends == "partial startup":
            conn.send(startup_packet("md5_user")[:10])
        elif sends == "startup, no password":
            conn.send(startup_packet("md5_user"))
            assert conn.read_msg()[0] == b"R"
        started = time.monotonic()
        assert conn.read_until_closed(4) is not None, "still open after 4s"
        elapsed = time.monotonic() - started
        # PgBouncer's 1 s janitor may add up to a second.
        assert elapsed <= 3, f"closed after {elapsed:.2f}s, client_login_timeout=1"
    finally:
        conn.close()
    with s.connect() as ok:
        assert ok.execute("SELECT 1").fetchone() == (1,)


class SilentServer:
    """Accepts TCP connections and never says anything. .accepted and .closed
    record when each connection was accepted and closed by the peer."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted, self.closed = [], []
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            self.accepted.append(time.monotonic())
            threading.Thread(target=self._watch, args=(conn,), daemon=True).start()

    def _watch(self, conn):
        try:
            while conn.recv(4096):
                pass
        except OSError:
            pass
        self.closed.append(time.monotonic())

    def stop(self):
        self.sock.close()
        for c in self.conns:
            c.close()


def test_server_connect_timeout(sluice):
    """A server that accepts but never answers: the pooler gives up on it after
    server_connect_timeout, and the client gets an error by query_wait_timeout."""
    silent = SilentServer()
    try:
        s = sluice({"databases": {"silent": f"host=127.0.0.1 port={silent.port} dbname=x"},
                    "pgbouncer": {"server_connect_timeout": 1, "query_wait_timeout": 3,
                                  "server_login_retry": 1}})
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError):
            with s.connect(dbname="silent") as conn:
                conn.execute("SELECT 1")
        elapsed = time.monotonic() - started
        assert elapsed <= 5, f"client error after {elapsed:.2f}s, query_wait_timeout=3"
        assert silent.accepted, "the pooler never connected to the server"
        assert silent.closed, "the pooler never gave up on the silent server"
        gave_up = silent.closed[0] - silent.accepted[0]
        assert 0.8 <= gave_up <= 2.5, f"gave up after {gave_up:.2f}s, server_connect_timeout=1"
        # The other database is unaffected.
        with s.connect() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        silent.stop()


def test_server_login_retry(sluice, cluster):
    """A database whose server refuses connections: the client gets an error
    by query_wait_timeout; once the server accepts, new clients get in."""
    port = free_port()
    s = sluice({"databases": {"later": f"host=127.0.0.1 port={port} dbname=mydb"},
                "pgbouncer": {"query_wait_timeout": 2, "server_login_retry": 1}})
    started = time.monotonic()
    with pytest.raises(psycopg.OperationalError):
        with s.connect(dbname="later") as conn:
            conn.execute("SELECT 1")
    elapsed = time.monotonic() - started
    assert elapsed <= 4, f"client error after {elapsed:.2f}s, query_wait_timeout=2"
    proxy = TcpProxy(cluster.primary_port, port=port)
    try:
        def works():
            try:
                with s.connect(dbname="later") as conn:
                    return conn.execute("SELECT 1").fetchone() == (1,)
            except psycopg.OperationalError:
                return False

        wait_until(works, 8, "a client of the database once its server is up", interval=0.3)
    finally:
        proxy.stop()


def test_server_login_failure_reported(sluice):
    """The pooler's password for the server is wrong: the client gets the
    server's reason, and later clients get an error quickly, not a hang."""
    users = {"plain_user": "not_the_password"}
    s = sluice({"pgbouncer": {"auth_type": "trust", "query_wait_timeout": 10,
                              "server_login_retry": 2}}, userlist=users)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        s.connect(user="plain_user", password="")
    started = time.monotonic()
    with pytest.raises(psycopg.OperationalError):
        with s.connect(user="plain_user", password="") as conn:
            conn.execute("SELECT 1")
    assert time.monotonic() - started < 4


# PgBouncer 1.24+/1.25 settings; Debian's PgBouncer here is 1.18.
pgbouncer_125 = pytest.mark.skipif(IS_PGBOUNCER, reason="PgBouncer 1.24+/1.25 setting (1.18 here)")


@pgbouncer_125
def test_user_query_timeout(sluice):
    """[users] query_timeout=1 for md5_user only."""
    s = sluice({"users": {"md5_user": "query_timeout=1"}})
    with s.connect() as conn:
        started = time.monotonic()
        with pytest.raises(psycopg.Error, match=r"query.timeout"):
            conn.execute("SELECT pg_sleep(4)")
        assert time.monotonic() - started < 3
    with s.connect(user="scram_user") as conn:
        assert conn.execute("SELECT pg_sleep(1.5), 1").fetchone() == ("", 1)


@pgbouncer_125
def test_user_idle_transaction_and_client_idle_timeout(sluice):
    s = sluice({"users": {"md5_user": "idle_transaction_timeout=1",
                          "scram_user": "client_idle_timeout=1"}})
    with s.connect() as conn:
        conn.execute("BEGIN")
        conn.execute("SELECT 1")
        time.sleep(2)
        with pytest.raises(psycopg.OperationalError, match=r"idle.transaction.timeout"):
            conn.execute("COMMIT")
    with s.connect(user="scram_user") as conn:
        conn.execute("SELECT 1")
        time.sleep(2)
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    # The general settings (0) for the other user.
    with s.connect(user="plain_user") as conn:
        conn.execute("BEGIN")
        time.sleep(1.5)
        conn.execute("COMMIT")


@pgbouncer_125
def test_transaction_timeout(sluice):
    """transaction_timeout=1.5: a transaction of short statements, never idle
    for 1 s, is ended after 1.5 s in all; statements outside a transaction
    go on; a user's entry overrides it."""
    s = sluice({"pgbouncer": {"transaction_timeout": 1.5},
                "users": {"scram_user": "transaction_timeout=0"}})
    with s.connect() as conn:
        started = time.monotonic()
        # The statement in flight is cancelled, and its request ends with
        # the timeout's error (25P04, PostgreSQL 17's transaction_timeout),
        # then the connection closes.
        with pytest.raises(psycopg.Error, match=r"transaction timeout") as e:
            conn.execute("BEGIN")
            for _ in range(10):
                conn.execute("SELECT pg_sleep(0.4)")
        assert e.value.sqlstate == "25P04", (e.value.sqlstate, str(e.value))
        elapsed = time.monotonic() - started
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
        assert 1.3 <= elapsed <= 3, f"transaction_timeout=1.5 fired after {elapsed:.2f}s"
    with s.connect() as conn:
        for _ in range(5):
            conn.execute("SELECT pg_sleep(0.4)")
    with s.connect(user="scram_user") as conn:
        with conn.transaction():
            for _ in range(5):
                conn.execute("SELECT pg_sleep(0.4)")


def queued_query(s, waiter, notices, hold):
    """waiter's query waits `hold` seconds for the pool's only server, which
    another client holds in a transaction; its notices go to notices."""
    waiter.add_notice_handler(lambda d: notices.append(d.message_primary))
    with s.connect() as holder:
        holder.execute("BEGIN")
        holder.execute("SELECT 1")
        release = threading.Timer(hold, lambda: holder.execute("COMMIT"))
        release.start()
        try:
            assert waiter.execute("SELECT 5").fetchone() == (5,)
        finally:
            release.join()


@pgbouncer_125
def test_query_wait_notify(sluice):
    """A client queued longer than query_wait_notify gets PgBouncer's NOTICE,
    once, and then its answer."""
    s = sluice({"pgbouncer": {"default_pool_size": 1, "reserve_pool_size": 0,
                              "query_wait_notify": 1}})
    notices = []
    with s.connect() as waiter:
        queued_query(s, waiter, notices, 2.5)
        assert notices == ["No server connection available in postgres backend, "
                           "client being queued"]
        # A short wait: no notice.
        assert waiter.execute("SELECT 6").fetchone() == (6,)
        assert len(notices) == 1


@pgbouncer_125
def test_query_wait_notify_off(sluice):
    s = sluice({"pgbouncer": {"default_pool_size": 1, "reserve_pool_size": 0,
                              "query_wait_notify": 0}})
    notices = []
    with s.connect() as waiter:
        queued_query(s, waiter, notices, 1.5)
    assert notices == []


@pgbouncer_125
def test_database_server_lifetime(sluice):
    """server_lifetime=1 in one database's entry: its idle server is replaced
    after a second; the other database keeps the general 3600 s."""
    s = sluice({"databases": {"short": "host=127.0.0.1 port={primary_port} dbname=mydb "
                              "server_lifetime=1"}})
    with s.connect(dbname="short") as short, s.connect() as long_lived:
        pid = "SELECT pg_backend_pid()"
        first_short = short.execute(pid).fetchone()[0]
        first_long = long_lived.execute(pid).fetchone()[0]
        time.sleep(2)
        assert short.execute(pid).fetchone()[0] != first_short
        assert long_lived.execute(pid).fetchone()[0] == first_long


@pytest.mark.skipif(IS_PGBOUNCER, reason="sluice's answer to a timed-out write")
def test_query_timeout_tells_a_writes_outcome(sluice, cluster, pool_user, primary_conn):
    """query_timeout on a statement that may commit (issue 17): the client
    is told what happened, never 57014 for a write that committed. The
    server's answer to the cancel decides: cancelled, 57014 "query timeout"
    and no row; done after all (its answer was slow), the client gets that
    answer, then the timeout; no answer at all (its server's link lost the
    answer), 08007 transaction_resolution_unknown, here with the row in."""
    from chaos_lib import FaultProxy
    primary_conn.execute("DROP TABLE IF EXISTS qt_write")
    primary_conn.execute("CREATE TABLE qt_write (x int)")
    primary_conn.execute("GRANT ALL ON qt_write TO PUBLIC")
    proxy = FaultProxy(cluster.primary_port)

    def rows(x):
        return primary_conn.execute("SELECT count(*) FROM qt_write WHERE x = %s",
                                    (x,)).fetchone()[0]
    try:
        s = sluice({"databases": {"mydb": f"host=127.0.0.1 port={proxy.port} dbname=mydb"},
                    "pgbouncer": {"query_timeout": 1}})
        # Cancelled: nothing committed, the timeout said.
        with s.connect(user=pool_user) as conn:
            with pytest.raises(psycopg.errors.QueryCanceled, match="query timeout") as e:
                conn.execute("INSERT INTO qt_write SELECT 1 FROM pg_sleep(4)")
        assert "query_timeout" in str(e.value)
        assert rows(1) == 0
        # Committed, its answer slow (0.8 s each way through the proxy): the
        # client has its INSERT's answer, then the timeout closes it.
        with s.connect(user=pool_user) as conn:
            conn.execute("SELECT 1")  # a server logged in, idle in the pool
            proxy.set_latency(0.8)
            conn.execute("INSERT INTO qt_write VALUES (2)")
            proxy.set_latency(0)
            # The timeout's FATAL came while it was idle (libpq does not
            # keep its text for the next query): closed.
            with pytest.raises(psycopg.OperationalError):
                conn.execute("SELECT 1")
        assert rows(2) == 1
        s.wait_for_log(r"C-0x[0-9a-f]+:.* closing because: query timeout \(query_timeout\) ")
        # Committed, its answer lost (and the cancel's effect with it): unknown.
        with s.connect(user=pool_user) as conn:
            proxy.trap(b"INSERT INTO qt_write VALUES (3)")
            started = time.monotonic()
            with pytest.raises(psycopg.errors.TransactionResolutionUnknown,
                               match="query timeout") as e:
                conn.execute("INSERT INTO qt_write VALUES (3)")
            assert time.monotonic() - started < 5
        assert e.value.sqlstate == "08007"
        assert rows(3) == 1
        proxy.drop_held()
    finally:
        proxy.stop()
        primary_conn.execute("DROP TABLE IF EXISTS qt_write")


def test_an_unfinished_query_holds_no_server_until_query_timeout(sluice, cluster):
    """A Query whose bytes stop coming waits in sluice for the rest and
    holds no server (PgBouncer streams it to one, which waits with it):
    another client of the one-server pool is served meanwhile.
    query_timeout, counted from its first bytes, closes it with 57014, and
    no cancel goes to the host (issue 17's garbage and huge-length clients
    took a server, and a backend, each)."""
    from chaos_lib import FaultProxy
    proxy = FaultProxy(cluster.primary_port)
    try:
        s = sluice({"databases": {"mydb": f"host=127.0.0.1 port={proxy.port} dbname=mydb"},
                    "pgbouncer": {"query_timeout": 2, "default_pool_size": 1}})
        with RawConn(s.port) as conn, RawConn(s.port) as other:
            conn.login()
            started = time.monotonic()
            conn.send(b"Q" + struct.pack("!i", 4 + 100) + b"SELECT 1")  # 92 bytes short
            other.login()
            assert other.query("SELECT 'served'") == [["served"]]
            served = time.monotonic() - started
            data = conn.read_until_closed(6)
            closed = time.monotonic() - started
        assert data is not None, "still open 6 s after query_timeout = 2"
        error = first_error(data)
        assert error and "query timeout" in error["M"], data
        assert error["C"] == ("08P01" if IS_PGBOUNCER else "57014")  # PgBouncer 1.18's, ours
        if not IS_PGBOUNCER:
            assert served < 1.5, f"the other client waited {served:.1f} s for the server"
            assert 1.5 < closed < 3.5, f"closed {closed:.1f} s after its first bytes"
            # The server the pool opened at the first login, and nothing
            # else: no cancel, no server replaced.
            assert proxy.accepted == 1, f"{proxy.accepted} connections to the host"
    finally:
        proxy.stop()


def test_query_timeout_does_not_count_an_idle_client_whose_last_message_came_in_pieces(sluice):
    """A message whose bytes came in two pieces (here a CopyData after no
    COPY, which sluice drops without a server) starts no clock once it is
    all here: the client then idles past query_timeout and is still
    served."""
    s = sluice({"pgbouncer": {"query_timeout": 1}})
    with RawConn(s.port) as conn:
        conn.login()
        copy_data = message(b"d", b"x")
        conn.send(copy_data[:2])
        time.sleep(0.3)
        conn.send(copy_data[2:])
        time.sleep(2.0)  # query_timeout, and the janitor's round after it
        assert conn.query("SELECT 'still here'") == [["still here"]]


@pytest.mark.parametrize("batch", ["failed", "answered"])
def test_query_timeout_of_a_batch_waiting_for_its_sync_sends_no_cancel(sluice, cluster, batch):
    """An extended batch the server has answered so far (or skips after an
    error) and whose Sync never comes runs nothing: at query_timeout its
    client is told 57014 at once, without a cancel (it would stop nothing,
    and its missing answer made the outcome "unknown", 08007, two seconds
    later), and its server, rolled back, serves the next client."""
    from chaos_lib import FaultProxy
    proxy = FaultProxy(cluster.primary_port)
    try:
        s = sluice({"databases": {"mydb": f"host=127.0.0.1 port={proxy.port} dbname=mydb"},
                    "pgbouncer": {"query_timeout": 1}})
        with RawConn(s.port) as conn:
            conn.login()
            sql = b"SELEC 1" if batch == "failed" else b"SELECT 1"
            conn.send(message(b"P", b"\0" + sql + b"\0\0\0") + message(b"H"))
            assert conn.read_msg()[0] == (b"E" if batch == "failed" else b"1")
            start = time.monotonic()
            data = conn.read_until_closed(6)
            waited = time.monotonic() - start
        assert data is not None, "still open 6 s after query_timeout = 1"
        error = first_error(data)
        assert error and "query timeout" in error["M"], data
        assert error["C"] == ("08P01" if IS_PGBOUNCER else "57014")
        assert waited < 2.5, f"told after {waited:.1f} s"
        if not IS_PGBOUNCER:
            with RawConn(s.port) as conn:
                assert conn.login().query("SELECT 2") == [["2"]]
        assert proxy.accepted == 1, "a connection besides the server's: a cancel, a new server"
    finally:
        proxy.stop()


def test_query_timeout_of_a_client_that_does_not_read_sends_no_cancel(sluice, cluster):
    """A client that stops reading its rows leaves its server blocked
    sending them, where PostgreSQL acts on no cancel: at query_timeout the
    server is closed (which ends the backend) without one."""
    from chaos_lib import FaultProxy
    proxy = FaultProxy(cluster.primary_port)
    marker = "qt_non_reader"
    try:
        s = sluice({"databases": {"mydb": f"host=127.0.0.1 port={proxy.port} dbname=mydb"},
                    "pgbouncer": {"query_timeout": 1}})
        with RawConn(s.port) as conn:
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            conn.login()
            conn.send_query(f"SELECT repeat('x', 8000) /* {marker} */ "
                            "FROM generate_series(1, 1000000)")
            wait_until(lambda: sleeping_backends(cluster, marker) == 1, timeout=5)
            # Never read: the backend ends only once sluice closes its server.
            wait_until(lambda: sleeping_backends(cluster, marker) == 0, timeout=8)
        assert proxy.accepted == 1, "a connection besides the server's: a cancel"
    finally:
        proxy.stop()
