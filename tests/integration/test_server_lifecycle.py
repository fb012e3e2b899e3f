"""How many server connections a pool keeps, and for how long:
min_pool_size, server_idle_timeout, server_lifetime."""

import threading
import time

import psycopg
import pytest

from chaos_lib import FaultProxy
from sluice_fixture import IS_PGBOUNCER, wait_no_backends, wait_until
from test_admin import show

# PgBouncer 1.21 (pull request 947) keeps min_pool_size warm for a database
# with a forced user before any client; Debian's PgBouncer here is 1.18.
pgbouncer_121 = pytest.mark.skipif(IS_PGBOUNCER, reason="PgBouncer 1.21+ behaviour (1.18 here)")


def pid_of(conn):
    return conn.execute("SELECT pg_backend_pid()").fetchone()[0]


def test_min_pool_size_kept_warm(sluice, cluster, pool_user):
    s = sluice({"pgbouncer": {"default_pool_size": 5, "min_pool_size": 3}})
    wait_no_backends(cluster, pool_user)
    with s.connect(user=pool_user) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        # Filled in the background while the client sits idle.
        wait_until(lambda: cluster.backend_count(pool_user) >= 3, 5,
                   "min_pool_size=3 server connections")
        time.sleep(1.5)
        assert 3 <= cluster.backend_count(pool_user) <= 5
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_server_idle_timeout_down_to_min_pool_size(sluice, cluster, pool_user):
    s = sluice({"pgbouncer": {"default_pool_size": 6, "min_pool_size": 2,
                              "server_idle_timeout": 1}})
    wait_no_backends(cluster, pool_user)
    conns = [s.connect(user=pool_user) for _ in range(6)]
    try:
        for conn in conns:
            conn.execute("BEGIN")
        assert len({pid_of(conn) for conn in conns}) == 6
        for conn in conns:
            conn.execute("COMMIT")
        assert cluster.backend_count(pool_user) == 6
        wait_until(lambda: cluster.backend_count(pool_user) == 2, 6,
                   "idle servers closed down to min_pool_size=2")
        time.sleep(2)
        assert cluster.backend_count(pool_user) == 2, "went below min_pool_size"
        # The clients are still connected and served.
        for conn in conns:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        for conn in conns:
            conn.close()


def test_server_idle_timeout_closes_all_without_min(sluice, cluster, pool_user):
    s = sluice({"pgbouncer": {"server_idle_timeout": 1}})
    wait_no_backends(cluster, pool_user)
    with s.connect(user=pool_user) as conn:
        conn.execute("SELECT 1")
        assert cluster.backend_count(pool_user) == 1
        wait_until(lambda: cluster.backend_count(pool_user) == 0, 5,
                   "the idle server closed after server_idle_timeout=1")
        # An idle client is not disconnected by it and gets a new server.
        assert conn.execute("SELECT 2").fetchone() == (2,)


def test_server_lifetime_recycles_between_transactions(sluice):
    s = sluice({"pgbouncer": {"default_pool_size": 1, "server_lifetime": 1}})
    with s.connect() as conn:
        conn.execute("BEGIN")
        first = pid_of(conn)
        time.sleep(1.5)
        # Never inside a transaction.
        assert pid_of(conn) == first
        conn.execute("COMMIT")
        wait_until(lambda: pid_of(conn) != first, 3,
                   "a new backend after server_lifetime=1")
        second = pid_of(conn)
        # A young server is reused.
        assert pid_of(conn) == second


def test_server_lifetime_zero_uses_each_server_once(sluice, cluster, pool_user):
    """server_lifetime = 0: a server serves one client (a transaction here,
    a session in session pooling) and is closed when released, never reused
    (PgBouncer's documented meaning; not "no limit")."""
    s = sluice({"pgbouncer": {"default_pool_size": 2, "server_lifetime": 0}})
    wait_no_backends(cluster, pool_user)
    with s.connect(user=pool_user) as conn:
        pids = [pid_of(conn) for _ in range(4)]
        assert len(set(pids)) == 4, f"a server was reused: {pids}"
        conn.execute("BEGIN")
        # Inside a transaction the server stays.
        assert pid_of(conn) == pid_of(conn)
        conn.execute("COMMIT")
        # Released servers are closed, not kept idle.
        wait_until(lambda: cluster.backend_count(pool_user) == 0, 5,
                   "released servers closed")


def test_server_lifetime_zero_session_pooling(sluice, cluster, pool_user):
    s = sluice({"pgbouncer": {"pool_mode": "session", "default_pool_size": 1,
                              "server_lifetime": 0}})
    wait_no_backends(cluster, pool_user)
    with s.connect(user=pool_user) as conn:
        first = pid_of(conn)
        assert pid_of(conn) == first, "a session keeps its server"
    with s.connect(user=pool_user) as conn:
        assert pid_of(conn) != first, "the next session got the used server"


@pgbouncer_121
def test_min_pool_size_forced_user_warm_before_any_client(sluice, cluster, pool_user):
    """A database with a forced user has its min_pool_size opened at start,
    before any client connects (PgBouncer does the same)."""
    wait_no_backends(cluster, pool_user)
    s = sluice({"databases": {"forced": "host=127.0.0.1 port={primary_port} dbname=mydb "
                              f"user={pool_user}"},
                "pgbouncer": {"default_pool_size": 5, "min_pool_size": 2}})
    wait_until(lambda: cluster.backend_count(pool_user) == 2, 5,
               "min_pool_size=2 servers of the forced user, with no client")
    with s.connect(dbname="forced") as conn:
        assert conn.execute("SELECT current_user").fetchone() == (pool_user,)


def test_server_check_query_not_on_new_connections(sluice, cluster, pool_user, primary_conn):
    """server_check_query runs on a server idle longer than server_check_delay,
    not on a brand-new one used at once: its login has just proved it
    (PgBouncer's rule, which this test holds it to as well)."""
    primary_conn.execute("DROP SEQUENCE IF EXISTS check_calls")
    primary_conn.execute("CREATE SEQUENCE check_calls")
    primary_conn.execute("GRANT USAGE, UPDATE ON SEQUENCE check_calls TO PUBLIC")

    def checks():
        last, called = primary_conn.execute(
            "SELECT last_value, is_called FROM check_calls").fetchone()
        return last if called else 0

    wait_no_backends(cluster, pool_user)
    s = sluice({"pgbouncer": {"pool_mode": "transaction", "default_pool_size": 2,
                              "server_check_query": "SELECT nextval('check_calls')",
                              "server_check_delay": 1}})
    with s.connect(user=pool_user) as a:
        first = pid_of(a)  # a brand-new server, used at once
        assert checks() == 0, "server_check_query ran on a brand-new connection"
        assert pid_of(a) == first
        assert checks() == 0, "server_check_query ran within server_check_delay"
        time.sleep(1.5)
        assert pid_of(a) == first  # the same server, reused after server_check_delay
        assert checks() >= 1, "server_check_query did not run on a reused connection"


def test_a_pool_logs_in_one_server_at_a_time(sluice, cluster, pool_user):
    """Clients that need more servers than a pool has get them opened one at
    a time, as PgBouncer does: a burst of clients does not start a burst of
    PostgreSQL backends (each a fork and a login that take a core from
    everyone on the box). Each login that ends serves a waiting client and
    starts the next. Logins are slowed by a proxy (50 ms a hop) so that
    SHOW POOLS can see them."""
    wait_no_backends(cluster, pool_user)
    proxy = FaultProxy(cluster.primary_port)
    try:
        s = sluice({"databases": {"mydb": f"host=127.0.0.1 port={proxy.port} dbname=mydb"},
                    "pgbouncer": {"default_pool_size": 5}})
        with s.connect(user=pool_user) as conn:
            conn.execute("SELECT 1")  # the pool's first server, now idle
        proxy.set_latency(0.05)
        logging_in, stop = [], threading.Event()

        def sample():
            with psycopg.connect(s.dsn(user="sluice", dbname="pgbouncer"),
                                 autocommit=True) as console:
                while not stop.is_set():
                    logging_in.extend(r["sv_login"] for r in show(console, "POOLS")
                                      if r["user"] == pool_user)
                    time.sleep(0.01)

        def sleeper():
            with s.connect(user=pool_user) as conn:
                return conn.execute("SELECT 'slept' FROM pg_sleep(1)").fetchone()[0]

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            threads, answers = [], []
            for _ in range(5):
                t = threading.Thread(target=lambda: answers.append(sleeper()))
                t.start()
                threads.append(t)
            for t in threads:
                t.join(30)
        finally:
            stop.set()
            sampler.join(10)
        assert answers == ["slept"] * 5
        assert max(logging_in) == 1, logging_in  # opened, but never two at once
        assert cluster.backend_count(pool_user) >= 3  # the pool did grow
    finally:
        proxy.stop()
