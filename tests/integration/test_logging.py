"""Log lines operators grep for: logins, disconnections, periodic stats."""

import re
import threading
import time

import psycopg
import pytest

from sluice_fixture import IS_PGBOUNCER

STATS = re.compile(r"stats: (\d+) xacts/s, (\d+) queries/s, in (\d+) B/s, out (\d+) B/s, "
                   r"xact (\d+) us, query (\d+) us, wait (\d+) us")


def test_log_connections_and_disconnections(sluice):
    s = sluice({"pgbouncer": {"log_connections": 1, "log_disconnections": 1}})
    mark = s.log_mark()
    with s.connect(user="scram_user") as conn:
        conn.execute("SELECT 1")
        login = s.wait_for_log(r"C-0x[0-9a-f]+:.*login attempt: db=mydb user=scram_user", since=mark)
    client_id = re.search(r"C-0x[0-9a-f]+", login.group(0)).group(0)
    s.wait_for_log(re.escape(client_id) + r":.*closing because: client close request", since=mark)


def test_log_connections_off(sluice):
    s = sluice({"pgbouncer": {"log_connections": 0, "log_disconnections": 0}})
    mark = s.log_mark()
    with s.connect() as conn:
        conn.execute("SELECT 1")
    with s.connect() as conn:
        conn.execute("SELECT 1")
    time.sleep(0.5)
    log = s.log_text()[mark:]
    assert "login attempt" not in log
    assert not re.search(r"C-0x[0-9a-f]+:.*closing because: client close request", log)


def test_stats_line(sluice):
    s = sluice({"pgbouncer": {"stats_period": 1, "log_stats": 1}})
    stop = threading.Event()

    def traffic():
        with s.connect() as conn:
            while not stop.is_set():
                with conn.transaction():
                    conn.execute("SELECT 1")
                    conn.execute("SELECT 2")
                time.sleep(0.005)

    t = threading.Thread(target=traffic)
    t.start()
    try:
        mark = s.log_mark()

        def busy_stats_line():
            for m in STATS.finditer(s.log_text(), mark):
                if int(m.group(1)) > 0:
                    return m
            return None

        deadline = time.monotonic() + 5
        while not (m := busy_stats_line()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert m, "no stats line with non-zero xacts/s within 5s\n" + s.log_tail()
        xacts, queries, inb, outb, xact_us, query_us = (int(m.group(i)) for i in range(1, 7))
        # Several queries per transaction; bytes flow both ways; the average
        # transaction and query times are measured, the former the longer.
        assert queries >= xacts and inb > 0 and outb > 0
        assert xact_us >= query_us > 0
    finally:
        stop.set()
        t.join(5)


def test_stats_line_zero_when_idle(sluice):
    s = sluice({"pgbouncer": {"stats_period": 1}})
    m = s.wait_for_log(STATS.pattern, timeout=4)
    assert m.group(1) == "0"


# ---- PgBouncer's wording, where its users grep -------------------------------------------------


def test_pgbouncer_login_and_server_lines(sluice):
    """"login attempt: db=... user=... tls=no" (PgBouncer 1.23 adds
    "replication=no") and "new connection to server (from ADDR:PORT)"."""
    s = sluice({"pgbouncer": {"log_connections": 1, "log_disconnections": 1}})
    mark = s.log_mark()
    with s.connect() as conn:
        conn.execute("SELECT 1")
    replication = "" if IS_PGBOUNCER else " replication=no"
    s.wait_for_log(r"C-0x[0-9a-f]+: mydb/md5_user@127\.0\.0\.1:\d+ login attempt: db=mydb "
                   r"user=md5_user tls=no" + replication, since=mark)
    s.wait_for_log(r"S-0x[0-9a-f]+: mydb/md5_user@127\.0\.0\.1:\d+ new connection to server "
                   r"\(from 127\.0\.0\.1:\d+\)", since=mark)


def test_pgbouncer_login_failure_lines(sluice):
    """A wrong password: the client and the log say "password authentication
    failed" (sluice adds the user, and a "login failed: db= user=" line)."""
    s = sluice({"pgbouncer": {"log_connections": 1, "log_disconnections": 1,
                              "log_pooler_errors": 1}})
    mark = s.log_mark()
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        s.connect(password="wrong")
    s.wait_for_log(r"C-0x[0-9a-f]+:.* closing because: password authentication failed",
                   since=mark)
    s.wait_for_log(r"pooler error: password authentication failed", since=mark)
    if not IS_PGBOUNCER:
        s.wait_for_log(r"login failed: db=mydb user=md5_user", since=mark)


def test_pgbouncer_query_timeout_lines(sluice):
    """A query running past query_timeout: the client gets PgBouncer's
    "query timeout", and its server "closing because: query timeout"."""
    s = sluice({"pgbouncer": {"query_timeout": 1, "log_disconnections": 1}})
    mark = s.log_mark()
    with s.connect() as conn:
        with pytest.raises(psycopg.Error, match="query timeout"):
            conn.execute("SELECT pg_sleep(5)")
    s.wait_for_log(r"S-0x[0-9a-f]+:.* closing because: query timeout", since=mark)
    s.wait_for_log(r"C-0x[0-9a-f]+:.* closing because: query timeout", since=mark)
