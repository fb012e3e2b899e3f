/* test_listen.c - the pure parts of listen.c: quoting a channel name for
 * the listening connection, reading the channel of a NotificationResponse. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "listen.h"

static void test_quote(void **state)
{
    (void)state;
    char out[16];
    assert_int_equal(listen_quote_ident("ch1", out, sizeof(out)), 5);
    assert_string_equal(out, "\"ch1\"");
    assert_int_equal(listen_quote_ident("a\"b", out, sizeof(out)), 6);
    assert_string_equal(out, "\"a\"\"b\"");
    assert_int_equal(listen_quote_ident("", out, sizeof(out)), 2);
    assert_string_equal(out, "\"\"");
    /* 13 characters + 2 quotes + NUL fit in 16; 14 do not. */
    assert_int_equal(listen_quote_ident("abcdefghijklm", out, sizeof(out)), 15);
    assert_int_equal(listen_quote_ident("abcdefghijklmn", out, sizeof(out)), 0);
    assert_int_equal(listen_quote_ident("x", out, 2), 0);
}

static void test_notification_channel(void **state)
{
    (void)state;
    const unsigned char ok[] = {0, 0, 0, 42, 'c', 'h', 0, 'p', 0};
    const char *ch = listen_notification_channel(ok, sizeof(ok));
    assert_non_null(ch);
    assert_string_equal(ch, "ch");
    const unsigned char empty_payload[] = {0, 0, 0, 1, 'c', 0, 0};
    assert_non_null(listen_notification_channel(empty_payload, sizeof(empty_payload)));
    const unsigned char no_payload_end[] = {0, 0, 0, 1, 'c', 0, 'x'};
    assert_null(listen_notification_channel(no_payload_end, sizeof(no_payload_end)));
    const unsigned char no_channel_end[] = {0, 0, 0, 1, 'c', 'h'};
    assert_null(listen_notification_channel(no_channel_end, sizeof(no_channel_end)));
    assert_null(listen_notification_channel(ok, 4));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quote),
        cmocka_unit_test(test_notification_channel),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
