/* client_conn.c - a client connection as an object (client_conn.h). */
#include "client_conn.h"

#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "pool.h"
#include "proto.h"
#include "request.h"
#include "server_query.h"
#include "worker.h"

static void (*free_hooks[CLIENT_MAX_FREE_HOOKS])(struct client *c);
static int n_free_hooks;

void client_add_free_hook(void (*fn)(struct client *c))
{
    if (n_free_hooks < CLIENT_MAX_FREE_HOOKS)
        free_hooks[n_free_hooks++] = fn;
}

const char *client_addr_str(const struct client *c, char *buf, size_t len)
{
    if (c->is_unix) {
        snprintf(buf, len, "unix");
        return buf;
    }
    if (c->addr.sa.sa_family == AF_INET)
        inet_ntop(AF_INET, &c->addr.in.sin_addr, buf, (socklen_t)len);
    else if (c->addr.sa.sa_family == AF_INET6)
        inet_ntop(AF_INET6, &c->addr.in6.sin6_addr, buf, (socklen_t)len);
    else
        snprintf(buf, len, "?");
    return buf;
}

int client_port(const struct client *c)
{
    if (c->addr.sa.sa_family == AF_INET)
        return ntohs(c->addr.in.sin_port);
    if (c->addr.sa.sa_family == AF_INET6)
        return ntohs(c->addr.in6.sin6_port);
    return 0;
}

void client_log(int lvl, const struct client *c, const char *fmt, ...)
{
    if (!log_enabled((enum log_level)lvl))
        return;
    char line[1024], addr[64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    log_msg((enum log_level)lvl, "C-%p: %s/%s@%s:%d %s", (const void *)c,
            c->dbname ? c->dbname : "(nodb)", c->user ? c->user : "(nouser)",
            client_addr_str(c, addr, sizeof(addr)), client_port(c), line);
}

struct client *client_new(struct worker *w, int fd, const struct sockaddr *addr, socklen_t addrlen,
                          bool is_unix, const struct stream_ops *ops)
{
    struct client *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    /* TCP options: inherited from the listener (worker.c) */
    stream_init(&c->s, w, fd, ops);
    stream_limit_login(&c->s); /* lifted at the welcome */
    c->s.peek_first = !is_unix;
    c->id = __atomic_add_fetch(&g_pooler.next_client_id, 1, __ATOMIC_RELAXED);
    c->is_unix = is_unix;
    if (!is_unix && addrlen <= sizeof(c->addr))
        memcpy(&c->addr, addr, addrlen);
    c->connect_time = c->last_activity = worker_now(w);
    list_init(&c->node);
    list_init(&c->wait_node);
    list_add_tail(&w->clients, &c->node);
    w->n_clients++;
    __atomic_add_fetch(&g_pooler.n_clients, 1, __ATOMIC_RELAXED);
    stream_read_start(&c->s);
    return c;
}

static void client_write_error(struct client *c, bool fatal, const char *sqlstate, const char *msg)
{
    uint8_t buf[700];
    struct proto_writer wr;
    proto_writer_init(&wr, buf, sizeof(buf));
    proto_build_error(&wr, fatal, sqlstate, "%s", msg);
    stream_write(&c->s, wr.buf, wr.len);
}

void client_notice(struct client *c, const char *msg)
{
    uint8_t buf[640];
    struct proto_writer wr;
    proto_writer_init(&wr, buf, sizeof(buf));
    proto_build_notice(&wr, "%s", msg);
    stream_write(&c->s, wr.buf, wr.len);
}

void client_send_error(struct client *c, const char *sqlstate, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    client_write_error(c, false, sqlstate, msg);
}

static void client_free(struct client *c)
{
    struct worker *w = c->s.worker;
    for (int i = 0; i < n_free_hooks; i++)
        free_hooks[i](c);
    list_del(&c->node);
    w->n_clients--;
    __atomic_sub_fetch(&g_pooler.n_clients, 1, __ATOMIC_RELAXED);
    if (c->pool) {
        pool_uncount_client(c);
        pool_lock();
        c->pool->n_clients--;
        pool_unlock();
    }
    param_set_clear(&c->params);
    param_take(&c->extras, NULL);
    param_take(&c->user, NULL);
    param_take(&c->dbname, NULL);
    client_set_state(c, CL_CLOSED);
    /* Freed at the end of this loop iteration: callers up the stack may
     * still look at c (and see CL_CLOSED). With a server on its way, once
     * that arrives (pool.c). */
    if (!pool_client_defer_free(c))
        client_reap(c);
}

void client_reap(struct client *c)
{
    struct worker *w = c->s.worker;
    list_add_tail(&w->dead_clients, &c->node);
    worker_schedule_reap(w);
}

void client_reap_all(struct worker *w)
{
    while (!list_empty(&w->dead_clients)) {
        struct list *n = list_first(&w->dead_clients);
        list_del(n);
        free(list_entry(n, struct client, node));
    }
}

/* Frees c once its last bytes (an error) are written. */
static void client_finish(struct client *c)
{
    if (stream_has_output(&c->s)) {
        c->close_after_flush = true;
        c->last_activity = worker_now(c->s.worker);
        c->flush_mark = c->s.bytes_out;
        stream_read_stop(&c->s);
        return;
    }
    stream_close(&c->s);
    client_free(c);
}

void client_drop_flushing(struct client *c)
{
    stream_close(&c->s);
    client_free(c);
}

bool client_flushed(struct client *c)
{
    if (!c->close_after_flush)
        return false;
    stream_close(&c->s);
    client_free(c);
    return true;
}

/* Takes c off every list and away from its server. */
static void client_detach(struct client *c)
{
    /* Off the waiting list it may be on (a server on its way sees it closed
     * where it arrives: pool.c). */
    client_set_state(c, CL_CLOSED);
    if (c->cancel_pid || c->cancel_key)
        pool_cancel_unregister(c);
    struct server *sv = c->server;
    if (sv) {
        /* The server goes back to the pool only if nothing of this client
         * is left on it, or if what is left can be rolled back (sv->rescue):
         * pool_release_server() checks that. A backend kept is one
         * PostgreSQL need not end and start again (a core for milliseconds
         * each). */
        sv->rescue = server_query_pending(sv) ? SR_NONE : request_rescue_plan(c);
        pool_release_server(sv);
    }
}

static int64_t client_age(const struct client *c)
{
    return (worker_now(c->s.worker) - c->connect_time) / 1000000;
}

void client_close(struct client *c, const char *reason)
{
    if (c->state == CL_CLOSED)
        return;
    if (g_pooler.cfg->log_disconnections && c->state >= CL_IDLE)
        client_log(LOG_LVL_LOG, c, "closing because: %s (age=%llds)", reason,
                   (long long)client_age(c));
    client_detach(c);
    stream_close(&c->s);
    client_free(c);
}

/* Whether c has part of a message of its server's (streamed through, the
 * rest still to come): an ErrorResponse now would be read as the rest. */
static bool client_mid_message(const struct client *c)
{
    return c->server && c->server->s.skip && c->server->s.skip_forward;
}

void client_close_timed_out(struct client *c, bool query)
{
    if (query)
        client_close_error(c, SQLSTATE_QUERY_CANCELED, "query timeout (query_timeout)");
    else
        client_close_error(c, SQLSTATE_XACT_TIMEOUT, "transaction timeout");
}

void client_timeout_settled(struct client *c)
{
    bool query = c->timeout_kind == CLIENT_TIMEOUT_QUERY;
    c->timeout_kind = 0;
    if (!c->timeout_cancelled) {
        client_close_timed_out(c, query); /* its answer went through: it is idle */
        return;
    }
    /* In place of the server's 57014 and ReadyForQuery: the request ends
     * with the timeout's error, which the driver then reports with its
     * SQLSTATE. */
    if (query)
        client_close_error_ready(c, SQLSTATE_QUERY_CANCELED, "query timeout (query_timeout)");
    else
        client_close_error_ready(c, SQLSTATE_XACT_TIMEOUT, "transaction timeout");
}

void client_close_mid_message(struct client *c, const char *reason)
{
    if (c->state == CL_CLOSED)
        return;
    if (g_pooler.cfg->log_pooler_errors)
        client_log(LOG_LVL_WARNING, c, "pooler error: %s (mid-message: no error sent)", reason);
    if (g_pooler.cfg->log_disconnections)
        client_log(LOG_LVL_LOG, c, "closing because: %s (age=%llds)", reason,
                   (long long)client_age(c));
    client_detach(c);
    client_finish(c);
}

/* client_close_error() and client_close_error_ready() (ready). */
__attribute__((format(printf, 4, 0))) static void
close_error(struct client *c, const char *sqlstate, bool ready, const char *fmt, va_list ap)
{
    if (c->state == CL_CLOSED)
        return;
    char msg[512];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    if (client_mid_message(c)) {
        client_close_mid_message(c, msg);
        return;
    }
    if (g_pooler.cfg->log_pooler_errors)
        client_log(LOG_LVL_WARNING, c, "pooler error: %s", msg);
    if (g_pooler.cfg->log_disconnections)
        client_log(LOG_LVL_LOG, c, "closing because: %s (age=%llds)", msg,
                   (long long)client_age(c));
    client_write_error(c, true, sqlstate, msg);
    if (ready) {
        uint8_t z[8];
        struct proto_writer wr;
        proto_writer_init(&wr, z, sizeof(z));
        proto_build_ready(&wr, 'I');
        stream_write(&c->s, wr.buf, wr.len);
    }
    client_detach(c);
    client_finish(c);
}

void client_close_error(struct client *c, const char *sqlstate, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    close_error(c, sqlstate, false, fmt, ap);
    va_end(ap);
}

void client_close_error_ready(struct client *c, const char *sqlstate, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    close_error(c, sqlstate, true, fmt, ap);
    va_end(ap);
}

bool client_refuse_pqexec(struct client *c, uint8_t type)
{
    if (type != 'Q' || !g_pooler.cfg->disable_pqexec)
        return false;
    client_log(LOG_LVL_WARNING, c, "client used 'Q' packet type");
    client_close_error(c, SQLSTATE_PROTOCOL_VIOLATION, "PQexec disallowed");
    return true;
}

bool client_refuse_message(struct client *c, const struct stream_msg *m)
{
    if (!proto_frontend_type_ok(m->type)) {
        client_close_error(c, SQLSTATE_PROTOCOL_VIOLATION, "invalid frontend message type %d",
                           m->type);
        return true;
    }
    if (client_refuse_pqexec(c, m->type))
        return true;
    if (m->avail < m->len ||
        proto_frontend_shape_ok(m->type, m->data + PROTO_HDR, m->len - PROTO_HDR))
        return false;
    client_close_error(c, SQLSTATE_PROTOCOL_VIOLATION, "invalid message format");
    return true;
}

void client_close_bad_message(struct client *c, enum stream_msg_status ms)
{
    client_close_error(c, SQLSTATE_PROTOCOL_VIOLATION, "%s",
                       ms == STREAM_MSG_TOO_BIG ? "message too long (max_packet_size)"
                                                : "invalid message length");
}
