"""Replication connections through the pooler (`replication=true|database`
in the startup packet), passed through as PgBouncer 1.23 does: each
replication client gets a walsender of its own, which is never pooled.

Physical replication is tested with pg_basebackup and pg_receivewal; for
logical replication only the walsender of a database (replication=database)
is, through its replication commands (IDENTIFY_SYSTEM). (The test cluster's
primary runs with wal_level = logical, for the result cache's logical
invalidation, test_cache_logical.py; pg_recvlogical through the pooler is
not tested here.)"""

import os
import shutil
import subprocess
import tempfile

import psycopg
import pytest

from sluice_fixture import IS_PGBOUNCER, RUN_AS, RawConn, ServerError, wait_until

pytestmark = pytest.mark.skipif(IS_PGBOUNCER,
                                reason="PgBouncer 1.23 added replication connections")


def replication_config(pool_mode="transaction"):
    """postgres may replicate from 127.0.0.1 (cluster.sh's pg_hba.conf).
    PostgreSQL 15's pg_basebackup and pg_receivewal ask for the database
    "replication" whatever their connection string says (PostgreSQL 17
    sends its dbname): a [databases] entry of that name routes them."""
    return {"databases": {"replication": "host=127.0.0.1 port={primary_port} dbname=postgres"},
            "pgbouncer": {"auth_type": "trust", "pool_mode": pool_mode}}


def replication_userlist():
    return {"postgres": "", "sluice": "sluice"}


def walsenders(cluster):
    with cluster.primary_conn(dbname="postgres") as conn:
        return conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender' "
            "AND client_port IS NOT NULL AND application_name = 'sluice_repl_test'").fetchone()[0]


def run_tool(args, timeout=120):
    env = dict(os.environ, PGAPPNAME="sluice_repl_test", PGCONNECT_TIMEOUT="10")
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture
def scratch():
    path = tempfile.mkdtemp(prefix="sluice-repl-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("pool_mode", ["transaction", "session"])
def test_pg_basebackup_through_the_pooler(sluice, cluster, scratch, pool_mode):
    """pg_basebackup with WAL streamed alongside (two replication
    connections at once), whatever the pool_mode; the walsenders go away
    with their clients and the pool's servers are not touched."""
    s = sluice(replication_config(pool_mode), userlist=replication_userlist())
    target = os.path.join(scratch, "backup")
    dsn = f"host=127.0.0.1 port={s.port} user=postgres dbname=mydb"
    r = run_tool(["pg_basebackup", "-d", dsn, "-D", target, "-X", "stream", "-c", "fast",
                  "--no-sync", "-Ft", "-z"])
    assert r.returncode == 0, r.stderr
    assert os.path.getsize(os.path.join(target, "base.tar.gz")) > 0
    assert os.path.exists(os.path.join(target, "pg_wal.tar.gz"))
    wait_until(lambda: walsenders(cluster) == 0, 10, "walsenders gone")
    # A normal client of the same pool still works.
    with s.connect(user="postgres", password="") as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_pg_receivewal_streams_and_stops(sluice, cluster, scratch):
    s = sluice(replication_config(), userlist=replication_userlist())
    dsn = f"host=127.0.0.1 port={s.port} user=postgres dbname=mydb"
    proc = subprocess.Popen(["pg_receivewal", "-d", dsn, "-D", scratch, "--no-sync"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PGAPPNAME="sluice_repl_test"))
    try:
        wait_until(lambda: walsenders(cluster) == 1 or proc.poll() is not None, 15,
                   "pg_receivewal streaming")
        assert proc.poll() is None, proc.stderr.read()
        with cluster.primary_conn() as conn:
            conn.execute("SELECT txid_current()")  # something to switch from
            conn.execute("SELECT pg_switch_wal()")
        wait_until(lambda: any(not f.endswith(".partial") for f in os.listdir(scratch)), 15,
                   f"a whole WAL segment received (in {scratch}: {os.listdir(scratch)})")
    finally:
        proc.terminate()
        proc.wait(10)
    wait_until(lambda: walsenders(cluster) == 0, 10, "walsender gone")


@pytest.mark.parametrize("mode,dbname", [("true", None), ("database", "mydb")])
def test_replication_commands(sluice, mode, dbname):
    """IDENTIFY_SYSTEM on a walsender (physical, and of a database: the
    walsender logical replication uses) reached through the pooler."""
    s = sluice(replication_config(), userlist=replication_userlist())
    with RawConn(s.port) as conn:
        conn.login(user="postgres", password="", replication=mode,
                   application_name="sluice_repl_test")
        rows = conn.query("IDENTIFY_SYSTEM")
        assert len(rows) == 1
        systemid, timeline, xlogpos, db = rows[0]
        assert int(systemid) > 0 and int(timeline) >= 1 and "/" in xlogpos
        assert db == dbname
        with psycopg.connect(s.dsn(user="sluice", dbname="pgbouncer"), autocommit=True) as adm:
            for show in ("CLIENTS", "SERVERS"):
                cur = adm.execute(f"SHOW {show}")
                col = [d.name for d in cur.description].index("replication")
                kinds = {row[col] for row in cur.fetchall()}
                assert ("physical" if mode == "true" else "logical") in kinds, (show, kinds)


def test_logical_walsender_takes_sql_and_is_not_pooled(sluice, cluster):
    """replication=database: SQL goes to the walsender too; two clients get
    two walsenders, closed when their clients leave."""
    s = sluice(replication_config(), userlist=replication_userlist())
    conns = [RawConn(s.port) for _ in range(2)]
    try:
        for c in conns:
            c.login(user="postgres", password="", replication="database",
                    application_name="sluice_repl_test")
        pids = {c.query("SELECT pg_backend_pid()")[0][0] for c in conns}
        assert len(pids) == 2
        assert walsenders(cluster) == 2
    finally:
        for c in conns:
            c.close()
    wait_until(lambda: walsenders(cluster) == 0, 10, "walsenders gone")


def test_bad_replication_value_refused(sluice):
    s = sluice(replication_config(), userlist=replication_userlist())
    with RawConn(s.port) as conn:
        with pytest.raises(ServerError, match='invalid value for parameter "replication"'):
            conn.login(user="postgres", password="", replication="sometimes")


def test_replication_login_failure_reaches_the_client(sluice):
    """The server refuses the walsender (trust_user may not replicate): the
    client gets PostgreSQL's error."""
    s = sluice(replication_config(), userlist={"trust_user": ""})
    with RawConn(s.port) as conn:
        with pytest.raises(ServerError, match="pg_hba.conf|replication"):
            conn.login(user="trust_user", password="", replication="true")


def test_reconnect_closes_replication_connections_at_once(sluice, cluster):
    """RECONNECT: a walsender does not wait for its session's end (it may
    never come): it and its client are closed at once, as in PgBouncer."""
    s = sluice(replication_config(), userlist=replication_userlist())
    with RawConn(s.port) as conn:
        conn.login(user="postgres", password="", replication="database",
                   application_name="sluice_repl_test")
        assert conn.query("SELECT 1") == [["1"]]
        with psycopg.connect(s.dsn(user="sluice", dbname="pgbouncer"), autocommit=True) as adm:
            adm.execute("RECONNECT mydb")
        data = conn.read_until_closed(5)
        assert data is not None, "the replication client is still connected"
    wait_until(lambda: walsenders(cluster) == 0, 10, "walsender gone")
