/* client.c - client connections: startup, authentication, welcome, and
 * forwarding of requests to the linked server. */
#include "client.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/un.h>
#include <unistd.h>

#include "admin.h"
#include "auth.h"
#include "listen.h"
#include "log.h"
#include "pool.h"
#include "proto.h"
#include "scram.h"
#include "prepared.h"
#include "server.h"
#include "tls.h"
#include "worker.h"

enum client_auth_method {
    CAM_NONE = 0, /* nothing asked */
    CAM_PLAIN,    /* AuthenticationCleartextPassword sent */
    CAM_MD5,      /* AuthenticationMD5Password sent */
    CAM_SCRAM,    /* AuthenticationSASL sent */
};

/* Login-time state: exists only until the client is logged in, so that an
 * idle logged-in client costs just its struct client. */
struct client_auth {
    enum client_auth_method method;
    int scram_step;
    uint8_t salt[4];
    char *secret; /* copy of the stored secret, NULL = unknown user */
    struct scram_server scram;
};

static const struct stream_ops client_ops;

const char *client_state_str(enum client_state st)
{
    static const char *const names[] = {"startup", "auth",    "auth_query", "login_wait",
                                        "idle",    "waiting", "active",     "closed"};
    return (unsigned)st < sizeof(names) / sizeof(names[0]) ? names[st] : "?";
}

static struct client *stream_client(struct stream *s)
{
    return (struct client *)((char *)s - offsetof(struct client, s));
}

const char *client_addr_str(const struct client *c, char *buf, size_t len)
{
    if (c->is_unix) {
        snprintf(buf, len, "unix");
        return buf;
    }
    if (c->addr.ss_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)&c->addr)->sin_addr, buf, (socklen_t)len);
    else if (c->addr.ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)&c->addr)->sin6_addr, buf,
                  (socklen_t)len);
    else
        snprintf(buf, len, "?");
    return buf;
}

int client_port(const struct client *c)
{
    if (c->addr.ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)&c->addr)->sin_port);
    if (c->addr.ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)&c->addr)->sin6_port);
    return 0;
}

#define CL_LOG(lvl, c, fmt, ...)                                                                   \
    do {                                                                                           \
        char addr_[64];                                                                            \
        log_msg(lvl, "C-%p: %s/%s@%s:%d " fmt, (void *)(c), (c)->dbname ? (c)->dbname : "(nodb)",  \
                (c)->user ? (c)->user : "(nouser)", client_addr_str(c, addr_, sizeof(addr_)),      \
                client_port(c), ##__VA_ARGS__);                                                    \
    } while (0)

/* ---- output helpers ------------------------------------------------------ */

static void client_write_msg(struct client *c, const struct proto_writer *wr)
{
    stream_write(&c->s, wr->buf, wr->len);
}

void client_send_error(struct client *c, const char *sqlstate, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    uint8_t buf[700];
    struct proto_writer wr;
    proto_writer_init(&wr, buf, sizeof(buf));
    proto_build_error(&wr, false, sqlstate, "%s", msg);
    client_write_msg(c, &wr);
}

static void client_free(struct client *c)
{
    struct worker *w = c->s.worker;
    prepared_client_free(c);
    listen_client_free(c);
    if (c->is_admin)
        admin_client_closed(c);
    list_del(&c->node);
    w->n_clients--;
    __atomic_sub_fetch(&g_pooler.n_clients, 1, __ATOMIC_RELAXED);
    if (c->pool) {
        pool_lock();
        c->pool->n_clients--;
        pool_unlock();
    }
    if (c->auth) {
        scram_server_free(&c->auth->scram);
        if (c->auth->secret) {
            memset(c->auth->secret, 0, strlen(c->auth->secret));
            free(c->auth->secret);
        }
        free(c->auth);
        c->auth = NULL;
    }
    param_set_clear(&c->params);
    param_take(&c->extras, NULL);
    param_take(&c->user, NULL);
    param_take(&c->dbname, NULL);
    c->state = CL_CLOSED;
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

/* Frees c once its last bytes (an error) are written. */
static void client_finish(struct client *c)
{
    if (stream_has_output(&c->s)) {
        c->close_after_flush = true;
        stream_read_stop(&c->s);
        return;
    }
    stream_close(&c->s);
    client_free(c);
}

/* Takes c off every list and away from its server. */
static void client_detach(struct client *c)
{
    enum client_state prev = c->state;
    if (prev == CL_WAITING || prev == CL_LOGIN_WAIT || prev == CL_AUTH_QUERY)
        pool_client_unwait(c);
    if (c->cancel_pid || c->cancel_key)
        pool_cancel_unregister(c);
    c->state = CL_CLOSED;
    struct server *sv = c->server;
    if (sv) {
        /* The server goes back to the pool only if nothing of this client
         * is left on it; pool_release_server() checks that. */
        pool_release_server(sv);
    }
}

void client_close(struct client *c, const char *reason)
{
    if (c->state == CL_CLOSED)
        return;
    if (g_pooler.cfg->log_disconnections && c->state >= CL_IDLE)
        CL_LOG(LOG_LVL_LOG, c, "closing because: %s (age=%llds)", reason,
               (long long)((worker_now(c->s.worker) - c->connect_time) / 1000000));
    client_detach(c);
    stream_close(&c->s);
    client_free(c);
}

void client_close_error(struct client *c, const char *sqlstate, const char *fmt, ...)
{
    if (c->state == CL_CLOSED)
        return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (g_pooler.cfg->log_pooler_errors)
        CL_LOG(LOG_LVL_WARNING, c, "pooler error: %s", msg);
    if (g_pooler.cfg->log_disconnections)
        CL_LOG(LOG_LVL_LOG, c, "closing because: %s (age=%llds)", msg,
               (long long)((worker_now(c->s.worker) - c->connect_time) / 1000000));
    uint8_t buf[700];
    struct proto_writer wr;
    proto_writer_init(&wr, buf, sizeof(buf));
    proto_build_error(&wr, true, sqlstate, "%s", msg);
    client_write_msg(c, &wr);
    client_detach(c);
    client_finish(c);
}

/* ---- accept -------------------------------------------------------------- */

void client_accept(struct worker *w, int fd, const struct sockaddr *addr, socklen_t addrlen,
                   bool is_unix)
{
    struct client *c = calloc(1, sizeof(*c));
    if (!c) {
        close(fd);
        return;
    }
    stream_init(&c->s, w, fd, &client_ops);
    c->state = CL_STARTUP;
    c->id = __atomic_add_fetch(&g_pooler.next_client_id, 1, __ATOMIC_RELAXED);
    c->is_unix = is_unix;
    if (addrlen <= sizeof(c->addr))
        memcpy(&c->addr, addr, addrlen);
    c->connect_time = c->last_activity = worker_now(w);
    list_init(&c->node);
    list_init(&c->wait_node);
    list_add_tail(&w->clients, &c->node);
    w->n_clients++;
    __atomic_add_fetch(&g_pooler.n_clients, 1, __ATOMIC_RELAXED);
    stream_read_start(&c->s);
}

/* ---- login --------------------------------------------------------------- */

static void client_send_auth_request(struct client *c, uint32_t code, const void *extra, size_t n)
{
    uint8_t buf[600];
    struct proto_writer wr;
    proto_writer_init(&wr, buf, sizeof(buf));
    proto_build_auth(&wr, code, extra, n);
    client_write_msg(c, &wr);
}

static struct client_auth *client_auth_state(struct client *c)
{
    if (!c->auth) {
        c->auth = calloc(1, sizeof(*c->auth));
        if (!c->auth)
            abort();
    }
    return c->auth;
}

static void client_auth_failed(struct client *c)
{
    client_close_error(c, SQLSTATE_INVALID_PASSWORD,
                       "password authentication failed for user \"%s\"", c->user);
}

static void client_login_done(struct client *c);

static void client_auth_challenge(struct client *c);

/* The auth_user for c's database, or "" when auth_query is not in use. */
static const char *client_auth_user(const struct client *c)
{
    if (c->is_admin || !c->pool)
        return "";
    const struct config_database *cd = c->pool->db->cfg;
    if (cd && cd->auth_user[0])
        return cd->auth_user;
    return g_pooler.cfg->auth_user;
}

/* Decides how to authenticate c (its user and database are known). The
 * secret comes from auth_file, else from auth_query run as auth_user. */
static void client_start_auth(struct client *c)
{
    const struct config *cfg = g_pooler.cfg;
    struct client_auth *a = client_auth_state(c);
    const char *secret = g_pooler.userlist ? auth_userlist_find(g_pooler.userlist, c->user) : NULL;
    if (secret) {
        a->secret = strdup(secret);
        if (!a->secret)
            abort();
    }
    const char *auth_user = client_auth_user(c);
    if (!secret && auth_user[0] && cfg->auth_type != AUTH_TYPE_ANY) {
        /* Ask the database: the client waits for a server of the
         * auth_user's pool, which runs auth_query for it. */
        struct pool *ap = pool_get(c->pool->db, auth_user);
        c->state = CL_AUTH_QUERY;
        stream_read_stop(&c->s);
        pool_client_wait_on(c, ap);
        return;
    }
    client_auth_challenge(c);
}

/* auth_query finished: secret is the user's password or NULL (no such
 * user, or NULL password). Continues the login. */
void client_auth_query_done(struct client *c, const char *secret)
{
    struct client_auth *a = client_auth_state(c);
    free(a->secret);
    a->secret = NULL;
    if (secret) {
        a->secret = strdup(secret);
        if (!a->secret)
            abort();
        /* Servers of this user's pool log in with the same secret. */
        struct pool_user *u = c->pool->user;
        if (strcmp(u->name, c->user) == 0) {
            free(u->password);
            u->password = strdup(secret);
        }
    }
    c->state = CL_STARTUP; /* not CL_AUTH_QUERY any more; challenge sets CL_AUTH */
    stream_read_start(&c->s);
    client_auth_challenge(c);
}

/* Sends the password request that auth_type and the secret call for. */
static void client_auth_challenge(struct client *c)
{
    const struct config *cfg = g_pooler.cfg;
    struct client_auth *a = client_auth_state(c);
    const char *secret = a->secret;
    enum auth_type t = cfg->auth_type;
    if (c->is_unix && t == AUTH_TYPE_HBA)
        t = AUTH_TYPE_TRUST;
    switch (t) {
    case AUTH_TYPE_ANY:
        client_login_done(c);
        return;
    case AUTH_TYPE_TRUST:
        if (!secret && !c->is_admin) {
            client_close_error(c, SQLSTATE_INVALID_AUTH, "no such user: %s", c->user);
            return;
        }
        client_login_done(c);
        return;
    case AUTH_TYPE_PLAIN:
        a->method = CAM_PLAIN;
        client_send_auth_request(c, PROTO_AUTH_CLEARTEXT, NULL, 0);
        break;
    case AUTH_TYPE_MD5:
        if (secret && auth_secret_kind(secret) == AUTH_SECRET_SCRAM)
            goto scram;
        a->method = CAM_MD5;
        auth_random_bytes(a->salt, 4);
        client_send_auth_request(c, PROTO_AUTH_MD5, a->salt, 4);
        break;
    case AUTH_TYPE_SCRAM:
    scram:
        a->method = CAM_SCRAM;
        if (secret && !scram_server_init(&a->scram, secret)) {
            /* An md5 secret cannot do SCRAM; fail at the password, as
             * PostgreSQL does. */
            free(a->secret);
            a->secret = NULL;
        }
        {
            static const char mech[] = SCRAM_MECHANISM "\0";
            client_send_auth_request(c, PROTO_AUTH_SASL, mech, sizeof(mech));
        }
        break;
    case AUTH_TYPE_CERT:
        /* The verified client certificate's CommonName is the user name. */
        if (!tls_client_cert_matches(&c->s, c->user)) {
            client_close_error(c, SQLSTATE_INVALID_AUTH,
                               "certificate authentication failed for user \"%s\"", c->user);
            return;
        }
        client_login_done(c);
        return;
    default:
        client_close_error(c, SQLSTATE_FEATURE_NOT_SUPPORTED, "auth_type %s is not supported",
                           auth_type_str(t));
        return;
    }
    c->state = CL_AUTH;
}

/* A PasswordMessage / SASL message arrived in CL_AUTH. */
static void client_handle_auth_msg(struct client *c, const uint8_t *msg, uint32_t len)
{
    struct client_auth *a = c->auth;
    struct proto_reader r;
    proto_reader_init(&r, msg, len);
    if (msg[0] != 'p' || !a) {
        client_close_error(c, SQLSTATE_PROTOCOL_VIOLATION,
                           "expected password response, got message type %d", msg[0]);
        return;
    }
    switch (a->method) {
    case CAM_PLAIN: {
        const char *pw = proto_read_string(&r);
        if (r.bad || !a->secret || !auth_plain_check(a->secret, c->user, pw)) {
            client_auth_failed(c);
            return;
        }
        client_login_done(c);
        return;
    }
    case CAM_MD5: {
        const char *resp = proto_read_string(&r);
        if (r.bad || !a->secret || !auth_md5_check(a->secret, c->user, a->salt, resp)) {
            client_auth_failed(c);
            return;
        }
        client_login_done(c);
        return;
    }
    case CAM_SCRAM: {
        char out[SCRAM_MAX_MESSAGE + 1];
        size_t outlen = 0;
        const char *err = NULL;
        if (a->scram_step == 0) {
            const char *mech = proto_read_string(&r);
            uint32_t n = proto_read32(&r);
            const uint8_t *data = proto_read_bytes(&r, n);
            if (r.bad || strcmp(mech, SCRAM_MECHANISM) != 0 || !data) {
                client_close_error(c, SQLSTATE_PROTOCOL_VIOLATION, "invalid SASL initial response");
                return;
            }
            if (!a->secret) {
                client_auth_failed(c);
                return;
            }
            enum scram_status st =
                scram_server_first(&a->scram, data, n, out, sizeof(out), &outlen, &err);
            if (st != SCRAM_OK) {
                client_close_error(c, SQLSTATE_PROTOCOL_VIOLATION, "SCRAM: %s",
                                   err ? err : scram_status_str(st));
                return;
            }
            a->scram_step = 1;
            client_send_auth_request(c, PROTO_AUTH_SASL_CONTINUE, out, outlen);
            return;
        }
        const uint8_t *data = r.p;
        size_t n = (size_t)(r.end - r.p);
        enum scram_status st =
            scram_server_final(&a->scram, data, n, out, sizeof(out), &outlen, &err);
        if (st == SCRAM_ERR_WRONG_PASSWORD) {
            client_auth_failed(c);
            return;
        }
        if (st != SCRAM_OK) {
            client_close_error(c, SQLSTATE_PROTOCOL_VIOLATION, "SCRAM: %s",
                               err ? err : scram_status_str(st));
            return;
        }
        /* Keep the client's key: with it sluice can log into servers that
         * hold the same SCRAM secret, without knowing the password. */
        if (auth_secret_kind(a->secret) == AUTH_SECRET_SCRAM && c->pool) {
            struct pool_user *u = c->pool->user;
            if (strcmp(u->name, c->user) == 0 &&
                scram_server_client_key(&a->scram, u->scram_client_key))
                u->have_scram_keys = true;
        }
        client_send_auth_request(c, PROTO_AUTH_SASL_FINAL, out, outlen);
        client_login_done(c);
        return;
    }
    default:
        client_close_error(c, SQLSTATE_PROTOCOL_VIOLATION, "unexpected password message");
        return;
    }
}

/* Sends the welcome: AuthenticationOk, parameters, BackendKeyData, RFQ. */
void client_welcome(struct client *c)
{
    struct pool *p = c->pool;
    uint8_t buf[4096];
    struct proto_writer wr;
    proto_writer_init(&wr, buf, sizeof(buf));
    proto_build_auth(&wr, PROTO_AUTH_OK, NULL, 0);
    for (int i = 0; i < TP_COUNT; i++)
        if (!c->params.v[i])
            param_assign(&c->params.v[i], p->welcome_params.v[i]);
    for (int i = 0; i < p->welcome.n; i++) {
        const char *v = p->welcome.values[i];
        int tp = tracked_param_lookup(p->welcome.names[i]);
        if (tp >= 0 && c->params.v[tp])
            v = c->params.v[tp];
        proto_build_param_status(&wr, p->welcome.names[i], v);
    }
    /* Tracked parameters the server did not report (application_name on
     * old servers) but the client set. */
    auth_random_bytes((uint8_t *)&c->cancel_pid, sizeof(c->cancel_pid));
    auth_random_bytes((uint8_t *)&c->cancel_key, sizeof(c->cancel_key));
    c->cancel_pid &= 0x7fffffff; /* some drivers print it as a signed pid */
    pool_cancel_register(c);
    proto_build_backend_key(&wr, c->cancel_pid, c->cancel_key);
    proto_build_ready(&wr, 'I');
    if (wr.overflow) {
        client_close_error(c, SQLSTATE_INTERNAL, "welcome message too long");
        return;
    }
    client_write_msg(c, &wr);
    c->state = CL_IDLE;
    c->last_activity = worker_now(c->s.worker);
    if (c->auth) {
        scram_server_free(&c->auth->scram);
        free(c->auth->secret);
        free(c->auth);
        c->auth = NULL;
    }
    if (g_pooler.cfg->log_connections)
        CL_LOG(LOG_LVL_LOG, c, "login attempt: db=%s user=%s", c->dbname, c->user);
    stream_read_start(&c->s);
    if (c->s.rbuf && iobuf_len(c->s.rbuf))
        c->s.ops->on_data(&c->s);
}

static void client_login_done(struct client *c)
{
    if (c->is_admin) {
        admin_welcome(c);
        return;
    }
    /* If the pool has never logged into its server, the welcome needs the
     * server's parameters: c waits for a first server login. */
    stream_read_stop(&c->s);
    if (pool_client_login(c))
        client_welcome(c);
}

/* Appends "SET name = 'value';" for a setting given at startup. */
static bool extras_add(char *buf, size_t cap, size_t *len, const char *name, const char *value)
{
    char lit[600];
    if (!proto_quote_literal(value, lit, sizeof(lit)))
        return false;
    /* Names are identifiers: allow only what a GUC name can be. */
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '.'))
            return false;
    int k = snprintf(buf + *len, cap - *len, "SET %s = %s;", name, lit);
    if (k < 0 || (size_t)k >= cap - *len)
        return false;
    *len += (size_t)k;
    return true;
}

/* Parses "-c a=b -c c=d" (also "--a=b") from the options parameter. */
static bool options_parse(const char *opts, char *extras, size_t cap, size_t *len, struct client *c)
{
    char buf[1024];
    if (strlen(opts) >= sizeof(buf))
        return false;
    snprintf(buf, sizeof(buf), "%s", opts);
    char *save = NULL;
    bool want_value = false;
    for (char *tok = strtok_r(buf, " \t", &save); tok; tok = strtok_r(NULL, " \t", &save)) {
        if (!want_value && strcmp(tok, "-c") == 0) {
            want_value = true;
            continue;
        }
        char *kv = tok;
        if (!want_value) {
            if (strncmp(tok, "-c", 2) == 0)
                kv = tok + 2;
            else if (strncmp(tok, "--", 2) == 0)
                kv = tok + 2;
            else
                return false;
        }
        want_value = false;
        char *eq = strchr(kv, '=');
        if (!eq)
            return false;
        *eq = '\0';
        for (char *p = kv; *p; p++)
            if (*p == '-')
                *p = '_';
        int tp = tracked_param_lookup(kv);
        if (tp >= 0)
            param_store(&c->params.v[tp], eq + 1);
        else if (!extras_add(extras, cap, len, kv, eq + 1))
            return false;
    }
    return !want_value;
}

/* The startup packet of a normal connection. */
static void client_handle_startup(struct client *c, const struct proto_startup *st)
{
    const struct config *cfg = g_pooler.cfg;
    const char *user = proto_startup_get(st, "user");
    const char *db = proto_startup_get(st, "database");
    if (!user || !*user) {
        client_close_error(c, SQLSTATE_PROTOCOL_VIOLATION,
                           "no user name specified in startup packet");
        return;
    }
    if (!db || !*db)
        db = user;
    param_store(&c->user, user);
    param_store(&c->dbname, db);
    if (!c->s.tls && !c->is_unix && tls_client_required()) {
        client_close_error(c, SQLSTATE_INVALID_AUTH, "SSL required");
        return;
    }
    if (proto_startup_get(st, "replication")) {
        client_close_error(c, SQLSTATE_FEATURE_NOT_SUPPORTED,
                           "replication connections are not supported");
        return;
    }
    if (g_pooler.shutting_down) {
        client_close_error(c, SQLSTATE_ADMIN_SHUTDOWN, "pooler is shutting down");
        return;
    }
    if (__atomic_load_n(&g_pooler.n_clients, __ATOMIC_RELAXED) > cfg->max_client_conn) {
        client_close_error(c, SQLSTATE_TOO_MANY_CONNECTIONS,
                           "no more connections allowed (max_client_conn)");
        return;
    }
    char extras[2048];
    size_t elen = 0;
    for (int i = 0; i < st->n_params; i++) {
        const char *name = st->names[i], *value = st->values[i];
        if (!strcmp(name, "user") || !strcmp(name, "database"))
            continue;
        if (config_list_contains(cfg->ignore_startup_parameters, name))
            continue;
        int tp = tracked_param_lookup(name);
        if (tp >= 0) {
            param_store(&c->params.v[tp], value);
            continue;
        }
        if (!strcmp(name, "options")) {
            if (!options_parse(value, extras, sizeof(extras), &elen, c)) {
                client_close_error(c, SQLSTATE_PROTOCOL_VIOLATION,
                                   "unsupported startup parameter in options: %s", value);
                return;
            }
            continue;
        }
        if (!extras_add(extras, sizeof(extras), &elen, name, value)) {
            client_close_error(c, SQLSTATE_PROTOCOL_VIOLATION, "unsupported startup parameter: %s",
                               name);
            return;
        }
    }
    if (elen)
        param_store(&c->extras, extras);
    if (cfg->application_name_add_host) {
        char app[512], addr[64];
        const char *cur = c->params.v[TP_APPLICATION_NAME] ? c->params.v[TP_APPLICATION_NAME] : "";
        snprintf(app, sizeof(app), "%s - %s:%d", cur, client_addr_str(c, addr, sizeof(addr)),
                 client_port(c));
        param_store(&c->params.v[TP_APPLICATION_NAME], app);
    }

    if (admin_is_admin_db(c->dbname)) {
        if (!admin_check_user(c))
            return;
        c->is_admin = true;
        client_start_auth(c);
        return;
    }
    struct database *d = pool_find_database(c->dbname);
    if (!d) {
        client_close_error(c, SQLSTATE_INVALID_CATALOG, "no such database: %s", c->dbname);
        return;
    }
    if (d->disabled) {
        client_close_error(c, SQLSTATE_CONNECTION_FAILURE, "database \"%s\" is disabled", d->name);
        return;
    }
    const char *login_user = d->cfg->user[0] ? d->cfg->user : c->user;
    c->pool = pool_get(d, login_user);
    pool_lock();
    c->pool->n_clients++;
    pool_unlock();
    client_start_auth(c);
}

/* CancelRequest: forward to the server running that client's query. */
static void client_handle_cancel(struct client *c, const struct proto_startup *st)
{
    /* The target may be another worker's client: look and act while every
     * other loop is parked. */
    worker_world_lock();
    struct client *target = pool_cancel_lookup(st->cancel_pid, st->cancel_key);
    if (target && target->server && target->state == CL_ACTIVE) {
        server_send_cancel(target->server);
    } else if (!target) {
        log_debug("C-%p: cancel request for unknown key", (void *)c);
    }
    worker_world_unlock();
    /* PostgreSQL answers a cancel by closing the connection. */
    client_close(c, "cancel request");
}

/* Handles the startup phase; false if c closed or waits. */
static bool client_startup_phase(struct client *c)
{
    struct iobuf *b = c->s.rbuf;
    uint32_t pktlen = 0;
    enum proto_status ps = proto_peek_startup(b->data + b->start, iobuf_len(b), &pktlen);
    if (ps == PROTO_NEED_MORE)
        return false;
    if (ps != PROTO_OK) {
        client_close_error(c, SQLSTATE_PROTOCOL_VIOLATION,
                           ps == PROTO_TOO_BIG ? "startup packet too long"
                                               : "invalid startup packet length");
        return false;
    }
    if (pktlen > iobuf_len(b)) {
        if (pktlen > b->cap) {
            client_close_error(c, SQLSTATE_PROTOCOL_VIOLATION, "startup packet too long");
            return false;
        }
        return false;
    }
    /* Parse a copy: handling the packet may run the whole login (and the
     * client's next messages) before this returns. */
    uint8_t pkt[PROTO_STARTUP_MAX];
    memcpy(pkt, b->data + b->start, pktlen);
    b->start += pktlen;
    struct proto_startup st;
    const char *err = NULL;
    ps = proto_parse_startup(pkt, pktlen, &st, &err);
    if (ps != PROTO_OK) {
        if (st.kind == PROTO_STARTUP_V3 && st.version && (st.version >> 16) != 3)
            client_close_error(c, SQLSTATE_FEATURE_NOT_SUPPORTED,
                               "unsupported frontend protocol %u.%u: server supports 3.0",
                               st.version >> 16, st.version & 0xffff);
        else
            client_close_error(c, SQLSTATE_PROTOCOL_VIOLATION, "%s", err);
        return false;
    }
    switch (st.kind) {
    case PROTO_STARTUP_SSL:
    case PROTO_STARTUP_GSSENC:
        if (iobuf_len(b)) {
            /* Bytes after an SSLRequest before our answer: a client trying
             * to inject plaintext into what should be TLS. */
            client_close_error(c, SQLSTATE_PROTOCOL_VIOLATION,
                               "received unencrypted data after SSL request");
            return false;
        }
        if (st.kind == PROTO_STARTUP_SSL && tls_client_accept(&c->s))
            return false; /* 'S' sent; the startup packet comes over TLS */
        stream_write(&c->s, "N", 1);
        return true;
    case PROTO_STARTUP_CANCEL:
        client_handle_cancel(c, &st);
        return false;
    case PROTO_STARTUP_V3:
        client_handle_startup(c, &st);
        return c->state == CL_AUTH;
    }
    return false;
}

/* ---- forwarding ---------------------------------------------------------- */

void client_linked(struct client *c)
{
    /* Reading may have stopped on a full buffer while c waited. */
    stream_read_start(&c->s);
    if (c->s.rbuf && iobuf_len(c->s.rbuf))
        c->s.ops->on_data(&c->s);
}

void client_unlinked(struct client *c)
{
    c->state = CL_IDLE;
    c->last_activity = worker_now(c->s.worker);
    c->pending_rfq = 0;
    if (c->track)
        prepared_client_unlinked(c);
    c->s.blocked_src = NULL;
    stream_read_start(&c->s);
    if (c->s.rbuf && iobuf_len(c->s.rbuf))
        c->s.ops->on_data(&c->s);
    else
        stream_release_rbuf(&c->s);
}

/* Forwards the client's messages to its server. */
static void client_forward(struct client *c)
{
    struct stream *s = &c->s;
    struct server *sv = c->server;
    struct iobuf *b = s->rbuf;
    struct worker *w = s->worker;
    uint32_t max = (uint32_t)g_pooler.cfg->max_packet_size;
    uint32_t fwd = b->start;
    int64_t now = worker_now(w);
    while (b->start < b->end) {
        uint8_t type;
        uint32_t mlen;
        enum proto_status ps = stream_peek_msg(s, max, &type, &mlen);
        if (ps == PROTO_NEED_MORE)
            break;
        uint32_t avail = iobuf_len(b);
        if (ps != PROTO_OK) {
            stream_write(&sv->s, b->data + fwd, b->start - fwd);
            stream_uncork(&sv->s);
            client_close_error(c, SQLSTATE_PROTOCOL_VIOLATION,
                               ps == PROTO_TOO_BIG ? "message too long (max_packet_size)"
                                                   : "invalid message length");
            return;
        }
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

static void client_process(struct client *c);

static void client_on_data(struct stream *s)
{
    struct client *c = stream_client(s);
    client_process(c);
    /* An emptied read buffer goes back to the worker's cache, so an idle
     * client holds none. */
    if (c->state != CL_CLOSED)
        stream_release_rbuf(s);
}

/* Handles whatever c has buffered, as far as its state allows. */
static void client_process(struct client *c)
{
    struct stream *s = &c->s;
    for (;;) {
        struct iobuf *b = s->rbuf;
        if (!b || iobuf_len(b) == 0) {
            stream_release_rbuf(s);
            return;
        }
        switch (c->state) {
        case CL_STARTUP:
            if (!client_startup_phase(c))
                return;
            continue;
        case CL_AUTH: {
            uint8_t type;
            uint32_t mlen;
            enum proto_status ps =
                proto_peek_header(b->data + b->start, iobuf_len(b), 10000, &type, &mlen);
            if (ps == PROTO_NEED_MORE)
                return;
            if (ps != PROTO_OK) {
                client_close_error(c, SQLSTATE_PROTOCOL_VIOLATION, "invalid password packet");
                return;
            }
            if (mlen > iobuf_len(b))
                return;
            const uint8_t *msg = b->data + b->start;
            b->start += mlen;
            client_handle_auth_msg(c, msg, mlen);
            if (c->state == CL_CLOSED)
                return;
            continue;
        }
        case CL_IDLE: {
            if (c->is_admin) {
                admin_handle(c);
                return;
            }
            uint8_t type;
            uint32_t mlen;
            enum proto_status ps =
                proto_peek_header(b->data + b->start, iobuf_len(b),
                                  (uint32_t)g_pooler.cfg->max_packet_size, &type, &mlen);
            if (ps == PROTO_NEED_MORE)
                return;
            if (ps != PROTO_OK) {
                client_close_error(c, SQLSTATE_PROTOCOL_VIOLATION,
                                   ps == PROTO_TOO_BIG ? "message too long (max_packet_size)"
                                                       : "invalid message length");
                return;
            }
            if (type == 'X') {
                client_close(c, "client close request");
                return;
            }
            if (!c->pool->db->cfg) {
                client_close_error(c, SQLSTATE_INVALID_CATALOG, "database \"%s\" was removed",
                                   c->dbname);
                return;
            }
            if ((type == 'P' || type == 'C') && prepared_idle(c))
                continue; /* Parse/Close + Sync answered without a server */
            pool_client_wait(c);
            if (c->state != CL_ACTIVE)
                return; /* waits for a server */
            continue;
        }
        case CL_ACTIVE:
            if (c->server->state != SV_ACTIVE)
                return; /* SETs still running */
            client_forward(c);
            return;
        default:
            /* Waiting for something else: keep the bytes. */
            return;
        }
    }
}

static void client_on_drained(struct stream *s)
{
    struct client *c = stream_client(s);
    if (c->close_after_flush) {
        stream_close(&c->s);
        client_free(c);
        return;
    }
    struct server *sv = c->server;
    if (s->blocked_src && sv && s->blocked_src == &sv->s) {
        s->blocked_src = NULL;
        stream_read_start(&sv->s);
        if (sv->s.rbuf && iobuf_len(sv->s.rbuf))
            sv->s.ops->on_data(&sv->s);
    }
}

static void client_on_closed(struct stream *s, const char *reason)
{
    struct client *c = stream_client(s);
    if (c->close_after_flush) {
        stream_close(&c->s);
        client_free(c);
        return;
    }
    client_close(c, reason ? reason : "client unexpected eof");
}

static const struct stream_ops client_ops = {
    .on_data = client_on_data,
    .on_drained = client_on_drained,
    .on_closed = client_on_closed,
};

/* ---- timeouts ------------------------------------------------------------ */

void client_janitor(struct worker *w)
{
    const struct config *cfg = g_pooler.cfg;
    int64_t now = worker_now(w);
    struct list *it, *tmp;
    list_for_each_safe(it, tmp, &w->clients)
    {
        struct client *c = list_entry(it, struct client, node);
        switch (c->state) {
        case CL_STARTUP:
        case CL_AUTH:
        case CL_AUTH_QUERY:
        case CL_LOGIN_WAIT:
            if (cfg->client_login_timeout > 0 && now - c->connect_time >= cfg->client_login_timeout)
                client_close_error(c, SQLSTATE_CONNECTION_FAILURE, "client_login_timeout");
            break;
        case CL_IDLE:
            if (cfg->client_idle_timeout > 0 && now - c->last_activity >= cfg->client_idle_timeout)
                client_close_error(c, SQLSTATE_CONNECTION_FAILURE, "client_idle_timeout");
            break;
        case CL_ACTIVE: {
            struct server *sv = c->server;
            if (!sv)
                break;
            bool busy = c->pending_rfq > 0 || c->unsynced;
            if (busy && cfg->query_timeout > 0 && now - c->request_time >= cfg->query_timeout) {
                /* Stop the query on the server, then tell the client. */
                if (sv->backend_pid)
                    server_send_cancel(sv);
                sv->close_needed = true;
                client_close_error(c, SQLSTATE_QUERY_CANCELED, "query_timeout");
                break;
            }
            if (!busy && sv->xact_status != 'I' && cfg->idle_transaction_timeout > 0 &&
                now - c->last_activity >= cfg->idle_transaction_timeout) {
                client_close_error(c, SQLSTATE_IDLE_IN_XACT_TIMEOUT, "idle transaction timeout");
                break;
            }
            if (!busy && sv->xact_status == 'I' && cfg->client_idle_timeout > 0 &&
                now - c->last_activity >= cfg->client_idle_timeout)
                client_close_error(c, SQLSTATE_CONNECTION_FAILURE, "client_idle_timeout");
            break;
        }
        default:
            break;
        }
    }
}
