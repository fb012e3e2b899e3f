/* writes.h - committed writes, by relation, told to whoever must know.
 *
 * Who writes and who must know are in different layers: sluice's own
 * clients (the router sees their writes commit), the logical decoding
 * consumer (writes that bypass sluice), refresh jobs (a REFRESH they ran);
 * the result cache drops what the writes made stale and refresh jobs
 * schedule a run. Publishers call writes_committed(); subscribers register
 * a callback at start, before the workers run. Callbacks run on the
 * publisher's thread, synchronously, and must be quick and thread-safe:
 * no I/O, no lock held long. */
#ifndef SLUICE_WRITES_H
#define SLUICE_WRITES_H

#include <stdbool.h>

#include "conn.h"

/* Who saw the write. */
enum writes_source {
    WRITES_CLIENT = 0, /* a client's statement through sluice, at its commit */
    WRITES_LOGICAL,    /* the logical decoding consumer (any writer) */
    WRITES_JOB,        /* a refresh job sluice ran */
};
const char *writes_source_str(enum writes_source s);

/* A relation written: its name as PostgreSQL stores it (case as folded by
 * the parser or as the catalog has it), and its schema when known (NULL:
 * the statement did not qualify it; subscribers match any schema then). */
struct writes_rel {
    const char *schema;
    const char *name;
};

struct writes_event {
    struct database *db;
    enum writes_source source;
    const struct writes_rel *rels;
    int n;
    /* Every relation of db may have changed (DDL, a write whose tables are
     * not known, a gap in the logical stream): rels is then empty. */
    bool all;
};

/* A subscriber's callback. */
typedef void (*writes_fn)(const struct writes_event *ev, void *arg);

/* At most this many subscribers. */
#define WRITES_MAX_SUBSCRIBERS 4

/* Registers fn (at start, single-threaded). Returns false when full. */
bool writes_subscribe(writes_fn fn, void *arg);

/* Tells every subscriber, in registration order. */
void writes_committed(const struct writes_event *ev);

/* A source that may miss writes for db from now (open) until it tells
 * that it sees them all again (!open): the logical consumer when its slot
 * is lost. Subscribers that rely on it stop trusting what they hold. */
typedef void (*writes_gap_fn)(struct database *db, enum writes_source source, bool open, void *arg);
bool writes_subscribe_gap(writes_gap_fn fn, void *arg);
void writes_gap(struct database *db, enum writes_source source, bool open);

#endif
