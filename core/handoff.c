/* Connections handed over at a restart. A worker retired by a restart passes each of its
 * connections, at a moment it is idle between requests, over its channel to the supervisor,
 * which passes it on to a worker of the new generation; that one serves its next request. The
 * socket never closes, so what the web server sends meanwhile waits in it, also from one that
 * reuses a connection without first checking whether the application closed it. */
#include "internal.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- the channel ------------------------------------------------------------------------ */

typedef union fd_control {
    struct cmsghdr h;
    char buf[CMSG_SPACE(sizeof(int))];
} fd_control;

int fcr__chan_send(int chan, int type, int fd)
{
    char byte = (char)type;
    struct iovec iov = {.iov_base = &byte, .iov_len = 1};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    fd_control u;
    if (fd >= 0) {
        memset(&u, 0, sizeof u);
        msg.msg_control = u.buf;
        msg.msg_controllen = sizeof u.buf;
        struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cm), &fd, sizeof fd);
    }
    ssize_t n;
    do
        n = sendmsg(chan, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    return n == 1 ? 0 : -1;
}

int fcr__chan_recv(int chan, int *fd)
{
    char byte = 0;
    struct iovec iov = {.iov_base = &byte, .iov_len = 1};
    fd_control u;
    struct msghdr msg = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf};
    *fd = -1;
    ssize_t n;
    do
        n = recvmsg(chan, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    if (n <= 0)
        return n == 0 ? 0 : -1;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
        if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
            continue;
        size_t count = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < count; i++) {
            int got;
            memcpy(&got, CMSG_DATA(cm) + i * sizeof(int), sizeof got);
            if (*fd < 0)
                *fd = got;
            else
                close(got); /* one descriptor a message */
        }
    }
    return (unsigned char)byte;
}

/* ---- the worker's side ------------------------------------------------------------------ */

static bool idle_between_requests(const fcr__conn *c)
{
    return c->nreqs == 0 && fcr__conn_queue_empty(c) && fcr__parser_idle(&c->parser) &&
           c->pend_len == c->pend_off && !c->in_feed && !c->doomed;
}

bool fcr__conn_hand_over(fcr__conn *c)
{
    fcr_server *srv = c->srv;
    if (!srv->handing_over || srv->chan_full || !idle_between_requests(c))
        return false;
    if (fcr__chan_send(srv->chan, FCR__MSG_CONN, c->fd) == 0) {
        /* The message holds a reference to the socket: closing ours does not end it. */
        srv->handed_over++;
        fcr__conn_close(c, NULL);
        return true;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
        srv->chan_full = true;
        ev_io_start(srv->loop, &srv->chan_wio);
        return false;
    }
    fcr_log(FCR_LOG_WARN, "cannot hand connections over to the new workers (%s): closing them",
            strerror(errno));
    srv->handing_over = false;
    return false;
}

/* Room on the channel again: the connections that are idle now go. */
static void chan_write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    fcr_server *srv = w->data;
    ev_io_stop(loop, w);
    srv->chan_full = false;
    for (fcr__conn *c = srv->conns, *next; c && srv->handing_over && !srv->chan_full; c = next) {
        next = c->next;
        if (c->state == FCR__CONN_OPEN)
            fcr__conn_hand_over(c);
    }
}

static void chan_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    fcr_server *srv = w->data;
    for (;;) {
        int fd;
        int type = fcr__chan_recv(srv->chan, &fd);
        if (type < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (type <= 0) { /* the supervisor is gone */
            ev_ref(loop);
            ev_io_stop(loop, w);
            return;
        }
        if (type == FCR__MSG_CONN && fd >= 0)
            fcr__conn_adopt(srv, fd);
        else if (fd >= 0)
            close(fd);
        else if (type == FCR__MSG_CONN)
            fcr_log(FCR_LOG_ERROR, "a connection handed over was lost: out of descriptors");
        if (type == FCR__MSG_RETIRE)
            fcr__server_retire(srv);
    }
}

void fcr__chan_start(fcr_server *srv)
{
    if (srv->chan < 0)
        return;
    ev_io_init(&srv->chan_rio, chan_read_cb, srv->chan, EV_READ);
    ev_io_init(&srv->chan_wio, chan_write_cb, srv->chan, EV_WRITE);
    srv->chan_rio.data = srv->chan_wio.data = srv;
    ev_io_start(srv->loop, &srv->chan_rio);
    ev_unref(srv->loop); /* the channel alone does not keep the loop running */
}

void fcr__chan_stop(fcr_server *srv)
{
    if (srv->chan < 0)
        return;
    if (ev_is_active(&srv->chan_rio)) {
        ev_ref(srv->loop);
        ev_io_stop(srv->loop, &srv->chan_rio);
    }
    ev_io_stop(srv->loop, &srv->chan_wio);
    srv->chan_full = false;
    srv->handing_over = false;
}
