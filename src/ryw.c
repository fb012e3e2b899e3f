/* ryw.c - read-your-writes (ryw.h). */
#include "ryw.h"

#include <ev.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "pool.h"
#include "proto.h"
#include "replicas.h"
#include "request.h"
#include "router.h"
#include "server.h"
#include "server_query.h"
#include "worker.h"

/* After a write whose position could not be read (its server failed),
 * reads of its scope go to the primary this long. */
#define RYW_UNKNOWN_USEC (10 * 1000000LL)

static _Thread_local struct {
    uint64_t generation;
    enum ryw_mode mode;
} tl_mode;

enum ryw_mode ryw_mode(void)
{
    const struct config *cfg = g_pooler.cfg;
    if (tl_mode.generation != cfg->generation) {
        static const char *const names[] = {"off", "connection", "user", "database"};
        tl_mode.mode = RYW_USER;
        for (int i = 0; i < 4; i++)
            if (!strcmp(cfg->read_your_writes, names[i]))
                tl_mode.mode = (enum ryw_mode)i;
        tl_mode.generation = cfg->generation;
    }
    return tl_mode.mode;
}

/* The shared scope of a client of pool p under mode m, or NULL (off, or
 * connection: the client's own). */
static struct rw_scope *scope_of(struct pool *p, enum ryw_mode m)
{
    if (m == RYW_USER)
        return &p->home->rw;
    if (m == RYW_DATABASE)
        return &p->db->rw;
    return NULL;
}

bool ryw_token_matches(const struct database *db, const struct ryw_client *rc)
{
    uint64_t sysid = atomic_load_explicit(&db->endpoints[0].sysid, memory_order_relaxed);
    uint32_t tli = atomic_load_explicit(&db->endpoints[0].timeline, memory_order_relaxed);
    return !rc->min_sysid || ((!sysid || sysid == rc->min_sysid) && (!tli || tli == rc->min_tli));
}

uint64_t ryw_scope_lsn(const struct client *c)
{
    const struct rw_scope *s = c->pool ? scope_of(c->pool, ryw_mode()) : NULL;
    return s ? atomic_load(&s->lsn) : 0;
}

/* c's token (SET sluice.min_lsn), if it is of its database's cluster and
 * timeline; 0 otherwise (logged once). */
static uint64_t token_floor(const struct client *c, struct ryw_client *rc)
{
    if (!rc->min_lsn)
        return 0;
    if (ryw_token_matches(c->pool->db, rc))
        return rc->min_lsn;
    if (!rc->token_warned) {
        rc->token_warned = true;
        log_warning("C-%p: sluice.min_lsn is from another cluster or timeline than database "
                    "\"%s\"'s primary now: ignored",
                    (void *)c, c->pool->db->name);
    }
    return 0;
}

bool ryw_read_floor(const struct client *c, struct ryw_client *rc, int64_t now, uint64_t *min_lsn)
{
    *min_lsn = rc ? token_floor(c, rc) : 0;
    enum ryw_mode m = ryw_mode();
    if (m == RYW_OFF)
        return true;
    if (rc) {
        if (rc->unknown_until > now)
            return false;
        if (rc->lsn > *min_lsn)
            *min_lsn = rc->lsn;
    }
    const struct rw_scope *s = scope_of(c->pool, m);
    if (!s)
        return true;
    /* pending before lsn: a writer raises lsn, then lowers pending. */
    if (atomic_load(&s->pending) > 0 || atomic_load(&s->unknown_until) > now)
        return false;
    uint64_t l = atomic_load(&s->lsn);
    if (l > *min_lsn)
        *min_lsn = l;
    return true;
}

void ryw_commit_begin(struct ryw_client *rc, struct server *sv)
{
    enum ryw_mode m = ryw_mode();
    /* What the client sends on this link from now on (while the position
     * is read, it goes to this server) is looked at again. */
    rc->wrote = false;
    rc->watch = true;
    sv->rw_scope = (uint8_t)(m == RYW_OFF ? RYW_CONNECTION : m);
    sv->rw_lsn = 0;
    sv->rw_client = rc;
    struct rw_scope *s = scope_of(sv->pool, m);
    if (s)
        atomic_fetch_add(&s->pending, 1);
}

/* Raises *at to lsn; true if it was below. */
static bool raise_to(_Atomic uint64_t *at, uint64_t lsn)
{
    uint64_t cur = atomic_load(at);
    while (cur < lsn)
        if (atomic_compare_exchange_weak(at, &cur, lsn))
            return true;
    return false;
}

/* A write committed at a position nobody knows: reads of its scope (s)
 * and of its client (rc) go to the primary for a while. */
static void position_unknown(struct rw_scope *s, struct ryw_client *rc, int64_t now)
{
    if (s)
        atomic_store(&s->unknown_until, now + RYW_UNKNOWN_USEC);
    if (rc)
        rc->unknown_until = now + RYW_UNKNOWN_USEC;
}

/* The position is known (ok) or not: the scope learns it, and the
 * pending write is no more. */
static void commit_end(struct server *sv, bool ok)
{
    int64_t now = worker_now(sv->s.worker);
    struct rw_scope *s = scope_of(sv->pool, (enum ryw_mode)sv->rw_scope);
    struct ryw_client *rc = sv->client ? sv->rw_client : NULL;
    if (ok) {
        if (s)
            raise_to(&s->lsn, sv->rw_lsn);
        if (rc && sv->rw_lsn > rc->lsn)
            rc->lsn = sv->rw_lsn;
    } else {
        position_unknown(s, rc, now);
    }
    if (s)
        atomic_fetch_sub(&s->pending, 1);
    sv->rw_client = NULL;
}

/* pg_current_wal_insert_lsn()'s text as the position a standby's replay
 * reaches (0: not one). The insert position of a WAL that ends at a page
 * boundary points past the next page's header (24 bytes, 40 at a segment's
 * start), where no record ends and no standby's replay position will be
 * until more is written: the boundary is where the last write ends. */
static uint64_t write_position(const char *s, size_t len)
{
    uint64_t lsn;
    if (!s || !replicas_parse_lsn(s, len, &lsn))
        return 0;
    uint64_t off = lsn % 8192;
    return off == 24 || off == 40 ? lsn - off : lsn;
}

static void lsn_row(struct server *sv, void *arg, const struct server_query_row *row)
{
    sv->rw_lsn = row->n >= 1 ? write_position(row->val[0], row->len[0]) : 0;
}

static void lsn_done(struct server *sv, void *arg, enum server_query_status st)
{
    if (st == SERVER_QUERY_GONE) {
        commit_end(sv, false); /* sv->rw_scope stays: ryw_commit_lost() */
        return;
    }
    bool ok = st == SERVER_QUERY_OK && sv->rw_lsn;
    if (log_enabled(LOG_LVL_DEBUG))
        server_log(LOG_LVL_DEBUG, sv, "write position %X/%X", (unsigned)(sv->rw_lsn >> 32),
                   (unsigned)sv->rw_lsn);
    if (!ok)
        server_log(LOG_LVL_WARNING, sv,
                   "could not read the position of a write: reads of its "
                   "scope go to the primary for a while");
    commit_end(sv, ok);
    sv->rw_scope = 0;
    struct client *c = sv->client;
    /* Back to the pool, unless the client sent more meanwhile (that went
     * to this server, which answers it next). */
    if (c && !request_busy(c) && sv->xact_status == 'I')
        pool_release_server(sv);
}

static const struct server_query_ops lsn_ops = {.on_row = lsn_row, .on_done = lsn_done};

#define POSITION_SQL "SELECT pg_catalog.pg_current_wal_insert_lsn()"

void ryw_commit_read(struct server *sv)
{
    if (!server_query(sv, POSITION_SQL, 0, NULL, &lsn_ops, NULL)) {
        commit_end(sv, false);
        sv->rw_scope = 0;
    }
}

bool ryw_commit_lost(struct server *sv)
{
    if (!sv->rw_scope)
        return false;
    sv->rw_scope = 0;
    return true;
}

/* ---- the position riding behind the commit ------------------------------------ */

static int g_owner;

bool ryw_ride_lost(struct client *c, struct server *sv)
{
    const struct request_entry *e = request_head_entry(c);
    if (!e || !(e->flags & RE_OWNED) || e->owner != (uint8_t)g_owner || request_busy(c))
        return false; /* not the ride's, or the client's own request is still owed */
    if (sv->pool->ep != 0)
        return true; /* a replica's position: the lag monitor asks again */
    if (c->route)
        c->route->ryw.wrote = false;
    position_unknown(scope_of(sv->pool, ryw_mode()), c->route ? &c->route->ryw : NULL,
                     worker_now(sv->s.worker));
    server_log(LOG_LVL_WARNING, sv,
               "lost before the position of a write it committed: reads of its scope go to "
               "the primary for a while");
    return true;
}

void ryw_set_owner(int owner)
{
    g_owner = owner;
}

bool ryw_hurry_claim(struct database *db, int ep, int64_t now)
{
    /* Less half a turn: the monitor's timer, one replica a turn, may come
     * back a little early, and must not skip a whole turn for that. */
    int64_t every =
        RYW_HURRY_USEC * (db->n_endpoints > 2 ? db->n_endpoints - 1 : 1) - RYW_HURRY_USEC / 2;
    _Atomic int64_t *at = &db->endpoints[ep].hurry_at;
    int64_t was = atomic_load_explicit(at, memory_order_relaxed);
    return now - was >= every && atomic_compare_exchange_strong_explicit(
                                     at, &was, now, memory_order_relaxed, memory_order_relaxed);
}

bool ryw_ride_due(struct client *c, struct server *sv)
{
    const struct router_client *r = c->route;
    if (r->ryw.ride)
        return true;
    int ep = sv->pool->ep;
    if (ep == 0 || !atomic_load_explicit(&ryw_waiting, memory_order_relaxed) ||
        r->txn != RTX_NONE || sv->close_needed ||
        !ryw_hurry_claim(sv->pool->db, ep, worker_now(sv->s.worker)))
        return false;
    atomic_fetch_add_explicit(&ryw_wait_stats.asks_ride, 1, memory_order_relaxed);
    return true;
}

/* The query that asks sv for its position: the primary's insert position
 * behind a write, a replica's replay position behind a read. */
#define REPLAY_SQL "SELECT pg_catalog.pg_last_wal_replay_lsn()"

void ryw_ride(struct client *c, struct ryw_client *rc, struct server *sv)
{
    bool write = rc->ride;
    rc->ride = false;
    struct request_entry *end = request_last_end(c);
    if (!end || (write && sv->pool->ep != 0))
        return; /* answered by sluice, or not the primary's: read after it (ryw_commit_read) */
    end->flags |= RE_HOLD_Z;
    static const char primary_sql[] = POSITION_SQL, replica_sql[] = REPLAY_SQL;
    const char *sql = write ? primary_sql : replica_sql;
    size_t len = write ? sizeof(primary_sql) : sizeof(replica_sql);
    uint8_t msg[5 + sizeof(primary_sql) + sizeof(replica_sql)];
    msg[0] = 'Q';
    uint32_t n = 4 + (uint32_t)len;
    msg[1] = (uint8_t)(n >> 24);
    msg[2] = (uint8_t)(n >> 16);
    msg[3] = (uint8_t)(n >> 8);
    msg[4] = (uint8_t)n;
    memcpy(msg + 5, sql, len);
    stream_write(&sv->s, msg, 5 + len);
    /* Its answer is swallowed (RE_SWALLOW, lifted at its end so that its
     * ReadyForQuery goes to the client in place of the one held). */
    struct request_entry e = {
        .answer = RA_QUERY, .flags = RE_OWNED | RE_SWALLOW, .owner = (uint8_t)g_owner};
    request_push(c, &e);
}

int ryw_token_format(char *buf, size_t n, const struct database *db, uint64_t lsn)
{
    uint64_t sysid = atomic_load_explicit(&db->endpoints[0].sysid, memory_order_relaxed);
    uint32_t tli = atomic_load_explicit(&db->endpoints[0].timeline, memory_order_relaxed);
    if (sysid && tli)
        return snprintf(buf, n, "%X/%X/%" PRIu64 "/%u", (unsigned)(lsn >> 32), (unsigned)lsn, sysid,
                        tli);
    return snprintf(buf, n, "%X/%X", (unsigned)(lsn >> 32), (unsigned)lsn);
}

/* The write of c's that just committed is at lsn: its scope and c know it,
 * and c gets it as a token (ParameterStatus sluice.lsn, before its
 * ReadyForQuery). */
static void ride_recorded(struct client *c, struct server *sv, uint64_t lsn)
{
    struct ryw_client *rc = &c->route->ryw;
    rc->wrote = false;
    if (lsn > rc->lsn)
        rc->lsn = lsn;
    struct rw_scope *s = scope_of(sv->pool, ryw_mode());
    if (s)
        raise_to(&s->lsn, lsn);
    char token[64];
    ryw_token_format(token, sizeof(token), c->pool->db, lsn);
    uint8_t buf[96];
    struct proto_writer w;
    proto_writer_init(&w, buf, sizeof(buf));
    proto_build_param_status(&w, "sluice.lsn", token);
    request_out_add(c, w.buf, w.len);
    log_debug("C-%p: write position %s", (void *)c, token);
}

unsigned ryw_on_server_msg(struct client *c, struct server *sv, struct request_entry *e,
                           const struct stream_msg *m, bool done)
{
    (void)done;
    switch (m->type) {
    case 'D': {
        /* One column: int16 count, int32 length, the text. */
        const uint8_t *p = m->data + 5;
        if (m->len >= 11 && p[0] == 0 && p[1] == 1) {
            int32_t n =
                (int32_t)((uint32_t)p[2] << 24 | (uint32_t)p[3] << 16 | (uint32_t)p[4] << 8 | p[5]);
            uint64_t lsn;
            if (n > 0 && (uint32_t)n <= m->len - 11) {
                /* The primary's insert position, or a replica's replay one. */
                if (sv->pool->ep == 0)
                    e->u = write_position((const char *)p + 6, (size_t)n);
                else if (replicas_parse_lsn((const char *)p + 6, (size_t)n, &lsn))
                    e->u = lsn;
            }
        }
        return REQUEST_SWALLOW;
    }
    case 'C':
    case 'E':
        e->flags &= (uint8_t)~RE_SWALLOW; /* its ReadyForQuery is the client's */
        if (sv->pool->ep != 0) {
            /* A replica's replay position: never past what it replayed
             * (the lag monitor's next look may lower it, never raise it
             * beyond). Not from a server whose address is no longer the
             * endpoint's (a reload changed it). */
            if (m->type == 'C' && e->u && !sv->close_needed &&
                raise_to(&sv->pool->db->endpoints[sv->pool->ep].lag_lsn, e->u))
                ryw_lag_moved();
            return REQUEST_SWALLOW;
        }
        /* The client's held ReadyForQuery said idle: the write committed
         * (its status is sv's now; the query changed nothing). */
        if (m->type == 'C' && e->u && sv->xact_status == 'I' && c->route) {
            ride_recorded(c, sv, e->u);
            return REQUEST_SWALLOW | REQUEST_EMIT;
        }
        if (m->type == 'E')
            server_log(LOG_LVL_DEBUG, sv, "write position query failed");
        return REQUEST_SWALLOW;
    default:
        return m->type == 'Z' ? REQUEST_PASS : REQUEST_SWALLOW;
    }
}

bool ryw_token_parse(const char *s, size_t len, uint64_t *lsn, uint64_t *sysid, uint32_t *tli)
{
    char t[96];
    if (len == 0 || len >= sizeof(t))
        return false;
    memcpy(t, s, len);
    t[len] = '\0';
    unsigned hi, lo, tl = 0;
    unsigned long long id = 0;
    int used = 0;
    int k = sscanf(t, "%8X/%8X%n/%20llu/%10u%n", &hi, &lo, &used, &id, &tl, &used);
    if ((k != 2 && k != 4) || (size_t)used != len || (k == 4 && (!id || !tl)))
        return false;
    *lsn = (uint64_t)hi << 32 | lo;
    *sysid = id;
    *tli = tl;
    return true;
}

/* ---- a read waiting for a replica to catch up ------------------------------------ */

_Atomic int ryw_waiting;
static void (*_Atomic g_hurry)(void);
struct ryw_wait_stats ryw_wait_stats;

void ryw_set_hurry(void (*hurry)(void))
{
    atomic_store(&g_hurry, hurry);
}

/* The clients of one worker whose read waits. Per worker, not per thread:
 * at a SIGINT shutdown the main thread closes other workers' idle clients
 * while the world is stopped (main.c, shutdown_busy_clients()), and a
 * client must leave its own worker's list then. With a thread-local list
 * it stayed there, was freed, and the next tick read it
 * (heap-use-after-free, test_chaos_sigint_restart with 4 workers).
 *
 * No polling: a waiting read is routed again when the lag monitor learns a
 * new replica position (ryw_lag_moved() wakes the lists that hold reads,
 * through an ev_async, which costs no system call when the list is the
 * monitor's own thread's), or when its time is up (one timer per list, at
 * its earliest deadline). A 1 ms poll woke every worker a thousand times a
 * second while reads waited, most of the time for nothing. */
struct wait_list {
    ev_timer timer; /* the earliest deadline */
    ev_async wake;  /* a replica moved */
    struct ev_loop *loop;
    struct worker *worker;
    int id; /* the worker's */
    struct client **v;
    int n, cap;
    _Atomic int listed; /* n, for ryw_lag_moved() on the monitor's thread */
};
#define WAIT_LISTS 1025 /* workers are at most 1024 (config_keys.c) */
static struct wait_list *_Atomic wait_lists[WAIT_LISTS];
static _Atomic int wait_lists_top; /* highest id made, plus one */
/* The list this thread made (its worker's), freed at thread exit. */
static _Thread_local struct wait_list *tl_list;

static struct wait_list *wait_list_of(const struct client *c)
{
    int id = c->s.worker->id;
    return id >= 0 && id < WAIT_LISTS ? atomic_load_explicit(&wait_lists[id], memory_order_acquire)
                                      : NULL;
}

/* The deadline timer at the earliest wait's end; stopped when none waits. */
static void wait_arm(struct wait_list *l, int64_t now)
{
    ev_timer_stop(l->loop, &l->timer);
    int64_t first = INT64_MAX, timeout = g_pooler.cfg->replica_wait_timeout;
    for (int i = 0; i < l->n; i++) {
        const struct client *c = l->v[i];
        const struct ryw_client *rc = c->route ? &c->route->ryw : NULL;
        if (rc && rc->wait_start && rc->wait_start + timeout < first)
            first = rc->wait_start + timeout;
    }
    if (first == INT64_MAX)
        return;
    double in = (double)(first - now) / 1e6;
    ev_timer_set(&l->timer, in > 0 ? in : 0., 0.);
    ev_timer_start(l->loop, &l->timer);
}

static void wait_remove(struct client *c)
{
    struct wait_list *l = wait_list_of(c);
    if (!l)
        return;
    for (int i = 0; i < l->n; i++) {
        if (l->v[i] == c) {
            l->v[i] = l->v[--l->n];
            atomic_store_explicit(&l->listed, l->n, memory_order_relaxed);
            atomic_fetch_sub(&ryw_waiting, 1);
            break;
        }
    }
    if (!l->n)
        ev_timer_stop(l->loop, &l->timer);
}

/* Each waiting read of l is routed again if a replica has reached its
 * floor (moved) or its time is up: to a replica that caught up, or to the
 * primary. The deadline timer is set again for those left. */
static void wait_scan(struct wait_list *l, bool moved)
{
    int64_t timeout = g_pooler.cfg->replica_wait_timeout, now = worker_now(l->worker);
    /* From the end: a client routed on leaves the list (its last entry
     * takes its place), and one still waiting stays where it is. */
    for (int i = l->n - 1; i >= 0; i--) {
        if (i >= l->n)
            continue;
        struct client *c = l->v[i];
        const struct ryw_client *rc = c->route ? &c->route->ryw : NULL;
        if (c->state != CL_IDLE || !c->s.rbuf || !iobuf_len(c->s.rbuf) || !rc) {
            ryw_wait_forget(c);
            continue;
        }
        /* A look at atomics first, the router only then. */
        if ((moved && replicas_reached(c->pool->db, rc->wait_floor)) ||
            now - rc->wait_start >= timeout)
            c->s.ops->on_data(&c->s);
    }
    wait_arm(l, now);
}

static void wait_deadline(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    wait_scan(t->data, false);
}

static void wait_wake(struct ev_loop *loop, ev_async *a, int revents)
{
    (void)loop;
    (void)revents;
    wait_scan(a->data, true);
}

void ryw_lag_moved(void)
{
    /* Pairs with the fence in ryw_wait(): either that read sees the new
     * position, or this sees it listed. */
    atomic_thread_fence(memory_order_seq_cst);
    int top = atomic_load_explicit(&wait_lists_top, memory_order_acquire);
    for (int id = 0; id < top; id++) {
        struct wait_list *l = atomic_load_explicit(&wait_lists[id], memory_order_acquire);
        if (l && atomic_load_explicit(&l->listed, memory_order_relaxed) > 0)
            ev_async_send(l->loop, &l->wake);
    }
}

static struct wait_list *wait_list_make(struct worker *w)
{
    struct wait_list *l;
    if (w->id < 0 || w->id >= WAIT_LISTS || !(l = calloc(1, sizeof(*l))))
        return NULL;
    ev_timer_init(&l->timer, wait_deadline, 0., 0.);
    l->timer.data = l;
    ev_async_init(&l->wake, wait_wake);
    l->wake.data = l;
    ev_async_start(w->loop, &l->wake);
    l->loop = w->loop;
    l->worker = w;
    l->id = w->id;
    tl_list = l;
    atomic_store_explicit(&wait_lists[w->id], l, memory_order_release);
    int top = atomic_load(&wait_lists_top);
    while (top < w->id + 1 && !atomic_compare_exchange_weak(&wait_lists_top, &top, w->id + 1))
        ;
    return l;
}

bool ryw_wait(struct client *c, struct ryw_client *rc, int64_t now, uint64_t floor)
{
    int64_t timeout = g_pooler.cfg->replica_wait_timeout;
    if (timeout <= 0)
        return false;
    rc->wait_floor = floor;
    if (rc->wait_start)
        return now - rc->wait_start < timeout;
    struct wait_list *l = wait_list_of(c);
    if (!l && !(l = wait_list_make(c->s.worker)))
        return false;
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 16;
        struct client **v = realloc(l->v, (size_t)cap * sizeof(*v));
        if (!v)
            return false;
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = c;
    atomic_store_explicit(&l->listed, l->n, memory_order_relaxed);
    rc->wait_start = now;
    if (!ev_is_active(&l->timer))
        wait_arm(l, now);
    /* A position learnt between the router's look and the listing above
     * woke nobody: look again (see ryw_lag_moved()). */
    atomic_thread_fence(memory_order_seq_cst);
    if (replicas_reached(c->pool->db, floor))
        ev_async_send(l->loop, &l->wake);
    void (*hurry)(void) = atomic_load(&g_hurry);
    if (atomic_fetch_add(&ryw_waiting, 1) == 0 && hurry)
        hurry();
    atomic_fetch_add_explicit(&ryw_wait_stats.waits, 1, memory_order_relaxed);
    return true;
}

void ryw_wait_end(struct client *c, struct ryw_client *rc, int64_t now, bool replica)
{
    if (!rc->wait_start)
        return;
    int64_t waited = now - rc->wait_start;
    rc->wait_start = 0;
    rc->wait_plain = false;
    wait_remove(c);
    struct ryw_wait_stats *st = &ryw_wait_stats;
    atomic_fetch_add_explicit(replica ? &st->to_replica : &st->to_primary, 1, memory_order_relaxed);
    /* log2 buckets of microseconds: [i] holds waits below 2^(i+1) us. */
    int b = 0;
    while (b < RYW_WAIT_BUCKETS - 1 && waited >= (2LL << b))
        b++;
    atomic_fetch_add_explicit(&st->bucket[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&st->usec, (uint64_t)(waited > 0 ? waited : 0), memory_order_relaxed);
}

void ryw_wait_forget(struct client *c)
{
    struct ryw_client *rc = c->route ? &c->route->ryw : NULL;
    if (rc) {
        rc->wait_start = 0;
        rc->wait_plain = false;
    }
    /* Out of the list whatever rc says (a client listed must never be
     * freed): the list is its worker's waiting reads, short, and empty
     * most of the time. */
    wait_remove(c);
}

void ryw_thread_done(void)
{
    struct wait_list *l = tl_list;
    if (!l)
        return;
    ev_timer_stop(l->loop, &l->timer);
    ev_async_stop(l->loop, &l->wake);
    atomic_store(&wait_lists[l->id], NULL);
    free(l->v);
    free(l);
    tl_list = NULL;
}
