"""Serverless upstreams: cold starts, connections the upstream drops,
keepalives, scale to zero, and host names resolved off the event loop.

These tests stop and start their own PostgreSQL (upstream_pg.py), never the
shared cluster's primary, so that tests running beside them are not hit."""

import re
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from sluice_fixture import IS_PGBOUNCER, PASSWORDS, keepalive_timer, wait_until
from upstream_pg import Certs, UpstreamPostgres, wait_backends

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="sluice's backoff and messages")


@pytest.fixture(scope="module")
def upstream():
    certs = Certs()
    pg = UpstreamPostgres(certs)
    yield pg
    pg.destroy()
    certs.cleanup()


@pytest.fixture
def running(upstream):
    """The upstream, started if a test left it stopped; no md5_user backends."""
    try:
        upstream.start()
    except subprocess.CalledProcessError:
        pass
    wait_until(lambda: not upstream.backends("md5_user"), 10, "no md5_user backends")
    return upstream


def config(upstream, host="127.0.0.1", **keys):
    keys.setdefault("server_tls_sslmode", "require")
    return {"databases": {"mydb": f"host={host} port={upstream.port} dbname=mydb"},
            "pgbouncer": keys}


def select_one(s, timeout=30):
    with psycopg.connect(host="127.0.0.1", port=s.port, dbname="mydb", user="md5_user",
                         password=PASSWORDS["md5_user"], connect_timeout=timeout,
                         autocommit=True, prepare_threshold=None) as conn:
        return conn.execute("SELECT 1").fetchone()[0]


def test_cold_start(sluice, running):
    """The upstream is down when 50 clients arrive and comes up 5 s later:
    the pooler retries with backoff and every client gets its answer."""
    upstream = running
    s = sluice(config(upstream, default_pool_size="10", max_client_conn="200",
                      server_login_retry="2"))
    upstream.stop()
    with ThreadPoolExecutor(50) as pool:
        futures = [pool.submit(select_one, s, 60) for _ in range(50)]
        time.sleep(5)
        upstream.start()
        up = time.monotonic()
        results = [f.result(timeout=60) for f in futures]
    late = time.monotonic() - up
    assert results == [1] * 50
    # The backoff (0.1 s, 0.2 s, ... capped at server_login_retry = 2 s)
    # reaches the upstream at most about 2 s after it is up.
    assert late < 2 + 3, late
    log = s.log_text()
    assert "Connection refused" in log


def test_cold_start_gives_up_with_one_clear_error(sluice, running):
    upstream = running
    s = sluice(config(upstream, query_wait_timeout="2"))
    upstream.stop()
    start = time.monotonic()
    with pytest.raises(psycopg.OperationalError) as e:
        select_one(s)
    took = time.monotonic() - start
    assert 1.5 < took < 6, took
    assert re.search(r"query_wait_timeout \(server connection failing: connect failed: "
                     r"Connection refused\)", str(e.value)), str(e.value)
    upstream.start()
    # Once the upstream is back, the same pooler serves again.
    wait_until(lambda: select_one(s) == 1, 20, "the pooler to reach the upstream again", 0.5)


def test_backoff_grows(sluice, running):
    """Attempts while the upstream is down come at growing intervals."""
    upstream = running
    s = sluice(config(upstream, query_wait_timeout="4", log_connections="1"))
    upstream.stop()
    with pytest.raises(psycopg.OperationalError):
        select_one(s)
    attempts = len(re.findall(r"closing because: connect failed", s.log_text()))
    # 0.1, 0.2, 0.4, 0.8, 1.6 s apart (at the janitor's 0.25 s ticks): about
    # 5-7 in 4 s, where a fixed 0.1 s would be 40 and server_login_retry 1.
    assert 3 <= attempts <= 9, attempts


@pytest.mark.parametrize("check_delay", ["0", None])
def test_terminated_idle_servers_replaced(sluice, running, check_delay):
    """pg_terminate_backend() on every idle server, then 1,000 queries: none
    fails. With server_check_delay = 0 every server is pinged before use, so
    no race with the termination is possible; without it the test waits until
    the pooler has seen the terminations (the FATAL and EOF of an idle
    server), as it would have long before a real client's next query."""
    upstream = running
    keys = dict(default_pool_size="4", server_check_query="select 1")
    if check_delay is not None:
        keys["server_check_delay"] = check_delay
    s = sluice(config(upstream, **keys))
    conns = [s.connect() for _ in range(4)]
    barrier = threading.Barrier(4)

    def warm(conn):
        with conn.transaction():
            barrier.wait(10)
            conn.execute("SELECT pg_sleep(0.1)")

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(warm, conns))
    wait_backends(upstream, "md5_user", 4)
    mark = s.log_mark()
    assert upstream.terminate("md5_user") == 4
    if check_delay is None:
        for _ in range(4):
            s.wait_for_log(r"closing because: FATAL: terminating connection due to "
                           r"administrator command", since=mark)
            mark = s.log_text().index("administrator command", mark) + 1
    failures = 0
    for i in range(1000):
        conn = conns[i % 4]
        try:
            assert conn.execute("SELECT %s::int", (i,)).fetchone() == (i,)
        except psycopg.Error:
            failures += 1
    for conn in conns:
        conn.close()
    assert failures == 0


def test_server_lifetime_recycles(sluice, running):
    upstream = running
    s = sluice(config(upstream, server_lifetime="1", default_pool_size="1"))
    with s.connect() as conn:
        first = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        time.sleep(1.6)
        wait_until(lambda: first not in upstream.backends("md5_user"), 5, "the old server to go")
        second = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    assert second != first


def test_keepalive_reaches_socket(sluice, running):
    """tcp_keepidle/intvl/cnt are set on server sockets: `ss -o` shows the
    keepalive timer, counting down from tcp_keepidle."""
    upstream = running
    s = sluice(config(upstream, tcp_keepalive="1", tcp_keepidle="7", tcp_keepintvl="3",
                      tcp_keepcnt="4"))
    with s.connect() as conn:
        conn.execute("SELECT 1")
        value = keepalive_timer(s.pid, f"( dport = :{upstream.port} )")
    assert 0 < value <= 7, value


def test_scale_to_zero(sluice, running):
    """min_pool_size = 0 and server_idle_timeout: every server closes when
    idle, and the next client is served from cold."""
    upstream = running
    s = sluice(config(upstream, min_pool_size="0", server_idle_timeout="1",
                      default_pool_size="3"))
    with ThreadPoolExecutor(3) as pool:
        assert list(pool.map(lambda _: select_one(s), range(3))) == [1, 1, 1]
    assert upstream.backends("md5_user")
    wait_backends(upstream, "md5_user", 0, timeout=6)
    # Cold path: the pool has no server at all.
    assert select_one(s) == 1
    # And with the upstream itself gone to zero and back.
    wait_backends(upstream, "md5_user", 0, timeout=6)
    upstream.stop()
    upstream.start()
    assert select_one(s) == 1


def test_dns_name_resolved(sluice, running):
    """A host given by name is resolved off the loop (and cached)."""
    upstream = running
    s = sluice(config(upstream, host="localhost", verbose="1"))
    for _ in range(3):
        assert select_one(s) == 1


def test_dns_failure_is_clear(sluice, running):
    upstream = running
    s = sluice(config(upstream, host="no-such-host.invalid", query_wait_timeout="2"))
    with pytest.raises(psycopg.OperationalError, match=r'could not resolve "no-such-host.invalid"'):
        select_one(s)
    # The loop was never blocked: the admin console answers meanwhile.
    assert 'could not resolve "no-such-host.invalid"' in s.log_text()
