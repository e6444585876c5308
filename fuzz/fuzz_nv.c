/* libFuzzer target for the name-value codecs and the GET_VALUES answer.
 *
 * The input is a name-value stream. fcr__nv_next() runs over it until END or TRUNCATED; every
 * name and value must lie inside the input and every pair must move the offset forward.
 * fcr__get_values_result() answers the input as a query with a small and a large buffer; the
 * answer must be one well-formed record naming each known name asked for exactly once. */
#include "core/fcgi.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char *const known[3] = {"FCGI_MAX_CONNS", "FCGI_MAX_REQS", "FCGI_MPXS_CONNS"};

static int known_index(const uint8_t *name, uint32_t nlen)
{
    int i;

    for (i = 0; i < 3; i++)
        if (nlen == strlen(known[i]) && memcmp(name, known[i], nlen) == 0)
            return i;
    return -1;
}

static void check_inside(const uint8_t *buf, size_t len, const uint8_t *p, uint32_t n)
{
    uintptr_t lo = (uintptr_t)buf, at = (uintptr_t)p;

    if (at < lo || at - lo > len || n > len - (at - lo))
        abort();
}

/* Walks the stream; returns the names asked for (bit i for known[i]). */
static unsigned walk(const uint8_t *buf, size_t len)
{
    size_t off = 0;
    unsigned asked = 0;
    fcr__nv_status st;
    const uint8_t *n, *v;
    uint32_t nl, vl;

    for (;;) {
        size_t before = off;

        st = fcr__nv_next(buf, len, &off, &n, &nl, &v, &vl);
        if (st != FCR__NV_OK)
            break;
        check_inside(buf, len, n, nl);
        check_inside(buf, len, v, vl);
        if (v != n + nl || off > len || off < before + 2 || off != (size_t)(v - buf) + (size_t)vl)
            abort();
        /* Shortest-form size never exceeds what was consumed (4-byte forms of small values
         * are legal and longer). */
        if (fcr__nv_size(nl, vl) > off - before)
            abort();
        if (known_index(n, nl) >= 0)
            asked |= 1u << known_index(n, nl);
    }
    if (st == FCR__NV_END ? off != len : (st != FCR__NV_TRUNCATED || off >= len))
        abort();
    return asked;
}

static void check_result(const uint8_t *out, size_t size, size_t cap, unsigned asked,
                         const fcr__values *v)
{
    fcr__fcgi_header h;
    size_t off = 0, i;
    unsigned seen = 0;
    const uint8_t *n, *val;
    uint32_t nl, vl;

    if (size > cap || size < 8 || size % 8 != 0 || size > 128)
        abort();
    fcr__header_decode(out, &h);
    if (h.version != 1 || h.type != FCGI_GET_VALUES_RESULT || h.id != 0 || out[7] != 0 ||
        8 + (size_t)h.content_len + h.padding_len != size ||
        h.padding_len != fcr__padding_for(h.content_len))
        abort();
    for (i = 8 + (size_t)h.content_len; i < size; i++)
        if (out[i] != 0)
            abort();
    while (fcr__nv_next(out + 8, h.content_len, &off, &n, &nl, &val, &vl) == FCR__NV_OK) {
        int k = known_index(n, nl);
        char want[24];
        size_t wl;

        if (k < 0 || (seen & (1u << k)))
            abort();
        seen |= 1u << k;
        if (k == 2) {
            want[0] = v->mpxs_conns ? '1' : '0';
            wl = 1;
        } else {
            unsigned x = k == 0 ? v->max_conns : v->max_reqs;
            char tmp[24];
            size_t t = 0;
            do {
                tmp[t++] = (char)('0' + x % 10);
                x /= 10;
            } while (x != 0);
            for (wl = 0; wl < t; wl++)
                want[wl] = tmp[t - 1 - wl];
        }
        if (vl != wl || memcmp(val, want, wl) != 0)
            abort();
    }
    if (off != h.content_len || seen != asked)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t out[256];
    unsigned asked;
    size_t r, i;
    uint32_t len;
    fcr__values v = {0, 0, false};

    /* The length decoder alone, at every offset and every short `avail`. */
    for (i = 0; i < size && i < 64; i++) {
        size_t avail, used;
        for (avail = 0; avail <= 4 && avail <= size - i; avail++) {
            used = fcr__nvlen_decode(data + i, avail, &len);
            if (used != 0 && (used > avail || (used != 1 && used != 4) || len > 0x7fffffffu))
                abort();
            if (used == 1 && len != data[i])
                abort();
        }
    }

    asked = walk(data, size);

    /* Values from the input's last bytes so the digits vary. */
    if (size >= 1) {
        v.max_conns = data[size - 1] * 16777259u;
        v.max_reqs = size > 1 ? data[size - 2] * 65599u : 0;
        v.mpxs_conns = (data[0] & 1) != 0;
    }
    memset(out, 0xaa, sizeof out);
    r = fcr__get_values_result(data, size, &v, out, 16);
    if (r != 0)
        check_result(out, r, 16, asked, &v);
    for (i = r; i < sizeof out; i++)
        if (out[i] != 0xaa)
            abort();
    memset(out, 0xaa, sizeof out);
    r = fcr__get_values_result(data, size, &v, out, 128);
    if (r == 0)
        abort();
    check_result(out, r, 128, asked, &v);
    for (i = r; i < sizeof out; i++)
        if (out[i] != 0xaa)
            abort();
    return 0;
}
