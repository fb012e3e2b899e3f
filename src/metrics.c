/* metrics.c - the Prometheus endpoint: a small HTTP/1.x responder on a
 * worker's libev loop, and the text exposition (format 0.0.4).
 *
 * The responder never blocks the loop: sockets are non-blocking, a request
 * head is read into a fixed buffer (METRICS_MAX_REQUEST, else 431), the
 * response is built in one go and written as the socket takes it, and every
 * connection has a deadline. At most METRICS_MAX_CONNS are open; more are
 * closed at once, so slow or idle clients cost a bounded amount of memory. */
#include "metrics.h"

#include <dirent.h>
#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "admin.h"
#include "conn.h"
#include "insights.h"
#include "insights_advice.h"
#include "jobs.h"
#include "lag_monitor.h"
#include "list.h"
#include "log.h"
#include "metrics_page.h"
#include "ryw.h"
#include "pool.h"
#include "version.h"
#include "worker.h"

#define METRICS_MAX_CONNS 16
#define METRICS_DEADLINE  10.0 /* seconds a connection may live */
#define METRICS_LINGER    2.0  /* seconds to drain a client after the response */
#define LAG_INTERVAL      1.0  /* seconds between event-loop lag probes */

/* ---- text buffer --------------------------------------------------------- */

static bool buf_reserve(struct metrics_buf *b, size_t extra)
{
    if (b->oom)
        return false;
    if (b->len + extra + 1 <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->oom = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

void metrics_buf_printf(struct metrics_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char small[256];
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0 || !buf_reserve(b, (size_t)n))
        return;
    if ((size_t)n < sizeof(small)) {
        memcpy(b->p + b->len, small, (size_t)n + 1);
    } else {
        va_start(ap, fmt);
        vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
        va_end(ap);
    }
    b->len += (size_t)n;
}

static void buf_append(struct metrics_buf *b, const char *s, size_t n)
{
    if (!buf_reserve(b, n))
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void metrics_buf_append(struct metrics_buf *b, const char *s, size_t n)
{
    buf_append(b, s, n);
}

void metrics_buf_label(struct metrics_buf *b, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '\\':
            buf_append(b, "\\\\", 2);
            break;
        case '"':
            buf_append(b, "\\\"", 2);
            break;
        case '\n':
            buf_append(b, "\\n", 2);
            break;
        default:
            buf_append(b, s, 1);
            break;
        }
    }
}

void metrics_buf_free(struct metrics_buf *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

/* Microseconds as exact decimal seconds: no float rounding, so a counter
 * read twice never appears to go backwards. */
static void buf_seconds(struct metrics_buf *b, uint64_t usec)
{
    metrics_buf_printf(b, "%llu.%06llu", (unsigned long long)(usec / 1000000),
                       (unsigned long long)(usec % 1000000));
}

void metrics_buf_family(struct metrics_buf *b, const char *name, const char *type, const char *help)
{
    metrics_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* ---- request parsing ----------------------------------------------------- */

static bool is_tchar(unsigned char c)
{
    /* RFC 9110 token characters */
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* End of the head (just past the empty line) in buf[0..len), or 0. Bare LF
 * line ends are accepted, as most servers do. */
static size_t head_end(const char *buf, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (buf[i] != '\n')
            continue;
        if (i + 1 < len && buf[i + 1] == '\n')
            return i + 2;
        if (i + 2 < len && buf[i + 1] == '\r' && buf[i + 2] == '\n')
            return i + 3;
    }
    return 0;
}

/* Length of the line at p (up to end), without its LF / CRLF; *next is
 * set past the line end. The caller knows a LF follows. */
static size_t line_len(const char *p, const char *end, const char **next)
{
    const char *lf = memchr(p, '\n', (size_t)(end - p));
    *next = lf + 1;
    size_t n = (size_t)(lf - p);
    if (n > 0 && p[n - 1] == '\r')
        n--;
    return n;
}

static enum metrics_parse parse_header_line(const char *p, size_t n)
{
    size_t i = 0;
    while (i < n && is_tchar((unsigned char)p[i]))
        i++;
    if (i == 0 || i >= n || p[i] != ':')
        return METRICS_PARSE_BAD; /* no name, whitespace before ':', obs-fold */
    for (i++; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return METRICS_PARSE_BAD;
    }
    return METRICS_PARSE_OK;
}

enum metrics_parse metrics_parse_request(const char *buf, size_t len, struct metrics_request *req)
{
    memset(req, 0, sizeof(*req));
    size_t hl = head_end(buf, len < METRICS_MAX_REQUEST ? len : METRICS_MAX_REQUEST);
    if (hl == 0)
        return len >= METRICS_MAX_REQUEST ? METRICS_PARSE_TOO_LARGE : METRICS_PARSE_INCOMPLETE;
    const char *p = buf, *end = buf + hl, *next;
    /* RFC 9112: a server should ignore empty lines before the request line. */
    size_t n = line_len(p, end, &next);
    while (n == 0 && next < end) {
        p = next;
        n = line_len(p, end, &next);
    }
    if (n == 0)
        return METRICS_PARSE_BAD;
    /* method SP request-target SP HTTP-version */
    size_t i = 0;
    while (i < n && is_tchar((unsigned char)p[i]))
        i++;
    if (i == 0 || i >= n || p[i] != ' ')
        return METRICS_PARSE_BAD;
    req->method = p;
    req->method_len = i;
    size_t t = ++i;
    while (i < n && (unsigned char)p[i] > 0x20 && (unsigned char)p[i] < 0x7f)
        i++;
    if (i == t || i >= n || p[i] != ' ')
        return METRICS_PARSE_BAD;
    if (p[t] != '/' && !(i - t == 1 && p[t] == '*'))
        return METRICS_PARSE_BAD; /* only origin-form (and OPTIONS's "*") */
    const char *q = memchr(p + t, '?', i - t);
    req->path = p + t;
    req->path_len = q ? (size_t)(q - (p + t)) : i - t;
    i++;
    if (n - i != 8 || memcmp(p + i, "HTTP/", 5) != 0 || p[i + 5] < '0' || p[i + 5] > '9' ||
        p[i + 6] != '.' || p[i + 7] < '0' || p[i + 7] > '9')
        return METRICS_PARSE_BAD;
    if (p[i + 5] != '1' || p[i + 7] > '1')
        return METRICS_PARSE_VERSION;
    req->minor = p[i + 7] - '0';
    for (p = next; p < end;) {
        n = line_len(p, end, &next);
        if (n == 0)
            break;
        if (parse_header_line(p, n) != METRICS_PARSE_OK)
            return METRICS_PARSE_BAD;
        p = next;
    }
    return METRICS_PARSE_OK;
}

static bool span_is(const char *p, size_t n, const char *s)
{
    return n == strlen(s) && memcmp(p, s, n) == 0;
}

int metrics_route(const struct metrics_request *req)
{
    if (!span_is(req->method, req->method_len, "GET") &&
        !span_is(req->method, req->method_len, "HEAD"))
        return 405;
    return span_is(req->path, req->path_len, "/metrics") || metrics_route_is_page(req) ? 200 : 404;
}

bool metrics_route_is_page(const struct metrics_request *req)
{
    return span_is(req->path, req->path_len, "/");
}

/* ---- exposition ---------------------------------------------------------- */

void metrics_render_hist(struct metrics_buf *b, const char *name, const struct stats_hist *h)
{
    uint64_t cum = 0;
    for (int i = 0; i < STATS_BUCKETS; i++) {
        cum += h->bucket[i];
        metrics_buf_printf(b, "%s_bucket{le=\"%g\"} %llu\n", name,
                           (double)stats_bucket_usec[i] / 1e6, (unsigned long long)cum);
    }
    /* +Inf is the count itself: every observation lands in some slot. */
    metrics_buf_printf(b, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum ", name,
                       (unsigned long long)h->count, name);
    buf_seconds(b, h->sum_usec);
    metrics_buf_printf(b, "\n%s_count %llu\n", name, (unsigned long long)h->count);
}

/* The per-pool families, filled in one walk over the pools. */
enum pool_family { PF_CLIENTS = 0, PF_SERVERS, PF_MAXWAIT, PF_COUNT };

static void pool_labels(struct metrics_buf *b, const struct admin_pool_view *v)
{
    buf_append(b, "database=\"", 10);
    metrics_buf_label(b, v->database);
    buf_append(b, "\",user=\"", 8);
    metrics_buf_label(b, v->user);
    buf_append(b, "\",endpoint=\"", 12);
    metrics_buf_label(b, v->endpoint);
    buf_append(b, "\"", 1);
}

static void pool_sample(struct metrics_buf *b, const char *name, const struct admin_pool_view *v,
                        const char *state, int value)
{
    metrics_buf_printf(b, "%s{", name);
    pool_labels(b, v);
    metrics_buf_printf(b, ",state=\"%s\"} %d\n", state, value);
}

static void pool_row(const struct admin_pool_view *v, void *arg)
{
    struct metrics_buf *f = arg;
    pool_sample(&f[PF_CLIENTS], "sluice_pool_clients", v, "active", v->cl_active);
    pool_sample(&f[PF_CLIENTS], "sluice_pool_clients", v, "waiting", v->cl_waiting);
    static const char *const sv[] = {"active", "idle", "used", "tested", "login"};
    const int vals[] = {v->sv_active, v->sv_idle, v->sv_used, v->sv_tested, v->sv_login};
    for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++)
        pool_sample(&f[PF_SERVERS], "sluice_pool_servers", v, sv[i], vals[i]);
    metrics_buf_printf(&f[PF_MAXWAIT], "sluice_pool_max_wait_seconds{");
    pool_labels(&f[PF_MAXWAIT], v);
    buf_append(&f[PF_MAXWAIT], "} ", 2);
    buf_seconds(&f[PF_MAXWAIT], (uint64_t)v->maxwait_usec);
    buf_append(&f[PF_MAXWAIT], "\n", 1);
}

/* Per-database counters: name, help, and which total (seconds if usec). */
enum db_field {
    DF_ASSIGN = 0,
    DF_XACT,
    DF_QUERY,
    DF_RECV,
    DF_SENT,
    DF_XACT_TIME,
    DF_QUERY_TIME,
    DF_WAIT_TIME,
    DF_REPLICA_READS,
    DF_RETRIES,
    DF_KEPT,
    DF_CLIENT_PARSES,
    DF_SERVER_PARSES,
    DF_BINDS,
    DF_COUNT,
};

static const struct {
    const char *name, *help;
    bool usec;
} db_fields[DF_COUNT] = {
    [DF_ASSIGN] = {"sluice_server_assignments_total", "Servers lent to clients.", false},
    [DF_XACT] = {"sluice_xacts_total", "Transactions pooled (SHOW STATS total_xact_count).", false},
    [DF_QUERY] = {"sluice_queries_total", "Queries pooled (SHOW STATS total_query_count).", false},
    [DF_RECV] = {"sluice_received_bytes_total", "Bytes received from clients.", false},
    [DF_SENT] = {"sluice_sent_bytes_total", "Bytes sent to clients.", false},
    [DF_XACT_TIME] = {"sluice_xact_time_seconds_total", "Time spent in transactions.", true},
    [DF_QUERY_TIME] = {"sluice_query_time_seconds_total", "Time spent in queries.", true},
    [DF_WAIT_TIME] = {"sluice_wait_time_seconds_total", "Time clients waited for a server.", true},
    [DF_REPLICA_READS] = {"sluice_replica_reads_total",
                          "Requests routed to replicas (read_write_split).", false},
    [DF_RETRIES] = {"sluice_retries_total",
                    "Requests sent again after their replica's server failed.", false},
    [DF_KEPT] = {"sluice_servers_kept_total",
                 "Servers rolled back and kept after their client left mid-transaction "
                 "(total_server_kept_count).",
                 false},
    [DF_CLIENT_PARSES] = {"sluice_client_parses_total",
                          "Prepared statements created by clients (total_client_parse_count).",
                          false},
    [DF_SERVER_PARSES] = {"sluice_server_parses_total",
                          "Prepared statements sluice prepared on servers "
                          "(total_server_parse_count).",
                          false},
    [DF_BINDS] = {"sluice_binds_total",
                  "Executions of clients' prepared statements (total_bind_count).", false},
};

static void db_row(const struct admin_db_view *v, void *arg)
{
    struct metrics_buf *f = arg;
    const uint64_t vals[DF_COUNT] = {
        v->assign_count, v->xact_count,    v->query_count,   v->bytes_in,      v->bytes_out,
        v->xact_time,    v->query_time,    v->wait_time,     v->replica_reads, v->retries,
        v->servers_kept, v->client_parses, v->server_parses, v->binds};
    for (int i = 0; i < DF_COUNT; i++) {
        metrics_buf_printf(&f[i], "%s{database=\"", db_fields[i].name);
        metrics_buf_label(&f[i], v->name);
        buf_append(&f[i], "\"} ", 3);
        if (db_fields[i].usec)
            buf_seconds(&f[i], vals[i]);
        else
            metrics_buf_printf(&f[i], "%llu", (unsigned long long)vals[i]);
        buf_append(&f[i], "\n", 1);
    }
}

/* Appends the families in parts[0..n) to b and frees them. */
static void buf_join(struct metrics_buf *b, struct metrics_buf *parts, int n)
{
    for (int i = 0; i < n; i++) {
        if (parts[i].oom)
            b->oom = true;
        if (parts[i].len)
            buf_append(b, parts[i].p, parts[i].len);
        metrics_buf_free(&parts[i]);
    }
}

/* Resident set size in bytes from /proc/self/statm (pages), or -1. */
static long long process_rss(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f)
        return -1;
    unsigned long long size = 0, rss = 0;
    int n = fscanf(f, "%llu %llu", &size, &rss);
    fclose(f);
    long page = sysconf(_SC_PAGESIZE);
    return n == 2 && page > 0 ? (long long)(rss * (unsigned long long)page) : -1;
}

/* Open file descriptors: the entries of /proc/self/fd but the one the
 * directory listing itself uses. -1 if unreadable. */
static long long process_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    long long n = 0;
    const struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n > 0 ? n - 1 : 0;
}

/* Each monitored replica's lag (lag_monitor.c), when measured lately. */
static void render_lag(struct metrics_buf *b, int64_t now)
{
    struct metrics_buf f[2];
    memset(f, 0, sizeof(f));
    metrics_buf_family(
        &f[0], "sluice_replica_lag_bytes", "gauge",
        "WAL bytes a replica's replay is behind the primary (SHOW REPLICAS lag_bytes).");
    metrics_buf_family(
        &f[1], "sluice_replica_lag_seconds", "gauge",
        "0 when a replica has replayed all the primary wrote, else how long it has not "
        "replayed (SHOW REPLICAS lag_ms).");
    pool_lock();
    struct list *it, *tmp;
    list_for_each_safe(it, tmp, &g_pooler.databases)
    {
        const struct database *db = list_entry(it, struct database, node);
        for (int ep = 1; ep < db->n_endpoints; ep++) {
            uint64_t bytes;
            int64_t usec;
            if (!lag_monitor_lag(db, ep, now, &bytes, &usec))
                continue;
            char addr[300];
            const struct endpoint *e = &db->endpoints[ep];
            snprintf(addr, sizeof(addr), "%s:%d", e->host, e->port);
            for (int i = 0; i < 2; i++) {
                metrics_buf_printf(&f[i], "%s{database=\"",
                                   i ? "sluice_replica_lag_seconds" : "sluice_replica_lag_bytes");
                metrics_buf_label(&f[i], db->name);
                buf_append(&f[i], "\",endpoint=\"", 12);
                metrics_buf_label(&f[i], addr);
                buf_append(&f[i], "\"} ", 3);
                if (i)
                    buf_seconds(&f[i], (uint64_t)usec);
                else
                    metrics_buf_printf(&f[i], "%llu", (unsigned long long)bytes);
                buf_append(&f[i], "\n", 1);
            }
        }
    }
    pool_unlock();
    buf_join(b, f, 2);
}

/* A counter family of two samples, one per value of its one label. */
static void buf_counter_pair(struct metrics_buf *b, const char *name, const char *help,
                             const char *label, const char *v1, uint64_t n1, const char *v2,
                             uint64_t n2)
{
    metrics_buf_family(b, name, "counter", help);
    metrics_buf_printf(b, "%s{%s=\"%s\"} %llu\n", name, label, v1, (unsigned long long)n1);
    metrics_buf_printf(b, "%s{%s=\"%s\"} %llu\n", name, label, v2, (unsigned long long)n2);
}

/* Read-your-writes: where reads that had a write to see went, and the
 * waits for a replica to catch up (ryw.h). */
static void render_ryw(struct metrics_buf *b)
{
    struct ryw_wait_stats *st = &ryw_wait_stats;
    uint64_t to_replica = atomic_load(&st->to_replica);
    uint64_t to_primary = atomic_load(&st->to_primary);
    buf_counter_pair(b, "sluice_ryw_reads_total",
                     "Reads that had writes to see (read_your_writes, sluice.min_lsn), by where "
                     "they went.",
                     "went", "replica", atomic_load(&st->floor_reads), "primary",
                     atomic_load(&st->floor_primary) + to_primary);
    metrics_buf_family(b, "sluice_ryw_wait_seconds", "histogram",
                       "Waits of reads for a replica to replay what they must see "
                       "(replica_wait_timeout).");
    uint64_t cum = 0;
    for (int i = 0; i < RYW_WAIT_BUCKETS; i++) {
        cum += atomic_load(&st->bucket[i]);
        metrics_buf_printf(b, "sluice_ryw_wait_seconds_bucket{le=\"%.6f\"} %llu\n",
                           (double)(2LL << i) / 1e6, (unsigned long long)cum);
    }
    metrics_buf_printf(b, "sluice_ryw_wait_seconds_bucket{le=\"+Inf\"} %llu\n",
                       (unsigned long long)(to_replica + to_primary));
    metrics_buf_printf(b, "sluice_ryw_wait_seconds_sum ");
    buf_seconds(b, atomic_load(&st->usec));
    metrics_buf_printf(b, "\nsluice_ryw_wait_seconds_count %llu\n",
                       (unsigned long long)(to_replica + to_primary));
    buf_counter_pair(b, "sluice_ryw_waits_total",
                     "Reads that waited for a replica, by where they went in the end.", "went",
                     "replica", to_replica, "primary", to_primary);
    buf_counter_pair(b, "sluice_ryw_position_asks_total",
                     "Replica replay positions asked for while reads waited: riding behind a "
                     "read sent to that replica, or polled by the lag monitor.",
                     "how", "ride", atomic_load(&st->asks_ride), "poll",
                     atomic_load(&st->asks_poll));
}

/* Refresh jobs (jobs.h), one sample per job in each family. */
enum job_family {
    JF_RUNS = 0,
    JF_FAILURES,
    JF_SKIPPED,
    JF_RUNNING,
    JF_DURATION,
    JF_SUCCESS,
    JF_NEXT,
    JF_RESULT,
    JF_COUNT,
};

static const struct {
    const char *name, *type, *help;
} job_families[JF_COUNT] = {
    [JF_RUNS] = {"sluice_job_runs_total", "counter",
                 "Runs of the job's command by this instance (SHOW JOBS runs)."},
    [JF_FAILURES] = {"sluice_job_failures_total", "counter",
                     "Runs that failed: SQL error, timeout, primary down (SHOW JOBS failures)."},
    [JF_SKIPPED] = {"sluice_job_skipped_total", "counter",
                    "Runs skipped because another instance held the job's lock."},
    [JF_RUNNING] = {"sluice_job_running", "gauge", "1 while a run of the job is going here."},
    [JF_DURATION] = {"sluice_job_last_duration_seconds", "gauge",
                     "How long the last run's command took."},
    [JF_SUCCESS] = {"sluice_job_last_success_timestamp_seconds", "gauge",
                    "When the last successful run ended (Unix time); 0: none yet."},
    [JF_NEXT] = {"sluice_job_next_run_timestamp_seconds", "gauge",
                 "When the next scheduled or debounced run is due (Unix time); 0: none."},
    [JF_RESULT] = {"sluice_job_last_result", "gauge",
                   "1 for the last run's result (ok, failed, timeout, skipped, down)."},
};

static void job_sample(struct metrics_buf *f, const char *name, const struct job_view *v)
{
    metrics_buf_printf(f, "%s{job=\"", name);
    metrics_buf_label(f, v->name);
    metrics_buf_printf(f, "\",database=\"");
    metrics_buf_label(f, v->database);
    buf_append(f, "\"} ", 3);
}

static void job_row(const struct job_view *v, void *arg)
{
    struct metrics_buf *f = arg;
    const unsigned long long n[] = {v->runs, v->failures, v->skipped,
                                    strcmp(v->state, "idle") != 0};
    for (int i = JF_RUNS; i <= JF_RUNNING; i++) {
        job_sample(&f[i], job_families[i].name, v);
        metrics_buf_printf(&f[i], "%llu\n", n[i]);
    }
    const int64_t usec[] = {v->last_duration, v->last_success, v->next_run};
    for (int i = JF_DURATION; i <= JF_NEXT; i++) {
        job_sample(&f[i], job_families[i].name, v);
        buf_seconds(&f[i], (uint64_t)(usec[i - JF_DURATION] > 0 ? usec[i - JF_DURATION] : 0));
        buf_append(&f[i], "\n", 1);
    }
    if (v->result != JOB_RESULT_NONE) {
        metrics_buf_printf(&f[JF_RESULT], "sluice_job_last_result{job=\"");
        metrics_buf_label(&f[JF_RESULT], v->name);
        metrics_buf_printf(&f[JF_RESULT], "\",database=\"");
        metrics_buf_label(&f[JF_RESULT], v->database);
        metrics_buf_printf(&f[JF_RESULT], "\",result=\"%s\"} 1\n", job_result_str(v->result));
    }
}

/* The top insights_metrics_top fingerprints by total time (insights.h),
 * labelled by fingerprint; sluice_query_info carries each one's text. */
static void query_label(struct metrics_buf *b, const char *name, uint64_t fp)
{
    metrics_buf_printf(b, "%s{fingerprint=\"%016llx\"", name, (unsigned long long)fp);
}

static void render_queries(struct metrics_buf *b)
{
    if (!insights_on())
        return;
    size_t entries, bytes;
    insights_usage(&entries, &bytes);
    metrics_buf_family(b, "sluice_insights_fingerprints", "gauge",
                       "Query fingerprints insights holds (at most insights_max_queries).");
    metrics_buf_printf(b, "sluice_insights_fingerprints %zu\n", entries);
    metrics_buf_family(b, "sluice_insights_bytes", "gauge", "Memory insights holds, in bytes.");
    metrics_buf_printf(b, "sluice_insights_bytes %zu\n", bytes);
    struct insights_row *rows;
    size_t all = insights_collect(&rows);
    insights_sort(rows, all, INSIGHTS_BY_TOTAL);
    size_t top = (size_t)g_pooler.cfg->insights_metrics_top, n = all < top ? all : top;
    static const char *const where[] = {"primary", "replica", "cache"};
    metrics_buf_family(b, "sluice_query_info", "gauge",
                       "One per fingerprint shown: its normalized text (constants are $n).");
    for (size_t i = 0; i < n; i++) {
        query_label(b, "sluice_query_info", rows[i].st.fp);
        metrics_buf_printf(b, ",query=\"");
        metrics_buf_label(b, rows[i].text);
        metrics_buf_printf(b, "\"} 1\n");
    }
    metrics_buf_family(b, "sluice_query_calls_total", "counter",
                       "Requests of the fingerprint, by where they ran (primary, replica, cache).");
    for (size_t i = 0; i < n; i++)
        for (int k = 0; k < INSIGHTS_WHERE_N; k++) {
            query_label(b, "sluice_query_calls_total", rows[i].st.fp);
            metrics_buf_printf(b, ",where=\"%s\"} %llu\n", where[k],
                               (unsigned long long)rows[i].st.where[k]);
        }
    static const char *const counters[][2] = {
        {"sluice_query_errors_total", "Requests of the fingerprint that ended in an error."},
        {"sluice_query_rows_total", "Rows its requests returned or changed (CommandComplete)."}};
    for (int k = 0; k < 2; k++) {
        metrics_buf_family(b, counters[k][0], "counter", counters[k][1]);
        for (size_t i = 0; i < n; i++) {
            query_label(b, counters[k][0], rows[i].st.fp);
            metrics_buf_printf(b, "} %llu\n",
                               (unsigned long long)(k ? rows[i].st.rows : rows[i].st.errors));
        }
    }
    metrics_buf_family(b, "sluice_query_latency_seconds", "summary",
                       "Time of the fingerprint's requests, from the request to its ReadyForQuery "
                       "(quantiles within 6.25%).");
    static const double qs[] = {0.5, 0.95, 0.99};
    for (size_t i = 0; i < n; i++) {
        for (int k = 0; k < 3; k++) {
            query_label(b, "sluice_query_latency_seconds", rows[i].st.fp);
            metrics_buf_printf(b, ",quantile=\"%g\"} ", qs[k]);
            buf_seconds(b, insights_quantile(&rows[i].st, qs[k]));
            metrics_buf_printf(b, "\n");
        }
        query_label(b, "sluice_query_latency_seconds_sum", rows[i].st.fp);
        metrics_buf_printf(b, "} ");
        buf_seconds(b, rows[i].st.total_us);
        metrics_buf_printf(b, "\n");
        query_label(b, "sluice_query_latency_seconds_count", rows[i].st.fp);
        metrics_buf_printf(b, "} %llu\n", (unsigned long long)rows[i].st.calls);
    }
    insights_rows_free(rows, all);
}

/* The index advisor (insights_advice.h): its runs, and each index it
 * advises with the cost drop the planner estimated (0 when not verified). */
static void advice_gain(void *arg, const struct insights_advice *a)
{
    struct metrics_buf *b = arg;
    metrics_buf_printf(b, "sluice_index_advice_gain_ratio{database=\"");
    metrics_buf_label(b, a->database);
    metrics_buf_printf(b, "\",table=\"");
    metrics_buf_label(b, a->table);
    metrics_buf_printf(b, "\",columns=\"");
    metrics_buf_label(b, a->columns);
    double gain = a->verified && a->cost_before > 0 ? 1.0 - a->cost_after / a->cost_before : 0;
    metrics_buf_printf(b, "\",verified=\"%s\"} %.4f\n", a->verified ? "yes" : "no", gain);
}

static void render_advice(struct metrics_buf *b)
{
    struct insights_advice_stats st;
    insights_advice_stats(&st);
    metrics_buf_family(b, "sluice_index_advisor_runs_total", "counter",
                       "Runs of the index advisor.");
    metrics_buf_printf(b, "sluice_index_advisor_runs_total %llu\n", (unsigned long long)st.runs);
    metrics_buf_family(b, "sluice_index_advisor_explains_total", "counter",
                       "EXPLAINs the index advisor ran on the primary.");
    metrics_buf_printf(b, "sluice_index_advisor_explains_total %llu\n",
                       (unsigned long long)st.explains);
    metrics_buf_family(b, "sluice_index_advisor_errors_total", "counter",
                       "Statements or connections of the index advisor that failed.");
    metrics_buf_printf(b, "sluice_index_advisor_errors_total %llu\n",
                       (unsigned long long)st.errors);
    metrics_buf_family(
        b, "sluice_index_advice_gain_ratio", "gauge",
        "Each index advised: the planner's estimated cost drop of the queries it helps "
        "(0: not verified, hypopg missing).");
    insights_advice_each(advice_gain, b);
}

static void render_jobs(struct metrics_buf *b)
{
    struct metrics_buf f[JF_COUNT];
    memset(f, 0, sizeof(f));
    for (int i = 0; i < JF_COUNT; i++)
        metrics_buf_family(&f[i], job_families[i].name, job_families[i].type, job_families[i].help);
    jobs_each(job_row, f);
    buf_join(b, f, JF_COUNT);
}

void metrics_render(struct metrics_buf *b)
{
    metrics_buf_family(b, "sluice_build_info", "gauge", "Always 1; the version is a label.");
    metrics_buf_printf(b, "sluice_build_info{version=\"");
    metrics_buf_label(b, SLUICE_VERSION);
    metrics_buf_printf(b, "\"} 1\n");

    struct metrics_buf pf[PF_COUNT];
    memset(pf, 0, sizeof(pf));
    metrics_buf_family(&pf[PF_CLIENTS], "sluice_pool_clients", "gauge",
                       "Clients of the pool by state (SHOW POOLS cl_active, cl_waiting).");
    metrics_buf_family(&pf[PF_SERVERS], "sluice_pool_servers", "gauge",
                       "Server connections of the pool by state (SHOW POOLS sv_*).");
    metrics_buf_family(&pf[PF_MAXWAIT], "sluice_pool_max_wait_seconds", "gauge",
                       "How long the oldest waiting client of the pool has waited.");
    int64_t now = g_pooler.n_workers > 0 ? worker_now(&g_pooler.workers[0]) : now_wall_usec();
    admin_pools_each(now, pool_row, pf);
    buf_join(b, pf, PF_COUNT);

    struct metrics_buf df[DF_COUNT];
    memset(df, 0, sizeof(df));
    for (int i = 0; i < DF_COUNT; i++)
        metrics_buf_family(&df[i], db_fields[i].name, "counter", db_fields[i].help);
    admin_stats_each(db_row, df);
    buf_join(b, df, DF_COUNT);
    render_lag(b, now);
    render_ryw(b);
    metrics_render_cache(b);
    render_jobs(b);
    render_queries(b);
    if (insights_on())
        render_advice(b);

    struct stats_hist q, wt;
    memset(&q, 0, sizeof(q));
    memset(&wt, 0, sizeof(wt));
    for (int i = 0; i < g_pooler.n_workers; i++) {
        const struct worker *m = &g_pooler.workers[i];
        for (int k = 0; k <= STATS_BUCKETS; k++) {
            q.bucket[k] += m->hist_query.bucket[k];
            wt.bucket[k] += m->hist_wait.bucket[k];
        }
        q.count += m->hist_query.count;
        q.sum_usec += m->hist_query.sum_usec;
        wt.count += m->hist_wait.count;
        wt.sum_usec += m->hist_wait.sum_usec;
    }
    metrics_buf_family(b, "sluice_query_duration_seconds", "histogram",
                       "Query times, from the request to its ReadyForQuery.");
    metrics_render_hist(b, "sluice_query_duration_seconds", &q);
    metrics_buf_family(b, "sluice_wait_duration_seconds", "histogram",
                       "Time clients waited for a server, per assignment.");
    metrics_render_hist(b, "sluice_wait_duration_seconds", &wt);

    metrics_buf_family(b, "sluice_event_loop_lag_seconds", "gauge",
                       "How late the worker's last 1 s probe timer fired.");
    for (int i = 0; i < g_pooler.n_workers; i++) {
        metrics_buf_printf(b, "sluice_event_loop_lag_seconds{worker=\"%d\"} ",
                           g_pooler.workers[i].id);
        buf_seconds(b, (uint64_t)g_pooler.workers[i].lag_usec);
        buf_append(b, "\n", 1);
    }

    metrics_buf_family(b, "sluice_client_connections", "gauge",
                       "Client connections, logging in and admin ones included.");
    metrics_buf_printf(b, "sluice_client_connections %d\n", g_pooler.n_clients);
    long long rss = process_rss(), fds = process_fds();
    if (rss >= 0) {
        metrics_buf_family(b, "sluice_process_resident_memory_bytes", "gauge",
                           "Resident memory (/proc/self/statm).");
        metrics_buf_printf(b, "sluice_process_resident_memory_bytes %lld\n", rss);
    }
    if (fds >= 0) {
        metrics_buf_family(b, "sluice_process_open_fds", "gauge", "Open file descriptors.");
        metrics_buf_printf(b, "sluice_process_open_fds %lld\n", fds);
    }
}

/* ---- event-loop lag ------------------------------------------------------ */

static void lag_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct worker *w = t->data;
    (void)revents;
    /* ev_time() is the real time, ev_now() the loop's cached time the
     * timer was scheduled from: the difference to the due time is how long
     * callbacks kept this loop from getting to the timer. */
    int64_t late = (int64_t)(ev_time() * 1e6) - w->lag_due;
    w->lag_usec = late > 0 ? late : 0;
    w->lag_due = (int64_t)((ev_now(loop) + LAG_INTERVAL) * 1e6);
    ev_timer_set(t, LAG_INTERVAL, 0.0);
    ev_timer_start(loop, t);
}

/* ---- the responder ------------------------------------------------------- */

struct mconn {
    ev_io io;
    ev_timer deadline;
    struct list node;
    struct metrics_buf out; /* status line, headers and body */
    size_t out_off;
    size_t req_len;
    bool lingering; /* response sent; reading until the client closes */
    char req[METRICS_MAX_REQUEST];
};

static struct {
    struct worker *w;
    ev_io listener;
    bool listening;
    struct list conns;
    int n_conns;
    struct worker *workers;
    int n_workers;
} ms;

static void conn_close(struct mconn *c)
{
    ev_io_stop(ms.w->loop, &c->io);
    ev_timer_stop(ms.w->loop, &c->deadline);
    close(c->io.fd);
    list_del(&c->node);
    ms.n_conns--;
    metrics_buf_free(&c->out);
    free(c);
}

static const char *status_text(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 431:
        return "Request Header Fields Too Large";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Internal Server Error";
    }
}

/* Builds the whole response for status into c->out: the exposition, or
 * the status page (page). */
static void conn_respond(struct mconn *c, int status, bool head_only, bool page)
{
    struct metrics_buf body;
    memset(&body, 0, sizeof(body));
    if (status == 200) {
        /* Every worker's counters, read while the other loops are parked. */
        worker_world_lock();
        if (page)
            metrics_page_render(&body);
        else
            metrics_render(&body);
        worker_world_unlock();
        if (body.oom)
            status = 500;
    }
    if (status != 200) {
        metrics_buf_free(&body);
        metrics_buf_printf(&body, "%d %s\n", status, status_text(status));
    }
    const char *type = status != 200 ? "text/plain; charset=utf-8"
                       : page        ? "text/html; charset=utf-8"
                                     : "text/plain; version=0.0.4; charset=utf-8";
    metrics_buf_printf(&c->out, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n", status,
                       status_text(status), type);
    /* The page is live figures, never to be reused; and a browser that
     * honours the policy loads nothing but the page itself (no scripts at
     * all: a text that escaped escaping still could not run). */
    if (status == 200 && page)
        metrics_buf_printf(&c->out, "Cache-Control: no-store\r\n"
                                    "Content-Security-Policy: default-src 'none'; "
                                    "style-src 'unsafe-inline'\r\n"
                                    "X-Content-Type-Options: nosniff\r\n");
    if (status == 405)
        metrics_buf_printf(&c->out, "Allow: GET, HEAD\r\n");
    metrics_buf_printf(&c->out, "Content-Length: %zu\r\nConnection: close\r\n\r\n", body.len);
    if (!head_only && body.len)
        buf_append(&c->out, body.p, body.len);
    metrics_buf_free(&body);
}

/* Writes what the socket takes; true when everything is out. */
static bool conn_flush(struct mconn *c)
{
    while (c->out_off < c->out.len) {
        ssize_t n = send(c->io.fd, c->out.p + c->out_off, c->out.len - c->out_off, MSG_NOSIGNAL);
        if (n > 0) {
            c->out_off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return false;
        c->out_off = c->out.len; /* peer gone: nothing more to do */
        c->lingering = true;
        return true;
    }
    return true;
}

/* The response is out: half-close, then read and drop whatever the client
 * still sends until it closes, so that a close with unread input (which
 * makes the kernel send a RST) cannot destroy the response in flight. */
static void conn_linger(struct mconn *c)
{
    shutdown(c->io.fd, SHUT_WR);
    c->lingering = true;
    metrics_buf_free(&c->out);
    c->out_off = 0;
    ev_io_stop(ms.w->loop, &c->io);
    ev_io_set(&c->io, c->io.fd, EV_READ);
    ev_io_start(ms.w->loop, &c->io);
    ev_timer_stop(ms.w->loop, &c->deadline);
    ev_timer_set(&c->deadline, METRICS_LINGER, 0.0);
    ev_timer_start(ms.w->loop, &c->deadline);
}

static void conn_send(struct mconn *c)
{
    if (conn_flush(c)) {
        conn_linger(c);
        return;
    }
    ev_io_stop(ms.w->loop, &c->io);
    ev_io_set(&c->io, c->io.fd, EV_WRITE);
    ev_io_start(ms.w->loop, &c->io);
}

static void conn_read(struct mconn *c)
{
    if (c->lingering) {
        char sink[1024];
        ssize_t n = recv(c->io.fd, sink, sizeof(sink), 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
            conn_close(c);
        return;
    }
    ssize_t n = recv(c->io.fd, c->req + c->req_len, sizeof(c->req) - c->req_len, 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (n <= 0) {
        conn_close(c); /* gone before a whole request: nobody to answer */
        return;
    }
    c->req_len += (size_t)n;
    struct metrics_request req;
    int status;
    switch (metrics_parse_request(c->req, c->req_len, &req)) {
    case METRICS_PARSE_INCOMPLETE:
        return;
    case METRICS_PARSE_OK:
        status = metrics_route(&req);
        break;
    case METRICS_PARSE_TOO_LARGE:
        status = 431;
        break;
    case METRICS_PARSE_VERSION:
        status = 505;
        break;
    default:
        status = 400;
        break;
    }
    bool head_only = status == 200 && span_is(req.method, req.method_len, "HEAD");
    conn_respond(c, status, head_only, status == 200 && metrics_route_is_page(&req));
    conn_send(c);
}

static void conn_io_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    struct mconn *c = io->data;
    (void)loop;
    if (revents & EV_WRITE) {
        conn_send(c);
        return;
    }
    conn_read(c);
}

static void conn_deadline_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    conn_close(t->data);
}

static void accept_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    (void)revents;
    for (int i = 0; i < METRICS_MAX_CONNS; i++) {
        int fd = accept4(io->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED)
                log_warning("metrics: accept() failed: %s", strerror(errno));
            return;
        }
        /* Scrapers come every few seconds; more than a handful at once is
         * abuse or a bug, and each costs a request buffer. The oldest goes,
         * not the newcomer: idle connections cannot lock a scraper out. */
        if (ms.n_conns >= METRICS_MAX_CONNS)
            conn_close(list_entry(list_first(&ms.conns), struct mconn, node));
        struct mconn *c = malloc(sizeof(*c));
        if (!c) {
            close(fd);
            continue;
        }
        memset(c, 0, offsetof(struct mconn, req));
        ev_io_init(&c->io, conn_io_cb, fd, EV_READ);
        c->io.data = c;
        ev_timer_init(&c->deadline, conn_deadline_cb, METRICS_DEADLINE, 0.0);
        c->deadline.data = c;
        list_add_tail(&ms.conns, &c->node);
        ms.n_conns++;
        ev_io_start(loop, &c->io);
        ev_timer_start(loop, &c->deadline);
    }
}

/* Splits "host:port", "[v6]:port" or ":port" into host (NULL = any
 * address) and port. */
static bool split_hostport(const char *s, char *host, size_t hostlen, const char **port)
{
    const char *colon;
    if (s[0] == '[') {
        const char *rb = strchr(s, ']');
        if (!rb || rb[1] != ':')
            return false;
        colon = rb + 1;
        s++;
        if ((size_t)(rb - s) >= hostlen)
            return false;
        memcpy(host, s, (size_t)(rb - s));
        host[rb - s] = '\0';
    } else {
        colon = strrchr(s, ':');
        if (!colon || (size_t)(colon - s) >= hostlen)
            return false;
        memcpy(host, s, (size_t)(colon - s));
        host[colon - s] = '\0';
    }
    *port = colon + 1;
    return **port != '\0';
}

bool metrics_start(struct worker *w, struct worker *workers, int n, char *err, size_t errlen)
{
    const struct config *cfg = w->cfg;
    if (!cfg->metrics_listen || !cfg->metrics_listen[0])
        return true;
    char host[256];
    const char *port;
    if (!split_hostport(cfg->metrics_listen, host, sizeof(host), &port)) {
        snprintf(err, errlen, "metrics_listen \"%s\": expected host:port", cfg->metrics_listen);
        return false;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    const char *h = host[0] && strcmp(host, "*") != 0 ? host : NULL;
    int rc = getaddrinfo(h, port, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "metrics_listen \"%s\": %s", cfg->metrics_listen, gai_strerror(rc));
        return false;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd >= 0) {
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        /* A restart with so_reuseport binds the new process beside the
         * old one; the metrics port must not make it fail. */
        if (cfg->so_reuseport)
            setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    }
    if (fd < 0 || bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 64) < 0) {
        snprintf(err, errlen, "could not listen on metrics_listen \"%s\": %s", cfg->metrics_listen,
                 strerror(errno));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(res);
        return false;
    }
    freeaddrinfo(res);
    ms.w = w;
    list_init(&ms.conns);
    ms.n_conns = 0;
    ev_io_init(&ms.listener, accept_cb, fd, EV_READ);
    ev_io_start(w->loop, &ms.listener);
    ms.listening = true;
    /* Each loop's probe runs on that loop; this runs before worker threads
     * start, so starting their timers from here is safe. */
    ms.workers = workers;
    ms.n_workers = n;
    for (int i = 0; i < n; i++) {
        struct worker *wk = &workers[i];
        ev_timer_init(&wk->lag_timer, lag_cb, LAG_INTERVAL, 0.0);
        wk->lag_timer.data = wk;
        wk->lag_due = (int64_t)((ev_now(wk->loop) + LAG_INTERVAL) * 1e6);
        ev_timer_start(wk->loop, &wk->lag_timer);
    }
    log_info("serving metrics on http://%s/metrics, the status page on http://%s/",
             cfg->metrics_listen, cfg->metrics_listen);
    return true;
}

void metrics_stop(void)
{
    if (!ms.listening)
        return;
    while (!list_empty(&ms.conns))
        conn_close(list_entry(list_first(&ms.conns), struct mconn, node));
    ev_io_stop(ms.w->loop, &ms.listener);
    close(ms.listener.fd);
    for (int i = 0; i < ms.n_workers; i++)
        ev_timer_stop(ms.workers[i].loop, &ms.workers[i].lag_timer);
    ms.listening = false;
}
