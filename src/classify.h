/* classify.h - what a query does to session state, for transaction pooling.
 *
 * Two levels, because a full parse (libpg_query, ~20 us) costs more than
 * PgBouncer spends on a whole transaction: classify_peek() looks only at the
 * first keyword (a few ns) and says whether classify_parse() is worth
 * calling; classify_parse() runs PostgreSQL's parser and lists the session
 * state effects of every statement in the string.
 */
#ifndef SLUICE_CLASSIFY_H
#define SLUICE_CLASSIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* First keyword of a query, as far as session state is concerned. */
enum classify_kw {
    CK_OTHER = 0,   /* nothing that touches session state (most queries) */
    CK_SET,         /* SET ... */
    CK_RESET,       /* RESET ... */
    CK_PREPARE,     /* PREPARE name ... */
    CK_EXECUTE,     /* EXECUTE name ... */
    CK_DEALLOCATE,  /* DEALLOCATE ... */
    CK_DISCARD,     /* DISCARD ... */
    CK_LISTEN,      /* LISTEN / UNLISTEN */
    CK_CREATE_TEMP, /* CREATE TEMP|TEMPORARY|LOCAL|GLOBAL ..., or a SELECT naming TEMP */
    CK_DECLARE,     /* DECLARE cursor (WITH HOLD survives the transaction) */
    CK_ADVISORY,    /* mentions a session-level advisory lock function */
    CK_BEGIN,       /* BEGIN / START TRANSACTION alone: opens, cannot commit */
    CK_MULTI,       /* a statement after the first: the parse decides */
    CK_COUNT,
};
/* Whether k leaves the session as it was (CK_OTHER, CK_BEGIN). */
static inline bool classify_kw_plain(enum classify_kw k)
{
    return k == CK_OTHER || k == CK_BEGIN;
}
const char *classify_kw_str(enum classify_kw k);

/* The cheap pre-classifier: skips whitespace and comments, reads the first
 * keyword (case-insensitive) of sql[0..len) (not NUL-terminated; may be a
 * prefix of the query). Conservative: anything it cannot rule out within len
 * bytes is reported by its keyword; CK_OTHER means "no session effect". */
enum classify_kw classify_peek(const char *sql, size_t len);
/* Whether classify_peek() of sql[0..len), a prefix of a longer query, may
 * say something else once more of the query is seen (a comment or a word
 * runs to the end, a SELECT whose rest may name an advisory lock): the
 * caller then looks at the whole query, never at a window of it. */
bool classify_peek_more(const char *sql, size_t len);

/* One statement's effect, from the full parse. */
enum classify_stmt_kind {
    CS_OTHER = 0,      /* no session effect */
    CS_SET,            /* SET [SESSION] name ... : name, text */
    CS_SET_LOCAL,      /* SET LOCAL: transaction-scoped, nothing to remember */
    CS_RESET,          /* RESET name / SET name TO DEFAULT: name */
    CS_RESET_ALL,      /* RESET ALL */
    CS_PREPARE,        /* PREPARE name ...: name, name_off/name_len, rest_off */
    CS_EXECUTE,        /* EXECUTE name ...: same */
    CS_DEALLOCATE,     /* DEALLOCATE [PREPARE] name: name */
    CS_DEALLOCATE_ALL, /* DEALLOCATE ALL */
    CS_DISCARD_ALL,    /* DISCARD ALL */
    CS_PIN,            /* state that cannot move between servers: reason */
    CS_LISTEN,         /* LISTEN channel: name (reason "LISTEN" when it pins) */
    CS_UNLISTEN,       /* UNLISTEN channel: name */
    CS_UNLISTEN_ALL,   /* UNLISTEN * */
};

struct classify_stmt {
    enum classify_stmt_kind kind;
    uint32_t off, len;           /* the statement's bytes in the query */
    uint32_t name_off, name_len; /* PREPARE/EXECUTE: the name token in the query */
    char name[64];               /* GUC (lower case) or prepared statement name */
    const char *reason;          /* CS_PIN: what pins (static string) */
};

#define CLASSIFY_MAX_STMTS 16

struct classify_result {
    int n;            /* statements */
    bool truncated;   /* more than CLASSIFY_MAX_STMTS */
    bool parse_error; /* the parser refused the query (the server will too) */
    struct classify_stmt stmts[CLASSIFY_MAX_STMTS];
};

/* Parses sql (NUL-terminated, len bytes) with libpg_query and fills out.
 * Returns false when the query cannot be parsed (out->parse_error). */
bool classify_parse(const char *sql, size_t len, struct classify_result *out);

/* Parses one SQL identifier at p (len bytes left): plain (folded to lower
 * case) or double-quoted. Writes it to out (NUL-terminated, truncated at
 * outcap-1) and returns the bytes consumed, 0 if there is none. */
size_t classify_ident(const char *p, size_t len, char *out, size_t outcap);

/* Counts of full parses, for tests and stats. */
uint64_t classify_parse_count(void);

#endif
