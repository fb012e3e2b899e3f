"""Basics every PgBouncer-compatible pooler must get right: queries, client
authentication, and the three pool modes."""

import re
import threading
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from sluice_fixture import AUTH_CLEARTEXT, AUTH_MD5, AUTH_OK, AUTH_SASL, auth_request, wait_until

# PostgreSQL says 'password authentication failed for user "x"'; PgBouncer 1.18
# omits the user and says "SASL authentication failed" for SCRAM.
WRONG_PASSWORD = r'(password|SASL) authentication failed( for user "{}")?'


def test_select_one(sluice):
    s = sluice()
    with s.connect() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


# (auth_type, user, first Authentication message the pooler must send)
AUTH_CASES = [
    ("trust", "trust_user", AUTH_OK),
    ("trust", "md5_user", AUTH_OK),         # server login with the md5 secret
    ("plain", "plain_user", AUTH_CLEARTEXT),
    ("plain", "scram_user", AUTH_CLEARTEXT),
    ("md5", "md5_user", AUTH_MD5),           # md5 secret in the userlist
    ("md5", "scram_user", AUTH_MD5),         # plain password, server wants SCRAM
    ("md5", "plain_user", AUTH_MD5),         # plain password, server wants cleartext
    ("scram-sha-256", "scram_user", AUTH_SASL),
    ("scram-sha-256", "trust_user", AUTH_SASL),
]


@pytest.mark.parametrize("auth_type,user,code", AUTH_CASES)
def test_auth_methods(sluice, auth_type, user, code):
    s = sluice({"pgbouncer": {"auth_type": auth_type}})
    assert auth_request(s.port, user) == code
    password = "" if auth_type == "trust" else None
    with s.connect(user=user, password=password) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (user,)


@pytest.mark.parametrize("auth_type,user", [
    ("plain", "plain_user"), ("md5", "md5_user"), ("md5", "scram_user"),
    ("scram-sha-256", "scram_user")])
def test_wrong_password_rejected(sluice, auth_type, user):
    s = sluice({"pgbouncer": {"auth_type": auth_type}})
    with pytest.raises(psycopg.OperationalError, match=WRONG_PASSWORD.format(user)):
        s.connect(user=user, password="wrong")


def test_unknown_user_rejected(sluice):
    s = sluice()
    with pytest.raises(psycopg.OperationalError, match=WRONG_PASSWORD.format("nobody")):
        s.connect(user="nobody", password="nobody_pw")


@pytest.mark.parametrize("auth_type", ["md5", "scram-sha-256"])
def test_a_missing_database_is_named_only_after_the_password(sluice, auth_type):
    """An unauthenticated client cannot learn which databases exist: the
    password is asked first, a wrong one gets the usual answer, and only a
    client that proved who it is hears "no such database" (PgBouncer 1.17+)."""
    s = sluice({"pgbouncer": {"auth_type": auth_type}})
    user = "scram_user" if auth_type.startswith("scram") else "md5_user"
    code = AUTH_SASL if auth_type.startswith("scram") else AUTH_MD5
    assert auth_request(s.port, user, dbname="nosuchdb") == code
    assert auth_request(s.port, "nobody", dbname="nosuchdb") == code
    for db in ("nosuchdb", "mydb"):
        with pytest.raises(psycopg.OperationalError, match=WRONG_PASSWORD.format(user)):
            s.connect(user=user, password="wrong", dbname=db)
    with pytest.raises(psycopg.OperationalError, match="no such database: nosuchdb"):
        s.connect(user=user, dbname="nosuchdb")


def test_scram_secret_in_userlist(sluice, primary_conn):
    """With the server's own SCRAM secret in the userlist, the pooler
    authenticates the client and logs into the server with the client's proof."""
    secret = primary_conn.execute(
        "SELECT rolpassword FROM pg_authid WHERE rolname = 'scram_user'").fetchone()[0]
    assert secret.startswith("SCRAM-SHA-256$")
    s = sluice({"pgbouncer": {"auth_type": "scram-sha-256"}}, userlist={"scram_user": secret})
    with s.connect(user="scram_user") as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("scram_user",)
    with pytest.raises(psycopg.OperationalError, match=WRONG_PASSWORD.format("scram_user")):
        s.connect(user="scram_user", password="wrong")


def backend_pid(conn):
    """pg_backend_pid() in its own transaction."""
    with conn.transaction():
        return conn.execute("SELECT pg_backend_pid()").fetchone()[0]


def test_session_mode_keeps_server(sluice):
    s = sluice({"pgbouncer": {"pool_mode": "session"}})
    with s.connect() as a, s.connect() as b:
        first = backend_pid(a)
        other = backend_pid(b)
        assert backend_pid(a) == first
        assert other != first, "b got a's server while a's session holds it"


def test_transaction_mode_shares_idle_server(sluice):
    s = sluice()
    with s.connect() as a, s.connect() as b:
        assert backend_pid(a) == backend_pid(b)


def test_transaction_mode_many_clients_few_servers(sluice, cluster):
    """50 concurrent clients on default_pool_size=2: all answered, and the
    primary never sees more than 2 server connections of that user."""
    user, clients, pool_size = "md5_user", 50, 2
    s = sluice({"pgbouncer": {"default_pool_size": pool_size, "reserve_pool_size": 0,
                              "max_client_conn": 100}})
    # Server connections of earlier tests' poolers may still be closing.
    wait_until(lambda: cluster.backend_count(user) == 0, 10, f"no {user} backends")

    peak = 0
    done = threading.Event()

    def monitor():
        nonlocal peak
        with cluster.primary_conn() as conn:
            while not done.is_set():
                n = conn.execute("SELECT count(*) FROM pg_stat_activity "
                                 "WHERE usename = %s AND datname = 'mydb'", (user,)).fetchone()[0]
                peak = max(peak, n)
                done.wait(0.01)

    def client(i):
        with s.connect(user=user) as conn:
            pids = set()
            for _ in range(3):
                with conn.transaction():
                    pid, n = conn.execute("SELECT pg_backend_pid(), %s::int FROM pg_sleep(0.02)",
                                          (i,)).fetchone()
                    assert n == i
                    pids.add(pid)
            return pids

    watcher = threading.Thread(target=monitor)
    watcher.start()
    try:
        with ThreadPoolExecutor(clients) as pool:
            results = list(pool.map(client, range(clients), timeout=60))
    finally:
        done.set()
        watcher.join()
    assert len(results) == clients
    assert len(set().union(*results)) <= pool_size
    assert 1 <= peak <= pool_size


STMT_ERROR = "transaction blocks not allowed in statement pooling mode"


def test_statement_mode(sluice):
    s = sluice({"pgbouncer": {"pool_mode": "statement"}})
    with s.connect() as conn:
        for i in range(3):
            assert conn.execute("SELECT %s::int", (i,)).fetchone() == (i,)
    with s.connect() as conn:
        with pytest.raises(psycopg.OperationalError, match=re.escape(STMT_ERROR)):
            conn.execute("BEGIN")
            conn.execute("SELECT 1")
        assert conn.closed
    # A driver-side transaction (psycopg sends BEGIN first) fails the same way.
    with s.connect(autocommit=False) as conn:
        with pytest.raises(psycopg.OperationalError, match=re.escape(STMT_ERROR)):
            conn.execute("SELECT 1")
    # The pooler still serves new clients afterwards.
    with s.connect() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
