/* client_login.c - a client's way in (client_login.h): the startup packet,
 * authentication against auth_file or auth_query, and the welcome. */
#include "client_login.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth.h"
#include "client_conn.h"
#include "log.h"
#include "peers.h"
#include "pool.h"
#include "proto.h"
#include "replication.h"
#include "ryw_vars.h"
#include "scram.h"
#include "server.h"
#include "server_cancel.h"
#include "server_query.h"
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
    char *secret;     /* copy of the stored secret, NULL = unknown user */
    char *aq_secret;  /* what auth_query returned, while it runs */
    bool aq_found;    /* auth_query found the user (its password may be NULL) */
    bool no_password; /* a known user without a password: trust lets it in */
    struct scram_server scram;
};

static const struct client_console *console;

static void client_send_auth_request(struct client *c, uint32_t code, const void *extra, size_t n)
{
    uint8_t buf[600];
    struct proto_writer wr;
    proto_writer_init(&wr, buf, sizeof(buf));
    proto_build_auth(&wr, code, extra, n);
    stream_write(&c->s, wr.buf, wr.len);
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

/* PgBouncer's log line for a login that failed (with log_connections). */
static void client_log_login_failed(struct client *c)
{
    if (g_pooler.cfg->log_connections)
        client_log(LOG_LVL_LOG, c, "login failed: db=%s user=%s", c->dbname, c->user);
}

static void client_auth_failed(struct client *c)
{
    client_log_login_failed(c);
    client_close_error(c, SQLSTATE_INVALID_PASSWORD,
                       "password authentication failed for user \"%s\"", c->user);
}

static void client_login_done(struct client *c);
static void client_login_free(struct client *c);

static void client_auth_challenge(struct client *c);
static void client_auth_query_done(struct client *c, const char *secret, bool found);

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

/* The database auth_query runs in for c: its database's auth_dbname, else
 * the general one, else c's own database. NULL (and c closed) when the
 * name is not a database of the config. */
static struct database *client_auth_database(struct client *c)
{
    const struct config_database *cd = c->pool->db->cfg;
    const char *name = cd && cd->auth_dbname[0] ? cd->auth_dbname : g_pooler.cfg->auth_dbname;
    if (!name[0])
        return c->pool->db;
    struct database *db = pool_find_database(name);
    if (!db)
        client_close_error(c, SQLSTATE_INVALID_AUTH,
                           "auth_dbname \"%s\" is not a database of the configuration", name);
    return db;
}

/* Decides how to authenticate c (its user and database are known). The
 * secret comes from auth_file, else from auth_query run as auth_user (in
 * the auth_dbname database, if any). */
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
        struct database *adb = client_auth_database(c);
        if (!adb)
            return;
        struct pool *ap = pool_get(adb, auth_user);
        stream_read_stop(&c->s);
        pool_client_wait(c, ap, CL_AUTH_WAIT);
        return;
    }
    client_auth_challenge(c);
}

/* auth_query finished: secret is the user's password or NULL (no such
 * user, or, found true, a NULL password: PgBouncer lets such a user in
 * under auth_type trust, and no password matches it otherwise). Continues
 * the login. */
static void client_auth_query_done(struct client *c, const char *secret, bool found)
{
    struct client_auth *a = client_auth_state(c);
    free(a->secret);
    a->secret = NULL;
    a->no_password = found && !secret;
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
    stream_read_start(&c->s);
    client_auth_challenge(c);
}

/* The key of scram_user_salt() for this process. */
static uint8_t salt_key[SCRAM_KEY_LEN];
static pthread_once_t salt_key_once = PTHREAD_ONCE_INIT;

static void salt_key_init(void)
{
    auth_random_bytes(salt_key, sizeof(salt_key));
}

/* The SCRAM secret to check c against: the stored one; for a plain-text
 * password one derived with this process's salt for the user (one PBKDF2
 * run); for a user without a usable secret (unknown, or an md5 hash) random
 * keys with that salt, so that the exchange fails at the proof. The salt
 * is the user's own and stable, so that neither kind of user can be told
 * from a stored SCRAM secret by its server-first-message, as PostgreSQL's
 * mock authentication ensures. false (a->secret cleared) for a mock. */
static bool client_scram_secret(struct client *c, struct client_auth *a, struct scram_secret *out)
{
    int iterations = g_pooler.cfg->scram_iterations;
    uint8_t salt[SCRAM_DEFAULT_SALT_LEN];
    pthread_once(&salt_key_once, salt_key_init);
    if (!scram_user_salt(salt_key, c->user, salt, (int)sizeof(salt)))
        abort();
    if (a->secret && scram_secret_parse(a->secret, out))
        return true;
    if (a->secret && auth_secret_kind(a->secret) == AUTH_SECRET_PLAIN &&
        scram_secret_from_password(a->secret, salt, (int)sizeof(salt), iterations, out))
        return true;
    free(a->secret);
    a->secret = NULL;
    *out = (struct scram_secret){.iterations = iterations, .salt_len = (int)sizeof(salt)};
    memcpy(out->salt, salt, sizeof(salt));
    auth_random_bytes(out->stored_key, SCRAM_KEY_LEN);
    auth_random_bytes(out->server_key, SCRAM_KEY_LEN);
    return false;
}

/* Starts SCRAM: SCRAM-SHA-256, and SCRAM-SHA-256-PLUS first over TLS
 * (channel binding to our certificate, as PostgreSQL offers it). */
static void client_scram_challenge(struct client *c, struct client_auth *a)
{
    struct scram_secret secret;
    (void)client_scram_secret(c, a, &secret);
    (void)scram_server_init_secret(&a->scram, &secret);
    explicit_bzero(&secret, sizeof(secret));
    uint8_t hash[SCRAM_CBIND_MAX];
    size_t n = tls_endpoint_hash(&c->s, true, hash, sizeof(hash));
    if (n > 0 && scram_server_set_cbind(&a->scram, hash, n)) {
        static const char mechs[] = SCRAM_PLUS_MECHANISM "\0" SCRAM_MECHANISM "\0";
        client_send_auth_request(c, PROTO_AUTH_SASL, mechs, sizeof(mechs));
    } else {
        static const char mech[] = SCRAM_MECHANISM "\0";
        client_send_auth_request(c, PROTO_AUTH_SASL, mech, sizeof(mech));
    }
}

/* Sends the password request that auth_type and the secret call for. */
static void client_auth_challenge(struct client *c)
{
    const struct config *cfg = g_pooler.cfg;
    struct client_auth *a = client_auth_state(c);
    const char *secret = a->secret;
    enum auth_type t = cfg->auth_type;
    switch (t) {
    case AUTH_TYPE_ANY:
        client_login_done(c);
        return;
    case AUTH_TYPE_TRUST:
        if (!secret && !a->no_password && !c->is_admin) {
            client_log_login_failed(c);
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
        client_scram_challenge(c, a);
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
    client_set_state(c, CL_AUTH);
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
            if (r.bad || !data || !scram_server_set_mechanism(&a->scram, mech)) {
                client_close_error(c, SQLSTATE_PROTOCOL_VIOLATION, "invalid SASL initial response");
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
        if (st == SCRAM_ERR_WRONG_PASSWORD || (st == SCRAM_OK && !a->secret)) {
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
    for (int i = 0; i < tracked_param_count(); i++)
        if (!param_get(&c->params, i) && param_get(&p->welcome_params, i))
            param_assign(param_slot(&c->params, i), param_get(&p->welcome_params, i));
    for (int i = 0; i < p->welcome.n; i++) {
        const char *v = p->welcome.values[i];
        int tp = tracked_param_lookup(p->welcome.names[i]);
        if (tp >= 0 && param_get(&c->params, tp))
            v = param_get(&c->params, tp);
        proto_build_param_status(&wr, p->welcome.names[i], v);
    }
    /* Tracked parameters the server did not report (application_name on
     * old servers) but the client set. */
    peers_new_cancel_key(c->s.worker->cfg, &c->cancel_pid, &c->cancel_key);
    pool_cancel_register(c);
    proto_build_backend_key(&wr, c->cancel_pid, c->cancel_key);
    if (wr.overflow) {
        client_close_error(c, SQLSTATE_INTERNAL, "welcome message too long");
        return;
    }
    stream_write(&c->s, wr.buf, wr.len);
    /* login_notify_message (PgBouncer 1.24+): a NOTICE before the first
     * ReadyForQuery. */
    if (g_pooler.cfg->login_notify_message[0])
        client_notice(c, g_pooler.cfg->login_notify_message);
    proto_writer_init(&wr, buf, sizeof(buf));
    proto_build_ready(&wr, 'I');
    stream_write(&c->s, wr.buf, wr.len);
    client_set_state(c, CL_IDLE);
    stream_limit_lift(&c->s);
    c->last_activity = worker_now(c->s.worker);
    client_login_free(c);
    if (g_pooler.cfg->log_connections) {
        /* PgBouncer 1.23's line: tls= and replication= at its end. */
        char tls[128];
        tls_describe(&c->s, tls, sizeof(tls));
        client_log(LOG_LVL_LOG, c, "login attempt: db=%s user=%s tls=%s replication=no", c->dbname,
                   c->user, tls[0] ? tls : "no");
    }
    stream_read_start(&c->s);
    if (c->s.rbuf && iobuf_len(c->s.rbuf))
        c->s.ops->on_data(&c->s);
}

static void client_login_done(struct client *c)
{
    if (!c->pool && !c->is_admin) {
        /* No such database: said only now, to a client that proved who it
         * is, as PgBouncer does (client_handle_startup()). */
        client_close_error(c, SQLSTATE_INVALID_CATALOG, "no such database: %s", c->dbname);
        return;
    }
    if (c->is_admin) {
        stream_limit_lift(&c->s);
        console->welcome(c);
        return;
    }
    if (c->replication) {
        replication_start(c); /* welcomed when its own server is in */
        return;
    }
    /* If the pool has never logged into its server, the welcome needs the
     * server's parameters: c waits for a first server login. */
    stream_read_stop(&c->s);
    if (pool_client_login(c))
        client_welcome(c);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n);
    if (!p)
        abort();
    return p;
}

/* The SQL that gives a server a client's startup settings beyond the
 * tracked ones, grown as needed (a login, not the hot path). */
struct extras_buf {
    char *p;
    size_t len, cap;
};

/* Appends "SELECT pg_catalog.set_config('name', 'value', false);" for a
 * setting given at startup: set_config() takes the value as the startup
 * packet and -c do (search_path=a,b is two schemas; SET search_path =
 * 'a,b' would be one). */
static bool extras_add(struct extras_buf *x, const char *name, const char *value)
{
    /* Names are identifiers: allow only what a GUC name can be. */
    if (!*name)
        return false;
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '.'))
            return false;
    size_t litcap = 2 * strlen(value) + 4;
    size_t need = x->len + strlen(name) + litcap + 64;
    if (need > x->cap) {
        size_t cap = x->cap ? x->cap : 256;
        while (cap < need)
            cap *= 2;
        char *np = realloc(x->p, cap);
        if (!np)
            abort();
        x->p = np;
        x->cap = cap;
    }
    char *lit = xmalloc(litcap);
    bool ok = proto_quote_literal(value, lit, litcap);
    if (ok)
        x->len += (size_t)snprintf(x->p + x->len, x->cap - x->len,
                                   "SELECT pg_catalog.set_config('%s', %s, false);", name, lit);
    free(lit);
    return ok;
}

/* The next argument of options at *p, split as PostgreSQL's pg_split_opts()
 * does: at whitespace not escaped, a backslash taking the character after
 * it as it is ("a\,b" is "a,b", "x\ y" is "x y"). out has room for the rest
 * of *p. False at the end. */
static bool options_next_arg(const char **p, char *out)
{
    const char *s = *p;
    while (*s == ' ' || (*s >= '\t' && *s <= '\r'))
        s++;
    if (!*s) {
        *p = s;
        return false;
    }
    size_t n = 0;
    bool escaped = false;
    for (; *s; s++) {
        if (!escaped && (*s == ' ' || (*s >= '\t' && *s <= '\r')))
            break;
        if (!escaped && *s == '\\') {
            escaped = true;
            continue;
        }
        escaped = false;
        out[n++] = *s;
    }
    out[n] = '\0';
    *p = s;
    return true;
}

/* One "name=value" of options (its name's '-' read as '_', as PostgreSQL
 * does): ignored if ignore_startup_parameters names it, kept as a tracked
 * parameter, or added to the extras. */
static bool options_setting(char *kv, struct extras_buf *x, struct client *c)
{
    char *eq = strchr(kv, '=');
    if (!eq)
        return false;
    *eq = '\0';
    for (char *p = kv; *p; p++)
        if (*p == '-')
            *p = '_';
    if (config_list_contains(g_pooler.cfg->ignore_startup_parameters, kv))
        return true;
    char why[256];
    if (!strncasecmp(kv, "sluice.", 7))
        return ryw_vars_startup(c, kv, eq + 1, why, sizeof(why)); /* never a server's */
    int tp = tracked_param_lookup(kv);
    if (tp >= 0) {
        param_store(param_slot(&c->params, tp), eq + 1);
        return true;
    }
    return extras_add(x, kv, eq + 1);
}

/* Parses "-c a=b -c c=d" (also "-ca=b" and "--a=b") from the options
 * parameter, of any length. */
static bool options_parse(const char *opts, struct extras_buf *x, struct client *c)
{
    char *arg = xmalloc(strlen(opts) + 1);
    const char *p = opts;
    bool want_value = false, ok = true;
    while (ok && options_next_arg(&p, arg)) {
        if (!want_value && strcmp(arg, "-c") == 0) {
            want_value = true;
            continue;
        }
        char *kv = arg;
        if (!want_value) {
            if (strncmp(arg, "-c", 2) != 0 && strncmp(arg, "--", 2) != 0) {
                ok = false;
                break;
            }
            kv = arg + 2;
        }
        want_value = false;
        ok = options_setting(kv, x, c);
    }
    free(arg);
    return ok && !want_value;
}

/* The startup parameters after user and database: tracked ones, options,
 * and the rest as extras. False when c was closed. */
static bool client_startup_params(struct client *c, const struct proto_startup *st)
{
    const struct config *cfg = g_pooler.cfg;
    struct extras_buf x = {NULL, 0, 0};
    bool ok = true;
    for (int i = 0; ok && i < st->n_params; i++) {
        const char *name = st->names[i], *value = st->values[i];
        if (!strcmp(name, "user") || !strcmp(name, "database") || !strcmp(name, "replication"))
            continue;
        if (config_list_contains(cfg->ignore_startup_parameters, name))
            continue;
        int tp = tracked_param_lookup(name);
        if (tp >= 0) {
            param_store(param_slot(&c->params, tp), value);
        } else if (!strcmp(name, "options")) {
            if (!options_parse(value, &x, c)) {
                client_close_error(c, SQLSTATE_PROTOCOL_VIOLATION,
                                   "unsupported startup parameter in options: %.200s", value);
                ok = false;
            }
        } else if (!strncasecmp(name, "sluice.", 7)) {
            char why[256];
            if (!ryw_vars_startup(c, name, value, why, sizeof(why))) {
                client_close_error(c, SQLSTATE_PROTOCOL_VIOLATION, "%s", why);
                ok = false;
            }
        } else if (!extras_add(&x, name, value)) {
            client_close_error(c, SQLSTATE_PROTOCOL_VIOLATION, "unsupported startup parameter: %s",
                               name);
            ok = false;
        }
    }
    if (ok && x.len)
        param_store(&c->extras, x.p);
    free(x.p);
    return ok;
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
    const char *repl = proto_startup_get(st, "replication");
    if (repl) {
        /* Passed through to a walsender of the client's own (replication.h),
         * as PgBouncer 1.23 does. */
        int mode = replication_mode_parse(repl);
        if (mode < 0) {
            client_close_error(c, SQLSTATE_PROTOCOL_VIOLATION,
                               "invalid value for parameter \"replication\": \"%.100s\"", repl);
            return;
        }
        c->replication = (uint8_t)mode;
        if (mode && console && console->is_console_db(db)) {
            client_close_error(c, SQLSTATE_PROTOCOL_VIOLATION,
                               "replication connections to the admin console are not supported");
            return;
        }
    }
    /* During a shutdown the console stays open (over the Unix socket, the
     * one listener left); other logins are refused once they may be: at
     * once on the Unix socket, and when main says so for the clients
     * accepted before the TCP listeners closed. */
    bool console_db = console && console->is_console_db(db);
    if (!console_db && (g_pooler.shutting_down || (g_pooler.stopping && c->is_unix))) {
        client_close_error(c, SQLSTATE_ADMIN_SHUTDOWN, "pooler is shutting down");
        return;
    }
    if (__atomic_load_n(&g_pooler.n_clients, __ATOMIC_RELAXED) > cfg->max_client_conn) {
        client_close_error(c, SQLSTATE_TOO_MANY_CONNECTIONS,
                           "no more connections allowed (max_client_conn)");
        return;
    }
    if (!client_startup_params(c, st))
        return;
    if (cfg->application_name_add_host) {
        char app[512], addr[64];
        const char *cur = c->params.v[TP_APPLICATION_NAME] ? c->params.v[TP_APPLICATION_NAME] : "";
        snprintf(app, sizeof(app), "%s - %s:%d", cur, client_addr_str(c, addr, sizeof(addr)),
                 client_port(c));
        param_store(&c->params.v[TP_APPLICATION_NAME], app);
    }

    if (console && console->is_console_db(c->dbname)) {
        enum client_console_access access = console->check_user(c);
        if (access == CONSOLE_REFUSED)
            return;
        c->is_admin = true;
        if (access == CONSOLE_TRUSTED)
            client_login_done(c);
        else
            client_start_auth(c);
        return;
    }
    struct database *d = pool_find_database(c->dbname);
    if (!d) {
        /* The password is asked first, and a wrong one gets the answer a
         * wrong one always gets: an unauthenticated client must not learn
         * which databases exist. Without a pool there is no auth_query:
         * only auth_file's users can get as far as "no such database". */
        client_start_auth(c);
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
    const char *over = pool_count_client(c);
    if (over) {
        client_close_error(c, SQLSTATE_TOO_MANY_CONNECTIONS, "%s", over);
        return;
    }
    client_start_auth(c);
}

/* CancelRequest: forward to the server running that client's query, or,
 * with peering, to the peer whose key it is (peers.h). */
static void client_handle_cancel(struct client *c, const struct proto_startup *st)
{
    uint32_t key = st->cancel_key;
    int peer;
    const char *why;
    switch (peers_route_cancel(c->s.worker->cfg, st->cancel_pid, &key, &peer, &why)) {
    case PEERS_ROUTE_LOCAL:
        break;
    case PEERS_ROUTE_FORWARD:
        peers_forward_cancel(c->s.worker, peer, st->cancel_pid, key);
        client_close(c, "cancel request forwarded to a peer");
        return;
    case PEERS_ROUTE_DROP:
        log_info("C-%p: cancel request for peer %d dropped: %s", (void *)c, peer, why);
        client_close(c, "cancel request");
        return;
    }
    /* The target may be another worker's client: look and act while every
     * other loop is parked. */
    worker_world_lock();
    struct client *target = pool_cancel_lookup(st->cancel_pid, key);
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
    struct stream_msg m;
    enum stream_msg_status ms = stream_next_startup(&c->s, &m);
    if (ms == STREAM_MSG_MORE)
        return false;
    if (ms != STREAM_MSG_OK) {
        client_close_error(c, SQLSTATE_PROTOCOL_VIOLATION,
                           ms == STREAM_MSG_TOO_BIG ? "startup packet too long"
                                                    : "invalid startup packet length");
        return false;
    }
    /* Parse a copy: handling the packet may run the whole login (and the
     * client's next messages) before this returns. */
    uint8_t pkt[PROTO_STARTUP_MAX];
    uint32_t pktlen = m.len;
    memcpy(pkt, m.data, pktlen);
    stream_consume_msg(&c->s, pktlen);
    struct iobuf *b = c->s.rbuf;
    struct proto_startup st;
    const char *err = NULL;
    enum proto_status ps = proto_parse_startup(pkt, pktlen, &st, &err);
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

bool client_login_read(struct client *c)
{
    if (c->state == CL_STARTUP)
        return client_startup_phase(c);
    if (c->state != CL_AUTH)
        return false;
    struct stream_msg m;
    enum stream_msg_status ms = stream_next_msg(&c->s, STREAM_MSG_WHOLE, &m);
    if (ms == STREAM_MSG_MORE)
        return false;
    if (ms != STREAM_MSG_OK) {
        client_close_error(c, SQLSTATE_PROTOCOL_VIOLATION, "invalid password packet");
        return false;
    }
    stream_consume_msg(&c->s, m.len);
    client_handle_auth_msg(c, m.data, m.len);
    return c->state != CL_CLOSED;
}

/* ---- auth_query ------------------------------------------------------------ */

static void auth_query_row(struct server *sv, void *arg, const struct server_query_row *row)
{
    struct client *c = arg;
    struct client_auth *a = c->auth;
    if (!a || row->n < 2)
        return;
    a->aq_found = true;
    free(a->aq_secret);
    a->aq_secret = NULL;
    if (!row->val[1])
        return;
    a->aq_secret = strndup(row->val[1], row->len[1]);
    if (!a->aq_secret)
        abort();
}

static void auth_query_error(struct server *sv, void *arg, const char *sqlstate, const char *text)
{
    server_log(LOG_LVL_WARNING, sv, "auth_query failed: %s", text);
}

static void auth_query_done(struct server *sv, void *arg, enum server_query_status st)
{
    struct client *c = arg;
    if (c->state == CL_CLOSED)
        return; /* it left; its server was closed or released then */
    if (st == SERVER_QUERY_GONE) {
        client_close_error(c, SQLSTATE_CONNECTION_FAILURE, "server conn crashed?");
        return;
    }
    /* The server goes back first, without waking c as a client whose
     * transaction ended: c is still logging in. */
    c->server = NULL;
    sv->client = NULL;
    pool_release_server(sv);
    char *secret = c->auth ? c->auth->aq_secret : NULL;
    bool found = c->auth && c->auth->aq_found;
    if (c->auth)
        c->auth->aq_secret = NULL;
    client_auth_query_done(c, secret, found);
    free(secret);
}

static const struct server_query_ops auth_query_ops = {
    .on_row = auth_query_row,
    .on_error = auth_query_error,
    .on_done = auth_query_done,
};

void client_login_auth_query(struct server *sv, struct client *c)
{
    const struct config_database *cd = c->pool->db->cfg;
    const char *q = cd && cd->auth_query[0] ? cd->auth_query : g_pooler.cfg->auth_query;
    sv->client = c;
    c->server = sv;
    client_set_state(c, CL_AUTH_QUERY);
    server_set_state(sv, SV_ACTIVE);
    const char *params[1] = {c->user};
    /* The user name travels as a parameter, never spliced into SQL. */
    server_query(sv, q, 1, params, &auth_query_ops, c);
}

/* ---- state ------------------------------------------------------------------ */

static void client_login_free(struct client *c)
{
    struct client_auth *a = c->auth;
    if (!a)
        return;
    scram_server_free(&a->scram);
    if (a->secret) {
        memset(a->secret, 0, strlen(a->secret));
        free(a->secret);
    }
    free(a->aq_secret);
    free(a);
    c->auth = NULL;
}

void client_login_init(const struct client_console *con)
{
    console = con;
    client_add_free_hook(client_login_free);
}

const struct client_console *client_login_console(void)
{
    return console;
}
