/* worker.h - a thread with its own libev loop, listeners and clients.
 *
 * workers = 1 runs everything on the main thread's loop. */
#ifndef SLUICE_WORKER_H
#define SLUICE_WORKER_H

#include <ev.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "iobuf.h"
#include "list.h"
#include "metrics.h"
#include "stats.h"

#define WORKER_MAX_LISTENERS 8

struct worker {
    int id;
    struct ev_loop *loop;
    struct config *cfg; /* current config (a reference) */
    struct iobuf_cache bufs;
    ev_io listeners[WORKER_MAX_LISTENERS];
    int n_listeners;
    ev_timer janitor;         /* timeouts, min_pool_size, retries */
    struct list clients;      /* every client this worker accepted */
    struct list dead_clients; /* closed, freed at the end of the loop iteration */
    struct list dead_servers;
    ev_check reaper;
    int n_clients;
    struct stats stats;
    struct metrics_worker metrics; /* histograms and loop lag for metrics.c */
    pthread_t thread;
};

/* Sets up w on loop (not started). */
void worker_init(struct worker *w, int id, struct ev_loop *loop, struct config *cfg);
/* Opens the listeners named by cfg (listen_addr/port, unix socket) and starts
 * accepting. Returns false with err filled on failure. */
bool worker_listen(struct worker *w, char *err, size_t errlen);
/* Stops accepting (SIGINT / shutdown). */
void worker_stop_listening(struct worker *w);
/* Swaps in a new config (reload). */
void worker_set_config(struct worker *w, struct config *cfg);
void worker_destroy(struct worker *w);

/* Frees closed clients and servers once the current callbacks are done. */
void worker_schedule_reap(struct worker *w);

/* Monotonic microseconds, cached per loop iteration. */
int64_t worker_now(const struct worker *w);
/* Wall clock microseconds. */
int64_t now_wall_usec(void);

#endif
