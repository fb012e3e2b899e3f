/* fuzz_cache_sql.c - libFuzzer target for the result cache's own reading
 * of statement texts (cache_sql.h): hints, the first keyword, the
 * case-insensitive search and the plain-DML target scanner.
 *
 * The input is a text of any bytes in a heap block of exactly its length
 * (no NUL: the functions take lengths). Checked: nothing reads outside it;
 * a target found is non-empty, NUL-terminated within its buffer and holds
 * no upper-case ASCII unless the text quotes it; the first keyword is
 * lower-case letters; a hint's TTL is not negative; a text with a target
 * found keeps it when blanks are appended; the statements of a text
 * follow one another forward, each inside the text. */
#include <ctype.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cache_sql.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void require(bool cond)
{
    if (!cond)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *sql = malloc(size ? size : 1);
    if (!sql)
        return 0;
    memcpy(sql, data, size);
    int64_t ttl;
    enum cache_sql_hint h = cache_sql_hint(sql, size, &ttl);
    require(h <= CACHE_HINT_NOCACHE && ttl >= 0);
    char word[16];
    cache_sql_first_word(sql, size, word, sizeof(word));
    for (const char *p = word; *p; p++)
        require(islower((unsigned char)*p));
    (void)cache_sql_contains(sql, size, "set_config");
    char name[64];
    if (cache_sql_dml_target(sql, size, name, sizeof(name))) {
        require(name[0] != '\0' && memchr(name, '\0', sizeof(name)));
        bool quoted = memchr(sql, '"', size) != NULL;
        for (const char *p = name; *p && !quoted; p++)
            require(!isupper((unsigned char)*p));
        char *more = malloc(size + 2);
        if (more) {
            memcpy(more, sql, size);
            more[size] = ' ';
            more[size + 1] = '\n';
            char again[64];
            require(cache_sql_dml_target(more, size + 2, again, sizeof(again)) &&
                    strcmp(again, name) == 0);
            free(more);
        }
    }
    const char *prev = sql;
    for (const char *p = cache_sql_next_statement(sql, size, sql); p;
         p = cache_sql_next_statement(sql, size, p)) {
        require(p > prev && p < sql + size);
        prev = p;
    }
    free(sql);
    return 0;
}
