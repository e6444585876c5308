/* Streamed bodies: the request body of a route that streams it, handed to the handler's body fn
 * piece by piece as the core delivers it (one piece held, with reading from the connection
 * paused, while nobody takes it), and answers written by the handler as they are made, paced by
 * the connection's output queue. */
#include "app_int.h"

#include <stdlib.h>
#include <string.h>

/* Bytes of the answer's head and early body handed to the core per write. */
#define PRELUDE_CHUNK (256u * 1024u)

/* What became of a piece handed to the body fn. */
enum { HO_MORE, HO_WAIT, HO_DROP };

static void stream_finish(fcr__ctx *ctx);

/* ---- Request bodies ------------------------------------------------------------------- */

static bool aborted(const fcr__ctx *ctx)
{
    return fcr_req_aborted(ctx->req);
}

/* True when the body fn may be called now: it reads, is not paused, and no callback of the
 * request runs or waits for a deferral. */
static bool can_hand_over(const fcr__ctx *ctx)
{
    return ctx->body_fn && !ctx->body_over && !ctx->body_paused && !ctx->in_handler &&
           !ctx->defer_pending && (ctx->state == FCR__ST_ASYNC || ctx->state == FCR__ST_STREAM);
}

static void resume_core(fcr__ctx *ctx)
{
    if (ctx->core_paused) {
        ctx->core_paused = false;
        fcr_req_resume_input(ctx->req);
    }
}

static void kick_cb(struct ev_loop *loop, ev_timer *w, int revents);

static void kick(fcr__ctx *ctx)
{
    if (ctx->kick_on)
        return;
    ev_timer_init(&ctx->body_kick, kick_cb, 0., 0.);
    ev_timer_start(ctx->loop, &ctx->body_kick);
    ctx->kick_on = true;
}

void fcr__body_gone(fcr__ctx *ctx)
{
    if (!ctx->body_fn || ctx->body_over)
        return;
    ctx->body_over = true;
    /* Inside this call the request cannot be answered, deferred or streamed: it is ending. */
    bool was = ctx->in_handler;
    ctx->in_handler = false;
    ctx->in_gone = true;
    (void)ctx->body_fn(ctx->req, &ctx->res, NULL, 0, ctx->body_data);
    ctx->in_gone = false;
    ctx->in_handler = was;
}

/* The body passed the route's limit: the body fn is told, the answer is 413 (or, when an answer
 * is already streaming, it is cut short). */
static void too_big(fcr__ctx *ctx)
{
    fcr__body_gone(ctx);
    char what[600];
    fcr__describe(ctx, what, sizeof what);
    fcr_log(FCR_LOG_WARN, "%s: the streamed body passed the limit of %zu bytes", what,
            ctx->body_limit);
    if (ctx->state == FCR__ST_STREAM) {
        ctx->stream_failed = true;
    } else {
        char detail[128];
        snprintf(detail, sizeof detail, "the request body exceeds the limit of %zu bytes",
                 ctx->body_limit);
        fcr__res_reset(&ctx->res);
        if (fcr__res_set_status_problem(&ctx->res, 413, detail) < 0)
            ctx->res.status = 413;
    }
    resume_core(ctx); /* the rest is read and dropped */
    fcr__ctx_send(ctx);
}

int fcr__body_verdict(fcr__ctx *ctx, int rc)
{
    if (fcr__deferral_verdict(ctx, rc == FCR_BODY_ASYNC, rc, FCR__AT_BODY, "body fn"))
        return ctx->defer_pending ? HO_WAIT : HO_DROP;
    if (rc == FCR_BODY_MORE || rc == FCR_BODY_PAUSE) {
        if (ctx->body_end_seen) {
            ctx->body_over = true;
            fcr__ctx_fail(ctx, FCR_EINVAL, "body fn (it asked for more after the end)");
            fcr__ctx_send(ctx);
            return HO_DROP;
        }
        if (ctx->send_asked || ctx->stream_end_asked) {
            /* Answered from inside: the body fn hears that the rest will not come. */
            ctx->send_asked = false;
            resume_core(ctx);
            if (ctx->state == FCR__ST_STREAM)
                stream_finish(ctx);
            else
                fcr__ctx_send(ctx);
            return HO_DROP;
        }
        if (rc == FCR_BODY_PAUSE) {
            ctx->body_paused = true;
            return HO_WAIT;
        }
        return HO_MORE;
    }
    /* A verdict that ends the reading: the handler's, for what follows. The rest of the body is
     * read and dropped. */
    ctx->body_over = true;
    resume_core(ctx);
    fcr__handler_verdict(ctx, rc);
    return HO_DROP;
}

static int hold(fcr__ctx *ctx, const void *buf, size_t len);

/* Hands `len` bytes at `buf` (0: the end) to the body fn. */
static int hand_over(fcr__ctx *ctx, const void *buf, size_t len)
{
    if (len > ctx->body_limit - ctx->body_seen) {
        too_big(ctx);
        return HO_DROP;
    }
    ctx->body_seen += len;
    if (len == 0)
        ctx->body_end_seen = true;
    int was = ctx->state;
    ctx->state = FCR__ST_RUNNING; /* the body fn may defer */
    ctx->in_handler = true;
    ctx->unread = NULL;
    ctx->unread_len = 0;
    int rc = ctx->body_fn(ctx->req, &ctx->res, len ? buf : "", len, ctx->body_data);
    ctx->in_handler = false;
    if (ctx->unread_len) {
        const unsigned char *tail = ctx->unread;
        size_t n = ctx->unread_len;
        ctx->unread = NULL;
        ctx->unread_len = 0;
        if (rc == FCR_BODY_PAUSE || (rc == FCR_BODY_ASYNC && ctx->defer_pending)) {
            if (hold(ctx, tail, n) < 0)
                ctx->body_oom = true; /* the request fails when reading goes on */
            else
                ctx->body_seen -= n;
        }
    }
    if (ctx->state == FCR__ST_RUNNING)
        ctx->state = ctx->streamed ? FCR__ST_STREAM : was;
    return fcr__body_verdict(ctx, rc);
}

/* Keeps a piece that came while nobody could take it; reading stays paused until it is taken.
 * Returns 0 or FCR_ENOMEM. */
static int hold(fcr__ctx *ctx, const void *buf, size_t len)
{
    if (len > ctx->held_cap) {
        size_t cap = len < 65536 ? 65536 : len;
        unsigned char *p = realloc(ctx->held, cap);
        if (!p)
            return FCR_ENOMEM;
        ctx->held = p;
        ctx->held_cap = cap;
    }
    if (len)
        memmove(ctx->held, buf, len); /* a tail given back may lie in `held` itself */
    ctx->held_len = len;
    ctx->held_set = true;
    return 0;
}

int fcr__body_chunk(fcr_req *req, fcr_stream stream, const void *buf, size_t len)
{
    fcr__ctx *ctx = fcr__ctx_of(req);
    if (!ctx || stream != FCR_STDIN || ctx->body_over || ctx->body_oom ||
        ctx->state == FCR__ST_OUTPUT)
        return 0; /* dropped */
    if (ctx->held_set || !can_hand_over(ctx) || aborted(ctx)) {
        if (ctx->held_set || hold(ctx, buf, len) < 0) {
            /* Cannot happen while reading is paused for the held piece; out of memory the
             * request fails once its handler reads. */
            ctx->body_oom = true;
            return 0;
        }
        ctx->core_paused = true;
        return FCR_EAGAIN;
    }
    switch (hand_over(ctx, buf, len)) {
    case HO_MORE:
        return 0;
    case HO_WAIT:
        ctx->core_paused = true;
        return FCR_EAGAIN;
    default:
        return 0; /* the request may be gone: the core drops the rest */
    }
}

static void hand_held(fcr__ctx *ctx);

/* Hands over the held piece and resumes reading, from the loop. */
static void kick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)revents;
    fcr__ctx *ctx = (fcr__ctx *)(void *)((char *)w - offsetof(fcr__ctx, body_kick));
    ctx->kick_on = false;
    fcr__log_saved l = fcr__log_enter(ctx);
    hand_held(ctx);
    fcr__log_leave(l);
}

/* From the loop: the held piece to the body fn, then reading again. */
static void hand_held(fcr__ctx *ctx)
{
    if (!can_hand_over(ctx))
        return;
    if (aborted(ctx)) {
        fcr__ctx_finish(ctx); /* tells the body fn, releases the request */
        return;
    }
    if (ctx->body_oom) {
        fcr__body_gone(ctx);
        fcr__ctx_fail(ctx, FCR_ENOMEM, "reading the body");
        fcr__ctx_send(ctx);
        return;
    }
    if (ctx->held_set) {
        ctx->held_set = false;
        if (hand_over(ctx, ctx->held, ctx->held_len) != HO_MORE)
            return;
    }
    resume_core(ctx);
}

int fcr__body_unread(fcr_req *req, const void *tail, size_t len)
{
    fcr__ctx *ctx = fcr__ctx_of(req);
    if (!ctx || !ctx->body_fn || !ctx->in_handler || ctx->in_gone || ctx->body_end_seen ||
        (len && !tail))
        return FCR_EINVAL;
    ctx->unread = tail;
    ctx->unread_len = len;
    return 0;
}

void fcr__body_start(fcr__ctx *ctx)
{
    if (ctx->body_fn && !ctx->body_over)
        kick(ctx);
}

int fcr_req_read_body(fcr_req *req, fcr_body_fn fn, void *data)
{
    fcr__ctx *ctx = fcr__ctx_of(req);
    if (!ctx || !fn || !ctx->body_stream || ctx->body_fn || ctx->in_gone ||
        (ctx->sent && ctx->state != FCR__ST_STREAM) || ctx->state == FCR__ST_OUTPUT)
        return FCR_EINVAL;
    if (aborted(ctx))
        return FCR_ECLOSED;
    ctx->body_fn = fn;
    ctx->body_data = data;
    if (!ctx->in_handler && ctx->state != FCR__ST_DEFERRED)
        kick(ctx); /* from a watcher; else the callback's verdict starts it */
    return 0;
}

void fcr_req_resume_body(fcr_req *req)
{
    fcr__ctx *ctx = fcr__ctx_of(req);
    if (!ctx || !ctx->body_paused || ctx->body_over)
        return;
    ctx->body_paused = false;
    kick(ctx);
}

/* ---- Streamed answers ----------------------------------------------------------------- */

static fcr__ctx *stream_ctx(fcr_res *res)
{
    fcr__ctx *ctx = res ? res->ctx : NULL;
    if (!ctx || ctx->magic != FCR__CTX_MAGIC || ctx->state == FCR__ST_OUTPUT || ctx->in_gone)
        return NULL;
    return ctx;
}

/* Writes what is left of the head and of the body `res` held when the stream began. Returns 0
 * when all of it is queued, or what the write returned (FCR_EAGAIN, FCR_ECLOSED, ...). */
static int flush_prelude(fcr__ctx *ctx)
{
    while (ctx->head_off < ctx->head_len) {
        int rc = fcr_req_write(ctx->req, ctx->head + ctx->head_off, ctx->head_len - ctx->head_off);
        if (rc < 0)
            return rc;
        ctx->head_off = ctx->head_len;
    }
    while (ctx->body_off < ctx->body_end) {
        size_t n = ctx->body_end - ctx->body_off;
        if (n > PRELUDE_CHUNK)
            n = PRELUDE_CHUNK;
        int rc = fcr_req_write(ctx->req, ctx->res.body->buf.p + ctx->body_off, n);
        if (rc < 0)
            return rc;
        ctx->body_off += n;
    }
    return 0;
}

static void drain_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)revents;
    fcr__ctx *ctx = (fcr__ctx *)(void *)((char *)w - offsetof(fcr__ctx, drain_kick));
    ctx->drain_on = false;
    void (*fn)(fcr_res *, void *) = ctx->drain_fn;
    ctx->drain_fn = NULL;
    if (fn && ctx->state == FCR__ST_STREAM) {
        fcr__log_saved l = fcr__log_enter(ctx);
        fn(&ctx->res, ctx->drain_data); /* may end the stream: ctx is not touched after */
        fcr__log_leave(l);
    }
}

static void drain_soon(fcr__ctx *ctx)
{
    if (ctx->drain_on)
        return;
    ev_timer_init(&ctx->drain_kick, drain_cb, 0., 0.);
    ev_timer_start(ctx->loop, &ctx->drain_kick);
    ctx->drain_on = true;
}

/* The core's drain callback: the writer goes on from the loop, not from inside the core's
 * flush. */
static void on_core_drain(fcr_req *req)
{
    fcr__ctx *ctx = fcr__ctx_of(req);
    if (ctx && ctx->state == FCR__ST_STREAM && ctx->drain_fn)
        drain_soon(ctx);
}

int fcr_res_stream_begin(fcr_res *res)
{
    fcr__ctx *ctx = stream_ctx(res);
    if (!ctx || ctx->sent || ctx->send_asked || ctx->streamed || !ctx->handler_ran ||
        fcr_req_role(ctx->req) == FCR_AUTHORIZER ||
        !(ctx->in_handler || ctx->state == FCR__ST_ASYNC))
        return FCR_EINVAL;
    if (aborted(ctx))
        return FCR_ECLOSED;
    fcr__ctx_after(ctx);
    ctx->sent = true;
    ctx->streamed = true;
    ctx->state = FCR__ST_STREAM;
    if (fcr__build_head(ctx, true) < 0) {
        static const char oom[] = "Status: 500 Internal Server Error\r\n"
                                  "Content-Type: text/plain\r\nContent-Length: 0\r\n\r\n";
        ctx->head = (char *)oom;
        ctx->head_len = sizeof oom - 1;
        ctx->head_off = ctx->body_off = ctx->body_end = 0;
        ctx->stream_failed = true;
    }
    int rc = flush_prelude(ctx);
    return rc == FCR_EAGAIN ? 0 : rc;
}

int fcr_res_stream_write(fcr_res *res, const void *buf, size_t len)
{
    fcr__ctx *ctx = stream_ctx(res);
    if (!ctx || !ctx->streamed || ctx->stream_ending || ctx->stream_end_asked || (!buf && len))
        return FCR_EINVAL;
    if (aborted(ctx) || ctx->stream_failed)
        return FCR_ECLOSED;
    int rc = flush_prelude(ctx);
    if (rc < 0)
        return rc;
    if (ctx->stream_mute || len == 0)
        return 0;
    rc = fcr_req_write(ctx->req, buf, len);
    if (rc == 0)
        ctx->stream_bytes += len;
    return rc;
}

int fcr_res_stream_on_drain(fcr_res *res, void (*cb)(fcr_res *res, void *data), void *data)
{
    fcr__ctx *ctx = stream_ctx(res);
    if (!ctx || !ctx->streamed || ctx->stream_ending || ctx->stream_end_asked)
        return FCR_EINVAL;
    ctx->drain_fn = cb;
    ctx->drain_data = data;
    if (!cb) {
        fcr_req_on_drain(ctx->req, NULL);
        if (ctx->drain_on) {
            ev_timer_stop(ctx->loop, &ctx->drain_kick);
            ctx->drain_on = false;
        }
    } else if (aborted(ctx)) {
        drain_soon(ctx);
    } else {
        fcr_req_on_drain(ctx->req, on_core_drain);
    }
    return 0;
}

/* Ends the stream: what is left of the prelude goes out first (the output pump finishes the
 * request), then END_REQUEST. */
static void stream_finish(fcr__ctx *ctx)
{
    ctx->stream_ending = true;
    fcr_req_on_drain(ctx->req, NULL);
    ctx->drain_fn = NULL;
    if (ctx->head_off < ctx->head_len || ctx->body_off < ctx->body_end) {
        if (!aborted(ctx) && !ctx->stream_failed) {
            fcr__ctx_pump(ctx);
            return;
        }
    }
    fcr__ctx_finish(ctx);
}

void fcr__stream_end(fcr__ctx *ctx)
{
    stream_finish(ctx);
}

int fcr_res_stream_end(fcr_res *res)
{
    fcr__ctx *ctx = stream_ctx(res);
    if (!ctx || !ctx->streamed || ctx->stream_ending || ctx->stream_end_asked)
        return FCR_EINVAL;
    bool gone = aborted(ctx);
    if (ctx->in_handler) {
        ctx->stream_end_asked = true; /* ended when the callback returns */
        return gone ? FCR_ECLOSED : 0;
    }
    fcr__log_saved l = fcr__log_enter(ctx);
    stream_finish(ctx);
    fcr__log_leave(l);
    return gone ? FCR_ECLOSED : 0;
}

/* ---- Both ----------------------------------------------------------------------------- */

void fcr__stream_abort(fcr__ctx *ctx)
{
    if (ctx->in_handler || ctx->defer_pending || ctx->in_gone)
        return; /* the running callback's verdict, or the done, takes care of it */
    if (ctx->body_fn && !ctx->body_over) {
        /* Nobody else holds the request: the body fn hears it, the request is released. */
        fcr__ctx_finish(ctx);
        return;
    }
    if (ctx->state == FCR__ST_STREAM && ctx->drain_fn)
        drain_soon(ctx);
}

int fcr__body_on_release(fcr_req *req, void (*fn)(void *data), void *data)
{
    fcr__ctx *ctx = fcr__ctx_of(req);
    if (!ctx || !fn || ctx->body_release)
        return FCR_EINVAL;
    ctx->body_release = fn;
    ctx->body_release_data = data;
    return 0;
}

void fcr__stream_release(fcr__ctx *ctx)
{
    if (ctx->body_release) {
        void (*fn)(void *) = ctx->body_release;
        ctx->body_release = NULL;
        fn(ctx->body_release_data);
    }
    if (ctx->kick_on)
        ev_timer_stop(ctx->loop, &ctx->body_kick);
    if (ctx->drain_on)
        ev_timer_stop(ctx->loop, &ctx->drain_kick);
    ctx->kick_on = ctx->drain_on = false;
    free(ctx->held);
    ctx->held = NULL;
    ctx->held_cap = 0;
}
