/* writes.c - the committed-writes bus (writes.h). */
#include "writes.h"

static struct {
    writes_fn fn;
    void *arg;
} subs[WRITES_MAX_SUBSCRIBERS];
static int n_subs;

static struct {
    writes_gap_fn fn;
    void *arg;
} gap_subs[WRITES_MAX_SUBSCRIBERS];
static int n_gap_subs;

const char *writes_source_str(enum writes_source s)
{
    static const char *const names[] = {"client", "logical", "job"};
    return (unsigned)s < sizeof(names) / sizeof(names[0]) ? names[s] : "?";
}

bool writes_subscribe(writes_fn fn, void *arg)
{
    if (n_subs >= WRITES_MAX_SUBSCRIBERS)
        return false;
    subs[n_subs].fn = fn;
    subs[n_subs].arg = arg;
    n_subs++;
    return true;
}

void writes_committed(const struct writes_event *ev)
{
    for (int i = 0; i < n_subs; i++)
        subs[i].fn(ev, subs[i].arg);
}

bool writes_subscribe_gap(writes_gap_fn fn, void *arg)
{
    if (n_gap_subs >= WRITES_MAX_SUBSCRIBERS)
        return false;
    gap_subs[n_gap_subs].fn = fn;
    gap_subs[n_gap_subs].arg = arg;
    n_gap_subs++;
    return true;
}

void writes_gap(struct database *db, enum writes_source source, bool open)
{
    for (int i = 0; i < n_gap_subs; i++)
        gap_subs[i].fn(db, source, open, gap_subs[i].arg);
}
