/* Responses: status, headers, body, JSON and problem+json (the output is in context.c). */
#include "app_int.h"

#ifdef __GLIBC__
#include <malloc.h>
#endif

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const struct {
    int code;
    const char *reason;
} reasons[] = {
    {200, "OK"},
    {201, "Created"},
    {202, "Accepted"},
    {203, "Non-Authoritative Information"},
    {204, "No Content"},
    {205, "Reset Content"},
    {206, "Partial Content"},
    {207, "Multi-Status"},
    {208, "Already Reported"},
    {226, "IM Used"},
    {300, "Multiple Choices"},
    {301, "Moved Permanently"},
    {302, "Found"},
    {303, "See Other"},
    {304, "Not Modified"},
    {305, "Use Proxy"},
    {307, "Temporary Redirect"},
    {308, "Permanent Redirect"},
    {400, "Bad Request"},
    {401, "Unauthorized"},
    {402, "Payment Required"},
    {403, "Forbidden"},
    {404, "Not Found"},
    {405, "Method Not Allowed"},
    {406, "Not Acceptable"},
    {407, "Proxy Authentication Required"},
    {408, "Request Timeout"},
    {409, "Conflict"},
    {410, "Gone"},
    {411, "Length Required"},
    {412, "Precondition Failed"},
    {413, "Content Too Large"},
    {414, "URI Too Long"},
    {415, "Unsupported Media Type"},
    {416, "Range Not Satisfiable"},
    {417, "Expectation Failed"},
    {418, "I'm a teapot"},
    {421, "Misdirected Request"},
    {422, "Unprocessable Content"},
    {423, "Locked"},
    {424, "Failed Dependency"},
    {425, "Too Early"},
    {426, "Upgrade Required"},
    {428, "Precondition Required"},
    {429, "Too Many Requests"},
    {431, "Request Header Fields Too Large"},
    {451, "Unavailable For Legal Reasons"},
    {500, "Internal Server Error"},
    {501, "Not Implemented"},
    {502, "Bad Gateway"},
    {503, "Service Unavailable"},
    {504, "Gateway Timeout"},
    {505, "HTTP Version Not Supported"},
    {506, "Variant Also Negotiates"},
    {507, "Insufficient Storage"},
    {508, "Loop Detected"},
    {511, "Network Authentication Required"},
};

const char *fcr_status_reason(int status)
{
    for (size_t i = 0; i < sizeof reasons / sizeof reasons[0]; i++) {
        if (reasons[i].code == status)
            return reasons[i].reason;
    }
    return "Unknown";
}

/* ---- Body buffers --------------------------------------------------------------------- */

/* Bodies up to this capacity live in the arena and are written by copy. */
#define ARENA_BODY_MAX 4096u

/* The response's body, created empty in the context on first use. */
static fcr__body *body_get(fcr_res *res)
{
    if (!res->body) {
        fcr__body *b = &res->ctx->body;
        *b = (fcr__body){.refs = 1};
        res->body = b;
    }
    return res->body;
}

/* A freed body at least this large gives its pages back to the system. */
#define TRIM_AFTER (1024u * 1024u)

void fcr__body_unref(void *arg)
{
    fcr__body *b = arg;
    if (b && --b->refs == 0) {
        if (b->held)
            *b->held -= b->counted;
        bool big = b->buf.cap >= TRIM_AFTER;
        fcr__buf_free(&b->buf);
        free(b);
#ifdef __GLIBC__
        /* glibc serves a large block from the heap once one of that size was freed (its mmap
         * threshold follows the frees), and a freed one then stays in the process's RSS: give
         * the pages back, so that answers that came and went do not keep their memory. */
        if (big)
            malloc_trim(0);
#else
        (void)big;
#endif
    }
}

/* Makes room for `more` bytes (and a NUL) after the body, which it creates when missing. */
static int body_reserve_to(fcr_res *res, size_t more, bool exact)
{
    fcr__body *b = body_get(res);
    if (more > SIZE_MAX - b->buf.len - 1)
        return FCR_ENOMEM;
    size_t need = b->buf.len + more + 1;
    if (b->heap)
        return fcr__buf_reserve(&b->buf, NULL, need, 256, exact ? need : SIZE_MAX);
    if (need <= ARENA_BODY_MAX)
        return fcr__buf_reserve(&b->buf, &res->ctx->arena, need, 256, ARENA_BODY_MAX);
    /* Too big for the arena: a reference-counted body that queued output can hold. */
    fcr__body *h = malloc(sizeof *h);
    if (!h)
        return FCR_ENOMEM;
    *h = (fcr__body){.refs = 1, .heap = true};
    if (fcr__buf_reserve(&h->buf, NULL, need, 2 * ARENA_BODY_MAX, exact ? need : SIZE_MAX) < 0) {
        free(h);
        return FCR_ENOMEM;
    }
    if (b->buf.len)
        memcpy(h->buf.p, b->buf.p, b->buf.len);
    h->buf.len = b->buf.len;
    res->body = h;
    return 0;
}

/* Room for `more` bytes after the body: appends grow it by doubling; a whole body of known
 * size (exact) takes just what it needs, as a large answer is held until it is sent. */
static int body_reserve(fcr_res *res, size_t more)
{
    return body_reserve_to(res, more, false);
}

/* ---- Response object ------------------------------------------------------------------ */

void fcr__res_init(fcr_res *res, fcr__ctx *ctx)
{
    memset(res, 0, sizeof *res);
    res->ctx = ctx;
    res->status = 200;
}

void fcr__res_reset(fcr_res *res)
{
    res->status = 200;
    res->h.n = 0;
    if (res->body && res->body->heap) {
        /* A large body goes at once: the answer that replaces it (a problem, a denial) is
         * small, and must not keep the old body's memory for as long as it is being sent. */
        fcr__body_unref(res->body);
        res->body = NULL;
    } else if (res->body) {
        res->body->buf.len = 0;
    }
}

void fcr__res_release(fcr_res *res)
{
    /* The header list lives in the arena. */
    res->h = (fcr__vec){0};
    if (res->body && res->body->heap)
        fcr__body_unref(res->body);
    res->body = NULL;
}

fcr_req *fcr_res_req(const fcr_res *res)
{
    return res && res->ctx ? res->ctx->req : NULL;
}

int fcr_res_set_status(fcr_res *res, int status)
{
    if (!res || status < 200 || status > 599)
        return FCR_EINVAL;
    res->status = status;
    return 0;
}

int fcr_res_status(const fcr_res *res)
{
    return res ? res->status : 0;
}

static int header_add(fcr_res *res, const char *name, const char *value)
{
    if (!res || !fcr__is_token(name) || !fcr__is_header_value(value) ||
        strcasecmp(name, "Status") == 0)
        return FCR_EINVAL;
    fcr__arena *a = &res->ctx->arena;
    /* Room first: a failure leaves the list as it was. */
    if (fcr__vec_reserve(&res->h, a, sizeof(fcr__kv), res->h.n + 1) < 0)
        return FCR_ENOMEM;
    char *n = fcr__arena_strndup(a, name, strlen(name));
    char *v = fcr__arena_strndup(a, value, strlen(value));
    if (!n || !v)
        return FCR_ENOMEM;
    ((fcr__kv *)res->h.v)[res->h.n++] = (fcr__kv){n, v};
    return 0;
}

int fcr_res_add_header(fcr_res *res, const char *name, const char *value)
{
    return header_add(res, name, value);
}

int fcr_res_remove_header(fcr_res *res, const char *name)
{
    if (!res || !name)
        return 0;
    fcr__kv *h = res->h.v;
    size_t j = 0;
    int removed = 0;
    for (size_t i = 0; i < res->h.n; i++) {
        if (strcasecmp(h[i].name, name) == 0)
            removed++;
        else
            h[j++] = h[i];
    }
    res->h.n = j;
    return removed;
}

int fcr_res_set_header(fcr_res *res, const char *name, const char *value)
{
    if (!res || !fcr__is_token(name) || !fcr__is_header_value(value) ||
        strcasecmp(name, "Status") == 0)
        return FCR_EINVAL;
    /* Make room first so that a failure leaves the old header in place. */
    size_t nh = res->h.n;
    int rc = header_add(res, name, value);
    if (rc < 0)
        return rc;
    fcr__kv added = ((fcr__kv *)res->h.v)[nh];
    res->h.n = nh;
    fcr_res_remove_header(res, name);
    ((fcr__kv *)res->h.v)[res->h.n++] = added;
    return 0;
}

const char *fcr_res_header(const fcr_res *res, const char *name)
{
    if (!res || !name)
        return NULL;
    const fcr__kv *h = res->h.v;
    for (size_t i = 0; i < res->h.n; i++) {
        if (strcasecmp(h[i].name, name) == 0)
            return h[i].value;
    }
    return NULL;
}

int fcr_res_append(fcr_res *res, const void *buf, size_t len)
{
    if (!res || (!buf && len))
        return FCR_EINVAL;
    if (body_reserve(res, len) < 0)
        return FCR_ENOMEM;
    fcr__buf *b = &res->body->buf;
    if (len)
        memcpy(b->p + b->len, buf, len);
    b->len += len;
    b->p[b->len] = '\0';
    return 0;
}

int fcr_res_set_body(fcr_res *res, const void *buf, size_t len)
{
    if (!res || (!buf && len))
        return FCR_EINVAL;
    fcr__body *b = body_get(res);
    if (len > b->buf.len && body_reserve_to(res, len - b->buf.len, true) < 0)
        return FCR_ENOMEM;
    res->body->buf.len = 0;
    return fcr_res_append(res, buf, len);
}

int fcr_res_printf(fcr_res *res, const char *fmt, ...)
{
    if (!res || !fmt)
        return FCR_EINVAL;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return FCR_EINVAL;
    if (body_reserve(res, (size_t)n) < 0)
        return FCR_ENOMEM;
    va_start(ap, fmt);
    fcr__buf *b = &res->body->buf;
    vsnprintf((char *)b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return n;
}

const void *fcr_res_body(const fcr_res *res, size_t *len)
{
    if (len)
        *len = res && res->body ? res->body->buf.len : 0;
    return res && res->body && res->body->buf.p ? (const void *)res->body->buf.p : "";
}

/* Sets status, content type and body as one change: on failure nothing changed. */
static int set_all(fcr_res *res, int status, const char *ctype, const char *body, size_t len)
{
    if (!res || status < 200 || status > 599)
        return FCR_EINVAL;
    fcr__body *b = body_get(res);
    if (len > b->buf.len && body_reserve_to(res, len - b->buf.len, true) < 0)
        return FCR_ENOMEM;
    int rc = fcr_res_set_header(res, "Content-Type", ctype);
    if (rc < 0)
        return rc;
    res->status = status;
    res->body->buf.len = 0;
    return fcr_res_append(res, body, len);
}

int fcr_res_set_text(fcr_res *res, int status, const char *text)
{
    if (!text)
        return FCR_EINVAL;
    return set_all(res, status, "text/plain; charset=utf-8", text, strlen(text));
}

int fcr_res_set_json(fcr_res *res, int status, const json_t *json)
{
    if (!res || !json)
        return FCR_EINVAL;
    if (status < 200 || status > 599)
        return FCR_EINVAL;
    /* Measured, then written straight into the body: no copy, no allocation but the body's. */
    size_t len = fcr__json_size(json);
    if (len == 0)
        return FCR_EINVAL;
    fcr__body *b = body_get(res);
    if (len > b->buf.len && body_reserve_to(res, len - b->buf.len, true) < 0)
        return FCR_ENOMEM;
    int rc = fcr_res_set_header(res, "Content-Type", "application/json");
    if (rc < 0)
        return rc;
    res->status = status;
    b = res->body;
    fcr__json_write(json, (char *)b->buf.p, len);
    b->buf.len = len;
    b->buf.p[len] = '\0';
    return 0;
}

int fcr_res_set_json_new(fcr_res *res, int status, json_t *json)
{
    int rc = fcr_res_set_json(res, status, json);
    json_decref(json);
    return rc;
}

int fcr_res_set_redirect(fcr_res *res, int status, const char *location)
{
    if (!res || status < 300 || status > 399 || !location || !*location ||
        !fcr__is_header_value(location))
        return FCR_EINVAL;
    int rc = fcr_res_set_header(res, "Location", location);
    if (rc < 0)
        return rc;
    res->status = status;
    fcr_res_remove_header(res, "Content-Type");
    if (res->body)
        res->body->buf.len = 0;
    return 0;
}

/* Writes the problem document of `status` into `out` (`cap` bytes; NULL to measure) and returns
 * its length: type, title, status, detail, then the members of `ext` but those four. */
static size_t problem_text(char *out, size_t cap, int status, const char *type, const char *detail,
                           const json_t *ext)
{
    size_t n = 0;
    char num[16];
    fcr__json_put_raw(out, &n, cap, "{\"type\":", strlen("{\"type\":"));
    fcr__json_put_string(out, &n, cap, type, strlen(type));
    fcr__json_put_raw(out, &n, cap, ",\"title\":", strlen(",\"title\":"));
    const char *title = fcr_status_reason(status);
    fcr__json_put_string(out, &n, cap, title, strlen(title));
    fcr__json_put_raw(out, &n, cap, ",\"status\":", strlen(",\"status\":"));
    int k = snprintf(num, sizeof num, "%d", status);
    fcr__json_put_raw(out, &n, cap, num, (size_t)k);
    if (detail) {
        fcr__json_put_raw(out, &n, cap, ",\"detail\":", strlen(",\"detail\":"));
        fcr__json_put_string(out, &n, cap, detail, strlen(detail));
    }
    if (ext) {
        const char *key;
        json_t *v;
        json_object_foreach((json_t *)ext, key, v)
        {
            if (!strcmp(key, "type") || !strcmp(key, "title") || !strcmp(key, "status") ||
                (detail && !strcmp(key, "detail")))
                continue;
            fcr__json_put_raw(out, &n, cap, ",", strlen(","));
            fcr__json_put_string(out, &n, cap, key, strlen(key));
            fcr__json_put_raw(out, &n, cap, ":", strlen(":"));
            size_t vlen = fcr__json_write(v, out ? out + (n < cap ? n : cap) : NULL,
                                          out && n < cap ? cap - n : 0);
            if (vlen == 0)
                return 0;
            n += vlen;
        }
    }
    fcr__json_put_raw(out, &n, cap, "}", strlen("}"));
    return n;
}

int fcr_res_set_problem_new(fcr_res *res, int status, const char *type, const char *detail,
                            json_t *ext)
{
    int rc = FCR_EINVAL;
    if (!res || status < 400 || status > 599 || (ext && !json_is_object(ext)))
        goto out;
    if (!type)
        type = "about:blank";
    if (!fcr__utf8_valid(type, strlen(type)))
        goto out;
    /* A detail that is not UTF-8 is replaced rather than dropping the whole answer. */
    if (detail && !fcr__utf8_valid(detail, strlen(detail)))
        detail = "(detail not valid UTF-8)";
    size_t len = problem_text(NULL, 0, status, type, detail, ext);
    if (len == 0)
        goto out; /* a member of `ext` that cannot be written (nested too deep) */
    /* Written straight into the body, as set_all would copy it. */
    fcr__body *b = body_get(res);
    rc = FCR_ENOMEM;
    if (len > b->buf.len && body_reserve_to(res, len - b->buf.len, true) < 0)
        goto out;
    rc = fcr_res_set_header(res, "Content-Type", "application/problem+json");
    if (rc < 0)
        goto out;
    res->status = status;
    b = res->body;
    problem_text((char *)b->buf.p, len, status, type, detail, ext);
    b->buf.len = len;
    b->buf.p[len] = '\0';
    rc = 0;
out:
    json_decref(ext);
    return rc;
}

int fcr_res_set_problem(fcr_res *res, int status, const char *fmt, ...)
{
    if (!res || !fmt)
        return FCR_EINVAL;
    char small[512], *detail;
    va_list ap;
    va_start(ap, fmt);
    int n = fcr__vformat(small, sizeof small, 0, &detail, fmt, ap);
    va_end(ap);
    if (n < 0)
        return n;
    int rc = fcr_res_set_problem_new(res, status, NULL, detail, NULL);
    if (detail != small)
        free(detail); /* cppcheck-suppress autovarInvalidDeallocation ; detail was malloc'd here */
    return rc;
}

int fcr__res_set_status_problem(fcr_res *res, int status, const char *detail)
{
    return fcr_res_set_problem_new(res, status, NULL, detail, NULL);
}
