/* Internal: what the core offers the framework layer (app/) beyond the public API. */
#ifndef FCR__CORE_FRAMEWORK_H
#define FCR__CORE_FRAMEWORK_H

#include <fcrest/core.h>

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

#endif
