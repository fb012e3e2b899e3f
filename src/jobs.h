/* jobs.h - refresh jobs: SQL run on a schedule (cron) and after writes to
 * given tables (debounced), on the primary of the job's database, by one
 * sluice instance at a time.
 *
 * The [jobs] section (config.h: struct config_job) says what runs. Each
 * run opens a connection of its own to the primary (a held server, outside
 * the pools' limits, as the database entry's user), sets statement_timeout
 * to the job's timeout, takes pg_try_advisory_lock(key) with a key hashed
 * from the job's name (an instance that does not get it skips the run),
 * runs the command, unlocks and closes. A run of a job never overlaps
 * another of the same job: a run due meanwhile waits for it. Everything
 * runs on worker 0's loop; the writes bus (writes.h) may call in from any
 * thread. docs/jobs.md is the user's side. */
#ifndef SLUICE_JOBS_H
#define SLUICE_JOBS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct config_job;

/* How a job's last run ended. */
enum job_result {
    JOB_RESULT_NONE = 0, /* no run yet */
    JOB_RESULT_OK,       /* the command succeeded */
    JOB_RESULT_FAILED,   /* the command (or the session's SETs) failed: SQL error */
    JOB_RESULT_TIMEOUT,  /* statement_timeout (57014), or no answer in time */
    JOB_RESULT_SKIPPED,  /* another session (instance) holds the job's lock */
    JOB_RESULT_DOWN,     /* no connection to the primary, or it was lost */
};
const char *job_result_str(enum job_result r);

/* Subscribes to the writes bus and starts the scheduler's timer on worker
 * 0's loop (after the workers exist, before their threads run). */
void jobs_start(void);
/* Stops the timer and closes the jobs' connections (shutdown). */
void jobs_stop(void);

/* RUN JOB name (admin console, world lock held): the job runs as soon as
 * no run of it is going (still single-runner). False if there is no such
 * job. */
bool jobs_request_run(const char *name);

/* One job as SHOW JOBS and /metrics see it. Strings live until the next
 * jobs_each() callback returns. Times are wall-clock microseconds, 0 for
 * none. */
struct job_view {
    const char *name, *database, *schedule, *after_writes_to;
    const char *state;     /* idle, connecting, locking, running, holding, unlocking */
    bool waiting;          /* a run is due and waits for the current one */
    int64_t next_run;      /* next scheduled or debounced run; 0: none */
    int64_t last_start;    /* the last run's start */
    int64_t last_duration; /* its command's duration, microseconds */
    int64_t last_success;  /* the end of the last run that succeeded */
    enum job_result result;
    const char *error;       /* the last failure's message ("" when the last run was ok) */
    uint64_t runs;           /* runs of the command here (any result but skipped) */
    uint64_t failures;       /* failed, timeout, down */
    uint64_t skipped;        /* the lock was held elsewhere */
    const char *lock_holder; /* who holds the lock: this instance while it runs the job,
                              * else who held it at the last skip ("" unknown) */
};

/* Calls fn for every configured job, in config order (world lock held, or
 * on worker 0). */
void jobs_each(void (*fn)(const struct job_view *v, void *arg), void *arg);

/* ---- pure parts, for the unit tests -------------------------------------- */

/* after_writes_to's debounce: a run is due debounce after the last write
 * of a burst, and at most 10 x debounce after its first. */
struct job_debounce {
    bool pending;
    int64_t first, last; /* monotonic microseconds */
};
/* A write at now. */
void job_debounce_write(struct job_debounce *d, int64_t now);
/* When the run is due (monotonic usec), or -1 when no write waits. */
int64_t job_debounce_due(const struct job_debounce *d, int64_t debounce);
/* true (and the burst is consumed) if the run is due at now. */
bool job_debounce_take(struct job_debounce *d, int64_t now, int64_t debounce);

/* Whether a written relation (schema NULL: not known) is one of j's
 * after_writes_to tables. */
bool jobs_rel_matches(const struct config_job *j, const char *schema, const char *name);

/* The advisory lock key of a job name (FNV-1a 64 of "sluice.job." name). */
int64_t jobs_lock_key(const char *name);

#endif
