/* prepared_settings.c - the list of session settings a client made under
 * transaction pooling, and the parsing of startup extras into it. */
#include "prepared_settings.h"

#include <stdlib.h>
#include <string.h>

#include "conn.h"

/* Reads one "SET name = 'v';" at p: the end of the value (its ';'), or
 * NULL when p is not of that form. */
static const char *extras_entry_end(const char *p, const char **eq_out)
{
    if (strncmp(p, "SET ", 4) != 0)
        return NULL;
    const char *eq = strstr(p + 4, " = ");
    if (!eq)
        return NULL;
    const char *v = eq + 3;
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
    if (*v != ';')
        return NULL;
    *eq_out = eq;
    return v;
}

int prepared_extras_split(const char *extras, const char **names, const char **stmts, int max)
{
    int n = 0;
    const char *p = extras;
    while (p && *p) {
        const char *eq = NULL;
        const char *v = extras_entry_end(p, &eq);
        const char *name = p + 4;
        char nm[128], st[2048];
        size_t nl = v ? (size_t)(eq - name) : 0, sl = v ? (size_t)(v - p) : 0;
        if (!v || nl >= sizeof(nm) || sl >= sizeof(st)) {
            for (int i = 0; i < n; i++) {
                param_unref(names[i]);
                param_unref(stmts[i]);
            }
            return -1;
        }
        if (n < max) {
            for (size_t i = 0; i < nl; i++)
                nm[i] = (name[i] >= 'A' && name[i] <= 'Z') ? (char)(name[i] - 'A' + 'a') : name[i];
            nm[nl] = '\0';
            memcpy(st, p, sl);
            st[sl] = '\0';
            names[n] = param_intern(nm);
            stmts[n] = param_intern(st);
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
