"""Security review in tests (issue 17 item 5).

a. The admin console refuses everyone but admin_users (and stats_users, for
   SHOW only) on every path: TCP, the Unix socket, the extended protocol,
   both console names, auth_type trust and any, and a [databases] entry that
   would shadow the console.
b. SCRAM channel binding (tls-server-end-point): libpq's
   channel_binding=require through sluice's client TLS, and sluice binding
   to a PostgreSQL 15 over TLS.
c. Failed logins: 28P01 with PostgreSQL's message, a log line naming user,
   database and address, no delay (as PgBouncer), and no hint of which
   users exist.
d. No secret in logs (verbose = 2), SHOW output, /metrics or the status page.
e. TLS protocol versions and ciphers outside the configured ones are refused.

docs/reliability.md ("Security review") says what each test found."""

import base64
import hashlib
import hmac
import os
import re
import socket
import ssl
import struct
import time
import urllib.request

import psycopg
import pytest

from sluice_fixture import (AUTH_SASL, IS_PGBOUNCER, PASSWORDS, RUN_AS, SSL_REQUEST_CODE,
                            RawConn, ServerError, error_fields, message, quote, startup_packet)
from upstream_pg import Certs, UpstreamPostgres

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="sluice's own security checks")


def dsn(s, user, dbname="pgbouncer", password=None, host="127.0.0.1", **extra):
    password = PASSWORDS.get(user, "") if password is None else password
    params = dict(host=host, port=s.port, dbname=dbname, user=user, password=password,
                  connect_timeout=5, **extra)
    return " ".join(f"{k}='{quote(v)}'" for k, v in params.items())


def console(s, user="sluice", dbname="pgbouncer", **kw):
    return psycopg.connect(dsn(s, user, dbname, **kw), autocommit=True)


# Everything the console can do that changes something: stats users must get
# "admin access needed" for each, whichever protocol carries it.
ADMIN_COMMANDS = ["RELOAD", "PAUSE", "PAUSE mydb", "RESUME", "SUSPEND", "KILL mydb",
                  "KILL_CLIENT 1", "DISABLE mydb", "ENABLE mydb", "RECONNECT", "WAIT_CLOSE",
                  "SET default_pool_size = 5", "SHUTDOWN"]


def expect_start_failure(s):
    """The pooler refuses its config: it exits with 1 at start."""
    try:
        s.start(timeout=5)
    except AssertionError:
        pass  # exited before its port was seen open
    assert s.wait_exit(5, codes=(1,)) == 1, s.log_tail()


# ---- a. the admin console ------------------------------------------------------------------


def raw_console_login(port, user, dbname="pgbouncer"):
    """Startup for the console as user: the first message's kind and fields."""
    with RawConn(port) as conn:
        conn.send(startup_packet(user, dbname))
        kind, payload = conn.read_msg()
        return kind, (error_fields(payload) if kind == b"E" else payload)


def test_console_refuses_other_users_over_tcp(sluice):
    """A user not in admin_users or stats_users is refused before any
    password is asked (PgBouncer's "not allowed", 28000), with its right
    password too, under both console names, and also a user in no list."""
    s = sluice({"pgbouncer": {"stats_users": "plain_user"}})
    for dbname in ("pgbouncer", "sluice"):
        for user in ("md5_user", "scram_user", "trust_user", "nobody_at_all", "pgbouncer"):
            kind, fields = raw_console_login(s.port, user, dbname)
            assert kind == b"E", (user, dbname)
            assert fields["C"] == "28000" and fields["M"] == "not allowed", fields
        with pytest.raises(psycopg.OperationalError, match="not allowed"):
            console(s, "md5_user", dbname)
    # Names are exact: "PgBouncer" is an ordinary (unknown) database.
    with pytest.raises(psycopg.OperationalError, match="password authentication failed|does not"):
        console(s, "sluice", "PgBouncer", password="wrong")
    # A wrong password of an admin user is a password failure.
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        console(s, "sluice", password="wrong")
    assert s.running()


def unix_dsn(s, user, dbname="pgbouncer", password=None):
    params = dict(host=s.dir, port=s.port, dbname=dbname, user=user, connect_timeout=5,
                  password=PASSWORDS.get(user, "") if password is None else password)
    return " ".join(f"{k}='{quote(v)}'" for k, v in params.items())


def test_console_refuses_other_users_over_unix_socket(sluice):
    """Over the Unix socket the same rules hold. User "pgbouncer" is trusted
    without a password only from a process of the pooler's own uid: from
    another uid (the tests run as root, the pooler as postgres) it is just
    a user not in admin_users."""
    s = sluice({"pgbouncer": {"unix_socket_dir": "{dir}", "stats_users": "plain_user"}})
    with pytest.raises(psycopg.OperationalError, match="not allowed"):
        psycopg.connect(unix_dsn(s, "md5_user"))
    with pytest.raises(psycopg.OperationalError, match="not allowed"):
        psycopg.connect(unix_dsn(s, "scram_user", dbname="sluice"))
    if RUN_AS:
        with pytest.raises(psycopg.OperationalError, match="not allowed"):
            psycopg.connect(unix_dsn(s, "pgbouncer", password=""))
    with psycopg.connect(unix_dsn(s, "plain_user"), autocommit=True) as conn:
        with pytest.raises(psycopg.Error, match="admin access needed"):
            conn.execute("RELOAD")
    with psycopg.connect(unix_dsn(s, "sluice"), autocommit=True) as conn:
        assert conn.execute("SHOW VERSION").fetchone()


def test_stats_user_refused_every_admin_command(sluice):
    """stats_users may SHOW; every other command is refused over the simple
    protocol, the extended one (psycopg binds parameters: Parse, Bind,
    Execute) and named prepared statements, and the pooler keeps running."""
    s = sluice({"pgbouncer": {"stats_users": "plain_user"}})
    with console(s, "plain_user") as conn:
        assert conn.pgconn.parameter_status(b"is_superuser") == b"off"
        assert conn.execute("SHOW POOLS").fetchall()
        assert conn.execute("SHOW POOLS", prepare=True).fetchall()
        for command in ADMIN_COMMANDS:
            with pytest.raises(psycopg.Error, match="admin access needed"):
                conn.execute(command)
            with pytest.raises(psycopg.Error, match="admin access needed"):
                conn.execute(command, prepare=True)
        for command, args in [("PAUSE %s", ("mydb",)), ("KILL %s", ("mydb",)),
                              ("KILL_CLIENT %s", (1,)), ("DISABLE %s", ("mydb",))]:
            with pytest.raises(psycopg.Error, match="admin access needed"):
                conn.execute(command, args)
        assert conn.execute("SHOW VERSION").fetchone()
    with console(s) as adm:
        assert adm.pgconn.parameter_status(b"is_superuser") == b"on"
        pools = [r for r in adm.execute("SHOW DATABASES").fetchall() if r[0] == "mydb"]
        assert pools and pools[0][-2] == 0  # not paused
    assert s.running()


def test_stats_user_raw_extended_shutdown(sluice):
    """SHUTDOWN as one unnamed Parse/Bind/Execute/Sync batch with no Describe,
    from a stats user: refused, the connection stays, the pooler runs."""
    s = sluice({"pgbouncer": {"stats_users": "plain_user", "auth_type": "plain"}})
    with RawConn(s.port) as conn:
        conn.login("plain_user", dbname="pgbouncer")
        for sql in ("SHUTDOWN", "RELOAD", "SET admin_users = 'plain_user'"):
            conn.send(message(b"P", b"\0" + sql.encode() + b"\0\0\0")
                      + message(b"B", b"\0\0" + b"\0\0" + b"\0\0" + b"\0\0")
                      + message(b"E", b"\0\0\0\0\0") + message(b"S"))
            kinds, error = [], None
            while True:
                kind, payload = conn.read_msg()
                kinds.append(kind)
                if kind == b"E":
                    error = error_fields(payload)
                if kind == b"Z":
                    break
            assert error and "admin access needed" in error["M"], (sql, kinds, error)
        assert conn.query("SHOW VERSION")
    assert s.running()
    with console(s, "plain_user") as conn:  # and admin_users is unchanged
        with pytest.raises(psycopg.Error, match="admin access needed"):
            conn.execute("RELOAD")


@pytest.mark.parametrize("auth_type", ["trust", "any"])
def test_console_under_trust_and_any(sluice, auth_type):
    """trust skips passwords, not the console's user check: other users are
    still refused. any lets every user in as a stats user, as PgBouncer does
    (its docs: "When auth_type=any, then any user is allowed in as a
    stats_user"), so no admin command works for them."""
    s = sluice({"pgbouncer": {"auth_type": auth_type}})
    if auth_type == "trust":
        with pytest.raises(psycopg.OperationalError, match="not allowed"):
            console(s, "md5_user", password="")
        with console(s, "sluice", password="") as conn:
            assert conn.execute("SHOW VERSION").fetchone()
    else:
        with console(s, "md5_user", password="") as conn:
            assert conn.pgconn.parameter_status(b"is_superuser") == b"off"
            assert conn.execute("SHOW POOLS").fetchall()
            for command in ADMIN_COMMANDS:
                with pytest.raises(psycopg.Error, match="admin access needed"):
                    conn.execute(command)
    assert s.running()


def test_auth_type_hba_refused(sluice):
    """sluice has no pg_hba parser: auth_type = hba stops the load, so
    there is no hba path to the console (or anywhere) to get wrong."""
    s = sluice({"pgbouncer": {"auth_type": "hba"}}, start=False)
    expect_start_failure(s)
    assert "auth_type" in s.log_text() and "hba" in s.log_text()


@pytest.mark.parametrize("name", ["pgbouncer", "sluice"])
def test_console_name_in_databases_refused(sluice, name):
    """A [databases] entry named like the console would be unreachable (the
    console answers that name) or, worse, would make clients believe they
    reach the database. PgBouncer refuses "pgbouncer" ("database name is
    reserved"); sluice refuses both of its console names, at start and at
    a reload (which keeps the running config)."""
    entry = "host=127.0.0.1 port={primary_port} dbname=mydb"
    s = sluice({"databases": {name: entry}}, start=False)
    expect_start_failure(s)
    assert f'database name "{name}" is reserved for the admin console' in s.log_text()
    s2 = sluice()
    s2.write_config({"databases": {name: entry}})
    mark = s2.log_mark()
    with console(s2) as adm:
        with pytest.raises(psycopg.Error, match="RELOAD failed"):
            adm.execute("RELOAD")
    s2.wait_for_log("reserved for the admin console", since=mark)
    with console(s2, dbname=name) as adm:
        assert adm.execute("SHOW VERSION").fetchone()


# ---- c. failed logins ------------------------------------------------------------------------


def scram_client_final(first_bare, server_first, password, gs2=b"n,,", cbind=b""):
    """The client-final-message for a SCRAM exchange, computed here."""
    attrs = dict(a.split("=", 1) for a in server_first.split(","))
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(attrs["s"]),
                                 int(attrs["i"]))
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored = hashlib.sha256(client_key).digest()
    c = base64.b64encode(gs2 + cbind).decode()
    without_proof = f"c={c},r={attrs['r']}"
    auth_msg = f"{first_bare},{server_first},{without_proof}".encode()
    sig = hmac.digest(stored, auth_msg, "sha256")
    proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, sig))).decode()
    return f"{without_proof},p={proof}".encode()


def login_error(port, user, password, dbname="mydb"):
    """Logs in by hand (cleartext, md5 or SCRAM without binding): the
    ErrorResponse fields, or None if the login succeeded."""
    with RawConn(port) as conn:
        conn.send(startup_packet(user, dbname))
        while True:
            kind, payload = conn.read_msg()
            if kind == b"E":
                return error_fields(payload)
            if kind == b"Z":
                return None
            if kind != b"R":
                continue
            code = struct.unpack("!i", payload[:4])[0]
            if code == AUTH_SASL:
                first = b"n,,n=,r=rawnonce0123456789abcd"
                conn.send(message(b"p", b"SCRAM-SHA-256\0" + struct.pack("!i", len(first))
                                  + first))
            elif code == 11:
                conn.send(message(b"p", scram_client_final(first[3:].decode(),
                                                           payload[4:].decode(), password)))
            elif code in (3, 5):
                if code == 3:
                    conn.send(message(b"p", password.encode() + b"\0"))
                else:
                    inner = hashlib.md5((password + user).encode()).hexdigest().encode()
                    digest = "md5" + hashlib.md5(inner + payload[4:8]).hexdigest()
                    conn.send(message(b"p", digest.encode() + b"\0"))


def sasl_first_answer(port, user, password="wrong"):
    """A SCRAM login by hand up to the server's answer to client-first:
    (auth code, the server-first-message or error fields)."""
    with RawConn(port) as conn:
        conn.send(startup_packet(user))
        kind, payload = conn.read_msg()
        assert kind == b"R", (kind, payload)
        code = struct.unpack("!i", payload[:4])[0]
        assert code == AUTH_SASL
        first = b"n,,n=,r=abcdefghijklmnopqrstuvwx"
        conn.send(message(b"p", b"SCRAM-SHA-256\0" + struct.pack("!i", len(first)) + first))
        kind, payload = conn.read_msg()
        if kind == b"E":
            return None, error_fields(payload)
        return struct.unpack("!i", payload[:4])[0], payload[4:]


def test_unknown_user_scram_answer_looks_like_a_known_one(sluice):
    """auth_type scram-sha-256: a user that does not exist (or has only an
    md5 secret) gets a server-first-message like any user and fails at
    the proof with the same 28P01, as PostgreSQL's mock authentication
    does. Before, sluice refused it at once: a way to list users. The salt
    is stable per user (also for a plain-text password, which sluice used
    to salt afresh at each login), as a stored SCRAM secret's is."""
    s = sluice({"pgbouncer": {"auth_type": "scram-sha-256"}})
    salts = {}
    for user in ("scram_user", "no_such_user_x", "md5_user", "plain_user"):
        for _ in range(2):
            code, first = sasl_first_answer(s.port, user)
            assert code == 11, (user, first)  # AuthenticationSASLContinue
            assert first.startswith(b"r=abcdefghijklmnopqrstuvwx") and b",i=4096" in first
            attrs = dict(a.split(b"=", 1) for a in first.split(b","))
            # One salt per user, login after login, whatever is on file:
            # none of them looks unlike a stored SCRAM secret.
            assert salts.setdefault(user, attrs[b"s"]) == attrs[b"s"], user
    assert len(set(salts.values())) == len(salts)
    for user in ("scram_user", "no_such_user_x", "md5_user"):
        err = login_error(s.port, user, "not-the-password")
        assert err["C"] == "28P01" and err["M"] == \
            f'password authentication failed for user "{user}"', err
    assert login_error(s.port, "scram_user", PASSWORDS["scram_user"]) is None


@pytest.mark.parametrize("auth_type,user", [("md5", "md5_user"), ("md5", "scram_user"),
                                            ("scram-sha-256", "plain_user"),
                                            ("plain", "plain_user")])
def test_wrong_password_error_and_log(sluice, auth_type, user):
    """A wrong password: 28P01 "password authentication failed for user",
    sent at once (PgBouncer has no auth failure delay: disconnect_client()
    answers straight away; PostgreSQL's delay is the auth_delay extension,
    off by default); a log line with user, database and address; and the
    attempted password nowhere in the log."""
    s = sluice({"pgbouncer": {"auth_type": auth_type, "log_connections": 1,
                              "log_disconnections": 1, "verbose": 2}})
    attempt = f"WrongPw-{auth_type}-{os.getpid()}"
    mark = s.log_mark()
    t0 = time.monotonic()
    err = login_error(s.port, user, attempt)
    elapsed = time.monotonic() - t0
    assert err["C"] == "28P01" and err["S"] == "FATAL"
    assert err["M"] == f'password authentication failed for user "{user}"'
    assert elapsed < 2.0
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(dsn(s, user, "mydb", password=attempt))
    line = s.wait_for_log(rf"C-0x[0-9a-f]+: mydb/{user}@127\.0\.0\.1:\d+ login failed: "
                          rf"db=mydb user={user}", since=mark)
    assert line
    time.sleep(0.2)
    log = s.log_text()[mark:]
    assert attempt not in log
    assert hashlib.md5((attempt + user).encode()).hexdigest() not in log


# ---- d. no secret anywhere -------------------------------------------------------------------

# Distinctive strings: each is a secret of some kind in the config below.
SECRET_DB_PW = "SecretDbPw-7d1f"          # [databases] password=
SECRET_USERLIST_PW = "SecretListPw-93ab"  # a userlist password (a user PostgreSQL lacks)
SECRET_WRONG_PW = "SecretWrongPw-4c2e"    # a wrong password a client tries
SECRET_REDIS_PW = "SecretRedisPw-51e0"    # a redis URL's password
SECRET_AUTH_USER_PW = "SecretAuthUserPw-0f3d"  # auth_user's password (userlist)


@pytest.fixture
def auth_user(cluster):
    """A superuser of this test alone (auth_query reads pg_shadow), with a
    distinctive password."""
    name = f"sec_auth_{os.getpid()}"
    cluster.create_role(name, SECRET_AUTH_USER_PW)
    with cluster.primary_conn() as conn:
        conn.execute(f'ALTER ROLE "{name}" SUPERUSER')
    yield name
    cluster.drop_role(name)


def secrets_config(auth_user):
    return {
        "databases": {
            "mydb": "host=127.0.0.1 port={primary_port} dbname=mydb",
            "pwdb": f"host=127.0.0.1 port={{primary_port}} dbname=mydb user=scram_user "
                    f"password={SECRET_DB_PW}",
            "quoted": f"host=127.0.0.1 port={{primary_port}} dbname=mydb user=scram_user "
                      f"password='{SECRET_DB_PW}-q'",
        },
        "pgbouncer": {"verbose": 2, "log_connections": 1, "log_disconnections": 1,
                      "log_pooler_errors": 1, "stats_users": "plain_user",
                      "auth_user": auth_user, "unix_socket_dir": "{dir}",
                      "auth_query": "SELECT usename, passwd FROM pg_shadow WHERE usename=$1",
                      "metrics_listen": "127.0.0.1:{metrics_port}"},
        "peers": {"1": "host=127.0.0.1 port=1", "2": "host={dir}"},
    }


def scram_secret_of(cluster, user):
    with cluster.primary_conn() as conn:
        return conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s",
                            (user,)).fetchone()[0]


def secret_parts(secret):
    """The base64 pieces of a SCRAM secret (salt, StoredKey, ServerKey)."""
    _, rest = secret.split("$", 1)
    salt = rest.split(":", 1)[1].split("$")[0]
    keys = rest.split("$", 1)[1].split(":")
    return [salt] + keys


def fetch(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode(errors="replace")


SHOW_TOPICS = ["CONFIG", "DATABASES", "USERS", "PEERS", "POOLS", "CLIENTS", "SERVERS", "STATS",
               "LISTS", "STATE", "SOCKETS", "ACTIVE_SOCKETS", "DNS_HOSTS", "PEER_POOLS"]


def test_no_secret_in_logs_show_metrics_or_page(sluice, cluster, auth_user):
    scram_secret = scram_secret_of(cluster, "scram_user")
    md5_hash = hashlib.md5(b"md5_user_pwmd5_user").hexdigest()
    userlist = {"sluice": "sluice", "plain_user": "plain_user_pw",
                "md5_user": "md5" + md5_hash, "scram_user": scram_secret,
                "ghost_user": SECRET_USERLIST_PW, auth_user: SECRET_AUTH_USER_PW}
    s = sluice(secrets_config(auth_user), userlist=userlist)
    # Logins: md5 and SCRAM (right and wrong), auth_query, a server login
    # with the [databases] password (PostgreSQL refuses it: wrong password).
    with s.connect("md5_user") as conn:
        conn.execute("SELECT 1")
    with s.connect("scram_user") as conn:
        conn.execute("SELECT 1")
    with s.connect("trust_user", password="trust_user_pw") as conn:  # via auth_query
        conn.execute("SELECT 1")
    for user in ("md5_user", "scram_user", "ghost_user", "trust_user"):
        with pytest.raises(psycopg.OperationalError):
            s.connect(user, password=SECRET_WRONG_PW)
    for db in ("pwdb", "quoted"):
        with pytest.raises(psycopg.OperationalError):
            s.connect("scram_user", dbname=db)
    # The console: reload, every SHOW, as admin and as stats user.
    shown = []
    with console(s) as adm:
        adm.execute("RELOAD")
        for topic in SHOW_TOPICS:
            rows = adm.execute(f"SHOW {topic}").fetchall()
            shown.append(repr(rows))
        shown.append(repr(adm.execute("SHOW CONFIG").fetchall()))
    with console(s, "plain_user") as st:
        for topic in ("DATABASES", "USERS", "CONFIG"):
            shown.append(repr(st.execute(f"SHOW {topic}").fetchall()))
    shown.append(fetch(f"http://127.0.0.1:{s.metrics_port}/metrics"))
    shown.append(fetch(f"http://127.0.0.1:{s.metrics_port}/"))
    time.sleep(0.3)
    log = s.log_text()
    assert "SHOW" in log or "RELOAD" in log or "login attempt" in log  # verbose really on
    secrets = {"[databases] password": SECRET_DB_PW, "userlist password": SECRET_USERLIST_PW,
               "wrong password": SECRET_WRONG_PW, "md5 hash": md5_hash,
               "auth_user password": SECRET_AUTH_USER_PW,
               "plain password": "plain_user_pw"}
    for i, part in enumerate(secret_parts(scram_secret)[1:]):
        secrets[f"SCRAM key {i}"] = part
    for where, text in [("log", log), ("SHOW/metrics/page", "\n".join(shown))]:
        for what, secret in secrets.items():
            assert secret not in text, f"{what} appears in the {where}"
        # No SCRAM proof or signature, no md5 hash or salted md5 response.
        assert not re.search(r"\b[pv]=[A-Za-z0-9+/]{43}=", text), where
        assert not re.search(r"md5[0-9a-f]{32}", text), where


def test_no_secret_in_config_errors(sluice):
    """Config errors quote the file and key, never a password: a redis URL
    with credentials (refused: sluice has no redis AUTH), a [databases] entry
    with a bad key next to its password, a [peers] entry with a password."""
    cases = [
        {"pgbouncer": {"cache": f"redis://:{SECRET_REDIS_PW}@127.0.0.1:1/0"}},
        {"databases": {"bad": f"host=127.0.0.1 password={SECRET_DB_PW} bogus_key=1"}},
        {"databases": {"bad": f"host=127.0.0.1 password='{SECRET_DB_PW}"}},
        {"peers": {"1": f"host=127.0.0.1 password={SECRET_DB_PW}"}},
    ]
    for config in cases:
        s = sluice(config, start=False)
        expect_start_failure(s)
        text = s.log_text()
        assert "error" in text.lower() or "ERROR" in text, text
        assert SECRET_REDIS_PW not in text and SECRET_DB_PW not in text, text
        s.proc = None


# ---- b. channel binding ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def certs():
    c = Certs()
    yield c
    c.cleanup()


@pytest.fixture(scope="module")
def scram_upstream(certs):
    """The tests' own PostgreSQL 15 with ssl=on, asking SCRAM over TLS (it
    then offers SCRAM-SHA-256-PLUS) and refusing TLS 1.2."""
    pg = UpstreamPostgres(certs)
    with pg.admin_conn() as conn:
        conn.execute("SET password_encryption = 'scram-sha-256'")
        conn.execute("ALTER ROLE scram_user PASSWORD 'scram_user_pw'")
        conn.execute("ALTER ROLE md5_user PASSWORD 'md5_user_pw'")
        conn.execute("ALTER SYSTEM SET log_connections = on")
    (pg.data / "pg_hba.conf").write_text(
        "local   all  all                       trust\n"
        "hostssl all  all         127.0.0.1/32  scram-sha-256\n"
        "host    all  all         0.0.0.0/0     reject\n")
    with pg.admin_conn() as conn:
        conn.execute("SELECT pg_reload_conf()")
    yield pg
    pg.destroy()


def client_tls_keys(certs, **extra):
    keys = {"client_tls_sslmode": "require", "client_tls_key_file": certs["pg_server.key"],
            "client_tls_cert_file": certs["server.crt"]}
    keys.update(extra)
    return keys


@pytest.mark.parametrize("auth_type", ["scram-sha-256", "md5"])
def test_client_channel_binding_require(sluice, certs, cluster, auth_type):
    """libpq channel_binding=require through sluice's client TLS: sluice
    offers SCRAM-SHA-256-PLUS and checks the binding to its certificate,
    for a plain password and a SCRAM secret in the auth_file. An md5
    secret cannot bind: libpq refuses the login, as it should."""
    scram_secret = scram_secret_of(cluster, "scram_user")
    users = {"sluice": "sluice", "plain_user": "plain_user_pw", "scram_user": scram_secret,
             "md5_user": "md5" + hashlib.md5(b"md5_user_pwmd5_user").hexdigest()}
    s = sluice({"pgbouncer": client_tls_keys(certs, auth_type=auth_type)}, userlist=users)
    for user in ("scram_user", "plain_user") if auth_type == "scram-sha-256" else ("scram_user",):
        with psycopg.connect(dsn(s, user, "mydb", sslmode="require",
                                 channel_binding="require"), autocommit=True) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (user,)
        with psycopg.connect(dsn(s, user, "mydb", sslmode="require",
                                 channel_binding="disable"), autocommit=True) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(dsn(s, user, "mydb", password="wrong", sslmode="require",
                                channel_binding="require"))
    # An md5 secret: under md5 sluice asks for md5, which libpq refuses with
    # channel_binding=require; under scram-sha-256 the exchange runs with
    # random keys and fails at the proof (PostgreSQL does the same).
    with pytest.raises(psycopg.OperationalError,
                       match="channel binding" if auth_type == "md5" else "password auth"):
        psycopg.connect(dsn(s, "md5_user", "mydb", sslmode="require",
                            channel_binding="require"))
    # Without TLS there is nothing to bind to: libpq refuses, sluice offers
    # plain SCRAM only.
    s2 = sluice({"pgbouncer": {"auth_type": "scram-sha-256"}})
    with pytest.raises(psycopg.OperationalError, match="channel binding"):
        psycopg.connect(dsn(s2, "scram_user", "mydb", channel_binding="require"))


def tls_raw_scram(s, certs, gs2, mech, cbind=None):
    """SCRAM by hand over TLS with a chosen GS2 header and mechanism: the
    ErrorResponse fields, or None once AuthenticationOk arrived."""
    raw = socket.create_connection(("127.0.0.1", s.port), timeout=5)
    raw.sendall(struct.pack("!ii", 8, SSL_REQUEST_CODE))
    assert raw.recv(1) == b"S"
    ctx = ssl.create_default_context(cafile=certs["ca.crt"])
    with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        conn = RawConn.__new__(RawConn)
        conn.sock, conn.buf = tls, bytearray()
        conn.send(startup_packet("scram_user"))
        kind, payload = conn.read_msg()
        mechs = payload[4:].split(b"\0")
        assert mechs[:2] == [b"SCRAM-SHA-256-PLUS", b"SCRAM-SHA-256"]
        der = tls.getpeercert(binary_form=True)
        if cbind is None:
            cbind = hashlib.sha256(der).digest()
        first = gs2 + b"n=,r=clientnonce1234567890"
        conn.send(message(b"p", mech + b"\0" + struct.pack("!i", len(first)) + first))
        kind, payload = conn.read_msg()
        if kind == b"E":
            return error_fields(payload)
        final = scram_client_final(first[len(gs2):].decode(), payload[4:].decode(),
                                   PASSWORDS["scram_user"], gs2,
                                   cbind if gs2.startswith(b"p=") else b"")
        conn.send(message(b"p", final))
        while True:
            kind, payload = conn.read_msg()
            if kind == b"E":
                return error_fields(payload)
            if kind == b"R" and struct.unpack("!i", payload[:4])[0] == 0:
                return None


def test_client_channel_binding_checks(sluice, certs):
    """Over TLS, by hand: the right hash logs in; another certificate's hash
    (a man in the middle) is refused; "y" (the client believes we cannot
    bind, although we offered) is refused as a downgrade; binding data with
    plain SCRAM-SHA-256 is refused."""
    s = sluice({"pgbouncer": client_tls_keys(certs, auth_type="scram-sha-256")})
    plus = b"SCRAM-SHA-256-PLUS"
    assert tls_raw_scram(s, certs, b"p=tls-server-end-point,,", plus) is None
    assert tls_raw_scram(s, certs, b"n,,", b"SCRAM-SHA-256") is None
    err = tls_raw_scram(s, certs, b"p=tls-server-end-point,,", plus, cbind=b"\1" * 32)
    assert err and "channel binding" in err["M"], err
    err = tls_raw_scram(s, certs, b"y,,", b"SCRAM-SHA-256")
    assert err and "channel binding negotiation" in err["M"], err
    err = tls_raw_scram(s, certs, b"p=tls-server-end-point,,", b"SCRAM-SHA-256")
    assert err and err["C"] == "08P01", err
    err = tls_raw_scram(s, certs, b"p=tls-unique,,", plus)
    assert err and "channel-binding type" in err["M"], err
    assert s.running()


def test_server_channel_binding(sluice, scram_upstream):
    """sluice as PostgreSQL's client over TLS: the server offers
    SCRAM-SHA-256-PLUS and sluice binds to its certificate (the login would
    fail if the hash were wrong: PostgreSQL checks it), with a password and
    with a client's SCRAM keys (passthrough)."""
    cfg = {"databases": {"mydb": f"host=127.0.0.1 port={scram_upstream.port} dbname=mydb"},
           "pgbouncer": {"server_tls_sslmode": "require", "verbose": 1,
                         "auth_type": "scram-sha-256"}}
    s = sluice(cfg)
    mark = s.log_mark()
    with s.connect("scram_user") as conn:
        assert conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
                            ).fetchone() == (True,)
    s.wait_for_log(r"SCRAM-SHA-256-PLUS", since=mark)
    # The auth_file holds the server's SCRAM secret: sluice logs in with
    # the client's keys, still bound to the server's certificate.
    with scram_upstream.admin_conn() as conn:
        secret = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = 'md5_user'"
                              ).fetchone()[0]
    s2 = sluice(cfg, userlist={"md5_user": secret, "sluice": "sluice"})
    with s2.connect("md5_user") as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("md5_user",)
    s2.wait_for_log(r"SCRAM-SHA-256-PLUS")


def test_server_without_tls_plain_scram(sluice):
    """The shared cluster has no TLS: sluice logs in with plain SCRAM ("n")."""
    s = sluice({"pgbouncer": {"verbose": 1}})
    with s.connect("scram_user") as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert "SCRAM-SHA-256-PLUS" not in s.log_text()


# ---- e. TLS versions and ciphers ---------------------------------------------------------


def tls_handshake(s, certs, min_version=None, max_version=None, ciphers=None):
    """A TLS handshake with the pooler: (version, cipher) or the SSLError."""
    with socket.create_connection(("127.0.0.1", s.port), timeout=5) as raw:
        raw.sendall(struct.pack("!ii", 8, SSL_REQUEST_CODE))
        assert raw.recv(1) == b"S"
        ctx = ssl.create_default_context(cafile=certs["ca.crt"])
        if min_version:
            ctx.minimum_version = min_version
        if max_version:
            ctx.maximum_version = max_version
        if ciphers:
            ctx.set_ciphers(ciphers)
        try:
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                name, version, _ = tls.cipher()
                return version, name
        except (ssl.SSLError, ConnectionResetError) as e:
            return e


def test_client_tls_protocols(sluice, certs):
    s = sluice({"pgbouncer": client_tls_keys(certs, client_tls_protocols="tlsv1.3")})
    assert tls_handshake(s, certs)[0] == "TLSv1.3"
    assert isinstance(tls_handshake(s, certs, max_version=ssl.TLSVersion.TLSv1_2), Exception)
    s = sluice({"pgbouncer": client_tls_keys(certs, client_tls_protocols="tlsv1.2")})
    assert tls_handshake(s, certs)[0] == "TLSv1.2"
    assert isinstance(tls_handshake(s, certs, min_version=ssl.TLSVersion.TLSv1_3), Exception)
    # "secure" (the default): 1.2 and 1.3. (1.0 and 1.1 fail even under
    # "all": OpenSSL 3's default security level refuses them.)
    s = sluice({"pgbouncer": client_tls_keys(certs)})
    assert tls_handshake(s, certs, max_version=ssl.TLSVersion.TLSv1_2)[0] == "TLSv1.2"
    assert tls_handshake(s, certs)[0] == "TLSv1.3"


def test_client_tls_ciphers(sluice, certs):
    only = "ECDHE-ECDSA-AES128-GCM-SHA256"
    s = sluice({"pgbouncer": client_tls_keys(certs, client_tls_protocols="tlsv1.2",
                                             client_tls_ciphers=only)})
    assert tls_handshake(s, certs) == ("TLSv1.2", only)
    assert isinstance(tls_handshake(s, certs, ciphers="ECDHE-ECDSA-AES256-GCM-SHA384"),
                      Exception)
    with psycopg.connect(dsn(s, "md5_user", "mydb", sslmode="require"),
                         autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_server_tls_protocols_and_ciphers(sluice, scram_upstream):
    """server_tls_protocols / server_tls_ciphers bound what sluice accepts
    from PostgreSQL: pinned to TLS 1.2 and one suite, the session uses them;
    TLS 1.2 only against a server that wants 1.3 fails."""
    db = {"mydb": f"host=127.0.0.1 port={scram_upstream.port} dbname=mydb"}
    only = "ECDHE-ECDSA-AES256-GCM-SHA384"
    s = sluice({"databases": db, "pgbouncer": {
        "server_tls_sslmode": "require", "server_tls_protocols": "tlsv1.2",
        "server_tls_ciphers": only}})
    with s.connect("scram_user") as conn:
        assert conn.execute("SELECT version, cipher FROM pg_stat_ssl WHERE pid = "
                            "pg_backend_pid()").fetchone() == ("TLSv1.2", only)
    with scram_upstream.admin_conn() as conn:
        conn.execute("ALTER SYSTEM SET ssl_min_protocol_version = 'TLSv1.3'")
        conn.execute("SELECT pg_reload_conf()")
    try:
        time.sleep(0.5)
        s = sluice({"databases": db, "pgbouncer": {
            "server_tls_sslmode": "require", "server_tls_protocols": "tlsv1.2",
            "query_wait_timeout": "3"}})
        with pytest.raises(psycopg.OperationalError):
            s.connect("scram_user")
    finally:
        with scram_upstream.admin_conn() as conn:
            conn.execute("ALTER SYSTEM RESET ssl_min_protocol_version")
            conn.execute("SELECT pg_reload_conf()")
