"""sluice --check (-C): the config and every file it names checked without
starting anything, each problem as FILE:LINE: reason; and RELOAD (SIGHUP,
the console's RELOAD) running the same check, so that a broken auth_file,
TLS file or setting never replaces a working config."""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg
import pytest

from sluice_fixture import (IS_PGBOUNCER, RUN_AS, SLUICE_BIN, chown_run_as, default_userlist,
                            render_userlist, wait_until)

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="sluice's --check")

GOOD = """\
[databases]
mydb = host=127.0.0.1 port=5432 dbname=mydb

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = 1
auth_type = md5
auth_file = {dir}/userlist.txt
pool_mode = transaction
"""


def run_check(path, *, flag="--check", as_user=None):
    args = [SLUICE_BIN, flag, str(path)]
    if as_user:
        args = ["runuser", "-u", as_user, "--", *args]
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1")
    return subprocess.run(args, capture_output=True, text=True, timeout=60, env=env)


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A directory with a good userlist and two key pairs (a, b)."""
    d = tmp_path_factory.mktemp("check")
    (d / "userlist.txt").write_text('"alice" "secret"\n"bob" "md5' + "0" * 32 + '"\n')
    for name in ("a", "b"):
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2",
                "-subj", f"/CN={name}", cwd=d)
    return d


def write(d, name, text):
    path = d / name
    path.write_text(text.replace("{dir}", str(d)))
    return path


def problems(result):
    """The FILE:LINE: reason lines of a failed check (the summary dropped)."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    lines = [l for l in result.stderr.splitlines() if not l.startswith("20")]  # no log lines
    assert lines[-1].endswith(f"{len(lines) - 1} problem" + ("s" if len(lines) != 2 else "")), lines
    return lines[:-1]


def test_good_config(files):
    ini = write(files, "good.ini", GOOD + "client_tls_sslmode = require\n"
                "client_tls_key_file = {dir}/a.key\nclient_tls_cert_file = {dir}/a.crt\n"
                "[jobs]\nj = database=mydb command=\"select 1\" schedule=\"*/5 * * * *\"\n")
    # a job logs in as its database's user
    ini.write_text(ini.read_text().replace("dbname=mydb\n", "dbname=mydb user=postgres\n", 1))
    for flag in ("--check", "-C"):
        r = run_check(ini, flag=flag)
        assert r.returncode == 0, r.stderr
        assert r.stdout == f"{ini}: OK\n"


# (name, lines appended to GOOD (whose last line is 9), the file at fault,
# its line, the reason; a '*' stands for the rest of OpenSSL's or cron's
# words). Each config has exactly one problem.
CASES = [
    ("ini_syntax", "[pgbouncer\n", "bad.ini", 10, 'syntax error: missing "]"'),
    ("ini_no_equals", "pool_mode transaction\n", "bad.ini", 10,
     'syntax error: expected "name = value"'),
    ("unknown_key", "pool_mod = transaction\n", "bad.ini", 10, 'unknown setting "pool_mod"'),
    ("bad_value", "pool_mode = sometimes\n", "bad.ini", 10,
     'invalid value "sometimes" for pool_mode: expected session, transaction or statement'),
    ("bad_database", "[databases]\nother = host=x prot=5432\n", "bad.ini", 11,
     'unknown parameter "prot" for database "other"'),
    ("missing_auth_file", "auth_file = {dir}/nowhere.txt\n", "bad.ini", 10,
     "auth_file {dir}/nowhere.txt: No such file or directory"),
    ("userlist_line", "auth_file = {dir}/broken_users.txt\n", "broken_users.txt", 2,
     "expected a quoted user name"),
    ("hba", "auth_hba_file = {dir}/hba.conf\n", "bad.ini", 10,
     'invalid value "{dir}/hba.conf" for auth_hba_file: not supported by sluice (sluice has no '
     "pg_hba.conf parser (auth_type = hba is refused too)); only an empty value is accepted"),
    ("missing_cert", "client_tls_sslmode = require\nclient_tls_key_file = {dir}/a.key\n"
     "client_tls_cert_file = {dir}/none.crt\n", "bad.ini", 12,
     'client_tls_cert_file "{dir}/none.crt": No such file or directory'),
    ("key_not_cert", "client_tls_sslmode = require\nclient_tls_key_file = {dir}/b.key\n"
     "client_tls_cert_file = {dir}/a.crt\n", "bad.ini", 11,
     'client_tls_key_file "{dir}/b.key": *mismatch'),
    ("server_ca", "server_tls_sslmode = verify-full\nserver_tls_ca_file = {dir}/none.crt\n",
     "bad.ini", 11, 'server_tls_ca_file "{dir}/none.crt": No such file or directory'),
    ("cron", '[jobs]\nj = database=mydb command="select 1" schedule="0 25 * * *"\n', "bad.ini",
     11, 'bad schedule "0 25 * * *": hour 25 is out of range 0-23'),
    ("peers", "[peers]\n1 = port=6432\n", "bad.ini", 11, '[peers] entry "1": *'),
    ("cache", "[cache]\npublic.orders = soon\n", "bad.ini", 11, "[cache] public.orders: *"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_one_error_of_each_kind(files, case):
    name, extra, fault, line, reason = case
    write(files, "broken_users.txt", '"alice" "secret"\nbob "x"\n')
    ini = write(files, "bad.ini", GOOD + extra)
    found = problems(run_check(ini))
    assert len(found) == 1, found
    want = f"{files / fault}:{line}: {reason.replace('{dir}', str(files))}"
    head, _, tail = want.partition("*")
    assert found[0].startswith(head) and found[0].endswith(tail), (found[0], want)
    if not _:
        assert found[0] == want


def test_every_problem_in_one_run(files):
    """Bad lines do not stop the reading, and the files named by the lines
    that did load are still checked."""
    write(files, "inc.ini", "max_client_conn = lots\n")
    ini = write(files, "all.ini", """\
[databases]
mydb = host=127.0.0.1 port=99999
[pgbouncer]
typo = 1
auth_file = {dir}/nowhere.txt
%include {dir}/inc.ini
client_tls_sslmode = require
client_tls_key_file = {dir}/b.key
client_tls_cert_file = {dir}/a.crt
[jobs]
j = database=mydb command="select 1" schedule="* * *"
""")
    found = problems(run_check(ini))
    where = [p.split(": ", 1)[0] for p in found]
    assert where == [f"{ini}:2", f"{ini}:4", f"{files}/inc.ini:1", f"{ini}:11", f"{ini}:5",
                     f"{ini}:8"], found


def test_every_bad_auth_file_line(files):
    write(files, "users3.txt", '"alice" "x"\nbob "y"\n"carol"\n"dave" "z"\n')
    ini = write(files, "u3.ini", GOOD + "auth_file = {dir}/users3.txt\n")
    assert problems(run_check(ini)) == [
        f"{files}/users3.txt:2: expected a quoted user name",
        f"{files}/users3.txt:3: password missing"]


def test_check_starts_nothing(files, tmp_path):
    """--check binds no port and writes neither pidfile nor logfile, even
    when they are configured."""
    ini = write(tmp_path, "run.ini", GOOD.replace("{dir}", str(files)) +
                f"pidfile = {tmp_path}/sluice.pid\nlogfile = {tmp_path}/sluice.log\n"
                "metrics_listen = 127.0.0.1:1\n")
    r = run_check(ini)
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "sluice.pid").exists()
    assert not (tmp_path / "sluice.log").exists()


@pytest.mark.skipif(not RUN_AS, reason="needs root to check as another user")
def test_unreadable_auth_file():
    """A file the user sluice runs as cannot read is reported: --check run
    as that user sees what sluice would."""
    d = Path(tempfile.mkdtemp(prefix="sluice-check-"))  # pytest's tmp_path is root's alone
    try:
        os.chmod(d, 0o755)
        secret = d / "users.txt"
        secret.write_text('"alice" "secret"\n')
        os.chmod(secret, 0o600)  # root's
        ini = write(d, "u.ini", GOOD.replace("{dir}/userlist.txt", str(secret)))
        chown_run_as(ini)
        found = problems(run_check(ini, as_user=RUN_AS))
        assert found == [f"{ini}:8: auth_file {secret}: Permission denied"]
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_help_lists_every_option():
    r = subprocess.run([SLUICE_BIN, "--help"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0
    for opt in ("-d, --daemon", "-q, --quiet", "-v, --verbose", "-u, --user", "-C, --check",
                "-R, --reboot", "-V, --version", "-h, --help"):
        assert opt in r.stdout, opt
    # and the options it lists are the ones it takes
    r = subprocess.run([SLUICE_BIN, "--no-such-option", "x.ini"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 1 and "Usage" in r.stderr


# ---- RELOAD runs the same check ---------------------------------------------

RELOAD_INI = """\
[databases]
mydb = host=127.0.0.1 port={primary_port} dbname=mydb

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = md5
auth_file = {auth_file}
pool_mode = transaction
admin_users = sluice
"""


def can_login(s, user="md5_user"):
    try:
        with s.connect(user=user) as conn:
            return conn.execute("SELECT 1").fetchone() == (1,)
    except psycopg.OperationalError:
        return False


def console_reload(s):
    """The console's RELOAD: None, or the error it answered."""
    with psycopg.connect(s.dsn(user="sluice", dbname="pgbouncer"), autocommit=True) as conn:
        try:
            conn.execute("RELOAD")
            return None
        except psycopg.Error as e:
            return str(e)


def test_reload_keeps_old_config_on_broken_files(sluice):
    s = sluice(RELOAD_INI)
    good_users = render_userlist(default_userlist())
    with s.connect() as kept:
        assert kept.execute("SELECT 1").fetchone() == (1,)
        # 1. a malformed auth_file line: refused, named at its own line
        mark = s.log_mark()
        s.auth_file.write_text(good_users + "md5_user \"oops\"\n")
        n = good_users.count("\n") + 1
        s.reload()
        s.wait_for_log(rf"reload failed, keeping the old config: {s.auth_file}:{n}: "
                       r"expected a quoted user name", since=mark)
        err = console_reload(s)
        assert err and f"{s.auth_file}:{n}: expected a quoted user name" in err, err
        assert can_login(s) and can_login(s, "plain_user")
        assert kept.execute("SELECT 2").fetchone() == (2,)

        # 2. the auth_file gone: placed at the auth_file line of the ini
        mark = s.log_mark()
        s.auth_file.unlink()
        s.reload()
        s.wait_for_log(rf"keeping the old config: {s.ini}:9: auth_file {s.auth_file}: No such "
                       r"file or directory", since=mark)
        assert can_login(s)

        # 3. a TLS file that cannot be loaded, with an hba file and a bad
        # line beside it: every problem logged, the old config kept
        s.auth_file.write_text(good_users)
        chown_run_as(s.auth_file)
        mark = s.log_mark()
        s.write_config(RELOAD_INI + "server_tls_sslmode = verify-ca\n"
                       "server_tls_ca_file = {dir}/none.crt\n"
                       "auth_hba_file = {dir}/hba.conf\n")
        s.reload()
        s.wait_for_log(rf"keeping the old config: {s.ini}:14: invalid value .* for auth_hba_file",
                       since=mark)
        s.wait_for_log(rf"keeping the old config: {s.ini}:13: server_tls_ca_file "
                       rf"\"{s.dir}/none.crt\": No such file or directory", since=mark)
        err = console_reload(s)
        assert err and "and 1 more problems" in err, err
        # no server TLS was applied: servers are still reached in plain text
        assert can_login(s)
        assert kept.execute("SELECT 3").fetchone() == (3,)

        # 4. fixed: taken at once, and a change in it is in force
        users = default_userlist()
        del users["plain_user"]
        s.write_config(RELOAD_INI, userlist=users)
        assert console_reload(s) is None
        wait_until(lambda: not can_login(s, "plain_user"), 5, "plain_user refused")
        assert can_login(s)
        assert kept.execute("SELECT 4").fetchone() == (4,)
