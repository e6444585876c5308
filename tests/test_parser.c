/* Unit tests for the incremental FastCGI record parser (core/parser.c).
 *
 * Every test records the parser's events as a printable log: one line per event, with the
 * content of consecutive stream events of the same type and id concatenated (streams are byte
 * streams; how they are cut into events depends on how the input was split). Feeding the same
 * bytes in any split must give the same log. */
#include "core/fcgi.h"

#include <fcrest/error.h>

#include <check.h>
#include <malloc.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- event log --------------------------------------------------------------------------- */

typedef struct tlog {
    char *s;
    size_t len, cap;
    bool open; /* a stream line is open: more bytes of the same stream are appended to it */
    unsigned otype, oid;
} tlog;

static void log_raw(tlog *l, const char *s, size_t n)
{
    if (l->len + n + 1 > l->cap) {
        size_t cap = l->cap ? l->cap : 256;
        while (cap < l->len + n + 1)
            cap *= 2;
        l->s = realloc(l->s, cap);
        ck_assert_ptr_nonnull(l->s);
        l->cap = cap;
    }
    memcpy(l->s + l->len, s, n);
    l->len += n;
    l->s[l->len] = '\0';
}

static void log_close(tlog *l)
{
    if (l->open) {
        log_raw(l, "]\n", 2);
        l->open = false;
    }
}

static void log_line(tlog *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void log_line(tlog *l, const char *fmt, ...)
{
    char line[128];
    va_list ap;
    int n;

    log_close(l);
    va_start(ap, fmt);
    n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    ck_assert_int_lt(n, (int)sizeof line);
    log_raw(l, line, (size_t)n);
}

static void log_bytes(tlog *l, const uint8_t *b, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        if (b[i] >= 0x20 && b[i] < 0x7f && b[i] != '\\' && b[i] != ']') {
            log_raw(l, (const char *)b + i, 1);
        } else {
            char esc[5];
            snprintf(esc, sizeof esc, "\\x%02x", b[i]);
            log_raw(l, esc, 4);
        }
    }
}

static void log_begin(tlog *l, unsigned id, unsigned role, unsigned flags)
{
    log_line(l, "begin id=%u role=%u flags=%u\n", id, role, flags);
}

static void log_stream(tlog *l, unsigned type, unsigned id, const uint8_t *b, size_t n)
{
    if (n == 0) {
        log_line(l, "end type=%u id=%u\n", type, id);
        return;
    }
    if (!l->open || l->otype != type || l->oid != id) {
        log_line(l, "stream type=%u id=%u [", type, id);
        l->open = true;
        l->otype = type;
        l->oid = id;
    }
    log_bytes(l, b, n);
}

static void log_abort(tlog *l, unsigned id)
{
    log_line(l, "abort id=%u\n", id);
}

static void log_mgmt(tlog *l, unsigned type, const uint8_t *c, size_t n)
{
    log_line(l, "management type=%u len=%zu [", type, n);
    log_bytes(l, c, n);
    log_raw(l, "]\n", 2);
}

static void log_ignored(tlog *l, unsigned type, unsigned id, unsigned clen, unsigned pad)
{
    log_line(l, "ignored type=%u id=%u len=%u pad=%u\n", type, id, clen, pad);
}

static const char *log_str(tlog *l)
{
    log_close(l);
    if (l->s == NULL)
        log_raw(l, "", 0);
    return l->s;
}

static void log_free(tlog *l)
{
    free(l->s);
    memset(l, 0, sizeof *l);
}

/* ---- callbacks --------------------------------------------------------------------------- */

enum pause_mode { PAUSE_NEVER, PAUSE_EVERY_EVENT, PAUSE_RECORD_EVENTS };

typedef struct tctx {
    tlog log;
    enum pause_mode pause;
    int fail_at; /* 1-based event number whose callback returns fail_rc; 0: never */
    int fail_rc;
    int events;
    bool paused_on_record; /* the last pause was on a record-level event */
    uint8_t params[1024];  /* PARAMS content of request 1, as delivered */
    size_t nparams;
} tctx;

static int verdict(tctx *c, bool record_event)
{
    c->events++;
    if (c->fail_at != 0 && c->events == c->fail_at)
        return c->fail_rc;
    if (c->pause == PAUSE_EVERY_EVENT || (c->pause == PAUSE_RECORD_EVENTS && record_event)) {
        c->paused_on_record = record_event;
        return FCR_EAGAIN;
    }
    return 0;
}

static int on_begin(void *ctx, uint16_t id, uint16_t role, uint8_t flags)
{
    tctx *c = ctx;

    ck_assert_uint_ne(id, 0);
    log_begin(&c->log, id, role, flags);
    return verdict(c, true);
}

static int on_stream(void *ctx, uint8_t type, uint16_t id, const uint8_t *buf, size_t len)
{
    tctx *c = ctx;

    ck_assert_uint_ne(id, 0);
    ck_assert(type == FCGI_PARAMS || type == FCGI_STDIN || type == FCGI_DATA);
    ck_assert_ptr_nonnull(buf);
    log_stream(&c->log, type, id, buf, len);
    if (type == FCGI_PARAMS && id == 1) {
        ck_assert_uint_le(c->nparams + len, sizeof c->params);
        memcpy(c->params + c->nparams, buf, len);
        c->nparams += len;
    }
    return verdict(c, len == 0);
}

static int on_abort(void *ctx, uint16_t id)
{
    tctx *c = ctx;

    ck_assert_uint_ne(id, 0);
    log_abort(&c->log, id);
    return verdict(c, true);
}

static int on_management(void *ctx, uint8_t type, const uint8_t *content, size_t len)
{
    tctx *c = ctx;

    ck_assert_ptr_nonnull(content);
    ck_assert_uint_le(len, FCGI_MAX_CONTENT);
    log_mgmt(&c->log, type, content, len);
    return verdict(c, true);
}

static int on_ignored(void *ctx, const fcr__fcgi_header *h)
{
    tctx *c = ctx;

    log_ignored(&c->log, h->type, h->id, h->content_len, h->padding_len);
    return verdict(c, true);
}

static const fcr__parser_events events = {
    .begin = on_begin,
    .stream = on_stream,
    .abort = on_abort,
    .management = on_management,
    .ignored = on_ignored,
};

/* ---- transcripts ------------------------------------------------------------------------- */

typedef struct tscript {
    uint8_t *b;
    size_t len, cap;
    tlog want; /* the events the transcript must produce */
} tscript;

static void put(tscript *t, const void *data, size_t n)
{
    if (t->len + n > t->cap) {
        size_t cap = t->cap ? t->cap : 1024;
        while (cap < t->len + n)
            cap *= 2;
        t->b = realloc(t->b, cap);
        ck_assert_ptr_nonnull(t->b);
        t->cap = cap;
    }
    if (n > 0)
        memcpy(t->b + t->len, data, n);
    t->len += n;
}

/* Appends a record with `version`; padding bytes are non-zero to show they are skipped. */
static void rec_v(tscript *t, uint8_t version, uint8_t type, uint16_t id, const void *content,
                  size_t clen, uint8_t pad)
{
    uint8_t h[8], padding[255];

    ck_assert_uint_le(clen, FCGI_MAX_CONTENT);
    fcr__header_encode(h, type, id, (uint16_t)clen, pad);
    h[0] = version;
    put(t, h, 8);
    put(t, content, clen);
    memset(padding, 0xa5, sizeof padding);
    put(t, padding, pad);
}

static void rec(tscript *t, uint8_t type, uint16_t id, const void *content, size_t clen,
                uint8_t pad)
{
    rec_v(t, FCGI_VERSION_1, type, id, content, clen, pad);
}

static void rec_begin(tscript *t, uint16_t id, uint16_t role, uint8_t flags, uint8_t pad)
{
    uint8_t body[8] = {(uint8_t)(role >> 8), (uint8_t)role, flags, 0xee, 0xee, 0xee, 0xee, 0xee};

    rec(t, FCGI_BEGIN_REQUEST, id, body, 8, pad);
}

static void tscript_free(tscript *t)
{
    free(t->b);
    log_free(&t->want);
}

/* ---- feeding ----------------------------------------------------------------------------- */

/* Feeds `t` in pieces ending at `cuts` (ascending, the last == len), each piece a fresh
 * exact-size allocation so that reading past `len` is caught by the sanitizers. Resumes after
 * pauses. Appends "error <code>" on failure, then the parser's idle state. Returns the log. */
static char *run_cuts(const uint8_t *t, size_t len, const size_t *cuts, size_t ncuts,
                      enum pause_mode pause)
{
    fcr__parser p;
    tctx c;
    size_t start = 0, k;
    char *out;

    memset(&c, 0, sizeof c);
    c.pause = pause;
    fcr__parser_init(&p);
    for (k = 0; k < ncuts; k++) {
        size_t n, off = 0;
        uint8_t *piece;
        long r = 0;

        ck_assert_uint_ge(cuts[k], start);
        ck_assert_uint_le(cuts[k], len);
        n = cuts[k] - start;
        piece = malloc(n ? n : 1);
        memcpy(piece, t + start, n);
        while (off < n) {
            c.paused_on_record = false;
            r = fcr__parser_feed(&p, &events, &c, piece + off, n - off);
            if (r < 0)
                break;
            ck_assert_int_gt(r, 0);
            ck_assert_uint_le((size_t)r, n - off);
            off += (size_t)r;
            if (c.paused_on_record)
                ck_assert(fcr__parser_idle(&p));
        }
        free(piece);
        if (r < 0) {
            log_line(&c.log, "error %ld\n", r);
            break;
        }
        start = cuts[k];
    }
    log_line(&c.log, "idle=%d\n", fcr__parser_idle(&p));
    fcr__parser_reset(&p);
    log_str(&c.log);
    out = c.log.s;
    return out;
}

static char *run_single(const uint8_t *t, size_t len)
{
    return run_cuts(t, len, &len, 1, PAUSE_NEVER);
}

static char *run_chunked(const uint8_t *t, size_t len, size_t chunk, enum pause_mode pause)
{
    size_t n = (len + chunk - 1) / chunk, k;
    size_t *cuts = malloc((n ? n : 1) * sizeof *cuts);
    char *out;

    for (k = 0; k < n; k++)
        cuts[k] = (k + 1) * chunk < len ? (k + 1) * chunk : len;
    out = run_cuts(t, len, cuts, n, pause);
    free(cuts);
    return out;
}

static char *want_str(tscript *t, const char *tail)
{
    tlog *l = &t->want;
    char *s;

    log_close(l);
    log_raw(l, tail, strlen(tail));
    s = strdup(l->s);
    l->len -= strlen(tail);
    l->s[l->len] = '\0';
    return s;
}

/* Feeds `t` whole, split in two at every position, byte by byte and with pauses, and checks
 * each log equals `want`. */
static void check_every_split(const uint8_t *t, size_t len, const char *want)
{
    char *got;
    size_t k;

    got = run_single(t, len);
    ck_assert_str_eq(got, want);
    free(got);
    for (k = 1; k < len; k++) {
        size_t cuts[2] = {k, len};
        got = run_cuts(t, len, cuts, 2, PAUSE_NEVER);
        ck_assert_msg(strcmp(got, want) == 0, "split at %zu differs", k);
        free(got);
    }
    got = run_chunked(t, len, 1, PAUSE_NEVER);
    ck_assert_str_eq(got, want);
    free(got);
    got = run_chunked(t, len, 3, PAUSE_NEVER);
    ck_assert_str_eq(got, want);
    free(got);
    got = run_cuts(t, len, &len, 1, PAUSE_EVERY_EVENT);
    ck_assert_str_eq(got, want);
    free(got);
    got = run_cuts(t, len, &len, 1, PAUSE_RECORD_EVENTS);
    ck_assert_str_eq(got, want);
    free(got);
    got = run_chunked(t, len, 5, PAUSE_EVERY_EVENT);
    ck_assert_str_eq(got, want);
    free(got);
}

/* ---- the big transcript ------------------------------------------------------------------ */

static size_t params_stream(uint8_t *out, size_t *split)
{
    char longval[200];
    size_t len = 0;

    memset(longval, 'v', sizeof longval);
    len += fcr__nv_encode(out + len, "SCRIPT_NAME", 11, "/app", 4);
    len += fcr__nv_encode(out + len, "REQUEST_METHOD", 14, "POST", 4);
    /* Split inside the 4-byte value length of the next pair. */
    *split = len + 1 + 2;
    len += fcr__nv_encode(out + len, "HTTP_X_LONG", 11, longval, sizeof longval);
    len += fcr__nv_encode(out + len, "QUERY_STRING", 12, "", 0);
    return len;
}

static void build_transcript(tscript *t)
{
    uint8_t params[512], stdin3[300], q[64];
    size_t plen, split, qlen = 0, i;
    tlog *w = &t->want;

    for (i = 0; i < sizeof stdin3; i++)
        stdin3[i] = (uint8_t)i;
    plen = params_stream(params, &split);
    qlen += fcr__nv_encode(q + qlen, "FCGI_MAX_CONNS", 14, "", 0);
    qlen += fcr__nv_encode(q + qlen, "FCGI_MPXS_CONNS", 15, "", 0);

    rec_begin(t, 1, 1, FCGI_KEEP_CONN, 0);
    log_begin(w, 1, 1, 1);
    rec(t, FCGI_PARAMS, 1, params, split, 3);
    log_stream(w, FCGI_PARAMS, 1, params, split);
    rec(t, FCGI_GET_VALUES, 0, q, qlen, fcr__padding_for(qlen));
    log_mgmt(w, FCGI_GET_VALUES, q, qlen);
    rec(t, FCGI_PARAMS, 1, params + split, plen - split, 0);
    log_stream(w, FCGI_PARAMS, 1, params + split, plen - split);
    rec(t, FCGI_PARAMS, 1, NULL, 0, 0);
    log_stream(w, FCGI_PARAMS, 1, NULL, 0);

    rec(t, FCGI_STDIN, 1, "hello", 5, 0);
    log_stream(w, FCGI_STDIN, 1, (const uint8_t *)"hello", 5);
    rec(t, FCGI_STDIN, 1, "x", 1, 7);
    log_stream(w, FCGI_STDIN, 1, (const uint8_t *)"x", 1);
    rec(t, FCGI_STDIN, 1, stdin3, sizeof stdin3, 255);
    log_stream(w, FCGI_STDIN, 1, stdin3, sizeof stdin3);
    rec(t, 42, 0, "abc", 3, 5);
    log_mgmt(w, 42, (const uint8_t *)"abc", 3);
    rec(t, FCGI_STDOUT, 1, "out!", 4, 4);
    log_ignored(w, FCGI_STDOUT, 1, 4, 4);
    rec(t, FCGI_STDIN, 1, NULL, 0, 0);
    log_stream(w, FCGI_STDIN, 1, NULL, 0);

    rec(t, FCGI_DATA, 1, "filedata", 8, 0);
    log_stream(w, FCGI_DATA, 1, (const uint8_t *)"filedata", 8);
    rec(t, FCGI_DATA, 1, NULL, 0, 6);
    log_stream(w, FCGI_DATA, 1, NULL, 0);
    rec(t, FCGI_GET_VALUES, 0, NULL, 0, 0);
    log_mgmt(w, FCGI_GET_VALUES, NULL, 0);
    rec(t, FCGI_ABORT_REQUEST, 1, NULL, 0, 0);
    log_abort(w, 1);

    /* A second request with the highest id, multiplexed with records of others. */
    rec_begin(t, 65535, 2, 0, 8);
    log_begin(w, 65535, 2, 0);
    rec(t, FCGI_PARAMS, 65535,
        "\x01\x01"
        "AB",
        4, 4);
    log_stream(w, FCGI_PARAMS, 65535,
               (const uint8_t *)"\x01\x01"
                                "AB",
               4);
    rec(t, FCGI_STDIN, 1, "late", 4, 0);
    log_stream(w, FCGI_STDIN, 1, (const uint8_t *)"late", 4);
    rec(t, FCGI_ABORT_REQUEST, 65535, "junk", 4, 4);
    log_abort(w, 65535);
    rec(t, FCGI_END_REQUEST, 2, "\0\0\0\0\0\0\0\0", 8, 0);
    log_ignored(w, FCGI_END_REQUEST, 2, 8, 0);
    rec(t, 0, 3, "z", 1, 0);
    log_ignored(w, 0, 3, 1, 0);
    rec(t, 200, 1, NULL, 0, 1);
    log_ignored(w, 200, 1, 0, 1);
    rec_begin(t, 0, 1, 0, 0);
    log_ignored(w, FCGI_BEGIN_REQUEST, 0, 8, 0);
    rec(t, FCGI_STDIN, 0, "zero", 4, 0);
    log_ignored(w, FCGI_STDIN, 0, 4, 0);
    rec(t, FCGI_ABORT_REQUEST, 0, NULL, 0, 0);
    log_ignored(w, FCGI_ABORT_REQUEST, 0, 0, 0);
}

START_TEST(transcript_gives_the_same_events_in_any_split)
{
    tscript t = {0};
    char *want;

    build_transcript(&t);
    want = want_str(&t, "idle=1\n");
    check_every_split(t.b, t.len, want);
    free(want);
    tscript_free(&t);
}
END_TEST

START_TEST(params_pair_split_across_records_is_reassembled)
{
    tscript t = {0};
    uint8_t params[512];
    size_t plen, split, off = 0, k;
    const uint8_t *n, *v;
    uint32_t nl, vl;
    unsigned pairs = 0;
    fcr__parser p;
    tctx c;

    plen = params_stream(params, &split);
    rec(&t, FCGI_PARAMS, 1, params, split, 0);
    rec(&t, FCGI_PARAMS, 1, params + split, plen - split, 0);
    rec(&t, FCGI_PARAMS, 1, NULL, 0, 0);
    memset(&c, 0, sizeof c);
    fcr__parser_init(&p);
    for (k = 0; k < t.len; k++)
        ck_assert_int_eq(fcr__parser_feed(&p, &events, &c, t.b + k, 1), 1);
    ck_assert(fcr__parser_idle(&p));
    fcr__parser_reset(&p);
    log_free(&c.log);

    ck_assert_uint_eq(c.nparams, plen);
    while (fcr__nv_next(c.params, c.nparams, &off, &n, &nl, &v, &vl) == FCR__NV_OK) {
        pairs++;
        if (nl == 11 && memcmp(n, "HTTP_X_LONG", 11) == 0) {
            ck_assert_uint_eq(vl, 200);
            ck_assert_uint_eq(v[0], 'v');
            ck_assert_uint_eq(v[199], 'v');
        }
    }
    ck_assert_uint_eq(off, c.nparams);
    ck_assert_uint_eq(pairs, 4);
    tscript_free(&t);
}
END_TEST

/* ---- framing rules ----------------------------------------------------------------------- */

START_TEST(record_header_split_across_feeds)
{
    tscript t = {0};
    char *got;
    size_t k;

    rec(&t, FCGI_STDIN, 7, "body", 4, 4);
    for (k = 1; k < 8; k++) {
        size_t cuts[2] = {k, t.len};
        got = run_cuts(t.b, t.len, cuts, 2, PAUSE_NEVER);
        ck_assert_str_eq(got, "stream type=5 id=7 [body]\nidle=1\n");
        free(got);
    }
    tscript_free(&t);
}
END_TEST

START_TEST(begin_body_split_across_feeds)
{
    tscript t = {0};
    char *got;
    size_t k;

    rec_begin(&t, 0x0102, FCGI_UNKNOWN_ROLE, FCGI_KEEP_CONN, 2);
    rec_begin(&t, 3, 0x0302, 0, 0);
    for (k = 9; k < 16; k++) {
        size_t cuts[2] = {k, t.len};
        got = run_cuts(t.b, t.len, cuts, 2, PAUSE_NEVER);
        ck_assert_str_eq(got, "begin id=258 role=3 flags=1\nbegin id=3 role=770 flags=0\nidle=1\n");
        free(got);
    }
    tscript_free(&t);
}
END_TEST

START_TEST(padding_is_skipped_on_every_record_type)
{
    static const uint16_t ids[] = {0, 1};
    uint8_t content[8] = {0, 1, 0, 0, 0, 0, 0, 0};
    unsigned type, i, pad;

    for (type = 0; type <= 12; type++) {
        for (i = 0; i < 2; i++) {
            for (pad = 0; pad < 256; pad += 255) {
                tscript t = {0};
                char *got;

                rec(&t, (uint8_t)type, ids[i], content, 8, (uint8_t)pad);
                /* A marker record right after the padding. */
                rec(&t, FCGI_STDIN, 9, "mark", 4, 0);
                got = run_chunked(t.b, t.len, 1, PAUSE_NEVER);
                ck_assert_msg(strstr(got, "stream type=5 id=9 [mark]\nidle=1\n") != NULL,
                              "type %u id %u pad %u: %s", type, ids[i], pad, got);
                free(got);
                tscript_free(&t);
            }
        }
    }
}
END_TEST

START_TEST(empty_stream_record_ends_the_stream_with_one_zero_length_call)
{
    tscript t = {0};
    char *got;

    rec(&t, FCGI_PARAMS, 1, NULL, 0, 0);
    rec(&t, FCGI_STDIN, 1, NULL, 0, 7);
    rec(&t, FCGI_DATA, 1, NULL, 0, 255);
    got = run_chunked(t.b, t.len, 1, PAUSE_NEVER);
    ck_assert_str_eq(got, "end type=4 id=1\nend type=5 id=1\nend type=8 id=1\nidle=1\n");
    free(got);
    tscript_free(&t);
}
END_TEST

START_TEST(request_id_65535_is_valid)
{
    tscript t = {0};
    char *got;

    rec_begin(&t, 65535, 1, 0, 0);
    rec(&t, FCGI_PARAMS, 65535, NULL, 0, 0);
    rec(&t, FCGI_STDIN, 65535, "q", 1, 7);
    rec(&t, FCGI_ABORT_REQUEST, 65535, NULL, 0, 0);
    got = run_single(t.b, t.len);
    ck_assert_str_eq(got, "begin id=65535 role=1 flags=0\nend type=4 id=65535\n"
                          "stream type=5 id=65535 [q]\nabort id=65535\nidle=1\n");
    free(got);
    tscript_free(&t);
}
END_TEST

START_TEST(request_id_0_is_for_management_records_only)
{
    tscript t = {0};
    char *got;

    rec_begin(&t, 0, 1, 0, 0);
    rec(&t, FCGI_ABORT_REQUEST, 0, NULL, 0, 0);
    rec(&t, FCGI_PARAMS, 0,
        "\x01\x01"
        "ab",
        4, 4);
    rec(&t, FCGI_STDIN, 0, NULL, 0, 0);
    rec(&t, FCGI_DATA, 0, "d", 1, 7);
    got = run_chunked(t.b, t.len, 1, PAUSE_NEVER);
    ck_assert_str_eq(got, "ignored type=1 id=0 len=8 pad=0\n"
                          "ignored type=2 id=0 len=0 pad=0\n"
                          "ignored type=4 id=0 len=4 pad=4\n"
                          "ignored type=5 id=0 len=0 pad=0\n"
                          "ignored type=8 id=0 len=1 pad=7\n"
                          "idle=1\n");
    free(got);
    tscript_free(&t);
}
END_TEST

START_TEST(records_the_application_never_receives_are_ignored)
{
    static const uint8_t types[] = {FCGI_STDOUT,
                                    FCGI_STDERR,
                                    FCGI_END_REQUEST,
                                    FCGI_GET_VALUES,
                                    FCGI_GET_VALUES_RESULT,
                                    FCGI_UNKNOWN_TYPE,
                                    0,
                                    12,
                                    255};
    size_t i;

    for (i = 0; i < sizeof types; i++) {
        tscript t = {0};
        char want[128], *got;

        rec(&t, types[i], 1, "12345", 5, 3);
        snprintf(want, sizeof want, "ignored type=%u id=1 len=5 pad=3\nidle=1\n", types[i]);
        got = run_chunked(t.b, t.len, 2, PAUSE_NEVER);
        ck_assert_str_eq(got, want);
        free(got);
        tscript_free(&t);
    }
}
END_TEST

START_TEST(ignored_callback_is_optional)
{
    fcr__parser_events ev = events;
    tscript t = {0};
    fcr__parser p;
    tctx c;

    ev.ignored = NULL;
    rec(&t, FCGI_STDOUT, 1, "xyz", 3, 5);
    rec(&t, FCGI_STDIN, 0, "xyz", 3, 5);
    rec(&t, FCGI_STDIN, 1, "in", 2, 0);
    memset(&c, 0, sizeof c);
    fcr__parser_init(&p);
    ck_assert_int_eq(fcr__parser_feed(&p, &ev, &c, t.b, t.len), (long)t.len);
    ck_assert_str_eq(log_str(&c.log), "stream type=5 id=1 [in]\n");
    fcr__parser_reset(&p);
    log_free(&c.log);
    tscript_free(&t);
}
END_TEST

/* ---- malformed input --------------------------------------------------------------------- */

/* Feeds `t` whole and byte by byte; both must give `want`. */
static void check_both_ways(tscript *t, const char *want)
{
    char *got = run_single(t->b, t->len);

    ck_assert_str_eq(got, want);
    free(got);
    got = run_chunked(t->b, t->len, 1, PAUSE_NEVER);
    ck_assert_str_eq(got, want);
    free(got);
}

static void check_version_rejected(uint8_t version)
{
    tscript t = {0};
    char want[128];

    rec(&t, FCGI_STDIN, 1, "ok", 2, 0);
    rec_v(&t, version, FCGI_STDIN, 1, "no", 2, 0);
    rec(&t, FCGI_STDIN, 1, "never", 5, 0);
    snprintf(want, sizeof want, "stream type=5 id=1 [ok]\nerror %d\nidle=0\n", FCR_EPROTO);
    check_both_ways(&t, want);
    tscript_free(&t);
}

START_TEST(version_0_is_protocol_error)
{
    check_version_rejected(0);
}
END_TEST

START_TEST(version_2_is_protocol_error)
{
    check_version_rejected(2);
}
END_TEST

START_TEST(protocol_error_is_sticky)
{
    tscript t = {0}, good = {0};
    fcr__parser p;
    tctx c;

    rec_v(&t, 2, FCGI_STDIN, 1, "no", 2, 0);
    rec(&good, FCGI_STDIN, 1, "fine", 4, 0);
    memset(&c, 0, sizeof c);
    fcr__parser_init(&p);
    ck_assert_int_eq(fcr__parser_feed(&p, &events, &c, t.b, t.len), FCR_EPROTO);
    ck_assert_int_eq(fcr__parser_feed(&p, &events, &c, good.b, good.len), FCR_EPROTO);
    ck_assert_int_eq(fcr__parser_feed(&p, &events, &c, good.b, 1), FCR_EPROTO);
    ck_assert_int_eq(fcr__parser_feed(&p, &events, &c, good.b, 0), FCR_EPROTO);
    ck_assert_int_eq(c.events, 0);
    ck_assert(!fcr__parser_idle(&p));
    fcr__parser_reset(&p);
    /* reset starts over */
    ck_assert(fcr__parser_idle(&p));
    ck_assert_int_eq(fcr__parser_feed(&p, &events, &c, good.b, good.len), (long)good.len);
    ck_assert_int_eq(c.events, 1);
    fcr__parser_reset(&p);
    log_free(&c.log);
    tscript_free(&t);
    tscript_free(&good);
}
END_TEST

static void check_begin_len_rejected(uint16_t id, size_t clen)
{
    tscript t = {0};
    char want[128];

    rec(&t, FCGI_STDIN, 1, "ok", 2, 0);
    rec(&t, FCGI_BEGIN_REQUEST, id, "\0\x01\0\0\0\0\0\0\0", clen, 0);
    rec(&t, FCGI_STDIN, 1, "never", 5, 0);
    snprintf(want, sizeof want, "stream type=5 id=1 [ok]\nerror %d\nidle=0\n", FCR_EPROTO);
    check_both_ways(&t, want);
    tscript_free(&t);
}

START_TEST(begin_len_not_8_is_protocol_error)
{
    check_begin_len_rejected(1, 7);
    check_begin_len_rejected(1, 9);
    check_begin_len_rejected(1, 0);
    check_begin_len_rejected(1, 1);
}
END_TEST

START_TEST(begin_len_not_8_with_id_0_is_protocol_error)
{
    check_begin_len_rejected(0, 7);
    check_begin_len_rejected(0, 9);
}
END_TEST

START_TEST(callback_error_is_returned_and_sticky)
{
    tscript t = {0};
    fcr__parser p;
    tctx c;

    rec_begin(&t, 1, 1, 0, 0);
    rec(&t, FCGI_GET_VALUES, 0, "\x01\x00X", 3, 5);
    rec(&t, FCGI_STDIN, 1, "never", 5, 0);
    memset(&c, 0, sizeof c);
    c.fail_at = 2; /* the management record */
    c.fail_rc = FCR_ETOOBIG;
    fcr__parser_init(&p);
    ck_assert_int_eq(fcr__parser_feed(&p, &events, &c, t.b, t.len), FCR_ETOOBIG);
    ck_assert_ptr_null(p.mbuf.p);
    ck_assert_int_eq(fcr__parser_feed(&p, &events, &c, t.b + 32, t.len - 32), FCR_ETOOBIG);
    ck_assert_int_eq(c.events, 2);
    ck_assert_str_eq(log_str(&c.log), "begin id=1 role=1 flags=0\n"
                                      "management type=9 len=3 [\\x01\\x00X]\n");
    fcr__parser_reset(&p);
    log_free(&c.log);
    tscript_free(&t);
}
END_TEST

START_TEST(truncated_input_leaves_parser_not_idle)
{
    tscript t = {0};
    fcr__parser p;
    tctx c;
    size_t k;

    rec(&t, FCGI_STDIN, 1, "abc", 3, 5);
    memset(&c, 0, sizeof c);
    fcr__parser_init(&p);
    ck_assert(fcr__parser_idle(&p));
    for (k = 0; k < t.len; k++) {
        ck_assert_int_eq(fcr__parser_feed(&p, &events, &c, t.b + k, 1), 1);
        /* Not idle inside the header, the content or the padding; idle after the record. */
        ck_assert(fcr__parser_idle(&p) == (k == t.len - 1));
    }
    fcr__parser_reset(&p);
    log_free(&c.log);
    tscript_free(&t);
}
END_TEST

START_TEST(feeding_zero_bytes_does_nothing)
{
    fcr__parser p;
    tctx c;

    memset(&c, 0, sizeof c);
    fcr__parser_init(&p);
    ck_assert_int_eq(fcr__parser_feed(&p, &events, &c, NULL, 0), 0);
    ck_assert_int_eq(fcr__parser_feed(&p, &events, &c, (const uint8_t *)"\x01\x05", 2), 2);
    ck_assert_int_eq(fcr__parser_feed(&p, &events, &c, NULL, 0), 0);
    ck_assert(!fcr__parser_idle(&p));
    ck_assert_int_eq(c.events, 0);
    fcr__parser_reset(&p);
}
END_TEST

/* ---- management records ------------------------------------------------------------------ */

static int on_management_pattern(void *ctx, uint8_t type, const uint8_t *content, size_t len)
{
    tctx *c = ctx;
    size_t i;

    ck_assert_uint_eq(type, 77);
    ck_assert_uint_eq(len, FCGI_MAX_CONTENT);
    for (i = 0; i < len; i++)
        if (content[i] != (uint8_t)(i * 31 + 7))
            ck_abort_msg("management content differs at %zu", i);
    c->events++;
    return 0;
}

START_TEST(management_record_of_65535_bytes_is_delivered_whole)
{
    static const size_t chunks[] = {1, 7, 1000, 65535 + 8 + 255};
    fcr__parser_events ev = events;
    uint8_t *content = malloc(FCGI_MAX_CONTENT);
    tscript t = {0};
    size_t i, k;

    ev.management = on_management_pattern;
    for (i = 0; i < FCGI_MAX_CONTENT; i++)
        content[i] = (uint8_t)(i * 31 + 7);
    rec(&t, 77, 0, content, FCGI_MAX_CONTENT, 255);
    for (k = 0; k < sizeof chunks / sizeof chunks[0]; k++) {
        fcr__parser p;
        tctx c;
        size_t off = 0;

        memset(&c, 0, sizeof c);
        fcr__parser_init(&p);
        while (off < t.len) {
            size_t n = t.len - off < chunks[k] ? t.len - off : chunks[k];
            ck_assert_int_eq(fcr__parser_feed(&p, &ev, &c, t.b + off, n), (long)n);
            off += n;
        }
        ck_assert_int_eq(c.events, 1);
        ck_assert(fcr__parser_idle(&p));
        ck_assert_ptr_null(p.mbuf.p); /* freed after delivery */
        fcr__parser_reset(&p);
    }
    free(content);
    tscript_free(&t);
}
END_TEST

START_TEST(management_buffer_grows_only_as_bytes_arrive)
{
    uint8_t h[8], body[100];
    fcr__parser p;
    tctx c;

    memset(body, 'm', sizeof body);
    fcr__header_encode(h, FCGI_GET_VALUES, 0, 65535, 0);
    memset(&c, 0, sizeof c);
    fcr__parser_init(&p);
    ck_assert_int_eq(fcr__parser_feed(&p, &events, &c, h, 8), 8);
    ck_assert_ptr_null(p.mbuf.p); /* nothing allocated for a declared length alone */
    ck_assert_int_eq(fcr__parser_feed(&p, &events, &c, body, 10), 10);
    ck_assert_uint_eq(p.mbuf.len, 10);
    ck_assert_uint_lt(malloc_usable_size(p.mbuf.p), 4096);
    ck_assert_int_eq(fcr__parser_feed(&p, &events, &c, body, sizeof body), (long)sizeof body);
    ck_assert_uint_eq(p.mbuf.len, 110);
    ck_assert_uint_lt(malloc_usable_size(p.mbuf.p), 4096);
    ck_assert_int_eq(c.events, 0);
    /* The peer goes away: reset frees the partial record (the leak checker would notice). */
    fcr__parser_reset(&p);
    ck_assert_ptr_null(p.mbuf.p);
}
END_TEST

START_TEST(management_record_between_records_of_a_running_request)
{
    tscript t = {0};
    char *want;

    rec_begin(&t, 1, 1, 0, 0);
    log_begin(&t.want, 1, 1, 0);
    rec(&t, FCGI_STDIN, 1, "first", 5, 3);
    log_stream(&t.want, FCGI_STDIN, 1, (const uint8_t *)"first", 5);
    rec(&t, FCGI_GET_VALUES, 0,
        "\x0e\x00"
        "FCGI_MAX_CONNS",
        16, 0);
    log_mgmt(&t.want, FCGI_GET_VALUES,
             (const uint8_t *)"\x0e\x00"
                              "FCGI_MAX_CONNS",
             16);
    rec(&t, 99, 0, NULL, 0, 0);
    log_mgmt(&t.want, 99, NULL, 0);
    rec(&t, FCGI_STDIN, 1, "second", 6, 2);
    log_stream(&t.want, FCGI_STDIN, 1, (const uint8_t *)"second", 6);
    want = want_str(&t, "idle=1\n");
    check_every_split(t.b, t.len, want);
    free(want);
    tscript_free(&t);
}
END_TEST

/* ---- back-pressure ----------------------------------------------------------------------- */

START_TEST(pause_returns_bytes_consumed_through_the_event)
{
    tscript t = {0};
    fcr__parser p;
    tctx c;
    long r;

    rec_begin(&t, 1, 1, 0, 5);               /* 21 bytes */
    rec(&t, FCGI_STDIN, 1, "abcdef", 6, 2);  /* 16 bytes */
    rec(&t, FCGI_PARAMS, 1, NULL, 0, 0);     /* 8 bytes */
    rec(&t, FCGI_GET_VALUES, 0, NULL, 0, 3); /* 11 bytes */
    memset(&c, 0, sizeof c);
    c.pause = PAUSE_EVERY_EVENT;
    fcr__parser_init(&p);

    r = fcr__parser_feed(&p, &events, &c, t.b, t.len);
    ck_assert_int_eq(r, 21); /* begin, after its padding */
    ck_assert(fcr__parser_idle(&p));
    r = fcr__parser_feed(&p, &events, &c, t.b + 21, t.len - 21);
    ck_assert_int_eq(r, 8 + 6); /* the stream piece; padding not yet consumed */
    ck_assert(!fcr__parser_idle(&p));
    r = fcr__parser_feed(&p, &events, &c, t.b + 35, t.len - 35);
    ck_assert_int_eq(r, 2 + 8); /* padding, then the empty PARAMS record */
    r = fcr__parser_feed(&p, &events, &c, t.b + 45, t.len - 45);
    ck_assert_int_eq(r, 11);
    ck_assert(fcr__parser_idle(&p));
    ck_assert_int_eq(c.events, 4);
    ck_assert_str_eq(log_str(&c.log), "begin id=1 role=1 flags=0\n"
                                      "stream type=5 id=1 [abcdef]\n"
                                      "end type=4 id=1\n"
                                      "management type=9 len=0 []\n");
    fcr__parser_reset(&p);
    log_free(&c.log);
    tscript_free(&t);
}
END_TEST

START_TEST(pause_on_last_stream_piece_without_padding_leaves_parser_idle)
{
    tscript t = {0};
    fcr__parser p;
    tctx c;

    rec(&t, FCGI_STDIN, 1, "abc", 3, 0);
    rec(&t, FCGI_STDIN, 1, "def", 3, 1);
    memset(&c, 0, sizeof c);
    c.pause = PAUSE_EVERY_EVENT;
    fcr__parser_init(&p);
    ck_assert_int_eq(fcr__parser_feed(&p, &events, &c, t.b, t.len), 11);
    ck_assert(fcr__parser_idle(&p));
    ck_assert_int_eq(fcr__parser_feed(&p, &events, &c, t.b + 11, t.len - 11), 11);
    ck_assert(!fcr__parser_idle(&p)); /* the padding byte is still to come */
    ck_assert_int_eq(fcr__parser_feed(&p, &events, &c, t.b + 22, t.len - 22), 1);
    ck_assert(fcr__parser_idle(&p));
    ck_assert_str_eq(log_str(&c.log), "stream type=5 id=1 [abcdef]\n");
    fcr__parser_reset(&p);
    log_free(&c.log);
    tscript_free(&t);
}
END_TEST

START_TEST(pause_and_resume_gives_the_unpaused_events)
{
    tscript t = {0};
    char *want, *got;
    size_t chunk;

    build_transcript(&t);
    want = run_single(t.b, t.len);
    for (chunk = 1; chunk <= 64; chunk *= 2) {
        got = run_chunked(t.b, t.len, chunk, PAUSE_EVERY_EVENT);
        ck_assert_str_eq(got, want);
        free(got);
        got = run_chunked(t.b, t.len, chunk, PAUSE_RECORD_EVENTS);
        ck_assert_str_eq(got, want);
        free(got);
    }
    free(want);
    tscript_free(&t);
}
END_TEST

/* ---- suite ------------------------------------------------------------------------------- */

#define ADD_TEST(s, fn)                                                                            \
    do {                                                                                           \
        TCase *tc_ = tcase_create(#fn);                                                            \
        tcase_add_test(tc_, fn);                                                                   \
        tcase_set_timeout(tc_, 120);                                                               \
        suite_add_tcase((s), tc_);                                                                 \
    } while (0)

static Suite *parser_suite(void)
{
    Suite *s = suite_create("parser");

    ADD_TEST(s, transcript_gives_the_same_events_in_any_split);
    ADD_TEST(s, params_pair_split_across_records_is_reassembled);
    ADD_TEST(s, record_header_split_across_feeds);
    ADD_TEST(s, begin_body_split_across_feeds);
    ADD_TEST(s, padding_is_skipped_on_every_record_type);
    ADD_TEST(s, empty_stream_record_ends_the_stream_with_one_zero_length_call);
    ADD_TEST(s, request_id_65535_is_valid);
    ADD_TEST(s, request_id_0_is_for_management_records_only);
    ADD_TEST(s, records_the_application_never_receives_are_ignored);
    ADD_TEST(s, ignored_callback_is_optional);
    ADD_TEST(s, version_0_is_protocol_error);
    ADD_TEST(s, version_2_is_protocol_error);
    ADD_TEST(s, protocol_error_is_sticky);
    ADD_TEST(s, begin_len_not_8_is_protocol_error);
    ADD_TEST(s, begin_len_not_8_with_id_0_is_protocol_error);
    ADD_TEST(s, callback_error_is_returned_and_sticky);
    ADD_TEST(s, truncated_input_leaves_parser_not_idle);
    ADD_TEST(s, feeding_zero_bytes_does_nothing);
    ADD_TEST(s, management_record_of_65535_bytes_is_delivered_whole);
    ADD_TEST(s, management_buffer_grows_only_as_bytes_arrive);
    ADD_TEST(s, management_record_between_records_of_a_running_request);
    ADD_TEST(s, pause_returns_bytes_consumed_through_the_event);
    ADD_TEST(s, pause_on_last_stream_piece_without_padding_leaves_parser_idle);
    ADD_TEST(s, pause_and_resume_gives_the_unpaused_events);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(parser_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
