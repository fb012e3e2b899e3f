"""The fixture itself: a sanitizer report in the pooler's log fails the test,
and every generated config carries the suite's workers setting."""

import pytest

from sluice_fixture import (IS_PGBOUNCER, TEST_WORKERS, WORKERS_LINE, Sluice, chown_run_as,
                            render_config)


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
