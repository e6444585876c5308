/* Router lookup benchmark: three layouts of routes, 10 to 1,000 of them, and two designs.
 *
 *   router_bench
 *       prints ns per lookup of the last registered route for every layout and design at 10,
 *       100 and 1,000 routes, and each layout's ratio of 1,000 to 10 routes.
 *   router_bench --count N --routes K [--layout L] [--design D] [--at middle|end]
 *       builds one router of K routes and runs N lookups, for instruction counting:
 *       valgrind --tool=callgrind --toggle-collect=run_lookups router_bench --count N --routes K
 *       counts only the lookups (divide by N); under valgrind --tool=memcheck, the heap summary
 *       of N and 2N lookups shows whether a lookup allocates.
 *
 * Layouts (route i of K; the route looked up is the last one, or the middle one):
 *   distinct  /res<i>/(?<id>[0-9]+)                    each route its own first segment
 *   prefix    /api/v1/res<i>/(?<id>[0-9]+)             all under one prefix
 *   param     /(?<tenant>[a-z]+)/res<i>/(?<id>[0-9]+)  a parameter first (multi-tenant)
 * Designs:
 *   router       fcr_router_match() (the library as built)
 *   alternation  one PCRE2 pattern, JIT-compiled: every route an alternative of a branch-reset
 *                group, each ending in (*MARK:i); the mark of the match names the route. It
 *                finds the first route that matches, but not the Allow set of every route that
 *                matches, which the router must report: a lower bound for that design. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <fcrest/router.h>

#define MAX_ROUTES 100000

static int targets[MAX_ROUTES];

enum layout { DISTINCT, PREFIX, PARAM, NLAYOUTS };
static const char *const layout_names[NLAYOUTS] = {"distinct", "prefix", "param"};
enum design { ROUTER, ALTERNATION, NDESIGNS };
static const char *const design_names[NDESIGNS] = {"router", "alternation"};

static int pattern_of(enum layout l, int i, char *buf, size_t cap)
{
    switch (l) {
    case DISTINCT:
        return snprintf(buf, cap, "/res%d/(?<id>[0-9]+)", i);
    case PREFIX:
        return snprintf(buf, cap, "/api/v1/res%d/(?<id>[0-9]+)", i);
    default:
        return snprintf(buf, cap, "/(?<tenant>[a-z]+)/res%d/(?<id>[0-9]+)", i);
    }
}

static int path_of(enum layout l, int i, char *buf, size_t cap)
{
    switch (l) {
    case DISTINCT:
        return snprintf(buf, cap, "/res%d/123456", i);
    case PREFIX:
        return snprintf(buf, cap, "/api/v1/res%d/123456", i);
    default:
        return snprintf(buf, cap, "/acme/res%d/123456", i);
    }
}

/* One design's state. */
struct subject {
    enum design design;
    fcr_router *router;
    pcre2_code *alt;
    pcre2_match_data *md;
};

static void subject_free(struct subject *s)
{
    fcr_router_free(s->router);
    pcre2_code_free(s->alt);
    pcre2_match_data_free(s->md);
}

static int build(struct subject *s, enum design d, enum layout l, int nroutes)
{
    memset(s, 0, sizeof *s);
    s->design = d;
    if (d == ROUTER) {
        s->router = fcr_router_new();
        if (s->router == NULL)
            return -1;
        for (int i = 0; i < nroutes; i++) {
            char pat[128];
            pattern_of(l, i, pat, sizeof pat);
            fcr_router_error err;
            if (fcr_router_add(s->router, FCR_GET | FCR_PUT, pat, &targets[i], &err) != 0) {
                fprintf(stderr, "add %s: %s at %zu\n", pat, err.message, err.offset);
                return -1;
            }
        }
        return 0;
    }
    size_t cap = (size_t)nroutes * 96 + 16, n = 0;
    char *alt = malloc(cap);
    if (alt == NULL)
        return -1;
    n += (size_t)snprintf(alt + n, cap - n, "(?|");
    for (int i = 0; i < nroutes; i++) {
        n += (size_t)snprintf(alt + n, cap - n, "%s", i ? "|" : "");
        n += (size_t)pattern_of(l, i, alt + n, cap - n);
        n += (size_t)snprintf(alt + n, cap - n, "(*:%d)", i);
    }
    snprintf(alt + n, cap - n, ")");
    int err = 0;
    PCRE2_SIZE off = 0;
    s->alt = pcre2_compile((PCRE2_SPTR)alt, PCRE2_ZERO_TERMINATED,
                           PCRE2_ANCHORED | PCRE2_ENDANCHORED | PCRE2_UTF, &err, &off, NULL);
    free(alt);
    if (s->alt == NULL) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(err, msg, sizeof msg);
        fprintf(stderr, "alternation of %d routes: PCRE2 error %d: %s\n", nroutes, err,
                (const char *)msg);
        return -2;
    }
    pcre2_jit_compile(s->alt, PCRE2_JIT_COMPLETE);
    s->md = pcre2_match_data_create_from_pattern(s->alt, NULL);
    return s->md != NULL ? 0 : -1;
}

/* Not static and not inlined, so callgrind can count exactly this function
 * (--toggle-collect=run_lookups). Returns the number of lookups that found the route. */
__attribute__((noinline)) long run_lookups(struct subject *s, const char *path, size_t len, long n,
                                           int want)
{
    char scratch[256];
    fcr_match m;
    long found = 0;
    for (long i = 0; i < n; i++) {
        if (s->design == ROUTER) {
            /* Params verbatim, as the app routes on the decoded SCRIPT_NAME + PATH_INFO. */
            if (fcr_router_match(s->router, FCR_GET, path, len, 0, &m, scratch, sizeof scratch) ==
                    0 &&
                m.status == FCR_MATCH_FOUND && m.target == &targets[want])
                found++;
        } else if (pcre2_match(s->alt, (PCRE2_SPTR)path, len, 0, 0, s->md, NULL) >= 0) {
            PCRE2_SPTR mark = pcre2_get_mark(s->md);
            if (mark != NULL && atoi((const char *)mark) == want)
                found++;
        }
    }
    return found;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ns per lookup of the last route of `nroutes`, -2 when the design cannot hold that many
 * routes, -1 on another failure. Runs for about 50 ms. */
static double bench(enum design d, enum layout l, int nroutes)
{
    struct subject s;
    int rc = build(&s, d, l, nroutes);
    if (rc < 0) {
        subject_free(&s);
        return rc;
    }
    int i = nroutes - 1;
    char path[64];
    size_t len = (size_t)path_of(l, i, path, sizeof path);
    long count = 100;
    double t = 0;
    for (;;) {
        double t0 = now();
        long found = run_lookups(&s, path, len, count, i);
        t = now() - t0;
        if (found != count) {
            fprintf(stderr, "%s %s: lookup of %s failed\n", design_names[d], layout_names[l], path);
            subject_free(&s);
            return -1;
        }
        if (t > 0.05)
            break;
        count *= t > 0.005 ? 4 : 16;
    }
    subject_free(&s);
    return t * 1e9 / (double)count;
}

static void usage(void)
{
    fprintf(stderr, "usage: router_bench [--count N --routes K [--layout distinct|prefix|param]"
                    " [--design router|alternation] [--at middle|end]]\n");
    exit(2);
}

static int lookup_name(const char *const *names, int n, const char *s)
{
    for (int i = 0; i < n; i++) {
        if (strcmp(names[i], s) == 0)
            return i;
    }
    usage();
    return -1;
}

int main(int argc, char **argv)
{
    long count = 1000000;
    int nroutes = 0, at_end = 1;
    enum layout layout = DISTINCT;
    enum design design = ROUTER;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--count") == 0 && i + 1 < argc)
            count = strtol(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--routes") == 0 && i + 1 < argc)
            nroutes = (int)strtol(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--at") == 0 && i + 1 < argc)
            at_end = strcmp(argv[++i], "end") == 0;
        else if (strcmp(argv[i], "--layout") == 0 && i + 1 < argc)
            layout = (enum layout)lookup_name(layout_names, NLAYOUTS, argv[++i]);
        else if (strcmp(argv[i], "--design") == 0 && i + 1 < argc)
            design = (enum design)lookup_name(design_names, NDESIGNS, argv[++i]);
        else
            usage();
    }
    if (count <= 0 || nroutes < 0 || nroutes > MAX_ROUTES)
        usage();

    if (nroutes > 0) {
        struct subject s;
        if (build(&s, design, layout, nroutes) < 0)
            return 1;
        int i = at_end ? nroutes - 1 : nroutes / 2;
        char path[64];
        size_t len = (size_t)path_of(layout, i, path, sizeof path);
        long found = run_lookups(&s, path, len, count, i);
        subject_free(&s);
        printf("%s %s, routes %d, %ld lookups of %s, %ld found\n", design_names[design],
               layout_names[layout], nroutes, count, path, found);
        return found == count ? 0 : 1;
    }

    static const int sizes[] = {10, 100, 1000};
    printf("%-12s %-9s %10s %10s %10s %8s\n", "design", "layout", "10 ns", "100 ns", "1000 ns",
           "1000/10");
    for (int d = 0; d < NDESIGNS; d++) {
        for (int l = 0; l < NLAYOUTS; l++) {
            double ns[3];
            printf("%-12s %-9s", design_names[d], layout_names[l]);
            for (int k = 0; k < 3; k++) {
                ns[k] = bench((enum design)d, (enum layout)l, sizes[k]);
                if (ns[k] == -1)
                    return 1;
                if (ns[k] < 0)
                    printf(" %10s", "fails");
                else
                    printf(" %10.1f", ns[k]);
            }
            if (ns[0] > 0 && ns[2] > 0)
                printf(" %8.2f\n", ns[2] / ns[0]);
            else
                printf(" %8s\n", "-");
        }
    }
    return 0;
}
