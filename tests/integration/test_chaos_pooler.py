"""The chaos suite, part 2 (issue 17): faults at the moment of COMMIT, in
the middle of a COPY, in name resolution, and in sluice itself (reloads,
SIGINT restarts), each under CHAOS_CLIENTS (50) clients doing verified work
(chaos_lib.Workload and its checker) with the read/write split on: the
primary is in [databases] with both replicas of the shared cluster, and
read_your_writes = user.

Each scenario asserts what run_checked() does for every scenario (lost,
phantom, mixed, garbled, bad_reads and partial COPYs all 0, no client hung,
commits after the heal) and what its fault promises besides.

CHAOS_SECONDS (12 here; `make chaos`: 600) is each scenario's fault time.
make test runs only commit_killed, for CHAOS_SAMPLE_SECONDS (3); the others
run when CHAOS_ALL=1 (`make chaos` sets it)."""

import os
import random
import signal
import subprocess
import time
import types
from pathlib import Path

import pytest

from chaos_lib import (CHAOS_SECONDS, FaultProxy, chaos_config, kill9_node,
                       run_checked, wait_primary_up)
from sluice_fixture import IS_PGBOUNCER, RUN_AS

SAMPLE_SECONDS = float(os.environ.get("CHAOS_SAMPLE_SECONDS", "3"))
ALL = os.environ.get("CHAOS_ALL") == "1"

pytestmark = [pytest.mark.skipif(IS_PGBOUNCER, reason="sluice's own suite"),
              pytest.mark.timeout(CHAOS_SECONDS + 300)]
chaos_all = pytest.mark.skipif(not ALL, reason="make chaos (CHAOS_ALL=1) runs it")


def split_config(cluster, host="127.0.0.1", port=None, **extra):
    """mydb on the primary (or host:port, a proxy of it) with the shared
    cluster's replicas, the split on."""
    return chaos_config(port or cluster.primary_port, host=host,
                        replica_ports=cluster.replica_ports, **extra)


def restart_primary(cluster):
    cluster.start_node("primary")
    wait_primary_up(cluster)


def assert_reads_on_replicas(report, cluster):
    """The split was really on: replicas answered reads."""
    ports = {int(p): n for p, n in report["read_ports"].items()}
    on_replicas = sum(ports.get(p, 0) for p in cluster.replica_ports)
    assert on_replicas > 0, f"no read went to a replica: {ports}"


def test_chaos_commit_killed(sluice, cluster, pool_user):
    """The primary killed -9 at the moment of a COMMIT: the proxy before it
    forwards a COMMIT, drops the server's answer, and the primary's
    postmaster and backends are SIGKILLed; it restarts after up to a second
    (crash recovery). The COMMIT may or may not have committed: its client
    must be told so (08007 transaction_resolution_unknown), never a plain
    connection failure, and the checker counts those outcomes as unknown.
    Asserts: at least one 08007 per kill (the trapped COMMIT's)."""
    seconds = CHAOS_SECONDS if ALL else min(CHAOS_SECONDS, SAMPLE_SECONDS)
    proxy = FaultProxy(cluster.primary_port)
    rng = random.Random(11)
    try:
        s = sluice(split_config(cluster, port=proxy.port))

        def faults(deadline):
            kills = 0
            try:
                while time.monotonic() < deadline:
                    time.sleep(rng.uniform(1, 3))
                    proxy.trap(b"COMMIT\0")
                    if not proxy.sprung.wait(5):
                        continue
                    kill9_node(cluster, "primary")
                    kills += 1
                    proxy.heal()
                    time.sleep(rng.uniform(0.1, 1.0))
                    restart_primary(cluster)
            finally:
                proxy.heal()
                restart_primary(cluster)
                cluster.wait_replayed(timeout=60)
            return {"kills": kills, "trapped_commits": proxy.trapped}

        report, _ = run_checked("commit_killed", s, cluster, pool_user, faults, seconds=seconds)
    finally:
        proxy.stop()
    assert report["kills"] > 0
    assert report["unknown_08007"] >= report["kills"], report
    assert report["unknown"] >= report["unknown_08007"], report
    assert_reads_on_replicas(report, cluster)


@chaos_all
def test_chaos_copy_cut(sluice, cluster, pool_user):
    """COPY FROM STDIN (300 rows, about 14 kB, in autocommit) through the
    proxy, whose server connections are cut mid-stream: after a COPY's
    query goes up, that connection is cut after 0..16 kB more bytes from
    sluice, so mostly inside the CopyData stream. Asserts: the client got an
    error (or, if the cut came after CopyDone, either answer), and the table
    has all or none of each COPY's rows (partial = 0), whatever the client
    was told."""
    proxy = FaultProxy(cluster.primary_port)
    rng = random.Random(12)
    try:
        s = sluice(split_config(cluster, port=proxy.port))

        def faults(deadline):
            try:
                while time.monotonic() < deadline:
                    time.sleep(rng.uniform(0.2, 1.0))
                    proxy.trap(b"COPY chaos_w", cut=("up", rng.randint(0, 16000)))
            finally:
                proxy.heal()
            return {"copy_cuts_armed": proxy.trapped, "cuts": proxy.cuts,
                    "server_connections": proxy.accepted}

        report, _ = run_checked("copy_cut", s, cluster, pool_user, faults,
                                workload=dict(copy_share=0.3, copy_rows=300))
    finally:
        proxy.stop()
    assert report["copies"] > 0 and report["cuts"] > 0, report
    assert report["errors"].get("copy:08007", 0) > 0, report
    assert_reads_on_replicas(report, cluster)


# ------------------------------------------------------------------ DNS

HOST_NAME = "chaos-primary.test"


class HostsFile:
    """A hosts file of the test's: the machine's /etc/hosts and one line
    mapping HOST_NAME to 127.0.0.2 or 127.0.0.3. sluice sees it as its
    /etc/hosts (bind mount in a mount namespace of its own, see
    spawn_with_hosts): the machine's /etc/hosts is never changed. The
    address changes by rewriting one byte in place (same inode, so the bind
    mount sees it; never a half-written file)."""

    def __init__(self, directory):
        self.path = Path(directory) / "hosts"
        base = Path("/etc/hosts").read_text()
        if not base.endswith("\n"):
            base += "\n"
        self.offset = len(base.encode()) + len("127.0.0.")
        self.path.write_text(base + f"127.0.0.2 {HOST_NAME}\n")
        self.path.chmod(0o644)

    def point_to(self, address):
        assert address in ("127.0.0.2", "127.0.0.3")
        fd = os.open(self.path, os.O_WRONLY)
        try:
            os.pwrite(fd, address[-1].encode(), self.offset)
        finally:
            os.close(fd)


def spawn_with_hosts(hosts):
    """A Sluice.spawn that runs the pooler with hosts as its /etc/hosts:
    unshare(1) gives it a private mount namespace (as root), the file is
    bind-mounted there, then it drops to RUN_AS. getaddrinfo() reads
    /etc/hosts at each lookup, so a change shows at sluice's next resolution
    (dns_max_ttl)."""
    def spawn(self):
        env = dict(os.environ)
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
        script = ('mount --bind "$1" /etc/hosts && shift && '
                  '{ ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"; } && '
                  f'exec setpriv --reuid={RUN_AS} --regid={RUN_AS} --clear-groups "$@"')
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                 str(hosts.path), self.binary, *self.args, str(self.ini)],
                cwd=self.dir, env=env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)
    return spawn


@chaos_all
@pytest.mark.skipif(RUN_AS is None, reason="a mount namespace needs root")
def test_chaos_dns_change(sluice, cluster, pool_user, run_dir):
    """The primary's [databases] host is a name (dns_max_ttl = 1) whose
    address changes every 4 to 6 s between 127.0.0.2 and 127.0.0.3, a proxy
    of the primary on each. 1.5 s after a change the old address goes away:
    its proxy resets every connection it holds and refuses new ones. Asserts,
    besides the checker: both addresses served, and no server connection
    reached the old address later than dns_max_ttl + 1 s after the change
    (stale = 0)."""
    ttl = 1
    hosts = HostsFile(run_dir)
    proxies = {"127.0.0.2": FaultProxy(cluster.primary_port, host="127.0.0.2")}
    port = proxies["127.0.0.2"].port
    proxies["127.0.0.3"] = FaultProxy(cluster.primary_port, host="127.0.0.3", port=port)
    rng = random.Random(13)
    try:
        s = sluice(split_config(cluster, host=HOST_NAME, port=port, dns_max_ttl=ttl,
                                dns_nxdomain_ttl=ttl), start=False)
        s.spawn = types.MethodType(spawn_with_hosts(hosts), s)
        s.start()

        def faults(deadline):
            changes = late_accepts = 0
            current = "127.0.0.2"
            try:
                while time.monotonic() < deadline:
                    time.sleep(rng.uniform(4, 6) - ttl - 1.5)
                    old = current
                    current = "127.0.0.3" if old == "127.0.0.2" else "127.0.0.2"
                    proxies[current].refuse(False)
                    hosts.point_to(current)
                    changed = time.monotonic()
                    changes += 1
                    time.sleep(ttl + 1.5)
                    # The old host goes away: whatever reaches it from now on
                    # is counted by its refusals.
                    proxies[old].refuse(True)
                    proxies[old].drop_all()
                    late_accepts += sum(1 for t in proxies[old].accept_times
                                        if t > changed + ttl + 1)
            finally:
                for p in proxies.values():
                    p.refuse(False)
                    p.heal()
            return {"dns_changes": changes,
                    "stale": late_accepts + sum(p.refused for p in proxies.values()),
                    "served": {a: p.accepted for a, p in proxies.items()}}

        report, _ = run_checked("dns_change", s, cluster, pool_user, faults)
    finally:
        for p in proxies.values():
            p.stop()
    assert report["dns_changes"] > 0
    assert all(n > 0 for n in report["served"].values()), report["served"]
    assert report["stale"] == 0, report
    assert_reads_on_replicas(report, cluster)


# ---------------------------------------------------- sluice's own signals

@chaos_all
def test_chaos_reload_storm(sluice, cluster, pool_user):
    """SIGHUP every 0.1 to 0.5 s, the config changing each time
    (default_pool_size 10 <-> 12, replica_wait_timeout 0.05 <-> 0.1). A
    reload must cost the clients nothing: asserts, besides the checker, no
    failed or unknown write, no failed read, no reconnect."""
    configs = [split_config(cluster), split_config(cluster, default_pool_size=12,
                                                   replica_wait_timeout="0.1")]
    s = sluice(configs[0])
    rng = random.Random(14)

    def faults(deadline):
        reloads = 0
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(0.1, 0.5))
            reloads += 1
            s.write_config(configs[reloads % 2])
            s.reload()
        return {"reloads": reloads}

    report, _ = run_checked("reload_storm", s, cluster, pool_user, faults,
                            strict=("failed", "unknown", "read_errors", "reconnects"))
    assert report["reloads"] > 0
    assert s.log_text().count("reload") >= 1
    assert_reads_on_replicas(report, cluster)


@chaos_all
def test_chaos_sigint_restart(sluice, cluster, pool_user):
    """sluice's safe shutdown (SIGINT: new clients refused, open transactions
    finish, then exit 0) and a start again on the same port, every 3 to
    6 s. Clients reconnect (they carry their last sluice.lsn into
    sluice.min_lsn: the new process knows no read_your_writes position).
    Asserts, besides the checker: every exit was 0, and no write's outcome
    was unknown (SIGINT waits for transactions: it never cuts a COMMIT).
    On 4 workers whatever SLUICE_TEST_WORKERS says: the shutdown closes
    other workers' clients from the main thread, and a read of one of them
    waiting for a replica (read_your_writes) stayed in its worker's wait
    list once freed (heap-use-after-free in ryw.c's wait_tick, found here;
    regression)."""
    s = sluice(split_config(cluster), workers=4)
    rng = random.Random(15)

    def faults(deadline):
        restarts = 0
        downtime = 0.0
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(3, 6))
            down = time.monotonic()
            s.signal(signal.SIGINT)
            rc = s.wait_exit(30)
            assert rc == 0, f"SIGINT: exit {rc}\n{s.log_tail()}"
            s.exit_expected = False
            s.start(timeout=30)
            downtime += time.monotonic() - down
            restarts += 1
        return {"restarts": restarts, "downtime_s": round(downtime, 1)}

    report, _ = run_checked("sigint_restart", s, cluster, pool_user, faults,
                            workload=dict(carry_lsn=True), strict=("unknown",))
    assert report["restarts"] > 0
    assert report["reconnects"] > 0
    assert_reads_on_replicas(report, cluster)
