/* pool_registry.c - the registry of databases, their endpoints, login
 * users and pools, found or made on first use; the settings in effect for
 * a pool; the cancel-key registry of clients; the process-wide state
 * (g_pooler) and its lock; what a config swap changes in the registry, and
 * its teardown at exit. Everything here is under that lock (pool.h). */
#include "pool_int.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "prepared_set.h"
#include "cache_catalog.h"
#include "volatility.h"
#include "worker.h"

struct pooler g_pooler = {.lock = PTHREAD_MUTEX_INITIALIZER,
                          .retired = LIST_INIT(g_pooler.retired),
                          .retired_pools = LIST_INIT(g_pooler.retired_pools)};

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

void pool_db_free_endpoints(struct database *db)
{
    for (int i = 0; i < db->n_endpoints; i++)
        free(db->endpoints[i].host);
    db->n_endpoints = 0;
}

/* Where endpoint i of cd is, and what it is: 0 the entry's host (with
 * several hosts, host= as written: the address used is the primary's);
 * then with several hosts each of them; then the replicas. */
static void endpoint_of(const struct config_database *cd, int i, const char **host, int *port,
                        int *weight, enum endpoint_role *role)
{
    int n_hosts = cd->n_hosts > 1 ? cd->n_hosts : 0;
    *weight = 1;
    if (i == 0) {
        *host = cd->host;
        *port = cd->port;
        *role = EP_PRIMARY;
    } else if (i <= n_hosts) {
        *host = cd->hosts[i - 1].host;
        *port = cd->hosts[i - 1].port;
        *role = EP_HOST;
    } else {
        const struct config_replica *r = &cd->replica[i - 1 - n_hosts];
        *host = r->host;
        *port = r->port;
        *weight = r->weight;
        *role = EP_REPLICA;
    }
}

unsigned pool_db_set_endpoints(struct database *db, const struct config_database *cd)
{
    unsigned changed = 0;
    int n_hosts = cd->n_hosts > 1 ? cd->n_hosts : 0;
    int n = 1 + n_hosts + cd->n_replicas;
    for (int i = 0; i < n; i++) {
        const char *host;
        int port, weight;
        enum endpoint_role role;
        endpoint_of(cd, i, &host, &port, &weight, &role);
        struct endpoint *ep = &db->endpoints[i];
        if (i >= db->n_endpoints || strcmp(ep->host, host) != 0 || ep->port != port ||
            (ep->role != role && ep->role != EP_REMOVED)) {
            if (i < db->n_endpoints) {
                free(ep->host);
                changed |= 1u << i;
            }
            memset(ep, 0, sizeof(*ep));
            ep->host = xstrdup(host);
            ep->port = port;
        }
        ep->weight = weight;
        ep->role = role;
    }
    /* Slots past the new list keep their address for the servers still
     * there; the router no longer picks them. */
    for (int i = n; i < db->n_endpoints; i++) {
        if (db->endpoints[i].role != EP_REMOVED)
            changed |= 1u << i;
        db->endpoints[i].role = EP_REMOVED;
    }
    if (n > db->n_endpoints)
        db->n_endpoints = n;
    /* Endpoint 0 connects to one of the hosts: when they change, it starts
     * over (its servers go, the primary is looked for again). */
    unsigned host_bits = 0;
    for (int i = 1; i <= n_hosts || i <= db->n_hosts; i++)
        host_bits |= 1u << i;
    if (n_hosts != db->n_hosts || (changed & host_bits)) {
        changed |= 1u;
        atomic_store_explicit(&db->primary, n_hosts ? -1 : 0, memory_order_relaxed);
        atomic_store_explicit(&db->last_primary, -1, memory_order_relaxed);
        atomic_store_explicit(&db->lb_current, 1, memory_order_relaxed);
    }
    db->n_hosts = n_hosts;
    return changed;
}

/* ---- autodb_idle_timeout ----------------------------------------------------- */

/* The statistics a dropped database forgets (PgBouncer frees them). */
static void pool_forget_stats(struct pool *p)
{
    p->xact_count = p->query_count = p->bytes_in = p->bytes_out = 0;
    p->assign_count = p->replica_reads = p->retries = p->servers_kept = 0;
    p->ps_client_parses = p->ps_server_parses = p->ps_binds = 0;
    p->xact_time = p->query_time = p->wait_time = 0;
    p->max_wait_seen = 0;
}

/* Drops db, a database made from "*" that nothing uses (lock held): off
 * the registry with its pools, so that no SHOW lists it and its
 * statistics start over, as PgBouncer frees it. The memory is kept (and
 * taken again when the name is used), because other modules may still
 * hold the pointer (a logical-invalidation consumer, a job). */
static void pool_db_retire_locked(struct database *db)
{
    log_warning("dropping database '%s' as it does not exist anymore or inactive auto-database",
                db->name);
    struct list *it, *tmp;
    list_for_each_safe(it, tmp, &g_pooler.pools)
    {
        struct pool *p = list_entry(it, struct pool, node);
        if (p->db != db)
            continue;
        list_del(&p->node);
        pool_forget_stats(p);
        list_add_tail(&g_pooler.retired_pools, &p->node);
    }
    for (size_t i = 0; i < sizeof(db->cache_ctr) / sizeof(db->cache_ctr[0]); i++)
        atomic_store_explicit(&db->cache_ctr[i], 0, memory_order_relaxed);
    list_del(&db->node);
    list_add_tail(&g_pooler.retired, &db->node);
    db->retired = true;
    db->disabled = false; /* forgotten with it, as in PgBouncer */
    db->cfg = NULL;       /* its entry may go at a reload meanwhile */
}

/* db, dropped, back in the registry with its pools (lock held); nothing
 * for a database that was not dropped. */
static void pool_db_revive_locked(struct database *db)
{
    if (!db->retired)
        return;
    const struct config_database *cd = config_find_database(g_pooler.cfg, db->name);
    list_del(&db->node);
    list_add_tail(&g_pooler.databases, &db->node);
    db->retired = false;
    db->idle_since = 0;
    db->cfg = (struct config_database *)cd;
    if (cd) {
        pool_db_set_endpoints(db, cd);
        db->autodb = strcmp(cd->name, "*") == 0;
    }
    struct list *it, *tmp;
    list_for_each_safe(it, tmp, &g_pooler.retired_pools)
    {
        struct pool *p = list_entry(it, struct pool, node);
        if (p->db != db)
            continue;
        list_del(&p->node);
        list_add_tail(&g_pooler.pools, &p->node);
        pool_refresh_settings(p);
    }
}

void pool_autodb_janitor_locked(int64_t now)
{
    static unsigned pass;
    pass++;
    struct list *it, *tmp;
    list_for_each_safe(it, tmp, &g_pooler.pools)
    {
        struct pool *p = list_entry(it, struct pool, node);
        if (p->n_clients > 0 || p->n_idle + p->n_active + p->n_busy > 0 ||
            !list_empty(&p->waiting) || !list_empty(&p->login_wait))
            p->db->used_pass = pass;
    }
    int64_t timeout = g_pooler.cfg->autodb_idle_timeout;
    list_for_each_safe(it, tmp, &g_pooler.databases)
    {
        struct database *db = list_entry(it, struct database, node);
        if (!db->autodb || !db->cfg)
            continue;
        if (db->used_pass == pass || db->n_clients > 0)
            db->idle_since = 0;
        else if (db->idle_since == 0)
            db->idle_since = now;
        else if (timeout > 0 && now - db->idle_since > timeout && !db->paused)
            pool_db_retire_locked(db);
    }
}

static struct database *pool_find_database_locked(const char *name)
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
    list_for_each_safe(it, tmp, &g_pooler.retired)
    {
        struct database *db = list_entry(it, struct database, node);
        if (strcmp(db->name, name) == 0) {
            pool_db_revive_locked(db);
            return db;
        }
    }
    struct database *db = xcalloc(1, sizeof(*db));
    db->name = xstrdup(name);
    db->cfg = (struct config_database *)cd;
    pool_db_set_endpoints(db, cd);
    db->autodb = strcmp(cd->name, "*") == 0;
    list_init(&db->node);
    list_add_tail(&g_pooler.databases, &db->node);
    return db;
}

struct database *pool_find_database(const char *name)
{
    pool_lock();
    struct database *db = pool_find_database_locked(name);
    pool_unlock();
    return db;
}

static struct pool_user *pool_get_user_locked(const char *name)
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

struct pool_user *pool_get_user(const char *name)
{
    pool_lock();
    struct pool_user *u = pool_get_user_locked(name);
    pool_unlock();
    return u;
}

static struct pool *pool_get_locked(struct database *db, const char *login_user, int ep);

/* With several hosts, endpoint 0's pool p has a pool of its user at every
 * host from the start: the health checks that find the primary run there
 * (lock held). */
static void pool_get_host_pools_locked(struct pool *p)
{
    if (p->ep != 0)
        return;
    for (int k = 1; k <= p->db->n_hosts; k++)
        pool_get_locked(p->db, p->user->name, k);
}

static struct pool *pool_get_locked(struct database *db, const char *login_user, int ep)
{
    struct list *it, *tmp;
    bool first = true;
    /* Used: a database dropped since its caller found it comes back, and
     * the idle time of one made from "*" starts over. */
    pool_db_revive_locked(db);
    db->idle_since = 0;
    list_for_each_safe(it, tmp, &g_pooler.pools)
    {
        struct pool *p = list_entry(it, struct pool, node);
        if (p->db == db && p->ep == ep) {
            if (strcmp(p->user->name, login_user) == 0)
                return p;
            first = false;
        }
    }
    struct pool *p = xcalloc(1, sizeof(*p));
    p->db = db;
    p->ep = ep;
    p->checker = first;
    p->user = pool_get_user_locked(login_user);
    p->home = ep == 0 ? p : pool_get_locked(db, login_user, 0);
    list_init(&p->node);
    list_init(&p->idle);
    list_init(&p->active);
    list_init(&p->busy);
    list_init(&p->waiting);
    list_init(&p->login_wait);
    pool_refresh_settings(p);
    list_add_tail(&g_pooler.pools, &p->node);
    pool_get_host_pools_locked(p);
    return p;
}

void pool_make_forced_locked(void)
{
    static const struct config *done; /* the config they were made for */
    const struct config *cfg = g_pooler.cfg;
    if (done == cfg)
        return;
    done = cfg;
    for (int i = 0; i < cfg->n_databases; i++) {
        const struct config_database *cd = &cfg->databases[i];
        int min = cd->min_pool_size >= 0 ? cd->min_pool_size : cfg->min_pool_size;
        if (!cd->user[0] || min <= 0 || strcmp(cd->name, "*") == 0)
            continue;
        struct database *db = pool_find_database_locked(cd->name);
        if (db && !db->disabled)
            pool_get_locked(db, cd->user, 0);
    }
}

struct pool *pool_get(struct database *db, const char *login_user)
{
    pool_lock();
    struct pool *p = pool_get_locked(db, login_user, 0);
    pool_unlock();
    return p;
}

struct pool *pool_of_endpoint(struct pool *p, int ep)
{
    if (ep == p->ep)
        return p;
    pool_lock();
    struct pool *q =
        ep >= 0 && ep < p->db->n_endpoints ? pool_get_locked(p->db, p->user->name, ep) : p;
    pool_unlock();
    return q;
}

/* ---- effective settings -------------------------------------------------- */

/* The user's pool_mode, else the database's, else the global one: looked
 * up by name, so kept in the pool (at creation and after every config swap,
 * when no other loop runs) rather than per transaction. */
void pool_refresh_settings(struct pool *p)
{
    const struct config_user *u = config_find_user(g_pooler.cfg, p->user->name);
    if (u && u->pool_mode != POOL_MODE_UNSET)
        p->mode = u->pool_mode;
    else if (p->db->cfg && p->db->cfg->pool_mode != POOL_MODE_UNSET)
        p->mode = p->db->cfg->pool_mode;
    else
        p->mode = g_pooler.cfg->pool_mode;
}

/* [users] entry of p's (login) user, or NULL. */
static const struct config_user *pool_cfg_user(const struct pool *p)
{
    return g_pooler.cfg->n_users ? config_find_user(g_pooler.cfg, p->user->name) : NULL;
}

/* The user's pool_size, else the database's, else default_pool_size (as
 * PgBouncer 1.24+). */
int pool_size_of(const struct pool *p)
{
    const struct config_user *u = pool_cfg_user(p);
    if (u && u->pool_size >= 0)
        return u->pool_size;
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
    const struct config_user *u = pool_cfg_user(p);
    if (u && u->reserve_pool_size >= 0)
        return u->reserve_pool_size;
    if (p->db->cfg && p->db->cfg->reserve_pool >= 0)
        return p->db->cfg->reserve_pool;
    return g_pooler.cfg->reserve_pool_size;
}

int pool_db_max_connections(const struct database *db)
{
    if (db->cfg && db->cfg->max_db_connections >= 0)
        return db->cfg->max_db_connections;
    return g_pooler.cfg->max_db_connections;
}

int pool_user_max_connections(const struct pool_user *u)
{
    const struct config_user *cu = config_find_user(g_pooler.cfg, u->name);
    if (cu && cu->max_user_connections >= 0)
        return cu->max_user_connections;
    return g_pooler.cfg->max_user_connections;
}

int64_t pool_server_lifetime(const struct pool *p)
{
    if (p->db->cfg && p->db->cfg->server_lifetime >= 0)
        return p->db->cfg->server_lifetime;
    return g_pooler.cfg->server_lifetime;
}

bool pool_server_too_old(const struct server *sv, int64_t now)
{
    int64_t lifetime = pool_server_lifetime(sv->pool);
    /* 0: each server serves one client, then goes (PgBouncer's meaning); one
     * that has served none yet (just opened, min_pool_size) waits for it. */
    if (lifetime == 0)
        return sv->lent;
    return now - sv->connect_time >= lifetime;
}

static int64_t first_set(int64_t a, int64_t b, int64_t general)
{
    return a >= 0 ? a : b >= 0 ? b : general;
}

void pool_client_timeouts(const struct client *c, struct pool_client_timeouts *t)
{
    const struct config *cfg = g_pooler.cfg;
    const struct config_user *u = cfg->n_users && c->user ? config_find_user(cfg, c->user) : NULL;
    const struct config_database *d = c->pool && c->pool->db->cfg ? c->pool->db->cfg : NULL;
    t->query_timeout = first_set(u ? u->query_timeout : -1, -1, cfg->query_timeout);
    t->query_wait_timeout = first_set(u ? u->query_wait_timeout : -1,
                                      d ? d->query_wait_timeout : -1, cfg->query_wait_timeout);
    t->idle_transaction_timeout =
        first_set(u ? u->idle_transaction_timeout : -1, -1, cfg->idle_transaction_timeout);
    t->transaction_timeout =
        first_set(u ? u->transaction_timeout : -1, -1, cfg->transaction_timeout);
    t->client_idle_timeout =
        first_set(u ? u->client_idle_timeout : -1, -1, cfg->client_idle_timeout);
}

/* ---- client limits ------------------------------------------------------- */

const char *pool_count_client(struct client *c)
{
    const struct config *cfg = g_pooler.cfg;
    struct database *db = c->pool->db;
    const struct config_user *cu = config_find_user(cfg, c->user);
    int db_max = db->cfg && db->cfg->max_db_client_connections >= 0
                     ? db->cfg->max_db_client_connections
                     : cfg->max_db_client_connections;
    int user_max = cu && cu->max_user_client_connections >= 0 ? cu->max_user_client_connections
                                                              : cfg->max_user_client_connections;
    pool_lock();
    struct pool_user *u = pool_get_user_locked(c->user);
    if (!c->counted) {
        c->counted = true;
        db->n_clients++;
        u->n_clients++;
    }
    const char *over = NULL;
    if (db_max > 0 && db->n_clients > db_max)
        over = "client connections exceeded (max_db_client_connections)";
    else if (user_max > 0 && u->n_clients > user_max)
        over = "client connections exceeded (max_user_client_connections)";
    pool_unlock();
    return over;
}

void pool_uncount_client(struct client *c)
{
    if (!c->counted)
        return;
    pool_lock();
    c->counted = false;
    c->pool->db->n_clients--;
    pool_get_user_locked(c->user)->n_clients--;
    pool_unlock();
}

/* ---- cancel keys --------------------------------------------------------- */

static unsigned cancel_slot(uint32_t pid, uint32_t key)
{
    return (pid * 2654435761u ^ key) & (g_pooler.cancel_hash_size - 1);
}

void pool_cancel_register(struct client *c)
{
    pool_lock();
    if (!g_pooler.cancel_hash) {
        g_pooler.cancel_hash_size = 16384;
        g_pooler.cancel_hash = xcalloc(g_pooler.cancel_hash_size, sizeof(struct client *));
    }
    unsigned s = cancel_slot(c->cancel_pid, c->cancel_key);
    c->hash_next = g_pooler.cancel_hash[s];
    g_pooler.cancel_hash[s] = c;
    pool_unlock();
}

void pool_cancel_unregister(struct client *c)
{
    pool_lock();
    struct client **pp = g_pooler.cancel_hash
                             ? &g_pooler.cancel_hash[cancel_slot(c->cancel_pid, c->cancel_key)]
                             : NULL;
    for (; pp && *pp; pp = &(*pp)->hash_next) {
        if (*pp == c) {
            *pp = c->hash_next;
            c->hash_next = NULL;
            break;
        }
    }
    pool_unlock();
}

struct client *pool_cancel_lookup(uint32_t pid, uint32_t key)
{
    struct client *found = NULL;
    pool_lock();
    for (struct client *c = g_pooler.cancel_hash ? g_pooler.cancel_hash[cancel_slot(pid, key)]
                                                 : NULL;
         c && !found; c = c->hash_next)
        if (c->cancel_pid == pid && c->cancel_key == key)
            found = c;
    pool_unlock();
    return found;
}

/* ---- the whole registry: config swaps, shutdown ---------------------------- */

static void close_list(struct list *l, const char *why)
{
    while (!list_empty(l)) {
        struct server *sv = list_entry(list_first(l), struct server, node);
        pool_ops_table.close_server(sv, why);
    }
}

void pool_close_all(void)
{
    struct list *it, *tmp;
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
    struct list *l;
    while ((l = list_first(&g_pooler.retired))) {
        list_del(l);
        list_add_tail(&g_pooler.databases, l);
    }
    while ((l = list_first(&g_pooler.retired_pools))) {
        list_del(l);
        list_add_tail(&g_pooler.pools, l);
    }
    pool_close_all();
    while (!list_empty(&g_pooler.pools)) {
        struct pool *p = list_entry(list_first(&g_pooler.pools), struct pool, node);
        list_del(&p->node);
        for (int i = 0; i < p->welcome.n; i++) {
            free(p->welcome.names[i]);
            free(p->welcome.values[i]);
        }
        prepared_set_free(p->ps_known);
        param_set_clear(&p->welcome_params);
        free(p);
    }
    while (!list_empty(&g_pooler.databases)) {
        struct database *db = list_entry(list_first(&g_pooler.databases), struct database, node);
        list_del(&db->node);
        pool_db_free_endpoints(db);
        volatility_free(db);
        cache_catalog_free(db);
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
    pool_thread_done();
}

/* The pools of db whose endpoint is in mask (bit i: endpoint i) lose their
 * servers: idle ones now, the others when they come back. */
static void pool_db_drop_servers(struct database *db, unsigned mask)
{
    struct list *pit, *ptmp;
    list_for_each_safe(pit, ptmp, &g_pooler.pools)
    {
        struct pool *p = list_entry(pit, struct pool, node);
        if (p->db != db || !(mask & (1u << p->ep)))
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

void pool_apply_config(struct config *cfg, bool drop_servers)
{
    struct list *it, *tmp;
    list_for_each_safe(it, tmp, &g_pooler.databases)
    {
        struct database *db = list_entry(it, struct database, node);
        const struct config_database *cd = config_find_database(cfg, db->name);
        if (cd && (strcmp(cd->name, "*") != 0 || db->autodb)) {
            /* A changed connection target means old servers must go: every
             * endpoint's for a changed login, else those whose address
             * changed. */
            bool login_changed = db->cfg && (strcmp(db->cfg->dbname, cd->dbname) != 0 ||
                                             strcmp(db->cfg->user, cd->user) != 0 ||
                                             strcmp(db->cfg->password, cd->password) != 0);
            unsigned changed = pool_db_set_endpoints(db, cd);
            if (login_changed || drop_servers)
                changed = ~0u;
            if (db->cfg && changed)
                pool_db_drop_servers(db, changed);
            db->cfg = (struct config_database *)cd;
        } else {
            db->cfg = NULL;
        }
    }
    list_for_each_safe(it, tmp, &g_pooler.pools)
    {
        struct pool *p = list_entry(it, struct pool, node);
        pool_refresh_settings(p);
        if (p->db->cfg)
            pool_get_host_pools_locked(p); /* hosts added to host= */
    }
}

/* Here rather than beside pool_connect_server() in pool.c, which is at its
 * size limit. */
struct server *pool_connect_walsender(struct pool *p, struct worker *w,
                                      const struct server_holder_ops *holder, uint8_t mode)
{
    pool_lock();
    struct server *sv = pool_new_server(p, w, worker_now(w));
    sv->held = true;
    sv->holder = holder;
    sv->replication = mode; /* before the connect starts: its startup packet says so */
    pool_unlock_run();
    return sv->state == SV_CLOSED ? NULL : sv;
}

/* The pool's welcome (the server parameters its first login reported), kept
 * for the clients that log in later. */
void pool_welcome_add(struct pool *p, const char *name, const char *value, const char *interned,
                      int tp)
{
    for (int i = 0; i < p->welcome.n; i++) {
        if (strcmp(p->welcome.names[i], name) == 0) {
            free(p->welcome.values[i]);
            p->welcome.values[i] = xstrdup(value);
            return;
        }
    }
    if (p->welcome.n < (int)(sizeof(p->welcome.names) / sizeof(p->welcome.names[0]))) {
        p->welcome.names[p->welcome.n] = xstrdup(name);
        p->welcome.values[p->welcome.n] = xstrdup(value);
        p->welcome.n++;
    }
    if (tp >= 0)
        param_assign(param_slot(&p->welcome_params, tp), interned);
}
