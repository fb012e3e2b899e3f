"""Connection limits: max_client_conn, max_db_connections,
max_user_connections, query_wait_timeout and the reserve pool."""

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from sluice_fixture import (IS_PGBOUNCER, BackendMonitor, RawConn, send_cancel,
                            startup_packet, wait_no_backends, wait_until)


def pid_of(conn):
    return conn.execute("SELECT pg_backend_pid()").fetchone()[0]


def test_max_client_conn(sluice):
    s = sluice({"pgbouncer": {"max_client_conn": 3}})
    conns = [s.connect() for _ in range(3)]
    try:
        with pytest.raises(psycopg.OperationalError,
                           match=r"no more connections allowed \(max_client_conn\)"):
            s.connect()
        for conn in conns:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        conns.pop().close()

        def fourth_client():
            try:
                with s.connect() as conn:
                    return conn.execute("SELECT 2").fetchone() == (2,)
            except psycopg.OperationalError:
                return False

        # Once a slot is free, a new client gets in.
        wait_until(fourth_client, 5, "a client after one disconnected")
    finally:
        for conn in conns:
            conn.close()


def concurrent_sleepers(s, logins, seconds=0.5):
    """Each (user, dbname) in logins runs SELECT pg_sleep(seconds) at the same
    time; returns the wall time."""
    def run(login):
        user, dbname = login
        with s.connect(user=user, dbname=dbname) as conn:
            conn.execute("SELECT pg_sleep(%s)", (seconds,))

    started = time.monotonic()
    with ThreadPoolExecutor(len(logins)) as pool:
        list(pool.map(run, logins, timeout=60))
    return time.monotonic() - started


def test_max_db_connections(sluice, cluster, pool_user, pool_user2):
    """Two users on one database with max_db_connections=2: at most two server
    connections to it in all, yet every client is served."""
    s = sluice({"databases": {"limited": "host=127.0.0.1 port={primary_port} dbname=mydb "
                              "max_db_connections=2"},
                "pgbouncer": {"default_pool_size": 10}})
    wait_no_backends(cluster, pool_user)
    wait_no_backends(cluster, pool_user2)
    logins = [(pool_user, "limited"), (pool_user2, "limited")] * 3
    with BackendMonitor(cluster, [pool_user, pool_user2]) as monitor:
        elapsed = concurrent_sleepers(s, logins)
    assert 1 <= monitor.peak <= 2
    # 6 sleeps of 0.5 s on 2 connections take at least 1.5 s.
    assert elapsed >= 1.4, f"6 sleepers done in {elapsed:.2f}s: more than 2 servers used"


def test_max_db_connections_evicts_other_users_idle(sluice, cluster, pool_user, pool_user2):
    """max_db_connections reached by another user's idle server: that server
    is closed to make room (PgBouncer's eviction), the client is served."""
    s = sluice({"databases": {"limited": "host=127.0.0.1 port={primary_port} dbname=mydb "
                              "max_db_connections=1"},
                "pgbouncer": {"default_pool_size": 5, "query_wait_timeout": 6}})
    wait_no_backends(cluster, pool_user)
    wait_no_backends(cluster, pool_user2)
    with s.connect(user=pool_user, dbname="limited") as a:
        a.execute("SELECT 1")  # its server stays idle in pool_user's pool
        started = time.monotonic()
        with s.connect(user=pool_user2, dbname="limited") as b:
            assert b.execute("SELECT current_user").fetchone() == (pool_user2,)
        assert time.monotonic() - started < 3
        # And back: pool_user's client gets a server again the same way.
        assert a.execute("SELECT current_user").fetchone() == (pool_user,)


def test_max_db_connections_global(sluice, cluster, pool_user):
    s = sluice({"pgbouncer": {"default_pool_size": 10, "max_db_connections": 2}})
    wait_no_backends(cluster, pool_user)
    with BackendMonitor(cluster, pool_user) as monitor:
        elapsed = concurrent_sleepers(s, [(pool_user, "mydb")] * 6)
    assert 1 <= monitor.peak <= 2
    assert elapsed >= 1.4, f"6 sleepers done in {elapsed:.2f}s: more than 2 servers used"


def test_max_user_connections(sluice, cluster, pool_user):
    """One user on two databases (two pools) with max_user_connections=2."""
    s = sluice({"databases": {"other": "host=127.0.0.1 port={primary_port} dbname=mydb"},
                "pgbouncer": {"default_pool_size": 10, "max_user_connections": 2}})
    wait_no_backends(cluster, pool_user)
    with BackendMonitor(cluster, pool_user) as monitor:
        elapsed = concurrent_sleepers(s, [(pool_user, "mydb"), (pool_user, "other")] * 3)
    assert 1 <= monitor.peak <= 2
    assert elapsed >= 1.4, f"6 sleepers done in {elapsed:.2f}s: more than 2 servers used"


def test_query_wait_timeout(sluice):
    s = sluice({"pgbouncer": {"default_pool_size": 1, "reserve_pool_size": 0,
                              "query_wait_timeout": 1}})
    with s.connect() as holder, s.connect() as waiter:
        holder.execute("BEGIN")
        holder.execute("SELECT 1")
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError, match="query_wait_timeout"):
            waiter.execute("SELECT 1")
        elapsed = time.monotonic() - started
        assert 0.8 <= elapsed <= 3, f"query_wait_timeout=1 fired after {elapsed:.2f}s"
        # The holder is unaffected and the pool serves again after its COMMIT.
        holder.execute("COMMIT")
        assert holder.execute("SELECT 1").fetchone() == (1,)
    with s.connect() as conn:
        assert conn.execute("SELECT 2").fetchone() == (2,)


def assert_reserve_after(s, low, high):
    """While one client holds the pool's only server, a second gets another
    backend (the reserve) after between low and high seconds."""
    with s.connect() as holder, s.connect() as waiter:
        holder.execute("BEGIN")
        held = pid_of(holder)
        started = time.monotonic()
        with waiter.transaction():
            got = pid_of(waiter)
        elapsed = time.monotonic() - started
        assert got != held
        assert low <= elapsed <= high, f"reserve used after {elapsed:.2f}s"
        holder.execute("COMMIT")


def test_reserve_pool_after_timeout(sluice):
    """Pool 1 + reserve 1: while the only server is held, a second transaction
    gets a second backend, but only after reserve_pool_timeout."""
    s = sluice({"pgbouncer": {"default_pool_size": 1, "reserve_pool_size": 1,
                              "reserve_pool_timeout": 1.5}})
    assert_reserve_after(s, 1.2, 3.5)


def test_no_reserve_without_wait(sluice, cluster, pool_user):
    """The reserve is not opened while clients get served in time."""
    s = sluice({"pgbouncer": {"default_pool_size": 1, "reserve_pool_size": 3,
                              "reserve_pool_timeout": 3}})
    wait_no_backends(cluster, pool_user)
    with BackendMonitor(cluster, pool_user) as monitor:
        concurrent_sleepers(s, [(pool_user, "mydb")] * 4, seconds=0.2)
    assert monitor.peak == 1


def test_waiting_client_served_in_order(sluice):
    """Pool size 1: a client queued behind a long transaction is served as soon
    as it ends (no polling delay)."""
    s = sluice({"pgbouncer": {"default_pool_size": 1, "reserve_pool_size": 0}})
    with s.connect() as holder, s.connect() as waiter:
        holder.execute("BEGIN")
        holder.execute("SELECT 1")
        done = {}

        def wait():
            waiter.execute("SELECT 1")
            done["at"] = time.monotonic()

        t = threading.Thread(target=wait)
        t.start()
        time.sleep(0.5)
        committed = time.monotonic()
        holder.execute("COMMIT")
        t.join(5)
        assert "at" in done
        assert done["at"] - committed < 0.5


def test_client_count_not_leaked(sluice):
    """Failed logins, bad packets, cancel requests and abrupt closes all give
    their max_client_conn slot back."""
    s = sluice({"pgbouncer": {"max_client_conn": 4}})
    for i in range(8):
        with pytest.raises(psycopg.OperationalError):
            s.connect(password="wrong")
        with pytest.raises(psycopg.OperationalError):
            s.connect(dbname="no_such_db")
        with RawConn(s.port) as raw:
            raw.send(b"\x00\x00\x00\x08garbage!")
            raw.read_until_closed(3)
        send_cancel(s.port, 12345, 67890)
        raw = RawConn(s.port).login()
        raw.query("BEGIN")
        raw.abort()
        with RawConn(s.port) as raw:
            raw.send(startup_packet("md5_user")[:9])

    def four_at_once():
        conns = []
        try:
            for _ in range(4):
                conns.append(s.connect())
            return all(c.execute("SELECT 1").fetchone() == (1,) for c in conns)
        except psycopg.OperationalError:
            return False
        finally:
            for c in conns:
                c.close()
    # Closes are asynchronous; the slots must come back quickly.
    wait_until(four_at_once, 5, "4 clients at once with max_client_conn=4", interval=0.3)


def test_long_server_cleartext_password(sluice, cluster):
    """A server that asks for a cleartext password gets one of 2,047 bytes
    (PgBouncer's limit: a 2,048-byte buffer with its terminating NUL); a
    password over the pooler's limit gives the waiting client an error at
    once instead of endless retries and a hang (PgBouncer cuts it to 2,047
    bytes, and the server refuses it)."""
    long_pw = "p" * 2047
    with cluster.primary_conn() as conn:
        conn.execute(f"ALTER ROLE plain_user PASSWORD '{long_pw}'")
    try:
        dsn = "host=127.0.0.1 port={primary_port} dbname=mydb user=plain_user password="
        s = sluice({"databases": {"longpw": dsn + long_pw, "toolong": dsn + "q" * 5000},
                    "pgbouncer": {"auth_type": "trust", "query_wait_timeout": 30,
                                  "server_login_retry": 1}})
        with s.connect(dbname="longpw", user="trust_user", password="") as conn:
            assert conn.execute("SELECT current_user").fetchone() == ("plain_user",)
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError, match="password"):
            with s.connect(dbname="toolong", user="trust_user", password="") as conn:
                conn.execute("SELECT 1")
        assert time.monotonic() - started < 5
    finally:
        with cluster.primary_conn() as conn:
            conn.execute("ALTER ROLE plain_user PASSWORD 'plain_user_pw'")


# PgBouncer 1.24+ (max_*_client_connections, per-user pool settings): Debian's
# PgBouncer here is 1.18, which does not know these keys.
pgbouncer_124 = pytest.mark.skipif(IS_PGBOUNCER, reason="PgBouncer 1.24+ setting (1.18 here)")

USER_FULL = r"client connections exceeded \(max_user_client_connections\)"
DB_FULL = r"client connections exceeded \(max_db_client_connections\)"


def refused(s, match, **kwargs):
    with pytest.raises(psycopg.OperationalError, match=match):
        s.connect(**kwargs)


def connect_after_close(s, match, **kwargs):
    """A client just closed gives its slot back once sluice has read the
    close, which it does on its own time (as PgBouncer does; with several
    workers, on another thread): until then a new client may be refused."""
    def attempt():
        try:
            return s.connect(**kwargs)
        except psycopg.OperationalError as e:
            assert re.search(match, str(e)), e
            return None
    return wait_until(attempt, 5, "the closed client's slot given back", interval=0.02)


@pgbouncer_124
def test_max_user_client_connections(sluice):
    """At most two clients of one user, any database; other users unaffected;
    a slot freed is taken again."""
    s = sluice({"databases": {"other": "host=127.0.0.1 port={primary_port} dbname=mydb"},
                "pgbouncer": {"max_user_client_connections": 2}})
    a = s.connect()
    b = s.connect(dbname="other")
    try:
        refused(s, USER_FULL)
        refused(s, USER_FULL, dbname="other")
        with s.connect(user="scram_user") as c, s.connect(user="scram_user") as d:
            assert c.execute("SELECT 1").fetchone() == d.execute("SELECT 1").fetchone()
        assert a.execute("SELECT 1").fetchone() == (1,)
        b.close()
        with connect_after_close(s, USER_FULL) as c:
            assert c.execute("SELECT 2").fetchone() == (2,)
    finally:
        a.close()
        b.close()


@pgbouncer_124
def test_max_user_client_connections_per_user(sluice):
    """[users] md5_user = max_user_client_connections=1 over the general 0."""
    s = sluice({"users": {"md5_user": "max_user_client_connections=1"}})
    with s.connect() as a:
        refused(s, USER_FULL)
        with s.connect(user="scram_user") as b, s.connect(user="scram_user") as c:
            b.execute("SELECT 1")
            c.execute("SELECT 1")
        a.execute("SELECT 1")
    with connect_after_close(s, USER_FULL) as a:
        assert a.execute("SELECT 3").fetchone() == (3,)


@pgbouncer_124
def test_max_db_client_connections(sluice):
    """Globally two clients per database, all users together; a database
    entry's own max_db_client_connections=1 wins for it."""
    s = sluice({"databases": {"one": "host=127.0.0.1 port={primary_port} dbname=mydb "
                              "max_db_client_connections=1"},
                "pgbouncer": {"max_db_client_connections": 2}})
    with s.connect() as a, s.connect(user="scram_user") as b:
        refused(s, DB_FULL, user="plain_user")
        with s.connect(dbname="one") as c:
            refused(s, DB_FULL, dbname="one", user="scram_user")
            c.execute("SELECT 1")
        a.execute("SELECT 1")
        b.close()
        with connect_after_close(s, DB_FULL, user="plain_user") as d:
            assert d.execute("SELECT 4").fetchone() == (4,)


@pgbouncer_124
def test_user_pool_size(sluice, cluster, pool_user):
    """[users] pool_size=1 over default_pool_size=10: one server for the user."""
    s = sluice({"pgbouncer": {"default_pool_size": 10},
                "users": {pool_user: "pool_size=1"}})
    wait_no_backends(cluster, pool_user)
    with BackendMonitor(cluster, pool_user) as monitor:
        elapsed = concurrent_sleepers(s, [(pool_user, "mydb")] * 3)
    assert monitor.peak == 1
    assert elapsed >= 1.4, f"3 sleepers done in {elapsed:.2f}s: more than 1 server used"


@pgbouncer_124
def test_user_reserve_pool_size(sluice):
    """[users] reserve_pool_size=1 with the general reserve 0: a second server
    after reserve_pool_timeout."""
    s = sluice({"pgbouncer": {"default_pool_size": 1, "reserve_pool_size": 0,
                              "reserve_pool_timeout": 1},
                "users": {"md5_user": "reserve_pool_size=1"}})
    assert_reserve_after(s, 0.8, 3)


@pgbouncer_124
def test_user_and_database_query_wait_timeout(sluice):
    """query_wait_timeout of the user's entry, else of the database's, over
    the general 30 s."""
    s = sluice({"databases": {"dbwait": "host=127.0.0.1 port={primary_port} dbname=mydb "
                              "query_wait_timeout=1 pool_size=1"},
                "pgbouncer": {"default_pool_size": 1, "reserve_pool_size": 0,
                              "query_wait_timeout": 30},
                "users": {"md5_user": "query_wait_timeout=1"}})
    for user, dbname in (("md5_user", "mydb"), ("scram_user", "dbwait")):
        with s.connect(user=user, dbname=dbname) as holder, \
                s.connect(user=user, dbname=dbname) as waiter:
            holder.execute("BEGIN")
            holder.execute("SELECT 1")
            started = time.monotonic()
            with pytest.raises(psycopg.OperationalError, match="query_wait_timeout"):
                waiter.execute("SELECT 1")
            elapsed = time.monotonic() - started
            assert 0.8 <= elapsed <= 3, f"{user}@{dbname}: fired after {elapsed:.2f}s"
            holder.execute("COMMIT")
