#!/usr/bin/python3
"""RSS cost of idle, logged-in clients on a running pooler.

usage: bench/idle_memory.py PORT N PID [USER] [DBNAME]

Logs in one client (so the pool exists), reads the pooler's VmRSS, logs in N
more clients with trust auth and leaves them idle, reads VmRSS again, and
prints the difference per client. The pooler must use auth_type trust (or
any) for USER, and its max_client_conn and open-files limit must allow N.
"""
import resource
import socket
import struct
import sys
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def login(port, packet):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(packet)
    buf = b""
    while not buf.endswith(b"Z\0\0\0\x05I"):
        data = s.recv(4096)
        if not data:
            raise RuntimeError(f"connection closed after {buf[:200]!r}")
        buf += data
    return s


def main():
    port, n, pid = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    user = sys.argv[4] if len(sys.argv) > 4 else "trust_user"
    db = sys.argv[5] if len(sys.argv) > 5 else "mydb"
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    params = f"user\0{user}\0database\0{db}\0\0".encode()
    packet = struct.pack("!ii", 8 + len(params), 196608) + params
    socks = [login(port, packet)]
    time.sleep(0.5)
    base = rss_kib(pid)
    for _ in range(n):
        socks.append(login(port, packet))
    time.sleep(1)
    after = rss_kib(pid)
    print(f"baseline {base} KiB, after {n} idle clients {after} KiB, "
          f"{(after - base) * 1024 / n:.0f} bytes per client")


if __name__ == "__main__":
    main()
