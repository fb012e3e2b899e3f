"""Index advice verified by the planner (issue 15, item 3): SHOW
INDEX_ADVICE as a user of the console sees it, for a schema with a missing
index, one whose queries are all indexed, and a database without hypopg."""

import re

import psycopg
import pytest

from sluice_fixture import IS_PGBOUNCER, wait_until
from test_metrics import http, scrape
from test_routing import admin

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="sluice's index advisor")

HYPO, PLAIN = "advice_hypo", "advice_plain"  # with and without the hypopg extension
BY_CUSTOMER = "SELECT id, status FROM adv_orders WHERE customer_id = %s"  # no index
BY_ID = "SELECT status, note FROM adv_orders WHERE id = %s"  # the primary key's


@pytest.fixture(scope="module")
def advice_dbs(cluster):
    with cluster.primary_conn() as conn:
        for db in (HYPO, PLAIN):
            conn.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {db}")
    for db in (HYPO, PLAIN):
        with cluster.primary_conn(dbname=db) as conn:
            if db == HYPO:
                conn.execute("CREATE EXTENSION hypopg")
            conn.execute("CREATE TABLE adv_orders (id int PRIMARY KEY, customer_id int NOT NULL, "
                         "status text NOT NULL, note text)")
            conn.execute("INSERT INTO adv_orders SELECT g, g % 5000, CASE WHEN g % 10 = 0 "
                         "THEN 'open' ELSE 'closed' END, repeat('x', 40) "
                         "FROM generate_series(1, 100000) g")
            conn.execute("GRANT SELECT ON adv_orders TO PUBLIC")
            conn.execute("ANALYZE adv_orders")
    yield
    with cluster.primary_conn() as conn:
        for db in (HYPO, PLAIN):
            conn.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


def start(sluice, **settings):
    return sluice({
        "databases": {db: f"host=127.0.0.1 port={{primary_port}} dbname={db}" for db in (HYPO, PLAIN)},
        "pgbouncer": {"metrics_listen": "127.0.0.1:{metrics_port}", "advice_interval": "1",
                      "advice_window": "60", **settings}})


def runs(s):
    return scrape(s.metrics_port)[1][("sluice_index_advisor_runs_total", frozenset())]


def show(s, what):
    with admin(s) as a:
        cur = a.execute(what)
        names = [d.name for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]


def advice_after_workload(s, db, statements, calls=40):
    """Runs each statement calls times (extended protocol, a new value
    each time), waits for two runs of the advisor that began after it,
    and returns SHOW INDEX_ADVICE's rows."""
    with s.connect(dbname=db) as conn:
        for i in range(calls):
            for sql in statements:
                conn.execute(sql, (i * 37 % 5000,)).fetchall()
    done = runs(s)
    wait_until(lambda: runs(s) >= done + 2, 30, "two runs of the index advisor")
    return show(s, "SHOW INDEX_ADVICE")


def fingerprint(s, needle):
    rows = [r for r in show(s, "SHOW QUERIES") if needle in r["query"]]
    assert len(rows) == 1, rows
    return rows[0]["fingerprint"]


def test_missing_index_is_advised_with_its_cost_drop(sluice, cluster, advice_dbs):
    s = start(sluice)
    rows = advice_after_workload(s, HYPO, [BY_CUSTOMER, BY_ID])
    assert len(rows) == 1, rows  # the primary key serves BY_ID already
    a = rows[0]
    assert a["database"] == HYPO and a["table"] == "public.adv_orders"
    assert a["columns"] == "customer_id"
    assert a["statement"] == "CREATE INDEX CONCURRENTLY ON public.adv_orders (customer_id)"
    assert a["verified"] == "yes" and a["note"] == ""
    before, after = float(a["cost_before"]), float(a["cost_after"])
    assert before > 1000 and after < before * 0.1, a  # a sequential scan of 100,000 rows
    assert float(a["gain_percent"]) >= 90
    assert int(a["size_bytes"]) > 8192
    assert a["fingerprints"].split(",") == [fingerprint(s, "customer_id = $1")]
    # Never created: hypothetical indexes live in the advisor's session.
    with cluster.primary_conn(dbname=HYPO) as conn:
        indexes = conn.execute("SELECT indexname FROM pg_indexes "
                               "WHERE tablename = 'adv_orders'").fetchall()
    assert indexes == [("adv_orders_pkey",)]
    # And the values bound never show.
    assert all("$1" in r["query"] for r in show(s, "SHOW QUERIES") if "adv_orders" in r["query"])
    # The status page shows it too, with its cost drop and the fingerprint.
    status, _, body = http(s.metrics_port, b"GET / HTTP/1.0\r\n\r\n")
    html = body.decode()
    assert status == 200
    advice = html.split('<section id="advice">', 1)[1].split("</section>", 1)[0]
    assert "CREATE INDEX CONCURRENTLY ON public.adv_orders (customer_id)" in advice
    assert a["fingerprints"] in advice
    drop = int(re.search(r"</span> (\d+)%", advice).group(1))  # after the drop's bar
    assert abs(drop - float(a["gain_percent"])) <= 1


def test_indexed_workload_gets_no_advice(sluice, advice_dbs):
    s = start(sluice)
    assert advice_after_workload(s, HYPO, [BY_ID]) == []
    samples = scrape(s.metrics_port)[1]
    assert samples[("sluice_index_advisor_errors_total", frozenset())] == 0


def test_min_gain(sluice, advice_dbs):
    """An index that cannot lower any cost by advice_min_gain is not advised."""
    s = start(sluice, advice_min_gain="100")
    assert advice_after_workload(s, HYPO, [BY_CUSTOMER]) == []


def test_without_hypopg_advice_is_unverified(sluice, advice_dbs):
    s = start(sluice)
    rows = advice_after_workload(s, PLAIN, [BY_CUSTOMER])
    assert len(rows) == 1, rows
    a = rows[0]
    assert a["database"] == PLAIN and a["columns"] == "customer_id"
    assert a["statement"] == "CREATE INDEX CONCURRENTLY ON public.adv_orders (customer_id)"
    assert a["verified"] == "no"
    assert "hypopg" in a["note"] and "not verified" in a["note"]
    assert a["cost_after"] is None and a["size_bytes"] is None and a["gain_percent"] is None
    assert float(a["cost_before"]) > 1000
    samples = scrape(s.metrics_port)[1]
    gain = samples[("sluice_index_advice_gain_ratio",
                    frozenset({"database": PLAIN, "table": "public.adv_orders",
                               "columns": "customer_id", "verified": "no"}.items()))]
    assert gain == 0


def test_simple_query_protocol_sample(sluice, advice_dbs):
    """A statement sent as a simple Query (literal values) is sampled from
    its text and advised the same way."""
    s = start(sluice)
    with s.connect(dbname=HYPO) as conn:
        cur = psycopg.ClientCursor(conn)
        for i in range(30):
            cur.execute("SELECT id FROM adv_orders WHERE status = 'open' AND customer_id = %s",
                        (i,))
            cur.fetchall()
    done = runs(s)
    wait_until(lambda: runs(s) >= done + 2, 30, "two runs of the index advisor")
    rows = show(s, "SHOW INDEX_ADVICE")
    # One index, the planner's pick: customer_id alone or after status.
    assert len(rows) == 1 and rows[0]["columns"] in ("customer_id", "status, customer_id"), rows
    assert rows[0]["verified"] == "yes" and float(rows[0]["gain_percent"]) >= 90
