"""The chaos suite's tools (issue 17): a fault-injecting TCP proxy, clients
that record what they sent and what they were told, and a checker.

FaultProxy sits between sluice and a PostgreSQL node ([databases] points at
proxy.port). It adds latency, cuts connections after N more bytes (mid
message), blackholes (stops forwarding and holds new connections: no FIN, no
RST), and heals; each from the test's thread.

Workload runs N client threads through the pooler. Every operation carries a
nonce that the server echoes back, every statement also returns the
session's application_name (distinct per client) and, inside a transaction,
txid_current() and a transaction-local setting (chaos.owner), so that an
answer is proven to belong to its own query, transaction and client. A
write's outcome is what the client was told: committed (COMMIT answered),
failed (an error before COMMIT was sent: it cannot have committed) or
unknown (the connection broke while COMMIT was in flight). check() then
reads the table on the primary directly."""

import asyncio
import contextlib
import ctypes
import json
import os
import random
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import psycopg

from sluice_fixture import wait_until

TABLE = "chaos_w"
# libpq's words for a stream it could not parse: a client was sent bytes
# that are not the messages of its own answer.
GARBLED = ("got message type", "lost synchronization", "unexpected response",
           "message contents do not agree", "invalid message length", "insufficient data")
# What a client told of a write whose outcome sluice cannot know may have
# heard: 08007 transaction_resolution_unknown (sluice's), or 57P01 (the
# server's own "terminating connection", passed on). A write that committed
# although its client heard anything else (a bare connection loss, 08006)
# counts as unflagged_commits.
TOLD_UNKNOWN = ("08007", "57P01")
# Reads ask for a padding column of up to this many bytes: answers large
# enough to stream through sluice in pieces, so that cuts land inside them.
PAD_MAX = 20000


# ---------------------------------------------------------------- the proxy

class _Link:
    """One forwarded connection: the client side (sluice) and the upstream."""

    def __init__(self, cwriter):
        self.cwriter = cwriter
        self.uwriter = None
        self.cut_budget = None  # (direction, bytes left) once a cut is armed
        self.held = False  # trapped: the server's answers are dropped
        self.closed = False

    def abort(self):
        """Both sides reset at once (the bytes already written were sent)."""
        self.closed = True
        for w in (self.cwriter, self.uwriter):
            if w is not None:
                w.transport.abort()


class FaultProxy:
    """A TCP relay 127.0.0.1:port -> 127.0.0.1:target_port on an asyncio loop
    of its own thread. Faults: set_latency(seconds) per forwarded chunk, each
    direction; set_bandwidth(bytes a second) per link, each direction;
    cut(n, count, direction) arms `count` random links (all if
    None) to forward n more bytes in direction ("down": server to sluice,
    "up": sluice to server, None: whichever comes first) and then reset both
    sides; blackhole() stops reading and forwarding on every link and holds
    new connections unanswered; heal() undoes all three. trap(pattern)
    arms a trap: the next chunk sluice sends that contains pattern (say a
    COMMIT) is forwarded, and from then on that link's answers are dropped
    (the server's answer never reaches sluice) until the link ends; .sprung
    is set then, for the test to kill the server. refuse(True): new
    connections are reset at once (a host that is gone). Counters:
    accepted, cuts (links cut), refused (upstream connect failures or
    refusals), trapped. host: the address to listen on (any 127.x.y.z);
    sock: a listening socket to serve instead (one made in another network
    namespace: KernelBlackhole). keepalive: (idle, interval, count) of TCP
    keepalive on the accepted connections, as a server's
    tcp_keepalives_idle/interval/count, so that a link whose pooler went
    away during a blackhole ends here too (and its backend with it)."""

    def __init__(self, target_port, host="127.0.0.1", port=0, sock=None, keepalive=None):
        self.target_port = target_port
        self.latency = 0.0
        self.bandwidth = None  # bytes a second each way per link; None: unlimited
        self.links = set()
        self.accepted = self.cuts = self.refused = self.trapped = 0
        self.trap_pattern = None
        self.trap_cut = None
        self.sprung = threading.Event()
        self.refusing = False
        self.accept_times = []  # monotonic time of each accepted connection
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.gate = self._run(self._make_gate())
        self.keepalive = keepalive
        if sock is None:
            self.server = self._run(asyncio.start_server(self._handle, host, port))
        else:
            self.server = self._run(asyncio.start_server(self._handle, sock=sock))
        self.host, self.port = self.server.sockets[0].getsockname()[:2]

    def _run(self, coro, timeout=10):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def _call(self, fn):
        async def call():
            return fn()
        return self._run(call())

    @staticmethod
    async def _make_gate():
        gate = asyncio.Event()
        gate.set()
        return gate

    async def _handle(self, creader, cwriter):
        if self.refusing:
            self.refused += 1
            cwriter.transport.abort()
            return
        self.accepted += 1
        self.accept_times.append(time.monotonic())
        if self.keepalive:
            set_keepalive(cwriter.get_extra_info("socket"), *self.keepalive)
        link = _Link(cwriter)
        self.links.add(link)
        try:
            await self.gate.wait()  # blackholed: accepted, never answered
            try:
                ureader, link.uwriter = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", self.target_port), 5)
            except (OSError, asyncio.TimeoutError):
                self.refused += 1
                return
            await asyncio.gather(self._pump(link, creader, link.uwriter, "up"),
                                 self._pump(link, ureader, cwriter, "down"))
        finally:
            self.links.discard(link)
            if not link.closed:
                link.abort()

    async def _pump(self, link, reader, writer, direction):
        try:
            while not link.closed:
                await self.gate.wait()
                rate = self.bandwidth
                # Under a bandwidth cut, small reads paced by their size:
                # the flow is smooth, not bursts of 64 kB.
                data = await reader.read(max(1, rate // 20) if rate else 1 << 16)
                if not data:
                    break
                await self.gate.wait()
                if self.latency:
                    await asyncio.sleep(self.latency)
                if rate:
                    await asyncio.sleep(len(data) / rate)
                if link.closed:
                    break
                if link.held and direction == "down":
                    continue  # trapped: the answer is lost with the server
                trap = self.trap_pattern
                if trap is not None and direction == "up" and trap in data:
                    self.trap_pattern = None
                    self.trapped += 1
                    if self.trap_cut is None:
                        link.held = True
                    else:  # the cut counts from the end of this chunk
                        link.cut_budget = self.trap_cut
                    writer.write(data)
                    await writer.drain()
                    self.sprung.set()
                    continue
                budget = link.cut_budget
                if budget is not None and budget[0] in (None, direction):
                    if len(data) >= budget[1]:
                        writer.write(data[:budget[1]])
                        self.cuts += 1
                        link.abort()
                        break
                    link.cut_budget = (budget[0], budget[1] - len(data))
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        # One side finished: so does the other (FIN both ways, as a relay does).
        if not link.closed:
            link.abort()

    # Controls, from any thread.
    def set_latency(self, seconds):
        self.latency = seconds

    def cut(self, nbytes, count=None, direction=None):
        def arm():
            links = [link for link in self.links if link.uwriter and not link.closed]
            if count is not None:
                links = random.sample(links, min(count, len(links)))
            for link in links:
                link.cut_budget = (direction, nbytes)
            return len(links)
        return self._call(arm)

    def blackhole(self):
        self._call(self.gate.clear)

    def set_bandwidth(self, bytes_per_second):
        """Each link carries at most this many bytes a second each way
        (None: no limit); heal() lifts it."""
        self.bandwidth = bytes_per_second

    def trap(self, pattern, cut=None):
        """Arm the trap (see the class); clears .sprung. cut=(direction,
        n): instead of dropping the answers, that link is cut after n more
        bytes in direction (as cut() does)."""
        self.sprung.clear()
        self.trap_cut = cut
        self.trap_pattern = pattern

    def drop_all(self):
        """Reset every link at once (the host went away); how many."""
        def drop():
            links = [link for link in self.links if not link.closed]
            for link in links:
                link.abort()
            return len(links)
        return self._call(drop)

    def refuse(self, on=True):
        self.refusing = on

    def drop_held(self):
        """Reset the trapped links (their server is gone); how many."""
        def drop():
            held = [link for link in self.links if link.held and not link.closed]
            for link in held:
                link.abort()
            return len(held)
        return self._call(drop)

    @contextlib.contextmanager
    def ending_late(self, cluster, pid, late=0.3, heal_after=0.8):
        """Terminates backend pid (as a restart would) with its end reaching
        sluice `late` seconds later, so that what sluice sends it meanwhile
        meets a server that is going; heals heal_after seconds on, and
        waits for that when the block is done."""
        self.set_latency(late)
        with cluster.primary_conn() as direct:
            direct.execute("SELECT pg_terminate_backend(%s)", (pid,))
        healer = threading.Timer(heal_after, self.heal)
        healer.start()
        try:
            yield
        finally:
            healer.join()

    def heal(self):
        def heal():
            self.latency = 0.0
            self.bandwidth = None
            self.trap_pattern = None
            for link in self.links:
                link.cut_budget = None
            self.gate.set()
        self._call(heal)

    def open_links(self):
        return self._call(lambda: len(self.links))

    def stop(self):
        async def close():
            self.server.close()
            for link in list(self.links):
                link.abort()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        self._run(close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


# ------------------------------------------- a blackhole in the kernel

def set_keepalive(sock, idle, interval, count):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, count)


class NetnsUnavailable(Exception):
    """The test may not make network namespaces (not root, no iproute2, a
    container without CAP_NET_ADMIN...): the reason."""


_CLONE_NEWNET = 0x40000000
_instances = iter(range(1 << 30))


def _ip(*args, ns=None, check=True):
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if check and r.returncode:
        raise subprocess.CalledProcessError(r.returncode, cmd, r.stdout, r.stderr)
    return r


def _listen_in_netns(ns, address):
    """A listening TCP socket on address:0 inside the named network
    namespace: made on a thread of its own that enters the namespace
    (setns(2) moves only the calling thread) and then ends; the socket
    stays in the namespace it was made in."""
    libc = ctypes.CDLL(None, use_errno=True)
    made = {}

    def make():
        fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
        try:
            if libc.setns(fd, _CLONE_NEWNET) != 0:
                made["error"] = OSError(ctypes.get_errno(), "setns")
                return
        finally:
            os.close(fd)
        sock = socket.socket()
        sock.bind((address, 0))
        sock.listen(128)
        sock.setblocking(False)
        made["sock"] = sock

    t = threading.Thread(target=make)
    t.start()
    t.join()
    if "error" in made:
        raise made["error"]
    return made["sock"]


class KernelBlackhole:
    """The primary at a network address whose packets a kernel can drop:
    two network namespaces made for the test, a router R and a host H,

        root 10.213.X.1 --veth-- 10.213.X.2 R 10.213.X.5 --veth-- 10.213.X.6 H

    and a FaultProxy listening on H's address (host, port) that forwards
    to 127.0.0.1:target_port in the root namespace. A pooler given that
    host and port reaches the primary through both veth pairs.

    blackhole() puts a queueing discipline that drops every packet on both
    of R's devices: `tc qdisc add dev DEV root netem loss 100%`, or, on a
    kernel built without sch_netem, `pfifo limit 0` (a queue that holds
    nothing) -- self.qdisc says which. Nothing passes either way: no data,
    no ACK, no FIN, no RST, no SYN-ACK; TCP keepalive probes go unanswered,
    and so do retransmissions. The drops happen on a router, not on the
    sending host's own device (a local drop tells the sender's TCP, which
    then counts neither its keepalive probes nor its retransmissions as
    lost). heal() deletes the qdiscs. close() stops the proxy and deletes
    the namespaces and devices made, by their unique names.

    proxy_keepalive: see FaultProxy (the primary's side of each link).
    Raises NetnsUnavailable when namespaces cannot be made here."""

    def __init__(self, target_port, proxy_keepalive=None):
        n = next(_instances)
        tag = f"{os.getpid() % 100000}{n}"
        self.router, self.hostns = f"sluice-bh{tag}-r", f"sluice-bh{tag}-h"
        self.root_dev, self.r_root, self.r_host, self.h_dev = (
            f"sbh{tag}{end}" for end in "abcd")
        self.made = []
        self.qdisc = None
        self.faulty = False
        self.proxy = None
        try:
            _ip("ip", "netns", "add", self.router)
        except (OSError, subprocess.SubprocessError) as e:
            raise NetnsUnavailable(f"`ip netns add` failed: "
                                   f"{getattr(e, 'stderr', None) or e}".strip()) from None
        self.made.append(self.router)
        try:
            self._build(self._free_subnet())
            self.proxy = FaultProxy(target_port, sock=_listen_in_netns(self.hostns, self.host),
                                    keepalive=proxy_keepalive)
            self.port = self.proxy.port
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _free_subnet():
        used = _ip("ip", "-o", "-4", "addr", "show").stdout + _ip("ip", "-4", "route").stdout
        for i in range(250):
            x = (os.getpid() + i) % 250 + 1
            if f"10.213.{x}." not in used:
                return x
        raise NetnsUnavailable("no free 10.213.X.0/29 subnet")

    def _build(self, x):
        net = f"10.213.{x}"
        self.host = f"{net}.6"
        _ip("ip", "netns", "add", self.hostns)
        self.made.append(self.hostns)
        _ip("ip", "link", "add", self.root_dev, "type", "veth", "peer", "name", self.r_root,
            "netns", self.router)
        _ip("ip", "-n", self.router, "link", "add", self.r_host, "type", "veth",
            "peer", "name", self.h_dev, "netns", self.hostns)
        _ip("ip", "addr", "add", f"{net}.1/30", "dev", self.root_dev)
        _ip("ip", "link", "set", self.root_dev, "up")
        _ip("ip", "route", "add", f"{net}.4/30", "via", f"{net}.2")
        for args in (("addr", "add", f"{net}.2/30", "dev", self.r_root),
                     ("addr", "add", f"{net}.5/30", "dev", self.r_host),
                     ("link", "set", self.r_root, "up"), ("link", "set", self.r_host, "up")):
            _ip("ip", "-n", self.router, *args)
        _ip("sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward", ns=self.router)
        for args in (("addr", "add", f"{self.host}/30", "dev", self.h_dev),
                     ("link", "set", self.h_dev, "up"), ("link", "set", "lo", "up"),
                     ("route", "add", "default", "via", f"{net}.5")):
            _ip("ip", "-n", self.hostns, *args)

    def blackhole(self):
        for dev in (self.r_root, self.r_host):
            for qdisc in ([self.qdisc] if self.qdisc else [("netem", "loss", "100%"),
                                                          ("pfifo", "limit", "0")]):
                r = _ip("tc", "qdisc", "add", "dev", dev, "root", *qdisc, ns=self.router,
                        check=False)
                if r.returncode == 0:
                    self.qdisc = qdisc
                    break
                if "unknown" not in r.stderr:  # not "Specified qdisc kind is unknown"
                    raise subprocess.CalledProcessError(r.returncode, "tc", r.stdout, r.stderr)
            else:
                raise NetnsUnavailable(f"tc could not add a dropping qdisc: {r.stderr}")
        self.faulty = True

    def heal(self):
        if self.faulty:
            for dev in (self.r_root, self.r_host):
                _ip("tc", "qdisc", "del", "dev", dev, "root", ns=self.router, check=False)
            self.faulty = False

    def dropped(self):
        """Packets R's qdiscs dropped (tc -s), while they are there."""
        out = _ip("tc", "-s", "qdisc", "show", ns=self.router, check=False).stdout
        return sum(int(m) for m in re.findall(r"dropped (\d+)", out))

    def close(self):
        if self.proxy is not None:
            self.proxy.stop()
            self.proxy = None
        _ip("ip", "link", "del", self.root_dev, check=False)
        for ns in reversed(self.made):
            _ip("ip", "netns", "del", ns, check=False)
        self.made = []


# ------------------------------------------------------- killing a node -9

def kill9_node(cluster, name="primary"):
    """SIGKILL the node's postmaster and every child of it at once (not
    pg_ctl: nothing is flushed or told). Returns the pids killed."""
    data = Path(cluster.dir) / name / "data"
    postmaster = int((data / "postmaster.pid").read_text().split()[0])
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == postmaster:
            children.append(int(stat.parent.name))
    killed = []
    for pid in [postmaster] + children:
        try:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except ProcessLookupError:
            pass
    # Until they are reaped: pg_ctl takes a zombie postmaster for a live one.
    wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in killed), 30,
               f"the killed processes of {name} to be gone", 0.02)
    return killed


# ------------------------------------------------------ clients and checker

def create_table(conn):
    conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
    conn.execute(f"CREATE TABLE {TABLE} (id text PRIMARY KEY, run text NOT NULL, "
                 "client int NOT NULL, seq int NOT NULL)")
    conn.execute(f"GRANT ALL ON {TABLE} TO PUBLIC")


class Client:
    """One client's record: the outcome of each write by nonce, and
    everything that did not belong to it. pinned: it holds session state
    that cannot move (Workload.pinned_every)."""

    def __init__(self, index, run, pinned=False, lock_class=0):
        self.index = index
        self.appname = f"chaos-{run}-{index}"
        self.owner = f"owner-{run}-{index}"
        # Session state of its own: a session-level SET made at each connect
        # (sluice replays it on every server it gets), and a statement
        # prepared by the driver whose text is this client's alone (the
        # same name, _pg3_0, on every client's connection).
        self.session = f"session-{run}-{index}"
        self.prepared_sql = f"SELECT %s::text, {index}::int AS chaos_client_{index}"
        # A pinned client also makes, at each connect, a temporary table
        # holding a nonce of that connection, and takes a session advisory
        # lock on a key of that connection: (lock_class, objid) in pg_locks.
        # Keys are never reused, so a lock left on a backend that outlived
        # its pooler connection blocks nobody. Every client's reads check
        # that the advisory locks of the backend answering are exactly its
        # own (none for an unpinned client).
        self.pinned = pinned
        self.lock_class = lock_class
        self.pin_attempts = 0
        self.pin_nonce = None  # of the current connection
        self.lock_objid = None
        self.pin_lost = 0  # reads that found the pinned state gone (counted in mixed)
        self.outcomes = {}  # nonce -> "committed" | "failed" | "unknown"
        self.copies = {}  # nonce of a COPY -> its number of rows (outcome in outcomes)
        self.unknown_why = {}  # nonce of an unknown outcome -> phase:sqlstate it was told
        self.read_ports = {}  # server port -> reads it answered
        self.lsn = None  # the last sluice.lsn after a commit (carry_lsn)
        self.operations = self.reads = self.read_errors = self.connects = 0
        self.connect_errors = 0
        self.mixed = []  # descriptions of answers that were not this client's
        self.garbled = []  # errors that say the stream was not PostgreSQL's
        self.bad_reads = []  # counts outside [acknowledged, acknowledged + unknown]
        self.errors = {}  # phase:sqlstate (or error class) -> count
        self.messages = {}  # phase:sqlstate -> the first message seen
        self.busy_since = None  # monotonic time the current operation began
        self.n_committed = self.n_unknown = 0  # writes committed / unknown so far
        self.rows_committed = self.rows_unknown = 0  # their rows, for the read check

    def note_error(self, e, phase):
        if any(g in str(e) for g in GARBLED):
            self.garbled.append(f"{phase}: {str(e).strip()[:160]}")
        key = f"{phase}:{getattr(e, 'sqlstate', None) or type(e).__name__}"
        self.errors[key] = self.errors.get(key, 0) + 1
        self.messages.setdefault(key, str(e).strip().splitlines()[0][:160] if str(e) else "")


def _expect(client, what, got, want):
    if got != want:
        client.mixed.append(f"{what}: got {got!r}, expected {want!r}")


class Workload:
    """clients threads doing verified work through the pooler at dsn (a
    function of the application_name) until stop(); run: this workload's
    name in the table and in nonces."""

    def __init__(self, dsn, clients=50, run=None, write_share=0.75, copy_share=0.0,
                 copy_rows=200, carry_lsn=False, pinned_every=10):
        self.dsn = dsn
        self.run = run or f"r{os.getpid()}x{random.randrange(1 << 30)}"
        # Every pinned_every-th client (0: none) holds a temporary table and
        # an advisory lock (Client.pinned); 1 in 10 by default: the
        # scenarios' pools have 10 servers for 50 clients, and each pinned
        # client holds one of them while it is connected (1 in 5 would take
        # them all).
        self.pinned_every = pinned_every
        lock_class = random.randrange(1, 1 << 31)
        self.clients = [Client(i, self.run, pinned_every > 0 and i % pinned_every == 0,
                               lock_class) for i in range(clients)]
        self.write_share = write_share
        # copy_share of the writes are a COPY FROM STDIN of copy_rows rows
        # (ids nonce/0 .. nonce/copy_rows-1), all or none of which must commit.
        self.copy_share = copy_share
        self.copy_rows = copy_rows
        # carry_lsn: a client that reconnects asks for reads at least as
        # fresh as its last commit (sluice.min_lsn = the sluice.lsn it was
        # given), as an application must across a pooler restart, where
        # sluice forgets the read_your_writes positions it knew.
        self.carry_lsn = carry_lsn
        self.stopping = threading.Event()
        self.threads = []

    def start(self):
        for c in self.clients:
            t = threading.Thread(target=self._client_main, args=(c,), daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def stop(self, timeout=90):
        """Stop and wait; the clients still busy after timeout (hung)."""
        self.stopping.set()
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.1, deadline - time.monotonic()))
        return [c.index for c, t in zip(self.clients, self.threads) if t.is_alive()]

    def _connect(self, c):
        dsn = self.dsn(c.appname)
        if self.carry_lsn and c.lsn:
            dsn += f" options='-c sluice.min_lsn={c.lsn}'"
        conn = psycopg.connect(dsn, autocommit=True, prepare_threshold=None)
        try:
            conn.execute(psycopg.sql.SQL("SET chaos.session = {}").format(
                psycopg.sql.Literal(c.session)))
            if c.pinned:
                self._pin(conn, c)
        except psycopg.Error:
            conn.close()
            raise
        c.connects += 1
        return conn

    @staticmethod
    def _pin(conn, c):
        """The pinned client's state of this connection: sluice pins it to
        its server at the CREATE TEMP (docs/pooling.md), so the INSERT and
        the lock are taken on that server too."""
        c.pin_attempts += 1
        c.pin_nonce = f"{c.session}-conn{c.pin_attempts}"
        c.lock_objid = c.index * 1_000_000 + c.pin_attempts
        conn.execute("CREATE TEMP TABLE chaos_pin (nonce text)")
        conn.execute("INSERT INTO chaos_pin VALUES (%s)", (c.pin_nonce,))
        got = conn.execute("SELECT pg_try_advisory_lock(%s)",
                           ((c.lock_class << 32) | c.lock_objid,)).fetchone()
        _expect(c, "advisory lock taken", got, (True,))

    def _client_main(self, c):
        rng = random.Random(c.index)
        conn = None
        seq = 0
        while not self.stopping.is_set():
            if conn is None:
                try:
                    conn = self._connect(c)
                except psycopg.Error as e:
                    c.connect_errors += 1
                    c.note_error(e, "connect")
                    time.sleep(0.1 + rng.random() * 0.2)
                    continue
            seq += 1
            nonce = f"{self.run}-{c.index}-{seq}"
            c.busy_since = time.monotonic()
            try:
                if rng.random() < self.write_share:
                    if self.copy_share and rng.random() < self.copy_share:
                        self._copy(conn, c, nonce, seq)
                    else:
                        self._write(conn, c, nonce, seq)
                else:
                    self._read(conn, c, nonce, rng.randrange(PAD_MAX))
            except psycopg.Error:
                if conn.broken or conn.closed:
                    conn.close()
                    conn = None
                else:
                    try:
                        conn.execute("ROLLBACK")
                    except psycopg.Error:
                        conn.close()
                        conn = None
            finally:
                c.busy_since = None
        if conn is not None:
            conn.close()

    def _write(self, conn, c, nonce, seq):
        c.operations += 1
        c.outcomes[nonce] = "failed"  # until COMMIT is sent
        try:
            conn.execute("BEGIN")
            row = conn.execute(
                "SELECT %s::text, set_config('chaos.owner', %s, true), "
                "current_setting('application_name'), txid_current()",
                (nonce, c.owner)).fetchone()
            _expect(c, "begin nonce", row[0], nonce)
            _expect(c, "begin owner", row[1], c.owner)
            _expect(c, "begin application_name", row[2], c.appname)
            txid = row[3]
            row = conn.execute(
                f"INSERT INTO {TABLE} (id, run, client, seq) VALUES (%s, %s, %s, %s) "
                "RETURNING id, current_setting('chaos.owner'), "
                "current_setting('application_name'), txid_current()",
                (nonce, self.run, c.index, seq)).fetchone()
            _expect(c, "insert nonce", row[0], nonce)
            _expect(c, "insert owner", row[1], c.owner)
            _expect(c, "insert application_name", row[2], c.appname)
            _expect(c, "insert txid", row[3], txid)
        except psycopg.Error as e:
            c.note_error(e, "write")
            raise
        c.outcomes[nonce] = "unknown"  # COMMIT is on its way
        try:
            conn.execute("COMMIT")
        except psycopg.Error as e:
            c.note_error(e, "commit")
            # A clean refusal by the server (the connection is fine, e.g. a
            # serialization failure) did not commit; anything else may have.
            if not (conn.broken or conn.closed) and (e.sqlstate or "")[:2] in ("40", "23"):
                c.outcomes[nonce] = "failed"
            else:
                c.n_unknown += 1
                c.rows_unknown += 1
                c.unknown_why[nonce] = f"commit:{e.sqlstate or type(e).__name__}"
            raise
        c.outcomes[nonce] = "committed"
        c.n_committed += 1
        c.rows_committed += 1
        self._note_lsn(conn, c)

    def _note_lsn(self, conn, c):
        if self.carry_lsn:
            c.lsn = conn.info.parameter_status("sluice.lsn") or c.lsn

    def _copy(self, conn, c, nonce, seq):
        """COPY FROM STDIN of copy_rows rows in autocommit: its own
        transaction. Until the COPY is sent whole (CopyDone), nothing can
        commit; from then on an error leaves the outcome unknown."""
        c.operations += 1
        n = self.copy_rows
        c.copies[nonce] = n
        c.outcomes[nonce] = "failed"
        cur = conn.cursor()
        try:
            with cur.copy(f"COPY {TABLE} (id, run, client, seq) FROM STDIN") as cp:
                for i in range(n):
                    cp.write_row((f"{nonce}/{i}", self.run, c.index, seq))
                # Leaving the block sends CopyDone and waits for the answer.
                c.outcomes[nonce] = "unknown"
        except psycopg.Error as e:
            c.note_error(e, "copy")
            if c.outcomes[nonce] == "unknown":
                c.n_unknown += 1
                c.rows_unknown += n
                c.unknown_why[nonce] = f"copy:{e.sqlstate or type(e).__name__}"
            raise
        _expect(c, "copy row count", cur.rowcount, n)
        c.outcomes[nonce] = "committed"
        c.n_committed += 1
        c.rows_committed += n
        self._note_lsn(conn, c)

    def _read(self, conn, c, nonce, pad):
        c.operations += 1
        low = c.rows_committed
        high = low + c.rows_unknown
        try:
            row = conn.execute(
                "SELECT %s::text, current_setting('application_name'), "
                "coalesce(current_setting('chaos.owner', true), ''), "
                f"(SELECT count(*) FROM {TABLE} WHERE run = %s AND client = %s), "
                "txid_current_if_assigned() IS NULL, repeat(%s, %s), inet_server_port(), "
                "current_setting('chaos.session', true), "
                # The backend's advisory locks, and whether it shows a
                # table chaos_pin (only a temporary one can be visible).
                "(SELECT string_agg(classid || ':' || objid, ',' ORDER BY objid) FROM pg_locks "
                " WHERE locktype = 'advisory' AND pid = pg_backend_pid()), "
                "(SELECT count(*) FROM pg_class WHERE relname = 'chaos_pin' "
                " AND pg_table_is_visible(oid))",
                (nonce, self.run, c.index, nonce[-1], pad)).fetchone()
            mine = conn.execute(c.prepared_sql, (nonce,), prepare=True).fetchone()
            pin = self._read_pin(conn, c) if c.pinned else None
        except psycopg.Error as e:
            c.read_errors += 1
            c.note_error(e, "read")
            raise
        c.reads += 1
        c.read_ports[row[6]] = c.read_ports.get(row[6], 0) + 1
        _expect(c, "read nonce", row[0], nonce)
        _expect(c, "read application_name", row[1], c.appname)
        # Outside a transaction: no transaction-local setting of anyone's,
        # and no transaction id yet (not inside someone's open write).
        _expect(c, "read owner (left by another transaction)", row[2], "")
        _expect(c, "read in a transaction of its own", row[4], True)
        _expect(c, "read padding", row[5], nonce[-1] * pad)
        _expect(c, "read session setting", row[7], c.session)
        _expect(c, "read prepared statement", mine, (nonce, c.index))
        if c.pinned:
            _expect(c, "read advisory locks (pinned)", row[8], f"{c.lock_class}:{c.lock_objid}")
            _expect(c, "read own temporary table", row[9], 1)
            _expect(c, "read temporary table's nonce", pin, [(c.pin_nonce,)])
        else:
            _expect(c, "read advisory locks (none taken)", row[8], None)
            _expect(c, "read no temporary table (none made)", row[9], 0)
        if not low <= row[3] <= high:
            c.bad_reads.append(f"{row[3]} rows, expected {low}..{high}")

    @staticmethod
    def _read_pin(conn, c):
        """A pinned client's temporary table. Its state may go only with its
        connection: when the server it is pinned to is lost, sluice closes
        the client's connection with an error (08006 "server conn crashed?",
        or 08007 if a request was in flight; docs/pooling.md: the client is
        pinned to that server until it disconnects), and the client
        reconnects and makes new state. So an error here that leaves the
        connection open is not a fault the client was told of: the table is
        gone under a live connection (the client was moved to another
        server): _read counts it in mixed, as it does an answer without the
        client's lock."""
        try:
            return conn.execute("SELECT nonce FROM chaos_pin").fetchall()
        except psycopg.errors.UndefinedTable:
            if conn.broken or conn.closed:
                raise
            c.pin_lost += 1
            return "chaos_pin gone, the connection kept"

    # ------------------------------------------------------------ checker

    def check(self, conn):
        """Counts after the run, from the primary (conn: direct): (counts,
        errors by phase:sqlstate, a message of each, details of what failed)."""
        # A COPY's rows are nonce/0, nonce/1, ...: present counts them by nonce.
        present = {}
        for (rid,) in conn.execute(f"SELECT id FROM {TABLE} WHERE run = %s",
                                   (self.run,)).fetchall():
            base = rid.split("/", 1)[0]
            present[base] = present.get(base, 0) + 1
        counts = dict(operations=0, writes=0, acknowledged=0, failed=0, unknown=0,
                      unknown_committed=0, lost=0, phantom=0, mixed=0, garbled=0, bad_reads=0,
                      reads=0, connects=0, copies=0, partial=0, unknown_08007=0, unflagged_commits=0,
                      pinned_clients=0, pinned_reads=0, pin_lost=0, read_ports={})
        sent = set()
        details = []
        errors = {}
        messages = {}
        for c in self.clients:
            counts["operations"] += c.operations
            counts["reads"] += c.reads
            counts["connects"] += c.connects
            counts["mixed"] += len(c.mixed)
            counts["pinned_clients"] += c.pinned
            counts["pinned_reads"] += c.reads if c.pinned else 0
            counts["pin_lost"] += c.pin_lost
            counts["garbled"] += len(c.garbled)
            counts["bad_reads"] += len(c.bad_reads)
            details += [f"client {c.index}: {m}"
                        for m in c.mixed[:3] + c.garbled[:3] + c.bad_reads[:3]]
            for k, v in c.errors.items():
                errors[k] = errors.get(k, 0) + v
                messages.setdefault(k, c.messages[k])
            counts["unknown_08007"] += sum(v for k, v in c.errors.items()
                                           if k in ("commit:08007", "copy:08007"))
            for nonce, outcome in c.outcomes.items():
                sent.add(nonce)
                counts["writes"] += 1
                if nonce in c.copies:
                    counts["copies"] += 1
                    if present.get(nonce, 0) not in (0, c.copies[nonce]):
                        counts["partial"] += 1
                        details.append(f"COPY {nonce}: {present[nonce]} of its "
                                       f"{c.copies[nonce]} rows committed")
                if outcome == "committed":
                    counts["acknowledged"] += 1
                    if nonce not in present:
                        counts["lost"] += 1
                        details.append(f"lost: {nonce}")
                elif outcome == "failed":
                    counts["failed"] += 1
                    if nonce in present:
                        counts["phantom"] += 1
                        details.append(f"reported failed but committed: {nonce}")
                else:
                    counts["unknown"] += 1
                    counts["unknown_committed"] += nonce in present
                    why = c.unknown_why.get(nonce, "")
                    if nonce in present and why.split(":")[-1] not in TOLD_UNKNOWN:
                        counts["unflagged_commits"] += 1
                        details.append(f"committed, but its client was told {why}: {nonce}")
        for c in self.clients:
            for port, n in c.read_ports.items():
                counts["read_ports"][port] = counts["read_ports"].get(port, 0) + n
        strangers = set(present) - sent
        counts["phantom"] += len(strangers)
        details += [f"never sent but present: {n}" for n in sorted(strangers)[:5]]
        return counts, errors, messages, details[:40]


def wait_primary_up(cluster, timeout=60):
    def up():
        try:
            with cluster.primary_conn() as conn:
                return not conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]
        except psycopg.Error:
            return False
    wait_until(up, timeout, "the primary to accept connections", 0.2)


# ------------------------------------------------------------ one scenario

CHAOS_SECONDS = float(os.environ.get("CHAOS_SECONDS", "12"))
CHAOS_CLIENTS = int(os.environ.get("CHAOS_CLIENTS", "50"))
HEALED_SECONDS = 5  # load after the last heal, which must commit again


CONNECT_TIMEOUT = 2  # server_connect_timeout of the scenarios' poolers


def chaos_config(port, host="127.0.0.1", replica_ports=None, **extra):
    """The scenarios' pooler: mydb on host:port (a node or a proxy of it),
    50 clients sharing 10 servers; with replica_ports, those replicas and
    the read/write split with read_your_writes = user."""
    db = f"host={host} port={port} dbname=mydb"
    general = {
        "default_pool_size": 10,  # 50 clients on 10 servers: sessions are shared
        "reserve_pool_size": 0,
        "max_client_conn": 500,
        "server_connect_timeout": CONNECT_TIMEOUT,
        "server_login_retry": 1,
        "query_wait_timeout": 30,
    }
    if replica_ports:
        db += " replicas=" + ",".join(f"127.0.0.1:{p}" for p in replica_ports)
        general.update(read_write_split="on", read_your_writes="user",
                       replica_check_interval="0.5", replica_ban_time="2")
    general.update(extra)
    return {"databases": {"mydb": db}, "pgbouncer": general}


def run_checked(name, s, cluster, user, faults, seconds=None, workload=None, strict=(),
                on_start=None):
    """The scenario name: CHAOS_CLIENTS clients (Workload(**workload)) through
    the pooler s as user while faults(deadline) runs for `seconds`
    (CHAOS_SECONDS), then HEALED_SECONDS of load after the heal. The checker
    then reads the table on cluster's primary; the counts are printed and
    appended to $CHAOS_REPORT. Asserts lost = phantom = mixed = garbled =
    bad_reads = partial = unflagged_commits = 0, no client hung, commits after the heal; and
    that each count named in strict is 0 (failed, unknown, read_errors: a
    fault that must cost the clients nothing). faults returns a dict of its
    own counts, merged into the report. Returns (report, workload)."""
    seconds = CHAOS_SECONDS if seconds is None else seconds
    with cluster.primary_conn() as conn:
        create_table(conn)
    w = Workload(lambda app: s.dsn(user=user, application_name=app), CHAOS_CLIENTS,
                 **(workload or {})).start()
    if on_start:
        on_start(w)
    started = time.monotonic()
    try:
        fault_counts = faults(started + seconds)
    finally:
        healed_at = sum(c.n_committed for c in w.clients)
        time.sleep(HEALED_SECONDS)
        after_heal = sum(c.n_committed for c in w.clients) - healed_at
        hung = w.stop()
    wait_primary_up(cluster)
    with cluster.primary_conn() as conn:
        counts, errors, messages, details = w.check(conn)
    counts["read_errors"] = sum(c.read_errors for c in w.clients)
    counts["reconnects"] = counts["connects"] - len(w.clients)
    report = dict(scenario=name, seconds=seconds, clients=CHAOS_CLIENTS,
                  elapsed=round(time.monotonic() - started, 1), **fault_counts, **counts,
                  committed_after_heal=after_heal, hung=len(hung), errors=errors)
    print(f"\nchaos {name}: " + json.dumps(report))
    if os.environ.get("CHAOS_REPORT"):
        with open(os.environ["CHAOS_REPORT"], "a") as f:
            f.write(json.dumps(report) + "\n")
    print("  " + "\n  ".join(f"{k}: {m}" for k, m in sorted(messages.items())))
    why = f"{json.dumps(report)}\n" + "\n".join(details) + "\n" + s.log_tail(30)
    for key in ("lost", "mixed", "garbled", "phantom", "bad_reads", "partial",
                "unflagged_commits") + tuple(strict):
        assert counts[key] == 0, f"{key} = {counts[key]}\n{why}"
    assert not hung, f"clients {hung} still busy at the end\n{why}"
    assert counts["acknowledged"] > 0, why
    assert after_heal > 0, f"nothing committed in the {HEALED_SECONDS} s after the heal\n{why}"
    return report, w
