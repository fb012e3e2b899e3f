/* test_cron.c - cron expressions (cron.c) and time zones (cron_tz.c):
 * every field form, what is refused and how it is said, month and weekday
 * edge cases, and the daylight-saving days of a zone that has them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "cron.h"

/* UTC seconds of a date and time. */
static int64_t ts(int y, int mo, int d, int h, int mi)
{
    struct tm tm = {
        .tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h, .tm_min = mi};
    return (int64_t)timegm(&tm);
}

static struct cron_expr parse_ok(const char *s)
{
    struct cron_expr e;
    char why[200] = "";
    if (!cron_parse(s, &e, why, sizeof(why)))
        fail_msg("\"%s\" refused: %s", s, why);
    return e;
}

static void expect_refused(const char *s, const char *reason)
{
    struct cron_expr e;
    char why[200] = "";
    if (cron_parse(s, &e, why, sizeof(why)))
        fail_msg("\"%s\" taken, should be refused with: %s", s, reason);
    if (!strstr(why, reason))
        fail_msg("\"%s\": \"%s\" does not say \"%s\"", s, why, reason);
}

static void test_field_forms(void **state)
{
    (void)state;
    struct cron_expr e = parse_ok("0 * * * *");
    assert_int_equal(e.minute, 1);
    assert_int_equal(e.hour, 0xffffff);
    assert_true(e.dom_star && e.dow_star && e.hour_star);
    e = parse_ok("*/5 9-17 * * mon-fri");
    assert_int_equal(e.minute, 0x084210842108421ull); /* 0, 5, ..., 55 */
    assert_int_equal(e.hour, 0x3fe00);
    assert_int_equal(e.dow, 0x3e);
    assert_false(e.hour_star);
    e = parse_ok("1,15,30 0-6/2 1,15 JAN,jul,Dec sun");
    assert_int_equal(e.minute, (1ull << 1) | (1ull << 15) | (1ull << 30));
    assert_int_equal(e.hour, (1u << 0) | (1u << 2) | (1u << 4) | (1u << 6));
    assert_int_equal(e.dom, (1u << 1) | (1u << 15));
    assert_int_equal(e.month, (1u << 1) | (1u << 7) | (1u << 12));
    assert_int_equal(e.dow, 1);
    assert_false(e.dom_star || e.dow_star);
    e = parse_ok("30/10 * * * 7"); /* a/n from a to the end; 7 is Sunday */
    assert_int_equal(e.minute, (1ull << 30) | (1ull << 40) | (1ull << 50));
    assert_int_equal(e.dow, 1);
    e = parse_ok("  0\t0  * * 5-7 ");
    assert_int_equal(e.dow, (1u << 0) | (1u << 5) | (1u << 6));
    e = parse_ok("59 23 31 12 6");
    assert_int_equal(e.minute, 1ull << 59);
    /* The macros. */
    struct cron_expr m = parse_ok("@hourly"), f = parse_ok("0 * * * *");
    assert_memory_equal(&m, &f, sizeof(m));
    m = parse_ok("@daily");
    f = parse_ok("0 0 * * *");
    assert_memory_equal(&m, &f, sizeof(m));
    m = parse_ok("@WEEKLY");
    f = parse_ok("0 0 * * 0");
    assert_memory_equal(&m, &f, sizeof(m));
    m = parse_ok("@monthly");
    f = parse_ok("0 0 1 * *");
    assert_memory_equal(&m, &f, sizeof(m));
    m = parse_ok("@yearly");
    f = parse_ok("0 0 1 1 *");
    assert_memory_equal(&m, &f, sizeof(m));
}

static void test_refused(void **state)
{
    (void)state;
    expect_refused("", "expected 5 fields");
    expect_refused("* * * *",
                   "expected 5 fields (minute hour day-of-month month day-of-week), got 4");
    expect_refused("* * * * * *", "got 6");
    expect_refused("60 * * * *", "minute 60 is out of range 0-59");
    expect_refused("* 24 * * *", "hour 24 is out of range 0-23");
    expect_refused("* * 0 * *", "day of month 0 is out of range 1-31");
    expect_refused("* * 32 * *", "day of month 32 is out of range 1-31");
    expect_refused("* * * 13 *", "month 13 is out of range 1-12");
    expect_refused("* * * * 8", "day of week 8 is out of range 0-7");
    expect_refused("5-3 * * * *", "minute range 5-3 is backwards");
    expect_refused("*/0 * * * *", "minute step 0 is out of range 1-60");
    expect_refused("*/61 * * * *", "minute step 61 is out of range 1-60");
    expect_refused("*/ * * * *", "a step needs a number");
    expect_refused("1, * * * *", "minute: value missing");
    expect_refused(",1 * * * *", "minute: unexpected \",\"");
    expect_refused("1- * * * *", "minute: value missing");
    expect_refused("-1 * * * *", "minute: unexpected \"-\"");
    expect_refused("mon * * * *", "minute: unexpected \"m\"");
    expect_refused("* * * foo *", "unknown month name \"foo\"");
    expect_refused("* * * * monday", "unknown day of week name \"monday\"");
    expect_refused("* * * * fri-mon", "day of week range 5-1 is backwards");
    expect_refused("1.5 * * * *", "minute: unexpected \".\"");
    expect_refused("99999999999999999999 * * * *", "out of range");
    expect_refused("@reboot", "unknown macro \"@reboot\"");
    expect_refused("@daily 5", "unknown macro");
}

static void expect_next(const char *expr, const struct cron_tz *tz, int64_t after, int64_t want)
{
    struct cron_expr e = parse_ok(expr);
    int64_t got = cron_next(&e, tz, after);
    if (got != want)
        fail_msg("\"%s\" after %lld: %lld, expected %lld (diff %lld s)", expr, (long long)after,
                 (long long)got, (long long)want, (long long)(got - want));
}

static void test_next_utc(void **state)
{
    (void)state;
    /* Friday 2026-12-04. */
    expect_next("0 * * * *", NULL, ts(2026, 12, 4, 10, 15), ts(2026, 12, 4, 11, 0));
    /* Strictly after: a time that matches gives the next one. */
    expect_next("0 * * * *", NULL, ts(2026, 12, 4, 11, 0), ts(2026, 12, 4, 12, 0));
    expect_next("* * * * *", NULL, ts(2026, 12, 4, 11, 0) + 59, ts(2026, 12, 4, 11, 1));
    expect_next("*/5 9-17 * * mon-fri", NULL, ts(2026, 12, 4, 16, 55), ts(2026, 12, 4, 17, 0));
    expect_next("*/5 9-17 * * mon-fri", NULL, ts(2026, 12, 4, 17, 55), ts(2026, 12, 7, 9, 0));
    expect_next("@weekly", NULL, ts(2026, 12, 4, 0, 0), ts(2026, 12, 6, 0, 0));
    expect_next("@monthly", NULL, ts(2026, 12, 4, 0, 0), ts(2027, 1, 1, 0, 0));
    expect_next("@yearly", NULL, ts(2026, 12, 31, 23, 59), ts(2027, 1, 1, 0, 0));
    /* Day 31 only in months that have it. */
    expect_next("0 0 31 * *", NULL, ts(2027, 3, 31, 0, 0), ts(2027, 5, 31, 0, 0));
    /* Feb 29: the next leap year; Feb 30: never. */
    expect_next("0 0 29 2 *", NULL, ts(2025, 6, 1, 0, 0), ts(2028, 2, 29, 0, 0));
    expect_next("0 0 30 2 *", NULL, ts(2025, 6, 1, 0, 0), -1);
    /* Day of month and day of week both restricted: either fires. */
    expect_next("0 0 13 * fri", NULL, ts(2026, 12, 4, 1, 0), ts(2026, 12, 11, 0, 0));
    expect_next("0 0 13 * fri", NULL, ts(2026, 12, 11, 1, 0), ts(2026, 12, 13, 0, 0));
    /* One of them '*': both must match (Friday the 13th, first in 2027-08). */
    expect_next("0 0 13 * *", NULL, ts(2026, 12, 11, 1, 0), ts(2026, 12, 13, 0, 0));
    expect_next("0 0 */1 * fri", NULL, ts(2026, 12, 4, 1, 0), ts(2026, 12, 11, 0, 0));
    /* Sunday as 0 and as 7; the last minute of the year. */
    expect_next("0 0 * * 7", NULL, ts(2026, 12, 4, 0, 0), ts(2026, 12, 6, 0, 0));
    expect_next("59 23 31 12 *", NULL, ts(2026, 1, 1, 0, 0), ts(2026, 12, 31, 23, 59));
}

static struct cron_tz berlin, new_york;

static int load_zones(void **state)
{
    (void)state;
    char why[300];
    if (!cron_tz_load(&berlin, "Europe/Berlin", NULL, why, sizeof(why)) ||
        !cron_tz_load(&new_york, "America/New_York", NULL, why, sizeof(why))) {
        fprintf(stderr, "%s\n", why);
        return -1;
    }
    return 0;
}

static int free_zones(void **state)
{
    (void)state;
    cron_tz_free(&berlin);
    cron_tz_free(&new_york);
    return 0;
}

static void test_zone_offsets(void **state)
{
    (void)state;
    assert_int_equal(cron_tz_offset(&berlin, ts(2026, 1, 15, 12, 0)), 3600);
    assert_int_equal(cron_tz_offset(&berlin, ts(2026, 7, 15, 12, 0)), 7200);
    assert_int_equal(cron_tz_offset(&new_york, ts(2026, 1, 15, 12, 0)), -5 * 3600);
    /* Past the file's table (2037): from its POSIX rule. */
    assert_int_equal(cron_tz_offset(&berlin, ts(2150, 7, 1, 0, 0)), 7200);
    assert_int_equal(cron_tz_offset(&berlin, ts(2150, 12, 1, 0, 0)), 3600);
    expect_next("0 12 1 7 *", &berlin, ts(2050, 6, 1, 0, 0), ts(2050, 7, 1, 10, 0));
    expect_next("0 12 1 1 *", &berlin, ts(2049, 12, 1, 0, 0), ts(2050, 1, 1, 11, 0));
    /* UTC by name needs no file. */
    struct cron_tz utc;
    char why[200];
    assert_true(cron_tz_load(&utc, "UTC", NULL, why, sizeof(why)));
    expect_next("0 12 * * *", &utc, ts(2026, 7, 1, 0, 0), ts(2026, 7, 1, 12, 0));
    cron_tz_free(&utc);
    struct cron_tz bad;
    assert_false(cron_tz_load(&bad, "Mars/Olympus_Mons", NULL, why, sizeof(why)));
    assert_non_null(strstr(why, "time zone \"Mars/Olympus_Mons\": cannot open"));
    assert_false(cron_tz_load(&bad, "../../etc/passwd", NULL, why, sizeof(why)));
    assert_non_null(strstr(why, "not a zone name"));
    cron_tz_free(&bad);
    static const uint8_t junk[] = "TZif2 not really";
    assert_false(cron_tz_parse(&bad, "x", junk, sizeof(junk), why, sizeof(why)));
    cron_tz_free(&bad);
}

/* Berlin, 2026-03-29: at 01:00 UTC the clock jumps from 02:00 to 03:00. */
static void test_dst_spring_forward(void **state)
{
    (void)state;
    /* 02:30 does not exist that day: it fires once, at the jump. */
    expect_next("30 2 * * *", &berlin, ts(2026, 3, 28, 12, 0), ts(2026, 3, 29, 1, 0));
    expect_next("30 2 * * *", &berlin, ts(2026, 3, 29, 1, 0), ts(2026, 3, 30, 0, 30));
    /* Hourly: 01:00 CET, then 03:00 CEST (02:00 folded into the jump), 04:00. */
    expect_next("0 * * * *", &berlin, ts(2026, 3, 28, 23, 30), ts(2026, 3, 29, 0, 0));
    expect_next("0 * * * *", &berlin, ts(2026, 3, 29, 0, 0), ts(2026, 3, 29, 1, 0));
    expect_next("0 * * * *", &berlin, ts(2026, 3, 29, 1, 0), ts(2026, 3, 29, 2, 0));
    /* A wall time outside the gap is simply an hour earlier in UTC. */
    expect_next("0 12 * * *", &berlin, ts(2026, 3, 28, 12, 0), ts(2026, 3, 29, 10, 0));
    /* New York, 2026-03-08 07:00 UTC: 02:00 -> 03:00. */
    expect_next("15 2 * * *", &new_york, ts(2026, 3, 8, 0, 0), ts(2026, 3, 8, 7, 0));
    expect_next("15 3 * * *", &new_york, ts(2026, 3, 8, 0, 0), ts(2026, 3, 8, 7, 15));
}

/* Berlin, 2026-10-25: at 01:00 UTC the clock goes back from 03:00 to 02:00. */
static void test_dst_fall_back(void **state)
{
    (void)state;
    /* 02:30 happens twice: it fires at the first (CEST, 00:30 UTC) only. */
    expect_next("30 2 * * *", &berlin, ts(2026, 10, 24, 12, 0), ts(2026, 10, 25, 0, 30));
    expect_next("30 2 * * *", &berlin, ts(2026, 10, 25, 0, 30), ts(2026, 10, 26, 1, 30));
    /* Every 30 minutes keeps its pace through the repeated hour. */
    int64_t t = ts(2026, 10, 24, 23, 50);
    for (int i = 0; i < 6; i++) {
        int64_t want = ts(2026, 10, 25, 0, 0) + i * 1800;
        expect_next("*/30 * * * *", &berlin, t, want);
        t = want;
    }
    /* Hourly too: 02:00 CEST, 02:00 CET, 03:00 CET. */
    expect_next("0 * * * *", &berlin, ts(2026, 10, 24, 23, 30), ts(2026, 10, 25, 0, 0));
    expect_next("0 * * * *", &berlin, ts(2026, 10, 25, 0, 0), ts(2026, 10, 25, 1, 0));
    expect_next("0 * * * *", &berlin, ts(2026, 10, 25, 1, 0), ts(2026, 10, 25, 2, 0));
    /* A fixed hour outside the repeated one: as usual, an hour later in UTC. */
    expect_next("0 12 * * *", &berlin, ts(2026, 10, 25, 0, 0), ts(2026, 10, 25, 11, 0));
}

static void test_matches(void **state)
{
    (void)state;
    struct cron_expr e = parse_ok("*/15 9-17 * * mon-fri");
    assert_true(cron_matches(&e, ts(2026, 12, 4, 9, 45)));
    assert_false(cron_matches(&e, ts(2026, 12, 4, 9, 46)));
    assert_false(cron_matches(&e, ts(2026, 12, 5, 9, 45))); /* Saturday */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_field_forms),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_next_utc),
        cmocka_unit_test(test_zone_offsets),
        cmocka_unit_test(test_dst_spring_forward),
        cmocka_unit_test(test_dst_fall_back),
        cmocka_unit_test(test_matches),
    };
    return cmocka_run_group_tests(tests, load_zones, free_zones);
}
