/* test_dns.c - the resolver cache: answers come back on the loop, are
 * cached for their TTL, failures for theirs, and the addresses of a name are
 * tried in turn. A stand-in resolver replaces getaddrinfo. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <ev.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "dns.h"

#define SEC 1000000

static atomic_int resolver_calls;

/* "multi.test" has three addresses, "one.test" one, anything else fails. */
static int fake_resolver(const char *host, struct sockaddr_storage *addrs, int max, char *err,
                         size_t errlen)
{
    atomic_fetch_add(&resolver_calls, 1);
    static const char *const multi[] = {"10.0.0.1", "10.0.0.2", "10.0.0.3"};
    int n = 0;
    if (strcmp(host, "multi.test") == 0)
        n = 3;
    else if (strcmp(host, "one.test") == 0)
        n = 1;
    if (n == 0) {
        snprintf(err, errlen, "Name or service not known");
        return -1;
    }
    for (int i = 0; i < n && i < max; i++) {
        struct sockaddr_in *in = (struct sockaddr_in *)&addrs[i];
        memset(&addrs[i], 0, sizeof(addrs[i]));
        in->sin_family = AF_INET;
        inet_pton(AF_INET, n == 1 ? "10.9.9.9" : multi[i], &in->sin_addr);
    }
    return n;
}

static int callbacks;
static void on_done(void *arg)
{
    (*(int *)arg)++;
    callbacks++;
}

/* Runs loop until cb has run `want` times in all (or 5 s pass). */
static void run_until(struct ev_loop *loop, int want)
{
    for (int i = 0; i < 5000 && callbacks < want; i++) {
        ev_run(loop, EVRUN_NOWAIT);
        usleep(1000);
    }
    assert_int_equal(callbacks, want);
}

static const char *addr_str(const struct sockaddr_storage *ss, char *buf)
{
    const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
    inet_ntop(AF_INET, &in->sin_addr, buf, INET_ADDRSTRLEN);
    return buf;
}

static void test_lookup_cache_round_robin(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct sockaddr_storage ss;
    socklen_t len = 0;
    char err[256], buf[INET_ADDRSTRLEN];
    int a = 0, b = 0;
    dns_set_resolver(fake_resolver);
    callbacks = 0;
    atomic_store(&resolver_calls, 0);

    /* Two askers, one resolution; each told once however often it asked. */
    assert_int_equal(dns_lookup(loop, "multi.test", 5432, 60 * SEC, 60 * SEC, &ss, &len, on_done,
                                &a, err, sizeof(err)),
                     DNS_PENDING);
    assert_int_equal(dns_lookup(loop, "multi.test", 5432, 60 * SEC, 60 * SEC, &ss, &len, on_done,
                                &a, err, sizeof(err)),
                     DNS_PENDING);
    assert_int_equal(dns_lookup(loop, "multi.test", 5432, 60 * SEC, 60 * SEC, &ss, &len, on_done,
                                &b, err, sizeof(err)),
                     DNS_PENDING);
    run_until(loop, 2);
    assert_int_equal(a, 1);
    assert_int_equal(b, 1);
    assert_int_equal(atomic_load(&resolver_calls), 1);

    /* Cached now, with the port filled in. */
    assert_int_equal(dns_lookup(loop, "multi.test", 6543, 60 * SEC, 60 * SEC, &ss, &len, on_done,
                                &a, err, sizeof(err)),
                     DNS_READY);
    assert_int_equal(len, sizeof(struct sockaddr_in));
    assert_string_equal(addr_str(&ss, buf), "10.0.0.1");
    assert_int_equal(ntohs(((struct sockaddr_in *)&ss)->sin_port), 6543);

    /* Failures move along the addresses... */
    dns_mark_failed("multi.test");
    assert_int_equal(dns_lookup(loop, "multi.test", 1, 60 * SEC, 60 * SEC, &ss, &len, NULL, NULL,
                                err, sizeof(err)),
                     DNS_READY);
    assert_string_equal(addr_str(&ss, buf), "10.0.0.2");
    dns_mark_failed("multi.test");
    assert_int_equal(dns_lookup(loop, "multi.test", 1, 60 * SEC, 60 * SEC, &ss, &len, NULL, NULL,
                                err, sizeof(err)),
                     DNS_READY);
    assert_string_equal(addr_str(&ss, buf), "10.0.0.3");
    /* ... and after the last one, the name is resolved again. */
    dns_mark_failed("multi.test");
    assert_int_equal(dns_lookup(loop, "multi.test", 1, 60 * SEC, 60 * SEC, &ss, &len, on_done, &a,
                                err, sizeof(err)),
                     DNS_PENDING);
    run_until(loop, 3);
    assert_int_equal(atomic_load(&resolver_calls), 2);
    assert_int_equal(dns_lookup(loop, "multi.test", 1, 60 * SEC, 60 * SEC, &ss, &len, NULL, NULL,
                                err, sizeof(err)),
                     DNS_READY);
    assert_string_equal(addr_str(&ss, buf), "10.0.0.1");

    /* Names not in the cache (numeric hosts never are) are ignored. */
    dns_mark_failed("10.1.2.3");

    dns_shutdown();
    ev_loop_destroy(loop);
}

static void test_failure_and_ttl(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct sockaddr_storage ss;
    socklen_t len = 0;
    char err[256];
    int a = 0;
    dns_set_resolver(fake_resolver);
    callbacks = 0;
    atomic_store(&resolver_calls, 0);

    assert_int_equal(dns_lookup(loop, "nope.test", 5432, 60 * SEC, 60 * SEC, &ss, &len, on_done, &a,
                                err, sizeof(err)),
                     DNS_PENDING);
    run_until(loop, 1);
    /* The failure is remembered (dns_nxdomain_ttl) and said clearly. */
    assert_int_equal(dns_lookup(loop, "nope.test", 5432, 60 * SEC, 60 * SEC, &ss, &len, on_done, &a,
                                err, sizeof(err)),
                     DNS_FAILED);
    assert_non_null(strstr(err, "could not resolve \"nope.test\": Name or service not known"));
    assert_int_equal(atomic_load(&resolver_calls), 1);

    /* A TTL of 0: an answer serves the moment it arrives, then is asked
     * again. */
    assert_int_equal(
        dns_lookup(loop, "one.test", 5432, 0, 0, &ss, &len, on_done, &a, err, sizeof(err)),
        DNS_PENDING);
    run_until(loop, 2);
    ev_now_update(loop);
    usleep(2000);
    ev_now_update(loop);
    assert_int_equal(
        dns_lookup(loop, "one.test", 5432, 0, 0, &ss, &len, on_done, &a, err, sizeof(err)),
        DNS_PENDING);
    run_until(loop, 3);
    assert_int_equal(atomic_load(&resolver_calls), 3);

    /* Shutting down with a lookup queued or running is clean. */
    assert_int_equal(
        dns_lookup(loop, "multi.test", 5432, 0, 0, &ss, &len, on_done, &a, err, sizeof(err)),
        DNS_PENDING);
    dns_shutdown();
    dns_set_resolver(NULL);
    ev_loop_destroy(loop);
}

static void test_real_resolver(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct sockaddr_storage ss;
    socklen_t len = 0;
    char err[256], buf[INET6_ADDRSTRLEN];
    int a = 0;
    callbacks = 0;
    assert_int_equal(dns_lookup(loop, "localhost", 5432, 60 * SEC, 60 * SEC, &ss, &len, on_done, &a,
                                err, sizeof(err)),
                     DNS_PENDING);
    run_until(loop, 1);
    assert_int_equal(dns_lookup(loop, "localhost", 5432, 60 * SEC, 60 * SEC, &ss, &len, on_done, &a,
                                err, sizeof(err)),
                     DNS_READY);
    if (ss.ss_family == AF_INET)
        assert_string_equal(addr_str(&ss, buf), "127.0.0.1");
    else
        assert_int_equal(ss.ss_family, AF_INET6);
    dns_shutdown();
    ev_loop_destroy(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lookup_cache_round_robin),
        cmocka_unit_test(test_failure_and_ttl),
        cmocka_unit_test(test_real_resolver),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
