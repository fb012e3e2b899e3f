/* pool.c - pools of servers per (database, user, endpoint): their lists,
 * the dispatcher that lends idle servers to waiting clients (first come,
 * first served, across workers), the hand-over of a server between
 * workers, and the pools' housekeeping. The registry of databases, users
 * and pools is pool_registry.c. */
#include "pool_int.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dns.h"
#include "log.h"
#include "prepared_set.h"
#include "proto.h"
#include "replicas.h"
#include "volatility.h"
#include "worker.h"

/* The layers above, for what pool.c decides and they carry out. */
struct pool_ops pool_ops_table;

void pool_set_ops(const struct pool_ops *o)
{
    pool_ops_table = *o;
}

void pool_client_retry(struct client *c)
{
    POOL_STAT_ADD(c->pool->retries, 1);
    pool_ops_table.unlinked(c);
}

void pool_client_lost(struct client *c)
{
    pool_ops_table.unlinked(c);
}

/* ---- actions ------------------------------------------------------------- */

struct pool_action {
    uint8_t kind;
    struct server *sv;
    struct client *c;
    struct worker *w;
    const char *why;
    struct pool *p; /* PA_FAIL, PA_WAIT_TIMEOUT: the pool c waited for */
};

/* Per thread; run from the outermost pool call, in order. Grows once to
 * the largest burst (a reload closing many servers) and is reused. */
static _Thread_local struct {
    struct pool_action *a;
    unsigned head, n, cap;
    bool running;
} tl_actions;

void pool_thread_done(void)
{
    free(tl_actions.a);
    memset(&tl_actions, 0, sizeof(tl_actions));
}

void pool_act(enum pool_action_kind kind, struct server *sv, struct client *c, struct worker *w,
              const char *why)
{
    if (tl_actions.n == tl_actions.cap) {
        unsigned cap = tl_actions.cap ? tl_actions.cap * 2 : 32;
        struct pool_action *a = realloc(tl_actions.a, cap * sizeof(*a));
        if (!a)
            abort();
        tl_actions.a = a;
        tl_actions.cap = cap;
    }
    tl_actions.a[tl_actions.n++] =
        (struct pool_action){.kind = (uint8_t)kind, .sv = sv, .c = c, .w = w, .why = why};
}

void pool_act_client(enum pool_action_kind kind, struct client *c, struct pool *p)
{
    pool_act(kind, NULL, c, NULL, NULL);
    tl_actions.a[tl_actions.n - 1].p = p;
}

static void pool_assign_run(struct server *sv);
static void pool_client_fail(struct client *c, struct pool *p, bool timeout);

static void pool_run_actions(void)
{
    if (tl_actions.running)
        return; /* the outer call runs what was added */
    tl_actions.running = true;
    while (tl_actions.head < tl_actions.n) {
        struct pool_action a = tl_actions.a[tl_actions.head++];
        switch ((enum pool_action_kind)a.kind) {
        case PA_ASSIGN:
            pool_assign_run(a.sv);
            break;
        case PA_LINK:
            pool_ops_table.link(a.sv, a.c);
            break;
        case PA_CONNECT:
            pool_ops_table.start_server(a.sv);
            break;
        case PA_CLOSE:
            pool_ops_table.close_server(a.sv, a.why);
            break;
        case PA_TEST:
            pool_ops_table.check_server(a.sv);
            break;
        case PA_RESET:
            pool_ops_table.reset_server(a.sv);
            break;
        case PA_UNLINKED:
            if (a.c->state != CL_CLOSED)
                pool_ops_table.unlinked(a.c);
            break;
        case PA_WELCOME:
            if (a.c->state == CL_IDLE)
                pool_ops_table.welcome(a.c);
            break;
        case PA_FAIL:
            pool_client_fail(a.c, a.p ? a.p : a.c->pool, false);
            break;
        case PA_WAIT_TIMEOUT:
            pool_client_fail(a.c, a.p ? a.p : a.c->pool, true);
            break;
        case PA_QUERY_TIMEOUT:
            pool_ops_table.fail(a.c, SQLSTATE_QUERY_CANCELED, "query_timeout");
            break;
        case PA_NOTICE:
            if (a.c->state == CL_WAITING)
                pool_ops_table.notice(a.c, a.why);
            break;
        case PA_FREE_CLIENT:
            pool_ops_table.free_client(a.c);
            break;
        case PA_FREE_SERVER:
            pool_ops_table.free_server(a.sv);
            break;
        case PA_KICK:
            worker_kick(a.w);
            break;
        case PA_PROBE:
            pool_ops_table.probe_server(a.sv);
            break;
        case PA_LOOKUP:
            pool_ops_table.lookup_server(a.sv);
            break;
        case PA_REROUTE:
            if (a.c->state == CL_IDLE)
                pool_ops_table.reroute(a.c);
            break;
        }
    }
    tl_actions.head = tl_actions.n = 0;
    tl_actions.running = false;
}

/* Leaves the lock and runs what was decided under it. */
void pool_unlock_run(void)
{
    pool_unlock();
    pool_run_actions();
}

struct worker *pool_self(void)
{
    struct worker *w = worker_current();
    return w ? w : &g_pooler.workers[0];
}

/* ---- states and lists (pool lock) ---------------------------------------- */

/* SVL_OPENING: on the busy list, and counted in n_opening too (connect and
 * login), which bounds how many a pool opens at once. */
enum server_list { SVL_NONE = 0, SVL_IDLE, SVL_ACTIVE, SVL_BUSY, SVL_OPENING };

/* The pool list a server in each state is on. */
const uint8_t pool_server_list_of[SV_CLOSED + 1] = {
    [SV_CONNECTING] = SVL_OPENING, [SV_LOGIN] = SVL_OPENING, [SV_IDLE] = SVL_IDLE,
    [SV_ASSIGNED] = SVL_ACTIVE,    [SV_TESTING] = SVL_BUSY,  [SV_RESETTING] = SVL_BUSY,
    [SV_SETTING] = SVL_ACTIVE,     [SV_ACTIVE] = SVL_ACTIVE, [SV_CANCEL_WAIT] = SVL_BUSY,
    [SV_CLOSING] = SVL_BUSY,       [SV_CLOSED] = SVL_NONE,
};

/* The states each state may move to (a bit per state); any but CLOSED may
 * also be closed. */
#define ST(s)  (1u << (s))
#define ENDS_S (ST(SV_CLOSING) | ST(SV_CLOSED))
const uint16_t pool_server_next[SV_CLOSED + 1] = {
    [SV_CONNECTING] = ST(SV_LOGIN) | ENDS_S,
    [SV_LOGIN] = ST(SV_IDLE) | ST(SV_ACTIVE) | ENDS_S, /* ACTIVE: held (LISTEN) */
    [SV_IDLE] = ST(SV_ASSIGNED) | ST(SV_TESTING) | ENDS_S,
    [SV_ASSIGNED] = ST(SV_IDLE) | ST(SV_TESTING) | ST(SV_SETTING) | ST(SV_ACTIVE) | ENDS_S,
    [SV_TESTING] = ST(SV_IDLE) | ENDS_S,
    [SV_RESETTING] = ST(SV_IDLE) | ENDS_S,
    [SV_SETTING] = ST(SV_ACTIVE) | ENDS_S,
    [SV_ACTIVE] = ST(SV_IDLE) | ST(SV_RESETTING) | ST(SV_CANCEL_WAIT) | ENDS_S,
    [SV_CANCEL_WAIT] = ST(SV_IDLE) | ENDS_S,
    [SV_CLOSING] = ST(SV_CLOSED),
    [SV_CLOSED] = 0,
};

#define ENDS_C (ST(CL_CLOSED))
const uint16_t pool_client_next[CL_CLOSED + 1] = {
    [CL_STARTUP] = ST(CL_AUTH) | ST(CL_AUTH_WAIT) | ST(CL_LOGIN_WAIT) | ST(CL_IDLE) | ENDS_C,
    [CL_AUTH] = ST(CL_LOGIN_WAIT) | ST(CL_IDLE) | ENDS_C,
    [CL_AUTH_WAIT] = ST(CL_ASSIGNED) | ST(CL_CLOSING) | ENDS_C,
    [CL_AUTH_QUERY] = ST(CL_AUTH) | ST(CL_LOGIN_WAIT) | ST(CL_IDLE) | ENDS_C,
    [CL_LOGIN_WAIT] = ST(CL_IDLE) | ST(CL_CLOSING) | ENDS_C,
    [CL_IDLE] = ST(CL_WAITING) | ST(CL_ASSIGNED) | ENDS_C,
    [CL_WAITING] = ST(CL_ASSIGNED) | ST(CL_IDLE) | ST(CL_CLOSING) | ENDS_C,
    [CL_ASSIGNED] = ST(CL_WAITING) | ST(CL_AUTH_WAIT) | ST(CL_AUTH_QUERY) | ST(CL_ACTIVE) | ENDS_C,
    [CL_ACTIVE] = ST(CL_IDLE) | ENDS_C,
    [CL_CLOSING] = ENDS_C,
    [CL_CLOSED] = 0,
};

/* A transition the state machine does not have: a bug. Logged; builds for
 * tests (-DSLUICE_STRICT) stop on it. */
static void state_bug(char kind, const void *obj, const char *from, const char *to)
{
    log_error("%c-%p: state %s -> %s is not one it can make", kind, obj, from, to);
#ifdef SLUICE_STRICT
    abort();
#endif
}

/* The load of p's endpoint for the router's least_outstanding balance
 * (replicas.c): servers lent and clients waiting, over all its pools. Kept
 * only for databases with replicas. */
static inline void ep_load(struct pool *p, int delta)
{
    if (p->db->n_endpoints > 1)
        atomic_fetch_add_explicit(&p->db->endpoints[p->ep].outstanding, delta,
                                  memory_order_relaxed);
}

/* Moves sv onto list kind of its pool. Idle servers are taken from the head
 * of the idle list. They go back at the head (LIFO: the most recently used
 * server is the warmest, and the fewest servers carry the load), or with
 * server_round_robin at the tail, so that every server takes its turn (for
 * a round-robin system behind the address, as in PgBouncer). */
static void sv_list(struct server *sv, enum server_list kind)
{
    struct pool *p = sv->pool;
    switch ((enum server_list)sv->list_kind) {
    case SVL_IDLE:
        p->n_idle--;
        break;
    case SVL_ACTIVE:
        p->n_active--;
        ep_load(p, -1);
        break;
    case SVL_OPENING:
        p->n_opening--;
        /* fall through */
    case SVL_BUSY:
        p->n_busy--;
        break;
    case SVL_NONE:
        break;
    }
    list_del(&sv->node);
    sv->list_kind = (uint8_t)kind;
    switch (kind) {
    case SVL_IDLE:
        p->n_idle++;
        if (g_pooler.cfg->server_round_robin)
            list_add_tail(&p->idle, &sv->node);
        else
            list_add_head(&p->idle, &sv->node);
        break;
    case SVL_ACTIVE:
        p->n_active++;
        ep_load(p, 1);
        list_add_tail(&p->active, &sv->node);
        break;
    case SVL_OPENING:
        p->n_opening++;
        /* fall through */
    case SVL_BUSY:
        p->n_busy++;
        list_add_tail(&p->busy, &sv->node);
        break;
    case SVL_NONE:
        break;
    }
}

#define CL_LISTED POOL_CLIENT_LISTED

static inline void check_server_move(const struct server *sv, enum server_state from,
                                     enum server_state st)
{
    if (__builtin_expect(!(pool_server_next[from] & ST(st)), 0))
        state_bug('S', sv, server_state_str(from), server_state_str(st));
}

static inline void check_client_move(const struct client *c, enum client_state from,
                                     enum client_state st)
{
    if (__builtin_expect(!(pool_client_next[from] & ST(st)), 0))
        state_bug('C', c, client_state_str(from), client_state_str(st));
}

/* server_set_state() with the pool lock held. */
void pool_sv_state_locked(struct server *sv, enum server_state st)
{
    enum server_state from = server_state_of(sv);
    if (from == st)
        return;
    check_server_move(sv, from, st);
    atomic_store_explicit(&sv->state, st, memory_order_relaxed);
    if (pool_server_list_of[st] != sv->list_kind)
        sv_list(sv, (enum server_list)pool_server_list_of[st]);
}

void server_set_state_slow(struct server *sv, enum server_state st)
{
    enum server_state from = server_state_of(sv);
    if (pool_server_list_of[st] == pool_server_list_of[from]) {
        check_server_move(sv, from, st); /* it is not one it can make */
        atomic_store_explicit(&sv->state, st, memory_order_relaxed);
        return;
    }
    pool_lock();
    pool_sv_state_locked(sv, st);
    pool_unlock();
}

/* client_set_state() with the pool lock held; head: back at the head of the
 * waiting list (the client keeps its place). */
void pool_cl_state_locked(struct client *c, enum client_state st, bool head)
{
    enum client_state from = client_state_of(c);
    if (from == st)
        return;
    check_client_move(c, from, st);
    if (ST(from) & CL_LISTED) {
        list_del(&c->wait_node);
        if (from != CL_LOGIN_WAIT) {
            c->wait_pool->n_waiting--;
            ep_load(c->wait_pool, -1);
        }
    }
    atomic_store_explicit(&c->state, st, memory_order_relaxed);
    if (st == CL_LOGIN_WAIT) {
        list_add_tail(&c->pool->login_wait, &c->wait_node);
    } else if (ST(st) & CL_LISTED) {
        if (head)
            list_add_head(&c->wait_pool->waiting, &c->wait_node);
        else
            list_add_tail(&c->wait_pool->waiting, &c->wait_node);
        c->wait_pool->n_waiting++;
        ep_load(c->wait_pool, 1);
    } else {
        c->wait_pool = NULL;
    }
}

void client_set_state_slow(struct client *c, enum client_state st)
{
    enum client_state from = client_state_of(c);
    if (!((ST(from) | ST(st)) & CL_LISTED)) {
        check_client_move(c, from, st); /* it is not one it can make */
        atomic_store_explicit(&c->state, st, memory_order_relaxed);
        return;
    }
    pool_lock();
    pool_cl_state_locked(c, st, false);
    pool_unlock();
}

/* ---- dispatch ------------------------------------------------------------ */

/* May p open one more server connection now, as far as p itself goes
 * (the limits shared with other pools aside)? */
static bool pool_may_open_own(struct pool *p, int64_t now, bool allow_reserve)
{
    if (g_pooler.shutting_down && list_empty(&p->waiting) && list_empty(&p->login_wait))
        return false;
    /* Several hosts and none known to be the primary: nowhere to go. */
    if (p->ep == 0 && p->db->n_hosts > 0 && replicas_no_primary(p->db, g_pooler.cfg))
        return false;
    if (p->last_connect_failed && now - p->last_connect_failed < p->retry_delay)
        return false;
    int total = pool_total(p);
    int size = pool_size_of(p);
    if (total >= size) {
        if (!allow_reserve || total >= size + pool_reserve_of(p))
            return false;
    }
    return true;
}

/* Is p's database at max_db_connections (db) or its user at
 * max_user_connections (!db)? */
static bool pool_limit_hit(const struct pool *p, bool db)
{
    if (db) {
        int dbmax = pool_db_max_connections(p->db);
        return dbmax > 0 && p->db->n_servers >= dbmax;
    }
    int umax = pool_user_max_connections(p->user);
    return umax > 0 && p->user->n_servers >= umax;
}

/* May p open one more server connection now? */
bool pool_may_open(struct pool *p, int64_t now, bool allow_reserve)
{
    return pool_may_open_own(p, now, allow_reserve) && !pool_limit_hit(p, true) &&
           !pool_limit_hit(p, false);
}

/* Counts a new server of p on worker w (lock held); its connect starts
 * after the lock is let go. */
struct server *pool_new_server(struct pool *p, struct worker *w, int64_t now)
{
    struct server *sv = pool_ops_table.new_server(p, w, now);
    sv->owner = w;
    sv->id = __atomic_add_fetch(&g_pooler.next_server_id, 1, __ATOMIC_RELAXED);
    list_init(&sv->node);
    sv_list(sv, SVL_OPENING); /* where SV_CONNECTING is */
    p->db->n_servers++;
    p->user->n_servers++;
    p->last_connect_attempt = now;
    pool_act(PA_CONNECT, sv, NULL, NULL, NULL);
    return sv;
}

static void pool_launch(struct pool *p, int64_t now, bool allow_reserve)
{
    if (!pool_may_open(p, now, allow_reserve)) {
        pool_evict_locked(p, now, allow_reserve);
        return;
    }
    if (pool_total(p) >= pool_size_of(p)) {
        p->n_reserve_used++;
        log_info("taking connection from reserve_pool: %s/%s", p->db->name, p->user->name);
    }
    pool_new_server(p, pool_self(), now);
}

/* The least recently used idle server of another pool than p whose
 * database (db) or user (!db) is p's, that this thread may close or mark. */
static struct server *pool_evictable(const struct pool *p, bool db)
{
    struct server *best = NULL;
    struct list *it, *tmp;
    list_for_each_safe(it, tmp, &g_pooler.pools)
    {
        struct pool *o = list_entry(it, struct pool, node);
        if (o == p || (db ? o->db != p->db : o->user != p->user))
            continue;
        struct list *sit, *stmp;
        list_for_each_safe(sit, stmp, &o->idle)
        {
            struct server *sv = list_entry(sit, struct server, node);
            if (!sv->evicted && (!best || sv->last_used < best->last_used))
                best = sv;
        }
    }
    return best;
}

void pool_evict_locked(struct pool *p, int64_t now, bool allow_reserve)
{
    if (!pool_may_open_own(p, now, allow_reserve))
        return;
    for (int db = 1; db >= 0; db--) {
        if (!pool_limit_hit(p, db))
            continue;
        if ((db ? p->db->n_evicting : p->user->n_evicting) > 0)
            return; /* room is on its way */
        struct server *sv = pool_evictable(p, db);
        if (!sv)
            return;
        sv->evicted = true;
        sv->close_needed = true; /* if its own pool lends it first */
        sv->pool->db->n_evicting++;
        sv->pool->user->n_evicting++;
        if (worker_can_touch(sv->owner))
            pool_close_locked(sv, "evicted");
        else
            pool_act(PA_KICK, NULL, NULL, sv->owner, NULL); /* its janitor closes it */
        return; /* the other limit, if hit too, when this one has room */
    }
}

void pool_dispatch_evicted_locked(const struct server *sv, int64_t now)
{
    struct list *it, *tmp;
    list_for_each_safe(it, tmp, &g_pooler.pools)
    {
        struct pool *o = list_entry(it, struct pool, node);
        if ((o->db == sv->pool->db || o->user == sv->pool->user) && !list_empty(&o->waiting))
            pool_dispatch_locked(o, now);
    }
}

static bool server_needs_check(const struct server *sv, int64_t now)
{
    const struct config *cfg = g_pooler.cfg;
    /* Idle longer than server_check_delay since it last answered (a client,
     * a check, or its login: a brand-new connection used at once has just
     * proved itself), as PgBouncer does; one warm from min_pool_size that
     * waited longer is checked too. */
    if (!cfg->server_check_query[0])
        return false;
    /* last_used == now: the check just passed (or the server just answered
     * its last client); checking again would loop forever with delay 0. */
    return now - sv->last_used >= cfg->server_check_delay && now != sv->last_used;
}

/* The idle server to give a client of worker w: the warmest one on w (no
 * move between threads), else the warmest of all. With server_round_robin
 * the one whose turn it is, wherever it is: taking turns is the point. */
static struct server *pool_pick_idle(struct pool *p, const struct worker *w)
{
    struct list *first = list_first(&p->idle);
    if (!first || g_pooler.n_workers == 1 || g_pooler.cfg->server_round_robin)
        return first ? list_entry(first, struct server, node) : NULL;
    struct list *it, *tmp;
    list_for_each_safe(it, tmp, &p->idle)
    {
        struct server *sv = list_entry(it, struct server, node);
        if (sv->owner == w)
            return sv;
    }
    return list_entry(first, struct server, node);
}

static void pool_assign_locked(struct server *sv, struct client *c, int64_t now);

/* How far down the waiting list pool_pick_waiter() looks. */
#define POOL_LOCAL_SCAN 64

/* The client to give idle server sv: the first waiter, or a waiter of sv's
 * own worker that came at most worker_affinity_window after it (lock held).
 * Serving a client on the server's own loop saves a move between threads
 * (two wakeups and about three system calls); older waiters win beyond the
 * window, so servers follow the load and no client waits long behind a
 * server that is idle elsewhere. */
static struct client *pool_pick_waiter(struct pool *p, const struct server *sv)
{
    struct client *first = list_entry(list_first(&p->waiting), struct client, wait_node);
    if (first->s.worker == sv->owner || g_pooler.n_workers == 1)
        return first;
    int n = 0;
    struct list *it, *tmp;
    list_for_each_safe(it, tmp, &p->waiting)
    {
        struct client *c = list_entry(it, struct client, wait_node);
        if (c->request_time - first->request_time > g_pooler.cfg->worker_affinity_window ||
            ++n > POOL_LOCAL_SCAN)
            break;
        if (c->s.worker == sv->owner)
            return c;
    }
    return first;
}

/* Lends idle server sv to client c (lock held): at once if both are on this
 * thread's worker, else sv->handoff and c->incoming hold the pair until the
 * server reaches the client's worker (pool_assign_run()). */
static void pool_pair_locked(struct server *sv, struct client *c, int64_t now)
{
    pool_cl_state_locked(c, CL_ASSIGNED, false);
    pool_sv_state_locked(sv, SV_ASSIGNED);
    c->fail_pending = false; /* served after all */
    if (sv->owner == c->s.worker && worker_can_touch(sv->owner)) {
        pool_assign_locked(sv, c, now); /* no move: at once */
        return;
    }
    sv->handoff = c;
    c->incoming = sv;
    pool_act(PA_ASSIGN, sv, NULL, NULL, NULL);
}

/* How many servers a pool connects and logs in at once. PostgreSQL forks a
 * backend for each login, which takes a core for milliseconds: clients of
 * one pool opening all its servers together starve everyone on the box, the
 * clients of other pools too. Each login that ends serves a waiting client
 * and starts the next (pool_server_ready(), server_close()); PgBouncer opens
 * one at a time. */
#define POOL_OPENING_MAX 1

/* Pairs waiting clients with idle servers, first come first served (see
 * pool_pick_waiter() and pool_pair_locked()), and opens servers for the
 * rest (lock held). */
void pool_dispatch_locked(struct pool *p, int64_t now)
{
    if (g_pooler.paused || p->db->paused)
        return;
    while (!list_empty(&p->waiting)) {
        struct client *first = list_entry(list_first(&p->waiting), struct client, wait_node);
        struct server *sv = pool_pick_idle(p, first->s.worker);
        if (sv) {
            pool_pair_locked(sv, pool_pick_waiter(p, sv), now);
            continue;
        }
        /* No idle server: open more, one per waiting client not already
         * covered by a connection in progress, POOL_OPENING_MAX at a time. */
        bool reserve = g_pooler.cfg->reserve_pool_timeout >= 0 && pool_reserve_of(p) > 0 &&
                       now - first->request_time >= g_pooler.cfg->reserve_pool_timeout;
        if (p->n_busy < p->n_waiting && p->n_opening < POOL_OPENING_MAX)
            pool_launch(p, now, reserve);
        break;
    }
    if (!p->welcome_ready && !list_empty(&p->login_wait) && p->n_busy == 0 && p->n_idle == 0 &&
        p->n_active == 0)
        pool_launch(p, now, false);
}

void pool_dispatch(struct pool *p)
{
    pool_lock();
    pool_dispatch_locked(p, worker_now(pool_self()));
    pool_unlock_run();
}

/* Puts c back at the head of p's waiting list (its server could not be
 * used); it keeps its place and its request time. */
static void pool_requeue_locked(struct client *c, struct pool *p)
{
    c->wait_pool = p;
    pool_cl_state_locked(c, c->auth ? CL_AUTH_WAIT : CL_WAITING, true);
}

/* The pool decided to close sv: it leaves the list it was picked from (no
 * one else takes it) until the close runs, right after the lock. */
void pool_close_locked(struct server *sv, const char *why)
{
    pool_sv_state_locked(sv, SV_CLOSING);
    pool_act(PA_CLOSE, sv, NULL, NULL, why);
}

/* sv was picked for c and both are on this thread's worker (lock held):
 * checks sv and queues the link, or puts c back at the head of the queue.
 * sv is on the active list. */
static void pool_assign_locked(struct server *sv, struct client *c, int64_t now)
{
    struct pool *p = sv->pool;
    bool link = false;
    if (sv->state == SV_CLOSED) {
        /* Closed on the way (admin command, shutdown): off every list. */
        pool_act(PA_FREE_SERVER, sv, NULL, NULL, NULL);
    } else if (!sv->s.reading || sv->s.closed || (sv->s.rbuf && iobuf_len(sv->s.rbuf))) {
        /* Its old worker saw it speak or hang up while it was on the way. */
        pool_close_locked(sv, "server closed the connection while idle");
    } else if (sv->close_needed || !p->db->cfg) {
        pool_close_locked(sv, "close needed");
    } else if (pool_off_target(sv)) {
        pool_close_locked(sv, "its host is not the primary any more");
    } else if (pool_server_too_old(sv, now)) {
        pool_close_locked(sv, "server lifetime over");
    } else if (c->state == CL_CLOSED) {
        pool_sv_state_locked(sv, SV_IDLE);
    } else if (server_needs_check(sv, now)) {
        pool_sv_state_locked(sv, SV_TESTING);
        pool_act(PA_TEST, sv, NULL, NULL, NULL);
    } else {
        struct worker *w = c->s.worker;
        link = true;
        sv->lent = true;
        p->assign_count++;
        int64_t waited = now - c->request_time;
        if (waited < 0)
            waited = 0;
        p->wait_time += (uint64_t)waited;
        w->stats.wait_time += (uint64_t)waited;
        w->stats.wait_count++;
        stats_hist_observe(&w->hist_wait, waited);
        pool_act(PA_LINK, sv, c, NULL, NULL);
    }
    if (c->state == CL_CLOSED) {
        if (c->free_deferred)
            pool_act(PA_FREE_CLIENT, NULL, c, NULL, NULL);
    } else if (!link) {
        pool_requeue_locked(c, p);
    }
}

/* The server picked for a client has reached the client's worker (this
 * thread): check it and lend it, or put both back. */
static void pool_assign_finish(struct server *sv, struct client *c)
{
    int64_t now = worker_now(c->s.worker);
    pool_lock();
    sv->handoff = NULL;
    c->incoming = NULL;
    pool_assign_locked(sv, c, now);
    pool_dispatch_locked(sv->pool, now);
    pool_unlock_run();
}

/* Takes sv out of its owner's loop and makes cw its owner; the caller may
 * touch the old loop (its thread, or the world lock). stream_attach() on
 * cw's thread puts it in cw's loop. */
static void pool_move_server(struct server *sv, struct worker *cw)
{
    if (sv->state != SV_CLOSED)
        stream_detach(&sv->s);
    sv->s.worker = cw;
    pool_lock();
    sv->owner = cw;
    pool_unlock();
}

/* Moves a picked server toward its client: its owner lets it go (at the
 * end of the owner's loop iteration, as callers up the stack may still be
 * looking at it), the client's worker takes it into its loop and lends it. */
static void pool_assign_run(struct server *sv)
{
    pool_lock();
    struct client *c = sv->handoff;
    struct worker *owner = sv->owner;
    pool_unlock();
    struct worker *cw = c->s.worker;
    if (!worker_can_touch(owner)) {
        worker_post(owner, &sv->inbox_node);
        return;
    }
    if (owner != cw) {
        if (!worker_can_touch(cw)) {
            worker_send_later(owner, &sv->inbox_node);
            return;
        }
        pool_move_server(sv, cw); /* both loops are ours (world lock) */
    }
    if (sv->state != SV_CLOSED && !ev_is_active(&sv->s.io) && sv->s.reading)
        stream_attach(&sv->s); /* it has just left its old loop */
    pool_assign_finish(sv, c);
}

void pool_outgoing_item(struct list *item)
{
    struct server *sv = list_entry(item, struct server, inbox_node);
    pool_lock();
    struct worker *cw = sv->handoff->s.worker;
    pool_unlock();
    pool_move_server(sv, cw);
    worker_post(cw, &sv->inbox_node);
}

void pool_inbox_item(struct list *item)
{
    pool_assign_run(list_entry(item, struct server, inbox_node));
}

bool pool_client_login(struct client *c)
{
    struct pool *p = c->pool;
    pool_lock();
    if (p->welcome_ready) {
        pool_unlock();
        return true;
    }
    c->request_time = worker_now(c->s.worker);
    pool_cl_state_locked(c, CL_LOGIN_WAIT, false);
    pool_dispatch_locked(p, c->request_time);
    pool_unlock_run();
    return false;
}

void pool_client_wait(struct client *c, struct pool *p, enum client_state st)
{
    int64_t now = c->request_time = worker_now(c->s.worker);
    pool_lock();
    c->wait_pool = p;
    c->wait_notified = false;
    /* Nobody ahead of it and a server idle: no need to queue it first. */
    struct server *sv;
    if (st == CL_WAITING && list_empty(&p->waiting) && !g_pooler.paused && !p->db->paused &&
        (sv = pool_pick_idle(p, c->s.worker))) {
        pool_pair_locked(sv, c, now);
        pool_unlock_run();
        return;
    }
    pool_cl_state_locked(c, st, false);
    pool_dispatch_locked(p, now);
    pool_unlock_run();
}

bool pool_client_defer_free(struct client *c)
{
    pool_lock();
    bool defer = c->incoming != NULL;
    c->free_deferred = defer;
    pool_unlock();
    return defer;
}

void pool_release_server(struct server *sv)
{
    struct pool *p = sv->pool;
    int64_t now = worker_now(sv->s.worker);
    const struct config *cfg = g_pooler.cfg;
    pool_lock();
    struct client *c = sv->client;
    bool session_end = !c || c->state == CL_CLOSED;
    if (c) {
        c->server = NULL;
        sv->client = NULL;
    }
    uint8_t rescue = session_end ? sv->rescue : SR_NONE; /* set by client_detach() */
    sv->rescue = SR_NONE;
    bool reset_query =
        cfg->server_reset_query[0] &&
        ((session_end && pool_mode_of(p) == POOL_MODE_SESSION) || cfg->server_reset_query_always);
    sv->s.blocked_src = NULL;
    if (sv->replication) {
        /* A walsender serves its one client: never pooled (PgBouncer's
         * rule), its client is closing. */
        if (sv->held && sv->list_kind == SVL_ACTIVE)
            p->n_held--;
        sv->held = false;
        if (sv->state != SV_CLOSING && sv->state != SV_CLOSED)
            pool_close_locked(sv, "replication client disconnected");
        pool_unlock_run();
        return;
    }
    if (sv->cancels_in_flight > 0) {
        /* A cancel sent for this server's last query may still arrive;
         * reusing the server now could cancel another client's query. */
        pool_sv_state_locked(sv, SV_CANCEL_WAIT);
    } else if (sv->close_why) {
        pool_close_locked(sv, sv->close_why);
    } else if (!server_is_clean(sv) && !rescue) {
        pool_close_locked(sv, "client disconnect while server was not ready");
    } else if (c && c->s.skip) {
        /* It has the start of a message whose rest will never come: it
         * would read the next client's bytes as that rest. */
        pool_close_locked(sv, "client disconnect in the middle of a message");
    } else if (sv->close_needed || !p->db->cfg) {
        pool_close_locked(sv, "database configuration changed");
    } else if (pool_off_target(sv)) {
        pool_close_locked(sv, "its host is not the primary any more");
    } else if (pool_server_too_old(sv, now)) {
        pool_close_locked(sv, "server lifetime over");
    } else if (rescue || reset_query) {
        /* server_reset() rolls back what the client left, then runs
         * server_reset_query if it applies. */
        sv->rescue = rescue | (reset_query ? SR_RESET : SR_NONE);
        pool_sv_state_locked(sv, SV_RESETTING);
        pool_act(PA_RESET, sv, NULL, NULL, NULL);
    } else {
        sv->last_used = now;
        pool_sv_state_locked(sv, SV_IDLE);
    }
    if (c && c->state != CL_CLOSED)
        pool_act(PA_UNLINKED, NULL, c, NULL, NULL);
    pool_dispatch_locked(p, now);
    pool_unlock_run();
}

/* Hands the login waiters of p to their workers: this thread's are
 * welcomed, the others' workers are asked to (lock held). */
static void pool_welcome_locked(struct pool *p, struct worker *self)
{
    struct list *it, *tmp;
    list_for_each_safe(it, tmp, &p->login_wait)
    {
        struct client *c = list_entry(it, struct client, wait_node);
        if (worker_can_touch(c->s.worker)) {
            pool_cl_state_locked(c, CL_IDLE, false); /* the welcome goes out next */
            pool_act(PA_WELCOME, NULL, c, NULL, NULL);
        } else if (c->s.worker != self) {
            pool_act(PA_KICK, NULL, NULL, c->s.worker, NULL);
        }
    }
}

void pool_server_ready(struct server *sv)
{
    struct pool *p = sv->pool;
    struct worker *w = sv->s.worker;
    pool_lock();
    if (sv->close_needed || !p->db->cfg || (g_pooler.shutting_down && list_empty(&p->waiting)) ||
        pool_off_target(sv)) {
        pool_unlock();
        pool_ops_table.close_server(sv, pool_off_target(sv) ? "its host is not the primary any more"
                                        : sv->close_why     ? sv->close_why
                                                            : "close needed");
        return;
    }
    if (sv->state == SV_LOGIN) {
        p->last_connect_failed = 0;
        p->retry_delay = 0;
    }
    sv->last_used = worker_now(w);
    /* A host's check that is due runs at once (the janitor would run it
     * within a quarter of a second): a connection opened for it, or the
     * first one, finds the primary sooner. */
    if (p->db->endpoints[p->ep].role == EP_HOST && !g_pooler.shutting_down &&
        replicas_discovers(p->db, g_pooler.cfg) &&
        replicas_check_claim(p->db, p->ep, g_pooler.cfg, sv->last_used)) {
        pool_sv_state_locked(sv, SV_IDLE); /* from login: idle, then taken */
        pool_sv_state_locked(sv, SV_TESTING);
        pool_act(PA_PROBE, sv, NULL, NULL, NULL);
        pool_unlock_run();
        return;
    }
    pool_sv_state_locked(sv, SV_IDLE);
    /* The pool knows the server's parameters now: welcome waiting logins. */
    if (p->welcome_ready)
        pool_welcome_locked(p, w);
    pool_dispatch_locked(p, sv->last_used);
    pool_unlock_run();
}

bool pool_server_gone(struct server *sv)
{
    struct pool *p = sv->pool;
    pool_lock();
    struct client *c = sv->client;
    if (c) {
        c->server = NULL;
        sv->client = NULL;
    }
    if (sv->held && sv->list_kind == SVL_ACTIVE)
        p->n_held--;
    pool_sv_state_locked(sv, SV_CLOSED);
    p->db->n_servers--;
    p->user->n_servers--;
    bool moving = sv->handoff != NULL;
    if (!sv->evicted) {
        pool_unlock();
        return moving;
    }
    /* The room it was closed for: the pools waiting for it go on (their
     * actions run after the caller's, if it runs them). */
    p->db->n_evicting--;
    p->user->n_evicting--;
    pool_dispatch_evicted_locked(sv, worker_now(pool_self()));
    pool_unlock_run();
    return moving;
}

bool pool_server_moving(struct server *sv)
{
    pool_lock();
    bool moving = sv->handoff != NULL;
    pool_unlock();
    return moving;
}

/* Clients waiting for p, a replica's pool, go back to be routed again
 * (lock held): those of this thread's worker now, the others' at their
 * worker's next janitor pass (pool_janitor_pool()). */
static void pool_reroute_waiters_locked(struct pool *p)
{
    struct list *it, *tmp;
    list_for_each_safe(it, tmp, &p->waiting)
    {
        struct client *c = list_entry(it, struct client, wait_node);
        if (client_state_of(c) != CL_WAITING)
            continue; /* auth_query: it needs this pool's servers */
        if (worker_can_touch(c->s.worker)) {
            pool_cl_state_locked(c, CL_IDLE, false);
            pool_act(PA_REROUTE, NULL, c, NULL, NULL);
        } else {
            pool_act(PA_KICK, NULL, NULL, c->s.worker, NULL);
        }
    }
}

/* pool_connect_failed() with the lock held. */
void pool_connect_failed_locked(struct pool *p, const char *why, bool fatal_for_clients,
                                int64_t now)
{
    p->last_connect_failed = now ? now : 1;
    snprintf(p->last_connect_error, sizeof(p->last_connect_error), "%s", why);
    /* Capped exponential backoff (0.1 s, 0.2 s, ... server_login_retry): a
     * cold or restarting upstream is used soon after it comes up. */
    p->retry_delay = p->retry_delay ? p->retry_delay * 2 : 100000;
    if (p->retry_delay > g_pooler.cfg->server_login_retry)
        p->retry_delay = g_pooler.cfg->server_login_retry;
    /* A host of several is tried again at its next check at the latest: a
     * primary that restarts is found again that soon. */
    if (p->db->cfg && p->db->endpoints[p->ep].role == EP_HOST &&
        p->retry_delay > g_pooler.cfg->replica_check_interval)
        p->retry_delay = g_pooler.cfg->replica_check_interval;
    if (p->db->cfg)
        dns_mark_failed(p->db->endpoints[p->ep].host); /* next address, or resolve anew */
    if (p->db->cfg && replicas_role_checked(p->db->endpoints[p->ep].role)) {
        /* Reads go elsewhere meanwhile, whatever the error. */
        replicas_ban(p->db, p->ep, RB_CONNECT, why, g_pooler.cfg, now);
        pool_reroute_waiters_locked(p);
        return;
    }
    if (!fatal_for_clients)
        return;
    /* Errors that a retry cannot fix (bad password, no such database) go to
     * the clients waiting for this pool, as PostgreSQL would say them. */
    struct list *lists[] = {&p->login_wait, &p->waiting};
    for (int k = 0; k < 2; k++) {
        struct list *it, *tmp;
        list_for_each_safe(it, tmp, lists[k])
        {
            struct client *c = list_entry(it, struct client, wait_node);
            c->fail_pending = true;
            if (worker_can_touch(c->s.worker)) {
                pool_cl_state_locked(c, CL_CLOSING, false);
                pool_act_client(PA_FAIL, c, p);
            } else {
                pool_act(PA_KICK, NULL, NULL, c->s.worker, NULL);
            }
        }
    }
}

void pool_connect_failed(struct pool *p, const char *why, bool fatal_for_clients)
{
    pool_lock();
    pool_connect_failed_locked(p, why, fatal_for_clients, worker_now(pool_self()));
    pool_unlock_run();
}

/* Closes c with p's error (login failure, or query_wait_timeout); p is
 * the pool c waited for. */
static void pool_client_fail(struct client *c, struct pool *p, bool timeout)
{
    char why[300];
    pool_lock();
    bool failing = p && p->last_connect_failed && p->last_connect_error[0];
    snprintf(why, sizeof(why), "%s", failing ? p->last_connect_error : "");
    c->fail_pending = false;
    pool_unlock();
    char msg[400];
    if (!timeout)
        snprintf(msg, sizeof(msg), "%s", why);
    else if (p && p->ep == 0 && p->db->n_hosts > 0 && replicas_no_primary(p->db, g_pooler.cfg))
        snprintf(msg, sizeof(msg),
                 "query_wait_timeout: database \"%s\" has no primary now (no host of its host= "
                 "is known to be out of recovery); sluice does not send writes to a server in "
                 "recovery",
                 p->db->name);
    else if (failing)
        snprintf(msg, sizeof(msg), "query_wait_timeout (server connection failing: %s)", why);
    else
        snprintf(msg, sizeof(msg), "query_wait_timeout");
    pool_ops_table.fail(c, SQLSTATE_CONNECTION_FAILURE, msg);
}

struct server *pool_connect_server(struct pool *p, struct worker *w,
                                   const struct server_holder_ops *holder)
{
    pool_lock();
    struct server *sv = pool_new_server(p, w, worker_now(w));
    sv->held = true;
    sv->holder = holder;
    pool_unlock_run();
    return sv->state == SV_CLOSED ? NULL : sv;
}

void pool_connect_replication(struct pool *p, struct client *c,
                              const struct server_holder_ops *holder)
{
    pool_lock();
    struct server *sv = pool_new_server(p, c->s.worker, worker_now(c->s.worker));
    sv->held = true;
    sv->holder = holder;
    sv->replication = c->replication;
    sv->client = c;
    c->server = sv;
    pool_unlock_run();
}

void pool_server_held(struct server *sv)
{
    struct pool *p = sv->pool;
    pool_lock();
    pool_sv_state_locked(sv, SV_ACTIVE);
    p->n_held++;
    p->last_connect_failed = 0;
    p->retry_delay = 0;
    /* Its login gave the pool its welcome: logins that waited for one
     * (and launched nothing, this server being in progress) go on now. */
    if (p->welcome_ready)
        pool_welcome_locked(p, sv->s.worker);
    pool_unlock_run();
}

/* Own servers of p that wait for DNS (lock held): the first one, its
 * flag cleared; NULL when none. Others' owners are asked to look. */
static struct server *pool_take_dns_waiter(struct pool *p, struct worker *self)
{
    struct list *it, *tmp;
    list_for_each_safe(it, tmp, &p->busy)
    {
        struct server *sv = list_entry(it, struct server, node);
        if (!sv->dns_wait)
            continue;
        if (sv->owner == self) {
            sv->dns_wait = false;
            return sv;
        }
        pool_act(PA_KICK, NULL, NULL, sv->owner, NULL);
    }
    return NULL;
}

static void pool_dns_done_on(struct pool *p, struct worker *self)
{
    for (;;) {
        pool_lock();
        struct server *sv = pool_take_dns_waiter(p, self);
        pool_unlock_run();
        if (!sv || !pool_ops_table.start_server(sv))
            return;
    }
}

void pool_dns_done(struct pool *p)
{
    pool_dns_done_on(p, pool_self());
}

void pool_inbox_kick(struct worker *w)
{
    struct list *pit, *ptmp;
    pool_lock();
    list_for_each_safe(pit, ptmp, &g_pooler.pools)
    {
        struct pool *p = list_entry(pit, struct pool, node);
        struct list *lists[] = {&p->login_wait, &p->waiting};
        for (int k = 0; k < 2; k++) {
            struct list *it, *tmp;
            list_for_each_safe(it, tmp, lists[k])
            {
                struct client *c = list_entry(it, struct client, wait_node);
                if (c->s.worker != w)
                    continue;
                if (c->fail_pending) {
                    pool_cl_state_locked(c, CL_CLOSING, false);
                    pool_act_client(PA_FAIL, c, p);
                } else if (k == 0 && p->welcome_ready) {
                    pool_cl_state_locked(c, CL_IDLE, false); /* the welcome goes out next */
                    pool_act(PA_WELCOME, NULL, c, NULL, NULL);
                }
            }
        }
    }
    pool_unlock_run();
    pool_lock();
    list_for_each_safe(pit, ptmp, &g_pooler.pools)
    {
        struct pool *p = list_entry(pit, struct pool, node);
        struct list *it, *tmp;
        bool dns = false;
        list_for_each_safe(it, tmp, &p->busy)
        {
            struct server *sv = list_entry(it, struct server, node);
            dns |= sv->dns_wait && sv->owner == w;
        }
        if (dns) {
            pool_unlock();
            pool_dns_done_on(p, w);
            pool_lock();
        }
    }
    pool_unlock_run();
}

struct server *pool_find_server(struct pool *p, bool (*fn)(struct server *sv, void *arg), void *arg)
{
    struct server *found = NULL;
    pool_lock();
    struct list *lists[] = {&p->active, &p->idle, &p->busy};
    for (size_t k = 0; k < sizeof(lists) / sizeof(lists[0]); k++) {
        struct list *it, *tmp;
        list_for_each_safe(it, tmp, lists[k])
        {
            struct server *sv = list_entry(it, struct server, node);
            if (!found && fn(sv, arg))
                found = sv;
        }
    }
    pool_unlock();
    return found;
}

int pool_count_active(void)
{
    int n = 0;
    struct list *it, *tmp;
    pool_lock();
    list_for_each_safe(it, tmp, &g_pooler.pools)
    {
        struct pool *p = list_entry(it, struct pool, node);
        n += p->n_active - p->n_held;
    }
    pool_unlock();
    return n;
}
