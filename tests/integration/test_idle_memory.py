"""An idle, logged-in client costs sluice at most 1 KiB of resident memory.

Sanitizer builds multiply memory use (shadow memory, redzones, quarantine),
so this test always runs the release build, build/release/sluice (`make`
builds it; `make integration` does too), with the suite's workers setting,
whatever SLUICE_BIN is; it skips if that binary is missing and when the
suite runs against PgBouncer. bench/idle_memory.py prints the same figure
for sluice and PgBouncer side by side."""

import os

import pytest

from sluice_fixture import IS_PGBOUNCER, REPO, idle_client_cost, raise_nofile_limit

RELEASE_BIN = REPO / "build/release/sluice"
CLIENTS = int(os.environ.get("SLUICE_IDLE_CLIENTS", "10000"))
LIMIT_BYTES = 1024


@pytest.mark.skipif(IS_PGBOUNCER, reason="a claim about sluice's memory")
@pytest.mark.skipif(not RELEASE_BIN.exists(),
                    reason=f"{RELEASE_BIN} not built (run `make`): sanitizer builds "
                           "inflate memory, so only the release build is measured")
@pytest.mark.timeout(180)
def test_idle_client_costs_at_most_1kib(sluice):
    raise_nofile_limit(20000)
    s = sluice({"pgbouncer": {"max_client_conn": CLIENTS + 100}}, binary=RELEASE_BIN)
    base, after, per_client = idle_client_cost(s.port, s.pid, CLIENTS)
    print(f"sluice workers={s.workers}: baseline {base} KiB, {after} KiB with {CLIENTS} "
          f"idle clients: {per_client:.0f} bytes per client")
    assert per_client <= LIMIT_BYTES, (
        f"{per_client:.0f} bytes per idle client (baseline {base} KiB, {after} KiB after "
        f"{CLIENTS} clients), limit {LIMIT_BYTES}")
