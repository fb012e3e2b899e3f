/* tls.h - TLS towards clients and servers.
 *
 * Two OpenSSL contexts are built from the config: one to accept clients
 * (client_tls_*) and one to connect to servers (server_tls_*). They are
 * rebuilt when a reload (or the admin console's SET) changes a TLS setting;
 * sessions already open keep the context they started with (OpenSSL counts
 * references to it).
 *
 * A stream carries TLS in its `tls` member: NULL means a plain socket, so
 * the plain path costs one pointer test. The stream layer (stream.c) runs the
 * PostgreSQL negotiation (SSLRequest and its one-byte answer), the
 * non-blocking handshake and the record I/O; this module builds contexts and
 * answers questions about a session (version, cipher, client certificate). */
#ifndef SLUICE_TLS_H
#define SLUICE_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

struct stream;

/* The six sslmode values, in increasing strictness, as PgBouncer and libpq
 * spell them. */
enum tls_sslmode {
    TLS_MODE_DISABLE = 0, /* never TLS */
    TLS_MODE_ALLOW,       /* clients: TLS if asked; servers: same as prefer */
    TLS_MODE_PREFER,      /* clients: TLS if asked; servers: try TLS, else plain */
    TLS_MODE_REQUIRE,     /* TLS or nothing; certificates not checked */
    TLS_MODE_VERIFY_CA,   /* TLS, and the peer's certificate chain is checked */
    TLS_MODE_VERIFY_FULL, /* as verify-ca; servers: also the host name */
};
const char *tls_sslmode_str(enum tls_sslmode m);
/* Parses an sslmode word (case-insensitive). false on an unknown word. */
bool tls_parse_sslmode(const char *s, enum tls_sslmode *out);

/* Parses a tls_protocols value: "secure" (TLS 1.2 and 1.3), "default" (the
 * same), "all" or "legacy" (1.0 to 1.3), or a list such as
 * "tlsv1.2,tlsv1.3" (comma or space separated; a leading '+' is ignored).
 * Sets *mask to a bitmask of TLS_PROTO_* bits. false with err on bad input. */
#define TLS_PROTO_TLS10 1u
#define TLS_PROTO_TLS11 2u
#define TLS_PROTO_TLS12 4u
#define TLS_PROTO_TLS13 8u
bool tls_parse_protocols(const char *s, unsigned *mask, char *err, size_t errlen);

/* Which side a context serves. */
enum tls_side {
    TLS_SIDE_CLIENTS = 0, /* sluice is the TLS server, clients connect to it */
    TLS_SIDE_SERVERS,     /* sluice is the TLS client of PostgreSQL servers */
};

/* Builds a context for side from cfg's client_tls_* or server_tls_* keys.
 * Returns NULL when that side's sslmode is disable (then *err is ""), or on
 * error (unreadable key or certificate, bad protocols, ciphers, curve), with
 * err filled: it begins with the name of the setting at fault (as in
 * 'client_tls_cert_file "x.crt": ...'), which config_check.c uses to say on
 * which line of the config the problem is. The caller owns the result (SSL_CTX_free). Returned as
 * void * so that users of this header need no OpenSSL headers. */
void *tls_ctx_new(const struct config *cfg, enum tls_side side, char *err, size_t errlen);
/* Frees a context tls_ctx_new() made. */
void tls_ctx_free(void *ctx);

/* Builds both contexts for cfg and makes them current. On error nothing
 * changes and err says why (the file or key at fault). Called at startup and
 * at each reload, before the new config is swapped in. */
bool tls_apply_config(const struct config *cfg, char *err, size_t errlen);

/* Whether a and b differ in a server_tls_* setting: the servers connected
 * under a must go (PgBouncer closes them at such a RELOAD). */
bool tls_server_settings_differ(const struct config *a, const struct config *b);

/* For the console's SET of key (client_tls_key_file, client_tls_cert_file
 * and their server_ twins) to value: true when value names a file that is
 * what key says (a private key, a certificate chain), readable on its own.
 * Such a SET is taken even while the pair does not match yet: the pair is
 * applied when both are set, as PgBouncer does. */
bool tls_pair_half_ok(const char *key, const char *value);
/* Frees the contexts (at exit). */
void tls_shutdown(void);

/* The effective sslmode of each side for the current config. */
enum tls_sslmode tls_client_mode(void);
enum tls_sslmode tls_server_mode(void);

/* A client sent SSLRequest (and nothing after it). If client TLS is on,
 * sends 'S' on s and starts the handshake: the client's next bytes (its
 * startup packet) arrive decrypted through on_data. Returns false if TLS is
 * off (the caller answers 'N'). If TLS cannot start after the 'S' went out,
 * the owner gets on_closed (still true: nothing more to answer). */
bool tls_client_accept(struct stream *s);

/* Whether a client on a non-TLS connection must be refused (sslmode require
 * or stricter). Unix-socket clients are never refused: the socket is local. */
bool tls_client_required(void);

/* auth_type cert: true if the client presented a certificate that passed
 * verification and whose subject CommonName equals user. */
bool tls_client_cert_matches(const struct stream *s, const char *user);

/* SCRAM channel binding (tls-server-end-point, RFC 5929): the hash of a
 * TLS stream's server certificate, ours (ours: we accepted the client) or
 * the PostgreSQL server's. Writes it to out (cap bytes; 64 always suffice)
 * and returns its length; 0 for a plain stream, no certificate, or a
 * signature algorithm without a hash (Ed25519). */
size_t tls_endpoint_hash(const struct stream *s, bool ours, uint8_t *out, size_t cap);
/* The same for a certificate (X509 *), for tests. */
size_t tls_cert_endpoint_hash(const void *cert, uint8_t *out, size_t cap);

/* Prepares a server stream that is connecting (after stream_connect) for
 * server_tls_sslmode: once TCP is up the stream sends SSLRequest, reads the
 * one-byte answer and runs the handshake, and only then reports
 * on_connected. host is the configured host name (SNI and verify-full).
 * Does nothing when the mode is disable or the stream is a unix socket. */
void tls_server_prepare(struct stream *s, const char *host);

/* "TLSv1.3/TLS_AES_256_GCM_SHA384" for a TLS stream, "" for a plain one
 * (for SHOW CLIENTS / SHOW SERVERS). Returns buf. */
const char *tls_describe(const struct stream *s, char *buf, size_t len);

/* ---- implemented in stream.c: TLS on a stream ------------------------------ */

/* on_connected's err for a failed TLS negotiation (errno values are > 0).
 * STREAM_ERR_TLS_CONFIG: a retry will not help (the server refused TLS that
 * the mode requires, or its certificate did not verify). */
#define STREAM_ERR_TLS        (-1)
#define STREAM_ERR_TLS_CONFIG (-2)
/* Text for on_connected's err: strerror(), or why the TLS negotiation
 * failed. Valid until s is closed. */
const char *stream_strerror(const struct stream *s, int err);

/* Starts accepting TLS on an open stream with context ctx (SSL_CTX *): the
 * handshake runs as bytes arrive; reads then deliver plaintext. Returns
 * false if the SSL object could not be made. */
bool stream_tls_accept(struct stream *s, void *ctx);
/* Arms a connecting stream for the PostgreSQL TLS negotiation (see
 * tls_server_prepare). verify_host: check the certificate names host. */
bool stream_tls_request(struct stream *s, void *ctx, enum tls_sslmode mode, const char *host,
                        bool verify_host);
/* The SSL * of an established TLS stream, or NULL. */
void *stream_tls_ssl(const struct stream *s);

#endif
