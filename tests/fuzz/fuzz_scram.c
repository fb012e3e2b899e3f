/* fuzz_scram.c - libFuzzer target for the SCRAM parsers and the auth_file parser.
 *
 * One input drives everything: it is split at the first NUL byte into A and B.
 *  - server side: scram_server_first(A), then scram_server_final(B);
 *  - client side: scram_client_final(A), then scram_client_verify(B);
 *  - the whole input (NULs cut) as auth_file text and as a SCRAM secret.
 * Nonces are fixed ("SRV" for the server part, "CLI" for the client) so that
 * the fuzzer can reach the code after the nonce checks. The last byte picks
 * the channel binding mode of both sides (none; offered but plain SCRAM or
 * "y"; SCRAM-SHA-256-PLUS with a fixed certificate hash). The client uses keys,
 * not a password, so that no input can make it run a long PBKDF2.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "log.h"
#include "scram.h"

/* password "pencil", salt W22ZaJ0SNY7soEsUEjb6gQ==, 4096 iterations */
#define SECRET                                                                                     \
    "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"    \
    "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A stand-in for a certificate's tls-server-end-point hash. */
static const uint8_t CBIND[32] = "0123456789abcdef0123456789abcdef";

static void fuzz_server(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen, int mode)
{
    struct scram_server s;
    char out[SCRAM_MAX_MESSAGE + 1];
    size_t outlen;
    const char *err;

    if (!scram_server_init(&s, SECRET) || !scram_server_test_set_nonce(&s, "SRV"))
        abort();
    if (mode > 0 &&
        (!scram_server_set_cbind(&s, CBIND, sizeof(CBIND)) ||
         !scram_server_set_mechanism(&s, mode == 2 ? SCRAM_PLUS_MECHANISM : SCRAM_MECHANISM)))
        abort();
    if (scram_server_first(&s, a, alen, out, sizeof(out), &outlen, &err) == SCRAM_OK) {
        if (outlen != strlen(out))
            abort();
        uint8_t key[SCRAM_KEY_LEN];
        if (scram_server_final(&s, b, blen, out, sizeof(out), &outlen, &err) == SCRAM_OK &&
            !scram_server_client_key(&s, key))
            abort();
    } else if (!err) {
        abort();
    }
    scram_server_free(&s);
}

static void fuzz_client(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen, int mode)
{
    static struct scram_secret secret;
    static bool ready;
    struct scram_client c;
    char out[SCRAM_MAX_MESSAGE + 1];
    size_t outlen;
    const char *err;
    uint8_t key[SCRAM_KEY_LEN] = {0};

    if (!ready) {
        if (!scram_secret_parse(SECRET, &secret))
            abort();
        ready = true;
    }
    scram_client_init_keys(&c, key, &secret);
    if (mode > 0 && !scram_client_set_cbind(&c, mode == 2 ? CBIND : NULL, sizeof(CBIND)))
        abort();
    if (!scram_client_test_set_nonce(&c, NULL, "CLI") ||
        scram_client_first(&c, out, sizeof(out), &outlen) != SCRAM_OK)
        abort();
    if (scram_client_final(&c, a, alen, out, sizeof(out), &outlen, &err) == SCRAM_OK) {
        if (outlen != strlen(out))
            abort();
        (void)scram_client_verify(&c, b, blen, &err);
    } else if (!err) {
        abort();
    }
    scram_client_free(&c);
}

static void fuzz_text(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    char err[256];
    struct scram_secret sec;
    if (!text)
        return;
    memcpy(text, data, size);
    text[size] = '\0';
    struct auth_userlist *l = auth_userlist_parse("fuzz", text, err, sizeof(err));
    if (l) {
        (void)auth_userlist_find(l, "postgres");
        auth_userlist_free(l);
    } else if (strncmp(err, "fuzz:", 5) != 0) {
        abort();
    }
    if (scram_secret_parse(text, &sec)) {
        char again[SCRAM_SECRET_MAX_LEN];
        if (!scram_secret_format(&sec, again, sizeof(again)))
            abort();
    }
    (void)auth_secret_kind(text);
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool quiet;
    if (!quiet) {
        log_set_quiet(true);
        quiet = true;
    }
    const uint8_t *sep = memchr(data, '\0', size);
    size_t alen = sep ? (size_t)(sep - data) : size;
    const uint8_t *b = sep ? sep + 1 : data + size;
    size_t blen = size - alen - (sep ? 1 : 0);

    int mode = size ? data[size - 1] % 3 : 0;
    fuzz_server(data, alen, b, blen, mode);
    fuzz_client(data, alen, b, blen, mode);
    fuzz_text(data, size);
    return 0;
}
