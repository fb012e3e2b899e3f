/* test_stream.c - the message iterator of stream.c: messages split across
 * reads and coalesced in one, streamed through, held whole, oversized,
 * malformed, and the login limit. No socket: bytes are put in the read
 * buffer as a read() would; but for the order of logged-in and login
 * streams within a loop iteration (socket pairs). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "stream.h"
#include "worker.h"

static struct worker w;
static struct stream s;

static int setup(void **state)
{
    (void)state;
    char err[256];
    struct config *cfg = config_load_string(
        "test", "[databases]\n[pgbouncer]\nmax_packet_size = 100000\n", err, sizeof(err));
    assert_non_null(cfg);
    worker_init(&w, 0, ev_default_loop(0), cfg);
    config_unref(cfg); /* the worker holds its own reference */
    stream_init(&s, &w, -1, NULL);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    iobuf_put(&w.bufs, s.rbuf);
    s.rbuf = NULL;
    worker_destroy(&w);
    return 0;
}

/* Bytes arriving, as a read() into the buffer would put them. */
static void arrive(const void *p, size_t n)
{
    iobuf_append(&w.bufs, &s.rbuf, p, n);
}

/* A message of type t with a body of n bytes of fill. */
static size_t make_msg(uint8_t *out, uint8_t t, uint32_t n, uint8_t fill)
{
    out[0] = t;
    proto_put32(out + 1, 4 + n);
    memset(out + 5, fill, n);
    return 5 + n;
}

static void test_coalesced(void **state)
{
    (void)state;
    uint8_t buf[64];
    size_t n = make_msg(buf, 'T', 3, 'a');
    n += make_msg(buf + n, 'D', 0, 0);
    n += make_msg(buf + n, 'Z', 1, 'I');
    arrive(buf, n);
    const char want[] = {'T', 'D', 'Z'};
    const uint32_t lens[] = {8, 5, 6};
    for (int i = 0; i < 3; i++) {
        struct stream_msg m;
        assert_int_equal(stream_next_msg(&s, STREAM_MSG_WHOLE, &m), STREAM_MSG_OK);
        assert_int_equal(m.type, want[i]);
        assert_int_equal(m.len, lens[i]);
        assert_int_equal(m.avail, lens[i]);
        stream_consume_msg(&s, m.len);
    }
    struct stream_msg m;
    assert_int_equal(stream_next_msg(&s, STREAM_MSG_HEAD, &m), STREAM_MSG_MORE);
}

/* Messages put back in front of what is buffered come out first, whether
 * there is room before the unread bytes, none, or no buffer at all. */
static void test_unread(void **state)
{
    (void)state;
    uint8_t a[16], b[16], big[40000];
    size_t na = make_msg(a, 'Q', 3, 'a');
    size_t nb = make_msg(b, 'S', 0, 0);
    size_t nbig = make_msg(big, 'P', sizeof(big) - 5, 'p');
    struct stream_msg m;

    stream_unread(&s, a, na); /* no buffer yet */
    arrive(b, nb);
    assert_int_equal(stream_next_msg(&s, STREAM_MSG_WHOLE, &m), STREAM_MSG_OK);
    assert_int_equal(m.type, 'Q');
    stream_consume_msg(&s, m.len);
    stream_unread(&s, a, na); /* room before the unread bytes: the consumed ones' */
    assert_int_equal(stream_next_msg(&s, STREAM_MSG_WHOLE, &m), STREAM_MSG_OK);
    assert_int_equal(m.type, 'Q');
    assert_memory_equal(m.data, a, na);
    stream_consume_msg(&s, m.len);
    stream_unread(&s, big, nbig); /* larger than the buffer: a larger one */
    assert_int_equal(stream_next_msg(&s, STREAM_MSG_WHOLE, &m), STREAM_MSG_OK);
    assert_int_equal(m.type, 'P');
    assert_int_equal(m.len, nbig);
    stream_consume_msg(&s, m.len);
    assert_int_equal(stream_next_msg(&s, STREAM_MSG_WHOLE, &m), STREAM_MSG_OK);
    assert_int_equal(m.type, 'S');
    stream_consume_msg(&s, m.len);
    assert_int_equal(stream_next_msg(&s, STREAM_MSG_HEAD, &m), STREAM_MSG_MORE);
}

static void test_split(void **state)
{
    (void)state;
    uint8_t buf[64];
    size_t n = make_msg(buf, 'Q', 20, 'x');
    struct stream_msg m;
    /* Header split: nothing to see in either mode. */
    arrive(buf, 3);
    assert_int_equal(stream_next_msg(&s, STREAM_MSG_HEAD, &m), STREAM_MSG_MORE);
    assert_int_equal(stream_next_msg(&s, STREAM_MSG_WHOLE, &m), STREAM_MSG_MORE);
    /* Header whole, body not: the head is enough for one who streams it. */
    arrive(buf + 3, 7);
    assert_int_equal(stream_next_msg(&s, STREAM_MSG_HEAD, &m), STREAM_MSG_OK);
    assert_int_equal(m.type, 'Q');
    assert_int_equal(m.len, 25);
    assert_int_equal(m.avail, 10);
    assert_int_equal(stream_next_msg(&s, STREAM_MSG_WHOLE, &m), STREAM_MSG_MORE);
    arrive(buf + 10, n - 10);
    assert_int_equal(stream_next_msg(&s, STREAM_MSG_WHOLE, &m), STREAM_MSG_OK);
    assert_int_equal(m.avail, 25);
    assert_memory_equal(m.data, buf, n);
    stream_consume_msg(&s, m.len);
    assert_int_equal(iobuf_len(s.rbuf), 0);
}

static void test_streamed_through(void **state)
{
    (void)state;
    /* A row longer than what is buffered: its head is consumed, the rest is
     * stepped over as it comes, and the next message is found. */
    uint8_t big[300], next[16];
    size_t bn = make_msg(big, 'D', 295, 'r');
    size_t nn = make_msg(next, 'C', 4, 'c');
    arrive(big, 100);
    struct stream_msg m;
    assert_int_equal(stream_next_msg(&s, STREAM_MSG_HEAD, &m), STREAM_MSG_OK);
    assert_int_equal(m.len, bn);
    stream_consume_msg(&s, m.len);
    assert_int_equal(s.skip, bn - 100);
    arrive(big + 100, 150);
    assert_int_equal(stream_next_msg(&s, STREAM_MSG_HEAD, &m), STREAM_MSG_MORE);
    assert_int_equal(s.skip, bn - 250);
    arrive(big + 250, bn - 250);
    arrive(next, nn);
    assert_int_equal(stream_next_msg(&s, STREAM_MSG_HEAD, &m), STREAM_MSG_OK);
    assert_int_equal(s.skip, 0);
    assert_int_equal(m.type, 'C');
    assert_memory_equal(m.data, next, nn);
}

/* Bytes arriving as stream_do_read() takes them: only into the room the
 * buffer has (none: the read stops). Returns how many went in. */
static size_t read_into(const uint8_t *p, size_t n)
{
    if (!s.rbuf)
        s.rbuf = iobuf_get(&w.bufs);
    size_t room = iobuf_room(s.rbuf);
    if (n > room)
        n = room;
    memcpy(s.rbuf->data + s.rbuf->end, p, n);
    s.rbuf->end += (uint32_t)n;
    return n;
}

static void test_whole_grows_buffer(void **state)
{
    (void)state;
    /* Longer than a standard buffer (16 kB), needed whole: the buffer grows
     * as the bytes come, at most to twice what arrived, and the message
     * comes out whole. */
    size_t n = 90000;
    uint8_t *big = malloc(n);
    make_msg(big, 'E', (uint32_t)n - 5, 'e');
    size_t got = read_into(big, 1000);
    struct stream_msg m;
    assert_int_equal(stream_next_msg(&s, STREAM_MSG_WHOLE, &m), STREAM_MSG_MORE);
    uint32_t standard = s.rbuf->cap;
    while (got < n) {
        size_t k = read_into(big + got, n - got < 3000 ? n - got : 3000);
        assert_true(k > 0); /* the last call made room */
        got += k;
        enum stream_msg_status st = stream_next_msg(&s, STREAM_MSG_WHOLE, &m);
        assert_int_equal(st, got < n ? STREAM_MSG_MORE : STREAM_MSG_OK);
        assert_true(s.rbuf->cap <= standard || s.rbuf->cap <= 2 * got);
    }
    assert_int_equal(m.len, n);
    assert_memory_equal(m.data, big, n);
    stream_consume_msg(&s, m.len);
    free(big);
}

/* A header declaring a message near max_packet_size, and a few bytes of
 * it: the buffer stays the standard one (issue 17: a client declaring
 * 1 GB cost sluice 1 GB, at once). */
static void test_declared_length_reserves_nothing(void **state)
{
    (void)state;
    uint8_t head[64];
    head[0] = 'P';
    proto_put32(head + 1, 99000);
    memset(head + 5, 'p', sizeof(head) - 5);
    read_into(head, sizeof(head));
    uint32_t standard = s.rbuf->cap;
    struct stream_msg m;
    assert_int_equal(stream_next_msg(&s, STREAM_MSG_WHOLE, &m), STREAM_MSG_MORE);
    assert_int_equal(s.rbuf->cap, standard);
    assert_int_equal(stream_next_msg(&s, STREAM_MSG_WHOLE, &m), STREAM_MSG_MORE);
    assert_int_equal(s.rbuf->cap, standard);
}

static void test_oversized_and_bad(void **state)
{
    (void)state;
    uint8_t hdr[5] = {'Q'};
    struct stream_msg m;
    /* max_packet_size = 100000 (the whole message, type byte included). */
    proto_put32(hdr + 1, 100000);
    arrive(hdr, 5);
    assert_int_equal(stream_next_msg(&s, STREAM_MSG_HEAD, &m), STREAM_MSG_TOO_BIG);
    s.rbuf->start = s.rbuf->end;
    proto_put32(hdr + 1, 99999);
    arrive(hdr, 5);
    assert_int_equal(stream_next_msg(&s, STREAM_MSG_HEAD, &m), STREAM_MSG_OK);
    s.rbuf->start = s.rbuf->end;
    /* A length that does not even count itself. */
    proto_put32(hdr + 1, 3);
    arrive(hdr, 5);
    assert_int_equal(stream_next_msg(&s, STREAM_MSG_HEAD, &m), STREAM_MSG_BAD);
    s.rbuf->start = s.rbuf->end;
    proto_put32(hdr + 1, 0xffffffffu);
    arrive(hdr, 5);
    assert_int_equal(stream_next_msg(&s, STREAM_MSG_HEAD, &m), STREAM_MSG_TOO_BIG);
    s.rbuf->start = s.rbuf->end;
    assert_string_equal(stream_msg_status_str(STREAM_MSG_TOO_BIG), "too_big");
}

static void test_login_limit(void **state)
{
    (void)state;
    uint8_t hdr[5] = {'p'};
    struct stream_msg m;
    proto_put32(hdr + 1, 70000);
    stream_limit_login(&s);
    arrive(hdr, 5);
    assert_int_equal(stream_next_msg(&s, STREAM_MSG_WHOLE, &m), STREAM_MSG_TOO_BIG);
    stream_limit_lift(&s);
    assert_int_equal(stream_next_msg(&s, STREAM_MSG_HEAD, &m), STREAM_MSG_OK);
    s.rbuf->start = s.rbuf->end;
}

static void test_look_ahead(void **state)
{
    (void)state;
    uint8_t buf[64];
    size_t a = make_msg(buf, 'P', 4, 'p');
    size_t b = make_msg(buf + a, 'S', 0, 0);
    arrive(buf, a + b - 1); /* the Sync not whole yet */
    struct stream_msg m;
    assert_int_equal(stream_msg_at(&s, 0, &m), STREAM_MSG_OK);
    assert_int_equal(m.type, 'P');
    assert_int_equal(stream_msg_at(&s, (uint32_t)a, &m), STREAM_MSG_MORE);
    arrive(buf + a + b - 1, 1);
    assert_int_equal(stream_msg_at(&s, (uint32_t)a, &m), STREAM_MSG_OK);
    assert_int_equal(m.type, 'S');
    assert_int_equal(iobuf_len(s.rbuf), a + b); /* nothing consumed */
    s.rbuf->start = s.rbuf->end;
}

static void test_startup(void **state)
{
    (void)state;
    uint8_t pkt[16] = {0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f}; /* SSLRequest */
    struct stream_msg m;
    arrive(pkt, 4);
    assert_int_equal(stream_next_startup(&s, &m), STREAM_MSG_MORE);
    arrive(pkt + 4, 4);
    assert_int_equal(stream_next_startup(&s, &m), STREAM_MSG_OK);
    assert_int_equal(m.len, 8);
    stream_consume_msg(&s, m.len);
    uint8_t bad[4] = {0, 0, 0, 7};
    arrive(bad, 4);
    assert_int_equal(stream_next_startup(&s, &m), STREAM_MSG_BAD);
    s.rbuf->start = s.rbuf->end;
    uint8_t huge[4] = {0, 1, 0, 0}; /* 65536 > PostgreSQL's 10000 */
    arrive(huge, 4);
    assert_int_equal(stream_next_startup(&s, &m), STREAM_MSG_TOO_BIG);
    s.rbuf->start = s.rbuf->end;
}

/* Which streams' bytes were handled, in order (order_on_data). */
static struct stream *handled[4];
static int n_handled;

static void order_on_data(struct stream *st)
{
    handled[n_handled++] = st;
    stream_read_stop(st);
}

static void order_on_closed(struct stream *st, const char *reason)
{
    (void)reason;
    stream_read_stop(st);
}

/* Within one loop iteration, the bytes of a logged-in client are handled
 * before those of one still logging in, whatever order the poll gives
 * them. Lifted while active, as at a client's welcome. */
static void test_logged_in_before_login_work(void **state)
{
    (void)state;
    static const struct stream_ops ops = {.on_data = order_on_data, .on_closed = order_on_closed};
    int a[2], b[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, a), 0);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, b), 0);
    struct stream login, in;
    stream_init(&login, &w, a[0], &ops);
    stream_limit_login(&login);
    stream_read_start(&login);
    stream_init(&in, &w, b[0], &ops);
    stream_limit_login(&in);
    stream_read_start(&in);
    stream_limit_lift(&in);
    assert_true(ev_is_active(&in.io)); /* still reading after the lift */
    ev_run(w.loop, EVRUN_NOWAIT);      /* both registered with the poll */
    /* The logged-in one's bytes first: libev runs the watchers of one
     * priority last-polled first, so without priorities the login one's
     * would be handled first. */
    assert_int_equal(write(b[1], "y", 1), 1);
    assert_int_equal(write(a[1], "x", 1), 1);
    n_handled = 0;
    ev_run(w.loop, EVRUN_ONCE);
    assert_int_equal(n_handled, 2);
    assert_ptr_equal(handled[0], &in);
    assert_ptr_equal(handled[1], &login);
    stream_close(&login);
    stream_close(&in);
    close(a[1]);
    close(b[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_coalesced, setup, teardown),
        cmocka_unit_test_setup_teardown(test_split, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unread, setup, teardown),
        cmocka_unit_test_setup_teardown(test_streamed_through, setup, teardown),
        cmocka_unit_test_setup_teardown(test_whole_grows_buffer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_declared_length_reserves_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_oversized_and_bad, setup, teardown),
        cmocka_unit_test_setup_teardown(test_login_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_look_ahead, setup, teardown),
        cmocka_unit_test_setup_teardown(test_startup, setup, teardown),
        cmocka_unit_test_setup_teardown(test_logged_in_before_login_work, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
