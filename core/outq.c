/* Connections: the output queue. Records and application output wait here as segments (the
 * caller's memory, released once written) until one sendmsg() per connection and loop
 * iteration writes them; back-pressure pauses reading and calls the requests' drain
 * callbacks. */
#include "internal.h"

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAX_IOV 64

/* ---- output queue ----------------------------------------------------------------------- */

bool fcr__conn_queue_empty(const fcr__conn *c)
{
    return c->shead == c->segs.n;
}

static fcr__seg *seg_at(const fcr__conn *c, size_t i)
{
    return (fcr__seg *)c->segs.v + i;
}

int fcr__conn_reserve(fcr__conn *c, size_t nsegs)
{
    if (c->segs.cap - c->segs.n >= nsegs)
        return 0;
    if (c->shead > 0) { /* compact */
        memmove(c->segs.v, seg_at(c, c->shead), (c->segs.n - c->shead) * sizeof(fcr__seg));
        c->segs.n -= c->shead;
        c->shead = 0;
    }
    return fcr__vec_reserve(&c->segs, NULL, sizeof(fcr__seg), c->segs.n + nsegs);
}

int fcr__conn_push(fcr__conn *c, const uint8_t *ptr, size_t len, void (*release)(void *), void *arg)
{
    if (fcr__conn_reserve(c, 1) != 0) {
        if (release)
            release(arg);
        fcr__conn_fail(c, "out of memory");
        return FCR_ENOMEM;
    }
    if (fcr__conn_queue_empty(c))
        c->out_progress = ev_now(c->srv->loop);
    *seg_at(c, c->segs.n++) = (fcr__seg){ptr, len, release, arg};
    c->queued += len;
    return 0;
}

void fcr__conn_push_record(fcr__conn *c, const uint8_t *rec, size_t len)
{
    uint8_t *copy = malloc(len);
    if (!copy) {
        fcr__conn_fail(c, "out of memory");
        return;
    }
    memcpy(copy, rec, len);
    if (fcr__conn_push(c, copy, len, free, copy) == 0)
        fcr__conn_want_flush(c);
}

void fcr__conn_want_flush(fcr__conn *c)
{
    if (!c->in_flush_list) {
        c->in_flush_list = true;
        c->wnext = c->srv->flush_list;
        c->srv->flush_list = c;
    }
}

void fcr__conn_fail(fcr__conn *c, const char *why)
{
    if (!c->doomed)
        c->doomed = why;
    fcr__conn_want_flush(c);
}

/* Releases the segments covered by `n` written bytes (and empty segments reached). */
static void advance(fcr__conn *c, size_t n)
{
    c->queued -= n;
    while (c->shead < c->segs.n) {
        fcr__seg *s = seg_at(c, c->shead);
        size_t left = s->len - c->soff;
        if (n < left) {
            c->soff += n;
            return;
        }
        n -= left;
        c->soff = 0;
        c->shead++;
        if (s->release)
            s->release(s->arg);
    }
    c->shead = c->segs.n = 0;
}

void fcr__conn_release_all(fcr__conn *c)
{
    while (c->shead < c->segs.n) {
        fcr__seg *s = seg_at(c, c->shead++);
        if (s->release)
            s->release(s->arg);
    }
    fcr__vec_free(&c->segs);
    c->shead = c->soff = 0;
}

/* Runs the drain callbacks of the connection's requests, each at most once per flush (a
 * callback that fills the queue again registers itself for the next one), while the queue stays
 * below half the cap. The list is walked again after each call, as a callback may finish
 * requests. */
static void call_drain_callbacks(fcr__conn *c, size_t low)
{
    unsigned epoch = ++c->drain_epoch;
    for (fcr_req *r = c->reqs; r && c->queued < low && !c->doomed;) {
        if (r->on_drain && r->drain_epoch != epoch) {
            void (*cb)(fcr_req *) = r->on_drain;
            r->on_drain = NULL;
            r->drain_epoch = epoch;
            cb(r);
            r = c->reqs;
        } else {
            r = r->next;
        }
    }
}

/* TCP_CORK on or off: while on, the kernel holds partial segments, so that the last answer of
 * a retiring connection and the FIN that follows it leave in one segment (shutdown() sends
 * what is held). A web server that checks a pooled connection before reusing it then always
 * sees the close with the answer, never after it has sent its next request. */
static void set_cork(fcr__conn *c, bool on)
{
    int v = on;
    if (c->tcp && c->corked != on && setsockopt(c->fd, IPPROTO_TCP, TCP_CORK, &v, sizeof v) == 0)
        c->corked = on;
}

void fcr__conn_flush(fcr__conn *c)
{
    if (c->doomed) {
        fcr__conn_close(c, c->doomed);
        return;
    }
    struct ev_loop *loop = c->srv->loop;
    if (c->retiring && c->state == FCR__CONN_CLOSE_AFTER_FLUSH && c->nreqs == 0)
        set_cork(c, true);
    bool blocked = false;
    while (!fcr__conn_queue_empty(c)) {
        struct iovec iov[MAX_IOV];
        int n = 0;
        size_t total = 0;
        for (size_t i = c->shead; i < c->segs.n && n < MAX_IOV; i++) {
            const fcr__seg *s = seg_at(c, i);
            size_t off = (i == c->shead) ? c->soff : 0;
            if (s->len - off == 0)
                continue;
            iov[n].iov_base = (void *)(s->ptr + off);
            iov[n].iov_len = s->len - off;
            total += iov[n].iov_len;
            n++;
        }
        if (n == 0) {
            advance(c, 0);
            continue;
        }
        struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t w = sendmsg(c->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                blocked = true;
                break;
            }
            fcr__conn_close(c, strerror(errno));
            return;
        }
        c->out_progress = ev_now(loop);
        advance(c, (size_t)w);
        if ((size_t)w < total) {
            blocked = true;
            break;
        }
    }
    if (blocked)
        ev_io_start(loop, &c->wio);
    else
        ev_io_stop(loop, &c->wio);

    size_t cap = c->srv->cfg.limits.max_output_queue;
    if (c->queued >= cap) {
        c->paused_output = true;
    } else if (c->queued < cap / 2) {
        c->paused_output = false;
        call_drain_callbacks(c, cap / 2);
    }
    if (c->doomed) {
        fcr__conn_close(c, c->doomed);
        return;
    }
    bool done = fcr__conn_queue_empty(c) && c->nreqs == 0;
    if (done && c->srv->handing_over &&
        (c->state == FCR__CONN_OPEN || (c->state == FCR__CONN_CLOSE_AFTER_FLUSH && c->retiring))) {
        /* A restart: the connection goes to a new worker, with whatever the web server sent
         * meanwhile. Not yet when it is in the middle of a record or the channel is full: it
         * is served meanwhile as a connection kept at shutdown for its next request. */
        set_cork(c, false);
        if (fcr__conn_hand_over(c))
            return;
        if (c->srv->handing_over) {
            c->state = FCR__CONN_OPEN;
            c->last_call = true;
            fcr__conn_resume(c);
            return;
        }
    }
    if (c->state == FCR__CONN_CLOSE_AFTER_FLUSH && done) {
        /* A connection retiring for a shutdown on which a next request has already arrived (or
         * begun to) serves it first: closing now would read it only to drop it. */
        if (c->retiring && (c->pend_len > c->pend_off || fcr__input_waiting(c->fd))) {
            set_cork(c, false);
            c->state = FCR__CONN_OPEN;
            c->last_call = true;
            fcr__conn_resume(c);
            return;
        }
        fcr__conn_start_drain(c);
        return;
    }
    fcr__conn_resume(c);
}

void fcr__conn_write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    fcr__conn_flush(w->data);
}
