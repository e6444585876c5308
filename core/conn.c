/* Connections: reading and parsing, request dispatch, closing and timeouts (the output queue is
 * in outq.c). */
#include "internal.h"

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

/* After a KEEP_CONN=0 response the peer may still be sending a body the application refused
 * (413): read and discard up to the body limit (at least 64 KiB) for up to 5 s, so that its
 * writes do not fail and it sees the response instead of a reset. */
#define DRAIN_MIN_BYTES   65536
#define DRAIN_MAX_SECONDS 5.0

/* A connection kept open at shutdown for the request it is sending closes when nothing came
 * for this long. */
#define SHUTDOWN_IDLE_SECONDS 1.0

static void read_cb(struct ev_loop *loop, ev_io *w, int revents);

fcr__conn *fcr__conn_new(fcr_server *srv, int fd)
{
    fcr__conn *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->srv = srv;
    c->fd = fd;
    c->state = FCR__CONN_OPEN;
    fcr__parser_init(&c->parser);
    ev_io_init(&c->rio, read_cb, fd, EV_READ);
    ev_io_init(&c->wio, fcr__conn_write_cb, fd, EV_WRITE);
    c->rio.data = c->wio.data = c;
    c->last_activity = c->out_progress = ev_now(srv->loop);
    c->last_call = srv->shutting_down; /* let in before the listeners closed */
    c->next = srv->conns;
    if (srv->conns)
        srv->conns->prev = c;
    else
        srv->conns_tail = c;
    srv->conns = c;
    srv->stats.conns++;
    srv->stats.accepted++;
    if (srv->conn_gauge)
        atomic_fetch_add_explicit(srv->conn_gauge, 1, memory_order_relaxed);
    ev_io_start(srv->loop, &c->rio);
    c->reading = true;
    return c;
}

bool fcr__input_waiting(int fd)
{
    char b;
    return recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) > 0;
}

void fcr__conn_touch(fcr__conn *c)
{
    fcr_server *srv = c->srv;
    c->last_activity = ev_now(srv->loop);
    if (srv->conns == c)
        return;
    /* Unlink, then put in front: the list runs from the most to the least recently active. */
    c->prev->next = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        srv->conns_tail = c->prev;
    c->prev = NULL;
    c->next = srv->conns;
    srv->conns->prev = c;
    srv->conns = c;
}

fcr__conn *fcr__conn_oldest_idle(fcr_server *srv)
{
    for (fcr__conn *c = srv->conns_tail; c; c = c->prev) {
        if (c->state == FCR__CONN_OPEN && c->nreqs == 0 && fcr__conn_queue_empty(c) && !c->in_feed)
            return c;
    }
    return NULL;
}

static fcr_req *find_req(const fcr__conn *c, uint16_t id)
{
    for (fcr_req *r = c->reqs; r; r = r->next) {
        if (r->id == id)
            return r;
    }
    return NULL;
}

/* Input is read while the connection is open (or still has requests receiving input after a
 * close was decided) and nothing asked to pause. */
static bool reading_allowed(const fcr__conn *c)
{
    return (c->state == FCR__CONN_OPEN ||
            (c->state == FCR__CONN_CLOSE_AFTER_FLUSH && c->nreqs > 0)) &&
           !c->paused_app && !c->paused_output;
}

static void update_reading(fcr__conn *c)
{
    struct ev_loop *loop = c->srv->loop;
    bool want = reading_allowed(c) || c->state == FCR__CONN_DRAINING;
    if (want && c->pend_len > c->pend_off) {
        ev_feed_event(loop, &c->rio, EV_READ);
        return;
    }
    if (want && !c->reading) {
        ev_io_start(loop, &c->rio);
        c->reading = true;
    } else if (!want && c->reading) {
        ev_io_stop(loop, &c->rio);
        c->reading = false;
    }
}

void fcr__conn_resume(fcr__conn *c)
{
    update_reading(c);
}

void fcr__conn_start_drain(fcr__conn *c)
{
    /* Half-close, then read and discard what the peer still sends (bounded), so that closing
     * with unread input does not make the kernel send a reset. */
    shutdown(c->fd, SHUT_WR);
    c->state = FCR__CONN_DRAINING;
    c->drained = 0;
    c->out_progress = ev_now(c->srv->loop);
    free(c->pending);
    c->pending = NULL;
    c->pend_len = c->pend_off = 0;
    update_reading(c);
}

/* ---- requests on the connection --------------------------------------------------------- */

void fcr__conn_remove_req(fcr__conn *c, fcr_req *r)
{
    for (fcr_req **pp = &c->reqs; *pp; pp = &(*pp)->next) {
        if (*pp == r) {
            *pp = r->next;
            c->nreqs--;
            c->srv->stats.active_reqs--;
            break;
        }
    }
    r->next = NULL;
    r->conn = NULL;
    fcr__conn_touch(c);
    if (c->paused_by == r) { /* it paused reading and will not resume it any more */
        c->paused_by = NULL;
        c->paused_app = false;
    }
    if (c->state == FCR__CONN_OPEN && !(r->flags & FCGI_KEEP_CONN)) {
        c->state = FCR__CONN_CLOSE_AFTER_FLUSH;
    } else if (c->state == FCR__CONN_OPEN && c->srv->shutting_down) {
        c->state = FCR__CONN_CLOSE_AFTER_FLUSH;
        c->retiring = true;
    } else if (c->state == FCR__CONN_CLOSE_AFTER_FLUSH && !(r->flags & FCGI_KEEP_CONN)) {
        c->retiring = false; /* the web server asked for the close */
    }
    fcr__conn_want_flush(c);
}

static bool input_complete(const fcr_req *r)
{
    switch (r->role) {
    case FCR_AUTHORIZER:
        return (r->state & FCR__REQ_PARAMS_DONE) != 0;
    case FCR_FILTER:
        return (r->state & FCR__REQ_STDIN_DONE) && (r->state & FCR__REQ_DATA_DONE);
    default:
        return (r->state & FCR__REQ_STDIN_DONE) != 0;
    }
}

static void deliver(fcr_req *r)
{
    fcr_server *srv = r->srv;
    r->state |= FCR__REQ_DELIVERED;
    srv->stats.requests++;
    r->busy++;
    srv->cfg.on_request(r, srv->cfg.data);
    r->busy--;
    if ((r->state & FCR__REQ_FINISHED) && r->busy == 0)
        fcr__req_unref(r);
}

static void params_complete(fcr_req *r)
{
    fcr_server *srv = r->srv;
    if (srv->cfg.on_params) {
        r->state |= FCR__REQ_IN_PARAMS;
        r->busy++;
        srv->cfg.on_params(r, srv->cfg.data);
        r->busy--;
        r->state &= ~(unsigned)FCR__REQ_IN_PARAMS;
        if (r->state & FCR__REQ_FINISHED) { /* answered at once */
            if (r->busy == 0)
                fcr__req_unref(r);
            return;
        }
    }
    if ((r->state & FCR__REQ_STREAMING) || input_complete(r))
        deliver(r);
}

static void end_record(fcr__conn *c, uint16_t id, uint8_t protocol_status, uint8_t flags)
{
    uint8_t rec[16];
    fcr__end_request_encode(rec, id, 0, protocol_status);
    fcr__conn_push_record(c, rec, sizeof rec);
    if (!(flags & FCGI_KEEP_CONN) && c->nreqs == 0 && c->state == FCR__CONN_OPEN)
        c->state = FCR__CONN_CLOSE_AFTER_FLUSH;
}

static int on_begin(void *ctx, uint16_t id, uint16_t role, uint8_t flags)
{
    fcr__conn *c = ctx;
    fcr_server *srv = c->srv;
    const fcr_limits *lim = &srv->cfg.limits;
    if (c->state != FCR__CONN_OPEN)
        return 0;
    if (find_req(c, id)) {
        fcr__log_peer(c->srv, FCR_LOG_WARN, "BEGIN_REQUEST for active request id %u", id);
        return FCR_EPROTO;
    }
    if (role < 1 || role > 3 || !(srv->cfg.roles & FCR_ROLE_BIT(role))) {
        fcr__log_peer(c->srv, FCR_LOG_INFO, "request %u: role %u not served", id, role);
        end_record(c, id, FCGI_UNKNOWN_ROLE, flags);
        return 0;
    }
    if (!srv->cfg.multiplex && c->nreqs > 0) {
        end_record(c, id, FCGI_CANT_MPX_CONN, flags);
        return 0;
    }
    /* While shutting down, a connection kept open for the request it was sending gets that one
     * request; anything else is refused. */
    bool last_call = srv->shutting_down && c->last_call && c->nreqs == 0;
    if (c->nreqs >= lim->max_reqs_per_conn || srv->stats.active_reqs >= lim->max_reqs ||
        (srv->shutting_down && !last_call)) {
        fcr__log_peer(c->srv, FCR_LOG_WARN,
                      "request %u: overloaded (%u on this connection, %u in all)", id, c->nreqs,
                      srv->stats.active_reqs);
        end_record(c, id, FCGI_OVERLOADED, flags);
        return 0;
    }
    fcr_req *r = fcr__req_new(c, id, (uint8_t)role, flags);
    if (!r)
        return FCR_ENOMEM;
    c->last_call = false;
    c->begun++;
    fcr__conn_touch(c);
    r->next = c->reqs;
    c->reqs = r;
    c->nreqs++;
    srv->stats.active_reqs++;
    return 0;
}

static int on_stream(void *ctx, uint8_t type, uint16_t id, const uint8_t *buf, size_t len)
{
    fcr__conn *c = ctx;
    fcr_req *r = find_req(c, id);
    if (!r || (r->state & (FCR__REQ_DISCARD | FCR__REQ_ENDED)))
        return 0; /* inactive id, or input past a limit */
    if (type == FCGI_PARAMS) {
        if (r->state & FCR__REQ_PARAMS_DONE)
            return 0;
        if (len)
            return fcr__req_params_chunk(r, buf, len);
        int e = fcr__req_params_end(r);
        if (e < 0)
            return e;
        if (e == 0)
            params_complete(r);
        return 0;
    }
    if (!(r->state & FCR__REQ_PARAMS_DONE)) {
        fcr__log_peer(c->srv, FCR_LOG_WARN, "request %u: input stream before PARAMS ended", id);
        return FCR_EPROTO;
    }
    int idx = type == FCGI_DATA ? 1 : 0;
    unsigned done = idx ? FCR__REQ_DATA_DONE : FCR__REQ_STDIN_DONE;
    if ((idx == 1 && r->role != FCR_FILTER) || (r->state & done))
        return 0;
    if (r->state & FCR__REQ_STREAMING) {
        if (len == 0)
            r->state |= done;
        r->input_at = ev_now(c->srv->loop);
        r->busy++;
        int rc = r->chunk_cb(r, idx ? FCR_DATA : FCR_STDIN, buf, len);
        r->busy--;
        if (r->state & FCR__REQ_FINISHED) {
            if (r->busy == 0)
                fcr__req_unref(r);
            return 0;
        }
        if (rc == FCR_EAGAIN) {
            c->paused_app = true;
            c->paused_by = r;
            return FCR_EAGAIN;
        }
        return 0;
    }
    if (r->state & FCR__REQ_DELIVERED)
        return 0;
    if (len) {
        int rc = fcr__req_body_chunk(r, idx, buf, len);
        if (rc < 0)
            return rc;
        if (rc == 1)
            deliver(r); /* over the limit: the application answers now */
        return 0;
    }
    r->state |= done;
    if (input_complete(r))
        deliver(r);
    return 0;
}

static int on_abort(void *ctx, uint16_t id)
{
    fcr__conn *c = ctx;
    fcr_req *r = find_req(c, id);
    if (r && !(r->state & FCR__REQ_ENDED)) {
        fcr_log(FCR_LOG_DEBUG, "request %u aborted by the web server", id);
        fcr__req_abort(r, true);
    }
    return 0;
}

static int on_management(void *ctx, uint8_t type, const uint8_t *content, size_t len)
{
    fcr__conn *c = ctx;
    fcr_server *srv = c->srv;
    if (type == FCGI_GET_VALUES) {
        fcr__values v = {srv->cfg.limits.max_conns, srv->cfg.limits.max_reqs, srv->cfg.multiplex};
        uint8_t out[128];
        size_t n = fcr__get_values_result(content, len, &v, out, sizeof out);
        if (n)
            fcr__conn_push_record(c, out, n);
    } else {
        uint8_t rec[16];
        fcr__unknown_type_encode(rec, type);
        fcr__conn_push_record(c, rec, sizeof rec);
    }
    return 0;
}

static int on_ignored(void *ctx, const fcr__fcgi_header *h)
{
    (void)ctx;
    fcr_log(FCR_LOG_DEBUG, "ignored record type %u for id %u", h->type, h->id);
    return 0;
}

static const fcr__parser_events events = {
    .begin = on_begin,
    .stream = on_stream,
    .abort = on_abort,
    .management = on_management,
    .ignored = on_ignored,
};

/* ---- reading ---------------------------------------------------------------------------- */

static void drain_read(fcr__conn *c)
{
    fcr_server *srv = c->srv;
    ssize_t n = recv(c->fd, srv->rbuf, srv->rbuf_cap, 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    size_t max =
        srv->cfg.limits.max_body > DRAIN_MIN_BYTES ? srv->cfg.limits.max_body : DRAIN_MIN_BYTES;
    if (n <= 0 || (c->drained += (size_t)n) > max)
        fcr__conn_close(c, NULL);
}

static void read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    fcr__conn *c = w->data;
    fcr_server *srv = c->srv;
    if (c->state == FCR__CONN_DRAINING) {
        drain_read(c);
        return;
    }
    if (!reading_allowed(c)) {
        update_reading(c);
        return;
    }
    const uint8_t *buf;
    size_t len;
    bool from_pending = c->pend_len > c->pend_off;
    if (from_pending) {
        buf = c->pending + c->pend_off;
        len = c->pend_len - c->pend_off;
    } else {
        ssize_t n = recv(c->fd, srv->rbuf, srv->rbuf_cap, 0);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        if (n <= 0) {
            fcr__conn_close(c, n == 0 ? NULL : strerror(errno));
            return;
        }
        buf = srv->rbuf;
        len = (size_t)n;
    }
    c->in_feed = true;
    long used = fcr__parser_feed(&c->parser, &events, c, buf, len);
    c->in_feed = false;
    if (used < 0) {
        if (used == FCR_EPROTO)
            srv->stats.protocol_errors++;
        fcr__conn_close(c, fcr_strerror((int)used));
        return;
    }
    if (c->doomed) {
        fcr__conn_close(c, c->doomed);
        return;
    }
    if (from_pending) {
        c->pend_off += (size_t)used;
        if (c->pend_off == c->pend_len) {
            free(c->pending);
            c->pending = NULL;
            c->pend_len = c->pend_off = 0;
        }
    } else if ((size_t)used < len) {
        /* Paused mid-buffer: keep the rest for later, as the read buffer is shared. */
        c->pending = malloc(len - (size_t)used);
        if (!c->pending) {
            fcr__conn_close(c, "out of memory");
            return;
        }
        memcpy(c->pending, buf + used, len - (size_t)used);
        c->pend_len = len - (size_t)used;
        c->pend_off = 0;
    }
    if (fcr__parser_idle(&c->parser))
        c->partial_since = 0;
    else if (c->partial_since == 0)
        c->partial_since = ev_now(loop);
    update_reading(c);
}

/* ---- closing and timeouts --------------------------------------------------------------- */

void fcr__conn_close(fcr__conn *c, const char *why)
{
    if (c->in_feed) {
        if (!c->doomed)
            c->doomed = why ? why : "closed";
        return;
    }
    fcr_server *srv = c->srv;
    if (why)
        fcr__log_peer(c->srv, FCR_LOG_INFO, "closing connection: %s", why);
    ev_io_stop(srv->loop, &c->rio);
    ev_io_stop(srv->loop, &c->wio);
    c->in_feed = true; /* callbacks below must not close again */
    /* Output first: queued segments may point into requests' memory. */
    fcr__conn_release_all(c);
    c->queued = 0;
    while (c->reqs) {
        fcr_req *r = c->reqs;
        if (r->content_length >= 0)
            fcr__log_peer(c->srv, FCR_LOG_INFO,
                          "request %u aborted: connection closed (%s) with %zu of %lld body bytes "
                          "received",
                          r->id, why ? why : "by the web server", r->body[0].len,
                          r->content_length);
        else
            fcr__log_peer(c->srv, FCR_LOG_INFO,
                          "request %u aborted: connection closed (%s) with %zu body bytes received",
                          r->id, why ? why : "by the web server", r->body[0].len);
        fcr__req_abort(r, false);
    }
    for (fcr__conn **pp = &srv->flush_list; *pp; pp = &(*pp)->wnext) {
        if (*pp == c) {
            *pp = c->wnext;
            break;
        }
    }
    fcr__parser_reset(&c->parser);
    free(c->pending);
    close(c->fd);
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        srv->conns_tail = c->prev;
    srv->stats.conns--;
    if (srv->conn_gauge)
        atomic_fetch_sub_explicit(srv->conn_gauge, 1, memory_order_relaxed);
    free(c);
    fcr__server_conn_closed(srv);
}

void fcr__conn_sweep(fcr__conn *c, double now)
{
    const fcr_limits *lim = &c->srv->cfg.limits;
    if (c->state == FCR__CONN_DRAINING) {
        if (now - c->out_progress > DRAIN_MAX_SECONDS)
            fcr__conn_close(c, NULL);
        return;
    }
    if (!fcr__conn_queue_empty(c) && now - c->out_progress > lim->output_timeout) {
        fcr__conn_close(c, "output stalled past the output timeout");
        return;
    }
    for (fcr_req *r = c->reqs; r; r = r->next) {
        bool waiting = !(r->state & FCR__REQ_DELIVERED) ||
                       ((r->state & FCR__REQ_STREAMING) && !input_complete(r) && !c->paused_app);
        /* A streamed body may take longer than the timeout in all: it must only never stall
         * for that long (while the application paused it, it is not waiting). */
        double since = r->input_at > r->begin_time ? r->input_at : r->begin_time;
        if (waiting && now - since > lim->input_timeout) {
            fcr__conn_close(c, "request input not complete before the input timeout");
            return;
        }
    }
    if (c->nreqs == 0 && fcr__conn_queue_empty(c)) {
        /* At a restart it is handed over as soon as it is idle (and waits while the channel
         * is full); at a stop a connection kept for its first request gets a short while to
         * send it. */
        if (c->srv->handing_over) {
            if (c->state == FCR__CONN_OPEN && fcr__conn_hand_over(c))
                return;
        } else if (c->srv->shutting_down && c->partial_since == 0 &&
                   now - c->last_activity > SHUTDOWN_IDLE_SECONDS) {
            fcr__conn_close(c, NULL);
            return;
        }
        if (c->partial_since && now - c->partial_since > lim->input_timeout) {
            fcr__conn_close(c, "partial record not completed before the input timeout");
            return;
        }
        if (now - c->last_activity > lim->idle_timeout)
            fcr__conn_close(c, NULL);
    }
}
