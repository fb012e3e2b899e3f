/* server_query.c - sluice's own SQL on servers it holds (server_query.h). */
#include "server_query.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "pool.h"
#include "proto.h"

/* One query sent and not yet answered. */
struct sq_item {
    const struct server_query_ops *ops;
    void *arg;
    bool failed; /* an ErrorResponse came */
    bool sync;   /* a lone Sync: nothing but its ReadyForQuery (and errors) may come */
};

/* A server's queries in flight, oldest first (a ring). Allocated on the
 * server's first query and kept with it: servers are few. */
struct server_query_queue {
    struct sq_item *v;
    uint32_t head, n, cap;
};

const char *server_query_status_str(enum server_query_status st)
{
    static const char *const names[] = {"ok", "failed", "gone"};
    return (unsigned)st < sizeof(names) / sizeof(names[0]) ? names[st] : "?";
}

void server_log(int lvl, const struct server *sv, const char *fmt, ...)
{
    if (!log_enabled((enum log_level)lvl))
        return;
    const struct pool *p = sv->pool;
    const struct endpoint *ep = p->ep < p->db->n_endpoints ? &p->db->endpoints[p->ep] : NULL;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    log_msg((enum log_level)lvl, "S-%p: %s/%s@%s:%d %s", (const void *)sv, p->db->name,
            p->user->name, ep && ep->host[0] ? ep->host : "unix", ep ? ep->port : 0, line);
}

/* ---- sending ------------------------------------------------------------- */

static struct sq_item *sq_push(struct server *sv)
{
    struct server_query_queue *q = sv->sq;
    if (!q) {
        q = sv->sq = calloc(1, sizeof(*q));
        if (!q)
            abort();
    }
    if (q->n == q->cap) {
        uint32_t ncap = q->cap ? q->cap * 2 : 4;
        struct sq_item *nv = calloc(ncap, sizeof(*nv));
        if (!nv)
            abort();
        for (uint32_t i = 0; i < q->n; i++)
            nv[i] = q->v[(q->head + i) % q->cap];
        free(q->v);
        q->v = nv;
        q->cap = ncap;
        q->head = 0;
    }
    struct sq_item *it = &q->v[(q->head + q->n) % q->cap];
    q->n++;
    memset(it, 0, sizeof(*it));
    return it;
}

/* Writes a message header (type, length of a body of n bytes). */
static void write_header(struct server *sv, uint8_t type, size_t n)
{
    uint8_t hdr[5];
    hdr[0] = type;
    proto_put32(hdr + 1, (uint32_t)(4 + n));
    stream_write(&sv->s, hdr, 5);
}

static void send_simple(struct server *sv, const char *sql)
{
    size_t n = strlen(sql) + 1;
    write_header(sv, 'Q', n);
    stream_write(&sv->s, sql, n);
}

/* Parse, Bind (text parameters), Execute, Sync of the unnamed statement. */
static void send_extended(struct server *sv, const char *sql, int nparams,
                          const char *const *params)
{
    size_t qn = strlen(sql) + 1;
    write_header(sv, 'P', 1 + qn + 2);
    stream_write(&sv->s, "", 1);
    stream_write(&sv->s, sql, qn);
    stream_write(&sv->s, "\0\0", 2); /* no parameter types: the server infers them */
    size_t bn = 1 + 1 + 2 + 2 + 2;
    for (int i = 0; i < nparams; i++)
        bn += 4 + (params[i] ? strlen(params[i]) : 0);
    write_header(sv, 'B', bn);
    uint8_t head[6] = {0, 0, 0, 0, (uint8_t)(nparams >> 8), (uint8_t)nparams};
    stream_write(&sv->s, head, sizeof(head)); /* portal, statement, 0 formats, n values */
    for (int i = 0; i < nparams; i++) {
        uint8_t len[4];
        uint32_t l = params[i] ? (uint32_t)strlen(params[i]) : 0xffffffffu;
        proto_put32(len, l);
        stream_write(&sv->s, len, 4);
        if (params[i])
            stream_write(&sv->s, params[i], l);
    }
    stream_write(&sv->s, "\0\0", 2); /* results in text */
    static const uint8_t exec_sync[] = {'E', 0, 0, 0, 9, 0, 0, 0, 0, 0, 'S', 0, 0, 0, 4};
    stream_write(&sv->s, exec_sync, sizeof(exec_sync));
}

/* A new query of the asker's on sv, its answer not in yet; NULL if sv is
 * closed. */
static struct sq_item *sq_begin(struct server *sv, const struct server_query_ops *ops, void *arg)
{
    if (sv->state == SV_CLOSED || sv->s.closed)
        return NULL;
    struct sq_item *it = sq_push(sv);
    it->ops = ops;
    it->arg = arg;
    sv->ready = false;
    return it;
}

bool server_query(struct server *sv, const char *sql, int nparams, const char *const *params,
                  const struct server_query_ops *ops, void *arg)
{
    if (!sq_begin(sv, ops, arg))
        return false;
    /* One send() for the whole query, whatever its pieces. */
    bool corked = sv->s.corked;
    stream_cork(&sv->s);
    if (nparams > 0)
        send_extended(sv, sql, nparams, params);
    else
        send_simple(sv, sql);
    if (!corked)
        stream_uncork(&sv->s);
    return true;
}

bool server_sync(struct server *sv, const struct server_query_ops *ops, void *arg)
{
    struct sq_item *it = sq_begin(sv, ops, arg);
    if (!it)
        return false;
    it->sync = true;
    write_header(sv, 'S', 0);
    return true;
}

bool server_query_pending(const struct server *sv)
{
    return sv->sq && sv->sq->n > 0;
}

/* ---- reading ------------------------------------------------------------- */

void server_error_text(const uint8_t *msg, uint32_t len, char *out, size_t outlen, char *sqlstate)
{
    struct proto_error_fields ef;
    if (proto_parse_error(msg, len, &ef)) {
        snprintf(out, outlen, "%s: %s", ef.severity, ef.message);
        if (sqlstate)
            snprintf(sqlstate, 6, "%s", ef.sqlstate);
    } else {
        snprintf(out, outlen, "malformed error message");
        if (sqlstate)
            snprintf(sqlstate, 6, "XX000");
    }
}

void server_param_status(struct server *sv, const uint8_t *msg, uint32_t len)
{
    struct proto_reader r;
    proto_reader_init(&r, msg, len);
    const char *name = proto_read_string(&r);
    const char *value = proto_read_string(&r);
    if (r.bad)
        return;
    struct pool *p = sv->pool;
    int tp = tracked_param_lookup(name);
    if (tp >= 0) {
        param_store(param_slot(&sv->params, tp), value);
        if (sv->client && sv->state == SV_ACTIVE)
            param_assign(param_slot(&sv->client->params, tp), param_get(&sv->params, tp));
    }
    if (sv->state != SV_LOGIN)
        return;
    /* PostgreSQL 14 and later report it: a standby says "on". */
    if (strcmp(name, "in_hot_standby") == 0)
        sv->in_recovery = strcmp(value, "on") == 0;
    /* The pool's welcome is written once, by the first logins (of any
     * worker), and read without the lock once welcome_ready is set. */
    pool_lock();
    if (!p->welcome_ready)
        pool_welcome_add(p, name, value, tp >= 0 ? param_get(&sv->params, tp) : NULL, tp);
    pool_unlock();
}

/* Splits a DataRow into row; false if malformed. */
static bool parse_row(const uint8_t *msg, uint32_t len, struct server_query_row *row)
{
    struct proto_reader r;
    proto_reader_init(&r, msg, len);
    row->n = proto_read16(&r);
    for (int i = 0; i < row->n && !r.bad; i++) {
        uint32_t l = proto_read32(&r);
        const uint8_t *v = l == 0xffffffffu ? NULL : proto_read_bytes(&r, l);
        if (i < SERVER_QUERY_MAX_COLS) {
            row->val[i] = (const char *)v;
            row->len[i] = v ? l : 0;
        }
    }
    return !r.bad;
}

static struct sq_item *sq_head(struct server *sv)
{
    struct server_query_queue *q = sv->sq;
    return q && q->n ? &q->v[q->head] : NULL;
}

/* ReadyForQuery: the head query is over. Its callback runs after it left
 * the queue, so that it may send the next one. */
static void sq_complete(struct server *sv, char status)
{
    struct server_query_queue *q = sv->sq;
    struct sq_item it = q->v[q->head];
    q->head = (q->head + 1) % q->cap;
    q->n--;
    sv->xact_status = status;
    sv->ready = q->n == 0 && status == 'I';
    if (it.ops && it.ops->on_done)
        it.ops->on_done(sv, it.arg, it.failed ? SERVER_QUERY_FAILED : SERVER_QUERY_OK);
}

static void sq_error(struct server *sv, struct sq_item *it, const uint8_t *msg, uint32_t len)
{
    char text[400], state[6];
    server_error_text(msg, len, text, sizeof(text), state);
    if (!it) {
        server_log(LOG_LVL_WARNING, sv, "error from server: %s", text);
        return;
    }
    it->failed = true;
    if (it->ops && it->ops->on_error)
        it->ops->on_error(sv, it->arg, state, text);
    else
        server_log(LOG_LVL_WARNING, sv, "%s query failed: %s", server_state_str(sv->state), text);
}

/* Handles one whole message m; false with why set if it is one sluice
 * cannot take here. */
static bool sq_message(struct server *sv, const struct stream_msg *m, char *why, size_t whylen)
{
    struct sq_item *it = sq_head(sv);
    if (it && it->sync && m->type != 'E' && m->type != 'S' && m->type != 'A' && m->type != 'N' &&
        m->type != 'Z') {
        /* The server was not where sluice thought: it is not reused. */
        snprintf(why, whylen, "unexpected message '%c' in answer to sluice's Sync",
                 m->type >= 32 && m->type < 127 ? m->type : '?');
        return false;
    }
    switch (m->type) {
    case 'D': {
        struct server_query_row row;
        if (!parse_row(m->data, m->len, &row)) {
            snprintf(why, whylen, "malformed DataRow");
            return false;
        }
        if (it && it->ops && it->ops->on_row)
            it->ops->on_row(sv, it->arg, &row);
        return true;
    }
    case 'E':
        sq_error(sv, it, m->data, m->len);
        return true;
    case 'S':
        server_param_status(sv, m->data, m->len);
        return true;
    case 'A':
        if (sv->holder && sv->holder->on_notify)
            sv->holder->on_notify(sv, m);
        return true;
    case 'Z':
        if (m->len < 6 || !it) {
            snprintf(why, whylen, it ? "malformed ReadyForQuery" : "unexpected ReadyForQuery");
            return false;
        }
        sq_complete(sv, (char)m->data[5]);
        return true;
    case 'N': /* notices, and the answers of each step: nothing to do */
    case 'T':
    case 'C':
    case 'I':
    case '1':
    case '2':
    case 'n':
    case 't':
    case 's':
        return true;
    default:
        snprintf(why, whylen, "unexpected message '%c' in answer to sluice's own query",
                 m->type >= 32 && m->type < 127 ? m->type : '?');
        return false;
    }
}

enum server_query_read_status server_query_read(struct server *sv, char *why, size_t whylen)
{
    struct stream *s = &sv->s;
    while (server_query_pending(sv) || (sv->holder && sv->holder->on_notify)) {
        struct stream_msg m;
        enum stream_msg_status ms = stream_next_msg(s, STREAM_MSG_WHOLE, &m);
        if (ms == STREAM_MSG_MORE)
            break;
        if (ms != STREAM_MSG_OK) {
            snprintf(why, whylen, "server sent a malformed message (%s)",
                     stream_msg_status_str(ms));
            return SERVER_READ_BAD;
        }
        stream_consume_msg(s, m.len);
        enum server_state before = sv->state;
        if (!sq_message(sv, &m, why, whylen))
            return SERVER_READ_BAD;
        /* A callback may have closed sv, lent it to a client or put it
         * back in the pool: whoever has it now reads what follows. */
        if (s->closed || sv->state != before)
            return SERVER_READ_GONE;
    }
    stream_release_rbuf(s);
    return SERVER_READ_OK;
}

void server_query_abort(struct server *sv)
{
    struct server_query_queue *q = sv->sq;
    while (q && q->n) {
        struct sq_item it = q->v[q->head];
        q->head = (q->head + 1) % q->cap;
        q->n--;
        if (it.ops && it.ops->on_done)
            it.ops->on_done(sv, it.arg, SERVER_QUERY_GONE);
    }
}

void server_query_free(struct server *sv)
{
    if (!sv->sq)
        return;
    free(sv->sq->v);
    free(sv->sq);
    sv->sq = NULL;
}
