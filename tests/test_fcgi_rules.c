/* The rules of FASTCGI-NOTES.md and the core's contracts, one named test each, against an
 * in-process server (its own libev loop in a thread) over a real unix socket. */
#include <check.h>
#include <errno.h>
#include <ev.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <fcrest/core.h>

#include "fcgi_client.h"

/* ---- the application under test -------------------------------------------------------- */

static atomic_int n_aborts, n_delivered, n_eagain, n_eclosed_after_abort, n_stream_chunks;

static const char HEAD[] = "Status: 200 OK\r\nContent-Type: text/plain\r\n\r\n";

static bool action_is(fcr_req *req, const char *a)
{
    const char *v = fcr_req_param(req, "ACTION");
    return v && strcmp(v, a) == 0;
}

static void answer_summary(fcr_req *req)
{
    size_t in, data;
    fcr_req_body(req, FCR_STDIN, &in);
    fcr_req_body(req, FCR_DATA, &data);
    fcr_req_write(req, HEAD, sizeof HEAD - 1);
    fcr_req_printf(req, "role=%d stdin=%zu data=%zu error=%d params=%zu", (int)fcr_req_role(req),
                   in, data, fcr_req_input_error(req), fcr_req_param_count(req));
    fcr_req_finish(req, 0);
}

static void held_abort(fcr_req *req)
{
    n_aborts++;
    if (fcr_req_write(req, "x", 1) == FCR_ECLOSED)
        n_eclosed_after_abort++;
    fcr_req_finish(req, 0);
}

static void timer_finish(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    fcr_req *req = t->data;
    ev_timer_stop(loop, t);
    free(t);
    fcr_req_write(req, HEAD, sizeof HEAD - 1);
    fcr_req_write(req, "later", 5);
    fcr_req_finish(req, 7);
}

/* Writes 4 MiB in 64 KiB pieces, waiting for the drain callback whenever the queue is full. */
static size_t pumped;

static void cap_pump(fcr_req *req)
{
    static char chunk[65536];
    while (pumped < 4u * 1024 * 1024) {
        int e = fcr_req_write(req, chunk, sizeof chunk);
        if (e == FCR_EAGAIN) {
            n_eagain++;
            fcr_req_on_drain(req, cap_pump);
            return;
        }
        ck_assert_int_eq(e, 0);
        pumped += sizeof chunk;
    }
    if (fcr_req_write(req, "done", 4) == FCR_EAGAIN) { /* the queue may be full right now */
        fcr_req_on_drain(req, cap_pump);
        return;
    }
    fcr_req_finish(req, 0);
}

static fcr_req *_Atomic kept;

static void on_request(fcr_req *req, void *data)
{
    (void)data;
    n_delivered++;
    if (action_is(req, "hold")) {
        fcr_req_on_abort(req, held_abort);
        return;
    }
    if (action_is(req, "async")) {
        ev_timer *t = malloc(sizeof *t);
        ev_timer_init(t, timer_finish, 0.05, 0);
        t->data = req;
        ev_timer_start(fcr_server_loop(fcr_req_server(req)), t);
        return;
    }
    if (action_is(req, "stream") || action_is(req, "pause-finish"))
        return; /* answered from the chunk callback */
    if (action_is(req, "big")) {
        size_t n = strtoul(fcr_req_param(req, "SIZE"), NULL, 10);
        char *p = malloc(n);
        for (size_t i = 0; i < n; i++)
            p[i] = (char)('a' + i % 26);
        fcr_req_write(req, HEAD, sizeof HEAD - 1);
        fcr_req_write(req, p, n);
        free(p);
        fcr_req_finish(req, 0);
        return;
    }
    if (action_is(req, "stderr")) {
        fcr_req_write_stderr(req, "oops", 4);
        fcr_req_write(req, HEAD, sizeof HEAD - 1);
        fcr_req_finish(req, 0);
        return;
    }
    if (action_is(req, "cap")) {
        fcr_req_write(req, HEAD, sizeof HEAD - 1);
        cap_pump(req);
        return;
    }
    if (action_is(req, "keep")) { /* held without an abort callback, finished by the test */
        kept = req;
        return;
    }
    if (action_is(req, "param")) {
        const char *v = fcr_req_param(req, fcr_req_param(req, "WHICH"));
        fcr_req_write(req, HEAD, sizeof HEAD - 1);
        fcr_req_printf(req, "[%s]", v ? v : "(null)");
        fcr_req_finish(req, 0);
        return;
    }
    answer_summary(req);
}

static void resume_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    ev_timer_stop(loop, t);
    fcr_req_resume_input(t->data);
    free(t);
}

static size_t streamed;

static int chunk_cb(fcr_req *req, fcr_stream stream, const void *buf, size_t len)
{
    (void)buf;
    if (stream != FCR_STDIN)
        return 0;
    n_stream_chunks++;
    if (len == 0) {
        fcr_req_write(req, HEAD, sizeof HEAD - 1);
        fcr_req_printf(req, "streamed=%zu", streamed);
        fcr_req_finish(req, 0);
        return 0;
    }
    streamed += len;
    if (n_stream_chunks == 1) { /* pause once, resume from a timer */
        ev_timer *t = malloc(sizeof *t);
        ev_timer_init(t, resume_cb, 0.1, 0);
        t->data = req;
        ev_timer_start(fcr_server_loop(fcr_req_server(req)), t);
        return FCR_EAGAIN;
    }
    return 0;
}

/* Pauses reading at the first chunk, then answers and finishes from a timer without ever
 * resuming. */
static void finish_paused(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    ev_timer_stop(loop, t);
    fcr_req_write(t->data, HEAD, sizeof HEAD - 1);
    fcr_req_finish(t->data, 0);
    free(t);
}

static int chunk_pause_then_finish(fcr_req *req, fcr_stream stream, const void *buf, size_t len)
{
    (void)buf;
    if (stream != FCR_STDIN || len == 0)
        return 0;
    ev_timer *t = malloc(sizeof *t);
    ev_timer_init(t, finish_paused, 0.05, 0);
    t->data = req;
    ev_timer_start(fcr_server_loop(fcr_req_server(req)), t);
    return FCR_EAGAIN;
}

static void on_params(fcr_req *req, void *data)
{
    (void)data;
    if (action_is(req, "pause-finish"))
        ck_assert_int_eq(fcr_req_stream_input(req, chunk_pause_then_finish), 0);
    if (action_is(req, "stream"))
        ck_assert_int_eq(fcr_req_stream_input(req, chunk_cb), 0);
    if (action_is(req, "early")) {
        fcr_req_write(req, "Status: 413 Content Too Large\r\n\r\n", 33);
        fcr_req_finish(req, 0);
    }
    if (action_is(req, "small"))
        fcr_req_set_max_body(req, 100);
}

/* ---- harness --------------------------------------------------------------------------- */

static struct {
    struct ev_loop *loop;
    fcr_server *srv;
    pthread_t thread;
    ev_async stop;
    char dir[64];
    char addr[128];
    fcr_server_stats stats; /* the server's counters when it stopped */
} H;

static void stop_cb(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)w;
    (void)revents;
    fcr_server_get_stats(H.srv, &H.stats);
    fcr_server_free(H.srv);
    H.srv = NULL;
    ev_break(loop, EVBREAK_ALL);
}

static void *server_main(void *arg)
{
    (void)arg;
    ev_run(H.loop, 0);
    return NULL;
}

static void start_with(void (*tweak)(fcr_server_config *))
{
    fcr_server_config cfg;
    fcr_server_config_init(&cfg);
    cfg.on_request = on_request;
    cfg.on_params = on_params;
    if (tweak)
        tweak(&cfg);
    snprintf(H.dir, sizeof H.dir, "/tmp/fcr-rules-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(H.dir));
    snprintf(H.addr, sizeof H.addr, "unix:%s/s", H.dir);
    H.loop = ev_loop_new(0);
    int err = 0;
    H.srv = fcr_server_new(H.loop, &cfg, &err);
    ck_assert_msg(H.srv, "server: %s", fcr_strerror(err));
    ck_assert_int_eq(fcr_server_listen(H.srv, H.addr), 0);
    ev_async_init(&H.stop, stop_cb);
    ev_async_start(H.loop, &H.stop);
    ck_assert_int_eq(pthread_create(&H.thread, NULL, server_main, NULL), 0);
}

static void start(void)
{
    start_with(NULL);
}

static void stop(void)
{
    ev_async_send(H.loop, &H.stop);
    pthread_join(H.thread, NULL);
    ev_loop_destroy(H.loop);
    char path[160];
    snprintf(path, sizeof path, "%s/s", H.dir);
    unlink(path);
    rmdir(H.dir);
}

static fcl_conn *conn(void)
{
    fcl_conn *c = fcl_connect(H.addr, 0);
    ck_assert_ptr_nonnull(c);
    c->timeout = 10;
    return c;
}

static const char *const PLAIN[] = {"REQUEST_METHOD", "GET", NULL};

/* Sends a plain request on `c` with id `id` and checks it completes with status 200. */
static void assert_serves(fcl_conn *c, uint16_t id)
{
    fcl_response r;
    ck_assert_int_eq(fcl_request(c, id, FCR_RESPONDER, FCGI_KEEP_CONN, PLAIN, "ab", 2, &r), 0);
    ck_assert(r.ended);
    ck_assert_int_eq(r.protocol_status, FCGI_REQUEST_COMPLETE);
    ck_assert_msg(r.out.len > 15 && memcmp(r.out.data, "Status: 200 OK", 14) == 0,
                  "unexpected response");
    ck_assert_int_eq(c->violations, 0);
    fcl_response_free(&r);
}

static void assert_new_conn_serves(void)
{
    fcl_conn *c = conn();
    assert_serves(c, 1);
    fcl_close(c);
}

static char *stdout_str(const fcl_response *r)
{
    char *s = malloc(r->out.len + 1);
    memcpy(s, r->out.data, r->out.len);
    s[r->out.len] = '\0';
    return s;
}

/* ---- framing --------------------------------------------------------------------------- */

START_TEST(nv_four_byte_length_of_small_value_is_legal)
{
    start();
    fcl_conn *c = conn();
    fcl_buf b, nv;
    fcl_buf_init(&b);
    fcl_buf_init(&nv);
    fcl_nv_adds(&nv, "ACTION", "param");
    fcl_nv_adds(&nv, "WHICH", "K");
    fcl_nv_len4(&nv, 1); /* name "K" with a 4-byte length */
    fcl_nv_len4(&nv, 3);
    fcl_buf_add(&nv, "Kabc", 4);
    fcl_put_begin(&b, 1, FCR_RESPONDER, FCGI_KEEP_CONN);
    fcl_put_stream(&b, FCGI_PARAMS, 1, nv.data, nv.len, 0, FCL_PAD8, true);
    fcl_put_stream(&b, FCGI_STDIN, 1, NULL, 0, 0, 0, true);
    ck_assert_int_eq(fcl_send_buf(c, &b), 0);
    fcl_response r;
    fcl_response_init(&r, 1);
    ck_assert_int_eq(fcl_await(c, &r, 1), 0);
    char *s = stdout_str(&r);
    ck_assert_ptr_nonnull(strstr(s, "[abc]"));
    free(s);
    fcl_response_free(&r);
    fcl_buf_free(&b);
    fcl_buf_free(&nv);
    fcl_close(c);
    stop();
}
END_TEST

START_TEST(params_pair_split_across_records)
{
    start();
    fcl_conn *c = conn();
    fcl_buf b, nv;
    fcl_buf_init(&b);
    fcl_buf_init(&nv);
    fcl_nv_adds(&nv, "ACTION", "param");
    fcl_nv_adds(&nv, "WHICH", "LONGNAME");
    fcl_nv_adds(&nv, "LONGNAME", "split-value");
    fcl_put_begin(&b, 1, FCR_RESPONDER, FCGI_KEEP_CONN);
    /* 5-byte records: every pair and both length prefixes are cut somewhere */
    fcl_put_stream(&b, FCGI_PARAMS, 1, nv.data, nv.len, 5, 3, true);
    fcl_put_stream(&b, FCGI_STDIN, 1, NULL, 0, 0, 0, true);
    ck_assert_int_eq(fcl_send_buf(c, &b), 0);
    fcl_response r;
    fcl_response_init(&r, 1);
    ck_assert_int_eq(fcl_await(c, &r, 1), 0);
    char *s = stdout_str(&r);
    ck_assert_msg(strstr(s, "[split-value]"), "got %s", s);
    free(s);
    fcl_response_free(&r);
    fcl_buf_free(&b);
    fcl_buf_free(&nv);
    fcl_close(c);
    stop();
}
END_TEST

START_TEST(padding_up_to_255_skipped_on_every_record_type)
{
    start();
    fcl_conn *c = conn();
    fcl_buf b, nv;
    fcl_buf_init(&b);
    fcl_buf_init(&nv);
    fcl_nv_adds(&nv, "REQUEST_METHOD", "POST");
    uint8_t begin[8] = {0, FCR_RESPONDER, FCGI_KEEP_CONN};
    fcl_put_record(&b, FCGI_BEGIN_REQUEST, 1, begin, 8, 255);
    fcl_put_record(&b, FCGI_GET_VALUES, 0, NULL, 0, 200);
    fcl_put_stream(&b, FCGI_PARAMS, 1, nv.data, nv.len, 0, 255, true);
    fcl_put_stream(&b, FCGI_STDIN, 1, "0123456789", 10, 3, 255, true);
    ck_assert_int_eq(fcl_send_buf(c, &b), 0);
    fcl_response r;
    fcl_response_init(&r, 1);
    ck_assert_int_eq(fcl_await(c, &r, 1), 0);
    char *s = stdout_str(&r);
    ck_assert_msg(strstr(s, "stdin=10 "), "got %s", s);
    free(s);
    ck_assert_int_eq(c->nmgmt, 1);
    ck_assert_int_eq(c->mgmt[0].h.type, FCGI_GET_VALUES_RESULT);
    fcl_response_free(&r);
    fcl_buf_free(&b);
    fcl_buf_free(&nv);
    assert_serves(c, 2);
    fcl_close(c);
    stop();
}
END_TEST

START_TEST(stdout_records_at_most_65535_and_padded_to_8)
{
    start();
    fcl_conn *c = conn();
    const char *const params[] = {"ACTION", "big", "SIZE", "200001", NULL};
    fcl_response r;
    ck_assert_int_eq(fcl_request(c, 1, FCR_RESPONDER, FCGI_KEEP_CONN, params, NULL, 0, &r), 0);
    ck_assert_int_eq(c->violations, 0); /* padding, empty STDOUT before END_REQUEST */
    ck_assert_uint_eq(r.out.len, sizeof HEAD - 1 + 200001);
    ck_assert_uint_ge(r.out_records, 4); /* 66000+ bytes cannot be one record */
    ck_assert_uint_eq(r.out_empty, 1);
    ck_assert_uint_eq(r.end_records, 1);
    for (size_t i = 0; i < 200001; i++) {
        if (r.out.data[sizeof HEAD - 1 + i] != 'a' + i % 26)
            ck_abort_msg("byte %zu differs", i);
    }
    fcl_response_free(&r);
    fcl_close(c);
    stop();
}
END_TEST

START_TEST(stderr_terminated_once_when_used_and_absent_otherwise)
{
    start();
    fcl_conn *c = conn();
    const char *const params[] = {"ACTION", "stderr", NULL};
    fcl_response r;
    ck_assert_int_eq(fcl_request(c, 1, FCR_RESPONDER, FCGI_KEEP_CONN, params, NULL, 0, &r), 0);
    ck_assert_uint_eq(r.err.len, 4);
    ck_assert_int_eq(memcmp(r.err.data, "oops", 4), 0);
    ck_assert_uint_eq(r.err_empty, 1);
    fcl_response_free(&r);
    ck_assert_int_eq(fcl_request(c, 2, FCR_RESPONDER, FCGI_KEEP_CONN, PLAIN, NULL, 0, &r), 0);
    ck_assert_uint_eq(r.err.len, 0);
    ck_assert_uint_eq(r.err_empty, 0);
    fcl_response_free(&r);
    ck_assert_int_eq(c->violations, 0);
    fcl_close(c);
    stop();
}
END_TEST

START_TEST(many_params_are_found_and_the_last_duplicate_wins)
{
    start();
    fcl_conn *c = conn();
    for (int which = 0; which < 200; which += 37) {
        fcl_buf b, nv;
        fcl_buf_init(&b);
        fcl_buf_init(&nv);
        char name[32], value[32];
        for (int i = 0; i < 200; i++) { /* grows the table past its first size several times */
            snprintf(name, sizeof name, "PARAM_%d", i);
            snprintf(value, sizeof value, "v%d", i);
            fcl_nv_adds(&nv, name, value);
        }
        snprintf(name, sizeof name, "PARAM_%d", which);
        fcl_nv_adds(&nv, name, "last");
        fcl_nv_adds(&nv, "ACTION", "param");
        fcl_nv_adds(&nv, "WHICH", name);
        fcl_put_begin(&b, 1, FCR_RESPONDER, FCGI_KEEP_CONN);
        fcl_put_stream(&b, FCGI_PARAMS, 1, nv.data, nv.len, 0, FCL_PAD8, true);
        fcl_put_stream(&b, FCGI_STDIN, 1, NULL, 0, 0, 0, true);
        ck_assert_int_eq(fcl_send_buf(c, &b), 0);
        fcl_response r;
        fcl_response_init(&r, 1);
        ck_assert_int_eq(fcl_await(c, &r, 1), 0);
        char *out = stdout_str(&r);
        ck_assert_msg(strstr(out, "[last]"), "PARAM_%d: %s", which, out);
        free(out);
        fcl_response_free(&r);
        fcl_buf_free(&b);
        fcl_buf_free(&nv);
    }
    fcl_close(c);
    stop();
}
END_TEST

START_TEST(request_id_65535_is_valid)
{
    start();
    fcl_conn *c = conn();
    assert_serves(c, 65535);
    assert_serves(c, 1);
    fcl_close(c);
    stop();
}
END_TEST

static void bad_then_new_connection_serves(const fcl_buf *bad)
{
    start();
    fcl_conn *c = conn();
    fcl_send_buf(c, bad);
    ck_assert_int_eq(fcl_wait_eof(c, 5), 0);
    fcl_close(c);
    assert_new_conn_serves();
    fcr_server_stats st;
    fcr_server_get_stats(H.srv, &st);
    ck_assert_uint_ge(st.protocol_errors, 1);
    stop();
}

START_TEST(version_other_than_1_closes_the_connection)
{
    fcl_buf b;
    fcl_buf_init(&b);
    fcl_put_header(&b, 2, FCGI_BEGIN_REQUEST, 1, 8, 0);
    fcl_buf_add(&b, "\0\1\1\0\0\0\0\0", 8);
    bad_then_new_connection_serves(&b);
    fcl_buf_free(&b);
}
END_TEST

START_TEST(begin_request_content_not_8_bytes_closes_the_connection)
{
    fcl_buf b;
    fcl_buf_init(&b);
    fcl_put_record(&b, FCGI_BEGIN_REQUEST, 1, "\0\1\1\0\0\0\0", 7, 1);
    bad_then_new_connection_serves(&b);
    fcl_buf_free(&b);
}
END_TEST

START_TEST(second_begin_for_active_id_is_a_protocol_error)
{
    fcl_buf b;
    fcl_buf_init(&b);
    fcl_put_begin(&b, 3, FCR_RESPONDER, FCGI_KEEP_CONN);
    fcl_put_begin(&b, 3, FCR_RESPONDER, FCGI_KEEP_CONN);
    bad_then_new_connection_serves(&b);
    fcl_buf_free(&b);
}
END_TEST

START_TEST(truncated_length_prefix_at_end_of_params_is_an_error)
{
    fcl_buf b;
    fcl_buf_init(&b);
    fcl_put_begin(&b, 1, FCR_RESPONDER, FCGI_KEEP_CONN);
    /* a pair, then the first two bytes of a 4-byte length, then the end of PARAMS */
    fcl_put_stream(&b, FCGI_PARAMS, 1, "\1\1ab\x80\0", 6, 0, FCL_PAD8, true);
    bad_then_new_connection_serves(&b);
    fcl_buf_free(&b);
}
END_TEST

/* The peak of this process's virtual memory (VmPeak), in bytes. */
static unsigned long long vm_peak(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    ck_assert_ptr_nonnull(f);
    char line[256];
    unsigned long long kb = 0;
    while (fgets(line, sizeof line, f) && sscanf(line, "VmPeak: %llu kB", &kb) != 1)
        ;
    fclose(f);
    ck_assert_uint_gt(kb, 0);
    return kb * 1024;
}

/* A declared length is checked against the bytes that can still arrive before anything is
 * reserved for it: the process's peak of virtual memory (which an allocation of 2 GiB would
 * raise, used or not) grows by less than 1 GiB, the server's thread included. */
START_TEST(huge_declared_name_length_is_not_allocated_and_closes_the_connection)
{
    fcl_buf b;
    fcl_buf_init(&b);
    fcl_put_begin(&b, 1, FCR_RESPONDER, FCGI_KEEP_CONN);
    /* name length 0x7fffffff, value length 0x7fffffff, then the end of PARAMS */
    fcl_put_stream(&b, FCGI_PARAMS, 1, "\xff\xff\xff\xff\xff\xff\xff\xff", 8, 0, 0, true);
    unsigned long long before = vm_peak();
    bad_then_new_connection_serves(&b);
    unsigned long long grew = vm_peak() - before;
    ck_assert_msg(grew < (1ull << 30), "the peak of virtual memory grew by %llu MiB", grew >> 20);
    fcl_buf_free(&b);
}
END_TEST

START_TEST(stdin_before_params_end_is_a_protocol_error)
{
    fcl_buf b;
    fcl_buf_init(&b);
    fcl_put_begin(&b, 1, FCR_RESPONDER, FCGI_KEEP_CONN);
    fcl_put_stream(&b, FCGI_STDIN, 1, "abc", 3, 0, FCL_PAD8, true);
    bad_then_new_connection_serves(&b);
    fcl_buf_free(&b);
}
END_TEST

START_TEST(records_for_inactive_ids_are_ignored)
{
    start();
    fcl_conn *c = conn();
    fcl_buf b;
    fcl_buf_init(&b);
    fcl_put_stream(&b, FCGI_STDIN, 9, "stray", 5, 0, FCL_PAD8, true);
    fcl_put_stream(&b, FCGI_PARAMS, 9, "\1\1ab", 4, 0, FCL_PAD8, true);
    fcl_put_abort(&b, 9);
    fcl_put_record(&b, FCGI_STDOUT, 1, "x", 1, 7); /* a type the application never receives */
    ck_assert_int_eq(fcl_send_buf(c, &b), 0);
    assert_serves(c, 1);
    ck_assert_int_eq(c->nmgmt, 0);
    fcl_buf_free(&b);
    fcl_close(c);
    stop();
}
END_TEST

/* ---- requests and connections ---------------------------------------------------------- */

static void begin_only(fcl_conn *c, uint16_t id, uint16_t role, uint8_t flags, fcl_response *r)
{
    fcl_buf b;
    fcl_buf_init(&b);
    fcl_put_begin(&b, id, role, flags);
    ck_assert_int_eq(fcl_send_buf(c, &b), 0);
    fcl_buf_free(&b);
    fcl_response_init(r, id);
    ck_assert_int_eq(fcl_await(c, r, 1), 0);
}

START_TEST(unknown_role_gets_unknown_role_without_stdout)
{
    start();
    fcl_conn *c = conn();
    fcl_response r;
    begin_only(c, 4, 9, FCGI_KEEP_CONN, &r);
    ck_assert_int_eq(r.protocol_status, FCGI_UNKNOWN_ROLE);
    ck_assert_uint_eq(r.out.len, 0);
    ck_assert_uint_eq(r.out_empty, 0);
    fcl_response_free(&r);
    assert_serves(c, 4); /* the id is free again */
    fcl_close(c);
    stop();
}
END_TEST

static void only_responder(fcr_server_config *cfg)
{
    cfg->roles = FCR_ROLE_BIT(FCR_RESPONDER);
}

START_TEST(role_not_served_gets_unknown_role)
{
    start_with(only_responder);
    fcl_conn *c = conn();
    fcl_response r;
    begin_only(c, 1, FCR_FILTER, FCGI_KEEP_CONN, &r);
    ck_assert_int_eq(r.protocol_status, FCGI_UNKNOWN_ROLE);
    fcl_response_free(&r);
    assert_serves(c, 2);
    fcl_close(c);
    stop();
}
END_TEST

START_TEST(keep_conn_0_closes_after_end_request_without_reset)
{
    start();
    fcl_conn *c = conn();
    fcl_response r;
    ck_assert_int_eq(fcl_request(c, 1, FCR_RESPONDER, 0, PLAIN, NULL, 0, &r), 0);
    ck_assert(r.ended);
    fcl_response_free(&r);
    ck_assert_int_eq(fcl_wait_eof(c, 5), 0);
    fcl_close(c);
    stop();
}
END_TEST

START_TEST(keep_conn_1_serves_100_requests_on_one_connection)
{
    start();
    fcl_conn *c = conn();
    for (uint16_t i = 1; i <= 100; i++)
        assert_serves(c, i);
    ck_assert(fcl_idle_for(c, 0.3));
    fcr_server_stats st;
    fcr_server_get_stats(H.srv, &st);
    ck_assert_uint_eq(st.accepted, 1);
    ck_assert_uint_eq(st.requests, 100);
    fcl_close(c);
    stop();
}
END_TEST

static const char *const HOLD[] = {"ACTION", "hold", NULL};

START_TEST(abort_runs_the_abort_callback_and_one_end_request)
{
    start();
    fcl_conn *c = conn();
    fcl_buf b;
    fcl_buf_init(&b);
    fcl_put_request(&b, 1, FCR_RESPONDER, FCGI_KEEP_CONN, HOLD, NULL, 0, NULL, 0);
    fcl_put_abort(&b, 1);
    ck_assert_int_eq(fcl_send_buf(c, &b), 0);
    fcl_response r;
    fcl_response_init(&r, 1);
    ck_assert_int_eq(fcl_await(c, &r, 1), 0);
    ck_assert_uint_eq(r.end_records, 1);
    ck_assert_uint_eq(r.out.len, 0);
    fcl_response_free(&r);
    assert_serves(c, 1);
    ck_assert(fcl_idle_for(c, 0.2)); /* no second END_REQUEST */
    ck_assert_int_eq(c->violations, 0);
    ck_assert_int_eq(n_aborts, 1);
    ck_assert_int_eq(n_eclosed_after_abort, 1);
    fcl_buf_free(&b);
    fcl_close(c);
    stop();
}
END_TEST

START_TEST(abort_mid_stdin_before_the_application_saw_it)
{
    start();
    fcl_conn *c = conn();
    fcl_buf b, nv;
    fcl_buf_init(&b);
    fcl_buf_init(&nv);
    fcl_nv_adds(&nv, "REQUEST_METHOD", "POST");
    fcl_put_begin(&b, 1, FCR_RESPONDER, FCGI_KEEP_CONN);
    fcl_put_stream(&b, FCGI_PARAMS, 1, nv.data, nv.len, 0, FCL_PAD8, true);
    fcl_put_stream(&b, FCGI_STDIN, 1, "partial", 7, 0, FCL_PAD8, false);
    fcl_put_abort(&b, 1);
    ck_assert_int_eq(fcl_send_buf(c, &b), 0);
    fcl_response r;
    fcl_response_init(&r, 1);
    ck_assert_int_eq(fcl_await(c, &r, 1), 0);
    ck_assert_uint_eq(r.end_records, 1);
    fcl_response_free(&r);
    ck_assert_int_eq(n_delivered, 0);
    assert_serves(c, 1);
    fcl_buf_free(&b);
    fcl_buf_free(&nv);
    fcl_close(c);
    stop();
}
END_TEST

START_TEST(peer_closing_aborts_everything_on_the_connection)
{
    start();
    fcl_conn *c = conn();
    fcl_buf b;
    fcl_buf_init(&b);
    for (uint16_t id = 1; id <= 3; id++)
        fcl_put_request(&b, id, FCR_RESPONDER, FCGI_KEEP_CONN, HOLD, NULL, 0, NULL, 0);
    ck_assert_int_eq(fcl_send_buf(c, &b), 0);
    double t0 = fcl_now();
    while (n_delivered < 3 && fcl_now() - t0 < 5)
        usleep(1000);
    fcl_close(c);
    t0 = fcl_now();
    while (n_aborts < 3 && fcl_now() - t0 < 5)
        usleep(1000);
    ck_assert_int_eq(n_aborts, 3);
    fcl_buf_free(&b);
    assert_new_conn_serves();
    stop();
}
END_TEST

static void tiny_per_conn(fcr_server_config *cfg)
{
    cfg->limits.max_reqs_per_conn = 4;
}

START_TEST(begin_flood_beyond_the_cap_gets_overloaded)
{
    start_with(tiny_per_conn);
    fcl_conn *c = conn();
    fcl_buf b;
    fcl_buf_init(&b);
    for (uint16_t id = 1; id <= 6; id++)
        fcl_put_begin(&b, id, FCR_RESPONDER, FCGI_KEEP_CONN);
    ck_assert_int_eq(fcl_send_buf(c, &b), 0);
    fcl_response r[2];
    fcl_response_init(&r[0], 5);
    fcl_response_init(&r[1], 6);
    ck_assert_int_eq(fcl_await(c, r, 2), 0);
    ck_assert_int_eq(r[0].protocol_status, FCGI_OVERLOADED);
    ck_assert_int_eq(r[1].protocol_status, FCGI_OVERLOADED);
    ck_assert_uint_eq(r[0].out_empty, 0);
    fcl_response_free(&r[0]);
    fcl_response_free(&r[1]);
    fcr_server_stats st;
    fcr_server_get_stats(H.srv, &st);
    ck_assert_uint_eq(st.active_reqs, 4);
    fcl_buf_free(&b);
    fcl_close(c);
    stop();
}
END_TEST

static void no_mpx(fcr_server_config *cfg)
{
    cfg->multiplex = false;
}

START_TEST(multiplexing_off_answers_cant_mpx_conn)
{
    start_with(no_mpx);
    fcl_conn *c = conn();
    fcl_buf b;
    fcl_buf_init(&b);
    fcl_put_begin(&b, 1, FCR_RESPONDER, FCGI_KEEP_CONN);
    fcl_put_begin(&b, 2, FCR_RESPONDER, FCGI_KEEP_CONN);
    ck_assert_int_eq(fcl_send_buf(c, &b), 0);
    fcl_response r;
    fcl_response_init(&r, 2);
    ck_assert_int_eq(fcl_await(c, &r, 1), 0);
    ck_assert_int_eq(r.protocol_status, FCGI_CANT_MPX_CONN);
    fcl_response_free(&r);
    fcl_buf_free(&b);
    fcl_close(c);
    stop();
}
END_TEST

START_TEST(sixteen_interleaved_requests_on_one_connection)
{
    start();
    fcl_conn *c = conn();
    fcl_buf b, nv;
    fcl_buf_init(&b);
    fcl_buf_init(&nv);
    fcl_nv_adds(&nv, "REQUEST_METHOD", "POST");
    for (uint16_t id = 1; id <= 16; id++)
        fcl_put_begin(&b, id, FCR_RESPONDER, FCGI_KEEP_CONN);
    for (uint16_t id = 1; id <= 16; id++)
        fcl_put_stream(&b, FCGI_PARAMS, id, nv.data, nv.len, 0, FCL_PAD8, true);
    char body[64] = {0};
    for (int round = 0; round < 3; round++) {
        for (uint16_t id = 1; id <= 16; id++)
            fcl_put_stream(&b, FCGI_STDIN, id, body, id, 0, FCL_PAD8, false);
    }
    for (uint16_t id = 16; id >= 1; id--)
        fcl_put_stream(&b, FCGI_STDIN, id, NULL, 0, 0, 0, true);
    ck_assert_int_eq(fcl_send_buf(c, &b), 0);
    fcl_response r[16];
    for (int i = 0; i < 16; i++)
        fcl_response_init(&r[i], (uint16_t)(i + 1));
    ck_assert_int_eq(fcl_await(c, r, 16), 0);
    for (int i = 0; i < 16; i++) {
        char want[32];
        snprintf(want, sizeof want, "stdin=%d ", 3 * (i + 1));
        char *s = stdout_str(&r[i]);
        ck_assert_msg(strstr(s, want), "id %d: %s", i + 1, s);
        free(s);
        fcl_response_free(&r[i]);
    }
    ck_assert_int_eq(c->violations, 0);
    fcl_buf_free(&b);
    fcl_buf_free(&nv);
    fcl_close(c);
    stop();
}
END_TEST

/* ---- management records ---------------------------------------------------------------- */

static void values_config(fcr_server_config *cfg)
{
    cfg->limits.max_conns = 77;
    cfg->limits.max_reqs = 99;
}

START_TEST(get_values_mid_request_answers_from_the_configuration)
{
    start_with(values_config);
    fcl_conn *c = conn();
    fcl_buf b, nv, q;
    fcl_buf_init(&b);
    fcl_buf_init(&nv);
    fcl_buf_init(&q);
    fcl_nv_adds(&nv, "REQUEST_METHOD", "GET");
    fcl_nv_adds(&q, "FCGI_MAX_CONNS", "");
    fcl_nv_adds(&q, "FCGI_MAX_REQS", "");
    fcl_nv_adds(&q, "FCGI_MPXS_CONNS", "");
    fcl_nv_adds(&q, "FCGI_MAX_CONNS", "");    /* asked twice: answered once */
    fcl_nv_adds(&q, "FCGI_NO_SUCH_NAME", ""); /* unknown: omitted */
    fcl_put_begin(&b, 1, FCR_RESPONDER, FCGI_KEEP_CONN);
    fcl_put_stream(&b, FCGI_PARAMS, 1, nv.data, 3, 0, FCL_PAD8, false);
    fcl_put_record(&b, FCGI_GET_VALUES, 0, q.data, q.len, 0);
    fcl_put_stream(&b, FCGI_PARAMS, 1, nv.data + 3, nv.len - 3, 0, FCL_PAD8, true);
    fcl_put_stream(&b, FCGI_STDIN, 1, NULL, 0, 0, 0, true);
    ck_assert_int_eq(fcl_send_buf(c, &b), 0);
    fcl_response r;
    fcl_response_init(&r, 1);
    ck_assert_int_eq(fcl_await(c, &r, 1), 0);
    ck_assert_int_eq(r.protocol_status, 0);
    ck_assert_int_eq(c->nmgmt, 1);
    fcl_record *m = &c->mgmt[0];
    ck_assert_int_eq(m->h.type, FCGI_GET_VALUES_RESULT);
    fcl_buf want;
    fcl_buf_init(&want);
    fcl_nv_adds(&want, "FCGI_MAX_CONNS", "77");
    fcl_nv_adds(&want, "FCGI_MAX_REQS", "99");
    fcl_nv_adds(&want, "FCGI_MPXS_CONNS", "1");
    ck_assert_uint_eq(m->h.content_len, want.len);
    ck_assert_int_eq(memcmp(m->content, want.data, want.len), 0);
    fcl_buf_free(&want);
    fcl_response_free(&r);
    fcl_buf_free(&b);
    fcl_buf_free(&nv);
    fcl_buf_free(&q);
    fcl_close(c);
    stop();
}
END_TEST

START_TEST(unknown_management_type_gets_unknown_type)
{
    start();
    fcl_conn *c = conn();
    fcl_buf b;
    fcl_buf_init(&b);
    fcl_put_record(&b, 42, 0, "abc", 3, 5);
    ck_assert_int_eq(fcl_send_buf(c, &b), 0);
    assert_serves(c, 1);
    ck_assert_int_eq(c->nmgmt, 1);
    ck_assert_int_eq(c->mgmt[0].h.type, FCGI_UNKNOWN_TYPE);
    ck_assert_int_eq(c->mgmt[0].h.content_len, 8);
    ck_assert_int_eq(c->mgmt[0].content[0], 42);
    fcl_buf_free(&b);
    fcl_close(c);
    stop();
}
END_TEST

/* ---- limits ---------------------------------------------------------------------------- */

static void few_params(fcr_server_config *cfg)
{
    cfg->limits.max_params = 3;
    cfg->limits.max_name_len = 16;
    cfg->limits.max_params_bytes = 256;
}

static void assert_431(const char *const *params)
{
    n_delivered = 0;
    fcl_conn *c = conn();
    fcl_response r;
    ck_assert_int_eq(fcl_request(c, 1, FCR_RESPONDER, FCGI_KEEP_CONN, params, NULL, 0, &r), 0);
    char *s = stdout_str(&r);
    ck_assert_msg(strncmp(s, "Status: 431", 11) == 0, "got %s", s);
    free(s);
    fcl_response_free(&r);
    ck_assert_int_eq(n_delivered, 0);
    assert_serves(c, 2); /* the connection keeps serving */
    fcl_close(c);
}

START_TEST(params_over_their_limits_get_431_and_the_connection_survives)
{
    start_with(few_params);
    const char *const many[] = {"A", "1", "B", "2", "C", "3", "D", "4", NULL};
    assert_431(many);
    const char *const longname[] = {"A_NAME_LONGER_THAN_16", "1", NULL};
    assert_431(longname);
    char big[300];
    memset(big, 'v', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    const char *const bytes[] = {"A", big, NULL};
    assert_431(bytes);
    stop();
}
END_TEST

START_TEST(body_over_the_limit_is_reported_to_the_application_early)
{
    start();
    fcl_conn *c = conn();
    const char *const params[] = {"ACTION", "small", NULL};
    char body[1000];
    memset(body, 'b', sizeof body);
    fcl_response r;
    ck_assert_int_eq(
        fcl_request(c, 1, FCR_RESPONDER, FCGI_KEEP_CONN, params, body, sizeof body, &r), 0);
    char *s = stdout_str(&r);
    char want[64];
    snprintf(want, sizeof want, "error=%d", FCR_ETOOBIG);
    ck_assert_msg(strstr(s, want), "got %s", s);
    free(s);
    fcl_response_free(&r);
    assert_serves(c, 2);
    fcl_close(c);
    stop();
}
END_TEST

START_TEST(body_without_content_length_and_shorter_than_declared)
{
    start();
    fcl_conn *c = conn();
    const char *const nocl[] = {"REQUEST_METHOD", "POST", NULL};
    fcl_response r;
    ck_assert_int_eq(fcl_request(c, 1, FCR_RESPONDER, FCGI_KEEP_CONN, nocl, "12345", 5, &r), 0);
    char *s = stdout_str(&r);
    ck_assert_msg(strstr(s, "stdin=5 data=0 error=0"), "got %s", s);
    free(s);
    fcl_response_free(&r);
    const char *const shorter[] = {"CONTENT_LENGTH", "100", NULL};
    ck_assert_int_eq(fcl_request(c, 2, FCR_RESPONDER, FCGI_KEEP_CONN, shorter, "123", 3, &r), 0);
    s = stdout_str(&r);
    ck_assert_msg(strstr(s, "stdin=3 data=0 error=0"), "got %s", s);
    free(s);
    fcl_response_free(&r);
    const char *const empty[] = {"CONTENT_LENGTH", "", "CONTENT_TYPE", "", NULL};
    ck_assert_int_eq(fcl_request(c, 3, FCR_RESPONDER, FCGI_KEEP_CONN, empty, NULL, 0, &r), 0);
    s = stdout_str(&r);
    ck_assert_msg(strstr(s, "stdin=0 data=0 error=0"), "got %s", s);
    free(s);
    fcl_response_free(&r);
    fcl_close(c);
    stop();
}
END_TEST

START_TEST(refused_body_is_drained_so_the_sender_sees_the_answer)
{
    start();
    fcl_conn *c = conn();
    const char *const params[] = {"ACTION", "small", NULL};
    size_t n = 2 * 1024 * 1024;
    char *body = calloc(1, n);
    fcl_response r;
    /* KEEP_CONN=0: the answer comes early and the connection closes, but only after the rest
     * of the body was read, so sending it all succeeds. */
    ck_assert_int_eq(fcl_request(c, 1, FCR_RESPONDER, 0, params, body, n, &r), 0);
    char *s = stdout_str(&r);
    char want[64];
    snprintf(want, sizeof want, "error=%d", FCR_ETOOBIG);
    ck_assert_msg(strstr(s, want), "got %s", s);
    free(s);
    ck_assert_int_eq(fcl_wait_eof(c, 5), 0);
    fcl_response_free(&r);
    free(body);
    fcl_close(c);
    stop();
}
END_TEST

START_TEST(on_params_may_answer_before_the_body)
{
    start();
    fcl_conn *c = conn();
    const char *const params[] = {"ACTION", "early", NULL};
    fcl_response r;
    ck_assert_int_eq(fcl_request(c, 1, FCR_RESPONDER, FCGI_KEEP_CONN, params, "xyz", 3, &r), 0);
    ck_assert_int_eq(strncmp((char *)r.out.data, "Status: 413", 11), 0);
    ck_assert_int_eq(n_delivered, 0);
    fcl_response_free(&r);
    assert_serves(c, 2);
    fcl_close(c);
    stop();
}
END_TEST

/* ---- roles ----------------------------------------------------------------------------- */

START_TEST(authorizer_is_served_after_params_without_stdin)
{
    start();
    fcl_conn *c = conn();
    fcl_buf b, nv;
    fcl_buf_init(&b);
    fcl_buf_init(&nv);
    fcl_nv_adds(&nv, "HTTP_AUTHORIZATION", "Bearer x");
    fcl_put_begin(&b, 1, FCR_AUTHORIZER, FCGI_KEEP_CONN);
    fcl_put_stream(&b, FCGI_PARAMS, 1, nv.data, nv.len, 0, FCL_PAD8, true);
    ck_assert_int_eq(fcl_send_buf(c, &b), 0); /* no STDIN at all */
    fcl_response r;
    fcl_response_init(&r, 1);
    ck_assert_int_eq(fcl_await(c, &r, 1), 0);
    char *s = stdout_str(&r);
    ck_assert_msg(strstr(s, "role=2 stdin=0"), "got %s", s);
    free(s);
    fcl_response_free(&r);
    fcl_buf_free(&b);
    fcl_buf_free(&nv);
    fcl_close(c);
    stop();
}
END_TEST

START_TEST(filter_gets_data_after_stdin)
{
    start();
    fcl_conn *c = conn();
    fcl_buf b;
    fcl_buf_init(&b);
    const char *const params[] = {"FCGI_DATA_LENGTH", "6", NULL};
    fcl_put_request(&b, 1, FCR_FILTER, FCGI_KEEP_CONN, params, "in", 2, "abcdef", 6);
    ck_assert_int_eq(fcl_send_buf(c, &b), 0);
    fcl_response r;
    fcl_response_init(&r, 1);
    ck_assert_int_eq(fcl_await(c, &r, 1), 0);
    char *s = stdout_str(&r);
    ck_assert_msg(strstr(s, "role=3 stdin=2 data=6"), "got %s", s);
    free(s);
    fcl_response_free(&r);
    fcl_buf_free(&b);
    fcl_close(c);
    stop();
}
END_TEST

/* ---- asynchronous completion, streaming input, back-pressure ---------------------------- */

START_TEST(application_finishes_later_from_a_timer)
{
    start();
    fcl_conn *c = conn();
    const char *const params[] = {"ACTION", "async", NULL};
    fcl_response r;
    ck_assert_int_eq(fcl_request(c, 1, FCR_RESPONDER, FCGI_KEEP_CONN, params, NULL, 0, &r), 0);
    ck_assert_int_eq(r.app_status, 7);
    ck_assert_ptr_nonnull(memmem(r.out.data, r.out.len, "later", 5));
    fcl_response_free(&r);
    fcl_close(c);
    stop();
}
END_TEST

START_TEST(streaming_input_pauses_and_resumes)
{
    start();
    fcl_conn *c = conn();
    const char *const params[] = {"ACTION", "stream", NULL};
    size_t n = 300000;
    char *body = calloc(1, n);
    fcl_response r;
    ck_assert_int_eq(fcl_request(c, 1, FCR_RESPONDER, FCGI_KEEP_CONN, params, body, n, &r), 0);
    char *s = stdout_str(&r);
    ck_assert_msg(strstr(s, "streamed=300000"), "got %s", s);
    free(s);
    ck_assert_int_ge(n_stream_chunks, 3);
    fcl_response_free(&r);
    free(body);
    assert_serves(c, 2);
    fcl_close(c);
    stop();
}
END_TEST

START_TEST(request_finished_while_paused_does_not_stall_the_connection)
{
    start();
    fcl_conn *c = conn();
    const char *const params[] = {"ACTION", "pause-finish", NULL};
    fcl_response r;
    ck_assert_int_eq(fcl_request(c, 1, FCR_RESPONDER, FCGI_KEEP_CONN, params, "abc", 3, &r), 0);
    fcl_response_free(&r);
    assert_serves(c, 2); /* reading resumed: the next request is served at once */
    fcl_close(c);
    stop();
}
END_TEST

static void small_queue(fcr_server_config *cfg)
{
    cfg->limits.max_output_queue = 256 * 1024;
}

START_TEST(output_cap_refuses_writes_until_drained)
{
    start_with(small_queue);
    fcl_conn *c = conn();
    const char *const params[] = {"ACTION", "cap", NULL};
    fcl_response r;
    ck_assert_int_eq(fcl_request(c, 1, FCR_RESPONDER, FCGI_KEEP_CONN, params, NULL, 0, &r), 0);
    ck_assert_int_ge(n_eagain, 2); /* waited for several drains */
    ck_assert_uint_eq(r.out.len, sizeof HEAD - 1 + 4u * 1024 * 1024 + 4);
    ck_assert_int_eq(memcmp(r.out.data + r.out.len - 4, "done", 4), 0);
    fcl_response_free(&r);
    fcl_close(c);
    stop();
}
END_TEST

/* ---- timeouts, allow-list, connection cap ------------------------------------------------ */

static void short_timeouts(fcr_server_config *cfg)
{
    cfg->limits.idle_timeout = 1;
    cfg->limits.input_timeout = 1;
}

START_TEST(idle_keep_alive_connection_is_closed_at_its_timeout)
{
    start_with(short_timeouts);
    fcl_conn *c = conn();
    assert_serves(c, 1);
    ck_assert_int_eq(fcl_wait_eof(c, 5), 0);
    fcl_close(c);
    stop();
}
END_TEST

/* Management records are answered but are not activity: a peer that only asks GET_VALUES
 * is closed at the idle timeout like any idle connection. */
START_TEST(get_values_does_not_keep_an_idle_connection_open)
{
    start_with(short_timeouts);
    fcl_conn *c = conn();
    fcl_buf q;
    fcl_buf_init(&q);
    fcl_nv_add(&q, "FCGI_MAX_CONNS", 14, "", 0);
    fcl_buf b;
    fcl_buf_init(&b);
    fcl_put_record(&b, FCGI_GET_VALUES, 0, q.data, q.len, 0);
    double t0 = fcl_now();
    int answered = 0;
    bool closed = false;
    while (!closed && fcl_now() - t0 < 8) { /* a GET_VALUES every 300 ms */
        if (fcl_send_buf(c, &b) != 0) {
            closed = true;
            break;
        }
        double slot_end = fcl_now() + 0.3;
        while (!closed && fcl_now() < slot_end) {
            int e = fcl_wait_eof(c, slot_end - fcl_now());
            if (e == 0 || errno == ECONNRESET || errno == EPIPE) {
                closed = true;
            } else if (errno == EPROTO) {
                answered++; /* the GET_VALUES_RESULT came: consume it */
                c->rx_off = c->rx.len;
            } else {
                break; /* ETIMEDOUT: the slot is over */
            }
        }
    }
    double held = fcl_now() - t0;
    fcl_buf_free(&b);
    fcl_buf_free(&q);
    fcl_close(c);
    stop();
    ck_assert_msg(answered > 0, "no GET_VALUES was answered");
    ck_assert_msg(closed || held < 8, "open after %.1f s of GET_VALUES alone", held);
    ck_assert_msg(held < 3.5, "closed only after %.1f s (idle timeout 1 s)", held);
}
END_TEST

START_TEST(trickling_request_is_closed_at_its_input_deadline)
{
    start_with(short_timeouts);
    fcl_conn *c = conn();
    fcl_buf b;
    fcl_buf_init(&b);
    fcl_put_begin(&b, 1, FCR_RESPONDER, FCGI_KEEP_CONN);
    fcl_put_stream(&b, FCGI_PARAMS, 1, "\1\1ab", 4, 0, FCL_PAD8, true);
    ck_assert_int_eq(fcl_send_buf(c, &b), 0);
    double t0 = fcl_now();
    int closed = -1;
    while (fcl_now() - t0 < 6) { /* one stdin byte every 200 ms keeps bytes flowing */
        if (fcl_send_buf(c, &(fcl_buf){(uint8_t *)"\1\5\0\1\0\1\0\0z", 9, 9}) != 0) {
            closed = 0;
            break;
        }
        if (!fcl_idle_for(c, 0.2)) {
            closed = fcl_wait_eof(c, 1);
            break;
        }
    }
    ck_assert_int_eq(closed, 0);
    ck_assert_double_lt(fcl_now() - t0, 5.0);
    ck_assert_int_eq(n_delivered, 0);
    fcl_buf_free(&b);
    fcl_close(c);
    stop();
}
END_TEST

static void input_timeout_2s(fcr_server_config *cfg)
{
    cfg->limits.input_timeout = 2;
}

/* The input timeout counts from the request's first byte: a BEGIN_REQUEST record trickled in
 * over most of it does not earn the request a fresh one. */
START_TEST(input_deadline_counts_from_the_first_byte_of_begin)
{
    start_with(input_timeout_2s);
    fcl_conn *c = conn();
    fcl_buf b;
    fcl_buf_init(&b);
    fcl_put_begin(&b, 1, FCR_RESPONDER, FCGI_KEEP_CONN);
    double t0 = fcl_now();
    for (size_t i = 0; i < b.len; i++) { /* 16 bytes, 100 ms apart: 1.5 s */
        ck_assert_int_eq(fcl_send(c, b.data + i, 1), 0);
        if (i + 1 < b.len)
            ck_assert(fcl_idle_for(c, 0.1));
    }
    int closed = -1;
    while (fcl_now() - t0 < 8) { /* then a PARAMS byte every 200 ms */
        if (fcl_send(c, "\1\4\0\1\0\1\0\0\1", 9) != 0) {
            closed = 0;
            break;
        }
        if (!fcl_idle_for(c, 0.2)) {
            closed = fcl_wait_eof(c, 1);
            break;
        }
    }
    double held = fcl_now() - t0;
    fcl_buf_free(&b);
    fcl_close(c);
    stop();
    ck_assert_int_eq(closed, 0);
    /* Deadline at 2 s, checked once a second: closed by 3 s (not at 1.5 + 2 s and after). */
    ck_assert_msg(held < 3.4, "closed after %.2f s", held);
}
END_TEST

static void tcp_only_allowed(fcr_server_config *cfg)
{
    cfg->web_server_addrs = "127.0.0.1, ::1";
}

START_TEST(web_server_addrs_refuses_other_peers_and_unix_ones)
{
    start_with(tcp_only_allowed);
    fcl_conn *c = conn(); /* a unix socket peer: not in the list */
    ck_assert_int_eq(fcl_wait_eof(c, 5), 0);
    fcl_close(c);
    fcr_server_stats st;
    fcr_server_get_stats(H.srv, &st);
    ck_assert_uint_eq(st.accepted, 0);
    stop();
}
END_TEST

START_TEST(malformed_web_server_addrs_is_refused_at_creation)
{
    fcr_server_config cfg;
    fcr_server_config_init(&cfg);
    cfg.on_request = on_request;
    cfg.web_server_addrs = "127.0.0.1,not-an-address";
    struct ev_loop *loop = ev_loop_new(0);
    int err = 0;
    ck_assert_ptr_null(fcr_server_new(loop, &cfg, &err));
    ck_assert_int_eq(err, FCR_EPARSE);
    ev_loop_destroy(loop);
}
END_TEST

static void two_conns(fcr_server_config *cfg)
{
    cfg->limits.max_conns = 2;
}

/* Sends a request on `c` that the application holds unanswered, and waits until it has it:
 * the connection is then busy. */
static void begin_held(fcl_conn *c)
{
    static const char *const HOLD[] = {"REQUEST_METHOD", "GET", "ACTION", "hold", NULL};
    int before = n_delivered;
    fcl_buf req;
    fcl_buf_init(&req);
    fcl_put_request(&req, 1, FCR_RESPONDER, FCGI_KEEP_CONN, HOLD, NULL, 0, NULL, 0);
    ck_assert_int_eq(fcl_send_buf(c, &req), 0);
    fcl_buf_free(&req);
    double t0 = fcl_now();
    while (n_delivered == before && fcl_now() - t0 < 10)
        usleep(1000);
    ck_assert_int_gt(n_delivered, before);
}

/* A new connection's request is not answered while `busy` is open, and is once it closes. */
static void assert_new_conn_waits_then(fcl_conn *busy)
{
    fcl_conn *next = conn();
    fcl_buf req;
    fcl_buf_init(&req);
    fcl_put_request(&req, 1, FCR_RESPONDER, FCGI_KEEP_CONN, PLAIN, NULL, 0, NULL, 0);
    ck_assert_int_eq(fcl_send_buf(next, &req), 0);
    fcl_buf_free(&req);
    ck_assert(fcl_idle_for(next, 0.5));
    fcl_close(busy);
    fcl_response r;
    fcl_response_init(&r, 1);
    ck_assert_int_eq(fcl_await(next, &r, 1), 0);
    ck_assert_int_eq(r.protocol_status, 0);
    fcl_response_free(&r);
    fcl_close(next);
}

/* At the cap, a new connection is admitted by closing the least recently active idle one. */
START_TEST(at_the_connection_cap_the_oldest_idle_connection_makes_room)
{
    start_with(two_conns);
    fcl_conn *a = conn(), *b = conn();
    assert_serves(a, 1);
    assert_serves(b, 1); /* b is now the more recently active */
    fcl_conn *third = conn();
    assert_serves(third, 1);
    ck_assert_int_eq(fcl_wait_eof(a, 5), 0); /* a, the least recently active, made room */
    assert_serves(b, 1);
    assert_serves(third, 1);
    fcl_close(a);
    fcl_close(b);
    fcl_close(third);
    stop();
    ck_assert_uint_eq(H.stats.evicted, 1);
}
END_TEST

/* When every connection at the cap is busy, accepting pauses until one closes. */
START_TEST(accepting_pauses_at_the_cap_when_every_connection_is_busy)
{
    start_with(two_conns);
    fcl_conn *a = conn(), *b = conn();
    begin_held(a);
    begin_held(b);
    assert_new_conn_waits_then(a);
    fcl_close(b);
    stop();
    ck_assert_uint_eq(H.stats.evicted, 0);
}
END_TEST

/* A request object is reused after its predecessor on the connection finished: nothing of the
 * previous request's params, body or state shows through. */
START_TEST(a_later_request_sees_nothing_of_an_earlier_one)
{
    start();
    fcl_conn *c = conn();
    static const char *const WITH_X[] = {"ACTION", "param", "WHICH", "X", "X", "one", NULL};
    static const char *const WITHOUT_X[] = {"ACTION", "param", "WHICH", "X", NULL};
    for (int round = 0; round < 3; round++) {
        fcl_response r;
        ck_assert_int_eq(fcl_request(c, 1, FCR_RESPONDER, FCGI_KEEP_CONN, WITH_X, "body!", 5, &r),
                         0);
        char *s = stdout_str(&r);
        ck_assert_ptr_nonnull(strstr(s, "[one]"));
        free(s);
        fcl_response_free(&r);
        ck_assert_int_eq(fcl_request(c, 1, FCR_RESPONDER, FCGI_KEEP_CONN, WITHOUT_X, NULL, 0, &r),
                         0);
        s = stdout_str(&r);
        ck_assert_msg(strstr(s, "[(null)]"), "a param of the previous request: %s", s);
        free(s);
        fcl_response_free(&r);
        ck_assert_int_eq(fcl_request(c, 2, FCR_RESPONDER, FCGI_KEEP_CONN, PLAIN, NULL, 0, &r), 0);
        s = stdout_str(&r);
        ck_assert_msg(strstr(s, "stdin=0 data=0 error=0 params=1"), "carried over: %s", s);
        free(s);
        fcl_response_free(&r);
    }
    ck_assert_int_eq(c->violations, 0);
    fcl_close(c);
    stop();
}
END_TEST

/* fcr_server_free() aborts a request the application holds; the request stays valid and is
 * finished (and freed) after the server is gone. */
START_TEST(request_held_past_server_free_is_finished_later)
{
    kept = NULL;
    start();
    fcl_conn *c = conn();
    static const char *const KEEP[] = {"ACTION", "keep", NULL};
    fcl_buf b;
    fcl_buf_init(&b);
    fcl_put_request(&b, 1, FCR_RESPONDER, FCGI_KEEP_CONN, KEEP, NULL, 0, NULL, 0);
    ck_assert_int_eq(fcl_send_buf(c, &b), 0);
    fcl_buf_free(&b);
    for (int i = 0; i < 1000 && !kept; i++)
        usleep(10000);
    ck_assert_ptr_nonnull(kept);
    stop(); /* frees the server */
    fcr_req *req = kept;
    ck_assert(fcr_req_aborted(req));
    ck_assert_int_eq(fcr_req_write(req, "x", 1), FCR_ECLOSED);
    ck_assert_str_eq(fcr_req_param(req, "ACTION"), "keep");
    ck_assert_int_eq(fcr_req_finish(req, 0), FCR_ECLOSED);
    kept = NULL;
    fcl_close(c);
}
END_TEST

START_TEST(listen_address_errors)
{
    fcr_server_config cfg;
    fcr_server_config_init(&cfg);
    cfg.on_request = on_request;
    struct ev_loop *loop = ev_loop_new(0);
    fcr_server *srv = fcr_server_new(loop, &cfg, NULL);
    ck_assert_ptr_nonnull(srv);
    ck_assert_int_eq(fcr_server_listen(srv, "http://x"), FCR_EADDR);
    ck_assert_int_eq(fcr_server_listen(srv, "tcp:127.0.0.1"), FCR_EADDR);
    ck_assert_int_eq(fcr_server_listen(srv, "tcp:127.0.0.1:port"), FCR_EADDR);
    ck_assert_int_eq(fcr_server_listen(srv, "fd:abc"), FCR_EADDR);
    ck_assert_int_eq(fcr_server_listen(srv, "fd:1"), FCR_EADDR); /* not a listening socket */
    ck_assert_int_eq(fcr_server_listen(srv, "unix:"), FCR_EADDR);
    ck_assert_int_eq(fcr_server_listen(srv, "tcp:[::1]:0"), 0);
    ck_assert_int_eq(fcr_server_listen(srv, "tcp:127.0.0.1:0"), 0);
    fcr_server_free(srv);
    ev_loop_destroy(loop);
    fcr_server_config bad = cfg;
    bad.on_request = NULL;
    int err = 0;
    ck_assert_ptr_null(fcr_server_new(ev_default_loop(0), &bad, &err));
    ck_assert_int_eq(err, FCR_EINVAL);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("fastcgi-rules");
    struct {
        const char *name;
        const TTest *test;
    } tests[] = {
#define T(x) {#x, x}
        T(nv_four_byte_length_of_small_value_is_legal),
        T(params_pair_split_across_records),
        T(padding_up_to_255_skipped_on_every_record_type),
        T(stdout_records_at_most_65535_and_padded_to_8),
        T(stderr_terminated_once_when_used_and_absent_otherwise),
        T(many_params_are_found_and_the_last_duplicate_wins),
        T(request_id_65535_is_valid),
        T(version_other_than_1_closes_the_connection),
        T(begin_request_content_not_8_bytes_closes_the_connection),
        T(second_begin_for_active_id_is_a_protocol_error),
        T(truncated_length_prefix_at_end_of_params_is_an_error),
        T(huge_declared_name_length_is_not_allocated_and_closes_the_connection),
        T(stdin_before_params_end_is_a_protocol_error),
        T(records_for_inactive_ids_are_ignored),
        T(unknown_role_gets_unknown_role_without_stdout),
        T(role_not_served_gets_unknown_role),
        T(keep_conn_0_closes_after_end_request_without_reset),
        T(keep_conn_1_serves_100_requests_on_one_connection),
        T(abort_runs_the_abort_callback_and_one_end_request),
        T(abort_mid_stdin_before_the_application_saw_it),
        T(peer_closing_aborts_everything_on_the_connection),
        T(begin_flood_beyond_the_cap_gets_overloaded),
        T(multiplexing_off_answers_cant_mpx_conn),
        T(sixteen_interleaved_requests_on_one_connection),
        T(get_values_mid_request_answers_from_the_configuration),
        T(unknown_management_type_gets_unknown_type),
        T(params_over_their_limits_get_431_and_the_connection_survives),
        T(body_over_the_limit_is_reported_to_the_application_early),
        T(body_without_content_length_and_shorter_than_declared),
        T(refused_body_is_drained_so_the_sender_sees_the_answer),
        T(on_params_may_answer_before_the_body),
        T(authorizer_is_served_after_params_without_stdin),
        T(filter_gets_data_after_stdin),
        T(application_finishes_later_from_a_timer),
        T(streaming_input_pauses_and_resumes),
        T(request_finished_while_paused_does_not_stall_the_connection),
        T(output_cap_refuses_writes_until_drained),
        T(idle_keep_alive_connection_is_closed_at_its_timeout),
        T(get_values_does_not_keep_an_idle_connection_open),
        T(trickling_request_is_closed_at_its_input_deadline),
        T(input_deadline_counts_from_the_first_byte_of_begin),
        T(web_server_addrs_refuses_other_peers_and_unix_ones),
        T(malformed_web_server_addrs_is_refused_at_creation),
        T(at_the_connection_cap_the_oldest_idle_connection_makes_room),
        T(accepting_pauses_at_the_cap_when_every_connection_is_busy),
        T(a_later_request_sees_nothing_of_an_earlier_one),
        T(request_held_past_server_free_is_finished_later),
        T(listen_address_errors),
#undef T
    };
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
        TCase *tc = tcase_create(tests[i].name);
        tcase_set_timeout(tc, 30);
        tcase_add_test(tc, tests[i].test);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
