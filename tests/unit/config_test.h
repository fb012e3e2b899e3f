/* config_test.h - what the config unit tests share: a config loaded from a
 * string that must load, and one that must fail with a given message. */
#ifndef SLUICE_CONFIG_TEST_H
#define SLUICE_CONFIG_TEST_H

#include "config.h"

static char err[512];

static struct config *load_ok(const char *text)
{
    struct config *cfg = config_load_string("t.ini", text, err, sizeof(err));
    if (!cfg)
        fail_msg("config did not load: %s", err);
    return cfg;
}

static void expect_error(const char *text, const char *expected)
{
    struct config *cfg = config_load_string("t.ini", text, err, sizeof(err));
    if (cfg) {
        config_unref(cfg);
        fail_msg("config loaded but should fail with: %s", expected);
    }
    assert_string_equal(err, expected);
}

#endif
