"""Zero-downtime restart with so_reuseport: a second sluice starts on the
same port, the first gets SIGINT, finishes what it has and exits; clients
see no failed transaction.

Two kinds of clients run throughout:
- short ones open a connection per transaction: they must never fail, even
  when they reach the old process in its last moments;
- long-lived ones run transactions in a loop on one connection. The old
  process lets the transaction in flight finish, then disconnects them
  (57P01, "pooler is shutting down"). That disconnect comes before the next
  transaction has started, so it is not a failure: the client reconnects,
  as PgBouncer's restart recipe expects, and retries the transaction.
A failure is any error on connecting, or after a transaction has begun.
Every committed row is counted, and the table must hold exactly those."""

import os
import signal
import threading
import time

import psycopg
import pytest

from sluice_fixture import IS_PGBOUNCER, wait_until

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="sluice's SIGINT drain")

CONFIG = {"pgbouncer": {"so_reuseport": "1", "default_pool_size": "20",
                        "max_client_conn": "200"}}


MIGRATE_REQ = "/proc/sys/net/ipv4/tcp_migrate_req"


@pytest.fixture
def migrate_req():
    """Turns on net.ipv4.tcp_migrate_req for the test when allowed (root),
    restoring it after; yields whether it is on.

    Without it, Linux resets the connections whose handshake is still under
    way on the old process's listener at the instant it closes (those
    already in its accept queue sluice takes first). Nothing in user space
    can take those; with the setting, the kernel moves them to the new
    process's listener. docs/monitoring.md recommends it for restarts."""
    try:
        with open(MIGRATE_REQ) as f:
            old = f.read().strip()
    except OSError:
        yield False
        return
    try:
        with open(MIGRATE_REQ, "w") as f:
            f.write("1")
    except OSError:
        yield old == "1"
        return
    try:
        yield True
    finally:
        with open(MIGRATE_REQ, "w") as f:
            f.write(old)


@pytest.fixture
def table(primary_conn):
    name = f"restart_t_{os.getpid()}"  # runs sharing the cluster do not collide
    primary_conn.execute(f"DROP TABLE IF EXISTS {name}")
    primary_conn.execute(f"CREATE TABLE {name} (who text, n int)")
    primary_conn.execute(f"GRANT ALL ON {name} TO PUBLIC")
    yield name
    primary_conn.execute(f"DROP TABLE IF EXISTS {name}")


class Traffic:
    def __init__(self, dsn, table, short=10, long=3):
        self.dsn = dsn
        self.table = table
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.committed = 0
        self.failures = []
        self.reconnects = 0
        self.threads = [threading.Thread(target=self.short, args=(i,), daemon=True)
                        for i in range(short)]
        self.threads += [threading.Thread(target=self.long, args=(i,), daemon=True)
                         for i in range(long)]

    def fail(self, what, e):
        with self.lock:
            self.failures.append(f"{what}: {type(e).__name__}: {e}")

    def commit_done(self):
        with self.lock:
            self.committed += 1

    def connect(self):
        return psycopg.connect(self.dsn, autocommit=True, prepare_threshold=None)

    def short(self, i):
        n = 0
        while not self.stop.is_set():
            try:
                with self.connect() as conn:
                    conn.execute("BEGIN")
                    conn.execute(f"INSERT INTO {self.table} VALUES (%s, %s)", (f"short{i}", n))
                    conn.execute(f"SELECT count(*) FROM {self.table} WHERE who = %s",
                                 (f"short{i}",))
                    conn.execute("COMMIT")
                self.commit_done()
                n += 1
            except Exception as e:  # noqa: BLE001 - every error is a failure here
                self.fail(f"short{i} #{n}", e)
                time.sleep(0.05)

    def long(self, i):
        n = 0
        conn = None
        while not self.stop.is_set():
            try:
                if conn is None:
                    conn = self.connect()
            except Exception as e:  # noqa: BLE001
                self.fail(f"long{i} connect", e)
                time.sleep(0.05)
                continue
            try:
                conn.execute("BEGIN")
            except psycopg.OperationalError:
                # Disconnected between transactions: nothing had started.
                conn.close()
                conn = None
                with self.lock:
                    self.reconnects += 1
                continue
            try:
                conn.execute(f"INSERT INTO {self.table} VALUES (%s, %s)", (f"long{i}", n))
                conn.execute("SELECT pg_sleep(0.002)")
                conn.execute("COMMIT")
                self.commit_done()
                n += 1
            except Exception as e:  # noqa: BLE001
                self.fail(f"long{i} #{n} inside a transaction", e)
                conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(15)


def test_restart_without_failed_transactions(sluice, primary_conn, table, migrate_req):
    a = sluice(CONFIG)
    b = sluice(CONFIG, start=False)
    # B takes A's port: so_reuseport lets both bind it.
    b.port = b.placeholders["port"] = a.port
    b.write_config(CONFIG)

    with Traffic(a.dsn(), table) as traffic:
        wait_until(lambda: traffic.committed > 50, 15, "traffic through A")
        b.start()
        b.wait_for_log(r"sluice \S+ starting")
        time.sleep(0.5)
        before = traffic.committed
        a.signal(signal.SIGINT)
        assert a.wait_exit(15) == 0, "A did not exit after SIGINT\n" + a.log_tail()
        assert "no transactions left" in a.log_text()
        at_exit = traffic.committed
        time.sleep(2)
        after = traffic.committed
    failures = traffic.failures
    if not migrate_req:
        # Only the reset of a handshake caught by the close is tolerated.
        failures = [f for f in failures
                    if not ("connection failed" in f and "closed the connection" in f)]
        assert len(traffic.failures) - len(failures) <= 2, traffic.failures
    assert not failures, "\n".join(failures[:20])
    assert at_exit > before, "no transaction completed during the drain"
    assert after > at_exit + 20, "too little traffic on B after A exited"
    # The long-lived clients moved over by reconnecting.
    assert traffic.reconnects >= 3
    rows = primary_conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    assert rows == traffic.committed
    assert b.running()
