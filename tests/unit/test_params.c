/* test_params.c - tracked session parameters and string interning. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "params.h"

static void test_tracked_names(void **state)
{
    (void)state;
    assert_string_equal(tracked_param_name(TP_CLIENT_ENCODING), "client_encoding");
    assert_string_equal(tracked_param_name(TP_DATESTYLE), "DateStyle");
    assert_string_equal(tracked_param_name(TP_TIMEZONE), "TimeZone");
    assert_string_equal(tracked_param_name(TP_STANDARD_CONFORMING_STRINGS),
                        "standard_conforming_strings");
    assert_string_equal(tracked_param_name(TP_APPLICATION_NAME), "application_name");
    assert_string_equal(tracked_param_name(TP_BUILTIN_COUNT), "?"); /* no extra ones yet */
    assert_string_equal(tracked_param_name(-1), "?");
    assert_string_equal(tracked_param_name(1000), "?");
}

static void test_tracked_lookup(void **state)
{
    (void)state;
    /* Every name maps back to itself. */
    for (int i = 0; i < tracked_param_count(); i++)
        assert_int_equal(tracked_param_lookup(tracked_param_name(i)), i);

    /* Case-insensitive, like GUC names. */
    assert_int_equal(tracked_param_lookup("CLIENT_ENCODING"), TP_CLIENT_ENCODING);
    assert_int_equal(tracked_param_lookup("datestyle"), TP_DATESTYLE);
    assert_int_equal(tracked_param_lookup("DATESTYLE"), TP_DATESTYLE);
    assert_int_equal(tracked_param_lookup("timezone"), TP_TIMEZONE);
    assert_int_equal(tracked_param_lookup("Standard_Conforming_Strings"),
                     TP_STANDARD_CONFORMING_STRINGS);
    assert_int_equal(tracked_param_lookup("Application_Name"), TP_APPLICATION_NAME);

    /* Not tracked. */
    assert_int_equal(tracked_param_lookup("search_path"), -1);
    assert_int_equal(tracked_param_lookup("server_version"), -1);
    assert_int_equal(tracked_param_lookup(""), -1);
    assert_int_equal(tracked_param_lookup("client"), -1);            /* prefix */
    assert_int_equal(tracked_param_lookup("client_encoding "), -1);  /* trailing space */
    assert_int_equal(tracked_param_lookup("application_name2"), -1); /* longer */
}

/* track_extra_parameters: names after the built-in ones, built-in names
 * and repeats skipped; a bad name or too many leave the list as it was. */
static void test_tracked_extra(void **state)
{
    (void)state;
    char err[256];
    assert_true(tracked_params_configure("IntervalStyle, TimeZone,default_transaction_read_only "
                                         "intervalstyle myext.knob",
                                         err, sizeof(err)));
    assert_int_equal(tracked_param_count(), TP_BUILTIN_COUNT + 3);
    assert_int_equal(tracked_param_lookup("INTERVALSTYLE"), TP_BUILTIN_COUNT);
    assert_int_equal(tracked_param_lookup("default_transaction_read_only"), TP_BUILTIN_COUNT + 1);
    assert_int_equal(tracked_param_lookup("myext.knob"), TP_BUILTIN_COUNT + 2);
    assert_int_equal(tracked_param_lookup("TimeZone"), TP_TIMEZONE);
    assert_string_equal(tracked_param_name(TP_BUILTIN_COUNT + 2), "myext.knob");
    assert_string_equal(tracked_param_name(TP_BUILTIN_COUNT + 3), "?");

    /* Values of extra ones live in an array allocated on first use. */
    struct param_set ps = {0};
    assert_null(param_get(&ps, TP_BUILTIN_COUNT + 1));
    assert_null(ps.x);
    param_store(param_slot(&ps, TP_BUILTIN_COUNT + 1), "on");
    assert_string_equal(param_get(&ps, TP_BUILTIN_COUNT + 1), "on");
    param_store(param_slot(&ps, TP_TIMEZONE), "UTC");
    param_set_clear(&ps);
    assert_null(ps.x);
    assert_null(ps.v[TP_TIMEZONE]);

    /* the check alone says the same and changes nothing */
    assert_true(tracked_params_check("TimeZone, search_path", err, sizeof(err)));
    assert_false(tracked_params_check("a;b", err, sizeof(err)));
    assert_string_equal(err, "track_extra_parameters: \"a;b\" is not a parameter name");
    assert_int_equal(tracked_param_count(), TP_BUILTIN_COUNT + 3);
    assert_false(tracked_params_configure("a;b", err, sizeof(err)));
    assert_string_equal(err, "track_extra_parameters: \"a;b\" is not a parameter name");
    assert_false(tracked_params_configure("a b c d e f g h i j k l m n o p q", err, sizeof(err)));
    assert_string_equal(err, "track_extra_parameters: at most 16 parameters besides the built-in "
                             "ones");
    assert_int_equal(tracked_param_count(), TP_BUILTIN_COUNT + 3); /* unchanged */

    assert_true(tracked_params_configure("", err, sizeof(err)));
    assert_int_equal(tracked_param_count(), TP_BUILTIN_COUNT);
    assert_int_equal(tracked_param_lookup("IntervalStyle"), -1);
}

static void test_intern_same_pointer(void **state)
{
    (void)state;
    char a[32], b[32];
    strcpy(a, "UTF8");
    strcpy(b, "UTF8");
    const char *pa = param_intern(a);
    const char *pb = param_intern(b);
    assert_non_null(pa);
    assert_ptr_equal(pa, pb);
    assert_string_equal(pa, "UTF8");
    /* A private copy: the caller's buffer may change afterwards. */
    assert_ptr_not_equal(pa, a);
    strcpy(a, "LATIN1");
    assert_string_equal(pa, "UTF8");

    const char *pc = param_intern("LATIN1");
    assert_ptr_not_equal(pc, pa);
    assert_string_equal(pc, "LATIN1");
    assert_ptr_equal(param_intern(a), pc);

    /* Case matters for values. */
    assert_ptr_not_equal(param_intern("utf8"), pa);

    /* The empty string is a value like any other. */
    const char *e = param_intern("");
    assert_non_null(e);
    assert_string_equal(e, "");
    assert_ptr_equal(param_intern(""), e);
    assert_ptr_not_equal(e, pa);

    assert_null(param_intern(NULL));
}

#define MANY 5000

static void test_intern_many(void **state)
{
    (void)state;
    /* Enough strings to grow the table several times over. */
    static const char *first[MANY];
    char buf[32];
    for (int i = 0; i < MANY; i++) {
        snprintf(buf, sizeof(buf), "value-%d", i);
        first[i] = param_intern(buf);
        assert_string_equal(first[i], buf);
    }
    /* Pointers survive the growth, and all are distinct. */
    for (int i = 0; i < MANY; i++) {
        snprintf(buf, sizeof(buf), "value-%d", i);
        assert_ptr_equal(param_intern(buf), first[i]);
        if (i > 0)
            assert_ptr_not_equal(first[i], first[i - 1]);
    }
    assert_ptr_not_equal(first[0], first[MANY - 1]);

    /* Free everything, then interning works from scratch. */
    param_intern_free_all();
    const char *p = param_intern("value-1");
    assert_string_equal(p, "value-1");
    assert_ptr_equal(param_intern("value-1"), p);
    param_intern_free_all();
    param_intern_free_all(); /* twice is harmless */
}

static void test_intern_refcount(void **state)
{
    (void)state;
    size_t base = param_intern_count();
    const char *a = param_intern("tenant-1");
    const char *b = param_intern("tenant-1");
    assert_ptr_equal(a, b);
    assert_int_equal(param_intern_count(), base + 1);
    assert_ptr_equal(param_ref(a), a);
    param_unref(a);
    param_unref(b);
    /* One reference left: still interned, still the same text. */
    assert_int_equal(param_intern_count(), base + 1);
    assert_string_equal(a, "tenant-1");
    param_unref(a);
    assert_int_equal(param_intern_count(), base);
    param_unref(NULL);
    assert_null(param_ref(NULL));

    /* Slots: assign takes a reference, store interns, take hands one over. */
    const char *slot = NULL;
    param_store(&slot, "x");
    assert_string_equal(slot, "x");
    const char *other = NULL;
    param_assign(&other, slot);
    assert_ptr_equal(other, slot);
    param_store(&slot, "y");
    assert_string_equal(other, "x");
    assert_int_equal(param_intern_count(), base + 2);
    param_assign(&other, NULL);
    param_take(&slot, NULL);
    assert_int_equal(param_intern_count(), base);

    struct param_set ps = {0};
    param_store(&ps.v[TP_TIMEZONE], "UTC");
    param_store(&ps.v[TP_APPLICATION_NAME], "app");
    param_set_clear(&ps);
    assert_null(ps.v[TP_TIMEZONE]);
    assert_int_equal(param_intern_count(), base);
}

/* Interning and releasing many texts in a random order keeps every live
 * text findable (deletion without tombstones moves entries back) and ends
 * with an empty table: a SET per transaction does not grow memory. */
static void test_intern_churn(void **state)
{
    (void)state;
    enum { LIVE = 3000, ROUNDS = 200000 };
    static const char *live[LIVE];
    static int id[LIVE];
    size_t base = param_intern_count();
    char buf[48];
    unsigned seed = 12345;
    int next = 0;
    for (int r = 0; r < ROUNDS; r++) {
        seed = seed * 1103515245u + 12345u;
        int k = (int)((seed >> 8) % LIVE);
        if (live[k]) {
            snprintf(buf, sizeof(buf), "SET app.tenant = 't%d'", id[k]);
            assert_ptr_equal(param_intern(buf), live[k]); /* found again */
            param_unref(live[k]);
            param_unref(live[k]);
            live[k] = NULL;
        } else {
            id[k] = next++;
            snprintf(buf, sizeof(buf), "SET app.tenant = 't%d'", id[k]);
            live[k] = param_intern(buf);
        }
    }
    for (int k = 0; k < LIVE; k++) {
        if (!live[k])
            continue;
        snprintf(buf, sizeof(buf), "SET app.tenant = 't%d'", id[k]);
        assert_string_equal(live[k], buf);
        param_unref(live[k]);
    }
    assert_int_equal(param_intern_count(), base);
}

#define THREADS    4
#define PER_THREAD 500

static const char *thread_results[THREADS][PER_THREAD];

static void *intern_thread(void *arg)
{
    int t = (int)(intptr_t)arg;
    char buf[32];
    for (int i = 0; i < PER_THREAD; i++) {
        snprintf(buf, sizeof(buf), "shared-%d", i);
        thread_results[t][i] = param_intern(buf);
    }
    return NULL;
}

static void test_intern_threads(void **state)
{
    (void)state;
    /* Threads interning the same strings all get the same pointers. */
    pthread_t th[THREADS];
    for (int t = 0; t < THREADS; t++)
        assert_int_equal(pthread_create(&th[t], NULL, intern_thread, (void *)(intptr_t)t), 0);
    for (int t = 0; t < THREADS; t++)
        assert_int_equal(pthread_join(th[t], NULL), 0);
    for (int i = 0; i < PER_THREAD; i++) {
        char buf[32];
        snprintf(buf, sizeof(buf), "shared-%d", i);
        assert_string_equal(thread_results[0][i], buf);
        for (int t = 1; t < THREADS; t++)
            assert_ptr_equal(thread_results[t][i], thread_results[0][i]);
    }
}

static int teardown_intern(void **state)
{
    (void)state;
    param_intern_free_all();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tracked_names),
        cmocka_unit_test(test_tracked_lookup),
        cmocka_unit_test(test_tracked_extra),
        cmocka_unit_test_teardown(test_intern_same_pointer, teardown_intern),
        cmocka_unit_test_teardown(test_intern_many, teardown_intern),
        cmocka_unit_test_teardown(test_intern_threads, teardown_intern),
        cmocka_unit_test_teardown(test_intern_refcount, teardown_intern),
        cmocka_unit_test_teardown(test_intern_churn, teardown_intern),
    };
    return cmocka_run_group_tests(tests, NULL, teardown_intern);
}
