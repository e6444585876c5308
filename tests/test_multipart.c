/* multipart/form-data bodies (fcrest/multipart.h): parts and their headers, fields collected,
 * files to temporary files, bodies cut anywhere (the parser alone at every pair of cut points;
 * the framework with records of many sizes over a real socket), pauses and deferrals in the
 * middle of a piece, every limit, and malformed bodies. */
#include <check.h>
#include <dirent.h>
#include <ev.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fcrest.h>
#include <fcrest/testing.h>

#include "../app/multipart_int.h"
#include "fcgi_client.h"
#include "server_thread.h"

static fcr_app *app;
static fcr_test_res res;
static char tmpdir[64];

static struct {
    int live; /* readers allocated and not freed */
    int gone; /* on_gone calls */
    int data; /* on_data calls */
} seen;

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 1099511628211u;
    return h;
}

#define FNV0 14695981039346656037u

/* ---- A reader that answers what it saw ---------------------------------------------------- */

enum {
    R_PAUSE_DATA = 1,  /* pauses after every piece of content; a timer resumes */
    R_PAUSE_PART = 2,  /* pauses at every part's start and end */
    R_DEFER_DATA = 4,  /* defers every other piece of content */
    R_FILE = 8,        /* files to temporary files in tmpdir, saved as "saved-<name>" */
    R_FILE_DROP = 16,  /* files to temporary files, not kept */
    R_EARLY = 32,      /* a file called "bad" is answered 422 at its start */
    R_FILE_EXISTS = 64 /* saving finds the name taken */
};

typedef struct reader {
    unsigned mode;
    unsigned pieces;
    uint64_t h; /* of the current part's content */
    json_t *parts;
    fcr_req *req;
    ev_timer resume;
} reader;

static void reader_free(reader *r)
{
    ev_timer_stop(fcr_req_loop(r->req), &r->resume);
    json_decref(r->parts);
    free(r);
    __atomic_fetch_sub(&seen.live, 1, __ATOMIC_SEQ_CST);
}

static void resume_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)revents;
    reader *r = w->data;
    fcr_req_resume_body(r->req);
}

static fcr_body_result pause_now(reader *r)
{
    ev_timer_set(&r->resume, 0.0005, 0.);
    ev_timer_start(fcr_req_loop(r->req), &r->resume);
    return FCR_BODY_PAUSE;
}

static fcr_body_result on_part(fcr_req *req, fcr_res *res, fcr_part *part, void *data)
{
    (void)req;
    reader *r = data;
    r->h = FNV0;
    ck_assert_ptr_nonnull(fcr_part_name(part));
    ck_assert_uint_eq(fcr_multipart_parts(fcr_part_multipart(part)), fcr_part_index(part) + 1);
    ck_assert_uint_eq(fcr_part_size(part), 0);
    ck_assert_int_eq(fcr_part_save_file(part, "/nowhere"), FCR_EINVAL); /* not here */
    const char *fn = fcr_part_filename(part);
    if ((r->mode & R_EARLY) && fn && strcmp(fn, "bad") == 0) {
        reader_free(r);
        return (fcr_body_result)fcr_res_set_problem(res, 422, "no file called bad");
    }
    if ((r->mode & (R_FILE | R_FILE_DROP | R_FILE_EXISTS)) && fn) {
        ck_assert_int_eq(fcr_part_to_file(part, tmpdir), 0);
        ck_assert_int_eq(fcr_part_to_file(part, tmpdir), FCR_EINVAL); /* once */
        ck_assert_ptr_nonnull(fcr_part_file_path(part));
    }
    if (fcr_part_header(part, "X-Collect"))
        ck_assert_int_eq(fcr_part_collect(part), 0);
    if (r->mode & R_PAUSE_PART)
        return pause_now(r);
    return FCR_BODY_MORE;
}

static void work_nothing(void *data)
{
    (void)data;
}

static int done_more(fcr_req *req, fcr_res *res, void *data)
{
    (void)req, (void)res, (void)data;
    return FCR_BODY_MORE;
}

static fcr_body_result on_data(fcr_req *req, fcr_res *res, fcr_part *part, const void *buf,
                               size_t len, void *data)
{
    reader *r = data;
    ck_assert_uint_gt(len, 0);
    ck_assert_ptr_null(fcr_multipart_field(fcr_part_multipart(part), fcr_part_name(part), NULL));
    __atomic_fetch_add(&seen.data, 1, __ATOMIC_SEQ_CST);
    r->h = fnv(r->h, buf, len);
    r->pieces++;
    if (r->mode & R_PAUSE_DATA)
        return pause_now(r);
    if ((r->mode & R_DEFER_DATA) && r->pieces % 2 == 0) {
        ck_assert_int_eq(fcr_defer(req, res, work_nothing, done_more, r), 0);
        return FCR_BODY_ASYNC;
    }
    return FCR_BODY_MORE;
}

static json_t *str_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

static fcr_body_result on_part_end(fcr_req *req, fcr_res *res, fcr_part *part, void *data)
{
    (void)req, (void)res;
    reader *r = data;
    size_t flen = 0;
    const char *field = fcr_multipart_field(fcr_part_multipart(part), fcr_part_name(part), &flen);
    char h[24];
    snprintf(h, sizeof h, "%016llx", (unsigned long long)r->h);
    json_t *o = json_pack("{s:s,s:o,s:o,s:I}", "name", fcr_part_name(part), "filename",
                          str_or_null(fcr_part_filename(part)), "type",
                          str_or_null(fcr_part_content_type(part)), "size",
                          (json_int_t)fcr_part_size(part));
    if (field && !fcr_part_file_path(part))
        json_object_set_new(o, "value", json_stringn(field, flen));
    else
        json_object_set_new(o, "fnv", json_string(h));
    const char *tmp = fcr_part_file_path(part);
    if (tmp) {
        char to[256];
        struct stat st;
        ck_assert_int_eq(stat(tmp, &st), 0);
        ck_assert_uint_eq((uint64_t)st.st_size, fcr_part_size(part));
        ck_assert_uint_eq(st.st_mode & 0777, 0600);
        snprintf(to, sizeof to, "%s/saved-%s", tmpdir, fcr_part_name(part));
        if (r->mode & R_FILE_EXISTS) {
            FILE *f = fopen(to, "w");
            ck_assert_ptr_nonnull(f);
            fclose(f);
            ck_assert_int_eq(fcr_part_save_file(part, to), FCR_EEXIST);
        } else if (r->mode & R_FILE) {
            ck_assert_int_eq(fcr_part_save_file(part, to), 0);
            ck_assert_int_eq(fcr_part_save_file(part, to), FCR_EINVAL);
            json_object_set_new(o, "saved", json_true());
        }
    }
    json_array_append_new(r->parts, o);
    if (r->mode & R_PAUSE_PART)
        return pause_now(r);
    return FCR_BODY_MORE;
}

static fcr_body_result on_end(fcr_req *req, fcr_res *res, fcr_multipart *mp, void *data)
{
    (void)req;
    reader *r = data;
    json_t *answer =
        json_pack("{s:O,s:I}", "parts", r->parts, "count", (json_int_t)fcr_multipart_parts(mp));
    reader_free(r);
    return (fcr_body_result)fcr_res_set_json_new(res, 200, answer);
}

static void on_gone(fcr_req *req, fcr_multipart *mp, void *data)
{
    (void)req, (void)mp;
    __atomic_fetch_add(&seen.gone, 1, __ATOMIC_SEQ_CST);
    reader_free(data);
}

static const fcr_multipart_handler handler = {on_part, on_data, on_part_end, on_end, on_gone};

static fcr_multipart_limits small_limits = {3, 100, 200, 50, 120};

static fcr_handler_result start(fcr_req *req, fcr_res *res, void *data)
{
    (void)res;
    reader *r = calloc(1, sizeof *r);
    ck_assert_ptr_nonnull(r);
    __atomic_fetch_add(&seen.live, 1, __ATOMIC_SEQ_CST);
    r->mode = (unsigned)(uintptr_t)data & 0xff;
    r->parts = json_array();
    r->req = req;
    ev_timer_init(&r->resume, resume_cb, 0., 0.);
    r->resume.data = r;
    const fcr_multipart_limits *l = ((uintptr_t)data & 0x100) ? &small_limits : NULL;
    int rc = fcr_req_read_multipart(req, &handler, l, r);
    ck_assert_int_eq(rc, 0);
    ck_assert_int_eq(fcr_req_read_multipart(req, &handler, l, r), FCR_EINVAL); /* once */
    return FCR_ASYNC;
}

/* A route that does not stream its body: refused. */
static fcr_handler_result not_streaming(fcr_req *req, fcr_res *res, void *data)
{
    (void)data;
    ck_assert_int_eq(fcr_req_read_multipart(req, &handler, NULL, NULL), FCR_EINVAL);
    fcr_multipart_handler no_end = handler;
    no_end.on_end = NULL;
    ck_assert_int_eq(fcr_req_read_multipart(req, &no_end, NULL, NULL), FCR_EINVAL);
    ck_assert_int_eq(fcr_req_read_multipart(NULL, &handler, NULL, NULL), FCR_EINVAL);
    return fcr_res_set_text(res, 200, "checked");
}

/* ---- Fixture ------------------------------------------------------------------------------ */

static void setup(void)
{
    memset(&seen, 0, sizeof seen);
    snprintf(tmpdir, sizeof tmpdir, "/tmp/fcrest-mp-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
    app = fcr_app_new();
    ck_assert_ptr_nonnull(app);
    const struct {
        const char *path;
        uintptr_t mode;
    } routes[] = {{"/mp", 0},
                  {"/pause", R_PAUSE_DATA | R_PAUSE_PART},
                  {"/defer", R_DEFER_DATA},
                  {"/file", R_FILE},
                  {"/drop", R_FILE_DROP | R_PAUSE_DATA},
                  {"/exists", R_FILE_EXISTS},
                  {"/early", R_EARLY},
                  {"/small", 0x100}};
    for (size_t i = 0; i < sizeof routes / sizeof *routes; i++) {
        fcr_route *r = fcr_app_route(app, FCR_POST, routes[i].path, start, (void *)routes[i].mode);
        ck_assert_ptr_nonnull(r);
        ck_assert_int_eq(fcr_route_stream_body(r), 0);
        ck_assert_int_eq(
            fcr_route_set_max_body(r, strcmp(routes[i].path, "/small") == 0 ? 10000 : 64u << 20),
            0);
    }
    ck_assert_ptr_nonnull(fcr_app_route(app, FCR_POST, "/plain", not_streaming, NULL));
    memset(&res, 0, sizeof res);
}

static void rm_tmpdir(void)
{
    DIR *d = opendir(tmpdir);
    if (!d)
        return;
    struct dirent *e;
    char p[512];
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(p, sizeof p, "%s/%s", tmpdir, e->d_name);
            unlink(p);
        }
    }
    closedir(d);
    rmdir(tmpdir);
}

/* The names in tmpdir, sorted and joined with ' ' (at most cap bytes). */
static void list_tmpdir(char *out, size_t cap)
{
    struct dirent **names;
    int n = scandir(tmpdir, &names, NULL, alphasort);
    ck_assert_int_ge(n, 0);
    out[0] = 0;
    for (int i = 0; i < n; i++) {
        if (names[i]->d_name[0] != '.' || strncmp(names[i]->d_name, ".fcrest", 7) == 0) {
            strncat(out, names[i]->d_name, cap - strlen(out) - 2);
            strcat(out, " ");
        }
        free(names[i]);
    }
    free(names);
}

static void teardown(void)
{
    fcr_test_res_free(&res);
    fcr_app_free(app);
    ck_assert_int_eq(seen.live, 0);
    rm_tmpdir();
}

#define BND "AaB03x"
#define CT  "Content-Type: multipart/form-data; boundary=" BND

static int post_ct(const char *path, const char *ct, const void *body, size_t n, bool no_length)
{
    const char *const headers[] = {ct, NULL};
    fcr_test_req rq = {.method = "POST",
                       .path = path,
                       .headers = ct ? headers : NULL,
                       .body = body,
                       .body_len = n,
                       .no_content_length = no_length};
    fcr_test_res_free(&res);
    return fcr_app_test(app, &rq, &res);
}

static int post(const char *path, const char *body)
{
    return post_ct(path, CT, body, strlen(body), false);
}

/* The RFC 7578 example, with a field, a file, an empty field and a field collected on request. */
static const char rfc_body[] =
    "--AaB03x\r\n"
    "Content-Disposition: form-data; name=\"field1\"\r\n"
    "\r\n"
    "Joe Blow\r\nalmost tricky\r\n--AaB03\r\n"
    "--AaB03x\r\n"
    "content-disposition: form-data; name=\"pics\"; filename=\"file1.txt\"\r\n"
    "Content-Type:   text/plain  \r\n"
    "\r\n"
    "...contents of file1.txt...\r\n"
    "--AaB03x\r\n"
    "Content-Disposition: form-data; name=\"empty\"\r\n"
    "\r\n"
    "\r\n"
    "--AaB03x\r\n"
    "Content-Disposition: form-data; name=\"asked\"; filename=\"b.txt\"\r\n"
    "X-Collect: yes\r\n"
    "\r\n"
    "collected\r\n"
    "--AaB03x--\r\n"
    "an epilogue, ignored\r\n";

static const char rfc_answer[] =
    "{\"parts\":[{\"name\":\"field1\",\"filename\":null,\"type\":null,\"size\":32,"
    "\"value\":\"Joe Blow\\r\\nalmost tricky\\r\\n--AaB03\"},"
    "{\"name\":\"pics\",\"filename\":\"file1.txt\",\"type\":\"text/plain\",\"size\":27,"
    "\"fnv\":\"%016llx\"},"
    "{\"name\":\"empty\",\"filename\":null,\"type\":null,\"size\":0,\"value\":\"\"},"
    "{\"name\":\"asked\",\"filename\":\"b.txt\",\"type\":null,\"size\":9,\"value\":\"collected\"}"
    "],\"count\":4}";

static void assert_rfc_answer(void)
{
    char want[1024];
    snprintf(want, sizeof want, rfc_answer,
             (unsigned long long)fnv(FNV0, "...contents of file1.txt...", 27));
    ck_assert_msg(res.status == 200, "status %d: %s", res.status, res.body);
    ck_assert_str_eq(res.body, want);
}

/* ---- In process ----------------------------------------------------------------------------- */

START_TEST(parts_fields_and_files)
{
    ck_assert_int_eq(post("/mp", rfc_body), 0);
    assert_rfc_answer();
    ck_assert_int_eq(seen.gone, 0);
    /* Without CONTENT_LENGTH, the same. */
    ck_assert_int_eq(post_ct("/mp", CT, rfc_body, strlen(rfc_body), true), 0);
    assert_rfc_answer();
    /* The boundary quoted, other parameters around it, a close delimiter without CRLF. */
    ck_assert_int_eq(post_ct("/mp",
                             "Content-Type: Multipart/Form-Data ; charset=utf-8; "
                             "boundary=\"AaB03x\" ; x=y",
                             rfc_body, strlen(rfc_body) - 24, false),
                     0);
    assert_rfc_answer();
    /* No parts at all is a body all the same. */
    ck_assert_int_eq(post("/mp", "--AaB03x--"), 0);
    ck_assert_str_eq(res.body, "{\"parts\":[],\"count\":0}");
    /* A route that does not stream its body refuses the reading. */
    ck_assert_int_eq(post("/plain", rfc_body), 0);
    ck_assert_str_eq(res.body, "checked");
}
END_TEST

START_TEST(filenames_and_headers)
{
    const char body[] =
        "--b\r\n"
        "Content-Disposition: form-data; name=\"a\\\"q\"; filename=\"x.txt\"; "
        "filename*=UTF-8''%E2%82%AC%20rates.txt\r\n\r\n1\r\n"
        "--b\r\n"
        "Content-Disposition: form-data; filename*=iso-8859-1'en'%A3.txt; name=n2\r\n\r\n2\r\n"
        "--b\r\n"
        "Content-Disposition: form-data; name=n3; filename=\"../../etc/passwd\"; "
        "filename*=UTF-8''bad%00\r\n\r\n3\r\n"
        "--b--";
    ck_assert_int_eq(
        post_ct("/mp", "Content-Type: multipart/form-data; boundary=b", body, strlen(body), false),
        0);
    ck_assert_msg(res.status == 200, "%d %s", res.status, res.body);
    json_t *j = json_loads(res.body, 0, NULL);
    ck_assert_ptr_nonnull(j);
    json_t *p = json_object_get(j, "parts");
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(p, 0), "name")), "a\"q");
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(p, 0), "filename")),
                     "\xe2\x82\xac rates.txt");
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(p, 1), "filename")),
                     "\xc2\xa3.txt");
    /* filename* decoding to a NUL is ignored: the plain filename, as the client sent it. */
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(p, 2), "filename")),
                     "../../etc/passwd");
    json_decref(j);
}
END_TEST

START_TEST(pauses_and_deferrals_mid_piece)
{
    ck_assert_int_eq(post("/pause", rfc_body), 0);
    assert_rfc_answer();
    ck_assert_int_eq(post("/defer", rfc_body), 0);
    assert_rfc_answer();
    /* A large file part across many records, paused after every piece of content. */
    size_t n = 300000;
    char *big = malloc(n + 400);
    ck_assert_ptr_nonnull(big);
    int k = snprintf(
        big, 400, "--AaB03x\r\nContent-Disposition: form-data; name=\"f\"; filename=\"f\"\r\n\r\n");
    fcl_fill_random(big + k, n, 7);
    memcpy(big + k + n, "\r\n--AaB03x--", 12);
    size_t total = (size_t)k + n + 12;
    ck_assert_int_eq(post_ct("/defer", CT, big, total, false), 0);
    ck_assert_int_eq(res.status, 200);
    char want[64];
    snprintf(want, sizeof want, "\"fnv\":\"%016llx\"", (unsigned long long)fnv(FNV0, big + k, n));
    ck_assert_ptr_nonnull(strstr(res.body, want));
    ck_assert_int_eq(post_ct("/pause", CT, big, total, false), 0);
    ck_assert_ptr_nonnull(strstr(res.body, want));
    free(big);
}
END_TEST

START_TEST(files_to_temporary_files)
{
    ck_assert_int_eq(post("/file", rfc_body), 0);
    ck_assert_msg(res.status == 200, "%d %s", res.status, res.body);
    ck_assert_ptr_nonnull(strstr(res.body, "\"saved\":true"));
    char names[512];
    list_tmpdir(names, sizeof names);
    ck_assert_str_eq(names, "saved-pics "); /* and no temporary file left */
    char p[256];
    snprintf(p, sizeof p, "%s/saved-pics", tmpdir);
    FILE *f = fopen(p, "r");
    ck_assert_ptr_nonnull(f);
    char got[64] = "";
    ck_assert_uint_eq(fread(got, 1, sizeof got - 1, f), 27);
    fclose(f);
    ck_assert_str_eq(got, "...contents of file1.txt...");
    unlink(p);
    /* Not kept: removed after the part's end (also while reading pauses). */
    ck_assert_int_eq(post("/drop", rfc_body), 0);
    ck_assert_int_eq(res.status, 200);
    list_tmpdir(names, sizeof names);
    ck_assert_str_eq(names, "");
    /* The name taken: nothing replaced, the temporary file removed. */
    ck_assert_int_eq(post("/exists", rfc_body), 0);
    ck_assert_int_eq(res.status, 200);
    list_tmpdir(names, sizeof names);
    ck_assert_str_eq(names, "saved-pics ");
    f = fopen(p, "r");
    ck_assert_int_eq(fgetc(f), EOF); /* still the empty file the test made */
    fclose(f);
    unlink(p);
    /* A body refused in the middle of a file: the temporary file goes too. */
    const char cut[] = "--AaB03x\r\nContent-Disposition: form-data; name=\"f\"; "
                       "filename=\"f\"\r\n\r\nsome content";
    ck_assert_int_eq(post("/file", cut), 0);
    ck_assert_int_eq(res.status, 400);
    list_tmpdir(names, sizeof names);
    ck_assert_str_eq(names, "");
}
END_TEST

START_TEST(early_answer)
{
    const char body[] = "--AaB03x\r\nContent-Disposition: form-data; name=\"f\"; "
                        "filename=\"bad\"\r\n\r\ncontent\r\n--AaB03x--";
    ck_assert_int_eq(post("/early", body), 0);
    ck_assert_int_eq(res.status, 422);
    ck_assert_int_eq(seen.gone, 0);
    ck_assert_int_eq(seen.data, 0);
}
END_TEST

/* Answers `status` with a detail containing `detail`. */
static void assert_problem(int status, const char *detail)
{
    ck_assert_msg(res.status == status, "status %d, want %d: %s", res.status, status, res.body);
    ck_assert_str_eq(fcr_test_res_header(&res, "Content-Type"), "application/problem+json");
    ck_assert_msg(strstr(res.body, detail), "%s lacks %s", res.body, detail);
}

START_TEST(malformed_bodies)
{
    static const struct {
        const char *ct, *body;
        int status;
        const char *detail;
    } cases[] = {
        {"Content-Type: application/json", "{}", 415, "must be multipart/form-data"},
        {NULL, "", 415, "must be multipart/form-data"},
        {"Content-Type: multipart/form-data", "--x--", 400, "no boundary"},
        {"Content-Type: multipart/form-data; charset=utf-8", "--x--", 400, "no boundary"},
        {"Content-Type: multipart/form-data; boundary=", "--x--", 400, "1 to 70"},
        {"Content-Type: multipart/form-data; boundary=\"\"", "--x--", 400, "1 to 70"},
        {"Content-Type: multipart/form-data; boundary=\"a \"", "--a --", 400, "1 to 70"},
        {"Content-Type: multipart/form-data; boundary=\"a\\\"b\"", "--x--", 400, "does not allow"},
        {"Content-Type: multipart/form-data; boundary=\"abc", "--x--", 400, "1 to 70"},
        {"Content-Type: multipart/form-data; boundary=a;b", "--x--", 400, "malformed"},
        {"Content-Type: multipart/form-data; "
         "boundary=01234567890123456789012345678901234567890123456789012345678901234567890",
         "--x--", 400, "1 to 70"},
        {CT, "", 400, "ends before its closing boundary"},
        {CT, "preamble\r\n--AaB03x--", 400, "does not start with its boundary"},
        {CT, "--AaB03y--", 400, "does not start with its boundary"},
        {CT, "--AaB03xy\r\n", 400, "neither CRLF nor"},
        {CT, "--AaB03x-x", 400, "neither CRLF nor"},
        {CT, "--AaB03x\nContent-Disposition: form-data; name=a\r\n\r\n", 400, "neither CRLF"},
        {CT, "--AaB03x\r\nContent-Disposition: form-data; name=a\r\nbody\r\n--AaB03x--", 400,
         "empty line after its headers"},
        {CT, "--AaB03x\r\nContent-Disposition: form-data; name=a\r\n\r\nbody", 400,
         "ends before its closing boundary"},
        {CT, "--AaB03x\r\nContent-Disposition: form-data; name=a\r\n\r\nbody\r\n--AaB03x\r\n", 400,
         "ends before its closing boundary"},
        {CT, "--AaB03x\r\nX: y\r\n\r\nbody\r\n--AaB03x--", 400, "no Content-Disposition"},
        {CT, "--AaB03x\r\nContent-Disposition: attachment; name=a\r\n\r\n\r\n--AaB03x--", 400,
         "not form-data"},
        {CT, "--AaB03x\r\nContent-Disposition: form-data; filename=a\r\n\r\n\r\n--AaB03x--", 400,
         "has no name"},
        {CT, "--AaB03x\r\nContent-Disposition: form-data; name=\"a\r\n\r\n\r\n--AaB03x--", 400,
         "malformed Content-Disposition"},
        {CT, "--AaB03x\r\nContent-Disposition: form-data; name=a\r\nX: a\rb\r\n\r\n--AaB03x--", 400,
         "CR without LF"},
        {CT, "--AaB03x\r\nContent-Disposition: form-data; name=a\nX: b\r\n\r\n--AaB03x--", 400,
         "LF without CR"},
        {CT, "--AaB03x\r\nContent-Disposition: form-data; name=a\r\nX: \x01\r\n\r\n--AaB03x--", 400,
         "control byte"},
        {CT, "--AaB03x\r\n: novalue\r\n\r\n--AaB03x--", 400, "without a name"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        int gone = seen.gone;
        ck_assert_int_eq(post_ct("/mp", cases[i].ct, cases[i].body, strlen(cases[i].body), false),
                         0);
        ck_assert_msg(res.status == cases[i].status, "case %zu: %d %s", i, res.status, res.body);
        assert_problem(cases[i].status, cases[i].detail);
        ck_assert_int_eq(seen.gone, gone + 1); /* on_gone releases the reader */
    }
}
END_TEST

START_TEST(limits)
{
    /* small_limits: 3 parts, 100 bytes a part, 200 header bytes, 50 a field, 120 fields. */
    char body[4096];
    /* Three parts pass, four do not. */
    const char *part =
        "--AaB03x\r\nContent-Disposition: form-data; name=\"p\"; filename=f\r\n\r\nx\r\n";
    body[0] = 0;
    for (int i = 0; i < 3; i++)
        strcat(body, part);
    strcat(body, "--AaB03x--");
    ck_assert_int_eq(post("/small", body), 0);
    ck_assert_int_eq(res.status, 200);
    body[strlen(body) - 10] = 0;
    strcat(body, part);
    strcat(body, "--AaB03x--");
    ck_assert_int_eq(post("/small", body), 0);
    assert_problem(413, "more than 3 parts");
    /* A part of exactly 100 bytes passes, 101 do not. */
    for (int n = 100; n <= 101; n++) {
        int k =
            snprintf(body, sizeof body,
                     "--AaB03x\r\nContent-Disposition: form-data; name=\"f\"; filename=f\r\n\r\n");
        memset(body + k, 'y', (size_t)n);
        strcpy(body + k + n, "\r\n--AaB03x--");
        ck_assert_int_eq(post("/small", body), 0);
        if (n == 100)
            ck_assert_int_eq(res.status, 200);
        else
            assert_problem(413, "exceeds the limit of 100 bytes");
    }
    /* Headers over 200 bytes. */
    int k = snprintf(body, sizeof body,
                     "--AaB03x\r\nContent-Disposition: form-data; name=\"f\"\r\nX: ");
    memset(body + k, 'h', 200);
    strcpy(body + k + 200, "\r\n\r\n\r\n--AaB03x--");
    ck_assert_int_eq(post("/small", body), 0);
    assert_problem(400, "headers exceed 200 bytes");
    /* A field over 50 bytes. */
    k = snprintf(body, sizeof body,
                 "--AaB03x\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\n");
    memset(body + k, 'v', 51);
    strcpy(body + k + 51, "\r\n--AaB03x--");
    ck_assert_int_eq(post("/small", body), 0);
    assert_problem(413, "exceeds the limit of 50 bytes");
    /* Fields of 40 bytes: two fit in 120 (names and NULs counted), three do not. */
    body[0] = 0;
    for (int i = 0; i < 3; i++) {
        char one[256];
        snprintf(one, sizeof one,
                 "--AaB03x\r\nContent-Disposition: form-data; name=\"f%d\"\r\n\r\n"
                 "0123456789012345678901234567890123456789\r\n",
                 i);
        strcat(body, one);
    }
    strcat(body, "--AaB03x--");
    ck_assert_int_eq(post("/small", body), 0);
    assert_problem(413, "fields exceed the limit of 120 bytes together");
    /* The route's body limit (10000) holds for the whole body, declared or not. */
    char *big = malloc(20000);
    memset(big, 'z', 20000);
    static const char h[] =
        "--AaB03x\r\nContent-Disposition: form-data; name=\"f\"; filename=f\r\n\r\n";
    memcpy(big, h, sizeof h - 1);
    ck_assert_int_eq(post_ct("/small", CT, big, 20000, false), 0);
    assert_problem(413, "10000");
    int gone = seen.gone;
    ck_assert_int_eq(post_ct("/small", CT, big, 20000, true), 0);
    assert_problem(413, "10000");
    ck_assert_int_eq(seen.gone, gone + 1);
    free(big);
}
END_TEST

/* ---- The parser alone, cut everywhere ------------------------------------------------------- */

typedef struct trace {
    char log[4096]; /* events and content, in order */
    size_t len;
    int stop_every; /* stop the parser at every n-th event (0: never) */
    int events;
} trace;

static void trace_add(trace *t, const void *p, size_t n)
{
    ck_assert_uint_lt(t->len + n, sizeof t->log);
    memcpy(t->log + t->len, p, n);
    t->len += n;
}

static int t_stop(trace *t)
{
    return t->stop_every && ++t->events % t->stop_every == 0 ? 5 : 0;
}

static int t_part(fcr__mp *p, void *user)
{
    trace *t = user;
    char s[256];
    int n = snprintf(s, sizeof s, "<%s|%s|%s>", p->name, p->filename ? p->filename : "-",
                     p->ctype ? p->ctype : "-");
    trace_add(t, s, (size_t)n);
    return t_stop(t);
}

static int t_data(fcr__mp *p, const unsigned char *buf, size_t len, void *user)
{
    (void)p;
    trace_add(user, buf, len);
    return t_stop(user);
}

static int t_end(fcr__mp *p, void *user)
{
    char s[64];
    int n = snprintf(s, sizeof s, "</%llu>", (unsigned long long)p->part_size);
    trace_add(user, s, (size_t)n);
    return t_stop(user);
}

/* Parses `body` cut at `a` and `b` (a <= b), feeding again after every stop. */
static int parse_cut(const char *body, size_t n, size_t a, size_t b, trace *t)
{
    static const fcr__mp_events ev = {t_part, t_data, t_end};
    char hbuf[256], vbuf[2 * 256 + 8];
    fcr__mp p;
    fcr__mp_init(&p, "AaB03x", 10, 0, sizeof hbuf, hbuf, vbuf, &ev, t);
    size_t cuts[] = {0, a, b, n};
    for (int i = 0; i < 3; i++) {
        size_t off = cuts[i];
        while (off < cuts[i + 1]) {
            size_t used;
            int rc = fcr__mp_feed(&p, body + off, cuts[i + 1] - off, &used);
            if (rc < 0)
                return -1;
            off += used;
        }
    }
    return fcr__mp_finish(&p);
}

START_TEST(every_cut_gives_the_same_parts)
{
    /* Content full of near-delimiters: CRs, CRLFs, "--", the boundary less its last byte. */
    const char *body =
        "--AaB03x \t\r\n"
        "Content-Disposition: form-data; name=\"a\"\r\n\r\n"
        "\r\r\n-\r\n--\r\n--A\r\n--AaB03\r\n--AaB03y--AaB03x\r\n\r\n-"
        "\r\n--AaB03x\r\n"
        "Content-Disposition: form-data; name=\"b\"; filename=\"c\"\r\nContent-Type: x/y\r\n\r\n"
        "\r\n"
        "\r\n--AaB03x--\r\nepilogue\r\n--AaB03x\r\n";
    size_t n = strlen(body);
    trace whole = {.len = 0};
    ck_assert_int_eq(parse_cut(body, n, n, n, &whole), 0);
    whole.log[whole.len] = 0;
    ck_assert_str_eq(whole.log,
                     "<a|-|->\r\r\n-\r\n--\r\n--A\r\n--AaB03\r\n--AaB03y--AaB03x\r\n\r\n-"
                     "</45><b|c|x/y>\r\n</2>");
    for (int stop = 0; stop <= 3; stop++) {
        for (size_t a = 0; a <= n; a++) {
            for (size_t b = a; b <= n; b++) {
                trace t = {.len = 0, .stop_every = stop};
                ck_assert_int_eq(parse_cut(body, n, a, b, &t), 0);
                ck_assert_msg(t.len == whole.len && memcmp(t.log, whole.log, t.len) == 0,
                              "cut at %zu and %zu (stop every %d) differs", a, b, stop);
            }
        }
    }
}
END_TEST

/* ---- Over a real socket: records of every small size ---------------------------------------- */

static void put_post(fcl_buf *b, uint16_t id, const char *path, size_t declared)
{
    char len[32];
    snprintf(len, sizeof len, "%zu", declared);
    fcl_buf nv;
    fcl_buf_init(&nv);
    fcl_nv_adds(&nv, "REQUEST_METHOD", "POST");
    fcl_nv_adds(&nv, "SCRIPT_NAME", path);
    fcl_nv_adds(&nv, "CONTENT_LENGTH", len);
    fcl_nv_adds(&nv, "CONTENT_TYPE", "multipart/form-data; boundary=AaB03x");
    fcl_put_begin(b, id, 1, 1);
    fcl_put_stream(b, 4, id, nv.data, nv.len, 0, FCL_PAD8, true);
    fcl_buf_free(&nv);
}

START_TEST(records_of_any_size)
{
    server_thread t;
    server_start(&t, app, NULL);
    fcl_conn *c = fcl_connect(t.addr, 0);
    ck_assert_ptr_nonnull(c);
    char want[1024];
    snprintf(want, sizeof want, rfc_answer,
             (unsigned long long)fnv(FNV0, "...contents of file1.txt...", 27));
    size_t n = strlen(rfc_body);
    uint16_t id = 1;
    const char *paths[] = {"/mp", "/pause"};
    for (size_t pi = 0; pi < 2; pi++) {
        for (size_t rec = 1; rec <= 24; rec++, id++) {
            fcl_buf b;
            fcl_buf_init(&b);
            put_post(&b, id, paths[pi], n);
            fcl_put_stream(&b, 5, id, rfc_body, n, rec, FCL_PAD8, true);
            ck_assert_int_eq(fcl_send_buf(c, &b), 0);
            fcl_buf_free(&b);
            fcl_response r;
            fcl_response_init(&r, id);
            ck_assert_int_eq(fcl_await(c, &r, 1), 0);
            fcl_cgi cgi;
            ck_assert_int_eq(fcl_cgi_parse(&r, &cgi), 0);
            ck_assert_msg(cgi.body_len == strlen(want) && memcmp(cgi.body, want, cgi.body_len) == 0,
                          "records of %zu bytes on %s: %.*s", rec, paths[pi], (int)cgi.body_len,
                          cgi.body);
            fcl_cgi_free(&cgi);
            fcl_response_free(&r);
        }
    }
    /* A client that goes away in the middle of a file part: on_gone, no file left. */
    fcl_buf b;
    fcl_buf_init(&b);
    put_post(&b, id, "/file", 100000);
    const char head[] =
        "--AaB03x\r\nContent-Disposition: form-data; name=\"f\"; filename=f\r\n\r\n";
    fcl_put_stream(&b, 5, id, head, sizeof head - 1, 0, FCL_PAD8, false);
    char content[300];
    memset(content, 'q', sizeof content);
    fcl_put_stream(&b, 5, id, content, sizeof content, 0, FCL_PAD8, false);
    ck_assert_int_eq(fcl_send_buf(c, &b), 0);
    fcl_buf_free(&b);
    for (double end = fcl_now() + 20; __atomic_load_n(&seen.data, __ATOMIC_SEQ_CST) == 0;) {
        ck_assert_msg(fcl_now() < end, "no data");
        poll(NULL, 0, 1);
    }
    fcl_close(c);
    server_wait_idle(&t);
    ck_assert_int_eq(__atomic_load_n(&seen.gone, __ATOMIC_SEQ_CST), 1);
    char names[512];
    list_tmpdir(names, sizeof names);
    ck_assert_str_eq(names, "");
    server_stop(&t);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("multipart");
    TCase *tc = tcase_create("multipart");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, parts_fields_and_files);
    tcase_add_test(tc, filenames_and_headers);
    tcase_add_test(tc, pauses_and_deferrals_mid_piece);
    tcase_add_test(tc, files_to_temporary_files);
    tcase_add_test(tc, early_answer);
    tcase_add_test(tc, malformed_bodies);
    tcase_add_test(tc, limits);
    tcase_add_test(tc, every_cut_gives_the_same_parts);
    tcase_add_test(tc, records_of_any_size);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
