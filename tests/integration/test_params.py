"""ParameterStatus tracking in transaction mode: each client keeps its own
session parameters whichever server it gets, and sees its own values both
in SHOW and in the ParameterStatus its driver caches."""


import pytest

from chaos_lib import FaultProxy
from sluice_fixture import IS_PGBOUNCER, wait_no_backends


def pid_of(conn):
    return conn.execute("SELECT pg_backend_pid()").fetchone()[0]


def check(conn, **expected):
    """SHOW name and the client's cached ParameterStatus both give the value."""
    for name, value in expected.items():
        assert conn.execute(f"SHOW {name}").fetchone() == (value,), f"SHOW {name}"
        assert conn.info.parameter_status(name) == value, f"ParameterStatus {name}"


def test_application_name_and_timezone_interleaved(sluice):
    s = sluice({"pgbouncer": {"default_pool_size": 1, "reserve_pool_size": 0}})
    with s.connect(application_name="a") as a, s.connect(application_name="b") as b:
        a.execute("SET TimeZone = 'UTC'")
        b.execute("SET TimeZone = 'Asia/Tokyo'")
        pid = pid_of(a)
        for _ in range(3):
            check(a, application_name="a", TimeZone="UTC")
            check(b, application_name="b", TimeZone="Asia/Tokyo")
            # Inside a transaction too, and the one server is shared.
            with a.transaction():
                check(a, TimeZone="UTC")
                assert pid_of(a) == pid
            with b.transaction():
                check(b, TimeZone="Asia/Tokyo")
                assert pid_of(b) == pid
            assert a.execute("SELECT '2024-01-01 12:00+00'::timestamptz::text").fetchone() \
                == ("2024-01-01 12:00:00+00",)
            assert b.execute("SELECT '2024-01-01 12:00+00'::timestamptz::text").fetchone() \
                == ("2024-01-01 21:00:00+09",)


@pytest.mark.skipif(IS_PGBOUNCER, reason="PgBouncer 1.18 refuses the options parameter")
def test_startup_options_timezone(sluice):
    """TimeZone given at startup (options=-c TimeZone=...) follows the client."""
    s = sluice({"pgbouncer": {"default_pool_size": 1}})
    with s.connect(options="-c TimeZone=UTC", application_name="a") as a, \
            s.connect(options="-c TimeZone=Asia/Tokyo", application_name="b") as b:
        for _ in range(3):
            check(a, application_name="a", TimeZone="UTC")
            check(b, application_name="b", TimeZone="Asia/Tokyo")


@pytest.mark.skipif(IS_PGBOUNCER, reason="PgBouncer 1.18 refuses the options parameter")
def test_startup_options_escapes_ignored_and_long(sluice, cluster):
    """options is read as PostgreSQL reads it: a backslash escapes the next
    character (a comma, a space), a -c setting named in
    ignore_startup_parameters is ignored, and its length is not cut."""
    s = sluice({"pgbouncer": {"default_pool_size": 1, "reserve_pool_size": 0,
                              "ignore_startup_parameters": "extra_float_digits"}})
    long_path = ",".join(f"schema_{i}" for i in range(300))
    opts = (r"-c search_path=a\,b -c application_name=x\ y -c extra_float_digits=2 "
            r"-c statement_timeout=4321")
    with cluster.primary_conn() as direct:
        default_digits = direct.execute("SHOW extra_float_digits").fetchone()[0]
    with s.connect(options=opts) as a, s.connect(options="-c search_path=" + long_path) as b:
        for _ in range(3):  # a and b take turns on the one server
            assert a.execute("SHOW search_path").fetchone() == ("a,b",)
            assert a.execute("SHOW application_name").fetchone() == ("x y",)
            assert a.execute("SHOW extra_float_digits").fetchone() == (default_digits,)
            assert a.execute("SHOW statement_timeout").fetchone() == ("4321ms",)
            assert b.execute("SHOW search_path").fetchone() == (long_path,)


def test_set_survives_change_of_server(sluice):
    """A client's SET TimeZone made on one server is in force on the other."""
    s = sluice({"pgbouncer": {"default_pool_size": 2, "reserve_pool_size": 0}})
    with s.connect() as a, s.connect() as h1, s.connect() as h2:
        a.execute("SET TimeZone = 'Asia/Tokyo'")
        set_on = pid_of(a)
        # Hold both servers, then free only the one a did not SET on.
        h1.execute("BEGIN")
        h2.execute("BEGIN")
        holders = {pid_of(h1): h1, pid_of(h2): h2}
        assert set_on in holders
        other = next(pid for pid in holders if pid != set_on)
        holders[other].execute("COMMIT")
        with a.transaction():
            assert pid_of(a) == other
            check(a, TimeZone="Asia/Tokyo")
        check(a, TimeZone="Asia/Tokyo")
        holders[set_on].execute("COMMIT")
        # The server a left keeps no trace of a's setting for others.
        for h in (h1, h2):
            assert h.execute("SHOW TimeZone").fetchone() == ("Etc/UTC",)


def test_client_encoding_interleaved(sluice):
    s = sluice({"pgbouncer": {"default_pool_size": 1}})
    with s.connect(client_encoding="LATIN1") as a, s.connect(client_encoding="UTF8") as b:
        for _ in range(3):
            check(a, client_encoding="LATIN1")
            check(b, client_encoding="UTF8")
            # Each client's bytes are read in its own encoding by the server.
            assert a.execute("SELECT 'é', length('é'), octet_length(convert_to('é', 'UTF8'))"
                             ).fetchone() == ("é", 1, 2)
            assert b.execute("SELECT 'é', length('é')").fetchone() == ("é", 1)


def test_datestyle_and_standard_conforming_strings_interleaved(sluice):
    s = sluice({"pgbouncer": {"default_pool_size": 1}})
    with s.connect() as a, s.connect() as b:
        a.execute("SET DateStyle = 'German, DMY'")
        a.execute("SET standard_conforming_strings = off")
        a.execute("SET escape_string_warning = off")
        for _ in range(3):
            check(a, DateStyle="German, DMY", standard_conforming_strings="off")
            check(b, DateStyle="ISO, MDY", standard_conforming_strings="on")
            assert a.execute("SELECT '2024-01-02'::date::text").fetchone() == ("02.01.2024",)
            assert b.execute("SELECT '2024-01-02'::date::text").fetchone() == ("2024-01-02",)
            # 'a\b' is 3 characters when strings are standard, 2 ('a', backspace) if not.
            assert a.execute("SELECT length('a\\b')").fetchone() == (2,)
            assert b.execute("SELECT length('a\\b')").fetchone() == (3,)


@pytest.mark.skipif(IS_PGBOUNCER, reason="PgBouncer 1.18 does not track IntervalStyle")
def test_intervalstyle_interleaved(sluice):
    s = sluice({"pgbouncer": {"default_pool_size": 1}})
    with s.connect() as a, s.connect() as b:
        a.execute("SET IntervalStyle = 'iso_8601'")
        for _ in range(3):
            check(a, IntervalStyle="iso_8601")
            check(b, IntervalStyle="postgres")
            assert a.execute("SELECT '1 day 2 hours'::interval::text").fetchone() == ("P1DT2H",)
            assert b.execute("SELECT '1 day 2 hours'::interval::text").fetchone() \
                == ("1 day 02:00:00",)



@pytest.mark.skipif(IS_PGBOUNCER, reason="sluice's own retry")
def test_a_server_ending_while_settings_are_set_sends_the_request_elsewhere(sluice, cluster,
                                                                            pool_user):
    """A client's SETs are set on the server it gets next, before its
    request. When that server ends meanwhile (terminated here, as in a
    restart), nothing of the request went there: it waits for another
    server, which gets the settings in turn, and the client sees nothing.
    It was told 22023 "could not restore session setting" and closed with
    "transaction resolution unknown" (the chaos suite's primary_killed)."""
    wait_no_backends(cluster, pool_user)
    proxy = FaultProxy(cluster.primary_port)
    try:
        s = sluice({"databases": {"mydb": f"host=127.0.0.1 port={proxy.port} dbname=mydb"},
                    "pgbouncer": {"default_pool_size": 1, "reserve_pool_size": 0}})
        with s.connect(user=pool_user) as conn, s.connect(user=pool_user) as other:
            conn.execute("SET TimeZone = 'Asia/Tokyo'")
            others = other.execute("SHOW TimeZone").fetchone()[0]
            assert others != "Asia/Tokyo"
            pid = pid_of(other)  # the one server now has other's TimeZone
            mark = s.log_mark()
            # Its end reaches sluice late; conn's SETs are sent before.
            with proxy.ending_late(cluster, pid):
                assert pid_of(conn) != pid
            s.wait_for_log(r"its server went while its settings were set .*: it waits",
                           since=mark)
            check(conn, TimeZone="Asia/Tokyo")
            check(other, TimeZone=others)
    finally:
        proxy.stop()
