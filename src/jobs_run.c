/* jobs_run.c - one run of a refresh job (jobs_int.h), on a connection of
 * its own to the primary, through the internal query API:
 *
 *   connect (as the database entry's user; a held server, outside the
 *   pools' limits) -> SET application_name, statement_timeout ->
 *   pg_try_advisory_lock(key) -> the command -> [hold the lock until the
 *   occasion's grace ends] -> pg_advisory_unlock(key) -> close.
 *
 * Not getting the lock ends the run as skipped, after asking who holds it.
 * The connection is closed after every run: a run never finds session
 * state (or a lock) left by the one before, and an idle job holds no
 * backend. Each step is a callback of the one before; nothing blocks. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "jobs_int.h"
#include "log.h"
#include "pool.h"
#include "server.h"
#include "server_query.h"
#include "worker.h"

#define LOCK_SQL   "SELECT pg_catalog.pg_try_advisory_lock($1::int8)"
#define UNLOCK_SQL "SELECT pg_catalog.pg_advisory_unlock($1::int8)"
/* Who holds the key (a bigint key is classid:objid, objsubid 1). */
#define HOLDER_SQL                                                                                 \
    "SELECT a.application_name, a.pid FROM pg_catalog.pg_locks l JOIN "                            \
    "pg_catalog.pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "  \
    "AND l.objsubid = 1 AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = " \
    "pg_catalog.current_database()) AND ((l.classid::int8 << 32) | l.objid::int8) = $1::int8 "     \
    "LIMIT 1"

static const struct server_holder_ops job_holder;

static struct job *job_of(const struct server *sv)
{
    for (struct job *j = g_jobs.list; j; j = j->next)
        if (j->sv == sv)
            return j;
    return NULL;
}

static const char *trigger_str(unsigned t)
{
    return t & JOB_TRIGGER_MANUAL ? "RUN JOB" : t & JOB_TRIGGER_SCHEDULE ? "schedule" : "writes";
}

/* The run is over: its result recorded and logged, its connection closed
 * (which releases a lock still held), the job idle. A run for writes that
 * did not succeed (or ran elsewhere, maybe before the writes) is due again
 * after the debounce: the view must not stay stale until the next write. */
static void run_end(struct job *j, enum job_result r, const char *err)
{
    struct server *sv = j->sv;
    int64_t mono = jobs_mono_usec();
    j->sv = NULL;
    j->result = r;
    if (r == JOB_RESULT_OK) {
        j->error[0] = '\0';
        j->last_success = now_wall_usec();
        log_info("job %s: ok in %lld ms (%s)", j->name, (long long)(j->last_duration / 1000),
                 trigger_str(j->trigger));
    } else if (r == JOB_RESULT_SKIPPED) {
        j->skipped++;
        log_info("job %s: skipped: its lock is held by %s", j->name,
                 j->lock_holder[0] ? j->lock_holder : "another session");
    } else {
        if (err && err != j->error)
            snprintf(j->error, sizeof(j->error), "%s", err);
        j->failures++;
        log_warning("job %s: %s (%s): %s", j->name, job_result_str(r), trigger_str(j->trigger),
                    j->error);
    }
    if (r != JOB_RESULT_OK && (j->trigger & JOB_TRIGGER_WRITES) && !j->removed) {
        pthread_mutex_lock(&g_jobs.lock);
        job_debounce_write(&j->deb, mono);
        pthread_mutex_unlock(&g_jobs.lock);
    }
    j->phase = JOB_IDLE;
    if (j->run_cfg)
        config_unref(j->run_cfg);
    j->run_cfg = NULL;
    j->run_cj = NULL;
    if (sv)
        server_close(sv, "job run over");
}

/* ---- the steps ----------------------------------------------------------------- */

static void key_param(const struct job *j, char *buf, size_t len)
{
    snprintf(buf, len, "%lld", (long long)j->key);
}

static void on_error_keep(struct server *sv, void *arg, const char *sqlstate, const char *text)
{
    struct job *j = arg;
    if (j->pending_result == JOB_RESULT_NONE || j->pending_result == JOB_RESULT_OK) {
        j->pending_result = strcmp(sqlstate, "57014") == 0 ? JOB_RESULT_TIMEOUT : JOB_RESULT_FAILED;
        snprintf(j->error, sizeof(j->error), "%s", text);
    }
}

static void unlock_done(struct server *sv, void *arg, enum server_query_status st)
{
    struct job *j = arg;
    if (st != SERVER_QUERY_GONE)
        run_end(j, j->pending_result, j->error);
}

static const struct server_query_ops unlock_ops = {.on_done = unlock_done};

static void unlock(struct job *j)
{
    char key[24];
    key_param(j, key, sizeof(key));
    const char *params[] = {key};
    j->phase = JOB_UNLOCKING;
    if (!server_query(j->sv, UNLOCK_SQL, 1, params, &unlock_ops, j))
        run_end(j, j->pending_result, j->error);
}

static void command_done(struct server *sv, void *arg, enum server_query_status st)
{
    struct job *j = arg;
    if (st == SERVER_QUERY_GONE)
        return; /* job_closed() ends the run */
    j->last_duration = jobs_mono_usec() - j->cmd_mono;
    j->runs++;
    if (st == SERVER_QUERY_OK && sv->xact_status != 'I') {
        /* BEGIN without COMMIT: closing the connection rolls it back. */
        j->pending_result = JOB_RESULT_FAILED;
        snprintf(j->error, sizeof(j->error),
                 "the command left a transaction open (rolled back): end it with COMMIT");
    }
    if (j->pending_result == JOB_RESULT_NONE) {
        j->pending_result = JOB_RESULT_OK;
        jobs_publish(j, j->run_cj);
    }
    if (!j->sv)
        return; /* the publish ended it (a shutdown) */
    if (j->pending_result == JOB_RESULT_OK && (j->trigger & JOB_TRIGGER_SCHEDULE) &&
        now_wall_usec() < j->occasion + JOBS_LOCK_GRACE_USEC && !g_pooler.shutting_down &&
        !j->removed) {
        j->phase = JOB_HOLDING;
        j->hold_until = j->occasion + JOBS_LOCK_GRACE_USEC;
        return;
    }
    unlock(j);
}

static const struct server_query_ops command_ops = {.on_error = on_error_keep,
                                                    .on_done = command_done};

static void holder_row(struct server *sv, void *arg, const struct server_query_row *row)
{
    struct job *j = arg;
    if (row->n < 2)
        return;
    if (row->val[0] && row->len[0])
        snprintf(j->lock_holder, sizeof(j->lock_holder), "%.*s", (int)row->len[0], row->val[0]);
    else if (row->val[1])
        snprintf(j->lock_holder, sizeof(j->lock_holder), "pid %.*s", (int)row->len[1], row->val[1]);
}

static void holder_error(struct server *sv, void *arg, const char *sqlstate, const char *text)
{
    server_log(LOG_LVL_DEBUG, sv, "job lock holder query failed: %s", text);
}

static void holder_done(struct server *sv, void *arg, enum server_query_status st)
{
    if (st != SERVER_QUERY_GONE)
        run_end(arg, JOB_RESULT_SKIPPED, NULL);
}

static const struct server_query_ops holder_ops = {
    .on_row = holder_row, .on_error = holder_error, .on_done = holder_done};

static void lock_row(struct server *sv, void *arg, const struct server_query_row *row)
{
    struct job *j = arg;
    j->got_lock = row->n >= 1 && row->val[0] && row->len[0] == 1 && row->val[0][0] == 't';
}

static void lock_done(struct server *sv, void *arg, enum server_query_status st)
{
    struct job *j = arg;
    if (st == SERVER_QUERY_GONE)
        return;
    if (st != SERVER_QUERY_OK || !j->got_lock) {
        if (st != SERVER_QUERY_OK) {
            run_end(j, JOB_RESULT_FAILED, j->error);
            return;
        }
        char key[24];
        key_param(j, key, sizeof(key));
        const char *params[] = {key};
        j->lock_holder[0] = '\0';
        if (!server_query(sv, HOLDER_SQL, 1, params, &holder_ops, j))
            run_end(j, JOB_RESULT_SKIPPED, NULL);
        return;
    }
    snprintf(j->lock_holder, sizeof(j->lock_holder), "%s", g_jobs.instance);
    j->phase = JOB_RUNNING;
    j->cmd_mono = jobs_mono_usec();
    j->pending_result = JOB_RESULT_NONE;
    j->error[0] = '\0';
    log_debug("job %s: running (%s)", j->name, trigger_str(j->trigger));
    if (!server_query(sv, j->run_cj->command, 0, NULL, &command_ops, j))
        run_end(j, JOB_RESULT_DOWN, "connection closed");
}

static const struct server_query_ops lock_ops = {
    .on_row = lock_row, .on_error = on_error_keep, .on_done = lock_done};

static void setup_done(struct server *sv, void *arg, enum server_query_status st)
{
    struct job *j = arg;
    if (st == SERVER_QUERY_GONE)
        return;
    if (st != SERVER_QUERY_OK) {
        run_end(j, JOB_RESULT_FAILED, j->error);
        return;
    }
    char key[24];
    key_param(j, key, sizeof(key));
    const char *params[] = {key};
    j->got_lock = false;
    if (!server_query(sv, LOCK_SQL, 1, params, &lock_ops, j))
        run_end(j, JOB_RESULT_DOWN, "connection closed");
}

static const struct server_query_ops setup_ops = {.on_error = on_error_keep, .on_done = setup_done};

/* ---- the connection ------------------------------------------------------------ */

static void job_ready(struct server *sv)
{
    struct job *j = job_of(sv);
    if (!j) {
        server_close(sv, "job connection not needed");
        return;
    }
    j->phase = JOB_LOCKING;
    j->pending_result = JOB_RESULT_NONE;
    /* The name and the instance are letters, digits and ".-_:" (checked at
     * load, and made so in jobs_run_start()): safe inside quotes. */
    /* timeout 0 leaves statement_timeout as the role or database sets it. */
    char sql[400];
    int n = snprintf(sql, sizeof(sql), "SET application_name = 'sluice job %s (%s)'", j->name,
                     g_jobs.instance);
    if (j->run_cj->timeout > 0 && n > 0 && (size_t)n < sizeof(sql))
        snprintf(sql + n, sizeof(sql) - (size_t)n, "; SET statement_timeout = %lld",
                 (long long)((j->run_cj->timeout + 999) / 1000));
    if (!server_query(sv, sql, 0, NULL, &setup_ops, j))
        run_end(j, JOB_RESULT_DOWN, "connection closed");
}

static void job_data(struct server *sv)
{
    char why[300];
    if (server_query_read(sv, why, sizeof(why)) == SERVER_READ_BAD)
        server_close(sv, why);
}

static void job_closed(struct server *sv, struct client *c, const char *why)
{
    struct job *j = job_of(sv);
    if (!j)
        return;
    j->sv = NULL;
    if (j->phase >= JOB_HOLDING) { /* the command is over; the lock goes with the connection */
        run_end(j, j->pending_result, j->error);
        return;
    }
    char msg[300];
    snprintf(msg, sizeof(msg), "%s: %s",
             j->phase == JOB_CONNECTING ? "could not connect to the primary" : "connection lost",
             why ? why : "closed");
    run_end(j, JOB_RESULT_DOWN, msg);
}

static const struct server_holder_ops job_holder = {
    .on_ready = job_ready,
    .on_data = job_data,
    .on_closed = job_closed,
};

static void instance_name(void)
{
    if (g_jobs.instance[0])
        return;
    char host[64] = "";
    if (gethostname(host, sizeof(host) - 1) != 0)
        snprintf(host, sizeof(host), "localhost");
    for (char *p = host; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '.' || *p == '-' || *p == '_'))
            *p = '_';
    snprintf(g_jobs.instance, sizeof(g_jobs.instance), "%s:%d", host, (int)getpid());
}

void jobs_run_start(struct job *j, unsigned trigger)
{
    instance_name();
    const struct config *cfg = g_jobs.cfg;
    const struct config_job *cj = j->cj;
    j->run_cfg = config_ref(g_jobs.cfg);
    j->run_cj = cj;
    j->trigger = trigger;
    j->run_mono = jobs_mono_usec();
    j->last_start = now_wall_usec();
    j->pending_result = JOB_RESULT_NONE;
    j->phase = JOB_CONNECTING;
    log_info("job %s: run (%s)", j->name, trigger_str(trigger));
    const struct config_database *cd = config_find_database(cfg, cj->database);
    struct database *db = cd ? pool_find_database(cj->database) : NULL;
    if (!db || !cd->user[0] || db->disabled) {
        run_end(j, JOB_RESULT_DOWN,
                !db || !cd->user[0] ? "database unknown, or its entry has no user="
                                    : "database disabled (DISABLE)");
        return;
    }
    struct pool *p = pool_get(db, cd->user);
    struct server *sv = pool_connect_server(p, jobs_worker(), &job_holder);
    if (j->phase != JOB_CONNECTING)
        return; /* ended already (closed at once) */
    if (!sv) {
        run_end(j, JOB_RESULT_DOWN, "could not connect to the primary");
        return;
    }
    j->sv = sv;
}

void jobs_run_check(struct job *j, int64_t wall, int64_t mono)
{
    if (j->phase == JOB_HOLDING &&
        (wall >= j->hold_until || j->removed || g_pooler.shutting_down)) {
        unlock(j);
        return;
    }
    int64_t timeout = j->run_cj ? j->run_cj->timeout : 0;
    if (j->phase == JOB_RUNNING && timeout > 0 &&
        mono - j->cmd_mono > timeout + JOBS_DEADLINE_SLACK_USEC) {
        j->runs++;
        run_end(j, JOB_RESULT_TIMEOUT, "no answer within the timeout: connection closed");
    }
}

void jobs_run_abort(struct job *j, const char *why)
{
    if (j->phase >= JOB_HOLDING) /* the command is over: its result stands */
        run_end(j, j->pending_result, j->error);
    else if (j->phase != JOB_IDLE)
        run_end(j, JOB_RESULT_DOWN, why);
}
