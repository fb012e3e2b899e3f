/* fuzz_cron.c - libFuzzer target for the cron parser and the next fire
 * time (cron.c), and the TZif reader (cron_tz.c).
 *
 * The input's first byte chooses: even, an expression (up to the first
 * NUL) that, if it parses, is asked for its next fire times from a few
 * instants in UTC and in a zone with daylight saving time (the next time
 * must be later than the one asked from, on a minute); odd, the rest is a
 * TZif image, read and asked for offsets. Crashes, sanitizer reports,
 * leaks and the asserts are findings. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cron.h"
#include "log.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct cron_tz zone;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    char why[300];
    log_set_quiet(true);
    if (!cron_tz_load(&zone, "Europe/Berlin", NULL, why, sizeof(why)))
        cron_tz_load(&zone, "UTC", NULL, why, sizeof(why));
    return 0;
}

static void check_next(const struct cron_expr *e, const struct cron_tz *tz, int64_t after)
{
    int64_t t = cron_next(e, tz, after);
    if (t != -1 && (t <= after || t % 60 != 0))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    char why[300];
    if (data[0] & 1) {
        struct cron_tz tz;
        if (cron_tz_parse(&tz, "fuzz", data + 1, size - 1, why, sizeof(why))) {
            for (int i = 0; i < tz.n; i++)
                if (i && tz.at[i] <= tz.at[i - 1])
                    abort();
            (void)cron_tz_offset(&tz, 0);
            (void)cron_tz_offset(&tz, 1800000000);
        }
        cron_tz_free(&tz);
        return 0;
    }
    char text[512];
    size_t n = size - 1 < sizeof(text) - 1 ? size - 1 : sizeof(text) - 1;
    memcpy(text, data + 1, n);
    text[n] = '\0';
    struct cron_expr e;
    if (!cron_parse(text, &e, why, sizeof(why)))
        return 0;
    static const int64_t from[] = {0, 1774743000, 1792886000, 1796379300, 4102444800};
    for (size_t i = 0; i < sizeof(from) / sizeof(from[0]); i++) {
        check_next(&e, NULL, from[i]);
        check_next(&e, &zone, from[i]);
    }
    return 0;
}
