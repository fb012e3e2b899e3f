/* test_config_jobs.c - the [jobs] section (config_jobs.c) and job_timezone:
 * what a job line holds once loaded, each mistake refused with file:line
 * and its reason, and the jobs kept by an admin SET (a copied config). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "config.h"
#include "log.h"

#define HEAD                                                                                       \
    "[pgbouncer]\n"                                                                                \
    "listen_port = 6432\n"                                                                         \
    "[databases]\n"                                                                                \
    "mydb = host=127.0.0.1 dbname=mydb user=jobber\n"                                              \
    "nouser = host=127.0.0.1 dbname=mydb\n"                                                        \
    "[jobs]\n"

static char err[512];

static struct config *load(const char *text)
{
    err[0] = '\0';
    return config_load_string("t.ini", text, err, sizeof(err));
}

static void expect_error(const char *text, const char *want)
{
    struct config *cfg = load(text);
    if (cfg) {
        config_unref(cfg);
        fail_msg("loaded; expected error: %s", want);
    }
    if (!strstr(err, want))
        fail_msg("error \"%s\" does not say \"%s\"", err, want);
}

static void test_job_line(void **state)
{
    (void)state;
    struct config *cfg =
        load(HEAD "refresh_sales = database=mydb schedule=\"0 * * * *\" after_writes_to=orders,"
                  "Public.Items debounce=30 timeout=5min command=\"REFRESH MATERIALIZED VIEW "
                  "CONCURRENTLY daily_sales_summary\"\n"
                  "nightly = database=mydb schedule='@daily' command='SELECT ''x'', \"Q\"'\n"
                  "quoted = database=mydb after_writes_to=t command=\"REFRESH MATERIALIZED VIEW "
                  "\"\"My View\"\"\"\n");
    if (!cfg)
        fail_msg("%s", err);
    assert_int_equal(cfg->n_jobs, 3);
    const struct config_job *j = config_find_job(cfg, "refresh_sales");
    assert_non_null(j);
    assert_string_equal(j->database, "mydb");
    assert_string_equal(j->schedule, "0 * * * *");
    assert_int_equal(j->cron.minute, 1);
    assert_string_equal(j->command, "REFRESH MATERIALIZED VIEW CONCURRENTLY daily_sales_summary");
    assert_int_equal(j->n_after, 2);
    assert_null(j->after[0].schema);
    assert_string_equal(j->after[0].name, "orders");
    assert_string_equal(j->after[1].schema, "public");
    assert_string_equal(j->after[1].name, "items");
    assert_int_equal(j->debounce, 30000000);
    assert_int_equal(j->timeout, 300000000);
    assert_int_equal(j->line, 7);
    j = config_find_job(cfg, "nightly");
    assert_string_equal(j->command, "SELECT 'x', \"Q\"");
    assert_int_equal(j->debounce, 10000000); /* the default */
    assert_int_equal(j->timeout, 0);
    assert_int_equal(j->n_after, 0);
    j = config_find_job(cfg, "quoted");
    assert_string_equal(j->command, "REFRESH MATERIALIZED VIEW \"My View\"");
    assert_string_equal(j->schedule, "");
    assert_null(config_find_job(cfg, "nope"));
    assert_string_equal(cfg->job_timezone, "UTC");

    /* An admin SET copies the config: the jobs come along. */
    struct config *copy =
        config_with_setting(cfg, "job_timezone", "Europe/Berlin", err, sizeof(err));
    if (!copy)
        fail_msg("%s", err);
    assert_int_equal(copy->n_jobs, 3);
    assert_string_equal(config_find_job(copy, "refresh_sales")->after[1].schema, "public");
    assert_string_equal(copy->job_timezone, "Europe/Berlin");
    assert_null(config_with_setting(cfg, "job_timezone", "Mars/Base", err, sizeof(err)));
    assert_non_null(strstr(err, "invalid value \"Mars/Base\" for job_timezone"));
    config_unref(copy);
    config_unref(cfg);
}

static void test_job_errors(void **state)
{
    (void)state;
    expect_error(HEAD "a = database=mydb schedule=\"61 * * * *\" command=x\n",
                 "t.ini:7: bad schedule \"61 * * * *\": minute 61 is out of range 0-59");
    expect_error(HEAD "a = database=mydb schedule=\"* * * *\" command=x\n",
                 "t.ini:7: bad schedule \"* * * *\": expected 5 fields");
    expect_error(HEAD "a = database=mydb command=x\n",
                 "t.ini:7: job \"a\" needs schedule= or after_writes_to=");
    expect_error(HEAD "a = schedule=@daily command=x\n", "t.ini:7: job \"a\" needs database=");
    expect_error(HEAD "a = database=mydb schedule=@daily\n", "t.ini:7: job \"a\" needs command=");
    expect_error(HEAD "a = database=mydb schedule=@daily command=x colour=red\n",
                 "t.ini:7: unknown job key \"colour\"");
    expect_error(HEAD "a = database=mydb schedule=@daily command=\"x\n",
                 "t.ini:7: unterminated quoted value for command");
    expect_error(HEAD "a = database=mydb after_writes_to=orders, command=x\n",
                 "t.ini:7: after_writes_to: a table name missing");
    expect_error(HEAD "a = database=mydb after_writes_to=a.b.c command=x\n",
                 "t.ini:7: after_writes_to: \"a.b.c\" is not a table name");
    expect_error(HEAD "a = database=mydb after_writes_to=t debounce=soon command=x\n",
                 "t.ini:7: invalid debounce \"soon\"");
    expect_error(HEAD "a = database=mydb after_writes_to=t timeout=-1 command=x\n",
                 "t.ini:7: invalid timeout \"-1\"");
    expect_error(HEAD "a = database=mydb schedule=@daily command=x\n"
                      "a = database=mydb schedule=@daily command=y\n",
                 "t.ini:8: job \"a\" is defined twice (first at t.ini:7)");
    expect_error(HEAD "\"a b\" = database=mydb schedule=@daily command=x\n",
                 "t.ini:7: a job name is 1 to 63 letters");
    expect_error(HEAD "a = database=other schedule=@daily command=x\n",
                 "t.ini:7: job \"a\": no [databases] entry for database other");
    expect_error(HEAD "a = database=nouser schedule=@daily command=x\n",
                 "t.ini:7: job \"a\": the [databases] entry of nouser has no user=");
    expect_error("[pgbouncer]\njob_timezone = Nowhere/Land\n",
                 "t.ini:2: invalid value \"Nowhere/Land\" for job_timezone: time zone "
                 "\"Nowhere/Land\": cannot open");
    /* The [jobs] section may come before [databases]. */
    struct config *cfg = load("[jobs]\nx = database=mydb schedule=@hourly command=y\n"
                              "[databases]\nmydb = host=h user=u\n"
                              "[sluice]\njob_timezone = America/New_York\n");
    if (!cfg)
        fail_msg("%s", err);
    assert_int_equal(cfg->n_jobs, 1);
    assert_string_equal(cfg->job_timezone, "America/New_York");
    config_unref(cfg);
}

int main(void)
{
    log_set_quiet(true);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_job_line),
        cmocka_unit_test(test_job_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
