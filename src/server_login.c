/* server_login.c - logging into a server (server_login.h). */
#include "server_login.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "log.h"
#include "pool.h"
#include "proto.h"
#include "scram.h"
#include "server_query.h"
#include "tls.h"

/* Login-time state, freed once the server is logged in. */
struct server_auth {
    struct scram_client scram;
    bool scram_started;
};

/* A failed step: why, and whether a retry can help. */
struct login_fail {
    char *why;
    size_t whylen;
    bool fatal;
};

const char *server_login_status_str(enum server_login_status st)
{
    static const char *const names[] = {"more", "done", "failed"};
    return (unsigned)st < sizeof(names) / sizeof(names[0]) ? names[st] : "?";
}

static bool fail(struct login_fail *f, bool fatal, const char *why)
{
    snprintf(f->why, f->whylen, "%s", why);
    f->fatal = fatal;
    return false;
}

/* The client's value of a tracked parameter, for a replication client's
 * own walsender (which takes no SET afterwards), or NULL. */
static const char *replication_client_param(const struct server *sv, const char *name)
{
    if (!sv->replication || !sv->client)
        return NULL;
    int tp = tracked_param_lookup(name);
    return tp >= 0 ? param_get(&sv->client->params, tp) : NULL;
}

bool server_login_start(struct server *sv)
{
    const struct config_database *cd = sv->pool->db->cfg;
    uint8_t buf[4096];
    struct proto_writer wr;
    proto_writer_init(&wr, buf, sizeof(buf));
    proto_begin(&wr, 0);
    proto_add32(&wr, PROTO_V3);
    proto_add_string(&wr, "user");
    proto_add_string(&wr, sv->pool->user->name);
    proto_add_string(&wr, "database");
    proto_add_string(&wr, cd->dbname[0] ? cd->dbname : sv->pool->db->name);
    const char *const opt[][2] = {{"application_name", cd->application_name},
                                  {"client_encoding", cd->client_encoding},
                                  {"datestyle", cd->datestyle},
                                  {"timezone", cd->timezone}};
    for (size_t i = 0; i < sizeof(opt) / sizeof(opt[0]); i++) {
        if (opt[i][1][0] && !replication_client_param(sv, opt[i][0])) {
            proto_add_string(&wr, opt[i][0]);
            proto_add_string(&wr, opt[i][1]);
        }
    }
    if (sv->replication) {
        /* A replication client's own walsender (replication.h): the
         * client's settings go in the startup packet, as PgBouncer sends
         * them (application_name names the standby). */
        proto_add_string(&wr, "replication");
        proto_add_string(&wr, sv->replication == REPLICATION_LOGICAL ? "database" : "true");
        for (int i = 0; sv->client && i < tracked_param_count(); i++) {
            const char *v = param_get(&sv->client->params, i);
            if (v) {
                proto_add_string(&wr, tracked_param_name(i));
                proto_add_string(&wr, v);
            }
        }
    }
    proto_add_byte(&wr, 0);
    proto_end(&wr);
    if (wr.overflow)
        return false;
    stream_write(&sv->s, buf, wr.len);
    return true;
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

static bool auth_md5(struct server *sv, struct proto_reader *r, const char *secret,
                     struct proto_writer *wr, struct login_fail *f)
{
    const uint8_t *salt = proto_read_bytes(r, 4);
    if (!salt || !secret || auth_secret_kind(secret) == AUTH_SECRET_SCRAM)
        return fail(f, true, "server asked for md5, and no password or md5 hash is known");
    char hash[AUTH_MD5_LEN + 1], resp[AUTH_MD5_LEN + 1];
    if (auth_secret_kind(secret) == AUTH_SECRET_MD5)
        snprintf(hash, sizeof(hash), "%s", secret);
    else
        auth_md5_hash(secret, sv->pool->user->name, hash);
    auth_md5_salted(hash, salt, resp);
    proto_build_password(wr, resp);
    return true;
}

/* AuthenticationSASL: picks SCRAM-SHA-256 and sends the client-first
 * message, from the password or from a client's recovered SCRAM keys. */
static bool auth_sasl_start(struct server *sv, struct proto_reader *r, const char *secret,
                            struct proto_writer *wr, struct login_fail *f)
{
    bool have = false, plus = false;
    for (;;) {
        const char *mech = proto_read_string(r);
        if (r->bad || !mech[0])
            break;
        if (strcmp(mech, SCRAM_MECHANISM) == 0)
            have = true;
        else if (strcmp(mech, SCRAM_PLUS_MECHANISM) == 0)
            plus = true;
    }
    if (!have && !plus)
        return fail(f, true, "server offered no supported SASL mechanism");
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
        if (!scram_secret_parse(secret, &ss))
            return fail(f, true, "bad SCRAM secret in auth_file");
        scram_client_init_keys(&sv->auth->scram, u->scram_client_key, &ss);
    } else {
        return fail(f, true,
                    "server asked for SCRAM, and neither a password nor a client's SCRAM "
                    "keys are known for this user");
    }
    sv->auth->scram_started = true;
    /* Over TLS, bind to the server's certificate when it offers
     * SCRAM-SHA-256-PLUS (libpq's channel_binding=prefer): a man in the
     * middle holding another certificate cannot relay the exchange. */
    const char *mech = SCRAM_MECHANISM;
    uint8_t hash[SCRAM_CBIND_MAX];
    size_t hlen = stream_tls_ssl(&sv->s) ? tls_endpoint_hash(&sv->s, false, hash, sizeof(hash)) : 0;
    if (plus && hlen > 0) {
        scram_client_set_cbind(&sv->auth->scram, hash, hlen);
        mech = SCRAM_PLUS_MECHANISM;
        log_debug("S-%p: %s with channel binding (%s)", (void *)sv, mech, SCRAM_CBIND_TYPE);
    } else if (!have) {
        return fail(f, true,
                    "server offered only SCRAM-SHA-256-PLUS, and channel binding is "
                    "not possible on this connection");
    } else if (hlen > 0) {
        scram_client_set_cbind(&sv->auth->scram, NULL, 0); /* "y": we could have bound */
    }
    char first[SCRAM_MAX_MESSAGE + 1];
    size_t n = 0;
    if (scram_client_first(&sv->auth->scram, first, sizeof(first), &n) != SCRAM_OK)
        return fail(f, false, "SCRAM failed");
    proto_build_sasl_initial(wr, mech, first, n);
    return true;
}

static bool auth_sasl_continue(struct server *sv, struct proto_reader *r, struct proto_writer *wr,
                               struct login_fail *f)
{
    if (!sv->auth || !sv->auth->scram_started)
        return fail(f, false, "unexpected SASL continue");
    char fin[SCRAM_MAX_MESSAGE + 1];
    size_t n = 0;
    const char *errmsg = NULL;
    enum scram_status st = scram_client_final(&sv->auth->scram, r->p, (size_t)(r->end - r->p), fin,
                                              sizeof(fin), &n, &errmsg);
    if (st != SCRAM_OK) {
        char why[200];
        snprintf(why, sizeof(why), "SCRAM with server failed: %s", errmsg ? errmsg : "");
        return fail(f, true, why);
    }
    proto_build_sasl_response(wr, fin, n);
    return true;
}

/* Answers an Authentication request. false with f filled on failure. */
static bool server_handle_auth(struct server *sv, const uint8_t *msg, uint32_t len,
                               struct login_fail *f)
{
    struct proto_reader r;
    proto_reader_init(&r, msg, len);
    uint32_t code = proto_read32(&r);
    /* Room for the longest password the auth_file takes (PgBouncer's limit
     * is 2,048); a longer one (a [databases] password=, auth_query) is an
     * error for the waiting clients, not a retry. */
    uint8_t out[PROTO_HDR + AUTH_USERLIST_MAX_PASS + 1];
    struct proto_writer wr;
    proto_writer_init(&wr, out, sizeof(out));
    const char *secret = server_password(sv);
    const char *errmsg = NULL;
    bool ok;
    switch (code) {
    case PROTO_AUTH_OK:
        return true;
    case PROTO_AUTH_CLEARTEXT:
        if (!secret || auth_secret_kind(secret) != AUTH_SECRET_PLAIN)
            return fail(f, true, "server asked for a cleartext password, and none is known");
        proto_build_password(&wr, secret);
        ok = true;
        break;
    case PROTO_AUTH_MD5:
        ok = auth_md5(sv, &r, secret, &wr, f);
        break;
    case PROTO_AUTH_SASL:
        ok = auth_sasl_start(sv, &r, secret, &wr, f);
        break;
    case PROTO_AUTH_SASL_CONTINUE:
        ok = auth_sasl_continue(sv, &r, &wr, f);
        break;
    case PROTO_AUTH_SASL_FINAL:
        if (!sv->auth || !sv->auth->scram_started ||
            scram_client_verify(&sv->auth->scram, r.p, (size_t)(r.end - r.p), &errmsg) != SCRAM_OK)
            return fail(f, false, "server's SCRAM signature is wrong");
        return true;
    default: {
        char why[100];
        snprintf(why, sizeof(why), "unsupported authentication method %u requested by server",
                 code);
        return fail(f, true, why);
    }
    }
    if (!ok)
        return false;
    if (wr.overflow)
        return fail(f, true,
                    code == PROTO_AUTH_CLEARTEXT
                        ? "server login failed: password too long for sluice (over 4096 bytes)"
                        : "server login failed: authentication message too long");
    stream_write(&sv->s, out, wr.len);
    return true;
}

/* An ErrorResponse during login: the login failed. Bad credentials or an
 * unknown database are fatal for the waiting clients. */
static void login_error(const uint8_t *msg, uint32_t len, struct login_fail *f)
{
    char text[300];
    struct proto_error_fields ef;
    server_error_text(msg, len, text, sizeof(text), NULL);
    f->fatal = proto_parse_error(msg, len, &ef) &&
               (strncmp(ef.sqlstate, "28", 2) == 0 || strncmp(ef.sqlstate, "3D", 2) == 0);
    snprintf(f->why, f->whylen, "server login failed: %s", text);
}

enum server_login_status server_login_read(struct server *sv, char *why, size_t whylen, bool *fatal)
{
    struct stream *s = &sv->s;
    struct login_fail f = {why, whylen, false};
    for (;;) {
        struct stream_msg m;
        enum stream_msg_status ms = stream_next_msg(s, STREAM_MSG_WHOLE, &m);
        if (ms == STREAM_MSG_MORE)
            return SERVER_LOGIN_MORE;
        if (ms != STREAM_MSG_OK) {
            *fatal = false;
            snprintf(why, whylen, "server sent a malformed message (%s)",
                     stream_msg_status_str(ms));
            return SERVER_LOGIN_FAILED;
        }
        stream_consume_msg(s, m.len);
        bool ok = true;
        switch (m.type) {
        case 'R':
            ok = server_handle_auth(sv, m.data, m.len, &f);
            break;
        case 'S':
            server_param_status(sv, m.data, m.len);
            break;
        case 'K':
            if (m.len >= 13) {
                sv->backend_pid = proto_get32(m.data + 5);
                sv->backend_key = proto_get32(m.data + 9);
            }
            break;
        case 'E':
            login_error(m.data, m.len, &f);
            ok = false;
            break;
        case 'Z':
            if (m.len < 6) {
                ok = fail(&f, false, "malformed ReadyForQuery");
                break;
            }
            sv->xact_status = (char)m.data[5];
            server_login_free(sv);
            return SERVER_LOGIN_DONE;
        default: /* notices */
            break;
        }
        if (!ok) {
            *fatal = f.fatal;
            return SERVER_LOGIN_FAILED;
        }
    }
}

void server_login_free(struct server *sv)
{
    if (!sv->auth)
        return;
    scram_client_free(&sv->auth->scram);
    free(sv->auth);
    sv->auth = NULL;
}
