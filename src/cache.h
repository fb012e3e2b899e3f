/* cache.h - the result cache in the request pipeline (docs/cache.md).
 *
 * With cache = memory, a read-only statement whose tables are all named by
 * a [cache] rule (or cache_default_ttl, or a sluice:cache hint) is
 * answered from the in-process store (cache_store.h) when an answer for
 * the same key is there: the client's database, user, session settings
 * and statement text. Otherwise it runs on the primary and its answer
 * (RowDescription, DataRows, CommandComplete) is kept, unless a write to
 * one of its tables committed meanwhile. Writes through sluice drop the
 * answers over the tables they name when their transaction ends
 * (writes.h carries them; other sources of writes publish there too).
 *
 * Decisions are taken where the router takes its own: cache_route() for a
 * client without a server (before the router), the observer's
 * on_request_begin for one linked to a server (session mode). With cache
 * = off nothing here runs: no observer is registered and nothing is
 * parsed. */
#ifndef SLUICE_CACHE_H
#define SLUICE_CACHE_H

#include <stdbool.h>
#include <stdint.h>

#include "cache_store.h"
#include "conn.h"

/* At start, after the config is loaded: with cache on, makes the store,
 * registers the observer and the writes subscriber. false (why in err)
 * when the store cannot be made. */
bool cache_init(const struct config *cfg, char *err, size_t errlen);
struct worker;
/* Once the workers are made (main, no loop running yet): with cache =
 * redis://, the Redis tier behind the in-process store. false with why. */
bool cache_start(const struct config *cfg, struct worker *workers, int n_workers, char *err,
                 size_t errlen);
/* At exit (after the threads are gone). */
void cache_shutdown(void);
/* Frees the running thread's buffers (thread exit). */
void cache_thread_done(void);
/* Whether the cache is on (set once at start). */
bool cache_on(void);

enum cache_route {
    CACHE_ROUTE_NONE = 0, /* not the cache's: route as usual */
    CACHE_ROUTE_HIT,      /* answered from the cache (c's request consumed) */
    CACHE_ROUTE_FILL,     /* a miss whose answer will be kept: must run on the primary */
    CACHE_ROUTE_WAIT,     /* another client's fill of the same key runs: c waits (it is
                           * routed again when that fill ends) */
};

/* c (idle, no server, its next request's first message at the head of its
 * buffer) - is it the cache's? */
enum cache_route cache_route(struct client *c);

/* c is being freed (a client_conn free hook). */
void cache_client_free(struct client *c);

/* SHOW CACHE and /metrics: the store's figures and per-database counters. */
struct cache_db_stats {
    uint64_t hits, misses, fills, stores, refused_stale, refused_other, invalidations, bypass;
    /* The store's, of db's entries (cache_store_owner_stats()). */
    uint64_t entries, bytes, evictions, expired;
};
void cache_db_stats(const struct database *db, struct cache_db_stats *out);
/* Whether st shows any use of the cache: the databases SHOW CACHE and the
 * status page list. */
static inline bool cache_db_stats_used(const struct cache_db_stats *st)
{
    return st->hits || st->misses || st->invalidations || st->bypass || st->entries || st->bytes;
}
/* The entries no database's row shows: cb with the name and the store's
 * figures (entries, bytes, evictions, expired; the rest 0) of each
 * database no longer configured that still holds some, and of the
 * owners past the store's slots (CACHE_OWNER_OTHERS_NAME) if it has any
 * figure. With the databases' rows, they add up to the store's. */
void cache_db_stats_others(void (*cb)(const char *name, const struct cache_db_stats *st, void *arg),
                           void *arg);
/* The store's figures, with the answers being filled counted in bytes and
 * their budget in max_bytes (so max_bytes is cache_max_memory). */
void cache_stats(struct cache_store_stats *out);
/* The Redis tier's state for SHOW CACHE: "off" (cache = memory), else its
 * breaker's ("up", "open", ...), with ", pubsub down" while the
 * subscription is not live. */
const char *cache_tier_state(void);
/* /metrics: the Redis tier's counters; false with cache = memory. */
struct cache_redis_stats;
bool cache_tier_stats(struct cache_redis_stats *out);
/* Bytes the buffers of answers being filled hold now (counted in
 * cache_max_memory with the store's). */
size_t cache_fill_bytes(void);
/* CACHE CLEAR: everything (table NULL), or the answers over one table of
 * db ("name" or "schema.name"). Returns the entries dropped (everything:
 * those there before). */
size_t cache_clear(struct database *db, const char *table);
/* Calls cb for each table a write invalidated (its name as last seen),
 * with its invalidations and the entries they dropped. */
void cache_tables_each(void (*cb)(const char *db, const char *table, uint64_t invalidations,
                                  uint64_t dropped, void *arg),
                       void *arg);

#endif
