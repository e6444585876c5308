/* Unit tests for the FastCGI record and name-value codecs (core/codec.c). */
#include "core/fcgi.h"

#include <check.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- name-value lengths ------------------------------------------------------------------ */

static void check_nvlen_roundtrip(uint32_t len, size_t want_size, const uint8_t *want_bytes)
{
    uint8_t out[8];
    uint32_t got = 0xdeadbeef;

    memset(out, 0xcc, sizeof out);
    ck_assert_uint_eq(fcr__nvlen_encode(out, len), want_size);
    ck_assert_mem_eq(out, want_bytes, want_size);
    ck_assert_uint_eq(out[want_size], 0xcc); /* nothing written past the prefix */
    ck_assert_uint_eq(fcr__nvlen_decode(out, want_size, &got), want_size);
    ck_assert_uint_eq(got, len);
}

START_TEST(nvlen_below_128_uses_one_byte)
{
    check_nvlen_roundtrip(0, 1, (const uint8_t[]){0x00});
    check_nvlen_roundtrip(1, 1, (const uint8_t[]){0x01});
    check_nvlen_roundtrip(127, 1, (const uint8_t[]){0x7f});
}
END_TEST

START_TEST(nvlen_from_128_uses_four_bytes_with_high_bit)
{
    check_nvlen_roundtrip(128, 4, (const uint8_t[]){0x80, 0x00, 0x00, 0x80});
    check_nvlen_roundtrip(255, 4, (const uint8_t[]){0x80, 0x00, 0x00, 0xff});
    check_nvlen_roundtrip(256, 4, (const uint8_t[]){0x80, 0x00, 0x01, 0x00});
    check_nvlen_roundtrip(65535, 4, (const uint8_t[]){0x80, 0x00, 0xff, 0xff});
    check_nvlen_roundtrip(0x01020304, 4, (const uint8_t[]){0x81, 0x02, 0x03, 0x04});
    check_nvlen_roundtrip(0x7fffffff, 4, (const uint8_t[]){0xff, 0xff, 0xff, 0xff});
}
END_TEST

START_TEST(nvlen_four_byte_form_of_small_value_is_legal)
{
    uint32_t len = 99;

    ck_assert_uint_eq(fcr__nvlen_decode((const uint8_t[]){0x80, 0, 0, 5}, 4, &len), 4);
    ck_assert_uint_eq(len, 5);
    ck_assert_uint_eq(fcr__nvlen_decode((const uint8_t[]){0x80, 0, 0, 0}, 4, &len), 4);
    ck_assert_uint_eq(len, 0);
    ck_assert_uint_eq(fcr__nvlen_decode((const uint8_t[]){0x80, 0, 0, 127}, 4, &len), 4);
    ck_assert_uint_eq(len, 127);
}
END_TEST

START_TEST(nvlen_bytes_decode_unsigned)
{
    uint32_t len = 0;

    /* Every byte with its high bit set must come out positive (no sign extension). */
    ck_assert_uint_eq(fcr__nvlen_decode((const uint8_t[]){0x80, 0xff, 0xfe, 0xfd}, 4, &len), 4);
    ck_assert_uint_eq(len, 0x00fffefdu);
    ck_assert_uint_eq(fcr__nvlen_decode((const uint8_t[]){0x80, 0x00, 0x00, 0xff}, 4, &len), 4);
    ck_assert_uint_eq(len, 0xffu);
    ck_assert_uint_eq(fcr__nvlen_decode((const uint8_t[]){0x80, 0x00, 0xff, 0x80}, 4, &len), 4);
    ck_assert_uint_eq(len, 0xff80u);
    ck_assert_uint_eq(fcr__nvlen_decode((const uint8_t[]){0xc0, 0x00, 0x00, 0x00}, 4, &len), 4);
    ck_assert_uint_eq(len, 0x40000000u);
}
END_TEST

START_TEST(nvlen_four_byte_form_masks_high_bit_to_31_bits)
{
    uint32_t len = 0;

    ck_assert_uint_eq(fcr__nvlen_decode((const uint8_t[]){0xff, 0xff, 0xff, 0xff}, 4, &len), 4);
    ck_assert_uint_eq(len, 0x7fffffffu);
    ck_assert_uint_eq(fcr__nvlen_decode((const uint8_t[]){0xff, 0x00, 0x00, 0x00}, 4, &len), 4);
    ck_assert_uint_eq(len, 0x7f000000u);
}
END_TEST

START_TEST(nvlen_truncated_prefix_is_not_decoded)
{
    const uint8_t four[4] = {0x80, 0x00, 0x01, 0x00};
    uint32_t len = 12345;
    size_t avail;

    ck_assert_uint_eq(fcr__nvlen_decode(four, 0, &len), 0);
    for (avail = 1; avail < 4; avail++)
        ck_assert_uint_eq(fcr__nvlen_decode(four, avail, &len), 0);
    ck_assert_uint_eq(len, 12345);
    ck_assert_uint_eq(fcr__nvlen_decode(four, 4, &len), 4);
    ck_assert_uint_eq(len, 256);
    /* A one-byte length needs only one byte even if more would fit. */
    ck_assert_uint_eq(fcr__nvlen_decode((const uint8_t[]){0x05}, 1, &len), 1);
    ck_assert_uint_eq(len, 5);
}
END_TEST

/* ---- name-value pairs -------------------------------------------------------------------- */

START_TEST(nv_size_counts_prefixes_and_bytes)
{
    ck_assert_uint_eq(fcr__nv_size(0, 0), 2);
    ck_assert_uint_eq(fcr__nv_size(127, 127), 2 + 254);
    ck_assert_uint_eq(fcr__nv_size(128, 0), 5 + 128);
    ck_assert_uint_eq(fcr__nv_size(0, 128), 5 + 128);
    ck_assert_uint_eq(fcr__nv_size(300, 70000), 8 + 70300);
#if SIZE_MAX > 0xffffffffu
    ck_assert_uint_eq(fcr__nv_size(0x7fffffff, 0x7fffffff), (size_t)0xfffffffeu + 8);
#else
    ck_assert_uint_eq(fcr__nv_size(0x7fffffff, 0x7fffffff), SIZE_MAX);
#endif
}
END_TEST

START_TEST(nv_encode_then_next_roundtrips)
{
    static const size_t lens[] = {0, 1, 127, 128, 255, 1000};
    uint8_t *name = malloc(1000), *value = malloc(1000), *buf = malloc(4096);
    size_t i, j;

    for (i = 0; i < 1000; i++) {
        name[i] = (uint8_t)(i * 7);
        value[i] = (uint8_t)(255 - i);
    }
    for (i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        for (j = 0; j < sizeof lens / sizeof lens[0]; j++) {
            size_t size = fcr__nv_size(lens[i], lens[j]), off = 0;
            const uint8_t *n = NULL, *v = NULL;
            uint32_t nl = 0, vl = 0;

            ck_assert_uint_eq(fcr__nv_encode(buf, name, lens[i], value, lens[j]), size);
            ck_assert_int_eq(fcr__nv_next(buf, size, &off, &n, &nl, &v, &vl), FCR__NV_OK);
            ck_assert_uint_eq(off, size);
            ck_assert_uint_eq(nl, lens[i]);
            ck_assert_uint_eq(vl, lens[j]);
            ck_assert_mem_eq(n, name, nl);
            ck_assert_mem_eq(v, value, vl);
            ck_assert_int_eq(fcr__nv_next(buf, size, &off, &n, &nl, &v, &vl), FCR__NV_END);
            ck_assert_uint_eq(off, size);
        }
    }
    free(name);
    free(value);
    free(buf);
}
END_TEST

START_TEST(nv_stream_of_pairs_decodes_in_order)
{
    uint8_t buf[512];
    size_t len = 0, off = 0;
    const uint8_t *n, *v;
    uint32_t nl, vl;
    char big[200];

    memset(big, 'x', sizeof big);
    len += fcr__nv_encode(buf + len, "SCRIPT_NAME", 11, "/app", 4);
    len += fcr__nv_encode(buf + len, "EMPTY", 5, "", 0);
    len += fcr__nv_encode(buf + len, "", 0, "novalue", 7);
    len += fcr__nv_encode(buf + len, "BIG", 3, big, sizeof big);
    /* A pair whose lengths use the legal 4-byte form for small values. */
    memcpy(buf + len, "\x80\x00\x00\x02\x80\x00\x00\x01hiz", 11);
    len += 11;

    ck_assert_int_eq(fcr__nv_next(buf, len, &off, &n, &nl, &v, &vl), FCR__NV_OK);
    ck_assert_uint_eq(nl, 11);
    ck_assert_mem_eq(n, "SCRIPT_NAME", 11);
    ck_assert_uint_eq(vl, 4);
    ck_assert_mem_eq(v, "/app", 4);
    ck_assert_int_eq(fcr__nv_next(buf, len, &off, &n, &nl, &v, &vl), FCR__NV_OK);
    ck_assert_uint_eq(nl, 5);
    ck_assert_uint_eq(vl, 0);
    ck_assert_int_eq(fcr__nv_next(buf, len, &off, &n, &nl, &v, &vl), FCR__NV_OK);
    ck_assert_uint_eq(nl, 0);
    ck_assert_uint_eq(vl, 7);
    ck_assert_mem_eq(v, "novalue", 7);
    ck_assert_int_eq(fcr__nv_next(buf, len, &off, &n, &nl, &v, &vl), FCR__NV_OK);
    ck_assert_uint_eq(vl, sizeof big);
    ck_assert_mem_eq(v, big, sizeof big);
    ck_assert_int_eq(fcr__nv_next(buf, len, &off, &n, &nl, &v, &vl), FCR__NV_OK);
    ck_assert_uint_eq(nl, 2);
    ck_assert_mem_eq(n, "hi", 2);
    ck_assert_uint_eq(vl, 1);
    ck_assert_mem_eq(v, "z", 1);
    ck_assert_int_eq(fcr__nv_next(buf, len, &off, &n, &nl, &v, &vl), FCR__NV_END);
    ck_assert_uint_eq(off, len);
}
END_TEST

START_TEST(nv_empty_stream_is_end)
{
    size_t off = 0;
    const uint8_t *n, *v;
    uint32_t nl, vl;

    ck_assert_int_eq(fcr__nv_next(NULL, 0, &off, &n, &nl, &v, &vl), FCR__NV_END);
    ck_assert_uint_eq(off, 0);
}
END_TEST

/* Asserts that `stream` (len bytes) holds zero or more good pairs and then a malformed tail. */
static void check_truncated_after(const uint8_t *stream, size_t len, unsigned good_pairs)
{
    uint8_t *copy = malloc(len ? len : 1); /* exact size: ASan sees any over-read */
    size_t off = 0, before;
    const uint8_t *n = NULL, *v = NULL;
    uint32_t nl = 0, vl = 0;
    unsigned i;

    memcpy(copy, stream, len);
    for (i = 0; i < good_pairs; i++)
        ck_assert_int_eq(fcr__nv_next(copy, len, &off, &n, &nl, &v, &vl), FCR__NV_OK);
    before = off;
    ck_assert_int_eq(fcr__nv_next(copy, len, &off, &n, &nl, &v, &vl), FCR__NV_TRUNCATED);
    ck_assert_uint_eq(off, before);
    /* Asking again gives the same answer: the decoder does not move past a bad pair. */
    ck_assert_int_eq(fcr__nv_next(copy, len, &off, &n, &nl, &v, &vl), FCR__NV_TRUNCATED);
    free(copy);
}

START_TEST(truncated_length_prefix_at_end_of_params_is_error_not_end)
{
    /* One good pair "A"="b", then 1..3 bytes of a four-byte name length. */
    check_truncated_after((const uint8_t *)"\x01\x01"
                                           "Ab\x80",
                          5, 1);
    check_truncated_after((const uint8_t *)"\x01\x01"
                                           "Ab\x80\x00",
                          6, 1);
    check_truncated_after((const uint8_t *)"\x01\x01"
                                           "Ab\x80\x00\x00",
                          7, 1);
    /* Name length complete, value length missing or partial. */
    check_truncated_after((const uint8_t *)"\x01\x01"
                                           "Ab\x01",
                          5, 1);
    check_truncated_after((const uint8_t *)"\x01\x80\x00", 3, 0);
    check_truncated_after((const uint8_t *)"\x80\x00\x00\x01\x80", 5, 0);
    check_truncated_after((const uint8_t *)"\x80", 1, 0);
}
END_TEST

START_TEST(name_or_value_past_end_of_params_is_truncated)
{
    check_truncated_after((const uint8_t *)"\x05\x00"
                                           "abcd",
                          6, 0);
    check_truncated_after((const uint8_t *)"\x02\x03"
                                           "abxy",
                          6, 0);
    check_truncated_after((const uint8_t *)"\x80\x00\x01\x00\x00"
                                           "short",
                          10, 0);
    check_truncated_after((const uint8_t *)"\x00\x80\x00\x00\x09"
                                           "12345678",
                          13, 0);
}
END_TEST

START_TEST(nv_length_sum_overflow_is_rejected)
{
    /* CVE-2025-23016: lengths near 2^31 whose sum, added to the offset in 32-bit arithmetic,
     * wraps to a small number that passes a naive "off + nlen + vlen <= len" check. */
    static const uint8_t both_max[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                         'a',  'b',  'c',  'd',  'e',  'f',  'g',  'h'};
    static const uint8_t name_max[12] = {0xff, 0xff, 0xff, 0xff, 0x80, 0x00,
                                         0x00, 0x02, 'a',  'b',  'c',  'd'};
    static const uint8_t value_max[12] = {0x02, 0xff, 0xff, 0xff, 0xff, 'a',
                                          'b',  'c',  'd',  'e',  'f',  'g'};
    /* 0x7ffffffa + 0x7ffffffe + 8 == 2^32: wraps to exactly 0 in 32 bits. */
    static const uint8_t wraps_to_zero[8] = {0xff, 0xff, 0xff, 0xfa, 0xff, 0xff, 0xff, 0xfe};

    check_truncated_after(both_max, sizeof both_max, 0);
    check_truncated_after(name_max, sizeof name_max, 0);
    check_truncated_after(value_max, sizeof value_max, 0);
    check_truncated_after(wraps_to_zero, sizeof wraps_to_zero, 0);
}
END_TEST

START_TEST(nv_offset_past_end_is_truncated)
{
    const uint8_t buf[4] = {1, 1, 'a', 'b'};
    size_t off = 5;
    const uint8_t *n, *v;
    uint32_t nl, vl;

    ck_assert_int_eq(fcr__nv_next(buf, sizeof buf, &off, &n, &nl, &v, &vl), FCR__NV_TRUNCATED);
    off = SIZE_MAX;
    ck_assert_int_eq(fcr__nv_next(buf, sizeof buf, &off, &n, &nl, &v, &vl), FCR__NV_TRUNCATED);
    ck_assert_uint_eq(off, SIZE_MAX);
}
END_TEST

START_TEST(nv_pointers_lie_inside_the_buffer)
{
    uint8_t buf[64];
    size_t len = 0, off = 0;
    const uint8_t *n, *v;
    uint32_t nl, vl;
    fcr__nv_status st;

    len += fcr__nv_encode(buf + len, "", 0, "", 0);
    len += fcr__nv_encode(buf + len, "name", 4, "", 0);
    len += fcr__nv_encode(buf + len, "", 0, "value", 5);
    while ((st = fcr__nv_next(buf, len, &off, &n, &nl, &v, &vl)) == FCR__NV_OK) {
        size_t noff = (size_t)(n - buf), voff = (size_t)(v - buf);

        ck_assert_uint_le(noff + nl, len);
        ck_assert_uint_eq(voff, noff + nl);
        ck_assert_uint_le(voff + vl, len);
        ck_assert_uint_eq(off, voff + vl);
    }
    ck_assert_int_eq(st, FCR__NV_END);
}
END_TEST

/* ---- record headers and fixed records ---------------------------------------------------- */

START_TEST(header_encode_decode_roundtrip)
{
    static const uint16_t ids[] = {0, 1, 2, 255, 256, 0x1234, 65535};
    static const uint16_t clens[] = {0, 1, 8, 255, 256, 16384, 65535};
    uint8_t out[8];
    fcr__fcgi_header h;
    size_t i, j;
    unsigned type, pad;

    for (type = 0; type < 256; type += 17)
        for (i = 0; i < sizeof ids / sizeof ids[0]; i++)
            for (j = 0; j < sizeof clens / sizeof clens[0]; j++)
                for (pad = 0; pad < 256; pad += 51) {
                    fcr__header_encode(out, (uint8_t)type, ids[i], clens[j], (uint8_t)pad);
                    ck_assert_uint_eq(out[0], 1);
                    ck_assert_uint_eq(out[7], 0);
                    fcr__header_decode(out, &h);
                    ck_assert_uint_eq(h.version, 1);
                    ck_assert_uint_eq(h.type, type);
                    ck_assert_uint_eq(h.id, ids[i]);
                    ck_assert_uint_eq(h.content_len, clens[j]);
                    ck_assert_uint_eq(h.padding_len, pad);
                }
}
END_TEST

START_TEST(header_bytes_are_big_endian)
{
    uint8_t out[8];
    fcr__fcgi_header h;

    fcr__header_encode(out, FCGI_STDOUT, 0xabcd, 0xfedc, 0xff);
    ck_assert_mem_eq(out, "\x01\x06\xab\xcd\xfe\xdc\xff\x00", 8);
    fcr__header_decode((const uint8_t *)"\x01\x05\xff\xff\xff\xff\xff\xee", &h);
    ck_assert_uint_eq(h.type, 5);
    ck_assert_uint_eq(h.id, 65535);
    ck_assert_uint_eq(h.content_len, 65535);
    ck_assert_uint_eq(h.padding_len, 255);
}
END_TEST

START_TEST(header_decode_reports_version_as_is)
{
    fcr__fcgi_header h;

    fcr__header_decode((const uint8_t *)"\x00\x01\x00\x01\x00\x08\x00\x00", &h);
    ck_assert_uint_eq(h.version, 0);
    fcr__header_decode((const uint8_t *)"\xff\x01\x00\x01\x00\x08\x00\x00", &h);
    ck_assert_uint_eq(h.version, 255);
}
END_TEST

START_TEST(padding_brings_content_to_multiple_of_8)
{
    size_t n;

    ck_assert_uint_eq(fcr__padding_for(0), 0);
    ck_assert_uint_eq(fcr__padding_for(1), 7);
    ck_assert_uint_eq(fcr__padding_for(7), 1);
    ck_assert_uint_eq(fcr__padding_for(8), 0);
    ck_assert_uint_eq(fcr__padding_for(65535), 1);
    for (n = 0; n < 100; n++)
        ck_assert_uint_eq((n + fcr__padding_for(n)) % 8, 0);
}
END_TEST

START_TEST(end_request_record_bytes)
{
    uint8_t out[17];

    memset(out, 0xcc, sizeof out);
    fcr__end_request_encode(out, 1, 0, FCGI_REQUEST_COMPLETE);
    ck_assert_mem_eq(out,
                     "\x01\x03\x00\x01\x00\x08\x00\x00"
                     "\x00\x00\x00\x00\x00\x00\x00\x00",
                     16);
    ck_assert_uint_eq(out[16], 0xcc);

    fcr__end_request_encode(out, 0xfffe, 0xdeadbeef, FCGI_UNKNOWN_ROLE);
    ck_assert_mem_eq(out,
                     "\x01\x03\xff\xfe\x00\x08\x00\x00"
                     "\xde\xad\xbe\xef\x03\x00\x00\x00",
                     16);
    fcr__end_request_encode(out, 65535, 1, FCGI_OVERLOADED);
    ck_assert_mem_eq(out,
                     "\x01\x03\xff\xff\x00\x08\x00\x00"
                     "\x00\x00\x00\x01\x02\x00\x00\x00",
                     16);
}
END_TEST

START_TEST(unknown_type_record_carries_the_type)
{
    uint8_t out[17];

    memset(out, 0xcc, sizeof out);
    fcr__unknown_type_encode(out, 42);
    ck_assert_mem_eq(out,
                     "\x01\x0b\x00\x00\x00\x08\x00\x00"
                     "\x2a\x00\x00\x00\x00\x00\x00\x00",
                     16);
    ck_assert_uint_eq(out[16], 0xcc);
    fcr__unknown_type_encode(out, 0xff);
    ck_assert_uint_eq(out[8], 0xff);
}
END_TEST

/* ---- GET_VALUES_RESULT ------------------------------------------------------------------- */

static const fcr__values test_values = {.max_conns = 100, .max_reqs = 5000, .mpxs_conns = true};

static size_t query_of(uint8_t *q, const char *const *names, size_t count)
{
    size_t len = 0, i;

    for (i = 0; i < count; i++)
        len += fcr__nv_encode(q + len, names[i], strlen(names[i]), "", 0);
    return len;
}

/* Checks the record framing and renders its pairs as "NAME=VALUE;" into `text`. */
static void render_result(const uint8_t *rec, size_t size, char *text, size_t cap)
{
    fcr__fcgi_header h;
    size_t off = 0, used = 0, i;
    const uint8_t *n, *v;
    uint32_t nl, vl;

    ck_assert_uint_ge(size, 8);
    ck_assert_uint_eq(size % 8, 0);
    fcr__header_decode(rec, &h);
    ck_assert_uint_eq(h.version, 1);
    ck_assert_uint_eq(h.type, FCGI_GET_VALUES_RESULT);
    ck_assert_uint_eq(h.id, 0);
    ck_assert_uint_eq(rec[7], 0);
    ck_assert_uint_eq(8 + (size_t)h.content_len + h.padding_len, size);
    ck_assert_uint_eq(h.padding_len, fcr__padding_for(h.content_len));
    for (i = 8 + (size_t)h.content_len; i < size; i++)
        ck_assert_uint_eq(rec[i], 0);
    text[0] = '\0';
    while (fcr__nv_next(rec + 8, h.content_len, &off, &n, &nl, &v, &vl) == FCR__NV_OK) {
        ck_assert_uint_lt(used + nl + vl + 2, cap);
        memcpy(text + used, n, nl);
        used += nl;
        text[used++] = '=';
        memcpy(text + used, v, vl);
        used += vl;
        text[used++] = ';';
        text[used] = '\0';
    }
    ck_assert_uint_eq(off, h.content_len);
}

static void check_get_values(const uint8_t *q, size_t qlen, const fcr__values *vals,
                             const char *want)
{
    uint8_t out[160];
    char text[256];
    size_t size, i;

    memset(out, 0xaa, sizeof out);
    size = fcr__get_values_result(q, qlen, vals, out, 128);
    ck_assert_uint_gt(size, 0);
    ck_assert_uint_le(size, 128);
    /* One record and nothing after it: no empty terminator record. */
    for (i = size; i < sizeof out; i++)
        ck_assert_uint_eq(out[i], 0xaa);
    render_result(out, size, text, sizeof text);
    ck_assert_str_eq(text, want);
}

START_TEST(get_values_answers_all_three_names)
{
    static const char *const names[] = {"FCGI_MAX_CONNS", "FCGI_MAX_REQS", "FCGI_MPXS_CONNS"};
    uint8_t q[128];

    check_get_values(q, query_of(q, names, 3), &test_values,
                     "FCGI_MAX_CONNS=100;FCGI_MAX_REQS=5000;FCGI_MPXS_CONNS=1;");
}
END_TEST

START_TEST(get_values_answers_only_the_names_asked)
{
    static const char *const one[] = {"FCGI_MPXS_CONNS"};
    static const char *const two[] = {"FCGI_MAX_REQS", "FCGI_MAX_CONNS"};
    uint8_t q[128];

    check_get_values(q, query_of(q, one, 1), &test_values, "FCGI_MPXS_CONNS=1;");
    check_get_values(q, query_of(q, two, 2), &test_values,
                     "FCGI_MAX_REQS=5000;FCGI_MAX_CONNS=100;");
}
END_TEST

START_TEST(get_values_duplicate_names_answered_once)
{
    static const char *const names[] = {"FCGI_MAX_CONNS", "FCGI_MAX_CONNS", "FCGI_MPXS_CONNS",
                                        "FCGI_MAX_CONNS", "FCGI_MPXS_CONNS"};
    uint8_t q[256];

    check_get_values(q, query_of(q, names, 5), &test_values,
                     "FCGI_MAX_CONNS=100;FCGI_MPXS_CONNS=1;");
}
END_TEST

START_TEST(get_values_unknown_names_omitted)
{
    static const char *const names[] = {"FCGI_UNKNOWN",  "FCGI_MAX_REQS",   "fcgi_max_conns",
                                        "FCGI_MAX_CONN", "FCGI_MAX_CONNSX", ""};
    static const char *const only_unknown[] = {"X", "FCGI_MAX"};
    uint8_t q[256];

    check_get_values(q, query_of(q, names, 6), &test_values, "FCGI_MAX_REQS=5000;");
    check_get_values(q, query_of(q, only_unknown, 2), &test_values, "");
}
END_TEST

START_TEST(get_values_empty_query_gives_empty_result)
{
    uint8_t out[16];

    memset(out, 0xaa, sizeof out);
    ck_assert_uint_eq(fcr__get_values_result(NULL, 0, &test_values, out, sizeof out), 8);
    ck_assert_mem_eq(out, "\x01\x0a\x00\x00\x00\x00\x00\x00", 8);
    ck_assert_uint_eq(out[8], 0xaa);
}
END_TEST

START_TEST(get_values_query_values_are_ignored)
{
    uint8_t q[128];
    size_t len = 0;

    len += fcr__nv_encode(q + len, "FCGI_MAX_CONNS", 14, "999", 3);
    len += fcr__nv_encode(q + len, "FCGI_MPXS_CONNS", 15, "1", 1);
    check_get_values(q, len, &(fcr__values){.max_conns = 7, .max_reqs = 8, .mpxs_conns = false},
                     "FCGI_MAX_CONNS=7;FCGI_MPXS_CONNS=0;");
}
END_TEST

START_TEST(get_values_values_are_decimal_ascii)
{
    static const char *const names[] = {"FCGI_MAX_CONNS", "FCGI_MAX_REQS", "FCGI_MPXS_CONNS"};
    uint8_t q[128];
    size_t qlen = query_of(q, names, 3);
    char want[128];

    check_get_values(q, qlen, &(fcr__values){0, 1, false},
                     "FCGI_MAX_CONNS=0;FCGI_MAX_REQS=1;FCGI_MPXS_CONNS=0;");
    snprintf(want, sizeof want, "FCGI_MAX_CONNS=%u;FCGI_MAX_REQS=%u;FCGI_MPXS_CONNS=1;", UINT_MAX,
             UINT_MAX);
    check_get_values(q, qlen, &(fcr__values){UINT_MAX, UINT_MAX, true}, want);
}
END_TEST

START_TEST(get_values_malformed_query_answers_names_before_the_malformation)
{
    static const char *const names[] = {"FCGI_MAX_REQS", "FCGI_MPXS_CONNS"};
    uint8_t q[128];
    size_t len = query_of(q, names, 2);

    /* A truncated prefix after two good pairs. */
    q[len] = 0x80;
    check_get_values(q, len + 1, &test_values, "FCGI_MAX_REQS=5000;FCGI_MPXS_CONNS=1;");
    /* A pair that claims more bytes than there are, then a name that must not be reached. */
    len = query_of(q, names, 1);
    len += fcr__nv_encode(q + len, "FCGI_MAX_CONNS", 14, "", 0);
    q[len - 16] = 0xff; /* the name length of FCGI_MAX_CONNS becomes a huge 4-byte length */
    check_get_values(q, len, &test_values, "FCGI_MAX_REQS=5000;");
    /* Garbage only. */
    check_get_values((const uint8_t *)"\xff\xff\xff\xff\xff\xff\xff\xff", 8, &test_values, "");
}
END_TEST

START_TEST(get_values_result_fits_in_128_bytes_and_respects_cap)
{
    static const char *const names[] = {"FCGI_MAX_CONNS", "FCGI_MAX_REQS", "FCGI_MPXS_CONNS"};
    const fcr__values big = {UINT_MAX, UINT_MAX, true};
    uint8_t q[128], out[256];
    size_t qlen = query_of(q, names, 3), size, cap;

    size = fcr__get_values_result(q, qlen, &big, out, sizeof out);
    ck_assert_uint_gt(size, 8);
    ck_assert_uint_le(size, 128);
    for (cap = 0; cap < size; cap++) {
        memset(out, 0xaa, sizeof out);
        ck_assert_uint_eq(fcr__get_values_result(q, qlen, &big, out, cap), 0);
    }
    ck_assert_uint_eq(fcr__get_values_result(q, qlen, &big, out, size), size);
}
END_TEST

/* ---- suite ------------------------------------------------------------------------------- */

#define ADD_TEST(s, fn)                                                                            \
    do {                                                                                           \
        TCase *tc_ = tcase_create(#fn);                                                            \
        tcase_add_test(tc_, fn);                                                                   \
        suite_add_tcase((s), tc_);                                                                 \
    } while (0)

static Suite *codec_suite(void)
{
    Suite *s = suite_create("codec");

    ADD_TEST(s, nvlen_below_128_uses_one_byte);
    ADD_TEST(s, nvlen_from_128_uses_four_bytes_with_high_bit);
    ADD_TEST(s, nvlen_four_byte_form_of_small_value_is_legal);
    ADD_TEST(s, nvlen_bytes_decode_unsigned);
    ADD_TEST(s, nvlen_four_byte_form_masks_high_bit_to_31_bits);
    ADD_TEST(s, nvlen_truncated_prefix_is_not_decoded);
    ADD_TEST(s, nv_size_counts_prefixes_and_bytes);
    ADD_TEST(s, nv_encode_then_next_roundtrips);
    ADD_TEST(s, nv_stream_of_pairs_decodes_in_order);
    ADD_TEST(s, nv_empty_stream_is_end);
    ADD_TEST(s, truncated_length_prefix_at_end_of_params_is_error_not_end);
    ADD_TEST(s, name_or_value_past_end_of_params_is_truncated);
    ADD_TEST(s, nv_length_sum_overflow_is_rejected);
    ADD_TEST(s, nv_offset_past_end_is_truncated);
    ADD_TEST(s, nv_pointers_lie_inside_the_buffer);
    ADD_TEST(s, header_encode_decode_roundtrip);
    ADD_TEST(s, header_bytes_are_big_endian);
    ADD_TEST(s, header_decode_reports_version_as_is);
    ADD_TEST(s, padding_brings_content_to_multiple_of_8);
    ADD_TEST(s, end_request_record_bytes);
    ADD_TEST(s, unknown_type_record_carries_the_type);
    ADD_TEST(s, get_values_answers_all_three_names);
    ADD_TEST(s, get_values_answers_only_the_names_asked);
    ADD_TEST(s, get_values_duplicate_names_answered_once);
    ADD_TEST(s, get_values_unknown_names_omitted);
    ADD_TEST(s, get_values_empty_query_gives_empty_result);
    ADD_TEST(s, get_values_query_values_are_ignored);
    ADD_TEST(s, get_values_values_are_decimal_ascii);
    ADD_TEST(s, get_values_malformed_query_answers_names_before_the_malformation);
    ADD_TEST(s, get_values_result_fits_in_128_bytes_and_respects_cap);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(codec_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
