/* admin_show_replicas.c - SHOW REPLICAS: every endpoint of every database
 * that has replicas, the primary first: where reads go, what the health
 * checks found, and why a replica takes none. Read under the world lock
 * (admin.c), so the pools' counts are steady. */
#include <stdatomic.h>
#include <stdio.h>

#include "admin.h"
#include "admin_int.h"
#include "conn.h"
#include "lag_monitor.h"
#include "pool.h"
#include "replicas.h"

/* The servers of endpoint ep of db, over all its pools. */
static void endpoint_servers(const struct database *db, int ep, int *active, int *idle)
{
    *active = *idle = 0;
    struct list *it, *tmp;
    list_for_each_safe(it, tmp, &g_pooler.pools)
    {
        const struct pool *p = list_entry(it, struct pool, node);
        if (p->db == db && p->ep == ep) {
            *active += p->n_active;
            *idle += p->n_idle;
        }
    }
}

/* What an endpoint is now. A host (several in host=): "primary" (endpoint 0
 * connects there), "promoted" (out of recovery too, but another host is
 * the primary), "banned", "unchecked", "down" (not banned by a read, but
 * its last check failed), else "ok" (a standby taking reads). Endpoint 0
 * with several hosts: "ok", or "none" while no host is the primary. */
const char *admin_endpoint_state(const struct database *db, int ep, int64_t now)
{
    const struct endpoint *e = &db->endpoints[ep];
    if (e->role == EP_REMOVED)
        return "removed";
    if (ep == 0)
        return replicas_no_primary(db, g_pooler.cfg) ? "none" : "ok";
    if (e->role == EP_HOST && replicas_discovers(db, g_pooler.cfg)) {
        int seen = atomic_load_explicit(&e->seen, memory_order_relaxed);
        if (ep == replicas_primary(db))
            return "primary";
        if (seen == RS_PRIMARY)
            return "promoted";
        if (atomic_load_explicit(&e->banned_until, memory_order_relaxed))
            return "banned";
        return seen == RS_STANDBY ? "ok" : replica_seen_str((enum replica_seen)seen);
    }
    if (e->role == EP_HOST)
        return "ok"; /* split off: a host connections are spread over */
    if (atomic_load_explicit(&e->promoted, memory_order_relaxed))
        return "promoted";
    if (atomic_load_explicit(&e->banned_until, memory_order_relaxed))
        return "banned";
    if (atomic_load_explicit(&e->lagging, memory_order_relaxed))
        return "lagging";
    if (!replicas_usable(db, ep, now))
        return "banned";
    return "ok";
}

static void replica_row(struct admin_result *r, const struct database *db, int ep, int64_t now)
{
    const struct endpoint *e = &db->endpoints[ep];
    /* Endpoint 0 of a database with several hosts is where it connects:
     * the primary's address. */
    bool several = ep == 0 && db->n_hosts > 0 && replicas_discovers(db, g_pooler.cfg);
    int primary = several ? replicas_primary(db) : ep;
    const struct endpoint *addr = primary >= 0 ? &db->endpoints[primary] : NULL;
    char f[12][ADMIN_NUM_LEN], lsn[32] = "";
    uint64_t lag_bytes = 0;
    int64_t lag_usec = 0;
    bool lag = ep != 0 && lag_monitor_lag(db, ep, now, &lag_bytes, &lag_usec);
    int active, idle;
    endpoint_servers(db, ep, &active, &idle);
    int64_t until = atomic_load_explicit(&e->banned_until, memory_order_relaxed);
    int reason = atomic_load_explicit(&e->ban_reason, memory_order_relaxed);
    uint64_t replay = atomic_load_explicit(&e->replay_lsn, memory_order_relaxed);
    int64_t checked = atomic_load_explicit(&e->last_check, memory_order_relaxed);
    if (replay)
        snprintf(lsn, sizeof(lsn), "%X/%X", (unsigned)(replay >> 32), (unsigned)replay);
    long long left = until > now ? (until - now + 999999) / 1000000 : 0;
    const char *v[] = {
        db->name,
        !addr           ? NULL
        : addr->host[0] ? addr->host
                        : "(unix socket)",
        addr ? admin_num4(f[0], addr->port) : NULL,
        endpoint_role_str(e->role),
        admin_endpoint_state(db, ep, now),
        until ? replica_ban_reason_str((enum replica_ban_reason)reason) : "",
        admin_num4(f[1], left),
        admin_num4(f[2], ep ? e->weight : 1),
        replay ? lsn : NULL,
        checked ? admin_num4(f[3], (now - checked) / 1000) : NULL,
        admin_num4(f[4], (long long)atomic_load_explicit(&e->reads, memory_order_relaxed)),
        admin_num4(f[5], (long long)atomic_load_explicit(&e->errors, memory_order_relaxed)),
        admin_num4(f[6], atomic_load_explicit(&e->outstanding, memory_order_relaxed)),
        admin_num4(f[7], active),
        admin_num4(f[8], idle),
        lag ? admin_num4(f[9], (long long)lag_bytes) : NULL,
        lag ? admin_num4(f[10], (long long)(lag_usec / 1000)) : NULL};
    admin_result_row(r, v);
}

void admin_show_replicas(struct admin_result *r)
{
    int64_t now = admin_loop_now(r);
    struct list *it, *tmp;
    list_for_each_safe(it, tmp, &g_pooler.databases)
    {
        const struct database *db = list_entry(it, struct database, node);
        if (db->n_endpoints < 2)
            continue;
        for (int ep = 0; ep < db->n_endpoints; ep++)
            replica_row(r, db, ep, now);
    }
}
