/* metrics_cache.c - the result cache's families in /metrics: per database
 * (hits, misses, stores, refused for staleness, invalidations; its entries,
 * bytes, evictions and expired in the store), the in-process store's, the
 * logical decoding consumers' and the Redis tier's (cache.h,
 * cache_logical.h, cache_redis.h). */
#include <stdint.h>

#include "cache.h"
#include "cache_logical.h"
#include "cache_redis.h"
#include "conn.h"
#include "list.h"
#include "metrics.h"
#include "pool.h"

/* The result cache (cache.h): per database, and the store's. */
/* cache_invalidation = logical: each database's consumer, up (its slot
 * streams) and how far behind the server's position it has confirmed. */
static void render_cache_logical(struct metrics_buf *b)
{
    if (!cache_logical_on())
        return;
    static const char *const names[] = {"sluice_cache_logical_up",
                                        "sluice_cache_logical_lag_bytes"};
    static const char *const help[] = {
        "1 while the database's logical decoding slot streams (writes that bypass sluice are "
        "seen); 0 while it starts or failed (its answers are not cached).",
        "The server's WAL position last reported minus the position the result cache has "
        "confirmed (0 while not streaming)."};
    for (int k = 0; k < 2; k++) {
        metrics_buf_family(b, names[k], "gauge", help[k]);
        struct list *it, *tmp;
        list_for_each_safe(it, tmp, &g_pooler.databases)
        {
            const struct database *db = list_entry(it, struct database, node);
            struct cache_logical_status ls;
            if (!cache_logical_status(db, &ls))
                continue;
            unsigned long long v = k == 0 ? ls.state == CACHE_LOGICAL_STREAMING : ls.lag_bytes;
            metrics_buf_printf(b, "%s{database=\"", names[k]);
            metrics_buf_label(b, db->name);
            metrics_buf_printf(b, "\"} %llu\n", v);
        }
    }
}

struct owner_arg {
    struct metrics_buf *b;
    const char *family;
    int k;
};

static void owner_sample(const char *name, const struct cache_db_stats *st, void *arg)
{
    struct owner_arg *a = arg;
    uint64_t v[] = {st->entries, st->bytes, st->evictions, st->expired};
    metrics_buf_printf(a->b, "%s{database=\"", a->family);
    metrics_buf_label(a->b, name);
    metrics_buf_printf(a->b, "\"} %llu\n", (unsigned long long)v[a->k]);
}

/* Each database's part of the store (SHOW CACHE's entries, bytes,
 * evictions and expired of its row): the databases', then the entries no
 * database configured now has (its name, or "*others*"). Summed, the
 * store's entries and evictions; its bytes less the fixed part and fills. */
static void render_cache_owners(struct metrics_buf *b)
{
    static const char *const names[] = {
        "sluice_cache_database_entries", "sluice_cache_database_bytes",
        "sluice_cache_database_evictions_total", "sluice_cache_database_expired_total"};
    static const char *const types[] = {"gauge", "gauge", "counter", "counter"};
    static const char *const help[] = {
        "The database's answers in the result cache.",
        "Bytes the database's answers hold in the result cache.",
        "The database's answers evicted from the result cache to make room.",
        "The database's answers found past their TTL (dropped)."};
    for (int k = 0; k < 4; k++) {
        metrics_buf_family(b, names[k], types[k], help[k]);
        struct owner_arg a = {b, names[k], k};
        struct list *it, *tmp;
        list_for_each_safe(it, tmp, &g_pooler.databases)
        {
            const struct database *db = list_entry(it, struct database, node);
            struct cache_db_stats st;
            cache_db_stats(db, &st);
            owner_sample(db->name, &st, &a);
        }
        cache_db_stats_others(owner_sample, &a);
    }
}

/* With cache = redis://: the tier's breaker and what it asked of Redis. */
static void render_cache_redis(struct metrics_buf *b)
{
    struct cache_redis_stats rs;
    if (!cache_tier_stats(&rs))
        return;
    metrics_buf_family(b, "sluice_cache_redis_up", "gauge",
                       "1 while the Redis tier's breaker is closed (lookups go to Redis), else 0.");
    metrics_buf_printf(b, "sluice_cache_redis_up %d\n", rs.state == CACHE_REDIS_UP);
    metrics_buf_family(
        b, "sluice_cache_redis_invalidations_pending", "gauge",
        "Tables whose invalidation Redis has not confirmed yet (not cached until it has).");
    metrics_buf_printf(b, "sluice_cache_redis_invalidations_pending %llu\n",
                       (unsigned long long)rs.invalidations_pending);
    static const char *const names[] = {
        "sluice_cache_redis_lookups_total",     "sluice_cache_redis_hits_total",
        "sluice_cache_redis_stale_total",       "sluice_cache_redis_unavailable_total",
        "sluice_cache_redis_stores_total",      "sluice_cache_redis_invalidations_total",
        "sluice_cache_redis_errors_total",      "sluice_cache_redis_state_changes_total",
        "sluice_cache_redis_copy_checks_total", "sluice_cache_redis_copy_hits_total"};
    static const char *const help[] = {
        "Entries asked of Redis.",
        "Entries Redis had, with current generations.",
        "Entries Redis had whose tables' generations had moved (not served).",
        "Lookups not answered (breaker open, timeout, error): the query went to PostgreSQL.",
        "Answers Redis stored.",
        "Invalidations (generation INCR and PUBLISH) Redis confirmed.",
        "Failed operations: timeouts, error replies, lost connections.",
        "Breaker state changes (each also logged).",
        "Copies kept in this process checked against Redis's generation counters.",
        "Copies kept in this process served: their generations were current in Redis."};
    const uint64_t v[] = {rs.gets,          rs.hits,          rs.stale,
                          rs.unavailable,   rs.puts_stored,   rs.invalidations_sent,
                          rs.errors,        rs.state_changes, rs.checks,
                          rs.checks_current};
    for (int k = 0; k < 10; k++) {
        metrics_buf_family(b, names[k], "counter", help[k]);
        metrics_buf_printf(b, "%s %llu\n", names[k], (unsigned long long)v[k]);
    }
}

void metrics_render_cache(struct metrics_buf *b)
{
    if (!cache_on())
        return;
    /* Whole names, as every series': grep and the dashboard's check
     * (tests/integration/test_page.py) find them here. */
    static const char *const names[] = {
        "sluice_cache_hits_total", "sluice_cache_misses_total", "sluice_cache_stores_total",
        "sluice_cache_refused_stale_total", "sluice_cache_invalidations_total"};
    static const char *const help[] = {
        "Statements answered from the result cache.",
        "Cacheable statements not found in the result cache.", "Answers kept in the result cache.",
        "Answers not kept because a write to their tables committed while they were read.",
        "Tables' invalidations by committed writes."};
    for (int k = 0; k < 5; k++) {
        const char *family = names[k];
        metrics_buf_family(b, family, "counter", help[k]);
        struct list *it, *tmp;
        list_for_each_safe(it, tmp, &g_pooler.databases)
        {
            const struct database *db = list_entry(it, struct database, node);
            struct cache_db_stats st;
            cache_db_stats(db, &st);
            uint64_t v[] = {st.hits, st.misses, st.stores, st.refused_stale, st.invalidations};
            metrics_buf_printf(b, "%s{database=\"", family);
            metrics_buf_label(b, db->name);
            metrics_buf_printf(b, "\"} %llu\n", (unsigned long long)v[k]);
        }
    }
    struct cache_store_stats st;
    cache_stats(&st);
    metrics_buf_family(b, "sluice_cache_entries", "gauge", "Answers in the result cache.");
    metrics_buf_printf(b, "sluice_cache_entries %llu\n", (unsigned long long)st.entries);
    metrics_buf_family(b, "sluice_cache_bytes", "gauge",
                       "Bytes the result cache holds (entries and its own tables).");
    metrics_buf_printf(b, "sluice_cache_bytes %llu\n",
                       (unsigned long long)(st.bytes + st.overhead_bytes));
    metrics_buf_family(b, "sluice_cache_max_bytes", "gauge", "cache_max_memory.");
    metrics_buf_printf(b, "sluice_cache_max_bytes %llu\n", (unsigned long long)st.max_bytes);
    metrics_buf_family(b, "sluice_cache_evictions_total", "counter",
                       "Answers evicted from the result cache to make room.");
    metrics_buf_printf(b, "sluice_cache_evictions_total %llu\n", (unsigned long long)st.evictions);
    render_cache_owners(b);
    render_cache_logical(b);
    render_cache_redis(b);
}
