"""Refresh jobs (issue 14, docs/jobs.md): the seed's orders table and its
daily_sales_summary materialized view, refreshed by RUN JOB, after writes
and on a schedule, on the primary, by one sluice instance at a time.

The every-minute cron check over two minutes is slow and runs only with
SLUICE_JOBS_SLOW=1 (make test-jobs-slow)."""

import os
import re
import threading
import time

import psycopg
import pytest

from sluice_fixture import IS_PGBOUNCER, free_port, release_port, wait_until
from test_admin import admin, show
from test_metrics import scrape

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="refresh jobs are sluice's own")

# The database entry names the user jobs log in as (and its password).
DB = "host=127.0.0.1 port={primary_port} dbname=mydb user=md5_user password=md5_user_pw"

REFRESH = "REFRESH MATERIALIZED VIEW CONCURRENTLY daily_sales_summary"
# Far in the future: a job that runs only when asked (RUN JOB) or after writes.
NEVER = "0 0 1 1 *"

SEED = """
DROP MATERIALIZED VIEW IF EXISTS daily_sales_summary;
DROP TABLE IF EXISTS orders, job_runs;
CREATE TABLE orders (id bigserial PRIMARY KEY, created_at timestamptz NOT NULL DEFAULT now(),
                     amount numeric(12,2) NOT NULL);
CREATE MATERIALIZED VIEW daily_sales_summary AS
  SELECT date_trunc('day', created_at) AS day, count(*) AS orders, sum(amount) AS total
  FROM orders GROUP BY 1;
CREATE UNIQUE INDEX daily_sales_summary_day ON daily_sales_summary (day);
CREATE TABLE job_runs (id bigserial PRIMARY KEY, job text NOT NULL, at timestamptz DEFAULT now(),
                       minute timestamptz DEFAULT date_trunc('minute', now()));
ALTER TABLE orders OWNER TO md5_user;
ALTER MATERIALIZED VIEW daily_sales_summary OWNER TO md5_user;
ALTER TABLE job_runs OWNER TO md5_user;
INSERT INTO orders (amount) VALUES (10), (20);
REFRESH MATERIALIZED VIEW daily_sales_summary;
"""


@pytest.fixture
def seed(cluster):
    with cluster.primary_conn() as conn:
        conn.execute(SEED)
    return cluster


def jobs_config(jobs, **general):
    return {"databases": {"mydb": DB}, "jobs": jobs, "pgbouncer": general}


def job_row(s, name):
    with admin(s) as con:
        rows = [r for r in show(con, "JOBS") if r["name"] == name]
    assert len(rows) == 1, rows
    return rows[0]


def wait_result(s, name, runs=None, results=("ok",), timeout=15, field="runs"):
    """Wait until job name's last result is one of results (and, with runs,
    its `field` count reached runs); return its SHOW JOBS row."""
    def done():
        r = job_row(s, name)
        if r["state"] != "idle" or r["result"] not in results:
            return None
        return r if runs is None or r[field] >= runs else None
    try:
        return wait_until(done, timeout, f"job {name} {results}")
    except TimeoutError:
        raise AssertionError(f"job {name}: {job_row(s, name)}\n{s.log_tail()}") from None


def run_job(s, name):
    with admin(s) as con:
        cur = con.execute(f"RUN JOB {name}")
        assert cur.statusmessage == "RUN JOB"


def view_total(cluster):
    with cluster.primary_conn() as conn:
        return conn.execute("SELECT coalesce(sum(orders), 0) FROM daily_sales_summary").fetchone()[0]


class ViewReader:
    """Reads the view in a loop (a thread) while a with-block runs: counts
    the reads, the errors and the empty answers."""

    def __init__(self, cluster):
        self.cluster, self.reads, self.errors, self.empty = cluster, 0, [], 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        with self.cluster.primary_conn() as conn:
            conn.autocommit = True
            while not self._done.is_set():
                try:
                    n = conn.execute("SELECT count(*) FROM daily_sales_summary").fetchone()[0]
                    self.reads += 1
                    self.empty += n == 0
                except psycopg.Error as e:
                    self.errors.append(str(e))
                time.sleep(0.005)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join(10)


def test_run_job_refreshes_the_view(sluice, seed):
    """RUN JOB refreshes the view on the primary, CONCURRENTLY: readers meanwhile
    never see an error or an empty view. SHOW JOBS and /metrics tell the run."""
    s = sluice(jobs_config({"refresh_sales": f'database=mydb schedule="0 * * * *" '
                                              f'command="{REFRESH}"'},
                           metrics_listen="127.0.0.1:{metrics_port}"))
    row = job_row(s, "refresh_sales")
    assert row["database"] == "mydb" and row["schedule"] == "0 * * * *"
    assert row["state"] == "idle" and row["result"] is None and row["runs"] == 0
    # The next run of "0 * * * *" is the next full hour (UTC).
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:00:00\+00", row["next_run"]), row
    with seed.primary_conn() as conn:
        conn.execute("INSERT INTO orders (amount) SELECT 1 FROM generate_series(1, 2000)")
    assert view_total(seed) == 2
    with ViewReader(seed) as reader:
        for i in range(3):
            run_job(s, "refresh_sales")
            wait_result(s, "refresh_sales", runs=i + 1)
        time.sleep(0.2)
    assert reader.errors == [] and reader.empty == 0 and reader.reads > 10, vars(reader)
    assert view_total(seed) == 2002
    row = job_row(s, "refresh_sales")
    assert row["result"] == "ok" and row["error"] is None and row["failures"] == 0
    assert row["runs"] == 3 and row["skipped"] == 0 and row["duration_ms"] >= 0
    assert row["last_start"] is not None and row["lock_holder"].endswith(f":{s.pid}")
    s.wait_for_log(r"job refresh_sales: ok in \d+ ms \(RUN JOB\)")
    # On a connection of its own, as the database entry's user, not a pool's.
    with admin(s) as con:
        assert all(r["user"] != "md5_user" or r["state"] != "active"
                   for r in show(con, "SERVERS"))
    _, samples = scrape(s.metrics_port)
    labels = frozenset({"job": "refresh_sales", "database": "mydb"}.items())
    assert samples[("sluice_job_runs_total", labels)] == 3
    assert samples[("sluice_job_failures_total", labels)] == 0
    assert samples[("sluice_job_running", labels)] == 0
    assert samples[("sluice_job_last_success_timestamp_seconds", labels)] > time.time() - 60
    assert samples[("sluice_job_last_result", labels | {("result", "ok")})] == 1
    with admin(s) as con:
        with pytest.raises(psycopg.Error, match="no such job"):
            con.execute("RUN JOB nope")
        with pytest.raises(psycopg.Error, match="syntax: RUN JOB name"):
            con.execute("RUN JOB")


def test_refresh_triggers_jobs_after_writes_to_the_view(sluice, seed):
    """A refresh is a write to the view on the writes bus: a job after_writes_to
    it runs once after its debounce, however many refreshes came in a burst."""
    s = sluice(jobs_config({
        "refresh_sales": f'database=mydb schedule="{NEVER}" command="{REFRESH}"',
        "after_view": "database=mydb after_writes_to=public.daily_sales_summary debounce=1 "
                      "command=\"INSERT INTO job_runs (job) VALUES ('after_view')\"",
    }))
    for i in range(3):
        run_job(s, "refresh_sales")
        wait_result(s, "refresh_sales", runs=i + 1)
    row = wait_result(s, "after_view", runs=1, timeout=10)
    time.sleep(1.5)  # no second run for the same burst
    with seed.primary_conn() as conn:
        n = conn.execute("SELECT count(*) FROM job_runs WHERE job = 'after_view'").fetchone()[0]
    assert n == 1 and job_row(s, "after_view")["runs"] == 1, row
    assert row["after_writes_to"] == "public.daily_sales_summary" and row["schedule"] is None


def test_inserts_through_sluice_appear_in_the_view(sluice, seed):
    """Inserts into orders through sluice appear in the view within debounce +
    refresh time; readers never see an error or an empty view."""
    s = sluice(jobs_config({"refresh_sales": f"database=mydb after_writes_to=orders debounce=1 "
                                              f'command="{REFRESH}"'}))
    with ViewReader(seed) as reader, s.connect() as conn:
        for _ in range(20):
            conn.execute("INSERT INTO orders (amount) VALUES (5)")
        start = time.monotonic()
        wait_until(lambda: view_total(seed) == 22, 8, "the view to show the inserts")
        took = time.monotonic() - start
    assert took < 1 + 5, took
    assert reader.errors == [] and reader.empty == 0, vars(reader)
    assert job_row(s, "refresh_sales")["runs"] == 1


def test_two_instances_one_runner(sluice, seed):
    """Two sluice instances on one primary, RUN JOB on both at once: the
    advisory lock lets one run; the other skips and names the holder."""
    command = ("INSERT INTO job_runs (job) VALUES ('count_runs'); SELECT pg_sleep(1)")
    config = jobs_config({"count_runs": f'database=mydb schedule="{NEVER}" command="{command}"'})
    a, b = sluice(config), sluice(config)
    with admin(a) as ca, admin(b) as cb:
        ca.execute("RUN JOB count_runs")
        cb.execute("RUN JOB count_runs")
    rows = [wait_result(x, "count_runs", results=("ok", "skipped")) for x in (a, b)]
    assert sorted(r["result"] for r in rows) == ["ok", "skipped"], rows
    ran, skipped = (rows[0], rows[1]) if rows[0]["result"] == "ok" else (rows[1], rows[0])
    runner = a if ran is rows[0] else b
    assert ran["runs"] == 1 and ran["skipped"] == 0
    assert skipped["runs"] == 0 and skipped["skipped"] == 1 and skipped["failures"] == 0
    assert f"sluice job count_runs (" in skipped["lock_holder"]
    assert skipped["lock_holder"].endswith(f":{runner.pid})"), skipped
    with seed.primary_conn() as conn:
        n = conn.execute("SELECT count(*) FROM job_runs WHERE job = 'count_runs'").fetchone()[0]
    assert n == 1


def test_failures_are_visible_and_block_nothing(sluice, seed):
    """An SQL error, a timeout and a primary that does not answer are logged,
    shown and counted; clients go on meanwhile; the next run is tried again."""
    dead = free_port()
    try:
        s = sluice({"databases": {"mydb": DB,
                                  "dead": f"host=127.0.0.1 port={dead} dbname=mydb user=md5_user "
                                          "password=md5_user_pw"},
                    "jobs": {
                        "bad_sql": f'database=mydb schedule="{NEVER}" command="SELECT * FROM nope"',
                        "slow": f'database=mydb schedule="{NEVER}" timeout=0.3 '
                                'command="SELECT pg_sleep(5)"',
                        "nowhere": f'database=dead schedule="{NEVER}" command="SELECT 1"',
                    }})
        with s.connect() as client:
            for name in ("bad_sql", "slow", "nowhere"):
                run_job(s, name)
            # Clients are served while the jobs fail.
            assert client.execute("SELECT 42").fetchone()[0] == 42
            bad = wait_result(s, "bad_sql", results=("failed",))
            slow = wait_result(s, "slow", results=("timeout",))
            down = wait_result(s, "nowhere", results=("down",))
            assert client.execute("SELECT 43").fetchone()[0] == 43
    finally:
        release_port(dead)
    assert 'relation "nope" does not exist' in bad["error"] and bad["failures"] == 1
    assert bad["runs"] == 1
    assert "statement timeout" in slow["error"] and slow["failures"] == 1
    assert slow["duration_ms"] < 3000
    assert "could not connect" in down["error"] and down["runs"] == 0 and down["failures"] == 1
    s.wait_for_log(r'job bad_sql: failed \(RUN JOB\): ERROR: relation "nope" does not exist')
    s.wait_for_log(r"job slow: timeout \(RUN JOB\): ERROR: canceling statement due to statement "
                   r"timeout")
    # Tried again at the next occasion: it runs, and fails again, visibly.
    run_job(s, "bad_sql")
    assert wait_result(s, "bad_sql", results=("failed",), runs=2)["failures"] == 2


def test_reload_adds_changes_and_removes_jobs(sluice, seed):
    """A reload adds, changes and removes jobs; a bad cron expression is refused
    with file:line and the reason, and the jobs stay as they were."""
    s = sluice(jobs_config({"one": f'database=mydb schedule="{NEVER}" command="SELECT 1"',
                            "two": f'database=mydb schedule="{NEVER}" command="SELECT 2"'}))
    with admin(s) as con:
        assert [r["name"] for r in show(con, "JOBS")] == ["one", "two"]
    s.write_config(jobs_config({
        "one": "database=mydb schedule=\"*/5 9-17 * * mon-fri\" "
               "command=\"INSERT INTO job_runs (job) VALUES ('one')\"",
        "three": f'database=mydb after_writes_to=orders command="{REFRESH}"'},
        job_timezone="Europe/Berlin"))
    with admin(s) as con:
        con.execute("RELOAD")
        rows = {r["name"]: r for r in show(con, "JOBS")}
    assert sorted(rows) == ["one", "three"]
    assert rows["one"]["schedule"] == "*/5 9-17 * * mon-fri"
    assert rows["three"]["after_writes_to"] == "orders" and rows["three"]["next_run"] is None
    run_job(s, "one")
    wait_result(s, "one", runs=1)
    with seed.primary_conn() as conn:
        assert conn.execute("SELECT count(*) FROM job_runs WHERE job = 'one'").fetchone()[0] == 1
    # A bad cron expression: refused, file and line named; the jobs stay.
    since = s.log_mark()
    s.write_config("[databases]\nmydb = " + DB + "\n[jobs]\n"
                   'broken = database=mydb schedule="61 * * * *" command="SELECT 1"\n'
                   "[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nauth_type = md5\n"
                   "auth_file = {auth_file}\nadmin_users = sluice\nunix_socket_dir =\n")
    with admin(s) as con:
        with pytest.raises(psycopg.Error, match="RELOAD failed"):
            con.execute("RELOAD")
        assert sorted(r["name"] for r in show(con, "JOBS")) == ["one", "three"]
    s.wait_for_log(r'sluice.ini:4: bad schedule "61 \* \* \* \*": minute 61 is out of range 0-59',
                   since=since)


@pytest.mark.skipif(not os.environ.get("SLUICE_JOBS_SLOW"),
                    reason="two minutes: make test-jobs-slow (SLUICE_JOBS_SLOW=1)")
@pytest.mark.timeout(300)
def test_every_minute_on_two_instances(sluice, seed):
    """A job every minute on two instances of one primary, watched over two
    minutes: each minute's run happens exactly once."""
    command = "INSERT INTO job_runs (job) VALUES ('minutely')"
    config = jobs_config({"minutely": f'database=mydb schedule="* * * * *" command="{command}"'})
    a, b = sluice(config), sluice(config)
    start = time.time()
    # Past two whole minutes, plus the grace a run keeps its lock.
    end = (int(start // 60) + 3) * 60 + 12
    time.sleep(max(0, end - time.time()))
    with seed.primary_conn() as conn:
        rows = conn.execute("SELECT minute, count(*) FROM job_runs WHERE job = 'minutely' "
                            "GROUP BY 1 ORDER BY 1").fetchall()
    assert len(rows) >= 2, rows
    assert all(n == 1 for _, n in rows), rows
    ra, rb = job_row(a, "minutely"), job_row(b, "minutely")
    assert ra["runs"] + rb["runs"] == len(rows), (ra, rb, rows)
    assert ra["skipped"] + rb["skipped"] == len(rows), (ra, rb, rows)


def test_pause_holds_due_runs(sluice, seed):
    """While the database is paused, a due run waits; RESUME lets it go."""
    s = sluice(jobs_config({"paused": f'database=mydb schedule="{NEVER}" command="SELECT 1"'}))
    with admin(s) as con:
        con.execute("PAUSE mydb")
        con.execute("RUN JOB paused")
        time.sleep(0.5)
        row = job_row(s, "paused")
        assert row["state"] == "idle" and row["waiting"] == 1 and row["runs"] == 0, row
        con.execute("RESUME mydb")
    assert wait_result(s, "paused", runs=1)["waiting"] == 0


def test_job_timezone(sluice, seed):
    """Schedules are read in job_timezone: SET changes it at once; an unknown
    zone is refused and the running one stays."""
    from datetime import datetime, timedelta, timezone
    from zoneinfo import ZoneInfo

    s = sluice(jobs_config({"noon": 'database=mydb schedule="0 12 * * *" command="SELECT 1"'}))

    def expected(zone):
        now = datetime.now(ZoneInfo(zone))
        noon = now.replace(hour=12, minute=0, second=0, microsecond=0)
        if noon <= now:
            noon = (noon + timedelta(days=1)).replace(hour=12)
        return noon.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S+00")

    assert job_row(s, "noon")["next_run"] == expected("UTC")
    with admin(s) as con:
        con.execute("SET job_timezone = 'America/New_York'")
        assert job_row(s, "noon")["next_run"] == expected("America/New_York")
        with pytest.raises(psycopg.Error, match='time zone "Mars/Base": cannot open'):
            con.execute("SET job_timezone = 'Mars/Base'")
        rows = {r["key"]: r["value"] for r in show(con, "CONFIG")}
    assert rows["job_timezone"] == "America/New_York"


def test_a_refresh_drops_cached_answers_over_the_view(sluice, seed):
    """Issue 14, item 5: the result cache's answers over the refreshed view go
    after each run (the job tells the writes bus what it refreshed)."""
    config = jobs_config({"refresh_sales": f'database=mydb schedule="{NEVER}" '
                                           f'command="{REFRESH}"'}, cache="memory")
    config["cache"] = {"public.daily_sales_summary": "300"}
    s = sluice(config)
    sql = "SELECT coalesce(sum(orders), 0) FROM daily_sales_summary"
    with s.connect() as conn:
        def cached():
            with admin(s) as con:
                before = [r for r in show(con, "CACHE") if r["database"] == "mydb"]
            value = conn.execute(sql).fetchone()[0]
            with admin(s) as con:
                after = [r for r in show(con, "CACHE") if r["database"] == "mydb"]
            return before and after and after[0]["hits"] > before[0]["hits"] and value == 2
        wait_until(cached, 10, "the view's answer cached")
        with seed.primary_conn() as direct:
            direct.execute("INSERT INTO orders (amount) SELECT 1 FROM generate_series(1, 5)")
        assert conn.execute(sql).fetchone()[0] == 2  # cached: the view is not refreshed yet
        run_job(s, "refresh_sales")
        wait_result(s, "refresh_sales", runs=1)
        assert conn.execute(sql).fetchone()[0] == 7
