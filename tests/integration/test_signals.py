"""Signals as in PgBouncer 1.23+: SIGINT waits for open transactions,
SIGTERM for the clients to leave, a second one of either exits at once,
SIGQUIT exits at once; SIGUSR1/SIGUSR2 pause and resume (SIGUSR2 is
ignored during a shutdown)."""

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


@pytest.mark.skipif(IS_PGBOUNCER, reason="sluice's pinning")
def test_sigint_closes_a_pinned_client_between_transactions(sluice):
    """A client pinned to its server (a temporary table under transaction
    pooling) is waited for while in a transaction and, between two, closed
    with 57P01 like any idle client, and sluice exits. Regression (found by
    the chaos sigint_restart scenario once its checker had pinned clients):
    a pinned client is linked to its server even when idle, and SIGINT
    waited for it forever."""
    s = sluice()
    with s.connect() as conn:
        conn.execute("CREATE TEMP TABLE sig_pin (x int)")
        conn.execute("BEGIN")
        conn.execute("INSERT INTO sig_pin VALUES (1)")
        s.signal(signal.SIGINT)
        time.sleep(0.5)
        assert s.running(), "exited while the pinned client's transaction was open"
        conn.execute("COMMIT")
        assert s.wait_exit(5) == 0, "still waiting for a pinned client between transactions"
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")


# Signals as in PgBouncer 1.23+; the installed PgBouncer is 1.18.
pgbouncer_123 = pytest.mark.skipif(IS_PGBOUNCER, reason="PgBouncer 1.23+ signals (1.18 here)")


@pgbouncer_123
def test_sigquit_exits_at_once(sluice, primary_conn, table):
    s = sluice()
    with s.connect() as conn:
        conn.execute("BEGIN")
        conn.execute(f"INSERT INTO {table} VALUES (1)")
        started = time.monotonic()
        s.signal(signal.SIGQUIT)
        assert s.wait_exit(3) == 0
        assert time.monotonic() - started < 2
        with pytest.raises(psycopg.OperationalError):
            conn.execute("COMMIT")
    assert not port_open(s.port)
    wait_until(lambda: primary_conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE %s AND pid <> pg_backend_pid()",
        (f"INSERT INTO {table}%",)).fetchone()[0] == 0, 3, "the server connection gone")
    assert primary_conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)


@pgbouncer_123
def test_sigterm_waits_for_clients(sluice, primary_conn, table):
    """SIGTERM: no new connections; the clients connected go on, new
    transactions included, and the pooler exits when the last one leaves."""
    s = sluice()
    with s.connect() as conn:
        conn.execute("BEGIN")
        conn.execute(f"INSERT INTO {table} VALUES (1)")
        s.signal(signal.SIGTERM)
        s.wait_for_log(r"got SIGTERM, shutting down, waiting for all clients disconnect")
        wait_until(lambda: not port_open(s.port), 3, "the listener closed")
        time.sleep(0.5)
        assert s.running()
        conn.execute("COMMIT")
        # Between transactions it is not closed: it may run more.
        for i in range(3):
            conn.execute(f"INSERT INTO {table} VALUES (%s)", (i + 2,))
        time.sleep(0.3)
        assert s.running(), "exited while a client was connected"
    assert s.wait_exit(5) == 0, "still running after the last client left"
    s.wait_for_log(r"no client left, exiting")
    assert primary_conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (4,)


@pgbouncer_123
@pytest.mark.parametrize("first,second", [(signal.SIGTERM, signal.SIGTERM),
                                          (signal.SIGTERM, signal.SIGINT),
                                          (signal.SIGINT, signal.SIGINT),
                                          (signal.SIGINT, signal.SIGTERM)],
                         ids=["TERM-TERM", "TERM-INT", "INT-INT", "INT-TERM"])
def test_second_signal_exits_at_once(sluice, table, first, second):
    """A second SIGINT or SIGTERM during a shutdown moves to the immediate
    one: the open transaction is cut."""
    s = sluice()
    with s.connect() as conn:
        conn.execute("BEGIN")
        conn.execute(f"INSERT INTO {table} VALUES (1)")
        s.signal(first)
        s.wait_for_log(r"got SIG(INT|TERM), shutting down")
        time.sleep(0.3)
        assert s.running()
        started = time.monotonic()
        s.signal(second)
        assert s.wait_exit(3) == 0
        assert time.monotonic() - started < 2
        s.wait_for_log(rf"got {second.name} while shutting down, fast exit")
        with pytest.raises(psycopg.OperationalError):
            conn.execute("COMMIT")


@pgbouncer_123
def test_sigusr2_during_shutdown_is_ignored(sluice):
    """SIGUSR2 does not undo a shutdown (PgBouncer logs and ignores it)."""
    s = sluice()
    with s.connect() as conn:
        conn.execute("SELECT 1")
        s.signal(signal.SIGTERM)
        s.wait_for_log(r"got SIGTERM, shutting down")
        s.signal(signal.SIGUSR2)
        s.wait_for_log(r"got SIGUSR2 while shutting down, ignoring")
        assert not port_open(s.port)
        assert conn.execute("SELECT 2").fetchone() == (2,)
    assert s.wait_exit(5) == 0


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
