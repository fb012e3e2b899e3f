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
#include <stdatomic.h>
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

/* A client's state. States marked with a list put the client on it (and
 * only they do): client_set_state() (pool.c) is the one place a state
 * changes, checks the transition and keeps the lists right. */
enum client_state {
    CL_STARTUP = 0, /* waiting for the startup packet (maybe after SSLRequest) */
    CL_AUTH,        /* waiting for a password / SASL message */
    CL_AUTH_WAIT,   /* list: the auth_user's pool's waiting list, for auth_query */
    CL_AUTH_QUERY,  /* auth_query runs for it on a server of that pool */
    CL_LOGIN_WAIT,  /* list: its pool's login_wait, for the first server's parameters */
    CL_IDLE,        /* logged in, no server, nothing to do */
    CL_WAITING,     /* list: its pool's waiting list, with a request */
    CL_ASSIGNED,    /* a server was picked for it and is on its way */
    CL_ACTIVE,      /* linked to a server */
    CL_CLOSING,     /* taken off its list to be closed with an error */
    CL_CLOSED,      /* being freed */
};
const char *client_state_str(enum client_state st);

/* A replication connection's kind (replication.h), as its startup
 * packet's `replication` asked. */
enum replication_mode {
    REPLICATION_NONE = 0, /* a normal connection (also replication=false) */
    REPLICATION_PHYSICAL, /* replication=true: physical replication (pg_basebackup) */
    REPLICATION_LOGICAL,  /* replication=database: logical replication in a database */
};

struct client_auth;   /* login (client_login.c), freed once logged in */
struct request_queue; /* requests in flight (request.c) */
struct prepared_client;
struct prepared_set;
struct listen_client;
struct volatility_cache;
struct router_client; /* routing state (router.c), while needed */
struct ryw_client;    /* read-your-writes, per client (ryw.h) */

/* A client's address: IPv4 or IPv6 (unix sockets: is_unix). */
union client_addr {
    struct sockaddr sa;
    struct sockaddr_in in;
    struct sockaddr_in6 in6;
};

/* client->timeout_kind */
#define CLIENT_TIMEOUT_QUERY 1
#define CLIENT_TIMEOUT_XACT  2

/* A client connection. What a feature needs per client hangs off it by
 * pointer, allocated only while used: an idle logged-in client is this
 * struct alone (tests/unit/test_conn.c holds it to 400 bytes). */
struct client {
    struct stream s;
    struct list node;           /* on worker's client list */
    struct list wait_node;      /* [pool lock] on pool's waiting list while CL_WAITING */
    struct pool *pool;          /* of its current (or last) request; at login its primary's */
    struct pool *wait_pool;     /* [pool lock] whose waiting list wait_node is on */
    struct server *incoming;    /* [pool lock] a server on its way to this client (pool.c) */
    struct server *server;      /* linked server while CL_ACTIVE (or CL_AUTH_QUERY) */
    struct client_auth *auth;   /* login-time state */
    struct request_queue *rq;   /* requests in flight (request.c); NULL when none */
    struct prepared_client *ps; /* statements and settings (prepared.c, transaction mode) */
    struct listen_client *lc;   /* LISTEN state (listen.c); NULL unless it listens */
    struct param_set params;    /* what the client has been told */
    const char *user;           /* interned */
    const char *dbname;         /* interned */
    const char *extras;         /* interned "SET a = 'x';..." of other startup settings */
    struct client *hash_next;   /* cancel-key hash chain */
    uint64_t id;
    int64_t connect_time; /* usec, monotonic clock */
    union {
        int64_t request_time; /* when the current wait/query began */
        uint64_t flush_mark;  /* closed (close_after_flush): bytes_out at its last progress */
    };
    int64_t last_activity;
    union client_addr addr;
    /* Written only by client_set_state(); any worker may move a waiting
     * client (pool lock held) while its own worker reads it: atomic. */
    _Atomic(enum client_state) state;
    uint32_t cancel_pid, cancel_key; /* what the client was given (BackendKeyData) */
    bool free_deferred;              /* [pool lock] closed while a server was on its way */
    bool fail_pending;               /* [pool lock] the pool's login failed: close with its error */
    /* Set once, at accept or login, before any other thread sees c: they
     * share a byte (struct client stays within its size, test_conn.c). */
    bool is_admin : 1; /* connected to the admin console */
    bool admin_stats_only : 1;
    bool is_unix : 1;
    bool close_after_flush; /* closed, its last bytes still being written (client_finish) */
    bool track;             /* tracked: transaction or statement mode (set at each link) */
    bool stmt_mode;         /* statement mode: a transaction block is refused */
    bool pinned;            /* holds its server to the end (state that cannot move) */
    bool sets_pending;      /* its settings are being set on its new server: none of its
                             * bytes went there yet (relay.c) */
    bool requested;     /* has sent a request to a server (SIGINT waits for those that have not) */
    bool counted;       /* [pool lock] in its database's and its user's n_clients */
    bool wait_notified; /* query_wait_notify's NOTICE sent during this wait */
    bool bytes_wait;    /* its next request's first message is not all here yet: it waits,
                         * without a server, since request_time (client.c) */
    /* query_timeout / transaction_timeout with a request in flight that
     * may commit: its cancel was sent, and its server's answer decides
     * what the client is told (client.c, client_timeout_settled()). */
    uint8_t timeout_kind;   /* 0: none; CLIENT_TIMEOUT_QUERY or CLIENT_TIMEOUT_XACT */
    bool timeout_cancelled; /* the server said the statement was cancelled (57014) */
    /* (the wait's end is its server's settle_until: struct client stays
     * small) */
    uint8_t replication; /* enum replication_mode (replication.h): a walsender's client */
    /* Routing state while it needs one (router.h): a transaction the
     * router follows, a read kept to be sent again. NULL when none. */
    struct router_client *route;
    /* The result cache's state while it needs one (cache.c): a fill, the
     * writes of the transaction in flight. NULL when none. */
    struct cache_client *cache;
    /* Insights' state while it needs one (insights.c): the fingerprints
     * of the client's prepared statements. NULL when none. */
    struct insights_client *insights;
};

/* ---- servers ------------------------------------------------------------- */

/* A server's state, which says the pool list it is on (busy, idle,
 * active): server_set_state() (pool.c) is the one place a state changes,
 * checks the transition and moves the server to its list. */
enum server_state {
    SV_CONNECTING = 0, /* busy: TCP/unix connect in progress */
    SV_LOGIN,          /* busy: startup sent; authenticating; collecting parameters */
    SV_IDLE,           /* idle: in the pool, ready */
    SV_ASSIGNED,       /* active: picked for a client, on its way to the client's worker */
    SV_TESTING,        /* busy: running server_check_query before reuse */
    SV_RESETTING,      /* busy: running server_reset_query after a session */
    SV_SETTING,        /* active: linked; sending SETs so params match the client's */
    SV_ACTIVE,         /* active: linked to a client (or held: LISTEN) */
    SV_CANCEL_WAIT,    /* busy: query done, but a cancel for it is still in flight */
    SV_CLOSING,        /* busy: the pool decided to close it; the close runs next */
    SV_CLOSED,         /* on no list: being freed */
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
    /* As client.state: a dispatch on another worker picks an idle server. */
    _Atomic(enum server_state) state;
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
    int64_t xact_start; /* the first request of its transaction sent (transaction_timeout) */
    int cancels_in_flight;
    char xact_status;      /* last ReadyForQuery status: 'I', 'T', 'E' */
    bool ready;            /* last RFQ was idle and nothing is pending */
    bool close_needed;     /* close instead of reuse */
    uint8_t rescue;        /* enum server_rescue: what its departed client left to undo */
    const char *close_why; /* ... and why, when not a configuration change (static) */
    bool evicted;          /* [pool lock] closed to make room for another pool */
    bool lent;             /* [pool lock] has served a client: checked before reuse */
    bool login_done;       /* the first ReadyForQuery came */
    bool held;             /* opened for a holder, outside the pool's size (LISTEN) */
    bool in_recovery;      /* said in_hot_standby = on as it logged in */
    uint8_t replication;   /* enum replication_mode: a walsender, for one client */
    uint8_t rw_scope;      /* a committed write's position being read (ryw.h) */
    uint64_t rw_lsn;       /* ... the position read */
    int64_t settle_until;  /* until then its client's timed-out request waits for it (client.c) */
    int64_t rescue_until;  /* SV_RESETTING: by then what its client left is undone, or it closes */
    struct ryw_client *rw_client; /* ... for this client's own (while linked) */
    int target;                   /* the endpoint whose address it connects to: its pool's, or
                                   * for endpoint 0 of a database with several hosts the host
                                   * chosen as it was made (replicas_connect_target()) */
    const char *extras;           /* the client extras last applied (NULL = none) */
    struct prepared_set *ps;      /* statements sluice prepared here (prepared.c) */
};

/* What a server whose client left in the middle of something is sent
 * before it serves another client (request_rescue_plan(), server_reset()):
 * a bit set. Without any, such a server is closed; so is one that has not
 * answered it within SERVER_RESCUE_USEC (pool_janitor.c), or that answers
 * with an error. */
#define SERVER_RESCUE_USEC 5000000
enum server_rescue {
    SR_NONE = 0,
    SR_SYNC = 1,     /* end the batch the server skips after an error */
    SR_ROLLBACK = 2, /* roll back the transaction or batch left open */
    SR_RESET = 4,    /* then server_reset_query, as for a clean server */
};

/* The states with one relaxed load each: for a switch (which takes no
 * _Atomic operand) and to read a state once where it is used twice. */
static inline enum client_state client_state_of(const struct client *c)
{
    return atomic_load_explicit(&c->state, memory_order_relaxed);
}

static inline enum server_state server_state_of(const struct server *sv)
{
    return atomic_load_explicit(&sv->state, memory_order_relaxed);
}

/* sv is closed, saying why (static text), instead of going back to the pool. */
static inline void server_close_later(struct server *sv, const char *why)
{
    sv->close_needed = true;
    sv->close_why = why;
}

/* Whether sv may go back to the pool now: idle, nothing pending either way. */
static inline bool server_is_clean(const struct server *sv)
{
    return sv->ready && sv->xact_status == 'I' && !sv->s.skip &&
           (!sv->s.rbuf || iobuf_len(sv->s.rbuf) == 0) && !stream_has_output(&sv->s);
}

/* ---- pools --------------------------------------------------------------- */

/* One place a database's servers are. */
/* What an endpoint is to the router. */
enum endpoint_role {
    EP_PRIMARY = 0, /* endpoint 0: writes and whatever is not provably read-only; the entry's
                     * host, or with several hosts the one that is the primary now */
    EP_REPLICA,     /* one of its replicas=: reads, when read_write_split is on */
    EP_REMOVED,     /* no longer in the config: its pools drain, nothing new goes there */
    EP_HOST,        /* one of several hosts of host=: checked like a replica, takes reads
                     * while in recovery, and is where endpoint 0 connects while it is the
                     * primary (replicas.h, "Several hosts") */
};
const char *endpoint_role_str(enum endpoint_role r);

/* One server address of a database. The slot (its index) keeps its state
 * across reloads as long as its host and port stay; the pools of a slot
 * whose address changes lose their servers. Router state is atomic: every
 * worker reads and updates it without the pool lock. */
struct endpoint {
    char *host; /* a copy of the entry's; "" = unix socket in the default directory */
    int port;
    int weight; /* replicas: share of reads (replicas=HOST:PORT@WEIGHT) */
    enum endpoint_role role;
    _Atomic int outstanding;      /* requests routed here and not yet ended */
    _Atomic int64_t banned_until; /* monotonic usec; 0: not banned */
    _Atomic int ban_reason;       /* enum replica_ban_reason (replicas.h) of the last ban */
    _Atomic uint64_t reads;       /* requests the router sent here as reads */
    _Atomic uint64_t errors;      /* failures that banned it */
    _Atomic int64_t next_check;   /* monotonic usec when its health check is due */
    _Atomic int64_t last_check;   /* monotonic usec of its last passing check; 0: none */
    _Atomic uint64_t replay_lsn;  /* pg_last_wal_replay_lsn() at that check */
    _Atomic bool promoted;        /* that check found it out of recovery */
    _Atomic int seen;             /* EP_HOST: enum replica_seen (replicas.h) of its last check */
    /* Replication lag (lag_monitor.c), every lag_check_interval. */
    _Atomic uint64_t lag_lsn;   /* its replay LSN (the primary's: its current LSN) */
    _Atomic uint64_t lag_bytes; /* the primary's LSN minus its replay LSN */
    _Atomic int64_t lag_usec;   /* 0 when caught up, else the time since it last replayed */
    _Atomic int64_t lag_at;     /* monotonic usec of that measurement; 0: none yet */
    _Atomic int64_t hurry_at;   /* monotonic usec its position was last asked for waiting reads */
    _Atomic bool lagging;       /* past replica_max_lag(_bytes): no reads */
    _Atomic int lag_why;        /* lag_monitor.c: 0 caught up, 1 not measured, 2 behind */
    _Atomic uint64_t sysid;     /* the primary's: its cluster's system identifier (0: not read) */
    _Atomic uint32_t timeline;  /* the primary's: the timeline it writes on (0: not read) */
};

/* Read-your-writes: every write committed through sluice in a scope (a
 * database, or a database and user) is at or before lsn; pending writes
 * have committed and their position is being read (reads of the scope go
 * to the primary meanwhile); until unknown_until (monotonic usec) a
 * position could not be read, and reads go to the primary. router.c. */
struct rw_scope {
    _Atomic uint64_t lsn;
    _Atomic int pending;
    _Atomic int64_t unknown_until;
};

/* A database's endpoints: [0] is the primary, the entry's host and port;
 * with several hosts in host=, [1..n_hosts] are those hosts (EP_HOST) and
 * endpoint 0 connects to the one that is the primary (replicas.h); replicas
 * come after them, in the order of replicas=. */
#define DB_MAX_ENDPOINTS (1 + CONFIG_MAX_SERVERS)

/* Runtime state of a [databases] entry (survives reloads by name). */
struct database {
    char *name;
    struct config_database *cfg; /* points into the current config */
    int n_endpoints;
    struct endpoint endpoints[DB_MAX_ENDPOINTS];
    int n_hosts;              /* several hosts: endpoints[1..n_hosts]; 0: one host */
    _Atomic int primary;      /* several hosts: the one endpoint 0 connects to; -1: none */
    _Atomic int last_primary; /* the one before it (-1: none yet), for the log */
    _Atomic int lb_current;   /* load_balance_hosts = disable: the host in use */
    _Atomic uint64_t lb_turn; /* load_balance_hosts = round-robin: turns */
    struct list node;
    int n_servers;       /* across all its pools, for max_db_connections */
    int n_clients;       /* [pool lock] its logged-in clients, for max_db_client_connections */
    int n_evicting;      /* [pool lock] of them, evicted ones not closed yet */
    _Atomic uint64_t rr; /* turns of round-robin read balancing */
    struct rw_scope rw;  /* read-your-writes, read_your_writes = database */
    _Atomic(struct volatility_cache *) volatility; /* pg_proc answers (volatility.c) */
    _Atomic(struct cache_catalog *) catalog;       /* pg_class answers (cache_catalog.c) */
    _Atomic uint64_t cache_ctr[8];                 /* the result cache's counters (cache.c) */
    _Atomic int cache_gaps; /* sources of writes missing some now: nothing cached (cache.c) */
    bool paused;
    bool disabled;
    bool autodb; /* made from the "*" entry */
    /* autodb_idle_timeout, [pool lock]: unused since (monotonic usec; 0: in
     * use); the janitor's pass that last saw it used; dropped (off the
     * registry, on g_pooler.retired until its name is used again). */
    int64_t idle_since;
    unsigned used_pass;
    bool retired;
};

struct pool_user {
    char *name;
    struct list node;
    int n_servers;  /* for max_user_connections */
    int n_evicting; /* [pool lock] of them, evicted ones not closed yet */
    int n_clients;  /* [pool lock] clients logged in as it, for max_user_client_connections */
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

/* The servers of one endpoint of a database, for one login user: pools are
 * keyed by (database, user, endpoint). */
struct pool {
    struct database *db;
    struct pool_user *user; /* the server login user */
    int ep;                 /* its endpoint: db->endpoints[ep] */
    struct list node;       /* on the global pool list */
    struct list idle;       /* SV_IDLE, most recently used first */
    struct list active;     /* SV_ACTIVE, SV_SETTING */
    struct list busy;       /* SV_CONNECTING, SV_LOGIN, SV_TESTING, SV_RESETTING, SV_CANCEL_WAIT */
    struct list waiting;    /* CL_WAITING clients, first come first served */
    struct list login_wait; /* CL_LOGIN_WAIT clients */
    struct pool *home;      /* the same user's pool of endpoint 0 (itself there) */
    struct rw_scope rw;     /* endpoint 0: read-your-writes, read_your_writes = user */
    bool checker;           /* first pool of its endpoint: a host's health checks open
                             * their connection here (pool_janitor.c) */
    /* pg_cancel_backend() failed for this pool's user: its cancels go by
     * CancelRequest (server_cancel.c; any worker may set it) */
    _Atomic bool cancel_by_request;
    _Atomic int64_t last_cancel; /* when its last cancel was sent (server_cancel.c) */
    int n_idle, n_active, n_busy, n_waiting;
    int n_opening; /* of n_busy: connecting or logging in */
    int n_clients; /* clients assigned to this pool */
    int n_reserve_used;
    int n_held;          /* held servers (sv->held) on active: not in the pool's size */
    enum pool_mode mode; /* effective pool_mode: pool_refresh_settings() */
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
    uint64_t assign_count;           /* servers lent to clients */
    uint64_t replica_reads, retries; /* routed here as reads; sent again from here */
    uint64_t servers_kept;           /* rolled back and kept after their client left */
    /* Prepared statements (prepared.c, SHOW STATS's PgBouncer names):
     * created by clients, prepared on servers by sluice, executed. */
    uint64_t ps_client_parses, ps_server_parses, ps_binds;
    uint64_t xact_time, query_time, wait_time; /* usec */
    int64_t max_wait_seen;
    struct prepared_set *ps_known; /* statements some server parsed fine (prepared.c) */
};

#endif
