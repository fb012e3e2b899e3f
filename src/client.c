/* client.c - a client connection's state machine: one handler per state for
 * what the client sent, and client_dispatch(), the one place where an idle
 * client's next request is sent on its way (a server of the pool the router
 * names, or the admin console). Login is client_login.c, forwarding relay.c,
 * the object's life client_conn.c. */
#include "client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client_conn.h"
#include "client_login.h"
#include "log.h"
#include "pool.h"
#include "prepared.h"
#include "proto.h"
#include "relay.h"
#include "replication.h"
#include "request.h"
#include "router.h"
#include "server.h"
#include "server_cancel.h"
#include "worker.h"

static const struct stream_ops client_ops;

static struct client *stream_client(struct stream *s)
{
    return (struct client *)((char *)s - offsetof(struct client, s));
}

void client_accept(struct worker *w, int fd, const struct sockaddr *addr, unsigned addrlen,
                   bool is_unix)
{
    if (!client_new(w, fd, addr, addrlen, is_unix, &client_ops))
        close(fd);
}

/* ---- dispatch ------------------------------------------------------------ */

/* c's next request has begun but its first message is not all here: the
 * wait counts from its first bytes, for query_timeout (client_janitor()).
 * Returns false (dispatch stops until more bytes come). */
static bool client_wait_bytes(struct client *c)
{
    if (!c->bytes_wait) {
        c->bytes_wait = true;
        c->request_time = worker_now(c->s.worker);
    }
    return false;
}

/* The first message of c's next request is at the start of its buffer and
 * c has no server: where does the request go? The admin console answers
 * its own clients; everything else waits for a server of the pool the
 * router picks. Returns false when c must wait (or was closed). */
static bool client_dispatch(struct client *c)
{
    if (c->is_admin) {
        client_login_console()->handle(c);
        return false;
    }
    struct stream_msg m;
    enum stream_msg_status ms = stream_next_msg(&c->s, STREAM_MSG_HEAD, &m);
    if (ms == STREAM_MSG_MORE)
        return client_wait_bytes(c);
    if (ms != STREAM_MSG_OK) {
        client_close_bad_message(c, ms);
        return false;
    }
    if (m.type == 'X') {
        client_close(c, "client close request");
        return false;
    }
    if (client_refuse_message(c, &m))
        return false; /* checked again once whole: dispatch starts over then */
    if (m.type == 'd' || m.type == 'c' || m.type == 'f') {
        /* COPY data after the COPY ended (it failed): a server drops them,
         * so sluice does, without taking one. */
        stream_consume_msg(&c->s, m.len);
        c->bytes_wait = false;
        return true;
    }
    if (!c->pool->db->cfg) {
        client_close_error(c, SQLSTATE_INVALID_CATALOG, "database \"%s\" was removed", c->dbname);
        return false;
    }
    /* A request takes a server once its first message is here whole, or
     * a read buffer's worth of it (the rest then streams through): a
     * client whose bytes stop coming holds its connection, not a server
     * (and a backend at the host), until query_timeout. */
    if (m.avail < m.len && iobuf_len(c->s.rbuf) < c->s.rbuf->cap)
        return client_wait_bytes(c);
    if ((m.type == 'P' || m.type == 'C') && prepared_idle(c)) {
        c->bytes_wait = false;
        return true; /* Parse/Close + Sync answered without a server */
    }
    /* The request begins here: its record (classification slot) is what
     * the router decides on. */
    struct request *r = request_current(c, m.type);
    struct router_decision d = router_route(c, r);
    if (d.target == ROUTE_WAIT)
        return client_wait_bytes(c); /* the rest of the message is on its way */
    c->bytes_wait = false;
    if (d.target == ROUTE_ANSWERED) {
        request_forget_unsent(c);
        return c->state == CL_IDLE;
    }
    log_noise("C-%p: request to %s %d: %s", (void *)c, router_target_str(d.target), d.endpoint,
              d.why);
    struct pool *p = d.endpoint == c->pool->ep ? c->pool : pool_of_endpoint(c->pool, d.endpoint);
    c->pool = p;
    if (d.target == ROUTE_REPLICA)
        POOL_STAT_ADD(p->replica_reads, 1);
    pool_client_wait(c, p, CL_WAITING);
    return c->state == CL_ACTIVE; /* lent at once: forward */
}

/* ---- the state machine --------------------------------------------------- */

/* Handles whatever c has buffered, as far as its state allows. */
static void client_process(struct client *c)
{
    struct stream *s = &c->s;
    for (;;) {
        if (!s->rbuf || iobuf_len(s->rbuf) == 0)
            return;
        switch (client_state_of(c)) {
        case CL_STARTUP:
        case CL_AUTH:
            if (!client_login_read(c))
                return;
            continue;
        case CL_IDLE:
            if (!client_dispatch(c))
                return;
            continue;
        case CL_ACTIVE:
            if (c->replication) {
                replication_client_data(c); /* bytes as they are */
                return;
            }
            if (c->server->state == SV_ACTIVE)
                relay_client_data(c);
            return; /* else the SETs of the link still run */
        default:
            return; /* waiting for something else: keep the bytes */
        }
    }
}

static void client_on_data(struct stream *s)
{
    struct client *c = stream_client(s);
    client_process(c);
    /* An emptied read buffer goes back to the worker's cache, so an idle
     * client holds none. */
    if (c->state != CL_CLOSED)
        stream_release_rbuf(s);
}

static void client_on_drained(struct stream *s)
{
    struct client *c = stream_client(s);
    if (!client_flushed(c))
        relay_client_drained(c);
}

static void client_on_closed(struct stream *s, const char *reason)
{
    struct client *c = stream_client(s);
    if (!client_flushed(c))
        client_close(c, reason ? reason : "client unexpected eof");
}

static const struct stream_ops client_ops = {
    .on_data = client_on_data,
    .on_drained = client_on_drained,
    .on_closed = client_on_closed,
};

/* ---- what the pool asks of clients ---------------------------------------- */

void client_link(struct server *sv, struct client *c)
{
    if (c->auth) /* still logging in: it waited for auth_query */
        client_login_auth_query(sv, c);
    else
        relay_link(sv, c);
}

void client_unlinked(struct client *c)
{
    client_set_state(c, CL_IDLE);
    c->timeout_kind = 0;
    c->sets_pending = false;
    relay_retry_drop(c);
    router_unlinked(c);
    c->last_activity = worker_now(c->s.worker);
    request_unlinked(c);
    c->s.blocked_src = NULL;
    stream_read_start(&c->s);
    if (c->s.rbuf && iobuf_len(c->s.rbuf))
        client_on_data(&c->s);
    else
        stream_release_rbuf(&c->s);
}

void client_reroute(struct client *c)
{
    if (c->s.rbuf && iobuf_len(c->s.rbuf))
        client_on_data(&c->s);
}

void client_fail(struct client *c, const char *sqlstate, const char *msg)
{
    client_close_error(c, sqlstate, "%s", msg);
}

/* ---- timeouts ------------------------------------------------------------ */

/* transaction_timeout: c's server has been in a transaction (from the
 * first request of it) longer than PgBouncer 1.25's setting allows. */
static bool xact_too_long(const struct server *sv, bool busy, int64_t limit, int64_t now)
{
    return limit > 0 && (busy || sv->xact_status != 'I') && sv->xact_start &&
           now - sv->xact_start >= limit;
}

/* How long a timed-out request's server has to answer its cancel before
 * the outcome counts as unknown (a server that does not answer at all:
 * blackholed, or stuck). */
#define TIMEOUT_SETTLE_USEC 2000000

/* query_timeout or transaction_timeout: the server's statement is
 * cancelled and the client closed. With a request in flight that may
 * commit (an autocommit statement, a COMMIT: anything outside a failed
 * transaction), closing at once would guess its outcome: the server's
 * answer to the cancel decides. Cancelled (57014): the client hears the
 * timeout; done after all: it gets its answer, then the timeout; no
 * answer within TIMEOUT_SETTLE_USEC: 08007, the outcome is unknown. */
static void timed_out(struct client *c, struct server *sv, bool busy, bool query, int64_t now)
{
    /* A cancel costs the host a connection (and a fork) and stops only a
     * statement that runs: none runs on a server still reading its only
     * Query, owing no answer or skipping to Sync after an error, and one
     * blocked sending rows to a client that does not read them acts on no
     * cancel. Closing the server ends each of those. */
    bool idle = request_server_idle(c);
    bool unread = stream_has_output(&c->s);
    if (sv->backend_pid && busy && !idle && !unread)
        server_send_cancel(sv);
    /* A server that runs nothing of the client's is where the client left
     * it: client_detach() rolls that back and keeps it, where it can. */
    if (busy && !idle)
        server_close_later(sv, query ? "query timeout" : "transaction timeout"); /* PgBouncer's */
    /* Nothing in flight can commit: no request, a failed transaction's, a
     * Query the server has not had whole (streaming, or still in sluice's
     * buffer), a server that runs nothing of the client's, or one whose
     * answer is under way and waits for the client to read it (rows still
     * coming: its statement has not finished). */
    if (!busy || sv->xact_status == 'E' || (c->s.skip && c->s.skip_forward) || idle || unread) {
        client_close_timed_out(c, query);
        return;
    }
    if (sv->backend_pid && c->rq->r_n == 1) {
        c->timeout_kind = query ? CLIENT_TIMEOUT_QUERY : CLIENT_TIMEOUT_XACT;
        c->timeout_cancelled = false;
        sv->settle_until = now + TIMEOUT_SETTLE_USEC;
        return; /* relay.c forwards no more of c's, and ends it at the answer */
    }
    /* No cancel to wait for, or pipelined requests the cancel cannot all
     * stop. */
    client_close_error_ready(c, SQLSTATE_RESOLUTION_UNKNOWN,
                             "%s with a request in flight: transaction resolution unknown",
                             query ? "query timeout (query_timeout)" : "transaction timeout");
}

/* query_timeout, transaction_timeout, server_fast_close,
 * idle_transaction_timeout and client_idle_timeout of a client with a
 * server (t: the client's, its user's entry over the general settings). */
static void client_janitor_active(struct client *c, const struct config *cfg,
                                  const struct pool_client_timeouts *t, int64_t now)
{
    struct server *sv = c->server;
    if (!sv || c->replication)
        return; /* a walsender's client: no requests sluice follows */
    if (c->timeout_kind) {
        if (now >= sv->settle_until) {
            bool query = c->timeout_kind == CLIENT_TIMEOUT_QUERY;
            c->timeout_kind = 0;
            client_close_error_ready(c, SQLSTATE_RESOLUTION_UNKNOWN,
                                     "%s: the server did not answer the cancel: transaction "
                                     "resolution unknown",
                                     query ? "query timeout (query_timeout)"
                                           : "transaction timeout");
        }
        return;
    }
    bool busy = request_busy(c);
    int64_t started = request_oldest_start(c);
    bool query = started && t->query_timeout > 0 && now - started >= t->query_timeout;
    if (query || xact_too_long(sv, busy, t->transaction_timeout, now)) {
        timed_out(c, sv, busy, query, now);
        return;
    }
    /* server_fast_close: in session mode a server marked for closing
     * (RECONNECT, a reload that changed its database, a DNS change) goes
     * at the end of its transaction rather than of its session, and its
     * client with it, as in PgBouncer. */
    if (cfg->server_fast_close && !c->track && sv->close_needed && !busy &&
        sv->xact_status == 'I') {
        client_close_error(c, SQLSTATE_PROTOCOL_VIOLATION, "database configuration changed");
        return;
    }
    if (!busy && sv->xact_status != 'I' && t->idle_transaction_timeout > 0 &&
        now - c->last_activity >= t->idle_transaction_timeout) {
        client_close_error(c, SQLSTATE_IDLE_IN_XACT_TIMEOUT, "idle transaction timeout");
        return;
    }
    if (!busy && sv->xact_status == 'I' && t->client_idle_timeout > 0 &&
        now - c->last_activity >= t->client_idle_timeout)
        client_close_error(c, SQLSTATE_CONNECTION_FAILURE, "client_idle_timeout");
}

void client_close_all(struct worker *w)
{
    while (!list_empty(&w->clients)) {
        struct client *c = list_entry(list_first(&w->clients), struct client, node);
        if (c->state == CL_CLOSED)
            client_drop_flushing(c); /* client_close() would leave it: no end */
        else
            client_close(c, "shutdown");
    }
}

void client_janitor(struct worker *w)
{
    const struct config *cfg = g_pooler.cfg;
    int64_t now = worker_now(w);
    struct pool_client_timeouts t;
    struct list *it, *tmp;
    list_for_each_safe(it, tmp, &w->clients)
    {
        struct client *c = list_entry(it, struct client, node);
        switch (client_state_of(c)) {
        case CL_STARTUP:
        case CL_AUTH:
        case CL_AUTH_WAIT:
        case CL_AUTH_QUERY:
        case CL_LOGIN_WAIT:
            if (cfg->client_login_timeout > 0 && now - c->connect_time >= cfg->client_login_timeout)
                client_close_error(c, SQLSTATE_CONNECTION_FAILURE, "client_login_timeout");
            break;
        case CL_IDLE:
            pool_client_timeouts(c, &t);
            if (c->bytes_wait && t.query_timeout > 0 && now - c->request_time >= t.query_timeout)
                client_close_error(c, SQLSTATE_QUERY_CANCELED, "query timeout (query_timeout)");
            else if (t.client_idle_timeout > 0 && now - c->last_activity >= t.client_idle_timeout)
                client_close_error(c, SQLSTATE_CONNECTION_FAILURE, "client_idle_timeout");
            else if (router_txn_virtual(c) && t.idle_transaction_timeout > 0 &&
                     now - c->last_activity >= t.idle_transaction_timeout)
                client_close_error(c, SQLSTATE_IDLE_IN_XACT_TIMEOUT, "idle transaction timeout");
            break;
        case CL_ACTIVE:
            pool_client_timeouts(c, &t);
            client_janitor_active(c, cfg, &t, now);
            break;
        case CL_CLOSED: /* still writing its last bytes */
            if (c->s.bytes_out != c->flush_mark) {
                c->flush_mark = c->s.bytes_out;
                c->last_activity = now;
            } else if (now - c->last_activity >= CLIENT_FLUSH_STALL) {
                client_drop_flushing(c);
            }
            break;
        default:
            break;
        }
    }
}
