/* admin_show_jobs.c - SHOW JOBS: every refresh job ([jobs]), what its last
 * run did and when the next is due (jobs.h). Read under the world lock
 * (admin.c), so worker 0's scheduler is parked. */
#include <stdio.h>

#include "admin_int.h"
#include "jobs.h"

static void job_row(const struct job_view *v, void *arg)
{
    struct admin_result *r = arg;
    char next[40], start[40], f[6][ADMIN_NUM_LEN];
    bool ran = v->result != JOB_RESULT_NONE;
    const char *vals[] = {
        v->name,
        v->database,
        v->schedule[0] ? v->schedule : NULL,
        v->after_writes_to[0] ? v->after_writes_to : NULL,
        v->state,
        admin_time_text(v->next_run, next, sizeof(next)),
        admin_time_text(v->last_start, start, sizeof(start)),
        ran && v->result != JOB_RESULT_SKIPPED ? admin_num(f[0], v->last_duration / 1000) : NULL,
        ran ? job_result_str(v->result) : NULL,
        v->error[0] ? v->error : NULL,
        admin_unum(f[1], v->runs),
        admin_unum(f[2], v->failures),
        admin_unum(f[3], v->skipped),
        v->lock_holder[0] ? v->lock_holder : NULL,
        admin_num4(f[4], v->waiting),
    };
    admin_result_row(r, vals);
}

void admin_show_jobs(struct admin_result *r)
{
    jobs_each(job_row, r);
}
