/* fuzz_cache_redis_url.c - libFuzzer target for `cache = redis://...`
 * (cache_redis_url_parse()).
 *
 * The input is copied into a heap block of exactly its length plus the NUL
 * (so ASan sees any read past it) and parsed. Checked:
 *  - a failure leaves a non-empty, NUL-terminated message;
 *  - a success has a host of 1..CACHE_REDIS_HOST_MAX characters without
 *    '@', '/', '[' or ']', a port in 1..65535 and a DB in 0..15, and the
 *    input started with "redis://";
 *  - the address written back as a URL parses to the same address (the
 *    parser and its inverse agree). */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache_redis.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void require(bool cond)
{
    if (!cond)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *url = malloc(size + 1);
    if (!url)
        return 0;
    memcpy(url, data, size);
    url[size] = '\0';
    struct cache_redis_addr a, b;
    char err[256];
    err[0] = 'x';
    err[1] = '\0';
    memset(err + 2, 'y', sizeof(err) - 2);
    if (cache_redis_url_parse(url, &a, err, sizeof(err)) != 0) {
        size_t n = strnlen(err, sizeof(err));
        require(n > 0 && n < sizeof(err));
        free(url);
        return 0;
    }
    require(strncmp(url, "redis://", 8) == 0);
    size_t hl = strnlen(a.host, sizeof(a.host));
    require(hl >= 1 && hl <= CACHE_REDIS_HOST_MAX);
    require(!strpbrk(a.host, "@/[]"));
    require(a.port >= 1 && a.port <= 65535);
    require(a.db >= 0 && a.db <= 15);
    char again[CACHE_REDIS_HOST_MAX + 64];
    bool v6 = strchr(a.host, ':') != NULL;
    snprintf(again, sizeof(again), "redis://%s%s%s:%d/%d", v6 ? "[" : "", a.host, v6 ? "]" : "",
             a.port, a.db);
    require(cache_redis_url_parse(again, &b, err, sizeof(err)) == 0);
    require(strcmp(a.host, b.host) == 0 && a.port == b.port && a.db == b.db);
    free(url);
    return 0;
}
