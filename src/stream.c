/* stream.c - a non-blocking socket with a read buffer and queued output.
 *
 * Output is written straight to the socket when nothing is queued (the
 * common case: one send() per batch of forwarded messages); what the kernel
 * does not take is queued and flushed when the socket becomes writable.
 * One libev watcher per socket; its event mask changes only when reading or
 * queued output starts or stops, so steady forwarding costs no epoll_ctl.
 *
 * TLS: a stream whose `tls` is set goes through the stream_tls_* functions
 * below instead (one pointer test on the plain path). There, output is always
 * queued first and written from the queue, because SSL_write must be retried
 * with the same bytes after it could not finish; reads return plaintext. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "stream.h"

#include "proto.h"
#include "tls.h"
#include "worker.h"

/* Where a TLS stream is in its life. */
enum stream_tls_phase {
    STLS_PREPARED = 0, /* TCP connect running; SSLRequest goes out once it is up */
    STLS_PGREQ,        /* SSLRequest sent; waiting for the server's 'S' or 'N' */
    STLS_HANDSHAKE,    /* SSL_accept / SSL_connect running */
    STLS_ON,           /* established: records flow */
};

struct stream_tls {
    SSL *ssl;
    SSL_CTX *ctx; /* a reference, held from stream_tls_request() until SSL_new() */
    enum stream_tls_phase phase;
    enum tls_sslmode mode; /* servers: what an 'N' answer means */
    int hs_want;           /* events the handshake waits for */
    bool accepting;        /* the client side: failures go to on_closed */
    bool read_wants_write; /* SSL_read needs the socket writable (TLS internals) */
    bool write_wants_read; /* SSL_write needs the socket readable */
    bool failed;           /* a fatal TLS error: no close_notify */
    bool verify_host;
    char host[256];
    char err[256]; /* why the negotiation or the session failed */
};

static int stream_tls_want(const struct stream *s);
static void stream_tls_cb(struct stream *s, int revents);
static void stream_tls_write(struct stream *s, const void *p, size_t n);
static void stream_tls_kick(struct stream *s);
static void stream_tls_free(struct stream *s);

static void stream_update(struct stream *s)
{
    int want = 0;
    if (s->tls) {
        want = stream_tls_want(s);
    } else {
        if (s->reading)
            want |= EV_READ;
        if (s->connecting || (s->obuf && iobuf_len(s->obuf) && !s->held))
            want |= EV_WRITE;
    }
    int have = ev_is_active(&s->io) ? (s->io.events & (EV_READ | EV_WRITE)) : 0;
    if (want == have)
        return;
    if (ev_is_active(&s->io))
        ev_io_stop(s->worker->loop, &s->io);
    if (want) {
        /* Same fd: ev_io_modify, so that a change undone within one loop
         * iteration (write interest while a send waits, say) costs libev
         * no epoll_ctl; ev_io_set makes it re-register the fd every time. */
        if (s->io.fd == s->fd)
            ev_io_modify(&s->io, want);
        else
            ev_io_set(&s->io, s->fd, want);
        ev_io_start(s->worker->loop, &s->io);
    }
}

/* The read buffer with room for a read (plain or TLS), or NULL when the
 * owner left it full: it is waiting for something else, so reading stops
 * until it resumes us. */
static struct iobuf *stream_read_buf(struct stream *s)
{
    if (!s->rbuf)
        s->rbuf = iobuf_get(&s->worker->bufs);
    struct iobuf *b = s->rbuf;
    if (iobuf_room(b) < b->cap / 4)
        iobuf_compact(b);
    if (iobuf_room(b) == 0) {
        stream_read_stop(s);
        return NULL;
    }
    return b;
}

/* Before its peer logged in, a stream whose buffer holds the start of a
 * message (s->want_bytes, set by the framing functions below) is made
 * readable only once the bytes that message still lacks have arrived
 * (SO_RCVLOWAT; EOF and errors still wake it at once). A slowloris, who
 * sends its startup packet a byte at a time, so costs three wakeups and
 * reads instead of one per byte: on a VM a one-byte read() costs 10 to
 * 20 us of kernel time, and 1,000 of them in a row kept the worker from
 * its logged-in clients for as long (docs/reliability.md). Back to 1 once
 * nothing partial is buffered, so a client that sends whole messages, as
 * clients do, costs no setsockopt() at all. The kernel caps the value at
 * half the receive buffer: it then wakes us early, and we ask again. */
static void stream_apply_lowat(struct stream *s)
{
    int v = s->login_limit && !s->tls && s->want_bytes > 1 ? s->want_bytes : 1;
    if (v == 1 && !s->lowat_raised)
        return;
    if (setsockopt(s->fd, SOL_SOCKET, SO_RCVLOWAT, &v, sizeof(v)) == 0)
        s->lowat_raised = v > 1;
}

/* A TCP client's first packet (startup, SSLRequest, GSSENCRequest or
 * CancelRequest: length-prefixed, at most PROTO_STARTUP_MAX) stays in the
 * kernel until it is whole: its header is peeked, SO_RCVLOWAT raised to
 * its length, and nothing read. So a slowloris holds no read buffer, and
 * 1,000 of them sending their first bytes in one wakeup cost 1,000
 * peeks, not 1,000 buffers allocated and faulted in while logged-in
 * clients wait (docs/reliability.md). Not on a unix socket, whose poll
 * ignores SO_RCVLOWAT: it would wake us again at once. Returns true when
 * s must wait for more. */
static bool stream_first_packet_waits(struct stream *s)
{
    /* Most startup packets fit: then what the peek returns is all there
     * is, and no FIONREAD is needed to know whether the packet is whole. */
    uint8_t head[512];
    ssize_t n = recv(s->fd, head, sizeof(head), MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return true;
    if (n <= 0)
        return false;                 /* EOF or an error: the read reports it */
    uint32_t len = PROTO_STARTUP_MIN; /* every first packet has a code */
    enum proto_status ps = proto_peek_startup(head, (size_t)n, &len);
    if (ps != PROTO_OK && ps != PROTO_NEED_MORE)
        return false; /* malformed: the framing refuses it */
    if (n < PROTO_STARTUP_MIN)
        len = PROTO_STARTUP_MIN;
    if ((uint32_t)n >= len)
        return false; /* whole: read it */
    int avail = 0;
    if ((size_t)n == sizeof(head) && ioctl(s->fd, FIONREAD, &avail) == 0 && (uint32_t)avail >= len)
        return false;
    /* Woken below the mark already set: the peer closed (EOF wakes us
     * whatever the mark, and a peek still sees the bytes before it), or
     * the kernel capped the mark. Read what there is: the read after it
     * sees the EOF. Waiting again would wake again at once, forever. */
    if (s->lowat_raised && s->want_bytes == len)
        return false;
    int v = (int)len;
    if (setsockopt(s->fd, SOL_SOCKET, SO_RCVLOWAT, &v, sizeof(v)) != 0)
        return false;
    s->lowat_raised = true;
    s->want_bytes = (uint16_t)len; /* the mark: len <= PROTO_STARTUP_MAX */
    return true;
}

static void stream_do_read(struct stream *s)
{
    if (s->peek_first) { /* nothing read yet, so no buffer and no TLS */
        if (stream_first_packet_waits(s))
            return;
        s->peek_first = false;
    }
    struct iobuf *b = stream_read_buf(s);
    if (!b)
        return;
    ssize_t n = read(s->fd, b->data + b->end, iobuf_room(b));
    if (n > 0) {
        b->end += (uint32_t)n;
        s->bytes_in += (uint64_t)n;
        /* Only clients log in, and a client never changes loops, so s is
         * still ours after on_data() (a server may have moved). */
        bool login = s->login_limit;
        s->want_bytes = 0;
        s->ops->on_data(s);
        if (login && !s->closed && (s->want_bytes > 1 || s->lowat_raised))
            stream_apply_lowat(s);
        return;
    }
    if (n == 0) {
        s->ops->on_closed(s, NULL); /* EOF: the owner names it */
        return;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
        stream_release_rbuf(s);
        return;
    }
    s->ops->on_closed(s, strerror(errno));
}

static void stream_flush(struct stream *s)
{
    struct iobuf *b = s->obuf;
    while (b && iobuf_len(b)) {
        ssize_t n = send(s->fd, b->data + b->start, iobuf_len(b), MSG_NOSIGNAL);
        if (n > 0) {
            b->start += (uint32_t)n;
            s->bytes_out += (uint64_t)n;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        s->ops->on_closed(s, n < 0 ? strerror(errno) : "send failed");
        return;
    }
    iobuf_put(&s->worker->bufs, s->obuf);
    s->obuf = NULL;
    stream_update(s);
    if (s->ops->on_drained)
        s->ops->on_drained(s);
}

static void stream_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    struct stream *s = io->data;
    (void)loop;
    if (s->tls) {
        stream_tls_cb(s, revents);
        return;
    }
    if (s->connecting && (revents & EV_WRITE)) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        s->connecting = false;
        stream_update(s);
        s->ops->on_connected(s, err);
        return;
    }
    if (revents & EV_WRITE) {
        stream_flush(s);
        if (s->closed)
            return;
    }
    if ((revents & EV_READ) && s->reading && !s->closed)
        stream_do_read(s);
}

void stream_init(struct stream *s, struct worker *w, int fd, const struct stream_ops *ops)
{
    memset(s, 0, sizeof(*s));
    s->fd = fd;
    s->worker = w;
    s->ops = ops;
    ev_io_init(&s->io, stream_cb, fd, EV_READ);
    s->io.data = s;
}

void stream_read_start(struct stream *s)
{
    if (s->reading || s->closed)
        return;
    s->reading = true;
    stream_update(s);
    if (s->tls)
        stream_tls_kick(s);
}

void stream_read_stop(struct stream *s)
{
    if (!s->reading)
        return;
    s->reading = false;
    stream_update(s);
}

bool stream_has_output(const struct stream *s)
{
    return s->obuf && iobuf_len(s->obuf);
}

void stream_write(struct stream *s, const void *p, size_t n)
{
    if (s->closed || n == 0)
        return;
    if (s->tls) {
        stream_tls_write(s, p, n);
        return;
    }
    if (!stream_has_output(s) && !s->connecting && !s->corked && !s->held) {
        ssize_t w = send(s->fd, p, n, MSG_NOSIGNAL);
        if (w > 0) {
            s->bytes_out += (uint64_t)w;
            if ((size_t)w == n)
                return;
            p = (const uint8_t *)p + w;
            n -= (size_t)w;
        } else if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            /* Report the error from the watcher, not from inside the
             * caller's processing loop. */
            iobuf_append(&s->worker->bufs, &s->obuf, p, n);
            stream_update(s);
            ev_feed_event(s->worker->loop, &s->io, EV_WRITE);
            return;
        }
    }
    iobuf_append(&s->worker->bufs, &s->obuf, p, n);
    if (!s->corked) /* stream_uncork() sends it and updates the watcher */
        stream_update(s);
}

void stream_cork(struct stream *s)
{
    s->corked = true;
}

bool stream_hold(struct stream *s)
{
    if (s->tls || s->closed)
        return false;
    s->held = true;
    return true;
}

void stream_release_hold(struct stream *s)
{
    if (!s->held)
        return;
    s->held = false;
    /* Sent from the loop, as a write event, so that whatever waits for
     * this stream to drain (a server whose reading backpressure stopped
     * while the answer was held: on_drained) hears of it, and there, not
     * inside the caller's processing. */
    if (!s->closed)
        ev_feed_event(s->worker->loop, &s->io, EV_WRITE);
}

void stream_uncork(struct stream *s)
{
    if (!s->corked)
        return;
    s->corked = false;
    if (s->held)
        return; /* sent when the hold ends */
    struct iobuf *b = s->obuf;
    if (s->closed || s->tls || s->connecting || !b || iobuf_len(b) == 0)
        return;
    ssize_t w = send(s->fd, b->data + b->start, iobuf_len(b), MSG_NOSIGNAL);
    if (w > 0) {
        b->start += (uint32_t)w;
        s->bytes_out += (uint64_t)w;
        if (iobuf_len(b) == 0) {
            iobuf_put(&s->worker->bufs, b);
            s->obuf = NULL;
        }
    } else if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        ev_feed_event(s->worker->loop, &s->io, EV_WRITE);
    }
    stream_update(s);
}

void stream_detach(struct stream *s)
{
    if (ev_is_active(&s->io))
        ev_io_stop(s->worker->loop, &s->io);
    ev_clear_pending(s->worker->loop, &s->io);
}

void stream_attach(struct stream *s)
{
    if (s->closed)
        return;
    /* A new loop: its table may still hold this fd number's old
     * registration (a socket closed there in this iteration), so the fd
     * must be registered whatever the events (ev_io_set marks it so;
     * stream_update()'s ev_io_modify keeps the mark). */
    ev_io_set(&s->io, s->fd, s->io.events & (EV_READ | EV_WRITE));
    stream_update(s);
}

void stream_unread(struct stream *s, const void *p, size_t n)
{
    struct iobuf *b = s->rbuf;
    if (n == 0)
        return;
    if (b && b->start >= n) {
        b->start -= (uint32_t)n;
        memcpy(b->data + b->start, p, n);
        return;
    }
    struct iobuf *nb = NULL;
    iobuf_reserve(&s->worker->bufs, &nb, n + (b ? iobuf_len(b) : 0));
    iobuf_append(&s->worker->bufs, &nb, p, n);
    if (b) {
        iobuf_append(&s->worker->bufs, &nb, b->data + b->start, iobuf_len(b));
        iobuf_put(&s->worker->bufs, b);
    }
    s->rbuf = nb;
}

void stream_release_rbuf(struct stream *s)
{
    if (s->rbuf && iobuf_len(s->rbuf) == 0) {
        iobuf_put(&s->worker->bufs, s->rbuf);
        s->rbuf = NULL;
    }
}

/* A server's socket may still be in the epoll set of a worker it left:
 * libev removes stopped fds lazily, after the next event on them, and
 * recovers if the fd was closed meanwhile. ThreadSanitizer sees that as a
 * race between this close() and libev's epoll_ctl() on the old loop; it is
 * suppressed by this function's name (tests/tsan.supp), so keep it to the
 * close() alone. */
static void __attribute__((noinline)) stream_close_fd(int fd)
{
    close(fd);
}

void stream_close(struct stream *s)
{
    if (s->closed)
        return;
    s->closed = true;
    s->reading = false;
    if (ev_is_active(&s->io))
        ev_io_stop(s->worker->loop, &s->io);
    ev_clear_pending(s->worker->loop, &s->io);
    if (s->tls)
        stream_tls_free(s);
    if (s->fd >= 0)
        stream_close_fd(s->fd);
    s->fd = -1;
    iobuf_put(&s->worker->bufs, s->rbuf);
    iobuf_put(&s->worker->bufs, s->obuf);
    s->rbuf = s->obuf = NULL;
}

int stream_connect(struct stream *s, struct worker *w, const struct sockaddr *addr,
                   socklen_t addrlen, const struct stream_ops *ops)
{
    int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (addr->sa_family != AF_UNIX)
        worker_tcp_options(fd, w->cfg);
    stream_init(s, w, fd, ops);
    int rc = connect(fd, addr, addrlen);
    if (rc < 0 && errno != EINPROGRESS) {
        int err = errno;
        close(fd);
        s->fd = -1;
        s->closed = true;
        return -err;
    }
    s->connecting = true;
    s->reading = true;
    stream_update(s);
    return 0;
}

/* ---- framing --------------------------------------------------------------- */

const char *stream_msg_status_str(enum stream_msg_status st)
{
    static const char *const names[] = {"ok", "more", "bad", "too_big"};
    return (unsigned)st < sizeof(names) / sizeof(names[0]) ? names[st] : "?";
}

/* The size policy: max_packet_size, and less before the peer logged in. */
static uint32_t stream_msg_limit(const struct stream *s)
{
    uint32_t max = (uint32_t)s->worker->cfg->max_packet_size;
    return s->login_limit && max > STREAM_LOGIN_MAX ? STREAM_LOGIN_MAX : max;
}

static enum stream_msg_status stream_status_of(enum proto_status ps)
{
    switch (ps) {
    case PROTO_OK:
        return STREAM_MSG_OK;
    case PROTO_NEED_MORE:
        return STREAM_MSG_MORE;
    case PROTO_TOO_BIG:
        return STREAM_MSG_TOO_BIG;
    case PROTO_BAD:
        break;
    }
    return STREAM_MSG_BAD;
}

/* A full buffer at most doubles: a peer that declares 1 GB and sends a few
 * bytes costs a few bytes (issue 17: it cost 1 GB, at once, and under ASan
 * seconds of poisoning that stalled the worker). */
void stream_make_room(struct stream *s, uint32_t len)
{
    struct iobuf *b = s->rbuf;
    if (b->start + len <= b->cap)
        return;
    if (len <= b->cap || (b->end == b->cap && b->start > 0)) {
        iobuf_compact(b);
        return;
    }
    if (b->end < b->cap)
        return; /* room left: reading goes on, and we come back when full */
    uint32_t have = iobuf_len(b);
    uint32_t want = b->cap < len / 2 ? b->cap * 2 : len;
    iobuf_reserve(&s->worker->bufs, &s->rbuf, want - have);
}

enum stream_msg_status stream_next_msg_slow(struct stream *s, enum stream_msg_need need,
                                            struct stream_msg *m)
{
    struct iobuf *b = s->rbuf;
    if (!b || s->closed)
        return STREAM_MSG_MORE;
    if (s->skip) {
        /* The rest of a message that streams through. */
        uint32_t n = s->skip < iobuf_len(b) ? s->skip : iobuf_len(b);
        b->start += n;
        s->skip -= n;
        if (s->skip)
            return STREAM_MSG_MORE;
    }
    uint32_t have = iobuf_len(b);
    if (have < PROTO_HDR)
        return STREAM_MSG_MORE;
    const uint8_t *p = b->data + b->start;
    uint32_t l = proto_get32(p + 1);
    if (l < 4)
        return STREAM_MSG_BAD; /* the length counts itself */
    if (l > stream_msg_limit(s) - 1 || l > 0x7ffffffeu)
        return STREAM_MSG_TOO_BIG;
    m->type = p[0];
    m->len = l + 1;
    m->data = p;
    m->avail = m->len < have ? m->len : have;
    if (need == STREAM_MSG_WHOLE && m->len > have) {
        if (s->login_limit)
            s->want_bytes = (uint16_t)(m->len - have); /* len <= STREAM_LOGIN_MAX */
        stream_make_room(s, m->len);
        return STREAM_MSG_MORE;
    }
    return STREAM_MSG_OK;
}

enum stream_msg_status stream_msg_whole(struct stream *s, struct stream_msg *m)
{
    if (m->avail >= m->len)
        return STREAM_MSG_OK;
    stream_make_room(s, m->len);
    return STREAM_MSG_MORE;
}

enum stream_msg_status stream_msg_at(const struct stream *s, uint32_t off, struct stream_msg *m)
{
    const struct iobuf *b = s->rbuf;
    if (!b || s->skip || off > iobuf_len(b))
        return STREAM_MSG_MORE;
    uint32_t have = iobuf_len(b) - off;
    enum proto_status ps =
        proto_peek_header(b->data + b->start + off, have, stream_msg_limit(s), &m->type, &m->len);
    if (ps != PROTO_OK)
        return stream_status_of(ps);
    if (m->len > have)
        return STREAM_MSG_MORE;
    m->avail = m->len;
    m->data = b->data + b->start + off;
    return STREAM_MSG_OK;
}

enum stream_msg_status stream_next_startup(struct stream *s, struct stream_msg *m)
{
    struct iobuf *b = s->rbuf;
    if (!b || s->closed)
        return STREAM_MSG_MORE;
    uint32_t have = iobuf_len(b);
    enum proto_status ps = proto_peek_startup(b->data + b->start, have, &m->len);
    if (ps == PROTO_NEED_MORE && have > 0)
        s->want_bytes = (uint16_t)(PROTO_STARTUP_MIN - have); /* every one has a code */
    if (ps != PROTO_OK)
        return stream_status_of(ps);
    m->type = 0;
    m->data = b->data + b->start;
    m->avail = m->len < have ? m->len : have;
    if (m->len > have) {
        s->want_bytes = (uint16_t)(m->len - have); /* len <= PROTO_STARTUP_MAX */
        stream_make_room(s, m->len);
        return STREAM_MSG_MORE;
    }
    return STREAM_MSG_OK;
}

void stream_limit_login(struct stream *s)
{
    s->login_limit = true;
    if (!ev_is_active(&s->io) && !ev_is_pending(&s->io))
        ev_set_priority(&s->io, WORKER_PRI_LOGIN);
}

void stream_limit_lift(struct stream *s)
{
    s->login_limit = false;
    if (ev_priority(&s->io) == 0)
        return;
    /* libev changes no priority of an active or pending watcher. A pending
     * event dropped here comes again: the fd is polled level-triggered. */
    bool active = ev_is_active(&s->io);
    if (active)
        ev_io_stop(s->worker->loop, &s->io);
    ev_clear_pending(s->worker->loop, &s->io);
    ev_set_priority(&s->io, 0);
    if (active)
        ev_io_start(s->worker->loop, &s->io);
}

/* ---- TLS ------------------------------------------------------------------ */

/* The latest OpenSSL error as text (the queue is emptied). */
static const char *stream_ssl_errstr(char *buf, size_t len)
{
    unsigned long e = ERR_get_error(), next;
    while ((next = ERR_get_error()) != 0)
        e = next;
    if (!e)
        snprintf(buf, len, "%s", errno ? strerror(errno) : "connection closed");
    else
        ERR_error_string_n(e, buf, len);
    return buf;
}

static int stream_tls_want(const struct stream *s)
{
    const struct stream_tls *t = s->tls;
    int want = 0;
    if (t->failed)
        return 0; /* the owner is closing */
    switch (t->phase) {
    case STLS_PREPARED:
        return s->connecting ? EV_WRITE : 0;
    case STLS_PGREQ:
        return EV_READ;
    case STLS_HANDSHAKE:
        return t->hs_want;
    case STLS_ON:
        if (s->reading || t->write_wants_read)
            want |= EV_READ;
        /* Output waiting for readability must not poll for writability:
         * the socket is writable, and SSL_write would just say no again. */
        if (((s->obuf && iobuf_len(s->obuf)) && !t->write_wants_read) || t->read_wants_write)
            want |= EV_WRITE;
        break;
    }
    return want;
}

/* The negotiation or handshake failed: a server's owner learns it from
 * on_connected (config = retrying will not help), a client's from
 * on_closed. */
static void stream_tls_fail(struct stream *s, bool config, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void stream_tls_fail(struct stream *s, bool config, const char *fmt, ...)
{
    struct stream_tls *t = s->tls;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->err, sizeof(t->err), fmt, ap);
    va_end(ap);
    t->failed = true;
    t->hs_want = 0;
    stream_update(s);
    if (t->accepting)
        s->ops->on_closed(s, t->err);
    else
        s->ops->on_connected(s, config ? STREAM_ERR_TLS_CONFIG : STREAM_ERR_TLS);
}

/* Writes from obuf through TLS: 1 = all written, 0 = must wait, -1 = error
 * (t->err says which). */
static int stream_tls_write_some(struct stream *s)
{
    struct stream_tls *t = s->tls;
    struct iobuf *b = s->obuf;
    while (b && iobuf_len(b)) {
        uint32_t len = iobuf_len(b);
        ERR_clear_error();
        errno = 0;
        int n = SSL_write(t->ssl, b->data + b->start, len > INT_MAX ? INT_MAX : (int)len);
        if (n > 0) {
            b->start += (uint32_t)n;
            s->bytes_out += (uint64_t)n;
            continue;
        }
        int e = SSL_get_error(t->ssl, n);
        if (e == SSL_ERROR_WANT_WRITE) {
            t->write_wants_read = false;
            return 0;
        }
        if (e == SSL_ERROR_WANT_READ) {
            t->write_wants_read = true;
            return 0;
        }
        char buf[200];
        snprintf(t->err, sizeof(t->err), "TLS write failed: %s",
                 stream_ssl_errstr(buf, sizeof(buf)));
        t->failed = true;
        return -1;
    }
    t->write_wants_read = false;
    return 1;
}

static void stream_tls_write(struct stream *s, const void *p, size_t n)
{
    struct stream_tls *t = s->tls;
    /* Nothing can reach a client whose handshake is not done (an error for
     * a client_login_timeout, say), nor a broken session: dropping it lets
     * the owner close now instead of waiting for a drain that never comes. */
    if (t->failed || (t->accepting && t->phase != STLS_ON))
        return;
    bool queued = stream_has_output(s);
    iobuf_append(&s->worker->bufs, &s->obuf, p, n);
    if (queued || t->phase != STLS_ON) {
        stream_update(s);
        return;
    }
    int rc = stream_tls_write_some(s);
    if (rc > 0) {
        iobuf_put(&s->worker->bufs, s->obuf);
        s->obuf = NULL;
    } else if (rc < 0) {
        /* As on the plain path: the error is reported from the watcher,
         * not from inside the caller's processing loop. */
        ev_feed_event(s->worker->loop, &s->io, EV_WRITE);
    }
    stream_update(s);
}

/* The watcher says the socket is writable (or readable, when SSL_write
 * waited for that): write what is queued. */
static void stream_tls_flush(struct stream *s)
{
    int rc = stream_tls_write_some(s);
    if (rc < 0) {
        s->ops->on_closed(s, s->tls->err);
        return;
    }
    if (rc == 0) {
        stream_update(s);
        return;
    }
    iobuf_put(&s->worker->bufs, s->obuf);
    s->obuf = NULL;
    stream_update(s);
    if (s->ops->on_drained)
        s->ops->on_drained(s);
}

static void stream_tls_read(struct stream *s)
{
    struct stream_tls *t = s->tls;
    struct iobuf *b = stream_read_buf(s);
    if (!b)
        return;
    uint32_t room = iobuf_room(b);
    ERR_clear_error();
    errno = 0;
    int n = SSL_read(t->ssl, b->data + b->end, room > INT_MAX ? INT_MAX : (int)room);
    if (n > 0) {
        if (t->read_wants_write) {
            t->read_wants_write = false;
            stream_update(s);
        }
        b->end += (uint32_t)n;
        s->bytes_in += (uint64_t)n;
        s->ops->on_data(s);
        /* A record may hold more than the buffer took: OpenSSL keeps the
         * rest, and the socket will not say readable for it. */
        stream_tls_kick(s);
        return;
    }
    int e = SSL_get_error(t->ssl, n);
    switch (e) {
    case SSL_ERROR_WANT_READ:
        if (t->read_wants_write) {
            t->read_wants_write = false;
            stream_update(s);
        }
        stream_release_rbuf(s);
        return;
    case SSL_ERROR_WANT_WRITE:
        t->read_wants_write = true;
        stream_update(s);
        stream_release_rbuf(s);
        return;
    case SSL_ERROR_ZERO_RETURN:
        s->ops->on_closed(s, NULL); /* EOF: the owner names it */
        return;
    default: {
        char buf[200];
        t->failed = true;
        if (e == SSL_ERROR_SYSCALL && errno == 0) {
            s->ops->on_closed(s, NULL);
            return;
        }
        snprintf(t->err, sizeof(t->err), "TLS read failed: %s",
                 stream_ssl_errstr(buf, sizeof(buf)));
        s->ops->on_closed(s, t->err);
        return;
    }
    }
}

/* Schedules a read when OpenSSL holds decrypted bytes nobody asked for. */
static void stream_tls_kick(struct stream *s)
{
    struct stream_tls *t = s->tls;
    if (t && t->phase == STLS_ON && s->reading && !s->closed && SSL_has_pending(t->ssl))
        ev_feed_event(s->worker->loop, &s->io, EV_READ);
}

static void stream_tls_handshake(struct stream *s)
{
    struct stream_tls *t = s->tls;
    ERR_clear_error();
    errno = 0;
    int rc = SSL_do_handshake(t->ssl);
    if (rc == 1) {
        t->phase = STLS_ON;
        t->hs_want = 0;
        stream_update(s);
        if (!t->accepting) {
            s->ops->on_connected(s, 0);
            return;
        }
        /* The client's first message may have come with its Finished. */
        if (s->reading)
            stream_tls_read(s);
        return;
    }
    int e = SSL_get_error(t->ssl, rc);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        t->hs_want = e == SSL_ERROR_WANT_READ ? EV_READ : EV_WRITE;
        stream_update(s);
        return;
    }
    char buf[200];
    long vr = SSL_get_verify_result(t->ssl);
    if (vr != X509_V_OK && SSL_get_verify_mode(t->ssl) != SSL_VERIFY_NONE) {
        ERR_clear_error();
        stream_tls_fail(s, true, "TLS handshake failed: certificate verify failed: %s",
                        X509_verify_cert_error_string(vr));
        return;
    }
    stream_tls_fail(s, false, "TLS handshake failed: %s", stream_ssl_errstr(buf, sizeof(buf)));
}

static bool is_ip_literal(const char *host)
{
    unsigned char a[16];
    return inet_pton(AF_INET, host, a) == 1 || inet_pton(AF_INET6, host, a) == 1;
}

/* The server's one-byte answer to SSLRequest. Exactly one byte is read:
 * anything after an 'S' belongs to the handshake, and a server must not
 * be able to slip plaintext in front of it. */
static void stream_tls_pgreq_answer(struct stream *s)
{
    struct stream_tls *t = s->tls;
    uint8_t c;
    ssize_t n = recv(s->fd, &c, 1, 0);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return;
        stream_tls_fail(s, false, "SSL negotiation failed: %s", strerror(errno));
        return;
    }
    if (n == 0) {
        stream_tls_fail(s, false, "server closed the connection during SSL negotiation");
        return;
    }
    s->bytes_in++;
    if (c == 'N') {
        if (t->mode >= TLS_MODE_REQUIRE) {
            stream_tls_fail(s, true, "server does not support TLS, and server_tls_sslmode is %s",
                            tls_sslmode_str(t->mode));
            return;
        }
        /* prefer/allow: go on in plaintext. */
        stream_tls_free(s);
        stream_update(s);
        s->ops->on_connected(s, 0);
        return;
    }
    if (c != 'S') {
        stream_tls_fail(s, true, "server answered SSLRequest with unexpected byte 0x%02x", c);
        return;
    }
    ERR_clear_error();
    SSL *ssl = SSL_new(t->ctx);
    if (!ssl) {
        char buf[200];
        stream_tls_fail(s, false, "SSL_new: %s", stream_ssl_errstr(buf, sizeof(buf)));
        return;
    }
    t->ssl = ssl;
    SSL_set_fd(ssl, s->fd);
    SSL_set_connect_state(ssl);
    bool ip = is_ip_literal(t->host);
    /* SNI: hosted services route on it (and no name is sent for an IP). */
    if (t->host[0] && !ip)
        SSL_set_tlsext_host_name(ssl, t->host);
    if (t->verify_host) {
        int ok = ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), t->host)
                    : SSL_set1_host(ssl, t->host);
        if (ok != 1) {
            stream_tls_fail(s, true, "cannot verify host name \"%s\"", t->host);
            return;
        }
    }
    t->phase = STLS_HANDSHAKE;
    stream_tls_handshake(s);
}

/* A server stream armed by stream_tls_request(): TCP is up (or failed). */
static void stream_tls_connected(struct stream *s)
{
    static const uint8_t ssl_request[8] = {0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f}; /* 80877103 */
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    s->connecting = false;
    if (err) {
        stream_update(s);
        s->ops->on_connected(s, err);
        return;
    }
    /* A fresh socket's send buffer is empty: 8 bytes go out whole. */
    if (send(s->fd, ssl_request, sizeof(ssl_request), MSG_NOSIGNAL) !=
        (ssize_t)sizeof(ssl_request)) {
        stream_tls_fail(s, false, "could not send SSLRequest: %s", strerror(errno));
        return;
    }
    s->bytes_out += sizeof(ssl_request);
    s->tls->phase = STLS_PGREQ;
    stream_update(s);
}

static void stream_tls_cb(struct stream *s, int revents)
{
    struct stream_tls *t = s->tls;
    switch (t->phase) {
    case STLS_PREPARED:
        if (s->connecting && (revents & EV_WRITE))
            stream_tls_connected(s);
        return;
    case STLS_PGREQ:
        if (revents & EV_READ)
            stream_tls_pgreq_answer(s);
        return;
    case STLS_HANDSHAKE:
        if (!t->failed)
            stream_tls_handshake(s);
        return;
    case STLS_ON:
        break;
    }
    bool flush = t->write_wants_read ? (revents & EV_READ) : (revents & EV_WRITE);
    bool read = t->read_wants_write ? (revents & EV_WRITE) : (revents & EV_READ);
    if (flush && stream_has_output(s)) {
        stream_tls_flush(s);
        if (s->closed)
            return;
    }
    if (read && s->reading && !s->closed)
        stream_tls_read(s);
}

static void stream_tls_free(struct stream *s)
{
    struct stream_tls *t = s->tls;
    s->tls = NULL;
    if (t->ssl) {
        /* A polite close_notify, if the session is sound; never waited for. */
        if (t->phase == STLS_ON && !t->failed && s->fd >= 0) {
            ERR_clear_error();
            (void)SSL_shutdown(t->ssl);
        }
        SSL_free(t->ssl);
    }
    if (t->ctx)
        SSL_CTX_free(t->ctx);
    ERR_clear_error();
    free(t);
}

static struct stream_tls *stream_tls_new(void)
{
    struct stream_tls *t = calloc(1, sizeof(*t));
    if (!t)
        abort();
    return t;
}

bool stream_tls_accept(struct stream *s, void *ctx)
{
    struct stream_tls *t = stream_tls_new();
    ERR_clear_error();
    t->ssl = SSL_new(ctx);
    if (!t->ssl) {
        free(t);
        ERR_clear_error();
        return false;
    }
    SSL_set_fd(t->ssl, s->fd);
    SSL_set_accept_state(t->ssl);
    t->accepting = true;
    t->phase = STLS_HANDSHAKE;
    t->hs_want = EV_READ;
    s->tls = t;
    stream_update(s);
    return true;
}

bool stream_tls_request(struct stream *s, void *ctx, enum tls_sslmode mode, const char *host,
                        bool verify_host)
{
    if (!ctx || s->tls || !s->connecting)
        return false;
    struct stream_tls *t = stream_tls_new();
    SSL_CTX_up_ref(ctx);
    t->ctx = ctx;
    t->mode = mode;
    t->verify_host = verify_host;
    snprintf(t->host, sizeof(t->host), "%s", host);
    t->phase = STLS_PREPARED;
    s->tls = t;
    stream_update(s);
    return true;
}

void *stream_tls_ssl(const struct stream *s)
{
    return s->tls && s->tls->phase == STLS_ON ? s->tls->ssl : NULL;
}

const char *stream_strerror(const struct stream *s, int err)
{
    if (err == STREAM_ERR_TLS || err == STREAM_ERR_TLS_CONFIG)
        return s->tls && s->tls->err[0] ? s->tls->err : "TLS negotiation failed";
    return strerror(err);
}

void stream_write_cancel(struct stream *s, uint32_t pid, uint32_t key)
{
    uint8_t buf[16];
    struct proto_writer wr;
    proto_writer_init(&wr, buf, sizeof(buf));
    proto_build_cancel(&wr, pid, key);
    stream_write(s, buf, wr.len);
}
