/* replication.c - replication connections passed through (replication.h). */
#include "replication.h"

#include <string.h>
#include <strings.h>

#include "auth.h"
#include "client_conn.h"
#include "log.h"
#include "peers.h"
#include "pool.h"
#include "proto.h"
#include "server.h"
#include "tls.h"
#include "worker.h"

const char *replication_mode_str(enum replication_mode m)
{
    switch (m) {
    case REPLICATION_NONE:
        return "none";
    case REPLICATION_PHYSICAL:
        return "physical";
    case REPLICATION_LOGICAL:
        return "logical";
    }
    return "?";
}

int replication_mode_parse(const char *value)
{
    static const char *const yes[] = {"true", "on", "yes", "1", "t", "y"};
    static const char *const no[] = {"false", "off", "no", "0", "f", "n"};
    if (!strcasecmp(value, "database"))
        return REPLICATION_LOGICAL;
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (!strcasecmp(value, yes[i]))
            return REPLICATION_PHYSICAL;
        if (!strcasecmp(value, no[i]))
            return REPLICATION_NONE;
    }
    return -1;
}

/* What from has buffered goes to to, as it is; from stops reading while
 * to's output waits (the peer's drain starts it again: relay.c's
 * relay_client_drained() for the client's, replication_server_drained()). */
static void forward(struct stream *from, struct stream *to)
{
    struct iobuf *b = from->rbuf;
    if (b && iobuf_len(b)) {
        stream_write(to, b->data + b->start, iobuf_len(b));
        b->start = b->end;
    }
    if (stream_has_output(to)) {
        stream_read_stop(from);
        to->blocked_src = from;
    }
    stream_release_rbuf(from);
}

void replication_client_data(struct client *c)
{
    if (c->server)
        forward(&c->s, &c->server->s);
}

static void replication_server_data(struct server *sv)
{
    if (sv->client)
        forward(&sv->s, &sv->client->s);
    else
        stream_release_rbuf(&sv->s);
}

static void replication_server_drained(struct server *sv)
{
    struct client *c = sv->client;
    if (c && sv->s.blocked_src == &c->s) {
        sv->s.blocked_src = NULL;
        stream_read_start(&c->s);
        if (c->s.rbuf && iobuf_len(c->s.rbuf))
            c->s.ops->on_data(&c->s);
    }
}

/* The walsender logged in: c gets the welcome (its parameters as the pool
 * has them, a cancel key of sluice's: a cancel reaches this server) and
 * the link begins. */
static void replication_server_ready(struct server *sv)
{
    struct client *c = sv->client;
    if (!c || c->state == CL_CLOSED) {
        server_close(sv, "replication client disconnected");
        return;
    }
    struct pool *p = sv->pool;
    uint8_t buf[4096];
    struct proto_writer wr;
    proto_writer_init(&wr, buf, sizeof(buf));
    proto_build_auth(&wr, PROTO_AUTH_OK, NULL, 0);
    for (int i = 0; i < p->welcome.n; i++)
        proto_build_param_status(&wr, p->welcome.names[i], p->welcome.values[i]);
    peers_new_cancel_key(c->s.worker->cfg, &c->cancel_pid, &c->cancel_key);
    pool_cancel_register(c);
    proto_build_backend_key(&wr, c->cancel_pid, c->cancel_key);
    proto_build_ready(&wr, 'I');
    if (wr.overflow) {
        client_close_error(c, SQLSTATE_INTERNAL, "welcome message too long");
        return;
    }
    stream_write(&c->s, wr.buf, wr.len);
    client_set_state(c, CL_IDLE);
    client_set_state(c, CL_ASSIGNED);
    client_set_state(c, CL_ACTIVE);
    stream_limit_lift(&c->s);
    c->last_activity = c->request_time = worker_now(c->s.worker);
    if (g_pooler.cfg->log_connections) {
        char tls[128];
        tls_describe(&c->s, tls, sizeof(tls));
        client_log(LOG_LVL_LOG, c, "login attempt: db=%s user=%s tls=%s replication=%s", c->dbname,
                   c->user, tls[0] ? tls : "no",
                   c->replication == REPLICATION_LOGICAL ? "database" : "yes");
    }
    stream_read_start(&c->s);
    if (c->s.rbuf && iobuf_len(c->s.rbuf))
        c->s.ops->on_data(&c->s);
}

static void replication_server_closed(struct server *sv, struct client *c, const char *why)
{
    if (c && c->state != CL_CLOSED)
        client_close_error(c, SQLSTATE_CONNECTION_FAILURE, "%s",
                           why[0] ? why : "server conn crashed?");
}

static const struct server_holder_ops replication_holder = {
    .on_ready = replication_server_ready,
    .on_data = replication_server_data,
    .on_drained = replication_server_drained,
    .on_closed = replication_server_closed,
};

void replication_start(struct client *c)
{
    stream_read_stop(&c->s);
    pool_connect_replication(c->pool, c, &replication_holder);
}
