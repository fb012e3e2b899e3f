/* scram.c - SCRAM-SHA-256 client and server (RFC 5802, RFC 7677), PostgreSQL flavour.
 *
 * Keys, as RFC 5802 section 3 names them:
 *   SaltedPassword  = PBKDF2-HMAC-SHA-256(password, salt, iterations)
 *   ClientKey       = HMAC(SaltedPassword, "Client Key")
 *   StoredKey       = SHA-256(ClientKey)
 *   ServerKey       = HMAC(SaltedPassword, "Server Key")
 *   AuthMessage     = client-first-message-bare "," server-first-message ","
 *                     client-final-message-without-proof
 *   ClientProof     = ClientKey XOR HMAC(StoredKey, AuthMessage)
 *   ServerSignature = HMAC(ServerKey, AuthMessage)
 * The server holds only StoredKey and ServerKey; from a valid proof it can
 * recover ClientKey, which is all a client needs to log in elsewhere with
 * the same secret. That is how sluice logs into PostgreSQL as a SCRAM user
 * whose password it never saw.
 *
 * Parsing works on (pointer, length) and never reads past len, because the
 * messages arrive as raw protocol payloads, not C strings.
 */
#include "scram.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "log.h"

#define SCRAM_PREFIX "SCRAM-SHA-256$"
/* 18 random bytes give a 24-character base64 nonce, as PostgreSQL uses. */
#define NONCE_RAW_LEN 18
/* Room for AuthMessage: three messages of at most SCRAM_MAX_MESSAGE, two commas. */
#define AUTH_MESSAGE_CAP (3 * SCRAM_MAX_MESSAGE + 3)
_Static_assert(sizeof("p=" SCRAM_CBIND_TYPE ",,") <= SCRAM_GS2_MAX, "GS2 header buffer");

/* Server exchange states. */
enum scram_server_state {
    SCRAM_SERVER_UNINIT = 0, /* zeroed struct, never initialised */
    SCRAM_SERVER_READY,      /* initialised, waiting for client-first-message */
    SCRAM_SERVER_FIRST_SENT, /* server-first-message produced, waiting for client-final */
    SCRAM_SERVER_DONE,       /* client proved it knows the password */
    SCRAM_SERVER_FAILED,     /* init or a step failed; the exchange is over */
};

/* Client exchange states. */
enum scram_client_state {
    SCRAM_CLIENT_UNINIT = 0, /* zeroed struct, never initialised */
    SCRAM_CLIENT_READY,      /* initialised, client-first-message not yet produced */
    SCRAM_CLIENT_FIRST_SENT, /* waiting for server-first-message */
    SCRAM_CLIENT_FINAL_SENT, /* waiting for server-final-message */
    SCRAM_CLIENT_DONE,       /* server proved it knows the secret */
    SCRAM_CLIENT_FAILED,     /* a step failed; the exchange is over */
};

const char *scram_status_str(enum scram_status status)
{
    switch (status) {
    case SCRAM_OK:
        return "ok";
    case SCRAM_ERR_MALFORMED:
        return "malformed message";
    case SCRAM_ERR_TOO_LONG:
        return "message too long";
    case SCRAM_ERR_WRONG_PASSWORD:
        return "wrong password";
    case SCRAM_ERR_CHANNEL_BINDING:
        return "unsupported channel binding";
    case SCRAM_ERR_UNSUPPORTED:
        return "unsupported SCRAM feature";
    case SCRAM_ERR_NONCE_MISMATCH:
        return "nonce mismatch";
    case SCRAM_ERR_SECRET_MISMATCH:
        return "secret mismatch";
    case SCRAM_ERR_SERVER_SIGNATURE:
        return "bad server signature";
    case SCRAM_ERR_SERVER_REJECTED:
        return "rejected by server";
    case SCRAM_ERR_OUT_OF_ORDER:
        return "out of order";
    case SCRAM_ERR_BUFFER:
        return "buffer too small";
    case SCRAM_ERR_INTERNAL:
        return "internal error";
    }
    return "?";
}

/* ---- small helpers ---- */

/* A bounded string builder: appends until full, then only remembers that it
 * overflowed, so callers check once at the end. */
struct sbuf {
    char *buf;
    size_t cap; /* >= 1 */
    size_t len;
    bool overflow;
};

static void sb_init(struct sbuf *b, char *buf, size_t cap)
{
    b->buf = buf;
    b->cap = cap;
    b->len = 0;
    b->overflow = false;
    buf[0] = '\0';
}

static void sb_put(struct sbuf *b, const char *s, size_t n)
{
    if (b->overflow || n > b->cap - 1 - b->len) {
        b->overflow = true;
        return;
    }
    memcpy(b->buf + b->len, s, n);
    b->len += n;
    b->buf[b->len] = '\0';
}

static void sb_puts(struct sbuf *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

static bool b64_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '/';
}

/* Encodes n bytes as padded base64 into out (cap bytes, NUL-terminated).
 * Returns the text length, or -1 if it does not fit. */
static int b64_encode(const uint8_t *in, size_t n, char *out, size_t cap)
{
    if (n > SCRAM_MAX_MESSAGE || 4 * ((n + 2) / 3) + 1 > cap)
        return -1;
    return EVP_EncodeBlock((unsigned char *)out, in, (int)n);
}

/* Decodes strict base64 (only the alphabet, length a multiple of 4, at most
 * two '=' and only at the end) into out (cap bytes). Returns the decoded
 * length or -1. EVP_DecodeBlock alone would skip blanks and count padding
 * as zero bytes, so the shape is checked here first. Non-zero bits in the
 * last character's unused part are tolerated, as most decoders do. */
static int b64_decode(const char *in, size_t n, uint8_t *out, size_t cap)
{
    if (n % 4 != 0 || n > SCRAM_MAX_MESSAGE)
        return -1;
    if (n == 0)
        return 0;
    size_t pad = 0;
    if (in[n - 1] == '=') {
        pad++;
        if (in[n - 2] == '=')
            pad++;
    }
    for (size_t i = 0; i < n - pad; i++)
        if (!b64_char((unsigned char)in[i]))
            return -1;
    size_t raw = n / 4 * 3;
    if (raw - pad > cap)
        return -1;
    uint8_t tmp[SCRAM_MAX_MESSAGE / 4 * 3];
    int r = EVP_DecodeBlock(tmp, (const unsigned char *)in, (int)n);
    if (r < 0 || (size_t)r != raw) {
        OPENSSL_cleanse(tmp, sizeof(tmp));
        return -1;
    }
    memcpy(out, tmp, raw - pad);
    OPENSSL_cleanse(tmp, raw);
    return (int)(raw - pad);
}

static bool hmac_sha256(const uint8_t *key, size_t keylen, const void *data, size_t n,
                        uint8_t out[SCRAM_KEY_LEN])
{
    unsigned int olen = 0;
    if (!HMAC(EVP_sha256(), key, (int)keylen, data, n, out, &olen))
        return false;
    return olen == SCRAM_KEY_LEN;
}

static bool sha256(const void *data, size_t n, uint8_t out[SCRAM_KEY_LEN])
{
    unsigned int olen = 0;
    if (EVP_Digest(data, n, out, &olen, EVP_sha256(), NULL) != 1)
        return false;
    return olen == SCRAM_KEY_LEN;
}

/* ClientKey, StoredKey and ServerKey from SaltedPassword. */
static bool keys_from_salted(const uint8_t salted[SCRAM_KEY_LEN], uint8_t client_key[SCRAM_KEY_LEN],
                             uint8_t stored_key[SCRAM_KEY_LEN], uint8_t server_key[SCRAM_KEY_LEN])
{
    return hmac_sha256(salted, SCRAM_KEY_LEN, "Client Key", 10, client_key) &&
           sha256(client_key, SCRAM_KEY_LEN, stored_key) &&
           hmac_sha256(salted, SCRAM_KEY_LEN, "Server Key", 10, server_key);
}

static bool salted_password(const char *password, const uint8_t *salt, int salt_len, int iterations,
                            uint8_t out[SCRAM_KEY_LEN])
{
    size_t plen = strlen(password);
    if (plen > (size_t)INT32_MAX)
        return false;
    return PKCS5_PBKDF2_HMAC(password, (int)plen, salt, salt_len, iterations, EVP_sha256(),
                             SCRAM_KEY_LEN, out) == 1;
}

/* printable = %x21-2B / %x2D-7E: what a nonce is made of (no ','). */
static bool printable(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x21 || c > 0x7e || c == ',')
            return false;
    }
    return true;
}

static bool nonce_ok(const char *nonce)
{
    size_t n = nonce ? strlen(nonce) : 0;
    return n >= 1 && n <= SCRAM_MAX_NONCE && printable(nonce, n);
}

/* Secure random bytes; there is no going on without them. */
static void random_bytes(uint8_t *buf, size_t len)
{
    if (RAND_bytes(buf, (int)len) != 1) {
        log_error("OpenSSL RAND_bytes failed: no secure random bytes; aborting");
        abort();
    }
}

/* Fills out (>= 25 bytes) with a fresh 24-character random nonce. */
static void random_nonce(char *out, size_t cap)
{
    uint8_t raw[NONCE_RAW_LEN];
    random_bytes(raw, sizeof(raw));
    (void)b64_encode(raw, sizeof(raw), out, cap);
}

/* Parses 1*DIGIT into 1..SCRAM_MAX_ITERATIONS. */
static bool parse_iterations(const char *s, size_t n, int *out)
{
    if (n == 0 || n > 9)
        return false;
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    if (v < 1 || v > SCRAM_MAX_ITERATIONS)
        return false;
    *out = (int)v;
    return true;
}

/* saslname = 1*(value-safe-char / "=2C" / "=3D"), here also allowed empty
 * because PostgreSQL clients send "n=". */
static bool saslname_ok(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '=')
            continue;
        if (n - i < 3)
            return false;
        bool comma = s[i + 1] == '2' && s[i + 2] == 'C';
        bool equals = s[i + 1] == '3' && s[i + 2] == 'D';
        if (!comma && !equals)
            return false;
        i += 2;
    }
    return true;
}

/* Walks "x=value,y=value,..." attributes of one message. */
struct attrs {
    const char *p;
    const char *end;
    bool more; /* nothing read yet, or a ',' was consumed: an attribute must follow */
};

static void attrs_init(struct attrs *a, const char *p, size_t n)
{
    a->p = p;
    a->end = p + n;
    a->more = true;
}

/* Reads the next attribute. Returns false if there is none or it is not
 * ALPHA "=" value. */
static bool attrs_next(struct attrs *a, char *name, const char **val, size_t *vlen)
{
    if (!a->more || a->end - a->p < 2)
        return false;
    char c = a->p[0];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) || a->p[1] != '=')
        return false;
    const char *v = a->p + 2;
    const char *comma = memchr(v, ',', (size_t)(a->end - v));
    const char *vend = comma ? comma : a->end;
    *name = c;
    *val = v;
    *vlen = (size_t)(vend - v);
    a->more = comma != NULL;
    a->p = comma ? comma + 1 : a->end;
    return true;
}

/* Reads the remaining attributes as extensions: ignored, but each must be
 * well-formed and non-empty. */
static bool attrs_skip_extensions(struct attrs *a)
{
    while (a->more) {
        char name;
        const char *val;
        size_t vlen;
        if (!attrs_next(a, &name, &val, &vlen) || vlen == 0)
            return false;
    }
    return true;
}

/* Common checks on a peer's message. */
static enum scram_status check_message(const uint8_t *msg, size_t len, const char **why)
{
    if (len > SCRAM_MAX_MESSAGE) {
        *why = "SCRAM message too long";
        return SCRAM_ERR_TOO_LONG;
    }
    if (!msg || len == 0) {
        *why = "empty SCRAM message";
        return SCRAM_ERR_MALFORMED;
    }
    if (memchr(msg, '\0', len)) {
        *why = "NUL byte in SCRAM message";
        return SCRAM_ERR_MALFORMED;
    }
    return SCRAM_OK;
}

static enum scram_status put_out(const struct sbuf *msg, char *out, size_t outcap, size_t *outlen)
{
    if (msg->overflow || !out || msg->len + 1 > outcap)
        return SCRAM_ERR_BUFFER;
    memcpy(out, msg->buf, msg->len + 1);
    if (outlen)
        *outlen = msg->len;
    return SCRAM_OK;
}

static char *dup_n(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

static void free_str(char **p)
{
    if (*p) {
        OPENSSL_cleanse(*p, strlen(*p));
        free(*p);
        *p = NULL;
    }
}

static void xor_keys(uint8_t *out, const uint8_t *a, const uint8_t *b)
{
    for (int i = 0; i < SCRAM_KEY_LEN; i++)
        out[i] = (uint8_t)(a[i] ^ b[i]);
}

/* ---- secrets ---- */

bool scram_secret_parse(const char *text, struct scram_secret *out)
{
    struct scram_secret sec;
    memset(&sec, 0, sizeof(sec));
    memset(out, 0, sizeof(*out));
    if (!text || strncmp(text, SCRAM_PREFIX, strlen(SCRAM_PREFIX)) != 0)
        return false;
    const char *p = text + strlen(SCRAM_PREFIX);
    size_t total = strlen(p);
    if (total > SCRAM_SECRET_MAX_LEN)
        return false;

    /* <iter>:<salt>$<StoredKey>:<ServerKey> */
    const char *colon1 = strchr(p, ':');
    if (!colon1 || !parse_iterations(p, (size_t)(colon1 - p), &sec.iterations))
        return false;
    const char *salt = colon1 + 1;
    const char *dollar = strchr(salt, '$');
    if (!dollar)
        return false;
    int n = b64_decode(salt, (size_t)(dollar - salt), sec.salt, sizeof(sec.salt));
    if (n < 1)
        return false;
    sec.salt_len = n;
    const char *stored = dollar + 1;
    const char *colon2 = strchr(stored, ':');
    if (!colon2)
        return false;
    if (b64_decode(stored, (size_t)(colon2 - stored), sec.stored_key, SCRAM_KEY_LEN) !=
        SCRAM_KEY_LEN)
        return false;
    const char *server = colon2 + 1;
    if (b64_decode(server, strlen(server), sec.server_key, SCRAM_KEY_LEN) != SCRAM_KEY_LEN)
        return false;
    *out = sec;
    OPENSSL_cleanse(&sec, sizeof(sec));
    return true;
}

bool scram_secret_from_password(const char *password, const uint8_t *salt, int salt_len,
                                int iterations, struct scram_secret *out)
{
    memset(out, 0, sizeof(*out));
    if (!password || !salt || salt_len < 1 || salt_len > SCRAM_MAX_SALT_LEN || iterations < 1 ||
        iterations > SCRAM_MAX_ITERATIONS)
        return false;
    uint8_t salted[SCRAM_KEY_LEN], client_key[SCRAM_KEY_LEN];
    bool ok = salted_password(password, salt, salt_len, iterations, salted) &&
              keys_from_salted(salted, client_key, out->stored_key, out->server_key);
    OPENSSL_cleanse(salted, sizeof(salted));
    OPENSSL_cleanse(client_key, sizeof(client_key));
    if (!ok) {
        OPENSSL_cleanse(out, sizeof(*out));
        return false;
    }
    out->iterations = iterations;
    memcpy(out->salt, salt, (size_t)salt_len);
    out->salt_len = salt_len;
    return true;
}

bool scram_user_salt(const uint8_t key[SCRAM_KEY_LEN], const char *user, uint8_t *salt,
                     int salt_len)
{
    uint8_t mac[SCRAM_KEY_LEN];
    if (salt_len < 1 || salt_len > SCRAM_KEY_LEN ||
        !hmac_sha256(key, SCRAM_KEY_LEN, user, strlen(user), mac))
        return false;
    memcpy(salt, mac, (size_t)salt_len);
    return true;
}

bool scram_secret_format(const struct scram_secret *secret, char *buf, size_t len)
{
    char salt[SCRAM_MAX_SALT_LEN / 3 * 4 + 8], stored[48], server[48];
    if (len == 0)
        return false;
    buf[0] = '\0';
    if (secret->salt_len < 1 || secret->salt_len > SCRAM_MAX_SALT_LEN ||
        b64_encode(secret->salt, (size_t)secret->salt_len, salt, sizeof(salt)) < 0 ||
        b64_encode(secret->stored_key, SCRAM_KEY_LEN, stored, sizeof(stored)) < 0 ||
        b64_encode(secret->server_key, SCRAM_KEY_LEN, server, sizeof(server)) < 0)
        return false;
    int n =
        snprintf(buf, len, SCRAM_PREFIX "%d:%s$%s:%s", secret->iterations, salt, stored, server);
    if (n < 0 || (size_t)n >= len) {
        buf[0] = '\0';
        return false;
    }
    return true;
}

/* ---- server side ---- */

static enum scram_status server_fail(struct scram_server *s, enum scram_status st, const char *why,
                                     const char **errmsg)
{
    s->state = SCRAM_SERVER_FAILED;
    if (errmsg)
        *errmsg = why;
    return st;
}

bool scram_server_init(struct scram_server *s, const char *stored_secret)
{
    return scram_server_init_iter(s, stored_secret, SCRAM_DEFAULT_ITERATIONS);
}

bool scram_server_init_iter(struct scram_server *s, const char *stored_secret, int iterations)
{
    memset(s, 0, sizeof(*s));
    s->state = SCRAM_SERVER_FAILED;
    if (!stored_secret)
        return false;
    if (!scram_secret_parse(stored_secret, &s->secret)) {
        /* An md5 hash ("md5" and 32 hex digits, as PostgreSQL tells them)
         * hides the password SCRAM needs, so no exchange can succeed. */
        if (strncmp(stored_secret, "md5", 3) == 0 && strlen(stored_secret) == 35)
            return false;
        uint8_t salt[SCRAM_DEFAULT_SALT_LEN];
        random_bytes(salt, sizeof(salt));
        if (!scram_secret_from_password(stored_secret, salt, (int)sizeof(salt), iterations,
                                        &s->secret))
            return false;
    }
    s->state = SCRAM_SERVER_READY;
    return true;
}

bool scram_server_init_secret(struct scram_server *s, const struct scram_secret *secret)
{
    memset(s, 0, sizeof(*s));
    s->state = SCRAM_SERVER_FAILED;
    if (!secret || secret->salt_len < 1 || secret->salt_len > SCRAM_MAX_SALT_LEN ||
        secret->iterations < 1 || secret->iterations > SCRAM_MAX_ITERATIONS)
        return false;
    s->secret = *secret;
    s->state = SCRAM_SERVER_READY;
    return true;
}

bool scram_server_test_set_nonce(struct scram_server *s, const char *nonce)
{
    if (s->state != SCRAM_SERVER_READY || !nonce_ok(nonce))
        return false;
    free_str(&s->test_nonce);
    s->test_nonce = dup_n(nonce, strlen(nonce));
    return s->test_nonce != NULL;
}

bool scram_server_set_cbind(struct scram_server *s, const uint8_t *data, size_t len)
{
    if (s->state != SCRAM_SERVER_READY || !data || len < 1 || len > SCRAM_CBIND_MAX)
        return false;
    memcpy(s->cbind, data, len);
    s->cbind_len = (int)len;
    return true;
}

bool scram_server_set_mechanism(struct scram_server *s, const char *mech)
{
    if (strcmp(mech, SCRAM_MECHANISM) == 0)
        s->plus = false;
    else if (strcmp(mech, SCRAM_PLUS_MECHANISM) == 0 && s->cbind_len > 0)
        s->plus = true;
    else
        return false;
    return true;
}

/* Reads the GS2 header at *pp and checks it against what we offered and
 * the mechanism the client chose (PostgreSQL's rules): "p=" needs the
 * binding we offered and SCRAM-SHA-256-PLUS; "y" means the client thinks we
 * cannot bind, a downgrade when we offered binding; "n" cannot go with
 * -PLUS. The header is kept: the client's c= must repeat it. */
static enum scram_status server_read_gs2(struct scram_server *s, const char **pp, const char *end,
                                         const char **errmsg)
{
    const char *p = *pp;
    if (p[0] == 'p' && end - p >= 2 && p[1] == '=') {
        if (s->cbind_len == 0)
            return server_fail(s, SCRAM_ERR_CHANNEL_BINDING,
                               "client requires SCRAM channel binding, which is not supported",
                               errmsg);
        if (!s->plus)
            return server_fail(s, SCRAM_ERR_MALFORMED,
                               "malformed SCRAM message: channel binding without -PLUS", errmsg);
        size_t n = strlen(SCRAM_CBIND_TYPE);
        if ((size_t)(end - p) < 2 + n + 1 || memcmp(p + 2, SCRAM_CBIND_TYPE, n) != 0 ||
            p[2 + n] != ',')
            return server_fail(s, SCRAM_ERR_CHANNEL_BINDING,
                               "unsupported SCRAM channel-binding type", errmsg);
        p += 2 + n + 1;
    } else if (p[0] == 'n' || p[0] == 'y') {
        if (s->plus)
            return server_fail(s, SCRAM_ERR_MALFORMED,
                               "malformed SCRAM message: -PLUS without channel binding", errmsg);
        if (p[0] == 'y' && s->cbind_len > 0)
            return server_fail(s, SCRAM_ERR_CHANNEL_BINDING,
                               "SCRAM channel binding negotiation error: the client thinks the "
                               "server cannot bind, but it offered SCRAM-SHA-256-PLUS",
                               errmsg);
        if (end - p < 3 || p[1] != ',')
            return server_fail(s, SCRAM_ERR_MALFORMED,
                               "malformed SCRAM message: comma expected after channel-binding flag",
                               errmsg);
        p += 2;
    } else {
        return server_fail(s, SCRAM_ERR_MALFORMED,
                           "malformed SCRAM message: unexpected channel-binding flag", errmsg);
    }
    if (p < end && p[0] == 'a')
        return server_fail(s, SCRAM_ERR_UNSUPPORTED,
                           "client uses an authorization identity, which is not supported", errmsg);
    if (p >= end || p[0] != ',')
        return server_fail(s, SCRAM_ERR_MALFORMED,
                           "malformed SCRAM message: comma expected after GS2 header", errmsg);
    p++;
    /* Only "n,,", "y,," and "p=" SCRAM_CBIND_TYPE ",," get here: they fit. */
    size_t n = (size_t)(p - *pp);
    memcpy(s->gs2, *pp, n);
    s->gs2_len = (int)n;
    *pp = p;
    return SCRAM_OK;
}

/* client-first-message = gs2-header client-first-message-bare
 * gs2-header = gs2-cbind-flag "," [authzid] ","
 * client-first-message-bare = [reserved-mext ","] username "," nonce ["," extensions] */
enum scram_status scram_server_first(struct scram_server *s, const uint8_t *client_first,
                                     size_t len, char *out, size_t outcap, size_t *outlen,
                                     const char **errmsg)
{
    const char *why = NULL;
    enum scram_status st;

    if (errmsg)
        *errmsg = NULL;
    if (outlen)
        *outlen = 0;
    if (s->state != SCRAM_SERVER_READY)
        return server_fail(s, SCRAM_ERR_OUT_OF_ORDER, "unexpected client-first-message", errmsg);
    st = check_message(client_first, len, &why);
    if (st != SCRAM_OK)
        return server_fail(s, st, why, errmsg);

    const char *p = (const char *)client_first;
    const char *end = p + len;

    /* GS2 header. */
    st = server_read_gs2(s, &p, end, errmsg);
    if (st != SCRAM_OK)
        return st;

    /* client-first-message-bare */
    const char *bare = p;
    size_t bare_len = (size_t)(end - p);
    struct attrs a;
    char name;
    const char *val;
    size_t vlen;
    attrs_init(&a, bare, bare_len);
    if (!attrs_next(&a, &name, &val, &vlen))
        return server_fail(s, SCRAM_ERR_MALFORMED,
                           "malformed SCRAM message: user name attribute expected", errmsg);
    if (name == 'm')
        return server_fail(s, SCRAM_ERR_UNSUPPORTED,
                           "client requires an unsupported SCRAM extension", errmsg);
    /* The name itself is ignored: PostgreSQL authenticates the startup user. */
    if (name != 'n' || !saslname_ok(val, vlen))
        return server_fail(s, SCRAM_ERR_MALFORMED,
                           "malformed SCRAM message: user name attribute expected", errmsg);
    if (!attrs_next(&a, &name, &val, &vlen) || name != 'r' || vlen == 0)
        return server_fail(s, SCRAM_ERR_MALFORMED,
                           "malformed SCRAM message: nonce attribute expected", errmsg);
    if (vlen > SCRAM_MAX_NONCE)
        return server_fail(s, SCRAM_ERR_TOO_LONG, "SCRAM client nonce too long", errmsg);
    if (!printable(val, vlen))
        return server_fail(s, SCRAM_ERR_MALFORMED,
                           "malformed SCRAM message: invalid characters in nonce", errmsg);
    const char *cnonce = val;
    size_t cnonce_len = vlen;
    if (!attrs_skip_extensions(&a))
        return server_fail(s, SCRAM_ERR_MALFORMED, "malformed SCRAM message: garbage after nonce",
                           errmsg);

    /* Our nonce part, then server-first-message = nonce "," salt "," iteration-count */
    char snonce[SCRAM_MAX_NONCE + 1];
    if (s->test_nonce)
        snprintf(snonce, sizeof(snonce), "%s", s->test_nonce);
    else
        random_nonce(snonce, sizeof(snonce));
    char salt64[SCRAM_MAX_SALT_LEN / 3 * 4 + 8];
    if (b64_encode(s->secret.salt, (size_t)s->secret.salt_len, salt64, sizeof(salt64)) < 0)
        return server_fail(s, SCRAM_ERR_INTERNAL, "cannot encode the SCRAM salt", errmsg);
    char iter[16];
    snprintf(iter, sizeof(iter), "%d", s->secret.iterations);

    char msgbuf[SCRAM_MAX_MESSAGE + 1];
    struct sbuf m;
    sb_init(&m, msgbuf, sizeof(msgbuf));
    sb_puts(&m, "r=");
    sb_put(&m, cnonce, cnonce_len);
    sb_puts(&m, snonce);
    sb_puts(&m, ",s=");
    sb_puts(&m, salt64);
    sb_puts(&m, ",i=");
    sb_puts(&m, iter);
    st = put_out(&m, out, outcap, outlen);
    if (st != SCRAM_OK)
        return server_fail(s, st, "output buffer too small for server-first-message", errmsg);

    s->client_first_bare = dup_n(bare, bare_len);
    s->server_first = dup_n(m.buf, m.len);
    s->nonce = dup_n(m.buf + 2, cnonce_len + strlen(snonce));
    if (!s->client_first_bare || !s->server_first || !s->nonce)
        return server_fail(s, SCRAM_ERR_INTERNAL, "out of memory", errmsg);
    s->state = SCRAM_SERVER_FIRST_SENT;
    return SCRAM_OK;
}

/* Reads a client-final-message (len checked by check_message): the
 * channel binding must repeat the GS2 header, the nonce must be the
 * exchange's, and the proof must come last. Fills proof and *without_proof
 * (the length of client-final-message-without-proof, for AuthMessage), or
 * fails the exchange. */
static enum scram_status scram_server_read_final(struct scram_server *s, const char *msg,
                                                 size_t len, uint8_t proof[SCRAM_KEY_LEN],
                                                 size_t *without_proof, const char **errmsg)
{
    struct attrs a;
    char name;
    const char *val;
    size_t vlen;
    attrs_init(&a, msg, len);

    /* c= carries the GS2 header again, then with "p=" our certificate's
     * hash: the header must repeat the client's first message exactly (a
     * downgrade from "y" to "n" is noticed), and the hash proves that no
     * one in the middle terminated the client's TLS. */
    if (!attrs_next(&a, &name, &val, &vlen) || name != 'c')
        return server_fail(s, SCRAM_ERR_MALFORMED,
                           "malformed SCRAM message: channel binding attribute expected", errmsg);
    uint8_t cbind[SCRAM_GS2_MAX + SCRAM_CBIND_MAX + 3];
    int cblen = b64_decode(val, vlen, cbind, sizeof(cbind));
    if (cblen < s->gs2_len || memcmp(cbind, s->gs2, (size_t)s->gs2_len) != 0)
        return server_fail(s, SCRAM_ERR_MALFORMED, "SCRAM channel binding check failed", errmsg);
    int want = s->gs2[0] == 'p' ? s->cbind_len : 0;
    if (cblen - s->gs2_len != want ||
        CRYPTO_memcmp(cbind + s->gs2_len, s->cbind, (size_t)want) != 0)
        return server_fail(s, s->gs2[0] == 'p' ? SCRAM_ERR_CHANNEL_BINDING : SCRAM_ERR_MALFORMED,
                           "SCRAM channel binding check failed", errmsg);

    if (!attrs_next(&a, &name, &val, &vlen) || name != 'r')
        return server_fail(s, SCRAM_ERR_MALFORMED,
                           "malformed SCRAM message: nonce attribute expected", errmsg);
    if (vlen != strlen(s->nonce) || memcmp(val, s->nonce, vlen) != 0)
        return server_fail(s, SCRAM_ERR_NONCE_MISMATCH, "SCRAM nonce mismatch", errmsg);

    const char *proof64 = NULL;
    size_t proof64_len = 0;
    while (a.more) {
        if (!attrs_next(&a, &name, &val, &vlen) || vlen == 0)
            return server_fail(s, SCRAM_ERR_MALFORMED, "malformed SCRAM message: bad attribute",
                               errmsg);
        if (name == 'p') {
            proof64 = val;
            proof64_len = vlen;
            break;
        }
    }
    if (!proof64)
        return server_fail(s, SCRAM_ERR_MALFORMED, "malformed SCRAM message: proof missing",
                           errmsg);
    if (a.more)
        return server_fail(s, SCRAM_ERR_MALFORMED,
                           "malformed SCRAM message: proof must be the last attribute", errmsg);
    if (b64_decode(proof64, proof64_len, proof, SCRAM_KEY_LEN) != SCRAM_KEY_LEN)
        return server_fail(s, SCRAM_ERR_MALFORMED, "malformed SCRAM proof", errmsg);
    /* client-final-message-without-proof ends before ",p=". */
    *without_proof = (size_t)(proof64 - 3 - msg);
    return SCRAM_OK;
}

/* client-final-message = channel-binding "," nonce ["," extensions] "," proof */
enum scram_status scram_server_final(struct scram_server *s, const uint8_t *client_final,
                                     size_t len, char *out, size_t outcap, size_t *outlen,
                                     const char **errmsg)
{
    const char *why = NULL;
    enum scram_status st;

    if (errmsg)
        *errmsg = NULL;
    if (outlen)
        *outlen = 0;
    if (s->state != SCRAM_SERVER_FIRST_SENT)
        return server_fail(s, SCRAM_ERR_OUT_OF_ORDER, "unexpected client-final-message", errmsg);
    st = check_message(client_final, len, &why);
    if (st != SCRAM_OK)
        return server_fail(s, st, why, errmsg);

    const char *msg = (const char *)client_final;
    uint8_t proof[SCRAM_KEY_LEN];
    size_t without_proof;
    st = scram_server_read_final(s, msg, len, proof, &without_proof, errmsg);
    if (st != SCRAM_OK)
        return st;

    char am[AUTH_MESSAGE_CAP];
    struct sbuf amb;
    sb_init(&amb, am, sizeof(am));
    sb_puts(&amb, s->client_first_bare);
    sb_puts(&amb, ",");
    sb_puts(&amb, s->server_first);
    sb_puts(&amb, ",");
    sb_put(&amb, msg, without_proof);
    if (amb.overflow)
        return server_fail(s, SCRAM_ERR_INTERNAL, "SCRAM AuthMessage too long", errmsg);

    uint8_t client_sig[SCRAM_KEY_LEN], client_key[SCRAM_KEY_LEN], check[SCRAM_KEY_LEN];
    uint8_t server_sig[SCRAM_KEY_LEN];
    bool ok = hmac_sha256(s->secret.stored_key, SCRAM_KEY_LEN, amb.buf, amb.len, client_sig);
    if (ok) {
        xor_keys(client_key, proof, client_sig);
        ok = sha256(client_key, SCRAM_KEY_LEN, check) &&
             hmac_sha256(s->secret.server_key, SCRAM_KEY_LEN, amb.buf, amb.len, server_sig);
    }
    if (!ok)
        st = SCRAM_ERR_INTERNAL;
    else if (CRYPTO_memcmp(check, s->secret.stored_key, SCRAM_KEY_LEN) != 0)
        st = SCRAM_ERR_WRONG_PASSWORD;
    else {
        char sig64[48];
        char msgbuf[64];
        struct sbuf m;
        (void)b64_encode(server_sig, SCRAM_KEY_LEN, sig64, sizeof(sig64));
        sb_init(&m, msgbuf, sizeof(msgbuf));
        sb_puts(&m, "v=");
        sb_puts(&m, sig64);
        st = put_out(&m, out, outcap, outlen);
        if (st == SCRAM_OK) {
            memcpy(s->client_key, client_key, SCRAM_KEY_LEN);
            s->have_client_key = true;
        }
    }
    OPENSSL_cleanse(proof, sizeof(proof));
    OPENSSL_cleanse(client_sig, sizeof(client_sig));
    OPENSSL_cleanse(client_key, sizeof(client_key));
    OPENSSL_cleanse(check, sizeof(check));
    OPENSSL_cleanse(server_sig, sizeof(server_sig));
    OPENSSL_cleanse(am, amb.len);

    switch (st) {
    case SCRAM_OK:
        s->state = SCRAM_SERVER_DONE;
        return SCRAM_OK;
    case SCRAM_ERR_WRONG_PASSWORD:
        return server_fail(s, st, "SCRAM client proof does not match the stored secret", errmsg);
    case SCRAM_ERR_BUFFER:
        return server_fail(s, st, "output buffer too small for server-final-message", errmsg);
    default:
        return server_fail(s, st, "SCRAM computation failed", errmsg);
    }
}

bool scram_server_client_key(const struct scram_server *s, uint8_t out[SCRAM_KEY_LEN])
{
    if (s->state != SCRAM_SERVER_DONE || !s->have_client_key)
        return false;
    memcpy(out, s->client_key, SCRAM_KEY_LEN);
    return true;
}

void scram_server_free(struct scram_server *s)
{
    free_str(&s->client_first_bare);
    free_str(&s->server_first);
    free_str(&s->nonce);
    free_str(&s->test_nonce);
    OPENSSL_cleanse(s, sizeof(*s));
    memset(s, 0, sizeof(*s));
}

/* ---- client side ---- */

static enum scram_status scram_client_fail(struct scram_client *c, enum scram_status st,
                                           const char *why, const char **errmsg)
{
    c->state = SCRAM_CLIENT_FAILED;
    if (errmsg)
        *errmsg = why;
    return st;
}

void scram_client_init_password(struct scram_client *c, const char *password)
{
    memset(c, 0, sizeof(*c));
    c->password = password ? dup_n(password, strlen(password)) : NULL;
    /* Without a password copy nothing can work; scram_client_first() says so. */
    c->state = c->password ? SCRAM_CLIENT_READY : SCRAM_CLIENT_FAILED;
}

void scram_client_init_keys(struct scram_client *c, const uint8_t client_key[SCRAM_KEY_LEN],
                            const struct scram_secret *secret)
{
    memset(c, 0, sizeof(*c));
    c->use_keys = true;
    memcpy(c->client_key, client_key, SCRAM_KEY_LEN);
    c->secret = *secret;
    c->state = SCRAM_CLIENT_READY;
}

bool scram_client_test_set_nonce(struct scram_client *c, const char *user, const char *nonce)
{
    if (c->state != SCRAM_CLIENT_READY || !nonce_ok(nonce))
        return false;
    snprintf(c->nonce, sizeof(c->nonce), "%s", nonce);
    free_str(&c->test_user);
    if (user) {
        c->test_user = dup_n(user, strlen(user));
        if (!c->test_user)
            return false;
    }
    return true;
}

bool scram_client_set_cbind(struct scram_client *c, const uint8_t *data, size_t len)
{
    if (c->state != SCRAM_CLIENT_READY || (data && (len < 1 || len > SCRAM_CBIND_MAX)))
        return false;
    if (data) {
        snprintf(c->gs2, sizeof(c->gs2), "p=%s,,", SCRAM_CBIND_TYPE);
        memcpy(c->cbind, data, len);
        c->cbind_len = (int)len;
    } else {
        snprintf(c->gs2, sizeof(c->gs2), "y,,");
        c->cbind_len = 0;
    }
    return true;
}

enum scram_status scram_client_first(struct scram_client *c, char *out, size_t outcap,
                                     size_t *outlen)
{
    if (outlen)
        *outlen = 0;
    if (c->state != SCRAM_CLIENT_READY) {
        /* A failed init (no memory for the password copy) lands here too. */
        bool init_failed = c->state == SCRAM_CLIENT_FAILED && !c->use_keys && !c->password;
        return scram_client_fail(c, init_failed ? SCRAM_ERR_INTERNAL : SCRAM_ERR_OUT_OF_ORDER, NULL,
                                 NULL);
    }
    if (!c->nonce[0])
        random_nonce(c->nonce, sizeof(c->nonce));

    char msgbuf[SCRAM_MAX_MESSAGE + 1];
    struct sbuf m;
    sb_init(&m, msgbuf, sizeof(msgbuf));
    /* PostgreSQL ignores this name and libpq sends it empty; only the test
     * hook sets one. ',' and '=' must be escaped in a saslname. */
    if (!c->gs2[0])
        snprintf(c->gs2, sizeof(c->gs2), "n,,");
    size_t gs2_len = strlen(c->gs2);
    sb_puts(&m, c->gs2);
    sb_puts(&m, "n=");
    for (const char *u = c->test_user ? c->test_user : ""; *u; u++) {
        if (*u == ',')
            sb_puts(&m, "=2C");
        else if (*u == '=')
            sb_puts(&m, "=3D");
        else
            sb_put(&m, u, 1);
    }
    sb_puts(&m, ",r=");
    sb_puts(&m, c->nonce);
    enum scram_status st = put_out(&m, out, outcap, outlen);
    if (st != SCRAM_OK)
        return scram_client_fail(c, st, NULL, NULL);
    c->client_first_bare = dup_n(m.buf + gs2_len, m.len - gs2_len);
    if (!c->client_first_bare)
        return scram_client_fail(c, SCRAM_ERR_INTERNAL, NULL, NULL);
    c->state = SCRAM_CLIENT_FIRST_SENT;
    return SCRAM_OK;
}

/* What a server-first-message says. */
struct scram_server_first_msg {
    const char *nonce; /* the client's nonce and the server's part; not NUL-terminated */
    size_t nonce_len;
    uint8_t salt[SCRAM_MAX_SALT_LEN];
    int salt_len;
    int iterations;
};

/* Reads a server-first-message (len checked by check_message) into *f, or
 * fails the exchange. The nonce must extend the client's. */
static enum scram_status scram_client_read_first(struct scram_client *c, const char *msg,
                                                 size_t len, struct scram_server_first_msg *f,
                                                 const char **errmsg)
{
    struct attrs a;
    char name;
    const char *val;
    size_t vlen;
    attrs_init(&a, msg, len);

    if (!attrs_next(&a, &name, &val, &vlen))
        return scram_client_fail(c, SCRAM_ERR_MALFORMED,
                                 "malformed SCRAM message: nonce attribute expected", errmsg);
    if (name == 'm')
        return scram_client_fail(c, SCRAM_ERR_UNSUPPORTED,
                                 "server requires an unsupported SCRAM extension", errmsg);
    if (name != 'r' || !printable(val, vlen))
        return scram_client_fail(c, SCRAM_ERR_MALFORMED,
                                 "malformed SCRAM message: nonce attribute expected", errmsg);
    if (vlen > 2 * SCRAM_MAX_NONCE)
        return scram_client_fail(c, SCRAM_ERR_TOO_LONG, "SCRAM server nonce too long", errmsg);
    size_t cnlen = strlen(c->nonce);
    /* The server must add its own part, else it could be replaying ours. */
    if (vlen <= cnlen || memcmp(val, c->nonce, cnlen) != 0)
        return scram_client_fail(c, SCRAM_ERR_NONCE_MISMATCH,
                                 "SCRAM server nonce does not extend the client nonce", errmsg);
    f->nonce = val;
    f->nonce_len = vlen;

    if (!attrs_next(&a, &name, &val, &vlen) || name != 's' ||
        (f->salt_len = b64_decode(val, vlen, f->salt, sizeof(f->salt))) < 1)
        return scram_client_fail(c, SCRAM_ERR_MALFORMED, "malformed SCRAM message: bad salt",
                                 errmsg);
    if (!attrs_next(&a, &name, &val, &vlen) || name != 'i' ||
        !parse_iterations(val, vlen, &f->iterations))
        return scram_client_fail(c, SCRAM_ERR_MALFORMED,
                                 "malformed SCRAM message: bad iteration count", errmsg);
    if (!attrs_skip_extensions(&a))
        return scram_client_fail(c, SCRAM_ERR_MALFORMED,
                                 "malformed SCRAM message: garbage after iteration count", errmsg);
    return SCRAM_OK;
}

/* server-first-message = [reserved-mext ","] nonce "," salt "," iteration-count ["," extensions] */
enum scram_status scram_client_final(struct scram_client *c, const uint8_t *server_first,
                                     size_t len, char *out, size_t outcap, size_t *outlen,
                                     const char **errmsg)
{
    const char *why = NULL;
    enum scram_status st;

    if (errmsg)
        *errmsg = NULL;
    if (outlen)
        *outlen = 0;
    if (c->state != SCRAM_CLIENT_FIRST_SENT)
        return scram_client_fail(c, SCRAM_ERR_OUT_OF_ORDER, "unexpected server-first-message",
                                 errmsg);
    st = check_message(server_first, len, &why);
    if (st != SCRAM_OK)
        return scram_client_fail(c, st, why, errmsg);

    const char *msg = (const char *)server_first;
    struct scram_server_first_msg f;
    st = scram_client_read_first(c, msg, len, &f, errmsg);
    if (st != SCRAM_OK)
        return st;

    uint8_t client_key[SCRAM_KEY_LEN], stored_key[SCRAM_KEY_LEN], server_key[SCRAM_KEY_LEN];
    uint8_t salted[SCRAM_KEY_LEN];
    bool ok;
    if (c->use_keys) {
        if (f.iterations != c->secret.iterations || f.salt_len != c->secret.salt_len ||
            memcmp(f.salt, c->secret.salt, (size_t)f.salt_len) != 0)
            return scram_client_fail(c, SCRAM_ERR_SECRET_MISMATCH,
                                     "server's SCRAM salt or iteration count differs from the "
                                     "secret in the auth file",
                                     errmsg);
        memcpy(client_key, c->client_key, SCRAM_KEY_LEN);
        memcpy(server_key, c->secret.server_key, SCRAM_KEY_LEN);
        memset(salted, 0, sizeof(salted));
        ok = sha256(client_key, SCRAM_KEY_LEN, stored_key);
    } else {
        ok = salted_password(c->password, f.salt, f.salt_len, f.iterations, salted) &&
             keys_from_salted(salted, client_key, stored_key, server_key);
    }

    char msgbuf[SCRAM_MAX_MESSAGE + 1];
    struct sbuf m;
    sb_init(&m, msgbuf, sizeof(msgbuf));
    /* c= is the GS2 header again, followed by the binding data if any. */
    uint8_t cb[SCRAM_GS2_MAX + SCRAM_CBIND_MAX];
    size_t gs2_len = strlen(c->gs2);
    memcpy(cb, c->gs2, gs2_len);
    memcpy(cb + gs2_len, c->cbind, (size_t)c->cbind_len);
    char cb64[(SCRAM_GS2_MAX + SCRAM_CBIND_MAX) / 3 * 4 + 8] = "";
    if (b64_encode(cb, gs2_len + (size_t)c->cbind_len, cb64, sizeof(cb64)) < 0)
        ok = false;
    sb_puts(&m, "c=");
    sb_puts(&m, cb64);
    sb_puts(&m, ",r=");
    sb_put(&m, f.nonce, f.nonce_len);

    char am[AUTH_MESSAGE_CAP];
    struct sbuf amb;
    sb_init(&amb, am, sizeof(am));
    sb_puts(&amb, c->client_first_bare);
    sb_puts(&amb, ",");
    sb_put(&amb, msg, len);
    sb_puts(&amb, ",");
    sb_put(&amb, m.buf, m.len);
    if (amb.overflow)
        ok = false;

    uint8_t client_sig[SCRAM_KEY_LEN], proof[SCRAM_KEY_LEN];
    if (ok)
        ok = hmac_sha256(stored_key, SCRAM_KEY_LEN, amb.buf, amb.len, client_sig) &&
             hmac_sha256(server_key, SCRAM_KEY_LEN, amb.buf, amb.len, c->server_signature);
    if (ok) {
        char proof64[48];
        xor_keys(proof, client_key, client_sig);
        (void)b64_encode(proof, SCRAM_KEY_LEN, proof64, sizeof(proof64));
        sb_puts(&m, ",p=");
        sb_puts(&m, proof64);
        OPENSSL_cleanse(proof64, sizeof(proof64));
        st = put_out(&m, out, outcap, outlen);
    } else {
        st = SCRAM_ERR_INTERNAL;
    }
    OPENSSL_cleanse(client_key, sizeof(client_key));
    OPENSSL_cleanse(stored_key, sizeof(stored_key));
    OPENSSL_cleanse(server_key, sizeof(server_key));
    OPENSSL_cleanse(salted, sizeof(salted));
    OPENSSL_cleanse(client_sig, sizeof(client_sig));
    OPENSSL_cleanse(proof, sizeof(proof));
    OPENSSL_cleanse(am, amb.len);
    if (st == SCRAM_ERR_BUFFER)
        return scram_client_fail(c, st, "output buffer too small for client-final-message", errmsg);
    if (st != SCRAM_OK)
        return scram_client_fail(c, st, "SCRAM computation failed", errmsg);
    c->state = SCRAM_CLIENT_FINAL_SENT;
    return SCRAM_OK;
}

/* The server-error values RFC 5802 defines, for a readable log line. */
static const char *scram_server_error_text(const char *v, size_t n)
{
    static const struct {
        const char *value;
        const char *text;
    } known[] = {
        {"invalid-encoding", "server rejected SCRAM: invalid encoding"},
        {"extensions-not-supported", "server rejected SCRAM: extensions not supported"},
        {"invalid-proof", "server rejected SCRAM: invalid proof (wrong password or secret)"},
        {"channel-bindings-dont-match", "server rejected SCRAM: channel bindings don't match"},
        {"server-does-support-channel-binding",
         "server rejected SCRAM: server does support channel binding"},
        {"channel-binding-not-supported", "server rejected SCRAM: channel binding not supported"},
        {"unsupported-channel-binding-type",
         "server rejected SCRAM: unsupported channel binding type"},
        {"unknown-user", "server rejected SCRAM: unknown user"},
        {"invalid-username-encoding", "server rejected SCRAM: invalid username encoding"},
        {"no-resources", "server rejected SCRAM: no resources"},
    };
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
        if (strlen(known[i].value) == n && memcmp(known[i].value, v, n) == 0)
            return known[i].text;
    return "server rejected SCRAM: other error";
}

/* server-final-message = (server-error / verifier) ["," extensions] */
enum scram_status scram_client_verify(struct scram_client *c, const uint8_t *server_final,
                                      size_t len, const char **errmsg)
{
    const char *why = NULL;
    enum scram_status st;

    if (errmsg)
        *errmsg = NULL;
    if (c->state != SCRAM_CLIENT_FINAL_SENT)
        return scram_client_fail(c, SCRAM_ERR_OUT_OF_ORDER, "unexpected server-final-message",
                                 errmsg);
    st = check_message(server_final, len, &why);
    if (st != SCRAM_OK)
        return scram_client_fail(c, st, why, errmsg);

    struct attrs a;
    char name;
    const char *val;
    size_t vlen;
    attrs_init(&a, (const char *)server_final, len);
    if (!attrs_next(&a, &name, &val, &vlen) || (name != 'v' && name != 'e'))
        return scram_client_fail(c, SCRAM_ERR_MALFORMED,
                                 "malformed SCRAM message: verifier attribute expected", errmsg);
    if (name == 'e')
        return scram_client_fail(c, SCRAM_ERR_SERVER_REJECTED, scram_server_error_text(val, vlen),
                                 errmsg);
    uint8_t sig[SCRAM_KEY_LEN];
    if (b64_decode(val, vlen, sig, sizeof(sig)) != SCRAM_KEY_LEN || !attrs_skip_extensions(&a))
        return scram_client_fail(c, SCRAM_ERR_MALFORMED, "malformed SCRAM message: bad verifier",
                                 errmsg);
    if (CRYPTO_memcmp(sig, c->server_signature, SCRAM_KEY_LEN) != 0)
        return scram_client_fail(
            c, SCRAM_ERR_SERVER_SIGNATURE,
            "SCRAM server signature is wrong: the server does not know the secret", errmsg);
    c->state = SCRAM_CLIENT_DONE;
    return SCRAM_OK;
}

void scram_client_free(struct scram_client *c)
{
    free_str(&c->password);
    free_str(&c->test_user);
    free_str(&c->client_first_bare);
    OPENSSL_cleanse(c, sizeof(*c));
    memset(c, 0, sizeof(*c));
}
