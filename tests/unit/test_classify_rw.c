/* test_classify_rw.c - the read-only classifier: one test per rule of the
 * replica routing issue (verdict and reason), function lists and lookups,
 * transaction and session effects, hints, the cache. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "classify_rw.h"

static const struct classify_rw_functions strict_fns = {.strict = true};
static const struct classify_rw_functions list_fns = {.strict = false};

static const struct classify_rw_result *cls(const char *sql)
{
    return classify_rw_cached(sql, strlen(sql));
}

/* The verdict of sql under fns, checked against the uncached parse; the
 * reason goes to *why. */
static enum classify_rw_verdict verdict_fns(const char *sql,
                                            const struct classify_rw_functions *fns,
                                            struct classify_rw_decision *d)
{
    struct classify_rw_result *u = classify_rw_parse(sql, strlen(sql));
    struct classify_rw_decision du;
    enum classify_rw_verdict vu = classify_rw_resolve(u, fns, &du);
    enum classify_rw_verdict v = classify_rw_resolve(cls(sql), fns, d);
    assert_int_equal(v, vu);
    if (v == CRW_WRITE)
        assert_string_equal(d->reason, du.reason);
    classify_rw_free(u);
    return v;
}

static void expect(const char *sql, enum classify_rw_verdict v, const char *reason)
{
    struct classify_rw_decision d;
    enum classify_rw_verdict got = verdict_fns(sql, &strict_fns, &d);
    if (got != v)
        fail_msg("%s: %s, expected %s (%s)", sql, classify_rw_verdict_str(got),
                 classify_rw_verdict_str(v), d.reason ? d.reason : "-");
    if (reason) {
        assert_non_null(d.reason);
        if (strcmp(d.reason, reason) != 0)
            fail_msg("%s: reason \"%s\", expected \"%s\"", sql, d.reason, reason);
    } else {
        assert_null(d.reason);
    }
}

static void expect_read(const char *sql)
{
    expect(sql, CRW_READ, NULL);
    assert_int_equal(cls(sql)->n_funcs >= 0, 1);
}

/* ---- the read set ---------------------------------------------------------- */

static void test_select(void **state)
{
    (void)state;
    expect_read("SELECT 1");
    expect_read("select a, b from t where id = $1");
    expect_read("SELECT * FROM a JOIN b USING (id) WHERE a.x IN (SELECT y FROM c) ORDER BY 1");
    expect_read("WITH x AS (SELECT 1) SELECT * FROM x");
    expect_read("SELECT 1 UNION ALL SELECT 2 EXCEPT SELECT 3");
}

static void test_values_table_show(void **state)
{
    (void)state;
    expect_read("VALUES (1, 'a'), (2, 'b')");
    expect_read("TABLE t");
    expect_read("SHOW search_path");
    expect_read("SHOW ALL");
}

static void test_explain(void **state)
{
    (void)state;
    expect_read("EXPLAIN SELECT * FROM t");
    expect_read("EXPLAIN (VERBOSE, COSTS off) SELECT 1");
    expect_read("EXPLAIN (ANALYZE false) SELECT 1");
    expect_read("EXPLAIN (ANALYZE off) SELECT 1");
    expect_read("EXPLAIN (ANALYZE 0) SELECT 1");
    expect("EXPLAIN ANALYZE SELECT 1", CRW_WRITE, "EXPLAIN ANALYZE");
    expect("EXPLAIN (ANALYZE) SELECT 1", CRW_WRITE, "EXPLAIN ANALYZE");
    expect("EXPLAIN (ANALYZE true, BUFFERS) SELECT 1", CRW_WRITE, "EXPLAIN ANALYZE");
    expect("EXPLAIN (ANALYZE on) SELECT 1", CRW_WRITE, "EXPLAIN ANALYZE");
    expect("EXPLAIN ANALYZE DELETE FROM t", CRW_WRITE, "EXPLAIN ANALYZE");
    /* Without ANALYZE nothing runs, but what would write still goes home. */
    expect("EXPLAIN DELETE FROM t", CRW_WRITE, "DELETE");
}

/* ---- writes inside reads --------------------------------------------------- */

static void test_locking(void **state)
{
    (void)state;
    expect("SELECT * FROM t FOR UPDATE", CRW_WRITE, "FOR UPDATE");
    expect("SELECT * FROM t FOR NO KEY UPDATE", CRW_WRITE, "FOR NO KEY UPDATE");
    expect("SELECT * FROM t FOR SHARE", CRW_WRITE, "FOR SHARE");
    expect("SELECT * FROM t FOR KEY SHARE SKIP LOCKED", CRW_WRITE, "FOR KEY SHARE");
    expect("SELECT * FROM t WHERE id IN (SELECT id FROM u FOR UPDATE)", CRW_WRITE, "FOR UPDATE");
    expect("SELECT * FROM (SELECT * FROM u FOR SHARE) s", CRW_WRITE, "FOR SHARE");
}

static void test_select_into(void **state)
{
    (void)state;
    expect("SELECT * INTO t2 FROM t", CRW_WRITE, "SELECT INTO");
    assert_false(cls("SELECT * INTO t2 FROM t")->pins);
    expect("SELECT 1 INTO TEMP t2", CRW_WRITE, "SELECT INTO");
    assert_true(cls("SELECT 1 INTO TEMP t2")->pins);
    expect("CREATE TABLE t2 AS SELECT * FROM t", CRW_WRITE, "CREATE TABLE AS");
    expect("CREATE MATERIALIZED VIEW v AS SELECT 1", CRW_WRITE, "CREATE TABLE AS");
}

static void test_writable_cte(void **state)
{
    (void)state;
    expect("WITH x AS (INSERT INTO t VALUES (1) RETURNING id) SELECT * FROM x", CRW_WRITE,
           "INSERT");
    expect("WITH x AS (UPDATE t SET a = 1 RETURNING *) SELECT 1", CRW_WRITE, "UPDATE");
    expect("WITH x AS (DELETE FROM t RETURNING *) SELECT count(*) FROM x", CRW_WRITE, "DELETE");
    /* Nested: a CTE inside a CTE, and one inside a subquery. */
    expect("WITH a AS (WITH b AS (DELETE FROM t RETURNING 1) SELECT * FROM b) SELECT * FROM a",
           CRW_WRITE, "DELETE");
    expect("SELECT * FROM (WITH d AS (DELETE FROM t RETURNING id) SELECT id FROM d) s", CRW_WRITE,
           "DELETE");
    expect("SELECT (WITH i AS (INSERT INTO t DEFAULT VALUES RETURNING 1) SELECT 1 FROM i)",
           CRW_WRITE, "INSERT");
    expect("SELECT 1 WHERE EXISTS (WITH u AS (UPDATE t SET a = 2 RETURNING 1) SELECT 1 FROM u)",
           CRW_WRITE, "UPDATE");
}

/* ---- functions --------------------------------------------------------------- */

static void test_nextval(void **state)
{
    (void)state;
    expect("SELECT nextval('s')", CRW_WRITE, "function nextval");
    expect("SELECT pg_catalog.nextval('s')", CRW_WRITE, "function pg_catalog.nextval");
    expect("SELECT NEXTVAL('s')", CRW_WRITE, "function nextval");     /* folded */
    expect("SELECT \"NEXTVAL\"('s')", CRW_WRITE, "function NEXTVAL"); /* near miss: primary */
    expect("SELECT setval('s', 1)", CRW_WRITE, "function setval");
    expect("SELECT currval('s')", CRW_WRITE, "function currval");
    expect("SELECT lastval()", CRW_WRITE, "function lastval");
    /* Anywhere: a subquery, a CASE, ORDER BY, a lateral join, FROM, WHERE. */
    expect("SELECT * FROM (SELECT (SELECT nextval('s'))) x", CRW_WRITE, "function nextval");
    expect("SELECT CASE WHEN a > 1 THEN nextval('s') ELSE 0 END FROM t", CRW_WRITE,
           "function nextval");
    expect("SELECT a FROM t ORDER BY nextval('s')", CRW_WRITE, "function nextval");
    expect("SELECT * FROM t, LATERAL (SELECT setval('s', t.a)) l", CRW_WRITE, "function setval");
    expect("SELECT * FROM nextval('s')", CRW_WRITE, "function nextval");
    expect("SELECT 1 WHERE 2 > ANY (SELECT lastval())", CRW_WRITE, "function lastval");
    expect("SELECT coalesce(NULL, nextval('s'))", CRW_WRITE, "function nextval");
    expect("SELECT count(*) FILTER (WHERE nextval('s') > 0) FROM t", CRW_WRITE, "function nextval");
    expect("SELECT sum(a) OVER (ORDER BY currval('s')) FROM t", CRW_WRITE, "function currval");
    /* A user schema's nextval is not the built-in one: pg_proc decides. */
    expect("SELECT app.nextval('s')", CRW_LOOKUP, NULL);
}

static void test_advisory(void **state)
{
    (void)state;
    expect("SELECT pg_advisory_lock(1)", CRW_WRITE, "function pg_advisory_lock");
    assert_true(cls("SELECT pg_advisory_lock(1)")->pins);
    assert_true(cls("SELECT pg_advisory_lock(1)")->stmts[0].pins);
    assert_string_equal(cls("SELECT pg_advisory_lock(1)")->pin_reason, "advisory lock");
    assert_true(cls("SELECT pg_try_advisory_lock_shared(1, 2)")->pins);
    assert_true(cls("SELECT pg_catalog.pg_advisory_lock(1)")->pins);
    expect("SELECT pg_advisory_xact_lock(1)", CRW_WRITE, "function pg_advisory_xact_lock");
    assert_false(cls("SELECT pg_advisory_xact_lock(1)")->pins);
    expect("SELECT pg_try_advisory_xact_lock(1)", CRW_WRITE, "function pg_try_advisory_xact_lock");
    assert_false(cls("SELECT pg_try_advisory_xact_lock(1)")->pins);
    expect("SELECT pg_advisory_unlock_all()", CRW_WRITE, "function pg_advisory_unlock_all");
    /* Pins even inside a statement that writes anyway. */
    assert_true(cls("INSERT INTO t SELECT pg_advisory_lock(1)")->pins);
}

static void test_deny_list(void **state)
{
    (void)state;
    expect("SELECT set_config('a.b', '1', false)", CRW_WRITE, "function set_config");
    expect("SELECT txid_current()", CRW_WRITE, "function txid_current");
    expect("SELECT pg_current_xact_id()", CRW_WRITE, "function pg_current_xact_id");
    expect("SELECT pg_notify('c', 'x')", CRW_WRITE, "function pg_notify");
    expect("SELECT lo_import('/tmp/x')", CRW_WRITE, "function lo_import");
    expect("SELECT lo_unlink(1)", CRW_WRITE, "function lo_unlink");
    expect("SELECT dblink_exec('c', 'x')", CRW_WRITE, "function dblink_exec");
    expect("SELECT pg_stat_reset()", CRW_WRITE, "function pg_stat_reset");
    expect("SELECT pg_terminate_backend(1)", CRW_WRITE, "function pg_terminate_backend");
    expect("SELECT setseed(0.5)", CRW_WRITE, "function setseed");
    expect("SELECT pg_create_logical_replication_slot('s', 'p')", CRW_WRITE,
           "function pg_create_logical_replication_slot");
    /* Never assign an id: known stable. */
    expect_read("SELECT txid_current_if_assigned(), pg_current_xact_id_if_assigned()");
}

static void test_unknown_function(void **state)
{
    (void)state;
    struct classify_rw_decision d;
    const char *q = "SELECT my_func(a), app.other(b), my_func(c) FROM t";
    assert_int_equal(verdict_fns(q, &strict_fns, &d), CRW_LOOKUP);
    assert_int_equal(d.n_lookup, 2);
    assert_string_equal(d.lookup[0], "my_func");
    assert_string_equal(d.lookup[1], "app.other");
    assert_int_equal(d.lookup_stmts[0], 1);
    assert_int_equal(d.stmt[0], CRW_LOOKUP);
    assert_null(d.reason);
    /* NULL functions: the built-in lists, strict. */
    assert_int_equal(classify_rw_resolve(cls(q), NULL, &d), CRW_LOOKUP);
    /* List mode: assumed not to write. */
    assert_int_equal(verdict_fns(q, &list_fns, &d), CRW_READ);
    assert_int_equal(d.n_lookup, 0);
    /* Quoted names keep their case and are never built in. */
    assert_int_equal(verdict_fns("SELECT \"Lower\"('A')", &strict_fns, &d), CRW_LOOKUP);
    assert_string_equal(d.lookup[0], "Lower");
    assert_int_equal(verdict_fns("SELECT \"MySchema\".f()", &strict_fns, &d), CRW_LOOKUP);
    assert_string_equal(d.lookup[0], "MySchema.f");
}

static void test_config_lists(void **state)
{
    (void)state;
    const char *const writes[] = {"audit_log", "app.bump"};
    const char *const reads[] = {"my_func", "app.other"};
    struct classify_rw_functions fns = {writes, 2, reads, 2, true};
    struct classify_rw_decision d;
    assert_int_equal(verdict_fns("SELECT audit_log('x')", &fns, &d), CRW_WRITE);
    assert_string_equal(d.reason, "function audit_log");
    /* Write names: any case, any schema if either side has none. */
    assert_int_equal(verdict_fns("SELECT app.audit_log('x')", &fns, &d), CRW_WRITE);
    assert_int_equal(verdict_fns("SELECT \"AUDIT_LOG\"('x')", &fns, &d), CRW_WRITE);
    assert_int_equal(verdict_fns("SELECT bump()", &fns, &d), CRW_WRITE);
    assert_int_equal(verdict_fns("SELECT app.bump()", &fns, &d), CRW_WRITE);
    assert_int_equal(verdict_fns("SELECT other.bump()", &fns, &d), CRW_LOOKUP);
    /* Read names: exactly as written. */
    assert_int_equal(verdict_fns("SELECT my_func(1), app.other(2)", &fns, &d), CRW_READ);
    assert_int_equal(verdict_fns("SELECT public.my_func(1)", &fns, &d), CRW_LOOKUP);
    assert_int_equal(verdict_fns("SELECT other(1)", &fns, &d), CRW_LOOKUP);
    /* The write list wins over everything, the built-in deny list over the
     * read list. */
    const char *const w2[] = {"random"};
    const char *const r2[] = {"nextval"};
    struct classify_rw_functions f2 = {w2, 1, r2, 1, false};
    assert_int_equal(verdict_fns("SELECT random()", &f2, &d), CRW_WRITE);
    assert_string_equal(d.reason, "function random");
    assert_int_equal(verdict_fns("SELECT nextval('s')", &f2, &d), CRW_WRITE);
}

static void test_safe_and_stable(void **state)
{
    (void)state;
    struct classify_rw_decision d;
    expect_read("SELECT random(), clock_timestamp(), pg_sleep(0.1), gen_random_uuid()");
    expect_read("SELECT count(*), now(), lower(name), upper(x), length(y) FROM t");
    expect_read("SELECT extract(year FROM now()), substring('abc' FROM 2), trim(' a '), "
                "position('a' IN 'b'), 'x' AT TIME ZONE 'utc', 'a' LIKE 'b' ESCAPE 'c'");
    expect_read("SELECT pg_catalog.lower('A'), pg_is_in_recovery(), pg_last_wal_replay_lsn()");
    expect_read("SELECT * FROM generate_series(1, 10) g");
    expect_read("SELECT json_build_object('a', 1), jsonb_agg(x), string_agg(s, ',') FROM t");
    assert_int_equal(verdict_fns("SELECT count(*) FROM t", &strict_fns, &d), CRW_READ);
    assert_int_equal(d.n_lookup, 0);
    assert_int_equal(cls("SELECT count(*), count(a) FROM t")->n_funcs, 1);
    assert_int_equal(cls("SELECT count(*) FROM t")->funcs[0].cls, CRW_FN_STABLE);
    assert_int_equal(cls("SELECT random()")->funcs[0].cls, CRW_FN_SAFE);
}

/* A pg_proc answer table for the lookup step. */
static char fake_volatility(const char *name, void *arg)
{
    const char *const *t = arg;
    for (int i = 0; t[i]; i += 2)
        if (!strcmp(t[i], name))
            return t[i + 1][0];
    return 0;
}

static void test_lookup(void **state)
{
    (void)state;
    const char *const answers[] = {"f_vol", "v", "f_stable", "s", "f_imm", "i", NULL};
    struct classify_rw_decision d;
    assert_int_equal(verdict_fns("SELECT f_vol(1)", &strict_fns, &d), CRW_LOOKUP);
    assert_int_equal(classify_rw_resolve_lookup(&d, fake_volatility, (void *)answers), CRW_WRITE);
    assert_string_equal(d.reason, "function f_vol");
    assert_int_equal(d.stmt[0], CRW_WRITE);

    assert_int_equal(verdict_fns("SELECT f_stable(1), f_imm(2)", &strict_fns, &d), CRW_LOOKUP);
    assert_int_equal(classify_rw_resolve_lookup(&d, fake_volatility, (void *)answers), CRW_READ);
    assert_null(d.reason);
    assert_int_equal(d.stmt[0], CRW_READ);

    /* Not known yet: the primary until it is. */
    assert_int_equal(verdict_fns("SELECT f_imm(1), f_unknown(2)", &strict_fns, &d), CRW_LOOKUP);
    assert_int_equal(classify_rw_resolve_lookup(&d, fake_volatility, (void *)answers), CRW_WRITE);
    assert_string_equal(d.reason, "function f_unknown");

    /* Per statement: only the statement calling the volatile one writes. */
    assert_int_equal(verdict_fns("SELECT f_imm(1); SELECT f_vol(2); SELECT 3", &strict_fns, &d),
                     CRW_LOOKUP);
    assert_int_equal(d.n, 3);
    assert_int_equal(d.lookup_stmts[0], 1);
    assert_int_equal(d.lookup_stmts[1], 2);
    assert_int_equal(classify_rw_resolve_lookup(&d, fake_volatility, (void *)answers), CRW_WRITE);
    assert_int_equal(d.stmt[0], CRW_READ);
    assert_int_equal(d.stmt[1], CRW_WRITE);
    assert_int_equal(d.stmt[2], CRW_READ);

    /* A decision that is not LOOKUP is left as it is. */
    assert_int_equal(verdict_fns("SELECT 1", &strict_fns, &d), CRW_READ);
    assert_int_equal(classify_rw_resolve_lookup(&d, fake_volatility, (void *)answers), CRW_READ);
}

static void test_many_functions(void **state)
{
    (void)state;
    char q[4096] = "SELECT ";
    size_t n = strlen(q);
    for (int i = 0; i < CLASSIFY_RW_MAX_FUNCS + 1; i++)
        n += (size_t)snprintf(q + n, sizeof(q) - n, "%sf%d()", i ? ", " : "", i);
    expect(q, CRW_WRITE, "too many functions");
    /* Just under the bound: a lookup of them all. */
    n = strlen("SELECT ");
    q[n] = '\0';
    for (int i = 0; i < CLASSIFY_RW_MAX_FUNCS; i++)
        n += (size_t)snprintf(q + n, sizeof(q) - n, "%sf%d()", i ? ", " : "", i);
    struct classify_rw_decision d;
    assert_int_equal(verdict_fns(q, &strict_fns, &d), CRW_LOOKUP);
    assert_int_equal(d.n_lookup, CLASSIFY_RW_MAX_FUNCS);
    /* The same function many times is one function. */
    n = strlen("SELECT ");
    q[n] = '\0';
    for (int i = 0; i < 100; i++)
        n += (size_t)snprintf(q + n, sizeof(q) - n, "%slower(a)", i ? ", " : "");
    expect_read(q);
}

/* ---- statements that write --------------------------------------------------- */

static void test_write_statements(void **state)
{
    (void)state;
    expect("INSERT INTO t VALUES (1)", CRW_WRITE, "INSERT");
    expect("UPDATE t SET a = 1", CRW_WRITE, "UPDATE");
    expect("DELETE FROM t", CRW_WRITE, "DELETE");
    expect("MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE", CRW_WRITE, "MERGE");
    expect("CREATE TABLE t (a int)", CRW_WRITE, "CREATE TABLE");
    expect("CREATE INDEX ON t (a)", CRW_WRITE, "CREATE INDEX");
    expect("ALTER TABLE t ADD COLUMN b int", CRW_WRITE, "ALTER TABLE");
    expect("DROP TABLE t", CRW_WRITE, "DROP");
    expect("TRUNCATE t", CRW_WRITE, "TRUNCATE");
    expect("GRANT SELECT ON t TO u", CRW_WRITE, "GRANT");
    expect("REVOKE SELECT ON t FROM u", CRW_WRITE, "REVOKE");
    expect("COPY t FROM STDIN", CRW_WRITE, "COPY");
    expect("COPY t TO '/tmp/x'", CRW_WRITE, "COPY");
    expect("COPY t TO PROGRAM 'cat'", CRW_WRITE, "COPY");
    expect("COPY (DELETE FROM t RETURNING *) TO STDOUT", CRW_WRITE, "DELETE");
    expect("COPY (SELECT nextval('s')) TO STDOUT", CRW_WRITE, "function nextval");
    expect("DO $$ BEGIN PERFORM 1; END $$", CRW_WRITE, "DO");
    expect("CALL p(1)", CRW_WRITE, "CALL");
    expect("VACUUM t", CRW_WRITE, "VACUUM");
    expect("ANALYZE t", CRW_WRITE, "ANALYZE");
    expect("NOTIFY ch, 'x'", CRW_WRITE, "NOTIFY");
    expect("UNLISTEN ch", CRW_WRITE, "UNLISTEN");
    expect("PREPARE p AS SELECT 1", CRW_WRITE, "PREPARE");
    expect("EXECUTE p", CRW_WRITE, "EXECUTE");
    expect("FETCH 10 FROM c", CRW_WRITE, "FETCH");
    expect("CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'", CRW_WRITE,
           "CREATE FUNCTION");
    expect("ALTER SYSTEM SET work_mem = '1MB'", CRW_WRITE, "AlterSystemStmt");
    expect("CHECKPOINT", CRW_WRITE, "CHECKPOINT");
    /* COPY ... TO STDOUT only reads. */
    expect_read("COPY t TO STDOUT");
    expect_read("COPY (SELECT a FROM t) TO STDOUT WITH (FORMAT csv)");
}

/* ---- transactions and session state ------------------------------------------ */

static const struct classify_rw_stmt *stmt0(const char *sql)
{
    const struct classify_rw_result *r = cls(sql);
    assert_int_equal(r->n, 1);
    return &r->stmts[0];
}

static void test_begin(void **state)
{
    (void)state;
    const struct classify_rw_stmt *s = stmt0("BEGIN");
    assert_int_equal(s->txn, CRW_TXN_BEGIN);
    assert_int_equal(s->verdict, CRW_READ);
    assert_int_equal(s->isolation, CRW_ISO_UNSAID);
    assert_int_equal(s->read_only, -1);
    s = stmt0("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY");
    assert_int_equal(s->isolation, CRW_ISO_REPEATABLE_READ);
    assert_int_equal(s->read_only, 1);
    s = stmt0("begin transaction read write");
    assert_int_equal(s->txn, CRW_TXN_BEGIN);
    assert_int_equal(s->read_only, 0);
    s = stmt0("BEGIN ISOLATION LEVEL READ COMMITTED");
    assert_int_equal(s->isolation, CRW_ISO_READ_COMMITTED);
    s = stmt0("BEGIN ISOLATION LEVEL READ UNCOMMITTED READ ONLY DEFERRABLE");
    assert_int_equal(s->isolation, CRW_ISO_READ_UNCOMMITTED);
    assert_int_equal(s->read_only, 1);
    s = stmt0("START TRANSACTION ISOLATION LEVEL SERIALIZABLE");
    assert_int_equal(s->txn, CRW_TXN_BEGIN);
    assert_int_equal(s->isolation, CRW_ISO_SERIALIZABLE);
    expect_read("BEGIN READ ONLY");
    assert_string_equal(classify_rw_isolation_str(CRW_ISO_SERIALIZABLE), "serializable");
    assert_string_equal(classify_rw_txn_str(CRW_TXN_BEGIN), "begin");
}

static void test_set_transaction(void **state)
{
    (void)state;
    const struct classify_rw_stmt *s = stmt0("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ");
    assert_int_equal(s->txn, CRW_TXN_SET_TRANSACTION);
    assert_int_equal(s->isolation, CRW_ISO_REPEATABLE_READ);
    assert_int_equal(s->read_only, -1);
    assert_false(s->whole_txn_primary);
    assert_false(s->is_set);
    s = stmt0("SET TRANSACTION READ ONLY");
    assert_int_equal(s->read_only, 1);
    expect_read("SET TRANSACTION READ WRITE");
    s = stmt0("SET TRANSACTION SNAPSHOT '00000003-0000001B-1'");
    assert_int_equal(s->txn, CRW_TXN_SET_TRANSACTION);
    assert_true(s->whole_txn_primary);
    assert_true(cls("SET TRANSACTION SNAPSHOT '00000003-0000001B-1'")->whole_txn_primary);
    /* The session's defaults: a session SET that pins. */
    s = stmt0("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE");
    assert_int_equal(s->txn, CRW_TXN_NONE);
    assert_int_equal(s->verdict, CRW_READ);
    assert_true(s->is_set);
    assert_true(s->pins);
}

static void test_txn_end(void **state)
{
    (void)state;
    assert_int_equal(stmt0("COMMIT")->txn, CRW_TXN_COMMIT);
    assert_int_equal(stmt0("END")->txn, CRW_TXN_COMMIT);
    assert_int_equal(stmt0("ROLLBACK")->txn, CRW_TXN_ROLLBACK);
    assert_int_equal(stmt0("ABORT")->txn, CRW_TXN_ROLLBACK);
    assert_int_equal(stmt0("SAVEPOINT a")->txn, CRW_TXN_SAVEPOINT);
    assert_int_equal(stmt0("RELEASE SAVEPOINT a")->txn, CRW_TXN_SAVEPOINT);
    assert_int_equal(stmt0("ROLLBACK TO SAVEPOINT a")->txn, CRW_TXN_SAVEPOINT);
    expect_read("COMMIT");
    expect_read("ROLLBACK TO a");
    expect("PREPARE TRANSACTION 'x'", CRW_WRITE, "PREPARE TRANSACTION");
    assert_int_equal(stmt0("PREPARE TRANSACTION 'x'")->txn, CRW_TXN_PREPARED);
    expect("COMMIT PREPARED 'x'", CRW_WRITE, "COMMIT PREPARED");
    assert_int_equal(stmt0("COMMIT PREPARED 'x'")->txn, CRW_TXN_PREPARED);
    expect("ROLLBACK PREPARED 'x'", CRW_WRITE, "ROLLBACK PREPARED");
}

static void test_whole_txn_primary(void **state)
{
    (void)state;
    expect("LOCK TABLE t IN ACCESS EXCLUSIVE MODE", CRW_WRITE, "LOCK");
    assert_true(stmt0("LOCK t")->whole_txn_primary);
    assert_false(stmt0("LOCK t")->pins);
    expect("DECLARE c CURSOR WITH HOLD FOR SELECT 1", CRW_WRITE, "DECLARE");
    const struct classify_rw_stmt *s = stmt0("DECLARE c CURSOR WITH HOLD FOR SELECT 1");
    assert_true(s->whole_txn_primary);
    assert_true(s->pins);
    assert_string_equal(s->pin_reason, "WITH HOLD cursor");
    s = stmt0("DECLARE c CURSOR FOR SELECT 1");
    assert_int_equal(s->verdict, CRW_WRITE);
    assert_false(s->whole_txn_primary);
    assert_false(s->pins);
}

static void test_temp(void **state)
{
    (void)state;
    expect("CREATE TEMP TABLE t (a int)", CRW_WRITE, "CREATE TABLE");
    const struct classify_rw_result *r = cls("CREATE TEMP TABLE t (a int)");
    assert_true(r->pins);
    assert_string_equal(r->pin_reason, "temporary table");
    assert_true(cls("CREATE TEMPORARY TABLE t (a int) ON COMMIT DELETE ROWS")->pins);
    assert_true(cls("CREATE TABLE pg_temp.t (a int)")->pins);
    assert_true(cls("CREATE TEMP TABLE t AS SELECT 1")->pins);
    assert_true(cls("CREATE TEMP VIEW v AS SELECT 1")->pins);
    assert_true(cls("CREATE TEMP SEQUENCE s")->pins);
    expect("CREATE TEMP TABLE t (a int) ON COMMIT DROP", CRW_WRITE, "CREATE TABLE");
    assert_false(cls("CREATE TEMP TABLE t (a int) ON COMMIT DROP")->pins);
    assert_false(cls("CREATE TEMP TABLE t ON COMMIT DROP AS SELECT 1")->pins);
    assert_false(cls("CREATE TABLE t (a int)")->pins);
}

static void test_listen(void **state)
{
    (void)state;
    expect("LISTEN ch", CRW_WRITE, "LISTEN");
    assert_true(cls("LISTEN ch")->pins);
    assert_string_equal(cls("LISTEN ch")->pin_reason, "LISTEN");
    /* SQL-level PREPARE does not pin (sluice tracks it). */
    assert_false(cls("PREPARE p AS SELECT 1")->pins);
}

static void test_set(void **state)
{
    (void)state;
    const struct classify_rw_stmt *s = stmt0("SET x.y = 1");
    assert_int_equal(s->verdict, CRW_READ);
    assert_true(s->is_set);
    assert_false(s->set_local);
    assert_int_equal(s->txn, CRW_TXN_NONE);
    expect_read("SET search_path TO a, b");
    expect_read("RESET ALL");
    assert_true(stmt0("RESET work_mem")->is_set);
    assert_true(stmt0("SET SESSION work_mem = '1MB'")->is_set);
    s = stmt0("SET LOCAL work_mem = '1MB'");
    assert_int_equal(s->verdict, CRW_READ);
    assert_true(s->set_local);
    assert_false(s->is_set);
    assert_false(stmt0("SHOW work_mem")->is_set);
}

/* ---- texts ------------------------------------------------------------------- */

static void test_multi_statement(void **state)
{
    (void)state;
    expect_read("SELECT 1; SELECT 2");
    expect("SELECT 1; INSERT INTO t VALUES (1); SELECT nextval('s')", CRW_WRITE, "INSERT");
    expect("SELECT nextval('s'); INSERT INTO t VALUES (1)", CRW_WRITE, "function nextval");
    expect("SELECT 1; SELECT f()", CRW_LOOKUP, NULL);
    expect("SELECT f(); DELETE FROM t", CRW_WRITE, "DELETE");
    const char *q = "BEGIN; SELECT 1; COMMIT";
    const struct classify_rw_result *r = cls(q);
    assert_int_equal(r->n, 3);
    assert_int_equal(r->stmts[0].txn, CRW_TXN_BEGIN);
    assert_int_equal(r->stmts[2].txn, CRW_TXN_COMMIT);
    assert_int_equal(r->stmts[1].off, 6); /* from the ';' before it, as PostgreSQL says */
    assert_int_equal(r->stmts[1].len, 9);
    struct classify_rw_decision d;
    assert_int_equal(classify_rw_resolve(cls("SELECT 1; DELETE FROM t"), NULL, &d), CRW_WRITE);
    assert_int_equal(d.stmt[0], CRW_READ);
    assert_int_equal(d.stmt[1], CRW_WRITE);
    /* Over the bound: WRITE, truncated, pins past the bound still seen. */
    char big[1024] = "";
    for (int i = 0; i < CLASSIFY_RW_MAX_STMTS; i++)
        strcat(big, "SELECT 1;");
    strcat(big, "LISTEN ch");
    expect(big, CRW_WRITE, "too many statements");
    r = cls(big);
    assert_true(r->truncated);
    assert_int_equal(r->n, CLASSIFY_RW_MAX_STMTS);
    assert_true(r->pins);
    /* Empty: nothing to run. */
    expect_read("");
    expect_read(" ; ");
}

static void test_parse_error(void **state)
{
    (void)state;
    expect("SELEKT 1", CRW_WRITE, "not understood");
    const struct classify_rw_result *r = cls("SELECT (");
    assert_true(r->parse_error);
    assert_int_equal(r->n, 0);
    assert_int_equal(r->verdict, CRW_WRITE);
    expect("SELECT 1; SELEKT 2", CRW_WRITE, "not understood");
}

static void test_hints(void **state)
{
    (void)state;
    assert_int_equal(cls("SELECT 1")->hint, CRW_HINT_NONE);
    assert_int_equal(cls("/* sluice:primary */ SELECT 1")->hint, CRW_HINT_PRIMARY);
    assert_int_equal(cls("SELECT 1 /*sluice:replica*/")->hint, CRW_HINT_REPLICA);
    assert_int_equal(cls("SELECT 1; /* sluice:primary */")->hint, CRW_HINT_PRIMARY);
    assert_int_equal(cls("SELECT /* sluice:replica */ a FROM t")->hint, CRW_HINT_REPLICA);
    /* Both: primary wins. */
    assert_int_equal(cls("/* sluice:replica */ SELECT 1 /* sluice:primary */")->hint,
                     CRW_HINT_PRIMARY);
    /* Not a hint: a string literal, a quoted name, a line comment, other words. */
    assert_int_equal(cls("SELECT '/* sluice:primary */'")->hint, CRW_HINT_NONE);
    assert_int_equal(cls("SELECT $$ /* sluice:primary */ $$")->hint, CRW_HINT_NONE);
    assert_int_equal(cls("SELECT 1 AS \"/* sluice:primary */\"")->hint, CRW_HINT_NONE);
    assert_int_equal(cls("SELECT 1 -- sluice:primary")->hint, CRW_HINT_NONE);
    assert_int_equal(cls("SELECT 1 /* sluice:primary please */")->hint, CRW_HINT_NONE);
    /* A replica hint never makes a write a read. */
    const char *q = "/* sluice:replica */ INSERT INTO t VALUES (1)";
    assert_int_equal(cls(q)->hint, CRW_HINT_REPLICA);
    expect(q, CRW_WRITE, "INSERT");
    /* On a text the parser refuses, still reported. */
    assert_int_equal(cls("/* sluice:primary */ SELEKT")->hint, CRW_HINT_PRIMARY);
    assert_string_equal(classify_rw_hint_str(CRW_HINT_REPLICA), "replica");
}

/* ---- the cache --------------------------------------------------------------- */

static void test_cache(void **state)
{
    (void)state;
    classify_rw_thread_done();
    struct classify_rw_counters c0, c1;
    classify_rw_counters(&c0);
    const char *q = "SELECT a FROM cache_t WHERE id = $1";
    const struct classify_rw_result *r1 = cls(q);
    assert_int_equal(r1->verdict, CRW_READ);
    const struct classify_rw_result *r2 = cls(q);
    assert_ptr_equal(r1, r2);
    classify_rw_counters(&c1);
    assert_int_equal(c1.misses - c0.misses, 1);
    assert_int_equal(c1.hits - c0.hits, 1);
    assert_int_equal(c1.parses - c0.parses, 1);
    /* A copy of the text in other memory hits too. */
    char *copy = strdup(q);
    assert_ptr_equal(classify_rw_cached(copy, strlen(copy)), r1);
    free(copy);
    /* Distinct texts, distinct results. */
    const struct classify_rw_result *w = cls("DELETE FROM cache_t");
    assert_int_equal(w->verdict, CRW_WRITE);
    assert_int_equal(cls(q)->verdict, CRW_READ);
    /* A longer text with the same start is another text. */
    assert_int_equal(cls("SELECT 1")->verdict, CRW_READ);
    assert_int_equal(cls("SELECT 1; DELETE FROM t")->verdict, CRW_WRITE);
    assert_int_equal(cls("SELECT 1")->n, 1);
}

/* A text not seen before whose shape is known (other constants, blanks)
 * is not parsed again; one whose reading looks at its constants, or with
 * a hint, is. */
static void test_cache_by_shape(void **state)
{
    (void)state;
    classify_rw_thread_done();
    struct classify_rw_counters c0, c1;
    const struct classify_rw_result *a =
        cls("UPDATE pgbench_accounts SET abalance = abalance + 17 WHERE aid = 4711");
    assert_int_equal(a->verdict, CRW_WRITE);
    classify_rw_counters(&c0);
    const struct classify_rw_result *b =
        cls("UPDATE pgbench_accounts  SET abalance = abalance + 5 WHERE aid = 12");
    assert_ptr_equal(a, b);
    assert_int_equal(cls("SELECT abalance FROM pgbench_accounts WHERE aid = 1")->verdict, CRW_READ);
    assert_int_equal(cls("SELECT abalance FROM pgbench_accounts WHERE aid = 2")->verdict, CRW_READ);
    assert_int_equal(cls("SELECT abalance FROM pgbench_accounts WHERE aid = 'x'")->n_rels, 1);
    /* A comment that tags the query (sqlcommenter) is no hint. */
    assert_int_equal(
        cls("SELECT abalance FROM pgbench_accounts WHERE aid = 6 /* route='orders' */")->verdict,
        CRW_READ);
    classify_rw_counters(&c1);
    assert_int_equal(c1.parses - c0.parses, 2); /* the SELECT once, the quoted one once */
    /* Constants that the reading looks at: each text its own. */
    assert_int_equal(cls("EXPLAIN (ANALYZE 0) SELECT 1")->verdict, CRW_READ);
    assert_int_equal(cls("EXPLAIN (ANALYZE 1) SELECT 1")->verdict, CRW_WRITE);
    assert_int_equal(cls("BEGIN ISOLATION LEVEL READ COMMITTED")->stmts[0].read_only, -1);
    assert_int_equal(cls("SET TRANSACTION READ ONLY")->stmts[0].read_only, 1);
    assert_int_equal(cls("SET transaction_read_only = 0")->stmts[0].is_set, true);
    /* A hint is in a comment, which the shape leaves out. */
    assert_int_equal(
        cls("SELECT abalance FROM pgbench_accounts WHERE aid = 3 /* sluice:primary */")->hint,
        CRW_HINT_PRIMARY);
    assert_int_equal(cls("SELECT abalance FROM pgbench_accounts WHERE aid = 4")->hint,
                     CRW_HINT_NONE);
    /* Several statements: by shape only if all are of the kinds kept. */
    assert_int_equal(cls("SELECT 1; SELECT 2")->verdict, CRW_READ);
    assert_int_equal(cls("SELECT 3; SELECT 4")->n, 2);
    classify_rw_thread_done();
}

static void test_cache_eviction(void **state)
{
    (void)state;
    classify_rw_thread_done();
    char q[64];
    int total = CLASSIFY_RW_CACHE_ENTRIES * 2 + 100;
    for (int i = 0; i < total; i++) {
        int k = (i % 7 == 0) ? i % 50 : i; /* some texts come back often */
        snprintf(q, sizeof(q), "SELECT f%d(a) FROM t%d", k, k);
        const struct classify_rw_result *r = cls(q);
        char want[32];
        snprintf(want, sizeof(want), "f%d", k);
        assert_int_equal(r->n_funcs, 1);
        assert_string_equal(r->funcs[0].name, want);
        assert_int_equal(r->stmts[0].len, strlen(q));
    }
    /* Every text, old or new, still classifies right. */
    for (int i = 0; i < total; i += 97) {
        snprintf(q, sizeof(q), "SELECT f%d(a) FROM t%d", i, i);
        char want[32];
        snprintf(want, sizeof(want), "f%d", i);
        assert_string_equal(cls(q)->funcs[0].name, want);
    }
    /* The frequent ones stayed. */
    struct classify_rw_counters c0, c1;
    classify_rw_counters(&c0);
    for (int k = 0; k < 50; k += 7) {
        snprintf(q, sizeof(q), "SELECT f%d(a) FROM t%d", k, k);
        cls(q);
    }
    classify_rw_counters(&c1);
    assert_true(c1.hits - c0.hits >= 6);
    classify_rw_thread_done();
    classify_rw_thread_done(); /* twice is fine */
}

static void test_cache_big_text(void **state)
{
    (void)state;
    size_t n = CLASSIFY_RW_CACHE_MAX_TEXT + 100;
    char *q = malloc(n + 1);
    assert_non_null(q);
    memset(q, ' ', n);
    memcpy(q, "SELECT nextval('s')", 19);
    q[n] = '\0';
    struct classify_rw_counters c0, c1;
    classify_rw_counters(&c0);
    const struct classify_rw_result *r = classify_rw_cached(q, n);
    assert_int_equal(r->verdict, CRW_WRITE);
    struct classify_rw_decision d;
    assert_int_equal(classify_rw_resolve(r, NULL, &d), CRW_WRITE);
    assert_string_equal(d.reason, "function nextval");
    r = classify_rw_cached(q, n);
    assert_int_equal(r->verdict, CRW_WRITE);
    classify_rw_counters(&c1);
    assert_int_equal(c1.hits - c0.hits, 0);
    assert_int_equal(c1.parses - c0.parses, 2);
    free(q);
}

static void test_deep_nesting(void **state)
{
    (void)state;
    /* Deeper than the walk goes: the primary, whatever the parser says. */
    size_t depth = 1500;
    char *q = malloc(depth * 5 + 32);
    assert_non_null(q);
    strcpy(q, "SELECT ");
    size_t n = strlen(q);
    for (size_t i = 0; i < depth; i++) {
        memcpy(q + n, "abs(", 4);
        n += 4;
    }
    q[n++] = '1';
    for (size_t i = 0; i < depth; i++)
        q[n++] = ')';
    q[n] = '\0';
    struct classify_rw_result *r = classify_rw_parse(q, n);
    assert_int_equal(r->verdict, CRW_WRITE);
    assert_string_equal(r->reason, "too deeply nested");
    classify_rw_free(r);
    /* A long flat chain is fine. */
    n = (size_t)sprintf(q, "SELECT 1");
    for (int i = 0; i < 200; i++)
        n += (size_t)sprintf(q + n, " + %d", i);
    expect_read(q);
    free(q);
}

/* Each thread has its own cache; the counters add up across threads. */
static void *classify_in_thread(void *arg)
{
    int id = *(int *)arg;
    char q[64];
    for (int i = 0; i < 3000; i++) {
        snprintf(q, sizeof(q), "SELECT f%d(a) FROM t%d", i % 500, id);
        const struct classify_rw_result *r = cls(q);
        char want[16];
        snprintf(want, sizeof(want), "f%d", i % 500);
        if (r->n_funcs != 1 || strcmp(r->funcs[0].name, want) != 0)
            return "wrong result";
        if (i % 3 == 0 &&
            classify_rw_resolve(r, NULL, &(struct classify_rw_decision){0}) != CRW_LOOKUP)
            return "wrong decision";
    }
    classify_rw_thread_done();
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    struct classify_rw_counters c0, c1;
    classify_rw_counters(&c0);
    pthread_t th[2];
    int ids[2] = {1, 2};
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, classify_in_thread, &ids[i]), 0);
    for (int i = 0; i < 2; i++) {
        void *err = NULL;
        assert_int_equal(pthread_join(th[i], &err), 0);
        if (err)
            fail_msg("%s", (const char *)err);
    }
    classify_rw_counters(&c1);
    assert_int_equal(c1.misses - c0.misses, 2 * 500);
    assert_int_equal(c1.hits - c0.hits, 2 * 2500);
}

/* ---- the built-in lists -------------------------------------------------------- */

static void test_builtin_lists(void **state)
{
    (void)state;
    static const enum classify_rw_fclass classes[] = {CRW_FN_STABLE, CRW_FN_SAFE, CRW_FN_WRITE,
                                                      CRW_FN_WRITE_PIN};
    FILE *doc = fopen("docs/routing.md", "r");
    char *text = NULL;
    if (doc) {
        text = calloc(1, 1 << 20);
        assert_non_null(text);
        size_t got = fread(text, 1, (1 << 20) - 1, doc);
        text[got] = '\0';
        fclose(doc);
    }
    for (size_t c = 0; c < sizeof(classes) / sizeof(classes[0]); c++) {
        const char *prev = "";
        for (int i = 0;; i++) {
            const char *name = classify_rw_builtin_name(classes[c], i);
            if (!name)
                break;
            char probe[100], doc_name[128];
            size_t l = strlen(name);
            /* Every entry is found (so each list is sorted), in any schema
             * spelling the rules allow, and documented. */
            if (name[l - 1] == '*') {
                snprintf(probe, sizeof(probe), "%.*sx", (int)(l - 1), name);
            } else {
                assert_true(strcmp(prev, name) < 0);
                prev = name;
                snprintf(probe, sizeof(probe), "%s", name);
            }
            assert_int_equal(classify_rw_builtin(probe), classes[c]);
            snprintf(doc_name, sizeof(doc_name), "pg_catalog.%s", probe);
            assert_int_equal(classify_rw_builtin(doc_name), classes[c]);
            if (text) {
                snprintf(doc_name, sizeof(doc_name), "`%s`", name);
                if (!strstr(text, doc_name))
                    fail_msg("%s is not in docs/routing.md", doc_name);
            }
        }
    }
    free(text);
    assert_int_equal(classify_rw_builtin("app.lower"), CRW_FN_UNKNOWN);
    assert_int_equal(classify_rw_builtin("LOWER"), CRW_FN_UNKNOWN);
    assert_int_equal(classify_rw_builtin("NEXTVAL"), CRW_FN_WRITE);
    assert_int_equal(classify_rw_builtin("PG_CATALOG.nextval"), CRW_FN_WRITE);
    assert_int_equal(classify_rw_builtin("a.b.lower"), CRW_FN_UNKNOWN);
    assert_int_equal(classify_rw_builtin("no_such_function"), CRW_FN_UNKNOWN);
    assert_null(classify_rw_builtin_name(CRW_FN_UNKNOWN, 0));
    assert_null(classify_rw_builtin_name(CRW_FN_STABLE, -1));
    assert_string_equal(classify_rw_fclass_str(CRW_FN_WRITE_PIN), "write_pin");
    assert_string_equal(classify_rw_verdict_str(CRW_LOOKUP), "lookup");
}

/* ---- the relations a text names --------------------------------------------- */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* "name[:w][:cte] ..." in any order: the relations of sql. */
static void expect_rels(const char *sql, const char *want)
{
    const struct classify_rw_result *r = cls(sql);
    char item[CLASSIFY_RW_MAX_RELS][160];
    const char *sorted[CLASSIFY_RW_MAX_RELS];
    for (int i = 0; i < r->n_rels; i++) {
        snprintf(item[i], sizeof(item[i]), "%s%s%s", r->rels[i].name, r->rels[i].write ? ":w" : "",
                 r->rels[i].maybe_cte ? ":cte" : "");
        sorted[i] = item[i];
    }
    qsort(sorted, (size_t)r->n_rels, sizeof(sorted[0]), cmp_str);
    char got[512] = "", w[512], *save = NULL;
    size_t n = 0;
    for (int i = 0; i < r->n_rels; i++)
        n += (size_t)snprintf(got + n, sizeof(got) - n, "%s%s", i ? " " : "", sorted[i]);
    const char *wt[CLASSIFY_RW_MAX_RELS];
    int nw = 0;
    snprintf(w, sizeof(w), "%s", want);
    for (char *t = strtok_r(w, " ", &save); t && nw < CLASSIFY_RW_MAX_RELS;
         t = strtok_r(NULL, " ", &save))
        wt[nw++] = t;
    qsort(wt, (size_t)nw, sizeof(wt[0]), cmp_str);
    char want_sorted[512] = "";
    n = 0;
    for (int i = 0; i < nw; i++)
        n +=
            (size_t)snprintf(want_sorted + n, sizeof(want_sorted) - n, "%s%s", i ? " " : "", wt[i]);
    if (strcmp(got, want_sorted) != 0)
        fail_msg("%s: relations \"%s\", expected \"%s\"", sql, got, want);
    assert_false(r->rels_truncated);
}

static void test_relations(void **state)
{
    (void)state;
    expect_rels("SELECT 1", "");
    expect_rels("select * from Orders o join shop.Items i using (id) where o.x in (select y "
                "from \"Mixed\")",
                "orders shop.items Mixed");
    expect_rels("INSERT INTO t (a) SELECT a FROM s", "t:w s");
    expect_rels("UPDATE t SET a = 1 FROM u WHERE t.id = u.id", "t:w u");
    expect_rels("DELETE FROM app.t USING u WHERE t.id = u.id RETURNING *", "app.t:w u");
    expect_rels("MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE", "t:w s");
    expect_rels("TRUNCATE a, b", "a:w b:w");
    expect_rels("COPY t FROM STDIN", "t:w");
    expect_rels("COPY t TO STDOUT", "t");
    expect_rels("REFRESH MATERIALIZED VIEW CONCURRENTLY daily_sales", "daily_sales:w");
    expect_rels("ALTER TABLE t ADD COLUMN c int", "t:w");
    expect_rels("SELECT * FROM t FOR UPDATE", "t:w");
    /* A CTE's name is no table; the same name qualified is. */
    expect_rels("WITH x AS (SELECT * FROM t) SELECT * FROM x", "t x:cte");
    expect_rels("WITH x AS (SELECT 1) SELECT * FROM x, public.x", "x:cte public.x");
    expect_rels("WITH x AS (SELECT 1) SELECT * FROM x; SELECT * FROM x", "x");
    expect_rels("WITH d AS (DELETE FROM t RETURNING *) INSERT INTO log SELECT * FROM d",
                "log:w d:cte t:w");
    expect_rels("SELECT 1; UPDATE t SET a = 2; SELECT * FROM t", "t:w");
    /* Too many, or not understood: the list is not to be trusted. */
    char big[4096] = "SELECT * FROM t0";
    for (int i = 1; i <= CLASSIFY_RW_MAX_RELS; i++)
        snprintf(big + strlen(big), sizeof(big) - strlen(big), ", t%d", i);
    assert_true(cls(big)->rels_truncated);
    assert_true(cls("SELEC oops")->rels_truncated);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_select),
        cmocka_unit_test(test_relations),
        cmocka_unit_test(test_values_table_show),
        cmocka_unit_test(test_explain),
        cmocka_unit_test(test_locking),
        cmocka_unit_test(test_select_into),
        cmocka_unit_test(test_writable_cte),
        cmocka_unit_test(test_nextval),
        cmocka_unit_test(test_advisory),
        cmocka_unit_test(test_deny_list),
        cmocka_unit_test(test_unknown_function),
        cmocka_unit_test(test_config_lists),
        cmocka_unit_test(test_safe_and_stable),
        cmocka_unit_test(test_lookup),
        cmocka_unit_test(test_many_functions),
        cmocka_unit_test(test_write_statements),
        cmocka_unit_test(test_begin),
        cmocka_unit_test(test_set_transaction),
        cmocka_unit_test(test_txn_end),
        cmocka_unit_test(test_whole_txn_primary),
        cmocka_unit_test(test_temp),
        cmocka_unit_test(test_listen),
        cmocka_unit_test(test_set),
        cmocka_unit_test(test_multi_statement),
        cmocka_unit_test(test_parse_error),
        cmocka_unit_test(test_hints),
        cmocka_unit_test(test_cache),
        cmocka_unit_test(test_cache_by_shape),
        cmocka_unit_test(test_cache_eviction),
        cmocka_unit_test(test_cache_big_text),
        cmocka_unit_test(test_deep_nesting),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_builtin_lists),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    classify_rw_thread_done();
    return rc;
}
