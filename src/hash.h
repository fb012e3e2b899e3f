/* hash.h - the string hash the modules' small tables share (FNV-1a): fast
 * on short names, good enough for open addressing and chained buckets. */
#ifndef SLUICE_HASH_H
#define SLUICE_HASH_H

#include <stdint.h>

static inline uint32_t hash_str(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

#endif
