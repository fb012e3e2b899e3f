/* config_cache.c - the [cache] section: which tables' answers the result
 * cache keeps, and for how long (docs/cache.md). Part of the config
 * module (config_keys.h declares these). */
#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>

#include "cache_redis_url.h"
#include "cache_store.h"
#include "config_keys.h"
#include "log.h"

/* A pattern part: a name PostgreSQL could have, or a shell pattern of
 * one. Quotes and blanks are not: names are written as the catalog has
 * them (lower case unless created quoted). */
static bool pattern_ok(const char *p, char *why, size_t whylen)
{
    if (!*p || strlen(p) > 2 * 64 + 1) {
        log_format(why, whylen, "a table pattern is \"schema.table\" or \"table\"");
        return false;
    }
    int dots = 0;
    for (const char *c = p; *c; c++) {
        if (*c == '.')
            dots++;
        if (*c == '"' || *c == ' ' || *c == '\t' || *c == ',' || *c == ';') {
            log_format(why, whylen, "unexpected '%c' in table pattern (write names as stored)", *c);
            return false;
        }
    }
    if (dots > 1 || p[0] == '.' || p[strlen(p) - 1] == '.') {
        log_format(why, whylen, "a table pattern is \"schema.table\" or \"table\"");
        return false;
    }
    return true;
}

bool config_cache_rule_add(struct config *cfg, const char *pattern, const char *ttl, char *why,
                           size_t whylen)
{
    if (!pattern_ok(pattern, why, whylen))
        return false;
    int64_t usec;
    if (!config_parse_seconds(ttl, &usec, why, whylen))
        return false;
    if (usec <= 0) {
        log_format(why, whylen, "the time to live must be more than 0");
        return false;
    }
    for (int i = 0; i < cfg->n_cache_rules; i++) {
        if (strcmp(cfg->cache_rules[i].pattern, pattern) == 0) {
            log_format(why, whylen, "pattern given twice");
            return false;
        }
    }
    struct config_cache_rule *v =
        realloc(cfg->cache_rules, ((size_t)cfg->n_cache_rules + 1) * sizeof(*v));
    if (!v) {
        log_format(why, whylen, "out of memory");
        return false;
    }
    cfg->cache_rules = v;
    v[cfg->n_cache_rules].pattern = strdup(pattern);
    if (!v[cfg->n_cache_rules].pattern) {
        log_format(why, whylen, "out of memory");
        return false;
    }
    v[cfg->n_cache_rules].ttl = usec;
    v[cfg->n_cache_rules].wild = strpbrk(pattern, "*?[\\") != NULL;
    v[cfg->n_cache_rules].qualified = strchr(pattern, '.') != NULL;
    cfg->n_cache_rules++;
    return true;
}

void config_cache_rules_free(struct config *cfg)
{
    for (int i = 0; i < cfg->n_cache_rules; i++)
        free(cfg->cache_rules[i].pattern);
    free(cfg->cache_rules);
    cfg->cache_rules = NULL;
    cfg->n_cache_rules = 0;
}

bool config_cache_rules_copy(struct config *cfg, const struct config *src)
{
    if (!src->n_cache_rules)
        return true;
    cfg->cache_rules = calloc((size_t)src->n_cache_rules, sizeof(*cfg->cache_rules));
    if (!cfg->cache_rules)
        return false;
    for (int i = 0; i < src->n_cache_rules; i++) {
        cfg->cache_rules[i].ttl = src->cache_rules[i].ttl;
        cfg->cache_rules[i].wild = src->cache_rules[i].wild;
        cfg->cache_rules[i].qualified = src->cache_rules[i].qualified;
        cfg->cache_rules[i].pattern = strdup(src->cache_rules[i].pattern);
        cfg->n_cache_rules = i + 1;
        if (!cfg->cache_rules[i].pattern)
            return false;
    }
    return true;
}

/* A publication name sluice can pass to pgoutput as it is: lower-case
 * letters, digits, '_' and '$', not starting with a digit or '$', at most
 * 63 bytes (PostgreSQL folds unquoted names to lower case; these need no
 * quoting in publication_names). */
static bool publication_name_ok(const char *p)
{
    size_t n = strlen(p);
    if (n == 0 || n > 63 || (p[0] >= '0' && p[0] <= '9') || p[0] == '$')
        return false;
    for (; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_' || *p == '$'))
            return false;
    return true;
}

/* cache_invalidation and cache_publication, against cache. */
static bool invalidation_check(const struct config *cfg, char *why, size_t whylen)
{
    bool logical = strcmp(cfg->cache_invalidation, "logical") == 0;
    if (logical && strcmp(cfg->cache, "off") == 0) {
        log_format(why, whylen,
                   "cache_invalidation = logical needs the result cache: set cache (it is off)");
        return false;
    }
    if (cfg->cache_publication[0] && !publication_name_ok(cfg->cache_publication)) {
        log_format(why, whylen,
                   "cache_publication \"%s\": a publication name in lower case (letters, "
                   "digits, '_', '$'; at most 63 bytes; not starting with a digit)",
                   cfg->cache_publication);
        return false;
    }
    return true;
}

bool config_cache_check(const struct config *cfg, char *why, size_t whylen)
{
    if (!invalidation_check(cfg, why, whylen))
        return false;
    if (strcmp(cfg->cache, "off") == 0)
        return true;
    /* The answers being filled get their part (cache_store_fill_budget());
     * the store keeps room for one largest entry per shard beside its fixed
     * part (cache_store.h). */
    size_t max = (size_t)cfg->cache_max_memory, entry = (size_t)cfg->cache_max_entry_size;
    uint64_t fills = cache_store_fill_budget(max, entry);
    uint64_t need = fills + (uint64_t)cache_store_overhead(max) +
                    (uint64_t)CACHE_SHARDS * cache_store_entry_cost(0, entry, 0);
    if (need > (uint64_t)max) {
        log_format(why, whylen,
                   "cache_max_memory (%lld bytes) must hold %d entries of cache_max_entry_size "
                   "(%lld bytes), the store's own tables and the answers being filled "
                   "(%llu bytes): at least %llu bytes",
                   (long long)cfg->cache_max_memory, CACHE_SHARDS,
                   (long long)cfg->cache_max_entry_size, (unsigned long long)fills,
                   (unsigned long long)need);
        return false;
    }
    return true;
}

bool config_cache_mode_check(const char *value, char *why, size_t whylen)
{
    if (!strcmp(value, "off") || !strcmp(value, "memory"))
        return true;
    if (strncmp(value, "redis://", 8) != 0) {
        log_format(why, whylen, "expected off, memory or redis://HOST:PORT[/DB]");
        return false;
    }
    struct cache_redis_addr addr;
    return cache_redis_url_parse(value, &addr, why, whylen) == 0;
}
