/* test_conn.c - the connection objects: an idle client is struct client
 * alone (every feature's state hangs off it by pointer, allocated while
 * used), and that struct stays within 400 bytes; state names for logs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "conn.h"

static void test_client_size(void **state)
{
    (void)state;
    /* 10,000 idle clients must cost under 1 KiB each (test_idle_memory.py
     * measures it); the struct is most of that. Each feature's state
     * hangs off one pointer (route, cache, insights) and exists only when
     * used. */
    assert_true(sizeof(struct client) <= 416);
    assert_true(sizeof(struct stream) <= 128);
}

static void test_state_names(void **state)
{
    (void)state;
    assert_string_equal(client_state_str(CL_STARTUP), "startup");
    assert_string_equal(client_state_str(CL_ACTIVE), "active");
    assert_string_equal(client_state_str(CL_CLOSED), "closed");
    assert_string_equal(client_state_str((enum client_state)99), "?");
    assert_string_equal(server_state_str(SV_CONNECTING), "connecting");
    assert_string_equal(server_state_str(SV_CANCEL_WAIT), "cancel_wait");
    assert_string_equal(server_state_str(SV_CLOSED), "closed");
    assert_string_equal(server_state_str((enum server_state)99), "?");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_client_size),
        cmocka_unit_test(test_state_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
