/* iobuf.c - recycled I/O buffers. */
#include "iobuf.h"

#include <stdlib.h>
#include <string.h>

void iobuf_cache_init(struct iobuf_cache *c, uint32_t size, int max_free)
{
    memset(c, 0, sizeof(*c));
    c->size = size;
    c->max_free = max_free;
}

void iobuf_cache_destroy(struct iobuf_cache *c)
{
    while (c->free) {
        struct iobuf *b = c->free;
        c->free = b->next_free;
        free(b);
    }
    c->n_free = 0;
}

static struct iobuf *iobuf_new(uint32_t cap, bool pooled)
{
    struct iobuf *b = malloc(sizeof(*b) + cap);
    if (!b)
        abort();
    b->start = b->end = 0;
    b->cap = cap;
    b->pooled = pooled;
    b->next_free = NULL;
    return b;
}

struct iobuf *iobuf_get(struct iobuf_cache *c)
{
    struct iobuf *b = c->free;
    if (b) {
        c->free = b->next_free;
        c->n_free--;
        b->start = b->end = 0;
        return b;
    }
    c->n_allocated++;
    return iobuf_new(c->size, true);
}

void iobuf_put(struct iobuf_cache *c, struct iobuf *b)
{
    if (!b)
        return;
    if (!b->pooled || b->cap != c->size || c->n_free >= c->max_free) {
        if (b->pooled)
            c->n_allocated--;
        free(b);
        return;
    }
    b->next_free = c->free;
    c->free = b;
    c->n_free++;
}

void iobuf_compact(struct iobuf *b)
{
    if (b->start == 0)
        return;
    uint32_t n = b->end - b->start;
    if (n)
        memmove(b->data, b->data + b->start, n);
    b->start = 0;
    b->end = n;
}

void iobuf_reserve(struct iobuf_cache *c, struct iobuf **bp, size_t n)
{
    struct iobuf *b = *bp;
    if (!b) {
        b = *bp = (n <= c->size) ? iobuf_get(c) : iobuf_new((uint32_t)n, false);
        if (b->cap >= n)
            return;
    }
    if (iobuf_room(b) >= n)
        return;
    iobuf_compact(b);
    if (iobuf_room(b) >= n)
        return;
    size_t need = (size_t)b->end + n;
    if (need > 0x7fffffffu)
        abort(); /* callers bound what they buffer far below this */
    size_t cap = b->cap ? (size_t)b->cap * 2 : 4096;
    while (cap < need)
        cap *= 2;
    struct iobuf *nb = iobuf_new((uint32_t)cap, false);
    memcpy(nb->data, b->data, b->end);
    nb->end = b->end;
    iobuf_put(c, b);
    *bp = nb;
}

void iobuf_append(struct iobuf_cache *c, struct iobuf **bp, const void *p, size_t n)
{
    iobuf_reserve(c, bp, n);
    memcpy((*bp)->data + (*bp)->end, p, n);
    (*bp)->end += (uint32_t)n;
}
