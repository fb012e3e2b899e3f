/* sql_shape.h - a hash of a statement's text that ignores the values of
 * its constants, its comments and the amount of its whitespace.
 *
 * Two texts with one shape differ only in those, so they have one
 * libpg_query fingerprint: a shape can stand for the fingerprint it was
 * found to have, and the statement is parsed once per shape instead of
 * once per execution (pgbench -M simple sends a new literal each time).
 * The converse does not hold (IN lists of other lengths, case, a
 * parameter for a literal: several shapes, one fingerprint). Whatever the
 * scanner is not sure of (dollar quotes, E'' and other prefixed strings,
 * backslashes in a string) is hashed byte for byte from there on, which
 * only makes more shapes. The hash is seeded per process: a shape means
 * nothing to another process, nor to this one after a restart. */
#ifndef SLUICE_SQL_SHAPE_H
#define SLUICE_SQL_SHAPE_H

#include <stddef.h>
#include <stdint.h>

/* The shape of sql[0..len); never 0. */
uint64_t sql_shape(const char *sql, size_t len);

#endif
