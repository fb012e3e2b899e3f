"""The status page at "/" of metrics_listen (docs/insights.md, "The page"):
what a browser shows, checked in a real headless browser (Debian's
chromium: a screenshot is taken and the page's text compared with the
console's live figures), the plain HTTP answer, and the Grafana dashboard
(docs/grafana/sluice.json) against the series /metrics really has."""

import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

from sluice_fixture import IS_PGBOUNCER, wait_until
from test_admin import admin, show
from test_insights import named
from test_metrics import http, scrape
from test_routing import SPLIT

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="sluice's own page")

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "docs/grafana/sluice.json"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

# A database name and a query text a page must escape: in the browser they
# must read as written, and never become markup.
ODD_DB = 'odd<&>"db'
ODD_ALIAS = "<script>document.title='x'</script>&amp;"
ODD_QUERY = f'SELECT page_odd AS "{ODD_ALIAS}" FROM (VALUES (1)) v(page_odd)'
CACHED = named("page_cached") + " /* sluice:cache ttl=60 */"
WINDOW = (1280, 2400)


def page_config():
    primary = "host=127.0.0.1 port={primary_port} dbname=mydb"
    return {
        "databases": {
            "mydb": SPLIT["databases"]["mydb"],
            # One server: a second client waits while the first holds it.
            "waitdb": primary + " pool_size=1",
            # Jobs log in as their database entry's user.
            "jobdb": primary + " user=md5_user password=md5_user_pw",
            ODD_DB: primary,
        },
        "pgbouncer": {**SPLIT["pgbouncer"], "metrics_listen": "127.0.0.1:{metrics_port}",
                      "cache": "memory", "replica_max_lag_bytes": "16kB",
                      "lag_check_interval": "0.05"},
        "cache": {},
        "jobs": {"page_job": 'database=jobdb command="SELECT 1" schedule="0 0 1 1 *"'},
    }


# ---- reading the page as a user sees it ----------------------------------------


class Page(HTMLParser):
    """The page's visible text by section (id of its <section>), its tables
    as rows of cell texts, the widths of the bars in each row, and every
    element seen (tag, attrs)."""

    def __init__(self, html):
        super().__init__(convert_charrefs=True)
        self.sections = {}
        self.elements = []
        self.title = ""
        self._section = None
        self._row = self._cell = None
        self._skip = 0
        self._in_title = False
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.elements.append((tag, a))
        if tag in ("style", "script"):
            self._skip += 1
        if tag == "title":
            self._in_title = True
        if tag in ("div", "p", "br", "td", "th") and self._section is not None:
            self._section["text"].append(" ")  # a new line or cell: words apart
            if self._cell is not None:
                self._cell.append(" ")
        if tag == "section":
            self._section = {"text": [], "rows": [], "bars": []}
            self.sections[a.get("id")] = self._section
        elif tag == "tr" and self._section is not None:
            self._row, self._bars = [], []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "i" and self._row is not None:
            m = re.fullmatch(r"width:([0-9.]+)%", a.get("style", ""))
            if m:
                self._bars.append(float(m.group(1)))

    def handle_endtag(self, tag):
        if tag in ("style", "script"):
            self._skip -= 1
        if tag == "title":
            self._in_title = False
        if tag in ("td", "th") and self._cell is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self._section["rows"].append(self._row)
            self._section["bars"].append(self._bars)
            self._row = None
        elif tag == "section":
            self._section = None

    def handle_data(self, data):
        if self._in_title:
            self.title += data
        if self._skip:
            return
        if self._cell is not None:
            self._cell.append(data)
        if self._section is not None:
            self._section["text"].append(data)

    def text(self, section):
        return " ".join("".join(self.sections[section]["text"]).split())

    def table(self, section):
        """Rows of a section's table as dicts by column header, with the
        bars' widths of each row under "_bars"."""
        rows, bars = self.sections[section]["rows"], self.sections[section]["bars"]
        assert rows, f"no table in {section}: {self.text(section)}"
        head = rows[0]
        return [dict(zip(head, r), _bars=b) for r, b in zip(rows[1:], bars[1:])]


def chromium(tmp_path, *args, url, timeout=90):
    """Runs headless chromium on url with args; returns its stdout. Its
    processes are a session of their own, ended by us on a timeout."""
    assert CHROMIUM, "chromium is not installed (scripts/deps.sh)"
    profile = tmp_path / "chromium-profile"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-extensions", "--disable-background-networking", "--disable-sync",
           "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={profile}",
           f"--window-size={WINDOW[0]},{WINDOW[1]}", *args, url]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, cwd=tmp_path)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    return out.decode()


class RecordingProxy:
    """Between the browser and the metrics port: forwards each connection's
    request and records the request line and the whole response, so a
    test sees every page the browser loaded, and when."""

    def __init__(self, upstream):
        self.upstream = upstream
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.exchanges = []  # (request line, response bytes)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        with conn:
            conn.settimeout(10)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                head += chunk
            with socket.create_connection(("127.0.0.1", self.upstream), timeout=10) as up:
                up.sendall(head)
                response = b""
                while chunk := up.recv(65536):
                    response += chunk
            self.exchanges.append((head.split(b"\r\n", 1)[0].decode(), response))
            conn.sendall(response)

    def pages(self):
        """The bodies of the page ("/") loaded so far."""
        return [r.partition(b"\r\n\r\n")[2].decode() for line, r in list(self.exchanges)
                if line.startswith("GET / ")]

    def close(self):
        self.server.close()


def png_size(path):
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24]), len(data)


def by(rows, **match):
    found = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    assert len(found) == 1, (match, rows)
    return found[0]


def queries(s):
    with admin(s) as a:
        return show(a, "QUERIES")


def replicas(s):
    with admin(s) as a:
        return {r["port"]: r for r in show(a, "REPLICAS")}


# ---- the browser test -------------------------------------------------------------


@pytest.fixture
def paused(cluster):
    """Replay paused on replica1, so its lag is certain; the table written
    to make WAL dropped after."""
    try:
        with cluster.replay_paused(cluster.replica_ports[0]) as port:
            yield port
    finally:
        with cluster.primary_conn() as conn:
            conn.execute("DROP TABLE IF EXISTS page_lag_t")


def traffic(s):
    """Queries of known counts, cache hits and a job's run."""
    with s.connect() as conn:
        for _ in range(7):
            conn.execute(named("page_seven")).fetchall()
        conn.execute(named("page_slow", "pg_sleep(0.3)")).fetchall()
        for _ in range(5):
            conn.execute(CACHED).fetchall()
    with s.connect(dbname=ODD_DB) as conn:
        conn.execute(ODD_QUERY).fetchall()
    with admin(s) as a:
        a.execute("RUN JOB page_job")
        wait_until(lambda: by(show(a, "JOBS"), name="page_job")["result"] == "ok", 15,
                   "the job's run")


def test_the_page_in_a_browser_shows_the_live_figures(sluice, cluster, paused, tmp_path):
    s = sluice(page_config())
    url = f"http://127.0.0.1:{s.metrics_port}/"
    traffic(s)
    # Lag: WAL written while replica1 does not replay it.
    with cluster.primary_conn() as conn:
        conn.execute("CREATE TABLE page_lag_t AS SELECT g, repeat('x', 100) AS pad "
                     "FROM generate_series(1, 2000) g")
    wait_until(lambda: replicas(s)[paused]["state"] == "lagging", 15, "replica1 lagging")
    # A client waiting for waitdb's one server, which another one holds.
    holder = s.connect(dbname="waitdb")
    holder.execute("BEGIN")
    holder.execute("SELECT 1")
    waiter_done = threading.Event()

    def waiter():
        with s.connect(dbname="waitdb") as conn:
            conn.execute("SELECT 2")
        waiter_done.set()

    thread = threading.Thread(target=waiter, daemon=True)
    thread.start()
    try:
        with admin(s) as a:
            wait_until(lambda: by(show(a, "POOLS"), database="waitdb")["cl_waiting"] == 1, 10,
                       "a waiting client")
            lag_before = replicas(s)[paused]["lag_bytes"]
            shot = tmp_path / "page.png"
            chromium(tmp_path, f"--screenshot={shot}", url=url)
            dom = chromium(tmp_path, "--dump-dom", url=url)
            lag_after = replicas(s)[paused]["lag_bytes"]
            pools = show(a, "POOLS")
            cache = by(show(a, "CACHE"), database="mydb")
            job = by(show(a, "JOBS"), name="page_job")
        qs = queries(s)
    finally:
        holder.execute("COMMIT")
        holder.close()
        thread.join(10)
    assert waiter_done.is_set()

    # The screenshot: a PNG of the window's size with something drawn.
    (width, height), size = png_size(shot)
    assert (width, height) == WINDOW
    assert size > 20000, size

    page = Page(dom)
    assert page.title == "sluice"
    # The browser parsed no markup out of the names and texts.
    assert not [e for e in page.elements if e[0] in ("script", "img", "iframe", "link", "object")]
    refresh = [e[1] for e in page.elements if e[0] == "meta" and e[1].get("http-equiv") == "refresh"]
    assert refresh and int(refresh[0]["content"]) > 0

    # Pools and their waiting clients, as SHOW POOLS has them.
    rows = page.table("pools")
    wait_row = by(rows, database="waitdb")
    assert wait_row["waiting"] == "1" and wait_row["clients active"] == "1"
    console = by(pools, database="waitdb")
    assert int(wait_row["servers active"]) == console["sv_active"] == 1
    assert "clients waiting: 1" in page.text("pools")
    assert by(rows, database=ODD_DB)["endpoint"] == "primary"

    # Replicas with their lag: replica1 lagging by what the console said
    # before and after the page was read (its replay is paused: it grows).
    rows = page.table("replicas")
    lagging = by(rows, endpoint=f"127.0.0.1:{paused}")
    assert lagging["state"] == "lagging"
    assert lag_before <= int(lagging["lag bytes"]) <= lag_after
    assert int(lagging["lag bytes"]) > 16384
    assert lagging["_bars"] and lagging["_bars"][0] > 0
    other = by(rows, endpoint=f"127.0.0.1:{cluster.replica_ports[1]}")
    assert other["state"] == "ok" and int(other["reads"]) >= 0
    assert by(rows, role="primary")["lag bytes"] == "-"

    # The cache's hit ratio, as SHOW CACHE has it.
    row = by(page.table("cache"), database="mydb")
    assert int(row["hits"]) == cache["hits"] >= 2
    assert int(row["misses"]) == cache["misses"]
    assert row["hit ratio"] == f"{100 * cache['hits'] / (cache['hits'] + cache['misses']):.1f}%"
    assert "hit ratio" in page.text("cache")
    # And its own entries in the store (the page had none before).
    assert int(row["entries"]) == cache["entries"] >= 1
    assert int(row["evictions"]) == cache["evictions"]
    assert row["bytes"].endswith("B") and row["bytes"][0].isdigit()

    # The job's run.
    row = by(page.table("jobs"), job="page_job")
    assert row["last result"] == "ok" and int(row["runs"]) == job["runs"] == 1
    assert row["database"] == "jobdb" and row["state"] == "idle"

    # The top queries: their text, calls, and p50/p95/p99 as bars.
    rows = page.table("queries")
    console = {q["fingerprint"]: q for q in qs}
    for name, calls in (("page_seven", 7), ("page_slow", 1), ("page_cached", 5)):
        row = [r for r in rows if f"SELECT {name} FROM" in r["query"]]
        assert len(row) == 1, [r["query"] for r in rows]
        row = row[0]
        assert int(row["calls"]) == calls == console[row["fingerprint"]]["calls"]
        assert console[row["fingerprint"]]["query"] == row["query"]
        p50, p95, p99 = row["_bars"]
        assert 0 <= p50 <= p95 <= p99 <= 100
        assert re.search(r"p50 .+ p95 .+ p99 ", row["latency"])
    cached = [r for r in rows if "page_cached" in r["query"]][0]
    assert int(cached["cache hits"]) == console[cached["fingerprint"]]["cache_hits"] >= 2
    # The slowest query (0.3 s, far above the others) fills its p99 bar: one
    # scale for every row.
    assert max(r["_bars"][2] for r in rows) == 100.0
    slow = [r for r in rows if "page_slow" in r["query"]][0]
    assert slow["_bars"][2] == 100.0
    # The odd text reads as written, and is no markup.
    odd = [r for r in rows if "page_odd" in r["query"]]
    assert len(odd) == 1 and ODD_ALIAS in odd[0]["query"]

    # Index advice: its section is there (the advisor fills it).
    assert "Index advice" in page.text("advice")


def seven_calls(html):
    rows = Page(html).table("queries")
    return int([r for r in rows if "SELECT page_seven FROM" in r["query"]][0]["calls"])


def test_the_page_reloads_itself_with_new_figures(sluice, tmp_path):
    """Left open in the browser, the page loads again by itself and shows
    what happened meanwhile."""
    s = sluice(page_config())
    traffic(s)
    proxy = RecordingProxy(s.metrics_port)
    browser = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-extensions", "--disable-background-networking", "--disable-sync",
         f"--user-data-dir={tmp_path / 'chromium-profile'}", f"http://127.0.0.1:{proxy.port}/"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until(lambda: proxy.pages(), 30, "the page loaded")
        started = time.monotonic()
        assert seven_calls(proxy.pages()[0]) == 7
        with s.connect() as conn:
            for _ in range(3):
                conn.execute(named("page_seven")).fetchall()
        wait_until(lambda: len(proxy.pages()) >= 2, 30, "the page reloaded")
        waited = time.monotonic() - started
    finally:
        os.killpg(browser.pid, signal.SIGKILL)
        browser.wait(10)
        proxy.close()
    # Every few seconds (the refresh is 5 s), with the new figures.
    assert 2 <= waited <= 20, waited
    assert seven_calls(proxy.pages()[1]) == 10
    # Nothing but the page itself was asked for (a browser may ask for an
    # icon: it gets 404).
    assert {line.split()[1] for line, _ in proxy.exchanges} <= {"/", "/favicon.ico"}


# ---- plain HTTP -------------------------------------------------------------------


def test_the_page_over_http(sluice):
    s = sluice(page_config())
    traffic(s)
    port = s.metrics_port
    status, headers, body = http(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert int(headers["content-length"]) == len(body)
    assert headers["cache-control"] == "no-store"
    assert "default-src 'none'" in headers["content-security-policy"]
    html = body.decode("utf-8")
    assert html.startswith("<!DOCTYPE html>")
    assert '<meta http-equiv="refresh" content="5">' in html
    for section in ("pools", "replicas", "cache", "jobs", "queries", "advice"):
        assert f'<section id="{section}">' in html, section
    # Nothing to fetch: no scripts, images, frames or style sheets; the only
    # link is to /metrics (relative: it works behind a proxy's prefix too).
    assert not re.search(r"<(script|img|iframe|link|object)\b", html, re.I)
    assert not re.search(r"\bsrc\s*=", html, re.I)
    assert re.findall(r'href="([^"]*)"', html) == ["metrics"]
    assert "url(" not in html and "@import" not in html
    # Names and texts escaped: in the markup, never raw.
    assert "odd&lt;&amp;&gt;&quot;db" in html and ODD_DB not in html
    assert "AS &quot;&lt;script&gt;document.title=&#39;x&#39;&lt;/script&gt;&amp;amp;&quot; FROM" \
        in html
    assert "<script" not in html
    # No index advice yet: the advisor's module fills the section.
    assert "no advice yet" in html

    status, headers, body = http(port, b"HEAD / HTTP/1.0\r\n\r\n")
    assert status == 200 and body == b"" and int(headers["content-length"]) > 1000
    status, _, body = http(port, b"GET /?refresh=1 HTTP/1.0\r\n\r\n")
    assert status == 200 and body.startswith(b"<!DOCTYPE html>")
    assert http(port, b"GET /index.html HTTP/1.1\r\n\r\n")[0] == 404
    assert http(port, b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n")[0] == 405

    # /metrics as before, and the dashboard's every series in it.
    types, samples = scrape(port)
    assert any(k[0] == "sluice_query_calls_total" for k in samples)
    live = set(types)
    # (The logical consumer's and the Redis tier's only where they are on.)
    missing = {name for name in dashboard_families() if name not in live and
               not name.startswith(("sluice_cache_logical_", "sluice_cache_redis_"))}
    assert not missing, f"dashboard series not in /metrics: {sorted(missing)}"


# ---- Grafana --------------------------------------------------------------------------

SERIES = re.compile(r"\bsluice_[a-z0-9_]+\b")


def dashboard_exprs():
    d = json.loads(DASHBOARD.read_text())
    exprs = []
    for p in d["panels"]:
        exprs += [t["expr"] for t in p.get("targets", [])]
    for v in d["templating"]["list"]:
        if v["type"] == "query":
            exprs.append(v["query"]["query"] if isinstance(v["query"], dict) else v["query"])
    return exprs


def family(name, families):
    """The family a series name belongs to (histogram and summary samples
    end in _bucket, _sum, _count)."""
    if name in families:
        return name
    base = re.sub(r"_(bucket|sum|count)$", "", name)
    return base if base in families else None


def source_families():
    """Every series name src/metrics*.c write: each is a literal there."""
    text = "".join(f.read_text() for f in sorted((REPO / "src").glob("metrics*.c")))
    names = set(re.findall(r'"(sluice_[a-z0-9_]+)', text))
    return {n for n in names if not re.search(r"_(bucket|sum|count)$", n) or
            re.sub(r"_(bucket|sum|count)$", "", n) not in names}


def dashboard_families():
    families = source_families()
    return {family(n, families) or n for e in dashboard_exprs() for n in SERIES.findall(e)}


def test_grafana_dashboard_is_importable_and_names_real_series():
    d = json.loads(DASHBOARD.read_text())
    assert d["uid"] and d["title"] == "sluice" and d["schemaVersion"] >= 30
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    titles = {p["title"] for p in d["panels"] if p["type"] == "row"}
    for topic in ("Pools", "Replicas", "cache", "Jobs", "Queries"):
        assert any(topic in t for t in titles), (topic, titles)
    for p in d["panels"]:
        assert {"h", "w", "x", "y"} <= set(p["gridPos"]), p["title"]
        if p["type"] == "row":
            continue
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}", p["title"]
            assert t["expr"].strip() and t["refId"], p["title"]
            assert t["expr"].count("(") == t["expr"].count(")"), t["expr"]
    # Every series an expression names is one src/metrics*.c write, and
    # every series it writes is on the dashboard.
    families = source_families()
    used = set()
    for expr in dashboard_exprs():
        for name in SERIES.findall(expr):
            assert family(name, families), f"{name} (in {expr}) is not in src/metrics*.c"
            used.add(family(name, families))
    assert families - used == set(), f"not on the dashboard: {sorted(families - used)}"
