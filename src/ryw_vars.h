/* ryw_vars.h - the settings sluice keeps for a client itself and never
 * sends to a server (read_write_split on, transaction or statement
 * pooling):
 *  - sluice.lsn (read only): the causal token of the writes this client's
 *    reads must see - its own last write's position, and under
 *    read_your_writes = user | database its scope's. Sent as ParameterStatus
 *    after each write transaction (ryw.c); SHOW sluice.lsn answers it.
 *  - sluice.min_lsn: a token (from sluice.lsn, of this or another sluice, or
 *    a bare LSN) its reads must be at least as fresh as. SET, RESET, SHOW,
 *    or in the startup packet (sluice.min_lsn=..., or options
 *    -c sluice.min_lsn=...).
 * A token is LSN/SYSTEM_IDENTIFIER/TIMELINE (docs/routing.md); one of
 * another cluster or timeline is ignored, with a warning. */
#ifndef SLUICE_RYW_VARS_H
#define SLUICE_RYW_VARS_H

#include <stdbool.h>
#include <stddef.h>

#include "conn.h"

/* If the Query at the head of c's buffer is SET / RESET / SHOW of a
 * sluice.* setting, answers it (ReadyForQuery with status st), consumes
 * it and returns true. Cheap when it is not: the first letter decides. */
bool ryw_vars_query(struct client *c, char st);

/* A sluice.* setting in c's startup packet: false (why filled) to refuse
 * the connection. */
bool ryw_vars_startup(struct client *c, const char *name, const char *value, char *why,
                      size_t whylen);

#endif
