/* fuzz_metrics.c - libFuzzer target for the metrics endpoint's request
 * parser (what any TCP client can send to metrics_listen).
 *
 * The input is copied into a heap block of exactly its length (so ASan
 * sees any read past it) and parsed as the responder does: every prefix
 * the socket could have delivered, then the whole. Checked:
 *  - the verdict is final: once a prefix is not INCOMPLETE, every longer
 *    buffer gives the same verdict and the same request (the responder
 *    answers at the first complete head and reads no further);
 *  - INCOMPLETE only while fewer than METRICS_MAX_REQUEST bytes came;
 *  - an OK request's method and path lie inside the buffer, the method is
 *    a non-empty token, the path starts with '/' (or is "*") and has no
 *    '?', and metrics_route answers 200, 404 or 405;
 *  - label escaping of the input (up to its first NUL) leaves no raw
 *    newline and undoes to the input;
 *  - the status page's HTML escaping of it leaves no raw < > " ' and no
 *    & that does not start one of its references, and undoes to the
 *    input (controls but tab, LF and CR as U+FFFD).
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "metrics_page.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void require(bool cond)
{
    if (!cond)
        abort();
}

static bool same_request(const struct metrics_request *a, const struct metrics_request *b)
{
    return a->method == b->method && a->method_len == b->method_len && a->path == b->path &&
           a->path_len == b->path_len && a->minor == b->minor;
}

static void check_ok(const char *buf, size_t len, const struct metrics_request *r)
{
    require(r->method >= buf && r->method_len > 0 && r->method + r->method_len <= buf + len);
    require(r->path > r->method && r->path_len > 0 && r->path + r->path_len <= buf + len);
    for (size_t i = 0; i < r->method_len; i++)
        require(r->method[i] > 0x20 && r->method[i] < 0x7f);
    require(r->path[0] == '/' || (r->path_len == 1 && r->path[0] == '*'));
    require(memchr(r->path, '?', r->path_len) == NULL);
    require(r->minor == 0 || r->minor == 1);
    int st = metrics_route(r);
    require(st == 200 || st == 404 || st == 405);
}

static void check_html(const char *s, size_t n)
{
    static const char *const refs[][2] = {
        {"&amp;", "&"}, {"&lt;", "<"}, {"&gt;", ">"}, {"&quot;", "\""}, {"&#39;", "'"}};
    struct metrics_buf b;
    memset(&b, 0, sizeof(b));
    metrics_page_escape(&b, s);
    if (!b.oom && b.p) {
        size_t k = 0;
        for (size_t i = 0; i < b.len;) {
            require(strchr("<>\"'", b.p[i]) == NULL);
            if (b.p[i] == '&') {
                size_t r = 0;
                while (r < 5 && strncmp(b.p + i, refs[r][0], strlen(refs[r][0])) != 0)
                    r++;
                require(r < 5 && k < n && s[k++] == refs[r][1][0]);
                i += strlen(refs[r][0]);
                continue;
            }
            unsigned char c = (unsigned char)s[k];
            bool control = (c < 0x20 && c != '\t' && c != '\n' && c != '\r') || c == 0x7f;
            require(k < n);
            if (control) {
                require(b.len - i >= 3 && memcmp(b.p + i, "\xef\xbf\xbd", 3) == 0);
                i += 3;
            } else {
                require(b.p[i] == s[k]);
                i++;
            }
            k++;
        }
        require(k == n);
    }
    metrics_buf_free(&b);
}

static void check_escape(const uint8_t *data, size_t size)
{
    size_t n = strnlen((const char *)data, size);
    char *s = malloc(n + 1);
    if (!s)
        return;
    memcpy(s, data, n);
    s[n] = '\0';
    struct metrics_buf b;
    memset(&b, 0, sizeof(b));
    metrics_buf_label(&b, s);
    if (!b.oom) {
        size_t k = 0;
        for (size_t i = 0; i < b.len; i++) {
            require(b.p[i] != '\n');
            char c = b.p[i];
            if (c == '\\') {
                require(i + 1 < b.len);
                char e = b.p[++i];
                require(e == '\\' || e == '"' || e == 'n');
                c = e == 'n' ? '\n' : e;
            } else {
                require(c != '"');
            }
            require(k < n && s[k++] == c);
        }
        require(k == n);
    }
    metrics_buf_free(&b);
    check_html(s, n);
    free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 2 * METRICS_MAX_REQUEST)
        return 0;
    char *buf = malloc(size ? size : 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    struct metrics_request first, r;
    memset(&first, 0, sizeof(first));
    enum metrics_parse verdict = METRICS_PARSE_INCOMPLETE;
    /* Every prefix costs a parse: step through them sparsely on big inputs. */
    size_t step = size > 512 ? size / 256 : 1;
    for (size_t len = 0;; len = len + step < size ? len + step : size) {
        enum metrics_parse v = metrics_parse_request(buf, len, &r);
        if (verdict == METRICS_PARSE_INCOMPLETE) {
            if (v == METRICS_PARSE_INCOMPLETE) {
                require(len < METRICS_MAX_REQUEST);
            } else {
                verdict = v;
                first = r;
                if (v == METRICS_PARSE_OK)
                    check_ok(buf, len, &r);
            }
        } else {
            require(v == verdict);
            if (v == METRICS_PARSE_OK)
                require(same_request(&first, &r));
        }
        if (len == size)
            break;
    }
    free(buf);
    check_escape(data, size);
    return 0;
}
