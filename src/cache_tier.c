/* cache_tier.c - the result cache's Redis tier in the request pipeline
 * (cache = redis://, docs/cache.md): lookups in Redis for clients without
 * a server, fills stored there, a writer's answer held until Redis has its
 * invalidations; the Redis client itself is cache_redis.c. */
#include <stdlib.h>
#include <string.h>

#include "cache_int.h"
#include "cache_redis_worker.h"
#include "conn.h"
#include "stream.h"
#include "worker.h"

/* ---- the Redis tier (cache = redis://) ------------------------------------------------ */

/* A lookup in Redis for a client, which waits for it (without a server).
 * Its callback runs on the client's worker; the client may be gone by
 * then (c NULL). */
struct rget {
    struct client *c;
    int refs; /* the client's and the lookup's (one thread) */
    bool done;
    enum cache_redis_status status;
    uint8_t *value;
    size_t value_len;
    int n;
    uint64_t ids[CACHE_REDIS_MAX_TABLES], gens[CACHE_REDIS_MAX_TABLES];
    struct cache_fill *fill; /* this instance's generations when the lookup began */
    int64_t expires;
    /* A copy kept here, checked against Redis's counters: answered from
     * it when they did not move (its reference held until then). */
    struct cache_entry *local;
};

bool cache_tier_ready(const struct rget *t)
{
    return t->done;
}

static void rget_unref(struct rget *t)
{
    if (--t->refs)
        return;
    free(t->value);
    if (t->fill)
        cache_fill_free(t->fill);
    cache_entry_release(t->local);
    free(t);
}

static void rget_done(const struct cache_redis_result *res, void *arg)
{
    struct rget *t = arg;
    t->done = true;
    t->status = res->status;
    if (res->status == CACHE_REDIS_HIT && t->local) {
        /* Served from the copy here: nothing to take. */
    } else if (res->status == CACHE_REDIS_HIT) {
        t->value = malloc(res->value_len ? res->value_len : 1);
        if (t->value) {
            memcpy(t->value, res->value, res->value_len);
            t->value_len = res->value_len;
        } else {
            t->status = CACHE_REDIS_UNAVAILABLE;
        }
    } else if (res->status == CACHE_REDIS_MISS && res->n_tables == t->n) {
        memcpy(t->gens, res->gens, (size_t)t->n * sizeof(t->gens[0]));
    } else if (res->status == CACHE_REDIS_MISS) {
        t->status = CACHE_REDIS_UNAVAILABLE;
    }
    rget_unref(t);
}

/* c's lookup in Redis of key: starts it (CACHE_ROUTE_WAIT),
 * or takes its answer: CACHE_ROUTE_HIT (answered, and copied in), FILL
 * (a miss: the fill goes on, its answer to Redis too) or NONE (Redis
 * unavailable, or a table's invalidation not delivered: no caching). */
enum cache_route cache_tier_lookup(struct client *c, const struct request_view *v,
                                   const struct cache_decision *d, const uint8_t *key,
                                   size_t key_len, char status, int64_t now)
{
    struct cache_client *cc = cache_client_of(c);
    struct rget *t = cc->rget;
    if (!t) {
        if (d->n_ids > CACHE_REDIS_MAX_TABLES)
            return CACHE_ROUTE_NONE;
        t = calloc(1, sizeof(*t));
        if (!t)
            return CACHE_ROUTE_NONE;
        t->c = c;
        t->refs = 2;
        t->n = d->n_ids;
        memcpy(t->ids, d->ids, (size_t)t->n * sizeof(t->ids[0]));
        t->fill = cache_store_fill_begin(cache_g_store, cache_owner_of(c->pool->db), d->ids,
                                         (size_t)d->n_ids);
        t->expires = now + d->ttl;
        if (!cache_watch_add(c)) {
            t->refs = 1;
            rget_unref(t);
            return CACHE_ROUTE_NONE;
        }
        cc->rget = t;
        /* A copy of this key kept here (this instance's fill, of the same
         * tables): Redis is asked for its tables' counters alone. */
        size_t len = 0;
        const uint8_t *copy = NULL;
        t->local = cache_store_get(cache_g_store, key, key_len, (uint64_t)now);
        if (t->local) {
            copy = cache_entry_value(t->local, &len);
            if (!cache_redis_entry_of(copy, len, t->ids, t->n)) {
                cache_entry_release(t->local);
                t->local = NULL;
            }
        }
        if (t->local)
            cache_redis_check(cache_redis_worker(c->s.worker), copy, len, rget_done, t);
        else
            cache_redis_get(cache_redis_worker(c->s.worker), key, key_len, t->ids, t->n, rget_done,
                            t);
        return CACHE_ROUTE_WAIT;
    }
    if (!t->done)
        return CACHE_ROUTE_WAIT;
    cc->rget = NULL;
    cache_watch_remove(c);
    enum cache_route r = CACHE_ROUTE_NONE;
    if (t->status == CACHE_REDIS_HIT && t->local) {
        cache_ctr_add(c->pool->db, CC_HITS);
        size_t len;
        const uint8_t *e = cache_entry_value(t->local, &len);
        size_t h = cache_redis_entry_answer(e, len);
        cache_answer_bytes(c, e + h, len - h, v, status, t->local);
        r = CACHE_ROUTE_HIT;
    } else if (t->status == CACHE_REDIS_HIT) {
        cache_ctr_add(c->pool->db, CC_HITS);
        cache_answer_bytes(c, t->value, t->value_len, v, status, NULL);
        r = CACHE_ROUTE_HIT;
    } else if (t->status == CACHE_REDIS_MISS) {
        cc->r_n = t->n;
        memcpy(cc->r_ids, t->ids, (size_t)t->n * sizeof(t->ids[0]));
        memcpy(cc->r_gens, t->gens, (size_t)t->n * sizeof(t->gens[0]));
        r = CACHE_ROUTE_FILL;
    } else {
        cache_ctr_add(c->pool->db, CC_BYPASS);
    }
    rget_unref(t);
    return r;
}

/* Keeps the fill's answer here; in Redis mode with the header Redis keeps
 * it with (its tables' generations there), so that a later lookup asks
 * Redis for the counters alone (cache_redis_check()). */
enum cache_put_result cache_tier_keep(struct cache_client *cc, int64_t now)
{
    if (!cache_g_redis || cc->r_n <= 0)
        return cache_store_put(cache_g_store, cc->fill, cc->key, cc->key_len, cc->val, cc->val_len,
                               (uint64_t)now, (uint64_t)cc->expires);
    size_t hn = 8 + 16 * (size_t)cc->r_n;
    uint8_t *v = malloc(hn + cc->val_len); /* a miss's cost */
    if (!v)
        return CACHE_PUT_NO_MEMORY;
    cache_redis_entry_header(v, cc->r_ids, cc->r_gens, cc->r_n);
    memcpy(v + hn, cc->val, cc->val_len);
    enum cache_put_result r =
        cache_store_put(cache_g_store, cc->fill, cc->key, cc->key_len, v, hn + cc->val_len,
                        (uint64_t)now, (uint64_t)cc->expires);
    free(v);
    return r;
}

/* Redis mode: whether a copy kept here is of the generations Redis gave
 * with this request's miss (an invalidation by another instance moves the
 * counter before its message drops the copy here). */
bool cache_tier_copy_current(const struct cache_client *cc, struct cache_entry *e)
{
    if (!cache_g_redis)
        return true;
    size_t n;
    const uint8_t *v = cache_entry_value(e, &n);
    return cc->r_n > 0 && cache_redis_entry_current(v, n, cc->r_ids, cc->r_gens, cc->r_n);
}

/* c goes while its lookup runs: the lookup's answer finds no one. */
void cache_tier_forget(struct client *c)
{
    struct cache_client *cc = c->cache;
    if (!cc || !cc->rget)
        return;
    cc->rget->c = NULL;
    cache_watch_remove(c);
    rget_unref(cc->rget);
    cc->rget = NULL;
}

/* A fill that began after a Redis miss ended with value stored here: it
 * goes to Redis too, refused there if a table's generation moved since
 * the miss. */
void cache_tier_put(struct client *c, int64_t now)
{
    struct cache_client *cc = c->cache;
    if (!cache_g_redis || !cc->r_n)
        return;
    int64_t ttl_ms = (cc->expires - now) / 1000;
    if (ttl_ms >= 1)
        cache_redis_put(cache_redis_worker(c->s.worker), cc->key, cc->key_len, cc->val, cc->val_len,
                        (uint32_t)(ttl_ms > UINT32_MAX ? UINT32_MAX : ttl_ms), cc->r_ids,
                        cc->r_gens, cc->r_n);
}

/* How long a writer's answer waits for Redis at most. */
#define HOLD_MAX_USEC 1000000

/* Ends c's hold once Redis has its invalidations, or cannot be reached,
 * or after HOLD_MAX_USEC. */
void cache_tier_hold_check(struct client *c, int64_t now)
{
    struct cache_client *cc = c->cache;
    struct cache_redis *r = cache_redis_global();
    bool wait =
        r && cache_redis_state(r) != CACHE_REDIS_OPEN && now - cc->hold_since < HOLD_MAX_USEC;
    for (int i = 0; wait && i < cc->n_hold; i++)
        if (cache_redis_table_blocked(r, cc->hold_ids[i]))
            return;
    cc->n_hold = 0;
    stream_release_hold(&c->s);
}

/* Redis mode: the writer's answers (its ReadyForQuery first) wait until
 * Redis has ids, what its transaction's writes invalidated (collected as
 * the cache was told of them: no second look), so that once the writer knows its
 * write committed, no instance serves an answer from before it. Not for
 * a TLS client (its stream cannot be held), nor while Redis cannot be
 * reached (the tables stay blocked here until it can). */
void cache_tier_hold(struct client *c, const uint64_t *ids, int n)
{
    struct cache_client *cc = c->cache;
    struct cache_redis *r = cache_redis_global();
    if (!r || cache_redis_state(r) == CACHE_REDIS_OPEN)
        return;
    int64_t now = worker_now(c->s.worker);
    memcpy(cc->hold_ids, ids, (size_t)n * sizeof(ids[0]));
    if (!n || (!c->s.held && !stream_hold(&c->s)))
        return;
    cc->n_hold = n;
    cc->hold_since = now;
    if (!cache_watch_add(c))
        cache_tier_hold_check(c, INT64_MAX);
}

/* Another instance (or this one) invalidated table in Redis. */
static void redis_invalidated(uint64_t table, void *arg)
{
    (void)arg;
    cache_store_invalidate_table(cache_g_store, table);
}

/* The subscription was lost or made again: invalidations may have been
 * missed meanwhile, so no copy here can be trusted. */
static void redis_reset(void *arg)
{
    (void)arg;
    cache_store_clear(cache_g_store);
}

bool cache_start(const struct config *cfg, struct worker *workers, int n_workers, char *err,
                 size_t errlen)
{
    if (!cache_on() || strncmp(cfg->cache, "redis://", 8) != 0)
        return true;
    struct cache_redis_addr addr;
    if (cache_redis_url_parse(cfg->cache, &addr, err, errlen) != 0)
        return false;
    struct cache_redis_opts o = {.on_invalidate = redis_invalidated, .on_reset = redis_reset};
    if (!cache_redis_start(&addr, &o, workers, n_workers, err, errlen))
        return false;
    cache_g_redis = true;
    return true;
}

bool cache_tier_stats(struct cache_redis_stats *out)
{
    if (!cache_g_redis)
        return false;
    cache_redis_stats(cache_redis_global(), out);
    return true;
}

const char *cache_tier_state(void)
{
    if (!cache_g_redis)
        return "off";
    struct cache_redis *r = cache_redis_global();
    enum cache_redis_state st = cache_redis_state(r);
    if (st == CACHE_REDIS_UP && !cache_redis_pubsub_up(r))
        return "up, pubsub down";
    return cache_redis_state_str(st);
}
