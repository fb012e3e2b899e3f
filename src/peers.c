/* peers.c - cancel keys that name their process, and cancel requests
 * forwarded to the [peers] that gave them (peers.h).
 *
 * Per peer id, a little shared state (behind its own mutex, taken only for
 * counter updates, never across I/O): how many forwards are in flight and
 * which wait. A forward itself belongs to the worker whose loop runs it,
 * on that worker's peer_cancels list. A waiting one is only its key, so
 * whichever worker frees a slot starts the next one on its own loop. */
#include "peers.h"

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "auth.h"
#include "dns.h"
#include "list.h"
#include "log.h"
#include "proto.h"
#include "stream.h"
#include "worker.h"

/* A forward waiting for DNS looks again this often (seconds): the answer
 * lands in dns.c's cache, whichever loop it comes back on. */
#define DNS_RETRY 0.02
/* A forward's deadline when cancel_wait_timeout is 0 (no limit there): a
 * peer that never closes must not hold a slot for ever. */
#define FORWARD_TIMEOUT_DEFAULT 10000000LL

/* ---- keys ---------------------------------------------------------------- */

void peers_new_cancel_key(const struct config *cfg, uint32_t *pid, uint32_t *key)
{
    auth_random_bytes((uint8_t *)pid, sizeof(*pid));
    auth_random_bytes((uint8_t *)key, sizeof(*key));
    *pid &= 0x7fffffffu; /* some drivers print it as a signed pid */
    if (cfg && cfg->peer_id > 0) {
        uint32_t id = (uint32_t)cfg->peer_id;
        *pid = (*pid & 0xff0000ffu) | (id & 0xffu) << 16 | (id >> 8 & 0xffu) << 8;
        *key |= PEERS_TTL_MASK;
    }
}

int peers_key_id(uint32_t pid)
{
    return (int)((pid >> 16 & 0xffu) | (pid >> 8 & 0xffu) << 8);
}

const char *peers_route_str(enum peers_route r)
{
    switch (r) {
    case PEERS_ROUTE_LOCAL:
        return "local";
    case PEERS_ROUTE_FORWARD:
        return "forward";
    case PEERS_ROUTE_DROP:
        return "drop";
    }
    return "?";
}

enum peers_route peers_route_cancel(const struct config *cfg, uint32_t pid, uint32_t *key,
                                    int *peer_id, const char **why)
{
    *peer_id = 0;
    *why = NULL;
    if (!cfg || cfg->peer_id <= 0)
        return PEERS_ROUTE_LOCAL;
    int id = peers_key_id(pid);
    if (id == cfg->peer_id) {
        /* Keys are stored with a full TTL; this one may have been passed on. */
        *key |= PEERS_TTL_MASK;
        return PEERS_ROUTE_LOCAL;
    }
    *peer_id = id;
    if ((*key & PEERS_TTL_MASK) == 0) {
        *why = "its TTL is spent (forwarded 3 times already: do two peers share a peer_id?)";
        return PEERS_ROUTE_DROP;
    }
    if (!config_find_peer(cfg, id)) {
        *why = "no [peers] entry has its peer id";
        return PEERS_ROUTE_DROP;
    }
    *key -= 1; /* the TTL is the lowest bits: one forward used */
    return PEERS_ROUTE_FORWARD;
}

int peers_pool_size(const struct config *cfg, const struct config_peer *p)
{
    int n = p && p->pool_size > 0 ? p->pool_size : cfg->default_pool_size;
    return n > 0 ? n : 1;
}

/* ---- the shared state per peer ---------------------------------------- */

struct peer_wait {
    uint32_t pid, key;
};

struct peer_state {
    int id;
    int active;              /* forwards started and not ended */
    int connecting;          /* of those, still connecting */
    struct peer_wait *queue; /* ring buffer of qcap */
    int qhead, qlen, qcap;
};

static pthread_mutex_t peers_lock = PTHREAD_MUTEX_INITIALIZER;
static struct peer_state *states; /* [peers lock] */
static int n_states;

/* The state of peer id, made on first use (peers lock held). */
static struct peer_state *state_locked(int id)
{
    for (int i = 0; i < n_states; i++)
        if (states[i].id == id)
            return &states[i];
    struct peer_state *grown = realloc(states, ((size_t)n_states + 1) * sizeof(*grown));
    if (!grown)
        abort();
    states = grown;
    struct peer_state *st = &states[n_states++];
    memset(st, 0, sizeof(*st));
    st->id = id;
    return st;
}

/* Queues (pid, key) behind the peer's in-flight forwards; false when the
 * queue holds max entries already (peers lock held). */
static bool enqueue_locked(struct peer_state *st, uint32_t pid, uint32_t key, int max)
{
    if (st->qlen >= max)
        return false;
    if (st->qlen == st->qcap) {
        int cap = st->qcap ? st->qcap * 2 : 16;
        struct peer_wait *q = malloc((size_t)cap * sizeof(*q));
        if (!q)
            abort();
        for (int i = 0; i < st->qlen; i++)
            q[i] = st->queue[(st->qhead + i) % st->qcap];
        free(st->queue);
        st->queue = q;
        st->qhead = 0;
        st->qcap = cap;
    }
    st->queue[(st->qhead + st->qlen) % st->qcap] = (struct peer_wait){pid, key};
    st->qlen++;
    return true;
}

/* A forward to peer id ended: its slot goes to the next waiting one, if
 * any (true, with its key in *next). */
static bool release_slot(const struct config *cfg, int id, bool was_connecting,
                         struct peer_wait *next)
{
    pthread_mutex_lock(&peers_lock);
    struct peer_state *st = state_locked(id);
    st->active--;
    if (was_connecting)
        st->connecting--;
    bool more = false;
    if (st->qlen > 0 && st->active < peers_pool_size(cfg, config_find_peer(cfg, id))) {
        *next = st->queue[st->qhead];
        st->qhead = (st->qhead + 1) % st->qcap;
        st->qlen--;
        st->active++;
        st->connecting++;
        more = true;
    }
    pthread_mutex_unlock(&peers_lock);
    return more;
}

void peers_pool_stats(int peer_id, struct peers_pool_stats *out)
{
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&peers_lock);
    for (int i = 0; i < n_states; i++) {
        if (states[i].id != peer_id)
            continue;
        out->active = states[i].active;
        out->waiting = states[i].qlen;
        out->sv_connect = states[i].connecting;
        out->sv_active = states[i].active - states[i].connecting;
    }
    pthread_mutex_unlock(&peers_lock);
}

/* ---- one forward ----------------------------------------------------------- */

struct peer_forward {
    struct stream s;
    struct list node; /* on its worker's peer_cancels */
    ev_timer timer;   /* DNS retries, then the deadline */
    int64_t deadline; /* monotonic usec */
    int peer_id;
    uint32_t pid, key;
    bool connecting; /* counted in its peer's connecting */
};

static void forward_run(struct worker *w, int id, uint32_t pid, uint32_t key);

static struct peer_forward *stream_forward(struct stream *s)
{
    return (struct peer_forward *)((char *)s - offsetof(struct peer_forward, s));
}

/* f is over (why: a failure to log, or NULL when the peer took it); f is
 * freed. true when its slot went to a waiting forward, *next, which the
 * caller starts (not here: a row of peers refusing at once would recurse). */
static bool forward_finish(struct peer_forward *f, const char *why, struct peer_wait *next)
{
    struct worker *w = f->s.worker;
    ev_timer_stop(w->loop, &f->timer);
    stream_close(&f->s);
    list_del(&f->node);
    if (why)
        log_warning("cancel request for peer %d not forwarded: %s", f->peer_id, why);
    bool more = release_slot(w->cfg, f->peer_id, f->connecting, next);
    free(f);
    return more;
}

/* forward_finish() from one of f's own callbacks. */
static void forward_end(struct peer_forward *f, const char *why)
{
    struct worker *w = f->s.worker;
    int id = f->peer_id;
    struct peer_wait next;
    if (forward_finish(f, why, &next))
        forward_run(w, id, next.pid, next.key);
}

static void forward_on_connected(struct stream *s, int err)
{
    struct peer_forward *f = stream_forward(s);
    pthread_mutex_lock(&peers_lock);
    state_locked(f->peer_id)->connecting--;
    f->connecting = false;
    pthread_mutex_unlock(&peers_lock);
    if (err) {
        char msg[160];
        snprintf(msg, sizeof(msg), "could not connect: %s", strerror(err));
        forward_end(f, msg);
        return;
    }
    stream_write_cancel(s, f->pid, f->key);
}

static void forward_on_data(struct stream *s)
{
    /* A peer answers a cancel by closing, as PostgreSQL does: discard. */
    s->rbuf->start = s->rbuf->end;
}

static void forward_on_closed(struct stream *s, const char *reason)
{
    (void)reason;
    /* Closed once it read the request: the normal end. */
    forward_end(stream_forward(s), NULL);
}

static const struct stream_ops forward_ops = {
    .on_data = forward_on_data,
    .on_closed = forward_on_closed,
    .on_connected = forward_on_connected,
};

static void dns_noop(void *arg)
{
    (void)arg; /* the forward's timer asks dns.c again */
}

/* The address of peer p (a unix socket dir, an abstract name, an address
 * or a name through dns.c, which may answer later). */
static enum dns_status peer_address(struct worker *w, const struct config_peer *p,
                                    struct sockaddr_storage *ss, socklen_t *len, char *err,
                                    size_t errlen)
{
    memset(ss, 0, sizeof(*ss));
    if (p->host[0] == '/' || p->host[0] == '@') {
        struct sockaddr_un *un = (struct sockaddr_un *)ss;
        un->sun_family = AF_UNIX;
        int n = snprintf(un->sun_path, sizeof(un->sun_path), "%s/.s.PGSQL.%d", p->host, p->port);
        if (n < 0 || (size_t)n >= sizeof(un->sun_path)) {
            snprintf(err, errlen, "unix socket path too long");
            return DNS_FAILED;
        }
        *len = (socklen_t)sizeof(*un);
        if (p->host[0] == '@') { /* Linux's abstract namespace: a leading NUL */
            un->sun_path[0] = '\0';
            *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + (size_t)n);
        }
        return DNS_READY;
    }
    struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, p->host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)p->port);
        *len = (socklen_t)sizeof(*in4);
        return DNS_READY;
    }
    if (inet_pton(AF_INET6, p->host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)p->port);
        *len = (socklen_t)sizeof(*in6);
        return DNS_READY;
    }
    return dns_lookup(w->loop, p->host, p->port, w->cfg->dns_max_ttl, w->cfg->dns_nxdomain_ttl, ss,
                      len, dns_noop, NULL, err, errlen);
}

/* Tries to connect f. true: connecting, or waiting for DNS. false: f has
 * ended (freed), and *more says whether *next is to start in its slot. */
static bool forward_connect(struct peer_forward *f, bool *more, struct peer_wait *next)
{
    struct worker *w = f->s.worker;
    const struct config_peer *p = config_find_peer(w->cfg, f->peer_id);
    char err[300] = "";
    if (!p) {
        *more = forward_finish(f, "the peer is no longer in [peers]", next);
        return false;
    }
    struct sockaddr_storage ss;
    socklen_t len = 0;
    enum dns_status st = peer_address(w, p, &ss, &len, err, sizeof(err));
    if (st == DNS_PENDING) {
        ev_timer_set(&f->timer, DNS_RETRY, 0.);
        ev_timer_start(w->loop, &f->timer);
        return true;
    }
    if (st == DNS_READY) {
        int rc = stream_connect(&f->s, w, (struct sockaddr *)&ss, len, &forward_ops);
        if (rc == 0) {
            double left = (double)(f->deadline - worker_now(w)) / 1e6;
            ev_timer_set(&f->timer, left > 0 ? left : 0.001, 0.);
            ev_timer_start(w->loop, &f->timer);
            log_info("forwarding cancel request to peer %d (%s port %d)", f->peer_id, p->host,
                     p->port);
            return true;
        }
        snprintf(err, sizeof(err), "could not connect to %s port %d: %s", p->host, p->port,
                 strerror(-rc));
    }
    *more = forward_finish(f, err, next);
    return false;
}

static void forward_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct peer_forward *f = t->data;
    struct worker *w = f->s.worker;
    int id = f->peer_id;
    struct peer_wait next;
    bool more = false;
    if (worker_now(w) >= f->deadline)
        more = forward_finish(f,
                              f->s.fd >= 0 ? "the peer did not answer in time (cancel_wait_timeout)"
                                           : "its host name did not resolve in time",
                              &next);
    else if (f->s.fd < 0 && forward_connect(f, &more, &next)) /* DNS answered? */
        return;
    if (more)
        forward_run(w, id, next.pid, next.key);
}

/* Starts forwards on w's loop, their slots taken: (pid, key), then, while
 * one fails at once, the next waiting one in the slot it frees. */
static void forward_run(struct worker *w, int id, uint32_t pid, uint32_t key)
{
    struct peer_wait next = {pid, key};
    bool more = true;
    while (more) {
        struct peer_forward *f = calloc(1, sizeof(*f));
        if (!f)
            abort();
        f->peer_id = id;
        f->pid = next.pid;
        f->key = next.key;
        f->connecting = true;
        f->s.worker = w;
        f->s.fd = -1;
        f->s.closed = true; /* until stream_connect(): stream_close() does nothing */
        int64_t timeout = w->cfg->cancel_wait_timeout;
        f->deadline = worker_now(w) + (timeout > 0 ? timeout : FORWARD_TIMEOUT_DEFAULT);
        ev_timer_init(&f->timer, forward_timer_cb, 0., 0.);
        f->timer.data = f;
        list_init(&f->node);
        list_add_tail(&w->peer_cancels, &f->node);
        more = false;
        if (forward_connect(f, &more, &next))
            return;
    }
}

void peers_forward_cancel(struct worker *w, int peer_id, uint32_t pid, uint32_t key)
{
    const struct config *cfg = w->cfg;
    int size = peers_pool_size(cfg, config_find_peer(cfg, peer_id));
    int max_wait = cfg->max_client_conn > 0 ? cfg->max_client_conn : 1000;
    pthread_mutex_lock(&peers_lock);
    struct peer_state *st = state_locked(peer_id);
    bool start = st->active < size;
    bool queued = false;
    if (start) {
        st->active++;
        st->connecting++;
    } else {
        queued = enqueue_locked(st, pid, key, max_wait);
    }
    pthread_mutex_unlock(&peers_lock);
    if (start)
        forward_run(w, peer_id, pid, key);
    else if (queued)
        log_debug("cancel request for peer %d waits: pool_size %d in flight", peer_id, size);
    else
        log_warning("cancel request for peer %d dropped: %d already wait behind its pool_size %d",
                    peer_id, max_wait, size);
}

void peers_close_worker(struct worker *w)
{
    while (!list_empty(&w->peer_cancels)) {
        struct peer_forward *f =
            list_entry(list_first(&w->peer_cancels), struct peer_forward, node);
        ev_timer_stop(w->loop, &f->timer);
        stream_close(&f->s);
        list_del(&f->node);
        free(f);
    }
}

void peers_free_all(void)
{
    pthread_mutex_lock(&peers_lock);
    for (int i = 0; i < n_states; i++)
        free(states[i].queue);
    free(states);
    states = NULL;
    n_states = 0;
    pthread_mutex_unlock(&peers_lock);
}
