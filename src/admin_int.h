/* admin_int.h - the admin console's insides, shared by admin.c (protocol,
 * sessions), admin_control.c (control commands, waiting commands, timers),
 * admin_show.c, admin_show_pools.c and admin_stats.c (SHOW commands),
 * admin_proto.c (command parser, result encoding) and
 * tests/unit/test_admin.c. Other modules use admin.h only.
 *
 * The command parser and the result encoder are pure (no sockets, no global
 * state) so that they can be tested alone.
 */
#ifndef SLUICE_ADMIN_INT_H
#define SLUICE_ADMIN_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "iobuf.h"
#include "list.h"

struct client;
struct database;
struct worker;

/* PostgreSQL type oids of the console's columns. */
#define ADMIN_OID_INT8    20u
#define ADMIN_OID_INT4    23u
#define ADMIN_OID_TEXT    25u
#define ADMIN_OID_NUMERIC 1700u

/* The version of PgBouncer whose console sluice reproduces: column sets
 * and SHOW VERSION follow it, so that tools choosing columns by version
 * pick the right ones. */
#define ADMIN_PGBOUNCER_COMPAT "1.24.0"

/* SQLSTATEs of the console's errors. PgBouncer answers every console
 * error with protocol_violation; drivers map it to an exception class, so
 * keep it. */
#define ADMIN_SQLSTATE_ERROR       "08P01"
#define ADMIN_SQLSTATE_CONFIG_FILE "F0000" /* RELOAD failed */

/* ---- commands ------------------------------------------------------------ */

enum admin_verb {
    ADMIN_CMD_EMPTY = 0,      /* only blanks, comments and semicolons */
    ADMIN_CMD_SHOW,           /* SHOW topic */
    ADMIN_CMD_SET,            /* SET key = value */
    ADMIN_CMD_RELOAD,         /* RELOAD */
    ADMIN_CMD_PAUSE,          /* PAUSE [db] */
    ADMIN_CMD_RESUME,         /* RESUME [db] */
    ADMIN_CMD_SUSPEND,        /* SUSPEND (refused: no online restart) */
    ADMIN_CMD_DISABLE,        /* DISABLE db */
    ADMIN_CMD_ENABLE,         /* ENABLE db */
    ADMIN_CMD_RECONNECT,      /* RECONNECT [db] */
    ADMIN_CMD_KILL,           /* KILL [db] */
    ADMIN_CMD_KILL_CLIENT,    /* KILL_CLIENT id */
    ADMIN_CMD_WAIT_CLOSE,     /* WAIT_CLOSE [db] */
    ADMIN_CMD_SHUTDOWN,       /* SHUTDOWN [WAIT_FOR_SERVERS | WAIT_FOR_CLIENTS] */
    ADMIN_CMD_CACHE_CLEAR,    /* CACHE CLEAR [table] (sluice's) */
    ADMIN_CMD_RUN_JOB,        /* RUN JOB name */
    ADMIN_CMD_INSIGHTS_RESET, /* INSIGHTS RESET */
};
/* The command's name as its CommandComplete tag ("PAUSE", ...). */
const char *admin_verb_str(enum admin_verb v);

enum admin_show_topic {
    ADMIN_SHOW_HELP = 0,       /* a NOTICE listing the commands, no rows */
    ADMIN_SHOW_VERSION,        /* one row: the version string */
    ADMIN_SHOW_CONFIG,         /* one row per general setting */
    ADMIN_SHOW_DATABASES,      /* one row per database entry */
    ADMIN_SHOW_POOLS,          /* one row per (database, user) pool */
    ADMIN_SHOW_CLIENTS,        /* one row per client connection */
    ADMIN_SHOW_SERVERS,        /* one row per server connection */
    ADMIN_SHOW_USERS,          /* one row per known user */
    ADMIN_SHOW_STATS,          /* per database: totals and averages */
    ADMIN_SHOW_STATS_TOTALS,   /* per database: totals only */
    ADMIN_SHOW_STATS_AVERAGES, /* per database: averages only */
    ADMIN_SHOW_TOTALS,         /* name/value rows: STATS summed over databases */
    ADMIN_SHOW_LISTS,          /* name/count rows of internal lists */
    ADMIN_SHOW_MEM,            /* memory per object kind */
    ADMIN_SHOW_STATE,          /* active / paused / suspended */
    ADMIN_SHOW_DNS_HOSTS,      /* empty: sluice keeps no DNS cache */
    ADMIN_SHOW_DNS_ZONES,      /* empty: sluice keeps no DNS cache */
    ADMIN_SHOW_PEERS,          /* the [peers] entries (peers.h) */
    ADMIN_SHOW_PEER_POOLS,     /* each peer's forwarded cancels now */
    ADMIN_SHOW_REPLICAS,       /* one row per endpoint of a database with replicas */
    ADMIN_SHOW_SOCKETS,        /* CLIENTS and SERVERS with their buffers, every socket */
    ADMIN_SHOW_ACTIVE_SOCKETS, /* the same, sockets with bytes buffered only */
    ADMIN_SHOW_CACHE,          /* the result cache: one row per database, and the store's */
    ADMIN_SHOW_CACHE_TABLES,   /* the result cache: invalidations per table */
    ADMIN_SHOW_JOBS,           /* one row per refresh job ([jobs]) */
    ADMIN_SHOW_QUERIES,        /* one row per query fingerprint (insights) */
    ADMIN_SHOW_INDEX_ADVICE,   /* one row per index the advisor advises */
    ADMIN_SHOW_COUNT,
};
/* Upper-case name of a topic ("POOLS"). */
const char *admin_show_topic_str(enum admin_show_topic t);

enum admin_shutdown_mode {
    ADMIN_SHUTDOWN_NOW = 0,          /* exit at once */
    ADMIN_SHUTDOWN_WAIT_FOR_SERVERS, /* stop accepting; exit when no server is in use */
    ADMIN_SHUTDOWN_WAIT_FOR_CLIENTS, /* stop accepting; exit when no client is left */
};

#define ADMIN_ARG_MAX   256
#define ADMIN_VALUE_MAX 4096

/* One parsed console command. */
struct admin_cmd {
    enum admin_verb verb;
    enum admin_show_topic topic;       /* ADMIN_CMD_SHOW */
    enum admin_shutdown_mode shutdown; /* ADMIN_CMD_SHUTDOWN */
    int order;                         /* SHOW QUERIES ORDER BY (enum insights_order) */
    int64_t limit;                     /* SHOW QUERIES LIMIT n; 0: all */
    bool has_arg;
    char arg[ADMIN_ARG_MAX];     /* database name, client id, job name, or SET key */
    char value[ADMIN_VALUE_MAX]; /* SET value, quotes removed */
};

/* Parses one console command from sql. Keywords are case-insensitive;
 * database names are taken as written ("quoted" names may hold anything);
 * SET values may be 'quoted' ('' for a quote) or bare words; trailing
 * semicolons and SQL comments are ignored.
 *
 * $n tokens stand for bound parameters (extended protocol): params[n-1]
 * replaces them when params is not NULL (a missing one is an error); with
 * params NULL they stay as written, which is enough to tell the command and
 * its columns before Bind.
 *
 * Returns true and fills *out, or false with a message in err (never
 * longer than errlen - 1). Pure: no global state is read. */
bool admin_parse(const char *sql, int nparams, const char *const *params, struct admin_cmd *out,
                 char *err, size_t errlen);

/* The highest $n that sql refers to (0 if none), for ParameterDescription.
 * Quoted text and comments are skipped. */
int admin_count_params(const char *sql);

/* True for a SET of a client session parameter that drivers send on connect
 * (extra_float_digits, application_name, ...): accepted and ignored, as the
 * console has no session settings. */
bool admin_is_session_setting(const char *key);

/* ---- wire output --------------------------------------------------------- */

/* A growing buffer of backend messages (an iobuf from cache, grown to the
 * heap when a result is large: SHOW CLIENTS with 10,000 clients). */
struct admin_out {
    struct iobuf_cache *cache;
    struct iobuf *buf;  /* NULL until something is written; caller frees with iobuf_put */
    uint32_t msg_start; /* offset of the open message's type byte */
};
void admin_out_begin(struct admin_out *o, uint8_t type);
void admin_out_end(struct admin_out *o);
void admin_out_add16(struct admin_out *o, uint16_t v);
void admin_out_add32(struct admin_out *o, uint32_t v);
void admin_out_add_bytes(struct admin_out *o, const void *p, size_t n);
void admin_out_add_string(struct admin_out *o, const char *s); /* with its NUL */
/* A message without a body: ParseComplete '1', BindComplete '2', ... */
void admin_out_simple(struct admin_out *o, uint8_t type);
void admin_out_ready(struct admin_out *o);
void admin_out_complete(struct admin_out *o, const char *tag);
/* ErrorResponse (severity ERROR) or NoticeResponse; detail may be NULL. */
void admin_out_error(struct admin_out *o, const char *sqlstate, const char *msg);
void admin_out_notice(struct admin_out *o, const char *msg, const char *detail);

/* Encodes a decimal integer string (optional '-') as PostgreSQL's binary
 * numeric into o (the value bytes only, without the length word). Returns
 * false, writing nothing, if s is not an integer. */
bool admin_encode_numeric(struct admin_out *o, const char *s);

/* A result set being written: RowDescription (when asked), DataRows in the
 * formats the client asked for at Bind, CommandComplete. */
struct admin_result {
    struct admin_out *out;
    struct worker *w;       /* clock and lists; NULL in unit tests */
    struct client *self;    /* the admin client running the command */
    bool describe;          /* send RowDescription (simple protocol) */
    int nformats;           /* result formats from Bind: 0 = all text, 1 = all */
    const int16_t *formats; /* ... the same, n = one per column */
    int ncols;
    const uint32_t *types;
    uint64_t nrows;
    const struct admin_cmd *cmd; /* the command (a SHOW's options) */
};

/* Format code of column i (0 text, 1 binary). */
int admin_result_format(const struct admin_result *r, int i);
/* Declares the columns; writes RowDescription if r->describe. */
void admin_result_columns(struct admin_result *r, int n, const char *const *names,
                          const uint32_t *types);
/* Writes RowDescription for these columns in r's formats. */
void admin_result_row_description(struct admin_result *r, int n, const char *const *names,
                                  const uint32_t *types);
/* One DataRow; vals[i] NULL = SQL NULL; numbers are given in decimal. */
void admin_result_row(struct admin_result *r, const char *const *vals);

/* ---- sessions (admin.c) -------------------------------------------------- */

/* What a console client's command waits for before it is answered. */
enum admin_wait {
    ADMIN_WAIT_NONE = 0, /* nothing pending */
    ADMIN_WAIT_PAUSE,    /* PAUSE: until no server is in use */
    ADMIN_WAIT_CLOSE,    /* WAIT_CLOSE: until no server has close_needed */
};

struct admin_stmt;   /* a prepared statement (Parse), admin.c */
struct admin_portal; /* a bound portal (Bind), admin.c */

/* What the console keeps for one client beyond struct client, made on first
 * need: the extended protocol's statements and portals, and a command that
 * waits (set by admin_control.c). */
struct admin_session {
    struct list node; /* on admin_sessions */
    struct client *c; /* not owned: dereferenced only once known alive */
    uint64_t id;      /* c->id, which tells a reused address apart */
    struct admin_stmt *stmts;
    struct admin_portal *portals;
    bool skip_till_sync; /* an extended-protocol error: ignore up to Sync */
    enum admin_wait wait;
    struct database *wait_db; /* NULL: every database */
    bool wait_simple;         /* the waiting command came by Query: ReadyForQuery follows */
};

/* Every session. */
extern struct list admin_sessions;

/* The session of live client c; made if create (else NULL if it has none).
 * A session left by a freed client at the same address is dropped on the
 * way. */
struct admin_session *admin_session_of(struct client *c, bool create);
/* Takes se off admin_sessions and frees it with its statements and portals. */
void admin_session_free(struct admin_session *se);
/* Is c (an address that may have been freed) still a live client with this
 * id? Compares addresses only until found, so a stale one is never read. */
bool admin_client_alive(const struct client *c, uint64_t id);
/* Drops the sessions of clients that are gone (in case nobody called
 * admin_client_closed() for them). */
void admin_sessions_collect(void);
/* True if console client c has a command waiting (PAUSE...). */
bool admin_client_busy(const struct client *c);

/* Writes what out holds to c (unless c is closed) and empties out. */
void admin_flush(struct client *c, struct admin_out *out);
/* admin_handle() under the world lock: runs c's buffered messages until
 * they run out or a command waits. */
void admin_handle_locked(struct client *c);

/* ---- control commands (admin_control.c) ---------------------------------- */

enum admin_run_status {
    ADMIN_RUN_OK = 0,  /* answered (CommandComplete or rows) */
    ADMIN_RUN_ERROR,   /* answered with an ErrorResponse */
    ADMIN_RUN_WAITING, /* the answer comes later (PAUSE, WAIT_CLOSE, SHUTDOWN) */
};

/* Runs cmd for console client c, writing the answer into r (RowDescription
 * first if r->describe). simple: it came by Query, so ReadyForQuery follows
 * the answer of a command that waits. */
enum admin_run_status admin_run(struct client *c, const struct admin_cmd *cmd,
                                struct admin_result *r, bool simple);

/* True once SHUTDOWN (or a SHUTDOWN WAIT_FOR_SERVERS that finished) asked
 * the process to exit: the console handles nothing more. */
bool admin_exit_requested(void);

/* ---- SHOW (admin_show.c) ------------------------------------------------- */

/* Number of columns of a topic and their names and types (0 for HELP). */
int admin_show_columns(enum admin_show_topic t, const char *const **names, const uint32_t **types);
/* Runs SHOW t into r: RowDescription if r->describe, rows, CommandComplete. */
void admin_show_run(enum admin_show_topic t, struct admin_result *r);

/* What admin_show.c lends the other SHOW files. */

/* Room for a number as text. */
#define ADMIN_NUM_LEN 24
/* v in decimal into buf (ADMIN_NUM_LEN bytes). Return buf. admin_num4()
 * is for int4 columns: values beyond int4 are clamped rather than wrapped. */
char *admin_num(char *buf, long long v);
char *admin_unum(char *buf, unsigned long long v);
char *admin_num4(char *buf, long long v);
/* A wall-clock time (usec) as PostgreSQL prints a timestamptz in UTC, in
 * buf; NULL (SQL NULL) for 0. */
const char *admin_time_text(int64_t usec, char *buf, size_t len);
/* The loop clock of r's worker (the wall clock when r has none: unit tests). */
int64_t admin_loop_now(const struct admin_result *r);
/* Calls fn for every live client of every worker. */
void admin_each_client(void (*fn)(struct client *c, void *arg), void *arg);

struct pool;
/* Per-pool figures that only a walk over the clients gives. Pools are
 * looked up by address in a sorted array: one pass over 10,000 clients
 * instead of one per pool. */
struct admin_pool_ix {
    const struct pool *p;
    int cl_active;  /* logged in, idle or linked */
    int cl_waiting; /* waiting for a server */
    int cl_total;   /* every client assigned to the pool, logging in included */
};
struct admin_pool_index {
    struct admin_pool_ix *v; /* n entries, sorted by pool address */
    int n;
    int admin_clients; /* console clients, which have no pool */
};
/* Fills ix for every pool of g_pooler; free with admin_pool_index_free(). */
void admin_pool_index_build(struct admin_pool_index *ix);
void admin_pool_index_free(struct admin_pool_index *ix);

struct config_database;
/* A database a client can use by name: a row of SHOW DATABASES and SHOW
 * STATS. */
struct admin_db_row {
    const char *name;
    struct database *db;              /* runtime state, NULL if never used */
    const struct config_database *cd; /* NULL for the console */
};
/* Every database a client can use by name: the [databases] entries (not
 * "*"), those made from "*" so far, and the console, sorted by name. Sets
 * *out to an array the caller frees; returns its length. */
int admin_db_rows_build(struct admin_db_row **out);

/* The DataRows of the topics that live outside admin_show.c. */
void admin_show_pools(struct admin_result *r); /* admin_show_pools.c */
void admin_show_replicas(struct admin_result *r);
void admin_show_cache(struct admin_result *r);
void admin_show_cache_tables(struct admin_result *r);   /* admin_show_replicas.c */
void admin_show_clients(struct admin_result *r);        /* admin_show_pools.c */
void admin_show_servers(struct admin_result *r);        /* admin_show_pools.c */
void admin_show_sockets(struct admin_result *r);        /* admin_show_pools.c */
void admin_show_active_sockets(struct admin_result *r); /* admin_show_pools.c */
void admin_show_users(struct admin_result *r);          /* admin_show_pools.c */
void admin_show_jobs(struct admin_result *r);           /* admin_show_jobs.c */
void admin_show_queries(struct admin_result *r);        /* admin_show_queries.c */
void admin_show_index_advice(struct admin_result *r);   /* admin_show_advice.c */
void admin_show_stats(struct admin_result *r);          /* admin_stats.c */
void admin_show_stats_totals(struct admin_result *r);
void admin_show_stats_averages(struct admin_result *r);
void admin_show_totals(struct admin_result *r);

/* ---- statistics (admin_stats.c) ------------------------------------------ */

/* Counters of the console itself, shown as database "pgbouncer". */
struct admin_counters {
    uint64_t xact_count, query_count, bytes_in, bytes_out;
};
extern struct admin_counters admin_counters;

/* Every stats_period: remembers the totals so that SHOW STATS can print
 * averages over the last period. now_usec is the loop clock. */
void admin_stats_period(int64_t now_usec);
/* Frees what admin_stats_period() keeps. */
void admin_stats_free(void);

#endif
