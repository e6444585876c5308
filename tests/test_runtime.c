/* The production runtime (issue 5), proven against real processes over real sockets:
 *
 *   - SIGTERM under continuous load loses no request: every request whose connection was let
 *     in gets its whole answer, later ones are refused at connect (ENOENT / ECONNREFUSED);
 *     requests in flight finish; the program exits 0.
 *   - SIGHUP under load (also two in a row) fails no request and replaces every worker.
 *   - SIGKILL of one worker fails only requests that worker held; a replacement serves within
 *     a second; the other workers' requests complete; the supervisor logs the signal.
 *   - 200 connections trickling a byte a second do not delay a normal request (median against a
 *     baseline taken in the same run) and are closed at their input deadline.
 *   - A client that never reads an 8 MiB answer costs the server at most its output cap (RSS
 *     from /proc) and is closed at the output stall timeout.
 *   - BEGIN_REQUEST floods are capped per connection and per worker (OVERLOADED) and leave the
 *     RSS flat.
 *   - The access log, --log-level and the timeout options of fcr_app_run.
 *
 * The programs are examples/hello and this test binary itself, which serves a small app
 * (--serve-app: fast, slow and large answers, the serving pid in FCGI_STDERR) or a core-only
 * server (--serve-core: an 8 MiB answer streamed through fcr_req_write) when started with those
 * arguments. FCR_VALGRIND="valgrind --opt..." runs the spawned programs under that command
 * (scripts/valgrind); timing and memory bounds are then not checked (nor memory bounds in
 * AddressSanitizer builds). */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <unistd.h>

#include <ev.h>
#include <fcrest.h>

#include "fcgi_client.h"

#define MIB (1024.0 * 1024.0)

/* ==== The programs this binary serves as ================================================ */

typedef struct slow_answer {
    ev_timer timer;
    fcr_res *res;
} slow_answer;

static int h_hello(fcr_req *req, fcr_res *res, void *data)
{
    (void)req, (void)data;
    return fcr_res_set_text(res, 200, "Hello, world!");
}

static int h_pid(fcr_req *req, fcr_res *res, void *data)
{
    (void)req, (void)data;
    return fcr_res_printf(res, "%ld", (long)getpid()) < 0 ? FCR_ENOMEM : 0;
}

static void slow_done(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop, (void)revents;
    slow_answer *s = (slow_answer *)t;
    fcr_res_send(s->res); /* FCR_ECLOSED when the client left: released all the same */
    free(s);
}

/* GET /slow?ms=N: tells the serving pid on FCGI_STDERR at once, answers after N ms. */
static int h_slow(fcr_req *req, fcr_res *res, void *data)
{
    (void)data;
    const char *ms = fcr_req_query(req, "ms");
    slow_answer *s = malloc(sizeof *s);
    if (!s)
        return FCR_ENOMEM;
    fcr_req_log(req, "worker %ld", (long)getpid());
    fcr_res_printf(res, "slow %ld", (long)getpid());
    s->res = res;
    ev_timer_init(&s->timer, slow_done, (ms ? atof(ms) : 300.0) / 1000.0, 0);
    ev_timer_start(fcr_req_loop(req), &s->timer);
    return FCR_ASYNC;
}

/* GET /big?mb=N: N MiB of 'x' appended to the response (no second copy). */
static int h_big(fcr_req *req, fcr_res *res, void *data)
{
    (void)data;
    static char piece[65536];
    memset(piece, 'x', sizeof piece);
    const char *mb = fcr_req_query(req, "mb");
    size_t n = (size_t)(mb ? atoi(mb) : 8) << 20;
    int rc = 0;
    for (size_t done = 0; done < n && rc == 0; done += sizeof piece)
        rc = fcr_res_append(res, piece, sizeof piece);
    return rc;
}

/* FCR_RT_STOP_FORKS_AFTER=N: every process this one forks after its first N stops itself
 * (SIGSTOP) before fork() returns in it, so that a worker started by a restart never reports
 * that it accepts, until the test sends it SIGCONT. */
static int forks;
static int stop_forks_after = -1;

static void count_fork(void)
{
    forks++;
}

static void stop_late_child(void)
{
    if (stop_forks_after >= 0 && forks > stop_forks_after) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        raise(SIGSTOP);
    }
}

/* Worker hooks of --serve-app: each start and stop is a line in the log; the start fails while
 * the file FCR_RT_HOOK_FAIL_FILE exists. */
static int hook_start(fcr_app *app, struct ev_loop *loop, void *data)
{
    (void)app, (void)data;
    const char *fail = getenv("FCR_RT_HOOK_FAIL_FILE");
    if (!loop || (fail && access(fail, F_OK) == 0)) {
        fprintf(stderr, "hook start failed pid=%ld\n", (long)getpid());
        return FCR_EIO;
    }
    fprintf(stderr, "hook start pid=%ld\n", (long)getpid());
    return 0;
}

static void hook_stop(fcr_app *app, struct ev_loop *loop, void *data)
{
    (void)app, (void)loop, (void)data;
    fprintf(stderr, "hook stop pid=%ld\n", (long)getpid());
}

static int serve_app(int argc, char **argv)
{
    const char *stop = getenv("FCR_RT_STOP_FORKS_AFTER");
    if (stop) {
        stop_forks_after = atoi(stop);
        pthread_atfork(count_fork, NULL, stop_late_child);
    }
    fcr_app *app = fcr_app_new();
    if (!app)
        return 1;
    fcr_app_route(app, FCR_GET, "/hello", h_hello, NULL);
    fcr_app_route(app, FCR_GET, "/pid", h_pid, NULL);
    fcr_app_route(app, FCR_GET, "/slow", h_slow, NULL);
    fcr_app_route(app, FCR_GET, "/big", h_big, NULL);
    if (getenv("FCR_RT_HOOKS")) {
        fcr_app_on_worker_start(app, hook_start, NULL);
        fcr_app_on_worker_stop(app, hook_stop, NULL);
    }
    int rc = fcr_app_run(app, argc, argv);
    fcr_app_free(app);
    return rc == 0 ? 0 : 1;
}

/* The core-only server: "/big" streams 8 MiB from a static buffer through fcr_req_write, so
 * everything the connection costs beyond the binary's own pages is the output queue. */
static char big_src[8 << 20];

typedef struct pump {
    size_t off;
} pump;

static void pump_end(fcr_req *req)
{
    free(fcr_req_userdata(req));
    fcr_req_set_userdata(req, NULL);
    fcr_req_on_drain(req, NULL);
    fcr_req_finish(req, 0);
}

static void pump_run(fcr_req *req)
{
    pump *p = fcr_req_userdata(req);
    while (p->off < sizeof big_src) {
        size_t n = sizeof big_src - p->off < 65536 ? sizeof big_src - p->off : 65536;
        int rc = fcr_req_write(req, big_src + p->off, n);
        if (rc == FCR_EAGAIN) {
            fcr_req_on_drain(req, pump_run);
            return;
        }
        if (rc < 0)
            break;
        p->off += n;
    }
    pump_end(req);
}

static void core_request(fcr_req *req, void *data)
{
    (void)data;
    const char *path = fcr_req_param(req, "SCRIPT_NAME");
    if (path && strcmp(path, "/big") == 0) {
        static const char head[] =
            "Status: 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n";
        pump *p = calloc(1, sizeof *p);
        if (p && fcr_req_write(req, head, sizeof head - 1) == 0) {
            fcr_req_set_userdata(req, p);
            fcr_req_on_abort(req, pump_end);
            pump_run(req);
            return;
        }
        free(p);
    } else if (path && strcmp(path, "/pid") == 0) {
        fcr_req_printf(req, "Status: 200 OK\r\nContent-Type: text/plain\r\n\r\n%ld",
                       (long)getpid());
    } else {
        fcr_req_printf(req, "Status: 200 OK\r\nContent-Type: text/plain\r\n\r\nHello, world!");
    }
    fcr_req_finish(req, 0);
}

/* With `workers` > 1 the server runs in that many worker processes (fcr_server_run_workers). */
static int serve_core(const char *addr, double output_timeout, unsigned workers)
{
    memset(big_src, 'y', sizeof big_src); /* resident from the start */
    fcr_log_set_level(FCR_LOG_WARN);
    struct ev_loop *loop = ev_default_loop(0);
    fcr_server_config cfg;
    fcr_server_config_init(&cfg);
    cfg.on_request = core_request;
    cfg.limits.output_timeout = output_timeout;
    fcr_server *srv = fcr_server_new(loop, &cfg, NULL);
    if (!srv || fcr_server_listen(srv, addr) < 0)
        return 1;
    fcr_server_run_workers(srv, workers, 2.0);
    fcr_server_free(srv);
    ev_loop_destroy(loop);
    return 0;
}

/* ==== Processes ========================================================================== */

static pid_t app_pid = -1;
static char run_dir[64]; /* made by main(), removed with all it holds at the end */
static char tmpdir[96];
static char sock_path[128];
static char app_addr[160];
static char log_path[128];

/* FCREST_LISTEN for the next program start_app starts (it starts them without one). */
static const char *child_listen_env;

static bool under_valgrind(void)
{
    const char *v = getenv("FCR_VALGRIND");
    return v && *v;
}

/* Memory is measured only in plain builds: AddressSanitizer keeps freed memory in quarantine
 * and copies on realloc, valgrind replaces the allocator. */
static bool rss_meaningful(void)
{
#if defined(__SANITIZE_ADDRESS__)
    return false;
#else
    return !under_valgrind();
#endif
}

static double now(void)
{
    return fcl_now();
}

static void sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static const char *build_path(const char *rel)
{
    static char path[4096];
    const char *root = getenv("FCR_BUILD_ROOT");
    ck_assert_msg(root != NULL, "FCR_BUILD_ROOT is not set (run through meson test)");
    snprintf(path, sizeof path, "%s/%s", root, rel);
    return path;
}

static const char *self_exe(void)
{
    static char path[4096];
    ssize_t n = readlink("/proc/self/exe", path, sizeof path - 1);
    ck_assert_int_gt(n, 0);
    path[n] = '\0';
    return path;
}

static void make_dir(void)
{
    snprintf(tmpdir, sizeof tmpdir, "%s/t-XXXXXX", run_dir);
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
    snprintf(sock_path, sizeof sock_path, "%s/app.sock", tmpdir);
    snprintf(app_addr, sizeof app_addr, "unix:%s", sock_path);
    snprintf(log_path, sizeof log_path, "%s/app.log", tmpdir);
}

static bool can_connect(const char *addr)
{
    fcl_conn *c = fcl_connect(addr, 0);
    if (!c)
        return false;
    fcl_close(c);
    return true;
}

/* Starts `prog` with `args` (NULL-terminated) in its own process group, stderr to log_path,
 * and waits until it accepts on `addr` (NULL: does not wait). */
static void start_app(const char *prog, const char *const *args, const char *addr)
{
    const char *argv[64];
    int argc = 0;
    char *vg = NULL;
    if (under_valgrind()) {
        vg = strdup(getenv("FCR_VALGRIND"));
        for (char *t = strtok(vg, " "); t && argc < 40; t = strtok(NULL, " "))
            argv[argc++] = t;
    }
    argv[argc++] = prog;
    for (int i = 0; args[i] && argc < 63; i++)
        argv[argc++] = args[i];
    argv[argc] = NULL;
    pid_t parent = getpid();
    app_pid = fork();
    ck_assert_int_ge(app_pid, 0);
    if (app_pid == 0) {
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        if (fd >= 0)
            dup2(fd, 2);
        int nul = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (nul >= 0) {
            dup2(nul, 0);
            dup2(nul, 1);
        }
        unsetenv("FCREST_LISTEN");
        unsetenv("FCREST_WORKERS");
        if (child_listen_env)
            setenv("FCREST_LISTEN", child_listen_env, 1);
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    free(vg);
    if (!addr) /* the caller waits for the program itself */
        return;
    double deadline = now() + (under_valgrind() ? 60 : 10);
    while (now() < deadline) {
        int st;
        ck_assert_msg(waitpid(app_pid, &st, WNOHANG) == 0, "%s exited at start-up", prog);
        if (can_connect(addr))
            return;
        sleep_s(0.01);
    }
    ck_abort_msg("%s does not accept on %s", prog, addr);
}

/* Waits up to `timeout` seconds for the program to exit; returns its wait status, or -1 when
 * it did not exit (it is then killed). */
static int wait_app(double timeout)
{
    double deadline = now() + timeout;
    int st = 0;
    while (now() < deadline) {
        pid_t w = waitpid(app_pid, &st, WNOHANG);
        if (w == app_pid) {
            app_pid = -1;
            return st;
        }
        sleep_s(0.01);
    }
    kill(-app_pid, SIGKILL);
    waitpid(app_pid, &st, 0);
    app_pid = -1;
    return -1;
}

/* SIGTERM, then a clean exit 0 is required. */
static void stop_app(void)
{
    kill(app_pid, SIGTERM);
    int st = wait_app(under_valgrind() ? 60 : 20);
    ck_assert_msg(st != -1, "the program did not exit after SIGTERM");
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the program did not exit 0 (status %#x)",
                  st);
}

static void setup(void)
{
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 2048 && rl.rlim_max >= 2048) {
        rl.rlim_cur = 2048;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    make_dir();
}

static void teardown(void)
{
    if (app_pid > 0) {
        kill(-app_pid, SIGKILL);
        waitpid(app_pid, NULL, 0);
        app_pid = -1;
    }
    child_listen_env = NULL;
    unsetenv("FCR_RT_STOP_FORKS_AFTER");
    if (getenv("FCR_KEEP_LOGS") == NULL)
        unlink(log_path);
    unlink(sock_path);
    rmdir(tmpdir);
}

/* The log so far (malloc'd, NUL-terminated). */
static char *read_log(void)
{
    FILE *f = fopen(log_path, "r");
    ck_assert_ptr_nonnull(f);
    char *s = NULL;
    size_t cap = 0, len = 0, n;
    char buf[4096];
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
        if (len + n + 1 > cap) {
            cap = (len + n + 1) * 2;
            s = realloc(s, cap);
            ck_assert_ptr_nonnull(s);
        }
        memcpy(s + len, buf, n);
        len += n;
    }
    fclose(f);
    if (!s)
        s = calloc(1, 1);
    s[len] = '\0';
    return s;
}

static int count_in(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p++)
        n++;
    return n;
}

/* Child processes of `parent` (worker pids), sorted; returns how many. */
static int children_of(pid_t parent, pid_t *out, int max)
{
    DIR *d = opendir("/proc");
    ck_assert_ptr_nonnull(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < max) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        if (*end || pid <= 0)
            continue;
        char path[64], line[512];
        snprintf(path, sizeof path, "/proc/%ld/stat", pid);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        size_t len = fread(line, 1, sizeof line - 1, f);
        fclose(f);
        line[len] = '\0';
        const char *rp = strrchr(line, ')');
        char state;
        long ppid;
        if (rp && sscanf(rp + 1, " %c %ld", &state, &ppid) == 2 && ppid == parent && state != 'Z')
            out[n++] = (pid_t)pid;
    }
    closedir(d);
    for (int i = 1; i < n; i++) {
        for (int j = i; j > 0 && out[j - 1] > out[j]; j--) {
            pid_t t = out[j];
            out[j] = out[j - 1];
            out[j - 1] = t;
        }
    }
    return n;
}

static bool contains(const pid_t *set, int n, pid_t p)
{
    for (int i = 0; i < n; i++) {
        if (set[i] == p)
            return true;
    }
    return false;
}

/* Resident set size of `pid` in bytes (VmRSS). */
static double rss_of(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%ld/status", (long)pid);
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    double kb = -1;
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "VmRSS: %lf kB", &kb) == 1)
            break;
    }
    fclose(f);
    ck_assert(kb >= 0);
    return kb * 1024.0;
}

/* Sockets `pid` has open (/proc/PID/fd). */
static int sockets_of(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/fd", (long)pid);
    DIR *d = opendir(path);
    ck_assert_ptr_nonnull(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        char fd[320], target[64];
        snprintf(fd, sizeof fd, "%s/%s", path, e->d_name);
        ssize_t len = readlink(fd, target, sizeof target - 1);
        if (len > 0) {
            target[len] = '\0';
            n += strncmp(target, "socket:", 7) == 0;
        }
    }
    closedir(d);
    return n;
}

/* Waits until a single-process server `pid` has closed every connection: its one socket left
 * is the listener. */
static void wait_connections_closed(pid_t pid)
{
    double deadline = now() + (under_valgrind() ? 60 : 20);
    int n;
    while ((n = sockets_of(pid)) > 1) {
        ck_assert_msg(now() < deadline, "%d connections still open", n - 1);
        sleep_s(0.002);
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* ==== Requests =========================================================================== */

#define P(path)                                                                                    \
    ((const char *const[]){"REQUEST_METHOD", "GET", "SCRIPT_NAME", path, "REQUEST_URI", path,      \
                           "QUERY_STRING", "", "SERVER_PROTOCOL", "HTTP/1.1", NULL})

enum outcome { O_OK, O_REFUSED, O_BROKEN, O_OVERLOADED };

typedef struct result {
    enum outcome outcome;
    int err;         /* errno of a refusal or a broken exchange */
    long pid;        /* pid told on FCGI_STDERR ("worker N"), or 0 */
    char body[64];   /* start of the body */
    char detail[96]; /* what went wrong */
} result;

/* Parses "worker N" out of STDERR bytes. */
static long told_pid(const fcl_buf *err)
{
    long pid = 0;
    if (err->len > 7 && err->len < 64) {
        char s[64];
        memcpy(s, err->data, err->len);
        s[err->len] = '\0';
        if (sscanf(s, "worker %ld", &pid) != 1)
            pid = 0;
    }
    return pid;
}

/* One request on a new connection (KEEP_CONN=0, as Apache sends); the body must be `expect`
 * when it is not NULL. */
static result request(const char *addr, const char *const *params, const char *expect)
{
    result r = {0};
    fcl_conn *c = fcl_connect(addr, 0);
    if (!c) {
        r.err = errno;
        r.outcome = (errno == ENOENT || errno == ECONNREFUSED) ? O_REFUSED : O_BROKEN;
        snprintf(r.detail, sizeof r.detail, "connect: %s", strerror(r.err));
        return r;
    }
    c->timeout = under_valgrind() ? 60 : 15;
    fcl_buf b;
    fcl_buf_init(&b);
    fcl_put_request(&b, 1, FCR_RESPONDER, 0, params, NULL, 0, NULL, 0);
    fcl_response resp;
    fcl_response_init(&resp, 1);
    int rc = fcl_send_buf(c, &b);
    if (rc == 0)
        rc = fcl_await(c, &resp, 1);
    r.pid = told_pid(&resp.err);
    if (rc < 0) {
        r.err = errno;
        r.outcome = O_BROKEN;
        snprintf(r.detail, sizeof r.detail, "exchange: %s after %zu bytes", strerror(r.err),
                 resp.out.len);
    } else if (resp.protocol_status == FCGI_OVERLOADED) {
        r.outcome = O_OVERLOADED;
    } else {
        fcl_cgi cgi;
        if (resp.protocol_status != FCGI_REQUEST_COMPLETE || fcl_cgi_parse(&resp, &cgi) < 0) {
            r.outcome = O_BROKEN;
            snprintf(r.detail, sizeof r.detail, "malformed answer (protocol status %u)",
                     resp.protocol_status);
        } else {
            size_t n = cgi.body_len < sizeof r.body - 1 ? cgi.body_len : sizeof r.body - 1;
            memcpy(r.body, cgi.body, n);
            r.body[n] = '\0';
            bool ok = strstr(cgi.head, "Status: 200") != NULL &&
                      (!expect || (cgi.body_len == strlen(expect) &&
                                   memcmp(cgi.body, expect, cgi.body_len) == 0));
            r.outcome = ok ? O_OK : O_BROKEN;
            if (!ok)
                snprintf(r.detail, sizeof r.detail, "unexpected answer: %.60s", cgi.head);
            fcl_cgi_free(&cgi);
        }
        if (c->violations) {
            r.outcome = O_BROKEN;
            snprintf(r.detail, sizeof r.detail, "framing: %.80s", c->violation);
        }
    }
    fcl_response_free(&resp);
    fcl_buf_free(&b);
    fcl_close(c);
    return r;
}

/* A request that publishes the pid told on STDERR while it is still in flight. */
static result tracked_request(const char *addr, const char *const *params, _Atomic long *pid_slot,
                              _Atomic double *since)
{
    result r = {0};
    atomic_store(pid_slot, 0);
    fcl_conn *c = fcl_connect(addr, 0);
    if (!c) {
        r.err = errno;
        r.outcome = (errno == ENOENT || errno == ECONNREFUSED) ? O_REFUSED : O_BROKEN;
        return r;
    }
    c->timeout = 15;
    fcl_buf b;
    fcl_buf_init(&b);
    fcl_put_request(&b, 1, FCR_RESPONDER, 0, params, NULL, 0, NULL, 0);
    int rc = fcl_send_buf(c, &b);
    bool ended = false, out_done = false;
    uint8_t pstatus = 0;
    fcl_buf out;
    fcl_buf_init(&out);
    while (rc == 0 && !ended) {
        fcl_record rec;
        int got = fcl_read_record(c, &rec);
        if (got <= 0) {
            rc = -1;
            if (got == 0)
                errno = EPIPE;
            break;
        }
        if (rec.h.type == FCGI_STDERR && rec.h.content_len > 0 && r.pid == 0) {
            fcl_buf e = {rec.content, rec.h.content_len, rec.h.content_len};
            r.pid = told_pid(&e);
            atomic_store(since, now());
            atomic_store(pid_slot, r.pid);
        } else if (rec.h.type == FCGI_STDOUT) {
            if (rec.h.content_len == 0)
                out_done = true;
            else
                fcl_buf_add(&out, rec.content, rec.h.content_len);
        } else if (rec.h.type == FCGI_END_REQUEST && rec.h.content_len >= 8) {
            ended = true;
            pstatus = rec.content[4];
        }
        fcl_record_free(&rec);
    }
    atomic_store(pid_slot, 0);
    if (rc < 0) {
        r.err = errno;
        r.outcome = O_BROKEN;
    } else {
        r.outcome = pstatus == FCGI_REQUEST_COMPLETE && out_done && out.len > 0 &&
                            memmem(out.data, out.len, "slow ", 5)
                        ? O_OK
                        : O_BROKEN;
    }
    fcl_buf_free(&out);
    fcl_buf_free(&b);
    fcl_close(c);
    return r;
}

/* ==== Load =============================================================================== */

#define MAX_THREADS 8

typedef struct rec {
    double t0, t1;
    enum outcome outcome;
    long pid;
} rec;

typedef struct load load;

typedef struct worker_arg {
    load *l;
    int idx;
} worker_arg;

struct load {
    const char *addr;
    const char *const *params;
    const char *expect;
    bool tracked;         /* tracked_request: pids published while in flight */
    bool stop_on_refusal; /* a thread ends at its first refusal */
    atomic_bool stop;
    int nthreads;
    pthread_t th[MAX_THREADS];
    _Atomic long inflight_pid[MAX_THREADS];
    _Atomic double inflight_since[MAX_THREADS];
    pthread_mutex_t mu;
    rec *recs;
    size_t nrecs, cap;
    unsigned counts[4];
    char first_broken[128];
    worker_arg args[MAX_THREADS];
};

static void *load_thread(void *arg)
{
    worker_arg *wa = arg;
    load *l = wa->l;
    while (!atomic_load(&l->stop)) {
        double t0 = now();
        result r = l->tracked ? tracked_request(l->addr, l->params, &l->inflight_pid[wa->idx],
                                                &l->inflight_since[wa->idx])
                              : request(l->addr, l->params, l->expect);
        double t1 = now();
        pthread_mutex_lock(&l->mu);
        if (l->nrecs == l->cap) {
            l->cap = l->cap ? l->cap * 2 : 4096;
            l->recs = realloc(l->recs, l->cap * sizeof *l->recs);
            if (!l->recs)
                abort();
        }
        l->recs[l->nrecs++] = (rec){t0, t1, r.outcome, r.pid};
        l->counts[r.outcome]++;
        if (r.outcome == O_BROKEN && !l->first_broken[0])
            snprintf(l->first_broken, sizeof l->first_broken, "%s (errno %d, %.4f s)", r.detail,
                     r.err, t1);
        pthread_mutex_unlock(&l->mu);
        if (r.outcome == O_REFUSED) {
            if (l->stop_on_refusal)
                break;
            sleep_s(0.002);
        }
    }
    return NULL;
}

static void load_start(load *l, int nthreads)
{
    ck_assert_int_le(nthreads, MAX_THREADS);
    l->nthreads = nthreads;
    atomic_store(&l->stop, false);
    pthread_mutex_init(&l->mu, NULL);
    for (int i = 0; i < nthreads; i++) {
        l->args[i] = (worker_arg){l, i};
        ck_assert_int_eq(pthread_create(&l->th[i], NULL, load_thread, &l->args[i]), 0);
    }
}

static void load_join(load *l)
{
    for (int i = 0; i < l->nthreads; i++)
        pthread_join(l->th[i], NULL);
    pthread_mutex_destroy(&l->mu);
}

static void load_stop(load *l)
{
    atomic_store(&l->stop, true);
    load_join(l);
}

static unsigned load_count(load *l, enum outcome o)
{
    pthread_mutex_lock(&l->mu);
    unsigned n = l->counts[o];
    pthread_mutex_unlock(&l->mu);
    return n;
}

/* Waits up to `timeout` seconds until `n` requests succeeded. */
static void load_wait_ok(load *l, unsigned n, double timeout)
{
    double deadline = now() + timeout;
    while (load_count(l, O_OK) < n && now() < deadline)
        sleep_s(0.01);
    ck_assert_msg(load_count(l, O_OK) >= n, "the load got %u answers, wanted %u",
                  load_count(l, O_OK), n);
}

/* ==== SIGTERM ============================================================================ */

static int free_tcp_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sin, sizeof sin), 0);
    socklen_t len = sizeof sin;
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    close(fd);
    return ntohs(sin.sin_port);
}

/* Variants: 0 hello over a unix socket, 1 hello over TCP, 2 slow requests (400 ms) in flight. */
START_TEST(sigterm_loses_no_request)
{
    char addr[160];
    const char *prog;
    const char *const *params = P("/hello");
    const char *const *slow = ((const char *const[]){"REQUEST_METHOD", "GET", "SCRIPT_NAME",
                                                     "/slow", "QUERY_STRING", "ms=400", NULL});
    const char *expect = "Hello, world!";
    if (_i == 1)
        snprintf(addr, sizeof addr, "tcp:127.0.0.1:%d", free_tcp_port());
    else
        snprintf(addr, sizeof addr, "%s", app_addr);
    if (_i == 2) {
        prog = self_exe();
        params = slow;
        expect = NULL;
        const char *args[] = {"--serve-app", "--listen",    addr,   "--workers",
                              "2",           "--log-level", "warn", "--shutdown-timeout",
                              "5",           NULL};
        start_app(prog, args, addr);
    } else {
        prog = build_path("examples/hello");
        const char *args[] = {"--listen", addr, "--workers", "2", "--log-level", "warn", NULL};
        start_app(prog, args, addr);
    }
    load l = {.addr = addr, .params = params, .expect = expect, .stop_on_refusal = true};
    load_start(&l, 4);
    load_wait_ok(&l, _i == 2 ? 8 : 200, 20);
    double mark = now();
    kill(app_pid, SIGTERM);
    /* Every thread goes on until it is refused. */
    load_join(&l);
    int st = wait_app(20);
    double exited = now();
    ck_assert_msg(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
                  "no clean exit after SIGTERM (status %#x)", st);
    unsigned in_flight_done = 0, after = 0;
    for (size_t i = 0; i < l.nrecs; i++) {
        if (l.recs[i].outcome == O_OK && l.recs[i].t0 < mark && l.recs[i].t1 > mark)
            in_flight_done++;
        if (l.recs[i].outcome == O_OK && l.recs[i].t0 > mark)
            after++;
    }
    fprintf(stderr,
            "sigterm[%d]: %u answered (%u in flight at the signal, %u begun after it), %u refused, "
            "%u broken, %u overloaded; exit %.3f s after the signal\n",
            _i, l.counts[O_OK], in_flight_done, after, l.counts[O_REFUSED], l.counts[O_BROKEN],
            l.counts[O_OVERLOADED], exited - mark);
    ck_assert_msg(l.counts[O_BROKEN] == 0, "%u requests broken, first: %s", l.counts[O_BROKEN],
                  l.first_broken);
    ck_assert_uint_eq(l.counts[O_OVERLOADED], 0);
    ck_assert_uint_eq(l.counts[O_REFUSED], 4);
    if (_i == 2)
        ck_assert_msg(in_flight_done >= 1, "no slow request was in flight at the signal");
    /* Nothing is left listening: the socket file is gone, the port refuses. */
    if (_i != 1)
        ck_assert_int_ne(access(sock_path, F_OK), 0);
    errno = 0;
    ck_assert(!can_connect(addr));
    ck_assert(errno == ENOENT || errno == ECONNREFUSED);
    free(l.recs);
}
END_TEST

/* ==== SIGHUP ============================================================================= */

/* Without worker processes there is nothing to restart: SIGHUP (whose default action would end
 * the process and lose the requests in flight) is logged and ignored; the service goes on. */
START_TEST(sighup_single_process)
{
    const char *args[] = {"--listen", app_addr, NULL};
    start_app(build_path("examples/hello"), args, app_addr);
    load l = {.addr = app_addr, .params = P("/hello"), .expect = "Hello, world!"};
    load_start(&l, 2);
    load_wait_ok(&l, 50, 20);
    unsigned before = load_count(&l, O_OK);
    kill(app_pid, SIGHUP);
    load_wait_ok(&l, before + 200, 20);
    load_stop(&l);
    int st;
    ck_assert_msg(waitpid(app_pid, &st, WNOHANG) == 0, "the program ended on SIGHUP");
    ck_assert_msg(l.counts[O_BROKEN] == 0 && l.counts[O_REFUSED] == 0, "%u broken, %u refused: %s",
                  l.counts[O_BROKEN], l.counts[O_REFUSED], l.first_broken);
    char *log = read_log();
    ck_assert_msg(strstr(log, "SIGHUP ignored") != NULL, "no log line for the SIGHUP:\n%s", log);
    free(log);
    free(l.recs);
    stop_app();
}
END_TEST

/* Waits until the log holds `needle` at least `n` times. */
static void wait_log_count(const char *needle, int n, double timeout)
{
    double deadline = now() + timeout;
    for (;;) {
        char *log = read_log();
        int have = count_in(log, needle);
        free(log);
        if (have >= n)
            return;
        ck_assert_msg(now() < deadline, "the log has \"%s\" %d times after %.0f s, wanted %d",
                      needle, have, timeout, n);
        sleep_s(0.005);
    }
}

static int wait_generation(pid_t sup, const pid_t *old, int nold, pid_t *out, int want,
                           double timeout)
{
    double deadline = now() + timeout;
    int n = 0;
    while (now() < deadline) {
        n = children_of(sup, out, 16);
        bool fresh = n == want;
        for (int i = 0; i < n && fresh; i++)
            fresh = !contains(old, nold, out[i]);
        if (fresh)
            return n;
        sleep_s(0.02);
    }
    return -1;
}

/* Variants: 0 examples/hello under fast requests, SIGHUP twice; 1 this binary's app with fast
 * and slow (1.5 s) requests, and the second restart asked twice in a row: the old workers
 * still finish their slow requests, so the second SIGHUP waits for them and then runs. */
START_TEST(sighup_under_load)
{
    if (_i == 0) {
        const char *args[] = {"--listen", app_addr, "--workers", "2", "--log-level", "info", NULL};
        start_app(build_path("examples/hello"), args, app_addr);
    } else {
        const char *args[] = {"--serve-app", "--listen",    app_addr, "--workers",
                              "2",           "--log-level", "info",   NULL};
        start_app(self_exe(), args, app_addr);
    }
    pid_t gen0[16], gen1[16], gen2[16];
    double deadline = now() + 10;
    while (children_of(app_pid, gen0, 16) != 2 && now() < deadline)
        sleep_s(0.01);
    ck_assert_int_eq(children_of(app_pid, gen0, 16), 2);
    load l = {.addr = app_addr, .params = P("/hello"), .expect = "Hello, world!"};
    load ls = {.addr = app_addr,
               .params = ((const char *const[]){"REQUEST_METHOD", "GET", "SCRIPT_NAME", "/slow",
                                                "QUERY_STRING", "ms=1500", NULL}),
               .tracked = true};
    load_start(&l, 3);
    if (_i == 1)
        load_start(&ls, 3);
    load_wait_ok(&l, 200, 20);
    unsigned before = load_count(&l, O_OK);
    kill(app_pid, SIGHUP);
    ck_assert_int_eq(wait_generation(app_pid, gen0, 2, gen1, 2, 15), 2);
    load_wait_ok(&l, load_count(&l, O_OK) + 100, 20);
    if (_i == 1) {
        /* Each slow thread now has a request in flight on a new-generation worker. */
        deadline = now() + 20;
        for (int k = 0; k < ls.nthreads; k++) {
            while (!contains(gen1, 2, (pid_t)atomic_load(&ls.inflight_pid[k])) && now() < deadline)
                sleep_s(0.002);
            ck_assert_msg(now() < deadline, "slow thread %d has no request on a new worker", k);
        }
    }
    kill(app_pid, SIGHUP);
    if (_i == 1) {
        /* A third SIGHUP while the second restart's old workers still finish their slow
         * requests: sent once the second restart has begun (two signals sent at once would be
         * one). */
        wait_log_count("SIGHUP: starting new workers", 2, 20);
        kill(app_pid, SIGHUP);
    }
    int starts = _i == 1 ? 3 : 2;
    char *log = NULL;
    deadline = now() + 20;
    for (;;) {
        free(log);
        log = read_log();
        if (count_in(log, "SIGHUP: starting new workers") >= starts || now() > deadline)
            break;
        sleep_s(0.05);
    }
    ck_assert_int_eq(count_in(log, "SIGHUP: starting new workers"), starts);
    if (_i == 1)
        ck_assert_int_eq(count_in(log, "restarting again after it"), 1);
    free(log);
    ck_assert_int_eq(wait_generation(app_pid, gen1, 2, gen2, 2, 15), 2);
    load_wait_ok(&l, load_count(&l, O_OK) + 100, 20);
    load_stop(&l);
    if (_i == 1)
        load_stop(&ls);
    fprintf(stderr,
            "sighup[%d]: %u fast answered (%u before the first SIGHUP), %u slow answered; %u "
            "refused, %u broken\n",
            _i, l.counts[O_OK], before, ls.counts[O_OK], l.counts[O_REFUSED] + ls.counts[O_REFUSED],
            l.counts[O_BROKEN] + ls.counts[O_BROKEN]);
    ck_assert_msg(l.counts[O_BROKEN] == 0, "%u requests broken, first: %s", l.counts[O_BROKEN],
                  l.first_broken);
    ck_assert_msg(ls.counts[O_BROKEN] == 0, "%u slow requests broken, first: %s",
                  ls.counts[O_BROKEN], ls.first_broken);
    ck_assert_uint_eq(l.counts[O_REFUSED] + ls.counts[O_REFUSED], 0);
    ck_assert_uint_eq(l.counts[O_OVERLOADED] + ls.counts[O_OVERLOADED], 0);
    if (_i == 1)
        ck_assert_uint_ge(ls.counts[O_OK], 6);
    free(l.recs);
    free(ls.recs);
    stop_app();
}
END_TEST

/* ==== SIGKILL of one worker ============================================================== */

START_TEST(sigkill_one_worker)
{
    const char *args[] = {"--serve-app", "--listen",    app_addr, "--workers",
                          "3",           "--log-level", "info",   NULL};
    start_app(self_exe(), args, app_addr);
    pid_t workers[16];
    double deadline = now() + 10;
    while (children_of(app_pid, workers, 16) != 3 && now() < deadline)
        sleep_s(0.01);
    ck_assert_int_eq(children_of(app_pid, workers, 16), 3);
    const char *const *slow = ((const char *const[]){"REQUEST_METHOD", "GET", "SCRIPT_NAME",
                                                     "/slow", "QUERY_STRING", "ms=300", NULL});
    load l = {.addr = app_addr, .params = slow, .tracked = true};
    load_start(&l, 6);
    load_wait_ok(&l, 12, 20);
    /* The victim: a worker holding a request that began less than 100 ms ago. */
    pid_t victim = 0;
    deadline = now() + 10;
    while (!victim && now() < deadline) {
        for (int i = 0; i < l.nthreads && !victim; i++) {
            long p = atomic_load(&l.inflight_pid[i]);
            if (p && now() - atomic_load(&l.inflight_since[i]) < 0.1 && contains(workers, 3, p))
                victim = (pid_t)p;
        }
        if (!victim)
            sleep_s(0.005);
    }
    ck_assert_int_gt(victim, 0);
    double mark = now();
    kill(victim, SIGKILL);
    /* A replacement answers within a second of the kill. */
    double served = -1;
    pid_t replacement = 0;
    while (now() - mark < 3 && served < 0) {
        result r = request(app_addr, P("/pid"), NULL);
        long p = atol(r.body);
        if (r.outcome == O_OK && p > 0 && !contains(workers, 3, (pid_t)p)) {
            replacement = (pid_t)p;
            served = now() - mark;
        }
    }
    /* The load goes on: the other workers and the replacement answer. */
    load_wait_ok(&l, load_count(&l, O_OK) + 12, 20);
    load_stop(&l);
    unsigned failed = 0, others = 0, victims_done = 0;
    for (size_t i = 0; i < l.nrecs; i++) {
        const rec *r = &l.recs[i];
        if (r->outcome != O_OK) {
            failed++;
            ck_assert_msg(r->pid == victim || r->pid == 0,
                          "a request on worker %ld failed (victim %ld)", r->pid, (long)victim);
            ck_assert_msg(r->t0 <= mark && r->t1 < mark + 1.0,
                          "a request failed that began %.3f s and ended %.3f s after the kill",
                          r->t0 - mark, r->t1 - mark);
        } else if (r->pid != victim) {
            others++;
        } else {
            victims_done++;
        }
    }
    fprintf(stderr,
            "sigkill: victim %ld, %u failed (all on it), %u answered by the others, %u by it "
            "before the kill; replacement %ld served %.3f s after the kill\n",
            (long)victim, failed, others, victims_done, (long)replacement, served);
    ck_assert_msg(failed >= 1 && failed <= 6, "%u requests failed", failed);
    ck_assert_msg(served >= 0, "no replacement worker answered within 3 s");
    if (!under_valgrind())
        ck_assert_msg(served <= 1.0, "the replacement answered %.3f s after the kill", served);
    /* The other workers are the same processes. */
    pid_t now_workers[16];
    int n = children_of(app_pid, now_workers, 16);
    ck_assert_int_eq(n, 3);
    for (int i = 0; i < 3; i++) {
        if (workers[i] != victim)
            ck_assert(contains(now_workers, n, workers[i]));
    }
    ck_assert(contains(now_workers, n, replacement));
    char *log = read_log();
    char want[96];
    snprintf(want, sizeof want, "worker %ld killed by signal 9", (long)victim);
    ck_assert_msg(strstr(log, want) != NULL, "the supervisor did not log '%s'", want);
    free(log);
    free(l.recs);
    stop_app();
}
END_TEST

/* ==== Trickling clients ================================================================== */

#define TRICKLERS 200

typedef struct trickle {
    int fd[TRICKLERS];
    fcl_buf req[TRICKLERS];
    size_t sent[TRICKLERS];
    double first_byte[TRICKLERS];
    double closed[TRICKLERS];
    atomic_int rounds; /* rounds of one byte to each connection done */
    atomic_bool stop;
} trickle;

/* Sends one more byte to each open connection once a second; notes when each is closed. */
static void *trickle_thread(void *arg)
{
    trickle *t = arg;
    double next = now();
    while (!atomic_load(&t->stop)) {
        int open = 0;
        bool send_now = now() >= next;
        for (int i = 0; i < TRICKLERS; i++) {
            if (t->closed[i] > 0)
                continue;
            char b[64];
            ssize_t n = recv(t->fd[i], b, sizeof b, MSG_DONTWAIT);
            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
                t->closed[i] = now();
                continue;
            }
            if (send_now && t->sent[i] < t->req[i].len) {
                ssize_t w = send(t->fd[i], t->req[i].data + t->sent[i], 1, MSG_NOSIGNAL);
                if (w == 1) {
                    if (t->first_byte[i] == 0)
                        t->first_byte[i] = now();
                    t->sent[i]++;
                } else if (w < 0 && errno != EAGAIN) {
                    t->closed[i] = now();
                    continue;
                }
            }
            open++;
        }
        if (send_now) {
            next += 1.0;
            atomic_fetch_add(&t->rounds, 1);
        }
        if (open == 0)
            break;
        sleep_s(0.02);
    }
    return NULL;
}

static double request_latency(const char *addr)
{
    double t0 = now();
    result r = request(addr, P("/hello"), "Hello, world!");
    ck_assert_msg(r.outcome == O_OK, "a normal request failed: %s", r.detail);
    return now() - t0;
}

START_TEST(trickling_clients)
{
    const double input_timeout = 3.0;
    const char *args[] = {"--listen", app_addr, "--input-timeout", "3", "--log-level",
                          "warn",     NULL};
    start_app(build_path("examples/hello"), args, app_addr);
    enum { SAMPLES = 15 };
    double base[SAMPLES], loaded[SAMPLES];
    for (int i = 0; i < SAMPLES; i++)
        base[i] = request_latency(app_addr);
    static trickle t;
    memset(&t, 0, sizeof t);
    for (int i = 0; i < TRICKLERS; i++) {
        fcl_conn *c = fcl_connect(app_addr, 0);
        ck_assert_ptr_nonnull(c);
        t.fd[i] = dup(c->fd);
        fcl_close(c);
        ck_assert_int_ge(t.fd[i], 0);
        fcl_buf_init(&t.req[i]);
        fcl_put_request(&t.req[i], 1, FCR_RESPONDER, 0, P("/hello"), NULL, 0, NULL, 0);
        /* Half begin with a whole BEGIN_REQUEST, then trickle PARAMS; half trickle from the
         * first header byte on. */
        if (i % 2) {
            ck_assert_int_eq(send(t.fd[i], t.req[i].data, 16, MSG_NOSIGNAL), 16);
            t.sent[i] = 16;
            t.first_byte[i] = now();
        }
    }
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, trickle_thread, &t), 0);
    /* Every connection is part-way through a request once two bytes went to each. */
    double deadline = now() + 20;
    while (atomic_load(&t.rounds) < 2 && now() < deadline)
        sleep_s(0.01);
    ck_assert_int_ge(atomic_load(&t.rounds), 2);
    for (int i = 0; i < SAMPLES; i++)
        loaded[i] = request_latency(app_addr);
    double m0 = median(base, SAMPLES), m1 = median(loaded, SAMPLES);
    /* All should be closed by the input timeout plus the once-a-second sweep. */
    deadline = now() + input_timeout + 4;
    bool all = false;
    while (!all && now() < deadline) {
        sleep_s(0.1);
        all = true;
        for (int i = 0; i < TRICKLERS && all; i++)
            all = t.closed[i] > 0;
    }
    atomic_store(&t.stop, true);
    pthread_join(th, NULL);
    double lo = 1e9, hi = 0;
    int open = 0;
    for (int i = 0; i < TRICKLERS; i++) {
        if (t.closed[i] == 0) {
            open++;
        } else {
            double d = t.closed[i] - t.first_byte[i];
            lo = d < lo ? d : lo;
            hi = d > hi ? d : hi;
        }
        close(t.fd[i]);
        fcl_buf_free(&t.req[i]);
    }
    fprintf(stderr,
            "trickle: median latency %.3f ms alone, %.3f ms beside %d trickling connections; "
            "closed %.2f..%.2f s after their first byte (input timeout %.0f s)\n",
            m0 * 1e3, m1 * 1e3, TRICKLERS, lo, hi, input_timeout);
    ck_assert_msg(open == 0, "%d trickling connections still open", open);
    if (!under_valgrind()) {
        /* The bound: 100 ms. */
        ck_assert_msg(m1 - m0 <= 0.100, "trickling clients delayed a request by %.1f ms",
                      (m1 - m0) * 1e3);
        /* The sweep runs once a second: closed between the timeout and a second after it,
         * with 1.5 s more for a busy machine. */
        ck_assert_msg(lo >= input_timeout - 0.1, "closed %.2f s after the first byte", lo);
        ck_assert_msg(hi <= input_timeout + 1.0 + 1.5, "closed %.2f s after the first byte", hi);
    }
    ck_assert_double_lt(request_latency(app_addr), 5.0);
    stop_app();
}
END_TEST

/* ==== A client that never reads ========================================================== */

/* Variants: 0 the core-only server streaming 8 MiB through its output queue (what the
 * connection costs is the queue: at most the 1 MiB cap); 1 the app answering an 8 MiB body
 * (the body is the handler's; the connection adds at most the cap, and everything is freed
 * when the stalled connection is closed). */
START_TEST(stalled_reader_costs_at_most_the_output_cap_and_is_closed)
{
    const double output_timeout = 2.0;
    const double cap = 1 * MIB; /* the default max_output_queue */
    if (_i == 0) {
        const char *args[] = {"--serve-core", app_addr, "2", NULL};
        start_app(self_exe(), args, app_addr);
    } else {
        const char *args[] = {"--serve-app", "--listen",    app_addr, "--output-timeout",
                              "2",           "--log-level", "warn",   NULL};
        start_app(self_exe(), args, app_addr);
    }
    const char *const *big = _i == 0
                                 ? P("/big")
                                 : ((const char *const[]){"REQUEST_METHOD", "GET", "SCRIPT_NAME",
                                                          "/big", "QUERY_STRING", "mb=8", NULL});
    /* Small answers first, so that the baseline holds the allocator's usual working set (not
     * a large answer's: that would hide what the stalled one costs). */
    for (int k = 0; k < 20; k++)
        request_latency(app_addr);
    wait_connections_closed(app_pid);
    double rss0 = rss_of(app_pid);
    fcl_conn *c = fcl_connect(app_addr, 4096);
    ck_assert_ptr_nonnull(c);
    fcl_buf b;
    fcl_buf_init(&b);
    fcl_put_request(&b, 1, FCR_RESPONDER, 0, big, NULL, 0, NULL, 0);
    double asked = now();
    ck_assert_int_eq(fcl_send_buf(c, &b), 0);
    fcl_buf_free(&b);
    /* Never read; watch the server's memory until the connection is closed. */
    double peak = rss0, closed = 0;
    bool other_ok = false;
    while (now() - asked < output_timeout + 6) {
        double r = rss_of(app_pid);
        peak = r > peak ? r : peak;
        if (!other_ok && now() - asked > 0.5) {
            /* A stalled peer stalls only its own connection. */
            result o = request(app_addr, P("/hello"), "Hello, world!");
            ck_assert_msg(o.outcome == O_OK, "another client was not served: %s", o.detail);
            other_ok = true;
        }
        struct pollfd pfd = {c->fd, POLLRDHUP, 0};
        if (poll(&pfd, 1, 50) > 0 && (pfd.revents & (POLLHUP | POLLRDHUP | POLLERR))) {
            closed = now();
            break;
        }
    }
    fcl_close(c);
    wait_connections_closed(app_pid);
    double after = rss_of(app_pid);
    /* The whole answer reaches a client that reads. */
    c = fcl_connect(app_addr, 0);
    ck_assert_ptr_nonnull(c);
    fcl_response whole;
    ck_assert_int_eq(fcl_request(c, 1, FCR_RESPONDER, 0, big, NULL, 0, &whole), 0);
    ck_assert_uint_gt(whole.out.len, 8u << 20);
    fcl_response_free(&whole);
    fcl_close(c);
    fprintf(stderr,
            "stalled[%d]: RSS %.2f MiB before, peak +%.2f MiB, +%.2f MiB after the close; "
            "closed %.2f s after the request (output timeout %.0f s)\n",
            _i, rss0 / MIB, (peak - rss0) / MIB, (after - rss0) / MIB,
            closed > 0 ? closed - asked : -1.0, output_timeout);
    ck_assert_msg(closed > 0, "the stalled connection was not closed");
    ck_assert(other_ok);
    /* Margin over the cap: 1 MiB for the allocator, one 64 KiB write past the cap, and the
     * record headers. */
    double body = _i == 0 ? 0 : 8 * MIB;
    if (rss_meaningful()) {
        ck_assert_msg(peak - rss0 <= body + cap + 1 * MIB,
                      "the stalled client cost %.2f MiB (cap %.0f MiB, body %.0f MiB)",
                      (peak - rss0) / MIB, cap / MIB, body / MIB);
        if (_i == 1)
            ck_assert_msg(after - rss0 <= 1 * MIB, "%.2f MiB stayed after the close",
                          (after - rss0) / MIB);
    }
    if (!under_valgrind()) {
        /* Closed once the output made no progress for the timeout: the socket buffers fill
         * at once, the sweep runs every second; 1.5 s more for a busy machine. */
        ck_assert_msg(closed - asked >= output_timeout - 0.1, "closed after %.2f s",
                      closed - asked);
        ck_assert_msg(closed - asked <= output_timeout + 1.0 + 1.5, "closed after %.2f s",
                      closed - asked);
    }
    stop_app();
}
END_TEST

/* ==== BEGIN floods ======================================================================= */

#define FLOOD_CONNS 140
#define FLOOD_IDS   40
#define PER_CONN    32   /* default max_reqs_per_conn */
#define PER_WORKER  4096 /* default max_reqs */

typedef struct flood_stats {
    unsigned accepted, overloaded, max_accepted_per_conn, min_overloaded_per_conn;
} flood_stats;

static void flood(int *fds, flood_stats *fs)
{
    fcl_conn *cs[FLOOD_CONNS];
    unsigned over[FLOOD_CONNS] = {0};
    for (int i = 0; i < FLOOD_CONNS; i++) {
        cs[i] = fcl_connect(app_addr, 0);
        ck_assert_ptr_nonnull(cs[i]);
        cs[i]->timeout = 5;
        fcl_buf b;
        fcl_buf_init(&b);
        for (uint16_t id = 1; id <= FLOOD_IDS; id++)
            fcl_put_begin(&b, id, FCR_RESPONDER, FCGI_KEEP_CONN);
        ck_assert_int_eq(fcl_send_buf(cs[i], &b), 0);
        fcl_buf_free(&b);
    }
    const unsigned expected = FLOOD_CONNS * FLOOD_IDS - PER_WORKER;
    unsigned total = 0;
    double deadline = now() + 20;
    struct pollfd pfds[FLOOD_CONNS];
    while (total < expected && now() < deadline) {
        for (int i = 0; i < FLOOD_CONNS; i++)
            pfds[i] = (struct pollfd){cs[i]->fd, POLLIN, 0};
        poll(pfds, FLOOD_CONNS, 100);
        for (int i = 0; i < FLOOD_CONNS; i++) {
            fcl_record r;
            if (!(pfds[i].revents & POLLIN))
                continue;
            cs[i]->timeout = 0.001;
            while (fcl_read_record(cs[i], &r) == 1) {
                ck_assert_int_eq(r.h.type, FCGI_END_REQUEST);
                ck_assert_int_eq(r.content[4], FCGI_OVERLOADED);
                over[i]++;
                total++;
                fcl_record_free(&r);
            }
        }
    }
    /* Nothing more comes: a GET_VALUES sent after the BEGINs is answered after every answer
     * to them. */
    fcl_buf q, gv;
    fcl_buf_init(&q);
    fcl_buf_init(&gv);
    fcl_nv_adds(&q, "FCGI_MPXS_CONNS", "");
    fcl_put_record(&gv, FCGI_GET_VALUES, 0, q.data, q.len, 0);
    for (int i = 0; i < FLOOD_CONNS; i++) {
        ck_assert_int_eq(fcl_send_buf(cs[i], &gv), 0);
        cs[i]->timeout = 20;
        fcl_record r;
        for (;;) {
            ck_assert_int_eq(fcl_read_record(cs[i], &r), 1);
            if (r.h.type == FCGI_GET_VALUES_RESULT) {
                fcl_record_free(&r);
                break;
            }
            ck_assert_int_eq(r.h.type, FCGI_END_REQUEST);
            ck_assert_int_eq(r.content[4], FCGI_OVERLOADED);
            over[i]++;
            total++;
            fcl_record_free(&r);
        }
    }
    fcl_buf_free(&q);
    fcl_buf_free(&gv);
    memset(fs, 0, sizeof *fs);
    fs->min_overloaded_per_conn = FLOOD_IDS;
    for (int i = 0; i < FLOOD_CONNS; i++) {
        unsigned acc = FLOOD_IDS - over[i];
        fs->accepted += acc;
        fs->overloaded += over[i];
        fs->max_accepted_per_conn =
            acc > fs->max_accepted_per_conn ? acc : fs->max_accepted_per_conn;
        fs->min_overloaded_per_conn =
            over[i] < fs->min_overloaded_per_conn ? over[i] : fs->min_overloaded_per_conn;
        fds[i] = dup(cs[i]->fd);
        fcl_close(cs[i]);
    }
}

START_TEST(begin_flood_is_capped_and_memory_stays_flat)
{
    const char *args[] = {"--listen", app_addr, "--log-level", "error", NULL};
    start_app(build_path("examples/hello"), args, app_addr);
    for (int i = 0; i < 50; i++)
        request_latency(app_addr);
    wait_connections_closed(app_pid);
    double rss0 = rss_of(app_pid), rss[2], peak[2];
    for (int round = 0; round < 2; round++) {
        int fds[FLOOD_CONNS];
        flood_stats fs;
        flood(fds, &fs);
        peak[round] = rss_of(app_pid);
        /* The worker is full: a newcomer is told OVERLOADED, not queued up. */
        result r = request(app_addr, P("/hello"), NULL);
        ck_assert_msg(r.outcome == O_OVERLOADED, "a request beyond the worker cap got outcome %d",
                      r.outcome);
        fprintf(stderr,
                "flood[%d]: %u begun, %u OVERLOADED; at most %u per connection, at least %u "
                "refused on each\n",
                round, fs.accepted, fs.overloaded, fs.max_accepted_per_conn,
                fs.min_overloaded_per_conn);
        ck_assert_uint_eq(fs.accepted, PER_WORKER);
        ck_assert_uint_le(fs.max_accepted_per_conn, PER_CONN);
        ck_assert_uint_ge(fs.min_overloaded_per_conn, FLOOD_IDS - PER_CONN);
        for (int i = 0; i < FLOOD_CONNS; i++)
            close(fds[i]);
        /* Served again once the flood's connections are gone. */
        double deadline = now() + 5;
        do {
            r = request(app_addr, P("/hello"), "Hello, world!");
        } while (r.outcome != O_OK && now() < deadline && (sleep_s(0.02), true));
        ck_assert_msg(r.outcome == O_OK, "not served after the flood");
        wait_connections_closed(app_pid);
        rss[round] = rss_of(app_pid);
    }
    fprintf(stderr,
            "flood: RSS %.2f MiB before, peak +%.2f MiB, +%.2f MiB after the first flood, "
            "+%.2f MiB after the second\n",
            rss0 / MIB, (peak[0] - rss0) / MIB, (rss[0] - rss0) / MIB, (rss[1] - rss0) / MIB);
    /* Tolerance: 2 MiB over the start after a flood (freed memory the allocator keeps for
     * reuse), and a second flood reuses it: at most 0.5 MiB more. */
    if (rss_meaningful()) {
        ck_assert_msg(rss[0] - rss0 <= 2 * MIB, "RSS grew by %.2f MiB", (rss[0] - rss0) / MIB);
        ck_assert_msg(rss[1] - rss[0] <= 0.5 * MIB, "a second flood grew RSS by %.2f MiB",
                      (rss[1] - rss[0]) / MIB);
    }
    stop_app();
}
END_TEST

/* ==== Logging and options ================================================================ */

/* Variants: 0 --access-log, 1 FCREST_ACCESS_LOG=1, 2 --access-log with --log-level warn (no
 * access lines). */
START_TEST(access_log)
{
    if (_i == 1)
        setenv("FCREST_ACCESS_LOG", "1", 1);
    const char *args0[] = {"--listen", app_addr, "--access-log", NULL};
    const char *args1[] = {"--listen", app_addr, NULL};
    const char *args2[] = {"--listen", app_addr, "--access-log", "--log-level", "warn", NULL};
    start_app(build_path("examples/hello"), _i == 0 ? args0 : _i == 1 ? args1 : args2, app_addr);
    unsetenv("FCREST_ACCESS_LOG");
    result r = request(app_addr, P("/hello"), "Hello, world!");
    ck_assert_int_eq(r.outcome, O_OK);
    const char *const with_id[] = {"REQUEST_METHOD", "POST",      "SCRIPT_NAME", "/he llo\"x",
                                   "UNIQUE_ID",      "Zx8-abc_1", NULL};
    fcl_conn *c = fcl_connect(app_addr, 0);
    ck_assert_ptr_nonnull(c);
    fcl_response resp;
    ck_assert_int_eq(fcl_request(c, 1, FCR_RESPONDER, 0, with_id, NULL, 0, &resp), 0);
    fcl_response_free(&resp);
    fcl_close(c);
    stop_app();
    char *log = read_log();
    if (_i == 2) {
        ck_assert_msg(strstr(log, "access ") == NULL, "access line at --log-level warn: %s", log);
        free(log);
        return;
    }
    /* "access method=GET path=/hello status=200 bytes=13 ms=0.123 id=PID-1" */
    const char *a = strstr(log, "info: access method=GET path=/hello status=200 bytes=13 ms=");
    ck_assert_msg(a != NULL, "no access line for GET /hello in: %s", log);
    double ms;
    long pid, seq;
    ck_assert_int_eq(sscanf(strstr(a, "ms="), "ms=%lf id=%ld-%ld", &ms, &pid, &seq), 3);
    ck_assert(ms >= 0 && ms < 5000);
    ck_assert_int_gt(pid, 0);
    ck_assert_int_ge(seq, 1);
    const char *b = strstr(log, "access method=POST path=/he\\x20llo\\x22x status=404 bytes=");
    ck_assert_msg(b != NULL, "no escaped access line for the 404 in: %s", log);
    const char *eol = strchr(b, '\n');
    ck_assert_ptr_nonnull(eol);
    ck_assert(memmem(b, (size_t)(eol - b + 1), " id=Zx8-abc_1\n", 14) != NULL);
    free(log);
}
END_TEST

/* examples/hello started with `opt value` must refuse to start: exit status 1. */
static void assert_refused(const char *opt, const char *value)
{
    pid_t p = fork();
    ck_assert_int_ge(p, 0);
    if (p == 0) {
        int nul = open("/dev/null", O_WRONLY);
        dup2(nul, 1);
        dup2(nul, 2);
        execl(build_path("examples/hello"), "hello", "--listen", app_addr, opt, value,
              (char *)NULL);
        _exit(127);
    }
    int st;
    ck_assert_int_eq(waitpid(p, &st, 0), p);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 1, "%s %s accepted", opt, value);
}

START_TEST(timeout_options)
{
    /* Bad values are refused at start with a message. */
    static const char *const bad[][2] = {{"--input-timeout", "0"},
                                         {"--idle-timeout", "abc"},
                                         {"--output-timeout", "-1"},
                                         {"--shutdown-timeout", "x"},
                                         {"--input-timeout", "86401"}};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++)
        assert_refused(bad[k][0], bad[k][1]);
    /* An idle connection is closed after --idle-timeout (from the environment here). */
    setenv("FCREST_IDLE_TIMEOUT", "1.5", 1);
    const char *args[] = {"--listen", app_addr, "--log-level", "warn", NULL};
    start_app(build_path("examples/hello"), args, app_addr);
    unsetenv("FCREST_IDLE_TIMEOUT");
    fcl_conn *c = fcl_connect(app_addr, 0);
    ck_assert_ptr_nonnull(c);
    double t0 = now();
    ck_assert_int_eq(fcl_wait_eof(c, 10), 0);
    double d = now() - t0;
    fcl_close(c);
    fprintf(stderr, "idle: closed after %.2f s (idle timeout 1.5 s)\n", d);
    if (!under_valgrind())
        ck_assert_msg(d >= 1.4 && d <= 1.5 + 1.0 + 1.5, "closed after %.2f s", d);
    stop_app();
}
END_TEST

/* The value of `name` in a GET_VALUES_RESULT record's content, copied into `out`. */
static bool nv_value(const uint8_t *p, size_t n, const char *name, char *out, size_t cap)
{
    size_t off = 0;
    while (off + 2 <= n && p[off] < 128 && p[off + 1] < 128) {
        size_t nl = p[off], vl = p[off + 1];
        off += 2;
        if (off + nl + vl > n)
            break;
        if (nl == strlen(name) && memcmp(p + off, name, nl) == 0 && vl < cap) {
            memcpy(out, p + off + nl, vl);
            out[vl] = '\0';
            return true;
        }
        off += nl + vl;
    }
    return false;
}

/* The core limits fcr_app_run takes from the command line and the environment. */
START_TEST(limit_options)
{
    static const char *const bad[][2] = {{"--max-conns", "0"},
                                         {"--max-requests", "x"},
                                         {"--max-requests-per-conn", "65536"},
                                         {"--max-output-queue", "1k"},
                                         {"--max-conns", "1000001"}};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++)
        assert_refused(bad[k][0], bad[k][1]);
    setenv("FCREST_MAX_REQUESTS", "9", 1);
    const char *args[] = {
        "--listen",           app_addr, "--max-conns", "7", "--max-requests-per-conn", "1",
        "--max-output-queue", "2m",     NULL};
    start_app(build_path("examples/hello"), args, app_addr);
    unsetenv("FCREST_MAX_REQUESTS");
    fcl_conn *c = fcl_connect(app_addr, 0);
    ck_assert_ptr_nonnull(c);
    /* GET_VALUES reports the limits in force. */
    fcl_buf q, b;
    fcl_buf_init(&q);
    fcl_buf_init(&b);
    fcl_nv_adds(&q, "FCGI_MAX_CONNS", "");
    fcl_nv_adds(&q, "FCGI_MAX_REQS", "");
    fcl_put_record(&b, FCGI_GET_VALUES, 0, q.data, q.len, 0);
    ck_assert_int_eq(fcl_send_buf(c, &b), 0);
    fcl_record rec;
    ck_assert_int_eq(fcl_read_record(c, &rec), 1);
    ck_assert_uint_eq(rec.h.type, FCGI_GET_VALUES_RESULT);
    char v[32];
    ck_assert(nv_value(rec.content, rec.h.content_len, "FCGI_MAX_CONNS", v, sizeof v));
    ck_assert_str_eq(v, "7");
    ck_assert(nv_value(rec.content, rec.h.content_len, "FCGI_MAX_REQS", v, sizeof v));
    ck_assert_str_eq(v, "9");
    fcl_record_free(&rec);
    /* One request in progress per connection: a second one is answered OVERLOADED. */
    fcl_buf_clear(&b);
    fcl_put_begin(&b, 1, 1, 1);
    fcl_put_begin(&b, 2, 1, 1);
    ck_assert_int_eq(fcl_send_buf(c, &b), 0);
    ck_assert_int_eq(fcl_read_record(c, &rec), 1);
    ck_assert_uint_eq(rec.h.type, FCGI_END_REQUEST);
    ck_assert_uint_eq(rec.h.id, 2);
    ck_assert_uint_eq(rec.content[4], FCGI_OVERLOADED);
    fcl_record_free(&rec);
    fcl_buf_free(&q);
    fcl_buf_free(&b);
    fcl_close(c);
    stop_app();
}
END_TEST

/* The param limits fcr_app_run takes from the command line and the environment: a 40 KiB
 * header value (a large Authorization or Cookie header) is refused 431 with the defaults and
 * served after raising them. */
static result big_header_request(void)
{
    static char big[40 * 1024 + 1];
    memset(big, 'x', sizeof big - 1);
    const char *const params[] = {"REQUEST_METHOD",     "GET", "SCRIPT_NAME", "/hello",
                                  "HTTP_AUTHORIZATION", big,   NULL};
    return request(app_addr, params, "Hello, world!");
}

START_TEST(param_limit_options)
{
    static const char *const bad[][2] = {
        {"--max-param-name", "0"},   {"--max-param-value", "x"},
        {"--max-params-bytes", "0"}, {"--max-params", "0"},
        {"--max-params", "1000001"}, {"--max-param-value", "64k"}, /* not below the total */
        {"--max-param-name", "1m"}};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++)
        assert_refused(bad[k][0], bad[k][1]);
    const char *args0[] = {"--listen", app_addr, "--log-level", "error", NULL};
    start_app(build_path("examples/hello"), args0, app_addr);
    result r = big_header_request();
    ck_assert_int_eq(r.outcome, O_BROKEN);
    ck_assert_msg(strstr(r.detail, "Status: 431") != NULL, "%s", r.detail);
    stop_app();
    const char *args1[] = {"--listen", app_addr, "--max-param-value", "48k", NULL};
    start_app(build_path("examples/hello"), args1, app_addr);
    r = big_header_request();
    ck_assert_msg(r.outcome == O_OK, "%s", r.detail);
    stop_app();
    setenv("FCREST_MAX_PARAM_VALUE", "64k", 1);
    setenv("FCREST_MAX_PARAMS_BYTES", "128k", 1);
    setenv("FCREST_MAX_PARAM_NAME", "256", 1);
    setenv("FCREST_MAX_PARAMS", "16", 1);
    const char *args2[] = {"--listen", app_addr, NULL};
    start_app(build_path("examples/hello"), args2, app_addr);
    unsetenv("FCREST_MAX_PARAM_VALUE");
    unsetenv("FCREST_MAX_PARAMS_BYTES");
    unsetenv("FCREST_MAX_PARAM_NAME");
    unsetenv("FCREST_MAX_PARAMS");
    r = big_header_request();
    ck_assert_msg(r.outcome == O_OK, "%s", r.detail);
    stop_app();
}
END_TEST

/* ==== The supervisor ===================================================================== */

/* The pid that answers GET /pid, or 0 when the request failed. */
static pid_t answering_pid(const char *addr)
{
    result r = request(addr, P("/pid"), NULL);
    return r.outcome == O_OK ? (pid_t)atol(r.body) : 0;
}

/* The pid that answers GET /pid within `timeout` seconds, or 0. */
static pid_t pid_within(const char *addr, double timeout)
{
    fcl_conn *c = fcl_connect(addr, 0);
    if (!c)
        return 0;
    c->timeout = timeout;
    fcl_response r;
    fcl_response_init(&r, 1);
    pid_t pid = 0;
    if (fcl_request(c, 1, FCR_RESPONDER, 0, P("/pid"), NULL, 0, &r) == 0) {
        fcl_cgi cgi;
        if (fcl_cgi_parse(&r, &cgi) == 0) {
            char s[32] = "";
            memcpy(s, cgi.body, cgi.body_len < sizeof s - 1 ? cgi.body_len : sizeof s - 1);
            pid = (pid_t)atol(s);
            fcl_cgi_free(&cgi);
        }
    }
    fcl_response_free(&r);
    fcl_close(c);
    return pid;
}

/* Waits until the supervisor has `n` live children; returns them in `out` (sorted). */
static void wait_children(pid_t sup, int n, pid_t *out, double timeout)
{
    double deadline = now() + timeout;
    while (children_of(sup, out, 16) != n && now() < deadline)
        sleep_s(0.005);
    ck_assert_int_eq(children_of(sup, out, 16), n);
}

/* fcr_server_run_workers on the core API: a worker killed with SIGKILL is replaced by a new
 * process that answers. */
START_TEST(core_workers_replace_a_worker_killed_with_sigkill)
{
    const char *args[] = {"--serve-core", app_addr, "30", "2", NULL};
    start_app(self_exe(), args, app_addr);
    pid_t workers[16], after[16];
    wait_children(app_pid, 2, workers, 10);
    pid_t first = answering_pid(app_addr);
    ck_assert_msg(contains(workers, 2, first), "pid %ld answered, not a worker", (long)first);
    ck_assert_int_eq(kill(first, SIGKILL), 0);
    /* A new pid answers; the other worker is the same process. */
    double deadline = now() + (under_valgrind() ? 60 : 10);
    pid_t fresh = 0;
    while (!fresh && now() < deadline) {
        pid_t p = answering_pid(app_addr);
        if (p > 0 && !contains(workers, 2, p))
            fresh = p;
    }
    ck_assert_msg(fresh > 0, "no new worker answered after the kill");
    wait_children(app_pid, 2, after, 10);
    ck_assert(contains(after, 2, fresh));
    ck_assert(contains(after, 2, workers[0] == first ? workers[1] : workers[0]));
    char *log = read_log();
    char want[96];
    snprintf(want, sizeof want, "worker %ld killed by signal 9", (long)first);
    ck_assert_msg(strstr(log, want) != NULL, "the supervisor did not log '%s':\n%s", want, log);
    free(log);
    stop_app();
}
END_TEST

/* SIGHUP starts new workers and retires the old ones once every new one reports that it
 * accepts, or after 5 s. Here the new workers stop themselves right after the fork (before
 * they can report): the old ones serve alone until the supervisor gives up waiting, about 5 s
 * after the signal, logs it and retires them; requests that arrive meanwhile wait in the
 * listening socket's queue and are answered once the new workers go on (SIGCONT). */
START_TEST(restart_retires_the_old_workers_5_s_after_new_ones_fail_to_report)
{
    setenv("FCR_RT_STOP_FORKS_AFTER", "2", 1);
    const char *args[] = {"--serve-app", "--listen",    app_addr, "--workers",
                          "2",           "--log-level", "info",   NULL};
    start_app(self_exe(), args, app_addr);
    pid_t gen0[16], all[16], gen1[16];
    wait_children(app_pid, 2, gen0, 10);
    double hup = now();
    kill(app_pid, SIGHUP);
    wait_children(app_pid, 4, all, 10);
    int n1 = 0;
    for (int i = 0; i < 4; i++) {
        if (!contains(gen0, 2, all[i]))
            gen1[n1++] = all[i];
    }
    ck_assert_int_eq(n1, 2);
    /* While the supervisor waits, the old workers answer every request. Once it gave up
     * waiting, they stop accepting: a request that got no answer within a second must have
     * come after the log line. */
    static const char gave_up_line[] = "new workers not ready after 5 s: retiring the old ones";
    unsigned served = 0;
    char *log = NULL;
    for (;;) {
        pid_t p = pid_within(app_addr, under_valgrind() ? 10 : 1);
        free(log);
        log = read_log();
        bool done = strstr(log, gave_up_line) != NULL;
        if (p == 0 && done)
            break;
        ck_assert_msg(contains(gen0, 2, p), "pid %ld answered during the wait", (long)p);
        served++;
        if (done)
            break;
        ck_assert_msg(now() - hup < 20, "no ready timeout 20 s after SIGHUP:\n%s", log);
        sleep_s(0.05);
    }
    double gave_up = now() - hup;
    free(log);
    ck_assert_msg(gave_up >= 4.9, "the old workers were retired %.2f s after SIGHUP", gave_up);
    /* The old workers leave; the stopped new ones are all that is left. */
    double deadline = now() + 20;
    while (children_of(app_pid, all, 16) != 2 && now() < deadline)
        sleep_s(0.01);
    ck_assert_int_eq(children_of(app_pid, all, 16), 2);
    ck_assert(contains(all, 2, gen1[0]) && contains(all, 2, gen1[1]));
    /* A request now waits in the queue; the new workers go on and answer it. */
    fcl_conn *c = fcl_connect(app_addr, 0);
    ck_assert_ptr_nonnull(c);
    fcl_buf b;
    fcl_buf_init(&b);
    fcl_put_request(&b, 1, FCR_RESPONDER, 0, P("/pid"), NULL, 0, NULL, 0);
    ck_assert_int_eq(fcl_send_buf(c, &b), 0);
    fcl_buf_free(&b);
    kill(gen1[0], SIGCONT);
    kill(gen1[1], SIGCONT);
    fcl_response r;
    fcl_response_init(&r, 1);
    ck_assert_int_eq(fcl_await(c, &r, 1), 0);
    fcl_cgi cgi;
    ck_assert_int_eq(fcl_cgi_parse(&r, &cgi), 0);
    char pid[32] = "";
    memcpy(pid, cgi.body, cgi.body_len < sizeof pid - 1 ? cgi.body_len : sizeof pid - 1);
    ck_assert_msg(contains(gen1, 2, (pid_t)atol(pid)), "pid %s answered the queued request", pid);
    fcl_cgi_free(&cgi);
    fcl_response_free(&r);
    fcl_close(c);
    fprintf(stderr,
            "ready timeout: %u answers from the old workers during the wait, retired %.2f s "
            "after SIGHUP; the queued request answered by new worker %s\n",
            served, gave_up, pid);
    stop_app();
}
END_TEST

/* FCREST_LISTEN holds several addresses, comma-separated: fcr_app_run listens on each. The
 * command line replaces it. */
START_TEST(fcrest_listen_comma_separated)
{
    char tcp[64], both[256];
    snprintf(tcp, sizeof tcp, "tcp:127.0.0.1:%d", free_tcp_port());
    snprintf(both, sizeof both, "%s,%s", app_addr, tcp);
    child_listen_env = both;
    const char *none[] = {"--log-level", "warn", NULL};
    start_app(build_path("examples/hello"), none, app_addr);
    ck_assert_int_eq(request(app_addr, P("/hello"), "Hello, world!").outcome, O_OK);
    ck_assert_int_eq(request(tcp, P("/hello"), "Hello, world!").outcome, O_OK);
    stop_app();
    /* --listen wins over the variable. */
    char other[sizeof tmpdir + 16];
    snprintf(other, sizeof other, "unix:%s/other.sock", tmpdir);
    const char *cli[] = {"--listen", other, "--log-level", "warn", NULL};
    start_app(build_path("examples/hello"), cli, other);
    ck_assert_int_eq(request(other, P("/hello"), "Hello, world!").outcome, O_OK);
    ck_assert_int_eq(request(app_addr, P("/hello"), NULL).outcome, O_REFUSED);
    ck_assert_int_eq(request(tcp, P("/hello"), NULL).outcome, O_REFUSED);
    stop_app();
    unlink(other + 5);
}
END_TEST

/* --listen fd:N serves a listening socket the program inherited as descriptor N. */
START_TEST(listen_fd_n)
{
    int fd = socket(AF_UNIX, SOCK_STREAM, 0); /* inherited: no close-on-exec */
    ck_assert_int_ge(fd, 0);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    ck_assert_uint_lt(strlen(sock_path), sizeof sun.sun_path);
    memcpy(sun.sun_path, sock_path, strlen(sock_path) + 1);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sun, sizeof sun), 0);
    ck_assert_int_eq(listen(fd, 64), 0);
    /* Not 0, 1 or 2: those become /dev/null and the log in the child. */
    int n = fcntl(fd, F_DUPFD, 10);
    ck_assert_int_ge(n, 10);
    close(fd);
    char spec[32];
    snprintf(spec, sizeof spec, "fd:%d", n);
    const char *args[] = {"--listen", spec, "--log-level", "warn", NULL};
    start_app(build_path("examples/hello"), args, app_addr);
    close(n); /* the program's copy is the only one left */
    for (int i = 0; i < 20; i++)
        ck_assert_int_eq(request(app_addr, P("/hello"), "Hello, world!").outcome, O_OK);
    stop_app();
    /* A descriptor that is not a listening socket is refused at start. */
    assert_refused("--listen", "fd:1");
}
END_TEST

/* ==== A program's own options ============================================================= */

/* The program of these tests (--serve-opts): the options a notes service declares, answered
 * back by GET /opt/NAME, and a base server configuration (5 connections, 11 requests). */
static int h_opt(fcr_req *req, fcr_res *res, void *data)
{
    (void)data;
    char name[64];
    snprintf(name, sizeof name, "--%s", fcr_req_path_param(req, "name"));
    const fcr_app *app = fcr_req_app(req);
    unsigned long long n;
    if (strcmp(name, "--cache-size") == 0 && fcr_app_option_uint(app, name, &n) == 0)
        return fcr_res_printf(res, "%llu", n) < 0 ? FCR_HANDLER_ERROR : FCR_DONE;
    const char *v = fcr_app_option(app, name);
    return fcr_res_set_text(res, 200, v ? v : "(none)");
}

static int serve_opts(int argc, char **argv)
{
    fcr_app *app = fcr_app_new();
    if (!app)
        return 1;
    fcr_app_route(app, FCR_GET, "/hello", h_hello, NULL);
    fcr_app_route(app, FCR_GET, "/opt/(?<name>[a-z-]+)", h_opt, NULL);
    if (fcr_app_add_option(app, "--db", FCR_OPT_STRING, "URL", "NOTES_DB", "sqlite:notes.db",
                           "the notes database") < 0 ||
        fcr_app_add_option(app, "--cache-size", FCR_OPT_SIZE, NULL, "MYAPP_CACHE_SIZE", "1m",
                           "memory for cached notes, suffix k, m or g") < 0 ||
        fcr_app_add_option(app, "--verbose", FCR_OPT_FLAG, NULL, "MYAPP_VERBOSE", NULL,
                           "say more") < 0 ||
        fcr_app_add_option(app, "--origin", FCR_OPT_LIST, "ORIGIN", "MYAPP_ORIGINS", NULL,
                           "an origin allowed (repeatable)") < 0)
        return 1;
    fcr_server_config base;
    fcr_server_config_init(&base);
    base.limits.max_conns = 5;
    base.limits.max_reqs = 11;
    if (fcr_app_set_server_config(app, &base) < 0)
        return 1;
    int rc = fcr_app_run(app, argc, argv);
    fcr_app_free(app);
    return rc == 0 ? 0 : 1;
}

/* The body of GET /opt/NAME from the program on app_addr. */
static const char *opt_value(const char *name)
{
    static char body[64];
    char path[64];
    snprintf(path, sizeof path, "/opt/%s", name);
    result r = request(app_addr, P(path), NULL);
    ck_assert_msg(r.outcome == O_OK, "GET %s: %s", path, r.detail);
    snprintf(body, sizeof body, "%s", r.body);
    return body;
}

/* The program started with `args` (NULL-terminated, after --serve-opts) must refuse to start:
 * exit status 1. Returns what it wrote (stdout and stderr), malloc'd. */
static char *opts_refused(const char *const *args)
{
    const char *argv[16] = {self_exe(), "--serve-opts", "rt-opts"};
    int argc = 3;
    for (int i = 0; args[i] && argc < 15; i++)
        argv[argc++] = args[i];
    argv[argc] = NULL;
    pid_t p = fork();
    ck_assert_int_ge(p, 0);
    if (p == 0) {
        int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        dup2(fd, 1);
        dup2(fd, 2);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    int st;
    ck_assert_int_eq(waitpid(p, &st, 0), p);
    char *out = read_log();
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 1, "not refused (status %#x): %s", st, out);
    return out;
}

/* FCGI_MAX_CONNS and FCGI_MAX_REQS as GET_VALUES answers them, "conns reqs". */
static const char *max_values(void)
{
    static char both[64];
    fcl_conn *c = fcl_connect(app_addr, 0);
    ck_assert_ptr_nonnull(c);
    fcl_buf q, b;
    fcl_buf_init(&q);
    fcl_buf_init(&b);
    fcl_nv_adds(&q, "FCGI_MAX_CONNS", "");
    fcl_nv_adds(&q, "FCGI_MAX_REQS", "");
    fcl_put_record(&b, FCGI_GET_VALUES, 0, q.data, q.len, 0);
    ck_assert_int_eq(fcl_send_buf(c, &b), 0);
    fcl_record rec;
    ck_assert_int_eq(fcl_read_record(c, &rec), 1);
    ck_assert_uint_eq(rec.h.type, FCGI_GET_VALUES_RESULT);
    char conns[24], reqs[24];
    ck_assert(nv_value(rec.content, rec.h.content_len, "FCGI_MAX_CONNS", conns, sizeof conns));
    ck_assert(nv_value(rec.content, rec.h.content_len, "FCGI_MAX_REQS", reqs, sizeof reqs));
    snprintf(both, sizeof both, "%s %s", conns, reqs);
    fcl_record_free(&rec);
    fcl_buf_free(&q);
    fcl_buf_free(&b);
    fcl_close(c);
    return both;
}

/* A program option's value: its default, its variable, the command line (which wins). */
START_TEST(program_option_values)
{
    start_app(self_exe(), (const char *[]){"--serve-opts", "rt-opts", "--listen", app_addr, NULL},
              app_addr);
    ck_assert_str_eq(opt_value("db"), "sqlite:notes.db");
    ck_assert_str_eq(opt_value("cache-size"), "1048576");
    ck_assert_str_eq(opt_value("verbose"), "(none)");
    ck_assert_str_eq(opt_value("origin"), "(none)");
    stop_app();
    setenv("MYAPP_ORIGINS", " https://a.example , https://b.example,,", 1);
    setenv("NOTES_DB", "postgresql://db/notes", 1);
    setenv("MYAPP_CACHE_SIZE", "64k", 1);
    setenv("MYAPP_VERBOSE", "yes", 1);
    start_app(self_exe(), (const char *[]){"--serve-opts", "rt-opts", "--listen", app_addr, NULL},
              app_addr);
    ck_assert_str_eq(opt_value("db"), "postgresql://db/notes");
    ck_assert_str_eq(opt_value("cache-size"), "65536");
    ck_assert_str_eq(opt_value("verbose"), "1");
    ck_assert_str_eq(opt_value("origin"), "https://a.example,https://b.example");
    stop_app();
    /* The command line's list replaces the variable's. */
    start_app(self_exe(),
              (const char *[]){"--serve-opts", "rt-opts", "--db", "sqlite:/var/lib/notes.db",
                               "--origin", "https://c.example", "--cache-size=2k",
                               "--origin=http://d.example:8080", "--listen", app_addr, "--workers",
                               "2", NULL},
              app_addr);
    unsetenv("MYAPP_ORIGINS");
    unsetenv("NOTES_DB");
    unsetenv("MYAPP_CACHE_SIZE");
    unsetenv("MYAPP_VERBOSE");
    /* Read in the workers, which were forked after the parse. */
    ck_assert_str_eq(opt_value("db"), "sqlite:/var/lib/notes.db");
    ck_assert_str_eq(opt_value("cache-size"), "2048");
    ck_assert_str_eq(opt_value("verbose"), "1");
    ck_assert_str_eq(opt_value("origin"), "https://c.example,http://d.example:8080");
    stop_app();
}
END_TEST

/* A bad value is refused at start with the message of fcrest's own options; --help lists the
 * program's options after fcrest's. */
START_TEST(program_option_refusals_and_help)
{
    char *out = opts_refused((const char *[]){"--listen", app_addr, "--cache-size", "12q", NULL});
    ck_assert_msg(strstr(out, "rt-opts: invalid value for --cache-size: '12q'\n") &&
                      strstr(out, "Try 'rt-opts --help'."),
                  "%s", out);
    free(out);
    setenv("MYAPP_CACHE_SIZE", "lots", 1);
    out = opts_refused((const char *[]){"--listen", app_addr, NULL});
    unsetenv("MYAPP_CACHE_SIZE");
    ck_assert_msg(strstr(out, "invalid value for --cache-size: 'lots'\nrt-opts: (from "
                              "MYAPP_CACHE_SIZE)\n"),
                  "%s", out);
    free(out);
    out = opts_refused((const char *[]){"--listen", app_addr, "--verbose=1", NULL});
    ck_assert_msg(strstr(out, "--verbose takes no value"), "%s", out);
    free(out);
    out = opts_refused((const char *[]){"--listen", app_addr, "--origin", "a,b", NULL});
    ck_assert_msg(strstr(out, "invalid value for --origin: 'a,b'"), "%s", out);
    free(out);
    out = opts_refused((const char *[]){"--listen", app_addr, "--dbx", "1", NULL});
    ck_assert_msg(strstr(out, "unknown option --dbx"), "%s", out);
    free(out);

    /* --help: exit 0, usage on stdout. */
    pid_t p = fork();
    ck_assert_int_ge(p, 0);
    if (p == 0) {
        int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        dup2(fd, 1);
        execl(self_exe(), self_exe(), "--serve-opts", "rt-opts", "--help", (char *)NULL);
        _exit(127);
    }
    int st;
    ck_assert_int_eq(waitpid(p, &st, 0), p);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    char *help = read_log();
    const char *own = strstr(help, "  --max-params N");
    const char *heading = strstr(help, "\nOptions of rt-opts:\n");
    ck_assert_msg(own && heading && own < heading, "%s", help);
    const char *db = strstr(heading, "\n  --db URL ");
    ck_assert_msg(db && strstr(db, "the notes database (default sqlite:notes.db)") &&
                      strstr(db, "[NOTES_DB]"),
                  "%s", help);
    ck_assert_msg(strstr(heading, "\n  --cache-size BYTES ") &&
                      strstr(heading, "[MYAPP_CACHE_SIZE]"),
                  "%s", help);
    ck_assert_msg(strstr(heading, "\n  --verbose ") && strstr(heading, "say more [MYAPP_VERBOSE]"),
                  "%s", help);
    free(help);
}
END_TEST

/* Registration: names, variables and defaults are checked; fcrest's own names are taken. */
START_TEST(program_option_registration)
{
    fcr_app *app = fcr_app_new();
    ck_assert_ptr_nonnull(app);
    ck_assert_int_eq(
        fcr_app_add_option(app, "--max-body", FCR_OPT_SIZE, NULL, "MYAPP_MAX_BODY", NULL, "clash"),
        FCR_EEXIST);
    ck_assert_int_eq(fcr_app_add_option(app, "--grace", FCR_OPT_SECONDS, NULL, NULL, NULL, NULL),
                     FCR_EEXIST);
    ck_assert_int_eq(fcr_app_add_option(app, "--help", FCR_OPT_FLAG, NULL, NULL, NULL, NULL),
                     FCR_EEXIST);
    ck_assert_int_eq(
        fcr_app_add_option(app, "--db", FCR_OPT_STRING, "URL", "MYAPP_DB", "sqlite:x.db", "db"), 0);
    ck_assert_int_eq(fcr_app_add_option(app, "--db", FCR_OPT_STRING, NULL, NULL, NULL, NULL),
                     FCR_EEXIST);
    ck_assert_int_eq(fcr_app_add_option(app, "--db2", FCR_OPT_STRING, NULL, "MYAPP_DB", NULL, NULL),
                     FCR_EEXIST);
    static const char *const bad_names[] = {"db", "-d", "--", "--Db", "--db=x", "--d b", NULL};
    for (int i = 0; bad_names[i]; i++)
        ck_assert_msg(fcr_app_add_option(app, bad_names[i], FCR_OPT_STRING, NULL, NULL, NULL,
                                         NULL) == FCR_EINVAL,
                      "%s accepted", bad_names[i]);
    static const char *const bad_envs[] = {"myapp_db", "1DB", "MY-DB", "", "FCREST_DB", NULL};
    for (int i = 0; bad_envs[i]; i++)
        ck_assert_msg(fcr_app_add_option(app, "--x", FCR_OPT_STRING, NULL, bad_envs[i], NULL,
                                         NULL) == FCR_EINVAL,
                      "%s accepted", bad_envs[i]);
    ck_assert_int_eq(fcr_app_add_option(app, "--n", FCR_OPT_UINT, NULL, NULL, "-1", NULL),
                     FCR_EINVAL);
    ck_assert_int_eq(fcr_app_add_option(app, "--t", FCR_OPT_SECONDS, NULL, NULL, "1s", NULL),
                     FCR_EINVAL);
    ck_assert_int_eq(fcr_app_add_option(app, "--f", FCR_OPT_FLAG, "ARG", NULL, NULL, NULL),
                     FCR_EINVAL);
    ck_assert_int_eq(fcr_app_add_option(app, "--k", (fcr_opt_kind)99, NULL, NULL, NULL, NULL),
                     FCR_EINVAL);
    ck_assert_int_eq(fcr_app_add_option(NULL, "--y", FCR_OPT_STRING, NULL, NULL, NULL, NULL),
                     FCR_EINVAL);
    /* Before fcr_app_run: the default. */
    ck_assert_str_eq(fcr_app_option(app, "--db"), "sqlite:x.db");
    ck_assert_ptr_null(fcr_app_option(app, "--nope"));
    ck_assert_ptr_null(fcr_app_option(NULL, "--db"));
    unsigned long long n = 7;
    ck_assert_int_eq(fcr_app_option_uint(app, "--db", &n), FCR_EINVAL);
    ck_assert_int_eq(fcr_app_add_option(app, "--n", FCR_OPT_UINT, NULL, NULL, NULL, NULL), 0);
    ck_assert_int_eq(fcr_app_option_uint(app, "--n", &n), FCR_ENOTFOUND);
    ck_assert_int_eq(n, 7);
    /* Parsed with fcrest's own; a refused start changes nothing. */
    char *bad[] = {"prog", "--n", "x", NULL};
    ck_assert_int_eq(fcr_app_run(app, 3, bad), FCR_EINVAL);
    ck_assert_int_eq(fcr_app_option_uint(app, "--n", &n), FCR_ENOTFOUND);
    char *good[] = {"prog", "--n", "42", "--db=", "--listen", "nonsense", NULL};
    ck_assert_int_eq(fcr_app_run(app, 6, good), FCR_EADDR);
    ck_assert_int_eq(fcr_app_option_uint(app, "--n", &n), 0);
    ck_assert_int_eq(n, 42);
    ck_assert_str_eq(fcr_app_option(app, "--db"), "");
    ck_assert_int_eq(fcr_app_set_server_config(NULL, NULL), FCR_EINVAL);
    ck_assert_int_eq(fcr_app_set_server_config(app, NULL), 0);
    fcr_app_free(app);
}
END_TEST

/* A base server configuration's limits are in force; the command line overrides them. */
START_TEST(base_server_config)
{
    start_app(self_exe(), (const char *[]){"--serve-opts", "rt-opts", "--listen", app_addr, NULL},
              app_addr);
    ck_assert_str_eq(max_values(), "5 11");
    stop_app();
    start_app(
        self_exe(),
        (const char *[]){"--serve-opts", "rt-opts", "--listen", app_addr, "--max-conns", "7", NULL},
        app_addr);
    ck_assert_str_eq(max_values(), "7 11");
    stop_app();
    setenv("FCREST_MAX_REQUESTS", "13", 1);
    start_app(self_exe(), (const char *[]){"--serve-opts", "rt-opts", "--listen", app_addr, NULL},
              app_addr);
    unsetenv("FCREST_MAX_REQUESTS");
    ck_assert_str_eq(max_values(), "5 13");
    stop_app();
}
END_TEST

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st, (void)type, (void)ftw;
    remove(path);
    return 0;
}

/* --threads takes 1 to 256, from the command line or FCREST_THREADS. */
START_TEST(threads_option_values_are_checked)
{
    static const char *const bad[] = {"0", "257", "x", "-1", ""};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++)
        assert_refused("--threads", bad[k]);
    const char *args[] = {"--serve-app", "--listen", app_addr, "--threads", "2", NULL};
    start_app(self_exe(), args, app_addr);
    result r = request(app_addr, P("/hello"), NULL);
    ck_assert_int_eq(r.outcome, O_OK);
    stop_app();
}
END_TEST

/* ==== Worker hooks ======================================================================== */

/* The start hook runs once in every worker before it accepts (and in each worker of a restart),
 * the stop hook once in every worker after its last request. */
START_TEST(worker_hooks_run_once_per_worker)
{
    setenv("FCR_RT_HOOKS", "1", 1);
    const char *args[] = {"--serve-app", "--listen", app_addr, "--workers", "3", NULL};
    start_app(self_exe(), args, app_addr);
    unsetenv("FCR_RT_HOOKS");
    wait_log_count("hook start pid=", 3, 10);
    pid_t gen0[16], gen1[16];
    double deadline = now() + 10;
    while (children_of(app_pid, gen0, 16) != 3 && now() < deadline)
        sleep_s(0.01);
    ck_assert_int_eq(children_of(app_pid, gen0, 16), 3);
    char *log = read_log();
    for (int i = 0; i < 3; i++) {
        char line[64];
        snprintf(line, sizeof line, "hook start pid=%ld\n", (long)gen0[i]);
        ck_assert_msg(count_in(log, line) == 1, "worker %ld: \"%s\" not once:\n%s", (long)gen0[i],
                      line, log);
    }
    free(log);
    result r = request(app_addr, P("/hello"), NULL);
    ck_assert_int_eq(r.outcome, O_OK);
    kill(app_pid, SIGHUP);
    ck_assert_int_eq(wait_generation(app_pid, gen0, 3, gen1, 3, 15), 3);
    wait_log_count("hook start pid=", 6, 10);
    wait_log_count("hook stop pid=", 3, 20); /* the retired workers, after their last request */
    stop_app();
    log = read_log();
    ck_assert_int_eq(count_in(log, "hook start pid="), 6);
    ck_assert_int_eq(count_in(log, "hook stop pid="), 6);
    ck_assert_int_eq(count_in(log, "hook start failed"), 0);
    free(log);
}
END_TEST

/* A start hook that fails in every worker from the first: the program gives up and exits
 * non-zero instead of restarting workers forever. */
START_TEST(worker_start_failing_from_the_first_stops_the_program)
{
    char fail[256];
    snprintf(fail, sizeof fail, "%s/fail", tmpdir);
    FILE *f = fopen(fail, "w");
    ck_assert_ptr_nonnull(f);
    fclose(f);
    setenv("FCR_RT_HOOKS", "1", 1);
    setenv("FCR_RT_HOOK_FAIL_FILE", fail, 1);
    const char *args[] = {"--serve-app", "--listen", app_addr, "--workers", "2", NULL};
    start_app(self_exe(), args, NULL); /* it may end before it is seen accepting */
    unsetenv("FCR_RT_HOOKS");
    unsetenv("FCR_RT_HOOK_FAIL_FILE");
    int st = wait_app(under_valgrind() ? 60 : 15);
    unlink(fail);
    ck_assert_msg(st != -1, "the program still runs with workers that cannot start");
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) != 0, "status %#x", st);
    char *log = read_log();
    ck_assert_msg(strstr(log, "no worker could start") != NULL, "%s", log);
    ck_assert_int_eq(count_in(log, "hook start pid="), 0);
    free(log);
}
END_TEST

/* Once workers have started, a replacement whose start hook fails is restarted with a growing
 * delay, and serves once its hook succeeds again. */
START_TEST(worker_start_failing_later_is_retried_with_a_growing_delay)
{
    char fail[256];
    snprintf(fail, sizeof fail, "%s/fail", tmpdir);
    setenv("FCR_RT_HOOKS", "1", 1);
    setenv("FCR_RT_HOOK_FAIL_FILE", fail, 1);
    const char *args[] = {"--serve-app", "--listen", app_addr, "--workers", "2", NULL};
    start_app(self_exe(), args, app_addr);
    unsetenv("FCR_RT_HOOKS");
    unsetenv("FCR_RT_HOOK_FAIL_FILE");
    wait_log_count("hook start pid=", 2, 10);
    pid_t w[16];
    ck_assert_int_eq(children_of(app_pid, w, 16), 2);
    FILE *f = fopen(fail, "w");
    ck_assert_ptr_nonnull(f);
    fclose(f);
    kill(w[0], SIGKILL);
    wait_log_count("hook start failed", 2, 10);
    wait_log_count("restarting the worker in 0.2 s", 1, 10); /* the delay grows */
    unlink(fail);
    wait_log_count("hook start pid=", 3, 20);
    result r = request(app_addr, P("/hello"), NULL);
    ck_assert_int_eq(r.outcome, O_OK);
    stop_app();
    char *log = read_log();
    ck_assert_int_ge(count_in(log, "hook start failed"), 2);
    free(log);
}
END_TEST

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--serve-app") == 0)
        return serve_app(argc - 1, argv + 1);
    if (argc > 2 && strcmp(argv[1], "--serve-opts") == 0)
        return serve_opts(argc - 2, argv + 2); /* argv[2] is the program's name */
    if (argc > 3 && strcmp(argv[1], "--serve-core") == 0)
        return serve_core(argv[2], atof(argv[3]), argc > 4 ? (unsigned)atoi(argv[4]) : 1);
    signal(SIGPIPE, SIG_IGN);
    /* A failed check ends a test's process at once (no teardown): its programs stop through
     * PR_SET_PDEATHSIG, its files go with this directory. */
    snprintf(run_dir, sizeof run_dir, "/tmp/fcr-rt-%ld", (long)getpid());
    if (mkdir(run_dir, 0700) < 0) {
        perror(run_dir);
        return EXIT_FAILURE;
    }
    Suite *s = suite_create("runtime");
    TCase *tc = tcase_create("runtime");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, under_valgrind() ? 600 : 90);
    /* FCR_RT_ONLY=name runs one test. */
#define ADD(fn, n)                                                                                 \
    if (!getenv("FCR_RT_ONLY") || strcmp(getenv("FCR_RT_ONLY"), #fn) == 0)                         \
    tcase_add_loop_test(tc, fn, 0, n)
    ADD(sigterm_loses_no_request, 3);
    ADD(threads_option_values_are_checked, 1);
    ADD(worker_hooks_run_once_per_worker, 1);
    ADD(worker_start_failing_from_the_first_stops_the_program, 1);
    ADD(worker_start_failing_later_is_retried_with_a_growing_delay, 1);
    ADD(sighup_under_load, 2);
    ADD(sighup_single_process, 1);
    ADD(sigkill_one_worker, 1);
    ADD(trickling_clients, 1);
    ADD(stalled_reader_costs_at_most_the_output_cap_and_is_closed, 2);
    ADD(begin_flood_is_capped_and_memory_stays_flat, 1);
    ADD(access_log, 3);
    ADD(timeout_options, 1);
    ADD(limit_options, 1);
    ADD(param_limit_options, 1);
    ADD(core_workers_replace_a_worker_killed_with_sigkill, 1);
    ADD(restart_retires_the_old_workers_5_s_after_new_ones_fail_to_report, 1);
    ADD(fcrest_listen_comma_separated, 1);
    ADD(listen_fd_n, 1);
    ADD(program_option_values, 1);
    ADD(program_option_refusals_and_help, 1);
    ADD(program_option_registration, 1);
    ADD(base_server_config, 1);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    if (!getenv("FCR_KEEP_LOGS"))
        nftw(run_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
