"""The chaos suite (issue 17): 50 clients doing verified work through sluice
(transaction pooling) while the primary is killed -9, while a proxy between
sluice and the primary cuts connections mid-message, and while it adds
latency and blackholes the primary for longer than server_connect_timeout.
Each scenario checks (chaos_lib.run_checked()): nothing acknowledged as
committed is lost, nothing reported failed was committed, a write that
committed although its client heard an error was told 08007 (the outcome
is unknown), every answer carried its own query's nonce,
transaction and client (mixed = 0), reads saw the client's own acknowledged
writes, no client hung, and sluice serves again once the fault is healed.

CHAOS_SECONDS (12 here, so that the three take about a minute in make
integration; `make chaos`: 600) is each scenario's fault time; CHAOS_CLIENTS
(50) its clients. CHAOS_REPORT: a file to append each scenario's counts to
(one JSON object a line; docs/reliability.md quotes them)."""

import random
import time

import pytest

from chaos_lib import (CHAOS_SECONDS, CONNECT_TIMEOUT, FaultProxy, chaos_config, kill9_node,
                       run_checked, wait_primary_up)
from sluice_fixture import IS_PGBOUNCER

TIMEOUT = CHAOS_SECONDS + 300

pytestmark = pytest.mark.timeout(TIMEOUT)


@pytest.fixture
def proxy(cluster):
    p = FaultProxy(cluster.primary_port)
    yield p
    p.stop()


@pytest.mark.skipif(IS_PGBOUNCER, reason="sluice's own suite")
def test_chaos_primary_killed(sluice, cluster, pool_user):
    """(a) The primary's postmaster and all its backends SIGKILLed while
    transactions are in flight, restarted (crash recovery) after up to a
    second, again and again."""
    s = sluice(chaos_config(cluster.primary_port))
    rng = random.Random(1)

    def faults(deadline):
        kills = 0
        try:
            while time.monotonic() < deadline:
                time.sleep(rng.uniform(2, 5))
                kill9_node(cluster, "primary")
                kills += 1
                time.sleep(rng.uniform(0.1, 1.0))
                cluster.start_node("primary")
                wait_primary_up(cluster)
        finally:
            cluster.start_node("primary")
            wait_primary_up(cluster)
            # The replicas stream again before the next test uses them.
            cluster.wait_replayed(timeout=60)
        return {"kills": kills}

    run_checked("primary_killed", s, cluster, pool_user, faults)


@pytest.mark.skipif(IS_PGBOUNCER, reason="sluice's own suite")
def test_chaos_cut_mid_message(sluice, cluster, pool_user, proxy):
    """(b) Server connections cut by the proxy after a random 0..300 more
    bytes (one way, the other or whichever comes first): most cuts land in
    the middle of a message, mid-transaction."""
    s = sluice(chaos_config(proxy.port))
    rng = random.Random(2)

    def faults(deadline):
        try:
            while time.monotonic() < deadline:
                time.sleep(rng.uniform(0.2, 1.0))
                proxy.cut(rng.randint(0, 300), count=rng.randint(1, 3),
                          direction=rng.choice([None, "down", "up"]))
        finally:
            proxy.heal()
        return {"cuts": proxy.cuts, "server_connections": proxy.accepted}

    run_checked("cut_mid_message", s, cluster, pool_user, faults)


@pytest.mark.skipif(IS_PGBOUNCER, reason="sluice's own suite")
def test_chaos_latency_and_blackhole(sluice, cluster, pool_user, proxy):
    """(c) Latency spikes (50..400 ms a chunk each way for 2 s), a bandwidth
    cut (2 to 20 kB/s per link each way for 2 s) and a blackhole (nothing
    forwarded, no FIN, no RST, new connections held unanswered) for 2.5 x
    server_connect_timeout, healed, in turn. query_timeout = 3 ends the
    statements stuck in the blackhole."""
    s = sluice(chaos_config(proxy.port, query_timeout=3))
    rng = random.Random(3)

    def faults(deadline):
        spikes = cuts = blackholes = 0
        try:
            while time.monotonic() < deadline:
                proxy.set_latency(rng.uniform(0.05, 0.4))
                spikes += 1
                time.sleep(2)
                proxy.heal()
                time.sleep(rng.uniform(1, 2))
                proxy.set_bandwidth(rng.randint(2_000, 20_000))
                cuts += 1
                time.sleep(2)
                proxy.heal()
                time.sleep(rng.uniform(1, 2))
                proxy.blackhole()
                blackholes += 1
                time.sleep(CONNECT_TIMEOUT * 2.5)
                proxy.heal()
                time.sleep(rng.uniform(2, 3))
        finally:
            proxy.heal()
        return {"latency_spikes": spikes, "bandwidth_cuts": cuts, "blackholes": blackholes,
                "server_connections": proxy.accepted}

    run_checked("latency_and_blackhole", s, cluster, pool_user, faults)
