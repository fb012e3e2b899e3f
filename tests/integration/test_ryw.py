"""Read-your-writes (read_your_writes, ryw.c): with replay paused on one
replica (pg_wal_replay_pause(), as Pgpool-II's regression tests do), a read
after a write never sees the old data in the scopes that promise it, and
does under `off` (so the test can fail)."""

import threading

import pytest

from sluice_fixture import IS_PGBOUNCER, wait_until
from test_routing import SPLIT

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="sluice's read-your-writes")


def config(mode, **general):
    c = {"databases": dict(SPLIT["databases"]), "pgbouncer": dict(SPLIT["pgbouncer"])}
    c["pgbouncer"].update(read_your_writes=mode, replica_load_balance="round_robin",
                          lag_check_interval="0.05", default_pool_size="10",
                          **{k: str(v) for k, v in general.items()})
    return c


@pytest.fixture(scope="module")
def ryw_table(cluster):
    """The table, created once and replayed by both replicas (dropping and
    creating it per test would race the replay with the pause)."""
    with cluster.primary_conn() as conn:
        conn.execute("DROP TABLE IF EXISTS ryw_t")
        conn.execute("CREATE TABLE ryw_t (k int, v int)")
        conn.execute("GRANT ALL ON ryw_t TO PUBLIC")
    cluster.wait_replayed()
    yield
    with cluster.primary_conn() as conn:
        conn.execute("DROP TABLE IF EXISTS ryw_t")


@pytest.fixture
def paused(cluster, ryw_table):
    """ryw_t empty (replayed everywhere), then replay paused on replica1
    for the test, resumed after it."""
    with cluster.primary_conn() as conn:
        conn.execute("DELETE FROM ryw_t")
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
