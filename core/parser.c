/* Incremental FastCGI record framer. Every record-level event (begin, abort, management,
 * ignored, and the empty record that ends a stream) is emitted once the record's last byte,
 * padding included, has been consumed; stream content is emitted as it arrives. So the events
 * do not depend on how the bytes are split, and a pause on a record-level event leaves the
 * parser between records. */
#include "core/fcgi.h"

#include <fcrest/error.h>

#include <limits.h>
#include <stdlib.h>
#include <string.h>

enum {
    ST_HEADER = 0, /* collecting the 8 header bytes in hbuf */
    ST_BEGIN,      /* collecting the 8 BEGIN_REQUEST content bytes in hbuf */
    ST_STREAM,     /* passing PARAMS / STDIN / DATA content through */
    ST_MGMT,       /* collecting management record content in mbuf */
    ST_SKIP,       /* skipping content */
    ST_PAD,        /* skipping padding */
};

/* Smallest mbuf allocation; capacity doubles from here, capped at the declared length. */
#define MBUF_MIN 256u

void fcr__parser_init(fcr__parser *p)
{
    memset(p, 0, sizeof *p);
    p->state = ST_HEADER;
}

void fcr__parser_reset(fcr__parser *p)
{
    fcr__buf_free(&p->mbuf);
    fcr__parser_init(p);
}

bool fcr__parser_idle(const fcr__parser *p)
{
    return p->error == 0 && p->state == ST_HEADER && p->have == 0;
}

static bool is_stream_type(uint8_t type)
{
    return type == FCGI_PARAMS || type == FCGI_STDIN || type == FCGI_DATA;
}

/* Types that only make sense with a request id; with id 0 they are ignored. */
static bool is_request_type(uint8_t type)
{
    return type == FCGI_BEGIN_REQUEST || type == FCGI_ABORT_REQUEST || is_stream_type(type);
}

static int mbuf_append(fcr__parser *p, const uint8_t *buf, size_t n)
{
    fcr__buf *m = &p->mbuf;
    if (fcr__buf_reserve(m, NULL, m->len + n, MBUF_MIN, p->h.content_len) != 0)
        return FCR_ENOMEM;
    memcpy(m->p + m->len, buf, n);
    m->len += n;
    return 0;
}

/* The whole record, padding included, has been consumed: go back to reading headers, then emit
 * the record's event. */
static int record_done(fcr__parser *p, const fcr__parser_events *ev, void *ctx)
{
    const fcr__fcgi_header h = p->h;

    p->state = ST_HEADER;
    p->have = 0;
    p->left = 0;

    if (h.id == FCGI_NULL_REQUEST_ID) {
        if (!is_request_type(h.type)) {
            fcr__buf content = p->mbuf;
            int rc = 0;

            /* Detach first so a callback that resets the parser cannot free it twice. */
            p->mbuf = (fcr__buf){0};
            if (ev->management != NULL)
                rc = ev->management(ctx, h.type, content.p != NULL ? content.p : p->hbuf,
                                    content.len);
            fcr__buf_free(&content);
            return rc;
        }
    } else if (h.type == FCGI_BEGIN_REQUEST) {
        uint16_t role = (uint16_t)(((unsigned)p->hbuf[0] << 8) | p->hbuf[1]);
        return ev->begin != NULL ? ev->begin(ctx, h.id, role, p->hbuf[2]) : 0;
    } else if (h.type == FCGI_ABORT_REQUEST) {
        return ev->abort != NULL ? ev->abort(ctx, h.id) : 0;
    } else if (is_stream_type(h.type)) {
        if (h.content_len == 0 && ev->stream != NULL)
            return ev->stream(ctx, h.type, h.id, p->hbuf, 0);
        return 0;
    }
    return ev->ignored != NULL ? ev->ignored(ctx, &h) : 0;
}

/* The record's content has been consumed: skip its padding, or finish it. */
static int content_done(fcr__parser *p, const fcr__parser_events *ev, void *ctx)
{
    if (p->h.padding_len > 0) {
        p->state = ST_PAD;
        p->left = p->h.padding_len;
        p->have = 0;
        return 0;
    }
    return record_done(p, ev, ctx);
}

/* hbuf holds a complete header. */
static int header_done(fcr__parser *p, const fcr__parser_events *ev, void *ctx)
{
    fcr__header_decode(p->hbuf, &p->h);
    p->have = 0;
    if (p->h.version != FCGI_VERSION_1)
        return FCR_EPROTO;
    if (p->h.type == FCGI_BEGIN_REQUEST && p->h.content_len != 8)
        return FCR_EPROTO;

    if (p->h.id == FCGI_NULL_REQUEST_ID)
        p->state = is_request_type(p->h.type) ? ST_SKIP : ST_MGMT;
    else if (p->h.type == FCGI_BEGIN_REQUEST)
        p->state = ST_BEGIN;
    else if (is_stream_type(p->h.type))
        p->state = ST_STREAM;
    else
        p->state = ST_SKIP;
    p->left = p->h.content_len;
    if (p->left == 0)
        return content_done(p, ev, ctx);
    return 0;
}

long fcr__parser_feed(fcr__parser *p, const fcr__parser_events *ev, void *ctx, const uint8_t *buf,
                      size_t len)
{
    size_t i = 0;

    if (p->error != 0)
        return p->error;
    if (len > (size_t)LONG_MAX)
        len = (size_t)LONG_MAX;

    while (i < len) {
        size_t avail = len - i;
        size_t n;
        int rc = 0;

        switch (p->state) {
        case ST_HEADER:
        case ST_BEGIN:
            n = FCGI_HEADER_LEN - p->have;
            if (n > avail)
                n = avail;
            memcpy(p->hbuf + p->have, buf + i, n);
            p->have += n;
            i += n;
            if (p->have == FCGI_HEADER_LEN) {
                if (p->state == ST_HEADER) {
                    rc = header_done(p, ev, ctx);
                } else {
                    p->left = 0;
                    rc = content_done(p, ev, ctx);
                }
            }
            break;
        case ST_STREAM: {
            uint8_t type = p->h.type;
            uint16_t id = p->h.id;

            n = p->left < avail ? p->left : avail;
            p->left -= n;
            i += n;
            /* Move on before the callback, which then sees the parser as it will resume. A
             * non-empty stream record emits nothing when it ends. */
            if (p->left == 0)
                (void)content_done(p, ev, ctx);
            if (ev->stream != NULL)
                rc = ev->stream(ctx, type, id, buf + i - n, n);
            break;
        }
        case ST_MGMT:
            n = p->left < avail ? p->left : avail;
            rc = mbuf_append(p, buf + i, n);
            if (rc != 0)
                break;
            p->left -= n;
            i += n;
            if (p->left == 0)
                rc = content_done(p, ev, ctx);
            break;
        case ST_SKIP:
        case ST_PAD:
            n = p->left < avail ? p->left : avail;
            p->left -= n;
            i += n;
            if (p->left == 0)
                rc = p->state == ST_SKIP ? content_done(p, ev, ctx) : record_done(p, ev, ctx);
            break;
        default:
            rc = FCR_EPROTO;
            break;
        }

        if (rc < 0) {
            if (rc == FCR_EAGAIN)
                return (long)i;
            p->error = rc;
            fcr__buf_free(&p->mbuf);
            return rc;
        }
    }
    return (long)i;
}
