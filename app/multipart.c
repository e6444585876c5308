/* multipart/form-data (RFC 7578 on RFC 2046's multipart syntax) parsed as a stream: a push
 * parser over the pieces of a body (any split of the bytes gives the same parts and content),
 * and fcr_req_read_multipart(), which drives it from a streamed body's body fn.
 *
 * Written here rather than taken from a library: the C multipart parsers at hand either want
 * the whole body in memory or stop at the boundary scan (no headers, no limits, no way to
 * pause mid-piece), and the framework needs its own limits and verdicts at every event. */
#include "app_int.h"
#include "multipart_int.h"

#include <fcrest/multipart.h>

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- The parser ----------------------------------------------------------------------- */

enum {
    ST_START,    /* the first "--boundary" */
    ST_AFTER,    /* right after a delimiter: "--", padding or CRLF */
    ST_PAD,      /* transport padding after a delimiter */
    ST_LF,       /* the LF of the CRLF that ends a delimiter line */
    ST_CLOSE,    /* the second '-' of a close delimiter */
    ST_HEADERS,  /* a part's header lines */
    ST_BODY,     /* a part's content */
    ST_EPILOGUE, /* after the close delimiter: ignored */
    ST_REFUSED,  /* refused: nothing more is taken */
};

int fcr__mp_refuse(fcr__mp *p, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->detail, sizeof p->detail, fmt, ap);
    va_end(ap);
    p->status = status;
    p->state = ST_REFUSED;
    return -1;
}

static bool is_tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* RFC 2046 bchars: DIGIT / ALPHA / "'()+_,-./:=?" / space (not last). */
static bool is_bchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c && strchr("'()+_,-./:=? ", c));
}

static const char *skip_ows(const char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    return s;
}

/* Reads a parameter value at `s` (a token or a quoted-string with backslash escapes) into
 * `out` (at most `cap` - 1 bytes, NUL-terminated). Returns the position after it, or NULL
 * when it is malformed or too long. */
static const char *param_value(const char *s, char *out, size_t cap)
{
    size_t n = 0;
    if (*s == '"') {
        s++;
        for (;;) {
            unsigned char c = (unsigned char)*s;
            if (c == '"')
                break;
            if (c == '\\') {
                s++;
                c = (unsigned char)*s;
            }
            if (c == 0 || n + 1 >= cap)
                return NULL;
            out[n++] = (char)c;
            s++;
        }
        s++;
    } else {
        while (is_tchar((unsigned char)*s)) {
            if (n + 1 >= cap)
                return NULL;
            out[n++] = *s++;
        }
        if (n == 0)
            return NULL;
    }
    out[n] = 0;
    return s;
}

/* Reads the parameter name at `s` into `name` (cap bytes). Returns the position after '=' and
 * surrounding spaces, or NULL. */
static const char *param_name(const char *s, char *name, size_t cap)
{
    size_t n = 0;
    while (is_tchar((unsigned char)*s)) {
        if (n + 1 >= cap)
            return NULL;
        name[n++] = *s++;
    }
    name[n] = 0;
    s = skip_ows(s);
    if (n == 0 || *s != '=')
        return NULL;
    return skip_ows(s + 1);
}

int fcr__mp_boundary(const char *ct, char *out, char *detail, size_t cap)
{
    static const char type[] = "multipart/form-data";
    if (!ct || strncasecmp(skip_ows(ct), type, sizeof type - 1) != 0) {
        snprintf(detail, cap, "the request body must be multipart/form-data");
        return 415;
    }
    const char *s = skip_ows(skip_ows(ct) + sizeof type - 1);
    if (*s && *s != ';') {
        snprintf(detail, cap, "the request body must be multipart/form-data");
        return 415;
    }
    bool found = false;
    while (*s == ';') {
        char name[32], value[FCR__MP_MAX_BOUNDARY + 2];
        s = skip_ows(s + 1);
        if (!*s)
            break; /* a trailing ';' */
        const char *v = param_name(s, name, sizeof name);
        if (!v) {
            snprintf(detail, cap, "malformed parameter in the Content-Type");
            return 400;
        }
        bool is_boundary = strcasecmp(name, "boundary") == 0;
        char other[256];
        s = param_value(v, is_boundary ? value : other, is_boundary ? sizeof value : sizeof other);
        if (!s) {
            snprintf(detail, cap,
                     is_boundary ? "the boundary must be 1 to 70 characters (RFC 2046)"
                                 : "malformed parameter in the Content-Type");
            return 400;
        }
        s = skip_ows(s);
        if (*s && *s != ';') {
            snprintf(detail, cap, "malformed parameter in the Content-Type");
            return 400;
        }
        if (!is_boundary || found)
            continue;
        size_t n = strlen(value);
        if (n < 1 || n > FCR__MP_MAX_BOUNDARY || value[n - 1] == ' ') {
            snprintf(detail, cap, "the boundary must be 1 to 70 characters (RFC 2046)");
            return 400;
        }
        for (size_t i = 0; i < n; i++) {
            if (!is_bchar((unsigned char)value[i])) {
                snprintf(detail, cap,
                         "the boundary holds a character RFC 2046 does not allow (byte %zu)",
                         i + 1);
                return 400;
            }
        }
        memcpy(out, value, n + 1);
        found = true;
    }
    if (*s) {
        snprintf(detail, cap, "malformed parameter in the Content-Type");
        return 400;
    }
    if (!found) {
        snprintf(detail, cap, "the multipart/form-data Content-Type has no boundary parameter");
        return 400;
    }
    return 0;
}

void fcr__mp_init(fcr__mp *p, const char *boundary, size_t max_parts, size_t max_part_size,
                  size_t max_header_bytes, char *hbuf, char *vbuf, const fcr__mp_events *ev,
                  void *user)
{
    memset(p, 0, sizeof *p);
    size_t n = strlen(boundary);
    if (n > FCR__MP_MAX_BOUNDARY)
        n = FCR__MP_MAX_BOUNDARY;
    memcpy(p->delim, "\r\n--", 4);
    memcpy(p->delim + 4, boundary, n);
    p->dlen = n + 4;
    p->m = 2; /* the first delimiter has no CRLF before it */
    p->max_parts = max_parts;
    p->max_part_size = max_part_size;
    p->max_header_bytes = max_header_bytes;
    p->hbuf = hbuf;
    p->vbuf = vbuf;
    p->ev = *ev;
    p->user = user;
    p->state = ST_START;
}

const char *fcr__mp_header(const fcr__mp *p, const char *name)
{
    if (!p->hready || p->hlen < 2)
        return NULL;
    /* After parse_headers: each line is "name\0 value\0...\n". */
    size_t end = p->hlen - 2, i = 0;
    while (i < end) {
        const char *line = p->hbuf + i;
        const char *nl = memchr(line, '\n', end - i);
        size_t next = nl ? (size_t)(nl - p->hbuf) + 1 : end;
        if (strcasecmp(line, name) == 0)
            return skip_ows(line + strlen(line) + 1);
        i = next;
    }
    return NULL;
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decodes an RFC 5987 ext-value (charset'language'pct-encoded) into `out` as UTF-8. Returns
 * false when it is malformed, of another charset, or decodes to a NUL byte. */
static bool ext_value(const char *v, char *out, size_t cap)
{
    bool latin1;
    if (strncasecmp(v, "UTF-8'", 6) == 0) {
        latin1 = false;
        v += 6;
    } else if (strncasecmp(v, "ISO-8859-1'", 11) == 0) {
        latin1 = true;
        v += 11;
    } else {
        return false;
    }
    const char *q = strchr(v, '\'');
    if (!q)
        return false;
    v = q + 1;
    size_t n = 0;
    while (*v) {
        unsigned c = (unsigned char)*v;
        if (c == '%') {
            int h = hexval((unsigned char)v[1]), l = h < 0 ? -1 : hexval((unsigned char)v[2]);
            if (l < 0)
                return false;
            c = (unsigned)(h * 16 + l);
            v += 3;
        } else {
            v++;
        }
        if (c == 0)
            return false;
        if (latin1 && c >= 0x80) {
            if (n + 3 > cap)
                return false;
            out[n++] = (char)(0xc0 | (c >> 6));
            out[n++] = (char)(0x80 | (c & 0x3f));
        } else {
            if (n + 2 > cap)
                return false;
            out[n++] = (char)c;
        }
    }
    out[n] = 0;
    return true;
}

/* The header block is complete (hbuf[0..hlen), ending with the empty line): each line becomes
 * "name\0 value\0" in place, and Content-Disposition and Content-Type are read. Returns 0 or
 * -1 (refused). */
static int parse_headers(fcr__mp *p)
{
    size_t end = p->hlen - 2, i = 0;
    p->name = p->filename = p->ctype = NULL;
    p->hready = true;
    while (i < end) {
        char *line = p->hbuf + i;
        char *cr = memchr(line, '\r', end - i); /* every line ends with CRLF */
        size_t len = (size_t)(cr - line);
        char *colon = memchr(line, ':', len);
        *colon = 0; /* checked when the line came */
        char *v = colon + 1, *ve = cr;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        *ve = 0;
        i += len + 2;
    }
    const char *cd = fcr__mp_header(p, "Content-Disposition");
    size_t part = p->parts;
    if (!cd)
        return fcr__mp_refuse(p, 400, "part %zu has no Content-Disposition header", part);
    static const char fd[] = "form-data";
    if (strncasecmp(cd, fd, sizeof fd - 1) != 0 ||
        (*skip_ows(cd + sizeof fd - 1) && *skip_ows(cd + sizeof fd - 1) != ';'))
        return fcr__mp_refuse(p, 400, "part %zu: the Content-Disposition is not form-data", part);
    const char *s = skip_ows(cd + sizeof fd - 1);
    size_t cap = 2 * p->max_header_bytes + 8, used = 0;
    char *name = NULL, *filename = NULL, *ext = NULL;
    while (*s == ';') {
        char pname[32];
        s = skip_ows(s + 1);
        if (!*s)
            break;
        const char *v = param_name(s, pname, sizeof pname);
        char *out = p->vbuf + used;
        if (v)
            s = param_value(v, out, cap - used);
        if (!v || !s)
            return fcr__mp_refuse(p, 400, "part %zu: malformed Content-Disposition", part);
        s = skip_ows(s);
        if (*s && *s != ';')
            return fcr__mp_refuse(p, 400, "part %zu: malformed Content-Disposition", part);
        size_t n = strlen(out) + 1;
        if (strcasecmp(pname, "name") == 0 && !name)
            name = out;
        else if (strcasecmp(pname, "filename") == 0 && !filename)
            filename = out;
        else if (strcasecmp(pname, "filename*") == 0 && !ext)
            ext = out;
        else
            continue; /* not kept: the space is reused */
        used += n;
    }
    if (*s)
        return fcr__mp_refuse(p, 400, "part %zu: malformed Content-Disposition", part);
    if (!name)
        return fcr__mp_refuse(p, 400, "part %zu: the Content-Disposition has no name", part);
    if (ext) {
        /* Decoded after the others: UTF-8 from ISO-8859-1 may take twice the bytes. */
        char *out = p->vbuf + used;
        if (ext_value(ext, out, cap - used))
            filename = out;
    }
    p->name = name;
    p->filename = filename;
    p->ctype = fcr__mp_header(p, "Content-Type");
    return 0;
}

/* Checks the header line that just ended at hbuf[hlen - 2] (CRLF excluded). */
static int check_line(fcr__mp *p, size_t start)
{
    const unsigned char *l = (const unsigned char *)p->hbuf + start;
    size_t len = p->hlen - 2 - start, k = 0;
    while (k < len && is_tchar(l[k]))
        k++;
    if (k == 0 || k == len || l[k] != ':')
        return fcr__mp_refuse(p, 400,
                              "part %zu: a header line without a name and a colon (a part "
                              "needs an empty line after its headers)",
                              p->parts);
    for (size_t i = k; i < len; i++) {
        if ((l[i] < 0x20 && l[i] != '\t') || l[i] == 0x7f)
            return fcr__mp_refuse(p, 400, "part %zu: a control byte in a header line", p->parts);
    }
    return 0;
}

/* Hands `n` content bytes to the data event, within the part's limit. */
static int emit(fcr__mp *p, const unsigned char *b, size_t n)
{
    if (n == 0)
        return 0;
    if (p->max_part_size && p->part_size + n > p->max_part_size)
        return fcr__mp_refuse(p, 413, "part %zu (\"%.64s\") exceeds the limit of %zu bytes",
                              p->parts, p->name ? p->name : "", p->max_part_size);
    p->part_size += n;
    return p->ev.data ? p->ev.data(p, b, n, p->user) : 0;
}

int fcr__mp_feed(fcr__mp *p, const void *buf, size_t len, size_t *used)
{
    const unsigned char *b = buf;
    size_t i = 0;
    int rc = 0;
#define STOP_AT(k)                                                                                 \
    do {                                                                                           \
        *used = (k);                                                                               \
        return rc;                                                                                 \
    } while (0)
#define REFUSE_AT(k, ...)                                                                          \
    do {                                                                                           \
        *used = (k);                                                                               \
        return fcr__mp_refuse(__VA_ARGS__);                                                        \
    } while (0)
    while (i < len) {
        unsigned char c = b[i];
        switch (p->state) {
        case ST_REFUSED:
            rc = -1;
            STOP_AT(i);
        case ST_START:
            if (c != (unsigned char)p->delim[p->m])
                REFUSE_AT(i, p, 400, "the body does not start with its boundary");
            i++;
            if (++p->m == p->dlen)
                p->state = ST_AFTER;
            break;
        case ST_AFTER:
            i++;
            if (c == '-')
                p->state = ST_CLOSE;
            else if (c == ' ' || c == '\t')
                p->state = ST_PAD;
            else if (c == '\r')
                p->state = ST_LF;
            else
                REFUSE_AT(i, p, 400,
                          "a boundary is followed by neither CRLF nor "
                          "\"--\"");
            break;
        case ST_PAD:
            i++;
            if (c == '\r')
                p->state = ST_LF;
            else if (c != ' ' && c != '\t')
                REFUSE_AT(i, p, 400,
                          "a boundary is followed by neither CRLF nor "
                          "\"--\"");
            break;
        case ST_CLOSE:
            i++;
            if (c != '-')
                REFUSE_AT(i, p, 400,
                          "a boundary is followed by neither CRLF nor "
                          "\"--\"");
            p->state = ST_EPILOGUE;
            break;
        case ST_LF:
            i++;
            if (c != '\n')
                REFUSE_AT(i, p, 400,
                          "a boundary is followed by neither CRLF nor "
                          "\"--\"");
            if (p->parts >= p->max_parts)
                REFUSE_AT(i, p, 413, "the body has more than %zu parts", p->max_parts);
            p->parts++;
            p->hlen = 0;
            p->hready = false;
            p->name = p->filename = p->ctype = NULL;
            p->state = ST_HEADERS;
            break;
        case ST_HEADERS: {
            if (p->hlen >= p->max_header_bytes)
                REFUSE_AT(i, p, 400, "part %zu: its headers exceed %zu bytes", p->parts,
                          p->max_header_bytes);
            i++;
            size_t h = p->hlen;
            if (h > 0 && p->hbuf[h - 1] == '\r' && c != '\n')
                REFUSE_AT(i, p, 400,
                          "part %zu: a CR without LF in its "
                          "headers",
                          p->parts);
            if (c == '\n' && (h == 0 || p->hbuf[h - 1] != '\r'))
                REFUSE_AT(i, p, 400,
                          "part %zu: a LF without CR in its "
                          "headers",
                          p->parts);
            p->hbuf[p->hlen++] = (char)c;
            if (c != '\n')
                break;
            /* A line ended: the empty one ends the headers, another is checked. */
            size_t start = h - 1; /* back to the line's start */
            while (start > 0 && p->hbuf[start - 1] != '\n')
                start--;
            if (start + 2 == p->hlen) {
                if (parse_headers(p) < 0) {
                    rc = -1;
                    STOP_AT(i);
                }
                p->part_size = 0;
                p->m = 0;
                p->state = ST_BODY;
                rc = p->ev.part ? p->ev.part(p, p->user) : 0;
                if (rc != 0)
                    STOP_AT(i);
            } else if (check_line(p, start) < 0) {
                rc = -1;
                STOP_AT(i);
            }
            break;
        }
        case ST_BODY:
            if (p->m == 0) {
                /* Content up to the next CR goes on as it is. */
                const unsigned char *cr = memchr(b + i, '\r', len - i);
                size_t k = cr ? (size_t)(cr - b) : len;
                rc = emit(p, b + i, k - i);
                if (rc != 0)
                    STOP_AT(k);
                i = k;
                if (i < len) {
                    p->m = 1;
                    i++;
                }
                break;
            }
            if (c == (unsigned char)p->delim[p->m]) {
                i++;
                if (++p->m < p->dlen)
                    break;
                /* The delimiter: the part ends. */
                p->m = 0;
                p->state = ST_AFTER;
                rc = p->ev.part_end ? p->ev.part_end(p, p->user) : 0;
                if (rc != 0)
                    STOP_AT(i);
                break;
            }
            /* Not the delimiter: the bytes matched so far were content. They were the start
             * of the delimiter itself, and no later byte of it is a CR, so matching starts
             * again at this byte. */
            {
                size_t m = p->m;
                p->m = 0;
                rc = emit(p, (const unsigned char *)p->delim, m);
                if (rc != 0)
                    STOP_AT(i);
            }
            break;
        case ST_EPILOGUE:
        default:
            i = len;
            break;
        }
    }
#undef STOP_AT
#undef REFUSE_AT
    *used = len;
    return 0;
}

int fcr__mp_finish(fcr__mp *p)
{
    if (p->state == ST_REFUSED)
        return -1;
    if (p->state != ST_EPILOGUE)
        return fcr__mp_refuse(p, 400, "the body ends before its closing boundary");
    return 0;
}

/* ---- Reading a request's body --------------------------------------------------------- */

typedef struct field {
    struct field *next;
    const char *name;
    char *value; /* NUL-terminated; len bytes */
    size_t len;
} field;

enum { SINK_DATA, SINK_COLLECT };

struct fcr_part {
    fcr_multipart *mp;
    char *path; /* the temporary file's (malloc'd), or NULL */
    int fd;     /* open while the content is written, else -1 */
    int sink;
    bool in_part, in_end, saved;
};

struct fcr_multipart {
    fcr__mp p;
    fcr_multipart_handler h;
    void *data;
    fcr_req *req;
    fcr_res *res;
    fcr_part part;
    field *fields, **last;
    size_t fields_bytes;
    size_t max_field_size, max_fields_bytes;
    unsigned char *scratch; /* the field being collected (malloc'd, up to max_field_size) */
    size_t scratch_len, scratch_cap;
    int verdict; /* of the callback that stopped the parser */
    int refused; /* a status to answer before reading: the Content-Type's */
    bool released;
    char detail[200];
};

/* Closes and removes the part's temporary file (when not saved). */
static void part_drop_file(fcr_part *part)
{
    if (part->fd >= 0) {
        close(part->fd);
        part->fd = -1;
    }
    if (part->path) {
        if (!part->saved)
            unlink(part->path);
        free(part->path);
        part->path = NULL;
    }
    part->saved = false;
}

/* Frees what the reading holds outside the request's memory: once, whatever ended it. */
static void mp_release(void *data)
{
    fcr_multipart *mp = data;
    if (mp->released)
        return;
    mp->released = true;
    part_drop_file(&mp->part);
    free(mp->scratch);
    mp->scratch = NULL;
    mp->scratch_cap = mp->scratch_len = 0;
}

/* A callback's verdict: MORE goes on, anything else stops the parser with it. */
static int verdict(fcr_multipart *mp, int v)
{
    if (v == FCR_BODY_MORE)
        return 0;
    mp->verdict = v;
    return 1;
}

static int ev_part(fcr__mp *p, void *user)
{
    fcr_multipart *mp = user;
    fcr_part *part = &mp->part;
    part_drop_file(part);
    part->sink = p->filename ? SINK_DATA : SINK_COLLECT;
    mp->scratch_len = 0;
    if (!mp->h.on_part)
        return 0;
    part->in_part = true;
    int v = mp->h.on_part(mp->req, mp->res, part, mp->data);
    part->in_part = false;
    return verdict(mp, v);
}

static int write_all(int fd, const unsigned char *b, size_t n)
{
    while (n > 0) {
        ssize_t k = write(fd, b, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        b += k;
        n -= (size_t)k;
    }
    return 0;
}

static int ev_data(fcr__mp *p, const unsigned char *buf, size_t len, void *user)
{
    fcr_multipart *mp = user;
    fcr_part *part = &mp->part;
    if (part->sink == SINK_COLLECT) {
        size_t n = mp->scratch_len + len;
        if (n > mp->max_field_size)
            return fcr__mp_refuse(p, 413, "field \"%.64s\" exceeds the limit of %zu bytes", p->name,
                                  mp->max_field_size);
        if (mp->fields_bytes + strlen(p->name) + 1 + n + 1 > mp->max_fields_bytes)
            return fcr__mp_refuse(p, 413, "the fields exceed the limit of %zu bytes together",
                                  mp->max_fields_bytes);
        if (n > mp->scratch_cap) {
            size_t cap = mp->scratch_cap ? mp->scratch_cap : 1024;
            while (cap < n)
                cap *= 2;
            if (cap > mp->max_field_size)
                cap = mp->max_field_size;
            unsigned char *s = realloc(mp->scratch, cap);
            if (!s)
                return verdict(mp, FCR_ENOMEM);
            mp->scratch = s;
            mp->scratch_cap = cap;
        }
        memcpy(mp->scratch + mp->scratch_len, buf, len);
        mp->scratch_len = n;
        return 0;
    }
    if (part->fd >= 0 && write_all(part->fd, buf, len) < 0) {
        fcr_log(FCR_LOG_ERROR, "multipart: writing %s: %s", part->path, strerror(errno));
        return verdict(mp, FCR_EIO);
    }
    if (!mp->h.on_data)
        return 0;
    return verdict(mp, mp->h.on_data(mp->req, mp->res, part, buf, len, mp->data));
}

static int ev_part_end(fcr__mp *p, void *user)
{
    fcr_multipart *mp = user;
    fcr_part *part = &mp->part;
    if (part->sink == SINK_COLLECT) {
        size_t nlen = strlen(p->name);
        field *f = fcr_req_alloc(mp->req, sizeof *f);
        char *mem = fcr_req_alloc(mp->req, nlen + 1 + mp->scratch_len + 1);
        if (!f || !mem)
            return verdict(mp, FCR_ENOMEM);
        memcpy(mem, p->name, nlen + 1);
        if (mp->scratch_len)
            memcpy(mem + nlen + 1, mp->scratch, mp->scratch_len);
        mem[nlen + 1 + mp->scratch_len] = 0;
        *f = (field){NULL, mem, mem + nlen + 1, mp->scratch_len};
        *mp->last = f;
        mp->last = &f->next;
        mp->fields_bytes += nlen + 1 + mp->scratch_len + 1;
        mp->scratch_len = 0;
    }
    if (part->fd >= 0) {
        int rc = close(part->fd);
        part->fd = -1;
        if (rc < 0 && errno != EINTR) {
            fcr_log(FCR_LOG_ERROR, "multipart: closing %s: %s", part->path, strerror(errno));
            part_drop_file(part);
            return verdict(mp, FCR_EIO);
        }
    }
    int v = FCR_BODY_MORE;
    if (mp->h.on_part_end) {
        part->in_end = true;
        v = mp->h.on_part_end(mp->req, mp->res, part, mp->data);
        part->in_end = false;
    }
    part_drop_file(part);
    return verdict(mp, v);
}

/* Answers the refusal held in the parser (or the Content-Type's): problem+json, on_gone. */
static fcr_body_result refuse(fcr_multipart *mp, int status, const char *detail)
{
    char what[128];
    snprintf(what, sizeof what, "multipart body refused (%d)", status);
    fcr_log(FCR_LOG_INFO, "%s %s: %s", fcr_req_request_id(mp->req), what, detail);
    int rc = fcr_res_set_problem(mp->res, status, "%s", detail);
    mp_release(mp);
    if (mp->h.on_gone)
        mp->h.on_gone(mp->req, mp, mp->data);
    return rc < 0 ? (fcr_body_result)rc : FCR_BODY_DONE;
}

static bool ends_reading(int v)
{
    return v != FCR_BODY_MORE && v != FCR_BODY_PAUSE && v != FCR_BODY_ASYNC;
}

static fcr_body_result mp_body(fcr_req *req, fcr_res *res, const void *buf, size_t len, void *data)
{
    fcr_multipart *mp = data;
    mp->req = req;
    mp->res = res;
    if (!buf) { /* the request ended first */
        mp_release(mp);
        if (mp->h.on_gone)
            mp->h.on_gone(req, mp, mp->data);
        return FCR_BODY_DONE;
    }
    if (mp->refused)
        return refuse(mp, mp->refused, mp->detail);
    if (len == 0) {
        if (fcr__mp_finish(&mp->p) < 0)
            return refuse(mp, mp->p.status, mp->p.detail);
        mp_release(mp); /* what the end callback may need lives in the request's memory */
        return mp->h.on_end(req, res, mp, mp->data);
    }
    size_t used = 0;
    int rc = fcr__mp_feed(&mp->p, buf, len, &used);
    if (rc == 0)
        return FCR_BODY_MORE;
    if (rc < 0)
        return refuse(mp, mp->p.status, mp->p.detail);
    int v = mp->verdict;
    if (ends_reading(v)) {
        mp_release(mp);
        return (fcr_body_result)v;
    }
    if (used < len)
        fcr__body_unread(req, (const unsigned char *)buf + used, len - used);
    return (fcr_body_result)v;
}

int fcr_req_read_multipart(fcr_req *req, const fcr_multipart_handler *h,
                           const fcr_multipart_limits *limits, void *data)
{
    if (!req || !h || !h->on_end)
        return FCR_EINVAL;
    fcr_multipart_limits l = limits ? *limits : (fcr_multipart_limits){0, 0, 0, 0, 0};
    if (!l.max_parts)
        l.max_parts = FCR_MULTIPART_DEFAULT_MAX_PARTS;
    if (!l.max_header_bytes)
        l.max_header_bytes = FCR_MULTIPART_DEFAULT_MAX_HEADER_BYTES;
    if (!l.max_field_size)
        l.max_field_size = FCR_MULTIPART_DEFAULT_MAX_FIELD_SIZE;
    if (!l.max_fields_bytes)
        l.max_fields_bytes = FCR_MULTIPART_DEFAULT_MAX_FIELDS_BYTES;
    if (l.max_header_bytes > (SIZE_MAX - 8) / 3)
        return FCR_EINVAL;
    fcr__ctx *ctx = fcr__ctx_of(req);
    if (!ctx || !ctx->body_stream || ctx->body_fn)
        return FCR_EINVAL;
    fcr_multipart *mp = fcr_req_alloc(req, sizeof *mp);
    char *hbuf = fcr_req_alloc(req, l.max_header_bytes);
    char *vbuf = fcr_req_alloc(req, 2 * l.max_header_bytes + 8);
    if (!mp || !hbuf || !vbuf)
        return FCR_ENOMEM;
    memset(mp, 0, sizeof *mp);
    mp->h = *h;
    mp->data = data;
    mp->req = req;
    mp->part.mp = mp;
    mp->part.fd = -1;
    mp->last = &mp->fields;
    mp->max_field_size = l.max_field_size;
    mp->max_fields_bytes = l.max_fields_bytes;
    char boundary[FCR__MP_MAX_BOUNDARY + 1] = "";
    mp->refused = fcr__mp_boundary(fcr_req_header(req, "Content-Type"), boundary, mp->detail,
                                   sizeof mp->detail);
    static const fcr__mp_events ev = {ev_part, ev_data, ev_part_end};
    fcr__mp_init(&mp->p, mp->refused ? "-" : boundary, l.max_parts, l.max_part_size,
                 l.max_header_bytes, hbuf, vbuf, &ev, mp);
    int rc = fcr_req_read_body(req, mp_body, mp);
    if (rc < 0)
        return rc;
    fcr__body_on_release(req, mp_release, mp);
    return 0;
}

const char *fcr_multipart_field(const fcr_multipart *mp, const char *name, size_t *len)
{
    if (!mp || !name)
        return NULL;
    for (const field *f = mp->fields; f; f = f->next) {
        if (strcmp(f->name, name) == 0) {
            if (len)
                *len = f->len;
            return f->value;
        }
    }
    return NULL;
}

size_t fcr_multipart_parts(const fcr_multipart *mp)
{
    return mp ? mp->p.parts : 0;
}

fcr_multipart *fcr_part_multipart(const fcr_part *part)
{
    return part ? part->mp : NULL;
}

size_t fcr_part_index(const fcr_part *part)
{
    return part && part->mp->p.parts ? part->mp->p.parts - 1 : 0;
}

const char *fcr_part_name(const fcr_part *part)
{
    return part ? part->mp->p.name : NULL;
}

const char *fcr_part_filename(const fcr_part *part)
{
    return part ? part->mp->p.filename : NULL;
}

const char *fcr_part_content_type(const fcr_part *part)
{
    return part ? part->mp->p.ctype : NULL;
}

const char *fcr_part_header(const fcr_part *part, const char *name)
{
    return part && name ? fcr__mp_header(&part->mp->p, name) : NULL;
}

uint64_t fcr_part_size(const fcr_part *part)
{
    return part ? part->mp->p.part_size : 0;
}

int fcr_part_collect(fcr_part *part)
{
    if (!part || !part->in_part)
        return FCR_EINVAL;
    part_drop_file(part);
    part->sink = SINK_COLLECT;
    return 0;
}

int fcr_part_to_file(fcr_part *part, const char *dir)
{
    if (!part || !part->in_part || part->path)
        return FCR_EINVAL;
    if (!dir)
        dir = getenv("TMPDIR");
    if (!dir || !*dir)
        dir = "/tmp";
    static const char tail[] = "/.fcrest-part-XXXXXX";
    size_t n = strlen(dir);
    char *path = malloc(n + sizeof tail);
    if (!path)
        return FCR_ENOMEM;
    snprintf(path, n + sizeof tail, "%s%s", dir, tail);
    int fd = mkostemp(path, O_CLOEXEC);
    if (fd < 0) {
        fcr_log(FCR_LOG_ERROR, "multipart: a temporary file in %s: %s", dir, strerror(errno));
        free(path);
        return FCR_EIO;
    }
    part->path = path;
    part->fd = fd;
    part->saved = false;
    part->sink = SINK_DATA;
    return 0;
}

const char *fcr_part_file_path(const fcr_part *part)
{
    return part ? part->path : NULL;
}

int fcr_part_save_file(fcr_part *part, const char *path)
{
    if (!part || !path || !part->in_end || !part->path || part->saved)
        return FCR_EINVAL;
    if (link(part->path, path) < 0) {
        if (errno == EEXIST)
            return FCR_EEXIST;
        fcr_log(FCR_LOG_ERROR, "multipart: keeping %s as %s: %s", part->path, path,
                strerror(errno));
        return FCR_EIO;
    }
    unlink(part->path);
    part->saved = true;
    return 0;
}
