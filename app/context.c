/* The request context's life: creation (or reuse of a finished one), the output of the response
 * (serialisation into STDOUT, waiting for the connection to drain), and the free. */
#include "app_int.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* Bytes handed to the core per write; it frames them into records itself. */
#define WRITE_CHUNK (256u * 1024u)
/* A heap body up to this size is copied into the connection's record like a small one: a copy
 * of a few KiB costs less than the record headers and queue entries of a reference. */
#define COPY_MAX (32u * 1024u)

double fcr__now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- Creation and free ------------------------------------------------------------- */

fcr__ctx *fcr__ctx_of(const fcr_req *req)
{
    if (!req)
        return NULL;
    fcr__ctx *c = fcr__req_fwdata(req);
    if (!c || c->magic != FCR__CTX_MAGIC)
        return NULL;
    return c;
}

static void resume_cb(struct ev_loop *loop, ev_timer *w, int revents);

static void release_ctx(void *ctx)
{
    fcr__ctx_free(ctx);
}

static void fw_abort(fcr_req *req)
{
    fcr__ctx *ctx = fcr__ctx_of(req);
    if (ctx) {
        fcr__log_saved l = fcr__log_enter(ctx);
        fcr__stream_abort(ctx);
        fcr__log_leave(l);
    }
}

static const char *ctx_log_id(const void *arg)
{
    const fcr__ctx *ctx = arg;
    return fcr_req_request_id(ctx->req);
}

fcr__log_saved fcr__log_enter(const fcr__ctx *ctx)
{
    fcr__log_saved s;
    fcr__log_request(&s.fn, &s.arg);
    fcr__log_set_request(ctx_log_id, ctx);
    return s;
}

void fcr__log_leave(fcr__log_saved saved)
{
    fcr__log_set_request(saved.fn, saved.arg);
}

fcr__ctx *fcr__ctx_new(fcr_app *app, fcr_req *req)
{
    fcr__ctx *ctx = app->spare;
    if (ctx) {
        app->spare = ctx->next_spare;
        app->nspare--;
    } else if (!(ctx = malloc(sizeof *ctx))) {
        return NULL;
    }
    /* Everything but the arena's block starts zeroed. */
    memset(ctx, 0, offsetof(fcr__ctx, arena_mem));
    fcr__arena_init(&ctx->arena, ctx->arena_mem, sizeof ctx->arena_mem);
    ctx->magic = FCR__CTX_MAGIC;
    ctx->app = app;
    ctx->req = req;
    ctx->loop = fcr_server_loop(fcr_req_server(req));
    fcr__res_init(&ctx->res, ctx);
    ctx->method = fcr_req_param(req, "REQUEST_METHOD");
    ctx->no_body = ctx->method && strcmp(ctx->method, "HEAD") == 0;
    fcr__req_set_fwdata(req, ctx, release_ctx);
    fcr__req_on_fwabort(req, fw_abort);
    ev_timer_init(&ctx->resume, resume_cb, 0., 0.);
    return ctx;
}

void fcr__ctx_free(fcr__ctx *ctx)
{
    if (!ctx)
        return;
    const char *(*fn)(const void *);
    const void *arg;
    fcr__log_request(&fn, &arg);
    if (arg == ctx) /* its lines are over */
        fcr__log_set_request(NULL, NULL);
    fcr__stream_release(ctx);
    fcr__res_release(&ctx->res);
    json_decref(ctx->json);
    free(ctx->json_error);
    fcr__arena_free(&ctx->arena);
    ctx->magic = 0;
    /* Kept for the app's next request; fcr_app_free() frees the spares. */
    fcr_app *app = ctx->app;
    if (app && app->nspare < FCR__CTX_SPARES) {
        ctx->next_spare = app->spare;
        app->spare = ctx;
        app->nspare++;
        return;
    }
    free(ctx);
}

/* ---- Output --------------------------------------------------------------------------- */

static bool status_has_body(int status)
{
    return status != 204 && status != 304;
}

/* Appends the string `s` at p + n, NUL-terminated (the next append overwrites the NUL); returns
 * the new length. The caller sized `p` with room for the NUL. */
static size_t put_str(char *p, size_t n, const char *s)
{
    size_t len = strlen(s);
    memcpy(p + n, s, len + 1);
    return n + len;
}

/* Appends `v` in decimal at p + n; returns the new length. */
static size_t put_uint(char *p, size_t n, size_t v)
{
    char digits[24];
    size_t k = 0;
    do {
        digits[k++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (k)
        p[n++] = digits[--k];
    return n;
}

int fcr__build_head(fcr__ctx *ctx, bool streamed)
{
    fcr_res *res = &ctx->res;
    size_t blen = res->body ? res->body->buf.len : 0;
    bool body_allowed = status_has_body(res->status);
    const char *user_cl = fcr_res_header(res, "Content-Length");
    /* A HEAD handler may state the length of the body it does not send; a streamed answer the
     * length of the body it is going to send. */
    bool keep_cl = user_cl && ((ctx->no_body && blen == 0) || streamed);
    bool add_ct = body_allowed && (blen > 0 || streamed) && !fcr_res_header(res, "Content-Type");
    /* Every answer names its request id, unless the handler set the header itself (an
     * AUTHORIZER's answer is the web server's, not the client's). */
    const char *rid = NULL;
    if (fcr_req_role(ctx->req) != FCR_AUTHORIZER && !fcr_res_header(res, "X-Request-Id"))
        rid = fcr_req_request_id(ctx->req);

    const char *reason = fcr_status_reason(res->status);
    /* Status line (digits, reason), the optional Content-Type and Content-Length lines, CRLF. */
    size_t cap = 32 + strlen(reason) + 48 + 48 + 2 + (rid ? 16 + strlen(rid) : 0);
    const fcr__kv *h = res->h.v;
    for (size_t i = 0; i < res->h.n; i++) {
        /* Names and values are never NULL (header_add checks them). */
        // NOLINTNEXTLINE(clang-analyzer-core.NonNullParamChecker)
        cap += strlen(h[i].name) + strlen(h[i].value) + 4;
    }
    char *p = fcr__arena_alloc(&ctx->arena, cap);
    if (!p)
        return FCR_ENOMEM;
    /* Built by hand rather than with snprintf: this runs for every response. */
    size_t n = put_str(p, 0, "Status: ");
    n = put_uint(p, n, (size_t)(res->status < 0 ? 0 : res->status));
    p[n++] = ' ';
    n = put_str(p, n, reason);
    n = put_str(p, n, "\r\n");
    for (size_t i = 0; i < res->h.n; i++) {
        if (strcasecmp(h[i].name, "Content-Length") == 0 && (!keep_cl || !body_allowed))
            continue;
        n = put_str(p, n, h[i].name);
        n = put_str(p, n, ": ");
        n = put_str(p, n, h[i].value);
        n = put_str(p, n, "\r\n");
    }
    if (add_ct)
        n = put_str(p, n, "Content-Type: application/octet-stream\r\n");
    if (rid) {
        n = put_str(p, n, "X-Request-Id: ");
        n = put_str(p, n, rid);
        n = put_str(p, n, "\r\n");
    }
    if (body_allowed && !keep_cl && !streamed) {
        n = put_str(p, n, "Content-Length: ");
        n = put_uint(p, n, blen);
        n = put_str(p, n, "\r\n");
    }
    n = put_str(p, n, "\r\n");
    ctx->head = p;
    ctx->head_len = n;
    ctx->head_off = 0;
    ctx->body_off = 0;
    ctx->body_end = (body_allowed && !ctx->no_body) ? blen : 0;
    ctx->stream_mute = !body_allowed || ctx->no_body;
    return 0;
}

/* Appends `len` bytes of `s` to `out` (holding `n` of `cap` bytes, room kept for a NUL) with
 * control bytes and backslashes (and, with `words`, spaces and double quotes) as \xNN. */
static size_t escape_into(char *out, size_t n, size_t cap, const char *s, size_t len, bool words)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < len && n + 5 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f || c == '\\' || (words && (c == ' ' || c == '"'))) {
            out[n++] = '\\';
            out[n++] = 'x';
            out[n++] = hex[c >> 4];
            out[n++] = hex[c & 15];
        } else {
            out[n++] = (char)c;
        }
    }
    return n;
}

void fcr__describe(const fcr__ctx *ctx, char *out, size_t cap)
{
    const char *m = ctx->method ? ctx->method : "-";
    size_t mlen = strlen(m);
    size_t n = escape_into(out, 0, cap < 64 ? cap : 64, m, mlen, false);
    if (n + 1 < cap)
        out[n++] = ' ';
    n = escape_into(out, n, cap, ctx->path, ctx->path_len, false);
    out[n] = '\0';
}

/* The access log line of a request (see fcr_app_set_access_log): in the text format a line of
 * NAME=VALUE words, in the JSON format the same as members. The request id ends either (the
 * logger adds it: the line is written while the request is the current one). */
static void access_log(fcr__ctx *ctx)
{
    char what[600];
    size_t n = 0;
    const char *m = ctx->method ? ctx->method : "-";
    double ms = (fcr__now() - ctx->start) * 1000.0;
    size_t bytes = ctx->body_off + ctx->stream_bytes;
    bool aborted = fcr_req_aborted(ctx->req);
    fcr__log_saved l = fcr__log_enter(ctx);
    if (fcr_log_format() == FCR_LOG_JSON) {
        /* The method and path as JSON strings when they are UTF-8, else in their \xNN form. */
        char extra[4096]; /* room for a 64-byte method and a 512-byte path, all escaped */
        size_t e = 0;
        fcr__json_put_raw(extra, &e, sizeof extra, ",\"method\":", 10);
        if (fcr__utf8_valid(m, strlen(m))) {
            fcr__json_put_string(extra, &e, sizeof extra - 120, m, strlen(m) < 64 ? strlen(m) : 64);
        } else {
            n = escape_into(what, 0, 64, m, strlen(m), true);
            fcr__json_put_string(extra, &e, sizeof extra - 120, what, n);
        }
        fcr__json_put_raw(extra, &e, sizeof extra, ",\"path\":", 8);
        size_t plen = ctx->path_len < 512 ? ctx->path_len : 512;
        if (fcr__utf8_valid(ctx->path, plen)) {
            fcr__json_put_string(extra, &e, sizeof extra - 120, ctx->path, plen);
        } else {
            n = escape_into(what, 0, sizeof what, ctx->path, plen, true);
            fcr__json_put_string(extra, &e, sizeof extra - 120, what, n);
        }
        if (e > sizeof extra - 120) { /* cut short: the object must stay whole */
            fcr__log_leave(l);
            return;
        }
        e += (size_t)snprintf(extra + e, sizeof extra - e,
                              ",\"status\":%d,\"bytes\":%zu,\"ms\":%.3f,\"aborted\":%s",
                              ctx->res.status, bytes, ms, aborted ? "true" : "false");
        fcr__log_emit(FCR_LOG_INFO, "access", 6, extra);
        fcr__log_leave(l);
        return;
    }
    n = escape_into(what, n, 64, m, strlen(m), true);
    memcpy(what + n, " path=", 6);
    n += 6;
    n = escape_into(what, n, sizeof what, ctx->path, ctx->path_len, true);
    what[n] = '\0';
    fcr_log(FCR_LOG_INFO, "access method=%s status=%d bytes=%zu ms=%.3f%s", what, ctx->res.status,
            bytes, ms, aborted ? " aborted" : "");
    fcr__log_leave(l);
}

void fcr__ctx_finish(fcr__ctx *ctx)
{
    fcr__body_gone(ctx);
    fcr_req *req = ctx->req;
    uint32_t app_status = ctx->stream_failed ? 1 : 0;
    if (ctx->app->access_log && fcr_log_level() >= FCR_LOG_INFO)
        access_log(ctx);
    ev_timer_stop(ctx->loop, &ctx->resume);
    fcr_req_on_drain(req, NULL);
    fcr_req_on_abort(req, NULL);
    fcr__req_set_fwdata(req, NULL, NULL);
    fcr__ctx_free(ctx);
    fcr_req_finish(req, app_status);
}

static void resume_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)revents;
    fcr__ctx *ctx = (fcr__ctx *)(void *)((char *)w - offsetof(fcr__ctx, resume));
    fcr__log_saved l = fcr__log_enter(ctx);
    fcr__ctx_pump(ctx);
    fcr__log_leave(l);
}

/* The output goes on from the loop, not from inside the core's drain callback: a write that
 * meets a full queue again there would re-register the callback while the core is still
 * calling drain callbacks. */
static void on_drain(fcr_req *req)
{
    fcr__ctx *ctx = fcr__ctx_of(req);
    if (ctx)
        ev_timer_start(ctx->loop, &ctx->resume);
}

static void on_abort(fcr_req *req)
{
    fcr__ctx *ctx = fcr__ctx_of(req);
    if (ctx)
        fcr__ctx_finish(ctx);
}

/* Writes what the connection takes; waits for the drain callback on FCR_EAGAIN; finishes the
 * request when all is queued or nothing more can be sent. */
void fcr__ctx_pump(fcr__ctx *ctx)
{
    for (;;) {
        int rc;
        if (ctx->head_off < ctx->head_len) {
            size_t n = ctx->head_len - ctx->head_off;
            rc = fcr_req_write(ctx->req, ctx->head + ctx->head_off, n);
            if (rc == 0)
                ctx->head_off += n;
        } else if (ctx->body_off < ctx->body_end) {
            fcr__body *b = ctx->res.body;
            size_t n = ctx->body_end - ctx->body_off;
            if (n > WRITE_CHUNK)
                n = WRITE_CHUNK;
            if (!b->heap || ctx->body_end <= COPY_MAX) {
                /* A small body (in the arena, or on the heap up to COPY_MAX): copied. */
                rc = fcr_req_write(ctx->req, b->buf.p + ctx->body_off, n);
            } else {
                b->refs++;
                /* On error the core calls the release function (dropping our extra
                 * reference). */
                rc = fcr_req_write_ref(ctx->req, b->buf.p + ctx->body_off, n, fcr__body_unref, b);
            }
            if (rc == 0)
                ctx->body_off += n;
        } else {
            break;
        }
        if (rc == FCR_EAGAIN) {
            fcr_req_on_abort(ctx->req, on_abort);
            fcr_req_on_drain(ctx->req, on_drain);
            return;
        }
        if (rc < 0)
            break;
    }
    fcr__ctx_finish(ctx);
}

/* An answer whose body is held in memory until the connection takes it counts against the
 * serving app's output memory; one that would take the app past it is replaced with 503
 * problem+json and Retry-After (unless nothing else is held: one answer always gets through).
 * Clients that do not read then hold at most that much memory of the worker, however many
 * they are. Returns false when the answer was replaced. */
static bool hold_body(fcr__ctx *ctx)
{
    fcr__body *b = ctx->res.body;
    if (!b || !b->heap || b->held || ctx->body_end == 0)
        return true;
    fcr_app *app = ctx->app;
    size_t max = app->max_output_memory ? app->max_output_memory : FCR_DEFAULT_MAX_OUTPUT_MEMORY;
    size_t size = b->buf.cap;
    if (app->output_held == 0 || (app->output_held <= max && size <= max - app->output_held)) {
        app->output_held += size;
        b->held = &app->output_held;
        b->counted = size;
        return true;
    }
    double now = fcr__now();
    if (now - app->held_log_at >= 1.0) {
        char what[600];
        fcr__describe(ctx, what, sizeof what);
        fcr_log(FCR_LOG_WARN,
                "%s: answered 503: answers waiting for slow clients hold %zu bytes, and this "
                "one (%zu) would pass the output memory limit of %zu (%lu more since the last "
                "line)",
                what, app->output_held, size, max, app->held_unlogged);
        app->held_log_at = now;
        app->held_unlogged = 0;
    } else {
        app->held_unlogged++;
    }
    fcr__res_reset(&ctx->res);
    if (fcr__res_set_status_problem(&ctx->res, 503,
                                    "the server is short of memory for answers; try again") < 0 ||
        fcr_res_set_header(&ctx->res, "Retry-After", "1") < 0)
        fcr__res_reset(&ctx->res);
    return false;
}

void fcr__ctx_output(fcr__ctx *ctx)
{
    ctx->state = FCR__ST_OUTPUT;
    ctx->sent = true;
    if (fcr_log_level() >= FCR_LOG_DEBUG) {
        char what[600];
        fcr__describe(ctx, what, sizeof what);
        fcr_log(FCR_LOG_DEBUG, "%s -> %d", what, ctx->res.status);
    }
    if (fcr_req_aborted(ctx->req)) {
        fcr__ctx_finish(ctx);
        return;
    }
    int built = fcr__build_head(ctx, false);
    if (built == 0 && !hold_body(ctx))
        built = fcr__build_head(ctx, false);
    if (built < 0) {
        /* Out of memory: a fixed answer needs no allocation. */
        static const char oom[] = "Status: 500 Internal Server Error\r\n"
                                  "Content-Type: text/plain\r\nContent-Length: 0\r\n\r\n";
        ctx->head = (char *)oom;
        ctx->head_len = sizeof oom - 1;
        ctx->head_off = ctx->body_off = ctx->body_end = 0;
    }
    fcr__ctx_pump(ctx);
}
