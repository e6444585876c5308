/* Requests: params table, body buffers, STDOUT/STDERR records, END_REQUEST. */
#include "internal.h"
#include "framework.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OUT_FIRST_CAP 1024
/* Room kept after an open record's content for its padding and the final records: padding
 * (7), empty STDOUT (8), empty STDERR (8), END_REQUEST (16). */
#define OUT_TAIL 40

static const uint8_t zeros[8];

/* What a released request keeps for the next one, when its server is alive: at most POOL_MAX
 * requests (the requests in flight at a time, up to a limit), each with a PARAMS buffer of up
 * to 16 KiB (a web server's usual params take 1-4 KiB), a params block for up to 256 params
 * (8 KiB, the default max_params) and an output buffer of up to 8 KiB. Larger buffers belong to
 * rare requests and are freed. A server keeps at most 64 * 32 KiB = 2 MiB this way. */
#define POOL_MAX      64
#define POOL_PBUF_MAX 16384
#define POOL_PCAP_MAX 256
#define POOL_OUT_MAX  8192

fcr_req *fcr__req_new(fcr__conn *c, uint16_t id, uint8_t role, uint8_t flags)
{
    fcr__req_pool *pool = c->srv->pool;
    fcr_req *r = pool->free;
    if (r) {
        pool->free = r->next;
        pool->nfree--;
        /* Every field starts as calloc would leave it, but for the kept buffers (their index
         * was cleared when the request was kept). */
        fcr__buf pbuf = {r->pbuf.p, 0, r->pbuf.cap};
        fcr__param *params = r->params;
        size_t pcap = r->pcap;
        uint32_t *pindex = r->pindex;
        size_t pmask = r->pmask;
        fcr__buf out = {r->out.p, 0, r->out.cap};
        memset(r, 0, sizeof *r);
        r->pbuf = pbuf;
        r->params = params;
        r->pcap = pcap;
        r->pindex = pindex;
        r->pmask = pmask;
        r->out = out;
    } else {
        r = calloc(1, sizeof *r);
        if (!r)
            return NULL;
    }
    pool->live++;
    r->pool = pool;
    r->srv = c->srv;
    r->conn = c;
    r->id = id;
    r->role = role;
    r->flags = flags;
    r->refs = 1;
    r->begin_time = ev_now(c->srv->loop);
    r->max_body = c->srv->cfg.limits.max_body;
    r->content_length = -1;
    return r;
}

static void req_destroy(fcr_req *r)
{
    fcr__buf_free(&r->pbuf);
    free(r->params);
    fcr__buf_free(&r->body[0]);
    fcr__buf_free(&r->body[1]);
    fcr__buf_free(&r->out);
    fcr__buf_free(&r->out_final);
    free(r);
}

/* Keeps the request for reuse while its server is alive (the pool is not orphaned), else frees
 * it. The output buffer kept is preferably the final records' (written or dropped by now: the
 * last reference was END_REQUEST's, released after them). */
static void req_free(fcr_req *r)
{
    if (r->fwdata && r->fwrelease) {
        void *data = r->fwdata;
        r->fwdata = NULL;
        r->fwrelease(data);
    }
    fcr__req_pool *pool = r->pool;
    pool->live--;
    if (pool->orphan || pool->nfree >= POOL_MAX || r->pbuf.cap > POOL_PBUF_MAX ||
        r->pcap > POOL_PCAP_MAX) {
        req_destroy(r);
        if (pool->orphan && pool->live == 0)
            free(pool);
        return;
    }
    fcr__buf_free(&r->body[0]);
    fcr__buf_free(&r->body[1]);
    if (r->out_final.p) {
        fcr__buf_free(&r->out);
        r->out = r->out_final;
        r->out_final = (fcr__buf){0};
    }
    if (r->out.cap > POOL_OUT_MAX)
        fcr__buf_free(&r->out);
    if (r->pindex)
        memset(r->pindex, 0, (r->pmask + 1) * sizeof *r->pindex);
    r->next = pool->free;
    pool->free = r;
    pool->nfree++;
}

void fcr__req_pool_orphan(fcr__req_pool *pool)
{
    pool->orphan = true;
    while (pool->free) {
        fcr_req *r = pool->free;
        pool->free = r->next;
        req_destroy(r);
    }
    pool->nfree = 0;
    if (pool->live == 0)
        free(pool);
}

void fcr__req_unref(void *arg)
{
    fcr_req *r = arg;
    if (--r->refs == 0)
        req_free(r);
}

/* ---- input ------------------------------------------------------------------------------ */

int fcr__req_params_chunk(fcr_req *r, const uint8_t *buf, size_t len)
{
    const fcr_limits *lim = &r->srv->cfg.limits;
    if (len > lim->max_params_bytes - r->pbuf.len) {
        fcr_log(FCR_LOG_WARN, "request %u: params exceed %zu bytes", r->id, lim->max_params_bytes);
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
            fcr_log(FCR_LOG_WARN, "request %u: a param exceeds the name, value or count limit",
                    r->id);
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
        fcr_log(FCR_LOG_WARN, "request %u: truncated name-value pair in PARAMS", r->id);
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
        fcr_log(FCR_LOG_WARN, "request %u: %s exceeds %zu bytes", r->id, idx ? "DATA" : "STDIN",
                r->max_body);
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

/* ---- output ----------------------------------------------------------------------------- */

static bool req_writable(const fcr_req *r)
{
    return r->conn && !(r->state & (FCR__REQ_ABORTED | FCR__REQ_FINISHED | FCR__REQ_ENDED));
}

/* Content bytes of the open STDOUT record (0 when none is open). */
static size_t out_content(const fcr_req *r)
{
    return r->out.len ? r->out.len - FCGI_HEADER_LEN : 0;
}

/* Makes room for `add` more content bytes in the open STDOUT record (add <= 65535 - content),
 * opening it when none is. */
static int out_reserve(fcr_req *r, size_t add)
{
    size_t used = r->out.len ? r->out.len : FCGI_HEADER_LEN;
    int e = fcr__buf_reserve(&r->out, NULL, used + add + OUT_TAIL, OUT_FIRST_CAP,
                             FCGI_HEADER_LEN + FCGI_MAX_CONTENT + OUT_TAIL);
    if (e)
        return e;
    r->out.len = used;
    return 0;
}

static void free_arg(void *p)
{
    free(p);
}

/* Turns the open STDOUT record (if any) into a queued segment; with `final`, appends the end
 * of the streams and END_REQUEST. The END_REQUEST segment holds a reference on the request so
 * that memory it owns (params, bodies) outlives output that points into it. */
void fcr__req_seal(fcr_req *r, bool final, uint8_t protocol_status, uint32_t app_status)
{
    fcr__conn *c = r->conn;
    if (!c)
        return;
    size_t content = out_content(r);
    if (content == 0 && !final)
        return;
    if (fcr__buf_reserve(&r->out, NULL, OUT_TAIL + FCGI_HEADER_LEN, OUT_TAIL + FCGI_HEADER_LEN,
                         SIZE_MAX) != 0) {
        fcr__conn_fail(c, "out of memory");
        return;
    }
    uint8_t *buf = r->out.p;
    size_t total = 0;
    if (content) {
        uint8_t pad = fcr__padding_for(content);
        fcr__header_encode(buf, FCGI_STDOUT, r->id, (uint16_t)content, pad);
        memset(buf + FCGI_HEADER_LEN + content, 0, pad);
        total = FCGI_HEADER_LEN + content + pad;
    }
    if (final) {
        if (protocol_status == FCGI_REQUEST_COMPLETE) {
            fcr__header_encode(buf + total, FCGI_STDOUT, r->id, 0, 0);
            total += FCGI_HEADER_LEN;
            if (r->state & FCR__REQ_STDERR_USED) {
                fcr__header_encode(buf + total, FCGI_STDERR, r->id, 0, 0);
                total += FCGI_HEADER_LEN;
            }
        }
        fcr__end_request_encode(buf + total, r->id, app_status, protocol_status);
        total += 16;
    }
    fcr__buf kept = {buf, 0, r->out.cap};
    r->out = (fcr__buf){0};
    /* queued already counts the open content; account for framing. */
    c->queued -= content;
    if (final)
        r->state |= FCR__REQ_ENDED;
    if (final && fcr__conn_reserve(c, 2) == 0) {
        /* The buffer stays the request's, to be reused or freed with it: END_REQUEST's
         * reference, released after these bytes are written or dropped, keeps it alive. */
        r->out_final = kept;
        fcr__conn_push(c, buf, total, NULL, NULL);
        r->refs++;
        fcr__conn_push(c, NULL, 0, fcr__req_unref, r);
        fcr__conn_want_flush(c);
        return;
    }
    if (fcr__conn_push(c, buf, total, free_arg, buf) != 0)
        return;
    if (final) {
        r->refs++;
        fcr__conn_push(c, NULL, 0, fcr__req_unref, r);
    }
    fcr__conn_want_flush(c);
}

/* Appends to the open STDOUT record, sealing full records; no output cap check. */
static int out_append(fcr_req *r, const uint8_t *p, size_t len)
{
    fcr__conn *c = r->conn;
    while (len) {
        size_t room = FCGI_MAX_CONTENT - out_content(r);
        size_t n = len < room ? len : room;
        int e = out_reserve(r, n);
        if (e)
            return e;
        memcpy(r->out.p + r->out.len, p, n);
        r->out.len += n;
        c->queued += n;
        p += n;
        len -= n;
        if (out_content(r) == FCGI_MAX_CONTENT)
            fcr__req_seal(r, false, 0, 0);
    }
    if (r->out.len)
        fcr__server_mark_dirty(r->srv, r);
    return 0;
}

int fcr_req_write(fcr_req *r, const void *buf, size_t len)
{
    if (!r || (!buf && len))
        return FCR_EINVAL;
    if (!req_writable(r))
        return FCR_ECLOSED;
    if (r->conn->queued >= r->srv->cfg.limits.max_output_queue)
        return FCR_EAGAIN;
    return out_append(r, buf, len);
}

int fcr_req_write_ref(fcr_req *r, const void *buf, size_t len, void (*release)(void *arg),
                      void *arg)
{
    int e = 0;
    if (!r || (!buf && len)) {
        e = FCR_EINVAL;
        goto fail;
    }
    if (!req_writable(r)) {
        e = FCR_ECLOSED;
        goto fail;
    }
    fcr__conn *c = r->conn;
    if (c->queued >= r->srv->cfg.limits.max_output_queue) {
        e = FCR_EAGAIN;
        goto fail;
    }
    if (len == 0) {
        if (release)
            release(arg);
        return 0;
    }
    fcr__req_seal(r, false, 0, 0);
    size_t nrec = (len + FCGI_MAX_CONTENT - 1) / FCGI_MAX_CONTENT;
    /* One block holds every record's header; padding comes from a static zero block. Room for
     * every segment is reserved first, so the pushes below cannot fail. */
    uint8_t *hdrs = malloc(nrec * FCGI_HEADER_LEN);
    if (!hdrs || fcr__conn_reserve(c, nrec * 3 + 1) != 0) {
        free(hdrs);
        e = FCR_ENOMEM;
        goto fail;
    }
    const uint8_t *p = buf;
    for (size_t i = 0; i < nrec; i++) {
        size_t n = len < FCGI_MAX_CONTENT ? len : FCGI_MAX_CONTENT;
        uint8_t pad = fcr__padding_for(n);
        bool last = (i + 1 == nrec);
        fcr__header_encode(hdrs + i * FCGI_HEADER_LEN, FCGI_STDOUT, r->id, (uint16_t)n, pad);
        fcr__conn_push(c, hdrs + i * FCGI_HEADER_LEN, FCGI_HEADER_LEN, NULL, NULL);
        fcr__conn_push(c, p, n, last ? release : NULL, last ? arg : NULL);
        if (pad)
            fcr__conn_push(c, zeros, pad, NULL, NULL);
        p += n;
        len -= n;
    }
    fcr__conn_push(c, NULL, 0, free_arg, hdrs);
    fcr__conn_want_flush(c);
    return 0;
fail:
    if (release)
        release(arg);
    return e;
}

int fcr_req_printf(fcr_req *r, const char *fmt, ...)
{
    char small[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0)
        return FCR_EINVAL;
    if ((size_t)n < sizeof small) {
        int e = fcr_req_write(r, small, (size_t)n);
        return e ? e : n;
    }
    char *big = malloc((size_t)n + 1);
    if (!big)
        return FCR_ENOMEM;
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    int e = fcr_req_write(r, big, (size_t)n);
    free(big);
    return e ? e : n;
}

int fcr_req_write_stderr(fcr_req *r, const void *buf, size_t len)
{
    if (!r || (!buf && len))
        return FCR_EINVAL;
    if (!req_writable(r))
        return FCR_ECLOSED;
    fcr__conn *c = r->conn;
    if (c->queued >= r->srv->cfg.limits.max_output_queue)
        return FCR_EAGAIN;
    if (len == 0)
        return 0;
    fcr__req_seal(r, false, 0, 0);
    const uint8_t *p = buf;
    while (len) {
        size_t n = len < FCGI_MAX_CONTENT ? len : FCGI_MAX_CONTENT;
        uint8_t pad = fcr__padding_for(n);
        uint8_t *rec = malloc(FCGI_HEADER_LEN + n + pad);
        if (!rec)
            return FCR_ENOMEM;
        fcr__header_encode(rec, FCGI_STDERR, r->id, (uint16_t)n, pad);
        memcpy(rec + FCGI_HEADER_LEN, p, n);
        memset(rec + FCGI_HEADER_LEN + n, 0, pad);
        int e = fcr__conn_push(c, rec, FCGI_HEADER_LEN + n + pad, free_arg, rec);
        if (e)
            return e;
        r->state |= FCR__REQ_STDERR_USED;
        p += n;
        len -= n;
    }
    fcr__conn_want_flush(c);
    return 0;
}

/* Ends a request the application has not been given, with a minimal CGI response, and drops
 * the core's hold on it. The caller must not use `r` afterwards. */
void fcr__req_reject(fcr_req *r, const char *status_line)
{
    r->state |= FCR__REQ_DISCARD;
    fcr__conn *c = r->conn;
    if (!c || (r->state & (FCR__REQ_ENDED | FCR__REQ_DELIVERED)))
        return;
    char head[200];
    int n = snprintf(head, sizeof head,
                     "Status: %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n\r\n%s\n",
                     status_line, strlen(status_line) + 1, status_line);
    if (n > 0 && (size_t)n < sizeof head)
        out_append(r, (const uint8_t *)head, (size_t)n);
    /* out_append marked the request dirty: it must not stay on the server's list once ended. */
    fcr__server_unmark_dirty(r->srv, r);
    fcr__req_seal(r, true, FCGI_REQUEST_COMPLETE, 0);
    fcr__conn_remove_req(c, r);
    if (r->busy == 0)
        fcr__req_unref(r);
    else
        r->state |= FCR__REQ_FINISHED;
}

int fcr_req_finish(fcr_req *r, uint32_t app_status)
{
    if (!r)
        return FCR_EINVAL;
    if (r->state & FCR__REQ_FINISHED)
        return FCR_EINVAL;
    r->state |= FCR__REQ_FINISHED;
    r->on_drain = NULL;
    r->on_abort = NULL;
    int ret = 0;
    fcr__conn *c = r->conn;
    if (c && !(r->state & (FCR__REQ_ABORTED | FCR__REQ_ENDED))) {
        fcr__server_unmark_dirty(r->srv, r);
        fcr__req_seal(r, true, FCGI_REQUEST_COMPLETE, app_status);
        if (r->conn)
            fcr__conn_remove_req(r->conn, r);
    } else {
        ret = (r->state & FCR__REQ_ABORTED) ? FCR_ECLOSED : 0;
        fcr__server_unmark_dirty(r->srv, r);
    }
    if (r->busy == 0)
        fcr__req_unref(r);
    return ret;
}

/* Aborts a request: with `send_end`, END_REQUEST goes out at once (ABORT_REQUEST); without, the
 * connection is gone. The application's abort callback runs last, as it may finish the
 * request. */
void fcr__req_abort(fcr_req *r, bool send_end)
{
    fcr__conn *c = r->conn;
    fcr__server_unmark_dirty(r->srv, r);
    if (c) {
        c->queued -= out_content(r);
        fcr__buf_free(&r->out);
        if (send_end && !(r->state & FCR__REQ_ENDED))
            fcr__req_seal(r, true, FCGI_REQUEST_COMPLETE, 0);
        fcr__conn_remove_req(c, r);
    }
    if (!(r->state & FCR__REQ_DELIVERED)) {
        fcr__req_unref(r);
        return;
    }
    r->state |= FCR__REQ_ABORTED;
    if (r->input_error == 0)
        r->input_error = FCR_ECLOSED;
    void (*cb)(fcr_req *) = r->on_abort;
    r->on_abort = NULL;
    r->on_drain = NULL;
    if (cb && !(r->state & FCR__REQ_FINISHED))
        cb(r);
}

/* ---- accessors -------------------------------------------------------------------------- */

fcr_role fcr_req_role(const fcr_req *r)
{
    return r ? (fcr_role)r->role : (fcr_role)0;
}

unsigned fcr_req_id(const fcr_req *r)
{
    return r ? r->id : 0;
}

bool fcr_req_keep_conn(const fcr_req *r)
{
    return r && (r->flags & FCGI_KEEP_CONN) != 0;
}

fcr_server *fcr_req_server(const fcr_req *r)
{
    return r ? r->srv : NULL;
}

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
        r->conn->paused_app = false;
        r->conn->paused_by = NULL;
        fcr__conn_resume(r->conn);
    }
}

void fcr_req_set_userdata(fcr_req *r, void *data)
{
    if (r)
        r->userdata = data;
}

void *fcr_req_userdata(const fcr_req *r)
{
    return r ? r->userdata : NULL;
}

void fcr__req_set_fwdata(fcr_req *r, void *data, void (*release)(void *data))
{
    r->fwdata = data;
    r->fwrelease = release;
}

void *fcr__req_fwdata(const fcr_req *r)
{
    return r->fwdata;
}

void fcr_req_on_abort(fcr_req *r, void (*cb)(fcr_req *r))
{
    if (r)
        r->on_abort = cb;
}

bool fcr_req_aborted(const fcr_req *r)
{
    return r && (r->state & FCR__REQ_ABORTED) != 0;
}

void fcr_req_on_drain(fcr_req *r, void (*cb)(fcr_req *r))
{
    if (!r)
        return;
    r->on_drain = cb;
    if (cb && r->conn)
        fcr__conn_want_flush(r->conn);
}

size_t fcr_req_queued(const fcr_req *r)
{
    return r && r->conn && !(r->state & FCR__REQ_ABORTED) ? r->conn->queued : 0;
}
