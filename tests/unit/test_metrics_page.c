/* test_metrics_page.c - the status page's pure parts: HTML escaping and
 * the figures' formats. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "metrics_page.h"

static void expect_escaped(const char *in, const char *want)
{
    struct metrics_buf b;
    memset(&b, 0, sizeof(b));
    metrics_page_escape(&b, in);
    assert_false(b.oom);
    assert_non_null(b.p);
    assert_string_equal(b.p, want);
    metrics_buf_free(&b);
}

static void test_escape(void **state)
{
    (void)state;
    expect_escaped("plain text", "plain text");
    expect_escaped("<script>alert(1)</script>", "&lt;script&gt;alert(1)&lt;/script&gt;");
    expect_escaped("a & b", "a &amp; b");
    expect_escaped("&amp;", "&amp;amp;"); /* escaped again, not taken as a reference */
    expect_escaped("\"'", "&quot;&#39;");
    expect_escaped("<&>\"db", "&lt;&amp;&gt;&quot;db");
    /* whitespace stays; other controls cannot appear in HTML */
    expect_escaped("a\tb\nc\r", "a\tb\nc\r");
    expect_escaped("a\x01"
                   "b\x7f",
                   "a\xef\xbf\xbd"
                   "b\xef\xbf\xbd");
    /* UTF-8 passes as it is */
    expect_escaped("caf\xc3\xa9 \xe2\x82\xac", "caf\xc3\xa9 \xe2\x82\xac");
}

static void test_escape_empty_and_appends(void **state)
{
    (void)state;
    struct metrics_buf b;
    memset(&b, 0, sizeof(b));
    metrics_buf_printf(&b, "<td>");
    metrics_page_escape(&b, "");
    metrics_page_escape(&b, "x<y");
    metrics_buf_printf(&b, "</td>");
    assert_string_equal(b.p, "<td>x&lt;y</td>");
    assert_int_equal(b.len, strlen("<td>x&lt;y</td>"));
    metrics_buf_free(&b);
}

static void test_escape_long(void **state)
{
    (void)state;
    /* Longer than any small buffer: every byte accounted for. */
    size_t n = 100000;
    char *s = malloc(n + 1);
    assert_non_null(s);
    for (size_t i = 0; i < n; i++)
        s[i] = i % 2 ? '<' : 'a';
    s[n] = '\0';
    struct metrics_buf b;
    memset(&b, 0, sizeof(b));
    metrics_page_escape(&b, s);
    assert_int_equal(b.len, n / 2 + n / 2 * strlen("&lt;"));
    assert_null(strchr(b.p, '<'));
    metrics_buf_free(&b);
    free(s);
}

static void test_duration(void **state)
{
    (void)state;
    char s[32];
    metrics_page_duration(s, sizeof(s), 0);
    assert_string_equal(s, "0");
    metrics_page_duration(s, sizeof(s), 850);
    assert_string_equal(s, "850 \xc2\xb5s");
    metrics_page_duration(s, sizeof(s), 12345);
    assert_string_equal(s, "12.35 ms");
    metrics_page_duration(s, sizeof(s), 999994);
    assert_string_equal(s, "999.99 ms");
    metrics_page_duration(s, sizeof(s), 999999);
    assert_string_equal(s, "1.00 s");
    metrics_page_duration(s, sizeof(s), 3200000);
    assert_string_equal(s, "3.20 s");
}

static void test_bytes(void **state)
{
    (void)state;
    char s[32];
    metrics_page_bytes(s, sizeof(s), 0);
    assert_string_equal(s, "0 B");
    metrics_page_bytes(s, sizeof(s), 1023);
    assert_string_equal(s, "1023 B");
    metrics_page_bytes(s, sizeof(s), 1536);
    assert_string_equal(s, "1.5 kB");
    metrics_page_bytes(s, sizeof(s), 256ULL << 20);
    assert_string_equal(s, "256.0 MB");
    metrics_page_bytes(s, sizeof(s), 3ULL << 30);
    assert_string_equal(s, "3.0 GB");
    metrics_page_bytes(s, sizeof(s), 5ULL << 50);
    assert_string_equal(s, "5120.0 TB");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escape),      cmocka_unit_test(test_escape_empty_and_appends),
        cmocka_unit_test(test_escape_long), cmocka_unit_test(test_duration),
        cmocka_unit_test(test_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
