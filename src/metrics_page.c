/* metrics_page.c - the status page at "/" of metrics_listen (metrics_page.h).
 *
 * One pass over the same views SHOW POOLS, SHOW REPLICAS, SHOW CACHE, SHOW
 * JOBS and SHOW QUERIES print (admin_pools_each, lag_monitor_lag,
 * cache_db_stats, jobs_each, insights_collect), run like an exposition: on
 * the metrics loop with the world lock held, written into a buffer that
 * metrics.c sends without blocking. Bars are CSS widths; the page reloads
 * by <meta http-equiv="refresh">, so it has no script at all and metrics.c
 * can forbid every script and resource by Content-Security-Policy. Every
 * string from outside (names, query texts, errors) is escaped. */
#include "metrics_page.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "admin.h"
#include "cache.h"
#include "conn.h"
#include "insights.h"
#include "insights_advice.h"
#include "jobs.h"
#include "lag_monitor.h"
#include "list.h"
#include "pool.h"
#include "version.h"
#include "worker.h"

/* ---- pure helpers ---------------------------------------------------------- */

void metrics_page_escape(struct metrics_buf *b, const char *s)
{
    const char *run = s;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        const char *ref;
        switch (c) {
        case '&':
            ref = "&amp;";
            break;
        case '<':
            ref = "&lt;";
            break;
        case '>':
            ref = "&gt;";
            break;
        case '"':
            ref = "&quot;";
            break;
        case '\'':
            ref = "&#39;";
            break;
        default:
            if ((c >= 0x20 && c != 0x7f) || c == '\t' || c == '\n' || c == '\r')
                continue;
            ref = "\xef\xbf\xbd"; /* U+FFFD: HTML forbids these controls */
            break;
        }
        metrics_buf_append(b, run, (size_t)(s - run));
        metrics_buf_append(b, ref, strlen(ref));
        run = s + 1;
    }
    metrics_buf_append(b, run, (size_t)(s - run));
}

void metrics_page_duration(char *out, size_t len, uint64_t usec)
{
    if (usec == 0)
        snprintf(out, len, "0");
    else if (usec < 1000)
        snprintf(out, len, "%llu \xc2\xb5s", (unsigned long long)usec);
    else if (usec < 999995) /* not "1000.00 ms" */
        snprintf(out, len, "%.2f ms", (double)usec / 1e3);
    else
        snprintf(out, len, "%.2f s", (double)usec / 1e6);
}

void metrics_page_bytes(char *out, size_t len, uint64_t bytes)
{
    static const char *const units[] = {"kB", "MB", "GB", "TB"};
    if (bytes < 1024) {
        snprintf(out, len, "%llu B", (unsigned long long)bytes);
        return;
    }
    double v = (double)bytes / 1024.0;
    size_t u = 0;
    while (v >= 1024.0 && u + 1 < sizeof(units) / sizeof(units[0])) {
        v /= 1024.0;
        u++;
    }
    snprintf(out, len, "%.1f %s", v, units[u]);
}

/* ---- building blocks ------------------------------------------------------- */

static void put(struct metrics_buf *b, const char *s)
{
    metrics_buf_append(b, s, strlen(s));
}

static void section(struct metrics_buf *b, const char *id, const char *title)
{
    metrics_buf_printf(b, "<section id=\"%s\"><h2>%s</h2>\n", id, title);
}

static void none(struct metrics_buf *b, const char *text)
{
    metrics_buf_printf(b, "<p class=\"none\">%s</p></section>\n", text);
}

/* A header row; a name starting with '<' is a left-aligned (text) column. */
static void header(struct metrics_buf *b, const char *const *names, size_t n)
{
    put(b, "<table><thead><tr>");
    for (size_t i = 0; i < n; i++) {
        if (names[i][0] == '<')
            metrics_buf_printf(b, "<th class=\"t\">%s</th>", names[i] + 1);
        else
            metrics_buf_printf(b, "<th>%s</th>", names[i]);
    }
    put(b, "</tr></thead><tbody>\n");
}

static void table_end(struct metrics_buf *b)
{
    put(b, "</tbody></table></section>\n");
}

static void cell_text(struct metrics_buf *b, const char *s)
{
    put(b, "<td class=\"t\">");
    metrics_page_escape(b, s);
    put(b, "</td>");
}

static void cell_num(struct metrics_buf *b, unsigned long long v)
{
    metrics_buf_printf(b, "<td>%llu</td>", v);
}

static void cell_duration(struct metrics_buf *b, uint64_t usec)
{
    char s[32];
    metrics_page_duration(s, sizeof(s), usec);
    metrics_buf_printf(b, "<td>%s</td>", s);
}

/* A bar filled to part/whole (clamped), of CSS class cls. */
static void bar(struct metrics_buf *b, const char *cls, double part, double whole)
{
    double pct = whole > 0 ? 100.0 * part / whole : 0;
    if (pct > 100)
        pct = 100;
    if (pct < 0)
        pct = 0;
    metrics_buf_printf(b, "<span class=\"bar %s\"><i style=\"width:%.1f%%\"></i></span>", cls, pct);
}

/* A wall-clock time relative to now: "12 s ago", "in 3 h", or "-". */
static void cell_when(struct metrics_buf *b, int64_t at, int64_t now)
{
    if (at <= 0) {
        put(b, "<td>-</td>");
        return;
    }
    long long d = (at > now ? at - now : now - at) / 1000000;
    const char *unit = "s";
    if (d >= 2 * 86400) {
        d /= 86400;
        unit = "d";
    } else if (d >= 2 * 3600) {
        d /= 3600;
        unit = "h";
    } else if (d >= 120) {
        d /= 60;
        unit = "min";
    }
    if (at > now)
        metrics_buf_printf(b, "<td>in %lld %s</td>", d, unit);
    else
        metrics_buf_printf(b, "<td>%lld %s ago</td>", d, unit);
}

/* ---- the sections ---------------------------------------------------------- */

static const char page_style[] =
    "body{font:14px/1.4 system-ui,sans-serif;margin:1em 2em;color:#222;background:#fff}"
    "h1{font-size:1.4em;margin:0}"
    "h2{font-size:1.1em;margin:1.4em 0 .4em;border-bottom:1px solid #ccc}"
    "table{border-collapse:collapse}"
    "th,td{padding:2px 8px;text-align:right;border-bottom:1px solid #eee;vertical-align:top}"
    "th{background:#f4f4f4;font-weight:600}.t{text-align:left}"
    "td.q{max-width:44em}code{font-size:12px}td.q code{white-space:pre-wrap;"
    "overflow-wrap:anywhere}td.fp{white-space:nowrap}"
    ".bar{display:inline-block;width:8em;height:.7em;background:#e8e8e8;margin-right:.4em}"
    ".bar i{display:block;height:100%;background:#3a7bd5}"
    ".p95 i{background:#e69f00}.p99 i{background:#d55e00}.lag i{background:#c33}"
    ".lat div{white-space:nowrap;text-align:left}"
    ".warn{color:#b00;font-weight:bold}.none{color:#777;font-style:italic}";

struct pool_totals {
    int pools, waiting;
};

static void page_head(struct metrics_buf *b)
{
    char when[64] = "";
    time_t t = (time_t)(now_wall_usec() / 1000000);
    struct tm tm;
    if (gmtime_r(&t, &tm))
        strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", &tm);
    metrics_buf_printf(b,
                       "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
                       "<meta http-equiv=\"refresh\" content=\"%d\">\n"
                       "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
                       "<title>sluice</title>\n<style>%s</style></head>\n<body>\n",
                       METRICS_PAGE_REFRESH, page_style);
    metrics_buf_printf(b,
                       "<header><h1>sluice</h1><p>version %s &middot; %d client connections "
                       "&middot; %s &middot; reloads every %d s &middot; "
                       "<a href=\"metrics\">/metrics</a></p></header>\n",
                       SLUICE_VERSION, g_pooler.n_clients, when, METRICS_PAGE_REFRESH);
}

static void pool_row(const struct admin_pool_view *v, void *arg)
{
    struct metrics_buf *b = arg;
    put(b, "<tr>");
    cell_text(b, v->database);
    cell_text(b, v->user);
    cell_text(b, v->endpoint);
    cell_num(b, (unsigned long long)v->cl_active);
    metrics_buf_printf(b, "<td%s>%d</td>", v->cl_waiting ? " class=\"warn\"" : "", v->cl_waiting);
    cell_num(b, (unsigned long long)v->sv_active);
    cell_num(b, (unsigned long long)v->sv_idle);
    cell_num(b, (unsigned long long)(v->sv_used + v->sv_tested + v->sv_login));
    cell_duration(b, (uint64_t)v->maxwait_usec);
    put(b, "</tr>\n");
}

static void count_pool(const struct admin_pool_view *v, void *arg)
{
    struct pool_totals *t = arg;
    t->pools++;
    t->waiting += v->cl_waiting;
}

static void page_pools(struct metrics_buf *b, int64_t now)
{
    section(b, "pools", "Pools");
    struct pool_totals t = {0, 0};
    admin_pools_each(now, count_pool, &t);
    if (!t.pools) {
        none(b, "no pools yet: a pool starts with its first client");
        return;
    }
    metrics_buf_printf(b, "<p>%d pools &middot; <span%s>clients waiting: %d</span></p>\n", t.pools,
                       t.waiting ? " class=\"warn\"" : "", t.waiting);
    static const char *const cols[] = {"<database",      "<user",         "<endpoint",
                                       "clients active", "waiting",       "servers active",
                                       "idle",           "other servers", "longest wait"};
    header(b, cols, sizeof(cols) / sizeof(cols[0]));
    admin_pools_each(now, pool_row, b);
    table_end(b);
}

static void replica_row(struct metrics_buf *b, const struct database *db, int ep, int64_t now,
                        uint64_t scale)
{
    const struct endpoint *e = &db->endpoints[ep];
    char addr[300];
    snprintf(addr, sizeof(addr), "%s:%d", e->host[0] ? e->host : "(unix socket)", e->port);
    uint64_t bytes = 0;
    int64_t usec = 0;
    bool lag = ep != 0 && lag_monitor_lag(db, ep, now, &bytes, &usec);
    const char *state = admin_endpoint_state(db, ep, now);
    put(b, "<tr>");
    cell_text(b, db->name);
    cell_text(b, addr);
    cell_text(b, ep == 0 ? "primary" : endpoint_role_str(e->role));
    metrics_buf_printf(b, "<td class=\"t%s\">%s</td>", strcmp(state, "ok") ? " warn" : "", state);
    cell_num(b, (unsigned long long)atomic_load_explicit(&e->reads, memory_order_relaxed));
    if (!lag) {
        put(b, "<td>-</td><td>-</td><td></td></tr>\n");
        return;
    }
    cell_num(b, (unsigned long long)bytes);
    cell_duration(b, (uint64_t)usec);
    put(b, "<td class=\"t\">");
    bar(b, "lag", (double)bytes, (double)scale);
    put(b, "</td></tr>\n");
}

static void page_replicas(struct metrics_buf *b, int64_t now)
{
    section(b, "replicas", "Replicas");
    static const char *const cols[] = {"<database", "<endpoint", "<role", "<state",
                                       "reads",     "lag bytes", "lag",   "<"};
    bool any = false;
    /* Bars of lag in bytes, the measure every replica has (its time is 0
     * until it replayed a transaction): full at replica_max_lag_bytes, or
     * without one, at the largest lag shown (1 MB at least). */
    uint64_t scale = (uint64_t)g_pooler.cfg->replica_max_lag_bytes;
    pool_lock();
    struct list *it, *tmp;
    if (scale == 0) {
        scale = 1 << 20;
        list_for_each_safe(it, tmp, &g_pooler.databases)
        {
            const struct database *db = list_entry(it, struct database, node);
            for (int ep = 1; ep < db->n_endpoints; ep++) {
                uint64_t bytes;
                int64_t usec;
                if (lag_monitor_lag(db, ep, now, &bytes, &usec) && bytes > scale)
                    scale = bytes;
            }
        }
    }
    list_for_each_safe(it, tmp, &g_pooler.databases)
    {
        const struct database *db = list_entry(it, struct database, node);
        if (db->n_endpoints < 2)
            continue;
        if (!any)
            header(b, cols, sizeof(cols) / sizeof(cols[0]));
        any = true;
        for (int ep = 0; ep < db->n_endpoints; ep++)
            replica_row(b, db, ep, now, scale);
    }
    pool_unlock();
    if (any)
        table_end(b);
    else
        none(b, "no database has replicas");
}

static void ratio_cell(struct metrics_buf *b, uint64_t hits, uint64_t misses)
{
    uint64_t asked = hits + misses;
    double r = asked ? (double)hits / (double)asked : 0;
    put(b, "<td class=\"t\">");
    bar(b, "", r, 1.0);
    metrics_buf_printf(b, "%.1f%%</td>", 100.0 * r);
}

/* One database's row (or one no longer configured, or the owners past the
 * store's slots, whose counters other than the store's are 0), as SHOW
 * CACHE's. */
static void cache_row(const char *name, const struct cache_db_stats *ds, void *arg)
{
    struct metrics_buf *b = arg;
    put(b, "<tr>");
    cell_text(b, name);
    cell_num(b, (unsigned long long)ds->hits);
    cell_num(b, (unsigned long long)ds->misses);
    ratio_cell(b, ds->hits, ds->misses);
    cell_num(b, (unsigned long long)ds->stores);
    cell_num(b, (unsigned long long)ds->refused_stale);
    cell_num(b, (unsigned long long)ds->invalidations);
    cell_num(b, (unsigned long long)ds->entries);
    char bytes[32];
    metrics_page_bytes(bytes, sizeof(bytes), ds->bytes);
    metrics_buf_printf(b, "<td>%s</td>", bytes);
    cell_num(b, (unsigned long long)ds->evictions);
    cell_num(b, (unsigned long long)ds->expired);
    put(b, "</tr>\n");
}

static void page_cache(struct metrics_buf *b)
{
    section(b, "cache", "Result cache");
    if (!cache_on()) {
        none(b, "the result cache is off (cache = off)");
        return;
    }
    struct cache_store_stats st;
    cache_stats(&st);
    char used[32], max[32];
    metrics_page_bytes(used, sizeof(used), st.bytes + st.overhead_bytes);
    metrics_page_bytes(max, sizeof(max), st.max_bytes);
    uint64_t asked = st.hits + st.misses;
    metrics_buf_printf(b,
                       "<p>hit ratio <b>%.1f%%</b> (%llu hits, %llu misses) &middot; %llu "
                       "entries &middot; %s of %s ",
                       asked ? 100.0 * (double)st.hits / (double)asked : 0.0,
                       (unsigned long long)st.hits, (unsigned long long)st.misses,
                       (unsigned long long)st.entries, used, max);
    bar(b, "", (double)(st.bytes + st.overhead_bytes), (double)st.max_bytes);
    metrics_buf_printf(b, "&middot; %llu evictions</p>\n", (unsigned long long)st.evictions);
    static const char *const cols[] = {"<database", "hits",      "misses",        "<hit ratio",
                                       "stores",    "stale",     "invalidations", "entries",
                                       "bytes",     "evictions", "expired"};
    header(b, cols, sizeof(cols) / sizeof(cols[0]));
    struct list *it, *tmp;
    list_for_each_safe(it, tmp, &g_pooler.databases)
    {
        const struct database *db = list_entry(it, struct database, node);
        struct cache_db_stats ds;
        cache_db_stats(db, &ds);
        if (!cache_db_stats_used(&ds))
            continue; /* as SHOW CACHE: only the databases that used it */
        cache_row(db->name, &ds, b);
    }
    cache_db_stats_others(cache_row, b);
    table_end(b);
}

struct jobs_page {
    struct metrics_buf *b;
    int64_t now;
    int n;
};

static void job_row(const struct job_view *v, void *arg)
{
    struct jobs_page *jp = arg;
    struct metrics_buf *b = jp->b;
    if (jp->n++ == 0) {
        static const char *const cols[] = {"<job",          "<database",    "<schedule", "<state",
                                           "<last result",  "runs",         "failures",  "skipped",
                                           "last run took", "last success", "next run",  "<error"};
        header(b, cols, sizeof(cols) / sizeof(cols[0]));
    }
    bool bad = v->result != JOB_RESULT_NONE && v->result != JOB_RESULT_OK;
    put(b, "<tr>");
    cell_text(b, v->name);
    cell_text(b, v->database);
    cell_text(b, v->schedule && v->schedule[0] ? v->schedule : "-");
    cell_text(b, v->state);
    metrics_buf_printf(b, "<td class=\"t%s\">%s</td>", bad ? " warn" : "",
                       v->result == JOB_RESULT_NONE ? "-" : job_result_str(v->result));
    cell_num(b, (unsigned long long)v->runs);
    cell_num(b, (unsigned long long)v->failures);
    cell_num(b, (unsigned long long)v->skipped);
    cell_duration(b, (uint64_t)(v->last_duration > 0 ? v->last_duration : 0));
    cell_when(b, v->last_success, jp->now);
    cell_when(b, v->next_run, jp->now);
    cell_text(b, v->error ? v->error : "");
    put(b, "</tr>\n");
}

static void page_jobs(struct metrics_buf *b)
{
    section(b, "jobs", "Jobs");
    struct jobs_page jp = {b, now_wall_usec(), 0};
    jobs_each(job_row, &jp);
    if (jp.n)
        table_end(b);
    else
        none(b, "no jobs configured ([jobs])");
}

/* The p50, p95 and p99 of a fingerprint as bars against scale (usec). */
static void latency_cell(struct metrics_buf *b, const struct insights_stat *st, uint64_t scale)
{
    static const double qs[] = {0.5, 0.95, 0.99};
    static const char *const names[] = {"p50", "p95", "p99"};
    put(b, "<td class=\"lat\">");
    for (int k = 0; k < 3; k++) {
        uint64_t v = insights_quantile(st, qs[k]);
        char s[32];
        metrics_page_duration(s, sizeof(s), v);
        put(b, "<div>");
        bar(b, names[k], (double)v, (double)scale);
        metrics_buf_printf(b, "%s %s</div>", names[k], s);
    }
    put(b, "</td>");
}

static void query_row(struct metrics_buf *b, const struct insights_row *r, uint64_t scale)
{
    const struct insights_stat *st = &r->st;
    metrics_buf_printf(b,
                       "<tr><td class=\"t fp\"><code>%016llx</code></td><td class=\"t q\"><code>",
                       (unsigned long long)st->fp);
    metrics_page_escape(b, r->text ? r->text : "");
    put(b, "</code></td>");
    cell_num(b, (unsigned long long)st->calls);
    cell_num(b, (unsigned long long)st->errors);
    cell_num(b, (unsigned long long)st->rows);
    cell_duration(b, st->total_us);
    cell_duration(b, st->calls ? st->total_us / st->calls : 0);
    latency_cell(b, st, scale);
    cell_num(b, (unsigned long long)st->where[INSIGHTS_PRIMARY]);
    cell_num(b, (unsigned long long)st->where[INSIGHTS_REPLICA]);
    cell_num(b, (unsigned long long)st->where[INSIGHTS_CACHE]);
    put(b, "</tr>\n");
}

static void page_queries(struct metrics_buf *b)
{
    section(b, "queries", "Top queries");
    if (!insights_on()) {
        none(b, "workload insights are off (insights = off)");
        return;
    }
    struct insights_row *rows;
    size_t all = insights_collect(&rows);
    insights_sort(rows, all, INSIGHTS_BY_TOTAL);
    size_t top = (size_t)g_pooler.cfg->insights_metrics_top, n = all < top ? all : top;
    if (n == 0) {
        insights_rows_free(rows, all);
        none(b, "no queries yet");
        return;
    }
    metrics_buf_printf(b, "<p>the %zu heaviest by total time, of %zu fingerprints</p>\n", n, all);
    /* One scale for every row's bars: the largest p99 shown. */
    uint64_t scale = 1;
    for (size_t i = 0; i < n; i++) {
        uint64_t p99 = insights_quantile(&rows[i].st, 0.99);
        if (p99 > scale)
            scale = p99;
    }
    static const char *const cols[] = {"<fingerprint", "<query",  "calls",     "errors",
                                       "rows",         "total",   "mean",      "<latency",
                                       "primary",      "replica", "cache hits"};
    header(b, cols, sizeof(cols) / sizeof(cols[0]));
    for (size_t i = 0; i < n; i++)
        query_row(b, &rows[i], scale);
    insights_rows_free(rows, all);
    table_end(b);
}

/* Index advice (issue 15 item 3) is the advisor's, a module of its own:
 * this section is where its advice goes, once wired to it. */
struct advice_page {
    struct metrics_buf *b;
    int n;
};

/* One index advised: its statement, the cost drop as a bar (before, after),
 * its size and the fingerprints it helps. */
static void advice_row(void *arg, const struct insights_advice *a)
{
    struct advice_page *ap = arg;
    struct metrics_buf *b = ap->b;
    if (ap->n++ == 0) {
        static const char *const cols[] = {"<index",     "<database", "cost before",
                                           "cost after", "<drop",     "size",
                                           "<verified",  "<helps",    "<note"};
        header(b, cols, sizeof(cols) / sizeof(cols[0]));
    }
    put(b, "<tr><td class=\"t q\"><code>");
    metrics_page_escape(b, a->statement);
    put(b, "</code></td>");
    cell_text(b, a->database);
    if (a->cost_before >= 0)
        metrics_buf_printf(b, "<td>%.1f</td>", a->cost_before);
    else
        put(b, "<td>-</td>");
    if (a->cost_after >= 0)
        metrics_buf_printf(b, "<td>%.1f</td>", a->cost_after);
    else
        put(b, "<td>-</td>");
    put(b, "<td class=\"t\">");
    if (a->verified && a->cost_before > 0 && a->cost_after >= 0) {
        double drop = (a->cost_before - a->cost_after) / a->cost_before;
        bar(b, "p50", drop, 1.0);
        metrics_buf_printf(b, " %.0f%%", drop * 100.0);
    } else {
        put(b, "-");
    }
    put(b, "</td>");
    if (a->size_bytes >= 0)
        metrics_buf_printf(b, "<td>%lld kB</td>", (long long)(a->size_bytes / 1024));
    else
        put(b, "<td>-</td>");
    cell_text(b, a->verified ? "yes" : "no");
    put(b, "<td class=\"t fp\">");
    for (int i = 0; i < a->n_fingerprints; i++)
        metrics_buf_printf(b, "%s<code>%016llx</code>", i ? " " : "",
                           (unsigned long long)a->fingerprints[i]);
    put(b, "</td>");
    cell_text(b, a->note ? a->note : "");
    put(b, "</tr>\n");
}

static void page_advice(struct metrics_buf *b)
{
    section(b, "advice", "Index advice");
    struct advice_page ap = {b, 0};
    insights_advice_each(advice_row, &ap);
    if (ap.n) {
        table_end(b);
        return;
    }
    struct insights_advice_stats st;
    insights_advice_stats(&st);
    none(b, st.runs ? "no index advised by the last run (SHOW INDEX_ADVICE)"
                    : "no advice yet: the advisor has not run (advice_interval)");
}

void metrics_page_render(struct metrics_buf *b)
{
    int64_t now = g_pooler.n_workers > 0 ? worker_now(&g_pooler.workers[0]) : now_wall_usec();
    page_head(b);
    page_pools(b, now);
    page_replicas(b, now);
    page_cache(b);
    page_jobs(b);
    page_queries(b);
    page_advice(b);
    put(b, "</body></html>\n");
}
