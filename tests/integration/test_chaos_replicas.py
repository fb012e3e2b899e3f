"""The chaos suite, replicas (issue 17): with the read/write split on and
read_your_writes = user, a replica killed -9 and restarted, a replica
blackholed, and a replica promoted (pg_promote()) while a writer of its own
writes into it directly, as an application elsewhere would once it is a
primary. CHAOS_CLIENTS (50) clients do verified work throughout
(chaos_lib.Workload and its checker): besides lost = mixed = 0, every read
counted the client's own rows within [acknowledged, acknowledged + unknown]
(bad_reads = 0), so a read sent to a replica that missed the client's
writes, or to the promoted node that has rows no client wrote, fails it.

These kill and promote replicas, so they run on a cluster of their own
(ThrowawayCluster, deleted at the end of the module); the promotion comes
last. make test does not run them (CHAOS_ALL=1, set by `make chaos`, does):
each costs CHAOS_SECONDS plus about 10 s, and the cluster 10 s more."""

import os
import random
import threading
import time

import psycopg
import pytest

from chaos_lib import (CHAOS_SECONDS, CONNECT_TIMEOUT, TABLE, FaultProxy, chaos_config, kill9_node,
                       run_checked)
from sluice_fixture import IS_PGBOUNCER, ThrowawayCluster, wait_until


pytestmark = [pytest.mark.skipif(IS_PGBOUNCER, reason="sluice's own suite"),
              pytest.mark.skipif(os.environ.get("CHAOS_ALL") != "1",
                                 reason="make chaos (CHAOS_ALL=1) runs it"),
              pytest.mark.timeout(CHAOS_SECONDS + 300)]


@pytest.fixture(scope="module")
def cluster():
    """Overrides conftest's shared cluster for this module."""
    c = ThrowawayCluster(prefix="sluice-chaos-replicas-")
    try:
        c.start()
        yield c
    finally:
        c.destroy()


@pytest.fixture(scope="module")
def pool_user(cluster):
    name = f"chaos_user_{os.getpid()}"
    cluster.create_role(name, name + "_pw")
    yield name


def replica_reads(report, ports):
    return sum(n for p, n in report["read_ports"].items() if int(p) in ports)


def restart_replica(cluster, name):
    cluster.start_node(name)
    with cluster.connect(port=cluster.port_of(name)) as conn:
        wait_until(lambda: conn.execute("SELECT pg_is_in_recovery()").fetchone()[0], 30,
                   f"{name} in recovery")


def test_chaos_replica_killed(sluice, cluster, pool_user):
    """Every 2 to 5 s one replica (either) gets SIGKILL, postmaster and
    backends at once, with reads in flight on it, and starts again after
    0.1 to 1 s. Reads go on on the other replica and the primary."""
    s = sluice(chaos_config(cluster.primary_port, replica_ports=cluster.replica_ports))
    rng = random.Random(21)

    def faults(deadline):
        kills = 0
        try:
            while time.monotonic() < deadline:
                time.sleep(rng.uniform(2, 5))
                name = rng.choice(["replica1", "replica2"])
                kill9_node(cluster, name)
                kills += 1
                time.sleep(rng.uniform(0.1, 1.0))
                restart_replica(cluster, name)
        finally:
            for name in ("replica1", "replica2"):
                cluster.start_node(name)  # (nothing if it runs)
            cluster.wait_replayed(timeout=60)
        return {"kills": kills}

    report, _ = run_checked("replica_killed", s, cluster, pool_user, faults)
    assert report["kills"] > 0
    assert replica_reads(report, cluster.replica_ports) > 0, report["read_ports"]


def test_chaos_replica_blackholed(sluice, cluster, pool_user):
    """Both replicas behind proxies. In turn, one is blackholed (nothing
    forwarded, no FIN, no RST, new connections unanswered) for 2.5 x
    server_connect_timeout, then healed for 2 to 3 s. query_timeout = 3
    ends the reads stuck in it; the lag monitor's probes to it hang too."""
    proxies = [FaultProxy(p) for p in cluster.replica_ports]
    s = sluice(chaos_config(cluster.primary_port, replica_ports=[p.port for p in proxies],
                               query_timeout=3))
    rng = random.Random(22)

    def faults(deadline):
        blackholes = 0
        try:
            while time.monotonic() < deadline:
                p = rng.choice(proxies)
                p.blackhole()
                blackholes += 1
                time.sleep(CONNECT_TIMEOUT * 2.5)
                p.heal()
                time.sleep(rng.uniform(2, 3))
        finally:
            for p in proxies:
                p.heal()
        return {"blackholes": blackholes,
                "server_connections": sum(p.accepted for p in proxies)}

    try:
        report, _ = run_checked("replica_blackholed", s, cluster, pool_user, faults)
    finally:
        for p in proxies:
            p.stop()
    assert report["blackholes"] > 0
    # inet_server_port(): the replicas' own ports, behind the proxies
    assert replica_reads(report, cluster.replica_ports) > 0, report["read_ports"]


def test_chaos_replica_promoted(sluice, cluster, pool_user):
    """After CHAOS_SECONDS / 3 of load, replica1 is promoted (pg_promote()):
    it leaves recovery on a timeline of its own and stops replaying the
    primary. From then on a writer of the test's writes into it directly,
    rows of this run's clients that nobody wrote through sluice, as an
    application elsewhere would. sluice must stop reading from it (SHOW
    REPLICAS: promoted) and never write to it: a read there would count rows
    the client never wrote or miss its newer ones (bad_reads), a write there
    would be missing from the primary (lost). Asserts, besides the checker:
    sluice saw the promotion; once it had (plus 1 s for reads in flight),
    no read went to the promoted node; every row of the run on the promoted
    node that the rogue writer did not write is on the primary too (no write
    of sluice's went there); the other replica kept taking reads."""
    promoted_port, other_port = cluster.replica_ports
    s = sluice(chaos_config(cluster.primary_port, replica_ports=cluster.replica_ports))
    stop_rogue = threading.Event()
    state = {"rogue_rows": 0}

    def rogue_writer(run):
        with cluster.connect(port=promoted_port) as conn:
            while not stop_rogue.wait(0.02):
                n = state["rogue_rows"]
                conn.execute(f"INSERT INTO {TABLE} (id, run, client, seq) VALUES (%s, %s, %s, 0)",
                             (f"rogue-{n}", run, n % 50))
                state["rogue_rows"] += 1

    def reads_on(port):
        return sum(c.read_ports.get(port, 0) for c in state["w"].clients)

    def faults(deadline):
        time.sleep(max(1.0, CHAOS_SECONDS / 3))
        with cluster.connect(port=promoted_port) as conn:
            conn.execute("SELECT pg_promote(true, 30)")
        promoted = time.monotonic()
        t = threading.Thread(target=rogue_writer, args=(state["w"].run,), daemon=True)
        t.start()
        try:
            wait_until(lambda: any(r["state"] == "promoted" for r in replica_rows(s)
                                   if r["port"] == promoted_port), 15,
                       "sluice to see the promotion")
            seen = time.monotonic() - promoted
            time.sleep(1)  # reads routed before it saw it may still answer
            promoted_reads = reads_on(promoted_port)
            other_reads = reads_on(other_port)
            while time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            stop_rogue.set()
            t.join(10)
        return {"promotion_seen_after_s": round(seen, 2), "rogue_rows": state["rogue_rows"],
                "reads_on_promoted_after": reads_on(promoted_port) - promoted_reads,
                "reads_on_other_after": reads_on(other_port) - other_reads}

    report, w = run_checked("replica_promoted", s, cluster, pool_user, faults,
                            on_start=lambda w: state.update(w=w))
    assert report["rogue_rows"] > 0
    assert report["reads_on_promoted_after"] == 0, report
    assert report["reads_on_other_after"] > 0, report
    with cluster.connect(port=promoted_port) as conn:
        there = {r[0] for r in conn.execute(
            f"SELECT id FROM {TABLE} WHERE run = %s AND id NOT LIKE 'rogue-%%'",
            (w.run,)).fetchall()}
    with cluster.primary_conn() as conn:
        on_primary = {r[0] for r in conn.execute(
            f"SELECT id FROM {TABLE} WHERE run = %s", (w.run,)).fetchall()}
    assert there <= on_primary, f"written to the promoted node: {sorted(there - on_primary)[:5]}"
    assert log_says_promoted(s, promoted_port)


def log_says_promoted(s, port):
    return f"replica 127.0.0.1:{port} of database mydb is not in recovery" in s.log_text()


def replica_rows(s):
    with psycopg.connect(s.dsn(user="sluice", dbname="pgbouncer"), autocommit=True) as conn:
        cur = conn.execute("SHOW REPLICAS")
        names = [d.name for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]
