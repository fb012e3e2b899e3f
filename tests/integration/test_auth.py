"""Client authentication through auth_query: users without a password under
auth_type = trust, and the error a client gets when the auth_user's own
server login fails."""

import psycopg
import pytest

from sluice_fixture import IS_PGBOUNCER

# Finds every role, with a NULL password: as pg_shadow says of a role that
# has none.
AUTH_QUERY_NULL_PASSWORD = "SELECT usename, NULL::text FROM pg_user WHERE usename = $1"


def auth_query_config(auth_type, query, **general):
    return {"pgbouncer": {"auth_type": auth_type, "auth_user": "sluice", "auth_query": query,
                          **general}}


def test_trust_lets_in_auth_query_user_without_password(sluice):
    """auth_type = trust: a user auth_query finds with a NULL password is let
    in (PgBouncer creates it with an empty password), not refused as unknown."""
    s = sluice(auth_query_config("trust", AUTH_QUERY_NULL_PASSWORD),
               userlist={"sluice": "sluice"})
    with s.connect(user="trust_user", password="") as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("trust_user",)


def test_trust_still_refuses_user_auth_query_does_not_find(sluice):
    s = sluice(auth_query_config("trust", AUTH_QUERY_NULL_PASSWORD),
               userlist={"sluice": "sluice"})
    with pytest.raises(psycopg.OperationalError):
        s.connect(user="no_such_role_here", password="")


def test_md5_refuses_auth_query_user_without_password(sluice):
    """A NULL password matches no password."""
    s = sluice(auth_query_config("md5", AUTH_QUERY_NULL_PASSWORD),
               userlist={"sluice": "sluice"})
    for password in ("x", "trust_user_pw"):
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            s.connect(user="trust_user", password=password)


@pytest.mark.skipif(IS_PGBOUNCER, reason="PgBouncer 1.18 keeps the client waiting while it retries")
def test_auth_user_login_failure_reaches_the_waiting_client(sluice):
    """The auth_user's server login fails (wrong password in the auth_file):
    the client waiting for auth_query gets that error, not an empty FATAL."""
    s = sluice(auth_query_config("md5", "SELECT usename, passwd FROM pg_shadow WHERE usename = $1"),
               userlist={"sluice": "not-the-password"})
    with pytest.raises(psycopg.OperationalError) as err:
        s.connect(user="md5_user")
    assert 'password authentication failed for user "sluice"' in str(err.value)
