"""Start and stop the test cluster and pooler instances for the integration tests.

The pooler is $SLUICE_BIN (default build/address-undefined/sluice); any binary
with PgBouncer's command line works, e.g. SLUICE_BIN=/usr/sbin/pgbouncer.
Every generated sluice config gets `workers = $SLUICE_TEST_WORKERS` (default
1, the single event loop), unless the test sets workers itself; PgBouncer's
configs get no workers key.
When the tests run as root the pooler runs as the postgres OS user, because
PgBouncer refuses root; sluice is started the same way so both behave alike.

Ports: the test cluster's are chosen by scripts/cluster.sh (see Cluster), the
poolers' by free_port(); a port that something else takes before the pooler
binds it makes Sluice.start() pick another, so a busy machine never fails a run.
"""

import contextlib
import fcntl
import hashlib
import os
import re
import resource
import shutil
import signal as sig
import socket
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import psycopg
import psycopg.sql

REPO = Path(__file__).resolve().parents[2]
SLUICE_BIN = os.environ.get("SLUICE_BIN", str(REPO / "build/address-undefined/sluice"))
# The pooler runs in its own directory: a relative path (build/...) is taken
# from where the tests were started; a bare name is looked up in PATH.
if "/" in SLUICE_BIN:
    SLUICE_BIN = os.path.abspath(SLUICE_BIN)
CLUSTER_SH = REPO / "scripts/cluster.sh"
# The test cluster: its directory (SLUICE_TEST_CLUSTER_DIR) and ports. By
# default ("auto") cluster.sh picks free ports at the cluster's first start,
# keeps them while they stay free, moves a node whose port another process took
# meanwhile, and writes them to <dir>/ports, where Cluster reads them. A number
# in SLUICE_TEST_CLUSTER_PORT (the primary's; replicas +1, +2) or
# SLUICE_TEST_REDIS_PORT fixes a port instead: if another process holds it,
# cluster.sh fails at once and names that process. A private cluster (e.g. for
# several test runs on one machine) is a directory of its own. The default
# directory is not the one of checkouts before auto ports
# (/tmp/sluice-test-cluster, on 55432-55434 and 56379): a cluster such a
# checkout may be running is left alone.
CLUSTER_DIR = os.environ.get("SLUICE_TEST_CLUSTER_DIR", "/tmp/sluice-test-cluster-v2")
CLUSTER_PORT = os.environ.get("SLUICE_TEST_CLUSTER_PORT", "auto")
REDIS_PORT = os.environ.get("SLUICE_TEST_REDIS_PORT", "auto")
RUN_AS = "postgres" if os.geteuid() == 0 else None

# The cluster's users and passwords (see scripts/cluster.sh).
PASSWORDS = {
    "trust_user": "trust_user_pw",
    "md5_user": "md5_user_pw",
    "scram_user": "scram_user_pw",
    "plain_user": "plain_user_pw",
    "sluice": "sluice",
}


def is_pgbouncer(binary):
    return Path(binary).name.startswith("pgbouncer")


# True when the tests run against PgBouncer (SLUICE_BIN=/usr/sbin/pgbouncer):
# tests of sluice-only behaviour skip themselves then.
IS_PGBOUNCER = is_pgbouncer(SLUICE_BIN)

# How long to give the pooler's timers to act on something due: PgBouncer's
# janitor runs each second, sluice's each quarter second (worker.c), and an
# ASan build on a loaded 2-core box is late by up to a few rounds.
JANITOR_ROUNDS = 2.5 if IS_PGBOUNCER else 1.0

# The worker threads of every pooler the tests start (sluice's `workers`).
TEST_WORKERS = int(os.environ.get("SLUICE_TEST_WORKERS", "1"))

# A pooler that could not bind its port, or its metrics port, logs this.
PORT_TAKEN = re.compile(r"Address already in use")
# How often Sluice.start() tries fresh ports after a conflict.
PORT_ATTEMPTS = 5

SANITIZER_REPORT = re.compile(
    r"ERROR: (Address|Leak|Memory|Thread)Sanitizer|WARNING: ThreadSanitizer|runtime error:")
CRASH_SIGNALS = {sig.SIGSEGV, sig.SIGABRT, sig.SIGBUS, sig.SIGILL, sig.SIGFPE}


def quote(value):
    """Escape a value for a single-quoted libpq conninfo parameter."""
    return str(value).replace("\\", "\\\\").replace("'", "\\'")


def md5_secret(user, password):
    """The "md5..." form PostgreSQL and userlist.txt use."""
    return "md5" + hashlib.md5((password + user).encode()).hexdigest()


def default_userlist():
    users = dict(PASSWORDS)
    users["md5_user"] = md5_secret("md5_user", PASSWORDS["md5_user"])
    return users


DEFAULT_CONFIG = {
    "databases": {
        "mydb": "host=127.0.0.1 port={primary_port} dbname=mydb",
    },
    "pgbouncer": {
        "listen_addr": "127.0.0.1",
        "listen_port": "{port}",
        "unix_socket_dir": "",
        "auth_type": "md5",
        "auth_file": "{auth_file}",
        "pool_mode": "transaction",
        "admin_users": "sluice",
    },
}


def wait_until(predicate, timeout, what="condition", interval=0.05):
    """Call predicate until it returns something truthy; return that or raise."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# free_port() holds an flock on PORT_LOCK_DIR/<port> for each port it hands
# out, until release_port() or the end of the process: other test runs on the
# machine skip ports held so, and do not pick one before its pooler binds it.
PORT_LOCK_DIR = Path(tempfile.gettempdir()) / "sluice-test-ports"
_port_locks = {}


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on (the kernel's pick) and
    that no other test run holds; it stays this run's until release_port()."""
    try:
        PORT_LOCK_DIR.mkdir()
        PORT_LOCK_DIR.chmod(0o1777)
    except FileExistsError:
        pass
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port in _port_locks:
            continue
        try:
            fd = os.open(PORT_LOCK_DIR / str(port), os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        _port_locks[port] = fd
        return port
    raise RuntimeError(f"no free port found (locks in {PORT_LOCK_DIR})")


def release_port(port):
    """Let other test runs pick a port free_port() gave out."""
    fd = _port_locks.pop(port, None)
    if fd is not None:
        os.close(fd)


def listening_sockets(port):
    """Inodes of the TCP sockets that listen on port, on any address."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.readlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def process_sockets(pid):
    """Inodes of the sockets process pid has open."""
    inodes = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def port_open(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


# Codes of the server's first AuthenticationRequest.
AUTH_OK, AUTH_CLEARTEXT, AUTH_MD5, AUTH_SASL = 0, 3, 5, 10


def auth_request(port, user, dbname="mydb", timeout=5):
    """Send a StartupMessage and return the code of the first Authentication
    message (AUTH_*), or the ErrorResponse text if the server refused."""
    params = f"user\0{user}\0database\0{dbname}\0\0".encode()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(struct.pack("!ii", 8 + len(params), 196608) + params)
        buf = b""
        while len(buf) < 5 or len(buf) < 1 + struct.unpack("!i", buf[1:5])[0]:
            chunk = s.recv(4096)
            if not chunk:
                raise ConnectionError(f"connection closed after {buf!r}")
            buf += chunk
    if buf[:1] == b"R":
        return struct.unpack("!i", buf[5:9])[0]
    if buf[:1] == b"E":
        return buf[5:].decode(errors="replace")
    raise ValueError(f"unexpected first message {buf[:1]!r}")


def chown_run_as(path):
    if RUN_AS:
        shutil.chown(path, RUN_AS, RUN_AS)


WORKERS_LINE = re.compile(r"^\s*workers\s*=", re.MULTILINE)
PGBOUNCER_SECTION = re.compile(r"^[ \t]*\[pgbouncer\][^\n]*\n?", re.MULTILINE)
NEXT_SECTION = re.compile(r"^[ \t]*\[", re.MULTILINE)


def render_config(config, workers=None):
    """config: complete ini text, or a dict of sections merged into DEFAULT_CONFIG
    (a value of None removes a default key).

    workers: if not None, `workers = N` goes into [pgbouncer] unless the config
    sets workers itself (in a dict, "workers": None leaves the key out)."""
    if isinstance(config, str):
        if workers is None or WORKERS_LINE.search(config):
            return config
        # At the end of [pgbouncer], so that the line numbers a test expects
        # in error messages stay as written.
        section = PGBOUNCER_SECTION.search(config)
        if not section:
            return config
        following = NEXT_SECTION.search(config, section.end())
        end = following.start() if following else len(config)
        head, tail = config[:end], config[end:]
        if head and not head.endswith("\n"):
            head += "\n"
        return f"{head}workers = {workers}\n{tail}"
    merged = {name: dict(keys) for name, keys in DEFAULT_CONFIG.items()}
    if workers is not None:
        merged["pgbouncer"]["workers"] = workers
    for name, keys in (config or {}).items():
        section = merged.setdefault(name, {})
        for key, value in keys.items():
            if value is None:
                section.pop(key, None)
            else:
                section[key] = value
    return "".join(
        f"[{name}]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items()) + "\n"
        for name, keys in merged.items())


def render_userlist(userlist):
    if isinstance(userlist, str):
        return userlist
    users = default_userlist() if userlist is None else userlist
    return "".join(f'"{u}" "{p}"\n' for u, p in users.items())


class Cluster:
    """The primary, two replicas and redis run by scripts/cluster.sh.

    port, redis_port: "auto" or a fixed port (see CLUSTER_PORT above). The
    ports in use (primary_port, replica_ports, redis_port) are known once
    start() has read them from cluster.sh's <dir>/ports."""

    def __init__(self, directory=CLUSTER_DIR, port=CLUSTER_PORT, redis_port=REDIS_PORT):
        self.dir = str(directory)
        self.port_setting = str(port)
        self.redis_port_setting = str(redis_port)
        self.primary_port = None
        self.replica_ports = [None, None]
        self.redis_port = None

    def run(self, command, *args, check=True, **env):
        env = dict(os.environ, CLUSTER_DIR=self.dir, CLUSTER_PORT=self.port_setting,
                   CLUSTER_REDIS="1", CLUSTER_REDIS_PORT=self.redis_port_setting, **env)
        return subprocess.run(["sh", str(CLUSTER_SH), command, *args], env=env, check=check,
                              capture_output=True, text=True, timeout=180)

    def is_running(self):
        return self.run("status", check=False).returncode == 0

    def read_ports(self):
        """Load the ports from <dir>/ports; False if there is no such file."""
        try:
            text = (Path(self.dir) / "ports").read_text()
        except FileNotFoundError:
            return False
        ports = {name: int(port) for name, port in
                 (line.split("=", 1) for line in text.split())}
        self.primary_port = ports["primary"]
        self.replica_ports = [ports["replica1"], ports["replica2"]]
        self.redis_port = ports.get("redis")
        return True

    def _has_requested_ports(self):
        return (self.port_setting in ("auto", str(self.primary_port))
                and self.redis_port_setting in ("auto", str(self.redis_port)))

    def start(self):
        """Start whatever is down; True if anything was down."""
        if self.is_running() and self.read_ports() and self._has_requested_ports():
            return False
        # Running on other fixed ports than requested: start says so.
        result = self.run("start", check=False)
        assert result.returncode == 0, f"cluster.sh start failed:\n{result.stderr}"
        assert self.read_ports(), f"cluster.sh start wrote no {self.dir}/ports"
        return True

    def stop(self):
        self.run("stop")

    def stop_primary(self):
        self.run("stop-primary")

    def start_primary(self):
        self.run("start-primary")

    def restart_primary(self):
        self.run("restart-primary")

    def stop_node(self, name, mode="fast"):
        """Stop one node ("replica1", ...); mode "immediate" is a crash."""
        self.run("stop-node", name, mode)

    def start_node(self, name):
        self.run("start-node", name)

    def promote(self, name):
        """pg_ctl promote a replica ("replica1", ...): it leaves recovery. The
        cluster stays so (use a cluster of your own, see ThrowawayCluster)."""
        self.run("promote", name)

    def follow(self, name, leader):
        """Restart node name as a replica of node leader (an old primary after
        a switchover)."""
        self.run("follow", name, leader)

    def port_of(self, name):
        return {"primary": self.primary_port, "replica1": self.replica_ports[0],
                "replica2": self.replica_ports[1]}[name]

    def wait_replayed(self, timeout=10):
        """Until every replica has replayed all the primary has written so far."""
        with self.primary_conn() as conn:
            lsn = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
        for port in self.replica_ports:
            with self.connect(port=port) as r:
                wait_until(lambda: r.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn",
                                             (lsn,)).fetchone()[0],
                           timeout, f"replica on {port} to replay up to {lsn}")

    @contextlib.contextmanager
    def replay_paused(self, port):
        """Replay paused on the replica at port (pg_wal_replay_pause(), as
        Pgpool-II's regression tests do) for the block, resumed after it."""
        with self.connect(port=port) as r:
            r.execute("SELECT pg_wal_replay_pause()")
        try:
            yield port
        finally:
            with self.connect(port=port) as r:
                r.execute("SELECT pg_wal_replay_resume()")

    def in_recovery(self, name):
        """pg_is_in_recovery() of a running node."""
        with self.connect(port=self.port_of(name)) as conn:
            return conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]

    def connect(self, port=None, dbname="mydb", user="postgres", **kwargs):
        """A direct autocommit connection, as postgres to the primary by default."""
        return psycopg.connect(host="127.0.0.1", port=port or self.primary_port,
                               dbname=dbname, user=user, autocommit=True,
                               connect_timeout=5, **kwargs)

    def primary_conn(self, dbname="mydb"):
        return self.connect(dbname=dbname)

    def create_role(self, name, password):
        """A LOGIN role (SCRAM password) that only this test run uses, so that
        counting its backends is not disturbed by anything else on the cluster."""
        with self.primary_conn() as conn:
            self._drop_role(conn, name)
            conn.execute(psycopg.sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                psycopg.sql.Identifier(name), psycopg.sql.Literal(password)))
        PASSWORDS[name] = password

    def drop_role(self, name):
        PASSWORDS.pop(name, None)
        with self.primary_conn() as conn:
            self._drop_role(conn, name)

    @staticmethod
    def _drop_role(conn, name):
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone():
            return
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE usename = %s", (name,))
        conn.execute(psycopg.sql.SQL("DROP OWNED BY {}").format(psycopg.sql.Identifier(name)))
        conn.execute(psycopg.sql.SQL("DROP ROLE {}").format(psycopg.sql.Identifier(name)))

    def backend_count(self, user, dbname="mydb"):
        """Server connections of user on the primary (from pg_stat_activity)."""
        with self.primary_conn() as conn:
            return conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = %s AND datname = %s",
                (user, dbname)).fetchone()[0]


class ThrowawayCluster(Cluster):
    """A cluster of its own (primary, two replicas, no redis) in a new
    directory, for tests that change its topology (promote a replica, restart
    the old primary as a replica): the shared cluster is never touched, and
    destroy() stops this one and deletes it. Ports: port (the primary's, the
    replicas take the next two) or "auto" (free ones, as cluster.sh picks
    them); SLUICE_FAILOVER_CLUSTER_PORT sets the default."""

    def __init__(self, port=None, prefix="sluice-throwaway-"):
        directory = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
        port = port or os.environ.get("SLUICE_FAILOVER_CLUSTER_PORT", "auto")
        super().__init__(directory, port=port, redis_port="auto")

    def run(self, command, *args, check=True, **env):
        env = dict(os.environ, CLUSTER_DIR=self.dir, CLUSTER_PORT=self.port_setting,
                   CLUSTER_REDIS="0", **env)
        return subprocess.run(["sh", str(CLUSTER_SH), command, *args], env=env, check=check,
                              capture_output=True, text=True, timeout=180)

    def start(self):
        result = self.run("start", check=False)
        assert result.returncode == 0, f"cluster.sh start failed:\n{result.stderr}"
        assert self.read_ports(), f"cluster.sh start wrote no {self.dir}/ports"
        return True

    def destroy(self):
        self.run("stop", check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


class Sluice:
    """One pooler process with its own ini, userlist, log and port.

    binary: the pooler to run (default $SLUICE_BIN); workers: what goes into
    generated configs (default $SLUICE_TEST_WORKERS; never for PgBouncer).
    port comes from free_port(), and so does metrics_port once a config uses
    {metrics_port}; start() moves both if another process takes them."""

    def __init__(self, cluster, workdir, config=None, userlist=None, args=(), binary=None,
                 workers=None):
        self.binary = str(binary or SLUICE_BIN)
        self.is_pgbouncer = is_pgbouncer(self.binary)
        self.workers = None if self.is_pgbouncer else (workers or TEST_WORKERS)
        self.cluster = cluster
        self.dir = Path(workdir)
        self.port = self.picked_port = free_port()
        self.metrics_port = None
        self.ini = self.dir / "sluice.ini"
        self.auth_file = self.dir / "userlist.txt"
        self.log_path = self.dir / "sluice.log"
        self.args = list(args)
        self.proc = None
        self.exit_expected = False
        self.exit_codes = (0,)
        self.placeholders = {
            "port": self.port,
            "primary_port": cluster.primary_port,
            "replica1_port": cluster.replica_ports[0],
            "replica2_port": cluster.replica_ports[1],
            "redis_port": cluster.redis_port,
            "dir": self.dir,
            "auth_file": self.auth_file,
        }
        self.config_text = None
        self.userlist_text = None
        self.write_config(config, userlist)

    def write_config(self, config=None, userlist=None):
        """(Re)write the ini and, when given or on first write, the userlist.
        {port}, {metrics_port}, {primary_port}, {replica1_port},
        {replica2_port}, {redis_port}, {dir} and {auth_file} are replaced in both."""
        self.config_text = render_config(config, self.workers)
        if userlist is not None or not self.auth_file.exists():
            self.userlist_text = render_userlist(userlist)
            self.auth_file.write_text(self.substitute(self.userlist_text))
        self.ini.write_text(self.substitute(self.config_text))
        for path in (self.ini, self.auth_file):
            chown_run_as(path)

    def substitute(self, text):
        if "{metrics_port}" in text and self.metrics_port is None:
            self.metrics_port = free_port()
        self.placeholders["metrics_port"] = self.metrics_port
        for name, value in self.placeholders.items():
            text = text.replace("{" + name + "}", str(value))
        return text

    def move_ports(self):
        """Fresh ports for the pooler (and its metrics), written into its files."""
        release_port(self.port)
        self.port = self.picked_port = self.placeholders["port"] = free_port()
        if self.metrics_port is not None:
            release_port(self.metrics_port)
            self.metrics_port = free_port()
        self.ini.write_text(self.substitute(self.config_text))
        if "port}" in (self.userlist_text or ""):
            self.auth_file.write_text(self.substitute(self.userlist_text))

    def release_ports(self):
        """Give the pooler's ports back (after stop())."""
        release_port(self.picked_port)
        if self.metrics_port is not None:
            release_port(self.metrics_port)

    @property
    def pid(self):
        return self.proc.pid

    def start(self, timeout=10):
        """Start the pooler; return once it listens on its port. If the port
        (or metrics port) the fixture picked turns out taken (the pooler
        could not bind it, or another process listens there too), the
        pooler is started again on fresh ones, up to PORT_ATTEMPTS times. A
        port the test set itself (self.port != self.picked_port) never moves."""
        for _ in range(PORT_ATTEMPTS):
            since = self.log_mark()
            self.spawn()
            if self.wait_listening(timeout, since):
                return self
            self.kill()
            self.move_ports()
        raise AssertionError(f"ports taken {PORT_ATTEMPTS} times in a row\n" + self.log_tail())

    def spawn(self):
        env = dict(os.environ)
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
        shell = 'ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$0" "$@"'
        with open(self.log_path, "ab") as log:
            chown_run_as(self.log_path)
            self.proc = subprocess.Popen(
                ["sh", "-c", shell, self.binary, *self.args, str(self.ini)],
                cwd=self.dir, env=env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
                user=RUN_AS, group=RUN_AS, extra_groups=[] if RUN_AS else None)

    def wait_listening(self, timeout, since):
        """True once the pooler listens on its port (and metrics port, if the
        config has {metrics_port}); False if a port it may move is taken (log
        offset since: where this start's lines begin)."""
        movable = self.port == self.picked_port
        ports = [self.port]
        if "{metrics_port}" in self.config_text:
            ports.append(self.metrics_port)

        def ready():
            if self.proc.poll() is not None:
                if movable and PORT_TAKEN.search(self.log_text(), since):
                    return "taken"
                raise AssertionError(f"pooler exited with {self.proc.returncode} at start\n"
                                     + self.log_tail())
            # The listeners first: a socket bound after this is not "another's".
            listeners = [listening_sockets(port) for port in ports]
            mine = process_sockets(self.proc.pid)
            if movable and any(sockets - mine for sockets in listeners):
                return "taken"  # another process listens there too (SO_REUSEPORT)
            return "ready" if all(sockets & mine for sockets in listeners) else None

        try:
            return wait_until(ready, timeout, f"the pooler to listen on {self.port}",
                              0.02) == "ready"
        except TimeoutError:
            self.kill()
            raise AssertionError(f"pooler did not listen on {self.port}\n" + self.log_tail())

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self, timeout=10):
        """SIGTERM (a second one after a second if clients are left), then
        check it exited cleanly: not early, not by a crash, no sanitizer
        report in the log."""
        if self.proc is None:
            return
        problems = []
        if self.exit_expected:
            if self.proc.poll() is None:
                problems.append("pooler had not exited although it was expected to")
                self.kill()
            elif self.proc.returncode not in self.exit_codes:
                problems.append(f"pooler exited with {self.proc.returncode}")
        elif self.proc.poll() is not None:
            problems.append(f"pooler had already exited with {self.proc.returncode}")
        else:
            # SIGTERM waits for the clients to leave (PgBouncer 1.23+); one
            # a test left connected gets a second SIGTERM, which exits at once.
            self.proc.send_signal(sig.SIGTERM)
            try:
                self.proc.wait(min(1, timeout))
            except subprocess.TimeoutExpired:
                self.proc.send_signal(sig.SIGTERM)
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    problems.append(f"pooler did not exit within {timeout}s of two SIGTERMs")
                    self.kill()
        rc = self.proc.returncode
        if rc < 0 and -rc in CRASH_SIGNALS:
            problems.append(f"pooler died of {sig.Signals(-rc).name}")
        if SANITIZER_REPORT.search(self.log_text()):
            problems.append("sanitizer report in the log")
        if problems:
            raise AssertionError("; ".join(problems) + "\n" + self.log_tail())

    def wait_exit(self, timeout, codes=(0,)):
        """Wait for the pooler to exit by itself (after a signal); its return code,
        or None if it still runs. Teardown then expects an exit code in codes."""
        self.exit_expected = True
        self.exit_codes = codes
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, signum):
        self.proc.send_signal(signum)

    def reload(self):
        self.signal(sig.SIGHUP)

    def log_text(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines=40):
        return f"--- last lines of {self.log_path}:\n" + "\n".join(
            self.log_text().splitlines()[-lines:])

    def log_mark(self):
        """Current log length, to pass as since= to wait_for_log."""
        return len(self.log_text())

    def wait_for_log(self, regex, timeout=5, since=0):
        """Wait until regex matches the log (after offset since); return the match."""
        pattern = re.compile(regex)
        try:
            return wait_until(lambda: pattern.search(self.log_text(), since), timeout,
                              f"/{regex}/ in the log")
        except TimeoutError as e:
            raise AssertionError(f"{e}\n{self.log_tail()}") from None

    def dsn(self, user="md5_user", password=None, dbname="mydb", **extra):
        """A libpq connection string; password defaults to the user's."""
        if password is None:
            password = PASSWORDS.get(user, "")
        params = dict(host="127.0.0.1", port=self.port, dbname=dbname, user=user,
                      password=password, connect_timeout=5, **extra)
        return " ".join(f"{k}='{quote(v)}'" for k, v in params.items())

    def connect(self, user="md5_user", password=None, dbname="mydb", autocommit=True,
                **kwargs):
        """psycopg connection through the pooler. Server-side prepared statements
        are off by default (prepare_threshold=None), as transaction pooling needs."""
        kwargs.setdefault("prepare_threshold", None)
        return psycopg.connect(self.dsn(user, password, dbname), autocommit=autocommit,
                               **kwargs)


def make_run_dir():
    """A scratch directory the pooler's user can read (pytest's tmp_path is 0700)."""
    path = tempfile.mkdtemp(prefix="sluice-run-")
    os.chmod(path, 0o755)
    chown_run_as(path)
    return Path(path)


def raise_nofile_limit(want=20000):
    """Raise this process's open-file limit (for many client sockets)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def backend_pid(conn):
    """pg_backend_pid() in its own transaction."""
    with conn.transaction():
        return conn.execute("SELECT pg_backend_pid()").fetchone()[0]


def wait_no_backends(cluster, user, timeout=10):
    """Server connections of earlier tests' poolers may still be closing."""
    wait_until(lambda: cluster.backend_count(user) == 0, timeout, f"no {user} backends")


class BackendMonitor:
    """Samples how many backends `user` (a name or a list of names) has on the
    primary, in a thread, while the with-block runs: .peak is the largest
    count seen, .samples how many samples were taken."""

    def __init__(self, cluster, user, dbname="mydb", interval=0.01):
        self.users = [user] if isinstance(user, str) else list(user)
        self.cluster, self.dbname, self.interval = cluster, dbname, interval
        self.peak = 0
        self.samples = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        with self.cluster.primary_conn() as conn:
            while not self._done.is_set():
                n = conn.execute("SELECT count(*) FROM pg_stat_activity "
                                 "WHERE usename = ANY(%s) AND datname = %s",
                                 (self.users, self.dbname)).fetchone()[0]
                self.peak = max(self.peak, n)
                self.samples += 1
                self._done.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join(10)


# A hand-driven protocol 3 client, for what drivers cannot do: malformed
# packets, abrupt closes, cancel keys.
PROTOCOL_3 = 196608
CANCEL_REQUEST_CODE = 80877102
SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104


def startup_packet(user, dbname="mydb", version=PROTOCOL_3, **params):
    body = b"".join(f"{k}\0{v}\0".encode()
                    for k, v in dict(user=user, database=dbname, **params).items()) + b"\0"
    return struct.pack("!ii", 8 + len(body), version) + body


def message(kind, payload=b""):
    """A regular protocol message: kind (one byte), length, payload."""
    return kind + struct.pack("!i", 4 + len(payload)) + payload


def query_message(sql):
    return message(b"Q", sql.encode() + b"\0")


def error_fields(payload):
    """ErrorResponse/NoticeResponse payload -> {field code: text}, e.g. {'C': '57014'}."""
    fields = {}
    for part in payload.split(b"\0"):
        if part:
            fields[part[:1].decode()] = part[1:].decode(errors="replace")
    return fields


def data_row(payload):
    """DataRow payload -> list of text values (None for NULL)."""
    n = struct.unpack("!h", payload[:2])[0]
    pos, values = 2, []
    for _ in range(n):
        length = struct.unpack("!i", payload[pos:pos + 4])[0]
        pos += 4
        if length < 0:
            values.append(None)
        else:
            values.append(payload[pos:pos + length].decode())
            pos += length
    return values


class ServerError(Exception):
    def __init__(self, fields):
        super().__init__(f"{fields.get('C')}: {fields.get('M')}")
        self.fields = fields


class RawConn:
    def __init__(self, port, timeout=5):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = bytearray()      # received, not yet read
        self.backend_key = None     # (pid, secret) from BackendKeyData
        self.params = {}            # ParameterStatus values

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, n):
        """Make at least n unread bytes available in self.buf."""
        while len(self.buf) < n:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError(f"connection closed; unread: {bytes(self.buf[:300])!r}")
            self.buf += chunk

    def read_bytes(self, n):
        self._fill(n)
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_msg(self):
        """The next message as (kind, payload)."""
        self._fill(5)
        length = struct.unpack("!i", self.buf[1:5])[0]
        self._fill(1 + length)
        kind, payload = bytes(self.buf[:1]), bytes(self.buf[5:1 + length])
        del self.buf[:1 + length]
        return kind, payload

    def login(self, user="md5_user", password=None, dbname="mydb", **params):
        """Startup and authentication (ok, cleartext or md5) up to ReadyForQuery;
        raises ServerError on an ErrorResponse."""
        self.send(startup_packet(user, dbname, **params))
        return self.finish_login(user, password)

    def finish_login(self, user, password=None):
        password = PASSWORDS.get(user, "") if password is None else password
        while True:
            kind, payload = self.read_msg()
            if kind == b"R":
                code = struct.unpack("!i", payload[:4])[0]
                if code == AUTH_MD5:
                    inner = md5_secret(user, password)[3:].encode()
                    digest = "md5" + hashlib.md5(inner + payload[4:8]).hexdigest()
                    self.send(message(b"p", digest.encode() + b"\0"))
                elif code == AUTH_CLEARTEXT:
                    self.send(message(b"p", password.encode() + b"\0"))
                elif code != AUTH_OK:
                    raise ValueError(f"unsupported authentication request {code}")
            elif kind == b"E":
                raise ServerError(error_fields(payload))
            elif kind == b"K":
                self.backend_key = struct.unpack("!ii", payload)
            elif kind == b"S":
                name, value = payload.split(b"\0")[:2]
                self.params[name.decode()] = value.decode()
            elif kind == b"Z":
                return self

    def send_query(self, sql):
        self.send(query_message(sql))

    def read_result(self):
        """Messages up to ReadyForQuery -> (rows, error fields or None, status)."""
        rows, error = [], None
        while True:
            kind, payload = self.read_msg()
            if kind == b"D":
                rows.append(data_row(payload))
            elif kind == b"E":
                error = error_fields(payload)
            elif kind == b"Z":
                return rows, error, payload.decode()

    def query(self, sql):
        """Simple query -> rows (lists of text); raises ServerError on an error."""
        self.send_query(sql)
        rows, error, _ = self.read_result()
        if error:
            raise ServerError(error)
        return rows

    def read_until_closed(self, timeout):
        """Everything the peer sends until it closes the connection, or None if
        it is still open after timeout seconds."""
        data = bytes(self.buf)
        self.buf = bytearray()
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(1 << 16)
            except socket.timeout:
                return None
            except ConnectionResetError:
                return data
            if not chunk:
                return data
            data += chunk

    def abort(self):
        """Close with a TCP RST, as a killed client's kernel may."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.sock.close()


def first_error(data):
    """Error fields of the first ErrorResponse in raw bytes, or None."""
    pos = 0
    while pos + 5 <= len(data):
        kind = data[pos:pos + 1]
        length = struct.unpack("!i", data[pos + 1:pos + 5])[0]
        if kind == b"E":
            return error_fields(data[pos + 5:pos + 1 + length])
        if length < 4:
            return None
        pos += 1 + length
    return None


def rss_kib(pid):
    """Resident set size of a process (VmRSS), in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def idle_client_cost(port, pid, n, user="md5_user", dbname="mydb", settle=1.0):
    """RSS a pooler (listening on port, process pid) spends on n idle clients.

    One client logs in and runs a query first, so that the pool and one
    server connection are in the baseline; then n more log in (startup,
    authentication, ReadyForQuery) and stay idle. Returns
    (baseline KiB, KiB with the n idle clients, bytes per idle client).
    All clients are closed before it returns. The caller's open-files limit
    must allow n sockets (raise_nofile_limit)."""
    conns = []
    try:
        first = RawConn(port, timeout=30).login(user, dbname=dbname)
        conns.append(first)
        first.query("SELECT 1")
        time.sleep(settle / 2)
        base = rss_kib(pid)
        for _ in range(n):
            conns.append(RawConn(port, timeout=30).login(user, dbname=dbname))
        time.sleep(settle)
        after = rss_kib(pid)
        # Still alive: the first client's query is answered after all logins.
        assert first.query("SELECT 2") == [["2"]]
    finally:
        for conn in conns:
            conn.close()
    return base, after, (after - base) * 1024 / n


def send_cancel(port, pid, secret, timeout=5):
    """Send a CancelRequest; wait until the pooler closes that connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(struct.pack("!iiii", 16, CANCEL_REQUEST_CODE, pid, secret))
        try:
            return s.recv(100)
        except ConnectionResetError:
            return b""


class TcpProxy:
    """Forwards 127.0.0.1:port to target_port, one thread pair per connection.
    .accepted counts connections, .open those still open both ways;
    close_all() cuts every forwarded connection; stop() also stops listening."""

    def __init__(self, target_port, port=None):
        self.target_port = target_port
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", port or 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.conns = []
        self.accepted = 0
        self.open = 0
        self.lock = threading.Lock()
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopped:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self.lock:
                self.conns += [client, upstream]
                self.accepted += 1
                self.open += 1
            threading.Thread(target=self._serve, args=(client, upstream), daemon=True).start()

    def _serve(self, client, upstream):
        back = threading.Thread(target=self._pump, args=(upstream, client), daemon=True)
        back.start()
        self._pump(client, upstream)
        back.join()
        with self.lock:
            self.open -= 1

    @staticmethod
    def _pump(src, dst):
        try:
            while True:
                data = src.recv(1 << 16)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close_all(self):
        with self.lock:
            conns, self.conns = self.conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stop(self):
        self.stopped = True
        self.listener.close()
        self.close_all()


def keepalive_timer(pid, ss_filter):
    """Seconds left on the keepalive timer of pid's established TCP socket
    matching ss_filter (an `ss` filter such as "( dport = :5432 )"), from
    `ss -o`: "29sec", "6min39sec" and "980ms" are all read."""
    out = subprocess.run(["ss", "-tnop", "state", "established", ss_filter],
                         capture_output=True, text=True, timeout=10).stdout
    mine = [line for line in out.splitlines() if f"pid={pid}," in line]
    assert mine, out
    timer = re.search(r"timer:\(keepalive,([^,]+),", mine[0])
    assert timer, mine[0]
    units = {"min": 60, "sec": 1, "s": 1, "ms": 0.001}
    parts = re.findall(r"([\d.]+)(min|sec|ms|s)", timer.group(1))
    assert parts, mine[0]
    return sum(float(v) * units[u] for v, u in parts)
