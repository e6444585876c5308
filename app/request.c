/* The request API: method, paths, path params, query, headers, cookies, forms, JSON bodies,
 * remote address, user and variables, FILTER data, per-request memory. */
#include "app_int.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* ---- Numbers -------------------------------------------------------------------------- */

int fcr__parse_size(const char *s, size_t *out)
{
    if (!s || *s < '0' || *s > '9')
        return FCR_EINVAL;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno)
        return FCR_EINVAL;
    unsigned shift = 0;
    if (*end) {
        switch (*end) {
        case 'k':
        case 'K':
            shift = 10;
            break;
        case 'm':
        case 'M':
            shift = 20;
            break;
        case 'g':
        case 'G':
            shift = 30;
            break;
        default:
            return FCR_EINVAL;
        }
        if (end[1])
            return FCR_EINVAL;
    }
    if (v > (unsigned long long)(SIZE_MAX >> shift))
        return FCR_EINVAL;
    *out = (size_t)(v << shift);
    return 0;
}

/* ---- Basics --------------------------------------------------------------------------- */

const char *fcr_req_path(const fcr_req *req)
{
    fcr__ctx *ctx = fcr__ctx_of(req);
    return ctx ? ctx->path : NULL;
}

const char *fcr_req_base_path(const fcr_req *req)
{
    fcr__ctx *ctx = fcr__ctx_of(req);
    return ctx ? ctx->base : NULL;
}

const char *fcr_req_path_param(const fcr_req *req, const char *name)
{
    fcr__ctx *ctx = fcr__ctx_of(req);
    if (!ctx || !ctx->route || !name)
        return NULL;
    return fcr_match_param(&ctx->match, name);
}

void *fcr_req_alloc(fcr_req *req, size_t size)
{
    fcr__ctx *ctx = fcr__ctx_of(req);
    return ctx ? fcr__arena_alloc(&ctx->arena, size) : NULL;
}

char *fcr_req_strdup(fcr_req *req, const char *s)
{
    fcr__ctx *ctx = fcr__ctx_of(req);
    return ctx && s ? fcr__arena_strndup(&ctx->arena, s, strlen(s)) : NULL;
}

fcr_app *fcr_req_app(const fcr_req *req)
{
    fcr__ctx *ctx = fcr__ctx_of(req);
    return ctx ? ctx->app : NULL;
}

struct ev_loop *fcr_req_loop(const fcr_req *req)
{
    fcr__ctx *ctx = fcr__ctx_of(req);
    if (ctx)
        return ctx->loop;
    return req ? fcr_server_loop(fcr_req_server(req)) : NULL;
}

/* ---- Key-value lists ------------------------------------------------------------------ */

const char *fcr__kv_find(const fcr__kv_list *l, const char *name, size_t nth)
{
    const fcr__kv *kv = l->kv.v;
    for (size_t i = 0; i < l->kv.n; i++) {
        if (strcmp(kv[i].name, name) == 0 && nth-- == 0)
            return kv[i].value;
    }
    return NULL;
}

int fcr__kv_set(fcr__arena *a, fcr__kv_list *l, const char *name, const char *value)
{
    const char *v = fcr__arena_strndup(a, value, strlen(value));
    if (!v)
        return FCR_ENOMEM;
    fcr__kv *kv = l->kv.v;
    for (size_t i = 0; i < l->kv.n; i++) {
        if (strcmp(kv[i].name, name) == 0) {
            kv[i].value = v;
            return 0;
        }
    }
    const char *n = fcr__arena_strndup(a, name, strlen(name));
    fcr__kv *e = n ? fcr__vec_push(&l->kv, a, sizeof *e) : NULL;
    if (!e)
        return FCR_ENOMEM;
    *e = (fcr__kv){n, v};
    return 0;
}

/* Empties `l` and reserves room for every piece of the `len` bytes at `s` that `sep` separates.
 * Returns 0 or FCR_ENOMEM. */
static int kv_prepare(fcr__arena *a, fcr__kv_list *l, const char *s, size_t len, char sep)
{
    size_t count = 1;
    for (size_t i = 0; i < len; i++)
        count += s[i] == sep;
    l->kv.n = 0;
    return fcr__vec_reserve(&l->kv, a, sizeof(fcr__kv), count);
}

/* Appends a pair to a list with room reserved for it. */
static void kv_add(fcr__kv_list *l, const char *name, const char *value)
{
    ((fcr__kv *)l->kv.v)[l->kv.n++] = (fcr__kv){name, value};
}

int fcr__parse_urlencoded(fcr__arena *a, const char *s, size_t len, fcr__kv_list *l)
{
    if (kv_prepare(a, l, s, len, '&') < 0)
        return FCR_ENOMEM;
    size_t i = 0;
    while (i <= len) {
        const char *seg = s + i;
        const char *amp = memchr(seg, '&', len - i);
        size_t slen = amp ? (size_t)(amp - seg) : len - i;
        i += slen + 1;
        if (slen == 0)
            continue;
        const char *eq = memchr(seg, '=', slen);
        size_t nlen = eq ? (size_t)(eq - seg) : slen;
        size_t vlen = eq ? slen - nlen - 1 : 0;
        char *n = fcr__arena_alloc(a, nlen + 1);
        char *v = fcr__arena_alloc(a, vlen + 1);
        if (!n || !v)
            return FCR_ENOMEM;
        size_t dn, dv;
        /* A malformed escape, or a NUL byte in the decoded name or value (the C string would
         * end early and hide the rest), drops the pair. */
        if (fcr_percent_decode(seg, nlen, n, &dn, true) < 0 ||
            fcr_percent_decode(eq ? eq + 1 : "", vlen, v, &dv, true) < 0 || memchr(n, '\0', dn) ||
            memchr(v, '\0', dv))
            continue;
        kv_add(l, n, v);
    }
    l->parsed = true;
    return 0;
}

const char *fcr_req_query_nth(const fcr_req *req, const char *name, size_t i)
{
    fcr__ctx *ctx = fcr__ctx_of(req);
    if (!ctx || !name)
        return NULL;
    if (!ctx->query.parsed) {
        size_t len = 0;
        const char *qs = fcr_req_paramn(req, "QUERY_STRING", 12, &len);
        if (!qs) {
            /* Some servers send only REQUEST_URI. */
            size_t ulen = 0;
            const char *uri = fcr_req_paramn(req, "REQUEST_URI", 11, &ulen);
            const char *q = uri ? memchr(uri, '?', ulen) : NULL;
            if (q) {
                qs = q + 1;
                len = ulen - (size_t)(qs - uri);
            }
        }
        if (fcr__parse_urlencoded(&ctx->arena, qs ? qs : "", qs ? len : 0, &ctx->query) < 0)
            return NULL;
    }
    return fcr__kv_find(&ctx->query, name, i);
}

const char *fcr_req_query(const fcr_req *req, const char *name)
{
    return fcr_req_query_nth(req, name, 0);
}

const char *fcr_req_form_nth(const fcr_req *req, const char *name, size_t i)
{
    fcr__ctx *ctx = fcr__ctx_of(req);
    if (!ctx || !name || !fcr_req_content_type_is(req, "application/x-www-form-urlencoded"))
        return NULL;
    if (!ctx->form.parsed) {
        size_t len;
        const char *body = fcr_req_body(req, FCR_STDIN, &len);
        if (fcr__parse_urlencoded(&ctx->arena, body, len, &ctx->form) < 0)
            return NULL;
    }
    return fcr__kv_find(&ctx->form, name, i);
}

const char *fcr_req_form(const fcr_req *req, const char *name)
{
    return fcr_req_form_nth(req, name, 0);
}

/* ---- Headers and cookies -------------------------------------------------------------- */

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

int fcr__parse_cookies(fcr__arena *a, const char *s, size_t len, fcr__kv_list *l)
{
    if (!s)
        s = "", len = 0;
    if (kv_prepare(a, l, s, len, ';') < 0)
        return FCR_ENOMEM;
    size_t i = 0;
    while (i < len) {
        const char *seg = s + i;
        const char *semi = memchr(seg, ';', len - i);
        size_t slen = semi ? (size_t)(semi - seg) : len - i;
        i += slen + 1;
        while (slen && is_ows(*seg))
            seg++, slen--;
        while (slen && is_ows(seg[slen - 1]))
            slen--;
        const char *eq = memchr(seg, '=', slen);
        if (!eq || eq == seg)
            continue;
        size_t nlen = (size_t)(eq - seg);
        while (nlen && is_ows(seg[nlen - 1]))
            nlen--;
        const char *v = eq + 1;
        size_t vlen = slen - (size_t)(v - seg);
        while (vlen && is_ows(*v))
            v++, vlen--;
        if (vlen >= 2 && v[0] == '"' && v[vlen - 1] == '"')
            v++, vlen -= 2;
        const char *n = fcr__arena_strndup(a, seg, nlen);
        const char *val = fcr__arena_strndup(a, v, vlen);
        if (!n || !val)
            return FCR_ENOMEM;
        kv_add(l, n, val);
    }
    l->parsed = true;
    return 0;
}

const char *fcr_req_cookie(const fcr_req *req, const char *name)
{
    fcr__ctx *ctx = fcr__ctx_of(req);
    if (!ctx || !name)
        return NULL;
    if (!ctx->cookies.parsed) {
        size_t len = 0;
        const char *s = fcr_req_paramn(req, "HTTP_COOKIE", 11, &len);
        if (fcr__parse_cookies(&ctx->arena, s, len, &ctx->cookies) < 0)
            return NULL;
    }
    return fcr__kv_find(&ctx->cookies, name, 0);
}

/* ---- JSON ----------------------------------------------------------------------------- */

json_t *fcr__json_parse(const char *text, size_t len, bool *oom, char *detail, size_t cap)
{
    json_error_t err;
    *oom = false;
    json_t *j = json_loadb(text, len, JSON_DECODE_ANY, &err);
    if (j)
        return j;
    if (json_error_code(&err) == json_error_out_of_memory) {
        *oom = true;
        snprintf(detail, cap, "out of memory");
        return NULL;
    }
    snprintf(detail, cap, "invalid JSON at line %d, column %d: %s", err.line, err.column, err.text);
    return NULL;
}

json_t *fcr_req_parse_json(fcr_req *req, fcr_res *res)
{
    fcr__ctx *ctx = fcr__ctx_of(req);
    if (!ctx)
        return NULL;
    if (!ctx->json_done) {
        size_t len;
        const char *body = fcr_req_body(req, FCR_STDIN, &len);
        char detail[256];
        bool oom;
        ctx->json = fcr__json_parse(body, len, &oom, detail, sizeof detail);
        if (!ctx->json) {
            if (!oom)
                ctx->json_error = strdup(detail);
            if (oom || !ctx->json_error) {
                if (res)
                    fcr__res_set_status_problem(res, 500, "out of memory");
                return NULL;
            }
        }
        ctx->json_done = true;
    }
    if (!ctx->json && res)
        fcr__res_set_status_problem(res, 400, ctx->json_error);
    return ctx->json;
}

/* ---- Remote address, user, variables -------------------------------------------------- */

const char *fcr_req_user(const fcr_req *req)
{
    fcr__ctx *ctx = fcr__ctx_of(req);
    return ctx ? ctx->user : NULL;
}

int fcr_req_set_user(fcr_req *req, const char *user)
{
    fcr__ctx *ctx = fcr__ctx_of(req);
    if (!ctx)
        return FCR_EINVAL;
    if (!user) {
        ctx->user = NULL;
        return 0;
    }
    const char *u = fcr__arena_strndup(&ctx->arena, user, strlen(user));
    if (!u)
        return FCR_ENOMEM;
    ctx->user = u;
    return 0;
}

const char *fcr_req_var(const fcr_req *req, const char *name)
{
    if (!req || !name)
        return NULL;
    fcr__ctx *ctx = fcr__ctx_of(req);
    const char *v = ctx ? fcr__kv_find(&ctx->vars, name, 0) : NULL;
    return v ? v : fcr_req_param(req, name);
}

int fcr_req_set_var(fcr_req *req, const char *name, const char *value)
{
    fcr__ctx *ctx = fcr__ctx_of(req);
    if (!ctx || !name || !*name || !value)
        return FCR_EINVAL;
    return fcr__kv_set(&ctx->arena, &ctx->vars, name, value);
}

/* ---- Request ids and per-request log messages ---------------------------------------- */

static bool usable_id(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 64)
        return false;
    for (; *s; s++) {
        if (*s <= ' ' || *s > '~' || *s == '"' || *s == '\\')
            return false;
    }
    return true;
}

/* The process id for made request ids, read once per process (a forked child reads its own). */
static atomic_int id_pid;

static void id_pid_reset(void)
{
    atomic_store(&id_pid, 0);
}

static void id_pid_once(void)
{
    pthread_atfork(NULL, NULL, id_pid_reset);
}

const char *fcr_req_request_id(const fcr_req *req)
{
    static atomic_ullong counter;
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    fcr__ctx *ctx = fcr__ctx_of(req);
    if (!ctx)
        return NULL;
    if (!ctx->request_id) {
        const char *id = fcr_req_param(req, "UNIQUE_ID");
        if (!usable_id(id))
            id = fcr_req_param(req, "HTTP_X_REQUEST_ID");
        if (usable_id(id)) {
            ctx->request_id = id;
        } else {
            /* "PID-N", formatted by hand: every answer carries it (X-Request-Id). */
            pthread_once(&once, id_pid_once);
            int pid = atomic_load(&id_pid);
            if (!pid)
                atomic_store(&id_pid, pid = (int)getpid());
            unsigned long long parts[2] = {(unsigned long long)pid,
                                           atomic_fetch_add(&counter, 1) + 1};
            char made[48], *p = made + sizeof made;
            *--p = '\0';
            for (int i = 1; i >= 0; i--) {
                unsigned long long v = parts[i];
                do {
                    *--p = (char)('0' + v % 10);
                    v /= 10;
                } while (v);
                if (i)
                    *--p = '-';
            }
            ctx->request_id = fcr__arena_strndup(&ctx->arena, p, strlen(p));
        }
    }
    return ctx->request_id;
}
