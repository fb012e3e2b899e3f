/* test_prepared.c - the pieces of the prepared statement tracker that stand
 * alone: SipHash, the per-server statement set with LRU eviction, and the
 * splitting of startup settings. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "prepared.h"
#include "prepared_settings.h"

static void test_siphash_vectors(void **state)
{
    (void)state;
    /* The reference vectors: key 00..0f, message 00..(n-1). */
    uint8_t key[16], msg[64];
    for (int i = 0; i < 16; i++)
        key[i] = (uint8_t)i;
    for (int i = 0; i < 64; i++)
        msg[i] = (uint8_t)i;
    assert_true(prepared_siphash(key, msg, 0) == 0x726fdb47dd0e0e31ull);
    assert_true(prepared_siphash(key, msg, 1) == 0x74f839c593dc67fdull);
    assert_true(prepared_siphash(key, msg, 8) == 0x93f5f5799a932462ull);
    assert_true(prepared_siphash(key, msg, 15) == 0xa129ca6149be45e5ull);
    assert_true(prepared_siphash(key, msg, 63) == 0x958a324ceb064572ull);
    /* The process hash is keyed, stable and never 0. */
    uint64_t a = prepared_hash("SELECT 1", 8), b = prepared_hash("SELECT 1", 8);
    assert_true(a == b && a != 0);
    assert_true(prepared_hash("SELECT 2", 8) != a);
}

static void test_set_lru(void **state)
{
    (void)state;
    struct prepared_set *ps = NULL;
    for (uint64_t h = 1; h <= 100; h++)
        prepared_set_add(&ps, h * 0x9e3779b97f4a7c15ull);
    assert_int_equal(prepared_set_count(ps), 100);
    for (uint64_t h = 1; h <= 100; h++)
        assert_true(prepared_set_has(ps, h * 0x9e3779b97f4a7c15ull));
    assert_false(prepared_set_has(ps, 12345));
    /* Touch 1..10 again: 11 is now the least recently used. */
    for (uint64_t h = 1; h <= 10; h++)
        assert_true(prepared_set_has(ps, h * 0x9e3779b97f4a7c15ull));
    assert_true(prepared_set_evict(ps) == 11 * 0x9e3779b97f4a7c15ull);
    assert_int_equal(prepared_set_count(ps), 99);
    assert_false(prepared_set_has(ps, 11 * 0x9e3779b97f4a7c15ull));
    /* Removing keeps every other entry findable (backward shift). */
    for (uint64_t h = 12; h <= 100; h += 2)
        prepared_set_remove(ps, h * 0x9e3779b97f4a7c15ull);
    for (uint64_t h = 13; h <= 100; h += 2)
        assert_true(prepared_set_has(ps, h * 0x9e3779b97f4a7c15ull));
    for (uint64_t h = 12; h <= 100; h += 2)
        assert_false(prepared_set_has(ps, h * 0x9e3779b97f4a7c15ull));
    /* Colliding home slots. */
    struct prepared_set *ps2 = NULL;
    for (uint64_t h = 1; h <= 5; h++)
        prepared_set_add(&ps2, h << 40);
    prepared_set_remove(ps2, 2ull << 40);
    for (uint64_t h = 1; h <= 5; h++)
        assert_true(prepared_set_has(ps2, h << 40) == (h != 2));
    while (prepared_set_evict(ps2))
        ;
    assert_int_equal(prepared_set_count(ps2), 0);
    assert_true(prepared_set_evict(NULL) == 0);
    prepared_set_free(ps);
    prepared_set_free(ps2);
}

static void test_extras_split(void **state)
{
    (void)state;
    const char *names[4], *stmts[4];
    int n = prepared_extras_split("SELECT pg_catalog.set_config('statement_timeout', '1s', false);"
                                  "SELECT pg_catalog.set_config('x.Y', E'a\\\\b''c;', false);",
                                  names, stmts, 4);
    assert_int_equal(n, 2);
    assert_string_equal(names[0], "statement_timeout");
    assert_string_equal(stmts[0], "SELECT pg_catalog.set_config('statement_timeout', '1s', false)");
    assert_string_equal(names[1], "x.y");
    assert_string_equal(stmts[1], "SELECT pg_catalog.set_config('x.Y', E'a\\\\b''c;', false)");
    assert_int_equal(prepared_extras_split("", names, stmts, 4), 0);
    assert_int_equal(prepared_extras_split("RESET ALL;", names, stmts, 4), -1);
    assert_int_equal(prepared_extras_split("SET a = 'x';", names, stmts, 4), -1);
    assert_int_equal(prepared_extras_split("SELECT pg_catalog.set_config('a', 'x", names, stmts, 4),
                     -1);
    param_intern_free_all();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_siphash_vectors),
        cmocka_unit_test(test_set_lru),
        cmocka_unit_test(test_extras_split),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
