"""Abusive clients (issue 17 item 3): while one kind of abuse goes on, 50
well-behaved clients keep their latency, sluice's memory stays under a
bound and nothing crashes.

Each test measures the 50 clients (abuse_lib.GoodClients: `SELECT <nonce>`
every 50 ms each, 1,000 queries a second in all, timed by
tests/tools/goodclients.c) for ABUSE_SECONDS on a
quiet pooler, then for ABUSE_SECONDS while an abuser process (abuse_lib.Abuser)
does its worst, and checks:

- p99 under abuse <= max(2 x the quiet p99, P99_FLOOR_MS = 100 ms). The
  floor is there because this runs on a shared 2-core VM, with PostgreSQL,
  the abuser and the timed clients: quiet p99s are 0.6 to 2.1 ms, and the
  VM's own tasks and wake-ups take a CPU for 1 to 12 ms at a time, abused
  or not (docs/reliability.md, "Who had the CPUs"). A pooler that stalls
  for an abuser shows far more: the 1 GB reservation this suite found put
  the p99 at 1,000 to 2,800 ms;
- every answer carried its client's nonce and no client got an error;
- sluice's resident memory (VmRSS, sampled every 0.1 s) stays under
  baseline + RSS_SLACK_MIB + RSS_PER_CONN_KIB per abusive connection held
  open (docs/reliability.md explains the numbers: ASan's redzones and shadow
  memory make a connection cost several times what the release build spends);
- sluice is still running, and at teardown exits cleanly without a sanitizer
  report (the sluice fixture).

The abusers use their own user (plain_user), so they have a pool of their
own: a pool is sluice's unit of isolation, as PgBouncer's. Stalled or
non-reading clients hold their pool's servers until query_timeout (3 s
here) ends them, as in PgBouncer; docs/reliability.md says so.

Scale (env): ABUSE_SLOWLORIS (1,000; `make chaos`: 10,000),
ABUSE_GARBAGE (300; 1,000), ABUSE_CHURN_RATE (1,000 a second; 5,000),
ABUSE_CANCEL_RATE (500 a second; 2,000), ABUSE_SECONDS (2; 20).
ABUSE_REPORT: a file to append each scenario's counts to (JSON lines), with
each second's p99 of both windows (p99_ms_by_second). ABUSE_TIMINGS: a
directory to write each scenario's queries to (<scenario>.json: when each
was sent, on time.monotonic()'s clock, and its latency), for
tests/tools/abuse_attribution.py."""

import json
import os
import signal
import socket
import time

import pytest

from abuse_lib import Abuser, GoodClients, RssSampler, percentile
from sluice_fixture import (IS_PGBOUNCER, RawConn, process_sockets, raise_nofile_limit, rss_kib,
                            wait_until)

SECONDS = float(os.environ.get("ABUSE_SECONDS", "2"))
SLOWLORIS = int(os.environ.get("ABUSE_SLOWLORIS", "1000"))
GARBAGE = int(os.environ.get("ABUSE_GARBAGE", "300"))
CHURN_RATE = int(os.environ.get("ABUSE_CHURN_RATE", "1000"))
CANCEL_RATE = int(os.environ.get("ABUSE_CANCEL_RATE", "500"))
GOOD_CLIENTS = 50
P99_FLOOR_MS = 100.0
RSS_SLACK_MIB = 64
RSS_PER_CONN_KIB = 16
QUERY_TIMEOUT = 3
POOL_SIZE = 20

pytestmark = [pytest.mark.skipif(IS_PGBOUNCER, reason="sluice's own limits"),
              pytest.mark.timeout(240 + 4 * SECONDS)]


@pytest.fixture(autouse=True)
def small_quarantine(monkeypatch):
    """ASan keeps freed memory in a quarantine (256 MB by default) before
    reusing it, so RSS would measure the churn of allocations, not what is
    live. 16 MB still catches use-after-free of recent frees."""
    monkeypatch.setenv("ASAN_OPTIONS", "quarantine_size_mb=16")


def abuse_config(max_clients=2000, **extra):
    return {"pgbouncer": {"max_client_conn": max_clients, "default_pool_size": POOL_SIZE,
                          "query_timeout": QUERY_TIMEOUT, **extra}}


def backends_started(conn):
    """Sessions the primary has started so far (pg_stat_database.sessions of
    every database): each is a backend forked and logged in. conn stays open
    for the whole run, so that its own start and exit fall in no window."""
    return conn.execute("SELECT sum(sessions)::int FROM pg_stat_database").fetchone()[0]


def p99_by_second(latencies, sent):
    """The p99 of each second of a window, by send time (ms)."""
    seconds, start = {}, min(sent, default=0)
    for latency, at in zip(latencies, sent):
        seconds.setdefault(int(at - start), []).append(latency)
    return [round(percentile(seconds[k], 99) * 1e3, 1) for k in sorted(seconds)]


def run_abuse(s, name, abuser, held_conns=0, during=None):
    """Quiet run, then the abuse; check latency, memory and liveness; return
    the abuser's counts (with the measurements added)."""
    raise_nofile_limit(20000)
    good = GoodClients(s.port, GOOD_CLIENTS)
    counter = s.cluster.primary_conn()
    try:
        good.fill_pool(counter, POOL_SIZE)  # warm-up: every server connected,
        good.measure(1)  # and caches filled
        # The sampler runs in the quiet window too, so that both windows
        # carry the same measuring load (its reads of /proc) and differ only
        # by the abuse.
        started = backends_started(counter)
        with RssSampler(s.pid):
            quiet = good.measure(SECONDS)
        quiet_sent = good.sent
        base_kib = rss_kib(s.pid)
        started_quiet = backends_started(counter) - started
        abuser.start()
        started = backends_started(counter)
        with RssSampler(s.pid) as rss:
            loud = good.measure(SECONDS)
            extra = during() if during else {}
        loud_sent = good.sent
        started_abused = backends_started(counter) - started
        counts = abuser.stop()
        errors = list(good.errors)
    finally:
        good.close()
        counter.close()
    bound_kib = base_kib + RSS_SLACK_MIB * 1024 + RSS_PER_CONN_KIB * held_conns
    p99_quiet, p99_loud = percentile(quiet, 99) * 1e3, percentile(loud, 99) * 1e3
    # Each second's p99, by when the queries were sent: shows whether the
    # abused p99 is a burst or a level, and how noisy the quiet window was.
    by_second = {"quiet": p99_by_second(quiet, quiet_sent),
                 "abused": p99_by_second(loud, loud_sent)}
    if os.environ.get("ABUSE_TIMINGS"):  # for tests/tools/abuse_attribution.py
        with open(os.path.join(os.environ["ABUSE_TIMINGS"], f"{name}.json"), "w") as f:
            json.dump({"scenario": name, "quiet": {"sent": quiet_sent, "latency": quiet},
                       "abused": {"sent": loud_sent, "latency": loud}}, f)
    report = dict(scenario=name, seconds=SECONDS, good_clients=GOOD_CLIENTS,
                  queries_quiet=len(quiet), queries_abused=len(loud),
                  p99_quiet_ms=round(p99_quiet, 2), p99_abused_ms=round(p99_loud, 2),
                  rss_base_mib=round(base_kib / 1024, 1), rss_peak_mib=round(rss.peak_kib / 1024, 1),
                  rss_bound_mib=round(bound_kib / 1024, 1), peak_open_files=rss.peak_files,
                  backends_started_quiet=started_quiet, backends_started_abused=started_abused,
                  p99_ms_by_second=by_second, **counts, **extra)
    print(f"\nabuse {name}: {json.dumps(report)}")
    if os.environ.get("ABUSE_REPORT"):
        with open(os.environ["ABUSE_REPORT"], "a") as f:
            f.write(json.dumps(report) + "\n")
    why = json.dumps(report) + "\n" + s.log_tail(20)
    assert not errors, f"well-behaved clients failed: {errors[:5]}\n{why}"
    assert s.running(), f"sluice died\n{why}"
    # Paced clients: each sends 1 / 0.05 s; a pooler that stalls sends fewer.
    assert len(loud) >= 0.8 * GOOD_CLIENTS * SECONDS / 0.05, why
    assert p99_loud <= max(2 * p99_quiet, P99_FLOOR_MS), why
    assert rss.peak_kib <= bound_kib, why
    # And a newcomer still gets in.
    with RawConn(s.port) as conn:
        assert conn.login().query("SELECT 'after'") == [["after"]]
    return report


def test_slowloris(sluice):
    """ABUSE_SLOWLORIS connections each send their startup packet one byte
    a second (never finishing within client_login_timeout's 60 s): sluice
    holds them all, open, and serves everyone else."""
    s = sluice(abuse_config(max_clients=SLOWLORIS + 500))
    r = run_abuse(s, "slowloris", Abuser("slowloris", s.port, clients=SLOWLORIS),
                  held_conns=SLOWLORIS)
    assert r["opened"] == SLOWLORIS
    assert r["closed_by_pooler"] == 0  # login timeout is 60 s: still waiting for them
    assert r["peak_open_files"] >= SLOWLORIS  # they reached sluice, not just its backlog


def test_random_bytes_after_login(sluice):
    """ABUSE_GARBAGE clients log in, then send random bytes (raw, or framed
    as a message of a random type): each is ended with an ErrorResponse, or
    waits for the rest of the message its bytes declared (query_timeout
    ends it if it was forwarded)."""
    s = sluice(abuse_config())
    r = run_abuse(s, "garbage", Abuser("garbage", s.port, clients=GARBAGE), held_conns=GARBAGE)
    assert r["error"] + r["closed"] + r["closed_terminate"] + r["open"] == GARBAGE
    assert r["closed"] == 0, "a connection closed without an ErrorResponse"
    assert r["error"] >= GARBAGE * 0.8, r  # most random headers are refused at once


def test_huge_message_length(sluice):
    """Clients declaring a 1 GB message (in the startup packet, the password
    message, or a Query after login) get an ErrorResponse and are closed;
    sluice allocates nothing for it (the RSS bound)."""
    s = sluice(abuse_config())
    r = run_abuse(s, "huge_length", Abuser("huge_length", s.port, clients=60), held_conns=60)
    assert r.get("startup_error") == 20 and r["codes"].get("startup_08P01") == 20, r
    assert r.get("password_error") == 20 and r["codes"].get("password_08P01") == 20, r
    # Within max_packet_size (2 GB - 1 by default, as PgBouncer): the Query
    # waits for the rest in sluice, holding no server; query_timeout ends it.
    assert r.get("query_error") == 20 and r["codes"].get("query_57014") == 20, r


def test_huge_message_over_max_packet_size(sluice):
    """With max_packet_size below 1 GB the Query case is refused at once
    (08P01), without a server."""
    s = sluice(abuse_config(max_packet_size="64MB"))
    r = run_abuse(s, "huge_length_limited", Abuser("huge_length", s.port, clients=30),
                  held_conns=30)
    assert r.get("query_error") == 10 and r["codes"].get("query_08P01") == 10, r


def test_non_reading_clients(sluice, cluster):
    """Clients that ask for 200 MB each and never read: sluice stops reading
    their servers (RSS stays flat, no buffering of the result), and
    query_timeout frees the servers and closes the clients."""
    s = sluice(abuse_config())

    def servers_freed():
        # Within query_timeout (+ margin) of the start of the abuse, their
        # servers are gone from ClientWrite.
        time.sleep(max(0.0, QUERY_TIMEOUT + 1.5 - SECONDS))
        with cluster.primary_conn() as conn:
            stuck = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = "
                                 "'plain_user' AND wait_event = 'ClientWrite'").fetchone()[0]
        return {"servers_in_client_write": stuck}

    r = run_abuse(s, "non_reader", Abuser("non_reader", s.port, clients=10), held_conns=10,
                  during=servers_freed)
    assert r["servers_in_client_write"] == 0
    assert r["closed_by_pooler"] == 10


def test_connection_churn(sluice):
    """Connections opened and closed (reset) at ABUSE_CHURN_RATE a second,
    half of them after a startup packet."""
    s = sluice(abuse_config())
    r = run_abuse(s, "churn", Abuser("churn", s.port, rate=CHURN_RATE))
    assert r["failed"] == 0, r
    # The abuser (tests/tools/connstorm.c) may fall short of the rate on a
    # loaded box, but not by more than half.
    assert r["rate"] >= CHURN_RATE / 2, r


def test_cancel_storm(sluice):
    """CancelRequests at ABUSE_CANCEL_RATE a second with random keys, and 50 a
    second with the key of the abuser's own client (in its own pool): those
    cancel its queries, and never a well-behaved client's."""
    s = sluice(abuse_config())
    r = run_abuse(s, "cancel_storm", Abuser("cancel_storm", s.port, rate=CANCEL_RATE))
    assert r["victim_cancelled"] > 0, r  # the valid cancels did land
    assert r["victim_other_errors"] == 0, r
    assert r["random"] >= CANCEL_RATE * SECONDS / 2, r


def test_closed_non_reader_does_not_hold_its_socket_or_shutdown(sluice):
    """Regression (issue 17): a client closed by query_timeout while it had
    not read its result kept sluice's socket and buffer for as long as it
    did not read, and SIGTERM then never finished (client_close_all() went
    round it forever). Now its unsent bytes are dropped after
    CLIENT_FLUSH_STALL (10 s) without progress, and at once at shutdown."""
    s = sluice(abuse_config(query_timeout=1))

    def non_reader():
        conn = RawConn(s.port, timeout=30)
        # A small receive window: sluice's last bytes stay in its own buffer.
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        conn.login("plain_user")
        conn.send_query("SELECT repeat('x', 1000) FROM generate_series(1, 200000)")
        return conn

    def sluice_holds(conn):
        """Whether sluice still has its end of conn's TCP connection open."""
        port = conn.sock.getsockname()[1]
        mine = process_sockets(s.pid)
        with open("/proc/net/tcp") as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                local, remote = fields[1], fields[2]
                if (int(local.rsplit(":", 1)[1], 16) == s.port
                        and int(remote.rsplit(":", 1)[1], 16) == port):
                    return fields[9] in mine
        return False

    first = non_reader()
    s.wait_for_log(r"closing because: query timeout", timeout=10)
    closed_at = time.monotonic()
    time.sleep(1)
    assert sluice_holds(first), "its last bytes are still being written"
    wait_until(lambda: not sluice_holds(first), 20, "sluice to drop the stalled client")
    assert time.monotonic() - closed_at >= 5  # not before it stalled for long
    # Another one, closed and unread: SIGTERM still exits at once.
    second = non_reader()
    mark = s.log_mark()
    s.wait_for_log(r"closing because: query timeout", timeout=10, since=mark)
    s.signal(signal.SIGTERM)
    assert s.wait_exit(5) == 0, s.log_tail()
    first.close()
    second.close()
