/* sql_lex.h - what each of sluice's small readers of SQL text (the
 * pre-classifier, the router's keyword test, the result cache's scanner,
 * the statement shape, the admin console) must read as PostgreSQL's lexer
 * does (src/backend/parser/scan.l), lest a text mean one thing to sluice
 * and another to the server. */
#ifndef SLUICE_SQL_LEX_H
#define SLUICE_SQL_LEX_H

#include <stdbool.h>

/* A "--" comment runs to the end of its line, and a carriage return ends
 * a line as a line feed does: "-- x\rSET a = 1" sets a. */
static inline bool sql_newline(char c)
{
    return c == '\n' || c == '\r';
}

/* The blanks between tokens: PostgreSQL 15's lexer takes these five;
 * PostgreSQL 16 also a vertical tab. A reader that must not tell two texts
 * apart that the server reads differently (the shape) takes these; one that
 * looks for what a text may do takes '\v' too (it may be a blank). */
static inline bool sql_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f';
}

/* A byte that may be part of an unquoted identifier or keyword. */
static inline bool sql_ident_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '$' || (unsigned char)c >= 0x80;
}

#endif
