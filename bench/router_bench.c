/* Router lookup benchmark.
 *
 *   router_bench [--count N]
 *       builds routers of 10, 100 and 1,000 routes and prints the time per lookup of a route in
 *       the middle and at the end of the registration order.
 *   router_bench --count N --routes K [--at middle|end]
 *       builds one router of K routes and runs N lookups, for instruction counting:
 *       valgrind --tool=callgrind --toggle-collect=run_lookups router_bench --count N --routes K
 *       counts only the lookups (divide by N); under valgrind --tool=memcheck, the heap summary
 *       of N and 2N lookups shows whether a lookup allocates.
 *
 * The routes look like a REST service's: each has its own first segment, in three shapes
 * ("/resI", "/resI/(?<id>[0-9]+)", "/resI/(?<id>[0-9]+)/items/(?<item>[a-z0-9-]+)"); the
 * route looked up has the second shape. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <fcrest/router.h>

static int targets[100000];

static fcr_router *build(int nroutes)
{
    fcr_router *r = fcr_router_new();
    if (r == NULL)
        return NULL;
    for (int i = 0; i < nroutes; i++) {
        char pat[128];
        unsigned methods = FCR_GET;
        switch (i % 3) {
        case 0:
            snprintf(pat, sizeof pat, "/res%d", i);
            methods |= FCR_POST;
            break;
        case 1:
            snprintf(pat, sizeof pat, "/res%d/(?<id>[0-9]+)", i);
            methods |= FCR_PUT | FCR_DELETE;
            break;
        default:
            snprintf(pat, sizeof pat, "/res%d/(?<id>[0-9]+)/items/(?<item>[a-z0-9-]+)", i);
            break;
        }
        fcr_router_error err;
        if (fcr_router_add(r, methods, pat, &targets[i], &err) != 0) {
            fprintf(stderr, "add %s: %s at %zu\n", pat, err.message, err.offset);
            fcr_router_free(r);
            return NULL;
        }
    }
    return r;
}

/* Index of the route to look up: one of the second shape near `pos` (0 start .. 1 end). */
static int pick(int nroutes, int at_end)
{
    int i = at_end ? nroutes - 1 : nroutes / 2;
    while (i % 3 != 1)
        i--;
    return i;
}

/* Not static and not inlined, so callgrind can count exactly this function
 * (--toggle-collect=run_lookups). Returns the number of lookups that found the route. */
__attribute__((noinline)) long run_lookups(fcr_router *r, const char *path, size_t len, long n,
                                           const void *want)
{
    char scratch[256];
    fcr_match m;
    long found = 0;
    for (long i = 0; i < n; i++) {
        /* Params verbatim, as the app routes on the decoded SCRIPT_NAME + PATH_INFO. */
        if (fcr_router_match(r, FCR_GET, path, len, 0, &m, scratch, sizeof scratch) == 0 &&
            m.status == FCR_MATCH_FOUND && m.target == want)
            found++;
    }
    return found;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Builds a router of `nroutes`, runs `count` lookups of the chosen route; returns ns/lookup
 * or a negative number on failure. */
static double bench(int nroutes, int at_end, long count)
{
    fcr_router *r = build(nroutes);
    if (r == NULL)
        return -1;
    int i = pick(nroutes, at_end);
    char path[64];
    int len = snprintf(path, sizeof path, "/res%d/123456", i);
    run_lookups(r, path, (size_t)len, count / 10 + 1, &targets[i]); /* warm up */
    double t0 = now();
    long found = run_lookups(r, path, (size_t)len, count, &targets[i]);
    double t1 = now();
    fcr_router_free(r);
    if (found != count) {
        fprintf(stderr, "lookup of %s failed\n", path);
        return -1;
    }
    return (t1 - t0) * 1e9 / (double)count;
}

static void usage(void)
{
    fprintf(stderr, "usage: router_bench [--count N] [--routes K [--at middle|end]]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    long count = 1000000;
    int nroutes = 0, at_end = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--count") == 0 && i + 1 < argc)
            count = strtol(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--routes") == 0 && i + 1 < argc)
            nroutes = (int)strtol(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--at") == 0 && i + 1 < argc)
            at_end = strcmp(argv[++i], "end") == 0;
        else
            usage();
    }
    if (count <= 0 || nroutes < 0 || nroutes > (int)(sizeof targets / sizeof targets[0]))
        usage();

    if (nroutes > 0) {
        fcr_router *r = build(nroutes);
        if (r == NULL)
            return 1;
        int i = pick(nroutes, at_end);
        char path[64];
        int len = snprintf(path, sizeof path, "/res%d/123456", i);
        long found = run_lookups(r, path, (size_t)len, count, &targets[i]);
        fcr_router_free(r);
        printf("routes %d, %ld lookups of %s, %ld found\n", nroutes, count, path, found);
        return found == count ? 0 : 1;
    }

    printf("%8s %14s %14s\n", "routes", "middle ns/op", "end ns/op");
    static const int sizes[] = {10, 100, 1000};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        double mid = bench(sizes[k], 0, count), end = bench(sizes[k], 1, count);
        if (mid < 0 || end < 0)
            return 1;
        printf("%8d %14.1f %14.1f\n", sizes[k], mid, end);
    }
    return 0;
}
