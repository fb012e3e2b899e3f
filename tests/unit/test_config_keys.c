/* test_config_keys.c - no general setting is accepted and then ignored.
 *
 * Walks the key table (src/config_keys.c). A key sluice implements must have
 * its field of struct config read somewhere outside the config module: this
 * test looks for `->name` or `.name` in the code of src/ (comments and
 * string literals removed), every file but config*.c. A key sluice does not
 * implement is marked refused in the table, and loading any value but its
 * default must then fail with "not supported by sluice". The keys of
 * [databases] and [users] entries are held to the same rule.
 *
 * A name is matched as a field of any struct: a key whose name is also a
 * field elsewhere (user, pool_mode) passes on that field's uses too. The
 * test catches the usual way a key goes dead, a field that nothing reads.
 *
 * Run from the repository root (make unit does). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <ctype.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "config_keys.h"
#include "log.h"

/* All of the .c files of src/ outside the config module, without comments and string
 * or character literals, one after the other. */
static char *code;
static size_t code_len;

/* Appends text with its comments and literals blanked out. */
static void append_code(const char *text, size_t n)
{
    char *dst = realloc(code, code_len + n + 2);
    assert_non_null(dst);
    code = dst;
    for (size_t i = 0; i < n; i++) {
        if (text[i] == '/' && i + 1 < n && text[i + 1] == '*') {
            const char *end = strstr(text + i + 2, "*/");
            i = end ? (size_t)(end - text) + 1 : n;
            code[code_len++] = ' ';
        } else if (text[i] == '/' && i + 1 < n && text[i + 1] == '/') {
            while (i < n && text[i] != '\n')
                i++;
            code[code_len++] = '\n';
        } else if (text[i] == '"' || text[i] == '\'') {
            char q = text[i];
            for (i++; i < n && text[i] != q; i++)
                if (text[i] == '\\')
                    i++;
            code[code_len++] = ' ';
        } else {
            code[code_len++] = text[i];
        }
    }
    code[code_len++] = '\n';
    code[code_len] = '\0';
}

static int read_sources(void **state)
{
    (void)state;
    DIR *d = opendir("src");
    if (!d) {
        fprintf(stderr, "test_config_keys: run it from the repository root (no src/ here)\n");
        return -1;
    }
    int files = 0;
    for (struct dirent *e; (e = readdir(d));) {
        size_t len = strlen(e->d_name);
        /* config_check.c is no part of the config module: it uses the
         * settings that name files, as the start and reloads do. */
        if (len < 3 || strcmp(e->d_name + len - 2, ".c") != 0 ||
            (strncmp(e->d_name, "config", 6) == 0 && strcmp(e->d_name, "config_check.c") != 0))
            continue;
        char path[512];
        snprintf(path, sizeof(path), "src/%s", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        static char buf[1 << 20];
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = '\0';
        append_code(buf, n);
        files++;
    }
    closedir(d);
    log_set_quiet(true);
    return files > 10 ? 0 : -1;
}

static int free_sources(void **state)
{
    (void)state;
    free(code);
    return 0;
}

static bool is_ident(char ch)
{
    return isalnum((unsigned char)ch) || ch == '_';
}

/* Whether the code reads a field named name: `->name` or `.name`, as a
 * whole word. */
static bool field_referenced(const char *name)
{
    size_t n = strlen(name);
    for (const char *p = code; (p = strstr(p, name)); p += n) {
        if (p - code < 2 || is_ident(p[n]))
            continue;
        if (p[-1] == '.' || (p[-1] == '>' && p[-2] == '-'))
            return true;
    }
    return false;
}

/* A value of key's type that differs from its default. */
static const char *other_value(const struct config_key *k)
{
    switch (k->type) {
    case CONFIG_KEY_STRING:
        return k->default_value[0] ? "" : "x";
    case CONFIG_KEY_BOOL:
        return strcmp(k->default_value, "0") == 0 ? "1" : "0";
    default:
        return strcmp(k->default_value, "7") == 0 ? "8" : "7";
    }
}

static void test_every_key_is_used_or_refused(void **state)
{
    (void)state;
    int unused = 0;
    for (int i = 0; i < config_n_keys; i++) {
        const struct config_key *k = &config_keys[i];
        if (k->refused)
            continue;
        if (!field_referenced(k->name)) {
            fprintf(stderr,
                    "setting %s is parsed but its field is read nowhere outside config*.c: "
                    "implement it, or mark it REFUSED in src/config_keys.c\n",
                    k->name);
            unused++;
        }
    }
    assert_int_equal(unused, 0);
}

static void test_refused_keys_are_refused(void **state)
{
    (void)state;
    int refused = 0;
    for (int i = 0; i < config_n_keys; i++) {
        const struct config_key *k = &config_keys[i];
        if (!k->refused)
            continue;
        refused++;
        char text[256], err[512];
        /* The default is what sluice does: accepted. */
        snprintf(text, sizeof(text), "[pgbouncer]\n%s = %s\n", k->name, k->default_value);
        struct config *cfg = config_load_string("t.ini", text, err, sizeof(err));
        if (!cfg)
            fail_msg("%s = %s (its default) should load: %s", k->name, k->default_value, err);
        config_unref(cfg);
        /* Anything else stops the load, naming file and line. */
        snprintf(text, sizeof(text), "[pgbouncer]\n%s = %s\n", k->name, other_value(k));
        cfg = config_load_string("t.ini", text, err, sizeof(err));
        if (cfg) {
            config_unref(cfg);
            fail_msg("%s = %s should be refused", k->name, other_value(k));
        }
        if (strncmp(err, "t.ini:2: ", 9) != 0 || !strstr(err, "not supported by sluice"))
            fail_msg("%s: unexpected error: %s", k->name, err);
    }
    assert_true(refused > 0);
}

/* The keys of [databases] and [users] entries: each is stored in a field
 * some code outside the config module reads, or refused (only the one
 * value sluice acts as anyway loads). */
static void test_entry_keys_are_used_or_refused(void **state)
{
    (void)state;
    int unused = 0, n = 0;
    for (int user = 0; user < 2; user++) {
        struct config_entry_key_view k;
        for (int i = 0; config_entry_key_at(user, i, &k); i++) {
            n++;
            char text[256], err[512];
            const char *head = user ? "[users]\nu =" : "[databases]\nd = host=h";
            if (!k.refused) {
                if (!field_referenced(k.field)) {
                    fprintf(stderr,
                            "%s key %s is parsed but its field %s is read nowhere outside "
                            "config*.c: implement it, or refuse it in src/config.c\n",
                            user ? "[users]" : "[databases]", k.name, k.field);
                    unused++;
                }
                continue;
            }
            snprintf(text, sizeof(text), "%s %s=%s\n", head, k.name, k.accepted);
            struct config *cfg = config_load_string("t.ini", text, err, sizeof(err));
            if (!cfg)
                fail_msg("%s=%s should load: %s", k.name, k.accepted, err);
            config_unref(cfg);
            snprintf(text, sizeof(text), "%s %s=other\n", head, k.name);
            cfg = config_load_string("t.ini", text, err, sizeof(err));
            if (cfg) {
                config_unref(cfg);
                fail_msg("%s=other should be refused", k.name);
            }
            if (strncmp(err, "t.ini:2: ", 9) != 0 || !strstr(err, "not supported by sluice"))
                fail_msg("%s: unexpected error: %s", k.name, err);
        }
    }
    assert_int_equal(unused, 0);
    assert_true(n > 20);
}

/* The scanner itself: it must be able to fail. */
static void test_scanner(void **state)
{
    (void)state;
    assert_true(field_referenced("listen_port"));
    assert_false(field_referenced("no_such_field_anywhere"));
    /* A prefix of a longer field does not count. */
    assert_false(field_referenced("listen_por"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scanner),
        cmocka_unit_test(test_every_key_is_used_or_refused),
        cmocka_unit_test(test_refused_keys_are_refused),
        cmocka_unit_test(test_entry_keys_are_used_or_refused),
    };
    return cmocka_run_group_tests(tests, read_sources, free_sources);
}
