/* admin_show.c - the console's SHOW commands.
 *
 * Column names, order and meaning follow PgBouncer 1.24's console so that
 * monitoring tools written for it read sluice unchanged; docs/admin.md
 * describes every column. Values are read from the live structures
 * (g_pooler, the workers' client lists) at the time of the command. */
#include <arpa/inet.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>

#include "admin.h"
#include "admin_int.h"
#include "client.h"
#include "conn.h"
#include "pool.h"
#include "prepared.h"
#include "tls.h"
#include "version.h"
#include "worker.h"

struct admin_counters admin_counters;
/* ---- helpers over the live structures ------------------------------------ */

#define NUM_LEN 24

static char *num(char *buf, long long v)
{
    snprintf(buf, NUM_LEN, "%lld", v);
    return buf;
}

static char *unum(char *buf, unsigned long long v)
{
    snprintf(buf, NUM_LEN, "%llu", v);
    return buf;
}

/* int4 columns: values beyond int4 are clamped rather than wrapped. */
static char *num4(char *buf, long long v)
{
    if (v > INT32_MAX)
        v = INT32_MAX;
    if (v < INT32_MIN)
        v = INT32_MIN;
    return num(buf, v);
}

static int64_t loop_now(const struct admin_result *r)
{
    return r->w ? worker_now(r->w) : now_wall_usec();
}

/* Loop-clock microseconds as "YYYY-MM-DD HH:MM:SS TZ", the way PgBouncer
 * prints connect_time. wall_offset converts the loop clock to the wall
 * clock (they are the same clock with libev, but nothing here relies on it). */
static void fmt_time(char *buf, size_t len, int64_t usec, int64_t wall_offset)
{
    time_t t = (time_t)((usec + wall_offset) / 1000000);
    struct tm tm;
    if (!localtime_r(&t, &tm) || strftime(buf, len, "%Y-%m-%d %H:%M:%S %Z", &tm) == 0)
        snprintf(buf, len, "%lld", (long long)t);
}

/* Address and port of a socket address ("unix" for a Unix socket). */
static void fmt_sockaddr(const struct sockaddr_storage *ss, char *addr, size_t len, int *port)
{
    *port = 0;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &in->sin_addr, addr, (socklen_t)len);
        *port = ntohs(in->sin_port);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, addr, (socklen_t)len);
        *port = ntohs(in6->sin6_port);
    } else if (ss->ss_family == AF_UNIX) {
        snprintf(addr, len, "unix");
        *port = g_pooler.cfg ? g_pooler.cfg->listen_port : 0;
    } else {
        snprintf(addr, len, "%s", "");
    }
}

static void fmt_local(int fd, char *addr, size_t len, int *port)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    memset(&ss, 0, sizeof(ss));
    if (fd < 0 || getsockname(fd, (struct sockaddr *)&ss, &sl) != 0)
        ss.ss_family = AF_UNSPEC;
    fmt_sockaddr(&ss, addr, len, port);
}

/* Calls fn for every live client of every worker. */
static void each_client(void (*fn)(struct client *c, void *arg), void *arg)
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

/* Per-pool figures that only a walk over the clients gives. Pools are
 * looked up by address in a sorted array: one pass over 10,000 clients
 * instead of one per pool. */
struct pool_ix {
    const struct pool *p;
    int cl_active;  /* logged in, idle or linked */
    int cl_waiting; /* waiting for a server */
    int cl_total;   /* every client assigned to the pool, logging in included */
};

struct pool_index {
    struct pool_ix *v;
    int n;
    int admin_clients;
};

static int ix_cmp(const void *a, const void *b)
{
    const struct pool *x = ((const struct pool_ix *)a)->p, *y = ((const struct pool_ix *)b)->p;
    return x < y ? -1 : x > y;
}

static struct pool_ix *ix_find(const struct pool_index *ix, const struct pool *p)
{
    struct pool_ix key = {.p = p};
    return p ? bsearch(&key, ix->v, (size_t)ix->n, sizeof(*ix->v), ix_cmp) : NULL;
}

static void ix_add_client(struct client *c, void *arg)
{
    struct pool_index *ix = arg;
    if (c->is_admin) {
        ix->admin_clients++;
        return;
    }
    struct pool_ix *e = ix_find(ix, c->pool);
    if (!e)
        return;
    e->cl_total++;
    if (c->state == CL_IDLE || c->state == CL_ACTIVE)
        e->cl_active++;
    else if (c->state == CL_WAITING)
        e->cl_waiting++;
}

static void pool_index_build(struct pool_index *ix)
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
    each_client(ix_add_client, ix);
}

static void pool_index_free(struct pool_index *ix)
{
    free(ix->v);
    ix->v = NULL;
}

/* ---- statistics ---------------------------------------------------------- */

enum stat_field {
    ST_ASSIGN = 0, /* servers assigned to clients */
    ST_XACT,       /* transactions */
    ST_QUERY,      /* queries */
    ST_RECV,       /* bytes received from clients */
    ST_SENT,       /* bytes sent to clients */
    ST_XACT_TIME,  /* usec in transactions */
    ST_QUERY_TIME, /* usec in queries */
    ST_WAIT_TIME,  /* usec clients waited for a server */
    ST_COUNT,
};

struct stat_totals {
    uint64_t v[ST_COUNT];
};

/* Server assignments of pool p. pool.c does not count them yet (see the
 * issue note: a per-pool counter bumped where a server is linked to a
 * client); until it does, the column reads 0. */
static uint64_t pool_assign_count(const struct pool *p)
{
    return p->assign_count;
}

/* Totals of database db (NULL: the console) from its pools' counters. */
static void db_totals(const struct database *db, const struct pool_index *ix, struct stat_totals *t)
{
    memset(t, 0, sizeof(*t));
    if (!db) {
        t->v[ST_XACT] = admin_counters.xact_count;
        t->v[ST_QUERY] = admin_counters.query_count;
        t->v[ST_RECV] = admin_counters.bytes_in;
        t->v[ST_SENT] = admin_counters.bytes_out;
        return;
    }
    for (int i = 0; i < ix->n; i++) {
        const struct pool *p = ix->v[i].p;
        if (p->db != db)
            continue;
        t->v[ST_ASSIGN] += pool_assign_count(p);
        t->v[ST_XACT] += p->xact_count;
        t->v[ST_QUERY] += p->query_count;
        t->v[ST_RECV] += p->bytes_in;
        t->v[ST_SENT] += p->bytes_out;
        t->v[ST_XACT_TIME] += p->xact_time;
        t->v[ST_QUERY_TIME] += p->query_time;
        t->v[ST_WAIT_TIME] += p->wait_time;
    }
}

/* What changed in the last complete stats_period, per database. Databases
 * live until exit, so their addresses are stable keys. */
struct stat_slot {
    const struct database *db; /* NULL: the console */
    struct stat_totals prev;   /* totals at the last period's end */
    struct stat_totals delta;  /* change over the last period */
};
static struct stat_slot *stat_slots;
static int stat_nslots, stat_cap;
static int64_t stat_last_time;
static double stat_period_secs;

static struct stat_slot *stat_slot_of(const struct database *db, bool create)
{
    for (int i = 0; i < stat_nslots; i++)
        if (stat_slots[i].db == db)
            return &stat_slots[i];
    if (!create)
        return NULL;
    if (stat_nslots == stat_cap) {
        int cap = stat_cap ? stat_cap * 2 : 16;
        struct stat_slot *v = realloc(stat_slots, (size_t)cap * sizeof(*v));
        if (!v)
            abort();
        stat_slots = v;
        stat_cap = cap;
    }
    struct stat_slot *s = &stat_slots[stat_nslots++];
    memset(s, 0, sizeof(*s));
    s->db = db;
    return s;
}

static void stat_take(const struct database *db, const struct pool_index *ix)
{
    struct stat_totals cur;
    db_totals(db, ix, &cur);
    struct stat_slot *s = stat_slot_of(db, false);
    bool fresh = !s;
    if (!s)
        s = stat_slot_of(db, true);
    for (int i = 0; i < ST_COUNT; i++) {
        s->delta.v[i] = fresh || cur.v[i] < s->prev.v[i] ? 0 : cur.v[i] - s->prev.v[i];
        s->prev.v[i] = cur.v[i];
    }
}

void admin_stats_period(int64_t now_usec)
{
    if (stat_last_time == 0) {
        stat_last_time = now_usec;
        stat_period_secs = 0;
    } else {
        stat_period_secs = (double)(now_usec - stat_last_time) / 1e6;
        stat_last_time = now_usec;
    }
    struct pool_index ix;
    pool_index_build(&ix);
    struct list *it, *tmp;
    list_for_each_safe(it, tmp, &g_pooler.databases)
    {
        stat_take(list_entry(it, struct database, node), &ix);
    }
    stat_take(NULL, &ix);
    pool_index_free(&ix);
}

void admin_stats_free(void)
{
    free(stat_slots);
    stat_slots = NULL;
    stat_nslots = stat_cap = 0;
    stat_last_time = 0;
}

/* Averages over the last period from the summed deltas d: per second for
 * counts and bytes, per transaction / query / assignment for times. */
static void stat_averages(const struct stat_totals *d, struct stat_totals *avg)
{
    memset(avg, 0, sizeof(*avg));
    double secs = stat_period_secs;
    if (secs > 0) {
        avg->v[ST_ASSIGN] = (uint64_t)((double)d->v[ST_ASSIGN] / secs);
        avg->v[ST_XACT] = (uint64_t)((double)d->v[ST_XACT] / secs);
        avg->v[ST_QUERY] = (uint64_t)((double)d->v[ST_QUERY] / secs);
        avg->v[ST_RECV] = (uint64_t)((double)d->v[ST_RECV] / secs);
        avg->v[ST_SENT] = (uint64_t)((double)d->v[ST_SENT] / secs);
    }
    if (d->v[ST_XACT])
        avg->v[ST_XACT_TIME] = d->v[ST_XACT_TIME] / d->v[ST_XACT];
    if (d->v[ST_QUERY])
        avg->v[ST_QUERY_TIME] = d->v[ST_QUERY_TIME] / d->v[ST_QUERY];
    /* Each assignment is one wait; without assignment counts, each
     * transaction is (true in transaction pooling). */
    uint64_t waits = d->v[ST_ASSIGN] ? d->v[ST_ASSIGN] : d->v[ST_XACT];
    if (waits)
        avg->v[ST_WAIT_TIME] = d->v[ST_WAIT_TIME] / waits;
}

/* Averages of database db (NULL: the console) over the last period. */
static void db_averages(const struct database *db, struct stat_totals *avg)
{
    const struct stat_slot *s = stat_slot_of(db, false);
    struct stat_totals zero;
    memset(&zero, 0, sizeof(zero));
    stat_averages(s ? &s->delta : &zero, avg);
}

/* ---- databases: the rows of SHOW DATABASES and SHOW STATS ----------------- */

struct db_row {
    const char *name;
    struct database *db;              /* runtime state, NULL if never used */
    const struct config_database *cd; /* NULL for the console */
};

static int db_row_cmp(const void *a, const void *b)
{
    return strcmp(((const struct db_row *)a)->name, ((const struct db_row *)b)->name);
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

/* Every database a client can use by name: the [databases] entries (not
 * "*"), those made from "*" so far, and the console, sorted by name. */
static int db_rows_build(struct db_row **out)
{
    const struct config *cfg = g_pooler.cfg;
    int cap = cfg->n_databases + 1;
    struct list *it, *tmp;
    list_for_each_safe(it, tmp, &g_pooler.databases)
    {
        cap++;
    }
    struct db_row *v = calloc((size_t)cap, sizeof(*v));
    if (!v)
        abort();
    int n = 0;
    for (int i = 0; i < cfg->n_databases; i++) {
        const struct config_database *cd = &cfg->databases[i];
        if (strcmp(cd->name, "*") == 0)
            continue;
        struct database *db = runtime_db(cd->name);
        v[n++] = (struct db_row){cd->name, db && db->cfg ? db : NULL, cd};
    }
    list_for_each_safe(it, tmp, &g_pooler.databases)
    {
        struct database *db = list_entry(it, struct database, node);
        if (db->autodb && db->cfg)
            v[n++] = (struct db_row){db->name, db, db->cfg};
    }
    v[n++] = (struct db_row){"pgbouncer", NULL, NULL};
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

#define STATS_COLS                                                                                 \
    COLS("database", "total_server_assignment_count", "total_xact_count", "total_query_count",     \
         "total_received", "total_sent", "total_xact_time", "total_query_time", "total_wait_time", \
         "total_client_parse_count", "total_server_parse_count", "total_bind_count",               \
         "avg_server_assignment_count", "avg_xact_count", "avg_query_count", "avg_recv",           \
         "avg_sent", "avg_xact_time", "avg_query_time", "avg_wait_time", "avg_client_parse_count", \
         "avg_server_parse_count", "avg_bind_count")
#define STATS_TYPES TYPES(T, N, N, N, N, N, N, N, N, N, N, N, N, N, N, N, N, N, N, N, N, N, N)

/* STATS_TOTALS and STATS_AVERAGES share these names, without prefixes. */
#define STATS_PART_COLS                                                                            \
    COLS("database", "server_assignment_count", "xact_count", "query_count", "bytes_received",     \
         "bytes_sent", "xact_time", "query_time", "wait_time", "client_parse_count",               \
         "server_parse_count", "bind_count")
#define STATS_PART_TYPES TYPES(T, N, N, N, N, N, N, N, N, N, N, N)

static void show_help(struct admin_result *r);
static void show_version(struct admin_result *r);
static void show_config(struct admin_result *r);
static void show_databases(struct admin_result *r);
static void show_pools(struct admin_result *r);
static void show_clients(struct admin_result *r);
static void show_servers(struct admin_result *r);
static void show_users(struct admin_result *r);
static void show_stats(struct admin_result *r);
static void show_stats_totals(struct admin_result *r);
static void show_stats_averages(struct admin_result *r);
static void show_totals(struct admin_result *r);
static void show_lists(struct admin_result *r);
static void show_mem(struct admin_result *r);
static void show_state(struct admin_result *r);
static void show_nothing(struct admin_result *r);

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
    [ADMIN_SHOW_POOLS] = {"POOLS", 17,
                          COLS("database", "user", "cl_active", "cl_waiting",
                               "cl_active_cancel_req", "cl_waiting_cancel_req", "sv_active",
                               "sv_active_cancel", "sv_being_canceled", "sv_idle", "sv_used",
                               "sv_tested", "sv_login", "maxwait", "maxwait_us", "pool_mode",
                               "load_balance_hosts"),
                          TYPES(T, T, I, I, I, I, I, I, I, I, I, I, I, I, I, T, T), show_pools},
    [ADMIN_SHOW_CLIENTS] = {"CLIENTS", 21, CONN_COLS, CONN_TYPES, show_clients},
    [ADMIN_SHOW_SERVERS] = {"SERVERS", 21, CONN_COLS, CONN_TYPES, show_servers},
    [ADMIN_SHOW_USERS] = {"USERS", 8,
                          COLS("name", "pool_size", "reserve_pool_size", "pool_mode",
                               "max_user_connections", "current_connections",
                               "max_user_client_connections", "current_client_connections"),
                          TYPES(T, T, T, T, I, I, I, I), show_users},
    [ADMIN_SHOW_STATS] = {"STATS", 23, STATS_COLS, STATS_TYPES, show_stats},
    [ADMIN_SHOW_STATS_TOTALS] = {"STATS_TOTALS", 12, STATS_PART_COLS, STATS_PART_TYPES,
                                 show_stats_totals},
    [ADMIN_SHOW_STATS_AVERAGES] = {"STATS_AVERAGES", 12, STATS_PART_COLS, STATS_PART_TYPES,
                                   show_stats_averages},
    [ADMIN_SHOW_TOTALS] = {"TOTALS", 2, COLS("name", "value"), TYPES(T, N), show_totals},
    [ADMIN_SHOW_LISTS] = {"LISTS", 2, COLS("list", "items"), TYPES(T, I), show_lists},
    [ADMIN_SHOW_MEM] = {"MEM", 5, COLS("name", "size", "used", "free", "memtotal"),
                        TYPES(T, I, I, I, I), show_mem},
    [ADMIN_SHOW_STATE] = {"STATE", 2, COLS("key", "value"), TYPES(T, T), show_state},
    [ADMIN_SHOW_DNS_HOSTS] = {"DNS_HOSTS", 3, COLS("hostname", "ttl", "addrs"), TYPES(T, Q, T),
                              show_nothing},
    [ADMIN_SHOW_DNS_ZONES] = {"DNS_ZONES", 3, COLS("zonename", "serial", "count"), TYPES(T, T, I),
                              show_nothing},
    [ADMIN_SHOW_PEERS] = {"PEERS", 4, COLS("peer_id", "host", "port", "pool_size"),
                          TYPES(I, T, I, I), show_nothing},
    [ADMIN_SHOW_PEER_POOLS] = {"PEER_POOLS", 5,
                               COLS("database", "cl_active_cancel_req", "cl_waiting_cancel_req",
                                    "sv_active_cancel", "sv_login"),
                               TYPES(T, I, I, I, I), show_nothing},
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

static void show_help(struct admin_result *r)
{
    admin_out_notice(r->out, "Console usage",
                     "\n\tSHOW HELP|CONFIG|DATABASES|POOLS|CLIENTS|SERVERS|USERS|VERSION|STATE"
                     "\n\tSHOW STATS|STATS_TOTALS|STATS_AVERAGES|TOTALS|LISTS|MEM"
                     "\n\tSHOW DNS_HOSTS|DNS_ZONES|PEERS|PEER_POOLS"
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
                     "\n\tSHUTDOWN [WAIT_FOR_SERVERS|WAIT_FOR_CLIENTS]");
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
    struct pool_index ix;
    pool_index_build(&ix);
    struct db_row *rows;
    int n = db_rows_build(&rows);
    char f[12][NUM_LEN];
    for (int i = 0; i < n; i++) {
        const struct db_row *d = &rows[i];
        const struct config_database *cd = d->cd;
        if (!cd) {
            /* The console, described the way PgBouncer describes its own. */
            const char *v[] = {"pgbouncer", NULL,        num4(f[0], cfg->listen_port),
                               "pgbouncer", "pgbouncer", "2",
                               "0",         "0",         "0",
                               "statement", NULL,        "0",
                               "0",         "0",         num4(f[1], ix.admin_clients),
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
            num4(f[0], cd->port),
            cd->dbname[0] ? cd->dbname : d->name,
            cd->user[0] ? cd->user : NULL,
            num4(f[1], cd->pool_size >= 0 ? cd->pool_size : cfg->default_pool_size),
            num4(f[2], cd->min_pool_size >= 0 ? cd->min_pool_size : cfg->min_pool_size),
            num4(f[3], cd->reserve_pool >= 0 ? cd->reserve_pool : cfg->reserve_pool_size),
            num4(f[4], cfg->server_lifetime / 1000000),
            cd->pool_mode != POOL_MODE_UNSET ? pool_mode_str(cd->pool_mode) : NULL,
            NULL,
            num4(f[5],
                 cd->max_db_connections >= 0 ? cd->max_db_connections : cfg->max_db_connections),
            num4(f[6], d->db ? d->db->n_servers : 0),
            "0",
            num4(f[7], clients),
            d->db && d->db->paused ? "1" : "0",
            d->db && d->db->disabled ? "1" : "0",
        };
        admin_result_row(r, v);
    }
    free(rows);
    pool_index_free(&ix);
}

struct pool_row {
    const char *db, *user;
    const struct pool_ix *e; /* NULL for the console */
};

static int pool_row_cmp(const void *a, const void *b)
{
    const struct pool_row *x = a, *y = b;
    int c = strcmp(x->db, y->db);
    return c ? c : strcmp(x->user, y->user);
}

/* Does sv, idle, need server_check_query before its next use? */
static bool idle_needs_check(const struct server *sv, int64_t now)
{
    const struct config *cfg = g_pooler.cfg;
    if (!cfg->server_check_query[0])
        return false;
    return now - sv->last_used >= cfg->server_check_delay && now != sv->last_used;
}

/* The figures of SHOW POOLS for entry e (NULL: the console's row). */
static void pool_view(const struct pool_ix *e, const struct pool_index *ix, int64_t now,
                      struct admin_pool_view *v)
{
    memset(v, 0, sizeof(*v));
    if (!e) {
        v->database = v->user = "pgbouncer";
        v->cl_active = ix->admin_clients;
        return;
    }
    const struct pool *p = e->p;
    v->pool = p;
    v->database = p->db->name;
    v->user = p->user->name;
    v->cl_active = e->cl_active;
    v->cl_waiting = e->cl_waiting;
    v->sv_active = p->n_active;
    struct list *it, *tmp;
    list_for_each_safe(it, tmp, &p->idle)
    {
        if (idle_needs_check(list_entry(it, struct server, node), now))
            v->sv_used++;
        else
            v->sv_idle++;
    }
    list_for_each_safe(it, tmp, &p->busy)
    {
        switch (list_entry(it, struct server, node)->state) {
        case SV_TESTING:
        case SV_RESETTING:
            v->sv_tested++;
            break;
        case SV_CANCEL_WAIT:
            v->sv_canceled++;
            break;
        default:
            v->sv_login++;
            break;
        }
    }
    if (!list_empty(&p->waiting)) {
        const struct client *c = list_entry(list_first(&p->waiting), struct client, wait_node);
        v->maxwait_usec = now - c->request_time;
        if (v->maxwait_usec < 0)
            v->maxwait_usec = 0;
    }
}

/* Calls fn for every pool in SHOW POOLS order (by database, then user),
 * the console's row included when console is true. */
static void pools_walk(int64_t now, bool console,
                       void (*fn)(const struct admin_pool_view *v, void *arg), void *arg)
{
    struct pool_index ix;
    pool_index_build(&ix);
    struct pool_row *rows = calloc((size_t)ix.n + 1, sizeof(*rows));
    if (!rows)
        abort();
    int n = 0;
    for (int i = 0; i < ix.n; i++)
        rows[n++] = (struct pool_row){ix.v[i].p->db->name, ix.v[i].p->user->name, &ix.v[i]};
    if (console)
        rows[n++] = (struct pool_row){"pgbouncer", "pgbouncer", NULL};
    qsort(rows, (size_t)n, sizeof(*rows), pool_row_cmp);
    for (int i = 0; i < n; i++) {
        struct admin_pool_view v;
        pool_view(rows[i].e, &ix, now, &v);
        fn(&v, arg);
    }
    free(rows);
    pool_index_free(&ix);
}

void admin_pools_each(int64_t now, void (*fn)(const struct admin_pool_view *v, void *arg),
                      void *arg)
{
    pools_walk(now, false, fn, arg);
}

static void pool_show_row(const struct admin_pool_view *pv, void *arg)
{
    struct admin_result *r = arg;
    char f[13][NUM_LEN];
    const struct pool *p = pv->pool;
    const char *mode = "statement"; /* the console, as PgBouncer describes its own */
    if (p)
        mode = p->db->cfg ? pool_mode_str(pool_mode_of(p)) : NULL;
    const char *v[] = {pv->database,
                       pv->user,
                       num4(f[0], pv->cl_active),
                       num4(f[1], pv->cl_waiting),
                       "0",
                       "0",
                       num4(f[2], pv->sv_active),
                       "0",
                       num4(f[3], pv->sv_canceled),
                       num4(f[4], pv->sv_idle),
                       num4(f[5], pv->sv_used),
                       num4(f[6], pv->sv_tested),
                       num4(f[7], pv->sv_login),
                       num4(f[8], pv->maxwait_usec / 1000000),
                       num4(f[9], pv->maxwait_usec % 1000000),
                       mode,
                       NULL};
    admin_result_row(r, v);
}

static void show_pools(struct admin_result *r)
{
    pools_walk(loop_now(r), true, pool_show_row, r);
}

struct conn_ctx {
    struct admin_result *r;
    int64_t now, wall_offset;
};

static const char *client_state_name(const struct client *c, const struct admin_result *r)
{
    if (c->is_admin)
        return c == r->self || admin_client_busy(c) ? "active" : "idle";
    switch (c->state) {
    case CL_IDLE:
        return "idle";
    case CL_WAITING:
        return "waiting";
    case CL_ACTIVE:
        return "active";
    default:
        return "login";
    }
}

static void client_row(struct client *c, void *arg)
{
    struct conn_ctx *x = arg;
    if (c->state == CL_STARTUP || !c->user)
        return; /* not yet a client of any database */
    char addr[64], laddr[64], ptr[32], link[32], ctime[64], rtime[64];
    char f[8][NUM_LEN];
    int lport = 0;
    client_addr_str(c, addr, sizeof(addr));
    int port = c->is_unix ? (g_pooler.cfg ? g_pooler.cfg->listen_port : 0) : client_port(c);
    fmt_local(c->s.fd, laddr, sizeof(laddr), &lport);
    snprintf(ptr, sizeof(ptr), "%p", (void *)c);
    if (c->server)
        snprintf(link, sizeof(link), "%p", (void *)c->server);
    else
        link[0] = '\0';
    fmt_time(ctime, sizeof(ctime), c->connect_time, x->wall_offset);
    fmt_time(rtime, sizeof(rtime), c->request_time ? c->request_time : c->connect_time,
             x->wall_offset);
    int64_t wait = 0;
    if (c->state == CL_WAITING || c->state == CL_LOGIN_WAIT)
        wait = x->now - c->request_time;
    if (wait < 0)
        wait = 0;
    long long remote_pid = 0;
    if (c->is_unix) {
        struct ucred cred;
        socklen_t len = sizeof(cred);
        if (getsockopt(c->s.fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0)
            remote_pid = cred.pid;
    }
    const char *app = c->params.v[TP_APPLICATION_NAME];
    char tls[128];
    tls_describe(&c->s, tls, sizeof(tls));
    const char *v[] = {"C",
                       c->user,
                       c->dbname ? c->dbname : "",
                       "none",
                       client_state_name(c, x->r),
                       addr,
                       num4(f[0], port),
                       laddr,
                       num4(f[1], lport),
                       ctime,
                       rtime,
                       num4(f[2], wait / 1000000),
                       num4(f[3], wait % 1000000),
                       "0",
                       ptr,
                       link,
                       num4(f[4], remote_pid),
                       tls,
                       app ? app : "",
                       "0",
                       unum(f[5], c->id)};
    admin_result_row(x->r, v);
}

static void show_clients(struct admin_result *r)
{
    struct conn_ctx x = {r, loop_now(r), now_wall_usec() - loop_now(r)};
    each_client(client_row, &x);
}

static const char *server_state_name(const struct server *sv, int64_t now)
{
    switch (sv->state) {
    case SV_ACTIVE:
    case SV_SETTING:
        return "active";
    case SV_IDLE:
        return idle_needs_check(sv, now) ? "used" : "idle";
    case SV_TESTING:
    case SV_RESETTING:
        return "tested";
    case SV_CANCEL_WAIT:
        return "being_canceled";
    default:
        return "new";
    }
}

static void server_row(const struct server *sv, const struct conn_ctx *x)
{
    const struct pool *p = sv->pool;
    char addr[128], laddr[64], ptr[32], link[32], ctime[64], rtime[64];
    char f[8][NUM_LEN];
    int port = 0, lport = 0;
    if (p->addr_ok) {
        fmt_sockaddr(&p->addr, addr, sizeof(addr), &port);
        if (p->addr.ss_family == AF_UNIX && p->db->cfg)
            port = p->db->cfg->port;
    } else {
        snprintf(addr, sizeof(addr), "%s", p->db->cfg ? p->db->cfg->host : "");
        port = p->db->cfg ? p->db->cfg->port : 0;
    }
    fmt_local(sv->s.fd, laddr, sizeof(laddr), &lport);
    snprintf(ptr, sizeof(ptr), "%p", (const void *)sv);
    if (sv->client)
        snprintf(link, sizeof(link), "%p", (void *)sv->client);
    else
        link[0] = '\0';
    fmt_time(ctime, sizeof(ctime), sv->connect_time, x->wall_offset);
    fmt_time(rtime, sizeof(rtime), sv->request_time ? sv->request_time : sv->connect_time,
             x->wall_offset);
    const char *app = sv->client ? sv->client->params.v[TP_APPLICATION_NAME] : NULL;
    char tls[128];
    tls_describe(&sv->s, tls, sizeof(tls));
    const char *v[] = {"S",
                       p->user->name,
                       p->db->name,
                       "none",
                       server_state_name(sv, x->now),
                       addr,
                       num4(f[0], port),
                       laddr,
                       num4(f[1], lport),
                       ctime,
                       rtime,
                       "0",
                       "0",
                       sv->close_needed ? "1" : "0",
                       ptr,
                       link,
                       num4(f[2], sv->backend_pid),
                       tls,
                       app ? app : "",
                       num4(f[4], prepared_server_count(sv)),
                       unum(f[3], sv->id)};
    admin_result_row(x->r, v);
}

static bool server_row_each(struct server *sv, void *x)
{
    server_row(sv, x);
    return false;
}

static void show_servers(struct admin_result *r)
{
    struct conn_ctx x = {r, loop_now(r), now_wall_usec() - loop_now(r)};
    struct list *it, *tmp;
    list_for_each_safe(it, tmp, &g_pooler.pools)
    {
        struct pool *p = list_entry(it, struct pool, node);
        pool_find_server(p, server_row_each, &x);
    }
}

/* ---- SHOW USERS ---------------------------------------------------------- */

struct user_set {
    const char **names;
    int *clients;
    int n, cap;
};

static void user_set_add(struct user_set *u, const char *name)
{
    if (u->n == u->cap) {
        u->cap = u->cap ? u->cap * 2 : 64;
        u->names = realloc(u->names, (size_t)u->cap * sizeof(*u->names));
        if (!u->names)
            abort();
    }
    u->names[u->n++] = name;
}

static int str_ptr_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void user_count_client(struct client *c, void *arg)
{
    struct user_set *u = arg;
    if (!c->user || c->is_admin)
        return;
    const char **hit = bsearch(&c->user, u->names, (size_t)u->n, sizeof(*u->names), str_ptr_cmp);
    if (hit)
        u->clients[hit - u->names]++;
}

static void user_collect_client(struct client *c, void *arg)
{
    if (c->user && !c->is_admin)
        user_set_add(arg, c->user);
}

static void show_users(struct admin_result *r)
{
    const struct config *cfg = g_pooler.cfg;
    struct user_set u = {0};
    struct list *it, *tmp;
    list_for_each_safe(it, tmp, &g_pooler.users)
    {
        user_set_add(&u, list_entry(it, struct pool_user, node)->name);
    }
    for (int i = 0; i < cfg->n_users; i++)
        user_set_add(&u, cfg->users[i].name);
    each_client(user_collect_client, &u);
    if (u.n)
        qsort(u.names, (size_t)u.n, sizeof(*u.names), str_ptr_cmp);
    int n = 0;
    for (int i = 0; i < u.n; i++)
        if (n == 0 || strcmp(u.names[n - 1], u.names[i]) != 0)
            u.names[n++] = u.names[i];
    u.n = n;
    u.clients = calloc((size_t)n + 1, sizeof(int));
    if (!u.clients)
        abort();
    each_client(user_count_client, &u);
    char f[4][NUM_LEN];
    for (int i = 0; i < u.n; i++) {
        const char *name = u.names[i];
        const struct config_user *cu = config_find_user(cfg, name);
        int servers = 0;
        list_for_each_safe(it, tmp, &g_pooler.users)
        {
            const struct pool_user *pu = list_entry(it, struct pool_user, node);
            if (strcmp(pu->name, name) == 0)
                servers = pu->n_servers;
        }
        int maxconn = cu && cu->max_user_connections >= 0 ? cu->max_user_connections
                                                          : cfg->max_user_connections;
        const char *v[] = {name,
                           "",
                           "",
                           cu && cu->pool_mode != POOL_MODE_UNSET ? pool_mode_str(cu->pool_mode)
                                                                  : NULL,
                           num4(f[0], maxconn),
                           num4(f[1], servers),
                           "0",
                           num4(f[2], u.clients[i])};
        admin_result_row(r, v);
    }
    free(u.names);
    free(u.clients);
}

/* ---- SHOW STATS and friends ----------------------------------------------- */

/* The stats columns in STATS order, from totals t and averages a. */
static void stats_values(const struct stat_totals *t, const struct stat_totals *a, bool totals,
                         char f[11][NUM_LEN])
{
    const struct stat_totals *s = totals ? t : a;
    unum(f[0], s->v[ST_ASSIGN]);
    unum(f[1], s->v[ST_XACT]);
    unum(f[2], s->v[ST_QUERY]);
    unum(f[3], s->v[ST_RECV]);
    unum(f[4], s->v[ST_SENT]);
    unum(f[5], s->v[ST_XACT_TIME]);
    unum(f[6], s->v[ST_QUERY_TIME]);
    unum(f[7], s->v[ST_WAIT_TIME]);
    /* Prepared statements are not tracked (max_prepared_statements). */
    unum(f[8], 0);
    unum(f[9], 0);
    unum(f[10], 0);
}

/* Calls fn with the totals of every row of SHOW STATS (by name, the
 * console included). */
static void stats_walk(void (*fn)(const struct db_row *d, const struct stat_totals *t, void *arg),
                       void *arg)
{
    struct pool_index ix;
    pool_index_build(&ix);
    struct db_row *rows;
    int n = db_rows_build(&rows);
    for (int i = 0; i < n; i++) {
        struct stat_totals t;
        if (!rows[i].cd || rows[i].db)
            db_totals(rows[i].db, &ix, &t);
        else
            memset(&t, 0, sizeof(t)); /* configured but never used: nothing happened yet */
        fn(&rows[i], &t, arg);
    }
    free(rows);
    pool_index_free(&ix);
}

struct stats_row_ctx {
    struct admin_result *r;
    int which; /* 0 = STATS (totals and averages), 1 = totals only, 2 = averages */
};

static void stats_row(const struct db_row *d, const struct stat_totals *t, void *arg)
{
    const struct stats_row_ctx *x = arg;
    struct stat_totals a;
    if (!d->cd || d->db)
        db_averages(d->db, &a);
    else
        memset(&a, 0, sizeof(a));
    char tv[11][NUM_LEN], av[11][NUM_LEN];
    stats_values(t, &a, true, tv);
    stats_values(t, &a, false, av);
    const char *v[23];
    v[0] = d->name;
    int k = 1;
    if (x->which != 2)
        for (int j = 0; j < 11; j++)
            v[k++] = tv[j];
    if (x->which != 1)
        for (int j = 0; j < 11; j++)
            v[k++] = av[j];
    admin_result_row(x->r, v);
}

static void stats_rows(struct admin_result *r, int which)
{
    struct stats_row_ctx x = {r, which};
    stats_walk(stats_row, &x);
}

struct stats_each_ctx {
    void (*fn)(const struct admin_db_view *v, void *arg);
    void *arg;
};

static void stats_each_row(const struct db_row *d, const struct stat_totals *t, void *arg)
{
    const struct stats_each_ctx *x = arg;
    struct admin_db_view v = {
        .name = d->name,
        .assign_count = t->v[ST_ASSIGN],
        .xact_count = t->v[ST_XACT],
        .query_count = t->v[ST_QUERY],
        .bytes_in = t->v[ST_RECV],
        .bytes_out = t->v[ST_SENT],
        .xact_time = t->v[ST_XACT_TIME],
        .query_time = t->v[ST_QUERY_TIME],
        .wait_time = t->v[ST_WAIT_TIME],
    };
    x->fn(&v, x->arg);
}

void admin_stats_each(void (*fn)(const struct admin_db_view *v, void *arg), void *arg)
{
    struct stats_each_ctx x = {fn, arg};
    stats_walk(stats_each_row, &x);
}

static void show_stats(struct admin_result *r)
{
    stats_rows(r, 0);
}

static void show_stats_totals(struct admin_result *r)
{
    stats_rows(r, 1);
}

static void show_stats_averages(struct admin_result *r)
{
    stats_rows(r, 2);
}

static void show_totals(struct admin_result *r)
{
    static const char *const names[11] = {"server_assignment_count",
                                          "xact_count",
                                          "query_count",
                                          "client_bytes",
                                          "server_bytes",
                                          "xact_time",
                                          "query_time",
                                          "wait_time",
                                          "client_parse_count",
                                          "server_parse_count",
                                          "bind_count"};
    struct pool_index ix;
    pool_index_build(&ix);
    struct stat_totals sum, dsum;
    memset(&sum, 0, sizeof(sum));
    memset(&dsum, 0, sizeof(dsum));
    struct list *it, *tmp;
    list_for_each_safe(it, tmp, &g_pooler.databases)
    {
        struct stat_totals t;
        db_totals(list_entry(it, struct database, node), &ix, &t);
        for (int i = 0; i < ST_COUNT; i++)
            sum.v[i] += t.v[i];
    }
    struct stat_totals t;
    db_totals(NULL, &ix, &t);
    for (int i = 0; i < ST_COUNT; i++)
        sum.v[i] += t.v[i];
    for (int s = 0; s < stat_nslots; s++)
        for (int i = 0; i < ST_COUNT; i++)
            dsum.v[i] += stat_slots[s].delta.v[i];
    struct stat_totals avg;
    stat_averages(&dsum, &avg);
    char tv[11][NUM_LEN], av[11][NUM_LEN];
    stats_values(&sum, &avg, true, tv);
    stats_values(&sum, &avg, false, av);
    char name[64];
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < 11; i++) {
            snprintf(name, sizeof(name), "%s_%s", pass ? "avg" : "total", names[i]);
            const char *v[] = {name, pass ? av[i] : tv[i]};
            admin_result_row(r, v);
        }
    }
    pool_index_free(&ix);
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
    struct db_row *rows;
    int ndb = db_rows_build(&rows);
    free(rows);
    int login = 0;
    each_client(count_login, &login);
    char f[6][NUM_LEN];
    const char *v[][2] = {
        {"databases", num4(f[0], ndb)},
        {"users", num4(f[1], count_list(&g_pooler.users))},
        {"pools", num4(f[2], count_list(&g_pooler.pools) + 1)},
        {"free_clients", "0"},
        {"used_clients", num4(f[3], count_clients())},
        {"login_clients", num4(f[4], login)},
        {"free_servers", "0"},
        {"used_servers", num4(f[5], count_servers())},
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
    char f[4][NUM_LEN];
    const char *v[] = {name, num4(f[0], size), num4(f[1], used), num4(f[2], nfree),
                       num4(f[3], size * (used + nfree))};
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
