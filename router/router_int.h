/* Internal helpers of the router, shared between its source files. */
#ifndef FCREST_ROUTER_INT_H
#define FCREST_ROUTER_INT_H

#include <stdbool.h>
#include <stddef.h>

/* True when the `len` bytes at `s` decode to a string without a NUL byte: every '%' is
 * followed by two hex digits, none is "%00", and there is no NUL byte itself. A value that
 * would decode to a NUL byte would end early as a C string and hide what follows. */
bool fcr__percent_valid(const char *s, size_t len);

/* What the router may assume about every path a pattern matches. */
typedef struct fcr__pattern_prefix {
    size_t lit_len; /* every matching path starts with the first lit_len bytes of the pattern
                       (after unescaping, copied to `lit`); 0 when nothing is known */
    bool has_key;   /* every matching path's first segment (the bytes after the leading '/'
                       up to the next '/' or the end) is the key_len bytes at lit + 1 */
    size_t key_len;
} fcr__pattern_prefix;

/* Scans `pattern` (NUL-terminated PCRE2 syntax, compiled anchored without extended mode) for
 * its literal prefix. `lit` must have room for strlen(pattern) bytes; it receives the
 * unescaped literal prefix. Conservative: whatever it cannot prove is left out, which only
 * costs speed, never correctness. */
void fcr__pattern_prefix_scan(const char *pattern, char *lit, fcr__pattern_prefix *out);

#endif
