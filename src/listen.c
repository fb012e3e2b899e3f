/* listen.c - LISTEN / UNLISTEN under transaction pooling: one listening
 * server connection per pool, a channel -> clients map, and per-client
 * queues of notifications for clients that are inside a transaction.
 *
 * All of this runs on the loop that owns the pools (one worker today), so
 * there is no locking. A client that never LISTENs costs a NULL pointer
 * (c->lc); a pool whose clients never LISTEN has no listener at all.
 */
#include "listen.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "pool.h"
#include "proto.h"
#include "request.h"
#include "server.h"
#include "server_query.h"
#include "worker.h"

/* One channel and who listens on it. */
struct lchan {
    char name[64];
    struct client **cl;
    int n, cap;
    uint64_t seq; /* number of the query that LISTENed on the current connection; 0 = not sent */
};

/* The listening connection of one pool. */
struct listener {
    struct listener *next;
    struct pool *pool;
    struct server *sv; /* NULL when there is none (not needed, or failed) */
    bool up;           /* logged in: queries may be sent */
    uint64_t sent;     /* queries sent on sv */
    uint64_t done;     /* ReadyForQuery received on sv */
    struct lchan **ch;
    int nch, capch;
    struct client **waiters; /* clients whose LISTEN waits for done >= seq */
    int nwait, capwait;
    ev_timer tick;   /* every second: reconnect, honour close_needed */
    bool retry_wait; /* the last connection failed: reconnect at the next tick */
};

/* What a listening client has: its listener and the notifications queued
 * while it is in a transaction. */
struct listen_client {
    struct listener *l;
    uint8_t *q;
    size_t qlen, qcap;
    bool dropped; /* queue overflow already logged */
};

static struct listener *g_listeners;
static bool g_shutdown;

static void *xrealloc_or_die(void *p, size_t n)
{
    void *r = realloc(p, n);
    if (!r)
        abort();
    return r;
}

size_t listen_quote_ident(const char *channel, char *out, size_t cap)
{
    size_t k = 0;
    if (cap < 3)
        return 0;
    out[k++] = '"';
    for (const char *p = channel; *p; p++) {
        size_t need = *p == '"' ? 2 : 1;
        if (k + need + 2 > cap)
            return 0;
        out[k++] = *p;
        if (*p == '"')
            out[k++] = '"';
    }
    out[k++] = '"';
    out[k] = '\0';
    return k;
}

const char *listen_notification_channel(const unsigned char *body, size_t n)
{
    if (n < 5)
        return NULL;
    const unsigned char *p = body + 4, *end = body + n;
    const unsigned char *z = memchr(p, 0, (size_t)(end - p));
    if (!z || !memchr(z + 1, 0, (size_t)(end - z - 1)))
        return NULL;
    return (const char *)p;
}

/* ---- listeners ---------------------------------------------------------- */

static struct worker *listen_worker(void)
{
    return &g_pooler.workers[0];
}

static const struct server_holder_ops listen_holder;
static void wake(struct listener *l);

static void query_error(struct server *sv, void *arg, const char *sqlstate, const char *text)
{
    server_log(LOG_LVL_WARNING, sv, "LISTEN/UNLISTEN failed: %s", text);
}

/* A LISTEN or UNLISTEN has completed (or the connection went): the
 * clients waiting for it are answered. */
static void query_done(struct server *sv, void *arg, enum server_query_status st)
{
    struct listener *l = arg;
    if (st == SERVER_QUERY_GONE)
        return; /* listen_server_closed() wakes everyone */
    l->done++;
    wake(l);
}

static const struct server_query_ops listen_query_ops = {.on_error = query_error,
                                                         .on_done = query_done};

static void send_query(struct listener *l, const char *verb, const char *channel)
{
    char q[200];
    char id[140];
    if (channel && !listen_quote_ident(channel, id, sizeof(id)))
        return; /* cannot happen: names are at most 63 bytes */
    snprintf(q, sizeof(q), "%s %s", verb, channel ? id : "*");
    if (server_query(l->sv, q, 0, NULL, &listen_query_ops, l))
        l->sent++;
}

static void connect_listener(struct listener *l)
{
    if (l->sv || g_shutdown || g_pooler.shutting_down)
        return;
    l->up = false;
    l->sent = l->done = 0;
    l->retry_wait = false;
    struct server *sv = pool_connect_server(l->pool, listen_worker(), &listen_holder);
    if (!sv) {
        l->retry_wait = true;
        return;
    }
    l->sv = sv;
}

/* Reconnects a failed listening connection (a short gap: notifications in
 * it are lost) and replaces one that RECONNECT or a reload marked. */
static void tick_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct listener *l = t->data;
    if (g_shutdown)
        return;
    if (l->sv && l->up && l->sv->close_needed)
        server_close(l->sv, "close needed");
    else if (!l->sv && l->nch > 0)
        connect_listener(l);
}

static struct listener *listener_of_pool(struct pool *p, bool create)
{
    for (struct listener *l = g_listeners; l; l = l->next)
        if (l->pool == p)
            return l;
    if (!create)
        return NULL;
    struct listener *l = calloc(1, sizeof(*l));
    if (!l)
        abort();
    l->pool = p;
    l->next = g_listeners;
    g_listeners = l;
    ev_timer_init(&l->tick, tick_cb, 1.0, 1.0);
    l->tick.data = l;
    struct ev_loop *loop = listen_worker()->loop;
    ev_timer_start(loop, &l->tick);
    ev_unref(loop); /* does not keep the loop running */
    return l;
}

static struct listener *listener_of_server(const struct server *sv)
{
    for (struct listener *l = g_listeners; l; l = l->next)
        if (l->sv == sv)
            return l;
    return NULL;
}

/* Lets the waiting clients run again: each asks once more. */
static void wake(struct listener *l)
{
    if (!l->nwait)
        return;
    struct client **w = l->waiters;
    int n = l->nwait;
    l->waiters = NULL;
    l->nwait = l->capwait = 0;
    for (int i = 0; i < n; i++) {
        struct client *c = w[i];
        if (c->state == CL_CLOSED)
            continue;
        stream_read_start(&c->s);
        if (c->s.rbuf && iobuf_len(c->s.rbuf))
            c->s.ops->on_data(&c->s);
    }
    free(w);
}

static void add_waiter(struct listener *l, struct client *c)
{
    for (int i = 0; i < l->nwait; i++)
        if (l->waiters[i] == c)
            return;
    if (l->nwait == l->capwait) {
        l->capwait = l->capwait ? l->capwait * 2 : 4;
        l->waiters = xrealloc_or_die(l->waiters, (size_t)l->capwait * sizeof(*l->waiters));
    }
    l->waiters[l->nwait++] = c;
}

static void remove_waiter(struct listener *l, const struct client *c)
{
    for (int i = 0; i < l->nwait; i++)
        if (l->waiters[i] == c) {
            l->waiters[i] = l->waiters[--l->nwait];
            return;
        }
}

static struct lchan *find_chan(struct listener *l, const char *name, int *idx)
{
    for (int i = 0; i < l->nch; i++)
        if (!strcmp(l->ch[i]->name, name)) {
            if (idx)
                *idx = i;
            return l->ch[i];
        }
    return NULL;
}

/* Removes c from channel i; the last one out UNLISTENs on the server. */
static void chan_remove(struct listener *l, int i, const struct client *c)
{
    struct lchan *ch = l->ch[i];
    for (int k = 0; k < ch->n; k++)
        if (ch->cl[k] == c) {
            memmove(ch->cl + k, ch->cl + k + 1, (size_t)(ch->n - k - 1) * sizeof(*ch->cl));
            ch->n--;
            break;
        }
    if (ch->n > 0)
        return;
    if (l->up && l->sv)
        send_query(l, "UNLISTEN", ch->name);
    free(ch->cl);
    free(ch);
    l->ch[i] = l->ch[--l->nch];
}

/* ---- clients ------------------------------------------------------------ */

bool listen_client_op(struct client *c, enum listen_op op, const char *channel)
{
    if (op != LISTEN_OP_LISTEN) {
        if (!c->lc)
            return true;
        struct listener *l = c->lc->l;
        if (op == LISTEN_OP_UNLISTEN_ALL) {
            for (int i = l->nch - 1; i >= 0; i--)
                chan_remove(l, i, c);
        } else {
            int i;
            if (find_chan(l, channel, &i))
                chan_remove(l, i, c);
        }
        return true;
    }
    if (!c->pool)
        return true;
    if (!c->lc) {
        c->lc = calloc(1, sizeof(*c->lc));
        if (!c->lc)
            abort();
        c->lc->l = listener_of_pool(c->pool, true);
    }
    struct listener *l = c->lc->l;
    struct lchan *ch = find_chan(l, channel, NULL);
    if (!ch) {
        ch = calloc(1, sizeof(*ch));
        if (!ch)
            abort();
        snprintf(ch->name, sizeof(ch->name), "%s", channel);
        if (l->nch == l->capch) {
            l->capch = l->capch ? l->capch * 2 : 8;
            l->ch = xrealloc_or_die(l->ch, (size_t)l->capch * sizeof(*l->ch));
        }
        l->ch[l->nch++] = ch;
        if (l->up && l->sv) {
            send_query(l, "LISTEN", ch->name);
            ch->seq = l->sent;
        }
    }
    bool member = false;
    for (int k = 0; k < ch->n && !member; k++)
        member = ch->cl[k] == c;
    if (!member) {
        if (ch->n == ch->cap) {
            ch->cap = ch->cap ? ch->cap * 2 : 4;
            ch->cl = xrealloc_or_die(ch->cl, (size_t)ch->cap * sizeof(*ch->cl));
        }
        ch->cl[ch->n++] = c;
    }
    if (!l->sv && !l->retry_wait)
        connect_listener(l);
    if (l->sv && (ch->seq == 0 || l->done < ch->seq)) {
        /* Answer only once the server listens: a NOTIFY the client sends
         * after its LISTEN completed must reach it. */
        add_waiter(l, c);
        stream_read_stop(&c->s);
        return false;
    }
    return true;
}

/* Empties lc's queue of notifications (they were handed over). */
static void queue_clear(struct listen_client *lc)
{
    free(lc->q);
    lc->q = NULL;
    lc->qlen = lc->qcap = 0;
    lc->dropped = false;
}

/* Writes what is queued for c now (c is idle). */
static void listen_client_flush(struct client *c)
{
    struct listen_client *lc = c->lc;
    if (!lc || !lc->qlen)
        return;
    stream_write(&c->s, lc->q, lc->qlen);
    queue_clear(lc);
}

void listen_client_free(struct client *c)
{
    struct listen_client *lc = c->lc;
    if (!lc)
        return;
    struct listener *l = lc->l;
    for (int i = l->nch - 1; i >= 0; i--)
        chan_remove(l, i, c);
    remove_waiter(l, c);
    free(lc->q);
    free(lc);
    c->lc = NULL;
}

/* Gives one NotificationResponse (msg, n bytes with header) to c. */
static void deliver(struct client *c, const uint8_t *msg, size_t n)
{
    struct listen_client *lc = c->lc;
    if (c->state == CL_CLOSED)
        return;
    if (!c->server && (c->state == CL_IDLE || c->state == CL_WAITING || c->state == CL_ASSIGNED)) {
        listen_client_flush(c);
        stream_write(&c->s, msg, n);
        return;
    }
    if (lc->qlen + n > LISTEN_QUEUE_MAX) {
        if (!lc->dropped)
            log_warning("C-%p: notification queue full (%u bytes), dropping notifications",
                        (void *)c, LISTEN_QUEUE_MAX);
        lc->dropped = true;
        return;
    }
    if (lc->qlen + n > lc->qcap) {
        size_t cap = lc->qcap ? lc->qcap : 256;
        while (cap < lc->qlen + n)
            cap *= 2;
        lc->q = xrealloc_or_die(lc->q, cap);
        lc->qcap = cap;
    }
    memcpy(lc->q + lc->qlen, msg, n);
    lc->qlen += n;
}

static void notify(struct listener *l, const uint8_t *msg, uint32_t mlen)
{
    const char *chname = listen_notification_channel(msg + 5, mlen - 5);
    if (!chname)
        return;
    struct lchan *ch = find_chan(l, chname, NULL);
    if (!ch)
        return; /* UNLISTENed meanwhile */
    for (int k = 0; k < ch->n; k++)
        deliver(ch->cl[k], msg, mlen);
}

/* ---- the listening server ----------------------------------------------- */

static void listen_server_ready(struct server *sv)
{
    struct listener *l = listener_of_server(sv);
    struct pool *p = sv->pool;
    if (!l) {
        server_close(sv, "listener not needed");
        return;
    }
    l->up = true;
    for (int i = 0; i < l->nch; i++) {
        send_query(l, "LISTEN", l->ch[i]->name);
        l->ch[i]->seq = l->sent;
    }
    log_info("S-%p: listening connection for %s/%s, %d channel(s)", (void *)sv, p->db->name,
             p->user->name, l->nch);
    wake(l); /* nothing to wait for when there are no channels */
}

static void listen_server_notify(struct server *sv, const struct stream_msg *m)
{
    struct listener *l = listener_of_server(sv);
    if (l)
        notify(l, m->data, m->len);
}

/* Bytes with no LISTEN pending: notifications, read as sluice's own. */
static void listen_server_data(struct server *sv)
{
    char why[300];
    if (server_query_read(sv, why, sizeof(why)) == SERVER_READ_BAD)
        server_close(sv, why);
}

static void listen_server_closed(struct server *sv, struct client *c, const char *why)
{
    struct listener *l = listener_of_server(sv);
    if (!l)
        return;
    l->sv = NULL;
    l->up = false;
    for (int i = 0; i < l->nch; i++)
        l->ch[i]->seq = 0;
    l->retry_wait = true;
    wake(l); /* their LISTENs are answered; notifications come after the reconnect */
}

static const struct server_holder_ops listen_holder = {
    .on_ready = listen_server_ready,
    .on_data = listen_server_data,
    .on_notify = listen_server_notify,
    .on_closed = listen_server_closed,
};

void listen_shutdown(void)
{
    if (g_shutdown)
        return;
    g_shutdown = true;
    struct ev_loop *loop = listen_worker()->loop;
    for (struct listener *l = g_listeners; l; l = l->next) {
        ev_ref(loop);
        ev_timer_stop(loop, &l->tick);
    }
}

/* ---- the request observer -------------------------------------------------- */

/* This observer's number, for the entries it owns. */
static int listen_owner;

/* LISTEN / UNLISTEN [*] alone in a Query, from an unpinned client whose
 * server is idle with nothing in flight: registered here and answered by
 * sluice (an empty query keeps the server's order and gives the
 * ReadyForQuery; its EmptyQueryResponse becomes the command's tag).
 * Inside a transaction block, with other statements or behind pipelined
 * requests, LISTEN pins (prepared.c); UNLISTEN there also leaves the
 * channels here and goes on to the server. DISCARD ALL alone ends the
 * client's LISTENs here too. */
static int64_t listen_on_client_msg(struct client *c, struct request_msg *rm)
{
    enum classify_kw kw;
    if (rm->type != 'Q' || !c->pool)
        return rm->len;
    if (!request_msg_keyword(c, rm, &kw))
        return REQUEST_WAIT;
    if (kw != CK_LISTEN && kw != CK_DISCARD)
        return rm->len;
    const char *sql;
    size_t len;
    const struct classify_result *cr;
    if (!request_msg_parse(c, rm, &sql, &len, &cr))
        return REQUEST_WAIT;
    if (!cr || cr->truncated || cr->n != 1)
        return rm->len;
    const struct classify_stmt *s = &cr->stmts[0];
    if (s->kind == CS_DISCARD_ALL) {
        listen_client_op(c, LISTEN_OP_UNLISTEN_ALL, "");
        return rm->len;
    }
    if (s->kind != CS_LISTEN && s->kind != CS_UNLISTEN && s->kind != CS_UNLISTEN_ALL)
        return rm->len;
    /* The listening connection serves one event loop: with several workers
     * LISTEN pins its client instead (docs/pooling.md). */
    if (g_pooler.n_workers > 1)
        return rm->len;
    enum listen_op op = s->kind == CS_LISTEN     ? LISTEN_OP_LISTEN
                        : s->kind == CS_UNLISTEN ? LISTEN_OP_UNLISTEN
                                                 : LISTEN_OP_UNLISTEN_ALL;
    struct server *sv = c->server;
    if (c->pinned || !request_only(c) || sv->xact_status != 'I') {
        if (op != LISTEN_OP_LISTEN)
            listen_client_op(c, op, s->name);
        return rm->len;
    }
    if (!listen_client_op(c, op, s->name))
        return REQUEST_WAIT; /* asked again once the listening server has it */
    request_msg_consume(c, rm);
    static const uint8_t empty_query[] = {'Q', 0, 0, 0, 5, 0};
    stream_write(&sv->s, empty_query, sizeof(empty_query));
    rm->entry.answer = RA_QUERY;
    rm->entry.flags = RE_OWNED;
    rm->entry.owner = (uint8_t)listen_owner;
    rm->entry.tag = (uint8_t)op;
    return 0;
}

/* The empty query's answer: its EmptyQueryResponse becomes the tag. */
static unsigned listen_on_server_msg(struct client *c, struct server *sv, struct request_entry *e,
                                     const struct stream_msg *m, bool done)
{
    if (m->type != 'I' && m->type != 'C')
        return REQUEST_PASS;
    uint8_t buf[32];
    struct proto_writer wr;
    proto_writer_init(&wr, buf, sizeof(buf));
    proto_build_command_complete(&wr, e->tag == LISTEN_OP_LISTEN ? "LISTEN" : "UNLISTEN");
    request_out_add(c, buf, wr.len);
    return REQUEST_SWALLOW | REQUEST_EMIT;
}

/* Notifications queued while c was in a transaction go right after its
 * ReadyForQuery (idle, nothing else in flight). */
static void listen_on_request_end(struct client *c, struct server *sv, const struct request *r,
                                  char status)
{
    struct listen_client *lc = c->lc;
    if (!lc || !lc->qlen || status != 'I' || request_busy(c))
        return;
    request_out_add(c, lc->q, lc->qlen);
    queue_clear(lc);
}

static const struct request_observer listen_observer = {
    .name = "listen",
    .tracked_only = true,
    .client_msgs = "Q",
    .on_client_msg = listen_on_client_msg,
    .on_server_msg = listen_on_server_msg,
    .on_request_end = listen_on_request_end,
    .on_client_free = listen_client_free,
};

void listen_init(void)
{
    listen_owner = request_observe(&listen_observer);
}
