/* cache_sql.h - the little the result cache reads of a statement's text
 * itself, before (or instead of) PostgreSQL's parser: hints, a cheap
 * "may a rule name this?" test, and the target of a plain INSERT, UPDATE
 * or DELETE. Pure functions of the text, for cache.c; fuzzed. */
#ifndef SLUICE_CACHE_SQL_H
#define SLUICE_CACHE_SQL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Past blanks and comments in [p, e) (nested block comments, as
 * PostgreSQL reads them); an unterminated comment runs to the end. Also
 * what ryw_vars.c reads SET/SHOW sluice.* with. */
const char *cache_sql_skip_blank(const char *p, const char *e);

/* A sluice:cache / sluice:nocache hint in a block comment. */
enum cache_sql_hint {
    CACHE_HINT_NONE = 0,
    CACHE_HINT_CACHE,   /* "sluice:cache" (ttl: *ttl_usec, 0 when not given) */
    CACHE_HINT_NOCACHE, /* "sluice:nocache" (wins over the other) */
};
enum cache_sql_hint cache_sql_hint(const char *sql, size_t len, int64_t *ttl_usec);

/* Whether needle (ASCII) occurs in sql[0..len) in any case. */
bool cache_sql_contains(const char *sql, size_t len, const char *needle);

/* The first keyword of sql, lower case, into word (cap bytes), after
 * blanks, comments and opening parentheses; "" when there is none. */
void cache_sql_first_word(const char *sql, size_t len, char *word, size_t cap);

/* A simple Query may hold several statements: the start of the one after
 * the statement going on at p in sql[0..len) (past its ';', blanks and
 * comments), or NULL when that one is the last (or a literal in it does
 * not end: the server refuses the whole text then). */
const char *cache_sql_next_statement(const char *sql, size_t len, const char *p);

/* For a text that is one plain "INSERT INTO t", "UPDATE [ONLY] t" or
 * "DELETE FROM [ONLY] t" statement (a trailing ';' allowed), the target's
 * relation name as the catalog spells it (unquoted names folded to lower
 * case), "schema.name" when qualified, into name: true. false for anything else
 * (another statement, a WITH, several statements, text this scanner does
 * not follow): the caller parses the text fully. */
bool cache_sql_dml_target(const char *sql, size_t len, char *name, size_t cap);

#endif
