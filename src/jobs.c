/* jobs.c - refresh jobs: the scheduler (jobs.h). The runner, one run on
 * its own connection, is jobs_run.c.
 *
 * A tick every JOBS_TICK_SEC on worker 0 follows the config (a reload
 * adds, changes and removes jobs), and starts the runs that are due: a
 * cron occasion passed, a debounced burst of writes ended, or RUN JOB
 * asked. Due reasons that meet while a run of the job is going wait for
 * its end and make one run. The writes bus calls jobs_on_writes() on the
 * writer's thread: it only notes the write under g_jobs.lock. */
#include "jobs.h"

#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "classify_rw.h"
#include "config.h"
#include "jobs_int.h"
#include "log.h"
#include "pool.h"
#include "worker.h"
#include "writes.h"

struct jobs_state g_jobs = {.lock = PTHREAD_MUTEX_INITIALIZER};

static ev_timer g_tick;
static bool g_running;

/* ---- pure parts ------------------------------------------------------------ */

void job_debounce_write(struct job_debounce *d, int64_t now)
{
    if (!d->pending) {
        d->pending = true;
        d->first = now;
    }
    d->last = now;
}

int64_t job_debounce_due(const struct job_debounce *d, int64_t debounce)
{
    if (!d->pending)
        return -1;
    int64_t quiet = d->last + debounce, cap = d->first + 10 * debounce;
    return quiet < cap ? quiet : cap;
}

bool job_debounce_take(struct job_debounce *d, int64_t now, int64_t debounce)
{
    int64_t due = job_debounce_due(d, debounce);
    if (due < 0 || now < due)
        return false;
    d->pending = false;
    return true;
}

bool jobs_rel_matches(const struct config_job *j, const char *schema, const char *name)
{
    for (int i = 0; i < j->n_after; i++) {
        const struct config_job_rel *r = &j->after[i];
        if (strcmp(r->name, name) == 0 && (!r->schema || !schema || strcmp(r->schema, schema) == 0))
            return true;
    }
    return false;
}

int64_t jobs_lock_key(const char *name)
{
    uint64_t h = 14695981039346656037ull;
    for (const char *s = "sluice.job."; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ull;
    for (const char *s = name; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return (int64_t)h;
}

const char *job_result_str(enum job_result r)
{
    static const char *const names[] = {"", "ok", "failed", "timeout", "skipped", "down"};
    return (unsigned)r < sizeof(names) / sizeof(names[0]) ? names[r] : "?";
}

const char *job_phase_str(enum job_phase p)
{
    static const char *const names[] = {"idle",    "connecting", "locking",
                                        "running", "holding",    "unlocking"};
    return (unsigned)p < sizeof(names) / sizeof(names[0]) ? names[p] : "?";
}

int64_t jobs_mono_usec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

struct worker *jobs_worker(void)
{
    return &g_pooler.workers[0];
}

/* ---- the writes bus ---------------------------------------------------------- */

/* The job whose own publish is under way (worker 0 only): its own refresh
 * does not trigger it again. */
static _Thread_local struct job *g_publishing;

static void jobs_on_writes(const struct writes_event *ev, void *arg)
{
    (void)arg;
    /* A job's command whose relations are not known says "all": that would
     * trigger every job of the database after every such run, and jobs
     * triggering each other would never stop. */
    if (ev->source == WRITES_JOB && ev->all)
        return;
    int64_t now = jobs_mono_usec();
    pthread_mutex_lock(&g_jobs.lock);
    for (struct job *j = g_jobs.list; j; j = j->next) {
        if (j->removed || !j->cj->n_after || j == g_publishing || !ev->db ||
            strcmp(ev->db->name, j->cj->database) != 0)
            continue;
        bool hit = ev->all;
        for (int i = 0; !hit && i < ev->n; i++)
            hit = ev->rels[i].name && jobs_rel_matches(j->cj, ev->rels[i].schema, ev->rels[i].name);
        if (hit)
            job_debounce_write(&j->deb, now);
    }
    pthread_mutex_unlock(&g_jobs.lock);
}

/* What a successful run of j changed, told to the bus (the result cache
 * drops answers over it; jobs after_writes_to it run). */
void jobs_publish(struct job *j, const struct config_job *cj)
{
    struct database *db = pool_find_database(cj->database);
    if (!db)
        return;
    const struct classify_rw_result *r = classify_rw_cached(cj->command, strlen(cj->command));
    struct writes_rel rels[CLASSIFY_RW_MAX_RELS];
    char names[CLASSIFY_RW_MAX_RELS][2][128];
    int n = 0;
    bool all = r->parse_error || r->rels_truncated;
    for (int i = 0; !all && i < r->n_rels; i++) {
        if (!r->rels[i].write)
            continue;
        const char *full = r->rels[i].name, *dot = strchr(full, '.');
        size_t sn = dot ? (size_t)(dot - full) : 0;
        if (sn >= sizeof(names[0][0]) || strlen(full) - sn >= sizeof(names[0][1])) {
            all = true;
            break;
        }
        memcpy(names[n][0], full, sn);
        names[n][0][sn] = '\0';
        snprintf(names[n][1], sizeof(names[n][1]), "%s", dot ? dot + 1 : full);
        rels[n].schema = dot ? names[n][0] : NULL;
        rels[n].name = names[n][1];
        n++;
    }
    if (n == 0)
        all = true;
    struct writes_event ev = {
        .db = db, .source = WRITES_JOB, .rels = all ? NULL : rels, .n = all ? 0 : n, .all = all};
    g_publishing = j;
    writes_committed(&ev);
    g_publishing = NULL;
}

/* ---- following the config ---------------------------------------------------- */

static struct job *job_find(const char *name)
{
    for (struct job *j = g_jobs.list; j; j = j->next)
        if (!j->removed && strcmp(j->name, name) == 0)
            return j;
    return NULL;
}

/* The next cron occasion of j after now (wall usec), 0 if none. */
static int64_t next_occasion(const struct config_job *cj, int64_t now)
{
    if (!cj->schedule[0])
        return 0;
    int64_t t = cron_next(&cj->cron, &g_jobs.tz, now / 1000000);
    return t < 0 ? 0 : t * 1000000;
}

/* The config changed: jobs are added, changed (a new schedule or zone
 * counts from now), and removed (a run going ends first). */
static void jobs_sync(struct config *cfg, int64_t wall)
{
    bool tz_changed = strcmp(g_jobs.tz.name, cfg->job_timezone[0] ? cfg->job_timezone : "UTC");
    if (tz_changed || !g_jobs.cfg) {
        char why[300];
        cron_tz_free(&g_jobs.tz);
        if (!cron_tz_load(&g_jobs.tz, cfg->job_timezone, NULL, why, sizeof(why)))
            log_error("jobs: %s: schedules are read in UTC", why); /* checked at load */
    }
    pthread_mutex_lock(&g_jobs.lock);
    for (struct job *j = g_jobs.list; j; j = j->next) {
        if (j->removed)
            continue;
        const struct config_job *cj = config_find_job(cfg, j->name);
        if (!cj) {
            log_info("job %s: removed from the config", j->name);
            j->removed = true;
            j->cj = &j->gone; /* the old config goes below */
            continue;
        }
        if (tz_changed || strcmp(cj->schedule, j->cj->schedule) != 0)
            j->next_cron = next_occasion(cj, wall);
        if (strcmp(cj->command, j->cj->command) != 0 || strcmp(cj->database, j->cj->database))
            log_info("job %s: changed (the next run uses it)", j->name);
        j->cj = cj;
    }
    for (int i = 0; i < cfg->n_jobs; i++) {
        const struct config_job *cj = &cfg->jobs[i];
        if (job_find(cj->name))
            continue;
        struct job *j = calloc(1, sizeof(*j));
        if (!j)
            abort();
        snprintf(j->name, sizeof(j->name), "%s", cj->name);
        j->cj = cj;
        j->key = jobs_lock_key(cj->name);
        j->next_cron = next_occasion(cj, wall);
        j->gone.name = j->gone.database = j->gone.command = j->gone.schedule = "";
        struct job **tail = &g_jobs.list;
        while (*tail)
            tail = &(*tail)->next;
        *tail = j;
        log_info("job %s: database %s%s%s%s%s", j->name, cj->database,
                 cj->schedule[0] ? ", schedule " : "", cj->schedule,
                 cj->n_after ? ", after writes to " : "", cj->n_after ? cj->after[0].name : "");
    }
    pthread_mutex_unlock(&g_jobs.lock);
    struct config *prev = g_jobs.cfg;
    g_jobs.cfg = config_ref(cfg);
    if (prev)
        config_unref(prev);
}

/* Frees the removed jobs whose run is over. */
static void jobs_reap(void)
{
    pthread_mutex_lock(&g_jobs.lock);
    for (struct job **pj = &g_jobs.list; *pj;) {
        struct job *j = *pj;
        if (j->removed && j->phase == JOB_IDLE) {
            *pj = j->next;
            free(j);
        } else {
            pj = &j->next;
        }
    }
    pthread_mutex_unlock(&g_jobs.lock);
}

/* ---- the tick ------------------------------------------------------------------ */

/* PAUSE (of every database, or of the job's) holds due runs until RESUME,
 * as it holds clients: a pause is for maintenance of the servers. */
static bool jobs_paused(const struct config_job *cj)
{
    if (g_pooler.paused)
        return true;
    struct database *db = pool_find_database(cj->database);
    return db && db->paused;
}

static void tick_job(struct job *j, int64_t wall, int64_t mono)
{
    unsigned due = 0;
    if (j->next_cron && wall >= j->next_cron) {
        due |= JOB_TRIGGER_SCHEDULE;
        j->occasion = j->next_cron;
        j->next_cron = next_occasion(j->cj, wall);
    }
    pthread_mutex_lock(&g_jobs.lock);
    if (job_debounce_take(&j->deb, mono, j->cj->debounce))
        due |= JOB_TRIGGER_WRITES;
    if (j->requested) {
        due |= JOB_TRIGGER_MANUAL;
        j->requested = false;
    }
    pthread_mutex_unlock(&g_jobs.lock);
    j->waiting |= due;
    if (j->phase != JOB_IDLE) {
        jobs_run_check(j, wall, mono);
        return;
    }
    if (j->waiting && !g_pooler.shutting_down && !jobs_paused(j->cj)) {
        unsigned why = j->waiting;
        j->waiting = 0;
        jobs_run_start(j, why);
    }
}

/* Follows a config swapped since the last look (a reload, an admin SET):
 * from the tick, and before SHOW JOBS or RUN JOB, which may come right
 * after a RELOAD (world lock held: worker 0 is parked). */
static void jobs_follow_config(int64_t wall)
{
    if (g_pooler.cfg && g_pooler.cfg != g_jobs.cfg)
        jobs_sync(g_pooler.cfg, wall);
}

static void tick_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)t;
    (void)revents;
    int64_t wall = now_wall_usec(), mono = jobs_mono_usec();
    jobs_follow_config(wall);
    for (struct job *j = g_jobs.list; j; j = j->next)
        if (!j->removed)
            tick_job(j, wall, mono);
        else if (j->phase != JOB_IDLE)
            jobs_run_check(j, wall, mono);
    jobs_reap();
}

void jobs_start(void)
{
    if (!writes_subscribe(jobs_on_writes, NULL))
        log_error("jobs: the writes bus is full: after_writes_to will not run jobs");
    struct ev_loop *loop = jobs_worker()->loop;
    ev_timer_init(&g_tick, tick_cb, JOBS_TICK_SEC, JOBS_TICK_SEC);
    ev_timer_start(loop, &g_tick);
    ev_unref(loop); /* does not keep the loop running */
    g_running = true;
    jobs_follow_config(now_wall_usec());
}

void jobs_stop(void)
{
    if (g_running) {
        ev_ref(jobs_worker()->loop);
        ev_timer_stop(jobs_worker()->loop, &g_tick);
        g_running = false;
    }
    for (struct job *j = g_jobs.list; j; j = j->next)
        jobs_run_abort(j, "shutdown");
    pthread_mutex_lock(&g_jobs.lock);
    while (g_jobs.list) {
        struct job *j = g_jobs.list;
        g_jobs.list = j->next;
        free(j);
    }
    pthread_mutex_unlock(&g_jobs.lock);
    if (g_jobs.cfg)
        config_unref(g_jobs.cfg);
    g_jobs.cfg = NULL;
    cron_tz_free(&g_jobs.tz);
}

bool jobs_request_run(const char *name)
{
    bool found = false;
    jobs_follow_config(now_wall_usec());
    pthread_mutex_lock(&g_jobs.lock);
    for (struct job *j = g_jobs.list; j; j = j->next) {
        if (!j->removed && strcmp(j->name, name) == 0) {
            j->requested = found = true;
            break;
        }
    }
    pthread_mutex_unlock(&g_jobs.lock);
    if (found)
        log_info("job %s: run asked for (RUN JOB)", name);
    return found;
}

/* ---- SHOW JOBS, /metrics ------------------------------------------------------ */

static void after_text(const struct config_job *cj, char *buf, size_t len)
{
    size_t n = 0;
    buf[0] = '\0';
    for (int i = 0; i < cj->n_after && n < len; i++)
        n += (size_t)snprintf(buf + n, len - n, "%s%s%s%s", i ? "," : "",
                              cj->after[i].schema ? cj->after[i].schema : "",
                              cj->after[i].schema ? "." : "", cj->after[i].name);
}

void jobs_each(void (*fn)(const struct job_view *v, void *arg), void *arg)
{
    int64_t wall = now_wall_usec(), mono = jobs_mono_usec();
    char after[512];
    jobs_follow_config(wall);
    for (struct job *j = g_jobs.list; j; j = j->next) {
        if (j->removed)
            continue;
        const struct config_job *cj = j->cj;
        pthread_mutex_lock(&g_jobs.lock);
        int64_t deb = job_debounce_due(&j->deb, cj->debounce);
        bool asked = j->requested;
        pthread_mutex_unlock(&g_jobs.lock);
        int64_t next = j->next_cron;
        if (deb >= 0 && (!next || wall + (deb - mono) < next))
            next = wall + (deb > mono ? deb - mono : 0);
        if (asked || j->waiting)
            next = wall;
        after_text(cj, after, sizeof(after));
        struct job_view v = {
            .name = j->name,
            .database = cj->database,
            .schedule = cj->schedule,
            .after_writes_to = after,
            .state = job_phase_str(j->phase),
            .waiting = j->waiting || asked,
            .next_run = next,
            .last_start = j->last_start,
            .last_duration = j->last_duration,
            .last_success = j->last_success,
            .result = j->result,
            .error = j->error,
            .runs = j->runs,
            .failures = j->failures,
            .skipped = j->skipped,
            .lock_holder = j->phase >= JOB_RUNNING ? g_jobs.instance : j->lock_holder,
        };
        fn(&v, arg);
    }
}
