/* cache_policy.c - what the result cache may keep, and what statements
 * write (cache_policy.h). */
#include "cache_policy.h"

#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>

#include "cache_catalog.h"
#include "cache_sql.h"
#include "hash.h"
#include "classify_rw.h"
#include "volatility.h"

/* Statement reasons (classify_rw.h) that change rows of the relations a
 * text names; any other write (DDL, DO, CALL...) is "all". */
static bool data_write(const char *reason)
{
    static const char *const data[] = {
        "INSERT",    "UPDATE",        "DELETE",          "MERGE",
        "COPY",      "TRUNCATE",      "FOR UPDATE",      "FOR NO KEY UPDATE",
        "FOR SHARE", "FOR KEY SHARE", "EXPLAIN ANALYZE", "LOCK",
        "NOTIFY",    "LISTEN",        "UNLISTEN",        "DECLARE",
        "PREPARE",   "DEALLOCATE",    "DISCARD",         "CLOSE",
        NULL}; /* SELECT INTO makes a table: DDL */
    if (!reason)
        return true;
    if (!strncmp(reason, "function ", 9) || !strncmp(reason, "REFRESH", 7))
        return true; /* a volatile function: what it writes is not known (docs/cache.md) */
    for (int i = 0; data[i]; i++)
        if (!strcmp(reason, data[i]))
            return true;
    return false;
}

/* cache_policy_may_write() for the statement at the start of sql. */
static bool stmt_may_write(const char *sql, size_t len)
{
    char word[16];
    cache_sql_first_word(sql, len, word, sizeof(word));
    if (!strcmp(word, "select"))
        return cache_sql_contains(sql, len, "into"); /* a SELECT INTO is looked at */
    static const char *const quiet[] = {
        "values",     "table",     "show",    "begin",    "start",  "commit", "end",  "rollback",
        "abort",      "savepoint", "release", "set",      "reset",  "fetch",  "move", "close",
        "deallocate", "discard",   "listen",  "unlisten", "notify", "",       NULL};
    for (int i = 0; quiet[i]; i++)
        if (word[0] == quiet[i][0] && !strcmp(word, quiet[i]))
            return false;
    return true;
}

bool cache_policy_may_write(const char *sql, size_t len)
{
    /* "BEGIN; UPDATE ...": each statement's first word */
    for (const char *p = sql; p; p = cache_sql_next_statement(sql, len, p))
        if (stmt_may_write(p, (size_t)(sql + len - p)))
            return true;
    return false;
}

bool cache_policy_writes(const char *sql, size_t len, void (*add)(void *arg, const char *name),
                         void *arg)
{
    char target[CACHE_CATALOG_MAX_NAME];
    if (cache_sql_dml_target(sql, len, target, sizeof(target))) {
        add(arg, target);
        return true;
    }
    if (len > CACHE_MAX_TEXT)
        return false;
    const struct classify_rw_result *r = classify_rw_cached(sql, len);
    if (r->verdict != CRW_WRITE)
        return true;
    bool named = !r->truncated && !r->rels_truncated;
    for (int i = 0; i < r->n; i++)
        if (r->stmts[i].verdict == CRW_WRITE && !data_write(r->stmts[i].reason))
            named = false;
    for (int i = 0; i < r->n_rels; i++)
        if (r->rels[i].write)
            add(arg, r->rels[i].name);
    return named;
}

/* Functions whose answer the key covers although PostgreSQL calls them
 * stable: they read the session's settings, all in the key. */
static bool key_covers(const char *name)
{
    static const char *const ok[] = {"current_setting",
                                     "current_schema",
                                     "current_schemas",
                                     "current_database",
                                     "current_user",
                                     "session_user",
                                     "to_char",
                                     "to_date",
                                     "to_timestamp",
                                     "to_number",
                                     NULL};
    if (!strncmp(name, "pg_catalog.", 11))
        name += 11;
    for (int i = 0; ok[i]; i++)
        if (!strcmp(name, ok[i]))
            return true;
    return false;
}

/* The smallest TTL of the [cache] rules matching relation name (as
 * written) held by schemas ("a,b"); 0 when a schema's has none. Runs at
 * every cached read: no snprintf, and fnmatch() only for patterns with
 * wildcards (a cache hit spent a quarter of its instructions here). */
static int64_t rule_ttl(const struct config *cfg, const char *name, const char *schemas)
{
    const char *dot = strchr(name, '.');
    char one[CACHE_CATALOG_SCHEMAS];
    if (dot) {
        size_t n = (size_t)(dot - name) < sizeof(one) - 1 ? (size_t)(dot - name) : sizeof(one) - 1;
        memcpy(one, name, n);
        one[n] = '\0';
        schemas = one;
        name = dot + 1;
    }
    size_t name_len = strlen(name);
    int64_t ttl = INT64_MAX;
    for (const char *s = schemas; *s;) {
        const char *end = strchr(s, ',');
        size_t sl = end ? (size_t)(end - s) : strlen(s);
        char full[CACHE_CATALOG_SCHEMAS + CACHE_CATALOG_MAX_NAME + 2];
        if (sl + 1 + name_len >= sizeof(full))
            return 0; /* longer than any name the catalog holds */
        memcpy(full, s, sl);
        full[sl] = '.';
        memcpy(full + sl + 1, name, name_len + 1);
        int64_t best = INT64_MAX;
        for (int i = 0; i < cfg->n_cache_rules; i++) {
            const struct config_cache_rule *r = &cfg->cache_rules[i];
            const char *subject = r->qualified ? full : name;
            bool match =
                r->wild ? fnmatch(r->pattern, subject, 0) == 0 : strcmp(r->pattern, subject) == 0;
            if (match && r->ttl < best)
                best = r->ttl;
        }
        if (best == INT64_MAX)
            return 0;
        if (best < ttl)
            ttl = best;
        s += sl + (end ? 1 : 0);
    }
    return ttl == INT64_MAX ? 0 : ttl;
}

/* Whether a rule may name a relation of sql: its table part appears in the
 * text (a pattern with a wildcard there: any text may). */
static bool rules_may_match(const struct config *cfg, const char *sql, size_t len)
{
    for (int i = 0; i < cfg->n_cache_rules; i++) {
        const char *p = cfg->cache_rules[i].pattern;
        const char *dot = strchr(p, '.');
        const char *table = dot ? dot + 1 : p;
        if (strpbrk(table, "*?[") || cache_sql_contains(sql, len, table))
            return true;
    }
    return false;
}

int cache_policy_decide(struct database *db, const struct config *cfg, const char *sql, size_t len,
                        int64_t now, struct cache_decision *d)
{
    int64_t hint_ttl;
    enum cache_sql_hint hint = cache_sql_hint(sql, len, &hint_ttl);
    if (hint == CACHE_HINT_NOCACHE)
        return -1;
    if (hint == CACHE_HINT_NONE && cfg->cache_default_ttl <= 0 && !rules_may_match(cfg, sql, len))
        return -1;
    char word[16];
    cache_sql_first_word(sql, len, word, sizeof(word));
    if (strcmp(word, "select") && strcmp(word, "with") && strcmp(word, "values") &&
        strcmp(word, "table"))
        return 0;
    const struct classify_rw_result *r = classify_rw_cached(sql, len);
    if (r->verdict != CRW_READ || r->n != 1 || r->pins || r->varies || r->rels_truncated ||
        r->parse_error || r->whole_txn_primary)
        return 0;
    const struct classify_rw_stmt *st = &r->stmts[0];
    if (st->txn != CRW_TXN_NONE || st->is_set || st->set_local || st->copy_in)
        return 0;
    for (int i = 0; i < r->n_funcs; i++) {
        char v = volatility_get(db, r->funcs[i].name, now);
        if (v != 'i' && !(v == 's' && key_covers(r->funcs[i].name)))
            return 0;
    }
    int64_t ttl = INT64_MAX;
    d->n_ids = 0;
    d->ids[d->n_ids++] = cache_db_id(db);
    for (int i = 0; i < r->n_rels; i++) {
        struct cache_catalog_rel rel;
        enum cache_catalog_answer a = cache_catalog_get(db, r->rels[i].name, now, &rel);
        if (a == CCAT_ABSENT && r->rels[i].maybe_cte)
            continue;
        if (a != CCAT_YES || d->n_ids + rel.n_ids > CACHE_MAX_IDS)
            return 0;
        memcpy(d->ids + d->n_ids, rel.ids, (size_t)rel.n_ids * sizeof(rel.ids[0]));
        d->n_ids += rel.n_ids;
        int64_t t = rule_ttl(cfg, r->rels[i].name, rel.schemas);
        if (t <= 0)
            t = cfg->cache_default_ttl;
        if (t <= 0 && hint != CACHE_HINT_CACHE)
            return 0;
        if (t > 0 && t < ttl)
            ttl = t;
    }
    if (hint == CACHE_HINT_CACHE && hint_ttl > 0)
        ttl = hint_ttl;
    else if (ttl == INT64_MAX)
        ttl = cfg->cache_default_ttl > 0 ? cfg->cache_default_ttl : CACHE_HINT_TTL;
    d->ttl = ttl;
    return 1;
}

/* Whether the statement at the start of sql changes session state. */
static bool stmt_taints(const char *sql, size_t len)
{
    char word[16];
    cache_sql_first_word(sql, len, word, sizeof(word));
    static const char *const state[] = {"set", "reset", "discard",  "create", "load",
                                        "do",  "call",  "security", NULL};
    for (int i = 0; state[i]; i++)
        if (!strcmp(word, state[i]) && (i != 3 || cache_sql_contains(sql, len, "temp")))
            return true; /* CREATE: only a temporary object */
    /* SELECT ... INTO TEMP t: a temporary table too. */
    return !strcmp(word, "select") && cache_sql_contains(sql, len, "into") &&
           cache_sql_contains(sql, len, "temp");
}

bool cache_policy_taints(const char *sql, size_t len, bool session)
{
    if (cache_sql_contains(sql, len, "set_config"))
        return true;
    if (!session)
        return false;
    for (const char *p = sql; p; p = cache_sql_next_statement(sql, len, p))
        if (stmt_taints(p, (size_t)(sql + len - p)))
            return true;
    return false;
}

/* ---- the facts of prepared texts ---------------------------------------------- */

/* Direct-mapped by the text's hash, per thread: a slot holds the last text
 * that hashed there (its copy, compared whole on a hit). At most
 * FACTS_SLOTS texts of up to FACTS_MAX_TEXT bytes: a bound, whatever the
 * clients send. */
#define FACTS_SLOTS    256
#define FACTS_MAX_TEXT 2048
struct facts_slot {
    uint64_t hash;
    char *text;
    size_t len;
    struct cache_text_facts f;
};
static _Thread_local struct facts_slot *tl_facts;
static _Thread_local uint64_t tl_facts_seed; /* from the table's address (hash.h) */
static _Thread_local struct cache_text_facts tl_scratch;

static void facts_add(void *arg, const char *name)
{
    struct cache_text_facts *f = arg;
    if (f->n_names == CACHE_FACTS_NAMES || strlen(name) >= CACHE_CATALOG_MAX_NAME) {
        f->overflow = true;
        return;
    }
    memcpy(f->names[f->n_names++], name, strlen(name) + 1);
}

static void facts_find(const char *sql, size_t len, struct cache_text_facts *f)
{
    memset(f, 0, offsetof(struct cache_text_facts, names));
    f->may_write = cache_policy_may_write(sql, len);
    f->named = !f->may_write || cache_policy_writes(sql, len, facts_add, f);
    f->taints[0] = cache_policy_taints(sql, len, false);
    f->taints[1] = cache_policy_taints(sql, len, true);
}

struct cache_text_facts *cache_policy_facts(const char *sql, size_t len)
{
    if (len > FACTS_MAX_TEXT ||
        (!tl_facts && !(tl_facts = calloc(FACTS_SLOTS, sizeof(*tl_facts))))) {
        facts_find(sql, len, &tl_scratch);
        return &tl_scratch;
    }
    if (!tl_facts_seed)
        tl_facts_seed = hash_text((const char *)&tl_facts, sizeof(tl_facts), 0xfac7);
    uint64_t h = hash_text(sql, len, tl_facts_seed);
    struct facts_slot *s = &tl_facts[h & (FACTS_SLOTS - 1)];
    if (s->text && s->hash == h && s->len == len && !memcmp(s->text, sql, len))
        return &s->f;
    char *copy = realloc(s->text, len ? len : 1);
    if (!copy) {
        facts_find(sql, len, &tl_scratch);
        return &tl_scratch;
    }
    memcpy(copy, sql, len);
    s->text = copy;
    s->len = len;
    s->hash = h;
    facts_find(sql, len, &s->f);
    return &s->f;
}

/* ---- the facts of simple Queries, by shape ------------------------------------- */

/* Direct-mapped by shape, per thread: the facts of the last text of each
 * slot's shape (no text kept: texts of one shape differ only where facts
 * do not look). */
#define SHAPE_SLOTS 256
struct shape_slot {
    uint64_t shape; /* 0: empty */
    struct cache_text_facts f;
};
static _Thread_local struct shape_slot *tl_shapes;

bool cache_policy_by_shape(const char *sql, size_t len)
{
    if (len > FACTS_MAX_TEXT || cache_sql_next_statement(sql, len, sql))
        return false;
    /* Statements whose writes and session effects no constant in them
     * changes (EXPLAIN (ANALYZE 0) writes nothing where ANALYZE 1 may). */
    static const char *const ok[] = {"select", "insert",   "update", "delete", "with",
                                     "merge",  "values",   "table",  "begin",  "commit",
                                     "end",    "rollback", NULL};
    char word[16];
    cache_sql_first_word(sql, len, word, sizeof(word));
    for (int i = 0; ok[i]; i++)
        if (word[0] == ok[i][0] && !strcmp(word, ok[i]))
            return true;
    return false;
}

const struct cache_text_facts *cache_policy_shape_facts(uint64_t shape, const char *sql, size_t len)
{
    if (!tl_shapes && !(tl_shapes = calloc(SHAPE_SLOTS, sizeof(*tl_shapes)))) {
        facts_find(sql, len, &tl_scratch);
        return &tl_scratch;
    }
    struct shape_slot *s = &tl_shapes[(shape ^ (shape >> 32)) & (SHAPE_SLOTS - 1)];
    if (s->shape != shape) {
        facts_find(sql, len, &s->f);
        s->shape = shape;
    }
    return &s->f;
}

void cache_policy_thread_done(void)
{
    for (int i = 0; tl_facts && i < FACTS_SLOTS; i++)
        free(tl_facts[i].text);
    free(tl_facts);
    tl_facts = NULL;
    free(tl_shapes);
    tl_shapes = NULL;
}
