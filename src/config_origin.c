/* config_origin.c - what the config's messages need: where each general
 * setting was written, the list of problems a check collects (config.h),
 * for messages of the form "FILE:LINE: reason", and values made fit to
 * quote in them. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "config_keys.h"

void config_problems_add(struct config_problems *p, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (p->n == p->cap) {
        int ncap = p->cap ? p->cap * 2 : 8;
        char **grown = realloc(p->msgs, (size_t)ncap * sizeof(*grown));
        if (!grown)
            return;
        p->msgs = grown;
        p->cap = ncap;
    }
    char *copy = strdup(msg);
    if (copy)
        p->msgs[p->n++] = copy;
}

void config_problems_free(struct config_problems *p)
{
    for (int i = 0; i < p->n; i++)
        free(p->msgs[i]);
    free(p->msgs);
    memset(p, 0, sizeof(*p));
}

void config_origins_free(struct config *cfg)
{
    if (!cfg->origins)
        return;
    for (int i = 0; i < config_n_keys; i++)
        free(cfg->origins[i].file);
    free(cfg->origins);
    cfg->origins = NULL;
}

bool config_origins_copy(struct config *cfg, const struct config *src)
{
    cfg->origins = calloc((size_t)config_n_keys, sizeof(*cfg->origins));
    if (!cfg->origins)
        return false;
    for (int i = 0; src && i < config_n_keys; i++) {
        if (src->origins[i].file &&
            !config_origin_set(cfg, &config_keys[i], src->origins[i].file, src->origins[i].line))
            return false;
    }
    return true;
}

bool config_origin_set(struct config *cfg, const struct config_key *k, const char *file, int line)
{
    struct config_origin *o = &cfg->origins[k - config_keys];
    char *copy = NULL;
    if (file && !(copy = strdup(file)))
        return false;
    free(o->file);
    o->file = copy;
    o->line = file ? line : 0;
    return true;
}

bool config_origin_of(const struct config *cfg, const char *key, const char **file, int *line)
{
    const struct config_key *k = config_key_find(key);
    if (!cfg || !k || !cfg->origins[k - config_keys].file)
        return false;
    *file = cfg->origins[k - config_keys].file;
    *line = cfg->origins[k - config_keys].line;
    return true;
}

const char *config_redact(const char *value, char *buf, size_t len)
{
    const char *scheme = strstr(value, "://");
    const char *at = scheme ? strchr(scheme + 3, '@') : NULL;
    if (!at)
        return value;
    const char *colon = memchr(scheme + 3, ':', (size_t)(at - scheme - 3));
    const char *cut = colon ? colon + 1 : scheme + 3;
    snprintf(buf, len, "%.*s***%s", (int)(cut - value), value, at);
    return buf;
}
