/* stats.h - counters kept per worker (and per pool), summed when read. */
#ifndef SLUICE_STATS_H
#define SLUICE_STATS_H

#include <stddef.h>
#include <stdint.h>

struct stats {
    uint64_t xact_count;
    uint64_t query_count;
    uint64_t bytes_in;   /* from clients */
    uint64_t bytes_out;  /* to clients */
    uint64_t xact_time;  /* usec */
    uint64_t query_time; /* usec */
    uint64_t wait_time;  /* usec clients spent waiting for a server */
    uint64_t wait_count;
};

void stats_add(struct stats *dst, const struct stats *src);

/* Upper bounds of the latency histogram buckets, in microseconds (the +Inf
 * bucket is implicit). 100 us .. 10 s covers a pooled OLTP query up to a
 * stuck wait for a server. */
#define STATS_BUCKETS 16
extern const int64_t stats_bucket_usec[STATS_BUCKETS];

/* A latency histogram (per worker; /metrics sums them): per-bucket (not
 * cumulative) counts, so an observation touches one slot; the cumulative
 * sums Prometheus wants are made when a scrape reads it. Fixed size:
 * observing never allocates. */
struct stats_hist {
    uint64_t bucket[STATS_BUCKETS + 1]; /* last: above every bound (+Inf) */
    uint64_t count;
    uint64_t sum_usec;
};

/* Records one observation of usec (negative counts as 0) in h. Inline and
 * branch-light: it runs once per query on the forwarding path. */
static inline void stats_hist_observe(struct stats_hist *h, int64_t usec)
{
    if (usec < 0)
        usec = 0;
    int i = 0;
    while (i < STATS_BUCKETS && usec > stats_bucket_usec[i])
        i++;
    h->bucket[i]++;
    h->count++;
    h->sum_usec += (uint64_t)usec;
}
/* Writes the PgBouncer-style periodic line for the difference cur - prev
 * over period_usec into buf. */
void stats_format_period(const struct stats *cur, const struct stats *prev, int64_t period_usec,
                         char *buf, size_t buflen);

#endif
