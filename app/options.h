/* Internal: the option table of fcr_app_run() and the parser it shares with a program's own
 * options (options.c); fcr_app_run() itself is in run.c. */
#ifndef FCR__APP_OPTIONS_H
#define FCR__APP_OPTIONS_H

#include "app_int.h"

#include <stdbool.h>
#include <stdio.h>

#define MAX_LISTEN  16
#define MAX_NV_LEN  0x7fffffffu /* the largest length a FastCGI name-value pair can carry */
#define MAX_SECONDS 86400.0

/* How a value is read. */
typedef enum fcr__optkind {
    K_LISTEN,     /* an address; repeatable; the variable holds several, comma-separated */
    K_UINT,       /* a decimal number in [min, max] */
    K_SIZE,       /* bytes with an optional suffix k, m or g, in [min, max] */
    K_SECONDS,    /* decimal seconds up to a day, above 0 (min 0: zero allowed) */
    K_OCTAL,      /* an octal mode up to `max` */
    K_LEVEL,      /* a log level name */
    K_LOG_FORMAT, /* a log format name */
    K_PATH,       /* empty, or a path starting with '/' */
    K_STRING,     /* anything */
    K_FLAG,       /* no value; its variable turns it on with any value but "0" */
    K_LIST,       /* repeatable; the values joined with commas; the variable holds several */
} fcr__optkind;

typedef struct fcr__opt_def {
    const char *name; /* "--max-body" */
    const char *arg;  /* "BYTES"; NULL for a flag */
    const char *env;  /* "FCREST_MAX_BODY" */
    const char *def;  /* the default shown in --help, or NULL */
    const char *help;
    fcr__optkind kind;
    unsigned long long min, max;
    const char *alias, *alias_env; /* another name of the same setting, or NULL */
} fcr__opt_def;

enum {
    O_LISTEN,
    O_WORKERS,
    O_THREADS,
    O_SOCKET_MODE,
    O_MAX_BODY,
    O_LOG_LEVEL,
    O_LOG_FORMAT,
    O_PREFIX,
    O_ROUTE_ON_URI,
    O_ACCESS_LOG,
    O_SHUTDOWN_TIMEOUT,
    O_IDLE_TIMEOUT,
    O_INPUT_TIMEOUT,
    O_OUTPUT_TIMEOUT,
    O_MAX_CONNS,
    O_MAX_REQS,
    O_MAX_REQS_PER_CONN,
    O_MAX_OUTPUT_QUEUE,
    O_MAX_OUTPUT_MEMORY,
    O_MAX_PARAM_NAME,
    O_MAX_PARAM_VALUE,
    O_MAX_PARAMS_BYTES,
    O_MAX_PARAMS,
    O_COUNT
};

typedef struct fcr__prog_opt {
    fcr__opt_def d; /* name, arg, env, def and help are copies owned here */
    char *value;    /* after fcr_app_run parsed: the value in force (NULL: none, a flag off) */
    bool parsed;
} fcr__prog_opt;

struct fcr__run {
    fcr__prog_opt *v;
    size_t n;
    fcr_server_config base;
    char *base_addrs; /* copy of base.web_server_addrs */
    bool has_base;
};

typedef struct fcr__optval {
    bool set;
    const char *str; /* the text as given; for a flag "1" when on, NULL when off */
    unsigned long long n;
    double s;
    int level;
    char *owned; /* K_LIST: the values so far, joined with commas (malloc'd) */
    bool cli;    /* K_LIST: the command line gave it (which replaces the variable's values) */
} fcr__optval;

typedef struct fcr__parse_state {
    const char *prog;
    fcr__optval v[O_COUNT];
    fcr__optval *pv; /* one per program option */
    const struct fcr__run *run;
    const char *listen[MAX_LISTEN];
    size_t nlisten;
    char *env_listen; /* copy of FCREST_LISTEN split in place */
} fcr__parse_state;

/* Frees what the values in `ps` hold (the program options' lists). */
void fcr__opts_release(fcr__parse_state *ps);
/* Prints the usage: fcrest's options, then the program's own under its name. */
void fcr__opts_usage(FILE *f, const char *prog, const struct fcr__run *run);
/* Reads the FCREST_* variables and the program options' own ones into `ps`. Returns 0 or
 * FCR_EINVAL (message on stderr) or FCR_ENOMEM. */
int fcr__opts_read_env(fcr__parse_state *ps);
/* Reads the command line into `ps` (it wins over the environment). Returns as
 * fcr__opts_read_env(). */
int fcr__opts_read_args(fcr__parse_state *ps, int argc, char **argv);
/* Refuses (FCR_EINVAL, message on stderr) param limits that do not fit together. */
int fcr__opts_check_limits(const fcr_limits *l, const char *prog);
/* Keeps the program options' values in force (fcr_app_option). Returns 0 or FCR_ENOMEM. */
int fcr__opts_commit(struct fcr__run *run, const fcr__optval *pv);

#endif
