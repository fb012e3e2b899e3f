/* stream.c - a non-blocking socket with a read buffer and queued output.
 *
 * Output is written straight to the socket when nothing is queued (the
 * common case: one send() per batch of forwarded messages); what the kernel
 * does not take is queued and flushed when the socket becomes writable.
 * One libev watcher per socket; its event mask changes only when reading or
 * queued output starts or stops, so steady forwarding costs no epoll_ctl. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn.h"
#include "worker.h"

static void stream_update(struct stream *s)
{
    int want = 0;
    if (s->reading)
        want |= EV_READ;
    if (s->connecting || (s->obuf && iobuf_len(s->obuf)))
        want |= EV_WRITE;
    int have = ev_is_active(&s->io) ? (s->io.events & (EV_READ | EV_WRITE)) : 0;
    if (want == have)
        return;
    if (ev_is_active(&s->io))
        ev_io_stop(s->worker->loop, &s->io);
    if (want) {
        ev_io_set(&s->io, s->fd, want);
        ev_io_start(s->worker->loop, &s->io);
    }
}

static void stream_do_read(struct stream *s)
{
    struct worker *w = s->worker;
    if (!s->rbuf)
        s->rbuf = iobuf_get(&w->bufs);
    struct iobuf *b = s->rbuf;
    if (iobuf_room(b) < b->cap / 4)
        iobuf_compact(b);
    if (iobuf_room(b) == 0) {
        /* The owner left a full buffer unconsumed: it is waiting for
         * something else; stop reading until it resumes us. */
        stream_read_stop(s);
        return;
    }
    ssize_t n = read(s->fd, b->data + b->end, iobuf_room(b));
    if (n > 0) {
        b->end += (uint32_t)n;
        s->bytes_in += (uint64_t)n;
        s->ops->on_data(s);
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
    if (!stream_has_output(s) && !s->connecting) {
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
    stream_update(s);
}

void stream_release_rbuf(struct stream *s)
{
    if (s->rbuf && iobuf_len(s->rbuf) == 0) {
        iobuf_put(&s->worker->bufs, s->rbuf);
        s->rbuf = NULL;
    }
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
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
    iobuf_put(&s->worker->bufs, s->rbuf);
    iobuf_put(&s->worker->bufs, s->obuf);
    s->rbuf = s->obuf = NULL;
}

void stream_set_keepalive(int fd, const struct config *cfg)
{
    int on = cfg->tcp_keepalive ? 1 : 0;
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
    if (!on)
        return;
    if (cfg->tcp_keepidle > 0)
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &cfg->tcp_keepidle, sizeof(int));
    if (cfg->tcp_keepintvl > 0)
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &cfg->tcp_keepintvl, sizeof(int));
    if (cfg->tcp_keepcnt > 0)
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cfg->tcp_keepcnt, sizeof(int));
    if (cfg->tcp_user_timeout > 0) {
        unsigned int ms = (unsigned int)(cfg->tcp_user_timeout / 1000);
        setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ms, sizeof(ms));
    }
}

int stream_connect(struct stream *s, struct worker *w, const struct sockaddr *addr,
                   socklen_t addrlen, const struct stream_ops *ops)
{
    int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (addr->sa_family != AF_UNIX) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        stream_set_keepalive(fd, w->cfg);
    }
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
