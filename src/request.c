/* request.c - a client's requests in flight and the matching of server
 * messages to them (request.h).
 *
 * This runs for every message both ways: no allocation per message (the
 * queue's storage is borrowed per client from a per-thread cache and
 * grown, rarely, for a deep pipeline), no call into an observer that did
 * not ask for the message, rings indexed with masks. */
#include "request.h"

#include <stdlib.h>
#include <string.h>

#include "proto.h"
#include "sql_shape.h"
#include "worker.h"

#define R_CAP0   8
#define E_CAP0   16
#define FREE_MAX 64

static const struct request_observer *observers[REQUEST_MAX_OBSERVERS];
static int n_observers;
/* Observers (bit i: observers[i]) that want a client message of each type,
 * for tracked clients and for the others; and those with on_request_end. */
uint8_t request_client_wants[2][256];
static uint8_t end_wants[2], unlinked_wants[2], begin_wants;

/* Queues not in use, per thread (a client stays on its worker's thread). */
static _Thread_local struct {
    struct request_queue *list;
    int n;
} tl_free;

const char *request_kind_str(enum request_kind k)
{
    static const char *const names[] = {"query", "extended", "function", "copy"};
    return (unsigned)k < sizeof(names) / sizeof(names[0]) ? names[k] : "?";
}

int request_observe(const struct request_observer *obs)
{
    if (n_observers == REQUEST_MAX_OBSERVERS)
        abort(); /* a build with more observers raises the limit */
    int i = n_observers++;
    observers[i] = obs;
    uint8_t bit = (uint8_t)(1u << i);
    for (int t = 0; t < 256 && obs->on_client_msg; t++) {
        if (obs->client_msgs && (!t || !strchr(obs->client_msgs, t)))
            continue;
        request_client_wants[1][t] |= bit;
        if (!obs->tracked_only)
            request_client_wants[0][t] |= bit;
    }
    if (obs->on_request_begin)
        begin_wants |= bit;
    if (obs->on_request_end) {
        end_wants[1] |= bit;
        if (!obs->tracked_only)
            end_wants[0] |= bit;
    }
    if (obs->on_unlinked) {
        unlinked_wants[1] |= bit;
        if (!obs->tracked_only)
            unlinked_wants[0] |= bit;
    }
    return i + 1;
}

/* ---- the queue's storage ------------------------------------------------- */

static struct request_queue *queue_new(void)
{
    struct request_queue *q = tl_free.list;
    if (q) {
        tl_free.list = q->next_free;
        tl_free.n--;
        q->next_free = NULL;
        return q;
    }
    q = calloc(1, sizeof(*q));
    if (!q)
        abort();
    q->r_mask = R_CAP0 - 1;
    q->e_mask = E_CAP0 - 1;
    q->r = calloc(R_CAP0, sizeof(*q->r));
    q->e = calloc(E_CAP0, sizeof(*q->e));
    if (!q->r || !q->e)
        abort();
    return q;
}

static void queue_destroy(struct request_queue *q)
{
    free(q->r);
    free(q->e);
    free(q->out);
    free(q);
}

static void queue_put(struct request_queue *q)
{
    q->r_head = q->r_n = q->e_head = q->e_n = 0;
    q->open = q->errskip = false;
    q->out_len = 0;
    if (tl_free.n >= FREE_MAX || q->r_mask != R_CAP0 - 1 || q->e_mask != E_CAP0 - 1) {
        queue_destroy(q); /* grown by a deep pipeline: not kept */
        return;
    }
    q->next_free = tl_free.list;
    tl_free.list = q;
    tl_free.n++;
}

void request_thread_done(void)
{
    while (tl_free.list) {
        struct request_queue *q = tl_free.list;
        tl_free.list = q->next_free;
        queue_destroy(q);
    }
    tl_free.n = 0;
}

static struct request_queue *queue_of(struct client *c)
{
    if (!c->rq)
        c->rq = queue_new();
    return c->rq;
}

/* Gives the queue back when nothing is in it. */
static void queue_release_if_empty(struct client *c)
{
    struct request_queue *q = c->rq;
    if (q && !q->r_n && !q->e_n && !q->out_len) {
        c->rq = NULL;
        queue_put(q);
    }
}

/* Doubles a ring, its n items from head moved to the front. */
static void *grow_ring(void *ring, uint32_t *mask, uint32_t head, uint32_t n, size_t size)
{
    uint32_t cap = *mask + 1;
    uint8_t *nr = calloc(cap * 2, size);
    if (!nr)
        abort();
    for (uint32_t i = 0; i < n; i++)
        memcpy(nr + i * size, (uint8_t *)ring + ((head + i) & *mask) * size, size);
    free(ring);
    *mask = cap * 2 - 1;
    return nr;
}

/* ---- records --------------------------------------------------------------- */

bool request_only(const struct client *c)
{
    const struct request_queue *q = c->rq;
    return q && q->r_n == 1 && q->e_n == 0 && q->r[q->r_head].kind == REQ_QUERY;
}

int64_t request_xact_start(const struct client *c)
{
    return c->rq ? c->rq->xact_start : 0;
}

int64_t request_oldest_start(const struct client *c)
{
    const struct request_queue *q = c->rq;
    return q && q->r_n ? q->r[q->r_head].start : 0;
}

static struct request *record_newest(struct request_queue *q)
{
    return &q->r[(q->r_head + q->r_n - 1) & q->r_mask];
}

/* A new record for a message of this type (none is open). */
static struct request *record_begin(struct request_queue *q, uint8_t type)
{
    if (q->r_n > q->r_mask) {
        q->r = grow_ring(q->r, &q->r_mask, q->r_head, q->r_n, sizeof(*q->r));
        q->r_head = 0;
    }
    q->r_n++;
    q->open = true;
    struct request *r = record_newest(q);
    r->kind = (uint8_t)(type == 'Q' ? REQ_QUERY : type == 'F' ? REQ_FUNCTION : REQ_EXTENDED);
    r->cls = REQUEST_CLS_UNKNOWN;
    r->sent = false;
    r->start = 0;
    r->failed = false;
    r->rows = 0;
    memset(r->obs, 0, sizeof(r->obs));
    return r;
}

struct request *request_current(struct client *c, uint8_t type)
{
    struct request_queue *q = queue_of(c);
    return q->open ? record_newest(q) : record_begin(q, type);
}

void request_forget_unsent(struct client *c)
{
    struct request_queue *q = c->rq;
    if (!q || !q->open || !q->r_n || record_newest(q)->sent)
        return;
    q->r_n--;
    q->open = false;
    queue_release_if_empty(c);
}

/* The head record's request is over. Its slot stays as it is until the
 * next request begins, which no observer does. */
static void record_end(struct client *c, struct request_queue *q, struct server *sv, char status)
{
    const struct request *r = &q->r[q->r_head];
    q->r_head = (q->r_head + 1) & q->r_mask;
    q->r_n--;
    for (unsigned w = end_wants[c->track]; w; w &= w - 1)
        observers[__builtin_ctz(w)]->on_request_end(c, sv, r, status);
}

/* ---- entries --------------------------------------------------------------- */

/* The observer owning e, or NULL. */
static const struct request_observer *owner_of(const struct request_entry *e)
{
    return e->owner >= 1 && e->owner <= n_observers ? observers[e->owner - 1] : NULL;
}

static struct request_entry *entry_head(struct request_queue *q)
{
    return q->e_n ? &q->e[q->e_head] : NULL;
}

static void entry_release(struct request_entry *e)
{
    const struct request_observer *o = owner_of(e);
    if (o && o->on_release)
        o->on_release(e);
    e->owner = 0;
}

static inline void entry_pop(struct request_queue *q)
{
    struct request_entry *e = &q->e[q->e_head];
    if (e->owner)
        entry_release(e);
    q->e_head = (q->e_head + 1) & q->e_mask;
    q->e_n--;
}

static void out_add(struct request_queue *q, const void *p, size_t n)
{
    if (q->out_len + n > q->out_cap) {
        size_t ncap = q->out_cap ? q->out_cap * 2 : 256;
        while (ncap < q->out_len + n)
            ncap *= 2;
        uint8_t *no = realloc(q->out, ncap);
        if (!no)
            abort();
        q->out = no;
        q->out_cap = ncap;
    }
    memcpy(q->out + q->out_len, p, n);
    q->out_len += n;
}

/* Runs after the head changed: drops what the server skips (after an
 * error, up to the Sync), and answers sluice's own entries that are now
 * first. Returns REQUEST_EMIT when it made answers. */
static unsigned settle(struct client *c, struct request_queue *q)
{
    unsigned r = 0;
    struct request_entry *e;
    while ((e = entry_head(q))) {
        if (q->errskip && e->answer != RA_SYNC) {
            const struct request_observer *o = owner_of(e);
            if (o && o->on_dropped)
                o->on_dropped(c, e);
            entry_pop(q);
            continue;
        }
        if (e->answer != RA_SYNTH)
            break;
        uint8_t m[5] = {e->synth, 0, 0, 0, 4};
        out_add(q, m, sizeof(m));
        entry_pop(q);
        r |= REQUEST_EMIT;
    }
    return r;
}

unsigned request_settle(struct client *c)
{
    return settle(c, c->rq);
}

/* Whether the head entry needs settle(): skipped, or sluice's to answer. */
static bool needs_settle(const struct request_queue *q)
{
    return q->e_n && (q->errskip || q->e[q->e_head].answer == RA_SYNTH);
}

bool request_server_idle(const struct client *c)
{
    const struct request_queue *q = c->rq;
    if (!q || !q->r_n)
        return true;
    if (q->r_n == 1 && q->open && q->r[q->r_head].kind == REQ_QUERY)
        return true;
    /* Session mode keeps an entry per request, not per message: an
     * Execute without its Sync may be running there. */
    return c->track && (q->errskip || !q->e_n);
}

uint8_t request_rescue_plan(struct client *c)
{
    struct server *sv = c->server;
    struct request_queue *q = c->rq;
    if (!sv || c->s.skip || sv->s.skip)
        return SR_NONE; /* part of a message either way */
    /* What the server skips was dropped as it came (settle()): an entry
     * left is the client's own Sync, whose answer is owed. */
    if (q && q->errskip && c->track)
        return q->e_n ? SR_NONE : SR_SYNC;
    if (!q || !q->r_n)
        return sv->xact_status == 'T' || sv->xact_status == 'E' ? SR_ROLLBACK : SR_NONE;
    if (!c->track || (q->open && q->r[q->r_head].kind == REQ_QUERY))
        return SR_NONE;
    return q->e_n ? SR_NONE : SR_ROLLBACK;
}

bool request_none_commits(const struct client *c)
{
    const struct request_queue *q = c->rq;
    if (!q || !q->r_n)
        return false;
    for (uint32_t i = 0; i < q->r_n; i++) {
        const struct request *r = &q->r[(q->r_head + i) & q->r_mask];
        if ((r->kind != REQ_QUERY && r->kind != REQ_EXTENDED) || r->cls != CK_BEGIN)
            return false;
    }
    return true;
}

void request_note_parse(struct request_msg *rm, bool unnamed, enum classify_kw kw)
{
    struct request *r = rm->r;
    if (r && r->kind == REQ_EXTENDED)
        r->cls = r->cls == REQUEST_CLS_UNKNOWN && unnamed && kw == CK_BEGIN ? CK_BEGIN : CK_OTHER;
}

void request_note_run(struct request_msg *rm, bool unnamed)
{
    /* Before any Parse of its own, the statement is an earlier one. */
    struct request *r = rm->r;
    if (r && r->kind == REQ_EXTENDED && (r->cls != CK_BEGIN || !unnamed))
        r->cls = CK_OTHER;
}

bool request_note_execute(struct client *c, struct request_msg *rm)
{
    if (!rm->r || rm->r->cls != CK_BEGIN)
        return true;
    /* Only then is its portal's name looked at: its first byte. */
    if (!request_msg_need(c, rm, 6))
        return false;
    request_note_run(rm, c->s.rbuf->data[c->s.rbuf->start + 5] == '\0');
    return true;
}

const struct request_entry *request_head_entry(const struct client *c)
{
    return c->rq ? entry_head(c->rq) : NULL;
}

void request_push(struct client *c, const struct request_entry *e)
{
    struct request_queue *q = queue_of(c);
    if (q->e_n > q->e_mask) {
        q->e = grow_ring(q->e, &q->e_mask, q->e_head, q->e_n, sizeof(*q->e));
        q->e_head = 0;
    }
    q->e[(q->e_head + q->e_n) & q->e_mask] = *e;
    q->e_n++;
    if (q->e_n == 1 && needs_settle(q) && settle(c, q) & REQUEST_EMIT) {
        /* Nothing ahead of it: answered now (a Parse of a statement the
         * server has, behind nothing). The client gets it at once. */
        stream_write(&c->s, q->out, q->out_len);
        q->out_len = 0;
    }
}

struct request_entry *request_last_end(struct client *c)
{
    struct request_queue *q = c->rq;
    if (!q || !q->e_n)
        return NULL;
    struct request_entry *e = &q->e[(q->e_head + q->e_n - 1) & q->e_mask];
    bool ends = e->flags & RE_END && (e->answer == RA_QUERY || e->answer == RA_SYNC);
    return ends ? e : NULL;
}

/* ---- client messages --------------------------------------------------------- */

static enum request_answer answer_of(uint8_t type, const uint8_t *msg, uint32_t avail)
{
    switch (type) {
    case 'Q':
    case 'F':
        return RA_QUERY;
    case 'S':
        return RA_SYNC;
    case 'E':
        return RA_EXECUTE;
    case 'D':
        return avail > 5 && msg[5] == 'S' ? RA_DESCRIBE : RA_ONE;
    default:
        return RA_ONE; /* Parse, Bind, Close */
    }
}

/* Does a message of this type get an answer of its own? */
static bool answered(uint8_t type)
{
    switch (type) {
    case 'Q':
    case 'F':
    case 'S':
    case 'P':
    case 'B':
    case 'D':
    case 'E':
    case 'C':
        return true;
    default:
        return false; /* Flush, CopyData/Done/Fail, Terminate */
    }
}

/* r's first message goes to the server now: its clock starts. */
static void record_sent(struct client *c, struct request *r)
{
    r->sent = true;
    r->start = worker_now(c->s.worker);
    c->requested = true;
    if (c->rq->r_n == 1) {
        c->request_time = r->start;
        if (c->server && c->server->xact_status == 'I') {
            c->rq->xact_start = r->start;
            c->server->xact_start = r->start;
        }
    }
}

/* The request a message of this type belongs to: its record, begun (and
 * marked sent) if need be; NULL for messages of no request (COPY data). */
static inline struct request *client_msg_request(struct client *c, struct request_queue *q,
                                                 uint8_t type)
{
    if (type == 'd' || type == 'c' || type == 'f')
        return NULL;
    struct request *r = q->open ? record_newest(q) : record_begin(q, type);
    if (!r->sent)
        record_sent(c, r);
    return r;
}

int64_t request_session_msg(struct client *c, uint8_t type, uint32_t len)
{
    struct request_queue *q = queue_of(c);
    if (!client_msg_request(c, q, type) || (type != 'S' && type != 'Q' && type != 'F'))
        return len;
    q->open = false; /* the batch is complete: its end will come */
    if (q->e_n > q->e_mask) {
        q->e = grow_ring(q->e, &q->e_mask, q->e_head, q->e_n, sizeof(*q->e));
        q->e_head = 0;
    }
    struct request_entry *e = &q->e[(q->e_head + q->e_n) & q->e_mask];
    e->answer = type == 'S' ? RA_SYNC : RA_QUERY;
    e->flags = RE_END;
    e->owner = 0;
    q->e_n++;
    return len;
}

int64_t request_observed_msg(struct client *c, uint8_t type, uint32_t len, uint32_t *fwd)
{
    if (begin_wants && (!c->rq || !c->rq->open) && type != 'd' && type != 'c' && type != 'f') {
        uint32_t at = c->s.rbuf->start;
        for (unsigned w = begin_wants; w; w &= w - 1) {
            int64_t a = observers[__builtin_ctz(w)]->on_request_begin(c, type);
            if (a == REQUEST_WAIT)
                return REQUEST_WAIT;
            if (a == REQUEST_ANSWERED) {
                /* What came before it goes on; it went nowhere. */
                struct iobuf *b = c->s.rbuf;
                if (at > *fwd)
                    stream_write(&c->server->s, b->data + *fwd, at - *fwd);
                *fwd = b->start;
                return 0;
            }
        }
    }
    struct iobuf *b = c->s.rbuf;
    uint32_t avail = iobuf_len(b);
    if (type == 'D' && avail < 6 && len >= 6)
        return REQUEST_WAIT; /* Describe: statement or portal? */
    struct request_queue *q = queue_of(c);
    struct request_msg rm;
    rm.type = type;
    rm.len = len;
    rm.fwd = fwd;
    rm.r = client_msg_request(c, q, type);
    rm.own_entries = false;
    rm.cr = NULL;
    rm.parsed = false;
    rm.shape = 0;
    memset(&rm.entry, 0, sizeof(rm.entry));
    rm.entry.answer = (uint8_t)answer_of(type, b->data + b->start, avail);
    int64_t ret = len;
    for (unsigned w = request_client_wants[c->track][type]; w; w &= w - 1) {
        ret = observers[__builtin_ctz(w)]->on_client_msg(c, &rm);
        if (ret != len)
            break; /* taken: rewritten, answered or waiting */
    }
    if (rm.cr)
        free((void *)rm.cr);
    if (ret < 0)
        return ret;
    q = c->rq;
    bool ends = type == 'S' || type == 'Q' || type == 'F';
    if (ends)
        q->open = false; /* the batch is complete: its end will come */
    if (rm.own_entries || !answered(type) || (!c->track && !ends))
        return ret; /* session mode: only the ends of requests are tracked */
    if (ends)
        rm.entry.flags |= RE_END;
    if (q->e_n <= q->e_mask && q->e_n && !rm.entry.owner) {
        /* Behind others, nothing to settle: straight into the ring. */
        q->e[(q->e_head + q->e_n) & q->e_mask] = rm.entry;
        q->e_n++;
        return ret;
    }
    request_push(c, &rm.entry);
    return ret;
}

/* ---- server messages ------------------------------------------------------- */

/* Does message type t end entry e? (ParameterDescription turns a
 * Describe-statement entry into a plain one.) */
static bool entry_done(struct request_entry *e, uint8_t t)
{
    switch ((enum request_answer)e->answer) {
    case RA_ONE:
        return true;
    case RA_DESCRIBE:
        if (t == 't') {
            e->answer = RA_ONE;
            return false;
        }
        return true;
    case RA_EXECUTE:
        return t == 'C' || t == 'I' || t == 's' || t == 'E';
    case RA_SYNC:
    case RA_QUERY:
        return t == 'Z';
    case RA_SYNTH:
        break;
    }
    return true;
}

/* What the message does to the head entry e (ended by it: done). */
static unsigned entry_answer(struct client *c, struct server *sv, struct request_entry *e,
                             const struct stream_msg *m, bool done)
{
    unsigned r = REQUEST_PASS;
    if (e->flags & RE_SWALLOW || (e->flags & RE_SWALLOW_OK && m->type != 'E'))
        r = REQUEST_SWALLOW;
    const struct request_observer *o = owner_of(e);
    if (e->flags & RE_OWNED && o && o->on_server_msg)
        r |= o->on_server_msg(c, sv, e, m, done);
    return r;
}

unsigned request_server_ready(struct client *c, struct server *sv, const struct stream_msg *m)
{
    struct request_queue *q = c->rq;
    bool end = q->e[q->e_head].flags & RE_END;
    q->errskip = false;
    sv->xact_status = (char)m->data[5];
    q->e_head = (q->e_head + 1) & q->e_mask;
    q->e_n--;
    if (end)
        record_end(c, q, sv, sv->xact_status);
    unsigned r = needs_settle(q) ? settle(c, q) : REQUEST_PASS;
    return q->out_len ? r | REQUEST_EMIT : r;
}

unsigned request_server_msg_slow(struct client *c, struct server *sv, const struct stream_msg *m)
{
    uint8_t t = m->type;
    bool whole = m->avail >= m->len;
    if ((t == 'Z' || t == 'S') && !whole)
        return REQUEST_MORE; /* the relay reads both */
    struct request_queue *q = c->rq;
    struct request_entry *e = q ? entry_head(q) : NULL;
    /* Notices, parameters, notifications: no entry's. Nothing expected: a
     * server's own FATAL, say. */
    if (!e || t == 'N' || t == 'S' || t == 'A') {
        /* An error no message was known to cause (a malformed Flush, say):
         * the server skips to the next Sync, as after any other. */
        if (!e && t == 'E' && q && c->track)
            q->errskip = true;
        return REQUEST_PASS;
    }
    bool row = t == 'D' || t == 'd';
    unsigned acting = e->flags & RE_ACTING;
    if (row && !acting)
        return REQUEST_PASS; /* rows never end an entry */
    /* Anything else is looked at whole when entries are kept per message,
     * so that nothing is decided twice and sluice's answers never land
     * inside it. */
    if (!whole && c->track && (!row || e->flags & (RE_SWALLOW | RE_SWALLOW_OK)))
        return REQUEST_MORE;
    if ((t == 'G' || t == 'H' || t == 'W') && q->r_n)
        q->r[q->r_head].kind = REQ_COPY;
    bool done = entry_done(e, t);
    unsigned r = acting ? entry_answer(c, sv, e, m, done) : REQUEST_PASS;
    if (t == 'E' && q->r_n)
        q->r[q->r_head].failed = true;
    if (t == 'E' && e->answer != RA_QUERY && e->answer != RA_SYNC)
        q->errskip = true; /* the server skips to the next Sync */
    if (!done)
        return q->errskip ? r | settle(c, q) : r;
    bool end = e->flags & RE_END;
    if (t == 'Z') {
        q->errskip = false;
        sv->xact_status = (char)m->data[5];
        if (e->flags & RE_HOLD_Z)
            r |= REQUEST_SWALLOW;
    }
    entry_pop(q);
    if (end)
        record_end(c, q, sv, sv->xact_status);
    if (needs_settle(q))
        r |= settle(c, q);
    if (q->out_len)
        r |= REQUEST_EMIT;
    return r;
}

bool request_count_rows;

void request_note_rows(struct request_queue *q, const struct stream_msg *m)
{
    /* "SELECT 5", "INSERT 0 5", "UPDATE 5", ...: the last word, if any is
     * a number. Only a whole message is read (they are short). */
    if (m->avail < m->len || m->len < PROTO_HDR + 2)
        return;
    const uint8_t *end = m->data + m->len - 1; /* the tag's NUL */
    const uint8_t *p = end;
    while (p > m->data + PROTO_HDR && p[-1] >= '0' && p[-1] <= '9')
        p--;
    if (p == end || p == m->data + PROTO_HDR || p[-1] != ' ' || end - p > 9)
        return;
    uint32_t n = 0;
    for (; p < end; p++)
        n = n * 10 + (uint32_t)(*p - '0');
    struct request *r = &q->r[q->r_head];
    r->rows = r->rows + n < r->rows ? UINT32_MAX : r->rows + n;
}

/* ---- helpers for observers -------------------------------------------------- */

void request_msg_flush(struct client *c, struct request_msg *rm)
{
    struct iobuf *b = c->s.rbuf;
    stream_cork(&c->server->s);
    if (b->start > *rm->fwd)
        stream_write(&c->server->s, b->data + *rm->fwd, b->start - *rm->fwd);
    *rm->fwd = b->start;
}

bool request_msg_need_more(struct client *c, struct request_msg *rm, uint32_t want)
{
    struct iobuf *b = c->s.rbuf;
    if (iobuf_len(b) >= want)
        return true;
    if (b->start + want > b->cap) {
        /* The buffer moves: what precedes the message goes first. */
        request_msg_flush(c, rm);
        stream_make_room(&c->s, want); /* grows with what arrives */
        *rm->fwd = c->s.rbuf->start;
    }
    return false;
}

int64_t request_msg_consume(struct client *c, struct request_msg *rm)
{
    request_msg_flush(c, rm);
    c->s.rbuf->start += rm->len;
    *rm->fwd = c->s.rbuf->start;
    return 0;
}

bool request_msg_keyword(struct client *c, struct request_msg *rm, enum classify_kw *kw)
{
    struct request *r = rm->r ? rm->r : request_current(c, rm->type);
    if (r->cls != REQUEST_CLS_UNKNOWN) {
        *kw = (enum classify_kw)r->cls;
        return true;
    }
    /* The first kilobyte decides most queries (an INSERT of megabytes
     * streams through); one it does not decide is looked at whole. */
    uint32_t peek = rm->len < 1024 ? rm->len : 1024;
    if (!request_msg_need(c, rm, peek))
        return false;
    struct iobuf *b = c->s.rbuf;
    if (peek < rm->len && classify_peek_more((const char *)b->data + b->start + 5, peek - 5)) {
        peek = rm->len;
        if (!request_msg_need(c, rm, peek))
            return false;
        b = c->s.rbuf;
    }
    *kw = classify_peek((const char *)b->data + b->start + 5, peek - 5);
    r->cls = (uint8_t)*kw;
    return true;
}

uint64_t request_msg_shape(struct request_msg *rm, const char *sql, size_t len)
{
    if (!rm->shape || rm->shape_len != len) {
        rm->shape = sql_shape(sql, len);
        rm->shape_len = len;
    }
    return rm->shape;
}

bool request_msg_parse(struct client *c, struct request_msg *rm, const char **sql, size_t *len,
                       const struct classify_result **cr)
{
    if (!request_msg_need(c, rm, rm->len))
        return false;
    struct iobuf *b = c->s.rbuf;
    *sql = (const char *)b->data + b->start + 5;
    *len = rm->len - 5;
    if (*len == 0 || (*sql)[*len - 1] != '\0') {
        *cr = NULL; /* malformed: the server says so */
        return true;
    }
    (*len)--;
    if (!rm->parsed) {
        /* Parsed at most once per message (about 20 us); freed when the
         * message is handled. */
        rm->parsed = true;
        struct classify_result *p = malloc(sizeof(*p));
        if (!p)
            abort();
        if (classify_parse(*sql, *len, p) || p->truncated) {
            rm->cr = p;
        } else {
            free(p);
            rm->cr = NULL;
        }
    }
    *cr = rm->cr;
    return true;
}

void request_out_add(struct client *c, const void *p, size_t n)
{
    out_add(queue_of(c), p, n);
}

void request_out_take(struct client *c, const uint8_t **p, size_t *n)
{
    struct request_queue *q = c->rq;
    *p = q ? q->out : NULL;
    *n = q ? q->out_len : 0;
    if (q)
        q->out_len = 0;
}

/* ---- the end of a link ----------------------------------------------------- */

static void queue_drop_all(struct client *c)
{
    struct request_queue *q = c->rq;
    if (!q)
        return;
    struct request_entry *e;
    while ((e = entry_head(q))) {
        const struct request_observer *o = owner_of(e);
        if (o && o->on_dropped)
            o->on_dropped(c, e);
        entry_pop(q);
    }
    q->r_n = q->r_head = 0;
    q->open = q->errskip = false;
    q->out_len = 0;
}

void request_unlinked(struct client *c)
{
    struct request_queue *q = c->rq;
    if (!q)
        return;
    if (q->e_n || q->r_n || q->out_len)
        queue_drop_all(c); /* nothing should be left: the transaction is over */
    for (unsigned w = unlinked_wants[c->track]; w; w &= w - 1)
        observers[__builtin_ctz(w)]->on_unlinked(c);
    c->rq = NULL;
    queue_put(q);
}

void request_client_free(struct client *c)
{
    queue_drop_all(c);
    queue_release_if_empty(c);
    for (int i = 0; i < n_observers; i++)
        if (observers[i]->on_client_free)
            observers[i]->on_client_free(c);
}
