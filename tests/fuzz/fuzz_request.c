/* fuzz_request.c - libFuzzer target for the message iterator and the request
 * queue: what a client sends and what its server answers, in any order and
 * split anywhere.
 *
 * The first byte picks the pool mode (bit 0: tracked, as in transaction and
 * statement mode; else session mode). The rest is a list of chunks: a byte
 * saying whose (bit 0: the client's, else the server's), a length byte, then
 * that many bytes, appended to that side's read buffer, which is then read
 * the way relay.c reads it: stream_next_msg() frames each message (the
 * client's whole, the server's by its header, whole when the queue asks),
 * request_client_msg() and request_server_msg() see it, and it is
 * consumed. A framing error ends that side, as it ends the connection.
 * At the end the client leaves with whatever is still in flight
 * (request_client_free(), as when it closes).
 *
 * Checked: no read outside a message (ASan), a bounded buffer (max_packet_size
 * is 64 kB here), and that no request ends more often than the client sent a
 * message that ends one (Query, Sync, FunctionCall).
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config.h"
#include "request.h"
#include "worker.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct worker w;
static bool ready;
static int fds[4];
static unsigned ends_heard;

static void require(bool cond)
{
    if (!cond)
        abort();
}

static void obs_end(struct client *c, struct server *sv, const struct request *r, char status)
{
    (void)c;
    (void)sv;
    (void)r;
    (void)status;
    ends_heard++;
}

static const struct request_observer fuzz_observer = {
    .name = "fuzz",
    .on_request_end = obs_end,
};

static void init_once(void)
{
    char err[256];
    struct config *cfg = config_load_string(
        "fuzz", "[databases]\n[pgbouncer]\nmax_packet_size = 65536\n", err, sizeof(err));
    require(cfg != NULL);
    worker_init(&w, 0, ev_default_loop(0), cfg);
    config_unref(cfg);
    require(socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0);
    require(socketpair(AF_UNIX, SOCK_STREAM, 0, fds + 2) == 0);
    request_observe(&fuzz_observer);
    ready = true;
}

/* The client's buffered messages, as relay_client_data() takes them. False
 * when the client is done (a framing error, or the queue refused one). */
static bool client_reads(struct client *c, unsigned *end_msgs)
{
    struct stream_msg m;
    for (;;) {
        enum stream_msg_status ms = stream_next_msg(&c->s, STREAM_MSG_WHOLE, &m);
        if (ms == STREAM_MSG_MORE)
            return true;
        if (ms != STREAM_MSG_OK)
            return false;
        uint32_t fwd = c->s.rbuf->start;
        int64_t r = request_client_msg(c, m.type, m.len, &fwd);
        if (r == REQUEST_WAIT)
            return true;
        if (r < 0)
            return false;
        if (m.type == 'Q' || m.type == 'S' || m.type == 'F')
            (*end_msgs)++;
        stream_consume_msg(&c->s, m.len);
    }
}

/* The server's buffered messages, as relay_server_data() takes them. */
static bool server_reads(struct client *c, struct server *sv)
{
    struct stream_msg m;
    for (;;) {
        enum stream_msg_status ms = stream_next_msg(&sv->s, STREAM_MSG_HEAD, &m);
        if (ms == STREAM_MSG_MORE)
            return true;
        if (ms != STREAM_MSG_OK)
            return false;
        unsigned act = request_server_msg(c, sv, &m);
        if (act & REQUEST_MORE) {
            stream_msg_whole(&sv->s, &m);
            return true; /* asked again once the rest is in */
        }
        if (!(act & REQUEST_SWALLOW) && m.type == 'Z' && m.avail >= 6)
            sv->xact_status = (char)m.data[5];
        stream_consume_msg(&sv->s, m.len);
        if (act & REQUEST_EMIT) {
            const uint8_t *p;
            size_t n;
            request_out_take(c, &p, &n);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!ready)
        init_once();
    if (size < 1)
        return 0;
    static struct client c;
    static struct server sv;
    memset(&c, 0, sizeof(c));
    memset(&sv, 0, sizeof(sv));
    stream_init(&c.s, &w, fds[0], NULL);
    stream_init(&sv.s, &w, fds[2], NULL);
    c.server = &sv;
    sv.client = &c;
    sv.xact_status = 'I';
    c.track = data[0] & 1;
    ends_heard = 0;
    unsigned end_msgs = 0;
    bool client_ok = true, server_ok = true;
    size_t i = 1;
    while (i + 2 <= size && (client_ok || server_ok)) {
        bool client_side = data[i] & 1;
        size_t n = data[i + 1];
        i += 2;
        if (n > size - i)
            n = size - i;
        struct stream *s = client_side ? &c.s : &sv.s;
        if ((client_side && client_ok) || (!client_side && server_ok))
            iobuf_append(&w.bufs, &s->rbuf, data + i, n);
        i += n;
        if (client_side && client_ok)
            client_ok = client_reads(&c, &end_msgs);
        else if (!client_side && server_ok)
            server_ok = server_reads(&c, &sv);
        require(ends_heard <= end_msgs);
    }
    request_client_free(&c);
    require(c.rq == NULL);
    stream_release_rbuf(&c.s);
    stream_release_rbuf(&sv.s);
    if (c.s.rbuf) {
        iobuf_put(&w.bufs, c.s.rbuf);
        c.s.rbuf = NULL;
    }
    if (sv.s.rbuf) {
        iobuf_put(&w.bufs, sv.s.rbuf);
        sv.s.rbuf = NULL;
    }
    return 0;
}
