/* server.c - server connections: connect, login, internal queries and
 * forwarding of results to the linked client. */
#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include "auth.h"
#include "client.h"
#include "dns.h"
#include "listen.h"
#include "log.h"
#include "pool.h"
#include "prepared.h"
#include "proto.h"
#include "scram.h"
#include "tls.h"
#include "worker.h"

/* Login-time state, freed once the server is logged in. */
struct server_auth {
    struct scram_client scram;
    bool scram_started;
};

static const struct stream_ops server_ops;
static void server_handle_auth_query(struct server *sv);

const char *server_state_str(enum server_state st)
{
    static const char *const names[] = {"connecting", "login",       "idle",
                                        "testing",    "resetting",   "setting",
                                        "active",     "cancel_wait", "closed"};
    return (unsigned)st < sizeof(names) / sizeof(names[0]) ? names[st] : "?";
}

static struct server *stream_server(struct stream *s)
{
    return (struct server *)((char *)s - offsetof(struct server, s));
}

#define SV_LOG(lvl, sv, fmt, ...)                                                                  \
    log_msg(lvl, "S-%p: %s/%s@%s:%d " fmt, (void *)(sv), (sv)->pool->db->name,                     \
            (sv)->pool->user->name, server_host(sv), server_port(sv), ##__VA_ARGS__)

static const char *server_host(const struct server *sv)
{
    const struct config_database *cd = sv->pool->db->cfg;
    return cd && cd->host[0] ? cd->host : "unix";
}

static int server_port(const struct server *sv)
{
    const struct config_database *cd = sv->pool->db->cfg;
    return cd ? cd->port : 0;
}

bool server_is_clean(const struct server *sv)
{
    return sv->ready && sv->xact_status == 'I' && !sv->s.skip &&
           (!sv->s.rbuf || iobuf_len(sv->s.rbuf) == 0) && !stream_has_output(&sv->s);
}

/* ---- address ------------------------------------------------------------- */

static void server_dns_done(void *arg);

/* Fills p->addr from the database entry (pool lock held). Host names go
 * through dns.c, which may answer later (DNS_PENDING: server_dns_done()
 * runs then). */
static enum dns_status pool_resolve(struct pool *p, struct worker *w, char *err, size_t errlen)
{
    const struct config_database *cd = p->db->cfg;
    if (!cd) {
        snprintf(err, errlen, "database removed");
        return DNS_FAILED;
    }
    const char *host = cd->host[0] ? cd->host : "/var/run/postgresql";
    memset(&p->addr, 0, sizeof(p->addr));
    if (host[0] == '/') {
        struct sockaddr_un *un = (struct sockaddr_un *)&p->addr;
        un->sun_family = AF_UNIX;
        int n = snprintf(un->sun_path, sizeof(un->sun_path), "%s/.s.PGSQL.%d", host, cd->port);
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
        in4->sin_port = htons((uint16_t)cd->port);
        p->addrlen = sizeof(*in4);
        p->addr_ok = true;
        return DNS_READY;
    }
    if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)cd->port);
        p->addrlen = sizeof(*in6);
        p->addr_ok = true;
        return DNS_READY;
    }
    const struct config *cfg = g_pooler.cfg;
    enum dns_status st =
        dns_lookup(w->loop, host, cd->port, cfg->dns_max_ttl, cfg->dns_nxdomain_ttl, &p->addr,
                   &p->addrlen, server_dns_done, p, err, errlen);
    p->addr_ok = st == DNS_READY;
    return st;
}

/* ---- lifecycle ----------------------------------------------------------- */

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
        pool_connect_failed(p, err, false);
        server_close(sv, err);
        return false;
    }
    tls_server_prepare(&sv->s, p->db->cfg ? p->db->cfg->host : "");
    if (g_pooler.cfg->log_connections)
        SV_LOG(LOG_LVL_LOG, sv, "new connection to server");
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
    enum dns_status st = pool_resolve(p, sv->s.worker, err, sizeof(err));
    if (st == DNS_READY) {
        *addr = p->addr;
        *addrlen = p->addrlen;
    } else if (st == DNS_PENDING) {
        sv->dns_wait = true;
    }
    pool_unlock();
    if (st == DNS_FAILED) {
        log_warning("%s/%s: %s", p->db->name, p->user->name, err);
        pool_connect_failed(p, err, false);
        server_close(sv, err);
    }
    return st;
}

bool server_dns_retry(struct server *sv)
{
    struct sockaddr_storage addr;
    socklen_t addrlen = 0;
    enum dns_status st = server_resolve(sv, &addr, &addrlen);
    if (st == DNS_READY)
        server_connect_to(sv, &addr, addrlen);
    return st != DNS_PENDING; /* pending: asked anew, runs again with the answer */
}

struct server *server_alloc(struct pool *p, struct worker *w, int64_t now)
{
    struct server *sv = calloc(1, sizeof(*sv));
    if (!sv)
        abort();
    sv->pool = p;
    sv->state = SV_CONNECTING;
    sv->connect_time = now;
    sv->last_used = now;
    sv->xact_status = 'I';
    list_init(&sv->inbox_node);
    /* No socket until server_start(). */
    stream_init(&sv->s, w, -1, &server_ops);
    return sv;
}

void server_start(struct server *sv)
{
    server_dns_retry(sv);
}

void server_close(struct server *sv, const char *reason)
{
    if (sv->state == SV_CLOSED)
        return;
    if (sv->listener)
        listen_server_gone(sv);
    struct client *c = sv->client;
    if (c) {
        c->server = NULL;
        sv->client = NULL;
    }
    if (g_pooler.cfg->log_disconnections || sv->state == SV_CONNECTING || sv->state == SV_LOGIN)
        SV_LOG(LOG_LVL_LOG, sv, "closing because: %s (age=%llds)", reason ? reason : "",
               (long long)((worker_now(sv->s.worker) - sv->connect_time) / 1000000));
    if (sv->s.fd >= 0 && sv->state != SV_CONNECTING && !sv->s.closed) {
        /* A polite Terminate so the server logs a clean disconnect. */
        uint8_t buf[8];
        struct proto_writer wr;
        proto_writer_init(&wr, buf, sizeof(buf));
        proto_build_terminate(&wr);
        if (!stream_has_output(&sv->s))
            stream_write(&sv->s, buf, wr.len); /* through TLS when on */
    }
    struct pool *p = sv->pool;
    bool moving = pool_server_gone(sv);
    prepared_server_free(sv);
    param_set_clear(&sv->params);
    param_assign(&sv->extras, NULL);
    sv->state = SV_CLOSED;
    stream_close(&sv->s);
    if (sv->auth) {
        scram_client_free(&sv->auth->scram);
        free(sv->auth);
    }
    if (c && c->state != CL_CLOSED)
        client_close_error(c, SQLSTATE_CONNECTION_FAILURE, "server conn crashed?");
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

/* ---- login --------------------------------------------------------------- */

static void server_send_startup(struct server *sv)
{
    const struct config_database *cd = sv->pool->db->cfg;
    uint8_t buf[1024];
    struct proto_writer wr;
    proto_writer_init(&wr, buf, sizeof(buf));
    proto_begin(&wr, 0);
    proto_add32(&wr, PROTO_V3);
    proto_add_string(&wr, "user");
    proto_add_string(&wr, sv->pool->user->name);
    proto_add_string(&wr, "database");
    proto_add_string(&wr, cd->dbname[0] ? cd->dbname : sv->pool->db->name);
    if (cd->application_name[0]) {
        proto_add_string(&wr, "application_name");
        proto_add_string(&wr, cd->application_name);
    }
    if (cd->client_encoding[0]) {
        proto_add_string(&wr, "client_encoding");
        proto_add_string(&wr, cd->client_encoding);
    }
    if (cd->datestyle[0]) {
        proto_add_string(&wr, "datestyle");
        proto_add_string(&wr, cd->datestyle);
    }
    if (cd->timezone[0]) {
        proto_add_string(&wr, "timezone");
        proto_add_string(&wr, cd->timezone);
    }
    proto_add_byte(&wr, 0);
    proto_end(&wr);
    stream_write(&sv->s, buf, wr.len);
}

static void server_on_connected(struct stream *s, int err)
{
    struct server *sv = stream_server(s);
    if (err) {
        char why[256];
        snprintf(why, sizeof(why), "connect failed: %s", stream_strerror(s, err));
        /* TLS refused or not trusted: waiting clients get that now. */
        pool_connect_failed(sv->pool, why, err == STREAM_ERR_TLS_CONFIG);
        server_close(sv, why);
        return;
    }
    sv->state = SV_LOGIN;
    server_send_startup(sv);
}

/* The secret to log in with: the database entry's password, else the
 * auth_file's entry, else what auth_query returned. */
static const char *server_password(const struct server *sv)
{
    const struct config_database *cd = sv->pool->db->cfg;
    if (cd && cd->password[0])
        return cd->password;
    if (g_pooler.userlist) {
        const char *pw = auth_userlist_find(g_pooler.userlist, sv->pool->user->name);
        if (pw)
            return pw;
    }
    return sv->pool->user->password;
}

static void server_login_failed(struct server *sv, const char *why, bool fatal_for_clients)
{
    char msg[400];
    snprintf(msg, sizeof(msg), "%s", why);
    pool_connect_failed(sv->pool, msg, fatal_for_clients);
    server_close(sv, msg);
}

/* Handles an Authentication request during login. false = closed. */
static bool server_handle_auth(struct server *sv, const uint8_t *msg, uint32_t len)
{
    struct proto_reader r;
    proto_reader_init(&r, msg, len);
    uint32_t code = proto_read32(&r);
    uint8_t out[1100];
    struct proto_writer wr;
    proto_writer_init(&wr, out, sizeof(out));
    const char *secret = server_password(sv);
    const char *errmsg = NULL;

    switch (code) {
    case PROTO_AUTH_OK:
        return true;
    case PROTO_AUTH_CLEARTEXT:
        if (!secret || auth_secret_kind(secret) != AUTH_SECRET_PLAIN) {
            server_login_failed(sv, "server asked for a cleartext password, and none is known",
                                true);
            return false;
        }
        proto_build_password(&wr, secret);
        break;
    case PROTO_AUTH_MD5: {
        const uint8_t *salt = proto_read_bytes(&r, 4);
        if (!salt || !secret || auth_secret_kind(secret) == AUTH_SECRET_SCRAM) {
            server_login_failed(sv, "server asked for md5, and no password or md5 hash is known",
                                true);
            return false;
        }
        char hash[AUTH_MD5_LEN + 1], resp[AUTH_MD5_LEN + 1];
        if (auth_secret_kind(secret) == AUTH_SECRET_MD5) {
            snprintf(hash, sizeof(hash), "%s", secret);
        } else {
            auth_md5_hash(secret, sv->pool->user->name, hash);
        }
        auth_md5_salted(hash, salt, resp);
        proto_build_password(&wr, resp);
        break;
    }
    case PROTO_AUTH_SASL: {
        bool have = false;
        for (;;) {
            const char *mech = proto_read_string(&r);
            if (r.bad || !mech[0])
                break;
            if (strcmp(mech, SCRAM_MECHANISM) == 0)
                have = true;
        }
        if (!have) {
            server_login_failed(sv, "server offered no supported SASL mechanism", true);
            return false;
        }
        if (!sv->auth) {
            sv->auth = calloc(1, sizeof(*sv->auth));
            if (!sv->auth)
                abort();
        }
        struct pool_user *u = sv->pool->user;
        if (secret && auth_secret_kind(secret) == AUTH_SECRET_PLAIN) {
            scram_client_init_password(&sv->auth->scram, secret);
        } else if (secret && auth_secret_kind(secret) == AUTH_SECRET_SCRAM && u->have_scram_keys) {
            struct scram_secret ss;
            if (!scram_secret_parse(secret, &ss)) {
                server_login_failed(sv, "bad SCRAM secret in auth_file", true);
                return false;
            }
            scram_client_init_keys(&sv->auth->scram, u->scram_client_key, &ss);
        } else {
            server_login_failed(sv,
                                "server asked for SCRAM, and neither a password nor a "
                                "client's SCRAM keys are known for this user",
                                true);
            return false;
        }
        sv->auth->scram_started = true;
        char first[SCRAM_MAX_MESSAGE + 1];
        size_t n = 0;
        if (scram_client_first(&sv->auth->scram, first, sizeof(first), &n) != SCRAM_OK) {
            server_login_failed(sv, "SCRAM failed", false);
            return false;
        }
        proto_build_sasl_initial(&wr, SCRAM_MECHANISM, first, n);
        break;
    }
    case PROTO_AUTH_SASL_CONTINUE: {
        if (!sv->auth || !sv->auth->scram_started) {
            server_login_failed(sv, "unexpected SASL continue", false);
            return false;
        }
        char fin[SCRAM_MAX_MESSAGE + 1];
        size_t n = 0;
        enum scram_status st = scram_client_final(&sv->auth->scram, r.p, (size_t)(r.end - r.p), fin,
                                                  sizeof(fin), &n, &errmsg);
        if (st != SCRAM_OK) {
            char why[200];
            snprintf(why, sizeof(why), "SCRAM with server failed: %s", errmsg ? errmsg : "");
            server_login_failed(sv, why, true);
            return false;
        }
        proto_build_sasl_response(&wr, fin, n);
        break;
    }
    case PROTO_AUTH_SASL_FINAL: {
        if (!sv->auth || !sv->auth->scram_started ||
            scram_client_verify(&sv->auth->scram, r.p, (size_t)(r.end - r.p), &errmsg) !=
                SCRAM_OK) {
            server_login_failed(sv, "server's SCRAM signature is wrong", false);
            return false;
        }
        return true;
    }
    default: {
        char why[100];
        snprintf(why, sizeof(why), "unsupported authentication method %u requested by server",
                 code);
        server_login_failed(sv, why, true);
        return false;
    }
    }
    if (wr.overflow) {
        server_login_failed(sv, "authentication message too long", false);
        return false;
    }
    stream_write(&sv->s, out, wr.len);
    return true;
}

/* Records a ParameterStatus on the server (and the client that sees it). */
static void server_param_status(struct server *sv, const uint8_t *msg, uint32_t len)
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
        param_store(&sv->params.v[tp], value);
        if (sv->client && sv->state == SV_ACTIVE)
            param_assign(&sv->client->params.v[tp], sv->params.v[tp]);
    }
    if (sv->state != SV_LOGIN)
        return;
    /* The pool's welcome is written once, by the first logins (of any
     * worker), and read without the lock once welcome_ready is set. */
    pool_lock();
    if (!p->welcome_ready) {
        for (int i = 0; i < p->welcome.n; i++) {
            if (strcmp(p->welcome.names[i], name) == 0) {
                free(p->welcome.values[i]);
                p->welcome.values[i] = strdup(value);
                pool_unlock();
                return;
            }
        }
        if (p->welcome.n < (int)(sizeof(p->welcome.names) / sizeof(p->welcome.names[0]))) {
            p->welcome.names[p->welcome.n] = strdup(name);
            p->welcome.values[p->welcome.n] = strdup(value);
            if (!p->welcome.names[p->welcome.n] || !p->welcome.values[p->welcome.n])
                abort();
            p->welcome.n++;
        }
        if (tp >= 0)
            param_assign(&p->welcome_params.v[tp], sv->params.v[tp]);
    }
    pool_unlock();
}

static void server_log_error(struct server *sv, const uint8_t *msg, uint32_t len, char *out,
                             size_t outlen)
{
    struct proto_error_fields ef;
    if (proto_parse_error(msg, len, &ef))
        snprintf(out, outlen, "%s: %s", ef.severity, ef.message);
    else
        snprintf(out, outlen, "malformed error message");
}

/* Login is complete (ReadyForQuery seen, connect_query done). */
static void server_login_done(struct server *sv)
{
    struct pool *p = sv->pool;
    if (sv->auth) {
        scram_client_free(&sv->auth->scram);
        free(sv->auth);
        sv->auth = NULL;
    }
    pool_lock();
    p->welcome_ready = true;
    pool_unlock();
    sv->welcome_done = true;
    sv->ready = true;
    if (g_pooler.cfg->log_connections)
        SV_LOG(LOG_LVL_LOG, sv, "login ok (pid %u)", sv->backend_pid);
    if (sv->listener) {
        listen_server_ready(sv);
        return;
    }
    pool_server_ready(sv);
}

/* ---- message loops ------------------------------------------------------- */

/* Messages while sluice itself talks to the server (login, check, reset,
 * SETs): nothing goes to a client. Returns false if sv was closed. */
static bool server_handle_own(struct server *sv)
{
    struct stream *s = &sv->s;
    struct iobuf *b = s->rbuf;
    uint32_t max = (uint32_t)g_pooler.cfg->max_packet_size;
    while (b && iobuf_len(b)) {
        uint8_t type;
        uint32_t mlen;
        enum proto_status ps =
            proto_peek_header(b->data + b->start, iobuf_len(b), max, &type, &mlen);
        if (ps == PROTO_NEED_MORE)
            break;
        if (ps != PROTO_OK) {
            server_close(sv, "server sent a malformed message");
            return false;
        }
        if (mlen > iobuf_len(b)) {
            if (mlen > b->cap) {
                /* Too big to hold: only rows or notices are that big, and
                 * sluice's own queries ignore them. */
                if (type == 'D' || type == 'N' || type == 'T') {
                    s->skip = mlen - iobuf_len(b);
                    s->skip_forward = false;
                    b->start = b->end;
                    break;
                }
                server_close(sv, "server message too long");
                return false;
            }
            break;
        }
        const uint8_t *msg = b->data + b->start;
        b->start += mlen;
        char why[300];
        switch (type) {
        case 'R':
            if (sv->state != SV_LOGIN) {
                server_close(sv, "unexpected authentication request");
                return false;
            }
            if (!server_handle_auth(sv, msg, mlen))
                return false;
            break;
        case 'S':
            server_param_status(sv, msg, mlen);
            break;
        case 'K':
            if (mlen >= 13) {
                sv->backend_pid = proto_get32(msg + 5);
                sv->backend_key = proto_get32(msg + 9);
            }
            break;
        case 'E': {
            server_log_error(sv, msg, mlen, why, sizeof(why));
            struct proto_error_fields ef;
            if (sv->state == SV_LOGIN && !sv->welcome_done) {
                bool fatal =
                    proto_parse_error(msg, mlen, &ef) &&
                    (strncmp(ef.sqlstate, "28", 2) == 0 || strncmp(ef.sqlstate, "3D", 2) == 0);
                char m[340];
                snprintf(m, sizeof(m), "server login failed: %s", why);
                server_login_failed(sv, m, fatal);
                return false;
            }
            if (sv->state == SV_SETTING && sv->client) {
                /* A SET the client asked for earlier failed here: tell it. */
                client_send_error(sv->client, "22023", "could not restore session setting: %s",
                                  why);
            } else {
                SV_LOG(LOG_LVL_WARNING, sv, "%s query failed: %s", server_state_str(sv->state),
                       why);
                sv->close_needed = true;
            }
            break;
        }
        case 'Z':
            if (mlen < 6) {
                server_close(sv, "malformed ReadyForQuery");
                return false;
            }
            sv->xact_status = (char)msg[5];
            if (sv->pending_rfq > 0)
                sv->pending_rfq--;
            if (sv->pending_rfq > 0)
                break;
            if (sv->state == SV_LOGIN) {
                const struct config_database *cd = sv->pool->db->cfg;
                if (!sv->welcome_done && cd && cd->connect_query[0]) {
                    sv->welcome_done = true;
                    uint8_t q[4096];
                    struct proto_writer wr;
                    proto_writer_init(&wr, q, sizeof(q));
                    proto_build_query(&wr, cd->connect_query);
                    sv->pending_rfq = 1;
                    stream_write(&sv->s, q, wr.len);
                    break;
                }
                server_login_done(sv);
                return !s->closed && sv->state != SV_CLOSED ? true : false;
            }
            if (sv->xact_status != 'I') {
                server_close(sv, "server left in a transaction by sluice's own query");
                return false;
            }
            sv->ready = true;
            if (sv->state == SV_RESETTING &&
                (strcasestr(g_pooler.cfg->server_reset_query, "discard all") ||
                 strcasestr(g_pooler.cfg->server_reset_query, "reset all")))
                param_assign(&sv->extras, NULL); /* the reset undid them */
            if (sv->state == SV_RESETTING &&
                (strcasestr(g_pooler.cfg->server_reset_query, "discard all") ||
                 strcasestr(g_pooler.cfg->server_reset_query, "deallocate all")))
                prepared_server_forget(sv); /* and dropped every prepared statement */
            if (sv->state == SV_SETTING) {
                sv->state = SV_ACTIVE;
                if (sv->client)
                    client_linked(sv->client);
                return false; /* the client drives from here */
            }
            if (sv->close_needed) {
                server_close(sv, "own query failed");
                return false;
            }
            pool_server_ready(sv);
            return false;
        default:
            /* RowDescription, DataRow, CommandComplete, notices: ignored. */
            break;
        }
    }
    return true;
}

/* Forwards everything the server sent to the linked client; notices the
 * end of each request (ReadyForQuery) to count it and to release the server
 * when the transaction is over. */
static void server_forward(struct server *sv)
{
    struct stream *s = &sv->s;
    struct client *c = sv->client;
    struct iobuf *b = s->rbuf;
    struct worker *w = s->worker;
    uint32_t max = (uint32_t)g_pooler.cfg->max_packet_size;
    uint32_t fwd = b->start;
    bool release = false;
    bool stmt_violation = false;
    bool notify_flush = false; /* queued notifications go after this ReadyForQuery */

    while (b->start < b->end) {
        uint8_t type;
        uint32_t mlen;
        enum proto_status ps = stream_peek_msg(s, max, &type, &mlen);
        if (ps == PROTO_NEED_MORE)
            break;
        uint32_t avail = iobuf_len(b);
        if (ps != PROTO_OK) {
            stream_write(&c->s, b->data + fwd, b->start - fwd);
            server_close(sv, "server sent a malformed message");
            return;
        }
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
                if (mlen > b->cap) {
                    stream_write(&c->s, b->data + fwd, b->start - fwd);
                    server_close(sv, "server message too long");
                    return;
                }
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

static void server_on_data(struct stream *s)
{
    struct server *sv = stream_server(s);
    switch (sv->state) {
    case SV_ACTIVE:
        if (sv->listener) {
            listen_server_data(sv);
            return;
        }
        if (sv->client && sv->client->state == CL_AUTH_QUERY) {
            server_handle_auth_query(sv);
            return;
        }
        if (sv->client) {
            server_forward(sv);
            return;
        }
        server_close(sv, "active server without client");
        return;
    case SV_LOGIN:
    case SV_TESTING:
    case SV_RESETTING:
    case SV_SETTING:
        if (s->skip) {
            uint32_t n = s->skip < iobuf_len(s->rbuf) ? s->skip : iobuf_len(s->rbuf);
            s->rbuf->start += n;
            s->skip -= n;
        }
        if (server_handle_own(sv) && !s->closed)
            stream_release_rbuf(s);
        return;
    case SV_IDLE:
    case SV_CANCEL_WAIT: {
        if (sv->state == SV_IDLE && pool_server_moving(sv)) {
            /* Picked for another worker's client: that worker judges it. */
            stream_read_stop(s);
            return;
        }
        /* An idle server has nothing to say but a FATAL before it goes
         * (administrator command, idle timeout on the provider side). */
        char why[300] = "unexpected data from idle server";
        uint8_t type = 0;
        uint32_t mlen = 0;
        struct iobuf *b = s->rbuf;
        if (proto_peek_header(b->data + b->start, iobuf_len(b), 1u << 20, &type, &mlen) ==
                PROTO_OK &&
            type == 'E' && mlen <= iobuf_len(b))
            server_log_error(sv, b->data + b->start, mlen, why, sizeof(why));
        else if (type == 'N' || type == 'S' || type == 'A') {
            /* Harmless; drop complete ones. */
            if (mlen <= iobuf_len(b)) {
                b->start += mlen;
                stream_release_rbuf(s);
                return;
            }
        }
        server_close(sv, why);
        return;
    }
    default:
        server_close(sv, "unexpected data");
        return;
    }
}

static void server_on_drained(struct stream *s)
{
    struct server *sv = stream_server(s);
    struct client *c = sv->client;
    if (s->blocked_src && c && s->blocked_src == &c->s) {
        s->blocked_src = NULL;
        stream_read_start(&c->s);
        if (c->s.rbuf && iobuf_len(c->s.rbuf))
            c->s.ops->on_data(&c->s);
    }
}

static void server_on_closed(struct stream *s, const char *reason)
{
    struct server *sv = stream_server(s);
    if (sv->state == SV_IDLE && pool_server_moving(sv)) {
        stream_read_stop(s); /* as in server_on_data() */
        return;
    }
    server_close(sv, reason ? reason : "server closed the connection");
}

static const struct stream_ops server_ops = {
    .on_data = server_on_data,
    .on_drained = server_on_drained,
    .on_closed = server_on_closed,
    .on_connected = server_on_connected,
};

/* ---- linking and internal queries ---------------------------------------- */

void server_run_internal(struct server *sv, enum server_state st, const char *sql)
{
    uint8_t buf[4096];
    struct proto_writer wr;
    proto_writer_init(&wr, buf, sizeof(buf));
    proto_build_query(&wr, sql);
    if (wr.overflow) {
        server_close(sv, "internal query too long");
        return;
    }
    sv->state = st;
    sv->pending_rfq = 1;
    sv->ready = false;
    stream_write(&sv->s, buf, wr.len);
}

/* Sends auth_query for c's user over sv (extended protocol: the user name
 * travels as a parameter, never spliced into SQL). */
static void server_send_auth_query(struct server *sv, struct client *c)
{
    const struct config_database *cd = c->pool->db->cfg;
    const char *q = cd && cd->auth_query[0] ? cd->auth_query : g_pooler.cfg->auth_query;
    uint8_t buf[4096];
    struct proto_writer wr;
    proto_writer_init(&wr, buf, sizeof(buf));
    proto_begin(&wr, 'P');
    proto_add_string(&wr, "");
    proto_add_string(&wr, q);
    proto_add16(&wr, 0);
    proto_end(&wr);
    proto_begin(&wr, 'B');
    proto_add_string(&wr, "");
    proto_add_string(&wr, "");
    proto_add16(&wr, 0);
    proto_add16(&wr, 1);
    proto_add32(&wr, (uint32_t)strlen(c->user));
    proto_add_bytes(&wr, c->user, strlen(c->user));
    proto_add16(&wr, 0);
    proto_end(&wr);
    proto_begin(&wr, 'E');
    proto_add_string(&wr, "");
    proto_add32(&wr, 0);
    proto_end(&wr);
    proto_begin(&wr, 'S');
    proto_end(&wr);
    if (wr.overflow) {
        client_auth_query_done(c, NULL);
        return;
    }
    sv->state = SV_ACTIVE;
    sv->ready = false;
    sv->aq_password[0] = '\0';
    sv->aq_found = false;
    stream_write(&sv->s, buf, wr.len);
}

/* Reads auth_query's answer; on ReadyForQuery gives the server back and
 * lets the client's login go on. */
static void server_handle_auth_query(struct server *sv)
{
    struct stream *s = &sv->s;
    struct iobuf *b = s->rbuf;
    struct client *c = sv->client;
    while (b && iobuf_len(b)) {
        uint8_t type;
        uint32_t mlen;
        enum proto_status ps =
            proto_peek_header(b->data + b->start, iobuf_len(b), 1u << 20, &type, &mlen);
        if (ps == PROTO_NEED_MORE || (ps == PROTO_OK && mlen > iobuf_len(b) && mlen <= b->cap))
            return;
        if (ps != PROTO_OK || mlen > b->cap) {
            server_close(sv, "bad answer to auth_query");
            return;
        }
        const uint8_t *msg = b->data + b->start;
        b->start += mlen;
        if (type == 'D') {
            struct proto_reader r;
            proto_reader_init(&r, msg, mlen);
            uint16_t n = proto_read16(&r);
            uint32_t l1 = proto_read32(&r);
            if (n >= 2 && l1 != 0xffffffffu)
                proto_read_bytes(&r, l1);
            uint32_t l2 = proto_read32(&r);
            const uint8_t *pw = l2 != 0xffffffffu ? proto_read_bytes(&r, l2) : NULL;
            if (!r.bad && n >= 2 && pw && l2 < sizeof(sv->aq_password)) {
                memcpy(sv->aq_password, pw, l2);
                sv->aq_password[l2] = '\0';
                sv->aq_found = true;
            }
        } else if (type == 'E') {
            char why[300];
            server_log_error(sv, msg, mlen, why, sizeof(why));
            SV_LOG(LOG_LVL_WARNING, sv, "auth_query failed: %s", why);
        } else if (type == 'Z') {
            sv->xact_status = mlen >= 6 ? (char)msg[5] : 'E';
            sv->ready = sv->xact_status == 'I';
            c->server = NULL;
            sv->client = NULL;
            stream_release_rbuf(s);
            pool_release_server(sv);
            client_auth_query_done(c, sv->aq_found ? sv->aq_password : NULL);
            return;
        }
    }
    stream_release_rbuf(s);
}

void server_link(struct server *sv, struct client *c)
{
    sv->client = c;
    c->server = sv;
    if (c->state == CL_AUTH_QUERY) {
        server_send_auth_query(sv, c);
        return;
    }
    c->state = CL_ACTIVE;
    c->track = prepared_tracking(sv->pool);
    sv->request_time = worker_now(sv->s.worker);
    /* Does the client expect other values than the server has? Settings
     * from the startup packet beyond the tracked ones are applied as a whole
     * (after RESET ALL), since the server does not report them back. */
    char sql[4096];
    size_t n = 0;
    bool all = c->extras != sv->extras;
    if (all) {
        n = (size_t)snprintf(sql, sizeof(sql), "RESET ALL;%s", c->extras ? c->extras : "");
        if (n >= sizeof(sql))
            n = 0;
        param_assign(&sv->extras, c->extras);
    }
    for (int i = 0; i < TP_COUNT; i++) {
        const char *want = c->params.v[i];
        if (!want || (!all && want == sv->params.v[i]))
            continue;
        char lit[600];
        if (!proto_quote_literal(want, lit, sizeof(lit)))
            continue;
        int k = snprintf(sql + n, sizeof(sql) - n, "SET %s = %s;", tracked_param_name(i), lit);
        if (k < 0 || (size_t)k >= sizeof(sql) - n)
            break;
        n += (size_t)k;
    }
    if (n > 0) {
        log_debug("S-%p: setting params for C-%p: %s", (void *)sv, (void *)c, sql);
        server_run_internal(sv, SV_SETTING, sql);
        return;
    }
    sv->state = SV_ACTIVE;
    client_linked(c);
}

/* ---- cancel -------------------------------------------------------------- */

struct cancel_conn {
    struct stream s;
    struct pool *pool;
    uint64_t server_id;
    struct server *server;
    struct list node; /* on its worker's cancels, so shutdown can free them */
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

static void cancel_done(struct cancel_conn *cc)
{
    stream_close(&cc->s);
    struct server *sv = cancel_target(cc);
    list_del(&cc->node);
    free(cc);
    if (!sv)
        return;
    if (sv->cancels_in_flight > 0)
        sv->cancels_in_flight--;
    if (sv->cancels_in_flight == 0 && sv->state == SV_CANCEL_WAIT) {
        /* The cancel has landed; the server can serve others now. */
        if (server_is_clean(sv))
            pool_server_ready(sv);
        else
            server_close(sv, "not clean after cancel");
    }
}

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
    uint8_t buf[16];
    struct proto_writer wr;
    proto_writer_init(&wr, buf, sizeof(buf));
    proto_build_cancel(&wr, sv->backend_pid, sv->backend_key);
    stream_write(s, buf, wr.len);
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

void server_send_cancel(struct server *sv)
{
    struct pool *p = sv->pool;
    struct cancel_conn *cc = calloc(1, sizeof(*cc));
    if (!cc)
        abort();
    cc->pool = p;
    cc->server = sv;
    cc->server_id = sv->id;
    /* To the backend's own address: a name with several may point elsewhere. */
    struct sockaddr_storage peer;
    socklen_t plen = sizeof(peer);
    if (getpeername(sv->s.fd, (struct sockaddr *)&peer, &plen) < 0) {
        peer = p->addr;
        plen = p->addrlen;
    }
    if (stream_connect(&cc->s, sv->s.worker, (struct sockaddr *)&peer, plen, &cancel_ops) < 0) {
        free(cc);
        return;
    }
    list_init(&cc->node);
    list_add_tail(&sv->s.worker->cancels, &cc->node);
    sv->cancels_in_flight++;
    SV_LOG(LOG_LVL_LOG, sv, "sending cancel request to backend pid %u", sv->backend_pid);
}

void server_cancel_free_all(struct worker *w)
{
    while (!list_empty(&w->cancels)) {
        struct cancel_conn *cc = list_entry(list_first(&w->cancels), struct cancel_conn, node);
        list_del(&cc->node);
        stream_close(&cc->s);
        free(cc);
    }
}
