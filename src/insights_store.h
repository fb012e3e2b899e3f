/* insights_store.h - per-fingerprint statistics of one worker, and their
 * merge across workers.
 *
 * Each worker owns a store and records into it under the store's mutex,
 * which only a reader (SHOW QUERIES, /metrics, the advisor) contends for.
 * An entry is one libpg_query fingerprint: counters, first and last seen,
 * a latency histogram (log-linear: exact below 16 us, then 8 buckets per
 * power of two, so a percentile read from it is within 6.25% of the true
 * value), a normalized example of its text and, kept for the index advisor
 * only, one real text of it. Histograms add up, so the workers' entries of
 * one fingerprint merge into one by summing. At most max entries; the
 * least recently seen goes when a new one comes.
 *
 * A second, direct-mapped table remembers which fingerprint a statement's
 * shape (sql_shape.h) had, so a text is parsed once per shape. */
#ifndef SLUICE_INSIGHTS_STORE_H
#define SLUICE_INSIGHTS_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define INSIGHTS_BUCKETS 296 /* 16 exact, then 8 per power of two up to 2^38 us */

/* Where a request ran. */
enum insights_where {
    INSIGHTS_PRIMARY = 0,
    INSIGHTS_REPLICA,
    INSIGHTS_CACHE, /* answered by the result cache */
    INSIGHTS_WHERE_N,
};

/* One fingerprint's figures (an entry's, or several merged). */
struct insights_stat {
    uint64_t fp;
    uint64_t calls, errors, rows;
    uint64_t total_us, max_us;
    uint64_t where[INSIGHTS_WHERE_N];
    int64_t first_seen, last_seen; /* wall clock, usec since the epoch */
    uint32_t hist[INSIGHTS_BUCKETS];
};

struct insights_store;

/* A store of at most max entries (>= 1) and a shape table of about
 * shapes slots. */
struct insights_store *insights_store_new(size_t max, size_t shapes);
void insights_store_free(struct insights_store *s);

/* The fingerprint the shape was found to have (0: not known). Under the
 * store's lock, as every call below but insights_store_new/free. */
uint64_t insights_store_shape(const struct insights_store *s, uint64_t shape);
void insights_store_set_shape(struct insights_store *s, uint64_t shape, uint64_t fp);

/* Whether fp has an entry (which does not make it recent). */
bool insights_store_has(const struct insights_store *s, uint64_t fp);
/* Adds fp with its normalized text (copied, cut to INSIGHTS_TEXT_MAX);
 * the least recently seen entry goes if the store is full. A no-op when
 * fp is there. false: no memory. */
#define INSIGHTS_TEXT_MAX 2048
bool insights_store_add(struct insights_store *s, uint64_t fp, const char *text, size_t len);

/* One request of fp (which must have an entry; else nothing is recorded):
 * its time, rows, whether it failed and where it ran, at wall time now. */
void insights_store_record(struct insights_store *s, uint64_t fp, uint64_t usec, uint64_t rows,
                           bool failed, enum insights_where where, int64_t now);

/* One real execution of a fingerprint, kept for the index advisor only
 * (never shown): its text, its parameters in text format (NULL for SQL
 * NULL) and an opaque pointer of the caller's saying where it ran (the
 * client's pool). One allocation: free() frees all of it. */
struct insights_sample {
    const void *origin;
    int nparams;
    const char *const *params;
    const char *sql;
    size_t bytes; /* the allocation's size */
};
/* Texts and parameters together over this are not kept (a sample cut
 * short would not be the statement). */
#define INSIGHTS_SAMPLE_MAX 8192
/* A sample of sql[0..len) with nparams parameters (vals[i] of lens[i]
 * bytes; vals[i] NULL: SQL NULL); NULL when over INSIGHTS_SAMPLE_MAX, or
 * with no memory. */
struct insights_sample *insights_sample_new(const char *sql, size_t len, int nparams,
                                            const char *const *vals, const uint32_t *lens,
                                            const void *origin);
/* A copy of sm (NULL: no memory). */
struct insights_sample *insights_sample_dup(const struct insights_sample *sm);

/* Keeps sm as fp's sample if fp has an entry without one; else frees it.
 * Takes sm (which may be NULL). */
void insights_store_sample(struct insights_store *s, uint64_t fp, struct insights_sample *sm);
/* Whether fp has an entry without a sample. */
bool insights_store_wants_sample(const struct insights_store *s, uint64_t fp);

/* Drops the least recently seen entry; false when there is none. */
bool insights_store_evict_oldest(struct insights_store *s);

/* Drops every entry (the shape table stays: fingerprints do not change). */
void insights_store_reset(struct insights_store *s);

/* Calls fn for each entry (its figures, its normalized text, NUL-terminated,
 * and its sample, which may be NULL). */
typedef void (*insights_store_fn)(void *arg, const struct insights_stat *st, const char *text,
                                  const struct insights_sample *sample);
void insights_store_each(const struct insights_store *s, insights_store_fn fn, void *arg);

size_t insights_store_count(const struct insights_store *s);
/* Entries removed so far (evicted or reset): while it has not moved, an
 * entry seen is still there. Read without the lock. */
uint64_t insights_store_removed(const struct insights_store *s);
/* Bytes the store holds (entries, texts, tables). */
size_t insights_store_bytes(const struct insights_store *s);

/* ---- figures ---------------------------------------------------------------- */

/* The bucket of a latency, and the middle of a bucket (usec). */
unsigned insights_bucket(uint64_t usec);
uint64_t insights_bucket_mid(unsigned b);
/* The q-quantile (0 < q <= 1) of st's histogram, in usec (0: no calls). */
uint64_t insights_quantile(const struct insights_stat *st, double q);
/* Adds b's figures to a (same fingerprint). */
void insights_stat_merge(struct insights_stat *a, const struct insights_stat *b);

#endif
