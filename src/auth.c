/* auth.c - auth_file (userlist.txt) loading, MD5 and cleartext password checks.
 *
 * The user list is an open-addressing hash table (linear probing, at most
 * half full) over an array of entries, because an auth_file may list tens of
 * thousands of users and every login looks one up.
 */
#include "auth.h"

#include "config.h"
#include "log.h"
#include "scram.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

/* Refuse to slurp anything bigger: a real auth_file with 100,000 users is a
 * few MB, and this keeps a wrong path (a device, a huge log) from eating memory. */
#define AUTH_FILE_MAX_SIZE (256u * 1024 * 1024)

struct auth_entry {
    char *user;
    char *secret;
    uint64_t hash;
};

struct auth_userlist {
    struct auth_entry *entries;
    int count;
    int cap;
    uint32_t *slots; /* entry index + 1; 0 = empty */
    size_t nslots;   /* a power of two, >= 2 * count */
};

const char *auth_secret_kind_str(enum auth_secret_kind kind)
{
    switch (kind) {
    case AUTH_SECRET_PLAIN:
        return "plain";
    case AUTH_SECRET_MD5:
        return "md5";
    case AUTH_SECRET_SCRAM:
        return "scram-sha-256";
    }
    return "?";
}

/* ---- the hash table ---- */

/* FNV-1a: short keys, no need for more. Collisions cannot be forced by
 * clients: they only look names up, the table is built from the file. */
static uint64_t hash_str(const char *s)
{
    uint64_t h = 14695981039346656037ull;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    return h;
}

/* Returns the slot holding user, or the empty slot where it would go. */
static size_t find_slot(const struct auth_userlist *list, const char *user, uint64_t h)
{
    size_t mask = list->nslots - 1;
    size_t i = (size_t)h & mask;
    while (list->slots[i]) {
        const struct auth_entry *e = &list->entries[list->slots[i] - 1];
        if (e->hash == h && strcmp(e->user, user) == 0)
            break;
        i = (i + 1) & mask;
    }
    return i;
}

static bool grow_slots(struct auth_userlist *list)
{
    size_t n = list->nslots ? list->nslots * 2 : 64;
    uint32_t *slots = calloc(n, sizeof(*slots));
    if (!slots)
        return false;
    free(list->slots);
    list->slots = slots;
    list->nslots = n;
    for (int k = 0; k < list->count; k++) {
        size_t i = (size_t)list->entries[k].hash & (n - 1);
        while (slots[i])
            i = (i + 1) & (n - 1);
        slots[i] = (uint32_t)k + 1;
    }
    return true;
}

static void free_secret(char *secret)
{
    if (secret) {
        OPENSSL_cleanse(secret, strlen(secret));
        free(secret);
    }
}

/* Adds or replaces user's secret. Returns 1 if added, 0 if replaced, -1 on
 * allocation failure. */
static int userlist_put(struct auth_userlist *list, const char *user, size_t ulen,
                        const char *secret, size_t slen)
{
    if ((size_t)(list->count + 1) * 2 > list->nslots && !grow_slots(list))
        return -1;
    char *s = malloc(slen + 1);
    if (!s)
        return -1;
    memcpy(s, secret, slen);
    s[slen] = '\0';

    uint64_t h = hash_str(user);
    size_t i = find_slot(list, user, h);
    if (list->slots[i]) {
        struct auth_entry *e = &list->entries[list->slots[i] - 1];
        free_secret(e->secret);
        e->secret = s;
        return 0;
    }
    if (list->count == INT_MAX - 1) {
        free_secret(s);
        return -1;
    }
    if (list->count == list->cap) {
        int cap = list->cap ? list->cap * 2 : 64;
        if (cap < list->cap) {
            free_secret(s);
            return -1;
        }
        struct auth_entry *entries = realloc(list->entries, (size_t)cap * sizeof(*entries));
        if (!entries) {
            free_secret(s);
            return -1;
        }
        list->entries = entries;
        list->cap = cap;
    }
    char *u = malloc(ulen + 1);
    if (!u) {
        free_secret(s);
        return -1;
    }
    memcpy(u, user, ulen + 1);
    list->entries[list->count] = (struct auth_entry){.user = u, .secret = s, .hash = h};
    list->count++;
    list->slots[i] = (uint32_t)list->count;
    return 1;
}

const char *auth_userlist_find(const struct auth_userlist *list, const char *user)
{
    if (!list || !user || list->count == 0)
        return NULL;
    size_t i = find_slot(list, user, hash_str(user));
    return list->slots[i] ? list->entries[list->slots[i] - 1].secret : NULL;
}

int auth_userlist_count(const struct auth_userlist *list)
{
    return list ? list->count : 0;
}

void auth_userlist_free(struct auth_userlist *list)
{
    if (!list)
        return;
    for (int k = 0; k < list->count; k++) {
        free(list->entries[k].user);
        free_secret(list->entries[k].secret);
    }
    free(list->entries);
    free(list->slots);
    free(list);
}

/* ---- the file format ---- */

/* Reads a quoted field starting at *pp (on the opening quote) and ending on
 * this line (before end). "" inside stands for ". On success the field is in
 * buf (cap bytes, NUL-terminated), *pp is after the closing quote and the
 * result is NULL; otherwise the result says why. */
static const char *read_quoted(const char **pp, const char *end, char *buf, size_t cap,
                               size_t *outlen, const char *what_too_long)
{
    const char *p = *pp + 1;
    size_t n = 0;
    for (;;) {
        if (p >= end)
            return "unterminated quoted string";
        if (*p == '"') {
            if (p + 1 < end && p[1] == '"') {
                p++; /* an escaped quote: keep one */
            } else {
                break;
            }
        }
        if (n + 1 >= cap)
            return what_too_long;
        buf[n++] = *p++;
    }
    buf[n] = '\0';
    *outlen = n;
    *pp = p + 1;
    return NULL;
}

static bool blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v';
}

/* Parses one line [p, end). Returns NULL when fine (user added, or nothing
 * on the line), else the reason. */
static const char *parse_line(struct auth_userlist *list, const char *name, int lineno,
                              const char *p, const char *end)
{
    char user[AUTH_USERLIST_MAX_USER + 1];
    char pass[AUTH_USERLIST_MAX_PASS + 1];
    size_t ulen, plen;
    const char *why;

    while (p < end && blank(*p))
        p++;
    if (p == end || *p == ';' || *p == '#')
        return NULL;
    if (*p != '"')
        return "expected a quoted user name";
    why = read_quoted(&p, end, user, sizeof(user), &ulen, "user name too long");
    if (why)
        return why;
    if (ulen == 0)
        return "empty user name";
    while (p < end && blank(*p))
        p++;
    if (p == end)
        return "password missing";
    if (*p != '"')
        return "expected a quoted password";
    why = read_quoted(&p, end, pass, sizeof(pass), &plen, "password too long");
    if (why)
        return why;
    /* Whatever follows the password is ignored, as PgBouncer does. */

    if (strncmp(pass, "SCRAM-SHA-256$", 14) == 0 && auth_secret_kind(pass) != AUTH_SECRET_SCRAM)
        log_warning("%s:%d: password of user \"%s\" looks like a SCRAM secret but is malformed; "
                    "it is taken as a plain password",
                    name, lineno, user);
    int r = userlist_put(list, user, ulen, pass, plen);
    OPENSSL_cleanse(pass, plen);
    if (r < 0)
        return "out of memory";
    if (r == 0)
        log_warning("%s:%d: user \"%s\" is listed again; this line replaces the earlier one", name,
                    lineno, user);
    return NULL;
}

/* auth_userlist_parse(), or with lines, each bad line's message is added
 * there and the reading goes on (NULL at the end if there was any). */
static struct auth_userlist *parse_text(const char *name, const char *text,
                                        struct config_problems *lines, char *err, size_t errlen)
{
    int bad = 0;
    if (err && errlen)
        err[0] = '\0';
    struct auth_userlist *list = calloc(1, sizeof(*list));
    if (!list || !grow_slots(list)) {
        free(list);
        log_format(err, errlen, "%s: out of memory", name);
        return NULL;
    }
    const char *p = text;
    /* Editors on some systems start UTF-8 files with a byte order mark. */
    if (strncmp(p, "\xEF\xBB\xBF", 3) == 0)
        p += 3;
    int lineno = 0;
    while (*p) {
        lineno++;
        const char *nl = strchr(p, '\n');
        const char *end = nl ? nl : p + strlen(p);
        const char *why = parse_line(list, name, lineno, p, end);
        if (why && lines) {
            config_problems_add(lines, "%s:%d: %s", name, lineno, why);
            bad++;
        } else if (why) {
            log_format(err, errlen, "%s:%d: %s", name, lineno, why);
            auth_userlist_free(list);
            return NULL;
        }
        p = nl ? nl + 1 : end;
    }
    if (bad) {
        auth_userlist_free(list);
        return NULL;
    }
    return list;
}

struct auth_userlist *auth_userlist_parse(const char *name, const char *text, char *err,
                                          size_t errlen)
{
    return parse_text(name, text, NULL, err, errlen);
}

/* auth_userlist_load(), or auth_userlist_load_all() with lines. */
static struct auth_userlist *load_file(const char *path, struct config_problems *lines, char *err,
                                       size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        log_format(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    const char *why = NULL;
    for (;;) {
        if (cap - len < 65536) {
            size_t ncap = cap ? cap * 2 : 65536;
            if (ncap > AUTH_FILE_MAX_SIZE * 2) {
                why = "file too large";
                break;
            }
            /* Grow by hand rather than realloc() so that the old block,
             * which holds passwords, is wiped before it is released. */
            char *nbuf = malloc(ncap);
            if (!nbuf) {
                why = "out of memory";
                break;
            }
            if (buf) {
                memcpy(nbuf, buf, len);
                OPENSSL_cleanse(buf, len);
                free(buf);
            }
            buf = nbuf;
            cap = ncap;
        }
        size_t n = fread(buf + len, 1, cap - len - 1, f);
        len += n;
        if (len > AUTH_FILE_MAX_SIZE) {
            why = "file too large";
            break;
        }
        if (n == 0) {
            if (ferror(f))
                why = strerror(errno);
            break;
        }
    }
    fclose(f);
    struct auth_userlist *list = NULL;
    if (why) {
        log_format(err, errlen, "%s: %s", path, why);
    } else {
        buf[len] = '\0';
        const char *nul = memchr(buf, '\0', len);
        if (nul) {
            int lineno = 1;
            for (const char *q = buf; q < nul; q++)
                lineno += *q == '\n';
            log_format(err, errlen, "%s:%d: NUL byte in file", path, lineno);
        } else {
            list = parse_text(path, buf, lines, err, errlen);
        }
    }
    if (buf) {
        OPENSSL_cleanse(buf, len);
        free(buf);
    }
    return list;
}

struct auth_userlist *auth_userlist_load(const char *path, char *err, size_t errlen)
{
    return load_file(path, NULL, err, errlen);
}

struct auth_userlist *auth_userlist_load_all(const char *path, struct config_problems *lines,
                                             char *err, size_t errlen)
{
    return load_file(path, lines, err, errlen);
}

/* ---- secrets and checks ---- */

static bool is_md5_secret(const char *s)
{
    if (strncmp(s, "md5", 3) != 0)
        return false;
    for (int i = 3; i < AUTH_MD5_LEN; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return s[AUTH_MD5_LEN] == '\0';
}

enum auth_secret_kind auth_secret_kind(const char *secret)
{
    struct scram_secret sec;
    if (is_md5_secret(secret))
        return AUTH_SECRET_MD5;
    if (scram_secret_parse(secret, &sec)) {
        OPENSSL_cleanse(&sec, sizeof(sec));
        return AUTH_SECRET_SCRAM;
    }
    return AUTH_SECRET_PLAIN;
}

/* out = "md5" + hex(md5(a || b)). Sets out to "" and returns false if MD5
 * is not available (FIPS mode). */
static bool md5_hex(const void *a, size_t alen, const void *b, size_t blen,
                    char out[AUTH_MD5_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    bool ok = ctx && EVP_DigestInit_ex(ctx, EVP_md5(), NULL) == 1 &&
              EVP_DigestUpdate(ctx, a, alen) == 1 && EVP_DigestUpdate(ctx, b, blen) == 1 &&
              EVP_DigestFinal_ex(ctx, md, &mdlen) == 1 && mdlen == 16;
    EVP_MD_CTX_free(ctx);
    if (!ok) {
        out[0] = '\0';
        return false;
    }
    memcpy(out, "md5", 3);
    for (int i = 0; i < 16; i++) {
        out[3 + 2 * i] = hex[md[i] >> 4];
        out[4 + 2 * i] = hex[md[i] & 15];
    }
    out[AUTH_MD5_LEN] = '\0';
    return true;
}

void auth_md5_hash(const char *password, const char *user, char out[AUTH_MD5_LEN + 1])
{
    (void)md5_hex(password, strlen(password), user, strlen(user), out);
}

void auth_md5_salted(const char *md5hash, const uint8_t salt[4], char out[AUTH_MD5_LEN + 1])
{
    if (!is_md5_secret(md5hash)) {
        out[0] = '\0';
        return;
    }
    (void)md5_hex(md5hash + 3, AUTH_MD5_LEN - 3, salt, 4, out);
}

bool auth_md5_check(const char *secret, const char *user, const uint8_t salt[4],
                    const char *client_response)
{
    char stored[AUTH_MD5_LEN + 1], expect[AUTH_MD5_LEN + 1];
    bool ok = false;
    switch (auth_secret_kind(secret)) {
    case AUTH_SECRET_PLAIN:
        auth_md5_hash(secret, user, stored);
        break;
    case AUTH_SECRET_MD5:
        memcpy(stored, secret, AUTH_MD5_LEN + 1);
        break;
    case AUTH_SECRET_SCRAM:
        /* The md5 challenge needs md5(password || user), which a SCRAM secret cannot give. */
        return false;
    }
    auth_md5_salted(stored, salt, expect);
    if (expect[0] && strnlen(client_response, AUTH_MD5_LEN + 1) == AUTH_MD5_LEN)
        ok = CRYPTO_memcmp(expect, client_response, AUTH_MD5_LEN) == 0;
    OPENSSL_cleanse(stored, sizeof(stored));
    OPENSSL_cleanse(expect, sizeof(expect));
    return ok;
}

bool auth_plain_check(const char *secret, const char *user, const char *client_password)
{
    bool ok = false;
    switch (auth_secret_kind(secret)) {
    case AUTH_SECRET_PLAIN: {
        /* Compare digests so that neither the content nor the length of the
         * stored password leaks through timing. */
        uint8_t a[32], b[32];
        unsigned int alen = 0, blen = 0;
        if (EVP_Digest(secret, strlen(secret), a, &alen, EVP_sha256(), NULL) == 1 &&
            EVP_Digest(client_password, strlen(client_password), b, &blen, EVP_sha256(), NULL) ==
                1 &&
            alen == 32 && blen == 32)
            ok = CRYPTO_memcmp(a, b, 32) == 0;
        OPENSSL_cleanse(a, sizeof(a));
        OPENSSL_cleanse(b, sizeof(b));
        break;
    }
    case AUTH_SECRET_MD5: {
        char h[AUTH_MD5_LEN + 1];
        auth_md5_hash(client_password, user, h);
        ok = h[0] && CRYPTO_memcmp(h, secret, AUTH_MD5_LEN) == 0;
        OPENSSL_cleanse(h, sizeof(h));
        break;
    }
    case AUTH_SECRET_SCRAM: {
        struct scram_secret stored, derived;
        if (scram_secret_parse(secret, &stored) &&
            scram_secret_from_password(client_password, stored.salt, stored.salt_len,
                                       stored.iterations, &derived)) {
            int diff = CRYPTO_memcmp(stored.stored_key, derived.stored_key, SCRAM_KEY_LEN) |
                       CRYPTO_memcmp(stored.server_key, derived.server_key, SCRAM_KEY_LEN);
            ok = diff == 0;
        }
        OPENSSL_cleanse(&stored, sizeof(stored));
        OPENSSL_cleanse(&derived, sizeof(derived));
        break;
    }
    }
    return ok;
}

void auth_random_bytes(uint8_t *buf, size_t len)
{
    while (len > 0) {
        int n = len > INT_MAX ? INT_MAX : (int)len;
        if (RAND_bytes(buf, n) != 1) {
            log_error("OpenSSL RAND_bytes failed: no secure random bytes; aborting");
            abort();
        }
        buf += n;
        len -= (size_t)n;
    }
}
