"""systemd's Type=notify protocol (src/notify.c): sluice started with
NOTIFY_SOCKET pointing at a datagram socket this test binds, as systemd
would. READY=1 comes only once the port accepts connections; a reload
(SIGHUP or the console's RELOAD) is RELOADING=1 with MONOTONIC_USEC, then
READY=1, even when the new config is refused; a shutdown sends STOPPING=1
once. Every datagram comes from the pooler's own pid (systemd's default
NotifyAccess=main). No PostgreSQL is needed: no test here reaches a server."""

import signal
import socket
import time

import psycopg
import pytest

from notify_lib import NotifySocket
from sluice_fixture import IS_PGBOUNCER, Sluice, chown_run_as

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="PgBouncer's notify is its own")


class NoCluster:
    """What Sluice needs of a cluster, for configs that never reach a server:
    ports nothing listens on."""
    primary_port = 1
    replica_ports = [1, 1]
    redis_port = 1


@pytest.fixture
def notified(run_dir, request, monkeypatch):
    """notified() -> (Sluice, NotifySocket): a pooler spawned (not yet
    listening) with NOTIFY_SOCKET set; stopped and checked at teardown."""
    made = []

    def factory():
        ns = NotifySocket()
        monkeypatch.setenv("NOTIFY_SOCKET", ns.env)
        workdir = run_dir / f"{request.node.name}-{len(made)}"
        workdir.mkdir()
        chown_run_as(workdir)
        s = Sluice(NoCluster(), workdir)
        made.append((s, ns))
        s.spawn()
        return s, ns

    yield factory
    for s, ns in made:
        try:
            s.stop()
        finally:
            s.release_ports()
            ns.close()


def accepts(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def expect_ready(s, ns):
    """READY=1 from the pooler, and the port accepts at that moment."""
    fields, pid = ns.recv()
    assert fields.get("READY") == "1", fields
    assert pid == s.pid
    assert accepts(s.port), "READY=1 sent before the port accepts connections"
    return fields


def expect_reload(s, ns):
    """RELOADING=1 with a current MONOTONIC_USEC, then READY=1; the READY's fields."""
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    fields, pid = ns.recv()
    assert pid == s.pid
    assert fields.get("RELOADING") == "1", fields
    usec = int(fields["MONOTONIC_USEC"])
    # The signal or command was sent just before `before` was read.
    assert before - 5_000_000 < usec <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return expect_ready(s, ns)


def test_ready_only_once_listening(notified):
    s, ns = notified()
    fields = expect_ready(s, ns)
    assert f"127.0.0.1:{s.port}" in fields.get("STATUS", "")
    ns.nothing_more()


def test_reload_by_signal_and_console(notified):
    s, ns = notified()
    expect_ready(s, ns)
    s.signal(signal.SIGHUP)
    fields = expect_reload(s, ns)
    assert "reloaded" in fields.get("STATUS", "")
    with s.connect(user="sluice", dbname="pgbouncer") as conn:
        conn.execute("RELOAD")
    fields = expect_reload(s, ns)
    assert "reloaded" in fields.get("STATUS", "")
    ns.nothing_more()


def test_failed_reload_is_ready_again(notified):
    """A refused config keeps the old one serving: READY=1 all the same."""
    s, ns = notified()
    expect_ready(s, ns)
    good = s.ini.read_text()
    s.ini.write_text(good + "no_such_setting = 1\n")
    s.signal(signal.SIGHUP)
    fields = expect_reload(s, ns)
    assert "failed" in fields.get("STATUS", "")
    s.ini.write_text(good)
    with s.connect(user="sluice", dbname="pgbouncer") as conn:
        conn.execute("SHOW VERSION")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGQUIT],
                         ids=lambda n: signal.Signals(n).name)
def test_stopping_once(notified, signum):
    s, ns = notified()
    expect_ready(s, ns)
    s.signal(signum)
    fields, pid = ns.recv()
    assert pid == s.pid
    assert fields.get("STOPPING") == "1", fields
    assert s.wait_exit(10) == 0
    ns.nothing_more()
