/* test_explain_cost.c - the top plan's Total Cost from EXPLAIN (FORMAT
 * JSON) (explain_cost.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "explain_cost.h"

static enum explain_cost_status parse(const char *json, double *v)
{
    return explain_cost_parse(json, strlen(json), v);
}

static void test_postgres_output(void **state)
{
    (void)state;
    /* As PostgreSQL 15 writes it, with a nested plan whose cost is lower. */
    const char *json =
        "[\n  {\n    \"Plan\": {\n      \"Node Type\": \"Limit\",\n"
        "      \"Parallel Aware\": false,\n      \"Startup Cost\": 0.29,\n"
        "      \"Total Cost\": 8.31,\n      \"Plan Rows\": 1,\n"
        "      \"Plans\": [\n        {\n          \"Node Type\": \"Index Scan\",\n"
        "          \"Index Name\": \"<13544>btree_t_b\",\n"
        "          \"Total Cost\": 1.5e1,\n          \"Filter\": \"(a = \\\"x\\\")\"\n"
        "        }\n      ]\n    }\n  }\n]";
    double v = 0;
    assert_int_equal(parse(json, &v), EXPLAIN_COST_OK);
    assert_true(v > 8.30 && v < 8.32);
    assert_int_equal(parse("[{\"Plan\": {\"Total Cost\": 1693.00}, \"Planning\": {}}]", &v),
                     EXPLAIN_COST_OK);
    assert_true(v > 1692.99 && v < 1693.01);
}

static void test_refused(void **state)
{
    (void)state;
    double v = 42;
    assert_int_equal(parse("", &v), EXPLAIN_COST_BAD);
    assert_int_equal(parse("[{\"Plan\": {\"Total Cost\": 12", &v), EXPLAIN_COST_BAD);
    assert_int_equal(parse("[{\"Plan\": {\"Total Cost\": 12}}] x", &v), EXPLAIN_COST_BAD);
    assert_int_equal(parse("[{\"Plan\": {\"Total Cost\": \"12\"}}]", &v), EXPLAIN_COST_MISSING);
    assert_int_equal(parse("[{\"Plan\": {\"Startup Cost\": 1}}]", &v), EXPLAIN_COST_MISSING);
    assert_int_equal(parse("[]", &v), EXPLAIN_COST_MISSING);
    assert_int_equal(parse("{\"Plan\": {\"Total Cost\": 3}}", &v), EXPLAIN_COST_MISSING);
    assert_int_equal(parse("[{\"Plan\": {\"Total Cost\": -}}]", &v), EXPLAIN_COST_BAD);
    assert_int_equal(parse("[{\"Pl\\an\": 1}]", &v), EXPLAIN_COST_BAD);
    assert_int_equal(v, 42); /* untouched unless OK */
    /* nesting past the bound */
    char deep[2 * EXPLAIN_COST_MAX_DEPTH + 20];
    size_t k = 0;
    for (int i = 0; i < EXPLAIN_COST_MAX_DEPTH + 5; i++)
        deep[k++] = '[';
    deep[k] = '\0';
    assert_int_equal(parse(deep, &v), EXPLAIN_COST_BAD);
    assert_string_equal(explain_cost_status_str(EXPLAIN_COST_MISSING), "no Total Cost");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_postgres_output),
        cmocka_unit_test(test_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
