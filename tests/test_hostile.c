/* Hostile peers and overload, against a server in a child process of its own (so that its
 * descriptor limit, CPU time and log can be set and measured apart from the test's):
 *   - accept() out of descriptors pauses accepting instead of spinning, logs little, and
 *     serves again once descriptors are free;
 *   - a descriptor limit below the connection cap lowers the cap, so that the cap (where idle
 *     connections make room for new ones) comes before the descriptors run out;
 *   - a flood of connections that never send anything does not lock a new client out;
 *   - restarts under keep-alive load lose no request, also of a client that reuses a connection
 *     without checking it: the old workers hand their connections over to the new ones (the
 *     same connections, thousands at once, also while the new workers are stalled); a stop
 *     closes them.
 */
#include <check.h>
#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fcrest/core.h>

#include "fcgi_client.h"

static const char *const PLAIN[] = {"REQUEST_METHOD", "GET", NULL};

/* ---- the server child ------------------------------------------------------------------ */

typedef struct child_opts {
    rlim_t nofile;      /* descriptor limit of the child (0: unchanged) */
    unsigned max_conns; /* 0: the default */
    bool fill_fds;      /* after listening, take every free descriptor until SIGUSR1 */
    unsigned workers;   /* > 1: run under the supervisor with that many workers */
    bool tcp;           /* listen on a loopback TCP port instead of a unix socket */
} child_opts;

static struct {
    pid_t pid;
    char dir[64];
    char addr[128];
    char log[128];
} C;

static int fillers[4096];
static int nfillers;

/* Answers "ok", or with SCRIPT_NAME /pid the process id of the worker that answered. */
static void on_request(fcr_req *req, void *data)
{
    (void)data;
    static const char ok[] = "Status: 200 OK\r\nContent-Type: text/plain\r\n\r\nok";
    const char *script = fcr_req_param(req, "SCRIPT_NAME");
    if (script && strcmp(script, "/pid") == 0) {
        char pid[96];
        int n = snprintf(pid, sizeof pid, "Status: 200 OK\r\nContent-Type: text/plain\r\n\r\n%ld",
                         (long)getpid());
        fcr_req_write(req, pid, (size_t)n);
    } else {
        fcr_req_write(req, ok, sizeof ok - 1);
    }
    fcr_req_finish(req, 0);
}

static void usr1_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop, (void)w, (void)revents;
    while (nfillers > 0)
        close(fillers[--nfillers]);
}

static void term_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)w, (void)revents;
    ev_break(loop, EVBREAK_ALL);
}

static void child_main(const child_opts *o, int ready)
{
    int logfd = open(C.log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (logfd < 0 || dup2(logfd, 2) < 0)
        _exit(3);
    close(logfd);
    if (o->nofile) {
        struct rlimit rl = {o->nofile, o->nofile};
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            _exit(4);
    }
    struct ev_loop *loop = ev_default_loop(0);
    fcr_server_config cfg;
    fcr_server_config_init(&cfg);
    cfg.on_request = on_request;
    if (o->max_conns)
        cfg.limits.max_conns = o->max_conns;
    fcr_log_set_level(FCR_LOG_INFO);
    int err = 0;
    fcr_server *srv = fcr_server_new(loop, &cfg, &err);
    if (!srv || fcr_server_listen(srv, C.addr) != 0)
        _exit(5);
    ev_signal usr1, term;
    ev_signal_init(&usr1, usr1_cb, SIGUSR1);
    ev_signal_start(loop, &usr1);
    ev_signal_init(&term, term_cb, SIGTERM);
    ev_signal_start(loop, &term);
    char one = 1;
    if (write(ready, &one, 1) != 1)
        _exit(6);
    close(ready);
    if (o->workers > 1) {
        ev_signal_stop(loop, &usr1);
        ev_signal_stop(loop, &term);
        int rc = fcr_server_run_workers(srv, o->workers, 10);
        fcr_server_free(srv);
        _exit(rc == 0 ? 0 : 7);
    }
    if (o->fill_fds) { /* the loop runs only after this: nothing is accepted before */
        int fd;
        while (nfillers < (int)(sizeof fillers / sizeof fillers[0]) &&
               (fd = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0)
            fillers[nfillers++] = fd;
    }
    ev_run(loop, 0);
    fcr_server_free(srv);
    _exit(0);
}

/* A loopback TCP port nothing listens on now. */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

static void start_child(const child_opts *o)
{
    snprintf(C.dir, sizeof C.dir, "/tmp/fcr-hostile-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(C.dir));
    snprintf(C.addr, sizeof C.addr, "unix:%s/s", C.dir);
    if (o->tcp)
        snprintf(C.addr, sizeof C.addr, "tcp:127.0.0.1:%d", free_port());
    snprintf(C.log, sizeof C.log, "%s/log", C.dir);
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    C.pid = fork();
    ck_assert_int_ge(C.pid, 0);
    if (C.pid == 0) {
        close(p[0]);
        child_main(o, p[1]);
    }
    close(p[1]);
    char b;
    ck_assert_msg(read(p[0], &b, 1) == 1, "the server child did not start");
    close(p[0]);
}

static void stop_child(void)
{
    kill(C.pid, SIGTERM);
    int st;
    ck_assert_int_eq(waitpid(C.pid, &st, 0), C.pid);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "server child ended with %d", st);
    char path[160];
    snprintf(path, sizeof path, "%s/s", C.dir);
    unlink(path);
    unlink(C.log);
    rmdir(C.dir);
}

/* CPU seconds (user + system) the child has used. */
static double child_cpu(void)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", (long)C.pid);
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    ck_assert_ptr_nonnull(p);
    unsigned long utime = 0, stime = 0;
    /* After ")": state, then fields 4..13, then utime (14) and stime (15). */
    ck_assert_int_eq(
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime), 2);
    return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

static char *read_log(size_t *size)
{
    FILE *f = fopen(C.log, "r");
    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    size_t got = fread(s, 1, (size_t)n, f);
    s[got] = '\0';
    fclose(f);
    if (size)
        *size = got;
    return s;
}

static unsigned count_in(const char *s, const char *what)
{
    unsigned n = 0;
    for (const char *p = s; (p = strstr(p, what)); p += strlen(what))
        n++;
    return n;
}

/* Sends a plain request on a new connection; returns the connection (not yet answered). */
static fcl_conn *send_request(void)
{
    fcl_conn *c = fcl_connect(C.addr, 0);
    ck_assert_ptr_nonnull(c);
    fcl_buf b;
    fcl_buf_init(&b);
    fcl_put_request(&b, 1, 1, 0, PLAIN, NULL, 0, NULL, 0);
    ck_assert_int_eq(fcl_send_buf(c, &b), 0);
    fcl_buf_free(&b);
    return c;
}

static void assert_answered(fcl_conn *c, double timeout)
{
    c->timeout = timeout;
    fcl_response r;
    fcl_response_init(&r, 1);
    ck_assert_msg(fcl_await(c, &r, 1) == 0, "no answer within %.1f s (errno %d)", timeout, errno);
    ck_assert_int_eq(r.protocol_status, 0);
    ck_assert_msg(r.out.len >= 14 && memcmp(r.out.data, "Status: 200 OK", 14) == 0,
                  "unexpected answer");
    fcl_response_free(&r);
}

/* ---- tests ------------------------------------------------------------------------------ */

/* Valgrind keeps descriptors of its own above the process's limit and refuses a lower one, so
 * the descriptor-limit tests cannot run under it; they say so. */
static bool skipped_under_valgrind(const char *test)
{
    const char *p = getenv("LD_PRELOAD");
    if (!p || !strstr(p, "vgpreload"))
        return false;
    fprintf(stderr, "%s: skipped under valgrind (it needs descriptors above the limit set)\n",
            test);
    return true;
}

#define FLOOD 60

/* The descriptors run out while connections wait: the server neither spins nor floods its log,
 * and serves them all once descriptors are free again. */
START_TEST(accept_out_of_descriptors_pauses_instead_of_spinning)
{
    if (skipped_under_valgrind("emfile"))
        return;
    start_child(&(child_opts){.nofile = 256, .fill_fds = true});
    fcl_conn *flood[FLOOD];
    for (int i = 0; i < FLOOD; i++)
        flood[i] = send_request();
    double cpu0 = child_cpu();
    double t0 = fcl_now();
    /* Two seconds of connections waiting on a server without descriptors. */
    bool idle = fcl_idle_for(flood[0], 2.0);
    if (!idle) {
        char *l = read_log(NULL);
        int st = -1;
        pid_t w = waitpid(C.pid, &st, WNOHANG);
        ck_abort_msg("answered or closed while out of descriptors (child %d status %d):\n%s",
                     (int)w, st, l);
    }
    double cpu = child_cpu() - cpu0, wall = fcl_now() - t0;
    size_t logsize;
    char *log = read_log(&logsize);
    unsigned lines = count_in(log, "accept: ");
    fprintf(stderr, "emfile: %.0f%% CPU over %.1f s, %u accept lines, %zu log bytes\n",
            100 * cpu / wall, wall, lines, logsize);
    ck_assert_msg(cpu / wall < 0.20, "the server used %.0f%% CPU while out of descriptors",
                  100 * cpu / wall);
    ck_assert_msg(lines >= 1 && lines <= 4, "%u accept lines in %.1f s:\n%s", lines, wall, log);
    ck_assert_ptr_nonnull(strstr(log, "Too many open files"));
    free(log);
    /* Descriptors free again: every waiting connection is served, and a new one. */
    kill(C.pid, SIGUSR1);
    for (int i = 0; i < FLOOD; i++) {
        assert_answered(flood[i], 5);
        fcl_close(flood[i]);
    }
    fcl_conn *late = send_request();
    assert_answered(late, 1.0);
    fcl_close(late);
    stop_child();
}
END_TEST

/* A descriptor limit that cannot hold the connection cap lowers the cap (with a warning, and
 * GET_VALUES tells the lowered value); a flood of silent connections beyond it then meets the
 * cap, where the oldest idle ones make room, instead of accept() failing. */
START_TEST(descriptor_limit_lowers_the_cap_and_silent_floods_do_not_lock_clients_out)
{
    if (skipped_under_valgrind("descriptor limit"))
        return;
    start_child(&(child_opts){.nofile = 200});
    size_t logsize;
    char *log = read_log(&logsize);
    ck_assert_msg(strstr(log, "cannot cover 4096 connections") != NULL, "no warning:\n%s", log);
    free(log);
    fcl_conn *q = fcl_connect(C.addr, 0);
    ck_assert_ptr_nonnull(q);
    fcl_buf nv, b;
    fcl_buf_init(&nv);
    fcl_buf_init(&b);
    fcl_nv_add(&nv, "FCGI_MAX_CONNS", 14, "", 0);
    fcl_put_record(&b, 9 /* GET_VALUES */, 0, nv.data, nv.len, 0);
    ck_assert_int_eq(fcl_send_buf(q, &b), 0);
    fcl_record rec;
    ck_assert_int_eq(fcl_read_record(q, &rec), 1);
    ck_assert_ptr_nonnull(strstr((const char *)rec.content + 2, "136"));
    fcl_record_free(&rec);
    fcl_buf_free(&nv);
    fcl_buf_free(&b);
    fcl_close(q);
    /* 300 connections that never send a byte: more than the cap and than the descriptors. */
    enum { SILENT = 300 };
    fcl_conn *silent[SILENT];
    for (int i = 0; i < SILENT; i++) {
        silent[i] = fcl_connect(C.addr, 0);
        ck_assert_ptr_nonnull(silent[i]);
    }
    fcl_conn *client = send_request();
    assert_answered(client, 2.0);
    fcl_close(client);
    for (int i = 0; i < SILENT; i++)
        fcl_close(silent[i]);
    log = read_log(&logsize);
    ck_assert_msg(count_in(log, "accept: ") == 0, "accept failed:\n%s", log);
    ck_assert_msg(logsize < 16384, "%zu log bytes", logsize);
    free(log);
    stop_child();
}
END_TEST

/* Many connections breaking the protocol cannot fill the log: lines about misbehaving peers are
 * rate-limited, and a line says how many were left out. */
START_TEST(misbehaving_peers_cannot_fill_the_log)
{
    start_child(&(child_opts){0});
    double t0 = fcl_now();
    enum { STORM = 600 };
    for (int i = 0; i < STORM; i++) {
        fcl_conn *c = fcl_connect(C.addr, 0);
        ck_assert_ptr_nonnull(c);
        static const uint8_t bad_version[8] = {9, 1, 0, 1, 0, 8, 0, 0};
        ck_assert_int_eq(fcl_send(c, bad_version, sizeof bad_version), 0);
        ck_assert_int_eq(fcl_wait_eof(c, 5), 0); /* closed for the violation */
        fcl_close(c);
    }
    /* A well-behaved request after the storm is served. */
    fcl_conn *ok = send_request();
    assert_answered(ok, 2);
    fcl_close(ok);
    /* A second later the budget has room again: the next line says what was left out. (Time
     * passing is what is tested here, not an event to wait for.) */
    usleep(1200000);
    fcl_conn *late = fcl_connect(C.addr, 0);
    ck_assert_ptr_nonnull(late);
    static const uint8_t bad[8] = {9, 1, 0, 1, 0, 8, 0, 0};
    ck_assert_int_eq(fcl_send(late, bad, sizeof bad), 0);
    ck_assert_int_eq(fcl_wait_eof(late, 5), 0);
    fcl_close(late);
    double elapsed = fcl_now() - t0;
    char *log = read_log(NULL);
    ck_assert_msg(strstr(log, "lines about misbehaving or closed connections left out") != NULL,
                  "no line tells what was left out");
    unsigned lines = count_in(log, "\n");
    fprintf(stderr, "storm: %d bad connections in %.2f s, %u log lines\n", STORM, elapsed, lines);
    ck_assert_msg(lines <= 110 + (unsigned)(25 * elapsed), "%u log lines for %d connections", lines,
                  STORM);
    free(log);
    stop_child();
    log = NULL;
}
END_TEST

/* ---- restarts under keep-alive load ---------------------------------------------------- */

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
    return n;
}

enum { KA_OK, KA_LOST, KA_OVERLOADED, KA_OTHER, KA_N };

typedef struct ka_load {
    atomic_bool stop;
    atomic_uint counts[KA_N];
    pthread_t th[16];
    int n;
    bool check; /* look for a close before reusing a connection */
} ka_load;

/* True when the application has closed `c` (checked without blocking). */
static bool ka_closed(const fcl_conn *c)
{
    char b;
    ssize_t n = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
}

/* One web-server-like connection: a request with KEEP_CONN, its answer, the next request at
 * once; a new connection when the application closed this one. A request whose connection
 * ended before its END_REQUEST is lost. With `check`, a kept connection is checked for a close
 * before it is reused, as Apache does; without, the next request goes out right after the
 * answer, as bench/fcgi_load and nginx's upstream keepalive may do. */
static void *ka_thread(void *arg)
{
    ka_load *l = arg;
    fcl_conn *c = NULL;
    fcl_buf req;
    fcl_buf_init(&req);
    fcl_put_request(&req, 1, 1, 1 /* KEEP_CONN */, PLAIN, NULL, 0, NULL, 0);
    while (!atomic_load(&l->stop)) {
        if (!c && !(c = fcl_connect(C.addr, 0))) {
            usleep(1000);
            continue;
        }
        c->timeout = 20;
        if (l->check && ka_closed(c)) {
            fcl_close(c);
            c = NULL;
            continue;
        }
        fcl_response r;
        fcl_response_init(&r, 1);
        int sent = fcl_send_buf(c, &req);
        int got = sent == 0 ? fcl_await(c, &r, 1) : -1;
        int outcome = got == 0 && r.protocol_status == 0                   ? KA_OK
                      : got == 0 && r.protocol_status == 2                 ? KA_OVERLOADED
                      : got < 0 && (errno == EPIPE || errno == ECONNRESET) ? KA_LOST
                                                                           : KA_OTHER;
        if (sent != 0 && (errno == EPIPE || errno == ECONNRESET))
            outcome = KA_LOST;
        atomic_fetch_add(&l->counts[outcome], 1);
        fcl_response_free(&r);
        if (outcome != KA_OK) {
            fcl_close(c);
            c = NULL;
        }
    }
    fcl_close(c);
    fcl_buf_free(&req);
    return NULL;
}

/* Waits until the supervisor's workers are two processes none of which is in `old` (two pids),
 * and stores them in `gen`. */
static bool wait_new_generation(const pid_t *old, pid_t *gen, double timeout)
{
    pid_t next[16];
    double deadline = fcl_now() + timeout;
    while (fcl_now() < deadline) {
        int n = children_of(C.pid, next, 16);
        bool fresh = n == 2;
        for (int i = 0; i < n && fresh; i++)
            fresh = next[i] != old[0] && next[i] != old[1];
        if (fresh) {
            memcpy(gen, next, 2 * sizeof *gen);
            return true;
        }
        usleep(10000);
    }
    return false;
}

static void wait_two_workers(pid_t *gen)
{
    double deadline = fcl_now() + 10;
    while (children_of(C.pid, gen, 16) != 2 && fcl_now() < deadline)
        usleep(10000);
    ck_assert_int_eq(children_of(C.pid, gen, 16), 2);
}

/* Five SIGHUPs to a server with two workers under keep-alive load on 16 connections. */
static void restarts_under_load(const child_opts *o, bool check)
{
    start_child(o);
    pid_t gen[16];
    wait_two_workers(gen);
    ka_load l = {0};
    l.n = 16;
    l.check = check;
    for (int i = 0; i < l.n; i++)
        ck_assert_int_eq(pthread_create(&l.th[i], NULL, ka_thread, &l), 0);
    for (int round = 0; round < 5; round++) {
        unsigned before = atomic_load(&l.counts[KA_OK]);
        double deadline = fcl_now() + 10;
        while (atomic_load(&l.counts[KA_OK]) < before + 2000 && fcl_now() < deadline)
            usleep(2000);
        kill(C.pid, SIGHUP);
        /* The next generation: two workers, none of the old ones. */
        ck_assert_msg(wait_new_generation(gen, gen, 20), "round %d: the old workers did not go",
                      round);
    }
    unsigned before = atomic_load(&l.counts[KA_OK]);
    double deadline = fcl_now() + 10;
    while (atomic_load(&l.counts[KA_OK]) < before + 2000 && fcl_now() < deadline)
        usleep(2000);
    atomic_store(&l.stop, true);
    for (int i = 0; i < l.n; i++)
        pthread_join(l.th[i], NULL);
    fprintf(stderr, "restarts (%s, %s): %u answered, %u lost, %u overloaded, %u other\n",
            o->tcp ? "tcp" : "unix", check ? "checking" : "not checking",
            atomic_load(&l.counts[KA_OK]), atomic_load(&l.counts[KA_LOST]),
            atomic_load(&l.counts[KA_OVERLOADED]), atomic_load(&l.counts[KA_OTHER]));
    ck_assert_uint_eq(atomic_load(&l.counts[KA_LOST]), 0);
    ck_assert_uint_eq(atomic_load(&l.counts[KA_OVERLOADED]), 0);
    ck_assert_uint_eq(atomic_load(&l.counts[KA_OTHER]), 0);
    stop_child();
}

/* Five SIGHUPs under keep-alive load on 16 TCP connections, with a client that checks a pooled
 * connection before reusing it as Apache does: every request is answered. */
START_TEST(restarts_under_keep_alive_load_lose_no_request)
{
    restarts_under_load(&(child_opts){.workers = 2, .tcp = true}, true);
}
END_TEST

/* The same on a unix socket with a client that sends its next request right after an answer,
 * without checking the connection: the retiring workers hand their connections over to the new
 * ones instead of closing them, so no request meets a closed connection. */
START_TEST(restarts_lose_no_request_of_a_client_that_does_not_check)
{
    restarts_under_load(&(child_opts){.workers = 2}, false);
}
END_TEST

/* Sends a /pid request on `c` and returns the pid in its answer (0 when there is none). */
static long ask_pid(fcl_conn *c)
{
    static const char *const params[] = {"REQUEST_METHOD", "GET", "SCRIPT_NAME", "/pid", NULL};
    fcl_response r;
    fcl_response_init(&r, 1);
    long pid = 0;
    if (fcl_request(c, 1, 1, 1 /* KEEP_CONN */, params, NULL, 0, &r) == 0 &&
        r.protocol_status == 0) {
        fcl_cgi cgi;
        if (fcl_cgi_parse(&r, &cgi) == 0) {
            char num[32] = "";
            size_t n = cgi.body_len < sizeof num - 1 ? cgi.body_len : sizeof num - 1;
            memcpy(num, cgi.body, n);
            pid = strtol(num, NULL, 10);
            fcl_cgi_free(&cgi);
        }
    }
    fcl_response_free(&r);
    return pid;
}

static bool is_one_of(long pid, const pid_t *set, int n)
{
    for (int i = 0; i < n; i++) {
        if (set[i] == pid)
            return true;
    }
    return false;
}

/* Waits until the log holds `what` `count` times. */
static bool wait_log(const char *what, unsigned count, double timeout)
{
    double deadline = fcl_now() + timeout;
    for (;;) {
        char *log = read_log(NULL);
        unsigned n = count_in(log, what);
        free(log);
        if (n >= count)
            return true;
        if (fcl_now() > deadline)
            return false;
        usleep(20000);
    }
}

/* `n` kept-alive connections served by workers of the old generation are served, after a
 * restart, by ones of the new generation: the same connections, never closed in between. With
 * `stall_new`, the new workers are stopped (SIGSTOP) while the old ones hand over, and
 * continued a second later. */
static void restart_hands_over(int n, bool stall_new)
{
    start_child(&(child_opts){.workers = 2});
    pid_t old[16], gen[16];
    wait_two_workers(old);
    fcl_conn **c = calloc((size_t)n, sizeof *c);
    ck_assert_ptr_nonnull(c);
    for (int i = 0; i < n; i++) {
        c[i] = fcl_connect(C.addr, 0);
        ck_assert_ptr_nonnull(c[i]);
        c[i]->timeout = 10;
        long pid = ask_pid(c[i]);
        ck_assert_msg(is_one_of(pid, old, 2), "answered by %ld, not an old worker", pid);
    }
    kill(C.pid, SIGHUP);
    if (stall_new) {
        pid_t all[16], stalled[2];
        int nstalled = 0;
        double deadline = fcl_now() + 10;
        while (nstalled < 2 && fcl_now() < deadline) {
            int k = children_of(C.pid, all, 16);
            for (int i = 0; i < k && nstalled < 2; i++) {
                if (!is_one_of(all[i], old, 2) && !is_one_of(all[i], stalled, nstalled)) {
                    kill(all[i], SIGSTOP);
                    stalled[nstalled++] = all[i];
                }
            }
        }
        ck_assert_int_eq(nstalled, 2);
        /* Retired once the new workers are ready, or after 5 s without. */
        ck_assert(wait_log("retired by a restart", 2, 10));
        usleep(1000000);
        for (int i = 0; i < nstalled; i++)
            kill(stalled[i], SIGCONT);
    }
    ck_assert_msg(wait_new_generation(old, gen, 20), "the old workers did not go");
    for (int i = 0; i < n; i++) {
        ck_assert_msg(!ka_closed(c[i]), "connection %d was closed", i);
        long pid = ask_pid(c[i]);
        ck_assert_msg(is_one_of(pid, gen, 2), "connection %d answered by %ld, not a new worker", i,
                      pid);
    }
    for (int i = 0; i < n; i++)
        fcl_close(c[i]);
    free(c);
    stop_child();
}

START_TEST(a_restart_hands_kept_connections_to_the_new_workers)
{
    restart_hands_over(8, false);
}
END_TEST

/* Thousands at once: more than the channels hold, so the retiring workers and the supervisor
 * wait for room on them; the more so with the new workers stopped for a while. */
START_TEST(a_restart_hands_over_thousands_of_idle_connections)
{
    bool stall_new = _i == 1;
    struct rlimit rl;
    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    rlim_t want = 3000 + 64;
    if (rl.rlim_cur < want) {
        rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want ? want : rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    restart_hands_over(rl.rlim_cur >= want ? 3000 : (int)rl.rlim_cur - 64, stall_new);
}
END_TEST

/* SIGTERM stops the workers and hands nothing over: a kept-alive idle connection is closed,
 * and the supervisor exits. */
START_TEST(a_stop_closes_kept_connections)
{
    start_child(&(child_opts){.workers = 2});
    pid_t gen[16];
    wait_two_workers(gen);
    fcl_conn *c = fcl_connect(C.addr, 0);
    ck_assert_ptr_nonnull(c);
    c->timeout = 10;
    ck_assert(is_one_of(ask_pid(c), gen, 2));
    kill(C.pid, SIGTERM);
    ck_assert_int_eq(fcl_wait_eof(c, 10), 0);
    fcl_close(c);
    int st;
    ck_assert_int_eq(waitpid(C.pid, &st, 0), C.pid);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "server child ended with %d", st);
    char *log = read_log(NULL);
    ck_assert_msg(strstr(log, "handing") == NULL, "%s", log);
    free(log);
    char path[160];
    snprintf(path, sizeof path, "%s/s", C.dir);
    unlink(path);
    unlink(C.log);
    rmdir(C.dir);
}
END_TEST

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    Suite *s = suite_create("hostile");
    TCase *tc = tcase_create("overload");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, accept_out_of_descriptors_pauses_instead_of_spinning);
    tcase_add_test(tc, descriptor_limit_lowers_the_cap_and_silent_floods_do_not_lock_clients_out);
    tcase_add_test(tc, misbehaving_peers_cannot_fill_the_log);
    tcase_add_test(tc, restarts_under_keep_alive_load_lose_no_request);
    tcase_add_test(tc, restarts_lose_no_request_of_a_client_that_does_not_check);
    tcase_add_test(tc, a_restart_hands_kept_connections_to_the_new_workers);
    tcase_add_loop_test(tc, a_restart_hands_over_thousands_of_idle_connections, 0, 2);
    tcase_add_test(tc, a_stop_closes_kept_connections);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
