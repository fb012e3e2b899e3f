/* admin_stats.c - the console's statistics: per-database totals summed
 * from the pools' counters, averages over the last stats_period, and the
 * commands that show them (SHOW STATS, STATS_TOTALS, STATS_AVERAGES,
 * TOTALS), with admin_stats_each() for metrics.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "admin_int.h"
#include "conn.h"
#include "pool.h"

struct admin_counters admin_counters;

/* ---- statistics ---------------------------------------------------------- */

enum stat_field {
    ST_ASSIGN = 0,    /* servers assigned to clients */
    ST_XACT,          /* transactions */
    ST_QUERY,         /* queries */
    ST_RECV,          /* bytes received from clients */
    ST_SENT,          /* bytes sent to clients */
    ST_XACT_TIME,     /* usec in transactions */
    ST_QUERY_TIME,    /* usec in queries */
    ST_WAIT_TIME,     /* usec clients waited for a server */
    ST_REPLICA_READS, /* requests routed to replicas (read_write_split) */
    ST_RETRIES,       /* requests sent again after a replica's server failed */
    ST_KEPT,          /* servers rolled back and kept after their client left */
    ST_CLIENT_PARSES, /* prepared statements created by clients */
    ST_SERVER_PARSES, /* prepared statements sluice prepared on servers */
    ST_BINDS,         /* executions of clients' prepared statements */
    ST_COUNT,
};

struct stat_totals {
    uint64_t v[ST_COUNT];
};

/* Totals of database db (NULL: the console) from its pools' counters. */
static void db_totals(const struct database *db, const struct admin_pool_index *ix,
                      struct stat_totals *t)
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
        t->v[ST_ASSIGN] += p->assign_count;
        t->v[ST_XACT] += p->xact_count;
        t->v[ST_QUERY] += p->query_count;
        t->v[ST_RECV] += p->bytes_in;
        t->v[ST_SENT] += p->bytes_out;
        t->v[ST_XACT_TIME] += p->xact_time;
        t->v[ST_QUERY_TIME] += p->query_time;
        t->v[ST_WAIT_TIME] += p->wait_time;
        t->v[ST_REPLICA_READS] += p->replica_reads;
        t->v[ST_RETRIES] += p->retries;
        t->v[ST_KEPT] += p->servers_kept;
        t->v[ST_CLIENT_PARSES] += p->ps_client_parses;
        t->v[ST_SERVER_PARSES] += p->ps_server_parses;
        t->v[ST_BINDS] += p->ps_binds;
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

static void stat_take(const struct database *db, const struct admin_pool_index *ix)
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
    struct admin_pool_index ix;
    admin_pool_index_build(&ix);
    struct list *it, *tmp;
    list_for_each_safe(it, tmp, &g_pooler.databases)
    {
        stat_take(list_entry(it, struct database, node), &ix);
    }
    stat_take(NULL, &ix);
    admin_pool_index_free(&ix);
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
        avg->v[ST_REPLICA_READS] = (uint64_t)((double)d->v[ST_REPLICA_READS] / secs);
        avg->v[ST_RETRIES] = (uint64_t)((double)d->v[ST_RETRIES] / secs);
        avg->v[ST_KEPT] = (uint64_t)((double)d->v[ST_KEPT] / secs);
        avg->v[ST_CLIENT_PARSES] = (uint64_t)((double)d->v[ST_CLIENT_PARSES] / secs);
        avg->v[ST_SERVER_PARSES] = (uint64_t)((double)d->v[ST_SERVER_PARSES] / secs);
        avg->v[ST_BINDS] = (uint64_t)((double)d->v[ST_BINDS] / secs);
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

/* ---- SHOW STATS and friends ----------------------------------------------- */

/* Columns in each half of SHOW STATS: PgBouncer's 11, then sluice's. */
#define STATS_HALF 11
#define STATS_OWN  3

/* The stats columns in STATS order, from totals t and averages a:
 * PgBouncer's first, sluice's after them. */
static void stats_values(const struct stat_totals *t, const struct stat_totals *a, bool totals,
                         char f[STATS_HALF + STATS_OWN][ADMIN_NUM_LEN])
{
    const struct stat_totals *s = totals ? t : a;
    admin_unum(f[0], s->v[ST_ASSIGN]);
    admin_unum(f[1], s->v[ST_XACT]);
    admin_unum(f[2], s->v[ST_QUERY]);
    admin_unum(f[3], s->v[ST_RECV]);
    admin_unum(f[4], s->v[ST_SENT]);
    admin_unum(f[5], s->v[ST_XACT_TIME]);
    admin_unum(f[6], s->v[ST_QUERY_TIME]);
    admin_unum(f[7], s->v[ST_WAIT_TIME]);
    admin_unum(f[8], s->v[ST_CLIENT_PARSES]);
    admin_unum(f[9], s->v[ST_SERVER_PARSES]);
    admin_unum(f[10], s->v[ST_BINDS]);
    admin_unum(f[11], s->v[ST_REPLICA_READS]);
    admin_unum(f[12], s->v[ST_RETRIES]);
    admin_unum(f[13], s->v[ST_KEPT]);
}

/* Calls fn with the totals of every row of SHOW STATS (by name, the
 * console included). */
static void stats_walk(void (*fn)(const struct admin_db_row *d, const struct stat_totals *t,
                                  void *arg),
                       void *arg)
{
    struct admin_pool_index ix;
    admin_pool_index_build(&ix);
    struct admin_db_row *rows;
    int n = admin_db_rows_build(&rows);
    for (int i = 0; i < n; i++) {
        struct stat_totals t;
        if (!rows[i].cd || rows[i].db)
            db_totals(rows[i].db, &ix, &t);
        else
            memset(&t, 0, sizeof(t)); /* configured but never used: nothing happened yet */
        fn(&rows[i], &t, arg);
    }
    free(rows);
    admin_pool_index_free(&ix);
}

struct stats_row_ctx {
    struct admin_result *r;
    int which; /* 0 = STATS (totals and averages), 1 = totals only, 2 = averages */
};

static void stats_row(const struct admin_db_row *d, const struct stat_totals *t, void *arg)
{
    const struct stats_row_ctx *x = arg;
    struct stat_totals a;
    if (!d->cd || d->db)
        db_averages(d->db, &a);
    else
        memset(&a, 0, sizeof(a));
    char tv[STATS_HALF + STATS_OWN][ADMIN_NUM_LEN], av[STATS_HALF + STATS_OWN][ADMIN_NUM_LEN];
    stats_values(t, &a, true, tv);
    stats_values(t, &a, false, av);
    const char *v[1 + 2 * (STATS_HALF + STATS_OWN)];
    v[0] = d->name;
    int k = 1;
    /* PgBouncer's columns in its order (totals, averages), then sluice's
     * (totals, averages), so that scripts reading by position still work. */
    if (x->which != 2)
        for (int j = 0; j < STATS_HALF; j++)
            v[k++] = tv[j];
    if (x->which != 1)
        for (int j = 0; j < STATS_HALF; j++)
            v[k++] = av[j];
    if (x->which != 2)
        for (int j = STATS_HALF; j < STATS_HALF + STATS_OWN; j++)
            v[k++] = tv[j];
    if (x->which != 1)
        for (int j = STATS_HALF; j < STATS_HALF + STATS_OWN; j++)
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

static void stats_each_row(const struct admin_db_row *d, const struct stat_totals *t, void *arg)
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
        .replica_reads = t->v[ST_REPLICA_READS],
        .retries = t->v[ST_RETRIES],
        .servers_kept = t->v[ST_KEPT],
        .client_parses = t->v[ST_CLIENT_PARSES],
        .server_parses = t->v[ST_SERVER_PARSES],
        .binds = t->v[ST_BINDS],
    };
    x->fn(&v, x->arg);
}

void admin_stats_each(void (*fn)(const struct admin_db_view *v, void *arg), void *arg)
{
    struct stats_each_ctx x = {fn, arg};
    stats_walk(stats_each_row, &x);
}

void admin_show_stats(struct admin_result *r)
{
    stats_rows(r, 0);
}

void admin_show_stats_totals(struct admin_result *r)
{
    stats_rows(r, 1);
}

void admin_show_stats_averages(struct admin_result *r)
{
    stats_rows(r, 2);
}

void admin_show_totals(struct admin_result *r)
{
    static const char *const names[STATS_HALF + STATS_OWN] = {"server_assignment_count",
                                                              "xact_count",
                                                              "query_count",
                                                              "client_bytes",
                                                              "server_bytes",
                                                              "xact_time",
                                                              "query_time",
                                                              "wait_time",
                                                              "client_parse_count",
                                                              "server_parse_count",
                                                              "bind_count",
                                                              "replica_read_count",
                                                              "retry_count",
                                                              "server_kept_count"};
    struct admin_pool_index ix;
    admin_pool_index_build(&ix);
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
    char tv[STATS_HALF + STATS_OWN][ADMIN_NUM_LEN], av[STATS_HALF + STATS_OWN][ADMIN_NUM_LEN];
    stats_values(&sum, &avg, true, tv);
    stats_values(&sum, &avg, false, av);
    char name[64];
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < STATS_HALF + STATS_OWN; i++) {
            snprintf(name, sizeof(name), "%s_%s", pass ? "avg" : "total", names[i]);
            const char *v[] = {name, pass ? av[i] : tv[i]};
            admin_result_row(r, v);
        }
    }
    admin_pool_index_free(&ix);
}
