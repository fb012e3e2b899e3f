/* router.c - where a request goes (router.h).
 *
 * The decision is made on the request's bytes as they sit at the head of
 * the client's buffer: a Query, or an extended-protocol batch up to its
 * Sync, every statement of which must be provably read-only for a replica
 * to get it (a batch is one implicit transaction: its parts go together).
 * A batch not all buffered yet, or ended by Flush rather than Sync, goes
 * to the primary: sluice never waits on a client that waits on it. */
#include "router.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <ctype.h>
#include <string.h>
#include <strings.h>

#include "cache.h"
#include "classify_rw.h"
#include "log.h"
#include "pool.h"
#include "prepared.h"
#include "proto.h"
#include "replicas.h"
#include "ryw_vars.h"
#include "sql_lex.h"
#include "volatility.h"
#include "worker.h"

/* Messages longer than this are not buffered whole to be classified: they
 * go to the primary (a statement that long is rarely a hot read). */
#define ROUTER_CLASSIFY_MAX (256 * 1024)
/* At most this many messages of a batch are looked at. */
#define ROUTER_BATCH_MAX 256

static atomic_uint_fast64_t n_replica_reads, n_held;

uint64_t router_replica_reads(void)
{
    return (uint64_t)atomic_load_explicit(&n_replica_reads, memory_order_relaxed);
}

const char *router_target_str(enum router_target t)
{
    static const char *const names[] = {"primary", "replica", "wait", "answered"};
    return (unsigned)t < sizeof(names) / sizeof(names[0]) ? names[t] : "?";
}

/* At most this many SET LOCALs of one request are kept to replay; more:
 * the request goes to the primary. */
#define VERDICT_MAX_SET_LOCAL 8

/* What the statements of a request add up to. Text pointers point into
 * c's buffer: valid while the router looks at it. */
struct verdict {
    bool write;      /* at least one may write (or is not understood) */
    bool wait;       /* the first message is not all buffered: ask again */
    bool whole;      /* all of it is buffered, through its Query or Sync */
    int hint;        /* CRW hint of a comment (classify_rw.h), the last one seen */
    const char *why; /* the first reason it is a write (why_buf, or static) */
    char why_buf[96];
    int n_stmts; /* statements seen */
    /* transaction control */
    bool query;        /* a simple Query (not an extended batch) */
    const char *begin; /* the last BEGIN / START TRANSACTION's text */
    uint32_t begin_len;
    bool begin_read_only;        /* ... it said READ ONLY */
    bool begin_is_start;         /* ... it is START TRANSACTION (its tag) */
    int end;                     /* CRW_TXN_COMMIT or _ROLLBACK of the last statement ending one */
    bool ends_after_begin;       /* a COMMIT / ROLLBACK follows the last BEGIN */
    bool set_transaction_strict; /* SET TRANSACTION ... REPEATABLE READ / SERIALIZABLE */
    int n_set_local;
    const char *set_local[VERDICT_MAX_SET_LOCAL];
    uint32_t set_local_len[VERDICT_MAX_SET_LOCAL];
    /* Where it leaves a transaction, for read-your-writes (every statement,
     * writes too): txn_after -1 unchanged, 0 ended (a COMMIT, ROLLBACK or
     * PREPARE TRANSACTION last), 1 open (a BEGIN last); txn_unknown: not
     * all statements were seen. copy_in: a COPY FROM STDIN. */
    int8_t txn_after;
    bool txn_unknown;
    bool copy_in;
    bool all;   /* classify every statement, even after a write (txn_after) */
    bool named; /* a batch that parses or binds a named statement */
};

static void verdict_write(struct verdict *v, const char *why)
{
    if (!v->write) {
        /* Copied: a reason may point into the classifier's cache, which
         * the next statement's classification may change. */
        snprintf(v->why_buf, sizeof(v->why_buf), "%s", why ? why : "may write");
        v->why = v->why_buf;
    }
    v->write = true;
}

/* The configured function lists as the classifier takes them, per thread,
 * made again when the config changes (its generation). */
#define ROUTER_MAX_LISTED 64
static _Thread_local struct {
    uint64_t generation;
    char *text[2]; /* copies of the two lists, cut at the commas */
    const char *names[2][ROUTER_MAX_LISTED];
    struct classify_rw_functions fns;
} tl_fns;

static int split_list(char *text, const char **names)
{
    int n = 0;
    char *save = NULL;
    for (char *t = strtok_r(text, ", \t", &save); t && n < ROUTER_MAX_LISTED;
         t = strtok_r(NULL, ", \t", &save))
        names[n++] = t;
    return n;
}

static const struct classify_rw_functions *router_functions(void)
{
    const struct config *cfg = g_pooler.cfg;
    if (tl_fns.generation == cfg->generation)
        return &tl_fns.fns;
    free(tl_fns.text[0]);
    free(tl_fns.text[1]);
    tl_fns.text[0] = strdup(cfg->replica_write_functions);
    tl_fns.text[1] = strdup(cfg->replica_read_functions);
    if (!tl_fns.text[0] || !tl_fns.text[1])
        abort();
    tl_fns.fns.write = tl_fns.names[0];
    tl_fns.fns.n_write = split_list(tl_fns.text[0], tl_fns.names[0]);
    tl_fns.fns.read = tl_fns.names[1];
    tl_fns.fns.n_read = split_list(tl_fns.text[1], tl_fns.names[1]);
    tl_fns.fns.strict = strcmp(cfg->replica_function_check, "list") != 0;
    tl_fns.generation = cfg->generation;
    return &tl_fns.fns;
}

static void rc_thread_done(void);

void router_thread_done(void)
{
    rc_thread_done();
    ryw_thread_done();
    free(tl_fns.text[0]);
    free(tl_fns.text[1]);
    memset(&tl_fns, 0, sizeof(tl_fns));
    classify_rw_thread_done();
}

/* pg_proc's answer for a function of the database being routed to. */
struct volatility_ask {
    struct database *db;
    int64_t now;
};

static char router_volatility(const char *name, void *arg)
{
    const struct volatility_ask *a = arg;
    return volatility_get(a->db, name, a->now);
}

/* The value of a session setting c made (at startup or by SET; c->extras
 * holds them as "SELECT pg_catalog.set_config('name', 'value', false);"
 * from the startup packet and "SET name = 'value'" as the client wrote
 * them), or NULL. */
static const char *setting_of(const struct client *c, const char *name, size_t *len)
{
    const char *x = c->extras;
    if (!x)
        return NULL;
    char key[2][112];
    int k[2] = {snprintf(key[0], sizeof(key[0]), "set_config('%s', '", name),
                snprintf(key[1], sizeof(key[1]), "SET %s = '", name)};
    const char *p = NULL;
    for (int i = 0; i < 2 && !p; i++) {
        p = k[i] > 0 && (size_t)k[i] < sizeof(key[i]) ? strstr(x, key[i]) : NULL;
        if (p)
            p += k[i];
    }
    if (!p)
        return NULL;
    const char *q = strchr(p, '\'');
    *len = q ? (size_t)(q - p) : strlen(p);
    return p;
}

/* Whether c's transactions are REPEATABLE READ or SERIALIZABLE unless they
 * say otherwise (default_transaction_isolation). */
static bool session_isolation_strict(const struct client *c)
{
    size_t n;
    const char *v = setting_of(c, "default_transaction_isolation", &n);
    return v && (!strncasecmp(v, "repeatable", n < 10 ? n : 10) ||
                 !strncasecmp(v, "serializable", n < 12 ? n : 12));
}

/* Whether a statement's text begins with keyword kw (after blanks and
 * comments). */
static bool starts_with_keyword(const char *p, const char *end, const char *kw)
{
    for (;;) {
        while (p < end && strchr(" \t\r\n\f", *p))
            p++;
        if (end - p >= 2 && p[0] == '-' && p[1] == '-') {
            while (p < end && !sql_newline(*p))
                p++;
            continue;
        }
        if (end - p >= 2 && p[0] == '/' && p[1] == '*') {
            const char *z = p + 2;
            while (z + 1 < end && !(z[0] == '*' && z[1] == '/'))
                z++;
            p = z + 2 < end ? z + 2 : end;
            continue;
        }
        break;
    }
    size_t n = strlen(kw);
    return (size_t)(end - p) >= n && !strncasecmp(p, kw, n) &&
           ((size_t)(end - p) == n || !(isalnum((unsigned char)p[n]) || p[n] == '_'));
}

/* Transaction control and SET LOCAL of one statement (text t, len n). */
static void verdict_txn(struct verdict *v, struct client *c, const struct classify_rw_stmt *st,
                        const char *t, uint32_t n)
{
    switch (st->txn) {
    case CRW_TXN_NONE:
        if (st->set_local) {
            if (v->n_set_local == VERDICT_MAX_SET_LOCAL) {
                verdict_write(v, "too many SET LOCAL to follow");
                return;
            }
            v->set_local[v->n_set_local] = t;
            v->set_local_len[v->n_set_local++] = n;
        } else if (starts_with_keyword(t, t + n, "declare")) {
            /* A cursor would not follow its transaction to the primary. */
            verdict_write(v, "cursor");
        }
        return;
    case CRW_TXN_BEGIN:
        if (st->isolation >= CRW_ISO_REPEATABLE_READ ||
            (st->isolation == CRW_ISO_UNSAID && session_isolation_strict(c))) {
            verdict_write(v, "REPEATABLE READ or SERIALIZABLE transaction");
            return;
        }
        v->begin = t;
        v->begin_len = n;
        v->begin_read_only = st->read_only == 1;
        v->begin_is_start = starts_with_keyword(t, t + n, "start");
        v->ends_after_begin = false;
        v->n_set_local = 0; /* those before it were outside it */
        return;
    case CRW_TXN_COMMIT:
    case CRW_TXN_ROLLBACK:
        v->end = st->txn;
        v->ends_after_begin = v->begin != NULL;
        return;
    case CRW_TXN_SET_TRANSACTION:
        if (st->isolation >= CRW_ISO_REPEATABLE_READ)
            v->set_transaction_strict = true;
        if (st->read_only == 1)
            v->begin_read_only = true;
        return;
    case CRW_TXN_SAVEPOINT:
        verdict_write(v, "savepoint");
        return;
    case CRW_TXN_PREPARED:
        verdict_write(v, "two-phase commit");
        return;
    }
}

/* One statement text (NUL-terminated at sql[len]) of c's request: may its
 * statements run on a replica of c's database? A function whose volatility
 * is not known yet is a write (router_volatility() asks pg_proc
 * meanwhile); transaction control is noted for the router's transaction
 * rules. */
static void verdict_add(struct verdict *v, struct client *c, const char *sql, size_t len)
{
    struct database *db = c->pool->db;
    const struct classify_rw_result *r = classify_rw_cached(sql, len);
    if (r->truncated || r->parse_error)
        v->txn_unknown = true;
    for (int i = 0; i < r->n; i++) {
        const struct classify_rw_stmt *st = &r->stmts[i];
        v->copy_in |= st->copy_in;
        if (st->txn == CRW_TXN_BEGIN)
            v->txn_after = 1;
        else if (st->txn == CRW_TXN_COMMIT || st->txn == CRW_TXN_ROLLBACK ||
                 st->txn == CRW_TXN_PREPARED)
            v->txn_after = 0;
    }
    if (r->hint != CRW_HINT_NONE)
        v->hint = r->hint;
    struct classify_rw_decision d;
    enum classify_rw_verdict cv = classify_rw_resolve(r, router_functions(), &d);
    if (cv == CRW_LOOKUP) {
        struct volatility_ask ask = {db, worker_now(c->s.worker)};
        cv = classify_rw_resolve_lookup(&d, router_volatility, &ask);
    }
    if (cv != CRW_READ) {
        verdict_write(v, d.reason ? d.reason : "may write");
        return;
    }
    if (r->pins || r->whole_txn_primary) {
        verdict_write(v, r->pin_reason ? r->pin_reason : "session state");
        return;
    }
    for (int i = 0; i < r->n && !v->write; i++) {
        const struct classify_rw_stmt *st = &r->stmts[i];
        uint32_t off = st->off < len ? st->off : (uint32_t)len;
        uint32_t n = st->len && st->len <= len - off ? st->len : (uint32_t)(len - off);
        verdict_txn(v, c, st, sql + off, n);
    }
    v->n_stmts += r->n;
}

/* A C string inside [p, end), or NULL. */
static const char *cstr(const uint8_t *p, const uint8_t *end)
{
    const uint8_t *z = p < end ? memchr(p, 0, (size_t)(end - p)) : NULL;
    return z ? (const char *)p : NULL;
}

/* The Query at the head of c's buffer, whole. */
static void verdict_of_query(struct verdict *v, struct client *c, const struct stream_msg *m)
{
    const uint8_t *end = m->data + m->len;
    const char *sql = cstr(m->data + 5, end);
    if (!sql) {
        verdict_write(v, "malformed Query");
        return;
    }
    verdict_add(v, c, sql, strlen(sql));
}

/* The extended-protocol batch at the head of c's buffer, up to its Sync. */
static void verdict_of_batch(struct verdict *v, struct client *c)
{
    bool unnamed_parsed = false, executes = false;
    uint32_t off = 0;
    for (int i = 0; i < ROUTER_BATCH_MAX; i++) {
        struct stream_msg m;
        if (stream_msg_at(&c->s, off, &m) != STREAM_MSG_OK) {
            verdict_write(v, "batch not all buffered");
            v->txn_unknown = true;
            return;
        }
        const uint8_t *end = m.data + m.len;
        switch (m.type) {
        case 'P': {
            const char *name = cstr(m.data + 5, end);
            const char *sql = name ? cstr((const uint8_t *)name + strlen(name) + 1, end) : NULL;
            if (!sql) {
                verdict_write(v, "malformed Parse");
                return;
            }
            if (!name[0])
                unnamed_parsed = true;
            else
                v->named = true;
            verdict_add(v, c, sql, strlen(sql));
            break;
        }
        case 'B': {
            const char *portal = cstr(m.data + 5, end);
            const char *stmt =
                portal ? cstr((const uint8_t *)portal + strlen(portal) + 1, end) : NULL;
            if (!stmt) {
                verdict_write(v, "malformed Bind");
                return;
            }
            if (!stmt[0]) {
                if (!unnamed_parsed)
                    verdict_write(v, "unnamed statement of an earlier request");
                break;
            }
            v->named = true;
            const char *sql = prepared_client_query(c, stmt);
            if (!sql)
                verdict_write(v, "statement not known to sluice");
            else
                verdict_add(v, c, sql, strlen(sql));
            break;
        }
        case 'E':
            executes = true;
            break;
        case 'D':
        case 'C':
            break;
        case 'S':
            v->whole = true;
            return;
        case 'H':
            /* The client waits for answers before it sends the rest, which
             * goes where this goes. Safe only when nothing runs before the
             * Flush: statements prepared and described (asyncpg's
             * prepare), whose Bind and Execute follow. */
            if (executes)
                verdict_write(v, "batch ended by Flush");
            v->txn_unknown = true; /* the rest comes later */
            return;
        default:
            verdict_write(v, "function call or other message");
            v->txn_unknown = true;
            return;
        }
        if (v->write && v->hint != CRW_HINT_REPLICA && !v->all) {
            v->txn_unknown = true;
            return; /* decided; a replica hint needs the whole batch to refuse it */
        }
        off += m.len;
    }
    verdict_write(v, "batch too long");
    v->txn_unknown = true;
}

/* The request at the head of c's buffer. */
static struct verdict verdict_of_request(struct client *c)
{
    struct verdict v = {.hint = CRW_HINT_NONE, .txn_after = -1, .all = ryw_mode() != RYW_OFF};
    struct stream_msg m;
    if (stream_next_msg(&c->s, STREAM_MSG_HEAD, &m) != STREAM_MSG_OK) {
        verdict_write(&v, "no message");
        v.txn_unknown = true;
        return v;
    }
    if (m.type != 'Q' && m.type != 'P' && m.type != 'B') {
        verdict_write(&v, m.type == 'F' ? "function call" : "not a query");
        v.txn_unknown = true;
        return v;
    }
    if (m.len > ROUTER_CLASSIFY_MAX) {
        verdict_write(&v, "too long to classify");
        v.txn_unknown = true;
        return v;
    }
    if (stream_msg_whole(&c->s, &m) != STREAM_MSG_OK) {
        v.wait = true;
        return v;
    }
    v.query = v.whole = m.type == 'Q';
    if (m.type == 'Q')
        verdict_of_query(&v, c, &m);
    else
        verdict_of_batch(&v, c);
    return v;
}

/* Consumes c's request at the head of its buffer (a Query, or a batch
 * through its Sync, all buffered), to be answered here. */
static void consume_request(struct client *c)
{
    struct stream_msg m;
    while (stream_next_msg(&c->s, STREAM_MSG_WHOLE, &m) == STREAM_MSG_OK) {
        stream_consume_msg(&c->s, m.len);
        if (m.type == 'Q' || m.type == 'S')
            break;
    }
}

/* A write hinted to a replica: refused, as the client asked for a place
 * where it cannot run. Only a request all buffered through its Query or
 * Sync (v.whole) is: its ReadyForQuery answers that Query or Sync. Part of
 * a batch (the rest on its way, or ended by Flush) goes to the primary
 * with the rest, as anything the router cannot decide on: refused, the
 * rest would go there as a request of its own and the client get two
 * ReadyForQuery for one Sync. */
static void refuse(struct client *c, const char *why)
{
    consume_request(c);
    uint8_t buf[600];
    struct proto_writer wr;
    proto_writer_init(&wr, buf, sizeof(buf));
    proto_build_error(&wr, false, "25006",
                      "sluice: a statement that may write cannot run on a replica (%s); drop "
                      "the /* sluice:replica */ hint",
                      why ? why : "write");
    proto_build_ready(&wr, router_txn_virtual(c) ? 'T' : 'I');
    stream_write(&c->s, wr.buf, wr.len);
    stream_uncork(&c->s);
}

/* A BEGIN, COMMIT or ROLLBACK answered here, a Query (its tag, then
 * ReadyForQuery with status st) or an extended batch of unnamed statements
 * (each message's answer: ParseComplete, BindComplete, NoData, the tag,
 * CloseComplete, and ReadyForQuery at its Sync). */
static void answer_txn(struct client *c, const char *tag, char st)
{
    uint8_t buf[256];
    struct proto_writer wr;
    proto_writer_init(&wr, buf, sizeof(buf));
    struct stream_msg m;
    while (stream_next_msg(&c->s, STREAM_MSG_WHOLE, &m) == STREAM_MSG_OK) {
        stream_consume_msg(&c->s, m.len);
        uint8_t t = m.type;
        if (t == 'P' || t == 'B' || t == 'C') {
            proto_begin(&wr, t == 'P' ? '1' : t == 'B' ? '2' : '3');
            proto_end(&wr);
        } else if (t == 'D') {
            if (m.len > 5 && m.data[5] == 'S') { /* a statement's: no parameters */
                proto_begin(&wr, 't');
                proto_add16(&wr, 0);
                proto_end(&wr);
            }
            proto_begin(&wr, 'n');
            proto_end(&wr);
        } else if (t == 'E' || t == 'Q') {
            proto_build_command_complete(&wr, tag);
        }
        if (t == 'Q' || t == 'S') {
            proto_build_ready(&wr, st);
            break;
        }
    }
    stream_write(&c->s, wr.buf, wr.len);
    stream_uncork(&c->s);
    c->last_activity = worker_now(c->s.worker);
}

/* Whether v, a request of one statement, can be answered here: a Query, or
 * an extended batch of unnamed statements all buffered (nothing the
 * server would have to know later). */
static bool answerable(const struct verdict *v)
{
    return v->n_stmts == 1 && (v->query || (v->whole && !v->named));
}

/* Session mode: the whole session goes where its first request goes, and
 * that is a replica only for a client that said it only reads. */
static bool session_read_only(const struct client *c)
{
    size_t n;
    const char *v = setting_of(c, "default_transaction_read_only", &n);
    return v && ((n == 2 && !strncasecmp(v, "on", 2)) || (n == 4 && !strncasecmp(v, "true", 4)) ||
                 (n == 3 && !strncasecmp(v, "yes", 3)) || (n == 1 && v[0] == '1'));
}

static struct router_decision decided(enum router_target t, int ep, const char *why)
{
    struct router_decision d = {.target = t, .endpoint = ep, .why = why};
    return d;
}

/* A request that may write: the primary, and its position is read when it
 * ends (read-your-writes). */
static struct router_decision to_write(struct client *c, const char *why)
{
    if (ryw_mode() != RYW_OFF)
        router_client_of(c)->ryw.wrote = true;
    return decided(ROUTE_PRIMARY, 0, why);
}

/* A read sent to the primary: if more follows on that link (a
 * transaction), it may write (read-your-writes watches it). */
static struct router_decision read_on_primary(struct client *c, const char *why)
{
    if (ryw_mode() != RYW_OFF)
        router_client_of(c)->ryw.watch = true;
    atomic_fetch_add_explicit(&c->pool->db->endpoints[0].reads, 1, memory_order_relaxed);
    return decided(ROUTE_PRIMARY, 0, why);
}

/* A replica for a read, or the primary when none may take it: one that has
 * replayed what the read must see (read-your-writes). */
static struct router_decision to_replica(struct client *c, const char *why)
{
    struct database *db = c->pool->db;
    int64_t now = worker_now(c->s.worker);
    uint64_t floor = 0;
    struct ryw_client *rc = c->route ? &c->route->ryw : NULL;
    if (!ryw_read_floor(c, rc, now, &floor)) {
        atomic_fetch_add_explicit(&ryw_wait_stats.floor_primary, 1, memory_order_relaxed);
        return read_on_primary(c, "read-your-writes: a write's position is being read");
    }
    int ep = replicas_pick(db, g_pooler.cfg, now, floor);
    if (ep < 0 && floor) {
        /* Replicas there, behind: wait for one to catch up, a while. */
        struct ryw_client *w = &router_client_of(c)->ryw;
        if (replicas_any_usable(db, now) && ryw_wait(c, w, now, floor))
            return decided(ROUTE_WAIT, c->pool->ep, "read-your-writes: waiting for a replica");
        if (!w->wait_start)
            atomic_fetch_add_explicit(&ryw_wait_stats.floor_primary, 1, memory_order_relaxed);
        ryw_wait_end(c, w, now, false);
        return read_on_primary(c, "read-your-writes: no replica has replayed far enough");
    }
    if (floor)
        atomic_fetch_add_explicit(&ryw_wait_stats.floor_reads, 1, memory_order_relaxed);
    if (rc)
        ryw_wait_end(c, rc, now, ep > 0);
    if (ep < 0)
        return read_on_primary(c, "read, no replica available");
    /* Every endpoint counts the reads it gets (SHOW REPLICAS), the
     * primary's too (primary_reads, or no replica may take them). */
    atomic_fetch_add_explicit(&db->endpoints[ep].reads, 1, memory_order_relaxed);
    if (ep == 0 && ryw_mode() != RYW_OFF)
        router_client_of(c)->ryw.watch = true;
    if (ep > 0)
        atomic_fetch_add_explicit(&n_replica_reads, 1, memory_order_relaxed);
    return decided(ep ? ROUTE_REPLICA : ROUTE_PRIMARY, ep, why);
}

/* ---- the transaction the router follows --------------------------------------- */

#define ROUTER_CLIENT_CACHE 64

/* Routing states not in use, per thread (a client stays on its worker). */
static _Thread_local struct {
    struct router_client *list;
    int n;
} tl_rc;

struct router_client *router_client_of(struct client *c)
{
    if (c->route)
        return c->route;
    struct router_client *rc = tl_rc.list;
    if (rc) {
        tl_rc.list = rc->next_free;
        tl_rc.n--;
    } else {
        rc = calloc(1, sizeof(*rc));
        if (!rc)
            abort();
    }
    char *replay = rc->replay;
    uint32_t cap = rc->replay_cap;
    memset(rc, 0, sizeof(*rc));
    rc->replay = replay; /* its room is kept */
    rc->replay_cap = cap;
    c->route = rc;
    return rc;
}

static void rc_put(struct client *c)
{
    struct router_client *rc = c->route;
    c->route = NULL;
    if (tl_rc.n < ROUTER_CLIENT_CACHE && rc->replay_cap <= 4096) {
        rc->next_free = tl_rc.list;
        tl_rc.list = rc;
        tl_rc.n++;
        return;
    }
    free(rc->replay);
    free(rc);
}

static void txn_forget(struct router_client *rc)
{
    rc->txn = RTX_NONE;
    rc->by_client = rc->read_only = rc->opening = rc->move = rc->replay_bad = false;
    rc->replay_len = 0;
}

/* Gives c's state back when nothing in it is needed any more. */
static void rc_put_if_idle(struct client *c)
{
    const struct router_client *rc = c->route;
    if (rc && rc->txn == RTX_NONE && !rc->retry_buf && !rc->retried &&
        !ryw_client_keeps(&rc->ryw, ryw_mode()))
        rc_put(c);
}

void router_client_free(struct client *c)
{
    ryw_wait_forget(c); /* even without c->route: see ryw_wait_forget() */
    struct router_client *rc = c->route;
    if (!rc)
        return;
    if (rc->retry_buf)
        iobuf_put(&c->s.worker->bufs, rc->retry_buf);
    rc->retry_buf = NULL;
    rc_put(c);
}

static void rc_thread_done(void)
{
    while (tl_rc.list) {
        struct router_client *rc = tl_rc.list;
        tl_rc.list = rc->next_free;
        free(rc->replay);
        free(rc);
    }
    tl_rc.n = 0;
}

/* Appends the statement t (n bytes) and a ';' to what opens the
 * transaction again. */
static void replay_add(struct router_client *rc, const char *t, uint32_t n)
{
    uint32_t need = rc->replay_len + n + 2;
    if (need > rc->replay_cap) {
        uint32_t cap = rc->replay_cap ? rc->replay_cap : 128;
        while (cap < need)
            cap *= 2;
        char *p = realloc(rc->replay, cap);
        if (!p)
            abort();
        rc->replay = p;
        rc->replay_cap = cap;
    }
    memcpy(rc->replay + rc->replay_len, t, n);
    rc->replay_len += n;
    rc->replay[rc->replay_len++] = ';';
    rc->replay[rc->replay_len] = '\0';
}

/* The SET LOCALs of v, to be replayed after the BEGIN when it moves. */
static void replay_set_locals(struct router_client *rc, const struct verdict *v)
{
    for (int i = 0; i < v->n_set_local; i++)
        replay_add(rc, v->set_local[i], v->set_local_len[i]);
}

/* At most this much is kept to open a transaction again: a transaction on
 * a replica whose SET LOCALs would pass it moves to the primary first. */
#define ROUTER_REPLAY_MAX (64 * 1024)

static bool replay_fits(const struct router_client *rc, const struct verdict *v)
{
    size_t n = rc->replay_len;
    for (int i = 0; i < v->n_set_local; i++)
        n += v->set_local_len[i] + 1;
    return n <= ROUTER_REPLAY_MAX;
}

bool router_txn_virtual(const struct client *c)
{
    return c->route && c->route->txn == RTX_VIRTUAL;
}

const char *router_link_replay(struct client *c, const struct server *sv)
{
    struct router_client *rc = c->route;
    return rc && rc->opening && rc->replay_len ? rc->replay : NULL;
}

bool router_link_opened(struct client *c, struct server *sv)
{
    struct router_client *rc = c->route;
    rc->opening = false;
    if (sv->xact_status != 'T')
        return false;
    if (sv->pool->ep != 0) {
        rc->txn = RTX_REPLICA;
        rc->by_client = false;
    } else {
        txn_forget(rc); /* on the primary it needs nothing more of the router */
    }
    return true;
}

bool router_move_due(const struct client *c, const struct server *sv)
{
    struct router_client *rc = c->route;
    if (!rc->move || rc->txn != RTX_REPLICA || request_busy(c))
        return false;
    if (sv->xact_status == 'T')
        return true;
    /* It failed there (or ended): the request held runs there and gets
     * the answer any server would give. */
    rc->move = false;
    return false;
}

void router_txn_moved(struct client *c)
{
    struct router_client *rc = c->route;
    rc->txn = RTX_MOVED;
    rc->move = false;
}

void router_link_lost(struct client *c)
{
    struct router_client *rc = c->route;
    if (rc->txn == RTX_REPLICA) {
        if (rc->by_client)
            txn_forget(rc); /* the client's BEGIN goes again with its request */
        else
            rc->txn = RTX_VIRTUAL;
    }
    rc->move = false;
}

void router_unlinked(struct client *c)
{
    struct router_client *rc = c->route;
    if (!rc)
        return;
    if (rc->txn == RTX_REPLICA)
        txn_forget(rc); /* its server went back: the transaction ended there */
    rc->move = false;
    rc->ryw.wrote = rc->ryw.watch = rc->ryw.ride = false;
    rc_put_if_idle(c);
}

/* A BEGIN alone, in transaction pooling: answered here; the transaction
 * opens where its first statement goes. */
static struct router_decision begin_virtual(struct client *c, const struct verdict *v)
{
    struct router_client *rc = router_client_of(c);
    txn_forget(rc);
    rc->txn = RTX_VIRTUAL;
    rc->read_only = v->begin_read_only;
    replay_add(rc, v->begin, v->begin_len);
    answer_txn(c, v->begin_is_start ? "START TRANSACTION" : "BEGIN", 'T');
    return decided(ROUTE_ANSWERED, c->pool->ep, "BEGIN answered here");
}

/* The first request of a transaction no server has yet. */
static struct router_decision route_virtual(struct client *c, struct router_client *rc,
                                            const struct verdict *v)
{
    if (answerable(v) && v->end && !v->write) {
        txn_forget(rc);
        rc_put_if_idle(c);
        answer_txn(c, v->end == CRW_TXN_COMMIT ? "COMMIT" : "ROLLBACK", 'I');
        return decided(ROUTE_ANSWERED, c->pool->ep, "empty transaction ended here");
    }
    rc->opening = true;
    if (rc->read_only)
        return to_replica(c, "READ ONLY transaction");
    if (v->write)
        return to_write(c, v->why);
    if (v->hint == CRW_HINT_PRIMARY || v->set_transaction_strict)
        return read_on_primary(c, v->hint == CRW_HINT_PRIMARY ? "hint" : "isolation");
    struct router_decision d = to_replica(c, "transaction's first read");
    if (d.target == ROUTE_REPLICA)
        replay_set_locals(rc, v);
    return d;
}

/* A read that opens a transaction on the replica it goes to (its own BEGIN,
 * a JDBC batch's say): followed from there. */
static void begin_on_replica(struct client *c, const struct verdict *v)
{
    if (!v->begin || v->ends_after_begin)
        return;
    struct router_client *rc = router_client_of(c);
    txn_forget(rc);
    rc->txn = RTX_REPLICA;
    rc->by_client = true;
    rc->read_only = v->begin_read_only;
    replay_add(rc, v->begin, v->begin_len);
    replay_set_locals(rc, v);
}

/* Whether the request of verdict v, sent while a transaction is open
 * (in_txn) or not, surely ends without one open: its Query or Sync then
 * ends a transaction (or statement) that wrote, and the read of its
 * position rides behind it (ryw_ride()). Not for a COPY FROM STDIN: the
 * server reads COPY data after it. */
static bool ends_txn(const struct verdict *v, bool in_txn)
{
    if (v->wait || v->txn_unknown || v->copy_in)
        return false;
    return v->txn_after == 0 || (v->txn_after < 0 && !in_txn);
}

static struct router_decision route(struct client *c, const struct verdict *v, enum router_txn txn);

/* The result cache's part (cache.h): a hit is answered, a miss to be kept
 * runs on the primary. Not inside a transaction answered here, nor for a
 * client whose reads must be fresher than a token says (the cache does
 * not know its answers' positions). */
static bool route_cache(struct client *c, struct router_decision *d)
{
    const struct router_client *rc = c->route;
    if (rc && (rc->txn != RTX_NONE || rc->ryw.min_lsn || rc->ryw.wait_plain))
        return false;
    enum cache_route cr = cache_route(c);
    if (cr == CACHE_ROUTE_HIT)
        *d = decided(ROUTE_ANSWERED, c->pool->ep, "answered from the result cache");
    else if (cr == CACHE_ROUTE_FILL)
        *d = read_on_primary(c, "result cache miss: its answer is kept");
    else if (cr == CACHE_ROUTE_WAIT)
        *d = decided(ROUTE_WAIT, c->pool->ep, "result cache: waiting for another's fill");
    return cr != CACHE_ROUTE_NONE;
}

struct router_decision router_route(struct client *c, struct request *r)
{
    (void)r;
    struct database *db = c->pool->db;
    struct router_decision cd;
    if (cache_on() && route_cache(c, &cd))
        return cd;
    if (!replicas_split_on(db, g_pooler.cfg))
        return decided(ROUTE_PRIMARY, 0, "read_write_split off");
    enum pool_mode mode = pool_mode_of(c->pool);
    if (mode == POOL_MODE_SESSION)
        return session_read_only(c) ? to_replica(c, "read-only session")
                                    : decided(ROUTE_PRIMARY, 0, "session mode");
    struct router_client *rc = c->route;
    enum router_txn txn = rc ? rc->txn : RTX_NONE;
    if (rc && rc->ryw.wait_plain && txn == RTX_NONE)
        return to_replica(c, "read"); /* a plain read waiting for a replica: as decided */
    if (ryw_vars_query(c, txn == RTX_NONE ? 'I' : 'T'))
        return decided(ROUTE_ANSWERED, c->pool->ep, "sluice.* setting answered here");
    struct verdict v = verdict_of_request(c);
    if (v.wait)
        return decided(ROUTE_WAIT, c->pool->ep, "more bytes");
    struct router_decision d = route(c, &v, txn);
    rc = c->route;
    if (d.target == ROUTE_PRIMARY && rc && rc->ryw.wrote)
        rc->ryw.ride = ends_txn(&v, txn == RTX_VIRTUAL || txn == RTX_MOVED);
    return d;
}

static struct router_decision route(struct client *c, const struct verdict *v, enum router_txn txn)
{
    struct router_client *rc = c->route;
    enum pool_mode mode = pool_mode_of(c->pool);
    if (v->write && v->hint == CRW_HINT_REPLICA && v->whole) {
        refuse(c, v->why);
        return decided(ROUTE_ANSWERED, c->pool->ep, "write hinted to a replica");
    }
    if (txn == RTX_MOVED) {
        rc->opening = true;
        return to_write(c, "transaction moved to the primary");
    }
    if (txn == RTX_VIRTUAL)
        return route_virtual(c, rc, v);
    if (answerable(v) && v->begin && !v->write && v->hint != CRW_HINT_PRIMARY &&
        mode == POOL_MODE_TRANSACTION)
        return begin_virtual(c, v);
    if (v->write)
        return to_write(c, v->why);
    if (v->hint == CRW_HINT_PRIMARY || v->set_transaction_strict)
        return read_on_primary(c, "hint");
    struct router_decision d = to_replica(c, "read");
    if (d.target == ROUTE_REPLICA)
        begin_on_replica(c, v);
    else if (d.target == ROUTE_WAIT && txn == RTX_NONE && !v->begin)
        c->route->ryw.wait_plain = true;
    return d;
}

/* ---- requests of a client linked to a replica ----------------------------------- */

/* c is linked to a replica's server and a new request begins. A read goes
 * on there. Anything else waits: outside a transaction until that server
 * goes back (its answers done), then the dispatcher routes it; inside one
 * until the transaction moves to the primary (relay.c ends its replica
 * part, router_route() opens it there). A READ ONLY transaction, and one
 * that failed on the replica, keep everything there: the replica answers
 * as any server would. */
static int64_t router_on_request_begin(struct client *c, uint8_t type)
{
    if (!c->server || !c->track)
        return 0;
    if (type == 'Q' && !request_busy(c) && replicas_split_on(c->pool->db, g_pooler.cfg) &&
        ryw_vars_query(c, c->server->xact_status))
        return REQUEST_ANSWERED;
    if (c->pool->ep == 0) {
        /* A link to the primary that began with a read: what follows on
         * it may write (read-your-writes). */
        struct router_client *rc = c->route;
        if (rc && (rc->ryw.watch || rc->ryw.wrote)) {
            struct verdict v = verdict_of_request(c);
            if (v.wait || v.write)
                rc->ryw.wrote = true; /* not all here: taken as a write */
            bool in_txn = request_busy(c) || c->server->xact_status != 'I';
            rc->ryw.ride = rc->ryw.wrote && ends_txn(&v, in_txn);
        }
        return 0;
    }
    struct router_client *rc = c->route;
    bool in_txn = rc && rc->txn == RTX_REPLICA;
    if (in_txn && rc->read_only)
        return 0;
    struct verdict v = verdict_of_request(c);
    if (!v.wait && !v.write && v.hint != CRW_HINT_PRIMARY && !v.set_transaction_strict &&
        (!in_txn || replay_fits(rc, &v))) {
        if (in_txn)
            replay_set_locals(rc, &v);
        else
            begin_on_replica(c, &v);
        return 0;
    }
    if (!v.wait && in_txn && c->server->xact_status == 'E' && !request_busy(c))
        return 0;
    if (!v.wait) {
        atomic_fetch_add_explicit(&n_held, 1, memory_order_relaxed);
        if (in_txn)
            rc->move = true;
    }
    log_debug("C-%p: request held behind its replica's answers: %s", (void *)c,
              v.wait  ? "more bytes"
              : v.why ? v.why
                      : "hint");
    return REQUEST_WAIT;
}

static const struct request_observer router_observer = {
    .name = "router",
    .tracked_only = true,
    .on_request_begin = router_on_request_begin,
    .on_server_msg = ryw_on_server_msg, /* the entries it owns: read-your-writes' */
};

void router_init(void)
{
    ryw_set_owner(request_observe(&router_observer));
}
