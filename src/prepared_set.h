/* prepared_set.h - the statement names sluice gives servers, and a set of
 * statements (by the hash of text and parameter types) with least recently
 * used eviction: each server's prepared statements (for
 * max_prepared_statements) and each pool's statements known to parse.
 *
 * Server-side names are "sl_" + a keyed 64-bit hash (SipHash-2-4, random key
 * per process) of the statement's text and parameter types: clients of a
 * pool that prepare the same statement share it on each server, and a client
 * cannot choose text that collides with another client's statement. */
#ifndef SLUICE_PREPARED_SET_H
#define SLUICE_PREPARED_SET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* SipHash-2-4 of data under the process key (random, made on first use). */
uint64_t prepared_hash(const void *data, size_t n);
/* SipHash-2-4 with an explicit 16-byte key (test vectors). */
uint64_t prepared_siphash(const uint8_t key[16], const void *data, size_t n);

/* A set of statement hashes; NULL is the empty set. */
struct prepared_set;
struct prepared_set *prepared_set_new(void);
void prepared_set_free(struct prepared_set *ps);
/* Empties *ps (frees it; *ps becomes NULL): DISCARD ALL, a closed server. */
void prepared_set_clear(struct prepared_set **ps);
/* Adds h (creating the set when *ps is NULL); touches it for LRU. */
void prepared_set_add(struct prepared_set **ps, uint64_t h);
/* Whether h is in the set (touches it for LRU). */
bool prepared_set_has(struct prepared_set *ps, uint64_t h);
void prepared_set_remove(struct prepared_set *ps, uint64_t h);
/* Removes the least recently used hash and returns it, 0 if empty. */
uint64_t prepared_set_evict(struct prepared_set *ps);
int prepared_set_count(const struct prepared_set *ps);

#endif
