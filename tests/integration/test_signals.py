"""Signals: SIGINT waits for open transactions, SIGTERM exits at once,
SIGUSR1/SIGUSR2 pause and resume."""

import signal
import socket
import threading
import time

import psycopg
import pytest

from sluice_fixture import IS_PGBOUNCER, RawConn, ServerError, port_open, wait_until


@pytest.fixture
def table(primary_conn):
    primary_conn.execute("DROP TABLE IF EXISTS sig_t")
    primary_conn.execute("CREATE TABLE sig_t (x int)")
    primary_conn.execute("GRANT ALL ON sig_t TO PUBLIC")
    yield "sig_t"
    primary_conn.execute("DROP TABLE IF EXISTS sig_t")


def refused(s):
    """A new client cannot get a working connection (refused, or an error at
    login or at its first query); False if it works or just waits."""
    try:
        with RawConn(s.port, timeout=2) as conn:
            conn.login()
            conn.query("SELECT 1")
    except (ConnectionError, ServerError):
        return True
    except socket.timeout:
        return False
    return False


@pytest.mark.skipif(IS_PGBOUNCER, reason="PgBouncer 1.18 pauses new clients instead")
def test_sigint_waits_for_transaction(sluice, primary_conn, table):
    s = sluice()
    with s.connect() as conn:
        conn.execute("BEGIN")
        conn.execute(f"INSERT INTO {table} VALUES (1)")
        s.signal(signal.SIGINT)
        wait_until(lambda: refused(s), 3, "new connections refused after SIGINT")
        time.sleep(0.5)
        assert s.running(), "exited while a transaction was open"
        # The open transaction can finish.
        conn.execute(f"INSERT INTO {table} VALUES (2)")
        conn.execute("COMMIT")
        rc = s.wait_exit(5)
        assert rc is not None, "still running after the last transaction ended"
        assert rc == 0
    assert primary_conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (2,)


def test_sigint_idle_clients_do_not_delay_exit(sluice):
    s = sluice()
    with s.connect() as conn:
        conn.execute("SELECT 1")
        s.signal(signal.SIGINT)
        assert s.wait_exit(5) == 0


def test_sigterm_exits_at_once(sluice, primary_conn, table):
    s = sluice()
    with s.connect() as conn:
        conn.execute("BEGIN")
        conn.execute(f"INSERT INTO {table} VALUES (1)")
        started = time.monotonic()
        s.signal(signal.SIGTERM)
        # PgBouncer 1.18 exits with 1 ("fast exit").
        codes = (1,) if IS_PGBOUNCER else (0,)
        assert s.wait_exit(3, codes) in codes
        assert time.monotonic() - started < 2
        with pytest.raises(psycopg.OperationalError):
            conn.execute("COMMIT")
    assert not port_open(s.port)
    wait_until(lambda: primary_conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE %s AND pid <> pg_backend_pid()",
        (f"INSERT INTO {table}%",)).fetchone()[0] == 0, 3, "the server connection gone")
    assert primary_conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)


def test_sigusr1_pause_sigusr2_resume(sluice):
    s = sluice()
    with s.connect() as conn:
        conn.execute("SELECT 1")
        s.signal(signal.SIGUSR1)
        time.sleep(0.3)
        result = {}
        t = threading.Thread(target=lambda: result.update(row=conn.execute("SELECT 2").fetchone()))
        t.start()
        t.join(1)
        assert t.is_alive(), "query answered while paused"
        s.signal(signal.SIGUSR2)
        t.join(5)
        assert result.get("row") == (2,)
