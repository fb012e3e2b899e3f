/* pool.c - pools of servers per (database, user) and the dispatcher. */
#include "pool.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "dns.h"
#include "listen.h"
#include "prepared.h"
#include "proto.h"
#include "log.h"
#include "server.h"
#include "worker.h"

struct pooler g_pooler;

static char *xstrdup(const char *s)
{
    char *d = strdup(s ? s : "");
    if (!d)
        abort();
    return d;
}

static void *xcalloc(size_t n, size_t sz)
{
    void *p = calloc(n, sz);
    if (!p)
        abort();
    return p;
}

/* ---- registry ------------------------------------------------------------ */

struct database *pool_find_database(const char *name)
{
    struct list *it, *tmp;
    list_for_each_safe(it, tmp, &g_pooler.databases)
    {
        struct database *db = list_entry(it, struct database, node);
        if (strcmp(db->name, name) == 0)
            return db->cfg ? db : NULL;
    }
    const struct config_database *cd = config_find_database(g_pooler.cfg, name);
    if (!cd)
        return NULL;
    struct database *db = xcalloc(1, sizeof(*db));
    db->name = xstrdup(name);
    db->cfg = (struct config_database *)cd;
    db->autodb = strcmp(cd->name, "*") == 0;
    list_init(&db->node);
    list_add_tail(&g_pooler.databases, &db->node);
    return db;
}

struct pool_user *pool_get_user(const char *name)
{
    struct list *it, *tmp;
    list_for_each_safe(it, tmp, &g_pooler.users)
    {
        struct pool_user *u = list_entry(it, struct pool_user, node);
        if (strcmp(u->name, name) == 0)
            return u;
    }
    struct pool_user *u = xcalloc(1, sizeof(*u));
    u->name = xstrdup(name);
    list_init(&u->node);
    list_add_tail(&g_pooler.users, &u->node);
    return u;
}

struct pool *pool_get(struct database *db, const char *login_user)
{
    struct list *it, *tmp;
    list_for_each_safe(it, tmp, &g_pooler.pools)
    {
        struct pool *p = list_entry(it, struct pool, node);
        if (p->db == db && strcmp(p->user->name, login_user) == 0)
            return p;
    }
    struct pool *p = xcalloc(1, sizeof(*p));
    p->db = db;
    p->user = pool_get_user(login_user);
    list_init(&p->node);
    list_init(&p->idle);
    list_init(&p->active);
    list_init(&p->busy);
    list_init(&p->waiting);
    list_init(&p->login_wait);
    list_add_tail(&g_pooler.pools, &p->node);
    return p;
}

/* ---- effective settings -------------------------------------------------- */

enum pool_mode pool_mode_of(const struct pool *p)
{
    const struct config_user *u = config_find_user(g_pooler.cfg, p->user->name);
    if (u && u->pool_mode != POOL_MODE_UNSET)
        return u->pool_mode;
    if (p->db->cfg && p->db->cfg->pool_mode != POOL_MODE_UNSET)
        return p->db->cfg->pool_mode;
    return g_pooler.cfg->pool_mode;
}

int pool_size_of(const struct pool *p)
{
    if (p->db->cfg && p->db->cfg->pool_size >= 0)
        return p->db->cfg->pool_size;
    return g_pooler.cfg->default_pool_size;
}

int pool_min_size_of(const struct pool *p)
{
    if (p->db->cfg && p->db->cfg->min_pool_size >= 0)
        return p->db->cfg->min_pool_size;
    return g_pooler.cfg->min_pool_size;
}

int pool_reserve_of(const struct pool *p)
{
    if (p->db->cfg && p->db->cfg->reserve_pool >= 0)
        return p->db->cfg->reserve_pool;
    return g_pooler.cfg->reserve_pool_size;
}

static int db_max_connections(const struct database *db)
{
    if (db->cfg && db->cfg->max_db_connections >= 0)
        return db->cfg->max_db_connections;
    return g_pooler.cfg->max_db_connections;
}

static int user_max_connections(const struct pool_user *u)
{
    const struct config_user *cu = config_find_user(g_pooler.cfg, u->name);
    if (cu && cu->max_user_connections >= 0)
        return cu->max_user_connections;
    return g_pooler.cfg->max_user_connections;
}

static int pool_total(const struct pool *p)
{
    return p->n_idle + p->n_active + p->n_busy - p->n_listen;
}

/* ---- dispatch ------------------------------------------------------------ */

/* May p open one more server connection now? */
static bool pool_may_open(struct pool *p, int64_t now, bool allow_reserve)
{
    if (g_pooler.shutting_down && list_empty(&p->waiting) && list_empty(&p->login_wait))
        return false;
    if (p->last_connect_failed && now - p->last_connect_failed < p->retry_delay)
        return false;
    int total = pool_total(p);
    int size = pool_size_of(p);
    if (total >= size) {
        if (!allow_reserve || total >= size + pool_reserve_of(p))
            return false;
    }
    int dbmax = db_max_connections(p->db);
    if (dbmax > 0 && p->db->n_servers >= dbmax)
        return false;
    int umax = user_max_connections(p->user);
    if (umax > 0 && p->user->n_servers >= umax)
        return false;
    return true;
}

static struct worker *pool_worker(void)
{
    return &g_pooler.workers[0];
}

static void pool_launch(struct pool *p, int64_t now, bool allow_reserve)
{
    if (!pool_may_open(p, now, allow_reserve))
        return;
    if (pool_total(p) >= pool_size_of(p)) {
        p->n_reserve_used++;
        log_info("taking connection from reserve_pool: %s/%s", p->db->name, p->user->name);
    }
    server_connect(p, pool_worker());
}

static bool server_needs_check(const struct server *sv, int64_t now)
{
    const struct config *cfg = g_pooler.cfg;
    if (!cfg->server_check_query[0])
        return false;
    /* last_used == now: the check just passed (or the server just answered
     * its last client); checking again would loop forever with delay 0. */
    return now - sv->last_used >= cfg->server_check_delay && now != sv->last_used;
}

static bool server_too_old(const struct server *sv, int64_t now)
{
    const struct config *cfg = g_pooler.cfg;
    return cfg->server_lifetime > 0 && now - sv->connect_time >= cfg->server_lifetime;
}

void pool_dispatch(struct pool *p)
{
    struct worker *w = pool_worker();
    int64_t now = worker_now(w);
    if (g_pooler.paused || p->db->paused)
        return;
    while (!list_empty(&p->waiting)) {
        struct list *n = list_first(&p->idle);
        if (n) {
            struct server *sv = list_entry(n, struct server, node);
            if (sv->close_needed || server_too_old(sv, now)) {
                server_close(sv, sv->close_needed ? "close needed" : "server lifetime over");
                continue;
            }
            list_del(&sv->node);
            p->n_idle--;
            if (server_needs_check(sv, now)) {
                p->n_busy++;
                list_add_tail(&p->busy, &sv->node);
                server_run_internal(sv, SV_TESTING, g_pooler.cfg->server_check_query);
                continue;
            }
            struct client *c = list_entry(list_first(&p->waiting), struct client, wait_node);
            list_del(&c->wait_node);
            p->n_waiting--;
            c->wait_pool = NULL;
            p->assign_count++;
            p->n_active++;
            list_add_tail(&p->active, &sv->node);
            int64_t waited = now - c->request_time;
            w->stats.wait_time += (uint64_t)(waited > 0 ? waited : 0);
            w->stats.wait_count++;
            metrics_hist_observe(&w->metrics.wait, waited);
            p->wait_time += (uint64_t)(waited > 0 ? waited : 0);
            server_link(sv, c);
            continue;
        }
        /* No idle server: open more, one per waiting client not already
         * covered by a connection in progress. */
        int64_t first_wait =
            list_entry(list_first(&p->waiting), struct client, wait_node)->request_time;
        bool reserve = g_pooler.cfg->reserve_pool_timeout >= 0 && pool_reserve_of(p) > 0 &&
                       now - first_wait >= g_pooler.cfg->reserve_pool_timeout;
        if (p->n_busy < p->n_waiting)
            pool_launch(p, now, reserve);
        break;
    }
    if (!p->welcome_ready && !list_empty(&p->login_wait) && p->n_busy == 0 && p->n_idle == 0 &&
        p->n_active == 0)
        pool_launch(p, now, false);
}

void pool_client_wait_on(struct client *c, struct pool *p)
{
    c->request_time = worker_now(c->s.worker);
    c->wait_pool = p;
    list_add_tail(&p->waiting, &c->wait_node);
    p->n_waiting++;
    pool_dispatch(p);
}

void pool_client_wait(struct client *c)
{
    c->state = CL_WAITING;
    pool_client_wait_on(c, c->pool);
}

void pool_client_unwait(struct client *c)
{
    if (c->wait_pool && !list_empty(&c->wait_node)) {
        list_del(&c->wait_node);
        c->wait_pool->n_waiting--;
    } else if (c->state == CL_LOGIN_WAIT) {
        list_del(&c->wait_node);
    }
    c->wait_pool = NULL;
}

static void pool_make_idle(struct server *sv, int64_t now)
{
    struct pool *p = sv->pool;
    sv->state = SV_IDLE;
    sv->last_used = now;
    p->n_idle++;
    /* LIFO: the most recently used server is the warmest. */
    list_add_head(&p->idle, &sv->node);
}

/* Moves sv from the active list to the busy list (it runs something of
 * sluice's own, or waits for a cancel). */
static void pool_active_to_busy(struct server *sv, enum server_state st)
{
    struct pool *p = sv->pool;
    list_del(&sv->node);
    p->n_active--;
    sv->state = st;
    p->n_busy++;
    list_add_tail(&p->busy, &sv->node);
}

void pool_release_server(struct server *sv)
{
    struct pool *p = sv->pool;
    struct worker *w = pool_worker();
    int64_t now = worker_now(w);
    struct client *c = sv->client;
    bool session_end = !c || c->state == CL_CLOSED;
    const struct config *cfg = g_pooler.cfg;
    if (c) {
        c->server = NULL;
        sv->client = NULL;
    }
    sv->s.blocked_src = NULL;
    if (sv->cancels_in_flight > 0) {
        /* A cancel sent for this server's last query may still arrive;
         * reusing the server now could cancel another client's query. */
        pool_active_to_busy(sv, SV_CANCEL_WAIT);
    } else if (!server_is_clean(sv)) {
        server_close(sv, "client disconnect while server was not ready");
    } else if (sv->close_needed || !p->db->cfg) {
        server_close(sv, "database configuration changed");
    } else if (server_too_old(sv, now)) {
        server_close(sv, "server lifetime over");
    } else if (cfg->server_reset_query[0] &&
               ((session_end && pool_mode_of(p) == POOL_MODE_SESSION) ||
                cfg->server_reset_query_always)) {
        pool_active_to_busy(sv, SV_RESETTING);
        server_run_internal(sv, SV_RESETTING, cfg->server_reset_query);
    } else {
        list_del(&sv->node);
        p->n_active--;
        pool_make_idle(sv, now);
    }
    if (c && c->state != CL_CLOSED)
        client_unlinked(c);
    pool_dispatch(p);
}

void pool_server_ready(struct server *sv)
{
    struct pool *p = sv->pool;
    struct worker *w = pool_worker();
    if (sv->close_needed || !p->db->cfg || (g_pooler.shutting_down && list_empty(&p->waiting))) {
        server_close(sv, "close needed");
        return;
    }
    if (sv->state == SV_LOGIN) {
        p->last_connect_failed = 0;
        p->retry_delay = 0;
    }
    list_del(&sv->node);
    p->n_busy--;
    pool_make_idle(sv, worker_now(w));
    /* The pool knows the server's parameters now: welcome waiting logins. */
    while (p->welcome_ready && !list_empty(&p->login_wait)) {
        struct client *c = list_entry(list_first(&p->login_wait), struct client, wait_node);
        list_del(&c->wait_node);
        client_welcome(c);
    }
    pool_dispatch(p);
}

void pool_server_gone(struct server *sv)
{
    struct pool *p = sv->pool;
    switch (sv->state) {
    case SV_IDLE:
        p->n_idle--;
        break;
    case SV_ACTIVE:
    case SV_SETTING:
        p->n_active--;
        break;
    default:
        p->n_busy--;
        break;
    }
    list_del(&sv->node);
    p->db->n_servers--;
    p->user->n_servers--;
}

void pool_connect_failed(struct pool *p, const char *why, bool fatal_for_clients)
{
    struct worker *w = pool_worker();
    p->last_connect_failed = worker_now(w);
    if (p->last_connect_failed == 0)
        p->last_connect_failed = 1;
    snprintf(p->last_connect_error, sizeof(p->last_connect_error), "%s", why);
    /* Capped exponential backoff (0.1 s, 0.2 s, ... server_login_retry): a
     * cold or restarting upstream is used soon after it comes up. */
    p->retry_delay = p->retry_delay ? p->retry_delay * 2 : 100000;
    if (p->retry_delay > g_pooler.cfg->server_login_retry)
        p->retry_delay = g_pooler.cfg->server_login_retry;
    if (p->db->cfg)
        dns_mark_failed(p->db->cfg->host); /* next address, or resolve anew */
    if (!fatal_for_clients)
        return;
    /* Errors that a retry cannot fix (bad password, no such database) go to
     * the clients waiting for this pool, as PostgreSQL would say them. */
    while (!list_empty(&p->login_wait)) {
        struct client *c = list_entry(list_first(&p->login_wait), struct client, wait_node);
        client_close_error(c, SQLSTATE_CONNECTION_FAILURE, "%s", why);
    }
    while (!list_empty(&p->waiting)) {
        struct client *c = list_entry(list_first(&p->waiting), struct client, wait_node);
        client_close_error(c, SQLSTATE_CONNECTION_FAILURE, "%s", why);
    }
}

/* ---- janitor ------------------------------------------------------------- */

/* query_wait_timeout for c; says why no server came when logins fail. */
static void pool_wait_timeout(struct pool *p, struct client *c)
{
    if (p->last_connect_failed && p->last_connect_error[0])
        client_close_error(c, SQLSTATE_CONNECTION_FAILURE,
                           "query_wait_timeout (server connection failing: %s)",
                           p->last_connect_error);
    else
        client_close_error(c, SQLSTATE_CONNECTION_FAILURE, "query_wait_timeout");
}

static void pool_janitor_one(struct pool *p, struct worker *w, int64_t now)
{
    const struct config *cfg = g_pooler.cfg;
    struct list *it, *tmp;
    int min = pool_min_size_of(p);

    /* Idle servers: idle timeout above min_pool_size, lifetime. */
    list_for_each_safe(it, tmp, &p->idle)
    {
        struct server *sv = list_entry(it, struct server, node);
        bool idle_long = cfg->server_idle_timeout > 0 &&
                         now - sv->last_used >= cfg->server_idle_timeout && pool_total(p) > min;
        if (idle_long)
            server_close(sv, "server idle timeout");
        else if (server_too_old(sv, now) && pool_total(p) > min)
            server_close(sv, "server lifetime over");
        else if (!p->db->cfg)
            server_close(sv, "database removed");
    }
    /* Connections that take too long to log in. */
    list_for_each_safe(it, tmp, &p->busy)
    {
        struct server *sv = list_entry(it, struct server, node);
        if ((sv->state == SV_CONNECTING || sv->state == SV_LOGIN) &&
            cfg->server_connect_timeout > 0 &&
            now - sv->connect_time >= cfg->server_connect_timeout) {
            pool_connect_failed(p, "server connect timeout", false);
            server_close(sv, "connect timeout");
        }
    }
    /* Waiting clients: query_wait_timeout. */
    list_for_each_safe(it, tmp, &p->waiting)
    {
        struct client *c = list_entry(it, struct client, wait_node);
        if (cfg->query_wait_timeout > 0 && now - c->request_time >= cfg->query_wait_timeout)
            pool_wait_timeout(p, c);
    }
    list_for_each_safe(it, tmp, &p->login_wait)
    {
        struct client *c = list_entry(it, struct client, wait_node);
        if (cfg->query_wait_timeout > 0 && now - c->request_time >= cfg->query_wait_timeout)
            pool_wait_timeout(p, c);
    }
    /* Keep min_pool_size warm, retry after failures, use the reserve. */
    if (!g_pooler.shutting_down && p->db->cfg && !g_pooler.paused && !p->db->paused) {
        while (pool_total(p) < min && pool_may_open(p, now, false)) {
            if (!server_connect(p, w))
                break;
        }
    }
    pool_dispatch(p);
}

void pool_janitor(struct worker *w)
{
    int64_t now = worker_now(w);
    struct list *it, *tmp;
    list_for_each_safe(it, tmp, &g_pooler.pools)
    {
        pool_janitor_one(list_entry(it, struct pool, node), w, now);
    }
}

struct server *pool_find_server(struct pool *p, bool (*fn)(struct server *sv, void *arg), void *arg)
{
    struct list *lists[] = {&p->active, &p->idle, &p->busy};
    for (size_t k = 0; k < sizeof(lists) / sizeof(lists[0]); k++) {
        struct list *it, *tmp;
        list_for_each_safe(it, tmp, lists[k])
        {
            struct server *sv = list_entry(it, struct server, node);
            if (fn(sv, arg))
                return sv;
        }
    }
    return NULL;
}

int pool_count_active(void)
{
    int n = 0;
    struct list *it, *tmp;
    list_for_each_safe(it, tmp, &g_pooler.pools)
    {
        struct pool *p = list_entry(it, struct pool, node);
        n += p->n_active - p->n_listen;
    }
    return n;
}

static void close_list(struct list *l, const char *why)
{
    while (!list_empty(l)) {
        struct server *sv = list_entry(list_first(l), struct server, node);
        server_close(sv, why);
    }
}

void pool_close_all(void)
{
    struct list *it, *tmp;
    listen_shutdown();
    list_for_each_safe(it, tmp, &g_pooler.pools)
    {
        struct pool *p = list_entry(it, struct pool, node);
        close_list(&p->idle, "shutdown");
        close_list(&p->busy, "shutdown");
        close_list(&p->active, "shutdown");
    }
}

void pool_free_all(void)
{
    pool_close_all();
    while (!list_empty(&g_pooler.pools)) {
        struct pool *p = list_entry(list_first(&g_pooler.pools), struct pool, node);
        list_del(&p->node);
        for (int i = 0; i < p->welcome.n; i++) {
            free(p->welcome.names[i]);
            free(p->welcome.values[i]);
        }
        prepared_set_free(p->ps_known);
        free(p);
    }
    while (!list_empty(&g_pooler.databases)) {
        struct database *db = list_entry(list_first(&g_pooler.databases), struct database, node);
        list_del(&db->node);
        free(db->name);
        free(db);
    }
    while (!list_empty(&g_pooler.users)) {
        struct pool_user *u = list_entry(list_first(&g_pooler.users), struct pool_user, node);
        list_del(&u->node);
        free(u->name);
        free(u->scram_secret_text);
        free(u->password);
        free(u);
    }
    free(g_pooler.cancel_hash);
    g_pooler.cancel_hash = NULL;
}

void pool_apply_config(struct config *cfg)
{
    struct list *it, *tmp;
    list_for_each_safe(it, tmp, &g_pooler.databases)
    {
        struct database *db = list_entry(it, struct database, node);
        const struct config_database *cd = config_find_database(cfg, db->name);
        if (cd && (strcmp(cd->name, "*") != 0 || db->autodb)) {
            /* A changed connection target means old servers must go. */
            if (db->cfg &&
                (strcmp(db->cfg->host, cd->host) != 0 || db->cfg->port != cd->port ||
                 strcmp(db->cfg->dbname, cd->dbname) != 0 || strcmp(db->cfg->user, cd->user) != 0 ||
                 strcmp(db->cfg->password, cd->password) != 0)) {
                struct list *pit, *ptmp;
                list_for_each_safe(pit, ptmp, &g_pooler.pools)
                {
                    struct pool *p = list_entry(pit, struct pool, node);
                    if (p->db != db)
                        continue;
                    p->addr_ok = false;
                    struct list *sit, *stmp;
                    list_for_each_safe(sit, stmp, &p->active)
                    {
                        list_entry(sit, struct server, node)->close_needed = true;
                    }
                    list_for_each_safe(sit, stmp, &p->busy)
                    {
                        list_entry(sit, struct server, node)->close_needed = true;
                    }
                    close_list(&p->idle, "database configuration changed");
                }
            }
            db->cfg = (struct config_database *)cd;
        } else {
            db->cfg = NULL;
        }
    }
}

/* ---- cancel keys --------------------------------------------------------- */

static unsigned cancel_slot(uint32_t pid, uint32_t key)
{
    return (pid * 2654435761u ^ key) & (g_pooler.cancel_hash_size - 1);
}

void pool_cancel_register(struct client *c)
{
    if (!g_pooler.cancel_hash) {
        g_pooler.cancel_hash_size = 16384;
        g_pooler.cancel_hash = xcalloc(g_pooler.cancel_hash_size, sizeof(struct client *));
    }
    unsigned s = cancel_slot(c->cancel_pid, c->cancel_key);
    c->hash_next = g_pooler.cancel_hash[s];
    g_pooler.cancel_hash[s] = c;
}

void pool_cancel_unregister(struct client *c)
{
    if (!g_pooler.cancel_hash)
        return;
    struct client **pp = &g_pooler.cancel_hash[cancel_slot(c->cancel_pid, c->cancel_key)];
    for (; *pp; pp = &(*pp)->hash_next) {
        if (*pp == c) {
            *pp = c->hash_next;
            c->hash_next = NULL;
            return;
        }
    }
}

struct client *pool_cancel_lookup(uint32_t pid, uint32_t key)
{
    if (!g_pooler.cancel_hash)
        return NULL;
    for (struct client *c = g_pooler.cancel_hash[cancel_slot(pid, key)]; c; c = c->hash_next)
        if (c->cancel_pid == pid && c->cancel_key == key)
            return c;
    return NULL;
}
