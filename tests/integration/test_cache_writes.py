"""The result cache (cache = memory, docs/cache.md) and every kind of write
sent through sluice (issue 13): INSERT, UPDATE (test_cache.py), DELETE,
MERGE, TRUNCATE, COPY FROM, DDL and REFRESH MATERIALIZED VIEW each drop
the cached answers over the tables they write, at their commit, before the
writer has its ReadyForQuery; and temporary tables are never cached.

Each case first shows that its read is answered from the cache (SHOW
CACHE's hits move by one), so that an answer the write failed to drop
would be seen: the next read through sluice must be the new one."""

import time

import psycopg
import pytest

from sluice_fixture import IS_PGBOUNCER
from test_cache import behind_back, cache_config, cache_rows, warm

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="sluice's result cache")

RULES = {"public.cw_items": "300", "public.cw_view": "300", "public.cw_mv": "300"}
OWNER = "md5_user"  # the user s.connect() logs in as: it may ALTER, DROP, REFRESH
ITEMS = "SELECT count(*), sum(v) FROM cw_items"


def cw_config(**general):
    return cache_config(dict(RULES), **general)


def counters(s, db="mydb"):
    return cache_rows(s).get(db) or {"hits": 0, "fills": 0, "invalidations": 0}


def brief(s):
    """The counters a failure message needs."""
    row = counters(s)
    return {k: row.get(k) for k in ("hits", "fills", "stores", "invalidations")}


@pytest.fixture(autouse=True)
def cw_objects(cluster):
    def drop(conn):
        conn.execute("DROP TABLE IF EXISTS cw_items, cw_items_old, cw_items_new CASCADE")
        conn.execute("DROP FUNCTION IF EXISTS cw_tmp_bump()")

    with cluster.primary_conn() as conn:
        drop(conn)
        conn.execute("CREATE TABLE cw_items (id int PRIMARY KEY, v int)")
        conn.execute("INSERT INTO cw_items SELECT g, 1 FROM generate_series(1, 10) g")
        conn.execute("CREATE VIEW cw_view AS SELECT id, v FROM cw_items")
        conn.execute("CREATE MATERIALIZED VIEW cw_mv AS "
                     "SELECT 1 AS k, count(*) AS n, sum(v) AS s FROM cw_items")
        conn.execute("CREATE UNIQUE INDEX cw_mv_k ON cw_mv (k)")  # for CONCURRENTLY
        conn.execute(f"ALTER TABLE cw_items OWNER TO {OWNER}")
        conn.execute(f"ALTER VIEW cw_view OWNER TO {OWNER}")
        conn.execute(f"ALTER MATERIALIZED VIEW cw_mv OWNER TO {OWNER}")
        # A write sluice cannot name (a function's): it drops nothing, so a
        # temporary table's answer kept by mistake would be seen.
        conn.execute("CREATE FUNCTION cw_tmp_bump() RETURNS void LANGUAGE plpgsql "
                     "AS $$BEGIN UPDATE cw_tmp SET v = v + 1; END$$")
    yield
    with cluster.primary_conn() as conn:
        drop(conn)


# ---- the writes --------------------------------------------------------------------
# Each: (the read, its answer before, the write(writer, cluster), its answer after).


def through(*statements):
    """Statements sent through sluice by the writer, in turn; a tuple is a
    statement with parameters (the extended protocol)."""
    def write(writer, cluster):
        for st in statements:
            writer.execute(*st) if isinstance(st, tuple) else writer.execute(st)
    return write


def copy_from_stdin(writer, cluster):
    with writer.cursor() as cur, cur.copy("COPY cw_items (id, v) FROM STDIN") as copy:
        copy.write_row((11, 1))
        copy.write_row((12, 1))


def drop_and_recreate(writer, cluster):
    writer.execute("DROP TABLE cw_items CASCADE")
    writer.execute("CREATE TABLE cw_items (id int PRIMARY KEY, v int)")
    # Its rows behind sluice's back: only the DDL can have dropped the answer.
    behind_back(cluster, "INSERT INTO cw_items VALUES (1, 42)")


def swap_by_rename(writer, cluster):
    behind_back(cluster, "CREATE TABLE cw_items_new (id int PRIMARY KEY, v int)")
    behind_back(cluster, "INSERT INTO cw_items_new VALUES (1, 42)")
    behind_back(cluster, f"ALTER TABLE cw_items_new OWNER TO {OWNER}")
    writer.execute("ALTER TABLE cw_items RENAME TO cw_items_old")
    writer.execute("ALTER TABLE cw_items_new RENAME TO cw_items")


def refresh(concurrently):
    def write(writer, cluster):
        # The base table changes behind sluice's back (nothing dropped), then
        # the client refreshes the materialized view the cached read is over.
        behind_back(cluster, "INSERT INTO cw_items VALUES (11, 1)")
        writer.execute("REFRESH MATERIALIZED VIEW " + ("CONCURRENTLY " if concurrently else "")
                       + "cw_mv")
    return write


MERGE = ("MERGE INTO cw_items t USING (VALUES (1, 5), (11, 1)) AS s(id, v) ON t.id = s.id "
         "WHEN MATCHED THEN UPDATE SET v = s.v WHEN NOT MATCHED THEN INSERT VALUES (s.id, s.v)")

WRITES = {
    "insert": (ITEMS, [(10, 10)], through("INSERT INTO cw_items VALUES (11, 1)"), [(11, 11)]),
    "insert_extended": (ITEMS, [(10, 10)],
                        through(("INSERT INTO cw_items VALUES (%s, %s)", (11, 1))), [(11, 11)]),
    "delete": (ITEMS, [(10, 10)], through("DELETE FROM cw_items WHERE id <= 3"), [(7, 7)]),
    "delete_in_with": (ITEMS, [(10, 10)],
                       through("WITH d AS (DELETE FROM cw_items WHERE id <= 3 RETURNING id) "
                               "SELECT count(*) FROM d"), [(7, 7)]),
    "merge": (ITEMS, [(10, 10)], through(MERGE), [(11, 15)]),
    "truncate": (ITEMS, [(10, 10)], through("TRUNCATE cw_items"), [(0, None)]),
    "copy_from_stdin": (ITEMS, [(10, 10)], copy_from_stdin, [(12, 12)]),
    "alter_add_column": ("SELECT * FROM cw_items WHERE id = 1", [(1, 1)],
                         through("ALTER TABLE cw_items ADD COLUMN w int DEFAULT 7"), [(1, 1, 7)]),
    "drop_and_recreate": (ITEMS, [(10, 10)], drop_and_recreate, [(1, 42)]),
    "swap_by_rename": (ITEMS, [(10, 10)], swap_by_rename, [(1, 42)]),
    "replace_view": ("SELECT id, v FROM cw_view WHERE id = 2", [(2, 1)],
                     through("CREATE OR REPLACE VIEW cw_view AS "
                             "SELECT id, v * 10 AS v FROM cw_items"), [(2, 10)]),
    "refresh_materialized_view": ("SELECT n, s FROM cw_mv", [(10, 10)], refresh(False),
                                  [(11, 11)]),
    "refresh_materialized_view_concurrently": ("SELECT n, s FROM cw_mv", [(10, 10)],
                                               refresh(True), [(11, 11)]),
}


# Every kind under transaction pooling; a few under session pooling too
# (the same code reads the writes there; make test's time is counted).
@pytest.mark.parametrize("kind,mode", [(k, "transaction") for k in WRITES] + [
    (k, "session") for k in ("copy_from_stdin", "refresh_materialized_view")])
def test_a_write_through_sluice_drops_the_answers_it_makes_stale(sluice, cluster, kind, mode):
    read, old, write, new = WRITES[kind]
    s = sluice(cw_config(pool_mode=mode))
    with s.connect() as conn, s.connect() as writer:
        assert warm(s, conn, read) == old
        before = counters(s)
        assert conn.execute(read).fetchall() == old
        cached = counters(s)
        assert cached["hits"] == before["hits"] + 1, (before, cached)  # from the cache
        write(writer, cluster)
        written = counters(s)
        assert written["invalidations"] > cached["invalidations"], (cached, written)
        # The writer's own next read: its write was told before its
        # ReadyForQuery, so this is a miss with the new answer.
        assert writer.execute(read).fetchall() == new
        assert counters(s)["hits"] == written["hits"]
        assert conn.execute(read).fetchall() == new
        assert warm(s, conn, read) == new  # and cached again


# ---- at the commit -----------------------------------------------------------------

TXN_WRITES = ["insert", "insert_extended", "delete", "merge", "copy_from_stdin"]


@pytest.mark.parametrize("kind,mode", [(k, "transaction") for k in TXN_WRITES] +
                         [("insert", "session")])
def test_a_write_in_a_transaction_drops_the_answers_at_its_commit(sluice, cluster, kind, mode):
    """Told at the commit, not at the statement: an answer dropped earlier
    could be read again (the rows not committed yet) and kept, stale after
    the commit."""
    read, old, write, new = WRITES[kind]
    s = sluice(cw_config(pool_mode=mode))
    with s.connect() as conn, s.connect() as writer:
        assert warm(s, conn, read) == old
        before = counters(s)
        with writer.transaction():
            write(writer, cluster)
            # Inside its transaction the writer reads its own rows (nothing
            # is answered from the cache in a transaction).
            assert writer.execute(read).fetchall() == new
            for _ in range(3):  # another client: the committed rows
                assert conn.execute(read).fetchall() == old
            during = counters(s)
            assert during["invalidations"] == before["invalidations"], (before, during)
        committed = counters(s)
        assert committed["invalidations"] > during["invalidations"], (during, committed)
        assert conn.execute(read).fetchall() == new
        assert warm(s, conn, read) == new


@pytest.mark.parametrize("mode", ["transaction", "session"])
def test_a_rolled_back_write_leaves_the_committed_answer(sluice, cluster, mode):
    """docs/cache.md: when the transaction ends (whichever way) its writes
    are told to the cache and the answers over those tables are dropped; the
    next read is the committed answer, read again from the server."""
    s = sluice(cw_config(pool_mode=mode))
    with s.connect() as conn, s.connect() as writer:
        assert warm(s, conn, ITEMS) == [(10, 10)]
        before = counters(s)
        with writer.transaction():
            writer.execute("INSERT INTO cw_items VALUES (11, 1)")
            writer.execute("DELETE FROM cw_items WHERE id <= 3")
            assert writer.execute(ITEMS).fetchall() == [(8, 8)]
            assert conn.execute(ITEMS).fetchall() == [(10, 10)]
            raise psycopg.Rollback()
        after = counters(s)
        assert after["invalidations"] > before["invalidations"], (before, after)
        assert writer.execute(ITEMS).fetchall() == [(10, 10)]
        assert conn.execute(ITEMS).fetchall() == [(10, 10)]
        assert warm(s, conn, ITEMS) == [(10, 10)]


# ---- temporary tables --------------------------------------------------------------

TEMP_MADE = {
    "select_into_temp": ["SELECT id, v INTO TEMP cw_tmp FROM cw_items"],
}


@pytest.mark.parametrize("how", list(TEMP_MADE))
def test_a_temp_table_is_never_cached(sluice, cluster, how):
    """Session pooling, every permanent table cacheable (cache_default_ttl):
    a read over a temporary table runs on the server every time. Its rows
    change between the reads by a write sluice cannot name, so a kept
    answer would be seen."""
    s = sluice(cw_config(pool_mode="session", cache_default_ttl="300"))
    with s.connect() as conn:
        assert warm(s, conn, ITEMS) == [(10, 10)]  # this client is served from the cache
        for st in TEMP_MADE[how]:
            conn.execute(st)
        read = "SELECT count(*), sum(v) FROM cw_tmp"
        before = counters(s)
        total = 10
        for _ in range(5):
            assert conn.execute(read).fetchall() == [(10, total)]
            assert conn.execute(read).fetchall() == [(10, total)]
            conn.execute("SELECT cw_tmp_bump()")
            total += 10
            time.sleep(0.2)  # room for the catalog's answer about cw_tmp
        assert conn.execute(read).fetchall() == [(10, total)]
        after = counters(s)
        assert after["hits"] == before["hits"], (before, after)
        assert after["fills"] == before["fills"], (before, after)


SHADOW_MADE = {
    "create_temp": ["CREATE TEMP TABLE cw_items (id int, v int)",
                    "INSERT INTO cw_items SELECT id, v + 100 FROM public.cw_items"],
    "select_into_temp": ["SELECT id, v + 100 AS v INTO TEMP cw_items FROM public.cw_items"],
}


@pytest.mark.parametrize("how,mode", [("select_into_temp", "session"),
                                      ("select_into_temp", "transaction"),
                                      ("create_temp", "session")])
def test_a_temp_table_shadowing_a_cached_table(sluice, cluster, how, mode):
    """A client's temporary cw_items hides the permanent one from that
    client alone (pg_temp comes first): the same text over "cw_items" is then
    two relations, and neither client may get the other's answer, whichever
    of them read first. (Under transaction pooling the temporary table pins
    the client to its server.)"""
    s = sluice(cw_config(pool_mode=mode))
    made = SHADOW_MADE[how]
    with s.connect() as other, s.connect() as shadow:
        assert warm(s, other, ITEMS) == [(10, 10)]
        assert shadow.execute(ITEMS).fetchall() == [(10, 10)]
        for st in made:
            shadow.execute(st)
        for i in range(6):
            assert shadow.execute(ITEMS).fetchall() == [(10, 1010)], (i, made, brief(s))
            assert other.execute(ITEMS).fetchall() == [(10, 10)], (i, made, brief(s))
            time.sleep(0.2)  # room for the catalog's answers and fills


# ---- one name in two schemas -------------------------------------------------------

DUP_SCHEMAS = ("cw_a", "cw_b")


@pytest.fixture
def dup_tables(cluster):
    """cw_a.cw_dup and cw_b.cw_dup: two tables of one name."""
    def drop(conn):
        conn.execute("DROP SCHEMA IF EXISTS cw_a, cw_b CASCADE")

    with cluster.primary_conn() as conn:
        drop(conn)
        for schema in DUP_SCHEMAS:
            conn.execute(f"CREATE SCHEMA {schema} AUTHORIZATION {OWNER}")
            conn.execute(f"CREATE TABLE {schema}.cw_dup (id int PRIMARY KEY, v int)")
            conn.execute(f"INSERT INTO {schema}.cw_dup VALUES (1, 0)")
            conn.execute(f"ALTER TABLE {schema}.cw_dup OWNER TO {OWNER}")
    yield {schema: f"SELECT v FROM {schema}.cw_dup WHERE id = 1" for schema in DUP_SCHEMAS}
    with cluster.primary_conn() as conn:
        drop(conn)


def test_a_write_to_one_schema_keeps_the_other_schemas_table(sluice, cluster, dup_tables):
    """Tables are known by schema and name (docs/cache.md): a write to
    cw_b.cw_dup drops the answers over it and keeps those over cw_a.cw_dup,
    which a write behind sluice's back made stale on purpose, so that a
    wrongly dropped answer would show. A write that names no schema drops
    every schema's."""
    s = sluice(cache_config({"cw_a.cw_dup": "300", "cw_b.cw_dup": "300"}))
    a, b = dup_tables["cw_a"], dup_tables["cw_b"]
    with s.connect() as conn, s.connect() as writer:
        assert warm(s, conn, a) == [(0,)]
        assert warm(s, conn, b) == [(0,)]
        behind_back(cluster, "UPDATE cw_a.cw_dup SET v = 5")
        writer.execute("UPDATE cw_b.cw_dup SET v = 1")
        assert conn.execute(b).fetchall() == [(1,)]
        before = counters(s)
        assert conn.execute(a).fetchall() == [(0,)], brief(s)  # kept: still the cached one
        assert counters(s)["hits"] == before["hits"] + 1
        # No schema: search_path picks one on the server, sluice drops both.
        assert warm(s, conn, b) == [(1,)]
        writer.execute("SET search_path = cw_b")
        writer.execute("UPDATE cw_dup SET v = 2")
        assert conn.execute(a).fetchall() == [(5,)]
        assert conn.execute(b).fetchall() == [(2,)]
