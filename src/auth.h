/* auth.h - PgBouncer's auth_file (userlist.txt) and the password checks that
 * do not need a conversation: MD5 challenge responses and cleartext passwords.
 * SCRAM exchanges live in scram.h.
 *
 * auth_file format, one user per line:
 *     "username" "password" [anything else is ignored]
 * Inside quotes, "" stands for one double quote. Blank lines and lines whose
 * first non-blank character is ';' or '#' are ignored. The password is a plain
 * text password, "md5" + 32 lowercase hex digits (md5(password || username)),
 * or a SCRAM secret "SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>" -
 * the forms PostgreSQL itself stores, so pg_authid can be dumped into it.
 */
#ifndef SLUICE_AUTH_H
#define SLUICE_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AUTH_MD5_LEN           35   /* "md5" + 32 hex digits, without the NUL */
#define AUTH_USERLIST_MAX_USER 1024 /* longest user name accepted in an auth_file */
#define AUTH_USERLIST_MAX_PASS 4096 /* longest password or secret accepted */

/* An immutable set of (user, secret) pairs. Safe to read from many threads
 * at once; reloading builds a new one and frees the old. */
struct auth_userlist;

/* Reads and parses the auth_file at path. Returns a new list, owned by the
 * caller (auth_userlist_free()), or NULL with a one-line reason in err
 * (errlen bytes, may be 0): "path:line: reason", or "path: reason" when the
 * file cannot be read. A missing file is an error. A later line for the same
 * user replaces the earlier one (as in PgBouncer), with a warning logged. */
struct auth_userlist *auth_userlist_load(const char *path, char *err, size_t errlen);

/* Like auth_userlist_load(), but a bad line does not stop the reading:
 * each one's "path:line: reason" is added to lines (config.h), and NULL is
 * returned at the end if there was any (err then ""). A file that cannot be
 * read (missing, unreadable, too large, a NUL byte) gives NULL with
 * "path: reason" (or "path:line: NUL byte in file") in err instead, so that
 * the caller can say which setting named it (sluice --check, RELOAD). */
struct config_problems;
struct auth_userlist *auth_userlist_load_all(const char *path, struct config_problems *lines,
                                             char *err, size_t errlen);

/* Like auth_userlist_load() on NUL-terminated text in memory; name stands
 * for the path in error messages and warnings. */
struct auth_userlist *auth_userlist_parse(const char *name, const char *text, char *err,
                                          size_t errlen);

/* Returns the secret stored for user (exact, case-sensitive match), or NULL.
 * The string belongs to the list and lives as long as it. Expected O(1). */
const char *auth_userlist_find(const struct auth_userlist *list, const char *user);

/* Number of distinct users in the list (0 for NULL). */
int auth_userlist_count(const struct auth_userlist *list);

/* Wipes the secrets and frees the list. NULL is allowed. */
void auth_userlist_free(struct auth_userlist *list);

/* What a stored password is. */
enum auth_secret_kind {
    AUTH_SECRET_PLAIN = 0, /* anything that is not one of the two below: a cleartext password */
    AUTH_SECRET_MD5,       /* "md5" + 32 lowercase hex digits */
    AUTH_SECRET_SCRAM,     /* a well-formed SCRAM-SHA-256 secret (scram_secret_parse()) */
};

/* Name of a kind for logs: "plain", "md5", "scram-sha-256". */
const char *auth_secret_kind_str(enum auth_secret_kind kind);

/* Classifies secret the way PostgreSQL does: md5 if it has the exact md5
 * shape, SCRAM if it parses as a SCRAM secret, else plain (so a damaged SCRAM
 * secret is taken as a password, as PostgreSQL would). secret != NULL. */
enum auth_secret_kind auth_secret_kind(const char *secret);

/* Writes "md5" + hex(md5(password || user)) + NUL into out: what PostgreSQL
 * stores for an md5 password. If MD5 is unavailable (FIPS mode) out is set
 * to "", which no check accepts. */
void auth_md5_hash(const char *password, const char *user, char out[AUTH_MD5_LEN + 1]);

/* Writes "md5" + hex(md5(hex digits of md5hash || salt)) + NUL into out: what
 * a client sends in PasswordMessage after AuthenticationMD5Password(salt).
 * md5hash is an "md5..." string as produced by auth_md5_hash(); anything else
 * gives "". */
void auth_md5_salted(const char *md5hash, const uint8_t salt[4], char out[AUTH_MD5_LEN + 1]);

/* Checks a client's answer to AuthenticationMD5Password(salt). secret is the
 * stored password for user, plain or md5 (a SCRAM secret cannot answer an md5
 * challenge: false). Compared in constant time. */
bool auth_md5_check(const char *secret, const char *user, const uint8_t salt[4],
                    const char *client_response);

/* Checks a cleartext password the client sent (AuthenticationCleartextPassword)
 * against secret of any kind: equal to a plain one, hashing to an md5 one, or
 * deriving a SCRAM one's StoredKey and ServerKey with its salt and iterations
 * (one PBKDF2 run). Compared in constant time. */
bool auth_plain_check(const char *secret, const char *user, const char *client_password);

/* Fills buf with len cryptographically strong random bytes (OpenSSL
 * RAND_bytes). Aborts the process if the generator fails: continuing with
 * predictable salts and nonces would be worse than stopping. */
void auth_random_bytes(uint8_t *buf, size_t len);

#endif
