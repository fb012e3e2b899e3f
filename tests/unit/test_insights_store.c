/* test_insights_store.c - per-fingerprint statistics (insights_store.h):
 * recording, the least recently seen evicted at the bound, merging two
 * workers' figures, the shape table, and percentiles within the
 * histogram's stated 6.25%. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "insights_store.h"

struct seen {
    int n;
    uint64_t fps[16];
    struct insights_stat st[16];
    char text[16][64];
    const struct insights_sample *sample[16];
};

static void collect(void *arg, const struct insights_stat *st, const char *text,
                    const struct insights_sample *sample)
{
    struct seen *s = arg;
    if (s->n < 16) {
        s->fps[s->n] = st->fp;
        s->st[s->n] = *st;
        strncpy(s->text[s->n], text, 63);
        s->sample[s->n] = sample;
        s->n++;
    }
}

static void test_record_and_read(void **state)
{
    (void)state;
    struct insights_store *s = insights_store_new(4, 16);
    assert_true(insights_store_add(s, 7, "SELECT $1", 9));
    insights_store_record(s, 7, 100, 3, false, INSIGHTS_PRIMARY, 1000);
    insights_store_record(s, 7, 300, 2, true, INSIGHTS_REPLICA, 2000);
    insights_store_record(s, 7, 0, 0, false, INSIGHTS_CACHE, 3000);
    insights_store_record(s, 8, 5, 5, false, INSIGHTS_PRIMARY, 3000); /* no entry: nothing */
    insights_store_sample(s, 7, insights_sample_new("SELECT 42", 9, 0, NULL, NULL, s));
    insights_store_sample(s, 7, insights_sample_new("SELECT 43", 9, 0, NULL, NULL, s)); /* kept */
    struct seen seen = {0};
    insights_store_each(s, collect, &seen);
    assert_int_equal(seen.n, 1);
    const struct insights_stat *st = &seen.st[0];
    assert_int_equal(st->calls, 3);
    assert_int_equal(st->errors, 1);
    assert_int_equal(st->rows, 5);
    assert_int_equal(st->total_us, 400);
    assert_int_equal(st->max_us, 300);
    assert_int_equal(st->where[INSIGHTS_PRIMARY], 1);
    assert_int_equal(st->where[INSIGHTS_REPLICA], 1);
    assert_int_equal(st->where[INSIGHTS_CACHE], 1);
    assert_int_equal(st->first_seen, 1000);
    assert_int_equal(st->last_seen, 3000);
    assert_string_equal(seen.text[0], "SELECT $1");
    assert_string_equal(seen.sample[0]->sql, "SELECT 42");
    assert_ptr_equal(seen.sample[0]->origin, s);
    insights_store_reset(s);
    assert_int_equal(insights_store_count(s), 0);
    insights_store_free(s);
}

/* A sample keeps its text and parameters in one block, which a copy
 * moves whole; too big a sample is not made. */
static void test_sample_params(void **state)
{
    (void)state;
    const char *vals[] = {"42", NULL, "abc"};
    uint32_t lens[] = {2, 0, 2};
    struct insights_sample *sm = insights_sample_new("SELECT $1, $2, $3", 17, 3, vals, lens, NULL);
    assert_non_null(sm);
    struct insights_sample *d = insights_sample_dup(sm);
    free(sm);
    assert_string_equal(d->sql, "SELECT $1, $2, $3");
    assert_int_equal(d->nparams, 3);
    assert_string_equal(d->params[0], "42");
    assert_null(d->params[1]);
    assert_string_equal(d->params[2], "ab");
    free(d);
    static char big[INSIGHTS_SAMPLE_MAX + 2];
    memset(big, 'x', sizeof(big));
    assert_null(insights_sample_new(big, sizeof(big), 0, NULL, NULL, NULL));
    const char *bigv[] = {big};
    uint32_t bigl[] = {INSIGHTS_SAMPLE_MAX};
    assert_null(insights_sample_new("SELECT $1", 9, 1, bigv, bigl, NULL));
}

static void test_least_recent_goes(void **state)
{
    (void)state;
    struct insights_store *s = insights_store_new(3, 16);
    for (uint64_t fp = 10; fp < 13; fp++) {
        insights_store_add(s, fp, "q", 1);
        insights_store_record(s, fp, 1, 0, false, INSIGHTS_PRIMARY, (int64_t)fp);
    }
    insights_store_record(s, 10, 1, 0, false, INSIGHTS_PRIMARY, 20); /* 11 is the oldest now */
    insights_store_add(s, 13, "q", 1);
    assert_int_equal(insights_store_count(s), 3);
    assert_false(insights_store_has(s, 11));
    assert_true(insights_store_has(s, 10) && insights_store_has(s, 12) &&
                insights_store_has(s, 13));
    size_t bytes = insights_store_bytes(s);
    for (uint64_t fp = 100; fp < 1000; fp++)
        insights_store_add(s, fp, "a much longer normalized text of a query", 40);
    assert_int_equal(insights_store_count(s), 3);
    assert_true(insights_store_bytes(s) < bytes + 200);
    insights_store_free(s);
}

static void test_shapes(void **state)
{
    (void)state;
    struct insights_store *s = insights_store_new(2, 16);
    assert_int_equal(insights_store_shape(s, 99), 0);
    insights_store_set_shape(s, 99, 1234);
    assert_int_equal(insights_store_shape(s, 99), 1234);
    insights_store_set_shape(s, 99, 5678);
    assert_int_equal(insights_store_shape(s, 99), 5678);
    insights_store_free(s);
}

static void test_merge_and_quantiles(void **state)
{
    (void)state;
    struct insights_stat a = {.fp = 1}, b = {.fp = 1};
    /* 1..10000 us, odd ones on one worker, even on the other. */
    for (uint64_t v = 1; v <= 10000; v++) {
        struct insights_stat *x = v % 2 ? &a : &b;
        x->calls++;
        x->total_us += v;
        x->max_us = v > x->max_us ? v : x->max_us;
        x->hist[insights_bucket(v)]++;
        x->first_seen = x->first_seen ? x->first_seen : (int64_t)v;
        x->last_seen = (int64_t)v;
    }
    insights_stat_merge(&a, &b);
    assert_int_equal(a.calls, 10000);
    assert_int_equal(a.max_us, 10000);
    assert_int_equal(a.first_seen, 1);
    assert_int_equal(a.last_seen, 10000);
    static const double qs[] = {0.5, 0.9, 0.95, 0.99, 1.0};
    for (size_t i = 0; i < sizeof(qs) / sizeof(qs[0]); i++) {
        double want = qs[i] * 10000, got = (double)insights_quantile(&a, qs[i]);
        assert_true(got >= want * 0.9375 && got <= want * 1.0625);
    }
    /* Small values are exact; every value lands in a bucket whose middle
     * is within 6.25% of it. */
    assert_int_equal(insights_bucket_mid(insights_bucket(7)), 7);
    for (uint64_t v = 16; v < (UINT64_C(1) << 38); v = v * 3 / 2 + 1) {
        double mid = (double)insights_bucket_mid(insights_bucket(v));
        assert_true(mid >= (double)v * 0.9375 && mid <= (double)v * 1.0625);
    }
    assert_int_equal(insights_bucket(UINT64_MAX), INSIGHTS_BUCKETS - 1);
    struct insights_stat none = {0};
    assert_int_equal(insights_quantile(&none, 0.5), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_record_and_read),     cmocka_unit_test(test_sample_params),
        cmocka_unit_test(test_least_recent_goes),   cmocka_unit_test(test_shapes),
        cmocka_unit_test(test_merge_and_quantiles),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
