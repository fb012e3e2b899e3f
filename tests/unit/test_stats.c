/* test_stats.c - counter sums and the PgBouncer-style periodic stats line. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "stats.h"

#define SEC(n) ((int64_t)(n)*1000000)

static void test_add(void **state)
{
    (void)state;
    struct stats dst = {1, 2, 3, 4, 5, 6, 7, 8};
    const struct stats src = {10, 20, 30, 40, 50, 60, 70, 80};
    stats_add(&dst, &src);
    assert_int_equal(dst.xact_count, 11);
    assert_int_equal(dst.query_count, 22);
    assert_int_equal(dst.bytes_in, 33);
    assert_int_equal(dst.bytes_out, 44);
    assert_int_equal(dst.xact_time, 55);
    assert_int_equal(dst.query_time, 66);
    assert_int_equal(dst.wait_time, 77);
    assert_int_equal(dst.wait_count, 88);
    /* src is untouched. */
    assert_int_equal(src.xact_count, 10);
    assert_int_equal(src.wait_count, 80);

    /* Adding zero changes nothing. */
    const struct stats zero = {0};
    struct stats before = dst;
    stats_add(&dst, &zero);
    assert_memory_equal(&dst, &before, sizeof(dst));

    /* Summing per-worker counters into a total. */
    struct stats total = {0};
    const struct stats workers[3] = {
        {.xact_count = 1, .bytes_in = 100, .wait_count = 1},
        {.xact_count = 2, .bytes_in = 200, .query_time = 5},
        {.xact_count = 3, .bytes_out = UINT64_C(1) << 40},
    };
    for (int i = 0; i < 3; i++)
        stats_add(&total, &workers[i]);
    assert_int_equal(total.xact_count, 6);
    assert_int_equal(total.bytes_in, 300);
    assert_int_equal(total.bytes_out, UINT64_C(1) << 40);
    assert_int_equal(total.query_time, 5);
    assert_int_equal(total.wait_count, 1);
    assert_int_equal(total.query_count, 0);
}

static void check_line(const struct stats *cur, const struct stats *prev, int64_t period,
                       const char *expected)
{
    char buf[512];
    memset(buf, 'X', sizeof(buf));
    stats_format_period(cur, prev, period, buf, sizeof(buf));
    assert_string_equal(buf, expected);
}

static void test_format_basic(void **state)
{
    (void)state;
    const struct stats prev = {0};
    const struct stats cur = {
        .xact_count = 100,
        .query_count = 300,
        .bytes_in = 10000,
        .bytes_out = 50000,
        .xact_time = 100 * 1500,
        .query_time = 300 * 200,
        .wait_time = 5 * 1000,
        .wait_count = 5,
    };
    check_line(&cur, &prev, SEC(10),
               "stats: 10 xacts/s, 30 queries/s, in 1000 B/s, out 5000 B/s, xact 1500 us, "
               "query 200 us, wait 1000 us");
}

static void test_format_difference(void **state)
{
    (void)state;
    const struct stats prev = {
        .xact_count = 1000,
        .query_count = 2000,
        .bytes_in = 1000000,
        .bytes_out = 2000000,
        .xact_time = 1000000,
        .query_time = 1000000,
        .wait_time = 500,
        .wait_count = 9,
    };
    struct stats cur = prev;
    cur.xact_count += 60;
    cur.query_count += 120;
    cur.bytes_in += 6000;
    cur.bytes_out += 12000;
    cur.xact_time += 60 * 250;
    cur.query_time += 120 * 100;
    cur.wait_time += 3 * 700;
    cur.wait_count += 3;
    check_line(&cur, &prev, SEC(60),
               "stats: 1 xacts/s, 2 queries/s, in 100 B/s, out 200 B/s, xact 250 us, "
               "query 100 us, wait 700 us");
}

static void test_format_idle(void **state)
{
    (void)state;
    /* No traffic: averages are 0, not a division by zero. */
    const struct stats prev = {.xact_count = 5, .xact_time = 99, .wait_time = 7};
    struct stats cur = prev;
    cur.xact_time += 1234; /* time without a finished transaction */
    check_line(&cur, &prev, SEC(15),
               "stats: 0 xacts/s, 0 queries/s, in 0 B/s, out 0 B/s, xact 0 us, query 0 us, "
               "wait 0 us");
}

static void test_format_bad_period(void **state)
{
    (void)state;
    /* A zero or negative period counts as one second. */
    const struct stats prev = {0};
    const struct stats cur = {.xact_count = 7, .query_count = 8, .bytes_in = 9, .bytes_out = 10};
    const char *expected = "stats: 7 xacts/s, 8 queries/s, in 9 B/s, out 10 B/s, xact 0 us, "
                           "query 0 us, wait 0 us";
    check_line(&cur, &prev, 0, expected);
    check_line(&cur, &prev, -SEC(5), expected);
    check_line(&cur, &prev, INT64_MIN, expected);
    check_line(&cur, &prev, SEC(1), expected);
}

static void test_format_rounding(void **state)
{
    (void)state;
    /* Rates round to the nearest integer; averages truncate. */
    const struct stats prev = {0};
    const struct stats cur = {
        .xact_count = 5,   /* 1.67/s */
        .query_count = 1,  /* 0.33/s */
        .bytes_in = 1000,  /* 333.3 B/s */
        .bytes_out = 2000, /* 666.7 B/s */
        .xact_time = 14,   /* 2.8 us */
        .query_time = 5,
        .wait_time = 10, /* 3.3 us */
        .wait_count = 3,
    };
    check_line(&cur, &prev, SEC(3),
               "stats: 2 xacts/s, 0 queries/s, in 333 B/s, out 667 B/s, xact 2 us, query 5 us, "
               "wait 3 us");

    /* A period that is not a whole number of seconds. */
    const struct stats c2 = {.xact_count = 3, .query_count = 9, .bytes_in = 1500};
    check_line(&c2, &prev, 1500000,
               "stats: 2 xacts/s, 6 queries/s, in 1000 B/s, out 0 B/s, xact 0 us, query 0 us, "
               "wait 0 us");
}

static void test_format_large(void **state)
{
    (void)state;
    const struct stats prev = {0};
    const struct stats cur = {
        .xact_count = 1,
        .query_count = 1,
        .bytes_in = UINT64_C(1) << 53,
        .bytes_out = 0,
        .xact_time = UINT64_C(1) << 40,
        .query_time = UINT64_MAX,
        .wait_time = 0,
        .wait_count = 0,
    };
    check_line(&cur, &prev, SEC(1),
               "stats: 1 xacts/s, 1 queries/s, in 9007199254740992 B/s, out 0 B/s, "
               "xact 1099511627776 us, query 18446744073709551615 us, wait 0 us");
}

static void test_format_truncates(void **state)
{
    (void)state;
    const struct stats prev = {0};
    const struct stats cur = {.xact_count = 100};
    char buf[40];
    memset(buf, 'X', sizeof(buf));
    stats_format_period(&cur, &prev, SEC(1), buf, 20);
    assert_string_equal(buf, "stats: 100 xacts/s,");
    for (size_t i = 20; i < sizeof(buf); i++)
        assert_int_equal(buf[i], 'X');

    /* buflen 0 writes nothing at all. */
    memset(buf, 'X', sizeof(buf));
    stats_format_period(&cur, &prev, SEC(1), buf, 0);
    for (size_t i = 0; i < sizeof(buf); i++)
        assert_int_equal(buf[i], 'X');
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_add),
        cmocka_unit_test(test_format_basic),
        cmocka_unit_test(test_format_difference),
        cmocka_unit_test(test_format_idle),
        cmocka_unit_test(test_format_bad_period),
        cmocka_unit_test(test_format_rounding),
        cmocka_unit_test(test_format_large),
        cmocka_unit_test(test_format_truncates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
