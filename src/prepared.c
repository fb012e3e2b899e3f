/* prepared.c - prepared statements, session settings and pinning under
 * transaction pooling: the first observer of the request queue (request.h).
 *
 * A client in transaction or statement mode may get another server for
 * each transaction, so what it prepared or SET must follow it. Its Parse
 * messages are renamed to server-wide names (prepared on whichever server
 * it has, when it needs them), SQL PREPARE/EXECUTE/DEALLOCATE likewise,
 * and its session SETs are replayed on the next server (prepared_settings.c).
 * Messages sluice writes of its own get entries of the queue that swallow
 * their answers; messages sluice answers itself get entries it answers in
 * their place; a rewritten message that fails is undone. Server-side names
 * and each server's set of statements are in prepared_set.c. State that
 * cannot move between servers pins the client to its server.
 */
#include "prepared.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "classify.h"
#include "hash.h"
#include "log.h"
#include "pool.h"
#include "prepared_settings.h"
#include "proto.h"
#include "request.h"
#include "worker.h"

/* ---- a client's statements and settings ----------------------------------------- */

enum stmt_kind {
    SK_PROTO = 0, /* Parse message: body = query\0 int16 n, n x int32 */
    SK_SQL,       /* SQL PREPARE: body = the text after the name */
};

/* What a query or statement does to session settings when it succeeds. */
struct set_action {
    uint32_t refs;
    bool reset_all;
    bool discard_all;
    bool failed;            /* an ErrorResponse came */
    const char *retag;      /* replace the (only) completion tag with this */
    struct stmt *undo;      /* PREPARE: forget it if the query fails */
    const char *fail_state; /* answer with this error instead of the server's */
    char *fail_msg;
    int n;
    struct {
        const char *name; /* interned, lower case */
        const char *stmt; /* interned statement text; NULL = RESET name */
    } set[CLASSIFY_MAX_STMTS];
};

struct stmt {
    struct stmt *next; /* hash chain */
    uint64_t h;
    uint32_t refs;
    enum stmt_kind kind;
    bool in_table;
    struct set_action *act; /* when the statement is a SET */
    uint32_t body_len;
    char *name;
    uint8_t body[];
};

/* The kinds of entries prepared.c owns in the request queue (entry.tag);
 * p[0] holds a struct stmt, p[1] a struct set_action, u a statement hash. */
enum prepared_tag {
    PT_PARSE = 1, /* the client's Parse, renamed: undo the statement on error */
    PT_INJ_PARSE, /* sluice's Parse before a Bind/Describe: forget it on error */
    PT_INJ_CLOSE, /* sluice's Close of an evicted statement */
    PT_SYNTH,     /* a Parse or Close sluice answers ('1' / '3') */
    PT_FAIL,      /* a message sure to fail: its error is replaced by ours */
    PT_SKIP,      /* sluice's Query or Parse+Sync between requests */
    PT_QUERY_X,   /* a Query with a set_action */
    PT_EXEC_X,    /* an Execute with a set_action (SET through the extended protocol) */
};

struct prepared_client {
    struct stmt **tab;
    uint32_t tab_cap, tab_n;
    struct set_action *unnamed_act; /* action of the unnamed statement */
    struct set_action *portal_act;  /* action of the statement last bound */
    struct setting_list settings;   /* session SETs to replay on the next server */
};

/* This observer's number, for the entries it owns. */
static int prepared_owner;

static void *xmalloc(size_t n)
{
    void *p = malloc(n);
    if (!p)
        abort();
    return p;
}

static struct prepared_client *pc_get(struct client *c)
{
    if (!c->ps) {
        c->ps = calloc(1, sizeof(*c->ps));
        if (!c->ps)
            abort();
    }
    return c->ps;
}

static void act_unref(struct set_action *a)
{
    if (a && --a->refs == 0) {
        for (int i = 0; i < a->n; i++) {
            param_unref(a->set[i].name);
            param_unref(a->set[i].stmt);
        }
        free(a->fail_msg);
        free(a);
    }
}

static struct set_action *act_ref(struct set_action *a)
{
    if (a)
        a->refs++;
    return a;
}

static struct set_action *act_new(void)
{
    struct set_action *a = calloc(1, sizeof(*a));
    if (!a)
        abort();
    a->refs = 1;
    return a;
}

static void stmt_unref(struct stmt *st)
{
    if (st && --st->refs == 0) {
        act_unref(st->act);
        free(st->name);
        free(st);
    }
}

static struct stmt *stmt_ref(struct stmt *st)
{
    if (st)
        st->refs++;
    return st;
}

static struct stmt *tab_find(struct prepared_client *pc, const char *name)
{
    if (!pc || !pc->tab_cap)
        return NULL;
    for (struct stmt *st = pc->tab[hash_str(name) & (pc->tab_cap - 1)]; st; st = st->next)
        if (!strcmp(st->name, name))
            return st;
    return NULL;
}

const char *prepared_client_query(const struct client *c, const char *name)
{
    const struct stmt *st = tab_find(c->ps, name);
    return st && st->kind == SK_PROTO ? (const char *)st->body : NULL;
}

const uint8_t *prepared_client_parse(const struct client *c, const char *name, uint32_t *len)
{
    const struct stmt *st = tab_find(c->ps, name);
    if (!st || st->kind != SK_PROTO)
        return NULL;
    *len = st->body_len;
    return st->body;
}

static void tab_add(struct prepared_client *pc, struct stmt *st)
{
    if (pc->tab_n + 1 > pc->tab_cap) {
        uint32_t ncap = pc->tab_cap ? pc->tab_cap * 2 : 8;
        struct stmt **nt = calloc(ncap, sizeof(*nt));
        if (!nt)
            abort();
        for (uint32_t i = 0; i < pc->tab_cap; i++) {
            struct stmt *s = pc->tab[i];
            while (s) {
                struct stmt *next = s->next;
                uint32_t k = hash_str(s->name) & (ncap - 1);
                s->next = nt[k];
                nt[k] = s;
                s = next;
            }
        }
        free(pc->tab);
        pc->tab = nt;
        pc->tab_cap = ncap;
    }
    uint32_t k = hash_str(st->name) & (pc->tab_cap - 1);
    st->next = pc->tab[k];
    pc->tab[k] = stmt_ref(st);
    st->in_table = true;
    pc->tab_n++;
}

static void tab_remove(struct prepared_client *pc, struct stmt *st)
{
    if (!st->in_table)
        return;
    struct stmt **pp = &pc->tab[hash_str(st->name) & (pc->tab_cap - 1)];
    while (*pp && *pp != st)
        pp = &(*pp)->next;
    if (*pp)
        *pp = st->next;
    st->next = NULL;
    st->in_table = false;
    pc->tab_n--;
    stmt_unref(st);
}

static void tab_clear(struct prepared_client *pc)
{
    for (uint32_t i = 0; pc && i < pc->tab_cap; i++) {
        while (pc->tab[i])
            tab_remove(pc, pc->tab[i]);
    }
}

static struct stmt *stmt_new(enum stmt_kind kind, const char *name, const void *body, size_t n)
{
    struct stmt *st = calloc(1, sizeof(*st) + n);
    if (!st)
        abort();
    st->kind = kind;
    st->name = strdup(name);
    if (!st->name)
        abort();
    memcpy(st->body, body, n);
    st->body_len = (uint32_t)n;
    /* The kind is hashed too: a protocol statement and an SQL one with the
     * same text are different server statements. */
    uint8_t tag = kind == SK_PROTO ? 'P' : 'Q';
    uint8_t *tmp = xmalloc(n + 1);
    tmp[0] = tag;
    memcpy(tmp + 1, body, n);
    st->h = prepared_hash(tmp, n + 1);
    free(tmp);
    st->refs = 1;
    return st;
}

static void server_name(uint64_t h, char out[24])
{
    snprintf(out, 24, "sl_%016" PRIx64, h);
}

/* ---- answers made by sluice ------------------------------------------------ */

static void out_error(struct client *c, const char *sqlstate, const char *msg)
{
    uint8_t buf[700];
    struct proto_writer wr;
    proto_writer_init(&wr, buf, sizeof(buf));
    proto_build_error(&wr, false, sqlstate, "%s", msg);
    request_out_add(c, buf, wr.len);
}

static void out_complete(struct client *c, const char *tag)
{
    uint8_t buf[128];
    struct proto_writer wr;
    proto_writer_init(&wr, buf, sizeof(buf));
    proto_build_command_complete(&wr, tag);
    request_out_add(c, buf, wr.len);
}

/* An entry of ours for the queue. */
static struct request_entry entry(enum request_answer answer, enum prepared_tag tag, unsigned flags)
{
    struct request_entry e = {.answer = (uint8_t)answer,
                              .flags = (uint8_t)(flags | RE_OWNED),
                              .owner = (uint8_t)prepared_owner,
                              .tag = (uint8_t)tag};
    return e;
}

/* ---- settings (the list itself is in prepared_settings.c) ---------------------- */

/* A query or Execute with settings finished: remember them for the next
 * server. status is the ReadyForQuery status ('I' outside a transaction),
 * or 0 for an Execute (not known yet). */
static void act_apply(struct client *c, struct set_action *a, char status)
{
    if (a->failed || (!a->n && !a->reset_all && !a->discard_all))
        return;
    struct setting_list *l = &pc_get(c)->settings;
    if (!l->loaded)
        settings_load(l, c->extras);
    if (a->reset_all || a->discard_all)
        settings_clear(l);
    for (int i = 0; i < a->n; i++)
        settings_put(l, a->set[i].name, a->set[i].stmt);
    param_take(&c->extras, settings_render(l));
    struct server *sv = c->server;
    if (!sv)
        return;
    if (status == 'T' || status == 'E') {
        /* A session SET inside a transaction block: it stays if the block
         * commits. The server's settings are unknown now, so the next
         * client (whoever) gets a RESET ALL first. */
        param_store(&sv->extras, "-- unknown");
        return;
    }
    param_assign(&sv->extras, c->extras);
}

/* ---- client side ------------------------------------------------------------------- */

static int max_prepared(void)
{
    return g_pooler.cfg->max_prepared_statements;
}

static bool prepared_tracking(const struct pool *p)
{
    return pool_mode_of(p) != POOL_MODE_SESSION;
}

/* Whether c's current request is an extended-protocol batch (a Query there
 * would end it). */
static bool in_batch(struct client *c)
{
    return request_current(c, 'Q')->kind == REQ_EXTENDED;
}

static void pin(struct client *c, const char *why)
{
    if (c->pinned)
        return;
    c->pinned = true;
    if (c->server) /* its state leaves with the client */
        server_close_later(c->server, "its client was pinned to it");
    log_info("C-%p: pinned to its server (%s)", (void *)c, why);
}

/* Counts a statement sluice prepares on sv (SHOW STATS's
 * total_server_parse_count). */
static void count_server_parse(struct server *sv)
{
    if (sv->pool)
        POOL_STAT_ADD(sv->pool->ps_server_parses, 1);
}

/* Counts, on the pool of c's server, a statement c created
 * (total_client_parse_count) or had executed (total_bind_count). */
static void count_client(struct client *c, bool bind)
{
    struct pool *p = c->server ? c->server->pool : c->pool;
    if (!p)
        return;
    if (bind)
        POOL_STAT_ADD(p->ps_binds, 1);
    else
        POOL_STAT_ADD(p->ps_client_parses, 1);
}

/* Writes a Parse for st under its server name. sync: followed by Sync (the
 * client is between requests of the simple protocol). */
static void write_parse(struct server *sv, const struct stmt *st, bool sync)
{
    char nm[24];
    server_name(st->h, nm);
    size_t nl = strlen(nm) + 1;
    uint8_t hdr[5 + 24];
    hdr[0] = 'P';
    proto_put32(hdr + 1, (uint32_t)(4 + nl + st->body_len));
    memcpy(hdr + 5, nm, nl);
    stream_write(&sv->s, hdr, 5 + nl);
    stream_write(&sv->s, st->body, st->body_len);
    if (sync)
        stream_write(&sv->s, "S\0\0\0\4", 5);
    count_server_parse(sv);
}

static void write_query(struct server *sv, const char *a, size_t an, const char *b, size_t bn)
{
    uint8_t hdr[5];
    hdr[0] = 'Q';
    proto_put32(hdr + 1, (uint32_t)(4 + an + bn + 1));
    stream_write(&sv->s, hdr, 5);
    stream_write(&sv->s, a, an);
    if (bn)
        stream_write(&sv->s, b, bn);
    stream_write(&sv->s, "", 1);
}

/* Makes room on sv for one more statement: Close the least recently used. */
static void make_room(struct client *c, struct server *sv)
{
    int max = max_prepared();
    while (max > 0 && prepared_set_count(sv->ps) >= max) {
        uint64_t h = prepared_set_evict(sv->ps);
        if (!h)
            break;
        char nm[24];
        server_name(h, nm);
        size_t nl = strlen(nm) + 1;
        uint8_t m[6 + 24];
        m[0] = 'C';
        proto_put32(m + 1, (uint32_t)(4 + 1 + nl));
        m[5] = 'S';
        memcpy(m + 6, nm, nl);
        stream_write(&sv->s, m, 6 + nl);
        struct request_entry e = entry(RA_ONE, PT_INJ_CLOSE, RE_SWALLOW);
        request_push(c, &e);
    }
}

/* Prepares st on c's server if it is not there. simple: the client sends
 * a simple Query next (a Sync may follow sluice's Parse). Returns false
 * when it cannot be done here (the caller passes the message on). */
static bool ensure_prepared(struct client *c, struct stmt *st, bool simple)
{
    struct server *sv = c->server;
    if (prepared_set_has(sv->ps, st->h))
        return true;
    if (st->kind == SK_SQL && in_batch(c))
        return false; /* a Query inside an extended-protocol batch would end it */
    make_room(c, sv);
    prepared_set_add(&sv->ps, st->h);
    struct request_entry e;
    if (st->kind == SK_PROTO) {
        write_parse(sv, st, simple);
        e = simple ? entry(RA_QUERY, PT_SKIP, RE_SWALLOW)
                   : entry(RA_ONE, PT_INJ_PARSE, RE_SWALLOW_OK);
    } else {
        char pre[32];
        char nm[24];
        server_name(st->h, nm);
        int k = snprintf(pre, sizeof(pre), "PREPARE %s", nm);
        write_query(sv, pre, (size_t)k, (const char *)st->body, st->body_len);
        count_server_parse(sv);
        e = entry(RA_QUERY, PT_SKIP, RE_SWALLOW);
    }
    e.u = st->h;
    request_push(c, &e);
    return true;
}

/* Answers the current message (consumed) with an error made by sluice,
 * with the server's cooperation: a message sure to fail puts the server
 * into the same state (transaction aborted, skipping to Sync) and its
 * error is replaced by ours. */
static void send_failure(struct client *c, struct request_msg *rm, bool simple,
                         const char *sqlstate, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void send_failure(struct client *c, struct request_msg *rm, bool simple,
                         const char *sqlstate, const char *fmt, ...)
{
    char msg[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    struct server *sv = c->server;
    struct set_action *a = act_new();
    a->fail_state = sqlstate;
    a->fail_msg = strdup(msg);
    if (simple) {
        static const char q[] = "EXECUTE sl_sluice_no_such_statement";
        write_query(sv, q, sizeof(q) - 1, NULL, 0);
        rm->entry = entry(RA_QUERY, PT_QUERY_X, 0);
    } else {
        uint8_t m[64];
        struct proto_writer wr;
        proto_writer_init(&wr, m, sizeof(m));
        proto_begin(&wr, 'B');
        proto_add_string(&wr, "");
        proto_add_string(&wr, "sl_sluice_no_such_statement");
        proto_add16(&wr, 0);
        proto_add16(&wr, 0);
        proto_add16(&wr, 0);
        proto_end(&wr);
        stream_write(&sv->s, m, wr.len);
        rm->entry = entry(RA_ONE, PT_FAIL, 0);
    }
    rm->entry.p[1] = a;
}

/* The set_action for a statement list, or NULL if nothing is remembered. */
static struct set_action *settings_of(struct client *c, const char *sql,
                                      const struct classify_result *cr)
{
    struct set_action *a = NULL;
    for (int i = 0; i < cr->n; i++) {
        const struct classify_stmt *s = &cr->stmts[i];
        if (s->kind != CS_SET && s->kind != CS_RESET && s->kind != CS_RESET_ALL)
            continue;
        if ((s->kind == CS_SET || s->kind == CS_RESET) && tracked_param_lookup(s->name) >= 0)
            continue; /* reported by the server (ParameterStatus) and tracked as such */
        if (!strcmp(s->name, "role") || !strcmp(s->name, "session_authorization")) {
            /* RESET ALL leaves these alone: replaying them cannot undo
             * them for the next client of the server. */
            if (s->kind == CS_SET)
                pin(c, "SET ROLE / SESSION AUTHORIZATION");
            continue;
        }
        if (!a)
            a = act_new();
        if (s->kind == CS_RESET_ALL) {
            a->reset_all = true;
            for (int k = 0; k < a->n; k++) {
                param_unref(a->set[k].name);
                param_unref(a->set[k].stmt);
            }
            a->n = 0;
            continue;
        }
        const char *name = param_intern(s->name);
        const char *text = NULL;
        if (s->kind == CS_SET) {
            char *t = xmalloc(s->len + 1);
            memcpy(t, sql + s->off, s->len);
            t[s->len] = '\0';
            text = param_intern(t);
            free(t);
        }
        int k;
        for (k = 0; k < a->n; k++)
            if (a->set[k].name == name)
                break;
        if (k < a->n) {
            param_unref(name); /* already held by the entry */
            param_take(&a->set[k].stmt, text);
        } else if (k < CLASSIFY_MAX_STMTS) {
            a->set[k].name = name;
            a->set[k].stmt = text;
            a->n++;
        } else {
            param_unref(name);
            param_unref(text);
        }
    }
    return a;
}

static bool is_ps_stmt(enum classify_stmt_kind k)
{
    return k == CS_PREPARE || k == CS_EXECUTE || k == CS_DEALLOCATE || k == CS_DEALLOCATE_ALL ||
           k == CS_DISCARD_ALL;
}

/* The message's own entry: a Query with a set_action (or a plain one). */
static void query_entry(struct request_msg *rm, struct set_action *a)
{
    if (!a)
        return;
    rm->entry = entry(RA_QUERY, PT_QUERY_X, 0);
    rm->entry.p[1] = a;
}

/* Answers a consumed Query with tag alone: an empty query keeps the
 * server's order and gives the ReadyForQuery (or sql, when the server must
 * do something: RESET ALL for DISCARD ALL). */
static void answer_query(struct client *c, struct request_msg *rm, struct set_action *a,
                         const char *tag, const char *sql)
{
    a->retag = tag;
    write_query(c->server, sql, strlen(sql), NULL, 0);
    query_entry(rm, a);
}

/* PREPARE name AS ...: prepared under its server name (or known there
 * already), answered as the client's PREPARE. */
static int64_t query_prepare(struct client *c, struct request_msg *rm, const char *sql,
                             const struct classify_stmt *s)
{
    struct prepared_client *pc = pc_get(c);
    struct server *sv = c->server;
    if (tab_find(pc, s->name)) {
        request_msg_consume(c, rm);
        send_failure(c, rm, true, "42P05", "prepared statement \"%s\" already exists", s->name);
        return 0;
    }
    size_t rest_off = s->name_off + s->name_len;
    size_t end = s->off + s->len;
    if (!s->name_len || rest_off > end)
        return rm->len;
    struct stmt *st = stmt_new(SK_SQL, s->name, sql + rest_off, end - rest_off);
    tab_add(pc, st);
    count_client(c, false);
    struct set_action *a = act_new();
    request_msg_consume(c, rm);
    if (prepared_set_has(sv->ps, st->h)) {
        answer_query(c, rm, a, "PREPARE", "");
    } else {
        make_room(c, sv);
        prepared_set_add(&sv->ps, st->h);
        a->undo = stmt_ref(st);
        char pre[32], nm[24];
        server_name(st->h, nm);
        int k = snprintf(pre, sizeof(pre), "PREPARE %s", nm);
        write_query(sv, pre, (size_t)k, (const char *)st->body, st->body_len);
        count_server_parse(sv);
        query_entry(rm, a);
    }
    stmt_unref(st);
    return 0;
}

/* SQL-level prepared statements of an unpinned client (one statement,
 * alone in its Query), with server-wide names. */
static int64_t query_prepared_stmt(struct client *c, struct request_msg *rm, const char *sql,
                                   size_t len, const struct classify_stmt *s)
{
    struct prepared_client *pc = pc_get(c);
    struct stmt *st;
    switch (s->kind) {
    case CS_PREPARE:
        return query_prepare(c, rm, sql, s);
    case CS_EXECUTE: {
        st = tab_find(pc, s->name);
        if (!st || !s->name_len)
            return rm->len; /* the server's error names it right */
        request_msg_consume(c, rm);
        count_client(c, true);
        ensure_prepared(c, st, true);
        char nm[24], pre[40];
        server_name(st->h, nm);
        int k = snprintf(pre, sizeof(pre), "EXECUTE %s", nm);
        size_t rest_off = s->name_off + s->name_len;
        write_query(c->server, pre, (size_t)k, sql + rest_off, len - rest_off);
        return 0;
    }
    case CS_DEALLOCATE:
        st = tab_find(pc, s->name);
        if (!st)
            return rm->len;
        tab_remove(pc, st);
        request_msg_consume(c, rm);
        answer_query(c, rm, act_new(), "DEALLOCATE", "");
        return 0;
    case CS_DEALLOCATE_ALL:
    case CS_DISCARD_ALL: {
        /* Only this client's view: other clients' statements stay on the
         * server. DISCARD ALL's other effects (settings) are RESET ALL here:
         * an unpinned client has no temporary tables or cursors, and its
         * LISTENs are listen.c's (which saw the DISCARD ALL too). */
        tab_clear(pc);
        request_msg_consume(c, rm);
        struct set_action *a = act_new();
        if (s->kind == CS_DISCARD_ALL) {
            a->discard_all = true;
            answer_query(c, rm, a, "DISCARD ALL", "RESET ALL");
        } else {
            answer_query(c, rm, a, "DEALLOCATE ALL", "");
        }
        return 0;
    }
    default:
        return rm->len;
    }
}

/* A query the pre-classifier flagged: its full parse says what it does to
 * the session. */
static int64_t query_parsed(struct client *c, struct request_msg *rm, const char *sql, size_t len,
                            const struct classify_result *cr)
{
    int n_ps = 0;
    for (int i = 0; i < cr->n; i++) {
        if (cr->stmts[i].kind == CS_PIN || cr->stmts[i].kind == CS_LISTEN)
            pin(c, cr->stmts[i].reason);
        if (is_ps_stmt(cr->stmts[i].kind))
            n_ps++;
    }
    const struct classify_stmt *s = &cr->stmts[0];
    bool handle_ps = n_ps > 0 && cr->n == 1 && !c->pinned && max_prepared() > 0 && !in_batch(c);
    if (handle_ps)
        return query_prepared_stmt(c, rm, sql, len, s);
    if (n_ps > 0 && !c->pinned && s->kind != CS_DISCARD_ALL)
        pin(c, max_prepared() <= 0
                   ? "SQL-level prepared statements with max_prepared_statements = 0"
                   : "SQL-level prepared statements in a multi-statement query");
    struct set_action *a = settings_of(c, sql, cr);
    if (n_ps && cr->n == 1 && (s->kind == CS_DISCARD_ALL || s->kind == CS_DEALLOCATE_ALL)) {
        /* Pinned client: the server really discards. */
        if (s->kind == CS_DISCARD_ALL) {
            if (!a)
                a = act_new();
            a->discard_all = true;
        }
        tab_clear(c->ps);
        prepared_set_clear(&c->server->ps);
    }
    query_entry(rm, a);
    return rm->len;
}

/* A simple Query. */
static int64_t client_query(struct client *c, struct request_msg *rm)
{
    enum classify_kw kw;
    if (!request_msg_keyword(c, rm, &kw))
        return REQUEST_WAIT;
    if (classify_kw_plain(kw))
        return rm->len;
    if (kw == CK_ADVISORY) {
        pin(c, "session advisory lock");
        return rm->len;
    }
    const char *sql;
    size_t len;
    const struct classify_result *cr;
    if (!request_msg_parse(c, rm, &sql, &len, &cr))
        return REQUEST_WAIT;
    if (!cr)
        return rm->len; /* malformed or unparsable: the server says so */
    if (cr->truncated) {
        pin(c, "too many statements in one query");
        return rm->len;
    }
    return query_parsed(c, rm, sql, len, cr);
}

/* Reads a C string at p within [p, end); NULL if unterminated. */
static const char *cstr(const uint8_t *p, const uint8_t *end)
{
    const uint8_t *z = memchr(p, 0, (size_t)(end - p));
    return z ? (const char *)p : NULL;
}

/* The session effects of a statement's text (a Parse): pins, settings. */
static struct set_action *parse_effects(struct client *c, const char *query, size_t qlen,
                                        enum classify_kw kw)
{
    if (kw == CK_ADVISORY) {
        pin(c, "session advisory lock");
        return NULL;
    }
    struct classify_result cr;
    if (classify_kw_plain(kw) || !classify_parse(query, qlen, &cr))
        return NULL;
    for (int i = 0; i < cr.n; i++) {
        if (cr.stmts[i].kind == CS_PIN || cr.stmts[i].kind == CS_LISTEN)
            pin(c, cr.stmts[i].reason);
        else if (is_ps_stmt(cr.stmts[i].kind))
            pin(c, "SQL-level prepared statements through the extended protocol");
    }
    return settings_of(c, query, &cr);
}

static int64_t client_parse(struct client *c, struct request_msg *rm)
{
    uint32_t mlen = rm->len;
    if (!request_msg_need(c, rm, mlen))
        return REQUEST_WAIT;
    struct iobuf *b = c->s.rbuf;
    const uint8_t *msg = b->data + b->start, *end = msg + mlen;
    const char *name = cstr(msg + 5, end);
    const char *query = name ? cstr((const uint8_t *)name + strlen(name) + 1, end) : NULL;
    if (!name || !query)
        return mlen;
    size_t qlen = strlen(query);
    enum classify_kw kw = classify_peek(query, qlen);
    request_note_parse(rm, !name[0], kw);
    struct set_action *act = parse_effects(c, query, qlen, kw);
    if (!name[0] || max_prepared() <= 0 || c->pinned) {
        if (c->ps || act) {
            struct prepared_client *pc = pc_get(c);
            if (!name[0]) {
                act_unref(pc->unnamed_act);
                pc->unnamed_act = act;
                act = NULL;
            }
        }
        act_unref(act);
        return mlen;
    }
    struct prepared_client *pc = pc_get(c);
    if (tab_find(pc, name)) {
        act_unref(act);
        char nm[64];
        snprintf(nm, sizeof(nm), "%s", name);
        request_msg_consume(c, rm);
        send_failure(c, rm, false, "42P05", "prepared statement \"%s\" already exists", nm);
        return 0;
    }
    const uint8_t *body = (const uint8_t *)query;
    struct stmt *st = stmt_new(SK_PROTO, name, body, (size_t)(end - body));
    st->act = act;
    tab_add(pc, st);
    count_client(c, false);
    struct server *sv = c->server;
    request_msg_consume(c, rm);
    if (prepared_set_has(sv->ps, st->h)) {
        rm->entry = entry(RA_SYNTH, PT_SYNTH, 0);
        rm->entry.synth = '1';
        rm->entry.p[0] = st; /* takes our reference */
        return 0;
    }
    make_room(c, sv);
    prepared_set_add(&sv->ps, st->h);
    write_parse(sv, st, false);
    rm->entry = entry(RA_ONE, PT_PARSE, 0);
    rm->entry.p[0] = st; /* takes our reference */
    return 0;
}

/* Bind's portal and statement names, however long: the bytes of the
 * message up to the end of the statement name, buffered as they come (the
 * parameters after them are not). False with *wait when more must come; false
 * without it for a malformed message (the server says so). */
static bool bind_names(struct client *c, struct request_msg *rm, const char **portal,
                       const char **name, bool *wait)
{
    uint32_t mlen = rm->len;
    struct iobuf *b = c->s.rbuf;
    uint32_t have = iobuf_len(b) < mlen ? iobuf_len(b) : mlen;
    const uint8_t *msg = b->data + b->start, *end = msg + have;
    *wait = false;
    *portal = have > 5 ? cstr(msg + 5, end) : NULL;
    *name = *portal ? cstr((const uint8_t *)*portal + strlen(*portal) + 1, end) : NULL;
    if (*name)
        return true;
    if (have >= mlen)
        return false;
    /* Not there yet: wait for twice as much (the buffer grows geometrically). */
    uint32_t want = have < 512 ? 1024 : 2 * have;
    (void)request_msg_need(c, rm, want < mlen ? want : mlen); /* false: want > have */
    *wait = true;
    return false;
}

/* Writes Bind's new head (type, length, portal, server's name) to sv. */
static void write_bind_head(struct server *sv, uint32_t len, const char *portal, size_t pl,
                            const char *nm, size_t nl)
{
    uint8_t hdr[5 + 64 + 24];
    hdr[0] = 'B';
    proto_put32(hdr + 1, len);
    if (pl <= 64) {
        memcpy(hdr + 5, portal, pl);
        memcpy(hdr + 5 + pl, nm, nl);
        stream_write(&sv->s, hdr, 5 + pl + nl);
        return;
    }
    stream_write(&sv->s, hdr, 5);
    stream_write(&sv->s, portal, pl);
    stream_write(&sv->s, nm, nl);
}

/* Bind: the statement name, renamed. */
static int64_t client_bind(struct client *c, struct request_msg *rm)
{
    uint32_t mlen = rm->len;
    const char *portal, *name;
    bool wait;
    if (!bind_names(c, rm, &portal, &name, &wait))
        return wait ? REQUEST_WAIT : (int64_t)mlen;
    request_note_run(rm, !name[0]);
    struct prepared_client *pc = c->ps;
    struct stmt *st = name[0] ? tab_find(pc, name) : NULL;
    if (pc) {
        act_unref(pc->portal_act);
        pc->portal_act = act_ref(name[0] ? (st ? st->act : NULL) : pc->unnamed_act);
    }
    /* Unnamed or unknown: forwarded as is, in the same write as the
     * messages around it (no flush: that would cost a send()). */
    if (!st)
        return mlen;
    count_client(c, true);
    request_msg_flush(c, rm); /* sluice's Parse, if any, goes after what came before */
    if (!ensure_prepared(c, st, false))
        return mlen;
    char nm[24];
    server_name(st->h, nm);
    size_t pl = strlen(portal) + 1, nl = strlen(nm) + 1;
    uint32_t old_prefix = (uint32_t)(5 + pl + strlen(name) + 1);
    write_bind_head(c->server, (uint32_t)(mlen - old_prefix + 4 + pl + nl), portal, pl, nm, nl);
    struct iobuf *b = c->s.rbuf;
    b->start += old_prefix;
    *rm->fwd = b->start;
    return mlen - old_prefix;
}

/* Describe of a named statement: renamed, prepared first if needed. */
static int64_t describe_stmt(struct client *c, struct request_msg *rm, struct stmt *st)
{
    request_msg_flush(c, rm);
    if (!ensure_prepared(c, st, false))
        return rm->len;
    request_msg_consume(c, rm);
    char nm[24];
    server_name(st->h, nm);
    size_t nl = strlen(nm) + 1;
    uint8_t m[6 + 24];
    m[0] = 'D';
    proto_put32(m + 1, (uint32_t)(4 + 1 + nl));
    m[5] = 'S';
    memcpy(m + 6, nm, nl);
    stream_write(&c->server->s, m, 6 + nl);
    return 0;
}

static int64_t client_describe_close(struct client *c, struct request_msg *rm)
{
    uint32_t mlen = rm->len;
    /* Whole, however long (up to max_packet_size): a name sluice renames is
     * never sent on as the client wrote it. */
    if (!request_msg_need(c, rm, mlen))
        return REQUEST_WAIT;
    struct iobuf *b = c->s.rbuf;
    const uint8_t *msg = b->data + b->start, *end = msg + mlen;
    char what = mlen > 5 ? (char)msg[5] : 0;
    const char *name = mlen > 6 ? cstr(msg + 6, end) : NULL;
    if (!name || what != 'S')
        return mlen;
    struct prepared_client *pc = c->ps;
    struct stmt *st = name[0] ? tab_find(pc, name) : NULL;
    if (rm->type == 'D')
        return st ? describe_stmt(c, rm, st) : mlen;
    /* Close of a named statement: sluice answers; the server keeps the
     * statement for other clients. Closing an unknown name is no error. */
    if (!name[0] || max_prepared() <= 0 || c->pinned)
        return mlen;
    request_msg_consume(c, rm);
    rm->entry = entry(RA_SYNTH, PT_SYNTH, 0);
    rm->entry.synth = '3';
    rm->entry.p[0] = stmt_ref(st);
    if (st)
        tab_remove(c->ps, st);
    return 0;
}

static int64_t prepared_on_client_msg(struct client *c, struct request_msg *rm)
{
    switch (rm->type) {
    case 'Q':
        return client_query(c, rm);
    case 'P':
        return client_parse(c, rm);
    case 'B':
        return client_bind(c, rm);
    case 'D':
    case 'C':
        return client_describe_close(c, rm);
    case 'E':
        if (!request_note_execute(c, rm))
            return REQUEST_WAIT;
        if (c->ps && c->ps->portal_act) {
            rm->entry = entry(RA_EXECUTE, PT_EXEC_X, 0);
            rm->entry.p[1] = act_ref(c->ps->portal_act);
        }
        return rm->len;
    default:
        return rm->len; /* Sync, Flush, FunctionCall, COPY: nothing to rewrite */
    }
}

/* ---- server side ------------------------------------------------------------------- */

static void known_add(struct pool *p, uint64_t h);

/* A Query with a set_action answered: errors and completion tags replaced
 * where sluice answers, settings remembered at the end. */
static unsigned query_x_msg(struct client *c, struct server *sv, struct request_entry *e,
                            const struct stream_msg *m)
{
    struct set_action *a = e->p[1];
    if (m->type == 'E') {
        a->failed = true;
        if (!a->fail_msg)
            return REQUEST_PASS;
        out_error(c, a->fail_state, a->fail_msg);
        return REQUEST_SWALLOW | REQUEST_EMIT;
    }
    if (a->retag && (m->type == 'I' || m->type == 'C')) {
        out_complete(c, a->retag);
        return REQUEST_SWALLOW | REQUEST_EMIT;
    }
    if (m->type == 'Z') {
        char st = m->len >= 6 ? (char)m->data[5] : 'I';
        if (a->failed && a->undo) {
            tab_remove(c->ps, a->undo);
            prepared_set_remove(sv->ps, a->undo->h);
        }
        act_apply(c, a, st);
        if (a->undo) {
            stmt_unref(a->undo);
            a->undo = NULL;
        }
    }
    return REQUEST_PASS;
}

static unsigned prepared_on_server_msg(struct client *c, struct server *sv, struct request_entry *e,
                                       const struct stream_msg *m, bool done)
{
    struct stmt *st = e->p[0];
    switch ((enum prepared_tag)e->tag) {
    case PT_PARSE:
        if (m->type == 'E') {
            tab_remove(c->ps, st);
            prepared_set_remove(sv->ps, st->h);
        } else if (m->type == '1') {
            known_add(sv->pool, st->h);
        }
        return REQUEST_PASS;
    case PT_INJ_PARSE:
    case PT_SKIP:
        /* Its error reaches the client in place of its Bind's answer. */
        if (m->type == 'E')
            prepared_set_remove(sv->ps, e->u);
        return REQUEST_PASS;
    case PT_FAIL:
        if (m->type != 'E')
            return REQUEST_PASS;
        struct set_action *a = e->p[1];
        out_error(c, a->fail_state, a->fail_msg);
        return REQUEST_SWALLOW | REQUEST_EMIT;
    case PT_QUERY_X:
        return query_x_msg(c, sv, e, m);
    case PT_EXEC_X:
        if (done && m->type == 'C')
            act_apply(c, e->p[1], sv->xact_status);
        return REQUEST_PASS;
    case PT_INJ_CLOSE:
    case PT_SYNTH:
        break;
    }
    return REQUEST_PASS;
}

/* An entry the server will never answer (it skips to Sync after an error):
 * undo what sluice assumed when it sent the message. */
static void prepared_on_dropped(struct client *c, struct request_entry *e)
{
    struct prepared_client *pc = c->ps;
    struct server *sv = c->server;
    struct stmt *st = e->p[0];
    struct set_action *a = e->p[1];
    switch ((enum prepared_tag)e->tag) {
    case PT_PARSE:
        tab_remove(pc, st);
        if (sv)
            prepared_set_remove(sv->ps, st->h);
        break;
    case PT_INJ_PARSE:
    case PT_SKIP:
        if (sv && e->u)
            prepared_set_remove(sv->ps, e->u);
        break;
    case PT_SYNTH:
        /* The client's Parse or Close would have been skipped too. */
        if (st && e->synth == '1')
            tab_remove(pc, st);
        else if (st && e->synth == '3' && !st->in_table && !tab_find(pc, st->name))
            tab_add(pc, st);
        break;
    case PT_QUERY_X:
        if (a && a->undo)
            tab_remove(pc, a->undo);
        break;
    default:
        break;
    }
}

static void prepared_on_release(struct request_entry *e)
{
    stmt_unref(e->p[0]);
    act_unref(e->p[1]);
}

/* ---- answering idle clients ---------------------------------------------------------- */

/* Statements that some server of the pool parsed without error, so that a
 * client's Parse of the same text can be answered before it has a server. */
#define KNOWN_MAX 4096

static void known_add(struct pool *p, uint64_t h)
{
    /* Shared by the pool's servers on every worker. */
    pool_lock();
    if (prepared_set_count(p->ps_known) >= KNOWN_MAX)
        prepared_set_evict(p->ps_known);
    prepared_set_add(&p->ps_known, h);
    pool_unlock();
}

/* Checks one message at msg of an idle client's batch: a Parse of a known
 * statement under a new name, or a Close of a statement. */
static bool idle_ok(struct client *c, const uint8_t *msg, uint32_t mlen)
{
    const uint8_t *end = msg + mlen;
    if (msg[0] == 'C') {
        const char *name = mlen > 6 && msg[5] == 'S' ? cstr(msg + 6, end) : NULL;
        return name && name[0];
    }
    const char *name = cstr(msg + 5, end);
    const char *query = name ? cstr((const uint8_t *)name + strlen(name) + 1, end) : NULL;
    if (!name || !query || !name[0] || tab_find(c->ps, name))
        return false;
    if (!classify_kw_plain(classify_peek(query, strlen(query))))
        return false;
    struct stmt *st = stmt_new(SK_PROTO, name, query, (size_t)(end - (const uint8_t *)query));
    pool_lock();
    bool ok = prepared_set_has(c->pool->ps_known, st->h);
    pool_unlock();
    stmt_unref(st);
    return ok;
}

bool prepared_idle(struct client *c)
{
    if (max_prepared() <= 0 || c->pinned || !c->pool || !prepared_tracking(c->pool))
        return false;
    /* Pass 1: the batch must be whole, answerable messages up to a Sync. */
    uint32_t off = 0, n_msgs = 0;
    struct stream_msg m;
    for (;;) {
        if (stream_msg_at(&c->s, off, &m) != STREAM_MSG_OK)
            return false;
        if (m.type == 'S')
            break;
        if ((m.type != 'P' && m.type != 'C') || !idle_ok(c, m.data, m.len))
            return false;
        off += m.len;
        n_msgs++;
    }
    /* Pass 2: do it, and answer all at once: a '1' or '3' (5 bytes) per
     * message, then ReadyForQuery. */
    struct prepared_client *pc = pc_get(c);
    uint8_t *out = xmalloc((size_t)n_msgs * 5 + 6);
    size_t olen = 0;
    while (stream_msg_at(&c->s, 0, &m) == STREAM_MSG_OK && m.type != 'S') {
        const uint8_t *end = m.data + m.len;
        if (m.type == 'P') {
            const char *name = cstr(m.data + 5, end);
            const char *query = name + strlen(name) + 1;
            struct stmt *st =
                stmt_new(SK_PROTO, name, query, (size_t)(end - (const uint8_t *)query));
            if (!tab_find(pc, name)) {
                tab_add(pc, st);
                count_client(c, false);
            }
            stmt_unref(st);
        } else {
            struct stmt *st = tab_find(pc, (const char *)m.data + 6);
            if (st)
                tab_remove(pc, st);
        }
        uint8_t done[5] = {m.type == 'P' ? '1' : '3', 0, 0, 0, 4};
        memcpy(out + olen, done, 5);
        olen += 5;
        stream_consume_msg(&c->s, m.len);
    }
    stream_consume_msg(&c->s, m.len); /* the Sync */
    uint8_t z[6] = {'Z', 0, 0, 0, 5, 'I'};
    memcpy(out + olen, z, sizeof(z));
    stream_write(&c->s, out, olen + sizeof(z));
    free(out);
    c->last_activity = worker_now(c->s.worker);
    return true;
}

/* ---- lifecycle ------------------------------------------------------------------- */

void prepared_client_free(struct client *c)
{
    struct prepared_client *pc = c->ps;
    if (!pc)
        return;
    tab_clear(pc);
    act_unref(pc->unnamed_act);
    act_unref(pc->portal_act);
    free(pc->tab);
    settings_clear(&pc->settings);
    free(pc->settings.v);
    free(pc);
    c->ps = NULL;
}

static const struct request_observer prepared_observer = {
    .name = "prepared",
    .tracked_only = true,
    .client_msgs = "QPBDCE",
    .on_client_msg = prepared_on_client_msg,
    .on_server_msg = prepared_on_server_msg,
    .on_dropped = prepared_on_dropped,
    .on_release = prepared_on_release,
    .on_client_free = prepared_client_free,
};

void prepared_init(void)
{
    prepared_owner = request_observe(&prepared_observer);
}
