/* request.h - the requests a client has in flight, in every pool mode, and
 * the one place where each server message is matched to the request (and
 * the message of it) it answers.
 *
 * A request is a simple Query, an extended-protocol batch up to its Sync,
 * or a FunctionCall; it ends with the server's ReadyForQuery. Each has a
 * record (struct request): its kind, when it started, a classification
 * slot and a little room for each observer. Below the records, the queue
 * holds one entry per message a server answers (Parse, Bind, Describe,
 * Execute, Close, Sync, Query, FunctionCall), so that the answer of each is
 * known: a server that met an error skips to the next Sync, sluice's own
 * messages (a Parse it injected, say) are answered too but the client must
 * not see that, and some messages sluice answers itself. In session mode
 * only the ends of requests are tracked (nothing rewrites messages there).
 *
 * Observers attach through a const ops table (struct request_observer):
 * prepared statements and session settings under transaction pooling
 * (prepared.c), per-request statistics (stats_observer.c), LISTEN
 * (listen.c); the router, the cache and insights will.
 *
 * The queue's storage is borrowed from a per-thread cache while the client
 * has requests (c->rq), so an idle client holds none. */
#ifndef SLUICE_REQUEST_H
#define SLUICE_REQUEST_H

#include <stdbool.h>
#include <stdint.h>

#include "classify.h"
#include "conn.h"

/* What a client asked. */
enum request_kind {
    REQ_QUERY = 0, /* a simple Query */
    REQ_EXTENDED,  /* Parse/Bind/Describe/Execute/Close... up to Sync */
    REQ_FUNCTION,  /* FunctionCall */
    REQ_COPY,      /* a request the server switched to COPY (in or out) */
};
const char *request_kind_str(enum request_kind k);

/* The classification slot's value before anyone looked at the text. */
#define REQUEST_CLS_UNKNOWN 0xff
/* Payload words per observer in each request record. */
#define REQUEST_OBS_WORDS 1
/* At most this many observers. */
#define REQUEST_MAX_OBSERVERS 6

/* One request in flight. */
struct request {
    uint8_t kind;  /* enum request_kind */
    uint8_t cls;   /* classification (enum classify_kw), REQUEST_CLS_UNKNOWN */
    bool sent;     /* its first message went to a server */
    bool failed;   /* an ErrorResponse answered one of its messages */
    uint32_t rows; /* from its CommandCompletes, while request_count_rows */
    int64_t start; /* when that happened (usec, the worker's clock) */
    uint64_t obs[REQUEST_MAX_OBSERVERS][REQUEST_OBS_WORDS]; /* the observers' */
};

/* How the server answers one message (how an entry ends). */
enum request_answer {
    RA_ONE = 0,  /* one message: Parse, Bind, Close, Describe of a portal */
    RA_DESCRIBE, /* Describe of a statement: ParameterDescription, then one more */
    RA_EXECUTE,  /* Execute: rows, then CommandComplete/EmptyQuery/PortalSuspended */
    RA_SYNC,     /* Sync: ReadyForQuery */
    RA_QUERY,    /* Query, FunctionCall: everything up to ReadyForQuery */
    RA_SYNTH,    /* sluice answers it (entry.synth), the server never does */
};

/* Entry flags. */
#define RE_SWALLOW    0x01u /* sluice's own message: its whole answer is dropped */
#define RE_SWALLOW_OK 0x02u /* ... all but an ErrorResponse, which the client gets */
#define RE_END        0x04u /* its answer's end is the end of a client request */
#define RE_OWNED      0x08u /* owner gets on_server_msg for each message of the answer */
#define RE_HOLD_Z     0x10u /* its ReadyForQuery is dropped: one sluice asked for follows */
#define RE_ACTING     (RE_SWALLOW | RE_SWALLOW_OK | RE_OWNED)

/* One message waiting for its answer. The owner (an observer) may keep
 * what it needs in tag, synth, u and p. */
struct request_entry {
    uint8_t answer; /* enum request_answer */
    uint8_t flags;  /* RE_* */
    uint8_t owner;  /* the observer that owns tag/u/p (request_observe()); 0: none */
    uint8_t tag;    /* the owner's kind of entry */
    uint8_t synth;  /* RA_SYNTH: the message sluice answers with ('1', '3') */
    uint64_t u;
    void *p[2];
};

/* request_server_msg() result bits. */
#define REQUEST_PASS    0u /* forward the message */
#define REQUEST_SWALLOW 1u /* drop it (it is whole) */
#define REQUEST_EMIT    2u /* after it (or in its place), write request_out() */
#define REQUEST_MORE    4u /* needed whole: wait until it is buffered */

/* request_client_msg() results below 0 (else: bytes to forward as they are). */
#define REQUEST_WAIT   (-1) /* need more of this message: stop, keep the bytes */
#define REQUEST_CLOSED (-2) /* the client was closed */
/* on_request_begin: the observer answered the message and consumed it
 * (stream_consume_msg()): nothing of it goes to the server. */
#define REQUEST_ANSWERED (-3)

/* A client message being handled: what observers see and may change. */
struct request_msg {
    uint8_t type;
    uint32_t len;
    struct request *r; /* its request (NULL: COPY data, of none) */
    uint32_t *fwd;     /* start of the client bytes not yet written to the server */
    /* The entry the message gets when the observers are done (its answer
     * is set from the type; an observer may own it or change it). */
    struct request_entry entry;
    bool own_entries; /* an observer queued the message's entries itself */
    /* A Query's full parse, made once for every observer (see
     * request_msg_parse()). */
    const struct classify_result *cr;
    bool parsed;
    /* A Query's shape (sql_shape.h) and the length of the text it is
     * of, hashed once per message whoever asks (request_msg_shape());
     * 0: not yet. */
    uint64_t shape;
    size_t shape_len;
};

/* What an observer implements; every hook is optional. */
struct request_observer {
    const char *name;
    bool tracked_only; /* only for clients in transaction or statement mode */
    /* The client message types on_client_msg wants ("QPBDCE"); NULL: all.
     * Others are not shown to it (it runs for every message otherwise). */
    const char *client_msgs;
    /* A client message, before it is forwarded. It may write messages of
     * its own to the server (after flushing *rm->fwd), rewrite or answer
     * this one. Returns how many bytes of the message, from the read
     * buffer's start, the caller still forwards (rm->len when nothing
     * changed), REQUEST_WAIT or REQUEST_CLOSED. */
    int64_t (*on_client_msg)(struct client *c, struct request_msg *rm);
    /* A new request of tracked client c (its first message, of this type,
     * at the head of c's buffer) is about to go to the server c is linked
     * to. REQUEST_WAIT holds it, with all after it, until that server goes
     * back to its pool; the dispatcher then sends it on its way anew (the
     * router: a write after reads on a replica). REQUEST_ANSWERED: the
     * observer answered it (nothing of c's is in flight). 0: it goes on. */
    int64_t (*on_request_begin)(struct client *c, uint8_t type);
    /* A server message answering an entry it owns (RE_OWNED); done: the
     * message ends the entry. Returns REQUEST_SWALLOW / REQUEST_EMIT bits. */
    unsigned (*on_server_msg)(struct client *c, struct server *sv, struct request_entry *e,
                              const struct stream_msg *m, bool done);
    /* An entry it owns that the server skips (an error came before the
     * next Sync): undo what was assumed when the message was sent. */
    void (*on_dropped)(struct client *c, struct request_entry *e);
    /* An entry it owns leaves the queue: free what it holds. */
    void (*on_release)(struct request_entry *e);
    /* A request of c's ended (ReadyForQuery with status, on sv). */
    void (*on_request_end)(struct client *c, struct server *sv, const struct request *r,
                           char status);
    /* c lost its server (the transaction is over), or is being freed. */
    void (*on_unlinked)(struct client *c);
    void (*on_client_free)(struct client *c);
};

/* Registers an observer (at start); returns its number (>= 1), which marks
 * the entries it owns (entry.owner). */
int request_observe(const struct request_observer *obs);

/* A client's queue: records and entries, each a ring (power-of-two sizes),
 * and the answers sluice made that wait for their place. Its fields are
 * request.c's; it is here for the inline fast paths below. */
struct request_queue {
    struct request *r;
    uint32_t r_mask, r_head, r_n;
    bool open;    /* the newest record's batch has not ended (no Sync yet) */
    bool errskip; /* the server skips to Sync after an error */
    struct request_entry *e;
    uint32_t e_mask, e_head, e_n;
    int64_t xact_start; /* when the transaction of the requests in flight began */
    uint8_t *out;       /* answers made by sluice, for the next emit */
    size_t out_len, out_cap;
    struct request_queue *next_free;
};

/* Whether c has requests in flight or a batch not yet ended by Sync. */
static inline bool request_busy(const struct client *c)
{
    return c->rq && c->rq->r_n > 0;
}
/* Whether the request of the message being handled (a Query) is all c has
 * in flight: nothing before it waits for an answer. */
bool request_only(const struct client *c);
/* When c's oldest request in flight started (0 if none). */
int64_t request_oldest_start(const struct client *c);
/* When the transaction of c's requests in flight began. */
int64_t request_xact_start(const struct client *c);
/* The record of c's open request (begun, not ended by its Sync/Query),
 * beginning one for a message of this type if there is none. */
struct request *request_current(struct client *c, uint8_t type);
/* The open request of c that no message of has gone to a server is
 * dropped (it was answered without one). */
void request_forget_unsent(struct client *c);

/* Observers (bit i: the i-th registered) that want a client message of each
 * type, [0] for untracked (session mode) clients, [1] for tracked ones;
 * written only by request_observe(), at start. */
extern uint8_t request_client_wants[2][256];
/* request_client_msg() when no observer wants the message (session mode):
 * only the record and the end of its request are kept. */
int64_t request_session_msg(struct client *c, uint8_t type, uint32_t len);
int64_t request_observed_msg(struct client *c, uint8_t type, uint32_t len, uint32_t *fwd);

/* A message of c's (the head of c->s.rbuf) on its way to c's server:
 * observers see it, the request record and the message's entry are
 * queued. Returns as on_client_msg. Two functions, so that the session
 * path is a small leaf without the observed path's stack frame. */
static inline int64_t request_client_msg(struct client *c, uint8_t type, uint32_t len,
                                         uint32_t *fwd)
{
    if (!c->track && !request_client_wants[0][type])
        return request_session_msg(c, type, len);
    return request_observed_msg(c, type, len, fwd);
}
/* Queues an entry for a message an observer wrote to the server (before
 * the client's own entry: rm->own_entries is not needed for that). */
void request_push(struct client *c, const struct request_entry *e);
/* Whether c's server runs nothing of c's (so a cancel would stop
 * nothing): c's one request in flight is a simple Query whose message has
 * not been handled whole yet (no server has all of it), or, for a tracked
 * client, the server owes no answer to the messages it has (an extended
 * batch waiting for more), or skips to the next Sync after an error. */
bool request_server_idle(const struct client *c);
/* What the server of a client that is going must be sent before another
 * client may have it (enum server_rescue, conn.h), or SR_NONE: it cannot
 * be brought back and closes. Only for a server that waits on the client:
 * a transaction left open between requests (SR_ROLLBACK), a tracked
 * client's extended batch answered so far and never synced (SR_ROLLBACK
 * too: a Query there rolls back the batch's implicit transaction, where a
 * Sync would commit what the client never asked to), or one the server
 * skips to its Sync after an error (SR_SYNC; what it skips was dropped
 * as it came, and observers undid what they assumed of it). Call it while
 * c is still linked to its server, which has no query of sluice's
 * pending. */
uint8_t request_rescue_plan(struct client *c);
/* Whether nothing c has in flight can commit: each request is a lone
 * BEGIN, as a Query or as an extended batch (tracked clients only; a
 * request nobody read may commit). */
bool request_none_commits(const struct client *c);
/* An extended request's Parse (of the unnamed statement, or not; kw: the
 * pre-classifier's reading of its text) and its Bind or Execute (of the
 * unnamed statement or portal, or not): a batch that runs only the lone
 * BEGIN it parsed itself keeps cls CK_BEGIN, any other CK_OTHER. */
void request_note_parse(struct request_msg *rm, bool unnamed, enum classify_kw kw);
void request_note_run(struct request_msg *rm, bool unnamed);
/* request_note_run() for an Execute (rm); false: more of it is needed. */
bool request_note_execute(struct client *c, struct request_msg *rm);
/* The oldest entry whose answer c's server owes, NULL if none. */
const struct request_entry *request_head_entry(const struct client *c);
/* The newest entry of c's, if it ends a request the server answers (a
 * Query or Sync just queued), or NULL. */
struct request_entry *request_last_end(struct client *c);

unsigned request_server_msg_slow(struct client *c, struct server *sv, const struct stream_msg *m);
/* Whether CommandComplete's rows are added up in the records (insights):
 * set at start. */
extern bool request_count_rows;
/* A CommandComplete m for the head record of q. */
void request_note_rows(struct request_queue *q, const struct stream_msg *m);
/* Answers the entries sluice answers that are now first (REQUEST_EMIT). */
unsigned request_settle(struct client *c);
/* ReadyForQuery (whole) ending the head entry, a Sync or Query of the
 * client's that no observer owns. */
unsigned request_server_ready(struct client *c, struct server *sv, const struct stream_msg *m);

/* A message of c's server (m: its header, maybe all of it): which entry it
 * answers, what the observers make of it. REQUEST_* bits. Inline for the
 * common case, a message inside the answer to a Query or Sync of the
 * client's own (rows, descriptions, completions), which changes nothing. */
static inline unsigned request_server_msg(struct client *c, struct server *sv,
                                          const struct stream_msg *m)
{
    struct request_queue *q = c->rq;
    uint8_t t = m->type;
    if (t == 'C' && request_count_rows && q && q->r_n)
        request_note_rows(q, m);
    if (!q || !q->e_n || t == 'S' || t == 'E' || t == 'G' || t == 'H' || t == 'W' || t == 't')
        return request_server_msg_slow(c, sv, m);
    const struct request_entry *e = &q->e[q->e_head];
    if (e->flags & RE_ACTING)
        return request_server_msg_slow(c, sv, m);
    if (t == 'Z') {
        if ((e->answer != RA_QUERY && e->answer != RA_SYNC) || m->avail < m->len ||
            (e->flags & RE_HOLD_Z))
            return request_server_msg_slow(c, sv, m);
        return request_server_ready(c, sv, m); /* the end of a request */
    }
    if (e->answer == RA_QUERY || e->answer == RA_SYNC || t == 'D' || t == 'N' || t == 'A')
        return REQUEST_PASS; /* inside an answer: it goes on */
    if (e->answer == RA_EXECUTE && t != 'C' && t != 'I' && t != 's')
        return REQUEST_PASS;
    if (m->avail < m->len)
        return REQUEST_MORE; /* decisions are made on whole messages */
    /* A plain entry answered (ParseComplete, BindComplete, a description,
     * an Execute's completion): the next one is the head. */
    q->e_head = (q->e_head + 1) & q->e_mask;
    q->e_n--;
    if (q->e_n && q->e[q->e_head].answer == RA_SYNTH)
        return request_settle(c);
    return REQUEST_PASS;
}

/* ---- for observers handling a client message ------------------------------ */

/* Writes the client bytes before the current message to the server, so
 * that an observer's own messages go after them. The server's stream stays
 * corked until the relay flushes: what is written in pieces leaves in one
 * send(). */
void request_msg_flush(struct client *c, struct request_msg *rm);
/* true when want bytes of the current message are buffered; false when
 * more must be read (the observer returns REQUEST_WAIT; the buffer grows
 * as needed, after a flush). */
bool request_msg_need_more(struct client *c, struct request_msg *rm, uint32_t want);
static inline bool request_msg_need(struct client *c, struct request_msg *rm, uint32_t want)
{
    /* Inline: most messages are whole in the buffer, and observers ask
     * on every Parse and Bind. */
    return iobuf_len(c->s.rbuf) >= want || request_msg_need_more(c, rm, want);
}
/* Consumes the current message without forwarding it; returns 0, what
 * on_client_msg returns then. */
int64_t request_msg_consume(struct client *c, struct request_msg *rm);
/* The pre-classifier's keyword of a Query (its first kilobyte), kept in
 * the request's classification slot. false: wait for more bytes. */
bool request_msg_keyword(struct client *c, struct request_msg *rm, enum classify_kw *kw);
/* The text (NUL excluded) and full parse of a Query, parsed once per
 * message whoever asks. false: wait for more bytes. *cr is NULL when the
 * text is malformed or does not parse (the server will say why). */
bool request_msg_parse(struct client *c, struct request_msg *rm, const char **sql, size_t *len,
                       const struct classify_result **cr);

/* The shape of the Query rm, whose text is sql[0..len): hashed by the
 * first observer that asks, kept for the others (insights counts by it,
 * the cache knows what a text writes by it). */
uint64_t request_msg_shape(struct request_msg *rm, const char *sql, size_t len);

/* Answers sluice made for c, to be written at the next REQUEST_EMIT: an
 * observer appends; the relay writes and empties. */
void request_out_add(struct client *c, const void *p, size_t n);
void request_out_take(struct client *c, const uint8_t **p, size_t *n);

/* c's server is going back (or went): the queue must be empty; anything
 * left is dropped, and observers hear on_unlinked. */
void request_unlinked(struct client *c);
/* c is being freed (a client_conn free hook). */
void request_client_free(struct client *c);
/* Frees the running thread's cache of queues (thread exit). */
void request_thread_done(void);

#endif
