/* test_advice_cand.c - candidate indexes from a statement's text
 * (advice_cand.h), with a made-up catalog. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "advice_cand.h"

/* The catalog: "table.column" entries; a '*' after one: it leads an index. */
static const char *const catalog[] = {"orders.id*",
                                      "orders.customer_id",
                                      "orders.status",
                                      "orders.created_at",
                                      "orders.total",
                                      "customers.id*",
                                      "customers.email",
                                      "customers.region",
                                      "items.order_id",
                                      "items.sku",
                                      NULL};

static enum advice_col cat_col(void *arg, int table, const char *column)
{
    const struct advice_query *q = arg;
    char want[160];
    snprintf(want, sizeof(want), "%s.%s", q->tables[table].name, column);
    for (int i = 0; catalog[i]; i++) {
        size_t n = strlen(want);
        if (!strncmp(catalog[i], want, n) && (!catalog[i][n] || catalog[i][n] == '*'))
            return catalog[i][n] == '*' ? ADVICE_COL_LEADS : ADVICE_COL_PLAIN;
    }
    return ADVICE_COL_NONE;
}

/* The candidates of sql as "table(a,b) table(c)". */
static void cands(const char *sql, char *out, size_t len)
{
    struct advice_query q;
    assert_int_equal(advice_cand_extract(sql, &q), ADVICE_CAND_OK);
    struct advice_index ix[ADVICE_MAX_INDEXES];
    int n = advice_cand_indexes(&q, cat_col, &q, ix, ADVICE_MAX_INDEXES);
    size_t k = 0;
    out[0] = '\0';
    for (int i = 0; i < n && k < len; i++)
        k += (size_t)snprintf(out + k, len - k, "%s%s(%s%s%s)", i ? " " : "",
                              q.tables[ix[i].table].name, ix[i].cols[0], ix[i].ncols > 1 ? "," : "",
                              ix[i].ncols > 1 ? ix[i].cols[1] : "");
}

static void test_where_columns(void **state)
{
    (void)state;
    char got[512];
    cands("SELECT * FROM orders WHERE customer_id = $1", got, sizeof(got));
    assert_string_equal(got, "orders(customer_id)");
    /* id already leads an index: never a candidate's first column */
    cands("SELECT * FROM orders WHERE id = 5 AND status = 'new'", got, sizeof(got));
    assert_string_equal(got, "orders(status) orders(status,id)");
    cands("SELECT * FROM orders o WHERE o.status IN ('a', 'b') AND o.created_at > now() "
          "ORDER BY o.total",
          got, sizeof(got));
    assert_string_equal(got, "orders(status) orders(created_at) orders(total) "
                             "orders(status,created_at) orders(status,total)");
    /* a function of a column is no use of it; unknown columns are skipped */
    cands("SELECT * FROM orders WHERE lower(status) = 'x' AND nosuch = 1", got, sizeof(got));
    assert_string_equal(got, "");
    cands("SELECT * FROM orders WHERE total BETWEEN 1 AND 2 OR customer_id = ANY($1)", got,
          sizeof(got));
    assert_string_equal(got, "orders(customer_id) orders(total) orders(customer_id,total)");
}

static void test_joins_and_subqueries(void **state)
{
    (void)state;
    char got[512];
    /* Unqualified columns go to the one table that has them. */
    cands("SELECT * FROM orders JOIN items ON items.order_id = orders.id WHERE sku = $1", got,
          sizeof(got));
    assert_string_equal(got, "items(order_id) items(sku) items(order_id,sku) items(sku,order_id)");
    cands("SELECT * FROM public.customers c, orders o WHERE c.id = o.customer_id AND c.region = $1",
          got, sizeof(got));
    assert_string_equal(got, "orders(customer_id) customers(region) customers(region,id)");
    cands("SELECT * FROM customers WHERE id IN (SELECT customer_id FROM orders WHERE status = $1)",
          got, sizeof(got));
    assert_string_equal(got, "orders(status)");
    cands("WITH recent AS (SELECT * FROM orders WHERE created_at > $1) "
          "SELECT * FROM recent WHERE status = 'x'",
          got, sizeof(got));
    assert_string_equal(got, "orders(created_at)");
    /* ambiguous: id is in both, so neither */
    cands("SELECT * FROM orders, customers WHERE id = 1 AND email = $1", got, sizeof(got));
    assert_string_equal(got, "customers(email)");
}

static void test_not_reads(void **state)
{
    (void)state;
    struct advice_query q;
    assert_int_equal(advice_cand_extract("SELECT * FROM orders FOR UPDATE", &q),
                     ADVICE_CAND_NOT_READ);
    assert_int_equal(advice_cand_extract("SELECT * INTO t2 FROM orders", &q), ADVICE_CAND_NOT_READ);
    assert_int_equal(
        advice_cand_extract("WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d", &q),
        ADVICE_CAND_NOT_READ);
    assert_int_equal(advice_cand_extract("UPDATE orders SET status = 'x' WHERE id = 1", &q),
                     ADVICE_CAND_NOT_SELECT);
    assert_int_equal(advice_cand_extract("SELECT 1; SELECT 2", &q), ADVICE_CAND_NOT_SELECT);
    assert_int_equal(advice_cand_extract("SELEC 1", &q), ADVICE_CAND_PARSE_ERROR);
}

static void test_sql(void **state)
{
    (void)state;
    char buf[300];
    struct advice_index ix = {0, 2, {"customer_id", "order"}};
    assert_true(advice_cand_index_sql("public", "Orders", &ix, true, buf, sizeof(buf)));
    assert_string_equal(buf,
                        "CREATE INDEX CONCURRENTLY ON public.\"Orders\" (customer_id, \"order\")");
    ix.ncols = 1;
    assert_true(advice_cand_index_sql("s", "t", &ix, false, buf, sizeof(buf)));
    assert_string_equal(buf, "CREATE INDEX ON s.t (customer_id)");
    assert_true(advice_cand_quote("a\"b", buf, sizeof(buf)));
    assert_string_equal(buf, "\"a\"\"b\"");
    assert_true(advice_cand_quote("1x", buf, sizeof(buf)));
    assert_string_equal(buf, "\"1x\"");
    assert_false(advice_cand_quote("abcdef", buf, 6));
    assert_false(advice_cand_index_sql("public", "orders", &ix, true, buf, 20));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_where_columns),
        cmocka_unit_test(test_joins_and_subqueries),
        cmocka_unit_test(test_not_reads),
        cmocka_unit_test(test_sql),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
