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
#include <string.h>
#include <strings.h>

#include "classify_rw.h"
#include "log.h"
#include "pool.h"
#include "prepared.h"
#include "proto.h"
#include "replicas.h"
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

/* What the statements of a request add up to. */
struct verdict {
    bool write;      /* at least one may write (or is not understood) */
    bool wait;       /* the first message is not all buffered: ask again */
    int hint;        /* CRW hint of a comment (classify_rw.h), the last one seen */
    const char *why; /* the first reason it is a write (why_buf, or static) */
    char why_buf[96];
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

void router_thread_done(void)
{
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

/* May the statements of sql (NUL-terminated at sql[len]) run on a replica
 * of db? Transaction control, pinning and whole-transaction statements go
 * to the primary, as does a function whose volatility is not known yet
 * (router_volatility() asks pg_proc meanwhile). */
static bool statement_is_read(struct client *c, const char *sql, size_t len, int *hint,
                              const char **why)
{
    struct database *db = c->pool->db;
    const struct classify_rw_result *r = classify_rw_cached(sql, len);
    *hint = r->hint;
    struct classify_rw_decision d;
    enum classify_rw_verdict v = classify_rw_resolve(r, router_functions(), &d);
    if (v == CRW_LOOKUP) {
        struct volatility_ask ask = {db, worker_now(c->s.worker)};
        v = classify_rw_resolve_lookup(&d, router_volatility, &ask);
    }
    if (v != CRW_READ) {
        *why = d.reason ? d.reason : "may write";
        return false;
    }
    if (r->pins || r->whole_txn_primary) {
        *why = r->pin_reason ? r->pin_reason : "session state";
        return false;
    }
    for (int i = 0; i < r->n; i++) {
        if (r->stmts[i].txn != CRW_TXN_NONE) {
            *why = "transaction control";
            return false;
        }
    }
    return true;
}

/* One statement text (NUL-terminated at sql[len]) of c's request. */
static void verdict_add(struct verdict *v, struct client *c, const char *sql, size_t len)
{
    const char *why = NULL;
    int hint = CRW_HINT_NONE;
    if (!statement_is_read(c, sql, len, &hint, &why))
        verdict_write(v, why);
    if (hint != CRW_HINT_NONE)
        v->hint = hint;
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
    bool unnamed_parsed = false;
    uint32_t off = 0;
    for (int i = 0; i < ROUTER_BATCH_MAX; i++) {
        struct stream_msg m;
        if (stream_msg_at(&c->s, off, &m) != STREAM_MSG_OK) {
            verdict_write(v, "batch not all buffered");
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
            const char *sql = prepared_client_query(c, stmt);
            if (!sql)
                verdict_write(v, "statement not known to sluice");
            else
                verdict_add(v, c, sql, strlen(sql));
            break;
        }
        case 'D':
        case 'E':
        case 'C':
            break;
        case 'S':
            return;
        case 'H':
            verdict_write(v, "batch ended by Flush");
            return;
        default:
            verdict_write(v, "function call or other message");
            return;
        }
        if (v->write && v->hint != CRW_HINT_REPLICA)
            return; /* decided; a replica hint needs the whole batch to refuse it */
        off += m.len;
    }
    verdict_write(v, "batch too long");
}

/* The request at the head of c's buffer. */
static struct verdict verdict_of_request(struct client *c)
{
    struct verdict v = {.hint = CRW_HINT_NONE};
    struct stream_msg m;
    if (stream_next_msg(&c->s, STREAM_MSG_HEAD, &m) != STREAM_MSG_OK) {
        verdict_write(&v, "no message");
        return v;
    }
    if (m.type != 'Q' && m.type != 'P' && m.type != 'B') {
        verdict_write(&v, m.type == 'F' ? "function call" : "not a query");
        return v;
    }
    if (m.len > ROUTER_CLASSIFY_MAX) {
        verdict_write(&v, "too long to classify");
        return v;
    }
    if (stream_msg_whole(&c->s, &m) != STREAM_MSG_OK) {
        v.wait = true;
        return v;
    }
    if (m.type == 'Q')
        verdict_of_query(&v, c, &m);
    else
        verdict_of_batch(&v, c);
    return v;
}

/* A write hinted to a replica: refused, as the client asked for a place
 * where it cannot run. The request (a Query, or a batch through its Sync,
 * all buffered) is consumed and answered without a server. */
static void refuse(struct client *c, const char *why)
{
    struct stream_msg m;
    while (stream_next_msg(&c->s, STREAM_MSG_WHOLE, &m) == STREAM_MSG_OK) {
        stream_consume_msg(&c->s, m.len);
        if (m.type == 'Q' || m.type == 'S')
            break;
    }
    uint8_t buf[600];
    struct proto_writer wr;
    proto_writer_init(&wr, buf, sizeof(buf));
    proto_build_error(&wr, false, "25006",
                      "sluice: a statement that may write cannot run on a replica (%s); drop "
                      "the /* sluice:replica */ hint",
                      why ? why : "write");
    proto_build_ready(&wr, 'I');
    stream_write(&c->s, wr.buf, wr.len);
    stream_uncork(&c->s);
}

/* Session mode: the whole session goes where its first request goes, and
 * that is a replica only for a client that said it only reads. */
static bool session_read_only(const struct client *c)
{
    const char *x = c->extras;
    const char *k = x ? strstr(x, "SET default_transaction_read_only = '") : NULL;
    if (!k)
        return false;
    k += strlen("SET default_transaction_read_only = '");
    return !strncasecmp(k, "on'", 3) || !strncasecmp(k, "true'", 5) || !strncasecmp(k, "yes'", 4) ||
           !strncmp(k, "1'", 2);
}

static struct router_decision decided(enum router_target t, int ep, const char *why)
{
    struct router_decision d = {.target = t, .endpoint = ep, .why = why};
    return d;
}

/* A replica for a read, or the primary when none may take it. */
static struct router_decision to_replica(struct client *c, const char *why)
{
    struct database *db = c->pool->db;
    int ep = replicas_pick(db, g_pooler.cfg, worker_now(c->s.worker));
    if (ep < 0)
        return decided(ROUTE_PRIMARY, 0, "read, no replica available");
    if (ep > 0) {
        atomic_fetch_add_explicit(&db->endpoints[ep].reads, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&n_replica_reads, 1, memory_order_relaxed);
    }
    return decided(ep ? ROUTE_REPLICA : ROUTE_PRIMARY, ep, why);
}

struct router_decision router_route(struct client *c, struct request *r)
{
    (void)r;
    struct database *db = c->pool->db;
    if (!replicas_split_on(db, g_pooler.cfg))
        return decided(ROUTE_PRIMARY, 0, "read_write_split off");
    if (pool_mode_of(c->pool) == POOL_MODE_SESSION)
        return session_read_only(c) ? to_replica(c, "read-only session")
                                    : decided(ROUTE_PRIMARY, 0, "session mode");
    struct verdict v = verdict_of_request(c);
    if (v.wait)
        return decided(ROUTE_WAIT, c->pool->ep, "more bytes");
    if (v.write && v.hint == CRW_HINT_REPLICA) {
        refuse(c, v.why);
        return decided(ROUTE_ANSWERED, c->pool->ep, "write hinted to a replica");
    }
    if (v.write)
        return decided(ROUTE_PRIMARY, 0, v.why);
    if (v.hint == CRW_HINT_PRIMARY)
        return decided(ROUTE_PRIMARY, 0, "hint");
    return to_replica(c, "read");
}

/* ---- a write behind reads on a replica ------------------------------------- */

/* c is linked to a replica's server and a new request begins: unless it is
 * a read too, it waits until that server goes back (its answers done); the
 * dispatcher then routes it. */
static int64_t router_on_request_begin(struct client *c, uint8_t type)
{
    if (!c->server || c->pool->ep == 0 || !c->track)
        return 0;
    struct verdict v = verdict_of_request(c);
    if (!v.wait && !v.write && v.hint != CRW_HINT_PRIMARY)
        return 0;
    if (!v.wait)
        atomic_fetch_add_explicit(&n_held, 1, memory_order_relaxed);
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
};

void router_init(void)
{
    request_observe(&router_observer);
}
