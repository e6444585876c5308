/* Internal: the app's objects and the per-request context shared by app/ files. */
#ifndef FCR_APP_INT_H
#define FCR_APP_INT_H

#include <fcrest/app.h>

#include "core/framework.h"

#include <ev.h>

#include <stdalign.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- Arena: per-request memory freed at once ------------------------------------------ */

typedef struct fcr_arena_block fcr_arena_block;

/* A zeroed arena is empty and valid. */
typedef struct fcr_arena {
    fcr_arena_block *head;
    fcr_arena_block *first; /* the owner's memory (fcr__arena_init), or NULL */
} fcr_arena;

/* Makes `a` an empty arena whose first block is the `size` bytes at `mem` (aligned for any
 * type; NULL: none), which fcr__arena_free() keeps for reuse instead of freeing. */
void fcr__arena_init(fcr_arena *a, void *mem, size_t size);
void *fcr__arena_alloc(fcr_arena *a, size_t n);
char *fcr__arena_strndup(fcr_arena *a, const char *s, size_t n);
/* Frees every block but the first one given to fcr__arena_init(), and empties the arena. */
void fcr__arena_free(fcr_arena *a);

/* ---- Middleware lists ----------------------------------------------------------------- */

enum { MW_BEFORE, MW_AFTER, MW_GUARD };

typedef struct fcr_mw {
    int kind;
    unsigned long seq; /* registration order across all apps and routes */
    fcr_before_mw before;
    fcr_after_mw after;
    fcr_authorizer auth;
    void *data;
} fcr_mw;

typedef struct fcr_mw_list {
    fcr_mw *v;
    size_t n, cap;
} fcr_mw_list;

/* Deepest chain of mounted apps. */
#define FCR_MAX_MOUNT_DEPTH 8

struct fcr_route {
    fcr_app *app;
    fcr_handler handler;
    void *data;
    fcr_mw_list before; /* MW_BEFORE and MW_GUARD */
    fcr_mw_list after;
    size_t max_body; /* 0: inherited */
    char *consumes;  /* required media type, or NULL */
    fcr_route *next;
};

struct fcr_app {
    fcr_router *router; /* NULL once mounted: the parent's router owns it */
    fcr_app *parent;
    unsigned depth; /* mounted apps below this one, for the depth cap */
    fcr_mw_list before;
    fcr_mw_list after;
    fcr_route *routes, *routes_tail;
    fcr_app **mounts;
    size_t nmounts;
    size_t max_body;   /* 0: inherited */
    bool limits_below; /* a route or mounted app below sets its own body limit */
    char *prefix;      /* stripped from the routing path, or NULL */
    size_t prefix_len;
    bool route_on_uri;
    bool access_log;
    fcr_authorizer authz;
    void *authz_data;
    fcr_handler filter;
    void *filter_data;
    char *error;           /* first failed registration */
    struct fcr_ctx *spare; /* finished contexts kept for reuse (the serving app's) */
    unsigned nspare;
};

/* ---- Per-request context -------------------------------------------------------------- */

typedef struct fcr_kv {
    const char *name;
    const char *value;
} fcr_kv;

typedef struct fcr_kv_list {
    fcr_kv *v;
    size_t n, cap;
    bool parsed;
} fcr_kv_list;

/* A reference-counted body buffer: queued output holds a reference until written. A small body
 * lives in the context instead (`heap` false): its data in the arena, written by copy. */
typedef struct fcr_body {
    unsigned refs;
    bool heap; /* the struct and data are malloc'd and reference-counted */
    size_t len, cap;
    char *data;
} fcr_body;

typedef struct fcr_hdr {
    const char *name;
    const char *value;
} fcr_hdr;

struct fcr_auth {
    struct fcr_ctx *ctx;
    fcr_kv_list vars;
    const char *user;
};

typedef struct fcr_ctx fcr_ctx;

struct fcr_res {
    fcr_ctx *ctx;
    int status;
    fcr_hdr *h;
    size_t nh, caph;
    fcr_body *body;
};

#define FCR_CTX_MAGIC 0x66637278u

/* Bytes of the arena block inside each context. */
#define FCR_CTX_ARENA_SIZE 1536u

/* Finished contexts an app keeps for reuse. */
#define FCR_CTX_SPARES 16u

enum ctx_state {
    ST_RUNNING, /* in the framework's pipeline or the handler */
    ST_ASYNC,   /* the handler returned FCR_ASYNC; fcr_res_send() is awaited */
    ST_OUTPUT,  /* writing the response */
};

struct fcr_ctx {
    uint32_t magic;
    int state;
    fcr_app *app; /* the serving app */
    fcr_req *req;
    struct ev_loop *loop; /* kept: the server may be freed before an async answer */
    fcr_route *route;
    fcr_match match;
    const char *method;
    const char *path; /* routing path (NUL-terminated; path_len bytes) */
    size_t path_len;
    unsigned path_flags; /* for fcr_router_match: FCR_MATCH_DECODE when `path` is raw */
    const char *base;
    bool no_body;    /* HEAD: Content-Length but no body */
    bool in_handler; /* fcr_res_send() inside the handler only marks the response ready */
    bool send_asked;
    bool sent;
    fcr_arena arena;
    fcr_res res;
    fcr_kv_list query, form, cookies, vars;
    const char *user;
    json_t *json;
    bool json_done;
    char *json_error;       /* problem detail of the failed parse */
    double start;           /* monotonic seconds when the app got the request */
    const char *request_id; /* fcr_req_request_id, made on first use */
    /* output */
    ev_timer resume; /* continues the output after a drain callback */
    char *head;
    size_t head_len, head_off;
    size_t body_off, body_end;
    fcr_body body; /* the small body (res.body points here until it grows past the arena) */
    struct fcr_ctx *next_spare;
    /* The arena's first block: the memory of most requests needs no allocation. Kept last:
     * a context is cleared up to here. */
    alignas(max_align_t) unsigned char arena_mem[FCR_CTX_ARENA_SIZE];
};

/* The context of `req`, or NULL when it is not an app's request. */
fcr_ctx *fcr__ctx(const fcr_req *req);

/* Response internals (response.c). */
void fcr__res_init(fcr_res *res, fcr_ctx *ctx);
void fcr__res_reset(fcr_res *res);
void fcr__res_release(fcr_res *res);
int fcr__res_set_status_problem(fcr_res *res, int status, const char *detail);
/* Serializes and writes the response, then finishes the request and frees the context. */
void fcr__ctx_output(fcr_ctx *ctx);
/* Monotonic clock in seconds. */
double fcr__now(void);

/* Frees the context (not the request). */
void fcr__ctx_free(fcr_ctx *ctx);

/* Pipeline (app.c): runs after-middleware, then output. */
void fcr__ctx_send(fcr_ctx *ctx);


/* Copies the request's method and path into `out` as "METHOD PATH" for log lines, with control
 * bytes and backslashes escaped as \xNN (a path cannot forge log lines) and long paths cut. */
void fcr__describe(const fcr_ctx *ctx, char *out, size_t cap);

/* Parses a decimal size with an optional k/m/g suffix (binary multiples). Returns 0 or
 * FCR_EINVAL. */
int fcr__parse_size(const char *s, size_t *out);


/* ---- Parsers (request.c), reachable by the fuzz targets ------------------------------ */

/* Parses application/x-www-form-urlencoded text ("a=1&b=2": percent-decoding, '+' as space)
 * of `len` bytes at `s` into `l`, all memory from `a`. Empty pairs and pairs with a malformed
 * %-escape are skipped; a name without '=' gets the value "". Names and values are
 * NUL-terminated (a decoded %00 cuts them short for strcmp lookups). Sets l->parsed. Returns 0
 * or FCR_ENOMEM (then `l` holds the pairs parsed so far). */
int fcr__parse_urlencoded(fcr_arena *a, const char *s, size_t len, fcr_kv_list *l);

/* Parses a Cookie header value ("a=1; b=\"x y\"") of `len` bytes at `s` (NULL: none) into
 * `l`: blanks around names and values trimmed, one pair of surrounding double quotes removed,
 * pieces without '=' or with an empty name skipped. Sets l->parsed. Returns 0 or FCR_ENOMEM. */
int fcr__parse_cookies(fcr_arena *a, const char *s, size_t len, fcr_kv_list *l);

/* Parses `len` bytes of JSON text (any value). Returns a new reference, or NULL with a
 * NUL-terminated message in `detail` (`cap` > 0 bytes): "invalid JSON at line L, column C:
 * MESSAGE", or "out of memory" with `*oom` set. */
json_t *fcr__json_parse(const char *text, size_t len, bool *oom, char *detail, size_t cap);

#endif
