/* Internal helpers of the router, shared between its source files. */
#ifndef FCREST_ROUTER_INT_H
#define FCREST_ROUTER_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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

/* True when `pattern` (as for fcr__pattern_prefix_scan) is one sequence, with no '|' outside
 * every group, made only of syntax the scans can follow. */
bool fcr__pattern_one_sequence(const char *pattern);

/* Most path segments the segment index follows in one pattern. */
#define FCR__MAX_SEGS 32

/* One segment of every path a pattern matches: exactly the `len` bytes at `lit`, or anything
 * (`lit` NULL). */
typedef struct fcr__seg {
    const char *lit;
    size_t len;
} fcr__seg;

/* What the router may assume about the segments of every path a pattern matches (a path
 * splits at each '/': "/a/b" is "", "a", "b"). With `exact`, such a path has exactly `n`
 * segments, described by `seg`; without, it has more than `n` and its first `n` are as
 * described (`n` 0: nothing is known). */
typedef struct fcr__pattern_segs {
    fcr__seg seg[FCR__MAX_SEGS];
    size_t n;
    bool exact;
} fcr__pattern_segs;

/* Scans `pattern` (as for fcr__pattern_prefix_scan) for its segments; the literal ones point
 * into `buf`, which must have room for strlen(pattern) bytes. Conservative, like the prefix
 * scan: what it cannot prove is left out. */
void fcr__pattern_segments(const char *pattern, char *buf, fcr__pattern_segs *out);

/* ---- the segment index (segindex.c) -------------------------------------------------------- */

/* Entry numbers in registration order. */
typedef struct fcr__idlist {
    uint32_t *v;
    size_t n, cap;
} fcr__idlist;

/* A trie of path segments: each node is reached by literal segments and "any segment" edges
 * from the root; each holds the entries whose paths end at it and those whose paths go on
 * past it. */
typedef struct fcr__segindex {
    struct fcr__segnode *nodes;
    size_t nnodes, nodes_cap;
    struct fcr__segedge *edges; /* literal edges, open addressing, at most half full */
    size_t nedges, edges_cap;
} fcr__segindex;

/* The candidate lists of one lookup: each sorted, the union holds every entry that can match
 * the path. */
#define FCR__MAX_CAND_LISTS 64
typedef struct fcr__candidates {
    const fcr__idlist *list[FCR__MAX_CAND_LISTS];
    size_t n;
} fcr__candidates;

/* Files entry `id` (ids grow with each call) at the node of the segments `s` (whatever
 * `s->exact` says): among the entries whose paths end there when `ends`, among those whose
 * paths go on past it when `rest`. FCR_ENOMEM leaves the index usable, without the entry in
 * either list. */
int fcr__segindex_add(fcr__segindex *ix, const fcr__pattern_segs *s, bool ends, bool rest,
                      uint32_t id);

/* Collects the candidate lists for `path`. Returns false when there are more lists than
 * fcr__candidates holds or more than the lookup follows: the caller then tries every
 * entry. */
bool fcr__segindex_lookup(const fcr__segindex *ix, const char *path, size_t len,
                          fcr__candidates *out);

void fcr__segindex_free(fcr__segindex *ix);

#endif
