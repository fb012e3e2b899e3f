/*
 * null_server: the ceiling of the result cache's benchmark (make bench,
 * bench/cache_bench.py). It speaks just enough of the PostgreSQL protocol
 * for pgbench and psql (trust login, simple Query) and answers every Query
 * at once with the bytes PostgreSQL sends for the benchmark's statement on
 * a fresh pgbench table (one int4 column "abalance", value 0). No pooler
 * that relays queries over TCP can answer faster than a process that does
 * nothing else, so its TPS is what pgbench and the kernel allow on the box:
 * the figure a cache hit is compared with.
 *
 * Usage: null_server INI — listen_addr and listen_port are read from a
 * pgbouncer-style ini (the benchmark's poolers are started the same way).
 * One thread, epoll, non-blocking sockets, like sluice with `workers = 1`.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF_SIZE    65536
#define MAX_EVENTS  256
#define STARTUP_MAX 10000

struct conn {
    int fd;
    int started;  /* startup packet answered */
    int want_out; /* EPOLLOUT asked for */
    size_t in_len;
    size_t out_len;
    size_t out_off;
    unsigned char in[BUF_SIZE];
    unsigned char out[BUF_SIZE];
};

static unsigned char reply[256];
static size_t reply_len;
static unsigned char login[512];
static size_t login_len;

static size_t put_u32(unsigned char *p, uint32_t v)
{
    v = htonl(v);
    memcpy(p, &v, 4);
    return 4;
}

static size_t put_u16(unsigned char *p, uint16_t v)
{
    v = htons(v);
    memcpy(p, &v, 2);
    return 2;
}

/* One message: type, then the length of what follows the type. */
static size_t put_msg(unsigned char *p, char type, const void *body, size_t len)
{
    p[0] = (unsigned char)type;
    put_u32(p + 1, (uint32_t)(len + 4));
    memcpy(p + 5, body, len);
    return 5 + len;
}

static size_t put_param(unsigned char *p, const char *name, const char *value)
{
    unsigned char body[128];
    size_t n = strlen(name) + 1, v = strlen(value) + 1;
    memcpy(body, name, n);
    memcpy(body + n, value, v);
    return put_msg(p, 'S', body, n + v);
}

static void build_answers(void)
{
    unsigned char b[128];
    size_t n = 0;

    /* RowDescription: abalance, int4, text format. */
    n += put_u16(b + n, 1);
    memcpy(b + n, "abalance", 9);
    n += 9;
    n += put_u32(b + n, 0);  /* table oid */
    n += put_u16(b + n, 0);  /* column number */
    n += put_u32(b + n, 23); /* int4 */
    n += put_u16(b + n, 4);
    n += put_u32(b + n, 0xffffffffu); /* typmod -1 */
    n += put_u16(b + n, 0);
    reply_len = put_msg(reply, 'T', b, n);
    /* DataRow: "0". */
    n = put_u16(b, 1);
    n += put_u32(b + n, 1);
    b[n++] = '0';
    reply_len += put_msg(reply + reply_len, 'D', b, n);
    reply_len += put_msg(reply + reply_len, 'C', "SELECT 1", 9);
    reply_len += put_msg(reply + reply_len, 'Z', "I", 1);

    n = put_u32(b, 0);
    login_len = put_msg(login, 'R', b, n);
    login_len += put_param(login + login_len, "server_version", "15.0");
    login_len += put_param(login + login_len, "server_encoding", "UTF8");
    login_len += put_param(login + login_len, "client_encoding", "UTF8");
    login_len += put_param(login + login_len, "DateStyle", "ISO, MDY");
    login_len += put_param(login + login_len, "integer_datetimes", "on");
    login_len += put_param(login + login_len, "standard_conforming_strings", "on");
    n = put_u32(b, (uint32_t)getpid());
    n += put_u32(b + n, 12345);
    login_len += put_msg(login + login_len, 'K', b, n);
    login_len += put_msg(login + login_len, 'Z', "I", 1);
}

static uint32_t get_u32(const unsigned char *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return ntohl(v);
}

static int queue(struct conn *c, const void *data, size_t len)
{
    if (c->out_len + len > sizeof(c->out))
        return -1;
    memcpy(c->out + c->out_len, data, len);
    c->out_len += len;
    return 0;
}

/* Answers every whole message in c->in; -1 closes the connection. */
static int consume(struct conn *c)
{
    size_t off = 0;
    while (off < c->in_len) {
        size_t avail = c->in_len - off;
        const unsigned char *p = c->in + off;
        if (!c->started) {
            if (avail < 8)
                break;
            uint32_t len = get_u32(p), code = get_u32(p + 4);
            if (len < 8 || len > STARTUP_MAX)
                return -1;
            if (avail < len)
                break;
            off += len;
            if (code == 80877103 || code == 80877104) { /* SSL, GSSENC */
                if (queue(c, "N", 1) < 0)
                    return -1;
                continue;
            }
            if (code != 196608)
                return -1; /* a cancel, or a protocol we do not speak */
            if (queue(c, login, login_len) < 0)
                return -1;
            c->started = 1;
            continue;
        }
        if (avail < 5)
            break;
        uint32_t len = get_u32(p + 1);
        if (len < 4 || len > BUF_SIZE - 1)
            return -1;
        if (avail < len + 1)
            break;
        off += len + 1;
        if (p[0] == 'X')
            return -1;
        if (p[0] != 'Q')
            return -1; /* the simple protocol only */
        if (queue(c, reply, reply_len) < 0)
            return -1;
    }
    memmove(c->in, c->in + off, c->in_len - off);
    c->in_len -= off;
    return 0;
}

static int flush(struct conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n < 0)
            return errno == EAGAIN || errno == EINTR ? 0 : -1;
        c->out_off += (size_t)n;
    }
    c->out_off = c->out_len = 0;
    return 0;
}

static void drop(int ep, struct conn *c)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c);
}

/* One read per wake-up: epoll is level-triggered, so what is left wakes it
 * again. EPOLLOUT is asked for only while an answer waits (never, on
 * loopback, in practice). */
static int serve(int ep, struct conn *c, uint32_t events)
{
    if (events & EPOLLIN) {
        ssize_t n = read(c->fd, c->in + c->in_len, sizeof(c->in) - c->in_len);
        if (n == 0)
            return -1;
        if (n < 0 && errno != EAGAIN && errno != EINTR)
            return -1;
        if (n > 0) {
            c->in_len += (size_t)n;
            if (consume(c) < 0)
                return -1;
        }
    }
    if (flush(c) < 0)
        return -1;
    if ((c->out_len != 0) == c->want_out)
        return 0;
    c->want_out = c->out_len != 0;
    struct epoll_event ev = {.events = EPOLLIN | (c->want_out ? EPOLLOUT : 0), .data.ptr = c};
    return epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static int ini_value(const char *path, const char *key, char *out, size_t size)
{
    FILE *f = fopen(path, "r");
    char line[512];
    int found = 0;
    if (!f)
        return 0;
    while (!found && fgets(line, sizeof(line), f)) {
        char *p = line, *v;
        while (*p == ' ' || *p == '\t')
            p++;
        if (strncmp(p, key, strlen(key)) != 0)
            continue;
        v = p + strlen(key);
        while (*v == ' ' || *v == '\t')
            v++;
        if (*v != '=')
            continue;
        v++;
        while (*v == ' ' || *v == '\t')
            v++;
        v[strcspn(v, " \t\r\n;")] = '\0';
        snprintf(out, size, "%s", v);
        found = 1;
    }
    fclose(f);
    return found;
}

int main(int argc, char **argv)
{
    char addr[64] = "127.0.0.1", port[16];
    struct sockaddr_in sa = {.sin_family = AF_INET};
    int one = 1;

    if (argc != 2 || !ini_value(argv[1], "listen_port", port, sizeof(port))) {
        fprintf(stderr, "usage: null_server INI (with listen_port)\n");
        return 2;
    }
    ini_value(argv[1], "listen_addr", addr, sizeof(addr));
    sa.sin_port = htons((uint16_t)atoi(port));
    if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1) {
        fprintf(stderr, "null_server: listen_addr %s is not an IPv4 address\n", addr);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    build_answers();

    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        setsockopt(lfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0 ||
        bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 4096) < 0) {
        perror("null_server: listen");
        return 1;
    }
    int ep = epoll_create1(0);
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev) < 0) {
        perror("null_server: epoll");
        return 1;
    }
    fprintf(stderr, "null_server: listening on %s:%s\n", addr, port);

    struct epoll_event evs[MAX_EVENTS];
    for (;;) {
        int n = epoll_wait(ep, evs, MAX_EVENTS, -1);
        if (n < 0 && errno != EINTR) {
            perror("null_server: epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (c == NULL) {
                int fd;
                while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    struct epoll_event ev = {.events = EPOLLIN};
                    c = calloc(1, sizeof(*c));
                    if (c == NULL) {
                        close(fd);
                        continue;
                    }
                    c->fd = fd;
                    ev.data.ptr = c;
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
                        close(fd);
                        free(c);
                    }
                }
                continue;
            }
            if ((evs[i].events & EPOLLERR) ||
                ((evs[i].events & EPOLLHUP) && !(evs[i].events & EPOLLIN)) ||
                serve(ep, c, evs[i].events) < 0)
                drop(ep, c);
        }
    }
}
