/* replica_check.c - a replica's health check (replica_check.h). */
#include "replica_check.h"

#include <stdlib.h>

#include "pool.h"
#include "replicas.h"
#include "server.h"
#include "server_query.h"
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
static char *array_literal(const struct lookup_ask *a)
{
    size_t cap = 3;
    for (int i = 0; i < a->n; i++)
        cap += 2 * strlen(a->names[i]) + 3;
    char *out = malloc(cap), *w = out;
    if (!out)
        abort();
    *w++ = '{';
    for (int i = 0; i < a->n; i++) {
        if (i)
            *w++ = ',';
        *w++ = '"';
        for (const char *p = a->names[i]; *p; p++) {
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

void replica_check_lookup(struct server *sv)
{
    struct lookup_ask *a = calloc(1, sizeof(*a));
    if (!a)
        abort();
    a->n = volatility_take(sv->pool->db, a->names, worker_now(sv->s.worker));
    if (a->n == 0) {
        free(a);
        pool_server_ready(sv);
        return;
    }
    char *lit = array_literal(a);
    const char *params[1] = {lit};
    if (!server_query(sv, LOOKUP_SQL, 1, params, &lookup_ops, a))
        free(a);
    free(lit);
}
