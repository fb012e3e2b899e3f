/* pg_snapshot.c - PostgreSQL's pg_snapshot text (pg_snapshot.h). */
#include "pg_snapshot.h"

#include <stdlib.h>

/* An id's decimal digits at *p (at most 20, so a uint64 holds them), its
 * low 32 bits in *out; false if there are none. */
static bool read_id(const char **p, const char *end, uint32_t *out)
{
    uint64_t v = 0;
    int digits = 0;
    while (*p < end && **p >= '0' && **p <= '9') {
        if (++digits > 20)
            return false;
        v = v * 10 + (uint64_t)(**p - '0'); /* wraps past 2^64: only the low bits matter */
        (*p)++;
    }
    *out = (uint32_t)v;
    return digits > 0;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

bool pg_snapshot_parse(struct pg_snapshot *s, const char *text, size_t len)
{
    const char *p = text, *end = text + len;
    s->n_xip = 0;
    if (!read_id(&p, end, &s->xmin) || p == end || *p++ != ':' || !read_id(&p, end, &s->xmax) ||
        p == end || *p++ != ':')
        return false;
    while (p < end) {
        uint32_t x;
        if (!read_id(&p, end, &x))
            return false;
        if (s->n_xip == s->cap) {
            size_t cap = s->cap ? s->cap * 2 : 16;
            uint32_t *v = realloc(s->xip, cap * sizeof(*v));
            if (!v)
                abort();
            s->xip = v;
            s->cap = cap;
        }
        s->xip[s->n_xip++] = x;
        if (p < end && *p++ != ',')
            return false;
        if (p == end && p[-1] == ',')
            return false;
    }
    if (s->n_xip > 1)
        qsort(s->xip, s->n_xip, sizeof(*s->xip), cmp_u32);
    return true;
}

bool pg_snapshot_shows(const struct pg_snapshot *s, uint32_t xid)
{
    if (pg_xid_precedes(xid, s->xmin))
        return true;
    if (!pg_xid_precedes(xid, s->xmax))
        return false; /* not ended when s was taken */
    return !s->n_xip || !bsearch(&xid, s->xip, s->n_xip, sizeof(*s->xip), cmp_u32);
}

bool pg_snapshot_past(const struct pg_snapshot *s, uint32_t xid)
{
    return pg_xid_precedes(xid, s->xmin);
}

void pg_snapshot_free(struct pg_snapshot *s)
{
    free(s->xip);
    s->xip = NULL;
    s->n_xip = s->cap = 0;
}
