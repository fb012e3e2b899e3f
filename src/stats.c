/* stats.c - counters and the periodic stats line. */
#include "stats.h"

#include <stdio.h>

void stats_add(struct stats *dst, const struct stats *src)
{
    dst->xact_count += src->xact_count;
    dst->query_count += src->query_count;
    dst->bytes_in += src->bytes_in;
    dst->bytes_out += src->bytes_out;
    dst->xact_time += src->xact_time;
    dst->query_time += src->query_time;
    dst->wait_time += src->wait_time;
    dst->wait_count += src->wait_count;
}

void stats_format_period(const struct stats *cur, const struct stats *prev, int64_t period_usec,
                         char *buf, size_t buflen)
{
    double secs = period_usec > 0 ? (double)period_usec / 1e6 : 1.0;
    uint64_t xacts = cur->xact_count - prev->xact_count;
    uint64_t queries = cur->query_count - prev->query_count;
    uint64_t waits = cur->wait_count - prev->wait_count;
    uint64_t avg_xact = xacts ? (cur->xact_time - prev->xact_time) / xacts : 0;
    uint64_t avg_query = queries ? (cur->query_time - prev->query_time) / queries : 0;
    uint64_t avg_wait = waits ? (cur->wait_time - prev->wait_time) / waits : 0;
    /* Same fields and order as PgBouncer's stats line, so log parsers work. */
    snprintf(buf, buflen,
             "stats: %.0f xacts/s, %.0f queries/s, in %.0f B/s, out %.0f B/s, "
             "xact %llu us, query %llu us, wait %llu us",
             (double)xacts / secs, (double)queries / secs,
             (double)(cur->bytes_in - prev->bytes_in) / secs,
             (double)(cur->bytes_out - prev->bytes_out) / secs, (unsigned long long)avg_xact,
             (unsigned long long)avg_query, (unsigned long long)avg_wait);
}

const int64_t stats_bucket_usec[STATS_BUCKETS] = {
    100,   250,    500,    1000,   2500,    5000,    10000,   25000,
    50000, 100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000,
};
