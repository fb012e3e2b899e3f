"""SIGHUP: a changed config or auth_file takes effect without dropping the
clients connected meanwhile; a broken one is refused and the old one kept."""

import threading
import time

import psycopg
import pytest

from sluice_fixture import IS_PGBOUNCER, TcpProxy, default_userlist, wait_until


def pid_of(conn):
    return conn.execute("SELECT pg_backend_pid()").fetchone()[0]


def can_connect(s, **kwargs):
    try:
        with s.connect(**kwargs) as conn:
            return conn.execute("SELECT 1").fetchone() == (1,)
    except psycopg.OperationalError:
        return False


def test_reload_new_database_and_pool_size(sluice):
    config = {"pgbouncer": {"default_pool_size": 1, "reserve_pool_size": 0}}
    s = sluice(config)
    with s.connect() as kept, s.connect() as in_xact:
        assert kept.execute("SELECT 1").fetchone() == (1,)
        in_xact.execute("BEGIN")
        in_xact.execute("SELECT 1")
        assert not can_connect(s, dbname="added")

        # Pool size 1: a second transaction waits while in_xact holds the server.
        blocked = threading.Thread(target=lambda: kept.execute("SELECT 1"))
        blocked.start()
        blocked.join(0.5)
        assert blocked.is_alive()
        in_xact.execute("COMMIT")
        blocked.join(5)

        in_xact.execute("BEGIN")
        in_xact.execute("SELECT 1")
        s.write_config({"databases": {"added": "host=127.0.0.1 port={primary_port} dbname=mydb"},
                        "pgbouncer": {"default_pool_size": 3, "reserve_pool_size": 0}})
        s.reload()
        wait_until(lambda: can_connect(s, dbname="added"), 5, "the new database reachable")
        # The open transaction and the idle client lived through the reload.
        assert in_xact.execute("SELECT 2").fetchone() == (2,)
        in_xact.execute("COMMIT")
        assert kept.execute("SELECT 3").fetchone() == (3,)

    # The new pool size: three transactions at once get three servers.
    conns = [s.connect() for _ in range(3)]
    try:
        for conn in conns:
            conn.execute("BEGIN")
        done = []
        threads = [threading.Thread(target=lambda c=c: done.append(pid_of(c))) for c in conns]
        for t in threads:
            t.start()
        for t in threads:
            t.join(5)
        assert len(set(done)) == 3, f"pids {done}: default_pool_size=3 not in force"
    finally:
        for conn in conns:
            conn.close()


BROKEN = """[databases]
mydb = host=127.0.0.1 port=1 dbname=mydb

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = md5
auth_file = {auth_file}
pool_mode = transaction
this line is not a setting
"""


@pytest.mark.skipif(IS_PGBOUNCER, reason="PgBouncer 1.18 applies a broken file up to the error")
def test_reload_broken_config_keeps_old(sluice):
    s = sluice({"pgbouncer": {"query_wait_timeout": 3}})
    with s.connect() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        mark = s.log_mark()
        s.write_config(BROKEN)
        s.reload()
        # The reason names the file and line.
        s.wait_for_log(r"reload failed.*sluice\.ini:11", since=mark)
        time.sleep(0.3)
        assert s.running()
        # mydb still goes to the primary, not to port 1.
        assert conn.execute("SELECT 2").fetchone() == (2,)
        assert can_connect(s)
        # A later good file is taken again.
        s.write_config({"databases": {"second": "host=127.0.0.1 port={primary_port} dbname=mydb"},
                        "pgbouncer": {"query_wait_timeout": 3}})
        s.reload()
        wait_until(lambda: can_connect(s, dbname="second"), 5, "the fixed config loaded")
        assert conn.execute("SELECT 3").fetchone() == (3,)


def test_reload_auth_file(sluice):
    users = default_userlist()
    del users["plain_user"]
    s = sluice(userlist=users)
    with s.connect() as kept:
        with pytest.raises(psycopg.OperationalError):
            s.connect(user="plain_user")
        s.write_config(None, userlist=default_userlist())
        s.reload()
        wait_until(lambda: can_connect(s, user="plain_user"), 5, "plain_user can log in")
        assert kept.execute("SELECT 1").fetchone() == (1,)
        # Removing a user stops new logins of that user.
        s.write_config(None, userlist=users)
        s.reload()
        wait_until(lambda: not can_connect(s, user="plain_user"), 5, "plain_user refused")
        assert kept.execute("SELECT 2").fetchone() == (2,)


def test_reload_pool_mode(sluice):
    """pool_mode is reloadable: after switching to session mode, a new client
    keeps one server for its whole session."""
    s = sluice({"pgbouncer": {"default_pool_size": 2}})
    s.write_config({"pgbouncer": {"pool_mode": "session", "default_pool_size": 2}})
    s.reload()
    time.sleep(0.5)
    with s.connect() as a, s.connect() as b:
        first = pid_of(a)
        for _ in range(3):
            assert pid_of(b) != first
            assert pid_of(a) == first


def test_reload_moves_database_to_new_address(sluice, cluster):
    """A database's host/port changed on reload: the next transactions of an
    already connected client go to the new address, and the server
    connections to the old one are closed once idle."""
    old, new = TcpProxy(cluster.primary_port), TcpProxy(cluster.primary_port)
    try:
        s = sluice({"databases": {"movable": f"host=127.0.0.1 port={old.port} dbname=mydb"}})
        with s.connect(dbname="movable") as conn:
            conn.execute("SELECT 1")
            assert (old.accepted, new.accepted) == (1, 0)
            s.write_config({"databases": {
                "movable": f"host=127.0.0.1 port={new.port} dbname=mydb"}})
            s.reload()

            def moved():
                conn.execute("SELECT 1")
                return new.accepted >= 1

            wait_until(moved, 5, "traffic to the new address", interval=0.2)
            wait_until(lambda: old.open == 0, 5, "the old server connection closed")
            assert conn.execute("SELECT 2").fetchone() == (2,)
    finally:
        old.stop()
        new.stop()


@pytest.mark.timeout(60)
def test_reloads_under_load_drop_nobody(sluice):
    """Clients looping over transactions see no error at all while the
    pooler reloads (unchanged file, then a changed pool size) several times."""
    s = sluice({"pgbouncer": {"default_pool_size": 4}})
    stop = threading.Event()
    errors, counts = [], [0] * 10

    def client(n):
        try:
            with s.connect() as conn:
                while not stop.is_set():
                    with conn.transaction():
                        conn.execute("SELECT %s::int, pg_sleep(0.002)", (n,))
                    counts[n] += 1
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(10)]
    for t in threads:
        t.start()
    try:
        for i in range(6):
            time.sleep(0.3)
            if i == 3:
                s.write_config({"pgbouncer": {"default_pool_size": 6}})
            s.reload()
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert not errors, errors[:3]
    assert all(counts), counts
    assert s.running()
