/* cache_redis_worker.c - the Redis tier's per-worker glue
 * (cache_redis_worker.h). Each slot of g_conns is created at start, before
 * the loops run, and afterwards touched by its worker's thread only. */
#include "cache_redis_worker.h"

#include <stdlib.h>

#include "log.h"
#include "worker.h"

static struct cache_redis *g_redis;
static struct cache_redis_conn **g_conns;
static int g_n;

bool cache_redis_start(const struct cache_redis_addr *addr, const struct cache_redis_opts *opts,
                       struct worker *workers, int n_workers, char *err, size_t errlen)
{
    if (g_redis || n_workers < 1) {
        log_format(err, errlen, "redis cache: already started or no worker");
        return false;
    }
    g_conns = calloc((size_t)n_workers, sizeof(*g_conns));
    if (!g_conns) {
        log_format(err, errlen, "out of memory");
        return false;
    }
    g_redis = cache_redis_new(addr, opts, workers[0].loop, err, errlen);
    if (!g_redis) {
        free(g_conns);
        g_conns = NULL;
        return false;
    }
    g_n = n_workers;
    g_conns[0] = cache_redis_home(g_redis);
    for (int i = 1; i < n_workers; i++) {
        g_conns[i] = cache_redis_conn_new(g_redis, workers[i].loop);
        if (!g_conns[i]) {
            log_format(err, errlen, "out of memory");
            cache_redis_stop();
            return false;
        }
    }
    return true;
}

void cache_redis_stop(void)
{
    if (!g_redis)
        return;
    for (int i = 1; i < g_n; i++)
        cache_redis_conn_free(g_conns[i]);
    cache_redis_free(g_redis);
    free(g_conns);
    g_redis = NULL;
    g_conns = NULL;
    g_n = 0;
}

struct cache_redis *cache_redis_global(void)
{
    return g_redis;
}

struct cache_redis_conn *cache_redis_worker(const struct worker *w)
{
    if (!g_redis || w->id < 0 || w->id >= g_n)
        return NULL;
    return g_conns[w->id];
}
