"""Malformed and unusual input on raw sockets. Each bad client gets an error
or a closed connection, and touches nobody else: a normal client connected
before keeps working, and new clients get in."""

import hashlib
import os
import socket
import struct
import time

import psycopg
import pytest

from sluice_fixture import (GSSENC_REQUEST_CODE, IS_PGBOUNCER, PASSWORDS, SSL_REQUEST_CODE, RawConn,
                            ServerError, first_error, md5_secret, message, query_message,
                            startup_packet)


@pytest.fixture
def pooler(sluice):
    """A pooler with a small max_packet_size and a bystander client."""
    s = sluice({"pgbouncer": {"max_packet_size": 65536}})
    bystander = s.connect()
    assert bystander.execute("SELECT 1").fetchone() == (1,)
    yield s
    # The bystander still works and new clients get in.
    assert bystander.execute("SELECT 2").fetchone() == (2,)
    bystander.close()
    with s.connect() as conn:
        assert conn.execute("SELECT 3").fetchone() == (3,)


def assert_closed(conn, timeout=3):
    """The pooler closes the connection within timeout; returns what it sent."""
    data = conn.read_until_closed(timeout)
    assert data is not None, f"connection still open after {timeout}s"
    return data


def test_truncated_startup_then_close(pooler):
    with RawConn(pooler.port) as conn:
        conn.send(startup_packet("md5_user")[:11])
    with RawConn(pooler.port) as conn:
        conn.send(struct.pack("!i", 100))
        conn.abort()


def test_truncated_startup_left_open_does_not_block_others(pooler):
    """A client stuck halfway through its startup packet does not stop anyone."""
    with RawConn(pooler.port) as stuck:
        stuck.send(startup_packet("md5_user")[:11])
        with pooler.connect() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)


def test_message_over_max_packet_size(pooler):
    with RawConn(pooler.port) as conn:
        conn.login()
        assert conn.query("SELECT 1") == [["1"]]
        # Only the header and a little of a 1 MB Query message.
        conn.send(b"Q" + struct.pack("!i", 1_000_000) + b"SELECT '" + b"x" * 1000)
        data = assert_closed(conn)
        error = first_error(data)
        assert error is not None, f"no ErrorResponse before the close: {data[:200]!r}"
        assert error["S"] in ("FATAL", "ERROR")


def test_message_under_max_packet_size_works(pooler):
    with RawConn(pooler.port) as conn:
        conn.login()
        literal = "y" * 60_000
        assert conn.query(f"SELECT length('{literal}')") == [["60000"]]


@pytest.mark.parametrize("length", [20_000, 1 << 30, 2])
def test_bad_startup_length(pooler, length):
    with RawConn(pooler.port) as conn:
        conn.send(struct.pack("!ii", length, 196608) + b"user\0md5_user\0\0")
        assert_closed(conn)


def test_unsupported_protocol_version(pooler):
    with RawConn(pooler.port) as conn:
        conn.send(startup_packet("md5_user", version=2 << 16))
        data = assert_closed(conn)
        error = first_error(data)
        # PgBouncer 1.18 says "old V2 protocol not supported".
        expected = "protocol not supported" if IS_PGBOUNCER else "unsupported frontend protocol"
        assert error and expected in error["M"], data[:300]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_garbage_bytes(pooler, seed):
    garbage = os.urandom(4096)
    with RawConn(pooler.port) as conn:
        try:
            conn.send(garbage)
        except (BrokenPipeError, ConnectionResetError):
            return
        assert_closed(conn)


def test_garbage_after_login(pooler):
    with RawConn(pooler.port) as conn:
        conn.login()
        conn.send(b"\x00" + struct.pack("!i", 3) + b"junk")
        assert_closed(conn)


def sluice_reads(pid):
    """Read syscalls sluice made so far (/proc/PID/io syscr)."""
    with open(f"/proc/{pid}/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("syscr:"))


def test_startup_and_password_a_byte_at_a_time(pooler):
    """A client that sends its startup packet and its password message one
    byte at a time logs in. sluice reads each about three times, not once a
    byte (SO_RCVLOWAT while the message is incomplete: a slowloris costs it
    a few wakeups, docs/reliability.md)."""
    packet = startup_packet("md5_user")
    with RawConn(pooler.port) as conn:
        before = None if IS_PGBOUNCER else sluice_reads(pooler.pid)
        for i in range(len(packet)):
            conn.send(packet[i:i + 1])
            time.sleep(0.005)
        kind, payload = conn.read_msg()
        assert kind == b"R" and struct.unpack("!i", payload[:4])[0] == 5, (kind, payload)
        password = ("md5" + hashlib.md5(md5_secret("md5_user", PASSWORDS["md5_user"])[3:].encode()
                                        + payload[4:8]).hexdigest()).encode() + b"\0"
        for byte in message(b"p", password):
            conn.send(bytes([byte]))
            time.sleep(0.005)
        conn.finish_login("md5_user")
        if before is not None:
            sent = len(packet) + 5 + len(password)
            assert sluice_reads(pooler.pid) - before <= 10, f"{sent} bytes sent one at a time"
        assert conn.query("SELECT 'dripped'") == [["dripped"]]


def test_unfinished_startup_packets_hold_no_buffers(sluice):
    """200 clients that sent part of their startup packet (1 byte, then 8:
    its length and code) hold no read buffer in sluice: the first packet
    stays in the kernel until it is whole (SHOW MEM's iobuf_cache `used`
    does not grow with them; it grew by one per client, 4 KiB each, before).
    Each one finishing its packet then logs in."""
    s = sluice({"pgbouncer": {"max_client_conn": 400}})
    packet = startup_packet("md5_user")

    def iobufs_used():
        with psycopg.connect(s.dsn(user="sluice", dbname="pgbouncer"), autocommit=True) as conn:
            rows = conn.execute("SHOW MEM").fetchall()
        return {r[0]: r[2] for r in rows}["iobuf_cache"]

    before = iobufs_used()
    conns = [RawConn(s.port) for _ in range(200)]
    try:
        for conn in conns:
            conn.send(packet[:1])
        time.sleep(0.3)
        one_byte = iobufs_used()
        for conn in conns:
            conn.send(packet[1:8])
        time.sleep(0.3)
        eight_bytes = iobufs_used()
        assert one_byte - before < 20 and eight_bytes - before < 20, (before, one_byte, eight_bytes)
        for conn in conns[:5]:
            conn.send(packet[8:])
            kind, payload = conn.read_msg()
            assert kind == b"R" and struct.unpack("!i", payload[:4])[0] == 5, (kind, payload)
    finally:
        for conn in conns:
            conn.close()
    # The rest closed with their packets unfinished: sluice sees each EOF
    # (a peek still returns the bytes before it) and lets them go, rather
    # than waking for them again and again.
    time.sleep(0.5)
    before = cpu_seconds(s.pid)
    time.sleep(1)
    assert cpu_seconds(s.pid) - before < 0.3, "sluice kept busy after the clients closed"
    with psycopg.connect(s.dsn(user="sluice", dbname="pgbouncer"), autocommit=True) as admin:
        assert len(admin.execute("SHOW CLIENTS").fetchall()) == 1  # the console itself


def cpu_seconds(pid):
    """utime + stime of pid, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_unknown_message_type_refused_without_a_server(sluice):
    """A logged-in client's message of a type no PostgreSQL backend takes
    ends that client with PostgreSQL's own error (08P01), and is not
    forwarded: the server would end its session (FATAL), and replacing it
    costs a fork and a login (issue 17: 1,000 such clients churned ~120
    servers)."""
    s = sluice({"pgbouncer": {"default_pool_size": 1}})

    def refused(prefix):
        with RawConn(s.port) as bad:
            bad.login()
            bad.send(prefix + b"Z" + struct.pack("!i", 4))
            error = first_error(assert_closed(bad))
            assert error and error["C"] == "08P01", error
            assert error["M"] == "invalid frontend message type 90", error

    with RawConn(s.port) as first:
        pid = first.login().query("SELECT pg_backend_pid()")
        refused(b"")
        assert first.query("SELECT pg_backend_pid()") == pid  # the one server lives on
        # In a transaction too (its server then goes, as with any client that
        # leaves mid-transaction).
        refused(query_message("BEGIN"))
        assert first.query("SELECT 1") == [["1"]]


@pytest.mark.skipif(IS_PGBOUNCER, reason="sluice's own check (PgBouncer forwards them)")
def test_malformed_message_refused_without_a_server(sluice):
    """A whole message of a shape PostgreSQL refuses ("invalid message
    format": a Sync or Flush with a body, a Query without its NUL, a
    Describe of no known kind, an Execute without its row count) ends that
    client with 08P01 and takes no server: random bytes from a client cost
    no backend, and sluice never meets an error answering a Flush."""
    s = sluice({"pgbouncer": {"default_pool_size": 1}})
    bad_messages = [message(b"S", b"junk"), message(b"H", b"\0"),
                    message(b"Q", b"SELECT 1"), message(b"D", b"Xname\0"),
                    message(b"E", b"portal\0\0")]

    def assignments():
        with psycopg.connect(s.dsn(user="sluice", dbname="pgbouncer"),
                             autocommit=True) as admin:
            cur = admin.execute("SHOW STATS")
            col = [d.name for d in cur.description].index("total_server_assignment_count")
            return {row[0]: row[col] for row in cur.fetchall()}["mydb"]

    def refused(msg, in_transaction=False):
        with RawConn(s.port) as bad:
            bad.login()
            if in_transaction:
                bad.query("BEGIN")
            bad.send(msg)
            error = first_error(assert_closed(bad))
            assert error and error["C"] == "08P01", (msg, error)
            assert error["M"] == "invalid message format", (msg, error)

    with RawConn(s.port) as first:
        pid = first.login().query("SELECT pg_backend_pid()")
        before = assignments()
        for msg in bad_messages:
            refused(msg)
        assert assignments() == before  # no server lent for any of them
        assert first.query("SELECT pg_backend_pid()") == pid
        # In a transaction: refused by sluice (closed; PostgreSQL would have
        # answered an error and kept the session), and the server, rolled
        # back, serves the next client.
        refused(message(b"H", b"junk"), in_transaction=True)
        assert first.query("SELECT pg_backend_pid()") == pid


def test_ssl_request_refused_then_login(pooler):
    with RawConn(pooler.port) as conn:
        conn.send(struct.pack("!ii", 8, SSL_REQUEST_CODE))
        assert conn.read_bytes(1) == b"N"
        conn.login()
        assert conn.query("SELECT 'plain'") == [["plain"]]


@pytest.mark.skipif(IS_PGBOUNCER, reason="PgBouncer 1.18 does not answer GSSENCRequest")
def test_gssenc_request_refused_then_login(pooler):
    with RawConn(pooler.port) as conn:
        conn.send(struct.pack("!ii", 8, GSSENC_REQUEST_CODE))
        assert conn.read_bytes(1) == b"N"
        conn.login()
        assert conn.query("SELECT 'plain'") == [["plain"]]


def test_startup_without_user(pooler):
    with RawConn(pooler.port) as conn:
        body = b"database\0mydb\0\0"
        conn.send(struct.pack("!ii", 8 + len(body), 196608) + body)
        data = assert_closed(conn)
        assert first_error(data) is not None, data[:200]


def test_unknown_database(pooler):
    with RawConn(pooler.port) as conn:
        # PgBouncer asks for the password first; sluice refuses at once.
        with pytest.raises(ServerError, match="no_such_db"):
            conn.login(dbname="no_such_db")
        assert_closed(conn)


def test_many_bad_clients_at_once(pooler):
    socks = []
    try:
        for i in range(50):
            s = socket.create_connection(("127.0.0.1", pooler.port), timeout=5)
            socks.append(s)
            s.sendall([b"GET / HTTP/1.0\r\n\r\n", os.urandom(64),
                       startup_packet("md5_user")[:7]][i % 3])
        with pooler.connect() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        for s in socks:
            s.close()


def test_terminate_message_closes_cleanly(pooler):
    with RawConn(pooler.port) as conn:
        conn.login()
        conn.send(message(b"X"))
        assert assert_closed(conn) == b""


def test_pipelined_queries_in_one_packet(pooler):
    with RawConn(pooler.port) as conn:
        conn.login()
        conn.send(b"".join(query_message(f"SELECT {i}") for i in range(20)))
        for i in range(20):
            rows, error, status = conn.read_result()
            assert (rows, error) == ([[str(i)]], None)


@pytest.mark.parametrize("case", ["too-long", "bad-length"])
def test_bad_message_to_the_admin_console(pooler, case):
    """The console reads its messages like every other reader: one over
    max_packet_size, or with a length no message can have, ends that console
    session with an ErrorResponse; another console session goes on."""
    with RawConn(pooler.port) as other, RawConn(pooler.port) as conn:
        other.login(user="sluice", dbname="pgbouncer")
        conn.login(user="sluice", dbname="pgbouncer")
        assert conn.query("SHOW VERSION")
        if case == "too-long":
            conn.send(b"Q" + struct.pack("!i", 1_000_000) + b"SHOW " + b"x" * 1000)
        else:
            conn.send(b"Q" + struct.pack("!i", 2))
        data = assert_closed(conn)
        error = first_error(data)
        assert error is not None, f"no ErrorResponse before the close: {data[:200]!r}"
        assert error["S"] == "FATAL"
        if not IS_PGBOUNCER:
            assert error["C"] == "08P01"
            assert error["M"] == ("message too long (max_packet_size)" if case == "too-long"
                                  else "invalid message length")
        assert other.query("SHOW VERSION")
