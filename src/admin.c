/* admin.c - the admin console: its entry points, login, what it keeps per
 * client (struct admin_session) and the simple and extended query
 * protocols. The control commands (PAUSE, KILL, SET...) and the commands
 * that wait live in admin_control.c, SHOW commands in admin_show.c (with
 * admin_show_pools.c and admin_stats.c), the command parser and the
 * encoding of results in admin_proto.c.
 *
 * A console client is a struct client with is_admin set; what the console
 * keeps per client beyond that (prepared statements, portals, a command
 * waiting for the pools to drain) lives in a struct admin_session, made on
 * first need. */
#include "admin.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "admin_int.h"
#include "auth.h"
#include "client_conn.h"
#include "conn.h"
#include "log.h"
#include "peers.h"
#include "pool.h"
#include "proto.h"
#include "worker.h"

/* ---- login --------------------------------------------------------------- */

bool admin_is_admin_db(const char *dbname)
{
    return strcmp(dbname, "pgbouncer") == 0 || strcmp(dbname, "sluice") == 0;
}

/* PgBouncer's own user: "pgbouncer" over the Unix socket from a process
 * of the uid sluice runs as (admin_pre_login() in PgBouncer), so that the
 * scripts run beside the pooler need no password. */
static bool admin_is_own_user(const struct client *c)
{
    if (!c->is_unix || strcmp(c->user, "pgbouncer") != 0)
        return false;
    struct ucred cred;
    socklen_t len = sizeof(cred);
    if (getsockopt(c->s.fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || len != sizeof(cred))
        return false;
    return cred.uid == getuid();
}

enum client_console_access admin_check_user(struct client *c)
{
    const struct config *cfg = g_pooler.cfg;
    if (admin_is_own_user(c)) {
        if (cfg->log_connections)
            client_log(LOG_LVL_LOG, c, "pgbouncer access from unix socket");
        return CONSOLE_TRUSTED;
    }
    if (config_list_contains(cfg->admin_users, c->user))
        return CONSOLE_PASSWORD;
    if (config_list_contains(cfg->stats_users, c->user) || cfg->auth_type == AUTH_TYPE_ANY) {
        c->admin_stats_only = true;
        return CONSOLE_PASSWORD;
    }
    client_close_error(c, SQLSTATE_INVALID_AUTH, "not allowed");
    return CONSOLE_REFUSED;
}

static void admin_welcome_locked(struct client *c)
{
    admin_init(c->s.worker);
    uint8_t buf[1024];
    struct proto_writer wr;
    proto_writer_init(&wr, buf, sizeof(buf));
    proto_build_auth(&wr, PROTO_AUTH_OK, NULL, 0);
    proto_build_param_status(&wr, "server_version", ADMIN_PGBOUNCER_COMPAT "/sluice");
    proto_build_param_status(&wr, "client_encoding", "UTF8");
    proto_build_param_status(&wr, "server_encoding", "UTF8");
    proto_build_param_status(&wr, "DateStyle", "ISO");
    proto_build_param_status(&wr, "TimeZone", "GMT");
    proto_build_param_status(&wr, "standard_conforming_strings", "on");
    proto_build_param_status(&wr, "integer_datetimes", "on");
    proto_build_param_status(&wr, "is_superuser", c->admin_stats_only ? "off" : "on");
    proto_build_param_status(&wr, "application_name", "");
    peers_new_cancel_key(c->s.worker->cfg, &c->cancel_pid, &c->cancel_key);
    proto_build_backend_key(&wr, c->cancel_pid, c->cancel_key);
    proto_build_ready(&wr, 'I');
    stream_write(&c->s, buf, wr.len);
    client_set_state(c, CL_IDLE);
    c->last_activity = worker_now(c->s.worker);
    pool_cancel_register(c);
    if (g_pooler.cfg->log_connections)
        log_info("C-%p: %s/%s login attempt: db=%s user=%s (admin console%s)", (void *)c, c->dbname,
                 c->user, c->dbname, c->user, c->admin_stats_only ? ", SHOW only" : "");
}

/* ---- sessions ------------------------------------------------------------ */

struct admin_stmt {
    struct admin_stmt *next;
    char *name;
    char *sql;
    int nparams;
    uint32_t *types; /* nparams oids from Parse; 0 = unspecified */
};

struct admin_portal {
    struct admin_portal *next;
    char *name;
    char *sql;
    int nparams;
    char **params; /* text values; NULL = SQL NULL */
    int nformats;  /* result formats asked at Bind */
    int16_t *formats;
};

struct list admin_sessions = LIST_INIT(admin_sessions);

static void stmt_free(struct admin_stmt *s)
{
    free(s->name);
    free(s->sql);
    free(s->types);
    free(s);
}

static void portal_free(struct admin_portal *p)
{
    for (int i = 0; i < p->nparams; i++)
        free(p->params[i]);
    free(p->params);
    free(p->formats);
    free(p->name);
    free(p->sql);
    free(p);
}

void admin_session_free(struct admin_session *se)
{
    list_del(&se->node);
    while (se->stmts) {
        struct admin_stmt *s = se->stmts;
        se->stmts = s->next;
        stmt_free(s);
    }
    while (se->portals) {
        struct admin_portal *p = se->portals;
        se->portals = p->next;
        portal_free(p);
    }
    free(se);
}

bool admin_client_alive(const struct client *c, uint64_t id)
{
    for (int i = 0; i < g_pooler.n_workers; i++) {
        struct list *it, *tmp;
        list_for_each_safe(it, tmp, &g_pooler.workers[i].clients)
        {
            if (list_entry(it, struct client, node) == c)
                return c->id == id && c->state != CL_CLOSED;
        }
    }
    return false;
}

struct admin_session *admin_session_of(struct client *c, bool create)
{
    struct list *it, *tmp;
    list_for_each_safe(it, tmp, &admin_sessions)
    {
        struct admin_session *se = list_entry(it, struct admin_session, node);
        if (se->c != c)
            continue;
        if (se->id == c->id)
            return se;
        admin_session_free(se);
    }
    if (!create)
        return NULL;
    struct admin_session *se = calloc(1, sizeof(*se));
    if (!se)
        abort();
    se->c = c;
    se->id = c->id;
    list_add_tail(&admin_sessions, &se->node);
    return se;
}

bool admin_client_busy(const struct client *c)
{
    struct list *it, *tmp;
    list_for_each_safe(it, tmp, &admin_sessions)
    {
        const struct admin_session *se = list_entry(it, struct admin_session, node);
        if (se->c == c && se->id == c->id)
            return se->wait != ADMIN_WAIT_NONE;
    }
    return false;
}

static void admin_client_closed_locked(struct client *c)
{
    struct list *it, *tmp;
    list_for_each_safe(it, tmp, &admin_sessions)
    {
        struct admin_session *se = list_entry(it, struct admin_session, node);
        if (se->c == c)
            admin_session_free(se);
    }
}

void admin_sessions_collect(void)
{
    struct list *it, *tmp;
    list_for_each_safe(it, tmp, &admin_sessions)
    {
        struct admin_session *se = list_entry(it, struct admin_session, node);
        if (!admin_client_alive(se->c, se->id))
            admin_session_free(se);
    }
}

/* ---- protocol ------------------------------------------------------------ */

void admin_flush(struct client *c, struct admin_out *out)
{
    if (!out->buf)
        return;
    uint32_t n = iobuf_len(out->buf);
    admin_counters.bytes_out += n;
    if (c->state != CL_CLOSED)
        stream_write(&c->s, out->buf->data + out->buf->start, n);
    iobuf_put(out->cache, out->buf);
    out->buf = NULL;
}

static char *xstrdup(const char *s)
{
    char *d = strdup(s);
    if (!d)
        abort();
    return d;
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    if (!p)
        abort();
    return p;
}

static struct admin_stmt **stmt_slot(struct admin_session *se, const char *name)
{
    struct admin_stmt **pp = &se->stmts;
    while (*pp && strcmp((*pp)->name, name) != 0)
        pp = &(*pp)->next;
    return pp;
}

static struct admin_portal **portal_slot(struct admin_session *se, const char *name)
{
    struct admin_portal **pp = &se->portals;
    while (*pp && strcmp((*pp)->name, name) != 0)
        pp = &(*pp)->next;
    return pp;
}

/* Query: one command, its answer, ReadyForQuery. */
static void handle_query(struct client *c, struct proto_reader *rd, struct admin_out *out)
{
    const char *sql = proto_read_string(rd);
    struct admin_result r = {.out = out, .w = c->s.worker, .self = c, .describe = true};
    struct admin_cmd *cmd = xcalloc(1, sizeof(*cmd));
    char err[600];
    enum admin_run_status st = ADMIN_RUN_ERROR;
    if (rd->bad)
        admin_out_error(out, SQLSTATE_PROTOCOL_VIOLATION, "invalid Query message");
    else if (!admin_parse(sql, 0, NULL, cmd, err, sizeof(err)))
        admin_out_error(out, ADMIN_SQLSTATE_ERROR, err);
    else
        st = admin_run(c, cmd, &r, true);
    free(cmd);
    if (st != ADMIN_RUN_WAITING && c->state != CL_CLOSED)
        admin_out_ready(out);
}

/* Parse: remembers the statement (named ones until Close). */
static bool handle_parse(struct admin_session *se, struct proto_reader *rd, struct admin_out *out)
{
    const char *name = proto_read_string(rd);
    const char *sql = proto_read_string(rd);
    uint16_t n = proto_read16(rd);
    if (rd->bad) {
        admin_out_error(out, SQLSTATE_PROTOCOL_VIOLATION, "invalid Parse message");
        return false;
    }
    struct admin_stmt **slot = stmt_slot(se, name);
    if (*slot && name[0]) {
        char msg[300];
        snprintf(msg, sizeof(msg), "prepared statement \"%.200s\" already exists", name);
        admin_out_error(out, "42P05", msg);
        return false;
    }
    struct admin_stmt *s = xcalloc(1, sizeof(*s));
    s->name = xstrdup(name);
    s->sql = xstrdup(sql);
    int refs = admin_count_params(sql);
    s->nparams = refs > n ? refs : n;
    s->types = xcalloc((size_t)s->nparams, sizeof(uint32_t));
    for (int i = 0; i < n; i++)
        s->types[i] = proto_read32(rd);
    if (rd->bad) {
        stmt_free(s);
        admin_out_error(out, SQLSTATE_PROTOCOL_VIOLATION, "invalid Parse message");
        return false;
    }
    if (*slot) { /* the unnamed statement is replaced */
        struct admin_stmt *old = *slot;
        s->next = old->next;
        stmt_free(old);
    }
    *slot = s;
    admin_out_simple(out, '1');
    return true;
}

/* A bound parameter as text: text format as is, binary integers decoded. */
static char *param_text(const uint8_t *v, uint32_t len, int format)
{
    if (format == 0) {
        char *s = xcalloc(len + 1, 1);
        memcpy(s, v, len);
        return s;
    }
    if (len != 2 && len != 4 && len != 8)
        return NULL;
    uint64_t u = 0;
    for (uint32_t i = 0; i < len; i++)
        u = u << 8 | v[i];
    int64_t x = len == 2 ? (int16_t)u : len == 4 ? (int32_t)u : (int64_t)u;
    char buf[32];
    snprintf(buf, sizeof(buf), "%" PRId64, x);
    return xstrdup(buf);
}

static bool handle_bind(struct admin_session *se, struct proto_reader *rd, struct admin_out *out)
{
    const char *portal = proto_read_string(rd);
    const char *stmt = proto_read_string(rd);
    uint16_t npf = proto_read16(rd);
    if (rd->bad || npf > 10000) {
        admin_out_error(out, SQLSTATE_PROTOCOL_VIOLATION, "invalid Bind message");
        return false;
    }
    struct admin_stmt *s = *stmt_slot(se, stmt);
    if (!s) {
        char msg[300];
        snprintf(msg, sizeof(msg), "prepared statement \"%.200s\" does not exist", stmt);
        admin_out_error(out, "26000", msg);
        return false;
    }
    int16_t *pf = xcalloc(npf, sizeof(int16_t));
    for (int i = 0; i < npf; i++)
        pf[i] = (int16_t)proto_read16(rd);
    struct admin_portal *p = xcalloc(1, sizeof(*p));
    p->name = xstrdup(portal);
    p->sql = xstrdup(s->sql);
    uint16_t np = proto_read16(rd);
    bool ok = !rd->bad && (npf <= 1 || npf == np);
    p->params = xcalloc(np, sizeof(char *));
    for (int i = 0; ok && i < np; i++) {
        uint32_t len = proto_read32(rd);
        p->nparams++;
        if (len == 0xffffffffu)
            continue; /* NULL */
        const uint8_t *v = proto_read_bytes(rd, len);
        int fmt = npf == 0 ? 0 : npf == 1 ? pf[0] : pf[i];
        if (!v || !(p->params[i] = param_text(v, len, fmt)))
            ok = false;
    }
    uint16_t nrf = proto_read16(rd);
    if (ok && !rd->bad && nrf <= 10000) {
        p->nformats = nrf;
        p->formats = xcalloc(nrf, sizeof(int16_t));
        for (int i = 0; i < nrf; i++) {
            p->formats[i] = (int16_t)proto_read16(rd);
            if (p->formats[i] != 0 && p->formats[i] != 1)
                ok = false;
        }
    }
    free(pf);
    if (!ok || rd->bad) {
        portal_free(p);
        admin_out_error(out, SQLSTATE_PROTOCOL_VIOLATION,
                        "invalid Bind message (parameters must be text, or binary integers)");
        return false;
    }
    struct admin_portal **slot = portal_slot(se, portal);
    if (*slot) {
        struct admin_portal *old = *slot;
        p->next = old->next;
        portal_free(old);
    }
    *slot = p;
    admin_out_simple(out, '2');
    return true;
}

/* The columns a command will return (RowDescription) or NoData. */
static bool describe_cmd(const char *sql, int nparams, const char *const *params,
                         struct admin_result *r)
{
    struct admin_cmd *cmd = xcalloc(1, sizeof(*cmd));
    char err[600];
    bool ok = admin_parse(sql, nparams, params, cmd, err, sizeof(err));
    if (!ok) {
        admin_out_error(r->out, ADMIN_SQLSTATE_ERROR, err);
    } else {
        const char *const *names = NULL;
        const uint32_t *types = NULL;
        int n = cmd->verb == ADMIN_CMD_SHOW ? admin_show_columns(cmd->topic, &names, &types) : 0;
        if (n > 0 && r->nformats > 1 && r->nformats != n) {
            snprintf(err, sizeof(err),
                     "bind message has %d result formats but query has %d columns", r->nformats, n);
            admin_out_error(r->out, SQLSTATE_PROTOCOL_VIOLATION, err);
            ok = false;
        } else if (n > 0) {
            admin_result_row_description(r, n, names, types);
        } else {
            admin_out_simple(r->out, 'n');
        }
    }
    free(cmd);
    return ok;
}

static bool handle_describe(struct client *c, struct admin_session *se, struct proto_reader *rd,
                            struct admin_out *out)
{
    uint8_t what = proto_read_byte(rd);
    const char *name = proto_read_string(rd);
    struct admin_result r = {.out = out, .w = c->s.worker, .self = c};
    if (rd->bad || (what != 'S' && what != 'P')) {
        admin_out_error(out, SQLSTATE_PROTOCOL_VIOLATION, "invalid Describe message");
        return false;
    }
    char msg[300];
    if (what == 'S') {
        struct admin_stmt *s = *stmt_slot(se, name);
        if (!s) {
            snprintf(msg, sizeof(msg), "prepared statement \"%.200s\" does not exist", name);
            admin_out_error(out, "26000", msg);
            return false;
        }
        admin_out_begin(out, 't');
        admin_out_add16(out, (uint16_t)s->nparams);
        for (int i = 0; i < s->nparams; i++)
            admin_out_add32(out, s->types[i] ? s->types[i] : ADMIN_OID_TEXT);
        admin_out_end(out);
        return describe_cmd(s->sql, 0, NULL, &r);
    }
    struct admin_portal *p = *portal_slot(se, name);
    if (!p) {
        snprintf(msg, sizeof(msg), "portal \"%.200s\" does not exist", name);
        admin_out_error(out, "34000", msg);
        return false;
    }
    r.nformats = p->nformats;
    r.formats = p->formats;
    return describe_cmd(p->sql, p->nparams, (const char *const *)p->params, &r);
}

static enum admin_run_status handle_execute(struct client *c, struct admin_session *se,
                                            struct proto_reader *rd, struct admin_out *out)
{
    const char *name = proto_read_string(rd);
    (void)proto_read32(rd); /* row limit: results are sent whole */
    if (rd->bad) {
        admin_out_error(out, SQLSTATE_PROTOCOL_VIOLATION, "invalid Execute message");
        return ADMIN_RUN_ERROR;
    }
    struct admin_portal *p = *portal_slot(se, name);
    if (!p) {
        char msg[300];
        snprintf(msg, sizeof(msg), "portal \"%.200s\" does not exist", name);
        admin_out_error(out, "34000", msg);
        return ADMIN_RUN_ERROR;
    }
    struct admin_result r = {
        .out = out, .w = c->s.worker, .self = c, .nformats = p->nformats, .formats = p->formats};
    struct admin_cmd *cmd = xcalloc(1, sizeof(*cmd));
    char err[600];
    enum admin_run_status st;
    if (!admin_parse(p->sql, p->nparams, (const char *const *)p->params, cmd, err, sizeof(err))) {
        admin_out_error(out, ADMIN_SQLSTATE_ERROR, err);
        st = ADMIN_RUN_ERROR;
    } else {
        const char *const *names;
        const uint32_t *types;
        int n = cmd->verb == ADMIN_CMD_SHOW ? admin_show_columns(cmd->topic, &names, &types) : 0;
        if (n > 0 && p->nformats > 1 && p->nformats != n) {
            snprintf(err, sizeof(err),
                     "bind message has %d result formats but query has %d columns", p->nformats, n);
            admin_out_error(out, SQLSTATE_PROTOCOL_VIOLATION, err);
            st = ADMIN_RUN_ERROR;
        } else {
            st = admin_run(c, cmd, &r, false);
        }
    }
    free(cmd);
    return st;
}

static bool handle_close(struct admin_session *se, struct proto_reader *rd, struct admin_out *out)
{
    uint8_t what = proto_read_byte(rd);
    const char *name = proto_read_string(rd);
    if (rd->bad || (what != 'S' && what != 'P')) {
        admin_out_error(out, SQLSTATE_PROTOCOL_VIOLATION, "invalid Close message");
        return false;
    }
    /* Closing something that does not exist is not an error. */
    if (what == 'S') {
        struct admin_stmt **slot = stmt_slot(se, name);
        if (*slot) {
            struct admin_stmt *s = *slot;
            *slot = s->next;
            stmt_free(s);
        }
    } else {
        struct admin_portal **slot = portal_slot(se, name);
        if (*slot) {
            struct admin_portal *p = *slot;
            *slot = p->next;
            portal_free(p);
        }
    }
    admin_out_simple(out, '3');
    return true;
}

/* Sync: the end of an extended-protocol batch. */
static void handle_sync(struct admin_session *se, struct admin_out *out)
{
    if (se) {
        se->skip_till_sync = false;
        /* The unnamed portal does not outlive its Sync. */
        struct admin_portal **slot = portal_slot(se, "");
        if (*slot) {
            struct admin_portal *p = *slot;
            *slot = p->next;
            portal_free(p);
        }
    }
    admin_out_ready(out);
}

/* Runs one message of c's (type, body in rd). se is c's session, which
 * every extended-protocol message has. Returns false if an extended-protocol
 * message failed: what follows is skipped up to Sync. Terminate and an
 * unknown message close c. */
static bool handle_message(struct client *c, struct admin_session *se, uint8_t type,
                           struct proto_reader *rd, struct admin_out *out)
{
    switch (type) {
    case 'Q':
        handle_query(c, rd, out);
        return true;
    case 'P':
        return handle_parse(se, rd, out);
    case 'B':
        return handle_bind(se, rd, out);
    case 'D':
        return handle_describe(c, se, rd, out);
    case 'E':
        return handle_execute(c, se, rd, out) != ADMIN_RUN_ERROR;
    case 'C':
        return handle_close(se, rd, out);
    case 'S':
        handle_sync(se, out);
        return true;
    case 'H':
        admin_flush(c, out);
        return true;
    case 'X':
        admin_flush(c, out);
        client_close(c, "client close request");
        return true;
    default:
        admin_flush(c, out);
        client_close_error(c, SQLSTATE_PROTOCOL_VIOLATION,
                           "unsupported message type '%c' on the admin console", type);
        return true;
    }
}

void admin_handle_locked(struct client *c)
{
    struct admin_session *se = admin_session_of(c, false);
    if (se && se->wait != ADMIN_WAIT_NONE) {
        /* A command waits: leave the rest buffered. Reading goes on, so
         * that a client leaving meanwhile is noticed (a full buffer stops
         * it; wait_finish() restarts it). */
        return;
    }
    struct admin_out out = {.cache = &c->s.worker->bufs};
    while (c->state == CL_IDLE) {
        struct stream_msg m;
        enum stream_msg_status ms = stream_next_msg(&c->s, STREAM_MSG_WHOLE, &m);
        if (ms == STREAM_MSG_MORE)
            break;
        if (ms != STREAM_MSG_OK) {
            admin_flush(c, &out);
            client_close_bad_message(c, ms);
            return;
        }
        uint8_t type = m.type;
        uint32_t mlen = m.len;
        /* Handle a copy: a command may close this very client (and with it
         * its buffers). */
        uint8_t *msg = malloc(mlen);
        if (!msg)
            abort();
        memcpy(msg, m.data, mlen);
        stream_consume_msg(&c->s, mlen);
        admin_counters.bytes_in += mlen;
        c->last_activity = worker_now(c->s.worker);
        if (type == 'Q' || type == 'E')
            c->request_time = c->last_activity; /* SHOW CLIENTS' request_time */
        struct proto_reader rd;
        proto_reader_init(&rd, msg, mlen);
        if (type != 'Q' && type != 'X' && type != 'S' && type != 'H')
            se = admin_session_of(c, true);
        /* After an error, the extended protocol ignores all up to Sync. */
        bool skipping = se && se->skip_till_sync && type != 'S' && type != 'X';
        bool ok = skipping || handle_message(c, se, type, &rd, &out);
        free(msg);
        if (c->state == CL_CLOSED) {
            /* By its own message (Terminate, an unknown one) or command
             * (KILL_CLIENT of itself). */
            iobuf_put(out.cache, out.buf);
            return;
        }
        if (!ok)
            se->skip_till_sync = true;
        if (admin_exit_requested())
            break;
        se = admin_session_of(c, false);
        if (se && se->wait != ADMIN_WAIT_NONE)
            break;
    }
    admin_flush(c, &out);
    if (admin_exit_requested()) {
        /* SHUTDOWN: the answer is written; the main loop ends (from
         * another worker's thread too: under the world lock, and its
         * unlock wakes the main loop). */
        worker_stop_loop(&g_pooler.workers[0]); /* the main loop */
        return;
    }
    if (c->state != CL_CLOSED)
        stream_release_rbuf(&c->s);
}

/* The console reads and changes every worker's clients, servers and pools:
 * its entry points run under the world lock (worker.h). */
void admin_welcome(struct client *c)
{
    worker_world_lock();
    admin_welcome_locked(c);
    worker_world_unlock();
}

void admin_client_closed(struct client *c)
{
    worker_world_lock();
    admin_client_closed_locked(c);
    worker_world_unlock();
}

void admin_handle(struct client *c)
{
    worker_world_lock();
    if (c->state != CL_CLOSED)
        admin_handle_locked(c);
    worker_world_unlock();
}
