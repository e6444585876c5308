/* Conditional requests (RFC 9110, section 13): entity tags made and set, and the If-Match and
 * If-None-Match preconditions evaluated against the current representation's tag. */
#include "app_int.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* The end of an entity-tag starting at `p` ([W/]"etagc*"), or NULL when there is none. `*weak`
 * tells whether it had W/. etagc: '!', '#'..'~' but '"', and bytes 0x80..0xff. */
static const char *tag_end(const char *p, bool *weak)
{
    *weak = false;
    if (p[0] == 'W' && p[1] == '/') {
        *weak = true;
        p += 2;
    }
    if (*p != '"')
        return NULL;
    for (p++; *p != '"'; p++) {
        unsigned char c = (unsigned char)*p;
        if (!(c == 0x21 || (c >= 0x23 && c <= 0x7e) || c >= 0x80))
            return NULL;
    }
    return p + 1;
}

/* The opaque part of a tag ("..." with the quotes) at `t` (after W/ if any), its length. */
static size_t opaque(const char *t, bool weak, const char **start, const char *end)
{
    *start = weak ? t + 2 : t;
    return (size_t)(end - *start);
}

bool fcr_etag_valid(const char *etag)
{
    bool weak;
    const char *end = etag ? tag_end(etag, &weak) : NULL;
    return end && *end == '\0';
}

int fcr_res_set_etag(fcr_res *res, const char *etag)
{
    if (!res || !fcr_etag_valid(etag))
        return FCR_EINVAL;
    return fcr_res_set_header(res, "ETag", etag);
}

int fcr_etag_make(const void *buf, size_t len, char *out, size_t cap)
{
    if ((!buf && len) || !out || cap < FCR_ETAG_MAX)
        return FCR_EINVAL;
    /* FNV-1a over the bytes, 64 bits: a tag only has to change when the bytes do, and a client
     * cannot choose the bytes of another client's representation. */
    uint64_t h = 14695981039346656037u;
    const unsigned char *p = buf;
    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 1099511628211u;
    snprintf(out, cap, "\"%016llx\"", (unsigned long long)h);
    return 0;
}

/* Whether the list in header `value` ("*", or entity-tags separated by commas) matches the
 * current tag `etag` (NULL: no current representation). `strong`: the strong comparison (If-Match),
 * else the weak one (If-None-Match). A malformed list matches nothing. */
static bool list_matches(const char *value, const char *etag, bool strong)
{
    const char *p = value;
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p == '*') {
        const char *q = p + 1;
        while (*q == ' ' || *q == '\t')
            q++;
        return *q == '\0' && etag != NULL;
    }
    if (!etag)
        return false;
    bool cur_weak;
    const char *cur_end = tag_end(etag, &cur_weak);
    const char *cur;
    size_t cur_len = opaque(etag, cur_weak, &cur, cur_end);
    if (strong && cur_weak)
        return false;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        if (!*p)
            break;
        bool weak;
        const char *end = tag_end(p, &weak);
        if (!end)
            return false;
        const char *o;
        size_t len = opaque(p, weak, &o, end);
        if (len == cur_len && memcmp(o, cur, len) == 0 && !(strong && weak))
            return true;
        p = end;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p && *p != ',')
            return false;
    }
    return false;
}

int fcr_req_check_preconditions(fcr_req *req, fcr_res *res, const char *etag)
{
    fcr__ctx *ctx = fcr__ctx_of(req);
    if (!ctx || res != &ctx->res || (etag && !fcr_etag_valid(etag)))
        return FCR_EINVAL;
    const char *m = ctx->method ? ctx->method : "";
    bool safe = strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0;
    const char *im = fcr_req_header(req, "If-Match");
    if (im && !list_matches(im, etag, true)) {
        int rc = fcr_res_set_problem(res, 412,
                                     etag ? "the resource has changed: If-Match names another "
                                            "version (fetch it again)"
                                          : "the resource does not exist, and If-Match needs it");
        if (rc == 0 && etag)
            rc = fcr_res_set_header(res, "ETag", etag);
        return rc < 0 ? rc : 412;
    }
    const char *inm = fcr_req_header(req, "If-None-Match");
    if (inm && list_matches(inm, etag, false)) {
        if (safe) {
            /* 304: no body, the tag again. */
            fcr__res_reset(res);
            res->status = 304;
            int rc = fcr_res_set_header(res, "ETag", etag);
            return rc < 0 ? rc : 304;
        }
        int rc = fcr_res_set_problem(res, 412, "If-None-Match names the current version");
        if (rc == 0)
            rc = fcr_res_set_header(res, "ETag", etag);
        return rc < 0 ? rc : 412;
    }
    return 0;
}
