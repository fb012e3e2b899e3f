/* hash.h - the string hash the modules' small tables share (FNV-1a): fast
 * on short names, good enough for open addressing and chained buckets. */
#ifndef SLUICE_HASH_H
#define SLUICE_HASH_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline uint32_t hash_str(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

static inline uint64_t hash_mix(uint64_t h, uint64_t v)
{
    h = (h ^ v) * 0xbf58476d1ce4e5b9ull;
    return h ^ (h >> 29);
}

/* A statement text's hash for the per-thread text caches (classify_rw.c,
 * cache_policy.c): four independent lanes of 8 bytes (a 900-byte ORM query
 * hashes in a quarter of the time one lane takes), seeded per thread (a
 * cache's address) so that colliding texts cannot be prepared in advance. */
static inline uint64_t hash_text(const char *s, size_t n, uint64_t seed)
{
    uint64_t a = seed ^ (n * 0x9e3779b97f4a7c15ull), b = seed + 1, c = seed + 2, d = seed + 3;
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        uint64_t v0, v1, v2, v3;
        memcpy(&v0, s + i, 8);
        memcpy(&v1, s + i + 8, 8);
        memcpy(&v2, s + i + 16, 8);
        memcpy(&v3, s + i + 24, 8);
        a = hash_mix(a, v0);
        b = hash_mix(b, v1);
        c = hash_mix(c, v2);
        d = hash_mix(d, v3);
    }
    uint64_t r = a ^ (b * 3) ^ (c * 5) ^ (d * 7);
    for (; i + 8 <= n; i += 8) {
        uint64_t v;
        memcpy(&v, s + i, 8);
        r = hash_mix(r, v);
    }
    uint64_t v = 0;
    memcpy(&v, s + i, n - i);
    r = (r ^ v) * 0x94d049bb133111ebull;
    r ^= r >> 31;
    r *= 0xbf58476d1ce4e5b9ull;
    r ^= r >> 32;
    return r;
}

#endif
