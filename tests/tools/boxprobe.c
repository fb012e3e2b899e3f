/* What the machine itself does to sub-millisecond latencies, with no
 * pooler and no PostgreSQL: the noise floor under test_abuse.py's p99s
 * (docs/reliability.md).
 *
 * boxprobe wake N: N round trips of one byte over two pipes between two
 *   processes pinned to CPUs 0 and 1, one a millisecond, each side asleep
 *   in read() in between: how long a wake-up across CPUs takes.
 * boxprobe stall SECONDS CPU: spins on CPU reading CLOCK_MONOTONIC and
 *   prints each stall over 1 ms ("<start> <ms>", start on CLOCK_MONOTONIC,
 *   as perf record -k monotonic): how long the CPU is taken away; a perf
 *   sched_switch trace of the same seconds says by whom (no switch: the
 *   hypervisor).
 * Both end with a summary line on stderr. */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tool_util.h"

static void pin(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof(set), &set) != 0) {
        perror("boxprobe: sched_setaffinity");
        exit(2);
    }
}

/* The buckets' upper bounds, ms; the last is open. */
static const double BOUNDS[] = {0.5, 1, 2, 5, 10};
#define N_BUCKETS (sizeof(BOUNDS) / sizeof(BOUNDS[0]) + 1)

static void count(long *hist, double ms)
{
    size_t b = 0;
    while (b < N_BUCKETS - 1 && ms >= BOUNDS[b])
        b++;
    hist[b]++;
}

static void print_hist(const long *hist, double max_ms)
{
    size_t b = 0;
    for (; b < N_BUCKETS - 1; b++)
        fprintf(stderr, " <%gms %ld,", BOUNDS[b], hist[b]);
    fprintf(stderr, " >=%gms %ld; max %.2f ms\n", BOUNDS[b - 1], hist[b], max_ms);
}

static int wake(long n)
{
    int there[2], back[2];
    char byte = 'x';
    if (pipe(there) != 0 || pipe(back) != 0)
        return 2;
    pid_t child = fork();
    if (child < 0)
        return 2;
    if (child == 0) {
        close(there[1]); /* so that the parent's close ends the read() */
        pin(1);
        while (read(there[0], &byte, 1) == 1)
            if (write(back[1], &byte, 1) != 1)
                _exit(1);
        _exit(0);
    }
    pin(0);
    long hist[N_BUCKETS] = {0};
    double max_ms = 0;
    for (long i = 0; i < n; i++) {
        double t = now();
        if (write(there[1], &byte, 1) != 1 || read(back[0], &byte, 1) != 1)
            return 1;
        double ms = (now() - t) * 1e3;
        count(hist, ms);
        if (ms > max_ms)
            max_ms = ms;
        usleep(1000);
    }
    close(there[1]);
    fprintf(stderr, "%ld round trips across CPUs:", n);
    print_hist(hist, max_ms);
    return 0;
}

static int stall(double seconds, int cpu)
{
    pin(cpu);
    long hist[N_BUCKETS] = {0};
    double start = now(), last = start, max_ms = 0, lost = 0;
    for (;;) {
        double t = now(), ms = (t - last) * 1e3;
        if (t - start > seconds)
            break;
        if (ms > 1) {
            printf("%.6f %.3f\n", last, ms);
            count(hist, ms);
            lost += ms;
            if (ms > max_ms)
                max_ms = ms;
        }
        last = t;
    }
    fprintf(stderr, "CPU %d, %.0f s: stalls over 1 ms, %.1f ms in all:", cpu, seconds, lost);
    print_hist(hist, max_ms);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "wake") == 0)
        return wake(atol(argv[2]));
    if (argc == 4 && strcmp(argv[1], "stall") == 0)
        return stall(atof(argv[2]), atoi(argv[3]));
    fprintf(stderr, "usage: boxprobe wake N | boxprobe stall SECONDS CPU\n");
    return 2;
}
