/* admin_show_cache.c - SHOW CACHE and SHOW CACHE_TABLES: the result cache
 * (cache.h). SHOW CACHE has one row per database that used it, with its
 * share of the store (entries, bytes, evictions, expired), rows for the
 * entries of databases no longer configured and of those past the store's
 * owner slots ("*others*"), and one row "*" for the store, which all
 * databases share. With cache_invalidation = logical, a database's row
 * says where its consumer is (logical: streaming, starting or failed: why)
 * and how far behind (logical_lag_bytes). */
#include <stdio.h>

#include "admin_int.h"
#include "cache.h"
#include "cache_logical.h"
#include "pool.h"

static void db_row(struct admin_result *r, const struct database *db)
{
    struct cache_db_stats st;
    cache_db_stats(db, &st);
    struct cache_logical_status ls;
    bool logical = cache_logical_status(db, &ls);
    if (!cache_db_stats_used(&st) && !logical)
        return;
    char f[14][ADMIN_NUM_LEN], ratio[32], state[sizeof(ls.reason) + 16] = "";
    if (logical)
        cache_logical_describe(&ls, state, sizeof(state));
    uint64_t asked = st.hits + st.misses;
    snprintf(ratio, sizeof(ratio), "%.3f", asked ? (double)st.hits / (double)asked : 0.0);
    const char *v[] = {db->name,
                       admin_num4(f[0], (long long)st.hits),
                       admin_num4(f[1], (long long)st.misses),
                       ratio,
                       admin_num4(f[2], (long long)st.fills),
                       admin_num4(f[3], (long long)st.stores),
                       admin_num4(f[4], (long long)st.refused_stale),
                       admin_num4(f[5], (long long)st.refused_other),
                       admin_num4(f[6], (long long)st.invalidations),
                       admin_num4(f[7], (long long)st.bypass),
                       admin_num4(f[9], (long long)st.entries),
                       admin_num4(f[10], (long long)st.bytes),
                       NULL,
                       admin_num4(f[11], (long long)st.evictions),
                       admin_num4(f[12], (long long)st.expired),
                       NULL,
                       logical ? state : NULL,
                       logical ? admin_num4(f[8], (long long)ls.lag_bytes) : NULL};
    admin_result_row(r, v);
}

/* Entries no database's row has (cache_db_stats_others()). */
static void other_row(const char *name, const struct cache_db_stats *st, void *arg)
{
    char f[4][ADMIN_NUM_LEN];
    const char *v[] = {name,
                       NULL,
                       NULL,
                       NULL,
                       NULL,
                       NULL,
                       NULL,
                       NULL,
                       NULL,
                       NULL,
                       admin_num4(f[0], (long long)st->entries),
                       admin_num4(f[1], (long long)st->bytes),
                       NULL,
                       admin_num4(f[2], (long long)st->evictions),
                       admin_num4(f[3], (long long)st->expired),
                       NULL,
                       NULL,
                       NULL};
    admin_result_row(arg, v);
}

void admin_show_cache(struct admin_result *r)
{
    if (!cache_on())
        return;
    struct list *it, *tmp;
    list_for_each_safe(it, tmp, &g_pooler.databases)
    {
        db_row(r, list_entry(it, struct database, node));
    }
    cache_db_stats_others(other_row, r);
    struct cache_store_stats st;
    cache_stats(&st);
    char f[16][ADMIN_NUM_LEN], ratio[32];
    uint64_t asked = st.hits + st.misses;
    snprintf(ratio, sizeof(ratio), "%.3f", asked ? (double)st.hits / (double)asked : 0.0);
    const char *v[] = {"*",
                       admin_num4(f[0], (long long)st.hits),
                       admin_num4(f[1], (long long)st.misses),
                       ratio,
                       NULL,
                       admin_num4(f[3], (long long)st.stores),
                       admin_num4(f[4], (long long)st.refused_stale),
                       admin_num4(f[5], (long long)(st.refused_too_big + st.refused_admission +
                                                    st.refused_no_room)),
                       admin_num4(f[6], (long long)st.invalidations),
                       NULL,
                       admin_num4(f[7], (long long)st.entries),
                       admin_num4(f[8], (long long)(st.bytes + st.overhead_bytes)),
                       admin_num4(f[9], (long long)st.max_bytes),
                       admin_num4(f[10], (long long)st.evictions),
                       admin_num4(f[11], (long long)st.expired),
                       cache_tier_state(),
                       NULL,
                       NULL};
    admin_result_row(r, v);
}

static void table_row(const char *db, const char *table, uint64_t invalidations, uint64_t dropped,
                      void *arg)
{
    char f[2][ADMIN_NUM_LEN];
    const char *v[] = {db, table, admin_num4(f[0], (long long)invalidations),
                       admin_num4(f[1], (long long)dropped)};
    admin_result_row(arg, v);
}

void admin_show_cache_tables(struct admin_result *r)
{
    cache_tables_each(table_row, r);
}
