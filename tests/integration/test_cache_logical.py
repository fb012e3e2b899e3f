"""Writes that bypass sluice (cache_invalidation = logical, docs/cache.md):
a temporary pgoutput slot per database tells the result cache about every
committed change, whoever made it; while the slot does not stream, the
database's answers are not cached.

A write "behind sluice's back" goes straight to the primary. With logical
invalidation it must drop the answers over its table within the decoding
delay (milliseconds here; the tests poll for at most DECODING_BOUND)."""

import signal
import threading
import time

import psycopg
import pytest

from sluice_fixture import IS_PGBOUNCER, wait_until
from test_cache import behind_back, cache_rows, hits, warm
from test_metrics import scrape, value

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="sluice's result cache")

# How long after a direct write's COMMIT returned an answer cached before
# it may still be served: the time for the walsender to decode the commit,
# send it and sluice to read it, i.e. a few milliseconds on an idle box.
# 1 s leaves room for a loaded test machine (ASan, other test runs) and is
# still far below any TTL the tests use (300 s), so a stale answer that is
# never invalidated cannot pass.
DECODING_BOUND = 1.0

TABLES = {"public.lt_t": "300", "public.lt_other": "300"}


def logical_config(rules=None, databases=None, **general):
    config = {"pgbouncer": {"cache": "memory", "cache_invalidation": "logical",
                            **{k: str(v) for k, v in general.items()}},
              "cache": rules if rules is not None else TABLES}
    # The slot's connection logs in as the entry's user: a superuser of the
    # test cluster (REPLICATION, and CREATE PUBLICATION ... FOR ALL TABLES).
    config["databases"] = databases or {
        "mydb": "host=127.0.0.1 port={primary_port} dbname=mydb user=postgres"}
    return config


@pytest.fixture(scope="module", autouse=True)
def logical_cluster(cluster):
    """The primary decodes WAL (cluster.sh sets wal_level = logical; a
    cluster made before is restarted by `cluster.sh start` once), and no
    sluice_cache publication is left behind: FOR ALL TABLES makes UPDATE
    and DELETE fail on tables without a replica identity, which other
    test modules have."""
    with cluster.primary_conn() as conn:
        level = conn.execute("SHOW wal_level").fetchone()[0]
    if level != "logical":
        result = cluster.run("start", check=False)
        assert result.returncode == 0, result.stderr
        cluster.read_ports()
    with cluster.primary_conn() as conn:
        assert conn.execute("SHOW wal_level").fetchone()[0] == "logical"
        conn.execute("DROP PUBLICATION IF EXISTS sluice_cache")
    yield
    with cluster.primary_conn() as conn:
        conn.execute("DROP PUBLICATION IF EXISTS sluice_cache")
        conn.execute("DROP PUBLICATION IF EXISTS it_logical_pub")


@pytest.fixture(autouse=True)
def logical_objects(cluster):
    with cluster.primary_conn() as conn:
        conn.execute("DROP TABLE IF EXISTS lt_t, lt_other CASCADE")
        conn.execute("CREATE TABLE lt_t (id int PRIMARY KEY, v int)")
        conn.execute("INSERT INTO lt_t SELECT g, 0 FROM generate_series(1, 10) g")
        conn.execute("CREATE TABLE lt_other (id int PRIMARY KEY, v int)")
        conn.execute("INSERT INTO lt_other VALUES (1, 0)")
        conn.execute("GRANT ALL ON lt_t, lt_other TO PUBLIC")
    yield
    with cluster.primary_conn() as conn:
        conn.execute("DROP TABLE IF EXISTS lt_t, lt_other CASCADE")
        conn.execute("DROP FUNCTION IF EXISTS lt_copy_v()")


def logical_state(s, db="mydb"):
    return (cache_rows(s).get(db) or {}).get("logical") or ""


def wait_streaming(s, timeout=10):
    wait_until(lambda: logical_state(s) == "streaming", timeout, "the slot streaming")


def slots_of(cluster, pid):
    with cluster.primary_conn() as conn:
        return conn.execute("SELECT slot_name, active_pid, temporary FROM pg_replication_slots "
                            "WHERE slot_name LIKE %s", (f"sluice\\_{pid}\\_%",)).fetchall()


def stop(s):
    """SIGTERM, and a clean exit (teardown checks the log)."""
    s.signal(signal.SIGTERM)
    assert s.wait_exit(10) == 0


def fresh_within(conn, sql, expected, bound=DECODING_BOUND):
    """Reads sql until it answers expected; the time that took (fails past
    bound plus the polling's own slack)."""
    t0 = time.monotonic()
    wait_until(lambda: conn.execute(sql).fetchall() == expected, bound + 0.5,
               f"{sql!r} to answer {expected}", interval=0.005)
    return time.monotonic() - t0


def test_a_write_straight_to_the_primary_invalidates(sluice, cluster):
    s = sluice(logical_config(metrics_listen="127.0.0.1:{metrics_port}"))
    wait_streaming(s)
    (slot, pid, temporary), = slots_of(cluster, s.pid)
    assert temporary and pid
    row = cache_rows(s)["mydb"]
    assert row["logical"] == "streaming" and row["logical_lag_bytes"] >= 0
    with s.connect() as conn:
        sql = "SELECT v FROM lt_t WHERE id = 1"
        assert warm(s, conn, sql) == [(0,)]
        before = hits(s)
        behind_back(cluster, "UPDATE lt_t SET v = 7 WHERE id = 1")
        took = fresh_within(conn, sql, [(7,)])
        assert took < DECODING_BOUND, took
        # The answer is cached again afterwards, and the next direct write
        # (a DELETE, then a TRUNCATE of the other table) drops it as well.
        assert warm(s, conn, sql) == [(7,)] and hits(s) > before
        behind_back(cluster, "DELETE FROM lt_t WHERE id = 1")
        fresh_within(conn, sql, [])
        other = "SELECT count(*) FROM lt_other"
        assert warm(s, conn, other) == [(1,)]
        behind_back(cluster, "TRUNCATE lt_other")
        fresh_within(conn, other, [(0,)])
    samples = scrape(s.metrics_port)[1]
    assert value(samples, "sluice_cache_logical_up", database="mydb") == 1
    assert value(samples, "sluice_cache_logical_lag_bytes", database="mydb") >= 0
    # The slot confirms what it read: the server's view agrees within a
    # second or two (a status update every second).
    with cluster.primary_conn() as conn:
        def confirmed():
            lag = conn.execute("SELECT pg_current_wal_lsn() - confirmed_flush_lsn "
                               "FROM pg_replication_slots WHERE slot_name = %s",
                               (slot,)).fetchone()[0]
            return lag is not None and lag < 1024 * 1024
        wait_until(confirmed, 5, "the slot confirmed near the primary's position")
    assert "creating publication sluice_cache" in s.log_text()
    stop(s)
    assert slots_of(cluster, s.pid) == []  # temporary: gone with the connection


def test_a_direct_write_drops_only_its_own_schemas_table(sluice, cluster):
    """The logical stream names the schema of the table that changed:
    answers over a table of the same name in another schema stay."""
    with cluster.primary_conn() as conn:
        conn.execute("DROP SCHEMA IF EXISTS lt_a, lt_b CASCADE")
        for schema in ("lt_a", "lt_b"):
            conn.execute(f"CREATE SCHEMA {schema}")
            conn.execute(f"CREATE TABLE {schema}.lt_dup (id int PRIMARY KEY, v int)")
            conn.execute(f"INSERT INTO {schema}.lt_dup VALUES (1, 0)")
    try:
        s = sluice(logical_config({"lt_a.lt_dup": "300", "lt_b.lt_dup": "300"}))
        wait_streaming(s)
        a = "SELECT v FROM lt_a.lt_dup WHERE id = 1"
        b = "SELECT v FROM lt_b.lt_dup WHERE id = 1"
        with s.connect() as conn:
            assert warm(s, conn, a) == [(0,)]
            assert warm(s, conn, b) == [(0,)]
            behind_back(cluster, "UPDATE lt_b.lt_dup SET v = 1")
            fresh_within(conn, b, [(1,)])
            before = hits(s)
            assert conn.execute(a).fetchall() == [(0,)]
            assert hits(s) == before + 1  # answered from the cache: not dropped
    finally:
        with cluster.primary_conn() as conn:
            conn.execute("DROP SCHEMA IF EXISTS lt_a, lt_b CASCADE")


def test_a_trigger_writing_another_table_is_seen(sluice, cluster):
    """A write through sluice names lt_t; its trigger writes lt_other, which
    only the logical stream reports."""
    with cluster.primary_conn() as conn:
        conn.execute("CREATE FUNCTION lt_copy_v() RETURNS trigger LANGUAGE plpgsql AS $$ "
                     "BEGIN UPDATE lt_other SET v = NEW.v WHERE id = 1; RETURN NEW; END $$")
        conn.execute("CREATE TRIGGER lt_copy AFTER UPDATE ON lt_t FOR EACH ROW "
                     "EXECUTE FUNCTION lt_copy_v()")
    s = sluice(logical_config())
    wait_streaming(s)
    with s.connect() as conn, s.connect() as writer:
        sql = "SELECT v FROM lt_other WHERE id = 1"
        assert warm(s, conn, sql) == [(0,)]
        writer.execute("UPDATE lt_t SET v = 5 WHERE id = 2")
        took = fresh_within(conn, sql, [(5,)])
        assert took < DECODING_BOUND, took


def test_no_caching_while_the_slot_is_down(sluice, cluster):
    s = sluice(logical_config())
    wait_streaming(s)
    sql = "SELECT v FROM lt_t WHERE id = 3"
    with s.connect() as conn:
        assert warm(s, conn, sql) == [(0,)]
        (slot, pid, _), = slots_of(cluster, s.pid)
        with cluster.primary_conn() as pc:
            pc.execute("SELECT pg_terminate_backend(%s)", (pid,))
        wait_until(lambda: logical_state(s).startswith("failed"), 5, "the slot seen lost")
        # A write while no slot streams: nothing may serve the old answer,
        # neither now nor once a new slot streams.
        behind_back(cluster, "UPDATE lt_t SET v = 1 WHERE id = 3")
        down = logical_state(s)
        before = hits(s)
        for _ in range(3):
            assert conn.execute(sql).fetchall() == [(1,)]
        if not logical_state(s) == "streaming":
            assert hits(s) == before, "answered from the cache while the slot was down"
        wait_streaming(s)
        (new_slot, _, _), = slots_of(cluster, s.pid)
        assert new_slot != slot
        assert conn.execute(sql).fetchall() == [(1,)]
        assert warm(s, conn, sql) == [(1,)]  # caching resumed
        behind_back(cluster, "UPDATE lt_t SET v = 2 WHERE id = 3")
        fresh_within(conn, sql, [(2,)])
    assert down.startswith("failed: ") and "terminating connection" in down, down
    assert "logical decoding stopped" in s.log_text()


def test_stale_read_hunt_with_writes_straight_to_the_primary(sluice, cluster):
    """Writers bump counters straight on the primary while readers read
    them through the cache: a read that began DECODING_BOUND after a commit
    returned never shows a value older than that commit's."""
    s = sluice(logical_config(pool_mode="transaction", default_pool_size=8))
    wait_streaming(s)
    ids = (1, 2, 3)
    history = {i: [(0.0, 0)] for i in ids}  # (time the COMMIT returned, value)
    lock = threading.Lock()
    errors, worst = [], [0.0]
    stop = threading.Event()

    def writer(i):
        with cluster.primary_conn() as w:
            for n in range(1, 151):
                w.execute("UPDATE lt_t SET v = %s WHERE id = %s", (n, i))
                with lock:
                    history[i].append((time.monotonic(), n))
                time.sleep(0.01)  # room for reads to be cached between writes

    def reader():
        with s.connect() as r:
            while not stop.is_set():
                began = time.monotonic()
                rows = dict(r.execute("SELECT id, v FROM lt_t WHERE id <= 3").fetchall())
                with lock:
                    for i in ids:
                        # The first commit of a newer value than the one read:
                        # the read is that much behind it.
                        newer = next((t for t, v in history[i] if v > rows[i]), None)
                        if newer is not None and newer < began:
                            worst[0] = max(worst[0], began - newer)
                            if began - newer > DECODING_BOUND:
                                errors.append((i, rows[i], began - newer))

    threads = [threading.Thread(target=writer, args=(i,)) for i in ids]
    threads += [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads[:3]:
        t.join(60)
    time.sleep(DECODING_BOUND)  # the last values, read from the cache a while
    stop.set()
    for t in threads[3:]:
        t.join(60)
    print(f"\nworst staleness seen: {worst[0] * 1000:.1f} ms")
    assert not errors, errors[:5]
    assert cache_rows(s)["mydb"]["hits"] > 0
    # The last commits returned over DECODING_BOUND ago: their values, now
    # and from then on (nothing older was cached again meanwhile).
    with s.connect() as r:
        for _ in range(3):
            assert dict(r.execute("SELECT id, v FROM lt_t WHERE id <= 3").fetchall()) == \
                {i: 150 for i in ids}


def test_a_commit_not_visible_yet_is_not_cached_past_its_visibility(sluice, cluster):
    """A walsender sends a commit once its WAL is flushed, before the
    committing backend has ended it; a synchronous standby that never
    answers holds the commit in between, for as long as it likes. Reads
    meanwhile get the old row (the commit is not visible on the primary),
    and none of those may stay cached past it: once the commit is visible,
    the reads have the new row within DECODING_BOUND."""
    s = sluice(logical_config(pool_mode="transaction"))
    wait_streaming(s)
    behind_back(cluster, "UPDATE lt_t SET v = 1 WHERE id = 1")
    sql = "SELECT v FROM lt_t WHERE id = 1"
    with s.connect() as conn, cluster.primary_conn() as ctl, cluster.primary_conn() as w:
        fresh_within(conn, sql, [(1,)])
        assert warm(s, conn, sql) == [(1,)]
        writer_pid = w.info.backend_pid
        ctl.execute("ALTER SYSTEM SET synchronous_standby_names = 'sluice_test_nobody'")
        ctl.execute("SELECT pg_reload_conf()")
        writer = threading.Thread(target=w.execute, args=("UPDATE lt_t SET v = 2 WHERE id = 1",))
        try:
            wait_until(lambda: ctl.execute("SHOW synchronous_standby_names").fetchone()[0]
                       == "sluice_test_nobody", 5, "the setting reloaded")
            time.sleep(0.5)  # the checkpointer's reload turns synchronous commits on
            writer.start()
            wait_until(lambda: ctl.execute(
                "SELECT wait_event FROM pg_stat_activity WHERE pid = %s",
                (writer_pid,)).fetchone() == ("SyncRep",), 5, "the commit waiting for a standby")
            # The commit is decoded and sent meanwhile; sluice may read and
            # cache the old row again, which is right while it is not visible.
            deadline = time.monotonic() + DECODING_BOUND
            while time.monotonic() < deadline:
                assert conn.execute(sql).fetchall() == [(1,)]
                time.sleep(0.02)
        finally:
            ctl.execute("ALTER SYSTEM RESET synchronous_standby_names")
            ctl.execute("SELECT pg_reload_conf()")
            if writer.is_alive() or writer.ident:
                writer.join(10)
        assert not writer.is_alive()
        assert ctl.execute(sql).fetchall() == [(2,)]
        fresh_within(conn, sql, [(2,)])
        assert warm(s, conn, sql) == [(2,)]


def test_the_first_user_logs_the_slot_in_without_user_in_the_entry(sluice, cluster):
    """No user= in the entry: the slot waits for a client's pool (caching
    suspended meanwhile) and logs in as its user."""
    s = sluice(logical_config(databases={
        "mydb": "host=127.0.0.1 port={primary_port} dbname=mydb"}))
    time.sleep(0.3)
    assert logical_state(s).startswith("starting: waiting for a user"), logical_state(s)
    with s.connect(user="sluice") as conn:
        wait_streaming(s)
        sql = "SELECT v FROM lt_t WHERE id = 4"
        assert warm(s, conn, sql) == [(0,)]
        behind_back(cluster, "UPDATE lt_t SET v = 4 WHERE id = 4")
        fresh_within(conn, sql, [(4,)])


def test_a_database_of_the_star_entry_gets_a_slot(sluice, cluster):
    s = sluice(logical_config(databases={
        "mydb": None, "*": "host=127.0.0.1 port={primary_port} user=postgres"}))
    with s.connect() as conn:
        wait_streaming(s)
        sql = "SELECT v FROM lt_t WHERE id = 6"
        assert warm(s, conn, sql) == [(0,)]
        behind_back(cluster, "UPDATE lt_t SET v = 6 WHERE id = 6")
        fresh_within(conn, sql, [(6,)])


def test_a_named_publication(sluice, cluster):
    """cache_publication names one the operator made (here for lt_t only);
    a name that does not exist is a failure, and caching stays off."""
    s = sluice(logical_config(cache_publication="it_logical_missing"))
    wait_until(lambda: "does not exist" in logical_state(s), 5, "the missing publication")
    assert logical_state(s).startswith("failed: publication it_logical_missing")
    with s.connect() as conn:
        for _ in range(4):
            conn.execute("SELECT v FROM lt_t WHERE id = 5").fetchall()
            time.sleep(0.1)
    assert hits(s) == 0
    stop(s)
    with cluster.primary_conn() as conn:
        conn.execute("DROP PUBLICATION IF EXISTS it_logical_pub")
        conn.execute("CREATE PUBLICATION it_logical_pub FOR TABLE lt_t")
    s = sluice(logical_config(cache_publication="it_logical_pub"))
    wait_streaming(s)
    with s.connect() as conn:
        sql = "SELECT v FROM lt_t WHERE id = 5"
        assert warm(s, conn, sql) == [(0,)]
        behind_back(cluster, "UPDATE lt_t SET v = 5 WHERE id = 5")
        fresh_within(conn, sql, [(5,)])
    assert "creating publication" not in s.log_text()


@pytest.mark.parametrize("general, message", [
    ({"cache": "off", "cache_invalidation": "logical"},
     "cache_invalidation = logical needs the result cache"),
    ({"cache": "memory", "cache_invalidation": "triggers"},
     'invalid value "triggers" for cache_invalidation: expected one of off, logical'),
])
def test_bad_configs_are_refused(sluice, general, message):
    s = sluice({"pgbouncer": general}, start=False)
    try:
        s.start(timeout=5)
    except AssertionError:
        pass  # exited before its port was seen open
    assert s.wait_exit(5, codes=(1,)) == 1
    assert message in s.log_text()


def test_writes_straight_to_the_primary_trigger_refresh_jobs(sluice, cluster):
    """Issue 14, item 2: with cache_invalidation = logical, a job's
    after_writes_to counts writes that bypass sluice too."""
    from test_jobs import REFRESH, SEED, job_row, view_total, wait_result
    with cluster.primary_conn() as conn:
        conn.execute(SEED)
    try:
        config = logical_config()
        config["jobs"] = {"refresh_sales": "database=mydb after_writes_to=orders debounce=1 "
                                           f'command="{REFRESH}"'}
        s = sluice(config)
        wait_until(lambda: cache_rows(s).get("mydb", {}).get("logical") == "streaming", 15,
                   "the slot streaming")
        with cluster.primary_conn() as conn:
            for _ in range(5):
                conn.execute("INSERT INTO orders (amount) VALUES (5)")
        wait_result(s, "refresh_sales", runs=1, timeout=15)
        assert view_total(cluster) == 7
        assert job_row(s, "refresh_sales")["runs"] == 1
    finally:
        with cluster.primary_conn() as conn:
            conn.execute("DROP MATERIALIZED VIEW IF EXISTS daily_sales_summary")
            conn.execute("DROP TABLE IF EXISTS orders, job_runs")
