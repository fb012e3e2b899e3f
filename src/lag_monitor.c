/* lag_monitor.c - replication lag, measured from WAL positions
 * (lag_monitor.h). */
#include "lag_monitor.h"

#include <ev.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "pool.h"
#include "replicas.h"
#include "ryw.h"
#include "server.h"
#include "server_query.h"
#include "worker.h"

/* One query for every node: a primary says where its WAL is, a standby
 * where its replay is and for how long (microseconds) it has not replayed a
 * transaction. */
#define LAG_SQL                                                                                    \
    "SELECT pg_catalog.pg_is_in_recovery(), CASE WHEN pg_catalog.pg_is_in_recovery() "             \
    "THEN pg_catalog.pg_last_wal_replay_lsn() ELSE pg_catalog.pg_current_wal_lsn() END, "          \
    "COALESCE((extract(epoch FROM now() - pg_catalog.pg_last_xact_replay_timestamp()) "            \
    "* 1000000)::int8, 0), CASE WHEN NOT pg_catalog.pg_is_in_recovery() "                          \
    "THEN pg_catalog.pg_walfile_name(pg_catalog.pg_current_wal_lsn()) END"

/* The cluster's identity, for causal tokens (ryw.h): once per connection
 * to the primary. */
#define SYSID_SQL "SELECT system_identifier FROM pg_catalog.pg_control_system()"

/* A connection that failed is tried again after this long. */
#define LAG_RETRY_USEC 1000000

struct lag_db;

/* One node of a database: its own connection and its last answer. */
struct lag_node {
    struct lag_db *ld;
    int ep;
    struct server *sv;
    bool up;     /* logged in */
    bool asking; /* a query is pending */
    int64_t next_try;
    bool got, in_recovery;
    uint64_t lsn;
    int64_t age_usec;
    uint32_t timeline; /* the primary's, from its WAL file name */
};

struct lag_db {
    struct database *db;
    struct pool *pool; /* endpoint 0's pool of the user the connections log in as */
    struct lag_node node[DB_MAX_ENDPOINTS];
    int hurry_next; /* the replica the last hurry asked */
    struct lag_db *next;
};

static struct lag_db *g_dbs;
static ev_timer g_tick;
static bool g_running;
/* While reads wait for a replica to catch up (ryw.h), the replicas are
 * asked where they are (HURRY_SQL: the lag in time waits for the next
 * tick), not every lag_check_interval but one every HURRY_SEC in turn:
 * each every RYW_HURRY_USEC x replicas. A replica that was asked by a
 * ride behind a read (ryw_ride_due()) within that time is skipped: the
 * ride cost no system call, this ask a send, a read and a wakeup. 2 ms,
 * not 1: the waits it shortens last milliseconds. */
#define HURRY_SEC (RYW_HURRY_USEC / 1e6)
#define HURRY_SQL "SELECT pg_catalog.pg_last_wal_replay_lsn()"
static ev_async g_hurry_async;
static ev_timer g_hurry;

static struct worker *lag_worker(void)
{
    return &g_pooler.workers[0];
}

/* A measurement older than this says nothing: the node does not answer. */
static int64_t stale_usec(const struct config *cfg)
{
    int64_t s = 10 * cfg->lag_check_interval;
    return s > 1000000 ? s : 1000000;
}

static struct lag_node *node_of(const struct server *sv)
{
    for (struct lag_db *ld = g_dbs; ld; ld = ld->next)
        for (int i = 0; i < DB_MAX_ENDPOINTS; i++)
            if (ld->node[i].sv == sv)
                return &ld->node[i];
    return NULL;
}

/* Whether endpoint ep of db is lagging by cfg's limits (stale: no recent
 * measurement), logged when that changes. */
static void judge(struct database *db, int ep, uint64_t bytes, int64_t usec, bool stale,
                  const struct config *cfg)
{
    struct endpoint *e = &db->endpoints[ep];
    bool limited = cfg->replica_max_lag > 0 || cfg->replica_max_lag_bytes > 0;
    bool behind = (cfg->replica_max_lag > 0 && usec > cfg->replica_max_lag) ||
                  (cfg->replica_max_lag_bytes > 0 && bytes > (uint64_t)cfg->replica_max_lag_bytes);
    /* Logged when the reason changes too: not measured, then behind. */
    int why = !limited ? 0 : stale ? 1 : behind ? 2 : 0;
    bool lagging = why != 0;
    atomic_store_explicit(&e->lagging, lagging, memory_order_relaxed);
    if (atomic_exchange_explicit(&e->lag_why, why, memory_order_relaxed) == why)
        return;
    if (!lagging)
        log_info("replica %s:%d of database %s caught up: takes reads again", e->host, e->port,
                 db->name);
    else if (stale)
        log_warning("replica %s:%d of database %s: no lag measurement: no reads until there is",
                    e->host, e->port, db->name);
    else
        log_warning("replica %s:%d of database %s is lagging: %llu bytes, %lld ms behind: no "
                    "reads until it catches up",
                    e->host, e->port, db->name, (unsigned long long)bytes,
                    (long long)(usec / 1000));
}

/* What node n's answer says, now. */
static void record(struct lag_node *n, int64_t now)
{
    struct database *db = n->ld->db;
    struct endpoint *e = &db->endpoints[n->ep];
    uint64_t was = atomic_exchange_explicit(&e->lag_lsn, n->lsn, memory_order_relaxed);
    if (n->ep == 0 && n->timeline)
        atomic_store_explicit(&e->timeline, n->timeline, memory_order_relaxed);
    log_noise("lag monitor: database %s endpoint %d at %X/%X", db->name, n->ep,
              (unsigned)(n->lsn >> 32), (unsigned)n->lsn);
    uint64_t bytes = 0;
    int64_t usec = 0;
    if (n->in_recovery && n->ep != 0) {
        uint64_t primary = atomic_load_explicit(&db->endpoints[0].lag_lsn, memory_order_relaxed);
        bytes = primary > n->lsn ? primary - n->lsn : 0;
        usec = bytes ? n->age_usec : 0;
    }
    atomic_store_explicit(&e->lag_bytes, bytes, memory_order_relaxed);
    atomic_store_explicit(&e->lag_usec, usec, memory_order_relaxed);
    atomic_store_explicit(&e->lag_at, now, memory_order_relaxed);
    if (n->ep != 0) {
        judge(db, n->ep, bytes, usec, false, g_pooler.cfg);
        if (n->lsn != was) /* waiting reads look again */
            ryw_lag_moved();
    }
}

static void lag_row(struct server *sv, void *arg, const struct server_query_row *row)
{
    struct lag_node *n = arg;
    if (row->n < 3 || !row->val[0] || !row->val[1] || !row->val[2])
        return;
    n->in_recovery = row->len[0] == 1 && row->val[0][0] == 't';
    if (!replicas_parse_lsn(row->val[1], row->len[1], &n->lsn))
        return;
    char num[32];
    size_t k = row->len[2] < sizeof(num) - 1 ? row->len[2] : sizeof(num) - 1;
    memcpy(num, row->val[2], k);
    num[k] = '\0';
    n->age_usec = strtoll(num, NULL, 10);
    if (n->age_usec < 0)
        n->age_usec = 0;
    n->timeline = 0;
    if (row->n >= 4 && row->val[3] && row->len[3] >= 8) {
        memcpy(num, row->val[3], 8);
        num[8] = '\0';
        n->timeline = (uint32_t)strtoul(num, NULL, 16);
    }
    n->got = true;
}

static void lag_error(struct server *sv, void *arg, const char *sqlstate, const char *text)
{
    server_log(LOG_LVL_DEBUG, sv, "lag query failed: %s", text);
}

static void lag_done(struct server *sv, void *arg, enum server_query_status st)
{
    struct lag_node *n = arg;
    n->asking = false;
    if (st == SERVER_QUERY_GONE)
        return;
    if (n->got)
        record(n, worker_now(sv->s.worker));
    if (sv->xact_status != 'I')
        server_close(sv, "lag query left a transaction open");
}

static const struct server_query_ops lag_query_ops = {
    .on_row = lag_row, .on_error = lag_error, .on_done = lag_done};

static void ask(struct lag_node *n)
{
    n->got = false;
    if (server_query(n->sv, LAG_SQL, 0, NULL, &lag_query_ops, n))
        n->asking = true;
}

/* The answer to HURRY_SQL: the replica's replay position, for the reads
 * that wait (the rest of its measurement is the tick's). */
static void hurry_row(struct server *sv, void *arg, const struct server_query_row *row)
{
    struct lag_node *n = arg;
    uint64_t lsn;
    if (row->n < 1 || !row->val[0] || !replicas_parse_lsn(row->val[0], row->len[0], &lsn))
        return;
    struct endpoint *e = &n->ld->db->endpoints[n->ep];
    uint64_t was = atomic_load_explicit(&e->lag_lsn, memory_order_relaxed);
    if (lsn > was) {
        atomic_store_explicit(&e->lag_lsn, lsn, memory_order_relaxed);
        ryw_lag_moved();
    }
}

static const struct server_query_ops hurry_query_ops = {
    .on_row = hurry_row, .on_error = lag_error, .on_done = lag_done};

static void ask_hurry(struct lag_node *n)
{
    n->got = false; /* lag_done() records nothing */
    if (server_query(n->sv, HURRY_SQL, 0, NULL, &hurry_query_ops, n))
        n->asking = true;
}

/* ---- the connections -------------------------------------------------------- */

static const struct server_holder_ops lag_holder;

static void connect_node(struct lag_node *n, int64_t now)
{
    n->next_try = now + LAG_RETRY_USEC;
    struct pool *p = n->ep == 0 ? n->ld->pool : pool_of_endpoint(n->ld->pool, n->ep);
    if (!p)
        return;
    n->sv = pool_connect_server(p, lag_worker(), &lag_holder);
    n->up = n->asking = false;
}

static void close_node(struct lag_node *n, const char *why)
{
    if (n->sv)
        server_close(n->sv, why); /* lag_server_closed() forgets it */
}

static void sysid_row(struct server *sv, void *arg, const struct server_query_row *row)
{
    struct lag_node *n = arg;
    if (row->n < 1 || !row->val[0] || row->len[0] >= 24)
        return;
    char num[24];
    memcpy(num, row->val[0], row->len[0]);
    num[row->len[0]] = '\0';
    uint64_t id = strtoull(num, NULL, 10);
    struct endpoint *e = &n->ld->db->endpoints[0];
    uint64_t was = atomic_exchange_explicit(&e->sysid, id, memory_order_relaxed);
    if (was && was != id)
        log_warning("database %s: the primary is another cluster now (system identifier %llu, "
                    "was %llu)",
                    n->ld->db->name, (unsigned long long)id, (unsigned long long)was);
}

static void sysid_error(struct server *sv, void *arg, const char *sqlstate, const char *text)
{
    server_log(LOG_LVL_WARNING, sv,
               "could not read the system identifier (causal tokens name no cluster): %s", text);
}

static const struct server_query_ops sysid_ops = {.on_row = sysid_row, .on_error = sysid_error};

static void lag_server_ready(struct server *sv)
{
    struct lag_node *n = node_of(sv);
    if (!n) {
        server_close(sv, "lag monitor connection not needed");
        return;
    }
    n->up = true;
    if (n->ep == 0)
        server_query(sv, SYSID_SQL, 0, NULL, &sysid_ops, n);
    ask(n);
}

static void lag_server_data(struct server *sv)
{
    char why[300];
    if (server_query_read(sv, why, sizeof(why)) == SERVER_READ_BAD)
        server_close(sv, why);
}

static void lag_server_closed(struct server *sv, struct client *c, const char *why)
{
    struct lag_node *n = node_of(sv);
    if (!n)
        return;
    n->sv = NULL;
    n->up = n->asking = false;
}

static const struct server_holder_ops lag_holder = {
    .on_ready = lag_server_ready,
    .on_data = lag_server_data,
    .on_closed = lag_server_closed,
};

/* ---- the tick ------------------------------------------------------------- */

static struct lag_db *ld_of(const struct database *db)
{
    for (struct lag_db *ld = g_dbs; ld; ld = ld->next)
        if (ld->db == db)
            return ld;
    return NULL;
}

/* Databases that split reads and have a pool now: monitored from now on,
 * as the user of their first pool. */
static void discover(const struct config *cfg)
{
    pool_lock();
    struct list *it, *tmp;
    list_for_each_safe(it, tmp, &g_pooler.pools)
    {
        struct pool *p = list_entry(it, struct pool, node);
        if (p->ep != 0 || !p->db->cfg || ld_of(p->db) || !replicas_split_on(p->db, cfg))
            continue;
        struct lag_db *ld = calloc(1, sizeof(*ld));
        if (!ld)
            abort();
        ld->db = p->db;
        ld->pool = p;
        for (int i = 0; i < DB_MAX_ENDPOINTS; i++) {
            ld->node[i].ld = ld;
            ld->node[i].ep = i;
        }
        ld->next = g_dbs;
        g_dbs = ld;
    }
    pool_unlock();
}

static void tick_db(struct lag_db *ld, const struct config *cfg, int64_t now)
{
    struct database *db = ld->db;
    bool on = db->cfg && replicas_split_on(db, cfg) && !g_pooler.shutting_down;
    for (int ep = 0; ep < DB_MAX_ENDPOINTS; ep++) {
        struct lag_node *n = &ld->node[ep];
        bool wanted = on && ep < db->n_endpoints &&
                      (ep == 0 || replicas_role_checked(db->endpoints[ep].role));
        if (!wanted) {
            close_node(n, "lag monitor: node not monitored now");
            continue;
        }
        if (n->sv && n->sv->close_needed && !n->asking)
            close_node(n, "close needed");
        if (!n->sv) {
            if (now >= n->next_try)
                connect_node(n, now);
        } else if (n->up && !n->asking) {
            ask(n);
        }
        if (ep == 0)
            continue;
        struct endpoint *e = &db->endpoints[ep];
        int64_t at = atomic_load_explicit(&e->lag_at, memory_order_relaxed);
        if (!at || now - at > stale_usec(cfg))
            judge(db, ep, 0, 0, true, cfg);
    }
}

static void tick_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    const struct config *cfg = g_pooler.cfg;
    int64_t now = worker_now(lag_worker());
    discover(cfg);
    for (struct lag_db *ld = g_dbs; ld; ld = ld->next)
        tick_db(ld, cfg, now);
    double every = (double)cfg->lag_check_interval / 1e6;
    t->repeat = every > 0.01 ? every : 0.01;
    ev_timer_again(loop, t);
}

/* Asks every replica that is idle again, while reads wait. */
static void hurry_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    if (!atomic_load(&ryw_waiting) || g_pooler.shutting_down) {
        ev_timer_stop(loop, t);
        return;
    }
    int64_t now = worker_now(lag_worker()), every = g_pooler.cfg->lag_check_interval;
    /* One replica per database and turn, in turn: each is asked every
     * (replicas x HURRY_SEC), and a read goes to the first seen far enough. */
    for (struct lag_db *ld = g_dbs; ld; ld = ld->next) {
        for (int k = 1; k < DB_MAX_ENDPOINTS; k++) {
            int ep = 1 + (ld->hurry_next + k - 1) % (DB_MAX_ENDPOINTS - 1);
            struct lag_node *n = &ld->node[ep];
            if (!n->sv || !n->up || n->asking || !ryw_hurry_claim(ld->db, ep, now))
                continue;
            ld->hurry_next = ep;
            atomic_fetch_add_explicit(&ryw_wait_stats.asks_poll, 1, memory_order_relaxed);
            /* The whole measurement when it is due (the tick would find
             * the node busy with these), else just where it is. */
            int64_t at = atomic_load_explicit(&ld->db->endpoints[ep].lag_at, memory_order_relaxed);
            if (now - at >= every)
                ask(n);
            else
                ask_hurry(n);
            break;
        }
    }
}

static void hurry_async_cb(struct ev_loop *loop, ev_async *a, int revents)
{
    (void)a;
    (void)revents;
    if (!ev_is_active(&g_hurry)) {
        ev_timer_set(&g_hurry, 0., HURRY_SEC);
        ev_timer_start(loop, &g_hurry);
    }
}

/* The first read began to wait (any thread). */
static void lag_monitor_hurry(void)
{
    ev_async_send(lag_worker()->loop, &g_hurry_async);
}

void lag_monitor_start(void)
{
    struct ev_loop *loop = lag_worker()->loop;
    ev_timer_init(&g_tick, tick_cb, 0.1, 0.1);
    ev_timer_start(loop, &g_tick);
    ev_unref(loop); /* does not keep the loop running */
    ev_timer_init(&g_hurry, hurry_cb, 0., HURRY_SEC);
    ev_async_init(&g_hurry_async, hurry_async_cb);
    ev_async_start(loop, &g_hurry_async);
    ev_unref(loop);
    g_running = true;
    ryw_set_hurry(lag_monitor_hurry);
}

void lag_monitor_stop(void)
{
    if (g_running) {
        struct ev_loop *loop = lag_worker()->loop;
        ryw_set_hurry(NULL);
        g_running = false;
        ev_ref(loop);
        ev_timer_stop(loop, &g_tick);
        ev_ref(loop);
        ev_async_stop(loop, &g_hurry_async);
        ev_timer_stop(loop, &g_hurry);
    }
    for (struct lag_db *ld = g_dbs; ld; ld = ld->next)
        for (int i = 0; i < DB_MAX_ENDPOINTS; i++)
            close_node(&ld->node[i], "shutdown");
    while (g_dbs) {
        struct lag_db *ld = g_dbs;
        g_dbs = ld->next;
        free(ld);
    }
}

bool lag_monitor_lag(const struct database *db, int ep, int64_t now, uint64_t *bytes, int64_t *usec)
{
    const struct endpoint *e = &db->endpoints[ep];
    int64_t at = atomic_load_explicit(&e->lag_at, memory_order_relaxed);
    if (!at || now - at > stale_usec(g_pooler.cfg))
        return false;
    *bytes = atomic_load_explicit(&e->lag_bytes, memory_order_relaxed);
    *usec = atomic_load_explicit(&e->lag_usec, memory_order_relaxed);
    return true;
}
