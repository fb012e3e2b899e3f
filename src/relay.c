/* relay.c - a client and the server lent to it: making the server's
 * session match the client's (SETs through server_query.c), forwarding the
 * client's requests and the server's answers, backpressure both ways, and
 * giving the server back when the transaction is over (relay.h). */
#include "relay.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client_conn.h"
#include "listen.h"
#include "log.h"
#include "pool.h"
#include "prepared.h"
#include "proto.h"
#include "server.h"
#include "server_query.h"
#include "worker.h"

static const struct server_holder_ops relay_holder;

/* ---- link ---------------------------------------------------------------- */

/* The server matches the client now: let the client's bytes through. */
static void relay_linked(struct client *c)
{
    /* Reading may have stopped on a full buffer while c waited. */
    stream_read_start(&c->s);
    if (c->s.rbuf && iobuf_len(c->s.rbuf))
        c->s.ops->on_data(&c->s);
}

static void sets_error(struct server *sv, void *arg, const char *sqlstate, const char *text)
{
    /* A SET the client asked for earlier failed here: tell it. */
    client_send_error(arg, "22023", "could not restore session setting: %s", text);
}

static void sets_done(struct server *sv, void *arg, enum server_query_status st)
{
    if (st == SERVER_QUERY_GONE)
        return; /* the client heard of it through relay_holder.on_closed */
    sv->state = SV_ACTIVE;
    relay_linked(arg);
}

static const struct server_query_ops sets_ops = {.on_error = sets_error, .on_done = sets_done};

/* Appends "SET name = 'value';" for each tracked parameter c expects other
 * than sv has (all of them after a RESET ALL). */
static void add_param_sets(struct client *c, struct server *sv, bool all, char **sql, size_t *n,
                           size_t *cap)
{
    for (int i = 0; i < TP_COUNT; i++) {
        const char *want = c->params.v[i];
        if (!want || (!all && want == sv->params.v[i]))
            continue;
        char lit[600];
        if (!proto_quote_literal(want, lit, sizeof(lit)))
            continue;
        char one[700];
        int k = snprintf(one, sizeof(one), "SET %s = %s;", tracked_param_name(i), lit);
        if (k < 0 || (size_t)k >= sizeof(one))
            continue;
        if (*n + (size_t)k + 1 > *cap) {
            *cap = (*n + (size_t)k + 1) * 2;
            *sql = realloc(*sql, *cap);
            if (!*sql)
                abort();
        }
        memcpy(*sql + *n, one, (size_t)k + 1);
        *n += (size_t)k;
    }
}

void relay_link(struct server *sv, struct client *c)
{
    sv->client = c;
    c->server = sv;
    sv->holder = &relay_holder;
    c->state = CL_ACTIVE;
    c->track = prepared_tracking(sv->pool);
    sv->request_time = worker_now(sv->s.worker);
    /* Does the client expect other values than the server has? Settings
     * from the startup packet beyond the tracked ones are applied as a whole
     * (after RESET ALL), since the server does not report them back. */
    size_t n = 0, cap = 0;
    char *sql = NULL;
    bool all = c->extras != sv->extras;
    if (all) {
        const char *x = c->extras ? c->extras : "";
        cap = strlen(x) + 64;
        sql = malloc(cap);
        if (!sql)
            abort();
        n = (size_t)snprintf(sql, cap, "RESET ALL;%s", x);
        param_assign(&sv->extras, c->extras);
    }
    add_param_sets(c, sv, all, &sql, &n, &cap);
    if (n > 0) {
        log_debug("S-%p: setting params for C-%p: %s", (void *)sv, (void *)c, sql);
        sv->state = SV_SETTING;
        server_query(sv, sql, 0, NULL, &sets_ops, c);
        free(sql);
        return;
    }
    free(sql);
    sv->state = SV_ACTIVE;
    relay_linked(c);
}

/* ---- client to server ------------------------------------------------------ */

/* Forwards the client's messages to its server. */
void relay_client_data(struct client *c)
{
    struct stream *s = &c->s;
    struct server *sv = c->server;
    struct iobuf *b = s->rbuf;
    struct worker *w = s->worker;
    uint32_t fwd = b->start;
    int64_t now = worker_now(w);
    while (b->start < b->end) {
        struct stream_msg m;
        enum stream_msg_status ms = stream_next_msg(s, STREAM_MSG_HEAD, &m);
        if (ms == STREAM_MSG_MORE)
            break;
        if (ms != STREAM_MSG_OK) {
            stream_write(&sv->s, b->data + fwd, b->start - fwd);
            stream_uncork(&sv->s);
            client_close_error(c, SQLSTATE_PROTOCOL_VIOLATION,
                               ms == STREAM_MSG_TOO_BIG ? "message too long (max_packet_size)"
                                                        : "invalid message length");
            return;
        }
        uint8_t type = m.type;
        uint32_t mlen = m.len, avail = m.avail;
        uint32_t fw = mlen; /* bytes of this message still to forward as they are */
        if (c->track && type != 'X') {
            /* Transaction pooling: statement names, settings, pinning. It
             * may write to the server, answer, or grow the buffer. */
            int64_t r = prepared_client_msg(c, type, mlen, &fwd);
            b = s->rbuf;
            if (r == PREPARED_WAIT)
                break;
            if (r < 0 || c->state == CL_CLOSED || !c->server) {
                stream_uncork(&sv->s);
                return;
            }
            fw = (uint32_t)r;
            avail = iobuf_len(b);
        }
        switch (type) {
        case 'X':
            stream_write(&sv->s, b->data + fwd, b->start - fwd);
            stream_uncork(&sv->s);
            b->start += mlen <= avail ? mlen : avail;
            client_close(c, "client close request");
            return;
        case 'Q':
        case 'F':
        case 'S':
            if (c->pending_rfq == 0 && !c->unsynced) {
                c->request_time = now;
                if (sv->xact_status == 'I')
                    c->xact_start = now;
            }
            c->pending_rfq++;
            if (type == 'S')
                c->unsynced = false;
            break;
        case 'P':
        case 'B':
        case 'E':
        case 'D':
        case 'C':
        case 'H':
            if (c->pending_rfq == 0 && !c->unsynced) {
                c->request_time = now;
                if (sv->xact_status == 'I')
                    c->xact_start = now;
            }
            c->unsynced = true;
            break;
        default:
            break;
        }
        sv->ready = false;
        stream_consume_msg(s, fw);
    }
    if (b->start > fwd) {
        uint32_t n = b->start - fwd;
        stream_write(&sv->s, b->data + fwd, n);
        w->stats.bytes_in += n;
        POOL_STAT_ADD(c->pool->bytes_in, n);
    }
    stream_uncork(&sv->s);
    c->last_activity = now;
    if (stream_has_output(&sv->s)) {
        stream_read_stop(s);
        sv->s.blocked_src = s;
    }
    if (b->start == b->end)
        stream_release_rbuf(s);
}

/* ---- server to client ------------------------------------------------------ */

/* Forwards everything the server sent to the linked client; notices the
 * end of each request (ReadyForQuery) to count it and to release the server
 * when the transaction is over. */
static void relay_server_data(struct server *sv)
{
    struct stream *s = &sv->s;
    struct client *c = sv->client;
    struct iobuf *b = s->rbuf;
    struct worker *w = s->worker;
    uint32_t fwd = b->start;
    bool release = false;
    bool stmt_violation = false;
    bool notify_flush = false; /* queued notifications go after this ReadyForQuery */

    while (b->start < b->end) {
        struct stream_msg m;
        enum stream_msg_status ms = stream_next_msg(s, STREAM_MSG_HEAD, &m);
        if (ms == STREAM_MSG_MORE)
            break;
        if (ms != STREAM_MSG_OK) {
            stream_write(&c->s, b->data + fwd, b->start - fwd);
            server_close(sv, "server sent a malformed message");
            return;
        }
        uint8_t type = m.type;
        uint32_t mlen = m.len, avail = iobuf_len(b);
        unsigned pact = PREPARED_PASS;
        if (c->track) {
            /* Transaction pooling: match the answer to its request; sluice's
             * own answers go in, answers to its own messages go away. */
            pact = prepared_server_msg(c, sv, type, b->data + b->start, mlen, avail, b->cap);
            if (pact & PREPARED_EMIT_FIRST) {
                stream_write(&c->s, b->data + fwd, b->start - fwd);
                fwd = b->start;
                prepared_emit(c);
            }
            if (pact & PREPARED_MORE)
                break;
            if (pact & PREPARED_SWALLOW) {
                stream_write(&c->s, b->data + fwd, b->start - fwd);
                b->start += mlen;
                fwd = b->start;
                if (pact & PREPARED_EMIT)
                    prepared_emit(c);
                continue;
            }
        }
        if (type == 'Z' || type == 'S') {
            if (mlen > avail) {
                /* Needed whole: the buffer makes room (it moves). */
                stream_write(&c->s, b->data + fwd, b->start - fwd);
                fwd = b->start;
                stream_msg_whole(s, &m);
                b = s->rbuf;
                fwd = b->start;
                break;
            }
            const uint8_t *msg = b->data + b->start;
            if (type == 'S') {
                server_param_status(sv, msg, mlen);
            } else if (mlen >= 6) {
                int64_t now = worker_now(w);
                char st = (char)msg[5];
                sv->xact_status = st;
                if (c->pending_rfq > 0)
                    c->pending_rfq--;
                w->stats.query_count++;
                POOL_STAT_ADD(sv->pool->query_count, 1);
                uint64_t qt = (uint64_t)(now - c->request_time);
                w->stats.query_time += qt;
                metrics_hist_observe(&w->metrics.query, (int64_t)qt);
                POOL_STAT_ADD(sv->pool->query_time, qt);
                if (st == 'I') {
                    w->stats.xact_count++;
                    POOL_STAT_ADD(sv->pool->xact_count, 1);
                    uint64_t xt = (uint64_t)(now - c->xact_start);
                    w->stats.xact_time += xt;
                    POOL_STAT_ADD(sv->pool->xact_time, xt);
                }
                c->request_time = now;
                sv->ready = c->pending_rfq == 0 && !c->unsynced && st == 'I';
                notify_flush = c->lc && sv->ready;
                enum pool_mode mode = pool_mode_of(sv->pool);
                if (c->pending_rfq == 0 && !c->unsynced) {
                    if (st == 'I' && mode != POOL_MODE_SESSION && !c->pinned)
                        release = true;
                    else if (st != 'I' && mode == POOL_MODE_STATEMENT)
                        stmt_violation = true;
                }
            }
        }
        if (stmt_violation)
            break; /* the client gets the error instead of this ReadyForQuery */
        stream_consume_msg(s, mlen);
        if (pact & PREPARED_EMIT) {
            stream_write(&c->s, b->data + fwd, b->start - fwd);
            fwd = b->start;
            prepared_emit(c);
        }
        if (notify_flush) {
            stream_write(&c->s, b->data + fwd, b->start - fwd);
            fwd = b->start;
            listen_client_flush(c);
            notify_flush = false;
        }
        if (release)
            break;
    }
    if (b->start > fwd) {
        uint32_t n = b->start - fwd;
        stream_write(&c->s, b->data + fwd, n);
        w->stats.bytes_out += n;
        POOL_STAT_ADD(sv->pool->bytes_out, n);
    }
    if (stmt_violation) {
        client_close_error(c, SQLSTATE_FEATURE_NOT_SUPPORTED,
                           "transaction blocks not allowed in statement pooling mode");
        return;
    }
    if (release) {
        if (b->start < b->end) {
            server_close(sv, "server sent data after ReadyForQuery");
            return;
        }
        stream_release_rbuf(s);
        pool_release_server(sv);
        return;
    }
    if (stream_has_output(&c->s)) {
        /* Backpressure: the client reads slower than the server writes. */
        stream_read_stop(s);
        c->s.blocked_src = s;
    }
    if (b->start == b->end)
        stream_release_rbuf(s);
}

void relay_client_drained(struct client *c)
{
    struct stream *s = &c->s;
    struct server *sv = c->server;
    if (s->blocked_src && sv && s->blocked_src == &sv->s) {
        s->blocked_src = NULL;
        stream_read_start(&sv->s);
        if (sv->s.rbuf && iobuf_len(sv->s.rbuf))
            sv->s.ops->on_data(&sv->s);
    }
}

static void relay_server_drained(struct server *sv)
{
    struct stream *s = &sv->s;
    struct client *c = sv->client;
    if (s->blocked_src && c && s->blocked_src == &c->s) {
        s->blocked_src = NULL;
        stream_read_start(&c->s);
        if (c->s.rbuf && iobuf_len(c->s.rbuf))
            c->s.ops->on_data(&c->s);
    }
}

static void relay_server_closed(struct server *sv, struct client *c, const char *why)
{
    if (c && c->state != CL_CLOSED)
        client_close_error(c, SQLSTATE_CONNECTION_FAILURE, "server conn crashed?");
}

static const struct server_holder_ops relay_holder = {
    .on_data = relay_server_data,
    .on_drained = relay_server_drained,
    .on_closed = relay_server_closed,
};
