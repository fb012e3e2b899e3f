/* server.c - a server connection's life and its state machine: resolve,
 * connect, log in (server_login.c), be checked and reset (sluice's own
 * queries, server_query.c), be lent to a holder, close.
 *
 * What the server sends goes, by state: to server_login.c while it logs in;
 * to server_query.c while a query of sluice's is pending; to its holder
 * (sv->holder: the client it is lent to, or LISTEN) while lent; and an idle
 * server has nothing to say but a goodbye. */
#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/un.h>
#include <unistd.h>

#include "dns.h"
#include "log.h"
#include "pool.h"
#include "prepared_set.h"
#include "proto.h"
#include "replicas.h"
#include "server_login.h"
#include "server_query.h"
#include "tls.h"
#include "worker.h"

static const struct stream_ops server_ops;

static struct server *stream_server(struct stream *s)
{
    return (struct server *)((char *)s - offsetof(struct server, s));
}

/* ---- address ------------------------------------------------------------- */

static void server_dns_done(void *arg);

/* Fills p->addr from endpoint target of p's database (p's own, or for
 * endpoint 0 of a database with several hosts the host sv was made for;
 * pool lock held). Host names go through dns.c, which may answer later
 * (DNS_PENDING: server_dns_done() runs then). */
static enum dns_status pool_resolve(struct pool *p, int target, struct worker *w, char *err,
                                    size_t errlen)
{
    if (!p->db->cfg || p->ep >= p->db->n_endpoints) {
        snprintf(err, errlen, "database removed");
        return DNS_FAILED;
    }
    if (target < 0 || target >= p->db->n_endpoints) {
        snprintf(err, errlen, "database %s has no primary now", p->db->name);
        return DNS_FAILED;
    }
    const struct endpoint *ep = &p->db->endpoints[target];
    const char *host = ep->host[0] ? ep->host : "/var/run/postgresql";
    memset(&p->addr, 0, sizeof(p->addr));
    if (host[0] == '/') {
        struct sockaddr_un *un = (struct sockaddr_un *)&p->addr;
        un->sun_family = AF_UNIX;
        int n = snprintf(un->sun_path, sizeof(un->sun_path), "%s/.s.PGSQL.%d", host, ep->port);
        if (n < 0 || (size_t)n >= sizeof(un->sun_path)) {
            snprintf(err, errlen, "unix socket path too long");
            return DNS_FAILED;
        }
        p->addrlen = sizeof(*un);
        p->addr_ok = true;
        return DNS_READY;
    }
    struct sockaddr_in *in4 = (struct sockaddr_in *)&p->addr;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&p->addr;
    if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)ep->port);
        p->addrlen = sizeof(*in4);
        p->addr_ok = true;
        return DNS_READY;
    }
    if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)ep->port);
        p->addrlen = sizeof(*in6);
        p->addr_ok = true;
        return DNS_READY;
    }
    const struct config *cfg = g_pooler.cfg;
    enum dns_status st =
        dns_lookup(w->loop, host, ep->port, cfg->dns_max_ttl, cfg->dns_nxdomain_ttl, &p->addr,
                   &p->addrlen, server_dns_done, p, err, errlen);
    p->addr_ok = st == DNS_READY;
    return st;
}

/* sv could not reach its server: for endpoint 0 of a database with
 * several hosts, its host is banned (and the primary no more), or with
 * load_balance_hosts = disable the next host is used. */
static void server_unreachable(struct server *sv, const char *why)
{
    struct pool *p = sv->pool;
    if (p->ep != 0 || p->db->n_hosts == 0 || !p->db->cfg)
        return;
    dns_mark_failed(p->db->endpoints[sv->target].host);
    if (replicas_target_failed(p->db, sv->target, why, g_pooler.cfg, worker_now(sv->s.worker)))
        pool_db_primary_changed(p->db);
}

/* Starts the TCP connect of sv to addr (then TLS, per server_tls_sslmode).
 * false if it failed at once (sv is closed then). */
static bool server_connect_to(struct server *sv, const struct sockaddr_storage *addr,
                              socklen_t addrlen)
{
    struct pool *p = sv->pool;
    int rc =
        stream_connect(&sv->s, sv->s.worker, (const struct sockaddr *)addr, addrlen, &server_ops);
    if (rc < 0) {
        char err[256];
        snprintf(err, sizeof(err), "connect failed: %s", strerror(-rc));
        server_unreachable(sv, err);
        pool_connect_failed(p, err, false);
        server_close(sv, err);
        return false;
    }
    tls_server_prepare(&sv->s, p->db->endpoints[sv->target].host);
    return true;
}

/* dns.c answered for pool p. */
static void server_dns_done(void *arg)
{
    pool_dns_done(arg);
}

/* Resolves sv's address: DNS_READY with it in addr; DNS_PENDING with
 * sv->dns_wait set; DNS_FAILED with sv closed. */
static enum dns_status server_resolve(struct server *sv, struct sockaddr_storage *addr,
                                      socklen_t *addrlen)
{
    struct pool *p = sv->pool;
    char err[256];
    pool_lock();
    enum dns_status st = pool_resolve(p, sv->target, sv->s.worker, err, sizeof(err));
    if (st == DNS_READY) {
        *addr = p->addr;
        *addrlen = p->addrlen;
    } else if (st == DNS_PENDING) {
        sv->dns_wait = true;
    }
    pool_unlock();
    if (st == DNS_FAILED) {
        log_warning("%s/%s: %s", p->db->name, p->user->name, err);
        if (sv->target >= 0)
            server_unreachable(sv, err);
        pool_connect_failed(p, err, false);
        server_close(sv, err);
    }
    return st;
}

bool server_start(struct server *sv)
{
    struct sockaddr_storage addr;
    socklen_t addrlen = 0;
    enum dns_status st = server_resolve(sv, &addr, &addrlen);
    if (st == DNS_READY)
        server_connect_to(sv, &addr, addrlen);
    return st != DNS_PENDING; /* pending: asked anew, runs again with the answer */
}

/* ---- lifecycle ----------------------------------------------------------- */

struct server *server_alloc(struct pool *p, struct worker *w, int64_t now)
{
    struct server *sv = calloc(1, sizeof(*sv));
    if (!sv)
        abort();
    sv->pool = p; /* in SV_CONNECTING (0) */
    /* Called with the pool lock held (pool_new_server()): the host of a
     * database with several hosts is chosen once, here. */
    sv->target = p->ep == 0 ? replicas_connect_target(p->db, g_pooler.cfg) : p->ep;
    sv->connect_time = now;
    sv->last_used = now;
    sv->xact_status = 'I';
    list_init(&sv->inbox_node);
    /* No socket until server_start(). */
    stream_init(&sv->s, w, -1, &server_ops);
    return sv;
}

void server_close(struct server *sv, const char *reason)
{
    if (sv->state == SV_CLOSED)
        return;
    if (g_pooler.cfg->log_disconnections || sv->state == SV_CONNECTING || sv->state == SV_LOGIN)
        server_log(LOG_LVL_LOG, sv, "closing because: %s (age=%llds)", reason ? reason : "",
                   (long long)((worker_now(sv->s.worker) - sv->connect_time) / 1000000));
    if (sv->s.fd >= 0 && sv->state != SV_CONNECTING && !sv->s.closed) {
        /* A polite Terminate so the server logs a clean disconnect. */
        static const uint8_t terminate[] = {'X', 0, 0, 0, 4};
        if (!stream_has_output(&sv->s))
            stream_write(&sv->s, terminate, sizeof(terminate)); /* through TLS when on */
    }
    const struct server_holder_ops *holder = sv->holder;
    struct client *c = sv->client;
    struct pool *p = sv->pool;
    bool moving = pool_server_gone(sv); /* unlinks the client; SV_CLOSED */
    stream_close(&sv->s);
    server_query_abort(sv);
    server_query_free(sv);
    server_login_free(sv);
    prepared_set_clear(&sv->ps);
    param_set_clear(&sv->params);
    param_assign(&sv->extras, NULL);
    sv->holder = NULL;
    if (holder && holder->on_closed)
        holder->on_closed(sv, c, reason ? reason : "");
    /* Freed at the end of this loop iteration, so callers up the stack may
     * still look at sv (and see SV_CLOSED); one on its way to a client is
     * freed where it arrives. */
    if (!moving)
        server_reap(sv);
    pool_dispatch(p);
}

void server_reap(struct server *sv)
{
    struct worker *w = worker_current() ? worker_current() : sv->s.worker;
    list_add_tail(&w->dead_servers, &sv->node);
    worker_schedule_reap(w);
}

void server_reap_all(struct worker *w)
{
    while (!list_empty(&w->dead_servers)) {
        struct list *n = list_first(&w->dead_servers);
        list_del(n);
        free(list_entry(n, struct server, node));
    }
}

/* ---- login --------------------------------------------------------------- */

/* PgBouncer's line for a new server connection, with sluice's local
 * address: "new connection to server (from 127.0.0.1:41824)" over TCP. */
static void server_log_new_connection(struct server *sv)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    char host[INET6_ADDRSTRLEN] = "";
    int port = 0;
    memset(&ss, 0, sizeof(ss));
    if (getsockname(sv->s.fd, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET) {
            const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
            inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
            port = ntohs(in->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;
            inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
            port = ntohs(in6->sin6_port);
        }
    }
    if (host[0] && ss.ss_family == AF_INET6)
        server_log(LOG_LVL_LOG, sv, "new connection to server (from [%s]:%d)", host, port);
    else if (host[0])
        server_log(LOG_LVL_LOG, sv, "new connection to server (from %s:%d)", host, port);
    else
        server_log(LOG_LVL_LOG, sv, "new connection to server"); /* a Unix socket */
}

static void server_on_connected(struct stream *s, int err)
{
    struct server *sv = stream_server(s);
    if (err) {
        char why[256];
        snprintf(why, sizeof(why), "connect failed: %s", stream_strerror(s, err));
        if (err != STREAM_ERR_TLS_CONFIG)
            server_unreachable(sv, why);
        /* TLS refused or not trusted: waiting clients get that now. */
        pool_connect_failed(sv->pool, why, err == STREAM_ERR_TLS_CONFIG);
        server_close(sv, why);
        return;
    }
    if (g_pooler.cfg->log_connections)
        server_log_new_connection(sv);
    server_set_state(sv, SV_LOGIN);
    if (!server_login_start(sv))
        server_close(sv, "startup packet too long (a replication client's parameters)");
}

/* Login is complete (ReadyForQuery seen, connect_query done). */
static void server_login_finish(struct server *sv)
{
    struct pool *p = sv->pool;
    if (sv->in_recovery && p->ep == 0 && p->db->n_hosts > 0 && p->db->cfg &&
        replicas_discovers(p->db, g_pooler.cfg)) {
        /* A host taken for the primary says it is in recovery: never lent
         * for writes. */
        if (replicas_seen_in_recovery(p->db, sv->target, "said in_hot_standby = on at login",
                                      worker_now(sv->s.worker)))
            pool_db_primary_changed(p->db);
        server_close(sv, "server is in recovery (in_hot_standby = on): no writes go there");
        return;
    }
    pool_lock();
    p->welcome_ready = true;
    pool_unlock();
    sv->ready = true;
    if (g_pooler.cfg->log_connections)
        server_log(LOG_LVL_LOG, sv, "login ok (pid %u)", sv->backend_pid);
    if (sv->held) {
        pool_server_held(sv);
        if (sv->holder && sv->holder->on_ready)
            sv->holder->on_ready(sv);
        return;
    }
    pool_server_ready(sv);
}

static void connect_query_done(struct server *sv, void *arg, enum server_query_status st)
{
    (void)arg;
    if (st == SERVER_QUERY_GONE)
        return;
    if (st != SERVER_QUERY_OK || sv->xact_status != 'I')
        sv->close_needed = true; /* logged by server_query.c */
    server_login_finish(sv);
}

static const struct server_query_ops connect_query_ops = {.on_done = connect_query_done};

static void server_read_login(struct server *sv)
{
    char why[400];
    bool fatal = false;
    switch (server_login_read(sv, why, sizeof(why), &fatal)) {
    case SERVER_LOGIN_MORE:
        stream_release_rbuf(&sv->s);
        return;
    case SERVER_LOGIN_FAILED:
        /* sluice's own walsender (cache_logical.c) may be refused where
         * clients are not (no REPLICATION right): its holder retries, the
         * pool's clients are none of its business. */
        if (!sv->replication || sv->client)
            pool_connect_failed(sv->pool, why, fatal);
        server_close(sv, why);
        return;
    case SERVER_LOGIN_DONE:
        break;
    }
    sv->login_done = true;
    const struct config_database *cd = sv->pool->db->cfg;
    if (cd && cd->connect_query[0] && !sv->replication) {
        /* (a walsender takes no extended protocol, and its client's
         * session is its own) */
        server_query(sv, cd->connect_query, 0, NULL, &connect_query_ops, NULL);
        return;
    }
    server_login_finish(sv);
}

/* ---- sluice's checks and resets ------------------------------------------ */

/* The end of server_check_query or server_reset_query: back to the pool,
 * or closed if it failed or left a transaction open. */
static void own_query_done(struct server *sv, void *arg, enum server_query_status st)
{
    (void)arg;
    if (st == SERVER_QUERY_GONE)
        return;
    if (sv->xact_status != 'I') {
        server_close(sv, "server left in a transaction by sluice's own query");
        return;
    }
    if (st != SERVER_QUERY_OK) {
        server_close(sv, "own query failed");
        return;
    }
    if (sv->state == SV_RESETTING) {
        const char *q = g_pooler.cfg->server_reset_query;
        if (strcasestr(q, "discard all") || strcasestr(q, "reset all"))
            param_assign(&sv->extras, NULL); /* the reset undid them */
        if (strcasestr(q, "discard all") || strcasestr(q, "deallocate all"))
            prepared_set_clear(&sv->ps); /* and dropped every prepared statement */
    }
    pool_server_ready(sv);
}

static const struct server_query_ops own_query_ops = {.on_done = own_query_done};

void server_check(struct server *sv)
{
    server_query(sv, g_pooler.cfg->server_check_query, 0, NULL, &own_query_ops, NULL);
}

/* The end of one step of server_reset(): arg is non-NULL for a ROLLBACK. */
static void rescue_done(struct server *sv, void *arg, enum server_query_status st)
{
    if (st == SERVER_QUERY_GONE)
        return;
    if (arg && sv->xact_status != 'I') {
        server_close(sv, "undoing what its client left failed");
        return;
    }
    if (sv->xact_status != 'I') {
        sv->rescue |= SR_ROLLBACK; /* the Sync ended a batch of a transaction block */
    } else {
        POOL_STAT_ADD(sv->pool->servers_kept, 1);
        if (g_pooler.cfg->log_disconnections)
            server_log(LOG_LVL_LOG, sv, "kept: what its client left undone was %s",
                       arg ? "rolled back" : "ended");
    }
    /* The client's SETs may have gone with the rest: the next client's
     * settings are applied anew (RESET ALL first). */
    param_store(&sv->extras, "-- unknown");
    server_reset(sv);
}

/* An error in answer to a step: the server was not where sluice thought
 * (a message of the client's it answers only when malformed, say). */
static void rescue_error(struct server *sv, void *arg, const char *sqlstate, const char *text)
{
    (void)arg;
    (void)sqlstate;
    server_log(LOG_LVL_WARNING, sv, "undoing what its client left failed: %s", text);
    server_close(sv, "undoing what its client left failed");
}

static const struct server_query_ops rescue_ops = {.on_done = rescue_done,
                                                   .on_error = rescue_error};

void server_reset(struct server *sv)
{
    if (sv->rescue & (SR_SYNC | SR_ROLLBACK) && !sv->rescue_until)
        sv->rescue_until = worker_now(sv->s.worker) + SERVER_RESCUE_USEC;
    if (sv->rescue & SR_SYNC) {
        sv->rescue &= ~SR_SYNC;
        server_sync(sv, &rescue_ops, NULL);
        return;
    }
    if (sv->rescue & SR_ROLLBACK) {
        sv->rescue &= ~SR_ROLLBACK;
        /* A session advisory lock sluice did not see taken (its owner
         * gone) would block others until the server closes: released. */
        server_query(sv, "ROLLBACK; SELECT pg_advisory_unlock_all()", 0, NULL, &rescue_ops, sv);
        return;
    }
    bool reset = sv->rescue & SR_RESET;
    sv->rescue = SR_NONE;
    sv->rescue_until = 0;
    if (reset)
        server_query(sv, g_pooler.cfg->server_reset_query, 0, NULL, &own_query_ops, NULL);
    else
        pool_server_ready(sv);
}

/* ---- the state machine ----------------------------------------------------- */

/* An idle server has nothing to say but a FATAL before it goes
 * (administrator command, idle timeout on the provider side). */
bool server_replica_trouble(struct server *sv, const uint8_t *msg, uint32_t len)
{
    struct pool *p = sv->pool;
    if (!p || !p->db->cfg || !replicas_role_checked(p->db->endpoints[p->ep].role) ||
        g_pooler.shutting_down)
        return false;
    enum replica_ban_reason why = RB_CLOSED;
    const char *detail = "connection closed by the server";
    struct proto_error_fields ef;
    if (msg) {
        if (!proto_parse_error(msg, len, &ef))
            return false;
        why = replicas_error_reason(ef.sqlstate, ef.message);
        detail = ef.message;
        if (why == RB_NONE)
            return false;
    }
    if (replicas_ban(p->db, p->ep, why, detail, g_pooler.cfg, worker_now(sv->s.worker)))
        pool_db_primary_changed(p->db);
    return true;
}

static void server_read_idle(struct server *sv)
{
    struct stream *s = &sv->s;
    char why[300] = "unexpected data from idle server";
    if (sv->close_why) {
        /* Its query was cut short (query timeout): the answer to the
         * cancel is what came; it goes, saying why. */
        server_close(sv, sv->close_why);
        return;
    }
    struct stream_msg m;
    while (stream_next_msg(s, STREAM_MSG_WHOLE, &m) == STREAM_MSG_OK) {
        if (m.type == 'E') {
            server_error_text(m.data, m.len, why, sizeof(why), NULL);
            server_replica_trouble(sv, m.data, m.len);
            break;
        }
        if (m.type != 'N' && m.type != 'S' && m.type != 'A')
            break;
        stream_consume_msg(s, m.len); /* harmless: dropped */
    }
    if (!s->rbuf || iobuf_len(s->rbuf) == 0) {
        stream_release_rbuf(s);
        return;
    }
    server_close(sv, why);
}

static void server_read_own(struct server *sv)
{
    char why[300];
    enum server_query_read_status st = server_query_read(sv, why, sizeof(why));
    if (st == SERVER_READ_BAD)
        server_close(sv, why);
}

static void server_on_data(struct stream *s)
{
    struct server *sv = stream_server(s);
    if (server_query_pending(sv)) {
        server_read_own(sv);
        return;
    }
    switch (server_state_of(sv)) {
    case SV_LOGIN:
        server_read_login(sv);
        return;
    case SV_ACTIVE:
        if (sv->holder && sv->holder->on_data) {
            sv->holder->on_data(sv);
            return;
        }
        server_close(sv, "active server without holder");
        return;
    case SV_ASSIGNED:
        if (pool_server_moving(sv)) {
            /* Picked for another worker's client: that worker judges it. */
            stream_read_stop(s);
            return;
        }
        server_close(sv, "unexpected data");
        return;
    case SV_IDLE:
    case SV_CANCEL_WAIT:
        server_read_idle(sv);
        return;
    default:
        server_close(sv, "unexpected data");
        return;
    }
}

static void server_on_drained(struct stream *s)
{
    struct server *sv = stream_server(s);
    if (sv->state == SV_ACTIVE && sv->holder && sv->holder->on_drained)
        sv->holder->on_drained(sv);
}

static void server_on_closed(struct stream *s, const char *reason)
{
    struct server *sv = stream_server(s);
    if (sv->state == SV_ASSIGNED && pool_server_moving(sv)) {
        stream_read_stop(s); /* as in server_on_data() */
        return;
    }
    server_replica_trouble(sv, NULL, 0);
    server_close(sv, reason ? reason : "server closed the connection");
}

static const struct stream_ops server_ops = {
    .on_data = server_on_data,
    .on_drained = server_on_drained,
    .on_closed = server_on_closed,
    .on_connected = server_on_connected,
};
