/* test_sql_shape.c - statements' shapes (sql_shape.h): texts that differ
 * only in constants' values, comments and blanks share one; texts whose
 * meaning differs do not, and what the scanner is unsure of is kept byte
 * for byte. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "sql_shape.h"

static uint64_t shape(const char *s)
{
    return sql_shape(s, strlen(s));
}

static void test_same_shape(void **state)
{
    (void)state;
    static const char *const same[][2] = {
        {"SELECT * FROM t WHERE id = 1", "SELECT * FROM t WHERE id = 12345"},
        {"SELECT * FROM t WHERE id = 1", "SELECT  *  FROM t\n\tWHERE id = 2"},
        {"SELECT * FROM t WHERE id = 1", "SELECT * FROM t /* c */ WHERE id = 3 -- x"},
        {"SELECT 'a' || x FROM t", "SELECT 'it''s' || x FROM t"},
        {"SELECT 1.5, .5, 1e10, 2E-3", "SELECT 7, 8.25, 3e1, 9"},
        {"SELECT x FROM t WHERE a = 'x' AND b < 10", "SELECT x FROM t WHERE a = '' AND b < 0"},
        {"SELECT /* a /* nested */ b */ 1", "SELECT 2"},
    };
    for (size_t i = 0; i < sizeof(same) / sizeof(same[0]); i++)
        assert_true(shape(same[i][0]) == shape(same[i][1]));
}

static void test_different_shape(void **state)
{
    (void)state;
    static const char *const differ[][2] = {
        {"SELECT * FROM t WHERE id = 1", "SELECT * FROM u WHERE id = 1"},
        {"SELECT a1 FROM t", "SELECT a2 FROM t"},         /* digits in a name */
        {"SELECT $1", "SELECT $2"},                       /* parameters are not constants */
        {"SELECT E'a\\'b'", "SELECT E'c'"},               /* a prefixed string: as it is */
        {"SELECT 'a\\'", "SELECT 'b\\'"},                 /* a backslash: as it is */
        {"SELECT $$a$$", "SELECT $$b$$"},                 /* dollar quotes: as they are */
        {"SELECT \"A1\" FROM t", "SELECT \"A2\" FROM t"}, /* quoted names: as they are */
        {"SELECT a - -1", "SELECT a --1"},                /* a comment is not an operator */
        {"SELECT 1", "SELECT 1, 2"},
        {"SELECT * FROM t WHERE a IN (1, 2)", "SELECT * FROM t WHERE a IN (1)"},
        {"select 1", "SELECT 1"}, /* case: one fingerprint, two shapes */
        {"SELECT a<=b", "SELECT a< =b"},
        {"-- c\rDELETE FROM t", "-- c\rDELETE FROM u"}, /* \r ends a comment, as \n */
        {"\v", " "},                        /* not a blank to PostgreSQL 15: a syntax error */
        {"SELECT 1 /* no end", "SELECT 1"}, /* refused by the server */
    };
    for (size_t i = 0; i < sizeof(differ) / sizeof(differ[0]); i++)
        assert_true(shape(differ[i][0]) != shape(differ[i][1]));
}

static void test_edges(void **state)
{
    (void)state;
    assert_true(sql_shape("", 0) != 0);
    assert_true(shape("SELECT 'unterminated") != shape("SELECT 'other"));
    assert_true(shape("SELECT 1 /* open") == shape("SELECT 2 /* open"));
    /* Only len bytes are read. */
    assert_true(sql_shape("SELECT 1; DROP", 8) == shape("SELECT 1"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_shape),
        cmocka_unit_test(test_different_shape),
        cmocka_unit_test(test_edges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
