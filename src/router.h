/* router.h - where a request goes: the decision the client's dispatcher
 * asks for before a server is chosen (client.c, client_dispatch()).
 *
 * With read_write_split off (the default), or no replicas, every request
 * goes to its database's primary and nothing is parsed. With it on, a
 * request that is provably read-only goes to a replica (replicas.c picks
 * which); anything else, or anything not understood, to the primary.
 * docs/routing.md states the rules. */
#ifndef SLUICE_ROUTER_H
#define SLUICE_ROUTER_H

#include "conn.h"
#include "request.h"
#include "ryw.h"

/* What the router decided. */
enum router_target {
    ROUTE_PRIMARY = 0, /* a server of the database's primary */
    ROUTE_REPLICA,     /* a server of one of its replicas (endpoint) */
    ROUTE_WAIT,        /* the request's first message is not all here yet: ask again */
    ROUTE_ANSWERED,    /* refused here with an error (a write hinted to a replica) */
};
const char *router_target_str(enum router_target t);

struct router_decision {
    enum router_target target;
    int endpoint;    /* index into the database's endpoints (0: the primary) */
    const char *why; /* static text: the rule that decided, for the debug log */
};

/* Where c's request r (begun, its first message at the head of c's
 * buffer) goes. ROUTE_WAIT: the caller waits for more bytes; ROUTE_ANSWERED:
 * the request was consumed and answered (or c closed). */
struct router_decision router_route(struct client *c, struct request *r);

/* ---- a client's routing state ------------------------------------------------

 * Kept while a client needs it (c->route): a transaction the router
 * follows, and what relay.c keeps to send a read again. Borrowed from a
 * per-thread cache; an idle client outside a transaction holds none.
 *
 * The transaction (transaction pooling, split on): a BEGIN alone is
 * answered here, without a server, and opened on the server the first
 * statement goes to (a replica for a read, the primary for a write). Reads
 * stay on the replica; at the first write (or SAVEPOINT, LOCK, ...) the
 * replica's transaction ends (ROLLBACK: it only read) and the transaction
 * opens again on the primary with the same BEGIN and the SET LOCALs so
 * far, where the rest runs. REPEATABLE READ and SERIALIZABLE ones run on
 * the primary from their BEGIN; READ ONLY ones on a replica to their end. */
enum router_txn {
    RTX_NONE = 0, /* no transaction the router follows */
    RTX_VIRTUAL,  /* BEGIN answered here; no server has it yet */
    RTX_REPLICA,  /* open on the replica c is linked to */
    RTX_MOVED,    /* ended on the replica for a write: to open on the primary */
};

struct router_client {
    /* relay.c's transparent retry: the bytes sent to a replica's server
     * since the link, kept until any byte reaches the client. retry_mark:
     * the low 32 bits of stream_written() of c then (compared after every
     * read of the server's, far less than 4 GiB apart). */
    struct iobuf *retry_buf;
    uint32_t retry_mark;
    bool retried; /* this request was sent again once already */
    /* the transaction */
    enum router_txn txn;
    bool by_client;        /* RTX_REPLICA: the client's own BEGIN opened it there */
    bool read_only;        /* BEGIN READ ONLY: it stays on its replica */
    bool opening;          /* the next link opens it (router_link_replay()) */
    bool move;             /* a request waits for it to move to the primary */
    bool replay_bad;       /* the open failed on the server */
    struct ryw_client ryw; /* read-your-writes (ryw.h) */
    char *replay;          /* "BEGIN ...;SET LOCAL ...;" that opens it again */
    uint32_t replay_len, replay_cap;
    struct router_client *next_free;
};

/* c's routing state, made if c has none. */
struct router_client *router_client_of(struct client *c);
/* c's link ended (its server went back): a transaction that ended there is
 * forgotten, and c's state goes back to the cache when nothing is left. */
void router_unlinked(struct client *c);
/* c is being freed (a client_conn free hook). */
void router_client_free(struct client *c);
/* Whether c is in a transaction no server has (BEGIN answered here). */
bool router_txn_virtual(const struct client *c);

/* For relay.c, at a link: the SQL that opens c's transaction on sv first
 * (NUL-terminated), or NULL. */
const char *router_link_replay(struct client *c, const struct server *sv);
/* ... and once it ran: true if the transaction is open on sv (else c must
 * be told and closed: its statements would run outside it). */
bool router_link_opened(struct client *c, struct server *sv);
/* Whether c's transaction on its replica must end there now, for a request
 * that waits to run on the primary (no request of c's is in flight). */
bool router_move_due(const struct client *c, const struct server *sv);
/* It ended there (ROLLBACK): its next request opens it on the primary. */
void router_txn_moved(struct client *c);
/* c's request is sent again elsewhere (its replica's server failed): a
 * transaction sluice opened there is to be opened again. */
void router_link_lost(struct client *c);

/* Registers the router's request observer (at start): it holds a request
 * that must not run on the replica c is linked to until that server goes
 * back, so that the dispatcher routes it anew. */
void router_init(void);
/* Frees the running thread's routing caches (thread exit). */
void router_thread_done(void);

/* Requests routed to a replica, and writes held back behind reads on one,
 * since start (all workers). */
uint64_t router_replica_reads(void);

#endif
