/* fuzz_explain_cost.c - libFuzzer target for the EXPLAIN (FORMAT JSON)
 * reader (explain_cost.h), which reads a server's answer.
 *
 * The input is the text, in a heap block of exactly its length (no NUL),
 * so ASan sees any read past it. Checked: the status is one of the three;
 * a cost is read only with OK; reading twice gives the same answer. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "explain_cost.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_copy(data, size);
    if (!text)
        return 0;
    double a = -1, b = -2;
    enum explain_cost_status s1 = explain_cost_parse(text, size, &a);
    enum explain_cost_status s2 = explain_cost_parse(text, size, &b);
    require(s1 == s2);
    require(s1 <= EXPLAIN_COST_MISSING);
    if (s1 == EXPLAIN_COST_OK)
        require(a == b || (a != a && b != b));
    else
        require(a == -1 && b == -2);
    free(text);
    return 0;
}
