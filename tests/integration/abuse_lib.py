"""Tools of the abusive-client suite (issue 17 item 3, test_abuse.py).

GoodClients: well-behaved clients, each on its own logged-in connection,
sending a small query at a steady pace and timing it; every answer must
carry the client's own nonce. Paced rather than as fast as possible, so
that their latency measures how long sluice makes a query wait, not how
much CPU the box has left (a closed loop on a shared 2-core machine would
slow down with any other load, abusive or not).

RssSampler: sluice's resident memory and open files, sampled in a thread.

Abuser: runs one abusive scenario in a separate process (this file's
__main__), so that its work does not take the GIL from the clients being
timed. The storms of many connections are C (tests/tools: slowloris.c,
and connstorm.c for churn and the cancel storm's random cancels): a Python
loop could make them only in bursts, and took a core from the timed
clients. It prints "ready" once the abuse is in place (e.g. every
slowloris connection is open) and a JSON line of counts when it gets
SIGTERM or its time is up."""

import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from sluice_fixture import (CANCEL_REQUEST_CODE, RawConn, first_error,  # noqa: E402
                            raise_nofile_limit, startup_packet)


def percentile(values, p):
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


class GoodClients:
    """n clients, each sending `SELECT <nonce>` every `period` seconds on its
    own connection. measure(seconds) -> list of latencies in seconds; errors
    (wrong answers, server errors, lost connections) are kept in .errors.

    The connections are logged in here and timed by tests/tools/goodclients.c,
    which gets them open: one thread of C, so that what is measured is the
    pooler's delay, not Python's GIL (50 threads took turns at it, and one
    that held it when the box was busy stalled them all)."""

    def __init__(self, port, n=50, user="md5_user", period=0.05):
        self.port, self.user, self.period = port, user, period
        self.conns = [RawConn(port, timeout=30).login(user) for _ in range(n)]
        self.errors = []
        self.sent = []  # of the last measure()
        self.queries = 0
        self.runs = 0

    def measure(self, seconds):
        self.runs += 1
        fds = [c.sock.fileno() for c in self.conns]
        assert not any(c.buf for c in self.conns), "unread bytes before timing"
        out = subprocess.run([native_tool("goodclients"), str(seconds), str(self.period),
                              str(self.runs), ",".join(map(str, fds))],
                             pass_fds=fds, capture_output=True, text=True, timeout=seconds + 90)
        assert out.returncode == 0, out.stderr
        result = json.loads(out.stdout)
        self.errors += result["errors"]
        latencies = [us / 1e6 for us in result["latencies_us"]]
        # When each was sent (time.monotonic()'s clock): per-second figures
        # by send time, and slow queries matched with a perf trace.
        self.sent = [us / 1e6 for us in result["sent_us"]]
        self.queries += len(latencies)
        return latencies

    def fill_pool(self, counter, size, hold=0.3, rounds=20):
        """Opens every server of the clients' pool (size) before anything is
        measured: size of the clients at once run pg_sleep(hold), each
        holding a server, until the primary has size backends of their
        user. Otherwise the pool grows while the
        windows run, a backend start at a time (about 30 ms of a core each
        on these machines), in one window or the other by chance; that
        noise was as large as the abuse being measured."""
        conns = self.conns[:size]
        for _ in range(rounds):
            n = counter.execute("SELECT count(*)::int FROM pg_stat_activity WHERE usename = %s",
                                (self.user,)).fetchone()[0]
            if n >= size:
                return n
            for conn in conns:
                conn.send_query(f"SELECT pg_sleep({hold})")
            for conn in conns:
                _, error, _ = conn.read_result()
                assert error is None, error
        raise AssertionError(f"the pool of {self.user} did not reach {size} servers: {n}")

    def close(self):
        for conn in self.conns:
            conn.close()


def open_files(pid):
    """pid's open files. Linux 6.2+ gives the count as the size of
    /proc/PID/fd, in microseconds; listing it takes 13 ms at 10,000 fds,
    10 times a second in RssSampler, with the GIL the timed clients need
    (it showed as a millisecond of their p99 under slowloris)."""
    try:
        n = os.stat(f"/proc/{pid}/fd").st_size
        return n if n > 0 else len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def rss_kib_or_zero(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class RssSampler:
    """Peak VmRSS (KiB) and open files of pid, every `interval` seconds while
    the with-block runs."""

    def __init__(self, pid, interval=0.1):
        self.pid, self.interval = pid, interval
        self.peak_kib = 0
        self.peak_files = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._done.is_set():
            self.peak_kib = max(self.peak_kib, rss_kib_or_zero(self.pid))
            self.peak_files = max(self.peak_files, open_files(self.pid))
            self._done.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join(5)


TOOLS_SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools")
TOOLS_BUILD = os.path.join(TOOLS_SRC, "..", "..", "build", "tools")


def native_tool(name):
    """tests/tools/NAME.c, compiled (once, and again when the source is
    newer) into build/tools/NAME: abusers whose own CPU must not be what
    the well-behaved clients' latency measures."""
    src, out = os.path.join(TOOLS_SRC, f"{name}.c"), os.path.join(TOOLS_BUILD, name)
    newest = max(os.path.getmtime(src), os.path.getmtime(os.path.join(TOOLS_SRC, "tool_util.h")))
    if not os.path.exists(out) or os.path.getmtime(out) < newest:
        os.makedirs(TOOLS_BUILD, exist_ok=True)
        tmp = f"{out}.{os.getpid()}.tmp"  # two test runs may build it at once
        subprocess.run(["cc", "-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-o", tmp, src, "-lm"],
                       check=True)
        os.replace(tmp, out)
    return os.path.abspath(out)


class Abuser:
    """One abusive scenario in a child process: Abuser(name, port, **args).
    start() returns once the child says it is ready; stop() sends SIGTERM
    and returns the child's counts (a dict)."""

    def __init__(self, scenario, port, **args):
        if scenario == "slowloris":
            self.cmd = [native_tool("slowloris"), str(port), str(args["clients"]),
                        startup_packet(args.get("user", "md5_user")).hex()]
        elif scenario == "churn":
            self.cmd = [native_tool("connstorm"), "churn", str(port), str(args["rate"]),
                        startup_packet(args.get("user", "md5_user")).hex()]
        else:
            self.cmd = [sys.executable, os.path.abspath(__file__), scenario, str(port),
                        json.dumps(args)]
        self.proc = None

    def start(self, timeout=120):
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, text=True)
        ready = [None]
        reader = threading.Thread(target=lambda: ready.__setitem__(0, self.proc.stdout.readline()),
                                  daemon=True)
        reader.start()
        reader.join(timeout)
        if (ready[0] or "").strip() != "ready":
            self.proc.kill()
            raise AssertionError(f"abuser {self.cmd[2]} not ready after {timeout}s: {ready[0]!r}")
        return self

    def stop(self, timeout=60):
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, f"abuser {self.cmd[2]} exited {self.proc.returncode}"
        return json.loads(out.strip().splitlines()[-1])


# ---- the scenarios (run in the child) ----------------------------------------

class _Stop:
    flag = False


def _on_term(*_):
    _Stop.flag = True


def _garbage(rng):
    """Random bytes: half of them raw, half framed as one message of a random
    type with a valid length, so that both the framing and every message
    handler of a logged-in client see them."""
    body = rng.randbytes(rng.randrange(0, 2048))
    if rng.random() < 0.5:
        return rng.randbytes(rng.randrange(1, 4096))
    return bytes([rng.randrange(256)]) + struct.pack("!i", 4 + len(body)) + body


def _outcome(conn, wait):
    """What the pooler did: "error" (ErrorResponse, then closed), "closed"
    (closed without one), "open" (still open after wait seconds)."""
    data = conn.read_until_closed(wait)
    if data is None:
        return "open"
    return "error" if first_error(data) else "closed"


def garbage(port, clients, user="plain_user", seed=17, wait=3):
    """clients logged-in connections, each then sends random bytes (_garbage).
    Counts how many connections were ended with an ErrorResponse, closed
    without one, or left open (their bytes were a valid partial message)."""
    rng = random.Random(seed)
    conns = [RawConn(port, timeout=30).login(user) for _ in range(clients)]
    print("ready", flush=True)
    sent = []
    for conn in conns:
        sent.append(_garbage(rng))
        try:
            conn.send(sent[-1])
        except OSError:
            pass
    # closed_terminate: closed without an error after a first byte of 'X'
    # (Terminate), which asks for just that.
    counts = {"clients": clients, "error": 0, "closed": 0, "closed_terminate": 0, "open": 0}
    deadline = time.monotonic() + wait
    for conn, data in zip(conns, sent):
        what = _outcome(conn, max(0.05, deadline - time.monotonic()))
        counts["closed_terminate" if what == "closed" and data[:1] == b"X" else what] += 1
        conn.close()
    while not _Stop.flag:
        time.sleep(0.05)
    return counts


def huge_length(port, clients, user="plain_user", wait=10):
    """clients connections that declare a 1 GB message: a third in the
    startup packet, a third in the password message, a third in a Query
    after login. Counts the outcomes (_outcome) per kind and the SQLSTATEs."""
    kinds = ["startup", "password", "query"]
    conns = []
    for i in range(clients):
        conn = RawConn(port, timeout=30)
        kind = kinds[i % 3]
        if kind == "startup":
            conn.send(struct.pack("!ii", 1 << 30, 196608) + b"user\0")
        elif kind == "password":
            conn.send(startup_packet(user))
            conn.read_msg()  # the md5 or cleartext request
            conn.send(b"p" + struct.pack("!i", 1 << 30) + b"secret")
        else:
            conn.login(user)
            conn.send(b"Q" + struct.pack("!i", 1 << 30) + b"SELECT '")
        conns.append((kind, conn))
    print("ready", flush=True)
    counts, codes = {}, {}
    deadline = time.monotonic() + wait
    for kind, conn in conns:
        data = conn.read_until_closed(max(0.05, deadline - time.monotonic()))
        what = "open" if data is None else ("error" if first_error(data) else "closed")
        counts[f"{kind}_{what}"] = counts.get(f"{kind}_{what}", 0) + 1
        if data and first_error(data):
            code = first_error(data).get("C")
            codes[f"{kind}_{code}"] = codes.get(f"{kind}_{code}", 0) + 1
        conn.close()
    while not _Stop.flag:
        time.sleep(0.05)
    return {"clients": clients, **counts, "codes": codes}


def non_reader(port, clients, user="plain_user", mbytes=200):
    """clients connections, each asking for an mbytes MB result and then
    never reading. Counts, at the end, how many the pooler had closed."""
    conns = []
    for _ in range(clients):
        conn = RawConn(port, timeout=30)
        conn.login(user)
        conn.send_query(f"SELECT repeat('x', 1000) FROM generate_series(1, {mbytes * 1000})")
        conns.append(conn)
    print("ready", flush=True)
    while not _Stop.flag:
        time.sleep(0.05)
    # Closed by the pooler: what it had sent drains, then EOF (read fast: a
    # closed one has at most a few MB in the socket buffers).
    closed = sum(1 for conn in conns if _drained(conn))
    for conn in conns:
        conn.close()
    return {"clients": clients, "closed_by_pooler": closed}


def _drained(conn, timeout=2.0):
    conn.sock.settimeout(timeout)
    try:
        while True:
            if not conn.sock.recv(1 << 20):
                return True
    except (socket.timeout, BlockingIOError):
        return False
    except OSError:
        return True


def _send_cancel(port, pid, secret):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(struct.pack("!iiii", 16, CANCEL_REQUEST_CODE, pid, secret))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        return True
    except OSError:
        return False


def cancel_storm(port, rate, valid_rate=50, user="plain_user"):
    """CancelRequests at `rate` a second with random keys (which match no
    client: tests/tools/connstorm.c, paced evenly), and `valid_rate` a
    second with the key of the abuser's own client, which runs pg_sleep(1)
    in a loop: those cancel its query. Counts: cancels sent, its queries
    cancelled and completed."""
    victim = RawConn(port, timeout=30).login(user)
    pid, secret = victim.backend_key
    counts = {"random": 0, "valid": 0, "victim_cancelled": 0, "victim_done": 0,
              "victim_other_errors": 0}
    stop = threading.Event()

    def victim_loop():
        while not stop.is_set():
            victim.send_query("SELECT pg_sleep(1)")
            _, error, _ = victim.read_result()
            key = ("victim_done" if error is None else
                   "victim_cancelled" if error.get("C") == "57014" else "victim_other_errors")
            counts[key] += 1

    thread = threading.Thread(target=victim_loop, daemon=True)
    thread.start()
    storm = subprocess.Popen([native_tool("connstorm"), "cancel", str(port), str(rate)],
                             stdout=subprocess.PIPE, text=True)
    assert storm.stdout.readline().strip() == "ready"
    print("ready", flush=True)
    started = time.monotonic()
    sent = 0
    while not _Stop.flag:
        due = started + (sent + 1) / valid_rate
        if time.monotonic() < due:
            time.sleep(min(0.05, due - time.monotonic()))
            continue
        sent += 1
        counts["valid"] += _send_cancel(port, pid, secret)
    storm.send_signal(signal.SIGTERM)
    storm_counts = json.loads(storm.communicate(timeout=30)[0].strip().splitlines()[-1])
    counts["random"] = storm_counts["connections"] - storm_counts["failed"]
    stop.set()
    thread.join(10)
    victim.close()
    return counts


SCENARIOS = {"garbage": garbage, "huge_length": huge_length,
             "non_reader": non_reader, "cancel_storm": cancel_storm}

if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _on_term)
    raise_nofile_limit(20000)
    result = SCENARIOS[sys.argv[1]](int(sys.argv[2]), **json.loads(sys.argv[3]))
    print(json.dumps(result), flush=True)
