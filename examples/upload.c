/* upload: files sent as multipart/form-data (an HTML form, `curl -F`), stored in a directory.
 *
 *   POST /uploads   multipart/form-data: every part with a filename is written to --dir as it
 *                   arrives (never whole in memory), under its file name made safe (letters,
 *                   digits, '.', '-' and '_'; no leading dot; "-1", "-2", ... added when the
 *                   name is taken); answers 201 with a JSON array of what was stored:
 *                   [{"name":FIELD,"filename":STORED,"size":BYTES,"crc32":"<8 hex digits>"}];
 *                   400 when no part has a file (or the body is malformed), 413 past the limits
 *   GET  /uploads   the stored files: [{"filename":NAME,"size":BYTES}], sorted by name
 *   GET  /health    200 {"status":"ok"}
 *
 * Usage: upload --dir DIR [--max-upload BYTES] [--listen ...]... (--help) */
#include <fcrest.h>

#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---- File names ------------------------------------------------------------------------- */

/* Makes the client's file name safe to store: its last path segment (after '/' or '\'), with
 * every byte but letters, digits, '.', '-' and '_' replaced by '_', leading dots dropped (no
 * hidden file, no "." or ".."), at most 100 bytes; "upload" when nothing is left. */
static void safe_name(const char *client, char *out, size_t cap)
{
    const char *s = client;
    for (const char *p = client; *p; p++)
        if (*p == '/' || *p == '\\')
            s = p + 1;
    while (*s == '.')
        s++;
    size_t n = 0;
    for (; *s && n + 1 < cap && n < 100; s++) {
        unsigned char c = (unsigned char)*s;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '-' || c == '_';
        out[n++] = ok ? (char)c : '_';
    }
    out[n] = 0;
    if (n == 0)
        snprintf(out, cap, "upload");
}

/* ---- CRC-32 ------------------------------------------------------------------------------ */

/* CRC-32 (the IEEE polynomial, reflected, as zlib and `gzip` compute it), from a table: a few
 * lines rather than a library for an example's checksum. */
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

/* ---- POST /uploads ----------------------------------------------------------------------- */

typedef struct upload {
    const char *dir;
    json_t *stored; /* what the answer lists: one object per file, bounded by the part limit */
    uint32_t crc;   /* of the current file */
} upload;

static void upload_free(upload *u)
{
    json_decref(u->stored);
    free(u);
}

static fcr_body_result on_part(fcr_req *req, fcr_res *res, fcr_part *part, void *data)
{
    (void)req, (void)res;
    upload *u = data;
    if (!fcr_part_filename(part))
        return FCR_BODY_MORE; /* a field: collected, small */
    u->crc = 0;
    int rc = fcr_part_to_file(part, u->dir); /* a temporary file in the same directory */
    if (rc < 0) {
        upload_free(u);
        return (fcr_body_result)rc;
    }
    return FCR_BODY_MORE;
}

static fcr_body_result on_data(fcr_req *req, fcr_res *res, fcr_part *part, const void *buf,
                               size_t len, void *data)
{
    (void)req, (void)res, (void)part;
    upload *u = data;
    u->crc = crc_update(u->crc, buf, len); /* the file gets the bytes too */
    return FCR_BODY_MORE;
}

static fcr_body_result on_part_end(fcr_req *req, fcr_res *res, fcr_part *part, void *data)
{
    (void)req, (void)res;
    upload *u = data;
    if (!fcr_part_file_path(part))
        return FCR_BODY_MORE;
    char base[128], name[160], path[4096];
    safe_name(fcr_part_filename(part), base, sizeof base);
    /* The first free name of base, base-1, base-2, ... (before the extension). */
    const char *dot = strrchr(base, '.');
    int stem = dot && dot != base ? (int)(dot - base) : (int)strlen(base);
    int rc = FCR_EEXIST;
    for (int i = 0; i < 1000 && rc == FCR_EEXIST; i++) {
        if (i == 0)
            snprintf(name, sizeof name, "%s", base);
        else
            snprintf(name, sizeof name, "%.*s-%d%s", stem, base, i, base + stem);
        snprintf(path, sizeof path, "%s/%s", u->dir, name);
        rc = fcr_part_save_file(part, path);
    }
    if (rc < 0) {
        upload_free(u);
        return (fcr_body_result)rc;
    }
    char crc[9];
    snprintf(crc, sizeof crc, "%08lx", (unsigned long)u->crc);
    json_array_append_new(u->stored,
                          json_pack("{s:s,s:s,s:I,s:s}", "name", fcr_part_name(part), "filename",
                                    name, "size", (json_int_t)fcr_part_size(part), "crc32", crc));
    return FCR_BODY_MORE;
}

static fcr_body_result on_end(fcr_req *req, fcr_res *res, fcr_multipart *mp, void *data)
{
    (void)req, (void)mp;
    upload *u = data;
    int rc = json_array_size(u->stored) == 0
                 ? fcr_res_set_problem(res, 400, "no part of the form holds a file")
                 : fcr_res_set_json(res, 201, u->stored);
    upload_free(u);
    return (fcr_body_result)rc;
}

static void on_gone(fcr_req *req, fcr_multipart *mp, void *data)
{
    (void)req, (void)mp;
    upload_free(data);
}

static fcr_handler_result upload_start(fcr_req *req, fcr_res *res, void *data)
{
    (void)res, (void)data;
    static const fcr_multipart_handler h = {on_part, on_data, on_part_end, on_end, on_gone};
    static const fcr_multipart_limits limits = {.max_parts = 64};
    upload *u = malloc(sizeof *u);
    if (!u)
        return FCR_HANDLER_ERROR;
    *u = (upload){fcr_app_option(fcr_req_app(req), "--dir"), json_array(), 0};
    int rc = fcr_req_read_multipart(req, &h, &limits, u);
    if (rc < 0) {
        upload_free(u);
        return (fcr_handler_result)rc;
    }
    return FCR_ASYNC;
}

/* ---- GET /uploads ------------------------------------------------------------------------ */

static fcr_handler_result list(fcr_req *req, fcr_res *res, void *data)
{
    (void)data;
    const char *dir = fcr_app_option(fcr_req_app(req), "--dir");
    struct dirent **names;
    int n = scandir(dir, &names, NULL, alphasort);
    if (n < 0)
        return fcr_res_set_problem(res, 500, "cannot read the upload directory");
    json_t *a = json_array();
    for (int i = 0; i < n; i++) {
        char path[4096];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, names[i]->d_name);
        /* Hidden names are temporary files still being written (and "." and ".."). */
        if (names[i]->d_name[0] != '.' && stat(path, &st) == 0 && S_ISREG(st.st_mode))
            json_array_append_new(a, json_pack("{s:s,s:I}", "filename", names[i]->d_name, "size",
                                               (json_int_t)st.st_size));
        free(names[i]);
    }
    free(names);
    return fcr_res_set_json_new(res, 200, a);
}

static fcr_handler_result health(fcr_req *req, fcr_res *res, void *data)
{
    (void)req, (void)data;
    return fcr_res_set_json_new(res, 200, json_pack("{s:s}", "status", "ok"));
}

/* Checks --dir and sets the upload route's limit once the options are parsed. */
static int on_start(fcr_app *app, struct ev_loop *loop, void *data)
{
    (void)loop;
    const char *dir = fcr_app_option(app, "--dir");
    struct stat st;
    if (!dir || stat(dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
        fcr_log(FCR_LOG_ERROR, "upload: --dir (UPLOAD_DIR) must name a directory: %s",
                dir ? strerror(errno) : "none given");
        return FCR_EINVAL;
    }
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
    fcr_route *up = fcr_app_route(app, FCR_POST, "/uploads", upload_start, NULL);
    fcr_route_stream_body(up); /* the handler reads the body as it arrives */
    fcr_route_consumes(up, "multipart/form-data");
    fcr_app_route(app, FCR_GET, "/uploads", list, NULL);
    fcr_app_route(app, FCR_GET, "/health", health, NULL);
    if (fcr_app_add_option(app, "--dir", FCR_OPT_STRING, "DIR", "UPLOAD_DIR", NULL,
                           "directory the uploaded files are stored in (required)") < 0 ||
        fcr_app_add_option(app, "--max-upload", FCR_OPT_SIZE, "BYTES", "UPLOAD_MAX", "1g",
                           "largest body POST /uploads takes (suffix k, m, g)") < 0) {
        fcr_app_free(app);
        return 1;
    }
    fcr_app_on_worker_start(app, on_start, up);
    int rc = fcr_app_run(app, argc, argv);
    fcr_app_free(app);
    return rc == 0 ? 0 : 1;
}
