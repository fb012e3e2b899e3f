/* jobs_int.h - what the scheduler (jobs.c) and the runner (jobs_run.c)
 * share. Other modules use jobs.h. */
#ifndef SLUICE_JOBS_INT_H
#define SLUICE_JOBS_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "cron.h"
#include "jobs.h"

struct server;
struct worker;

/* The scheduler's period: debounce and cron times are met within it. */
#define JOBS_TICK_SEC 0.1
/* A scheduled run keeps its lock until this long after its occasion, so
 * that an instance whose clock or tick is a little late finds it taken
 * and skips that occasion instead of running it a second time. */
#define JOBS_LOCK_GRACE_USEC 10000000LL
/* A run whose command has not answered by its timeout plus this (a
 * server that does not answer at all) is ended by closing its connection. */
#define JOBS_DEADLINE_SLACK_USEC 5000000LL

/* Where a job's run is. */
enum job_phase {
    JOB_IDLE = 0,   /* no run */
    JOB_CONNECTING, /* its connection logs in */
    JOB_LOCKING,    /* SETs, then pg_try_advisory_lock */
    JOB_RUNNING,    /* the command */
    JOB_HOLDING,    /* done; the lock is kept until the occasion's grace ends */
    JOB_UNLOCKING,  /* pg_advisory_unlock */
};
const char *job_phase_str(enum job_phase p);

/* Why a run starts (bits). */
#define JOB_TRIGGER_SCHEDULE 1u
#define JOB_TRIGGER_WRITES   2u
#define JOB_TRIGGER_MANUAL   4u

struct job {
    struct job *next;
    char name[64];
    const struct config_job *cj; /* in g_jobs.cfg ([lock] for the writes callback) */
    struct config_job gone;      /* cj once removed: empty */
    bool removed;                /* left the config; freed when its run is over */
    int64_t key;                 /* advisory lock key */
    /* scheduling */
    int64_t next_cron;       /* wall usec of the next occasion; 0: none */
    int64_t occasion;        /* the occasion the current run is for */
    struct job_debounce deb; /* [lock] */
    bool requested;          /* [lock] RUN JOB */
    unsigned waiting;        /* due reasons waiting for the run going */
    /* the run going */
    enum job_phase phase;
    unsigned trigger;
    struct server *sv;
    struct config *run_cfg; /* the config the run started with (a reference) */
    const struct config_job *run_cj;
    int64_t run_mono;   /* monotonic start of the run */
    int64_t cmd_mono;   /* ... of its command */
    int64_t hold_until; /* JOB_HOLDING: wall usec */
    enum job_result pending_result;
    bool got_lock;
    /* what SHOW JOBS shows */
    int64_t last_start, last_duration, last_success;
    enum job_result result;
    char error[256];
    char lock_holder[128];
    uint64_t runs, failures, skipped;
};

struct jobs_state {
    pthread_mutex_t lock; /* the list's links, and each job's [lock] fields */
    struct job *list;
    struct config *cfg; /* the config the jobs follow (a reference) */
    struct cron_tz tz;  /* job_timezone */
    char instance[96];  /* this process: "host:pid" */
};
extern struct jobs_state g_jobs;

int64_t jobs_mono_usec(void);
struct worker *jobs_worker(void);
/* Tells the writes bus what a run of j (cj) changed. */
void jobs_publish(struct job *j, const struct config_job *cj);

/* jobs_run.c */
/* Starts a run of idle j for the reasons in trigger. */
void jobs_run_start(struct job *j, unsigned trigger);
/* A tick while j runs: the lock's grace, the run's deadline. */
void jobs_run_check(struct job *j, int64_t wall, int64_t mono);
/* Ends j's run at once, closing its connection (shutdown). */
void jobs_run_abort(struct job *j, const char *why);

#endif
