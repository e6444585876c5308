/* Cross-origin resource sharing (the Fetch standard's CORS protocol): an app's allow-list of
 * origins, the preflight OPTIONS requests answered before routing reaches a handler, and the
 * Access-Control-* headers of the actual answers. */
#include "app_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct fcr_cors {
    fcr__vec origins; /* of char *: origins, and patterns whose host starts with "*." */
    fcr__vec headers; /* of char *: request headers a preflight may ask for (lower case) */
    char *exposed;    /* Access-Control-Expose-Headers value, or NULL */
    unsigned methods; /* 0: the methods the resource has */
    bool any_origin;
    bool credentials;
    bool max_age_set;
    unsigned max_age;
};

fcr_cors *fcr_cors_new(void)
{
    return calloc(1, sizeof(fcr_cors)); /* empty lists: zeroed vectors */
}

static void free_strings(fcr__vec *v)
{
    char **s = v->v;
    for (size_t i = 0; i < v->n; i++)
        free(s[i]);
    fcr__vec_free(v);
}

void fcr_cors_free(fcr_cors *cors)
{
    if (!cors)
        return;
    free_strings(&cors->origins);
    free_strings(&cors->headers);
    free(cors->exposed);
    free(cors);
}

/* An origin as browsers serialise it: scheme "://" host [":" port], nothing after. With
 * `pattern`, the host may start with "*." (one or more labels). */
static bool origin_ok(const char *o, bool pattern)
{
    const char *sep = strstr(o, "://");
    if (!sep || sep == o)
        return false;
    for (const char *p = o; p < sep; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
              (p > o && ((*p >= '0' && *p <= '9') || *p == '+' || *p == '-' || *p == '.'))))
            return false;
    }
    const char *h = sep + 3;
    if (pattern && strncmp(h, "*.", 2) == 0)
        h += 2;
    if (!*h)
        return false;
    for (const char *p = h; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c <= ' ' || c >= 0x7f || c == '/' || c == '*' || c == '?' || c == '#' || c == '@' ||
            c == ',' || c == '"' || c == '\\')
            return false;
    }
    return true;
}

static int add_string(fcr__vec *v, const char *s, size_t len)
{
    char *copy = malloc(len + 1);
    if (!copy)
        return FCR_ENOMEM;
    for (size_t i = 0; i < len; i++) /* compared case-insensitively: kept in lower case */
        copy[i] = (char)((s[i] >= 'A' && s[i] <= 'Z') ? s[i] - 'A' + 'a' : s[i]);
    copy[len] = '\0';
    char **slot = fcr__vec_push(v, NULL, sizeof *slot);
    if (!slot) {
        free(copy);
        return FCR_ENOMEM;
    }
    *slot = copy;
    return 0;
}

int fcr_cors_add_origin(fcr_cors *cors, const char *origin)
{
    if (!cors || !origin)
        return FCR_EINVAL;
    if (strcmp(origin, "*") == 0) {
        cors->any_origin = true;
        return 0;
    }
    if (!origin_ok(origin, true))
        return FCR_EINVAL;
    return add_string(&cors->origins, origin, strlen(origin));
}

/* Calls `fn` with each name of a comma-separated list of tokens; FCR_EINVAL for an empty list,
 * an empty name or one that is not a token. */
static int each_name(const char *list, int (*fn)(fcr_cors *c, const char *s, size_t len),
                     fcr_cors *c)
{
    if (!list)
        return FCR_EINVAL;
    int n = 0;
    for (const char *p = list; *p;) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *s = p;
        while (*p && *p != ',' && *p != ' ' && *p != '\t')
            p++;
        if (p == s)
            break;
        char name[128];
        size_t len = (size_t)(p - s);
        if (len >= sizeof name)
            return FCR_EINVAL;
        memcpy(name, s, len);
        name[len] = '\0';
        if (!fcr__is_token(name))
            return FCR_EINVAL;
        int rc = fn(c, s, len);
        if (rc < 0)
            return rc;
        n++;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p && *p != ',')
            return FCR_EINVAL;
    }
    return n ? 0 : FCR_EINVAL;
}

static int add_header(fcr_cors *c, const char *s, size_t len)
{
    return add_string(&c->headers, s, len);
}

static int check_only(fcr_cors *c, const char *s, size_t len)
{
    (void)c, (void)s, (void)len;
    return 0;
}

int fcr_cors_add_header(fcr_cors *cors, const char *headers)
{
    if (!cors)
        return FCR_EINVAL;
    return each_name(headers, add_header, cors);
}

int fcr_cors_add_exposed_header(fcr_cors *cors, const char *headers)
{
    if (!cors)
        return FCR_EINVAL;
    int rc = each_name(headers, check_only, cors);
    if (rc < 0)
        return rc;
    size_t old = cors->exposed ? strlen(cors->exposed) : 0, len = strlen(headers);
    char *v = realloc(cors->exposed, old + len + 3);
    if (!v)
        return FCR_ENOMEM;
    if (old) {
        v[old++] = ',';
        v[old++] = ' ';
    }
    memcpy(v + old, headers, len + 1);
    cors->exposed = v;
    return 0;
}

int fcr_cors_set_methods(fcr_cors *cors, unsigned methods)
{
    if (!cors || (methods & ~(unsigned)FCR_ANY_METHOD))
        return FCR_EINVAL;
    cors->methods = methods;
    return 0;
}

int fcr_cors_set_credentials(fcr_cors *cors, bool allow)
{
    if (!cors)
        return FCR_EINVAL;
    cors->credentials = allow;
    return 0;
}

int fcr_cors_set_max_age(fcr_cors *cors, unsigned seconds)
{
    if (!cors || seconds > 86400)
        return FCR_EINVAL;
    cors->max_age = seconds;
    cors->max_age_set = true;
    return 0;
}

int fcr_app_set_cors(fcr_app *app, fcr_cors *cors)
{
    if (!app || app->parent) {
        fcr_cors_free(cors);
        return FCR_EINVAL;
    }
    /* A credentialed answer must name its origin: "*" would let every site act as the user. */
    if (cors && cors->any_origin && cors->credentials) {
        fcr_cors_free(cors);
        return FCR_EINVAL;
    }
    fcr_cors_free(app->cors);
    app->cors = cors;
    return 0;
}

/* ---- Matching ------------------------------------------------------------------------- */

/* True when `origin` is on the list: equal ignoring case, or under a "*." pattern (the pattern's
 * scheme, then at least one label and the rest of the pattern). */
static bool origin_allowed(const fcr_cors *c, const char *origin)
{
    if (!origin || !origin_ok(origin, false))
        return false;
    if (c->any_origin)
        return true;
    char *const *o = c->origins.v;
    size_t olen = strlen(origin);
    for (size_t i = 0; i < c->origins.n; i++) {
        const char *star = strstr(o[i], "://*.");
        if (!star) {
            if (strcasecmp(o[i], origin) == 0)
                return true;
            continue;
        }
        size_t scheme = (size_t)(star - o[i]) + 3; /* "https://" */
        const char *rest = star + 4;               /* ".example.com" */
        size_t rlen = strlen(rest);
        if (olen > scheme + rlen && strncasecmp(origin, o[i], scheme) == 0 &&
            strcasecmp(origin + olen - rlen, rest) == 0) {
            /* the labels in place of '*': no ':' (a port belongs to the pattern's end) */
            const char *label = origin + scheme;
            size_t llen = olen - rlen - scheme;
            if (!memchr(label, ':', llen))
                return true;
        }
    }
    return false;
}

static bool header_allowed(const fcr_cors *c, const char *s, size_t len)
{
    char *const *h = c->headers.v;
    for (size_t i = 0; i < c->headers.n; i++) {
        if (strlen(h[i]) == len && strncasecmp(h[i], s, len) == 0)
            return true;
    }
    return false;
}

/* Adds `what` to the answer's Vary header (once). Returns 0 or a negative error. */
static int vary(fcr_res *res, const char *what)
{
    const char *v = fcr_res_header(res, "Vary");
    if (!v)
        return fcr_res_set_header(res, "Vary", what);
    size_t wl = strlen(what);
    for (const char *p = v; (p = strcasestr(p, what)); p += wl) {
        bool start = p == v || p[-1] == ' ' || p[-1] == ',';
        bool end = !p[wl] || p[wl] == ',' || p[wl] == ' ';
        if (start && end)
            return 0;
    }
    if (strcmp(v, "*") == 0)
        return 0;
    char buf[512];
    if ((size_t)snprintf(buf, sizeof buf, "%s, %s", v, what) >= sizeof buf)
        return 0;
    return fcr_res_set_header(res, "Vary", buf);
}

/* The CORS headers of an actual answer. */
int fcr__cors_answer(fcr__ctx *ctx)
{
    const fcr_cors *c = ctx->app->cors;
    if (!c)
        return 0;
    fcr_res *res = &ctx->res;
    int rc = vary(res, "Origin");
    const char *origin = fcr_req_header(ctx->req, "Origin");
    if (rc < 0 || !origin_allowed(c, origin))
        return rc;
    if ((rc = fcr_res_set_header(res, "Access-Control-Allow-Origin",
                                 c->any_origin && !c->credentials ? "*" : origin)) < 0)
        return rc;
    if (c->credentials &&
        (rc = fcr_res_set_header(res, "Access-Control-Allow-Credentials", "true")) < 0)
        return rc;
    if (c->exposed &&
        (rc = fcr_res_set_header(res, "Access-Control-Expose-Headers", c->exposed)) < 0)
        return rc;
    return 0;
}

/* A preflight request (OPTIONS with Origin and Access-Control-Request-Method): answered here,
 * before the middleware and the handler. `allowed` is the set of methods the path has (0 when
 * no route matches it). Fills the response; returns 0 or a negative error. */
int fcr__cors_preflight(fcr__ctx *ctx, unsigned allowed)
{
    const fcr_cors *c = ctx->app->cors;
    fcr_res *res = &ctx->res;
    int rc;
    res->status = 204;
    if ((rc = vary(res, "Origin")) < 0 || (rc = vary(res, "Access-Control-Request-Method")) < 0 ||
        (rc = vary(res, "Access-Control-Request-Headers")) < 0)
        return rc;
    const char *origin = fcr_req_header(ctx->req, "Origin");
    const char *want = fcr_req_header(ctx->req, "Access-Control-Request-Method");
    unsigned m = want ? fcr_method_parse(want, strlen(want)) : 0;
    unsigned methods = c->methods ? c->methods & allowed : allowed;
    if (methods & FCR_GET)
        methods |= FCR_HEAD;
    if (!origin_allowed(c, origin) || !m || !(methods & m))
        return 0; /* no Access-Control-Allow-* headers: the browser refuses */
    /* Every header the browser asks for must be on the list. */
    const char *hdrs = fcr_req_header(ctx->req, "Access-Control-Request-Headers");
    for (const char *p = hdrs ? hdrs : ""; *p;) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *s = p;
        while (*p && *p != ',' && *p != ' ' && *p != '\t')
            p++;
        if (p > s && !header_allowed(c, s, (size_t)(p - s)))
            return 0;
    }
    char list[64];
    if (fcr_methods_format(methods & ~(unsigned)FCR_OPTIONS, list, sizeof list) < 0)
        return FCR_ENOMEM;
    if ((rc = fcr_res_set_header(res, "Access-Control-Allow-Origin",
                                 c->any_origin && !c->credentials ? "*" : origin)) < 0 ||
        (rc = fcr_res_set_header(res, "Access-Control-Allow-Methods", list)) < 0)
        return rc;
    if (hdrs && *hdrs && (rc = fcr_res_set_header(res, "Access-Control-Allow-Headers", hdrs)) < 0)
        return rc;
    if (c->credentials &&
        (rc = fcr_res_set_header(res, "Access-Control-Allow-Credentials", "true")) < 0)
        return rc;
    if (c->max_age_set) {
        char age[16];
        snprintf(age, sizeof age, "%u", c->max_age);
        if ((rc = fcr_res_set_header(res, "Access-Control-Max-Age", age)) < 0)
            return rc;
    }
    return 0;
}
