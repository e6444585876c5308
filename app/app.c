/* The app object, registration, and the request pipeline: routing, before-middleware and
 * authorizers, media type and body limit checks, the handler, after-middleware. */
#include "app_int.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Registration order of middleware across all apps and routes of the process. */
static unsigned long next_seq = 1;

/* Userdata of a request refused in on_params for its declared body size. */
static fcr_ctx too_big_mark;

/* ---- Registration --------------------------------------------------------------------- */

static void record_error(fcr_app *app, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void record_error(fcr_app *app, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fcr_log(FCR_LOG_ERROR, "%s", msg);
    if (!app->error)
        app->error = strdup(msg);
}

fcr_app *fcr_app_new(void)
{
    fcr_app *app = calloc(1, sizeof *app);
    if (!app)
        return NULL;
    app->router = fcr_router_new();
    if (!app->router) {
        free(app);
        return NULL;
    }
    return app;
}

static void route_free(fcr_route *r)
{
    free(r->before.v);
    free(r->after.v);
    free(r->consumes);
    free(r);
}

void fcr_app_free(fcr_app *app)
{
    if (!app)
        return;
    for (size_t i = 0; i < app->nmounts; i++)
        fcr_app_free(app->mounts[i]);
    free(app->mounts);
    fcr_route *r = app->routes;
    while (r) {
        fcr_route *next = r->next;
        route_free(r);
        r = next;
    }
    if (!app->parent)
        fcr_router_free(app->router);
    while (app->spare) {
        fcr_ctx *c = app->spare;
        app->spare = c->next_spare;
        free(c);
    }
    free(app->before.v);
    free(app->after.v);
    free(app->prefix);
    free(app->error);
    free(app);
}

const char *fcr_app_error(const fcr_app *app)
{
    if (!app)
        return NULL;
    if (app->error)
        return app->error;
    for (size_t i = 0; i < app->nmounts; i++) {
        const char *e = fcr_app_error(app->mounts[i]);
        if (e)
            return e;
    }
    return NULL;
}

fcr_route *fcr_app_route(fcr_app *app, unsigned methods, const char *pattern, fcr_handler handler,
                         void *data)
{
    if (!app)
        return NULL;
    if (!pattern || !handler || (methods & FCR_ANY_METHOD) == 0 || (methods & ~FCR_ANY_METHOD)) {
        record_error(app, "route %s: invalid arguments", pattern ? pattern : "(null)");
        return NULL;
    }
    fcr_route *r = calloc(1, sizeof *r);
    if (!r) {
        record_error(app, "route %s: out of memory", pattern);
        return NULL;
    }
    r->app = app;
    r->handler = handler;
    r->data = data;
    fcr_router_error err = {0};
    int rc = fcr_router_add(app->router, methods, pattern, r, &err);
    if (rc < 0) {
        if (rc == FCR_EPARSE)
            record_error(app, "route %s: %s at offset %zu", pattern, err.message, err.offset);
        else
            record_error(app, "route %s: %s", pattern, fcr_strerror(rc));
        free(r);
        return NULL;
    }
    if (app->routes_tail)
        app->routes_tail->next = r;
    else
        app->routes = r;
    app->routes_tail = r;
    return r;
}

/* Tells `app` and the apps it is mounted in that requests must be routed to find their body
 * limit. */
static void mark_limits(fcr_app *app)
{
    for (fcr_app *a = app; a; a = a->parent)
        a->limits_below = true;
}

int fcr_app_mount(fcr_app *app, const char *prefix, fcr_app *sub)
{
    if (!sub)
        return FCR_EINVAL;
    /* Owned elsewhere: freeing it would free a live app. */
    if (sub->parent)
        return FCR_EEXIST;
    for (fcr_app *a = app; a; a = a->parent) {
        if (a == sub)
            return FCR_EEXIST; /* `app` itself, or a cycle: sub holds app */
    }
    unsigned level = 0;
    for (fcr_app *a = app; a && a->parent; a = a->parent)
        level++;
    int rc = FCR_EINVAL;
    if (!app || level + 1 + sub->depth > FCR_MAX_MOUNT_DEPTH - 1)
        goto fail;
    rc = FCR_ENOMEM;
    /* An array of pointers: sizeof *m is the size of a pointer, as meant. */
    // NOLINTNEXTLINE(bugprone-sizeof-expression)
    fcr_app **m = realloc(app->mounts, (app->nmounts + 1) * sizeof *m);
    if (!m)
        goto fail;
    app->mounts = m;
    /* The parent's router owns sub's router from here on, also when the mount fails. */
    sub->parent = app;
    rc = fcr_router_mount(app->router, prefix, sub->router);
    if (rc < 0) {
        record_error(app, "mount %s: %s", prefix ? prefix : "(null)", fcr_strerror(rc));
        fcr_app_free(sub);
        return rc;
    }
    app->mounts[app->nmounts++] = sub;
    if (sub->limits_below || sub->max_body)
        mark_limits(app);
    for (fcr_app *a = app, *c = sub; a; c = a, a = a->parent) {
        if (a->depth < c->depth + 1)
            a->depth = c->depth + 1;
    }
    return 0;
fail:
    if (app)
        record_error(app, "mount %s: %s", prefix ? prefix : "(null)", fcr_strerror(rc));
    fcr_app_free(sub);
    return rc;
}

static int mw_push(fcr_mw_list *l, int kind, fcr_before_mw before, fcr_after_mw after,
                   fcr_authorizer auth, void *data)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 4;
        fcr_mw *v = realloc(l->v, cap * sizeof *v);
        if (!v)
            return FCR_ENOMEM;
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = (fcr_mw){.kind = kind, .seq = next_seq++, .before = before, .after = after, .auth = auth, .data = data};
    return 0;
}

int fcr_app_before(fcr_app *app, fcr_before_mw fn, void *data)
{
    if (!app || !fn)
        return FCR_EINVAL;
    return mw_push(&app->before, MW_BEFORE, fn, NULL, NULL, data);
}

int fcr_app_after(fcr_app *app, fcr_after_mw fn, void *data)
{
    if (!app || !fn)
        return FCR_EINVAL;
    return mw_push(&app->after, MW_AFTER, NULL, fn, NULL, data);
}

int fcr_app_guard(fcr_app *app, fcr_authorizer fn, void *data)
{
    if (!app || !fn)
        return FCR_EINVAL;
    return mw_push(&app->before, MW_GUARD, NULL, NULL, fn, data);
}

int fcr_route_before(fcr_route *route, fcr_before_mw fn, void *data)
{
    if (!route || !fn)
        return FCR_EINVAL;
    return mw_push(&route->before, MW_BEFORE, fn, NULL, NULL, data);
}

int fcr_route_after(fcr_route *route, fcr_after_mw fn, void *data)
{
    if (!route || !fn)
        return FCR_EINVAL;
    return mw_push(&route->after, MW_AFTER, NULL, fn, NULL, data);
}

int fcr_route_guard(fcr_route *route, fcr_authorizer fn, void *data)
{
    if (!route || !fn)
        return FCR_EINVAL;
    return mw_push(&route->before, MW_GUARD, NULL, NULL, fn, data);
}

int fcr_route_set_max_body(fcr_route *route, size_t max)
{
    if (!route || max == 0)
        return FCR_EINVAL;
    route->max_body = max;
    mark_limits(route->app);
    return 0;
}

int fcr_route_consumes(fcr_route *route, const char *media_type)
{
    if (!route || !media_type || !*media_type)
        return FCR_EINVAL;
    char *s = strdup(media_type);
    if (!s)
        return FCR_ENOMEM;
    free(route->consumes);
    route->consumes = s;
    return 0;
}

int fcr_app_set_authorizer(fcr_app *app, fcr_authorizer fn, void *data)
{
    if (!app || !fn)
        return FCR_EINVAL;
    app->authz = fn;
    app->authz_data = data;
    return 0;
}

int fcr_app_set_filter(fcr_app *app, fcr_handler fn, void *data)
{
    if (!app || !fn)
        return FCR_EINVAL;
    app->filter = fn;
    app->filter_data = data;
    return 0;
}

int fcr_app_set_max_body(fcr_app *app, size_t max)
{
    if (!app || max == 0)
        return FCR_EINVAL;
    app->max_body = max;
    if (app->parent)
        mark_limits(app->parent);
    return 0;
}

int fcr_app_set_prefix(fcr_app *app, const char *prefix)
{
    if (!app)
        return FCR_EINVAL;
    if (prefix && *prefix && *prefix != '/')
        return FCR_EINVAL;
    char *p = NULL;
    size_t len = prefix ? strlen(prefix) : 0;
    while (len > 0 && prefix[len - 1] == '/')
        len--; /* "/app/" strips like "/app"; "/" strips nothing */
    if (len > 0) {
        p = strndup(prefix, len);
        if (!p)
            return FCR_ENOMEM;
    }
    free(app->prefix);
    app->prefix = p;
    app->prefix_len = len;
    return 0;
}

void fcr_app_set_route_on_request_uri(fcr_app *app, bool on)
{
    if (app)
        app->route_on_uri = on;
}

void fcr_app_set_access_log(fcr_app *app, bool on)
{
    if (app)
        app->access_log = on;
}

double fcr__now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

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

/* Computes the routing path into memory from `arena` (when NULL: into the `scap` bytes at
 * `sbuf` when it fits, else malloc): `*full` gets the buffer (to free when it is not `sbuf`,
 * in the malloc case), `*path`/`*plen` the routing path, `*base_len` the length of the
 * stripped prefix, `*flags` the fcr_router_match() flags for that path. Path params are
 * decoded once: SCRIPT_NAME + PATH_INFO come decoded by the web server (params verbatim),
 * REQUEST_URI comes as the client sent it (FCR_MATCH_DECODE). Returns 0 or FCR_ENOMEM. */
static int routing_path(const fcr_app *app, const fcr_req *req, fcr_arena *arena, char *sbuf,
                        size_t scap, char **full, const char **path, size_t *plen, size_t *base_len,
                        unsigned *flags)
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
    char *buf = arena ? fcr__arena_alloc(arena, len + 1) : len < scap ? sbuf : malloc(len + 1);
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

/* ---- Context -------------------------------------------------------------------------- */

fcr_ctx *fcr__ctx(const fcr_req *req)
{
    if (!req)
        return NULL;
    fcr_ctx *c = fcr__req_fwdata(req);
    if (!c || c == &too_big_mark || c->magic != FCR_CTX_MAGIC)
        return NULL;
    return c;
}

static fcr_ctx *ctx_new(fcr_app *app, fcr_req *req)
{
    fcr_ctx *ctx = app->spare;
    if (ctx) {
        app->spare = ctx->next_spare;
        app->nspare--;
    } else if (!(ctx = malloc(sizeof *ctx))) {
        return NULL;
    }
    /* Everything but the arena's block starts zeroed. */
    memset(ctx, 0, offsetof(fcr_ctx, arena_mem));
    fcr__arena_init(&ctx->arena, ctx->arena_mem, sizeof ctx->arena_mem);
    ctx->magic = FCR_CTX_MAGIC;
    ctx->start = fcr__now();
    ctx->app = app;
    ctx->req = req;
    ctx->loop = fcr_server_loop(fcr_req_server(req));
    fcr__res_init(&ctx->res, ctx);
    ctx->method = fcr_req_param(req, "REQUEST_METHOD");
    ctx->no_body = ctx->method && strcmp(ctx->method, "HEAD") == 0;
    char *full;
    const char *path;
    size_t plen, base_len;
    if (routing_path(app, req, &ctx->arena, NULL, 0, &full, &path, &plen, &base_len,
                     &ctx->path_flags) < 0) {
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
    fcr__req_set_fwdata(req, ctx);
    return ctx;
}

/* ---- Middleware iteration: the lists that apply, merged by registration order ---------- */

typedef struct mw_iter {
    const fcr_mw_list *l[FCR_MAX_MOUNT_DEPTH + 2];
    size_t pos[FCR_MAX_MOUNT_DEPTH + 2];
    size_t n;
} mw_iter;

static void iter_init(mw_iter *it, const fcr_ctx *ctx, bool after)
{
    it->n = 0;
    const fcr_route *r = ctx->route;
    if (r) {
        it->l[it->n++] = after ? &r->after : &r->before;
        for (const fcr_app *a = r->app; a && it->n < FCR_MAX_MOUNT_DEPTH + 2; a = a->parent) {
            it->l[it->n++] = after ? &a->after : &a->before;
            if (a == ctx->app)
                break;
        }
    } else {
        it->l[it->n++] = after ? &ctx->app->after : &ctx->app->before;
    }
    memset(it->pos, 0, sizeof it->pos);
}

static const fcr_mw *iter_next(mw_iter *it)
{
    size_t best = SIZE_MAX;
    for (size_t i = 0; i < it->n; i++) {
        if (it->pos[i] < it->l[i]->n &&
            (best == SIZE_MAX || it->l[i]->v[it->pos[i]].seq < it->l[best]->v[it->pos[best]].seq))
            best = i;
    }
    if (best == SIZE_MAX)
        return NULL;
    return &it->l[best]->v[it->pos[best]++];
}

/* ---- Pipeline ------------------------------------------------------------------------- */

/* Logs a failure to the request's STDERR stream and the app log, and replaces the response
 * with 500 problem+json. */
static void set_failure(fcr_ctx *ctx, int rc, const char *what)
{
    char req[600], line[1024];
    fcr__describe(ctx, req, sizeof req);
    int n = snprintf(line, sizeof line, "%s: %s failed: %s (%s)\n", req, what, fcr_err_name(rc),
                     fcr_strerror(rc));
    if (n > 0) {
        size_t len = (size_t)n < sizeof line ? (size_t)n : sizeof line - 1;
        fcr_req_write_stderr(ctx->req, line, len);
        fcr_log(FCR_LOG_ERROR, "%.*s", (int)len - 1, line);
    }
    fcr__res_reset(&ctx->res);
    fcr__res_set_status_problem(&ctx->res, 500, "the request could not be completed");
}

void fcr__ctx_send(fcr_ctx *ctx)
{
    if (ctx->sent)
        return;
    ctx->sent = true;
    if (ctx->req && fcr_req_role(ctx->req) != FCR_AUTHORIZER) {
        mw_iter it;
        iter_init(&it, ctx, true);
        const fcr_mw *m;
        while ((m = iter_next(&it))) {
            ctx->in_handler = true;
            int rc = m->after(ctx->req, &ctx->res, m->data);
            ctx->in_handler = false;
            if (rc < 0) {
                set_failure(ctx, rc, "after-middleware");
                break;
            }
        }
    }
    fcr__ctx_output(ctx);
}

static void send_problem(fcr_ctx *ctx, int status, const char *detail)
{
    int rc = fcr__res_set_status_problem(&ctx->res, status, detail);
    if (rc < 0)
        set_failure(ctx, rc, "problem response");
    fcr__ctx_send(ctx);
}

static int run_guard(fcr_ctx *ctx, fcr_authorizer fn, void *data)
{
    fcr_auth auth = {.ctx = ctx};
    ctx->in_handler = true;
    int rc = fn(ctx->req, &ctx->res, &auth, data);
    ctx->in_handler = false;
    if (rc == FCR_ALLOW) {
        for (size_t i = 0; i < auth.vars.n; i++) {
            int e = fcr_req_set_var(ctx->req, auth.vars.v[i].name, auth.vars.v[i].value);
            if (e < 0)
                return e;
        }
        if (auth.user)
            ctx->user = auth.user;
        return FCR_CONTINUE;
    }
    if (rc == FCR_DENY) {
        if (ctx->res.status < 400) {
            int e = fcr__res_set_status_problem(&ctx->res, 403, "access denied");
            if (e < 0)
                return e;
        }
        return FCR_STOP;
    }
    return rc < 0 ? rc : FCR_EINVAL;
}

/* Before-middleware, media type, body limit, then `handler`. */
static void run_chain(fcr_ctx *ctx, fcr_handler handler, void *data, bool too_big)
{
    mw_iter it;
    iter_init(&it, ctx, false);
    const fcr_mw *m;
    while ((m = iter_next(&it))) {
        int rc;
        if (m->kind == MW_GUARD) {
            rc = run_guard(ctx, m->auth, m->data);
        } else {
            ctx->in_handler = true;
            rc = m->before(ctx->req, &ctx->res, m->data);
            ctx->in_handler = false;
        }
        if (rc < 0 || (rc != FCR_CONTINUE && rc != FCR_STOP)) {
            set_failure(ctx, rc < 0 ? rc : FCR_EINVAL, "before-middleware");
            fcr__ctx_send(ctx);
            return;
        }
        if (rc == FCR_STOP || ctx->send_asked) {
            fcr__ctx_send(ctx);
            return;
        }
    }
    const fcr_route *r = ctx->route;
    if (r && r->consumes && !fcr_req_content_type_is(ctx->req, r->consumes)) {
        char detail[300];
        snprintf(detail, sizeof detail, "the request body must be %.256s", r->consumes);
        send_problem(ctx, 415, detail);
        return;
    }
    if (too_big) {
        char detail[128];
        snprintf(detail, sizeof detail, "the request body exceeds the limit of %zu bytes",
                 body_limit(ctx->app, r));
        send_problem(ctx, 413, detail);
        return;
    }
    ctx->in_handler = true;
    int rc = handler(ctx->req, &ctx->res, data);
    ctx->in_handler = false;
    if (rc < 0 || (rc != 0 && rc != FCR_ASYNC)) {
        set_failure(ctx, rc < 0 ? rc : FCR_EINVAL, "handler");
        fcr__ctx_send(ctx);
    } else if (rc == 0 || ctx->send_asked) {
        fcr__ctx_send(ctx);
    } else {
        ctx->state = ST_ASYNC;
    }
}

static void run_responder(fcr_ctx *ctx, bool too_big)
{
    unsigned mbit = method_bit(ctx->method);
    size_t cap = ctx->path_len + FCR_MAX_PATH_PARAMS + 1;
    char *scratch = fcr__arena_alloc(&ctx->arena, cap);
    if (!scratch) {
        set_failure(ctx, FCR_ENOMEM, "routing");
        fcr__ctx_send(ctx);
        return;
    }
    fcr_match *m = &ctx->match;
    int rc = fcr_router_match(ctx->app->router, mbit, ctx->path, ctx->path_len, ctx->path_flags, m,
                              scratch, cap);
    if (rc < 0) {
        set_failure(ctx, rc, "routing");
        fcr__ctx_send(ctx);
        return;
    }
    char allow[64];
    switch (m->status) {
    case FCR_MATCH_FOUND:
        ctx->route = m->target;
        run_chain(ctx, ctx->route->handler, ctx->route->data, too_big);
        return;
    case FCR_MATCH_NOT_ALLOWED:
        if (fcr_methods_format(m->allowed, allow, sizeof allow) < 0 ||
            fcr_res_set_header(&ctx->res, "Allow", allow) < 0) {
            set_failure(ctx, FCR_ENOMEM, "routing");
            fcr__ctx_send(ctx);
            return;
        }
        send_problem(ctx, 405, "the method is not allowed for this resource");
        return;
    case FCR_MATCH_OPTIONS:
        if (fcr_methods_format(m->allowed, allow, sizeof allow) < 0 ||
            fcr_res_set_header(&ctx->res, "Allow", allow) < 0) {
            set_failure(ctx, FCR_ENOMEM, "routing");
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

static void run_authorizer_role(fcr_ctx *ctx)
{
    fcr_res *res = &ctx->res;
    fcr_auth auth = {.ctx = ctx};
    ctx->in_handler = true;
    int rc = ctx->app->authz(ctx->req, res, &auth, ctx->app->authz_data);
    ctx->in_handler = false;
    if (rc == FCR_ALLOW) {
        fcr__res_reset(res);
        for (size_t i = 0; i < auth.vars.n && rc == 0; i++) {
            char name[300];
            snprintf(name, sizeof name, "Variable-%s", auth.vars.v[i].name);
            rc = fcr_res_add_header(res, name, auth.vars.v[i].value);
        }
        if (rc < 0)
            set_failure(ctx, rc, "authorizer");
    } else if (rc == FCR_DENY) {
        if (res->status < 400 && (rc = fcr__res_set_status_problem(res, 403, "access denied")) < 0)
            set_failure(ctx, rc, "authorizer");
    } else {
        set_failure(ctx, rc < 0 ? rc : FCR_EINVAL, "authorizer");
    }
    fcr__ctx_send(ctx);
}

/* ---- Core callbacks ------------------------------------------------------------------- */

static int discard_input(fcr_req *req, fcr_stream stream, const void *buf, size_t len)
{
    (void)req, (void)stream, (void)buf, (void)len;
    return 0;
}

/* Declared length in `name`: 0 when absent or empty, SIZE_MAX when malformed or huge. */
static size_t declared_len(const fcr_req *req, const char *name)
{
    const char *v = fcr_req_param(req, name);
    if (!v || !*v)
        return 0;
    unsigned long long n;
    if (fcr__parse_uint(v, SIZE_MAX, &n) < 0)
        return SIZE_MAX;
    return (size_t)n;
}

static void on_params(fcr_req *req, void *data)
{
    fcr_app *app = data;
    fcr_role role = fcr_req_role(req);
    if (role == FCR_AUTHORIZER)
        return;
    fcr_route *route = NULL;
    if (role == FCR_RESPONDER && app->limits_below) {
        /* Short paths need no allocation. */
        char sbuf[256], sscratch[sizeof sbuf + FCR_MAX_PATH_PARAMS + 1];
        char *full = NULL;
        const char *path;
        size_t plen, base_len;
        unsigned flags;
        if (routing_path(app, req, NULL, sbuf, sizeof sbuf, &full, &path, &plen, &base_len,
                         &flags) == 0) {
            size_t cap = plen + FCR_MAX_PATH_PARAMS + 1;
            char *scratch = cap <= sizeof sscratch ? sscratch : malloc(cap);
            fcr_match m;
            if (scratch &&
                fcr_router_match(app->router, method_bit(fcr_req_param(req, "REQUEST_METHOD")),
                                 path, plen, flags, &m, scratch, cap) == 0 &&
                m.status == FCR_MATCH_FOUND)
                route = m.target;
            if (scratch != sscratch)
                free(scratch);
        }
        if (full != sbuf)
            free(full);
    }
    size_t limit = body_limit(app, route);
    size_t declared = declared_len(req, "CONTENT_LENGTH");
    if (role == FCR_FILTER) {
        size_t d = declared_len(req, "FCGI_DATA_LENGTH");
        if (d > declared)
            declared = d;
    }
    /* Refused before the body is read: the input is discarded and on_request answers 413 at
     * once (after the before-middleware). */
    if (declared > limit && fcr_req_stream_input(req, discard_input) == 0) {
        fcr__req_set_fwdata(req, &too_big_mark);
        return;
    }
    fcr_req_set_max_body(req, limit);
}

static void on_request(fcr_req *req, void *data)
{
    fcr_app *app = data;
    bool too_big =
        fcr__req_fwdata(req) == &too_big_mark || fcr_req_input_error(req) == FCR_ETOOBIG;
    fcr__req_set_fwdata(req, NULL);
    if (fcr_req_aborted(req)) {
        fcr_req_finish(req, 0);
        return;
    }
    fcr_ctx *ctx = ctx_new(app, req);
    if (!ctx) {
        static const char oom[] = "Status: 500 Internal Server Error\r\n"
                                  "Content-Type: text/plain\r\nContent-Length: 0\r\n\r\n";
        fcr_log(FCR_LOG_ERROR, "request %u: out of memory", fcr_req_id(req));
        fcr_req_write(req, oom, sizeof oom - 1);
        fcr_req_finish(req, 0);
        return;
    }
    switch (fcr_req_role(req)) {
    case FCR_AUTHORIZER:
        if (app->authz) {
            run_authorizer_role(ctx);
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
    return fcr_server_new(loop, &cfg, err);
}

/* ---- Responses: sending --------------------------------------------------------------- */

int fcr_res_send(fcr_res *res)
{
    fcr_ctx *ctx = res ? res->ctx : NULL;
    if (!ctx || ctx->magic != FCR_CTX_MAGIC || ctx->sent || ctx->send_asked)
        return FCR_EINVAL;
    if (ctx->in_handler) {
        ctx->send_asked = true;
        return 0;
    }
    if (ctx->state != ST_ASYNC)
        return FCR_EINVAL;
    bool aborted = fcr_req_aborted(ctx->req);
    fcr__ctx_send(ctx); /* frees ctx once the output is queued */
    return aborted ? FCR_ECLOSED : 0;
}

/* ---- Authorizer results --------------------------------------------------------------- */

static bool is_var_name(const char *s)
{
    if (!s || !*s || strlen(s) > 256)
        return false;
    for (; *s; s++) {
        char c = *s;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return false;
    }
    return true;
}

int fcr_auth_set_var(fcr_auth *auth, const char *name, const char *value)
{
    if (!auth || !is_var_name(name) || !fcr__is_header_value(value))
        return FCR_EINVAL;
    fcr_arena *a = &auth->ctx->arena;
    fcr_kv_list *l = &auth->vars;
    for (size_t i = 0; i < l->n; i++) {
        if (strcmp(l->v[i].name, name) == 0) {
            const char *v = fcr__arena_strndup(a, value, strlen(value));
            if (!v)
                return FCR_ENOMEM;
            l->v[i].value = v;
            return 0;
        }
    }
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 4;
        fcr_kv *v = fcr__arena_alloc(a, cap * sizeof *v);
        if (!v)
            return FCR_ENOMEM;
        if (l->n)
            memcpy(v, l->v, l->n * sizeof *v);
        l->v = v;
        l->cap = cap;
    }
    const char *n = fcr__arena_strndup(a, name, strlen(name));
    const char *v = fcr__arena_strndup(a, value, strlen(value));
    if (!n || !v)
        return FCR_ENOMEM;
    l->v[l->n++] = (fcr_kv){n, v};
    return 0;
}

int fcr_auth_set_user(fcr_auth *auth, const char *var, const char *user)
{
    int rc = fcr_auth_set_var(auth, var, user);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < auth->vars.n; i++) {
        if (strcmp(auth->vars.v[i].name, var) == 0)
            auth->user = auth->vars.v[i].value;
    }
    return 0;
}
