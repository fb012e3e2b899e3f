/* test_config_origin.c - config_load_all() reading on past bad lines, the
 * problems list, and where each general setting was written. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

#include "tmpdir_test.h"

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/sluice-origin-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static void test_problems_list(void **state)
{
    (void)state;
    struct config_problems p = {0};
    for (int i = 0; i < 20; i++)
        config_problems_add(&p, "f:%d: reason %d", i + 1, i);
    assert_int_equal(p.n, 20);
    assert_string_equal(p.msgs[0], "f:1: reason 0");
    assert_string_equal(p.msgs[19], "f:20: reason 19");
    config_problems_free(&p);
    assert_int_equal(p.n, 0);
    assert_null(p.msgs);
    config_problems_free(&p); /* twice is harmless */
}

/* Every bad line is reported, in file order, with its own line, through
 * %include too; what follows a bad line is still read. */
static void test_load_all_reads_on(void **state)
{
    (void)state;
    char inc[256];
    snprintf(inc, sizeof(inc), "%s", write_file("inc.ini", "pool_mode = nope\nlisten_port = 7\n"));
    char main_text[1024];
    snprintf(main_text, sizeof(main_text),
             "[databases]\n"
             "a = host=x port=zz\n"
             "b = host=y\n"
             "[pgbouncer]\n"
             "typo_key = 1\n"
             "%%include %s\n"
             "max_client_conn = 5\n"
             "[nope]\n"
             "[jobs]\n"
             "j = database=b command=\"select 1\" schedule=\"* * *\"\n"
             "%%include %s/missing.ini\n",
             inc, tmpdir);
    const char *path = write_file("main.ini", main_text);
    struct config_problems p = {0};
    struct config *cfg = config_load_all(path, NULL, &p);
    assert_non_null(cfg); /* returned for checking further */
    assert_int_equal(p.n, 6);
    char want[512];
    snprintf(want, sizeof(want), "%s:2: invalid value \"zz\" for port: not an integer", path);
    assert_string_equal(p.msgs[0], want);
    snprintf(want, sizeof(want), "%s:5: unknown setting \"typo_key\"", path);
    assert_string_equal(p.msgs[1], want);
    snprintf(want, sizeof(want),
             "%s:1: invalid value \"nope\" for pool_mode: expected session, transaction or "
             "statement",
             inc);
    assert_string_equal(p.msgs[2], want);
    snprintf(want, sizeof(want), "%s:8: unknown section [nope]", path);
    assert_string_equal(p.msgs[3], want);
    snprintf(want, sizeof(want), "%s:10: ", path);
    assert_memory_equal(p.msgs[4], want, strlen(want));
    assert_non_null(strstr(p.msgs[4], "schedule"));
    snprintf(want, sizeof(want), "%s:11: cannot include \"%s/missing.ini\": ", path, tmpdir);
    assert_memory_equal(p.msgs[5], want, strlen(want));
    /* the good lines around the bad ones were read */
    assert_int_equal(cfg->listen_port, 7);
    assert_int_equal(cfg->max_client_conn, 5);
    assert_int_equal(cfg->n_databases, 1);
    assert_string_equal(cfg->databases[0].name, "b");
    config_unref(cfg);
    config_problems_free(&p);

    /* a good file: no problem, the config as config_load() makes it */
    path = write_file("good.ini", "[pgbouncer]\nlisten_port = 7\n");
    cfg = config_load_all(path, NULL, &p);
    assert_non_null(cfg);
    assert_int_equal(p.n, 0);
    config_unref(cfg);

    /* a main file that cannot be read is one problem */
    char missing[256];
    snprintf(missing, sizeof(missing), "%s/none.ini", tmpdir);
    cfg = config_load_all(missing, NULL, &p);
    config_unref(cfg);
    assert_int_equal(p.n, 1);
    snprintf(want, sizeof(want), "%s: No such file or directory", missing);
    assert_string_equal(p.msgs[0], want);
    config_problems_free(&p);
}

static void test_origins(void **state)
{
    (void)state;
    char inc[256];
    snprintf(inc, sizeof(inc), "%s",
             write_file("o_inc.ini", "; comment\nauth_file = /x/users.txt\n"));
    char text[512];
    snprintf(text, sizeof(text),
             "[sluice]\nlisten_port = 6000\n\n%%include %s\nLISTEN_PORT = 6001\n", inc);
    const char *path = write_file("o.ini", text);
    char err[256];
    struct config *cfg = config_load(path, err, sizeof(err));
    assert_non_null(cfg);
    const char *file;
    int line;
    /* a later line wins, and names are matched in any case */
    assert_true(config_origin_of(cfg, "listen_port", &file, &line));
    assert_string_equal(file, path);
    assert_int_equal(line, 5);
    assert_true(config_origin_of(cfg, "AUTH_FILE", &file, &line));
    assert_string_equal(file, inc);
    assert_int_equal(line, 2);
    assert_false(config_origin_of(cfg, "pool_mode", &file, &line)); /* a default */
    assert_false(config_origin_of(cfg, "no_such_key", &file, &line));

    /* SET's copy: the key it changed comes from no file any more */
    struct config *set = config_with_setting(cfg, "auth_file", "/y", err, sizeof(err));
    assert_non_null(set);
    assert_false(config_origin_of(set, "auth_file", &file, &line));
    assert_true(config_origin_of(set, "listen_port", &file, &line));
    assert_int_equal(line, 5);
    config_unref(set);
    config_unref(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_problems_list),
        cmocka_unit_test(test_load_all_reads_on),
        cmocka_unit_test(test_origins),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
