#include <fcrest/error.h>

#include "framework.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static int log_threshold = FCR_LOG_INFO;
static int log_format = FCR_LOG_TEXT;
/* The request the running code works for, on this thread: its id ends every line. */
static _Thread_local const char *(*req_id_fn)(const void *arg);
static _Thread_local const void *req_id_arg;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void fcr_log_set_level(int level)
{
    log_threshold = level;
}

int fcr_log_level(void)
{
    return log_threshold;
}

int fcr_log_level_parse(const char *name, int *level)
{
    for (int i = 0; name && i < (int)(sizeof level_names / sizeof level_names[0]); i++) {
        if (strcasecmp(name, level_names[i]) == 0) {
            *level = i;
            return 0;
        }
    }
    return FCR_EINVAL;
}

int fcr_log_format_parse(const char *name, int *format)
{
    if (name && strcasecmp(name, "text") == 0)
        *format = FCR_LOG_TEXT;
    else if (name && strcasecmp(name, "json") == 0)
        *format = FCR_LOG_JSON;
    else
        return FCR_EINVAL;
    return 0;
}

void fcr_log_set_format(int format)
{
    if (format == FCR_LOG_TEXT || format == FCR_LOG_JSON)
        log_format = format;
}

int fcr_log_format(void)
{
    return log_format;
}

void fcr__log_set_request(const char *(*fn)(const void *arg), const void *arg)
{
    req_id_fn = fn;
    req_id_arg = arg;
}

void fcr__log_request(const char *(**fn)(const void *arg), const void **arg)
{
    *fn = req_id_fn;
    *arg = req_id_arg;
}

/* The request id of the line being written, or NULL. */
static const char *current_id(void)
{
    return req_id_fn ? req_id_fn(req_id_arg) : NULL;
}

/* Appends `len` bytes of `s` to `out` (`n` of `cap` used) as the inside of a JSON string:
 * quotes, backslashes and control bytes escaped, a byte that does not start valid UTF-8 as
 * U+FFFD. Stops before `cap` - 8 (room for the line's end). Returns the new length. Written by
 * hand: the core has no JSON library, and a log line must not allocate. */
static size_t json_escape(char *out, size_t n, size_t cap, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < len && n + 12 < cap;) {
        unsigned char c = p[i];
        if (c == '"' || c == '\\') {
            out[n++] = '\\';
            out[n++] = (char)c;
            i++;
        } else if (c < 0x20 || c == 0x7f) {
            out[n++] = '\\';
            out[n++] = 'u';
            out[n++] = '0';
            out[n++] = '0';
            out[n++] = hex[c >> 4];
            out[n++] = hex[c & 15];
            i++;
        } else if (c < 0x80) {
            out[n++] = (char)c;
            i++;
        } else {
            size_t k = (c & 0xe0) == 0xc0 ? 1 : (c & 0xf0) == 0xe0 ? 2 : (c & 0xf8) == 0xf0 ? 3 : 0;
            bool ok = k != 0;
            unsigned cp = k == 1 ? c & 0x1fu : k == 2 ? c & 0x0fu : c & 0x07u;
            for (size_t j = 1; ok && j <= k; j++) {
                if (i + j >= len || (p[i + j] & 0xc0) != 0x80)
                    ok = false;
                else
                    cp = (cp << 6) | (p[i + j] & 0x3fu);
            }
            static const unsigned min[4] = {0, 0x80, 0x800, 0x10000};
            if (ok && (cp < min[k] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)))
                ok = false;
            if (ok) {
                for (size_t j = 0; j <= k; j++)
                    out[n++] = (char)p[i++];
            } else { /* U+FFFD */
                out[n++] = (char)0xef;
                out[n++] = (char)0xbf;
                out[n++] = (char)0xbd;
                i++;
            }
        }
    }
    return n;
}

/* One JSON object for the line (see fcr_log_set_format). */
static size_t json_line(char *line, size_t cap, int level, const char *msg, size_t mlen,
                        const char *id, const char *extra)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[32];
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    int n = snprintf(line, cap, "{\"time\":\"%s.%06ldZ\",\"pid\":%ld,\"level\":\"%s\",\"msg\":\"",
                     when, ts.tv_nsec / 1000, (long)getpid(), level_names[level]);
    if (n < 0)
        return 0;
    /* Room kept after the message for the id's member (an id is at most 64 bytes that need
     * no escape) and the object's end. */
    size_t len = json_escape(line, (size_t)n, cap - 100, msg, mlen);
    if (id) {
        static const char key[] = "\",\"request_id\":\"";
        for (size_t i = 0; i + 1 < sizeof key; i++)
            line[len++] = key[i];
        len = json_escape(line, len, cap - 4, id, strlen(id));
    }
    line[len++] = '"';
    /* Extra members come whole or not at all: a cut one would break the object. */
    size_t elen = extra ? strlen(extra) : 0;
    if (elen && len + elen + 3 < cap) {
        for (size_t i = 0; i < elen; i++)
            line[len++] = extra[i];
    }
    line[len++] = '}';
    return len;
}

void fcr__log_emit(int level, const char *msg, size_t mlen, const char *extra_json)
{
    if (level > log_threshold || level < 0)
        return;
    if (level > FCR_LOG_DEBUG)
        level = FCR_LOG_DEBUG;
    char line[4096 + 512];
    const char *id = current_id();
    size_t len;
    if (log_format == FCR_LOG_JSON) {
        len = json_line(line, sizeof line - 1, level, msg, mlen, id, extra_json);
    } else {
        int n = snprintf(line, sizeof line, "fcrest[%ld]: %s: %.*s%s%s", (long)getpid(),
                         level_names[level], (int)(mlen < 4096 ? mlen : 4096), msg,
                         id ? " id=" : "", id ? id : "");
        if (n < 0)
            return;
        len = (size_t)n < sizeof line - 1 ? (size_t)n : sizeof line - 2;
    }
    line[len++] = '\n';
    /* One write(2) per line keeps lines from several workers whole. */
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}

void fcr_vlog(int level, const char *fmt, va_list ap)
{
    if (level > log_threshold || level < 0)
        return;
    char msg[4096];
    int m = vsnprintf(msg, sizeof msg, fmt, ap);
    if (m < 0)
        return;
    size_t len = (size_t)m < sizeof msg ? (size_t)m : sizeof msg - 1;
    fcr__log_emit(level, msg, len, NULL);
}

void fcr_log(int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fcr_vlog(level, fmt, ap);
    va_end(ap);
}
