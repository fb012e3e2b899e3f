"""The result cache's edges (issue 13, docs/cache.md) end to end: an answer
over cache_max_entry_size, a fill that raced a write, single-flight when
the leading execution fails, read_your_writes and causal tokens in front of
the cache, and CACHE CLEAR of everything.

As in test_cache.py, a cached answer is told from a fresh one by changing
a table straight on the primary, behind sluice's back, and SHOW CACHE's
counters say what the cache did. A slow cacheable read is made with
ce_slow(), a function that sleeps but is declared IMMUTABLE (the cache
accepts only immutable functions; lying to the planner is fine here)."""

import contextlib
import hashlib
import os
import socket
import threading
import time

import psycopg
import pytest

from sluice_fixture import IS_PGBOUNCER, wait_until
from test_cache import behind_back, cache_config, cache_rows, hits, warm
from test_metrics import scrape
from test_routing import admin
from test_ryw import config as ryw_config

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="sluice's result cache")

RULES = {"public.ce_t": "300", "public.ce_big": "300"}
BIG_ROWS = 3000  # rows of ce_big: about 300 kB of DataRows


@pytest.fixture(autouse=True)
def ce_objects(cluster):
    with cluster.primary_conn() as conn:
        conn.execute("DROP TABLE IF EXISTS ce_t, ce_big, ce_flag CASCADE")
        conn.execute("DROP FUNCTION IF EXISTS ce_slow(int, float8)")
        conn.execute("CREATE TABLE ce_t (id int PRIMARY KEY, v int)")
        conn.execute("INSERT INTO ce_t SELECT g, 0 FROM generate_series(1, 10) g")
        conn.execute("CREATE TABLE ce_big (id int PRIMARY KEY, t text)")
        conn.execute("INSERT INTO ce_big SELECT g, repeat(md5(g::text), 3) "
                     f"FROM generate_series(1, {BIG_ROWS}) g")
        conn.execute("CREATE TABLE ce_flag (fail bool NOT NULL)")
        conn.execute("INSERT INTO ce_flag VALUES (false)")
        # Sleeps secs, then fails if ce_flag says so (as of the calling
        # statement's snapshot: a non-volatile function sees no later commit).
        conn.execute("""
            CREATE FUNCTION ce_slow(x int, secs float8) RETURNS int
            LANGUAGE plpgsql IMMUTABLE AS $$
            BEGIN
                PERFORM pg_sleep(secs);
                IF EXISTS (SELECT 1 FROM ce_flag WHERE fail) THEN
                    RAISE EXCEPTION 'ce_slow failed as told';
                END IF;
                RETURN x;
            END $$""")
        conn.execute("GRANT ALL ON ce_t, ce_big, ce_flag TO PUBLIC")
        conn.execute("GRANT EXECUTE ON FUNCTION ce_slow(int, float8) TO PUBLIC")
    cluster.wait_replayed()
    yield
    with cluster.primary_conn() as conn:
        conn.execute("DROP TABLE IF EXISTS ce_t, ce_big, ce_flag CASCADE")
        conn.execute("DROP FUNCTION IF EXISTS ce_slow(int, float8)")


DB_COLUMNS = ("hits", "misses", "fills", "stores", "refused_stale", "refused_other",
              "invalidations", "bypassed")


def counters(s):
    """SHOW CACHE: mydb's counters and the store's (`*`) entries and bytes."""
    rows = cache_rows(s)
    db, store = rows.get("mydb") or {}, rows.get("*") or {}
    out = {k: db.get(k) or 0 for k in DB_COLUMNS}
    out.update(entries=store.get("entries") or 0, bytes=store.get("bytes") or 0)
    return out


def delta(before, after):
    return {k: after[k] - before[k] for k in before}


def running(cluster, marker):
    """Backends on the primary running a statement whose text holds marker."""
    with cluster.primary_conn() as conn:
        return [r[0] for r in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE state = 'active' AND query LIKE %s "
            "AND pid <> pg_backend_pid()", ("%" + marker + "%",)).fetchall()]


def big_expected():
    return [(i, hashlib.md5(str(i).encode()).hexdigest() * 3) for i in range(1, BIG_ROWS + 1)]


# ---- 1. answers over cache_max_entry_size ----------------------------------------------


def test_an_answer_over_the_entry_size_arrives_whole_and_is_not_kept(sluice, cluster):
    """With cache_max_entry_size = 64kB: a 200 kB value and a 3,000-row
    answer (which crosses the limit part way) reach the client intact each
    time, simple and extended protocol, and are never stored (each run is a
    fill refused as refused_other, no hit); a small answer from the same
    table is stored."""
    s = sluice(cache_config(RULES, cache_max_entry_size="64kB"))
    one_value = "SELECT repeat(md5(v::text), 6250) AS t FROM ce_t WHERE id = 1"
    many_rows = "SELECT id, t FROM ce_big ORDER BY id"
    many_rows_ext = "SELECT id, t FROM ce_big WHERE id > %s ORDER BY id"
    expected_value = [(hashlib.md5(b"0").hexdigest() * 6250,)]
    expected_rows = big_expected()
    with s.connect() as conn:
        # The catalog told of the tables and functions, with small answers.
        warm(s, conn, "SELECT repeat(md5(v::text), 2) FROM ce_t WHERE id = 2")
        warm(s, conn, "SELECT id, t FROM ce_big WHERE id = 1")
        warm(s, conn, "SELECT id, t FROM ce_big WHERE id = %s", (2,))
        before = counters(s)
        runs = 0
        for _ in range(4):
            got = conn.execute(one_value).fetchall()
            assert got == expected_value, (len(got), got and len(got[0][0]))
            assert conn.execute(many_rows).fetchall() == expected_rows
            assert conn.execute(many_rows_ext, (0,)).fetchall() == expected_rows
            runs += 3
        d = delta(before, counters(s))
        assert d["stores"] == 0 and d["entries"] == 0 and d["hits"] == 0, d
        assert d["fills"] == runs and d["refused_other"] == runs, d
        # The connection is sound after them, and a small answer of the
        # same table is kept.
        before = counters(s)
        small = "SELECT id, t FROM ce_big WHERE id = 9"
        assert warm(s, conn, small) == [expected_rows[8]]
        d = delta(before, counters(s))
        assert d["stores"] == 1 and d["entries"] == 1, d
        behind_back(cluster, "UPDATE ce_big SET t = 'changed' WHERE id = 9")
        assert conn.execute(small).fetchall() == [expected_rows[8]]  # a hit


def test_concurrent_answers_over_the_entry_size_all_arrive_whole(sluice, cluster):
    """Six clients asking the same too-big answer at once: single-flight
    makes the others wait for one fill that cannot be kept; each must then
    get the whole answer, none stalls."""
    s = sluice(cache_config(RULES, cache_max_entry_size="64kB", default_pool_size=8))
    sql = "SELECT id, t FROM ce_big ORDER BY id"
    expected = big_expected()
    with s.connect() as conn:
        warm(s, conn, "SELECT id, t FROM ce_big WHERE id = 1")
    before = counters(s)
    bad, errors = [], []
    barrier = threading.Barrier(6)

    def reader():
        try:
            with s.connect() as r:
                barrier.wait(10)
                for _ in range(5):
                    got = r.execute(sql).fetchall()
                    if got != expected:
                        bad.append((len(got), got[:1]))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=reader) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a reader hung"
    assert not errors and not bad, (errors, bad[:3])
    d = delta(before, counters(s))
    assert d["stores"] == 0 and d["entries"] == 0 and d["hits"] == 0, d
    assert d["fills"] > 0 and d["refused_other"] == d["fills"], d


def test_answers_being_filled_hold_their_part_of_cache_max_memory(sluice, cluster):
    """cache_max_memory = 8MB, entries up to 128kB: answers being filled may
    hold 1 MB of it (an eighth), the store the rest. Twenty clients each
    miss a different 96 kB answer at once, its rows coming over 400 ms (a
    sleep per row): each gets its answer whole, but their buffers cannot all
    grow together within 1 MB, so some fills are not kept, though the store
    had room for all twenty. SHOW CACHE's bytes, fills included, never
    pass cache_max_memory. (Fill buffers used to be outside the bound: a
    thousand clients missing at once could hold a thousand answers.)"""
    s = sluice(cache_config(RULES, cache_max_memory="8MB", cache_max_entry_size="128kB",
                            default_pool_size=20))
    clients = 20
    sql = ("SELECT id, ce_slow(id, 0.02), repeat(md5(id::text || '{n}'), 150) "
           "FROM ce_big WHERE id <= 20 ORDER BY id")

    def expected(n):
        return [(g, g, hashlib.md5(f"{g}{n}".encode()).hexdigest() * 150) for g in range(1, 21)]

    with s.connect() as conn:
        assert warm(s, conn, sql.format(n="warm")) == expected("warm")
    bad, errors, peak = [], [], []

    def reader(n, barrier, hint):
        try:
            with s.connect() as r:
                barrier.wait(10)
                if r.execute(sql.format(n=n) + hint).fetchall() != expected(n):
                    bad.append(n)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    def burst(first, hint=""):
        barrier = threading.Barrier(clients)
        threads = [threading.Thread(target=reader, args=(first + n, barrier, hint))
                   for n in range(clients)]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            row = cache_rows(s)["*"]
            peak.append((row["bytes"], row["max_bytes"]))
            time.sleep(0.02)

    # The pool opens its twenty servers (one at a time); nothing kept, so
    # that the store has room for all of the next twenty.
    burst(100, " /* sluice:nocache */")
    before = counters(s)
    burst(0)  # twenty fills at once
    assert not errors and not bad, (errors, bad)
    d = delta(before, counters(s))
    assert d["fills"] == clients and d["refused_stale"] == 0, d
    assert d["refused_other"] > 0, d  # some buffers could not grow: not kept
    assert d["stores"] + d["refused_other"] == clients, d
    assert all(b <= m == 8 << 20 for b, m in peak), max(peak)


# ---- 2. a fill that raced a write ------------------------------------------------------


@pytest.mark.parametrize("protocol", ["simple", "extended"])
def test_a_fill_that_raced_a_write_is_not_kept(sluice, cluster, protocol):
    """A slow read of ce_t begins (its snapshot has v = 0); an UPDATE of
    ce_t through another sluice client commits while it runs; the read's
    answer (v = 0, true when it began) is refused as stale, and the next
    read shows the new value, not the answer read before the write."""
    s = sluice(cache_config(RULES))
    if protocol == "simple":
        sql, params = "SELECT ce_slow(v, 2.0) FROM ce_t WHERE id = 2", None
    else:
        sql, params = "SELECT ce_slow(v, 2.0) FROM ce_t WHERE id = %s", (2,)
    with s.connect() as conn, s.connect() as writer:
        # Tables and functions known to the cache, with a fast text.
        warm(s, conn, "SELECT ce_slow(v, 0.0) FROM ce_t WHERE id = 3")
        before = counters(s)
        got = []
        reader = threading.Thread(target=lambda: got.append(conn.execute(sql, params).fetchall()))
        reader.start()
        try:
            wait_until(lambda: running(cluster, "ce_slow(v, 2.0)"), 5, "the slow read running")
            writer.execute("UPDATE ce_t SET v = 5 WHERE id = 2")
            assert reader.is_alive(), "the read ended before the write: no race"
        finally:
            reader.join(30)
        assert got == [[(0,)]]  # read from its snapshot, before the write
        d = delta(before, counters(s))
        assert d["fills"] == 1, d  # it was a fill, to be kept
        assert d["refused_stale"] == 1 and d["stores"] == 0, d
        assert conn.execute(sql, params).fetchall() == [(5,)]
        # And afterwards it is cached as usual (the test can see a kept answer).
        assert warm(s, conn, sql, params) == [(5,)]


# ---- 3. single-flight when the leader fails --------------------------------------------


def hang_up(conn):
    """Closes conn's socket under it, as a client that goes away mid-query."""
    sock = socket.socket(fileno=os.dup(conn.pgconn.socket))
    try:
        sock.shutdown(socket.SHUT_RDWR)
    finally:
        sock.close()


# A cancelled leader fails as one that errs (an ErrorResponse): the two
# that differ for the cache are an error and a client gone.
@pytest.mark.parametrize("failure", ["error", "disconnect"])
def test_single_flight_when_the_leading_execution_fails(sluice, cluster, failure):
    """8 identical misses, one execution (the leader's) while 7 wait for it
    in sluice; the leader's execution then fails: an error of its own
    (error), pg_cancel_backend() on the primary (cancel), or its client
    hanging up (disconnect). The waiters are handed back and each gets its
    own try (cache.c, sf_waited: "the fill failed: each waiter gets its own
    try, none is retried in series"): each gets the right answer, none gets
    the leader's error, none hangs, and they are not run one after another."""
    secs = 3.0
    marker = f"ce_slow(v, {secs})"
    sql = f"SELECT {marker} FROM ce_t WHERE id = 4"
    s = sluice(cache_config(RULES, default_pool_size=12))
    with s.connect() as conn:
        warm(s, conn, "SELECT ce_slow(v, 0.0) FROM ce_t WHERE id = 5")
    if failure == "error":
        behind_back(cluster, "UPDATE ce_flag SET fail = true")
    before = counters(s)
    results = {}
    finished = {}
    leader_conn = []

    def client(i):
        try:
            with s.connect() as r:
                if i == 0:
                    leader_conn.append(r)
                results[i] = r.execute(sql).fetchall()
        except Exception as e:  # noqa: BLE001 - checked below
            results[i] = e
        finished[i] = time.monotonic()

    leader = threading.Thread(target=client, args=(0,))
    leader.start()
    threads = [leader]
    try:
        pids = wait_until(lambda: running(cluster, marker), 10, "the leader's query running")
        threads += [threading.Thread(target=client, args=(i,)) for i in range(1, 8)]
        for t in threads[1:]:
            t.start()
        # All 8 missed; the 7 others wait in sluice: still one execution.
        wait_until(lambda: delta(before, counters(s))["misses"] >= 8, 10, "8 misses")
        assert running(cluster, marker) == pids, "the waiters run on their own: no single-flight"
        assert leader.is_alive()
        if failure == "error":
            behind_back(cluster, "UPDATE ce_flag SET fail = false")  # for the waiters' runs
            leader.join(secs + 10)
            failed_at = finished.get(0, time.monotonic())
        elif failure == "cancel":
            with cluster.primary_conn() as p:
                assert p.execute("SELECT pg_cancel_backend(%s)", (pids[0],)).fetchone()[0]
            failed_at = time.monotonic()
        else:
            hang_up(leader_conn[0])
            failed_at = time.monotonic()
    finally:
        if failure == "error":
            behind_back(cluster, "UPDATE ce_flag SET fail = false")
        for t in threads:
            t.join(secs * 8 + 20)
    assert not any(t.is_alive() for t in threads), "a client hung"
    lead = results[0]
    if failure == "error":
        assert isinstance(lead, psycopg.errors.RaiseException), lead
    elif failure == "cancel":
        assert isinstance(lead, psycopg.errors.QueryCanceled), lead
    else:
        assert isinstance(lead, psycopg.Error), lead
    waiters = {i: results.get(i) for i in range(1, 8)}
    assert all(r == [(0,)] for r in waiters.values()), waiters
    # Each waiter's own try began when the leader failed: run side by side,
    # they end about one execution later, not seven.
    late = max(finished[i] for i in range(1, 8)) - failed_at
    assert late < 2 * secs + 3, late
    d = delta(before, counters(s))
    assert d["fills"] == 1 and d["stores"] == 0 and d["refused_stale"] == 0, d
    assert d["refused_other"] == 1, d  # every fill ends stored or refused, its client gone too
    # Nothing of the failed fill was kept: the next read is fresh.
    behind_back(cluster, "UPDATE ce_t SET v = 6 WHERE id = 4")
    with s.connect() as conn:
        assert conn.execute(sql).fetchall() == [(6,)]


# ---- 4. read_your_writes and causal tokens in front of the cache -----------------------


def ryw_cache_config(mode, **general):
    c = ryw_config(mode, **general)
    c["pgbouncer"]["cache"] = "memory"
    c["cache"] = dict(RULES)
    return c


def test_read_your_writes_through_the_cache_with_replicas_paused(sluice, cluster):
    """read_write_split with read_your_writes = user, replay paused on both
    replicas (any replica read after the write is stale): md5_user writes
    on one connection and reads on another through the cache and sees its
    write at once, again and again (from the cache then); another user's
    cached answer is dropped too and refilled on the primary, never from a
    replica that has not replayed the write."""
    s = sluice(ryw_cache_config("user"))
    sql = "SELECT v FROM ce_t WHERE id = 1"
    with s.connect() as w, s.connect() as r, s.connect(user="scram_user") as other:
        assert warm(s, r, sql) == [(0,)]
        assert warm(s, other, sql) == [(0,)]
        with contextlib.ExitStack() as paused:
            for port in cluster.replica_ports:
                paused.enter_context(cluster.replay_paused(port))
            for i in range(1, 4):
                w.execute("UPDATE ce_t SET v = %s WHERE id = 1", (i,))
                assert r.execute(sql).fetchall() == [(i,)]
                assert w.execute(sql).fetchall() == [(i,)]
                assert warm(s, r, sql) == [(i,)]  # kept, and it is the new one
                assert warm(s, other, sql) == [(i,)]
            # A write in a transaction counts at its commit.
            with w.transaction():
                w.execute("UPDATE ce_t SET v = 10 WHERE id = 1")
            assert r.execute(sql).fetchall() == [(10,)]
            assert r.execute("SELECT v FROM ce_t WHERE id = %s", (1,)).fetchall() == [(10,)]


def test_a_causal_token_is_never_answered_from_a_cached_pre_write_answer(sluice, cluster):
    """Service A writes through sluice A and hands its token over; sluice B
    (its own cache, which never sees A's write) has the pre-write answer
    cached. A client of B that sets sluice.min_lsn to the token (SET, or
    -c in the startup options) reads the new value: not served from the
    cache (docs/cache.md: such a client is not served from it). Without the
    token, B's clients still get the cached old answer: the test can fail."""
    a = sluice(ryw_cache_config("user"))
    b = sluice(ryw_cache_config("off"))
    sql = "SELECT v FROM ce_t WHERE id = 7"
    with b.connect() as r:
        assert warm(b, r, sql) == [(0,)]
    with a.connect() as w:
        def written():
            w.execute("UPDATE ce_t SET v = 1 WHERE id = 7")
            return w.info.parameter_status("sluice.lsn").count("/") == 3
        wait_until(written, 5, "a token naming the cluster")
        token = w.info.parameter_status("sluice.lsn")
    with b.connect() as r:
        assert r.execute(sql).fetchall() == [(0,)]  # B's cached answer: stale, as B cannot know
        r.execute("SET sluice.min_lsn = '%s'" % token)
        assert r.execute("SHOW sluice.min_lsn").fetchone()[0] == token
        before = hits(b)
        for _ in range(5):
            assert r.execute(sql).fetchall() == [(1,)]
            assert r.execute("SELECT v FROM ce_t WHERE id = %s", (7,)).fetchall() == [(1,)]
        assert hits(b) == before
    with b.connect(options="-c sluice.min_lsn=" + token) as r:
        before = hits(b)
        for _ in range(5):
            assert r.execute(sql).fetchall() == [(1,)]
        assert hits(b) == before


# ---- 5. CACHE CLEAR of everything -------------------------------------------------------


def test_cache_clear_without_a_table_empties_the_store(sluice, cluster):
    s = sluice(cache_config(RULES))
    texts = ["SELECT v FROM ce_t WHERE id = 1", "SELECT v FROM ce_t WHERE id = 2",
             "SELECT t FROM ce_big WHERE id = 1"]
    with s.connect() as conn:
        for sql in texts:
            warm(s, conn, sql)
        assert counters(s)["entries"] == 3
        behind_back(cluster, "UPDATE ce_t SET v = 9")
        behind_back(cluster, "UPDATE ce_big SET t = 'x' WHERE id = 1")
        old = [[(0,)], [(0,)], [(big_expected()[0][1],)]]
        assert [conn.execute(sql).fetchall() for sql in texts] == old  # hits
        mark = s.log_mark()
        with admin(s) as a:
            a.execute("CACHE CLEAR")
        s.wait_for_log(r"CACHE CLEAR \(by sluice\): 3 entries dropped", since=mark)
        after_clear = counters(s)
        assert after_clear["entries"] == 0, after_clear
        for i, sql in enumerate(texts):
            before = counters(s)
            assert conn.execute(sql).fetchall() == ([('x',)] if i == 2 else [(9,)])
            d = delta(before, counters(s))
            assert d["hits"] == 0 and d["misses"] == 1, (sql, d)
        # The cache works again after it.
        assert warm(s, conn, texts[0]) == [(9,)]
        assert counters(s)["entries"] >= 1


def test_a_fill_in_flight_during_cache_clear_is_not_kept(sluice, cluster):
    """CACHE CLEAR is the remedy for writes that bypass sluice: a fill that
    read before such a write and ends after the CLEAR must not put the old
    answer back."""
    s = sluice(cache_config(RULES))
    sql = "SELECT ce_slow(v, 2.0) FROM ce_t WHERE id = 8"
    with s.connect() as conn:
        warm(s, conn, "SELECT ce_slow(v, 0.0) FROM ce_t WHERE id = 9")
        before = counters(s)
        got = []
        reader = threading.Thread(target=lambda: got.append(conn.execute(sql).fetchall()))
        reader.start()
        try:
            wait_until(lambda: running(cluster, "ce_slow(v, 2.0)"), 5, "the slow read running")
            behind_back(cluster, "UPDATE ce_t SET v = 4 WHERE id = 8")
            with admin(s) as a:
                a.execute("CACHE CLEAR")
            assert reader.is_alive(), "the read ended before the clear: no race"
        finally:
            reader.join(30)
        assert got == [[(0,)]]
        d = delta(before, counters(s))
        assert d["fills"] == 1 and d["stores"] == 0 and d["refused_stale"] == 1, d
        assert conn.execute(sql).fetchall() == [(4,)]


# ---- 6. SHOW CACHE per database ---------------------------------------------------------

# Two [databases] entries on the same server database: each has its own
# answers (the key holds the database) and its own invalidations.
TWO_DBS = {"otherdb": "host=127.0.0.1 port={primary_port} dbname=mydb"}
STORE_COLUMNS = ("entries", "bytes", "evictions", "expired")


def two_db_config(**general):
    config = cache_config(RULES, **general)
    config["databases"] = TWO_DBS
    return config


def keep(s, conn, db, sql):
    """Runs sql (a client of db) until an answer of it is kept (a hit of db)."""
    def kept():
        before = (cache_rows(s).get(db) or {}).get("hits") or 0
        conn.execute(sql).fetchall()
        conn.execute(sql).fetchall()
        return ((cache_rows(s).get(db) or {}).get("hits") or 0) > before
    wait_until(kept, 10, f"an answer of {sql!r} cached in {db}")


def store_rows(s):
    """SHOW CACHE's entries, bytes, evictions and expired, by row."""
    return {name: {k: row[k] for k in STORE_COLUMNS} for name, row in cache_rows(s).items()}


def assert_rows_add_up(rows, empty_bytes):
    """The databases' rows make up the store's `*` row (whose bytes also
    count the store's own tables, empty_bytes, with no fill going on)."""
    dbs = [r for name, r in rows.items() if name != "*"]
    for k in ("entries", "evictions", "expired"):
        assert sum(r[k] for r in dbs) == rows["*"][k], (k, rows)
    assert sum(r["bytes"] for r in dbs) == rows["*"]["bytes"] - empty_bytes, rows


def test_show_cache_has_each_databases_entries_and_bytes(sluice, cluster):
    """Two databases, known answers cached in each: SHOW CACHE's row of
    each has its entries and bytes (the bigger answers' database more
    bytes), and the rows add up to the store's `*` row; /metrics has the
    same figures per database. A write through one database drops its
    answers over that table only; CACHE CLEAR empties every row."""
    s = sluice(two_db_config(metrics_listen="127.0.0.1:{metrics_port}"))
    empty_bytes = cache_rows(s)["*"]["bytes"]
    mine = ["SELECT v FROM ce_t WHERE id = 1", "SELECT v FROM ce_t WHERE id = 2",
            "SELECT id FROM ce_big WHERE id = 3"]
    other = ["SELECT v, repeat('x', 20000) FROM ce_t WHERE id = 1",
             "SELECT t FROM ce_big WHERE id <= 100 ORDER BY id"]
    with s.connect(dbname="mydb") as a, s.connect(dbname="otherdb") as b:
        for sql in mine:
            keep(s, a, "mydb", sql)
        for sql in other:
            keep(s, b, "otherdb", sql)
        rows = store_rows(s)
        assert rows["mydb"]["entries"] == 3 and rows["otherdb"]["entries"] == 2, rows
        assert 0 < rows["mydb"]["bytes"] < 5000 < 20000 < rows["otherdb"]["bytes"], rows
        assert rows["*"]["entries"] == 5, rows
        assert_rows_add_up(rows, empty_bytes)
        _, samples = scrape(s.metrics_port)
        for db in ("mydb", "otherdb"):
            for k, family in (("entries", "entries"), ("bytes", "bytes"),
                              ("evictions", "evictions_total"), ("expired", "expired_total")):
                key = (f"sluice_cache_database_{family}", frozenset({("database", db)}))
                assert samples[key] == rows[db][k], (db, k, samples.get(key))

        # A write to ce_t through otherdb: otherdb's answer over ce_t goes,
        # its answer over ce_big and mydb's answers stay (still hits).
        b.execute("UPDATE ce_t SET v = 0 WHERE id = 10")
        after = store_rows(s)
        assert after["otherdb"]["entries"] == 1, after
        assert after["otherdb"]["bytes"] < rows["otherdb"]["bytes"] - 20000, after
        assert after["mydb"] == rows["mydb"], after
        assert after["*"]["entries"] == 4, after
        assert_rows_add_up(after, empty_bytes)
        before = cache_rows(s)["mydb"]["hits"]
        for sql in mine:
            a.execute(sql).fetchall()
        assert cache_rows(s)["mydb"]["hits"] == before + 3

    with admin(s) as adm:
        adm.execute("CACHE CLEAR")
    cleared = store_rows(s)
    for db in ("mydb", "otherdb"):
        assert cleared[db]["entries"] == 0 and cleared[db]["bytes"] == 0, cleared
    assert cleared["*"]["entries"] == 0 and cleared["*"]["bytes"] == empty_bytes, cleared


def test_show_cache_counts_evictions_for_the_database_whose_answers_went(sluice, cluster):
    """A small store (cache_max_memory = 1MB): mydb keeps three answers it
    uses often; otherdb fills it with answers of a second's TTL, then, once
    they expired, asks for some again and fills new ones. otherdb's answers
    are found expired or evicted (to make room for its new ones), and SHOW
    CACHE counts that in otherdb's row; mydb's answers stay, its row counts
    no eviction; every column adds up to the `*` row."""
    s = sluice(two_db_config(cache_max_memory="1MB", cache_max_entry_size="16kB"))
    empty_bytes = cache_rows(s)["*"]["bytes"]
    mine = [f"SELECT v FROM ce_t WHERE id = {i}" for i in (1, 2, 3)]
    # 8 kB answers: the store holds about a hundred.
    fill = "SELECT v, {n} AS n, repeat('x', 8000) FROM ce_t WHERE id = 1 /* sluice:cache ttl=1 */"
    with s.connect(dbname="mydb") as a, s.connect(dbname="otherdb") as b:
        for sql in mine:
            keep(s, a, "mydb", sql)
            for _ in range(5):  # used often: TinyLFU keeps them
                a.execute(sql).fetchall()
        keep(s, b, "otherdb", fill.format(n=-1))
        for n in range(200):
            b.execute(fill.format(n=n)).fetchall()
        full = store_rows(s)
        assert full["otherdb"]["entries"] > 40, full
        time.sleep(1.5)  # otherdb's answers expire
        for n in range(50):  # found expired (those kept), and filled again
            b.execute(fill.format(n=n)).fetchall()
        for n in range(1000, 1200):  # new answers: the expired ones make room
            b.execute(fill.format(n=n)).fetchall()
        rows = store_rows(s)
    assert rows["otherdb"]["evictions"] > 20, rows
    assert rows["otherdb"]["expired"] > 0, rows
    assert rows["mydb"]["evictions"] == 0 and rows["mydb"]["expired"] == 0, rows
    assert rows["mydb"]["entries"] == 3, rows
    assert rows["*"]["evictions"] == rows["otherdb"]["evictions"], rows
    assert_rows_add_up(rows, empty_bytes)


def test_show_cache_keeps_a_dropped_databases_answers_in_a_row_of_its_name(sluice, cluster):
    """mydb made from "*" caches an answer, then is dropped when unused
    (autodb_idle_timeout): its answer stays in the store, and SHOW CACHE
    still shows it in a row of its name (entries and bytes only) adding up
    to `*`. A client of mydb again is answered from it, and the database's
    row has its figures back."""
    config = cache_config(RULES, autodb_idle_timeout="1", server_idle_timeout="1")
    config["databases"] = {"mydb": None, "*": "host=127.0.0.1 port={primary_port}"}
    s = sluice(config)
    empty_bytes = cache_rows(s)["*"]["bytes"]
    sql = "SELECT v FROM ce_t WHERE id = 4"
    with s.connect() as conn:
        keep(s, conn, "mydb", sql)
    kept = cache_rows(s)["mydb"]
    assert kept["entries"] == 1 and kept["bytes"] > 0 and kept["hits"] >= 1, kept

    def dropped():
        with admin(s) as a:
            return "mydb" not in [r[0] for r in a.execute("SHOW DATABASES").fetchall()]
    wait_until(dropped, 15, "mydb dropped")
    rows = cache_rows(s)
    assert rows["mydb"]["entries"] == 1 and rows["mydb"]["bytes"] == kept["bytes"], rows
    assert rows["mydb"]["hits"] is None, rows  # not a database's row any more
    assert_rows_add_up(store_rows(s), empty_bytes)

    with s.connect() as conn:
        assert conn.execute(sql).fetchall() == [(0,)]
    back = cache_rows(s)["mydb"]
    assert back["hits"] == 1 and back["misses"] == 0, back  # its counters start over
    assert back["entries"] == 1 and back["bytes"] == kept["bytes"], back
