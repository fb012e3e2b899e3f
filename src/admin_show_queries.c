/* admin_show_queries.c - SHOW QUERIES [ORDER BY column] [LIMIT n]: one row
 * per query fingerprint (insights.h), merged over the workers, largest
 * first. Times are microseconds; percentiles come from the histogram and
 * are within 6.25% of the true value. */
#include <stdio.h>

#include "admin_int.h"
#include "insights.h"

static void query_row(struct admin_result *r, const struct insights_row *q)
{
    const struct insights_stat *st = &q->st;
    char fp[20], f[12][ADMIN_NUM_LEN], first[40], last[40];
    snprintf(fp, sizeof(fp), "%016llx", (unsigned long long)st->fp);
    const char *v[] = {fp,
                       q->text,
                       admin_num4(f[0], (long long)st->calls),
                       admin_num4(f[1], (long long)st->errors),
                       admin_num4(f[2], (long long)st->rows),
                       admin_num4(f[3], (long long)st->total_us),
                       admin_num4(f[4], (long long)(st->calls ? st->total_us / st->calls : 0)),
                       admin_num4(f[5], (long long)insights_quantile(st, 0.50)),
                       admin_num4(f[6], (long long)insights_quantile(st, 0.95)),
                       admin_num4(f[7], (long long)insights_quantile(st, 0.99)),
                       admin_num4(f[8], (long long)st->max_us),
                       admin_num4(f[9], (long long)st->where[INSIGHTS_PRIMARY]),
                       admin_num4(f[10], (long long)st->where[INSIGHTS_REPLICA]),
                       admin_num4(f[11], (long long)st->where[INSIGHTS_CACHE]),
                       admin_time_text(st->first_seen, first, sizeof(first)),
                       admin_time_text(st->last_seen, last, sizeof(last))};
    admin_result_row(r, v);
}

void admin_show_queries(struct admin_result *r)
{
    struct insights_row *rows;
    size_t n = insights_collect(&rows);
    insights_sort(rows, n, r->cmd ? (enum insights_order)r->cmd->order : INSIGHTS_BY_TOTAL);
    size_t limit = r->cmd && r->cmd->limit > 0 ? (size_t)r->cmd->limit : n;
    for (size_t i = 0; i < n && i < limit; i++)
        query_row(r, &rows[i]);
    insights_rows_free(rows, n);
}
