/* dns.c - non-blocking host name resolution with a cache.
 *
 * Why resolver threads and not getaddrinfo_a(): glibc's getaddrinfo_a()
 * also runs getaddrinfo() on threads, but makes a thread per request (and
 * SIGEV_THREAD another one per notification), cannot cancel a request that
 * has started, and leaves no way to wait for its threads at exit. Two
 * threads of our own, fed from a queue, give the same non-blocking loop
 * with a bounded number of threads, a clean shutdown (sanitizers see no
 * stray thread), and a resolver that tests can replace. Two, so that one
 * slow name does not hold up every other; lookups are rare (one per name
 * per dns_max_ttl, plus one after failures), so more would idle. */
#include "dns.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "list.h"

#define DNS_MAX_ADDRS 16
#define DNS_THREADS   2

/* Someone to tell when a pending resolution ends. */
struct dns_waiter {
    struct dns_waiter *next;
    void (*cb)(void *arg);
    void *arg;
};

/* What is known about one host name. */
struct dns_entry {
    struct list node;
    char *host;
    struct sockaddr_storage addrs[DNS_MAX_ADDRS];
    int n_addrs; /* 0: the last resolution failed (err says why) */
    int cur;     /* the address connections use now */
    int fails;   /* connection failures since the last resolution */
    bool known;  /* resolved (or failed) at least once */
    bool in_flight;
    int64_t expires; /* loop clock, usec */
    int64_t ttl, nxttl;
    char err[200];
    struct dns_waiter *waiters;
};

/* A resolution on its way through the threads. It carries its own copy of
 * the name, so that the cache can change while it runs. */
struct dns_job {
    struct dns_job *next;
    char *host;
    struct sockaddr_storage addrs[DNS_MAX_ADDRS];
    int n; /* -1: failed */
    char err[200];
};

static int dns_getaddrinfo(const char *host, struct sockaddr_storage *addrs, int max, char *err,
                           size_t errlen);

static struct {
    /* The cache: any loop thread may look up, under cache_lock; the
     * answers arrive on the loop of the first lookup. */
    pthread_mutex_t cache_lock;
    struct ev_loop *loop;
    ev_async async;
    struct list entries;
    bool started;
    /* Shared with the threads, under lock. */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct dns_job *todo, *done;
    bool stopping;
    pthread_t threads[DNS_THREADS];
    int n_threads;
    /* getaddrinfo, or a test's stand-in */
    int (*resolver)(const char *host, struct sockaddr_storage *addrs, int max, char *err,
                    size_t errlen);
} g_dns = {
    .cache_lock = PTHREAD_MUTEX_INITIALIZER,
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .cond = PTHREAD_COND_INITIALIZER,
    .resolver = dns_getaddrinfo,
};

static socklen_t addr_len(const struct sockaddr_storage *ss)
{
    return ss->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
}

static int dns_getaddrinfo(const char *host, struct sockaddr_storage *addrs, int max, char *err,
                           size_t errlen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "%s", rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
        return -1;
    }
    int n = 0;
    for (struct addrinfo *ai = res; ai && n < max; ai = ai->ai_next) {
        if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ||
            ai->ai_addrlen > sizeof(addrs[0]))
            continue;
        struct sockaddr_storage ss;
        memset(&ss, 0, sizeof(ss));
        memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
        bool dup = false;
        for (int i = 0; i < n && !dup; i++)
            dup = memcmp(&addrs[i], &ss, sizeof(ss)) == 0;
        if (!dup)
            addrs[n++] = ss;
    }
    freeaddrinfo(res);
    if (n == 0) {
        snprintf(err, errlen, "no IPv4 or IPv6 address");
        return -1;
    }
    return n;
}

static void *dns_thread(void *unused)
{
    (void)unused;
    pthread_mutex_lock(&g_dns.lock);
    for (;;) {
        while (!g_dns.todo && !g_dns.stopping)
            pthread_cond_wait(&g_dns.cond, &g_dns.lock);
        if (g_dns.stopping)
            break;
        struct dns_job *job = g_dns.todo;
        g_dns.todo = job->next;
        int (*fn)(const char *, struct sockaddr_storage *, int, char *, size_t) = g_dns.resolver;
        pthread_mutex_unlock(&g_dns.lock);

        job->err[0] = '\0';
        job->n = fn(job->host, job->addrs, DNS_MAX_ADDRS, job->err, sizeof(job->err));

        pthread_mutex_lock(&g_dns.lock);
        if (g_dns.stopping) {
            /* The loop may be gone: nobody to tell. */
            free(job->host);
            free(job);
            break;
        }
        job->next = g_dns.done;
        g_dns.done = job;
        /* Under the lock, so that dns_shutdown() cannot let the loop go
         * while this is being sent to it. */
        ev_async_send(g_dns.loop, &g_dns.async);
    }
    pthread_mutex_unlock(&g_dns.lock);
    return NULL;
}

/* Monotonic microseconds (the same clock as libev's ev_now()); read here
 * because lookups come from every loop thread. */
static int64_t loop_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static struct dns_entry *dns_find(const char *host)
{
    struct list *it, *tmp;
    list_for_each_safe(it, tmp, &g_dns.entries)
    {
        struct dns_entry *e = list_entry(it, struct dns_entry, node);
        if (strcmp(e->host, host) == 0)
            return e;
    }
    return NULL;
}

/* Results are in: update the cache, then tell the waiters. */
static void dns_async_cb(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    pthread_mutex_lock(&g_dns.lock);
    struct dns_job *jobs = g_dns.done;
    g_dns.done = NULL;
    pthread_mutex_unlock(&g_dns.lock);
    int64_t now = loop_now();
    struct dns_waiter *wake = NULL;
    pthread_mutex_lock(&g_dns.cache_lock);
    while (jobs) {
        struct dns_job *job = jobs;
        jobs = job->next;
        struct dns_entry *e = dns_find(job->host);
        free(job->host);
        if (!e) {
            free(job);
            continue;
        }
        e->in_flight = false;
        e->known = true;
        e->cur = 0;
        e->fails = 0;
        if (job->n > 0) {
            memcpy(e->addrs, job->addrs, sizeof(e->addrs[0]) * (size_t)job->n);
            e->n_addrs = job->n;
            e->expires = now + e->ttl;
            e->err[0] = '\0';
        } else {
            e->n_addrs = 0;
            e->expires = now + e->nxttl;
            snprintf(e->err, sizeof(e->err), "%s", job->err[0] ? job->err : "lookup failed");
        }
        free(job);
        /* A waiter may look up again (even this name): detach them first. */
        while (e->waiters) {
            struct dns_waiter *wt = e->waiters;
            e->waiters = wt->next;
            wt->next = wake;
            wake = wt;
        }
    }
    pthread_mutex_unlock(&g_dns.cache_lock);
    /* Outside the lock: a callback looks up again. */
    while (wake) {
        struct dns_waiter *next = wake->next;
        wake->cb(wake->arg);
        free(wake);
        wake = next;
    }
}

static void dns_start(struct ev_loop *loop)
{
    g_dns.loop = loop;
    list_init(&g_dns.entries);
    ev_async_init(&g_dns.async, dns_async_cb);
    ev_async_start(loop, &g_dns.async);
    /* Not a reason for the loop to keep running. */
    ev_unref(loop);
    pthread_mutex_lock(&g_dns.lock);
    g_dns.stopping = false;
    pthread_mutex_unlock(&g_dns.lock);
    g_dns.started = true;
}

/* Hands host to the threads (started on first use). */
static void dns_submit(struct dns_entry *e)
{
    struct dns_job *job = calloc(1, sizeof(*job));
    if (!job || !(job->host = strdup(e->host)))
        abort();
    pthread_mutex_lock(&g_dns.lock);
    struct dns_job **tail = &g_dns.todo;
    while (*tail)
        tail = &(*tail)->next;
    *tail = job;
    while (g_dns.n_threads < DNS_THREADS) {
        if (pthread_create(&g_dns.threads[g_dns.n_threads], NULL, dns_thread, NULL) != 0)
            break;
        g_dns.n_threads++;
    }
    pthread_cond_signal(&g_dns.cond);
    pthread_mutex_unlock(&g_dns.lock);
    e->in_flight = true;
}

static enum dns_status dns_lookup_locked(struct ev_loop *loop, const char *host, int port,
                                         int64_t ttl, int64_t nxttl, struct sockaddr_storage *out,
                                         socklen_t *outlen, void (*cb)(void *arg), void *arg,
                                         char *err, size_t errlen);

enum dns_status dns_lookup(struct ev_loop *loop, const char *host, int port, int64_t ttl,
                           int64_t nxttl, struct sockaddr_storage *out, socklen_t *outlen,
                           void (*cb)(void *arg), void *arg, char *err, size_t errlen)
{
    pthread_mutex_lock(&g_dns.cache_lock);
    enum dns_status st =
        dns_lookup_locked(loop, host, port, ttl, nxttl, out, outlen, cb, arg, err, errlen);
    pthread_mutex_unlock(&g_dns.cache_lock);
    return st;
}

static enum dns_status dns_lookup_locked(struct ev_loop *loop, const char *host, int port,
                                         int64_t ttl, int64_t nxttl, struct sockaddr_storage *out,
                                         socklen_t *outlen, void (*cb)(void *arg), void *arg,
                                         char *err, size_t errlen)
{
    if (!g_dns.started)
        dns_start(loop);
    struct dns_entry *e = dns_find(host);
    if (!e) {
        e = calloc(1, sizeof(*e));
        if (!e || !(e->host = strdup(host)))
            abort();
        list_add_tail(&g_dns.entries, &e->node);
    }
    e->ttl = ttl > 0 ? ttl : 0;
    e->nxttl = nxttl > 0 ? nxttl : 0;
    /* <=: an answer with a TTL of 0 still serves the callback it wakes. */
    if (e->known && !e->in_flight && loop_now() <= e->expires) {
        if (e->n_addrs == 0) {
            snprintf(err, errlen, "could not resolve \"%s\": %s", host, e->err);
            return DNS_FAILED;
        }
        *out = e->addrs[e->cur];
        *outlen = addr_len(out);
        if (out->ss_family == AF_INET6)
            ((struct sockaddr_in6 *)out)->sin6_port = htons((uint16_t)port);
        else
            ((struct sockaddr_in *)out)->sin_port = htons((uint16_t)port);
        return DNS_READY;
    }
    bool listed = false;
    for (struct dns_waiter *w = e->waiters; w && !listed; w = w->next)
        listed = w->cb == cb && w->arg == arg;
    if (!listed && cb) {
        struct dns_waiter *w = calloc(1, sizeof(*w));
        if (!w)
            abort();
        w->cb = cb;
        w->arg = arg;
        w->next = e->waiters;
        e->waiters = w;
    }
    if (!e->in_flight)
        dns_submit(e);
    return DNS_PENDING;
}

void dns_mark_failed(const char *host)
{
    pthread_mutex_lock(&g_dns.cache_lock);
    struct dns_entry *e = g_dns.started ? dns_find(host) : NULL;
    if (!e || e->n_addrs == 0 || e->in_flight) {
        /* nothing to move on from */
    } else if (++e->fails >= e->n_addrs) {
        /* Every address failed: the name may point elsewhere now. */
        e->expires = 0;
        e->fails = 0;
        e->cur = 0;
    } else {
        e->cur = (e->cur + 1) % e->n_addrs;
    }
    pthread_mutex_unlock(&g_dns.cache_lock);
}

void dns_set_resolver(int (*fn)(const char *host, struct sockaddr_storage *addrs, int max,
                                char *err, size_t errlen))
{
    pthread_mutex_lock(&g_dns.lock);
    g_dns.resolver = fn ? fn : dns_getaddrinfo;
    pthread_mutex_unlock(&g_dns.lock);
}

static void free_jobs(struct dns_job *j)
{
    while (j) {
        struct dns_job *next = j->next;
        free(j->host);
        free(j);
        j = next;
    }
}

void dns_shutdown(void)
{
    if (!g_dns.started)
        return;
    pthread_mutex_lock(&g_dns.lock);
    g_dns.stopping = true;
    pthread_cond_broadcast(&g_dns.cond);
    pthread_mutex_unlock(&g_dns.lock);
    for (int i = 0; i < g_dns.n_threads; i++) {
        /* A lookup can take the resolver's whole timeout; do not hold the
         * exit for it. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        if (pthread_timedjoin_np(g_dns.threads[i], NULL, &ts) != 0)
            pthread_detach(g_dns.threads[i]);
    }
    pthread_mutex_lock(&g_dns.lock);
    free_jobs(g_dns.todo);
    free_jobs(g_dns.done);
    g_dns.todo = g_dns.done = NULL;
    g_dns.n_threads = 0;
    pthread_mutex_unlock(&g_dns.lock);
    ev_ref(g_dns.loop);
    ev_async_stop(g_dns.loop, &g_dns.async);
    while (!list_empty(&g_dns.entries)) {
        struct dns_entry *e = list_entry(list_first(&g_dns.entries), struct dns_entry, node);
        list_del(&e->node);
        while (e->waiters) {
            struct dns_waiter *w = e->waiters;
            e->waiters = w->next;
            free(w);
        }
        free(e->host);
        free(e);
    }
    g_dns.started = false;
    g_dns.loop = NULL;
}
