/* peers.h - PgBouncer's peering (1.19): cancel requests that reach the
 * wrong process behind one port are forwarded to the right one.
 *
 * Several sluice (or PgBouncer) processes behind one load balancer, or on
 * one port with so_reuseport, each give their clients cancel keys. A
 * CancelRequest comes on a new connection, which may land on any of them.
 * With peer_id set, each key says which process gave it (its peer id) and
 * how often it may still be forwarded (a TTL, so that a misconfigured group
 * cannot pass one around forever). A process that gets a key of another
 * sends it on, as a CancelRequest, to that peer's [peers] address.
 *
 * The key layout is PgBouncer's (1.21 and later), so that a group may mix
 * both: of the 8 bytes of BackendKeyData (pid, then key, big-endian), byte
 * 1 holds the peer id's low 8 bits and byte 2 its high bits; the two low
 * bits of byte 7 are the TTL, 3 when the key is made. Byte 0's top bit is
 * clear (a positive pid), and the other 45 bits are random.
 *
 * Forwards run on the loop of the worker that took the CancelRequest; at
 * most a peer's pool_size of them are in flight at once (over all
 * workers), the others wait in a queue, per peer, and start as earlier
 * ones end. The client that sent the CancelRequest is answered as sluice
 * answers any cancel: its connection is closed at once. */
#ifndef SLUICE_PEERS_H
#define SLUICE_PEERS_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"

struct worker;

/* The TTL bits of a key's last byte: forwarded at most 3 times. */
#define PEERS_TTL_MASK 3u

/* A fresh cancel key for a client's BackendKeyData: random, the pid part
 * positive and, with cfg->peer_id set, carrying it and a full TTL. */
void peers_new_cancel_key(const struct config *cfg, uint32_t *pid, uint32_t *key);

/* The peer id a cancel key carries (0..65535; 0 when no peering made it). */
int peers_key_id(uint32_t pid);

/* Where a CancelRequest goes. */
enum peers_route {
    PEERS_ROUTE_LOCAL = 0, /* this process's (or peering is off): look the key up here */
    PEERS_ROUTE_FORWARD,   /* another peer's: send it there with peers_forward_cancel() */
    PEERS_ROUTE_DROP,      /* its TTL is spent, or no [peers] entry has its id */
};
const char *peers_route_str(enum peers_route r);

/* Decides where the CancelRequest (pid, *key) goes under cfg. LOCAL: *key
 * is the key as this process stored it (TTL bits set again). FORWARD:
 * *peer_id is where to, and *key has its TTL lowered by one. DROP: *why
 * says why (for the log). */
enum peers_route peers_route_cancel(const struct config *cfg, uint32_t pid, uint32_t *key,
                                    int *peer_id, const char **why);

/* Sends CancelRequest (pid, key) to peer peer_id from worker w's loop (the
 * running one), or queues it while the peer has pool_size in flight. A
 * full queue (max_client_conn entries) drops it, with a warning. */
void peers_forward_cancel(struct worker *w, int peer_id, uint32_t pid, uint32_t key);

/* Cancels in flight to [peers] entry p at most: its pool_size, else
 * default_pool_size (at least 1). */
int peers_pool_size(const struct config *cfg, const struct config_peer *p);

/* SHOW PEER_POOLS: a peer's forwards now. */
struct peers_pool_stats {
    int active;     /* cl_active_cancel_req: started, not yet answered */
    int waiting;    /* cl_waiting_cancel_req: queued behind pool_size */
    int sv_active;  /* sv_active_cancel: connected, CancelRequest sent */
    int sv_connect; /* sv_login: still connecting */
};
void peers_pool_stats(int peer_id, struct peers_pool_stats *out);

/* Shutdown: closes the forwards running on w's loop (w's thread, or the
 * loops stopped). */
void peers_close_worker(struct worker *w);
/* At exit, after every worker's peers_close_worker(): frees the queues. */
void peers_free_all(void);

#endif
