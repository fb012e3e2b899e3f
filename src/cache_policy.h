/* cache_policy.h - what the result cache may keep, and what a statement
 * writes: the rules of docs/cache.md, read from statement texts (with
 * PostgreSQL's parser where the cheap scanner of cache_sql.h is not
 * enough), the catalog (cache_catalog.h) and pg_proc (volatility.h).
 * cache.c's; no client state here. */
#ifndef SLUICE_CACHE_POLICY_H
#define SLUICE_CACHE_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cache_catalog.h"
#include "config.h"
#include "conn.h"

/* Texts longer than this are not cached (nor their keys built), and a
 * write longer than this that the cheap scanner does not follow drops
 * every answer of its database instead of being parsed. */
#define CACHE_MAX_TEXT 16384
/* Relation ids one entry may depend on. */
#define CACHE_MAX_IDS 128
/* A hint without ttl=, when no rule and no cache_default_ttl give one. */
#define CACHE_HINT_TTL (60 * 1000000LL)

/* The id standing for every answer of db: each entry depends on it. */
uint64_t cache_db_id(const struct database *db);

/* May sql be kept, for how long, over which relation ids. */
struct cache_decision {
    int64_t ttl; /* usec */
    int n_ids;
    uint64_t ids[CACHE_MAX_IDS];
};

/* 1: sql may be cached (d filled); 0: a rule, cache_default_ttl or a hint
 * names it, but it may not be (a volatile function, a relation not known
 * yet, not a plain read: counted as bypassed); -1: nothing names it (the
 * common case, decided without a parse). */
int cache_policy_decide(struct database *db, const struct config *cfg, const char *sql, size_t len,
                        int64_t now, struct cache_decision *d);

/* Whether sql may write at all: false for the common reads and
 * transaction control, decided without a parse. */
bool cache_policy_may_write(const char *sql, size_t len);
/* The relations sql writes, each told to add(arg, name as written); false
 * when they cannot all be named (DDL, DO, CALL, EXECUTE, a long text):
 * every relation of the database may have changed. */
bool cache_policy_writes(const char *sql, size_t len, void (*add)(void *arg, const char *name),
                         void *arg);

/* Whether sql changes session state a cache key cannot see: set_config()
 * in any mode; in session pooling (session) also SET, RESET, DISCARD,
 * CREATE TEMP, LOAD, DO, CALL, SECURITY LABEL. */
bool cache_policy_taints(const char *sql, size_t len, bool session);

/* What the three above say of a prepared statement's text, found once per
 * text and worker thread: a client's Parse and Bind give the same few
 * texts again and again (an unnamed statement alternating between them
 * too), and reading them costs more than finding them. Not for a simple
 * Query (its text has its values in it: seen once, most of the time). */
#define CACHE_FACTS_NAMES 4
struct cache_text_facts {
    bool may_write;
    bool named;     /* cache_policy_writes()'s answer; names[] its relations */
    bool overflow;  /* more than CACHE_FACTS_NAMES: ask cache_policy_writes() */
    bool taints[2]; /* cache_policy_taints(), [session] */
    uint8_t n_names;
    /* The config generation under which cache_policy_decide() found the
     * text uncacheable by its text and rules alone (0: not known); noted
     * by the caller. */
    uint64_t nocache_gen;
    char names[CACHE_FACTS_NAMES][CACHE_CATALOG_MAX_NAME];
};
struct cache_text_facts *cache_policy_facts(const char *sql, size_t len);
/* The same facts of a simple Query's text, found once per shape
 * (sql_shape.h) and worker thread: pgbench -M simple and ORMs that inline
 * values send a few shapes with ever new constants. Only for a text
 * cache_policy_by_shape() accepts: one statement of a kind whose facts
 * hold for every text of its shape (an EXPLAIN's does not: ANALYZE 0 and
 * ANALYZE 1 are one shape). */
bool cache_policy_by_shape(const char *sql, size_t len);
const struct cache_text_facts *cache_policy_shape_facts(uint64_t shape, const char *sql,
                                                        size_t len);
/* Frees the running thread's texts (thread exit). */
void cache_policy_thread_done(void);

#endif
