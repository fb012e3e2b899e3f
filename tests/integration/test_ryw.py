"""Read-your-writes (read_your_writes, ryw.c): with replay paused on one
replica (pg_wal_replay_pause(), as Pgpool-II's regression tests do), a read
after a write never sees the old data in the scopes that promise it, and
does under `off` (so the test can fail)."""

import threading
import time

import pytest

from sluice_fixture import IS_PGBOUNCER, wait_until
from test_routing import SPLIT

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="sluice's read-your-writes")


def config(mode, **general):
    c = {"databases": dict(SPLIT["databases"]), "pgbouncer": dict(SPLIT["pgbouncer"])}
    c["pgbouncer"].update(read_your_writes=mode, replica_load_balance="round_robin",
                          lag_check_interval="0.05", default_pool_size="10")
    c["pgbouncer"].update({k: str(v) for k, v in general.items()})
    return c


@pytest.fixture(scope="module")
def ryw_table(cluster):
    """The table, created once and replayed by both replicas (dropping and
    creating it per test would race the replay with the pause)."""
    with cluster.primary_conn() as conn:
        conn.execute("DROP TABLE IF EXISTS ryw_t, ryw_items")
        conn.execute("CREATE TABLE ryw_t (k int, v int)")
        conn.execute("CREATE TABLE ryw_items (id serial PRIMARY KEY, owner int, note text)")
        conn.execute("GRANT ALL ON ryw_t, ryw_items, ryw_items_id_seq TO PUBLIC")
    cluster.wait_replayed()
    yield
    with cluster.primary_conn() as conn:
        conn.execute("DROP TABLE IF EXISTS ryw_t, ryw_items")


@pytest.fixture
def paused(cluster, ryw_table):
    """ryw_t empty (replayed everywhere), then replay paused on replica1
    for the test, resumed after it."""
    with cluster.primary_conn() as conn:
        conn.execute("DELETE FROM ryw_t")
        conn.execute("DELETE FROM ryw_items")
    cluster.wait_replayed()
    with cluster.replay_paused(cluster.replica_ports[0]) as port:
        yield port


def pairs(s, clients, rounds, same_connection=False):
    """Each client writes (k, i) on one connection, then reads max(v) for k
    on another (or the same); returns (stale reads, reads, ports read on)."""
    stale, reads, ports, errors = [0], [0], set(), []
    lock = threading.Lock()

    def client(k):
        try:
            with s.connect() as w, (s.connect() if not same_connection else w) as r:
                for i in range(1, rounds + 1):
                    w.execute("INSERT INTO ryw_t VALUES (%s, %s)", (k, i))
                    got, port = r.execute("SELECT max(v), inet_server_port() FROM ryw_t "
                                          "WHERE k = %s", (k,)).fetchone()
                    with lock:
                        reads[0] += 1
                        ports.add(port)
                        if got is None or got < i:
                            stale[0] += 1
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    return stale[0], reads[0], ports


@pytest.mark.parametrize("mode", ["user", "database"])
def test_pooled_writes_then_reads_never_stale(sluice, cluster, paused, mode):
    """Writes and reads on different connections of one user: 20 clients x
    50 pairs, none reads its own write's absence."""
    s = sluice(config(mode))
    stale, reads, ports = pairs(s, 20, 50)
    assert reads == 1000 and stale == 0
    assert paused not in ports  # replica1 never replayed a single one of them


def test_off_reads_stale(sluice, cluster, paused):
    """The same test under off sees stale reads: it can fail."""
    s = sluice(config("off"))
    stale, reads, ports = pairs(s, 5, 20)
    assert stale > 0 and paused in ports


def test_connection_scope(sluice, cluster, paused):
    """connection: a client's own reads never go back in time; another
    connection of the same user may read a replica that has not replayed."""
    s = sluice(config("connection"))
    stale, reads, _ = pairs(s, 5, 20, same_connection=True)
    assert reads == 100 and stale == 0
    stale, reads, ports = pairs(s, 5, 20)
    assert stale > 0 and paused in ports


def test_reads_go_back_to_replicas_once_they_replay(sluice, cluster, paused):
    """After a write, once a replica has replayed it (replica2; replica1 is
    paused), reads go there again, not to the primary for ever."""
    s = sluice(config("user"))
    with s.connect() as w, s.connect() as r:
        w.execute("INSERT INTO ryw_t VALUES (-1, 1)")
        ports = set()

        def read():
            ports.add(r.execute("SELECT inet_server_port() FROM ryw_t WHERE k = -1")
                      .fetchone()[0])
            return cluster.replica_ports[1] in ports
        wait_until(read, 10, "a read on replica2 once it replayed the write")
        assert paused not in ports


def test_a_write_in_a_transaction_counts_at_commit(sluice, cluster, paused):
    s = sluice(config("user"))
    with s.connect(autocommit=False) as w, s.connect() as r:
        w.execute("SELECT count(*) FROM ryw_t WHERE k = -2")  # the transaction reads first
        w.execute("INSERT INTO ryw_t VALUES (-2, 7)")
        w.commit()
        assert r.execute("SELECT max(v) FROM ryw_t WHERE k = -2").fetchone()[0] == 7


def token_parts(token):
    """A causal token's parts: (LSN as int, system identifier, timeline)."""
    parts = token.split("/")
    assert len(parts) == 4, token
    return (int(parts[0], 16) << 32 | int(parts[1], 16)), int(parts[2]), int(parts[3])


def primary_identity(cluster):
    with cluster.primary_conn() as conn:
        sysid = conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone()[0]
        tli = int(conn.execute("SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)")
                  .fetchone()[0], 16)
    return sysid, tli


def write_for_token(conn, k):
    """Inserts (k, 1) (autocommit, extended protocol) until the token it
    brings names its cluster (the lag monitor reads that a tick after the
    pool's first use); returns the token."""
    def written():
        conn.execute("INSERT INTO ryw_t VALUES (%s, 1)", (k,))
        return conn.info.parameter_status("sluice.lsn").count("/") == 3
    wait_until(written, 5, "a token naming the cluster")
    return conn.info.parameter_status("sluice.lsn")


def lsn_text(lsn):
    return "%X/%X" % (lsn >> 32, lsn & 0xFFFFFFFF)


def test_token_after_each_write(sluice, cluster, ryw_table):
    """Every write transaction's commit brings ParameterStatus sluice.lsn,
    before its ReadyForQuery: at or after the commit, naming the cluster
    and timeline; a read changes nothing."""
    s = sluice(config("user"))
    sysid, tli = primary_identity(cluster)
    with s.connect() as conn:
        first = write_for_token(conn, -2)
        lsn1, sid, t = token_parts(first)
        assert (sid, t) == (sysid, tli)
        with cluster.primary_conn() as p:
            ahead = p.execute("SELECT pg_current_wal_insert_lsn() - %s::pg_lsn",
                              (lsn_text(lsn1),)).fetchone()[0]
        assert ahead >= 0  # a position the primary has written
        with conn.transaction():
            conn.execute("INSERT INTO ryw_t VALUES (-2, 2)")
            conn.execute("SELECT 1")
        second = conn.info.parameter_status("sluice.lsn")
        assert token_parts(second)[0] > lsn1
        conn.execute("SELECT count(*) FROM ryw_t")  # a read: no new token
        assert conn.info.parameter_status("sluice.lsn") == second
        conn.execute("DELETE FROM ryw_t WHERE k = -2; SELECT 1")  # simple protocol
        assert token_parts(conn.info.parameter_status("sluice.lsn"))[0] > token_parts(second)[0]


def read_k(conn, k):
    return conn.execute("SELECT max(v), inet_server_port() FROM ryw_t WHERE k = %s",
                        (k,)).fetchone()


def test_token_through_asyncpg(sluice, cluster, ryw_table):
    """asyncpg has the token too, in conn.get_settings()."""
    import asyncio

    import asyncpg
    from sluice_fixture import PASSWORDS
    s = sluice(config("user"))

    async def write():
        conn = await asyncpg.connect(host="127.0.0.1", port=s.port, user="md5_user",
                                     password=PASSWORDS["md5_user"], database="mydb",
                                     statement_cache_size=0, timeout=30)
        try:
            for _ in range(50):  # the cluster is named a tick after the pool's first use
                await conn.execute("INSERT INTO ryw_t VALUES (-9, 1)")
                token = getattr(conn.get_settings(), "sluice.lsn")
                if token.count("/") == 3:
                    return token
                await asyncio.sleep(0.1)
            return token
        finally:
            await conn.close()

    lsn, sid, tli = token_parts(asyncio.run(write()))
    assert (sid, tli) == primary_identity(cluster) and lsn > 0


def test_token_handed_to_another_instance(sluice, cluster, paused):
    """Service A writes through sluice A and hands the token over; service B
    reads through sluice B (read_your_writes off there, so only the token
    makes it wait for the write): SET sluice.min_lsn, or -c sluice.min_lsn
    in the startup options. Without the token B reads the paused replica."""
    a = sluice(config("user"))
    b = sluice(config("off"))
    with a.connect() as w:
        token = write_for_token(w, -3)
    with b.connect() as r:
        ports = {read_k(r, -3)[1] for _ in range(6)}
        assert paused in ports  # round robin: the paused replica too, without the token
        r.execute("SET sluice.min_lsn = %s" % "'" + token + "'")
        assert r.execute("SHOW sluice.min_lsn").fetchone()[0] == token
        for _ in range(10):
            got, port = read_k(r, -3)
            assert got == 1 and port != paused
        r.execute("RESET sluice.min_lsn")
        assert r.execute("SHOW sluice.min_lsn").fetchone()[0] == ""
    with b.connect(options="-c sluice.min_lsn=" + token) as r:
        for _ in range(10):
            got, port = read_k(r, -3)
            assert got == 1 and port != paused


def test_token_of_another_cluster_is_ignored(sluice, cluster, paused):
    """A token naming another system identifier (or timeline) is ignored
    with a warning instead of holding reads back."""
    s = sluice(config("off"))
    notices = []
    with s.connect() as r:
        r.add_notice_handler(lambda d: notices.append(d.message_primary))
        read_k(r, -3)
        time.sleep(0.5)  # the lag monitor has read the cluster's identity
        r.execute("SET sluice.min_lsn = 'FFFFFFFF/0/12345/1'")
        assert any("another cluster" in n for n in notices)
        ports = {read_k(r, -3)[1] for _ in range(6)}
        assert paused in ports


def test_sluice_settings_answered_by_sluice(sluice, cluster, ryw_table):
    """SET / SHOW / RESET of sluice.* never reach a server; bad ones get
    errors a client can read."""
    import psycopg
    s = sluice(config("user"))
    with s.connect() as conn:
        assert conn.execute("SHOW sluice.lsn").fetchone()[0] is not None
        conn.execute("SET sluice.min_lsn TO '0/10'")
        assert conn.execute("SHOW sluice.min_lsn").fetchone()[0] == "0/10"
        conn.execute("SET sluice.min_lsn TO DEFAULT")
        assert conn.execute("SHOW sluice.min_lsn").fetchone()[0] == ""
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="expected LSN"):
            conn.execute("SET sluice.min_lsn = 'yesterday'")
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="cannot be changed"):
            conn.execute("SET sluice.lsn = '0/1'")
        with pytest.raises(psycopg.errors.UndefinedObject, match="sluice.nothing"):
            conn.execute("SHOW sluice.nothing")
        # inside a transaction on the primary too
        with conn.transaction():
            conn.execute("INSERT INTO ryw_t VALUES (-4, 1)")
            conn.execute("SET sluice.min_lsn = '0/20'")
            assert conn.execute("SHOW sluice.min_lsn").fetchone()[0] == "0/20"
        tok = conn.info.parameter_status("sluice.lsn")
        assert conn.execute("SHOW sluice.lsn").fetchone()[0] >= tok.split("/")[0]
        with cluster.primary_conn() as p:
            # no server ever saw the placeholder setting
            assert p.execute("SELECT count(*) FROM pg_stat_activity WHERE query ILIKE "
                             "'%%sluice.min_lsn%%' AND pid <> pg_backend_pid()").fetchone()[0] == 0
    with pytest.raises(psycopg.OperationalError, match="sluice.min_lsn"):
        s.connect(options="-c sluice.min_lsn=garbage")


@pytest.fixture
def delayed(cluster, paused):
    """replica1 paused, replica2 applying commits 300 ms after the primary
    made them (recovery_min_apply_delay): a read right after a write has no
    replica that replayed it, and replica2 has one 300 ms later."""
    port = cluster.replica_ports[1]
    with cluster.connect(port=port) as conn:
        conn.execute("ALTER SYSTEM SET recovery_min_apply_delay = '300ms'")
        conn.execute("SELECT pg_reload_conf()")
    yield port
    with cluster.connect(port=port) as conn:
        conn.execute("ALTER SYSTEM RESET recovery_min_apply_delay")
        conn.execute("SELECT pg_reload_conf()")


def test_read_waits_for_a_replica_to_catch_up(sluice, cluster, delayed):
    """With replica_wait_timeout longer than replica2's delay, a read after
    a write waits for replica2 to replay it and is served there: never the
    primary, never stale, and counted as a wait in /metrics."""
    from test_metrics import scrape, value, check_histogram
    s = sluice(config("user", replica_wait_timeout=3,
                      metrics_listen="127.0.0.1:{metrics_port}"))
    with s.connect() as w, s.connect() as r:
        for i in range(1, 6):
            w.execute("INSERT INTO ryw_t VALUES (-5, %s)", (i,))
            t0 = time.monotonic()
            got, port = read_k(r, -5)
            waited = time.monotonic() - t0
            assert (got, port) == (i, delayed)
            assert 0.1 < waited < 2.5
    samples = scrape(s.metrics_port)[1]
    assert value(samples, "sluice_ryw_waits_total", went="replica") >= 5
    assert value(samples, "sluice_ryw_waits_total", went="primary") == 0
    assert check_histogram(samples, "sluice_ryw_wait_seconds") >= 5


def test_replica_position_rides_behind_other_reads(sluice, cluster, delayed):
    """While md5_user's read waits for replica2 (300 ms behind), another
    user's reads (nothing to wait for) go to the replicas, simple and
    extended protocol: the replicas' positions are asked behind some of
    them (sluice_ryw_position_asks_total{how="ride"}) instead of by the lag
    monitor's polls. Those reads get their own answers, whole; the waiting
    read is served by replica2 with the new row."""
    from test_metrics import scrape, value
    s = sluice(config("user", replica_wait_timeout=3,
                      metrics_listen="127.0.0.1:{metrics_port}"))
    stop, seen, errors = threading.Event(), [], []

    def other_reader():
        try:
            with s.connect(user="scram_user") as c:
                i = 0
                while not stop.is_set():
                    i += 1
                    if i % 2:
                        row = c.execute("SELECT %s::int, 'x' || %s::text" % (i, i)).fetchone()
                    else:
                        row = c.execute("SELECT %s::int, 'x' || %s::text", (i, i)).fetchone()
                    seen.append(row == (i, "x%d" % i))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    t = threading.Thread(target=other_reader)
    t.start()
    try:
        with s.connect() as w, s.connect() as r:
            for i in range(1, 4):
                w.execute("INSERT INTO ryw_t VALUES (-7, %s)", (i,))
                assert read_k(r, -7) == (i, delayed)
    finally:
        stop.set()
        t.join()
    assert errors == [] and len(seen) > 50 and all(seen), (errors, len(seen))
    samples = scrape(s.metrics_port)[1]
    rides = value(samples, "sluice_ryw_position_asks_total", how="ride")
    polls = value(samples, "sluice_ryw_position_asks_total", how="poll")
    assert rides > 0, (rides, polls)
    assert value(samples, "sluice_ryw_waits_total", went="primary") == 0


def test_read_goes_to_the_primary_when_the_wait_is_up(sluice, cluster, delayed):
    """With replica_wait_timeout shorter than the delay, the read goes to
    the primary after waiting that long; with 0 it goes there at once."""
    for timeout in ("0.05", "0"):
        s = sluice(config("user", replica_wait_timeout=timeout))
        with s.connect() as w, s.connect() as r:
            w.execute("INSERT INTO ryw_t VALUES (-6, 1)")
            t0 = time.monotonic()
            got, port = read_k(r, -6)
            assert (got, port) == (1, cluster.primary_port)
            assert time.monotonic() - t0 < 0.25


@pytest.fixture
def replay_position_refused(cluster, ryw_table):
    """pg_last_wal_replay_lsn() refused to the cluster's users, as some
    managed replicas lack it: revoked on the primary (the replicas replay
    that), granted back after the test."""
    with cluster.primary_conn() as conn:
        conn.execute("DELETE FROM ryw_t")
        conn.execute("REVOKE EXECUTE ON FUNCTION pg_catalog.pg_last_wal_replay_lsn() FROM PUBLIC")
    cluster.wait_replayed()
    try:
        yield
    finally:
        with cluster.primary_conn() as conn:
            conn.execute("GRANT EXECUTE ON FUNCTION pg_catalog.pg_last_wal_replay_lsn() TO PUBLIC")
        cluster.wait_replayed()


def test_a_replica_that_cannot_report_its_position(sluice, cluster, replay_position_refused):
    """A replica that cannot say how far it replayed takes no read that
    must see a write: after md5_user's write its reads go to the primary
    once the wait is up, fresh and without an error; another user's reads,
    with nothing to see, get no error either (no position query's error
    reaches them)."""
    s = sluice(config("user", replica_wait_timeout="0.02"))
    errors, other_ports = [], set()
    stop = threading.Event()

    def other_reads():
        try:
            with s.connect(user="scram_user") as c:
                while not stop.is_set():
                    other_ports.add(c.execute("SELECT inet_server_port()").fetchone()[0])
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    reader = threading.Thread(target=other_reads)
    reader.start()
    try:
        with s.connect() as w, s.connect() as r:
            for i in range(1, 21):
                w.execute("INSERT INTO ryw_t VALUES (-8, %s)", (i,))
                assert read_k(r, -8) == (i, cluster.primary_port)
    finally:
        stop.set()
        reader.join(10)
    assert errors == [] and other_ports


def sqlalchemy_pairs(s, clients, rounds):
    """The pooled-application shape: one SQLAlchemy engine (psycopg2, a
    pool of 2 x clients connections); each of `clients` threads holds two
    pooled connections and writes on one, commits, then reads on the other
    (in its own transaction, as SQLAlchemy begins one). Returns (stale
    reads, reads, server ports read on)."""
    import sqlalchemy
    from concurrent.futures import ThreadPoolExecutor
    from sluice_fixture import PASSWORDS
    engine = sqlalchemy.create_engine(
        f"postgresql+psycopg2://md5_user:{PASSWORDS['md5_user']}@127.0.0.1:{s.port}/mydb",
        pool_size=2 * clients, max_overflow=0)
    insert = sqlalchemy.text("INSERT INTO ryw_t VALUES (:k, :v)")
    read = sqlalchemy.text("SELECT max(v), inet_server_port() FROM ryw_t WHERE k = :k")

    def client(k):
        stale, ports = 0, set()
        with engine.connect() as w, engine.connect() as r:
            for i in range(1, rounds + 1):
                with w.begin():
                    w.execute(insert, {"k": k, "v": i})
                with r.begin():
                    got, port = r.execute(read, {"k": k}).one()
                ports.add(port)
                stale += got is None or got < i
        return stale, ports

    try:
        with ThreadPoolExecutor(clients) as pool:
            results = list(pool.map(client, range(1000, 1000 + clients), timeout=600))
    finally:
        engine.dispose()
    return (sum(st for st, _ in results), clients * rounds,
            set().union(*(p for _, p in results)))


def test_sqlalchemy_10000_pairs_never_stale(sluice, cluster, paused):
    """Acceptance: under user, 10,000 write-then-read pairs from 50 clients
    over a pooled SQLAlchemy engine, writes and reads on different client
    connections, never read stale data - and replicas serve reads."""
    s = sluice(config("user", default_pool_size=20, max_client_conn=200))
    stale, reads, ports = sqlalchemy_pairs(s, 50, 200)
    assert reads == 10000 and stale == 0
    assert paused not in ports and cluster.replica_ports[1] in ports


def test_sqlalchemy_pairs_stale_under_off(sluice, cluster, paused):
    """The same application under off reads stale data: the test above can
    fail."""
    s = sluice(config("off", default_pool_size=20, max_client_conn=200))
    stale, reads, ports = sqlalchemy_pairs(s, 10, 20)
    assert stale > 0 and paused in ports


def test_routing_session_reads_its_writes(sluice, cluster, paused):
    """The seed's RoutingSession (SQLAlchemy's documented pattern: flushes
    to a leader engine, everything else to a follower engine) with both
    engines on one sluice DSN: an object committed by one session is seen
    by the next, without wait_for_replication()."""
    import sqlalchemy
    from sqlalchemy import Column, Integer, Text
    from sqlalchemy.orm import Session, declarative_base, sessionmaker
    from sluice_fixture import PASSWORDS
    dsn = f"postgresql+psycopg2://md5_user:{PASSWORDS['md5_user']}@127.0.0.1:{{}}/mydb"
    s = sluice(config("user"))
    engines = {"leader": sqlalchemy.create_engine(dsn.format(s.port), pool_size=5),
               "follower": sqlalchemy.create_engine(dsn.format(s.port), pool_size=5)}
    Base = declarative_base()

    class Item(Base):
        __tablename__ = "ryw_items"
        id = Column(Integer, primary_key=True)
        owner = Column(Integer)
        note = Column(Text)

    class RoutingSession(Session):
        def get_bind(self, mapper=None, clause=None, **kw):
            if self._flushing or isinstance(clause, (sqlalchemy.sql.Update,
                                                     sqlalchemy.sql.Delete,
                                                     sqlalchemy.sql.Insert)):
                return engines["leader"]
            return engines["follower"]

    make = sessionmaker(class_=RoutingSession)
    try:
        for i in range(100):
            with make() as session:
                item = Item(owner=7, note=f"note {i}")
                session.add(item)
                session.commit()
                new_id = item.id  # expired by the commit: read again
            with make() as session:
                got = session.get(Item, new_id)
                assert got is not None and got.note == f"note {i}"
                assert session.query(Item).filter_by(owner=7).count() == i + 1
    finally:
        for e in engines.values():
            e.dispose()
