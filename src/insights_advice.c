/* insights_advice.c - index advice the planner has verified
 * (insights_advice.h).
 *
 * A run is a chain of server_query() callbacks on worker 0's loop, one
 * group of fingerprints (those that ran through one pool: one database and
 * login user) at a time, on one held server of the group's primary:
 *
 *   connect -> SETs -> is hypopg there -> each table's columns and leading
 *   index columns -> EXPLAIN each sample -> for each candidate: hypothetical
 *   index, EXPLAIN the samples on its table, hypopg_reset -> close
 *
 * and the next group starts from a zero-delay timer, never from inside a
 * server's callback. The advice of a run replaces the last run's whole,
 * under g_lock, which readers (the console, the page) take briefly. */
#include "insights_advice.h"

#include <ev.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "advice_cand.h"
#include "explain_cost.h"
#include "insights.h"
#include "log.h"
#include "pool.h"
#include "server.h"
#include "server_query.h"
#include "worker.h"

#define TOP        10 /* fingerprints examined per run */
#define LOOK_MAX   40 /* samples parsed per run, at most, to find them */
#define MAX_TABS   32 /* tables per group */
#define MAX_CANDS  64 /* candidate indexes per group */
#define MAX_ITEMS  64 /* advice kept */
#define SNAPS      9  /* totals kept to weigh the window by */
#define TIMEOUT_MS 5000
#define QNAME_MAX  (4 * ADVICE_NAME_MAX + 8)

#define SETUP_SQL                                                                                  \
    "SET application_name = 'sluice index advisor'; SET statement_timeout = 5000; "                \
    "SET default_transaction_read_only = on"
#define HYPOPG_SQL                                                                                 \
    "SELECT n.nspname FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = "   \
    "e.extnamespace WHERE e.extname = 'hypopg'"
/* A table's columns, and whether each leads an index already. */
#define TABLE_SQL                                                                                  \
    "SELECT n.nspname, c.relname, c.relkind, a.attname, EXISTS (SELECT 1 FROM "                    \
    "pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indkey[0] = a.attnum) FROM "             \
    "pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace JOIN "         \
    "pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "     \
    "WHERE c.oid = pg_catalog.to_regclass($1)"

struct tab {
    char schema[ADVICE_NAME_MAX], name[ADVICE_NAME_MAX]; /* as written */
    bool found, indexable;
    char nsp[ADVICE_NAME_MAX], rel[ADVICE_NAME_MAX]; /* as the catalog has them */
    int n_cols, cap;
    char (*cols)[ADVICE_NAME_MAX];
    bool *leads;
};

/* A fingerprint examined. */
struct fq {
    uint64_t fp;
    uint64_t weight;
    struct insights_sample *sm;
    struct advice_query q;
    int tmap[ADVICE_MAX_TABLES]; /* q.tables[i] is tabs[tmap[i]] */
    double before;               /* -1: not priced */
};

struct cand {
    int tab;
    struct advice_index ix;
    uint32_t from; /* bit i: fq[g0 + i] proposed it */
    bool made;
    int64_t size;
    double after[TOP]; /* per fingerprint of the group; -1: not priced */
};

struct item {
    char database[128], table[QNAME_MAX], columns[QNAME_MAX], statement[3 * QNAME_MAX];
    char note[200];
    bool verified;
    double before, after, gain;
    int64_t size;
    int n_fps;
    uint64_t fps[TOP];
};

enum phase {
    PH_IDLE = 0, /* no run */
    PH_CONNECT,  /* the group's server logs in */
    PH_WORK,     /* queries in flight */
    PH_NEXT,     /* between groups (the timer goes on) */
};

struct run {
    enum phase phase;
    struct server *sv;
    struct pool *pool;
    bool in_connect, connect_failed;
    struct fq fq[TOP];
    int nfq, g0, g1; /* this group: fq[g0, g1) */
    struct tab tabs[MAX_TABS];
    int ntabs;
    struct cand cands[MAX_CANDS];
    int ncands;
    int ti, qi, ci;
    bool has_hypopg;
    char hypopg[2 * ADVICE_NAME_MAX + 3];
    double cost; /* the last EXPLAIN's; -1: none */
    bool failed; /* the last query failed */
    struct item items[MAX_ITEMS];
    int nitems;
};

struct snap {
    int64_t at;
    size_t n;
    uint64_t (*v)[2]; /* fingerprint, total_us; by fingerprint */
};

static struct run g_run;
static ev_timer g_tick, g_next;
static bool g_running;
static int64_t g_next_run;
static struct snap g_snaps[SNAPS];
static int g_nsnaps;

/* What readers see: the last run's advice and the figures. */
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static struct item g_items[MAX_ITEMS];
static int g_nitems;
static struct insights_advice_stats g_stats;

static struct worker *advice_worker(void)
{
    return &g_pooler.workers[0];
}

static void note_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note_error(const char *fmt, ...)
{
    char msg[sizeof(g_stats.last_error)];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&g_lock);
    g_stats.errors++;
    memcpy(g_stats.last_error, msg, sizeof(msg));
    pthread_mutex_unlock(&g_lock);
    log_debug("%s", msg);
}

static void step(void);
static void group_end(const char *why);

/* ---- which fingerprints: the heaviest within the window -------------------------- */

static int by_fp(const void *a, const void *b)
{
    uint64_t x = (*(const uint64_t(*)[2])a)[0], y = (*(const uint64_t(*)[2])b)[0];
    return x < y ? -1 : x > y;
}

/* Total time of fp when snapshot s was taken, or -1 if it had none. */
static int64_t snap_total(const struct snap *s, uint64_t fp)
{
    size_t lo = 0, hi = s->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (s->v[mid][0] == fp)
            return (int64_t)s->v[mid][1];
        if (s->v[mid][0] < fp)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

/* The time fp spent within the window: its total now minus its total at
 * base (the whole total without one, or if it was not there); 0 when it
 * was not seen within the window. */
static uint64_t weight(const struct insights_row *row, const struct snap *base, int64_t since)
{
    if (row->st.last_seen < since)
        return 0;
    int64_t was = base ? snap_total(base, row->st.fp) : -1;
    if (was >= 0 && (uint64_t)was <= row->st.total_us)
        return row->st.total_us - (uint64_t)was;
    return row->st.total_us;
}

/* Keeps the totals of now, at most every window / (SNAPS - 1), and drops
 * those that no run needs any more. */
static void snapshot(const struct insights_row *rows, size_t n, int64_t now, int64_t window)
{
    while (g_nsnaps > 1 && g_snaps[1].at <= now - window) {
        free(g_snaps[0].v);
        memmove(&g_snaps[0], &g_snaps[1], (size_t)--g_nsnaps * sizeof(g_snaps[0]));
    }
    if (g_nsnaps && g_snaps[g_nsnaps - 1].at > now - window / (SNAPS - 1))
        return;
    if (g_nsnaps == SNAPS) {
        free(g_snaps[0].v);
        memmove(&g_snaps[0], &g_snaps[1], (size_t)--g_nsnaps * sizeof(g_snaps[0]));
    }
    struct snap *s = &g_snaps[g_nsnaps];
    s->v = malloc((n ? n : 1) * sizeof(*s->v));
    if (!s->v)
        return;
    for (size_t i = 0; i < n; i++) {
        s->v[i][0] = rows[i].st.fp;
        s->v[i][1] = rows[i].st.total_us;
    }
    qsort(s->v, n, sizeof(*s->v), by_fp);
    s->n = n;
    s->at = now;
    g_nsnaps++;
}

static int by_weight(const void *a, const void *b)
{
    uint64_t x = ((const struct fq *)a)->weight, y = ((const struct fq *)b)->weight;
    return x > y ? -1 : x < y;
}

/* Fills g_run.fq with the heaviest read fingerprints that have a sample,
 * those of one pool next to each other. */
static void pick(void)
{
    struct run *r = &g_run;
    const struct config *cfg = g_pooler.cfg;
    struct insights_row *rows;
    size_t n = insights_collect(&rows);
    int64_t now = now_wall_usec(), since = now - cfg->advice_window;
    /* The totals of the newest snapshot from before the window began: the
     * time since is the window's, give or take window / (SNAPS - 1). */
    const struct snap *base = NULL;
    for (int i = 0; i < g_nsnaps; i++)
        if (g_snaps[i].at <= since)
            base = &g_snaps[i];
    /* The candidates by weight, then parsed until TOP are reads. */
    struct fq *all = calloc(n ? n : 1, sizeof(*all));
    size_t na = 0;
    for (size_t i = 0; all && i < n; i++) {
        uint64_t w = rows[i].sample && rows[i].sample->origin ? weight(&rows[i], base, since) : 0;
        if (w) {
            all[na].fp = rows[i].st.fp;
            all[na].weight = w;
            all[na].sm = rows[i].sample;
            rows[i].sample = NULL; /* all[na] owns it */
            na++;
        }
    }
    if (all)
        qsort(all, na, sizeof(*all), by_weight);
    r->nfq = 0;
    for (size_t i = 0; i < na; i++) {
        struct fq *f = &all[i];
        bool take = r->nfq < TOP && i < LOOK_MAX &&
                    advice_cand_extract(f->sm->sql, &f->q) == ADVICE_CAND_OK && f->q.n_refs > 0;
        if (take)
            r->fq[r->nfq++] = *f;
        else
            free(f->sm);
    }
    free(all);
    snapshot(rows, n, now, cfg->advice_window);
    insights_rows_free(rows, n);
    /* One pool's fingerprints together, the heaviest pool first. */
    for (int i = 0; i < r->nfq; i++) {
        int k = i + 1;
        for (int j = i + 1; j < r->nfq; j++) {
            if (r->fq[j].sm->origin != r->fq[i].sm->origin)
                continue;
            struct fq t = r->fq[j];
            memmove(&r->fq[k + 1], &r->fq[k], (size_t)(j - k) * sizeof(t));
            r->fq[k++] = t;
        }
        i = k - 1;
    }
}

/* ---- the group's tables ---------------------------------------------------------- */

static void tabs_free(struct run *r)
{
    for (int i = 0; i < r->ntabs; i++) {
        free(r->tabs[i].cols);
        free(r->tabs[i].leads);
    }
    memset(r->tabs, 0, sizeof(r->tabs));
    r->ntabs = 0;
}

/* Each fingerprint's tables, once per group. */
static void tabs_make(struct run *r)
{
    for (int i = r->g0; i < r->g1; i++) {
        struct fq *f = &r->fq[i];
        for (int t = 0; t < f->q.n_tables; t++) {
            const struct advice_table *at = &f->q.tables[t];
            int k = 0;
            while (k < r->ntabs &&
                   (strcmp(r->tabs[k].schema, at->schema) || strcmp(r->tabs[k].name, at->name)))
                k++;
            if (k == r->ntabs && r->ntabs < MAX_TABS) {
                memcpy(r->tabs[k].schema, at->schema, sizeof(at->schema));
                memcpy(r->tabs[k].name, at->name, sizeof(at->name));
                r->ntabs++;
            }
            f->tmap[t] = k < r->ntabs ? k : -1;
        }
    }
}

static void copy_val(char *dst, size_t dlen, const char *v, uint32_t len)
{
    size_t n = v && len < dlen ? len : 0;
    if (v && n)
        memcpy(dst, v, n);
    dst[n] = '\0';
}

/* A row of TABLE_SQL: the table's names, kind, and one column. */
static void table_row(struct run *r, const struct server_query_row *row)
{
    struct tab *t = &r->tabs[r->ti];
    if (row->n < 5 || !row->val[0] || !row->val[1] || !row->val[2] || !row->val[3] ||
        !row->val[4] || row->len[3] >= ADVICE_NAME_MAX)
        return;
    t->found = true;
    copy_val(t->nsp, sizeof(t->nsp), row->val[0], row->len[0]);
    copy_val(t->rel, sizeof(t->rel), row->val[1], row->len[1]);
    /* Tables and materialized views take indexes hypopg can price. */
    t->indexable = row->len[2] == 1 && (row->val[2][0] == 'r' || row->val[2][0] == 'm');
    if (t->n_cols == t->cap) {
        int cap = t->cap ? t->cap * 2 : 16;
        char(*cols)[ADVICE_NAME_MAX] = realloc(t->cols, (size_t)cap * sizeof(*cols));
        if (cols)
            t->cols = cols;
        bool *leads = cols ? realloc(t->leads, (size_t)cap * sizeof(*leads)) : NULL;
        if (leads)
            t->leads = leads;
        if (!cols || !leads)
            return;
        t->cap = cap;
    }
    copy_val(t->cols[t->n_cols], ADVICE_NAME_MAX, row->val[3], row->len[3]);
    t->leads[t->n_cols++] = row->len[4] == 1 && row->val[4][0] == 't';
}

struct col_ctx {
    const struct run *r;
    const struct fq *f;
};

static enum advice_col col_of(void *arg, int table, const char *column)
{
    const struct col_ctx *cx = arg;
    int k = cx->f->tmap[table];
    const struct tab *t = k >= 0 ? &cx->r->tabs[k] : NULL;
    if (!t || !t->found || !t->indexable)
        return ADVICE_COL_NONE;
    for (int i = 0; i < t->n_cols; i++)
        if (!strcmp(t->cols[i], column))
            return t->leads[i] ? ADVICE_COL_LEADS : ADVICE_COL_PLAIN;
    return ADVICE_COL_NONE;
}

/* The group's candidates, each once. */
static void cands_make(struct run *r)
{
    r->ncands = 0;
    for (int i = r->g0; i < r->g1; i++) {
        struct fq *f = &r->fq[i];
        struct advice_index ix[ADVICE_MAX_INDEXES];
        struct col_ctx cx = {r, f};
        int n = advice_cand_indexes(&f->q, col_of, &cx, ix, ADVICE_MAX_INDEXES);
        for (int k = 0; k < n; k++) {
            int tab = f->tmap[ix[k].table], c = 0;
            for (; c < r->ncands; c++) {
                const struct cand *o = &r->cands[c];
                if (o->tab == tab && o->ix.ncols == ix[k].ncols &&
                    !strcmp(o->ix.cols[0], ix[k].cols[0]) &&
                    (ix[k].ncols == 1 || !strcmp(o->ix.cols[1], ix[k].cols[1])))
                    break;
            }
            if (c == r->ncands) {
                if (r->ncands == MAX_CANDS)
                    continue;
                struct cand *nc = &r->cands[r->ncands++];
                memset(nc, 0, sizeof(*nc));
                nc->tab = tab;
                nc->ix = ix[k];
                nc->size = -1;
                for (int q = 0; q < TOP; q++)
                    nc->after[q] = -1;
            }
            r->cands[c].from |= 1u << (i - r->g0);
        }
    }
}

/* Whether fingerprint f reads table tab. */
static bool reads_tab(const struct fq *f, int tab)
{
    for (int t = 0; t < f->q.n_tables; t++)
        if (f->tmap[t] == tab)
            return true;
    return false;
}

/* ---- the advice ------------------------------------------------------------------ */

static double gain_of(double before, double after)
{
    return before > 0 && after >= 0 ? 1.0 - after / before : 0;
}

/* Whether c prices fingerprint i better than b: cheaper, but a narrower
 * index within 1% of a wider one wins (it costs less to keep). */
static bool better(const struct cand *c, const struct cand *b, int i)
{
    double a = c->after[i], ba = b->after[i];
    if (c->ix.ncols < b->ix.ncols)
        return a <= ba * 1.01;
    if (c->ix.ncols > b->ix.ncols)
        return a < ba * 0.99;
    return a < ba;
}

static void item_add(struct run *r, const struct cand *c, uint32_t fps, bool verified)
{
    if (r->nitems == MAX_ITEMS)
        return;
    const struct tab *t = &r->tabs[c->tab];
    struct item *it = &r->items[r->nitems];
    memset(it, 0, sizeof(*it));
    char s[2 * ADVICE_NAME_MAX + 3], n[2 * ADVICE_NAME_MAX + 3], a[2 * ADVICE_NAME_MAX + 3],
        b[2 * ADVICE_NAME_MAX + 3] = "";
    if (!advice_cand_quote(t->nsp, s, sizeof(s)) || !advice_cand_quote(t->rel, n, sizeof(n)) ||
        !advice_cand_quote(c->ix.cols[0], a, sizeof(a)) ||
        (c->ix.ncols > 1 && !advice_cand_quote(c->ix.cols[1], b, sizeof(b))) ||
        !advice_cand_index_sql(t->nsp, t->rel, &c->ix, true, it->statement, sizeof(it->statement)))
        return;
    snprintf(it->database, sizeof(it->database), "%s", r->pool->db->name);
    snprintf(it->table, sizeof(it->table), "%s.%s", s, n);
    snprintf(it->columns, sizeof(it->columns), "%s%s%s", a, c->ix.ncols > 1 ? ", " : "", b);
    it->verified = verified;
    it->size = verified ? c->size : -1;
    it->after = verified ? 0 : -1;
    for (int i = 0; i < r->g1 - r->g0; i++) {
        if (!(fps & (1u << i)))
            continue;
        it->fps[it->n_fps++] = r->fq[r->g0 + i].fp;
        it->before += r->fq[r->g0 + i].before > 0 ? r->fq[r->g0 + i].before : 0;
        if (verified)
            it->after += c->after[i];
    }
    if (!it->n_fps)
        return;
    it->gain = verified ? gain_of(it->before, it->after) : 0;
    if (!verified)
        snprintf(it->note, sizeof(it->note),
                 "not verified: the hypopg extension is not installed in database %s "
                 "(CREATE EXTENSION hypopg lets the planner price it)",
                 r->pool->db->name);
    r->nitems++;
}

/* The group's advice: each fingerprint's best candidate, if it lowers its
 * cost by advice_min_gain or more; then each index so chosen, with every
 * fingerprint it helps that much. Without hypopg: the single-column
 * candidates, unverified. */
static void group_advise(struct run *r)
{
    double min = g_pooler.cfg->advice_min_gain / 100.0;
    int nq = r->g1 - r->g0;
    if (!r->has_hypopg) {
        for (int c = 0; c < r->ncands; c++)
            if (r->cands[c].ix.ncols == 1)
                item_add(r, &r->cands[c], r->cands[c].from, false);
        return;
    }
    bool chosen[MAX_CANDS] = {false};
    for (int i = 0; i < nq; i++) {
        int best = -1;
        for (int c = 0; c < r->ncands; c++)
            if (r->cands[c].made && r->cands[c].after[i] >= 0 &&
                (best < 0 || better(&r->cands[c], &r->cands[best], i)))
                best = c;
        if (best >= 0 && gain_of(r->fq[r->g0 + i].before, r->cands[best].after[i]) >= min)
            chosen[best] = true;
    }
    for (int c = 0; c < r->ncands; c++) {
        if (!chosen[c])
            continue;
        uint32_t fps = 0;
        for (int i = 0; i < nq; i++)
            if (gain_of(r->fq[r->g0 + i].before, r->cands[c].after[i]) >= min)
                fps |= 1u << i;
        item_add(r, &r->cands[c], fps, true);
    }
}

/* ---- the queries ---------------------------------------------------------------- */

enum stage {
    ST_SETUP = 0, /* application_name, statement_timeout, read only */
    ST_HYPOPG,    /* is hypopg installed, in which schema */
    ST_TABLES,    /* each table's columns (ti) */
    ST_BEFORE,    /* each sample's cost (qi) */
    ST_CREATE,    /* candidate ci as a hypothetical index */
    ST_AFTER,     /* each sample on its table, with it (qi) */
    ST_RESET,     /* hypopg_reset() */
    ST_END,       /* the group's advice */
};
static enum stage g_stage;

static void q_row(struct server *sv, void *arg, const struct server_query_row *row)
{
    struct run *r = arg;
    if (row->n < 1 || !row->val[0])
        return;
    switch (g_stage) {
    case ST_HYPOPG:
        r->has_hypopg = true;
        char nsp[ADVICE_NAME_MAX];
        copy_val(nsp, sizeof(nsp), row->val[0], row->len[0]);
        r->has_hypopg = advice_cand_quote(nsp, r->hypopg, sizeof(r->hypopg));
        break;
    case ST_TABLES:
        table_row(r, row);
        break;
    case ST_BEFORE:
    case ST_AFTER: {
        double cost;
        enum explain_cost_status st = explain_cost_parse(row->val[0], row->len[0], &cost);
        if (st == EXPLAIN_COST_OK && cost >= 0)
            r->cost = cost;
        else
            note_error("index advisor: EXPLAIN's answer: %s", explain_cost_status_str(st));
        break;
    }
    case ST_CREATE:
        if (row->n >= 2 && row->val[1]) {
            char num[24];
            copy_val(num, sizeof(num), row->val[1], row->len[1]);
            r->cands[r->ci].size = strtoll(num, NULL, 10);
        }
        break;
    default:
        break;
    }
}

static void q_error(struct server *sv, void *arg, const char *sqlstate, const char *text)
{
    struct run *r = arg;
    r->failed = true;
    note_error("index advisor: %s (database %s)", text, r->pool->db->name);
}

static void q_done(struct server *sv, void *arg, enum server_query_status st)
{
    struct run *r = arg;
    if (st == SERVER_QUERY_GONE)
        return; /* advice_closed() ends the group */
    bool ok = st == SERVER_QUERY_OK && !r->failed;
    switch (g_stage) {
    case ST_SETUP:
        if (!ok) {
            group_end("the session's SETs failed");
            return;
        }
        g_stage = ST_HYPOPG;
        break;
    case ST_HYPOPG:
        r->has_hypopg = r->has_hypopg && ok;
        tabs_make(r);
        g_stage = ST_TABLES;
        r->ti = 0;
        break;
    case ST_TABLES:
        r->ti++;
        break;
    case ST_BEFORE:
        r->fq[r->qi++].before = ok ? r->cost : -1;
        break;
    case ST_CREATE:
        r->cands[r->ci].made = ok;
        if (ok) {
            g_stage = ST_AFTER;
            r->qi = r->g0;
        } else {
            r->ci++;
        }
        break;
    case ST_AFTER:
        r->cands[r->ci].after[r->qi - r->g0] = ok ? r->cost : -1;
        r->qi++;
        break;
    case ST_RESET:
        if (!ok) { /* the next candidate would be priced with this one */
            group_end("hypopg_reset() failed");
            return;
        }
        r->ci++;
        g_stage = ST_CREATE;
        break;
    default:
        break;
    }
    step();
}

static const struct server_query_ops q_ops = {
    .on_row = q_row, .on_error = q_error, .on_done = q_done};

static void send_query(const char *sql, int nparams, const char *const *params)
{
    struct run *r = &g_run;
    r->failed = false;
    r->cost = -1;
    if (!server_query(r->sv, sql, nparams, params, &q_ops, r))
        group_end("connection closed");
}

static void explain(const struct fq *f)
{
    static const char head[] = "EXPLAIN (FORMAT JSON) ";
    size_t n = strlen(f->sm->sql);
    char *sql = malloc(sizeof(head) + n);
    if (!sql) {
        group_end("out of memory");
        return;
    }
    memcpy(sql, head, sizeof(head) - 1);
    memcpy(sql + sizeof(head) - 1, f->sm->sql, n + 1);
    pthread_mutex_lock(&g_lock);
    g_stats.explains++;
    pthread_mutex_unlock(&g_lock);
    send_query(sql, f->sm->nparams, f->sm->params);
    free(sql);
}

/* The query of the stage, or the next stage's when this one is done. */
static void step(void)
{
    struct run *r = &g_run;
    char sql[4 * QNAME_MAX + 200], arg[3 * QNAME_MAX];
    for (;;) {
        switch (g_stage) {
        case ST_SETUP:
            send_query(SETUP_SQL, 0, NULL);
            return;
        case ST_HYPOPG:
            send_query(HYPOPG_SQL, 0, NULL);
            return;
        case ST_TABLES:
            if (r->ti < r->ntabs) {
                const struct tab *t = &r->tabs[r->ti];
                char s[2 * ADVICE_NAME_MAX + 3] = "", n[2 * ADVICE_NAME_MAX + 3];
                if ((t->schema[0] && !advice_cand_quote(t->schema, s, sizeof(s))) ||
                    !advice_cand_quote(t->name, n, sizeof(n))) {
                    r->ti++;
                    continue;
                }
                snprintf(arg, sizeof(arg), "%s%s%s", s, s[0] ? "." : "", n);
                const char *params[] = {arg};
                send_query(TABLE_SQL, 1, params);
                return;
            }
            cands_make(r);
            g_stage = r->ncands ? ST_BEFORE : ST_END;
            r->qi = r->g0;
            continue;
        case ST_BEFORE:
            if (r->qi < r->g1) {
                explain(&r->fq[r->qi]);
                return;
            }
            g_stage = r->has_hypopg ? ST_CREATE : ST_END;
            r->ci = 0;
            continue;
        case ST_CREATE: {
            if (r->ci == r->ncands) {
                g_stage = ST_END;
                continue;
            }
            const struct cand *c = &r->cands[r->ci];
            const struct tab *t = &r->tabs[c->tab];
            if (!advice_cand_index_sql(t->nsp, t->rel, &c->ix, false, arg, sizeof(arg))) {
                r->ci++;
                continue;
            }
            snprintf(sql, sizeof(sql),
                     "SELECT indexrelid, %.130s.hypopg_relation_size(indexrelid) FROM "
                     "%.130s.hypopg_create_index($1)",
                     r->hypopg, r->hypopg);
            const char *params[] = {arg};
            send_query(sql, 1, params);
            return;
        }
        case ST_AFTER:
            while (r->qi < r->g1 &&
                   (r->fq[r->qi].before < 0 || !reads_tab(&r->fq[r->qi], r->cands[r->ci].tab)))
                r->qi++;
            if (r->qi < r->g1) {
                explain(&r->fq[r->qi]);
                return;
            }
            g_stage = ST_RESET;
            continue;
        case ST_RESET:
            snprintf(sql, sizeof(sql), "SELECT %.130s.hypopg_reset()", r->hypopg);
            send_query(sql, 0, NULL);
            return;
        case ST_END:
        default:
            group_advise(r);
            group_end(NULL);
            return;
        }
    }
}

/* ---- groups and runs ------------------------------------------------------------- */

static const struct server_holder_ops advice_holder;

static void run_finish(void)
{
    struct run *r = &g_run;
    /* The largest cost drop first; unverified advice after, heaviest first. */
    for (int i = 1; i < r->nitems; i++)
        for (int k = i; k > 0 && r->items[k].gain > r->items[k - 1].gain; k--) {
            struct item t = r->items[k];
            r->items[k] = r->items[k - 1];
            r->items[k - 1] = t;
        }
    pthread_mutex_lock(&g_lock);
    memcpy(g_items, r->items, (size_t)r->nitems * sizeof(g_items[0]));
    g_nitems = r->nitems;
    g_stats.runs++;
    g_stats.last_run = now_wall_usec();
    g_stats.advised = (size_t)r->nitems;
    pthread_mutex_unlock(&g_lock);
    log_info("index advisor: %d quer%s examined, %d ind%s advised", r->nfq,
             r->nfq == 1 ? "y" : "ies", r->nitems, r->nitems == 1 ? "ex" : "exes");
    for (int i = 0; i < r->nfq; i++)
        free(r->fq[i].sm);
    r->nfq = r->g0 = r->g1 = 0;
    r->phase = PH_IDLE;
}

/* The next group of the run (or its end), from the loop. */
static void next_group(void)
{
    struct run *r = &g_run;
    r->g0 = r->g1;
    if (r->g0 >= r->nfq || g_pooler.shutting_down) {
        run_finish();
        return;
    }
    const void *origin = r->fq[r->g0].sm->origin;
    r->g1 = r->g0 + 1;
    while (r->g1 < r->nfq && r->fq[r->g1].sm->origin == origin)
        r->g1++;
    struct pool *p = ((struct pool *)origin)->home;
    r->pool = p;
    r->phase = PH_CONNECT;
    r->in_connect = true;
    r->connect_failed = false;
    struct server *sv = pool_connect_server(p, advice_worker(), &advice_holder);
    r->in_connect = false;
    if (!sv || r->connect_failed) {
        group_end("could not connect to the primary");
        return;
    }
    r->sv = sv;
}

static void next_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)t;
    (void)revents;
    next_group();
}

/* The group is over (why: it failed): its connection closed, the next
 * one started from the loop. */
static void group_end(const char *why)
{
    struct run *r = &g_run;
    if (why)
        note_error("index advisor: database %s: %s", r->pool ? r->pool->db->name : "?", why);
    struct server *sv = r->sv;
    r->sv = NULL;
    if (sv)
        server_close(sv, "index advisor done");
    tabs_free(r);
    r->ncands = 0;
    r->phase = PH_NEXT;
    ev_timer_set(&g_next, 0., 0.);
    ev_timer_start(advice_worker()->loop, &g_next);
}

static void advice_ready(struct server *sv)
{
    struct run *r = &g_run;
    if (sv != r->sv || r->phase != PH_CONNECT) {
        server_close(sv, "index advisor connection not needed");
        return;
    }
    r->phase = PH_WORK;
    r->has_hypopg = false;
    g_stage = ST_SETUP;
    step();
}

static void advice_data(struct server *sv)
{
    char why[300];
    if (server_query_read(sv, why, sizeof(why)) == SERVER_READ_BAD)
        server_close(sv, why);
}

static void advice_closed(struct server *sv, struct client *c, const char *why)
{
    struct run *r = &g_run;
    if (r->in_connect) {
        r->connect_failed = true;
        return;
    }
    if (sv != r->sv)
        return;
    r->sv = NULL;
    group_end(why ? why : "connection closed");
}

static const struct server_holder_ops advice_holder = {
    .on_ready = advice_ready,
    .on_data = advice_data,
    .on_closed = advice_closed,
};

static void tick_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)t;
    (void)revents;
    const struct config *cfg = g_pooler.cfg;
    struct run *r = &g_run;
    int64_t now = worker_now(advice_worker());
    if (cfg->advice_interval <= 0 || !insights_on() || g_pooler.shutting_down)
        return;
    if (g_next_run > now + cfg->advice_interval) /* a reload shortened it */
        g_next_run = now + cfg->advice_interval;
    if (r->phase != PH_IDLE || now < g_next_run)
        return;
    g_next_run = now + cfg->advice_interval;
    pick();
    r->nitems = 0;
    r->g0 = r->g1 = 0;
    next_group();
}

void insights_advice_start(void)
{
    struct ev_loop *loop = advice_worker()->loop;
    g_next_run = worker_now(advice_worker()) + g_pooler.cfg->advice_interval;
    ev_timer_init(&g_tick, tick_cb, 1., 1.);
    ev_timer_start(loop, &g_tick);
    ev_unref(loop); /* does not keep the loop running */
    ev_timer_init(&g_next, next_cb, 0., 0.);
    g_running = true;
}

void insights_advice_stop(void)
{
    struct run *r = &g_run;
    if (g_running) {
        struct ev_loop *loop = advice_worker()->loop;
        ev_ref(loop);
        ev_timer_stop(loop, &g_tick);
        ev_timer_stop(loop, &g_next);
        g_running = false;
    }
    struct server *sv = r->sv;
    r->sv = NULL;
    if (sv)
        server_close(sv, "shutdown");
    tabs_free(r);
    for (int i = 0; i < r->nfq; i++)
        free(r->fq[i].sm);
    r->nfq = 0;
    r->phase = PH_IDLE;
    for (int i = 0; i < g_nsnaps; i++)
        free(g_snaps[i].v);
    g_nsnaps = 0;
}

/* ---- readers ----------------------------------------------------------------------- */

void insights_advice_each(insights_advice_fn fn, void *arg)
{
    pthread_mutex_lock(&g_lock);
    for (int i = 0; i < g_nitems; i++) {
        const struct item *it = &g_items[i];
        struct insights_advice a = {
            .database = it->database,
            .table = it->table,
            .columns = it->columns,
            .statement = it->statement,
            .verified = it->verified,
            .cost_before = it->before,
            .cost_after = it->after,
            .size_bytes = it->size,
            .n_fingerprints = it->n_fps,
            .fingerprints = it->fps,
            .note = it->note,
        };
        fn(arg, &a);
    }
    pthread_mutex_unlock(&g_lock);
}

void insights_advice_stats(struct insights_advice_stats *out)
{
    pthread_mutex_lock(&g_lock);
    *out = g_stats;
    pthread_mutex_unlock(&g_lock);
}
