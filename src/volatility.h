/* volatility.h - what pg_proc says of functions the router does not know,
 * per database: their volatility ('i', 's' or 'v'), looked up once per
 * name (replica_function_check = strict, docs/routing.md).
 *
 * The router asks volatility_get() while it decides; a name not known yet
 * is queued and the statement goes to the primary meanwhile. A janitor
 * pass takes the queued names (volatility_take()) and runs one query for
 * them on an idle server of the database's primary (replica_check.c); the
 * answers come back through volatility_store(). A name pg_proc does not
 * have (a function created later) is asked about again after a while.
 * Shared by every worker: one short mutex per database, never held across
 * I/O. */
#ifndef SLUICE_VOLATILITY_H
#define SLUICE_VOLATILITY_H

#include <stdbool.h>
#include <stdint.h>

#include "conn.h"

/* Names one lookup asks about, and the longest name kept. */
#define VOLATILITY_BATCH    32
#define VOLATILITY_MAX_NAME 128

/* 'i', 's' or 'v' for name (as written, maybe schema-qualified) in db, or
 * 0 when not known yet (then queued for a lookup). */
char volatility_get(struct database *db, const char *name, int64_t now);

/* Whether db has names waiting for a lookup. */
bool volatility_pending(struct database *db);

/* Takes up to VOLATILITY_BATCH waiting names of db into names (each
 * VOLATILITY_MAX_NAME bytes); they are marked as being looked up. */
int volatility_take(struct database *db, char names[][VOLATILITY_MAX_NAME], int64_t now);

/* The answer for name: 'i', 's', 'v', or 0 when pg_proc has no such
 * function (asked again later) or the lookup failed (same). */
void volatility_store(struct database *db, const char *name, char v, int64_t now);

/* Frees db's cache (the database goes). */
void volatility_free(struct database *db);

#endif
