"""scripts/cluster.sh and scripts/demo.sh, each test on a cluster of its own
(a fresh directory, ports chosen by cluster.sh); the shared test cluster is not
touched. A first start killed at any step is finished by the next start; a
taken port moves (auto ports) or stops the start at once, naming the port,
the process holding it and the variable that moves it (fixed ports)."""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from sluice_fixture import CLUSTER_SH, REPO, Cluster, wait_until

# The users cluster.sh creates, and their passwords.
USERS = {"trust_user": "trust_user_pw", "md5_user": "md5_user_pw",
         "scram_user": "scram_user_pw", "plain_user": "plain_user_pw", "sluice": "sluice"}
NODES = ("primary", "replica1", "replica2")

# Steps of a first start (cluster.sh's CLUSTER_STOP_AFTER), and whether the
# start after a kill there must rebuild a node that has no marker. replica2's
# steps run replica1's code again (only its last is here); "mid-basebackup"
# kills cluster.sh and its pg_basebackup while the copy runs.
STEPS = {
    "primary-initdb": "primary",
    "primary-config": "primary",
    "primary-started": "primary",
    "primary-roles": "primary",
    "primary-complete": None,
    "replica1-basebackup": "replica1",
    "mid-basebackup": "replica1",
    "replica1-complete": None,
    "replica2-started": None,
    "redis-started": None,
}
# make test kills three of them (the case, a copy under way, the
# last node's); make test-cluster-script (CLUSTER_SCRIPT_ALL_STEPS=1) all:
# each costs a cluster built twice, some 15 s.
QUICK_STEPS = ("primary-roles", "mid-basebackup", "replica2-started")
RUN_STEPS = list(STEPS) if os.environ.get("CLUSTER_SCRIPT_ALL_STEPS") == "1" else list(QUICK_STEPS)


@pytest.fixture
def private_cluster():
    """A Cluster in a fresh directory with auto ports; at the end everything
    it started is stopped (cluster.sh stop, then by pid whatever survived,
    which fails the test) and the directory removed."""
    path = tempfile.mkdtemp(prefix="sluice-clustersh-")
    cluster = Cluster(path, "auto", "auto")
    yield cluster
    cluster.run("stop", check=False)
    survivors = kill_leftovers(Path(path))
    shutil.rmtree(path, ignore_errors=True)
    assert not survivors, f"still running after cluster.sh stop: {survivors}"


def kill_leftovers(path):
    """Kill (by pid) any postgres or redis of the cluster in path that still
    runs; their descriptions."""
    found = []
    for node in NODES:
        data = path / node / "data"
        try:
            pid = int((data / "postmaster.pid").read_text().split()[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError, IndexError):
            continue
        if str(data) in cmdline:
            found.append(f"{node} postgres (pid {pid})")
            os.kill(pid, signal.SIGKILL)
    try:
        pid = int((path / "redis" / "redis.pid").read_text())
        if os.readlink(f"/proc/{pid}/cwd") == os.path.realpath(path / "redis"):
            found.append(f"redis (pid {pid})")
            os.kill(pid, signal.SIGKILL)
    except (OSError, ValueError):
        pass
    return found


def env_of(cluster, **extra):
    return dict(os.environ, CLUSTER_DIR=cluster.dir, CLUSTER_PORT=cluster.port_setting,
                CLUSTER_REDIS="1", CLUSTER_REDIS_PORT=cluster.redis_port_setting, **extra)


def start_killed_in_basebackup(cluster):
    """A first start, killed with its process group (cluster.sh, runuser,
    pg_basebackup; the servers run in sessions of their own) once replica1's
    pg_basebackup has begun to write."""
    target = Path(cluster.dir) / "replica1" / "data"
    proc = subprocess.Popen(["sh", str(CLUSTER_SH), "start"], env=env_of(cluster),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not target.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, \
        f"cluster.sh ended ({proc.returncode}) before replica1's basebackup:\n{err.decode()}"
    assert not (Path(cluster.dir) / "replica1" / "complete").exists()


def check_works(cluster):
    """Everything runs, every user logs in with its password (SCRAM, md5,
    cleartext), both replicas stream and replay a write, redis answers."""
    status = cluster.run("status", check=False)
    assert status.returncode == 0, status.stdout + status.stderr
    assert cluster.read_ports()
    with cluster.connect(user="postgres") as conn:
        roles = {r[0] for r in conn.execute("SELECT rolname FROM pg_roles")}
        assert set(USERS) <= roles
        streaming = conn.execute("SELECT application_name FROM pg_stat_replication "
                                 "WHERE state = 'streaming' ORDER BY 1").fetchall()
        assert [r[0] for r in streaming] == ["replica1", "replica2"]
        conn.execute("CREATE TABLE IF NOT EXISTS healed (n int)")
        conn.execute("INSERT INTO healed VALUES (1)")
    for user, password in USERS.items():
        with cluster.connect(user=user, password=password) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (user,)
    for port in cluster.replica_ports:
        def replayed(port=port):
            with cluster.connect(port=port) as conn:
                return (conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]
                        and conn.execute("SELECT to_regclass('healed') IS NOT NULL")
                        .fetchone()[0])
        wait_until(replayed, 20, f"the replica on {port} to replay a write")
    with socket.create_connection(("127.0.0.1", cluster.redis_port), timeout=5) as s:
        s.sendall(b"PING\r\n")
        assert s.recv(100) == b"+PONG\r\n"


@pytest.mark.parametrize("step", RUN_STEPS)
def test_start_after_a_killed_first_start(private_cluster, step):
    """The issue's case (killed between initdb and the roles) and every other
    step: the next start removes what has no marker, builds it again and
    leaves a cluster that works."""
    if step == "mid-basebackup":
        start_killed_in_basebackup(private_cluster)
    else:
        killed = private_cluster.run("start", check=False, CLUSTER_STOP_AFTER=step)
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        assert f"after step {step}" in killed.stderr
    result = private_cluster.run("start", check=False)
    assert result.returncode == 0, result.stderr
    rebuilt = STEPS[step]
    if rebuilt:
        assert f"{rebuilt}: {private_cluster.dir}/{rebuilt} has no marker file 'complete'" \
            in result.stderr
        assert "building it again" in result.stderr
    else:
        assert "no marker" not in result.stderr
    check_works(private_cluster)


def test_auto_ports_move_off_taken_ones(private_cluster):
    """A stopped cluster whose ports another process took meanwhile starts on
    free ones: the ports file and the replicas follow the primary."""
    assert private_cluster.run("start", check=False).returncode == 0
    assert private_cluster.read_ports()
    old = (private_cluster.primary_port, private_cluster.redis_port)
    private_cluster.run("stop")
    with Listener(old[0]), Listener(old[1]):
        result = private_cluster.run("start", check=False)
        assert result.returncode == 0, result.stderr
        assert f"primary: its port {old[0]} is taken by" in result.stderr
        assert f"redis: its port {old[1]} is taken by" in result.stderr
        check_works(private_cluster)
    assert private_cluster.primary_port != old[0]
    assert private_cluster.redis_port != old[1]


@pytest.mark.parametrize("node", ["primary", "replica2", "redis"])
def test_taken_fixed_port_fails_at_once(private_cluster, node):
    """A fixed port that another process holds: start fails before it builds
    anything, naming the port, the holder and the variable that moves it."""
    with Listener() as held:
        if node == "redis":
            env = {"CLUSTER_PORT": "auto", "CLUSTER_REDIS_PORT": str(held.port)}
            variable = "CLUSTER_REDIS_PORT"
        else:
            first = held.port - (2 if node == "replica2" else 0)
            env = {"CLUSTER_PORT": str(first), "CLUSTER_REDIS_PORT": "auto"}
            variable = "CLUSTER_PORT"
        result = subprocess.run(["sh", str(CLUSTER_SH), "start"],
                                env=dict(env_of(private_cluster), **env),
                                capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"port {held.port} ({node}" in result.stderr
    assert f"is taken by python3 (pid {os.getpid()}:" in result.stderr
    assert f"set {variable} to" in result.stderr
    assert not any((Path(private_cluster.dir) / n).exists() for n in NODES + ("ports",))


def test_demo_check_names_taken_ports(private_cluster):
    """make demo's first step: sluice's port and the cluster's, checked before
    anything is built or started."""
    with Listener() as held:
        env = dict(os.environ, CLUSTER_DIR=private_cluster.dir, DEMO_PORT=str(held.port),
                   DEMO_METRICS_PORT=str(held.port), CLUSTER_PORT=str(held.port))
        result = subprocess.run(["sh", str(REPO / "scripts/demo.sh"), "check"], env=env,
                                capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    err = result.stderr
    assert f"port {held.port} (sluice) is taken by python3 (pid {os.getpid()}:" in err
    assert "set DEMO_PORT to another port" in err
    assert f"port {held.port} (sluice's metrics) is taken by python3" in err
    assert "set DEMO_METRICS_PORT to another port" in err
    assert f"port {held.port} (primary) is taken by python3" in err
    assert "set CLUSTER_PORT to move the cluster" in err
    assert not any((Path(private_cluster.dir) / n).exists() for n in NODES + ("sluice.ini",))


class Listener:
    """A socket of this process listening on 127.0.0.1:port (a free one if
    port is None), for the with-block."""

    def __init__(self, port=None):
        self.sock = socket.socket()
        # Bound even while connections of a server that had the port linger.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port or 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.sock.close()
