/* Internal: the app's objects and the per-request context shared by app/ files. Every name
 * declared here is internal: fcr__ for types and functions, FCR__ for macros and enum values
 * (the struct tags fcr_app, fcr_route, fcr_res and fcr_auth complete the public opaque types). */
#ifndef FCR__APP_INT_H
#define FCR__APP_INT_H

#include <fcrest/app.h>

#include "core/framework.h"
#include "core/mem.h"

#include <ev.h>

#include <stdalign.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- Middleware lists ----------------------------------------------------------------- */

enum { FCR__MW_BEFORE, FCR__MW_AFTER, FCR__MW_GUARD };

typedef struct fcr__mw {
    int kind;
    unsigned long seq; /* registration order across all apps and routes */
    fcr_before_mw before;
    fcr_after_mw after;
    fcr_authorizer auth;
    void *data;
} fcr__mw;

/* Deepest chain of mounted apps. */
#define FCR__MAX_MOUNT_DEPTH 8

struct fcr_route {
    fcr_app *app;
    fcr_handler handler;
    void *data;
    fcr__vec before; /* of fcr__mw: FCR__MW_BEFORE and FCR__MW_GUARD */
    fcr__vec after;  /* of fcr__mw */
    size_t max_body; /* 0: inherited */
    char *consumes;  /* required media type, or NULL */
    fcr_route *next;
    char *pattern;       /* as registered (the metrics' route label) */
    unsigned metrics_id; /* its row in the metrics (metrics.c); 0: none */
    bool stream_body;    /* the handler reads the body as a stream (fcr_route_stream_body) */
};

struct fcr_app {
    fcr_router *router; /* NULL once mounted: the parent's router owns it */
    fcr_app *parent;
    unsigned depth;  /* mounted apps below this one, for the depth cap */
    fcr__vec before; /* of fcr__mw */
    fcr__vec after;  /* of fcr__mw */
    fcr_route *routes, *routes_tail;
    fcr__vec mounts; /* of fcr_app *, owned */
    size_t max_body; /* 0: inherited */
    /* a route or mounted app below sets its own body limit or streams its body: requests are
     * routed when their params are complete, before the body */
    bool route_early;
    char *prefix; /* stripped from the routing path, or NULL */
    size_t prefix_len;
    bool route_on_uri;
    bool access_log;
    fcr_authorizer authz;
    void *authz_data;
    fcr_handler filter;
    void *filter_data;
    size_t max_output_memory; /* 0: FCR_DEFAULT_MAX_OUTPUT_MEMORY */
    size_t output_held;       /* bytes of answer bodies held until their connections take them */
    double held_log_at;       /* when a 503 for the output memory was last logged */
    unsigned long held_unlogged;
    unsigned threads;       /* pool threads; 0: FCR_DEFAULT_THREADS */
    struct fcr__pool *pool; /* the deferral pool, made on the first fcr_defer (defer.c) */
    char *error;            /* first failed registration */
    struct fcr__ctx *spare; /* finished contexts kept for reuse (the serving app's) */
    unsigned nspare;
    struct fcr__body *spare_bodies; /* written heap bodies kept for reuse (response.c) */
    unsigned nspare_bodies;
    struct fcr__run *run;  /* the program's options and base server configuration, or NULL */
    fcr__vec worker_start; /* of fcr__hook: fcr_app_on_worker_start() */
    fcr__vec worker_stop;  /* of fcr__hook: fcr_app_on_worker_stop() */
    fcr_cors *cors;        /* fcr_app_set_cors(), or NULL */

    char *mount_prefix;           /* the prefix it is mounted under, or NULL */
    struct fcr__metrics *metrics; /* fcr_app_metrics(), or NULL */
};

/* A worker hook of an app (one of the two kinds). */
typedef struct fcr__hook {
    int (*start)(fcr_app *app, struct ev_loop *loop, void *data);
    void (*stop)(fcr_app *app, struct ev_loop *loop, void *data);
    void *data;
} fcr__hook;

/* Makes `srv` run the app's worker hooks (app.c): used by fcr_app_server_new(). */
void fcr__app_install_worker_hooks(fcr_app *app, fcr_server *srv);

/* Frees what fcr_app_add_option() and fcr_app_set_server_config() keep (run.c); NULL is
 * ignored. */
void fcr__run_free(struct fcr__run *run);

/* ---- Per-request context -------------------------------------------------------------- */

typedef struct fcr__kv {
    const char *name;
    const char *value;
} fcr__kv;

/* Names and values in the context's arena. */
typedef struct fcr__kv_list {
    fcr__vec kv; /* of fcr__kv, in the arena */
    bool parsed;
} fcr__kv_list;

/* The `nth` value (from 0) of `name` in `l`, or NULL. */
const char *fcr__kv_find(const fcr__kv_list *l, const char *name, size_t nth);
/* Sets `name` to `value` in `l`, both copied into `a`: a later value of a name replaces the
 * earlier, so a name is in the list once. Returns 0 or FCR_ENOMEM. */
int fcr__kv_set(fcr__arena *a, fcr__kv_list *l, const char *name, const char *value);

/* A reference-counted body buffer: queued output holds a reference until written. A small body
 * lives in the context instead (`heap` false): its data in the arena, written by copy. */
typedef struct fcr__body {
    unsigned refs;
    bool heap;    /* the struct and data are malloc'd and reference-counted */
    fcr__buf buf; /* a NUL byte is kept after the body */
    size_t *held; /* the serving app's output_held, which counts `counted` bytes for it */
    size_t counted;
    struct fcr_app *owner;  /* heap: the serving app, which keeps it for reuse when written */
    struct fcr__body *next; /* in owner->spare_bodies */
} fcr__body;

/* Frees the heap bodies an app keeps for reuse (response.c). */
void fcr__bodies_free(struct fcr_app *app);

struct fcr_auth {
    struct fcr__ctx *ctx;
    fcr__kv_list vars;
    const char *user;
};

typedef struct fcr__ctx fcr__ctx;

/* The before-middleware lists that apply to a request, merged by registration order: where a
 * chain stands (it is kept in the context, so a deferred middleware resumes it). */
typedef struct fcr__mw_iter {
    const fcr__vec *l[FCR__MAX_MOUNT_DEPTH + 2]; /* of fcr__mw */
    size_t pos[FCR__MAX_MOUNT_DEPTH + 2];
    size_t n;
} fcr__mw_iter;

/* Where a deferred callback's done gives its verdict (fcr__ctx.at). */
enum fcr__at {
    FCR__AT_NONE,
    FCR__AT_BEFORE,  /* a before-middleware: FCR_CONTINUE, FCR_STOP */
    FCR__AT_GUARD,   /* an authorizer guarding a route: FCR_ALLOW, FCR_DENY */
    FCR__AT_HANDLER, /* the handler (or the FILTER handler): FCR_DONE, FCR_ASYNC */
    FCR__AT_BODY,    /* a body fn: the fcr_body_result verdicts */
    FCR__AT_ROLE,    /* the authorizer answering an AUTHORIZER request */
    FCR__AT_MISUSE,  /* the callback deferred but returned another verdict: 500 after done */
};

struct fcr_res {
    fcr__ctx *ctx;
    int status;
    fcr__vec h; /* of fcr__kv, in the arena */
    fcr__body *body;
};

#define FCR__CTX_MAGIC 0x66637278u

/* Bytes of the arena block inside each context. */
#define FCR__CTX_ARENA_SIZE 1536u

/* Finished contexts an app keeps for reuse. */
#define FCR__CTX_SPARES 16u

enum fcr__ctx_state {
    FCR__ST_RUNNING,  /* in the framework's pipeline or the handler */
    FCR__ST_ASYNC,    /* the handler returned FCR_ASYNC; fcr_res_send() is awaited */
    FCR__ST_DEFERRED, /* fcr_defer() work is queued or running; its done resumes the chain */
    FCR__ST_OUTPUT,   /* writing the response */
    FCR__ST_STREAM,   /* a streamed answer: the handler writes it (stream.c) */
};

struct fcr__ctx {
    fcr_app *app; /* the serving app */
    fcr_req *req;
    struct ev_loop *loop; /* kept: the server may be freed before an async answer */
    fcr_route *route;
    fcr_match match;
    const char *method;
    const char *path; /* routing path (NUL-terminated; path_len bytes) */
    size_t path_len;
    const char *base;
    fcr__arena arena;
    fcr_res res;
    /* the chain (run_chain), kept for a deferred middleware's done */
    fcr__mw_iter it;
    fcr_handler handler;
    void *handler_data;
    struct fcr_auth auth; /* the running authorizer's; kept until a deferred one's done */
    fcr__kv_list query, form, cookies, vars;
    const char *user;
    json_t *json;
    char *json_error;       /* problem detail of the failed parse */
    double start;           /* monotonic seconds when the app got the request */
    const char *request_id; /* fcr_req_request_id, made on first use */
    /* output */
    ev_timer resume; /* continues the output after a drain callback */
    char *head;
    size_t head_len, head_off;
    size_t body_off, body_end;
    fcr__body body; /* the small body (res.body points here until it grows past the arena) */
    /* streamed request body (stream.c) */
    fcr_body_fn body_fn; /* set by fcr_req_read_body */
    void *body_data;
    size_t body_seen;    /* bytes handed to body_fn */
    size_t body_limit;   /* the route's body limit */
    unsigned char *held; /* malloc'd, held_cap bytes */
    size_t held_len, held_cap;
    const unsigned char *unread; /* fcr__body_unread(): the tail of the piece given back */
    size_t unread_len;
    void (*body_release)(void *data); /* fcr__body_on_release() */
    void *body_release_data;
    ev_timer body_kick; /* hands over held input from the loop */
    /* streamed answer (stream.c) */
    size_t stream_bytes; /* body bytes written with fcr_res_stream_write() */
    void (*drain_fn)(fcr_res *res, void *data);
    void *drain_data;
    ev_timer drain_kick; /* calls drain_fn from the loop */
    struct fcr__ctx *next_spare;
    uint32_t magic;
    int state;
    unsigned path_flags; /* for fcr_router_match: FCR_MATCH_DECODE when `path` is raw */
    /* deferral (fcr_defer) */
    int defer_err; /* the last fcr_defer failure of the running callback (FCR_EAGAIN: the 503 is
                      in the response) */
    int at;        /* enum fcr__at: whose verdict the done gives */
    bool defer_pending; /* queued by the running callback, or by a done */
    bool no_body;       /* HEAD: Content-Length but no body */
    bool in_handler;    /* fcr_res_send() inside the handler only marks the response ready */
    bool send_asked;
    bool sent;
    bool routed;     /* ctx->match holds the request's match (it is routed once) */
    bool too_big;    /* the declared body exceeds the limit: 413 after the before-middleware */
    bool bad_length; /* CONTENT_LENGTH (or FCGI_DATA_LENGTH) is not a number: 400, likewise */
    bool too_big_chain;
    bool json_done;
    bool preflight; /* a CORS preflight answered by the framework */
    /* streamed request body */
    bool body_stream;   /* the route streams its body: the core hands it to stream.c */
    bool body_over;     /* the body fn ended its reading, got the end or was told it is gone */
    bool body_paused;   /* the body fn returned FCR_BODY_PAUSE */
    bool core_paused;   /* reading from the connection is paused for this request */
    bool held_set;      /* a piece (or the end, with held_len 0) waits in `held` */
    bool kick_on;       /* body_kick is started */
    bool body_end_seen; /* the body fn got the end */
    bool body_oom;      /* a piece could not be held: the request fails when it reads */
    bool in_gone;       /* the body fn is being told the body will not come */
    bool handler_ran;   /* the handler was called: an answer may be streamed */
    /* streamed answer */
    bool stream_end_asked; /* fcr_res_stream_end() called inside a callback */
    bool stream_ending;    /* the stream is being ended: no more writes */
    bool stream_failed;    /* ended by an error: END_REQUEST carries app status 1 */
    bool streamed;         /* fcr_res_stream_begin() was called: the head is out */
    bool stream_mute;      /* HEAD, 204 or 304: streamed writes are dropped */
    bool drain_on;         /* drain_kick is started */
    /* The arena's first block: the memory of most requests needs no allocation. Kept last:
     * a context is cleared up to here. */
    alignas(max_align_t) unsigned char arena_mem[FCR__CTX_ARENA_SIZE];
};

/* ---- The context's life and the output (context.c) ------------------------------------ */

/* The context of `req`, or NULL when it is not an app's request. */
fcr__ctx *fcr__ctx_of(const fcr_req *req);
/* A context for `req` served by `app` (a finished one of the app's reused, else a new one),
 * set as the request's framework data, which the core releases with the request if the
 * pipeline never ends it (input that never completes); the routing path is not set yet. NULL
 * when out of memory. */
fcr__ctx *fcr__ctx_new(fcr_app *app, fcr_req *req);
/* Frees the context (not the request), keeping it for the app's next request while the app
 * keeps fewer than FCR__CTX_SPARES. */
void fcr__ctx_free(fcr__ctx *ctx);
/* Serializes and writes the response, then finishes the request and frees the context. */
void fcr__ctx_output(fcr__ctx *ctx);
/* Copies the request's method and path into `out` as "METHOD PATH" for log lines, with control
 * bytes and backslashes escaped as \xNN (a path cannot forge log lines) and long paths cut. */
void fcr__describe(const fcr__ctx *ctx, char *out, size_t cap);
/* Monotonic clock in seconds. */
double fcr__now(void);

/* ---- Log lines about a request -------------------------------------------------------- */

/* What fcr__log_enter replaced, for fcr__log_leave. */
typedef struct fcr__log_saved {
    const char *(*fn)(const void *arg);
    const void *arg;
} fcr__log_saved;

/* Makes the log lines of this thread carry the id of `ctx`'s request until fcr__log_leave()
 * (context.c); a freed context stops being the current one. */
fcr__log_saved fcr__log_enter(const fcr__ctx *ctx);
void fcr__log_leave(fcr__log_saved saved);

/* ---- Pipeline (pipeline.c) ------------------------------------------------------------ */

/* Runs the after-middleware (not for the AUTHORIZER role). */
void fcr__ctx_after(fcr__ctx *ctx);

/* Runs the after-middleware (not for the AUTHORIZER role), then the output. Once only. */
void fcr__ctx_send(fcr__ctx *ctx);
/* Logs a failure of `what` with code `rc` to the request's STDERR stream and the app log, and
 * replaces the response with 500 problem+json. */
void fcr__ctx_fail(fcr__ctx *ctx, int rc, const char *what);

/* Runs a deferred callback's `done` and takes its return value as the verdict of the callback
 * that deferred: the chain goes on where it stopped. After an abort the request is released
 * instead (nothing is sent). With `ending` (the app is freed) the answer is sent whatever the
 * verdict. */
void fcr__defer_done(fcr__ctx *ctx, fcr_done_fn done, void *data, bool ending);
/* Takes a callback's verdict `rc` (`async`: it is the callback kind's async verdict) where it
 * concerns a deferral: a queued one makes the request wait for its done (which gives the verdict
 * of kind `at`, or a 500 when the callback returned another verdict); a failed one answered by
 * the async verdict or by the error itself sends the answer fcr_defer left (503 for a full
 * queue, else 500 naming `what`). Returns true when the request is taken care of, false when
 * the verdict is to be handled as usual. */
bool fcr__deferral_verdict(fcr__ctx *ctx, bool async, int rc, int at, const char *what);

/* ---- CORS (cors.c) ------------------------------------------------------------------- */

/* Adds the Access-Control-* headers and Vary: Origin to an answer of an app with CORS. */
int fcr__cors_answer(fcr__ctx *ctx);
/* Fills the answer to a preflight request; `allowed`: the path's methods (0: no route). */
int fcr__cors_preflight(fcr__ctx *ctx, unsigned allowed);

/* ---- Streamed bodies (stream.c) ------------------------------------------------------- */

/* The core's chunk callback of a request whose route streams its body. */
int fcr__body_chunk(fcr_req *req, fcr_stream stream, const void *buf, size_t len);
/* Takes a body fn's verdict `rc` (also from a done); may free the context. Returns 0 when the
 * body fn wants the next piece now, else nonzero (it waits, or the reading ended: the context
 * may be gone). */
int fcr__body_verdict(fcr__ctx *ctx, int rc);
/* Starts handing the body over (from the loop) once the handler returned FCR_ASYNC after
 * fcr_req_read_body(). */
void fcr__body_start(fcr__ctx *ctx);
/* Ends a streamed answer (the rest of its prelude first) and releases the request. */
void fcr__stream_end(fcr__ctx *ctx);
/* Called by a body fn while it handles a piece (multipart.c): the last `len` bytes of the piece
 * (at `tail`) are given back when it returns FCR_BODY_PAUSE, or FCR_BODY_ASYNC after a
 * deferral: they are held and handed to it again first when reading goes on, and count against
 * the body limit once. Ignored with any other verdict. Returns 0 or FCR_EINVAL (not inside a
 * body fn's piece). */
int fcr__body_unread(fcr_req *req, const void *tail, size_t len);
/* Makes `fn(data)` run once when the request's context is freed, whatever ended the reading of
 * its body (multipart.c: temporary files and buffers). Returns 0 or FCR_EINVAL. */
int fcr__body_on_release(fcr_req *req, void (*fn)(void *data), void *data);
/* Tells the body fn, once, that the body will not come to its end (buf NULL). */
void fcr__body_gone(fcr__ctx *ctx);
/* The framework's abort watch of a request: a request waiting for its body is released; a
 * streamed answer's drain callback is called. */
void fcr__stream_abort(fcr__ctx *ctx);
/* Frees what the context holds for streaming (the held piece, the timers). */
void fcr__stream_release(fcr__ctx *ctx);
/* Builds the head of a streamed answer into the context (no Content-Length). Returns 0 or
 * FCR_ENOMEM (context.c). */
int fcr__build_head(fcr__ctx *ctx, bool streamed);
/* Finishes the request and frees the context, logging the access line; a body fn still
 * reading is told first (context.c). */
void fcr__ctx_finish(fcr__ctx *ctx);
/* Writes the head and body prepared in the context, then finishes (context.c). */
void fcr__ctx_pump(fcr__ctx *ctx);
/* A handler's verdict `rc` (also a done's, or a body fn's that ends the reading). */
void fcr__handler_verdict(fcr__ctx *ctx, int rc);

/* ---- Deferral pool (defer.c) ---------------------------------------------------------- */

/* Stops the app's pool: queued work runs, the threads are joined, the completions' done
 * functions run on the calling thread; then frees it. */
void fcr__pool_free(fcr_app *app);

/* ---- Metrics (metrics.c) ---------------------------------------------------------------- */

typedef struct fcr__metrics fcr__metrics;

/* Makes the metrics' shared area for `app` served by `srv` when there is none yet (one slot:
 * this process), and installs the supervisor's hooks (a larger area before the workers are
 * forked) and the connection gauge on `srv`. Returns 0 or FCR_ENOMEM. */
int fcr__metrics_attach(fcr_app *app, fcr_server *srv);
/* A request begins (its context is made) / its context is freed: the in-flight gauge. */
void fcr__metrics_begin(fcr__ctx *ctx);
void fcr__metrics_release(fcr__ctx *ctx);
/* A request ends (fcr__ctx_finish): its counter and its duration. */
void fcr__metrics_end(fcr__ctx *ctx);
/* A deferral is queued (+1) or its done has run (-1). */
void fcr__metrics_deferred(fcr_app *app, int delta);
/* Frees the app's metrics (unmapping the area in this process). */
void fcr__metrics_free(fcr_app *app);

/* ---- Authorization (auth.c) ----------------------------------------------------------- */

/* Calls the authorizer `fn` with a fresh ctx->auth; returns its raw verdict. */
int fcr__auth_call(fcr__ctx *ctx, fcr_authorizer fn, void *data);
/* A guard's handling of an authorizer's verdict `rc`: an allow copies the variables and user
 * into the request and gives FCR_CONTINUE; a deny gives FCR_STOP with the denial in the
 * response (403 problem+json when below 400); else a negative error. */
int fcr__auth_guard_verdict(fcr__ctx *ctx, int rc);
/* Answers a FastCGI AUTHORIZER request with the app's authorizer, and sends the answer (or
 * waits for a deferred authorizer's done). */
void fcr__auth_role(fcr__ctx *ctx);
/* The AUTHORIZER role's handling of the verdict `rc`: the answer is sent, or the request waits
 * for the done of a deferral. */
void fcr__auth_role_verdict(fcr__ctx *ctx, int rc);

/* ---- Responses (response.c) ----------------------------------------------------------- */

void fcr__res_init(fcr_res *res, fcr__ctx *ctx);
/* Back to status 200, no headers, an empty body. */
void fcr__res_reset(fcr_res *res);
/* Drops the response's hold on its body and header list. */
void fcr__res_release(fcr_res *res);
int fcr__res_set_status_problem(fcr_res *res, int status, const char *detail);
/* Drops a reference on a heap body (fcr__body.heap), freeing it with the last one. */
void fcr__body_unref(void *arg);

/* Parses a decimal size with an optional k/m/g suffix (binary multiples). Returns 0 or
 * FCR_EINVAL. */
int fcr__parse_size(const char *s, size_t *out);

/* ---- JSON text (json.c) ---------------------------------------------------------------- */

/* Bytes of the compact JSON text of `v` (what json_dumpb(JSON_COMPACT | JSON_ENCODE_ANY)
 * writes), or 0 for NULL, a value nested deeper than 2048 levels or a cycle. */
size_t fcr__json_size(const json_t *v);
/* Writes that text into `out` (at most `cap` bytes, no NUL); returns its full length, or 0 as
 * fcr__json_size. Allocates nothing. */
size_t fcr__json_write(const json_t *v, char *out, size_t cap);
/* Appends `len` bytes of `str` as a JSON string at out + *n (at most `cap` in all), adding the
 * full length to *n. */
void fcr__json_put_string(char *out, size_t *n, size_t cap, const char *str, size_t len);
/* Appends `len` bytes of `b` as they are, likewise. */
void fcr__json_put_raw(char *out, size_t *n, size_t cap, const char *b, size_t len);
/* True when `len` bytes at `str` are UTF-8 without NUL bytes (what jansson takes in a string). */
bool fcr__utf8_valid(const char *str, size_t len);

/* ---- Parsers (request.c), reachable by the fuzz targets ------------------------------ */

/* Parses application/x-www-form-urlencoded text ("a=1&b=2": percent-decoding, '+' as space)
 * of `len` bytes at `s` into `l`, all memory from `a`. Empty pairs and pairs with a malformed
 * %-escape are skipped; a name without '=' gets the value "". Names and values are
 * NUL-terminated (a decoded %00 cuts them short for strcmp lookups). Sets l->parsed. Returns 0
 * or FCR_ENOMEM (then `l` holds the pairs parsed so far). */
int fcr__parse_urlencoded(fcr__arena *a, const char *s, size_t len, fcr__kv_list *l);

/* Parses a Cookie header value ("a=1; b=\"x y\"") of `len` bytes at `s` (NULL: none) into
 * `l`: blanks around names and values trimmed, one pair of surrounding double quotes removed,
 * pieces without '=' or with an empty name skipped. Sets l->parsed. Returns 0 or FCR_ENOMEM. */
int fcr__parse_cookies(fcr__arena *a, const char *s, size_t len, fcr__kv_list *l);

/* Parses `len` bytes of JSON text (any value). Returns a new reference, or NULL with a
 * NUL-terminated message in `detail` (`cap` > 0 bytes): "invalid JSON at line L, column C:
 * MESSAGE", or "out of memory" with `*oom` set. */
json_t *fcr__json_parse(const char *text, size_t len, bool *oom, char *detail, size_t cap);

#endif
