"""Workload insights: per-fingerprint statistics in SHOW QUERIES and
/metrics, as a user of the console and of Prometheus sees them."""

import statistics
import time

import psycopg
import pytest

from sluice_fixture import IS_PGBOUNCER, wait_until
from test_metrics import scrape
from test_routing import SPLIT, admin

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="sluice's insights")


def queries(s, tail=""):
    with admin(s) as a:
        cur = a.execute("SHOW QUERIES" + tail)
        names = [d.name for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]


def named(name, value="1"):
    """A statement whose fingerprint is its own (libpg_query's fingerprint
    ignores aliases and constants, not column references)."""
    return f"SELECT {name} FROM (VALUES ({value})) v({name})"


def row_of(s, needle):
    rows = [r for r in queries(s) if needle in r["query"]]
    assert len(rows) == 1, [r["query"] for r in queries(s)]
    return rows[0]


def test_one_fingerprint_for_constants_and_in_lists(sluice):
    """Constants and IN lists of any length make one row, whose text shows
    $n, never a value; calls, rows and errors add up."""
    s = sluice({"pgbouncer": {"pool_mode": "transaction"}})
    with s.connect() as conn:
        for i in range(1, 11):
            ids = ", ".join(str(k) for k in range(i))
            conn.execute(f"SELECT n FROM generate_series(1, 10) n WHERE n IN ({ids}) "
                         f"AND 'secret{i}' <> ''").fetchall()
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT n / 0 FROM generate_series(1, 10) n WHERE n IN (1, 2)")
    r = row_of(s, "generate_series($1, $2) n WHERE n IN")
    assert r["calls"] == 10
    assert r["rows"] == sum(range(10))  # i constants 0..i-1: i-1 of them in 1..10
    assert r["errors"] == 0 and r["primary"] == 10
    assert "secret" not in r["query"] and "$" in r["query"]
    assert r["fingerprint"] and len(r["fingerprint"]) == 16
    assert r["first_seen"] and r["last_seen"] and r["first_seen"] <= r["last_seen"]
    bad = row_of(s, "n / $1")
    assert bad["calls"] == 1 and bad["errors"] == 1


def test_percentiles_match_what_the_client_measured(sluice):
    """p50, p95 and p99 against the latencies the client measured itself:
    within 6.25% (the histogram's bound) plus 3 ms (the client's own side
    of each round trip, which the server-side time does not include)."""
    s = sluice({})
    measured = []
    with s.connect() as conn:
        for i in range(100):
            delay = 0.002 + (i % 20) * 0.004  # 2 ms .. 78 ms
            t0 = time.perf_counter()
            conn.execute("SELECT pg_sleep(%s)", (delay,))
            measured.append((time.perf_counter() - t0) * 1e6)
    r = row_of(s, "pg_sleep")
    assert r["calls"] == 100
    measured.sort()
    for q, col in ((0.50, "p50_us"), (0.95, "p95_us"), (0.99, "p99_us")):
        want = measured[min(len(measured) - 1, int(q * len(measured) + 0.999999) - 1)]
        got = r[col]
        assert want * 0.9375 - 3000 <= got <= want * 1.0625 + 3000, (col, got, want)
    assert abs(r["mean_us"] - statistics.mean(measured)) < 0.0625 * statistics.mean(measured) + 3000
    assert r["max_us"] <= max(measured) + 3000


def test_prepared_statements_by_name(sluice):
    """A named prepared statement's executions (Bind by name, no text) count
    under its fingerprint, in transaction pooling too."""
    s = sluice({"pgbouncer": {"pool_mode": "transaction", "max_prepared_statements": "100"}})
    with s.connect(prepare_threshold=0) as conn:
        for i in range(8):
            assert conn.execute("SELECT insights_prep + 1 FROM (VALUES (%s::int)) v(insights_prep)",
                                (i,)).fetchone() == (i + 1,)
    r = row_of(s, "insights_prep")
    assert r["calls"] == 8 and r["rows"] == 8


def test_where_it_ran_primary_replica_cache(sluice, cluster):
    s = sluice({"databases": dict(SPLIT["databases"]),
                "pgbouncer": {**SPLIT["pgbouncer"], "cache": "memory"},
                "cache": {}})
    with s.connect() as conn:
        for _ in range(4):
            conn.execute(named("insights_where_read")).fetchall()
            conn.execute(named("insights_hinted") + " /* sluice:cache ttl=60 */").fetchall()
        with conn.transaction():  # READ COMMITTED, a read first: on a replica
            conn.execute(named("insights_in_xact")).fetchall()
        conn.execute(named("insights_writes", "txid_current()")).fetchall()
    read = row_of(s, "insights_where_read")
    assert read["replica"] == 4 and read["primary"] == 0
    hinted = row_of(s, "insights_hinted")
    assert hinted["calls"] == 4 and hinted["cache_hits"] >= 2, hinted
    assert row_of(s, "insights_in_xact")["replica"] == 1
    writes = row_of(s, "insights_writes")
    assert writes["primary"] == 1 and writes["replica"] == 0


def test_order_limit_and_reset(sluice):
    s = sluice({})
    with s.connect() as conn:
        for _ in range(5):
            conn.execute(named("many_calls"))
        conn.execute(named("slow_one", "pg_sleep(0.05)"))
    by_calls = queries(s, " ORDER BY calls LIMIT 1")
    assert len(by_calls) == 1 and "many_calls" in by_calls[0]["query"]
    by_total = queries(s, " ORDER BY total_time")
    assert "slow_one" in by_total[0]["query"]
    assert "slow_one" in queries(s, " order by p99 limit 1")[0]["query"]
    with admin(s) as a:
        with pytest.raises(psycopg.Error, match="ordered by total_time, calls, mean, p99 or errors"):
            a.execute("SHOW QUERIES ORDER BY nothing")
        with pytest.raises(psycopg.Error, match="LIMIT needs a count"):
            a.execute("SHOW QUERIES LIMIT 0")
        a.execute("INSIGHTS RESET")
    assert queries(s) == []


def test_metrics_top_fingerprints(sluice):
    s = sluice({"pgbouncer": {"metrics_listen": "127.0.0.1:{metrics_port}",
                              "insights_metrics_top": "2"}})
    with s.connect() as conn:
        # The first statement's time holds the server's login: not one of these.
        conn.execute("SELECT 1")
        for i in range(3):
            conn.execute(named(f"top_{i}", f"pg_sleep({0.01 + 0.03 * i:.2f})"))
    samples = scrape(s.metrics_port)[1]
    infos = {dict(k[1])["fingerprint"]: dict(k[1])["query"]
             for k in samples if k[0] == "sluice_query_info"}
    assert len(infos) == 2
    assert sorted("top_2" in q or "top_1" in q for q in infos.values()) == [True, True]
    fp = next(f for f, q in infos.items() if "top_2" in q)
    calls = samples[("sluice_query_calls_total",
                     frozenset({"fingerprint": fp, "where": "primary"}.items()))]
    assert calls == 1
    p99 = samples[("sluice_query_latency_seconds",
                   frozenset({"fingerprint": fp, "quantile": "0.99"}.items()))]
    assert 0.065 <= p99 <= 0.12  # pg_sleep(0.07), and a loaded machine
    assert samples[("sluice_insights_fingerprints", frozenset())] >= 3


def test_memory_bound_under_50000_distinct_queries(sluice):
    s = sluice({"pgbouncer": {"insights_max_queries": "1000",
                              "metrics_listen": "127.0.0.1:{metrics_port}"}})
    with s.connect() as conn:
        with conn.pipeline() as p:
            for i in range(50000):
                conn.execute(named(f"distinct_{i}"), prepare=False)
                p.sync()  # each its own request (a batch is one, up to its Sync)
        conn.execute(named("last_one"))
    rows = queries(s)
    assert 900 <= len(rows) <= 1000, len(rows)
    assert any("last_one" in r["query"] for r in rows)  # the newest are kept
    samples = scrape(s.metrics_port)[1]
    held = samples[("sluice_insights_bytes", frozenset())]
    assert held < 4 * 1024 * 1024, held


def test_off_records_nothing(sluice):
    s = sluice({"pgbouncer": {"insights": "0"}})
    with s.connect() as conn:
        conn.execute("SELECT 1")
    assert queries(s) == []
