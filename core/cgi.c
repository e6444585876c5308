/* CGI params read the way HTTP names them, and the per-request log: what a core application
 * needs of a request besides the raw params, with no framework behind it. */
#include "internal.h"
#include "framework.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

int fcr__parse_uint(const char *s, unsigned long long max, unsigned long long *out)
{
    if (!s || !*s)
        return FCR_EINVAL;
    unsigned long long v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return FCR_EINVAL;
        unsigned d = (unsigned)(*s - '0');
        if (v > (max - d) / 10)
            return FCR_ETOOBIG;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

bool fcr__is_token(const char *s)
{
    if (!s || !*s)
        return false;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        unsigned char c = *p;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
            continue;
        if (!strchr("!#$%&'*+-.^_`|~", c))
            return false;
    }
    return true;
}

bool fcr__is_header_value(const char *s)
{
    if (!s)
        return false;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if ((*p < 0x20 && *p != '\t') || *p == 0x7f)
            return false;
    }
    return true;
}

const char *fcr_req_method(const fcr_req *req)
{
    return req ? fcr_req_param(req, "REQUEST_METHOD") : NULL;
}

const char *fcr_req_header(const fcr_req *req, const char *name)
{
    if (!req || !fcr__is_token(name))
        return NULL;
    char key[256];
    size_t len = strlen(name);
    if (len > sizeof key - 6)
        return NULL;
    if (strcasecmp(name, "Content-Type") == 0 || strcasecmp(name, "Content-Length") == 0) {
        const char *v = fcr_req_param(req, name[8] == 'T' || name[8] == 't' ? "CONTENT_TYPE"
                                                                            : "CONTENT_LENGTH");
        return v && *v ? v : NULL;
    }
    memcpy(key, "HTTP_", 5);
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        if (c >= 'a' && c <= 'z')
            c = (char)(c - 'a' + 'A');
        else if (c == '-')
            c = '_';
        key[5 + i] = c;
    }
    key[5 + len] = '\0';
    return fcr_req_param(req, key);
}

bool fcr_req_content_type_is(const fcr_req *req, const char *media_type)
{
    const char *ct = fcr_req_header(req, "Content-Type");
    if (!ct || !media_type)
        return false;
    while (is_ows(*ct))
        ct++;
    size_t n = strlen(media_type);
    if (strncasecmp(ct, media_type, n) != 0)
        return false;
    const char *rest = ct + n;
    while (is_ows(*rest))
        rest++;
    return *rest == '\0' || *rest == ';';
}

const char *fcr_req_remote_addr(const fcr_req *req)
{
    return req ? fcr_req_param(req, "REMOTE_ADDR") : NULL;
}

int fcr_req_remote_port(const fcr_req *req)
{
    unsigned long long port;
    if (!req || fcr__parse_uint(fcr_req_param(req, "REMOTE_PORT"), 65535, &port) < 0)
        return 0;
    return (int)port;
}

int fcr_req_log(fcr_req *req, const char *fmt, ...)
{
    if (!req || !fmt)
        return FCR_EINVAL;
    char small[512], *msg;
    va_list ap;
    va_start(ap, fmt);
    int n = fcr__vformat(small, sizeof small, 1, &msg, fmt, ap);
    va_end(ap);
    if (n < 0)
        return n;
    size_t len = (size_t)n;
    if (len == 0 || msg[len - 1] != '\n')
        msg[len++] = '\n';
    int rc = fcr_req_write_stderr(req, msg, len);
    if (msg != small)
        free(msg); /* cppcheck-suppress autovarInvalidDeallocation ; msg was malloc'd here */
    return rc < 0 ? rc : (int)len;
}

/* ---- FILTER data ---------------------------------------------------------------------- */

const void *fcr_req_data(const fcr_req *req, size_t *len)
{
    if (!req) {
        if (len)
            *len = 0;
        return "";
    }
    size_t n;
    const void *p = fcr_req_body(req, FCR_DATA, &n);
    if (len)
        *len = n;
    return p;
}

static int param_u63(const fcr_req *req, const char *name, unsigned long long *out)
{
    unsigned long long v;
    if (!req || fcr__parse_uint(fcr_req_param(req, name), (unsigned long long)INT64_MAX, &v) < 0)
        return FCR_ENOTFOUND;
    if (out)
        *out = v;
    return 0;
}

int fcr_req_data_length(const fcr_req *req, uint64_t *len)
{
    unsigned long long v;
    int rc = param_u63(req, "FCGI_DATA_LENGTH", &v);
    if (rc == 0 && len)
        *len = (uint64_t)v;
    return rc;
}

int fcr_req_data_last_mod(const fcr_req *req, int64_t *t)
{
    unsigned long long v;
    int rc = param_u63(req, "FCGI_DATA_LAST_MOD", &v);
    if (rc == 0 && t)
        *t = (int64_t)v;
    return rc;
}
