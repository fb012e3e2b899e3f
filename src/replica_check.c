/* replica_check.c - a replica's health check (replica_check.h). */
#include "replica_check.h"

#include <stdlib.h>

#include "pool.h"
#include "replicas.h"
#include "server.h"
#include "server_query.h"
#include "cache_catalog.h"
#include "volatility.h"
#include "worker.h"

#define CHECK_SQL "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()"

/* What the check heard (allocated per check: the janitor takes the server
 * off the idle list first, so there is one at a time per server). */
struct check_answer {
    bool got_row;
    bool in_recovery;
    uint64_t lsn;
};

static void check_row(struct server *sv, void *arg, const struct server_query_row *row)
{
    struct check_answer *a = arg;
    if (row->n < 2 || !row->val[0])
        return;
    a->got_row = true;
    a->in_recovery = row->len[0] == 1 && row->val[0][0] == 't';
    if (!row->val[1] || !replicas_parse_lsn(row->val[1], row->len[1], &a->lsn))
        a->lsn = 0;
}

static void check_done(struct server *sv, void *arg, enum server_query_status st)
{
    struct check_answer a = *(struct check_answer *)arg;
    free(arg);
    struct pool *p = sv->pool;
    int64_t now = worker_now(sv->s.worker);
    bool ok = st == SERVER_QUERY_OK && a.got_row;
    if (st == SERVER_QUERY_GONE) {
        if (replicas_check_failed(p->db, p->ep, "connection lost during the check", g_pooler.cfg,
                                  now))
            pool_db_primary_changed(p->db);
        return;
    }
    bool changed =
        ok ? replicas_check_passed(p->db, p->ep, a.in_recovery, a.lsn, g_pooler.cfg, now)
           : replicas_check_failed(p->db, p->ep, "health check query failed", g_pooler.cfg, now);
    if (changed)
        pool_db_primary_changed(p->db);
    if (sv->xact_status != 'I')
        server_close(sv, "health check left a transaction open");
    else
        pool_server_ready(sv);
}

static const struct server_query_ops check_ops = {.on_row = check_row, .on_done = check_done};

void replica_check_run(struct server *sv)
{
    struct check_answer *a = calloc(1, sizeof(*a));
    if (!a)
        abort();
    if (!server_query(sv, CHECK_SQL, 0, NULL, &check_ops, a))
        free(a);
}

/* ---- function volatility -------------------------------------------------- */

/* For each name asked (as written: "f" or "schema.f"), the most volatile
 * of its overloads ('i' < 's' < 'v'); NULL when there is none. An
 * unqualified name counts every schema's functions of that name (which
 * one the search_path picks is not known here): a near miss errs toward
 * the primary. */
#define LOOKUP_SQL                                                                                 \
    "SELECT f, (SELECT max(p.provolatile::text) FROM pg_catalog.pg_proc p "                        \
    "JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace "                                    \
    "WHERE CASE WHEN strpos(f, '.') > 0 "                                                          \
    "THEN n.nspname = split_part(f, '.', 1) AND p.proname = split_part(f, '.', 2) "                \
    "ELSE p.proname = f END) FROM unnest($1::text[]) AS f"

struct lookup_ask {
    int n;
    bool answered[VOLATILITY_BATCH];
    char names[VOLATILITY_BATCH][VOLATILITY_MAX_NAME];
};

static void lookup_row(struct server *sv, void *arg, const struct server_query_row *row)
{
    struct lookup_ask *a = arg;
    if (row->n < 2 || !row->val[0])
        return;
    for (int i = 0; i < a->n; i++) {
        if (a->answered[i] || strlen(a->names[i]) != row->len[0] ||
            memcmp(a->names[i], row->val[0], row->len[0]) != 0)
            continue;
        char v = row->val[1] && row->len[1] == 1 ? row->val[1][0] : 0;
        volatility_store(sv->pool->db, a->names[i], v, worker_now(sv->s.worker));
        a->answered[i] = true;
        return;
    }
}

static void lookup_done(struct server *sv, void *arg, enum server_query_status st)
{
    struct lookup_ask *a = arg;
    if (st != SERVER_QUERY_GONE) {
        /* Names with no answer (the query failed): asked again later. */
        for (int i = 0; i < a->n; i++)
            if (!a->answered[i])
                volatility_store(sv->pool->db, a->names[i], 0, worker_now(sv->s.worker));
    }
    free(a);
    if (st == SERVER_QUERY_GONE)
        return;
    if (sv->xact_status != 'I')
        server_close(sv, "function lookup left a transaction open");
    else
        pool_server_ready(sv);
}

static const struct server_query_ops lookup_ops = {.on_row = lookup_row, .on_done = lookup_done};

/* names as a text[] literal: {"a","b.c"}, each element quoted, with
 * backslash before a quote or a backslash. */
static char *array_literal(const char *names, int n, size_t stride)
{
    size_t cap = 3;
    for (int i = 0; i < n; i++)
        cap += 2 * strlen(names + (size_t)i * stride) + 3;
    char *out = malloc(cap), *w = out;
    if (!out)
        abort();
    *w++ = '{';
    for (int i = 0; i < n; i++) {
        if (i)
            *w++ = ',';
        *w++ = '"';
        for (const char *p = names + (size_t)i * stride; *p; p++) {
            if (*p == '"' || *p == '\\')
                *w++ = '\\';
            *w++ = *p;
        }
        *w++ = '"';
    }
    *w++ = '}';
    *w = '\0';
    return out;
}

static void catalog_lookup(struct server *sv);

void replica_check_lookup(struct server *sv)
{
    struct lookup_ask *a = calloc(1, sizeof(*a));
    if (!a)
        abort();
    a->n = volatility_take(sv->pool->db, a->names, worker_now(sv->s.worker));
    if (a->n == 0) {
        free(a);
        catalog_lookup(sv);
        return;
    }
    char *lit = array_literal(a->names[0], a->n, sizeof(a->names[0]));
    const char *params[1] = {lit};
    if (!server_query(sv, LOOKUP_SQL, 1, params, &lookup_ops, a))
        free(a);
    free(lit);
}

/* ---- relations, for the result cache ----------------------------------------- */

/* For each name asked ("t" or "schema.t"): whether a relation of that name
 * exists; whether it, the base relations of views (through views) and
 * their inheritance ancestors and descendants may all be cached
 * (ordinary, partitioned, view or materialized view; permanent; no system
 * schema; names free of the separators used here: ',', '.', newline);
 * the schemas holding one; and every related relation as "schema.name".
 * An unqualified name counts every schema's relation of that name: which
 * one search_path picks is not known here. */
#define CATALOG_SQL                                                                                \
    "WITH RECURSIVE names(f, s, r) AS (SELECT f, CASE WHEN strpos(f, '.') > 0 "                    \
    "THEN split_part(f, '.', 1) END, CASE WHEN strpos(f, '.') > 0 THEN split_part(f, '.', 2) "     \
    "ELSE f END FROM unnest($1::text[]) AS f), "                                                   \
    "roots(f, oid) AS (SELECT names.f, c.oid FROM names JOIN pg_catalog.pg_class c "               \
    "ON c.relname = names.r JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "             \
    "WHERE names.s IS NULL OR n.nspname = names.s), "                                              \
    "bases(f, oid) AS (SELECT f, oid FROM roots UNION SELECT b.f, d.refobjid FROM bases b "        \
    "JOIN pg_catalog.pg_rewrite w ON w.ev_class = b.oid JOIN pg_catalog.pg_depend d "              \
    "ON d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND d.objid = w.oid "             \
    "AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refobjid <> b.oid), "     \
    "up(f, oid) AS (SELECT f, oid FROM bases UNION SELECT u.f, i.inhparent FROM up u "             \
    "JOIN pg_catalog.pg_inherits i ON i.inhrelid = u.oid), "                                       \
    "down(f, oid) AS (SELECT f, oid FROM bases UNION SELECT d.f, i.inhrelid FROM down d "          \
    "JOIN pg_catalog.pg_inherits i ON i.inhparent = d.oid), "                                      \
    "rel(f, oid) AS (SELECT f, oid FROM up UNION SELECT f, oid FROM down) "                        \
    "SELECT names.f, EXISTS (SELECT 1 FROM roots WHERE roots.f = names.f), "                       \
    "(SELECT pg_catalog.bool_and(c.relkind IN ('r', 'p', 'v', 'm') AND c.relpersistence = 'p' "    \
    "AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_' "           \
    "AND c.relname !~ '[,.\\n]' AND n.nspname !~ '[,.\\n]') FROM rel JOIN pg_catalog.pg_class c "  \
    "ON c.oid = rel.oid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "                 \
    "WHERE rel.f = names.f), "                                                                     \
    "(SELECT pg_catalog.string_agg(DISTINCT n.nspname, ',') FROM roots "                           \
    "JOIN pg_catalog.pg_class c ON c.oid = roots.oid JOIN pg_catalog.pg_namespace n "              \
    "ON n.oid = c.relnamespace WHERE roots.f = names.f), "                                         \
    "(SELECT pg_catalog.string_agg(DISTINCT n.nspname || '.' || c.relname, ',') FROM rel "         \
    "JOIN pg_catalog.pg_class c ON c.oid = rel.oid JOIN pg_catalog.pg_namespace n "                \
    "ON n.oid = c.relnamespace WHERE rel.f = names.f) FROM names"

struct catalog_ask {
    int n;
    bool answered[CACHE_CATALOG_BATCH];
    char names[CACHE_CATALOG_BATCH][CACHE_CATALOG_MAX_NAME];
};

/* A text column as a NUL-terminated copy (NULL: ""); false if too long. */
static bool column(const struct server_query_row *row, int i, char *out, size_t n)
{
    if (!row->val[i]) {
        out[0] = '\0';
        return true;
    }
    if (row->len[i] >= n)
        return false;
    memcpy(out, row->val[i], row->len[i]);
    out[row->len[i]] = '\0';
    return true;
}

static void catalog_row(struct server *sv, void *arg, const struct server_query_row *row)
{
    struct catalog_ask *a = arg;
    if (row->n < 5 || !row->val[0])
        return;
    for (int i = 0; i < a->n; i++) {
        if (a->answered[i] || strlen(a->names[i]) != row->len[0] ||
            memcmp(a->names[i], row->val[0], row->len[0]) != 0)
            continue;
        bool found = row->val[1] && row->val[1][0] == 't';
        bool ok = row->val[2] && row->val[2][0] == 't';
        char schemas[CACHE_CATALOG_SCHEMAS], related[4096];
        if (!column(row, 3, schemas, sizeof(schemas)) || !column(row, 4, related, sizeof(related)))
            ok = false, schemas[0] = related[0] = '\0';
        cache_catalog_store(sv->pool->db, a->names[i], false, found, ok, schemas, related,
                            worker_now(sv->s.worker));
        a->answered[i] = true;
        return;
    }
}

static void catalog_done(struct server *sv, void *arg, enum server_query_status st)
{
    struct catalog_ask *a = arg;
    if (st != SERVER_QUERY_GONE) {
        for (int i = 0; i < a->n; i++)
            if (!a->answered[i])
                cache_catalog_store(sv->pool->db, a->names[i], true, false, false, NULL, NULL,
                                    worker_now(sv->s.worker));
    }
    free(a);
    if (st == SERVER_QUERY_GONE)
        return;
    if (sv->xact_status != 'I')
        server_close(sv, "relation lookup left a transaction open");
    else
        pool_server_ready(sv);
}

static const struct server_query_ops catalog_ops = {.on_row = catalog_row, .on_done = catalog_done};

static void catalog_lookup(struct server *sv)
{
    struct catalog_ask *a = calloc(1, sizeof(*a));
    if (!a)
        abort();
    a->n = cache_catalog_take(sv->pool->db, a->names, worker_now(sv->s.worker));
    if (a->n == 0) {
        free(a);
        pool_server_ready(sv);
        return;
    }
    char *lit = array_literal(a->names[0], a->n, sizeof(a->names[0]));
    const char *params[1] = {lit};
    if (!server_query(sv, CATALOG_SQL, 1, params, &catalog_ops, a))
        free(a);
    free(lit);
}
