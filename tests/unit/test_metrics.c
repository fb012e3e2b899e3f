/* test_metrics.c - the metrics endpoint's pure parts: the HTTP request
 * parser and router, label escaping, and histograms. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "metrics.h"

static enum metrics_parse parse(const char *s, struct metrics_request *r)
{
    return metrics_parse_request(s, strlen(s), r);
}

static int status_of(const char *s)
{
    struct metrics_request r;
    enum metrics_parse p = parse(s, &r);
    switch (p) {
    case METRICS_PARSE_OK:
        return metrics_route(&r);
    case METRICS_PARSE_INCOMPLETE:
        return 0;
    case METRICS_PARSE_TOO_LARGE:
        return 431;
    case METRICS_PARSE_VERSION:
        return 505;
    default:
        return 400;
    }
}

static void test_parse_get(void **state)
{
    (void)state;
    struct metrics_request r;
    const char *req = "GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n";
    assert_int_equal(parse(req, &r), METRICS_PARSE_OK);
    assert_int_equal(r.method_len, 3);
    assert_memory_equal(r.method, "GET", 3);
    assert_int_equal(r.path_len, 8);
    assert_memory_equal(r.path, "/metrics", 8);
    assert_int_equal(r.minor, 1);
    assert_int_equal(metrics_route(&r), 200);
    /* HTTP/1.0 with bare LF line ends and no headers */
    assert_int_equal(parse("HEAD /metrics HTTP/1.0\n\n", &r), METRICS_PARSE_OK);
    assert_int_equal(r.minor, 0);
    assert_int_equal(metrics_route(&r), 200);
}

static void test_routes(void **state)
{
    (void)state;
    assert_int_equal(status_of("GET /nope HTTP/1.1\r\n\r\n"), 404);
    assert_int_equal(status_of("GET /metricsx HTTP/1.1\r\n\r\n"), 404);
    assert_int_equal(status_of("GET //metrics HTTP/1.1\r\n\r\n"), 404);
    /* "/" is the status page, with or without a query string */
    struct metrics_request r;
    assert_int_equal(parse("GET /?x=1 HTTP/1.1\r\n\r\n", &r), METRICS_PARSE_OK);
    assert_int_equal(metrics_route(&r), 200);
    assert_true(metrics_route_is_page(&r));
    assert_int_equal(parse("HEAD /metrics HTTP/1.1\r\n\r\n", &r), METRICS_PARSE_OK);
    assert_false(metrics_route_is_page(&r));
    assert_int_equal(status_of("POST / HTTP/1.1\r\n\r\n"), 405);
    assert_int_equal(status_of("POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n"), 405);
    assert_int_equal(status_of("DELETE /x HTTP/1.1\r\n\r\n"), 405);
    assert_int_equal(status_of("get /metrics HTTP/1.1\r\n\r\n"),
                     405); /* methods are case-sensitive */
}

static void test_incomplete_and_bad(void **state)
{
    (void)state;
    struct metrics_request r;
    assert_int_equal(parse("", &r), METRICS_PARSE_INCOMPLETE);
    assert_int_equal(parse("GET /metrics HTTP/1.1\r\nHost: a\r\n", &r), METRICS_PARSE_INCOMPLETE);
    assert_int_equal(status_of("GET /metrics\r\n\r\n"), 400);           /* HTTP/0.9 form */
    assert_int_equal(status_of("GET  /metrics HTTP/1.1\r\n\r\n"), 400); /* two spaces */
    assert_int_equal(status_of("GET metrics HTTP/1.1\r\n\r\n"), 400);
    assert_int_equal(status_of("GET /metrics HTTP/1.1 \r\n\r\n"), 400);
    assert_int_equal(status_of("GET /metrics HTTX/1.1\r\n\r\n"), 400);
    assert_int_equal(status_of("GET /metrics HTTP/1.1\r\nNoColon\r\n\r\n"), 400);
    assert_int_equal(status_of("GET /metrics HTTP/1.1\r\nHost : a\r\n\r\n"), 400);
    assert_int_equal(status_of("GET /metrics HTTP/1.1\r\nA: b\r\n folded\r\n\r\n"), 400);
    assert_int_equal(status_of("GET /metrics HTTP/1.1\r\nA: b\x01\r\n\r\n"), 400);
    assert_int_equal(status_of("GET /metrics HTTP/2.0\r\n\r\n"), 505);
    assert_int_equal(status_of("GET /metrics HTTP/1.2\r\n\r\n"), 505);
    assert_int_equal(status_of("\r\n\r\n"), 400);
}

static void test_too_large(void **state)
{
    (void)state;
    struct metrics_request r;
    size_t n = METRICS_MAX_REQUEST + 100;
    char *big = malloc(n);
    assert_non_null(big);
    memcpy(big, "GET /metrics HTTP/1.1\r\nX: ", 26);
    memset(big + 26, 'a', n - 26);
    assert_int_equal(metrics_parse_request(big, METRICS_MAX_REQUEST - 1, &r),
                     METRICS_PARSE_INCOMPLETE);
    assert_int_equal(metrics_parse_request(big, METRICS_MAX_REQUEST, &r), METRICS_PARSE_TOO_LARGE);
    /* An end of head beyond the limit does not make it acceptable. */
    memcpy(big + n - 4, "\r\n\r\n", 4);
    assert_int_equal(metrics_parse_request(big, n, &r), METRICS_PARSE_TOO_LARGE);
    free(big);
}

static void test_label_escape(void **state)
{
    (void)state;
    struct metrics_buf b;
    memset(&b, 0, sizeof(b));
    metrics_buf_label(&b, "a\"b\\c\nd\te");
    assert_string_equal(b.p, "a\\\"b\\\\c\\nd\te");
    metrics_buf_free(&b);
    /* growth across many appends */
    for (int i = 0; i < 10000; i++)
        metrics_buf_printf(&b, "%d,", i % 10);
    assert_int_equal(b.len, 20000);
    assert_false(b.oom);
    metrics_buf_free(&b);
}

/* The value of the sample line starting with prefix in text. */
static unsigned long long sample(const char *text, const char *prefix)
{
    const char *p = strstr(text, prefix);
    assert_non_null(p);
    return strtoull(p + strlen(prefix), NULL, 10);
}

static void test_histogram(void **state)
{
    (void)state;
    struct stats_hist h;
    memset(&h, 0, sizeof(h));
    stats_hist_observe(&h, -5);       /* counts as 0: first bucket */
    stats_hist_observe(&h, 100);      /* le is inclusive */
    stats_hist_observe(&h, 101);      /* next bucket */
    stats_hist_observe(&h, 2000000);  /* 2.5 s bucket */
    stats_hist_observe(&h, 99000000); /* above every bound: +Inf only */
    assert_int_equal(h.count, 5);
    assert_int_equal(h.sum_usec, 100 + 101 + 2000000 + 99000000);
    struct metrics_buf b;
    memset(&b, 0, sizeof(b));
    metrics_render_hist(&b, "x", &h);
    assert_false(b.oom);
    assert_int_equal(sample(b.p, "x_bucket{le=\"0.0001\"} "), 2);
    assert_int_equal(sample(b.p, "x_bucket{le=\"0.00025\"} "), 3);
    assert_int_equal(sample(b.p, "x_bucket{le=\"1\"} "), 3);
    assert_int_equal(sample(b.p, "x_bucket{le=\"2.5\"} "), 4);
    assert_int_equal(sample(b.p, "x_bucket{le=\"10\"} "), 4);
    assert_int_equal(sample(b.p, "x_bucket{le=\"+Inf\"} "), 5);
    assert_int_equal(sample(b.p, "x_count "), 5);
    assert_non_null(strstr(b.p, "x_sum 101.000201\n"));
    /* buckets are cumulative: never decreasing */
    unsigned long long prev = 0;
    for (const char *p = strstr(b.p, "x_bucket"); p; p = strstr(p + 1, "x_bucket")) {
        unsigned long long v = strtoull(strchr(p, '}') + 2, NULL, 10);
        assert_true(v >= prev);
        prev = v;
    }
    metrics_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_get),          cmocka_unit_test(test_routes),
        cmocka_unit_test(test_incomplete_and_bad), cmocka_unit_test(test_too_large),
        cmocka_unit_test(test_label_escape),       cmocka_unit_test(test_histogram),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
