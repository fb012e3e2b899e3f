"""The fixture itself: a sanitizer report in the pooler's log fails the test,
every generated config carries the suite's workers setting, and a port that
another process takes does not fail a start."""

import socket
import subprocess
import sys

import pytest

from sluice_fixture import (IS_PGBOUNCER, RUN_AS, TEST_WORKERS, WORKERS_LINE, Sluice,
                            chown_run_as, render_config)


@pytest.mark.parametrize("report", [
    "WARNING: ThreadSanitizer: data race (pid=4242)",
    "==4242==ERROR: AddressSanitizer: heap-use-after-free on address 0x6020",
    "src/pool.c:10:5: runtime error: signed integer overflow",
], ids=["tsan", "asan", "ubsan"])
def test_sanitizer_report_in_log_fails_stop(cluster, run_dir, request, report):
    """Teardown (Sluice.stop) raises when the log holds a sanitizer report,
    even though the pooler exits cleanly on SIGTERM."""
    workdir = run_dir / request.node.name.replace("[", "-").rstrip("]")
    workdir.mkdir()
    chown_run_as(workdir)
    s = Sluice(cluster, workdir).start()
    try:
        with s.connect() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        with open(s.log_path, "a") as log:
            log.write(report + "\n")
    finally:
        with pytest.raises(AssertionError, match="sanitizer report in the log"):
            s.stop()
    assert not s.running()


def test_workers_in_every_generated_config():
    """workers = $SLUICE_TEST_WORKERS (default 1) in dict and full-text
    configs, unless the test sets it; PgBouncer's configs never get it."""
    assert "workers = 3\n" in render_config(None, 3)
    assert "workers" not in render_config(None, None)
    assert "workers = 2\n" in render_config({"pgbouncer": {"workers": 2}}, 3)
    assert "workers" not in render_config({"pgbouncer": {"workers": None}}, 3)
    text = "[databases]\nmydb = host=x\n\n[pgbouncer]\nlisten_port = 1\nbad line\n"
    # Appended at the end of [pgbouncer]: the line numbers before it stay.
    assert render_config(text, 4) == text + "workers = 4\n"
    text = "[pgbouncer]\nlisten_port = 1\n\n[databases]\nmydb = host=x\n"
    assert render_config(text, 4) == \
        "[pgbouncer]\nlisten_port = 1\n\nworkers = 4\n[databases]\nmydb = host=x\n"
    assert render_config("[pgbouncer]\nworkers=2\n", 4) == "[pgbouncer]\nworkers=2\n"


def test_suite_workers_reach_the_pooler(sluice):
    s = sluice()
    if IS_PGBOUNCER:
        assert s.workers is None and not WORKERS_LINE.search(s.ini.read_text())
        return
    assert s.workers == TEST_WORKERS
    assert f"workers = {TEST_WORKERS}\n" in s.ini.read_text()
    with s.connect(user="sluice", dbname="pgbouncer") as admin:
        config = dict((r[0], r[1]) for r in admin.execute("SHOW CONFIG").fetchall())
    assert config["workers"] == str(TEST_WORKERS)


HOLD_PORT = """
import socket, sys
s = socket.socket()
if sys.argv[2] == "1":
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen()
print("listening", flush=True)
sys.stdin.read()
"""


class PortHolder:
    """Another process, of the pooler's OS user, listening on port (with
    SO_REUSEPORT if reuseport) during the with-block."""

    def __init__(self, port, reuseport=False):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLD_PORT, str(port), "1" if reuseport else "0"],
            cwd="/", stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            user=RUN_AS, group=RUN_AS, extra_groups=[] if RUN_AS else None)
        assert self.proc.stdout.readline() == "listening\n"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.proc.stdin.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.mark.parametrize("reuseport", [False, True], ids=["plain", "so_reuseport"])
def test_taken_port_moves_the_pooler(sluice, reuseport):
    """The port the fixture picked is taken before the pooler binds it: the
    pooler starts on a fresh one. With SO_REUSEPORT on both sides (same OS
    user) the pooler's bind succeeds beside the other listener: the fixture
    notices that listener and moves the pooler all the same."""
    s = sluice({"pgbouncer": {"so_reuseport": "1"}} if reuseport else None, start=False)
    taken = s.port
    with PortHolder(taken, reuseport):
        s.start()
        assert s.port != taken
        assert f"listen_port = {s.port}\n" in s.ini.read_text()
        with s.connect() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.skipif(IS_PGBOUNCER, reason="sluice's own metrics endpoint")
def test_taken_metrics_port_moves_too(sluice):
    s = sluice({"pgbouncer": {"metrics_listen": "127.0.0.1:{metrics_port}"}}, start=False)
    taken = s.metrics_port
    with PortHolder(taken):
        s.start()
    assert s.metrics_port != taken
    assert f"metrics_listen = 127.0.0.1:{s.metrics_port}\n" in s.ini.read_text()
    with socket.create_connection(("127.0.0.1", s.metrics_port), timeout=5) as conn:
        conn.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        assert conn.recv(100).startswith(b"HTTP/1.1 200 ")
