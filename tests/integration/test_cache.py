"""The result cache (cache = memory, docs/cache.md): what is cached and
what is not, invalidation by writes through sluice, the key (user,
settings), SHOW CACHE / CACHE CLEAR, and a stale-read hunt.

A cached answer is told from a fresh one by changing the table straight
on the primary, behind sluice's back: a hit still shows the old value,
a statement that is not cached shows the new one. Writes through sluice
must drop the answers they make stale before the writer has its
ReadyForQuery."""

import threading
import time

import psycopg
import pytest

from sluice_fixture import IS_PGBOUNCER, wait_until
from test_routing import admin

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="sluice's result cache")


def cache_config(rules=None, **general):
    config = {"pgbouncer": {"cache": "memory", **{k: str(v) for k, v in general.items()}}}
    config["cache"] = rules if rules is not None else {"public.cache_t": "300",
                                                      "public.cache_v": "300"}
    return config


@pytest.fixture(autouse=True)
def cache_objects(cluster):
    with cluster.primary_conn() as conn:
        conn.execute("DROP VIEW IF EXISTS cache_v")
        conn.execute("DROP TABLE IF EXISTS cache_t, cache_other, cache_part CASCADE")
        conn.execute("CREATE TABLE cache_t (id int PRIMARY KEY, v int)")
        conn.execute("INSERT INTO cache_t SELECT g, 0 FROM generate_series(1, 10) g")
        conn.execute("CREATE TABLE cache_other (id int PRIMARY KEY, v int)")
        conn.execute("INSERT INTO cache_other VALUES (1, 0)")
        conn.execute("CREATE VIEW cache_v AS SELECT id, v FROM cache_t WHERE id <= 5")
        conn.execute("CREATE TABLE cache_part (id int, v int) PARTITION BY RANGE (id)")
        conn.execute("CREATE TABLE cache_part_1 PARTITION OF cache_part FOR VALUES FROM (0) TO (100)")
        conn.execute("INSERT INTO cache_part VALUES (1, 0)")
        conn.execute("GRANT ALL ON cache_t, cache_other, cache_v, cache_part, cache_part_1 TO PUBLIC")
    yield
    with cluster.primary_conn() as conn:
        conn.execute("DROP VIEW IF EXISTS cache_v")
        conn.execute("DROP TABLE IF EXISTS cache_t, cache_other, cache_part CASCADE")


def behind_back(cluster, sql):
    """A write straight to the primary: sluice does not see it."""
    with cluster.primary_conn() as conn:
        conn.execute(sql)


def cache_rows(s):
    with admin(s) as a:
        cur = a.execute("SHOW CACHE")
        names = [d.name for d in cur.description]
        return {r[0]: dict(zip(names, r)) for r in cur.fetchall()}


def hits(s, db="mydb"):
    return (cache_rows(s).get(db) or {}).get("hits", 0)


def warm(s, conn, sql, params=None):
    """Runs sql until an answer of it is kept (the first runs only ask
    the catalog about its tables and functions); returns the value."""
    def kept():
        before = hits(s)
        value = conn.execute(sql, params).fetchall()
        again = conn.execute(sql, params).fetchall()
        return (value,) if hits(s) > before and again == value else None
    return wait_until(kept, 10, f"an answer of {sql!r} cached")[0]


def test_a_read_is_answered_from_the_cache_until_a_write_through_sluice(sluice, cluster):
    s = sluice(cache_config())
    with s.connect() as conn:
        conn.autocommit = True
        sql = "SELECT v FROM cache_t WHERE id = 1"
        assert warm(s, conn, sql) == [(0,)]
        behind_back(cluster, "UPDATE cache_t SET v = 7 WHERE id = 1")
        assert conn.execute(sql).fetchall() == [(0,)]  # a hit: the old answer
        with s.connect() as writer:
            writer.autocommit = True
            writer.execute("UPDATE cache_t SET v = 8 WHERE id = 2")
        assert conn.execute(sql).fetchall() == [(7,)]  # dropped by the write: fresh
    row = cache_rows(s)["mydb"]
    assert row["hits"] >= 2 and row["stores"] >= 1 and row["invalidations"] >= 1


def test_a_write_in_a_transaction_invalidates_at_its_commit(sluice, cluster):
    s = sluice(cache_config())
    with s.connect() as conn, s.connect() as writer:
        conn.autocommit = True
        sql = "SELECT sum(v) FROM cache_t"
        assert warm(s, conn, sql) == [(0,)]
        with writer.transaction():
            writer.execute("UPDATE cache_t SET v = 1 WHERE id = 3")
            # Not committed: the cached answer is still the right one.
            assert conn.execute(sql).fetchall() == [(0,)]
        assert conn.execute(sql).fetchall() == [(1,)]


@pytest.mark.parametrize("text", [
    "SELECT 1; UPDATE cache_t SET v = 5 WHERE id = 1",
    "BEGIN; UPDATE cache_t SET v = 5 WHERE id = 1; COMMIT",
    "SET application_name = 'x'; UPDATE cache_t SET v = 5 WHERE id = 1",
    "-- a line ended by a carriage return\rUPDATE cache_t SET v = 5 WHERE id = 1",
])
def test_a_write_after_another_statement_in_one_query_invalidates(sluice, cluster, text):
    # A simple Query may hold several statements: the first one's word
    # (a SELECT, a BEGIN) says nothing of what the rest writes.
    s = sluice(cache_config())
    with s.connect() as conn, s.connect() as writer:
        conn.autocommit = True
        writer.autocommit = True
        sql = "SELECT v FROM cache_t WHERE id = 1"
        assert warm(s, conn, sql) == [(0,)]
        writer.execute(text)  # no parameters: psycopg sends one Query
        assert conn.execute(sql).fetchall() == [(5,)]


def test_what_is_not_cached(sluice, cluster):
    s = sluice(cache_config(pool_mode="transaction"))
    with s.connect() as conn:
        conn.autocommit = True
        warm(s, conn, "SELECT v FROM cache_t WHERE id = 4")
        cases = [
            "SELECT v, now() FROM cache_t WHERE id = 4",           # a stable function of the clock
            "SELECT v, random() FROM cache_t WHERE id = 4",        # volatile
            "SELECT v, CURRENT_TIMESTAMP FROM cache_t WHERE id = 4",
            "SELECT v FROM cache_other WHERE id = 1",              # no rule names the table
            "SELECT o.v FROM cache_t t JOIN cache_other o ON o.id = t.id",  # one table unruled
            "SELECT /* sluice:nocache */ v FROM cache_t WHERE id = 4",
        ]
        for sql in cases:
            for _ in range(3):
                conn.execute(sql).fetchall()
        before = hits(s)
        behind_back(cluster, "UPDATE cache_t SET v = 5 WHERE id = 4")
        behind_back(cluster, "UPDATE cache_other SET v = 5 WHERE id = 1")
        for sql in cases:
            row = conn.execute(sql).fetchone()
            assert row[0] == 5, sql
        assert hits(s) == before


def test_the_key_holds_the_user_and_the_settings(sluice, cluster):
    s = sluice(cache_config())
    sql = "SELECT v, current_user, current_setting('search_path') FROM cache_t WHERE id = 5"
    with s.connect() as conn:
        conn.autocommit = True
        first = warm(s, conn, sql)
        conn.execute("SET search_path = public, pg_catalog")
        after_set = conn.execute(sql).fetchall()
        assert after_set != first  # another key: a miss, answered by the server
        assert after_set[0][2] == "public, pg_catalog"
    with s.connect(user="scram_user") as other:
        other.autocommit = True
        row = other.execute(sql).fetchone()
        assert row[1] == "scram_user"  # not md5_user's cached answer


def test_a_setting_after_another_statement_in_one_query_leaves_the_key(sluice, cluster):
    # In session mode a SET taints the client's later reads (the key
    # cannot hold what sluice did not see); a SET that is not the text's
    # first statement too.
    s = sluice(cache_config(pool_mode="session"))
    sql = "SELECT current_setting('app.tenant', true), v FROM cache_t WHERE id = 4"
    with s.connect() as conn, s.connect() as other:
        conn.autocommit = other.autocommit = True
        assert warm(s, conn, sql) == [(None, 0)]
        other.execute("SELECT 1; SET app.tenant = 'b'")  # no parameters: one Query
        assert other.execute(sql).fetchall() == [("b", 0)]


def test_a_view_and_a_partition_are_invalidated_by_writes_to_their_tables(sluice, cluster):
    s = sluice(cache_config({"public.cache_v": "300", "public.cache_part": "300"}))
    with s.connect() as conn, s.connect() as writer:
        conn.autocommit = writer.autocommit = True
        assert warm(s, conn, "SELECT v FROM cache_v WHERE id = 1") == [(0,)]
        assert warm(s, conn, "SELECT v FROM cache_part WHERE id = 1") == [(0,)]
        writer.execute("UPDATE cache_t SET v = 11 WHERE id = 1")
        writer.execute("UPDATE cache_part_1 SET v = 12 WHERE id = 1")
        assert conn.execute("SELECT v FROM cache_v WHERE id = 1").fetchall() == [(11,)]
        assert conn.execute("SELECT v FROM cache_part WHERE id = 1").fetchall() == [(12,)]


def test_hints_cache_and_ttl(sluice, cluster):
    s = sluice(cache_config({}))
    with s.connect() as conn:
        conn.autocommit = True
        sql = "SELECT /* sluice:cache ttl=1 */ v FROM cache_other WHERE id = 1"
        assert warm(s, conn, sql) == [(0,)]
        behind_back(cluster, "UPDATE cache_other SET v = 3 WHERE id = 1")
        assert conn.execute(sql).fetchall() == [(0,)]
        wait_until(lambda: conn.execute(sql).fetchall() == [(3,)], 5, "the entry expired")


def test_cache_clear(sluice, cluster):
    s = sluice(cache_config())
    with s.connect() as conn:
        conn.autocommit = True
        sql = "SELECT v FROM cache_t WHERE id = 6"
        warm(s, conn, sql)
        behind_back(cluster, "UPDATE cache_t SET v = 9 WHERE id = 6")
        assert conn.execute(sql).fetchall() == [(0,)]
        with admin(s) as a:
            a.execute("CACHE CLEAR public.cache_t")
            tables = a.execute("SHOW CACHE_TABLES").fetchall()
        assert any(t[1] in ("public.cache_t", "cache_t") for t in tables), tables
        assert conn.execute(sql).fetchall() == [(9,)]
        with admin(s) as a:
            with pytest.raises(psycopg.Error, match="syntax: CACHE CLEAR"):
                a.execute("CACHE CLEAR a b")


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_stale_read_hunt(sluice, cluster, mode):
    """Writers bump counters through sluice while readers read them through
    the cache: a reader never sees a value older than one committed before
    its read began."""
    s = sluice(cache_config(pool_mode=mode, default_pool_size=8))
    committed = {i: 0 for i in range(1, 4)}
    lock = threading.Lock()
    errors = []
    stop = threading.Event()

    def writer(i):
        with s.connect() as w:
            w.autocommit = True
            n = 0
            while not stop.is_set() and n < 150:
                n += 1
                w.execute("UPDATE cache_t SET v = %s WHERE id = %s", (n, i))
                with lock:
                    committed[i] = n
                time.sleep(0.01)  # room for reads to be cached between writes

    def reader():
        with s.connect() as r:
            r.autocommit = True
            while not stop.is_set():
                with lock:
                    floor = dict(committed)
                rows = dict(r.execute("SELECT id, v FROM cache_t WHERE id <= 3").fetchall())
                for i, v in floor.items():
                    if rows[i] < v:
                        errors.append((i, rows[i], v))

    threads = [threading.Thread(target=writer, args=(i,)) for i in committed]
    threads += [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads[:3]:
        t.join(60)
    time.sleep(1)  # the last values, read from the cache a while
    stop.set()
    for t in threads[3:]:
        t.join(60)
    assert not errors, errors[:5]
    assert cache_rows(s)["mydb"]["hits"] > 0
    with s.connect() as r:
        assert dict(r.execute("SELECT id, v FROM cache_t WHERE id <= 3").fetchall()) == committed


def test_extended_protocol_with_parameters_and_named_statements(sluice, cluster):
    s = sluice(cache_config())
    sql = "SELECT v FROM cache_t WHERE id = %s"
    with s.connect() as conn:
        conn.autocommit = True
        # Unnamed statements (Parse, Bind, Describe, Execute, Sync).
        assert warm(s, conn, sql, (7,)) == [(0,)]
        # Named: psycopg prepares it on the server.
        assert warm(s, conn, sql + " AND true", (8,)) == [(0,)]
        conn.execute(sql + " AND true", (8,), prepare=True).fetchall()
        behind_back(cluster, "UPDATE cache_t SET v = 3 WHERE id IN (7, 8)")
        assert conn.execute(sql, (7,)).fetchall() == [(0,)]       # hits
        assert conn.execute(sql + " AND true", (8,), prepare=True).fetchall() == [(0,)]
        assert conn.execute(sql, (9,)).fetchall() == [(0,)]       # another value: a miss
        behind_back(cluster, "UPDATE cache_t SET v = 4 WHERE id = 9")
        assert conn.execute(sql, (9,)).fetchall() == [(0,)]       # now cached
        # A write through the extended protocol invalidates.
        with s.connect() as w:
            w.autocommit = True
            w.execute("UPDATE cache_t SET v = v WHERE id = %s", (1,))
        assert conn.execute(sql, (7,)).fetchall() == [(3,)]
        assert conn.execute(sql, (9,)).fetchall() == [(4,)]


def test_the_same_unnamed_statement_follows_reloads_and_every_write(sluice, cluster):
    """sluice remembers what it learnt of the unnamed statement's text while
    a client sends it again (a driver's Parse, Bind, Execute): a reload that
    adds a rule for its table must still cache it, and the same write sent
    again and again must invalidate every time."""
    s = sluice(cache_config(rules={"public.cache_other": "300"}))
    sql = "SELECT v FROM cache_t WHERE id = %s"
    with s.connect() as conn, s.connect() as w:
        conn.autocommit = w.autocommit = True
        conn.prepare_threshold = w.prepare_threshold = None  # unnamed statements only
        for _ in range(5):
            assert conn.execute(sql, (1,)).fetchall() == [(0,)]
        behind_back(cluster, "UPDATE cache_t SET v = 5 WHERE id = 1")
        assert conn.execute(sql, (1,)).fetchall() == [(5,)]  # no rule names cache_t
        s.write_config(cache_config())
        s.reload()
        assert warm(s, conn, sql, (1,)) == [(5,)]  # the same text: cached now
        for i in range(4):
            w.execute("UPDATE cache_t SET v = %s WHERE id = 1", (10 + i,))
            assert conn.execute(sql, (1,)).fetchall() == [(10 + i,)]
            assert warm(s, conn, sql, (1,)) == [(10 + i,)]


def test_unnamed_statements_alternating_between_texts(sluice, cluster):
    """Clients whose unnamed statement alternates between a few texts (as
    pgbench -M extended and most drivers do): what sluice learns of each
    text once (it writes, it is not cached by the rules) holds for every
    client, a cacheable text in between still hits, each write still
    invalidates, and a reload's new rule makes an uncached text cacheable."""
    s = sluice(cache_config(rules={"public.cache_t": "300"}))
    other_t = "SELECT v FROM cache_other WHERE id = %s"
    cached_t = "SELECT v FROM cache_t WHERE id = %s"
    write_t = "UPDATE cache_t SET v = %s WHERE id = 2"
    with s.connect() as conn, s.connect() as peer:
        conn.prepare_threshold = peer.prepare_threshold = None  # unnamed statements only
        assert warm(s, conn, cached_t, (2,)) == [(0,)]
        for i in range(1, 6):
            behind_back(cluster, f"UPDATE cache_other SET v = {i} WHERE id = 1")
            assert conn.execute(other_t, (1,)).fetchall() == [(i,)]  # never cached
            assert peer.execute(other_t, (1,)).fetchall() == [(i,)]
            before = hits(s)
            assert conn.execute(cached_t, (2,)).fetchall() == [(i - 1,)]
            assert hits(s) == before + 1
            peer.execute(write_t, (i,))  # a write of the same texts' mix: invalidates
            assert warm(s, conn, cached_t, (2,)) == [(i,)]
        s.write_config(cache_config(rules={"public.cache_t": "300", "public.cache_other": "300"}))
        s.reload()
        assert warm(s, conn, other_t, (1,)) == [(5,)]
        behind_back(cluster, "UPDATE cache_other SET v = 9 WHERE id = 1")
        assert conn.execute(other_t, (1,)).fetchall() == [(5,)]  # cached now


def test_asyncpg_prepared_statements_hit(sluice, cluster):
    import asyncio

    import asyncpg

    s = sluice(cache_config(pool_mode="session"))

    async def run():
        conn = await asyncpg.connect(host="127.0.0.1", port=s.port, user="md5_user",
                                     password="md5_user_pw", database="mydb",
                                     statement_cache_size=100)
        try:
            q = "SELECT id, v FROM cache_t WHERE id = $1"
            first = await conn.fetch(q, 10)
            async def hit_seen():
                before = hits(s)
                rows = await conn.fetch(q, 10)
                return rows == first and hits(s) > before
            for _ in range(100):
                if await hit_seen():
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("no hit")
            # An explicit prepare (Parse, Describe, Flush...): the batch after
            # it ends its request, so its first execution goes to the server.
            stmt = await conn.prepare(q)
            await stmt.fetch(10)
            behind_back(cluster, "UPDATE cache_t SET v = 6 WHERE id = 10")
            assert [tuple(r) for r in await conn.fetch(q, 10)] == [(10, 0)]
            assert [tuple(r) for r in await stmt.fetch(10)] == [(10, 0)]
            await conn.execute("UPDATE cache_t SET v = 7 WHERE id = $1", 10)
            assert [tuple(r) for r in await conn.fetch(q, 10)] == [(10, 7)]
        finally:
            await conn.close()

    asyncio.run(run())


def test_single_flight_concurrent_misses_share_one_execution(sluice, cluster):
    with cluster.primary_conn() as conn:
        conn.execute("CREATE OR REPLACE VIEW cache_slow AS SELECT count(*) AS n, "
                     "(SELECT sum(v) FROM cache_t) AS s FROM generate_series(1, 2000000)")
        conn.execute("GRANT ALL ON cache_slow TO PUBLIC")
    try:
        s = sluice(cache_config({"public.cache_slow": "300"}, default_pool_size=12))
        sql = "SELECT n, s FROM cache_slow"
        with s.connect() as conn:
            warm(s, conn, sql)
            conn.execute("UPDATE cache_t SET v = 2 WHERE id = 1")  # drops it
        before = cache_rows(s)["mydb"]
        results, errors = [], []
        barrier = threading.Barrier(8)

        def reader():
            try:
                with s.connect() as r:
                    barrier.wait(10)
                    results.append(r.execute(sql).fetchone())
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=reader) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        after = cache_rows(s)["mydb"]
        assert not errors, errors
        assert results == [(2000000, 2)] * 8
        assert after["fills"] - before["fills"] == 1, (before, after)
        assert after["hits"] - before["hits"] == 7, (before, after)
    finally:
        with cluster.primary_conn() as conn:
            conn.execute("DROP VIEW IF EXISTS cache_slow")


# ---- the Redis tier ------------------------------------------------------------------


class PrivateRedis:
    """A redis-server of the test's own, to share between instances or to
    kill, stopped by PID."""

    def __init__(self, tmp_path):
        from sluice_fixture import free_port
        import subprocess
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(tmp_path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self.up, 10, "redis-server up")

    def up(self):
        import socket
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def redis(tmp_path):
    r = PrivateRedis(tmp_path)
    yield r
    r.stop()


def redis_state(s):
    return cache_rows(s)["*"]["redis"]


@pytest.mark.parametrize("b_mode", ["transaction", "session"])
def test_redis_tier_shared_by_two_instances(sluice, cluster, redis, b_mode):
    """b serves a's answer from Redis, under transaction pooling (no server
    taken) and under session pooling (its client's server waits with it)."""
    config = cache_config(cache=f"redis://127.0.0.1:{redis.port}/3")
    a = sluice(config)
    b = sluice(cache_config(cache=f"redis://127.0.0.1:{redis.port}/3", pool_mode=b_mode))
    wait_until(lambda: redis_state(a) == "up" and redis_state(b) == "up", 10, "redis up")
    sql = "SELECT v FROM cache_t WHERE id = 1"
    with a.connect() as ca, b.connect() as cb:
        assert warm(a, ca, sql) == [(0,)]
        behind_back(cluster, "UPDATE cache_t SET v = 5 WHERE id = 1")
        # b has never run it: its answer is a's, from Redis.
        wait_until(lambda: cb.execute(sql).fetchall() == [(0,)] and hits(b) > 0, 10,
                   "b served a's entry from Redis")
        # A write through b: a drops its copy (pub/sub) and Redis's (generation).
        cb.execute("UPDATE cache_t SET v = 6 WHERE id = 2")
        assert ca.execute(sql).fetchall() == [(5,)]
        assert cb.execute(sql).fetchall() == [(5,)]
        # b's writer goes on after its answer was held for Redis (a session's
        # server stopped being read while that answer waited).
        cb.execute("UPDATE cache_t SET v = 7 WHERE id = 2")
        cb.execute("UPDATE cache_t SET v = 8 WHERE id = 2")
        assert ca.execute("SELECT v FROM cache_t WHERE id = 2").fetchall() == [(8,)]


@pytest.mark.parametrize("what", ["everything", "table"])
def test_cache_clear_reaches_redis(sluice, cluster, redis, what):
    """CACHE CLEAR on one instance drops the answers kept in Redis too, so
    neither instance serves them again (it used to empty only the
    in-process store, which this mode never serves from). The Redis tier's
    counters are in /metrics."""
    from test_metrics import scrape, value
    config = cache_config(cache=f"redis://127.0.0.1:{redis.port}/4")
    config["pgbouncer"]["metrics_listen"] = "127.0.0.1:{metrics_port}"
    a, b = sluice(config), sluice(config)
    wait_until(lambda: redis_state(a) == "up" and redis_state(b) == "up", 10, "redis up")
    sql = "SELECT v FROM cache_t WHERE id = 3"
    with a.connect() as ca, b.connect() as cb:
        assert warm(a, ca, sql) == [(0,)]
        behind_back(cluster, "UPDATE cache_t SET v = 7 WHERE id = 3")
        wait_until(lambda: cb.execute(sql).fetchall() == [(0,)] and hits(b) > 0, 10,
                   "b served a's entry from Redis")
        with admin(a) as console:
            console.execute("CACHE CLEAR" if what == "everything" else "CACHE CLEAR cache_t")
        wait_until(lambda: cb.execute(sql).fetchall() == [(7,)], 5, "b reading afresh")
        assert ca.execute(sql).fetchall() == [(7,)]
    samples = scrape(a.metrics_port)[1]
    assert value(samples, "sluice_cache_redis_up") == 1
    # a answered its warm-up from its own copy, checked against the counters;
    # whether its last read found b's fresh entry in Redis or filled one itself
    # depends on when b's store landed, so a's Redis hits are not asserted.
    assert value(samples, "sluice_cache_redis_copy_hits_total") >= 1
    assert value(scrape(b.metrics_port)[1], "sluice_cache_redis_hits_total") >= 1
    assert value(samples, "sluice_cache_redis_invalidations_total") >= 1
    assert value(samples, "sluice_cache_redis_invalidations_pending") == 0


def test_redis_tier_serves_its_own_copies_after_asking_for_the_counters(sluice, cluster, redis):
    """cache_max_memory in front of Redis: an instance keeps a copy of what
    it filled, and a hit of it asks Redis for its tables' generation
    counters alone (not the entry); a write through the other instance
    moves a counter, so the copy is not served again."""
    from test_metrics import scrape, value
    url = f"redis://127.0.0.1:{redis.port}/5"
    a = sluice(cache_config(cache=url, metrics_listen="127.0.0.1:{metrics_port}"))
    b = sluice(cache_config(cache=url))
    wait_until(lambda: redis_state(a) == "up" and redis_state(b) == "up", 10, "redis up")

    def redis_counts():
        samples = scrape(a.metrics_port)[1]
        return {k: value(samples, f"sluice_cache_redis_{k}_total")
                for k in ("lookups", "hits", "copy_checks", "copy_hits")}

    sql = "SELECT v FROM cache_t WHERE id = 4"
    with a.connect() as ca, b.connect() as cb:
        assert warm(a, ca, sql) == [(0,)]
        before, h = redis_counts(), hits(a)
        for _ in range(20):
            assert ca.execute(sql).fetchall() == [(0,)]
        after = redis_counts()
        assert hits(a) == h + 20
        assert after["copy_hits"] - before["copy_hits"] == 20, (before, after)
        assert after["copy_checks"] - before["copy_checks"] == 20, (before, after)
        assert after["lookups"] == before["lookups"] and after["hits"] == before["hits"]
        cb.execute("UPDATE cache_t SET v = 9 WHERE id = 4")
        assert ca.execute(sql).fetchall() == [(9,)]


def test_redis_killed_mid_load_bypasses_without_errors(sluice, cluster, redis):
    s = sluice(cache_config(cache=f"redis://127.0.0.1:{redis.port}/0"))
    wait_until(lambda: redis_state(s) == "up", 10, "redis up")
    sql = "SELECT v FROM cache_t WHERE id = 2"
    errors, reads = [], []
    stop = threading.Event()

    def reader():
        try:
            with s.connect() as r:
                while not stop.is_set():
                    reads.append(r.execute(sql).fetchone()[0])
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    with s.connect() as conn:
        warm(s, conn, sql)
    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    redis.stop()
    wait_until(lambda: redis_state(s) in ("open", "half-open"), 10, "breaker open")
    # Redis gone: a write is seen at once (nothing served from a copy that
    # the other instances' writes could no longer drop).
    behind_back(cluster, "UPDATE cache_t SET v = 8 WHERE id = 2")
    wait_until(lambda: reads and reads[-1] == 8, 5, "fresh answers without Redis")
    stop.set()
    for t in threads:
        t.join(30)
    assert not errors, errors[:3]
    assert len(reads) > 50


@pytest.mark.parametrize("b_mode", ["transaction", "session"])
def test_redis_stale_read_hunt_two_instances(sluice, cluster, redis, b_mode):
    """Writers through two instances sharing Redis, readers through both:
    no read is older than a write whose commit its writer had seen before
    the read began (a writer's ReadyForQuery waits for its invalidation to
    reach Redis; every hit checks the tables' generations there). b pools
    by transaction, or by session."""
    url = f"redis://127.0.0.1:{redis.port}/2"
    a = sluice(cache_config(cache=url, default_pool_size=8))
    b = sluice(cache_config(cache=url, default_pool_size=8, pool_mode=b_mode))
    wait_until(lambda: redis_state(a) == "up" and redis_state(b) == "up", 10, "redis up")
    committed = {i: 0 for i in range(1, 4)}
    lock = threading.Lock()
    errors = []
    stop = threading.Event()

    def writer(i, s):
        with s.connect() as w:
            for n in range(1, 101):
                w.execute("UPDATE cache_t SET v = %s WHERE id = %s", (n, i))
                with lock:
                    committed[i] = n
                time.sleep(0.01)

    def reader(s):
        with s.connect() as r:
            while not stop.is_set():
                with lock:
                    floor = dict(committed)
                rows = dict(r.execute("SELECT id, v FROM cache_t WHERE id <= 3").fetchall())
                errors.extend((i, rows[i], v) for i, v in floor.items() if rows[i] < v)

    writers = [threading.Thread(target=writer, args=(i, (a, b)[i % 2])) for i in committed]
    readers = [threading.Thread(target=reader, args=(s,)) for s in (a, b, a, b)]
    for t in writers + readers:
        t.start()
    for t in writers:
        t.join(60)
    time.sleep(1)
    stop.set()
    for t in readers:
        t.join(60)
    assert not errors, errors[:5]
    assert hits(a) > 0 and hits(b) > 0, (hits(a), hits(b))


def test_memory_bound_holds_under_unique_queries(sluice, cluster):
    """Thousands of distinct cacheable statements into a small store: its
    bytes (entries and its own tables, counted exactly) never pass
    cache_max_memory; once full, new answers evict old ones or, used no more
    often than those, are not admitted (TinyLFU)."""
    s = sluice(cache_config(cache_max_memory="1MB", cache_max_entry_size="16kB"))
    with s.connect() as conn:
        # Warmed with the same functions and tables: until pg_proc has told
        # repeat()'s volatility, such statements are not cached at all.
        warm(s, conn, "SELECT v, repeat('x', 200) FROM cache_t WHERE id = 1")
        for i in range(3000):
            conn.execute(f"SELECT v, {i} AS n, repeat('x', 200) FROM cache_t WHERE id = 1").fetchall()
            if i % 500 == 0:
                row = cache_rows(s)["*"]
                assert row["bytes"] <= row["max_bytes"], row
    row = cache_rows(s)["*"]
    assert row["bytes"] <= row["max_bytes"] == 1 << 20, row
    assert row["entries"] > 100, row
    assert row["evictions"] + row["refused_other"] > 0, row  # full: something had to give
