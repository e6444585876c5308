/**
 * @file fcrest/core.h
 * @brief fcrest core: the application side of FastCGI 1.0 on a libev loop.
 *
 * A server owns listeners and connections on one libev loop. For every request whose input is
 * complete it calls the application's `on_request` callback with a request handle; the
 * application writes STDOUT/STDERR and ends the request with fcr_req_finish(), now or later
 * from another watcher on the same loop.
 *
 * Every function runs on the loop's thread and none blocks (except the fcr_server_run
 * functions, which run the loop). Functions that take a server or request handle require a
 * valid one unless they say that NULL is accepted.
 */
#ifndef FCREST_CORE_H
#define FCREST_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <fcrest/error.h>

#ifdef __cplusplus
extern "C" {
#endif

struct ev_loop;

/**
 * A FastCGI server: listeners, connections and requests on one libev loop. Opaque; created
 * with fcr_server_new() (or fcr_app_server_new()), owned by the caller and freed with
 * fcr_server_free().
 */
typedef struct fcr_server fcr_server;

/**
 * One FastCGI request. Opaque; the server creates it and hands it to the application's
 * callbacks. The application owns it from on_request until it calls fcr_req_finish(), which
 * releases it.
 */
typedef struct fcr_req fcr_req;

/** FastCGI roles (the values are the protocol's). */
typedef enum fcr_role {
    FCR_RESPONDER = 1,  /**< Responder: answers an HTTP request (the usual role). */
    FCR_AUTHORIZER = 2, /**< Authorizer: decides whether the web server serves a request. */
    FCR_FILTER = 3,     /**< Filter: transforms a file (the DATA stream) for the web server. */
} fcr_role;

/** Bit for `role` in fcr_server_config.roles. */
#define FCR_ROLE_BIT(role) (1u << (unsigned)(role))
/** Mask of all three roles for fcr_server_config.roles. */
#define FCR_ALL_ROLES                                                                              \
    (FCR_ROLE_BIT(FCR_RESPONDER) | FCR_ROLE_BIT(FCR_AUTHORIZER) | FCR_ROLE_BIT(FCR_FILTER))

/** Input streams of a request. */
typedef enum fcr_stream {
    FCR_STDIN = 5, /**< The request body (FCGI_STDIN). */
    FCR_DATA = 8,  /**< The file to filter of a Filter request (FCGI_DATA). */
} fcr_stream;

/**
 * Limits and timeouts. Every input size is checked against these before memory is reserved
 * for it. The defaults are those of fcr_limits_default(), listed in README.md.
 */
typedef struct fcr_limits {
    size_t max_name_len;     /**< bytes in one param name (default 1 KiB) */
    size_t max_value_len;    /**< bytes in one param value (default 32 KiB) */
    size_t max_params_bytes; /**< encoded PARAMS stream bytes of one request (default 64 KiB) */
    size_t max_params;       /**< number of params of one request (default 256) */
    size_t max_body;         /**< buffered STDIN (and, separately, DATA) bytes (default 16 MiB) */
    unsigned max_reqs_per_conn; /**< concurrent requests on one connection (default 32) */
    unsigned max_reqs;          /**< concurrent requests in one worker (default 4096) */
    unsigned max_conns;         /**< open connections in one worker (default 4096) */
    size_t max_output_queue;    /**< queued output bytes per connection (default 1 MiB) */
    double idle_timeout;        /**< seconds a connection may sit with no request (default 60) */
    /** seconds from BEGIN_REQUEST until its input is complete (default 30); for a request
        whose input is streamed (fcr_req_stream_input), seconds its input may make no
        progress while the application reads it */
    double input_timeout;
    double output_timeout; /**< seconds queued output may make no progress (default 30) */
} fcr_limits;

/** Fills `l` (not NULL) with the documented defaults. Never fails. */
void fcr_limits_default(fcr_limits *l);

/**
 * Called when a request's PARAMS stream is complete, before its body is read. Optional. The
 * callback may inspect params, lower the body limit (fcr_req_set_max_body), switch the request
 * to streaming input (fcr_req_stream_input), or answer at once (write, then fcr_req_finish;
 * the rest of the input is then discarded). It must not keep `req` unless it switched to
 * streaming input or finished it. `data` is fcr_server_config.data.
 */
typedef void (*fcr_params_cb)(fcr_req *req, void *data);

/**
 * Called once per request when the input its role needs is complete (Responder: PARAMS and
 * STDIN; Authorizer: PARAMS; Filter: PARAMS, STDIN and DATA), or at once after on_params when
 * the request streams its input, or as soon as a body exceeded its limit
 * (fcr_req_input_error() then says FCR_ETOOBIG). From this call on the application owns the
 * request until it calls fcr_req_finish(), which it must do exactly once, also after an
 * abort. `data` is fcr_server_config.data.
 */
typedef void (*fcr_request_cb)(fcr_req *req, void *data);

/** Server configuration. Initialise with fcr_server_config_init() and change what you need. */
typedef struct fcr_server_config {
    fcr_limits limits;         /**< limits and timeouts (fcr_limits_default()) */
    unsigned roles;            /**< FCR_ROLE_BIT mask of served roles; others get UNKNOWN_ROLE */
    bool multiplex;            /**< accept several requests per connection (FCGI_MPXS_CONNS=1) */
    fcr_params_cb on_params;   /**< optional */
    fcr_request_cb on_request; /**< required */
    void *data;                /**< passed to both callbacks */
    unsigned socket_mode; /**< mode for unix sockets created by fcr_server_listen (default 0660) */
    const char *web_server_addrs; /**< allow-list like FCGI_WEB_SERVER_ADDRS; NULL: read the env */
} fcr_server_config;

/**
 * Initialises `cfg` (not NULL): default limits, all three roles, multiplexing on, socket mode
 * 0660, no callbacks, no allow-list. Never fails.
 */
void fcr_server_config_init(fcr_server_config *cfg);

/**
 * Creates a server on `loop` with a copy of `cfg` (the allow-list string is parsed now and not
 * kept). It raises the process's soft descriptor limit (RLIMIT_NOFILE) towards the hard limit
 * when it is below limits.max_conns + 64. Only internal watchers that do not keep the loop
 * running are started until a listener is added. The loop is not owned: it must outlive the
 * server. The caller owns the server and frees it with fcr_server_free(). Returns NULL and sets
 * `*err` (if `err` is not NULL) to FCR_EINVAL (a NULL `loop`, `cfg` or on_request, a limit
 * that is zero but max_body, a timeout that is not positive), FCR_EPARSE (the web server
 * allow-list is malformed) or FCR_ENOMEM.
 */
fcr_server *fcr_server_new(struct ev_loop *loop, const fcr_server_config *cfg, int *err);

/**
 * Opens and starts listeners. `addr` is "unix:/path/to.sock", "tcp:HOST:PORT" (IPv4 literal,
 * host name, "[IPv6]", or an empty HOST for every local IPv4 and IPv6 address), or "fd:N" for
 * an already listening descriptor; it is not kept. A "tcp:" address gets one listener per
 * address HOST resolves to (exact duplicates skipped), all on PORT; IPv6 sockets are
 * IPv6-only; with PORT 0 the first socket gets a free port and the others the same one; an
 * address of a family the system has no sockets for (EAFNOSUPPORT) is skipped when another
 * one is left. It is all or nothing: when one address cannot be bound, the sockets this call
 * opened are closed, a log line names that address, and FCR_EIO is returned with its errno. A
 * stale unix socket file is replaced; the socket file gets fcr_server_config.socket_mode. The
 * server owns the listeners (an "fd:N" descriptor included) and closes them with the server.
 * Returns 0; FCR_EADDR for a malformed address, a port above 65535, a host that does not
 * resolve or an "fd:N" that is not a listening socket; FCR_EIO (errno says why); FCR_EINVAL
 * for NULL arguments; FCR_ENOMEM.
 */
int fcr_server_listen(fcr_server *srv, const char *addr);

/**
 * Adopts the listening sockets a parent process passed: systemd socket activation
 * (LISTEN_PID/LISTEN_FDS, fds from 3; the LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES variables
 * are then removed from the environment) or, failing that, fd 0 when it is a listening socket
 * (how web servers and spawn-fcgi start FastCGI programs). Returns the number of sockets
 * adopted (0 when there are none), FCR_EINVAL for a NULL `srv`, or FCR_ENOMEM.
 */
int fcr_server_listen_inherited(fcr_server *srv);

/**
 * Serves an already connected stream socket `fd` as a FastCGI connection (the server takes it
 * over and closes it). Used by in-process test harnesses with socketpair(2). Returns 0,
 * FCR_ETOOBIG at the connection cap (fd is closed), or FCR_ENOMEM (fd is closed).
 * FCR_EINVAL for a NULL `srv` or a negative `fd` (nothing is closed).
 */
int fcr_server_adopt(fcr_server *srv, int fd);

/**
 * Graceful stop. The listeners are closed without dropping a connection that was already let
 * in: in the process that created a socket, a unix socket's file is removed and a TCP socket
 * drops new connection attempts (their SYNs; clients retry and then get ECONNREFUSED), then
 * the connections already queued are accepted, then the sockets are closed (inherited sockets,
 * such as systemd's, are only closed). Connections with nothing in progress are closed, except
 * ones that have not sent a whole first request yet (new ones, or ones with request bytes
 * waiting): those may send that one request (it is served; others are answered OVERLOADED),
 * and are closed when nothing comes for about a second. In-flight requests finish; each
 * connection closes after its last response. `on_drained` (optional) is called once when no
 * connection is left; a later call replaces `on_drained` and `arg`, and is otherwise
 * idempotent. NULL `srv` is ignored. The server is not freed: call fcr_server_free() (for
 * example from `on_drained`, or after the loop returned).
 */
void fcr_server_shutdown(fcr_server *srv, void (*on_drained)(fcr_server *srv, void *arg),
                         void *arg);

/**
 * Closes every listener and connection at once (requests in flight are aborted as if the peer
 * had gone) and frees the server. Requests the application still holds stay valid until it
 * finishes them. NULL is ignored.
 */
void fcr_server_free(fcr_server *srv);

/**
 * Runs the loop until SIGTERM or SIGINT, then shuts down gracefully (up to `grace` seconds for
 * in-flight requests; a second signal stops at once) and returns 0; the loop also returns when
 * nothing keeps it running (no listener or connection left). Its own signal watchers are
 * installed on the loop and removed before returning; the server stays the caller's to free.
 * SIGHUP, when its disposition is the default (which would end the process and lose the
 * requests in flight), is logged as a warning and otherwise ignored while the loop runs: a
 * single process has no way to restart gracefully (fcr_server_run_workers() does). SIGPIPE at
 * its default disposition is set to ignored, for good, so that a log write to a closed stderr
 * pipe cannot kill the server. Dispositions the program set itself are left alone. Returns
 * FCR_EINVAL for a NULL `srv`.
 */
int fcr_server_run(fcr_server *srv, double grace);

/**
 * Runs the server in `n` worker processes that share its listening sockets, each with its own
 * copy of the loop (`srv` must run on the default loop, and the listeners must be open). The
 * calling process becomes the supervisor, which never accepts itself:
 *   - a worker that dies is replaced at once (logging the signal or exit status), after a
 *     delay growing from 0.1 s to 30 s while workers keep dying within a second of starting;
 *   - SIGTERM/SIGINT stop everything gracefully: the supervisor removes the unix socket files
 *     and makes new TCP connections fail (see fcr_server_shutdown), closes its copies of the
 *     sockets and passes SIGTERM on; each worker finishes its requests for up to `grace`
 *     seconds; stragglers are killed 5 s after that; a second signal kills the workers;
 *   - SIGHUP starts `n` new workers and, once each reports that it is accepting (or after
 *     5 s), retires the old ones: they stop accepting, finish their requests and pass each
 *     connection, at a moment it is idle between requests, through the supervisor to a new
 *     worker, which serves its next request. A restart closes no connection, so a request the
 *     web server sends meanwhile waits in the socket for the new worker instead of being lost.
 *     A connection not idle within `grace` seconds is closed as at a stop (the old worker is
 *     killed 5 s later); a SIGHUP while old workers still finish waits for them and then
 *     restarts once more.
 *
 * Workers ignore SIGHUP and stop gracefully when the supervisor dies. Use a stop method that
 * signals only the supervisor (systemd: KillMode=mixed). Returns 0 in every process once it is
 * done (workers after their loop ended, the supervisor after the last worker exited), so the
 * caller's clean-up runs in each; FCR_EINVAL when the loop is not the default loop; FCR_EIO when
 * the first fork fails; FCR_ENOMEM. With n <= 1 it is fcr_server_run().
 */
int fcr_server_run_workers(fcr_server *srv, unsigned n, double grace);

/**
 * A worker start hook: runs in every process that serves (each worker of
 * fcr_server_run_workers() right after its fork, or the one process of fcr_server_run()),
 * before it accepts, with the server (whose loop, fcr_server_loop(), is the worker's). It
 * opens what each worker needs of its own (a database connection, a file) and returns 0, or a
 * negative fcr_err code: the process then serves nothing and ends (see fcr_server_on_worker()).
 */
typedef int (*fcr_worker_start_fn)(fcr_server *srv, void *data);

/**
 * A worker stop hook: runs once the worker's loop has ended, after its last request, in every
 * process whose start hook succeeded.
 */
typedef void (*fcr_worker_stop_fn)(fcr_server *srv, void *data);

/**
 * Sets the hooks that run in every process that serves (either may be NULL; a later call
 * replaces them; `data` is passed to both). `start` runs after the fork and before the process
 * accepts; `stop` after its last request. When `start` fails, fcr_server_run() returns its
 * code without serving; a worker of fcr_server_run_workers() ends likewise (the function
 * returns the code in that process), and the supervisor restarts it with a growing delay, or,
 * when no worker has ever started since the supervisor began, stops the others and returns
 * FCR_EIO, so that a program whose workers cannot start exits instead of retrying forever.
 * NULL `srv` is ignored.
 */
void fcr_server_on_worker(fcr_server *srv, fcr_worker_start_fn start, fcr_worker_stop_fn stop,
                          void *data);

/** True in a worker process started by fcr_server_run_workers(). */
bool fcr_is_worker(void);

/** Counters for tests and monitoring. */
typedef struct fcr_server_stats {
    uint64_t accepted;        /**< connections accepted since start */
    uint64_t requests;        /**< requests handed to the application */
    unsigned conns;           /**< open connections now */
    unsigned active_reqs;     /**< requests in progress now */
    uint64_t protocol_errors; /**< connections closed for a protocol violation */
    /** idle connections closed at the connection cap to admit new ones */
    uint64_t evicted;
} fcr_server_stats;

/** Copies the current counters into `*st`. Neither argument may be NULL. */
void fcr_server_get_stats(const fcr_server *srv, fcr_server_stats *st);

/** The loop the server runs on (not owned by the server). */
struct ev_loop *fcr_server_loop(const fcr_server *srv);

/** The limits in force (read-only), owned by the server and valid as long as it lives. */
const fcr_limits *fcr_server_limits(const fcr_server *srv);

/* ---- Requests ------------------------------------------------------------------------- */

/** The request's role (what the web server asked for in BEGIN_REQUEST). */
fcr_role fcr_req_role(const fcr_req *req);
/** The request's FastCGI request id (1..65535). */
unsigned fcr_req_id(const fcr_req *req);
/** Whether the web server asked to keep the connection (FCGI_KEEP_CONN). */
bool fcr_req_keep_conn(const fcr_req *req);

/** The server the request came from. */
fcr_server *fcr_req_server(const fcr_req *req);

/**
 * Looks up a param by exact name. Returns its NUL-terminated value (which may contain NULs:
 * use fcr_req_paramn for the length), or NULL when absent. When a name came more than once
 * the last value wins. The string lives as long as the request. NULL also for a NULL `req` or
 * `name`.
 */
const char *fcr_req_param(const fcr_req *req, const char *name);

/**
 * Like fcr_req_param() with an explicit name length; stores the value length in `*vlen` when
 * `vlen` is not NULL.
 */
const char *fcr_req_paramn(const fcr_req *req, const char *name, size_t nlen, size_t *vlen);

/** Number of distinct param names. */
size_t fcr_req_param_count(const fcr_req *req);

/**
 * The i-th distinct param in arrival order (position of its first occurrence, value of its
 * last). Returns 0, or FCR_ENOTFOUND when i >= count. Out-pointers may be NULL. The strings
 * live as long as the request.
 */
int fcr_req_param_at(const fcr_req *req, size_t i, const char **name, size_t *nlen,
                     const char **value, size_t *vlen);

/**
 * The buffered STDIN or DATA bytes received so far (complete once on_request ran in buffered
 * mode). `*len` gets the length. Never NULL: an empty body gives a pointer to "". Valid until
 * fcr_req_finish(). `len` may be NULL.
 */
const void *fcr_req_body(const fcr_req *req, fcr_stream stream, size_t *len);

/**
 * 0 when the input was received whole; FCR_ETOOBIG when a body exceeded its limit (the rest is
 * discarded and on_request ran early); FCR_ECLOSED when the request was aborted; FCR_EINVAL
 * for a NULL `req`.
 */
int fcr_req_input_error(const fcr_req *req);

/**
 * In on_params only: lowers (or raises) the buffered body limit for this request. Ignored
 * elsewhere and for a NULL `req`.
 */
void fcr_req_set_max_body(fcr_req *req, size_t max);

/**
 * Streaming input: `chunk` receives each piece of STDIN and DATA as it arrives, and one call
 * with len == 0 at the end of each stream. It returns 0 to go on, or FCR_EAGAIN to pause
 * reading from the connection until fcr_req_resume_input(). `buf` is valid only during the
 * call. The callback may finish the request.
 */
typedef int (*fcr_chunk_cb)(fcr_req *req, fcr_stream stream, const void *buf, size_t len);

/**
 * In on_params only: switches the request to streaming input. on_request is called right
 * after on_params returns; nothing is buffered. Returns 0 or FCR_EINVAL outside on_params
 * (or for a NULL argument).
 */
int fcr_req_stream_input(fcr_req *req, fcr_chunk_cb chunk);

/** Resumes reading after a chunk callback returned FCR_EAGAIN. Safe to call at any time. */
void fcr_req_resume_input(fcr_req *req);

/**
 * Application data slot for the request: stores `data` (not owned: the application frees what
 * it points to). The slot is the application's, also inside an app: the framework keeps its
 * own request data elsewhere. NULL `req` is ignored.
 */
void fcr_req_set_userdata(fcr_req *req, void *data);
/** The pointer last stored with fcr_req_set_userdata(), or NULL. */
void *fcr_req_userdata(const fcr_req *req);

/**
 * Registers `cb` to run once if the request is aborted (FCGI_ABORT_REQUEST, connection closed,
 * input timeout, server freed) while the application owns it. After an abort, writes fail with
 * FCR_ECLOSED and the application must still call fcr_req_finish(), which it may do from
 * inside `cb`. Replaces an earlier callback; NULL cancels.
 */
void fcr_req_on_abort(fcr_req *req, void (*cb)(fcr_req *req));

/** True once the request was aborted. */
bool fcr_req_aborted(const fcr_req *req);

/**
 * Appends `len` bytes to the request's STDOUT, copying them. Output is sent in records of at
 * most 65535 content bytes padded to a multiple of 8, and flushed by the loop. Returns 0;
 * FCR_EAGAIN (nothing was taken) when the connection already queues max_output_queue bytes:
 * wait for the drain callback; FCR_ECLOSED after an abort or finish; FCR_ENOMEM.
 * FCR_EINVAL for a NULL `req` or a NULL `buf` with `len` > 0.
 */
int fcr_req_write(fcr_req *req, const void *buf, size_t len);

/**
 * Like fcr_req_write() without copying: the bytes must stay valid until `release(arg)` runs
 * (when they have been written, or the connection is gone). `release` may be NULL. On error
 * `release` is called before returning.
 */
int fcr_req_write_ref(fcr_req *req, const void *buf, size_t len, void (*release)(void *arg),
                      void *arg);

/**
 * printf to STDOUT. Returns the number of bytes written or a negative error like
 * fcr_req_write() (FCR_EINVAL also for a format error).
 */
int fcr_req_printf(fcr_req *req, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/**
 * Appends to the request's STDERR stream (the web server's error log), copying the bytes.
 * Same errors as fcr_req_write().
 */
int fcr_req_write_stderr(fcr_req *req, const void *buf, size_t len);

/**
 * Calls `cb` once when the connection's queued output drops below half of max_output_queue.
 * Replaces any earlier drain callback of the request; NULL cancels.
 */
void fcr_req_on_drain(fcr_req *req, void (*cb)(fcr_req *req));

/** Bytes queued on the request's connection and not yet written (0 after an abort). */
size_t fcr_req_queued(const fcr_req *req);

/**
 * Ends the request: sends the empty STDOUT record, the empty STDERR record if STDERR was used,
 * and END_REQUEST with `app_status`, then releases the handle (it must not be used again).
 * After an abort it only releases the handle. Returns 0 or FCR_ECLOSED when the output could
 * not be sent (the handle is released either way). FCR_EINVAL for a NULL `req`.
 */
int fcr_req_finish(fcr_req *req, uint32_t app_status);

/* ---- CGI params as HTTP names them --------------------------------------------------- */

/** REQUEST_METHOD, or NULL when the web server sent none. Lives as long as the request. */
const char *fcr_req_method(const fcr_req *req);

/**
 * The request header `name` by its HTTP name, case-insensitive: "Content-Type" and
 * "Content-Length" read CONTENT_TYPE and CONTENT_LENGTH (NULL when empty), any other name N
 * reads HTTP_N with letters upper-cased and '-' as '_' ("X-Token" -> HTTP_X_TOKEN). NULL when
 * absent or when `name` is not an HTTP token. Lives as long as the request.
 */
const char *fcr_req_header(const fcr_req *req, const char *name);

/**
 * True when the Content-Type's media type is `media_type` (case-insensitive, parameters
 * ignored). False when there is no Content-Type or an argument is NULL.
 */
bool fcr_req_content_type_is(const fcr_req *req, const char *media_type);

/**
 * REMOTE_ADDR, the client's address as the web server saw it, or NULL when absent (also for a
 * NULL `req`). Lives as long as the request.
 */
const char *fcr_req_remote_addr(const fcr_req *req);

/**
 * REMOTE_PORT, the client's port (1..65535), or 0 when absent, not a decimal port or `req` is
 * NULL.
 */
int fcr_req_remote_port(const fcr_req *req);

/**
 * Writes a printf-formatted message to the request's FCGI_STDERR stream (the web server puts
 * it in its error log), adding a newline when the message does not end with one. Works for
 * any request, also outside an app, until it is finished. Returns the bytes written (with the
 * newline) or a negative error as fcr_req_write_stderr(): FCR_ECLOSED after an abort or finish,
 * FCR_EAGAIN when the connection's output queue is full, FCR_EINVAL for NULL arguments,
 * FCR_ENOMEM.
 */
int fcr_req_log(fcr_req *req, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/**
 * FILTER role: the DATA stream, never NULL (`*len`, when `len` is not NULL, gets its length;
 * "" and 0 for a NULL `req` or a request of another role). Valid as long as the request
 * (fcr_req_body()).
 */
const void *fcr_req_data(const fcr_req *req, size_t *len);

/**
 * FILTER role: FCGI_DATA_LENGTH, the length of the file being filtered, into `*len` (when
 * `len` is not NULL). Returns 0, or FCR_ENOTFOUND when the param is absent or not a decimal
 * number below 2^63 (`*len` is then unchanged), also for a NULL `req`.
 */
int fcr_req_data_length(const fcr_req *req, uint64_t *len);

/**
 * FILTER role: FCGI_DATA_LAST_MOD, the file's modification time in seconds since the epoch,
 * into `*t` (when `t` is not NULL). Returns 0, or FCR_ENOTFOUND when the param is absent or
 * not a decimal number below 2^63 (`*t` is then unchanged), also for a NULL `req`.
 */
int fcr_req_data_last_mod(const fcr_req *req, int64_t *t);

#ifdef __cplusplus
}
#endif
#endif
