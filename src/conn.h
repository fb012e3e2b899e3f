/* conn.h - the connection objects shared by client.c, server.c, pool.c and
 * the admin console: clients, servers, pools, and the stream under each.
 *
 * Ownership: a pool owns its servers; a worker owns the clients it accepted;
 * a client and a server are linked while the server is lent to the client.
 * Threads (worker.h): fields marked [pool lock] are read and written only
 * under g_pooler.lock; the rest belong to the owning worker's thread. */
#ifndef SLUICE_CONN_H
#define SLUICE_CONN_H

#include <ev.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "config.h"
#include "iobuf.h"
#include "list.h"
#include "params.h"
#include "proto.h"
#include "stream.h"

struct worker;
struct pool;
struct client;
struct server;

/* ---- clients ------------------------------------------------------------- */

enum client_state {
    CL_STARTUP = 0, /* waiting for the startup packet (maybe after SSLRequest) */
    CL_AUTH,        /* waiting for a password / SASL message */
    CL_AUTH_QUERY,  /* waiting for auth_query's answer */
    CL_LOGIN_WAIT,  /* authenticated; waiting for the pool to have server parameters */
    CL_IDLE,        /* logged in, no server, nothing to do */
    CL_WAITING,     /* has a request, on the pool's waiting list */
    CL_ACTIVE,      /* linked to a server */
    CL_CLOSED,      /* being freed */
};
const char *client_state_str(enum client_state st);

struct client_auth; /* login-time state, freed after login */
struct prepared_client;
struct prepared_set;
struct listen_client;

struct client {
    struct stream s;
    enum client_state state;
    struct list node;      /* on worker's client list */
    struct list wait_node; /* [pool lock] on pool's waiting list while CL_WAITING */
    struct pool *pool;
    struct pool *wait_pool;  /* [pool lock] whose waiting list wait_node is on (auth_query) */
    struct server *incoming; /* [pool lock] a server on its way to this client (pool.c) */
    bool free_deferred;      /* [pool lock] closed while a server was on its way */
    bool fail_pending;       /* [pool lock] the pool's login failed: close with its error */
    struct server *server;   /* linked server while CL_ACTIVE (or CL_AUTH_QUERY) */
    struct client_auth *auth;
    struct param_set params;         /* what the client has been told */
    const char *user;                /* interned */
    const char *dbname;              /* interned */
    uint32_t cancel_pid, cancel_key; /* what the client was given (BackendKeyData) */
    struct client *hash_next;        /* cancel-key hash chain */
    struct sockaddr_storage addr;
    uint64_t id;
    int64_t connect_time; /* usec, monotonic clock */
    int64_t request_time; /* when the current wait/query began */
    int64_t last_activity;
    int64_t xact_start;
    bool is_admin; /* connected to the admin console */
    bool admin_stats_only;
    bool is_unix;
    bool unsynced; /* sent extended-protocol messages without Sync */
    bool in_copy;
    bool cancel_sent; /* query_timeout already fired */
    bool close_after_flush;
    const char *extras;   /* interned "SET a = 'x';..." for other startup settings, or NULL */
    uint32_t pending_rfq; /* ReadyForQuery messages the server still owes */
    uint32_t query_count_in_xact;
    /* Transaction pooling state (prepared.c): a small inline response queue,
     * and the rest allocated only once the client has statements/settings. */
    struct prepared_client *ps;
    uint8_t rq[16]; /* kinds of the requests the server still answers */
    uint8_t rq_head, rq_n;
    bool track;               /* tracked: transaction or statement mode */
    bool pinned;              /* holds its server to the end (state that cannot move) */
    bool errskip;             /* the server skips to Sync after an error */
    struct listen_client *lc; /* LISTEN state (listen.c); NULL unless it listens */
};

/* ---- servers ------------------------------------------------------------- */

enum server_state {
    SV_CONNECTING = 0, /* TCP/unix connect in progress */
    SV_LOGIN,          /* startup sent; authenticating; collecting parameters */
    SV_IDLE,           /* in the pool, ready */
    SV_TESTING,        /* running server_check_query before reuse */
    SV_RESETTING,      /* running server_reset_query after a session */
    SV_SETTING,        /* linked; sending SETs so params match the client's */
    SV_ACTIVE,         /* linked to a client */
    SV_CANCEL_WAIT,    /* query done, but a cancel for it is still in flight */
    SV_CLOSED,         /* being freed */
};
const char *server_state_str(enum server_state st);

struct server_auth;
struct server_query_queue;

/* Who holds a server that is lent (SV_ACTIVE) and what it hears: a client
 * (relay.c) or a consumer that opened the server for itself (LISTEN). */
struct server_holder_ops {
    /* Logged in: a server opened for its holder (pool_connect_server()). */
    void (*on_ready)(struct server *sv);
    /* Bytes arrived and no query of sluice's is pending on sv. */
    void (*on_data)(struct server *sv);
    /* A NotificationResponse (whole), read while a query of sluice's is
     * pending or through server_query_read(); NULL: notifications are
     * dropped. */
    void (*on_notify)(struct server *sv, const struct stream_msg *m);
    /* Output to the server was written out (backpressure lifts). */
    void (*on_drained)(struct server *sv);
    /* sv is closing (why); its holder lets go of it. c: the client it was
     * lent to, if any (no longer linked). */
    void (*on_closed)(struct server *sv, struct client *c, const char *why);
};

struct server {
    struct stream s;
    enum server_state state;
    struct list node;  /* [pool lock] on one of the pool's lists */
    uint8_t list_kind; /* [pool lock] which one (enum in pool.c) */
    struct pool *pool;
    struct client *client;
    /* [pool lock] the client this server was picked for, until it reaches
     * that client's worker and is linked (pool.c) */
    struct client *handoff;
    struct worker *owner;                   /* [pool lock] = s.worker, for other threads to read */
    struct list inbox_node;                 /* on a worker's inbox while moving */
    bool dns_wait;                          /* [pool lock] no socket yet: waits for dns.c */
    struct server_auth *auth;               /* login-time state (server_login.c) */
    const struct server_holder_ops *holder; /* while lent: who has it */
    struct server_query_queue *sq;          /* sluice's own queries (server_query.c) */
    struct param_set params;                /* what the server has reported */
    uint32_t backend_pid, backend_key;
    uint64_t id;
    int64_t connect_time;
    int64_t last_used; /* returned to pool (for idle timeout / check delay) */
    int64_t request_time;
    int cancels_in_flight;
    char xact_status;        /* last ReadyForQuery status: 'I', 'T', 'E' */
    bool ready;              /* last RFQ was idle and nothing is pending */
    bool close_needed;       /* close instead of reuse */
    bool login_done;         /* the first ReadyForQuery came */
    bool held;               /* opened for a holder, outside the pool's size (LISTEN) */
    const char *extras;      /* the client extras last applied (NULL = none) */
    struct prepared_set *ps; /* statements sluice prepared here (prepared.c) */
};

/* Whether sv may go back to the pool now: idle, nothing pending either way. */
static inline bool server_is_clean(const struct server *sv)
{
    return sv->ready && sv->xact_status == 'I' && !sv->s.skip &&
           (!sv->s.rbuf || iobuf_len(sv->s.rbuf) == 0) && !stream_has_output(&sv->s);
}

/* ---- pools --------------------------------------------------------------- */

/* Runtime state of a [databases] entry (survives reloads by name). */
struct database {
    char *name;
    struct config_database *cfg; /* points into the current config */
    struct list node;
    int n_servers; /* across all its pools, for max_db_connections */
    bool paused;
    bool disabled;
    bool autodb; /* made from the "*" entry */
    int64_t last_used;
};

struct pool_user {
    char *name;
    struct list node;
    int n_servers; /* for max_user_connections */
    int n_clients;
    /* SCRAM keys learned from a client's login, to log into servers as this
     * user when only a SCRAM secret is known. */
    bool have_scram_keys;
    uint8_t scram_client_key[32];
    char *scram_secret_text;
    char *password; /* from auth_query, when that is the source */
};

struct pool_welcome {
    int n;
    char *names[32];
    char *values[32];
};

struct pool {
    struct database *db;
    struct pool_user *user; /* the server login user */
    struct list node;       /* on the global pool list */
    struct list idle;       /* SV_IDLE, most recently used first */
    struct list active;     /* SV_ACTIVE, SV_SETTING */
    struct list busy;       /* SV_CONNECTING, SV_LOGIN, SV_TESTING, SV_RESETTING, SV_CANCEL_WAIT */
    struct list waiting;    /* CL_WAITING clients, first come first served */
    struct list login_wait; /* CL_LOGIN_WAIT clients */
    int n_idle, n_active, n_busy, n_waiting;
    int n_clients; /* clients assigned to this pool */
    int n_reserve_used;
    int n_held; /* held servers (sv->held) on active: not in the pool's size */
    bool welcome_ready;
    struct pool_welcome welcome;
    struct param_set welcome_params;
    int64_t last_connect_failed; /* for server_login_retry */
    int64_t retry_delay;         /* current backoff after failures; 0 after a success */
    char last_connect_error[256];
    int64_t last_connect_attempt;
    /* addresses resolved for the db host */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    bool addr_ok;
    int64_t addr_time;
    /* stats */
    uint64_t xact_count, query_count, bytes_in, bytes_out;
    uint64_t assign_count;                     /* servers lent to clients */
    uint64_t xact_time, query_time, wait_time; /* usec */
    int64_t max_wait_seen;
    struct prepared_set *ps_known; /* statements some server parsed fine (prepared.c) */
};

#endif
