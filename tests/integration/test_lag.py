"""Replication lag measured from WAL positions (lag_monitor.c): each
replica's lag in bytes and time in SHOW REPLICAS and /metrics, and a
replica past replica_max_lag_bytes / replica_max_lag gets no reads until it
catches up. Replay is paused on a replica (pg_wal_replay_pause()), as
Pgpool-II's regression tests do, so the lag is certain."""

import pytest

from sluice_fixture import IS_PGBOUNCER, wait_until
from test_metrics import scrape, value
from test_routing import admin, port_of, split_config

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="sluice's lag monitor")


def replicas(s):
    with admin(s) as a:
        cur = a.execute("SHOW REPLICAS")
        names = [d.name for d in cur.description]
        return {r["port"]: r for r in (dict(zip(names, row)) for row in cur.fetchall())}


def write_wal(cluster, rows=2000):
    with cluster.primary_conn() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS lag_t (x int, pad text)")
        conn.execute("INSERT INTO lag_t SELECT g, repeat('x', 100) FROM generate_series(1, %s) g",
                     (rows,))


@pytest.fixture
def paused(cluster):
    """Replay paused on replica1 for the test; the table gone after it."""
    try:
        with cluster.replay_paused(cluster.replica_ports[0]) as port:
            yield port
    finally:
        with cluster.primary_conn() as conn:
            conn.execute("DROP TABLE IF EXISTS lag_t")


def test_lag_is_shown_and_zero_when_caught_up(sluice, cluster):
    s = sluice(split_config(metrics_listen="127.0.0.1:{metrics_port}"))
    with s.connect() as conn:
        port_of(conn)  # a first pool: the monitor logs in as its user
    wait_until(lambda: all(r["lag_bytes"] is not None for r in replicas(s).values()
                           if r["role"] == "replica"), 10, "lag measured")
    write_wal(cluster, 10)
    wait_until(lambda: all(r["lag_bytes"] == 0 and r["lag_ms"] == 0
                           for r in replicas(s).values() if r["role"] == "replica"),
               10, "both replicas caught up")
    # /metrics has both series per replica (the primary may have written a
    # little since: a few kB at most, not the 0 of a moment ago).
    samples = scrape(s.metrics_port)[1]
    for port in cluster.replica_ports:
        assert 0 <= value(samples, "sluice_replica_lag_bytes", database="mydb",
                          endpoint=f"127.0.0.1:{port}") < 1 << 20
        assert 0 <= value(samples, "sluice_replica_lag_seconds", database="mydb",
                          endpoint=f"127.0.0.1:{port}") < 5
    with cluster.primary_conn() as conn:
        conn.execute("DROP TABLE IF EXISTS lag_t")


def measured(s, port):
    row = replicas(s)[port]
    return row if row["lag_bytes"] is not None else None


@pytest.mark.parametrize("limit", ["replica_max_lag_bytes", "replica_max_lag"])
def test_a_lagging_replica_gets_no_reads_until_it_catches_up(sluice, cluster, paused, limit):
    value_of = {"replica_max_lag_bytes": "16kB", "replica_max_lag": "0.5"}
    s = sluice(split_config(lag_check_interval="0.05", **{limit: value_of[limit]}))
    with s.connect() as conn:
        # Until a replica's lag is measured it takes no reads (it may be
        # far behind): the first reads may go to the primary.
        wait_until(lambda: port_of(conn) == paused, 10, "a read on replica1")
        write_wal(cluster)
        wait_until(lambda: (measured(s, paused) or {}).get("state") == "lagging"
                   and measured(s, paused)["lag_bytes"] > 16384, 10, "replica1 lagging")
        ports = {port_of(conn) for _ in range(20)}
        assert paused not in ports  # replica2 or, while it catches up too, the primary
        with cluster.connect(port=paused) as r:
            r.autocommit = True
            r.execute("SELECT pg_wal_replay_resume()")
        wait_until(lambda: (measured(s, paused) or {}).get("state") == "ok", 10,
                   "replica1 caught up")
        if limit == "replica_max_lag_bytes":
            assert measured(s, paused)["lag_bytes"] <= 16384
        wait_until(lambda: port_of(conn) == paused, 10, "reads on replica1 again")
    assert "is lagging" in s.log_text() and "caught up" in s.log_text()


def test_no_limit_no_lagging(sluice, cluster, paused):
    """Without replica_max_lag(_bytes) a replica behind still takes reads
    (the lag is shown, not acted on)."""
    s = sluice(split_config(lag_check_interval="0.05"))
    with s.connect() as conn:
        wait_until(lambda: port_of(conn) == paused, 10, "a read on replica1")
        write_wal(cluster)
        wait_until(lambda: (replicas(s)[paused]["lag_bytes"] or 0) > 16384, 10, "replica1 behind")
        assert replicas(s)[paused]["state"] == "ok"
        wait_until(lambda: port_of(conn) == paused, 10, "reads still on replica1")


def test_login_while_the_monitor_connects(sluice, cluster):
    """A pool's first login waits for a server's parameters; when the lag
    monitor's own connection to the primary is the one in progress (the
    pool then opens none for the login), its login must welcome the
    waiting client too. The primary is reached through a slow link, and
    the client answers the password challenge late, so that the monitor
    (started by the pool's creation) is mid-login when the client is in."""
    from chaos_lib import FaultProxy
    from sluice_fixture import RawConn, startup_packet
    proxy = FaultProxy(cluster.primary_port)
    try:
        proxy.set_latency(0.3)
        config = split_config(lag_check_interval="0.05", read_your_writes="user")
        config["databases"]["mydb"] = (
            f"host=127.0.0.1 port={proxy.port} dbname=mydb "
            "replicas=127.0.0.1:{replica1_port},127.0.0.1:{replica2_port}")
        s = sluice(config)
        c = RawConn(s.port, timeout=10)
        c.send(startup_packet("md5_user"))
        # The md5 challenge waits unanswered until the monitor connects.
        wait_until(lambda: proxy.accepted > 0, 5, "the monitor to connect to the primary")
        c.finish_login("md5_user")
        assert c.query("SELECT 1") == [["1"]]
    finally:
        proxy.stop()
