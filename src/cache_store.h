/* cache_store.h - the in-process result cache store (issue 13): opaque key
 * -> answer bytes, with an expiry, the tables the answer read, a memory
 * bound accounted to the byte, TinyLFU admission in front of LRU eviction,
 * invalidation by table through per-table generations, and a registry of
 * fills in progress for single-flight. Knows nothing of the protocol, the
 * event loops or the config: the caller builds keys, takes the time and
 * wakes its own waiters. Thread-safe: 16 shards by key hash, a mutex each,
 * never held while the caller does anything else. docs/design.md says why
 * it is shaped this way. */
#ifndef SLUICE_CACHE_STORE_H
#define SLUICE_CACHE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CACHE_SHARDS 16

struct cache_store;
struct cache_entry;  /* a stored answer, reference-counted, read-only once stored */
struct cache_fill;   /* the generations of a fill's tables, taken when it began */
struct cache_flight; /* a fill in progress that others may wait for */

struct cache_store_opts {
    size_t max_bytes;      /* everything the store allocates for entries, plus its
                            * fixed overhead (buckets, sketches), stays under this */
    size_t max_entry_size; /* a value longer than this is refused (CACHE_PUT_TOO_BIG) */
    /* Where entries' and the fixed part's memory comes from; NULL:
     * malloc/free. Every byte counted in bytes and overhead_bytes goes
     * through these (tests count them). free may be called from any thread
     * (a reader's last release). */
    void *(*alloc)(size_t n, void *arg);
    void (*free)(void *p, size_t n, void *arg);
    void *alloc_arg;
};

/* A new store, or NULL if out of memory or max_bytes cannot hold the fixed
 * overhead (cache_store_overhead()) plus one max_entry_size entry per shard. */
struct cache_store *cache_store_new(const struct cache_store_opts *opts);
/* Frees the store and every entry. No other thread may use it any more;
 * entries still referenced (cache_store_get()) must have been released,
 * flights left and waiters handed back. */
void cache_store_free(struct cache_store *s);
/* The fixed bytes a store with these limits allocates (shards, bucket
 * arrays, frequency sketches), counted in max_bytes. */
size_t cache_store_overhead(size_t max_bytes);
/* The part of cache_max_memory its user keeps for answers being filled
 * (the store gets the rest): an eighth, and one max_entry_size at least. */
size_t cache_store_fill_budget(size_t max_bytes, size_t max_entry_size);
/* What an entry of these sizes costs: the exact size of its one allocation. */
size_t cache_store_entry_cost(size_t key_len, size_t value_len, size_t n_tables);

/* The shard (0..CACHE_SHARDS-1) key lives in: for tests and diagnostics. */
unsigned cache_store_key_shard(struct cache_store *s, const void *key, size_t key_len);

/* --- lookups ------------------------------------------------------------ */

/* The entry stored under key, alive at now_usec (monotonic) and read from
 * no table invalidated since its fill began, with a reference the caller
 * must give back with cache_entry_release(); NULL on a miss. The value
 * stays valid, unchanged, until then, whatever the store does meanwhile
 * (eviction, invalidation, clear), so the caller may write it to a socket
 * without a lock or a copy. Counts a hit or a miss and the key's frequency. */
struct cache_entry *cache_store_get(struct cache_store *s, const void *key, size_t key_len,
                                    uint64_t now_usec);
/* The answer's bytes (RowDescription, DataRows, CommandComplete as stored). */
const uint8_t *cache_entry_value(const struct cache_entry *e, size_t *len);
/* A word the entry keeps for its readers, any thread (the statement's
 * insights shape, computed at its first hit): 0 until set. */
uint64_t cache_entry_memo(const struct cache_entry *e);
void cache_entry_set_memo(struct cache_entry *e, uint64_t v);
/* The monotonic usec at which it expires. */
uint64_t cache_entry_expires(const struct cache_entry *e);
/* Gives back the reference of cache_store_get(); e may be NULL. An entry
 * already dropped from the store is freed by its last release. Any thread. */
void cache_entry_release(struct cache_entry *e);

/* --- fills -------------------------------------------------------------- */

/* Takes the generations of tables[0..n) (64-bit ids: the caller packs the
 * database and the relation OID) and of the whole store, before the query
 * that fills an entry is sent. Duplicates are fine. The entry stored will
 * be accounted to owner (a slot of cache_store_owner()). NULL if out of
 * memory (do not cache then). Free it with cache_fill_free() after the put. */
struct cache_fill *cache_store_fill_begin(struct cache_store *s, unsigned owner,
                                          const uint64_t *tables, size_t n);
void cache_fill_free(struct cache_fill *f);

enum cache_put_result {
    CACHE_PUT_STORED = 0,   /* stored (replacing an older entry of the key) */
    CACHE_PUT_STALE,        /* a table of the fill was invalidated (or the store
                             * cleared) since cache_store_fill_begin() */
    CACHE_PUT_TOO_BIG,      /* value over max_entry_size */
    CACHE_PUT_NOT_ADMITTED, /* the store is full and the entries it would evict are
                             * used more often than this key (TinyLFU) */
    CACHE_PUT_NO_ROOM,      /* full of entries still referenced by readers */
    CACHE_PUT_NO_MEMORY,    /* the allocator failed */
};
const char *cache_put_result_str(enum cache_put_result r);

/* Stores a copy of key and value, expiring at expires_usec, as having read
 * the tables of f, unless one of f's generations changed (CACHE_PUT_STALE,
 * counted as a fill refused for staleness). May evict other entries to make
 * room (now_usec tells which have expired). The store keeps no pointer to
 * key, value or f. */
enum cache_put_result cache_store_put(struct cache_store *s, const struct cache_fill *f,
                                      const void *key, size_t key_len, const void *value,
                                      size_t value_len, uint64_t now_usec, uint64_t expires_usec);

/* --- invalidation ------------------------------------------------------- */

/* The generation of a table: 0 until its first invalidation, then the
 * number of invalidations. */
uint64_t cache_store_table_gen(struct cache_store *s, uint64_t table);
/* Bumps the table's generation and drops every entry that read it. From
 * the moment the generation moves, no lookup returns such an entry and no
 * fill that began before is stored. Returns the entries dropped. (A table
 * no fill ever named has nothing to drop; it is recorded for its counter
 * when memory allows.) */
size_t cache_store_invalidate_table(struct cache_store *s, uint64_t table);
/* Drops every entry; fills begun before are refused (CACHE_PUT_STALE). */
void cache_store_clear(struct cache_store *s);

/* --- single-flight -------------------------------------------------------- */

enum cache_flight_role {
    CACHE_FLIGHT_LEAD = 0, /* no fill of the key was running: run it, then leave */
    CACHE_FLIGHT_WAIT,     /* one is running: the waiter is queued, wait for it */
    CACHE_FLIGHT_ALONE,    /* out of memory: run the query without single-flight */
    CACHE_FLIGHT_HIT,      /* cache_store_get_or_join() only: *hit is the entry */
};
const char *cache_flight_role_str(enum cache_flight_role r);

enum cache_flight_end {
    CACHE_FLIGHT_PENDING = 0, /* still queued */
    CACHE_FLIGHT_FILLED,      /* the leader's answer came: look the key up again (a
                               * miss there, if its put was refused, means join again) */
    CACHE_FLIGHT_FAILED,      /* the leader failed: run the query yourself, without
                               * joining, so that an error is not retried in series */
};

/* A waiter, the caller's memory (embedded in its client, say). Owned by the
 * store from a CACHE_FLIGHT_WAIT join until handed back by the leader's
 * cache_store_flight_leave() or taken back by cache_store_flight_cancel(). */
struct cache_waiter {
    struct cache_waiter *next; /* the store's, then the list leave() returns */
    enum cache_flight_end end; /* set when handed back */
    void *arg;                 /* the caller's */
};

/* Joins the fill of key: CACHE_FLIGHT_LEAD with *lead set (the caller runs
 * the query and must call cache_store_flight_leave(*lead)), or
 * CACHE_FLIGHT_WAIT with w queued, or CACHE_FLIGHT_ALONE. */
enum cache_flight_role cache_store_flight_join(struct cache_store *s, const void *key,
                                               size_t key_len, struct cache_waiter *w,
                                               struct cache_flight **lead);
/* cache_store_get() then, on a miss, cache_store_flight_join() under one
 * lock, so that no leader can finish between the two (the common path of a
 * cacheable request: one hash, one lock). */
enum cache_flight_role cache_store_get_or_join(struct cache_store *s, const void *key,
                                               size_t key_len, uint64_t now_usec,
                                               struct cache_waiter *w, struct cache_entry **hit,
                                               struct cache_flight **lead);
/* Ends the flight (after the leader's put, or its failure: end is
 * CACHE_FLIGHT_FILLED or CACHE_FLIGHT_FAILED) and hands back its waiters,
 * oldest first, linked by next, each with end set: the caller wakes each
 * on its own thread. The flight is freed. */
struct cache_waiter *cache_store_flight_leave(struct cache_store *s, struct cache_flight *lead,
                                              enum cache_flight_end end);
/* Takes w off the flight of key (its client left). True if it was queued;
 * false if a leader already took it: it will come back from that leader's
 * leave(), so its memory must live until then. */
bool cache_store_flight_cancel(struct cache_store *s, const void *key, size_t key_len,
                               struct cache_waiter *w);

/* --- owners: the figures per database ------------------------------------ */

/* Every entry is accounted, from its insert to its last release, to an
 * owner: the caller's database, named by a 64-bit id (cache_db_id()). An
 * owner gets a slot at its first fill; slots are never freed, so that an
 * entry keeps a slot number (not a pointer to a database, which a reload
 * may free while the entry lives) and an owner that comes back finds its
 * figures. Once the CACHE_OWNERS - 1 slots are taken, the ids without one
 * share CACHE_OWNER_OTHERS, named CACHE_OWNER_OTHERS_NAME. */
#define CACHE_OWNERS            64
#define CACHE_OWNER_OTHERS      (CACHE_OWNERS - 1)
#define CACHE_OWNER_OTHERS_NAME "*others*"
#define CACHE_OWNER_NAME        64 /* bytes of an owner's name kept, NUL included */

/* id's slot, taken (with name, for the figures) if it has none; lock-free
 * but for that first time. Id 0 goes to CACHE_OWNER_OTHERS. */
unsigned cache_store_owner(struct cache_store *s, uint64_t id, const char *name);
/* id's slot, or -1 if it has none (its entries, if any, are the others'). */
int cache_store_owner_find(struct cache_store *s, uint64_t id);

struct cache_owner_stats {
    uint64_t id; /* 0: the slot is free (all else is 0 then) */
    char name[CACHE_OWNER_NAME];
    uint64_t entries;     /* in the store now */
    uint64_t bytes;       /* their allocations, with those dropped but still held */
    uint64_t evictions;   /* its entries dropped to make room (for any owner's fill) */
    uint64_t expired;     /* its entries found past their expiry */
    uint64_t invalidated; /* its entries dropped by table invalidations */
    uint64_t cleared;     /* its entries dropped by cache_store_clear() */
};
/* Slot's figures (0..CACHE_OWNERS-1), read without a lock: each counter
 * is exact, but the store may move between two reads. Summed over the
 * slots, entries, bytes, evictions, expired and invalidated are the
 * store's (cache_store_stats()). */
void cache_store_owner_stats(struct cache_store *s, unsigned slot, struct cache_owner_stats *out);

/* --- statistics --------------------------------------------------------- */

struct cache_store_stats {
    uint64_t hits;
    uint64_t misses;            /* including the expired and the stale found */
    uint64_t expired;           /* entries found past their expiry (dropped) */
    uint64_t stores;            /* puts that stored */
    uint64_t evictions;         /* entries dropped to make room */
    uint64_t invalidations;     /* table invalidations (generation bumps) */
    uint64_t invalidated;       /* entries dropped by them */
    uint64_t clears;            /* cache_store_clear() calls */
    uint64_t refused_stale;     /* fills refused for staleness */
    uint64_t refused_too_big;   /* values over max_entry_size */
    uint64_t refused_admission; /* CACHE_PUT_NOT_ADMITTED */
    uint64_t refused_no_room;   /* CACHE_PUT_NO_ROOM and CACHE_PUT_NO_MEMORY */
    uint64_t flights;           /* fills led (CACHE_FLIGHT_LEAD) */
    uint64_t flight_waits;      /* requests that waited for one (CACHE_FLIGHT_WAIT) */
    uint64_t entries;           /* in the store now */
    uint64_t bytes;             /* entries' allocations now, including those dropped
                                 * but still referenced by a reader */
    uint64_t overhead_bytes;    /* the fixed part (cache_store_overhead()) */
    uint64_t max_bytes;
    uint64_t tables; /* table ids known (with a generation) */
};
void cache_store_stats(struct cache_store *s, struct cache_store_stats *out);

/* Calls cb for each table id known, with its generation (= its number of
 * invalidations) and the entries its invalidations dropped. cb runs under
 * the table map's lock: it must not call the store. */
void cache_store_tables_each(struct cache_store *s,
                             void (*cb)(uint64_t table, uint64_t gen, uint64_t dropped, void *arg),
                             void *arg);

#endif
