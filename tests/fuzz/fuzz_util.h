/* fuzz_util.h - what the libFuzzer targets share: the entry point's
 * prototype, a check that aborts (libFuzzer reports it), and the input
 * copied to a heap block of exactly its length, so that ASan sees any read
 * past it. */
#ifndef SLUICE_FUZZ_UTIL_H
#define SLUICE_FUZZ_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static inline void require(bool cond)
{
    if (!cond)
        abort();
}

/* The input in its own block (1 byte for an empty one); NULL: no memory. */
static inline char *fuzz_copy(const uint8_t *data, size_t size)
{
    char *p = malloc(size ? size : 1);
    if (p && size)
        memcpy(p, data, size);
    return p;
}

#endif
