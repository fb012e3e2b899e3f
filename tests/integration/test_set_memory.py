"""A client that SETs a new value in every transaction (`SET app.tenant =
'...'` per request, common under transaction pooling) does not grow sluice's
memory: the texts of old settings go with their last holder (params.c).

Like test_idle_memory.py, this measures the release build (sanitizers keep
freed memory in quarantine), whatever SLUICE_BIN is."""

import pytest

from sluice_fixture import IS_PGBOUNCER, REPO, RawConn, query_message, rss_kib

RELEASE_BIN = REPO / "build/release/sluice"
BATCH = 1000
WARMUP = 20_000
TOTAL = 200_000
# A leak of the old texts costs about 100 bytes per SET: 18 MB over the
# measured 180,000. Allocator noise is well under the limit.
LIMIT_KIB = 2048


def run_sets(conn, start, count):
    for base in range(start, start + count, BATCH):
        conn.send(b"".join(query_message(f"SET app.tenant = 't{i}'")
                           for i in range(base, base + BATCH)))
        for _ in range(BATCH):
            _, error, status = conn.read_result()
            assert error is None, error
            assert status == "I"


@pytest.mark.skipif(IS_PGBOUNCER, reason="a claim about sluice's memory")
@pytest.mark.skipif(not RELEASE_BIN.exists(),
                    reason=f"{RELEASE_BIN} not built (run `make`)")
@pytest.mark.timeout(300)
def test_distinct_sets_keep_memory_flat(sluice):
    s = sluice({"pgbouncer": {"pool_mode": "transaction", "default_pool_size": 2}},
               binary=RELEASE_BIN)
    with RawConn(s.port, timeout=60) as conn:
        conn.login()
        run_sets(conn, 0, WARMUP)
        before = rss_kib(s.pid)
        run_sets(conn, WARMUP, TOTAL - WARMUP)
        after = rss_kib(s.pid)
        # The setting is still the client's, on whichever server it gets.
        assert conn.query("SHOW app.tenant") == [[f"t{TOTAL - 1}"]]
    print(f"RSS {before} KiB after {WARMUP} SETs, {after} KiB after {TOTAL}")
    assert after - before <= LIMIT_KIB, (
        f"resident memory grew by {after - before} KiB over {TOTAL - WARMUP} distinct SETs "
        f"({before} -> {after} KiB)")
