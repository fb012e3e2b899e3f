/* insights.c - workload insights: the observer and the workers' stores
 * (insights.h). */
#include "insights.h"

#include <pg_query.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"
#include "pool.h"
#include "proto.h"
#include "request.h"
#include "sql_shape.h"
#include "worker.h"

/* Longer texts are not looked at (they would have to be buffered whole). */
#define INSIGHTS_SQL_MAX (64 * 1024)
/* A Bind's names are looked for in its first bytes. */
#define INSIGHTS_BIND_PEEK 512
/* The shape table holds this many slots per fingerprint. */
#define INSIGHTS_SHAPES_PER_FP 4
/* Texts up to this long are remembered per client (insights_client.last). */
#define INSIGHTS_LAST_MAX 256
/* A fingerprint that stands for "does not parse": not recorded. */
#define FP_NONE 1
/* A client's prepared statements remembered, at most (then forgotten). */
#define CLIENT_STMTS_MAX 4096
/* A Bind with more parameters gives no sample. */
#define BIND_PARAMS_MAX 64
/* A binary parameter's value as text, at most (a uuid is 36). */
#define BIND_TEXT_MAX 48

/* A worker's store is written by its own loop on every request and read
 * now and then by a collector (SHOW QUERIES, /metrics) or by another
 * worker short of room: a yielding flag, not a pthread mutex, whose
 * uncontended lock and unlock cost some 100 instructions a request. It is
 * held for table updates and copies only, never across I/O. */
struct ins_worker {
    atomic_bool locked;
    struct insights_store *st;
};

static void ins_lock(struct ins_worker *iw)
{
    while (atomic_exchange_explicit(&iw->locked, true, memory_order_acquire))
        while (atomic_load_explicit(&iw->locked, memory_order_relaxed))
            sched_yield();
}

static bool ins_trylock(struct ins_worker *iw)
{
    return !atomic_exchange_explicit(&iw->locked, true, memory_order_acquire);
}

static void ins_unlock(struct ins_worker *iw)
{
    atomic_store_explicit(&iw->locked, false, memory_order_release);
}

static struct ins_worker *g_workers;
static int g_n_workers;
/* Entries over every worker, against insights_max_queries: a worker
 * short of room evicts its own least recent, or another's. */
static _Atomic size_t g_count;
static size_t g_max;
static _Atomic bool g_on;
static int g_slot = -1; /* the observer's payload index in request records */

/* A client's prepared statements: name hash -> fingerprint, open
 * addressing (cap a power of 2, hash 0 = free). */
struct stmt_slot {
    uint64_t name, fp;
};

struct insights_client {
    uint64_t unnamed; /* the unnamed statement's */
    uint32_t n, cap;
    struct stmt_slot *v;
    /* The last text fingerprinted for the client, and its fingerprint: a
     * driver sends the same unnamed Parse (or Query) again and again, and
     * a comparison is cheaper than its shape. */
    uint64_t last_fp;
    uint64_t last_removed; /* the store's removals when last_fp's entry was seen */
    uint32_t last_len;
    bool last_wants; /* last_fp's entry had no sample then */
    char last[INSIGHTS_LAST_MAX];
    /* The text of the last statement Parsed whose fingerprint wanted a
     * sample, until a Bind of it gives the parameters (rarely set: a
     * fingerprint has one sample). */
    char *pend_sql;
    size_t pend_len;
    uint64_t pend_name, pend_fp;
    int pend_ntypes;
    uint32_t *pend_types; /* the Parse's parameter types (binary values need them) */
};

bool insights_on(void)
{
    return atomic_load_explicit(&g_on, memory_order_relaxed);
}

static struct ins_worker *ins_worker_of(const struct client *c)
{
    int i = c->s.worker ? c->s.worker->id : 0;
    return &g_workers[i >= 0 && i < g_n_workers ? i : 0];
}

static uint64_t name_hash(const char *name, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (uint8_t)name[i]) * 0x100000001b3ULL;
    return h ? h : 1;
}

/* ---- fingerprints ------------------------------------------------------------- */

/* Room for one more entry on iw (its lock held): at the bound, its own
 * least recent goes, or, when it holds none, another worker's (tried, not
 * waited for: a busy worker is skipped, so the bound may be passed by one
 * entry per worker for a while). */
static void make_room(struct ins_worker *iw)
{
    if (atomic_load_explicit(&g_count, memory_order_relaxed) < g_max)
        return;
    if (insights_store_evict_oldest(iw->st)) {
        atomic_fetch_sub_explicit(&g_count, 1, memory_order_relaxed);
        return;
    }
    for (int i = 0; i < g_n_workers; i++) {
        struct ins_worker *o = &g_workers[i];
        if (o == iw || !ins_trylock(o))
            continue;
        bool evicted = insights_store_evict_oldest(o->st);
        ins_unlock(o);
        if (evicted) {
            atomic_fetch_sub_explicit(&g_count, 1, memory_order_relaxed);
            return;
        }
    }
}

/* The fingerprint of sql[0..len) (NUL at sql[len]), its entry made if it
 * has none; 0 when it does not parse. origin (not NULL): the text, with no
 * parameters, may be kept as the fingerprint's sample, with origin. wants
 * (not NULL): whether the fingerprint has no sample yet. */
static uint64_t fingerprint_by_shape(struct ins_worker *iw, uint64_t shape, const char *sql,
                                     size_t len, const void *origin, bool *wants)
{
    ins_lock(iw);
    uint64_t fp = insights_store_shape(iw->st, shape);
    bool known = fp == FP_NONE || (fp && insights_store_has(iw->st, fp));
    bool want = known && fp != FP_NONE && insights_store_wants_sample(iw->st, fp);
    if (want && origin)
        insights_store_sample(iw->st, fp, insights_sample_new(sql, len, 0, NULL, NULL, origin));
    ins_unlock(iw);
    if (wants)
        *wants = want && !origin;
    if (known)
        return fp == FP_NONE ? 0 : fp;
    /* New here (or evicted since): parsed outside the lock. */
    if (!fp) {
        PgQueryFingerprintResult r = pg_query_fingerprint(sql);
        fp = r.error || r.fingerprint <= FP_NONE ? FP_NONE : r.fingerprint;
        pg_query_free_fingerprint_result(r);
    }
    PgQueryNormalizeResult n = {0};
    if (fp != FP_NONE)
        n = pg_query_normalize(sql);
    ins_lock(iw);
    insights_store_set_shape(iw->st, shape, fp);
    if (fp != FP_NONE && !insights_store_has(iw->st, fp)) {
        const char *text = n.error || !n.normalized_query ? "" : n.normalized_query;
        make_room(iw);
        if (insights_store_add(iw->st, fp, text, strlen(text))) {
            atomic_fetch_add_explicit(&g_count, 1, memory_order_relaxed);
            if (origin)
                insights_store_sample(iw->st, fp,
                                      insights_sample_new(sql, len, 0, NULL, NULL, origin));
            else if (wants)
                *wants = true; /* new: no sample yet */
        }
    }
    ins_unlock(iw);
    if (fp != FP_NONE)
        pg_query_free_normalize_result(n);
    return fp == FP_NONE ? 0 : fp;
}

static struct insights_client *client_state(struct client *c)
{
    if (!c->insights) {
        c->insights = calloc(1, sizeof(*c->insights));
        if (!c->insights)
            abort();
    }
    return c->insights;
}

/* fingerprint_by_shape() for c's text (a Query's: rm, whose shape the
 * observers share; a Parse's: NULL); the same text as its last one costs
 * a comparison, while its entry is there (nothing was removed from the
 * store since it was seen) and had its sample already. */
static uint64_t client_fingerprint(struct client *c, struct request_msg *rm, const char *sql,
                                   size_t len, const void *origin, bool *wants)
{
    struct ins_worker *iw = ins_worker_of(c);
    struct insights_client *ic = c->insights;
    if (ic && ic->last_fp && !ic->last_wants && ic->last_len == len &&
        !memcmp(ic->last, sql, len) && insights_store_removed(iw->st) == ic->last_removed) {
        if (wants)
            *wants = false;
        return ic->last_fp;
    }
    uint64_t removed = insights_store_removed(iw->st); /* before: a removal after is seen */
    bool want = false;
    uint64_t shape = rm ? request_msg_shape(rm, sql, len) : sql_shape(sql, len);
    uint64_t fp = fingerprint_by_shape(iw, shape, sql, len, origin, &want);
    if (wants)
        *wants = want;
    if (fp && len <= INSIGHTS_LAST_MAX) {
        ic = client_state(c);
        memcpy(ic->last, sql, len);
        ic->last_len = (uint32_t)len;
        ic->last_fp = fp;
        ic->last_removed = removed;
        /* A Query's text was kept as the sample if one was wanted; a
         * Parse's waits for its Bind: look again until it has one. */
        ic->last_wants = want;
    }
    return fp;
}

/* ---- a client's prepared statements ------------------------------------------- */

static void stmt_set(struct client *c, const char *name, size_t len, uint64_t fp)
{
    struct insights_client *ic = client_state(c);
    if (!len) {
        ic->unnamed = fp;
        return;
    }
    if ((ic->n + 1) * 4 > ic->cap * 3) {
        uint32_t cap = ic->cap ? ic->cap * 2 : 16;
        if (ic->n >= CLIENT_STMTS_MAX) { /* names made up forever: start over */
            ic->n = 0;
            cap = ic->cap;
            memset(ic->v, 0, ic->cap * sizeof(*ic->v));
        } else {
            struct stmt_slot *v = calloc(cap, sizeof(*v));
            if (!v)
                abort();
            for (uint32_t i = 0; i < ic->cap; i++) {
                if (!ic->v[i].name)
                    continue;
                uint32_t j = (uint32_t)ic->v[i].name & (cap - 1);
                while (v[j].name)
                    j = (j + 1) & (cap - 1);
                v[j] = ic->v[i];
            }
            free(ic->v);
            ic->v = v;
        }
        ic->cap = cap;
    }
    uint64_t h = name_hash(name, len);
    uint32_t j = (uint32_t)h & (ic->cap - 1);
    while (ic->v[j].name && ic->v[j].name != h)
        j = (j + 1) & (ic->cap - 1);
    if (!ic->v[j].name)
        ic->n++;
    ic->v[j].name = h;
    ic->v[j].fp = fp;
}

static uint64_t stmt_get(const struct client *c, const char *name, size_t len)
{
    const struct insights_client *ic = c->insights;
    if (!ic)
        return 0;
    if (!len)
        return ic->unnamed;
    if (!ic->cap)
        return 0;
    uint64_t h = name_hash(name, len);
    for (uint32_t j = (uint32_t)h & (ic->cap - 1); ic->v[j].name; j = (j + 1) & (ic->cap - 1))
        if (ic->v[j].name == h)
            return ic->v[j].fp;
    return 0;
}

/* Keeps sql[0..len) as the pending text of statement name (a hash), of
 * fingerprint fp, with its Parse's parameter types (msg); sql NULL: none
 * pending. */
static void pend_set(struct insights_client *ic, uint64_t name, uint64_t fp, const char *sql,
                     size_t len, const uint8_t *msg, uint32_t msglen)
{
    free(ic->pend_sql);
    ic->pend_sql = NULL;
    if (!sql)
        return;
    if (!ic->pend_types) {
        ic->pend_types = malloc(BIND_PARAMS_MAX * sizeof(*ic->pend_types));
        if (!ic->pend_types)
            return;
    }
    ic->pend_sql = malloc(len + 1);
    if (!ic->pend_sql)
        return;
    memcpy(ic->pend_sql, sql, len);
    ic->pend_sql[len] = '\0';
    ic->pend_len = len;
    ic->pend_name = name;
    ic->pend_fp = fp;
    ic->pend_ntypes = proto_parse_param_types(msg, msglen, ic->pend_types, BIND_PARAMS_MAX);
}

/* Binary values of the types the Parse named, as text (text types are
 * their bytes); false if one cannot be. */
static bool params_as_text(const struct insights_client *ic, int n, const char **vals,
                           uint32_t *lens, const uint8_t *fmts, char (*buf)[BIND_TEXT_MAX])
{
    for (int i = 0; i < n; i++) {
        if (!fmts[i] || !vals[i])
            continue;
        uint32_t oid = i < ic->pend_ntypes ? ic->pend_types[i] : 0;
        if (oid == 25 || oid == 1043 || oid == 19 || oid == 1042)
            continue; /* text, varchar, name, bpchar: the bytes are the text */
        int k =
            proto_binary_param_text(oid, (const uint8_t *)vals[i], lens[i], buf[i], BIND_TEXT_MAX);
        if (k < 0)
            return false;
        vals[i] = buf[i];
        lens[i] = (uint32_t)k;
    }
    return true;
}

/* ---- the observer ---------------------------------------------------------------- */

/* The length of the string at p, or end - p when it has no NUL before end
 * (memchr: the string functions libpg_query brings are slower). */
static size_t str_len(const char *p, const char *end)
{
    if (p < end && !*p)
        return 0; /* the unnamed statement or portal: no call */
    const char *z = memchr(p, 0, (size_t)(end - p));
    return z ? (size_t)(z - p) : (size_t)(end - p);
}

static void mark(struct client *c, struct request_msg *rm, uint64_t fp)
{
    struct request *r = rm->r ? rm->r : request_current(c, rm->type);
    if (!r->obs[g_slot][0])
        r->obs[g_slot][0] = fp;
}

static int64_t on_query(struct client *c, struct request_msg *rm)
{
    if (rm->len - 5 > INSIGHTS_SQL_MAX)
        return rm->len;
    if (!request_msg_need(c, rm, rm->len))
        return REQUEST_WAIT;
    const char *sql = (const char *)c->s.rbuf->data + c->s.rbuf->start + 5;
    size_t len = rm->len - 5;
    if (len && !sql[len - 1])
        mark(c, rm, client_fingerprint(c, rm, sql, len - 1, c->pool, NULL));
    return rm->len;
}

static int64_t on_parse(struct client *c, struct request_msg *rm)
{
    if (rm->len - 5 > INSIGHTS_SQL_MAX)
        return rm->len;
    if (!request_msg_need(c, rm, rm->len))
        return REQUEST_WAIT;
    const char *p = (const char *)c->s.rbuf->data + c->s.rbuf->start + 5;
    const char *end = p + (rm->len - 5);
    size_t name_len = str_len(p, end);
    if (p + name_len == end)
        return rm->len; /* malformed: the server says so */
    const char *sql = p + name_len + 1;
    /* The client's last text again (a driver's unnamed Parse) is known
     * by comparison: no scan for its end. (last holds no NUL.) */
    const struct insights_client *ic = c->insights;
    size_t len = ic && ic->last_fp && ic->last_len < (size_t)(end - sql) && !sql[ic->last_len] &&
                         !memcmp(sql, ic->last, ic->last_len)
                     ? ic->last_len
                     : str_len(sql, end);
    if (sql + len == end)
        return rm->len;
    /* Counted at its Bind: a Parse alone (a driver preparing) runs nothing. */
    bool wants = false;
    uint64_t fp = client_fingerprint(c, NULL, sql, len, NULL, &wants);
    stmt_set(c, p, name_len, fp);
    if (wants && len <= INSIGHTS_SAMPLE_MAX)
        pend_set(c->insights, name_hash(p, name_len), fp, sql, len,
                 c->s.rbuf->data + c->s.rbuf->start, rm->len);
    return rm->len;
}

/* A Bind of the statement whose text is pending: its parameters (text
 * format only) and the text make the fingerprint's sample. The whole
 * message is needed, which only this rare Bind waits for. */
static int64_t bind_sample(struct client *c, struct request_msg *rm, uint64_t fp)
{
    struct insights_client *ic = c->insights;
    if (rm->len - 5 > INSIGHTS_SQL_MAX) {
        pend_set(ic, 0, 0, NULL, 0, NULL, 0);
        return rm->len;
    }
    if (!request_msg_need(c, rm, rm->len))
        return REQUEST_WAIT;
    const uint8_t *msg = c->s.rbuf->data + c->s.rbuf->start;
    const char *vals[BIND_PARAMS_MAX];
    uint32_t lens[BIND_PARAMS_MAX];
    uint8_t fmts[BIND_PARAMS_MAX];
    char text[BIND_PARAMS_MAX][BIND_TEXT_MAX];
    int n = proto_bind_params(msg, rm->len, vals, lens, fmts, BIND_PARAMS_MAX);
    if (n >= 0 && !params_as_text(ic, n, vals, lens, fmts, text))
        return rm->len; /* a binary value of another type: maybe the next Bind */
    if (n >= 0) {
        struct insights_sample *sm =
            insights_sample_new(ic->pend_sql, ic->pend_len, n, vals, lens, c->pool);
        struct ins_worker *iw = ins_worker_of(c);
        ins_lock(iw);
        insights_store_sample(iw->st, fp, sm);
        ins_unlock(iw);
    }
    pend_set(ic, 0, 0, NULL, 0, NULL, 0);
    return rm->len;
}

static int64_t on_bind(struct client *c, struct request_msg *rm)
{
    uint32_t want = rm->len < INSIGHTS_BIND_PEEK ? rm->len : INSIGHTS_BIND_PEEK;
    if (!request_msg_need(c, rm, want))
        return REQUEST_WAIT;
    const char *p = (const char *)c->s.rbuf->data + c->s.rbuf->start + 5;
    const char *end = p + (want - 5);
    size_t portal_len = str_len(p, end);
    if (p + portal_len == end)
        return rm->len;
    const char *stmt = p + portal_len + 1;
    size_t len = str_len(stmt, end);
    if (stmt + len == end)
        return rm->len;
    uint64_t fp = stmt_get(c, stmt, len);
    if (!fp)
        return rm->len;
    mark(c, rm, fp);
    const struct insights_client *ic = c->insights;
    if (ic->pend_sql && ic->pend_fp == fp && ic->pend_name == name_hash(stmt, len))
        return bind_sample(c, rm, fp);
    return rm->len;
}

static int64_t ins_client_msg(struct client *c, struct request_msg *rm)
{
    if (!insights_on() || rm->len < 5)
        return rm->len;
    switch (rm->type) {
    case 'Q':
        return on_query(c, rm);
    case 'P':
        return on_parse(c, rm);
    case 'B':
        return on_bind(c, rm);
    default:
        return rm->len;
    }
}

static void ins_request_end(struct client *c, struct server *sv, const struct request *r,
                            char status)
{
    (void)status;
    uint64_t fp = r->obs[g_slot][0];
    if (!fp || !insights_on())
        return;
    int64_t now = worker_now(c->s.worker);
    uint64_t usec = r->sent && now > r->start ? (uint64_t)(now - r->start) : 0;
    enum insights_where where =
        sv && sv->pool && sv->pool->ep ? INSIGHTS_REPLICA : INSIGHTS_PRIMARY;
    struct ins_worker *iw = ins_worker_of(c);
    ins_lock(iw);
    insights_store_record(iw->st, fp, usec, r->rows, r->failed, where, now);
    ins_unlock(iw);
}

static void ins_client_free(struct client *c)
{
    struct insights_client *ic = c->insights;
    if (!ic)
        return;
    free(ic->v);
    free(ic->pend_sql);
    free(ic->pend_types);
    free(ic);
    c->insights = NULL;
}

static const struct request_observer insights_observer = {
    .name = "insights",
    .client_msgs = "QPB",
    .on_client_msg = ins_client_msg,
    .on_request_end = ins_request_end,
    .on_client_free = ins_client_free,
};

uint64_t insights_cache_hit(struct client *c, const char *sql, size_t len, uint64_t shape)
{
    if (!g_workers || !insights_on() || len > INSIGHTS_SQL_MAX)
        return 0;
    struct ins_worker *iw = ins_worker_of(c);
    if (!shape)
        shape = sql_shape(sql, len);
    uint64_t fp = fingerprint_by_shape(iw, shape, sql, len, c->pool, NULL);
    if (!fp)
        return shape;
    ins_lock(iw);
    insights_store_record(iw->st, fp, 0, 0, false, INSIGHTS_CACHE, worker_now(c->s.worker));
    ins_unlock(iw);
    return shape;
}

/* ---- start, reload ------------------------------------------------------------ */

bool insights_init(const struct config *cfg, char *err, size_t errlen)
{
    atomic_store(&g_on, cfg->insights);
    if (!cfg->insights) {
        log_info("insights = off: per-query statistics are not kept (turning them on needs a "
                 "restart)");
        return true;
    }
    int n = cfg->workers > 0 ? cfg->workers : 1; /* (the workers are made after) */
    g_workers = calloc((size_t)n, sizeof(*g_workers));
    if (!g_workers) {
        snprintf(err, errlen, "insights: out of memory");
        return false;
    }
    g_n_workers = n;
    /* The bound is over all workers (make_room()); a worker may hold all of
     * it (one busy client, say). */
    size_t per = (size_t)cfg->insights_max_queries;
    g_max = per;
    for (int i = 0; i < n; i++) {
        atomic_init(&g_workers[i].locked, false);
        g_workers[i].st = insights_store_new(per, per * INSIGHTS_SHAPES_PER_FP);
        if (!g_workers[i].st) {
            snprintf(err, errlen, "insights: out of memory for %zu queries", per);
            return false;
        }
    }
    g_slot = request_observe(&insights_observer) - 1;
    request_count_rows = true;
    return true;
}

void insights_apply_config(const struct config *cfg)
{
    bool on = cfg->insights && g_workers;
    if (cfg->insights && !g_workers)
        log_warning("insights = on needs a restart: sluice started with insights = off");
    atomic_store(&g_on, on);
}

/* ---- readers ---------------------------------------------------------------------- */

struct collect {
    struct insights_row *rows;
    size_t n, cap;
};

static void collect_one(void *arg, const struct insights_stat *st, const char *text,
                        const struct insights_sample *sample)
{
    struct collect *col = arg;
    if (col->n == col->cap) {
        size_t cap = col->cap ? col->cap * 2 : 64;
        struct insights_row *v = realloc(col->rows, cap * sizeof(*v));
        if (!v)
            abort();
        col->rows = v;
        col->cap = cap;
    }
    struct insights_row *r = &col->rows[col->n++];
    r->st = *st;
    r->text = strdup(text);
    r->sample = sample ? insights_sample_dup(sample) : NULL;
    if (!r->text)
        abort();
}

static int by_fp(const void *a, const void *b)
{
    uint64_t x = ((const struct insights_row *)a)->st.fp,
             y = ((const struct insights_row *)b)->st.fp;
    return x < y ? -1 : x > y;
}

size_t insights_collect(struct insights_row **out)
{
    struct collect col = {0};
    for (int i = 0; i < g_n_workers; i++) {
        ins_lock(&g_workers[i]);
        insights_store_each(g_workers[i].st, collect_one, &col);
        ins_unlock(&g_workers[i]);
    }
    /* One fingerprint seen by several workers: one row, their sum. */
    if (g_n_workers > 1 && col.n > 1) {
        qsort(col.rows, col.n, sizeof(*col.rows), by_fp);
        size_t k = 0;
        for (size_t i = 0; i < col.n; i++) {
            struct insights_row *r = &col.rows[i];
            if (k && col.rows[k - 1].st.fp == r->st.fp) {
                struct insights_row *into = &col.rows[k - 1];
                insights_stat_merge(&into->st, &r->st);
                if (!into->sample) {
                    into->sample = r->sample;
                    r->sample = NULL;
                }
                free(r->text);
                free(r->sample);
            } else {
                col.rows[k++] = *r;
            }
        }
        col.n = k;
    }
    *out = col.rows;
    return col.n;
}

void insights_rows_free(struct insights_row *rows, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(rows[i].text);
        free(rows[i].sample);
    }
    free(rows);
}

void insights_reset(void)
{
    for (int i = 0; i < g_n_workers; i++) {
        ins_lock(&g_workers[i]);
        atomic_fetch_sub_explicit(&g_count, insights_store_count(g_workers[i].st),
                                  memory_order_relaxed);
        insights_store_reset(g_workers[i].st);
        ins_unlock(&g_workers[i]);
    }
}

void insights_usage(size_t *entries, size_t *bytes)
{
    *entries = *bytes = 0;
    for (int i = 0; i < g_n_workers; i++) {
        ins_lock(&g_workers[i]);
        *entries += insights_store_count(g_workers[i].st);
        *bytes += insights_store_bytes(g_workers[i].st);
        ins_unlock(&g_workers[i]);
    }
}

/* ---- orders ------------------------------------------------------------------------ */

static const char *const order_names[] = {"total_time", "calls", "mean", "p99", "errors"};

bool insights_order_parse(const char *name, enum insights_order *out)
{
    for (size_t i = 0; i < sizeof(order_names) / sizeof(order_names[0]); i++) {
        if (!strcasecmp(name, order_names[i])) {
            *out = (enum insights_order)i;
            return true;
        }
    }
    return false;
}

static enum insights_order g_sort_order; /* qsort has no argument: under g_sort_lock */
static pthread_mutex_t g_sort_lock = PTHREAD_MUTEX_INITIALIZER;

static uint64_t sort_key(const struct insights_row *r)
{
    switch (g_sort_order) {
    case INSIGHTS_BY_CALLS:
        return r->st.calls;
    case INSIGHTS_BY_MEAN:
        return r->st.calls ? r->st.total_us / r->st.calls : 0;
    case INSIGHTS_BY_P99:
        return insights_quantile(&r->st, 0.99);
    case INSIGHTS_BY_ERRORS:
        return r->st.errors;
    case INSIGHTS_BY_TOTAL:
    default:
        return r->st.total_us;
    }
}

static int by_key(const void *a, const void *b)
{
    uint64_t x = sort_key(a), y = sort_key(b);
    if (x != y)
        return x > y ? -1 : 1;
    const struct insights_row *ra = a, *rb = b;
    return ra->st.fp < rb->st.fp ? -1 : ra->st.fp > rb->st.fp;
}

void insights_sort(struct insights_row *rows, size_t n, enum insights_order order)
{
    pthread_mutex_lock(&g_sort_lock);
    g_sort_order = order;
    if (n > 1)
        qsort(rows, n, sizeof(*rows), by_key);
    pthread_mutex_unlock(&g_sort_lock);
}
