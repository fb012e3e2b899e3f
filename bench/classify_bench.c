/* classify_bench.c - what classifying a statement for the router costs
 * (make bench-classify).
 *
 * For a few typical statements: the cold cost (classify_rw_parse: the
 * parse, the walk and the packing into one block, then the free) in us per
 * statement, and the warm cost (classify_rw_cached answering from the
 * per-thread cache, alone and followed by classify_rw_resolve, which is what
 * the router pays per statement) in ns per statement. For comparison, what
 * libpg_query alone spends: pg_query_parse_protobuf (the parse and the
 * protobuf serialisation the cold cost starts with) and pg_query_parse
 * (the JSON form, which classify.c reads). And what a text not seen before
 * costs when its shape is known: each $N parameter written as a new
 * constant every time (pgbench -M simple, ORMs that inline values), in ns,
 * the writing of the text included. Each figure is the
 * median of RUNS batches, timed with the thread's CPU clock
 * (CLOCK_THREAD_CPUTIME_ID): CPU spent, not wall time, so a busy machine
 * slows it less. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <pg_query.h>

#include "classify_rw.h"

#define RUNS       21
#define COLD_ITERS 200
#define WARM_ITERS 200000

static const struct {
    const char *name;
    const char *sql;
} stmts[] = {
    {"SELECT by key", "SELECT abalance FROM pgbench_accounts WHERE aid = $1"},
    {"join + aggregates",
     "SELECT c.name, count(*), sum(o.total), max(o.created_at) FROM customers c "
     "JOIN orders o ON o.customer_id = c.id WHERE o.created_at >= now() - interval '30 days' "
     "GROUP BY c.name HAVING count(*) > 5 ORDER BY 3 DESC LIMIT 20"},
    {"ORM, 20 columns",
     "SELECT \"users\".\"id\" AS \"users_id\", \"users\".\"tenant_id\" AS \"users_tenant_id\", "
     "\"users\".\"email\" AS \"users_email\", \"users\".\"name\" AS \"users_name\", "
     "\"users\".\"display_name\" AS \"users_display_name\", \"users\".\"status\" AS "
     "\"users_status\", \"users\".\"role\" AS \"users_role\", \"users\".\"locale\" AS "
     "\"users_locale\", \"users\".\"timezone\" AS \"users_timezone\", \"users\".\"avatar_url\" "
     "AS \"users_avatar_url\", \"users\".\"phone\" AS \"users_phone\", \"users\".\"verified\" AS "
     "\"users_verified\", \"users\".\"mfa_enabled\" AS \"users_mfa_enabled\", "
     "\"users\".\"last_login_at\" AS \"users_last_login_at\", \"users\".\"login_count\" AS "
     "\"users_login_count\", \"users\".\"plan\" AS \"users_plan\", \"users\".\"quota\" AS "
     "\"users_quota\", \"users\".\"created_at\" AS \"users_created_at\", "
     "\"users\".\"updated_at\" AS \"users_updated_at\", \"users\".\"deleted_at\" AS "
     "\"users_deleted_at\" FROM \"users\" WHERE \"users\".\"tenant_id\" = $1 AND "
     "\"users\".\"email\" = $2 AND \"users\".\"deleted_at\" IS NULL LIMIT $3"},
    {"INSERT", "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) "
               "VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP)"},
    {"CTE", "WITH recent AS (SELECT user_id, max(created_at) AS last FROM events "
            "WHERE created_at > now() - interval '1 day' GROUP BY user_id) "
            "SELECT u.id, u.name, r.last FROM users u JOIN recent r ON r.user_id = u.id "
            "ORDER BY r.last DESC LIMIT 50"},
};

static volatile unsigned sink;

static double cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_double);
    return v[n / 2];
}

/* sql with each $N written as a number that changes with i. */
static size_t inline_values(const char *sql, unsigned i, char *out, size_t cap)
{
    size_t n = 0;
    for (const char *p = sql; *p && n + 16 < cap;) {
        if (*p == '$' && p[1] >= '0' && p[1] <= '9') {
            n += (size_t)snprintf(out + n, cap - n, "%u", i * 7 + (unsigned)(p[1] - '0'));
            for (p++; *p >= '0' && *p <= '9'; p++)
                ;
        } else {
            out[n++] = *p++;
        }
    }
    out[n] = '\0';
    return n;
}

/* ns per statement, median of RUNS batches of iters. mode 0: cold, 1:
 * cached, 2: cached + resolve, 3: pg_query_parse_protobuf, 4:
 * pg_query_parse, 5: cached, new constants each time. */
static double measure(const char *sql, int mode, int iters)
{
    size_t len = strlen(sql);
    double per[RUNS];
    struct classify_rw_decision d;
    static char buf[4096];
    static unsigned serial;
    (void)classify_rw_cached(sql, len); /* warm the cache */
    if (mode == 5)                      /* the shape's first text */
        (void)classify_rw_cached(buf, inline_values(sql, serial++, buf, sizeof(buf)));
    for (int r = 0; r < RUNS; r++) {
        double t0 = cpu_ns();
        for (int i = 0; i < iters; i++) {
            if (mode == 0) {
                struct classify_rw_result *res = classify_rw_parse(sql, len);
                sink += (unsigned)res->verdict;
                classify_rw_free(res);
            } else if (mode == 1) {
                sink += (unsigned)classify_rw_cached(sql, len)->verdict;
            } else if (mode == 3) {
                PgQueryProtobufParseResult pr = pg_query_parse_protobuf(sql);
                sink += (unsigned)pr.parse_tree.len;
                pg_query_free_protobuf_parse_result(pr);
            } else if (mode == 5) {
                size_t n = inline_values(sql, serial++, buf, sizeof(buf));
                sink += (unsigned)classify_rw_cached(buf, n)->verdict;
            } else if (mode == 4) {
                PgQueryParseResult pr = pg_query_parse(sql);
                sink += pr.parse_tree ? (unsigned)pr.parse_tree[0] : 0;
                pg_query_free_parse_result(pr);
            } else {
                sink += (unsigned)classify_rw_resolve(classify_rw_cached(sql, len), NULL, &d);
            }
        }
        per[r] = (cpu_ns() - t0) / iters;
    }
    return median(per, RUNS);
}

int main(void)
{
    printf("%-18s %5s %7s %5s | %7s %12s %16s %17s | %16s %14s\n", "statement", "bytes", "verdict",
           "funcs", "cold us", "warm ns: hit", "hit + resolve ns", "new constants ns",
           "pg_query: pb us", "json us");
    for (size_t i = 0; i < sizeof(stmts) / sizeof(stmts[0]); i++) {
        const char *sql = stmts[i].sql;
        const struct classify_rw_result *r = classify_rw_cached(sql, strlen(sql));
        int n_funcs = r->n_funcs;
        const char *verdict = classify_rw_verdict_str(r->verdict);
        double cold = measure(sql, 0, COLD_ITERS);
        double hit = measure(sql, 1, WARM_ITERS);
        double hit_resolve = measure(sql, 2, WARM_ITERS);
        double pb = measure(sql, 3, COLD_ITERS);
        double json = measure(sql, 4, COLD_ITERS);
        double shaped = measure(sql, 5, WARM_ITERS / 10);
        printf("%-18s %5zu %7s %5d | %7.1f %12.0f %16.0f %17.0f | %16.1f %14.1f\n", stmts[i].name,
               strlen(sql), verdict, n_funcs, cold / 1000.0, hit, hit_resolve, shaped, pb / 1000.0,
               json / 1000.0);
    }
    struct classify_rw_counters c;
    classify_rw_counters(&c);
    printf("(median of %d batches, thread CPU time; %llu parses, %llu hits, %llu misses)\n", RUNS,
           (unsigned long long)c.parses, (unsigned long long)c.hits, (unsigned long long)c.misses);
    classify_rw_thread_done();
    return 0;
}
