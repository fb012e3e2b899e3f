/* fuzz_pgoutput.c - libFuzzer target for the logical replication messages
 * sluice reads from a walsender (pgoutput.h): CopyData payloads (XLogData,
 * keepalive) and the pgoutput messages inside XLogData.
 *
 * The input is the bytes of one payload, in a heap block of exactly its
 * length. Checked: nothing reads outside it; an XLogData's data lies inside
 * the input; a parsed message's names are NUL-terminated inside the input
 * (and relation names at most 63 bytes); a TRUNCATE's OIDs are inside it;
 * a whole message that parses, cut by one byte, does not; and the head
 * parse agrees with the whole one on the relation of a change. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pgoutput.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void require(bool cond)
{
    if (!cond)
        abort();
}

static bool inside(const void *p, const uint8_t *buf, size_t len)
{
    return (const uint8_t *)p >= buf && (const uint8_t *)p < buf + len;
}

static void check_name(const char *s, const uint8_t *buf, size_t len, size_t max)
{
    if (!s)
        return;
    require(inside(s, buf, len));
    size_t left = len - (size_t)((const uint8_t *)s - buf);
    const char *nul = memchr(s, '\0', left);
    require(nul != NULL);
    require((size_t)(nul - s) <= max);
}

static void check_msg(const uint8_t *p, size_t len)
{
    struct pgoutput_msg m;
    enum pgoutput_status st = pgoutput_parse(p, len, &m);
    if (st != PGOUTPUT_OK)
        return;
    (void)pgoutput_kind_str(m.kind);
    bool rel = m.kind == PGOUTPUT_RELATION || m.kind == PGOUTPUT_TYPE;
    check_name(m.nspname, p, len, PGOUTPUT_NAME_MAX);
    check_name(m.name, p, len, rel ? PGOUTPUT_NAME_MAX : len);
    if (m.kind == PGOUTPUT_TRUNCATE && m.n_relids) {
        require(inside(m.relids, p, len));
        require((size_t)(m.relids - p) + (size_t)m.n_relids * 4 <= len);
        for (uint32_t i = 0; i < m.n_relids; i++)
            (void)pgoutput_relid_at(&m, i);
    }
    if (len > 0) {
        struct pgoutput_msg cut;
        require(pgoutput_parse(p, len - 1, &cut) != PGOUTPUT_OK);
    }
    if (m.kind == PGOUTPUT_INSERT || m.kind == PGOUTPUT_UPDATE || m.kind == PGOUTPUT_DELETE) {
        struct pgoutput_msg h;
        require(pgoutput_parse_head(p, len, &h) == PGOUTPUT_OK);
        require(h.kind == m.kind && h.relid == m.relid);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    struct pgoutput_copy c;
    if (pgoutput_parse_copy(buf, size, &c) == PGOUTPUT_OK && c.kind == PGOUTPUT_COPY_XLOGDATA) {
        require(c.len == 0 || inside(c.data, buf, size));
        require(c.len <= size);
        check_msg(c.data, c.len);
    }
    /* The same bytes as a pgoutput message on their own. */
    check_msg(buf, size);
    struct pgoutput_msg h;
    (void)pgoutput_parse_head(buf, size, &h);
    free(buf);
    return 0;
}
