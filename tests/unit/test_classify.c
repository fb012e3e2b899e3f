/* test_classify.c - the first-keyword pre-classifier and the libpg_query
 * based statement classifier. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "classify.h"

static enum classify_kw peek(const char *s)
{
    return classify_peek(s, strlen(s));
}

static void test_peek_keywords(void **state)
{
    (void)state;
    assert_int_equal(peek("SELECT 1"), CK_OTHER);
    assert_int_equal(peek("  insert into t values (1)"), CK_OTHER);
    assert_int_equal(peek("set search_path = a"), CK_SET);
    assert_int_equal(peek("\n\t-- comment\nSeT x = 1"), CK_SET);
    assert_int_equal(peek("-- a carriage return ends it too\rSET x = 1"), CK_SET);
    assert_int_equal(peek("/* a /* nested */ comment */ RESET ALL"), CK_RESET);
    assert_int_equal(peek("PREPARE p AS SELECT 1"), CK_PREPARE);
    assert_int_equal(peek("execute p(1)"), CK_EXECUTE);
    assert_int_equal(peek("DEALLOCATE ALL"), CK_DEALLOCATE);
    assert_int_equal(peek("discard all"), CK_DISCARD);
    assert_int_equal(peek("LISTEN ch"), CK_LISTEN);
    assert_int_equal(peek("unlisten *"), CK_LISTEN);
    assert_int_equal(peek("UPDATE t SET x = 1"), CK_OTHER);
    assert_int_equal(peek("create temp table t (x int)"), CK_CREATE_TEMP);
    assert_int_equal(peek("CREATE TEMPORARY TABLE t (x int)"), CK_CREATE_TEMP);
    assert_int_equal(peek("CREATE TABLE t (x int)"), CK_OTHER);
    assert_int_equal(peek("DECLARE c CURSOR WITH HOLD FOR SELECT 1"), CK_DECLARE);
    assert_int_equal(peek("SELECT pg_advisory_lock(1)"), CK_ADVISORY);
    assert_int_equal(peek("SELECT pg_advisory_xact_lock(1)"), CK_OTHER);
    assert_int_equal(peek("SELECT PG_ADVISORY_LOCK(1)"), CK_ADVISORY);
    assert_int_equal(peek("select pg_try_advisory_lock_shared(2)"), CK_ADVISORY);
    assert_int_equal(peek("SELECT a_b, c_d FROM t_e WHERE x_y = 1"), CK_OTHER);
    assert_int_equal(peek("SELECT advisory_lock"), CK_ADVISORY);
    assert_int_equal(peek("SELECT advisory_loc"), CK_OTHER);
    assert_int_equal(peek("SELECT _"), CK_OTHER);
    /* SELECT INTO TEMP makes a temporary table: the parse decides. */
    assert_int_equal(peek("SELECT 1 AS x INTO TEMP t"), CK_CREATE_TEMP);
    assert_int_equal(peek("select * into temporary t from u"), CK_CREATE_TEMP);
    assert_int_equal(peek("SELECT * INTO Temp t FROM u"), CK_CREATE_TEMP);
    assert_int_equal(peek("SELECT temp FROM u"), CK_CREATE_TEMP); /* a parse, no pin */
    assert_int_equal(peek("SELECT temperature, tempo, atemp, temp_c FROM u"), CK_OTHER);
    assert_int_equal(peek("SELECT upper(p) FROM tem"), CK_OTHER);
    assert_int_equal(peek("WITH x AS (SELECT 1) SELECT * INTO TEMP t FROM x"), CK_CREATE_TEMP);
    assert_int_equal(peek("with x as (select pg_advisory_lock(1)) select 1"), CK_ADVISORY);
    /* A statement after the first: the parse decides. */
    assert_int_equal(peek("SELECT 1; SET a = 1"), CK_MULTI);
    assert_int_equal(peek("INSERT INTO t VALUES (1);SET a = 1"), CK_MULTI);
    assert_int_equal(peek("VALUES (1); -- x\n RESET a"), CK_MULTI);
    assert_int_equal(peek("SELECT 1;"), CK_OTHER);
    assert_int_equal(peek("SELECT 1; ; -- done\n /* end */ ;"), CK_OTHER);
    assert_int_equal(peek("UPDATE t SET a = 1;\n"), CK_OTHER);
    assert_int_equal(peek("SELECT ';'"), CK_MULTI); /* a parse, which finds one */
    assert_int_equal(peek("SETTINGS"), CK_OTHER);
    assert_int_equal(peek(""), CK_OTHER);
    assert_int_equal(peek("/* unterminated SET"), CK_OTHER);
    /* A prefix: only what is there counts. */
    assert_int_equal(classify_peek("SET x = 1", 3), CK_SET);
    assert_string_equal(classify_kw_str(CK_SET), "set");
}

/* A lone BEGIN cannot have committed anything: what sluice tells a client
 * whose server was lost with one in flight depends on it (relay.c). */
#define MORE(s) classify_peek_more((s), strlen(s))

static void test_peek_begin(void **state)
{
    (void)state;
    assert_int_equal(peek("BEGIN"), CK_BEGIN);
    assert_int_equal(peek("  begin;  "), CK_BEGIN);
    assert_int_equal(peek("BEGIN ISOLATION LEVEL SERIALIZABLE, READ ONLY;"), CK_BEGIN);
    assert_int_equal(peek("begin work -- a comment; with a semicolon\n"), CK_BEGIN);
    assert_int_equal(peek("START TRANSACTION READ WRITE"), CK_BEGIN);
    assert_int_equal(peek("/* x */ start transaction;;"), CK_BEGIN);
    /* The NUL that ends a Query message ends the text. */
    assert_int_equal(classify_peek("BEGIN\0", 6), CK_BEGIN);
    /* Anything more may commit (and is parsed: a statement after the first). */
    assert_int_equal(peek("BEGIN; INSERT INTO t VALUES (1); COMMIT"), CK_MULTI);
    assert_int_equal(peek("BEGIN;COMMIT"), CK_MULTI);
    assert_int_equal(peek("BEGIN /* ; */ ; select 1"), CK_MULTI);
    assert_int_equal(peek("START"), CK_OTHER);
    assert_int_equal(peek("START REPLICATION"), CK_OTHER);
    assert_int_equal(peek("BEGINS"), CK_OTHER);
    assert_int_equal(peek("BEGIN_X"), CK_OTHER);
    assert_int_equal(peek("BEGIN $$;$$"), CK_MULTI);
    assert_true(classify_kw_plain(CK_BEGIN));
    assert_true(classify_kw_plain(CK_OTHER));
    assert_false(classify_kw_plain(CK_SET));
    assert_string_equal(classify_kw_str(CK_BEGIN), "begin");
    /* A window of a longer query: the rest decides. */
    assert_true(MORE("BEGIN ISOLATION"));
}

static void test_peek_more(void **state)
{
    (void)state;
    /* A prefix that does not decide: more of the query is needed. */
    assert_true(MORE("/* a comment that goes on"));
    assert_true(MORE("   "));
    assert_true(MORE("SEL"));
    assert_true(MORE("SELECT a, b FROM t WHERE "));
    assert_true(MORE("CREATE "));
    assert_true(MORE("CREATE TEM"));
    /* One that does. */
    assert_false(MORE("INSERT INTO t VALUES (1, 2"));
    assert_false(MORE("SELECT pg_advisory_lock(1), "));
    assert_false(MORE("SET x = "));
    assert_false(MORE("CREATE TABLE t ("));
    assert_false(MORE("/* c */ UPDATE t SET"));
}

static void test_ident(void **state)
{
    (void)state;
    char out[64];
    assert_int_equal(classify_ident("Foo_1 (x)", 9, out, sizeof(out)), 5);
    assert_string_equal(out, "foo_1");
    assert_int_equal(classify_ident("\"My \"\"P\"\"\" AS", 13, out, sizeof(out)), 10);
    assert_string_equal(out, "My \"P\"");
    assert_int_equal(classify_ident("(x)", 3, out, sizeof(out)), 0);
    assert_int_equal(classify_ident("\"open", 5, out, sizeof(out)), 0);
}

static void test_parse_set(void **state)
{
    (void)state;
    struct classify_result r;
    const char *q = "SET search_path TO a, 'b'; set local x.y = 1; RESET ALL; RESET foo;"
                    " SET x TO DEFAULT; SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY;"
                    " SET TRANSACTION ISOLATION LEVEL SERIALIZABLE";
    assert_true(classify_parse(q, strlen(q), &r));
    assert_int_equal(r.n, 7);
    assert_int_equal(r.stmts[0].kind, CS_SET);
    assert_string_equal(r.stmts[0].name, "search_path");
    assert_int_equal(r.stmts[0].off, 0);
    assert_int_equal(r.stmts[0].len, strlen("SET search_path TO a, 'b'"));
    assert_int_equal(r.stmts[1].kind, CS_SET_LOCAL);
    assert_int_equal(r.stmts[2].kind, CS_RESET_ALL);
    assert_int_equal(r.stmts[3].kind, CS_RESET);
    assert_string_equal(r.stmts[3].name, "foo");
    assert_int_equal(r.stmts[4].kind, CS_RESET);
    assert_int_equal(r.stmts[5].kind, CS_SET);
    assert_int_equal(r.stmts[6].kind, CS_SET_LOCAL);
    assert_true(classify_parse_count() >= 1);
}

static void test_parse_prepared(void **state)
{
    (void)state;
    struct classify_result r;
    const char *q = "PREPARE \"Foo\"(int, text) AS SELECT $1";
    assert_true(classify_parse(q, strlen(q), &r));
    assert_int_equal(r.n, 1);
    assert_int_equal(r.stmts[0].kind, CS_PREPARE);
    assert_string_equal(r.stmts[0].name, "Foo");
    assert_int_equal(r.stmts[0].name_off, 8);
    assert_int_equal(r.stmts[0].name_len, 5);

    q = "/* c */ EXECUTE foo (1, 'x')";
    assert_true(classify_parse(q, strlen(q), &r));
    assert_int_equal(r.stmts[0].kind, CS_EXECUTE);
    assert_string_equal(r.stmts[0].name, "foo");
    assert_memory_equal(q + r.stmts[0].name_off, "foo", 3);
    assert_int_equal(r.stmts[0].name_len, 3);

    q = "DEALLOCATE PREPARE foo";
    assert_true(classify_parse(q, strlen(q), &r));
    assert_int_equal(r.stmts[0].kind, CS_DEALLOCATE);
    assert_string_equal(r.stmts[0].name, "foo");
    q = "DEALLOCATE ALL";
    assert_true(classify_parse(q, strlen(q), &r));
    assert_int_equal(r.stmts[0].kind, CS_DEALLOCATE_ALL);
    q = "DISCARD ALL";
    assert_true(classify_parse(q, strlen(q), &r));
    assert_int_equal(r.stmts[0].kind, CS_DISCARD_ALL);
    q = "DISCARD PLANS";
    assert_true(classify_parse(q, strlen(q), &r));
    assert_int_equal(r.stmts[0].kind, CS_OTHER);
}

static void test_parse_pins(void **state)
{
    (void)state;
    struct classify_result r;
    const char *pins[] = {"CREATE TEMP TABLE t (x int)", "CREATE TEMP TABLE t AS SELECT 1",
                          "DECLARE c CURSOR WITH HOLD FOR SELECT 1", "SELECT 1 AS x INTO TEMP t",
                          "SELECT * INTO TEMPORARY t FROM u"};
    for (size_t i = 0; i < sizeof(pins) / sizeof(pins[0]); i++) {
        assert_true(classify_parse(pins[i], strlen(pins[i]), &r));
        assert_int_equal(r.stmts[0].kind, CS_PIN);
        assert_non_null(r.stmts[0].reason);
    }
    const char *ok[] = {"CREATE TEMP TABLE t (x int) ON COMMIT DROP",
                        "DECLARE c CURSOR FOR SELECT 1", "CREATE TABLE t (x int)",
                        "SELECT temp FROM u", "SELECT * INTO t FROM pg_temp.u"};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        assert_true(classify_parse(ok[i], strlen(ok[i]), &r));
        assert_int_equal(r.stmts[0].kind, CS_OTHER);
    }
    assert_true(classify_parse("LISTEN Ch", 9, &r));
    assert_int_equal(r.stmts[0].kind, CS_LISTEN);
    assert_string_equal(r.stmts[0].name, "ch");
    assert_true(classify_parse("LISTEN \"My \"\"x\"", 15, &r));
    assert_int_equal(r.stmts[0].kind, CS_LISTEN);
    assert_string_equal(r.stmts[0].name, "My \"x");
    assert_true(classify_parse("UNLISTEN ch", 11, &r));
    assert_int_equal(r.stmts[0].kind, CS_UNLISTEN);
    assert_string_equal(r.stmts[0].name, "ch");
    assert_true(classify_parse("UNLISTEN *", 10, &r));
    assert_int_equal(r.stmts[0].kind, CS_UNLISTEN_ALL);
    assert_false(classify_parse("SELEKT 1", 8, &r));
    assert_true(r.parse_error);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_peek_keywords), cmocka_unit_test(test_peek_more),
        cmocka_unit_test(test_peek_begin),    cmocka_unit_test(test_ident),
        cmocka_unit_test(test_parse_set),     cmocka_unit_test(test_parse_prepared),
        cmocka_unit_test(test_parse_pins),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
