/* cache_logical.c - the logical decoding consumer of the result cache
 * (cache_logical.h).
 *
 * One connection per database, a chain of steps on worker 0's loop:
 *
 *   connect (replication=database) ─▶ is the publication there?
 *     ─▶ (no, and it is sluice's own) CREATE PUBLICATION ... FOR ALL TABLES
 *     ─▶ CREATE_REPLICATION_SLOT ... TEMPORARY LOGICAL pgoutput
 *     ─▶ START_REPLICATION SLOT ... LOGICAL 0/0 (...) ─▶ CopyBoth: streaming
 *
 * The walsender takes simple-protocol queries only, so the steps are
 * Query messages written here and their answers read here (not
 * server_query.c, which binds through the extended protocol). Any error,
 * a lost connection or a message that makes no sense closes the
 * connection; the database is then in a gap (no caching) until a new
 * slot streams, tried again after 1 s, 2 s, ... 30 s. */
#include "cache_logical.h"

#include <ev.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "cache.h"
#include "commit_gate.h"
#include "config.h"
#include "hash.h"
#include "log.h"
#include "pgoutput.h"
#include "pool.h"
#include "proto.h"
#include "replicas.h"
#include "server.h"
#include "server_query.h"
#include "stream.h"
#include "worker.h"
#include "writes.h"

#define CL_TICK_SEC        0.1
#define CL_STATUS_USEC     1000000         /* a Standby Status Update at least this often */
#define CL_BACKOFF_MIN     1000000         /* the first retry after a failure */
#define CL_BACKOFF_MAX     30000000        /* ... doubling up to this */
#define CL_WHOLE_MAX       (1024u * 1024u) /* larger changes are read by their head only */
#define CL_TXN_MAX         64              /* more relations in one transaction: all of db */
#define CL_OWN_PUBLICATION "sluice_cache"

/* Where a connection is in its chain. */
enum cl_phase {
    CLP_IDLE = 0,   /* no connection: waiting for its next try */
    CLP_CONNECTING, /* logging in */
    CLP_PUB_CHECK,  /* asked whether the publication exists */
    CLP_PUB_CREATE, /* creating sluice's own publication */
    CLP_SLOT,       /* creating the temporary slot */
    CLP_START,      /* START_REPLICATION sent */
    CLP_STREAMING,  /* CopyBoth: the changes come */
};

/* A relation the stream described (its Relation message). */
struct cl_rel {
    uint32_t oid; /* 0: free */
    char nsp[PGOUTPUT_NAME_MAX + 1], name[PGOUTPUT_NAME_MAX + 1];
};

/* One database's consumer. Worker 0's, except the status (under g_lock). */
struct cl_db {
    struct database *db;
    struct server *sv;
    enum cl_phase phase;
    bool gap_open;    /* writes_gap(db, WRITES_LOGICAL, true) told, not closed since */
    bool logged_down; /* the failure was logged (once until it streams again) */
    int64_t next_try, backoff;
    unsigned attempt; /* slots asked for: part of the name */
    /* the answer to the current step */
    bool got_row;
    char error[256];
    /* the stream */
    bool in_txn, status_due;
    uint64_t flushed, wal_end;
    int64_t last_status;
    uint32_t xid; /* the transaction's, from its BEGIN */
    uint32_t txn[CL_TXN_MAX];
    int n_txn;
    bool txn_all;
    struct commit_gate *gate; /* commits wait there until the primary shows them */
    struct cl_rel *rels;      /* open addressing by OID, cap a power of 2 */
    uint32_t rels_cap, rels_n;
    /* [g_lock] for SHOW CACHE and /metrics */
    struct cache_logical_status st;
    struct cl_db *next;
};

static struct cl_db *g_dbs;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER; /* g_dbs' links, each st */
static ev_timer g_tick;
static bool g_running, g_stopping;
static const struct config *g_seen_cfg; /* the config whose databases were looked at */
static char g_instance[16];             /* random, per process: slot names of two hosts differ */

bool cache_logical_on(void)
{
    return g_running;
}

const char *cache_logical_state_str(enum cache_logical_state st)
{
    static const char *const names[] = {"starting", "streaming", "failed"};
    return (unsigned)st < sizeof(names) / sizeof(names[0]) ? names[st] : "?";
}

static const char *phase_str(enum cl_phase p)
{
    static const char *const names[] = {"idle",
                                        "connecting",
                                        "checking publication",
                                        "creating publication",
                                        "creating slot",
                                        "starting stream",
                                        "streaming"};
    return (unsigned)p < sizeof(names) / sizeof(names[0]) ? names[p] : "?";
}

static struct worker *cl_worker(void)
{
    return &g_pooler.workers[0];
}

/* cache_publication as sluice started (a restart setting), or "": sluice's
 * own. */
static char g_publication[64];

static const char *publication(void)
{
    return g_publication[0] ? g_publication : CL_OWN_PUBLICATION;
}

static struct cl_db *cl_of(const struct server *sv)
{
    for (struct cl_db *d = g_dbs; d; d = d->next)
        if (d->sv == sv)
            return d;
    return NULL;
}

static void set_state(struct cl_db *d, enum cache_logical_state st, const char *reason)
{
    pthread_mutex_lock(&g_lock);
    d->st.state = st;
    snprintf(d->st.reason, sizeof(d->st.reason), "%s", reason ? reason : "");
    pthread_mutex_unlock(&g_lock);
}

static void set_positions(struct cl_db *d)
{
    pthread_mutex_lock(&g_lock);
    d->st.flushed = d->flushed;
    d->st.wal_end = d->wal_end;
    d->st.lag_bytes = d->wal_end > d->flushed ? d->wal_end - d->flushed : 0;
    pthread_mutex_unlock(&g_lock);
}

/* ---- the gap ------------------------------------------------------------------ */

static void gap_open(struct cl_db *d)
{
    if (d->gap_open)
        return;
    d->gap_open = true;
    writes_gap(d->db, WRITES_LOGICAL, true);
}

static void gap_close(struct cl_db *d)
{
    if (!d->gap_open)
        return;
    d->gap_open = false;
    writes_gap(d->db, WRITES_LOGICAL, false);
}

/* ---- relations ------------------------------------------------------------------ */

static struct cl_rel *rel_slot(struct cl_rel *v, uint32_t cap, uint32_t oid)
{
    uint32_t i = (oid * 2654435761u) & (cap - 1);
    while (v[i].oid && v[i].oid != oid)
        i = (i + 1) & (cap - 1);
    return &v[i];
}

static const struct cl_rel *rel_find(const struct cl_db *d, uint32_t oid)
{
    if (!d->rels || !oid)
        return NULL;
    const struct cl_rel *r = rel_slot(d->rels, d->rels_cap, oid);
    return r->oid ? r : NULL;
}

static void rel_put(struct cl_db *d, uint32_t oid, const char *nsp, const char *name)
{
    if (!oid)
        return;
    if ((d->rels_n + 1) * 10 > d->rels_cap * 7) {
        uint32_t cap = d->rels_cap ? d->rels_cap * 2 : 64;
        struct cl_rel *v = calloc(cap, sizeof(*v));
        if (!v)
            abort();
        for (uint32_t i = 0; i < d->rels_cap; i++)
            if (d->rels[i].oid)
                *rel_slot(v, cap, d->rels[i].oid) = d->rels[i];
        free(d->rels);
        d->rels = v;
        d->rels_cap = cap;
    }
    struct cl_rel *r = rel_slot(d->rels, d->rels_cap, oid);
    if (!r->oid)
        d->rels_n++;
    r->oid = oid;
    /* pgoutput names pg_catalog "" */
    snprintf(r->nsp, sizeof(r->nsp), "%s", nsp[0] ? nsp : "pg_catalog");
    snprintf(r->name, sizeof(r->name), "%s", name);
}

static void rels_clear(struct cl_db *d)
{
    free(d->rels);
    d->rels = NULL;
    d->rels_cap = d->rels_n = 0;
}

/* ---- the connection's chain -------------------------------------------------------- */

static const struct server_holder_ops cl_holder;

static void send_query(struct cl_db *d, enum cl_phase next, const char *sql)
{
    uint8_t buf[1024];
    struct proto_writer wr;
    proto_writer_init(&wr, buf, sizeof(buf));
    proto_build_query(&wr, sql);
    d->phase = next;
    d->got_row = false;
    d->error[0] = '\0';
    log_debug("cache_invalidation: database %s: %s", d->db->name, phase_str(next));
    stream_write(&d->sv->s, wr.buf, wr.len);
}

static void ask_publication(struct cl_db *d)
{
    char sql[256];
    snprintf(sql, sizeof(sql), "SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = '%s'",
             publication());
    send_query(d, CLP_PUB_CHECK, sql);
}

static void create_slot(struct cl_db *d)
{
    char sql[256];
    d->attempt++;
    pthread_mutex_lock(&g_lock);
    snprintf(d->st.slot, sizeof(d->st.slot), "sluice_%d_%s_%08x_%u", (int)getpid(), g_instance,
             hash_str(d->db->name), d->attempt);
    snprintf(sql, sizeof(sql),
             "CREATE_REPLICATION_SLOT %s TEMPORARY LOGICAL pgoutput NOEXPORT_SNAPSHOT", d->st.slot);
    pthread_mutex_unlock(&g_lock);
    send_query(d, CLP_SLOT, sql);
}

static void start_streaming(struct cl_db *d)
{
    char sql[384];
    pthread_mutex_lock(&g_lock);
    snprintf(sql, sizeof(sql),
             "START_REPLICATION SLOT %s LOGICAL 0/0 (proto_version '1', publication_names '%s')",
             d->st.slot, publication());
    pthread_mutex_unlock(&g_lock);
    send_query(d, CLP_START, sql);
}

/* The step that ended (its ReadyForQuery came): the next one, or false
 * with why. */
static bool step_done(struct cl_db *d, char *why, size_t whylen)
{
    const char *pub = publication();
    if (d->error[0]) {
        static const char *const what[] = {"",
                                           "",
                                           "could not look up the publication",
                                           "could not create the publication",
                                           "could not create the replication slot",
                                           "could not start replication"};
        snprintf(why, whylen, "%s: %s", d->phase < CLP_STREAMING ? what[d->phase] : "", d->error);
        return false;
    }
    switch (d->phase) {
    case CLP_PUB_CHECK:
        if (d->got_row) {
            create_slot(d);
        } else if (!g_publication[0]) {
            char sql[128];
            snprintf(sql, sizeof(sql), "CREATE PUBLICATION %s FOR ALL TABLES", pub);
            log_info("cache_invalidation: database %s: creating publication %s FOR ALL TABLES",
                     d->db->name, pub);
            send_query(d, CLP_PUB_CREATE, sql);
        } else {
            snprintf(why, whylen, "publication %s (cache_publication) does not exist", pub);
            return false;
        }
        return true;
    case CLP_PUB_CREATE:
        create_slot(d);
        return true;
    case CLP_SLOT:
        start_streaming(d);
        return true;
    default:
        snprintf(why, whylen, "the server ended the replication command");
        return false;
    }
}

/* ---- the stream ------------------------------------------------------------------- */

static void send_status(struct cl_db *d, bool reply)
{
    uint8_t buf[PROTO_HDR + PGOUTPUT_STATUS_LEN];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000 - PGOUTPUT_EPOCH_OFFSET_USEC;
    buf[0] = 'd';
    proto_put32(buf + 1, 4 + PGOUTPUT_STATUS_LEN);
    pgoutput_build_status(buf + PROTO_HDR, d->flushed, d->flushed, d->flushed, now, reply);
    stream_write(&d->sv->s, buf, sizeof(buf));
    d->status_due = false;
    d->last_status = worker_now(cl_worker());
    set_positions(d);
}

static void txn_add(struct cl_db *d, uint32_t oid)
{
    for (int i = 0; i < d->n_txn; i++)
        if (d->txn[i] == oid)
            return;
    if (d->n_txn == CL_TXN_MAX)
        d->txn_all = true;
    else
        d->txn[d->n_txn++] = oid;
}

/* A transaction that committed is visible on the primary (commit_gate.h):
 * the relations it changed (oids[0..n), or all) go on the bus. */
static void publish(void *arg, const uint32_t *oids, int n_oids, bool all)
{
    struct cl_db *d = arg;
    struct writes_rel rels[CL_TXN_MAX];
    int n = 0;
    for (int i = 0; i < n_oids && !all; i++) {
        /* Not described (a change before its relation, or the stream
         * started over since): every relation. */
        const struct cl_rel *r = rel_find(d, oids[i]);
        if (!r) {
            all = true;
            break;
        }
        rels[n].schema = r->nsp;
        rels[n].name = r->name;
        n++;
    }
    if (!all && n == 0)
        return;
    struct writes_event ev = {
        .db = d->db, .source = WRITES_LOGICAL, .rels = rels, .n = all ? 0 : n, .all = all};
    writes_committed(&ev);
    pthread_mutex_lock(&g_lock);
    d->st.commits++;
    pthread_mutex_unlock(&g_lock);
}

/* One pgoutput message m; false (why) when it breaks the rules. */
static bool on_change(struct cl_db *d, const struct pgoutput_msg *m, char *why, size_t whylen)
{
    switch (m->kind) {
    case PGOUTPUT_BEGIN:
        d->in_txn = true;
        d->xid = m->xid;
        d->n_txn = 0;
        d->txn_all = false;
        return true;
    case PGOUTPUT_COMMIT:
        if (!d->in_txn) {
            snprintf(why, whylen, "a commit outside a transaction in the stream");
            return false;
        }
        if (d->n_txn || d->txn_all)
            commit_gate_add(d->gate, d->xid, d->txn, d->n_txn, d->txn_all);
        d->in_txn = false;
        d->n_txn = 0;
        d->txn_all = false;
        if (m->end_lsn > d->flushed)
            d->flushed = m->end_lsn;
        if (m->end_lsn > d->wal_end)
            d->wal_end = m->end_lsn;
        d->status_due = true;
        return true;
    case PGOUTPUT_RELATION:
        rel_put(d, m->relid, m->nspname, m->name);
        return true;
    case PGOUTPUT_INSERT:
    case PGOUTPUT_UPDATE:
    case PGOUTPUT_DELETE:
        txn_add(d, m->relid);
        return true;
    case PGOUTPUT_TRUNCATE:
        for (uint32_t i = 0; i < m->n_relids; i++)
            txn_add(d, pgoutput_relid_at(m, i));
        return true;
    case PGOUTPUT_ORIGIN:
    case PGOUTPUT_TYPE:
    case PGOUTPUT_MESSAGE:
        return true;
    }
    return true;
}

/* A CopyData payload p[0..len); whole: the whole message is there (else
 * only its head, for a change too large to buffer). */
static bool on_copy_data(struct cl_db *d, const uint8_t *p, size_t len, bool whole, char *why,
                         size_t whylen)
{
    struct pgoutput_copy c;
    enum pgoutput_status st = pgoutput_parse_copy(p, len, &c);
    if (st != PGOUTPUT_OK) {
        snprintf(why, whylen, "replication message: %s", pgoutput_status_str(st));
        return false;
    }
    if (c.wal_end > d->wal_end)
        d->wal_end = c.wal_end;
    if (c.kind == PGOUTPUT_COPY_KEEPALIVE) {
        /* Between transactions everything up to the server's position has
         * been seen (messages come in order): confirmed, so that the slot
         * moves on through WAL of other databases and unpublished tables. */
        if (!d->in_txn && c.wal_end > d->flushed) {
            d->flushed = c.wal_end;
            d->status_due = true;
        }
        if (c.reply_requested)
            send_status(d, false);
        return true;
    }
    struct pgoutput_msg m;
    if (!whole) {
        /* A change too large to buffer: only its relation is read. Any
         * other message that large (none is, in practice) counts as a
         * change to every relation. */
        if (pgoutput_parse_head(c.data, c.len, &m) == PGOUTPUT_OK)
            return on_change(d, &m, why, whylen);
        d->txn_all = true;
        return true;
    }
    st = pgoutput_parse(c.data, c.len, &m);
    if (st != PGOUTPUT_OK) {
        snprintf(why, whylen, "pgoutput message '%c': %s", c.len ? c.data[0] : '?',
                 pgoutput_status_str(st));
        return false;
    }
    return on_change(d, &m, why, whylen);
}

/* CREATE_REPLICATION_SLOT's row (slot_name, consistent_point, ...): the
 * slot's first position, confirmed until the stream says more. */
static void slot_row(struct cl_db *d, const struct stream_msg *m)
{
    const uint8_t *p = m->data + PROTO_HDR, *end = m->data + m->len;
    if (end - p < 2 || proto_get16(p) < 2)
        return;
    p += 2;
    for (int col = 0; col < 2; col++) {
        if (end - p < 4)
            return;
        uint32_t len = proto_get32(p);
        p += 4;
        if (len == 0xffffffffu || len > (size_t)(end - p))
            return;
        uint64_t lsn;
        if (col == 1 && replicas_parse_lsn((const char *)p, len, &lsn))
            d->flushed = d->wal_end = lsn;
        p += len;
    }
}

/* One message from the walsender (whole, or a CopyData's head); false
 * (why) to close. */
static bool on_message(struct cl_db *d, const struct stream_msg *m, bool whole, char *why,
                       size_t whylen)
{
    switch (m->type) {
    case 'd':
        if (d->phase != CLP_STREAMING)
            break;
        return on_copy_data(d, m->data + PROTO_HDR, m->len - PROTO_HDR, whole, why, whylen);
    case 'W': /* CopyBothResponse: the slot streams */
        if (d->phase != CLP_START)
            break;
        d->phase = CLP_STREAMING;
        d->backoff = 0;
        d->last_status = worker_now(cl_worker());
        set_state(d, CACHE_LOGICAL_STREAMING, NULL);
        set_positions(d);
        gap_close(d);
        log_info("cache_invalidation: database %s: logical decoding streams (slot %s)", d->db->name,
                 d->st.slot);
        d->logged_down = false;
        return true;
    case 'E':
        server_error_text(m->data, m->len, d->error, sizeof(d->error), NULL);
        if (d->phase == CLP_STREAMING) {
            snprintf(why, whylen, "%s", d->error);
            return false;
        }
        return true;
    case 'D':
        d->got_row = true;
        if (d->phase == CLP_SLOT)
            slot_row(d, m);
        return true;
    case 'Z':
        if (d->phase >= CLP_PUB_CHECK && d->phase <= CLP_START)
            return step_done(d, why, whylen);
        break;
    case 'c':
        snprintf(why, whylen, "the server ended the stream (CopyDone)");
        return false;
    case 'T':
    case 'C':
    case 'I':
    case 'N':
    case 'S':
        return true;
    default:
        break;
    }
    snprintf(why, whylen, "unexpected message '%c' while %s", m->type, phase_str(d->phase));
    return false;
}

/* The next message to act on, or false (MORE, or failed: why set). *whole:
 * all of it is buffered; a large CopyData is taken by its head. */
static bool next_message(struct server *sv, struct stream_msg *m, bool *whole, char *why,
                         size_t whylen)
{
    struct stream *s = &sv->s;
    enum stream_msg_status st = stream_next_msg(s, STREAM_MSG_HEAD, m);
    if (st == STREAM_MSG_MORE)
        return false;
    if (st != STREAM_MSG_OK) {
        snprintf(why, whylen, "bad message from the server: %s", stream_msg_status_str(st));
        return false;
    }
    *whole = m->avail >= m->len;
    if (*whole)
        return true;
    /* Head of an XLogData: type, 3 positions, pgoutput's type and OID. */
    const uint32_t head = PROTO_HDR + 25 + 5;
    if (m->type == 'd' && m->len > CL_WHOLE_MAX)
        return m->avail >= head;
    if (stream_msg_whole(s, m) != STREAM_MSG_OK)
        return false;
    *whole = true;
    return true;
}

static void cl_server_data(struct server *sv)
{
    struct cl_db *d = cl_of(sv);
    if (!d) {
        server_close(sv, "cache_invalidation: connection not needed");
        return;
    }
    char why[400] = "";
    struct stream_msg m;
    bool whole = false;
    while (next_message(sv, &m, &whole, why, sizeof(why))) {
        if (!on_message(d, &m, whole, why, sizeof(why))) {
            server_close(sv, why); /* cl_server_closed() takes it from here */
            return;
        }
        if (d->sv != sv)
            return;
        stream_consume_msg(&sv->s, m.len);
    }
    if (why[0]) {
        server_close(sv, why);
        return;
    }
    if (d->status_due && d->phase == CLP_STREAMING)
        send_status(d, false);
    stream_release_rbuf(&sv->s);
}

static void cl_server_ready(struct server *sv)
{
    struct cl_db *d = cl_of(sv);
    if (!d || g_stopping) {
        server_close(sv, "cache_invalidation: connection not needed");
        return;
    }
    set_state(d, CACHE_LOGICAL_STARTING, "creating the slot");
    ask_publication(d);
}

/* The connection is gone (why): the database is in a gap until a new slot
 * streams, tried again after the backoff. */
static void failed(struct cl_db *d, const char *why)
{
    int64_t now = worker_now(cl_worker());
    bool was_streaming = d->phase == CLP_STREAMING;
    d->sv = NULL;
    d->phase = CLP_IDLE;
    d->in_txn = d->status_due = false;
    d->n_txn = 0;
    d->flushed = d->wal_end = 0;
    rels_clear(d);
    if (g_stopping || g_pooler.shutting_down) {
        set_state(d, CACHE_LOGICAL_FAILED, "shutting down");
        return;
    }
    gap_open(d);
    d->backoff = d->backoff ? d->backoff * 2 : CL_BACKOFF_MIN;
    if (d->backoff > CL_BACKOFF_MAX)
        d->backoff = CL_BACKOFF_MAX;
    d->next_try = now + d->backoff;
    char prev[sizeof(d->st.reason)];
    pthread_mutex_lock(&g_lock);
    snprintf(prev, sizeof(prev), "%s", d->st.reason);
    pthread_mutex_unlock(&g_lock);
    set_state(d, CACHE_LOGICAL_FAILED, why);
    set_positions(d);
    if (!d->logged_down || was_streaming || strcmp(prev, why) != 0)
        log_warning("cache_invalidation: database %s: logical decoding %s: %s; its answers are not "
                    "cached until it streams again (next try in %lld s)",
                    d->db->name, was_streaming ? "stopped" : "could not start", why,
                    (long long)(d->backoff / 1000000));
    d->logged_down = true;
}

static void cl_server_closed(struct server *sv, struct client *c, const char *why)
{
    (void)c;
    struct cl_db *d = cl_of(sv);
    if (d)
        failed(d, why && why[0] ? why : "connection closed");
}

static const struct server_holder_ops cl_holder = {
    .on_ready = cl_server_ready,
    .on_data = cl_server_data,
    .on_closed = cl_server_closed,
};

/* ---- the tick --------------------------------------------------------------------- */

/* The pool the connection logs in through: the entry's user, else the
 * first user with a pool of the database's primary; NULL: none yet. */
static struct pool *pool_for(struct cl_db *d)
{
    const struct config_database *cd = d->db->cfg;
    if (!cd)
        return NULL;
    if (cd->user[0])
        return pool_get(d->db, cd->user);
    struct pool *found = NULL;
    pool_lock();
    struct list *it, *tmp;
    list_for_each_safe(it, tmp, &g_pooler.pools)
    {
        struct pool *p = list_entry(it, struct pool, node);
        if (p->db == d->db && p->ep == 0) {
            found = p;
            break;
        }
    }
    pool_unlock();
    return found;
}

static void try_connect(struct cl_db *d, int64_t now)
{
    struct pool *p = pool_for(d);
    if (!p) {
        set_state(d, CACHE_LOGICAL_STARTING,
                  d->db->cfg ? "waiting for a user: the entry has no user= and no client logged in"
                             : "the database left [databases]");
        d->next_try = now + (int64_t)(CL_TICK_SEC * 1e6);
        return;
    }
    if (!d->logged_down)
        set_state(d, CACHE_LOGICAL_STARTING, "connecting");
    d->phase = CLP_CONNECTING;
    struct server *sv = pool_connect_walsender(p, cl_worker(), &cl_holder, REPLICATION_LOGICAL);
    if (!sv) {
        d->phase = CLP_IDLE;
        failed(d, "could not connect to the primary");
        return;
    }
    d->sv = sv;
}

static bool followed(const struct database *db)
{
    for (struct cl_db *d = g_dbs; d; d = d->next)
        if (d->db == db)
            return true;
    return false;
}

/* db is followed from now on, in a gap until its slot streams. */
static void follow(struct database *db)
{
    struct cl_db *d = calloc(1, sizeof(*d));
    if (!d)
        abort();
    d->db = db;
    d->st.state = CACHE_LOGICAL_STARTING;
    snprintf(d->st.reason, sizeof(d->st.reason), "not connected yet");
    gap_open(d);
    d->gate = commit_gate_new(db, cl_worker(), publish, d);
    pthread_mutex_lock(&g_lock);
    d->next = g_dbs;
    g_dbs = d;
    pthread_mutex_unlock(&g_lock);
}

/* The databases of cfg's [databases] (at start, and after a reload), and
 * those the "*" entry made for clients since the last tick: followed. */
static void discover(const struct config *cfg)
{
    if (cfg != g_seen_cfg) {
        g_seen_cfg = cfg;
        for (int i = 0; i < cfg->n_databases; i++) {
            const struct config_database *cd = &cfg->databases[i];
            struct database *db = strcmp(cd->name, "*") ? pool_find_database(cd->name) : NULL;
            if (db && !followed(db))
                follow(db);
        }
    }
    struct database *made[16];
    int n = 0;
    pool_lock();
    struct list *it, *tmp;
    list_for_each_safe(it, tmp, &g_pooler.databases)
    {
        struct database *db = list_entry(it, struct database, node);
        if (db->autodb && db->cfg && n < 16 && !followed(db))
            made[n++] = db;
    }
    pool_unlock();
    for (int i = 0; i < n; i++)
        follow(made[i]); /* (its gap is told outside the pool lock) */
}

static void tick_db(struct cl_db *d, int64_t now)
{
    if (g_pooler.shutting_down) {
        if (d->sv)
            server_close(d->sv, "shutting down");
        return;
    }
    commit_gate_tick(d->gate, pool_for(d), now);
    if (!d->sv) {
        if (now >= d->next_try)
            try_connect(d, now);
        return;
    }
    if (d->sv->close_needed || !d->db->cfg) {
        server_close(d->sv, d->db->cfg ? "the database's servers must go (configuration changed)"
                                       : "the database left [databases]");
        return;
    }
    if (d->phase == CLP_STREAMING && (d->status_due || now - d->last_status >= CL_STATUS_USEC))
        send_status(d, false);
}

static void tick_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)t;
    (void)revents;
    discover(g_pooler.cfg);
    int64_t now = worker_now(cl_worker());
    for (struct cl_db *d = g_dbs; d; d = d->next)
        tick_db(d, now);
}

void cache_logical_start(void)
{
    const struct config *cfg = g_pooler.cfg;
    if (!cache_on() || strcmp(cfg->cache_invalidation, "logical") != 0)
        return;
    uint8_t r[2];
    auth_random_bytes(r, sizeof(r));
    snprintf(g_instance, sizeof(g_instance), "%02x%02x", r[0], r[1]);
    snprintf(g_publication, sizeof(g_publication), "%s", cfg->cache_publication);
    g_running = true;
    discover(cfg);
    struct ev_loop *loop = cl_worker()->loop;
    ev_timer_init(&g_tick, tick_cb, 0., CL_TICK_SEC);
    ev_timer_start(loop, &g_tick);
    ev_unref(loop); /* does not keep the loop running */
    log_info("cache_invalidation = logical: publication %s%s", publication(),
             g_publication[0] ? "" : " (made FOR ALL TABLES if missing)");
}

void cache_logical_stop(void)
{
    if (!g_running)
        return;
    g_stopping = true;
    struct ev_loop *loop = cl_worker()->loop;
    ev_ref(loop);
    ev_timer_stop(loop, &g_tick);
    for (struct cl_db *d = g_dbs; d; d = d->next)
        if (d->sv)
            server_close(d->sv, "shutdown"); /* the temporary slot goes with it */
    pthread_mutex_lock(&g_lock);
    while (g_dbs) {
        struct cl_db *d = g_dbs;
        g_dbs = d->next;
        commit_gate_free(d->gate);
        rels_clear(d);
        free(d);
    }
    pthread_mutex_unlock(&g_lock);
    g_running = false;
}

bool cache_logical_status(const struct database *db, struct cache_logical_status *out)
{
    bool found = false;
    pthread_mutex_lock(&g_lock);
    for (struct cl_db *d = g_dbs; d; d = d->next) {
        if (d->db == db) {
            *out = d->st;
            if (out->state != CACHE_LOGICAL_STREAMING)
                out->lag_bytes = 0;
            found = true;
            break;
        }
    }
    pthread_mutex_unlock(&g_lock);
    return found;
}

void cache_logical_describe(const struct cache_logical_status *st, char *buf, size_t len)
{
    if (st->state == CACHE_LOGICAL_STREAMING || !st->reason[0])
        snprintf(buf, len, "%s", cache_logical_state_str(st->state));
    else
        snprintf(buf, len, "%s: %s", cache_logical_state_str(st->state), st->reason);
}
