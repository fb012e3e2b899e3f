/* fuzz_config.c - libFuzzer target for the configuration loader.
 *
 * The input is a config file (up to its first NUL byte). A config that loads
 * is then read the way the rest of sluice reads one: SHOW CONFIG rows, the
 * database, user and [peers] lookups, and an admin SET taken from the input's first
 * line ("key=value"). The same text read on past its bad lines
 * (config_load_all) must fail exactly when it fails, first with the
 * same message. Crashes, sanitizer reports and leaks are findings.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A config with databases and users, for SET to copy. */
static struct config *base;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char err[256];
    (void)argc;
    (void)argv;
    /* The unsupported-key warnings are expected; printing them only slows
     * the fuzzer down. */
    log_set_quiet(true);
    base = config_load_string("base.ini",
                              "[databases]\n* = host=/tmp\nd = host=h port=5433\n"
                              "[users]\nu = pool_mode=transaction\n",
                              err, sizeof(err));
    if (!base)
        abort();
    return 0;
}

/* Reads every byte of s, so that a dangling pointer shows up under ASan. */
static size_t touch(const char *s)
{
    return s ? strlen(s) : 0;
}

static void read_config(const struct config *cfg)
{
    char buf[64];
    struct config_setting_view v;
    size_t sum = 0;

    for (int i = 0; config_setting_at(cfg, i, buf, sizeof(buf), &v); i++)
        sum += touch(v.key) + touch(v.value) + touch(v.default_value);
    for (int i = 0; i < cfg->n_databases; i++) {
        const struct config_database *db = &cfg->databases[i];
        sum += touch(db->name) + touch(db->host) + touch(db->dbname) + touch(db->user) +
               touch(db->password) + touch(db->auth_user) + touch(db->auth_query) +
               touch(db->connect_query) + touch(db->application_name) + touch(db->client_encoding) +
               touch(db->datestyle) + touch(db->timezone) + touch(db->file);
        if (config_find_database(cfg, db->name) == NULL)
            abort();
    }
    for (int i = 0; i < cfg->n_users; i++)
        if (config_find_user(cfg, cfg->users[i].name) == NULL)
            abort();
    for (int i = 0; i < cfg->n_peers; i++) {
        sum += touch(cfg->peers[i].host);
        if (config_find_peer(cfg, cfg->peers[i].id) == NULL)
            abort();
    }
    sum += config_list_contains(cfg->admin_users, "postgres");
    (void)sum;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    char *text = malloc(size + 1);

    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';

    struct config *cfg = config_load_string("fuzz.ini", text, err, sizeof(err));
    bool cfg_loaded = cfg != NULL;
    if (cfg) {
        read_config(cfg);
        struct config *copy =
            config_with_setting(cfg, "pool_mode", "transaction", err, sizeof(err));
        if (!copy)
            abort();
        config_unref(cfg);
        read_config(copy);
        config_unref(copy);
    } else if (err[0] == '\0') {
        abort(); /* a failure must always say why */
    }

    /* Read on past bad lines (--check, RELOAD): the same verdict, the same
     * first problem, and a config left consistent by the lines skipped. */
    struct config_problems problems = {0};
    struct config *all = config_load_all("fuzz.ini", text, &problems);
    /* (err is the shorter buffer: a long message is cut there first) */
    if (cfg_loaded ? problems.n != 0
                   : problems.n == 0 || strncmp(problems.msgs[0], err, strlen(err)) != 0)
        abort();
    if (all) {
        read_config(all);
        config_unref(all);
    }
    config_problems_free(&problems);

    /* The first line as an admin SET. */
    char *nl = strchr(text, '\n');
    if (nl)
        *nl = '\0';
    char *eq = strchr(text, '=');
    if (eq) {
        *eq = '\0';
        struct config *next = config_with_setting(base, text, eq + 1, err, sizeof(err));
        if (next) {
            read_config(next);
            config_unref(next);
        }
        *eq = '=';
    }

    /* The value parsers on their own. */
    int64_t n;
    bool b;
    config_parse_time(text, &n);
    config_parse_size(text, &n);
    config_parse_bool(text, &b);
    config_list_contains(text, "a");

    free(text);
    return 0;
}
