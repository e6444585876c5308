/* Internal: structures shared by the core's request, connection, listener and server code.
 * Names are internal (fcr__, FCR__; fcr_req and fcr_server complete the public opaque types). */
#ifndef FCR__CORE_INTERNAL_H
#define FCR__CORE_INTERNAL_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <fcrest/core.h>

#include "fcgi.h"
#include "framework.h"
#include "mem.h"

typedef struct fcr__conn fcr__conn;
typedef struct fcr__listener fcr__listener;

/* Released requests kept for reuse, with their PARAMS buffer, params block and output buffer.
 * The pool outlives its server while requests the application holds are alive: a request
 * released after fcr_server_free() finds the pool orphaned, frees itself and, the last one,
 * the pool. */
typedef struct fcr__req_pool {
    fcr_req *free; /* linked by next */
    unsigned nfree;
    size_t live; /* requests created and not yet released */
    bool orphan; /* the server is gone */
} fcr__req_pool;

/* One piece of queued output: bytes to write, and what to release when they are written or
 * dropped. */
typedef struct fcr__seg {
    const uint8_t *ptr;
    size_t len;
    void (*release)(void *arg);
    void *arg;
} fcr__seg;

typedef struct fcr__param {
    const char *name;
    const char *value;
    uint32_t nlen;
    uint32_t vlen;
} fcr__param;

enum {
    FCR__REQ_PARAMS_DONE = 1u << 0,
    FCR__REQ_STDIN_DONE = 1u << 1,
    FCR__REQ_DATA_DONE = 1u << 2,
    FCR__REQ_DELIVERED = 1u << 3, /* on_request ran: the application owns the request */
    FCR__REQ_ABORTED = 1u << 4,
    FCR__REQ_FINISHED = 1u << 5, /* fcr_req_finish ran */
    FCR__REQ_STREAMING = 1u << 6,
    FCR__REQ_STDERR_USED = 1u << 7,
    FCR__REQ_DISCARD = 1u << 8,   /* input past a limit: later input is dropped */
    FCR__REQ_IN_PARAMS = 1u << 9, /* inside on_params */
    FCR__REQ_ENDED = 1u << 10,    /* END_REQUEST queued; the id is inactive */
};

struct fcr_req {
    fcr_server *srv;
    fcr__req_pool *pool;
    fcr__conn *conn;                  /* NULL once detached (ended, aborted, connection gone) */
    fcr_req *next;                    /* in conn->reqs, or in pool->free */
    fcr_req *dirty_next, *dirty_prev; /* srv->dirty: open STDOUT record to flush */
    bool dirty;
    uint16_t id;
    uint8_t role;
    uint8_t flags;
    unsigned state;
    int refs;             /* the application/core's hold + the END_REQUEST record's */
    int busy;             /* > 0 while a core callback into the application runs */
    unsigned drain_epoch; /* the connection's drain round that last called on_drain */
    int input_error;
    double begin_time;
    size_t max_body;
    long long content_length; /* -1 when absent or malformed */

    fcr__buf pbuf;      /* the raw PARAMS stream, decoded in place */
    fcr__param *params; /* one block: the params, then the hash index */
    size_t nparams;
    size_t pcap;
    uint32_t *pindex; /* open addressing: param index + 1, 0 for a free slot */
    size_t pmask;     /* index slots - 1 */

    fcr__buf body[2]; /* STDIN, DATA */
    fcr_chunk_cb chunk_cb;

    fcr__buf out;       /* open STDOUT record: 8 header bytes, then content (len 0: none open) */
    fcr__buf out_final; /* the final records' buffer, queued until END_REQUEST's reference goes */

    void (*on_abort)(fcr_req *req);
    void (*on_drain)(fcr_req *req);
    void *userdata; /* the application's (fcr_req_set_userdata) */
    void *fwdata;   /* the framework's (core/framework.h) */
    void (*fwrelease)(void *fwdata);
    void (*fwabort)(fcr_req *req); /* the framework's abort watch, called before on_abort */
    double input_at; /* last input of a streaming request (its input timeout runs from it) */
};

enum fcr__conn_state { FCR__CONN_OPEN, FCR__CONN_CLOSE_AFTER_FLUSH, FCR__CONN_DRAINING };

struct fcr__conn {
    fcr_server *srv;
    int fd;
    ev_io rio;
    ev_io wio;
    fcr__conn *prev, *next; /* srv->conns */
    fcr__conn *wnext;       /* srv->flush list */
    bool in_flush_list;
    bool reading;        /* rio started */
    bool paused_app;     /* a chunk callback asked to pause */
    fcr_req *paused_by;  /* the request whose chunk callback paused reading */
    bool paused_output;  /* queued output above the cap */
    bool in_feed;        /* inside the parser: closing is deferred */
    bool last_call;      /* kept open by a shutdown: may begin one more request */
    bool retiring;       /* closing for a shutdown, not because the web server asked */
    bool tcp;            /* a TCP connection */
    bool corked;         /* TCP_CORK set: the last answer goes out with the FIN */
    unsigned long begun; /* requests begun on the connection */
    const char *doomed;  /* close at the next safe point, for this reason */
    enum fcr__conn_state state;
    fcr__parser parser;
    fcr_req *reqs;
    unsigned nreqs;
    uint8_t *pending; /* input not yet consumed while paused */
    size_t pend_len;
    size_t pend_off;
    fcr__vec segs; /* of fcr__seg: those from shead up to segs.n are queued, in order */
    size_t shead;
    size_t soff;    /* bytes of segs[shead] already written */
    size_t queued;  /* bytes in segs not yet written + open records of its requests */
    size_t drained; /* bytes discarded while draining */
    unsigned drain_epoch;
    double last_activity;
    double out_progress;
    double partial_since;
};

struct fcr__listener {
    fcr__listener *next;
    fcr_server *srv;
    int fd;
    ev_io io;
    char *unlink_path; /* unix socket file we created */
    pid_t owner;       /* process that created the socket (0: inherited or fd:N) */
    bool tcp;          /* a TCP socket */
};

/* One allow-list entry, or a peer's address brought to the same form: AF_INET with the address
 * in addr[0..3] (IPv4-mapped IPv6 addresses too), or AF_INET6. */
typedef struct fcr__allow {
    int family;
    uint8_t addr[16];
} fcr__allow;

struct fcr_server {
    struct ev_loop *loop;
    fcr_server_config cfg;
    fcr__allow *allow;
    size_t nallow;
    fcr__listener *listeners;
    ev_timer accept_retry;
    double accept_log_at;          /* when an accept failure was last logged */
    unsigned long accept_unlogged; /* failures since, not logged */
    double evict_log_at;           /* when an eviction at the cap was last logged */
    unsigned long evict_unlogged;
    fcr_worker_start_fn worker_start; /* fcr_server_on_worker() */
    fcr_worker_stop_fn worker_stop;
    void *worker_data;

    fcr__supervision supervision; /* fcr__server_set_supervision() */
    _Atomic int64_t *conn_gauge;  /* fcr__server_set_conn_gauge(), or NULL */

    double peer_log_tokens; /* fcr__log_peer's bucket */
    double peer_log_at;
    unsigned long peer_log_dropped;
    fcr__conn *conns;      /* most recently active first */
    fcr__conn *conns_tail; /* least recently active */
    fcr__conn *flush_list;
    fcr_req *dirty;
    ev_prepare prepare;
    ev_idle idle;
    ev_timer sweep;
    ev_signal sigterm, sigint, sighup;
    ev_timer grace;
    ev_io chan_rio; /* messages from the supervisor */
    ev_io chan_wio; /* the channel has room again after it was full */
    unsigned long handed_over;
    uint8_t *rbuf;
    size_t rbuf_cap;
    fcr__req_pool *pool;
    fcr_server_stats stats;
    void (*on_drained)(fcr_server *srv, void *arg);
    void *drained_arg;
    /* A worker's channel to its supervisor (-1: none): connections handed over at a restart
     * travel on it (core/handoff.c). */
    int chan;
    bool allow_set;
    bool accept_paused;  /* by the connection cap, or by the supervisor */
    bool accept_backoff; /* accept() ran out of descriptors or memory: retried soon */
    bool worker_started; /* the start hook ran and succeeded in this process */
    bool shutting_down;
    bool handing_over; /* retired by a restart: idle connections go to the new workers */
    bool chan_full;    /* a hand-over found the channel full: chan_wio waits for room */
};

/* request.c */
fcr_req *fcr__req_new(fcr__conn *c, uint16_t id, uint8_t role, uint8_t flags);
void fcr__req_unref(void *arg);
void fcr__req_abort(fcr_req *r, bool send_end);
/* The server is being freed: releases the kept requests; the pool goes with the last request. */
void fcr__req_pool_orphan(fcr__req_pool *pool);

/* input.c */
int fcr__req_params_chunk(fcr_req *r, const uint8_t *buf, size_t len);
int fcr__req_params_end(fcr_req *r);
int fcr__req_body_chunk(fcr_req *r, int idx, const uint8_t *buf, size_t len);

/* output.c */
void fcr__req_seal(fcr_req *r, bool final, uint8_t protocol_status, uint32_t app_status);
void fcr__req_reject(fcr_req *r, const char *status_line);
/* Drops the open STDOUT record, which was not queued yet. */
void fcr__req_drop_output(fcr_req *r);

/* conn.c */
fcr__conn *fcr__conn_new(fcr_server *srv, int fd);
void fcr__conn_close(fcr__conn *c, const char *why);
/* Marks request activity on `c` (a request began, took input, or ended): the idle timeout
 * counts from here, and `c` moves to the front of the server's list. */
void fcr__conn_touch(fcr__conn *c);
/* The least recently active connection with no request and nothing queued, or NULL. */
fcr__conn *fcr__conn_oldest_idle(fcr_server *srv);
void fcr__conn_fail(fcr__conn *c, const char *why);
int fcr__conn_reserve(fcr__conn *c, size_t nsegs);
int fcr__conn_push(fcr__conn *c, const uint8_t *ptr, size_t len, void (*release)(void *),
                   void *arg);
void fcr__conn_want_flush(fcr__conn *c);
void fcr__conn_flush(fcr__conn *c);
void fcr__conn_remove_req(fcr__conn *c, fcr_req *r);
void fcr__conn_resume(fcr__conn *c);
void fcr__conn_sweep(fcr__conn *c, double now);
/* Half-closes `c` and reads and discards what the peer still sends (bounded), so that closing
 * with unread input does not make the kernel send a reset. */
void fcr__conn_start_drain(fcr__conn *c);

/* outq.c */
bool fcr__conn_queue_empty(const fcr__conn *c);
/* Queues a copy of the record `rec` (`len` bytes) and asks for a flush; out of memory dooms
 * the connection. */
void fcr__conn_push_record(fcr__conn *c, const uint8_t *rec, size_t len);
/* Releases every queued segment (the connection is closing). */
void fcr__conn_release_all(fcr__conn *c);
/* The write watcher's callback: flushes the queue. */
void fcr__conn_write_cb(struct ev_loop *loop, ev_io *w, int revents);

/* server.c */
void fcr__server_conn_closed(fcr_server *srv);
/* Runs the worker start hook (fcr_server_on_worker) once in this process. Returns 0, or the
 * hook's negative result (logged). */
int fcr__server_worker_start(fcr_server *srv);
/* The supervisor retires the worker for a restart: a graceful stop, with its connections
 * handed over to the new workers instead of closed. */
void fcr__server_retire(fcr_server *srv);
/* fcr_log() for a line about what one peer did (a protocol violation, a refused connection, a
 * closed connection): at most PEER_LOG_RATE such lines a second per server, in bursts of up to
 * PEER_LOG_BURST; the lines over that are counted, and the next line that passes says how many
 * were left out. A peer that keeps misbehaving cannot fill the log. */
void fcr__log_peer(fcr_server *srv, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void fcr__server_mark_dirty(fcr_server *srv, fcr_req *r);
void fcr__server_unmark_dirty(fcr_server *srv, fcr_req *r);

/* handoff.c */
/* Messages on the channel between a worker and its supervisor: one byte, and for
 * FCR__MSG_CONN a descriptor. */
enum {
    FCR__MSG_READY = 'R',  /* worker: it accepts connections */
    FCR__MSG_CONN = 'C',   /* a connection handed over (old worker -> supervisor -> new one) */
    FCR__MSG_RETIRE = 'T', /* supervisor: a restart retires the worker */
    FCR__MSG_START_FAILED = 'F', /* worker: its start hook failed; it ends */
};
/* Sends message `type` with the descriptor `fd` (-1: none) without blocking. Returns 0, or -1
 * with errno (EAGAIN: the channel is full). */
int fcr__chan_send(int chan, int type, int fd);
/* Receives one message without blocking: returns its type with the descriptor it carried in
 * `*fd` (-1: none; it is close-on-exec), 0 when the other side is gone, -1 with errno (EAGAIN:
 * nothing there). */
int fcr__chan_recv(int chan, int *fd);
/* Starts reading the server's channel, when it has one (fcr_server_run). */
void fcr__chan_start(fcr_server *srv);
void fcr__chan_stop(fcr_server *srv);
/* In a worker retired by a restart, hands `c` over to the supervisor when it is idle between
 * requests: nothing begun, nothing queued, no record or input read in part. Returns true when
 * it did: `c` is then closed here (without a shutdown: the socket lives on) and freed. Returns
 * false otherwise, also when the channel is full (the connection is tried again when there
 * is room) or broken (hand-over ends for the worker: connections close as in a stop). */
bool fcr__conn_hand_over(fcr__conn *c);

/* listen.c */
/* Serves a connection a retiring worker handed over, as one accepted here (it passed the
 * allow-list when it was first accepted). At the connection cap an idle connection makes room;
 * with none, the connection, idle itself, is closed (the web server reconnects). */
void fcr__conn_adopt(fcr_server *srv, int fd);
/* True when bytes wait unread on the socket `fd`. */
bool fcr__input_waiting(int fd);
int fcr__allow_parse(const char *list, fcr__allow **out, size_t *n);
bool fcr__allow_check(const fcr_server *srv, const struct sockaddr *sa, socklen_t len);
void fcr__listeners_pause(fcr_server *srv, bool pause);
/* The accept_retry timer's callback: ends a pause after accept() ran out of resources. */
void fcr__accept_retry_cb(struct ev_loop *loop, ev_timer *w, int revents);
/* A connection closed: a pause for lack of descriptors ends. */
void fcr__listeners_conn_closed(fcr_server *srv);
/* Closes the listeners. A unix socket file is removed only by the process that created it (not
 * by worker processes). */
void fcr__listeners_close(fcr_server *srv);
/* Stops listening for good without losing a connection that was already let in: in the process
 * that created a socket, a unix socket's file is removed and a TCP socket drops new connection
 * attempts (their SYNs: clients retry and then find the socket closed, ECONNREFUSED), so no
 * connection can queue up any more; then, with `accept_queued`, the connections already
 * queued are accepted (up to the connection cap) before the sockets are closed. */
void fcr__listeners_retire(fcr_server *srv, bool accept_queued);

#endif
