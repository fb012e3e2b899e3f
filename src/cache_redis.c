/* cache_redis.c - the Redis tier's connections, gets, puts and circuit
 * breaker (cache_redis.h has the contracts; cache_redis_inv.c the
 * invalidations and pub/sub; docs/cache_redis_notes.md the keys).
 *
 * Every operation is a record (struct cr_req) handed to hiredis with its
 * command. hiredis gives each record back exactly once: with the reply, or
 * with NULL when the context goes (error, hang-up, our redisAsyncFree()).
 * A record that ran past its deadline is answered by the deadline timer and
 * stays allocated, marked answered, until hiredis gives it back, so a late
 * reply lands on live memory and is dropped. Records are recycled through a
 * per-connection free list: the hot path allocates only inside hiredis. */
#include "cache_redis.h"

#include <errno.h>
#include <netdb.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <hiredis/adapters/libev.h>

#include "cache_redis_int.h"
#include "log.h"

#define FREE_REQS_MAX 64 /* records a connection keeps for reuse */
#define ENTRY_MAGIC   "SLC1"
#define HEADER_MAX    (8 + 16 * CACHE_REDIS_MAX_TABLES)

/* KEYS[1] the entry, KEYS[2..] the tables' generations; ARGV[1] the TTL in
 * ms, ARGV[2] the entry's header (tables and generations), ARGV[3] the
 * value, ARGV[4..] the generations the fill began with. */
const char cr_script_put[] =
    "for i = 2, #KEYS do\n"
    "  if (redis.call('GET', KEYS[i]) or '0') ~= ARGV[i + 2] then return 0 end\n"
    "end\n"
    "redis.call('SET', KEYS[1], ARGV[2] .. ARGV[3], 'PX', ARGV[1])\n"
    "return 1\n";
/* KEYS[1] the table's generation; ARGV[1] the channel, ARGV[2] the table. */
const char cr_script_inv[] = "local g = redis.call('INCR', KEYS[1])\n"
                             "redis.call('PUBLISH', ARGV[1], ARGV[2])\n"
                             "return g\n";

const char *cache_redis_state_str(enum cache_redis_state s)
{
    switch (s) {
    case CACHE_REDIS_STARTING:
        return "starting";
    case CACHE_REDIS_UP:
        return "up";
    case CACHE_REDIS_OPEN:
        return "open";
    case CACHE_REDIS_HALF_OPEN:
        return "half-open";
    }
    return "?";
}

const char *cache_redis_status_str(enum cache_redis_status s)
{
    switch (s) {
    case CACHE_REDIS_HIT:
        return "hit";
    case CACHE_REDIS_MISS:
        return "miss";
    case CACHE_REDIS_UNAVAILABLE:
        return "unavailable";
    case CACHE_REDIS_BLOCKED:
        return "blocked";
    }
    return "?";
}

int64_t cr_mono_usec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void cr_hex64(char *out, uint64_t v)
{
    static const char digits[] = "0123456789abcdef";
    for (int i = 15; i >= 0; i--, v >>= 4)
        out[i] = digits[v & 15];
}

size_t cr_gen_key(const struct cache_redis *r, uint64_t table, char *out)
{
    memcpy(out, r->prefix, r->prefix_len);
    memcpy(out + r->prefix_len, "g:", 2);
    cr_hex64(out + r->prefix_len + 2, table);
    return r->prefix_len + 18;
}

/* prefix "e:" and the SHA-256 of key in hex: keys of any length and bytes
 * become short printable Redis keys (a collision is out of reach). */
static size_t entry_key(const struct cache_redis *r, const void *key, size_t key_len, char *out)
{
    static const char digits[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (EVP_Digest(key_len ? key : "", key_len, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32)
        return 0;
    memcpy(out, r->prefix, r->prefix_len);
    char *p = out + r->prefix_len;
    *p++ = 'e';
    *p++ = ':';
    for (unsigned i = 0; i < mdlen; i++) {
        *p++ = digits[md[i] >> 4];
        *p++ = digits[md[i] & 15];
    }
    return (size_t)(p - out);
}

/* --- the breaker ---------------------------------------------------------- */

static void state_changed(struct cache_redis *r, int from, int to, const char *why)
{
    CR_INC(r, state_changes);
    log_info("redis cache %s:%d: %s -> %s%s%s%s", r->addr.host, r->addr.port,
             cache_redis_state_str(from), cache_redis_state_str(to), why ? " (" : "",
             why ? why : "", why ? ")" : "");
    if (r->opts.on_state)
        r->opts.on_state((enum cache_redis_state)to, r->opts.arg);
}

bool cr_breaker_allow(struct cache_redis *r, bool *probe)
{
    *probe = false;
    int s = atomic_load_explicit(&r->state, memory_order_acquire);
    if (s == CACHE_REDIS_STARTING || s == CACHE_REDIS_UP)
        return true;
    if (s == CACHE_REDIS_HALF_OPEN)
        return false;
    if (cr_mono_usec() < atomic_load_explicit(&r->open_until, memory_order_acquire))
        return false;
    int expected = CACHE_REDIS_OPEN;
    if (!atomic_compare_exchange_strong(&r->state, &expected, CACHE_REDIS_HALF_OPEN))
        return false; /* another thread took the probe */
    state_changed(r, CACHE_REDIS_OPEN, CACHE_REDIS_HALF_OPEN, "probing");
    *probe = true;
    return true;
}

static void breaker_open(struct cache_redis *r, int from, int ms, const char *why)
{
    atomic_store(&r->open_ms, ms);
    atomic_store(&r->open_until, cr_mono_usec() + (int64_t)ms * 1000);
    int expected = from;
    if (atomic_compare_exchange_strong(&r->state, &expected, CACHE_REDIS_OPEN)) {
        char detail[160];
        snprintf(detail, sizeof(detail), "%s; retry in %d ms", why, ms);
        state_changed(r, from, CACHE_REDIS_OPEN, detail);
    }
}

void cr_breaker_result(struct cache_redis *r, bool ok, bool probe, const char *why)
{
    if (ok) {
        atomic_store_explicit(&r->failures, 0, memory_order_relaxed);
        int s = atomic_load(&r->state);
        while (s != CACHE_REDIS_UP) {
            if (atomic_compare_exchange_weak(&r->state, &s, CACHE_REDIS_UP)) {
                atomic_store(&r->open_ms, r->opts.breaker_open_ms);
                state_changed(r, s, CACHE_REDIS_UP, NULL);
                break;
            }
        }
        return;
    }
    if (probe) {
        int ms = atomic_load(&r->open_ms) * 2;
        if (ms > r->opts.breaker_open_max_ms)
            ms = r->opts.breaker_open_max_ms;
        breaker_open(r, CACHE_REDIS_HALF_OPEN, ms, why);
        return;
    }
    int f = atomic_fetch_add(&r->failures, 1) + 1;
    int s = atomic_load(&r->state);
    if ((s == CACHE_REDIS_UP || s == CACHE_REDIS_STARTING) && f >= r->opts.breaker_failures)
        breaker_open(r, s, r->opts.breaker_open_ms, why);
}

void cr_failure(struct cache_redis *r, const struct cr_req *req, const char *why)
{
    CR_INC(r, errors);
    log_debug("redis cache %s:%d: %s", r->addr.host, r->addr.port, why);
    if (!req->conn->freeing)
        cr_breaker_result(r, false, req->probe, why);
}

/* --- records ------------------------------------------------------------- */

struct cr_req *cr_req_new(struct cache_redis_conn *c, enum cr_kind kind)
{
    struct cr_req *q;
    struct list *f = list_first(&c->free_reqs);
    if (f) {
        list_del(f);
        c->n_free--;
        q = list_entry(f, struct cr_req, node);
    } else {
        q = malloc(sizeof(*q));
        if (!q)
            return NULL;
        c->n_reqs++;
    }
    /* Everything but the tables, which the caller fills as far as it needs. */
    memset(q, 0, offsetof(struct cr_req, tables));
    list_init(&q->node);
    q->conn = c;
    q->kind = kind;
    return q;
}

void cr_req_free(struct cr_req *q)
{
    struct cache_redis_conn *c = q->conn;
    list_del(&q->node);
    if (c->n_free < FREE_REQS_MAX || c->freeing) {
        list_add_head(&c->free_reqs, &q->node);
        c->n_free++;
        return;
    }
    c->n_reqs--;
    free(q);
}

static void deliver(struct cr_req *q, const struct cache_redis_result *res)
{
    if (q->cb)
        q->cb(res, q->arg);
}

static void deliver_status(struct cr_req *q, enum cache_redis_status st)
{
    struct cache_redis_result res = {.status = st};
    deliver(q, &res);
}

/* Answers a get that was not sent at the loop's next turn. */
static void conn_defer(struct cache_redis_conn *c, struct cr_req *q, enum cache_redis_status st)
{
    q->status = st;
    q->answered = true;
    list_add_tail(&c->deferred, &q->node);
    ev_feed_event(c->loop, &c->kick, EV_CUSTOM);
}

static void conn_run_deferred(struct cache_redis_conn *c)
{
    struct list todo;
    if (list_empty(&c->deferred))
        return;
    /* Take the whole list: callbacks may defer more (a new kick). */
    todo.next = c->deferred.next;
    todo.prev = c->deferred.prev;
    todo.next->prev = &todo;
    todo.prev->next = &todo;
    list_init(&c->deferred);
    struct list *h;
    while ((h = list_first(&todo))) {
        struct cr_req *q = list_entry(h, struct cr_req, node);
        list_del(h);
        deliver_status(q, q->status);
        cr_req_free(q);
    }
}

static void conn_kick_cb(struct ev_loop *loop, ev_idle *w, int revents)
{
    (void)loop;
    (void)revents;
    conn_run_deferred(w->data);
}

/* --- connection ---------------------------------------------------------- */

/* Gives up c's connection; why: what the records behind it fail with. */
static void conn_drop(struct cache_redis_conn *c, const char *why)
{
    redisAsyncContext *ac = c->ac;
    if (!ac)
        return;
    c->ac = NULL;
    c->connected = false;
    snprintf(c->why, sizeof(c->why), "%s", why);
    /* hiredis gives every record back now (NULL replies), or after the
     * callback running now returns. */
    redisAsyncFree(ac);
}

static void conn_on_connect(const redisAsyncContext *ac, int status)
{
    struct cache_redis_conn *c = ac->data;
    if (c->ac != ac)
        return;
    if (status != REDIS_OK) {
        /* hiredis frees ac on return, giving the records back. */
        log_debug("redis cache %s:%d: connect failed: %s", c->r->addr.host, c->r->addr.port,
                  ac->c.errstr);
        snprintf(c->why, sizeof(c->why), "%s", ac->c.errstr);
        c->ac = NULL;
        c->connected = false;
        return;
    }
    c->connected = true;
    redisEnableKeepAlive((redisContext *)&ac->c);
}

static void conn_on_disconnect(const redisAsyncContext *ac, int status)
{
    struct cache_redis_conn *c = ac->data;
    if (c->ac != ac)
        return; /* we dropped it */
    log_debug("redis cache %s:%d: connection lost: %s", c->r->addr.host, c->r->addr.port,
              status == REDIS_OK ? "closed" : ac->errstr);
    snprintf(c->why, sizeof(c->why), "%s", status == REDIS_OK ? "closed" : ac->errstr);
    c->ac = NULL;
    c->connected = false;
}

static void req_reply_cb(redisAsyncContext *ac, void *reply, void *priv);

/* A command nobody waits for but the connection: SELECT, SCRIPT LOAD. */
static void conn_setup_cmd(struct cache_redis_conn *c, int argc, const char **argv)
{
    size_t lens[3];
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    struct cr_req *q = cr_req_new(c, CR_SETUP);
    if (!q)
        return;
    if (redisAsyncCommandArgv(c->ac, req_reply_cb, q, argc, argv, lens) != REDIS_OK) {
        cr_req_free(q);
        return;
    }
    q->sent = true;
}

/* Loads the scripts, so that the EVALSHAs sent after them on this
 * connection find them (Redis runs one connection's commands in order). */
static void conn_load_scripts(struct cache_redis_conn *c)
{
    const char *load_put[] = {"SCRIPT", "LOAD", cr_script_put};
    const char *load_inv[] = {"SCRIPT", "LOAD", cr_script_inv};
    conn_setup_cmd(c, 3, load_put);
    conn_setup_cmd(c, 3, load_inv);
}

static bool conn_connect(struct cache_redis_conn *c)
{
    struct cache_redis *r = c->r;
    if (c->freeing)
        return false;
    redisAsyncContext *ac = redisAsyncConnect(r->ip, r->addr.port);
    if (!ac)
        return false;
    if (ac->err) {
        log_debug("redis cache %s:%d: connect: %s", r->addr.host, r->addr.port, ac->errstr);
        redisAsyncFree(ac);
        return false;
    }
    ac->data = c;
    if (redisLibevAttach(c->loop, ac) != REDIS_OK) {
        redisAsyncFree(ac);
        return false;
    }
    redisAsyncSetConnectCallback(ac, conn_on_connect);
    redisAsyncSetDisconnectCallback(ac, conn_on_disconnect);
    c->ac = ac;
    c->connected = false;
    snprintf(c->why, sizeof(c->why), "connection lost");
    CR_INC(r, connects);
    if (r->addr.db != 0) {
        const char *sel[] = {"SELECT", r->db_str};
        conn_setup_cmd(c, 2, sel);
    }
    conn_load_scripts(c);
    return true;
}

bool cr_send(struct cache_redis_conn *c, struct cr_req *q, int argc, const char **argv,
             const size_t *argvlen)
{
    if (!c->ac && !conn_connect(c))
        return false;
    if (redisAsyncCommandArgv(c->ac, req_reply_cb, q, argc, argv, argvlen) != REDIS_OK)
        return false;
    q->sent = true;
    q->deadline = ev_now(c->loop) + c->r->opts.op_timeout_ms / 1000.0;
    list_add_tail(&c->fifo, &q->node);
    /* The timer is armed for the oldest; a newer request's deadline is
     * later (one timeout for all), so it is looked at when the timer fires. */
    if (!ev_is_active(&c->deadline)) {
        ev_timer_set(&c->deadline, c->r->opts.op_timeout_ms / 1000.0, 0.);
        ev_timer_start(c->loop, &c->deadline);
    }
    return true;
}

static void inv_outcome(struct cr_req *q, bool ok)
{
    cr_inv_done(q->conn->r, q->table, q->seq, ok);
}

static void conn_deadline_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct cache_redis_conn *c = w->data;
    double now = ev_now(loop);
    bool drop = false;
    struct list *h;
    while ((h = list_first(&c->fifo))) {
        struct cr_req *q = list_entry(h, struct cr_req, node);
        if (q->deadline > now + 1e-4)
            break;
        list_del(h);
        q->answered = true; /* hiredis still holds it */
        CR_INC(c->r, timeouts);
        /* A connect that hangs, or a probe that got no answer: start
         * afresh next time rather than wait on this socket. */
        if (!c->connected || q->probe)
            drop = true;
        cr_failure(c->r, q, "timeout");
        if (q->kind == CR_GET) {
            CR_INC(c->r, unavailable);
            deliver_status(q, CACHE_REDIS_UNAVAILABLE);
        } else if (q->kind == CR_INV) {
            inv_outcome(q, false);
        }
    }
    if (drop)
        conn_drop(c, "connection dropped after a timeout");
    h = list_first(&c->fifo);
    if (h) {
        double after = list_entry(h, struct cr_req, node)->deadline - ev_now(loop);
        ev_timer_stop(loop, w);
        ev_timer_set(w, after > 0 ? after : 0., 0.);
        ev_timer_start(loop, w);
    }
}

/* --- replies -------------------------------------------------------------- */

static bool parse_u64(const char *s, size_t len, uint64_t *out)
{
    uint64_t v = 0;
    if (len == 0 || len > 20)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        uint64_t d = (uint64_t)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

static uint64_t get_le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static void put_le64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++, v >>= 8)
        p[i] = (unsigned char)v;
}

/* Does the entry p[0..len) (header + value) belong to tables[0..n) (any
 * order) at gens? MISS (stale or other tables) or HIT with *value set. */
static enum cache_redis_status entry_check(const unsigned char *p, size_t len,
                                           const uint64_t *tables, int n_tables,
                                           const uint64_t *gens, bool *stale, const uint8_t **value,
                                           size_t *value_len)
{
    *stale = false;
    if (len < 8 || memcmp(p, ENTRY_MAGIC, 4) != 0)
        return CACHE_REDIS_MISS;
    uint32_t n = (uint32_t)p[4] | (uint32_t)p[5] << 8 | (uint32_t)p[6] << 16 | (uint32_t)p[7] << 24;
    if (n != (uint32_t)n_tables || len < 8 + 16 * (size_t)n)
        return CACHE_REDIS_MISS;
    for (int i = 0; i < n_tables; i++) {
        int j = 0;
        while (j < (int)n && get_le64(p + 8 + 16 * j) != tables[i])
            j++;
        if (j == (int)n)
            return CACHE_REDIS_MISS;
        if (get_le64(p + 16 + 16 * j) != gens[i])
            *stale = true;
    }
    if (*stale)
        return CACHE_REDIS_MISS;
    *value = (const uint8_t *)p + 8 + 16 * n;
    *value_len = len - 8 - 16 * n;
    return CACHE_REDIS_HIT;
}

size_t cache_redis_entry_answer(const uint8_t *entry, size_t len)
{
    if (len < 8 || memcmp(entry, ENTRY_MAGIC, 4) != 0)
        return 0;
    size_t h = 8 + 16 * ((size_t)entry[4] | (size_t)entry[5] << 8 | (size_t)entry[6] << 16 |
                         (size_t)entry[7] << 24);
    return h <= len ? h : 0;
}

bool cache_redis_entry_of(const uint8_t *entry, size_t len, const uint64_t *tables, int n_tables)
{
    size_t h = cache_redis_entry_answer(entry, len);
    if (h != 8 + 16 * (size_t)n_tables)
        return false;
    for (int i = 0; i < n_tables; i++)
        if (get_le64(entry + 8 + 16 * i) != tables[i])
            return false;
    return true;
}

bool cache_redis_entry_current(const uint8_t *entry, size_t len, const uint64_t *tables,
                               const uint64_t *gens, int n_tables)
{
    bool stale;
    const uint8_t *v;
    size_t vl;
    return entry_check(entry, len, tables, n_tables, gens, &stale, &v, &vl) == CACHE_REDIS_HIT;
}

static void get_reply(struct cr_req *q, const redisReply *rep)
{
    struct cache_redis *r = q->conn->r;
    uint64_t gens[CACHE_REDIS_MAX_TABLES];
    const char *why = NULL;
    if (!rep)
        why = q->conn->why;
    else if (rep->type == REDIS_REPLY_ERROR)
        why = rep->str;
    size_t first = q->copy ? 0 : 1; /* a check asks for the counters alone */
    if (!why && (rep->type != REDIS_REPLY_ARRAY || rep->elements != (size_t)q->n_tables + first))
        why = "unexpected reply to MGET";
    for (int i = 0; !why && i < q->n_tables; i++) {
        const redisReply *g = rep->element[i + first];
        gens[i] = 0;
        if (g->type == REDIS_REPLY_STRING ? !parse_u64(g->str, g->len, &gens[i])
                                          : g->type != REDIS_REPLY_NIL)
            why = "a generation counter is not a number";
    }
    if (why) {
        cr_failure(r, q, why);
        CR_INC(r, unavailable);
        deliver_status(q, CACHE_REDIS_UNAVAILABLE);
        return;
    }
    cr_breaker_result(r, true, q->probe, NULL);
    struct cache_redis_result res = {
        .status = CACHE_REDIS_MISS, .gens = gens, .n_tables = q->n_tables};
    bool stale = false;
    if (q->copy) {
        res.status = entry_check(q->copy, q->copy_len, q->tables, q->n_tables, gens, &stale,
                                 &res.value, &res.value_len);
        if (res.status == CACHE_REDIS_HIT)
            CR_INC(r, checks_current);
    } else if (rep->element[0]->type == REDIS_REPLY_STRING) {
        const redisReply *e = rep->element[0];
        res.status = entry_check((const unsigned char *)e->str, e->len, q->tables, q->n_tables,
                                 gens, &stale, &res.value, &res.value_len);
        res.entry = (const uint8_t *)e->str;
        res.entry_len = e->len;
    }
    if (res.status == CACHE_REDIS_HIT) {
        if (!q->copy)
            CR_INC(r, hits);
        res.gens = NULL;
    } else {
        CR_INC(r, misses);
        if (stale)
            CR_INC(r, stale);
    }
    deliver(q, &res);
}

static bool is_noscript(const redisReply *rep)
{
    return rep && rep->type == REDIS_REPLY_ERROR && strncmp(rep->str, "NOSCRIPT", 8) == 0;
}

static void put_reply(struct cr_req *q, const redisReply *rep)
{
    struct cache_redis *r = q->conn->r;
    if (!rep || rep->type != REDIS_REPLY_INTEGER) {
        if (is_noscript(rep) && q->conn->ac)
            conn_load_scripts(q->conn); /* SCRIPT FLUSH: load them again */
        cr_failure(r, q,
                   !rep                             ? q->conn->why
                   : rep->type == REDIS_REPLY_ERROR ? rep->str
                                                    : "bad reply");
        return;
    }
    cr_breaker_result(r, true, q->probe, NULL);
    if (rep->integer == 1)
        CR_INC(r, puts_stored);
    else
        CR_INC(r, puts_stale);
}

static void inv_reply(struct cr_req *q, const redisReply *rep)
{
    struct cache_redis *r = q->conn->r;
    if (!rep || rep->type != REDIS_REPLY_INTEGER) {
        if (is_noscript(rep) && q->conn->ac)
            conn_load_scripts(q->conn);
        cr_failure(r, q,
                   !rep                             ? q->conn->why
                   : rep->type == REDIS_REPLY_ERROR ? rep->str
                                                    : "bad reply");
        inv_outcome(q, false);
        return;
    }
    cr_breaker_result(r, true, q->probe, NULL);
    inv_outcome(q, true);
}

static void ping_reply(struct cr_req *q, const redisReply *rep)
{
    if (!rep || rep->type != REDIS_REPLY_INTEGER)
        cr_failure(q->conn->r, q,
                   !rep                             ? q->conn->why
                   : rep->type == REDIS_REPLY_ERROR ? rep->str
                                                    : "bad reply");
    else
        cr_breaker_result(q->conn->r, true, q->probe, NULL);
}

static void setup_reply(struct cr_req *q, const redisReply *rep)
{
    struct cache_redis_conn *c = q->conn;
    if (!rep || rep->type != REDIS_REPLY_ERROR)
        return;
    /* A SELECT refused (no such DB) or a script refused: this connection
     * must not be used. The records behind come back as failures. */
    log_error("redis cache %s:%d: %s", c->r->addr.host, c->r->addr.port, rep->str);
    CR_INC(c->r, errors);
    conn_drop(c, rep->str);
}

static void req_reply_cb(redisAsyncContext *ac, void *reply, void *priv)
{
    struct cr_req *q = priv;
    const redisReply *rep = reply;
    q->sent = false;
    if (!rep && ac == q->conn->ac) {
        /* hiredis is freeing the context (an error, a hang-up): forget it
         * now, so that a get made from a callback below starts afresh
         * rather than queue on it. Say why in the log. */
        q->conn->ac = NULL;
        q->conn->connected = false;
        if (ac->c.err)
            snprintf(q->conn->why, sizeof(q->conn->why), "%s", ac->c.errstr);
    }
    if (q->answered) { /* timed out: a late reply, or the context went */
        cr_req_free(q);
        return;
    }
    list_del(&q->node);
    q->answered = true;
    switch (q->kind) {
    case CR_GET:
        get_reply(q, rep);
        break;
    case CR_PUT:
        put_reply(q, rep);
        break;
    case CR_INV:
        inv_reply(q, rep);
        break;
    case CR_SETUP:
        setup_reply(q, rep);
        break;
    case CR_PING:
        ping_reply(q, rep);
        break;
    }
    cr_req_free(q);
}

/* --- gets and puts -------------------------------------------------------- */

static bool any_blocked(struct cache_redis *r, const uint64_t *tables, int n)
{
    for (int i = 0; i < n; i++)
        if (cache_redis_table_blocked(r, tables[i]))
            return true;
    return false;
}

/* Sends q's MGET: the entry under key (key NULL: a check, the counters
 * alone) and the generation counters of q's tables; or answers it from
 * the loop's next turn (a table blocked, the breaker open, no send). */
static void mget(struct cache_redis_conn *c, struct cr_req *q, const void *key, size_t key_len)
{
    struct cache_redis *r = c->r;
    if (any_blocked(r, q->tables, q->n_tables)) {
        CR_INC(r, blocked);
        conn_defer(c, q, CACHE_REDIS_BLOCKED);
        return;
    }
    if (c->freeing || !cr_breaker_allow(r, &q->probe)) {
        CR_INC(r, unavailable);
        conn_defer(c, q, CACHE_REDIS_UNAVAILABLE);
        return;
    }
    char keys[CACHE_REDIS_MAX_TABLES + 1][CR_KEY_MAX];
    const char *argv[CACHE_REDIS_MAX_TABLES + 2];
    size_t lens[CACHE_REDIS_MAX_TABLES + 2];
    int a = 0;
    argv[a] = "MGET", lens[a++] = 4;
    if (key) {
        argv[a] = keys[0];
        lens[a] = entry_key(r, key, key_len, keys[0]);
        if (lens[a++] == 0)
            a = -1;
    }
    for (int i = 0; a > 0 && i < q->n_tables; i++) {
        argv[a] = keys[i + 1];
        lens[a++] = cr_gen_key(r, q->tables[i], keys[i + 1]);
    }
    if (a < 0 || !cr_send(c, q, a, argv, lens)) {
        cr_failure(r, q, "cannot send");
        CR_INC(r, unavailable);
        conn_defer(c, q, CACHE_REDIS_UNAVAILABLE);
    }
}

/* A get's or a check's record, or NULL when out of memory (cb answered). */
static struct cr_req *get_req(struct cache_redis_conn *c, cache_redis_get_cb cb, void *arg)
{
    struct cr_req *q = cr_req_new(c, CR_GET);
    if (!q) { /* out of memory: the one synchronous answer */
        CR_INC(c->r, unavailable);
        struct cache_redis_result res = {.status = CACHE_REDIS_UNAVAILABLE};
        cb(&res, arg);
        return NULL;
    }
    q->cb = cb;
    q->arg = arg;
    return q;
}

void cache_redis_get(struct cache_redis_conn *c, const void *key, size_t key_len,
                     const uint64_t *tables, int n_tables, cache_redis_get_cb cb, void *arg)
{
    CR_INC(c->r, gets);
    struct cr_req *q = get_req(c, cb, arg);
    if (!q)
        return;
    if (n_tables < 0 || n_tables > CACHE_REDIS_MAX_TABLES || (n_tables && !tables)) {
        CR_INC(c->r, unavailable);
        conn_defer(c, q, CACHE_REDIS_UNAVAILABLE);
        return;
    }
    q->n_tables = n_tables;
    for (int i = 0; i < n_tables; i++)
        q->tables[i] = tables[i];
    mget(c, q, key, key_len);
}

void cache_redis_check(struct cache_redis_conn *c, const uint8_t *copy, size_t copy_len,
                       cache_redis_get_cb cb, void *arg)
{
    CR_INC(c->r, checks);
    struct cr_req *q = get_req(c, cb, arg);
    if (!q)
        return;
    size_t h = cache_redis_entry_answer(copy, copy_len);
    int n = h > 8 ? (int)((h - 8) / 16) : 0;
    if (n < 1 || n > CACHE_REDIS_MAX_TABLES) { /* not an entry of tables */
        CR_INC(c->r, unavailable);
        conn_defer(c, q, CACHE_REDIS_UNAVAILABLE);
        return;
    }
    q->copy = copy;
    q->copy_len = copy_len;
    q->n_tables = n;
    for (int i = 0; i < n; i++)
        q->tables[i] = get_le64(copy + 8 + 16 * i);
    mget(c, q, NULL, 0);
}

/* "SLC1", the number of tables, then each table and its generation, all
 * little-endian: what a get compares before it answers HIT. */
static size_t entry_header(unsigned char *h, const uint64_t *tables, const uint64_t *gens, int n)
{
    memcpy(h, ENTRY_MAGIC, 4);
    h[4] = (unsigned char)n;
    h[5] = h[6] = h[7] = 0;
    for (int i = 0; i < n; i++) {
        put_le64(h + 8 + 16 * i, tables[i]);
        put_le64(h + 16 + 16 * i, gens[i]);
    }
    return 8 + 16 * (size_t)n;
}

size_t cache_redis_entry_header(uint8_t *h, const uint64_t *tables, const uint64_t *gens, int n)
{
    return entry_header(h, tables, gens, n);
}

bool cache_redis_put(struct cache_redis_conn *c, const void *key, size_t key_len, const void *value,
                     size_t value_len, uint32_t ttl_ms, const uint64_t *tables,
                     const uint64_t *gens, int n_tables)
{
    struct cache_redis *r = c->r;
    if (n_tables < 0 || n_tables > CACHE_REDIS_MAX_TABLES || (n_tables && (!tables || !gens)) ||
        ttl_ms == 0 || (value_len && !value) || c->freeing) {
        CR_INC(r, puts_refused);
        return false;
    }
    if (any_blocked(r, tables, n_tables)) {
        CR_INC(r, blocked);
        return false;
    }
    struct cr_req *q = cr_req_new(c, CR_PUT);
    if (!q || !cr_breaker_allow(r, &q->probe)) {
        if (q)
            cr_req_free(q);
        CR_INC(r, puts_refused);
        return false;
    }
    char keys[CACHE_REDIS_MAX_TABLES + 1][CR_KEY_MAX];
    char nums[CACHE_REDIS_MAX_TABLES + 2][24];
    unsigned char header[HEADER_MAX];
    const char *argv[2 * CACHE_REDIS_MAX_TABLES + 7];
    size_t lens[2 * CACHE_REDIS_MAX_TABLES + 7];
    int a = 0, n = n_tables;
    argv[a] = "EVALSHA", lens[a++] = 7;
    argv[a] = r->sha_put, lens[a++] = 40;
    lens[a] = (size_t)snprintf(nums[0], sizeof(nums[0]), "%d", n + 1), argv[a++] = nums[0];
    argv[a] = keys[0], lens[a++] = entry_key(r, key, key_len, keys[0]);
    for (int i = 0; i < n; i++)
        argv[a] = keys[i + 1], lens[a++] = cr_gen_key(r, tables[i], keys[i + 1]);
    lens[a] = (size_t)snprintf(nums[1], sizeof(nums[1]), "%u", ttl_ms), argv[a++] = nums[1];
    argv[a] = (const char *)header, lens[a++] = entry_header(header, tables, gens, n);
    argv[a] = value_len ? value : "", lens[a++] = value_len;
    for (int i = 0; i < n; i++) {
        lens[a] =
            (size_t)snprintf(nums[i + 2], sizeof(nums[i + 2]), "%llu", (unsigned long long)gens[i]);
        argv[a++] = nums[i + 2];
    }
    if (lens[3] == 0 || !cr_send(c, q, a, argv, lens)) {
        cr_failure(r, q, "cannot send");
        cr_req_free(q);
        CR_INC(r, puts_refused);
        return false;
    }
    CR_INC(r, puts);
    return true;
}

/* --- lifecycle ------------------------------------------------------------ */

struct cache_redis_conn *cache_redis_conn_new(struct cache_redis *r, struct ev_loop *loop)
{
    struct cache_redis_conn *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->r = r;
    c->loop = loop;
    list_init(&c->fifo);
    list_init(&c->deferred);
    list_init(&c->free_reqs);
    ev_timer_init(&c->deadline, conn_deadline_cb, 0., 0.);
    c->deadline.data = c;
    ev_idle_init(&c->kick, conn_kick_cb);
    c->kick.data = c;
    return c;
}

void cache_redis_conn_free(struct cache_redis_conn *c)
{
    if (!c)
        return;
    c->freeing = true;
    /* Answer everything; a callback may ask again (answered the same way). */
    while (c->ac || !list_empty(&c->deferred)) {
        conn_drop(c, "shutting down");
        conn_run_deferred(c);
    }
    ev_timer_stop(c->loop, &c->deadline);
    ev_clear_pending(c->loop, &c->kick);
    struct list *h;
    while ((h = list_first(&c->free_reqs))) {
        list_del(h);
        c->n_reqs--;
        free(list_entry(h, struct cr_req, node));
    }
    if (c->n_reqs != 0)
        log_error("redis cache: %d request records leaked", c->n_reqs);
    free(c);
}

struct cache_redis_conn *cache_redis_home(struct cache_redis *r)
{
    return r->home;
}

static bool sha1_hex(const char *text, char *out)
{
    static const char digits[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (EVP_Digest(text, strlen(text), md, &mdlen, EVP_sha1(), NULL) != 1 || mdlen != 20)
        return false;
    for (unsigned i = 0; i < mdlen; i++) {
        out[2 * i] = digits[md[i] >> 4];
        out[2 * i + 1] = digits[md[i] & 15];
    }
    out[40] = '\0';
    return true;
}

static bool resolve(struct cache_redis *r, char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    int rc = getaddrinfo(r->addr.host, NULL, &hints, &res);
    if (rc != 0) {
        log_format(err, errlen, "redis host %s: %s", r->addr.host, gai_strerror(rc));
        return false;
    }
    rc = getnameinfo(res->ai_addr, res->ai_addrlen, r->ip, sizeof(r->ip), NULL, 0, NI_NUMERICHOST);
    freeaddrinfo(res);
    if (rc != 0) {
        log_format(err, errlen, "redis host %s: %s", r->addr.host, gai_strerror(rc));
        return false;
    }
    return true;
}

/* Fills r->opts from opts with the defaults; false if out of range. */
static bool opts_set(struct cache_redis *r, const struct cache_redis_opts *opts, char *err,
                     size_t errlen)
{
    r->opts = *opts;
    const char *prefix = opts->prefix ? opts->prefix : "sluice:";
    size_t plen = strlen(prefix);
    struct cache_redis_opts *o = &r->opts;
    if (!o->op_timeout_ms)
        o->op_timeout_ms = 100;
    if (!o->breaker_failures)
        o->breaker_failures = 3;
    if (!o->breaker_open_ms)
        o->breaker_open_ms = 1000;
    if (!o->breaker_open_max_ms)
        o->breaker_open_max_ms = 30000;
    if (!o->retry_ms)
        o->retry_ms = 200;
    if (plen == 0 || plen > CACHE_REDIS_PREFIX_MAX || o->op_timeout_ms < 1 ||
        o->op_timeout_ms > 60000 || o->breaker_failures < 1 || o->breaker_open_ms < 1 ||
        o->breaker_open_max_ms < o->breaker_open_ms || o->breaker_open_max_ms > 3600000 ||
        o->retry_ms < 1) {
        log_format(err, errlen, "redis cache: options out of range");
        return false;
    }
    memcpy(r->prefix, prefix, plen + 1);
    r->prefix_len = plen;
    o->prefix = r->prefix;
    return true;
}

struct cache_redis *cache_redis_new(const struct cache_redis_addr *addr,
                                    const struct cache_redis_opts *opts, struct ev_loop *home,
                                    char *err, size_t errlen)
{
    struct cache_redis *r = calloc(1, sizeof(*r));
    if (!r) {
        log_format(err, errlen, "out of memory");
        return NULL;
    }
    r->addr = *addr;
    r->home_loop = home;
    if (!opts_set(r, opts, err, errlen) || !resolve(r, err, errlen)) {
        free(r);
        return NULL;
    }
    snprintf(r->db_str, sizeof(r->db_str), "%d", addr->db);
    r->channel_len =
        (size_t)snprintf(r->channel, sizeof(r->channel), "%sinv:%d", r->prefix, addr->db);
    atomic_init(&r->state, CACHE_REDIS_STARTING);
    atomic_init(&r->open_ms, r->opts.breaker_open_ms);
    if (!sha1_hex(cr_script_put, r->sha_put) || !sha1_hex(cr_script_inv, r->sha_inv) ||
        !cr_inv_init(r)) {
        log_format(err, errlen, "redis cache: cannot set up (out of memory?)");
        free(r);
        return NULL;
    }
    r->home = cache_redis_conn_new(r, home);
    if (!r->home) {
        cr_inv_destroy(r);
        free(r);
        log_format(err, errlen, "out of memory");
        return NULL;
    }
    cr_sub_start(r);
    return r;
}

void cache_redis_free(struct cache_redis *r)
{
    if (!r)
        return;
    r->freeing = true;
    cr_sub_stop(r);
    cache_redis_conn_free(r->home); /* invalidations in flight come back failed */
    cr_inv_destroy(r);
    free(r);
}

/* --- state and statistics -------------------------------------------------- */

enum cache_redis_state cache_redis_state(struct cache_redis *r)
{
    return (enum cache_redis_state)atomic_load_explicit(&r->state, memory_order_relaxed);
}

bool cache_redis_pubsub_up(struct cache_redis *r)
{
    return atomic_load_explicit(&r->sub_up, memory_order_relaxed);
}

#define LOAD(field) atomic_load_explicit(&r->n.field, memory_order_relaxed)

void cache_redis_stats(struct cache_redis *r, struct cache_redis_stats *out)
{
    *out = (struct cache_redis_stats){
        .gets = LOAD(gets),
        .hits = LOAD(hits),
        .misses = LOAD(misses),
        .stale = LOAD(stale),
        .unavailable = LOAD(unavailable),
        .blocked = LOAD(blocked),
        .puts = LOAD(puts),
        .puts_stored = LOAD(puts_stored),
        .puts_stale = LOAD(puts_stale),
        .puts_refused = LOAD(puts_refused),
        .invalidations = LOAD(invalidations),
        .invalidations_sent = LOAD(invalidations_sent),
        .invalidations_pending = atomic_load_explicit(&r->n_pending, memory_order_relaxed),
        .pubsub_messages = LOAD(pubsub_messages),
        .pubsub_resets = LOAD(pubsub_resets),
        .timeouts = LOAD(timeouts),
        .errors = LOAD(errors),
        .connects = LOAD(connects),
        .state_changes = LOAD(state_changes),
        .checks = LOAD(checks),
        .checks_current = LOAD(checks_current),
        .state = (uint64_t)cache_redis_state(r),
    };
}
