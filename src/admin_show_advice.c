/* admin_show_advice.c - SHOW INDEX_ADVICE: the index advisor's last run
 * (insights_advice.h), one row per index advised, the largest cost drop
 * first. Costs are the planner's units, summed over the fingerprints the
 * index helps; empty when not verified (no hypopg). */
#include <stdio.h>
#include <string.h>

#include "admin_int.h"
#include "insights_advice.h"

static void advice_row(void *arg, const struct insights_advice *a)
{
    struct admin_result *r = arg;
    char before[32] = "", after[32] = "", gain[16] = "", size[ADMIN_NUM_LEN] = "";
    char fps[24 * 10 + 1] = "";
    if (a->cost_before >= 0)
        snprintf(before, sizeof(before), "%.2f", a->cost_before);
    if (a->verified) {
        snprintf(after, sizeof(after), "%.2f", a->cost_after);
        if (a->cost_before > 0)
            snprintf(gain, sizeof(gain), "%.1f", 100.0 * (1.0 - a->cost_after / a->cost_before));
        admin_num4(size, (long long)a->size_bytes);
    }
    size_t k = 0;
    for (int i = 0; i < a->n_fingerprints && k + 18 < sizeof(fps); i++)
        k += (size_t)snprintf(fps + k, sizeof(fps) - k, "%s%016llx", i ? "," : "",
                              (unsigned long long)a->fingerprints[i]);
    const char *v[] = {a->database,
                       a->table,
                       a->columns,
                       a->statement,
                       a->verified ? "yes" : "no",
                       before[0] ? before : NULL,
                       after[0] ? after : NULL,
                       gain[0] ? gain : NULL,
                       size[0] ? size : NULL,
                       fps,
                       a->note};
    admin_result_row(r, v);
}

void admin_show_index_advice(struct admin_result *r)
{
    insights_advice_each(advice_row, r);
}
