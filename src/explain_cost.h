/* explain_cost.h - the planner's estimate from EXPLAIN (FORMAT JSON).
 *
 * The index advisor reads the top plan's "Total Cost" from the text
 * PostgreSQL answers: [ { "Plan": { "Node Type": ..., "Total Cost": N,
 * ... }, ... } ]. Pure and bounded by the length it is given: the text
 * comes from a server (fuzzed: tests/fuzz/fuzz_explain_cost.c). */
#ifndef SLUICE_EXPLAIN_COST_H
#define SLUICE_EXPLAIN_COST_H

#include <stddef.h>

enum explain_cost_status {
    EXPLAIN_COST_OK = 0,  /* *total holds the top plan's Total Cost */
    EXPLAIN_COST_BAD,     /* not JSON, or nested deeper than EXPLAIN_COST_MAX_DEPTH */
    EXPLAIN_COST_MISSING, /* JSON, but no [ { "Plan": { "Total Cost": number } } ] */
};
const char *explain_cost_status_str(enum explain_cost_status st);

/* Values nested deeper are refused (an EXPLAIN of a very deep plan). */
#define EXPLAIN_COST_MAX_DEPTH 200

/* Reads json[0..len) (no NUL needed). */
enum explain_cost_status explain_cost_parse(const char *json, size_t len, double *total);

#endif
