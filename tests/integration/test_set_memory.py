"""A client that SETs a new value in every transaction (`SET app.tenant =
'...'` per request, common under transaction pooling) does not grow sluice's
memory: the texts of old settings go with their last holder (params.c).

Like test_idle_memory.py, this measures the release build (sanitizers keep
freed memory in quarantine), whatever SLUICE_BIN is."""

import struct

import pytest

from sluice_fixture import IS_PGBOUNCER, REPO, RawConn, message, query_message, rss_kib

RELEASE_BIN = REPO / "build/release/sluice"
BATCH = 1000
WARMUP = 20_000
TOTAL = 200_000
# A leak of the old texts costs about 100 bytes per SET: 18 MB over the
# measured 180,000. Allocator noise is well under the limit.
LIMIT_KIB = 2048
# The application_name and statement tests: fewer texts, a tighter limit.
SHORT_TOTAL = 80_000
SHORT_LIMIT_KIB = 1024


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


def run_appnames(conn, start, count):
    """application_name is tracked (ParameterStatus, restored on each
    server): its values are interned texts, like SET values."""
    for base in range(start, start + count, BATCH):
        conn.send(b"".join(query_message(f"SET application_name = 'app-{i}'")
                           for i in range(base, base + BATCH)))
        for _ in range(BATCH):
            _, error, status = conn.read_result()
            assert error is None, error
            assert status == "I"


def extended_batch(name, sql):
    """Parse (named, or unnamed: name b"") + Bind + Execute (+ Close of a
    named statement) + Sync."""
    msgs = [message(b"P", name + b"\0" + sql.encode() + b"\0" + struct.pack("!h", 0)),
            message(b"B", b"\0" + name + b"\0" + struct.pack("!hhh", 0, 0, 0)),
            message(b"E", b"\0" + struct.pack("!i", 0))]
    if name:
        msgs.append(message(b"C", b"S" + name + b"\0"))
    return b"".join(msgs) + message(b"S")


def run_prepared(conn, start, count):
    """Distinct statement texts: half named (prepared, run, closed), half
    unnamed."""
    for base in range(start, start + count, BATCH):
        conn.send(b"".join(extended_batch(b"s1" if i % 2 else b"", f"SELECT {i} AS n")
                           for i in range(base, base + BATCH)))
        for i in range(base, base + BATCH):
            rows, error, status = conn.read_result()
            assert error is None, error
            assert rows == [[str(i)]] and status == "I", (rows, status)


@pytest.mark.skipif(IS_PGBOUNCER, reason="a claim about sluice's memory")
@pytest.mark.skipif(not RELEASE_BIN.exists(),
                    reason=f"{RELEASE_BIN} not built (run `make`)")
@pytest.mark.timeout(300)
@pytest.mark.parametrize("what", ["application_name", "prepared"])
def test_distinct_appnames_and_statements_keep_memory_flat(sluice, what):
    """Issue 17 item 4: distinct application_names and prepared statement
    texts, as fast as one connection sends them (several thousand a second),
    do not grow memory: application_name values are interned with a
    reference count (params.c), protocol-level statements are tracked per
    server up to max_prepared_statements (LRU) and per pool up to a bound,
    and a client's own go with its Close. Same measure as above, over
    60,000 texts each (make test's budget): a leak of the texts (40 bytes
    and more each) would be over 2.4 MB, against a limit of 1 MiB."""
    s = sluice({"pgbouncer": {"pool_mode": "transaction", "default_pool_size": 2,
                              "max_prepared_statements": 100}},
               binary=RELEASE_BIN)
    run = run_appnames if what == "application_name" else run_prepared
    with RawConn(s.port, timeout=60) as conn:
        conn.login()
        run(conn, 0, WARMUP)
        before = rss_kib(s.pid)
        run(conn, WARMUP, SHORT_TOTAL - WARMUP)
        after = rss_kib(s.pid)
        if what == "application_name":
            assert conn.query("SHOW application_name") == [[f"app-{SHORT_TOTAL - 1}"]]
    print(f"{what}: RSS {before} KiB after {WARMUP}, {after} KiB after {SHORT_TOTAL}")
    assert after - before <= SHORT_LIMIT_KIB, (
        f"resident memory grew by {after - before} KiB over {SHORT_TOTAL - WARMUP} distinct "
        f"{what} texts ({before} -> {after} KiB)")
