/* fuzz_startup.c - libFuzzer target for startup-phase packets.
 *
 * The input is what a client sends before it is authenticated: up to a few
 * untyped packets (SSLRequest or GSSENCRequest, then a StartupMessage or a
 * CancelRequest). Each is framed with proto_peek_startup, copied into a heap
 * block of exactly its length and parsed with proto_parse_startup. Then:
 *  - the verdict must match an independent reference parser of the v3 body;
 *  - every name and value must be a non-overlapping, NUL-terminated string
 *    inside the packet, and proto_startup_get must find the first of each
 *    name;
 *  - an accepted packet, rebuilt with the writer (or proto_build_cancel),
 *    must be byte-identical to the input;
 *  - a refused one must say why and still report its kind and version the
 *    way client.c relies on.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

#define MAX_PACKETS 4

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void require(bool cond)
{
    if (!cond)
        abort();
}

/* Reference parser for a v3 body: the number of parameters, -1 if
 * malformed, -2 if well formed but with too many parameters. */
static int reference_v3(const uint8_t *b, size_t n)
{
    size_t i = 0;
    int pairs = 0;
    for (;;) {
        if (i >= n)
            return -1; /* no terminator */
        if (b[i] == 0)
            return i + 1 == n ? (pairs > PROTO_MAX_STARTUP_PARAMS ? -2 : pairs) : -1;
        for (int k = 0; k < 2; k++) { /* name, then value */
            const uint8_t *nul = memchr(b + i, 0, n - i);
            if (!nul)
                return -1;
            i = (size_t)(nul - b) + 1;
            if (k == 0 && i >= n)
                return -1; /* a name with no value */
        }
        pairs++;
    }
}

/* s is a NUL-terminated string in [lo, hi); returns one past its NUL. */
static const char *inside(const char *s, const uint8_t *lo, const uint8_t *hi)
{
    const uint8_t *u = (const uint8_t *)s;
    require(u >= lo && u < hi);
    const uint8_t *nul = memchr(u, 0, (size_t)(hi - u));
    require(nul != NULL);
    return (const char *)nul + 1;
}

static void check_v3_ok(const uint8_t *pkt, uint32_t pktlen, const struct proto_startup *st)
{
    require((st->version >> 16) == 3);
    require(st->n_params >= 0 && st->n_params <= PROTO_MAX_STARTUP_PARAMS);
    require(reference_v3(pkt + 8, pktlen - 8) == st->n_params);

    /* The strings come in order, back to back, after the header. */
    const char *next = (const char *)pkt + 8;
    for (int i = 0; i < st->n_params; i++) {
        require(st->names[i] == next);
        require(st->names[i][0] != '\0');
        next = inside(st->names[i], pkt + 8, pkt + pktlen);
        require(st->values[i] == next);
        next = inside(st->values[i], pkt + 8, pkt + pktlen);
    }
    require(next == (const char *)pkt + pktlen - 1 && *next == '\0');

    /* Lookup returns the first parameter of that name. */
    for (int i = 0; i < st->n_params; i++) {
        int first = i;
        for (int j = 0; j < i; j++)
            if (strcmp(st->names[j], st->names[i]) == 0) {
                first = j;
                break;
            }
        require(proto_startup_get(st, st->names[i]) == st->values[first]);
    }
    require(proto_startup_get(st, "") == NULL);

    /* Rebuilt, the packet is the same bytes. */
    uint8_t *out = malloc(pktlen);
    require(out != NULL);
    struct proto_writer w;
    proto_writer_init(&w, out, pktlen);
    proto_begin(&w, 0);
    proto_add32(&w, st->version);
    for (int i = 0; i < st->n_params; i++) {
        proto_add_string(&w, st->names[i]);
        proto_add_string(&w, st->values[i]);
    }
    proto_add_byte(&w, 0);
    proto_end(&w);
    require(!w.overflow && w.len == pktlen && memcmp(out, pkt, pktlen) == 0);
    free(out);
}

static void check_packet(const uint8_t *pkt, uint32_t pktlen)
{
    struct proto_startup st;
    const char *err = NULL;
    enum proto_status ps = proto_parse_startup(pkt, pktlen, &st, &err);
    uint32_t code = proto_get32(pkt + 4);
    require(st.version == code);
    require(st.n_params >= 0 && st.n_params <= PROTO_MAX_STARTUP_PARAMS);
    (void)proto_startup_get(&st, "user");
    (void)proto_startup_get(&st, "database");

    switch (code) {
    case PROTO_SSL_CODE:
    case PROTO_GSSENC_CODE:
        require(st.kind == (code == PROTO_SSL_CODE ? PROTO_STARTUP_SSL : PROTO_STARTUP_GSSENC));
        require((ps == PROTO_OK) == (pktlen == 8));
        require(st.n_params == 0);
        break;
    case PROTO_CANCEL_CODE:
        require(st.kind == PROTO_STARTUP_CANCEL);
        require((ps == PROTO_OK) == (pktlen == 16));
        require(st.n_params == 0);
        if (ps == PROTO_OK) {
            require(st.cancel_pid == proto_get32(pkt + 8));
            require(st.cancel_key == proto_get32(pkt + 12));
            uint8_t again[16];
            struct proto_writer w;
            proto_writer_init(&w, again, sizeof(again));
            proto_build_cancel(&w, st.cancel_pid, st.cancel_key);
            require(!w.overflow && w.len == 16 && memcmp(again, pkt, 16) == 0);
        }
        break;
    default:
        require(st.kind == PROTO_STARTUP_V3);
        if ((code >> 16) != 3) {
            require(ps == PROTO_BAD);
            require(err != NULL && strcmp(err, "unsupported frontend protocol") == 0);
            require(st.n_params == 0);
            break;
        }
        if (ps == PROTO_OK) {
            check_v3_ok(pkt, pktlen, &st);
        } else {
            require(ps == PROTO_BAD && err != NULL && err[0] != '\0');
            int ref = reference_v3(pkt + 8, pktlen - 8);
            require(ref < 0);
            if (ref == -2)
                require(strcmp(err, "too many startup parameters") == 0);
            /* What was collected before the failure is still valid. */
            for (int i = 0; i < st.n_params; i++) {
                (void)inside(st.names[i], pkt + 8, pkt + pktlen);
                (void)inside(st.values[i], pkt + 8, pkt + pktlen);
            }
        }
        break;
    }
    if (ps != PROTO_OK)
        require(ps == PROTO_BAD && err != NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t off = 0;
    for (int i = 0; i < MAX_PACKETS && off < size; i++) {
        size_t avail = size - off;
        uint32_t pktlen = 0;
        enum proto_status ps = proto_peek_startup(data + off, avail, &pktlen);
        if (avail < 4) {
            require(ps == PROTO_NEED_MORE);
            break;
        }
        uint32_t l = proto_get32(data + off);
        if (ps != PROTO_OK) {
            require((ps == PROTO_BAD && l < 8) || (ps == PROTO_TOO_BIG && l > PROTO_STARTUP_MAX));
            break;
        }
        require(pktlen == l && pktlen >= 8 && pktlen <= PROTO_STARTUP_MAX);
        if (pktlen > avail)
            break; /* the client would wait for the rest */

        uint8_t *pkt = malloc(pktlen);
        require(pkt != NULL);
        memcpy(pkt, data + off, pktlen);
        check_packet(pkt, pktlen);
        free(pkt);
        off += pktlen;
    }
    return 0;
}
