/* request_stats.c - per-request statistics (request_stats.h). */
#include "request_stats.h"

#include "pool.h"
#include "request.h"
#include "worker.h"

/* A request of c's ended on sv: one query, timed from when its first
 * message went to the server; with the session idle again ('I'), one
 * transaction, timed from its first request. */
static void stats_on_request_end(struct client *c, struct server *sv, const struct request *r,
                                 char status)
{
    struct worker *w = c->s.worker;
    int64_t now = worker_now(w);
    uint64_t qt = r->sent && now > r->start ? (uint64_t)(now - r->start) : 0;
    w->stats.query_count++;
    w->stats.query_time += qt;
    stats_hist_observe(&w->hist_query, (int64_t)qt);
    POOL_STAT_ADD(sv->pool->query_count, 1);
    POOL_STAT_ADD(sv->pool->query_time, qt);
    c->request_time = now;
    if (status != 'I')
        return;
    int64_t xs = request_xact_start(c);
    uint64_t xt = xs && now > xs ? (uint64_t)(now - xs) : 0;
    w->stats.xact_count++;
    w->stats.xact_time += xt;
    POOL_STAT_ADD(sv->pool->xact_count, 1);
    POOL_STAT_ADD(sv->pool->xact_time, xt);
}

static const struct request_observer stats_observer = {
    .name = "stats",
    .on_request_end = stats_on_request_end,
};

void request_stats_init(void)
{
    request_observe(&stats_observer);
}
