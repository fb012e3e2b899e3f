/* prepared_set.c - statement hashes and sets of them (prepared_set.h). */
#include "prepared_set.h"

#include <stdlib.h>
#include <string.h>

#include "auth.h"

/* ---- hashing ---------------------------------------------------------------- */

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))

static uint64_t get64le(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

uint64_t prepared_siphash(const uint8_t key[16], const void *data, size_t n)
{
    const uint8_t *in = data;
    uint64_t k0 = get64le(key), k1 = get64le(key + 8);
    uint64_t v0 = 0x736f6d6570736575ull ^ k0, v1 = 0x646f72616e646f6dull ^ k1;
    uint64_t v2 = 0x6c7967656e657261ull ^ k0, v3 = 0x7465646279746573ull ^ k1;
#define SIPROUND                                                                                   \
    do {                                                                                           \
        v0 += v1;                                                                                  \
        v1 = ROTL(v1, 13);                                                                         \
        v1 ^= v0;                                                                                  \
        v0 = ROTL(v0, 32);                                                                         \
        v2 += v3;                                                                                  \
        v3 = ROTL(v3, 16);                                                                         \
        v3 ^= v2;                                                                                  \
        v0 += v3;                                                                                  \
        v3 = ROTL(v3, 21);                                                                         \
        v3 ^= v0;                                                                                  \
        v2 += v1;                                                                                  \
        v1 = ROTL(v1, 17);                                                                         \
        v1 ^= v2;                                                                                  \
        v2 = ROTL(v2, 32);                                                                         \
    } while (0)
    size_t full = n - (n % 8);
    for (size_t i = 0; i < full; i += 8) {
        uint64_t m = get64le(in + i);
        v3 ^= m;
        SIPROUND;
        SIPROUND;
        v0 ^= m;
    }
    uint64_t b = (uint64_t)n << 56;
    for (size_t i = 0; i < n % 8; i++)
        b |= (uint64_t)in[full + i] << (8 * i);
    v3 ^= b;
    SIPROUND;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    SIPROUND;
#undef SIPROUND
    return v0 ^ v1 ^ v2 ^ v3;
}

static uint8_t hash_key[16];
static bool hash_key_set;

uint64_t prepared_hash(const void *data, size_t n)
{
    if (!hash_key_set) {
        auth_random_bytes(hash_key, sizeof(hash_key));
        hash_key_set = true;
    }
    uint64_t h = prepared_siphash(hash_key, data, n);
    return h ? h : 1; /* 0 marks an empty slot */
}

/* ---- a server's statements ---------------------------------------------------- */

struct prepared_slot {
    uint64_t h;    /* 0 = empty */
    uint64_t used; /* LRU tick */
};

struct prepared_set {
    uint32_t cap; /* power of 2 */
    uint32_t n;
    uint64_t tick;
    struct prepared_slot slot[];
};

static struct prepared_set *set_alloc(uint32_t cap)
{
    struct prepared_set *ps = calloc(1, sizeof(*ps) + cap * sizeof(struct prepared_slot));
    if (!ps)
        abort();
    ps->cap = cap;
    return ps;
}

struct prepared_set *prepared_set_new(void)
{
    return set_alloc(16);
}

void prepared_set_free(struct prepared_set *ps)
{
    free(ps);
}

static uint32_t set_find(const struct prepared_set *ps, uint64_t h)
{
    uint32_t mask = ps->cap - 1;
    for (uint32_t i = (uint32_t)h & mask;; i = (i + 1) & mask) {
        if (ps->slot[i].h == h || ps->slot[i].h == 0)
            return i;
    }
}

void prepared_set_add(struct prepared_set **psp, uint64_t h)
{
    struct prepared_set *ps = *psp;
    if (!ps)
        ps = *psp = prepared_set_new();
    if ((ps->n + 1) * 2 > ps->cap) {
        struct prepared_set *nps = set_alloc(ps->cap * 2);
        nps->tick = ps->tick;
        for (uint32_t i = 0; i < ps->cap; i++) {
            if (ps->slot[i].h) {
                nps->slot[set_find(nps, ps->slot[i].h)] = ps->slot[i];
                nps->n++;
            }
        }
        free(ps);
        ps = *psp = nps;
    }
    uint32_t i = set_find(ps, h);
    if (!ps->slot[i].h) {
        ps->slot[i].h = h;
        ps->n++;
    }
    ps->slot[i].used = ++ps->tick;
}

bool prepared_set_has(struct prepared_set *ps, uint64_t h)
{
    if (!ps)
        return false;
    uint32_t i = set_find(ps, h);
    if (!ps->slot[i].h)
        return false;
    ps->slot[i].used = ++ps->tick;
    return true;
}

void prepared_set_remove(struct prepared_set *ps, uint64_t h)
{
    if (!ps)
        return;
    uint32_t mask = ps->cap - 1;
    uint32_t i = set_find(ps, h);
    if (!ps->slot[i].h)
        return;
    ps->slot[i].h = 0;
    ps->n--;
    /* Backward-shift deletion keeps linear probing correct without
     * tombstones. */
    uint32_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (!ps->slot[j].h)
            return;
        uint32_t home = (uint32_t)ps->slot[j].h & mask;
        bool between = i <= j ? (i < home && home <= j) : (i < home || home <= j);
        if (between)
            continue;
        ps->slot[i] = ps->slot[j];
        ps->slot[j].h = 0;
        i = j;
    }
}

uint64_t prepared_set_evict(struct prepared_set *ps)
{
    if (!ps || !ps->n)
        return 0;
    uint32_t best = UINT32_MAX;
    for (uint32_t i = 0; i < ps->cap; i++)
        if (ps->slot[i].h && (best == UINT32_MAX || ps->slot[i].used < ps->slot[best].used))
            best = i;
    uint64_t h = ps->slot[best].h;
    prepared_set_remove(ps, h);
    return h;
}

int prepared_set_count(const struct prepared_set *ps)
{
    return ps ? (int)ps->n : 0;
}

void prepared_set_clear(struct prepared_set **ps)
{
    prepared_set_free(*ps);
    *ps = NULL;
}
