/* Integration tests over real sockets: examples/echo runs as a child process (one per test) on
 * a unix socket, on TCP loopback, and on an inherited listening socket (fd 0); the tests talk
 * FastCGI to it with tests/fcgi_client.c. Each test's teardown stops echo with SIGTERM and
 * requires a clean exit (status 0: no sanitizer report, no leak), and echo dies with the test
 * process if a test fails half-way (PR_SET_PDEATHSIG). */
#include "fcgi_client.h"

#include <check.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define ROLE_RESPONDER  1
#define ROLE_AUTHORIZER 2
#define ROLE_FILTER     3
#define KEEP            FCGI_KEEP_CONN
#define MIB             (1024u * 1024u)

enum transport { T_UNIX, T_TCP, T_FD0 };

static pid_t echo_pid = -1;
static char casedir[64]; /* per test case, made and removed by the runner process */
static char sockpath[128];
static char addr[160];

/* ---- small helpers ----------------------------------------------------------------------- */

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static void raise_nofile(rlim_t want)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= want)
        return;
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want ? want : rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
}

static const char *echo_path(void)
{
    static char path[4096];
    const char *root = getenv("FCR_BUILD_ROOT");
    ck_assert_msg(root != NULL, "FCR_BUILD_ROOT is not set (run through meson test)");
    snprintf(path, sizeof path, "%s/examples/echo", root);
    return path;
}

/* Starts echo with `args` (NULL-terminated); with `fd0` >= 0 that socket becomes its fd 0. */
static pid_t spawn_echo(const char *const *args, int fd0)
{
    const char *path = echo_path();
    ck_assert_msg(access(path, X_OK) == 0, "%s is not executable", path);
    pid_t parent = getpid();
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        /* Never outlive the test process, whatever happens to it. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        int in = fd0 >= 0 ? fd0 : open("/dev/null", O_RDONLY);
        if (in < 0 || dup2(in, 0) < 0)
            _exit(127);
        for (int fd = 3; fd < 1024; fd++)
            close(fd);
        char *argv[16];
        int n = 0;
        argv[n++] = (char *)path;
        for (int i = 0; args[i] && n < 14; i++)
            argv[n++] = (char *)args[i];
        argv[n] = NULL;
        execv(path, argv);
        _exit(127);
    }
    return pid;
}

/* Waits until echo accepts connections at `addr`. Returns false when it exited first. */
static bool wait_ready(pid_t pid)
{
    double deadline = fcl_now() + 20;
    while (fcl_now() < deadline) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid)
            return false;
        fcl_conn *c = fcl_connect(addr, 0);
        if (c) {
            fcl_close(c);
            return true;
        }
        sleep_ms(10);
    }
    ck_abort_msg("echo did not start listening on %s", addr);
    return false;
}

static int listen_tcp_any(unsigned short *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sin, sizeof sin), 0);
    socklen_t len = sizeof sin;
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    *port = ntohs(sin.sin_port);
    return fd;
}

/* Starts echo on transport `t`; `max_body` (or NULL) becomes its --max-body. */
static void setup_transport(enum transport t, const char *max_body)
{
    signal(SIGPIPE, SIG_IGN);
    raise_nofile(4096);
    ck_assert_msg(casedir[0] != 0, "no temporary directory");
    snprintf(sockpath, sizeof sockpath, "%s/echo-%ld.sock", casedir, (long)getpid());
    const char *log = getenv("FCR_ECHO_LOG") ? getenv("FCR_ECHO_LOG") : "warn";
    if (t == T_UNIX) {
        snprintf(addr, sizeof addr, "unix:%s", sockpath);
        const char *args[] = {
            "--listen", addr, "--grace", "5", "--log-level", log, max_body ? "--max-body" : NULL,
            max_body,   NULL};
        echo_pid = spawn_echo(args, -1);
        ck_assert_msg(wait_ready(echo_pid), "echo exited at start-up");
    } else if (t == T_TCP) {
        /* Take a free port, release it, and let echo bind it; retry if someone else was
         * faster. */
        for (int attempt = 0;; attempt++) {
            unsigned short port;
            close(listen_tcp_any(&port));
            snprintf(addr, sizeof addr, "tcp:127.0.0.1:%u", port);
            const char *args[] = {"--listen",
                                  addr,
                                  "--grace",
                                  "5",
                                  "--log-level",
                                  log,
                                  max_body ? "--max-body" : NULL,
                                  max_body,
                                  NULL};
            echo_pid = spawn_echo(args, -1);
            if (wait_ready(echo_pid))
                break;
            echo_pid = -1;
            ck_assert_msg(attempt < 10, "echo could not listen on a TCP port");
        }
    } else {
        unsigned short port;
        int fd = listen_tcp_any(&port);
        ck_assert_int_eq(listen(fd, 1024), 0);
        snprintf(addr, sizeof addr, "tcp:127.0.0.1:%u", port);
        const char *args[] = {"--grace", "5", "--log-level", log, max_body ? "--max-body" : NULL,
                              max_body,  NULL};
        echo_pid = spawn_echo(args, fd);
        close(fd);
        ck_assert_msg(wait_ready(echo_pid), "echo exited at start-up");
    }
}

static void setup_unix(void)
{
    setup_transport(T_UNIX, NULL);
}

static void setup_tcp(void)
{
    setup_transport(T_TCP, NULL);
}

static void setup_fd0(void)
{
    setup_transport(T_FD0, NULL);
}

#define SMALL_MAX_BODY 65536

static void setup_unix_small(void)
{
    setup_transport(T_UNIX, "65536");
}

static void setup_tcp_small(void)
{
    setup_transport(T_TCP, "65536");
}

static void teardown(void)
{
    if (echo_pid > 0) {
        int st = 0;
        pid_t pid = echo_pid;
        echo_pid = -1;
        pid_t w = waitpid(pid, &st, WNOHANG);
        bool early = w == pid;
        if (!early) {
            kill(pid, SIGTERM);
            double deadline = fcl_now() + 20;
            while ((w = waitpid(pid, &st, WNOHANG)) == 0 && fcl_now() < deadline)
                sleep_ms(5);
            if (w == 0) {
                kill(pid, SIGKILL);
                waitpid(pid, &st, 0);
                ck_abort_msg("echo did not exit within 20 s of SIGTERM");
            }
        }
        ck_assert_msg(!early, "echo exited during the test (status 0x%x)", st);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0,
                      "echo did not exit cleanly after SIGTERM (status 0x%x)", st);
    }
    if (sockpath[0])
        unlink(sockpath);
}

/* Unchecked fixture: runs in the runner process, so it cleans up even after a test failed
 * (a failing test's process ends at once, without its checked teardown; echo then dies with
 * it through PR_SET_PDEATHSIG). */
static void case_setup(void)
{
    strcpy(casedir, "/tmp/fcr-integ-XXXXXX");
    if (!mkdtemp(casedir)) {
        perror("mkdtemp");
        casedir[0] = 0;
    }
}

static void case_teardown(void)
{
    if (!casedir[0])
        return;
    DIR *d = opendir(casedir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            char path[512];
            snprintf(path, sizeof path, "%s/%s", casedir, e->d_name);
            unlink(path);
        }
        closedir(d);
    }
    rmdir(casedir);
    casedir[0] = 0;
}

static fcl_conn *conn_rcvbuf(int rcvbuf)
{
    fcl_conn *c = fcl_connect(addr, rcvbuf);
    ck_assert_msg(c != NULL, "connect %s: %s", addr, strerror(errno));
    if (strncmp(addr, "tcp:", 4) == 0) {
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    return c;
}

static fcl_conn *conn(void)
{
    return conn_rcvbuf(0);
}

static void check_no_violation(const fcl_conn *c)
{
    ck_assert_msg(c->violations == 0, "%u protocol violation(s), first: %s", c->violations,
                  c->violation);
}

/* fcl_request() that must succeed. */
#define REQUEST(c, id, role, flags, params, in, n, r)                                              \
    ck_assert_msg(fcl_request((c), (id), (role), (flags), (params), (in), (n), (r)) == 0,          \
                  "request %u: %s", (unsigned)(id), strerror(errno))

static void send_buf(fcl_conn *c, const fcl_buf *b)
{
    ck_assert_msg(fcl_send_buf(c, b) == 0, "send: %s", strerror(errno));
}

static void await(fcl_conn *c, fcl_response *rs, size_t n)
{
    ck_assert_msg(fcl_await(c, rs, n) == 0, "await: %s", strerror(errno));
}

/* Bytes sent on `c` that echo has not read yet, or -1 when that cannot be told. A unix socket
 * says it itself (SIOCOUTQ: what the peer has not consumed); over TCP it is what is still in
 * our send queue plus the receive queue of echo's socket (/proc/net/tcp). */
static long peer_unread(const fcl_conn *c)
{
    struct sockaddr_storage me;
    socklen_t len = sizeof me;
    int queued;
    if (getsockname(c->fd, (struct sockaddr *)&me, &len) < 0 || ioctl(c->fd, SIOCOUTQ, &queued) < 0)
        return -1;
    if (me.ss_family == AF_UNIX)
        return queued;
    struct sockaddr_in peer;
    len = sizeof peer;
    if (me.ss_family != AF_INET || getpeername(c->fd, (struct sockaddr *)&peer, &len) < 0)
        return -1;
    unsigned my_port = ntohs(((const struct sockaddr_in *)&me)->sin_port);
    unsigned echo_port = ntohs(peer.sin_port);
    FILE *f = fopen("/proc/net/tcp", "r");
    if (!f)
        return -1;
    char line[512];
    long unread = -1;
    while (unread < 0 && fgets(line, sizeof line, f)) {
        unsigned la, lp, ra, rp, st, tx, rx;
        if (sscanf(line, " %*u: %X:%X %X:%X %X %X:%X", &la, &lp, &ra, &rp, &st, &tx, &rx) == 7 &&
            lp == echo_port && rp == my_port)
            unread = (long)rx + queued;
    }
    fclose(f);
    return unread;
}

/* Waits until echo has read every byte sent on `c`. */
static void wait_read_by_echo(const fcl_conn *c)
{
    double deadline = fcl_now() + 20;
    long n;
    while ((n = peer_unread(c)) != 0) {
        ck_assert_msg(n > 0, "cannot tell how much of its input echo has read");
        ck_assert_msg(fcl_now() < deadline, "echo left %ld bytes unread for 20 s", n);
        poll(NULL, 0, 1);
    }
}

/* Waits until echo has begun to answer on `c` (bytes are there to read). */
static void wait_answer_begun(const fcl_conn *c)
{
    if (c->rx.len > c->rx_off)
        return;
    struct pollfd p = {c->fd, POLLIN, 0};
    ck_assert_msg(poll(&p, 1, 20000) == 1, "echo did not begin to answer within 20 s");
}

/* ---- a minimal strict JSON reader (the tests do not link jansson) ------------------------ */

typedef struct jv {
    char type; /* 'o' object, 'a' array, 's' string, 'n' number, 't', 'f', 'z' (null) */
    char *str; /* string bytes (decoded, NUL-terminated) or number text */
    size_t len;
    size_t n;    /* members or elements */
    char **keys; /* object keys (decoded) */
    size_t *klens;
    struct jv *kids;
} jv;

static void jv_free(jv *v)
{
    free(v->str);
    for (size_t i = 0; i < v->n; i++) {
        if (v->keys)
            free(v->keys[i]);
        jv_free(&v->kids[i]);
    }
    free(v->keys);
    free(v->klens);
    free(v->kids);
    memset(v, 0, sizeof *v);
}

static size_t utf8_len(const uint8_t *p, const uint8_t *e)
{
    uint8_t c = p[0];
    size_t len;
    uint8_t lo = 0x80, hi = 0xbf;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        lo = c == 0xe0 ? 0xa0 : 0x80;
        hi = c == 0xed ? 0x9f : 0xbf;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        lo = c == 0xf0 ? 0x90 : 0x80;
        hi = c == 0xf4 ? 0x8f : 0xbf;
    } else {
        return 0;
    }
    if ((size_t)(e - p) < len || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    return len;
}

static void put_utf8(fcl_buf *b, uint32_t cp)
{
    uint8_t o[4];
    size_t n;
    if (cp < 0x80) {
        o[0] = (uint8_t)cp;
        n = 1;
    } else if (cp < 0x800) {
        o[0] = (uint8_t)(0xc0 | cp >> 6);
        o[1] = (uint8_t)(0x80 | (cp & 0x3f));
        n = 2;
    } else if (cp < 0x10000) {
        o[0] = (uint8_t)(0xe0 | cp >> 12);
        o[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
        o[2] = (uint8_t)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        o[0] = (uint8_t)(0xf0 | cp >> 18);
        o[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3f));
        o[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
        o[3] = (uint8_t)(0x80 | (cp & 0x3f));
        n = 4;
    }
    fcl_buf_add(b, o, n);
}

static void jskip(const uint8_t **p, const uint8_t *e)
{
    while (*p < e && (**p == ' ' || **p == '\t' || **p == '\n' || **p == '\r'))
        (*p)++;
}

static int jhex4(const uint8_t *p, const uint8_t *e, uint32_t *out)
{
    if (e - p < 4)
        return -1;
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        uint8_t c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (uint32_t)(c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

static int jstring(const uint8_t **pp, const uint8_t *e, char **out, size_t *olen)
{
    const uint8_t *p = *pp;
    if (p >= e || *p != '"')
        return -1;
    p++;
    fcl_buf b;
    fcl_buf_init(&b);
    fcl_buf_add(&b, "", 0);
    for (;;) {
        if (p >= e)
            goto bad;
        uint8_t c = *p;
        if (c == '"') {
            p++;
            break;
        }
        if (c < 0x20)
            goto bad;
        if (c != '\\') {
            size_t l = utf8_len(p, e);
            if (l == 0)
                goto bad;
            fcl_buf_add(&b, p, l);
            p += l;
            continue;
        }
        if (++p >= e)
            goto bad;
        c = *p++;
        const char *simple = strchr("\"\\/bfnrt", c);
        if (c && simple) {
            static const char map[] = "\"\\/\b\f\n\r\t";
            fcl_buf_add(&b, &map[simple - "\"\\/bfnrt"], 1);
            continue;
        }
        if (c != 'u')
            goto bad;
        uint32_t cp, lo;
        if (jhex4(p, e, &cp) < 0)
            goto bad;
        p += 4;
        if (cp >= 0xdc00 && cp <= 0xdfff)
            goto bad;
        if (cp >= 0xd800 && cp <= 0xdbff) {
            if (e - p < 6 || p[0] != '\\' || p[1] != 'u' || jhex4(p + 2, e, &lo) < 0 ||
                lo < 0xdc00 || lo > 0xdfff)
                goto bad;
            p += 6;
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
        }
        put_utf8(&b, cp);
    }
    *pp = p;
    *out = (char *)b.data;
    *olen = b.len;
    return 0;
bad:
    fcl_buf_free(&b);
    return -1;
}

static int jvalue(const uint8_t **pp, const uint8_t *e, jv *v, int depth);

static int jmembers(const uint8_t **pp, const uint8_t *e, jv *v, int depth, bool object)
{
    const uint8_t *p = *pp + 1;
    char close = object ? '}' : ']';
    jskip(&p, e);
    if (p < e && *p == close) {
        *pp = p + 1;
        return 0;
    }
    for (;;) {
        v->kids = realloc(v->kids, (v->n + 1) * sizeof *v->kids);
        if (object) {
            v->keys = realloc(v->keys, (v->n + 1) * sizeof *v->keys);
            v->klens = realloc(v->klens, (v->n + 1) * sizeof *v->klens);
        }
        memset(&v->kids[v->n], 0, sizeof v->kids[v->n]);
        if (object) {
            v->keys[v->n] = NULL;
            jskip(&p, e);
            if (jstring(&p, e, &v->keys[v->n], &v->klens[v->n]) < 0) {
                v->n++;
                return -1;
            }
            jskip(&p, e);
            if (p >= e || *p++ != ':') {
                v->n++;
                return -1;
            }
        }
        int rc = jvalue(&p, e, &v->kids[v->n], depth + 1);
        v->n++;
        if (rc < 0)
            return -1;
        jskip(&p, e);
        if (p < e && *p == ',') {
            p++;
            continue;
        }
        if (p < e && *p == close) {
            *pp = p + 1;
            return 0;
        }
        return -1;
    }
}

static int jvalue(const uint8_t **pp, const uint8_t *e, jv *v, int depth)
{
    const uint8_t *p = *pp;
    jskip(&p, e);
    if (p >= e || depth > 32)
        return -1;
    int rc = 0;
    if (*p == '{' || *p == '[') {
        v->type = *p == '{' ? 'o' : 'a';
        rc = jmembers(&p, e, v, depth, *p == '{');
    } else if (*p == '"') {
        v->type = 's';
        rc = jstring(&p, e, &v->str, &v->len);
    } else if (e - p >= 4 && memcmp(p, "true", 4) == 0) {
        v->type = 't';
        p += 4;
    } else if (e - p >= 5 && memcmp(p, "false", 5) == 0) {
        v->type = 'f';
        p += 5;
    } else if (e - p >= 4 && memcmp(p, "null", 4) == 0) {
        v->type = 'z';
        p += 4;
    } else {
        const uint8_t *s = p;
        if (p < e && *p == '-')
            p++;
        if (p < e && *p == '0') {
            p++;
        } else if (p < e && *p >= '1' && *p <= '9') {
            while (p < e && *p >= '0' && *p <= '9')
                p++;
        } else {
            return -1;
        }
        if (p < e && *p == '.') {
            if (++p >= e || *p < '0' || *p > '9')
                return -1;
            while (p < e && *p >= '0' && *p <= '9')
                p++;
        }
        if (p < e && (*p == 'e' || *p == 'E')) {
            p++;
            if (p < e && (*p == '+' || *p == '-'))
                p++;
            if (p >= e || *p < '0' || *p > '9')
                return -1;
            while (p < e && *p >= '0' && *p <= '9')
                p++;
        }
        v->type = 'n';
        v->len = (size_t)(p - s);
        v->str = strndup((const char *)s, v->len);
    }
    *pp = p;
    return rc;
}

/* Parses a whole document. Returns 0, or -1 (then `v` is freed). */
static int jparse(const uint8_t *p, size_t n, jv *v)
{
    memset(v, 0, sizeof *v);
    const uint8_t *e = p + n;
    if (jvalue(&p, e, v, 0) < 0) {
        jv_free(v);
        return -1;
    }
    jskip(&p, e);
    if (p != e) {
        jv_free(v);
        return -1;
    }
    return 0;
}

static const jv *jget(const jv *obj, const char *key, size_t klen)
{
    if (!obj || obj->type != 'o')
        return NULL;
    for (size_t i = 0; i < obj->n; i++)
        if (obj->klens[i] == klen && memcmp(obj->keys[i], key, klen) == 0)
            return &obj->kids[i];
    return NULL;
}

/* ---- checking echo's answers ------------------------------------------------------------- */

static void check_status(const fcl_cgi *cgi, const char *want)
{
    char v[256];
    ck_assert_msg(fcl_cgi_header(cgi, "Status", v, sizeof v), "no Status header in [%s]",
                  cgi->head);
    ck_assert_str_eq(v, want);
}

static void check_header(const fcl_cgi *cgi, const char *name, const char *want)
{
    char v[256];
    ck_assert_msg(fcl_cgi_header(cgi, name, v, sizeof v), "no %s header in [%s]", name, cgi->head);
    ck_assert_str_eq(v, want);
}

/* A parsed JSON answer of echo's Responder; free with jv_free. */
static void parse_json_answer(const fcl_response *r, jv *doc)
{
    ck_assert_msg(r->ended, "request %u did not end", r->id);
    ck_assert_uint_eq(r->protocol_status, FCGI_REQUEST_COMPLETE);
    fcl_cgi cgi;
    ck_assert_msg(fcl_cgi_parse(r, &cgi) == 0, "request %u: no CRLF CRLF after the headers", r->id);
    check_status(&cgi, "200 OK");
    check_header(&cgi, "Content-Type", "application/json");
    ck_assert_msg(jparse(cgi.body, cgi.body_len, doc) == 0, "request %u: invalid JSON: %.*s", r->id,
                  (int)(cgi.body_len > 300 ? 300 : cgi.body_len), (const char *)cgi.body);
    fcl_cgi_free(&cgi);
    ck_assert_int_eq(doc->type, 'o');
    const jv *role = jget(doc, "role", 4);
    ck_assert_ptr_nonnull(role);
    ck_assert_int_eq(role->type, 's');
    ck_assert_str_eq(role->str, "RESPONDER");
    const jv *params = jget(doc, "params", 6);
    ck_assert_ptr_nonnull(params);
    ck_assert_int_eq(params->type, 'o');
}

static void check_json_body(const jv *doc, const void *in, size_t in_len)
{
    const jv *nb = jget(doc, "stdin_bytes", 11);
    ck_assert_ptr_nonnull(nb);
    ck_assert_int_eq(nb->type, 'n');
    char want[64];
    snprintf(want, sizeof want, "%zu", in_len);
    ck_assert_str_eq(nb->str, want);
    const jv *h = jget(doc, "stdin_fnv1a64", 13);
    ck_assert_ptr_nonnull(h);
    ck_assert_int_eq(h->type, 's');
    snprintf(want, sizeof want, "%016llx", (unsigned long long)fcl_fnv1a64(in, in_len));
    ck_assert_str_eq(h->str, want);
}

static void check_param(const jv *doc, const char *name, size_t nlen, const void *value,
                        size_t vlen)
{
    const jv *v = jget(jget(doc, "params", 6), name, nlen);
    ck_assert_msg(v != NULL, "param %.*s missing", (int)nlen, name);
    ck_assert_int_eq(v->type, 's');
    ck_assert_msg(v->len == vlen && memcmp(v->str, value, vlen) == 0,
                  "param %.*s: got [%.*s] (%zu bytes), want %zu bytes", (int)nlen, name,
                  (int)v->len, v->str, v->len, vlen);
}

/* Checks a Responder JSON answer: stdin length and hash, and every param of `params` (a
 * NULL-terminated name, value list) with its value, and no others. */
static void check_json(const fcl_response *r, const void *in, size_t in_len,
                       const char *const *params)
{
    jv doc;
    parse_json_answer(r, &doc);
    check_json_body(&doc, in, in_len);
    size_t count = 0;
    for (size_t i = 0; params && params[i]; i += 2, count++)
        check_param(&doc, params[i], strlen(params[i]), params[i + 1], strlen(params[i + 1]));
    ck_assert_uint_eq(jget(&doc, "params", 6)->n, count);
    jv_free(&doc);
}

/* Checks a raw (raw=1) answer: the body is `in`. */
static void check_raw(const fcl_response *r, const void *in, size_t in_len)
{
    ck_assert_msg(r->ended, "request %u did not end", r->id);
    ck_assert_uint_eq(r->protocol_status, FCGI_REQUEST_COMPLETE);
    fcl_cgi cgi;
    ck_assert_int_eq(fcl_cgi_parse(r, &cgi), 0);
    check_status(&cgi, "200 OK");
    check_header(&cgi, "Content-Type", "application/octet-stream");
    ck_assert_uint_eq(cgi.body_len, in_len);
    ck_assert_msg(in_len == 0 || memcmp(cgi.body, in, in_len) == 0,
                  "request %u: raw body differs from the input", r->id);
    fcl_cgi_free(&cgi);
}

/* One ordinary request on `c` that must succeed. */
static void ok_request(fcl_conn *c, uint16_t id, uint8_t flags)
{
    char tag[32];
    snprintf(tag, sizeof tag, "ok-%u", id);
    const char *params[] = {"REQUEST_METHOD", "POST", "QUERY_STRING", "", "TAG", tag, NULL};
    fcl_response r;
    ck_assert_msg(fcl_request(c, id, ROLE_RESPONDER, flags, params, tag, strlen(tag), &r) == 0,
                  "request %u: %s", id, strerror(errno));
    check_json(&r, tag, strlen(tag), params);
    fcl_response_free(&r);
    check_no_violation(c);
}

static uint8_t *random_bytes(size_t n, uint64_t seed)
{
    uint8_t *p = malloc(n ? n : 1);
    ck_assert_ptr_nonnull(p);
    fcl_fill_random(p, n, seed);
    return p;
}

/* Cuts `b` into whole records: returns their count and fills `ends` (malloc'd) with the end
 * offset of each. */
static size_t record_ends(const fcl_buf *b, size_t **ends)
{
    size_t n = 0, off = 0;
    *ends = NULL;
    while (off < b->len) {
        const uint8_t *h = b->data + off;
        off += FCGI_HEADER_LEN + (size_t)(h[4] << 8 | h[5]) + h[6];
        *ends = realloc(*ends, (n + 1) * sizeof **ends);
        (*ends)[n++] = off;
    }
    return n;
}

/* ---- tests ------------------------------------------------------------------------------- */

START_TEST(keep_alive_100_requests)
{
    fcl_conn *c = conn();
    for (unsigned i = 0; i < 100; i++) {
        char n[16], body[64];
        snprintf(n, sizeof n, "%u", i);
        int blen = snprintf(body, sizeof body, "request body number %u", i);
        const char *params[] = {"REQUEST_METHOD", "POST", "N", n, NULL};
        fcl_response r;
        uint16_t id = (uint16_t)(i % 3 + 1);
        REQUEST(c, id, ROLE_RESPONDER, KEEP, params, body, (size_t)blen, &r);
        check_json(&r, body, (size_t)blen, params);
        fcl_response_free(&r);
    }
    check_no_violation(c);
    /* Still open: nothing arrives, no EOF, and it serves one more request. */
    ck_assert(fcl_idle_for(c, 0.3));
    ok_request(c, 7, KEEP);
    fcl_close(c);
}
END_TEST

START_TEST(close_without_keep_alive)
{
    for (int i = 0; i < 10; i++) {
        fcl_conn *c = conn();
        if (i % 2 == 0) {
            ok_request(c, 1, 0);
        } else {
            /* The request, then a record for an inactive id in the same write: the server
             * must drain what it has not read rather than reset the connection. */
            fcl_buf b;
            fcl_buf_init(&b);
            const char *params[] = {"REQUEST_METHOD", "GET", NULL};
            fcl_put_request(&b, 1, ROLE_RESPONDER, 0, params, NULL, 0, NULL, 0);
            uint8_t junk[4000];
            fcl_fill_random(junk, sizeof junk, (uint64_t)i);
            fcl_put_stream(&b, FCGI_STDIN, 99, junk, sizeof junk, 0, FCL_PAD8, false);
            send_buf(c, &b);
            fcl_buf_free(&b);
            fcl_response r;
            fcl_response_init(&r, 1);
            await(c, &r, 1);
            check_json(&r, NULL, 0, params);
            fcl_response_free(&r);
        }
        int rc = fcl_wait_eof(c, 10);
        ck_assert_msg(rc == 0, "connection %d: expected a clean EOF after END_REQUEST, got %s", i,
                      strerror(errno));
        check_no_violation(c);
        fcl_close(c);
    }
}
END_TEST

START_TEST(multiplex_16_interleaved)
{
    enum { N = 16 };
    fcl_conn *c = conn();
    fcl_buf reqs[N];
    size_t *ends[N], nrec[N], next[N];
    uint8_t *in[N];
    size_t in_len[N];
    char tags[N][32];
    const char *params[N][7];
    for (int i = 0; i < N; i++) {
        uint16_t id = (uint16_t)(i == N - 1 ? 65535 : i * 7 + 1);
        in_len[i] = (size_t)(i * 9973) % 150000;
        in[i] = random_bytes(in_len[i], (uint64_t)i + 100);
        snprintf(tags[i], sizeof tags[i], "request-%u", id);
        const char *p[] = {"REQUEST_METHOD", "PUT", "TAG", tags[i], "QUERY_STRING", "a=b", NULL};
        memcpy(params[i], p, sizeof p);
        fcl_buf nv;
        fcl_buf_init(&nv);
        for (int k = 0; p[k]; k += 2)
            fcl_nv_adds(&nv, p[k], p[k + 1]);
        fcl_buf_init(&reqs[i]);
        fcl_put_begin(&reqs[i], id, ROLE_RESPONDER, KEEP);
        fcl_put_stream(&reqs[i], FCGI_PARAMS, id, nv.data, nv.len, 5, FCL_PAD8, true);
        fcl_put_stream(&reqs[i], FCGI_STDIN, id, in[i], in_len[i], 8192 + (size_t)i, i % 8, true);
        fcl_buf_free(&nv);
        nrec[i] = record_ends(&reqs[i], &ends[i]);
        next[i] = 0;
    }
    /* Round robin: one record of each request in turn. */
    fcl_buf wire;
    fcl_buf_init(&wire);
    for (bool more = true; more;) {
        more = false;
        for (int i = 0; i < N; i++) {
            if (next[i] >= nrec[i])
                continue;
            size_t from = next[i] ? ends[i][next[i] - 1] : 0;
            fcl_buf_add(&wire, reqs[i].data + from, ends[i][next[i]] - from);
            next[i]++;
            more = true;
        }
    }
    send_buf(c, &wire);
    fcl_response rs[N];
    for (int i = 0; i < N; i++)
        fcl_response_init(&rs[i], (uint16_t)(i == N - 1 ? 65535 : i * 7 + 1));
    await(c, rs, N);
    check_no_violation(c);
    for (int i = 0; i < N; i++) {
        check_json(&rs[i], in[i], in_len[i], params[i]);
        ck_assert_uint_eq(rs[i].end_records, 1);
        fcl_response_free(&rs[i]);
        fcl_buf_free(&reqs[i]);
        free(ends[i]);
        free(in[i]);
    }
    fcl_buf_free(&wire);
    ok_request(c, 3, KEEP);
    fcl_close(c);
}
END_TEST

START_TEST(abort_mid_stdin)
{
    fcl_conn *c = conn();
    const char *params[] = {"REQUEST_METHOD", "POST", "CONTENT_LENGTH", "100000", NULL};
    uint8_t *in = random_bytes(100000, 5);
    fcl_buf nv, b;
    fcl_buf_init(&nv);
    fcl_buf_init(&b);
    fcl_nv_adds(&nv, params[0], params[1]);
    fcl_nv_adds(&nv, params[2], params[3]);
    fcl_put_begin(&b, 1, ROLE_RESPONDER, KEEP);
    fcl_put_stream(&b, FCGI_PARAMS, 1, nv.data, nv.len, 0, FCL_PAD8, true);
    fcl_put_stream(&b, FCGI_STDIN, 1, in, 30000, 10000, FCL_PAD8, false);
    fcl_put_abort(&b, 1);
    send_buf(c, &b);
    fcl_response r;
    fcl_response_init(&r, 1);
    await(c, &r, 1);
    ck_assert_uint_eq(r.end_records, 1);
    ck_assert_uint_eq(r.protocol_status, FCGI_REQUEST_COMPLETE);
    fcl_response_free(&r);
    /* The rest of its stdin now belongs to an inactive id and is ignored; id 1 is free again. */
    fcl_buf_clear(&b);
    fcl_put_stream(&b, FCGI_STDIN, 1, in + 30000, 70000, 10000, FCL_PAD8, true);
    fcl_put_abort(&b, 1);
    send_buf(c, &b);
    ok_request(c, 2, KEEP);
    ok_request(c, 1, KEEP);
    ck_assert(fcl_idle_for(c, 0.2));
    check_no_violation(c);
    fcl_buf_free(&b);
    fcl_buf_free(&nv);
    free(in);
    fcl_close(c);
}
END_TEST

/* Decodes a name-value stream into `names`/`values` (at most `max`). Returns the count or -1. */
static int nv_decode(const uint8_t *p, size_t n, char names[][64], char values[][64], int max)
{
    size_t off = 0;
    int count = 0;
    while (off < n) {
        uint32_t len[2];
        for (int k = 0; k < 2; k++) {
            if (off >= n)
                return -1;
            if (p[off] < 0x80) {
                len[k] = p[off++];
            } else {
                if (n - off < 4)
                    return -1;
                len[k] = ((uint32_t)(p[off] & 0x7f) << 24) | (uint32_t)p[off + 1] << 16 |
                         (uint32_t)p[off + 2] << 8 | p[off + 3];
                off += 4;
            }
        }
        if (len[0] > n - off || len[1] > n - off - len[0] || len[0] >= 64 || len[1] >= 64 ||
            count >= max)
            return -1;
        memcpy(names[count], p + off, len[0]);
        names[count][len[0]] = 0;
        off += len[0];
        memcpy(values[count], p + off, len[1]);
        values[count][len[1]] = 0;
        off += len[1];
        count++;
    }
    return count;
}

static bool positive_integer(const char *s)
{
    if (!*s || *s == '0')
        return false;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return false;
    return true;
}

START_TEST(get_values_mid_request)
{
    fcl_conn *c = conn();
    const char *params[] = {"REQUEST_METHOD", "GET", "SCRIPT_NAME", "/gv",
                            "QUERY_STRING",   "x",   NULL};
    fcl_buf nv, b, q;
    fcl_buf_init(&nv);
    fcl_buf_init(&b);
    fcl_buf_init(&q);
    for (int k = 0; params[k]; k += 2)
        fcl_nv_adds(&nv, params[k], params[k + 1]);
    /* BEGIN and the first PARAMS record (which ends inside a pair) ... */
    size_t cut = 10;
    fcl_put_begin(&b, 1, ROLE_RESPONDER, KEEP);
    fcl_put_record(&b, FCGI_PARAMS, 1, nv.data, cut, 0);
    /* ... then GET_VALUES, with an unknown name and a duplicate. */
    fcl_nv_adds(&q, "FCGI_MAX_CONNS", "");
    fcl_nv_adds(&q, "FCGI_NO_SUCH_VALUE", "");
    fcl_nv_adds(&q, "FCGI_MAX_REQS", "");
    fcl_nv_adds(&q, "FCGI_MPXS_CONNS", "");
    fcl_nv_adds(&q, "FCGI_MPXS_CONNS", "");
    fcl_put_record(&b, FCGI_GET_VALUES, 0, q.data, q.len, 3);
    send_buf(c, &b);
    /* The answer comes while the request is still waiting for the rest of its params. */
    fcl_record rec;
    ck_assert_int_eq(fcl_read_record(c, &rec), 1);
    ck_assert_uint_eq(rec.h.type, FCGI_GET_VALUES_RESULT);
    ck_assert_uint_eq(rec.h.id, 0);
    char names[8][64], values[8][64];
    int n = nv_decode(rec.content, rec.h.content_len, names, values, 8);
    ck_assert_int_eq(n, 3);
    bool seen[3] = {false, false, false};
    for (int i = 0; i < n; i++) {
        if (strcmp(names[i], "FCGI_MAX_CONNS") == 0) {
            ck_assert(!seen[0]);
            seen[0] = true;
            ck_assert_msg(positive_integer(values[i]), "FCGI_MAX_CONNS=%s", values[i]);
        } else if (strcmp(names[i], "FCGI_MAX_REQS") == 0) {
            ck_assert(!seen[1]);
            seen[1] = true;
            ck_assert_msg(positive_integer(values[i]), "FCGI_MAX_REQS=%s", values[i]);
        } else if (strcmp(names[i], "FCGI_MPXS_CONNS") == 0) {
            ck_assert(!seen[2]);
            seen[2] = true;
            ck_assert_str_eq(values[i], "1");
        } else {
            ck_abort_msg("unexpected name %s in GET_VALUES_RESULT", names[i]);
        }
    }
    fcl_record_free(&rec);
    /* The request goes on and completes. */
    fcl_buf_clear(&b);
    fcl_put_record(&b, FCGI_PARAMS, 1, nv.data + cut, nv.len - cut, 0);
    fcl_put_record(&b, FCGI_PARAMS, 1, NULL, 0, 0);
    fcl_put_record(&b, FCGI_STDIN, 1, "abc", 3, 5);
    fcl_put_record(&b, FCGI_STDIN, 1, NULL, 0, 0);
    send_buf(c, &b);
    fcl_response r;
    fcl_response_init(&r, 1);
    await(c, &r, 1);
    check_json(&r, "abc", 3, params);
    fcl_response_free(&r);
    check_no_violation(c);
    ck_assert_uint_eq(c->nmgmt, 0);
    fcl_buf_free(&nv);
    fcl_buf_free(&b);
    fcl_buf_free(&q);
    fcl_close(c);
}
END_TEST

START_TEST(unknown_role)
{
    fcl_conn *c = conn();
    const char *params[] = {"REQUEST_METHOD", "GET", NULL};
    fcl_buf b;
    fcl_buf_init(&b);
    fcl_put_request(&b, 4, 9, KEEP, params, "xyz", 3, NULL, 0);
    send_buf(c, &b);
    fcl_response r;
    fcl_response_init(&r, 4);
    await(c, &r, 1);
    ck_assert_uint_eq(r.protocol_status, FCGI_UNKNOWN_ROLE);
    ck_assert_uint_eq(r.end_records, 1);
    ck_assert_uint_eq(r.out_records, 0);
    ck_assert_uint_eq(r.out.len, 0);
    fcl_response_free(&r);
    /* The connection goes on (the rejected request's records were ignored). */
    ok_request(c, 4, KEEP);
    ok_request(c, 5, KEEP);
    check_no_violation(c);
    fcl_buf_free(&b);
    fcl_close(c);
}
END_TEST

START_TEST(unknown_management_type)
{
    fcl_conn *c = conn();
    const uint8_t types[] = {12, 42, 255, FCGI_STDOUT, FCGI_UNKNOWN_TYPE};
    for (size_t i = 0; i < sizeof types; i++) {
        fcl_buf b;
        fcl_buf_init(&b);
        fcl_put_record(&b, types[i], 0, "some content", 12, (uint8_t)(i * 3));
        send_buf(c, &b);
        fcl_buf_free(&b);
        fcl_record rec;
        ck_assert_int_eq(fcl_read_record(c, &rec), 1);
        ck_assert_uint_eq(rec.h.type, FCGI_UNKNOWN_TYPE);
        ck_assert_uint_eq(rec.h.id, 0);
        ck_assert_uint_eq(rec.h.content_len, 8);
        ck_assert_uint_eq(rec.content[0], types[i]);
        for (int k = 1; k < 8; k++)
            ck_assert_uint_eq(rec.content[k], 0);
        fcl_record_free(&rec);
    }
    ok_request(c, 1, KEEP);
    fcl_close(c);
}
END_TEST

START_TEST(body_8mib_json)
{
    size_t n = 8 * MIB;
    uint8_t *in = random_bytes(n, 8);
    fcl_conn *c = conn();
    const char *params[] = {"REQUEST_METHOD", "POST", "CONTENT_LENGTH", "8388608", NULL};
    fcl_response r;
    REQUEST(c, 1, ROLE_RESPONDER, KEEP, params, in, n, &r);
    check_json(&r, in, n, params);
    fcl_response_free(&r);
    check_no_violation(c);
    free(in);
    fcl_close(c);
}
END_TEST

START_TEST(body_8mib_raw)
{
    size_t n = 8 * MIB;
    uint8_t *in = random_bytes(n, 9);
    fcl_conn *c = conn();
    const char *params[] = {"REQUEST_METHOD", "POST", "QUERY_STRING", "raw=1", NULL};
    fcl_response r;
    REQUEST(c, 1, ROLE_RESPONDER, KEEP, params, in, n, &r);
    check_raw(&r, in, n);
    ck_assert_uint_ge(r.out_records, (n + 65534) / 65535);
    ck_assert_uint_eq(r.out_empty, 1);
    fcl_response_free(&r);
    check_no_violation(c);
    ok_request(c, 2, KEEP);
    free(in);
    fcl_close(c);
}
END_TEST

START_TEST(stalled_reader_does_not_block_others)
{
    size_t n = 8 * MIB;
    uint8_t *in = random_bytes(n, 10);
    /* A small receive buffer, and nobody reads: echo's writes to it stall. */
    fcl_conn *stuck = conn_rcvbuf(4096);
    const char *params[] = {"REQUEST_METHOD", "POST", "QUERY_STRING", "raw=1", NULL};
    fcl_buf b;
    fcl_buf_init(&b);
    fcl_put_request(&b, 1, ROLE_RESPONDER, KEEP, params, in, n, NULL, 0);
    send_buf(stuck, &b);
    fcl_buf_free(&b);
    /* The answer has begun: it stalls now, 8 MiB against a reader that does not read. */
    wait_answer_begun(stuck);
    /* Meanwhile others are served. */
    fcl_conn *other = conn();
    other->timeout = 10;
    double t0 = fcl_now();
    for (unsigned i = 0; i < 50; i++)
        ok_request(other, (uint16_t)(i + 1), KEEP);
    fcl_conn *third = conn();
    third->timeout = 10;
    ok_request(third, 1, 0);
    double took = fcl_now() - t0;
    ck_assert_msg(took < 10, "51 small requests took %.1f s next to a stalled reader", took);
    fcl_close(other);
    fcl_close(third);
    /* The stalled response is intact once its reader wakes up. */
    fcl_response r;
    fcl_response_init(&r, 1);
    await(stuck, &r, 1);
    check_raw(&r, in, n);
    fcl_response_free(&r);
    check_no_violation(stuck);
    fcl_close(stuck);
    free(in);
}
END_TEST

START_TEST(concurrent_500_connections)
{
    enum { N = 500 };
    raise_nofile(N + 200);
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    ck_assert_msg(rl.rlim_cur >= N + 50, "RLIMIT_NOFILE %llu is too low for %d connections",
                  (unsigned long long)rl.rlim_cur, N);
    fcl_conn **cs = calloc(N, sizeof *cs);
    char(*tags)[16] = calloc(N, sizeof *tags);
    ck_assert(cs && tags);
    for (int i = 0; i < N; i++) {
        cs[i] = conn();
        snprintf(tags[i], sizeof tags[i], "conn-%d", i);
        const char *params[] = {"REQUEST_METHOD", "POST", "TAG", tags[i], NULL};
        fcl_buf b;
        fcl_buf_init(&b);
        fcl_put_request(&b, 1, ROLE_RESPONDER, KEEP, params, tags[i], strlen(tags[i]), NULL, 0);
        send_buf(cs[i], &b);
        fcl_buf_free(&b);
    }
    for (int i = 0; i < N; i++) {
        const char *params[] = {"REQUEST_METHOD", "POST", "TAG", tags[i], NULL};
        fcl_response r;
        fcl_response_init(&r, 1);
        ck_assert_msg(fcl_await(cs[i], &r, 1) == 0, "connection %d: %s", i, strerror(errno));
        check_json(&r, tags[i], strlen(tags[i]), params);
        fcl_response_free(&r);
        check_no_violation(cs[i]);
    }
    for (int i = 0; i < N; i++)
        fcl_close(cs[i]);
    free(cs);
    free(tags);
}
END_TEST

START_TEST(trickling_client)
{
    fcl_conn *slow = conn();
    fcl_conn *fast = conn();
    fast->timeout = 10;
    const char *params[] = {"REQUEST_METHOD", "POST",    "SCRIPT_NAME", "/trickle",
                            "QUERY_STRING",   "a=1&b=2", "HTTP_HOST",   "example.org",
                            "CONTENT_LENGTH", "64",      NULL};
    uint8_t in[64];
    fcl_fill_random(in, sizeof in, 11);
    fcl_buf b;
    fcl_buf_init(&b);
    fcl_put_request(&b, 9, ROLE_RESPONDER, KEEP, params, in, sizeof in, NULL, 0);
    unsigned fast_id = 1;
    for (size_t i = 0; i < b.len; i++) {
        ck_assert_int_eq(fcl_send(slow, b.data + i, 1), 0);
        sleep_ms(2);
        if (i % 40 == 20) {
            double t0 = fcl_now();
            ok_request(fast, (uint16_t)fast_id++, KEEP);
            double took = fcl_now() - t0;
            ck_assert_msg(took < 5, "a normal request took %.1f s next to a trickling one", took);
        }
    }
    fcl_response r;
    fcl_response_init(&r, 9);
    await(slow, &r, 1);
    check_json(&r, in, sizeof in, params);
    fcl_response_free(&r);
    check_no_violation(slow);
    ck_assert_uint_ge(fast_id, 4);
    fcl_buf_free(&b);
    fcl_close(slow);
    fcl_close(fast);
}
END_TEST

static void authorize(fcl_conn *c, uint16_t id, uint8_t flags, const char *token,
                      const char *want_status)
{
    const char *params[] = {"REQUEST_METHOD",
                            "GET",
                            "REQUEST_URI",
                            "/private",
                            "FCGI_APACHE_ROLE",
                            "AUTHORIZER",
                            token ? "HTTP_AUTHORIZATION" : NULL,
                            token,
                            NULL};
    fcl_buf b;
    fcl_buf_init(&b);
    fcl_put_begin(&b, id, ROLE_AUTHORIZER, flags);
    fcl_buf nv;
    fcl_buf_init(&nv);
    for (int k = 0; params[k]; k += 2)
        fcl_nv_adds(&nv, params[k], params[k + 1]);
    fcl_put_stream(&b, FCGI_PARAMS, id, nv.data, nv.len, 0, FCL_PAD8, true);
    fcl_buf_free(&nv);
    send_buf(c, &b);
    fcl_buf_free(&b);
    fcl_response r;
    fcl_response_init(&r, id);
    await(c, &r, 1);
    ck_assert_uint_eq(r.protocol_status, FCGI_REQUEST_COMPLETE);
    fcl_cgi cgi;
    ck_assert_int_eq(fcl_cgi_parse(&r, &cgi), 0);
    check_status(&cgi, want_status);
    char v[64];
    if (strcmp(want_status, "200 OK") == 0) {
        check_header(&cgi, "Variable-REMOTE_USER", "alice");
        ck_assert_uint_eq(cgi.body_len, 0);
    } else {
        ck_assert(!fcl_cgi_header(&cgi, "Variable-REMOTE_USER", v, sizeof v));
        ck_assert_uint_gt(cgi.body_len, 0);
        ck_assert_uint_lt(cgi.body_len, 200);
    }
    fcl_cgi_free(&cgi);
    fcl_response_free(&r);
    check_no_violation(c);
}

START_TEST(authorizer_role)
{
    fcl_conn *c = conn();
    authorize(c, 1, KEEP, "Bearer good", "200 OK");
    authorize(c, 2, KEEP, "Bearer bad", "401 Unauthorized");
    authorize(c, 3, KEEP, NULL, "401 Unauthorized");
    authorize(c, 4, KEEP, "Bearer good ", "401 Unauthorized");
    authorize(c, 1, KEEP, "Bearer good", "200 OK");
    fcl_close(c);
    /* Like mod_authnz_fcgi: a new connection per check, KEEP_CONN off. */
    for (int i = 0; i < 3; i++) {
        c = conn();
        authorize(c, 1, 0, i == 1 ? "Bearer nope" : "Bearer good",
                  i == 1 ? "401 Unauthorized" : "200 OK");
        ck_assert_int_eq(fcl_wait_eof(c, 10), 0);
        fcl_close(c);
    }
}
END_TEST

START_TEST(filter_role)
{
    fcl_conn *c = conn();
    size_t dn = 200000;
    uint8_t *data = random_bytes(dn, 12);
    char dlen[32];
    snprintf(dlen, sizeof dlen, "%zu", dn);
    const char *params[] = {"REQUEST_METHOD",
                            "GET",
                            "FCGI_DATA_LAST_MOD",
                            "1700000000",
                            "FCGI_DATA_LENGTH",
                            dlen,
                            "CONTENT_LENGTH",
                            "5",
                            NULL};
    for (int round = 0; round < 2; round++) {
        fcl_buf b;
        fcl_buf_init(&b);
        size_t this_dn = round == 0 ? dn : 0;
        fcl_put_request(&b, 3, ROLE_FILTER, KEEP, params, "stdin", 5, data, this_dn);
        send_buf(c, &b);
        fcl_buf_free(&b);
        fcl_response r;
        fcl_response_init(&r, 3);
        await(c, &r, 1);
        ck_assert_uint_eq(r.protocol_status, FCGI_REQUEST_COMPLETE);
        fcl_cgi cgi;
        ck_assert_int_eq(fcl_cgi_parse(&r, &cgi), 0);
        check_status(&cgi, "200 OK");
        check_header(&cgi, "X-Stdin-Bytes", "5");
        char want[32];
        snprintf(want, sizeof want, "%zu", this_dn);
        check_header(&cgi, "X-Data-Bytes", want);
        ck_assert_uint_eq(cgi.body_len, this_dn);
        ck_assert(this_dn == 0 || memcmp(cgi.body, data, this_dn) == 0);
        fcl_cgi_free(&cgi);
        fcl_response_free(&r);
    }
    check_no_violation(c);
    free(data);
    fcl_close(c);
}
END_TEST

START_TEST(padding_0_to_255)
{
    fcl_conn *c = conn();
    const char *params[] = {"REQUEST_METHOD",
                            "POST",
                            "SCRIPT_NAME",
                            "/padding",
                            "LONG",
                            "0123456789012345678901234567890123456789",
                            NULL};
    fcl_buf nv;
    fcl_buf_init(&nv);
    for (int k = 0; params[k]; k += 2)
        fcl_nv_adds(&nv, params[k], params[k + 1]);
    uint8_t in[300];
    fcl_fill_random(in, sizeof in, 13);
    for (int pad = 0; pad <= 255; pad++) {
        fcl_buf b;
        fcl_buf_init(&b);
        uint8_t begin[8] = {0, ROLE_RESPONDER, KEEP, 0, 0, 0, 0, 0};
        fcl_put_record(&b, FCGI_BEGIN_REQUEST, 1, begin, 8, (uint8_t)pad);
        fcl_put_stream(&b, FCGI_PARAMS, 1, nv.data, nv.len, 17, pad, true);
        fcl_put_stream(&b, FCGI_STDIN, 1, in, (size_t)pad, 100, pad, true);
        /* A management record with padding too. */
        fcl_put_record(&b, 200, 0, "x", 1, (uint8_t)pad);
        send_buf(c, &b);
        fcl_buf_free(&b);
        fcl_response r;
        fcl_response_init(&r, 1);
        await(c, &r, 1);
        check_json(&r, in, (size_t)pad, params);
        fcl_response_free(&r);
    }
    check_no_violation(c);
    /* The last UNKNOWN_TYPE answers may come after the last END_REQUEST. */
    while (c->nmgmt < 256) {
        fcl_record rec;
        ck_assert_int_eq(fcl_read_record(c, &rec), 1);
        ck_assert_uint_eq(rec.h.id, 0);
        c->mgmt = realloc(c->mgmt, (c->nmgmt + 1) * sizeof *c->mgmt);
        c->mgmt[c->nmgmt++] = rec;
    }
    ck_assert_uint_eq(c->nmgmt, 256);
    for (size_t i = 0; i < c->nmgmt; i++)
        ck_assert_uint_eq(c->mgmt[i].h.type, FCGI_UNKNOWN_TYPE);
    fcl_buf_free(&nv);
    fcl_close(c);
}
END_TEST

START_TEST(params_pair_split_across_records)
{
    fcl_conn *c = conn();
    char big[300];
    memset(big, 'v', sizeof big - 1);
    big[sizeof big - 1] = 0;
    /* A short pair, a pair with 4-byte lengths, another short one. */
    const char *params[] = {"A", "1", "HTTP_X_LONG", big, "QUERY_STRING", "q=1", NULL};
    fcl_buf nv;
    fcl_buf_init(&nv);
    for (int k = 0; params[k]; k += 2)
        fcl_nv_adds(&nv, params[k], params[k + 1]);
    for (size_t cut = 1; cut < nv.len; cut += (cut < 30 || cut > nv.len - 30) ? 1 : 7) {
        fcl_buf b;
        fcl_buf_init(&b);
        fcl_put_begin(&b, 1, ROLE_RESPONDER, KEEP);
        fcl_put_record(&b, FCGI_PARAMS, 1, nv.data, cut, 0);
        fcl_put_record(&b, FCGI_PARAMS, 1, nv.data + cut, nv.len - cut, 0);
        fcl_put_record(&b, FCGI_PARAMS, 1, NULL, 0, 0);
        fcl_put_record(&b, FCGI_STDIN, 1, NULL, 0, 0);
        send_buf(c, &b);
        fcl_buf_free(&b);
        fcl_response r;
        fcl_response_init(&r, 1);
        await(c, &r, 1);
        check_json(&r, NULL, 0, params);
        fcl_response_free(&r);
    }
    /* Every pair in its own byte-sized record. */
    fcl_buf b;
    fcl_buf_init(&b);
    fcl_put_begin(&b, 1, ROLE_RESPONDER, KEEP);
    fcl_put_stream(&b, FCGI_PARAMS, 1, nv.data, nv.len, 1, 0, true);
    fcl_put_stream(&b, FCGI_STDIN, 1, "z", 1, 1, 0, true);
    send_buf(c, &b);
    fcl_buf_free(&b);
    fcl_response r;
    fcl_response_init(&r, 1);
    await(c, &r, 1);
    check_json(&r, "z", 1, params);
    fcl_response_free(&r);
    check_no_violation(c);
    fcl_buf_free(&nv);
    fcl_close(c);
}
END_TEST

START_TEST(record_header_split_across_writes)
{
    fcl_conn *c = conn();
    const char *params[] = {"REQUEST_METHOD", "POST", "QUERY_STRING", "", NULL};
    for (size_t at = 1; at < FCGI_HEADER_LEN; at++) {
        fcl_buf b;
        fcl_buf_init(&b);
        fcl_put_request(&b, 2, ROLE_RESPONDER, KEEP, params, "payload", 7, NULL, 0);
        size_t *ends;
        size_t n = record_ends(&b, &ends);
        size_t from = 0;
        for (size_t i = 0; i < n; i++) {
            /* Header bytes [0, at), read by echo, then the rest of the record. */
            ck_assert_int_eq(fcl_send(c, b.data + from, at), 0);
            wait_read_by_echo(c);
            ck_assert_int_eq(fcl_send(c, b.data + from + at, ends[i] - from - at), 0);
            from = ends[i];
        }
        free(ends);
        fcl_buf_free(&b);
        fcl_response r;
        fcl_response_init(&r, 2);
        await(c, &r, 1);
        check_json(&r, "payload", 7, params);
        fcl_response_free(&r);
    }
    check_no_violation(c);
    fcl_close(c);
}
END_TEST

START_TEST(request_id_65535)
{
    fcl_conn *c = conn();
    ok_request(c, 65535, KEEP);
    ok_request(c, 65535, KEEP);
    /* Alongside id 1 on the same connection. */
    const char *params[] = {"REQUEST_METHOD", "GET", NULL};
    fcl_buf b;
    fcl_buf_init(&b);
    fcl_put_request(&b, 65535, ROLE_RESPONDER, KEEP, params, "hi", 2, NULL, 0);
    fcl_put_request(&b, 1, ROLE_RESPONDER, KEEP, params, "ho", 2, NULL, 0);
    send_buf(c, &b);
    fcl_buf_free(&b);
    fcl_response rs[2];
    fcl_response_init(&rs[0], 65535);
    fcl_response_init(&rs[1], 1);
    await(c, rs, 2);
    check_json(&rs[0], "hi", 2, params);
    check_json(&rs[1], "ho", 2, params);
    fcl_response_free(&rs[0]);
    fcl_response_free(&rs[1]);
    check_no_violation(c);
    fcl_close(c);
}
END_TEST

START_TEST(binary_and_unicode_params)
{
    fcl_conn *c = conn();
    char big[20000];
    memset(big, 'b', sizeof big);
    static const char nul_value[] = {'a', 0, 'b'};
    fcl_buf nv;
    fcl_buf_init(&nv);
    fcl_nv_adds(&nv, "REQUEST_METHOD", "GET");
    fcl_nv_adds(&nv, "EMPTY", "");
    fcl_nv_add(&nv, "NUL", 3, nul_value, sizeof nul_value);
    fcl_nv_adds(&nv, "UTF8", "caf\xc3\xa9 \xf0\x9f\x98\x80");
    fcl_nv_adds(&nv, "BAD_UTF8",
                "\xff\xfe"
                "ab\xc3(\xed\xa0\x80");
    fcl_nv_adds(&nv, "\xc0\xafNAME", "x");
    static const char escapes[] = "\"quoted\" back\\slash \x01\x1f\t\n";
    fcl_nv_adds(&nv, "ESCAPES", escapes);
    fcl_nv_add(&nv, "BIG", 3, big, sizeof big);
    fcl_nv_adds(&nv, "DUP", "first");
    fcl_nv_adds(&nv, "DUP", "last");
    /* A small length in the 4-byte form is legal. */
    fcl_nv_len4(&nv, 5);
    fcl_nv_len4(&nv, 2);
    fcl_buf_add(&nv, "LONG4ok", 7);
    fcl_buf b;
    fcl_buf_init(&b);
    fcl_put_begin(&b, 1, ROLE_RESPONDER, KEEP);
    fcl_put_stream(&b, FCGI_PARAMS, 1, nv.data, nv.len, 1000, FCL_PAD8, true);
    fcl_put_stream(&b, FCGI_STDIN, 1, NULL, 0, 0, FCL_PAD8, true);
    send_buf(c, &b);
    fcl_response r;
    fcl_response_init(&r, 1);
    await(c, &r, 1);
    jv doc;
    parse_json_answer(&r, &doc); /* the answer is valid JSON, UTF-8 throughout */
    check_json_body(&doc, NULL, 0);
    check_param(&doc, "EMPTY", 5, "", 0);
    check_param(&doc, "NUL", 3, nul_value, sizeof nul_value);
    check_param(&doc, "UTF8", 4, "caf\xc3\xa9 \xf0\x9f\x98\x80", 10);
    /* echo's documented choice: every byte that does not start a well-formed UTF-8 sequence
     * becomes U+FFFD. */
    static const char fixed[] = "\xef\xbf\xbd\xef\xbf\xbd"
                                "ab\xef\xbf\xbd(\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd";
    check_param(&doc, "BAD_UTF8", 8, fixed, sizeof fixed - 1);
    check_param(&doc, "\xef\xbf\xbd\xef\xbf\xbdNAME", 10, "x", 1);
    check_param(&doc, "ESCAPES", 7, escapes, sizeof escapes - 1);
    check_param(&doc, "BIG", 3, big, sizeof big);
    check_param(&doc, "DUP", 3, "last", 4);
    check_param(&doc, "LONG4", 5, "ok", 2);
    ck_assert_uint_eq(jget(&doc, "params", 6)->n, 10);
    jv_free(&doc);
    fcl_response_free(&r);
    check_no_violation(c);
    fcl_buf_free(&b);
    fcl_buf_free(&nv);
    fcl_close(c);
}
END_TEST

START_TEST(empty_and_missing_content_length)
{
    fcl_conn *c = conn();
    uint8_t *in = random_bytes(70000, 14);
    const char *with_empty[] = {
        "REQUEST_METHOD", "POST", "CONTENT_LENGTH", "", "CONTENT_TYPE", "", NULL};
    const char *without[] = {"REQUEST_METHOD", "POST", "HTTP_TRANSFER_ENCODING", "chunked", NULL};
    const size_t sizes[] = {0, 1, 70000};
    for (size_t i = 0; i < 3; i++) {
        fcl_response r;
        REQUEST(c, 1, ROLE_RESPONDER, KEEP, with_empty, in, sizes[i], &r);
        check_json(&r, in, sizes[i], with_empty);
        fcl_response_free(&r);
        REQUEST(c, 2, ROLE_RESPONDER, KEEP, without, in, sizes[i], &r);
        check_json(&r, in, sizes[i], without);
        fcl_response_free(&r);
    }
    check_no_violation(c);
    free(in);
    fcl_close(c);
}
END_TEST

/* Checks the STDOUT framing of a raw answer of `n` bytes (the client itself checks padding,
 * the empty record before END_REQUEST, and nothing after END_REQUEST). */
static void raw_framing(fcl_conn *c, size_t n, unsigned min_records)
{
    uint8_t *in = random_bytes(n, n);
    const char *params[] = {"QUERY_STRING", "x=y&raw=1", NULL};
    fcl_response r;
    REQUEST(c, 1, ROLE_RESPONDER, KEEP, params, in, n, &r);
    check_raw(&r, in, n);
    ck_assert_uint_eq(r.out_empty, 1);
    ck_assert_uint_eq(r.end_records, 1);
    ck_assert_uint_ge(r.out_records, min_records);
    /* Content never exceeds 65535, so the body needs at least this many records. */
    ck_assert_uint_ge((size_t)r.out_records * 65535, r.out.len);
    fcl_response_free(&r);
    free(in);
}

START_TEST(stdout_framing)
{
    fcl_conn *c = conn();
    const size_t sizes[] = {0, 1, 7, 8, 9, 4096, 65000, 65535};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        raw_framing(c, sizes[i], 1);
    check_no_violation(c);
    fcl_close(c);
}
END_TEST

START_TEST(large_response_in_several_records)
{
    fcl_conn *c = conn();
    raw_framing(c, 66000, 2);
    raw_framing(c, 65536, 2);
    raw_framing(c, 1000000, 16);
    check_no_violation(c);
    fcl_close(c);
}
END_TEST

START_TEST(aborted_output_stops_at_end_request)
{
    size_t n = 8 * MIB;
    uint8_t *in1 = random_bytes(n, 15);
    uint8_t *in2 = random_bytes(n, 16);
    fcl_conn *c = conn_rcvbuf(4096);
    const char *params[] = {"QUERY_STRING", "raw=1", NULL};
    fcl_buf b;
    fcl_buf_init(&b);
    fcl_put_request(&b, 1, ROLE_RESPONDER, KEEP, params, in1, n, NULL, 0);
    fcl_put_request(&b, 2, ROLE_RESPONDER, KEEP, params, in2, n, NULL, 0);
    send_buf(c, &b);
    /* Once echo has read both requests and begun the first answer, both answers are stuck in
     * a full output queue; abort the first. */
    wait_read_by_echo(c);
    wait_answer_begun(c);
    fcl_buf_clear(&b);
    fcl_put_abort(&b, 1);
    send_buf(c, &b);
    fcl_buf_free(&b);
    fcl_response rs[2];
    fcl_response_init(&rs[0], 1);
    fcl_response_init(&rs[1], 2);
    /* Records for id 1 after its END_REQUEST would be violations. */
    await(c, rs, 2);
    ck_assert_uint_eq(rs[0].end_records, 1);
    ck_assert_uint_le(rs[0].out.len, n + 200);
    /* Whatever id 1 got is a prefix of its answer. */
    fcl_cgi cgi;
    if (rs[0].out.len > 0 && fcl_cgi_parse(&rs[0], &cgi) == 0) {
        ck_assert_uint_le(cgi.body_len, n);
        ck_assert(memcmp(cgi.body, in1, cgi.body_len) == 0);
        fcl_cgi_free(&cgi);
    }
    check_raw(&rs[1], in2, n);
    fcl_response_free(&rs[0]);
    fcl_response_free(&rs[1]);
    ok_request(c, 3, KEEP);
    ck_assert(fcl_idle_for(c, 0.2));
    check_no_violation(c);
    fcl_close(c);
    free(in1);
    free(in2);
}
END_TEST

START_TEST(peer_close_mid_response)
{
    /* A client that goes away while its answer is being written; the server stays fine. */
    size_t n = 8 * MIB;
    uint8_t *in = random_bytes(n, 17);
    for (int i = 0; i < 3; i++) {
        fcl_conn *c = conn_rcvbuf(4096);
        const char *params[] = {"QUERY_STRING", "raw=1", NULL};
        fcl_buf b;
        fcl_buf_init(&b);
        fcl_put_request(&b, 1, ROLE_RESPONDER, KEEP, params, in, n, NULL, 0);
        send_buf(c, &b);
        fcl_buf_free(&b);
        if (i > 0) {
            fcl_record rec;
            ck_assert_int_eq(fcl_read_record(c, &rec), 1);
            fcl_record_free(&rec);
        }
        fcl_close(c);
    }
    free(in);
    fcl_conn *c = conn();
    ok_request(c, 1, KEEP);
    fcl_close(c);
}
END_TEST

/* ---- body limit (echo started with --max-body 65536) -------------------------------------- */

/* Sends a request with an `n`-byte body and expects 413 Payload Too Large. */
static void too_large(fcl_conn *c, uint16_t id, uint8_t flags, size_t n)
{
    uint8_t *in = random_bytes(n, n);
    const char *params[] = {"REQUEST_METHOD", "POST", NULL};
    fcl_response r;
    ck_assert_msg(fcl_request(c, id, ROLE_RESPONDER, flags, params, in, n, &r) == 0,
                  "request %u: %s", id, strerror(errno));
    ck_assert_uint_eq(r.protocol_status, FCGI_REQUEST_COMPLETE);
    fcl_cgi cgi;
    ck_assert_int_eq(fcl_cgi_parse(&r, &cgi), 0);
    check_status(&cgi, "413 Payload Too Large");
    fcl_cgi_free(&cgi);
    fcl_response_free(&r);
    check_no_violation(c);
    free(in);
}

START_TEST(body_over_limit_gets_413)
{
    fcl_conn *c = conn();
    /* At the limit: fine. */
    uint8_t *in = random_bytes(SMALL_MAX_BODY, 18);
    const char *params[] = {"REQUEST_METHOD", "POST", NULL};
    fcl_response r;
    REQUEST(c, 1, ROLE_RESPONDER, KEEP, params, in, SMALL_MAX_BODY, &r);
    check_json(&r, in, SMALL_MAX_BODY, params);
    fcl_response_free(&r);
    free(in);
    /* Over it: 413, and the connection goes on (the rest of the body is skipped). */
    too_large(c, 2, KEEP, SMALL_MAX_BODY + 1);
    too_large(c, 3, KEEP, 4 * MIB);
    ok_request(c, 2, KEEP);
    ck_assert(fcl_idle_for(c, 0.2));
    fcl_close(c);
}
END_TEST

START_TEST(body_over_limit_close_without_reset)
{
    /* The answer comes before the whole body was read; with KEEP_CONN 0 the server must not
     * close with unread input (which would reset the connection). */
    for (int i = 0; i < 5; i++) {
        fcl_conn *c = conn();
        /* Big enough that input is still unread when the answer goes out, small enough for
         * the server's bounded drain. */
        too_large(c, 1, 0, 2 * SMALL_MAX_BODY + 30000);
        ck_assert_msg(fcl_wait_eof(c, 10) == 0, "expected a clean EOF, got %s", strerror(errno));
        fcl_close(c);
    }
}
END_TEST

/* ---- malformed input: each has one defined outcome and the server keeps serving ---------- */

/* After malformed bytes were sent on `*pc` (and a normal request with id `ok_id` after them on
 * the same connection), either that request succeeds on the same connection, or the server
 * closed the connection and a request on a new one succeeds. Returns true when the connection
 * was closed. Records for `bad_id` (0: none expected) may come, at most one END_REQUEST, and
 * never a successful (200) answer. */
static bool survive(fcl_conn **pc, uint16_t bad_id, uint16_t ok_id, const char *const *params,
                    bool must_close, bool bad_must_end)
{
    fcl_conn *c = *pc;
    fcl_response rs[2];
    fcl_response_init(&rs[0], ok_id);
    fcl_response_init(&rs[1], bad_id);
    size_t n = bad_id ? 2 : 1;
    int rc = fcl_await_id(c, rs, n, ok_id);
    int e = errno;
    bool closed = rc != 0;
    if (closed)
        ck_assert_msg(e == EPIPE || e == ECONNRESET, "expected the connection closed, got %s",
                      strerror(e));
    ck_assert_msg(!must_close || closed, "the connection should have been closed");
    if (!closed) {
        check_json(&rs[0], "ok", 2, params);
        /* The malformed request ended (before or after the good one), or it may be ignored. */
        if (bad_id && !rs[1].ended && (bad_must_end || !fcl_idle_for(c, 0.3)))
            ck_assert_msg(fcl_await(c, &rs[1], 1) == 0,
                          "no END_REQUEST for the malformed request %u: %s", bad_id,
                          strerror(errno));
        ck_assert(fcl_idle_for(c, 0.1));
    }
    check_no_violation(c);
    if (bad_id) {
        ck_assert_uint_le(rs[1].end_records, 1);
        if (rs[1].out.len > 0) {
            fcl_cgi cgi;
            char st[64];
            if (fcl_cgi_parse(&rs[1], &cgi) == 0) {
                ck_assert(fcl_cgi_header(&cgi, "Status", st, sizeof st));
                ck_assert_msg(strncmp(st, "200", 3) != 0,
                              "a malformed request got a successful answer");
                fcl_cgi_free(&cgi);
            }
        }
    }
    fcl_response_free(&rs[0]);
    fcl_response_free(&rs[1]);
    if (closed) {
        fcl_close(c);
        *pc = c = conn();
        fcl_response r;
        REQUEST(c, ok_id, ROLE_RESPONDER, KEEP, params, "ok", 2, &r);
        check_json(&r, "ok", 2, params);
        fcl_response_free(&r);
        check_no_violation(c);
    }
    return closed;
}

static const char *const ok_params[] = {"REQUEST_METHOD", "POST", "TAG", "after", NULL};

/* Appends the normal request that follows the malformed bytes. */
static void put_ok(fcl_buf *b, uint16_t id)
{
    fcl_put_request(b, id, ROLE_RESPONDER, KEEP, ok_params, "ok", 2, NULL, 0);
}

/* Sends `b` and tolerates the server closing the connection while we send. */
static void send_lenient(fcl_conn *c, const fcl_buf *b)
{
    if (fcl_send_buf(c, b) < 0)
        ck_assert_msg(errno == EPIPE || errno == ECONNRESET, "send: %s", strerror(errno));
}

START_TEST(malformed_version_2)
{
    for (int variant = 0; variant < 2; variant++) {
        fcl_conn *c = conn();
        fcl_buf b;
        fcl_buf_init(&b);
        if (variant == 1) {
            /* In the middle of a running request. */
            fcl_put_begin(&b, 1, ROLE_RESPONDER, KEEP);
            fcl_put_record(&b, FCGI_PARAMS, 1,
                           "\x01\x01"
                           "AB",
                           4, 4);
        }
        fcl_put_header(&b, 2, FCGI_BEGIN_REQUEST, 5, 8, 0);
        fcl_buf_add(&b, "\0\1\1\0\0\0\0\0", 8);
        put_ok(&b, 2);
        send_lenient(c, &b);
        fcl_buf_free(&b);
        survive(&c, variant == 1 ? 1 : 0, 2, ok_params, true, false);
        fcl_close(c);
    }
}
END_TEST

START_TEST(malformed_begin_length_7)
{
    fcl_conn *c = conn();
    fcl_buf b;
    fcl_buf_init(&b);
    fcl_put_record(&b, FCGI_BEGIN_REQUEST, 1, "\0\1\1\0\0\0\0", 7, 1);
    put_ok(&b, 2);
    send_lenient(c, &b);
    fcl_buf_free(&b);
    survive(&c, 1, 2, ok_params, true, false);
    fcl_close(c);
}
END_TEST

START_TEST(malformed_second_begin_for_active_id)
{
    fcl_conn *c = conn();
    fcl_buf b;
    fcl_buf_init(&b);
    fcl_put_begin(&b, 1, ROLE_RESPONDER, KEEP);
    fcl_put_record(&b, FCGI_PARAMS, 1,
                   "\x01\x01"
                   "AB",
                   4, 4);
    fcl_put_begin(&b, 1, ROLE_RESPONDER, KEEP);
    fcl_put_record(&b, FCGI_PARAMS, 1, NULL, 0, 0);
    fcl_put_record(&b, FCGI_STDIN, 1, NULL, 0, 0);
    put_ok(&b, 2);
    send_lenient(c, &b);
    fcl_buf_free(&b);
    /* Whatever the outcome (request ended, or connection closed), at most one END_REQUEST
     * for id 1, and the server goes on. A rejected request must not answer 200, but the
     * first request completing normally with the second BEGIN ignored would: allow that
     * only as a full, correct answer. */
    fcl_response rs[2];
    fcl_response_init(&rs[0], 2);
    fcl_response_init(&rs[1], 1);
    int rc = fcl_await_id(c, rs, 2, 2);
    if (rc == 0) {
        check_json(&rs[0], "ok", 2, ok_params);
        if (!rs[1].ended)
            ck_assert_msg(fcl_await(c, &rs[1], 1) == 0, "request 1 never ended: %s",
                          strerror(errno));
        ck_assert_uint_le(rs[1].end_records, 1);
        check_no_violation(c);
    } else {
        ck_assert_msg(errno == EPIPE || errno == ECONNRESET, "%s", strerror(errno));
        ck_assert_uint_le(rs[1].end_records, 1);
        fcl_close(c);
        c = conn();
    }
    fcl_response_free(&rs[0]);
    fcl_response_free(&rs[1]);
    ok_request(c, 1, KEEP);
    fcl_close(c);
}
END_TEST

START_TEST(malformed_truncated_nv_prefix)
{
    for (int variant = 0; variant < 3; variant++) {
        fcl_conn *c = conn();
        fcl_buf nv, b;
        fcl_buf_init(&nv);
        fcl_buf_init(&b);
        fcl_nv_adds(&nv, "REQUEST_METHOD", "GET");
        if (variant == 0)
            fcl_buf_add(&nv, "\x80\x00", 2); /* a 4-byte name length cut after 2 bytes */
        else if (variant == 1)
            fcl_buf_add(&nv, "\x05", 1); /* a name length and no value length */
        else
            fcl_buf_add(&nv, "\x05\x0aNAMEXval", 10); /* the value runs past the end */
        fcl_put_begin(&b, 1, ROLE_RESPONDER, KEEP);
        fcl_put_stream(&b, FCGI_PARAMS, 1, nv.data, nv.len, 0, FCL_PAD8, true);
        fcl_put_stream(&b, FCGI_STDIN, 1, NULL, 0, 0, FCL_PAD8, true);
        put_ok(&b, 2);
        send_lenient(c, &b);
        survive(&c, 1, 2, ok_params, false, true);
        fcl_buf_free(&nv);
        fcl_buf_free(&b);
        fcl_close(c);
    }
}
END_TEST

START_TEST(malformed_huge_name_length)
{
    fcl_conn *c = conn();
    fcl_buf nv, b;
    fcl_buf_init(&nv);
    fcl_buf_init(&b);
    fcl_nv_len4(&nv, 0x7fffffff);
    fcl_nv_len4(&nv, 0x7fffffff);
    fcl_buf_add(&nv, "NAME...", 7);
    fcl_put_begin(&b, 1, ROLE_RESPONDER, KEEP);
    fcl_put_stream(&b, FCGI_PARAMS, 1, nv.data, nv.len, 0, FCL_PAD8, true);
    fcl_put_stream(&b, FCGI_STDIN, 1, NULL, 0, 0, FCL_PAD8, true);
    put_ok(&b, 2);
    double t0 = fcl_now();
    send_lenient(c, &b);
    survive(&c, 1, 2, ok_params, false, true);
    ck_assert_msg(fcl_now() - t0 < 10, "the server took %.1f s over a huge declared length",
                  fcl_now() - t0);
    fcl_buf_free(&nv);
    fcl_buf_free(&b);
    fcl_close(c);
}
END_TEST

START_TEST(malformed_stdin_for_inactive_id)
{
    fcl_conn *c = conn();
    fcl_buf b;
    fcl_buf_init(&b);
    fcl_put_record(&b, FCGI_STDIN, 77, "stray bytes", 11, 5);
    fcl_put_record(&b, FCGI_STDIN, 77, NULL, 0, 0);
    fcl_put_record(&b, FCGI_PARAMS, 78,
                   "\x01\x01"
                   "AB",
                   4, 4);
    fcl_put_record(&b, FCGI_DATA, 79, "d", 1, 7);
    fcl_put_abort(&b, 80);
    put_ok(&b, 2);
    send_buf(c, &b);
    fcl_buf_free(&b);
    /* Ignored: the connection stays, nothing comes back for those ids. */
    bool closed = survive(&c, 0, 2, ok_params, false, false);
    ck_assert_msg(!closed, "records for inactive ids must be ignored, not close the connection");
    ok_request(c, 77, KEEP);
    fcl_close(c);
}
END_TEST

START_TEST(malformed_begin_with_id_0)
{
    fcl_conn *c = conn();
    fcl_buf b;
    fcl_buf_init(&b);
    fcl_put_request(&b, 0, ROLE_RESPONDER, KEEP, ok_params, "zero", 4, NULL, 0);
    put_ok(&b, 2);
    send_lenient(c, &b);
    fcl_buf_free(&b);
    bool closed = survive(&c, 0, 2, ok_params, false, false);
    /* If the connection stayed, no request 0 was served: at most UNKNOWN_TYPE answers came. */
    if (!closed)
        for (size_t i = 0; i < c->nmgmt; i++)
            ck_assert_uint_eq(c->mgmt[i].h.type, FCGI_UNKNOWN_TYPE);
    fcl_close(c);
}
END_TEST

/* ---- start-up ---------------------------------------------------------------------------- */

START_TEST(inherited_socket_serves)
{
    fcl_conn *c = conn();
    for (uint16_t id = 1; id <= 5; id++)
        ok_request(c, id, KEEP);
    fcl_close(c);
    c = conn();
    ok_request(c, 1, 0);
    ck_assert_int_eq(fcl_wait_eof(c, 10), 0);
    fcl_close(c);
}
END_TEST

START_TEST(help_option)
{
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    const char *path = echo_path();
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        dup2(p[1], 1);
        close(p[0]);
        close(p[1]);
        execl(path, path, "--help", (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    char out[4096];
    size_t len = 0;
    ssize_t k;
    while ((k = read(p[0], out + len, sizeof out - 1 - len)) > 0)
        len += (size_t)k;
    out[len] = 0;
    close(p[0]);
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert(WIFEXITED(st));
    ck_assert_int_eq(WEXITSTATUS(st), 0);
    ck_assert_ptr_nonnull(strstr(out, "--listen"));
    ck_assert_ptr_nonnull(strstr(out, "--max-body"));
}
END_TEST

static void add_protocol_tests(TCase *tc)
{
    tcase_add_test(tc, keep_alive_100_requests);
    tcase_add_test(tc, close_without_keep_alive);
    tcase_add_test(tc, multiplex_16_interleaved);
    tcase_add_test(tc, abort_mid_stdin);
    tcase_add_test(tc, get_values_mid_request);
    tcase_add_test(tc, unknown_role);
    tcase_add_test(tc, unknown_management_type);
    tcase_add_test(tc, body_8mib_json);
    tcase_add_test(tc, body_8mib_raw);
    tcase_add_test(tc, stalled_reader_does_not_block_others);
    tcase_add_test(tc, concurrent_500_connections);
    tcase_add_test(tc, trickling_client);
    tcase_add_test(tc, authorizer_role);
    tcase_add_test(tc, filter_role);
    tcase_add_test(tc, padding_0_to_255);
    tcase_add_test(tc, params_pair_split_across_records);
    tcase_add_test(tc, record_header_split_across_writes);
    tcase_add_test(tc, request_id_65535);
    tcase_add_test(tc, binary_and_unicode_params);
    tcase_add_test(tc, empty_and_missing_content_length);
    tcase_add_test(tc, stdout_framing);
    tcase_add_test(tc, large_response_in_several_records);
    tcase_add_test(tc, aborted_output_stops_at_end_request);
    tcase_add_test(tc, peer_close_mid_response);
    tcase_add_test(tc, malformed_version_2);
    tcase_add_test(tc, malformed_begin_length_7);
    tcase_add_test(tc, malformed_second_begin_for_active_id);
    tcase_add_test(tc, malformed_truncated_nv_prefix);
    tcase_add_test(tc, malformed_huge_name_length);
    tcase_add_test(tc, malformed_stdin_for_inactive_id);
    tcase_add_test(tc, malformed_begin_with_id_0);
}

static Suite *integration_suite(void)
{
    Suite *s = suite_create("integration");
    TCase *tc = tcase_create("unix");
    tcase_add_unchecked_fixture(tc, case_setup, case_teardown);
    tcase_add_checked_fixture(tc, setup_unix, teardown);
    tcase_set_timeout(tc, 120);
    add_protocol_tests(tc);
    suite_add_tcase(s, tc);

    tc = tcase_create("tcp");
    tcase_add_unchecked_fixture(tc, case_setup, case_teardown);
    tcase_add_checked_fixture(tc, setup_tcp, teardown);
    tcase_set_timeout(tc, 120);
    add_protocol_tests(tc);
    suite_add_tcase(s, tc);

    tc = tcase_create("unix-limits");
    tcase_add_unchecked_fixture(tc, case_setup, case_teardown);
    tcase_add_checked_fixture(tc, setup_unix_small, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, body_over_limit_gets_413);
    tcase_add_test(tc, body_over_limit_close_without_reset);
    suite_add_tcase(s, tc);

    tc = tcase_create("tcp-limits");
    tcase_add_unchecked_fixture(tc, case_setup, case_teardown);
    tcase_add_checked_fixture(tc, setup_tcp_small, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, body_over_limit_gets_413);
    tcase_add_test(tc, body_over_limit_close_without_reset);
    suite_add_tcase(s, tc);

    tc = tcase_create("fd0");
    tcase_add_unchecked_fixture(tc, case_setup, case_teardown);
    tcase_add_checked_fixture(tc, setup_fd0, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, inherited_socket_serves);
    tcase_add_test(tc, multiplex_16_interleaved);
    suite_add_tcase(s, tc);

    tc = tcase_create("cli");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, help_option);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(integration_suite());
    srunner_run_all(sr, CK_VERBOSE);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
