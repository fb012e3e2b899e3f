"""Peering (PgBouncer 1.19's peer_id and [peers]): two poolers share one
TCP port with so_reuseport, and a cancel request that the kernel hands to
the process that did not give its key is forwarded to the one that did.

Each process also listens on a unix socket in a directory of its own: that
is the address its peer forwards cancels to (PgBouncer's documented setup;
on one host nothing else tells the two apart, since they share the TCP
port). Debian's PgBouncer is 1.18, which has no peering: skipped there."""

import os
import re
import shutil
import tempfile
import threading
import time

import psycopg
import pytest

from sluice_fixture import IS_PGBOUNCER, chown_run_as, send_cancel, wait_until

pytestmark = pytest.mark.skipif(
    IS_PGBOUNCER, reason="peer_id and [peers] are PgBouncer 1.19+; Debian's is 1.18")

FORWARD_LINE = re.compile(r"forwarding cancel request to peer (\d+)")


@pytest.fixture
def socket_dirs():
    """Two short directories for the unix sockets (a socket path must fit
    in 108 bytes; the run directories' names are long)."""
    dirs = []
    for _ in range(2):
        d = tempfile.mkdtemp(prefix="slp-")
        os.chmod(d, 0o755)
        chown_run_as(d)
        dirs.append(d)
    yield dirs
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)


def peer_config(peer_id, socket_dir, dirs, pool_size=None):
    extra = f" pool_size={pool_size}" if pool_size else ""
    return {
        "pgbouncer": {"so_reuseport": "1", "unix_socket_dir": socket_dir,
                      "peer_id": str(peer_id), "default_pool_size": "40",
                      "max_client_conn": "200"},
        # The same [peers] for both, own entry included (ignored), as
        # PgBouncer's example has it.
        "peers": {"1": f"host={dirs[0]} port={{port}}{extra}",
                  "2": f"host={dirs[1]} port={{port}}{extra}"},
    }


def start_pair(sluice, dirs, pool_size=None):
    a = sluice(peer_config(1, dirs[0], dirs, pool_size))
    b = sluice(peer_config(2, dirs[1], dirs, pool_size), start=False)
    # B takes A's port (so_reuseport lets both bind it), so {port} is A's
    # in both [peers] sections.
    b.port = b.placeholders["port"] = a.port
    b.write_config(peer_config(2, dirs[1], dirs, pool_size))
    b.start()
    return a, b


def console(s, socket_dir):
    """The admin console of the process listening in socket_dir."""
    return psycopg.connect(host=socket_dir, port=s.port, dbname="pgbouncer", user="sluice",
                           password="sluice", autocommit=True)


def clients_of(s, socket_dir, user):
    with console(s, socket_dir) as c:
        return sum(1 for row in c.execute("SHOW CLIENTS").fetchall() if row[1] == user)


def show(s, socket_dir, what):
    with console(s, socket_dir) as c:
        cur = c.execute(f"SHOW {what}")
        names = [d.name for d in cur.description]
        return names, cur.fetchall()


def running(cluster, marker):
    with cluster.primary_conn() as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                            "AND query LIKE %s AND pid <> pg_backend_pid()",
                            (f"%{marker}%",)).fetchone()[0]


class Sleeper(threading.Thread):
    """Runs pg_sleep(10) on conn; .error and .finished_at once it ends."""

    def __init__(self, conn, marker):
        super().__init__(daemon=True)
        self.conn, self.marker = conn, marker
        self.error = self.finished_at = None
        self.start()

    def run(self):
        try:
            self.conn.execute(f"SELECT pg_sleep(10) /* {self.marker} */")
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = e
        self.finished_at = time.monotonic()


def forwarded(s):
    return len(FORWARD_LINE.findall(s.log_text()))


def test_cancel_reaches_the_process_that_gave_the_key(sluice, cluster, socket_dirs, pool_user):
    """Many clients on the shared port, spread by the kernel over both
    processes; each query is cancelled through a new connection to that
    port (psycopg's cancel()), which may land on either process. Every
    query ends in QueryCanceled at once. pool_size=2: the forwards over it
    wait their turn and are not lost."""
    a, b = start_pair(sluice, socket_dirs, pool_size=2)
    password = pool_user + "_pw"
    conns = []
    try:
        # Enough clients that both processes hold some.
        for _ in range(60):
            conns.append(a.connect(user=pool_user, password=password))
            if len(conns) >= 16 and all(clients_of(s, d, pool_user) > 0
                                        for s, d in ((a, socket_dirs[0]), (b, socket_dirs[1]))):
                break
        on_a = clients_of(a, socket_dirs[0], pool_user)
        on_b = clients_of(b, socket_dirs[1], pool_user)
        assert on_a > 0 and on_b > 0, f"the kernel put all clients on one process: {on_a}/{on_b}"
        assert on_a + on_b == len(conns)

        marker = f"peers-{os.getpid()}"
        sleepers = [Sleeper(c, marker) for c in conns]
        wait_until(lambda: running(cluster, marker) == len(conns), 10, "every query running")
        before = forwarded(a) + forwarded(b)
        cancelled_at = time.monotonic()
        for c in conns:
            c.cancel()
        for t in sleepers:
            t.join(5)
        late = [t for t in sleepers if t.is_alive() or t.finished_at - cancelled_at > 2]
        assert not late, f"{len(late)} of {len(conns)} queries not cancelled within 2 s"
        wrong = [repr(t.error) for t in sleepers
                 if not isinstance(t.error, psycopg.errors.QueryCanceled)]
        assert not wrong, wrong
        # Some cancels landed on the other process and went through [peers]
        # (each does with probability 1/2).
        assert forwarded(a) + forwarded(b) > before, a.log_tail() + "\n" + b.log_tail()
        # The connections are fine afterwards.
        for c in conns:
            assert c.execute("SELECT 1").fetchone() == (1,)
    finally:
        for c in conns:
            c.close()

    names, rows = show(a, socket_dirs[0], "PEERS")
    assert names == ["peer_id", "host", "port", "pool_size"]
    assert rows == [(2, socket_dirs[1], a.port, 2)]  # its own entry is not listed
    names, rows = show(b, socket_dirs[1], "PEER_POOLS")
    assert names == ["database", "cl_active_cancel_req", "cl_waiting_cancel_req",
                     "sv_active_cancel", "sv_login"]
    # Nothing in flight once every cancel has landed.
    wait_until(lambda: show(b, socket_dirs[1], "PEER_POOLS")[1] == [("1", 0, 0, 0, 0)], 5,
               "b's forwards to peer 1 ended")


def test_forwarding_stops_when_the_ttl_is_spent(sluice, socket_dirs):
    """A group set up wrong: this process's [peers] says peer 2 is itself.
    A key of peer 2 goes round 3 times (its TTL), then is dropped with a
    log line, instead of looping for ever."""
    d = socket_dirs[0]
    s = sluice({"pgbouncer": {"unix_socket_dir": d, "peer_id": "1"},
                "peers": {"2": f"host={d} port={{port}}"}})
    since = s.log_mark()
    # pid: peer id 2 in its second byte (low 8 bits) and third (high
    # bits, 0); key: TTL 3 in its two low bits.
    send_cancel(s.port, 0x01000034 | (2 << 16), 0x5678 | 3)
    s.wait_for_log(r"cancel request for peer 2 dropped: its TTL is spent", since=since)
    assert len(FORWARD_LINE.findall(s.log_text(), since)) == 3
    # Unknown peer ids are dropped too, and plain cancels still work.
    send_cancel(s.port, 0x01000034 | (9 << 16), 3)
    s.wait_for_log(r"cancel request for peer 9 dropped: no \[peers\] entry", since=since)
    with s.connect() as c:
        assert c.execute("SELECT 1").fetchone() == (1,)


def test_bad_peers_config_refused(sluice):
    """A bad [peers] line stops the start with file:line and the reason."""
    s = sluice({"peers": {"1": "host=/tmp port=notaport"}}, start=False)
    s.spawn()
    assert s.wait_exit(10, codes=(1,)) == 1
    assert re.search(r"sluice\.ini:\d+: \[peers\] entry \"1\": invalid value \"notaport\" for "
                     r"port: not an integer", s.log_text()), s.log_tail()
