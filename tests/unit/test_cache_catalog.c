/* test_cache_catalog.c - the result cache's relation facts: table ids by
 * schema and name, and what an answer of the catalog lookup gives. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "cache_catalog.h"
#include "pool.h"

static struct database db;

static int n_noted;
static uint64_t noted_ids[8];
static char noted[8][CACHE_CATALOG_MAX_NAME];

static void note(uint64_t id, const char *dbname, const char *name)
{
    assert_string_equal(dbname, "d");
    if (n_noted < 8) {
        noted_ids[n_noted] = id;
        strcpy(noted[n_noted], name);
    }
    n_noted++;
}

static int setup(void **state)
{
    (void)state;
    memset(&db, 0, sizeof(db));
    db.name = (char *)"d";
    n_noted = 0;
    cache_catalog_set_note(note);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    cache_catalog_set_note(NULL);
    cache_catalog_free(&db);
    return 0;
}

static void test_ids_by_schema_and_name(void **state)
{
    (void)state;
    uint64_t a = cache_table_id("d", "a", "t"), b = cache_table_id("d", "b", "t");
    assert_true(a != b);
    assert_true(a != cache_table_id("e", "a", "t"));
    /* The parts are kept apart: "ab"."c" is not "a"."bc". */
    assert_true(cache_table_id("d", "ab", "c") != cache_table_id("d", "a", "bc"));
    assert_true(cache_table_id("d", "", "") != cache_table_id("d", "", "t"));
    assert_true(a == cache_table_id("d", "a", "t")); /* stable */
}

/* Asks for name, takes it for a lookup, stores the answer. */
static enum cache_catalog_answer answer(const char *name, bool found, bool ok, const char *schemas,
                                        const char *related, struct cache_catalog_rel *rel)
{
    char names[CACHE_CATALOG_BATCH][CACHE_CATALOG_MAX_NAME];
    assert_int_equal(cache_catalog_get(&db, name, 1, rel), CCAT_UNKNOWN);
    assert_true(cache_catalog_pending(&db));
    assert_int_equal(cache_catalog_take(&db, names, 1), 1);
    assert_string_equal(names[0], name);
    cache_catalog_store(&db, name, false, found, ok, schemas, related, 2);
    return cache_catalog_get(&db, name, 3, rel);
}

static void test_an_unqualified_name_stands_for_every_schema(void **state)
{
    (void)state;
    struct cache_catalog_rel rel;
    assert_int_equal(answer("t", true, true, "a,b", "a.t,b.t,a.base", &rel), CCAT_YES);
    assert_string_equal(rel.schemas, "a,b");
    assert_int_equal(rel.n_ids, 3);
    assert_true(rel.ids[0] == cache_table_id("d", "a", "t"));
    assert_true(rel.ids[1] == cache_table_id("d", "b", "t"));
    assert_true(rel.ids[2] == cache_table_id("d", "a", "base"));
    /* Each relation's name, for SHOW CACHE_TABLES. */
    assert_int_equal(n_noted, 3);
    assert_string_equal(noted[0], "a.t");
    assert_string_equal(noted[2], "a.base");
    assert_true(noted_ids[1] == rel.ids[1]);
}

static void test_related_that_do_not_fit_keep_the_schemas(void **state)
{
    (void)state;
    struct cache_catalog_rel rel;
    /* A related name the lookup could not qualify: not cacheable, but a
     * write to it still knows its schemas. */
    assert_int_equal(answer("t", true, true, "a,b", "a.t,oops", &rel), CCAT_NO);
    assert_int_equal(rel.n_ids, 0);
    assert_string_equal(rel.schemas, "a,b");
    assert_int_equal(answer("s.u", false, false, "", "", &rel), CCAT_ABSENT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ids_by_schema_and_name),
        cmocka_unit_test_setup_teardown(test_an_unqualified_name_stands_for_every_schema, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_related_that_do_not_fit_keep_the_schemas, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
