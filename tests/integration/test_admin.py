"""The admin console (databases "pgbouncer" and "sluice"): PgBouncer 1.24's
SHOW columns with live values, who may do what, and the control commands
(PAUSE, RESUME, DISABLE, KILL, KILL_CLIENT, RECONNECT, WAIT_CLOSE, SET,
RELOAD, SHUTDOWN), over the simple and the extended query protocol."""

import asyncio
import signal as sig
import socket
import struct
import threading
import time

import psycopg
import pytest

from sluice_fixture import IS_PGBOUNCER, SANITIZER_REPORT, wait_until

# The column sets are PgBouncer 1.24's; the installed PgBouncer is older.
sluice_only = pytest.mark.skipif(IS_PGBOUNCER, reason="PgBouncer 1.24 console columns")

CONN_COLUMNS = [
    "type", "user", "database", "replication", "state", "addr", "port", "local_addr",
    "local_port", "connect_time", "request_time", "wait", "wait_us", "close_needed", "ptr",
    "link", "remote_pid", "tls", "application_name", "prepared_statements", "id"]
STATS_PARTS = [
    "server_assignment_count", "xact_count", "query_count", "bytes_received", "bytes_sent",
    "xact_time", "query_time", "wait_time", "client_parse_count", "server_parse_count",
    "bind_count", "replica_read_count", "retry_count", "server_kept_count"]  # the last three: sluice's

# Topic -> expected column names, in order (PgBouncer 1.24 documentation).
COLUMNS = {
    "VERSION": ["version"],
    "CONFIG": ["key", "value", "default", "changeable"],
    "DATABASES": [
        "name", "host", "port", "database", "force_user", "pool_size", "min_pool_size",
        "reserve_pool_size", "server_lifetime", "pool_mode", "load_balance_hosts",
        "max_connections", "current_connections", "max_client_connections",
        "current_client_connections", "paused", "disabled"],
    "POOLS": [
        "database", "user", "cl_active", "cl_waiting", "cl_active_cancel_req",
        "cl_waiting_cancel_req", "sv_active", "sv_active_cancel", "sv_being_canceled",
        "sv_idle", "sv_used", "sv_tested", "sv_login", "maxwait", "maxwait_us", "pool_mode",
        "load_balance_hosts", "endpoint"],
    "CLIENTS": CONN_COLUMNS,
    "SERVERS": CONN_COLUMNS,
    "USERS": [
        "name", "pool_size", "reserve_pool_size", "pool_mode", "max_user_connections",
        "current_connections", "max_user_client_connections", "current_client_connections"],
    "STATS": ["database",
              "total_server_assignment_count", "total_xact_count", "total_query_count",
              "total_received", "total_sent", "total_xact_time", "total_query_time",
              "total_wait_time", "total_client_parse_count", "total_server_parse_count",
              "total_bind_count",
              "avg_server_assignment_count", "avg_xact_count", "avg_query_count", "avg_recv",
              "avg_sent", "avg_xact_time", "avg_query_time", "avg_wait_time",
              "avg_client_parse_count", "avg_server_parse_count", "avg_bind_count",
              # sluice's, after PgBouncer's (read/write splitting, kept servers)
              "total_replica_read_count", "total_retry_count", "total_server_kept_count",
              "avg_replica_read_count", "avg_retry_count", "avg_server_kept_count"],
    "STATS_TOTALS": ["database"] + STATS_PARTS,
    "STATS_AVERAGES": ["database"] + STATS_PARTS,
    "TOTALS": ["name", "value"],
    "LISTS": ["list", "items"],
    "MEM": ["name", "size", "used", "free", "memtotal"],
    "STATE": ["key", "value"],
    "DNS_HOSTS": ["hostname", "ttl", "addrs"],
    "DNS_ZONES": ["zonename", "serial", "count"],
}

INT4, INT8, TEXT, NUMERIC = 23, 20, 25, 1700


def admin(s, user="sluice", dbname="pgbouncer", password=None, **kwargs):
    """An autocommit connection to the console."""
    return psycopg.connect(s.dsn(user=user, password=password, dbname=dbname), autocommit=True,
                           **kwargs)


def show(conn, topic):
    """SHOW topic as a list of dicts."""
    cur = conn.execute(f"SHOW {topic}")
    names = [d.name for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


def pool_row(conn, db="mydb", user="md5_user"):
    rows = [r for r in show(conn, "POOLS") if r["database"] == db and r["user"] == user]
    assert len(rows) == 1, rows
    return rows[0]


def backend_pid(conn):
    return conn.execute("SELECT pg_backend_pid()").fetchone()[0]


def run_in_thread(fn, *args):
    """Starts fn(*args) in a thread; returns (thread, result dict)."""
    result = {}

    def target():
        try:
            result["value"] = fn(*args)
        except Exception as e:  # noqa: BLE001 - reported by the test
            result["error"] = e
        result["done_at"] = time.monotonic()

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, result


def expect_exit(s, timeout=10):
    """The pooler exits by itself (SHUTDOWN): check it exited cleanly, then
    keep the fixture from stopping it again."""
    s.proc.wait(timeout)
    assert s.proc.returncode == 0, s.log_tail()
    assert not SANITIZER_REPORT.search(s.log_text()), s.log_tail()
    s.proc = None


# ---- columns ---------------------------------------------------------------


@sluice_only
@pytest.mark.parametrize("topic", sorted(COLUMNS))
def test_show_columns(sluice, topic):
    s = sluice()
    with s.connect() as client, admin(s) as conn:
        client.execute("SELECT 1")
        cur = conn.execute(f"SHOW {topic}")
        assert cur.statusmessage == "SHOW"
        assert [d.name for d in cur.description] == COLUMNS[topic]
        cur.fetchall()
        # Lower case and a trailing semicolon, as psql users type it.
        cur = conn.execute(f"show {topic.lower()};")
        assert [d.name for d in cur.description] == COLUMNS[topic]


@sluice_only
def test_column_types(sluice):
    s = sluice()
    with admin(s) as conn:
        types = {d.name: d.type_code for d in conn.execute("SHOW POOLS").description}
        assert types["database"] == TEXT and types["cl_active"] == INT4
        assert types["maxwait_us"] == INT4 and types["pool_mode"] == TEXT
        types = {d.name: d.type_code for d in conn.execute("SHOW CLIENTS").description}
        assert types["port"] == INT4 and types["ptr"] == TEXT and types["id"] == INT8
        assert types["connect_time"] == TEXT
        types = {d.name: d.type_code for d in conn.execute("SHOW STATS").description}
        assert types["database"] == TEXT and types["total_xact_count"] == NUMERIC


def test_show_help_is_a_notice(sluice):
    s = sluice()
    notices = []
    with admin(s) as conn:
        # A Diagnostic is valid only inside the handler: copy its fields.
        conn.add_notice_handler(lambda d: notices.append((d.message_primary, d.message_detail)))
        cur = conn.execute("SHOW HELP")
        assert cur.statusmessage == "SHOW"
        assert cur.description is None
    assert notices and notices[0][0] == "Console usage"
    assert "SHOW" in notices[0][1] and "PAUSE" in notices[0][1]


@sluice_only
def test_show_version(sluice):
    s = sluice()
    with admin(s) as conn:
        (version,) = conn.execute("SHOW VERSION").fetchone()
    assert version.startswith("PgBouncer 1.24.0") and "sluice" in version


@sluice_only
def test_sluice_database_name_is_the_console_too(sluice):
    s = sluice()
    with admin(s, dbname="sluice") as conn:
        assert [r["database"] for r in show(conn, "POOLS")] == ["pgbouncer"]


# ---- values under load -----------------------------------------------------


@sluice_only
def test_show_values_with_clients(sluice):
    s = sluice()
    clients = [s.connect(application_name=f"app{i}") for i in range(3)]
    try:
        for c in clients:
            c.execute("SELECT 1")
        in_xact = clients[0]
        in_xact.execute("BEGIN")
        pid = backend_pid(in_xact)
        with admin(s) as conn:
            rows = show(conn, "CLIENTS")
            assert len(rows) == 4, rows  # the three and the console itself
            me = [r for r in rows if r["database"] == "pgbouncer"]
            assert len(me) == 1 and me[0]["user"] == "sluice" and me[0]["state"] == "active"
            ours = sorted((r for r in rows if r["database"] == "mydb"),
                          key=lambda r: r["application_name"])
            assert [r["application_name"] for r in ours] == ["app0", "app1", "app2"]
            assert [r["state"] for r in ours] == ["active", "idle", "idle"]
            for r in ours:
                assert r["type"] == "C" and r["user"] == "md5_user"
                assert r["addr"] == "127.0.0.1" and r["port"] > 0
                assert r["local_port"] == s.port and r["ptr"].startswith("0x")
                assert r["replication"] == "none" and r["wait"] == 0
                assert r["connect_time"][:2] == "20"
            assert ours[1]["link"] == "" and ours[0]["link"].startswith("0x")
            assert len({r["id"] for r in rows}) == 4

            servers = show(conn, "SERVERS")
            active = [r for r in servers if r["state"] == "active"]
            assert len(active) == 1
            assert active[0]["remote_pid"] == pid
            assert active[0]["link"] == ours[0]["ptr"]
            assert active[0]["port"] == s.cluster.primary_port
            assert active[0]["database"] == "mydb" and active[0]["type"] == "S"
            assert active[0]["application_name"] == "app0"
            assert all(r["state"] in ("idle", "used") for r in servers if r is not active[0]), \
                [(r["state"], r["application_name"]) for r in servers]

            pool = pool_row(conn)
            assert pool["cl_active"] == 3 and pool["cl_waiting"] == 0
            assert pool["sv_active"] == 1
            assert pool["sv_active"] + pool["sv_idle"] + pool["sv_used"] == len(servers)
            assert pool["pool_mode"] == "transaction"
            assert pool_row(conn, "pgbouncer", "pgbouncer")["cl_active"] == 1

            dbs = {r["name"]: r for r in show(conn, "DATABASES")}
            assert dbs["mydb"]["current_client_connections"] == 3
            assert dbs["mydb"]["current_connections"] == len(servers)
            assert dbs["mydb"]["port"] == s.cluster.primary_port
            assert dbs["mydb"]["pool_size"] == 20 and dbs["mydb"]["paused"] == 0
            assert dbs["pgbouncer"]["port"] == s.port

            users = {r["name"]: r for r in show(conn, "USERS")}
            assert users["md5_user"]["current_client_connections"] == 3
            assert users["md5_user"]["current_connections"] == len(servers)

            stats = {r["database"]: r for r in show(conn, "STATS")}
            assert stats["mydb"]["total_xact_count"] >= 3
            assert stats["mydb"]["total_query_count"] >= 4
            assert stats["mydb"]["total_received"] > 0 and stats["mydb"]["total_sent"] > 0
            assert stats["pgbouncer"]["total_query_count"] >= 5
            totals = dict(conn.execute("SHOW TOTALS").fetchall())
            assert totals["total_xact_count"] >= stats["mydb"]["total_xact_count"]

            lists = dict(conn.execute("SHOW LISTS").fetchall())
            assert lists["used_clients"] == 4 and lists["used_servers"] == len(servers)
            assert lists["pools"] == 2
            mem = {r["name"]: r for r in show(conn, "MEM")}
            assert mem["client_cache"]["used"] == 4
            assert dict(conn.execute("SHOW STATE").fetchall()) == {
                "active": "yes", "paused": "no", "suspended": "no"}
        in_xact.execute("COMMIT")
    finally:
        for c in clients:
            c.close()


@sluice_only
def test_show_clients_many(sluice):
    """A result far larger than one buffer: 1,500 logged-in clients."""
    n = 1500
    s = sluice({"pgbouncer": {"auth_type": "trust", "max_client_conn": n + 50,
                              "admin_users": "trust_user"}})
    with s.connect(user="trust_user", password="") as first:
        first.execute("SELECT 1")  # the pool knows its server parameters now
    params = b"user\0trust_user\0database\0mydb\0\0"
    socks = []
    # Connected first: psycopg waits with select(), which takes fds < 1024 only.
    conn = admin(s, user="trust_user", password="")
    try:
        for _ in range(n):
            sock = socket.create_connection(("127.0.0.1", s.port))
            sock.sendall(struct.pack("!ii", 8 + len(params), 196608) + params)
            socks.append(sock)
        with conn:
            wait_until(lambda: len(show(conn, "CLIENTS")) == n + 1, 20, "every client listed")
            assert pool_row(conn, user="trust_user")["cl_active"] == n
            cur = conn.execute("SHOW CLIENTS", prepare=True)
            assert len(cur.fetchall()) == n + 1
    finally:
        for sock in socks:
            sock.close()


# ---- who may do what -------------------------------------------------------


def test_stats_user_may_only_show(sluice):
    s = sluice({"pgbouncer": {"stats_users": "plain_user"}})
    with admin(s, user="plain_user") as conn:
        assert conn.execute("SHOW POOLS").fetchall() is not None
        assert conn.execute("SHOW CLIENTS").fetchall()
        for command in ["RELOAD", "PAUSE", "RESUME", "KILL mydb", "DISABLE mydb",
                        "SET default_pool_size = 5", "SHUTDOWN"]:
            with pytest.raises(psycopg.Error, match="admin access needed"):
                conn.execute(command)
    assert s.running()


def test_other_users_refused(sluice):
    s = sluice({"pgbouncer": {"stats_users": "plain_user"}})
    with pytest.raises(psycopg.OperationalError, match="not allowed"):
        admin(s, user="scram_user")
    if not IS_PGBOUNCER:  # the console's second name, "sluice", is sluice's own
        with pytest.raises(psycopg.OperationalError, match="not allowed"):
            admin(s, user="md5_user", dbname="sluice")


def test_admin_needs_the_password(sluice):
    s = sluice()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(s.dsn(user="sluice", password="wrong", dbname="pgbouncer"))


def test_errors_keep_the_session(sluice):
    """A console command that fails leaves the session usable (PgBouncer's
    behaviour too); the messages are sluice's (PgBouncer 1.18 words them
    otherwise, e.g. "invalid command 'SELECT 1', use SHOW HELP;")."""
    s = sluice()
    with admin(s) as conn:
        for command, message in [("SELECT 1", "unknown command"),
                                 ("SHOW NOTHING", "unknown SHOW topic"),
                                 ("PAUSE nosuchdb", "no such database: nosuchdb"),
                                 ("KILL nosuchdb", "no such database: nosuchdb"),
                                 ("DISABLE", "needs a database"),
                                 ("SHOW POOLS; SHOW STATS", "only one command")]:
            with pytest.raises(psycopg.Error, match=None if IS_PGBOUNCER else message) as info:
                conn.execute(command)
            if not IS_PGBOUNCER:
                assert info.value.sqlstate == "08P01"
        assert conn.execute("SHOW VERSION").fetchone()


# ---- PAUSE / RESUME --------------------------------------------------------


def test_pause_waits_for_transactions_and_queries_wait(sluice):
    s = sluice()
    with s.connect() as in_xact, admin(s) as conn:
        others = [s.connect() for _ in range(4)]
        try:
            for c in others:
                c.execute("SELECT 1")
            in_xact.execute("BEGIN")
            in_xact.execute("SELECT 1")

            pause, paused = run_in_thread(conn.execute, "PAUSE")
            pause.join(0.7)
            assert pause.is_alive(), "PAUSE returned with a transaction open"
            in_xact.execute("SELECT 2")  # the transaction goes on during PAUSE
            committed_at = time.monotonic()
            in_xact.execute("COMMIT")
            pause.join(5)
            assert not pause.is_alive() and "error" not in paused, paused
            assert paused["done_at"] >= committed_at
            assert paused["value"].statusmessage == "PAUSE"

            # Queries during the pause wait; none fails.
            waiting = [run_in_thread(c.execute, "SELECT 42") for c in others]
            time.sleep(0.7)
            assert all(t.is_alive() for t, _ in waiting)
            if not IS_PGBOUNCER:
                states = [r["state"] for r in show(conn, "CLIENTS") if r["database"] == "mydb"]
                assert states.count("waiting") == 4
                assert dict(conn.execute("SHOW STATE").fetchall())["paused"] == "yes"
            assert conn.execute("RESUME").statusmessage == "RESUME"
            for t, result in waiting:
                t.join(10)
                assert not t.is_alive() and "error" not in result, result
                assert result["value"].fetchone() == (42,)
        finally:
            for c in others:
                c.close()


def test_pause_one_database(sluice):
    s = sluice({"databases": {"otherdb": "host=127.0.0.1 port={primary_port} dbname=mydb"}})
    with s.connect() as a, s.connect(dbname="otherdb") as b, admin(s) as conn:
        a.execute("SELECT 1")
        assert conn.execute("PAUSE mydb").statusmessage == "PAUSE"
        if not IS_PGBOUNCER:
            dbs = {r["name"]: r for r in show(conn, "DATABASES")}
            assert dbs["mydb"]["paused"] == 1 and dbs["otherdb"]["paused"] == 0
        assert b.execute("SELECT 7").fetchone() == (7,)  # other databases go on
        t, result = run_in_thread(a.execute, "SELECT 8")
        t.join(0.5)
        assert t.is_alive()
        conn.execute("RESUME mydb")
        t.join(5)
        assert result["value"].fetchone() == (8,)


@sluice_only
def test_pause_errors(sluice):
    s = sluice()
    with admin(s) as conn:
        with pytest.raises(psycopg.Error, match="not paused"):
            conn.execute("RESUME")
        conn.execute("PAUSE")
        with pytest.raises(psycopg.Error, match="already paused"):
            conn.execute("PAUSE")
        conn.execute("RESUME")
        with pytest.raises(psycopg.Error, match="database mydb is not paused"):
            conn.execute("RESUME mydb")


@sluice_only
def test_resume_cancels_a_waiting_pause(sluice):
    s = sluice()
    with s.connect() as in_xact, admin(s) as conn, admin(s) as other:
        in_xact.execute("BEGIN")
        in_xact.execute("SELECT 1")
        pause, result = run_in_thread(conn.execute, "PAUSE")
        pause.join(0.3)
        assert pause.is_alive()
        other.execute("RESUME")
        pause.join(5)
        assert "canceled" in str(result.get("error"))
        in_xact.execute("COMMIT")
        assert conn.execute("SHOW VERSION").fetchone()  # the session goes on


# ---- DISABLE / ENABLE, KILL, KILL_CLIENT -----------------------------------


def test_disable_refuses_new_clients(sluice):
    s = sluice()
    with admin(s) as conn:
        assert conn.execute("DISABLE mydb").statusmessage == "DISABLE"
        with pytest.raises(psycopg.OperationalError, match='database "mydb" is disabled'):
            s.connect()
        if not IS_PGBOUNCER:
            assert {r["name"]: r for r in show(conn, "DATABASES")}["mydb"]["disabled"] == 1
        assert conn.execute("ENABLE mydb").statusmessage == "ENABLE"
        with s.connect() as again:
            assert again.execute("SELECT 3").fetchone() == (3,)


def test_disable_keeps_connected_clients(sluice):
    """DISABLE refuses new clients only: connected ones go on, also after
    their idle server was closed (the janitor runs every 250 ms)."""
    s = sluice()
    with s.connect() as kept, admin(s) as conn:
        kept.execute("SELECT 1")
        conn.execute("DISABLE mydb")
        time.sleep(0.6)
        t, result = run_in_thread(kept.execute, "SELECT 2")
        t.join(5)
        stuck = t.is_alive()
        conn.execute("ENABLE mydb")  # frees a stuck client before failing
        t.join(5)
        assert not stuck, "a connected client of a disabled database got no server"
        assert result["value"].fetchone() == (2,)


def test_kill_drops_the_databases_clients(sluice):
    s = sluice({"databases": {"otherdb": "host=127.0.0.1 port={primary_port} dbname=mydb"}})
    a, b, other = s.connect(), s.connect(), s.connect(dbname="otherdb")
    try:
        for c in (a, b, other):
            c.execute("SELECT 1")
        b.execute("BEGIN")
        with admin(s) as conn:
            assert conn.execute("KILL mydb").statusmessage == "KILL"
            for c in (a, b):
                with pytest.raises(psycopg.OperationalError):
                    c.execute("SELECT 1")
            assert other.execute("SELECT 5").fetchone() == (5,)
            if IS_PGBOUNCER:
                # With PgBouncer 1.18 a login after KILL and RESUME timed out
                # here; what follows is sluice's KILL as PgBouncer's docs
                # describe it (new logins wait for RESUME).
                return
            dbs = sorted(r["database"] for r in show(conn, "CLIENTS"))
            assert dbs == ["otherdb", "pgbouncer"]
            assert not [r for r in show(conn, "SERVERS") if r["database"] == "mydb"]
            # A killed database waits for RESUME.
            def late_query():
                with s.connect() as late_conn:
                    return late_conn.execute("SELECT 6").fetchone()

            late, result = run_in_thread(late_query)
            late.join(0.7)
            assert late.is_alive()
            conn.execute("RESUME mydb")
            late.join(10)
            assert result.get("value") == (6,), result
    finally:
        for c in (a, b, other):
            c.close()


@sluice_only
def test_kill_client(sluice):
    s = sluice()
    with s.connect(application_name="victim") as victim, \
            s.connect(application_name="bystander") as bystander, admin(s) as conn:
        victim.execute("BEGIN")
        pid = backend_pid(victim)
        bystander.execute("SELECT 1")
        rows = {r["application_name"]: r for r in show(conn, "CLIENTS")}
        assert conn.execute(f"KILL_CLIENT {rows['victim']['id']}").statusmessage == "KILL_CLIENT"
        with pytest.raises(psycopg.OperationalError):
            victim.execute("SELECT 1")
        assert bystander.execute("SELECT 2").fetchone() == (2,)
        names = [r["application_name"] for r in show(conn, "CLIENTS")]
        assert "victim" not in names and "bystander" in names
        # Its server went with it: the transaction was cut.
        assert pid not in [r["remote_pid"] for r in show(conn, "SERVERS")]
        with pytest.raises(psycopg.Error, match="client not found"):
            conn.execute("KILL_CLIENT 999999")
        with pytest.raises(psycopg.Error, match="invalid client pointer supplied"):
            conn.execute("KILL_CLIENT somebody")
        # The ptr form works as well.
        ptr = {r["application_name"]: r for r in show(conn, "CLIENTS")}["bystander"]["ptr"]
        conn.execute(f"KILL_CLIENT {ptr}")
        with pytest.raises(psycopg.OperationalError):
            bystander.execute("SELECT 3")


# ---- RECONNECT, WAIT_CLOSE -------------------------------------------------


def test_reconnect_closes_servers_after_use(sluice):
    s = sluice()
    with s.connect() as idle_client, s.connect() as in_xact, admin(s) as conn:
        in_xact.execute("BEGIN")
        busy_pid = backend_pid(in_xact)
        idle_pid = backend_pid(idle_client)  # a second server, released after use
        assert idle_pid != busy_pid
        assert conn.execute("RECONNECT mydb").statusmessage == "RECONNECT"
        if not IS_PGBOUNCER:
            servers = {r["remote_pid"]: r for r in show(conn, "SERVERS")}
            assert idle_pid not in servers  # released servers go at once
            assert servers[busy_pid]["close_needed"] == 1
        # WAIT_CLOSE returns once the server in use is released and closed.
        waiter, result = run_in_thread(conn.execute, "WAIT_CLOSE mydb")
        waiter.join(0.5)
        assert waiter.is_alive()
        assert backend_pid(in_xact) == busy_pid  # the transaction keeps its server
        in_xact.execute("COMMIT")
        waiter.join(5)
        assert not waiter.is_alive() and "error" not in result, result
        assert result["value"].statusmessage == "WAIT_CLOSE"
        new_pids = {backend_pid(idle_client), backend_pid(in_xact)}
        assert not new_pids & {idle_pid, busy_pid}


# ---- SET, RELOAD -----------------------------------------------------------


def config_value(conn, key):
    return dict((r[0], r[1]) for r in conn.execute("SHOW CONFIG").fetchall())[key]


def test_set_changes_the_running_config(sluice):
    s = sluice()
    with admin(s) as conn:
        assert config_value(conn, "default_pool_size") == "20"
        # PgBouncer 1.18 answers "SET default_pool_size=5", newer ones "SET".
        assert conn.execute("SET default_pool_size = 5").statusmessage.startswith("SET")
        assert config_value(conn, "default_pool_size") == "5"
        conn.execute("SET server_reset_query = 'DISCARD ALL; SELECT 1'")
        assert config_value(conn, "server_reset_query") == "DISCARD ALL; SELECT 1"
        if not IS_PGBOUNCER:
            assert {r["name"]: r for r in show(conn, "DATABASES")}["mydb"]["pool_size"] == 5
            with pytest.raises(psycopg.Error, match="cannot be changed without a restart"):
                conn.execute("SET listen_port = 7000")
            with pytest.raises(psycopg.Error, match="unknown setting"):
                conn.execute("SET no_such_setting = 1")
            with pytest.raises(psycopg.Error, match="not an integer"):
                conn.execute("SET default_pool_size = many")
        if IS_PGBOUNCER:
            return  # PgBouncer 1.18 refuses them ("SET failed"); sluice takes them (JDBC)
        # Session settings drivers send on connect are accepted and ignored.
        conn.execute("SET extra_float_digits = 3")
        conn.execute("SET application_name TO 'tool'")
        assert config_value(conn, "default_pool_size") == "5"


def test_set_pool_size_applies(sluice):
    s = sluice()
    with admin(s) as conn:
        conn.execute("SET default_pool_size = 1")
    with s.connect() as a, s.connect() as b:
        a.execute("BEGIN")
        a.execute("SELECT 1")
        t, result = run_in_thread(b.execute, "SELECT 2")
        t.join(0.5)
        assert t.is_alive(), "a second server was opened despite default_pool_size = 1"
        a.execute("COMMIT")
        t.join(5)
        assert result["value"].fetchone() == (2,)


def test_reload(sluice):
    s = sluice()
    with admin(s) as conn:
        s.write_config({"databases": {"added": "host=127.0.0.1 port={primary_port} dbname=mydb"}})
        assert conn.execute("RELOAD").statusmessage == "RELOAD"
        assert "added" in [r[0] for r in conn.execute("SHOW DATABASES").fetchall()]
        with s.connect(dbname="added") as c:
            assert c.execute("SELECT 1").fetchone() == (1,)
        if IS_PGBOUNCER:
            return  # PgBouncer warns about an unknown key and reloads the rest
        s.write_config({"pgbouncer": {"no_such_key": "1"}})
        with pytest.raises(psycopg.Error, match="RELOAD failed") as info:
            conn.execute("RELOAD")
        assert info.value.sqlstate == "F0000"
        assert "added" in [r[0] for r in conn.execute("SHOW DATABASES").fetchall()]


# ---- extended protocol -----------------------------------------------------


@sluice_only
def test_extended_protocol_psycopg(sluice):
    s = sluice()
    with s.connect() as client, admin(s) as conn:
        client.execute("SELECT 1")
        for _ in range(3):  # prepared once, then executed by name
            cur = conn.execute("SHOW POOLS", prepare=True)
            assert [d.name for d in cur.description] == COLUMNS["POOLS"]
            assert {r[0] for r in cur.fetchall()} == {"mydb", "pgbouncer"}
        # Binary results: numbers come back as numbers.
        cur = conn.execute("SHOW STATS", binary=True)
        stats = {r[0]: r for r in cur.fetchall()}
        assert stats["mydb"][2] >= 1
        cur = conn.execute("SHOW CLIENTS", binary=True, prepare=True)
        assert {r[2] for r in cur.fetchall()} == {"mydb", "pgbouncer"}
        # Parameters (server-side binding).
        assert conn.execute("PAUSE %s", ("mydb",)).statusmessage == "PAUSE"
        assert conn.execute("RESUME %s", ("mydb",)).statusmessage == "RESUME"
        with pytest.raises(psycopg.Error, match="client not found"):
            conn.execute("KILL_CLIENT %s", (987654,))
        with pytest.raises(psycopg.Error, match="unknown SHOW topic"):
            conn.execute("SHOW NOTHING", prepare=True)
        assert conn.execute("SHOW STATE", prepare=True).fetchall()
        # A pipeline of several commands in one Sync.
        with conn.pipeline():
            c1 = conn.execute("SHOW VERSION", prepare=True)
            c2 = conn.execute("SHOW LISTS", prepare=True)
        assert c1.fetchone()[0].startswith("PgBouncer")
        assert dict(c2.fetchall())["pools"] == 2


@sluice_only
def test_extended_protocol_pause_waits(sluice):
    s = sluice()
    with s.connect() as in_xact, admin(s) as conn:
        in_xact.execute("BEGIN")
        in_xact.execute("SELECT 1")
        pause, result = run_in_thread(lambda: conn.execute("PAUSE", prepare=True))
        pause.join(0.5)
        assert pause.is_alive()
        in_xact.execute("COMMIT")
        pause.join(5)
        assert result["value"].statusmessage == "PAUSE"
        assert conn.execute("RESUME", prepare=True).statusmessage == "RESUME"
        assert in_xact.execute("SELECT 3").fetchone() == (3,)


@sluice_only
def test_extended_protocol_asyncpg(sluice):
    asyncpg = pytest.importorskip("asyncpg")
    s = sluice()

    async def run():
        conn = await asyncpg.connect(host="127.0.0.1", port=s.port, user="sluice",
                                     password="sluice", database="pgbouncer")
        try:
            pools = await conn.fetch("SHOW POOLS")
            assert list(pools[0].keys()) == COLUMNS["POOLS"]
            assert pools[0]["database"] == "pgbouncer" and pools[0]["cl_active"] == 1
            stats = await conn.fetch("SHOW STATS")
            assert list(stats[0].keys()) == COLUMNS["STATS"]
            clients = await conn.fetch("SHOW CLIENTS")
            assert clients[0]["id"] > 0 and clients[0]["state"] == "active"
            assert await conn.execute("RELOAD") == "RELOAD"
            with pytest.raises(asyncpg.PostgresError, match="no such database"):
                await conn.execute("PAUSE nosuchdb")
            assert (await conn.fetchval("SHOW VERSION")).startswith("PgBouncer")
        finally:
            await conn.close()

    asyncio.run(run())


# ---- SHUTDOWN --------------------------------------------------------------


@sluice_only
def test_shutdown(sluice):
    s = sluice()
    with admin(s) as conn:
        conn.execute("SHUTDOWN")
    expect_exit(s)


@sluice_only
def test_shutdown_wait_for_servers(sluice):
    """Answered at once (PgBouncer 1.23); the pooler exits in the background
    once no transaction is open."""
    s = sluice()
    with s.connect() as in_xact, s.connect() as idle, admin(s) as conn:
        idle.execute("SELECT 1")
        in_xact.execute("BEGIN")
        in_xact.execute("SELECT 1")
        started = time.monotonic()
        assert conn.execute("SHUTDOWN WAIT_FOR_SERVERS").statusmessage == "SHUTDOWN"
        assert time.monotonic() - started < 1
        time.sleep(0.3)
        assert s.running()
        with pytest.raises(psycopg.OperationalError):
            s.connect()  # no new connections
        assert in_xact.execute("SELECT 2").fetchone() == (2,)
        in_xact.execute("COMMIT")
        expect_exit(s)


@sluice_only
def test_shutdown_wait_for_clients(sluice):
    s = sluice()
    with s.connect() as client:
        client.execute("SELECT 1")
        with admin(s) as conn:
            assert conn.execute("SHUTDOWN WAIT_FOR_CLIENTS").statusmessage == "SHUTDOWN"
        time.sleep(0.5)
        assert s.running()
        assert client.execute("SELECT 2").fetchone() == (2,)
    expect_exit(s)


@pytest.mark.skipif(IS_PGBOUNCER, reason="sluice's console takes the extended query protocol; "
                    "PgBouncer's refuses it")
def test_sigterm_after_console_use(sluice):
    """Prepared statements and sessions of the console are freed at exit
    (the fixture's stop() checks the sanitizer found no leak)."""
    s = sluice()
    conn = admin(s)
    conn.execute("SHOW POOLS", prepare=True)
    conn.execute("SHOW STATS", prepare=True)
    s.signal(sig.SIGTERM)
    s.proc.wait(10)
    conn.close()
    assert not SANITIZER_REPORT.search(s.log_text()), s.log_tail()
    s.proc = None
