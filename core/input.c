/* Request input: the PARAMS stream decoded into the params table (one block of params and its
 * hash index), the STDIN and DATA bodies, and their readers. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

int fcr__req_params_chunk(fcr_req *r, const uint8_t *buf, size_t len)
{
    const fcr_limits *lim = &r->srv->cfg.limits;
    if (len > lim->max_params_bytes - r->pbuf.len) {
        fcr__log_peer(r->srv, FCR_LOG_WARN, "request %u: params exceed %zu bytes", r->id,
                      lim->max_params_bytes);
        fcr__req_reject(r, "431 Request Header Fields Too Large");
        return 0;
    }
    /* Clipped at the limit: nothing is reserved for bytes that cannot arrive. */
    int e = fcr__buf_reserve(&r->pbuf, NULL, r->pbuf.len + len, 1024, lim->max_params_bytes);
    if (e)
        return e;
    memcpy(r->pbuf.p + r->pbuf.len, buf, len);
    r->pbuf.len += len;
    return 0;
}

static long long parse_content_length(const char *v, size_t len)
{
    if (!v || len == 0 || len > 18)
        return -1;
    long long n = 0;
    for (size_t i = 0; i < len; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        n = n * 10 + (v[i] - '0');
    }
    return n;
}

/* CGI param names are few, mostly upper case, and share long prefixes (HTTP_, SERVER_,
 * REQUEST_): a hash of the length and the bytes at the end and in the middle separates them as
 * well as a hash of every byte, in a few instructions. Collisions only cost a probe. */
static uint32_t name_hash(const char *name, size_t len)
{
    if (len == 0)
        return 0;
    const uint8_t *p = (const uint8_t *)name;
    uint32_t h = (uint32_t)len * 2654435761u;
    h ^= (uint32_t)p[len - 1] * 40503u + (uint32_t)p[len / 2] * 7919u + (uint32_t)p[len / 4];
    if (len >= 3)
        h += (uint32_t)p[len - 2] * 131u + (uint32_t)p[len - 3] * 31u;
    return h ^ (h >> 15);
}

/* The index slot holding `name`, or the free slot where it would go. */
static inline size_t find_slot(const fcr_req *r, const char *name, size_t len)
{
    size_t i = name_hash(name, len) & r->pmask;
    for (; r->pindex[i]; i = (i + 1) & r->pmask) {
        const fcr__param *p = &r->params[r->pindex[i] - 1];
        if (p->nlen == len && memcmp(p->name, name, len) == 0)
            break;
    }
    return i;
}

/* Makes room for `cap` params: the params and their hash index (at most half full) in one block;
 * the index is rebuilt. */
static int params_grow(fcr_req *r, size_t cap)
{
    size_t slots = 16;
    while (slots < 2 * cap)
        slots *= 2;
    fcr__param *p = malloc(cap * sizeof *p + slots * sizeof *r->pindex);
    if (!p)
        return FCR_ENOMEM;
    if (r->nparams)
        memcpy(p, r->params, r->nparams * sizeof *p);
    free(r->params);
    r->params = p;
    r->pcap = cap;
    r->pindex = (uint32_t *)(void *)(p + cap);
    r->pmask = slots - 1;
    memset(r->pindex, 0, slots * sizeof *r->pindex);
    for (size_t i = 0; i < r->nparams; i++)
        r->pindex[find_slot(r, p[i].name, p[i].nlen)] = (uint32_t)(i + 1);
    return 0;
}

/* Decodes the complete PARAMS stream in one pass, in place: each pair [len][len][name][value]
 * becomes name\0value\0 at the front of the buffer. Every pair's header is at least 2 bytes, so
 * the rewritten pair never reaches the next pair's bytes. A request over a limit is rejected
 * (what was rewritten so far is never read again). */
int fcr__req_params_end(fcr_req *r)
{
    const fcr_limits *lim = &r->srv->cfg.limits;
    size_t off = 0, count = 0;
    const uint8_t *name, *value;
    uint32_t nlen, vlen;
    fcr__nv_status st;
    uint8_t *w = r->pbuf.p;
    while ((st = fcr__nv_next(r->pbuf.p, r->pbuf.len, &off, &name, &nlen, &value, &vlen)) ==
           FCR__NV_OK) {
        if (nlen > lim->max_name_len || vlen > lim->max_value_len || ++count > lim->max_params) {
            fcr__log_peer(r->srv, FCR_LOG_WARN,
                          "request %u: a param exceeds the name, value or count limit", r->id);
            fcr__req_reject(r, "431 Request Header Fields Too Large");
            return 1;
        }
        if (r->nparams == r->pcap && params_grow(r, r->pcap ? 2 * r->pcap : 32) != 0)
            return FCR_ENOMEM;
        char *n = (char *)w;
        memmove(n, name, nlen);
        n[nlen] = '\0';
        char *v = n + nlen + 1;
        memmove(v, value, vlen);
        v[vlen] = '\0';
        w = (uint8_t *)v + vlen + 1;
        size_t slot = find_slot(r, n, nlen);
        if (r->pindex[slot] == 0) {
            r->params[r->nparams] = (fcr__param){n, NULL, nlen, 0};
            r->pindex[slot] = (uint32_t)++r->nparams;
        }
        fcr__param *p = &r->params[r->pindex[slot] - 1];
        p->value = v; /* the last duplicate wins */
        p->vlen = vlen;
    }
    if (st == FCR__NV_TRUNCATED) {
        fcr__log_peer(r->srv, FCR_LOG_WARN, "request %u: truncated name-value pair in PARAMS",
                      r->id);
        return FCR_EPROTO;
    }
    r->state |= FCR__REQ_PARAMS_DONE;
    size_t cl_len;
    const char *cl = fcr_req_paramn(r, "CONTENT_LENGTH", 14, &cl_len);
    r->content_length = parse_content_length(cl, cl ? cl_len : 0);
    return 0;
}

int fcr__req_body_chunk(fcr_req *r, int idx, const uint8_t *buf, size_t len)
{
    fcr__buf *b = &r->body[idx];
    /* b->len <= max_body always holds: the limit is only changed before any body arrives. */
    if (len > r->max_body - b->len) {
        r->input_error = FCR_ETOOBIG;
        r->state |= FCR__REQ_DISCARD;
        fcr__log_peer(r->srv, FCR_LOG_WARN, "request %u: %s exceeds %zu bytes", r->id,
                      idx ? "DATA" : "STDIN", r->max_body);
        return 1; /* deliver now */
    }
    size_t clip = r->max_body;
    if (idx == 0 && r->content_length >= 0 && (unsigned long long)r->content_length <= clip)
        clip = (size_t)r->content_length;
    /* A declared length up to 1 MiB is reserved at once (one allocation, no copies); larger
     * ones grow with the bytes that actually arrive. */
    size_t first = clip < 16384 || clip > (1u << 20) || clip == r->max_body ? 16384 : clip;
    /* Clipped at the declared length or the limit, so that the last step is exact. */
    int e = fcr__buf_reserve(b, NULL, b->len + len, first, clip);
    if (e)
        return e;
    memcpy(b->p + b->len, buf, len);
    b->len += len;
    return 0;
}

/* ---- readers ---------------------------------------------------------------------------- */

const char *fcr_req_paramn(const fcr_req *r, const char *name, size_t nlen, size_t *vlen)
{
    if (!r || !name || !r->pindex)
        return NULL;
    uint32_t i = r->pindex[find_slot(r, name, nlen)];
    if (i == 0)
        return NULL;
    if (vlen)
        *vlen = r->params[i - 1].vlen;
    return r->params[i - 1].value;
}

const char *fcr_req_param(const fcr_req *r, const char *name)
{
    return name ? fcr_req_paramn(r, name, strlen(name), NULL) : NULL;
}

size_t fcr_req_param_count(const fcr_req *r)
{
    return r ? r->nparams : 0;
}

int fcr_req_param_at(const fcr_req *r, size_t i, const char **name, size_t *nlen,
                     const char **value, size_t *vlen)
{
    if (!r || i >= r->nparams)
        return FCR_ENOTFOUND;
    const fcr__param *p = &r->params[i];
    if (name)
        *name = p->name;
    if (nlen)
        *nlen = p->nlen;
    if (value)
        *value = p->value;
    if (vlen)
        *vlen = p->vlen;
    return 0;
}

const void *fcr_req_body(const fcr_req *r, fcr_stream stream, size_t *len)
{
    if (!r) {
        if (len)
            *len = 0;
        return "";
    }
    const fcr__buf *b = &r->body[stream == FCR_DATA ? 1 : 0];
    if (len)
        *len = b->len;
    return b->p ? (const void *)b->p : (const void *)"";
}

int fcr_req_input_error(const fcr_req *r)
{
    return r ? r->input_error : FCR_EINVAL;
}

void fcr_req_set_max_body(fcr_req *r, size_t max)
{
    if (r && (r->state & FCR__REQ_IN_PARAMS))
        r->max_body = max;
}

int fcr_req_stream_input(fcr_req *r, fcr_chunk_cb chunk)
{
    if (!r || !chunk || !(r->state & FCR__REQ_IN_PARAMS))
        return FCR_EINVAL;
    r->chunk_cb = chunk;
    r->state |= FCR__REQ_STREAMING;
    return 0;
}

void fcr_req_resume_input(fcr_req *r)
{
    if (r && r->conn && r->conn->paused_app) {
        r->input_at = ev_now(r->srv->loop); /* the pause does not count against the timeout */
        r->conn->paused_app = false;
        r->conn->paused_by = NULL;
        fcr__conn_resume(r->conn);
    }
}
