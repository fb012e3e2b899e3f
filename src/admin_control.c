/* admin_control.c - the console's control commands (SET, RELOAD, PAUSE,
 * RESUME, DISABLE, ENABLE, RECONNECT, KILL, KILL_CLIENT, WAIT_CLOSE,
 * SHUTDOWN), the commands that answer later (PAUSE, WAIT_CLOSE and SHUTDOWN
 * WAIT_FOR_SERVERS wait for the pools to drain) and the console's timers.
 * admin.c runs the protocol and calls admin_run() for each command.
 *
 * Everything here runs under the world lock (worker.h): the commands read
 * and change every worker's clients, servers and pools. */
#include "admin.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin_int.h"
#include "cache.h"
#include "client_conn.h"
#include "conn.h"
#include "insights.h"
#include "jobs.h"
#include "log.h"
#include "pool.h"
#include "server.h"
#include "tls.h"
#include "worker.h"

bool (*admin_reload_hook)(char *err, size_t errlen);
void (*admin_shutdown_hook)(bool wait_for_clients);
bool (*admin_apply_config_hook)(struct config *cfg, bool keep_tls, char *err, size_t errlen);

static struct ev_loop *admin_loop;
static struct worker *admin_worker;
static ev_timer wait_timer;  /* 50 ms while commands wait or a shutdown drains */
static ev_timer stats_timer; /* 1 s: averages every stats_period, session cleanup */
static int64_t last_stats_time;
static bool exit_requested;

bool admin_exit_requested(void)
{
    return exit_requested;
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
            if (waiting_only && c->state != CL_WAITING && c->state != CL_ASSIGNED &&
                c->state != CL_LOGIN_WAIT)
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
        admin_out_complete(&out, kind == ADMIN_WAIT_PAUSE ? "PAUSE" : "WAIT_CLOSE");
    }
    if (se->wait_simple)
        admin_out_ready(&out);
    se->wait = ADMIN_WAIT_NONE;
    se->wait_db = NULL;
    admin_flush(c, &out);
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
    /* Finishing a wait runs the client's next commands, which may free
     * other sessions (KILL_CLIENT): rescan from the start after each. */
    bool again = true;
    while (again && !exit_requested) {
        again = false;
        struct list *it, *tmp;
        list_for_each_safe(it, tmp, &admin_sessions)
        {
            struct admin_session *se = list_entry(it, struct admin_session, node);
            if (se->wait == ADMIN_WAIT_NONE)
                continue;
            if (!admin_client_alive(se->c, se->id)) {
                admin_session_free(se);
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
    bool need = false;
    struct list *it, *tmp;
    list_for_each_safe(it, tmp, &admin_sessions)
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
    if (!list_empty(&admin_sessions))
        admin_sessions_collect();
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
    while (!list_empty(&admin_sessions))
        admin_session_free(list_entry(list_first(&admin_sessions), struct admin_session, node));
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
    struct admin_session *se = admin_session_of(c, true);
    se->wait = kind;
    se->wait_db = db;
    se->wait_simple = simple;
    admin_init(c->s.worker);
    wait_timer_update();
}

/* ---- commands ------------------------------------------------------------ */

static enum admin_run_status run_error(struct admin_result *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static enum admin_run_status run_error(struct admin_result *r, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    admin_out_error(r->out, ADMIN_SQLSTATE_ERROR, msg);
    return ADMIN_RUN_ERROR;
}

static enum admin_run_status run_done(struct admin_result *r, enum admin_verb v)
{
    admin_out_complete(r->out, admin_verb_str(v));
    return ADMIN_RUN_OK;
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

static enum admin_run_status cmd_set(struct client *c, const struct admin_cmd *cmd,
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
    if (!admin_apply_config_hook(cfg, false, err, sizeof(err))) {
        /* Half of a key/certificate pair: taken, and applied with the
         * other half (PgBouncer's way: the two are SET one at a time). */
        if (!tls_pair_half_ok(cmd->arg, cmd->value))
            return run_error(r, "SET failed: %s", err);
        char err2[512];
        cfg = config_with_setting(g_pooler.cfg, cmd->arg, cmd->value, err2, sizeof(err2));
        if (!cfg || !admin_apply_config_hook(cfg, true, err2, sizeof(err2)))
            return run_error(r, "SET failed: %s", err);
        log_info("admin console: SET %s = '%s' (by %s); TLS keeps its current key and "
                 "certificate until the pair matches (%s)",
                 cmd->arg, cmd->value, c->user, err);
        return run_done(r, cmd->verb);
    }
    log_info("admin console: SET %s = '%s' (by %s)", cmd->arg, cmd->value, c->user);
    return run_done(r, cmd->verb);
}

static enum admin_run_status cmd_pause(struct client *c, const struct admin_cmd *cmd,
                                       struct admin_result *r, bool simple)
{
    struct database *db;
    if (!db_arg(cmd, r, &db))
        return ADMIN_RUN_ERROR;
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
    return ADMIN_RUN_WAITING;
}

static enum admin_run_status cmd_resume(struct client *c, const struct admin_cmd *cmd,
                                        struct admin_result *r)
{
    struct database *db;
    if (!db_arg(cmd, r, &db))
        return ADMIN_RUN_ERROR;
    if (db) {
        if (!db->paused)
            return run_error(r, "database %s is not paused", db->name);
        db->paused = false;
    } else {
        /* A shutdown under way pauses for good (PgBouncer's answer). */
        if (g_pooler.stopping)
            return run_error(r, "pooler is shutting down");
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

static enum admin_run_status cmd_enable(struct client *c, const struct admin_cmd *cmd,
                                        struct admin_result *r, bool disable)
{
    struct database *db;
    if (!db_arg(cmd, r, &db))
        return ADMIN_RUN_ERROR;
    db->disabled = disable;
    log_info("admin console: %s %s (by %s)", disable ? "DISABLE" : "ENABLE", db->name, c->user);
    return run_done(r, cmd->verb);
}

static enum admin_run_status cmd_reconnect(struct client *c, const struct admin_cmd *cmd,
                                           struct admin_result *r)
{
    struct database *db;
    if (!db_arg(cmd, r, &db))
        return ADMIN_RUN_ERROR;
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

static enum admin_run_status cmd_kill(struct client *c, const struct admin_cmd *cmd,
                                      struct admin_result *r)
{
    struct database *db;
    if (!db_arg(cmd, r, &db))
        return ADMIN_RUN_ERROR;
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

static enum admin_run_status cmd_kill_client(struct client *c, const struct admin_cmd *cmd,
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

static enum admin_run_status cmd_shutdown(struct client *c, const struct admin_cmd *cmd,
                                          struct admin_result *r)
{
    switch (cmd->shutdown) {
    case ADMIN_SHUTDOWN_NOW:
        log_info("SHUTDOWN command issued (by %s)", c->user);
        exit_requested = true;
        return run_done(r, cmd->verb);
    case ADMIN_SHUTDOWN_WAIT_FOR_SERVERS:
    case ADMIN_SHUTDOWN_WAIT_FOR_CLIENTS: {
        bool clients = cmd->shutdown == ADMIN_SHUTDOWN_WAIT_FOR_CLIENTS;
        log_info("SHUTDOWN %s command issued (by %s)",
                 clients ? "WAIT_FOR_CLIENTS" : "WAIT_FOR_SERVERS", c->user);
        /* Answered at once, as in PgBouncer 1.23: main stops accepting
         * (but for the console on the Unix socket) and exits in the
         * background when the servers are released or the clients gone.
         * During another such shutdown, this one's mode replaces it. */
        if (admin_shutdown_hook)
            admin_shutdown_hook(clients);
        return run_done(r, cmd->verb);
    }
    }
    return run_done(r, cmd->verb);
}

/* CACHE CLEAR [table]: every answer, or those over one table in every
 * database. */
static enum admin_run_status cmd_cache_clear(struct client *c, const struct admin_cmd *cmd,
                                             struct admin_result *r)
{
    if (!cache_on())
        return run_error(r, "the result cache is off (cache = off)");
    size_t dropped = 0;
    if (!cmd->has_arg) {
        dropped = cache_clear(NULL, NULL);
    } else {
        struct list *it, *tmp;
        list_for_each_safe(it, tmp, &g_pooler.databases)
        {
            struct database *db = list_entry(it, struct database, node);
            dropped += cache_clear(db, cmd->arg);
        }
    }
    log_info("admin console: CACHE CLEAR%s%s (by %s): %zu entries dropped", cmd->has_arg ? " " : "",
             cmd->has_arg ? cmd->arg : "", c->user, dropped);
    return run_done(r, cmd->verb);
}

enum admin_run_status admin_run(struct client *c, const struct admin_cmd *cmd,
                                struct admin_result *r, bool simple)
{
    admin_counters.query_count++;
    admin_counters.xact_count++;
    switch (cmd->verb) {
    case ADMIN_CMD_EMPTY:
        admin_out_simple(r->out, 'I');
        return ADMIN_RUN_OK;
    case ADMIN_CMD_SHOW:
        r->cmd = cmd;
        admin_show_run(cmd->topic, r);
        return ADMIN_RUN_OK;
    case ADMIN_CMD_SET:
        return cmd_set(c, cmd, r);
    default:
        break;
    }
    if (c->admin_stats_only)
        return run_error(r, "admin access needed");
    switch (cmd->verb) {
    case ADMIN_CMD_RELOAD: {
        char err[512] = "", msg[600];
        log_info("admin console: RELOAD (by %s)", c->user);
        if (admin_reload_hook && !admin_reload_hook(err, sizeof(err))) {
            /* The first problem as FILE:LINE: reason, the rest in the log. */
            snprintf(msg, sizeof(msg), "RELOAD failed: %s", err[0] ? err : "see the log");
            admin_out_error(r->out, ADMIN_SQLSTATE_CONFIG_FILE, msg);
            return ADMIN_RUN_ERROR;
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
            return ADMIN_RUN_ERROR;
        struct admin_session probe = {.wait = ADMIN_WAIT_CLOSE, .wait_db = db};
        if (wait_done(&probe))
            return run_done(r, cmd->verb);
        wait_begin(c, ADMIN_WAIT_CLOSE, db, simple);
        return ADMIN_RUN_WAITING;
    }
    case ADMIN_CMD_SHUTDOWN:
        return cmd_shutdown(c, cmd, r);
    case ADMIN_CMD_CACHE_CLEAR:
        return cmd_cache_clear(c, cmd, r);
    case ADMIN_CMD_INSIGHTS_RESET:
        insights_reset();
        log_info("admin console: INSIGHTS RESET (by %s)", c->user);
        return run_done(r, cmd->verb);
    case ADMIN_CMD_RUN_JOB:
        /* Answered at once: the run starts on worker 0 within a tick, still
         * behind the job's advisory lock; SHOW JOBS tells how it ended. */
        if (!jobs_request_run(cmd->arg))
            return run_error(r, "no such job");
        log_info("admin console: RUN JOB %s (by %s)", cmd->arg, c->user);
        return run_done(r, cmd->verb);
    default:
        return run_error(r, "unsupported command");
    }
}
