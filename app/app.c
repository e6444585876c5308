/* The app object and its registration: routes, mounts, middleware lists and settings. */
#include "app_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Registration order of middleware across all apps and routes of the process. */
static unsigned long next_seq = 1;

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
    fcr__vec_free(&r->before);
    fcr__vec_free(&r->after);
    free(r->consumes);
    free(r);
}

void fcr_app_free(fcr_app *app)
{
    if (!app)
        return;
    /* First: the remaining done functions still use the routes and the context spares. */
    fcr__pool_free(app);
    fcr_app **mounts = app->mounts.v;
    for (size_t i = 0; i < app->mounts.n; i++)
        fcr_app_free(mounts[i]);
    fcr__vec_free(&app->mounts);
    fcr_route *r = app->routes;
    while (r) {
        fcr_route *next = r->next;
        route_free(r);
        r = next;
    }
    if (!app->parent)
        fcr_router_free(app->router);
    while (app->spare) {
        fcr__ctx *c = app->spare;
        app->spare = c->next_spare;
        free(c);
    }
    fcr__bodies_free(app);
    fcr__vec_free(&app->before);
    fcr__vec_free(&app->after);
    fcr__vec_free(&app->worker_start);
    fcr__vec_free(&app->worker_stop);
    free(app->prefix);
    free(app->error);
    fcr_cors_free(app->cors);
    fcr__run_free(app->run);
    free(app);
}

const char *fcr_app_error(const fcr_app *app)
{
    if (!app)
        return NULL;
    if (app->error)
        return app->error;
    fcr_app *const *mounts = app->mounts.v;
    for (size_t i = 0; i < app->mounts.n; i++) {
        const char *e = fcr_app_error(mounts[i]);
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
        a->route_early = true;
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
    if (!app || level + 1 + sub->depth > FCR__MAX_MOUNT_DEPTH - 1)
        goto fail;
    rc = fcr__vec_reserve(&app->mounts, NULL, sizeof(fcr_app *), app->mounts.n + 1);
    if (rc < 0)
        goto fail;
    /* The parent's router owns sub's router from here on, also when the mount fails. */
    sub->parent = app;
    rc = fcr_router_mount(app->router, prefix, sub->router);
    if (rc < 0) {
        record_error(app, "mount %s: %s", prefix ? prefix : "(null)", fcr_strerror(rc));
        fcr_app_free(sub);
        return rc;
    }
    ((fcr_app **)app->mounts.v)[app->mounts.n++] = sub;
    if (sub->route_early || sub->max_body)
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

static int mw_push(fcr__vec *l, int kind, fcr_before_mw before, fcr_after_mw after,
                   fcr_authorizer auth, void *data)
{
    fcr__mw *m = fcr__vec_push(l, NULL, sizeof *m);
    if (!m)
        return FCR_ENOMEM;
    *m = (fcr__mw){.kind = kind,
                   .seq = next_seq++,
                   .before = before,
                   .after = after,
                   .auth = auth,
                   .data = data};
    return 0;
}

int fcr_app_before(fcr_app *app, fcr_before_mw fn, void *data)
{
    if (!app || !fn)
        return FCR_EINVAL;
    return mw_push(&app->before, FCR__MW_BEFORE, fn, NULL, NULL, data);
}

int fcr_app_after(fcr_app *app, fcr_after_mw fn, void *data)
{
    if (!app || !fn)
        return FCR_EINVAL;
    return mw_push(&app->after, FCR__MW_AFTER, NULL, fn, NULL, data);
}

int fcr_app_guard(fcr_app *app, fcr_authorizer fn, void *data)
{
    if (!app || !fn)
        return FCR_EINVAL;
    return mw_push(&app->before, FCR__MW_GUARD, NULL, NULL, fn, data);
}

int fcr_route_before(fcr_route *route, fcr_before_mw fn, void *data)
{
    if (!route || !fn)
        return FCR_EINVAL;
    return mw_push(&route->before, FCR__MW_BEFORE, fn, NULL, NULL, data);
}

int fcr_route_after(fcr_route *route, fcr_after_mw fn, void *data)
{
    if (!route || !fn)
        return FCR_EINVAL;
    return mw_push(&route->after, FCR__MW_AFTER, NULL, fn, NULL, data);
}

int fcr_route_guard(fcr_route *route, fcr_authorizer fn, void *data)
{
    if (!route || !fn)
        return FCR_EINVAL;
    return mw_push(&route->before, FCR__MW_GUARD, NULL, NULL, fn, data);
}

int fcr_route_set_max_body(fcr_route *route, size_t max)
{
    if (!route || max == 0)
        return FCR_EINVAL;
    route->max_body = max;
    mark_limits(route->app);
    return 0;
}

int fcr_route_stream_body(fcr_route *route)
{
    if (!route)
        return FCR_EINVAL;
    route->stream_body = true;
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

int fcr_app_set_max_output_memory(fcr_app *app, size_t max)
{
    if (!app || max == 0)
        return FCR_EINVAL;
    app->max_output_memory = max;
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

/* ---- Worker hooks --------------------------------------------------------------------- */

int fcr_app_on_worker_start(fcr_app *app, int (*fn)(fcr_app *app, struct ev_loop *loop, void *data),
                            void *data)
{
    if (!app || !fn)
        return FCR_EINVAL;
    fcr__hook *h = fcr__vec_push(&app->worker_start, NULL, sizeof *h);
    if (!h)
        return FCR_ENOMEM;
    *h = (fcr__hook){.start = fn, .data = data};
    return 0;
}

int fcr_app_on_worker_stop(fcr_app *app, void (*fn)(fcr_app *app, struct ev_loop *loop, void *data),
                           void *data)
{
    if (!app || !fn)
        return FCR_EINVAL;
    fcr__hook *h = fcr__vec_push(&app->worker_stop, NULL, sizeof *h);
    if (!h)
        return FCR_ENOMEM;
    *h = (fcr__hook){.stop = fn, .data = data};
    return 0;
}

/* The stop hooks, last registered first. */
static void run_stop_hooks(fcr_app *app, struct ev_loop *loop)
{
    const fcr__hook *h = app->worker_stop.v;
    for (size_t i = app->worker_stop.n; i-- > 0;)
        h[i].stop(app, loop, h[i].data);
}

static int worker_start(fcr_server *srv, void *data)
{
    fcr_app *app = data;
    struct ev_loop *loop = fcr_server_loop(srv);
    const fcr__hook *h = app->worker_start.v;
    for (size_t i = 0; i < app->worker_start.n; i++) {
        int rc = h[i].start(app, loop, h[i].data);
        if (rc < 0) {
            fcr_log(FCR_LOG_ERROR, "worker start hook %zu of %zu failed: %s", i + 1,
                    app->worker_start.n, fcr_err_name(rc));
            /* What the hooks before it opened is closed again. */
            run_stop_hooks(app, loop);
            return rc;
        }
    }
    return 0;
}

static void worker_stop(fcr_server *srv, void *data)
{
    run_stop_hooks(data, fcr_server_loop(srv));
}

void fcr__app_install_worker_hooks(fcr_app *app, fcr_server *srv)
{
    if (app->worker_start.n || app->worker_stop.n)
        fcr_server_on_worker(srv, worker_start, worker_stop, app);
}
