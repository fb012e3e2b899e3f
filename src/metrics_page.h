/* metrics_page.h - the status page metrics_listen serves at "/": pools and
 * their waiting clients, replicas and their lag, the result cache's hit
 * ratio, refresh jobs, the heaviest queries with their latency percentiles
 * as bars, and index advice, on one HTML page that reloads itself
 * (docs/insights.md, "The page").
 *
 * Rendered server-side from the views the console and /metrics read, so
 * the three agree; the page needs nothing but itself (inline CSS, no
 * script, no other resource), so it works offline. */
#ifndef SLUICE_METRICS_PAGE_H
#define SLUICE_METRICS_PAGE_H

#include <stdint.h>

#include "metrics.h"

/* Seconds between the page's reloads (its <meta http-equiv="refresh">). */
#define METRICS_PAGE_REFRESH 5

/* Appends the whole page for the live process to b. Called as
 * metrics_render() is: on the metrics loop with the world lock held. */
void metrics_page_render(struct metrics_buf *b);

/* ---- pure parts, exposed for tests/unit/test_metrics_page.c ------------ */

/* Appends s with &, <, >, " and ' as character references, and control
 * characters other than tab, LF and CR as U+FFFD: safe in element content
 * and in quoted attribute values. */
void metrics_page_escape(struct metrics_buf *b, const char *s);

/* A duration for people: "0", "850 µs", "12.34 ms", "3.20 s". */
void metrics_page_duration(char *out, size_t len, uint64_t usec);

/* A size for people: "512 B", "1.5 kB", "20.0 MB" (powers of 1024, as
 * cache_max_memory's suffixes). */
void metrics_page_bytes(char *out, size_t len, uint64_t bytes);

#endif
