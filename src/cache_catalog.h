/* cache_catalog.h - what the result cache must know of the relations a
 * statement names, per database, from pg_class: whether answers over them
 * may be cached (ordinary, partitioned, view or materialized view, not
 * temporary, not a system catalog), which schemas hold a relation of that
 * name (for the [cache] rules), and every relation a write to which
 * changes what it reads: a view's base relations (through views), and
 * each one's inheritance ancestors and descendants (partitions).
 *
 * Relations are known by schema and name: a table id (cache_table_id()) is
 * a hash of the database, the schema and the name, resolved by pg_class
 * (the OID's row), so that two sluice instances agree on it and a write
 * named by the logical decoding stream (schema and name) finds it without
 * a lookup. It stands for the OID between two DDL statements: DDL through
 * sluice drops every answer of the database and asks every name again, and
 * DDL elsewhere is seen as such by the logical stream. An unqualified
 * name stands for every schema's relation of that name (which one
 * search_path picks is the server's business): a read depends on all of
 * them, a write changes all of them.
 *
 * Like volatility.h: the cache asks cache_catalog_get() while it decides;
 * a name not known yet is queued (that statement is not cached) and a
 * janitor pass looks the queued names up on an idle server of the
 * database's primary (replica_check.c). Answers are asked again after
 * CACHE_CATALOG_REFRESH, and at once after DDL through sluice. Shared by
 * every worker: one short mutex per database, never held across I/O. */
#ifndef SLUICE_CACHE_CATALOG_H
#define SLUICE_CACHE_CATALOG_H

#include <stdbool.h>
#include <stdint.h>

#include "conn.h"

#define CACHE_CATALOG_BATCH    32
#define CACHE_CATALOG_MAX_NAME 128
#define CACHE_CATALOG_MAX_IDS  32  /* related relations kept; more: not cacheable */
#define CACHE_CATALOG_SCHEMAS  256 /* bytes of "schema,schema" kept; more: not cacheable */
#define CACHE_CATALOG_REFRESH  (60 * 1000000LL)

/* The id of relation schema.relname (as the catalog spells them) of
 * database dbname; "" and "" stand for the whole database. */
uint64_t cache_table_id(const char *dbname, const char *schema, const char *relname);

enum cache_catalog_answer {
    CCAT_UNKNOWN = 0, /* not known yet: queued for a lookup */
    CCAT_ABSENT,      /* no relation of that name */
    CCAT_NO,          /* there is one, but answers over it are not cached */
    CCAT_YES,         /* cacheable: see struct cache_catalog_rel */
};
const char *cache_catalog_answer_str(enum cache_catalog_answer a);

struct cache_catalog_rel {
    char schemas[CACHE_CATALOG_SCHEMAS]; /* "public" or "a,b": every schema with one ("": too many)
                                          */
    int n_ids;
    uint64_t ids[CACHE_CATALOG_MAX_IDS]; /* itself and its related relations */
};

/* What db's catalog says of name (as written: "t" or "schema.t"); on
 * CCAT_YES out is filled; on CCAT_NO too, with n_ids 0 when the related
 * relations did not fit (a write to it then names only its own ids: one
 * per schema of out->schemas). */
enum cache_catalog_answer cache_catalog_get(struct database *db, const char *name, int64_t now,
                                            struct cache_catalog_rel *out);

/* Whether db has names waiting for a lookup. */
bool cache_catalog_pending(struct database *db);
/* Takes up to CACHE_CATALOG_BATCH waiting names into names. */
int cache_catalog_take(struct database *db, char names[][CACHE_CATALOG_MAX_NAME], int64_t now);
/* The answer for name: found (a relation of that name exists), ok (all of
 * it and its related relations may be cached), schemas ("a,b") and
 * related ("schema.name" of itself and each related relation,
 * comma-separated). !found with failed: the lookup failed, asked again
 * later. Each related relation's id and name go to the hook set by
 * cache_catalog_set_note(), for the figures by table. */
void cache_catalog_store(struct database *db, const char *name, bool failed, bool found, bool ok,
                         const char *schemas, const char *related, int64_t now);
/* fn(id, dbname, "schema.name") for every relation an answer names. */
void cache_catalog_set_note(void (*fn)(uint64_t id, const char *dbname, const char *name));

/* DDL went through: every name is asked again before it is used. */
void cache_catalog_forget(struct database *db);
/* Frees db's catalog (the database goes). */
void cache_catalog_free(struct database *db);

#endif
