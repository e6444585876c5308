/* Request output: STDOUT gathered into records of up to 65535 bytes, STDOUT by reference,
 * STDERR, and the final records with END_REQUEST (fcr_req_finish, or a rejection before the
 * application was given the request). */
#include "internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OUT_FIRST_CAP 1024
/* Room kept after an open record's content for its padding and the final records: padding
 * (7), empty STDOUT (8), empty STDERR (8), END_REQUEST (16). */
#define OUT_TAIL 40

static const uint8_t zeros[8];

static bool req_writable(const fcr_req *r)
{
    return r->conn && !(r->state & (FCR__REQ_ABORTED | FCR__REQ_FINISHED | FCR__REQ_ENDED));
}

/* Content bytes of the open STDOUT record (0 when none is open). */
static size_t out_content(const fcr_req *r)
{
    return r->out.len ? r->out.len - FCGI_HEADER_LEN : 0;
}

/* Makes room for `add` more content bytes in the open STDOUT record (add <= 65535 - content),
 * opening it when none is. */
static int out_reserve(fcr_req *r, size_t add)
{
    size_t used = r->out.len ? r->out.len : FCGI_HEADER_LEN;
    int e = fcr__buf_reserve(&r->out, NULL, used + add + OUT_TAIL, OUT_FIRST_CAP,
                             FCGI_HEADER_LEN + FCGI_MAX_CONTENT + OUT_TAIL);
    if (e)
        return e;
    r->out.len = used;
    return 0;
}

static void free_arg(void *p)
{
    free(p);
}

/* Turns the open STDOUT record (if any) into a queued segment; with `final`, appends the end
 * of the streams and END_REQUEST. The END_REQUEST segment holds a reference on the request so
 * that memory it owns (params, bodies) outlives output that points into it. */
void fcr__req_seal(fcr_req *r, bool final, uint8_t protocol_status, uint32_t app_status)
{
    fcr__conn *c = r->conn;
    if (!c)
        return;
    size_t content = out_content(r);
    if (content == 0 && !final)
        return;
    if (fcr__buf_reserve(&r->out, NULL, OUT_TAIL + FCGI_HEADER_LEN, OUT_TAIL + FCGI_HEADER_LEN,
                         SIZE_MAX) != 0) {
        fcr__conn_fail(c, "out of memory");
        return;
    }
    uint8_t *buf = r->out.p;
    size_t total = 0;
    if (content) {
        uint8_t pad = fcr__padding_for(content);
        fcr__header_encode(buf, FCGI_STDOUT, r->id, (uint16_t)content, pad);
        memset(buf + FCGI_HEADER_LEN + content, 0, pad);
        total = FCGI_HEADER_LEN + content + pad;
    }
    if (final) {
        if (protocol_status == FCGI_REQUEST_COMPLETE) {
            fcr__header_encode(buf + total, FCGI_STDOUT, r->id, 0, 0);
            total += FCGI_HEADER_LEN;
            if (r->state & FCR__REQ_STDERR_USED) {
                fcr__header_encode(buf + total, FCGI_STDERR, r->id, 0, 0);
                total += FCGI_HEADER_LEN;
            }
        }
        fcr__end_request_encode(buf + total, r->id, app_status, protocol_status);
        total += 16;
    }
    fcr__buf kept = {buf, 0, r->out.cap};
    r->out = (fcr__buf){0};
    /* queued already counts the open content; account for framing. */
    c->queued -= content;
    if (final)
        r->state |= FCR__REQ_ENDED;
    if (final && fcr__conn_reserve(c, 2) == 0) {
        /* The buffer stays the request's, to be reused or freed with it: END_REQUEST's
         * reference, released after these bytes are written or dropped, keeps it alive. */
        r->out_final = kept;
        fcr__conn_push(c, buf, total, NULL, NULL);
        r->refs++;
        fcr__conn_push(c, NULL, 0, fcr__req_unref, r);
        fcr__conn_want_flush(c);
        return;
    }
    if (fcr__conn_push(c, buf, total, free_arg, buf) != 0)
        return;
    if (final) {
        r->refs++;
        fcr__conn_push(c, NULL, 0, fcr__req_unref, r);
    }
    fcr__conn_want_flush(c);
}

/* Appends to the open STDOUT record, sealing full records; no output cap check. */
static int out_append(fcr_req *r, const uint8_t *p, size_t len)
{
    fcr__conn *c = r->conn;
    while (len) {
        size_t room = FCGI_MAX_CONTENT - out_content(r);
        size_t n = len < room ? len : room;
        int e = out_reserve(r, n);
        if (e)
            return e;
        memcpy(r->out.p + r->out.len, p, n);
        r->out.len += n;
        c->queued += n;
        p += n;
        len -= n;
        if (out_content(r) == FCGI_MAX_CONTENT)
            fcr__req_seal(r, false, 0, 0);
    }
    if (r->out.len)
        fcr__server_mark_dirty(r->srv, r);
    return 0;
}

int fcr_req_write(fcr_req *r, const void *buf, size_t len)
{
    if (!r || (!buf && len))
        return FCR_EINVAL;
    if (!req_writable(r))
        return FCR_ECLOSED;
    if (r->conn->queued >= r->srv->cfg.limits.max_output_queue)
        return FCR_EAGAIN;
    return out_append(r, buf, len);
}

int fcr_req_write_ref(fcr_req *r, const void *buf, size_t len, void (*release)(void *arg),
                      void *arg)
{
    int e = 0;
    if (!r || (!buf && len)) {
        e = FCR_EINVAL;
        goto fail;
    }
    if (!req_writable(r)) {
        e = FCR_ECLOSED;
        goto fail;
    }
    fcr__conn *c = r->conn;
    if (c->queued >= r->srv->cfg.limits.max_output_queue) {
        e = FCR_EAGAIN;
        goto fail;
    }
    if (len == 0) {
        if (release)
            release(arg);
        return 0;
    }
    fcr__req_seal(r, false, 0, 0);
    size_t nrec = (len + FCGI_MAX_CONTENT - 1) / FCGI_MAX_CONTENT;
    /* One block holds every record's header; padding comes from a static zero block. Room for
     * every segment is reserved first, so the pushes below cannot fail. */
    uint8_t *hdrs = malloc(nrec * FCGI_HEADER_LEN);
    if (!hdrs || fcr__conn_reserve(c, nrec * 3 + 1) != 0) {
        free(hdrs);
        e = FCR_ENOMEM;
        goto fail;
    }
    const uint8_t *p = buf;
    for (size_t i = 0; i < nrec; i++) {
        size_t n = len < FCGI_MAX_CONTENT ? len : FCGI_MAX_CONTENT;
        uint8_t pad = fcr__padding_for(n);
        bool last = (i + 1 == nrec);
        fcr__header_encode(hdrs + i * FCGI_HEADER_LEN, FCGI_STDOUT, r->id, (uint16_t)n, pad);
        fcr__conn_push(c, hdrs + i * FCGI_HEADER_LEN, FCGI_HEADER_LEN, NULL, NULL);
        fcr__conn_push(c, p, n, last ? release : NULL, last ? arg : NULL);
        if (pad)
            fcr__conn_push(c, zeros, pad, NULL, NULL);
        p += n;
        len -= n;
    }
    fcr__conn_push(c, NULL, 0, free_arg, hdrs);
    fcr__conn_want_flush(c);
    return 0;
fail:
    if (release)
        release(arg);
    return e;
}

int fcr_req_printf(fcr_req *r, const char *fmt, ...)
{
    if (!r || !fmt)
        return FCR_EINVAL;
    char small[512], *text;
    va_list ap;
    va_start(ap, fmt);
    int n = fcr__vformat(small, sizeof small, 0, &text, fmt, ap);
    va_end(ap);
    if (n < 0)
        return n;
    int e = fcr_req_write(r, text, (size_t)n);
    if (text != small)
        free(text); /* cppcheck-suppress autovarInvalidDeallocation ; text was malloc'd */
    return e ? e : n;
}

int fcr_req_write_stderr(fcr_req *r, const void *buf, size_t len)
{
    if (!r || (!buf && len))
        return FCR_EINVAL;
    if (!req_writable(r))
        return FCR_ECLOSED;
    fcr__conn *c = r->conn;
    if (c->queued >= r->srv->cfg.limits.max_output_queue)
        return FCR_EAGAIN;
    if (len == 0)
        return 0;
    fcr__req_seal(r, false, 0, 0);
    const uint8_t *p = buf;
    while (len) {
        size_t n = len < FCGI_MAX_CONTENT ? len : FCGI_MAX_CONTENT;
        uint8_t pad = fcr__padding_for(n);
        uint8_t *rec = malloc(FCGI_HEADER_LEN + n + pad);
        if (!rec)
            return FCR_ENOMEM;
        fcr__header_encode(rec, FCGI_STDERR, r->id, (uint16_t)n, pad);
        memcpy(rec + FCGI_HEADER_LEN, p, n);
        memset(rec + FCGI_HEADER_LEN + n, 0, pad);
        int e = fcr__conn_push(c, rec, FCGI_HEADER_LEN + n + pad, free_arg, rec);
        if (e)
            return e;
        r->state |= FCR__REQ_STDERR_USED;
        p += n;
        len -= n;
    }
    fcr__conn_want_flush(c);
    return 0;
}

/* Ends a request the application has not been given, with a minimal CGI response, and drops
 * the core's hold on it. The caller must not use `r` afterwards. */
void fcr__req_reject(fcr_req *r, const char *status_line)
{
    r->state |= FCR__REQ_DISCARD;
    fcr__conn *c = r->conn;
    if (!c || (r->state & (FCR__REQ_ENDED | FCR__REQ_DELIVERED)))
        return;
    char head[200];
    int n = snprintf(head, sizeof head,
                     "Status: %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n\r\n%s\n",
                     status_line, strlen(status_line) + 1, status_line);
    if (n > 0 && (size_t)n < sizeof head)
        out_append(r, (const uint8_t *)head, (size_t)n);
    /* out_append marked the request dirty: it must not stay on the server's list once ended. */
    fcr__server_unmark_dirty(r->srv, r);
    fcr__req_seal(r, true, FCGI_REQUEST_COMPLETE, 0);
    fcr__conn_remove_req(c, r);
    if (r->busy == 0)
        fcr__req_unref(r);
    else
        r->state |= FCR__REQ_FINISHED;
}

int fcr_req_finish(fcr_req *r, uint32_t app_status)
{
    if (!r)
        return FCR_EINVAL;
    if (r->state & FCR__REQ_FINISHED)
        return FCR_EINVAL;
    r->state |= FCR__REQ_FINISHED;
    r->on_drain = NULL;
    r->on_abort = NULL;
    int ret = 0;
    fcr__conn *c = r->conn;
    if (c && !(r->state & (FCR__REQ_ABORTED | FCR__REQ_ENDED))) {
        fcr__server_unmark_dirty(r->srv, r);
        fcr__req_seal(r, true, FCGI_REQUEST_COMPLETE, app_status);
        if (r->conn)
            fcr__conn_remove_req(r->conn, r);
    } else {
        ret = (r->state & FCR__REQ_ABORTED) ? FCR_ECLOSED : 0;
        fcr__server_unmark_dirty(r->srv, r);
    }
    if (r->busy == 0)
        fcr__req_unref(r);
    return ret;
}

/* Aborts a request: with `send_end`, END_REQUEST goes out at once (ABORT_REQUEST); without, the
 * connection is gone. The application's abort callback runs last, as it may finish the
 * request. */

void fcr__req_drop_output(fcr_req *r)
{
    if (r->conn)
        r->conn->queued -= out_content(r);
    fcr__buf_free(&r->out);
}
