"""The result cache's key and rules (docs/cache.md, issue 13 item 1): an
answer is served only to a client whose session would have had the same
bytes from the server (settings that change the output, SET ROLE, a custom
setting read by a row-level security policy, the extended protocol's
formats), and kept for as long as the rules say (wildcards, the smallest
TTL of a join, cache_default_ttl), with invalidation through inheritance.

Every case first shows a hit where one is expected (the SHOW CACHE hits
counter moves, or a change made straight on the primary is not seen), so
that the assertion after it can fail: a key that left something out would
hand the other session the cached bytes."""

import struct
import time

import pytest
from psycopg.types.string import TextLoader

from sluice_fixture import IS_PGBOUNCER, RawConn, message, wait_until
from test_cache import behind_back, cache_config, hits, warm

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="sluice's result cache")

ROLES = ("ck_role_a", "ck_role_b")
TABLES = ("ck_fmt", "ck_owned", "ck_tenant", "ck_ext", "ck_wa", "ck_wb", "ck_other",
          "ck_ttl_short", "ck_ttl_long", "ck_dflt", "ck_parent")


def drop_objects(conn):
    conn.execute("DROP SCHEMA IF EXISTS ck_s CASCADE")
    conn.execute("DROP TABLE IF EXISTS " + ", ".join(TABLES) + " CASCADE")
    for role in ROLES:
        conn.execute(f"DROP ROLE IF EXISTS {role}")


@pytest.fixture(autouse=True)
def ck_objects(cluster):
    with cluster.primary_conn() as conn:
        drop_objects(conn)
        # Values whose text depends on the session's settings.
        conn.execute("CREATE TABLE ck_fmt (id int PRIMARY KEY, ts timestamptz, d date, "
                     "iv interval, f float8, b bytea)")
        conn.execute("INSERT INTO ck_fmt VALUES (1, '2024-03-04 05:06:07.5+00', '2024-03-04', "
                     "'1 day 2 hours 3.5 seconds', 0.1::float8 + 0.2::float8, '\\x01ff'::bytea)")
        # Rows by role (SET ROLE) and by tenant (a custom setting), behind
        # row-level security.
        for role in ROLES:
            conn.execute(f"CREATE ROLE {role} NOLOGIN")
            conn.execute(f"GRANT {role} TO md5_user")
        conn.execute("CREATE TABLE ck_owned (owner name, v int)")
        conn.execute("INSERT INTO ck_owned VALUES ('md5_user', 0), ('ck_role_a', 1), "
                     "('ck_role_b', 2)")
        conn.execute("ALTER TABLE ck_owned ENABLE ROW LEVEL SECURITY")
        conn.execute("CREATE POLICY ck_owned_mine ON ck_owned USING (owner = current_user)")
        conn.execute("CREATE TABLE ck_tenant (tenant int, v text)")
        conn.execute("INSERT INTO ck_tenant VALUES (1, 'one-a'), (1, 'one-b'), (2, 'two')")
        conn.execute("ALTER TABLE ck_tenant ENABLE ROW LEVEL SECURITY")
        conn.execute("CREATE POLICY ck_tenant_own ON ck_tenant USING "
                     "(tenant::text = current_setting('app.tenant_id', true))")
        # The extended protocol: int4 1234 in text is the bytes '1234',
        # which in binary are int4 0x31323334 = 825373492.
        conn.execute("CREATE TABLE ck_ext (id int PRIMARY KEY, v int, t text)")
        conn.execute("INSERT INTO ck_ext VALUES (1, 0, 'one'), (1234, 0, 'text-1234'), "
                     "(825373492, 0, 'binary-1234')")
        # Rules.
        for t in ("ck_wa", "ck_wb", "ck_other", "ck_ttl_short", "ck_ttl_long", "ck_dflt"):
            conn.execute(f"CREATE TABLE {t} (id int PRIMARY KEY, v int)")
            conn.execute(f"INSERT INTO {t} VALUES (1, 0)")
        conn.execute("CREATE SCHEMA ck_s")
        conn.execute("GRANT USAGE ON SCHEMA ck_s TO PUBLIC")
        conn.execute("CREATE TABLE ck_s.ck_wx (id int PRIMARY KEY, v int)")
        conn.execute("INSERT INTO ck_s.ck_wx VALUES (1, 0)")
        conn.execute("GRANT ALL ON ck_s.ck_wx TO PUBLIC")
        # Inheritance: parent <- child <- grandchild.
        conn.execute("CREATE TABLE ck_parent (id int, v int)")
        conn.execute("CREATE TABLE ck_child () INHERITS (ck_parent)")
        conn.execute("CREATE TABLE ck_grandchild () INHERITS (ck_child)")
        conn.execute("INSERT INTO ck_parent VALUES (1, 0)")
        conn.execute("INSERT INTO ck_child VALUES (2, 0)")
        conn.execute("INSERT INTO ck_grandchild VALUES (3, 0)")
        conn.execute("GRANT ALL ON " + ", ".join(TABLES + ("ck_child", "ck_grandchild"))
                     + " TO PUBLIC")
    yield
    with cluster.primary_conn() as conn:
        drop_objects(conn)


def as_text(conn):
    """conn's values as the server's text, whatever the settings (psycopg
    parses some of these types in one style only)."""
    for name in ("timestamptz", "date", "interval", "float8", "bytea", "int4", "name"):
        conn.adapters.register_loader(name, TextLoader)
    return conn


def warm_with(s, read, what):
    """Calls read() until one of its answers is kept and served (a hit
    counted, the same rows); returns those rows."""
    def kept():
        before = hits(s)
        value = read()
        again = read()
        return (value,) if hits(s) > before and again == value else None
    return wait_until(kept, 10, f"an answer of {what} cached")[0]


# ---- 1. session settings that change the answer's bytes ---------------------------

FMT_SQL = "SELECT ts, d, iv, f, b FROM ck_fmt WHERE id = 1"

SETTINGS = [
    ("TimeZone", "UTC", "Asia/Tokyo"),
    ("DateStyle", "ISO,MDY", "SQL,DMY"),
    ("IntervalStyle", "postgres", "iso_8601"),
    ("extra_float_digits", "0", "3"),
    ("bytea_output", "hex", "escape"),
]


def server_text(cluster, name, value, sql):
    """sql's rows as the primary answers them under name = value."""
    with as_text(cluster.primary_conn()) as conn:
        conn.execute(f"SET {name} = '{value}'")
        return conn.execute(sql).fetchall()


# Each setting SET under transaction pooling; two of them also at startup,
# under both modes (one code path for all: make test's time is counted).
SETTING_CASES = [("set/transaction",) + s for s in SETTINGS] + [
    (how,) + s for s in SETTINGS if s[0] in ("TimeZone", "bytea_output")
    for how in ("startup/transaction", "startup/session")]


@pytest.mark.parametrize("how,name,a,b", SETTING_CASES,
                         ids=[f"{c[1]}-{c[0]}" for c in SETTING_CASES])
def test_settings_that_change_the_bytes_are_in_the_key(sluice, cluster, how, name, a, b):
    """The same SELECT under two values of a setting: each client gets its
    own setting's text, never the other's cached answer; a key without the
    setting would replay the first client's bytes to the second."""
    way, mode = how.split("/")
    s = sluice(cache_config({"public.ck_fmt": "300"}, pool_mode=mode))
    want_a = server_text(cluster, name, a, FMT_SQL)
    want_b = server_text(cluster, name, b, FMT_SQL)
    assert want_a != want_b  # the setting shows in the text

    def client(value):
        if way == "startup":
            # A blank in a value would need "\ " in options: none here.
            return as_text(s.connect(options=f"-c {name}={value}"))
        conn = as_text(s.connect())
        conn.execute(f"SET {name} = '{value}'")
        return conn

    with client(a) as ca, client(b) as cb:
        assert warm(s, ca, FMT_SQL) == want_a       # a's answer is kept and served
        assert cb.execute(FMT_SQL).fetchall() == want_b
        assert warm(s, cb, FMT_SQL) == want_b       # b's own entry
        before = hits(s)
        assert ca.execute(FMT_SQL).fetchall() == want_a
        assert cb.execute(FMT_SQL).fetchall() == want_b
        assert hits(s) == before + 2                # both served from their own entries
        if way == "set":
            # The same client switching back and forth: each value's entry.
            ca.execute(f"SET {name} = '{b}'")
            assert ca.execute(FMT_SQL).fetchall() == want_b
            ca.execute(f"SET {name} = '{a}'")
            assert ca.execute(FMT_SQL).fetchall() == want_a
            ca.execute(f"RESET {name}")
            with as_text(cluster.primary_conn()) as direct:
                default = direct.execute(FMT_SQL).fetchall()
            assert ca.execute(FMT_SQL).fetchall() == default


# ---- 2. SET ROLE ----------------------------------------------------------------------

OWNED_SQL = "SELECT current_user, owner, v FROM ck_owned ORDER BY v"


@pytest.mark.parametrize("how", ["set/transaction", "startup/transaction", "set/session",
                                 "startup/session"])
def test_a_role_gets_its_own_answer(sluice, cluster, how):
    """Row-level security by current_user: after SET ROLE (or with role in
    the startup options) a client sees its role's rows, not those of
    another role or of its login user cached under the same text."""
    way, mode = how.split("/")
    s = sluice(cache_config({"public.ck_owned": "300"}, pool_mode=mode))

    def client(role):
        if way == "startup":
            return as_text(s.connect(options=f"-c role={role}"))
        conn = as_text(s.connect())
        conn.execute(f"SET ROLE {role}")
        # The server took it (a statement no rule names: not cached).
        assert conn.execute("SELECT current_user").fetchall() == [(role,)]
        return conn

    with as_text(s.connect()) as plain:
        assert warm(s, plain, OWNED_SQL) == [("md5_user", "md5_user", "0")]
        with client("ck_role_a") as ca, client("ck_role_b") as cb:
            assert ca.execute(OWNED_SQL).fetchall() == [("ck_role_a", "ck_role_a", "1")]
            assert cb.execute(OWNED_SQL).fetchall() == [("ck_role_b", "ck_role_b", "2")]
            if way == "startup":
                # Each role's answer may be kept, under its own key.
                assert warm(s, ca, OWNED_SQL) == [("ck_role_a", "ck_role_a", "1")]
                assert cb.execute(OWNED_SQL).fetchall() == [("ck_role_b", "ck_role_b", "2")]
                assert warm(s, cb, OWNED_SQL) == [("ck_role_b", "ck_role_b", "2")]
            else:
                # SET ROLE: in session pooling any SET, and in transaction
                # pooling the pin to its server that SET ROLE brings, stop
                # the client being served from the cache (or filling it).
                before = hits(s)
                for _ in range(3):
                    assert ca.execute(OWNED_SQL).fetchall() == [("ck_role_a", "ck_role_a", "1")]
                assert hits(s) == before
            assert plain.execute(OWNED_SQL).fetchall() == [("md5_user", "md5_user", "0")]
            if way == "set":
                ca.execute("RESET ROLE")
                assert ca.execute(OWNED_SQL).fetchall() == [("md5_user", "md5_user", "0")]
                ca.execute("SET ROLE ck_role_b")
                assert ca.execute(OWNED_SQL).fetchall() == [("ck_role_b", "ck_role_b", "2")]


# ---- 3. a custom setting read by a policy ----------------------------------------------

TENANT_SQL = "SELECT tenant, v FROM ck_tenant ORDER BY v"
TENANT_ROWS = {"1": [(1, "one-a"), (1, "one-b")], "2": [(2, "two")]}


@pytest.mark.parametrize("how", ["set/transaction", "startup/transaction", "startup/session"])
def test_tenants_see_their_own_rows(sluice, cluster, how):
    """A policy reads current_setting('app.tenant_id'), which the statement
    does not name: each tenant still gets its own rows from the cache."""
    way, mode = how.split("/")
    s = sluice(cache_config({"public.ck_tenant": "300"}, pool_mode=mode))

    def client(tenant):
        if way == "startup":
            return s.connect(options=f"-c app.tenant_id={tenant}")
        conn = s.connect()
        conn.execute(f"SET app.tenant_id = '{tenant}'")
        return conn

    with client("1") as t1, client("2") as t2:
        assert warm(s, t1, TENANT_SQL) == TENANT_ROWS["1"]
        assert t2.execute(TENANT_SQL).fetchall() == TENANT_ROWS["2"]
        assert warm(s, t2, TENANT_SQL) == TENANT_ROWS["2"]
        before = hits(s)
        assert t1.execute(TENANT_SQL).fetchall() == TENANT_ROWS["1"]
        assert t2.execute(TENANT_SQL).fetchall() == TENANT_ROWS["2"]
        assert hits(s) == before + 2
        if way == "set":
            t1.execute("SET app.tenant_id = '2'")
            assert t1.execute(TENANT_SQL).fetchall() == TENANT_ROWS["2"]
            t1.execute("RESET app.tenant_id")
            assert t1.execute(TENANT_SQL).fetchall() == []
    with s.connect() as nobody:
        assert nobody.execute(TENANT_SQL).fetchall() == []


# ---- 4. the extended protocol's formats -----------------------------------------------


def test_text_and_binary_results_are_cached_apart(sluice, cluster):
    """The same statement and parameters with text and with binary results:
    two entries. A key without the result formats would hand the binary
    client the text bytes (or the reverse)."""
    s = sluice(cache_config({"public.ck_ext": "300"}))
    sql = "SELECT v, t FROM ck_ext WHERE id = %s"
    with s.connect() as conn:
        def text():
            return conn.execute(sql, (1,)).fetchall()

        def binary():
            return conn.execute(sql, (1,), binary=True).fetchall()

        assert warm_with(s, text, "text results") == [(0, "one")]
        behind_back(cluster, "UPDATE ck_ext SET v = 5 WHERE id = 1")
        assert text() == [(0, "one")]                            # a hit
        assert binary() == [(5, "one")]                          # another key: a miss
        assert warm_with(s, binary, "binary results") == [(5, "one")]
        behind_back(cluster, "UPDATE ck_ext SET v = 6 WHERE id = 1")
        before = hits(s)
        assert binary() == [(5, "one")]
        assert text() == [(0, "one")]
        assert hits(s) == before + 2                             # each from its own entry


INT4 = 23


def ext_batch(sql, param_format, value, result_format):
    """Parse (unnamed, one int4 parameter), Bind, Describe, Execute, Sync."""
    parse = message(b"P", b"\0" + sql.encode() + b"\0" + struct.pack("!hI", 1, INT4))
    bind = message(b"B", b"\0\0" + struct.pack("!hh", 1, param_format)
                   + struct.pack("!hi", 1, len(value)) + value
                   + struct.pack("!hh", 1, result_format))
    return (parse + bind + message(b"D", b"P\0") + message(b"E", b"\0" + struct.pack("!i", 0))
            + message(b"S"))


def ext_run(raw, batch):
    """The batch's messages' kinds and its DataRows' raw values."""
    raw.send(batch)
    kinds, rows = [], []
    while True:
        kind, payload = raw.read_msg()
        kinds.append(kind)
        if kind == b"E":
            raise AssertionError(f"error: {payload!r}")
        if kind == b"D":
            n, pos, row = struct.unpack("!h", payload[:2])[0], 2, []
            for _ in range(n):
                length = struct.unpack("!i", payload[pos:pos + 4])[0]
                row.append(payload[pos + 4:pos + 4 + length])
                pos += 4 + length
            rows.append(row)
        if kind == b"Z":
            return kinds, rows


@pytest.mark.parametrize("mode", ["transaction", "session"])
def test_text_and_binary_parameters_are_cached_apart(sluice, cluster, mode):
    """One Bind's parameter bytes '1234' in text are the int 1234, in
    binary the int 825373492: the answers for the two must not be each
    other's. Result formats too: int4 1 in text is b'1', in binary four
    bytes."""
    s = sluice(cache_config({"public.ck_ext": "300"}, pool_mode=mode))
    sql = "SELECT id, t FROM ck_ext WHERE id = $1"
    text_p = ext_batch(sql, 0, b"1234", 0)
    binary_p = ext_batch(sql, 1, b"1234", 0)
    binary_r = ext_batch(sql, 0, b"1234", 1)
    with RawConn(s.port) as raw:
        raw.login()

        def run(batch):
            return lambda: ext_run(raw, batch)

        kinds, rows = warm_with(s, run(text_p), "text parameters")
        assert rows == [[b"1234", b"text-1234"]]
        assert kinds == [b"1", b"2", b"T", b"D", b"C", b"Z"]
        assert ext_run(raw, binary_p)[1] == [[b"825373492", b"binary-1234"]]
        assert warm_with(s, run(binary_p), "binary parameters")[1] == \
            [[b"825373492", b"binary-1234"]]
        assert ext_run(raw, binary_r)[1] == [[struct.pack("!i", 1234), b"text-1234"]]
        assert warm_with(s, run(binary_r), "binary results")[1] == \
            [[struct.pack("!i", 1234), b"text-1234"]]
        before = hits(s)
        assert ext_run(raw, text_p)[1] == [[b"1234", b"text-1234"]]
        assert ext_run(raw, binary_p)[1] == [[b"825373492", b"binary-1234"]]
        assert ext_run(raw, binary_r)[1] == [[struct.pack("!i", 1234), b"text-1234"]]
        assert hits(s) == before + 3


# ---- 5. rules ---------------------------------------------------------------------------


def not_cached(s, cluster, conn, sql, table, value):
    """sql (one row, one int) is answered by the server every time: read
    it a few times, change its table straight on the primary, and it shows
    the change with no hit counted."""
    for _ in range(3):
        conn.execute(sql).fetchall()
    before = hits(s)
    behind_back(cluster, f"UPDATE {table} SET v = {value} WHERE id = 1")
    assert conn.execute(sql).fetchall() == [(value,)], sql
    assert hits(s) == before, sql


def test_a_wildcard_rule_caches_the_tables_it_matches(sluice, cluster):
    s = sluice(cache_config({"public.ck_w*": "60"}))
    with s.connect() as conn:
        for t in ("ck_wa", "ck_wb"):
            sql = f"SELECT v FROM {t} WHERE id = 1"
            assert warm(s, conn, sql) == [(0,)]
            behind_back(cluster, f"UPDATE {t} SET v = 1 WHERE id = 1")
            assert conn.execute(sql).fetchall() == [(0,)], t  # matched: from the cache
        not_cached(s, cluster, conn, "SELECT v FROM ck_other WHERE id = 1", "ck_other", 2)
        # Another schema's table of a matching name: the rule is public's.
        not_cached(s, cluster, conn, "SELECT v FROM ck_s.ck_wx WHERE id = 1", "ck_s.ck_wx", 3)
        # A join of a matched table and an unmatched one.
        not_cached(s, cluster, conn,
                   "SELECT o.v FROM ck_wa w JOIN ck_other o ON o.id = w.id", "ck_other", 4)


def read_within_ttl(s, cluster, conn, sql, table, ttl):
    """Keeps an answer of sql, changes table straight on the primary and
    reads sql again, all within ttl seconds of the fill: the old answer.
    Returns when the fill happened (time.monotonic())."""
    for _ in range(3):
        time.sleep(ttl + 0.5)  # whatever was kept before has expired
        t0 = time.monotonic()
        before = hits(s)
        old = conn.execute(sql).fetchall()       # the fill
        assert conn.execute(sql).fetchall() == old
        assert hits(s) == before + 1             # kept and served
        behind_back(cluster, f"UPDATE {table} SET v = v + 1 WHERE id = 1")
        again = conn.execute(sql).fetchall()
        if time.monotonic() - t0 < ttl * 0.8:
            assert again == old                  # still the kept answer
            return t0, old
        # Too slow to tell (a loaded box): try again.
    pytest.fail("could not read twice within the TTL")


def test_the_smallest_ttl_of_a_join_wins(sluice, cluster):
    s = sluice(cache_config({"public.ck_ttl_short": "1", "public.ck_ttl_long": "60"}))
    sql = "SELECT s.v, l.v FROM ck_ttl_short s JOIN ck_ttl_long l ON l.id = s.id"
    with s.connect() as conn:
        warm(s, conn, sql)  # the catalog knows both tables
        # The long table changes behind sluice's back: only the TTL drops
        # the answer, and it is the short one's.
        t0, old = read_within_ttl(s, cluster, conn, sql, "ck_ttl_long", 1)
        time.sleep(max(0.0, t0 + 1.5 - time.monotonic()))
        fresh = conn.execute(sql).fetchall()
        assert fresh != old and fresh[0][1] == old[0][1] + 1
        # The long table alone keeps its answer for longer than a second.
        one = "SELECT v FROM ck_ttl_long WHERE id = 1"
        kept = warm(s, conn, one)
        behind_back(cluster, "UPDATE ck_ttl_long SET v = v + 1 WHERE id = 1")
        time.sleep(1.5)
        assert conn.execute(one).fetchall() == kept


def test_cache_default_ttl_caches_without_a_rule(sluice, cluster):
    s = sluice(cache_config({}, cache_default_ttl=1))
    sql = "SELECT v FROM ck_dflt WHERE id = 1"
    with s.connect() as conn:
        warm(s, conn, sql)
        t0, old = read_within_ttl(s, cluster, conn, sql, "ck_dflt", 1)
        time.sleep(max(0.0, t0 + 1.5 - time.monotonic()))
        assert conn.execute(sql).fetchall() == [(old[0][0] + 1,)]


def test_cache_default_ttl_0_without_a_rule_caches_nothing(sluice, cluster):
    s = sluice(cache_config({}, cache_default_ttl=0))
    with s.connect() as conn:
        # The cache works here: a hint caches the same table.
        hinted = "SELECT /* sluice:cache ttl=60 */ v FROM ck_dflt WHERE id = 1"
        assert warm(s, conn, hinted) == [(0,)]
        behind_back(cluster, "UPDATE ck_dflt SET v = 1 WHERE id = 1")
        assert conn.execute(hinted).fetchall() == [(0,)]
        not_cached(s, cluster, conn, "SELECT v FROM ck_dflt WHERE id = 1", "ck_dflt", 2)


# ---- 6. inheritance -------------------------------------------------------------------


def test_inheritance_writes_invalidate_parents_and_children(sluice, cluster):
    """docs/cache.md: an answer over an inheritance parent depends on its
    descendants, one over a child on its ancestors; a write to any of them
    through sluice drops it."""
    s = sluice(cache_config({"public.ck_parent": "300", "public.ck_child": "300",
                             "public.ck_grandchild": "300"}))
    parent = "SELECT sum(v) FROM ck_parent"
    child = "SELECT v FROM ck_child WHERE id = 2"
    grandchild = "SELECT v FROM ck_grandchild WHERE id = 3"
    with s.connect() as conn, s.connect() as writer:
        def check(sql, write, want):
            warm(s, conn, sql)
            before = hits(s)
            conn.execute(sql).fetchall()
            assert hits(s) == before + 1, sql      # kept: the next read is a hit
            writer.execute(write)
            assert conn.execute(sql).fetchall() == want, (sql, write)

        # A descendant's write drops the parent's answer (it reads their rows).
        check(parent, "UPDATE ck_child SET v = 5 WHERE id = 2", [(5,)])
        check(parent, "INSERT INTO ck_grandchild VALUES (4, 10)", [(15,)])
        check(parent, "DELETE FROM ck_grandchild WHERE id = 4", [(5,)])
        # A parent's write reaches its descendants' rows: their answers go.
        check(child, "UPDATE ck_parent SET v = 7 WHERE id = 2", [(7,)])
        check(grandchild, "UPDATE ck_parent SET v = 8 WHERE id = 3", [(8,)])
        check(grandchild, "UPDATE ck_child SET v = 9 WHERE id = 3", [(9,)])
        check(child, "DELETE FROM ck_parent WHERE id = 2", [])
        check(grandchild, "TRUNCATE ck_parent", [])
        assert conn.execute(parent).fetchall() == [(None,)]

