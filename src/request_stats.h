/* request_stats.h - per-request statistics, an observer of the request
 * queue: each request counted and timed on its own (pipelined ones too),
 * for SHOW STATS, the periodic stats line and the query histogram of
 * /metrics. */
#ifndef SLUICE_REQUEST_STATS_H
#define SLUICE_REQUEST_STATS_H

/* Registers the observer (at start). */
void request_stats_init(void);

#endif
