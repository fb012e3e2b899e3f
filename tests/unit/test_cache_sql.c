/* test_cache_sql.c - the result cache's reading of statement texts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "cache_sql.h"

static bool target(const char *sql, char *name)
{
    return cache_sql_dml_target(sql, strlen(sql), name, 64);
}

static void test_dml_targets(void **state)
{
    (void)state;
    char n[64];
    assert_true(target("INSERT INTO Orders (a) VALUES (1)", n));
    assert_string_equal(n, "orders");
    assert_true(target("  update ONLY public.\"Stock\" set x = 1 where y = 'a;b'", n));
    assert_string_equal(n, "public.Stock");
    assert_true(target("/* c */ DELETE FROM s.t WHERE a = $1;", n));
    assert_string_equal(n, "s.t");
    assert_true(target("UPDATE t SET a = E'x\\';y' WHERE b = $$;$$", n));
    assert_string_equal(n, "t");
    /* Anything else is for the parser. */
    assert_false(target("UPDATE a SET x = 1; UPDATE b SET x = 1", n));
    assert_false(target("WITH x AS (DELETE FROM a) INSERT INTO b SELECT 1", n));
    assert_false(target("INSERT INTO a.b.c VALUES (1)", n));
    assert_false(target("SELECT 1", n));
    assert_false(target("UPDATE 'a' SET x = 1", n));
    assert_false(target("UPDATE t SET a = 'unterminated", n));
    assert_false(target("DELETE t", n));
}

static void test_hints(void **state)
{
    (void)state;
    int64_t ttl;
    const char *a = "SELECT /* sluice:cache ttl=60 */ 1";
    assert_int_equal(cache_sql_hint(a, strlen(a), &ttl), CACHE_HINT_CACHE);
    assert_int_equal(ttl, 60 * 1000000LL);
    const char *b = "SELECT /*sluice:cache*/ 1";
    assert_int_equal(cache_sql_hint(b, strlen(b), &ttl), CACHE_HINT_CACHE);
    assert_int_equal(ttl, 0);
    const char *c = "SELECT /* sluice:cache */ /* sluice:nocache */ 1";
    assert_int_equal(cache_sql_hint(c, strlen(c), &ttl), CACHE_HINT_NOCACHE);
    const char *d = "SELECT 'sluice:cache' /* other */";
    assert_int_equal(cache_sql_hint(d, strlen(d), &ttl), CACHE_HINT_NONE);
}

static void test_words(void **state)
{
    (void)state;
    char w[16];
    const char *a = " -- x\n /* y */ ((Select 1))";
    cache_sql_first_word(a, strlen(a), w, sizeof(w));
    assert_string_equal(w, "select");
    const char *cr = "-- a line ended by a carriage return\rDELETE FROM t";
    cache_sql_first_word(cr, strlen(cr), w, sizeof(w));
    assert_string_equal(w, "delete");
    cache_sql_first_word("", 0, w, sizeof(w));
    assert_string_equal(w, "");
    assert_true(cache_sql_contains("SELECT SET_CONFIG('a','b',false)", 32, "set_config"));
    assert_false(cache_sql_contains("SELECT 1", 8, "set_config"));
}

/* The statements of a simple Query, literals and comments not split. */
static void test_statements(void **state)
{
    (void)state;
    const char *a = "BEGIN; UPDATE t SET s = ';' /* ; */ WHERE x = $q$;$q$; -- ;\n COMMIT ;  ";
    size_t n = strlen(a);
    const char *p = cache_sql_next_statement(a, n, a);
    assert_non_null(p);
    assert_int_equal(strncmp(p, "UPDATE", 6), 0);
    p = cache_sql_next_statement(a, n, p);
    assert_non_null(p);
    assert_int_equal(strncmp(p, "COMMIT", 6), 0);
    assert_null(cache_sql_next_statement(a, n, p)); /* the last: a ';' and blanks follow */
    const char *b = "SELECT 'a;b'";
    assert_null(cache_sql_next_statement(b, strlen(b), b));
    const char *c = "SELECT 'no end; DELETE FROM t";
    assert_null(cache_sql_next_statement(c, strlen(c), c)); /* the server refuses it whole */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dml_targets),
        cmocka_unit_test(test_hints),
        cmocka_unit_test(test_words),
        cmocka_unit_test(test_statements),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
