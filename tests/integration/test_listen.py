"""LISTEN / NOTIFY / UNLISTEN under transaction pooling: one listening server
connection per pool, notifications delivered to every listening client while
it is idle or right after its transaction, none lost, none duplicated."""

import asyncio
import select
import time

import asyncpg
import psycopg
import pytest

from sluice_fixture import (IS_PGBOUNCER, PASSWORDS, TEST_WORKERS, RawConn, keepalive_timer,
                            wait_until)

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="sluice's LISTEN in transaction mode")

# Tests of the shared listening connection (more listeners than servers, or
# looking at that connection on the primary). With workers > 1 it is not used
# yet and LISTEN pins its client instead (docs/pooling.md, "LISTEN / NOTIFY").
shared_listener = pytest.mark.skipif(
    TEST_WORKERS > 1, reason="workers > 1: LISTEN pins its client, no shared listening "
    "connection yet (docs/pooling.md)")

CONFIG = {"pgbouncer": {"default_pool_size": 2, "reserve_pool_size": 0}}


class Inbox:
    """Notifications a psycopg connection received, whether they came while it
    was idle (polled from libpq) or with a query's answer (notify handler)."""

    def __init__(self, conn):
        self.conn = conn
        self.got = []
        conn.add_notify_handler(lambda n: self.got.append((n.channel, n.payload)))

    def poll(self, timeout=0.1):
        select.select([self.conn.fileno()], [], [], timeout)
        pg = self.conn.pgconn
        pg.consume_input()
        while (n := pg.notifies()) is not None:
            self.got.append((n.relname.decode(), n.extra.decode()))

    def wait(self, count, timeout=10):
        deadline = time.monotonic() + timeout
        while len(self.got) < count and time.monotonic() < deadline:
            self.poll(0.1)
        return self.got

    def settle(self, seconds=0.3):
        """Waits a little for anything extra (duplicates) to show up."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.poll(0.05)
        return self.got


def listening_query(cluster, channel):
    """The last query of the backend that LISTENed/UNLISTENed channel."""
    with cluster.primary_conn() as conn:
        rows = conn.execute(
            "SELECT query FROM pg_stat_activity WHERE query LIKE %s AND pid <> pg_backend_pid() "
            "ORDER BY query_start DESC",
            (f'%LISTEN "{channel}"',)).fetchall()
    return [r[0] for r in rows]


def test_listen_notify_exactly_once(sluice):
    s = sluice(CONFIG)
    with s.connect() as a, s.connect() as b:
        inbox = Inbox(a)
        a.execute("LISTEN lt_ch1")
        for i in range(5):
            b.execute(f"NOTIFY lt_ch1, 'x{i}'")
        assert inbox.wait(5) == [("lt_ch1", f"x{i}") for i in range(5)]
        assert inbox.settle() == [("lt_ch1", f"x{i}") for i in range(5)]
        # The listener keeps no server: the pool of 2 still serves others.
        with s.connect() as c, s.connect() as d:
            assert c.execute("SELECT 1").fetchone() == (1,)
            assert d.execute("SELECT 2").fetchone() == (2,)
        assert a.execute("SELECT 3").fetchone() == (3,)


def test_pg_notify_and_self_notify(sluice, primary_conn):
    s = sluice(CONFIG)
    with s.connect() as a:
        inbox = Inbox(a)
        a.execute("LISTEN lt_self")
        a.execute("NOTIFY lt_self, 'me'")  # PostgreSQL tells the sender too
        primary_conn.execute("SELECT pg_notify('lt_self', 'direct')")
        got = inbox.wait(2)
        assert sorted(got) == [("lt_self", "direct"), ("lt_self", "me")]
        assert inbox.settle() == got


@shared_listener
def test_two_listeners_and_unlisten(sluice):
    s = sluice(CONFIG)
    with s.connect() as a, s.connect() as b, s.connect() as sender:
        ia, ib = Inbox(a), Inbox(b)
        assert a.execute("LISTEN lt_two").statusmessage == "LISTEN"
        b.execute("LISTEN lt_two")
        sender.execute("NOTIFY lt_two, '1'")
        assert ia.wait(1) == [("lt_two", "1")]
        assert ib.wait(1) == [("lt_two", "1")]
        assert a.execute("UNLISTEN lt_two").statusmessage == "UNLISTEN"
        sender.execute("NOTIFY lt_two, '2'")
        assert ib.wait(2) == [("lt_two", "1"), ("lt_two", "2")]
        ia.settle()
        assert ia.got == [("lt_two", "1")]
        b.execute("UNLISTEN *")
        sender.execute("NOTIFY lt_two, '3'")
        ib.settle()
        assert ib.got == [("lt_two", "1"), ("lt_two", "2")]


def test_quoted_channel(sluice, primary_conn):
    s = sluice(CONFIG)
    with s.connect() as a:
        inbox = Inbox(a)
        a.execute('LISTEN "Mixed Case"')
        primary_conn.execute("SELECT pg_notify('Mixed Case', 'q')")
        assert inbox.wait(1) == [("Mixed Case", "q")]


@shared_listener
def test_disconnect_cleans_up(sluice, cluster):
    s = sluice(CONFIG)
    with s.connect() as a, s.connect() as b:
        a.execute("LISTEN lt_gone")
        b.execute("LISTEN lt_gone")
        assert listening_query(cluster, "lt_gone") == ['LISTEN "lt_gone"']
        # Shown in SHOW SERVERS as an active server linked to no client.
        with psycopg.connect(s.dsn(user="sluice", dbname="pgbouncer"), autocommit=True) as adm:
            cur = adm.execute("SHOW SERVERS")
            names = [d.name for d in cur.description]
            rows = [dict(zip(names, r)) for r in cur.fetchall()]
        assert any(r["state"] == "active" and not r["link"] for r in rows), rows
    wait_until(lambda: listening_query(cluster, "lt_gone") == ['UNLISTEN "lt_gone"'], 5,
               "the listening connection to UNLISTEN")


def test_delivered_after_transaction(sluice):
    s = sluice(CONFIG)
    with s.connect() as a, s.connect() as sender:
        inbox = Inbox(a)
        a.execute("LISTEN lt_tx")
        a.execute("BEGIN")
        a.execute("SELECT 1")
        sender.execute("NOTIFY lt_tx, 'during'")
        time.sleep(0.3)
        a.execute("SELECT 2")
        assert inbox.got == []  # not inside the transaction, as PostgreSQL
        a.execute("COMMIT")
        assert inbox.wait(1) == [("lt_tx", "during")]
        assert inbox.settle() == [("lt_tx", "during")]


def test_listen_inside_transaction_pins(sluice):
    """LISTEN in a transaction block pins the client (PostgreSQL's commit
    semantics hold on that server)."""
    s = sluice(CONFIG)
    with s.connect(autocommit=False) as a, s.connect() as sender:
        inbox = Inbox(a)
        a.execute("LISTEN lt_pinned")
        a.commit()
        sender.execute("NOTIFY lt_pinned, 'p'")
        assert inbox.wait(1) == [("lt_pinned", "p")]


@shared_listener
def test_burst_three_listeners(sluice):
    s = sluice(CONFIG)
    conns = [s.connect() for _ in range(3)]
    try:
        inboxes = [Inbox(c) for c in conns]
        for c in conns:
            c.execute("LISTEN lt_burst")
        with s.connect() as sender:
            with sender.cursor() as cur:
                for i in range(200):
                    cur.execute(f"NOTIFY lt_burst, '{i}'")
        # One listener keeps running transactions meanwhile.
        for _ in range(20):
            conns[0].execute("SELECT 1")
        want = [("lt_burst", str(i)) for i in range(200)]
        for inbox in inboxes:
            assert inbox.wait(200) == want
        for inbox in inboxes:
            assert inbox.settle(0.2) == want
    finally:
        for c in conns:
            c.close()


def test_asyncpg_add_listener(sluice):
    s = sluice(CONFIG)

    async def run():
        conn = await asyncpg.connect(host="127.0.0.1", port=s.port, user="md5_user",
                                     password=PASSWORDS["md5_user"], database="mydb",
                                     statement_cache_size=0)
        sender = await asyncpg.connect(host="127.0.0.1", port=s.port, user="md5_user",
                                       password=PASSWORDS["md5_user"], database="mydb",
                                       statement_cache_size=0)
        got = []
        done = asyncio.Event()

        def cb(_conn, _pid, channel, payload):
            got.append((channel, payload))
            if len(got) == 3:
                done.set()

        try:
            await conn.add_listener("lt_apg", cb)
            for i in range(3):
                await sender.execute(f"NOTIFY lt_apg, 'a{i}'")
            await asyncio.wait_for(done.wait(), 10)
            await asyncio.sleep(0.2)
            await conn.remove_listener("lt_apg", cb)
        finally:
            await conn.close()
            await sender.close()
        return got

    assert asyncio.run(run()) == [("lt_apg", f"a{i}") for i in range(3)]


@shared_listener
def test_listener_reconnects(sluice, cluster, primary_conn):
    """The listening connection dies: sluice reconnects and LISTENs again."""
    s = sluice(CONFIG)
    with s.connect() as a:
        inbox = Inbox(a)
        a.execute("LISTEN lt_rec")
        find = ("SELECT pid FROM pg_stat_activity "
                "WHERE query = 'LISTEN \"lt_rec\"' AND pid <> pg_backend_pid()")
        old = primary_conn.execute(find).fetchone()[0]
        primary_conn.execute("SELECT pg_terminate_backend(%s)", (old,))
        wait_until(lambda: [r[0] for r in primary_conn.execute(find).fetchall()] not in ([], [old]),
                   5, "a new listening connection")
        primary_conn.execute("NOTIFY lt_rec, 'back'")
        assert inbox.wait(1) == [("lt_rec", "back")]
        assert a.execute("SELECT 1").fetchone() == (1,)


def _client_keepalive_timer(s, conn_port):
    """The keepalive timer of sluice's end of the client connection whose
    peer port is conn_port."""
    return keepalive_timer(s.pid, f"( sport = :{s.port} and dport = :{conn_port} )")


def _keepalive_config(keepidle):
    return {"pgbouncer": {"tcp_keepalive": 1, "tcp_keepidle": keepidle, "tcp_keepintvl": 3,
                          "tcp_keepcnt": 4}}


def _new_client_keepalive_timer(s, keepidle):
    """Reloads s with tcp_keepidle = keepidle; the keepalive timer of a
    client accepted after it."""
    s.write_config(_keepalive_config(keepidle))
    mark = s.log_mark()
    s.reload()
    s.wait_for_log(r"config reloaded", since=mark)
    with RawConn(s.port) as conn:
        conn.login()
        return _client_keepalive_timer(s, conn.sock.getsockname()[1])


@pytest.mark.skipif(IS_PGBOUNCER, reason="sluice sets them on the listener")
def test_client_sockets_get_keepalive_settings_and_reload_changes_them(sluice):
    """tcp_keepidle reaches client sockets (sluice sets the TCP options on
    its listeners, whose connections inherit them), and a RELOAD with
    another value reaches the clients accepted after it, 0 (the OS's value)
    included."""
    s = sluice(_keepalive_config(30))
    with RawConn(s.port) as first:
        first.login()
        assert 20 < _client_keepalive_timer(s, first.sock.getsockname()[1]) <= 30
        assert 300 < _new_client_keepalive_timer(s, 400) <= 400
        # Back to 0: the listener used to keep 400.
        kernel = int(open("/proc/sys/net/ipv4/tcp_keepalive_time").read())
        assert kernel != 400
        assert kernel - 100 < _new_client_keepalive_timer(s, 0) <= kernel
