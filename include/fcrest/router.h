/**
 * @file fcrest/router.h
 * @brief fcrest router: method set + PCRE2 pattern on a path -> opaque target.
 *
 * Knows nothing of FastCGI or JSON. A router and its match state belong to one thread (one
 * worker process).
 *
 * Precedence: routes and mounts are tried in registration order; a mount stands for the
 * routes of its child at the place where it was mounted. The first route that matches the
 * path and serves the method wins. A route that matches the path but not the method still
 * adds its methods to the Allow set (405). For HEAD, a route that serves HEAD itself wins over
 * a GET route (even one registered earlier); for OPTIONS, a route that serves OPTIONS wins
 * over the automatic answer.
 *
 * Cost: every route is filed under the path segments its pattern proves, each either a
 * literal ("api" in "/api/v1/...") or any one segment (a part such as `(?<id>[0-9]+)` or
 * `[^/]+` that cannot match a '/'), up to the first part that may match a '/' or that the
 * router does not read (such as `.*`, an option setting or a lookaround); a pattern with a
 * top-level '|' proves nothing. Mounts are filed under their prefix's segments. A lookup
 * follows its path's segments through every literal and "any segment" branch that can match,
 * then runs, in registration order, only the patterns filed where it arrived and those of the
 * routes whose proof stopped on its way (for "/notes(/.*)?": every path that starts with a
 * '/'). So "/res<i>/(?<id>[0-9]+)", "/api/v1/res<i>/(?<id>[0-9]+)" or
 * "/(?<tenant>[a-z]+)/res<i>/(?<id>[0-9]+)" cost about the same with 10 routes or 1,000.
 *
 * Decoding: patterns always run on the bytes of the path as the caller passes it. A path param
 * is decoded exactly once, wherever that happens: the caller of fcr_router_match() says whether
 * the path is still percent-encoded as the client sent it (FCR_MATCH_DECODE, such as the path
 * of REQUEST_URI: the router decodes each value once) or was decoded already (0, such as the
 * SCRIPT_NAME + PATH_INFO a web server passes: each value is taken verbatim).
 */
#ifndef FCREST_ROUTER_H
#define FCREST_ROUTER_H

#include <stdbool.h>
#include <stddef.h>

#include <fcrest/error.h>

#ifdef __cplusplus
extern "C" {
#endif

/** HTTP methods as bits, so a route can serve a set. */
enum fcr_method {
    FCR_GET = 1u << 0,     /**< GET */
    FCR_HEAD = 1u << 1,    /**< HEAD */
    FCR_POST = 1u << 2,    /**< POST */
    FCR_PUT = 1u << 3,     /**< PUT */
    FCR_DELETE = 1u << 4,  /**< DELETE */
    FCR_PATCH = 1u << 5,   /**< PATCH */
    FCR_OPTIONS = 1u << 6, /**< OPTIONS */
    FCR_TRACE = 1u << 7,   /**< TRACE */
    FCR_CONNECT = 1u << 8, /**< CONNECT */
};
/** The set of every ::fcr_method bit. */
#define FCR_ANY_METHOD 0x1ffu

/**
 * Returns the bit of the method named by the `len` bytes at `name` (exact, case-sensitive as
 * in HTTP), or 0 for a method fcrest does not know (or a NULL `name`).
 */
unsigned fcr_method_parse(const char *name, size_t len);

/**
 * Returns the name of a single method bit ("GET"), or NULL when `method` is not one bit.
 * Static storage: must not be freed.
 */
const char *fcr_method_name(unsigned method);

/**
 * Writes the methods of `set` as "GET, HEAD, POST" (a valid Allow header value, in bit order)
 * into `buf` of `cap` bytes, NUL-terminated. Returns the length, or FCR_ETOOBIG when it does
 * not fit (64 bytes always fit; `buf` then holds ""). Bits outside FCR_ANY_METHOD are
 * ignored; an empty set gives "". A NULL `buf` or a `cap` of 0 gives FCR_ETOOBIG.
 */
int fcr_methods_format(unsigned set, char *buf, size_t cap);

/**
 * A router: routes and mounted routers, tried in registration order. Opaque; created with
 * fcr_router_new() and freed with fcr_router_free(), by the caller that created it unless it
 * was mounted in another router.
 */
typedef struct fcr_router fcr_router;

/** Details of a refused pattern: PCRE2's message and the offset in the pattern. */
typedef struct fcr_router_error {
    size_t offset;     /**< offset in the pattern where PCRE2 found the error */
    char message[160]; /**< PCRE2's message, NUL-terminated (truncated when longer) */
} fcr_router_error;

/**
 * Creates an empty router. Returns NULL when out of memory. The caller owns the router and
 * frees it with fcr_router_free() (or hands it over with fcr_router_mount()).
 */
fcr_router *fcr_router_new(void);

/**
 * Frees the router, its routes and every router mounted in it. NULL is ignored. A router
 * mounted in another belongs to that one: free only the outermost. Route targets are not
 * freed.
 */
void fcr_router_free(fcr_router *r);

/**
 * Adds a route: `methods` (a non-empty set of fcr_method bits) and `pattern`, a PCRE2 regular
 * expression matched against the bytes of the whole path given to fcr_router_match() (compiled
 * with PCRE2_ANCHORED and PCRE2_ENDANCHORED, so "/a" matches neither "/ab" nor "/x/a", and a
 * match must start at the path's first byte and end at its last even with backtracking verbs
 * such as (*ACCEPT), which PCRE2's JIT does not always hold to those options; UTF-8 mode, where
 * a path that is not valid UTF-8 cannot match a pattern that needs a character there; `\C`
 * refused), JIT-compiled now (interpreted where PCRE2 has no JIT). Named captures
 * `(?<name>...)` become path params, at most FCR_MAX_PATH_PARAMS distinct names. `target` is
 * returned by lookups; the router does not own it. Routes are tried in registration order.
 * Returns 0; FCR_EPARSE for an invalid pattern or one with too many names (with `err`, if not
 * NULL, holding PCRE2's message and the offset in `pattern`); FCR_EINVAL for an empty method
 * set, bits outside FCR_ANY_METHOD or a NULL pattern; FCR_ENOMEM.
 */
int fcr_router_add(fcr_router *r, unsigned methods, const char *pattern, void *target,
                   fcr_router_error *err);

/**
 * Mounts `child` under the literal path prefix `prefix` (such as "/api/v1", no trailing
 * slash), compared byte for byte with the path and only at a segment boundary: a path
 * "/api/v1/x" is looked up in `child` as "/x", and "/api/v1" as ""; "/api/v1x" does not enter
 * the mount. The prefix "/" hands every path to `child` unchanged. The mount takes its place
 * in registration order among the parent's routes; routes added to `child` later count too.
 * The call always takes `child`: whatever it returns, the caller never frees `child`
 * afterwards. On success `r` owns it; on failure it is freed, except when it already has an
 * owner (it is mounted somewhere, is `r` itself or a router `r` is mounted in: FCR_EEXIST,
 * and nothing changes). Returns 0; FCR_EINVAL (NULL `r` or `child`; a prefix that is NULL,
 * empty, does not start with '/' or ends with '/' other than "/"); FCR_EEXIST; FCR_ENOMEM.
 */
int fcr_router_mount(fcr_router *r, const char *prefix, fcr_router *child);

/** Most path params one match can report. */
#define FCR_MAX_PATH_PARAMS 16

/**
 * One path param: NUL-terminated name (owned by the router) and value (in the caller's scratch
 * buffer, NUL-terminated, holding no NUL byte before its end). The value is the bytes of the
 * path the named group matched, decoded once: percent-decoded when fcr_router_match() was
 * given FCR_MATCH_DECODE ("caf%C3%A9" gives "café", "%252e" gives "%2e"), and verbatim
 * without it ("%2e%2e" stays "%2e%2e", "100%" is "100%"). '+' stays '+'. The value may hold
 * any other byte and is not checked to be UTF-8. A named group that did not take part in the
 * match (an optional part of the pattern) gives no param. When several groups share a name,
 * the first one set gives the value.
 */
typedef struct fcr_path_param {
    const char *name;  /**< the capture's name, NUL-terminated, owned by the router */
    const char *value; /**< the value (decoded once), in the caller's scratch buffer */
    size_t len;        /**< bytes in `value`, not counting the terminating NUL */
} fcr_path_param;

/** The outcome of fcr_router_match(). */
typedef enum fcr_match_status {
    FCR_MATCH_FOUND = 0,       /**< a route matched path and method */
    FCR_MATCH_NOT_FOUND = 1,   /**< no route matches the path: 404 */
    FCR_MATCH_NOT_ALLOWED = 2, /**< the path matched, the method did not: 405 with `allowed` */
    FCR_MATCH_OPTIONS = 3,     /**< OPTIONS with no OPTIONS route: answer 204 with `allowed` */
} fcr_match_status;

/**
 * The result of fcr_router_match(), filled in by it; the caller provides the storage (usually
 * on the stack).
 */
typedef struct fcr_match {
    fcr_match_status status; /**< what the lookup found */
    void *target;            /**< the route's target when FOUND */
    bool head_as_get;        /**< HEAD served by a GET route: send no body */
    unsigned allowed;        /**< methods any route serves for this path (with HEAD when GET is
                                  there, and OPTIONS); set for every status but NOT_FOUND */
    size_t nparams;          /**< number of entries of `params` in use (FOUND only) */
    fcr_path_param params[FCR_MAX_PATH_PARAMS]; /**< the path params of the match, each value
                                                     decoded once (see ::fcr_path_param) */
} fcr_match;

/** Flags of fcr_router_match(): how the path it is given is encoded. */
enum fcr_match_flag {
    /** The path is raw, percent-encoded as the client sent it (the path of REQUEST_URI):
        param values are percent-decoded once. Without it the path was decoded already (the
        SCRIPT_NAME + PATH_INFO of a web server) and values are taken verbatim. */
    FCR_MATCH_DECODE = 1u << 0,
};

/**
 * Looks up `path` (`len` bytes) for `method` (one fcr_method bit; 0 for an unknown method,
 * which gives NOT_ALLOWED or NOT_FOUND). The patterns run on the bytes as given, so with a
 * raw path "%2F" never matches a '/' in a pattern. `flags` (0 or FCR_MATCH_DECODE) says
 * whether the path is still percent-encoded, and so what a param value is: with
 * FCR_MATCH_DECODE each value is percent-decoded once after the match, and a route whose value
 * holds an invalid escape ('%' not followed by two hex digits) or would decode to a NUL byte
 * ("%00", or a NUL byte itself) does not match that path; with 0 each value is the matched
 * bytes verbatim ('%' is an ordinary byte: "100%" is a value), and a route whose value holds a
 * NUL byte does not match that path. With no other route, such a path is NOT_FOUND (404), so
 * every param value is a C string that holds all of its bytes.
 * A route whose pattern hits a PCRE2 resource limit does not match either. Param values are
 * written into `scratch` (`cap` bytes; len + FCR_MAX_PATH_PARAMS always suffices when named
 * groups do not overlap, as in any usual route; (len + 1) * FCR_MAX_PATH_PARAMS always
 * suffices). Allocates nothing (where PCRE2 has no JIT, its interpreter sizes its backtracking
 * frames on the first lookups that need them and then reuses them). Returns 0 with `*m` filled
 * (params only when FOUND), or FCR_ETOOBIG when scratch is too small, FCR_EINVAL for an invalid
 * argument (NULL `r` or `m`, NULL `path` with len > 0, NULL `scratch` with cap > 0, `method`
 * not one fcr_method bit or 0, a bit in `flags` other than FCR_MATCH_DECODE); on error `*m` is
 * NOT_FOUND with no target and no params. The params' names are owned by the router and their
 * values live in `scratch`: they are valid while both are (until the router is freed and `scratch`
 * reused).
 */
int fcr_router_match(fcr_router *r, unsigned method, const char *path, size_t len, unsigned flags,
                     fcr_match *m, char *scratch, size_t cap);

/**
 * Returns the value of path param `name` in `m` (NUL-terminated, decoded once as
 * ::fcr_path_param says: percent-decoded when the lookup had FCR_MATCH_DECODE, verbatim
 * without it), or NULL when `m` has no such param (or either argument is NULL).
 */
const char *fcr_match_param(const fcr_match *m, const char *name);

/**
 * Percent-decodes `len` bytes of `in` into `out` (room for len + 1 bytes), NUL-terminating
 * it, and stores the decoded length in `*outlen` (when `outlen` is not NULL). '+' is kept as
 * is when `plus_is_space` is false and becomes ' ' otherwise. Returns 0; FCR_EPARSE for a '%'
 * not followed by two hex digits (then `out` holds the bytes decoded before it,
 * NUL-terminated, and `*outlen` their count); FCR_EINVAL for a NULL `out` or a NULL `in` with
 * len > 0 (nothing is written). `out` may equal `in`.
 */
int fcr_percent_decode(const char *in, size_t len, char *out, size_t *outlen, bool plus_is_space);

#ifdef __cplusplus
}
#endif
#endif
