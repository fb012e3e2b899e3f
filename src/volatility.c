/* volatility.c - per-database function volatility from pg_proc
 * (volatility.h). */
#include "volatility.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"

/* How many names a database keeps (a workload with more distinct unknown
 * functions sends the rest to the primary), and how long an absent name
 * waits before it is asked about again. */
#define VOLATILITY_MAX_NAMES 4096
#define VOLATILITY_RETRY     (10 * 1000000LL)

enum vol_state {
    VS_QUEUED = 0, /* waiting for a lookup */
    VS_ASKED,      /* a lookup is running */
    VS_KNOWN,      /* v holds pg_proc's answer */
    VS_ABSENT,     /* not in pg_proc (or the lookup failed): again after retry_at */
};

struct vol_entry {
    char name[VOLATILITY_MAX_NAME];
    enum vol_state state;
    char v;
    int64_t retry_at;
};

struct volatility_cache {
    pthread_mutex_t lock;
    struct vol_entry *e; /* open addressing, cap a power of two */
    uint32_t cap, n;
    uint32_t queued;
};

/* db's cache, made on first use; two workers racing to make it agree on
 * the first one stored (compare-and-swap). */
static struct volatility_cache *cache_of(struct database *db)
{
    struct volatility_cache *vc = atomic_load_explicit(&db->volatility, memory_order_acquire);
    if (vc)
        return vc;
    vc = calloc(1, sizeof(*vc));
    if (!vc)
        abort();
    pthread_mutex_init(&vc->lock, NULL);
    struct volatility_cache *none = NULL;
    if (!atomic_compare_exchange_strong_explicit(&db->volatility, &none, vc, memory_order_acq_rel,
                                                 memory_order_acquire)) {
        pthread_mutex_destroy(&vc->lock);
        free(vc);
        return none;
    }
    return vc;
}

/* The entry of name, or where it goes (e->name[0] == 0); NULL when the
 * table is full or name too long. Lock held. */
static struct vol_entry *slot(struct volatility_cache *vc, const char *name)
{
    if (strlen(name) >= VOLATILITY_MAX_NAME)
        return NULL;
    if (vc->n * 2 >= vc->cap) {
        if (vc->cap >= 2 * VOLATILITY_MAX_NAMES)
            goto probe;
        uint32_t ncap = vc->cap ? vc->cap * 2 : 64;
        struct vol_entry *ne = calloc(ncap, sizeof(*ne));
        if (!ne)
            abort();
        for (uint32_t i = 0; i < vc->cap; i++) {
            if (!vc->e[i].name[0])
                continue;
            uint32_t k = hash_str(vc->e[i].name) & (ncap - 1);
            while (ne[k].name[0])
                k = (k + 1) & (ncap - 1);
            ne[k] = vc->e[i];
        }
        free(vc->e);
        vc->e = ne;
        vc->cap = ncap;
    }
probe:
    for (uint32_t k = hash_str(name) & (vc->cap - 1), i = 0; i < vc->cap;
         k = (k + 1) & (vc->cap - 1), i++) {
        if (!vc->e[k].name[0])
            return vc->n < VOLATILITY_MAX_NAMES ? &vc->e[k] : NULL;
        if (!strcmp(vc->e[k].name, name))
            return &vc->e[k];
    }
    return NULL;
}

char volatility_get(struct database *db, const char *name, int64_t now)
{
    struct volatility_cache *vc = cache_of(db);
    char v = 0;
    pthread_mutex_lock(&vc->lock);
    struct vol_entry *e = slot(vc, name);
    if (e && !e->name[0]) {
        memcpy(e->name, name, strlen(name) + 1);
        e->state = VS_QUEUED;
        vc->n++;
        vc->queued++;
    } else if (e && e->state == VS_KNOWN) {
        v = e->v;
    } else if (e && (e->state == VS_ABSENT || e->state == VS_ASKED) && now >= e->retry_at) {
        e->state = VS_QUEUED;
        vc->queued++;
    }
    pthread_mutex_unlock(&vc->lock);
    return v;
}

bool volatility_pending(struct database *db)
{
    struct volatility_cache *vc = atomic_load_explicit(&db->volatility, memory_order_acquire);
    if (!vc)
        return false;
    pthread_mutex_lock(&vc->lock);
    bool any = vc->queued > 0;
    pthread_mutex_unlock(&vc->lock);
    return any;
}

int volatility_take(struct database *db, char names[][VOLATILITY_MAX_NAME], int64_t now)
{
    struct volatility_cache *vc = cache_of(db);
    int n = 0;
    pthread_mutex_lock(&vc->lock);
    for (uint32_t i = 0; i < vc->cap && n < VOLATILITY_BATCH && vc->queued > 0; i++) {
        struct vol_entry *e = &vc->e[i];
        if (!e->name[0] || e->state != VS_QUEUED)
            continue;
        e->state = VS_ASKED;
        e->retry_at = now + VOLATILITY_RETRY; /* a lookup that never answers */
        vc->queued--;
        memcpy(names[n++], e->name, strlen(e->name) + 1);
    }
    pthread_mutex_unlock(&vc->lock);
    return n;
}

void volatility_store(struct database *db, const char *name, char v, int64_t now)
{
    struct volatility_cache *vc = cache_of(db);
    pthread_mutex_lock(&vc->lock);
    struct vol_entry *e = slot(vc, name);
    if (e && e->name[0]) {
        if (v == 'i' || v == 's' || v == 'v') {
            e->state = VS_KNOWN;
            e->v = v;
        } else {
            e->state = VS_ABSENT;
            e->retry_at = now + VOLATILITY_RETRY;
        }
    }
    pthread_mutex_unlock(&vc->lock);
}

void volatility_free(struct database *db)
{
    struct volatility_cache *vc = atomic_load_explicit(&db->volatility, memory_order_acquire);
    if (!vc)
        return;
    pthread_mutex_destroy(&vc->lock);
    free(vc->e);
    free(vc);
    atomic_store_explicit(&db->volatility, NULL, memory_order_release);
}
