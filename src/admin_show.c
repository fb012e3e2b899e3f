/* admin_show.c - the console's SHOW commands: the table of topics and their
 * columns, what the other SHOW files share (numbers as text, the walk over
 * every client, the per-pool client counts, the list of databases), and the
 * topics about the process itself (HELP, VERSION, CONFIG, DATABASES, LISTS,
 * MEM, STATE). POOLS, CLIENTS, SERVERS and USERS are in admin_show_pools.c,
 * STATS and TOTALS in admin_stats.c.
 *
 * Column names, order and meaning follow PgBouncer 1.24's console so that
 * monitoring tools written for it read sluice unchanged; docs/admin.md
 * describes every column. Values are read from the live structures
 * (g_pooler, the workers' client lists) at the time of the command. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "admin_int.h"
#include "client_conn.h"
#include "conn.h"
#include "peers.h"
#include "pool.h"
#include "version.h"
#include "worker.h"

/* ---- helpers over the live structures ------------------------------------ */

char *admin_num(char *buf, long long v)
{
    snprintf(buf, ADMIN_NUM_LEN, "%lld", v);
    return buf;
}

char *admin_unum(char *buf, unsigned long long v)
{
    snprintf(buf, ADMIN_NUM_LEN, "%llu", v);
    return buf;
}

char *admin_num4(char *buf, long long v)
{
    if (v > INT32_MAX)
        v = INT32_MAX;
    if (v < INT32_MIN)
        v = INT32_MIN;
    return admin_num(buf, v);
}

int64_t admin_loop_now(const struct admin_result *r)
{
    return r->w ? worker_now(r->w) : now_wall_usec();
}

void admin_each_client(void (*fn)(struct client *c, void *arg), void *arg)
{
    for (int i = 0; i < g_pooler.n_workers; i++) {
        struct list *it, *tmp;
        list_for_each_safe(it, tmp, &g_pooler.workers[i].clients)
        {
            struct client *c = list_entry(it, struct client, node);
            if (c->state != CL_CLOSED)
                fn(c, arg);
        }
    }
}

/* ---- the pool index ------------------------------------------------------ */

static int ix_cmp(const void *a, const void *b)
{
    const struct pool *x = ((const struct admin_pool_ix *)a)->p,
                      *y = ((const struct admin_pool_ix *)b)->p;
    return x < y ? -1 : x > y;
}

static struct admin_pool_ix *ix_find(const struct admin_pool_index *ix, const struct pool *p)
{
    struct admin_pool_ix key = {.p = p};
    return p ? bsearch(&key, ix->v, (size_t)ix->n, sizeof(*ix->v), ix_cmp) : NULL;
}

static void ix_add_client(struct client *c, void *arg)
{
    struct admin_pool_index *ix = arg;
    if (c->is_admin) {
        ix->admin_clients++;
        return;
    }
    struct admin_pool_ix *e = ix_find(ix, c->pool);
    if (!e)
        return;
    e->cl_total++;
    if (c->state == CL_IDLE || c->state == CL_ACTIVE)
        e->cl_active++;
    else if (c->state == CL_WAITING || c->state == CL_ASSIGNED)
        e->cl_waiting++;
}

void admin_pool_index_build(struct admin_pool_index *ix)
{
    memset(ix, 0, sizeof(*ix));
    struct list *it, *tmp;
    list_for_each_safe(it, tmp, &g_pooler.pools)
    {
        ix->n++;
    }
    ix->v = calloc((size_t)ix->n + 1, sizeof(*ix->v));
    if (!ix->v)
        abort();
    int k = 0;
    list_for_each_safe(it, tmp, &g_pooler.pools)
    {
        ix->v[k++].p = list_entry(it, struct pool, node);
    }
    qsort(ix->v, (size_t)ix->n, sizeof(*ix->v), ix_cmp);
    admin_each_client(ix_add_client, ix);
}

void admin_pool_index_free(struct admin_pool_index *ix)
{
    free(ix->v);
    ix->v = NULL;
}

/* ---- databases: the rows of SHOW DATABASES and SHOW STATS ----------------- */

static int db_row_cmp(const void *a, const void *b)
{
    return strcmp(((const struct admin_db_row *)a)->name, ((const struct admin_db_row *)b)->name);
}

static struct database *runtime_db(const char *name)
{
    struct list *it, *tmp;
    list_for_each_safe(it, tmp, &g_pooler.databases)
    {
        struct database *db = list_entry(it, struct database, node);
        if (strcmp(db->name, name) == 0)
            return db;
    }
    return NULL;
}

int admin_db_rows_build(struct admin_db_row **out)
{
    const struct config *cfg = g_pooler.cfg;
    int cap = cfg->n_databases + 1;
    struct list *it, *tmp;
    list_for_each_safe(it, tmp, &g_pooler.databases)
    {
        cap++;
    }
    struct admin_db_row *v = calloc((size_t)cap, sizeof(*v));
    if (!v)
        abort();
    int n = 0;
    for (int i = 0; i < cfg->n_databases; i++) {
        const struct config_database *cd = &cfg->databases[i];
        if (strcmp(cd->name, "*") == 0)
            continue;
        struct database *db = runtime_db(cd->name);
        v[n++] = (struct admin_db_row){cd->name, db && db->cfg ? db : NULL, cd};
    }
    list_for_each_safe(it, tmp, &g_pooler.databases)
    {
        struct database *db = list_entry(it, struct database, node);
        if (db->autodb && db->cfg)
            v[n++] = (struct admin_db_row){db->name, db, db->cfg};
    }
    v[n++] = (struct admin_db_row){"pgbouncer", NULL, NULL};
    qsort(v, (size_t)n, sizeof(*v), db_row_cmp);
    *out = v;
    return n;
}

/* ---- column sets (PgBouncer 1.24) ---------------------------------------- */

#define T          ADMIN_OID_TEXT
#define I          ADMIN_OID_INT4
#define Q          ADMIN_OID_INT8
#define N          ADMIN_OID_NUMERIC
#define COLS(...)  ((const char *const[]){__VA_ARGS__})
#define TYPES(...) ((const uint32_t[]){__VA_ARGS__})

#define CONN_COLS                                                                                  \
    COLS("type", "user", "database", "replication", "state", "addr", "port", "local_addr",         \
         "local_port", "connect_time", "request_time", "wait", "wait_us", "close_needed", "ptr",   \
         "link", "remote_pid", "tls", "application_name", "prepared_statements", "id")
#define CONN_TYPES TYPES(T, T, T, T, T, T, I, T, I, T, T, I, I, I, T, T, I, T, T, I, Q)
/* SHOW SOCKETS: CONN_COLS, then the stream buffer's positions. */
#define SOCKET_COLS                                                                                \
    COLS("type", "user", "database", "replication", "state", "addr", "port", "local_addr",         \
         "local_port", "connect_time", "request_time", "wait", "wait_us", "close_needed", "ptr",   \
         "link", "remote_pid", "tls", "application_name", "prepared_statements", "id", "recv_pos", \
         "pkt_pos", "pkt_remain", "send_pos", "send_remain", "pkt_avail", "send_avail")
#define SOCKET_TYPES                                                                               \
    TYPES(T, T, T, T, T, T, I, T, I, T, T, I, I, I, T, T, I, T, T, I, Q, I, I, I, I, I, I, I)

#define STATS_COLS                                                                                 \
    COLS("database", "total_server_assignment_count", "total_xact_count", "total_query_count",     \
         "total_received", "total_sent", "total_xact_time", "total_query_time", "total_wait_time", \
         "total_client_parse_count", "total_server_parse_count", "total_bind_count",               \
         "avg_server_assignment_count", "avg_xact_count", "avg_query_count", "avg_recv",           \
         "avg_sent", "avg_xact_time", "avg_query_time", "avg_wait_time", "avg_client_parse_count", \
         "avg_server_parse_count", "avg_bind_count", "total_replica_read_count",                   \
         "total_retry_count", "total_server_kept_count", "avg_replica_read_count",                 \
         "avg_retry_count", "avg_server_kept_count")
#define STATS_TYPES                                                                                \
    TYPES(T, N, N, N, N, N, N, N, N, N, N, N, N, N, N, N, N, N, N, N, N, N, N, N, N, N, N, N, N)

/* STATS_TOTALS and STATS_AVERAGES share these names, without prefixes. */
#define STATS_PART_COLS                                                                            \
    COLS("database", "server_assignment_count", "xact_count", "query_count", "bytes_received",     \
         "bytes_sent", "xact_time", "query_time", "wait_time", "client_parse_count",               \
         "server_parse_count", "bind_count", "replica_read_count", "retry_count",                  \
         "server_kept_count")
#define STATS_PART_TYPES TYPES(T, N, N, N, N, N, N, N, N, N, N, N, N, N, N)

static void show_help(struct admin_result *r);
static void show_version(struct admin_result *r);
static void show_config(struct admin_result *r);
static void show_databases(struct admin_result *r);
static void show_lists(struct admin_result *r);
static void show_mem(struct admin_result *r);
static void show_state(struct admin_result *r);
static void show_nothing(struct admin_result *r);
static void show_peers(struct admin_result *r);
static void show_peer_pools(struct admin_result *r);

struct show_def {
    const char *name;
    int ncols;
    const char *const *cols;
    const uint32_t *types;
    void (*rows)(struct admin_result *r); /* writes the DataRows only */
};

static const struct show_def show_defs[ADMIN_SHOW_COUNT] = {
    [ADMIN_SHOW_HELP] = {"HELP", 0, NULL, NULL, show_help},
    [ADMIN_SHOW_VERSION] = {"VERSION", 1, COLS("version"), TYPES(T), show_version},
    [ADMIN_SHOW_CONFIG] = {"CONFIG", 4, COLS("key", "value", "default", "changeable"),
                           TYPES(T, T, T, T), show_config},
    [ADMIN_SHOW_DATABASES] = {"DATABASES", 17,
                              COLS("name", "host", "port", "database", "force_user", "pool_size",
                                   "min_pool_size", "reserve_pool_size", "server_lifetime",
                                   "pool_mode", "load_balance_hosts", "max_connections",
                                   "current_connections", "max_client_connections",
                                   "current_client_connections", "paused", "disabled"),
                              TYPES(T, T, I, T, T, I, I, I, I, T, T, I, I, I, I, I, I),
                              show_databases},
    [ADMIN_SHOW_POOLS] = {"POOLS", 18,
                          COLS("database", "user", "cl_active", "cl_waiting",
                               "cl_active_cancel_req", "cl_waiting_cancel_req", "sv_active",
                               "sv_active_cancel", "sv_being_canceled", "sv_idle", "sv_used",
                               "sv_tested", "sv_login", "maxwait", "maxwait_us", "pool_mode",
                               "load_balance_hosts", "endpoint"),
                          TYPES(T, T, I, I, I, I, I, I, I, I, I, I, I, I, I, T, T, T),
                          admin_show_pools},
    [ADMIN_SHOW_CLIENTS] = {"CLIENTS", 21, CONN_COLS, CONN_TYPES, admin_show_clients},
    [ADMIN_SHOW_SERVERS] = {"SERVERS", 21, CONN_COLS, CONN_TYPES, admin_show_servers},
    [ADMIN_SHOW_USERS] = {"USERS", 8,
                          COLS("name", "pool_size", "reserve_pool_size", "pool_mode",
                               "max_user_connections", "current_connections",
                               "max_user_client_connections", "current_client_connections"),
                          TYPES(T, T, T, T, I, I, I, I), admin_show_users},
    [ADMIN_SHOW_STATS] = {"STATS", 29, STATS_COLS, STATS_TYPES, admin_show_stats},
    [ADMIN_SHOW_STATS_TOTALS] = {"STATS_TOTALS", 15, STATS_PART_COLS, STATS_PART_TYPES,
                                 admin_show_stats_totals},
    [ADMIN_SHOW_STATS_AVERAGES] = {"STATS_AVERAGES", 15, STATS_PART_COLS, STATS_PART_TYPES,
                                   admin_show_stats_averages},
    [ADMIN_SHOW_TOTALS] = {"TOTALS", 2, COLS("name", "value"), TYPES(T, N), admin_show_totals},
    [ADMIN_SHOW_LISTS] = {"LISTS", 2, COLS("list", "items"), TYPES(T, I), show_lists},
    [ADMIN_SHOW_MEM] = {"MEM", 5, COLS("name", "size", "used", "free", "memtotal"),
                        TYPES(T, I, I, I, I), show_mem},
    [ADMIN_SHOW_STATE] = {"STATE", 2, COLS("key", "value"), TYPES(T, T), show_state},
    [ADMIN_SHOW_DNS_HOSTS] = {"DNS_HOSTS", 3, COLS("hostname", "ttl", "addrs"), TYPES(T, Q, T),
                              show_nothing},
    [ADMIN_SHOW_DNS_ZONES] = {"DNS_ZONES", 3, COLS("zonename", "serial", "count"), TYPES(T, T, I),
                              show_nothing},
    [ADMIN_SHOW_PEERS] = {"PEERS", 4, COLS("peer_id", "host", "port", "pool_size"),
                          TYPES(I, T, I, I), show_peers},
    [ADMIN_SHOW_PEER_POOLS] = {"PEER_POOLS", 5,
                               COLS("database", "cl_active_cancel_req", "cl_waiting_cancel_req",
                                    "sv_active_cancel", "sv_login"),
                               TYPES(T, I, I, I, I), show_peer_pools},
    [ADMIN_SHOW_REPLICAS] = {"REPLICAS", 17,
                             COLS("database", "host", "port", "role", "state", "ban_reason",
                                  "ban_left", "weight", "replay_lsn", "checked_ms_ago", "reads",
                                  "errors", "outstanding", "sv_active", "sv_idle", "lag_bytes",
                                  "lag_ms"),
                             TYPES(T, T, I, T, T, T, I, I, T, Q, Q, Q, I, I, I, Q, Q),
                             admin_show_replicas},
    [ADMIN_SHOW_SOCKETS] = {"SOCKETS", 28, SOCKET_COLS, SOCKET_TYPES, admin_show_sockets},
    [ADMIN_SHOW_ACTIVE_SOCKETS] = {"ACTIVE_SOCKETS", 28, SOCKET_COLS, SOCKET_TYPES,
                                   admin_show_active_sockets},
    [ADMIN_SHOW_CACHE] = {"CACHE", 18,
                          COLS("database", "hits", "misses", "hit_ratio", "fills", "stores",
                               "refused_stale", "refused_other", "invalidations", "bypassed",
                               "entries", "bytes", "max_bytes", "evictions", "expired", "redis",
                               "logical", "logical_lag_bytes"),
                          TYPES(T, Q, Q, T, Q, Q, Q, Q, Q, Q, Q, Q, Q, Q, Q, T, T, Q),
                          admin_show_cache},
    [ADMIN_SHOW_CACHE_TABLES] = {"CACHE_TABLES", 4,
                                 COLS("database", "table", "invalidations", "entries_dropped"),
                                 TYPES(T, T, Q, Q), admin_show_cache_tables},
    [ADMIN_SHOW_JOBS] = {"JOBS", 15,
                         COLS("name", "database", "schedule", "after_writes_to", "state",
                              "next_run", "last_start", "duration_ms", "result", "error", "runs",
                              "failures", "skipped", "lock_holder", "waiting"),
                         TYPES(T, T, T, T, T, T, T, Q, T, T, Q, Q, Q, T, I), admin_show_jobs},
    [ADMIN_SHOW_QUERIES] = {"QUERIES", 16,
                            COLS("fingerprint", "query", "calls", "errors", "rows", "total_time_us",
                                 "mean_us", "p50_us", "p95_us", "p99_us", "max_us", "primary",
                                 "replica", "cache_hits", "first_seen", "last_seen"),
                            TYPES(T, T, Q, Q, Q, Q, Q, Q, Q, Q, Q, Q, Q, Q, T, T),
                            admin_show_queries},
    [ADMIN_SHOW_INDEX_ADVICE] = {"INDEX_ADVICE", 11,
                                 COLS("database", "table", "columns", "statement", "verified",
                                      "cost_before", "cost_after", "gain_percent", "size_bytes",
                                      "fingerprints", "note"),
                                 TYPES(T, T, T, T, T, N, N, N, Q, T, T), admin_show_index_advice},
};

#undef T
#undef I
#undef Q
#undef N

const char *admin_show_topic_str(enum admin_show_topic t)
{
    return (unsigned)t < ADMIN_SHOW_COUNT ? show_defs[t].name : "?";
}

int admin_show_columns(enum admin_show_topic t, const char *const **names, const uint32_t **types)
{
    if ((unsigned)t >= ADMIN_SHOW_COUNT)
        return 0;
    *names = show_defs[t].cols;
    *types = show_defs[t].types;
    return show_defs[t].ncols;
}

void admin_show_run(enum admin_show_topic t, struct admin_result *r)
{
    const struct show_def *d = &show_defs[t];
    if (d->ncols > 0)
        admin_result_columns(r, d->ncols, d->cols, d->types);
    d->rows(r);
    admin_out_complete(r->out, "SHOW");
}

/* ---- the commands -------------------------------------------------------- */

static void show_nothing(struct admin_result *r)
{
    (void)r;
}

/* The [peers] entries cancels may go to: this process's own entry is not
 * one of them (PgBouncer ignores it too). */
static bool is_other_peer(const struct config *cfg, const struct config_peer *p)
{
    return p->id != cfg->peer_id;
}

static void show_peers(struct admin_result *r)
{
    const struct config *cfg = g_pooler.cfg;
    for (int i = 0; i < cfg->n_peers; i++) {
        const struct config_peer *p = &cfg->peers[i];
        if (!is_other_peer(cfg, p))
            continue;
        char f[3][ADMIN_NUM_LEN];
        const char *v[] = {admin_num(f[0], p->id), p->host, admin_num(f[1], p->port),
                           admin_num(f[2], peers_pool_size(cfg, p))};
        admin_result_row(r, v);
    }
}

static void show_peer_pools(struct admin_result *r)
{
    const struct config *cfg = g_pooler.cfg;
    for (int i = 0; i < cfg->n_peers; i++) {
        const struct config_peer *p = &cfg->peers[i];
        if (!is_other_peer(cfg, p))
            continue;
        struct peers_pool_stats st;
        peers_pool_stats(p->id, &st);
        char f[5][ADMIN_NUM_LEN];
        const char *v[] = {admin_num(f[0], p->id), admin_num(f[1], st.active),
                           admin_num(f[2], st.waiting), admin_num(f[3], st.sv_active),
                           admin_num(f[4], st.sv_connect)};
        admin_result_row(r, v);
    }
}

static void show_help(struct admin_result *r)
{
    admin_out_notice(
        r->out, "Console usage",
        "\n\tSHOW HELP|CONFIG|DATABASES|POOLS|CLIENTS|SERVERS|SOCKETS|USERS|VERSION|STATE"
        "\n\tSHOW STATS|STATS_TOTALS|STATS_AVERAGES|TOTALS|LISTS|MEM"
        "\n\tSHOW DNS_HOSTS|DNS_ZONES|PEERS|PEER_POOLS|REPLICAS|CACHE|CACHE_TABLES|JOBS"
        "\n\tSHOW QUERIES [ORDER BY total_time|calls|mean|p99|errors] [LIMIT n]"
        "\n\tSHOW INDEX_ADVICE"
        "\n\tINSIGHTS RESET"
        "\n\tCACHE CLEAR [table]"
        "\n\tSET key = value"
        "\n\tRELOAD"
        "\n\tPAUSE [<db>]"
        "\n\tRESUME [<db>]"
        "\n\tDISABLE <db>"
        "\n\tENABLE <db>"
        "\n\tRECONNECT [<db>]"
        "\n\tKILL [<db>]"
        "\n\tKILL_CLIENT <id>"
        "\n\tWAIT_CLOSE [<db>]"
        "\n\tSHUTDOWN [WAIT_FOR_SERVERS|WAIT_FOR_CLIENTS]"
        "\n\tRUN JOB <name>");
}

static void show_version(struct admin_result *r)
{
    const char *v[] = {"PgBouncer " ADMIN_PGBOUNCER_COMPAT " (sluice " SLUICE_VERSION ")"};
    admin_result_row(r, v);
}

static void show_config(struct admin_result *r)
{
    const struct config *cfg = g_pooler.cfg;
    char buf[256];
    struct config_setting_view sv;
    for (int i = 0; config_setting_at(cfg, i, buf, sizeof(buf), &sv); i++) {
        const char *v[] = {sv.key, sv.value, sv.default_value, sv.reloadable ? "yes" : "no"};
        admin_result_row(r, v);
    }
}

static void show_databases(struct admin_result *r)
{
    const struct config *cfg = g_pooler.cfg;
    struct admin_pool_index ix;
    admin_pool_index_build(&ix);
    struct admin_db_row *rows;
    int n = admin_db_rows_build(&rows);
    char f[12][ADMIN_NUM_LEN];
    for (int i = 0; i < n; i++) {
        const struct admin_db_row *d = &rows[i];
        const struct config_database *cd = d->cd;
        if (!cd) {
            /* The console, described the way PgBouncer describes its own. */
            const char *v[] = {"pgbouncer", NULL,        admin_num4(f[0], cfg->listen_port),
                               "pgbouncer", "pgbouncer", "2",
                               "0",         "0",         "0",
                               "statement", NULL,        "0",
                               "0",         "0",         admin_num4(f[1], ix.admin_clients),
                               "0",         "0"};
            admin_result_row(r, v);
            continue;
        }
        int clients = 0;
        for (int k = 0; k < ix.n; k++)
            if (d->db && ix.v[k].p->db == d->db)
                clients += ix.v[k].cl_total;
        const char *v[] = {
            d->name,
            cd->host[0] ? cd->host : NULL,
            admin_num4(f[0], cd->port),
            cd->dbname[0] ? cd->dbname : d->name,
            cd->user[0] ? cd->user : NULL,
            admin_num4(f[1], cd->pool_size >= 0 ? cd->pool_size : cfg->default_pool_size),
            admin_num4(f[2], cd->min_pool_size >= 0 ? cd->min_pool_size : cfg->min_pool_size),
            admin_num4(f[3], cd->reserve_pool >= 0 ? cd->reserve_pool : cfg->reserve_pool_size),
            admin_num4(f[4], cfg->server_lifetime / 1000000),
            cd->pool_mode != POOL_MODE_UNSET ? pool_mode_str(cd->pool_mode) : NULL,
            cd->n_hosts < 2             ? NULL
            : cd->load_balance_hosts[0] ? cd->load_balance_hosts
                                        : "round-robin",
            admin_num4(f[5], cd->max_db_connections >= 0 ? cd->max_db_connections
                                                         : cfg->max_db_connections),
            admin_num4(f[6], d->db ? d->db->n_servers : 0),
            "0",
            admin_num4(f[7], clients),
            d->db && d->db->paused ? "1" : "0",
            d->db && d->db->disabled ? "1" : "0",
        };
        admin_result_row(r, v);
    }
    free(rows);
    admin_pool_index_free(&ix);
}

/* ---- internals ----------------------------------------------------------- */

static void count_login(struct client *c, void *arg)
{
    int *n = arg;
    if (c->state < CL_IDLE)
        (*n)++;
}

static int count_list(const struct list *l)
{
    int n = 0;
    for (const struct list *it = l->next; it != l; it = it->next)
        n++;
    return n;
}

static int count_servers(void)
{
    int n = 0;
    struct list *it, *tmp;
    list_for_each_safe(it, tmp, &g_pooler.pools)
    {
        const struct pool *p = list_entry(it, struct pool, node);
        n += p->n_idle + p->n_active + p->n_busy;
    }
    return n;
}

static int count_clients(void)
{
    int n = 0;
    for (int i = 0; i < g_pooler.n_workers; i++)
        n += g_pooler.workers[i].n_clients;
    return n;
}

static void show_lists(struct admin_result *r)
{
    struct admin_db_row *rows;
    int ndb = admin_db_rows_build(&rows);
    free(rows);
    int login = 0;
    admin_each_client(count_login, &login);
    char f[6][ADMIN_NUM_LEN];
    const char *v[][2] = {
        {"databases", admin_num4(f[0], ndb)},
        {"users", admin_num4(f[1], count_list(&g_pooler.users))},
        {"pools", admin_num4(f[2], count_list(&g_pooler.pools) + 1)},
        {"free_clients", "0"},
        {"used_clients", admin_num4(f[3], count_clients())},
        {"login_clients", admin_num4(f[4], login)},
        {"free_servers", "0"},
        {"used_servers", admin_num4(f[5], count_servers())},
        {"dns_names", "0"},
        {"dns_zones", "0"},
        {"dns_queries", "0"},
        {"dns_pending", "0"},
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
        admin_result_row(r, v[i]);
}

static void mem_row(struct admin_result *r, const char *name, long long size, long long used,
                    long long nfree)
{
    char f[4][ADMIN_NUM_LEN];
    const char *v[] = {name, admin_num4(f[0], size), admin_num4(f[1], used),
                       admin_num4(f[2], nfree), admin_num4(f[3], size * (used + nfree))};
    admin_result_row(r, v);
}

static void show_mem(struct admin_result *r)
{
    /* sluice allocates connections one by one (no slabs): nothing is kept
     * free except I/O buffers, which are recycled per worker. */
    mem_row(r, "user_cache", (long long)sizeof(struct pool_user), count_list(&g_pooler.users), 0);
    mem_row(r, "db_cache", (long long)sizeof(struct database), count_list(&g_pooler.databases), 0);
    mem_row(r, "pool_cache", (long long)sizeof(struct pool), count_list(&g_pooler.pools), 0);
    mem_row(r, "server_cache", (long long)sizeof(struct server), count_servers(), 0);
    mem_row(r, "client_cache", (long long)sizeof(struct client), count_clients(), 0);
    long long bufsize = 0, used = 0, nfree = 0;
    for (int i = 0; i < g_pooler.n_workers; i++) {
        const struct iobuf_cache *bc = &g_pooler.workers[i].bufs;
        bufsize = (long long)(bc->size + sizeof(struct iobuf));
        used += bc->n_allocated - bc->n_free;
        nfree += bc->n_free;
    }
    mem_row(r, "iobuf_cache", bufsize, used, nfree);
}

static void show_state(struct admin_result *r)
{
    const char *v[][2] = {
        {"active", g_pooler.paused ? "no" : "yes"},
        {"paused", g_pooler.paused ? "yes" : "no"},
        {"suspended", "no"},
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
        admin_result_row(r, v[i]);
}
