/* server_cancel.c - cancelling the query a server runs: by
 * pg_cancel_backend() on an idle server of the same pool, or by a
 * CancelRequest on a connection of its own (server_cancel.h says why). */
#include "server_cancel.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "log.h"
#include "pool.h"
#include "server.h"
#include "server_query.h"
#include "worker.h"

#define CANCEL_SQL "SELECT pg_cancel_backend($1)"
/* A pool whose cancels come closer together than this and that has no
 * idle server to ask on opens one, so that the next cancels cost no fork. */
#define CANCEL_SPARE_WITHIN_USEC 1000000

struct cancel_conn {
    struct stream s; /* the CancelRequest's connection, once connecting */
    struct pool *pool;
    uint64_t server_id;
    struct server *server;
    struct worker *worker; /* the server's: where the cancel runs */
    struct server *helper; /* the idle server asking pg_cancel_backend(), while it asks */
    struct list node;      /* on its worker's cancels, so shutdown can free them */
    ev_timer timer;        /* cancel_wait_timeout, when set */
    bool connected;        /* s was set up by stream_connect() */
    /* Dropped while the helper asks: its end frees cc (on a timeout the
     * target hears of it, as when the cancel lands; at shutdown nothing). */
    enum { CANCEL_GOING = 0, CANCEL_TIMED_OUT, CANCEL_SHUTDOWN } ending;
};

static struct cancel_conn *stream_cancel(struct stream *s)
{
    return (struct cancel_conn *)((char *)s - offsetof(struct cancel_conn, s));
}

/* The server we cancelled for, if it still exists. */
static bool is_cancel_target(struct server *sv, void *arg)
{
    const struct cancel_conn *cc = arg;
    return sv == cc->server && sv->id == cc->server_id;
}

static struct server *cancel_target(struct cancel_conn *cc)
{
    return pool_find_server(cc->pool, is_cancel_target, cc);
}

static void cancel_free(struct cancel_conn *cc)
{
    ev_timer_stop(cc->worker->loop, &cc->timer);
    if (cc->connected)
        stream_close(&cc->s);
    list_del(&cc->node);
    free(cc);
}

/* The cancel has landed, failed or was dropped: its server may be used
 * again once no other cancel is on its way. */
static void cancel_done(struct cancel_conn *cc)
{
    struct server *sv = cancel_target(cc);
    cancel_free(cc);
    if (!sv)
        return;
    if (sv->cancels_in_flight > 0)
        sv->cancels_in_flight--;
    if (sv->cancels_in_flight == 0 && sv->state == SV_CANCEL_WAIT) {
        /* The cancel has landed; the server can serve others now. */
        if (server_is_clean(sv))
            pool_server_ready(sv);
        else
            server_close(sv, sv->close_why ? sv->close_why : "not clean after cancel");
    }
}

/* ---- by CancelRequest ------------------------------------------------------ */

static void cancel_on_connected(struct stream *s, int err)
{
    struct cancel_conn *cc = stream_cancel(s);
    if (err) {
        cancel_done(cc);
        return;
    }
    struct server *sv = cancel_target(cc);
    if (!sv) {
        cancel_done(cc);
        return;
    }
    stream_write_cancel(s, sv->backend_pid, sv->backend_key);
}

static void cancel_on_data(struct stream *s)
{
    /* PostgreSQL answers nothing; discard. */
    s->rbuf->start = s->rbuf->end;
}

static void cancel_on_closed(struct stream *s, const char *reason)
{
    cancel_done(stream_cancel(s));
}

static const struct stream_ops cancel_ops = {
    .on_data = cancel_on_data,
    .on_closed = cancel_on_closed,
    .on_connected = cancel_on_connected,
};

/* The CancelRequest for sv's backend, to the backend's own address (a
 * name with several may point elsewhere). False if it could not start. */
static bool cancel_connect(struct cancel_conn *cc, struct server *sv)
{
    struct sockaddr_storage peer;
    socklen_t plen = sizeof(peer);
    if (getpeername(sv->s.fd, (struct sockaddr *)&peer, &plen) < 0) {
        peer = cc->pool->addr;
        plen = cc->pool->addrlen;
    }
    if (stream_connect(&cc->s, sv->s.worker, (struct sockaddr *)&peer, plen, &cancel_ops) < 0)
        return false;
    cc->connected = true;
    server_log(LOG_LVL_LOG, sv, "sending cancel request to backend pid %u", sv->backend_pid);
    return true;
}

/* ---- by pg_cancel_backend() -------------------------------------------------- */

static void helper_error(struct server *hv, void *arg, const char *sqlstate, const char *text)
{
    struct cancel_conn *cc = arg;
    if (!atomic_exchange_explicit(&cc->pool->cancel_by_request, true, memory_order_relaxed))
        server_log(LOG_LVL_WARNING, hv,
                   "pg_cancel_backend() failed (%s: %s): this pool's cancels go by "
                   "CancelRequest from now on",
                   sqlstate, text);
}

/* The helper answered (or closed): it goes back to the pool; the cancel has
 * landed, or goes by CancelRequest if the helper could not say so. */
static void helper_done(struct server *hv, void *arg, enum server_query_status st)
{
    struct cancel_conn *cc = arg;
    cc->helper = NULL;
    if (st != SERVER_QUERY_GONE) {
        if (hv->xact_status == 'I')
            pool_server_ready(hv);
        else
            server_close(hv, "cancel query left a transaction open");
    }
    if (cc->ending == CANCEL_SHUTDOWN) {
        cancel_free(cc);
        return;
    }
    struct server *sv = st == SERVER_QUERY_OK || cc->ending ? NULL : cancel_target(cc);
    if (!sv || !cancel_connect(cc, sv))
        cancel_done(cc);
}

static const struct server_query_ops helper_ops = {.on_error = helper_error,
                                                   .on_done = helper_done};

/* An idle server that can cancel sv's query: one to the same address. */
static bool helper_fits(const struct server *hv, const void *arg)
{
    const struct server *sv = arg;
    return hv != sv && hv->target == sv->target && hv->backend_pid && !hv->replication;
}

static bool same_peer(const struct server *a, const struct server *b)
{
    struct sockaddr_storage pa, pb;
    socklen_t la = sizeof(pa), lb = sizeof(pb);
    return getpeername(a->s.fd, (struct sockaddr *)&pa, &la) == 0 &&
           getpeername(b->s.fd, (struct sockaddr *)&pb, &lb) == 0 && la == lb &&
           memcmp(&pa, &pb, la) == 0;
}

/* Asks an idle server of sv's pool to cancel sv's query; false if there
 * is none (or none at sv's address). */
static bool cancel_by_query(struct cancel_conn *cc, struct server *sv)
{
    struct pool *p = cc->pool;
    if (atomic_load_explicit(&p->cancel_by_request, memory_order_relaxed))
        return false;
    int64_t now = worker_now(cc->worker);
    int64_t prev = atomic_exchange_explicit(&p->last_cancel, now, memory_order_relaxed);
    /* The spare is opened on the server's worker only from that worker:
     * a cancel taken by another (world stopped) does not start connects on it. */
    bool frequent = prev && now - prev < CANCEL_SPARE_WITHIN_USEC && worker_current() == cc->worker;
    struct server *hv = pool_take_idle(p, cc->worker, helper_fits, sv, frequent);
    if (!hv)
        return false;
    if (!same_peer(hv, sv)) {
        pool_server_ready(hv);
        return false;
    }
    char pid[16];
    snprintf(pid, sizeof(pid), "%u", sv->backend_pid);
    const char *params[1] = {pid};
    cc->helper = hv;
    if (!server_query(hv, CANCEL_SQL, 1, params, &helper_ops, cc)) {
        cc->helper = NULL;
        return false;
    }
    server_log(LOG_LVL_LOG, sv, "cancelling backend pid %u through S-%p", sv->backend_pid,
               (void *)hv);
    return true;
}

/* ---- both ------------------------------------------------------------------------ */

/* cancel_wait_timeout: the cancel could not be delivered in time (its
 * server's host does not answer): it is dropped, and the server it was
 * for stops waiting for it. */
static void cancel_timeout_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct cancel_conn *cc = t->data;
    struct server *sv = cancel_target(cc);
    if (sv)
        server_log(LOG_LVL_WARNING, sv,
                   "cancel request to backend pid %u dropped: cancel_wait_timeout",
                   sv->backend_pid);
    if (cc->helper) {
        cc->ending = CANCEL_TIMED_OUT;
        server_close(cc->helper, "cancel_wait_timeout"); /* helper_done() ends cc */
        return;
    }
    cancel_done(cc);
}

void server_send_cancel(struct server *sv)
{
    struct worker *w = sv->s.worker;
    struct cancel_conn *cc = calloc(1, sizeof(*cc));
    if (!cc)
        abort();
    cc->pool = sv->pool;
    cc->server = sv;
    cc->server_id = sv->id;
    cc->worker = w;
    if (!cancel_by_query(cc, sv) && !cancel_connect(cc, sv)) {
        free(cc);
        return;
    }
    list_init(&cc->node);
    list_add_tail(&w->cancels, &cc->node);
    ev_timer_init(&cc->timer, cancel_timeout_cb, 0., 0.);
    cc->timer.data = cc;
    int64_t timeout = g_pooler.cfg->cancel_wait_timeout;
    if (timeout > 0) {
        ev_timer_set(&cc->timer, (double)timeout / 1e6, 0.);
        ev_timer_start(w->loop, &cc->timer);
    }
    sv->cancels_in_flight++;
}

void server_cancel_free_all(struct worker *w)
{
    while (!list_empty(&w->cancels)) {
        struct cancel_conn *cc = list_entry(list_first(&w->cancels), struct cancel_conn, node);
        if (cc->helper) {
            cc->ending = CANCEL_SHUTDOWN;
            server_close(cc->helper, "shutting down"); /* helper_done() frees cc */
            continue;
        }
        cancel_free(cc);
    }
}
