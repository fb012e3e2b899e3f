/* admin.c - the admin console: login, the simple and extended query
 * protocols, and the control commands (PAUSE, KILL, SET...). SHOW commands
 * live in admin_show.c; the command parser and the encoding of results in
 * admin_proto.c.
 *
 * A console client is a struct client with is_admin set; what the console
 * keeps per client beyond that (prepared statements, portals, a command
 * waiting for the pools to drain) lives in a struct admin_session, made on
 * first need. */
#include "admin.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "admin_int.h"
#include "auth.h"
#include "client.h"
#include "conn.h"
#include "log.h"
#include "pool.h"
#include "proto.h"
#include "server.h"
#include "worker.h"

static void admin_handle_locked(struct client *c);

bool (*admin_reload_hook)(char *err, size_t errlen);
void (*admin_shutdown_hook)(bool wait_for_clients);
bool (*admin_apply_config_hook)(struct config *cfg, char *err, size_t errlen);

/* ---- login --------------------------------------------------------------- */

bool admin_is_admin_db(const char *dbname)
{
    return strcmp(dbname, "pgbouncer") == 0 || strcmp(dbname, "sluice") == 0;
}

bool admin_check_user(struct client *c)
{
    const struct config *cfg = g_pooler.cfg;
    if (config_list_contains(cfg->admin_users, c->user))
        return true;
    if (config_list_contains(cfg->stats_users, c->user) || cfg->auth_type == AUTH_TYPE_ANY) {
        c->admin_stats_only = true;
        return true;
    }
    client_close_error(c, SQLSTATE_INVALID_AUTH, "not allowed");
    return false;
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
    auth_random_bytes((uint8_t *)&c->cancel_pid, sizeof(c->cancel_pid));
    auth_random_bytes((uint8_t *)&c->cancel_key, sizeof(c->cancel_key));
    c->cancel_pid &= 0x7fffffff;
    proto_build_backend_key(&wr, c->cancel_pid, c->cancel_key);
    proto_build_ready(&wr, 'I');
    stream_write(&c->s, buf, wr.len);
    c->state = CL_IDLE;
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

enum admin_wait {
    ADMIN_WAIT_NONE = 0, /* nothing pending */
    ADMIN_WAIT_PAUSE,    /* PAUSE: until no server is in use */
    ADMIN_WAIT_CLOSE,    /* WAIT_CLOSE: until no server has close_needed */
    ADMIN_WAIT_SHUTDOWN, /* SHUTDOWN WAIT_FOR_SERVERS: until no server is in use */
};

struct admin_session {
    struct list node; /* on sessions */
    struct client *c; /* not owned: dereferenced only once known alive */
    uint64_t id;      /* c->id, which tells a reused address apart */
    struct admin_stmt *stmts;
    struct admin_portal *portals;
    bool skip_till_sync; /* an extended-protocol error: ignore up to Sync */
    enum admin_wait wait;
    struct database *wait_db; /* NULL: every database */
    bool wait_simple;         /* the waiting command came by Query: ReadyForQuery follows */
};

static struct list sessions = LIST_INIT(sessions);
static struct ev_loop *admin_loop;
static struct worker *admin_worker;
static ev_timer wait_timer;  /* 50 ms while commands wait or a shutdown drains */
static ev_timer stats_timer; /* 1 s: averages every stats_period, session cleanup */
static int64_t last_stats_time;
static enum admin_shutdown_mode shutdown_mode;
static bool shutdown_started;
static bool exit_requested;

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

static void session_free(struct admin_session *se)
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

/* Is c (an address that may have been freed) still a live client with this
 * id? Compares addresses only until found, so a stale one is never read. */
static bool client_alive(const struct client *c, uint64_t id)
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

/* The session of live client c; made if create. A session left by a freed
 * client at the same address is dropped on the way. */
static struct admin_session *session_of(struct client *c, bool create)
{
    struct list *it, *tmp;
    list_for_each_safe(it, tmp, &sessions)
    {
        struct admin_session *se = list_entry(it, struct admin_session, node);
        if (se->c != c)
            continue;
        if (se->id == c->id)
            return se;
        session_free(se);
    }
    if (!create)
        return NULL;
    struct admin_session *se = calloc(1, sizeof(*se));
    if (!se)
        abort();
    se->c = c;
    se->id = c->id;
    list_add_tail(&sessions, &se->node);
    return se;
}

bool admin_client_busy(const struct client *c)
{
    struct list *it, *tmp;
    list_for_each_safe(it, tmp, &sessions)
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
    list_for_each_safe(it, tmp, &sessions)
    {
        struct admin_session *se = list_entry(it, struct admin_session, node);
        if (se->c == c)
            session_free(se);
    }
}

/* Drops the sessions of clients that are gone (in case nobody called
 * admin_client_closed() for them). */
static void sessions_collect(void)
{
    struct list *it, *tmp;
    list_for_each_safe(it, tmp, &sessions)
    {
        struct admin_session *se = list_entry(it, struct admin_session, node);
        if (!client_alive(se->c, se->id))
            session_free(se);
    }
}

/* ---- helpers over pools, clients, servers -------------------------------- */

/* The database named name, or NULL (with err) if there is none. The console
 * itself is not one. */
static struct database *find_db(const char *name, char *err, size_t errlen)
{
    if (admin_is_admin_db(name)) {
        snprintf(err, errlen, "the admin console database cannot be used here");
        return NULL;
    }
    struct list *it, *tmp;
    list_for_each_safe(it, tmp, &g_pooler.databases)
    {
        struct database *db = list_entry(it, struct database, node);
        if (strcmp(db->name, name) == 0 && db->cfg)
            return db;
    }
    /* A [databases] entry not used yet: make its runtime state now, so
     * that a PAUSE or DISABLE applies to its first clients. */
    const struct config_database *cd = config_find_database(g_pooler.cfg, name);
    if (cd && strcmp(cd->name, "*") != 0) {
        struct database *db = pool_find_database(name);
        if (db)
            return db;
    }
    snprintf(err, errlen, "no such database: %s", name);
    return NULL;
}

static bool pool_matches(const struct pool *p, const struct database *db)
{
    return !db || p->db == db;
}

/* Collects the servers on list l into *v (grown as needed). Closing a
 * server can change other lists (a dispatch), so callers collect first,
 * then close those still open: freed objects stay readable until the end
 * of the loop iteration. */
struct ptr_vec {
    void **v;
    size_t n, cap;
};

static void vec_push(struct ptr_vec *pv, void *p)
{
    if (pv->n == pv->cap) {
        pv->cap = pv->cap ? pv->cap * 2 : 32;
        pv->v = realloc(pv->v, pv->cap * sizeof(*pv->v));
        if (!pv->v)
            abort();
    }
    pv->v[pv->n++] = p;
}

static void collect_servers(struct ptr_vec *pv, struct list *l, bool only_close_needed)
{
    struct list *it, *tmp;
    list_for_each_safe(it, tmp, l)
    {
        struct server *sv = list_entry(it, struct server, node);
        if (!only_close_needed || sv->close_needed)
            vec_push(pv, sv);
    }
}

static void close_servers(struct ptr_vec *pv, const char *why)
{
    for (size_t i = 0; i < pv->n; i++) {
        struct server *sv = pv->v[i];
        if (sv->state != SV_CLOSED)
            server_close(sv, why);
    }
    free(pv->v);
    pv->v = NULL;
    pv->n = pv->cap = 0;
}

/* Closes the idle servers of db's pools (all if !only_close_needed). */
static void close_idle_servers(const struct database *db, bool only_close_needed, const char *why)
{
    struct ptr_vec pv = {0};
    struct list *it, *tmp;
    list_for_each_safe(it, tmp, &g_pooler.pools)
    {
        struct pool *p = list_entry(it, struct pool, node);
        if (pool_matches(p, db))
            collect_servers(&pv, &p->idle, only_close_needed);
    }
    close_servers(&pv, why);
}

/* True when no server of db's pools is lent to a client or busy with
 * something that will hand it back (reset, check, cancel). */
static bool pools_released(const struct database *db)
{
    struct list *it, *tmp;
    list_for_each_safe(it, tmp, &g_pooler.pools)
    {
        struct pool *p = list_entry(it, struct pool, node);
        if (!pool_matches(p, db))
            continue;
        if (p->n_active > 0)
            return false;
        struct list *s, *st;
        list_for_each_safe(s, st, &p->busy)
        {
            enum server_state state = list_entry(s, struct server, node)->state;
            if (state == SV_TESTING || state == SV_RESETTING || state == SV_CANCEL_WAIT)
                return false;
        }
    }
    return true;
}

static bool server_close_needed(struct server *sv, void *arg)
{
    (void)arg;
    return sv->close_needed;
}

static bool server_mark_close_needed(struct server *sv, void *arg)
{
    (void)arg;
    sv->close_needed = true;
    return false;
}

/* True when no server of db's pools still waits to be closed. */
static bool close_needed_cleared(const struct database *db)
{
    struct list *it, *tmp;
    list_for_each_safe(it, tmp, &g_pooler.pools)
    {
        struct pool *p = list_entry(it, struct pool, node);
        if (!pool_matches(p, db))
            continue;
        if (pool_find_server(p, server_close_needed, NULL))
            return false;
    }
    return true;
}

static void dispatch_all(void)
{
    struct list *it, *tmp;
    list_for_each_safe(it, tmp, &g_pooler.pools)
    {
        pool_dispatch(list_entry(it, struct pool, node));
    }
}

/* Clients that match: of database db (NULL: all non-console clients) and,
 * if waiting_only, waiting for a server. */
static void collect_clients(struct ptr_vec *pv, const struct database *db, bool waiting_only)
{
    for (int i = 0; i < g_pooler.n_workers; i++) {
        struct list *it, *tmp;
        list_for_each_safe(it, tmp, &g_pooler.workers[i].clients)
        {
            struct client *c = list_entry(it, struct client, node);
            if (c->is_admin || c->state == CL_CLOSED)
                continue;
            if (db && (!c->pool || c->pool->db != db))
                continue;
            if (waiting_only && c->state != CL_WAITING && c->state != CL_LOGIN_WAIT)
                continue;
            vec_push(pv, c);
        }
    }
}

static void close_clients(struct ptr_vec *pv, const char *sqlstate, const char *msg)
{
    for (size_t i = 0; i < pv->n; i++) {
        struct client *c = pv->v[i];
        if (c->state == CL_CLOSED)
            continue;
        /* Its server goes too: whatever ran there is cut short. */
        if (c->server)
            c->server->close_needed = true;
        client_close_error(c, sqlstate, "%s", msg);
    }
    free(pv->v);
    pv->v = NULL;
    pv->n = pv->cap = 0;
}

static int count_user_clients(void)
{
    int n = 0;
    for (int i = 0; i < g_pooler.n_workers; i++) {
        struct list *it, *tmp;
        list_for_each_safe(it, tmp, &g_pooler.workers[i].clients)
        {
            const struct client *c = list_entry(it, struct client, node);
            if (!c->is_admin && c->state != CL_CLOSED)
                n++;
        }
    }
    return n;
}

static void stop_accepting(void)
{
    g_pooler.shutting_down = true;
    for (int i = 0; i < g_pooler.n_workers; i++)
        worker_stop_listening(&g_pooler.workers[i]);
}

/* ---- waiting commands ---------------------------------------------------- */

static void wait_timer_update(void);

/* Is what se waits for done? Makes progress on the way: closes idle
 * servers of paused databases and servers waiting to be closed. */
static bool wait_done(struct admin_session *se)
{
    switch (se->wait) {
    case ADMIN_WAIT_PAUSE:
        /* PgBouncer's PAUSE disconnects the servers (a database restart
         * follows): idle ones now, the others once released. */
        close_idle_servers(se->wait_db, false, "paused by admin console");
        return pools_released(se->wait_db);
    case ADMIN_WAIT_CLOSE:
        close_idle_servers(se->wait_db, true, "close needed");
        return close_needed_cleared(se->wait_db);
    case ADMIN_WAIT_SHUTDOWN:
        return pools_released(NULL);
    case ADMIN_WAIT_NONE:
        break;
    }
    return true;
}

/* Has the pause se waits for been lifted by a RESUME meanwhile? */
static bool pause_canceled(const struct admin_session *se)
{
    if (se->wait != ADMIN_WAIT_PAUSE)
        return false;
    return se->wait_db ? !se->wait_db->paused && !g_pooler.paused : !g_pooler.paused;
}

static void admin_flush(struct client *c, struct admin_out *out);

/* Sends the answer of the command se waited for, then handles what the
 * client sent meanwhile. */
static void wait_finish(struct admin_session *se, const char *error)
{
    struct client *c = se->c;
    enum admin_wait kind = se->wait;
    struct admin_out out = {.cache = &c->s.worker->bufs};
    if (error) {
        admin_out_error(&out, ADMIN_SQLSTATE_ERROR, error);
        if (!se->wait_simple)
            se->skip_till_sync = true;
    } else {
        admin_out_complete(&out, kind == ADMIN_WAIT_PAUSE   ? "PAUSE"
                                 : kind == ADMIN_WAIT_CLOSE ? "WAIT_CLOSE"
                                                            : "SHUTDOWN");
    }
    if (se->wait_simple)
        admin_out_ready(&out);
    se->wait = ADMIN_WAIT_NONE;
    se->wait_db = NULL;
    admin_flush(c, &out);
    if (kind == ADMIN_WAIT_SHUTDOWN && !error) {
        log_info("SHUTDOWN WAIT_FOR_SERVERS: no server in use, exiting");
        exit_requested = true;
    }
    if (exit_requested) {
        worker_stop_loop(&g_pooler.workers[0]); /* the main loop */
        return;
    }
    stream_read_start(&c->s);
    if (c->s.rbuf && iobuf_len(c->s.rbuf))
        admin_handle_locked(c);
}

static void wait_cb_locked(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)t;
    (void)revents;
    if (shutdown_started && shutdown_mode == ADMIN_SHUTDOWN_WAIT_FOR_SERVERS) {
        /* Clients that wait for a server would wait forever: the pools
         * are paused for good. */
        struct ptr_vec pv = {0};
        collect_clients(&pv, NULL, true);
        close_clients(&pv, SQLSTATE_ADMIN_SHUTDOWN, "pooler is shutting down");
    }
    if (shutdown_started && shutdown_mode == ADMIN_SHUTDOWN_WAIT_FOR_CLIENTS &&
        count_user_clients() == 0) {
        log_info("SHUTDOWN WAIT_FOR_CLIENTS: no client left, exiting");
        worker_stop_loop(&g_pooler.workers[0]); /* the main loop */
        return;
    }
    /* Finishing a wait runs the client's next commands, which may free
     * other sessions (KILL_CLIENT): rescan from the start after each. */
    bool again = true;
    while (again && !exit_requested) {
        again = false;
        struct list *it, *tmp;
        list_for_each_safe(it, tmp, &sessions)
        {
            struct admin_session *se = list_entry(it, struct admin_session, node);
            if (se->wait == ADMIN_WAIT_NONE)
                continue;
            if (!client_alive(se->c, se->id)) {
                session_free(se);
                continue;
            }
            const char *error = pause_canceled(se) ? "PAUSE canceled by RESUME" : NULL;
            if (error || wait_done(se)) {
                wait_finish(se, error);
                again = true;
                break;
            }
        }
    }
    if (!exit_requested)
        wait_timer_update();
}

static void wait_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    worker_world_lock();
    wait_cb_locked(loop, t, revents);
    worker_world_unlock();
}

/* Runs the 50 ms timer only while something needs it. */
static void wait_timer_update(void)
{
    if (!admin_loop)
        return;
    bool need = shutdown_started;
    struct list *it, *tmp;
    list_for_each_safe(it, tmp, &sessions)
    {
        if (list_entry(it, struct admin_session, node)->wait != ADMIN_WAIT_NONE)
            need = true;
    }
    if (need && !ev_is_active(&wait_timer))
        ev_timer_start(admin_loop, &wait_timer);
    else if (!need && ev_is_active(&wait_timer))
        ev_timer_stop(admin_loop, &wait_timer);
}

static void stats_cb_locked(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)t;
    (void)revents;
    int64_t now = worker_now(admin_worker);
    int64_t period = g_pooler.cfg ? g_pooler.cfg->stats_period : 60000000;
    if (period <= 0)
        period = 60000000;
    if (last_stats_time == 0 || now - last_stats_time >= period) {
        last_stats_time = now;
        admin_stats_period(now);
    }
    if (!list_empty(&sessions))
        sessions_collect();
}

static void stats_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    worker_world_lock();
    stats_cb_locked(loop, t, revents);
    worker_world_unlock();
}

void admin_init(struct worker *w)
{
    if (admin_loop || !w)
        return;
    admin_loop = w->loop;
    admin_worker = w;
    ev_timer_init(&wait_timer, wait_cb, 0.05, 0.05);
    ev_timer_init(&stats_timer, stats_cb, 1.0, 1.0);
    ev_timer_start(admin_loop, &stats_timer);
    /* The first period starts now. */
    last_stats_time = worker_now(w);
    admin_stats_period(last_stats_time);
}

void admin_free_all(void)
{
    while (!list_empty(&sessions))
        session_free(list_entry(list_first(&sessions), struct admin_session, node));
    if (admin_loop) {
        ev_timer_stop(admin_loop, &wait_timer);
        ev_timer_stop(admin_loop, &stats_timer);
    }
    admin_loop = NULL;
    admin_worker = NULL;
    admin_stats_free();
}

/* Makes c wait for kind on db; its answer comes from wait_cb. */
static void wait_begin(struct client *c, enum admin_wait kind, struct database *db, bool simple)
{
    struct admin_session *se = session_of(c, true);
    se->wait = kind;
    se->wait_db = db;
    se->wait_simple = simple;
    admin_init(c->s.worker);
    wait_timer_update();
}

/* ---- commands ------------------------------------------------------------ */

enum run_status {
    RUN_OK = 0,  /* answered (CommandComplete or rows) */
    RUN_ERROR,   /* answered with an ErrorResponse */
    RUN_WAITING, /* the answer comes later (PAUSE, WAIT_CLOSE, SHUTDOWN) */
};

static enum run_status run_error(struct admin_result *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static enum run_status run_error(struct admin_result *r, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    admin_out_error(r->out, ADMIN_SQLSTATE_ERROR, msg);
    return RUN_ERROR;
}

static enum run_status run_done(struct admin_result *r, enum admin_verb v)
{
    admin_out_complete(r->out, admin_verb_str(v));
    return RUN_OK;
}

/* The database argument of cmd, or NULL for all; false (answered) if named
 * and unknown. */
static bool db_arg(const struct admin_cmd *cmd, struct admin_result *r, struct database **db)
{
    char err[ADMIN_ARG_MAX + 64];
    *db = NULL;
    if (!cmd->has_arg)
        return true;
    *db = find_db(cmd->arg, err, sizeof(err));
    if (*db)
        return true;
    admin_out_error(r->out, ADMIN_SQLSTATE_ERROR, err);
    return false;
}

static enum run_status cmd_set(struct client *c, const struct admin_cmd *cmd,
                               struct admin_result *r)
{
    if (admin_is_session_setting(cmd->arg))
        return run_done(r, cmd->verb);
    if (c->admin_stats_only)
        return run_error(r, "admin access needed");
    if (!admin_apply_config_hook)
        return run_error(r, "SET is not available");
    char err[512];
    struct config *cfg = config_with_setting(g_pooler.cfg, cmd->arg, cmd->value, err, sizeof(err));
    if (!cfg)
        return run_error(r, "%s", err);
    if (!admin_apply_config_hook(cfg, err, sizeof(err)))
        return run_error(r, "SET failed: %s", err);
    log_info("admin console: SET %s = '%s' (by %s)", cmd->arg, cmd->value, c->user);
    return run_done(r, cmd->verb);
}

static enum run_status cmd_pause(struct client *c, const struct admin_cmd *cmd,
                                 struct admin_result *r, bool simple)
{
    struct database *db;
    if (!db_arg(cmd, r, &db))
        return RUN_ERROR;
    if (g_pooler.paused)
        return run_error(r, "already paused");
    if (db)
        db->paused = true;
    else
        g_pooler.paused = true;
    log_info("admin console: PAUSE %s (by %s)", db ? db->name : "(all databases)", c->user);
    struct admin_session probe = {.wait = ADMIN_WAIT_PAUSE, .wait_db = db};
    if (wait_done(&probe))
        return run_done(r, cmd->verb);
    wait_begin(c, ADMIN_WAIT_PAUSE, db, simple);
    return RUN_WAITING;
}

static enum run_status cmd_resume(struct client *c, const struct admin_cmd *cmd,
                                  struct admin_result *r)
{
    struct database *db;
    if (!db_arg(cmd, r, &db))
        return RUN_ERROR;
    if (db) {
        if (!db->paused)
            return run_error(r, "database %s is not paused", db->name);
        db->paused = false;
    } else {
        /* RESUME alone lifts every pause: the global one and those left on
         * databases by PAUSE db or KILL db. */
        bool any = g_pooler.paused;
        struct list *it, *tmp;
        list_for_each_safe(it, tmp, &g_pooler.databases)
        {
            struct database *d = list_entry(it, struct database, node);
            any |= d->paused;
            d->paused = false;
        }
        if (!any)
            return run_error(r, "pooler is not paused");
        g_pooler.paused = false;
    }
    log_info("admin console: RESUME %s (by %s)", db ? db->name : "(all databases)", c->user);
    dispatch_all();
    return run_done(r, cmd->verb);
}

static enum run_status cmd_enable(struct client *c, const struct admin_cmd *cmd,
                                  struct admin_result *r, bool disable)
{
    struct database *db;
    if (!db_arg(cmd, r, &db))
        return RUN_ERROR;
    db->disabled = disable;
    log_info("admin console: %s %s (by %s)", disable ? "DISABLE" : "ENABLE", db->name, c->user);
    return run_done(r, cmd->verb);
}

static enum run_status cmd_reconnect(struct client *c, const struct admin_cmd *cmd,
                                     struct admin_result *r)
{
    struct database *db;
    if (!db_arg(cmd, r, &db))
        return RUN_ERROR;
    struct list *it, *tmp;
    list_for_each_safe(it, tmp, &g_pooler.pools)
    {
        struct pool *p = list_entry(it, struct pool, node);
        if (!pool_matches(p, db))
            continue;
        pool_find_server(p, server_mark_close_needed, NULL);
    }
    /* Idle ones can go now; the others go when released. */
    close_idle_servers(db, true, "RECONNECT");
    log_info("admin console: RECONNECT %s (by %s)", db ? db->name : "(all databases)", c->user);
    return run_done(r, cmd->verb);
}

static enum run_status cmd_kill(struct client *c, const struct admin_cmd *cmd,
                                struct admin_result *r)
{
    struct database *db;
    if (!db_arg(cmd, r, &db))
        return RUN_ERROR;
    /* Paused first: a server freed by a killed client must not go to a
     * waiting client of the same database, which is killed next. New
     * clients wait for RESUME, as in PgBouncer. */
    if (db)
        db->paused = true;
    else
        g_pooler.paused = true;
    log_info("admin console: KILL %s (by %s)", db ? db->name : "(all databases)", c->user);
    char msg[ADMIN_ARG_MAX + 64];
    snprintf(msg, sizeof(msg), "database %s was killed by the admin console",
             db ? db->name : "connection");
    struct ptr_vec pv = {0};
    collect_clients(&pv, db, false);
    close_clients(&pv, SQLSTATE_ADMIN_SHUTDOWN, msg);
    struct list *it, *tmp;
    list_for_each_safe(it, tmp, &g_pooler.pools)
    {
        struct pool *p = list_entry(it, struct pool, node);
        if (!pool_matches(p, db))
            continue;
        collect_servers(&pv, &p->active, false);
        collect_servers(&pv, &p->idle, false);
        collect_servers(&pv, &p->busy, false);
    }
    close_servers(&pv, "KILL");
    return run_done(r, cmd->verb);
}

static enum run_status cmd_kill_client(struct client *c, const struct admin_cmd *cmd,
                                       struct admin_result *r)
{
    /* The id of SHOW CLIENTS; the ptr column's 0x... form is taken too. */
    const char *arg = cmd->arg;
    bool by_ptr = arg[0] == '0' && (arg[1] == 'x' || arg[1] == 'X');
    char *end = NULL;
    errno = 0;
    unsigned long long want = strtoull(by_ptr ? arg + 2 : arg, &end, by_ptr ? 16 : 10);
    if (!isdigit((unsigned char)arg[by_ptr ? 2 : 0]) || *end || errno)
        return run_error(r, "invalid client pointer supplied");
    struct client *target = NULL;
    for (int i = 0; i < g_pooler.n_workers && !target; i++) {
        struct list *it, *tmp;
        list_for_each_safe(it, tmp, &g_pooler.workers[i].clients)
        {
            struct client *x = list_entry(it, struct client, node);
            if (x->state == CL_CLOSED)
                continue;
            if (by_ptr ? (uintptr_t)x == (uintptr_t)want : x->id == want) {
                target = x;
                break;
            }
        }
    }
    if (!target)
        return run_error(r, "client not found");
    log_info("admin console: KILL_CLIENT %s: C-%p %s/%s (by %s)", arg, (void *)target,
             target->dbname ? target->dbname : "", target->user ? target->user : "", c->user);
    if (target->server)
        target->server->close_needed = true;
    client_close_error(target, SQLSTATE_ADMIN_SHUTDOWN, "client killed by the admin console");
    return run_done(r, cmd->verb);
}

static enum run_status cmd_shutdown(struct client *c, const struct admin_cmd *cmd,
                                    struct admin_result *r, bool simple)
{
    /* A plain SHUTDOWN during a waiting one exits at once, as a second
     * signal does in PgBouncer. */
    if (shutdown_started && cmd->shutdown != ADMIN_SHUTDOWN_NOW)
        return run_error(r, "shutdown already in progress");
    switch (cmd->shutdown) {
    case ADMIN_SHUTDOWN_NOW:
        log_info("admin console: SHUTDOWN (by %s)", c->user);
        exit_requested = true;
        return run_done(r, cmd->verb);
    case ADMIN_SHUTDOWN_WAIT_FOR_SERVERS:
        log_info("admin console: SHUTDOWN WAIT_FOR_SERVERS (by %s)", c->user);
        shutdown_started = true;
        shutdown_mode = cmd->shutdown;
        /* No transaction may start any more; those running finish. */
        g_pooler.paused = true;
        if (admin_shutdown_hook)
            admin_shutdown_hook(false);
        if (!g_pooler.shutting_down)
            stop_accepting();
        if (pools_released(NULL)) {
            exit_requested = true;
            return run_done(r, cmd->verb);
        }
        wait_begin(c, ADMIN_WAIT_SHUTDOWN, NULL, simple);
        return RUN_WAITING;
    case ADMIN_SHUTDOWN_WAIT_FOR_CLIENTS:
        log_info("admin console: SHUTDOWN WAIT_FOR_CLIENTS (by %s)", c->user);
        shutdown_started = true;
        shutdown_mode = cmd->shutdown;
        stop_accepting();
        admin_init(c->s.worker);
        wait_timer_update();
        return run_done(r, cmd->verb);
    }
    return run_done(r, cmd->verb);
}

/* Runs cmd for c, writing the answer into r (RowDescription first if
 * r->describe). simple: it came by Query (for commands that answer later). */
static enum run_status admin_run(struct client *c, const struct admin_cmd *cmd,
                                 struct admin_result *r, bool simple)
{
    admin_counters.query_count++;
    admin_counters.xact_count++;
    switch (cmd->verb) {
    case ADMIN_CMD_EMPTY:
        admin_out_simple(r->out, 'I');
        return RUN_OK;
    case ADMIN_CMD_SHOW:
        admin_show_run(cmd->topic, r);
        return RUN_OK;
    case ADMIN_CMD_SET:
        return cmd_set(c, cmd, r);
    default:
        break;
    }
    if (c->admin_stats_only)
        return run_error(r, "admin access needed");
    switch (cmd->verb) {
    case ADMIN_CMD_RELOAD: {
        char err[512] = "";
        log_info("admin console: RELOAD (by %s)", c->user);
        if (admin_reload_hook && !admin_reload_hook(err, sizeof(err))) {
            admin_out_error(r->out, ADMIN_SQLSTATE_CONFIG_FILE, "RELOAD failed, see the log");
            return RUN_ERROR;
        }
        return run_done(r, cmd->verb);
    }
    case ADMIN_CMD_PAUSE:
        return cmd_pause(c, cmd, r, simple);
    case ADMIN_CMD_RESUME:
        return cmd_resume(c, cmd, r);
    case ADMIN_CMD_SUSPEND:
        return run_error(r, "SUSPEND is not supported: sluice has no online restart "
                            "(run another sluice with so_reuseport instead)");
    case ADMIN_CMD_DISABLE:
    case ADMIN_CMD_ENABLE:
        return cmd_enable(c, cmd, r, cmd->verb == ADMIN_CMD_DISABLE);
    case ADMIN_CMD_RECONNECT:
        return cmd_reconnect(c, cmd, r);
    case ADMIN_CMD_KILL:
        return cmd_kill(c, cmd, r);
    case ADMIN_CMD_KILL_CLIENT:
        return cmd_kill_client(c, cmd, r);
    case ADMIN_CMD_WAIT_CLOSE: {
        struct database *db;
        if (!db_arg(cmd, r, &db))
            return RUN_ERROR;
        struct admin_session probe = {.wait = ADMIN_WAIT_CLOSE, .wait_db = db};
        if (wait_done(&probe))
            return run_done(r, cmd->verb);
        wait_begin(c, ADMIN_WAIT_CLOSE, db, simple);
        return RUN_WAITING;
    }
    case ADMIN_CMD_SHUTDOWN:
        return cmd_shutdown(c, cmd, r, simple);
    default:
        return run_error(r, "unsupported command");
    }
}

/* ---- protocol ------------------------------------------------------------ */

static void admin_flush(struct client *c, struct admin_out *out)
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
    enum run_status st = RUN_ERROR;
    if (rd->bad)
        admin_out_error(out, SQLSTATE_PROTOCOL_VIOLATION, "invalid Query message");
    else if (!admin_parse(sql, 0, NULL, cmd, err, sizeof(err)))
        admin_out_error(out, ADMIN_SQLSTATE_ERROR, err);
    else
        st = admin_run(c, cmd, &r, true);
    free(cmd);
    if (st != RUN_WAITING && c->state != CL_CLOSED)
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

static enum run_status handle_execute(struct client *c, struct admin_session *se,
                                      struct proto_reader *rd, struct admin_out *out)
{
    const char *name = proto_read_string(rd);
    (void)proto_read32(rd); /* row limit: results are sent whole */
    if (rd->bad) {
        admin_out_error(out, SQLSTATE_PROTOCOL_VIOLATION, "invalid Execute message");
        return RUN_ERROR;
    }
    struct admin_portal *p = *portal_slot(se, name);
    if (!p) {
        char msg[300];
        snprintf(msg, sizeof(msg), "portal \"%.200s\" does not exist", name);
        admin_out_error(out, "34000", msg);
        return RUN_ERROR;
    }
    struct admin_result r = {
        .out = out, .w = c->s.worker, .self = c, .nformats = p->nformats, .formats = p->formats};
    struct admin_cmd *cmd = xcalloc(1, sizeof(*cmd));
    char err[600];
    enum run_status st;
    if (!admin_parse(p->sql, p->nparams, (const char *const *)p->params, cmd, err, sizeof(err))) {
        admin_out_error(out, ADMIN_SQLSTATE_ERROR, err);
        st = RUN_ERROR;
    } else {
        const char *const *names;
        const uint32_t *types;
        int n = cmd->verb == ADMIN_CMD_SHOW ? admin_show_columns(cmd->topic, &names, &types) : 0;
        if (n > 0 && p->nformats > 1 && p->nformats != n) {
            snprintf(err, sizeof(err),
                     "bind message has %d result formats but query has %d columns", p->nformats, n);
            admin_out_error(out, SQLSTATE_PROTOCOL_VIOLATION, err);
            st = RUN_ERROR;
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

/* The largest message the console takes: commands are short. */
#define ADMIN_MAX_MESSAGE (64 * 1024)

static void admin_handle_locked(struct client *c)
{
    struct admin_session *se = session_of(c, false);
    if (se && se->wait != ADMIN_WAIT_NONE) {
        /* A command waits: leave the rest buffered. Reading goes on, so
         * that a client leaving meanwhile is noticed (a full buffer stops
         * it; wait_finish() restarts it). */
        return;
    }
    struct admin_out out = {.cache = &c->s.worker->bufs};
    struct iobuf *b;
    while ((b = c->s.rbuf) && iobuf_len(b) && c->state == CL_IDLE) {
        uint8_t type;
        uint32_t mlen;
        enum proto_status ps =
            proto_peek_header(b->data + b->start, iobuf_len(b), ADMIN_MAX_MESSAGE, &type, &mlen);
        if (ps == PROTO_NEED_MORE)
            break;
        if (ps != PROTO_OK || mlen > b->cap) {
            admin_flush(c, &out);
            client_close_error(c, SQLSTATE_PROTOCOL_VIOLATION,
                               ps == PROTO_TOO_BIG || mlen > b->cap ? "admin message too long"
                                                                    : "invalid admin message");
            return;
        }
        if (mlen > iobuf_len(b))
            break;
        /* Handle a copy: a command may close this very client (and with it
         * its buffers). */
        uint8_t *msg = malloc(mlen);
        if (!msg)
            abort();
        memcpy(msg, b->data + b->start, mlen);
        b->start += mlen;
        admin_counters.bytes_in += mlen;
        c->last_activity = worker_now(c->s.worker);
        if (type == 'Q' || type == 'E')
            c->request_time = c->last_activity; /* SHOW CLIENTS' request_time */
        struct proto_reader rd;
        proto_reader_init(&rd, msg, mlen);
        if (type != 'Q' && type != 'X' && type != 'S' && type != 'H')
            se = session_of(c, true);
        bool skipping = se && se->skip_till_sync && type != 'S' && type != 'X';
        bool ok = true;
        if (skipping) {
            /* after an error, the extended protocol ignores all up to Sync */
        } else {
            switch (type) {
            case 'Q':
                handle_query(c, &rd, &out);
                break;
            case 'P':
                ok = handle_parse(se, &rd, &out);
                break;
            case 'B':
                ok = handle_bind(se, &rd, &out);
                break;
            case 'D':
                ok = handle_describe(c, se, &rd, &out);
                break;
            case 'E':
                ok = handle_execute(c, se, &rd, &out) != RUN_ERROR;
                break;
            case 'C':
                ok = handle_close(se, &rd, &out);
                break;
            case 'S':
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
                admin_out_ready(&out);
                break;
            case 'H':
                admin_flush(c, &out);
                break;
            case 'X':
                free(msg);
                admin_flush(c, &out);
                client_close(c, "client close request");
                return;
            default:
                free(msg);
                admin_flush(c, &out);
                client_close_error(c, SQLSTATE_PROTOCOL_VIOLATION,
                                   "unsupported message type '%c' on the admin console", type);
                return;
            }
        }
        free(msg);
        if (c->state == CL_CLOSED) {
            /* KILL_CLIENT of itself. */
            iobuf_put(out.cache, out.buf);
            return;
        }
        if (!ok)
            se->skip_till_sync = true;
        if (exit_requested)
            break;
        se = session_of(c, false);
        if (se && se->wait != ADMIN_WAIT_NONE)
            break;
    }
    admin_flush(c, &out);
    if (exit_requested) {
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
