/* cache_redis_int.h - what cache_redis.c (connections, gets, puts, the
 * breaker) and cache_redis_inv.c (invalidations, pub/sub) share. Not for
 * other modules. */
#ifndef SLUICE_CACHE_REDIS_INT_H
#define SLUICE_CACHE_REDIS_INT_H

#include <hiredis/async.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>

#include "cache_redis.h"
#include "list.h"

/* prefix + "e:" + 64 hex digits, or prefix + "g:" + 16 hex digits, or the
 * channel prefix + "inv:" + db */
#define CR_KEY_MAX (CACHE_REDIS_PREFIX_MAX + 72)

/* What a request record is for. */
enum cr_kind {
    CR_GET = 0, /* a get: its caller waits for the callback */
    CR_PUT,     /* a put: counted, nobody waits */
    CR_INV,     /* an invalidation's INCR+PUBLISH (home connection) */
    CR_SETUP,   /* SELECT or SCRIPT LOAD sent when a connection opens */
    CR_PING,    /* the pub/sub heartbeat's PUBLISH (home connection) */
};

/* One operation, from its send until hiredis gives its record back (its
 * reply, or NULL when the context goes) or, if never sent, until its
 * deferred answer is delivered. Recycled through the connection's free
 * list. */
struct cr_req {
    struct list node; /* c->fifo (sent, unanswered, within its deadline), c->deferred,
                       * c->free_reqs, or nothing (timed out, waiting for hiredis) */
    struct cache_redis_conn *conn;
    enum cr_kind kind;
    bool sent;                      /* hiredis holds it: its callback will come */
    bool answered;                  /* the outcome was taken (timeout or deferred): a late reply is
                                     * only freed */
    bool probe;                     /* the breaker's half-open probe */
    double deadline;                /* ev_now() of c->loop */
    enum cache_redis_status status; /* the deferred answer */
    cache_redis_get_cb cb;
    void *arg;
    uint64_t table; /* CR_INV */
    uint32_t seq;   /* CR_INV: the table's request count when sent */
    /* A check (cache_redis_check()): the caller's copy of the entry, whose
     * generations the MGET of the counters alone is compared with. */
    const uint8_t *copy;
    size_t copy_len;
    int n_tables;
    uint64_t tables[CACHE_REDIS_MAX_TABLES];
};

struct cache_redis_conn {
    struct cache_redis *r;
    struct ev_loop *loop;
    redisAsyncContext *ac; /* NULL: not connected (connects at the next use) */
    bool connected;        /* ac's connect completed */
    bool freeing;          /* cache_redis_conn_free() runs: no breaker, no reconnect */
    char why[128];         /* hiredis's word on the last connection lost (for the log) */
    struct list fifo;      /* sent requests within their deadline, oldest first */
    struct list deferred;  /* answers for the loop's next turn */
    struct list free_reqs;
    int n_free;
    int n_reqs;        /* records allocated (free ones included) */
    ev_timer deadline; /* the fifo head's deadline */
    ev_idle kick;      /* never started: fed to deliver c->deferred */
};

/* One table's pending invalidation (open addressing by table id). */
struct cr_inv_slot {
    uint64_t table;
    uint32_t requested; /* cache_redis_invalidate() calls */
    uint32_t sent;      /* the request count of the last INCR Redis confirmed */
    bool used;
    bool in_flight;
};

struct cr_counters {
    _Atomic uint64_t gets, hits, misses, stale, unavailable, blocked, puts, puts_stored, puts_stale,
        puts_refused, invalidations, invalidations_sent, pubsub_messages, pubsub_resets, timeouts,
        errors, connects, state_changes, checks, checks_current;
};

struct cache_redis {
    struct cache_redis_addr addr;
    char ip[INET6_ADDRSTRLEN]; /* addr.host resolved at start */
    struct cache_redis_opts opts;
    char prefix[CACHE_REDIS_PREFIX_MAX + 1];
    size_t prefix_len;
    char channel[CR_KEY_MAX];
    size_t channel_len;
    char sha_put[41], sha_inv[41]; /* the scripts' SHA-1s, for EVALSHA */
    char db_str[4];
    struct ev_loop *home_loop;
    struct cache_redis_conn *home;
    bool freeing;

    /* The breaker (any thread). */
    _Atomic int state;          /* enum cache_redis_state */
    _Atomic int failures;       /* consecutive */
    _Atomic int64_t open_until; /* monotonic usec */
    _Atomic int open_ms;        /* the current open period */

    /* Pub/sub (home loop; sub_up read anywhere). */
    redisAsyncContext *sub_ac;
    _Atomic bool sub_up;
    bool sub_down_logged; /* its loss was logged (once until it is up again) */
    ev_timer sub_timer;   /* reconnect later, or give up a connect that hangs */
    ev_timer hb_timer;    /* publishes a heartbeat, checks that the channel speaks */
    int64_t sub_heard;    /* monotonic usec of the last message on the channel */

    /* Invalidations (inv_lock; n_pending read anywhere). */
    pthread_mutex_t inv_lock;
    struct cr_inv_slot *inv;
    size_t inv_cap; /* power of two */
    _Atomic size_t n_pending;
    _Atomic bool all_blocked; /* the map could not grow: everything is blocked */
    ev_async inv_async;       /* cache_redis_invalidate() wakes the home loop */
    ev_timer inv_retry;

    struct cr_counters n;
};

#define CR_INC(r, field) atomic_fetch_add_explicit(&(r)->n.field, 1, memory_order_relaxed)

/* cache_redis.c, for cache_redis_inv.c */
int64_t cr_mono_usec(void);
/* May an operation go to Redis now? *probe: it is the half-open probe. */
bool cr_breaker_allow(struct cache_redis *r, bool *probe);
/* An operation's outcome (why: for the log when it opens the breaker). */
void cr_breaker_result(struct cache_redis *r, bool ok, bool probe, const char *why);
/* A record of c's, cleared, or NULL (out of memory). */
struct cr_req *cr_req_new(struct cache_redis_conn *c, enum cr_kind kind);
/* Sends argv on c (connecting first if needed) with req as its record:
 * true if hiredis took it; false (req not sent, not freed) if not. */
bool cr_send(struct cache_redis_conn *c, struct cr_req *req, int argc, const char **argv,
             const size_t *argvlen);
/* A failed operation: counted, and the breaker told. */
void cr_failure(struct cache_redis *r, const struct cr_req *req, const char *why);
/* Gives req back to c's free list. */
void cr_req_free(struct cr_req *req);
/* Writes a 16-hex-digit table id (no NUL). */
void cr_hex64(char *out, uint64_t v);
/* A table's generation key into out (CR_KEY_MAX bytes); its length. */
size_t cr_gen_key(const struct cache_redis *r, uint64_t table, char *out);

/* cache_redis_inv.c, for cache_redis.c */
bool cr_inv_init(struct cache_redis *r);
void cr_inv_destroy(struct cache_redis *r);
/* The outcome of a CR_INV record. */
void cr_inv_done(struct cache_redis *r, uint64_t table, uint32_t seq, bool ok);
void cr_sub_start(struct cache_redis *r);
void cr_sub_stop(struct cache_redis *r);

/* The scripts (cache_redis.c). */
extern const char cr_script_put[];
extern const char cr_script_inv[];

#endif
