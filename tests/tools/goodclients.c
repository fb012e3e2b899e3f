/* The well-behaved clients of test_abuse.py (issue 17 item 3), timed from
 * one thread: each connection, already logged in by the test and passed
 * open (FDS: their numbers, comma-separated), sends `SELECT <nonce>` every
 * PERIOD seconds, the first at a random point of the first period, and
 * the time from its send to its ReadyForQuery is one latency.
 *
 * The Python threads these replace measured the GIL as well as the
 * pooler: an answer that arrived while another thread held the lock
 * waited for it, and a thread holding it when the box was busy stalled
 * all fifty.
 *
 * Runs SECONDS, then waits for the queries in flight (at most 30 s more),
 * and prints one JSON line: {"latencies_us": [...], "sent_us": [...],
 * "errors": [...]}; sent_us[i] is when latencies_us[i]'s query was sent,
 * on CLOCK_MONOTONIC (as perf record -k monotonic), so that a slow query
 * can be matched with what ran on the CPUs meanwhile.
 * An error is a wrong answer, an ErrorResponse or a lost connection; that
 * connection sends nothing more.
 *
 * usage: goodclients SECONDS PERIOD SEED FDS */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "tool_util.h"

#define MAX_CONNS  1024
#define BUF_SIZE   4096
#define MAX_ERRORS 64

struct conn {
    int fd;
    int index;
    int busy;       /* a query in flight */
    int dead;       /* failed: sends nothing more */
    double next_at; /* when the next query is due */
    double sent_at;
    long nonce;
    int answered; /* its DataRow carried the nonce */
    unsigned char buf[BUF_SIZE];
    size_t have;
};

static struct conn conns[MAX_CONNS];
static int n_conns;
static long *latencies, *sent;
static size_t n_lat, cap_lat;
static char errors[MAX_ERRORS][160];
static int n_errors;

static uint64_t rng_state;
static int ep;

static uint64_t rng_next(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void fail(struct conn *c, const char *what)
{
    if (n_errors < MAX_ERRORS)
        snprintf(errors[n_errors++], sizeof(errors[0]), "client %d: %s", c->index, what);
    c->dead = 1;
    c->busy = 0;
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL); /* nor read any more */
}

static void send_query(struct conn *c)
{
    char sql[64];
    c->nonce = (long)(rng_next() % (1u << 30)) + 1;
    int len = snprintf(sql, sizeof(sql), "SELECT %ld", c->nonce);
    unsigned char msg[80];
    uint32_t be = htonl((uint32_t)(4 + len + 1));
    msg[0] = 'Q';
    memcpy(msg + 1, &be, 4);
    memcpy(msg + 5, sql, (size_t)len + 1);
    c->sent_at = now();
    c->answered = 0;
    if (write(c->fd, msg, (size_t)(5 + len + 1)) != 5 + len + 1) {
        fail(c, "send failed");
        return;
    }
    c->busy = 1;
}

static void record(double sent_at, double answered_at)
{
    if (n_lat == cap_lat) {
        cap_lat = cap_lat ? 2 * cap_lat : 4096;
        latencies = realloc(latencies, cap_lat * sizeof(*latencies));
        sent = realloc(sent, cap_lat * sizeof(*sent));
        if (!latencies || !sent)
            exit(3);
    }
    latencies[n_lat] = (long)((answered_at - sent_at) * 1e6);
    sent[n_lat++] = (long)(sent_at * 1e6);
}

/* One message of c's: a DataRow must hold the nonce, an ErrorResponse
 * fails c, ReadyForQuery ends the query. */
static void on_message(struct conn *c, unsigned char kind, const unsigned char *body, size_t len,
                       double period)
{
    if (kind == 'D') {
        char want[32];
        int wlen = snprintf(want, sizeof(want), "%ld", c->nonce);
        /* int16 columns, int32 length, the value */
        uint32_t vlen;
        if (len >= 6) {
            memcpy(&vlen, body + 2, 4);
            vlen = ntohl(vlen);
            if (vlen == (uint32_t)wlen && len >= 6 + vlen && memcmp(body + 6, want, vlen) == 0)
                c->answered = 1;
        }
        if (!c->answered)
            fail(c, "an answer without its nonce");
    } else if (kind == 'E') {
        fail(c, "ErrorResponse");
    } else if (kind == 'Z' && c->busy) {
        double t = now();
        if (!c->answered) {
            fail(c, "no row");
            return;
        }
        record(c->sent_at, t);
        c->busy = 0;
        c->next_at += period;
        if (c->next_at < t)
            c->next_at = t;
    }
}

static void on_readable(struct conn *c, double period)
{
    ssize_t n = read(c->fd, c->buf + c->have, sizeof(c->buf) - c->have);
    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        fail(c, "connection lost");
        return;
    }
    c->have += (size_t)n;
    size_t off = 0;
    while (!c->dead && c->have - off >= 5) {
        uint32_t mlen;
        memcpy(&mlen, c->buf + off + 1, 4);
        mlen = ntohl(mlen);
        if (mlen < 4 || mlen > sizeof(c->buf) - 1) {
            fail(c, "a message too long for a SELECT's answer");
            return;
        }
        if (c->have - off < 1 + mlen)
            break;
        on_message(c, c->buf[off], c->buf + off + 5, mlen - 4, period);
        off += 1 + mlen;
    }
    memmove(c->buf, c->buf + off, c->have - off);
    c->have -= off;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: goodclients SECONDS PERIOD SEED FDS\n");
        return 2;
    }
    double seconds = atof(argv[1]), period = atof(argv[2]);
    rng_state = (uint64_t)strtoull(argv[3], NULL, 10) * 2654435761u + 1;
    ep = epoll_create1(0);
    double start = now();
    for (char *p = argv[4]; *p && n_conns < MAX_CONNS;) {
        struct conn *c = &conns[n_conns];
        c->fd = (int)strtol(p, &p, 10);
        c->index = n_conns++;
        c->next_at = start + period * (double)(rng_next() % 1000000) / 1e6;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) != 0)
            return 2;
        if (*p == ',')
            p++;
    }
    double until = start + seconds, drain_until = until + 30;
    for (;;) {
        double t = now();
        int in_flight = 0;
        double next = t + 1;
        for (int i = 0; i < n_conns; i++) {
            struct conn *c = &conns[i];
            if (c->dead)
                continue;
            if (!c->busy && t < until && c->next_at <= t)
                send_query(c);
            if (c->busy)
                in_flight++;
            else if (!c->dead && c->next_at < next)
                next = c->next_at;
        }
        if (t >= until && (!in_flight || t >= drain_until))
            break;
        if (next > until)
            next = until;
        /* Rounded up: a wait cut short would spin until the due time. */
        int wait_ms = next > t ? (int)ceil((next - t) * 1000) : 0;
        struct epoll_event evs[64];
        int n = epoll_wait(ep, evs, 64, wait_ms);
        for (int i = 0; i < n; i++)
            on_readable(evs[i].data.ptr, period);
    }
    for (int i = 0; i < n_conns; i++)
        if (conns[i].busy)
            fail(&conns[i], "no answer 30 s after the end");
    printf("{\"latencies_us\": [");
    for (size_t i = 0; i < n_lat; i++)
        printf(i ? ",%ld" : "%ld", latencies[i]);
    printf("], \"sent_us\": [");
    for (size_t i = 0; i < n_lat; i++)
        printf(i ? ",%ld" : "%ld", sent[i]);
    printf("], \"errors\": [");
    for (int i = 0; i < n_errors; i++)
        printf(i ? ",\"%s\"" : "\"%s\"", errors[i]);
    printf("]}\n");
    free(latencies);
    free(sent);
    return 0;
}
