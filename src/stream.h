/* stream.h - a non-blocking socket with its read buffer and queued output,
 * and the one way sluice frames the protocol messages in it.
 *
 * Every reader of PostgreSQL messages (clients, servers, the admin console,
 * sluice's own queries, LISTEN) takes them from stream_next_msg(), so that
 * one size policy holds everywhere: a message is at most max_packet_size,
 * and at most STREAM_LOGIN_MAX before its peer has logged in (a stream
 * starts out so limited when stream_limit_login() is called on it). */
#ifndef SLUICE_STREAM_H
#define SLUICE_STREAM_H

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "iobuf.h"
#include "proto.h"

struct worker;
struct config;
struct stream;

/* What a stream's owner implements. */
struct stream_ops {
    /* New bytes are in s->rbuf. Consume what can be handled; leave the rest. */
    void (*on_data)(struct stream *s);
    /* Pending output was written completely (backpressure lifts). */
    void (*on_drained)(struct stream *s);
    /* EOF or a socket error; the owner must close. reason for the log. */
    void (*on_closed)(struct stream *s, const char *reason);
    /* Non-blocking connect finished (servers only); err = 0 on success. */
    void (*on_connected)(struct stream *s, int err);
};

struct stream {
    struct worker *worker;
    const struct stream_ops *ops;
    ev_io io;
    struct iobuf *rbuf;         /* bytes read and not yet handled; NULL when none */
    struct iobuf *obuf;         /* bytes waiting to be written; NULL when none */
    struct stream *blocked_src; /* a peer whose reading waits for our obuf to drain */
    struct stream_tls *tls;     /* TLS state (tls.h, stream.c); NULL on a plain socket */
    int fd;
    uint32_t skip;     /* bytes of the current message still to come from the socket */
    bool skip_forward; /* ... and whether they are forwarded to the peer */
    bool reading;      /* read interest wanted */
    bool closed;
    /* Flags off the per-message path, as bits: struct client (which holds
     * a stream) stays within the size test_conn.c allows. */
    bool connecting : 1;
    bool corked : 1;       /* stream_write queues; stream_uncork sends it all at once */
    bool login_limit : 1;  /* messages limited to STREAM_LOGIN_MAX (peer not logged in) */
    bool held : 1;         /* output kept back until stream_release_hold() */
    bool lowat_raised : 1; /* the socket's SO_RCVLOWAT is above 1 (stream_apply_lowat()) */
    bool peek_first : 1;   /* a TCP client's first packet, not read yet: waits until whole */
    /* Login phase: bytes the partial message at the buffer's start lacks
     * (a login-phase message is at most STREAM_LOGIN_MAX); with nothing
     * read yet, the SO_RCVLOWAT mark set for the first packet. */
    uint16_t want_bytes;
    uint64_t bytes_in, bytes_out;
};

void stream_init(struct stream *s, struct worker *w, int fd, const struct stream_ops *ops);
/* Starts or stops reading. */
void stream_read_start(struct stream *s);
void stream_read_stop(struct stream *s);
/* Writes n bytes (directly if nothing is queued, else queued in order). */
void stream_write(struct stream *s, const void *p, size_t n);
bool stream_has_output(const struct stream *s);
/* While corked, stream_write only queues: a message sluice rewrites in
 * pieces then leaves in one send() (one packet, one wakeup of the peer). */
void stream_cork(struct stream *s);
/* Sends what was queued while corked (errors surface from the watcher). */
void stream_uncork(struct stream *s);
/* Keeps everything written to s from now queued, in order, until
 * stream_release_hold() (the result cache holds a writer's answer until
 * its invalidation reached Redis). false: s cannot be held (TLS, closed). */
bool stream_hold(struct stream *s);
void stream_release_hold(struct stream *s);
/* Moving a stream to another worker's loop: detach on the old owner's
 * thread, set s->worker, attach on the new one's (watchers follow the
 * stream's flags). Buffers go along and end in the new worker's cache. */
void stream_detach(struct stream *s);
void stream_attach(struct stream *s);
/* Drops buffers and closes the fd. */
void stream_close(struct stream *s);
/* Returns rbuf to the cache if it holds nothing. */
void stream_release_rbuf(struct stream *s);
/* Puts n bytes back in front of what s has buffered to read, as if they
 * had not been consumed yet (a request sent again elsewhere). */
void stream_unread(struct stream *s, const void *p, size_t n);
/* Bytes given to stream_write() since s began, sent or queued: whether
 * anything was written to s since a moment. */
static inline uint64_t stream_written(const struct stream *s)
{
    return s->bytes_out + (s->obuf ? iobuf_len(s->obuf) : 0);
}
/* Starts a non-blocking connect to addr; on_connected reports the result. */
int stream_connect(struct stream *s, struct worker *w, const struct sockaddr *addr,
                   socklen_t addrlen, const struct stream_ops *ops);

/* ---- framing ------------------------------------------------------------- */

/* Largest message from a peer that has not logged in: PostgreSQL's own
 * limit for an authentication token (a password or SASL message). */
#define STREAM_LOGIN_MAX 65535u

/* The outcome of looking for the next message. */
enum stream_msg_status {
    STREAM_MSG_OK = 0,  /* m describes the next message */
    STREAM_MSG_MORE,    /* not enough bytes yet: wait for the next read */
    STREAM_MSG_BAD,     /* a length no message can have: a protocol violation */
    STREAM_MSG_TOO_BIG, /* longer than the stream's limit (max_packet_size) */
};
const char *stream_msg_status_str(enum stream_msg_status st);

/* How much of a message its reader needs before it can act. */
enum stream_msg_need {
    STREAM_MSG_HEAD = 0, /* its type and length: the rest may pass through as it comes */
    STREAM_MSG_WHOLE,    /* all of it, in the buffer (which grows to hold it) */
};

/* One message at the start of the read buffer. */
struct stream_msg {
    uint8_t type;
    uint32_t len;        /* the whole message, type byte included */
    uint32_t avail;      /* how many of its bytes are in the buffer now (len when whole) */
    const uint8_t *data; /* its first byte, in s->rbuf: valid until the buffer changes */
};

enum stream_msg_status stream_next_msg_slow(struct stream *s, enum stream_msg_need need,
                                            struct stream_msg *m);

/* The next message of s (the bytes of one still streaming through are
 * stepped over first). Nothing is consumed: the reader calls
 * stream_consume_msg() for what it handled. With STREAM_MSG_WHOLE, MORE
 * until the whole message is buffered. A closed stream or an empty buffer
 * gives MORE. Inline for the common case (every message both ways): a
 * short message, nothing streaming. */
static inline enum stream_msg_status stream_next_msg(struct stream *s, enum stream_msg_need need,
                                                     struct stream_msg *m)
{
    const struct iobuf *b = s->rbuf;
    if (!b || s->skip || s->closed)
        return stream_next_msg_slow(s, need, m);
    uint32_t have = iobuf_len(b);
    if (have < PROTO_HDR)
        return STREAM_MSG_MORE;
    const uint8_t *p = b->data + b->start;
    uint32_t l = proto_get32(p + 1);
    /* Under 1 kB: within any limit (max_packet_size is at least 1024). */
    if (l < 4 || l >= 1023 || (need == STREAM_MSG_WHOLE && l >= have))
        return stream_next_msg_slow(s, need, m);
    m->type = p[0];
    m->len = l + 1;
    m->data = p;
    m->avail = m->len < have ? m->len : have;
    return STREAM_MSG_OK;
}
/* The current message m, from a STREAM_MSG_HEAD look, is needed whole
 * after all (its type says so): OK when it is, else MORE (the buffer makes
 * room for it). */
enum stream_msg_status stream_msg_whole(struct stream *s, struct stream_msg *m);
/* Makes room in s's read buffer for more of a message of len bytes that
 * starts at the buffer's start and is needed whole: the buffer is compacted
 * or, when full, at most doubled (up to len), so that memory follows the
 * bytes that arrived, never the length a header declares. The buffer may
 * move: pointers into it are stale after. */
void stream_make_room(struct stream *s, uint32_t len);
/* Writes a CancelRequest for (pid, key) on s, a connection of its own. */
void stream_write_cancel(struct stream *s, uint32_t pid, uint32_t key);
/* Consumes n bytes of the current message: those buffered now, and the rest
 * as they arrive (stepped over by the next stream_next_msg(); forwarded to
 * the peer by whoever streams it: s->skip_forward). */
static inline void stream_consume_msg(struct stream *s, uint32_t n)
{
    struct iobuf *b = s->rbuf;
    if (n <= iobuf_len(b)) {
        b->start += n;
    } else {
        s->skip = n - iobuf_len(b);
        s->skip_forward = true;
        b->start = b->end;
    }
}
/* Looks at a buffered message off bytes past the read position, without
 * consuming anything: OK only for a whole one (for look-ahead over a batch
 * of messages). */
enum stream_msg_status stream_msg_at(const struct stream *s, uint32_t off, struct stream_msg *m);
/* An untyped startup-phase packet (StartupMessage, SSLRequest,
 * CancelRequest) at the start of the buffer, whole; its limit is
 * PostgreSQL's (PROTO_STARTUP_MAX). m->type is 0. */
enum stream_msg_status stream_next_startup(struct stream *s, struct stream_msg *m);
/* Limits s's messages to STREAM_LOGIN_MAX until stream_limit_lift(), and
 * puts its events after those of logged-in connections within each loop
 * iteration (WORKER_PRI_LOGIN). Call before the stream's first read. */
void stream_limit_login(struct stream *s);
void stream_limit_lift(struct stream *s);

#endif
