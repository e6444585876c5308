/* The request pipeline: the core's callbacks, the routing path and the route, the middleware
 * chain (before-middleware and guards, media type and body limit checks, the handler), then the
 * after-middleware before the output. */
#include "app_int.h"

#include <stdio.h>
#include <string.h>

/* The body limit for `route` (NULL: the serving app's). */
static size_t body_limit(const fcr_app *app, const fcr_route *route)
{
    if (route && route->max_body)
        return route->max_body;
    for (const fcr_app *a = route ? route->app : app; a; a = a->parent) {
        if (a->max_body)
            return a->max_body;
        if (a == app)
            break;
    }
    return FCR_DEFAULT_MAX_BODY;
}

/* ---- Routing path --------------------------------------------------------------------- */

/* Computes the routing path into memory from `arena`: `*full` gets the whole path,
 * `*path`/`*plen` the routing path, `*base_len` the length of the stripped prefix, `*flags` the
 * fcr_router_match() flags for that path. Path params are decoded once: SCRIPT_NAME +
 * PATH_INFO come decoded by the web server (params verbatim), REQUEST_URI comes as the client
 * sent it (FCR_MATCH_DECODE). Returns 0 or FCR_ENOMEM. */
static int routing_path(const fcr_app *app, const fcr_req *req, fcr__arena *arena, char **full,
                        const char **path, size_t *plen, size_t *base_len, unsigned *flags)
{
    size_t sl = 0, pl = 0;
    const char *sn = NULL, *pi = NULL;
    *flags = 0;
    if (!app->route_on_uri) {
        sn = fcr_req_paramn(req, "SCRIPT_NAME", 11, &sl);
        pi = fcr_req_paramn(req, "PATH_INFO", 9, &pl);
    }
    if (!sn && !pi) {
        /* Authorizer requests carry neither; routing on REQUEST_URI was asked for. */
        *flags = FCR_MATCH_DECODE;
        sn = fcr_req_paramn(req, "REQUEST_URI", 11, &sl);
        const char *q = sn ? memchr(sn, '?', sl) : NULL;
        if (q)
            sl = (size_t)(q - sn);
    }
    if (!sn)
        sn = "", sl = 0;
    if (!pi)
        pi = "", pl = 0;
    size_t len = sl + pl;
    char *buf = fcr__arena_alloc(arena, len + 1);
    if (!buf)
        return FCR_ENOMEM;
    memcpy(buf, sn, sl);
    memcpy(buf + sl, pi, pl);
    buf[len] = '\0';
    *full = buf;
    *base_len = 0;
    size_t n = app->prefix_len;
    if (n && len >= n && memcmp(buf, app->prefix, n) == 0 && (len == n || buf[n] == '/')) {
        *base_len = n;
        if (len == n) {
            *path = "/";
            *plen = 1;
            return 0;
        }
    }
    *path = buf + *base_len;
    *plen = len - *base_len;
    if (*plen == 0) {
        *path = "/";
        *plen = 1;
    }
    return 0;
}

static unsigned method_bit(const char *m)
{
    return m ? fcr_method_parse(m, strlen(m)) : 0;
}

/* A new context for `req` with its routing path, or NULL when out of memory. */
static fcr__ctx *ctx_start(fcr_app *app, fcr_req *req)
{
    fcr__ctx *ctx = fcr__ctx_new(app, req);
    if (!ctx)
        return NULL;
    char *full;
    const char *path;
    size_t plen, base_len;
    if (routing_path(app, req, &ctx->arena, &full, &path, &plen, &base_len, &ctx->path_flags) < 0) {
        fcr__ctx_free(ctx);
        return NULL;
    }
    ctx->path = path;
    ctx->path_len = plen;
    ctx->base = base_len ? fcr__arena_strndup(&ctx->arena, full, base_len) : "";
    if (!ctx->base) {
        fcr__ctx_free(ctx);
        return NULL;
    }
    return ctx;
}

/* ---- Middleware iteration: the lists that apply, merged by registration order ---------- */

typedef fcr__mw_iter mw_iter;

static void iter_init(mw_iter *it, const fcr__ctx *ctx, bool after)
{
    it->n = 0;
    const fcr_route *r = ctx->route;
    if (r) {
        it->l[it->n++] = after ? &r->after : &r->before;
        for (const fcr_app *a = r->app; a && it->n < FCR__MAX_MOUNT_DEPTH + 2; a = a->parent) {
            it->l[it->n++] = after ? &a->after : &a->before;
            if (a == ctx->app)
                break;
        }
    } else {
        it->l[it->n++] = after ? &ctx->app->after : &ctx->app->before;
    }
    memset(it->pos, 0, sizeof it->pos);
}

/* The next middleware of list `i`, or NULL at its end. */
static const fcr__mw *iter_peek(const mw_iter *it, size_t i)
{
    const fcr__mw *v = it->l[i]->v;
    return it->pos[i] < it->l[i]->n ? &v[it->pos[i]] : NULL;
}

static const fcr__mw *iter_next(mw_iter *it)
{
    size_t best = SIZE_MAX;
    const fcr__mw *m = NULL;
    for (size_t i = 0; i < it->n; i++) {
        const fcr__mw *c = iter_peek(it, i);
        if (c && (!m || c->seq < m->seq)) {
            best = i;
            m = c;
        }
    }
    if (m)
        it->pos[best]++;
    return m;
}

/* ---- Chain ------------------------------------------------------------------------- */

/* Logs a failure to the request's STDERR stream and the app log, and replaces the response
 * with 500 problem+json. */
void fcr__ctx_fail(fcr__ctx *ctx, int rc, const char *what)
{
    char req[600], line[1024];
    fcr__describe(ctx, req, sizeof req);
    int n;
    if (rc == FCR_HANDLER_ERROR) /* the error verdicts name no cause */
        n = snprintf(line, sizeof line, "%s: %s failed\n", req, what);
    else
        n = snprintf(line, sizeof line, "%s: %s failed: %s (%s)\n", req, what, fcr_err_name(rc),
                     fcr_strerror(rc));
    if (n > 0) {
        size_t len = (size_t)n < sizeof line ? (size_t)n : sizeof line - 1;
        fcr_req_write_stderr(ctx->req, line, len);
        fcr_log(FCR_LOG_ERROR, "%.*s", (int)len - 1, line);
    }
    if (ctx->streamed) {
        /* The head is out: the answer is cut short instead (END_REQUEST with status 1). */
        ctx->stream_failed = true;
        return;
    }
    fcr__res_reset(&ctx->res);
    fcr__res_set_status_problem(&ctx->res, 500, "the request could not be completed");
}

void fcr__ctx_after(fcr__ctx *ctx)
{
    if (!ctx->req || fcr_req_role(ctx->req) == FCR_AUTHORIZER)
        return;
    /* CORS headers first: an after-middleware sees (and may change) them. */
    if (ctx->app->cors && !ctx->preflight) {
        int rc = fcr__cors_answer(ctx);
        if (rc < 0)
            fcr__ctx_fail(ctx, rc, "CORS headers");
    }
    bool was = ctx->in_handler;
    mw_iter it;
    iter_init(&it, ctx, true);
    const fcr__mw *m;
    while ((m = iter_next(&it))) {
        ctx->in_handler = true;
        int rc = m->after(ctx->req, &ctx->res, m->data);
        ctx->in_handler = was;
        if (rc < 0) {
            fcr__ctx_fail(ctx, rc, "after-middleware");
            break;
        }
    }
    ctx->in_handler = was;
}

void fcr__ctx_send(fcr__ctx *ctx)
{
    if (ctx->streamed) {
        if (!ctx->stream_ending)
            fcr__stream_end(ctx);
        return;
    }
    if (ctx->sent)
        return;
    ctx->sent = true;
    fcr__ctx_after(ctx);
    fcr__ctx_output(ctx);
}

static void send_problem(fcr__ctx *ctx, int status, const char *detail)
{
    int rc = fcr__res_set_status_problem(&ctx->res, status, detail);
    if (rc < 0)
        fcr__ctx_fail(ctx, rc, "problem response");
    fcr__ctx_send(ctx);
}

bool fcr__deferral_verdict(fcr__ctx *ctx, bool async, int rc, int at, const char *what)
{
    if (ctx->defer_pending) {
        ctx->at = async ? at : FCR__AT_MISUSE;
        ctx->state = FCR__ST_DEFERRED;
        return true;
    }
    int e = ctx->defer_err;
    ctx->defer_err = 0;
    if (!e || !(async || rc == e))
        return false;
    /* fcr_defer failed and the callback gave up: a full queue left 503 in the response. */
    if (e != FCR_EAGAIN)
        fcr__ctx_fail(ctx, e, what);
    fcr__ctx_send(ctx);
    return true;
}

static void chain_next(fcr__ctx *ctx);

/* A before-middleware's (or a guard's, `guard`) verdict `rc`. Returns true when the chain goes
 * on. */
static bool before_verdict(fcr__ctx *ctx, int rc, bool guard)
{
    bool async = guard ? rc == FCR_AUTH_ASYNC : rc == FCR_BEFORE_ASYNC;
    if (fcr__deferral_verdict(ctx, async, rc, guard ? FCR__AT_GUARD : FCR__AT_BEFORE,
                              "before-middleware"))
        return false;
    if (guard)
        rc = fcr__auth_guard_verdict(ctx, rc);
    if (rc < 0 || (rc != FCR_CONTINUE && rc != FCR_STOP)) {
        fcr__ctx_fail(ctx, rc < 0 ? rc : FCR_EINVAL, "before-middleware");
        fcr__ctx_send(ctx);
        return false;
    }
    if (rc == FCR_STOP || ctx->send_asked) {
        fcr__ctx_send(ctx);
        return false;
    }
    return true;
}

void fcr__handler_verdict(fcr__ctx *ctx, int rc)
{
    if (fcr__deferral_verdict(ctx, rc == FCR_ASYNC, rc, FCR__AT_HANDLER, "handler"))
        return;
    if (rc < 0 || (rc != 0 && rc != FCR_ASYNC)) {
        fcr__ctx_fail(ctx, rc < 0 ? rc : FCR_EINVAL, "handler");
        fcr__ctx_send(ctx);
    } else if (rc == 0 || ctx->send_asked || ctx->stream_end_asked) {
        fcr__ctx_send(ctx); /* for a streamed answer: its end */
    } else {
        ctx->state = ctx->streamed ? FCR__ST_STREAM : FCR__ST_ASYNC;
        fcr__body_start(ctx);
    }
}

/* Before-middleware, media type, body limit, then `handler`. */
static void run_chain(fcr__ctx *ctx, fcr_handler handler, void *data, bool too_big)
{
    ctx->handler = handler;
    ctx->handler_data = data;
    ctx->too_big_chain = too_big;
    iter_init(&ctx->it, ctx, false);
    chain_next(ctx);
}

/* Goes on with the chain from where ctx->it stands. */
static void chain_next(fcr__ctx *ctx)
{
    const fcr__mw *m;
    while ((m = iter_next(&ctx->it))) {
        int rc;
        bool guard = m->kind == FCR__MW_GUARD;
        if (guard) {
            rc = fcr__auth_call(ctx, m->auth, m->data);
        } else {
            ctx->in_handler = true;
            rc = m->before(ctx->req, &ctx->res, m->data);
            ctx->in_handler = false;
        }
        if (!before_verdict(ctx, rc, guard))
            return;
    }
    const fcr_route *r = ctx->route;
    if (r && r->consumes && !fcr_req_content_type_is(ctx->req, r->consumes)) {
        char detail[300];
        snprintf(detail, sizeof detail, "the request body must be %.256s", r->consumes);
        send_problem(ctx, 415, detail);
        return;
    }
    if (ctx->bad_length) {
        send_problem(ctx, 400,
                     fcr_req_role(ctx->req) == FCR_FILTER
                         ? "CONTENT_LENGTH or FCGI_DATA_LENGTH is not a decimal number of bytes"
                         : "CONTENT_LENGTH is not a decimal number of bytes");
        return;
    }
    if (ctx->too_big_chain) {
        char detail[128];
        snprintf(detail, sizeof detail, "the request body exceeds the limit of %zu bytes",
                 body_limit(ctx->app, r));
        send_problem(ctx, 413, detail);
        return;
    }
    ctx->in_handler = true;
    ctx->handler_ran = true;
    int rc = ctx->handler(ctx->req, &ctx->res, ctx->handler_data);
    ctx->in_handler = false;
    fcr__handler_verdict(ctx, rc);
}

static void defer_done(fcr__ctx *ctx, fcr_done_fn done, void *data, bool ending);

void fcr__defer_done(fcr__ctx *ctx, fcr_done_fn done, void *data, bool ending)
{
    fcr__log_saved l = fcr__log_enter(ctx);
    defer_done(ctx, done, data, ending);
    fcr__log_leave(l);
}

static void defer_done(fcr__ctx *ctx, fcr_done_fn done, void *data, bool ending)
{
    ctx->defer_pending = false;
    ctx->defer_err = 0;
    ctx->state = FCR__ST_RUNNING;
    int at = ctx->at;
    ctx->at = FCR__AT_NONE;
    ctx->in_handler = true;
    int rc = done(ctx->req, &ctx->res, data);
    ctx->in_handler = false;
    bool aborted = fcr_req_aborted(ctx->req);
    if (aborted || ending) {
        /* A handler's done may still answer later with fcr_res_send(), as its handler could. */
        if (at == FCR__AT_HANDLER && rc == FCR_ASYNC && !ctx->defer_pending && !ctx->defer_err &&
            !ctx->send_asked) {
            ctx->state = FCR__ST_ASYNC;
            return;
        }
        if (ctx->defer_pending) /* cannot happen: fcr_defer refuses then */
            ctx->defer_pending = false;
        if (aborted)
            fcr__ctx_output(ctx); /* sends nothing: releases the request */
        else
            fcr__ctx_send(ctx);
        return;
    }
    switch (at) {
    case FCR__AT_BEFORE:
    case FCR__AT_GUARD:
        if (before_verdict(ctx, rc, at == FCR__AT_GUARD))
            chain_next(ctx);
        return;
    case FCR__AT_HANDLER:
        fcr__handler_verdict(ctx, rc);
        return;
    case FCR__AT_ROLE:
        fcr__auth_role_verdict(ctx, rc);
        return;
    case FCR__AT_BODY:
        if (ctx->state == FCR__ST_RUNNING)
            ctx->state = ctx->streamed ? FCR__ST_STREAM : FCR__ST_ASYNC;
        if (fcr__body_verdict(ctx, rc) == 0)
            fcr__body_start(ctx); /* the held piece, then reading again */
        return;
    case FCR__AT_MISUSE:
    default:
        if (fcr__deferral_verdict(ctx, false, rc, FCR__AT_MISUSE, "deferred callback"))
            return;
        fcr__ctx_fail(ctx, FCR_EINVAL, "callback that deferred without its async verdict");
        fcr__ctx_send(ctx);
        return;
    }
}

/* Routes the request, once: the match (path params included, in the arena) stays in the
 * context for the rest of the pipeline. Returns 0 or a negative error (a later call tries
 * again). */
static int route_request(fcr__ctx *ctx)
{
    if (ctx->routed)
        return 0;
    unsigned mbit = method_bit(ctx->method);
    size_t cap = ctx->path_len + FCR_MAX_PATH_PARAMS + 1;
    char *scratch = fcr__arena_alloc(&ctx->arena, cap);
    if (!scratch)
        return FCR_ENOMEM;
    fcr_match *m = &ctx->match;
    int rc = fcr_router_match(ctx->app->router, mbit, ctx->path, ctx->path_len, ctx->path_flags, m,
                              scratch, cap);
    if (rc < 0)
        return rc;
    ctx->routed = true;
    ctx->route = m->status == FCR_MATCH_FOUND ? m->target : NULL;
    return 0;
}

/* True for a CORS preflight: OPTIONS with Origin and Access-Control-Request-Method. */
static bool is_preflight(const fcr__ctx *ctx)
{
    return ctx->method && strcmp(ctx->method, "OPTIONS") == 0 &&
           fcr_req_header(ctx->req, "Origin") &&
           fcr_req_header(ctx->req, "Access-Control-Request-Method");
}

/* Answers a preflight for an app with CORS, before any middleware or handler: the methods of
 * the path are what the routes registered for it (and the requested one, when a route has
 * it). */
static void preflight(fcr__ctx *ctx)
{
    ctx->preflight = true;
    unsigned allowed = ctx->match.status == FCR_MATCH_FOUND ? 0 : ctx->match.allowed;
    const char *want = fcr_req_header(ctx->req, "Access-Control-Request-Method");
    unsigned bit = fcr_method_parse(want, strlen(want));
    size_t cap = ctx->path_len + FCR_MAX_PATH_PARAMS + 1;
    char *scratch = bit ? fcr__arena_alloc(&ctx->arena, cap) : NULL;
    fcr_match m;
    if (scratch && fcr_router_match(ctx->app->router, bit, ctx->path, ctx->path_len,
                                    ctx->path_flags, &m, scratch, cap) == 0) {
        if (m.status == FCR_MATCH_FOUND)
            allowed |= bit;
        else if (m.status == FCR_MATCH_NOT_ALLOWED)
            allowed |= m.allowed;
    }
    if (!allowed) {
        send_problem(ctx, 404, "no resource matches this path");
        return;
    }
    int rc = fcr__cors_preflight(ctx, allowed);
    if (rc < 0)
        fcr__ctx_fail(ctx, rc, "CORS preflight");
    fcr__ctx_send(ctx);
}

static void run_responder(fcr__ctx *ctx, bool too_big)
{
    int rc = route_request(ctx);
    if (rc < 0) {
        fcr__ctx_fail(ctx, rc, "routing");
        fcr__ctx_send(ctx);
        return;
    }
    if (ctx->app->cors && is_preflight(ctx)) {
        preflight(ctx);
        return;
    }
    const fcr_match *m = &ctx->match;
    char allow[64];
    switch (m->status) {
    case FCR_MATCH_FOUND:
        run_chain(ctx, ctx->route->handler, ctx->route->data, too_big);
        return;
    case FCR_MATCH_NOT_ALLOWED:
        if (fcr_methods_format(m->allowed, allow, sizeof allow) < 0 ||
            fcr_res_set_header(&ctx->res, "Allow", allow) < 0) {
            fcr__ctx_fail(ctx, FCR_ENOMEM, "routing");
            fcr__ctx_send(ctx);
            return;
        }
        send_problem(ctx, 405, "the method is not allowed for this resource");
        return;
    case FCR_MATCH_OPTIONS:
        if (fcr_methods_format(m->allowed, allow, sizeof allow) < 0 ||
            fcr_res_set_header(&ctx->res, "Allow", allow) < 0) {
            fcr__ctx_fail(ctx, FCR_ENOMEM, "routing");
        } else {
            ctx->res.status = 204;
        }
        fcr__ctx_send(ctx);
        return;
    case FCR_MATCH_NOT_FOUND:
    default:
        send_problem(ctx, 404, "no resource matches this path");
        return;
    }
}

/* ---- Core callbacks ------------------------------------------------------------------- */

static int discard_input(fcr_req *req, fcr_stream stream, const void *buf, size_t len)
{
    (void)req, (void)stream, (void)buf, (void)len;
    return 0;
}

/* Declared length in `name`: 0 when absent or empty, SIZE_MAX when over SIZE_MAX. A value
 * that is not a decimal number of bytes ("-1", "abc", "1.5") sets `*malformed` and gives 0. */
static size_t declared_len(const fcr_req *req, const char *name, bool *malformed)
{
    const char *v = fcr_req_param(req, name);
    if (!v || !*v)
        return 0;
    unsigned long long n;
    int rc = fcr__parse_uint(v, SIZE_MAX, &n);
    if (rc == FCR_ETOOBIG)
        return SIZE_MAX;
    if (rc < 0) {
        *malformed = true;
        return 0;
    }
    return (size_t)n;
}

/* Answers 500 without the context that could not be made. */
static void answer_oom(fcr_req *req)
{
    static const char oom[] = "Status: 500 Internal Server Error\r\n"
                              "Content-Type: text/plain\r\nContent-Length: 0\r\n\r\n";
    fcr_log(FCR_LOG_ERROR, "request %u: out of memory", fcr_req_id(req));
    fcr_req_write(req, oom, sizeof oom - 1);
    fcr_req_finish(req, 0);
}

static void on_params(fcr_req *req, void *data)
{
    fcr_app *app = data;
    fcr_role role = fcr_req_role(req);
    if (role == FCR_AUTHORIZER)
        return;
    /* The context starts here, before the body is read: a route's own body limit is found by
     * routing the request now, and the match stays for on_request. */
    fcr__ctx *ctx = ctx_start(app, req);
    if (!ctx) {
        answer_oom(req);
        return;
    }
    if (role == FCR_RESPONDER && app->route_early)
        (void)route_request(ctx); /* on failure, run_responder routes again and reports it */
    size_t limit = body_limit(app, ctx->route);
    bool malformed = false;
    size_t declared = declared_len(req, "CONTENT_LENGTH", &malformed);
    if (role == FCR_FILTER) {
        size_t d = declared_len(req, "FCGI_DATA_LENGTH", &malformed);
        if (d > declared)
            declared = d;
    }
    /* Refused before the body is read: the input is discarded and on_request answers 400 or
     * 413 at once (after the before-middleware). */
    if (malformed && fcr_req_stream_input(req, discard_input) == 0) {
        ctx->bad_length = true;
        return;
    }
    if (declared > limit && fcr_req_stream_input(req, discard_input) == 0) {
        ctx->too_big = true;
        return;
    }
    if (role == FCR_RESPONDER && ctx->route && ctx->route->stream_body &&
        fcr_req_stream_input(req, fcr__body_chunk) == 0) {
        /* Nothing is buffered: the handler reads the body (stream.c). */
        ctx->body_stream = true;
        ctx->body_limit = limit;
        return;
    }
    fcr_req_set_max_body(req, limit);
}

/* The request's role decides what serves it. */
static void serve(fcr_app *app, fcr__ctx *ctx, bool too_big)
{
    switch (fcr_req_role(ctx->req)) {
    case FCR_AUTHORIZER:
        if (app->authz) {
            fcr__auth_role(ctx);
            return;
        }
        break;
    case FCR_FILTER:
        if (app->filter) {
            run_chain(ctx, app->filter, app->filter_data, too_big);
            return;
        }
        break;
    case FCR_RESPONDER:
        run_responder(ctx, too_big);
        return;
    }
    send_problem(ctx, 501, "this role is not served");
}

static void on_request(fcr_req *req, void *data)
{
    fcr_app *app = data;
    fcr__ctx *ctx = fcr__ctx_of(req);
    if (fcr_req_aborted(req)) {
        if (ctx) {
            fcr__req_set_fwdata(req, NULL, NULL);
            fcr__ctx_free(ctx);
        }
        fcr_req_finish(req, 0);
        return;
    }
    /* An AUTHORIZER request has no context yet (on_params leaves it alone). */
    if (!ctx && !(ctx = ctx_start(app, req))) {
        answer_oom(req);
        return;
    }
    ctx->start = fcr__now();
    fcr__log_saved l = fcr__log_enter(ctx);
    serve(app, ctx, ctx->too_big || fcr_req_input_error(req) == FCR_ETOOBIG);
    fcr__log_leave(l);
}

fcr_server *fcr_app_server_new(fcr_app *app, struct ev_loop *loop, const fcr_server_config *base,
                               int *err)
{
    if (!app || app->parent) {
        if (err)
            *err = FCR_EINVAL;
        return NULL;
    }
    fcr_server_config cfg;
    if (base)
        cfg = *base;
    else
        fcr_server_config_init(&cfg);
    cfg.roles = FCR_ROLE_BIT(FCR_RESPONDER);
    if (app->authz)
        cfg.roles |= FCR_ROLE_BIT(FCR_AUTHORIZER);
    if (app->filter)
        cfg.roles |= FCR_ROLE_BIT(FCR_FILTER);
    cfg.on_params = on_params;
    cfg.on_request = on_request;
    cfg.data = app;
    cfg.limits.max_body = body_limit(app, NULL);
    fcr_server *srv = fcr_server_new(loop, &cfg, err);
    if (srv)
        fcr__app_install_worker_hooks(app, srv);
    return srv;
}

/* ---- Responses: sending --------------------------------------------------------------- */

int fcr_res_send(fcr_res *res)
{
    fcr__ctx *ctx = res ? res->ctx : NULL;
    if (!ctx || ctx->magic != FCR__CTX_MAGIC || ctx->sent || ctx->send_asked)
        return FCR_EINVAL;
    if (ctx->in_handler) {
        ctx->send_asked = true;
        return 0;
    }
    if (ctx->state != FCR__ST_ASYNC)
        return FCR_EINVAL;
    bool aborted = fcr_req_aborted(ctx->req);
    fcr__log_saved l = fcr__log_enter(ctx);
    fcr__ctx_send(ctx); /* frees ctx once the output is queued */
    fcr__log_leave(l);
    return aborted ? FCR_ECLOSED : 0;
}
