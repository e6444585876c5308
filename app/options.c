/* The option table of fcr_app_run() (`opts`, fcrest's own options: it drives the parser, the
 * environment, the usage text and the rows of docs/configuration.md, which tests/check_docs.py
 * compares) and the options a program adds (fcr_app_add_option), parsed by the same code. */
#include "options.h"

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const fcr__opt_def opts[O_COUNT] = {
    [O_LISTEN] = {"--listen", "ADDR", "FCREST_LISTEN", NULL,
                  "unix:PATH, tcp:HOST:PORT or fd:N (repeatable); without it, the socket "
                  "inherited from the web server or systemd",
                  K_LISTEN, 0, 0, NULL, NULL},
    [O_WORKERS] = {"--workers", "N", "FCREST_WORKERS", "1", "worker processes", K_UINT, 1, 1024,
                   NULL, NULL},
    [O_THREADS] = {"--threads", "N", "FCREST_THREADS", "4",
                   "threads of each worker's pool for blocking work (fcr_defer), made on the "
                   "first deferral",
                   K_UINT, 1, 256, NULL, NULL},
    [O_SOCKET_MODE] = {"--socket-mode", "OCTAL", "FCREST_SOCKET_MODE", "0660",
                       "mode of created unix sockets", K_OCTAL, 0, 07777, NULL, NULL},
    [O_MAX_BODY] = {"--max-body", "BYTES", "FCREST_MAX_BODY", "1m",
                    "request body limit, suffix k, m or g", K_SIZE, 1, SIZE_MAX, NULL, NULL},
    [O_LOG_LEVEL] = {"--log-level", "LEVEL", "FCREST_LOG_LEVEL", "info",
                     "error, warn, info or debug", K_LEVEL, 0, 0, NULL, NULL},
    [O_LOG_FORMAT] = {"--log-format", "FORMAT", "FCREST_LOG_FORMAT", "text",
                      "text, or json: one JSON object per log line", K_LOG_FORMAT, 0, 0, NULL,
                      NULL},
    [O_PREFIX] = {"--prefix", "PATH", "FCREST_PREFIX", NULL,
                  "prefix stripped from the routing path", K_PATH, 0, 0, NULL, NULL},
    [O_ROUTE_ON_URI] = {"--route-on-request-uri", NULL, "FCREST_ROUTE_ON_REQUEST_URI", NULL,
                        "route on REQUEST_URI instead of SCRIPT_NAME + PATH_INFO", K_FLAG, 0, 0,
                        NULL, NULL},
    [O_ACCESS_LOG] = {"--access-log", NULL, "FCREST_ACCESS_LOG", NULL,
                      "log one info line per request (method, path, status, body bytes, "
                      "duration, request id)",
                      K_FLAG, 0, 0, NULL, NULL},
    [O_SHUTDOWN_TIMEOUT] = {"--shutdown-timeout", "SECONDS", "FCREST_SHUTDOWN_TIMEOUT", "10",
                            "time in-flight requests get after SIGTERM or a restart (--grace "
                            "and FCREST_GRACE are the same)",
                            K_SECONDS, 0, 0, "--grace", "FCREST_GRACE"},
    [O_IDLE_TIMEOUT] = {"--idle-timeout", "SECONDS", "FCREST_IDLE_TIMEOUT", "60",
                        "close a connection idle this long", K_SECONDS, 1, 0, NULL, NULL},
    [O_INPUT_TIMEOUT] = {"--input-timeout", "SECONDS", "FCREST_INPUT_TIMEOUT", "30",
                         "a request's input must be complete this long after it began", K_SECONDS,
                         1, 0, NULL, NULL},
    [O_OUTPUT_TIMEOUT] = {"--output-timeout", "SECONDS", "FCREST_OUTPUT_TIMEOUT", "30",
                          "close a connection whose output makes no progress this long", K_SECONDS,
                          1, 0, NULL, NULL},
    [O_MAX_CONNS] = {"--max-conns", "N", "FCREST_MAX_CONNS", "4096",
                     "open connections per worker; accepting pauses at the cap", K_UINT, 1, 1000000,
                     NULL, NULL},
    [O_MAX_REQS] = {"--max-requests", "N", "FCREST_MAX_REQUESTS", "4096",
                    "requests in progress per worker; more are answered FCGI_OVERLOADED", K_UINT, 1,
                    1000000, NULL, NULL},
    /* request ids are 16-bit: more cannot be in progress */
    [O_MAX_REQS_PER_CONN] = {"--max-requests-per-conn", "N", "FCREST_MAX_REQUESTS_PER_CONN", "32",
                             "requests in progress on one connection", K_UINT, 1, 65535, NULL,
                             NULL},
    /* at least one whole record, so that a response can always make progress */
    [O_MAX_OUTPUT_QUEUE] = {"--max-output-queue", "BYTES", "FCREST_MAX_OUTPUT_QUEUE", "1m",
                            "output queued per connection before writes wait, suffix k, m or g",
                            K_SIZE, 65536 + 16, SIZE_MAX, NULL, NULL},
    [O_MAX_OUTPUT_MEMORY] = {"--max-output-memory", "BYTES", "FCREST_MAX_OUTPUT_MEMORY", "32m",
                             "answer bodies held for clients still reading them, per worker, "
                             "suffix k, m or g; more: 503",
                             K_SIZE, 1, SIZE_MAX, NULL, NULL},
    /* a FastCGI name or value length has 31 bits */
    [O_MAX_PARAM_NAME] = {"--max-param-name", "BYTES", "FCREST_MAX_PARAM_NAME", "1k",
                          "bytes in one param name (a header name), suffix k, m or g; more: 431",
                          K_SIZE, 1, MAX_NV_LEN, NULL, NULL},
    [O_MAX_PARAM_VALUE] = {"--max-param-value", "BYTES", "FCREST_MAX_PARAM_VALUE", "32k",
                           "bytes in one param value (a header value), suffix k, m or g; "
                           "more: 431",
                           K_SIZE, 1, MAX_NV_LEN, NULL, NULL},
    [O_MAX_PARAMS_BYTES] = {"--max-params-bytes", "BYTES", "FCREST_MAX_PARAMS_BYTES", "64k",
                            "encoded params of one request, all headers and CGI variables "
                            "together, suffix k, m or g, above the name and value limits; "
                            "more: 431",
                            K_SIZE, 1, SIZE_MAX, NULL, NULL},
    [O_MAX_PARAMS] = {"--max-params", "N", "FCREST_MAX_PARAMS", "256",
                      "params of one request; more: 431", K_UINT, 1, 1000000, NULL, NULL},
};

/* ---- A program's own options ------------------------------------------------------------ */

void fcr__run_free(struct fcr__run *run)
{
    if (!run)
        return;
    for (size_t i = 0; i < run->n; i++) {
        fcr__prog_opt *o = &run->v[i];
        free((char *)o->d.name);
        free((char *)o->d.arg);
        free((char *)o->d.env);
        free((char *)o->d.def);
        free((char *)o->d.help);
        free(o->value);
    }
    free(run->v);
    free(run->base_addrs);
    free(run);
}

static struct fcr__run *run_of(fcr_app *app)
{
    if (!app->run)
        app->run = calloc(1, sizeof *app->run);
    return app->run;
}

static const fcr__prog_opt *find_prog(const struct fcr__run *run, const char *name, size_t len)
{
    for (size_t i = 0; run && i < run->n; i++)
        if (strlen(run->v[i].d.name) == len && memcmp(run->v[i].d.name, name, len) == 0)
            return &run->v[i];
    return NULL;
}

/* Seconds: a decimal number up to a day, positive (or zero when `zero_ok`). */
static int parse_seconds(const char *value, bool zero_ok, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(value, &end);
    if (!*value || *end || errno || !(v >= 0 && v <= MAX_SECONDS) || (v == 0 && !zero_ok))
        return FCR_EINVAL;
    *out = v;
    return 0;
}

/* Reads `value` as `d` says into `v` (not for K_LISTEN). Returns 0 or FCR_EINVAL. */
static int parse_value(const fcr__opt_def *d, const char *value, fcr__optval *v)
{
    fcr__optval r = {.set = true, .str = value};
    switch (d->kind) {
    case K_UINT:
        if (fcr__parse_uint(value, d->max, &r.n) < 0 || r.n < d->min)
            return FCR_EINVAL;
        break;
    case K_SIZE: {
        size_t z;
        if (fcr__parse_size(value, &z) < 0 || z < d->min || z > d->max)
            return FCR_EINVAL;
        r.n = z;
        break;
    }
    case K_SECONDS:
        if (parse_seconds(value, d->min == 0, &r.s) < 0)
            return FCR_EINVAL;
        break;
    case K_OCTAL: {
        char *end;
        errno = 0;
        unsigned long m = strtoul(value, &end, 8);
        if (!*value || *end || errno || m > d->max)
            return FCR_EINVAL;
        r.n = m;
        break;
    }
    case K_LEVEL:
        if (fcr_log_level_parse(value, &r.level) < 0)
            return FCR_EINVAL;
        break;
    case K_LOG_FORMAT:
        if (fcr_log_format_parse(value, &r.level) < 0)
            return FCR_EINVAL;
        break;
    case K_PATH:
        if (*value && *value != '/')
            return FCR_EINVAL;
        break;
    case K_FLAG:
        r.n = strcmp(value, "0") != 0;
        r.str = r.n ? "1" : NULL;
        break;
    case K_STRING:
    case K_LISTEN:
    case K_LIST:
        break;
    }
    *v = r;
    return 0;
}

static int bad(const char *prog, const char *opt, size_t len, const char *value)
{
    fprintf(stderr, "%s: invalid value for %.*s: '%s'\n", prog, (int)len, opt, value);
    return FCR_EINVAL;
}

/* Sets the option `d` (typed as the `len` bytes at `opt`) to `value`. */
static int set_opt(fcr__parse_state *ps, const fcr__opt_def *d, fcr__optval *v, const char *opt,
                   size_t len, const char *value)
{
    if (d->kind == K_LISTEN) {
        if (!*value || ps->nlisten == MAX_LISTEN)
            return bad(ps->prog, opt, len, value);
        ps->listen[ps->nlisten++] = value;
        v->set = true;
        return 0;
    }
    if (d->kind == K_LIST) {
        /* Values are joined with commas: one may hold none. */
        if (!*value || strchr(value, ','))
            return bad(ps->prog, opt, len, value);
        size_t old = v->owned ? strlen(v->owned) : 0, add = strlen(value);
        char *p = realloc(v->owned, old + add + 2);
        if (!p)
            return FCR_ENOMEM;
        if (old)
            p[old++] = ',';
        memcpy(p + old, value, add + 1);
        v->owned = p;
        v->str = p;
        v->set = true;
        return 0;
    }
    if (parse_value(d, value, v) < 0)
        return bad(ps->prog, opt, len, value);
    return 0;
}

void fcr__opts_release(fcr__parse_state *ps)
{
    for (size_t i = 0; ps->run && ps->pv && i < ps->run->n; i++) {
        free(ps->pv[i].owned);
        ps->pv[i].owned = NULL;
    }
}

/* The option called by the `len` bytes at `name` (fcrest's or the program's) and its value. */
static const fcr__opt_def *find_opt(fcr__parse_state *ps, const char *name, size_t len,
                                    fcr__optval **v)
{
    for (size_t i = 0; i < O_COUNT; i++) {
        const fcr__opt_def *d = &opts[i];
        if ((strlen(d->name) == len && memcmp(d->name, name, len) == 0) ||
            (d->alias && strlen(d->alias) == len && memcmp(d->alias, name, len) == 0)) {
            *v = &ps->v[i];
            return d;
        }
    }
    const fcr__prog_opt *o = find_prog(ps->run, name, len);
    if (!o)
        return NULL;
    *v = &ps->pv[o - ps->run->v];
    return &o->d;
}

/* The variable `env` (an empty one counts as unset) for option `d`. */
static int read_env_one(fcr__parse_state *ps, const fcr__opt_def *d, fcr__optval *v,
                        const char *env)
{
    const char *s = env ? getenv(env) : NULL;
    if (!s || !*s)
        return 0;
    int rc = 0;
    if (d->kind == K_LIST) {
        char *copy = strdup(s), *save = NULL;
        if (!copy)
            return FCR_ENOMEM;
        for (char *t = strtok_r(copy, ",", &save); t && rc == 0; t = strtok_r(NULL, ",", &save)) {
            while (*t == ' ')
                t++;
            size_t n = strlen(t);
            while (n && t[n - 1] == ' ')
                t[--n] = '\0';
            if (*t)
                rc = set_opt(ps, d, v, d->name, strlen(d->name), t);
        }
        free(copy);
    } else if (d->kind == K_LISTEN) {
        free(ps->env_listen);
        ps->env_listen = strdup(s);
        if (!ps->env_listen)
            return FCR_ENOMEM;
        ps->nlisten = 0;
        char *save = NULL;
        for (char *t = strtok_r(ps->env_listen, ",", &save); t && rc == 0;
             t = strtok_r(NULL, ",", &save)) {
            while (*t == ' ')
                t++;
            if (*t)
                rc = set_opt(ps, d, v, d->name, strlen(d->name), t);
        }
    } else {
        rc = set_opt(ps, d, v, d->name, strlen(d->name), s);
    }
    if (rc < 0)
        fprintf(stderr, "%s: (from %s)\n", ps->prog, env);
    return rc;
}

int fcr__opts_read_env(fcr__parse_state *ps)
{
    for (size_t i = 0; i < O_COUNT; i++) {
        int rc = read_env_one(ps, &opts[i], &ps->v[i], opts[i].alias_env);
        if (rc == 0)
            rc = read_env_one(ps, &opts[i], &ps->v[i], opts[i].env);
        if (rc < 0)
            return rc;
    }
    for (size_t i = 0; ps->run && i < ps->run->n; i++) {
        int rc = read_env_one(ps, &ps->run->v[i].d, &ps->pv[i], ps->run->v[i].d.env);
        if (rc < 0)
            return rc;
    }
    return 0;
}

int fcr__opts_read_args(fcr__parse_state *ps, int argc, char **argv)
{
    bool cli_listen = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0) {
            fprintf(stderr, "%s: unexpected argument '%s'\n", ps->prog, a);
            return FCR_EINVAL;
        }
        const char *eq = strchr(a, '=');
        size_t len = eq ? (size_t)(eq - a) : strlen(a);
        fcr__optval *v = NULL;
        const fcr__opt_def *d = find_opt(ps, a, len, &v);
        if (!d) {
            fprintf(stderr, "%s: unknown option %.*s\n", ps->prog, (int)len, a);
            return FCR_EINVAL;
        }
        if (d->kind == K_FLAG) {
            if (eq) {
                fprintf(stderr, "%s: %.*s takes no value\n", ps->prog, (int)len, a);
                return FCR_EINVAL;
            }
            *v = (fcr__optval){.set = true, .str = "1", .n = 1};
            continue;
        }
        const char *value;
        if (eq) {
            value = eq + 1;
        } else if (i + 1 < argc) {
            value = argv[++i];
        } else {
            fprintf(stderr, "%s: %s needs a value\n", ps->prog, a);
            return FCR_EINVAL;
        }
        if (d->kind == K_LIST && !v->cli) {
            free(v->owned); /* the command line replaces the variable's values */
            v->owned = NULL;
            v->cli = true;
        }
        if (d->kind == K_LISTEN && !cli_listen) {
            ps->nlisten = 0; /* the command line replaces FCREST_LISTEN */
            cli_listen = true;
        }
        int rc = set_opt(ps, d, v, a, len, value);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* The param limits in force must fit together: one name or value cannot take the whole of
 * the params, which also hold the pair's lengths and the web server's other variables. */
int fcr__opts_check_limits(const fcr_limits *l, const char *prog)
{
    const char *opt = l->max_value_len >= l->max_params_bytes  ? "--max-param-value"
                      : l->max_name_len >= l->max_params_bytes ? "--max-param-name"
                                                               : NULL;
    if (!opt)
        return 0;
    fprintf(stderr, "%s: %s (%zu) must be below --max-params-bytes (%zu)\n", prog, opt,
            l->max_value_len >= l->max_params_bytes ? l->max_value_len : l->max_name_len,
            l->max_params_bytes);
    return FCR_EINVAL;
}

/* Keeps the program options' values in force (fcr_app_option). */
int fcr__opts_commit(struct fcr__run *run, const fcr__optval *pv)
{
    for (size_t i = 0; run && i < run->n; i++) {
        fcr__prog_opt *o = &run->v[i];
        const char *s = pv[i].set ? pv[i].str : o->d.def;
        char *copy = s ? strdup(s) : NULL;
        if (s && !copy)
            return FCR_ENOMEM;
        free(o->value);
        o->value = copy;
        o->parsed = true;
    }
    return 0;
}

/* ---- Usage ------------------------------------------------------------------------------ */

#define HELP_INDENT 30
#define HELP_WIDTH  79

/* One option: its name and argument, then the help text, default and variable, wrapped. */
static void usage_opt(FILE *f, const fcr__opt_def *d)
{
    char head[160], text[1024];
    snprintf(head, sizeof head, "  %s%s%s", d->name, d->arg ? " " : "", d->arg ? d->arg : "");
    snprintf(text, sizeof text, "%s%s%s%s%s%s%s", d->help ? d->help : "",
             d->def ? " (default " : "", d->def ? d->def : "", d->def ? ")" : "",
             d->env ? " [" : "", d->env ? d->env : "", d->env ? "]" : "");
    fputs(head, f);
    size_t col = strlen(head);
    if (col + 1 >= HELP_INDENT) {
        fputc('\n', f);
        col = 0;
    }
    bool line_start = true;
    for (const char *p = text; *p;) {
        while (*p == ' ')
            p++;
        size_t w = strcspn(p, " ");
        if (!w)
            break;
        if (!line_start && col + 1 + w > HELP_WIDTH) {
            fputc('\n', f);
            col = 0;
            line_start = true;
        }
        if (line_start) {
            fprintf(f, "%*s", (int)(HELP_INDENT - col), "");
            col = HELP_INDENT;
        } else {
            fputc(' ', f);
            col++;
        }
        fwrite(p, 1, w, f);
        col += w;
        p += w;
        line_start = false;
    }
    fputc('\n', f);
}

void fcr__opts_usage(FILE *f, const char *prog, const struct fcr__run *run)
{
    fprintf(f,
            "Usage: %s [OPTION]...\n"
            "Serves a FastCGI application.\n"
            "\n"
            "Options of fcrest (environment variables in brackets; the command line wins):\n",
            prog);
    for (size_t i = 0; i < O_COUNT; i++)
        usage_opt(f, &opts[i]);
    static const fcr__opt_def help = {"--help", NULL, NULL, NULL, "this text",
                                      K_FLAG,   0,    0,    NULL, NULL};
    usage_opt(f, &help);
    if (run && run->n) {
        fprintf(f, "\nOptions of %s:\n", prog);
        for (size_t i = 0; i < run->n; i++)
            usage_opt(f, &run->v[i].d);
    }
    fputs("\nFCREST_LISTEN takes addresses separated by commas; the variable of an option without\n"
          "a value turns it on with any value but 0.\n",
          f);
}

/* ---- Registration ----------------------------------------------------------------------- */

static bool valid_name(const char *s)
{
    if (!s || strncmp(s, "--", 2) != 0 || strlen(s) > 64)
        return false;
    s += 2;
    if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9')))
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '-' || *s == '_'))
            return false;
    return true;
}

static bool valid_env(const char *s)
{
    if (!*s || (*s >= '0' && *s <= '9') || strncmp(s, "FCREST_", 7) == 0)
        return false;
    for (; *s; s++)
        if (!((*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '_'))
            return false;
    return true;
}

static char *dup_or_null(const char *s, bool *failed)
{
    if (!s)
        return NULL;
    char *d = strdup(s);
    if (!d)
        *failed = true;
    return d;
}

int fcr_app_add_option(fcr_app *app, const char *name, fcr_opt_kind okind, const char *arg,
                       const char *env, const char *def, const char *help)
{
    static const fcr__optkind kinds[] = {
        [FCR_OPT_STRING] = K_STRING, [FCR_OPT_FLAG] = K_FLAG,       [FCR_OPT_UINT] = K_UINT,
        [FCR_OPT_SIZE] = K_SIZE,     [FCR_OPT_SECONDS] = K_SECONDS, [FCR_OPT_LIST] = K_LIST,
    };
    static const char *const args[] = {
        [FCR_OPT_STRING] = "VALUE", [FCR_OPT_FLAG] = NULL,         [FCR_OPT_UINT] = "N",
        [FCR_OPT_SIZE] = "BYTES",   [FCR_OPT_SECONDS] = "SECONDS", [FCR_OPT_LIST] = "VALUE",
    };
    if (!app || !valid_name(name) || (unsigned)okind > FCR_OPT_LIST || (env && !valid_env(env)))
        return FCR_EINVAL;
    if (okind == FCR_OPT_FLAG ? arg || def : arg && !*arg)
        return FCR_EINVAL;
    fcr__opt_def d = {.kind = kinds[okind], .max = okind == FCR_OPT_SIZE ? SIZE_MAX : ULLONG_MAX};
    fcr__optval v;
    if (def && parse_value(&d, def, &v) < 0)
        return FCR_EINVAL;
    if (strcmp(name, "--help") == 0)
        return FCR_EEXIST;
    for (size_t i = 0; i < O_COUNT; i++)
        if (strcmp(name, opts[i].name) == 0 || (opts[i].alias && strcmp(name, opts[i].alias) == 0))
            return FCR_EEXIST;
    struct fcr__run *run = run_of(app);
    if (!run)
        return FCR_ENOMEM;
    for (size_t i = 0; i < run->n; i++)
        if (strcmp(run->v[i].d.name, name) == 0 ||
            (env && run->v[i].d.env && strcmp(run->v[i].d.env, env) == 0))
            return FCR_EEXIST;
    fcr__prog_opt *nv = realloc(run->v, (run->n + 1) * sizeof *nv);
    if (!nv)
        return FCR_ENOMEM;
    run->v = nv;
    bool failed = false;
    d.name = dup_or_null(name, &failed);
    d.arg = dup_or_null(arg ? arg : args[okind], &failed);
    d.env = dup_or_null(env, &failed);
    d.def = dup_or_null(def, &failed);
    d.help = dup_or_null(help ? help : "", &failed);
    if (failed) {
        free((char *)d.name);
        free((char *)d.arg);
        free((char *)d.env);
        free((char *)d.def);
        free((char *)d.help);
        return FCR_ENOMEM;
    }
    run->v[run->n++] = (fcr__prog_opt){.d = d};
    return 0;
}

const char *fcr_app_option(const fcr_app *app, const char *name)
{
    if (!app || !name)
        return NULL;
    const fcr__prog_opt *o = find_prog(app->run, name, strlen(name));
    if (!o)
        return NULL;
    return o->parsed ? o->value : o->d.def;
}

int fcr_app_option_uint(const fcr_app *app, const char *name, unsigned long long *out)
{
    if (!app || !name || !out)
        return FCR_EINVAL;
    const fcr__prog_opt *o = find_prog(app->run, name, strlen(name));
    if (!o || (o->d.kind != K_UINT && o->d.kind != K_SIZE))
        return FCR_EINVAL;
    const char *s = fcr_app_option(app, name);
    if (!s)
        return FCR_ENOTFOUND;
    fcr__optval v;
    if (parse_value(&o->d, s, &v) < 0)
        return FCR_EINVAL; /* not reached: values are checked when they are taken */
    *out = v.n;
    return 0;
}

int fcr_app_set_server_config(fcr_app *app, const fcr_server_config *base)
{
    if (!app)
        return FCR_EINVAL;
    struct fcr__run *run = run_of(app);
    if (!run)
        return FCR_ENOMEM;
    char *addrs = NULL;
    if (base && base->web_server_addrs && !(addrs = strdup(base->web_server_addrs)))
        return FCR_ENOMEM;
    free(run->base_addrs);
    run->base_addrs = addrs;
    run->has_base = base != NULL;
    if (base) {
        run->base = *base;
        run->base.web_server_addrs = addrs;
    }
    return 0;
}

/* ---- Running ---------------------------------------------------------------------------- */
