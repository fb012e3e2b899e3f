/* cache_store.c - the in-process result cache store: sharded hash tables of
 * reference-counted entries, LRU lists with TinyLFU admission, per-table
 * generations with per-table entry lists, a registry of fills in progress.
 * docs/design.md ("Result cache store") explains the choices. */
#include "cache_store.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "list.h"

#define FLIGHT_BUCKETS    64   /* per shard: fills in progress are few */
#define SKETCH_ROWS       4    /* count-min rows */
#define SKETCH_MAX        15   /* a counter saturates here (4 bits' worth, as TinyLFU) */
#define SKETCH_WIDTH      4    /* counters per row per bucket: little collision noise */
#define SKETCH_PERIOD     10   /* halve every SKETCH_PERIOD * buckets increments */
#define BYTES_PER_BUCKET  1024 /* one bucket per this much of a shard's budget */
#define MIN_BUCKETS       16
#define MAX_BUCKETS       (1u << 20)
#define TABLE_MAP_INITIAL 64
#define SHARD_BITS        4 /* the top bits of a key's hash pick its shard */

_Static_assert(CACHE_SHARDS == 1 << SHARD_BITS, "CACHE_SHARDS is 2^SHARD_BITS");

/* A table id's generation. Never freed while the store lives (tables are
 * few), so entries and fills point at it and a hit checks a generation with
 * one load, no map lookup. */
struct cache_table {
    struct cache_table *next; /* map chain, under the map lock */
    uint64_t id;
    _Atomic uint64_t gen;     /* invalidations so far */
    _Atomic uint64_t dropped; /* entries they dropped */
    _Atomic uint32_t linked;  /* entries in its lists now (0: an invalidation scans none) */
    /* The entries that read it, per shard, each list under its shard's lock,
     * so invalidation drops them without a lock order between shards. */
    struct list entries[CACHE_SHARDS];
};

/* One table an entry read, as of its fill. */
struct cache_entry_table {
    struct list link; /* in t->entries[shard] */
    struct cache_entry *e;
    struct cache_table *t;
    uint64_t gen; /* t->gen when the fill began */
};

struct cache_entry {
    struct cache_entry *next; /* bucket chain, under the shard lock */
    struct list lru;          /* the shard's LRU list, most recent first */
    struct cache_shard *sh;
    uint64_t hash;
    uint64_t expires;
    size_t bytes; /* the size of this allocation, accounted in sh->bytes */
    size_t key_len;
    size_t value_len;
    uint32_t n_tables;
    uint32_t owner;        /* its slot in the store's owners */
    _Atomic uint32_t refs; /* the shard's while linked, plus one per reader */
    _Atomic uint64_t memo; /* cache_entry_memo(): 0 until a reader sets it */
    struct cache_entry_table tables[];
    /* then the key, then the value */
};

struct cache_flight {
    struct cache_flight *next; /* the shard's flight chain */
    struct cache_shard *sh;
    uint64_t hash;
    struct cache_waiter *head, **tail;
    size_t key_len;
    uint8_t key[];
};

struct cache_fill_table {
    struct cache_table *t;
    uint64_t gen;
};

struct cache_fill {
    uint64_t epoch; /* the store's clear count at the start */
    unsigned owner; /* the slot its entry is accounted to */
    size_t n;
    struct cache_fill_table t[];
};

struct cache_shard {
    pthread_mutex_t lock;
    struct cache_store *store;
    unsigned index;
    struct cache_entry **buckets;
    size_t bmask;
    struct list lru;
    struct cache_flight *flights[FLIGHT_BUCKETS];
    uint8_t *sketch;      /* SKETCH_ROWS rows of smask + 1 counters */
    size_t sketch_period; /* increments between two halvings */
    size_t smask;
    size_t sketch_adds;
    size_t budget;        /* this shard's share of the entries' bytes */
    _Atomic size_t bytes; /* added under the lock, subtracted by a last release */
    uint64_t entries;     /* the counters below are under the lock */
    uint64_t hits, misses, expired, stores, evictions, invalidated;
    uint64_t refused_stale, refused_too_big, refused_admission, refused_no_room;
    uint64_t flights_led, flight_waits;
    char pad[64]; /* keeps two shards' hot fields off one cache line */
};

/* An owner's figures (cache_store_owner()). Its counters are atomics, not
 * the shard's: entries of one owner live in every shard, and a reader's
 * last release gives bytes back outside any lock. */
enum { OWN_ENTRIES = 0, OWN_BYTES, OWN_EVICTED, OWN_EXPIRED, OWN_INVALIDATED, OWN_CLEARED, OWN_N };
/* shard_unlink()'s reason when none is counted: replaced, stale, store freed. */
#define OWN_NONE OWN_N

struct cache_owner {
    _Atomic uint64_t id; /* 0: free; set last (release), under the table map's lock */
    _Atomic uint64_t ctr[OWN_N];
    char name[CACHE_OWNER_NAME];
    char pad[8]; /* 128 bytes: two owners' counters off one cache line */
};

struct cache_store {
    struct cache_shard shards[CACHE_SHARDS];
    struct cache_owner owners[CACHE_OWNERS];
    size_t max_bytes;
    size_t max_entry_size;
    size_t overhead;
    void *(*alloc)(size_t n, void *arg);
    void (*free)(void *p, size_t n, void *arg);
    void *alloc_arg;
    uint64_t seed;
    _Atomic uint64_t epoch; /* bumped by every clear */
    _Atomic uint64_t invalidations;
    _Atomic uint64_t clears;
    pthread_mutex_t tlock; /* the table map, and owners taking a slot */
    struct cache_table **tbuckets;
    size_t tmask;
    size_t n_tables;
};

/* --- hashing ------------------------------------------------------------ */

static inline uint64_t rotl64(uint64_t x, int r)
{
    return (x << r) | (x >> (64 - r));
}

static inline uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

/* 8 bytes at a time (keys hold statement texts and parameters, too long
 * for hash.h's byte-wise FNV), seeded per store so that clients cannot
 * aim keys at one bucket. */
static uint64_t hash_key(uint64_t seed, const uint8_t *p, size_t n)
{
    uint64_t h = seed ^ ((uint64_t)n * 0x9e3779b97f4a7c15ULL);
    size_t len = n;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        w *= 0x87c37b91114253d5ULL;
        w = rotl64(w, 31);
        w *= 0x4cf5ad432745937fULL;
        h ^= w;
        h = rotl64(h, 27) * 5 + 0x52dce729;
        p += 8;
        n -= 8;
    }
    uint64_t w = 0;
    if (n)
        memcpy(&w, p, n);
    w *= 0x87c37b91114253d5ULL;
    w = rotl64(w, 31);
    w *= 0x4cf5ad432745937fULL;
    h ^= w ^ len;
    return mix64(h);
}

static inline struct cache_shard *shard_of(struct cache_store *s, uint64_t hash)
{
    return &s->shards[hash >> (64 - SHARD_BITS)]; /* buckets use the low bits */
}

unsigned cache_store_key_shard(struct cache_store *s, const void *key, size_t key_len)
{
    return (unsigned)(hash_key(s->seed, key, key_len) >> (64 - SHARD_BITS));
}

/* --- memory ------------------------------------------------------------- */

static void *default_alloc(size_t n, void *arg)
{
    (void)arg;
    return malloc(n);
}

static void default_free(void *p, size_t n, void *arg)
{
    (void)n;
    (void)arg;
    free(p);
}

static size_t pow2_floor(size_t n)
{
    size_t p = 1;
    while (p * 2 <= n)
        p *= 2;
    return p;
}

static size_t shard_buckets(size_t max_bytes)
{
    size_t n = pow2_floor(max_bytes / CACHE_SHARDS / BYTES_PER_BUCKET + 1);
    if (n < MIN_BUCKETS)
        n = MIN_BUCKETS;
    if (n > MAX_BUCKETS)
        n = MAX_BUCKETS;
    return n;
}

size_t cache_store_fill_budget(size_t max_bytes, size_t max_entry_size)
{
    return max_bytes / 8 > max_entry_size ? max_bytes / 8 : max_entry_size;
}

size_t cache_store_overhead(size_t max_bytes)
{
    size_t nb = shard_buckets(max_bytes);
    size_t per_shard = nb * sizeof(struct cache_entry *) + SKETCH_ROWS * SKETCH_WIDTH * nb;
    return sizeof(struct cache_store) + CACHE_SHARDS * per_shard;
}

size_t cache_store_entry_cost(size_t key_len, size_t value_len, size_t n_tables)
{
    return sizeof(struct cache_entry) + n_tables * sizeof(struct cache_entry_table) + key_len +
           value_len;
}

static inline const uint8_t *entry_key(const struct cache_entry *e)
{
    return (const uint8_t *)&e->tables[e->n_tables];
}

const uint8_t *cache_entry_value(const struct cache_entry *e, size_t *len)
{
    *len = e->value_len;
    return entry_key(e) + e->key_len;
}

uint64_t cache_entry_memo(const struct cache_entry *e)
{
    return atomic_load_explicit(&((struct cache_entry *)e)->memo, memory_order_relaxed);
}

void cache_entry_set_memo(struct cache_entry *e, uint64_t v)
{
    atomic_store_explicit(&e->memo, v, memory_order_relaxed);
}

uint64_t cache_entry_expires(const struct cache_entry *e)
{
    return e->expires;
}

/* Drops a reference; the last one frees the entry and gives its bytes back
 * to the shard. */
static void entry_unref(struct cache_entry *e)
{
    if (atomic_fetch_sub_explicit(&e->refs, 1, memory_order_acq_rel) != 1)
        return;
    struct cache_shard *sh = e->sh;
    struct cache_store *s = sh->store;
    size_t bytes = e->bytes;
    struct cache_owner *o = &s->owners[e->owner];
    s->free(e, bytes, s->alloc_arg);
    atomic_fetch_sub_explicit(&sh->bytes, bytes, memory_order_relaxed);
    atomic_fetch_sub_explicit(&o->ctr[OWN_BYTES], bytes, memory_order_relaxed);
}

void cache_entry_release(struct cache_entry *e)
{
    if (e)
        entry_unref(e);
}

/* --- the shard's table, under its lock ------------------------------------ */

static struct cache_entry *shard_find(struct cache_shard *sh, uint64_t hash, const void *key,
                                      size_t key_len)
{
    for (struct cache_entry *e = sh->buckets[hash & sh->bmask]; e; e = e->next)
        if (e->hash == hash && e->key_len == key_len &&
            (key_len == 0 || memcmp(entry_key(e), key, key_len) == 0))
            return e;
    return NULL;
}

static inline void owner_add(struct cache_shard *sh, const struct cache_entry *e, int ctr,
                             uint64_t n)
{
    atomic_fetch_add_explicit(&sh->store->owners[e->owner].ctr[ctr], n, memory_order_relaxed);
}

/* Takes e out of the shard (bucket, LRU, its tables' lists) and drops the
 * shard's reference: a reader still holding it keeps it alive, and its
 * bytes counted, until its release. why: the owner's counter of the
 * reason (OWN_EVICTED...), or OWN_NONE. */
static void shard_unlink(struct cache_shard *sh, struct cache_entry *e, int why)
{
    struct cache_entry **pp = &sh->buckets[e->hash & sh->bmask];
    while (*pp != e)
        pp = &(*pp)->next;
    *pp = e->next;
    list_del(&e->lru);
    for (uint32_t i = 0; i < e->n_tables; i++) {
        list_del(&e->tables[i].link);
        atomic_fetch_sub_explicit(&e->tables[i].t->linked, 1, memory_order_relaxed);
    }
    sh->entries--;
    owner_add(sh, e, OWN_ENTRIES, (uint64_t)-1); /* wraps: a decrement */
    if (why != OWN_NONE)
        owner_add(sh, e, why, 1);
    entry_unref(e);
}

static void shard_link(struct cache_shard *sh, struct cache_entry *e)
{
    size_t b = e->hash & sh->bmask;
    e->next = sh->buckets[b];
    sh->buckets[b] = e;
    list_add_head(&sh->lru, &e->lru);
    for (uint32_t i = 0; i < e->n_tables; i++) {
        list_add_tail(&e->tables[i].t->entries[sh->index], &e->tables[i].link);
        atomic_fetch_add_explicit(&e->tables[i].t->linked, 1, memory_order_relaxed);
    }
    sh->entries++;
    atomic_fetch_add_explicit(&sh->bytes, e->bytes, memory_order_relaxed);
    owner_add(sh, e, OWN_ENTRIES, 1);
    owner_add(sh, e, OWN_BYTES, e->bytes);
}

/* Alive at now and read from no table invalidated since its fill. */
static bool entry_fresh(const struct cache_entry *e, uint64_t now)
{
    if (e->expires <= now)
        return false;
    for (uint32_t i = 0; i < e->n_tables; i++)
        if (atomic_load_explicit(&e->tables[i].t->gen, memory_order_acquire) != e->tables[i].gen)
            return false;
    return true;
}

/* --- the frequency sketch (TinyLFU), under the shard lock ---------------- */

static inline size_t sketch_index(const struct cache_shard *sh, uint64_t x, int row)
{
    uint64_t a = x, b = (x >> 32) | 1; /* double hashing: one row each */
    return (size_t)row * (sh->smask + 1) + (size_t)((a + (uint64_t)row * b) & sh->smask);
}

static uint32_t sketch_freq(const struct cache_shard *sh, uint64_t hash)
{
    uint64_t x = mix64(hash ^ 0x5bd1e9955bd1e995ULL);
    uint32_t f = SKETCH_MAX;
    for (int r = 0; r < SKETCH_ROWS; r++) {
        uint8_t c = sh->sketch[sketch_index(sh, x, r)];
        if (c < f)
            f = c;
    }
    return f;
}

/* Counts one use of hash; every SKETCH_PERIOD uses per bucket (about ten per
 * entry the shard holds, as TinyLFU's sample) all counters are halved, so
 * that the past fades and a once-hot key can be replaced. */
static void sketch_add(struct cache_shard *sh, uint64_t hash)
{
    uint64_t x = mix64(hash ^ 0x5bd1e9955bd1e995ULL);
    for (int r = 0; r < SKETCH_ROWS; r++) {
        uint8_t *c = &sh->sketch[sketch_index(sh, x, r)];
        if (*c < SKETCH_MAX)
            (*c)++;
    }
    if (++sh->sketch_adds >= sh->sketch_period) {
        size_t n = SKETCH_ROWS * (sh->smask + 1);
        for (size_t i = 0; i < n; i++)
            sh->sketch[i] >>= 1;
        sh->sketch_adds = 0;
    }
}

/* --- store ---------------------------------------------------------------- */

static bool shard_init(struct cache_store *s, struct cache_shard *sh, unsigned index, size_t nb,
                       size_t budget)
{
    sh->store = s;
    sh->index = index;
    list_init(&sh->lru);
    sh->bmask = nb - 1;
    sh->smask = SKETCH_WIDTH * nb - 1;
    sh->sketch_period = SKETCH_PERIOD * nb;
    sh->budget = budget;
    atomic_init(&sh->bytes, 0);
    sh->buckets = s->alloc(nb * sizeof(*sh->buckets), s->alloc_arg);
    sh->sketch = s->alloc(SKETCH_ROWS * SKETCH_WIDTH * nb, s->alloc_arg);
    if (!sh->buckets || !sh->sketch)
        return false;
    memset(sh->buckets, 0, nb * sizeof(*sh->buckets));
    memset(sh->sketch, 0, SKETCH_ROWS * SKETCH_WIDTH * nb);
    pthread_mutex_init(&sh->lock, NULL);
    return true;
}

static uint64_t store_seed(const struct cache_store *s)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return mix64((uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32) ^ (uint64_t)(uintptr_t)s);
}

struct cache_store *cache_store_new(const struct cache_store_opts *opts)
{
    size_t overhead = cache_store_overhead(opts->max_bytes);
    if (opts->max_bytes <= overhead ||
        (opts->max_bytes - overhead) / CACHE_SHARDS < opts->max_entry_size)
        return NULL;
    void *(*alloc)(size_t, void *) = opts->alloc ? opts->alloc : default_alloc;
    struct cache_store *s = alloc(sizeof(*s), opts->alloc_arg);
    if (!s)
        return NULL;
    memset(s, 0, sizeof(*s));
    s->alloc = alloc;
    s->free = opts->free ? opts->free : default_free;
    s->alloc_arg = opts->alloc_arg;
    s->max_bytes = opts->max_bytes;
    s->max_entry_size = opts->max_entry_size;
    s->overhead = overhead;
    s->seed = store_seed(s);
    atomic_init(&s->epoch, 0);
    atomic_init(&s->invalidations, 0);
    atomic_init(&s->clears, 0);
    for (unsigned i = 0; i < CACHE_OWNERS; i++) {
        atomic_init(&s->owners[i].id, 0);
        for (int k = 0; k < OWN_N; k++)
            atomic_init(&s->owners[i].ctr[k], 0);
    }
    atomic_init(&s->owners[CACHE_OWNER_OTHERS].id, UINT64_MAX); /* never probed: no id's */
    snprintf(s->owners[CACHE_OWNER_OTHERS].name, CACHE_OWNER_NAME, "%s", CACHE_OWNER_OTHERS_NAME);
    size_t nb = shard_buckets(opts->max_bytes);
    size_t budget = (opts->max_bytes - overhead) / CACHE_SHARDS;
    bool ok = true;
    for (unsigned i = 0; i < CACHE_SHARDS; i++)
        if (!shard_init(s, &s->shards[i], i, nb, budget)) {
            ok = false;
            break;
        }
    s->tbuckets = calloc(TABLE_MAP_INITIAL, sizeof(*s->tbuckets));
    s->tmask = TABLE_MAP_INITIAL - 1;
    pthread_mutex_init(&s->tlock, NULL);
    if (!ok || !s->tbuckets) {
        cache_store_free(s);
        return NULL;
    }
    return s;
}

void cache_store_free(struct cache_store *s)
{
    if (!s)
        return;
    size_t nb = s->shards[0].bmask + 1;
    for (unsigned i = 0; i < CACHE_SHARDS; i++) {
        struct cache_shard *sh = &s->shards[i];
        if (!sh->buckets || !sh->sketch) { /* cache_store_new() failed here */
            if (sh->buckets)
                s->free(sh->buckets, nb * sizeof(*sh->buckets), s->alloc_arg);
            if (sh->sketch)
                s->free(sh->sketch, SKETCH_ROWS * SKETCH_WIDTH * nb, s->alloc_arg);
            break;
        }
        while (!list_empty(&sh->lru))
            shard_unlink(sh, list_entry(sh->lru.next, struct cache_entry, lru), OWN_NONE);
        for (int b = 0; b < FLIGHT_BUCKETS; b++)
            while (sh->flights[b]) {
                struct cache_flight *f = sh->flights[b];
                sh->flights[b] = f->next;
                free(f);
            }
        s->free(sh->buckets, nb * sizeof(*sh->buckets), s->alloc_arg);
        s->free(sh->sketch, SKETCH_ROWS * SKETCH_WIDTH * nb, s->alloc_arg);
        pthread_mutex_destroy(&sh->lock);
    }
    if (s->tbuckets) {
        for (size_t b = 0; b <= s->tmask; b++)
            while (s->tbuckets[b]) {
                struct cache_table *t = s->tbuckets[b];
                s->tbuckets[b] = t->next;
                free(t);
            }
        free(s->tbuckets);
    }
    pthread_mutex_destroy(&s->tlock);
    s->free(s, sizeof(*s), s->alloc_arg);
}

/* --- lookups ---------------------------------------------------------------- */

/* The lookup proper, under sh's lock: the entry with a reader's reference,
 * or NULL (a stale or expired one found is dropped on the way). */
static struct cache_entry *shard_get(struct cache_shard *sh, uint64_t hash, const void *key,
                                     size_t key_len, uint64_t now)
{
    sketch_add(sh, hash);
    struct cache_entry *e = shard_find(sh, hash, key, key_len);
    if (e && !entry_fresh(e, now)) {
        bool expired = e->expires <= now;
        sh->expired += expired;
        shard_unlink(sh, e, expired ? OWN_EXPIRED : OWN_NONE);
        e = NULL;
    }
    if (!e) {
        sh->misses++;
        return NULL;
    }
    sh->hits++;
    list_del(&e->lru);
    list_add_head(&sh->lru, &e->lru);
    atomic_fetch_add_explicit(&e->refs, 1, memory_order_relaxed);
    return e;
}

struct cache_entry *cache_store_get(struct cache_store *s, const void *key, size_t key_len,
                                    uint64_t now_usec)
{
    uint64_t hash = hash_key(s->seed, key, key_len);
    struct cache_shard *sh = shard_of(s, hash);
    pthread_mutex_lock(&sh->lock);
    struct cache_entry *e = shard_get(sh, hash, key, key_len, now_usec);
    pthread_mutex_unlock(&sh->lock);
    return e;
}

/* --- tables --------------------------------------------------------------- */

static void table_map_grow(struct cache_store *s)
{
    size_t n = (s->tmask + 1) * 2;
    struct cache_table **nb = calloc(n, sizeof(*nb));
    if (!nb)
        return; /* longer chains, still correct */
    for (size_t b = 0; b <= s->tmask; b++)
        while (s->tbuckets[b]) {
            struct cache_table *t = s->tbuckets[b];
            s->tbuckets[b] = t->next;
            size_t i = mix64(t->id) & (n - 1);
            t->next = nb[i];
            nb[i] = t;
        }
    free(s->tbuckets);
    s->tbuckets = nb;
    s->tmask = n - 1;
}

/* The slot of table id, made if create (NULL if not found, or out of
 * memory). Under the map lock. */
static struct cache_table *table_find(struct cache_store *s, uint64_t id, bool create)
{
    struct cache_table **pp = &s->tbuckets[mix64(id) & s->tmask];
    for (struct cache_table *t = *pp; t; t = t->next)
        if (t->id == id)
            return t;
    if (!create)
        return NULL;
    struct cache_table *t = malloc(sizeof(*t));
    if (!t)
        return NULL;
    t->id = id;
    atomic_init(&t->gen, 0);
    atomic_init(&t->dropped, 0);
    for (int i = 0; i < CACHE_SHARDS; i++)
        list_init(&t->entries[i]);
    t->next = *pp;
    *pp = t;
    if (++s->n_tables > s->tmask + 1)
        table_map_grow(s);
    return t;
}

uint64_t cache_store_table_gen(struct cache_store *s, uint64_t table)
{
    pthread_mutex_lock(&s->tlock);
    struct cache_table *t = table_find(s, table, false);
    uint64_t gen = t ? atomic_load_explicit(&t->gen, memory_order_acquire) : 0;
    pthread_mutex_unlock(&s->tlock);
    return gen;
}

struct cache_fill *cache_store_fill_begin(struct cache_store *s, unsigned owner,
                                          const uint64_t *tables, size_t n)
{
    struct cache_fill *f = malloc(sizeof(*f) + n * sizeof(f->t[0]));
    if (!f)
        return NULL;
    f->epoch = atomic_load_explicit(&s->epoch, memory_order_acquire);
    f->owner = owner < CACHE_OWNERS ? owner : CACHE_OWNER_OTHERS;
    f->n = 0;
    pthread_mutex_lock(&s->tlock);
    for (size_t i = 0; i < n; i++) {
        struct cache_table *t = table_find(s, tables[i], true);
        if (!t) {
            pthread_mutex_unlock(&s->tlock);
            free(f);
            return NULL;
        }
        size_t j = 0;
        while (j < f->n && f->t[j].t != t) /* a statement names few tables */
            j++;
        if (j < f->n)
            continue;
        f->t[f->n].t = t;
        f->t[f->n].gen = atomic_load_explicit(&t->gen, memory_order_acquire);
        f->n++;
    }
    pthread_mutex_unlock(&s->tlock);
    return f;
}

void cache_fill_free(struct cache_fill *f)
{
    free(f);
}

/* Drops the entries of shard sh that read t; returns how many. */
static size_t shard_drop_table(struct cache_shard *sh, struct cache_table *t)
{
    size_t n = 0;
    pthread_mutex_lock(&sh->lock);
    struct list *head = &t->entries[sh->index];
    while (!list_empty(head)) {
        struct cache_entry_table *et = list_entry(head->next, struct cache_entry_table, link);
        shard_unlink(sh, et->e, OWN_INVALIDATED);
        n++;
    }
    sh->invalidated += n;
    pthread_mutex_unlock(&sh->lock);
    return n;
}

size_t cache_store_invalidate_table(struct cache_store *s, uint64_t table)
{
    atomic_fetch_add_explicit(&s->invalidations, 1, memory_order_relaxed);
    pthread_mutex_lock(&s->tlock);
    /* No slot means no fill ever named the table, so nothing to drop; one
     * is made for its counters, and if that fails nothing is lost. */
    struct cache_table *t = table_find(s, table, true);
    pthread_mutex_unlock(&s->tlock);
    if (!t)
        return 0;
    /* The bump comes first: from here lookups skip the entries and puts of
     * earlier fills are refused; then each shard's list is emptied under
     * its lock, which also waits out a put that checked before the bump. */
    atomic_fetch_add_explicit(&t->gen, 1, memory_order_seq_cst);
    /* No entry read it: no shard to lock (the common write, to a table
     * nothing cached reads). An entry linked meanwhile by a put that
     * checked before the bump is skipped by every lookup (its generation is
     * old) and goes with the next eviction or invalidation. */
    if (atomic_load_explicit(&t->linked, memory_order_seq_cst) == 0)
        return 0;
    size_t n = 0;
    for (unsigned i = 0; i < CACHE_SHARDS; i++)
        n += shard_drop_table(&s->shards[i], t);
    atomic_fetch_add_explicit(&t->dropped, n, memory_order_relaxed);
    return n;
}

void cache_store_clear(struct cache_store *s)
{
    atomic_fetch_add_explicit(&s->clears, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->epoch, 1, memory_order_seq_cst);
    for (unsigned i = 0; i < CACHE_SHARDS; i++) {
        struct cache_shard *sh = &s->shards[i];
        pthread_mutex_lock(&sh->lock);
        while (!list_empty(&sh->lru))
            shard_unlink(sh, list_entry(sh->lru.next, struct cache_entry, lru), OWN_CLEARED);
        pthread_mutex_unlock(&sh->lock);
    }
}

/* --- puts --------------------------------------------------------------------- */

const char *cache_put_result_str(enum cache_put_result r)
{
    switch (r) {
    case CACHE_PUT_STORED:
        return "stored";
    case CACHE_PUT_STALE:
        return "stale";
    case CACHE_PUT_TOO_BIG:
        return "too big";
    case CACHE_PUT_NOT_ADMITTED:
        return "not admitted";
    case CACHE_PUT_NO_ROOM:
        return "no room";
    case CACHE_PUT_NO_MEMORY:
        return "no memory";
    }
    return "?";
}

static bool fill_stale(struct cache_store *s, const struct cache_fill *f)
{
    if (atomic_load_explicit(&s->epoch, memory_order_acquire) != f->epoch)
        return true;
    for (size_t i = 0; i < f->n; i++)
        if (atomic_load_explicit(&f->t[i].t->gen, memory_order_acquire) != f->t[i].gen)
            return true;
    return false;
}

/* Makes room for e in sh by evicting from the LRU end, if TinyLFU admits
 * it: every entry to evict must be used less often than e's key (or be
 * expired). Nothing is evicted unless e then fits, or an entry a reader
 * holds is in the way. Under the lock. */
static enum cache_put_result shard_make_room(struct cache_shard *sh, const struct cache_entry *e,
                                             uint64_t now)
{
    size_t used = atomic_load_explicit(&sh->bytes, memory_order_relaxed);
    if (used + e->bytes <= sh->budget)
        return CACHE_PUT_STORED;
    uint32_t freq = sketch_freq(sh, e->hash);
    size_t freed = 0;
    struct list *pos = sh->lru.prev;
    while (used - freed + e->bytes > sh->budget) {
        if (pos == &sh->lru)
            return CACHE_PUT_NO_ROOM; /* the rest is held by readers */
        struct cache_entry *v = list_entry(pos, struct cache_entry, lru);
        if (v->expires > now && sketch_freq(sh, v->hash) >= freq) {
            /* The victim stays, moved to the MRU end: left at the LRU end,
             * a frequent entry would refuse every newcomer while the one-off
             * entries ahead of it are never considered. */
            list_del(&v->lru);
            list_add_head(&sh->lru, &v->lru);
            return CACHE_PUT_NOT_ADMITTED;
        }
        /* An entry a reader holds frees its bytes only at its release. */
        if (atomic_load_explicit(&v->refs, memory_order_relaxed) == 1)
            freed += v->bytes;
        pos = pos->prev;
    }
    while (sh->lru.prev != pos) {
        shard_unlink(sh, list_entry(sh->lru.prev, struct cache_entry, lru), OWN_EVICTED);
        sh->evictions++;
    }
    /* A reader may have held a victim counted as held; recheck exactly. */
    if (atomic_load_explicit(&sh->bytes, memory_order_relaxed) + e->bytes > sh->budget)
        return CACHE_PUT_NO_ROOM;
    return CACHE_PUT_STORED;
}

static struct cache_entry *entry_make(struct cache_store *s, const struct cache_fill *f,
                                      uint64_t hash, const void *key, size_t key_len,
                                      const void *value, size_t value_len, uint64_t expires)
{
    size_t bytes = cache_store_entry_cost(key_len, value_len, f->n);
    struct cache_entry *e = s->alloc(bytes, s->alloc_arg);
    if (!e)
        return NULL;
    memset(e, 0, sizeof(*e));
    e->sh = shard_of(s, hash);
    e->hash = hash;
    e->expires = expires;
    e->bytes = bytes;
    e->key_len = key_len;
    e->value_len = value_len;
    e->n_tables = (uint32_t)f->n;
    e->owner = f->owner;
    atomic_init(&e->refs, 1);
    atomic_init(&e->memo, 0);
    for (size_t i = 0; i < f->n; i++) {
        e->tables[i].e = e;
        e->tables[i].t = f->t[i].t;
        e->tables[i].gen = f->t[i].gen;
        list_init(&e->tables[i].link);
    }
    uint8_t *p = (uint8_t *)&e->tables[f->n];
    if (key_len)
        memcpy(p, key, key_len);
    if (value_len)
        memcpy(p + key_len, value, value_len);
    return e;
}

enum cache_put_result cache_store_put(struct cache_store *s, const struct cache_fill *f,
                                      const void *key, size_t key_len, const void *value,
                                      size_t value_len, uint64_t now_usec, uint64_t expires_usec)
{
    uint64_t hash = hash_key(s->seed, key, key_len);
    struct cache_shard *sh = shard_of(s, hash);
    size_t bytes = cache_store_entry_cost(key_len, value_len, f->n);
    if (value_len > s->max_entry_size || bytes > sh->budget) {
        pthread_mutex_lock(&sh->lock);
        sh->refused_too_big++;
        pthread_mutex_unlock(&sh->lock);
        return CACHE_PUT_TOO_BIG;
    }
    /* The copy is made before the lock, so that a big answer's memcpy does
     * not stall the shard's readers; a refused one is freed at once. */
    struct cache_entry *e = entry_make(s, f, hash, key, key_len, value, value_len, expires_usec);
    enum cache_put_result r;
    pthread_mutex_lock(&sh->lock);
    if (!e) {
        r = CACHE_PUT_NO_MEMORY;
        sh->refused_no_room++;
    } else if (fill_stale(s, f)) {
        r = CACHE_PUT_STALE;
        sh->refused_stale++;
    } else {
        struct cache_entry *old = shard_find(sh, hash, key, key_len);
        if (old) /* a refill replaces, whatever its frequency */
            shard_unlink(sh, old, OWN_NONE);
        r = shard_make_room(sh, e, now_usec);
        if (r == CACHE_PUT_STORED) {
            shard_link(sh, e);
            sh->stores++;
            e = NULL;
        } else if (r == CACHE_PUT_NOT_ADMITTED) {
            sh->refused_admission++;
        } else {
            sh->refused_no_room++;
        }
    }
    pthread_mutex_unlock(&sh->lock);
    if (e)
        s->free(e, e->bytes, s->alloc_arg);
    return r;
}

/* --- single-flight ---------------------------------------------------------- */

const char *cache_flight_role_str(enum cache_flight_role r)
{
    switch (r) {
    case CACHE_FLIGHT_LEAD:
        return "lead";
    case CACHE_FLIGHT_WAIT:
        return "wait";
    case CACHE_FLIGHT_ALONE:
        return "alone";
    case CACHE_FLIGHT_HIT:
        return "hit";
    }
    return "?";
}

static struct cache_flight **flight_slot(struct cache_shard *sh, uint64_t hash)
{
    return &sh->flights[(hash >> 20) % FLIGHT_BUCKETS];
}

static struct cache_flight *flight_find(struct cache_shard *sh, uint64_t hash, const void *key,
                                        size_t key_len)
{
    for (struct cache_flight *f = *flight_slot(sh, hash); f; f = f->next)
        if (f->hash == hash && f->key_len == key_len &&
            (key_len == 0 || memcmp(f->key, key, key_len) == 0))
            return f;
    return NULL;
}

/* Under sh's lock. */
static enum cache_flight_role shard_join(struct cache_shard *sh, uint64_t hash, const void *key,
                                         size_t key_len, struct cache_waiter *w,
                                         struct cache_flight **lead)
{
    struct cache_flight *f = flight_find(sh, hash, key, key_len);
    if (f) {
        w->next = NULL;
        w->end = CACHE_FLIGHT_PENDING;
        *f->tail = w;
        f->tail = &w->next;
        sh->flight_waits++;
        return CACHE_FLIGHT_WAIT;
    }
    f = malloc(sizeof(*f) + key_len);
    if (!f)
        return CACHE_FLIGHT_ALONE;
    f->sh = sh;
    f->hash = hash;
    f->head = NULL;
    f->tail = &f->head;
    f->key_len = key_len;
    if (key_len)
        memcpy(f->key, key, key_len);
    struct cache_flight **slot = flight_slot(sh, hash);
    f->next = *slot;
    *slot = f;
    sh->flights_led++;
    *lead = f;
    return CACHE_FLIGHT_LEAD;
}

enum cache_flight_role cache_store_flight_join(struct cache_store *s, const void *key,
                                               size_t key_len, struct cache_waiter *w,
                                               struct cache_flight **lead)
{
    uint64_t hash = hash_key(s->seed, key, key_len);
    struct cache_shard *sh = shard_of(s, hash);
    pthread_mutex_lock(&sh->lock);
    enum cache_flight_role r = shard_join(sh, hash, key, key_len, w, lead);
    pthread_mutex_unlock(&sh->lock);
    return r;
}

enum cache_flight_role cache_store_get_or_join(struct cache_store *s, const void *key,
                                               size_t key_len, uint64_t now_usec,
                                               struct cache_waiter *w, struct cache_entry **hit,
                                               struct cache_flight **lead)
{
    uint64_t hash = hash_key(s->seed, key, key_len);
    struct cache_shard *sh = shard_of(s, hash);
    enum cache_flight_role r = CACHE_FLIGHT_HIT;
    pthread_mutex_lock(&sh->lock);
    *hit = shard_get(sh, hash, key, key_len, now_usec);
    if (!*hit)
        r = shard_join(sh, hash, key, key_len, w, lead);
    pthread_mutex_unlock(&sh->lock);
    return r;
}

struct cache_waiter *cache_store_flight_leave(struct cache_store *s, struct cache_flight *lead,
                                              enum cache_flight_end end)
{
    (void)s;
    struct cache_shard *sh = lead->sh;
    pthread_mutex_lock(&sh->lock);
    struct cache_flight **pp = flight_slot(sh, lead->hash);
    while (*pp != lead)
        pp = &(*pp)->next;
    *pp = lead->next;
    struct cache_waiter *head = lead->head;
    for (struct cache_waiter *w = head; w; w = w->next)
        w->end = end;
    pthread_mutex_unlock(&sh->lock);
    free(lead);
    return head;
}

bool cache_store_flight_cancel(struct cache_store *s, const void *key, size_t key_len,
                               struct cache_waiter *w)
{
    uint64_t hash = hash_key(s->seed, key, key_len);
    struct cache_shard *sh = shard_of(s, hash);
    bool found = false;
    pthread_mutex_lock(&sh->lock);
    struct cache_flight *f = flight_find(sh, hash, key, key_len);
    if (f) {
        struct cache_waiter **pp = &f->head;
        while (*pp && *pp != w)
            pp = &(*pp)->next;
        if (*pp) {
            *pp = w->next;
            if (f->tail == &w->next)
                f->tail = pp;
            w->next = NULL;
            found = true;
        }
    }
    pthread_mutex_unlock(&sh->lock);
    return found;
}

/* --- owners ------------------------------------------------------------------- */

/* Open addressing over the slots but the last: an id's probe ends at its
 * slot, or at a free one (ids are set once and never cleared). */
static int owner_probe(struct cache_store *s, uint64_t id, bool *free_slot)
{
    unsigned n = CACHE_OWNERS - 1, i = (unsigned)(mix64(id) % n);
    for (unsigned k = 0; k < n; k++, i = (i + 1) % n) {
        uint64_t v = atomic_load_explicit(&s->owners[i].id, memory_order_acquire);
        if (v == id || v == 0) {
            *free_slot = v == 0;
            return (int)i;
        }
    }
    *free_slot = false;
    return -1;
}

int cache_store_owner_find(struct cache_store *s, uint64_t id)
{
    bool free_slot;
    int i = id ? owner_probe(s, id, &free_slot) : -1;
    return i < 0 || free_slot ? -1 : i;
}

unsigned cache_store_owner(struct cache_store *s, uint64_t id, const char *name)
{
    if (!id)
        return CACHE_OWNER_OTHERS;
    bool free_slot;
    int i = owner_probe(s, id, &free_slot);
    if (i >= 0 && !free_slot)
        return (unsigned)i;
    /* The first fill of id: the slot is taken under the lock, its name
     * written before its id is published (readers load the id first). */
    pthread_mutex_lock(&s->tlock);
    i = owner_probe(s, id, &free_slot);
    if (i >= 0 && free_slot) {
        snprintf(s->owners[i].name, CACHE_OWNER_NAME, "%s", name ? name : "");
        atomic_store_explicit(&s->owners[i].id, id, memory_order_release);
    }
    pthread_mutex_unlock(&s->tlock);
    return i < 0 ? CACHE_OWNER_OTHERS : (unsigned)i;
}

void cache_store_owner_stats(struct cache_store *s, unsigned slot, struct cache_owner_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (slot >= CACHE_OWNERS)
        return;
    struct cache_owner *o = &s->owners[slot];
    out->id = atomic_load_explicit(&o->id, memory_order_acquire);
    if (!out->id)
        return;
    memcpy(out->name, o->name, CACHE_OWNER_NAME);
    uint64_t v[OWN_N];
    for (int k = 0; k < OWN_N; k++)
        v[k] = atomic_load_explicit(&o->ctr[k], memory_order_relaxed);
    out->entries = v[OWN_ENTRIES];
    out->bytes = v[OWN_BYTES];
    out->evictions = v[OWN_EVICTED];
    out->expired = v[OWN_EXPIRED];
    out->invalidated = v[OWN_INVALIDATED];
    out->cleared = v[OWN_CLEARED];
}

/* --- statistics --------------------------------------------------------------- */

void cache_store_stats(struct cache_store *s, struct cache_store_stats *out)
{
    memset(out, 0, sizeof(*out));
    for (unsigned i = 0; i < CACHE_SHARDS; i++) {
        struct cache_shard *sh = &s->shards[i];
        pthread_mutex_lock(&sh->lock);
        out->hits += sh->hits;
        out->misses += sh->misses;
        out->expired += sh->expired;
        out->stores += sh->stores;
        out->evictions += sh->evictions;
        out->invalidated += sh->invalidated;
        out->refused_stale += sh->refused_stale;
        out->refused_too_big += sh->refused_too_big;
        out->refused_admission += sh->refused_admission;
        out->refused_no_room += sh->refused_no_room;
        out->flights += sh->flights_led;
        out->flight_waits += sh->flight_waits;
        out->entries += sh->entries;
        out->bytes += atomic_load_explicit(&sh->bytes, memory_order_relaxed);
        pthread_mutex_unlock(&sh->lock);
    }
    out->invalidations = atomic_load_explicit(&s->invalidations, memory_order_relaxed);
    out->clears = atomic_load_explicit(&s->clears, memory_order_relaxed);
    out->overhead_bytes = s->overhead;
    out->max_bytes = s->max_bytes;
    pthread_mutex_lock(&s->tlock);
    out->tables = s->n_tables;
    pthread_mutex_unlock(&s->tlock);
}

void cache_store_tables_each(struct cache_store *s,
                             void (*cb)(uint64_t table, uint64_t gen, uint64_t dropped, void *arg),
                             void *arg)
{
    pthread_mutex_lock(&s->tlock);
    for (size_t b = 0; b <= s->tmask; b++)
        for (struct cache_table *t = s->tbuckets[b]; t; t = t->next)
            cb(t->id, atomic_load_explicit(&t->gen, memory_order_acquire),
               atomic_load_explicit(&t->dropped, memory_order_relaxed), arg);
    pthread_mutex_unlock(&s->tlock);
}
