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
/* Writes the PgBouncer-style periodic line for the difference cur - prev
 * over period_usec into buf. */
void stats_format_period(const struct stats *cur, const struct stats *prev, int64_t period_usec,
                         char *buf, size_t buflen);

#endif
