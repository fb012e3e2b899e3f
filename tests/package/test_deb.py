"""The Debian package on this machine (make deb-test: root, Debian 12; about
three minutes with the build, so not part of make test).

It installs build/deb/sluice_*.deb with apt-get, checks what the package put
where (user, conffiles and their modes, log directory, man pages, logrotate,
the enabled unit), verifies the units with systemd-analyze, then runs the
installed binary the way sluice.service does, since this machine runs no
systemd: the unit's user, runtime directory, file limit and umask, its
ExecStartPre, ExecStart with NOTIFY_SOCKET on a socket the test binds,
ExecReload, and the unit's KillSignal to stop it. Last it purges the package
and checks the machine is as before: no user, no /etc/sluice, no logs."""

import glob
import grp
import os
import pwd
import re
import resource
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests/integration"))
from notify_lib import NotifySocket  # noqa: E402

VERSION = re.search(r'SLUICE_VERSION "([^"]+)"', (REPO / "src/version.h").read_text()).group(1)
UNIT_DIR = Path("/lib/systemd/system")
PORT = 6432
ENV = dict(os.environ, DEBIAN_FRONTEND="noninteractive")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="installs a package: run as root")


def run(*argv, check=True, **kwargs):
    """argv's result; on failure (with check) an AssertionError with its output."""
    r = subprocess.run(argv, capture_output=True, text=True, env=kwargs.pop("env", ENV), **kwargs)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited with {r.returncode}\n{r.stdout}{r.stderr}")
    return r


def installed():
    r = run("dpkg-query", "-W", "-f=${Status}", "sluice", check=False)
    return r.returncode == 0 and "installed" in r.stdout and "not-installed" not in r.stdout


def exists(db, name):
    try:
        (pwd.getpwnam if db == "passwd" else grp.getgrnam)(name)
        return True
    except KeyError:
        return False


def port_free(port):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def unit_service(path):
    """The [Service] section of a unit file: {key: [values]}."""
    out, section = {}, None
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]":
            key, value = line.split("=", 1)
            out.setdefault(key, []).append(value)
    return out


@pytest.fixture(scope="module")
def package():
    """The package installed (once); purged at the end whatever happened."""
    debs = sorted(glob.glob(str(REPO / f"build/deb/sluice_{VERSION}_*.deb")))
    assert debs, "no build/deb/sluice_*.deb: run make deb (make deb-test does)"
    assert not installed(), "sluice is installed already: apt-get purge sluice first"
    assert port_free(PORT), (f"port {PORT} is taken:\n"
                             + run("ss", "-ltnp", f"sport = :{PORT}", check=False).stdout)
    before = {"user": exists("passwd", "sluice"), "group": exists("group", "sluice")}
    run("apt-get", "install", "-y", "--no-install-recommends", debs[-1])
    yield before
    if installed():
        run("apt-get", "purge", "-y", "sluice", check=False)
    shutil.rmtree("/run/sluice", ignore_errors=True)


def test_files(package):
    r = run("/usr/bin/sluice", "--version")
    assert VERSION in r.stdout
    user = pwd.getpwnam("sluice")
    assert user.pw_uid < 1000, "not a system user"
    assert user.pw_shell in ("/usr/sbin/nologin", "/bin/false")
    conffiles = run("dpkg-query", "-W", "-f=${Conffiles}", "sluice").stdout
    for path in ("/etc/sluice/sluice.ini", "/etc/sluice/userlist.txt", "/etc/logrotate.d/sluice"):
        assert path in conffiles, f"{path} is not a conffile"
    for path in ("/etc/sluice/sluice.ini", "/etc/sluice/userlist.txt"):
        st = os.stat(path)
        assert (st.st_uid, grp.getgrgid(st.st_gid).gr_name) == (0, "sluice"), path
        assert stat.S_IMODE(st.st_mode) == 0o640, path
    st = os.stat("/var/log/sluice")
    assert st.st_uid == user.pw_uid and stat.S_IMODE(st.st_mode) == 0o750
    ini = Path("/etc/sluice/sluice.ini").read_text()
    for line in ("listen_addr = 127.0.0.1", f"listen_port = {PORT}",
                 "logfile = /var/log/sluice/sluice.log", "pidfile = /run/sluice/sluice.pid"):
        assert re.search(rf"^{re.escape(line)}$", ini, re.M), line
    assert re.search(r"^;mydb = host=", ini, re.M), "no commented [databases] example"
    # The man pages, rendered without a warning.
    for section, page in (("1", "sluice"), ("5", "sluice.ini")):
        path = run("man", "-w", section, page).stdout.strip()
        assert path.startswith("/usr/share/man/")
        r = run("man", "--warnings", "-l", path, env=dict(ENV, MANWIDTH="80"))
        assert r.stderr == "", r.stderr
    assert Path("/usr/share/doc/sluice/configuration.md.gz").exists() or \
        Path("/usr/share/doc/sluice/configuration.md").exists()
    assert Path("/etc/systemd/system/multi-user.target.wants/sluice.service").is_symlink(), \
        "sluice.service is not enabled"


def test_units_verify(package, tmp_path):
    r = run("systemd-analyze", "verify", str(UNIT_DIR / "sluice.service"), check=False)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr
    # A template is verified as an instance of it.
    instance = tmp_path / "sluice@test.service"
    shutil.copy(UNIT_DIR / "sluice@.service", instance)
    r = run("systemd-analyze", "verify", str(instance), check=False)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr
    svc = unit_service(instance)
    assert svc["ExecStart"] == ["/usr/bin/sluice -q /etc/sluice/%i.ini"]
    assert svc["RuntimeDirectory"] == ["sluice-%i"]


def as_unit(svc, user):
    """preexec_fn for a process started as the unit starts it: its file
    limit and umask, set as root, then its user without other groups."""
    nofile = int(svc["LimitNOFILE"][0])
    # A container without CAP_SYS_RESOURCE cannot raise its hard limit.
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < nofile:
        print(f"\nLimitNOFILE={nofile}: {hard} here (this machine's hard limit)", file=sys.stderr)
        nofile = hard
    umask = int(svc.get("UMask", ["0022"])[0], 8)

    def setup():
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
        os.umask(umask)
        os.setgroups([])
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)
    return setup


def console(sql, socket_dir="/run/sluice"):
    """sql on the admin console over the Unix socket, as OS user sluice (the
    pgbouncer user needs no password there)."""
    return run("runuser", "-u", "sluice", "--", "psql", "-X", "-h", socket_dir, "-p", str(PORT),
               "-U", "pgbouncer", "-At", "-c", sql, "pgbouncer").stdout


class UnitProcess:
    """The installed sluice started as a unit (a template's instance with
    instance=NAME) starts it, systemd's part done by the test: the runtime
    directory, user, file limit and umask, ExecStartPre (sluice --check),
    ExecStart with NOTIFY_SOCKET, and at the end the runtime
    directory's removal."""

    def __init__(self, unit, log_path, instance=None):
        text = (UNIT_DIR / unit).read_text()
        if instance:
            text = text.replace("%i", instance)
        path = log_path.parent / (unit.replace("@", f"@{instance}") if instance else unit)
        path.write_text(text)
        self.svc = svc = unit_service(path)
        assert svc["Type"] == ["notify"] and svc["User"] == ["sluice"]
        user = pwd.getpwnam(svc["User"][0])
        # RuntimeDirectory=, as systemd makes it before ExecStartPre.
        self.run_dir = Path("/run") / svc["RuntimeDirectory"][0]
        self.run_dir.mkdir(mode=int(svc["RuntimeDirectoryMode"][0], 8), exist_ok=True)
        os.chown(self.run_dir, user.pw_uid, user.pw_gid)
        self.uid = user.pw_uid
        kwargs = dict(cwd="/", preexec_fn=as_unit(svc, user))
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
        r = subprocess.run(shlex.split(svc["ExecStartPre"][0]), env=env,
                           capture_output=True, text=True, **kwargs)
        assert r.returncode == 0, f"ExecStartPre failed:\n{r.stdout}{r.stderr}"
        self.ns = NotifySocket()
        self.out = open(log_path, "w+")
        self.proc = subprocess.Popen(shlex.split(svc["ExecStart"][0]),
                                     env=dict(env, NOTIFY_SOCKET=self.ns.env),
                                     stdin=subprocess.DEVNULL, stdout=self.out, stderr=self.out,
                                     **kwargs)

    def expect(self, field, timeout=10):
        """The next notification, which must set field=1 and come from sluice."""
        fields, pid = self.ns.recv(timeout)
        assert fields.get(field) == "1" and pid == self.proc.pid, fields
        return fields

    def stop(self):
        """systemctl stop: the unit's KillSignal; STOPPING=1, then exit 0."""
        self.proc.send_signal(getattr(signal, self.svc["KillSignal"][0]))
        self.expect("STOPPING")
        assert self.proc.wait(int(self.svc["TimeoutStopSec"][0])) == 0

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.ns.close()
        self.out.seek(0)
        print(self.out.read(), file=sys.stderr)
        self.out.close()
        # systemd removes the runtime directory at stop.
        shutil.rmtree(self.run_dir, ignore_errors=True)


def test_runs_as_the_unit(package, tmp_path):
    unit = UnitProcess("sluice.service", tmp_path / "stderr")
    svc, proc = unit.svc, unit.proc
    try:
        unit.expect("READY", 15)
        socket.create_connection(("127.0.0.1", PORT), timeout=2).close()
        assert Path("/run/sluice/sluice.pid").read_text().strip() == str(proc.pid)
        uids = [line.split()[1:] for line in Path(f"/proc/{proc.pid}/status").read_text()
                .splitlines() if line.startswith("Uid:")][0]
        assert uids == [str(unit.uid)] * 4, uids

        assert f"sluice {VERSION}" in console("SHOW VERSION")
        # TCP with a real driver: sluice answers (no such user here).
        with pytest.raises(psycopg.OperationalError) as e:
            psycopg.connect(host="127.0.0.1", port=PORT, dbname="nodb", user="nobody",
                            password="x", connect_timeout=5)
        assert "refused" not in str(e.value)

        # ExecReload, $MAINPID as systemd substitutes it.
        log = Path("/var/log/sluice/sluice.log")
        mark = log.stat().st_size
        run(*shlex.split(svc["ExecReload"][0].replace("$MAINPID", str(proc.pid))))
        assert "MONOTONIC_USEC" in unit.expect("RELOADING")
        unit.expect("READY")
        assert "config reloaded" in log.read_text()[mark:]

        # logrotate's copytruncate: sluice goes on writing to the fresh file.
        run("logrotate", "-f", "-s", str(tmp_path / "logrotate.state"), "/etc/logrotate.d/sluice")
        assert Path("/var/log/sluice/sluice.log.1").exists()
        console("SHOW VERSION")
        time.sleep(0.2)
        text = log.read_text()
        assert "login attempt" in text and "starting" not in text, text

        unit.stop()
        assert not Path("/run/sluice/sluice.pid").exists()
    finally:
        unit.close()


INSTANCE_INI = """[databases]
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
so_reuseport = 1
auth_type = scram-sha-256
auth_file = /etc/sluice/userlist.txt
pidfile = /run/sluice-{name}/sluice.pid
unix_socket_dir = /run/sluice-{name}
logfile = /var/log/sluice/{name}.log
peer_id = {peer_id}

[peers]
1 = host=/run/sluice-a
2 = host=/run/sluice-b
"""


def test_instances_share_a_port(package, tmp_path):
    """sluice@a and sluice@b, as docs/packaging.md configures them: both
    listen on the port (so_reuseport), each with its own directory."""
    configs = [Path(f"/etc/sluice/{name}.ini") for name in ("a", "b")]
    units = []
    try:
        for peer_id, path in enumerate(configs, 1):
            path.write_text(INSTANCE_INI.format(port=PORT, name=path.stem, peer_id=peer_id))
            units.append(UnitProcess("sluice@.service", tmp_path / f"{path.stem}.err", path.stem))
        for unit in units:
            unit.expect("READY", 15)
        listeners = run("ss", "-Hltnp", f"sport = :{PORT}").stdout
        for unit in units:
            assert f"pid={unit.proc.pid}," in listeners, listeners
        for name in ("a", "b"):
            assert f"sluice {VERSION}" in console("SHOW VERSION", f"/run/sluice-{name}")
            assert Path(f"/var/log/sluice/{name}.log").stat().st_size > 0
        for unit in units:
            unit.stop()
    finally:
        for unit in units:
            unit.close()
        for path in configs:
            path.unlink(missing_ok=True)
        for name in ("a", "b"):
            Path(f"/var/log/sluice/{name}.log").unlink(missing_ok=True)


def test_purge(package):
    run("apt-get", "purge", "-y", "sluice")
    assert not installed()
    for path in ("/etc/sluice", "/var/log/sluice", "/usr/bin/sluice", "/etc/logrotate.d/sluice",
                 "/etc/systemd/system/multi-user.target.wants/sluice.service"):
        assert not os.path.lexists(path), f"{path} left after purge"
    assert exists("passwd", "sluice") == package["user"], "user sluice not removed"
    assert exists("group", "sluice") == package["group"], "group sluice not removed"
    assert port_free(PORT)
