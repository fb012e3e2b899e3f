/* fuzz_router.c - libFuzzer target for the read/write router: what a
 * client sends, split anywhere, walked by router_route() and by its request
 * observer while the client is linked to a replica's server.
 *
 * The client is logged in to one of four databases of the real registry
 * (pool_registry.c), each with a primary and two replicas: "txn"
 * (transaction pooling), "stmt" (statement), "sess" (session) and
 * "nosplit" (read_write_split off). The first byte picks:
 *   bits 0-1  the database;
 *   bit 2     the config: least_outstanding, primary_reads = fallback,
 *             strict function check; or round_robin, share, list, one
 *             replica of weight 0 (a reload between the two: the registry's
 *             pool_apply_config());
 *   bits 3-4  the client's startup settings (c->extras): none, serializable
 *             by default, read-only by default, repeatable read by default;
 *   bits 5-6  replicas banned from the start (none, the first, the second,
 *             both); bit 7 is not used.
 * The rest is a list of events, each a byte (op = its low 3 bits):
 *   0-3  client bytes: a length byte L, then L + 256 * (bits 3-7) bytes
 *        appended to the client's read buffer;
 *   4    the server answers the client's oldest request whose end (Query,
 *        Sync, FunctionCall) it has: each message's own answer, or (bit 3)
 *        an ErrorResponse where the server would skip to that end, then
 *        ReadyForQuery with status "ITE"[bits 4-7 % 3];
 *   5    the server closes: a read on a replica sent again elsewhere when
 *        relay.c would (its endpoint banned), else the client is closed;
 *   6    the janitor's pg_proc lookup answers the queued function names
 *        (volatility_take/store; the answer depends on the name only);
 *   7    the next transaction opened again (router_link_replay) or moved
 *        off its replica (ROLLBACK) fails there, which closes the client.
 *
 * Client bytes go as client.c and relay.c take them: idle, client_dispatch()
 * (COPY leftovers dropped, prepared_idle(), request_current(), then
 * router_route(): ROUTE_WAIT waits for more bytes, ROUTE_ANSWERED was
 * consumed and answered, else the client is linked to a server of the
 * endpoint named: relay_link(), whose retry buffer and transaction replay
 * are simulated); linked, relay_client_data(): each message through
 * request_client_msg(), where the router's observer may hold a request
 * behind a replica's answers, and kept for a retry. A ReadyForQuery gives
 * the server back, moves the transaction to the primary or resumes as
 * relay_at_rfq() says. A named Parse forwarded is marked as known to the
 * pool (ps_known, hashed as prepared.c hashes it), so that prepared_idle()
 * answers it next time and a Bind finds its text.
 *
 * Only the router observes the request queue (prepared.c's observer is
 * not registered: statements keep their names).
 *
 * Checked:
 *  - no read outside a message, no leak (ASan, UBSan, LeakSanitizer): at
 *    the end the client's routing state and request queue are freed
 *    (router_client_free(), request_client_free()), as are the databases'
 *    pg_proc caches (volatility_free()) and the pools' known statements;
 *  - a request answered here (router_route() or prepared_idle()) was
 *    consumed as whole messages from the head of the buffer;
 *  - ROUTE_WAIT only while the first message is not all buffered, nothing
 *    consumed; a decision names an endpoint of the kind it says;
 *  - no text that writes by its structure alone (classify_rw: a write, a
 *    parse error), which no hint or function list makes a read, goes to a
 *    replica, but in a session or transaction that said it only reads or
 *    one that failed there;
 *  - what the client receives is well framed, and holds no more
 *    ReadyForQuery than the client sent Queries, Syncs and FunctionCalls
 *    that were consumed;
 *  - the transaction's replay is a string of its recorded length.
 */
#include <fcntl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "classify_rw.h"
#include "config.h"
#include "pool.h"
#include "prepared.h"
#include "prepared_set.h"
#include "proto.h"
#include "request.h"
#include "router.h"
#include "stream.h"
#include "volatility.h"
#include "worker.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define N_DBS 4

static const char *const cfg_text[2] = {
    "[databases]\n"
    "txn = host=127.0.0.1 port=1 dbname=mydb replicas=127.0.0.1:2,127.0.0.1:3 "
    "pool_mode=transaction\n"
    "stmt = host=127.0.0.1 port=1 dbname=mydb replicas=127.0.0.1:2,127.0.0.1:3 "
    "pool_mode=statement\n"
    "sess = host=127.0.0.1 port=1 dbname=mydb replicas=127.0.0.1:2,127.0.0.1:3 "
    "pool_mode=session\n"
    "nosplit = host=127.0.0.1 port=1 dbname=mydb replicas=127.0.0.1:2,127.0.0.1:3 "
    "read_write_split=off\n"
    "[pgbouncer]\n"
    "read_write_split = on\n"
    "pool_mode = transaction\n"
    "max_packet_size = 1048576\n"
    "replica_write_functions = f, app.g\n"
    "replica_read_functions = h, app.f\n",
    "[databases]\n"
    "txn = host=127.0.0.1 port=1 dbname=mydb replicas=127.0.0.1:2@0,127.0.0.1:3@3 "
    "pool_mode=transaction\n"
    "stmt = host=127.0.0.1 port=1 dbname=mydb replicas=127.0.0.1:2@0,127.0.0.1:3@3 "
    "pool_mode=statement\n"
    "sess = host=127.0.0.1 port=1 dbname=mydb replicas=127.0.0.1:2@0,127.0.0.1:3@3 "
    "pool_mode=session\n"
    "nosplit = host=127.0.0.1 port=1 dbname=mydb replicas=127.0.0.1:2@0,127.0.0.1:3@3 "
    "read_write_split=off\n"
    "[pgbouncer]\n"
    "read_write_split = on\n"
    "pool_mode = transaction\n"
    "max_packet_size = 1048576\n"
    "replica_load_balance = round_robin\n"
    "primary_reads = share\n"
    "replica_function_check = list\n"
    "replica_read_functions = myfunc\n",
};
static const char *const db_names[N_DBS] = {"txn", "stmt", "sess", "nosplit"};
static const char *const extras[4] = {
    NULL,
    "SELECT pg_catalog.set_config('default_transaction_isolation', 'serializable', false);",
    "SELECT pg_catalog.set_config('default_transaction_read_only', 'on', false);",
    "SELECT pg_catalog.set_config('application_name', 'x', false);"
    "SET default_transaction_isolation = 'repeatable read';",
};

static struct worker w;
static bool ready;
static int fds[4];
static struct config *cfgs[2];
static struct database *dbs[N_DBS];
static struct pool *pools[N_DBS];

/* One client's session. */
static struct client c;
static struct server sv;
static bool linked, closed, fail_next;
static unsigned ends_in;   /* Queries, Syncs, FunctionCalls of the client's consumed */
static unsigned rfq_out;   /* ReadyForQuery the client received */
static uint8_t out[65536]; /* what the client received, not yet framed */
static size_t out_len;
static uint8_t snap[1u << 20]; /* the client's buffer before a dispatch */

static void require(bool cond)
{
    if (!cond)
        abort();
}

static void init_once(void)
{
    char err[256];
    for (int i = 0; i < 2; i++) {
        cfgs[i] = config_load_string("fuzz", cfg_text[i], err, sizeof(err));
        require(cfgs[i] != NULL);
    }
    list_init(&g_pooler.databases);
    list_init(&g_pooler.users);
    list_init(&g_pooler.pools);
    g_pooler.cfg = cfgs[0];
    worker_init(&w, 0, ev_default_loop(0), cfgs[0]);
    for (int i = 0; i < N_DBS; i++) {
        dbs[i] = pool_find_database(db_names[i]);
        require(dbs[i] != NULL && dbs[i]->n_endpoints == 3);
        pools[i] = pool_get(dbs[i], "alice");
    }
    require(socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0);
    require(socketpair(AF_UNIX, SOCK_STREAM, 0, fds + 2) == 0);
    for (int i = 0; i < 4; i++)
        require(fcntl(fds[i], F_SETFL, O_NONBLOCK) == 0);
    router_init();
    ready = true;
}

/* ---- what the client receives ---------------------------------------------- */

/* Reads what was written to the client and frames it: whole messages of
 * sane lengths; ReadyForQuery counted. */
static void client_receives(void)
{
    for (;;) {
        ssize_t n = read(fds[1], out + out_len, sizeof(out) - out_len);
        if (n <= 0)
            break;
        out_len += (size_t)n;
        size_t off = 0;
        while (out_len - off >= 5) {
            uint32_t l = proto_get32(out + off + 1);
            require(l >= 4 && l < sizeof(out) - 1);
            if (out_len - off < l + 1)
                break;
            if (out[off] == 'Z') {
                require(l == 5);
                rfq_out++;
            }
            off += l + 1;
        }
        memmove(out, out + off, out_len - off);
        out_len -= off;
    }
    require(rfq_out <= ends_in);
}

/* ---- the client's messages ------------------------------------------------- */

static bool ends_request(uint8_t type)
{
    return type == 'Q' || type == 'S' || type == 'F';
}

/* The ends of requests in n bytes of whole messages at p; n must end on a
 * message's end. */
static unsigned ends_in_msgs(const uint8_t *p, size_t n)
{
    unsigned ends = 0;
    size_t off = 0;
    while (off < n) {
        require(n - off >= 5);
        uint32_t l = proto_get32(p + off + 1);
        require(l >= 4 && l + 1 <= n - off);
        ends += ends_request(p[off]);
        off += l + 1;
    }
    return ends;
}

/* A named Parse on its way to a server: the pool knows it parses (as
 * prepared.c records a statement a server parsed fine). */
static void parse_known(const struct stream_msg *m)
{
    if (m->type != 'P' || m->avail < m->len || m->len < 7)
        return;
    const uint8_t *end = m->data + m->len;
    const uint8_t *name = m->data + 5;
    const uint8_t *z = memchr(name, 0, (size_t)(end - name));
    if (!z || z == name || !memchr(z + 1, 0, (size_t)(end - z - 1)))
        return;
    const uint8_t *body = z + 1;
    size_t n = (size_t)(end - body);
    uint8_t *tmp = malloc(n + 1);
    require(tmp != NULL);
    tmp[0] = 'P';
    memcpy(tmp + 1, body, n);
    prepared_set_add(&c.pool->ps_known, prepared_hash(tmp, n + 1));
    free(tmp);
}

/* Whether a text of the request at the head of c's buffer (its Query, or
 * the Parses and named Binds of its batch up to the Sync, as far as whole)
 * writes by its structure alone: a write, a parse error, truncation. No
 * hint and no function list makes such a text a read. */
static bool request_writes(void)
{
    uint32_t off = 0;
    struct stream_msg m;
    for (int i = 0; i < 1024 && stream_msg_at(&c.s, off, &m) == STREAM_MSG_OK; i++) {
        const uint8_t *end = m.data + m.len;
        const uint8_t *a = m.data + 5, *z = memchr(a, 0, (size_t)(end - a));
        const char *sql = NULL;
        if (m.type == 'Q' || m.type == 'S')
            i = 1024; /* the last message looked at */
        if (z && m.type == 'Q') {
            sql = (const char *)a;
        } else if (z && (m.type == 'P' || m.type == 'B') &&
                   memchr(z + 1, 0, (size_t)(end - z - 1))) {
            sql = m.type == 'P' ? (const char *)z + 1
                                : prepared_client_query(&c, (const char *)z + 1);
        }
        if (sql && classify_rw_cached(sql, strlen(sql))->verdict == CRW_WRITE)
            return true;
        off += m.len;
    }
    return false;
}

static void client_close(void)
{
    closed = true;
}

/* ---- link and unlink ----------------------------------------------------------- */

/* relay_link(): c gets a server of its pool (the endpoint routed to). */
static void link_server(void)
{
    memset(&sv, 0, sizeof(sv));
    stream_init(&sv.s, &w, fds[2], NULL);
    sv.pool = c.pool;
    sv.client = &c;
    sv.xact_status = 'I';
    sv.ready = true;
    c.server = &sv;
    linked = true;
    enum pool_mode mode = pool_mode_of(sv.pool);
    c.track = mode != POOL_MODE_SESSION;
    c.stmt_mode = mode == POOL_MODE_STATEMENT;
    /* retry_arm() */
    struct router_client *rc = c.route;
    if (rc && rc->retried) {
        rc->retried = false;
    } else if (sv.pool->ep != 0 && c.track) {
        rc = router_client_of(&c);
        if (!rc->retry_buf)
            rc->retry_buf = iobuf_get(&w.bufs);
        rc->retry_buf->start = rc->retry_buf->end = 0;
        rc->retry_mark = (uint32_t)stream_written(&c.s);
    }
    /* relay_settings_done(): the transaction opens there first. */
    const char *replay = router_link_replay(&c, &sv);
    if (!replay)
        return;
    require(c.route && strlen(replay) == c.route->replay_len);
    sv.xact_status = fail_next ? 'E' : 'T';
    fail_next = false;
    if (!router_link_opened(&c, &sv))
        client_close();
}

/* client_unlinked(): the server went back; c is idle again. */
static void unlink_server(void)
{
    c.server = NULL;
    sv.client = NULL;
    linked = false;
    if (c.route && c.route->retry_buf) {
        iobuf_put(&w.bufs, c.route->retry_buf);
        c.route->retry_buf = NULL;
    }
    router_unlinked(&c);
    request_unlinked(&c);
    if (sv.s.rbuf) {
        iobuf_put(&w.bufs, sv.s.rbuf);
        sv.s.rbuf = NULL;
    }
}

/* ---- client to server ------------------------------------------------------------ */

/* Keeps message m for a retry (relay.c's retry_keep()). */
static void retry_keep(const struct stream_msg *m)
{
    struct iobuf *b = c.route->retry_buf;
    if (m->avail < m->len || iobuf_room(b) < m->len) {
        iobuf_put(&w.bufs, b);
        c.route->retry_buf = NULL;
        return;
    }
    memcpy(b->data + b->end, m->data, m->len);
    b->end += m->len;
}

enum rfq { RFQ_KEEP, RFQ_RELEASE, RFQ_VIOLATION, RFQ_MOVE, RFQ_RESUME };

/* relay_at_rfq() */
static enum rfq at_rfq(char st)
{
    bool busy = request_busy(&c);
    sv.ready = !busy && st == 'I';
    if (busy || c.s.skip)
        return RFQ_KEEP;
    if (st == 'I' && c.track && !c.pinned)
        return RFQ_RELEASE;
    if (st != 'I' && c.stmt_mode)
        return RFQ_VIOLATION;
    if (c.route && c.route->move)
        return router_move_due(&c, &sv) ? RFQ_MOVE : RFQ_RESUME;
    return RFQ_KEEP;
}

/* relay_move() and its end: ROLLBACK on the replica, then the server goes
 * back and the transaction opens on the primary with the next request. */
static void move_txn(void)
{
    if (fail_next) {
        fail_next = false;
        client_close();
        return;
    }
    sv.xact_status = 'I';
    router_txn_moved(&c);
    unlink_server();
}

/* relay_client_data(): c's messages to its server. */
static void relay_client(void)
{
    struct stream *s = &c.s;
    while (s->rbuf && iobuf_len(s->rbuf)) {
        struct stream_msg m;
        enum stream_msg_status ms = stream_next_msg(s, STREAM_MSG_HEAD, &m);
        if (ms == STREAM_MSG_MORE)
            break;
        if (ms != STREAM_MSG_OK || m.type == 'X') {
            client_close();
            return;
        }
        uint32_t kept = 0;
        if (c.route && c.route->retry_buf) {
            kept = c.route->retry_buf->end;
            retry_keep(&m);
        }
        uint32_t fwd = s->rbuf->start;
        bool begins = (!c.rq || !c.rq->open) && m.type != 'd' && m.type != 'c' && m.type != 'f';
        int64_t r = request_client_msg(&c, m.type, m.len, &fwd);
        /* ... nor while a client is linked to one: in a READ ONLY
         * transaction, or one that failed there, it fails there. */
        if (begins && r >= 0 && c.pool->ep != 0 && c.track &&
            !(c.route && c.route->txn == RTX_REPLICA &&
              (c.route->read_only || sv.xact_status == 'E')))
            require(!request_writes());
        if (r == REQUEST_WAIT) {
            if (c.route && c.route->retry_buf)
                c.route->retry_buf->end = kept;
            break;
        }
        require(r == (int64_t)m.len);
        if (m.type != 'd' && m.type != 'c' && m.type != 'f')
            sv.ready = false;
        ends_in += ends_request(m.type);
        parse_known(&m);
        stream_consume_msg(s, (uint32_t)r);
    }
    if (c.route && c.route->move && router_move_due(&c, &sv)) {
        move_txn();
        return;
    }
    if (!s->skip && sv.ready && at_rfq(sv.xact_status) == RFQ_RELEASE)
        unlink_server();
}

/* ---- dispatch -------------------------------------------------------------------- */

/* The client's buffer is copied first, to see what was consumed. */
static uint32_t snapshot(void)
{
    const struct iobuf *b = c.s.rbuf;
    uint32_t n = iobuf_len(b);
    require(n <= sizeof(snap));
    memcpy(snap, b->data + b->start, n);
    return n;
}

/* A request answered here: consumed as whole messages, from the head. */
static void answered(uint32_t before)
{
    uint32_t after = c.s.rbuf ? iobuf_len(c.s.rbuf) : 0;
    require(!c.s.skip && after < before);
    ends_in += ends_in_msgs(snap, before - after);
}

static void check_decision(const struct router_decision *d)
{
    const struct database *db = c.pool->db;
    require(d->why != NULL);
    switch (d->target) {
    case ROUTE_PRIMARY:
        require(d->endpoint == 0);
        break;
    case ROUTE_REPLICA:
        require(d->endpoint > 0 && d->endpoint < db->n_endpoints);
        require(db->endpoints[d->endpoint].role == EP_REPLICA);
        break;
    case ROUTE_WAIT:
    case ROUTE_ANSWERED:
        require(d->endpoint == c.pool->ep);
        break;
    }
}

/* client_dispatch(): false when c waits (or closed). */
static bool dispatch(void)
{
    struct stream_msg m;
    enum stream_msg_status ms = stream_next_msg(&c.s, STREAM_MSG_HEAD, &m);
    if (ms == STREAM_MSG_MORE)
        return false;
    if (ms != STREAM_MSG_OK || m.type == 'X') {
        client_close();
        return false;
    }
    if (m.type == 'd' || m.type == 'c' || m.type == 'f') {
        stream_consume_msg(&c.s, m.len);
        return true;
    }
    uint32_t before = snapshot();
    if ((m.type == 'P' || m.type == 'C') && prepared_idle(&c)) {
        answered(before);
        return true;
    }
    struct request *r = request_current(&c, m.type);
    struct router_decision d = router_route(&c, r);
    check_decision(&d);
    if (d.target == ROUTE_WAIT) {
        /* Only while the first message is not all here. */
        require(c.s.rbuf && iobuf_len(c.s.rbuf) == before);
        require(stream_next_msg(&c.s, STREAM_MSG_WHOLE, &m) == STREAM_MSG_MORE);
        return false;
    }
    if (d.target == ROUTE_ANSWERED) {
        answered(before);
        request_forget_unsent(&c);
        return true;
    }
    require(c.s.rbuf && iobuf_len(c.s.rbuf) == before);
    /* A write reaches a replica only in a session or transaction that
     * said it only reads. */
    if (d.target == ROUTE_REPLICA && pool_mode_of(c.pool) != POOL_MODE_SESSION &&
        !(c.route && c.route->read_only))
        require(!request_writes());
    if (d.endpoint != c.pool->ep)
        c.pool = pool_of_endpoint(c.pool, d.endpoint);
    require(c.pool->ep == d.endpoint);
    link_server();
    return !closed;
}

/* client_process(): what c has buffered, as far as its state allows. */
static void client_process(void)
{
    for (int guard = 0; !closed; guard++) {
        require(guard < 100000); /* every turn consumes or links */
        if (!c.s.rbuf || iobuf_len(c.s.rbuf) == 0)
            break;
        if (linked) {
            relay_client();
            if (linked)
                break;
            continue; /* the server went back: dispatch what is left */
        }
        if (!dispatch())
            break;
    }
    if (!closed)
        stream_release_rbuf(&c.s);
    client_receives();
}

/* ---- the server ------------------------------------------------------------------ */

static void put_msg(struct iobuf **b, uint8_t type, const void *body, uint32_t n)
{
    uint8_t h[5] = {type};
    proto_put32(h + 1, n + 4);
    iobuf_append(&w.bufs, b, h, sizeof(h));
    if (n)
        iobuf_append(&w.bufs, b, body, n);
}

/* The server's answer to the entries up to the first end of a request, or
 * false when it has none whole yet. */
static bool server_answer(uint8_t how)
{
    const struct request_queue *q = c.rq;
    if (!q || c.s.skip)
        return false;
    uint32_t k = 0;
    while (k < q->e_n && !(q->e[(q->e_head + k) & q->e_mask].flags & RE_END))
        k++;
    if (k == q->e_n)
        return false;
    /* After an error the server skips to the Sync: only where there is one,
     * or where the Query is the request. */
    bool error = (how & 8) && (k == 0 || q->e[(q->e_head + k) & q->e_mask].answer == RA_SYNC);
    static const char err[] = "SERROR\0C42000\0Mfuzz\0";
    static const char tag[] = "SELECT 0";
    for (uint32_t i = 0; i <= k && !error; i++) {
        switch (q->e[(q->e_head + i) & q->e_mask].answer) {
        case RA_ONE:
            put_msg(&sv.s.rbuf, '2', NULL, 0);
            break;
        case RA_DESCRIBE:
            put_msg(&sv.s.rbuf, 'n', NULL, 0);
            break;
        case RA_EXECUTE:
        case RA_QUERY:
            put_msg(&sv.s.rbuf, 'C', tag, sizeof(tag));
            break;
        default:
            break;
        }
    }
    if (error)
        put_msg(&sv.s.rbuf, 'E', err, sizeof(err));
    char st = "ITE"[(how >> 4) % 3];
    put_msg(&sv.s.rbuf, 'Z', &st, 1);
    return true;
}

/* relay_server_data(): the answer through the request queue to the client,
 * then what its ReadyForQuery means for the link. */
static void server_data(uint8_t how)
{
    if (!linked || !server_answer(how))
        return;
    struct stream *s = &sv.s;
    enum rfq rfq = RFQ_KEEP;
    bool resume = false;
    while (rfq == RFQ_KEEP && s->rbuf && iobuf_len(s->rbuf)) {
        struct stream_msg m;
        require(stream_next_msg(s, STREAM_MSG_HEAD, &m) == STREAM_MSG_OK);
        unsigned act = request_server_msg(&c, &sv, &m);
        require(!(act & (REQUEST_MORE | REQUEST_SWALLOW | REQUEST_EMIT)));
        if (m.type == 'Z') {
            sv.xact_status = (char)m.data[5];
            rfq = at_rfq(sv.xact_status);
            if (rfq == RFQ_VIOLATION)
                break;
            if (rfq == RFQ_RESUME) {
                resume = true;
                rfq = RFQ_KEEP;
            }
        }
        stream_write(&c.s, m.data, m.len);
        stream_consume_msg(s, m.len);
    }
    stream_release_rbuf(s);
    if (rfq == RFQ_VIOLATION) {
        client_close();
        return;
    }
    if (rfq == RFQ_MOVE) {
        move_txn();
    } else if (rfq == RFQ_RELEASE) {
        unlink_server();
    } else if (c.route && c.route->retry_buf &&
               (uint32_t)stream_written(&c.s) != c.route->retry_mark) {
        iobuf_put(&w.bufs, c.route->retry_buf); /* the answer began: no retry now */
        c.route->retry_buf = NULL;
    }
    if (resume || !linked)
        client_process(); /* the request held goes on, or c is idle again */
    else
        client_receives();
}

/* relay_server_closed(): a read on a replica sent again elsewhere, if
 * nothing reached the client since the link; else the client is closed. */
static void server_closed(void)
{
    if (!linked)
        return;
    struct router_client *rc = c.route;
    if (!rc || !rc->retry_buf || (uint32_t)stream_written(&c.s) != rc->retry_mark) {
        client_close();
        return;
    }
    struct iobuf *b = rc->retry_buf;
    rc->retry_buf = NULL;
    rc->retried = true;
    router_link_lost(&c);
    ends_in -= ends_in_msgs(b->data + b->start, iobuf_len(b));
    stream_unread(&c.s, b->data + b->start, iobuf_len(b));
    iobuf_put(&w.bufs, b);
    atomic_store(&c.pool->db->endpoints[sv.pool->ep].banned_until, 1);
    unlink_server();
    client_process();
}

/* ---- pg_proc --------------------------------------------------------------------- */

static char made_up_volatility(const char *name)
{
    static const char answers[] = {'i', 's', 'v', 0};
    unsigned h = 0;
    for (const char *p = name; *p; p++)
        h = h * 31 + (unsigned char)*p;
    return answers[h % 4];
}

static void lookups(void)
{
    int64_t now = worker_now(&w);
    for (int i = 0; i < N_DBS; i++) {
        static char names[VOLATILITY_BATCH][VOLATILITY_MAX_NAME];
        int n = volatility_take(dbs[i], names, now);
        for (int k = 0; k < n; k++)
            volatility_store(dbs[i], names[k], made_up_volatility(names[k]), now);
    }
}

/* ---- one input ------------------------------------------------------------------- */

static void session_begin(uint8_t opts)
{
    struct config *cfg = cfgs[(opts >> 2) & 1];
    if (g_pooler.cfg != cfg) {
        g_pooler.cfg = cfg;
        pool_apply_config(cfg, false);
    }
    for (int i = 0; i < N_DBS; i++)
        for (int e = 1; e < dbs[i]->n_endpoints; e++)
            atomic_store(&dbs[i]->endpoints[e].banned_until, (opts >> (4 + e)) & 1);
    memset(&c, 0, sizeof(c));
    stream_init(&c.s, &w, fds[0], NULL);
    c.pool = pools[opts & 3];
    c.user = "alice";
    c.dbname = db_names[opts & 3];
    c.extras = extras[(opts >> 3) & 3];
    c.state = CL_IDLE;
    linked = closed = fail_next = false;
    ends_in = rfq_out = 0;
    out_len = 0;
}

static void session_end(void)
{
    request_client_free(&c);
    require(c.rq == NULL);
    router_client_free(&c);
    require(c.route == NULL);
    prepared_client_free(&c);
    if (sv.s.rbuf)
        iobuf_put(&w.bufs, sv.s.rbuf);
    sv.s.rbuf = NULL;
    if (c.s.obuf) {
        ev_io_stop(w.loop, &c.s.io);
        iobuf_put(&w.bufs, c.s.obuf);
        c.s.obuf = NULL;
    }
    if (c.s.rbuf)
        iobuf_put(&w.bufs, c.s.rbuf);
    c.s.rbuf = NULL;
    client_receives();
    for (int i = 0; i < N_DBS; i++) {
        volatility_free(dbs[i]);
        for (int e = 0; e < dbs[i]->n_endpoints; e++)
            prepared_set_clear(&pool_of_endpoint(pools[i], e)->ps_known);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!ready)
        init_once();
    if (size < 1)
        return 0;
    session_begin(data[0]);
    size_t i = 1;
    while (i < size && !closed) {
        uint8_t ev = data[i++];
        switch (ev & 7) {
        case 4:
            server_data(ev);
            break;
        case 5:
            server_closed();
            break;
        case 6:
            lookups();
            break;
        case 7:
            fail_next = true;
            break;
        default: {
            if (i >= size)
                break;
            size_t n = data[i++] + 256u * (ev >> 3);
            if (n > size - i)
                n = size - i;
            iobuf_append(&w.bufs, &c.s.rbuf, data + i, n);
            i += n;
            client_process();
            break;
        }
        }
    }
    session_end();
    return 0;
}
