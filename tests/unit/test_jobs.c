/* test_jobs.c - the pure parts of refresh jobs (jobs.c): after_writes_to's
 * debounce (a quiet period, capped at 10 x debounce after the first write
 * of a burst), which written relations match a job, and the lock key. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "config.h"
#include "jobs.h"

#define S 1000000LL /* a second in microseconds */

static void test_debounce_quiet_period(void **state)
{
    (void)state;
    struct job_debounce d = {0};
    assert_int_equal(job_debounce_due(&d, 2 * S), -1);
    assert_false(job_debounce_take(&d, 100 * S, 2 * S));
    /* One write at 10 s: due at 12 s. */
    job_debounce_write(&d, 10 * S);
    assert_int_equal(job_debounce_due(&d, 2 * S), 12 * S);
    assert_false(job_debounce_take(&d, 12 * S - 1, 2 * S));
    /* Another write at 11 s moves it to 13 s. */
    job_debounce_write(&d, 11 * S);
    assert_false(job_debounce_take(&d, 12 * S, 2 * S));
    assert_true(job_debounce_take(&d, 13 * S, 2 * S));
    /* Taken: one run for the burst. */
    assert_false(job_debounce_take(&d, 14 * S, 2 * S));
    assert_int_equal(job_debounce_due(&d, 2 * S), -1);
}

static void test_debounce_cap(void **state)
{
    (void)state;
    /* A write every second, debounce 2 s: never quiet, so the cap (10 x
     * debounce after the first write) makes the run due at 20 s. */
    struct job_debounce d = {0};
    int runs = 0;
    int64_t ran_at = -1;
    for (int64_t t = 0; t <= 25 * S; t += S / 2) {
        if (t % S == 0)
            job_debounce_write(&d, t);
        if (job_debounce_take(&d, t, 2 * S)) {
            runs++;
            if (ran_at < 0)
                ran_at = t;
        }
    }
    assert_int_equal(ran_at, 20 * S);
    assert_int_equal(runs, 1); /* the next burst (from 21 s) is not due before 41 s */
    /* After the run, a new burst starts its own window. */
    struct job_debounce e = {0};
    job_debounce_write(&e, 0);
    job_debounce_write(&e, 19 * S);
    assert_int_equal(job_debounce_due(&e, 2 * S), 20 * S);
    job_debounce_write(&e, 19 * S + S / 2);
    assert_int_equal(job_debounce_due(&e, 2 * S), 20 * S);
    assert_true(job_debounce_take(&e, 20 * S, 2 * S));
    job_debounce_write(&e, 21 * S);
    assert_int_equal(job_debounce_due(&e, 2 * S), 23 * S);
}

static void test_rel_matches(void **state)
{
    (void)state;
    struct config_job_rel rels[] = {{NULL, "orders"}, {"sales", "items"}};
    struct config_job j = {.after = rels, .n_after = 2};
    /* Unqualified in the config: any schema, or none known. */
    assert_true(jobs_rel_matches(&j, NULL, "orders"));
    assert_true(jobs_rel_matches(&j, "public", "orders"));
    assert_true(jobs_rel_matches(&j, "other", "orders"));
    /* Qualified: that schema, or an event that does not know its schema. */
    assert_true(jobs_rel_matches(&j, "sales", "items"));
    assert_true(jobs_rel_matches(&j, NULL, "items"));
    assert_false(jobs_rel_matches(&j, "public", "items"));
    assert_false(jobs_rel_matches(&j, NULL, "order"));
    assert_false(jobs_rel_matches(&j, "public", "Orders")); /* names are as stored */
    struct config_job none = {0};
    assert_false(jobs_rel_matches(&none, NULL, "orders"));
}

static void test_lock_key(void **state)
{
    (void)state;
    /* Stable across versions and instances: FNV-1a 64 of "sluice.job.NAME". */
    assert_int_equal(jobs_lock_key("refresh_sales"), jobs_lock_key("refresh_sales"));
    assert_true(jobs_lock_key("refresh_sales") != jobs_lock_key("refresh_salez"));
    /* docs/jobs.md shows this one, for finding the holder in pg_locks. */
    assert_true(jobs_lock_key("refresh_sales") == -2037868859966476481LL);
    assert_string_equal(job_result_str(JOB_RESULT_SKIPPED), "skipped");
    assert_string_equal(job_result_str(JOB_RESULT_NONE), "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_debounce_quiet_period),
        cmocka_unit_test(test_debounce_cap),
        cmocka_unit_test(test_rel_matches),
        cmocka_unit_test(test_lock_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
