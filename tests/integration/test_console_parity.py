"""PgBouncer parity of the admin console (issue 16): PgBouncer's own user
over the Unix socket, SHOW SOCKETS / ACTIVE_SOCKETS, the prepared statement
counters of SHOW STATS, -R refused."""

import os
import subprocess
import sys

import psycopg
import pytest

from sluice_fixture import IS_PGBOUNCER, RUN_AS, SLUICE_BIN, quote

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
