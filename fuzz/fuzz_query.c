/* libFuzzer target for the request parsers behind fcr_req_query, fcr_req_form and
 * fcr_req_cookie: the input is parsed as a query string / urlencoded form
 * (fcr__parse_urlencoded) and as a Cookie header (fcr__parse_cookies), each into a fresh arena.
 * The pairs must be exactly those a straightforward reference reading of the rules gives
 * (pairs split on '&', first '=' splits name and value, percent-decoding with '+' as space,
 * pairs with a bad escape or a decoded NUL byte skipped; cookies split on ';', blanks trimmed, one
 * pair of quotes removed), every string NUL-terminated inside its arena. */
#include "app/app_int.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void must(bool ok)
{
    if (!ok)
        abort();
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static long ref_decode(const uint8_t *in, size_t len, uint8_t *out)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (in[i] == '%') {
            if (len - i < 3 || hexval(in[i + 1]) < 0 || hexval(in[i + 2]) < 0)
                return -1;
            out[o++] = (uint8_t)(hexval(in[i + 1]) * 16 + hexval(in[i + 2]));
            i += 2;
        } else {
            out[o++] = in[i] == '+' ? ' ' : in[i];
        }
    }
    return (long)o;
}

/* `got` must hold exactly the `len` bytes at `want` and a NUL. */
static void same(const char *got, const uint8_t *want, size_t len)
{
    must(got != NULL && memcmp(got, want, len) == 0 && got[len] == '\0');
}

static void check_urlencoded(const uint8_t *s, size_t len)
{
    fcr__arena a = {0};
    fcr__kv_list l = {0};
    must(fcr__parse_urlencoded(&a, (const char *)s, len, &l) == 0);
    must(l.parsed && l.kv.n <= l.kv.cap);
    const fcr__kv *kv = l.kv.v;
    uint8_t *n = malloc(len + 1), *v = malloc(len + 1);
    must(n && v);
    size_t k = 0, i = 0;
    while (i < len) {
        const uint8_t *amp = memchr(s + i, '&', len - i);
        size_t slen = amp ? (size_t)(amp - (s + i)) : len - i;
        const uint8_t *seg = s + i;
        i += slen + 1;
        if (slen == 0)
            continue;
        const uint8_t *eq = memchr(seg, '=', slen);
        size_t nlen = eq ? (size_t)(eq - seg) : slen;
        long dn = ref_decode(seg, nlen, n);
        long dv = eq ? ref_decode(eq + 1, slen - nlen - 1, v) : 0;
        if (dn < 0 || dv < 0 || memchr(n, 0, (size_t)dn) || memchr(v, 0, (size_t)dv))
            continue;
        must(k < l.kv.n);
        same(kv[k].name, n, (size_t)dn);
        same(kv[k].value, v, (size_t)dv);
        k++;
    }
    must(k == l.kv.n);
    free(n);
    free(v);
    fcr__arena_free(&a);
}

static bool ows(uint8_t c)
{
    return c == ' ' || c == '\t';
}

static void check_cookies(const uint8_t *s, size_t len)
{
    fcr__arena a = {0};
    fcr__kv_list l = {0};
    must(fcr__parse_cookies(&a, (const char *)s, len, &l) == 0);
    must(l.parsed && l.kv.n <= l.kv.cap);
    const fcr__kv *kv = l.kv.v;
    size_t k = 0, i = 0;
    while (i < len) {
        const uint8_t *semi = memchr(s + i, ';', len - i);
        size_t slen = semi ? (size_t)(semi - (s + i)) : len - i;
        const uint8_t *seg = s + i;
        i += slen + 1;
        while (slen && ows(seg[0]))
            seg++, slen--;
        while (slen && ows(seg[slen - 1]))
            slen--;
        const uint8_t *eq = memchr(seg, '=', slen);
        if (!eq || eq == seg)
            continue;
        size_t nlen = (size_t)(eq - seg);
        while (nlen && ows(seg[nlen - 1]))
            nlen--;
        const uint8_t *v = eq + 1;
        size_t vlen = (size_t)(seg + slen - v);
        while (vlen && ows(v[0]))
            v++, vlen--;
        if (vlen >= 2 && v[0] == '"' && v[vlen - 1] == '"')
            v++, vlen -= 2;
        must(k < l.kv.n && nlen > 0);
        same(kv[k].name, seg, nlen);
        same(kv[k].value, v, vlen);
        must(!memchr(kv[k].name, ';', nlen) && !ows((uint8_t)kv[k].name[0]));
        k++;
    }
    must(k == l.kv.n);
    fcr__arena_free(&a);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_urlencoded(data, size);
    check_cookies(data, size);
    /* An absent header parses as empty. */
    if (size == 0) {
        fcr__arena a = {0};
        fcr__kv_list l = {0};
        must(fcr__parse_cookies(&a, NULL, 0, &l) == 0 && l.kv.n == 0);
        fcr__arena_free(&a);
    }
    return 0;
}
