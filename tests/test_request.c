/* The core request object through the public core API: the params table (lookups by name and
 * by position, repeated and binary names and values), the bodies (STDIN and DATA), the CGI
 * helpers (method, headers by their HTTP names, Content-Type, remote address and port, the
 * FILTER data length and time), fcr_req_log, and every reader with a NULL request.
 *
 * A real server runs on its own loop in a thread and gets one end of a socketpair; the test
 * plays the web server on the other end with tests/fcgi_client.h. The application prints what
 * the readers return on STDOUT (one "key=value" line each), so that every check is made in
 * the test's own thread on the bytes that came back. */
#include <check.h>
#include <ev.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fcrest/core.h>

#include "fcgi_client.h"

#define ROLE_RESPONDER  1
#define ROLE_AUTHORIZER 2
#define ROLE_FILTER     3

/* ---- the application: prints what the readers return ------------------------------------ */

/* Prints `s` (`n` bytes, or up to its NUL when n is SIZE_MAX) with NUL as \0 and other
 * non-printable bytes as \xNN; NULL prints as (null). */
static void put_str(fcr_req *req, const char *s, size_t n)
{
    if (!s) {
        fcr_req_write(req, "(null)", 6);
        return;
    }
    if (n == SIZE_MAX)
        n = strlen(s);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == 0)
            fcr_req_write(req, "\\0", 2);
        else if (c < 0x20 || c >= 0x7f)
            fcr_req_printf(req, "\\x%02x", c);
        else
            fcr_req_write(req, &s[i], 1);
    }
}

/* A result code as its name for the codes the readers return, else as a number. */
static const char *rc_name(int rc)
{
    static char buf[16];
    switch (rc) {
    case 0:
        return "0";
    case FCR_ENOTFOUND:
        return "ENOTFOUND";
    case FCR_EINVAL:
        return "EINVAL";
    default:
        snprintf(buf, sizeof buf, "%d", rc);
        return buf;
    }
}

static void line(fcr_req *req, const char *key, const char *value)
{
    fcr_req_printf(req, "%s=", key);
    put_str(req, value, SIZE_MAX);
    fcr_req_write(req, "\n", 1);
}

static void probe_params(fcr_req *req)
{
    size_t count = fcr_req_param_count(req);
    fcr_req_printf(req, "count=%zu\n", count);
    for (size_t i = 0; i < count; i++) {
        const char *name, *value;
        size_t nlen, vlen;
        int rc = fcr_req_param_at(req, i, &name, &nlen, &value, &vlen);
        fcr_req_printf(req, "at%zu=%s:", i, rc_name(rc));
        put_str(req, name, nlen);
        fcr_req_printf(req, "(%zu)=", nlen);
        put_str(req, value, vlen);
        /* Both strings are NUL-terminated after their length. */
        fcr_req_printf(req, "(%zu)%s\n", vlen, name[nlen] == 0 && value[vlen] == 0 ? "" : " !nul");
    }
    fcr_req_printf(req, "at_end=%s\n",
                   rc_name(fcr_req_param_at(req, count, NULL, NULL, NULL, NULL)));
    fcr_req_printf(req, "at_max=%s\n",
                   rc_name(fcr_req_param_at(req, SIZE_MAX, NULL, NULL, NULL, NULL)));
    fcr_req_printf(req, "at0_no_outs=%s\n",
                   rc_name(fcr_req_param_at(req, 0, NULL, NULL, NULL, NULL)));
    line(req, "DUP", fcr_req_param(req, "DUP"));
    line(req, "dup", fcr_req_param(req, "dup"));
    line(req, "EMPTY", fcr_req_param(req, "EMPTY"));
    line(req, "MISSING", fcr_req_param(req, "MISSING"));
    line(req, "null_name", fcr_req_param(req, NULL));
    line(req, "N", fcr_req_param(req, "N")); /* a prefix of "N\0X" is another name */
    size_t vlen = 12345;
    const char *v = fcr_req_paramn(req, "N\0X", 3, &vlen);
    fcr_req_printf(req, "N\\0X=");
    put_str(req, v, v ? vlen : 0);
    fcr_req_printf(req, "(%zu)\n", vlen);
    vlen = 12345;
    v = fcr_req_paramn(req, "BIN", 3, &vlen);
    fcr_req_printf(req, "BIN=");
    put_str(req, v, v ? vlen : 0);
    fcr_req_printf(req, "(%zu) strlen=%zu\n", vlen, v ? strlen(v) : 0);
    /* An explicit length shorter than the string: only that many bytes are the name. */
    line(req, "DUPX/3", fcr_req_paramn(req, "DUPX", 3, NULL));
    vlen = 12345;
    v = fcr_req_paramn(req, "NOPE", 4, &vlen);
    fcr_req_printf(req, "NOPE=%s(%zu)\n", v ? v : "(null)", vlen);
    line(req, "null_namen", fcr_req_paramn(req, NULL, 3, NULL));
}

static void put_body(fcr_req *req, const char *key, fcr_stream stream)
{
    size_t len = 12345;
    const char *p = fcr_req_body(req, stream, &len);
    fcr_req_printf(req, "%s=%zu:", key, len);
    put_str(req, p, p ? len : 0);
    fcr_req_printf(req, "%s\n", p ? "" : " !null");
}

static void probe_body(fcr_req *req)
{
    fcr_req_printf(req, "role=%d id=%u keep=%d error=%d\n", (int)fcr_req_role(req), fcr_req_id(req),
                   fcr_req_keep_conn(req), fcr_req_input_error(req));
    put_body(req, "stdin", FCR_STDIN);
    put_body(req, "data", FCR_DATA);
    /* `len` may be NULL. */
    const char *p = fcr_req_body(req, FCR_STDIN, NULL);
    fcr_req_printf(req, "stdin_nolen=%s\n", p ? "ok" : "(null)");
    size_t len = 12345;
    p = fcr_req_data(req, &len);
    fcr_req_printf(req, "fcr_req_data=%zu:", len);
    put_str(req, p, p ? len : 0);
    fcr_req_write(req, "\n", 1);
}

static void probe_cgi(fcr_req *req)
{
    line(req, "method", fcr_req_method(req));
    static const char *const names[] = {"Content-Type",
                                        "content-type",
                                        "Content-Length",
                                        "CONTENT-LENGTH",
                                        "X-Token",
                                        "x-token",
                                        "X_Token",
                                        "Host",
                                        "Accept",
                                        "Bad Name",
                                        "",
                                        "X(Y",
                                        "Na\xc3\xafve",
                                        "Content_Type",
                                        "Authorization",
                                        NULL};
    for (size_t i = 0; names[i]; i++) {
        fcr_req_printf(req, "header[%s]=", names[i]);
        put_str(req, fcr_req_header(req, names[i]), SIZE_MAX);
        fcr_req_write(req, "\n", 1);
    }
    line(req, "header_null", fcr_req_header(req, NULL));
    /* The longest name still looked up is 250 bytes (HTTP_ + name in 256 bytes). */
    char longname[300];
    memset(longname, 'L', sizeof longname);
    longname[250] = '\0';
    line(req, "header_250", fcr_req_header(req, longname));
    longname[250] = 'L';
    longname[251] = '\0';
    line(req, "header_251", fcr_req_header(req, longname));
    static const char *const types[] = {"application/json",
                                        "APPLICATION/JSON",
                                        "application/js",
                                        "application/json-patch",
                                        "text/plain",
                                        "",
                                        NULL};
    for (size_t i = 0; types[i]; i++)
        fcr_req_printf(req, "type_is[%s]=%d\n", types[i], fcr_req_content_type_is(req, types[i]));
    fcr_req_printf(req, "type_is_null=%d\n", fcr_req_content_type_is(req, NULL));
    line(req, "remote_addr", fcr_req_remote_addr(req));
    fcr_req_printf(req, "remote_port=%d\n", fcr_req_remote_port(req));
}

static void probe_filter(fcr_req *req)
{
    uint64_t len = 77;
    int64_t t = 77;
    int rl = fcr_req_data_length(req, &len);
    int rt = fcr_req_data_last_mod(req, &t);
    fcr_req_printf(req, "data_length=%s:%" PRIu64 "\n", rc_name(rl), len);
    fcr_req_printf(req, "data_last_mod=%s:%" PRId64 "\n", rc_name(rt), t);
    /* The value pointer may be NULL: only the verdict. */
    fcr_req_printf(req, "data_length_null=%s\n", rc_name(fcr_req_data_length(req, NULL)));
    fcr_req_printf(req, "data_last_mod_null=%s\n", rc_name(fcr_req_data_last_mod(req, NULL)));
    size_t n = 12345;
    const char *p = fcr_req_data(req, &n);
    fcr_req_printf(req, "data=%zu:", n);
    put_str(req, p, p ? n : 0);
    fcr_req_write(req, "\n", 1);
}

static void probe_log(fcr_req *req)
{
    char big[2000];
    memset(big, 'b', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    int r1 = fcr_req_log(req, "hello %d", 42);
    int r2 = fcr_req_log(req, "ends with a newline\n");
    int r3 = fcr_req_log(req, "%s", "");
    int r4 = fcr_req_log(req, "%s", big); /* longer than the stack buffer */
    const char *volatile no_format = NULL;
    int r5 = fcr_req_log(req, no_format);
    fcr_req_printf(req, "log=%d,%d,%d,%d,%s\n", r1, r2, r3, r4, rc_name(r5));
}

static void on_request(fcr_req *req, void *data)
{
    (void)data;
    const char *probe = fcr_req_param(req, "PROBE");
    if (!probe)
        probe = "";
    if (strcmp(probe, "params") == 0)
        probe_params(req);
    else if (strcmp(probe, "body") == 0)
        probe_body(req);
    else if (strcmp(probe, "cgi") == 0)
        probe_cgi(req);
    else if (strcmp(probe, "filter") == 0)
        probe_filter(req);
    else if (strcmp(probe, "log") == 0)
        probe_log(req);
    else
        fcr_req_printf(req, "unknown probe [%s]\n", probe);
    fcr_req_finish(req, 0);
}

/* ---- the server in its thread, the web server's end of the socketpair ------------------- */

static struct ev_loop *loop;
static fcr_server *srv;
static ev_async stop_w;
static pthread_t th;
static fcl_conn *cl;

static void stop_cb(struct ev_loop *l, ev_async *w, int revents)
{
    (void)w, (void)revents;
    ev_break(l, EVBREAK_ALL);
}

static void *serve(void *arg)
{
    (void)arg;
    ev_run(loop, 0);
    return NULL;
}

static void setup(void)
{
    signal(SIGPIPE, SIG_IGN);
    loop = ev_loop_new(EVFLAG_AUTO);
    ck_assert_ptr_nonnull(loop);
    fcr_server_config cfg;
    fcr_server_config_init(&cfg);
    cfg.on_request = on_request;
    cfg.web_server_addrs = "";
    int err = 0;
    srv = fcr_server_new(loop, &cfg, &err);
    ck_assert_msg(srv != NULL, "fcr_server_new: %d", err);
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    ck_assert_int_eq(fcr_server_adopt(srv, sv[0]), 0);
    cl = fcl_adopt(sv[1]);
    ck_assert_ptr_nonnull(cl);
    cl->timeout = 20;
    ev_async_init(&stop_w, stop_cb);
    ev_async_start(loop, &stop_w);
    ck_assert_int_eq(pthread_create(&th, NULL, serve, NULL), 0);
}

static void teardown(void)
{
    fcl_close(cl);
    cl = NULL;
    ev_async_send(loop, &stop_w);
    pthread_join(th, NULL);
    fcr_server_free(srv);
    ev_loop_destroy(loop);
}

/* Sends one request (params as name, value pairs with explicit lengths, so that they may hold
 * NUL bytes) and returns its STDOUT as a NUL-terminated string (malloc'd); STDERR goes to
 * `*err` when not NULL. */
typedef struct nv {
    const char *name;
    size_t nlen;
    const char *value;
    size_t vlen;
} nv;

#define NV(n, v)                                                                                   \
    {                                                                                              \
        n, sizeof n - 1, v, sizeof v - 1                                                           \
    }
#define NVEND                                                                                      \
    {                                                                                              \
        NULL, 0, NULL, 0                                                                           \
    }
#define PROBE(p) NV("PROBE", p)

static char *exchange(uint16_t id, uint16_t role, uint8_t flags, const nv *params, const void *in,
                      size_t in_len, const void *data, size_t data_len, char **err)
{
    fcl_buf b, pb;
    fcl_buf_init(&b);
    fcl_buf_init(&pb);
    for (const nv *p = params; p->name; p++)
        fcl_nv_add(&pb, p->name, p->nlen, p->value, p->vlen);
    fcl_put_begin(&b, id, role, flags);
    /* Small records, so that pairs and bodies are split across them. */
    fcl_put_stream(&b, FCGI_PARAMS, id, pb.data, pb.len, 7, FCL_PAD8, true);
    if (role != ROLE_AUTHORIZER)
        fcl_put_stream(&b, FCGI_STDIN, id, in, in_len, 5, 3, true);
    if (role == ROLE_FILTER)
        fcl_put_stream(&b, FCGI_DATA, id, data, data_len, 4, 0, true);
    ck_assert_int_eq(fcl_send_buf(cl, &b), 0);
    fcl_response r;
    fcl_response_init(&r, id);
    ck_assert_msg(fcl_await(cl, &r, 1) == 0, "no answer to request %u", id);
    ck_assert_msg(cl->violations == 0, "framing: %s", cl->violation);
    ck_assert_uint_eq(r.protocol_status, FCGI_REQUEST_COMPLETE);
    char *out = malloc(r.out.len + 1);
    ck_assert_ptr_nonnull(out);
    if (r.out.len)
        memcpy(out, r.out.data, r.out.len);
    out[r.out.len] = '\0';
    if (err) {
        *err = malloc(r.err.len + 1);
        ck_assert_ptr_nonnull(*err);
        if (r.err.len)
            memcpy(*err, r.err.data, r.err.len);
        (*err)[r.err.len] = '\0';
    }
    fcl_response_free(&r);
    fcl_buf_free(&pb);
    fcl_buf_free(&b);
    return out;
}

/* Asserts that `out` holds the line `want` (without its newline). */
#define has_line(out, want) has_line_at(out, want, __LINE__)
static void has_line_at(const char *out, const char *want, int at)
{
    size_t n = strlen(want);
    for (const char *p = out; (p = strstr(p, want)); p++) {
        if ((p == out || p[-1] == '\n') && p[n] == '\n')
            return;
    }
    ck_abort_msg("line %d: no line \"%s\" in:\n%s", at, want, out);
}

/* ---- params ------------------------------------------------------------------------------ */

START_TEST(params_by_name_and_position)
{
    const nv params[] = {PROBE("params"), NV("A", "1"),      NV("DUP", "first"),  NV("EMPTY", ""),
                         NV("N\0X", "v"), NV("BIN", "a\0b"), NV("DUP", "second"), NVEND};
    char *out = exchange(1, ROLE_RESPONDER, FCGI_KEEP_CONN, params, NULL, 0, NULL, 0, NULL);
    /* Six distinct names in the order they first came, DUP with its last value. */
    has_line(out, "count=6");
    has_line(out, "at0=0:PROBE(5)=params(6)");
    has_line(out, "at1=0:A(1)=1(1)");
    has_line(out, "at2=0:DUP(3)=second(6)");
    has_line(out, "at3=0:EMPTY(5)=(0)");
    has_line(out, "at4=0:N\\0X(3)=v(1)");
    has_line(out, "at5=0:BIN(3)=a\\0b(3)");
    has_line(out, "at_end=ENOTFOUND");
    has_line(out, "at_max=ENOTFOUND");
    has_line(out, "at0_no_outs=0");
    has_line(out, "DUP=second");
    has_line(out, "dup=(null)"); /* names are case-sensitive */
    has_line(out, "EMPTY=");     /* present and empty: "", not NULL */
    has_line(out, "MISSING=(null)");
    has_line(out, "null_name=(null)");
    has_line(out, "N=(null)");
    has_line(out, "N\\0X=v(1)");
    has_line(out, "BIN=a\\0b(3) strlen=1");
    has_line(out, "DUPX/3=second");
    has_line(out, "NOPE=(null)(12345)"); /* vlen untouched when absent */
    has_line(out, "null_namen=(null)");
    free(out);
}
END_TEST

/* A request reuses a released one (the server's pool): nothing of the earlier request shows. */
START_TEST(reused_request_starts_empty)
{
    const nv first[] = {PROBE("params"), NV("A", "1"), NV("DUP", "x"), NV("EMPTY", "e"), NVEND};
    const nv second[] = {PROBE("params"), NV("B", "2"), NVEND};
    char *out = exchange(1, ROLE_RESPONDER, FCGI_KEEP_CONN, first, NULL, 0, NULL, 0, NULL);
    has_line(out, "count=4");
    free(out);
    out = exchange(1, ROLE_RESPONDER, FCGI_KEEP_CONN, second, NULL, 0, NULL, 0, NULL);
    has_line(out, "count=2");
    has_line(out, "at1=0:B(1)=2(1)");
    has_line(out, "DUP=(null)");
    has_line(out, "EMPTY=(null)");
    has_line(out, "at_end=ENOTFOUND");
    free(out);
    const nv body[] = {PROBE("body"), NVEND};
    out =
        exchange(3, ROLE_RESPONDER, FCGI_KEEP_CONN, body, "a longer body first", 19, NULL, 0, NULL);
    has_line(out, "stdin=19:a longer body first");
    free(out);
    out = exchange(3, ROLE_RESPONDER, FCGI_KEEP_CONN, body, "short", 5, NULL, 0, NULL);
    has_line(out, "stdin=5:short");
    free(out);
    out = exchange(3, ROLE_RESPONDER, FCGI_KEEP_CONN, body, NULL, 0, NULL, 0, NULL);
    has_line(out, "stdin=0:");
    free(out);
}
END_TEST

/* ---- bodies ------------------------------------------------------------------------------ */

START_TEST(body_stdin_and_data)
{
    const nv params[] = {PROBE("body"), NV("CONTENT_LENGTH", "14"), NVEND};
    /* Responder: STDIN across records of 5 bytes, with a NUL in it; no DATA. */
    char *out =
        exchange(7, ROLE_RESPONDER, FCGI_KEEP_CONN, params, "stdin\0bytes...", 14, NULL, 0, NULL);
    has_line(out, "role=1 id=7 keep=1 error=0");
    has_line(out, "stdin=14:stdin\\0bytes...");
    has_line(out, "data=0:");
    has_line(out, "stdin_nolen=ok");
    has_line(out, "fcr_req_data=0:");
    free(out);
    /* Filter: STDIN and DATA, each its own buffer. */
    const nv fparams[] = {PROBE("body"), NV("FCGI_DATA_LENGTH", "9"), NVEND};
    out = exchange(65535, ROLE_FILTER, 0, fparams, "in", 2, "data\0file", 9, NULL);
    has_line(out, "role=3 id=65535 keep=0 error=0");
    has_line(out, "stdin=2:in");
    has_line(out, "data=9:data\\0file");
    has_line(out, "fcr_req_data=9:data\\0file");
    free(out);
}
END_TEST

START_TEST(empty_bodies_are_empty_strings)
{
    const nv params[] = {PROBE("body"), NVEND};
    char *out = exchange(2, ROLE_FILTER, FCGI_KEEP_CONN, params, NULL, 0, NULL, 0, NULL);
    has_line(out, "role=3 id=2 keep=1 error=0");
    has_line(out, "stdin=0:");
    has_line(out, "data=0:");
    has_line(out, "fcr_req_data=0:");
    free(out);
    /* An authorizer gets no body at all. */
    out = exchange(3, ROLE_AUTHORIZER, FCGI_KEEP_CONN, params, NULL, 0, NULL, 0, NULL);
    has_line(out, "role=2 id=3 keep=1 error=0");
    has_line(out, "stdin=0:");
    free(out);
}
END_TEST

/* ---- CGI helpers ------------------------------------------------------------------------- */

START_TEST(cgi_helpers)
{
    const nv params[] = {PROBE("cgi"),
                         NV("REQUEST_METHOD", "PATCH"),
                         NV("CONTENT_TYPE", " Application/JSON ; charset=utf-8"),
                         NV("CONTENT_LENGTH", "12"),
                         NV("HTTP_X_TOKEN", "t0k"),
                         NV("HTTP_HOST", "example.org"),
                         NV("HTTP_ACCEPT", ""),
                         NV("HTTP_CONTENT_TYPE", "not this one"),
                         NV("REMOTE_ADDR", "2001:db8::1"),
                         NV("REMOTE_PORT", "65535"),
                         NVEND};
    char *out =
        exchange(1, ROLE_RESPONDER, FCGI_KEEP_CONN, params, "{\"a\":[1, 2]}", 12, NULL, 0, NULL);
    has_line(out, "method=PATCH");
    /* Content-Type and Content-Length read CONTENT_TYPE / CONTENT_LENGTH, whatever the case. */
    has_line(out, "header[Content-Type]= Application/JSON ; charset=utf-8");
    has_line(out, "header[content-type]= Application/JSON ; charset=utf-8");
    has_line(out, "header[Content-Length]=12");
    has_line(out, "header[CONTENT-LENGTH]=12");
    /* Any other name N reads HTTP_N, upper-cased, '-' as '_'. */
    has_line(out, "header[X-Token]=t0k");
    has_line(out, "header[x-token]=t0k");
    has_line(out, "header[X_Token]=t0k"); /* '_' is a token character and maps to itself */
    has_line(out, "header[Host]=example.org");
    has_line(out, "header[Accept]="); /* present and empty: "" */
    has_line(out, "header[Authorization]=(null)");
    has_line(out, "header[Content_Type]=not this one");
    /* Names that are not HTTP tokens are never looked up. */
    has_line(out, "header[Bad Name]=(null)");
    has_line(out, "header[]=(null)");
    has_line(out, "header[X(Y]=(null)");
    has_line(out, "header[Na\xc3\xafve]=(null)");
    has_line(out, "header_null=(null)");
    has_line(out, "header_250=(null)");
    has_line(out, "header_251=(null)");
    /* Media type compared case-insensitively up to blanks or ';'. */
    has_line(out, "type_is[application/json]=1");
    has_line(out, "type_is[APPLICATION/JSON]=1");
    has_line(out, "type_is[application/js]=0");
    has_line(out, "type_is[application/json-patch]=0");
    has_line(out, "type_is[text/plain]=0");
    has_line(out, "type_is[]=0");
    has_line(out, "type_is_null=0");
    has_line(out, "remote_addr=2001:db8::1");
    has_line(out, "remote_port=65535");
    free(out);
}
END_TEST

/* A long header name is looked up like any other as long as HTTP_NAME fits. */
START_TEST(cgi_header_long_name)
{
    char name[256] = "HTTP_";
    memset(name + 5, 'L', 250);
    name[255] = '\0';
    nv params[] = {PROBE("cgi"), {name, 255, "long", 4}, NVEND};
    char *out = exchange(1, ROLE_RESPONDER, FCGI_KEEP_CONN, params, NULL, 0, NULL, 0, NULL);
    has_line(out, "header_250=long");
    has_line(out, "header_251=(null)");
    free(out);
}
END_TEST

/* Without the params, every helper says "absent". CONTENT_TYPE and CONTENT_LENGTH sent empty
 * (as nginx's fastcgi_params does) read as absent too. */
START_TEST(cgi_helpers_absent)
{
    const nv params[] = {PROBE("cgi"), NV("CONTENT_TYPE", ""), NV("CONTENT_LENGTH", ""), NVEND};
    char *out = exchange(1, ROLE_RESPONDER, FCGI_KEEP_CONN, params, NULL, 0, NULL, 0, NULL);
    has_line(out, "method=(null)");
    has_line(out, "header[Content-Type]=(null)");
    has_line(out, "header[Content-Length]=(null)");
    has_line(out, "header[X-Token]=(null)");
    has_line(out, "type_is[application/json]=0");
    has_line(out, "type_is[]=0");
    has_line(out, "remote_addr=(null)");
    has_line(out, "remote_port=0");
    free(out);
}
END_TEST

/* REMOTE_PORT is 1..65535 in decimal digits, else 0. */
START_TEST(remote_port_malformed_is_zero)
{
    static const char *const cases[][2] = {
        {"1", "1"},
        {"80", "80"},
        {"00080", "80"},
        {"65535", "65535"},
        {"65536", "0"},
        {"", "0"},
        {"-1", "0"},
        {"+80", "0"},
        {" 80", "0"},
        {"80 ", "0"},
        {"8o", "0"},
        {"0x50", "0"},
        {"99999999999999999999999", "0"},
        {"0", "0"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        nv params[] = {PROBE("cgi"), {"REMOTE_PORT", 11, cases[i][0], strlen(cases[i][0])}, NVEND};
        char *out = exchange(1, ROLE_RESPONDER, FCGI_KEEP_CONN, params, NULL, 0, NULL, 0, NULL);
        char want[64];
        snprintf(want, sizeof want, "remote_port=%s", cases[i][1]);
        ck_assert_msg(strstr(out, want) != NULL, "REMOTE_PORT=\"%s\": %s", cases[i][0], out);
        free(out);
    }
}
END_TEST

/* ---- FILTER data length and time --------------------------------------------------------- */

START_TEST(filter_data_length_and_last_mod)
{
    const nv params[] = {PROBE("filter"), NV("FCGI_DATA_LENGTH", "4"),
                         NV("FCGI_DATA_LAST_MOD", "1700000000"), NVEND};
    char *out = exchange(1, ROLE_FILTER, FCGI_KEEP_CONN, params, "", 0, "abcd", 4, NULL);
    has_line(out, "data_length=0:4");
    has_line(out, "data_last_mod=0:1700000000");
    has_line(out, "data_length_null=0");
    has_line(out, "data_last_mod_null=0");
    has_line(out, "data=4:abcd");
    free(out);
    /* The largest value: 2^63 - 1. */
    const nv max[] = {PROBE("filter"), NV("FCGI_DATA_LENGTH", "9223372036854775807"),
                      NV("FCGI_DATA_LAST_MOD", "0"), NVEND};
    out = exchange(1, ROLE_FILTER, FCGI_KEEP_CONN, max, "", 0, "", 0, NULL);
    has_line(out, "data_length=0:9223372036854775807");
    has_line(out, "data_last_mod=0:0");
    free(out);
}
END_TEST

/* Absent or malformed: FCR_ENOTFOUND and the value left as it was (77). */
START_TEST(filter_data_malformed_is_not_found)
{
    static const char *const bad[] = {"",
                                      "-1",
                                      "+4",
                                      "4 ",
                                      " 4",
                                      "1e3",
                                      "0x10",
                                      "12a",
                                      "9223372036854775808",
                                      "99999999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        nv params[] = {PROBE("filter"),
                       {"FCGI_DATA_LENGTH", 16, bad[i], strlen(bad[i])},
                       {"FCGI_DATA_LAST_MOD", 18, bad[i], strlen(bad[i])},
                       NVEND};
        char *out = exchange(1, ROLE_FILTER, FCGI_KEEP_CONN, params, "", 0, "x", 1, NULL);
        ck_assert_msg(strstr(out, "data_length=ENOTFOUND:77\n") &&
                          strstr(out, "data_last_mod=ENOTFOUND:77\n") &&
                          strstr(out, "data_length_null=ENOTFOUND\n") &&
                          strstr(out, "data_last_mod_null=ENOTFOUND\n"),
                      "value \"%s\": %s", bad[i], out);
        free(out);
    }
    /* Absent, also for a Responder. */
    const nv none[] = {PROBE("filter"), NVEND};
    char *out = exchange(1, ROLE_RESPONDER, FCGI_KEEP_CONN, none, NULL, 0, NULL, 0, NULL);
    has_line(out, "data_length=ENOTFOUND:77");
    has_line(out, "data_last_mod=ENOTFOUND:77");
    has_line(out, "data=0:");
    free(out);
}
END_TEST

/* ---- fcr_req_log ------------------------------------------------------------------------- */

START_TEST(log_goes_to_stderr)
{
    const nv params[] = {PROBE("log"), NVEND};
    char *err = NULL;
    char *out = exchange(1, ROLE_RESPONDER, FCGI_KEEP_CONN, params, NULL, 0, NULL, 0, &err);
    /* Bytes written, with the newline it adds when the message has none. */
    has_line(out, "log=9,20,1,2000,EINVAL");
    char want[2100];
    char big[2000];
    memset(big, 'b', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    snprintf(want, sizeof want, "hello 42\nends with a newline\n\n%s\n", big);
    ck_assert_str_eq(err, want);
    free(out);
    free(err);
    /* A request that logs nothing has no STDERR (and the client saw no empty STDERR record
     * without data: fcl_await checks the framing). */
    const nv quiet[] = {PROBE("params"), NVEND};
    out = exchange(2, ROLE_RESPONDER, FCGI_KEEP_CONN, quiet, NULL, 0, NULL, 0, &err);
    ck_assert_str_eq(err, "");
    free(out);
    free(err);
}
END_TEST

/* ---- NULL requests ----------------------------------------------------------------------- */

START_TEST(readers_accept_null)
{
    const fcr_req *n = NULL;
    ck_assert_int_eq(fcr_req_role(n), 0);
    ck_assert_uint_eq(fcr_req_id(n), 0);
    ck_assert(!fcr_req_keep_conn(n));
    ck_assert_ptr_null(fcr_req_server(n));
    ck_assert_ptr_null(fcr_req_param(n, "A"));
    size_t len = 99;
    ck_assert_ptr_null(fcr_req_paramn(n, "A", 1, &len));
    ck_assert_uint_eq(len, 99);
    ck_assert_uint_eq(fcr_req_param_count(n), 0);
    const char *s = "x";
    ck_assert_int_eq(fcr_req_param_at(n, 0, &s, &len, &s, &len), FCR_ENOTFOUND);
    ck_assert_str_eq(s, "x");
    const char *b = fcr_req_body(n, FCR_STDIN, &len);
    ck_assert_ptr_nonnull(b);
    ck_assert_uint_eq(len, 0);
    ck_assert_str_eq(b, "");
    ck_assert_ptr_nonnull(fcr_req_body(n, FCR_DATA, NULL));
    ck_assert_ptr_null(fcr_req_userdata(n));
    ck_assert(!fcr_req_aborted(n));
    ck_assert_uint_eq(fcr_req_queued(n), 0);
    ck_assert_ptr_null(fcr_req_method(n));
    ck_assert_ptr_null(fcr_req_header(n, "Content-Type"));
    ck_assert_ptr_null(fcr_req_header(n, "X-Token"));
    ck_assert(!fcr_req_content_type_is(n, "text/plain"));
    ck_assert_ptr_null(fcr_req_remote_addr(n));
    ck_assert_int_eq(fcr_req_remote_port(n), 0);
    len = 99;
    b = fcr_req_data(n, &len);
    ck_assert_ptr_nonnull(b);
    ck_assert_uint_eq(len, 0);
    ck_assert_ptr_nonnull(fcr_req_data(n, NULL));
    uint64_t dl = 77;
    int64_t lm = 77;
    ck_assert_int_eq(fcr_req_data_length(n, &dl), FCR_ENOTFOUND);
    ck_assert_int_eq(fcr_req_data_last_mod(n, &lm), FCR_ENOTFOUND);
    ck_assert_uint_eq(dl, 77);
    ck_assert_int_eq(lm, 77);
    /* Not a reader: the input error of no request is an error, never "received whole". */
    ck_assert_int_lt(fcr_req_input_error(n), 0);
}
END_TEST

START_TEST(writers_refuse_null)
{
    ck_assert_int_eq(fcr_req_write(NULL, "x", 1), FCR_EINVAL);
    ck_assert_int_eq(fcr_req_write_stderr(NULL, "x", 1), FCR_EINVAL);
    ck_assert_int_eq(fcr_req_write_ref(NULL, "x", 1, NULL, NULL), FCR_EINVAL);
    ck_assert_int_eq(fcr_req_printf(NULL, "%d", 1), FCR_EINVAL);
    ck_assert_int_eq(fcr_req_log(NULL, "%d", 1), FCR_EINVAL);
    ck_assert_int_eq(fcr_req_finish(NULL, 0), FCR_EINVAL);
    ck_assert_int_eq(fcr_req_stream_input(NULL, NULL), FCR_EINVAL);
    /* The void ones ignore it. */
    fcr_req_set_max_body(NULL, 1);
    int slot = 0;
    fcr_req_set_userdata(NULL, &slot);
    fcr_req_on_abort(NULL, NULL);
    fcr_req_on_drain(NULL, NULL);
    fcr_req_resume_input(NULL);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("request");
    TCase *tc = tcase_create("request");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, params_by_name_and_position);
    tcase_add_test(tc, reused_request_starts_empty);
    tcase_add_test(tc, body_stdin_and_data);
    tcase_add_test(tc, empty_bodies_are_empty_strings);
    tcase_add_test(tc, cgi_helpers);
    tcase_add_test(tc, cgi_header_long_name);
    tcase_add_test(tc, cgi_helpers_absent);
    tcase_add_test(tc, remote_port_malformed_is_zero);
    tcase_add_test(tc, filter_data_length_and_last_mod);
    tcase_add_test(tc, filter_data_malformed_is_not_found);
    tcase_add_test(tc, log_goes_to_stderr);
    suite_add_tcase(s, tc);
    TCase *tn = tcase_create("null");
    tcase_add_test(tn, readers_accept_null);
    tcase_add_test(tn, writers_refuse_null);
    suite_add_tcase(s, tn);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
