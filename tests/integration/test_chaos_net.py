"""The chaos suite (issue 17), a blackhole in the kernel: the primary behind
a network address whose packets are dropped by a router in a network
namespace the test makes (chaos_lib.KernelBlackhole). Unlike FaultProxy's
blackhole(), whose kernel still acknowledges what sluice sends, nothing
comes back here, not even an ACK: sluice's TCP keepalive
(tcp_keepalive, tcp_keepidle, tcp_keepintvl, tcp_keepcnt) and
tcp_user_timeout are what end its server connections.

The tests (under 10 s together) run in make integration: an idle and a
busy server dropped by keepalive, the same idle server kept with keepalive
off (the control), and a write sent into the blackhole ended by
tcp_user_timeout. The scenario (primary_blackholed_in_kernel: 50 clients
of verified work while the primary is blackholed again and again) runs in
make chaos (CHAOS_ALL=1), for CHAOS_SECONDS. All skip where network
namespaces cannot be made."""

import os
import random
import threading
import time

import psycopg
import pytest

from chaos_lib import (CHAOS_SECONDS, CONNECT_TIMEOUT, KernelBlackhole, NetnsUnavailable,
                       chaos_config, run_checked)
from sluice_fixture import IS_PGBOUNCER, wait_until

ALL = os.environ.get("CHAOS_ALL") == "1"

pytestmark = [pytest.mark.skipif(IS_PGBOUNCER, reason="sluice's own suite"),
              pytest.mark.timeout(CHAOS_SECONDS + 300)]

# Keepalive as the tests set it: the first probe after 1 s of silence, then
# one a second; 2 unanswered probes and the connection is dead, 3 s in all.
KEEPALIVE = dict(tcp_keepalive=1, tcp_keepidle=1, tcp_keepintvl=1, tcp_keepcnt=2)
KEEPALIVE_SECONDS = 3


def make_blackhole(cluster, **kwargs):
    try:
        return KernelBlackhole(cluster.primary_port, **kwargs)
    except NetnsUnavailable as e:
        pytest.skip(f"network namespaces cannot be made here: {e}")


@pytest.fixture
def kbh(cluster):
    bh = make_blackhole(cluster)
    yield bh
    bh.close()


def net_config(bh, **extra):
    general = {"default_pool_size": 2, "reserve_pool_size": 0,
               "server_connect_timeout": CONNECT_TIMEOUT, "server_login_retry": 1}
    general.update(extra)
    return {"databases": {"mydb": f"host={bh.host} port={bh.port} dbname=mydb"},
            "pgbouncer": general}


def servers(s):
    """SHOW SERVERS of s's console: a dict a row."""
    with psycopg.connect(s.dsn(user="sluice", dbname="pgbouncer"), autocommit=True) as adm:
        cur = adm.execute("SHOW SERVERS")
        names = [d.name for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]


def open_idle_servers(s, user, n):
    """n server connections, idle in s's pool: n clients in a transaction
    at once, then committed. The backend pid of each."""
    conns = [s.connect(user=user) for _ in range(n)]
    try:
        pids = []
        for conn in conns:
            conn.execute("BEGIN")
            pids.append(conn.execute("SELECT pg_backend_pid()").fetchone()[0])
        for conn in conns:
            conn.execute("COMMIT")
        return pids
    finally:
        for conn in conns:
            conn.close()


class Background:
    """fn() on a thread: .error (a psycopg.Error or None) and .took (seconds)
    once .done."""

    def __init__(self, fn):
        self.error = self.took = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self.thread.start()

    def _run(self, fn):
        started = time.monotonic()
        try:
            fn()
        except psycopg.Error as e:
            self.error = e
        self.took = time.monotonic() - started
        self.done.set()


@pytest.fixture
def table(primary_conn):
    primary_conn.execute("DROP TABLE IF EXISTS chaos_net")
    primary_conn.execute("CREATE TABLE chaos_net (x int)")
    primary_conn.execute("GRANT ALL ON chaos_net TO PUBLIC")
    yield "chaos_net"
    primary_conn.execute("DROP TABLE IF EXISTS chaos_net")


def test_keepalive_drops_servers_behind_a_kernel_blackhole(sluice, cluster, pool_user, kbh,
                                                           table, primary_conn):
    """Two poolers of the same primary behind the blackhole: one with
    keepalive (1 s idle, 1 s between probes, 2 probes), one with
    tcp_keepalive = 0. The first has an idle server and a busy one (an
    autocommit INSERT sleeping 1 s when the blackhole starts); the second
    an idle one. Within the keepalive time (plus slack) the first has
    closed both, the log says why, and the INSERT's client is told 08007
    (it did commit: the server ran it, only the answer was lost); the
    second still lists its idle server, which, once healed, serves again
    (the same backend: its connection lived through it)."""
    on = sluice(net_config(kbh, **KEEPALIVE))
    off = sluice(net_config(kbh, tcp_keepalive=0))
    open_idle_servers(on, pool_user, 2)
    [off_pid] = open_idle_servers(off, pool_user, 1)
    assert len(servers(on)) == 2 and len(servers(off)) == 1

    writer = on.connect(user=pool_user)
    write = Background(lambda: writer.execute(
        f"INSERT INTO {table} SELECT 1 FROM pg_sleep(1)"))
    time.sleep(0.3)  # the INSERT is running on the primary
    kbh.blackhole()
    started = time.monotonic()
    try:
        wait_until(lambda: not servers(on), KEEPALIVE_SECONDS + 4,
                   "the keepalive pooler to close its servers behind the blackhole")
        dropped_after = time.monotonic() - started
        assert write.done.wait(2), "the INSERT's client is still waiting"
        held_for = time.monotonic() - started
        # The control: no keepalive, nothing sent, nothing noticed.
        assert [r["state"] for r in servers(off)] == ["idle"]
        assert kbh.dropped() > 0
    finally:
        kbh.heal()
    writer.close()
    assert dropped_after <= KEEPALIVE_SECONDS + 3, dropped_after
    assert held_for >= KEEPALIVE_SECONDS - 0.5, held_for
    e = write.error
    assert e is not None and e.sqlstate == "08007", (e and e.sqlstate, str(e))
    assert "transaction resolution unknown" in str(e)
    assert primary_conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (1,)
    on.wait_for_log(r"closing because: .*Connection timed out")
    # Healed: both serve, the control on the server that lived through it.
    with on.connect(user=pool_user) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    with off.connect(user=pool_user) as conn:
        assert conn.execute("SELECT pg_backend_pid()").fetchone() == (off_pid,)


def test_user_timeout_ends_a_write_sent_into_a_kernel_blackhole(sluice, cluster, pool_user,
                                                                kbh, table, primary_conn):
    """tcp_user_timeout = 2000 (ms) and tcp_keepalive = 0: a write sent to an
    idle server after the blackhole began is never acknowledged, and the
    kernel gives up on the connection after 2 s of retransmissions. The
    client is told 08007 (sluice cannot know the INSERT did not arrive)
    well before TCP's own retransmission limit (about 15 minutes). Its row
    is not there; once healed, sluice serves again. (PgBouncer applies
    tcp_user_timeout with keepalive on or off; sluice applied it only with
    keepalive on, and this write waited until the heal.)"""
    s = sluice(net_config(kbh, tcp_keepalive=0, tcp_user_timeout=2000))
    open_idle_servers(s, pool_user, 1)
    kbh.blackhole()
    try:
        with s.connect(user=pool_user) as conn:
            write = Background(lambda: conn.execute(f"INSERT INTO {table} VALUES (1)"))
            answered = write.done.wait(8)
            kbh.heal()
            write.done.wait(30)
    finally:
        kbh.heal()
    assert answered, f"the write was still waiting 8 s into the blackhole ({write.error})"
    assert write.took < 6, write.took
    e = write.error
    assert e is not None and e.sqlstate == "08007", (e and e.sqlstate, str(e))
    assert primary_conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)
    s.wait_for_log(r"closing because: .*Connection timed out")
    with s.connect(user=pool_user) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


# ----------------------------------------------------------------- scenario

BLACKHOLE_SECONDS = 4 * CONNECT_TIMEOUT  # > server_connect_timeout, keepalive, user timeout


@pytest.mark.skipif(not ALL, reason="make chaos (CHAOS_ALL=1) runs it")
def test_chaos_primary_blackholed_in_kernel(sluice, cluster, pool_user):
    """Every 2 to 4 s of health the primary is blackholed in the kernel for
    BLACKHOLE_SECONDS (8: 4 x server_connect_timeout, and past the 3 s of
    keepalive and the tcp_user_timeout of 3 s), then healed. No
    query_timeout: what ends the statements caught in it is TCP (keepalive
    for one waiting for its answer, tcp_user_timeout for one sent into the
    blackhole), and new server connections time out
    (server_connect_timeout) while their clients wait. The primary's side
    of each link has keepalive too (2 s, 1 s, 3), as a server with
    tcp_keepalives_* set, so that backends whose pooler connection died
    end. Asserts, besides the checker: sluice closed servers on timeouts
    (its log), and the pinned clients saw only their own state."""
    bh = make_blackhole(cluster, proxy_keepalive=(2, 1, 3))
    rng = random.Random(17)
    try:
        s = sluice(chaos_config(bh.port, host=bh.host, tcp_user_timeout=3000, **KEEPALIVE))

        def faults(deadline):
            blackholes = dropped = 0
            try:
                while time.monotonic() < deadline:
                    time.sleep(rng.uniform(2, 4))
                    bh.blackhole()
                    blackholes += 1
                    time.sleep(BLACKHOLE_SECONDS)
                    dropped += bh.dropped()
                    bh.heal()
            finally:
                bh.heal()
            log = s.log_text()
            return {"blackholes": blackholes, "packets_dropped": dropped,
                    "qdisc": " ".join(bh.qdisc or ()),
                    "server_connections": bh.proxy.accepted,
                    # Servers sluice closed: TCP gave up (keepalive or
                    # tcp_user_timeout), or a connect got no SYN-ACK.
                    "tcp_timed_out": log.count("closing because: Connection timed out"),
                    "connect_timeouts": log.count("closing because: connect timeout")}

        report, _ = run_checked("primary_blackholed_in_kernel", s, cluster, pool_user, faults)
    finally:
        bh.close()
    assert report["blackholes"] > 0 and report["packets_dropped"] > 0, report
    assert report["tcp_timed_out"] > 0, "no server connection ended by a TCP timeout"
    assert report["pinned_reads"] > 0, report
