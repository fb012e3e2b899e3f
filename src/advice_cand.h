/* advice_cand.h - candidate indexes for a read statement, for the index
 * advisor (insights_advice.h).
 *
 * Two pure steps:
 *  1. advice_cand_extract(): PostgreSQL's parser (libpg_query) reads the
 *     statement; the tables of each FROM (joins and subqueries included)
 *     and the columns that its WHERE, JOIN ... ON and ORDER BY compare
 *     (=, IN, = ANY: equality; <, <=, >, >=, BETWEEN: range) or sort by,
 *     where the column stands alone (an index on a column does not serve
 *     f(column)). A column is tied to its table by its qualifier (alias or
 *     name); an unqualified one is tied in step 2, by the catalog.
 *  2. advice_cand_indexes(): with what the catalog says of each column
 *     (does the table have it, does it already lead an index), the
 *     candidates: each column alone, and each equality column followed by
 *     another column of its table; never one led by a column that already
 *     leads an index.
 * Names are kept as the parser folds them (lower case unless quoted). */
#ifndef SLUICE_ADVICE_CAND_H
#define SLUICE_ADVICE_CAND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ADVICE_NAME_MAX    64 /* PostgreSQL's NAMEDATALEN: longer names are skipped */
#define ADVICE_MAX_TABLES  16 /* tables kept per statement */
#define ADVICE_MAX_REFS    64 /* column uses kept per statement */
#define ADVICE_MAX_INDEXES 24 /* candidates per statement, at most */

/* How a statement uses a column. */
enum advice_use {
    ADVICE_USE_EQ = 0, /* compared for equality: may lead an index */
    ADVICE_USE_RANGE,  /* compared by order (<, BETWEEN) */
    ADVICE_USE_ORDER,  /* sorted by */
};

struct advice_table {
    char schema[ADVICE_NAME_MAX]; /* "" when written unqualified */
    char name[ADVICE_NAME_MAX];
    char alias[ADVICE_NAME_MAX]; /* "" when none */
};

struct advice_ref {
    int table;        /* the table its qualifier names; -1: unqualified */
    uint32_t local;   /* unqualified: the tables of its own FROM (bit i: tables[i]) */
    uint32_t visible; /* unqualified: those and the enclosing statements' */
    enum advice_use use;
    char column[ADVICE_NAME_MAX];
};

struct advice_query {
    int n_tables;
    struct advice_table tables[ADVICE_MAX_TABLES];
    int n_refs;
    struct advice_ref refs[ADVICE_MAX_REFS];
};

enum advice_cand_status {
    ADVICE_CAND_OK = 0,      /* q is filled (maybe with no column) */
    ADVICE_CAND_PARSE_ERROR, /* the parser refused it */
    ADVICE_CAND_NOT_SELECT,  /* not exactly one SELECT statement */
    ADVICE_CAND_NOT_READ,    /* SELECT INTO, FOR UPDATE/SHARE, a data-modifying WITH */
};
const char *advice_cand_status_str(enum advice_cand_status st);

/* Step 1 for sql (NUL-terminated). */
enum advice_cand_status advice_cand_extract(const char *sql, struct advice_query *q);

/* What the catalog says of a column of q->tables[table]. */
enum advice_col {
    ADVICE_COL_NONE = 0, /* no such column (or no such table) */
    ADVICE_COL_PLAIN,    /* a column */
    ADVICE_COL_LEADS,    /* a column that already leads an index */
};
typedef enum advice_col (*advice_col_fn)(void *arg, int table, const char *column);

struct advice_index {
    int table; /* q->tables[table] */
    int ncols; /* 1 or 2 */
    char cols[2][ADVICE_NAME_MAX];
};

/* Step 2: at most max candidates into out (the single-column ones
 * first), how many. */
int advice_cand_indexes(const struct advice_query *q, advice_col_fn col, void *arg,
                        struct advice_index *out, int max);

/* An identifier as SQL takes it: as it is when it is lower case letters,
 * digits and _ (not first a digit) and not a reserved word, else in double
 * quotes. false when out (len bytes) is too small. */
bool advice_cand_quote(const char *name, char *out, size_t len);

/* "CREATE INDEX [CONCURRENTLY ]ON schema.table (a, b)" into out; false
 * when it does not fit. */
bool advice_cand_index_sql(const char *schema, const char *table, const struct advice_index *ix,
                           bool concurrently, char *out, size_t len);

#endif
