/* ryw.c - read-your-writes (ryw.h). */
#include "ryw.h"

#include <stdatomic.h>
#include <string.h>

#include "log.h"
#include "pool.h"
#include "replicas.h"
#include "request.h"
#include "server.h"
#include "server_query.h"
#include "worker.h"

/* After a write whose position could not be read (its server failed),
 * reads of its scope go to the primary this long. */
#define RYW_UNKNOWN_USEC (10 * 1000000LL)

static _Thread_local struct {
    uint64_t generation;
    enum ryw_mode mode;
} tl_mode;

enum ryw_mode ryw_mode(void)
{
    const struct config *cfg = g_pooler.cfg;
    if (tl_mode.generation != cfg->generation) {
        static const char *const names[] = {"off", "connection", "user", "database"};
        tl_mode.mode = RYW_USER;
        for (int i = 0; i < 4; i++)
            if (!strcmp(cfg->read_your_writes, names[i]))
                tl_mode.mode = (enum ryw_mode)i;
        tl_mode.generation = cfg->generation;
    }
    return tl_mode.mode;
}

/* The shared scope of a client of pool p under mode m, or NULL (off, or
 * connection: the client's own). */
static struct rw_scope *scope_of(struct pool *p, enum ryw_mode m)
{
    if (m == RYW_USER)
        return &p->home->rw;
    if (m == RYW_DATABASE)
        return &p->db->rw;
    return NULL;
}

bool ryw_read_floor(const struct client *c, const struct ryw_client *rc, int64_t now,
                    uint64_t *min_lsn)
{
    *min_lsn = 0;
    enum ryw_mode m = ryw_mode();
    if (m == RYW_OFF)
        return true;
    if (rc) {
        if (rc->unknown_until > now)
            return false;
        *min_lsn = rc->lsn;
    }
    const struct rw_scope *s = scope_of(c->pool, m);
    if (!s)
        return true;
    /* pending before lsn: a writer raises lsn, then lowers pending. */
    if (atomic_load(&s->pending) > 0 || atomic_load(&s->unknown_until) > now)
        return false;
    uint64_t l = atomic_load(&s->lsn);
    if (l > *min_lsn)
        *min_lsn = l;
    return true;
}

void ryw_commit_begin(struct ryw_client *rc, struct server *sv)
{
    enum ryw_mode m = ryw_mode();
    /* What the client sends on this link from now on (while the position
     * is read, it goes to this server) is looked at again. */
    rc->wrote = false;
    rc->watch = true;
    sv->rw_scope = (uint8_t)(m == RYW_OFF ? RYW_CONNECTION : m);
    sv->rw_lsn = 0;
    sv->rw_client = rc;
    struct rw_scope *s = scope_of(sv->pool, m);
    if (s)
        atomic_fetch_add(&s->pending, 1);
}

static void raise_to(_Atomic uint64_t *at, uint64_t lsn)
{
    uint64_t cur = atomic_load(at);
    while (cur < lsn && !atomic_compare_exchange_weak(at, &cur, lsn))
        ;
}

/* The position is known (ok) or not: the scope learns it, and the
 * pending write is no more. */
static void commit_end(struct server *sv, bool ok)
{
    int64_t now = worker_now(sv->s.worker);
    struct rw_scope *s = scope_of(sv->pool, (enum ryw_mode)sv->rw_scope);
    if (s) {
        if (ok)
            raise_to(&s->lsn, sv->rw_lsn);
        else
            atomic_store(&s->unknown_until, now + RYW_UNKNOWN_USEC);
        atomic_fetch_sub(&s->pending, 1);
    }
    struct ryw_client *rc = sv->client ? sv->rw_client : NULL;
    if (rc) {
        if (ok && sv->rw_lsn > rc->lsn)
            rc->lsn = sv->rw_lsn;
        if (!ok)
            rc->unknown_until = now + RYW_UNKNOWN_USEC;
    }
    sv->rw_client = NULL;
}

static void lsn_row(struct server *sv, void *arg, const struct server_query_row *row)
{
    if (row->n < 1 || !row->val[0] || !replicas_parse_lsn(row->val[0], row->len[0], &sv->rw_lsn)) {
        sv->rw_lsn = 0;
        return;
    }
    /* The insert position of a WAL that ends at a page boundary points
     * past the next page's header (24 bytes, 40 at a segment's start),
     * where no record ends and no standby's replay position will be until
     * more is written: the boundary is where the last write ends. */
    uint64_t off = sv->rw_lsn % 8192;
    if (off == 24 || off == 40)
        sv->rw_lsn -= off;
}

static void lsn_done(struct server *sv, void *arg, enum server_query_status st)
{
    if (st == SERVER_QUERY_GONE) {
        commit_end(sv, false); /* sv->rw_scope stays: ryw_commit_lost() */
        return;
    }
    bool ok = st == SERVER_QUERY_OK && sv->rw_lsn;
    if (log_enabled(LOG_LVL_DEBUG))
        server_log(LOG_LVL_DEBUG, sv, "write position %X/%X", (unsigned)(sv->rw_lsn >> 32),
                   (unsigned)sv->rw_lsn);
    if (!ok)
        server_log(LOG_LVL_WARNING, sv,
                   "could not read the position of a write: reads of its "
                   "scope go to the primary for a while");
    commit_end(sv, ok);
    sv->rw_scope = 0;
    struct client *c = sv->client;
    /* Back to the pool, unless the client sent more meanwhile (that went
     * to this server, which answers it next). */
    if (c && !request_busy(c) && sv->xact_status == 'I')
        pool_release_server(sv);
}

static const struct server_query_ops lsn_ops = {.on_row = lsn_row, .on_done = lsn_done};

void ryw_commit_read(struct server *sv)
{
    if (!server_query(sv, "SELECT pg_catalog.pg_current_wal_insert_lsn()", 0, NULL, &lsn_ops,
                      NULL)) {
        commit_end(sv, false);
        sv->rw_scope = 0;
    }
}

bool ryw_commit_lost(struct server *sv)
{
    if (!sv->rw_scope)
        return false;
    sv->rw_scope = 0;
    return true;
}
