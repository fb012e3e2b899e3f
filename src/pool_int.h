/* pool_int.h - what the files of the pool module share: pool.c (states,
 * dispatch, lending), pool_janitor.c (timeouts, replica checks) and
 * pool_registry.c (databases, users, pools, config). Not for other modules:
 * they use pool.h. */
#ifndef SLUICE_POOL_INT_H
#define SLUICE_POOL_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "pool.h"
#include "replicas.h"

/* What a pool function decided under the lock and runs after letting go:
 * anything that writes to a socket, connects or closes. */
enum pool_action_kind {
    PA_ASSIGN = 0,    /* carry the picked server sv on to its client (handoff) */
    PA_LINK,          /* lend sv to c (same worker, both ready) */
    PA_CONNECT,       /* start the connect of a new server sv */
    PA_CLOSE,         /* close sv (why) */
    PA_TEST,          /* run server_check_query on sv */
    PA_RESET,         /* run server_reset_query on sv */
    PA_UNLINKED,      /* c's server went back: c may go on */
    PA_WELCOME,       /* c's pool can welcome it now */
    PA_FAIL,          /* close c with its pool's login error */
    PA_WAIT_TIMEOUT,  /* close c: query_wait_timeout */
    PA_QUERY_TIMEOUT, /* close c: query_timeout, waiting for a server */
    PA_NOTICE,        /* tell waiting c (why: the text) in a NoticeResponse */
    PA_FREE_CLIENT,   /* c closed while a server was on its way: free it now */
    PA_FREE_SERVER,   /* sv closed while on its way here: free it now */
    PA_KICK,          /* ask worker w to look at its clients and servers */
    PA_REROUTE,       /* c left a banned replica's waiting list: route it again */
    PA_PROBE,         /* run a replica's health check on idle sv */
    PA_LOOKUP,        /* ask pg_proc about functions the router met, on idle sv */
};

/* The layers above (pool_set_ops()). */
extern struct pool_ops pool_ops_table;

/* Servers a pool has, counted against its size. */
static inline int pool_total(const struct pool *p)
{
    return p->n_idle + p->n_active + p->n_busy - p->n_held;
}

/* Whether sv, a server of endpoint 0 of a database with several hosts,
 * connects to a host that is not where writes go now (replicas.h): such a
 * server is closed, never lent. */
static inline bool pool_off_target(const struct server *sv)
{
    const struct pool *p = sv->pool;
    return p->ep == 0 && p->db->n_hosts > 0 && !replicas_target_ok(p->db, sv->target, g_pooler.cfg);
}

/* Queues an action to run once the lock is let go (pool_unlock_run()). */
void pool_act(enum pool_action_kind kind, struct server *sv, struct client *c, struct worker *w,
              const char *why);
/* pool_act() for an action on client c about pool p, the pool c waited
 * for (not c->pool for a client waiting on auth_query, which waits for a
 * server of the auth_user's pool): PA_FAIL and PA_WAIT_TIMEOUT take their
 * error from p. */
void pool_act_client(enum pool_action_kind kind, struct client *c, struct pool *p);
/* Leaves the lock and runs what was decided under it. */
void pool_unlock_run(void);
/* The running thread's worker (worker 0 for other threads). */
struct worker *pool_self(void);

/* server_set_state() / client_set_state() with the lock held; head: back
 * at the head of the waiting list. */
void pool_sv_state_locked(struct server *sv, enum server_state st);
void pool_cl_state_locked(struct client *c, enum client_state st, bool head);

/* Lock held, all of them. */
/* The pools of databases with a forced user (user= in [databases]) and a
 * min_pool_size, made once per config so that they are kept warm before
 * any client comes (PgBouncer does); worker 0's janitor calls it. */
void pool_make_forced_locked(void);
/* autodb_idle_timeout (worker 0's janitor, lock held): a database made
 * from "*" whose pools have had no client and no server for that long is
 * dropped, as PgBouncer drops it (pool_registry.c); 0: never. */
void pool_autodb_janitor_locked(int64_t now);
bool pool_may_open(struct pool *p, int64_t now, bool allow_reserve);
/* p may not open a server because its database's max_db_connections or its
 * user's max_user_connections is reached (and for nothing else): an idle
 * server of another pool of that database or user is closed to make room,
 * as PgBouncer does, unless one is on its way out already. */
void pool_evict_locked(struct pool *p, int64_t now, bool allow_reserve);
/* Pools of sv's database and user with waiting clients try again (an
 * evicted server of theirs has just closed). */
void pool_dispatch_evicted_locked(const struct server *sv, int64_t now);
struct server *pool_new_server(struct pool *p, struct worker *w, int64_t now);
void pool_dispatch_locked(struct pool *p, int64_t now);
void pool_close_locked(struct server *sv, const char *why);
/* sv must go for server_lifetime: older than it, or with 0, once it has
 * served a client. */
bool pool_server_too_old(const struct server *sv, int64_t now);
void pool_connect_failed_locked(struct pool *p, const char *why, bool fatal_for_clients,
                                int64_t now);

#endif
