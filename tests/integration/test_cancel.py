"""Cancel requests: they reach the query of the client that sent them, and
nothing else."""

import random
import threading
import time

import psycopg
import pytest

from sluice_fixture import IS_PGBOUNCER, RawConn, send_cancel, wait_until


def running(cluster, marker):
    """Whether a query containing marker is running on the primary."""
    with cluster.primary_conn() as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                            "AND query LIKE %s AND pid <> pg_backend_pid()",
                            (f"%{marker}%",)).fetchone()[0] > 0


class Runner(threading.Thread):
    """Runs one query on conn in a thread; .result, .error, .finished_at."""

    def __init__(self, conn, sql):
        super().__init__(daemon=True)
        self.conn, self.sql = conn, sql
        self.result = self.error = self.finished_at = None
        self.start()

    def run(self):
        try:
            self.result = self.conn.execute(self.sql).fetchone()
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = e
        self.finished_at = time.monotonic()


def cancelled(conn, cluster, marker, timeout=3):
    """Runs a 30 s sleep tagged marker on conn, cancels it once the primary
    runs it; asserts it ended with QueryCanceled within timeout."""
    long = Runner(conn, f"SELECT pg_sleep(30) /* {marker} */")
    wait_until(lambda: running(cluster, marker), 5, "the query running")
    conn.cancel()
    long.join(timeout)
    assert isinstance(long.error, psycopg.errors.QueryCanceled), repr(long.error)


def test_cancel_running_query_only(sluice, cluster):
    s = sluice({"pgbouncer": {"default_pool_size": 2, "reserve_pool_size": 0}})
    with s.connect() as a, s.connect() as b:
        long = Runner(a, "SELECT pg_sleep(30) /* cancel-me */")
        short = Runner(b, "SELECT pg_sleep(2), 'done' /* keep-me */")
        wait_until(lambda: running(cluster, "cancel-me") and running(cluster, "keep-me"), 5,
                   "both queries running")
        cancelled_at = time.monotonic()
        a.cancel()
        long.join(5)
        assert not long.is_alive(), "the cancelled query is still running"
        assert isinstance(long.error, psycopg.errors.QueryCanceled), repr(long.error)
        assert long.finished_at - cancelled_at < 2
        short.join(5)
        assert short.error is None, repr(short.error)
        assert short.result == ("", "done")
        assert short.finished_at - cancelled_at > 1, "the other client's query ended early"
        # Both connections, and new ones, are served afterwards.
        assert a.execute("SELECT 1").fetchone() == (1,)
        assert b.execute("SELECT 2").fetchone() == (2,)
    with s.connect() as c:
        assert c.execute("SELECT 3").fetchone() == (3,)


def test_cancel_from_idle_client_hits_nobody(sluice, cluster):
    """Pool size 1: an idle client's cancel must not cancel the query another
    client now runs on the server it used before."""
    s = sluice({"pgbouncer": {"default_pool_size": 1, "reserve_pool_size": 0}})
    with s.connect() as idle, s.connect() as busy:
        idle.execute("SELECT 1")
        worker = Runner(busy, "SELECT pg_sleep(1.5), 'done' /* not-mine */")
        wait_until(lambda: running(cluster, "not-mine"), 5, "the query running")
        idle.cancel()
        worker.join(5)
        assert worker.error is None, repr(worker.error)
        assert worker.result == ("", "done")
        assert idle.execute("SELECT 1").fetchone() == (1,)


def test_cancel_with_wrong_key_does_nothing(sluice, cluster):
    s = sluice()
    with RawConn(s.port, timeout=10) as conn:
        conn.login()
        pid, secret = conn.backend_key
        conn.send_query("SELECT pg_sleep(1.5), 'done' /* wrong-key */")
        wait_until(lambda: running(cluster, "wrong-key"), 5, "the query running")
        send_cancel(s.port, pid, secret ^ 1)
        send_cancel(s.port, pid ^ 0x5A5A, secret)
        send_cancel(s.port, random.randint(1, 2**31 - 1), random.randint(-2**31, 2**31 - 1))
        rows, error, status = conn.read_result()
        assert error is None, error
        assert rows == [["", "done"]]
        # The right key does cancel.
        conn.send_query("SELECT pg_sleep(30) /* right-key */")
        wait_until(lambda: running(cluster, "right-key"), 5, "the query running")
        started = time.monotonic()
        send_cancel(s.port, pid, secret)
        rows, error, status = conn.read_result()
        assert error and error["C"] == "57014", error
        assert time.monotonic() - started < 2
        assert conn.query("SELECT 1") == [["1"]]


@pytest.mark.parametrize("pool_mode", ["session", "statement"])
def test_cancel_other_pool_modes(sluice, cluster, pool_mode):
    s = sluice({"pgbouncer": {"pool_mode": pool_mode}})
    with s.connect() as a:
        cancelled(a, cluster, f"cancel-{pool_mode}")
        assert a.execute("SELECT 1").fetchone() == (1,)


def test_cancel_many_at_once(sluice, cluster):
    """20 running queries cancelled at the same moment: each fails with
    QueryCanceled, none is missed, and all connections work afterwards."""
    s = sluice({"pgbouncer": {"default_pool_size": 20, "max_client_conn": 50}})
    conns = [s.connect() for _ in range(20)]
    try:
        runners = [Runner(c, f"SELECT pg_sleep(30) /* storm-{i} */") for i, c in enumerate(conns)]

        def all_running():
            with cluster.primary_conn() as conn:
                return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                                    "AND query LIKE '%storm-%' AND pid <> pg_backend_pid()"
                                    ).fetchone()[0] == 20

        wait_until(all_running, 10, "20 queries running")
        threads = [threading.Thread(target=c.cancel) for c in conns]
        for t in threads:
            t.start()
        for r in runners:
            r.join(5)
        errors = [r.error for r in runners]
        assert all(isinstance(e, psycopg.errors.QueryCanceled) for e in errors), errors
        for i, c in enumerate(conns):
            assert c.execute("SELECT %s::int", (i,)).fetchone() == (i,)
    finally:
        for c in conns:
            c.close()


# A cancel is asked on an idle server of the worker its target's client is
# on (the cancel's own connection lands on any worker; docs/design.md): the
# tests below count connections, so they run one worker ("workers": 1)
# whatever SLUICE_TEST_WORKERS says.


def two_idle_servers(a, b):
    """a and b each hold a server at once, then let go: the pool has two."""
    a.execute("BEGIN")
    a.execute("SELECT 1")
    b.execute("SELECT 1")
    a.execute("COMMIT")


@pytest.mark.skipif(IS_PGBOUNCER, reason="sluice's own way of cancelling")
@pytest.mark.parametrize("how", ["cancel", "query_timeout"])
def test_cancel_asks_an_idle_server_of_the_pool(sluice, cluster, how):
    """With an idle server of the same pool at hand, a cancel is
    `SELECT pg_cancel_backend(pid)` on it: no new connection reaches the
    host, so its postmaster forks nothing (issue 17's cancel storm: a fork
    per cancel took the CPU every other backend needed)."""
    from chaos_lib import FaultProxy
    proxy = FaultProxy(cluster.primary_port)
    try:
        timeout = {"query_timeout": 1} if how == "query_timeout" else {}
        s = sluice({"databases": {"mydb": f"host=127.0.0.1 port={proxy.port} dbname=mydb"},
                    "pgbouncer": {"default_pool_size": 2, "reserve_pool_size": 0,
                                  "workers": 1, **timeout}})
        with s.connect() as a, s.connect() as b:
            two_idle_servers(a, b)
            assert proxy.accepted == 2
            long = Runner(a, f"SELECT pg_sleep(30) /* ask-idle-{how} */")
            wait_until(lambda: running(cluster, f"ask-idle-{how}"), 5, "the query running")
            started = time.monotonic()
            if how == "cancel":
                a.cancel()
            long.join(5)
            assert not long.is_alive(), "the query was not cancelled"
            assert getattr(long.error, "sqlstate", None) == "57014", repr(long.error)
            assert time.monotonic() - started < 3
            assert not running(cluster, f"ask-idle-{how}")
            assert proxy.accepted == 2, "a connection besides the two servers: a CancelRequest"
            assert b.execute("SELECT 2").fetchone() == (2,)
            if how == "cancel":
                assert a.execute("SELECT 1").fetchone() == (1,)
        log = s.log_text()
        assert "through S-" in log and "sending cancel request" not in log, s.log_tail()
    finally:
        proxy.stop()


@pytest.mark.skipif(IS_PGBOUNCER, reason="sluice's own way of cancelling")
def test_a_cancel_storm_keeps_a_server_to_cancel_on(sluice, cluster):
    """A lone client's pool has no idle server; when its cancels come more
    than one a second, the pool opens one more, and from then on each
    cancel is asked on it: 10 cancels cost the host 2 connections, not 10."""
    from chaos_lib import FaultProxy
    proxy = FaultProxy(cluster.primary_port)
    try:
        s = sluice({"databases": {"mydb": f"host=127.0.0.1 port={proxy.port} dbname=mydb"},
                    "pgbouncer": {"workers": 1}})
        with RawConn(s.port, timeout=10) as conn:
            conn.login()
            pid, secret = conn.backend_key
            for i in range(10):
                conn.send_query(f"SELECT pg_sleep(30) /* storm-{i} */")
                wait_until(lambda: running(cluster, f"storm-{i}"), 5, "the query running")
                send_cancel(s.port, pid, secret)
                rows, error, status = conn.read_result()
                assert error and error["C"] == "57014", error
        # The client's server, the spare, and the CancelRequests sent
        # before the spare was logged in (two, three on a slow box).
        assert proxy.accepted <= 5, proxy.accepted
        assert s.log_text().count("through S-") >= 6, s.log_tail()
    finally:
        proxy.stop()


@pytest.mark.skipif(IS_PGBOUNCER, reason="sluice's own way of cancelling")
def test_cancel_without_pg_cancel_backend_goes_by_cancel_request(sluice, cluster):
    """Where the pool's user may not run pg_cancel_backend() (EXECUTE
    revoked), the cancel still lands, by a CancelRequest; the pool says so
    once and stops asking."""
    with cluster.primary_conn() as c:
        c.execute("REVOKE EXECUTE ON FUNCTION pg_cancel_backend(integer) FROM PUBLIC")
    try:
        s = sluice({"pgbouncer": {"default_pool_size": 2, "reserve_pool_size": 0,
                                  "workers": 1}})
        with s.connect() as a, s.connect() as b:
            two_idle_servers(a, b)
            for i in range(2):
                cancelled(a, cluster, f"revoked-{i}", timeout=5)
                assert b.execute("SELECT 2").fetchone() == (2,)
        log = s.log_text()
        assert log.count("pg_cancel_backend() failed") == 1, s.log_tail()
        assert log.count("sending cancel request") == 2, s.log_tail()
    finally:
        with cluster.primary_conn() as c:
            c.execute("GRANT EXECUTE ON FUNCTION pg_cancel_backend(integer) TO PUBLIC")
