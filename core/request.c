/* Requests: their life (creation, reuse through the server's pool, release), abort, and the
 * plain accessors. The params table and bodies are in input.c, the output records in output.c. */
#include "internal.h"
#include "framework.h"

#include <stdlib.h>
#include <string.h>

/* What a released request keeps for the next one, when its server is alive: at most POOL_MAX
 * requests (the requests in flight at a time, up to a limit), each with a PARAMS buffer of up
 * to 16 KiB (a web server's usual params take 1-4 KiB), a params block for up to 256 params
 * (8 KiB, the default max_params), an output buffer of up to 40 KiB (the framework copies
 * answers up to 32 KiB into it) and a STDIN buffer of up to 16 KiB. Larger buffers belong to
 * rare requests and are freed. A server keeps at most 64 * 80 KiB = 5 MiB this way, and only
 * as much as its busiest moments used. */
#define POOL_MAX      64
#define POOL_PBUF_MAX 16384
#define POOL_PCAP_MAX 256
#define POOL_OUT_MAX  (40 * 1024)
#define POOL_BODY_MAX 16384

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
        fcr__buf body = {r->body[0].p, 0, r->body[0].cap};
        memset(r, 0, sizeof *r);
        r->body[0] = body;
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
    /* The input timeout counts from the first byte of the request: a BEGIN_REQUEST record that
     * took its time to arrive has used part of it already. */
    r->begin_time = c->partial_since ? c->partial_since : ev_now(c->srv->loop);
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
    /* A small STDIN buffer is kept: a request with a small body then allocates nothing. */
    if (r->body[0].cap > POOL_BODY_MAX)
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

void fcr__req_abort(fcr_req *r, bool send_end)
{
    fcr__conn *c = r->conn;
    fcr__server_unmark_dirty(r->srv, r);
    if (c) {
        fcr__req_drop_output(r);
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
    void (*fw)(fcr_req *) = r->fwabort;
    r->fwabort = NULL;
    r->on_drain = NULL;
    /* The framework first: it may release the request (finish it) when nobody else holds it. */
    if (fw && !(r->state & FCR__REQ_FINISHED)) {
        r->refs++;
        fw(r);
        if (r->state & FCR__REQ_FINISHED) {
            fcr__req_unref(r);
            return;
        }
        r->refs--; /* not finished: the application still holds its reference */
    }
    void (*cb)(fcr_req *) = r->on_abort;
    r->on_abort = NULL;
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

void fcr__req_on_fwabort(fcr_req *r, void (*cb)(fcr_req *req))
{
    r->fwabort = cb;
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
