"""TLS on both sides: clients to the pooler (client_tls_*), the pooler to
PostgreSQL (server_tls_*). Certificates are made by the test with the
openssl CLI; the server side runs against a PostgreSQL with ssl=on started
by the test (upstream_pg.py)."""

import os
import socket
import ssl
import struct
import subprocess

import psycopg
import pytest

from sluice_fixture import (IS_PGBOUNCER, PASSWORDS, RUN_AS, SLUICE_BIN, SSL_REQUEST_CODE,
                            startup_packet)
from upstream_pg import Certs, UpstreamPostgres

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="sluice's TLS messages")


@pytest.fixture(scope="module")
def certs():
    c = Certs()
    yield c
    c.cleanup()


@pytest.fixture(scope="module")
def upstream(certs):
    pg = UpstreamPostgres(certs)
    yield pg
    pg.destroy()


def client_tls(certs, mode="require", **extra):
    keys = {"client_tls_sslmode": mode, "client_tls_key_file": certs["pg_server.key"],
            "client_tls_cert_file": certs["server.crt"]}
    keys.update(extra)
    return {"pgbouncer": keys}


def tls_conn(s, certs, user="md5_user", host="127.0.0.1", **params):
    password = params.pop("password", PASSWORDS.get(user, ""))
    return psycopg.connect(host=host, port=s.port, dbname="mydb", user=user, password=password,
                           connect_timeout=5, autocommit=True, prepare_threshold=None, **params)


# ---- client side ----------------------------------------------------------


def test_client_require_psycopg(sluice, certs):
    s = sluice(client_tls(certs, "require"))
    with tls_conn(s, certs, sslmode="require") as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("SELECT 42").fetchone() == (42,)


def test_client_verify_full_psycopg(sluice, certs):
    s = sluice(client_tls(certs, "require"))
    for host in ("localhost", "127.0.0.1"):
        with tls_conn(s, certs, host=host, sslmode="verify-full",
                      sslrootcert=certs["ca.crt"]) as conn:
            assert conn.pgconn.ssl_in_use
            assert conn.execute("SELECT current_user").fetchone() == ("md5_user",)
    # A client that trusts another CA must refuse the pooler's certificate.
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        tls_conn(s, certs, host="localhost", sslmode="verify-full",
                 sslrootcert=certs["evil_ca.crt"])


def test_client_psql(sluice, certs):
    s = sluice(client_tls(certs, "require"))
    env = dict(os.environ, PGPASSWORD=PASSWORDS["md5_user"], PGCONNECT_TIMEOUT="5")
    for mode, extra in (("require", ""), ("verify-full", f" sslrootcert={certs['ca.crt']}")):
        dsn = f"host=localhost port={s.port} dbname=mydb user=md5_user sslmode={mode}{extra}"
        out = subprocess.run(["psql", "-X", "-At", "-d", dsn, "-c", "SELECT 7 * 6", "-c",
                              r"\conninfo"], env=env, capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        assert out.stdout.splitlines()[0] == "42"
        assert "SSL connection (protocol: TLSv1." in out.stdout


def test_client_plaintext_refused_when_required(sluice, certs):
    s = sluice(client_tls(certs, "require"))
    with pytest.raises(psycopg.OperationalError, match="SSL required"):
        tls_conn(s, certs, sslmode="disable")
    log = s.log_text()
    assert "SSL required" in log


@pytest.mark.parametrize("mode", ["allow", "prefer"])
def test_client_optional_tls(sluice, certs, mode):
    s = sluice(client_tls(certs, mode))
    with tls_conn(s, certs, sslmode="require") as conn:
        assert conn.pgconn.ssl_in_use
    with tls_conn(s, certs, sslmode="disable") as conn:
        assert not conn.pgconn.ssl_in_use
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_client_disabled_answers_n(sluice, certs):
    s = sluice()  # client_tls_sslmode = disable
    with pytest.raises(psycopg.OperationalError, match="server does not support SSL"):
        tls_conn(s, certs, sslmode="require")
    with tls_conn(s, certs, sslmode="prefer") as conn:
        assert not conn.pgconn.ssl_in_use


def test_client_plaintext_after_sslrequest_refused(sluice, certs):
    """Bytes sent together with the SSLRequest, before the answer, are
    refused: they would be unencrypted data slipped in front of TLS."""
    s = sluice(client_tls(certs, "require"))
    with socket.create_connection(("127.0.0.1", s.port), timeout=5) as sock:
        sock.sendall(struct.pack("!ii", 8, SSL_REQUEST_CODE) + startup_packet("md5_user"))
        data = sock.recv(4096)
    assert data[:1] == b"E"
    assert b"received unencrypted data after SSL request" in data


def test_client_large_transfer(sluice, certs, upstream):
    """Many TLS records both ways, through TLS on both sides: partial
    writes, records bigger than a read, backpressure."""
    keys = client_tls(certs, "require")["pgbouncer"]
    keys["server_tls_sslmode"] = "require"
    s = sluice({"databases": {"mydb": f"host=127.0.0.1 port={upstream.port} dbname=mydb"},
                "pgbouncer": keys})
    with tls_conn(s, certs, sslmode="require") as conn:
        big = "x" * (4 << 20)
        assert conn.execute("SELECT length(%s::text)", (big,)).fetchone() == (len(big),)
        rows = conn.execute("SELECT g, repeat('y', 1000) FROM generate_series(1, 20000) g"
                            ).fetchall()
        assert len(rows) == 20000 and rows[-1][0] == 20000
        assert conn.execute("SELECT length(repeat('z', 8000000))").fetchone() == (8000000,)
    assert all(ssl_on for _, ssl_on in upstream.ssl_backends("md5_user"))


def test_client_cert_auth(sluice, certs):
    s = sluice(client_tls(certs, "verify-ca", client_tls_ca_file=certs["ca.crt"],
                          auth_type="cert"))
    cert = dict(sslmode="verify-full", sslrootcert=certs["ca.crt"], host="localhost")
    with tls_conn(s, certs, sslcert=certs["client_md5_user.crt"],
                  sslkey=certs["client_md5_user.key"], password="", **cert) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("md5_user",)
    # A certificate for another user.
    with pytest.raises(psycopg.OperationalError,
                       match='certificate authentication failed for user "scram_user"'):
        tls_conn(s, certs, user="scram_user", sslcert=certs["client_md5_user.crt"],
                 sslkey=certs["client_md5_user.key"], password="", **cert)
    # No certificate, and one from a CA the pooler does not trust.
    with pytest.raises(psycopg.OperationalError):
        tls_conn(s, certs, password="", **cert)
    with pytest.raises(psycopg.OperationalError):
        tls_conn(s, certs, sslcert=certs["evil_client_md5_user.crt"],
                 sslkey=certs["evil_client_md5_user.key"], password="", **cert)


def test_client_tls_misconfigured_refuses_to_start(run_dir, certs):
    tmp_path = run_dir / "bad-tls"
    tmp_path.mkdir()
    ini = tmp_path / "bad.ini"
    ini.write_text("[databases]\nmydb = host=127.0.0.1\n[pgbouncer]\nlisten_addr = 127.0.0.1\n"
                   "listen_port = 1\nunix_socket_dir =\nauth_type = trust\n"
                   "client_tls_sslmode = require\n"
                   f"client_tls_key_file = {tmp_path}/missing.key\n"
                   f"client_tls_cert_file = {certs['server.crt']}\n")
    os.chmod(tmp_path, 0o755)
    os.chmod(ini, 0o644)
    cmd = [SLUICE_BIN, str(ini)]
    if RUN_AS:
        cmd = ["runuser", "-u", RUN_AS, "--", *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    assert "client_tls_key_file" in out.stderr and "missing.key" in out.stderr


# ---- server side ----------------------------------------------------------


def upstream_config(upstream, host="127.0.0.1", **keys):
    return {"databases": {"mydb": f"host={host} port={upstream.port} dbname=mydb"},
            "pgbouncer": keys}


@pytest.mark.parametrize("mode", ["prefer", "allow", "require"])
def test_server_tls(sluice, upstream, mode):
    s = sluice(upstream_config(upstream, server_tls_sslmode=mode))
    with s.connect() as conn:
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        assert conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = %s", (pid,)).fetchone() \
            == (True,)


def test_server_tls_disable_refused_by_tls_only_server(sluice, upstream):
    s = sluice(upstream_config(upstream, server_tls_sslmode="disable", query_wait_timeout="3"))
    with pytest.raises(psycopg.OperationalError, match="no encryption|SSL off|reject"):
        s.connect()


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_server_verify_full(sluice, upstream, certs, host):
    s = sluice(upstream_config(upstream, host=host, server_tls_sslmode="verify-full",
                               server_tls_ca_file=certs["ca.crt"]))
    with s.connect() as conn:
        assert conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
                            ).fetchone() == (True,)


@pytest.mark.parametrize("mode,host,ca,error", [
    ("verify-ca", "127.0.0.1", "evil_ca.crt", "certificate verify failed"),
    ("verify-full", "127.0.0.2", "ca.crt", "certificate verify failed"),
])
def test_server_verify_fails(sluice, upstream, certs, mode, host, ca, error):
    """An untrusted certificate or a name mismatch: waiting clients get the
    error at once (a retry would not fix it)."""
    s = sluice(upstream_config(upstream, host=host, server_tls_sslmode=mode,
                               server_tls_ca_file=certs[ca]))
    with pytest.raises(psycopg.OperationalError, match=error):
        s.connect()
    # verify-ca does not look at the name: 127.0.0.2 is fine with the right CA.
    if mode == "verify-full":
        s2 = sluice(upstream_config(upstream, host=host, server_tls_sslmode="verify-ca",
                                    server_tls_ca_file=certs["ca.crt"]))
        with s2.connect() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)


def test_server_require_but_server_has_no_tls(sluice):
    """The shared cluster runs with ssl=off: require must not fall back."""
    s = sluice({"pgbouncer": {"server_tls_sslmode": "require"}})
    with pytest.raises(psycopg.OperationalError,
                       match="server does not support TLS, and server_tls_sslmode is require"):
        s.connect()


def test_server_client_certificate(sluice, upstream, certs):
    """server_tls_key_file/cert_file: the pooler logs in with a certificate
    (the upstream's hba wants one for trust_user)."""
    s = sluice(upstream_config(upstream, server_tls_sslmode="verify-full",
                               server_tls_ca_file=certs["ca.crt"],
                               server_tls_key_file=certs["pg_client_trust_user.key"],
                               server_tls_cert_file=certs["client_trust_user.crt"]))
    with s.connect(user="trust_user") as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("trust_user",)
    s2 = sluice(upstream_config(upstream, server_tls_sslmode="require", query_wait_timeout="3"))
    with pytest.raises(psycopg.OperationalError, match="certificate"):
        s2.connect(user="trust_user")


def test_tls_both_sides_many_clients(sluice, upstream, certs):
    """Concurrent TLS clients over a few TLS server connections."""
    from concurrent.futures import ThreadPoolExecutor
    keys = client_tls(certs, "require")["pgbouncer"]
    keys.update(server_tls_sslmode="require", default_pool_size="4")
    s = sluice({"databases": upstream_config(upstream)["databases"], "pgbouncer": keys})

    def work(i):
        with tls_conn(s, certs, sslmode="require") as conn:
            for j in range(20):
                assert conn.execute("SELECT %s::int + %s::int", (i, j)).fetchone() == (i + j,)
        return True

    with ThreadPoolExecutor(20) as pool:
        assert all(pool.map(work, range(40), timeout=60))


def test_python_ssl_client_close_notify(sluice, certs):
    """A client that closes its TLS session abruptly (no close_notify) is an
    ordinary disconnect."""
    s = sluice(client_tls(certs, "require"))
    raw = socket.create_connection(("127.0.0.1", s.port), timeout=5)
    raw.sendall(struct.pack("!ii", 8, SSL_REQUEST_CODE))
    assert raw.recv(1) == b"S"
    ctx = ssl.create_default_context(cafile=certs["ca.crt"])
    tls = ctx.wrap_socket(raw, server_hostname="localhost")
    tls.sendall(startup_packet("md5_user"))
    assert tls.recv(1) == b"R"
    tls.shutdown(socket.SHUT_RDWR)  # no close_notify
    tls.close()
    with tls_conn(s, certs, sslmode="require") as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_client_stalled_handshake_closed(sluice, certs):
    """A client that asks for TLS and then says nothing is closed by
    client_login_timeout (its error cannot be sent: there is no session)."""
    s = sluice(client_tls(certs, "require", client_login_timeout="1"))
    with socket.create_connection(("127.0.0.1", s.port), timeout=5) as sock:
        sock.sendall(struct.pack("!ii", 8, SSL_REQUEST_CODE))
        assert sock.recv(1) == b"S"
        sock.settimeout(4)
        assert sock.recv(100) == b""  # closed, not left hanging
    with tls_conn(s, certs, sslmode="require") as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


# ---- changing the settings while running ----------------------------------------------------


def console(s):
    return psycopg.connect(s.dsn(user="sluice", dbname="pgbouncer"), autocommit=True)


def presented_cert(s):
    """The DER certificate the pooler shows a TLS client."""
    with socket.create_connection(("127.0.0.1", s.port), timeout=5) as raw:
        raw.sendall(struct.pack("!ii", 8, SSL_REQUEST_CODE))
        assert raw.recv(1) == b"S"
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with ctx.wrap_socket(raw) as tls:
            return tls.getpeercert(binary_form=True)


def der_of(path):
    with open(path) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


def test_set_client_key_and_cert_one_at_a_time(sluice, certs):
    """SET client_tls_key_file, then SET client_tls_cert_file: each is taken
    alone (the old pair serves meanwhile) and the pair applies when both
    are set, as in PgBouncer."""
    s = sluice(client_tls(certs, "require"))
    assert presented_cert(s) == der_of(certs["server.crt"])
    with console(s) as adm:
        adm.execute(f"SET client_tls_key_file = '{certs['pg_client_trust_user.key']}'")
        assert presented_cert(s) == der_of(certs["server.crt"])
        with tls_conn(s, certs, sslmode="require") as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        adm.execute(f"SET client_tls_cert_file = '{certs['client_trust_user.crt']}'")
        assert presented_cert(s) == der_of(certs["client_trust_user.crt"])
        with tls_conn(s, certs, sslmode="require") as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        # A file that is no key at all is still refused.
        with pytest.raises(psycopg.Error, match="client_tls_key_file"):
            adm.execute(f"SET client_tls_key_file = '{certs['server.crt']}'")
    assert presented_cert(s) == der_of(certs["client_trust_user.crt"])


def test_reload_with_new_server_tls_settings_closes_servers(sluice, upstream, certs):
    """A RELOAD that changes server_tls_* closes the server connections
    made under the old settings (as PgBouncer does): the next query runs on
    a new one."""
    cfg = upstream_config(upstream, server_tls_sslmode="require")
    s = sluice(cfg)
    with s.connect() as conn:
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        cfg["pgbouncer"].update(server_tls_sslmode="verify-ca", server_tls_ca_file=certs["ca.crt"])
        s.write_config(cfg)
        with console(s) as adm:
            adm.execute("RELOAD")
        new_pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        assert new_pid != pid
    # A RELOAD that changes nothing of it keeps them.
    with s.connect() as conn:
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        with console(s) as adm:
            adm.execute("RELOAD")
        assert conn.execute("SELECT pg_backend_pid()").fetchone()[0] == pid


# ---- TLS 1.3 suites (PgBouncer 1.25's client_tls13_ciphers, server_tls13_ciphers)


def tls_session(s, certs):
    """(protocol, cipher suite) of a TLS session with the pooler."""
    with socket.create_connection(("127.0.0.1", s.port), timeout=5) as raw:
        raw.sendall(struct.pack("!ii", 8, SSL_REQUEST_CODE))
        assert raw.recv(1) == b"S"
        ctx = ssl.create_default_context(cafile=certs["ca.crt"])
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            name, protocol, _ = tls.cipher()
            return protocol, name


def test_client_tls13_ciphers(sluice, certs):
    assert tls_session(sluice(client_tls(certs)), certs) == ("TLSv1.3", "TLS_AES_256_GCM_SHA384")
    s = sluice(client_tls(certs, client_tls13_ciphers="TLS_CHACHA20_POLY1305_SHA256"))
    assert tls_session(s, certs) == ("TLSv1.3", "TLS_CHACHA20_POLY1305_SHA256")
    with tls_conn(s, certs, sslmode="require") as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_server_tls13_ciphers(sluice, upstream):
    s = sluice(upstream_config(upstream, server_tls_sslmode="require",
                               server_tls13_ciphers="TLS_AES_128_GCM_SHA256"))
    with s.connect() as conn:
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        assert conn.execute("SELECT version, cipher FROM pg_stat_ssl WHERE pid = %s",
                            (pid,)).fetchone() == ("TLSv1.3", "TLS_AES_128_GCM_SHA256")
