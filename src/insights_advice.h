/* insights_advice.h - index advice the planner has verified (issue 15).
 *
 * Every advice_interval, on worker 0's loop, the advisor takes the read
 * fingerprints that weighed most (total time within advice_window) and
 * have a sample (insights_store.h: one real execution, parameters
 * included), and for each database and login user they ran as, on one
 * connection of its own to the primary (a held server, through the
 * internal query API; read-only, with a statement timeout):
 *   - looks up their tables' columns and the columns already leading an
 *     index (pg_catalog), and makes the candidates (advice_cand.h);
 *   - EXPLAINs (FORMAT JSON, no ANALYZE) each sample, with its
 *     parameters bound, for the planner's cost (explain_cost.h);
 *   - with the hypopg extension: for each candidate, creates it as a
 *     hypothetical index, EXPLAINs again the samples on its table, notes
 *     its estimated size, and resets hypopg;
 * then closes the connection. An index is advised when it is the best
 * candidate of some fingerprint and lowers its cost by advice_min_gain
 * percent or more. Without hypopg the single-column candidates are listed,
 * unverified, and say so. Nothing is ever created but hypothetical
 * indexes, which live in that session only. */
#ifndef SLUICE_INSIGHTS_ADVICE_H
#define SLUICE_INSIGHTS_ADVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Starts the advisor's timer on worker 0's loop (after the workers exist). */
void insights_advice_start(void);
/* Stops it and closes its connection (shutdown). */
void insights_advice_stop(void);

/* One index advised (the last complete run's). Strings are NUL-terminated
 * and valid during the callback only. */
struct insights_advice {
    const char *database;  /* where it was examined */
    const char *table;     /* schema.table, as SQL takes it */
    const char *columns;   /* "a" or "a, b", as SQL takes them */
    const char *statement; /* CREATE INDEX CONCURRENTLY ... */
    bool verified;         /* the planner priced it with a hypothetical index (hypopg) */
    double cost_before;    /* planner cost of the fingerprints it helps, summed; -1: unknown */
    double cost_after;     /* the same with the index; -1: not verified */
    int64_t size_bytes;    /* the index's estimated size; -1: not verified */
    int n_fingerprints;
    const uint64_t *fingerprints; /* the fingerprints it helps (SHOW QUERIES' ids) */
    const char *note;             /* "" or why it is not verified */
};
typedef void (*insights_advice_fn)(void *arg, const struct insights_advice *a);
/* Calls fn for each advice, the largest cost drop first, under the
 * advisor's lock (fn must not call back into the advisor). Any thread. */
void insights_advice_each(insights_advice_fn fn, void *arg);

/* The advisor's own figures (SHOW INDEX_ADVICE's notice, /metrics). */
struct insights_advice_stats {
    uint64_t runs;        /* runs completed */
    int64_t last_run;     /* wall clock, usec, of the last run's end; 0: none yet */
    uint64_t explains;    /* EXPLAINs run, all runs */
    uint64_t errors;      /* statements or connections that failed, all runs */
    size_t advised;       /* advice of the last run */
    char last_error[256]; /* "" or the last failure */
};
void insights_advice_stats(struct insights_advice_stats *out);

#endif
