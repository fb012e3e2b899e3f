/* commit_gate.c - decoded commits held until the primary shows them
 * (commit_gate.h). */
#include "commit_gate.h"

#include <ev.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "pg_snapshot.h"
#include "pool.h"
#include "server.h"
#include "server_query.h"
#include "worker.h"
#include "writes.h"

#define GATE_SQL        "SELECT pg_catalog.pg_current_snapshot()"
#define GATE_RETRY_USEC 1000000    /* a connection that failed is tried again after this */
#define GATE_LOOK_USEC  2000000    /* a look taking longer closes the connection (a gap) */
#define GATE_AGAIN_MIN  0.001      /* commits not shown yet: looked at again after this, */
#define GATE_AGAIN_MAX  0.05       /* ... doubling while none is shown, up to this */
#define GATE_MAX_WORDS  (1u << 18) /* what waits, in words; more: a barrier (below) */
#define GATE_ALL        0x80000000u

/* What waits is a run of records, each [xid][n | GATE_ALL][n OIDs]. Past
 * GATE_MAX_WORDS (only while the gate cannot look, or the primary stalls
 * its commits), a commit is not recorded: the barrier becomes the latest
 * such xid, the database stays in a gap, and once every transaction up to
 * the barrier has ended all of its answers go. */
struct commit_gate {
    struct database *db;
    struct worker *w;
    commit_gate_release_fn release;
    void *arg;
    struct server *sv;
    bool up;     /* logged in */
    bool asking; /* a look is in flight */
    bool looked; /* one answered since it logged in */
    bool got;    /* the look in flight has its row */
    bool gap;    /* writes_gap(db, WRITES_LOGICAL, true) told, not closed since */
    bool logged; /* its failure was logged (once until it looks again) */
    bool barrier_set;
    uint32_t barrier;
    int64_t next_try, asked_at;
    uint32_t *rec;
    size_t len, cap; /* words */
    struct pg_snapshot snap;
    ev_timer again;
    double delay;
    struct commit_gate *next;
};

static struct commit_gate *g_gates; /* the consumer's worker's only */

static struct commit_gate *gate_of(const struct server *sv)
{
    for (struct commit_gate *g = g_gates; g; g = g->next)
        if (g->sv == sv)
            return g;
    return NULL;
}

/* The gap is open unless the gate looks and no barrier waits. */
static void update_gap(struct commit_gate *g)
{
    bool need = !g->up || !g->looked || g->barrier_set;
    if (need == g->gap)
        return;
    g->gap = need;
    writes_gap(g->db, WRITES_LOGICAL, need);
}

static const struct server_query_ops look_ops;

static void look(struct commit_gate *g)
{
    if (!g->up || g->asking)
        return;
    ev_timer_stop(g->w->loop, &g->again);
    g->got = false;
    if (server_query(g->sv, GATE_SQL, 0, NULL, &look_ops, g)) {
        g->asking = true;
        g->asked_at = worker_now(g->w);
    }
}

static void again_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    look(t->data);
}

/* Releases the records the snapshot shows; returns how many. */
static size_t release_shown(struct commit_gate *g)
{
    size_t out = 0, released = 0;
    for (size_t i = 0; i < g->len;) {
        uint32_t xid = g->rec[i], hdr = g->rec[i + 1];
        size_t n = hdr & ~GATE_ALL, words = 2 + n;
        if (pg_snapshot_shows(&g->snap, xid)) {
            g->release(g->arg, &g->rec[i + 2], (int)n, (hdr & GATE_ALL) != 0);
            released++;
        } else {
            memmove(&g->rec[out], &g->rec[i], words * sizeof(*g->rec));
            out += words;
        }
        i += words;
    }
    g->len = out;
    return released;
}

static void look_row(struct server *sv, void *arg, const struct server_query_row *row)
{
    struct commit_gate *g = arg;
    (void)sv;
    if (row->n >= 1 && row->val[0] && pg_snapshot_parse(&g->snap, row->val[0], row->len[0]))
        g->got = true;
}

static void look_error(struct server *sv, void *arg, const char *sqlstate, const char *text)
{
    (void)arg;
    (void)sqlstate;
    server_log(LOG_LVL_WARNING, sv, "commit gate: %s failed: %s", GATE_SQL, text);
}

static void look_done(struct server *sv, void *arg, enum server_query_status st)
{
    struct commit_gate *g = arg;
    g->asking = false;
    if (st == SERVER_QUERY_GONE)
        return; /* gate_closed() has it */
    if (st != SERVER_QUERY_OK || !g->got || sv->xact_status != 'I') {
        server_close(sv, "commit gate: no snapshot in the answer");
        return;
    }
    g->looked = true;
    if (g->logged)
        log_info("commit gate: database %s: the primary's snapshots are read again", g->db->name);
    g->logged = false;
    size_t released = release_shown(g);
    if (g->barrier_set && pg_snapshot_past(&g->snap, g->barrier)) {
        g->barrier_set = false;
        g->release(g->arg, NULL, 0, true);
        released++;
    }
    update_gap(g);
    if (!g->len && !g->barrier_set) {
        g->delay = 0;
        return;
    }
    /* Some wait on a commit the primary has not shown yet (a synchronous
     * standby's answer, say): looked at again, less often while none goes. */
    g->delay = released || g->delay == 0 ? GATE_AGAIN_MIN : g->delay * 2;
    if (g->delay > GATE_AGAIN_MAX)
        g->delay = GATE_AGAIN_MAX;
    ev_timer_set(&g->again, g->delay, 0.);
    ev_timer_start(g->w->loop, &g->again);
}

static const struct server_query_ops look_ops = {
    .on_row = look_row, .on_error = look_error, .on_done = look_done};

void commit_gate_add(struct commit_gate *g, uint32_t xid, const uint32_t *oids, int n, bool all)
{
    size_t words = 2 + (all ? 0 : (size_t)n);
    if (g->len + words > GATE_MAX_WORDS) {
        if (!g->barrier_set || pg_xid_precedes(g->barrier, xid))
            g->barrier = xid;
        if (!g->barrier_set)
            log_warning("commit gate: database %s: more than %u words of commits wait for the "
                        "primary's snapshots; its answers are not cached until they end",
                        g->db->name, GATE_MAX_WORDS);
        g->barrier_set = true;
        update_gap(g);
    } else {
        if (g->len + words > g->cap) {
            size_t cap = g->cap ? g->cap * 2 : 256;
            while (cap < g->len + words)
                cap *= 2;
            uint32_t *v = realloc(g->rec, cap * sizeof(*v));
            if (!v)
                abort();
            g->rec = v;
            g->cap = cap;
        }
        g->rec[g->len++] = xid;
        g->rec[g->len++] = all ? GATE_ALL : (uint32_t)n;
        if (!all && n > 0) {
            memcpy(&g->rec[g->len], oids, (size_t)n * sizeof(*oids));
            g->len += (size_t)n;
        }
    }
    look(g);
}

/* ---- the connection ------------------------------------------------------------- */

static void gate_ready(struct server *sv)
{
    struct commit_gate *g = gate_of(sv);
    if (!g) {
        server_close(sv, "commit gate: connection not needed");
        return;
    }
    g->up = true;
    g->looked = false;
    look(g); /* the first answer closes the gap */
}

static void gate_data(struct server *sv)
{
    char why[300];
    if (server_query_read(sv, why, sizeof(why)) == SERVER_READ_BAD)
        server_close(sv, why);
}

static void gate_closed(struct server *sv, struct client *c, const char *why)
{
    (void)c;
    struct commit_gate *g = gate_of(sv);
    if (!g)
        return;
    bool was_looking = g->looked;
    g->sv = NULL;
    g->up = g->asking = g->looked = false;
    g->next_try = worker_now(g->w) + GATE_RETRY_USEC;
    ev_timer_stop(g->w->loop, &g->again);
    update_gap(g);
    if (was_looking || !g->logged)
        log_warning("commit gate: database %s: cannot read the primary's snapshots (%s); its "
                    "answers are not cached until it can",
                    g->db->name, why && why[0] ? why : "connection closed");
    g->logged = true;
}

static const struct server_holder_ops gate_holder = {
    .on_ready = gate_ready,
    .on_data = gate_data,
    .on_closed = gate_closed,
};

void commit_gate_tick(struct commit_gate *g, struct pool *p, int64_t now)
{
    if (g->sv) {
        if (g->asking && now - g->asked_at > GATE_LOOK_USEC)
            server_close(g->sv, "commit gate: the primary took over 2 s to show a snapshot");
        else if (g->sv->close_needed)
            server_close(g->sv, "commit gate: the database's servers must go");
        return;
    }
    if (!p || now < g->next_try)
        return;
    g->next_try = now + GATE_RETRY_USEC;
    g->sv = pool_connect_server(p, g->w, &gate_holder);
}

struct commit_gate *commit_gate_new(struct database *db, struct worker *w,
                                    commit_gate_release_fn release, void *arg)
{
    struct commit_gate *g = calloc(1, sizeof(*g));
    if (!g)
        abort();
    g->db = db;
    g->w = w;
    g->release = release;
    g->arg = arg;
    ev_timer_init(&g->again, again_cb, 0., 0.);
    g->again.data = g;
    update_gap(g);
    g->next = g_gates;
    g_gates = g;
    return g;
}

void commit_gate_free(struct commit_gate *g)
{
    if (!g)
        return;
    for (struct commit_gate **pp = &g_gates; *pp; pp = &(*pp)->next)
        if (*pp == g) {
            *pp = g->next;
            break;
        }
    ev_timer_stop(g->w->loop, &g->again);
    if (g->sv)
        server_close(g->sv, "commit gate: no longer needed");
    if (g->gap)
        writes_gap(g->db, WRITES_LOGICAL, false);
    pg_snapshot_free(&g->snap);
    free(g->rec);
    free(g);
}
