/* config_check.c - the whole configuration checked in one pass (see
 * config_check.h). The checks themselves belong to the modules that read
 * each file (config.c, auth.c, tls.c, params.c); this one runs them all,
 * without stopping at the first problem, and says where each one is. */
#include "config_check.h"

#include <ctype.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>

#include "params.h"
#include "tls.h"

void config_check_place(const struct config *cfg, struct config_problems *problems, const char *why)
{
    char key[64];
    size_t n = 0;
    while (n + 1 < sizeof(key) &&
           (islower((unsigned char)why[n]) || isdigit((unsigned char)why[n]) || why[n] == '_')) {
        key[n] = why[n];
        n++;
    }
    key[n] = '\0';
    const char *file;
    int line;
    if (n > 0 && config_origin_of(cfg, key, &file, &line))
        config_problems_add(problems, "%s:%d: %s", file, line, why);
    else
        config_problems_add(problems, "%s: %s", cfg->path, why);
}

/* The auth_file, parsed as logins read it: NULL when there is none or on a
 * problem (then added). A bad line is reported at its own line of the
 * file; a file that cannot be read at the auth_file line of the config. */
static struct auth_userlist *check_userlist(const struct config *cfg,
                                            struct config_problems *problems)
{
    if (!cfg->auth_file[0])
        return NULL;
    char err[1024], why[1100];
    struct auth_userlist *ul = auth_userlist_load_all(cfg->auth_file, problems, err, sizeof(err));
    if (!ul && err[0]) {
        snprintf(why, sizeof(why), "auth_file %s", err);
        config_check_place(cfg, problems, why);
    }
    return ul;
}

/* Both TLS contexts built as tls_apply_config() builds them, then freed;
 * tls.c's messages begin with the setting at fault. */
static void check_tls(const struct config *cfg, struct config_problems *problems)
{
    static const enum tls_side sides[] = {TLS_SIDE_CLIENTS, TLS_SIDE_SERVERS};
    for (size_t i = 0; i < sizeof(sides) / sizeof(sides[0]); i++) {
        char err[1024];
        void *ctx = tls_ctx_new(cfg, sides[i], err, sizeof(err));
        if (ctx)
            tls_ctx_free(ctx);
        else if (err[0])
            config_check_place(cfg, problems, err);
    }
}

bool config_check_load(const char *path, struct config **cfgp, struct auth_userlist **userlist,
                       struct config_problems *problems)
{
    *cfgp = NULL;
    *userlist = NULL;
    int found = problems->n;
    /* With bad lines, the rest of the config is still read and the files
     * it names checked, so that one run reports everything. */
    struct config *cfg = config_load_all(path, NULL, problems);
    if (!cfg)
        return false;
    char err[1024];
    if (!tracked_params_check(cfg->track_extra_parameters, err, sizeof(err)))
        config_check_place(cfg, problems, err);
    if (cfg->user[0] && !getpwnam(cfg->user)) {
        snprintf(err, sizeof(err), "user \"%s\": no such user on this system", cfg->user);
        config_check_place(cfg, problems, err);
    }
    struct auth_userlist *ul = check_userlist(cfg, problems);
    check_tls(cfg, problems);
    if (problems->n != found) {
        auth_userlist_free(ul);
        config_unref(cfg);
        return false;
    }
    *cfgp = cfg;
    *userlist = ul;
    return true;
}
