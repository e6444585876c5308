/* stream: request bodies and answers of any size in bounded memory.
 *
 *   POST /upload          reads the body as it arrives (never all of it in memory) and answers
 *                         200 {"bytes":N,"crc32":"<8 hex digits>"} (CRC-32 as zlib and
 *                         `gzip` compute it); a body over --max-upload is answered 413
 *                         problem+json
 *   GET  /rows?n=N        a JSON array of N rows {"id":I,"name":"row I"} (default a million),
 *                         written as the connection takes it: no Content-Length, so the web
 *                         server sends it chunked
 *   GET  /health          200 {"status":"ok"}
 *
 * Usage: stream [--max-upload BYTES] [--listen unix:PATH | --listen tcp:HOST:PORT]... (--help) */
#include <fcrest.h>

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* ---- POST /upload ------------------------------------------------------------------------- */

typedef struct upload {
    uint64_t bytes;
    uint32_t crc;
} upload;

/* CRC-32 (the IEEE polynomial, reflected), a byte at a time from a table: a few lines here
 * rather than a library for an example's checksum. */
static uint32_t crc_table[256];

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
        crc_table[i] = c;
    }
}

static uint32_t crc_update(uint32_t crc, const unsigned char *p, size_t n)
{
    crc = ~crc;
    for (size_t i = 0; i < n; i++)
        crc = crc_table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
    return ~crc;
}

/* Each piece of the body, then its end (len 0), or buf NULL when the request ended first. */
static fcr_body_result upload_piece(fcr_req *req, fcr_res *res, const void *buf, size_t len,
                                    void *data)
{
    (void)req;
    upload *u = data;
    if (!buf) { /* the client went away, or the body passed the limit (413) */
        free(u);
        return FCR_BODY_DONE;
    }
    if (len == 0) {
        char hex[9];
        snprintf(hex, sizeof hex, "%08lx", (unsigned long)u->crc);
        json_t *j = json_pack("{s:I,s:s}", "bytes", (json_int_t)u->bytes, "crc32", hex);
        free(u);
        return (fcr_body_result)fcr_res_set_json_new(res, 200, j);
    }
    u->crc = crc_update(u->crc, buf, len);
    u->bytes += len;
    return FCR_BODY_MORE;
}

static fcr_handler_result upload_start(fcr_req *req, fcr_res *res, void *data)
{
    (void)res, (void)data;
    upload *u = malloc(sizeof *u);
    if (!u)
        return FCR_HANDLER_ERROR;
    *u = (upload){0, 0};
    int rc = fcr_req_read_body(req, upload_piece, u);
    if (rc < 0) {
        free(u);
        return (fcr_handler_result)rc;
    }
    return FCR_ASYNC;
}

/* ---- GET /rows ---------------------------------------------------------------------------- */

typedef struct rows {
    unsigned long long next, n; /* the next row to format, the number of rows */
    size_t len;                 /* bytes of `batch` not yet taken by the connection */
    bool closed;                /* the closing bracket is in `batch` */
    char batch[16384];          /* rows per write: fewer, larger records */
} rows;

/* Formats the next rows into r->batch. */
static void rows_fill(rows *r)
{
    size_t cap = sizeof r->batch;
    if (r->next == 0)
        r->batch[r->len++] = '[';
    while (r->next < r->n && r->len < cap - 64) {
        int k = snprintf(r->batch + r->len, cap - r->len, "%s{\"id\":%llu,\"name\":\"row %llu\"}",
                         r->next ? "," : "", r->next + 1, r->next + 1);
        r->len += (size_t)k;
        r->next++;
    }
    if (r->next == r->n && r->len < cap) {
        r->batch[r->len++] = ']';
        r->closed = true;
    }
}

/* Writes batches until the connection's queue is full (then waits for it to drain), or to the
 * end. Runs first from the handler, then from the drain callback. */
static void rows_more(fcr_res *res, void *data)
{
    rows *r = data;
    for (;;) {
        if (r->len == 0) {
            if (r->closed)
                break;
            rows_fill(r);
        }
        int rc = fcr_res_stream_write(res, r->batch, r->len);
        if (rc == FCR_EAGAIN) { /* nothing taken: the same batch after the drain */
            fcr_res_stream_on_drain(res, rows_more, r);
            return;
        }
        if (rc < 0)
            break; /* the client went away (FCR_ECLOSED) */
        r->len = 0;
    }
    free(r);
    fcr_res_stream_end(res);
}

static fcr_handler_result rows_start(fcr_req *req, fcr_res *res, void *data)
{
    (void)data;
    unsigned long long n = 1000000;
    const char *q = fcr_req_query(req, "n");
    if (q) {
        char *end;
        n = strtoull(q, &end, 10);
        if (!*q || *end || *q == '-' || n > 1000000000ull)
            return fcr_res_set_problem(res, 400, "n must be a number of rows up to 1000000000");
    }
    rows *r = calloc(1, sizeof *r);
    if (!r)
        return FCR_HANDLER_ERROR;
    r->n = n;
    fcr_res_set_header(res, "Content-Type", "application/json");
    int rc = fcr_res_stream_begin(res);
    if (rc < 0) {
        free(r);
        return (fcr_handler_result)rc;
    }
    fcr_res_stream_on_drain(res, rows_more, r); /* the first batch as soon as there is room */
    return FCR_ASYNC;
}

/* ---- GET /health -------------------------------------------------------------------------- */

static fcr_handler_result health(fcr_req *req, fcr_res *res, void *data)
{
    (void)req, (void)data;
    return fcr_res_set_json_new(res, 200, json_pack("{s:s}", "status", "ok"));
}

/* Sets the upload route's limit from --max-upload once the options are parsed. */
static int apply_limit(fcr_app *app, struct ev_loop *loop, void *data)
{
    (void)loop;
    unsigned long long max;
    if (fcr_app_option_uint(app, "--max-upload", &max) == 0 && max > 0)
        return fcr_route_set_max_body(data, (size_t)max);
    return 0;
}

int main(int argc, char **argv)
{
    crc_init();
    fcr_app *app = fcr_app_new();
    if (!app)
        return 1;
    fcr_route *up = fcr_app_route(app, FCR_POST, "/upload", upload_start, NULL);
    fcr_route_stream_body(up); /* the handler reads the body itself */
    fcr_route_set_max_body(up, 1ull << 30);
    fcr_app_route(app, FCR_GET, "/rows", rows_start, NULL);
    fcr_app_route(app, FCR_GET, "/health", health, NULL);
    if (fcr_app_add_option(app, "--max-upload", FCR_OPT_SIZE, "BYTES", "STREAM_MAX_UPLOAD", "1g",
                           "largest body POST /upload takes (suffix k, m, g)") < 0) {
        fcr_app_free(app);
        return 1;
    }
    fcr_app_on_worker_start(app, apply_limit, up);
    int rc = fcr_app_run(app, argc, argv);
    fcr_app_free(app);
    return rc == 0 ? 0 : 1;
}
