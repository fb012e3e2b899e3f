"""PgBouncer settings that sluice once accepted and ignored: each one now
does what PgBouncer's documentation says, or stops the start with the file,
the line and "not supported by sluice"."""

import pytest

from sluice_fixture import IS_PGBOUNCER

sluice_only = pytest.mark.skipif(IS_PGBOUNCER, reason="sluice's own refusal")


def start_fails(s):
    """Start s, which must exit with an error; its log text."""
    try:
        s.start(timeout=5)
    except AssertionError:
        pass  # exited before its port was seen open
    assert s.wait_exit(5, codes=(1,)) == 1
    return s.log_text()


# ---- refused -------------------------------------------------------------------------------


@sluice_only
@pytest.mark.parametrize("key,value", [
    ("sbuf_loopcnt", "5"),
    ("suspend_timeout", "20"),
    ("auth_hba_file", "/etc/pgbouncer/hba.conf"),
    ("resolv_conf", "/etc/resolv.conf"),
    ("dns_zone_check_period", "60"),
])
def test_refused_setting_stops_start(sluice, key, value):
    text = ("[databases]\nmydb = host=127.0.0.1 port={primary_port} dbname=mydb\n"
            "[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n"
            f"auth_file = {{auth_file}}\n{key} = {value}\n")
    log = start_fails(sluice(text, start=False))
    assert f'sluice.ini:7: invalid value "{value}" for {key}: not supported by sluice' in log


@sluice_only
def test_auth_type_hba_stops_start(sluice):
    s = sluice({"pgbouncer": {"auth_type": "hba"}}, start=False)
    log = start_fails(s)
    assert 'invalid value "hba" for auth_type: not supported by sluice' in log
    assert "sluice.ini:" in log


@sluice_only
def test_refused_setting_default_is_accepted(sluice):
    """The default is what sluice does, so a file may spell it out."""
    s = sluice({"pgbouncer": {"sbuf_loopcnt": "1", "suspend_timeout": "10",
                              "auth_hba_file": ""}})
    with s.connect() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
