/* pool.h - pools of server connections per (database, user), the global
 * registry of databases, users and pools, and the dispatcher that lends
 * servers to waiting clients. */
#ifndef SLUICE_POOL_H
#define SLUICE_POOL_H

#include "conn.h"

struct auth_userlist;
struct worker;

/* Process-wide state. Touched only from the loop thread(s) holding it. */
struct pooler {
    struct config *cfg;
    struct auth_userlist *userlist;
    struct list databases;
    struct list users;
    struct list pools;
    int n_clients; /* every client connection, for max_client_conn */
    struct client **cancel_hash;
    unsigned cancel_hash_size;
    bool shutting_down; /* SIGINT: no new clients; exit when no transactions */
    bool paused;
    uint64_t next_client_id;
    uint64_t next_server_id;
    struct worker *workers;
    int n_workers;
};
extern struct pooler g_pooler;

/* The runtime database for a client's database name, created from the
 * config (or the "*" entry) on first use. NULL if unknown. */
struct database *pool_find_database(const char *name);
/* The pool for (db, server login user), created on first use. */
struct pool *pool_get(struct database *db, const char *login_user);
struct pool_user *pool_get_user(const char *name);

/* Effective settings for a pool (database/user entries over general ones). */
enum pool_mode pool_mode_of(const struct pool *p);
int pool_size_of(const struct pool *p);
int pool_min_size_of(const struct pool *p);
int pool_reserve_of(const struct pool *p);

/* Client c has a request: queue it and try to give it a server. */
void pool_client_wait(struct client *c);
/* Queues c on pool p (not its own: auth_query runs on the auth_user's pool);
 * c->state is left to the caller. */
void pool_client_wait_on(struct client *c, struct pool *p);
/* Removes c from the waiting or login-wait list (it is closing). */
void pool_client_unwait(struct client *c);
/* Gives idle servers to waiting clients and opens connections as needed. */
void pool_dispatch(struct pool *p);
/* The client is done with sv (transaction end, client left): sv goes back to
 * the pool, through reset or check if needed, or is closed. */
void pool_release_server(struct server *sv);
/* A server finished login / reset / check and is usable. */
void pool_server_ready(struct server *sv);
/* Unlinks sv from its lists and counts (it is being freed). */
void pool_server_gone(struct server *sv);
/* A server login failed: remember why, for waiting clients and retry delay. */
void pool_connect_failed(struct pool *p, const char *why, bool fatal_for_clients);

/* Calls fn(sv, arg) for every server of p (active, idle, then busy) and
 * returns the first server for which fn returns true, or NULL. fn must not
 * close servers of p other than sv. */
struct server *pool_find_server(struct pool *p, bool (*fn)(struct server *sv, void *arg),
                                void *arg);

/* Periodic: timeouts, idle server closing, min_pool_size, retries. */
void pool_janitor(struct worker *w);
/* Number of servers linked to clients in a transaction (for SIGINT). */
int pool_count_active(void);
/* Closes every server connection (shutdown). */
void pool_close_all(void);
void pool_free_all(void);

/* Reload: point databases at the new config's entries. */
void pool_apply_config(struct config *cfg);

/* Cancel-key registry of clients. */
void pool_cancel_register(struct client *c);
void pool_cancel_unregister(struct client *c);
struct client *pool_cancel_lookup(uint32_t pid, uint32_t key);

#endif
