/* fuzz_pg_snapshot.c - libFuzzer target for pg_current_snapshot()'s text
 * (pg_snapshot.h), which sluice reads from the primary's answers.
 *
 * The input is the text, in a heap block of exactly its length. Checked:
 * nothing reads outside it; a text that parses has its in-progress ids
 * sorted, each reported not shown; and parsing the same text twice (the
 * buffer reused) gives the same snapshot. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "pg_snapshot.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_copy(data, size);
    if (!text)
        return 0;
    struct pg_snapshot s = {0};
    if (pg_snapshot_parse(&s, text, size)) {
        for (size_t i = 0; i < s.n_xip; i++) {
            require(i == 0 || s.xip[i - 1] <= s.xip[i]);
            if (pg_xid_precedes(s.xip[i], s.xmax) && !pg_xid_precedes(s.xip[i], s.xmin))
                require(!pg_snapshot_shows(&s, s.xip[i]));
        }
        struct pg_snapshot again = {0};
        require(pg_snapshot_parse(&again, text, size));
        require(again.xmin == s.xmin && again.xmax == s.xmax && again.n_xip == s.n_xip);
        require(!s.n_xip || !memcmp(again.xip, s.xip, s.n_xip * sizeof(*s.xip)));
        pg_snapshot_free(&again);
    }
    pg_snapshot_free(&s);
    free(text);
    return 0;
}
