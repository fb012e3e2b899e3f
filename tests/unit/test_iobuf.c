/* test_iobuf.c - recycled I/O buffers: get/put, the free-list limit, append
 * and reserve growth past the standard size, compaction. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "iobuf.h"

#define SIZE 64

static void pattern(uint8_t *p, size_t n, size_t seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)((seed + i) * 31 + 7);
}

static void test_get_put_recycle(void **state)
{
    (void)state;
    struct iobuf_cache c;
    iobuf_cache_init(&c, SIZE, 4);
    assert_int_equal(c.size, SIZE);
    assert_int_equal(c.max_free, 4);
    assert_int_equal(c.n_free, 0);
    assert_int_equal(c.n_allocated, 0);
    assert_null(c.free);

    struct iobuf *a = iobuf_get(&c);
    assert_non_null(a);
    assert_int_equal(a->cap, SIZE);
    assert_int_equal(a->start, 0);
    assert_int_equal(a->end, 0);
    assert_int_equal(a->pooled, 1);
    assert_int_equal(iobuf_len(a), 0);
    assert_int_equal(iobuf_room(a), SIZE);
    assert_int_equal(c.n_allocated, 1);

    /* Dirty it, give it back, get it again: same memory, reset. */
    memset(a->data, 'x', SIZE);
    a->start = 3;
    a->end = 10;
    iobuf_put(&c, a);
    assert_int_equal(c.n_free, 1);
    assert_int_equal(c.n_allocated, 1);
    struct iobuf *b = iobuf_get(&c);
    assert_ptr_equal(b, a);
    assert_int_equal(b->start, 0);
    assert_int_equal(b->end, 0);
    assert_int_equal(c.n_free, 0);
    assert_int_equal(c.n_allocated, 1);

    /* LIFO: the most recently returned buffer comes back first. */
    struct iobuf *d = iobuf_get(&c);
    assert_ptr_not_equal(d, b);
    assert_int_equal(c.n_allocated, 2);
    iobuf_put(&c, b);
    iobuf_put(&c, d);
    assert_int_equal(c.n_free, 2);
    assert_ptr_equal(iobuf_get(&c), d);
    assert_ptr_equal(iobuf_get(&c), b);
    iobuf_put(&c, b);
    iobuf_put(&c, d);

    iobuf_put(&c, NULL); /* no-op */
    assert_int_equal(c.n_free, 2);

    iobuf_cache_destroy(&c);
    assert_int_equal(c.n_free, 0);
    assert_null(c.free);
}

static void test_max_free(void **state)
{
    (void)state;
    struct iobuf_cache c;
    iobuf_cache_init(&c, SIZE, 2);
    struct iobuf *b[5];
    for (int i = 0; i < 5; i++)
        b[i] = iobuf_get(&c);
    assert_int_equal(c.n_allocated, 5);
    for (int i = 0; i < 5; i++)
        iobuf_put(&c, b[i]);
    /* Two kept, three freed (ASan's leak check proves they are). */
    assert_int_equal(c.n_free, 2);
    assert_int_equal(c.n_allocated, 2);
    iobuf_cache_destroy(&c);

    /* max_free 0: nothing is ever kept. */
    iobuf_cache_init(&c, SIZE, 0);
    struct iobuf *x = iobuf_get(&c);
    iobuf_put(&c, x);
    assert_int_equal(c.n_free, 0);
    assert_null(c.free);
    assert_int_equal(c.n_allocated, 0);
    iobuf_cache_destroy(&c);
}

static void test_append_within_size(void **state)
{
    (void)state;
    struct iobuf_cache c;
    iobuf_cache_init(&c, SIZE, 4);
    struct iobuf *b = NULL;
    iobuf_append(&c, &b, "hello", 5);
    assert_non_null(b);
    assert_int_equal(b->pooled, 1);
    assert_int_equal(b->cap, SIZE);
    assert_int_equal(iobuf_len(b), 5);
    struct iobuf *first = b;
    iobuf_append(&c, &b, " world", 6);
    assert_ptr_equal(b, first);
    assert_int_equal(iobuf_len(b), 11);
    assert_memory_equal(b->data, "hello world", 11);

    /* Exactly filling the buffer does not grow it. */
    uint8_t fill[SIZE - 11];
    pattern(fill, sizeof(fill), 1);
    iobuf_append(&c, &b, fill, sizeof(fill));
    assert_ptr_equal(b, first);
    assert_int_equal(iobuf_room(b), 0);
    assert_memory_equal(b->data + 11, fill, sizeof(fill));

    iobuf_put(&c, b);
    assert_int_equal(c.n_free, 1);
    iobuf_cache_destroy(&c);
}

static void test_append_grows(void **state)
{
    (void)state;
    struct iobuf_cache c;
    iobuf_cache_init(&c, SIZE, 4);
    uint8_t src[1000];
    pattern(src, sizeof(src), 5);

    /* Appends in odd chunks until well past the standard size. */
    struct iobuf *b = NULL;
    size_t off = 0;
    while (off < sizeof(src)) {
        size_t n = sizeof(src) - off < 7 ? sizeof(src) - off : 7;
        iobuf_append(&c, &b, src + off, n);
        off += n;
        assert_int_equal(iobuf_len(b), off);
        assert_true(b->end <= b->cap);
    }
    assert_true(b->cap >= sizeof(src));
    assert_int_equal(b->pooled, 0);
    assert_memory_equal(b->data + b->start, src, sizeof(src));
    /* The standard buffer it started in went back to the cache. */
    assert_int_equal(c.n_free, 1);
    assert_int_equal(c.n_allocated, 1);

    /* A grown buffer is freed, not cached. */
    iobuf_put(&c, b);
    assert_int_equal(c.n_free, 1);
    assert_int_equal(c.n_allocated, 1);
    iobuf_cache_destroy(&c);
}

static void test_append_big_first(void **state)
{
    (void)state;
    struct iobuf_cache c;
    iobuf_cache_init(&c, SIZE, 4);
    uint8_t src[SIZE * 3 + 1];
    pattern(src, sizeof(src), 9);
    struct iobuf *b = NULL;
    iobuf_append(&c, &b, src, sizeof(src));
    assert_non_null(b);
    assert_int_equal(b->pooled, 0);
    assert_true(b->cap >= sizeof(src));
    assert_int_equal(iobuf_len(b), sizeof(src));
    assert_memory_equal(b->data, src, sizeof(src));
    assert_int_equal(c.n_allocated, 0); /* not from the pool */
    iobuf_put(&c, b);
    assert_int_equal(c.n_free, 0);
    iobuf_cache_destroy(&c);
}

static void test_grow_keeps_only_unconsumed(void **state)
{
    (void)state;
    struct iobuf_cache c;
    iobuf_cache_init(&c, SIZE, 4);
    struct iobuf *b = NULL;
    uint8_t src[SIZE];
    pattern(src, sizeof(src), 3);
    iobuf_append(&c, &b, src, SIZE);
    b->start = 10; /* consumed */
    uint8_t more[100];
    pattern(more, sizeof(more), 77);
    iobuf_append(&c, &b, more, sizeof(more));
    assert_int_equal(iobuf_len(b), SIZE - 10 + sizeof(more));
    assert_memory_equal(b->data + b->start, src + 10, SIZE - 10);
    assert_memory_equal(b->data + b->start + SIZE - 10, more, sizeof(more));
    iobuf_put(&c, b);
    iobuf_cache_destroy(&c);
}

static void test_compact(void **state)
{
    (void)state;
    struct iobuf_cache c;
    iobuf_cache_init(&c, SIZE, 4);
    struct iobuf *b = iobuf_get(&c);
    memcpy(b->data, "0123456789", 10);
    b->end = 10;

    /* start == 0: nothing moves. */
    iobuf_compact(b);
    assert_int_equal(b->start, 0);
    assert_int_equal(b->end, 10);

    b->start = 3;
    iobuf_compact(b);
    assert_int_equal(b->start, 0);
    assert_int_equal(b->end, 7);
    assert_memory_equal(b->data, "3456789", 7);
    assert_int_equal(iobuf_room(b), SIZE - 7);

    /* Everything consumed: back to empty. */
    b->start = b->end;
    iobuf_compact(b);
    assert_int_equal(b->start, 0);
    assert_int_equal(b->end, 0);
    assert_int_equal(iobuf_room(b), SIZE);

    iobuf_put(&c, b);
    iobuf_cache_destroy(&c);
}

static void test_reserve(void **state)
{
    (void)state;
    struct iobuf_cache c;
    iobuf_cache_init(&c, SIZE, 4);

    /* From nothing, small: a standard pooled buffer. */
    struct iobuf *b = NULL;
    iobuf_reserve(&c, &b, 10);
    assert_non_null(b);
    assert_int_equal(b->pooled, 1);
    assert_int_equal(b->cap, SIZE);
    assert_int_equal(iobuf_len(b), 0);
    iobuf_put(&c, b);

    /* From nothing, exactly the standard size. */
    b = NULL;
    iobuf_reserve(&c, &b, SIZE);
    assert_int_equal(b->pooled, 1);
    iobuf_put(&c, b);

    /* From nothing, large: a heap buffer of at least n. */
    b = NULL;
    iobuf_reserve(&c, &b, SIZE + 1);
    assert_int_equal(b->pooled, 0);
    assert_true(iobuf_room(b) >= SIZE + 1);
    iobuf_put(&c, b);

    /* Enough room already: unchanged. */
    b = iobuf_get(&c);
    memcpy(b->data, "abcdefghij", 10);
    b->end = 10;
    b->start = 4;
    struct iobuf *same = b;
    iobuf_reserve(&c, &b, SIZE - 10);
    assert_ptr_equal(b, same);
    assert_int_equal(b->start, 4);

    /* Room only after compaction: same buffer, compacted. */
    iobuf_reserve(&c, &b, SIZE - 6);
    assert_ptr_equal(b, same);
    assert_int_equal(b->start, 0);
    assert_int_equal(b->end, 6);
    assert_memory_equal(b->data, "efghij", 6);
    assert_true(iobuf_room(b) >= SIZE - 6);

    /* Not even then: grows, keeping the bytes; the old one is recycled. */
    int free_before = c.n_free;
    iobuf_reserve(&c, &b, SIZE);
    assert_ptr_not_equal(b, same);
    assert_int_equal(b->pooled, 0);
    assert_true(iobuf_room(b) >= SIZE);
    assert_int_equal(iobuf_len(b), 6);
    assert_memory_equal(b->data + b->start, "efghij", 6);
    assert_int_equal(c.n_free, free_before + 1);

    /* Growing a grown buffer again: doubles until big enough. */
    uint32_t cap = b->cap;
    iobuf_reserve(&c, &b, (size_t)cap * 5);
    assert_true(iobuf_room(b) >= (size_t)cap * 5);
    assert_memory_equal(b->data + b->start, "efghij", 6);
    iobuf_put(&c, b);

    iobuf_cache_destroy(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_put_recycle),
        cmocka_unit_test(test_max_free),
        cmocka_unit_test(test_append_within_size),
        cmocka_unit_test(test_append_grows),
        cmocka_unit_test(test_append_big_first),
        cmocka_unit_test(test_grow_keeps_only_unconsumed),
        cmocka_unit_test(test_compact),
        cmocka_unit_test(test_reserve),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
