/* insights.h - workload insights: per-fingerprint statistics of every
 * request, an observer of the request queue.
 *
 * A statement's libpg_query fingerprint is found once per shape of its
 * text (sql_shape.h) and per worker; a prepared statement's is kept per
 * client by name, so a Bind finds it without its text. Each request of a
 * known fingerprint is recorded at its end into its worker's store
 * (insights_store.h): time, rows, error, where it ran. Answers of the
 * result cache are recorded by the cache (insights_cache_hit()). Readers
 * merge the workers' stores. With insights = off at start nothing is
 * registered and requests cost nothing more; turned off by a reload,
 * nothing is recorded (turning it on again needs no restart then). */
#ifndef SLUICE_INSIGHTS_H
#define SLUICE_INSIGHTS_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "conn.h"
#include "insights_store.h"

/* At start, after the workers are made: the stores and the observer.
 * false (err) on no memory. */
bool insights_init(const struct config *cfg, char *err, size_t errlen);
/* A reload: insights on or off (the stores' sizes are fixed at start). */
void insights_apply_config(const struct config *cfg);
/* Whether requests are being recorded. */
bool insights_on(void);

/* The result cache answered c's statement sql[0..len) (a Query's text, or
 * a prepared statement's). shape: the text's sql_shape() if the caller
 * kept it from an earlier hit, else 0; returns the one used (0 when
 * nothing was recorded), for the caller to keep. */
uint64_t insights_cache_hit(struct client *c, const char *sql, size_t len, uint64_t shape);

/* Drops every figure (INSIGHTS RESET). */
void insights_reset(void);

/* Every fingerprint's figures, merged over the workers. */
struct insights_row {
    struct insights_stat st;
    char *text;                     /* normalized: constants are $n */
    struct insights_sample *sample; /* one real execution, for the advisor only; NULL if none */
};
/* The rows (*out, to free with insights_rows_free()), how many. */
size_t insights_collect(struct insights_row **out);
void insights_rows_free(struct insights_row *rows, size_t n);

/* Orders of SHOW QUERIES and the others. */
enum insights_order {
    INSIGHTS_BY_TOTAL = 0,
    INSIGHTS_BY_CALLS,
    INSIGHTS_BY_MEAN,
    INSIGHTS_BY_P99,
    INSIGHTS_BY_ERRORS,
};
/* Parses an order's name (total_time, calls, mean, p99, errors); false
 * when it is none of them. */
bool insights_order_parse(const char *name, enum insights_order *out);
/* Sorts rows, largest first. */
void insights_sort(struct insights_row *rows, size_t n, enum insights_order order);

/* Fingerprints held now, over the workers, and their bytes. */
void insights_usage(size_t *entries, size_t *bytes);

#endif
