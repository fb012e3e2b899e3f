"""PgBouncer settings that sluice once accepted and ignored: each one now
does what PgBouncer's documentation says, or stops the start with the file,
the line and "not supported by sluice"."""

import grp
import hashlib
import os
import socket
import stat
import struct
import threading
import time

import psycopg
import pytest

from sluice_fixture import (IS_PGBOUNCER, JANITOR_ROUNDS, PASSWORDS, RUN_AS, RawConn, md5_secret,
                            message, startup_packet, wait_until)

sluice_only = pytest.mark.skipif(IS_PGBOUNCER, reason="sluice's own refusal")


def start_fails(s):
    """Start s, which must exit with an error; its log text."""
    try:
        s.start(timeout=5)
    except AssertionError:
        pass  # exited before its port was seen open
    assert s.wait_exit(5, codes=(1,)) == 1
    return s.log_text()


def pids(conn, n):
    return [conn.execute("SELECT pg_backend_pid()").fetchone()[0] for _ in range(n)]


# ---- refused -------------------------------------------------------------------------------


@sluice_only
@pytest.mark.parametrize("key,value", [
    ("sbuf_loopcnt", "5"),
    ("suspend_timeout", "20"),
    ("auth_hba_file", "/etc/pgbouncer/hba.conf"),
    ("resolv_conf", "/etc/resolv.conf"),
    ("dns_zone_check_period", "60"),
    ("pool_idle_timeout", "60"),
    ("auth_ident_file", "/etc/pgbouncer/ident.map"),
    ("auth_ldap_options", "ldapurl=ldap://x"),
    ("conffile", "/etc/pgbouncer/other.ini"),
    ("service_name", "mybouncer"),
    ("job_name", "mybouncer"),
])
def test_refused_setting_stops_start(sluice, key, value):
    text = ("[databases]\nmydb = host=127.0.0.1 port={primary_port} dbname=mydb\n"
            "[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n"
            f"auth_file = {{auth_file}}\n{key} = {value}\n")
    log = start_fails(sluice(text, start=False))
    assert f'sluice.ini:7: invalid value "{value}" for {key}: not supported by sluice' in log


@sluice_only
def test_auth_type_hba_stops_start(sluice):
    s = sluice({"pgbouncer": {"auth_type": "hba"}}, start=False)
    log = start_fails(s)
    assert 'invalid value "hba" for auth_type: not supported by sluice' in log
    assert "sluice.ini:" in log


@sluice_only
def test_refused_setting_default_is_accepted(sluice):
    """The default is what sluice does, so a file may spell it out."""
    s = sluice({"pgbouncer": {"sbuf_loopcnt": "1", "suspend_timeout": "10",
                              "auth_hba_file": ""}})
    with s.connect() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


@sluice_only
def test_target_session_attrs_stops_start(sluice):
    s = sluice({"databases": {"mydb": "host=127.0.0.1 port={primary_port} dbname=mydb "
                              "target_session_attrs=read-write"}}, start=False)
    log = start_fails(s)
    assert ('invalid value "read-write" for target_session_attrs of database "mydb": '
            "not supported by sluice") in log


@sluice_only
def test_refused_keys_at_their_default_load(sluice):
    s = sluice({"databases": {"mydb": "host=127.0.0.1 port={primary_port} dbname=mydb "
                              "target_session_attrs=any"},
                "pgbouncer": {"peer_id": "0", "pool_idle_timeout": "0",
                              "service_name": "pgbouncer"},
                "peers": {}})
    with s.connect() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


# ---- login_notify_message, scram_iterations (PgBouncer 1.24, 1.25) ---------------------------

pgbouncer_125 = pytest.mark.skipif(IS_PGBOUNCER, reason="PgBouncer 1.24+/1.25 setting (1.18 here)")


@pgbouncer_125
def test_login_notify_message(sluice):
    s = sluice({"pgbouncer": {"login_notify_message": "You are on a pooler; mind the pool mode"}})
    notices = []
    with s.connect() as conn:
        # The notice came before the first ReadyForQuery, with the login.
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        conn.execute("SELECT 1")
    raw = RawConn(s.port)
    raw.send(startup_packet("md5_user"))
    seen = []
    while True:
        kind, payload = raw.read_msg()
        seen.append(kind)
        if kind == b"R" and struct.unpack("!i", payload[:4])[0] == 5:
            inner = md5_secret("md5_user", PASSWORDS["md5_user"])[3:].encode()
            digest = "md5" + hashlib.md5(inner + payload[4:8]).hexdigest()
            raw.send(message(b"p", digest.encode() + b"\0"))
        elif kind == b"N":
            assert b"You are on a pooler; mind the pool mode" in payload
        elif kind == b"Z":
            break
    assert seen.index(b"N") < seen.index(b"Z")
    assert seen.count(b"N") == 1


def scram_first_iterations(port, user):
    """The iteration count sluice's server-first-message gives a SCRAM client."""
    raw = RawConn(port)
    raw.send(startup_packet(user))
    kind, payload = raw.read_msg()
    assert kind == b"R" and struct.unpack("!i", payload[:4])[0] == 10, (kind, payload)
    first = b"n,,n=,r=abcdefghijklmnopqrstuvwx"
    mech = b"SCRAM-SHA-256\0"
    raw.send(message(b"p", mech + struct.pack("!i", len(first)) + first))
    kind, payload = raw.read_msg()
    assert kind == b"R" and struct.unpack("!i", payload[:4])[0] == 11, (kind, payload)
    fields = dict(item.split("=", 1) for item in payload[4:].decode().split(","))
    raw.sock.close()
    return int(fields["i"])


@pgbouncer_125
def test_scram_iterations(sluice):
    """plain_user has a plain-text password in auth_file: sluice makes its
    SCRAM secret with scram_iterations; a login with it still works."""
    s = sluice({"pgbouncer": {"auth_type": "scram-sha-256"}})
    assert scram_first_iterations(s.port, "plain_user") == 4096
    s = sluice({"pgbouncer": {"auth_type": "scram-sha-256", "scram_iterations": "1234"}})
    assert scram_first_iterations(s.port, "plain_user") == 1234
    with s.connect(user="plain_user") as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("plain_user",)


# ---- unix_socket_group -----------------------------------------------------------------------


def test_unix_socket_group_owns_the_socket(sluice):
    group = RUN_AS or grp.getgrgid(os.getegid()).gr_name
    s = sluice({"pgbouncer": {"unix_socket_dir": "{dir}", "unix_socket_group": group,
                              "unix_socket_mode": "0770"}})
    st = os.stat(s.dir / f".s.PGSQL.{s.port}")
    assert stat.S_ISSOCK(st.st_mode)
    assert grp.getgrgid(st.st_gid).gr_name == group
    assert stat.S_IMODE(st.st_mode) == 0o770


@sluice_only
def test_unix_socket_group_unknown_stops_start(sluice):
    s = sluice({"pgbouncer": {"unix_socket_dir": "{dir}",
                              "unix_socket_group": "no_such_group_here"}}, start=False)
    assert 'unix_socket_group: unknown group "no_such_group_here"' in start_fails(s)


@sluice_only
@pytest.mark.skipif(not RUN_AS, reason="needs root to run the pooler as another user")
def test_unix_socket_group_not_allowed_stops_start(sluice):
    """A group the pooler's user is not in: the OS refuses, the start fails
    (not a socket silently left with the wrong group)."""
    s = sluice({"pgbouncer": {"unix_socket_dir": "{dir}", "unix_socket_group": "root"}},
               start=False)
    assert 'unix_socket_group: cannot give' in start_fails(s)


# ---- server_round_robin ----------------------------------------------------------------------


def warm_servers(s, n):
    """n server connections in the pool, all idle again afterwards."""
    conns = [s.connect(autocommit=False) for _ in range(n)]
    try:
        opened = {c.execute("SELECT pg_backend_pid()").fetchone()[0] for c in conns}
        assert len(opened) == n
    finally:
        for c in conns:
            c.rollback()
            c.close()


@pytest.mark.parametrize("round_robin", [False, True])
def test_server_round_robin(sluice, round_robin):
    """LIFO by default: one client's transactions keep getting the warmest
    server; server_round_robin: the idle servers take turns."""
    s = sluice({"pgbouncer": {"default_pool_size": 3, "server_round_robin": int(round_robin)}})
    warm_servers(s, 3)
    with s.connect() as conn:
        seen = pids(conn, 6)
    if round_robin:
        assert len(set(seen)) == 3, seen
        assert seen[:3] == seen[3:], seen
    else:
        assert len(set(seen)) == 1, seen


# ---- disable_pqexec --------------------------------------------------------------------------


def test_disable_pqexec(sluice):
    s = sluice({"pgbouncer": {"disable_pqexec": 1}})
    with s.connect() as conn:
        # psycopg sends a query with parameters as Parse/Bind/Execute.
        assert conn.execute("SELECT %s::int", (7,)).fetchone() == (7,)
        with pytest.raises(psycopg.OperationalError, match="PQexec disallowed"):
            conn.execute("SELECT 1; SELECT 2")


def test_disable_pqexec_session_mode(sluice):
    """Also with a server already linked (session pooling)."""
    s = sluice({"pgbouncer": {"disable_pqexec": 1, "pool_mode": "session"}})
    with s.connect() as conn:
        assert conn.execute("SELECT %s::int", (7,)).fetchone() == (7,)
        with pytest.raises(psycopg.OperationalError, match="PQexec disallowed"):
            conn.execute("SELECT 1")


def test_pqexec_allowed_by_default(sluice):
    s = sluice()
    with s.connect() as conn:
        conn.execute("SELECT 1; SELECT 2")


# ---- track_extra_parameters ------------------------------------------------------------------


@pytest.mark.skipif(IS_PGBOUNCER, reason="PgBouncer 1.20 added track_extra_parameters")
@pytest.mark.parametrize("tracked", [False, True])
def test_track_extra_parameters(sluice, tracked):
    """default_transaction_read_only is reported by PostgreSQL 14+ (a
    ParameterStatus at every change). Tracked, each client keeps its own
    value over one shared server, however it was changed: here with
    set_config(), which sluice's own replay of SET statements does not see.
    Not tracked, that change stays on the server for its next client."""
    extra = "IntervalStyle, default_transaction_read_only" if tracked else "IntervalStyle"
    s = sluice({"pgbouncer": {"default_pool_size": 1, "reserve_pool_size": 0,
                              "track_extra_parameters": extra}})
    with s.connect() as a, s.connect() as b:
        assert pids(a, 1) == pids(b, 1)  # one server for both
        a.execute("SELECT set_config('default_transaction_read_only', 'on', false)")
        show = "SHOW default_transaction_read_only"
        assert a.execute(show).fetchone() == ("on",)
        assert b.execute(show).fetchone() == (("off",) if tracked else ("on",))
        if tracked:
            assert a.execute(show).fetchone() == ("on",)
            assert a.info.parameter_status("default_transaction_read_only") == "on"
            assert b.info.parameter_status("default_transaction_read_only") == "off"
        else:
            b.execute("RESET default_transaction_read_only")


@sluice_only
def test_track_extra_parameters_bad_name_stops_start(sluice):
    s = sluice({"pgbouncer": {"track_extra_parameters": "IntervalStyle, bad;name"}}, start=False)
    assert 'track_extra_parameters: "bad;name" is not a parameter name' in start_fails(s)


# ---- auth_dbname -----------------------------------------------------------------------------

# Finds a password only when it runs in mydb: shows which database it ran in.
AUTH_QUERY_IN_MYDB = ("SELECT usename, passwd FROM pg_shadow "
                      "WHERE usename = $1 AND current_database() = 'mydb'")


def auth_dbname_config(general=None, entry=None):
    app = "host=127.0.0.1 port={primary_port} dbname=postgres"
    if entry:
        app += f" auth_dbname={entry}"
    cfg = {"databases": {"appdb": app,
                         "authdb": "host=127.0.0.1 port={primary_port} dbname=mydb"},
           "pgbouncer": {"auth_user": "sluice", "auth_query": AUTH_QUERY_IN_MYDB}}
    if general:
        cfg["pgbouncer"]["auth_dbname"] = general
    return cfg


@pytest.mark.skipif(IS_PGBOUNCER, reason="PgBouncer 1.19 added auth_dbname")
@pytest.mark.parametrize("where", ["general", "entry"])
def test_auth_dbname(sluice, where):
    """auth_query runs in the auth_dbname database (mydb), while the client's
    own database is postgres. Only auth_user is in the auth_file."""
    cfg = auth_dbname_config(general="authdb" if where == "general" else None,
                             entry="authdb" if where == "entry" else None)
    s = sluice(cfg, userlist={"sluice": "sluice"})
    with s.connect(user="md5_user", password="md5_user_pw", dbname="appdb") as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("postgres",)


def test_auth_query_runs_in_client_database_without_auth_dbname(sluice):
    s = sluice(auth_dbname_config(), userlist={"sluice": "sluice"})
    with pytest.raises(psycopg.OperationalError):
        s.connect(user="md5_user", password="md5_user_pw", dbname="appdb")


@sluice_only
def test_auth_dbname_unknown_database(sluice):
    cfg = auth_dbname_config(general="nosuchdb")
    cfg["databases"]["mydb"] = None  # no fallback either
    s = sluice(cfg, userlist={"sluice": "sluice"})
    with pytest.raises(psycopg.OperationalError, match='auth_dbname "nosuchdb" is not a database'):
        s.connect(user="md5_user", password="md5_user_pw", dbname="appdb")


# ---- server_fast_close -----------------------------------------------------------------------


def console(s):
    return psycopg.connect(s.dsn(user="sluice", dbname="pgbouncer"), autocommit=True)


@pytest.mark.parametrize("fast", [False, True])
def test_server_fast_close(sluice, fast):
    """Session pooling: after RECONNECT, a server in use is closed at the
    end of its transaction with server_fast_close (its client gets an
    error), else at the end of the session."""
    s = sluice({"pgbouncer": {"pool_mode": "session", "server_fast_close": int(fast)}})
    with s.connect() as idle, s.connect() as in_xact, console(s) as conn:
        pid = pids(idle, 1)[0]
        in_xact.execute("BEGIN")
        xact_pid = pids(in_xact, 1)[0]
        conn.execute("RECONNECT mydb")
        time.sleep(JANITOR_ROUNDS)
        if fast:
            with pytest.raises(psycopg.OperationalError, match="database configuration changed"):
                idle.execute("SELECT 1")
        else:
            assert pids(idle, 1) == [pid]
        # A transaction keeps its server to its end either way.
        assert pids(in_xact, 1) == [xact_pid]
        in_xact.execute("COMMIT")
        time.sleep(JANITOR_ROUNDS)
        if fast:
            with pytest.raises(psycopg.OperationalError, match="database configuration changed"):
                in_xact.execute("SELECT 1")
        else:
            assert pids(in_xact, 1) == [xact_pid]


# ---- cancel_wait_timeout ---------------------------------------------------------------------

CANCEL_REQUEST = struct.pack("!ii", 16, 80877102)


class CancelSwallowingProxy:
    """A TCP proxy to the primary that forwards every connection but cancel
    requests: those it accepts and never answers, as a host that does not
    respond would. Records when each cancel connection opened and closed."""

    def __init__(self, upstream_port):
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.cancels = []  # [opened, closed or None]
        self.cancel_socks = []
        self.socks = []
        self.done = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.done:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.socks.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        first = b""
        while len(first) < 8:
            chunk = conn.recv(8 - len(first))
            if not chunk:
                return
            first += chunk
        if first == CANCEL_REQUEST:
            entry = [time.monotonic(), None]
            self.cancels.append(entry)
            self.cancel_socks.append(conn)
            try:
                while conn.recv(65536):  # swallow it; note when sluice gives up
                    pass
            except OSError:
                return
            entry[1] = time.monotonic()
            return
        up = socket.create_connection(("127.0.0.1", self.upstream_port))
        self.socks.append(up)
        up.sendall(first)
        threading.Thread(target=self._pipe, args=(up, conn), daemon=True).start()
        self._pipe(conn, up)

    @staticmethod
    def _pipe(src, dst):
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def answer_cancels(self):
        """The host comes back: the cancel connections end."""
        for sock in self.cancel_socks:
            sock.shutdown(socket.SHUT_RDWR)

    def close(self):
        """Ends every connection (shutdown first: a close() alone does not
        wake a thread blocked reading the socket, and the connection would
        stay open, a backend with it)."""
        self.done = True
        for sock in [self.listener] + self.socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


@pytest.mark.skipif(IS_PGBOUNCER, reason="PgBouncer 1.19 added cancel_wait_timeout (and queues "
                    "cancels for a pool slot)")
@pytest.mark.parametrize("timeout", [0, 1])
def test_cancel_wait_timeout(sluice, cluster, timeout):
    """A cancel that cannot be delivered (its host does not answer) is
    dropped after cancel_wait_timeout, and the client goes on. With 0 it
    waits as long as the host lets it, and so does the client's next query
    (the server waits for the cancel to land before anyone may use it)."""
    proxy = CancelSwallowingProxy(cluster.primary_port)
    try:
        s = sluice({"databases": {"mydb": f"host=127.0.0.1 port={proxy.port} dbname=mydb"},
                    "pgbouncer": {"cancel_wait_timeout": timeout,
                                  "server_tls_sslmode": "disable"}})
        with s.connect() as conn:
            query = threading.Thread(target=conn.execute, args=("SELECT pg_sleep(2)",))
            query.start()
            time.sleep(0.5)
            conn.cancel()
            query.join(10)  # not cancelled: the cancel never reached the server
            assert len(proxy.cancels) == 1
            opened, closed = proxy.cancels[0]
            result = {}
            nxt = threading.Thread(
                target=lambda: result.setdefault("row", conn.execute("SELECT 1").fetchone()))
            nxt.start()
            nxt.join(1.5)
            if timeout:
                assert closed is not None and 0.7 < closed - opened < 2.5, (opened, closed)
                assert "dropped: cancel_wait_timeout" in s.log_text()
                assert result.get("row") == (1,)
            else:
                assert proxy.cancels[0][1] is None and nxt.is_alive()
                proxy.answer_cancels()
                nxt.join(5)
                assert result.get("row") == (1,)
    finally:
        proxy.close()


# ---- autodb_idle_timeout ---------------------------------------------------------------------


AUTODB = {"databases": {"mydb": None, "*": "host=127.0.0.1 port={primary_port}"}}


def show_rows(s, topic):
    with console(s) as conn:
        cur = conn.execute(f"SHOW {topic}")
        names = [d.name for d in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]


def autodb_listed(s):
    return ("mydb" in [r["name"] for r in show_rows(s, "DATABASES")],
            "mydb" in [r["database"] for r in show_rows(s, "POOLS")])


def mydb_queries(s):
    return next(r["total_query_count"] for r in show_rows(s, "STATS") if r["database"] == "mydb")


def test_autodb_idle_timeout_drops_unused_database(sluice):
    """A database made from "*" whose pools had no client and no server for
    autodb_idle_timeout is dropped: gone from SHOW DATABASES and SHOW POOLS,
    logged as PgBouncer logs it, and made anew, with its statistics from
    zero, when a client asks for it again."""
    s = sluice({**AUTODB, "pgbouncer": {"autodb_idle_timeout": "1", "server_idle_timeout": "1"}})
    with s.connect() as conn:
        for _ in range(10):
            conn.execute("SELECT 1")
    assert autodb_listed(s) == (True, True)
    assert mydb_queries(s) >= 10
    # Its server closes after server_idle_timeout, then 1 s unused.
    wait_until(lambda: autodb_listed(s) == (False, False), 15, "mydb dropped")
    assert ("dropping database 'mydb' as it does not exist anymore or inactive auto-database"
            in s.log_text())
    with console(s) as conn:
        conn.execute("RELOAD")  # a new config while it is dropped
    with s.connect() as conn:
        assert conn.execute("SELECT 2").fetchone() == (2,)
    assert autodb_listed(s) == (True, True)
    assert 1 <= mydb_queries(s) < 10


def test_autodb_idle_timeout_keeps_database_in_use(sluice):
    """A connected client keeps its database, even without a server; and
    with PgBouncer's default (3600 s), accepted as written in a file, an
    unused database stays."""
    s = sluice({**AUTODB, "pgbouncer": {"autodb_idle_timeout": "1", "server_idle_timeout": "0.5"}})
    with s.connect() as conn:
        conn.execute("SELECT 1")
        time.sleep(1 + JANITOR_ROUNDS)  # past autodb_idle_timeout
        assert autodb_listed(s) == (True, True)
        assert conn.execute("SELECT 2").fetchone() == (2,)
    s2 = sluice({**AUTODB, "pgbouncer": {"autodb_idle_timeout": "3600",
                                         "server_idle_timeout": "0.5"}})
    with s2.connect() as conn:
        conn.execute("SELECT 1")
    time.sleep(0.5 + JANITOR_ROUNDS)  # past server_idle_timeout
    # PgBouncer hides an unused one from SHOW DATABASES (not from SHOW
    # POOLS) while it waits out the timeout; sluice lists it until dropped.
    assert autodb_listed(s2) == (not IS_PGBOUNCER, True)
    assert "dropping database" not in s2.log_text()
