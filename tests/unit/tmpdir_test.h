/* tmpdir_test.h - what the unit tests that write files share: a directory
 * of their own (made by their setup with mkdtemp) and a file written in it. */
#ifndef SLUICE_TMPDIR_TEST_H
#define SLUICE_TMPDIR_TEST_H

#include <stdio.h>

static char tmpdir[64];

/* tmpdir/name holding text; the path in a static buffer per call (four
 * in turn, so that a few may be held at once). */
static const char *write_file(const char *name, const char *text)
{
    static char paths[4][256];
    static int next;
    char *path = paths[next++ % 4];
    snprintf(path, sizeof(paths[0]), "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

#endif
