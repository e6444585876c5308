/**
 * @file fcrest/error.h
 * @brief fcrest error codes and logging.
 *
 * Every fcrest function that can fail returns 0 (or a non-negative count) on success and one of
 * the negative codes of ::fcr_err on failure; functions returning pointers return NULL.
 * fcr_strerror() and fcr_err_name() describe a code. The log functions write one line per
 * message to stderr, filtered by a process-wide threshold.
 */
#ifndef FCREST_ERROR_H
#define FCREST_ERROR_H

#include <stdarg.h>

#ifdef __cplusplus
extern "C" {
#endif

/**
 * The error codes as an X-macro: `FCR_ERRNO_MAP(X)` expands to `X(NAME, CODE, TEXT)` once per
 * code, where `FCR_##NAME` is the ::fcr_err constant, `CODE` its (negative) value and `TEXT`
 * what fcr_strerror() returns for it.
 */
#define FCR_ERRNO_MAP(X)                                                                           \
    X(ENOMEM, -1, "out of memory")                                                                 \
    X(EINVAL, -2, "invalid argument")                                                              \
    X(EAGAIN, -3, "output queue full, wait for drain")                                             \
    X(ECLOSED, -4, "request finished, aborted or connection closed")                               \
    X(ETOOBIG, -5, "size limit exceeded")                                                          \
    X(EPROTO, -6, "FastCGI protocol violation")                                                    \
    X(EIO, -7, "system call failed")                                                               \
    X(EADDR, -8, "invalid or unusable listen address")                                             \
    X(ENOTFOUND, -9, "not found")                                                                  \
    X(ETIMEDOUT, -10, "timed out")                                                                 \
    X(EPARSE, -11, "malformed input")                                                              \
    X(EEXIST, -12, "already exists")

/**
 * Result codes of fcrest functions: FCR_OK (0) for success and one negative constant per entry
 * of FCR_ERRNO_MAP(). Functions return them as `int`.
 */
enum fcr_err {
    FCR_OK = 0, /**< Success. */
#define FCR__ERR_ENUM(name, code, text) FCR_##name = (code),
    FCR_ERRNO_MAP(FCR__ERR_ENUM)
#undef FCR__ERR_ENUM
};

/** @var FCR_ENOMEM
 * Out of memory (-1): an allocation failed. */
/** @var FCR_EINVAL
 * Invalid argument (-2): a NULL or out-of-range argument, or a call at the wrong time. */
/** @var FCR_EAGAIN
 * Output queue full (-3): nothing was taken; wait for the drain callback (fcr_req_on_drain())
 * and try again. Also returned by a streaming input callback to pause reading. */
/** @var FCR_ECLOSED
 * Closed (-4): the request was finished or aborted, or its connection is closed. */
/** @var FCR_ETOOBIG
 * Size limit exceeded (-5): an input, a count or a caller's buffer is over its limit. */
/** @var FCR_EPROTO
 * FastCGI protocol violation (-6) by the peer. */
/** @var FCR_EIO
 * A system call failed (-7). */
/** @var FCR_EADDR
 * Invalid or unusable listen or connect address (-8). */
/** @var FCR_ENOTFOUND
 * Not found (-9): no item at that index or of that name. */
/** @var FCR_ETIMEDOUT
 * Timed out (-10). */
/** @var FCR_EPARSE
 * Malformed input (-11), such as an invalid regular expression or web server allow-list. */
/** @var FCR_EEXIST
 * Already exists (-12). */

/**
 * Returns a static, human-readable description of `err` (an `enum fcr_err` value). Unknown
 * codes give "unknown error". Never returns NULL; the result must not be freed.
 */
const char *fcr_strerror(int err);

/**
 * Returns the symbolic name of `err` ("FCR_EINVAL", ...) or "FCR_UNKNOWN". Static storage: never
 * NULL, must not be freed.
 */
const char *fcr_err_name(int err);

/** Log levels, most severe first: the values of fcr_log_set_level(), fcr_log_level() and
 * fcr_log(). */
typedef enum fcr_log_severity {
    FCR_LOG_ERROR = 0, /**< A failure: something did not work. */
    FCR_LOG_WARN = 1,  /**< Something unexpected that fcrest handled. */
    FCR_LOG_INFO = 2,  /**< Normal events: start, stop, signals, the access log. */
    FCR_LOG_DEBUG = 3, /**< Details for debugging. */
} fcr_log_severity;

/**
 * Sets the process-wide log threshold: messages above `level` are dropped. The default is
 * FCR_LOG_INFO. Not thread-safe; call it at start-up.
 */
void fcr_log_set_level(int level);

/** Returns the current process-wide log threshold (an ::fcr_log_severity value). */
int fcr_log_level(void);

/**
 * Parses "error", "warn", "info" or "debug" (case-insensitive) into `*level`. Returns 0, or
 * FCR_EINVAL for any other string or a NULL `name` (then `*level` is unchanged).
 */
int fcr_log_level_parse(const char *name, int *level);

/** Log line formats: the values of fcr_log_set_format() and fcr_log_format(). */
typedef enum fcr_log_format_kind {
    FCR_LOG_TEXT = 0, /**< `fcrest[PID]: LEVEL: MESSAGE` (and ` id=ID` for a request) */
    FCR_LOG_JSON = 1, /**< one JSON object per line (see fcr_log_set_format()) */
} fcr_log_format_kind;

/**
 * Sets the process-wide format of log lines (default FCR_LOG_TEXT). FCR_LOG_JSON writes one
 * JSON object per line with the members `time` (UTC, RFC 3339 with microseconds:
 * "2026-12-06T06:05:01.123456Z"), `pid`, `level` ("error", "warn", "info", "debug"), `msg`
 * (the message; bytes that are not UTF-8 become U+FFFD), `request_id` when the line is about
 * a request (see fcr_req_request_id()), and for the access log the members named in
 * fcr_app_set_access_log(). Other values are ignored. Not thread-safe; call it at start-up.
 */
void fcr_log_set_format(int format);

/** The current log format (an ::fcr_log_format_kind value). */
int fcr_log_format(void);

/**
 * Parses "text" or "json" (case-insensitive) into `*format`. Returns 0, or FCR_EINVAL for any
 * other string or a NULL `name` (then `*format` is unchanged).
 */
int fcr_log_format_parse(const char *name, int *format);

/**
 * Writes one log line "fcrest[pid]: <level>: <message>\n" to stderr with a single write(2),
 * so lines from several worker processes never interleave; while the framework runs code for a
 * request (a handler, middleware, authorizer, done, body fn, or fcrest's own lines about it),
 * the line ends with " id=<request id>" (fcr_req_request_id()), also from the work of its
 * fcr_defer() on a pool thread. With fcr_log_set_format(FCR_LOG_JSON) the line is a JSON
 * object instead. Messages longer than 4 KiB are truncated. Does nothing when `level` is above
 * the threshold (or negative). `fmt` is a printf(3) format for the arguments that follow.
 * Errors of the write are ignored.
 */
void fcr_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/**
 * va_list form of fcr_log(): the same line, with the arguments taken from `ap` (which the call
 * uses up, as vprintf(3) does).
 */
void fcr_vlog(int level, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

#ifdef __cplusplus
}
#endif
#endif
