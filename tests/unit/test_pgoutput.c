/* test_pgoutput.c - the logical replication messages (pgoutput.h): each
 * kind read as PostgreSQL 15 writes it, and every shorter prefix and
 * every malformed variant refused without reading past the bytes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "pgoutput.h"

/* A message under construction. */
struct msg {
    uint8_t b[512];
    size_t n;
};

static void u8(struct msg *m, uint8_t v)
{
    m->b[m->n++] = v;
}

static void u16(struct msg *m, uint16_t v)
{
    u8(m, (uint8_t)(v >> 8));
    u8(m, (uint8_t)v);
}

static void u32(struct msg *m, uint32_t v)
{
    u16(m, (uint16_t)(v >> 16));
    u16(m, (uint16_t)v);
}

static void u64(struct msg *m, uint64_t v)
{
    u32(m, (uint32_t)(v >> 32));
    u32(m, (uint32_t)v);
}

static void str(struct msg *m, const char *s)
{
    size_t l = strlen(s) + 1;
    memcpy(m->b + m->n, s, l);
    m->n += l;
}

/* A tuple of (null, unchanged TOAST, text "42", binary 2 bytes). */
static void tuple(struct msg *m)
{
    u16(m, 4);
    u8(m, 'n');
    u8(m, 'u');
    u8(m, 't');
    u32(m, 2);
    str(m, "4"); /* "4\0": two bytes */
    u8(m, 'b');
    u32(m, 2);
    u16(m, 0xbeef);
}

/* Every strict prefix of a whole message is refused as TRUNCATED (or BAD
 * when the cut leaves something inconsistent), never accepted; the copy
 * on the heap lets ASan catch a read past the end. */
static void prefixes_refused(const struct msg *m)
{
    for (size_t l = 0; l < m->n; l++) {
        uint8_t *p = malloc(l ? l : 1);
        memcpy(p, m->b, l);
        struct pgoutput_msg out;
        enum pgoutput_status st = pgoutput_parse(p, l, &out);
        assert_true(st == PGOUTPUT_TRUNCATED || st == PGOUTPUT_BAD);
        free(p);
    }
    /* One byte too many is refused too. */
    uint8_t *p = malloc(m->n + 1);
    memcpy(p, m->b, m->n);
    p[m->n] = 0;
    struct pgoutput_msg out;
    assert_int_equal(pgoutput_parse(p, m->n + 1, &out), PGOUTPUT_BAD);
    free(p);
}

static void test_begin_commit(void **state)
{
    (void)state;
    struct msg m = {.n = 0};
    u8(&m, 'B');
    u64(&m, 0x100000020ULL);
    u64(&m, 777);
    u32(&m, 1234);
    struct pgoutput_msg out;
    assert_int_equal(pgoutput_parse(m.b, m.n, &out), PGOUTPUT_OK);
    assert_int_equal(out.kind, PGOUTPUT_BEGIN);
    assert_true(out.lsn == 0x100000020ULL);
    assert_int_equal(out.time, 777);
    assert_int_equal(out.xid, 1234);
    prefixes_refused(&m);

    struct msg c = {.n = 0};
    u8(&c, 'C');
    u8(&c, 0);
    u64(&c, 0x200);
    u64(&c, 0x230);
    u64(&c, 999);
    assert_int_equal(pgoutput_parse(c.b, c.n, &out), PGOUTPUT_OK);
    assert_int_equal(out.kind, PGOUTPUT_COMMIT);
    assert_true(out.lsn == 0x200 && out.end_lsn == 0x230);
    assert_int_equal(out.time, 999);
    prefixes_refused(&c);
}

static void test_relation(void **state)
{
    (void)state;
    struct msg m = {.n = 0};
    u8(&m, 'R');
    u32(&m, 16384);
    str(&m, "public");
    str(&m, "orders");
    u8(&m, 'd');
    u16(&m, 2);
    u8(&m, 1);
    str(&m, "id");
    u32(&m, 23);
    u32(&m, 0xffffffff);
    u8(&m, 0);
    str(&m, "note");
    u32(&m, 25);
    u32(&m, 0xffffffff);
    struct pgoutput_msg out;
    assert_int_equal(pgoutput_parse(m.b, m.n, &out), PGOUTPUT_OK);
    assert_int_equal(out.kind, PGOUTPUT_RELATION);
    assert_int_equal(out.relid, 16384);
    assert_string_equal(out.nspname, "public");
    assert_string_equal(out.name, "orders");
    assert_int_equal(out.ncols, 2);
    prefixes_refused(&m);

    /* pg_catalog is sent as "" */
    struct msg e = {.n = 0};
    u8(&e, 'R');
    u32(&e, 1259);
    str(&e, "");
    str(&e, "pg_class");
    u8(&e, 'n');
    u16(&e, 0);
    assert_int_equal(pgoutput_parse(e.b, e.n, &out), PGOUTPUT_OK);
    assert_string_equal(out.nspname, "");

    /* a column flag that is not defined, a name longer than PostgreSQL's */
    m.b[1 + 4 + 7 + 7 + 1 + 2] = 2;
    assert_int_equal(pgoutput_parse(m.b, m.n, &out), PGOUTPUT_BAD);
    struct msg l = {.n = 0};
    u8(&l, 'R');
    u32(&l, 1);
    char longname[80];
    memset(longname, 'x', 64);
    longname[64] = '\0';
    str(&l, longname);
    str(&l, "t");
    u8(&l, 'd');
    u16(&l, 0);
    assert_int_equal(pgoutput_parse(l.b, l.n, &out), PGOUTPUT_BAD);
}

static void test_changes(void **state)
{
    (void)state;
    struct pgoutput_msg out;
    struct msg ins = {.n = 0};
    u8(&ins, 'I');
    u32(&ins, 16390);
    u8(&ins, 'N');
    tuple(&ins);
    assert_int_equal(pgoutput_parse(ins.b, ins.n, &out), PGOUTPUT_OK);
    assert_int_equal(out.kind, PGOUTPUT_INSERT);
    assert_int_equal(out.relid, 16390);
    prefixes_refused(&ins);

    /* UPDATE with the old key, with the old row, and with the new row only */
    const uint8_t olds[] = {'K', 'O', 0};
    for (int i = 0; i < 3; i++) {
        struct msg up = {.n = 0};
        u8(&up, 'U');
        u32(&up, 16391);
        if (olds[i]) {
            u8(&up, olds[i]);
            tuple(&up);
        }
        u8(&up, 'N');
        tuple(&up);
        assert_int_equal(pgoutput_parse(up.b, up.n, &out), PGOUTPUT_OK);
        assert_int_equal(out.kind, PGOUTPUT_UPDATE);
        assert_int_equal(out.relid, 16391);
        prefixes_refused(&up);
    }

    struct msg del = {.n = 0};
    u8(&del, 'D');
    u32(&del, 16392);
    u8(&del, 'K');
    tuple(&del);
    assert_int_equal(pgoutput_parse(del.b, del.n, &out), PGOUTPUT_OK);
    assert_int_equal(out.kind, PGOUTPUT_DELETE);
    assert_int_equal(out.relid, 16392);
    prefixes_refused(&del);

    /* Wrong markers and column kinds are BAD. */
    ins.b[5] = 'K';
    assert_int_equal(pgoutput_parse(ins.b, ins.n, &out), PGOUTPUT_BAD);
    ins.b[5] = 'N';
    ins.b[8] = 'x'; /* the first column's kind */
    assert_int_equal(pgoutput_parse(ins.b, ins.n, &out), PGOUTPUT_BAD);
    del.b[5] = 'N';
    assert_int_equal(pgoutput_parse(del.b, del.n, &out), PGOUTPUT_BAD);
    /* A value length beyond the message */
    struct msg big = {.n = 0};
    u8(&big, 'I');
    u32(&big, 1);
    u8(&big, 'N');
    u16(&big, 1);
    u8(&big, 't');
    u32(&big, 0x7fffffff);
    assert_int_equal(pgoutput_parse(big.b, big.n, &out), PGOUTPUT_TRUNCATED);
    big.b[big.n - 4] = 0xff; /* negative */
    assert_int_equal(pgoutput_parse(big.b, big.n, &out), PGOUTPUT_BAD);
}

static void test_head(void **state)
{
    (void)state;
    struct pgoutput_msg out;
    const uint8_t upd[] = {'U', 0, 0, 0x40, 0x07, 'N', 0, 9};
    assert_int_equal(pgoutput_parse_head(upd, sizeof(upd), &out), PGOUTPUT_OK);
    assert_int_equal(out.kind, PGOUTPUT_UPDATE);
    assert_int_equal(out.relid, 0x4007);
    for (size_t l = 0; l < 5; l++)
        assert_int_equal(pgoutput_parse_head(upd, l, &out), PGOUTPUT_TRUNCATED);
    const uint8_t rel[] = {'R', 0, 0, 0, 1};
    assert_int_equal(pgoutput_parse_head(rel, sizeof(rel), &out), PGOUTPUT_BAD);
    const uint8_t unk[] = {'Z', 0, 0, 0, 1};
    assert_int_equal(pgoutput_parse_head(unk, sizeof(unk), &out), PGOUTPUT_UNKNOWN);
}

static void test_truncate(void **state)
{
    (void)state;
    struct msg m = {.n = 0};
    u8(&m, 'T');
    u32(&m, 3);
    u8(&m, 1);
    u32(&m, 100);
    u32(&m, 200);
    u32(&m, 0x80000001u);
    struct pgoutput_msg out;
    assert_int_equal(pgoutput_parse(m.b, m.n, &out), PGOUTPUT_OK);
    assert_int_equal(out.kind, PGOUTPUT_TRUNCATE);
    assert_int_equal(out.n_relids, 3);
    assert_int_equal(pgoutput_relid_at(&out, 0), 100);
    assert_int_equal(pgoutput_relid_at(&out, 1), 200);
    assert_int_equal(pgoutput_relid_at(&out, 2), 0x80000001u);
    prefixes_refused(&m);
    /* a count the bytes cannot hold, an option that is not defined */
    m.b[1] = 0x40;
    assert_int_equal(pgoutput_parse(m.b, m.n, &out), PGOUTPUT_TRUNCATED);
    m.b[1] = 0;
    m.b[5] = 4;
    assert_int_equal(pgoutput_parse(m.b, m.n, &out), PGOUTPUT_BAD);
}

static void test_skipped_kinds(void **state)
{
    (void)state;
    struct pgoutput_msg out;
    struct msg o = {.n = 0};
    u8(&o, 'O');
    u64(&o, 0x99);
    str(&o, "node_a");
    assert_int_equal(pgoutput_parse(o.b, o.n, &out), PGOUTPUT_OK);
    assert_int_equal(out.kind, PGOUTPUT_ORIGIN);
    assert_string_equal(out.name, "node_a");
    prefixes_refused(&o);

    struct msg y = {.n = 0};
    u8(&y, 'Y');
    u32(&y, 70000);
    str(&y, "public");
    str(&y, "mood");
    assert_int_equal(pgoutput_parse(y.b, y.n, &out), PGOUTPUT_OK);
    assert_int_equal(out.kind, PGOUTPUT_TYPE);
    assert_string_equal(out.name, "mood");
    prefixes_refused(&y);

    struct msg mm = {.n = 0};
    u8(&mm, 'M');
    u8(&mm, 1);
    u64(&mm, 0x55);
    str(&mm, "app");
    u32(&mm, 3);
    str(&mm, "hi");
    assert_int_equal(pgoutput_parse(mm.b, mm.n, &out), PGOUTPUT_OK);
    assert_int_equal(out.kind, PGOUTPUT_MESSAGE);
    assert_string_equal(out.name, "app");
    prefixes_refused(&mm);

    const uint8_t unknown[] = {'Z', 0};
    assert_int_equal(pgoutput_parse(unknown, sizeof(unknown), &out), PGOUTPUT_UNKNOWN);
    const uint8_t nul[] = {0};
    assert_int_equal(pgoutput_parse(nul, sizeof(nul), &out), PGOUTPUT_UNKNOWN);
    assert_int_equal(pgoutput_parse(nul, 0, &out), PGOUTPUT_TRUNCATED);
}

static void test_copy_payloads(void **state)
{
    (void)state;
    struct pgoutput_copy c;
    struct msg w = {.n = 0};
    u8(&w, 'w');
    u64(&w, 0x1000);
    u64(&w, 0x2000);
    u64(&w, 5);
    u8(&w, 'B');
    assert_int_equal(pgoutput_parse_copy(w.b, w.n, &c), PGOUTPUT_OK);
    assert_int_equal(c.kind, PGOUTPUT_COPY_XLOGDATA);
    assert_true(c.wal_start == 0x1000 && c.wal_end == 0x2000);
    assert_int_equal(c.len, 1);
    assert_int_equal(c.data[0], 'B');
    for (size_t l = 0; l < 25; l++)
        assert_int_equal(pgoutput_parse_copy(w.b, l, &c), PGOUTPUT_TRUNCATED);

    struct msg k = {.n = 0};
    u8(&k, 'k');
    u64(&k, 0x3000);
    u64(&k, 6);
    u8(&k, 1);
    assert_int_equal(pgoutput_parse_copy(k.b, k.n, &c), PGOUTPUT_OK);
    assert_int_equal(c.kind, PGOUTPUT_COPY_KEEPALIVE);
    assert_true(c.wal_end == 0x3000 && c.reply_requested);
    for (size_t l = 0; l < k.n; l++)
        assert_int_equal(pgoutput_parse_copy(k.b, l, &c), PGOUTPUT_TRUNCATED);
    assert_int_equal(pgoutput_parse_copy(k.b, k.n + 1, &c), PGOUTPUT_BAD);
    const uint8_t x[] = {'x', 0};
    assert_int_equal(pgoutput_parse_copy(x, sizeof(x), &c), PGOUTPUT_UNKNOWN);

    uint8_t out[PGOUTPUT_STATUS_LEN];
    assert_int_equal(pgoutput_build_status(out, 1, 0x0102030405060708ULL, 3, 4, true),
                     PGOUTPUT_STATUS_LEN);
    assert_int_equal(out[0], 'r');
    assert_int_equal(out[8], 1);
    const uint8_t flushed[] = {1, 2, 3, 4, 5, 6, 7, 8};
    assert_memory_equal(out + 9, flushed, 8);
    assert_int_equal(out[24], 3);
    assert_int_equal(out[32], 4);
    assert_int_equal(out[33], 1);
}

static void test_names(void **state)
{
    (void)state;
    assert_string_equal(pgoutput_kind_str(PGOUTPUT_TRUNCATE), "truncate");
    assert_string_equal(pgoutput_status_str(PGOUTPUT_BAD), "bad");
    assert_string_equal(pgoutput_kind_str((enum pgoutput_kind)99), "?");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_begin_commit),  cmocka_unit_test(test_relation),
        cmocka_unit_test(test_changes),       cmocka_unit_test(test_head),
        cmocka_unit_test(test_truncate),      cmocka_unit_test(test_skipped_kinds),
        cmocka_unit_test(test_copy_payloads), cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
