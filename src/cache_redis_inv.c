/* cache_redis_inv.c - the Redis tier's invalidations and pub/sub
 * (cache_redis.h has the contracts).
 *
 * An invalidation is recorded in a small map of pending tables (any
 * thread, under inv_lock, never held across I/O) and sent from the home
 * loop as one script: INCR the table's generation, then PUBLISH its id. A
 * table stays in the map, and so blocked, until Redis confirmed an INCR
 * sent after its last invalidation; failures are retried every retry_ms.
 * The pub/sub connection lives on the home loop too; it hands each id
 * heard to on_invalidate, and calls on_reset when it subscribes or is
 * lost (what was published meanwhile was not heard). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/adapters/libev.h>

#include "cache_redis_int.h"
#include "log.h"

#define INV_BATCH 32 /* tables picked per pass over the map */
/* Every HB_INTERVAL the home loop publishes a heartbeat on the channel;
 * a subscription that heard nothing (from any instance) for HB_SILENCE is
 * taken for dead (a connection cut without a reset) and made again. */
#define HB_INTERVAL 1.0
#define HB_SILENCE  3000000 /* usec */

/* --- the map of pending tables (inv_lock) ---------------------------------- */

static size_t map_ideal(const struct cache_redis *r, uint64_t table)
{
    return (size_t)((table * 0x9E3779B97F4A7C15ull) >> 32) & (r->inv_cap - 1);
}

static struct cr_inv_slot *map_find(struct cache_redis *r, uint64_t table)
{
    size_t mask = r->inv_cap - 1;
    for (size_t i = map_ideal(r, table);; i = (i + 1) & mask) {
        if (!r->inv[i].used)
            return NULL;
        if (r->inv[i].table == table)
            return &r->inv[i];
    }
}

static struct cr_inv_slot *map_put(struct cache_redis *r, const struct cr_inv_slot *s)
{
    size_t mask = r->inv_cap - 1, i = map_ideal(r, s->table);
    while (r->inv[i].used)
        i = (i + 1) & mask;
    r->inv[i] = *s;
    return &r->inv[i];
}

static bool map_grow(struct cache_redis *r)
{
    struct cr_inv_slot *old = r->inv;
    size_t old_cap = r->inv_cap;
    struct cr_inv_slot *inv = calloc(old_cap * 2, sizeof(*inv));
    if (!inv)
        return false;
    r->inv = inv;
    r->inv_cap = old_cap * 2;
    for (size_t i = 0; i < old_cap; i++)
        if (old[i].used)
            map_put(r, &old[i]);
    free(old);
    return true;
}

static struct cr_inv_slot *map_add(struct cache_redis *r, uint64_t table)
{
    size_t n = atomic_load_explicit(&r->n_pending, memory_order_relaxed);
    if ((n + 1) * 2 > r->inv_cap && !map_grow(r))
        return NULL;
    struct cr_inv_slot s = {.table = table, .used = true};
    atomic_store_explicit(&r->n_pending, n + 1, memory_order_release);
    return map_put(r, &s);
}

/* Backward-shift deletion: no tombstones, lookups stay short. */
static void map_del(struct cache_redis *r, struct cr_inv_slot *s)
{
    size_t mask = r->inv_cap - 1, i = (size_t)(s - r->inv);
    for (size_t j = (i + 1) & mask; r->inv[j].used; j = (j + 1) & mask) {
        size_t k = map_ideal(r, r->inv[j].table);
        /* j's entry may move to i if its ideal slot is not in (i, j]. */
        bool between = i <= j ? (i < k && k <= j) : (i < k || k <= j);
        if (!between) {
            r->inv[i] = r->inv[j];
            i = j;
        }
    }
    r->inv[i].used = false;
    atomic_store_explicit(&r->n_pending,
                          atomic_load_explicit(&r->n_pending, memory_order_relaxed) - 1,
                          memory_order_release);
}

/* --- invalidations ---------------------------------------------------------- */

void cache_redis_invalidate(struct cache_redis *r, uint64_t table)
{
    CR_INC(r, invalidations);
    pthread_mutex_lock(&r->inv_lock);
    struct cr_inv_slot *s = map_find(r, table);
    if (!s)
        s = map_add(r, table);
    if (s)
        s->requested++;
    pthread_mutex_unlock(&r->inv_lock);
    if (!s && !atomic_exchange(&r->all_blocked, true))
        log_error("redis cache: out of memory recording an invalidation: caching through "
                  "Redis stops on this instance");
    ev_async_send(r->home_loop, &r->inv_async);
}

bool cache_redis_table_blocked(struct cache_redis *r, uint64_t table)
{
    if (atomic_load_explicit(&r->all_blocked, memory_order_relaxed))
        return true;
    if (atomic_load_explicit(&r->n_pending, memory_order_acquire) == 0)
        return false;
    pthread_mutex_lock(&r->inv_lock);
    bool found = map_find(r, table) != NULL;
    pthread_mutex_unlock(&r->inv_lock);
    return found;
}

static void retry_later(struct cache_redis *r)
{
    if (r->freeing || ev_is_active(&r->inv_retry))
        return;
    ev_timer_set(&r->inv_retry, r->opts.retry_ms / 1000.0, 0.);
    ev_timer_start(r->home_loop, &r->inv_retry);
}

void cr_inv_done(struct cache_redis *r, uint64_t table, uint32_t seq, bool ok)
{
    bool more = false;
    pthread_mutex_lock(&r->inv_lock);
    struct cr_inv_slot *s = map_find(r, table);
    if (s) {
        s->in_flight = false;
        if (ok)
            s->sent = seq;
        if (s->sent == s->requested)
            map_del(r, s);
        else
            more = true;
    }
    pthread_mutex_unlock(&r->inv_lock);
    if (ok)
        CR_INC(r, invalidations_sent);
    if (r->freeing)
        return;
    if (!ok)
        retry_later(r);
    else if (more)
        ev_async_send(r->home_loop, &r->inv_async);
}

/* Sends one table's INCR+PUBLISH on the home connection; false if it could
 * not be sent (the slot is then free to go again). */
static bool inv_send(struct cache_redis *r, uint64_t table, bool probe)
{
    struct cache_redis_conn *c = r->home;
    struct cr_req *q = cr_req_new(c, CR_INV);
    if (!q) {
        if (probe)
            cr_breaker_result(r, false, true, "out of memory");
        return false;
    }
    q->probe = probe;
    q->table = table;
    pthread_mutex_lock(&r->inv_lock);
    struct cr_inv_slot *s = map_find(r, table);
    if (s) {
        s->in_flight = true;
        q->seq = s->requested;
    }
    pthread_mutex_unlock(&r->inv_lock);
    char key[CR_KEY_MAX], hex[16];
    cr_hex64(hex, table);
    const char *argv[] = {"EVALSHA", r->sha_inv, "1", key, r->channel, hex};
    size_t lens[] = {7, 40, 1, cr_gen_key(r, table, key), r->channel_len, 16};
    if (!s || !cr_send(c, q, 6, argv, lens)) {
        cr_failure(r, q, "cannot send");
        cr_req_free(q);
        if (s)
            cr_inv_done(r, table, 0, false);
        return false;
    }
    return true;
}

/* Sends every pending table not in flight, while the breaker lets it. */
static void inv_deliver(struct cache_redis *r)
{
    uint64_t batch[INV_BATCH];
    size_t n;
    do {
        n = 0;
        pthread_mutex_lock(&r->inv_lock);
        for (size_t i = 0; i < r->inv_cap && n < INV_BATCH; i++) {
            const struct cr_inv_slot *s = &r->inv[i];
            if (s->used && !s->in_flight && s->requested != s->sent)
                batch[n++] = s->table;
        }
        pthread_mutex_unlock(&r->inv_lock);
        for (size_t i = 0; i < n; i++) {
            bool probe;
            if (!cr_breaker_allow(r, &probe)) {
                retry_later(r);
                return;
            }
            if (!inv_send(r, batch[i], probe))
                return; /* retry_later() is armed */
        }
    } while (n == INV_BATCH);
}

static void inv_async_cb(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)loop;
    (void)revents;
    inv_deliver(w->data);
}

static void inv_retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    inv_deliver(w->data);
}

/* --- pub/sub ------------------------------------------------------------------ */

static void sub_reset(struct cache_redis *r)
{
    CR_INC(r, pubsub_resets);
    if (r->opts.on_reset)
        r->opts.on_reset(r->opts.arg);
}

static void sub_schedule(struct cache_redis *r, int ms)
{
    if (r->freeing)
        return;
    ev_timer_stop(r->home_loop, &r->sub_timer);
    ev_timer_set(&r->sub_timer, ms / 1000.0, 0.);
    ev_timer_start(r->home_loop, &r->sub_timer);
}

/* The subscription is gone (or never came): tell once, retry later. */
static void sub_lost(struct cache_redis *r, const char *why)
{
    bool was_up = atomic_exchange(&r->sub_up, false);
    if (!r->sub_down_logged) { /* one line until it is up again */
        if (!r->freeing)
            log_info("redis cache %s:%d: pub/sub %s (%s)", r->addr.host, r->addr.port,
                     was_up ? "lost" : "cannot subscribe", why);
        r->sub_down_logged = true;
    }
    if (was_up)
        sub_reset(r);
    sub_schedule(r, r->opts.retry_ms);
}

static bool parse_hex64(const char *s, size_t len, uint64_t *out)
{
    uint64_t v = 0;
    if (len != 16)
        return false;
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        int d = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
        if (d < 0)
            return false;
        v = v << 4 | (uint64_t)d;
    }
    *out = v;
    return true;
}

static void sub_msg_cb(redisAsyncContext *ac, void *reply, void *priv)
{
    struct cache_redis *r = priv;
    const redisReply *rep = reply;
    if (!rep || ac != r->sub_ac || rep->type != REDIS_REPLY_ARRAY || rep->elements < 3 ||
        rep->element[0]->type != REDIS_REPLY_STRING)
        return;
    const char *kind = rep->element[0]->str;
    r->sub_heard = cr_mono_usec();
    if (strcmp(kind, "subscribe") == 0) {
        atomic_store(&r->sub_up, true);
        r->sub_down_logged = false;
        ev_timer_stop(r->home_loop, &r->sub_timer);
        log_info("redis cache %s:%d: pub/sub subscribed to %s", r->addr.host, r->addr.port,
                 r->channel);
        sub_reset(r);
        return;
    }
    uint64_t table;
    const redisReply *msg = rep->element[2];
    if (strcmp(kind, "message") != 0 || msg->type != REDIS_REPLY_STRING ||
        !parse_hex64(msg->str, msg->len, &table))
        return;
    CR_INC(r, pubsub_messages);
    if (r->opts.on_invalidate)
        r->opts.on_invalidate(table, r->opts.arg);
}

static void sub_on_connect(const redisAsyncContext *ac, int status)
{
    struct cache_redis *r = ac->data;
    if (ac != r->sub_ac)
        return;
    if (status != REDIS_OK) {
        r->sub_ac = NULL; /* hiredis frees it on return */
        sub_lost(r, ac->c.errstr);
        return;
    }
    redisEnableKeepAlive((redisContext *)&ac->c);
}

static void sub_on_disconnect(const redisAsyncContext *ac, int status)
{
    struct cache_redis *r = ac->data;
    if (ac != r->sub_ac)
        return;
    r->sub_ac = NULL;
    sub_lost(r, status == REDIS_OK ? "closed" : ac->errstr);
}

static void sub_connect(struct cache_redis *r)
{
    redisAsyncContext *ac = redisAsyncConnect(r->ip, r->addr.port);
    if (!ac || ac->err) {
        char why[128];
        snprintf(why, sizeof(why), "%s", ac ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        sub_lost(r, why);
        return;
    }
    ac->data = r;
    if (redisLibevAttach(r->home_loop, ac) != REDIS_OK) {
        redisAsyncFree(ac);
        sub_lost(r, "cannot attach");
        return;
    }
    redisAsyncSetConnectCallback(ac, sub_on_connect);
    redisAsyncSetDisconnectCallback(ac, sub_on_disconnect);
    r->sub_ac = ac;
    CR_INC(r, connects);
    const char *argv[] = {"SUBSCRIBE", r->channel};
    size_t lens[] = {9, r->channel_len};
    redisAsyncCommandArgv(ac, sub_msg_cb, r, 2, argv, lens);
    /* Not subscribed by then (a Redis that accepts and hangs): start over. */
    sub_schedule(r, r->opts.op_timeout_ms > 1000 ? r->opts.op_timeout_ms : 1000);
}

static void sub_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct cache_redis *r = w->data;
    if (r->sub_ac && !atomic_load(&r->sub_up)) {
        redisAsyncContext *ac = r->sub_ac;
        r->sub_ac = NULL;
        redisAsyncFree(ac);
        sub_lost(r, "no answer to SUBSCRIBE");
        return;
    }
    if (!r->sub_ac)
        sub_connect(r);
}

/* The heartbeat: check that the channel spoke lately, then publish. */
static void hb_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct cache_redis *r = w->data;
    if (!atomic_load(&r->sub_up))
        return;
    if (cr_mono_usec() - r->sub_heard > HB_SILENCE) {
        redisAsyncContext *ac = r->sub_ac;
        r->sub_ac = NULL;
        if (ac)
            redisAsyncFree(ac);
        sub_lost(r, "no heartbeat heard");
        return;
    }
    bool probe;
    if (!cr_breaker_allow(r, &probe))
        return;
    struct cr_req *q = cr_req_new(r->home, CR_PING);
    if (!q) {
        if (probe)
            cr_breaker_result(r, false, true, "out of memory");
        return;
    }
    q->probe = probe;
    const char *argv[] = {"PUBLISH", r->channel, "hb"};
    size_t lens[] = {7, r->channel_len, 2};
    if (!cr_send(r->home, q, 3, argv, lens)) {
        cr_failure(r, q, "cannot send");
        cr_req_free(q);
    }
}

void cr_sub_start(struct cache_redis *r)
{
    ev_timer_init(&r->sub_timer, sub_timer_cb, 0., 0.);
    r->sub_timer.data = r;
    ev_timer_init(&r->hb_timer, hb_timer_cb, HB_INTERVAL, HB_INTERVAL);
    r->hb_timer.data = r;
    ev_timer_start(r->home_loop, &r->hb_timer);
    sub_connect(r);
}

void cr_sub_stop(struct cache_redis *r)
{
    ev_timer_stop(r->home_loop, &r->hb_timer);
    ev_timer_stop(r->home_loop, &r->sub_timer);
    redisAsyncContext *ac = r->sub_ac;
    r->sub_ac = NULL;
    if (ac)
        redisAsyncFree(ac);
    atomic_store(&r->sub_up, false);
}

/* --- setup ---------------------------------------------------------------------- */

bool cr_inv_init(struct cache_redis *r)
{
    r->inv_cap = 16;
    r->inv = calloc(r->inv_cap, sizeof(*r->inv));
    if (!r->inv)
        return false;
    pthread_mutex_init(&r->inv_lock, NULL);
    ev_async_init(&r->inv_async, inv_async_cb);
    r->inv_async.data = r;
    ev_async_start(r->home_loop, &r->inv_async);
    ev_unref(r->home_loop); /* does not keep the loop running on its own */
    ev_timer_init(&r->inv_retry, inv_retry_cb, 0., 0.);
    r->inv_retry.data = r;
    return true;
}

void cr_inv_destroy(struct cache_redis *r)
{
    ev_ref(r->home_loop);
    ev_async_stop(r->home_loop, &r->inv_async);
    ev_timer_stop(r->home_loop, &r->inv_retry);
    size_t n = atomic_load(&r->n_pending);
    if (n)
        log_warning("redis cache %s:%d: %zu invalidation(s) never delivered", r->addr.host,
                    r->addr.port, n);
    free(r->inv);
    r->inv = NULL;
    pthread_mutex_destroy(&r->inv_lock);
}
