/* prepared.c - prepared statements, session settings and pinning under
 * transaction pooling.
 *
 * The response queue. Each request a tracked client sends that the server
 * answers gets an entry: most are plain (what ends its answer), some carry
 * an action (rewrite undo, swallow, answer). The server's messages are
 * matched against the head entry. Entries that sluice answers itself sit in
 * the queue at their place, and their answers are written to the client
 * when everything before them has been answered. After an ErrorResponse in
 * the extended protocol the server skips everything up to Sync, so entries
 * before the next Sync entry are then dropped (and their effects undone).
 *
 * A client without any statement or setting of its own keeps its queue in
 * a small inline ring (struct client, no allocation); the first entry with
 * an action, or a long pipeline, moves it into struct prepared_client.
 *
 * Server-side names and each server's set of statements are in
 * prepared_set.c.
 */
#include "prepared.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "classify.h"
#include "client_conn.h"
#include "listen.h"
#include "log.h"
#include "pool.h"
#include "prepared_settings.h"
#include "proto.h"
#include "server.h"
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

/* Response queue entries. */
enum rq_kind {
    RQ_ONE = 0, /* Parse/Bind/Close/Describe portal: one answer */
    RQ_DESC_S,  /* Describe statement: ParameterDescription, then one more */
    RQ_EXEC,    /* Execute: rows, then CommandComplete/Empty/Suspended */
    RQ_SYNC,    /* Sync: ReadyForQuery */
    RQ_QUERY,   /* Query, FunctionCall: everything up to ReadyForQuery */
    /* Only in the allocated queue (they carry data): */
    RQ_PARSE,     /* client's Parse, renamed: undo the statement on error */
    RQ_INJ_PARSE, /* sluice's Parse: swallow ParseComplete */
    RQ_INJ_CLOSE, /* sluice's Close (eviction): swallow CloseComplete */
    RQ_SYNTH,     /* sluice answers: ParseComplete/CloseComplete */
    RQ_FAIL,      /* a failing message: its error is replaced by ours */
    RQ_SKIP_Z,    /* sluice's Query (or Parse+Sync): swallow through ReadyForQuery */
    RQ_QUERY_X,   /* Query with a set_action */
    RQ_EXEC_X,    /* Execute with a set_action (SET through the extended protocol) */
};

struct rq_entry {
    uint8_t kind;
    uint8_t synth; /* RQ_SYNTH: '1' or '3'; RQ_SYNTH of a Close: restore the stmt if dropped */
    uint64_t h;    /* RQ_INJ_PARSE, RQ_SKIP_Z: the server statement */
    struct stmt *st;
    struct set_action *act;
};

struct prepared_client {
    struct rq_entry *q;
    uint32_t q_cap, q_head, q_n;
    struct stmt **tab;
    uint32_t tab_cap, tab_n;
    struct set_action *unnamed_act; /* action of the unnamed statement */
    struct set_action *portal_act;  /* action of the statement last bound */
    struct setting_list settings;   /* session SETs to replay on the next server */
    bool emit_first;                /* out goes before the next server message */
    uint8_t *out;                   /* answers made by sluice, to write at the next emit */
    size_t out_len, out_cap;
};

static void *xmalloc(size_t n)
{
    void *p = malloc(n);
    if (!p)
        abort();
    return p;
}

static struct prepared_client *pc_get(struct client *c)
{
    if (c->ps)
        return c->ps;
    struct prepared_client *pc = calloc(1, sizeof(*pc));
    if (!pc)
        abort();
    pc->q_cap = 32;
    pc->q = calloc(pc->q_cap, sizeof(*pc->q));
    if (!pc->q)
        abort();
    /* Move the inline ring over. */
    for (uint32_t i = 0; i < c->rq_n; i++)
        pc->q[i].kind = c->rq[(c->rq_head + i) % sizeof(c->rq)];
    pc->q_n = c->rq_n;
    c->rq_n = c->rq_head = 0;
    c->ps = pc;
    return pc;
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

static uint32_t name_hash(const char *name)
{
    uint32_t h = 2166136261u;
    for (; *name; name++)
        h = (h ^ (uint8_t)*name) * 16777619u;
    return h;
}

static struct stmt *tab_find(struct prepared_client *pc, const char *name)
{
    if (!pc || !pc->tab_cap)
        return NULL;
    for (struct stmt *st = pc->tab[name_hash(name) & (pc->tab_cap - 1)]; st; st = st->next)
        if (!strcmp(st->name, name))
            return st;
    return NULL;
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
                uint32_t k = name_hash(s->name) & (ncap - 1);
                s->next = nt[k];
                nt[k] = s;
                s = next;
            }
        }
        free(pc->tab);
        pc->tab = nt;
        pc->tab_cap = ncap;
    }
    uint32_t k = name_hash(st->name) & (pc->tab_cap - 1);
    st->next = pc->tab[k];
    pc->tab[k] = stmt_ref(st);
    st->in_table = true;
    pc->tab_n++;
}

static void tab_remove(struct prepared_client *pc, struct stmt *st)
{
    if (!st->in_table)
        return;
    struct stmt **pp = &pc->tab[name_hash(st->name) & (pc->tab_cap - 1)];
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

/* ---- the queue ------------------------------------------------------------------ */

static bool rq_empty(const struct client *c)
{
    return c->ps ? c->ps->q_n == 0 : c->rq_n == 0;
}

static struct rq_entry *rq_head(struct client *c, struct rq_entry *tmp)
{
    if (c->ps)
        return c->ps->q_n ? &c->ps->q[c->ps->q_head] : NULL;
    if (!c->rq_n)
        return NULL;
    memset(tmp, 0, sizeof(*tmp));
    tmp->kind = c->rq[c->rq_head];
    return tmp;
}

static void rq_pop(struct client *c)
{
    struct prepared_client *pc = c->ps;
    if (pc) {
        struct rq_entry *e = &pc->q[pc->q_head];
        stmt_unref(e->st);
        act_unref(e->act);
        memset(e, 0, sizeof(*e));
        pc->q_head = (pc->q_head + 1) % pc->q_cap;
        pc->q_n--;
        return;
    }
    c->rq_head = (uint8_t)((c->rq_head + 1) % sizeof(c->rq));
    c->rq_n--;
}

static void out_add(struct prepared_client *pc, const void *p, size_t n)
{
    if (pc->out_len + n > pc->out_cap) {
        size_t ncap = pc->out_cap ? pc->out_cap * 2 : 256;
        while (ncap < pc->out_len + n)
            ncap *= 2;
        uint8_t *no = realloc(pc->out, ncap);
        if (!no)
            abort();
        pc->out = no;
        pc->out_cap = ncap;
    }
    memcpy(pc->out + pc->out_len, p, n);
    pc->out_len += n;
}

static void out_simple(struct prepared_client *pc, char type)
{
    uint8_t m[5] = {(uint8_t)type, 0, 0, 0, 4};
    out_add(pc, m, 5);
}

static void out_error(struct prepared_client *pc, const char *sqlstate, const char *msg)
{
    uint8_t buf[700];
    struct proto_writer wr;
    proto_writer_init(&wr, buf, sizeof(buf));
    proto_build_error(&wr, false, sqlstate, "%s", msg);
    out_add(pc, buf, wr.len);
}

static void out_complete(struct prepared_client *pc, const char *tag)
{
    uint8_t buf[128];
    struct proto_writer wr;
    proto_writer_init(&wr, buf, sizeof(buf));
    proto_build_command_complete(&wr, tag);
    out_add(pc, buf, wr.len);
}

void prepared_emit(struct client *c)
{
    struct prepared_client *pc = c->ps;
    if (!pc || !pc->out_len)
        return;
    stream_write(&c->s, pc->out, pc->out_len);
    pc->out_len = 0;
}

/* An entry the server will never answer (it skips to Sync after an error):
 * undo what sluice assumed when it sent the message. */
static void rq_undo(struct client *c, struct rq_entry *e)
{
    struct prepared_client *pc = c->ps;
    struct server *sv = c->server;
    switch (e->kind) {
    case RQ_PARSE:
        if (e->st) {
            tab_remove(pc, e->st);
            if (sv)
                prepared_set_remove(sv->ps, e->st->h);
        }
        break;
    case RQ_INJ_PARSE:
    case RQ_SKIP_Z:
        if (sv && e->h)
            prepared_set_remove(sv->ps, e->h);
        break;
    case RQ_SYNTH:
        /* The client's Parse or Close would have been skipped too. */
        if (e->st && e->synth == '1')
            tab_remove(pc, e->st);
        else if (e->st && e->synth == '3' && !e->st->in_table && !tab_find(pc, e->st->name))
            tab_add(pc, e->st);
        break;
    case RQ_QUERY_X:
        if (e->act && e->act->undo)
            tab_remove(pc, e->act->undo);
        break;
    default:
        break;
    }
}

/* Runs after the head changed: drops what the server skips, and makes the
 * answers of sluice's own entries that are now first. */
static unsigned rq_settle(struct client *c)
{
    unsigned r = 0;
    struct rq_entry tmp;
    for (;;) {
        struct rq_entry *e = rq_head(c, &tmp);
        if (!e)
            return r;
        if (c->errskip && e->kind != RQ_SYNC) {
            rq_undo(c, e);
            rq_pop(c);
            continue;
        }
        if (e->kind == RQ_SYNTH) {
            out_simple(c->ps, (char)e->synth);
            rq_pop(c);
            r |= PREPARED_EMIT;
            continue;
        }
        return r;
    }
}

/* Queues an entry (data entries move the queue to the allocated form). */
static void rq_push(struct client *c, const struct rq_entry *e)
{
    if (!c->ps && e->kind <= RQ_QUERY && !e->st && !e->act && c->rq_n < sizeof(c->rq)) {
        if (c->errskip && e->kind != RQ_SYNC && c->rq_n == 0)
            return; /* the server skips it: nothing will come */
        c->rq[(c->rq_head + c->rq_n) % sizeof(c->rq)] = e->kind;
        c->rq_n++;
        return;
    }
    struct prepared_client *pc = pc_get(c);
    if (pc->q_n == pc->q_cap) {
        uint32_t ncap = pc->q_cap * 2;
        struct rq_entry *nq = calloc(ncap, sizeof(*nq));
        if (!nq)
            abort();
        for (uint32_t i = 0; i < pc->q_n; i++)
            nq[i] = pc->q[(pc->q_head + i) % pc->q_cap];
        free(pc->q);
        pc->q = nq;
        pc->q_cap = ncap;
        pc->q_head = 0;
    }
    pc->q[(pc->q_head + pc->q_n) % pc->q_cap] = *e;
    pc->q_n++;
    if (pc->q_n == 1) {
        /* Nothing ahead of it: answer now (or drop it if the server is
         * skipping to Sync). */
        if (rq_settle(c) & PREPARED_EMIT)
            prepared_emit(c);
    }
}

static void rq_push_kind(struct client *c, enum rq_kind k)
{
    struct rq_entry e = {.kind = (uint8_t)k};
    rq_push(c, &e);
}

static void rq_clear(struct client *c)
{
    struct rq_entry tmp;
    while (rq_head(c, &tmp)) {
        struct rq_entry *e = rq_head(c, &tmp);
        rq_undo(c, e);
        rq_pop(c);
    }
    c->errskip = false;
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

bool prepared_tracking(const struct pool *p)
{
    return pool_mode_of(p) != POOL_MODE_SESSION;
}

/* Flushes the pending span of client bytes to the server. */
static void flush_span(struct client *c, uint32_t *fwd)
{
    struct iobuf *b = c->s.rbuf;
    /* A flush means the message is being rewritten in pieces: cork, so that
     * they leave in one send() when client_forward() uncorks. */
    stream_cork(&c->server->s);
    if (b->start > *fwd)
        stream_write(&c->server->s, b->data + *fwd, b->start - *fwd);
    *fwd = b->start;
}

/* Makes sure want bytes of the current message are in the buffer. */
static bool need(struct client *c, uint32_t want, uint32_t *fwd)
{
    struct iobuf *b = c->s.rbuf;
    if (iobuf_len(b) >= want)
        return true;
    if (b->start + want > b->cap) {
        flush_span(c, fwd);
        iobuf_reserve(&c->s.worker->bufs, &c->s.rbuf, want - iobuf_len(b));
        *fwd = c->s.rbuf->start;
    }
    return false;
}

/* Consumes the current message without forwarding it. */
static int64_t consume(struct client *c, uint32_t mlen, uint32_t *fwd)
{
    flush_span(c, fwd);
    c->s.rbuf->start += mlen;
    *fwd = c->s.rbuf->start;
    return 0;
}

static void pin(struct client *c, const char *why)
{
    if (c->pinned)
        return;
    c->pinned = true;
    if (c->server)
        c->server->close_needed = true; /* its state leaves with the client */
    log_info("C-%p: pinned to its server (%s)", (void *)c, why);
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
        struct rq_entry e = {.kind = RQ_INJ_CLOSE};
        rq_push(c, &e);
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
    if (st->kind == SK_SQL && c->unsynced)
        return false; /* a Query inside an extended-protocol batch would end it */
    make_room(c, sv);
    prepared_set_add(&sv->ps, st->h);
    if (st->kind == SK_PROTO) {
        write_parse(sv, st, simple);
        struct rq_entry e = {.kind = simple ? RQ_SKIP_Z : RQ_INJ_PARSE, .h = st->h};
        rq_push(c, &e);
    } else {
        char pre[32];
        char nm[24];
        server_name(st->h, nm);
        int k = snprintf(pre, sizeof(pre), "PREPARE %s", nm);
        write_query(sv, pre, (size_t)k, (const char *)st->body, st->body_len);
        struct rq_entry e = {.kind = RQ_SKIP_Z, .h = st->h};
        rq_push(c, &e);
    }
    return true;
}

/* Answers the current request with an error made by sluice, with the
 * server's cooperation: a message sure to fail puts the server into the
 * same state (transaction aborted, skipping to Sync) and its error is
 * replaced by ours. */
static void send_failure(struct client *c, bool simple, const char *sqlstate, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void send_failure(struct client *c, bool simple, const char *sqlstate, const char *fmt, ...)
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
        struct rq_entry e = {.kind = RQ_QUERY_X, .act = a};
        rq_push(c, &e);
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
        struct rq_entry e = {.kind = RQ_FAIL, .act = a};
        rq_push(c, &e);
    }
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

#define LISTEN_NOT_HANDLED INT64_MIN

/* LISTEN / UNLISTEN [*] alone in a Query, from an unpinned client whose
 * server is idle with nothing in flight: registered with listen.c and
 * answered by sluice (an empty query keeps the server's order and gives
 * the ReadyForQuery). Inside a transaction block, with other statements or
 * behind pipelined requests, LISTEN pins as before; UNLISTEN there also
 * leaves listen.c's channels and goes on to the server. */
static int64_t listen_query(struct client *c, const struct classify_result *cr, uint32_t mlen,
                            uint32_t *fwd)
{
    const struct classify_stmt *s = &cr->stmts[0];
    if (cr->n != 1 ||
        (s->kind != CS_LISTEN && s->kind != CS_UNLISTEN && s->kind != CS_UNLISTEN_ALL))
        return LISTEN_NOT_HANDLED;
    /* listen.c's listening connection serves one event loop: with several
     * workers LISTEN pins its client instead (docs/pooling.md). */
    if (g_pooler.n_workers > 1)
        return LISTEN_NOT_HANDLED;
    enum listen_op op = s->kind == CS_LISTEN     ? LISTEN_OP_LISTEN
                        : s->kind == CS_UNLISTEN ? LISTEN_OP_UNLISTEN
                                                 : LISTEN_OP_UNLISTEN_ALL;
    struct server *sv = c->server;
    if (c->pinned || c->rq_n != 0 || c->unsynced || sv->xact_status != 'I') {
        if (op != LISTEN_OP_LISTEN)
            listen_client_op(c, op, s->name);
        return LISTEN_NOT_HANDLED;
    }
    if (!listen_client_op(c, op, s->name))
        return PREPARED_WAIT; /* asked again once the listening server has it */
    pc_get(c);
    consume(c, mlen, fwd);
    struct set_action *a = act_new();
    a->retag = op == LISTEN_OP_LISTEN ? "LISTEN" : "UNLISTEN";
    write_query(sv, "", 0, NULL, 0);
    struct rq_entry e = {.kind = RQ_QUERY_X, .act = a};
    rq_push(c, &e);
    return 0;
}

static bool is_ps_stmt(enum classify_stmt_kind k)
{
    return k == CS_PREPARE || k == CS_EXECUTE || k == CS_DEALLOCATE || k == CS_DEALLOCATE_ALL ||
           k == CS_DISCARD_ALL;
}

/* A simple Query. */
static int64_t client_query(struct client *c, uint32_t mlen, uint32_t *fwd)
{
    struct iobuf *b = c->s.rbuf;
    uint32_t peek = mlen < 1024 ? mlen : 1024;
    if (!need(c, peek, fwd))
        return PREPARED_WAIT;
    b = c->s.rbuf;
    const char *sql = (const char *)b->data + b->start + 5;
    enum classify_kw kw = classify_peek(sql, peek - 5);
    if (kw == CK_OTHER) {
        rq_push_kind(c, RQ_QUERY);
        return mlen;
    }
    if (kw == CK_ADVISORY) {
        pin(c, "session advisory lock");
        rq_push_kind(c, RQ_QUERY);
        return mlen;
    }
    if (!need(c, mlen, fwd))
        return PREPARED_WAIT;
    b = c->s.rbuf;
    sql = (const char *)b->data + b->start + 5;
    size_t len = mlen - 5;
    if (len == 0 || sql[len - 1] != '\0') {
        rq_push_kind(c, RQ_QUERY); /* malformed: the server says so */
        return mlen;
    }
    len--;
    struct classify_result cr;
    if (!classify_parse(sql, len, &cr) || cr.truncated) {
        if (cr.truncated)
            pin(c, "too many statements in one query");
        rq_push_kind(c, RQ_QUERY);
        return mlen;
    }
    int64_t lr = listen_query(c, &cr, mlen, fwd);
    if (lr != LISTEN_NOT_HANDLED)
        return lr;
    int n_ps = 0;
    for (int i = 0; i < cr.n; i++) {
        if (cr.stmts[i].kind == CS_PIN || cr.stmts[i].kind == CS_LISTEN)
            pin(c, cr.stmts[i].reason);
        if (is_ps_stmt(cr.stmts[i].kind))
            n_ps++;
    }
    struct prepared_client *pc = c->ps;
    const struct classify_stmt *s = &cr.stmts[0];
    bool handle_ps = n_ps > 0 && cr.n == 1 && !c->pinned && max_prepared() > 0 && !c->unsynced;
    if (n_ps > 0 && !handle_ps && !c->pinned && s->kind != CS_DISCARD_ALL)
        pin(c, max_prepared() <= 0
                   ? "SQL-level prepared statements with max_prepared_statements = 0"
                   : "SQL-level prepared statements in a multi-statement query");
    if (!handle_ps) {
        struct set_action *a = settings_of(c, sql, &cr);
        if (n_ps && s->kind == CS_DISCARD_ALL && cr.n == 1) {
            /* Pinned (or untracked) client: the server really discards. */
            if (!a)
                a = act_new();
            a->discard_all = true;
            tab_clear(pc);
            prepared_set_clear(&c->server->ps);
        } else if (n_ps && s->kind == CS_DEALLOCATE_ALL && cr.n == 1) {
            tab_clear(pc);
            prepared_set_clear(&c->server->ps);
        }
        if (a) {
            struct rq_entry e = {.kind = RQ_QUERY_X, .act = a};
            rq_push(c, &e);
        } else {
            rq_push_kind(c, RQ_QUERY);
        }
        return mlen;
    }
    pc = pc_get(c);
    struct server *sv = c->server;
    switch (s->kind) {
    case CS_PREPARE: {
        if (tab_find(pc, s->name)) {
            consume(c, mlen, fwd);
            send_failure(c, true, "42P05", "prepared statement \"%s\" already exists", s->name);
            return 0;
        }
        size_t rest_off = s->name_off + s->name_len;
        size_t end = s->off + s->len;
        if (!s->name_len || rest_off > end) {
            rq_push_kind(c, RQ_QUERY);
            return mlen;
        }
        struct stmt *st = stmt_new(SK_SQL, s->name, sql + rest_off, end - rest_off);
        tab_add(pc, st);
        struct set_action *a = act_new();
        consume(c, mlen, fwd);
        if (prepared_set_has(sv->ps, st->h)) {
            a->retag = "PREPARE";
            write_query(sv, "", 0, NULL, 0);
        } else {
            make_room(c, sv);
            prepared_set_add(&sv->ps, st->h);
            a->undo = stmt_ref(st);
            char pre[32], nm[24];
            server_name(st->h, nm);
            int k = snprintf(pre, sizeof(pre), "PREPARE %s", nm);
            write_query(sv, pre, (size_t)k, (const char *)st->body, st->body_len);
        }
        struct rq_entry e = {.kind = RQ_QUERY_X, .act = a};
        rq_push(c, &e);
        stmt_unref(st);
        return 0;
    }
    case CS_EXECUTE: {
        struct stmt *st = tab_find(pc, s->name);
        if (!st || !s->name_len) {
            rq_push_kind(c, RQ_QUERY); /* the server's error names it right */
            return mlen;
        }
        consume(c, mlen, fwd);
        ensure_prepared(c, st, true);
        char nm[24];
        server_name(st->h, nm);
        char pre[40];
        int k = snprintf(pre, sizeof(pre), "EXECUTE %s", nm);
        size_t rest_off = s->name_off + s->name_len;
        write_query(sv, pre, (size_t)k, sql + rest_off, len - rest_off);
        rq_push_kind(c, RQ_QUERY);
        return 0;
    }
    case CS_DEALLOCATE: {
        struct stmt *st = tab_find(pc, s->name);
        if (!st) {
            rq_push_kind(c, RQ_QUERY);
            return mlen;
        }
        tab_remove(pc, st);
        consume(c, mlen, fwd);
        struct set_action *a = act_new();
        a->retag = "DEALLOCATE";
        write_query(sv, "", 0, NULL, 0);
        struct rq_entry e = {.kind = RQ_QUERY_X, .act = a};
        rq_push(c, &e);
        return 0;
    }
    case CS_DEALLOCATE_ALL:
    case CS_DISCARD_ALL: {
        /* Only this client's view: other clients' statements stay on the
         * server. DISCARD ALL's other effects (settings) are RESET ALL here:
         * an unpinned client has no temporary tables or cursors, and its
         * LISTENs are listen.c's (UNLISTEN * there). */
        tab_clear(pc);
        consume(c, mlen, fwd);
        struct set_action *a = act_new();
        if (s->kind == CS_DISCARD_ALL) {
            listen_client_op(c, LISTEN_OP_UNLISTEN_ALL, "");
            a->retag = "DISCARD ALL";
            a->discard_all = true;
            write_query(sv, "RESET ALL", 9, NULL, 0);
        } else {
            a->retag = "DEALLOCATE ALL";
            write_query(sv, "", 0, NULL, 0);
        }
        struct rq_entry e = {.kind = RQ_QUERY_X, .act = a};
        rq_push(c, &e);
        return 0;
    }
    default:
        rq_push_kind(c, RQ_QUERY);
        return mlen;
    }
}

/* Reads a C string at p within [p, end); NULL if unterminated. */
static const char *cstr(const uint8_t *p, const uint8_t *end)
{
    const uint8_t *z = memchr(p, 0, (size_t)(end - p));
    return z ? (const char *)p : NULL;
}

static int64_t client_parse(struct client *c, uint32_t mlen, uint32_t *fwd)
{
    if (!need(c, mlen, fwd))
        return PREPARED_WAIT;
    struct iobuf *b = c->s.rbuf;
    const uint8_t *msg = b->data + b->start, *end = msg + mlen;
    const char *name = cstr(msg + 5, end);
    const char *query = name ? cstr((const uint8_t *)name + strlen(name) + 1, end) : NULL;
    if (!name || !query) {
        rq_push_kind(c, RQ_ONE);
        return mlen;
    }
    size_t qlen = strlen(query);
    struct set_action *act = NULL;
    enum classify_kw kw = classify_peek(query, qlen);
    if (kw == CK_ADVISORY) {
        pin(c, "session advisory lock");
    } else if (kw != CK_OTHER) {
        struct classify_result cr;
        if (classify_parse(query, qlen, &cr)) {
            for (int i = 0; i < cr.n; i++) {
                if (cr.stmts[i].kind == CS_PIN || cr.stmts[i].kind == CS_LISTEN)
                    pin(c, cr.stmts[i].reason);
                else if (is_ps_stmt(cr.stmts[i].kind))
                    pin(c, "SQL-level prepared statements through the extended protocol");
            }
            act = settings_of(c, query, &cr);
        }
    }
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
        rq_push_kind(c, RQ_ONE);
        return mlen;
    }
    struct prepared_client *pc = pc_get(c);
    if (tab_find(pc, name)) {
        act_unref(act);
        char nm[64];
        snprintf(nm, sizeof(nm), "%s", name);
        consume(c, mlen, fwd);
        send_failure(c, false, "42P05", "prepared statement \"%s\" already exists", nm);
        return 0;
    }
    const uint8_t *body = (const uint8_t *)query;
    struct stmt *st = stmt_new(SK_PROTO, name, body, (size_t)(end - body));
    st->act = act;
    tab_add(pc, st);
    struct server *sv = c->server;
    if (prepared_set_has(sv->ps, st->h)) {
        consume(c, mlen, fwd);
        struct rq_entry e = {.kind = RQ_SYNTH, .synth = '1', .st = stmt_ref(st)};
        rq_push(c, &e);
        stmt_unref(st);
        return 0;
    }
    consume(c, mlen, fwd);
    make_room(c, sv);
    prepared_set_add(&sv->ps, st->h);
    write_parse(sv, st, false);
    struct rq_entry e = {.kind = RQ_PARSE, .st = st}; /* takes our reference */
    rq_push(c, &e);
    return 0;
}

/* Bind and Describe-statement: the statement name, renamed. prefix_len is
 * where the name starts in the message. */
static int64_t client_bind(struct client *c, uint32_t mlen, uint32_t *fwd)
{
    uint32_t want = mlen < 1024 ? mlen : 1024;
    if (!need(c, want, fwd))
        return PREPARED_WAIT;
    struct iobuf *b = c->s.rbuf;
    const uint8_t *msg = b->data + b->start, *end = msg + want;
    const char *portal = cstr(msg + 5, end);
    const char *name = portal ? cstr((const uint8_t *)portal + strlen(portal) + 1, end) : NULL;
    struct prepared_client *pc = c->ps;
    if (!name) {
        rq_push_kind(c, RQ_ONE);
        return mlen;
    }
    struct stmt *st = name[0] ? tab_find(pc, name) : NULL;
    if (pc) {
        act_unref(pc->portal_act);
        pc->portal_act = act_ref(name[0] ? (st ? st->act : NULL) : pc->unnamed_act);
    }
    if (!st) {
        /* Unnamed or unknown: forwarded as is, in the same write as the
         * messages around it (no flush: that would cost a send()). */
        rq_push_kind(c, RQ_ONE);
        return mlen;
    }
    flush_span(c, fwd); /* sluice's Parse, if any, goes after what came before */
    if (!ensure_prepared(c, st, false)) {
        rq_push_kind(c, RQ_ONE);
        return mlen;
    }
    char nm[24];
    server_name(st->h, nm);
    size_t pl = strlen(portal) + 1, nl = strlen(nm) + 1;
    uint32_t old_prefix = (uint32_t)(5 + pl + strlen(name) + 1);
    uint8_t hdr[5 + 1024];
    hdr[0] = 'B';
    proto_put32(hdr + 1, (uint32_t)(mlen - old_prefix + 4 + pl + nl));
    memcpy(hdr + 5, portal, pl);
    memcpy(hdr + 5 + pl, nm, nl);
    stream_write(&c->server->s, hdr, 5 + pl + nl);
    rq_push_kind(c, RQ_ONE);
    b = c->s.rbuf;
    b->start += old_prefix;
    *fwd = b->start;
    return mlen - old_prefix;
}

static int64_t client_describe_close(struct client *c, uint8_t type, uint32_t mlen, uint32_t *fwd)
{
    if (mlen > 1024) {
        rq_push_kind(c, type == 'D' ? RQ_DESC_S : RQ_ONE);
        return mlen;
    }
    if (!need(c, mlen, fwd))
        return PREPARED_WAIT;
    struct iobuf *b = c->s.rbuf;
    const uint8_t *msg = b->data + b->start, *end = msg + mlen;
    char what = mlen > 5 ? (char)msg[5] : 0;
    const char *name = mlen > 6 ? cstr(msg + 6, end) : NULL;
    if (!name || what != 'S') {
        rq_push_kind(c, type == 'D' && what == 'S' ? RQ_DESC_S : RQ_ONE);
        return mlen;
    }
    struct prepared_client *pc = c->ps;
    struct stmt *st = name[0] ? tab_find(pc, name) : NULL;
    if (type == 'D') {
        if (!st) {
            rq_push_kind(c, RQ_DESC_S);
            return mlen;
        }
        flush_span(c, fwd);
        if (!ensure_prepared(c, st, false)) {
            rq_push_kind(c, RQ_DESC_S);
            return mlen;
        }
        consume(c, mlen, fwd);
        char nm[24];
        server_name(st->h, nm);
        size_t nl = strlen(nm) + 1;
        uint8_t m[6 + 24];
        m[0] = 'D';
        proto_put32(m + 1, (uint32_t)(4 + 1 + nl));
        m[5] = 'S';
        memcpy(m + 6, nm, nl);
        stream_write(&c->server->s, m, 6 + nl);
        rq_push_kind(c, RQ_DESC_S);
        return 0;
    }
    /* Close of a named statement: sluice answers; the server keeps the
     * statement for other clients. Closing an unknown name is no error. */
    if (!name[0] || max_prepared() <= 0 || c->pinned) {
        rq_push_kind(c, RQ_ONE);
        return mlen;
    }
    consume(c, mlen, fwd);
    struct rq_entry e = {.kind = RQ_SYNTH, .synth = '3', .st = stmt_ref(st)};
    if (st)
        tab_remove(c->ps, st);
    rq_push(c, &e);
    return 0;
}

int64_t prepared_client_msg(struct client *c, uint8_t type, uint32_t mlen, uint32_t *fwd)
{
    switch (type) {
    case 'Q':
        return client_query(c, mlen, fwd);
    case 'P':
        return client_parse(c, mlen, fwd);
    case 'B':
        return client_bind(c, mlen, fwd);
    case 'D':
    case 'C':
        return client_describe_close(c, type, mlen, fwd);
    case 'E':
        if (c->ps && c->ps->portal_act) {
            struct rq_entry e = {.kind = RQ_EXEC_X, .act = act_ref(c->ps->portal_act)};
            rq_push(c, &e);
        } else {
            rq_push_kind(c, RQ_EXEC);
        }
        return mlen;
    case 'S':
        rq_push_kind(c, RQ_SYNC);
        return mlen;
    case 'F':
        rq_push_kind(c, RQ_QUERY);
        return mlen;
    default:
        return mlen; /* Flush, CopyData/Done/Fail: no answer of their own */
    }
}

/* ---- server side ------------------------------------------------------------------- */

static void known_add(struct pool *p, uint64_t h);

static bool ends_exec(uint8_t t)
{
    return t == 'C' || t == 'I' || t == 's' || t == 'E';
}

unsigned prepared_server_msg(struct client *c, struct server *sv, uint8_t type, const uint8_t *msg,
                             uint32_t mlen, uint32_t avail, uint32_t cap)
{
    if (type == 'N' || type == 'S' || type == 'A')
        return PREPARED_PASS;
    struct rq_entry tmp;
    struct rq_entry *e = rq_head(c, &tmp);
    unsigned first = 0;
    if (c->ps && c->ps->emit_first) {
        /* Answers made after a message too long to hold: it has gone. */
        c->ps->emit_first = false;
        first = PREPARED_EMIT_FIRST;
    }
    if (!e)
        return first;
    /* Rows never end a request; anything else is looked at whole, so that
     * nothing is decided twice and sluice's answers never land inside it. */
    bool whole = mlen <= avail;
    if (!whole && mlen <= cap && type != 'D' && type != 'd')
        return PREPARED_MORE | first;
    /* Decide first whether the message is swallowed: that needs all of it. */
    bool swallow = false;
    switch (e->kind) {
    case RQ_INJ_PARSE:
        swallow = type == '1';
        break;
    case RQ_INJ_CLOSE:
    case RQ_SKIP_Z:
        swallow = true;
        break;
    case RQ_FAIL:
        swallow = type == 'E';
        break;
    case RQ_QUERY_X:
        swallow =
            (type == 'E' && e->act->fail_msg) || (e->act->retag && (type == 'I' || type == 'C'));
        break;
    default:
        break;
    }
    if (swallow && !whole)
        swallow = false; /* longer than the buffer: it goes to the client */
    unsigned r = swallow ? PREPARED_SWALLOW : PREPARED_PASS;
    bool done = false;
    switch (e->kind) {
    case RQ_ONE:
        done = true;
        if (type == 'E')
            c->errskip = true;
        break;
    case RQ_DESC_S:
        if (type == 't' && c->ps)
            e->kind = RQ_ONE;
        else if (type == 't')
            c->rq[c->rq_head] = RQ_ONE;
        else
            done = true;
        if (type == 'E')
            c->errskip = true;
        break;
    case RQ_EXEC:
    case RQ_EXEC_X:
        if (ends_exec(type)) {
            done = true;
            if (type == 'E')
                c->errskip = true;
            else if (e->kind == RQ_EXEC_X && type == 'C')
                act_apply(c, e->act, sv->xact_status);
        }
        break;
    case RQ_SYNC:
        if (type == 'Z') {
            done = true;
            c->errskip = false;
        }
        break;
    case RQ_QUERY:
        done = type == 'Z';
        break;
    case RQ_PARSE:
        done = true;
        if (type == 'E') {
            rq_undo(c, e);
            c->errskip = true;
        } else if (type == '1' && e->st) {
            known_add(sv->pool, e->st->h);
        }
        break;
    case RQ_INJ_PARSE:
        done = true;
        if (type == 'E') {
            prepared_set_remove(sv->ps, e->h);
            c->errskip = true; /* the client sees it in place of its Bind's answer */
        }
        break;
    case RQ_INJ_CLOSE:
        done = true;
        break;
    case RQ_FAIL:
        done = true;
        if (type == 'E') {
            out_error(c->ps, e->act->fail_state, e->act->fail_msg);
            r |= PREPARED_EMIT;
            c->errskip = true;
        }
        break;
    case RQ_SKIP_Z:
        if (type == 'E' && e->h)
            prepared_set_remove(sv->ps, e->h);
        done = type == 'Z';
        break;
    case RQ_QUERY_X: {
        struct set_action *a = e->act;
        if (type == 'E') {
            a->failed = true;
            if (a->fail_msg) {
                out_error(c->ps, a->fail_state, a->fail_msg);
                r |= PREPARED_EMIT;
            }
        } else if (swallow && (type == 'I' || type == 'C')) {
            out_complete(c->ps, a->retag);
            r |= PREPARED_EMIT;
        } else if (type == 'Z') {
            done = true;
            char st = mlen >= 6 && avail >= 6 ? (char)msg[5] : 'I';
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
        break;
    }
    default:
        done = true;
        break;
    }
    if (done) {
        rq_pop(c);
        r |= rq_settle(c);
    } else if (c->errskip) {
        r |= rq_settle(c);
    }
    if ((r & PREPARED_EMIT) && !whole && !(r & PREPARED_SWALLOW)) {
        r &= ~PREPARED_EMIT;
        c->ps->emit_first = true;
    }
    return r | first;
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
    if (classify_peek(query, strlen(query)) != CK_OTHER)
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
    struct iobuf *b = c->s.rbuf;
    uint32_t pos = b->start;
    /* Pass 1: the batch must be whole, answerable messages up to a Sync. */
    for (;;) {
        uint8_t type;
        uint32_t mlen;
        if (proto_peek_header(b->data + pos, b->end - pos, 1u << 20, &type, &mlen) != PROTO_OK ||
            mlen > b->end - pos)
            return false;
        if (type == 'S')
            break;
        if ((type != 'P' && type != 'C') || !idle_ok(c, b->data + pos, mlen))
            return false;
        pos += mlen;
    }
    /* Pass 2: do it. */
    struct prepared_client *pc = pc_get(c);
    while (b->start < pos) {
        const uint8_t *msg = b->data + b->start;
        uint32_t mlen = 1 + proto_get32(msg + 1);
        const uint8_t *end = msg + mlen;
        if (msg[0] == 'P') {
            const char *name = cstr(msg + 5, end);
            const char *query = name + strlen(name) + 1;
            struct stmt *st =
                stmt_new(SK_PROTO, name, query, (size_t)(end - (const uint8_t *)query));
            if (!tab_find(pc, name))
                tab_add(pc, st);
            stmt_unref(st);
            out_simple(pc, '1');
        } else {
            struct stmt *st = tab_find(pc, (const char *)msg + 6);
            if (st)
                tab_remove(pc, st);
            out_simple(pc, '3');
        }
        b->start += mlen;
    }
    b->start += 5; /* the Sync */
    uint8_t z[6] = {'Z', 0, 0, 0, 5, 'I'};
    out_add(pc, z, sizeof(z));
    prepared_emit(c);
    c->last_activity = worker_now(c->s.worker);
    return true;
}

/* ---- lifecycle ------------------------------------------------------------------- */

void prepared_client_unlinked(struct client *c)
{
    if (!rq_empty(c)) {
        log_debug("C-%p: response queue not empty at release", (void *)c);
        rq_clear(c);
    }
    c->errskip = false;
    if (c->ps)
        c->ps->out_len = 0;
}

void prepared_client_free(struct client *c)
{
    struct prepared_client *pc = c->ps;
    if (!pc)
        return;
    while (pc->q_n)
        rq_pop(c);
    tab_clear(pc);
    act_unref(pc->unnamed_act);
    act_unref(pc->portal_act);
    free(pc->tab);
    free(pc->q);
    settings_clear(&pc->settings);
    free(pc->settings.v);
    free(pc->out);
    free(pc);
    c->ps = NULL;
}
