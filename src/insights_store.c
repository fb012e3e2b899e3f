/* insights_store.c - per-fingerprint statistics of one worker
 * (insights_store.h). */
#include "insights_store.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

struct entry {
    struct insights_stat st;
    struct entry *hnext;         /* hash chain */
    struct entry *newer, *older; /* recency list */
    char *text;
    struct insights_sample *sample;
    size_t text_len;
};

struct shape_slot {
    uint64_t shape, fp;
};

struct insights_store {
    size_t max, n;
    struct entry **buckets;
    size_t bmask;
    struct entry *newest, *oldest;
    struct shape_slot *shapes;
    size_t smask;
    size_t text_bytes;
    _Atomic uint64_t removed;
};

static size_t pow2_at_least(size_t n)
{
    size_t p = 16;
    while (p < n)
        p *= 2;
    return p;
}

static size_t slot_of(uint64_t fp, size_t mask)
{
    return (size_t)((fp ^ (fp >> 29)) * 0x9e3779b97f4a7c15ULL >> 7) & mask;
}

struct insights_store *insights_store_new(size_t max, size_t shapes)
{
    struct insights_store *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->max = max ? max : 1;
    size_t nb = pow2_at_least(s->max * 2), ns = pow2_at_least(shapes);
    s->buckets = calloc(nb, sizeof(*s->buckets));
    s->shapes = calloc(ns, sizeof(*s->shapes));
    if (!s->buckets || !s->shapes) {
        insights_store_free(s);
        return NULL;
    }
    s->bmask = nb - 1;
    s->smask = ns - 1;
    return s;
}

static void entry_free(struct insights_store *s, struct entry *e)
{
    s->text_bytes -= e->text_len + (e->sample ? e->sample->bytes : 0);
    free(e->text);
    free(e->sample);
    free(e);
}

void insights_store_reset(struct insights_store *s)
{
    for (struct entry *e = s->newest, *next; e; e = next) {
        next = e->older;
        entry_free(s, e);
    }
    memset(s->buckets, 0, (s->bmask + 1) * sizeof(*s->buckets));
    s->newest = s->oldest = NULL;
    atomic_fetch_add_explicit(&s->removed, s->n, memory_order_release);
    s->n = 0;
}

void insights_store_free(struct insights_store *s)
{
    if (!s)
        return;
    if (s->buckets)
        insights_store_reset(s);
    free(s->buckets);
    free(s->shapes);
    free(s);
}

uint64_t insights_store_shape(const struct insights_store *s, uint64_t shape)
{
    const struct shape_slot *sl = &s->shapes[slot_of(shape, s->smask)];
    return sl->shape == shape ? sl->fp : 0;
}

void insights_store_set_shape(struct insights_store *s, uint64_t shape, uint64_t fp)
{
    struct shape_slot *sl = &s->shapes[slot_of(shape, s->smask)];
    sl->shape = shape;
    sl->fp = fp;
}

static struct entry *find(const struct insights_store *s, uint64_t fp)
{
    for (struct entry *e = s->buckets[slot_of(fp, s->bmask)]; e; e = e->hnext)
        if (e->st.fp == fp)
            return e;
    return NULL;
}

bool insights_store_has(const struct insights_store *s, uint64_t fp)
{
    return find(s, fp) != NULL;
}

static void unlink_recent(struct insights_store *s, struct entry *e)
{
    if (e->newer)
        e->newer->older = e->older;
    else
        s->newest = e->older;
    if (e->older)
        e->older->newer = e->newer;
    else
        s->oldest = e->newer;
    e->newer = e->older = NULL;
}

static void link_newest(struct insights_store *s, struct entry *e)
{
    e->older = s->newest;
    e->newer = NULL;
    if (s->newest)
        s->newest->newer = e;
    s->newest = e;
    if (!s->oldest)
        s->oldest = e;
}

static void evict_oldest(struct insights_store *s)
{
    struct entry *e = s->oldest;
    unlink_recent(s, e);
    for (struct entry **pp = &s->buckets[slot_of(e->st.fp, s->bmask)]; *pp; pp = &(*pp)->hnext)
        if (*pp == e) {
            *pp = e->hnext;
            break;
        }
    s->n--;
    atomic_fetch_add_explicit(&s->removed, 1, memory_order_release);
    entry_free(s, e);
}

bool insights_store_evict_oldest(struct insights_store *s)
{
    if (!s->oldest)
        return false;
    evict_oldest(s);
    return true;
}

static char *copy_text(const char *text, size_t len, size_t *out_len)
{
    if (len > INSIGHTS_TEXT_MAX)
        len = INSIGHTS_TEXT_MAX;
    char *t = malloc(len + 1);
    if (!t)
        return NULL;
    memcpy(t, text, len);
    t[len] = '\0';
    *out_len = len;
    return t;
}

bool insights_store_add(struct insights_store *s, uint64_t fp, const char *text, size_t len)
{
    if (find(s, fp))
        return true;
    struct entry *e = calloc(1, sizeof(*e));
    if (!e)
        return false;
    e->text = copy_text(text, len, &e->text_len);
    if (!e->text) {
        free(e);
        return false;
    }
    if (s->n == s->max)
        evict_oldest(s);
    e->st.fp = fp;
    s->text_bytes += e->text_len;
    size_t b = slot_of(fp, s->bmask);
    e->hnext = s->buckets[b];
    s->buckets[b] = e;
    link_newest(s, e);
    s->n++;
    return true;
}

void insights_store_record(struct insights_store *s, uint64_t fp, uint64_t usec, uint64_t rows,
                           bool failed, enum insights_where where, int64_t now)
{
    struct entry *e = find(s, fp);
    if (!e)
        return;
    struct insights_stat *st = &e->st;
    if (!st->calls)
        st->first_seen = now;
    st->last_seen = now;
    st->calls++;
    st->errors += failed;
    st->rows += rows;
    st->total_us += usec;
    if (usec > st->max_us)
        st->max_us = usec;
    st->where[where]++;
    st->hist[insights_bucket(usec)]++;
    if (s->newest != e) {
        unlink_recent(s, e);
        link_newest(s, e);
    }
}

struct insights_sample *insights_sample_new(const char *sql, size_t len, int nparams,
                                            const char *const *vals, const uint32_t *lens,
                                            const void *origin)
{
    if (nparams < 0 || len > INSIGHTS_SAMPLE_MAX)
        return NULL;
    size_t data = len + 1;
    for (int i = 0; i < nparams; i++) {
        data += vals[i] ? (size_t)lens[i] + 1 : 0;
        if (data > INSIGHTS_SAMPLE_MAX + 1)
            return NULL;
    }
    size_t head = sizeof(struct insights_sample) + (size_t)nparams * sizeof(char *);
    struct insights_sample *sm = malloc(head + data);
    if (!sm)
        return NULL;
    const char **params = (const char **)(sm + 1);
    char *p = (char *)sm + head;
    memcpy(p, sql, len);
    p[len] = '\0';
    sm->sql = p;
    p += len + 1;
    for (int i = 0; i < nparams; i++) {
        params[i] = NULL;
        if (!vals[i])
            continue;
        memcpy(p, vals[i], lens[i]);
        p[lens[i]] = '\0';
        params[i] = p;
        p += lens[i] + 1;
    }
    sm->origin = origin;
    sm->nparams = nparams;
    sm->params = params;
    sm->bytes = head + data;
    return sm;
}

struct insights_sample *insights_sample_dup(const struct insights_sample *sm)
{
    struct insights_sample *d = malloc(sm->bytes);
    if (!d)
        return NULL;
    memcpy(d, sm, sm->bytes);
    /* The pointers inside point into the block: moved with it. */
    ptrdiff_t delta = (const char *)d - (const char *)sm;
    const char **params = (const char **)(d + 1);
    d->sql = sm->sql + delta;
    for (int i = 0; i < d->nparams; i++)
        params[i] = sm->params[i] ? sm->params[i] + delta : NULL;
    d->params = params;
    return d;
}

void insights_store_sample(struct insights_store *s, uint64_t fp, struct insights_sample *sm)
{
    struct entry *e = sm ? find(s, fp) : NULL;
    if (!e || e->sample) {
        free(sm);
        return;
    }
    e->sample = sm;
    s->text_bytes += sm->bytes;
}

bool insights_store_wants_sample(const struct insights_store *s, uint64_t fp)
{
    const struct entry *e = find(s, fp);
    return e && !e->sample;
}

void insights_store_each(const struct insights_store *s, insights_store_fn fn, void *arg)
{
    for (const struct entry *e = s->newest; e; e = e->older)
        if (e->st.calls)
            fn(arg, &e->st, e->text, e->sample);
}

size_t insights_store_count(const struct insights_store *s)
{
    return s->n;
}

uint64_t insights_store_removed(const struct insights_store *s)
{
    return atomic_load_explicit(&s->removed, memory_order_acquire);
}

size_t insights_store_bytes(const struct insights_store *s)
{
    return sizeof(*s) + (s->bmask + 1) * sizeof(*s->buckets) + (s->smask + 1) * sizeof(*s->shapes) +
           s->n * sizeof(struct entry) + s->text_bytes + 2 * s->n; /* the texts' NULs */
}

/* ---- figures ---------------------------------------------------------------- */

unsigned insights_bucket(uint64_t usec)
{
    if (usec < 16)
        return (unsigned)usec;
    unsigned k = 63u - (unsigned)__builtin_clzll(usec);
    if (k > 38)
        return INSIGHTS_BUCKETS - 1;
    return 16 + (k - 4) * 8 + (unsigned)((usec >> (k - 3)) & 7);
}

uint64_t insights_bucket_mid(unsigned b)
{
    if (b < 16)
        return b;
    unsigned k = 4 + (b - 16) / 8, sub = (b - 16) % 8;
    uint64_t width = UINT64_C(1) << (k - 3);
    return (8 + sub) * width + width / 2;
}

uint64_t insights_quantile(const struct insights_stat *st, double q)
{
    uint64_t total = 0;
    for (unsigned b = 0; b < INSIGHTS_BUCKETS; b++)
        total += st->hist[b];
    if (!total)
        return 0;
    /* The smallest value with at least q of the calls at or below it. */
    uint64_t rank = (uint64_t)(q * (double)total + 0.999999);
    if (rank < 1)
        rank = 1;
    uint64_t seen = 0;
    for (unsigned b = 0; b < INSIGHTS_BUCKETS; b++) {
        seen += st->hist[b];
        if (seen >= rank) {
            uint64_t mid = insights_bucket_mid(b);
            return mid < st->max_us || !st->max_us ? mid : st->max_us;
        }
    }
    return st->max_us;
}

void insights_stat_merge(struct insights_stat *a, const struct insights_stat *b)
{
    if (!a->calls || (b->calls && b->first_seen < a->first_seen))
        a->first_seen = b->first_seen;
    if (b->last_seen > a->last_seen)
        a->last_seen = b->last_seen;
    a->calls += b->calls;
    a->errors += b->errors;
    a->rows += b->rows;
    a->total_us += b->total_us;
    if (b->max_us > a->max_us)
        a->max_us = b->max_us;
    for (int i = 0; i < INSIGHTS_WHERE_N; i++)
        a->where[i] += b->where[i];
    for (unsigned i = 0; i < INSIGHTS_BUCKETS; i++)
        a->hist[i] += b->hist[i];
}
