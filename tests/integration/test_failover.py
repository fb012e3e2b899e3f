"""Primary discovery and failover (issue 11, item 4): an entry whose host=
lists every node of the cluster, with read_write_split on. sluice finds the
primary by pg_is_in_recovery() (its health checks), follows a failover
(primary stopped, a replica promoted) and a switchover (the old primary back
as a replica) without a reload, never sends a write to a node in recovery,
and keeps a promoted replicas= node out of writes. With the split off, a host
list spreads connections as PgBouncer's load_balance_hosts does.

These tests promote replicas and restart nodes, so they run on a cluster of
their own (ThrowawayCluster: about 10 s to build, deleted at the end of the
module), never on the shared one. They run in file order and each finds the
roles as they are (pg_is_in_recovery() of every node) before it starts."""

import threading
import time

import psycopg
import pytest

from sluice_fixture import IS_PGBOUNCER, ThrowawayCluster, wait_until

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="sluice's primary discovery")

NODES = ("primary", "replica1", "replica2")
CHECK_INTERVAL = 0.2
QUERY_WAIT_TIMEOUT = 2


@pytest.fixture(scope="module")
def cluster():
    """Overrides conftest's shared cluster for this module."""
    c = ThrowawayCluster(prefix="sluice-failover-")
    try:
        c.start()
        with c.primary_conn() as conn:
            conn.execute("CREATE TABLE failover_t (id serial PRIMARY KEY, v int)")
            conn.execute("GRANT ALL ON failover_t, failover_t_id_seq TO PUBLIC")
        yield c
    finally:
        c.destroy()


def roles(cluster):
    """{node: True if in recovery} for the running nodes."""
    out = {}
    for name in NODES:
        try:
            out[name] = cluster.in_recovery(name)
        except psycopg.OperationalError:
            pass
    return out


def primary_of(cluster):
    primaries = [n for n, rec in roles(cluster).items() if not rec]
    assert len(primaries) == 1, f"expected one primary, roles: {roles(cluster)}"
    return primaries[0]


def hosts_config(cluster, order=NODES, split="on", **general):
    """mydb with host= listing the nodes of order and a port per host."""
    hosts = ",".join("127.0.0.1" for _ in order)
    ports = ",".join(str(cluster.port_of(n)) for n in order)
    general = {"read_write_split": split, "replica_check_interval": str(CHECK_INTERVAL),
               "replica_ban_time": "1", "query_wait_timeout": str(QUERY_WAIT_TIMEOUT),
               "server_login_retry": "0.2",
               # reads here right after writes are about placement, not freshness
               "read_your_writes": "off", **{k: str(v) for k, v in general.items()}}
    return {"databases": {"mydb": f"host={hosts} port={ports} dbname=mydb"},
            "pgbouncer": general}


def admin_rows(s, what):
    with psycopg.connect(s.dsn(user="sluice", dbname="pgbouncer"), autocommit=True) as conn:
        cur = conn.execute(f"SHOW {what}")
        names = [d.name for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]


def host_states(s):
    """{port: state} of the hosts of mydb in SHOW REPLICAS, and the port of
    its primary row (endpoint 0: where writes go)."""
    rows = [r for r in admin_rows(s, "REPLICAS") if r["database"] == "mydb"]
    states = {r["port"]: r["state"] for r in rows if r["role"] == "host"}
    primary = [r for r in rows if r["role"] == "primary"]
    assert len(primary) == 1, rows
    return states, primary[0]["port"]


def write(conn, v=0):
    """A write through sluice; the port of the server that ran it."""
    return conn.execute("INSERT INTO failover_t (v) VALUES (%s) RETURNING inet_server_port()",
                        (v,)).fetchone()[0]


def wait_for_primary(s, port, timeout=10):
    """Until a write through a new connection runs on port."""
    def ok():
        try:
            with s.connect() as conn:
                return write(conn) == port
        except psycopg.Error:
            return False
    wait_until(ok, timeout, f"writes to reach port {port}", interval=0.1)


def test_writes_go_to_the_primary_wherever_it_is_in_the_list(sluice, cluster):
    """The order of host= does not matter: the primary is the node out of
    recovery. The others take reads. SHOW REPLICAS and SHOW POOLS say which
    node is the primary."""
    primary = primary_of(cluster)
    order = tuple(n for n in NODES if n != primary) + (primary,)  # the primary last
    s = sluice(hosts_config(cluster, order))
    standbys = {cluster.port_of(n) for n in NODES if n != primary}
    with s.connect() as conn:
        # The first write waits for the first checks (no primary known yet).
        for i in range(5):
            assert write(conn, i) == cluster.port_of(primary)
        wait_until(lambda: all(host_states(s)[0][p] == "ok" for p in standbys), 10,
                   "the standbys' first checks")
        reads = {conn.execute("SELECT inet_server_port()").fetchone()[0] for _ in range(20)}
    assert reads <= standbys, f"reads went to {reads}, standbys are {standbys}"
    states, primary_row = host_states(s)
    assert primary_row == cluster.port_of(primary)
    assert states[cluster.port_of(primary)] == "primary"
    assert all(states[p] == "ok" for p in standbys), states
    pools = [r for r in admin_rows(s, "POOLS") if r["database"] == "mydb"]
    assert f"primary (127.0.0.1:{cluster.port_of(primary)})" in [r["endpoint"] for r in pools]
    assert f"database mydb: primary is now 127.0.0.1:{cluster.port_of(primary)} (was none)" \
        in s.log_text()


def test_split_off_spreads_connections_over_the_hosts(sluice, cluster):
    """read_write_split off: PgBouncer's load_balance_hosts. round-robin (the
    default) takes the hosts in turn for new connections; disable stays on
    the first until a connection to it fails. No host is checked."""
    order = ("primary", "replica1")
    config = hosts_config(cluster, order, split="off", pool_mode="session")
    s = sluice(config)
    ports = set()
    conns = [s.connect() for _ in range(4)]
    try:
        for conn in conns:
            ports.add(conn.execute("SELECT inet_server_port()").fetchone()[0])
    finally:
        for conn in conns:
            conn.close()
    assert ports == {cluster.port_of(n) for n in order}

    config["databases"]["mydb"] += " load_balance_hosts=disable"
    s = sluice(config)
    conns = [s.connect() for _ in range(3)]
    try:
        ports = {conn.execute("SELECT inet_server_port()").fetchone()[0] for conn in conns}
    finally:
        for conn in conns:
            conn.close()
    assert ports == {cluster.port_of("primary")}
    databases = {r["name"]: r for r in admin_rows(s, "DATABASES")}
    assert databases["mydb"]["load_balance_hosts"] == "disable"
    assert databases["mydb"]["host"] == "127.0.0.1,127.0.0.1"


class Writer(threading.Thread):
    """Writes through sluice in a loop on a connection of its own (one closed
    by an error, e.g. query_wait_timeout, is opened again), and records every
    outcome: (time issued, time done, port or None, error text or None)."""

    def __init__(self, s):
        super().__init__(daemon=True)
        self.s = s
        self.stop = threading.Event()
        self.results = []
        self.lock = threading.Lock()

    def run(self):
        conn = None
        i = 0
        while not self.stop.is_set():
            i += 1
            start = time.monotonic()
            try:
                if conn is None:
                    conn = self.s.connect()
                port, error = write(conn, i), None
            except psycopg.Error as e:
                port, error = None, str(e)
                if conn is not None:
                    conn.close()
                conn = None
            with self.lock:
                self.results.append((start, time.monotonic(), port, error))
            if error:
                time.sleep(0.05)
        if conn is not None:
            conn.close()

    def outcomes(self):
        with self.lock:
            return list(self.results)


def test_failover_then_switchover(sluice, cluster):
    """The primary stops; writes wait, then fail with a clear error after
    query_wait_timeout; a replica is promoted: within a few check intervals
    writes run there, without a reload. No write ever runs on a node in
    recovery. Then the old primary comes back as a replica of the new one:
    it takes reads, never writes."""
    old = primary_of(cluster)
    new, other = [n for n in NODES if n != old]
    old_port, new_port, other_port = (cluster.port_of(n) for n in (old, new, other))
    s = sluice(hosts_config(cluster, (old, new, other)))
    wait_for_primary(s, old_port)

    before = Writer(s)
    before.start()
    time.sleep(0.5)
    cluster.stop_node(old, "fast")
    stopped = time.monotonic()
    before.stop.set()
    before.join(10)
    # The writes issued once the primary was down: from now on each either
    # succeeds on the new primary or fails with sluice's error.
    writers = [Writer(s) for _ in range(3)]
    for w in writers:
        w.start()
    wait_until(lambda: "database mydb: no primary: 127.0.0.1:%d" % old_port in s.log_text(), 10,
               "sluice to see the primary go")
    time.sleep(QUERY_WAIT_TIMEOUT + 0.5)  # long enough for some writes to time out
    cluster.promote(new)
    promoted = time.monotonic()
    wait_until(lambda: any(p == new_port for w in writers for _, _, p, _ in w.outcomes()), 10,
               "a write on the promoted node")
    first_on_new = min(t1 for w in writers for _, t1, p, _ in w.outcomes() if p == new_port)
    time.sleep(1)
    for w in writers:
        w.stop.set()
    for w in writers:
        w.join(10)

    # Before the stop: the old primary (a write cut by the shutdown may fail
    # with the server's own error, one issued as it went may wait for the
    # new primary).
    for _, _, port, error in before.outcomes():
        assert port in (old_port, new_port) or error, (port, error)
    during = [r for w in writers for r in w.outcomes()]
    ok = [r for r in during if r[2] is not None]
    failed = [r for r in during if r[3] is not None]
    assert ok and failed, "expected writes that waited and failed, and writes on the new primary"
    for start, _, port, _ in ok:
        assert port == new_port, f"a write ran on port {port}"
    for start, done, _, error in failed:
        assert "has no primary now" in error and "query_wait_timeout" in error, error
        assert done - start >= QUERY_WAIT_TIMEOUT - 0.1, (done - start, error)
        assert start < promoted, "a write issued after the promotion failed"
    for _, _, _, error in before.outcomes() + during:
        assert not error or "read-only transaction" not in error, error
    # Followed within a few check intervals of the promotion, no reload.
    assert first_on_new - promoted < 10 * CHECK_INTERVAL + 1, first_on_new - promoted
    assert stopped < promoted
    log = s.log_text()
    assert f"database mydb: primary is now 127.0.0.1:{new_port} (was 127.0.0.1:{old_port})" in log

    # Every write that succeeded is on the new primary (those on the old one
    # reached it before the shutdown ended).
    with cluster.connect(port=new_port) as conn:
        rows = conn.execute("SELECT count(*) FROM failover_t").fetchone()[0]
    assert rows >= len([r for r in before.outcomes() if r[2]]) + len(ok)

    states, primary_row = host_states(s)
    assert primary_row == new_port
    assert states[new_port] == "primary"
    assert states[old_port] in ("banned", "down"), states
    assert states[other_port] == "ok", states  # still a standby (of the stopped node)
    pools = [r["endpoint"] for r in admin_rows(s, "POOLS") if r["database"] == "mydb"]
    assert f"primary (127.0.0.1:{new_port})" in pools

    # Switchover's end: the old primary back, in recovery, streaming from the
    # new one. It takes reads once its ban is over, and never a write.
    cluster.follow(old, new)
    assert cluster.in_recovery(old)
    wait_until(lambda: host_states(s)[0][old_port] == "ok", 15, "the old primary to take reads")
    with s.connect() as conn:
        for i in range(20):
            assert write(conn, i) == new_port
        reads = {conn.execute("SELECT inet_server_port()").fetchone()[0] for _ in range(30)}
    assert old_port in reads, reads
    assert new_port not in reads
    assert host_states(s)[1] == new_port


def test_a_restarted_primary_is_found_again(sluice, cluster):
    """The primary restarts (no failover): writes pause while it is down and
    go to it again within a few check intervals of its start."""
    primary = primary_of(cluster)
    port = cluster.port_of(primary)
    s = sluice(hosts_config(cluster, NODES))
    wait_for_primary(s, port)
    cluster.stop_node(primary, "fast")
    cluster.start_node(primary)
    started = time.monotonic()
    wait_for_primary(s, port)
    assert time.monotonic() - started < 10 * CHECK_INTERVAL + 1
    log = s.log_text()
    assert f"database mydb: no primary: 127.0.0.1:{port} shutdown" in log
    assert f"database mydb: primary is now 127.0.0.1:{port} (was 127.0.0.1:{port})" in log


def test_a_promoted_replica_is_never_written_to(sluice, cluster):
    """A replicas= node out of recovery is reported (log, SHOW REPLICAS
    "promoted") and takes neither reads nor writes: it is not in host=."""
    primary = primary_of(cluster)
    standby = next(n for n, rec in roles(cluster).items() if rec)
    config = hosts_config(cluster, (primary,))
    config["databases"]["mydb"] += f" replicas=127.0.0.1:{cluster.port_of(standby)}"
    s = sluice(config)
    with s.connect() as conn:
        assert write(conn) == cluster.port_of(primary)
        wait_until(lambda: conn.execute("SELECT inet_server_port()").fetchone()[0]
                   == cluster.port_of(standby), 10, "a read on the replica")
        cluster.promote(standby)
        rows = lambda: [r for r in admin_rows(s, "REPLICAS")
                        if r["port"] == cluster.port_of(standby)]
        wait_until(lambda: rows()[0]["state"] == "promoted", 10, "the replica to be promoted")
        for i in range(10):
            assert write(conn, i) == cluster.port_of(primary)
            assert conn.execute("SELECT inet_server_port()").fetchone()[0] == \
                cluster.port_of(primary)
    assert f"replica 127.0.0.1:{cluster.port_of(standby)} of database mydb is not in recovery" \
        in s.log_text()
