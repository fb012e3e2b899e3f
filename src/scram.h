/* scram.h - SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL speaks it, both sides.
 *
 * sluice plays the server towards its clients (struct scram_server) and the
 * client towards PostgreSQL (struct scram_client). PostgreSQL specifics:
 *  - the user name inside the SCRAM messages is ignored: the client sends
 *    "n=" and the startup packet's user is the one authenticated;
 *  - channel binding (RFC 5929 tls-server-end-point, SCRAM-SHA-256-PLUS) is
 *    used only over TLS, and only when the caller hands over the hash of
 *    the server's certificate (scram_server_set_cbind, scram_client_set_cbind);
 *    otherwise the GS2 header is "n,," or "y,," as PostgreSQL and libpq use
 *    it, and "p=..." is refused with SCRAM_ERR_CHANNEL_BINDING;
 *  - SASLprep is not applied: passwords are used as raw bytes. That equals
 *    SASLprep for printable ASCII, and PostgreSQL itself falls back to the raw
 *    bytes for passwords that are not valid UTF-8. A non-ASCII password that
 *    SASLprep would change (NFKC, non-ASCII spaces) only fails where sluice
 *    derives keys from a plain password and the other side applies SASLprep.
 *
 * All state lives in caller-owned structs; nothing is global, so any number
 * of exchanges may run in any threads. The structs are visible only so that
 * callers can embed them; their fields are private to scram.c.
 *
 * Every step returns an enum scram_status and, on failure, a static English
 * detail in *errmsg (never NULL then, never containing peer data, safe to log).
 * A failed exchange stays failed: later steps return SCRAM_ERR_OUT_OF_ORDER.
 * Outputs are written NUL-terminated; a buffer of SCRAM_MAX_MESSAGE + 1
 * bytes always suffices.
 */
#ifndef SLUICE_SCRAM_H
#define SLUICE_SCRAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SCRAM_MECHANISM          "SCRAM-SHA-256"
#define SCRAM_PLUS_MECHANISM     "SCRAM-SHA-256-PLUS" /* with channel binding */
#define SCRAM_CBIND_TYPE         "tls-server-end-point"
#define SCRAM_CBIND_MAX          64       /* longest certificate hash (SHA-512) */
#define SCRAM_GS2_MAX            32       /* longest GS2 header we accept or send */
#define SCRAM_KEY_LEN            32       /* SHA-256 output: keys, proofs, signatures */
#define SCRAM_MAX_SALT_LEN       64       /* decoded salt bytes we accept */
#define SCRAM_DEFAULT_SALT_LEN   16       /* what PostgreSQL generates */
#define SCRAM_DEFAULT_ITERATIONS 4096     /* PostgreSQL's default scram_iterations */
#define SCRAM_MAX_ITERATIONS     10000000 /* bounds the PBKDF2 work a peer can ask of us */
#define SCRAM_MAX_MESSAGE        1024     /* longest SCRAM message accepted or produced */
#define SCRAM_MAX_NONCE          256      /* longest client nonce accepted */
#define SCRAM_SECRET_MAX_LEN     256      /* buffer for scram_secret_format(), NUL included */

/* Result of each step. */
enum scram_status {
    SCRAM_OK = 0,               /* step done; send the output if there is one */
    SCRAM_ERR_MALFORMED,        /* peer's message breaks the SCRAM grammar */
    SCRAM_ERR_TOO_LONG,         /* message over SCRAM_MAX_MESSAGE or nonce over SCRAM_MAX_NONCE */
    SCRAM_ERR_WRONG_PASSWORD,   /* client proof does not match: PostgreSQL answers
                                 * 'password authentication failed for user "x"' */
    SCRAM_ERR_CHANNEL_BINDING,  /* channel binding refused: "p=" not offered or of another
                                 * type, "y" although we offered it (a downgrade), or the
                                 * client's binding data is not our certificate's hash */
    SCRAM_ERR_UNSUPPORTED,      /* authzid ("a=") or a mandatory extension ("m=") */
    SCRAM_ERR_NONCE_MISMATCH,   /* nonce does not extend ours / differs from the agreed one */
    SCRAM_ERR_SECRET_MISMATCH,  /* client with keys: server's salt or iterations differ from
                                 * the secret's, so the keys cannot be right for it */
    SCRAM_ERR_SERVER_SIGNATURE, /* server's "v=" is wrong: it does not know the secret */
    SCRAM_ERR_SERVER_REJECTED,  /* server answered "e=..." */
    SCRAM_ERR_OUT_OF_ORDER,     /* step called in the wrong state, or after a failure */
    SCRAM_ERR_BUFFER,           /* caller's output buffer too small */
    SCRAM_ERR_INTERNAL,         /* OpenSSL or memory allocation failed */
};

/* Short name of a status for logs ("ok", "wrong password", ...). */
const char *scram_status_str(enum scram_status status);

/* A SCRAM secret as stored by PostgreSQL (pg_authid.rolpassword) and
 * PgBouncer's auth_file: SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>. */
struct scram_secret {
    int iterations;
    uint8_t salt[SCRAM_MAX_SALT_LEN];
    int salt_len;
    uint8_t stored_key[SCRAM_KEY_LEN];
    uint8_t server_key[SCRAM_KEY_LEN];
};

/* Parses a NUL-terminated secret text. Returns true and fills *out if text is
 * a well-formed SCRAM-SHA-256 secret (1 <= iterations <= SCRAM_MAX_ITERATIONS,
 * salt 1..SCRAM_MAX_SALT_LEN bytes, both keys exactly 32 bytes, strict
 * base64); otherwise returns false and leaves *out zeroed. */
bool scram_secret_parse(const char *text, struct scram_secret *out);

/* Derives the secret PostgreSQL would store for password (raw bytes, see the
 * SASLprep note above) with the given salt (1..SCRAM_MAX_SALT_LEN bytes) and
 * iterations (1..SCRAM_MAX_ITERATIONS). Costs one PBKDF2 run. Returns false
 * on bad arguments or OpenSSL failure (*out zeroed then). */
bool scram_secret_from_password(const char *password, const uint8_t *salt, int salt_len,
                                int iterations, struct scram_secret *out);

/* A salt for user that stays the same for a given key (HMAC-SHA-256 of the
 * name, cut to salt_len, 1..SCRAM_KEY_LEN bytes): a process that derives
 * secrets for plain passwords and mock secrets for unknown users with one
 * key shows each user one salt, as a stored SCRAM secret does. */
bool scram_user_salt(const uint8_t key[SCRAM_KEY_LEN], const char *user, uint8_t *salt,
                     int salt_len);

/* Writes the secret's text form into buf (len >= SCRAM_SECRET_MAX_LEN always
 * suffices). Returns false, with buf set to "" when len > 0, if it does not fit. */
bool scram_secret_format(const struct scram_secret *secret, char *buf, size_t len);

/* ---- server side: sluice verifies a connecting client ---- */

struct scram_server {
    int state;                      /* private enum in scram.c */
    char gs2[SCRAM_GS2_MAX];        /* the client's GS2 header, repeated in its c= */
    int gs2_len;                    /* 0 before client-first-message */
    uint8_t cbind[SCRAM_CBIND_MAX]; /* our certificate's hash, when binding is offered */
    int cbind_len;                  /* 0: SCRAM-SHA-256-PLUS not offered */
    bool plus;                      /* the client chose SCRAM-SHA-256-PLUS */
    struct scram_secret secret;
    char *client_first_bare; /* heap, for AuthMessage */
    char *server_first;      /* heap, for AuthMessage */
    char *nonce;             /* heap, client nonce + ours */
    char *test_nonce;        /* heap, our nonce part when forced by the test hook */
    uint8_t client_key[SCRAM_KEY_LEN];
    bool have_client_key;
};

/* Prepares *s (any prior content is overwritten, not freed) to verify a
 * client against stored_secret, which is a plain password or a SCRAM secret
 * (as from auth_userlist_find()). A plain password is turned into a SCRAM
 * secret with a fresh random salt and SCRAM_DEFAULT_ITERATIONS (one PBKDF2
 * run). Returns false for an md5 secret (SCRAM is impossible with it), a NULL
 * secret or a crypto failure; *s is then still safe to scram_server_free(). */
bool scram_server_init(struct scram_server *s, const char *stored_secret);
/* The same, a plain password turned into a secret of that many iterations
 * (scram_iterations, 1 to SCRAM_MAX_ITERATIONS). */
bool scram_server_init_iter(struct scram_server *s, const char *stored_secret, int iterations);

/* Like scram_server_init() with an already parsed or derived secret (copied).
 * Lets a caller that derived a secret from a plain password once reuse it
 * for later logins instead of paying a PBKDF2 run each time. Returns false
 * if the secret is not usable (no salt, iterations out of range). */
bool scram_server_init_secret(struct scram_server *s, const struct scram_secret *secret);

/* Offers channel binding on a TLS connection: data is the
 * tls-server-end-point hash of the certificate we presented (1 to
 * SCRAM_CBIND_MAX bytes, copied). The caller then lists
 * SCRAM_PLUS_MECHANISM before SCRAM_MECHANISM. Call after init, before
 * scram_server_first(). false (nothing changed) on bad arguments or state. */
bool scram_server_set_cbind(struct scram_server *s, const uint8_t *data, size_t len);

/* Records the mechanism named in the SASLInitialResponse. Returns false for
 * a name other than SCRAM_MECHANISM, or SCRAM_PLUS_MECHANISM when no binding
 * was offered: the caller refuses the message. Without a call the exchange
 * is plain SCRAM_MECHANISM. */
bool scram_server_set_mechanism(struct scram_server *s, const char *mech);

/* Consumes the client-first-message (SASLInitialResponse data, len bytes, not
 * NUL-terminated) and writes the server-first-message into out (outcap bytes,
 * NUL-terminated, length in *outlen) for an AuthenticationSASLContinue. */
enum scram_status scram_server_first(struct scram_server *s, const uint8_t *client_first,
                                     size_t len, char *out, size_t outcap, size_t *outlen,
                                     const char **errmsg);

/* Consumes the client-final-message (SASLResponse data) and checks the proof.
 * On SCRAM_OK writes the server-final-message "v=..." into out for an
 * AuthenticationSASLFinal (then send AuthenticationOk) and the client's
 * ClientKey becomes available from scram_server_client_key(). A wrong proof
 * gives SCRAM_ERR_WRONG_PASSWORD and no output. */
enum scram_status scram_server_final(struct scram_server *s, const uint8_t *client_final,
                                     size_t len, char *out, size_t outcap, size_t *outlen,
                                     const char **errmsg);

/* After a successful scram_server_final(), copies the client's ClientKey
 * (ClientProof XOR HMAC(StoredKey, AuthMessage)) to out and returns true;
 * false before that. With it and the same secret, scram_client_init_keys()
 * logs into PostgreSQL as that user without knowing the password. */
bool scram_server_client_key(const struct scram_server *s, uint8_t out[SCRAM_KEY_LEN]);

/* Wipes key material and frees the heap of *s; *s is zeroed and may be
 * initialised again. Safe on a zeroed struct and twice in a row. */
void scram_server_free(struct scram_server *s);

/* TEST ONLY (known-answer vectors): forces our part of the nonce instead of
 * random bytes. Call after scram_server_init(), before scram_server_first().
 * nonce: 1..SCRAM_MAX_NONCE printable ASCII characters, no ','. */
bool scram_server_test_set_nonce(struct scram_server *s, const char *nonce);

/* ---- client side: sluice logs into a PostgreSQL server ---- */

struct scram_client {
    int state; /* private enum in scram.c */
    bool use_keys;
    char gs2[SCRAM_GS2_MAX];        /* GS2 header we send: "n,,", "y,," or "p=...,," */
    uint8_t cbind[SCRAM_CBIND_MAX]; /* server certificate's hash when binding */
    int cbind_len;
    char *password;  /* heap, password mode */
    char *test_user; /* heap, user name forced by the test hook */
    uint8_t client_key[SCRAM_KEY_LEN];
    struct scram_secret secret;              /* keys mode: expected salt, iterations, ServerKey */
    char nonce[SCRAM_MAX_NONCE + 1];         /* our nonce */
    char *client_first_bare;                 /* heap, for AuthMessage */
    uint8_t server_signature[SCRAM_KEY_LEN]; /* the "v=" we expect */
};

/* Prepares *c (prior content overwritten, not freed) to authenticate with a
 * password (copied; raw bytes, see the SASLprep note above). */
void scram_client_init_password(struct scram_client *c, const char *password);

/* Prepares *c to authenticate with a ClientKey recovered by
 * scram_server_client_key() and the SCRAM secret the server holds for this
 * user (its salt, iterations and ServerKey; copied). */
void scram_client_init_keys(struct scram_client *c, const uint8_t client_key[SCRAM_KEY_LEN],
                            const struct scram_secret *secret);

/* Channel binding for an exchange over TLS. With data (the server
 * certificate's tls-server-end-point hash, 1 to SCRAM_CBIND_MAX bytes,
 * copied) the exchange binds ("p=tls-server-end-point") and the caller names
 * SCRAM_PLUS_MECHANISM; with data NULL the header is "y,,": we could bind but
 * the server offered no SCRAM-SHA-256-PLUS (RFC 5802's downgrade signal).
 * Call after init, before scram_client_first(). false on bad arguments. */
bool scram_client_set_cbind(struct scram_client *c, const uint8_t *data, size_t len);

/* Writes the client-first-message "<gs2 header>n=,r=<nonce>" for
 * SASLInitialResponse (the GS2 header is "n,," unless scram_client_set_cbind()
 * said otherwise). */
enum scram_status scram_client_first(struct scram_client *c, char *out, size_t outcap,
                                     size_t *outlen);

/* Consumes the server-first-message (AuthenticationSASLContinue data) and
 * writes the client-final-message for SASLResponse. The server's nonce must
 * strictly extend ours. With a password the keys are derived from the
 * server's salt and iterations (one PBKDF2 run); with keys, the server's salt
 * and iterations must equal the secret's (else SCRAM_ERR_SECRET_MISMATCH). */
enum scram_status scram_client_final(struct scram_client *c, const uint8_t *server_first,
                                     size_t len, char *out, size_t outcap, size_t *outlen,
                                     const char **errmsg);

/* Consumes the server-final-message (AuthenticationSASLFinal data) and checks
 * the server's signature. SCRAM_OK means the server proved it knows the
 * secret; "e=..." gives SCRAM_ERR_SERVER_REJECTED. */
enum scram_status scram_client_verify(struct scram_client *c, const uint8_t *server_final,
                                      size_t len, const char **errmsg);

/* Wipes the password and key material and frees the heap of *c; *c is zeroed.
 * Safe on a zeroed struct and twice in a row. */
void scram_client_free(struct scram_client *c);

/* TEST ONLY (known-answer vectors): forces the nonce and the user name put in
 * client-first-message (PostgreSQL ignores it; RFC 7677's example uses
 * "user"). user may be NULL for "". Call after init, before
 * scram_client_first(). nonce: 1..SCRAM_MAX_NONCE printable ASCII, no ','. */
bool scram_client_test_set_nonce(struct scram_client *c, const char *user, const char *nonce);

#endif
