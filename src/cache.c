/* cache.c - the result cache in the request pipeline (cache.h). */
#include "cache.h"

#include <ev.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cache_catalog.h"
#include "cache_int.h"
#include "cache_policy.h"
#include "cache_redis_worker.h"
#include "cache_sql.h"
#include "insights.h"
#include "log.h"
#include "pool.h"
#include "prepared.h"
#include "proto.h"
#include "request.h"
#include "stream.h"
#include "worker.h"
#include "writes.h"

struct cache_store *cache_g_store;
static bool g_on;
bool cache_g_redis; /* cache = redis://: the Redis tier behind the in-process store */
static int cache_owner;

bool cache_on(void)
{
    return g_on;
}

void cache_ctr_add(struct database *db, enum cache_ctr i)
{
    atomic_fetch_add_explicit(&db->cache_ctr[i], 1, memory_order_relaxed);
}

unsigned cache_owner_of(const struct database *db)
{
    return cache_store_owner(cache_g_store, cache_db_id(db), db->name);
}

struct cache_client *cache_client_of(struct client *c)
{
    if (!c->cache) {
        c->cache = calloc(1, sizeof(*c->cache));
        if (!c->cache)
            abort();
    }
    return c->cache;
}

/* ---- invalidation ----------------------------------------------------------------- */

/* The id standing for every answer of db: each entry depends on it. */
uint64_t cache_db_id(const struct database *db)
{
    return cache_table_id(db->name, "", "");
}

int cache_write_rel_ids(struct database *db, const struct writes_rel *r, bool own, int64_t now,
                        uint64_t *ids, int cap)
{
    if (own && r->schema) {
        ids[0] = cache_table_id(db->name, r->schema, r->name);
        return 1;
    }
    char full[2 * CACHE_CATALOG_MAX_NAME];
    const char *name = r->name;
    if (r->schema) { /* the catalog knows names as they were written */
        snprintf(full, sizeof(full), "%s.%s", r->schema, r->name);
        name = full;
    }
    struct cache_catalog_rel rel;
    enum cache_catalog_answer a = cache_catalog_get(db, name, now, &rel);
    if (a != CCAT_YES && a != CCAT_NO)
        return -1; /* not known yet, or absent (maybe made since) */
    int n = 0;
    /* The catalog's relations include the name's own. */
    for (int i = 0; i < rel.n_ids && n < cap; i++)
        ids[n++] = rel.ids[i];
    if (n > 0)
        return n;
    /* Related relations that did not fit: its own, in each schema. */
    for (const char *p = rel.schemas; *p && n < cap;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        char schema[CACHE_CATALOG_SCHEMAS];
        memcpy(schema, p, len);
        schema[len] = '\0';
        ids[n++] = cache_table_id(db->name, schema, r->name);
        p += len + (end ? 1 : 0);
    }
    return n > 0 ? n : -1;
}

/* The ids invalidated on this thread while a writer's transaction is told
 * (cache_writes_flush()): its answer waits for Redis to have them. */
static _Thread_local struct {
    bool on;
    int n;
    uint64_t ids[CACHE_HOLD_MAX];
} tl_told;

void cache_told_begin(void)
{
    tl_told.on = true;
    tl_told.n = 0;
}

int cache_told_end(const uint64_t **ids)
{
    tl_told.on = false;
    *ids = tl_told.ids;
    return tl_told.n;
}

/* Returns the in-process entries dropped. */
static size_t invalidate_id(struct database *db, uint64_t id, const char *name)
{
    cache_names_note(id, db->name, name);
    if (tl_told.on && tl_told.n < CACHE_HOLD_MAX) /* more: the first ones are waited for */
        tl_told.ids[tl_told.n++] = id;
    size_t dropped = cache_store_invalidate_table(cache_g_store, id);
    if (cache_g_redis)
        cache_redis_invalidate(cache_redis_global(), id); /* the other instances' too */
    return dropped;
}

static void on_writes(const struct writes_event *ev, void *arg)
{
    (void)arg;
    struct database *db = ev->db;
    struct worker *w = worker_current();
    int64_t now = w ? worker_now(w) : 0;
    if (ev->all) {
        invalidate_id(db, cache_db_id(db), "*");
        cache_catalog_forget(db);
        cache_ctr_add(db, CC_INVALIDATIONS);
        return;
    }
    for (int i = 0; i < ev->n; i++) {
        uint64_t ids[CACHE_CATALOG_MAX_IDS];
        const struct writes_rel *r = &ev->rels[i];
        /* The logical stream names the very table that changed, never a
         * view: its own id is enough, since every answer depends on the
         * ids of all it reads through. A client's write may name a view
         * (its base tables change) or no schema (any schema's). */
        int n = cache_write_rel_ids(db, r, ev->source == WRITES_LOGICAL, now, ids,
                                    CACHE_CATALOG_MAX_IDS);
        if (n < 0) {
            /* A relation not known yet (a view, a partition?): all of
             * db's answers go, and its name is looked up for next time. */
            invalidate_id(db, cache_db_id(db), "*");
            n = 0;
        }
        for (int k = 0; k < n; k++)
            invalidate_id(db, ids[k], "");
        cache_ctr_add(db, CC_INVALIDATIONS);
    }
}

/* A source of writes (the logical decoding consumer) may miss some for db
 * from now: nothing of db's is answered or kept until it sees them all
 * again, and what is there goes (it may be stale by then). */
static void on_gap(struct database *db, enum writes_source source, bool open, void *arg)
{
    (void)arg;
    if (open) {
        if (atomic_fetch_add(&db->cache_gaps, 1) == 0)
            log_warning("result cache: %s writes of database %s may be missed: its answers are "
                        "dropped and none is kept until they are seen again",
                        writes_source_str(source), db->name);
    } else if (atomic_fetch_sub(&db->cache_gaps, 1) == 1) {
        log_info("result cache: %s writes of database %s are seen again", writes_source_str(source),
                 db->name);
    }
    invalidate_id(db, cache_db_id(db), "*");
}

/* ---- the key --------------------------------------------------------------------- */

static _Thread_local struct {
    uint8_t *p;
    size_t len, cap;
} tl_key;

static void key_add(const void *p, size_t n)
{
    if (tl_key.len + n + 1 > tl_key.cap) {
        size_t cap = tl_key.cap ? tl_key.cap : 1024;
        while (cap < tl_key.len + n + 1)
            cap *= 2;
        uint8_t *np = realloc(tl_key.p, cap);
        if (!np)
            abort();
        tl_key.p = np;
        tl_key.cap = cap;
    }
    memcpy(tl_key.p + tl_key.len, p, n);
    tl_key.len += n;
    tl_key.p[tl_key.len++] = 0; /* each part ends: "ab"+"c" is not "a"+"bc" */
}

/* Everything that decides the answer's bytes but the data: the database,
 * the user, every session setting sluice knows of (the startup packet's
 * and, under transaction pooling, the SETs since; the parameters the
 * server reported), the protocol and the statement. */
static void key_build(const struct client *c, char kind, const void *a, size_t alen, const void *b,
                      size_t blen)
{
    tl_key.len = 0;
    key_add(&kind, 1);
    key_add(c->pool->db->name, strlen(c->pool->db->name));
    key_add(c->user, strlen(c->user));
    key_add(c->extras ? c->extras : "", c->extras ? strlen(c->extras) : 0);
    for (int i = 0; i < tracked_param_count(); i++) {
        const char *v = param_get(&c->params, i);
        key_add(v ? v : "", v ? strlen(v) : 0);
    }
    key_add(a, alen);
    if (b)
        key_add(b, blen);
}

/* Answers c's request rv (at the head of its buffer) with an answer's
 * bytes: for an extended batch, ParseComplete (when it has its Parse) and
 * BindComplete first; ReadyForQuery last. */
void cache_answer_bytes(struct client *c, const uint8_t *v, size_t n, const struct request_view *rv,
                        char status, struct cache_entry *e)
{
    bool parse = rv->parse, bind = rv->ext;
    /* Before the text is consumed; the shape hashed once per entry. */
    uint64_t memo = e ? cache_entry_memo(e) : 0;
    uint64_t shape = insights_cache_hit(c, rv->sql, rv->sql_len, memo);
    if (e && shape != memo)
        cache_entry_set_memo(e, shape);
    stream_consume_msg(&c->s, rv->total);
    stream_cork(&c->s); /* one send for the three writes below */
    uint8_t head[16], z[8];
    struct proto_writer w;
    proto_writer_init(&w, head, sizeof(head));
    if (parse) {
        proto_begin(&w, '1');
        proto_end(&w);
    }
    if (bind) {
        proto_begin(&w, '2');
        proto_end(&w);
    }
    if (w.len)
        stream_write(&c->s, w.buf, w.len);
    proto_writer_init(&w, z, sizeof(z));
    proto_build_ready(&w, status);
    stream_write(&c->s, v, n);
    stream_write(&c->s, w.buf, w.len);
    stream_uncork(&c->s);
    c->last_activity = worker_now(c->s.worker);
}

static void answer_hit(struct client *c, struct cache_entry *e, const struct request_view *rv,
                       char status)
{
    size_t n;
    const uint8_t *v = cache_entry_value(e, &n);
    size_t h = cache_g_redis ? cache_redis_entry_answer(v, n) : 0; /* its Redis header */
    cache_answer_bytes(c, v + h, n - h, rv, status, e);
    cache_entry_release(e);
}

/* ---- single-flight ------------------------------------------------------------------ */

/* A client waiting for another's fill of the same key (the store's
 * waiter, handed back by the leader on its own thread). Two references:
 * the waiting client's and the store's/leader's. */
struct sf_wait {
    struct cache_waiter w;
    _Atomic int done; /* the leader handed it back: w.end is set */
    _Atomic int refs;
    size_t key_len;
    uint8_t key[];
};

static void sf_unref(struct sf_wait *sw)
{
    if (atomic_fetch_sub(&sw->refs, 1) == 1)
        free(sw);
}

/* Per worker thread: its clients waiting for a fill, looked at every
 * millisecond while there are any. */
#define SF_POLL_SEC 0.001
static _Thread_local struct {
    ev_timer timer;
    bool init;
    struct client **v;
    int n, cap;
} tl_sf;

void cache_watch_remove(struct client *c)
{
    if (!c->cache || !c->cache->listed)
        return;
    c->cache->listed = false;
    for (int i = 0; i < tl_sf.n; i++) {
        if (tl_sf.v[i] == c) {
            tl_sf.v[i] = tl_sf.v[--tl_sf.n];
            break;
        }
    }
    if (!tl_sf.n && tl_sf.init)
        ev_timer_stop(c->s.worker->loop, &tl_sf.timer);
}

static void sf_tick(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)t;
    (void)revents;
    for (int i = tl_sf.n - 1; i >= 0; i--) {
        if (i >= tl_sf.n)
            continue;
        struct client *c = tl_sf.v[i];
        struct cache_client *cc = c->cache;
        if (cc->n_hold)
            cache_tier_hold_check(c, worker_now(c->s.worker));
        const struct sf_wait *sw = cc->wait;
        if (!sw && !cc->rget) {
            if (!cc->n_hold)
                cache_watch_remove(c);
            continue;
        }
        if ((!sw || atomic_load_explicit(&sw->done, memory_order_acquire)) &&
            (!cc->rget || cache_tier_ready(cc->rget)))
            c->s.ops->on_data(&c->s); /* routed again: its answer is there, or it runs */
    }
}

bool cache_watch_add(struct client *c)
{
    if (c->cache->listed)
        return true;
    if (!tl_sf.init) {
        ev_timer_init(&tl_sf.timer, sf_tick, SF_POLL_SEC, SF_POLL_SEC);
        tl_sf.init = true;
    }
    if (tl_sf.n == tl_sf.cap) {
        int cap = tl_sf.cap ? tl_sf.cap * 2 : 16;
        struct client **v = realloc(tl_sf.v, (size_t)cap * sizeof(*v));
        if (!v)
            return false;
        tl_sf.v = v;
        tl_sf.cap = cap;
    }
    tl_sf.v[tl_sf.n++] = c;
    c->cache->listed = true;
    if (!ev_is_active(&tl_sf.timer))
        ev_timer_start(c->s.worker->loop, &tl_sf.timer);
    return true;
}

/* c stops waiting (its answer came, or it goes). */
static void sf_wait_end(struct client *c)
{
    struct cache_client *cc = c->cache;
    struct sf_wait *sw = cc->wait;
    if (!sw)
        return;
    cc->wait = NULL;
    cache_watch_remove(c);
    if (!atomic_load_explicit(&sw->done, memory_order_acquire) &&
        cache_store_flight_cancel(cache_g_store, sw->key, sw->key_len, &sw->w))
        sf_unref(sw); /* taken back: the store's reference is ours to drop */
    sf_unref(sw);
}

/* The leader's fill ended (filled: its answer was stored): its waiters
 * are handed back, each told how it went; they look again on their own
 * threads. */
static void sf_leave(struct cache_client *cc, bool filled)
{
    if (!cc->flight)
        return;
    struct cache_waiter *w = cache_store_flight_leave(
        cache_g_store, cc->flight, filled ? CACHE_FLIGHT_FILLED : CACHE_FLIGHT_FAILED);
    cc->flight = NULL;
    while (w) {
        struct cache_waiter *next = w->next;
        struct sf_wait *sw = w->arg;
        atomic_store_explicit(&sw->done, 1, memory_order_release);
        sf_unref(sw);
        w = next;
    }
}

/* Answers being filled are held in their clients' buffers until they are
 * whole: those bytes come out of cache_max_memory too. The store gets the
 * rest (cache_init()); a fill whose buffer cannot grow within this budget
 * goes on to the client and is not kept. */
static size_t g_fill_budget;
static _Atomic size_t g_fill_bytes;

static bool fill_take(size_t n)
{
    size_t was = atomic_fetch_add_explicit(&g_fill_bytes, n, memory_order_relaxed);
    if (was + n <= g_fill_budget)
        return true;
    atomic_fetch_sub_explicit(&g_fill_bytes, n, memory_order_relaxed);
    return false;
}

static void fill_buffer_free(struct cache_client *cc)
{
    atomic_fetch_sub_explicit(&g_fill_bytes, cc->val_cap, memory_order_relaxed);
    free(cc->val);
    cc->val = NULL;
    cc->val_cap = 0;
}

size_t cache_fill_bytes(void)
{
    return atomic_load_explicit(&g_fill_bytes, memory_order_relaxed);
}

static void fill_reset(struct cache_client *cc)
{
    sf_leave(cc, false);
    if (cc->fill)
        cache_fill_free(cc->fill);
    cc->fill = NULL;
    free(cc->key);
    cc->key = NULL;
    cc->key_len = 0;
    cc->val_len = 0;
    fill_buffer_free(cc); /* a miss's cost, not a hit's: none is kept idle */
    cc->filling = cc->capturing = cc->fill_bad = cc->fill_ext = cc->described = false;
    cc->r_n = 0;
}

/* Whether c may be answered from the cache at all now: status is its
 * transaction status (idle only). */
static bool client_may(struct client *c, char status)
{
    /* A pinned client (SET ROLE, a temporary table, a WITH HOLD cursor...
     * under transaction pooling) has session state the key cannot see. */
    if (status != 'I' || c->replication || c->pinned)
        return false;
    struct cache_client *cc = c->cache;
    return !cc || (!cc->tainted && !cc->filling);
}

/* Whether the request at the head of c's buffer (m, its first message)
 * runs the unnamed statement's text again, which its rules leave
 * uncached: known without reading the rest of the batch. */
static bool known_nocache(const struct client *c, const struct stream_msg *m,
                          const struct config *cfg)
{
    const struct cache_stmt *st = c->cache ? &c->cache->unnamed : NULL;
    if (!st || !st->body || !(st->memo & STMT_NOCACHE) || st->memo_gen != cfg->generation ||
        m->avail < m->len || m->len < 7)
        return false;
    if (m->type == 'P') /* unnamed, with the same body */
        return !m->data[5] && m->len - 6 == st->len && !memcmp(m->data + 6, st->body, st->len);
    return m->type == 'B' && !m->data[5] && !m->data[6]; /* unnamed portal and statement */
}

/* Whether the unnamed Parse m (its text, of any client of this thread) was
 * found uncacheable by its text and the rules alone under this config: an
 * unnamed statement alternating between a few texts is read once per text
 * (cache_policy_facts()), not at each Parse. */
static bool text_nocache(const struct stream_msg *m, const struct config *cfg)
{
    if (m->type != 'P' || m->avail < m->len || m->len < 7 || m->data[5])
        return false;
    const char *sql = (const char *)m->data + 6;
    const char *nul = memchr(sql, '\0', m->len - 6);
    return nul && cache_policy_facts(sql, (size_t)(nul - sql))->nocache_gen == cfg->generation;
}

/* c waited for another client's fill of its key: CACHE_ROUTE_WAIT while
 * it goes on; else whether c may look again (the answer was stored, or
 * another fill leads now) or runs the query itself, uncached (the fill
 * failed: each waiter gets its own try, none is retried in series). */
static bool sf_waited(struct client *c, enum cache_route *r)
{
    struct sf_wait *sw = c->cache->wait;
    if (!atomic_load_explicit(&sw->done, memory_order_acquire)) {
        *r = CACHE_ROUTE_WAIT;
        return false;
    }
    bool failed = sw->w.end == CACHE_FLIGHT_FAILED;
    sf_wait_end(c);
    *r = CACHE_ROUTE_NONE;
    return !failed;
}

/* A miss of the key in tl_key: c joins its fill (can_wait: it may wait for
 * another client's). CACHE_ROUTE_HIT once answered, CACHE_ROUTE_WAIT, or
 * CACHE_ROUTE_FILL with c leading (or alone). */
static enum cache_route sf_join(struct client *c, const struct request_view *v, char status,
                                int64_t now)
{
    struct sf_wait *sw = malloc(sizeof(*sw) + tl_key.len);
    if (!sw)
        return CACHE_ROUTE_FILL;
    memset(sw, 0, sizeof(*sw));
    sw->w.arg = sw;
    atomic_init(&sw->done, 0);
    atomic_init(&sw->refs, 2);
    sw->key_len = tl_key.len;
    memcpy(sw->key, tl_key.p, tl_key.len);
    struct cache_entry *hit = NULL;
    struct cache_flight *lead = NULL;
    enum cache_flight_role role = cache_store_get_or_join(cache_g_store, sw->key, sw->key_len,
                                                          (uint64_t)now, &sw->w, &hit, &lead);
    if (role == CACHE_FLIGHT_WAIT) {
        c->cache->wait = sw;
        if (!cache_watch_add(c)) {
            sf_wait_end(c);
            return CACHE_ROUTE_NONE;
        }
        return CACHE_ROUTE_WAIT;
    }
    free(sw);
    if (role == CACHE_FLIGHT_HIT && !cache_tier_copy_current(c->cache, hit)) {
        cache_entry_release(hit); /* older than Redis says: filled anew, alone */
        return CACHE_ROUTE_FILL;
    }
    if (role == CACHE_FLIGHT_HIT) {
        cache_ctr_add(c->pool->db, CC_HITS);
        answer_hit(c, hit, v, status);
        return CACHE_ROUTE_HIT;
    }
    c->cache->flight = lead; /* NULL when alone */
    return CACHE_ROUTE_FILL;
}

/* The decision for c's request at the head of its buffer. can_wait: c has
 * no server (a wait holds none). */
static enum cache_route decide_now(struct client *c, char status, bool fill_ok, bool can_wait)
{
    enum cache_route waited;
    if (c->cache && c->cache->wait && !sf_waited(c, &waited))
        return waited;
    struct stream_msg m;
    if (stream_next_msg(&c->s, STREAM_MSG_HEAD, &m) != STREAM_MSG_OK)
        return CACHE_ROUTE_NONE;
    const struct config *cfg = g_pooler.cfg;
    /* What needs no reading of the request first: inside a transaction,
     * most statements stop here. */
    if (!client_may(c, status) ||
        atomic_load_explicit(&c->pool->db->cache_gaps, memory_order_relaxed) ||
        known_nocache(c, &m, cfg) || text_nocache(&m, cfg))
        return CACHE_ROUTE_NONE;
    struct request_view v;
    bool ok = m.type == 'Q' ? cache_view_query(c, &v)
                            : (m.type == 'P' || m.type == 'B') && cache_view_batch(c, &v);
    if (!ok || v.sql_len > CACHE_MAX_TEXT)
        return CACHE_ROUTE_NONE;
    int64_t now = worker_now(c->s.worker);
    struct database *db = c->pool->db;
    struct cache_decision d;
    int named = cache_policy_decide(db, cfg, v.sql, v.sql_len, now, &d);
    if (named <= 0) {
        if (named == 0)
            cache_ctr_add(db, CC_BYPASS);
        else { /* by its text and the rules alone: so until they change */
            if (v.kept) {
                v.kept->memo |= STMT_NOCACHE;
                v.kept->memo_gen = cfg->generation;
            }
            if (v.parse)
                cache_policy_facts(v.sql, v.sql_len)->nocache_gen = cfg->generation;
        }
        return CACHE_ROUTE_NONE;
    }
    key_build(c, !v.ext ? 'Q' : v.described ? 'D' : 'E', v.a, v.a_len, v.b, v.b_len);
    struct cache_client *cc;
    if (cache_g_redis) {
        /* Every hit is checked in Redis: the client waits for its answer,
         * without a server or on its own (session pooling). */
        enum cache_route r = cache_tier_lookup(c, &v, &d, tl_key.p, tl_key.len, status, now);
        if (r != CACHE_ROUTE_FILL)
            return r;
        cache_ctr_add(db, CC_MISSES);
        if (!fill_ok) {
            c->cache->r_n = 0;
            return CACHE_ROUTE_NONE;
        }
    } else {
        struct cache_entry *e = cache_store_get(cache_g_store, tl_key.p, tl_key.len, (uint64_t)now);
        if (e) {
            cache_ctr_add(db, CC_HITS);
            answer_hit(c, e, &v, status);
            return CACHE_ROUTE_HIT;
        }
        cache_ctr_add(db, CC_MISSES);
        if (!fill_ok)
            return CACHE_ROUTE_NONE;
    }
    cc = cache_client_of(c);
    if (can_wait) {
        enum cache_route r = sf_join(c, &v, status, now);
        if (r != CACHE_ROUTE_FILL)
            return r;
    }
    cc->fill = cache_store_fill_begin(cache_g_store, cache_owner_of(db), d.ids, (size_t)d.n_ids);
    if (!cc->fill) {
        sf_leave(cc, false);
        return CACHE_ROUTE_NONE;
    }
    cc->key = malloc(tl_key.len);
    if (!cc->key)
        abort();
    memcpy(cc->key, tl_key.p, tl_key.len);
    cc->key_len = tl_key.len;
    cc->expires = now + d.ttl;
    cc->filling = true;
    cc->fill_ext = v.ext;
    cc->described = v.described;
    cache_ctr_add(db, CC_FILLS);
    return CACHE_ROUTE_FILL;
}

/* decide_now(), and a Redis lookup it started for this request but no
 * longer uses (the rules, the catalog or the client changed while it
 * ran) dropped: its answer is this key's, never the next request's. */
static enum cache_route decide(struct client *c, char status, bool fill_ok, bool can_wait)
{
    enum cache_route r = decide_now(c, status, fill_ok, can_wait);
    if (r != CACHE_ROUTE_WAIT && c->cache && c->cache->rget)
        cache_tier_forget(c);
    return r;
}

enum cache_route cache_route(struct client *c)
{
    if (!g_on)
        return CACHE_ROUTE_NONE;
    return decide(c, 'I', true, true);
}

/* ---- the observer --------------------------------------------------------------------- */

/* A statement that changes session state the key does not see: nothing
 * cached for c any more. kept: the statement's record, whose memo keeps
 * the answer. f: the text's facts if they are kept (NULL: read the text). */
static void taint_check(struct client *c, struct cache_stmt *kept, const char *sql, size_t len,
                        const struct cache_text_facts *f)
{
    if (!kept || !(kept->memo & STMT_TAINT_KNOWN)) {
        bool taints = f ? f->taints[!c->track] : cache_policy_taints(sql, len, !c->track);
        if (kept)
            kept->memo |= STMT_TAINT_KNOWN | (taints ? STMT_TAINTS : 0);
        else if (taints)
            cache_client_of(c)->tainted = true;
    }
    if (kept && (kept->memo & STMT_TAINTS))
        cache_client_of(c)->tainted = true;
}

static void body_set(struct cache_stmt *st, const uint8_t *body, uint32_t len)
{
    if (st->body && len == st->len && !memcmp(st->body, body, len))
        return; /* the same statement again: what is known of it holds */
    st->memo = 0;
    if (len > st->len || !st->body) {
        uint8_t *p = realloc(st->body, len ? len : 1);
        if (!p)
            abort();
        st->body = p;
    }
    memcpy(st->body, body, len);
    st->len = len;
}

/* Keeps the Parse body of c's statement name: the unnamed one always (the
 * Bind of a later batch may use it), named ones in session mode; NULL
 * when not kept. */
static struct cache_stmt *stmt_remember(struct client *c, const char *name, const uint8_t *body,
                                        uint32_t len)
{
    struct cache_client *cc = cache_client_of(c);
    if (!name[0]) {
        body_set(&cc->unnamed, body, len);
        return &cc->unnamed;
    }
    if (c->track)
        return NULL;
    for (int i = 0; i < cc->n_stmts; i++) {
        if (!strcmp(cc->stmts[i].name, name)) {
            body_set(&cc->stmts[i], body, len);
            return &cc->stmts[i];
        }
    }
    if (cc->n_stmts == cc->cap_stmts) {
        int cap = cc->cap_stmts ? cc->cap_stmts * 2 : 8;
        struct cache_stmt *v = realloc(cc->stmts, (size_t)cap * sizeof(*v));
        if (!v)
            abort();
        cc->stmts = v;
        cc->cap_stmts = cap;
    }
    struct cache_stmt *st = &cc->stmts[cc->n_stmts++];
    memset(st, 0, sizeof(*st));
    st->name = param_intern(name);
    body_set(st, body, len);
    return st;
}

/* Owns the entry of a message of the batch being filled. */
static void own(struct request_msg *rm)
{
    rm->entry.owner = (uint8_t)cache_owner;
    rm->entry.flags |= RE_OWNED;
}

/* A message of c's about to go to a server: Query, Parse and Bind are
 * looked at for what they write and for session state; the Describe,
 * Execute and Sync of a batch being filled are owned. */
static int64_t cache_on_client_msg(struct client *c, struct request_msg *rm)
{
    struct cache_client *cc = c->cache;
    if (rm->type == 'D' || rm->type == 'E' || rm->type == 'S') {
        if (cc && cc->filling && cc->fill_ext && !cc->fill_bad) {
            own(rm);
            cc->capturing = true;
        }
        return rm->len;
    }
    if (!request_msg_need(c, rm, rm->len))
        return REQUEST_WAIT;
    struct iobuf *b = c->s.rbuf;
    const uint8_t *body = b->data + b->start + 5, *end = body + rm->len - 5;
    if (rm->type == 'Q') {
        /* A Query's text ends with the message (a malformed one: where its
         * NUL is). */
        size_t len = end > body && end[-1] == '\0'
                         ? (size_t)(end - body) - 1
                         : strnlen((const char *)body, (size_t)(end - body));
        const char *sql = (const char *)body;
        const struct cache_text_facts *f =
            cache_policy_by_shape(sql, len)
                ? cache_policy_shape_facts(request_msg_shape(rm, sql, len), sql, len)
                : NULL;
        if (g_on)
            taint_check(c, NULL, sql, len, f);
        cache_writes_of_text(c, sql, len, f);
        cc = c->cache;
        if (cc && cc->filling && !cc->fill_ext && !cc->capturing) {
            own(rm);
            cc->capturing = true;
        }
    } else if (rm->type == 'P') {
        const char *name = cache_cstr(body, end);
        const char *sql = name ? cache_cstr((const uint8_t *)name + strlen(name) + 1, end) : NULL;
        if (!sql)
            return rm->len; /* malformed: the server says so */
        const uint8_t *pb = (const uint8_t *)name + strlen(name) + 1;
        struct cache_stmt *kept = stmt_remember(c, name, pb, (uint32_t)(end - pb));
        if (g_on) {
            bool known = kept && (kept->memo & STMT_TAINT_KNOWN);
            size_t n = known ? 0 : strlen(sql);
            taint_check(c, kept, sql, n, known ? NULL : cache_policy_facts(sql, n));
        }
    } else if (rm->type == 'B') {
        const char *portal = cache_cstr(body, end);
        const char *name =
            portal ? cache_cstr((const uint8_t *)portal + strlen(portal) + 1, end) : NULL;
        if (!name)
            return rm->len;
        uint32_t len;
        struct cache_stmt *kept;
        const uint8_t *pb = cache_stmt_body(c, name, &len, &kept);
        if (kept && (kept->memo & STMT_READS))
            return rm->len;
        const char *sql = pb ? cache_cstr(pb, pb + len) : NULL;
        if (sql) {
            size_t n = strlen(sql);
            if (!cache_writes_of_text(c, sql, n, cache_policy_facts(sql, n)) && kept)
                kept->memo |= STMT_READS;
        } else
            cache_client_of(c)->writes_all = true; /* a statement it did not see prepared */
    }
    return rm->len;
}

/* Whether v (the answer read) is a whole answer of its request: a
 * Query's RowDescription, rows and CommandComplete; a batch's (its
 * Describe's RowDescription or NoData if described) rows and
 * CommandComplete. */
static bool value_whole(const struct cache_client *cc)
{
    if (cc->val_len < 5)
        return false;
    uint8_t first = cc->val[0];
    if ((!cc->fill_ext || cc->described) && first != 'T' && first != 'n')
        return false;
    /* The last message is a CommandComplete. */
    size_t off = 0, last = 0;
    while (off + 5 <= cc->val_len) {
        uint32_t n = (uint32_t)cc->val[off + 1] << 24 | (uint32_t)cc->val[off + 2] << 16 |
                     (uint32_t)cc->val[off + 3] << 8 | cc->val[off + 4];
        last = off;
        off += 1 + (size_t)n;
    }
    return off == cc->val_len && cc->val[last] == 'C';
}

/* The request being filled ends (ReadyForQuery status, or 0: it went). */
static void fill_end(struct client *c, struct server *sv, char status)
{
    struct cache_client *cc = c->cache;
    struct database *db = c->pool->db;
    if (status == 'I' && !cc->fill_bad && sv && sv->pool->ep == 0 && value_whole(cc)) {
        int64_t now = worker_now(c->s.worker);
        enum cache_put_result r = cache_tier_keep(cc, now);
        cache_ctr_add(db, r == CACHE_PUT_STORED  ? CC_STORES
                          : r == CACHE_PUT_STALE ? CC_REFUSED_STALE
                                                 : CC_REFUSED_OTHER);
        if (r != CACHE_PUT_STORED)
            log_debug("C-%p: answer not cached: %s", (void *)c, cache_put_result_str(r));
        /* Stored or refused as stale: the waiters look again (and one of
         * them leads the next fill). Refused otherwise: each runs its own. */
        sf_leave(cc, r == CACHE_PUT_STORED || r == CACHE_PUT_STALE);
        if (r != CACHE_PUT_STALE)
            cache_tier_put(c, now);
    } else {
        cache_ctr_add(db, CC_REFUSED_OTHER);
    }
    fill_reset(cc);
}

static unsigned cache_on_server_msg(struct client *c, struct server *sv, struct request_entry *e,
                                    const struct stream_msg *m, bool done)
{
    (void)e;
    struct cache_client *cc = c->cache;
    if (!cc || !cc->capturing)
        return REQUEST_PASS;
    if (m->type == 'Z') {
        fill_end(c, sv, (char)m->data[5]);
        return REQUEST_PASS;
    }
    if (cc->fill_bad || m->type == '1' || m->type == '2')
        return REQUEST_PASS; /* session pooling: the Sync's entry sees the whole batch */
    if (m->type != 'T' && m->type != 'D' && m->type != 'C' && m->type != 'n') {
        cc->fill_bad = true; /* an error, COPY, an empty query, a suspended portal: not kept */
        return REQUEST_PASS;
    }
    size_t max = (size_t)g_pooler.cfg->cache_max_entry_size;
    if (cc->val_len + m->len > max) {
        cc->fill_bad = true; /* too big: streamed to the client, not kept */
        return REQUEST_PASS;
    }
    if (m->avail < m->len)
        return REQUEST_MORE;
    if (cc->val_len + m->len > cc->val_cap) {
        size_t cap = cc->val_cap ? cc->val_cap : 4096;
        while (cap < cc->val_len + m->len)
            cap *= 2;
        if (cap > max)
            cap = max;
        if (!fill_take(cap - cc->val_cap)) {
            cc->fill_bad = true; /* fills in flight hold their budget: not kept */
            return REQUEST_PASS;
        }
        uint8_t *v = realloc(cc->val, cap);
        if (!v)
            abort();
        cc->val = v;
        cc->val_cap = cap;
    }
    memcpy(cc->val + cc->val_len, m->data, m->len);
    cc->val_len += m->len;
    return REQUEST_PASS;
}

static void cache_on_release(struct request_entry *e)
{
    (void)e; /* what a fill holds is the client's: fill_end() or the unlink frees it */
}

static void cache_on_dropped(struct client *c, struct request_entry *e)
{
    (void)e;
    if (c->cache && c->cache->capturing)
        c->cache->fill_bad = true;
}

static int64_t cache_on_request_begin(struct client *c, uint8_t type)
{
    if ((type != 'Q' && type != 'P' && type != 'B') || !c->server || request_busy(c))
        return 0;
    /* A session's server: a hit answers here; a fill only on the primary.
     * A Redis lookup holds the request (its own server waits with it);
     * the watch list routes it again when the answer is in. */
    enum cache_route r = decide(c, c->server->xact_status, c->server->pool->ep == 0, false);
    return r == CACHE_ROUTE_HIT ? REQUEST_ANSWERED : r == CACHE_ROUTE_WAIT ? REQUEST_WAIT : 0;
}

static void cache_on_request_end(struct client *c, struct server *sv, const struct request *r,
                                 char status)
{
    (void)r;
    struct cache_client *cc = c->cache;
    if (!cc)
        return;
    if (status == 'I')
        cache_writes_flush(c);
}

static void cache_on_unlinked(struct client *c)
{
    struct cache_client *cc = c->cache;
    if (!cc)
        return;
    cache_writes_flush(
        c); /* its transaction is over, whichever way: its writes may have committed */
    if (cc->filling) {
        cache_ctr_add(c->pool->db, CC_REFUSED_OTHER); /* its server went: nothing kept */
        fill_reset(cc);
    }
}

static void cc_free(struct client *c)
{
    struct cache_client *cc = c->cache;
    if (!cc)
        return;
    if (c->pool)
        cache_writes_flush(c);
    sf_wait_end(c);
    cache_tier_forget(c);
    cc->n_hold = 0;
    cache_watch_remove(c);
    if (cc->filling && c->pool)
        cache_ctr_add(c->pool->db, CC_REFUSED_OTHER); /* the client went: nothing kept */
    fill_reset(cc);
    free(cc->unnamed.body);
    for (int i = 0; i < cc->n_stmts; i++) {
        param_unref(cc->stmts[i].name);
        free(cc->stmts[i].body);
    }
    free(cc->stmts);
    free(cc);
    c->cache = NULL;
}

void cache_client_free(struct client *c)
{
    cc_free(c);
}

static const struct request_observer cache_observer = {
    .name = "cache",
    .tracked_only = false,
    .client_msgs = "QPBDES",
    .on_client_msg = cache_on_client_msg,
    .on_request_begin = cache_on_request_begin,
    .on_server_msg = cache_on_server_msg,
    .on_dropped = cache_on_dropped,
    .on_release = cache_on_release,
    .on_request_end = cache_on_request_end,
    .on_unlinked = cache_on_unlinked,
};

/* ---- start, figures -------------------------------------------------------------------- */

/* With the cache off, the observer still follows clients' writes when
 * refresh jobs may want them (after_writes_to, jobs.h): [jobs] at start. */
static const struct request_observer writes_observer = {
    .name = "writes",
    .tracked_only = false,
    .client_msgs = "QPB",
    .on_client_msg = cache_on_client_msg,
    .on_request_end = cache_on_request_end,
    .on_unlinked = cache_on_unlinked,
};

bool cache_init(const struct config *cfg, char *err, size_t errlen)
{
    if (strcmp(cfg->cache, "off") == 0) {
        if (cfg->n_jobs > 0)
            cache_owner = request_observe(&writes_observer);
        return true;
    }
    size_t max = (size_t)cfg->cache_max_memory, entry = (size_t)cfg->cache_max_entry_size;
    g_fill_budget = cache_store_fill_budget(max, entry);
    struct cache_store_opts o = {.max_bytes = max > g_fill_budget ? max - g_fill_budget : 0,
                                 .max_entry_size = entry};
    cache_g_store = o.max_bytes ? cache_store_new(&o) : NULL;
    if (!cache_g_store) { /* config_cache_check() says why first */
        snprintf(err, errlen, "cannot make the result cache (cache_max_memory %zu bytes)", max);
        return false;
    }
    cache_names_init();
    cache_owner = request_observe(&cache_observer);
    writes_subscribe(on_writes, NULL);
    writes_subscribe_gap(on_gap, NULL);
    g_on = true;
    log_info("result cache: in memory, %lld bytes at most, entries up to %lld bytes%s%s",
             (long long)cfg->cache_max_memory, (long long)cfg->cache_max_entry_size,
             strcmp(cfg->cache, "memory") ? ", in front of " : "",
             strcmp(cfg->cache, "memory") ? cfg->cache : "");
    return true;
}

void cache_thread_done(void)
{
    cache_policy_thread_done();
    cache_names_thread_done();
    free(tl_sf.v);
    tl_sf.v = NULL;
    tl_sf.n = tl_sf.cap = 0;
    free(tl_key.p);
    tl_key.p = NULL;
    tl_key.cap = tl_key.len = 0;
}

void cache_shutdown(void)
{
    if (cache_g_redis)
        cache_redis_stop();
    cache_g_redis = false;
    if (cache_g_store)
        cache_store_free(cache_g_store);
    cache_g_store = NULL;
    cache_names_free();
    cache_thread_done();
}

void cache_db_stats(const struct database *db, struct cache_db_stats *out)
{
    uint64_t v[8];
    for (int i = 0; i < 8; i++)
        v[i] = atomic_load_explicit(&((struct database *)db)->cache_ctr[i], memory_order_relaxed);
    out->hits = v[CC_HITS];
    out->misses = v[CC_MISSES];
    out->fills = v[CC_FILLS];
    out->stores = v[CC_STORES];
    out->refused_stale = v[CC_REFUSED_STALE];
    out->refused_other = v[CC_REFUSED_OTHER];
    out->invalidations = v[CC_INVALIDATIONS];
    out->bypass = v[CC_BYPASS];
    int slot = cache_g_store ? cache_store_owner_find(cache_g_store, cache_db_id(db)) : -1;
    struct cache_owner_stats os;
    cache_store_owner_stats(cache_g_store, slot < 0 ? CACHE_OWNERS : (unsigned)slot, &os);
    out->entries = os.entries;
    out->bytes = os.bytes;
    out->evictions = os.evictions;
    out->expired = os.expired;
}

void cache_db_stats_others(void (*cb)(const char *name, const struct cache_db_stats *st, void *arg),
                           void *arg)
{
    for (unsigned i = 0; cache_g_store && i < CACHE_OWNERS; i++) {
        struct cache_owner_stats os;
        cache_store_owner_stats(cache_g_store, i, &os);
        bool shown = i == CACHE_OWNER_OTHERS ? os.entries || os.bytes || os.evictions || os.expired
                                             : os.entries || os.bytes;
        if (!shown) /* (most slots: free, or empty) */
            continue;
        struct list *it, *tmp;
        list_for_each_safe(it, tmp, &g_pooler.databases)
        {
            if (cache_db_id(list_entry(it, struct database, node)) == os.id)
                shown = false; /* its database's row has it */
        }
        struct cache_db_stats st = {.entries = os.entries,
                                    .bytes = os.bytes,
                                    .evictions = os.evictions,
                                    .expired = os.expired};
        if (shown)
            cb(os.name, &st, arg);
    }
}

void cache_stats(struct cache_store_stats *out)
{
    if (!cache_g_store) {
        memset(out, 0, sizeof(*out));
        return;
    }
    /* The whole of cache_max_memory: the store's and the fills' parts. */
    cache_store_stats(cache_g_store, out);
    out->bytes += cache_fill_bytes();
    out->max_bytes += g_fill_budget;
}

size_t cache_clear(struct database *db, const char *table)
{
    if (!cache_g_store)
        return 0;
    if (!table) {
        struct cache_store_stats st;
        cache_store_stats(cache_g_store, &st);
        cache_store_clear(cache_g_store);
        /* Every entry in Redis holds its database's id among its tables:
         * moving those generations drops them for every instance. */
        if (cache_g_redis) {
            struct list *it, *tmp;
            list_for_each_safe(it, tmp, &g_pooler.databases)
            {
                cache_redis_invalidate(cache_redis_global(),
                                       cache_db_id(list_entry(it, struct database, node)));
            }
        }
        return (size_t)st.entries;
    }
    /* A qualified name: its own id, whatever the catalog knows (every
     * answer over it, or over a view of it, depends on that id). An
     * unqualified one: every schema's, or every answer of db while the
     * name is not known. */
    uint64_t ids[CACHE_CATALOG_MAX_IDS];
    int64_t now = worker_current() ? worker_now(worker_current()) : 0;
    char buf[CACHE_CATALOG_MAX_NAME];
    struct writes_rel rel;
    cache_rel_split(table, buf, sizeof(buf), &rel);
    int n = cache_write_rel_ids(db, &rel, true, now, ids, CACHE_CATALOG_MAX_IDS);
    if (n < 0)
        return invalidate_id(db, cache_db_id(db), "*");
    size_t dropped = 0;
    for (int k = 0; k < n; k++)
        dropped += invalidate_id(db, ids[k], n == 1 && strchr(table, '.') ? table : "");
    return dropped;
}
