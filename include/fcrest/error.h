/* fcrest error codes and logging. */
#ifndef FCREST_ERROR_H
#define FCREST_ERROR_H

#include <stdarg.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Every fcrest function that can fail returns 0 (or a non-negative count) on success and one of
 * these negative codes on failure; functions returning pointers return NULL. */
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

enum fcr_err {
    FCR_OK = 0,
#define FCR__ERR_ENUM(name, code, text) FCR_##name = (code),
    FCR_ERRNO_MAP(FCR__ERR_ENUM)
#undef FCR__ERR_ENUM
};

/* Returns a static, human-readable description of `err` (an `enum fcr_err` value). Unknown
 * codes give "unknown error". Never returns NULL; the result must not be freed. */
const char *fcr_strerror(int err);

/* Returns the symbolic name of `err` ("FCR_EINVAL", ...) or "FCR_UNKNOWN". Static storage. */
const char *fcr_err_name(int err);

/* Log levels, most severe first. */
enum fcr_log_level {
    FCR_LOG_ERROR = 0,
    FCR_LOG_WARN = 1,
    FCR_LOG_INFO = 2,
    FCR_LOG_DEBUG = 3,
};

/* Sets the process-wide log threshold: messages above `level` are dropped. The default is
 * FCR_LOG_INFO. Not thread-safe; call it at start-up. */
void fcr_log_set_level(int level);

/* Returns the current process-wide log threshold. */
int fcr_log_level(void);

/* Parses "error", "warn", "info" or "debug" (case-insensitive) into `*level`. Returns 0, or
 * FCR_EINVAL for any other string (then `*level` is unchanged). */
int fcr_log_level_parse(const char *name, int *level);

/* Writes one log line "fcrest[pid]: <level>: <message>\n" to stderr with a single write(2),
 * so lines from several worker processes never interleave. Lines longer than 4 KiB are
 * truncated. Does nothing when `level` is above the threshold. */
void fcr_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* va_list form of fcr_log(). */
void fcr_vlog(int level, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

#ifdef __cplusplus
}
#endif
#endif
