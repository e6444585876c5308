/* FastCGI 1.0 record and name-value codecs: pure functions over bytes. */
#include "core/fcgi.h"

#include <string.h>

#define NVLEN_MAX 0x7fffffffu

void fcr__header_decode(const uint8_t *p, fcr__fcgi_header *h)
{
    h->version = p[0];
    h->type = p[1];
    h->id = (uint16_t)(((unsigned)p[2] << 8) | p[3]);
    h->content_len = (uint16_t)(((unsigned)p[4] << 8) | p[5]);
    h->padding_len = p[6];
}

void fcr__header_encode(uint8_t *out, uint8_t type, uint16_t id, uint16_t content_len,
                        uint8_t padding_len)
{
    out[0] = FCGI_VERSION_1;
    out[1] = type;
    out[2] = (uint8_t)(id >> 8);
    out[3] = (uint8_t)(id & 0xff);
    out[4] = (uint8_t)(content_len >> 8);
    out[5] = (uint8_t)(content_len & 0xff);
    out[6] = padding_len;
    out[7] = 0;
}

size_t fcr__nvlen_encode(uint8_t *out, uint32_t len)
{
    if (len < 0x80u) {
        out[0] = (uint8_t)len;
        return 1;
    }
    out[0] = (uint8_t)(((len >> 24) & 0x7fu) | 0x80u);
    out[1] = (uint8_t)((len >> 16) & 0xffu);
    out[2] = (uint8_t)((len >> 8) & 0xffu);
    out[3] = (uint8_t)(len & 0xffu);
    return 4;
}

static size_t nvlen_size(size_t len)
{
    return len < 0x80u ? 1 : 4;
}

size_t fcr__nv_size(size_t nlen, size_t vlen)
{
    size_t n = nvlen_size(nlen) + nvlen_size(vlen);

    /* Saturate instead of wrapping (only reachable where size_t is 32 bits). */
    if (nlen > SIZE_MAX - n)
        return SIZE_MAX;
    n += nlen;
    if (vlen > SIZE_MAX - n)
        return SIZE_MAX;
    return n + vlen;
}

size_t fcr__nv_encode(uint8_t *out, const void *name, size_t nlen, const void *value, size_t vlen)
{
    size_t n = 0;

    n += fcr__nvlen_encode(out + n, (uint32_t)(nlen & NVLEN_MAX));
    n += fcr__nvlen_encode(out + n, (uint32_t)(vlen & NVLEN_MAX));
    if (nlen > 0)
        memcpy(out + n, name, nlen);
    n += nlen;
    if (vlen > 0)
        memcpy(out + n, value, vlen);
    return n + vlen;
}

void fcr__end_request_encode(uint8_t *out, uint16_t id, uint32_t app_status,
                             uint8_t protocol_status)
{
    fcr__header_encode(out, FCGI_END_REQUEST, id, 8, 0);
    out[8] = (uint8_t)((app_status >> 24) & 0xffu);
    out[9] = (uint8_t)((app_status >> 16) & 0xffu);
    out[10] = (uint8_t)((app_status >> 8) & 0xffu);
    out[11] = (uint8_t)(app_status & 0xffu);
    out[12] = protocol_status;
    out[13] = 0;
    out[14] = 0;
    out[15] = 0;
}

void fcr__unknown_type_encode(uint8_t *out, uint8_t type)
{
    fcr__header_encode(out, FCGI_UNKNOWN_TYPE, FCGI_NULL_REQUEST_ID, 8, 0);
    out[8] = type;
    memset(out + 9, 0, 7);
}

enum { VAL_MAX_CONNS, VAL_MAX_REQS, VAL_MPXS_CONNS, VAL_COUNT };

static const struct {
    const char *name;
    size_t len;
} value_names[VAL_COUNT] = {
    [VAL_MAX_CONNS] = {"FCGI_MAX_CONNS", sizeof "FCGI_MAX_CONNS" - 1},
    [VAL_MAX_REQS] = {"FCGI_MAX_REQS", sizeof "FCGI_MAX_REQS" - 1},
    [VAL_MPXS_CONNS] = {"FCGI_MPXS_CONNS", sizeof "FCGI_MPXS_CONNS" - 1},
};

/* Writes `v` in decimal to `out` (room for 20 digits). Returns the digit count. */
static size_t format_unsigned(char *out, unsigned long long v)
{
    char tmp[20];
    size_t n = 0, i;

    do {
        tmp[n++] = (char)('0' + (int)(v % 10));
        v /= 10;
    } while (v != 0);
    for (i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    return n;
}

size_t fcr__get_values_result(const uint8_t *query, size_t qlen, const fcr__values *v, uint8_t *out,
                              size_t cap)
{
    int order[VAL_COUNT];
    bool asked[VAL_COUNT] = {false, false, false};
    size_t count = 0, off = 0, content = 0, total, pos, i;
    char digits[VAL_COUNT][20];
    size_t ndigits[VAL_COUNT];
    const uint8_t *name, *value;
    uint32_t nlen, vlen;

    while (fcr__nv_next(query, qlen, &off, &name, &nlen, &value, &vlen) == FCR__NV_OK) {
        for (i = 0; i < VAL_COUNT; i++) {
            if (nlen == value_names[i].len && memcmp(name, value_names[i].name, nlen) == 0) {
                if (!asked[i]) {
                    asked[i] = true;
                    order[count++] = (int)i;
                }
                break;
            }
        }
    }

    ndigits[VAL_MAX_CONNS] = format_unsigned(digits[VAL_MAX_CONNS], v->max_conns);
    ndigits[VAL_MAX_REQS] = format_unsigned(digits[VAL_MAX_REQS], v->max_reqs);
    digits[VAL_MPXS_CONNS][0] = v->mpxs_conns ? '1' : '0';
    ndigits[VAL_MPXS_CONNS] = 1;

    for (i = 0; i < count; i++)
        content += fcr__nv_size(value_names[order[i]].len, ndigits[order[i]]);
    total = FCGI_HEADER_LEN + content + fcr__padding_for(content);
    if (total > cap)
        return 0;

    fcr__header_encode(out, FCGI_GET_VALUES_RESULT, FCGI_NULL_REQUEST_ID, (uint16_t)content,
                       fcr__padding_for(content));
    pos = FCGI_HEADER_LEN;
    for (i = 0; i < count; i++) {
        int k = order[i];
        pos += fcr__nv_encode(out + pos, value_names[k].name, value_names[k].len, digits[k],
                              ndigits[k]);
    }
    memset(out + pos, 0, total - pos);
    return total;
}
