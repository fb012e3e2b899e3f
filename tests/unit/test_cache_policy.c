/* test_cache_policy.c - what the result cache reads of statements: the
 * facts of a prepared text, found once per thread (cache_policy_facts()),
 * say what the functions they stand for say. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cache_policy.h"
#include "classify_rw.h"
#include "sql_shape.h"

struct names {
    int n;
    char v[16][CACHE_CATALOG_MAX_NAME];
};

static void add(void *arg, const char *name)
{
    struct names *ns = arg;
    if (ns->n < 16)
        snprintf(ns->v[ns->n++], CACHE_CATALOG_MAX_NAME, "%s", name);
}

/* The facts of sql against the functions themselves. */
static void check(const char *sql)
{
    size_t len = strlen(sql);
    const struct cache_text_facts *f = cache_policy_facts(sql, len);
    assert_int_equal(f->may_write, cache_policy_may_write(sql, len));
    assert_int_equal(f->taints[0], cache_policy_taints(sql, len, false));
    assert_int_equal(f->taints[1], cache_policy_taints(sql, len, true));
    if (!f->may_write) {
        assert_true(f->named);
        assert_int_equal(f->n_names, 0);
        return;
    }
    struct names ns = {0};
    bool named = cache_policy_writes(sql, len, add, &ns);
    assert_int_equal(f->named, named);
    assert_int_equal(f->overflow, ns.n > CACHE_FACTS_NAMES);
    if (f->overflow)
        return;
    assert_int_equal(f->n_names, ns.n);
    for (int i = 0; i < ns.n; i++)
        assert_string_equal(f->names[i], ns.v[i]);
}

static const char *const texts[] = {
    "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
    "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2",
    "insert into public.pgbench_history (tid, bid, aid, delta, mtime) values ($1, $2, $3, $4, "
    "now())",
    "DELETE FROM ONLY \"Orders\" WHERE id = $1",
    "WITH a AS (UPDATE t1 SET x = 1 RETURNING *), b AS (DELETE FROM t2 RETURNING *) "
    "INSERT INTO t3 SELECT * FROM a",
    "WITH a AS (UPDATE t1 SET x = 1), b AS (UPDATE t2 SET x = 1), c AS (UPDATE t3 SET x = 1), "
    "d AS (UPDATE t4 SET x = 1) UPDATE t5 SET x = 1",
    "CREATE TABLE t (a int)",
    "CREATE TEMP TABLE tt (a int)",
    "SELECT set_config('app.tenant', $1, false)",
    "SET search_path = app",
    "BEGIN",
    "END",
    "SELECT * INTO new_t FROM t",
    "SELECT 1; UPDATE t SET x = 1",
    "BEGIN; DELETE FROM t; COMMIT",
    "SELECT 1; SET app.tenant = 'b'",
    "SELECT ';'",
    "",
};

static void test_facts_as_the_functions_say(void **state)
{
    (void)state;
    for (int round = 0; round < 2; round++) /* found, then known */
        for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++)
            check(texts[i]);
}

/* A simple Query's text may hold several statements: a quiet first one
 * (BEGIN, SELECT) says nothing of the others. */
static void test_every_statement_of_a_text(void **state)
{
    (void)state;
    static const struct {
        const char *sql;
        bool may_write, taints_session;
    } cases[] = {
        {"SELECT 1; UPDATE t SET x = 1", true, false},
        {"BEGIN; DELETE FROM t; COMMIT", true, false},
        {"BEGIN; COMMIT;", false, false},
        {"SELECT ';' /* ; */", false, false},
        {"SELECT 1; SET app.tenant = 'b'", false, true},
        {"SELECT 1;;RESET ALL", false, true},
        {"SELECT 1; CREATE TEMP TABLE x (a int)", true, true},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t len = strlen(cases[i].sql);
        assert_int_equal(cache_policy_may_write(cases[i].sql, len), cases[i].may_write);
        assert_int_equal(cache_policy_taints(cases[i].sql, len, true), cases[i].taints_session);
        assert_false(cache_policy_taints(cases[i].sql, len, false));
    }
}

static void test_known_texts_are_not_read_again(void **state)
{
    (void)state;
    const char *sql = texts[1];
    const struct cache_text_facts *a = cache_policy_facts(sql, strlen(sql));
    const struct cache_text_facts *b = cache_policy_facts(sql, strlen(sql));
    assert_ptr_equal(a, b);
    /* The same bytes elsewhere (a client's buffer): the same facts. */
    char copy[256];
    snprintf(copy, sizeof(copy), "%s", sql);
    assert_ptr_equal(cache_policy_facts(copy, strlen(copy)), a);
    /* One byte different: other facts, right ones. */
    copy[8] = 'x'; /* UPDATE pxbench_accounts */
    const struct cache_text_facts *c = cache_policy_facts(copy, strlen(copy));
    assert_int_equal(c->n_names, 1);
    assert_string_equal(c->names[0], "pxbench_accounts");
    /* A prefix of a known text is another text. */
    assert_ptr_not_equal(cache_policy_facts(sql, 6), a);
    check("UPDATE");
}

static void test_many_texts_and_long_ones(void **state)
{
    (void)state;
    /* Far more texts than slots: each answer is still its own text's. */
    char sql[128];
    for (int i = 0; i < 3000; i++) {
        snprintf(sql, sizeof(sql), "UPDATE table_%d SET x = $1", i);
        const struct cache_text_facts *f = cache_policy_facts(sql, strlen(sql));
        char want[32];
        snprintf(want, sizeof(want), "table_%d", i);
        assert_int_equal(f->n_names, 1);
        assert_string_equal(f->names[0], want);
    }
    /* A text longer than the table keeps is read each time. */
    size_t n = 5000;
    char *big = malloc(n + 1);
    assert_non_null(big);
    memcpy(big, "UPDATE big_t SET x = '", 22);
    memset(big + 22, 'a', n - 23);
    big[n - 1] = '\'';
    big[n] = '\0';
    check(big);
    free(big);
}

/* The facts of a simple Query by its shape: what the functions say of
 * the first text of the shape holds for the others; texts whose facts a
 * constant may change, or with several statements, are not kept so. */
static const struct cache_text_facts *by_shape(const char *sql)
{
    size_t len = strlen(sql);
    assert_true(cache_policy_by_shape(sql, len));
    return cache_policy_shape_facts(sql_shape(sql, len), sql, len);
}

static void test_simple_query_facts_by_shape(void **state)
{
    (void)state;
    const struct cache_text_facts *a = by_shape("UPDATE pgbench_accounts SET abalance = "
                                                "abalance + 4711 WHERE aid = 17");
    assert_true(a->may_write && a->named);
    assert_int_equal(a->n_names, 1);
    assert_string_equal(a->names[0], "pgbench_accounts");
    const struct cache_text_facts *b = by_shape("UPDATE  pgbench_accounts SET abalance = "
                                                "abalance + 12 WHERE aid = 99 /* x */");
    assert_ptr_equal(a, b); /* one shape: found once */
    const struct cache_text_facts *c = by_shape("UPDATE pgbench_branches SET bbalance = "
                                                "bbalance + 4711 WHERE bid = 17");
    assert_int_equal(c->n_names, 1);
    assert_string_equal(c->names[0], "pgbench_branches");
    const struct cache_text_facts *d = by_shape("SELECT abalance FROM pgbench_accounts WHERE "
                                                "aid = 5");
    assert_false(d->may_write);
    assert_true(by_shape("SELECT set_config('app.t', '1', false)")->taints[0]);
    assert_true(by_shape("BEGIN")->named);
    static const char *const not_by_shape[] = {
        "EXPLAIN (ANALYZE 0) DELETE FROM t",
        "EXPLAIN (ANALYZE 1) DELETE FROM t",
        "SELECT 1; DELETE FROM t",
        "SET search_path = a",
        "COPY t FROM STDIN",
    };
    for (size_t i = 0; i < sizeof(not_by_shape) / sizeof(not_by_shape[0]); i++)
        assert_false(cache_policy_by_shape(not_by_shape[i], strlen(not_by_shape[i])));
    const char *trailing = "DELETE FROM t WHERE id = 1; ";
    assert_true(cache_policy_by_shape(trailing, strlen(trailing)));
}

static int teardown(void **state)
{
    (void)state;
    cache_policy_thread_done();
    classify_rw_thread_done();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_facts_as_the_functions_say),
        cmocka_unit_test(test_every_statement_of_a_text),
        cmocka_unit_test(test_known_texts_are_not_read_again),
        cmocka_unit_test(test_many_texts_and_long_ones),
        cmocka_unit_test(test_simple_query_facts_by_shape),
    };
    return cmocka_run_group_tests(tests, NULL, teardown);
}
