/* metrics.h - the Prometheus endpoint (metrics_listen) and the per-worker
 * observations only it reports: latency histograms and event-loop lag.
 *
 * The endpoint is a small HTTP/1.x responder on worker 0's loop (see
 * docs/design.md for why not libmicrohttpd). Values are read from the same
 * live structures, with the same helpers, as SHOW POOLS and SHOW STATS, so
 * a scrape and the console agree. docs/monitoring.md lists every metric. */
#ifndef SLUICE_METRICS_H
#define SLUICE_METRICS_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "stats.h"

struct worker;

/* Starts the endpoint on w's loop at cfg->metrics_listen ("host:port",
 * "[v6]:port" or ":port" for every address), and the lag timers of the
 * n workers. Returns true without doing anything when metrics_listen is
 * empty; false with err filled if the address is bad or cannot be bound. */
bool metrics_start(struct worker *w, struct worker *workers, int n, char *err, size_t errlen);
/* Closes the endpoint and its connections and stops the lag timers. Safe
 * when metrics_start did nothing. */
void metrics_stop(void);

/* ---- pure parts, exposed for tests/unit/test_metrics.c and the fuzzer --- */

/* Longest request head accepted; a longer one gets 431 and a close, so a
 * client can make sluice hold at most this much for it. */
#define METRICS_MAX_REQUEST 8192

enum metrics_parse {
    METRICS_PARSE_INCOMPLETE = 0, /* no end of head yet: read more */
    METRICS_PARSE_OK,             /* a complete, well-formed request head */
    METRICS_PARSE_BAD,            /* malformed: 400 */
    METRICS_PARSE_TOO_LARGE,      /* head longer than METRICS_MAX_REQUEST: 431 */
    METRICS_PARSE_VERSION,        /* not HTTP/1.0 or 1.1: 505 */
};

struct metrics_request {
    const char *method; /* points into the parsed buffer, not terminated */
    size_t method_len;
    const char *path; /* the path without query string */
    size_t path_len;
    int minor; /* HTTP/1.minor */
};

/* Parses the request head in buf[0..len). Only the request line is
 * interpreted; header lines must be well-formed but are otherwise ignored
 * (a GET has no body worth reading). */
enum metrics_parse metrics_parse_request(const char *buf, size_t len, struct metrics_request *req);

/* The HTTP status for a parsed request: 200 for GET/HEAD /metrics and /
 * (the status page, metrics_page.h), 404 for another path, 405 for another
 * method. */
int metrics_route(const struct metrics_request *req);
/* Whether req asks for the status page ("/") rather than the exposition. */
bool metrics_route_is_page(const struct metrics_request *req);

/* A growable text buffer; on allocation failure it keeps what it has and
 * sets oom (the scrape then gets 500). */
struct metrics_buf {
    char *p;
    size_t len, cap;
    bool oom;
};
void metrics_buf_printf(struct metrics_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Appends s as a label value escaped per the text format (\\, \", \n). */
void metrics_buf_label(struct metrics_buf *b, const char *s);
/* The "# HELP" and "# TYPE" lines of a family. */
void metrics_buf_family(struct metrics_buf *b, const char *name, const char *type,
                        const char *help);
/* The result cache's families (metrics_cache.c); nothing with cache = off. */
void metrics_render_cache(struct metrics_buf *b);
/* Appends s[0..n) as it is. */
void metrics_buf_append(struct metrics_buf *b, const char *s, size_t n);
void metrics_buf_free(struct metrics_buf *b);

/* Appends histogram h as name_bucket{le=...}, name_sum (seconds) and
 * name_count samples, cumulative; the # HELP/# TYPE lines are the
 * caller's. */
void metrics_render_hist(struct metrics_buf *b, const char *name, const struct stats_hist *h);

/* Appends the whole exposition (every metric) for the live process. */
void metrics_render(struct metrics_buf *b);

#endif
