"""The Prometheus endpoint (metrics_listen): the text format, agreement with
SHOW STATS / SHOW POOLS under load, and the HTTP responder's edges."""

import math
import re
import socket
import threading
import time

import psycopg
import pytest

from sluice_fixture import IS_PGBOUNCER, wait_until

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="sluice's own metrics endpoint")

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')


def http(port, request, timeout=5):
    """Sends raw request bytes; returns (status, headers dict, body bytes)
    once the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def unescape(value):
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def parse_exposition(text):
    """Parses the text format strictly. Returns (types, samples) where
    samples maps (name, frozenset of label pairs) to a float."""
    types, helps, samples = {}, {}, {}
    for line in text.split("\n"):
        if not line:
            continue
        if line.startswith("# HELP "):
            name, _, doc = line[7:].partition(" ")
            assert name not in helps, f"two HELP lines for {name}"
            helps[name] = doc
            continue
        if line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped"), line
            assert name not in types, f"two TYPE lines for {name}"
            types[name] = kind
            continue
        assert not line.startswith("#"), line
        m = SAMPLE.match(line)
        assert m, f"bad sample line: {line!r}"
        name, _, labels_text, value = m.groups()
        labels = {}
        if labels_text:
            pos = 0
            while pos < len(labels_text):
                lm = LABEL.match(labels_text, pos)
                assert lm, f"bad labels in {line!r}"
                labels[lm.group(1)] = unescape(lm.group(2))
                pos = lm.end()
        family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in types else name
        assert family in types, f"sample {name} without # TYPE"
        assert family in helps, f"sample {name} without # HELP"
        key = (name, frozenset(labels.items()))
        assert key not in samples, f"duplicate sample {line!r}"
        samples[key] = float(value)
    return types, samples


def scrape(port):
    status, headers, body = http(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    assert int(headers["content-length"]) == len(body)
    return parse_exposition(body.decode())


def value(samples, name, **labels):
    return samples[(name, frozenset(labels.items()))]


def check_histogram(samples, name):
    """Buckets cumulative, +Inf = _count; returns _count."""
    buckets = sorted(
        (math.inf if dict(k[1])["le"] == "+Inf" else float(dict(k[1])["le"]), v)
        for k, v in samples.items() if k[0] == name + "_bucket")
    assert len(buckets) > 5
    counts = [v for _, v in buckets]
    assert counts == sorted(counts), f"{name} buckets not cumulative: {buckets}"
    assert buckets[-1][0] == math.inf
    count = value(samples, name + "_count")
    assert buckets[-1][1] == count
    assert value(samples, name + "_sum") >= 0
    return count


def admin(s):
    return psycopg.connect(s.dsn(user="sluice", dbname="pgbouncer"), autocommit=True)


def show(conn, topic):
    cur = conn.execute(f"SHOW {topic}")
    names = [d.name for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


def stats_row(conn, db="mydb"):
    return [r for r in show(conn, "STATS") if r["database"] == db][0]


@pytest.fixture
def metered(sluice):
    return sluice({"pgbouncer": {"metrics_listen": "127.0.0.1:{metrics_port}",
                                 "default_pool_size": "2"}})


STAT_METRICS = {
    "total_xact_count": ("sluice_xacts_total", 1),
    "total_query_count": ("sluice_queries_total", 1),
    "total_received": ("sluice_received_bytes_total", 1),
    "total_sent": ("sluice_sent_bytes_total", 1),
    "total_xact_time": ("sluice_xact_time_seconds_total", 1e6),
    "total_query_time": ("sluice_query_time_seconds_total", 1e6),
    "total_wait_time": ("sluice_wait_time_seconds_total", 1e6),
    "total_server_assignment_count": ("sluice_server_assignments_total", 1),
    "total_replica_read_count": ("sluice_replica_reads_total", 1),
    "total_retry_count": ("sluice_retries_total", 1),
    "total_server_kept_count": ("sluice_servers_kept_total", 1),
    "total_client_parse_count": ("sluice_client_parses_total", 1),
    "total_server_parse_count": ("sluice_server_parses_total", 1),
    "total_bind_count": ("sluice_binds_total", 1),
}


def test_metrics_agree_with_console_under_load(metered):
    s = metered
    stop = threading.Event()
    done = [0] * 4
    errors = []

    def client(i):
        try:
            with s.connect() as conn:
                while not stop.is_set():
                    if done[i] % 3 == 0:
                        with conn.transaction():
                            conn.execute("SELECT pg_sleep(0.001)")
                            conn.execute("SELECT %s::text", (f"row {i}",))
                    else:
                        conn.execute("SELECT 1")
                    done[i] += 1
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(4)]
    for t in threads:
        t.start()
    with admin(s) as conn:
        wait_until(lambda: sum(done) > 50, 10, "some queries")
        # Under load: each metric lies between two console readings.
        for _ in range(3):
            before = stats_row(conn)
            _, samples = scrape(s.metrics_port)
            after = stats_row(conn)
            for col, (name, scale) in STAT_METRICS.items():
                got = value(samples, name, database="mydb") * scale
                assert int(before[col]) - 1 <= round(got) <= int(after[col]) + 1, (col, before,
                                                                                   got, after)
            assert value(samples, "sluice_pool_clients", database="mydb", user="md5_user",
                         endpoint="primary", state="active") + value(
                             samples, "sluice_pool_clients", database="mydb", user="md5_user",
                             endpoint="primary", state="waiting") == 4
            check_histogram(samples, "sluice_query_duration_seconds")
            check_histogram(samples, "sluice_wait_duration_seconds")
            time.sleep(0.1)
        stop.set()
        for t in threads:
            t.join(10)
        assert not errors, errors
        assert sum(done) > 50

        # Quiescent: exact agreement.
        stats = stats_row(conn)
        types, samples = scrape(s.metrics_port)
        for col, (name, scale) in STAT_METRICS.items():
            assert types[name] == "counter"
            assert round(value(samples, name, database="mydb") * scale) == int(stats[col]), col
        pools = [r for r in show(conn, "POOLS") if r["database"] == "mydb"]
        assert len(pools) == 1
        pool = pools[0]
        assert pool["endpoint"] == "primary"
        labels = dict(database="mydb", user="md5_user", endpoint="primary")
        assert value(samples, "sluice_pool_clients", state="active", **labels) == pool["cl_active"]
        assert value(samples, "sluice_pool_clients", state="waiting", **labels) == 0
        for state in ("active", "idle", "used", "tested", "login"):
            assert value(samples, "sluice_pool_servers", state=state, **labels) == \
                pool[f"sv_{state}"], state
        assert value(samples, "sluice_pool_max_wait_seconds", **labels) == 0
        assert types["sluice_pool_clients"] == "gauge"

        # Histograms: one observation per query and per server assignment.
        assert types["sluice_query_duration_seconds"] == "histogram"
        queries = sum(v for k, v in samples.items()
                      if k[0] == "sluice_queries_total" and dict(k[1])["database"] != "pgbouncer")
        assert check_histogram(samples, "sluice_query_duration_seconds") == queries
        assigned = sum(v for k, v in samples.items() if k[0] == "sluice_server_assignments_total")
        assert check_histogram(samples, "sluice_wait_duration_seconds") == assigned
        assert value(samples, "sluice_query_duration_seconds_sum") <= \
            value(samples, "sluice_query_time_seconds_total", database="mydb") + 1e-6

        version = show(conn, "VERSION")[0]["version"]
        build = [dict(k[1]) for k in samples if k[0] == "sluice_build_info"]
        assert len(build) == 1 and f"sluice {build[0]['version']}" in version
        assert value(samples, "sluice_process_resident_memory_bytes") > 1 << 20
        assert value(samples, "sluice_process_open_fds") >= 4
        wait_until(lambda: value(scrape(s.metrics_port)[1], "sluice_event_loop_lag_seconds",
                                 worker="0") >= 0, 3, "a lag sample")


def test_http_edges(metered):
    port = metered.metrics_port
    status, headers, body = http(port, b"GET /nope HTTP/1.1\r\n\r\n")
    assert status == 404 and headers["connection"] == "close"
    # "/" is the status page (test_page.py).
    assert http(port, b"GET / HTTP/1.1\r\n\r\n")[0] == 200
    status, headers, _ = http(port, b"POST /metrics HTTP/1.1\r\nContent-Length: 2\r\n\r\nab")
    assert status == 405 and headers["allow"] == "GET, HEAD"
    status, headers, body = http(port, b"HEAD /metrics HTTP/1.0\r\n\r\n")
    assert status == 200 and body == b"" and int(headers["content-length"]) > 100
    status, _, body = http(port, b"GET /metrics?x=1 HTTP/1.0\n\n")
    assert status == 200 and b"sluice_build_info" in body
    assert http(port, b"GET /metrics HTTP/2.0\r\n\r\n")[0] == 505
    assert http(port, b"garbage\r\n\r\n")[0] == 400
    big = b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n"
    assert http(port, big)[0] == 431


def test_slow_clients_do_not_block(metered):
    port = metered.metrics_port
    # Idle connections (more than the endpoint keeps) and one sending a
    # request byte by byte: scrapes and pooling go on.
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
    slow = socket.create_connection(("127.0.0.1", port))
    try:
        slow.sendall(b"GET /met")
        started = time.monotonic()
        scrape(port)
        with metered.connect() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert time.monotonic() - started < 2
        slow.sendall(b"rics HTTP/1.1\r\n\r\n")
        slow.settimeout(5)
        data = b""
        while chunk := slow.recv(65536):
            data += chunk
        assert data.startswith(b"HTTP/1.1 200 ")
    finally:
        for sock in idle + [slow]:
            sock.close()


def test_bad_metrics_listen_fails_start(sluice):
    s = sluice({"pgbouncer": {"metrics_listen": "no-port-here"}}, start=False)
    try:
        s.start(timeout=5)
    except AssertionError:
        pass  # exited before its port was seen open
    assert s.wait_exit(5, codes=(1,)) == 1
    assert "metrics_listen" in s.log_text()
