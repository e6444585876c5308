/* Metrics (fcr_app_metrics, --metrics): the Prometheus text format, parsed here line by line;
 * counters after known requests; histograms cumulative and consistent with their _count and
 * with the counters; label escaping; the API's refusals. Then a real program in four worker
 * processes (this binary with --serve, started with fcr_app_run, --workers 4 and --metrics on a
 * unix socket): requests spread over the workers by handlers that block their worker, every
 * scrape reporting the same sums whichever worker answers it, the gauges summed (a deferral
 * and a request in flight seen from any worker), and a worker killed with SIGKILL: its counts
 * stay, its gauges are cleared, the restart is counted. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <dirent.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>
#include <fcrest.h>
#include <fcrest/testing.h>

#include "fcgi_client.h"

/* ==== The exposition format, parsed ====================================================== */

typedef struct sample {
    char name[128];
    char labels[512]; /* between the braces, as written (escapes kept) */
    double value;
} sample;

typedef struct exposition {
    sample *s;
    size_t n;
    char types[64][320]; /* "name type" of each # TYPE line */
    size_t ntypes;
} exposition;

static bool name_char(char c, bool first)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
           (!first && c >= '0' && c <= '9');
}

/* Parses one sample line into `out`; returns NULL or what is wrong. */
static const char *parse_sample(const char *line, sample *out)
{
    const char *p = line;
    size_t n = 0;
    if (!name_char(*p, true))
        return "a metric name must start the line";
    while (name_char(*p, n == 0) && n + 1 < sizeof out->name)
        out->name[n++] = *p++;
    out->name[n] = '\0';
    out->labels[0] = '\0';
    if (*p == '{') {
        const char *start = ++p;
        for (;;) {
            if (*p == '}')
                break;
            if (!name_char(*p, true) || *p == ':')
                return "a label name must follow '{' or ','";
            while (name_char(*p, false) && *p != ':')
                p++;
            if (*p++ != '=' || *p++ != '"')
                return "a label name must be followed by =\"";
            while (*p != '"') {
                if (*p == '\0' || *p == '\n')
                    return "unterminated label value";
                if (*p == '\\') {
                    p++;
                    if (*p != '\\' && *p != '"' && *p != 'n')
                        return "bad escape in a label value";
                }
                p++;
            }
            p++;
            if (*p == ',')
                p++;
            else if (*p != '}')
                return "labels must be separated by ','";
        }
        size_t len = (size_t)(p - start);
        if (len >= sizeof out->labels)
            return "labels too long for the test";
        memcpy(out->labels, start, len);
        out->labels[len] = '\0';
        p++;
    }
    if (*p++ != ' ')
        return "a single space must separate the value";
    char *end;
    if (strcmp(p, "+Inf") == 0 || strcmp(p, "-Inf") == 0 || strcmp(p, "NaN") == 0) {
        out->value = strtod(p, NULL);
        return NULL;
    }
    errno = 0;
    out->value = strtod(p, &end);
    if (end == p || *end != '\0' || errno)
        return "the value is not a number";
    return NULL;
}

/* Parses the whole text; every line must be a comment (# HELP or # TYPE) or a sample, and the
 * text must end with a newline. */
static void parse_exposition(const char *text, exposition *e)
{
    memset(e, 0, sizeof *e);
    size_t len = strlen(text);
    ck_assert_msg(len > 0 && text[len - 1] == '\n', "the exposition must end with a newline");
    const char *p = text;
    while (*p) {
        const char *nl = strchr(p, '\n');
        char line[1024];
        size_t n = (size_t)(nl - p);
        ck_assert_uint_lt(n, sizeof line);
        memcpy(line, p, n);
        line[n] = '\0';
        p = nl + 1;
        ck_assert_msg(n > 0, "empty line in the exposition");
        if (line[0] == '#') {
            char kind[8], name[128], rest[160];
            ck_assert_msg(sscanf(line, "# %7s %127s %159[^\n]", kind, name, rest) == 3,
                          "malformed comment: %s", line);
            ck_assert_msg(strcmp(kind, "HELP") == 0 || strcmp(kind, "TYPE") == 0,
                          "unknown comment: %s", line);
            if (strcmp(kind, "TYPE") == 0) {
                ck_assert_msg(strcmp(rest, "counter") == 0 || strcmp(rest, "gauge") == 0 ||
                                  strcmp(rest, "histogram") == 0,
                              "unknown type: %s", line);
                ck_assert_uint_lt(e->ntypes, 64);
                snprintf(e->types[e->ntypes++], sizeof e->types[0], "%s %s", name, rest);
            }
            continue;
        }
        e->s = realloc(e->s, (e->n + 1) * sizeof *e->s);
        ck_assert_ptr_nonnull(e->s);
        const char *why = parse_sample(line, &e->s[e->n]);
        ck_assert_msg(why == NULL, "%s: %s", why ? why : "", line);
        e->n++;
    }
}

/* The value of the sample `name{labels}` (labels exactly as written), or -1 when absent. */
static double value_of(const exposition *e, const char *name, const char *labels)
{
    for (size_t i = 0; i < e->n; i++) {
        if (strcmp(e->s[i].name, name) == 0 && strcmp(e->s[i].labels, labels) == 0)
            return e->s[i].value;
    }
    return -1;
}

/* The sum of the samples of `name` whose labels start with `prefix`. */
static double sum_of(const exposition *e, const char *name, const char *prefix)
{
    double v = 0;
    for (size_t i = 0; i < e->n; i++) {
        if (strcmp(e->s[i].name, name) == 0 && strncmp(e->s[i].labels, prefix, strlen(prefix)) == 0)
            v += e->s[i].value;
    }
    return v;
}

static double requests(const exposition *e, const char *route, const char *method,
                       const char *status)
{
    char l[512];
    snprintf(l, sizeof l, "route=\"%s\",method=\"%s\",status=\"%s\"", route, method, status);
    double v = value_of(e, "fcrest_requests_total", l);
    return v < 0 ? 0 : v;
}

static double gauge(const exposition *e, const char *name)
{
    double v = value_of(e, name, "");
    ck_assert_msg(v >= 0, "%s is missing", name);
    return v;
}

/* Every histogram: one TYPE line; per route, buckets in increasing `le` with non-decreasing
 * counts ending in +Inf, +Inf equal to _count, and _count equal to the route's requests. */
static void check_histograms(const exposition *e)
{
    bool typed = false;
    for (size_t i = 0; i < e->ntypes; i++)
        typed |= strcmp(e->types[i], "fcrest_request_duration_seconds histogram") == 0;
    ck_assert(typed);
    size_t routes = 0;
    for (size_t i = 0; i < e->n; i++) {
        if (strcmp(e->s[i].name, "fcrest_request_duration_seconds_count") != 0)
            continue;
        routes++;
        const char *labels = e->s[i].labels; /* route="..." */
        double count = e->s[i].value, prev = 0, prev_le = -1;
        size_t nb = 0;
        bool inf = false;
        for (size_t k = 0; k < e->n; k++) {
            const sample *b = &e->s[k];
            size_t ll = strlen(labels);
            if (strcmp(b->name, "fcrest_request_duration_seconds_bucket") != 0 ||
                strncmp(b->labels, labels, ll) != 0 || strncmp(b->labels + ll, ",le=\"", 5) != 0)
                continue;
            ck_assert_msg(!inf, "a bucket after +Inf for %s", labels);
            const char *le = b->labels + ll + 5;
            double bound = strncmp(le, "+Inf", 4) == 0 ? 1e300 : strtod(le, NULL);
            inf = bound >= 1e300;
            ck_assert_msg(bound > prev_le, "buckets out of order for %s", labels);
            ck_assert_msg(b->value >= prev, "buckets not cumulative for %s", labels);
            prev_le = bound;
            prev = b->value;
            nb++;
        }
        ck_assert_msg(inf, "no +Inf bucket for %s", labels);
        ck_assert_uint_eq(nb, 14);
        ck_assert_msg(prev == count, "+Inf %g != _count %g for %s", prev, count, labels);
        char prefix[512];
        snprintf(prefix, sizeof prefix, "%s,", labels);
        ck_assert_msg(sum_of(e, "fcrest_requests_total", prefix) == count,
                      "_count %g != requests %g for %s", count,
                      sum_of(e, "fcrest_requests_total", prefix), labels);
        ck_assert_msg(value_of(e, "fcrest_request_duration_seconds_sum", labels) >= 0,
                      "no _sum for %s", labels);
    }
    ck_assert_uint_gt(routes, 0);
}

static void exposition_free(exposition *e)
{
    free(e->s);
    e->s = NULL;
}

/* ==== In process ========================================================================= */

static fcr_handler_result h_text(fcr_req *req, fcr_res *res, void *data)
{
    (void)req;
    return fcr_res_set_text(res, 200, data ? data : "ok");
}

static fcr_handler_result h_created(fcr_req *req, fcr_res *res, void *data)
{
    (void)req, (void)data;
    return fcr_res_set_text(res, 201, "created");
}

typedef struct later {
    ev_timer t;
    fcr_res *res;
} later;

static void later_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop, (void)revents;
    later *l = (later *)t;
    fcr_res_set_text(l->res, 200, "late");
    fcr_res_send(l->res);
    free(l);
}

/* Answers 40 ms later: its duration is at least that. */
static fcr_handler_result h_later(fcr_req *req, fcr_res *res, void *data)
{
    (void)data;
    later *l = malloc(sizeof *l);
    if (!l)
        return FCR_HANDLER_ERROR;
    l->res = res;
    ev_timer_init(&l->t, later_cb, 0.040, 0);
    ev_timer_start(fcr_req_loop(req), &l->t);
    return FCR_ASYNC;
}

static int do_req(fcr_app *app, const char *method, const char *path, int want)
{
    fcr_test_req rq = {.method = method, .path = path};
    fcr_test_res rs;
    ck_assert_int_eq(fcr_app_test(app, &rq, &rs), 0);
    int st = rs.status;
    fcr_test_res_free(&rs);
    ck_assert_int_eq(st, want);
    return st;
}

static void scrape_app(fcr_app *app, const char *path, exposition *e)
{
    fcr_test_req rq = {.path = path};
    fcr_test_res rs;
    ck_assert_int_eq(fcr_app_test(app, &rq, &rs), 0);
    ck_assert_int_eq(rs.status, 200);
    ck_assert_str_eq(fcr_test_res_header(&rs, "Content-Type"),
                     "text/plain; version=0.0.4; charset=utf-8");
    parse_exposition(rs.body, e);
    fcr_test_res_free(&rs);
}

START_TEST(counts_known_requests)
{
    fcr_app *app = fcr_app_new();
    fcr_app_route(app, FCR_GET, "/hello", h_text, NULL);
    fcr_app_route(app, FCR_GET | FCR_POST, "/items/(?<id>[0-9]+)", h_text, NULL);
    fcr_route *r = fcr_app_route(app, FCR_PUT, "/items", h_created, NULL);
    ck_assert_ptr_nonnull(r);
    fcr_app_route(app, FCR_GET, "/later", h_later, NULL);
    fcr_app *api = fcr_app_new();
    fcr_app_route(api, FCR_GET, "/x", h_text, NULL);
    ck_assert_int_eq(fcr_app_mount(app, "/api", api), 0);
    ck_assert_int_eq(fcr_app_metrics(app, "/metrics"), 0);
    ck_assert_ptr_null(fcr_app_error(app));

    for (int i = 0; i < 3; i++)
        do_req(app, "GET", "/hello", 200);
    do_req(app, "HEAD", "/hello", 200);
    do_req(app, "DELETE", "/hello", 405);
    do_req(app, "GET", "/items/7", 200);
    do_req(app, "GET", "/items/8", 200);
    do_req(app, "POST", "/items/9", 200);
    do_req(app, "PUT", "/items", 201);
    do_req(app, "GET", "/nowhere", 404);
    do_req(app, "GET", "/api/x", 200);
    do_req(app, "GET", "/later", 200);

    exposition e;
    scrape_app(app, "/metrics", &e);
    ck_assert_double_eq(requests(&e, "/hello", "GET", "200"), 3);
    ck_assert_double_eq(requests(&e, "/hello", "HEAD", "200"), 1);
    ck_assert_double_eq(requests(&e, "", "DELETE", "405"), 1);
    ck_assert_double_eq(requests(&e, "", "GET", "404"), 1);
    ck_assert_double_eq(requests(&e, "/items/(?<id>[0-9]+)", "GET", "200"), 2);
    ck_assert_double_eq(requests(&e, "/items/(?<id>[0-9]+)", "POST", "200"), 1);
    ck_assert_double_eq(requests(&e, "/items", "PUT", "201"), 1);
    ck_assert_double_eq(requests(&e, "/api/x", "GET", "200"), 1);
    ck_assert_double_eq(requests(&e, "/later", "GET", "200"), 1);
    /* The scrape counts once it is answered: not in its own answer. */
    ck_assert_double_eq(requests(&e, "/metrics", "GET", "200"), 0);
    ck_assert_double_eq(sum_of(&e, "fcrest_requests_total", ""), 12);
    check_histograms(&e);
    /* The late answer took 40 ms at least: nothing at or below 25 ms. */
    ck_assert_double_eq(
        value_of(&e, "fcrest_request_duration_seconds_bucket", "route=\"/later\",le=\"0.025\""), 0);
    ck_assert_double_eq(
        value_of(&e, "fcrest_request_duration_seconds_bucket", "route=\"/later\",le=\"+Inf\""), 1);
    ck_assert(value_of(&e, "fcrest_request_duration_seconds_sum", "route=\"/later\"") >= 0.040);
    /* Every registered route has its histogram, used or not. */
    ck_assert_double_eq(value_of(&e, "fcrest_request_duration_seconds_count", "route=\"/metrics\""),
                        0);
    ck_assert_double_eq(gauge(&e, "fcrest_requests_in_flight"), 1); /* the scrape */
    ck_assert_double_eq(gauge(&e, "fcrest_connections_open"), 1);
    ck_assert_double_eq(gauge(&e, "fcrest_deferrals_outstanding"), 0);
    ck_assert_double_eq(gauge(&e, "fcrest_worker_restarts_total"), 0);
    exposition_free(&e);

    scrape_app(app, "/metrics", &e);
    ck_assert_double_eq(requests(&e, "/metrics", "GET", "200"), 1);
    ck_assert_double_eq(requests(&e, "/hello", "GET", "200"), 3);
    check_histograms(&e);
    exposition_free(&e);
    fcr_app_free(app);
}
END_TEST

/* A pattern's backslashes and double quotes are escaped in the label. */
START_TEST(labels_are_escaped)
{
    fcr_app *app = fcr_app_new();
    fcr_app_route(app, FCR_GET, "/a\\.b", h_text, NULL);
    fcr_app_route(app, FCR_GET, "/q(?:\")?", h_text, NULL);
    ck_assert_int_eq(fcr_app_metrics(app, "/stats/prom.txt"), 0);
    do_req(app, "GET", "/a.b", 200);
    do_req(app, "GET", "/q\"", 200);
    do_req(app, "GET", "/stats/promXtxt", 404); /* the path is literal */
    exposition e;
    scrape_app(app, "/stats/prom.txt", &e);
    ck_assert_double_eq(requests(&e, "/a\\\\.b", "GET", "200"), 1);
    ck_assert_double_eq(requests(&e, "/q(?:\\\")?", "GET", "200"), 1);
    ck_assert_double_eq(requests(&e, "", "GET", "404"), 1);
    check_histograms(&e);
    exposition_free(&e);
    fcr_app_free(app);
}
END_TEST

START_TEST(refusals)
{
    fcr_app *app = fcr_app_new();
    ck_assert_int_eq(fcr_app_metrics(NULL, "/m"), FCR_EINVAL);
    ck_assert_int_eq(fcr_app_metrics(app, NULL), FCR_EINVAL);
    ck_assert_int_eq(fcr_app_metrics(app, "metrics"), FCR_EINVAL);
    ck_assert_int_eq(fcr_app_metrics(app, "/a b"), FCR_EINVAL);
    ck_assert_int_eq(fcr_app_metrics(app, "/m?x"), FCR_EINVAL);
    ck_assert_int_eq(fcr_app_metrics(app, "/m"), 0);
    ck_assert_int_eq(fcr_app_metrics(app, "/n"), FCR_EEXIST);
    ck_assert_int_eq(fcr_app_metrics(app, "/m"), 0); /* the same path: nothing changes */
    fcr_app *sub = fcr_app_new();
    ck_assert_int_eq(fcr_app_mount(app, "/sub", sub), 0);
    ck_assert_int_eq(fcr_app_metrics(sub, "/m"), FCR_EINVAL);
    /* An app with metrics is not mounted (and is freed, as mount always takes it). */
    fcr_app *with = fcr_app_new();
    ck_assert_int_eq(fcr_app_metrics(with, "/m"), 0);
    ck_assert_int_eq(fcr_app_mount(app, "/with", with), FCR_EINVAL);
    fcr_app_free(app);
}
END_TEST

/* ==== Worker processes =================================================================== */

/* --serve: the program the process tests run. */
static fcr_handler_result h_pid(fcr_req *req, fcr_res *res, void *data)
{
    (void)req, (void)data;
    return fcr_res_printf(res, "%ld", (long)getpid()) < 0 ? FCR_HANDLER_ERROR : FCR_DONE;
}

/* Blocks its worker (on purpose: the next connections go to the other workers): tells so with
 * the file DIR/blocked-PID, waits for DIR/release, then 300 ms more. */
static fcr_handler_result h_block(fcr_req *req, fcr_res *res, void *data)
{
    (void)req, (void)data;
    const char *dir = getenv("FCR_METRICS_DIR");
    char path[256];
    snprintf(path, sizeof path, "%s/blocked-%ld", dir ? dir : ".", (long)getpid());
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd >= 0)
        close(fd);
    snprintf(path, sizeof path, "%s/release", dir ? dir : ".");
    for (int i = 0; i < 6000 && access(path, F_OK) != 0; i++) {
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    struct timespec ts = {0, 300 * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
    return fcr_res_printf(res, "%ld", (long)getpid()) < 0 ? FCR_HANDLER_ERROR : FCR_DONE;
}

static void sleep_work(void *data)
{
    (void)data;
    struct timespec ts = {1, 500 * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static int sleep_done(fcr_req *req, fcr_res *res, void *data)
{
    (void)req, (void)data;
    return fcr_res_set_text(res, 200, "slept");
}

static fcr_handler_result h_defer(fcr_req *req, fcr_res *res, void *data)
{
    (void)data;
    int rc = fcr_defer(req, res, sleep_work, sleep_done, NULL);
    return rc < 0 ? rc : FCR_ASYNC;
}

/* Never answers: the request stays in flight until its worker is killed. */
static fcr_handler_result h_hang(fcr_req *req, fcr_res *res, void *data)
{
    (void)req, (void)res, (void)data;
    return FCR_ASYNC;
}

static int serve(int argc, char **argv)
{
    fcr_log_set_level(FCR_LOG_WARN);
    fcr_app *app = fcr_app_new();
    if (!app)
        return 1;
    fcr_app_route(app, FCR_GET, "/hello", h_text, "Hello, world!");
    fcr_app_route(app, FCR_GET, "/pid", h_pid, NULL);
    fcr_app_route(app, FCR_GET, "/block", h_block, NULL);
    fcr_app_route(app, FCR_GET, "/defer", h_defer, NULL);
    fcr_app_route(app, FCR_GET, "/hang", h_hang, NULL);
    int rc = fcr_app_run(app, argc, argv);
    fcr_app_free(app);
    return rc == 0 ? 0 : 1;
}

static pid_t app_pid = -1;
static char dir[64], sock_addr[128], log_path[128];

static void sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static bool under_valgrind(void)
{
    const char *v = getenv("FCR_VALGRIND");
    return v && *v;
}

static void start_program(void)
{
    snprintf(dir, sizeof dir, "/tmp/fcr-metrics-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(sock_addr, sizeof sock_addr, "unix:%s/app.sock", dir);
    snprintf(log_path, sizeof log_path, "%s/app.log", dir);
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    ck_assert_int_gt(n, 0);
    self[n] = '\0';
    const char *argv[48];
    int argc = 0;
    char *vg = NULL;
    if (under_valgrind()) {
        vg = strdup(getenv("FCR_VALGRIND"));
        for (char *t = strtok(vg, " "); t && argc < 40; t = strtok(NULL, " "))
            argv[argc++] = t;
    }
    const char *args[] = {
        self,        "--serve",  "--listen",           sock_addr, "--workers", "4",
        "--metrics", "/metrics", "--shutdown-timeout", "1",       NULL};
    for (int i = 0; args[i]; i++)
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
        unsetenv("FCREST_LISTEN");
        unsetenv("FCREST_WORKERS");
        unsetenv("FCREST_METRICS");
        setenv("FCR_METRICS_DIR", dir, 1);
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    free(vg);
    double deadline = fcl_now() + (under_valgrind() ? 120 : 20);
    while (fcl_now() < deadline) {
        fcl_conn *c = fcl_connect(sock_addr, 0);
        if (c) {
            fcl_close(c);
            return;
        }
        int st;
        ck_assert_msg(waitpid(app_pid, &st, WNOHANG) == 0, "the program exited at start-up");
        sleep_s(0.02);
    }
    ck_abort_msg("the program does not accept");
}

static void stop_program(void)
{
    if (app_pid > 0) {
        kill(-app_pid, SIGKILL);
        waitpid(app_pid, NULL, 0);
        app_pid = -1;
    }
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        char path[400];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (e->d_name[0] != '.' &&
            (getenv("FCR_KEEP_LOGS") == NULL || strcmp(e->d_name, "app.log") != 0))
            unlink(path);
    }
    if (d)
        closedir(d);
    rmdir(dir);
}

/* Living children of `parent` (the workers). */
static int workers_of(pid_t parent, pid_t *out, int max)
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
    return n;
}

static int send_get(const char *path, char *body, size_t cap)
{
    fcr_test_req rq = {.path = path};
    fcr_test_res rs;
    int rc = fcr_test_send(sock_addr, &rq, &rs);
    ck_assert_msg(rc == 0, "GET %s: %s", path, fcr_strerror(rc));
    int st = rs.status;
    if (body)
        snprintf(body, cap, "%s", rs.body);
    fcr_test_res_free(&rs);
    return st;
}

static void scrape(exposition *e)
{
    fcr_test_req rq = {.path = "/metrics"};
    fcr_test_res rs;
    ck_assert_int_eq(fcr_test_send(sock_addr, &rq, &rs), 0);
    ck_assert_int_eq(rs.status, 200);
    ck_assert_str_eq(fcr_test_res_header(&rs, "Content-Type"),
                     "text/plain; version=0.0.4; charset=utf-8");
    parse_exposition(rs.body, e);
    fcr_test_res_free(&rs);
}

/* Scrapes until `name` reads `want` (up to `timeout` s); returns the last value. */
static double wait_gauge(const char *name, double want, double timeout)
{
    double deadline = fcl_now() + timeout, v = -1;
    while (fcl_now() < deadline) {
        exposition e;
        scrape(&e);
        v = gauge(&e, name);
        exposition_free(&e);
        if (v == want)
            break;
        sleep_s(0.05);
    }
    return v;
}

#define PARAMS(path)                                                                               \
    ((const char *const[]){"REQUEST_METHOD", "GET", "SCRIPT_NAME", path, "REQUEST_URI", path,      \
                           "QUERY_STRING", "", "SERVER_PROTOCOL", "HTTP/1.1", NULL})

/* Sends GET `path` on `c` without waiting for the answer. */
static void send_only(fcl_conn *c, const char *path)
{
    fcl_buf b;
    fcl_buf_init(&b);
    fcl_put_request(&b, 1, FCR_RESPONDER, FCGI_KEEP_CONN, PARAMS(path), NULL, 0, NULL, 0);
    ck_assert_int_eq(fcl_send_buf(c, &b), 0);
    fcl_buf_free(&b);
}

/* Awaits the answer to send_only on `c`; returns its body's number (a pid). */
static long await_pid(fcl_conn *c)
{
    fcl_response r;
    fcl_response_init(&r, 1);
    ck_assert_int_eq(fcl_await(c, &r, 1), 0);
    fcl_cgi cgi;
    ck_assert_int_eq(fcl_cgi_parse(&r, &cgi), 0);
    char body[64] = {0};
    memcpy(body, cgi.body, cgi.body_len < 63 ? cgi.body_len : 63);
    fcl_cgi_free(&cgi);
    fcl_response_free(&r);
    return atol(body);
}

#define N_HELLO 200
#define N_BLOCK 4
#define N_CONN  N_BLOCK

/* Files DIR/blocked-* (workers blocked in h_block). */
static int blocked_workers(void)
{
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += strncmp(e->d_name, "blocked-", 8) == 0;
    closedir(d);
    return n;
}

START_TEST(summed_over_four_workers)
{
    start_program();
    /* A request that blocks its worker on each connection, the next connection made once the
     * worker of the one before is blocked: a blocked worker accepts nothing, so each goes to
     * another worker, and every worker serves one. */
    fcl_conn *c[N_CONN];
    long pid[N_CONN];
    for (int i = 0; i < N_CONN; i++) {
        c[i] = fcl_connect(sock_addr, 0);
        ck_assert_ptr_nonnull(c[i]);
        c[i]->timeout = under_valgrind() ? 120 : 30;
        send_only(c[i], "/block");
        double deadline = fcl_now() + 30;
        while (blocked_workers() < i + 1 && fcl_now() < deadline)
            sleep_s(0.01);
        ck_assert_int_eq(blocked_workers(), i + 1);
    }
    char release[160];
    snprintf(release, sizeof release, "%s/release", dir);
    int fd = open(release, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    ck_assert_int_ge(fd, 0);
    close(fd);
    for (int i = 0; i < N_CONN; i++) {
        pid[i] = await_pid(c[i]);
        for (int k = 0; k < i; k++)
            ck_assert_int_ne(pid[k], pid[i]);
    }

    for (int i = 0; i < N_HELLO; i++)
        ck_assert_int_eq(send_get("/hello", NULL, 0), 200);

    /* Every scrape, whichever worker answers it, sums every worker's counts: the blocking
     * requests (one per worker) and the hellos; each scrape also sees the scrapes before it. */
    for (int k = 0; k < 8; k++) {
        exposition e;
        scrape(&e);
        ck_assert_double_eq(requests(&e, "/hello", "GET", "200"), N_HELLO);
        ck_assert_double_eq(requests(&e, "/block", "GET", "200"), N_BLOCK);
        ck_assert_double_eq(requests(&e, "/metrics", "GET", "200"), k);
        ck_assert_double_eq(gauge(&e, "fcrest_requests_in_flight"), 1);
        ck_assert_double_eq(gauge(&e, "fcrest_worker_restarts_total"), 0);
        /* The 300 ms of each blocking request. */
        ck_assert_double_eq(
            value_of(&e, "fcrest_request_duration_seconds_bucket", "route=\"/block\",le=\"0.25\""),
            0);
        check_histograms(&e);
        exposition_free(&e);
    }

    /* Gauges summed: a deferral in flight is seen by every scrape, with its request. */
    fcl_conn *d = fcl_connect(sock_addr, 0);
    ck_assert_ptr_nonnull(d);
    d->timeout = 30;
    send_only(d, "/defer");
    ck_assert_double_eq(wait_gauge("fcrest_deferrals_outstanding", 1, 20), 1);
    exposition e;
    scrape(&e);
    ck_assert_double_eq(gauge(&e, "fcrest_requests_in_flight"), 2);
    exposition_free(&e);
    fcl_response r;
    fcl_response_init(&r, 1);
    ck_assert_int_eq(fcl_await(d, &r, 1), 0);
    fcl_response_free(&r);
    fcl_close(d);
    ck_assert_double_eq(wait_gauge("fcrest_deferrals_outstanding", 0, 20), 0);

    /* A worker that served a blocking request holds a request and a connection, then is
     * killed: its counts stay, its gauges go, the restart is counted. */
    pid_t victim = (pid_t)pid[0];
    send_only(c[0], "/hang");
    ck_assert_double_eq(wait_gauge("fcrest_requests_in_flight", 2, 20), 2);
    double scrapes_before;
    scrape(&e);
    scrapes_before = requests(&e, "/metrics", "GET", "200");
    exposition_free(&e);
    ck_assert_int_eq(kill(victim, SIGKILL), 0);
    for (int i = 0; i < N_CONN; i++)
        fcl_close(c[i]);
    ck_assert_double_eq(wait_gauge("fcrest_worker_restarts_total", 1, 30), 1);
    double deadline = fcl_now() + 30;
    pid_t w[16];
    while (fcl_now() < deadline && workers_of(app_pid, w, 16) != 4)
        sleep_s(0.05);
    ck_assert_int_eq(workers_of(app_pid, w, 16), 4);
    for (int i = 0; i < 4; i++)
        ck_assert_int_ne(w[i], victim);
    ck_assert_double_eq(wait_gauge("fcrest_requests_in_flight", 1, 20), 1);
    ck_assert_double_eq(wait_gauge("fcrest_connections_open", 1, 20), 1);
    scrape(&e);
    ck_assert_double_eq(requests(&e, "/hello", "GET", "200"), N_HELLO);
    ck_assert_double_eq(requests(&e, "/block", "GET", "200"), N_BLOCK);
    ck_assert(requests(&e, "/metrics", "GET", "200") > scrapes_before);
    /* The request the killed worker held was never answered: not counted. */
    ck_assert_double_eq(requests(&e, "/hang", "GET", "200"), 0);
    check_histograms(&e);
    exposition_free(&e);

    /* The replacement counts on. */
    for (int i = 0; i < 20; i++)
        ck_assert_int_eq(send_get("/hello", NULL, 0), 200);
    scrape(&e);
    ck_assert_double_eq(requests(&e, "/hello", "GET", "200"), N_HELLO + 20);
    ck_assert_double_eq(gauge(&e, "fcrest_worker_restarts_total"), 1);
    exposition_free(&e);

    /* A graceful stop, with the shared area in every process: exit status 0. */
    ck_assert_int_eq(kill(app_pid, SIGTERM), 0);
    double until = fcl_now() + (under_valgrind() ? 120 : 30);
    int st = 0;
    pid_t got = 0;
    while (fcl_now() < until && (got = waitpid(app_pid, &st, WNOHANG)) == 0)
        sleep_s(0.05);
    ck_assert_msg(got == app_pid, "the program did not stop after SIGTERM");
    app_pid = -1;
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "exit status %#x", st);
    stop_program();
}
END_TEST

static void teardown(void)
{
    if (app_pid > 0)
        stop_program();
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--serve") == 0) {
        argv[1] = argv[0];
        return serve(argc - 1, argv + 1);
    }
    signal(SIGPIPE, SIG_IGN);
    Suite *s = suite_create("metrics");
    TCase *tc = tcase_create("in process");
    tcase_add_test(tc, counts_known_requests);
    tcase_add_test(tc, labels_are_escaped);
    tcase_add_test(tc, refusals);
    suite_add_tcase(s, tc);
    TCase *tw = tcase_create("workers");
    tcase_add_checked_fixture(tw, NULL, teardown);
    tcase_set_timeout(tw, under_valgrind() ? 600 : 180);
    tcase_add_test(tw, summed_over_four_workers);
    suite_add_tcase(s, tw);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
