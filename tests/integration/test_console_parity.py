"""PgBouncer parity of the admin console (issue 16): PgBouncer's own user
over the Unix socket, SHOW SOCKETS / ACTIVE_SOCKETS, the prepared statement
counters of SHOW STATS, -R refused."""

import os
import re
import socket
import subprocess
import sys
import time

import psycopg
import pytest

from sluice_fixture import IS_PGBOUNCER, RUN_AS, SLUICE_BIN, RawConn, quote, wait_until

CONN_COLUMNS = [
    "type", "user", "database", "replication", "state", "addr", "port", "local_addr",
    "local_port", "connect_time", "request_time", "wait", "wait_us", "close_needed", "ptr",
    "link", "remote_pid", "tls", "application_name", "prepared_statements", "id"]
SOCKET_EXTRA = ["recv_pos", "pkt_pos", "pkt_remain", "send_pos", "send_remain", "pkt_avail",
                "send_avail"]
INT4 = 23


def admin(s, user="sluice", dbname="pgbouncer"):
    return psycopg.connect(s.dsn(user=user, dbname=dbname), autocommit=True,
                           prepare_threshold=None)


def show(conn, topic):
    cur = conn.execute(f"SHOW {topic}")
    names = [d.name for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]

UNIX_CONFIG = {"pgbouncer": {"unix_socket_dir": "{dir}", "auth_type": "md5",
                             "log_connections": "1"}}


def unix_dsn(s, user, dbname="pgbouncer", password=None):
    params = dict(host=s.dir, port=s.port, dbname=dbname, user=user, connect_timeout=5)
    if password is not None:
        params["password"] = password
    return " ".join(f"{k}='{quote(v)}'" for k, v in params.items())


# Runs as the pooler's uid: connects with sys.argv[1], runs each further
# argument as a query and prints its first column, one line per row; a
# failure prints "ERROR <message>" and exits 0.
AS_POOLER_USER = r"""
import sys, psycopg
try:
    with psycopg.connect(sys.argv[1], autocommit=True) as conn:
        for sql in sys.argv[2:]:
            cur = conn.execute(sql)
            print("OK", cur.statusmessage)
            if cur.description:
                for row in cur.fetchall():
                    print("ROW", row[0])
except psycopg.Error as e:
    print("ERROR", str(e).strip().splitlines()[0])
"""


def as_pooler_user(s, dsn, *queries):
    """Runs queries on dsn from a process of the uid the pooler runs as;
    returns its output lines."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    out = subprocess.run([sys.executable, "-c", AS_POOLER_USER, dsn, *queries],
                         cwd=s.dir, env=env, capture_output=True, text=True, timeout=30,
                         user=RUN_AS, group=RUN_AS, extra_groups=[] if RUN_AS else None)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


# ---- the pooler's own user over the Unix socket ----------------------------


def test_own_user_over_unix_socket_needs_no_password(sluice):
    """User "pgbouncer", Unix socket, same uid as the pooler: an admin, with
    no password asked, though auth_type is md5 and pgbouncer is in neither
    admin_users nor the auth_file."""
    s = sluice(UNIX_CONFIG)
    lines = as_pooler_user(s, unix_dsn(s, "pgbouncer"), "SHOW VERSION", "PAUSE", "RESUME")
    assert lines[0] == "OK SHOW", lines
    assert lines[1].startswith("ROW PgBouncer"), lines
    # PAUSE and RESUME: admin rights, not only SHOW.
    assert lines[2:] == ["OK PAUSE", "OK RESUME"], lines
    s.wait_for_log(r"pgbouncer access from unix socket")


def test_own_user_only_over_unix_socket(sluice):
    """Over TCP the same uid and user get no such favour."""
    s = sluice(UNIX_CONFIG)
    dsn = f"host=127.0.0.1 port={s.port} dbname=pgbouncer user=pgbouncer password=x"
    lines = as_pooler_user(s, dsn, "SHOW VERSION")
    assert lines and lines[0].startswith("ERROR"), lines


def test_own_user_other_database_is_not_trusted(sluice):
    """The favour is the console's: user pgbouncer of a normal database
    goes through auth_type as anyone."""
    s = sluice(UNIX_CONFIG)
    lines = as_pooler_user(s, unix_dsn(s, "pgbouncer", dbname="mydb"), "SELECT 1")
    assert lines and lines[0].startswith("ERROR"), lines


@pytest.mark.skipif(not RUN_AS, reason="needs the pooler to run as another uid than the tests")
def test_other_uid_is_not_trusted(sluice):
    """Another uid (the tests run as root, the pooler as postgres) asking
    for user pgbouncer over the socket is not let in without a password."""
    s = sluice(UNIX_CONFIG)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(unix_dsn(s, "pgbouncer"), autocommit=True).close()
    # The admin users still log in over the socket as usual.
    with psycopg.connect(unix_dsn(s, "sluice", password="sluice"), autocommit=True) as conn:
        assert conn.execute("SHOW VERSION").fetchone()[0].startswith("PgBouncer")


# ---- SHOW VERSION -------------------------------------------------------------


def test_show_version_first_words(sluice):
    """One text row whose first two words are PgBouncer's: "PgBouncer" and a
    dotted version, which tools split off to choose columns by version;
    sluice's console follows PgBouncer 1.24's columns, and names itself
    after those words."""
    s = sluice()
    with admin(s) as conn:
        cur = conn.execute("SHOW VERSION")
        assert [d.name for d in cur.description] == ["version"]
        rows = cur.fetchall()
    assert len(rows) == 1
    (version,) = rows[0]
    words = version.split()
    assert words[0] == "PgBouncer"
    major, minor, patch = (int(n) for n in words[1].split("."))
    assert (major, minor) >= (1, 18) and patch >= 0
    if not IS_PGBOUNCER:
        assert words[1] == "1.24.0"
        assert re.fullmatch(r"PgBouncer 1\.24\.0 \(sluice \d+\.\d+\.\d+\)", version)


# ---- SHOW SOCKETS and SHOW ACTIVE_SOCKETS -----------------------------------


@pytest.mark.parametrize("topic", ["SOCKETS", "ACTIVE_SOCKETS"])
def test_sockets_columns(sluice, topic):
    """SHOW CLIENTS's columns, then the buffer positions, all int4."""
    s = sluice()
    with s.connect() as client, admin(s) as conn:
        client.execute("SELECT 1")
        cur = conn.execute(f"SHOW {topic}")
        assert cur.statusmessage == "SHOW"
        names = [d.name for d in cur.description]
        assert names[-7:] == SOCKET_EXTRA
        assert [d.type_code for d in cur.description][-7:] == [INT4] * 7
        if not IS_PGBOUNCER:  # 1.18 lacks replication, prepared_statements, id
            assert names == CONN_COLUMNS + SOCKET_EXTRA
        cur.fetchall()


def test_sockets_lists_every_socket(sluice):
    """Clients and servers, with PgBouncer's list names as states; a
    connection that has not sent its startup packet yet is cl_login."""
    s = sluice()
    with s.connect() as client, admin(s) as conn, \
            socket.create_connection(("127.0.0.1", s.port)):
        client.execute("BEGIN")
        client.execute("SELECT 1")
        rows = show(conn, "SOCKETS")
        mine = [r for r in rows if r["database"] == "mydb"]
        assert {(r["type"], r["state"]) for r in mine} == {("C", "cl_active"), ("S", "sv_active")}
        cl = next(r for r in mine if r["type"] == "C")
        sv = next(r for r in mine if r["type"] == "S")
        assert cl["link"] == sv["ptr"] and sv["link"] == cl["ptr"]
        # The console's own client is there too.
        assert any(r["database"] == "pgbouncer" and r["type"] == "C" for r in rows)
        wait_until(lambda: any(r["state"] == "cl_login" and r["user"] == "(nouser)"
                               for r in show(conn, "SOCKETS")), 3, "the raw connection")
        for r in rows:
            for col in SOCKET_EXTRA:
                assert r[col] >= 0, (col, r)
            assert r["recv_pos"] >= r["pkt_pos"]
        client.execute("COMMIT")
        states = {(r["type"], r["state"]) for r in show(conn, "SOCKETS")
                  if r["database"] == "mydb"}
        assert states == {("C", "cl_active"), ("S", "sv_idle")}


def test_active_sockets_shows_buffered_bytes(sluice):
    """Idle connections have nothing buffered and are not listed; a client
    that does not read its large result leaves bytes in the pooler's buffers
    (its own output, or its server's input), and that connection is."""
    s = sluice()
    with s.connect() as idle, admin(s) as conn:
        idle.execute("SELECT 1")
        assert [r for r in show(conn, "ACTIVE_SOCKETS") if r["database"] == "mydb"] == []
        with RawConn(s.port) as raw:
            raw.login()
            raw.send_query("SELECT repeat('x', 1000) FROM generate_series(1, 20000)")

            def busy():
                rows = [r for r in show(conn, "ACTIVE_SOCKETS") if r["database"] == "mydb"]
                return [r for r in rows
                        if r["pkt_avail"] > 0 or r["send_remain"] > 0 or r["send_avail"] > 0
                        or r["pkt_remain"] > 0] and rows
            rows = wait_until(busy, 5, "a connection with buffered bytes")
            assert all(r["type"] in ("C", "S") for r in rows)
            # The idle client is not among them.
            idle_ids = [r["ptr"] for r in show(conn, "CLIENTS") if r["database"] == "mydb"
                        and r["state"] == "idle"]
            assert not [r for r in rows if r["ptr"] in idle_ids]


# ---- prepared statement counters of SHOW STATS ------------------------------

PS_COUNTERS = ["total_client_parse_count", "total_server_parse_count", "total_bind_count"]


@pytest.mark.skipif(IS_PGBOUNCER, reason="PgBouncer 1.21+ counters (1.18 has no columns)")
def test_prepared_statement_counters(sluice):
    """A client's named statement: one client parse, one server parse, a
    bind per execution; a second client of the same statement on the same
    server adds a client parse, not a server one. Also in SHOW TOTALS,
    STATS_TOTALS and /metrics."""
    s = sluice({"pgbouncer": {"metrics_listen": "127.0.0.1:{metrics_port}",
                              "default_pool_size": "1"}})
    with admin(s) as conn:
        def stats():
            row = next(r for r in show(conn, "STATS") if r["database"] == "mydb")
            return [int(row[c]) for c in PS_COUNTERS]

        with s.connect(prepare_threshold=0) as client:
            for i in range(3):
                assert client.execute("SELECT %s::int + 1", (i,)).fetchone() == (i + 1,)
        assert stats() == [1, 1, 3]
        with s.connect(prepare_threshold=0) as client:
            for i in range(2):
                client.execute("SELECT %s::int + 1", (i,))
        assert stats() == [2, 1, 5]
        # RECONNECT: the statement must be prepared again on the new server.
        conn.execute("RECONNECT mydb")
        with s.connect(prepare_threshold=0) as client:
            client.execute("SELECT %s::int + 1", (1,))
        assert stats() == [3, 2, 6]
        totals = {r["name"]: int(r["value"]) for r in show(conn, "TOTALS")}
        assert [totals["total_client_parse_count"], totals["total_server_parse_count"],
                totals["total_bind_count"]] == [3, 2, 6]
        row = next(r for r in show(conn, "STATS_TOTALS") if r["database"] == "mydb")
        assert [int(row[c]) for c in ("client_parse_count", "server_parse_count",
                                      "bind_count")] == [3, 2, 6]
    import urllib.request
    text = urllib.request.urlopen(f"http://127.0.0.1:{s.metrics_port}/metrics",
                                  timeout=5).read().decode()
    for name, value in [("sluice_client_parses_total", 3), ("sluice_server_parses_total", 2),
                        ("sluice_binds_total", 6)]:
        assert f'{name}{{database="mydb"}} {value}' in text, name


@pytest.mark.skipif(IS_PGBOUNCER, reason="PgBouncer 1.21+ counters (1.18 has no columns)")
def test_prepared_counters_stay_zero_untracked(sluice):
    """max_prepared_statements = 0: statements are not tracked, nothing counts
    (as in PgBouncer); session pooling likewise."""
    s = sluice({"pgbouncer": {"max_prepared_statements": "0", "pool_mode": "session"}})
    with admin(s) as conn:
        with s.connect(prepare_threshold=0) as client:
            for i in range(3):
                client.execute("SELECT %s::int + 1", (i,))
        row = next(r for r in show(conn, "STATS") if r["database"] == "mydb")
        assert [int(row[c]) for c in PS_COUNTERS] == [0, 0, 0]


# ---- the command line: -R -------------------------------------------------


@pytest.mark.skipif(IS_PGBOUNCER, reason="PgBouncer 1.18 still does online restarts (-R)")
@pytest.mark.parametrize("flag", ["-R", "--reboot"])
def test_reboot_flag_refused(sluice, flag):
    """Online restart is deprecated in PgBouncer: -R is refused before
    anything starts, with a message that points to so_reuseport."""
    s = sluice(start=False)
    out = subprocess.run([SLUICE_BIN, flag, str(s.ini)], capture_output=True, text=True,
                         timeout=30, cwd=s.dir)
    assert out.returncode != 0
    assert "deprecated" in out.stderr and "so_reuseport" in out.stderr, out.stderr
    assert "SHUTDOWN WAIT_FOR_CLIENTS" in out.stderr, out.stderr
    assert not s.log_text()  # nothing started, nothing logged


# ---- shutdown: the console during SHUTDOWN WAIT_FOR_* ----------------------

pgbouncer_123 = pytest.mark.skipif(IS_PGBOUNCER, reason="PgBouncer 1.23+ shutdown (1.18 here)")


def port_refuses(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return True
    return False


@pgbouncer_123
@pytest.mark.parametrize("mode", ["WAIT_FOR_CLIENTS", "WAIT_FOR_SERVERS"])
def test_unix_socket_serves_console_during_shutdown(sluice, mode):
    """SHUTDOWN WAIT_FOR_* answers at once; TCP stops accepting, the Unix
    socket stays open for the console (and only for it); RESUME is refused
    while the shutdown waits. The pooler exits once its client is done."""
    s = sluice(UNIX_CONFIG)
    with s.connect() as client:
        client.execute("BEGIN")
        client.execute("SELECT 1")
        with admin(s) as conn:
            assert conn.execute(f"SHUTDOWN {mode}").statusmessage == "SHUTDOWN"
            with pytest.raises(psycopg.errors.ProtocolViolation,
                               match="pooler is shutting down"):
                conn.execute("RESUME")
        assert port_refuses(s.port)
        with psycopg.connect(unix_dsn(s, "sluice", password="sluice"), autocommit=True,
                             prepare_threshold=None) as conn:
            assert conn.execute("SHOW VERSION").fetchone()[0].startswith("PgBouncer")
            mine = [r for r in show(conn, "CLIENTS") if r["database"] == "mydb"]
            assert len(mine) == 1
        with pytest.raises(psycopg.OperationalError, match="shutting down"):
            psycopg.connect(unix_dsn(s, "md5_user", dbname="mydb", password="md5_user_pw"))
        assert s.running()
        assert client.execute("SELECT 2").fetchone() == (2,)
        client.execute("COMMIT")
    assert s.wait_exit(5) == 0
    assert not (s.dir / f".s.PGSQL.{s.port}").exists()


@pgbouncer_123
def test_shutdown_wait_for_servers_during_wait_for_clients(sluice):
    """During SHUTDOWN WAIT_FOR_CLIENTS an idle client keeps the pooler up;
    SHUTDOWN WAIT_FOR_SERVERS (over the Unix socket, the one way in left)
    takes over: the client between transactions is let go, the pooler exits."""
    s = sluice(UNIX_CONFIG)
    with s.connect() as idle:
        idle.execute("SELECT 1")
        with admin(s) as conn:
            conn.execute("SHUTDOWN WAIT_FOR_CLIENTS")
        time.sleep(0.5)
        assert s.running()
        with psycopg.connect(unix_dsn(s, "sluice", password="sluice"), autocommit=True) as conn:
            assert conn.execute("SHUTDOWN WAIT_FOR_SERVERS").statusmessage == "SHUTDOWN"
        assert s.wait_exit(5) == 0
        with pytest.raises(psycopg.OperationalError):
            idle.execute("SELECT 2")
