/* cache_redis_url.c - `cache = redis://HOST:PORT[/DB]` (cache_redis_url.h). */
#include <arpa/inet.h>
#include <stdbool.h>
#include <string.h>

#include "cache_redis_url.h"
#include "log.h"

static bool is_name_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '-' || ch == '.' || ch == '_';
}

/* Digits at *p (at most max_digits, no sign, no leading zeros but "0"), as
 * an int in [lo, hi]; *p moves past them. */
static bool parse_num(const char **p, int max_digits, int lo, int hi, int *out)
{
    const char *s = *p;
    int v = 0, n = 0;
    while (s[n] >= '0' && s[n] <= '9') {
        if (n == max_digits)
            return false;
        v = v * 10 + (s[n] - '0');
        n++;
    }
    if (n == 0 || (n > 1 && s[0] == '0') || v < lo || v > hi)
        return false;
    *p = s + n;
    *out = v;
    return true;
}

/* The host at *p into out->host; *p moves to what follows it. */
static bool parse_host(const char **p, struct cache_redis_addr *out, char *err, size_t errlen)
{
    const char *s = *p, *end;
    size_t len;
    if (*s == '[') {
        end = strchr(s, ']');
        if (!end) {
            log_format(err, errlen, "missing ']' after the IPv6 address");
            return false;
        }
        len = (size_t)(end - s - 1);
        unsigned char buf[sizeof(struct in6_addr)];
        if (len == 0 || len > CACHE_REDIS_HOST_MAX) {
            log_format(err, errlen, "bad IPv6 address");
            return false;
        }
        memcpy(out->host, s + 1, len);
        out->host[len] = '\0';
        if (inet_pton(AF_INET6, out->host, buf) != 1) {
            log_format(err, errlen, "bad IPv6 address \"%s\"", out->host);
            return false;
        }
        *p = end + 1;
        return true;
    }
    for (end = s; is_name_char(*end); end++)
        ;
    len = (size_t)(end - s);
    if (len == 0) {
        log_format(err, errlen, "no host");
        return false;
    }
    if (len > CACHE_REDIS_HOST_MAX) {
        log_format(err, errlen, "host name longer than %d characters", CACHE_REDIS_HOST_MAX);
        return false;
    }
    memcpy(out->host, s, len);
    out->host[len] = '\0';
    /* All digits and dots: it must be an IPv4 address. */
    if (strspn(out->host, "0123456789.") == len) {
        struct in_addr a;
        if (inet_pton(AF_INET, out->host, &a) != 1) {
            log_format(err, errlen, "bad IPv4 address \"%s\"", out->host);
            return false;
        }
    }
    *p = end;
    return true;
}

int cache_redis_url_parse(const char *url, struct cache_redis_addr *out, char *err, size_t errlen)
{
    static const char scheme[] = "redis://";
    memset(out, 0, sizeof(*out));
    if (!url || strncmp(url, scheme, sizeof(scheme) - 1) != 0) {
        log_format(err, errlen, "must start with redis://");
        return -1;
    }
    const char *p = url + sizeof(scheme) - 1;
    if (strpbrk(p, "@")) {
        log_format(err, errlen, "credentials (user:password@) are not supported");
        return -1;
    }
    if (!parse_host(&p, out, err, errlen))
        return -1;
    if (*p != ':') {
        log_format(err, errlen, "a port is required (redis://HOST:PORT[/DB])");
        return -1;
    }
    p++;
    if (!parse_num(&p, 5, 1, 65535, &out->port)) {
        log_format(err, errlen, "port must be a number from 1 to 65535");
        return -1;
    }
    if (*p == '/') {
        p++;
        if (!parse_num(&p, 2, 0, 15, &out->db)) {
            log_format(err, errlen, "database must be a number from 0 to 15");
            return -1;
        }
    }
    if (*p != '\0') {
        log_format(err, errlen, "unexpected \"%.20s\" after redis://HOST:PORT[/DB]", p);
        return -1;
    }
    return 0;
}
