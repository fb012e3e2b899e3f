"""A socket to receive systemd's notifications on (sd_notify), as systemd
binds it for a Type=notify service: tests/integration/test_notify.py and
tests/package/test_deb.py."""

import array
import os
import socket
import time


class NotifySocket:
    """An abstract-namespace datagram socket, as systemd binds; receives the
    sender's credentials (SO_PASSCRED) with each message."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.name = f"sluice-test-notify-{os.getpid()}-{time.monotonic_ns()}"
        self.sock.bind("\0" + self.name)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)

    @property
    def env(self):
        return "@" + self.name

    def recv(self, timeout=10):
        """(fields dict, sender pid) of the next datagram; raises on timeout."""
        self.sock.settimeout(timeout)
        creds = socket.CMSG_SPACE(3 * array.array("i").itemsize)
        data, ancdata, _, _ = self.sock.recvmsg(4096, creds)
        pid = None
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = array.array("i", payload[:12])[0]
        fields = dict(line.split("=", 1) for line in data.decode().split("\n") if line)
        return fields, pid

    def nothing_more(self, wait=0.3):
        self.sock.settimeout(wait)
        try:
            data = self.sock.recv(4096)
        except (socket.timeout, BlockingIOError):
            return True
        raise AssertionError(f"unexpected notification {data!r}")

    def close(self):
        self.sock.close()
