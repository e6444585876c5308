/* fcr_app_run(): configuration from the environment and the command line, listeners, workers. */
#include "app_int.h"

#include <ev.h>

#ifdef __GLIBC__
#include <malloc.h>
#endif

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LISTEN 16
#define MAX_NV_LEN 0x7fffffffu /* the largest length a FastCGI name-value pair can carry */

typedef struct run_cfg {
    const char *listen[MAX_LISTEN];
    size_t nlisten;
    char *env_listen; /* copy of FCREST_LISTEN split in place */
    unsigned long workers;
    unsigned socket_mode;
    bool socket_mode_set;
    size_t max_body;
    int log_level;
    bool log_level_set;
    const char *prefix;
    bool route_on_uri;
    bool access_log;
    double grace;
    double idle_timeout, input_timeout, output_timeout; /* 0: the core's default */
    unsigned max_conns, max_reqs, max_reqs_per_conn;    /* 0: the core's default */
    size_t max_output_queue;                            /* 0: the core's default */
    size_t max_output_memory;                           /* 0: the app's default */
    size_t max_name_len, max_value_len;                 /* 0: the core's default */
    size_t max_params_bytes, max_params;                /* 0: the core's default */
} run_cfg;

static void usage(FILE *f, const char *prog)
{
    fprintf(f,
            "Usage: %s [OPTION]...\n"
            "Serves a FastCGI application.\n"
            "\n"
            "  --listen ADDR           unix:PATH, tcp:HOST:PORT or fd:N (repeatable); without\n"
            "                          it, the socket inherited from the web server or systemd\n"
            "  --workers N             worker processes (default 1)\n"
            "  --socket-mode OCTAL     mode of created unix sockets (default 0660)\n"
            "  --max-body BYTES        request body limit, suffix k, m or g (default 1m)\n"
            "  --log-level LEVEL       error, warn, info (default) or debug\n"
            "  --prefix PATH           prefix stripped from the routing path\n"
            "  --route-on-request-uri  route on REQUEST_URI instead of SCRIPT_NAME + PATH_INFO\n"
            "  --access-log            log one info line per request (method, path, status,\n"
            "                          body bytes, duration, request id)\n"
            "  --shutdown-timeout SECONDS  time in-flight requests get after SIGTERM or a\n"
            "                          restart (default 10; --grace is the same)\n"
            "  --idle-timeout SECONDS  close a connection idle this long (default 60)\n"
            "  --input-timeout SECONDS a request's input must be complete this long after it\n"
            "                          began (default 30)\n"
            "  --output-timeout SECONDS  close a connection whose output makes no progress\n"
            "                          this long (default 30)\n"
            "  --max-conns N           open connections per worker; accepting pauses at the\n"
            "                          cap (default 4096)\n"
            "  --max-requests N        requests in progress per worker; more are answered\n"
            "                          FCGI_OVERLOADED (default 4096)\n"
            "  --max-requests-per-conn N  requests in progress on one connection (default 32)\n"
            "  --max-output-queue BYTES  output queued per connection before writes wait,\n"
            "                          suffix k, m or g (default 1m)\n"
            "  --max-output-memory BYTES  answer bodies held for clients still reading them,\n"
            "                          per worker, suffix k, m or g (default 32m); more: 503\n"
            "  --max-param-name BYTES  bytes in one param name (a header name), suffix k, m\n"
            "                          or g (default 1k); more: 431\n"
            "  --max-param-value BYTES  bytes in one param value (a header value), suffix k,\n"
            "                          m or g (default 32k); more: 431\n"
            "  --max-params-bytes BYTES  encoded params of one request, all headers and CGI\n"
            "                          variables together, suffix k, m or g (default 64k),\n"
            "                          above the name and value limits; more: 431\n"
            "  --max-params N          params of one request (default 256); more: 431\n"
            "  --help                  this text\n"
            "\n"
            "Environment: FCREST_LISTEN (comma-separated), FCREST_WORKERS, FCREST_SOCKET_MODE,\n"
            "FCREST_MAX_BODY, FCREST_LOG_LEVEL, FCREST_PREFIX, FCREST_ROUTE_ON_REQUEST_URI=1,\n"
            "FCREST_ACCESS_LOG=1, FCREST_SHUTDOWN_TIMEOUT (or FCREST_GRACE),\n"
            "FCREST_IDLE_TIMEOUT, FCREST_INPUT_TIMEOUT, FCREST_OUTPUT_TIMEOUT,\n"
            "FCREST_MAX_CONNS, FCREST_MAX_REQUESTS, FCREST_MAX_REQUESTS_PER_CONN,\n"
            "FCREST_MAX_OUTPUT_QUEUE, FCREST_MAX_OUTPUT_MEMORY, FCREST_MAX_PARAM_NAME, "
            "FCREST_MAX_PARAM_VALUE,\n"
            "FCREST_MAX_PARAMS_BYTES, FCREST_MAX_PARAMS; the command line wins.\n",
            prog);
}

static int bad(const char *prog, const char *opt, const char *value)
{
    fprintf(stderr, "%s: invalid value for %s: '%s'\n", prog, opt, value ? value : "");
    return FCR_EINVAL;
}

/* Seconds: a decimal number up to a day, positive (or zero when `zero_ok`). */
static int parse_seconds(const char *value, bool zero_ok, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(value, &end);
    if (!*value || *end || errno || !(v >= 0 && v <= 86400) || (v == 0 && !zero_ok))
        return FCR_EINVAL;
    *out = v;
    return 0;
}

/* Applies one setting; `from_env` keeps env listen addresses apart from command-line ones. */
static int apply(run_cfg *c, const char *prog, const char *opt, const char *value)
{
    if (strcmp(opt, "--listen") == 0) {
        if (!*value || c->nlisten == MAX_LISTEN)
            return bad(prog, opt, value);
        c->listen[c->nlisten++] = value;
    } else if (strcmp(opt, "--workers") == 0) {
        unsigned long long n;
        if (fcr__parse_uint(value, 1024, &n) < 0 || n == 0)
            return bad(prog, opt, value);
        c->workers = (unsigned long)n;
    } else if (strcmp(opt, "--socket-mode") == 0) {
        char *end;
        errno = 0;
        unsigned long m = strtoul(value, &end, 8);
        if (!*value || *end || errno || m > 07777)
            return bad(prog, opt, value);
        c->socket_mode = (unsigned)m;
        c->socket_mode_set = true;
    } else if (strcmp(opt, "--max-body") == 0) {
        size_t n;
        if (fcr__parse_size(value, &n) < 0 || n == 0)
            return bad(prog, opt, value);
        c->max_body = n;
    } else if (strcmp(opt, "--log-level") == 0) {
        if (fcr_log_level_parse(value, &c->log_level) < 0)
            return bad(prog, opt, value);
        c->log_level_set = true;
    } else if (strcmp(opt, "--prefix") == 0) {
        if (*value && *value != '/')
            return bad(prog, opt, value);
        c->prefix = value;
    } else if (strcmp(opt, "--grace") == 0 || strcmp(opt, "--shutdown-timeout") == 0) {
        if (parse_seconds(value, true, &c->grace) < 0)
            return bad(prog, opt, value);
    } else if (strcmp(opt, "--idle-timeout") == 0) {
        if (parse_seconds(value, false, &c->idle_timeout) < 0)
            return bad(prog, opt, value);
    } else if (strcmp(opt, "--input-timeout") == 0) {
        if (parse_seconds(value, false, &c->input_timeout) < 0)
            return bad(prog, opt, value);
    } else if (strcmp(opt, "--output-timeout") == 0) {
        if (parse_seconds(value, false, &c->output_timeout) < 0)
            return bad(prog, opt, value);
    } else if (strcmp(opt, "--max-conns") == 0 || strcmp(opt, "--max-requests") == 0) {
        unsigned long long n;
        if (fcr__parse_uint(value, 1000000, &n) < 0 || n == 0)
            return bad(prog, opt, value);
        if (strcmp(opt, "--max-conns") == 0)
            c->max_conns = (unsigned)n;
        else
            c->max_reqs = (unsigned)n;
    } else if (strcmp(opt, "--max-requests-per-conn") == 0) {
        unsigned long long n; /* request ids are 16-bit: more cannot be in progress */
        if (fcr__parse_uint(value, 65535, &n) < 0 || n == 0)
            return bad(prog, opt, value);
        c->max_reqs_per_conn = (unsigned)n;
    } else if (strcmp(opt, "--max-output-queue") == 0) {
        size_t n; /* at least one whole record, so that a response can always make progress */
        if (fcr__parse_size(value, &n) < 0 || n < 65536 + 16)
            return bad(prog, opt, value);
        c->max_output_queue = n;
    } else if (strcmp(opt, "--max-output-memory") == 0) {
        size_t n;
        if (fcr__parse_size(value, &n) < 0 || n == 0)
            return bad(prog, opt, value);
        c->max_output_memory = n;
    } else if (strcmp(opt, "--max-param-name") == 0 || strcmp(opt, "--max-param-value") == 0) {
        size_t n; /* a FastCGI name or value length has 31 bits */
        if (fcr__parse_size(value, &n) < 0 || n == 0 || n > MAX_NV_LEN)
            return bad(prog, opt, value);
        if (strcmp(opt, "--max-param-name") == 0)
            c->max_name_len = n;
        else
            c->max_value_len = n;
    } else if (strcmp(opt, "--max-params-bytes") == 0) {
        size_t n;
        if (fcr__parse_size(value, &n) < 0 || n == 0)
            return bad(prog, opt, value);
        c->max_params_bytes = n;
    } else if (strcmp(opt, "--max-params") == 0) {
        unsigned long long n;
        if (fcr__parse_uint(value, 1000000, &n) < 0 || n == 0)
            return bad(prog, opt, value);
        c->max_params = (size_t)n;
    } else {
        fprintf(stderr, "%s: unknown option %s\n", prog, opt);
        return FCR_EINVAL;
    }
    return 0;
}

/* The param limits in force (the core's defaults for those not set) must fit together: one
 * name or value cannot take the whole of the params, which also hold the pair's lengths and
 * the web server's other variables. */
static int check_param_limits(const run_cfg *c, const char *prog)
{
    fcr_limits d;
    fcr_limits_default(&d);
    size_t total = c->max_params_bytes ? c->max_params_bytes : d.max_params_bytes;
    size_t name = c->max_name_len ? c->max_name_len : d.max_name_len;
    size_t value = c->max_value_len ? c->max_value_len : d.max_value_len;
    const char *opt = value >= total  ? "--max-param-value"
                      : name >= total ? "--max-param-name"
                                      : NULL;
    if (!opt)
        return 0;
    fprintf(stderr, "%s: %s (%zu) must be below --max-params-bytes (%zu)\n", prog, opt,
            value >= total ? value : name, total);
    return FCR_EINVAL;
}

static int read_env(run_cfg *c, const char *prog)
{
    static const struct {
        const char *env, *opt;
    } map[] = {
        {"FCREST_WORKERS", "--workers"},
        {"FCREST_SOCKET_MODE", "--socket-mode"},
        {"FCREST_MAX_BODY", "--max-body"},
        {"FCREST_LOG_LEVEL", "--log-level"},
        {"FCREST_PREFIX", "--prefix"},
        {"FCREST_GRACE", "--grace"},
        {"FCREST_SHUTDOWN_TIMEOUT", "--shutdown-timeout"},
        {"FCREST_IDLE_TIMEOUT", "--idle-timeout"},
        {"FCREST_INPUT_TIMEOUT", "--input-timeout"},
        {"FCREST_OUTPUT_TIMEOUT", "--output-timeout"},
        {"FCREST_MAX_CONNS", "--max-conns"},
        {"FCREST_MAX_REQUESTS", "--max-requests"},
        {"FCREST_MAX_REQUESTS_PER_CONN", "--max-requests-per-conn"},
        {"FCREST_MAX_OUTPUT_QUEUE", "--max-output-queue"},
        {"FCREST_MAX_OUTPUT_MEMORY", "--max-output-memory"},
        {"FCREST_MAX_PARAM_NAME", "--max-param-name"},
        {"FCREST_MAX_PARAM_VALUE", "--max-param-value"},
        {"FCREST_MAX_PARAMS_BYTES", "--max-params-bytes"},
        {"FCREST_MAX_PARAMS", "--max-params"},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
        const char *v = getenv(map[i].env);
        if (v && *v) {
            int rc = apply(c, prog, map[i].opt, v);
            if (rc < 0) {
                fprintf(stderr, "%s: (from %s)\n", prog, map[i].env);
                return rc;
            }
        }
    }
    const char *r = getenv("FCREST_ROUTE_ON_REQUEST_URI");
    if (r && *r && strcmp(r, "0") != 0)
        c->route_on_uri = true;
    const char *al = getenv("FCREST_ACCESS_LOG");
    if (al && *al && strcmp(al, "0") != 0)
        c->access_log = true;
    const char *l = getenv("FCREST_LISTEN");
    if (l && *l) {
        c->env_listen = strdup(l);
        if (!c->env_listen)
            return FCR_ENOMEM;
        char *save = NULL;
        for (char *t = strtok_r(c->env_listen, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
            while (*t == ' ')
                t++;
            if (*t && apply(c, prog, "--listen", t) < 0)
                return FCR_EINVAL;
        }
    }
    return 0;
}

static int read_args(run_cfg *c, const char *prog, int argc, char **argv)
{
    bool cli_listen = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--route-on-request-uri") == 0) {
            c->route_on_uri = true;
            continue;
        }
        if (strcmp(a, "--access-log") == 0) {
            c->access_log = true;
            continue;
        }
        if (strncmp(a, "--", 2) != 0) {
            fprintf(stderr, "%s: unexpected argument '%s'\n", prog, a);
            return FCR_EINVAL;
        }
        char opt[64];
        const char *value;
        const char *eq = strchr(a, '=');
        if (eq) {
            size_t n = (size_t)(eq - a);
            if (n >= sizeof opt)
                n = sizeof opt - 1;
            memcpy(opt, a, n);
            opt[n] = '\0';
            value = eq + 1;
        } else {
            snprintf(opt, sizeof opt, "%s", a);
            if (i + 1 >= argc) {
                fprintf(stderr, "%s: %s needs a value\n", prog, a);
                return FCR_EINVAL;
            }
            value = argv[++i];
        }
        if (strcmp(opt, "--listen") == 0 && !cli_listen) {
            c->nlisten = 0; /* the command line replaces FCREST_LISTEN */
            cli_listen = true;
        }
        int rc = apply(c, prog, opt, value);
        if (rc < 0)
            return rc;
    }
    return 0;
}

int fcr_app_run(fcr_app *app, int argc, char **argv)
{
    if (!argv)
        argc = 0;
    const char *prog = argc > 0 && argv[0] ? argv[0] : "fcrest";
    const char *slash = strrchr(prog, '/');
    if (slash)
        prog = slash + 1;
    if (!app)
        return FCR_EINVAL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout, prog);
            return 0;
        }
    }
    run_cfg c = {.workers = 1, .grace = 10.0};
    int rc = read_env(&c, prog);
    if (rc == 0)
        rc = read_args(&c, prog, argc, argv);
    if (rc == 0)
        rc = check_param_limits(&c, prog);
    if (rc < 0) {
        if (rc == FCR_EINVAL)
            fprintf(stderr, "Try '%s --help'.\n", prog);
        free(c.env_listen);
        return rc;
    }
#ifdef __GLIBC__
    /* glibc serves blocks of the size last freed from the heap (its mmap threshold follows the
     * frees), where a freed one stays in the process's memory. A fixed threshold maps every
     * block of 1 MiB or more, so that a large answer gives its memory back once sent. The
     * program's own choice (MALLOC_MMAP_THRESHOLD_) is kept. */
    if (!getenv("MALLOC_MMAP_THRESHOLD_"))
        mallopt(M_MMAP_THRESHOLD, 1024 * 1024);
#endif
    const char *e = fcr_app_error(app);
    if (e) {
        fprintf(stderr, "%s: not starting: %s\n", prog, e);
        free(c.env_listen);
        return FCR_EINVAL;
    }
    if (c.log_level_set)
        fcr_log_set_level(c.log_level);
    if (c.max_body)
        fcr_app_set_max_body(app, c.max_body);
    if (c.max_output_memory)
        fcr_app_set_max_output_memory(app, c.max_output_memory);
    if (c.prefix && (rc = fcr_app_set_prefix(app, c.prefix)) < 0) {
        free(c.env_listen);
        return rc;
    }
    if (c.route_on_uri)
        fcr_app_set_route_on_request_uri(app, true);
    if (c.access_log)
        fcr_app_set_access_log(app, true);

    struct ev_loop *loop = ev_default_loop(0);
    if (!loop) {
        free(c.env_listen);
        return FCR_ENOMEM;
    }
    fcr_server_config cfg;
    fcr_server_config_init(&cfg);
    if (c.socket_mode_set)
        cfg.socket_mode = c.socket_mode;
    if (c.idle_timeout > 0)
        cfg.limits.idle_timeout = c.idle_timeout;
    if (c.input_timeout > 0)
        cfg.limits.input_timeout = c.input_timeout;
    if (c.output_timeout > 0)
        cfg.limits.output_timeout = c.output_timeout;
    if (c.max_conns)
        cfg.limits.max_conns = c.max_conns;
    if (c.max_reqs)
        cfg.limits.max_reqs = c.max_reqs;
    if (c.max_reqs_per_conn)
        cfg.limits.max_reqs_per_conn = c.max_reqs_per_conn;
    if (c.max_output_queue)
        cfg.limits.max_output_queue = c.max_output_queue;
    if (c.max_name_len)
        cfg.limits.max_name_len = c.max_name_len;
    if (c.max_value_len)
        cfg.limits.max_value_len = c.max_value_len;
    if (c.max_params_bytes)
        cfg.limits.max_params_bytes = c.max_params_bytes;
    if (c.max_params)
        cfg.limits.max_params = c.max_params;
    int err = 0;
    fcr_server *srv = fcr_app_server_new(app, loop, &cfg, &err);
    if (!srv) {
        fprintf(stderr, "%s: cannot create the server: %s\n", prog, fcr_strerror(err));
        free(c.env_listen);
        return err;
    }
    rc = 0;
    for (size_t i = 0; i < c.nlisten && rc == 0; i++) {
        rc = fcr_server_listen(srv, c.listen[i]);
        if (rc == FCR_EIO)
            fprintf(stderr, "%s: cannot listen on %s: %s\n", prog, c.listen[i], strerror(errno));
        else if (rc < 0)
            fprintf(stderr, "%s: cannot listen on %s: %s\n", prog, c.listen[i], fcr_strerror(rc));
        else
            fcr_log(FCR_LOG_INFO, "listening on %s", c.listen[i]);
    }
    if (rc == 0 && c.nlisten == 0) {
        rc = fcr_server_listen_inherited(srv);
        if (rc == 0) {
            fprintf(stderr,
                    "%s: nothing to listen on: use --listen or start it from a web "
                    "server\n",
                    prog);
            rc = FCR_EADDR;
        } else if (rc > 0) {
            rc = 0;
        }
    }
    if (rc == 0)
        rc = fcr_server_run_workers(srv, (unsigned)c.workers, c.grace);
    fcr_server_free(srv);
    free(c.env_listen);
    return rc;
}
