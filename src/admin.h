/* admin.h - the admin console: the virtual databases "pgbouncer" and
 * "sluice", PgBouncer's SHOW commands and controls (docs/admin.md).
 *
 * The console speaks the simple query protocol (psql) and the extended one
 * (drivers that Parse/Bind/Execute, asyncpg, psycopg with prepare=True). */
#ifndef SLUICE_ADMIN_H
#define SLUICE_ADMIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "client_login.h"

struct client;
struct database;
struct pool;
struct config;
struct worker;

/* True for the console's database names. */
bool admin_is_admin_db(const char *dbname);

/* Checks c->user against admin_users / stats_users (with auth_type = any,
 * any user gets in as a stats user, as in PgBouncer). The user "pgbouncer"
 * over the Unix socket from a process of sluice's own uid (SO_PEERCRED) is
 * an admin without a password, whatever auth_type is (PgBouncer's rule).
 * On refusal closes c with PgBouncer's error ("not allowed"). Sets
 * c->admin_stats_only for users that may only run SHOW. */
enum client_console_access admin_check_user(struct client *c);

/* Sends the console's welcome (AuthenticationOk, parameters,
 * BackendKeyData, ReadyForQuery) to an authenticated admin client. */
void admin_welcome(struct client *c);

/* Handles the messages buffered on an admin client (c->s.rbuf): runs the
 * commands and writes their results. May close c (Terminate, protocol
 * errors, KILL_CLIENT of itself). A command that waits (PAUSE, WAIT_CLOSE,
 * SHUTDOWN WAIT_FOR_SERVERS) leaves the later messages buffered; they are
 * handled once it completes. */
void admin_handle(struct client *c);

/* c, an admin client, is being freed: drops what the console keeps for it
 * (prepared statements, a waiting command). Safe for any client. */
void admin_client_closed(struct client *c);

/* Starts the console's timers on w's loop (stats averages every
 * stats_period, waiting commands). Idempotent; admin_welcome() calls it too. */
void admin_init(struct worker *w);

/* Stops the timers and frees everything the console keeps (at exit). */
void admin_free_all(void);

/* One pool's row of SHOW POOLS, for other readers of the same figures
 * (metrics.c), so that they and the console never disagree. */
struct admin_pool_view {
    const struct pool *pool; /* NULL for the console's row */
    const char *database, *user;
    /* Which endpoint of the database: "primary", or a replica's "HOST:PORT". */
    char endpoint[280];
    int cl_active, cl_waiting;
    int sv_active, sv_idle, sv_used, sv_tested, sv_login, sv_canceled;
    int64_t maxwait_usec; /* how long the first waiting client has waited */
};
/* Calls fn for every pool (not the console) in SHOW POOLS order, with the
 * values SHOW POOLS would print at loop time now. The view is valid only
 * during the call. */
void admin_pools_each(int64_t now, void (*fn)(const struct admin_pool_view *v, void *arg),
                      void *arg);

/* What endpoint ep of db is at loop time now, as SHOW REPLICAS' state
 * column says it (ok, lagging, banned, down, primary, ...; admin.md). */
const char *admin_endpoint_state(const struct database *db, int ep, int64_t now);

/* One database's totals of SHOW STATS (times in microseconds). */
struct admin_db_view {
    const char *name;
    uint64_t assign_count, xact_count, query_count, bytes_in, bytes_out;
    uint64_t xact_time, query_time, wait_time;
    uint64_t replica_reads, retries;
    uint64_t servers_kept;                        /* rolled back and kept after their client left */
    uint64_t client_parses, server_parses, binds; /* prepared statements */
};
/* Calls fn for every row of SHOW STATS (the console "pgbouncer" included),
 * by name, with the totals SHOW STATS would print now. */
void admin_stats_each(void (*fn)(const struct admin_db_view *v, void *arg), void *arg);

/* Hooks into main. RELOAD: loads the files again and applies them; false
 * with a reason in err if the new config is refused. */
extern bool (*admin_reload_hook)(char *err, size_t errlen);
/* SHUTDOWN WAIT_FOR_SERVERS (false: main's SIGINT path) or WAIT_FOR_CLIENTS
 * (true: SIGTERM's): stop accepting connections (the Unix socket stays, for
 * the console) and exit in the background once no client is in a
 * transaction, respectively once no client is left. During a shutdown
 * already under way, switches it to the mode given. */
extern void (*admin_shutdown_hook)(bool wait_for_clients);
/* SET: makes cfg (a copy of the running config with one setting changed)
 * the running config, the way RELOAD installs a freshly loaded one. Takes
 * over the caller's reference to cfg in every case; false with a reason in
 * err if cfg cannot be applied (the running config stays). keep_tls: the
 * TLS contexts stay as they are (half of a key/certificate pair was set;
 * the pair applies with the other half). */
extern bool (*admin_apply_config_hook)(struct config *cfg, bool keep_tls, char *err, size_t errlen);

#endif
