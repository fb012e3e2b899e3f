"""Test certificates (made with the openssl CLI) and a small extra PostgreSQL
with ssl=on, for the TLS and serverless tests.

The extra PostgreSQL is the tests' own upstream: they stop, start and
terminate its backends without disturbing the shared cluster that other
tests use at the same time. It listens on 127.0.0.1 and 127.0.0.2 (the
certificate names only 127.0.0.1 and localhost, so 127.0.0.2 is a host name
mismatch), accepts TLS only, and trusts every role except cert_role users,
which need a client certificate."""

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from sluice_fixture import (PORT_ATTEMPTS, PORT_TAKEN, RUN_AS, chown_run_as, free_port,
                            wait_until)

PGBIN = Path("/usr/lib/postgresql/15/bin")


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _key(name, cwd):
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-out", f"{name}.key", cwd=cwd)


def _ca(name, cwd):
    _key(name, cwd)
    _openssl("req", "-x509", "-new", "-key", f"{name}.key", "-out", f"{name}.crt", "-days", "3",
             "-subj", f"/CN=sluice test {name}", cwd=cwd)


def _signed(name, cn, ca, cwd, san=None):
    _key(name, cwd)
    _openssl("req", "-new", "-key", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}",
             cwd=cwd)
    ext = Path(cwd) / f"{name}.ext"
    ext.write_text(f"subjectAltName={san}\n" if san else "basicConstraints=CA:FALSE\n")
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-out", f"{name}.crt", "-days", "3", "-extfile", ext.name,
             cwd=cwd)


class Certs:
    """ca: the test CA; server: CN=localhost, SAN localhost and 127.0.0.1;
    client_<user>: client certificates signed by ca; evil_ca and
    evil_client_md5_user: a CA nobody trusts and a certificate it signed.
    Files the pooler or PostgreSQL read belong to the pooler's user (mode
    0600 for keys); libpq's copies of client keys belong to the test."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="sluice-certs-"))
        os.chmod(self.dir, 0o755)
        d = self.dir
        _ca("ca", d)
        _ca("evil_ca", d)
        _signed("server", "localhost", "ca", d, san="DNS:localhost,IP:127.0.0.1")
        for user in ("md5_user", "trust_user"):
            _signed(f"client_{user}", user, "ca", d)
        _signed("evil_client_md5_user", "md5_user", "evil_ca", d)
        for f in d.iterdir():
            os.chmod(f, 0o600 if f.suffix == ".key" else 0o644)
        # Keys the pooler and PostgreSQL read: theirs. Client keys stay the
        # test's (libpq refuses a key file others can read).
        for name in ("server", "client_trust_user"):
            shutil.copy(d / f"{name}.key", d / f"pg_{name}.key")
            os.chmod(d / f"pg_{name}.key", 0o600)
            chown_run_as(d / f"pg_{name}.key")
        chown_run_as(d)

    def __getitem__(self, name):
        return str(self.dir / name)

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def _as_pg(args, **kwargs):
    if RUN_AS:
        args = ["runuser", "-u", RUN_AS, "--", *args]
    return subprocess.run(args, cwd="/", check=True, capture_output=True, text=True,
                          timeout=120, **kwargs)


class UpstreamPostgres:
    """A PostgreSQL 15 with ssl=on in its own directory under /tmp."""

    def __init__(self, certs):
        self.certs = certs
        self.dir = Path(tempfile.mkdtemp(prefix="sluice-upstream-"))
        chown_run_as(self.dir)
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self.port = free_port()
        _as_pg([str(PGBIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                "-E", "UTF8", "--locale=C", "--no-sync"])
        with open(self.data / "postgresql.conf", "a") as f:
            f.write(f"""
listen_addresses = '127.0.0.1,127.0.0.2'
port = {self.port}
unix_socket_directories = '{self.dir}'
max_connections = 150
shared_buffers = 16MB
fsync = off
synchronous_commit = off
full_page_writes = off
ssl = on
ssl_cert_file = '{certs["server.crt"]}'
ssl_key_file = '{certs["pg_server.key"]}'
ssl_ca_file = '{certs["ca.crt"]}'
""")
        (self.data / "pg_hba.conf").write_text(
            "local   all  all                       trust\n"
            "hostssl all  trust_user  127.0.0.1/32  cert\n"
            "hostssl all  all         127.0.0.1/32  trust\n"
            "hostssl all  all         127.0.0.2/32  trust\n"
            "host    all  all         0.0.0.0/0     reject\n")
        self.first_start()
        with self.admin_conn("postgres") as conn:
            for role in ("md5_user", "trust_user", "scram_user", "plain_user"):
                conn.execute(f"CREATE ROLE {role} LOGIN")
            conn.execute("CREATE DATABASE mydb")

    def admin_conn(self, dbname="mydb"):
        """A connection over the unix socket (no TLS needed there)."""
        return psycopg.connect(host=str(self.dir), port=self.port, user="postgres",
                               dbname=dbname, autocommit=True, connect_timeout=5)

    def first_start(self):
        """start(); if free_port()'s port was taken before PostgreSQL bound
        it, again on fresh ports (the last port line of postgresql.conf wins)."""
        for attempt in range(PORT_ATTEMPTS):
            size = self.log.stat().st_size if self.log.exists() else 0
            try:
                return self.start()
            except subprocess.CalledProcessError:
                with open(self.log, "rb") as f:
                    f.seek(size)
                    new_lines = f.read().decode(errors="replace")
                if attempt + 1 == PORT_ATTEMPTS or not PORT_TAKEN.search(new_lines):
                    raise
            self.port = free_port()
            with open(self.data / "postgresql.conf", "a") as f:
                f.write(f"port = {self.port}\n")

    def start(self):
        _as_pg([str(PGBIN / "pg_ctl"), "start", "-w", "-t", "60", "-D", str(self.data),
                "-l", str(self.log)])

    def stop(self):
        _as_pg([str(PGBIN / "pg_ctl"), "stop", "-w", "-t", "60", "-m", "fast", "-D",
                str(self.data)])

    def destroy(self):
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)

    def backends(self, user):
        """pids of user's backends (the pooler's server connections)."""
        with self.admin_conn() as conn:
            return [r[0] for r in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE usename = %s AND datname = 'mydb'",
                (user,))]

    def ssl_backends(self, user):
        """(pid, ssl) of user's backends."""
        with self.admin_conn() as conn:
            return conn.execute(
                "SELECT a.pid, s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) "
                "WHERE a.usename = %s AND a.datname = 'mydb'", (user,)).fetchall()

    def terminate(self, user):
        """pg_terminate_backend() every backend of user; their number."""
        with self.admin_conn() as conn:
            n = conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE usename = %s AND datname = 'mydb'", (user,)).fetchone()[0]
        wait_until(lambda: not self.backends(user), 10, f"{user} backends to exit")
        return n


def wait_backends(upstream, user, n, timeout=10):
    return wait_until(lambda: len(upstream.backends(user)) == n, timeout,
                      f"{n} backends of {user}")


def sleep_until(deadline):
    left = deadline - time.monotonic()
    if left > 0:
        time.sleep(left)
