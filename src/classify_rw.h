/* classify_rw.h - may a statement run on a streaming replica?
 *
 * A statement goes to a replica only when it is provably read-only: SELECT /
 * VALUES / TABLE / SHOW / EXPLAIN without ANALYZE, with no FOR UPDATE / NO KEY
 * UPDATE / SHARE / KEY SHARE, no SELECT INTO, no data-modifying statement
 * anywhere in it (a WITH at any depth, subqueries included) and no call of a
 * function that may write. Everything not understood goes to the primary.
 * docs/routing.md ("What runs on a replica") has the rules in plain words.
 *
 * Three steps, so that the cached part does not depend on configuration:
 *  1. classify_rw_cached(sql, len): PostgreSQL's parser (libpg_query) and a
 *     walk of its tree, 10 to 90 us cold, tens of ns from the per-thread
 *     cache (docs/benchmarks.md); the result lists each statement's verdict
 *     from its structure, its transaction and session effects, and the
 *     names of the functions it calls.
 *  2. classify_rw_resolve(result, functions, &decision): applies the built-in
 *     lists and the configured ones (struct classify_rw_functions): READ,
 *     WRITE, or LOOKUP with the function names whose volatility only the
 *     database knows.
 *  3. classify_rw_resolve_lookup(&decision, volatility, arg): the router has
 *     looked the names up in pg_proc (per database); 'v' or unknown is a
 *     write, 'i' and 's' are reads.
 *
 * Function names are kept as written, schema-qualified if they were
 * ("pg_catalog.nextval"), in the parser's folded form (lower case unless
 * double-quoted). Built-in lists match unqualified or pg_catalog-qualified
 * names; a deny-list entry matches in any case (a near miss errs toward the
 * primary), an allow-list entry only exactly. Names of other schemas are
 * never built-in: the configured lists or pg_proc decide.
 *
 * What a text cannot show is not seen: functions called by views, rules,
 * column defaults, policies, casts or operators, and a one-argument
 * function called with field syntax (t.f). A replica refuses their writes
 * ("cannot execute ... in a read-only transaction"); the client gets that
 * error, and a sluice:primary hint (below) sends such statements home.
 */
#ifndef SLUICE_CLASSIFY_RW_H
#define SLUICE_CLASSIFY_RW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CLASSIFY_RW_MAX_STMTS  16  /* statements kept per text; more: WRITE, truncated */
#define CLASSIFY_RW_MAX_FUNCS  32  /* distinct functions per statement; more: WRITE */
#define CLASSIFY_RW_ALL_FUNCS  64  /* functions per text, all statements; more: WRITE */
#define CLASSIFY_RW_MAX_NAME   128 /* longest function name kept (schema.name) */
#define CLASSIFY_RW_MAX_RELS   32  /* relations per text kept; more: rels_truncated */
#define CLASSIFY_RW_MAX_LOOKUP 32  /* names one decision may ask pg_proc about */

/* The per-thread cache: entries, bytes (texts and results), and the longest
 * text cached (longer ones are classified every time). */
#define CLASSIFY_RW_CACHE_ENTRIES  4096
#define CLASSIFY_RW_CACHE_BYTES    (4u << 20)
#define CLASSIFY_RW_CACHE_MAX_TEXT 16384

enum classify_rw_verdict {
    CRW_READ = 0, /* provably read-only: a replica may run it */
    CRW_WRITE,    /* writes, may write, or not understood: the primary */
    CRW_LOOKUP,   /* read-only unless one of the named functions is volatile */
};
const char *classify_rw_verdict_str(enum classify_rw_verdict v);

/* Transaction control, per statement. */
enum classify_rw_txn {
    CRW_TXN_NONE = 0,        /* no transaction control */
    CRW_TXN_BEGIN,           /* BEGIN, START TRANSACTION */
    CRW_TXN_COMMIT,          /* COMMIT, END */
    CRW_TXN_ROLLBACK,        /* ROLLBACK, ABORT */
    CRW_TXN_SAVEPOINT,       /* SAVEPOINT, RELEASE, ROLLBACK TO */
    CRW_TXN_SET_TRANSACTION, /* SET TRANSACTION ... (and SET TRANSACTION SNAPSHOT) */
    CRW_TXN_PREPARED,        /* PREPARE TRANSACTION, COMMIT / ROLLBACK PREPARED: writes */
};
const char *classify_rw_txn_str(enum classify_rw_txn t);

/* An isolation level given by BEGIN, START TRANSACTION or SET TRANSACTION. */
enum classify_rw_isolation {
    CRW_ISO_UNSAID = 0,       /* none given */
    CRW_ISO_READ_UNCOMMITTED, /* READ UNCOMMITTED (PostgreSQL runs it as committed) */
    CRW_ISO_READ_COMMITTED,   /* READ COMMITTED */
    CRW_ISO_REPEATABLE_READ,  /* REPEATABLE READ */
    CRW_ISO_SERIALIZABLE,     /* SERIALIZABLE (a replica refuses it) */
};
const char *classify_rw_isolation_str(enum classify_rw_isolation i);

/* A routing hint in a comment anywhere in the text (not in a literal). */
enum classify_rw_hint {
    CRW_HINT_NONE = 0, /* no hint */
    CRW_HINT_PRIMARY,  /* a block comment "sluice:primary" (wins if both are there) */
    CRW_HINT_REPLICA,  /* a block comment "sluice:replica": never makes a write a read */
};
const char *classify_rw_hint_str(enum classify_rw_hint h);

/* What the built-in lists say of a function name. */
enum classify_rw_fclass {
    CRW_FN_UNKNOWN = 0, /* not built in: the configured lists, then pg_proc */
    CRW_FN_STABLE,      /* a common immutable or stable function (count, lower, now) */
    CRW_FN_SAFE,        /* volatile but never writes (random, clock_timestamp, pg_sleep) */
    CRW_FN_WRITE,       /* deny list: writes or must run on the primary (nextval) */
    CRW_FN_WRITE_PIN,   /* deny list, and takes a session-level advisory lock: pins */
};
const char *classify_rw_fclass_str(enum classify_rw_fclass c);

struct classify_rw_func {
    const char *name;   /* as written: "nextval", "pg_catalog.nextval", "app.f" */
    const char *reason; /* "function NAME": why a statement calling it writes */
    enum classify_rw_fclass cls;
};

/* A relation a text names (for the result cache, refresh jobs, insights):
 * tables, views, sequences as written, "name" or "schema.name" (the
 * parser's case folding: unquoted names in lower case); once per text. */
struct classify_rw_rel {
    const char *name;
    bool write;     /* a writing statement of the text may change it: the target of an
                     * INSERT / UPDATE / DELETE / MERGE, or any relation a statement
                     * other than those names when it writes (TRUNCATE, COPY FROM, DDL,
                     * REFRESH, SELECT ... FOR UPDATE, a volatile function) */
    bool maybe_cte; /* unqualified and equal to a CTE name of every statement naming
                     * it: perhaps no relation at all */
};

/* One statement. Flags the router acts on:
 *  - whole_txn_primary: LOCK, SET TRANSACTION SNAPSHOT, DECLARE ... WITH
 *    HOLD: the whole transaction runs on the primary;
 *  - pins (pin_reason): session state that cannot move between servers, so
 *    the session stays on the primary: CREATE TEMP / TEMPORARY table, view
 *    or sequence (or one created in pg_temp; not ON COMMIT DROP), a
 *    session-level advisory lock (pg_advisory_lock[_shared],
 *    pg_try_advisory_lock[_shared]; not the _xact_ ones), LISTEN, DECLARE ...
 *    WITH HOLD, SET SESSION CHARACTERISTICS. SQL-level PREPARE does not pin
 *    (sluice tracks it elsewhere);
 *  - is_set: SET / RESET of a session setting (READ: sluice's settings
 *    tracking replays it; SET SESSION CHARACTERISTICS also pins);
 *  - set_local: SET LOCAL (READ; replayed when a transaction moves);
 *  - copy_in: COPY ... FROM STDIN (the server then reads COPY data: nothing
 *    else may follow the statement on its connection until it is done).
 * SHOW is a READ; SET / RESET / BEGIN / COMMIT / ROLLBACK / SAVEPOINT are
 * READs too (they run wherever the transaction is). */
struct classify_rw_stmt {
    enum classify_rw_verdict verdict;     /* READ or WRITE, before the functions */
    const char *reason;                   /* WRITE: why ("INSERT", "FOR UPDATE", ...) */
    enum classify_rw_txn txn;             /* transaction control */
    enum classify_rw_isolation isolation; /* BEGIN / START / SET TRANSACTION */
    int8_t read_only;                     /* READ ONLY 1, READ WRITE 0, unsaid -1 */
    bool whole_txn_primary;               /* see above */
    bool pins;                            /* see above */
    bool is_set;                          /* see above */
    bool set_local;                       /* see above */
    bool copy_in;                         /* see above */
    const char *pin_reason;               /* pins: what ("temporary table", ...) */
    uint32_t off, len;                    /* the statement's bytes in the text */
    uint16_t func0, n_funcs;              /* its functions: funcs[func0 .. func0 + n_funcs) */
};

/* A classified text: one block, internal pointers included; the strings it
 * points to are static or inside the block. */
struct classify_rw_result {
    enum classify_rw_verdict verdict; /* statements combined, before functions: READ/WRITE */
    const char *reason;               /* WRITE: the first writing statement's reason */
    enum classify_rw_hint hint;       /* a hint comment */
    bool parse_error;                 /* the parser refused it: WRITE "not understood" */
    bool truncated;                   /* over CLASSIFY_RW_MAX_STMTS: WRITE */
    bool pins;                        /* some statement pins (even past the last kept) */
    bool whole_txn_primary;           /* some statement says so (same) */
    const char *pin_reason;           /* the first pin's reason */
    int n;                            /* statements kept */
    int n_funcs;                      /* functions, all statements */
    const struct classify_rw_stmt *stmts;
    const struct classify_rw_func *funcs;
    int n_rels;          /* relations, all statements */
    bool rels_truncated; /* more than CLASSIFY_RW_MAX_RELS, or a name too long */
    /* A value of the moment it is evaluated: CURRENT_DATE, CURRENT_TIME,
     * CURRENT_TIMESTAMP, LOCALTIME, LOCALTIMESTAMP (with or without a
     * precision), TABLESAMPLE. Functions (now(), random()) are listed in
     * funcs; their volatility is pg_proc's to tell. */
    bool varies;
    const struct classify_rw_rel *rels;
};

/* The configuration's function lists (replica_write_functions,
 * replica_read_functions) and replica_function_check (strict: true, the
 * default; list: false). Write names match case-insensitively, and an
 * unqualified name on either side matches any schema; read names match the
 * name as written exactly. strict: a function on no list is looked up in
 * pg_proc (LOOKUP); list mode assumes it does not write (READ). */
struct classify_rw_functions {
    const char *const *write;
    int n_write;
    const char *const *read;
    int n_read;
    bool strict;
};

/* The verdict for a text under a configuration. */
struct classify_rw_decision {
    enum classify_rw_verdict verdict; /* the text: WRITE if any statement, else LOOKUP, else READ */
    const char *reason;               /* WRITE: why ("INSERT", "function nextval", ...) */
    int n;                            /* statements (as in the result) */
    int n_lookup;                     /* LOOKUP: names to look up in pg_proc */
    const char *lookup[CLASSIFY_RW_MAX_LOOKUP];           /* distinct, as written */
    const char *lookup_reason[CLASSIFY_RW_MAX_LOOKUP];    /* "function NAME" for each */
    uint16_t lookup_stmts[CLASSIFY_RW_MAX_LOOKUP];        /* bit i: stmts[i] calls it */
    enum classify_rw_verdict stmt[CLASSIFY_RW_MAX_STMTS]; /* per kept statement */
};

/* Classifies sql (len bytes, sql[len] == '\0': Query and Parse messages carry
 * NUL-terminated text) without the cache. Never fails: a text the parser
 * refuses is a WRITE with parse_error. Returns a block to free with
 * classify_rw_free(). */
struct classify_rw_result *classify_rw_parse(const char *sql, size_t len);
void classify_rw_free(struct classify_rw_result *r);

/* The same, through the running thread's cache (keyed by the whole text;
 * no allocation on a hit). A text not seen before is looked up by its
 * shape too (sql_shape.h: constants, comments and blanks left out) when it
 * cannot hold a hint (it does not mention "sluice:"): the result of a text
 * of that shape made of SELECT, INSERT, UPDATE, DELETE and MERGE statements
 * holds for it (their reading looks at no constant), all but its
 * statements' off and len, which are the other text's (callers clamp them
 * to their text). The result belongs to the cache and stays valid until
 * the next classify_rw_cached() or classify_rw_thread_done() on this
 * thread. Never NULL. */
const struct classify_rw_result *classify_rw_cached(const char *sql, size_t len);

/* Frees the running thread's cache (thread exit). */
void classify_rw_thread_done(void);

/* Applies the function lists to r (fns NULL: built-in lists, strict) and
 * fills d. Returns d->verdict. On LOOKUP, d->lookup names the functions the
 * router must look up; they point into r. d->reason is static or points into
 * r: both stay valid as long as r does. */
enum classify_rw_verdict classify_rw_resolve(const struct classify_rw_result *r,
                                             const struct classify_rw_functions *fns,
                                             struct classify_rw_decision *d);

/* The router's answers for a LOOKUP decision: volatility(name, arg) returns
 * pg_proc.provolatile for that name in the session's database ('i', 's' or
 * 'v'; with overloads, 'v' if any is), or 0 if unknown. 'v' and unknown are
 * writes (the primary until the answer is known), 'i' and 's' reads.
 * Updates d (verdict, reason, per-statement verdicts) and returns its
 * verdict; on another verdict than LOOKUP it returns it unchanged. */
enum classify_rw_verdict classify_rw_resolve_lookup(struct classify_rw_decision *d,
                                                    char (*volatility)(const char *name, void *arg),
                                                    void *arg);

/* What the built-in lists say of a name as written ("nextval",
 * "pg_catalog.nextval", "app.nextval"). */
enum classify_rw_fclass classify_rw_builtin(const char *name);

/* The built-in lists, for tests and documentation: the i-th name of class
 * cls (a trailing '*' means any name starting so), NULL past the end. */
const char *classify_rw_builtin_name(enum classify_rw_fclass cls, int i);

struct classify_rw_counters {
    uint64_t parses; /* full parses (misses, uncached texts, classify_rw_parse) */
    uint64_t hits;   /* classify_rw_cached() answered from the cache */
    uint64_t misses; /* classify_rw_cached() had to parse */
};

/* Totals over all threads (each thread adds its counts in batches; the
 * calling thread's are added first). */
void classify_rw_counters(struct classify_rw_counters *out);

#endif
