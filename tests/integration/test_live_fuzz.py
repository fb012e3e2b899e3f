"""The live-server fuzzer (issue 17 item 3): the libFuzzer corpora of
tests/fuzz/corpus, random mutations of them, and every frontend message
type, sent as a client's bytes to a running sluice (the ASan+UBSan build in
make test) in each connection state:

- startup: the first bytes on a new connection;
- auth: after the StartupMessage, when sluice asks for a password (md5) or
  a SASL exchange (scram_user: the SCRAM corpus goes in a SASLInitialResponse);
- idle: logged in, nothing in flight;
- transaction: after BEGIN (transaction pooling: a server is linked);
- copy: after COPY ... FROM STDIN was answered with CopyInResponse;
- batch: in an extended-protocol batch (Parse and Bind sent, no Sync).

Each case gets its own connection, reads what sluice answers for a moment
and closes. Afterwards: sluice still runs, a bystander connected before
still gets its answers, a new client logs in, and at teardown there is no
sanitizer report in the log (the sluice fixture). LIVE_FUZZ_MUTATIONS (3;
`make chaos`: 30) mutations per corpus input and state, LIVE_FUZZ_SEED (1)."""

import os
import random
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from sluice_fixture import (IS_PGBOUNCER, REPO, RawConn, message, query_message,
                            startup_packet)

MUTATIONS = int(os.environ.get("LIVE_FUZZ_MUTATIONS", "3"))
SEED = int(os.environ.get("LIVE_FUZZ_SEED", "1"))
CORPUS = REPO / "tests/fuzz/corpus"
FRONTEND_TYPES = b"BCdcfDEHFpPQSX"
STATES = ["startup", "auth", "idle", "transaction", "copy", "batch"]

pytestmark = [pytest.mark.skipif(IS_PGBOUNCER, reason="sluice under ASan"),
              pytest.mark.timeout(300)]


def request_client_stream(data):
    """fuzz_request's input format (a mode byte, then chunks of: whose,
    length, bytes) -> the client's bytes, concatenated."""
    out, pos = bytearray(), 1
    while pos + 2 <= len(data):
        whose, n = data[pos], data[pos + 1]
        chunk = data[pos + 2:pos + 2 + n]
        if whose & 1:
            out += chunk
        pos += 2 + n
    return bytes(out)


def sasl_initial(payload):
    body = b"SCRAM-SHA-256\0" + struct.pack("!i", len(payload)) + payload
    return message(b"p", body)


def corpus_inputs():
    """(name, bytes, states it is sent in)."""
    inputs = []
    for path in sorted((CORPUS / "fuzz_proto").iterdir()):
        inputs.append((f"proto/{path.name}", path.read_bytes(), STATES))
    for path in sorted((CORPUS / "fuzz_startup").iterdir()):
        inputs.append((f"startup/{path.name}", path.read_bytes(), STATES))
    for path in sorted((CORPUS / "fuzz_request").iterdir()):
        inputs.append((f"request/{path.name}", request_client_stream(path.read_bytes()), STATES))
    for path in sorted((CORPUS / "fuzz_scram").iterdir()):
        raw = path.read_bytes()
        inputs.append((f"scram/{path.name}", sasl_initial(raw), ["auth"]))
        inputs.append((f"scram-continue/{path.name}", message(b"p", raw), ["auth"]))
    rng = random.Random(SEED)
    for t in FRONTEND_TYPES + bytes(rng.randrange(256) for _ in range(10)):
        for body in (b"", rng.randbytes(8), rng.randbytes(300)):
            inputs.append((f"type/{chr(t) if 32 < t < 127 else t}/{len(body)}",
                           message(bytes([t]), body), STATES))
    return inputs


def mutate(data, rng):
    """A libFuzzer-like mutation: flip, overwrite, insert, delete, duplicate
    or truncate; one to four of them."""
    data = bytearray(data or b"\0")
    for _ in range(rng.randrange(1, 5)):
        op = rng.randrange(6)
        i = rng.randrange(len(data)) if data else 0
        if op == 0 and data:
            data[i] ^= 1 << rng.randrange(8)
        elif op == 1 and data:
            data[i] = rng.choice([0, 0xff, 0x7f, 0x80, rng.randrange(256)])
        elif op == 2:
            data[i:i] = rng.randbytes(rng.randrange(1, 16))
        elif op == 3 and len(data) > 1:
            del data[i:i + rng.randrange(1, 8)]
        elif op == 4:
            data[i:i] = data[i:i + rng.randrange(1, 64)]
        elif data:
            del data[i:]
    return bytes(data)


def into_state(port, state):
    """A connection in state (see the module's docstring)."""
    conn = RawConn(port, timeout=10)
    if state == "startup":
        return conn
    if state == "auth":
        conn.send(startup_packet("scram_user"))
        kind, _ = conn.read_msg()
        assert kind == b"R", kind
        return conn
    conn.login()
    if state == "transaction":
        conn.query("BEGIN")
    elif state == "copy":
        conn.send_query("COPY live_fuzz FROM STDIN")
        kind, payload = conn.read_msg()
        assert kind == b"G", (kind, payload)
    elif state == "batch":
        conn.send(message(b"P", b"\0SELECT $1::int\0\0\0") +
                  message(b"B", b"\0\0\0\0\0\1\0\0\0\0011\0\0"))
    return conn


def run_case(port, state, data):
    """Sends data in state; returns what happened: "error" (an
    ErrorResponse came), "closed" or "open"."""
    try:
        conn = into_state(port, state)
    except (OSError, AssertionError) as e:
        return f"setup failed: {e!r}"
    try:
        try:
            conn.send(data)
        except OSError:
            return "closed"
        got = conn.read_until_closed(0.3)
        if got is None:
            return "open"
        return "error" if b"E" in got[:1] or b"\0C" in got else "closed"
    finally:
        conn.close()


def test_corpora_and_mutations_in_every_state(sluice, cluster):
    with cluster.primary_conn() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS live_fuzz (a text)")
        conn.execute("GRANT ALL ON live_fuzz TO PUBLIC")
    s = sluice({"pgbouncer": {"max_client_conn": 500, "default_pool_size": 20,
                              "query_timeout": 5, "max_packet_size": "4MB"}})
    bystander = RawConn(s.port).login()
    assert bystander.query("SELECT 'before'") == [["before"]]
    rng = random.Random(SEED)
    cases = []
    for name, data, states in corpus_inputs():
        for state in states:
            cases.append((state, name, data))
            for k in range(MUTATIONS):
                cases.append((state, f"{name}~{k}", mutate(data, rng)))
    with ThreadPoolExecutor(16) as pool:
        outcomes = list(pool.map(lambda c: (c, run_case(s.port, c[0], c[2])), cases))
    failed_setup = [(c[0], c[1], o) for c, o in outcomes if o.startswith("setup failed")]
    counts = {}
    for (state, _, _), outcome in outcomes:
        counts[(state, outcome)] = counts.get((state, outcome), 0) + 1
    print(f"\nlive fuzz: {len(cases)} cases: " +
          ", ".join(f"{st}/{o}: {n}" for (st, o), n in sorted(counts.items())))
    assert s.running(), s.log_tail()
    # Setting up a case is plain protocol: it fails only if sluice stopped
    # serving (a previous case hurt it).
    assert not failed_setup, failed_setup[:5]
    assert bystander.query("SELECT 'after'") == [["after"]]
    bystander.close()
    with RawConn(s.port) as fresh:
        assert fresh.login().query("SELECT 'fresh'") == [["fresh"]]


def test_client_gone_mid_message_does_not_pass_its_server_on(sluice):
    """Regression (found by the test above): a client that sent part of a
    message (here a CopyData after a failed COPY, 12 bytes short) and
    disconnected left its server in the pool, and the next client's Query
    was read by PostgreSQL as the rest of that message (the next client got
    "server conn crashed?"). Now such a server is closed."""
    s = sluice({"pgbouncer": {"default_pool_size": 1}})
    with RawConn(s.port) as conn:
        conn.login()
        # In one packet, so that the CopyData goes to the server the COPY
        # is on (once idle, sluice drops a late CopyData itself).
        conn.send(query_message("COPY no_such_table FROM STDIN") +
                  b"d" + struct.pack("!i", 4 + 45) + b"x" * 33)
        _, error, _ = conn.read_result()
        assert error and error["C"] == "42P01"
        time.sleep(0.2)  # the 33 bytes reach the server before the close
    for _ in range(3):
        with RawConn(s.port) as conn:
            assert conn.login().query("SELECT 'next'") == [["next"]]
    s.wait_for_log("closing because: client disconnect in the middle of a message")
