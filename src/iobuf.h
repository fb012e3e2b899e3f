/* iobuf.h - byte buffers for socket I/O, recycled through a per-worker free
 * list so that the hot path never calls malloc, and idle connections hold no
 * buffer at all (their memory is the connection struct only). */
#ifndef SLUICE_IOBUF_H
#define SLUICE_IOBUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct iobuf {
    uint32_t start;  /* first unconsumed byte */
    uint32_t end;    /* one past the last byte */
    uint32_t cap;    /* size of data[] */
    uint32_t pooled; /* 1 if cap is the standard size and it returns to the free list */
    struct iobuf *next_free;
    uint8_t data[];
};

struct iobuf_cache {
    struct iobuf *free;
    int n_free;
    int max_free;
    uint32_t size; /* standard capacity */
    int64_t n_allocated;
};

void iobuf_cache_init(struct iobuf_cache *c, uint32_t size, int max_free);
void iobuf_cache_destroy(struct iobuf_cache *c);

/* A buffer of the standard size, empty. Aborts on out-of-memory. */
struct iobuf *iobuf_get(struct iobuf_cache *c);
/* Returns b to the cache (or frees a non-standard one). b may be NULL. */
void iobuf_put(struct iobuf_cache *c, struct iobuf *b);

static inline uint32_t iobuf_len(const struct iobuf *b)
{
    return b->end - b->start;
}
static inline uint32_t iobuf_room(const struct iobuf *b)
{
    return b->cap - b->end;
}
/* Moves the unconsumed bytes to the front. */
void iobuf_compact(struct iobuf *b);

/* Appends n bytes to *bp, getting a buffer or growing it (to a heap buffer
 * larger than the standard size) when needed. */
void iobuf_append(struct iobuf_cache *c, struct iobuf **bp, const void *p, size_t n);
/* Makes room for at least n more bytes at the end of *bp. */
void iobuf_reserve(struct iobuf_cache *c, struct iobuf **bp, size_t n);

#endif
