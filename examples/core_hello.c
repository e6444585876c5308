/* core_hello: the smallest FastCGI application on the fcrest core, and the fastest one.
 *
 * It answers every request with
 *
 *   Status: 200 OK
 *   Content-Type: text/plain
 *   Content-Length: 13
 *
 *   Hello, world!
 *
 * The request body is read and dropped as it arrives (streaming input), never buffered; the
 * answer goes out once the body has been read whole. The benchmarks (bench/run) use it as
 * "fcrest core".
 *
 * Usage: core_hello [--listen ADDR]... [--max-conns N]
 * Without --listen it serves the listening socket it inherited (fd 0, or systemd's LISTEN_FDS). */
#include <fcrest/core.h>

#include <ev.h>

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static const char response[] = "Status: 200 OK\r\n"
                               "Content-Type: text/plain\r\n"
                               "Content-Length: 13\r\n"
                               "\r\n"
                               "Hello, world!";

/* The answer, then the end of the request. A short reply is copied into the request's open
 * STDOUT record: cheaper than fcr_req_write_ref(), which pays off for large buffers. */
static void reply(fcr_req *req)
{
    fcr_req_write(req, response, sizeof response - 1);
    fcr_req_finish(req, 0);
}

/* Each piece of the body is dropped; the end of STDIN (len == 0) triggers the answer. A
 * FILTER request's DATA stream ends after STDIN, so the answer waits for that instead. */
static int on_chunk(fcr_req *req, fcr_stream stream, const void *buf, size_t len)
{
    (void)buf;
    bool last = fcr_req_role(req) == FCR_FILTER ? stream == FCR_DATA : stream == FCR_STDIN;
    if (len == 0 && last)
        reply(req);
    return 0;
}

/* The connection went away while the body was arriving: release the request. */
static void on_abort(fcr_req *req)
{
    fcr_req_finish(req, 0);
}

static void on_params(fcr_req *req, void *data)
{
    (void)data;
    if (fcr_req_role(req) == FCR_AUTHORIZER)
        return; /* no body: on_request answers */
    fcr_req_stream_input(req, on_chunk);
}

static void on_request(fcr_req *req, void *data)
{
    (void)data;
    if (fcr_req_role(req) == FCR_AUTHORIZER)
        reply(req);
    else
        fcr_req_on_abort(req, on_abort); /* streaming: on_chunk answers at the end */
}

static void usage(FILE *f, const char *prog)
{
    fprintf(f,
            "usage: %s [--listen ADDR]... [--max-conns N]\n"
            "Answers every FastCGI request with \"Hello, world!\".\n"
            "  --listen ADDR     unix:PATH or tcp:HOST:PORT (repeatable); without it the\n"
            "                    inherited listening socket (fd 0 or LISTEN_FDS) is served\n"
            "  --max-conns N     open connections allowed (default 4096); the descriptor\n"
            "                    limit is raised to match\n"
            "  --help            show this text\n",
            prog);
}

static void raise_nofile_limit(unsigned conns)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    rlim_t want = (rlim_t)conns + 64;
    if (rl.rlim_cur >= want)
        return;
    rl.rlim_cur = want < rl.rlim_max ? want : rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur < want)
        fprintf(stderr, "core_hello: only %llu descriptors allowed for %u connections\n",
                (unsigned long long)rl.rlim_cur, conns);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"listen", required_argument, NULL, 'l'},
        {"max-conns", required_argument, NULL, 'm'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char **listen = calloc((size_t)argc + 1, sizeof *listen);
    size_t nlisten = 0;
    fcr_server_config cfg;
    fcr_server_config_init(&cfg);
    cfg.on_params = on_params;
    cfg.on_request = on_request;
    int c;
    if (!listen)
        return 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'l':
            listen[nlisten++] = optarg;
            break;
        case 'm': {
            char *end;
            errno = 0;
            unsigned long n = strtoul(optarg, &end, 10);
            if (errno || end == optarg || *end || n == 0 || n > 10000000) {
                fprintf(stderr, "%s: bad --max-conns: %s\n", argv[0], optarg);
                free(listen);
                return 2;
            }
            cfg.limits.max_conns = (unsigned)n;
            if (cfg.limits.max_reqs < n)
                cfg.limits.max_reqs = (unsigned)n;
            break;
        }
        case 'h':
            usage(stdout, argv[0]);
            free(listen);
            return 0;
        default:
            usage(stderr, argv[0]);
            free(listen);
            return 2;
        }
    }
    if (optind < argc) {
        usage(stderr, argv[0]);
        free(listen);
        return 2;
    }

    signal(SIGPIPE, SIG_IGN);
    raise_nofile_limit(cfg.limits.max_conns);

    struct ev_loop *loop = ev_default_loop(0);
    int err = 0;
    fcr_server *srv = fcr_server_new(loop, &cfg, &err);
    if (!srv) {
        fprintf(stderr, "%s: cannot create the server: %s\n", argv[0], fcr_strerror(err));
        free(listen);
        return 1;
    }
    int status = 0;
    for (size_t i = 0; i < nlisten && status == 0; i++) {
        err = fcr_server_listen(srv, listen[i]);
        if (err < 0) {
            fprintf(stderr, "%s: cannot listen on %s: %s (%s)\n", argv[0], listen[i],
                    fcr_strerror(err), strerror(errno));
            status = 1;
        }
    }
    if (status == 0 && nlisten == 0 && fcr_server_listen_inherited(srv) <= 0) {
        fprintf(stderr, "%s: no --listen given and no inherited listening socket\n", argv[0]);
        status = 1;
    }
    free(listen);
    if (status == 0)
        status = fcr_server_run(srv, 5) == 0 ? 0 : 1;
    fcr_server_free(srv);
    ev_loop_destroy(loop);
    return status;
}
