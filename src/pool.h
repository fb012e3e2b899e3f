/* pool.h - pools of server connections per (database, user), the global
 * registry of databases, users and pools, and the dispatcher that lends
 * servers to waiting clients. */
#ifndef SLUICE_POOL_H
#define SLUICE_POOL_H

#include <pthread.h>

#include "conn.h"

struct auth_userlist;
struct worker;

/* Process-wide state. The registry lists, every struct pool, database and
 * pool_user, server list membership and the cancel-key hash are guarded by
 * lock, which is never held across I/O: pool functions decide under it and
 * act (link, connect, close, write) after letting go. cfg, userlist,
 * paused and shutting_down change only under the world lock (worker.h). */
struct pooler {
    pthread_mutex_t lock;
    bool locking; /* lock is used: set while more than one loop thread runs */
    struct config *cfg;
    struct auth_userlist *userlist;
    struct list databases;
    struct list users;
    struct list pools;
    /* Databases made from "*" that autodb_idle_timeout dropped, and their
     * pools: off the lists above (no SHOW, no statistics), kept for when
     * the name is used again, since other modules may still hold them. */
    struct list retired, retired_pools;
    int n_clients; /* every client connection, for max_client_conn (atomic) */
    struct client **cancel_hash;
    unsigned cancel_hash_size;
    bool shutting_down; /* SIGINT: no new clients; exit when no transactions */
    /* A shutdown is under way (SIGINT, SIGTERM, SHUTDOWN WAIT_FOR_*): the
     * TCP listeners are closed; the Unix socket takes console logins only. */
    bool stopping;
    bool paused;
    uint64_t next_client_id; /* atomic */
    uint64_t next_server_id; /* atomic */
    struct worker *workers;
    int n_workers;
};
extern struct pooler g_pooler;

/* What pool.c decides under its lock and the layers above carry out after
 * it lets go (registered once, by main, before any pool is used). */
struct pool_ops {
    /* A new server of pool p on worker w: allocated, not connected. */
    struct server *(*new_server)(struct pool *p, struct worker *w, int64_t now);
    /* Resolve and connect sv (again, when it waited for DNS); false while
     * the DNS answer is still pending. */
    bool (*start_server)(struct server *sv);
    /* Run server_check_query / server_reset_query, then pool_server_ready()
     * (or close sv). */
    void (*check_server)(struct server *sv);
    void (*reset_server)(struct server *sv);
    void (*close_server)(struct server *sv, const char *why);
    void (*free_server)(struct server *sv); /* closed while it moved: free it */
    /* Lend sv (on c's worker, both ready) to waiting c. */
    void (*link)(struct server *sv, struct client *c);
    void (*unlinked)(struct client *c); /* its server went back: c goes on */
    /* c waited for a replica that may not take reads now: it is idle again,
     * its request still buffered, to be routed anew. */
    void (*reroute)(struct client *c);
    /* Run a replica's health check on sv (SV_TESTING, idle before), then
     * pool_server_ready() (or close sv). */
    void (*probe_server)(struct server *sv);
    /* Look up the functions queued in volatility.h on sv (SV_TESTING, a
     * primary's idle server before), then pool_server_ready(). */
    void (*lookup_server)(struct server *sv);
    void (*welcome)(struct client *c); /* c's pool can welcome it now */
    void (*fail)(struct client *c, const char *sqlstate, const char *msg);
    void (*notice)(struct client *c, const char *msg); /* a NoticeResponse to c */
    void (*free_client)(struct client *c);             /* closed while a server was on its way */
};
void pool_set_ops(const struct pool_ops *ops);
/* c's server closed before any of its answer reached c, and c's request is
 * back in its buffer (a read sent again, relay.c): c is idle again and the
 * request goes through the dispatcher anew. c->server is NULL already. */
void pool_client_retry(struct client *c);
/* c's server closed after c's request was answered (while sluice read the
 * position of its write, ryw.h): c goes on without it, as when it goes
 * back. c->server is NULL already. */
void pool_client_lost(struct client *c);

/* The one way a client's or a server's state changes (conn.h lists which
 * states put them on which pool list): the transition is checked (a bug is
 * logged, and stops a test build), and the object moves to the list its
 * new state is on. From any thread that may touch the object; takes the
 * pool lock when a list changes. Inline for the common case (a checked
 * move that changes no list, by the object's own worker). */
extern const uint8_t pool_server_list_of[SV_CLOSED + 1]; /* the list of each state */
extern const uint16_t pool_server_next[SV_CLOSED + 1];   /* the moves of each state */
extern const uint16_t pool_client_next[CL_CLOSED + 1];
#define POOL_CLIENT_LISTED ((1u << CL_WAITING) | (1u << CL_AUTH_WAIT) | (1u << CL_LOGIN_WAIT))
void client_set_state_slow(struct client *c, enum client_state st);
void server_set_state_slow(struct server *sv, enum server_state st);

static inline void client_set_state(struct client *c, enum client_state st)
{
    enum client_state from = atomic_load_explicit(&c->state, memory_order_relaxed);
    if (from == st)
        return;
    if (!(((1u << from) | (1u << st)) & POOL_CLIENT_LISTED) &&
        (pool_client_next[from] & (1u << st))) {
        atomic_store_explicit(&c->state, st, memory_order_relaxed);
        return;
    }
    client_set_state_slow(c, st);
}

static inline void server_set_state(struct server *sv, enum server_state st)
{
    enum server_state from = atomic_load_explicit(&sv->state, memory_order_relaxed);
    if (from == st)
        return;
    if (pool_server_list_of[st] == pool_server_list_of[from] &&
        (pool_server_next[from] & (1u << st))) {
        atomic_store_explicit(&sv->state, st, memory_order_relaxed);
        return;
    }
    server_set_state_slow(sv, st);
}

/* With one worker no other thread touches pools (the DNS threads keep to
 * their queue), so the lock is skipped: a single loop pays nothing for it. */
static inline void pool_lock(void)
{
    if (g_pooler.locking)
        pthread_mutex_lock(&g_pooler.lock);
}

static inline void pool_unlock(void)
{
    if (g_pooler.locking)
        pthread_mutex_unlock(&g_pooler.lock);
}

/* Frees the running thread's pool state (at thread exit). */
void pool_thread_done(void);

/* Adds n to a statistics counter shared by the workers. */
#define POOL_STAT_ADD(field, n) __atomic_fetch_add(&(field), (n), __ATOMIC_RELAXED)

/* The runtime database for a client's database name, created from the
 * config (or the "*" entry) on first use. NULL if unknown. */
struct database *pool_find_database(const char *name);
/* The pool of db's primary for a server login user, created on first use. */
struct pool *pool_get(struct database *db, const char *login_user);
/* The pool of the same database and login user as p, for endpoint ep of
 * the database (p itself when it is ep's). */
struct pool *pool_of_endpoint(struct pool *p, int ep);
struct pool_user *pool_get_user(const char *name);

/* A database's endpoints from its entry (made, or remade on reload: a
 * slot keeps its state while its address stays), and their release.
 * Returns the slots whose address changed or that left the config (bit i:
 * endpoints[i]): their servers must go. */
unsigned pool_db_set_endpoints(struct database *db, const struct config_database *cd);
void pool_db_free_endpoints(struct database *db);

/* Effective settings for a pool (database/user entries over general ones). */
void pool_refresh_settings(struct pool *p);
static inline enum pool_mode pool_mode_of(const struct pool *p)
{
    return p->mode;
}
int pool_size_of(const struct pool *p);
int pool_min_size_of(const struct pool *p);
int pool_reserve_of(const struct pool *p);
int pool_db_max_connections(const struct database *db);
int pool_user_max_connections(const struct pool_user *u);

/* max_db_client_connections, max_user_client_connections: counts client c
 * (its pool set, logging in) in its database and in its user (the name it
 * logs in with), as PgBouncer does. NULL when c is within both limits; else
 * the message c is to be closed with (PgBouncer's). c stays counted either
 * way, until pool_uncount_client() (client_free). */
const char *pool_count_client(struct client *c);
void pool_uncount_client(struct client *c);

/* The timeouts that apply to client c: its user's [users] entry, else
 * (query_wait_timeout) its database's entry, else the general settings.
 * Microseconds; 0 disables. */
struct pool_client_timeouts {
    int64_t query_timeout;
    int64_t query_wait_timeout;
    int64_t idle_transaction_timeout;
    int64_t transaction_timeout;
    int64_t client_idle_timeout;
};
void pool_client_timeouts(const struct client *c, struct pool_client_timeouts *t);
/* server_lifetime of p's database (its entry's, else the general one). */
int64_t pool_server_lifetime(const struct pool *p);

/* c has logged in: true if the pool can welcome it now (the caller calls
 * client_welcome()); false if c now waits for the pool's first server login
 * (CL_LOGIN_WAIT), and client_welcome() runs once it is done. */
bool pool_client_login(struct client *c);
/* Client c has a request for pool p (the router's choice; for auth_query
 * the auth_user's pool): it waits for a server of p in state st
 * (CL_WAITING, CL_AUTH_WAIT) and one is lent if there is one to lend;
 * pool_ops.link runs when it is, maybe before this returns. */
void pool_client_wait(struct client *c, struct pool *p, enum client_state st);
/* c is being freed: true if a server is on its way to it, in which case
 * pool.c frees c (client_reap()) once the server arrives. */
bool pool_client_defer_free(struct client *c);
/* Gives idle servers to waiting clients and opens connections as needed. */
void pool_dispatch(struct pool *p);
/* db's primary changed (several hosts, replicas.h): its endpoint 0 pools
 * start over: their connect backoff is forgotten, this thread's idle
 * servers to another host are closed (other workers' are closed by their
 * janitor, and none is lent meanwhile), and waiting clients get servers
 * of the new primary. */
void pool_db_primary_changed(struct database *db);
/* The client is done with sv (transaction end, client left): sv goes back to
 * the pool, through reset or check if needed, or is closed. */
void pool_release_server(struct server *sv);
/* A server finished login / reset / check and is usable. */
void pool_server_ready(struct server *sv);
/* Unlinks sv from its lists and counts (it is being closed). true if sv was
 * picked for a client and is on its way: pool.c frees it (server_reap())
 * when it arrives. */
bool pool_server_gone(struct server *sv);
/* Was idle sv picked for a client of another worker? Its owner then leaves
 * it alone (no reading, no closing) until it has moved. */
bool pool_server_moving(struct server *sv);
/* A server login failed: remember why, for waiting clients and retry delay. */
void pool_connect_failed(struct pool *p, const char *why, bool fatal_for_clients);
/* Opens one more server for p on worker w now, outside the pool's limits,
 * for holder (LISTEN's connections): once logged in it is active and
 * holder->on_ready runs. NULL if it failed at once. */
struct server *pool_connect_server(struct pool *p, struct worker *w,
                                   const struct server_holder_ops *holder);
/* pool_connect_server() for a walsender of sluice's own (the result
 * cache's logical decoding consumer): the server logs in with
 * replication mode (enum replication_mode; no client's parameters). */
struct server *pool_connect_walsender(struct pool *p, struct worker *w,
                                      const struct server_holder_ops *holder, uint8_t mode);
/* pool_connect_server() for c, a replication client of p on its own
 * worker: the server logs in with c's replication mode and is linked to c
 * from the start (c->server, sv->client), c's alone: when c lets go of it
 * (pool_release_server()) it is closed, never pooled. c may be closed
 * before this returns (a connect that failed at once). */
void pool_connect_replication(struct pool *p, struct client *c,
                              const struct server_holder_ops *holder);
/* A held server logged in: it is active, outside the pool's size. */
void pool_server_held(struct server *sv);
/* A ParameterStatus during a first login (pool lock held, welcome not
 * ready): name = value goes into the pool's welcome, and interned into its
 * welcome_params when the parameter is tracked (tp >= 0). */
void pool_welcome_add(struct pool *p, const char *name, const char *value, const char *interned,
                      int tp);
/* A server that waited for DNS: dns.c answered for p. */
void pool_dns_done(struct pool *p);

/* worker_ops: a server (its inbox_node) was handed to the running worker:
 * it checks it and lends it to the client it was picked for. */
void pool_inbox_item(struct list *item);
/* worker_ops: the end of the owner's loop iteration: the server leaves for
 * its client's worker. */
void pool_outgoing_item(struct list *item);
/* Inbox: the worker was asked to look at its clients and servers. */
void pool_inbox_kick(struct worker *w);

/* Calls fn(sv, arg) for every server of p (active, idle, then busy) and
 * returns the first server for which fn returns true, or NULL. fn must not
 * close servers of p other than sv. */
struct server *pool_find_server(struct pool *p, bool (*fn)(struct server *sv, void *arg),
                                void *arg);

/* One of p's idle servers owned by w for which fit(sv, arg) holds, taken
 * for a query of sluice's: SV_TESTING until pool_server_ready() gives it
 * back (or it closes). NULL if there is none; then, with spare, p opens
 * one more server on w if it may and opens none already, for next time. */
struct server *pool_take_idle(struct pool *p, struct worker *w,
                              bool (*fit)(const struct server *sv, const void *arg),
                              const void *arg, bool spare);

/* Periodic: timeouts, idle server closing, min_pool_size, retries. */
void pool_janitor(struct worker *w);
/* Number of servers linked to clients in a transaction (for SIGINT). */
int pool_count_active(void);
/* Closes every server connection (shutdown). */
void pool_close_all(void);
void pool_free_all(void);

/* Reload: point databases at the new config's entries. drop_servers:
 * every server goes too (idle ones now, the others when they come back),
 * as after a change of the server TLS settings. */
void pool_apply_config(struct config *cfg, bool drop_servers);

/* Cancel-key registry of clients. The lookup's answer may belong to another
 * worker: use it under the world lock. */
void pool_cancel_register(struct client *c);
void pool_cancel_unregister(struct client *c);
struct client *pool_cancel_lookup(uint32_t pid, uint32_t key);

#endif
