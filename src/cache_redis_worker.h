/* cache_redis_worker.h - the Redis tier (cache_redis.h) for sluice's
 * workers: one struct cache_redis for the process, its home on worker 0's
 * loop (pub/sub, delivery of invalidations), and one connection per
 * worker, on that worker's loop. The request path asks
 * cache_redis_worker(w) for w's connection and calls cache_redis_get() /
 * cache_redis_put() with it; invalidations and state go through
 * cache_redis_global(). */
#ifndef SLUICE_CACHE_REDIS_WORKER_H
#define SLUICE_CACHE_REDIS_WORKER_H

#include <stdbool.h>
#include <stddef.h>

#include "cache_redis.h"

struct worker;

/* Starts the tier for workers[0..n) (main, before any loop runs: it
 * resolves the host, blocking). Returns false with err on failure (nothing
 * is left started). Not reloadable: a changed URL needs a restart. */
bool cache_redis_start(const struct cache_redis_addr *addr, const struct cache_redis_opts *opts,
                       struct worker *workers, int n_workers, char *err, size_t errlen);
/* Stops it: after worker_stop_threads() (no loop runs), on the main thread.
 * Pending gets are answered CACHE_REDIS_UNAVAILABLE from inside this call. */
void cache_redis_stop(void);
/* The process's tier, or NULL when not started (cache is not redis://). */
struct cache_redis *cache_redis_global(void);
/* w's connection (NULL when not started); used on w's thread only. */
struct cache_redis_conn *cache_redis_worker(const struct worker *w);

#endif
