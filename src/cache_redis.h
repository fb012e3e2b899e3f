/* cache_redis.h - the result cache's Redis tier (issue 13, item 4): entries
 * shared by every sluice instance that uses one Redis, per-table generation
 * counters checked on every hit in the same round trip as the entry, and
 * invalidations published so that each instance drops its in-process copies.
 *
 * hiredis's async API on libev: nothing here blocks a loop. One connection
 * per event loop (struct cache_redis_conn, lazily connected), plus, on the
 * home loop, a pub/sub connection and the delivery of invalidations. The
 * module knows nothing of workers, clients or the protocol: keys and values
 * are opaque bytes, tables opaque 64-bit ids. cache_redis_worker.h is the
 * glue that gives each worker its connection.
 *
 * Redis slow or down: operations answer CACHE_REDIS_UNAVAILABLE within the
 * op timeout, and a circuit breaker (process-wide) stops trying for a while
 * (then lets one probe through). An invalidation that cannot be delivered
 * keeps its table blocked and is retried until Redis took it.
 *
 * Threads: a cache_redis_conn is used on its loop's thread only; everything
 * taking a struct cache_redis (invalidate, blocked, state, stats) is safe
 * from any thread. docs/cache_redis_notes.md has the keys and guarantees. */
#ifndef SLUICE_CACHE_REDIS_H
#define SLUICE_CACHE_REDIS_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cache_redis_url.h"

/* At most this many tables per entry (a statement reading more is not
 * cached in Redis: CACHE_REDIS_UNAVAILABLE / false). */
#define CACHE_REDIS_MAX_TABLES 32

/* The longest key prefix. */
#define CACHE_REDIS_PREFIX_MAX 64

struct cache_redis;      /* one per process (tests may run several) */
struct cache_redis_conn; /* one per event loop using it */

/* --- lifecycle ---------------------------------------------------------- */

/* What the breaker says (process-wide). */
enum cache_redis_state {
    CACHE_REDIS_STARTING = 0, /* no operation has finished yet: operations are tried */
    CACHE_REDIS_UP,           /* the last operation succeeded: operations are tried */
    CACHE_REDIS_OPEN,         /* breaker open after failures: nothing is tried until
                               * the open period ends (operations: UNAVAILABLE) */
    CACHE_REDIS_HALF_OPEN,    /* the period ended: one probe is in flight, the others
                               * are not tried; its outcome gives UP or OPEN again */
};
const char *cache_redis_state_str(enum cache_redis_state s);

struct cache_redis_opts {
    const char *prefix;      /* of every key and the channel; NULL: "sluice:" */
    int op_timeout_ms;       /* an operation (connect included) not answered in this time
                              * fails; 0: 100 */
    int breaker_failures;    /* consecutive failures that open the breaker; 0: 3 */
    int breaker_open_ms;     /* the first open period; 0: 1000 */
    int breaker_open_max_ms; /* each failed probe doubles it up to this; 0: 30000 */
    int retry_ms;            /* pub/sub reconnects and undelivered invalidations are
                              * retried this often (while the breaker lets them); 0: 200 */
    /* An invalidation of table was published (by any instance, this one
     * included: the caller also invalidates its own store at once). Called
     * on the home loop's thread. */
    void (*on_invalidate)(uint64_t table, void *arg);
    /* The pub/sub connection (re)subscribed or was lost (hung up, or
     * silent for 3 s: worker 0 publishes a heartbeat every second):
     * invalidations may have been missed meanwhile, so every in-process
     * copy of a Redis entry (and anything filled while the subscription was
     * down) must go. Home loop's thread. May be NULL. */
    void (*on_reset)(void *arg);
    /* The breaker's state changed (the thread that changed it; also logged,
     * one line per change). May be NULL. */
    void (*on_state)(enum cache_redis_state s, void *arg);
    void *arg; /* passed to the callbacks */
};

/* A Redis tier for addr, its home connection on home (the loop that will
 * run the pub/sub connection, the delivery of invalidations and its own
 * gets and puts: worker 0's). Resolves addr->host now (getaddrinfo: call it
 * at start, not from a loop) and starts the pub/sub connection; nothing
 * else connects before it is used. Returns NULL with err on failure (bad
 * host, options out of range, out of memory). */
struct cache_redis *cache_redis_new(const struct cache_redis_addr *addr,
                                    const struct cache_redis_opts *opts, struct ev_loop *home,
                                    char *err, size_t errlen);
/* Frees r: its home connection (as cache_redis_conn_free()) and pub/sub.
 * Every other cache_redis_conn must have been freed, and no thread may use
 * r any more. Undelivered invalidations are logged (one line) and dropped. */
void cache_redis_free(struct cache_redis *r);

/* The connection of the home loop (owned by r). */
struct cache_redis_conn *cache_redis_home(struct cache_redis *r);

/* A connection for loop (not connected until first used), to be used on
 * that loop's thread only. NULL if out of memory. */
struct cache_redis_conn *cache_redis_conn_new(struct cache_redis *r, struct ev_loop *loop);
/* Frees c on its loop's thread (or once that thread has ended), never
 * from inside one of c's get callbacks. Every get still pending gets its
 * callback now, with CACHE_REDIS_UNAVAILABLE, from inside this call. */
void cache_redis_conn_free(struct cache_redis_conn *c);

/* --- lookups and stores ------------------------------------------------ */

enum cache_redis_status {
    CACHE_REDIS_HIT = 0,     /* value holds the entry's bytes */
    CACHE_REDIS_MISS,        /* no entry, or one stored with older generations (stale)
                              * or for other tables: gens holds the tables' current
                              * generations, for the fill's put */
    CACHE_REDIS_UNAVAILABLE, /* not asked (breaker open, no connection, too many
                              * tables) or no good answer in time: bypass the cache */
    CACHE_REDIS_BLOCKED,     /* a table has an invalidation of this instance not yet
                              * delivered: bypass the cache and do not fill */
};
const char *cache_redis_status_str(enum cache_redis_status s);

/* What a get's callback receives; every pointer is valid during the
 * callback only (value points into hiredis's reply: copy what must stay). */
struct cache_redis_result {
    enum cache_redis_status status;
    const uint8_t *value; /* HIT: the bytes given to the put, binary-safe */
    size_t value_len;
    const uint64_t *gens; /* MISS: gens[i] is tables[i]'s generation (0 if never
                           * invalidated), n_tables of them */
    int n_tables;
    /* A get's HIT: the entry as Redis keeps it (header and value), for a
     * copy kept in this process (cache_redis_check()). */
    const uint8_t *entry;
    size_t entry_len;
};

typedef void (*cache_redis_get_cb)(const struct cache_redis_result *res, void *arg);

/* Looks key up with the current generations of tables[0..n_tables) in ONE
 * round trip (MGET of the entry and the generation counters). cb is called
 * exactly once, on c's loop, never from inside this call (not even for an
 * immediate UNAVAILABLE or BLOCKED: those come from the loop's next turn),
 * at the latest op_timeout_ms after the request was sent (a later answer is
 * ignored), or from cache_redis_conn_free(). key and tables are copied;
 * the caller need not keep them. HIT means: an entry stored under key, for
 * these tables (any order), with generations equal to their current ones.
 * n_tables may be 0 (nothing to invalidate it but its TTL). cb may call
 * cache_redis_get() and cache_redis_put() again. Costs about 2 us of CPU
 * on this side per get (1 kB value, 2 tables). */
void cache_redis_get(struct cache_redis_conn *c, const void *key, size_t key_len,
                     const uint64_t *tables, int n_tables, cache_redis_get_cb cb, void *arg);

/* Checks copy, an entry kept in this process (the header and value of a
 * put or of a get's HIT, cache_redis_entry_header()), against the current
 * generations of its tables in ONE round trip (MGET of their counters, not
 * of the entry): HIT with value pointing into copy (the answer) when none
 * moved; MISS with gens (the tables in the header's order) otherwise;
 * UNAVAILABLE or BLOCKED as a get. copy must stay valid until cb, which is
 * called as a get's. */
void cache_redis_check(struct cache_redis_conn *c, const uint8_t *copy, size_t copy_len,
                       cache_redis_get_cb cb, void *arg);
/* Writes the header of an entry of tables at gens into h (room for
 * 8 + 16 * n bytes); returns its length. */
size_t cache_redis_entry_header(uint8_t *h, const uint64_t *tables, const uint64_t *gens, int n);
/* The length of entry's header (where its answer starts); 0: not an entry. */
size_t cache_redis_entry_answer(const uint8_t *entry, size_t len);
/* Whether entry is of tables, in that order (any generations). */
bool cache_redis_entry_of(const uint8_t *entry, size_t len, const uint64_t *tables, int n_tables);
/* Whether entry is of tables (any order) at gens. */
bool cache_redis_entry_current(const uint8_t *entry, size_t len, const uint64_t *tables,
                               const uint64_t *gens, int n_tables);

/* Stores value under key for ttl_ms (>= 1) with the generations gens of
 * tables (a MISS's, taken before the fill's query was sent), if the tables'
 * generations in Redis still equal gens: checked and stored atomically (a
 * Lua script), so a fill that overlapped an invalidation is never stored.
 * Fire and forget: the outcome is counted (puts_stored, puts_stale,
 * errors). Returns false if nothing was sent (breaker open, a table
 * blocked, too many tables, bad arguments). Copies everything it needs. */
bool cache_redis_put(struct cache_redis_conn *c, const void *key, size_t key_len, const void *value,
                     size_t value_len, uint32_t ttl_ms, const uint64_t *tables,
                     const uint64_t *gens, int n_tables);

/* --- invalidation ------------------------------------------------------- */

/* Any thread, never blocks: table becomes blocked on this instance
 * (cache_redis_table_blocked()) and the home loop INCRements its
 * generation and PUBLISHes its id (one Lua script, so that the counter
 * moves before any instance hears of it). Unblocked when Redis confirmed
 * an INCR sent after the last cache_redis_invalidate() of the table;
 * until then retried every retry_ms, whatever Redis's state (while the
 * breaker is open, only as its probe). Invalidations of one table that pile
 * up while one is in flight are sent as one more. */
void cache_redis_invalidate(struct cache_redis *r, uint64_t table);

/* Does table have an invalidation of this instance not yet confirmed by
 * Redis? Any thread; a relaxed load when nothing is pending. */
bool cache_redis_table_blocked(struct cache_redis *r, uint64_t table);

/* --- state and statistics ---------------------------------------------- */

enum cache_redis_state cache_redis_state(struct cache_redis *r);
/* Is the pub/sub subscription live (else in-process copies cannot be
 * trusted: see on_reset)? */
bool cache_redis_pubsub_up(struct cache_redis *r);

struct cache_redis_stats {
    uint64_t gets;                  /* cache_redis_get() calls */
    uint64_t hits;                  /* HIT */
    uint64_t misses;                /* MISS, stale ones included */
    uint64_t stale;                 /* MISS because the entry's generations were older */
    uint64_t unavailable;           /* UNAVAILABLE answers */
    uint64_t blocked;               /* BLOCKED answers and puts refused for a blocked table */
    uint64_t puts;                  /* puts sent */
    uint64_t puts_stored;           /* stored */
    uint64_t puts_stale;            /* refused by Redis: a generation had moved */
    uint64_t puts_refused;          /* not sent (breaker open, bad arguments) */
    uint64_t invalidations;         /* cache_redis_invalidate() calls */
    uint64_t invalidations_sent;    /* INCR+PUBLISH confirmed by Redis */
    uint64_t invalidations_pending; /* tables blocked now */
    uint64_t pubsub_messages;       /* invalidations heard on the channel */
    uint64_t pubsub_resets;         /* on_reset calls */
    uint64_t timeouts;              /* operations that ran past op_timeout_ms */
    uint64_t errors;                /* failures: timeouts, error replies, lost connections */
    uint64_t connects;              /* connections opened (pub/sub included) */
    uint64_t state_changes;         /* breaker transitions */
    uint64_t state;                 /* enum cache_redis_state, now */
    uint64_t checks;                /* cache_redis_check() calls: copies kept here */
    uint64_t checks_current;        /* ... whose generations were current: served here */
};
/* A snapshot (relaxed loads: each counter exact, not all of one instant). */
void cache_redis_stats(struct cache_redis *r, struct cache_redis_stats *out);

#endif
