/* cache_redis_url.h - `cache = redis://HOST:PORT[/DB]`: the Redis tier's
 * address, parsed where the config is checked (cache_redis.h uses it). */
#ifndef SLUICE_CACHE_REDIS_URL_H
#define SLUICE_CACHE_REDIS_URL_H

#include <stddef.h>

/* The longest host name of a URL. */
#define CACHE_REDIS_HOST_MAX 255

struct cache_redis_addr {
    char host[CACHE_REDIS_HOST_MAX + 1]; /* name or address, without brackets */
    int port;                            /* 1..65535 */
    int db;                              /* 0..15 */
};

/* Parses "redis://HOST:PORT[/DB]" into out. HOST is a name (letters,
 * digits, '-', '.', '_'), an IPv4 address or an IPv6 address in brackets;
 * PORT 1..65535 (required); DB 0..15 (default 0). No credentials, query or
 * trailing characters. Returns 0, or -1 with a message naming the problem
 * in err (errlen bytes; out is then unspecified). */
int cache_redis_url_parse(const char *url, struct cache_redis_addr *out, char *err, size_t errlen);

#endif
