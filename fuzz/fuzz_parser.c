/* libFuzzer target for the incremental record parser.
 *
 * Input: byte 0 selects how the parser is paused (bits 0-1) and whether a byte-by-byte run is
 * added (bit 2); bytes 1..4 are piece sizes (1..256, used in turn); the rest is the byte
 * stream. The stream is fed whole, in those pieces (with pauses), and byte by byte, and each
 * event log must equal the one a simple whole-buffer reference framer computes. Any mismatch or
 * broken invariant abort()s. */
#include "core/fcgi.h"

#include <fcrest/error.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- event log: binary, consecutive pieces of one stream merged -------------------------- */

typedef struct blog {
    uint8_t *b;
    size_t len, cap;
    size_t open; /* offset of the open stream entry's length field, or SIZE_MAX */
    uint8_t otype;
    uint16_t oid;
} blog;

static void blog_put(blog *l, const void *d, size_t n)
{
    if (l->len + n > l->cap) {
        size_t cap = l->cap ? l->cap : 1024;
        uint8_t *b;
        while (cap < l->len + n)
            cap *= 2;
        b = realloc(l->b, cap);
        if (b == NULL)
            abort();
        l->b = b;
        l->cap = cap;
    }
    if (n > 0)
        memcpy(l->b + l->len, d, n);
    l->len += n;
}

static void blog_entry(blog *l, uint8_t tag, uint8_t type, uint32_t a, uint32_t b)
{
    uint8_t e[10];

    l->open = SIZE_MAX;
    e[0] = tag;
    e[1] = type;
    memcpy(e + 2, &a, 4);
    memcpy(e + 6, &b, 4);
    blog_put(l, e, sizeof e);
}

static void blog_stream(blog *l, uint8_t type, uint16_t id, const uint8_t *d, size_t n)
{
    uint32_t total;

    if (n == 0) {
        blog_entry(l, 'E', type, id, 0);
        return;
    }
    if (l->open == SIZE_MAX || l->otype != type || l->oid != id) {
        blog_entry(l, 'S', type, id, 0);
        l->open = l->len - 4;
        l->otype = type;
        l->oid = id;
    }
    memcpy(&total, l->b + l->open, 4);
    total += (uint32_t)n;
    memcpy(l->b + l->open, &total, 4);
    blog_put(l, d, n);
}

static void blog_mgmt(blog *l, uint8_t type, const uint8_t *d, size_t n)
{
    blog_entry(l, 'M', type, (uint32_t)n, 0);
    blog_put(l, d, n);
}

/* ---- parser callbacks -------------------------------------------------------------------- */

enum { PAUSE_NEVER, PAUSE_EVERY, PAUSE_RECORD, PAUSE_ODD };

typedef struct fctx {
    blog log;
    int pause;
    unsigned events;
    int paused_on_record;
    uintptr_t lo, hi; /* the piece being fed: stream pointers must lie inside it */
} fctx;

static int verdict(fctx *c, int record_event)
{
    int pause = 0;

    c->events++;
    switch (c->pause) {
    case PAUSE_EVERY:
        pause = 1;
        break;
    case PAUSE_RECORD:
        pause = record_event;
        break;
    case PAUSE_ODD:
        pause = (c->events & 1) != 0;
        break;
    }
    if (pause) {
        c->paused_on_record = record_event;
        return FCR_EAGAIN;
    }
    return 0;
}

static int on_begin(void *ctx, uint16_t id, uint16_t role, uint8_t flags)
{
    fctx *c = ctx;

    if (id == 0)
        abort();
    blog_entry(&c->log, 'B', flags, id, role);
    return verdict(c, 1);
}

static int on_stream(void *ctx, uint8_t type, uint16_t id, const uint8_t *buf, size_t len)
{
    fctx *c = ctx;
    uintptr_t p = (uintptr_t)buf;

    if (id == 0 || (type != FCGI_PARAMS && type != FCGI_STDIN && type != FCGI_DATA))
        abort();
    if (len > 0 && (p < c->lo || p > c->hi || len > c->hi - p))
        abort();
    blog_stream(&c->log, type, id, buf, len);
    return verdict(c, len == 0);
}

static int on_abort(void *ctx, uint16_t id)
{
    fctx *c = ctx;

    if (id == 0)
        abort();
    blog_entry(&c->log, 'A', 0, id, 0);
    return verdict(c, 1);
}

static int on_management(void *ctx, uint8_t type, const uint8_t *content, size_t len)
{
    fctx *c = ctx;

    if (content == NULL || len > FCGI_MAX_CONTENT)
        abort();
    blog_mgmt(&c->log, type, content, len);
    return verdict(c, 1);
}

static int on_ignored(void *ctx, const fcr__fcgi_header *h)
{
    fctx *c = ctx;

    blog_entry(&c->log, 'I', h->type, h->id, ((uint32_t)h->content_len << 8) | h->padding_len);
    return verdict(c, 1);
}

static const fcr__parser_events events = {
    .begin = on_begin,
    .stream = on_stream,
    .abort = on_abort,
    .management = on_management,
    .ignored = on_ignored,
};

/* Final line of every log: the error (0 if none) and whether the parser ended idle. */
static void blog_end(blog *l, long err, int idle)
{
    blog_entry(l, 'Z', (uint8_t)idle, (uint32_t)err, 0);
}

/* ---- runs -------------------------------------------------------------------------------- */

/* Feeds `d` in pieces of the sizes in `sizes` (used in turn; nsizes 0: one piece). */
static void run(const uint8_t *d, size_t len, const uint8_t *sizes, size_t nsizes, int pause,
                blog *out)
{
    fcr__parser p;
    fctx c;
    size_t start = 0, k = 0;
    long err = 0;
    uint8_t *one = malloc(1); /* reused for one-byte pieces: byte-by-byte runs stay fast */

    if (one == NULL)
        abort();

    memset(&c, 0, sizeof c);
    c.log.open = SIZE_MAX;
    c.pause = pause;
    fcr__parser_init(&p);
    while (start < len && err == 0) {
        size_t n = nsizes ? (size_t)sizes[k++ % nsizes] + 1 : len;
        uint8_t *piece;
        size_t off = 0;

        if (n > len - start)
            n = len - start;
        /* An exact-size copy, so any read past `len` is caught. */
        piece = n == 1 ? one : malloc(n);
        if (piece == NULL)
            abort();
        memcpy(piece, d + start, n);
        c.lo = (uintptr_t)piece;
        c.hi = (uintptr_t)piece + n;
        while (off < n) {
            long r;

            c.paused_on_record = 0;
            r = fcr__parser_feed(&p, &events, &c, piece + off, n - off);
            if (r < 0) {
                err = r;
                break;
            }
            if (r == 0 || (size_t)r > n - off)
                abort();
            if (c.paused_on_record && !fcr__parser_idle(&p))
                abort();
            if (p.mbuf.p == NULL ? p.mbuf.len != 0 : p.mbuf.len == 0)
                abort();
            off += (size_t)r;
        }
        if (piece != one)
            free(piece);
        start += n;
    }
    if (err != 0) {
        /* Sticky: a later feed returns the same error and emits nothing. */
        unsigned before = c.events;
        if (fcr__parser_feed(&p, &events, &c, d, len) != err || c.events != before)
            abort();
        if (p.mbuf.p != NULL || fcr__parser_idle(&p))
            abort();
    }
    free(one);
    blog_end(&c.log, err, fcr__parser_idle(&p));
    fcr__parser_reset(&p);
    *out = c.log;
}

/* A whole-buffer reference framer: what the events must be, computed record by record. */
static void reference(const uint8_t *d, size_t len, blog *out)
{
    blog l;
    size_t off = 0;
    long err = 0;

    memset(&l, 0, sizeof l);
    l.open = SIZE_MAX;
    while (off < len) {
        fcr__fcgi_header h;
        size_t avail = len - off, body, clen_avail;
        int stream, request_type;

        if (avail < 8)
            break;
        fcr__header_decode(d + off, &h);
        if (h.version != 1 || (h.type == FCGI_BEGIN_REQUEST && h.content_len != 8)) {
            err = FCR_EPROTO;
            break;
        }
        stream = h.type == FCGI_PARAMS || h.type == FCGI_STDIN || h.type == FCGI_DATA;
        request_type = stream || h.type == FCGI_BEGIN_REQUEST || h.type == FCGI_ABORT_REQUEST;
        body = 8 + (size_t)h.content_len + h.padding_len;
        clen_avail = avail - 8 < h.content_len ? avail - 8 : h.content_len;
        /* Stream content is delivered as it arrives, even when the record is incomplete. */
        if (stream && h.id != 0 && clen_avail > 0)
            blog_stream(&l, h.type, h.id, d + off + 8, clen_avail);
        if (avail < body)
            break;
        if (h.id == 0 && !request_type) {
            blog_mgmt(&l, h.type, d + off + 8, h.content_len);
        } else if (h.id != 0 && h.type == FCGI_BEGIN_REQUEST) {
            const uint8_t *b = d + off + 8;
            blog_entry(&l, 'B', b[2], h.id, ((uint32_t)b[0] << 8) | b[1]);
        } else if (h.id != 0 && h.type == FCGI_ABORT_REQUEST) {
            blog_entry(&l, 'A', 0, h.id, 0);
        } else if (h.id != 0 && stream) {
            if (h.content_len == 0)
                blog_stream(&l, h.type, h.id, NULL, 0);
        } else {
            blog_entry(&l, 'I', h.type, h.id, ((uint32_t)h.content_len << 8) | h.padding_len);
        }
        off += body;
    }
    blog_end(&l, err, err == 0 && off == len);
    *out = l;
}

static void must_equal(const blog *a, const blog *b, const char *what)
{
    if (a->len != b->len || memcmp(a->b, b->b, a->len) != 0) {
        fprintf(stderr, "event log mismatch: %s\n", what);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    blog want, got;
    const uint8_t *stream, *sizes;
    size_t len;
    int mode;

    if (size < 5)
        return 0;
    mode = data[0];
    sizes = data + 1;
    stream = data + 5;
    len = size - 5;

    reference(stream, len, &want);

    run(stream, len, NULL, 0, PAUSE_NEVER, &got);
    must_equal(&want, &got, "single feed");
    free(got.b);

    run(stream, len, sizes, 4, mode & 3, &got);
    must_equal(&want, &got, "split feed");
    free(got.b);

    /* Byte by byte only for short streams: longer ones get one-byte pieces from `sizes`. */
    if ((mode & 4) && len <= 1024) {
        static const uint8_t one[1] = {0};
        run(stream, len, one, 1, (mode >> 3) & 3, &got);
        must_equal(&want, &got, "byte by byte");
        free(got.b);
    }
    free(want.b);
    return 0;
}
