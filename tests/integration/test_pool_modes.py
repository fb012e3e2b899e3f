"""Pool modes in detail: when a server goes back to the pool, and what the
next client finds on it."""

import threading
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from sluice_fixture import backend_pid


def pid_of(conn):
    return conn.execute("SELECT pg_backend_pid()").fetchone()[0]


def test_transaction_mode_server_returned_at_idle(sluice):
    """Pool size 1: two clients take turns on the one backend; while one is
    inside BEGIN, the other waits, and gets that backend at COMMIT."""
    s = sluice({"pgbouncer": {"default_pool_size": 1, "reserve_pool_size": 0}})
    with s.connect() as a, s.connect() as b:
        pid = pid_of(a)
        assert pid_of(b) == pid
        assert pid_of(a) == pid

        a.execute("BEGIN")
        assert pid_of(a) == pid
        result = {}
        waiter = threading.Thread(target=lambda: result.update(pid=pid_of(b)))
        waiter.start()
        waiter.join(1.0)
        assert waiter.is_alive(), "b got a server while a's transaction held the only one"
        assert pid_of(a) == pid
        a.execute("COMMIT")
        waiter.join(5)
        assert not waiter.is_alive(), "b still waiting after a's COMMIT"
        assert result["pid"] == pid


def test_transaction_mode_transaction_keeps_server(sluice):
    """Pool size 2: a client inside a transaction keeps its backend across
    statements while another client runs many statements on the other one."""
    s = sluice({"pgbouncer": {"default_pool_size": 2, "reserve_pool_size": 0}})
    with s.connect() as a, s.connect() as b:
        a.execute("BEGIN")
        a.execute("CREATE TEMP TABLE t (x int) ON COMMIT DROP")
        mine = pid_of(a)
        for i in range(10):
            assert pid_of(b) != mine
            a.execute("INSERT INTO t VALUES (%s)", (i,))
            assert pid_of(a) == mine
        assert a.execute("SELECT count(*) FROM t").fetchone() == (10,)
        a.execute("COMMIT")
        # Rolled-back and failed transactions also keep their server to the end.
        with pytest.raises(psycopg.errors.DivisionByZero):
            with a.transaction():
                pid = pid_of(a)
                a.execute("SET LOCAL work_mem = '1MB'")
                assert pid_of(b) != pid
                a.execute("SELECT 1/0")
        assert a.execute("SELECT 1").fetchone() == (1,)


def test_session_mode_same_server_for_whole_session(sluice):
    s = sluice({"pgbouncer": {"pool_mode": "session", "default_pool_size": 2}})
    with s.connect() as a, s.connect() as b:
        pid = backend_pid(a)
        for _ in range(5):
            assert backend_pid(b) != pid
            assert backend_pid(a) == pid
            assert pid_of(a) == pid


def test_session_mode_reset_between_clients(sluice):
    """The server_reset_query (DISCARD ALL) runs before the next client gets the
    server: A's SET, prepared statement and temp table are gone for B."""
    s = sluice({"pgbouncer": {"pool_mode": "session", "default_pool_size": 1}})
    with s.connect() as a:
        pid = pid_of(a)
        a.execute("SET work_mem = '1234kB'")
        a.execute("PREPARE leftover AS SELECT 1")
        a.execute("CREATE TEMP TABLE leftover_tmp (x int)")
        assert a.execute("SHOW work_mem").fetchone() == ("1234kB",)
    with s.connect() as b:
        assert pid_of(b) == pid, "pool size 1: B should get A's server"
        assert b.execute("SHOW work_mem").fetchone() == ("4MB",)
        assert b.execute("SELECT count(*) FROM pg_prepared_statements").fetchone() == (0,)
        assert b.execute("SELECT to_regclass('pg_temp.leftover_tmp')").fetchone() == (None,)


def test_session_mode_custom_reset_query(sluice):
    s = sluice({"pgbouncer": {"pool_mode": "session", "default_pool_size": 1,
                              "server_reset_query": "RESET work_mem"}})
    with s.connect() as a:
        a.execute("SET work_mem = '1234kB'")
        a.execute("SET statement_timeout = '7s'")
    with s.connect() as b:
        assert b.execute("SHOW work_mem").fetchone() == ("4MB",)
        # Only the configured query ran: statement_timeout survived.
        assert b.execute("SHOW statement_timeout").fetchone() == ("7s",)


def test_statement_mode_autocommit_loop(sluice, primary_conn):
    """Statement mode: many autocommit statements from several clients on a
    pool of 2, simple and extended protocol, writes visible at once."""
    primary_conn.execute("DROP TABLE IF EXISTS stmt_mode")
    primary_conn.execute("CREATE TABLE stmt_mode (client int, i int)")
    primary_conn.execute("GRANT ALL ON stmt_mode TO md5_user")
    s = sluice({"pgbouncer": {"pool_mode": "statement", "default_pool_size": 2}})

    def client(n):
        pids = set()
        with s.connect() as conn:
            for i in range(100):
                conn.execute("INSERT INTO stmt_mode VALUES (%s, %s)", (n, i))
                count = conn.execute(f"SELECT count(*) FROM stmt_mode WHERE client = {n}")
                assert count.fetchone() == (i + 1,)
                pids.add(pid_of(conn))
        return pids

    with ThreadPoolExecutor(4) as pool:
        pids = set().union(*pool.map(client, range(4), timeout=60))
    assert len(pids) <= 2
    assert primary_conn.execute("SELECT count(*) FROM stmt_mode").fetchone() == (400,)
    primary_conn.execute("DROP TABLE stmt_mode")
