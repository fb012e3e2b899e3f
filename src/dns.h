/* dns.h - host name resolution that never blocks the event loop.
 *
 * Names are resolved by a small pool of resolver threads (getaddrinfo) and
 * the answers come back to the loop through an ev_async. Answers are cached
 * per host name for dns_max_ttl (failures for dns_nxdomain_ttl). A name with
 * several addresses is used one address at a time: each failure reported
 * with dns_mark_failed() moves to the next one, and once every address has
 * failed the name is resolved again. Numeric addresses never come here.
 *
 * Lookups may come from any loop thread (the cache has its own lock);
 * callbacks run on the loop of the first lookup, outside that lock. */
#ifndef SLUICE_DNS_H
#define SLUICE_DNS_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

enum dns_status {
    DNS_FAILED = -1, /* no address: err says why (cached for dns_nxdomain_ttl) */
    DNS_PENDING = 0, /* being resolved: cb(arg) is called on loop when done */
    DNS_READY = 1,   /* *out holds the address to use now */
};

/* Looks host up for a connection to port. With DNS_READY the address (with
 * port set) is in out/outlen. With DNS_PENDING a resolution is under way
 * and cb(arg) runs once on loop when it ends (once per distinct cb and arg,
 * however often they asked); the caller then asks again. The first call
 * binds the module to loop. ttl and nxttl are the cache lifetimes in
 * microseconds (0 = do not cache). */
enum dns_status dns_lookup(struct ev_loop *loop, const char *host, int port, int64_t ttl,
                           int64_t nxttl, struct sockaddr_storage *out, socklen_t *outlen,
                           void (*cb)(void *arg), void *arg, char *err, size_t errlen);

/* A connection to host's current address failed: the next lookup returns
 * its next address; after all of them failed, host is resolved anew. A
 * name not in the cache is ignored. */
void dns_mark_failed(const char *host);

/* Stops the resolver threads and frees the cache (at exit). A thread stuck
 * in a slow lookup is left behind rather than waited for. */
void dns_shutdown(void);

/* For tests: replaces getaddrinfo. fn fills up to max addresses (port not
 * set) into addrs and returns how many, or -1 with err filled. It runs on a
 * resolver thread. NULL restores the default. */
void dns_set_resolver(int (*fn)(const char *host, struct sockaddr_storage *addrs, int max,
                                char *err, size_t errlen));

#endif
