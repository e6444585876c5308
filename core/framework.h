/* Internal: what the core offers the framework layer (app/) beyond the public API. */
#ifndef FCR__CORE_FRAMEWORK_H
#define FCR__CORE_FRAMEWORK_H

#include <fcrest/core.h>

#include <stdatomic.h>
#include <stdint.h>

/* The framework's own per-request slot, apart from the user's (fcr_req_userdata), so that a
 * handler may use the user's slot freely. NULL for a new request. `release` (may be NULL) is
 * called with `data` if the core frees the request while `data` is still set: a request the
 * application was never given (aborted, rejected or its connection gone while its input came)
 * or one finished without clearing the slot. */
void fcr__req_set_fwdata(fcr_req *req, void *data, void (*release)(void *data));
void *fcr__req_fwdata(const fcr_req *req);
/* The framework's abort watch: `cb` runs once when the request is aborted while delivered and
 * not finished, before the application's fcr_req_on_abort() callback (which is skipped when `cb`
 * finished the request). NULL cancels. */
void fcr__req_on_fwabort(fcr_req *req, void (*cb)(fcr_req *req));

/* True for an HTTP token (RFC 9110 tchar+), false for NULL or "". */
bool fcr__is_token(const char *s);
/* True for a header value without CR, LF, NUL or other control bytes but HTAB; false for NULL. */
bool fcr__is_header_value(const char *s);

/* Parses a non-negative decimal integer made of digits only. Returns 0, FCR_EINVAL, or
 * FCR_ETOOBIG when it exceeds `max`. */
int fcr__parse_uint(const char *s, unsigned long long max, unsigned long long *out);

/* The request the calling thread works for, for log lines: `fn(arg)` gives its id (NULL fn:
 * none). fcr__log_request() reads what is set, so that a caller can put it back. */
void fcr__log_set_request(const char *(*fn)(const void *arg), const void *arg);
void fcr__log_request(const char *(**fn)(const void *arg), const void **arg);
/* Writes one log line of `mlen` bytes of `msg` at `level` (the threshold, the format and the
 * request id applied); `extra_json` (NULL: none) is added to a JSON line as members, written
 * as `,"name":value...`. */
void fcr__log_emit(int level, const char *msg, size_t mlen, const char *extra_json);

/* ---- Processes: shared memory and the supervisor's hooks ------------------------------- */

/* A zero-filled anonymous shared mapping of `len` bytes (MAP_SHARED: the processes forked
 * afterwards write to the same pages), or NULL. */
void *fcr__shm_map(size_t len);
/* Unmaps what fcr__shm_map() returned (in this process only). NULL is ignored. */
void fcr__shm_unmap(void *p, size_t len);

/* What the framework learns of the worker processes of fcr_server_run_workers(). A worker runs
 * in one of `nslots` slots (nslots = 2 x workers: a restart runs old and new side by side); a
 * slot serves one worker at a time, and a replacement may take the slot of the one it
 * replaces. Any hook may be NULL. */
typedef struct fcr__supervision {
    /* In the supervisor, once, before it forks the first worker. A negative fcr_err code stops
     * fcr_server_run_workers() with that code. */
    int (*prefork)(fcr_server *srv, unsigned nslots, void *data);
    /* In a new worker, right after the fork, before its start hook: the slot it runs in. */
    void (*worker)(fcr_server *srv, unsigned slot, void *data);
    /* In the supervisor, when the worker of `slot` has exited (it no longer writes anywhere);
     * `replaced`: it ended unexpectedly and the supervisor starts another in its place. */
    void (*exited)(fcr_server *srv, unsigned slot, bool replaced, void *data);
    void *data;
} fcr__supervision;

/* Sets the hooks (copied; NULL clears them). */
void fcr__server_set_supervision(fcr_server *srv, const fcr__supervision *sv);

/* A gauge the server keeps up to date with its number of open connections (atomic adds); NULL
 * stops it. The connections open when it is set are added to it at once. */
void fcr__server_set_conn_gauge(fcr_server *srv, _Atomic int64_t *gauge);

#endif
