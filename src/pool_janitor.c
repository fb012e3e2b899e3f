/* pool_janitor.c - the pool module's periodic work, per worker: idle and
 * login timeouts, query_wait_timeout, min_pool_size, and for databases with
 * replicas the health checks, the function lookups and the clients that
 * must be routed anew (pool_janitor()). */
#include <stdatomic.h>

#include "pool_int.h"
#include "replicas.h"
#include "cache_catalog.h"
#include "volatility.h"
#include "worker.h"

/* An idle server of p owned by worker w for which fit(sv, arg) holds
 * (fit NULL: any), lock held; or NULL. */
static struct server *pool_idle_fit(struct pool *p, const struct worker *w,
                                    bool (*fit)(const struct server *sv, const void *arg),
                                    const void *arg)
{
    struct list *it, *tmp;
    list_for_each_safe(it, tmp, &p->idle)
    {
        struct server *sv = list_entry(it, struct server, node);
        if (sv->owner == w && !sv->close_needed && (!fit || fit(sv, arg)))
            return sv;
    }
    return NULL;
}

static struct server *pool_idle_of(struct pool *p, const struct worker *w)
{
    return pool_idle_fit(p, w, NULL, NULL);
}

struct server *pool_take_idle(struct pool *p, struct worker *w,
                              bool (*fit)(const struct server *sv, const void *arg),
                              const void *arg, bool spare)
{
    pool_lock();
    struct server *found = pool_idle_fit(p, w, fit, arg);
    int64_t now = worker_now(pool_self());
    if (found)
        pool_sv_state_locked(found, SV_TESTING);
    else if (spare && p->n_opening == 0 && !g_pooler.shutting_down && pool_may_open(p, now, false))
        pool_new_server(p, w, now);
    pool_unlock_run();
    return found;
}

/* Functions the router met and pg_proc has not been asked about: one of
 * w's idle servers of the database's primary asks (lock held). */
static void pool_janitor_lookup(struct pool *p, struct worker *w, int64_t now)
{
    if (g_pooler.shutting_down)
        return;
    struct server *sv = pool_idle_of(p, w);
    if (!sv) {
        /* All lent (session pooling holds them): one more connection, if
         * the pool may open one, for the lookups' while. Worker 0 opens. */
        if (w->id == 0 && list_empty(&p->busy) && pool_may_open(p, now, false))
            pool_new_server(p, w, now);
        return;
    }
    pool_sv_state_locked(sv, SV_TESTING);
    pool_act(PA_LOOKUP, sv, NULL, NULL, NULL);
}

/* The janitor's part for a replica's pool p, on worker w (lock held):
 * clients waiting for it while it may not take reads are routed again;
 * its health check runs on one of w's idle servers when due; a banned
 * replica whose ban time is over gets a connection to be checked on. */
static void pool_janitor_replica(struct pool *p, struct worker *w, int64_t now)
{
    struct database *db = p->db;
    struct list *it, *tmp;
    if (!db->cfg || !replicas_usable(db, p->ep, now)) {
        list_for_each_safe(it, tmp, &p->waiting)
        {
            struct client *c = list_entry(it, struct client, wait_node);
            if (c->s.worker == w && client_state_of(c) == CL_WAITING) {
                pool_cl_state_locked(c, CL_IDLE, false);
                pool_act(PA_REROUTE, NULL, c, NULL, NULL);
            }
        }
    }
    enum endpoint_role role = db->cfg ? db->endpoints[p->ep].role : EP_REMOVED;
    if (!replicas_role_checked(role) || g_pooler.shutting_down)
        return;
    /* A host is checked only to find the primary (read_write_split on), and
     * then always: a connection is opened for its check when it has none
     * (by one pool of the host, the first one made). A replica is checked
     * on the servers its reads opened, and gets one of its own only when a
     * ban is over. */
    bool host = role == EP_HOST;
    if (host && !replicas_discovers(db, g_pooler.cfg))
        return;
    struct server *idle = pool_idle_of(p, w);
    if (idle && replicas_check_claim(db, p->ep, g_pooler.cfg, now)) {
        pool_sv_state_locked(idle, SV_TESTING);
        pool_act(PA_PROBE, idle, NULL, NULL, NULL);
    } else if (!idle && w->id == 0 && pool_total(p) == 0 &&
               (host ? p->checker && replicas_check_due(db, p->ep, now)
                     : replicas_awaits_check(db, p->ep, now)) &&
               pool_may_open(p, now, false)) {
        pool_new_server(p, w, now);
    }
}

/* p (endpoint 0 of a database with several hosts) after its primary
 * changed (lock held): w's idle servers to another host go, the backoff of
 * failed connects (to the old primary) is forgotten. */
static void pool_retarget_locked(struct pool *p, const struct worker *w)
{
    struct list *it, *tmp;
    list_for_each_safe(it, tmp, &p->idle)
    {
        struct server *sv = list_entry(it, struct server, node);
        if (sv->owner == w && pool_off_target(sv))
            pool_close_locked(sv, "its host is not the primary any more");
    }
}

void pool_db_primary_changed(struct database *db)
{
    struct worker *w = pool_self();
    int64_t now = worker_now(w);
    struct list *it, *tmp;
    pool_lock();
    list_for_each_safe(it, tmp, &g_pooler.pools)
    {
        struct pool *p = list_entry(it, struct pool, node);
        if (p->db != db || p->ep != 0)
            continue;
        p->last_connect_failed = 0;
        p->retry_delay = 0;
        pool_retarget_locked(p, w);
        pool_dispatch_locked(p, now);
    }
    pool_unlock_run();
}

/* Worker w's clients waiting in p (lock held): query_wait_timeout, and
 * query_timeout, which counts the wait for a server too (as PgBouncer's
 * does), each the client's user's or database's setting over the general
 * one; query_wait_notify's NOTICE to a client queued that long (once per
 * wait, PgBouncer 1.25). */
static void pool_janitor_waiting(struct pool *p, struct worker *w, int64_t now)
{
    const struct config *cfg = g_pooler.cfg;
    struct list *lists[] = {&p->login_wait, &p->waiting};
    struct list *it, *tmp;
    for (int k = 0; k < 2; k++) {
        list_for_each_safe(it, tmp, lists[k])
        {
            struct client *c = list_entry(it, struct client, wait_node);
            if (c->s.worker != w)
                continue;
            struct pool_client_timeouts t;
            pool_client_timeouts(c, &t);
            int64_t waited = now - c->request_time;
            bool waiting = client_state_of(c) == CL_WAITING;
            bool query = t.query_timeout > 0 && waited >= t.query_timeout && waiting;
            if (query || (t.query_wait_timeout > 0 && waited >= t.query_wait_timeout)) {
                pool_cl_state_locked(c, CL_CLOSING, false);
                pool_act_client(query ? PA_QUERY_TIMEOUT : PA_WAIT_TIMEOUT, c, p);
            } else if (waiting && !c->wait_notified && cfg->query_wait_notify > 0 &&
                       waited >= cfg->query_wait_notify) {
                c->wait_notified = true;
                pool_act(PA_NOTICE, NULL, c, NULL,
                         "No server connection available in postgres backend, client being "
                         "queued");
            }
        }
    }
}

/* Timeouts of worker w's own servers and clients in p (lock held). */
static void pool_janitor_one(struct pool *p, struct worker *w, int64_t now)
{
    const struct config *cfg = g_pooler.cfg;
    struct list *it, *tmp;
    int min = pool_min_size_of(p);

    /* Idle servers: idle timeout above min_pool_size, lifetime. Taken off
     * the idle list at once, so no other worker picks them meanwhile. */
    int total = pool_total(p);
    list_for_each_safe(it, tmp, &p->idle)
    {
        struct server *sv = list_entry(it, struct server, node);
        if (sv->owner != w)
            continue;
        const char *why = NULL;
        if (cfg->server_idle_timeout > 0 && now - sv->last_used >= cfg->server_idle_timeout &&
            total > min)
            why = "server idle timeout";
        else if (pool_server_too_old(sv, now) && total > min)
            why = "server lifetime over";
        else if (!p->db->cfg)
            why = "database removed";
        else if (pool_off_target(sv))
            why = "its host is not the primary any more";
        else if (sv->evicted)
            why = "evicted"; /* by another worker, for another pool's client */
        if (why) {
            total--;
            pool_close_locked(sv, why);
        }
    }
    /* Connections that take too long to log in (a replica's have their
     * own, usually shorter, limit: reads can go elsewhere). */
    int64_t connect_timeout = p->db->endpoints[p->ep].role == EP_PRIMARY
                                  ? cfg->server_connect_timeout
                                  : cfg->replica_connect_timeout;
    list_for_each_safe(it, tmp, &p->busy)
    {
        struct server *sv = list_entry(it, struct server, node);
        if (sv->owner == w && (sv->state == SV_CONNECTING || sv->state == SV_LOGIN) &&
            connect_timeout > 0 && now - sv->connect_time >= connect_timeout) {
            pool_connect_failed_locked(p, "server connect timeout", false, now);
            if (p->ep == 0 &&
                replicas_target_failed(p->db, sv->target, "server connect timeout", cfg, now))
                pool_retarget_locked(p, w);
            pool_close_locked(sv, "connect timeout");
        } else if (sv->owner == w && sv->state == SV_RESETTING && sv->rescue_until &&
                   now >= sv->rescue_until) {
            pool_close_locked(sv, "no answer to the undoing of what its client left");
        }
    }
    /* A replication client's walsender that must go (RECONNECT, a changed
     * database or server TLS settings) goes now, its client with it, as in
     * PgBouncer: such a session may last forever. */
    list_for_each_safe(it, tmp, &p->active)
    {
        struct server *sv = list_entry(it, struct server, node);
        if (sv->owner != w || !sv->replication || !sv->close_needed || sv->state != SV_ACTIVE)
            continue;
        if (sv->held)
            p->n_held--;
        sv->held = false;
        pool_close_locked(sv, "database configuration changed");
    }
    if (p->ep != 0)
        pool_janitor_replica(p, w, now);
    else if (p->db->cfg && (volatility_pending(p->db) || cache_catalog_pending(p->db)))
        pool_janitor_lookup(p, w, now);
    pool_janitor_waiting(p, w, now);
    /* Keep min_pool_size warm (worker 0 does it for all), retry after
     * failures, use the reserve. */
    if (w->id == 0 && !g_pooler.shutting_down && p->db->cfg && !g_pooler.paused && !p->db->paused) {
        while (pool_total(p) < min && pool_may_open(p, now, false))
            pool_new_server(p, w, now);
    }
    pool_dispatch_locked(p, now);
}

void pool_janitor(struct worker *w)
{
    int64_t now = worker_now(w);
    struct list *it, *tmp;
    pool_lock();
    if (w->id == 0 && !g_pooler.shutting_down)
        pool_make_forced_locked();
    if (w->id == 0)
        pool_autodb_janitor_locked(now);
    list_for_each_safe(it, tmp, &g_pooler.pools)
    {
        pool_janitor_one(list_entry(it, struct pool, node), w, now);
    }
    pool_unlock_run();
}
