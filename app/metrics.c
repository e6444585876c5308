/* Metrics in the Prometheus text format (fcr_app_metrics), summed over the worker processes.
 *
 * The counters live in an anonymous shared mapping made before the supervisor forks its
 * workers (core/workers.c calls the prefork hook), so every worker sees every other's. The area
 * holds one slot per worker slot of the supervisor (two per worker: a restart runs old and new
 * side by side); a worker writes only its own slot, with atomic adds (no lock), and a scrape
 * sums all slots. A slot outlives its worker: a replacement continues it, so no count is lost,
 * and the supervisor zeroes the gauges of a worker that is gone (its connections and requests
 * went with it) and counts the restart.
 *
 * A slot holds: the gauges; per route row (0: no route, 1: the AUTHORIZER role, 2: the FILTER
 * role, then the routes in registration order, mounted apps' included) a histogram of the
 * durations with their sum; and a small open-addressing table of (row, method, status) ->
 * count. A key is published with a compare-and-swap before its count is added to, so that a
 * reader (another process) sees either nothing or the key; keys are never removed. */
#include "app_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "lock-free 64-bit atomics are needed in shared memory");

/* Upper bounds of the histogram's buckets (seconds), then +Inf. */
static const double bounds[] = {.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10};
static const char *const bound_text[] = {"0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1",
                                         "0.25",  "0.5",    "1",     "2.5",  "5",     "10"};
#define NBOUNDS  (sizeof bounds / sizeof bounds[0])
#define NBUCKETS (NBOUNDS + 1)

/* Rows before the routes'. */
enum { ROW_NONE, ROW_AUTHORIZER, ROW_FILTER, ROW_FIRST_ROUTE };

/* Method columns: the bits of fcr_method in order, then the rest. */
#define METHOD_OTHER 9u

#define LINE 64u /* slots start on their own cache line */

typedef struct mgauges {
    _Atomic int64_t conns;
    _Atomic int64_t in_flight;
    _Atomic int64_t deferred;
} mgauges;

typedef struct mrow {
    _Atomic uint64_t bucket[NBUCKETS]; /* not cumulative: one add per request */
    _Atomic uint64_t sum_ns;
    _Atomic uint64_t overflow; /* requests whose key found no room in the table */
} mrow;

typedef struct mentry {
    _Atomic uint64_t key; /* 0: free */
    _Atomic uint64_t count;
} mentry;

typedef struct mhead {
    _Atomic uint64_t restarts;
} mhead;

struct fcr__metrics {
    fcr_app *app;
    unsigned char *area; /* fcr__shm_map */
    size_t area_len;
    size_t slot_size;
    const char **labels; /* nrows route labels (those from ROW_FIRST_ROUTE malloc'd) */
    char *path;          /* where the metrics are served */
    unsigned nslots, nrows, ntab;
    unsigned slot; /* this process's */
    unsigned nlabels;
};

static size_t round_up(size_t n, size_t to)
{
    return (n + to - 1) / to * to;
}

static unsigned char *slot_at(const fcr__metrics *m, unsigned i)
{
    return m->area + LINE + (size_t)i * m->slot_size;
}

static mgauges *gauges_of(const fcr__metrics *m, unsigned i)
{
    return (mgauges *)(void *)slot_at(m, i);
}

static mrow *rows_of(const fcr__metrics *m, unsigned i)
{
    return (mrow *)(void *)(slot_at(m, i) + round_up(sizeof(mgauges), LINE));
}

static mentry *table_of(const fcr__metrics *m, unsigned i)
{
    return (mentry *)(void *)((unsigned char *)rows_of(m, i) + m->nrows * sizeof(mrow));
}

static mhead *head_of(const fcr__metrics *m)
{
    return (mhead *)(void *)m->area;
}

/* ---- Route rows and their labels ------------------------------------------------------- */

static void free_labels(fcr__metrics *m)
{
    for (unsigned i = ROW_FIRST_ROUTE; i < m->nlabels; i++)
        free((char *)m->labels[i]);
    free((void *)m->labels);
    m->labels = NULL;
    m->nlabels = 0;
}

static unsigned count_routes(const fcr_app *app)
{
    unsigned n = 0;
    for (const fcr_route *r = app->routes; r; r = r->next)
        n++;
    fcr_app *const *mounts = app->mounts.v;
    for (size_t i = 0; i < app->mounts.n; i++)
        n += count_routes(mounts[i]);
    return n;
}

/* Numbers the routes of `app` (and its mounted apps) from `*next`, their labels the mount
 * prefixes followed by the pattern. Returns 0 or FCR_ENOMEM. */
static int number_routes(fcr__metrics *m, fcr_app *app, const char *prefix, unsigned *next)
{
    size_t plen = strlen(prefix);
    for (fcr_route *r = app->routes; r; r = r->next) {
        size_t len = plen + strlen(r->pattern);
        char *label = malloc(len + 1);
        if (!label)
            return FCR_ENOMEM;
        snprintf(label, len + 1, "%s%s", prefix, r->pattern);
        r->metrics_id = *next;
        m->labels[(*next)++] = label;
        m->nlabels = *next;
    }
    fcr_app **mounts = app->mounts.v;
    for (size_t i = 0; i < app->mounts.n; i++) {
        const char *mp = mounts[i]->mount_prefix ? mounts[i]->mount_prefix : "";
        size_t mlen = strlen(mp);
        char *sub = malloc(plen + mlen + 1);
        if (!sub)
            return FCR_ENOMEM;
        snprintf(sub, plen + mlen + 1, "%s%s", prefix, mp);
        int rc = number_routes(m, mounts[i], strcmp(mp, "/") == 0 ? prefix : sub, next);
        free(sub);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* ---- The area ------------------------------------------------------------------------- */

/* Replaces the area with one of `nslots` slots sized for the app's routes now. */
static int make_area(fcr__metrics *m, unsigned nslots)
{
    unsigned nroutes = count_routes(m->app);
    unsigned nrows = ROW_FIRST_ROUTE + nroutes;
    const char **labels = calloc(nrows, sizeof *labels);
    if (!labels)
        return FCR_ENOMEM;
    /* Room for 16 (method, status) pairs per row on average, at least 128. */
    unsigned ntab = 128;
    while (ntab < 16u * nrows && ntab < (1u << 24))
        ntab *= 2;
    size_t slot_size = round_up(round_up(sizeof(mgauges), LINE) + nrows * sizeof(mrow) +
                                    (size_t)ntab * sizeof(mentry),
                                LINE);
    size_t len = LINE + (size_t)nslots * slot_size;
    unsigned char *area = fcr__shm_map(len);
    if (!area) {
        free((void *)labels);
        fcr_log(FCR_LOG_ERROR, "metrics: cannot map %zu bytes of shared memory: %s", len,
                strerror(errno));
        return FCR_ENOMEM;
    }
    uint64_t restarts = m->area ? atomic_load(&head_of(m)->restarts) : 0;
    fcr__shm_unmap(m->area, m->area_len);
    free_labels(m);
    m->area = area;
    m->area_len = len;
    m->slot_size = slot_size;
    m->nslots = nslots;
    m->nrows = nrows;
    m->ntab = ntab;
    m->slot = 0;
    m->labels = labels;
    m->labels[ROW_NONE] = "";
    m->labels[ROW_AUTHORIZER] = "(authorizer)";
    m->labels[ROW_FILTER] = "(filter)";
    m->nlabels = ROW_FIRST_ROUTE;
    atomic_store(&head_of(m)->restarts, restarts);
    unsigned next = ROW_FIRST_ROUTE;
    if (number_routes(m, m->app, "", &next) < 0) {
        /* The rows without a label count as no route. */
        for (fcr_route *r = m->app->routes; r; r = r->next)
            if (r->metrics_id >= m->nlabels)
                r->metrics_id = ROW_NONE;
        m->nrows = m->nlabels;
        return FCR_ENOMEM;
    }
    return 0;
}

static int sup_prefork(fcr_server *srv, unsigned nslots, void *data)
{
    fcr__metrics *m = data;
    fcr__server_set_conn_gauge(srv, NULL); /* the supervisor never accepts */
    return make_area(m, nslots);
}

static void sup_worker(fcr_server *srv, unsigned slot, void *data)
{
    fcr__metrics *m = data;
    if (slot < m->nslots) {
        m->slot = slot;
        fcr__server_set_conn_gauge(srv, &gauges_of(m, slot)->conns);
    }
}

static void sup_exited(fcr_server *srv, unsigned slot, bool replaced, void *data)
{
    (void)srv;
    fcr__metrics *m = data;
    if (slot < m->nslots) {
        mgauges *g = gauges_of(m, slot);
        atomic_store(&g->conns, 0);
        atomic_store(&g->in_flight, 0);
        atomic_store(&g->deferred, 0);
    }
    if (replaced)
        atomic_fetch_add(&head_of(m)->restarts, 1);
}

int fcr__metrics_attach(fcr_app *app, fcr_server *srv)
{
    fcr__metrics *m = app->metrics;
    if (!m->area && make_area(m, 1) < 0)
        return FCR_ENOMEM;
    fcr__supervision sv = {
        .prefork = sup_prefork, .worker = sup_worker, .exited = sup_exited, .data = m};
    fcr__server_set_supervision(srv, &sv);
    fcr__server_set_conn_gauge(srv, &gauges_of(m, m->slot)->conns);
    return 0;
}

void fcr__metrics_free(fcr_app *app)
{
    fcr__metrics *m = app->metrics;
    if (!m)
        return;
    fcr__shm_unmap(m->area, m->area_len);
    free_labels(m);
    free(m->path);
    free(m);
    app->metrics = NULL;
}

/* ---- The request path: a few atomic adds, no allocation ------------------------------- */

void fcr__metrics_begin(fcr__ctx *ctx)
{
    const fcr__metrics *m = ctx->app->metrics;
    if (m->area)
        atomic_fetch_add_explicit(&gauges_of(m, m->slot)->in_flight, 1, memory_order_relaxed);
}

void fcr__metrics_release(fcr__ctx *ctx)
{
    const fcr__metrics *m = ctx->app->metrics;
    if (m->area)
        atomic_fetch_sub_explicit(&gauges_of(m, m->slot)->in_flight, 1, memory_order_relaxed);
}

void fcr__metrics_deferred(fcr_app *app, int delta)
{
    const fcr__metrics *m = app->metrics;
    if (m->area)
        atomic_fetch_add_explicit(&gauges_of(m, m->slot)->deferred, delta, memory_order_relaxed);
}

static uint64_t make_key(unsigned row, unsigned method, unsigned status)
{
    return (uint64_t)1 << 63 | (uint64_t)row << 24 | (uint64_t)method << 12 | status;
}

/* The count of `key` in `tab` (inserting it), or NULL when the table is full. */
static _Atomic uint64_t *find_count(mentry *tab, unsigned ntab, uint64_t key)
{
    uint64_t h = key * 0x9e3779b97f4a7c15u;
    unsigned mask = ntab - 1, i = (unsigned)(h >> 40) & mask;
    for (unsigned n = 0; n < ntab; n++, i = (i + 1) & mask) {
        uint64_t k = atomic_load_explicit(&tab[i].key, memory_order_acquire);
        if (k == 0) {
            uint64_t expected = 0;
            if (atomic_compare_exchange_strong_explicit(&tab[i].key, &expected, key,
                                                        memory_order_acq_rel, memory_order_acquire))
                return &tab[i].count;
            k = expected;
        }
        if (k == key)
            return &tab[i].count;
    }
    return NULL;
}

void fcr__metrics_end(fcr__ctx *ctx)
{
    const fcr__metrics *m = ctx->app->metrics;
    if (!m->area || !(ctx->start > 0))
        return; /* never handed to the app */
    unsigned row = ROW_NONE;
    fcr_role role = fcr_req_role(ctx->req);
    if (role == FCR_AUTHORIZER)
        row = ROW_AUTHORIZER;
    else if (role == FCR_FILTER)
        row = ROW_FILTER;
    else if (ctx->route && ctx->route->metrics_id < m->nrows)
        row = ctx->route->metrics_id;
    unsigned bit = ctx->method ? fcr_method_parse(ctx->method, strlen(ctx->method)) : 0;
    unsigned method = bit ? (unsigned)__builtin_ctz(bit) : METHOD_OTHER;
    if (method > METHOD_OTHER)
        method = METHOD_OTHER;
    int st = ctx->res.status;
    unsigned status = st < 0 ? 0 : st > 999 ? 999 : (unsigned)st;
    double secs = fcr__now() - ctx->start;
    if (!(secs >= 0))
        secs = 0;
    unsigned b = 0;
    while (b < NBOUNDS && secs > bounds[b])
        b++;
    mrow *r = &rows_of(m, m->slot)[row];
    _Atomic uint64_t *count =
        find_count(table_of(m, m->slot), m->ntab, make_key(row, method, status));
    atomic_fetch_add_explicit(count ? count : &r->overflow, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&r->bucket[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&r->sum_ns, secs < 1e9 ? (uint64_t)(secs * 1e9) : 0,
                              memory_order_relaxed);
}

/* ---- The scrape ----------------------------------------------------------------------- */

typedef struct pair {
    uint64_t key, count;
} pair;

static int pair_cmp(const void *a, const void *b)
{
    uint64_t x = ((const pair *)a)->key, y = ((const pair *)b)->key;
    return x < y ? -1 : x > y;
}

/* Appends `s` as a label value: backslash, double quote and newline escaped. */
static int put_label(fcr_res *res, const char *s)
{
    const char *p = s;
    int rc = 0;
    while (*p && rc >= 0) {
        size_t n = strcspn(p, "\\\"\n");
        if (n)
            rc = fcr_res_append(res, p, n);
        p += n;
        if (*p && rc >= 0) {
            rc = fcr_res_append(res, *p == '\n' ? "\\n" : *p == '"' ? "\\\"" : "\\\\", 2);
            p++;
        }
    }
    return rc;
}

static const char *method_label(unsigned method)
{
    return method < METHOD_OTHER ? fcr_method_name(1u << method) : "other";
}

static int64_t sum_gauge(const fcr__metrics *m, size_t offset)
{
    int64_t v = 0;
    for (unsigned i = 0; i < m->nslots; i++)
        v += atomic_load_explicit((_Atomic int64_t *)(void *)(slot_at(m, i) + offset),
                                  memory_order_relaxed);
    return v < 0 ? 0 : v;
}

static int write_counters(const fcr__metrics *m, fcr_res *res)
{
    size_t cap = (size_t)m->nslots * m->ntab, n = 0;
    pair *v = malloc((cap ? cap : 1) * sizeof *v);
    if (!v)
        return FCR_ENOMEM;
    for (unsigned s = 0; s < m->nslots; s++) {
        const mentry *tab = table_of(m, s);
        for (unsigned i = 0; i < m->ntab; i++) {
            uint64_t k = atomic_load_explicit(&tab[i].key, memory_order_acquire);
            uint64_t c = k ? atomic_load_explicit(&tab[i].count, memory_order_relaxed) : 0;
            if (c)
                v[n++] = (pair){k, c};
        }
    }
    qsort(v, n, sizeof *v, pair_cmp);
    int rc = fcr_res_printf(res, "# HELP fcrest_requests_total Requests answered, by route "
                                 "(pattern; \"\" for none), method and status.\n"
                                 "# TYPE fcrest_requests_total counter\n");
    for (size_t i = 0; i < n && rc >= 0;) {
        uint64_t key = v[i].key, total = 0;
        for (; i < n && v[i].key == key; i++)
            total += v[i].count;
        unsigned row = (unsigned)(key >> 24 & 0xffffffu), method = (unsigned)(key >> 12 & 0xfffu);
        unsigned status = (unsigned)(key & 0xfffu);
        if (row >= m->nlabels)
            row = ROW_NONE;
        rc = fcr_res_printf(res, "fcrest_requests_total{route=\"");
        if (rc >= 0)
            rc = put_label(res, m->labels[row]);
        if (rc >= 0)
            rc = fcr_res_printf(res, "\",method=\"%s\",status=\"%u\"} %llu\n", method_label(method),
                                status, (unsigned long long)total);
    }
    /* Requests that found the table full: counted, without their method and status. */
    for (unsigned row = 0; row < m->nlabels && rc >= 0; row++) {
        uint64_t over = 0;
        for (unsigned s = 0; s < m->nslots; s++)
            over += atomic_load_explicit(&rows_of(m, s)[row].overflow, memory_order_relaxed);
        if (!over)
            continue;
        rc = fcr_res_printf(res, "fcrest_requests_total{route=\"");
        if (rc >= 0)
            rc = put_label(res, m->labels[row]);
        if (rc >= 0)
            rc = fcr_res_printf(res, "\",method=\"other\",status=\"other\"} %llu\n",
                                (unsigned long long)over);
    }
    free(v);
    return rc;
}

static int write_histograms(const fcr__metrics *m, fcr_res *res)
{
    int rc = fcr_res_printf(res, "# HELP fcrest_request_duration_seconds Time from a request's "
                                 "complete input to the end of its answer, by route.\n"
                                 "# TYPE fcrest_request_duration_seconds histogram\n");
    for (unsigned row = 0; row < m->nlabels && rc >= 0; row++) {
        uint64_t b[NBUCKETS] = {0}, sum = 0, count = 0;
        for (unsigned s = 0; s < m->nslots; s++) {
            const mrow *r = &rows_of(m, s)[row];
            for (size_t k = 0; k < NBUCKETS; k++)
                b[k] += atomic_load_explicit(&r->bucket[k], memory_order_relaxed);
            sum += atomic_load_explicit(&r->sum_ns, memory_order_relaxed);
        }
        for (size_t k = 0; k < NBUCKETS; k++)
            count += b[k];
        if (count == 0 && row < ROW_FIRST_ROUTE)
            continue; /* the rows that are not routes show once used */
        uint64_t cum = 0;
        for (size_t k = 0; k < NBUCKETS && rc >= 0; k++) {
            cum += b[k];
            rc = fcr_res_printf(res, "fcrest_request_duration_seconds_bucket{route=\"");
            if (rc >= 0)
                rc = put_label(res, m->labels[row]);
            if (rc >= 0)
                rc = fcr_res_printf(res, "\",le=\"%s\"} %llu\n",
                                    k < NBOUNDS ? bound_text[k] : "+Inf", (unsigned long long)cum);
        }
        const char *names[] = {"sum", "count"};
        for (int k = 0; k < 2 && rc >= 0; k++) {
            rc = fcr_res_printf(res, "fcrest_request_duration_seconds_%s{route=\"", names[k]);
            if (rc >= 0)
                rc = put_label(res, m->labels[row]);
            if (rc >= 0 && k == 0)
                rc = fcr_res_printf(res, "\"} %llu.%09llu\n",
                                    (unsigned long long)(sum / 1000000000u),
                                    (unsigned long long)(sum % 1000000000u));
            else if (rc >= 0)
                rc = fcr_res_printf(res, "\"} %llu\n", (unsigned long long)count);
        }
    }
    return rc;
}

static fcr_handler_result h_metrics(fcr_req *req, fcr_res *res, void *data)
{
    (void)req;
    const fcr__metrics *m = data;
    if (!m->area)
        return fcr_res_set_problem(res, 503, "metrics are not collected by this server");
    int rc = fcr_res_set_header(res, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
    if (rc >= 0)
        rc = fcr_res_set_header(res, "Cache-Control", "no-store");
    if (rc >= 0)
        rc = write_counters(m, res);
    if (rc >= 0)
        rc = write_histograms(m, res);
    if (rc >= 0)
        rc = fcr_res_printf(
            res,
            "# HELP fcrest_connections_open FastCGI connections open, all workers.\n"
            "# TYPE fcrest_connections_open gauge\n"
            "fcrest_connections_open %lld\n"
            "# HELP fcrest_requests_in_flight Requests begun and not yet answered, all workers "
            "(this scrape included).\n"
            "# TYPE fcrest_requests_in_flight gauge\n"
            "fcrest_requests_in_flight %lld\n"
            "# HELP fcrest_deferrals_outstanding Deferrals (fcr_defer) queued or running whose "
            "done has not run, all workers.\n"
            "# TYPE fcrest_deferrals_outstanding gauge\n"
            "fcrest_deferrals_outstanding %lld\n"
            "# HELP fcrest_worker_restarts_total Workers the supervisor started in place of one "
            "that ended unexpectedly.\n"
            "# TYPE fcrest_worker_restarts_total counter\n"
            "fcrest_worker_restarts_total %llu\n",
            (long long)sum_gauge(m, offsetof(mgauges, conns)),
            (long long)sum_gauge(m, offsetof(mgauges, in_flight)),
            (long long)sum_gauge(m, offsetof(mgauges, deferred)),
            (unsigned long long)atomic_load(&head_of(m)->restarts));
    return rc < 0 ? rc : FCR_DONE;
}

/* ---- The API -------------------------------------------------------------------------- */

int fcr_app_metrics(fcr_app *app, const char *path)
{
    if (!app || !path || path[0] != '/' || app->parent)
        return FCR_EINVAL;
    for (const char *p = path; *p; p++) {
        if ((unsigned char)*p <= ' ' || *p == 0x7f || *p == '?' || *p == '#')
            return FCR_EINVAL;
    }
    if (app->metrics)
        return strcmp(app->metrics->path, path) == 0 ? 0 : FCR_EEXIST;
    /* The path as a literal pattern. */
    size_t len = strlen(path);
    char *pattern = malloc(2 * len + 1);
    fcr__metrics *m = calloc(1, sizeof *m);
    if (!pattern || !m || !(m->path = strdup(path))) {
        free(pattern);
        if (m)
            free(m->path);
        free(m);
        return FCR_ENOMEM;
    }
    size_t n = 0;
    for (const char *p = path; *p; p++) {
        if (strchr("\\^$.|?*+()[]{}", *p))
            pattern[n++] = '\\';
        pattern[n++] = *p;
    }
    pattern[n] = '\0';
    m->app = app;
    fcr_route *r = fcr_app_route(app, FCR_GET, pattern, h_metrics, m);
    free(pattern);
    if (!r) {
        free(m->path);
        free(m);
        return FCR_ENOMEM;
    }
    app->metrics = m;
    return 0;
}
