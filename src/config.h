/* config.h - the configuration, as one immutable, reference-counted struct.
 *
 * config_load() reads a pgbouncer.ini-compatible file (with %include) into a
 * new struct config. Nothing changes a loaded config: a reload builds a new
 * one and swaps the pointer whole, so a worker never sees half a reload.
 *
 * Field names are the ini key names. Units:
 *   - times are int64_t microseconds. In the file a plain number keeps
 *     PgBouncer's unit (seconds, fractions allowed); suffixes us, ms, s, min,
 *     h, d are accepted as in postgresql.conf. 0 usually means "disabled".
 *   - sizes are int64_t bytes (plain number = bytes; kB, MB, GB suffixes).
 *   - strings are never NULL: "" when unset.
 */
#ifndef SLUICE_CONFIG_H
#define SLUICE_CONFIG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cron.h"

enum pool_mode {
    POOL_MODE_SESSION = 0, /* server held for the whole client session */
    POOL_MODE_TRANSACTION, /* server released at ReadyForQuery idle */
    POOL_MODE_STATEMENT,   /* server released after each statement; no multi-statement xacts */
    POOL_MODE_UNSET = -1,  /* per-db/per-user entry did not set it */
};
const char *pool_mode_str(enum pool_mode m);

enum auth_type {
    AUTH_TYPE_ANY = 0, /* no auth, user name ignored (uses the db's user) */
    AUTH_TYPE_TRUST,   /* no password; user must exist in auth_file */
    AUTH_TYPE_PLAIN,   /* cleartext password */
    AUTH_TYPE_MD5,     /* md5, or scram when the stored secret is a SCRAM secret */
    AUTH_TYPE_SCRAM,   /* scram-sha-256 */
    AUTH_TYPE_CERT,    /* TLS client certificate (needs client TLS) */
    AUTH_TYPE_HBA,     /* not supported: refused at load (no pg_hba.conf parser) */
    AUTH_TYPE_PAM,     /* not supported: refused at load */
};
const char *auth_type_str(enum auth_type t);

/* One server of a [databases] entry: a replica (replicas=HOST[:PORT][@WEIGHT],
 * ...) or one of several hosts (host=A,B,C with port=P or port=PA,PB,PC). */
#define CONFIG_MAX_REPLICAS 15
/* host= and replicas= together name at most this many servers. */
#define CONFIG_MAX_SERVERS 15
struct config_replica {
    char host[256]; /* a name, an IPv4 address or an IPv6 one ([] dropped) */
    int port;       /* the entry's port when not given */
    int weight;     /* its share of reads, relative to the others' (default 1; 0: none) */
};

/* One [databases] entry. Integer fields are -1 when the entry did not set
 * them (then the general setting applies). */

struct config_database {
    char *name; /* key in [databases]; "*" is the fallback entry */
    /* host: "" = unix socket in unix_socket_dir... of the server: default
     * /var/run/postgresql */
    char *host;               /* as written: one host, or several separated by commas */
    int port;                 /* default 5432; with a port list, its first port */
    char *ports;              /* port= as written ("" = 5432): one port, or one per host */
    char *load_balance_hosts; /* "round-robin" (also ""), "disable": several hosts, no split */
    int n_hosts;              /* host= split at its commas (1 for one host, or none) */
    struct config_replica hosts[CONFIG_MAX_SERVERS]; /* each with its port (weight 1) */
    char *dbname;   /* "" = same as name (for "*": the client's database) */
    char *user;     /* "" = the client's user */
    char *password; /* "" = from auth_file / client */
    char *auth_user;
    char *auth_query;
    char *auth_dbname; /* "" = the general auth_dbname */
    int pool_size;
    int min_pool_size;
    int reserve_pool;
    enum pool_mode pool_mode;
    int max_db_connections;
    int max_db_client_connections; /* -1: the general one */
    int64_t server_lifetime;       /* -1: the general one */
    int64_t query_wait_timeout;    /* -1: the user's, else the general one */
    char *connect_query;
    char *application_name;
    char *client_encoding;
    char *datestyle;
    char *timezone;
    char *replicas;       /* as written; parsed into replica[] */
    int read_write_split; /* -1: the global read_write_split; else 0 or 1 */
    int n_replicas;
    struct config_replica replica[CONFIG_MAX_REPLICAS];
    int line; /* where it was defined, for messages */
    char *file;
};

/* One [users] entry. */
struct config_user {
    char *name;
    enum pool_mode pool_mode;         /* POOL_MODE_UNSET if not set */
    int max_user_connections;         /* -1 if not set */
    int max_user_client_connections;  /* -1 if not set */
    int pool_size;                    /* -1 if not set: the database's, else default_pool_size */
    int reserve_pool_size;            /* -1 if not set: the database's, else the general one */
    int64_t query_timeout;            /* -1 if not set (each: the general setting) */
    int64_t query_wait_timeout;       /* -1 if not set: the database's, else the general one */
    int64_t idle_transaction_timeout; /* -1 if not set */
    int64_t transaction_timeout;      /* -1 if not set */
    int64_t client_idle_timeout;      /* -1 if not set */
};

/* A [cache] rule: "PATTERN = TTL". pattern is "schema.table" or "table"
 * (any schema), each part a shell-style pattern ("analytics.*"). */
struct config_cache_rule {
    char *pattern;
    int64_t ttl;    /* usec, > 0 */
    bool wild;      /* has fnmatch()'s special characters: else compared as it is */
    bool qualified; /* "schema.table": matched against the qualified name */
};

/* A relation a job's after_writes_to names: schema NULL when not given
 * (then any schema matches). Folded to lower case, as PostgreSQL folds an
 * unquoted name. */
struct config_job_rel {
    char *schema;
    char *name;
};

/* One [jobs] line: NAME = database=DB command="SQL" [schedule="CRON"]
 * [after_writes_to=TABLE[,TABLE...]] [debounce=SECONDS] [timeout=SECONDS]. */
struct config_job {
    char *name;
    char *database; /* a [databases] entry (or one the "*" entry makes) */
    char *command;  /* SQL, sent as one simple Query */
    char *schedule; /* as written; "" when the job has none */
    struct cron_expr cron;
    struct config_job_rel *after; /* after_writes_to */
    int n_after;
    int64_t debounce; /* usec of quiet after a write before the run (10 s) */
    int64_t timeout;  /* usec: statement_timeout of the run; 0: the role's */
    char *file;       /* where it was defined, for messages */
    int line;
};

/* One [peers] line: ID = host=... [port=...] [pool_size=...]. Another
 * sluice (or PgBouncer) behind the same port, to which cancel requests
 * carrying its id are forwarded (peers.h). */
#define CONFIG_PEER_ID_MAX 16383
struct config_peer {
    int id;         /* 1..CONFIG_PEER_ID_MAX */
    char host[256]; /* a name, an address, a unix socket directory (/...) or @abstract */
    int port;       /* 6432 when not given */
    int pool_size;  /* cancels in flight to it at once; -1: default_pool_size */
    int line;       /* where it was defined, for messages */
};

/* Where a general setting was written: file and line, or line 0 (and file
 * NULL) for a default or a value the admin console's SET gave. */
struct config_origin {
    char *file;
    int line;
};

struct config {
    atomic_int refcount;
    uint64_t generation; /* unique per config made (load, admin SET): caches key on it */
    char *path;          /* the main file */
    int64_t loaded_at;   /* wall clock, microseconds */

    /* [pgbouncer] / [sluice] general settings, PgBouncer names and defaults */
    char *listen_addr;     /* "" = no TCP listener; "*" = all */
    int listen_port;       /* 6432 */
    int listen_backlog;    /* 128 */
    char *unix_socket_dir; /* "/tmp"; "" = none */
    int unix_socket_mode;  /* 0777 */
    char *unix_socket_group;
    bool so_reuseport;

    enum auth_type auth_type; /* md5 */
    char *auth_file;
    char *auth_hba_file;
    char *auth_user;
    char *auth_query;  /* "SELECT usename, passwd FROM pg_shadow WHERE usename=$1" */
    char *auth_dbname; /* [databases] entry auth_query runs in; "" = the client's */
    char *admin_users; /* comma-separated */
    char *stats_users;

    enum pool_mode pool_mode;        /* session */
    int max_client_conn;             /* 100 */
    int default_pool_size;           /* 20 */
    int min_pool_size;               /* 0 */
    int reserve_pool_size;           /* 0 */
    int64_t reserve_pool_timeout;    /* 5 s */
    int max_db_connections;          /* 0 = unlimited */
    int max_user_connections;        /* 0 = unlimited */
    int max_db_client_connections;   /* 0 = unlimited: clients per database */
    int max_user_client_connections; /* 0 = unlimited: clients per user */
    int max_prepared_statements;     /* 200 (PgBouncer 1.24's default) */

    char *server_reset_query; /* "DISCARD ALL" */
    bool server_reset_query_always;
    char *server_check_query;   /* "select 1"; "" = no check */
    int64_t server_check_delay; /* 30 s */
    bool server_fast_close;
    int64_t server_lifetime;        /* 3600 s */
    int64_t autodb_idle_timeout;    /* 3600 s: a database made from "*", unused this long, goes */
    int64_t server_idle_timeout;    /* 600 s */
    int64_t server_connect_timeout; /* 15 s */
    int64_t server_login_retry;     /* 15 s */
    bool server_round_robin;

    int64_t client_idle_timeout;      /* 0 */
    int64_t client_login_timeout;     /* 60 s */
    int64_t query_timeout;            /* 0 */
    int64_t query_wait_timeout;       /* 120 s */
    int64_t cancel_wait_timeout;      /* 10 s */
    int64_t idle_transaction_timeout; /* 0 */
    int64_t transaction_timeout;      /* 0 */
    int64_t query_wait_notify;        /* 5 s: NOTICE to a client queued this long; 0 = none */
    int64_t suspend_timeout;          /* 10 s */

    char *ignore_startup_parameters; /* comma-separated */
    bool application_name_add_host;
    bool disable_pqexec;
    char *track_extra_parameters; /* comma-separated; IntervalStyle by default */

    bool tcp_keepalive; /* true */
    int tcp_keepidle;   /* 0 = OS default */
    int tcp_keepintvl;
    int tcp_keepcnt;
    int64_t tcp_user_timeout;
    int tcp_defer_accept;
    int tcp_socket_buffer;

    int pkt_buf;         /* 4096 */
    int max_packet_size; /* 2147483647 */
    int sbuf_loopcnt;    /* 5 */

    char *logfile;
    char *pidfile;
    bool syslog;
    char *syslog_ident;      /* "pgbouncer" in PgBouncer; "sluice" here */
    char *syslog_facility;   /* "daemon" */
    bool log_connections;    /* true */
    bool log_disconnections; /* true */
    bool log_pooler_errors;  /* true */
    bool log_stats;          /* true */
    int64_t stats_period;    /* 60 s */
    int verbose;             /* 0 */
    char *user;              /* unix user to switch to */

    int64_t dns_max_ttl;           /* 15 s */
    int64_t dns_nxdomain_ttl;      /* 15 s */
    int64_t dns_zone_check_period; /* 0 */
    char *resolv_conf;

    char *client_tls_sslmode; /* "disable" */
    char *client_tls_key_file;
    char *client_tls_cert_file;
    char *client_tls_ca_file;
    char *client_tls_protocols; /* "secure" */
    char *client_tls_ciphers;   /* "default" */
    char *client_tls13_ciphers; /* "" = OpenSSL's TLS 1.3 suites */
    char *client_tls_dheparams; /* "auto" */
    char *client_tls_ecdhcurve; /* "auto" */
    char *server_tls_sslmode;   /* "prefer" */
    char *server_tls_key_file;
    char *server_tls_cert_file;
    char *server_tls_ca_file;
    char *server_tls_protocols;
    char *server_tls_ciphers;
    char *server_tls13_ciphers;

    /* PgBouncer settings sluice refuses unless at their default (see
     * config_keys.c); kept so that SHOW CONFIG lists them. */
    char *auth_ident_file;
    char *auth_ldap_options;
    int64_t pool_idle_timeout;
    char *conffile;
    char *service_name;
    char *job_name;

    int peer_id; /* 0: no peering; else this process's id in its [peers] group */

    int scram_iterations;       /* 4096: for SCRAM secrets made from plain passwords */
    char *login_notify_message; /* "" = none: a NOTICE to each client after its login */

    /* sluice's own */
    bool read_write_split;           /* off: every request goes to the primary */
    char *read_your_writes;          /* "off", "connection", "user" (default), "database" */
    char *replica_load_balance;      /* "least_outstanding", "round_robin", "random" */
    char *primary_reads;             /* "fallback" (no replica may take it) or "share" */
    int64_t replica_check_interval;  /* 1 s */
    int64_t replica_ban_time;        /* 30 s */
    int64_t replica_connect_timeout; /* 5 s */
    char *replica_write_functions;   /* comma-separated, beside the built-in list */
    char *replica_read_functions;    /* comma-separated volatile functions that never write */
    char *replica_function_check;    /* "strict" or "list" */
    int64_t lag_check_interval;      /* 0.1 s: the lag monitor's period */
    int64_t replica_max_lag;         /* 0 = no limit: lagging further, no reads */
    int64_t replica_wait_timeout;    /* 0.05 s: a read waits this long for a replica to catch up */
    int replica_max_lag_bytes;       /* 0 = no limit */
    int workers;                     /* 0 in the file = number of cores; resolved at load */
    int64_t worker_affinity_window;  /* usec (ms in the file) */
    char *metrics_listen;            /* "" = off */
    char *cache;                     /* "off", "memory" or "redis://HOST:PORT[/DB]" */
    int64_t cache_max_memory;        /* bytes: the in-process store's bound */
    int64_t cache_max_entry_size;    /* bytes: larger answers are not stored */
    int64_t cache_default_ttl;       /* usec; 0: only what a rule or a hint names */
    char *cache_invalidation;        /* "off" or "logical": writes that bypass sluice too */
    char *cache_publication;         /* "" = sluice's own (sluice_cache, made if missing) */
    struct config_cache_rule *cache_rules; /* [cache], in file order */
    int n_cache_rules;
    char *job_timezone;       /* "UTC": the zone [jobs] schedules are read in */
    bool insights;            /* per-query statistics (insights.h) */
    int insights_max_queries; /* fingerprints kept, at most */
    int insights_metrics_top; /* fingerprints in /metrics, by total time */
    int64_t advice_interval;  /* usec: the index advisor runs this often; 0: never */
    int64_t advice_window;    /* usec: fingerprints are weighed by their time within it */
    int advice_min_gain;      /* percent: the least cost drop an advice needs */

    struct config_database *databases; /* in file order; "*" included if present */
    int n_databases;
    struct config_user *users;
    int n_users;
    struct config_job *jobs; /* [jobs], in file order */
    int n_jobs;
    struct config_peer *peers; /* [peers], in file order (this process's own entry too) */
    int n_peers;
    struct config_origin *origins; /* one per general setting, in the key table's order */
};

/* Loads path. On success returns a config with refcount 1. On failure returns
 * NULL and writes "FILE:LINE: reason" (or "FILE: reason") into err.
 * Warnings (PgBouncer keys accepted but not implemented) are logged. */
struct config *config_load(const char *path, char *err, size_t errlen);

/* Every problem a check found, each "FILE:LINE: reason" (or "FILE:
 * reason"), in the order found. Zero-initialise; config_problems_free(). */
struct config_problems {
    char **msgs;
    int n;
    int cap;
};
/* Appends a formatted message (dropped when out of memory: a check that
 * found one problem still fails, see config_problems_add()'s callers). */
void config_problems_add(struct config_problems *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void config_problems_free(struct config_problems *p);

/* Like config_load(), but a bad line does not stop the reading: every line
 * is read and each problem added to problems, so that one run names them
 * all (sluice --check, RELOAD). Returns the config read, bad lines left
 * out, or NULL when not even that could be made (the main file unreadable,
 * out of memory). A config returned with problems added is only for
 * checking further (config_check.c), never for running: its owner unrefs
 * it. With text (tests, fuzzing), text is read as if it were the file. */
struct config *config_load_all(const char *path, const char *text,
                               struct config_problems *problems);

/* Where the general setting key (any case) was written in cfg: true with
 * *file and *line when it was set in a file, false for a default, a value
 * set by the admin console or an unknown key. */
bool config_origin_of(const struct config *cfg, const char *key, const char **file, int *line);

/* Parses from a string as if it were the file `name` (for tests and fuzzing);
 * %include is resolved relative to the current directory. */
struct config *config_load_string(const char *name, const char *text, char *err, size_t errlen);

struct config *config_ref(struct config *cfg);
void config_unref(struct config *cfg);

/* The [databases] entry named name, else the "*" entry, else NULL. */
const struct config_database *config_find_database(const struct config *cfg, const char *name);
/* The [jobs] entry named name, or NULL. */
const struct config_job *config_find_job(const struct config *cfg, const char *name);
/* The [users] entry, or NULL. */
const struct config_user *config_find_user(const struct config *cfg, const char *name);
/* The [peers] entry with that id, or NULL. */
const struct config_peer *config_find_peer(const struct config *cfg, int id);

/* True if name is in the comma/space separated list. */
bool config_list_contains(const char *list, const char *name);

/* Parsers shared with the admin console's SET (return false on bad input). */
bool config_parse_bool(const char *s, bool *out);
bool config_parse_time(const char *s, int64_t *usec_out);  /* plain number = seconds */
bool config_parse_size(const char *s, int64_t *bytes_out); /* plain number = bytes */

/* One row per general setting, for SHOW CONFIG and admin SET.
 * value is formatted into buf. Returns false past the last index.
 * (A string setting's value points into cfg itself instead, so that a long
 * one is never cut; it lives as long as cfg. Rows are in alphabetical order,
 * as PgBouncer's SHOW CONFIG lists them.) */
struct config_setting_view {
    const char *key;
    const char *value;
    const char *default_value;
    bool reloadable;
};
bool config_setting_at(const struct config *cfg, int index, char *buf, size_t buflen,
                       struct config_setting_view *out);

/* A copy of cfg with one general setting changed (admin SET). NULL and err on
 * bad key/value or a key that is not reloadable. */
struct config *config_with_setting(const struct config *cfg, const char *key, const char *value,
                                   char *err, size_t errlen);

#endif
