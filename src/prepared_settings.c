/* prepared_settings.c - the list of session settings a client made under
 * transaction pooling, and the parsing of startup extras into it. */
#include "prepared_settings.h"

#include <stdlib.h>
#include <string.h>

#include "conn.h"

#define EXTRAS_HEAD "SELECT pg_catalog.set_config('"
#define EXTRAS_TAIL ", false)"

/* Reads one "SELECT pg_catalog.set_config('name', 'v', false);" at p (made
 * by the login's extras): the end of the statement (its ';'), or NULL when
 * p is not of that form; *name_end is the name's closing quote. */
static const char *extras_entry_end(const char *p, const char **name_end)
{
    if (strncmp(p, EXTRAS_HEAD, strlen(EXTRAS_HEAD)) != 0)
        return NULL;
    const char *q = strchr(p + strlen(EXTRAS_HEAD), '\'');
    if (!q || strncmp(q, "', ", 3) != 0)
        return NULL;
    const char *v = q + 3;
    if (*v == 'E')
        v++;
    if (*v != '\'')
        return NULL;
    v++;
    for (;;) {
        if (!*v)
            return NULL;
        if (*v == '\'') {
            if (v[1] == '\'') {
                v += 2;
                continue;
            }
            break;
        }
        v++;
    }
    v++; /* closing quote */
    if (strncmp(v, EXTRAS_TAIL ";", strlen(EXTRAS_TAIL) + 1) != 0)
        return NULL;
    *name_end = q;
    return v + strlen(EXTRAS_TAIL);
}

/* An interned copy of n bytes at p, lowercased if lower. */
static const char *intern_n(const char *p, size_t n, bool lower)
{
    char *t = malloc(n + 1);
    if (!t)
        abort();
    for (size_t i = 0; i < n; i++)
        t[i] = lower && p[i] >= 'A' && p[i] <= 'Z' ? (char)(p[i] - 'A' + 'a') : p[i];
    t[n] = '\0';
    const char *r = param_intern(t);
    free(t);
    return r;
}

int prepared_extras_split(const char *extras, const char **names, const char **stmts, int max)
{
    int n = 0;
    const char *p = extras;
    while (p && *p) {
        const char *name_end = NULL;
        const char *v = extras_entry_end(p, &name_end);
        if (!v) {
            for (int i = 0; i < n; i++) {
                param_unref(names[i]);
                param_unref(stmts[i]);
            }
            return -1;
        }
        if (n < max) {
            const char *name = p + strlen(EXTRAS_HEAD);
            names[n] = intern_n(name, (size_t)(name_end - name), true);
            stmts[n] = intern_n(p, (size_t)(v - p), false);
            n++;
        }
        p = v + 1;
    }
    return n;
}

/* Adds name = stmt at the end, growing the array as needed; the entry takes
 * over the caller's references. */
static void settings_append(struct setting_list *l, const char *name, const char *stmt)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 8;
        l->v = realloc(l->v, (size_t)l->cap * sizeof(*l->v));
        if (!l->v)
            abort();
    }
    l->v[l->n].name = name;
    l->v[l->n].stmt = stmt;
    l->n++;
}

void settings_load(struct setting_list *l, const char *extras)
{
    l->loaded = true;
    const char *names[64], *stmts[64];
    int n = extras ? prepared_extras_split(extras, names, stmts, 64) : 0;
    for (int i = 0; i < n; i++)
        settings_append(l, names[i], stmts[i]);
}

void settings_put(struct setting_list *l, const char *name, const char *stmt)
{
    for (int i = 0; i < l->n; i++) {
        if (l->v[i].name == name) {
            if (stmt) {
                param_assign(&l->v[i].stmt, stmt);
            } else {
                param_unref(l->v[i].name);
                param_unref(l->v[i].stmt);
                memmove(&l->v[i], &l->v[i + 1], (size_t)(l->n - i - 1) * sizeof(*l->v));
                l->n--;
            }
            return;
        }
    }
    if (stmt)
        settings_append(l, param_ref(name), param_ref(stmt));
}

void settings_clear(struct setting_list *l)
{
    for (int i = 0; i < l->n; i++) {
        param_unref(l->v[i].name);
        param_unref(l->v[i].stmt);
    }
    l->n = 0;
}

const char *settings_render(const struct setting_list *l)
{
    if (l->n == 0)
        return NULL;
    size_t n = 1;
    for (int i = 0; i < l->n; i++)
        n += strlen(l->v[i].stmt) + 1;
    char *buf = malloc(n);
    if (!buf)
        abort();
    size_t o = 0;
    for (int i = 0; i < l->n; i++) {
        size_t k = strlen(l->v[i].stmt);
        memcpy(buf + o, l->v[i].stmt, k);
        o += k;
        buf[o++] = ';';
    }
    buf[o] = '\0';
    const char *r = param_intern(buf);
    free(buf);
    return r;
}
