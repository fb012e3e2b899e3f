/* cache_int.h - what cache.c shares with cache_tier.c (the Redis tier's
 * part of the request pipeline). Not for other modules: cache.h is. */
#ifndef SLUICE_CACHE_INT_H
#define SLUICE_CACHE_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "cache.h"
#include "cache_catalog.h"
#include "cache_policy.h"
#include "cache_redis.h"
#include "writes.h"

/* Tables a transaction's writes name before they count as "all". */
#define CACHE_WRITES_MAX 16
/* Table ids a writer's answers wait for (more: the first ones). */
#define CACHE_HOLD_MAX 64

/* Per-database counters (struct database's cache_ctr). */
enum cache_ctr {
    CC_HITS = 0,
    CC_MISSES,        /* cacheable, not found */
    CC_FILLS,         /* misses whose answer was read to be kept */
    CC_STORES,        /* ... and kept */
    CC_REFUSED_STALE, /* ... not kept: a write to its tables committed meanwhile */
    CC_REFUSED_OTHER, /* ... not kept: an error, too big, memory, admission */
    CC_INVALIDATIONS, /* writes' invalidations (one per table and transaction) */
    CC_BYPASS,        /* statements a rule or hint named that could not be cached */
};

/* What is known of a kept statement's text, until its body changes: a
 * driver Parses the same unnamed text again and again, and a comparison
 * costs less than reading it each time (cache.c). */
enum {
    STMT_TAINT_KNOWN = 1,
    STMT_TAINTS = 2,
    STMT_READS = 4,   /* cache_policy_may_write() said no */
    STMT_NOCACHE = 8, /* cache_policy_decide() said no by text and rules, under memo_gen */
};

struct cache_stmt {
    const char *name; /* interned */
    uint8_t *body;    /* its Parse body after the name: text, NUL, parameter types */
    uint32_t len;
    uint8_t memo;      /* STMT_* */
    uint64_t memo_gen; /* the config generation STMT_NOCACHE holds for */
};

struct cache_client {
    bool tainted; /* session state the key cannot see: nothing cached for it any more */
    /* A fill: the request being answered is kept when it ends well. */
    bool filling, capturing, fill_bad;
    bool fill_ext; /* the fill is an extended batch: its Describe, Execute and Sync are owned */
    struct cache_flight *flight; /* it leads the fill of its key: others wait for it */
    struct sf_wait *wait;        /* it waits for another client's fill of the same key */
    struct rget *rget;           /* it waits for the Redis tier's answer (cache = redis://) */
    bool listed;                 /* on its thread's list of clients looked at every ms */
    /* Its answers are held until Redis has these tables' invalidations. */
    int n_hold;
    uint64_t hold_ids[CACHE_HOLD_MAX];
    int64_t hold_since;
    /* A fill whose answer also goes to Redis: the generations Redis gave
     * with its miss, of these tables. */
    int r_n;
    uint64_t r_ids[CACHE_REDIS_MAX_TABLES], r_gens[CACHE_REDIS_MAX_TABLES];
    bool described; /* ... whose Describe's answer starts the value */
    struct cache_fill *fill;
    uint8_t *key;
    size_t key_len;
    uint8_t *val;
    size_t val_len, val_cap;
    int64_t expires;
    /* The writes of the transaction in flight, told at its end. */
    int n_writes;
    bool writes_all;
    char writes[CACHE_WRITES_MAX][CACHE_CATALOG_MAX_NAME];
    /* Its statements' Parse bodies: the unnamed one (every mode) and, in
     * session mode, the named ones (a server keeps them; transaction
     * pooling has them in prepared.c). */
    struct cache_stmt unnamed;
    struct cache_stmt *stmts;
    int n_stmts, cap_stmts;
};

/* A request the cache may answer, as it lies at the head of c's buffer:
 * a Query, or an extended batch [Parse] Bind [Describe portal] Execute
 * Sync of the unnamed portal, all buffered. */
struct request_view {
    bool ext;              /* an extended batch */
    bool parse, described; /* ... with its Parse; with a Describe of the portal */
    const char *sql;       /* the statement's text (NUL-terminated) */
    size_t sql_len;
    const uint8_t *a, *b;    /* the key's parts: the text (Query) or Parse body, */
    size_t a_len, b_len;     /* and the Bind's formats and values (b NULL: none) */
    uint32_t total;          /* the request's bytes */
    struct cache_stmt *kept; /* the statement kept with this text, if any (its memo) */
};

/* A NUL-terminated string at p within [p, end), or NULL. */
static inline const char *cache_cstr(const uint8_t *p, const uint8_t *end)
{
    return p < end && memchr(p, '\0', (size_t)(end - p)) ? (const char *)p : NULL;
}

/* The Parse body of statement name (unnamed: ""), as c sent it; *kept:
 * the cache's own record of it, NULL when prepared.c keeps it
 * (cache_view.c). */
const uint8_t *cache_stmt_body(struct client *c, const char *name, uint32_t *len,
                               struct cache_stmt **kept);
/* The request at the head of c's buffer as the cache reads it: an
 * extended batch in the shape it answers, or a simple Query; false for
 * anything else (cache_view.c). */
bool cache_view_batch(struct client *c, struct request_view *v);
bool cache_view_query(struct client *c, struct request_view *v);

/* The in-process store, and whether the Redis tier is behind it. */
extern struct cache_store *cache_g_store;
extern bool cache_g_redis;

void cache_ctr_add(struct database *db, enum cache_ctr i);

/* The table ids a write to r changes, into ids (at most cap): the
 * catalog's (its own in every schema that has one when r has none, and
 * the relations a write through it changes); with own, a qualified
 * name's own id, without a lookup. -1: not known, every answer of db. */
int cache_write_rel_ids(struct database *db, const struct writes_rel *r, bool own, int64_t now,
                        uint64_t *ids, int cap);
/* Collects the ids invalidated on this thread from begin to end (a
 * writer's transaction told to the writes bus): at most CACHE_HOLD_MAX. */
void cache_told_begin(void);
int cache_told_end(const uint64_t **ids);
/* "schema.name" or "name" as a writes_rel, its parts in buf. */
void cache_rel_split(const char *name, char *buf, size_t cap, struct writes_rel *r);
/* The names of table ids (cache_names.c): noted as they come, one id
 * once, for SHOW CACHE_TABLES; init and free with the cache. */
void cache_names_note(uint64_t id, const char *db, const char *name);
void cache_names_init(void);
void cache_names_free(void);
void cache_names_thread_done(void); /* forgets this thread's ids noted */
/* db's owner slot in the store (its entries, bytes, evictions, expired). */
unsigned cache_owner_of(const struct database *db);
/* c's state, made if it has none. */
struct cache_client *cache_client_of(struct client *c);

/* Notes what text (a statement c sends to run) may write, for its
 * transaction's end; false when it cannot write. f: the text's facts when
 * they are kept (cache_policy_facts(), cache_policy_shape_facts()); NULL:
 * the text is read here. */
struct cache_text_facts;
bool cache_writes_of_text(struct client *c, const char *sql, size_t len,
                          const struct cache_text_facts *f);
/* c's transaction is over (it ended, or its server went): what it wrote is
 * told to every subscriber of the writes bus, the cache first among them. */
void cache_writes_flush(struct client *c);
/* c on (off) its thread's list of clients looked at every millisecond:
 * those waiting for an answer (routed again when it is there) or holding
 * their output. */
bool cache_watch_add(struct client *c);
void cache_watch_remove(struct client *c);
/* Answers c's request rv (at the head of its buffer) with an answer's
 * bytes (and, for an extended batch, ParseComplete and BindComplete
 * first), then ReadyForQuery with status, in one send. e: the entry the
 * bytes are from (it keeps the statement's insights shape), or NULL. */
void cache_answer_bytes(struct client *c, const uint8_t *v, size_t n, const struct request_view *rv,
                        char status, struct cache_entry *e);

/* cache_tier.c: the Redis tier. */
struct rget;
bool cache_tier_ready(const struct rget *t);
enum cache_route cache_tier_lookup(struct client *c, const struct request_view *v,
                                   const struct cache_decision *d, const uint8_t *key,
                                   size_t key_len, char status, int64_t now);
void cache_tier_forget(struct client *c);
void cache_tier_put(struct client *c, int64_t now);
/* Keeps a fill's answer in the in-process store: in Redis mode with the
 * header Redis keeps it with (the fill's generations there). */
enum cache_put_result cache_tier_keep(struct cache_client *cc, int64_t now);
/* Whether an in-process entry may answer: in Redis mode, only if it is of
 * the generations Redis gave with this request's miss. */
bool cache_tier_copy_current(const struct cache_client *cc, struct cache_entry *e);
void cache_tier_hold(struct client *c, const uint64_t *ids, int n);
void cache_tier_hold_check(struct client *c, int64_t now);

#endif
