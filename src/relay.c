/* relay.c - a client and the server lent to it: making the server's
 * session match the client's (SETs through server_query.c), forwarding the
 * client's requests and the server's answers, backpressure both ways, and
 * giving the server back when the transaction is over (relay.h). */
#include "relay.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client_conn.h"
#include "log.h"
#include "pool.h"
#include "proto.h"
#include "request.h"
#include "router.h"
#include "ryw.h"
#include "server.h"
#include "server_query.h"
#include "worker.h"

static const struct server_holder_ops relay_holder;

/* ---- transparent retry ------------------------------------------------------ */

/* A request on a replica whose server fails (closes, or says it is going
 * away or in a recovery conflict) before any byte of its answer reached the
 * client is sent again, once, wherever the router sends it now (the
 * replica is banned by then). So the bytes sent to a replica's server
 * since the link are kept, in one standard buffer borrowed from the
 * worker; a request that does not fit, or a message not all buffered, is
 * not retried. */

static void retry_arm(struct client *c, struct server *sv)
{
    struct router_client *rc = c->route;
    if (rc && rc->retried) {
        rc->retried = false; /* this link runs the request sent again: not twice */
        return;
    }
    if (sv->pool->ep == 0 || !c->track || g_pooler.shutting_down)
        return;
    rc = router_client_of(c);
    if (!rc->retry_buf)
        rc->retry_buf = iobuf_get(&c->s.worker->bufs);
    rc->retry_buf->start = rc->retry_buf->end = 0;
    rc->retry_mark = (uint32_t)stream_written(&c->s);
}

void relay_retry_drop(struct client *c)
{
    struct router_client *rc = c->route;
    if (rc && rc->retry_buf) {
        iobuf_put(&c->s.worker->bufs, rc->retry_buf);
        rc->retry_buf = NULL;
    }
}

/* The buffer of what c sent since the link, while a retry may need it. */
static inline struct iobuf *retry_buf_of(const struct client *c)
{
    return c->route ? c->route->retry_buf : NULL;
}

/* Keeps client message m, on its way to the server, for a retry. */
static void retry_keep(struct client *c, const struct stream_msg *m)
{
    struct iobuf *b = c->route->retry_buf;
    if (m->avail < m->len || iobuf_room(b) < m->len) {
        relay_retry_drop(c);
        return;
    }
    memcpy(b->data + b->end, m->data, m->len);
    b->end += m->len;
}

/* Nothing of the answer reached c since the link (nor anything else). */
static bool retry_possible(const struct client *c)
{
    return retry_buf_of(c) && c->state != CL_CLOSED && !c->s.closed &&
           (uint32_t)stream_written(&c->s) == c->route->retry_mark && !g_pooler.shutting_down;
}

/* Before any of the server's bytes are handled, while c's request may
 * still be retried: a replica going away says so in an error, or in a
 * warning (an immediate shutdown's), maybe after the first messages of an
 * answer c has not seen. Then the replica is banned, the server closed and
 * the request retried (relay_server_closed()); true if so. */
static bool retry_on_trouble(struct server *sv, struct client *c)
{
    if (sv->pool->ep == 0 || !retry_possible(c))
        return false;
    struct stream_msg m;
    for (uint32_t off = 0; stream_msg_at(&sv->s, off, &m) == STREAM_MSG_OK; off += m.len) {
        if ((m.type == 'E' || m.type == 'N') && server_replica_trouble(sv, m.data, m.len)) {
            server_close(sv, "replica going away before it answered: request sent again");
            return true;
        }
    }
    return false;
}

/* c's server closed (why): its request goes back in front of c's buffer
 * and through the dispatcher again. false: c must hear of the failure. */
static bool relay_retry(struct client *c, const char *why)
{
    if (!retry_possible(c))
        return false;
    struct router_client *rc = c->route;
    struct iobuf *b = rc->retry_buf;
    rc->retry_buf = NULL;
    rc->retried = true;
    router_link_lost(c);
    stream_unread(&c->s, b->data + b->start, iobuf_len(b));
    iobuf_put(&c->s.worker->bufs, b);
    client_log(LOG_LVL_LOG, c, "request sent again elsewhere: its replica's server failed (%s)",
               why);
    pool_client_retry(c);
    return true;
}

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
    struct client *c = arg;
    /* The server is ending (shut down, or another backend crashed): it
     * closes next, and the client's request, not sent, waits for another
     * server (relay_server_closed()). It was told "could not restore
     * session setting" with 22023, a wrong value, and closed as if its
     * request might have run (the chaos suite's primary_killed saw it).
     * 57P*, not all of class 57: 57014 (a cancel that met the SETs) ends
     * only the statement, and the client must hear of it. */
    if (sqlstate && (strncmp(sqlstate, "57P", 3) == 0 || strncmp(sqlstate, "08", 2) == 0)) {
        client_log(LOG_LVL_LOG, c, "S-%p ended while setting its settings: %s", (void *)sv, text);
        return;
    }
    /* A SET the client asked for earlier failed here: tell it, with the
     * server's own code. */
    client_send_error(c, sqlstate && sqlstate[0] ? sqlstate : "22023",
                      "could not restore session setting: %s", text);
}

static void replay_error(struct server *sv, void *arg, const char *sqlstate, const char *text)
{
    struct client *c = arg;
    client_log(LOG_LVL_WARNING, c, "could not open its transaction on S-%p: %s", (void *)sv, text);
}

static void replay_done(struct server *sv, void *arg, enum server_query_status st)
{
    struct client *c = arg;
    if (st == SERVER_QUERY_GONE)
        return; /* the client heard of it through relay_holder.on_closed */
    if (!router_link_opened(c, sv)) {
        /* Its statements would run outside the transaction it opened. */
        sv->close_needed = true;
        client_close_error(c, SQLSTATE_CONNECTION_FAILURE,
                           "could not open the transaction on the server");
        return;
    }
    server_set_state(sv, SV_ACTIVE);
    relay_linked(c);
}

static const struct server_query_ops replay_ops = {.on_error = replay_error,
                                                   .on_done = replay_done};

/* The server has c's settings: the transaction the router follows opens
 * there first, if c is in one, then c's bytes go through. */
static void relay_settings_done(struct server *sv, struct client *c)
{
    const char *replay = router_link_replay(c, sv);
    if (replay) {
        log_debug("S-%p: opening the transaction of C-%p: %s", (void *)sv, (void *)c, replay);
        if (server_state_of(sv) != SV_SETTING)
            server_set_state(sv, SV_SETTING);
        server_query(sv, replay, 0, NULL, &replay_ops, c);
        return;
    }
    server_set_state(sv, SV_ACTIVE);
    relay_linked(c);
}

static void sets_done(struct server *sv, void *arg, enum server_query_status st)
{
    struct client *c = arg;
    if (st == SERVER_QUERY_GONE)
        return; /* relay_holder.on_closed sees sets_pending */
    c->sets_pending = false;
    relay_settings_done(sv, c);
}

static const struct server_query_ops sets_ops = {.on_error = sets_error, .on_done = sets_done};

/* Appends "SET name = 'value';" for each tracked parameter c expects other
 * than sv has (all of them after a RESET ALL). */
static void add_param_sets(struct client *c, struct server *sv, bool all, char **sql, size_t *n,
                           size_t *cap)
{
    for (int i = 0; i < tracked_param_count(); i++) {
        const char *want = param_get(&c->params, i);
        if (!want || (!all && want == param_get(&sv->params, i)))
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

/* Whether c expects a tracked parameter with another value than sv has. */
static bool params_differ(const struct client *c, const struct server *sv)
{
    for (int i = 0; i < tracked_param_count(); i++) {
        const char *want = param_get(&c->params, i);
        if (want && want != param_get(&sv->params, i))
            return true;
    }
    return false;
}

void relay_link(struct server *sv, struct client *c)
{
    sv->client = c;
    c->server = sv;
    sv->holder = &relay_holder;
    client_set_state(c, CL_ACTIVE);
    enum pool_mode mode = pool_mode_of(sv->pool);
    c->track = mode != POOL_MODE_SESSION;
    c->stmt_mode = mode == POOL_MODE_STATEMENT;
    retry_arm(c, sv);
    sv->request_time = worker_now(sv->s.worker);
    /* Does the client expect other values than the server has? Settings
     * from the startup packet beyond the tracked ones are applied as a whole
     * (after RESET ALL), since the server does not report them back. */
    bool all = c->extras != sv->extras;
    if (!all && !params_differ(c, sv)) {
        if (c->route) {
            relay_settings_done(sv, c);
            return;
        }
        server_set_state(sv, SV_ACTIVE); /* the common case: nothing to set */
        relay_linked(c);
        return;
    }
    size_t n = 0, cap = 0;
    char *sql = NULL;
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
        server_set_state(sv, SV_SETTING);
        c->sets_pending = true;
        server_query(sv, sql, 0, NULL, &sets_ops, c);
        free(sql);
        return;
    }
    free(sql);
    relay_settings_done(sv, c);
}

/* What a ReadyForQuery means for the link (status st, nothing else in
 * flight when !busy): the transaction is over and the server goes back,
 * or a statement-mode client opened a transaction. */
enum relay_rfq {
    RELAY_KEEP = 0,  /* the client keeps its server */
    RELAY_RELEASE,   /* the server goes back to the pool */
    RELAY_VIOLATION, /* a transaction in statement mode: the client is closed */
    RELAY_MOVE,      /* the transaction moves to the primary (router.h) */
    RELAY_RESUME,    /* it failed on the replica: the request held goes there */
    RELAY_RECORD,    /* the server goes back once its write's position is read (ryw.h) */
};

static enum relay_rfq relay_at_rfq(struct client *c, struct server *sv, char st)
{
    bool busy = request_busy(c);
    sv->ready = !busy && st == 'I';
    /* A message of the client's still streaming to this server (CopyData
     * after the COPY failed) must end here: the server goes back once it
     * has (relay_client_data()). */
    if (busy || c->s.skip)
        return RELAY_KEEP;
    if (st == 'I' && c->track && !c->pinned)
        return RELAY_RELEASE;
    if (st != 'I' && c->stmt_mode)
        return RELAY_VIOLATION;
    if (c->route && c->route->move)
        return router_move_due(c, sv) ? RELAY_MOVE : RELAY_RESUME;
    return RELAY_KEEP;
}

/* ---- a transaction moving from a replica to the primary --------------------- */

static void move_done(struct server *sv, void *arg, enum server_query_status st)
{
    struct client *c = arg;
    if (st == SERVER_QUERY_GONE)
        return; /* the client heard of it through relay_holder.on_closed */
    if (sv->xact_status != 'I') {
        sv->close_needed = true;
        client_close_error(c, SQLSTATE_CONNECTION_FAILURE,
                           "could not end the transaction's part on the replica");
        return;
    }
    router_txn_moved(c);
    pool_release_server(sv); /* c goes on: its waiting request to the primary */
}

static const struct server_query_ops move_ops = {.on_done = move_done};

/* c's transaction read on its replica so far and a request of c's that
 * must run on the primary waits: the replica's part ends (ROLLBACK: it
 * only read), the server goes back, and the router opens the transaction
 * on the primary for that request. */
static void relay_move(struct client *c, struct server *sv)
{
    log_debug("C-%p: transaction moves from S-%p to the primary", (void *)c, (void *)sv);
    server_query(sv, "ROLLBACK", 0, NULL, &move_ops, c);
}

/* ---- client to server ------------------------------------------------------ */

/* The one place client bytes reach the server: the span [*fwd, start) of
 * c's buffer, forwarded as it is. */
static void relay_to_server(struct client *c, struct server *sv, uint32_t *fwd)
{
    struct iobuf *b = c->s.rbuf;
    if (b && b->start > *fwd) {
        uint32_t n = b->start - *fwd;
        stream_write(&sv->s, b->data + *fwd, n);
        c->s.worker->stats.bytes_in += n;
        POOL_STAT_ADD(sv->pool->bytes_in, n);
    }
    if (b)
        *fwd = b->start;
}

void relay_client_data(struct client *c)
{
    struct stream *s = &c->s;
    struct server *sv = c->server;
    if (sv->rw_scope)
        return; /* its write's position is being read; then it goes back (ryw.c) */
    if (c->timeout_kind)
        return; /* timed out: only the answer in flight is awaited (client.c) */
    struct iobuf *b = s->rbuf;
    uint32_t fwd = b->start;
    while (b->start < b->end) {
        struct stream_msg m;
        enum stream_msg_status ms = stream_next_msg(s, STREAM_MSG_HEAD, &m);
        if (ms == STREAM_MSG_MORE)
            break;
        if (ms != STREAM_MSG_OK) {
            relay_to_server(c, sv, &fwd);
            stream_uncork(&sv->s);
            client_close_bad_message(c, ms);
            return;
        }
        if (m.type == 'X') {
            relay_to_server(c, sv, &fwd);
            stream_uncork(&sv->s);
            stream_consume_msg(s, m.avail);
            client_close(c, "client close request");
            return;
        }
        /* client_refuse_message()'s tests, inline: they run per message. */
        if (!proto_frontend_type_ok(m.type) || (m.type == 'Q' && g_pooler.cfg->disable_pqexec) ||
            (m.avail == m.len &&
             !proto_frontend_shape_ok(m.type, m.data + PROTO_HDR, m.len - PROTO_HDR))) {
            relay_to_server(c, sv, &fwd);
            stream_uncork(&sv->s);
            client_refuse_message(c, &m);
            return;
        }
        /* Kept as the client sent it, before observers rewrite it. */
        uint32_t kept = 0;
        if (retry_buf_of(c)) {
            kept = c->route->retry_buf->end;
            retry_keep(c, &m);
        }
        /* The request queue records it; its observers may rewrite it,
         * write messages of their own (after flushing the span) or answer
         * it; they may replace the buffer (to hold a long message). */
        int64_t r = request_client_msg(c, m.type, m.len, &fwd);
        b = s->rbuf;
        if (r == REQUEST_WAIT) {
            if (retry_buf_of(c))
                c->route->retry_buf->end = kept; /* seen again when it goes */
            break;
        }
        if (r < 0 || c->state == CL_CLOSED || !c->server) {
            stream_uncork(&sv->s);
            return;
        }
        if (m.type != 'd' && m.type != 'c' && m.type != 'f')
            sv->ready = false; /* an answer is owed (COPY data gets none) */
        stream_consume_msg(s, (uint32_t)r);
        if ((m.type == 'Q' || m.type == 'S') && c->route && ryw_ride_due(c, sv)) {
            stream_cork(&sv->s); /* one send for the request and its ride */
            relay_to_server(c, sv, &fwd);
            ryw_ride(c, &c->route->ryw, sv); /* a position, right behind it */
        }
    }
    relay_to_server(c, sv, &fwd);
    stream_uncork(&sv->s);
    c->last_activity = worker_now(s->worker);
    if (c->route && c->route->move && !server_query_pending(sv) && router_move_due(c, sv)) {
        relay_move(c, sv); /* its transaction is idle on the replica already */
        return;
    }
    if (!s->skip && sv->ready && relay_at_rfq(c, sv, sv->xact_status) == RELAY_RELEASE) {
        /* The transaction was over already: what came since needs no
         * answer (CopyData the server drops after a failed COPY). */
        if (c->route && ryw_commit_due(&c->route->ryw, sv)) {
            ryw_commit_begin(&c->route->ryw, sv);
            ryw_commit_read(sv);
            return;
        }
        pool_release_server(sv);
        return;
    }
    if (stream_has_output(&sv->s)) {
        /* Backpressure: the server reads slower than the client writes. */
        stream_read_stop(s);
        sv->s.blocked_src = s;
    }
    if (b->start == b->end)
        stream_release_rbuf(s);
}

/* ---- server to client ------------------------------------------------------ */

/* The one place server bytes reach the client: the span [*fwd, start) of
 * sv's buffer forwarded as it is, then, with emit, the answers sluice made
 * (request_out_add()) that belong right after it. */
static void relay_to_client(struct server *sv, struct client *c, uint32_t *fwd, bool emit)
{
    struct iobuf *b = sv->s.rbuf;
    if (b && b->start > *fwd) {
        uint32_t n = b->start - *fwd;
        stream_write(&c->s, b->data + *fwd, n);
        sv->s.worker->stats.bytes_out += n;
        POOL_STAT_ADD(sv->pool->bytes_out, n);
    }
    if (b)
        *fwd = b->start;
    if (emit) {
        const uint8_t *p;
        size_t n;
        request_out_take(c, &p, &n);
        if (n)
            stream_write(&c->s, p, n);
    }
}

/* The request queue's verdict on server message m (request_server_msg()).
 * A message that fits the buffer goes whole: a server lost in the middle
 * of one (a cut inside a COMMIT's CommandComplete) leaves its client at a
 * message boundary, where it can still be told that the outcome is
 * unknown; mid-message it could only be closed bare (chaos
 * cut_mid_message). Only rows and COPY data longer than the buffer stream
 * through in pieces. While c's timed-out request settles (client.c,
 * timed_out()): an ErrorResponse is read whole, and one saying the
 * statement was cancelled (57014) is dropped with its ReadyForQuery, the
 * timeout's error going in their place. */
static unsigned relay_server_msg(struct client *c, struct server *sv, const struct stream_msg *m)
{
    if (m->avail < m->len && m->len <= sv->s.rbuf->cap)
        return REQUEST_MORE;
    if (m->type == 'E' && sv->pool->ep != 0 && m->avail == m->len)
        server_replica_trouble(sv, m->data, m->len); /* a read's error says it may be down */
    if (m->type == 'E' && c->timeout_kind && !c->timeout_cancelled) {
        if (m->avail < m->len)
            return REQUEST_MORE;
        struct proto_error_fields f;
        c->timeout_cancelled = proto_parse_error(m->data, m->len, &f) && f.sqlstate &&
                               strcmp(f.sqlstate, SQLSTATE_QUERY_CANCELED) == 0;
    }
    unsigned act = request_server_msg(c, sv, m);
    if (c->timeout_cancelled && (m->type == 'E' || m->type == 'Z'))
        act |= REQUEST_SWALLOW;
    return act;
}

/* Forwards what the server sent, message by message through the request
 * queue (which matches each to its request and lets observers swallow it
 * or add answers of sluice's), and gives the server back when the
 * transaction is over. */
static void relay_server_data(struct server *sv)
{
    struct stream *s = &sv->s;
    struct client *c = sv->client;
    if (retry_buf_of(c) && retry_on_trouble(sv, c))
        return;
    struct iobuf *b = s->rbuf;
    uint32_t fwd = b->start;
    enum relay_rfq at_rfq = RELAY_KEEP;
    bool resume = false;
    while (at_rfq == RELAY_KEEP && b->start < b->end) {
        struct stream_msg m;
        enum stream_msg_status ms = stream_next_msg(s, STREAM_MSG_HEAD, &m);
        if (ms == STREAM_MSG_MORE)
            break;
        if (ms != STREAM_MSG_OK) {
            relay_to_client(sv, c, &fwd, false);
            stream_uncork(&c->s);
            server_close(sv, "server sent a malformed message");
            return;
        }
        unsigned act = relay_server_msg(c, sv, &m);
        if (act & REQUEST_MORE) {
            /* Needed whole: what came before goes first (the buffer may
             * move to make room). */
            relay_to_client(sv, c, &fwd, false);
            stream_msg_whole(s, &m);
            b = s->rbuf;
            fwd = b->start;
            break;
        }
        if (act & REQUEST_SWALLOW) {
            /* What is left and sluice's answers go in one send (corked
             * until the end of this call). */
            stream_cork(&c->s);
            relay_to_client(sv, c, &fwd, false);
            stream_consume_msg(s, m.len);
            fwd = b->start;
            if (act & REQUEST_EMIT)
                relay_to_client(sv, c, &fwd, true);
            continue;
        }
        if (m.type == 'S') {
            server_param_status(sv, m.data, m.len);
        } else if (m.type == 'Z') {
            sv->xact_status = (char)m.data[5];
            /* Idle (in a transaction or not) from now, not from when the
             * request began: idle_transaction_timeout counts from here. */
            c->last_activity = worker_now(s->worker);
            at_rfq = relay_at_rfq(c, sv, sv->xact_status);
            if (at_rfq == RELAY_VIOLATION)
                break; /* the client gets the error instead of this ReadyForQuery */
            if (at_rfq == RELAY_RESUME) {
                resume = true;
                at_rfq = RELAY_KEEP;
            }
            if (at_rfq == RELAY_RELEASE && c->route && ryw_commit_due(&c->route->ryw, sv)) {
                /* Counted as pending before the client has its answer. */
                ryw_commit_begin(&c->route->ryw, sv);
                at_rfq = RELAY_RECORD;
            }
        }
        stream_consume_msg(s, m.len);
        if (act & REQUEST_EMIT) {
            stream_cork(&c->s);
            relay_to_client(sv, c, &fwd, true);
        }
    }
    relay_to_client(sv, c, &fwd, false);
    stream_uncork(&c->s);
    if (at_rfq == RELAY_MOVE || at_rfq == RELAY_RECORD) {
        if (b->start < b->end) {
            server_close(sv, "server sent data after ReadyForQuery");
            return;
        }
        stream_release_rbuf(s);
        if (at_rfq == RELAY_MOVE)
            relay_move(c, sv);
        else
            ryw_commit_read(sv); /* its scope counts it pending until then */
        return;
    }
    if (c->timeout_kind && !request_busy(c) && !request_head_entry(c)) {
        client_timeout_settled(c); /* everything in flight answered */
        return;
    }
    if (at_rfq == RELAY_VIOLATION) {
        client_close_error(c, SQLSTATE_FEATURE_NOT_SUPPORTED,
                           "transaction blocks not allowed in statement pooling mode");
        return;
    }
    if (resume && c->s.rbuf && iobuf_len(c->s.rbuf)) {
        c->s.ops->on_data(&c->s);
        if (sv->client != c)
            return;
    }
    if (at_rfq == RELAY_RELEASE) {
        if (b->start < b->end) {
            server_close(sv, "server sent data after ReadyForQuery");
            return;
        }
        stream_release_rbuf(s);
        pool_release_server(sv);
        return;
    }
    if (retry_buf_of(c) && (uint32_t)stream_written(&c->s) != c->route->retry_mark)
        relay_retry_drop(c); /* the answer began: no retry now */
    if (stream_has_output(&c->s)) {
        /* Backpressure: the client reads slower than the server writes. */
        stream_read_stop(s);
        c->s.blocked_src = s;
    }
    if (s->rbuf && s->rbuf->start == s->rbuf->end)
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
    if (ryw_commit_lost(sv)) {
        /* Its request was answered: it goes on without this server. */
        if (c && c->state != CL_CLOSED)
            pool_client_lost(c);
        return;
    }
    if (c && c->state != CL_CLOSED && (c->sets_pending || router_link_replay(c, sv))) {
        /* Nothing of the client's went to this server: its request waits
         * for another, which gets its settings, and opens its transaction
         * (the router's replay), in turn. */
        client_log(LOG_LVL_LOG, c, "its server went while its %s (%s): it waits",
                   c->sets_pending ? "settings were set" : "transaction was opened", why);
        c->sets_pending = false;
        if (c->route)
            router_link_lost(c);
        pool_client_retry(c);
        return;
    }
    if (!c || c->state == CL_CLOSED || relay_retry(c, why))
        return;
    if (ryw_ride_lost(c, sv)) {
        /* Its write's answer came, all but the ReadyForQuery held for the
         * position: the client gets it, and goes on (chaos commit_killed:
         * a COMMIT that committed was told "server conn crashed?"). */
        uint8_t z[8];
        struct proto_writer w;
        proto_writer_init(&w, z, sizeof(z));
        proto_build_ready(&w, sv->xact_status);
        stream_write(&c->s, w.buf, w.len);
        if (c->timeout_kind)
            client_timeout_settled(c);
        else
            pool_client_lost(c);
        return;
    }
    if (sv->s.skip && sv->s.skip_forward) {
        /* Gone in the middle of a message c has the beginning of (sv is
         * unlinked by now: client_close_error() cannot see it). */
        client_close_mid_message(c, "server conn crashed mid-message");
        return;
    }
    if (request_busy(c) && sv->xact_status != 'E' && !request_none_commits(c)) {
        /* A request was on its way and the server was not in a failed
         * transaction: an autocommit statement, or a COMMIT in a block, may
         * have committed before the server went. Nobody can tell, so the
         * client hears exactly that (08007), not 08006, which drivers and
         * applications take as "not done" (issue 17). A lone BEGIN cannot
         * commit: that client hears 08006 and no ReadyForQuery, so that its
         * driver marks the connection broken at once (psycopg 3.1 otherwise
         * keeps the connection with its transaction count off by one). */
        client_close_error_ready(c, SQLSTATE_RESOLUTION_UNKNOWN,
                                 "server conn crashed with a request in flight: "
                                 "transaction resolution unknown");
        return;
    }
    client_close_error(c, SQLSTATE_CONNECTION_FAILURE, "server conn crashed?");
}

static const struct server_holder_ops relay_holder = {
    .on_data = relay_server_data,
    .on_drained = relay_server_drained,
    .on_closed = relay_server_closed,
};
