/* test_pg_snapshot.c - pg_current_snapshot()'s text (pg_snapshot.h): read
 * as PostgreSQL writes it, malformed texts refused, and a committed
 * transaction's visibility told as a snapshot taken then would tell it,
 * across the 2^32 wrap of the low bits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "pg_snapshot.h"

static bool parse(struct pg_snapshot *s, const char *text)
{
    return pg_snapshot_parse(s, text, strlen(text));
}

static void test_reads_what_postgres_writes(void **state)
{
    (void)state;
    struct pg_snapshot s = {0};
    assert_true(parse(&s, "748:752:748,750"));
    assert_int_equal(s.xmin, 748);
    assert_int_equal(s.xmax, 752);
    assert_int_equal(s.n_xip, 2);
    assert_true(parse(&s, "800:800:"));
    assert_int_equal(s.n_xip, 0);
    /* xid8 values keep their epoch in the high bits: the low 32 remain. */
    assert_true(parse(&s, "4294967396:4294967400:4294967398"));
    assert_int_equal(s.xmin, 100);
    assert_int_equal(s.xmax, 104);
    assert_int_equal(s.xip[0], 102);
    pg_snapshot_free(&s);
}

static void test_refuses_what_is_not_a_snapshot(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "748",
        "748:",
        "748:752",
        ":752:",
        "748::",
        "a:752:",
        "748:752:x",
        "748:752:748,",
        "748:752:,748",
        "748:752:748,,750",
        "748:752:748 ",
        "-1:2:",
        "123456789012345678901:2:",
        "748;752:",
    };
    struct pg_snapshot s = {0};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_false(parse(&s, bad[i]));
    /* Only len bytes are read: a good text cut short is refused. */
    assert_false(pg_snapshot_parse(&s, "748:752:", 5));
    pg_snapshot_free(&s);
}

static void test_visibility(void **state)
{
    (void)state;
    struct pg_snapshot s = {0};
    assert_true(parse(&s, "748:752:750,748"));
    assert_true(pg_snapshot_shows(&s, 700));  /* before xmin */
    assert_false(pg_snapshot_shows(&s, 748)); /* in progress then */
    assert_true(pg_snapshot_shows(&s, 749));  /* ended between */
    assert_false(pg_snapshot_shows(&s, 750));
    assert_true(pg_snapshot_shows(&s, 751));
    assert_false(pg_snapshot_shows(&s, 752)); /* not ended when taken */
    assert_false(pg_snapshot_shows(&s, 900));
    assert_true(pg_snapshot_past(&s, 747));
    assert_false(pg_snapshot_past(&s, 748));
    assert_false(pg_snapshot_past(&s, 751));
    pg_snapshot_free(&s);
}

static void test_visibility_across_the_wrap(void **state)
{
    (void)state;
    struct pg_snapshot s = {0};
    /* xmin just below 2^32, xmax just past it (in the next epoch). */
    assert_true(parse(&s, "4294967290:4294967301:4294967295,4294967298"));
    assert_int_equal(s.xmax, 5);
    assert_true(pg_snapshot_shows(&s, 4294967280u));
    assert_true(pg_snapshot_shows(&s, 4294967294u));
    assert_false(pg_snapshot_shows(&s, 4294967295u));
    assert_true(pg_snapshot_shows(&s, 1));
    assert_false(pg_snapshot_shows(&s, 2)); /* 4294967298's low bits */
    assert_true(pg_snapshot_shows(&s, 4));
    assert_false(pg_snapshot_shows(&s, 5));
    assert_true(pg_snapshot_past(&s, 4294967289u));
    assert_false(pg_snapshot_past(&s, 3));
    pg_snapshot_free(&s);
}

static void test_many_in_progress(void **state)
{
    (void)state;
    char text[16384];
    size_t n = (size_t)snprintf(text, sizeof(text), "1000:3000:");
    for (unsigned x = 2998; x >= 1000; x -= 2) /* descending: sorted by the parse */
        n += (size_t)snprintf(text + n, sizeof(text) - n, "%s%u", x == 2998 ? "" : ",", x);
    struct pg_snapshot s = {0};
    assert_true(pg_snapshot_parse(&s, text, n));
    assert_int_equal(s.n_xip, 1000);
    for (uint32_t x = 1000; x < 3000; x++)
        assert_int_equal(pg_snapshot_shows(&s, x), x % 2 == 1);
    pg_snapshot_free(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reads_what_postgres_writes),
        cmocka_unit_test(test_refuses_what_is_not_a_snapshot),
        cmocka_unit_test(test_visibility),
        cmocka_unit_test(test_visibility_across_the_wrap),
        cmocka_unit_test(test_many_in_progress),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
