"""Clients and servers that go away at the worst moment: the pool must stay
clean and keep serving."""

import os
import subprocess
import threading
import time

import psycopg
import pytest

from sluice_fixture import PASSWORDS, RawConn, data_row, message, wait_until


@pytest.fixture
def table(primary_conn):
    primary_conn.execute("DROP TABLE IF EXISTS resil_t")
    primary_conn.execute("CREATE TABLE resil_t (x int)")
    primary_conn.execute("GRANT ALL ON resil_t TO PUBLIC")
    yield "resil_t"
    primary_conn.execute("DROP TABLE IF EXISTS resil_t")


def idle_in_transaction(cluster, user):
    with cluster.primary_conn() as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = %s "
                            "AND state LIKE 'idle in transaction%%'", (user,)).fetchone()[0]


def check_clean_pool(s, cluster, primary_conn, table, user):
    """Nothing committed, the next client gets a server outside any
    transaction, and no backend is left idle in transaction."""
    with s.connect(user=user) as conn:
        assert conn.execute("SELECT txid_current_if_assigned() IS NULL, "
                            "now() = statement_timestamp()").fetchone() == (True, True)
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)
    assert primary_conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)
    wait_until(lambda: idle_in_transaction(cluster, user) == 0, 1.5,
               "no backend left idle in transaction")


@pytest.mark.parametrize("how", ["close", "reset"])
def test_client_socket_closed_mid_transaction(sluice, cluster, primary_conn, table, pool_user,
                                              how):
    s = sluice({"pgbouncer": {"default_pool_size": 1, "reserve_pool_size": 0}})
    conn = RawConn(s.port).login(user=pool_user)
    conn.query("BEGIN")
    conn.query(f"INSERT INTO {table} VALUES (1)")
    assert idle_in_transaction(cluster, pool_user) == 1
    if how == "reset":
        conn.abort()
    else:
        conn.close()
    check_clean_pool(s, cluster, primary_conn, table, pool_user)


def test_psql_killed_mid_transaction(sluice, cluster, primary_conn, table, pool_user):
    s = sluice({"pgbouncer": {"default_pool_size": 1, "reserve_pool_size": 0}})
    env = dict(os.environ, PGPASSWORD=PASSWORDS[pool_user])
    psql = subprocess.Popen(
        ["psql", "-X", "-q", "-h", "127.0.0.1", "-p", str(s.port), "-U", pool_user, "-d", "mydb"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        text=True)
    try:
        psql.stdin.write(f"BEGIN;\nINSERT INTO {table} VALUES (1);\n")
        psql.stdin.flush()
        wait_until(lambda: idle_in_transaction(cluster, pool_user) == 1, 5,
                   "psql's transaction open")
        psql.kill()
        psql.wait(5)
    finally:
        if psql.poll() is None:
            psql.kill()
    check_clean_pool(s, cluster, primary_conn, table, pool_user)


def test_client_gone_during_query(sluice, cluster, primary_conn, table, pool_user):
    """The client disconnects while its query runs: the pool is usable again
    soon, and the statement's transaction does not linger."""
    s = sluice({"pgbouncer": {"default_pool_size": 1, "reserve_pool_size": 0}})
    conn = RawConn(s.port).login(user=pool_user)
    conn.query("BEGIN")
    conn.query(f"INSERT INTO {table} VALUES (1)")
    conn.send_query("SELECT pg_sleep(1)")
    time.sleep(0.2)
    conn.abort()
    started = time.monotonic()
    with s.connect(user=pool_user) as other:
        assert other.execute("SELECT txid_current_if_assigned() IS NULL").fetchone() == (True,)
    assert time.monotonic() - started < 5
    check_clean_pool(s, cluster, primary_conn, table, pool_user)


def test_client_gone_during_large_result(sluice, pool_user):
    """A client that asks for a large result, reads a little and disconnects
    does not leave the pool stuck."""
    s = sluice({"pgbouncer": {"default_pool_size": 1, "reserve_pool_size": 0}})
    conn = RawConn(s.port).login(user=pool_user)
    conn.send_query("SELECT repeat('x', 1000) FROM generate_series(1, 200000)")
    conn.read_bytes(100_000)
    conn.abort()
    started = time.monotonic()
    with s.connect(user=pool_user) as other:
        assert other.execute("SELECT 1").fetchone() == (1,)
    assert time.monotonic() - started < 5


def test_idle_server_terminated(sluice, cluster, pool_user):
    """A server connection killed while idle in the pool is not handed out:
    the next client's query just works."""
    s = sluice({"pgbouncer": {"default_pool_size": 1}})
    with s.connect(user=pool_user) as conn:
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        with cluster.primary_conn() as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        wait_until(lambda: cluster.backend_count(pool_user) == 0, 5, "the backend gone")
        time.sleep(0.2)
        assert conn.execute("SELECT pg_backend_pid()").fetchone()[0] != pid


def test_server_terminated_mid_transaction(sluice, cluster, pool_user):
    """The client whose transaction's server dies gets an error; others and
    later clients are served."""
    s = sluice({"pgbouncer": {"default_pool_size": 2}})
    with s.connect(user=pool_user) as victim, s.connect(user=pool_user) as bystander:
        victim.execute("BEGIN")
        pid = victim.execute("SELECT pg_backend_pid()").fetchone()[0]
        with cluster.primary_conn() as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(psycopg.OperationalError,
                           match="terminating connection due to administrator command"):
            victim.execute("SELECT 1")
        assert bystander.execute("SELECT 1").fetchone() == (1,)
    with s.connect(user=pool_user) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.timeout(120)
def test_primary_restart_under_load(sluice, cluster, pool_user):
    """20 clients loop over short transactions while the primary restarts:
    they see errors meanwhile, and all run queries again within 10 s after
    it is back, through the same pooler."""
    s = sluice({"pgbouncer": {"default_pool_size": 10, "server_login_retry": 1,
                              "query_wait_timeout": 5}})
    stop = threading.Event()
    lock = threading.Lock()
    errors = []
    successes = {}          # client -> list of success times

    def client(n):
        conn = None
        while not stop.is_set():
            try:
                if conn is None or conn.closed:
                    conn = s.connect(user=pool_user)
                with conn.transaction():
                    conn.execute("SELECT pg_sleep(0.01), %s::int", (n,))
                with lock:
                    successes.setdefault(n, []).append(time.monotonic())
            except psycopg.Error as e:
                with lock:
                    errors.append((time.monotonic(), n, str(e).strip()))
                if conn is not None and not conn.closed and \
                        conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    conn.close()
                time.sleep(0.05)
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(20)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len(successes) == 20, 15, "all 20 clients running")
        time.sleep(0.5)
        restart_began = time.monotonic()
        cluster.restart_primary()
        back = time.monotonic()
        def all_recovered():
            with lock:
                return all(any(t > back for t in successes.get(n, [])) for n in range(20))
        wait_until(all_recovered, 10, "every client running queries after the restart",
                   interval=0.2)
        recovered = time.monotonic() - back
    finally:
        stop.set()
        for t in threads:
            t.join(15)
    during = [e for e in errors if e[0] >= restart_began]
    assert during, "no client saw an error although the primary restarted"
    print(f"restart took {back - restart_began:.1f}s, recovered {recovered:.1f}s after; "
          f"{len(errors)} errors, e.g. {errors[0][2]!r}")


def test_waiting_clients_that_vanish(sluice, pool_user):
    """Clients queued for the only server disconnect; when it frees up, it is
    not handed to a dead client and the next real client is served at once."""
    s = sluice({"pgbouncer": {"default_pool_size": 1, "reserve_pool_size": 0}})
    with s.connect(user=pool_user) as holder:
        holder.execute("BEGIN")
        holder.execute("SELECT 1")
        ghosts = []
        for i in range(5):
            ghost = RawConn(s.port).login(user=pool_user)
            ghost.send_query(f"SELECT {i}")
            ghosts.append(ghost)
        time.sleep(0.3)
        for i, ghost in enumerate(ghosts):
            if i % 2:
                ghost.abort()
            else:
                ghost.close()
        time.sleep(0.3)
        holder.execute("COMMIT")
        started = time.monotonic()
        with s.connect(user=pool_user) as conn:
            assert conn.execute("SELECT 42").fetchone() == (42,)
        assert time.monotonic() - started < 2
        assert holder.execute("SELECT 1").fetchone() == (1,)


def pooler_rss_kb(s):
    with open(f"/proc/{s.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_slow_reader_backpressure(sluice, pool_user):
    """A client that stops reading a 200 MB result does not make the pooler
    buffer it: its memory stays flat, and the result arrives whole later."""
    s = sluice({"pgbouncer": {"default_pool_size": 2}})
    rows, width = 200_000, 1000
    with RawConn(s.port, timeout=30) as conn:
        conn.login(user=pool_user)
        conn.query("SELECT 1")
        before = pooler_rss_kb(s)
        conn.send_query(f"SELECT repeat('x', {width}) FROM generate_series(1, {rows})")
        assert conn.read_msg()[0] == b"T"
        for _ in range(50):
            assert conn.read_msg()[0] == b"D"
        time.sleep(2)
        grown_mb = (pooler_rss_kb(s) - before) / 1024
        assert grown_mb < 32, f"pooler grew by {grown_mb:.0f} MB while the client did not read"
        # Another client is served meanwhile.
        with s.connect(user=pool_user) as other:
            assert other.execute("SELECT 1").fetchone() == (1,)
        got, error, status = conn.read_result()
        assert error is None and status == "I"
        assert len(got) == rows - 50
        assert got[0] == ["x" * width]
        assert conn.query("SELECT 2") == [["2"]]


def test_extended_protocol_split_across_packets(sluice, pool_user):
    """Parse, Bind, Execute and Sync arrive in separate packets with pauses;
    another client on the same one-server pool waits and is not mixed in."""
    s = sluice({"pgbouncer": {"default_pool_size": 1, "reserve_pool_size": 0}})
    with RawConn(s.port) as conn, s.connect(user=pool_user) as other:
        conn.login(user=pool_user)
        result = {}
        t = None
        for i, part in enumerate([message(b"P", b"\0SELECT $1::int + 1\0\0\0"),
                                  message(b"B", b"\0\0\0\0\0\x01\x00\x00\x00\x0241\0\0"),
                                  message(b"D", b"P\0"),
                                  message(b"E", b"\0\0\0\0\0"),
                                  message(b"S")]):
            conn.send(part)
            if i == 0:
                t = threading.Thread(
                    target=lambda: result.update(row=other.execute("SELECT 7").fetchone()))
                t.start()
            time.sleep(0.2)
        kinds, rows = [], []
        while True:
            kind, payload = conn.read_msg()
            kinds.append(kind)
            if kind == b"D":
                rows.append(data_row(payload))
            if kind == b"Z":
                break
        assert kinds == [b"1", b"2", b"T", b"D", b"C", b"Z"], kinds
        assert rows == [["42"]]
        t.join(5)
        assert result.get("row") == (7,)


def leave_in_transaction(conn, table):
    conn.query("BEGIN")
    conn.query(f"INSERT INTO {table} VALUES (1)")


def leave_in_failed_transaction(conn, table):
    conn.query("BEGIN")
    conn.query(f"INSERT INTO {table} VALUES (1)")
    conn.send_query("SELECT 1/0")
    _, error, status = conn.read_result()
    assert error and status == "E"


def leave_in_copy_in(conn, table):
    conn.send_query(f"COPY {table} FROM STDIN")
    assert conn.read_msg()[0] == b"G"
    conn.send(message(b"d", b"1\n2\n"))


def leave_without_sync(conn, table):
    """Parse/Bind/Execute of an INSERT in an explicit transaction, no Sync."""
    conn.query("BEGIN")
    conn.send(message(b"P", f"\0INSERT INTO {table} VALUES (1)\0\0\0".encode())
              + message(b"B", b"\0\0\0\0\0\0\0\0")
              + message(b"E", b"\0\0\0\0\0"))
    time.sleep(0.2)


def leave_mid_query(conn, table):
    conn.query("BEGIN")
    conn.query(f"INSERT INTO {table} VALUES (1)")
    conn.send_query("SELECT pg_sleep(0.5)")


DIRTY_STATES = [leave_in_transaction, leave_in_failed_transaction, leave_in_copy_in,
                leave_without_sync, leave_mid_query]


@pytest.mark.parametrize("pool_mode", ["transaction", "session"])
@pytest.mark.parametrize("leave", DIRTY_STATES, ids=lambda f: f.__name__[6:])
def test_client_closes_in_dirty_state(sluice, cluster, primary_conn, table, pool_user,
                                      pool_mode, leave):
    """A client disconnects with its server in the middle of something: the
    next client (one-server pool) is served promptly, on a clean server, and
    nothing of the first client's work is committed."""
    s = sluice({"pgbouncer": {"default_pool_size": 1, "reserve_pool_size": 0,
                              "pool_mode": pool_mode, "query_wait_timeout": 10}})
    conn = RawConn(s.port).login(user=pool_user)
    leave(conn, table)
    conn.abort()
    started = time.monotonic()
    with s.connect(user=pool_user) as other:
        assert other.execute("SELECT 42").fetchone() == (42,)
        assert other.execute("SELECT %s::int", (43,)).fetchone() == (43,)
    assert time.monotonic() - started < 3
    check_clean_pool(s, cluster, primary_conn, table, pool_user)
