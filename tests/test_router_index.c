/* Unit tests of the router's segment index: what the pattern scan proves about the segments
 * of a pattern's paths (router/segment.c), and lookups through the index in the layouts of a
 * REST service (distinct first segments, one prefix, a parameter first), where registration
 * order must still decide between routes that both match. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <fcrest/router.h>

#include "router/router_int.h"

/* ---- the pattern scan ---- */

/* The scan of `pattern` as text: "exact" or "more", then each segment ("*" for any), such as
 * "exact|''|'notes'|*". */
static const char *segs_of(const char *pattern)
{
    static char out[512];
    static char buf[256];
    static fcr__pattern_segs s;
    ck_assert_uint_lt(strlen(pattern), sizeof buf);
    fcr__pattern_segments(pattern, buf, &s);
    size_t n = (size_t)snprintf(out, sizeof out, "%s", s.exact ? "exact" : "more");
    for (size_t i = 0; i < s.n && n < sizeof out; i++) {
        if (s.seg[i].lit == NULL)
            n += (size_t)snprintf(out + n, sizeof out - n, "|*");
        else
            n += (size_t)snprintf(out + n, sizeof out - n, "|'%.*s'", (int)s.seg[i].len,
                                  s.seg[i].lit);
    }
    return out;
}

START_TEST(scan_layouts)
{
    ck_assert_str_eq(segs_of("/res7/(?<id>[0-9]+)"), "exact|''|'res7'|*");
    ck_assert_str_eq(segs_of("/api/v1/res7/(?<id>[0-9]+)"), "exact|''|'api'|'v1'|'res7'|*");
    ck_assert_str_eq(segs_of("/(?<tenant>[a-z]+)/res7/(?<id>[0-9]+)"), "exact|''|*|'res7'|*");
    ck_assert_str_eq(segs_of("/notes"), "exact|''|'notes'");
    ck_assert_str_eq(segs_of("/"), "exact|''|''");
    ck_assert_str_eq(segs_of(""), "exact|''");
    ck_assert_str_eq(segs_of("/a/(?<t>[^/]+)/b"), "exact|''|'a'|*|'b'");
    ck_assert_str_eq(segs_of("/a/\\d+-\\w*/b"), "exact|''|'a'|*|'b'");
    ck_assert_str_eq(segs_of("/a\\.json/(?:x|y)z"), "exact|''|'a.json'|*");
    ck_assert_str_eq(segs_of("^/a/b$"), "exact|''|'a'|'b'");
    ck_assert_str_eq(segs_of("/a\\/b"), "exact|''|'a'|'b'");
    ck_assert_str_eq(segs_of("/caf\xc3\xa9/x"), "exact|''|'caf\xc3\xa9'|'x'");
    ck_assert_str_eq(segs_of("/[[:alpha:]]+/[^!-/]+/[a-z0-9._~-]+"), "exact|''|*|*|*");
}
END_TEST

START_TEST(scan_stops_where_it_cannot_prove)
{
    /* Anything after the first item that may match '/' or that the scan does not follow:
     * only the segments closed before it are known, and the path goes on. */
    ck_assert_str_eq(segs_of("/files/.*"), "more|''|'files'");
    ck_assert_str_eq(segs_of("/files/(?<rest>.+)"), "more|''|'files'");
    ck_assert_str_eq(segs_of("/opt(/(?<tail>.+))?"), "more|''");
    ck_assert_str_eq(segs_of("/a/[a-z/]+"), "more|''|'a'");
    ck_assert_str_eq(segs_of("/a/[\\W]+"), "more|''|'a'");
    ck_assert_str_eq(segs_of("/a/[!-0]"), "more|''|'a'");
    ck_assert_str_eq(segs_of("/a/(?i)b"), "more|''"); /* an option setting may hide a quantifier */
    ck_assert_str_eq(segs_of("/a/(?=b)b"), "more|''|'a'");
    ck_assert_str_eq(segs_of("/a/\\Qb\\E"), "more|''"); /* \Q...\E may be empty */
    ck_assert_str_eq(segs_of("/a/\\x{62}"), "more|''|'a'");
    ck_assert_str_eq(segs_of("/a/(x|/)"), "more|''|'a'");
    /* "[:" not followed by letters and ":]" is no POSIX class: here the class is [^[:] */
    ck_assert_str_eq(segs_of("/a/[^[:]/x/[:]/]"), "more|''|'a'");
    /* A '/' that may repeat or be left out, also behind items that match nothing. */
    ck_assert_str_eq(segs_of("/a/?b"), "more|''");
    ck_assert_str_eq(segs_of("/a/+b"), "more|''");
    ck_assert_str_eq(segs_of("/a/{1,2}b"), "more|''");
    ck_assert_str_eq(segs_of("/a/(?#x)?b"), "more|''");
    ck_assert_str_eq(segs_of("/a/\\E?b"), "more|''");
    /* A top-level alternative or a verb: nothing is known. */
    ck_assert_str_eq(segs_of("/a|/b"), "more");
    ck_assert_str_eq(segs_of("(*UTF)/a"), "more");
    ck_assert_str_eq(segs_of("(?x)/a"), "more");
}
END_TEST

START_TEST(scan_literal_only_when_exact)
{
    /* A quantified character, also behind items that match nothing, makes its segment "any". */
    ck_assert_str_eq(segs_of("/ab?/c"), "exact|''|*|'c'");
    ck_assert_str_eq(segs_of("/a{2}/c"), "exact|''|*|'c'");
    ck_assert_str_eq(segs_of("/a(?#x)?/c"), "more|''");
    ck_assert_str_eq(segs_of("/caf\xc3\xa9?/c"), "exact|''|*|'c'");
    ck_assert_str_eq(segs_of("/a]b/c"), "exact|''|*|'c'");
    ck_assert_str_eq(segs_of("/a\\b/c"), "exact|''|'a'|'c'");
}
END_TEST

START_TEST(scan_many_segments)
{
    char pat[256] = "";
    for (int i = 0; i < FCR__MAX_SEGS + 5; i++)
        strcat(pat, "/s");
    const char *s = segs_of(pat);
    ck_assert_ptr_nonnull(strstr(s, "more|"));
}
END_TEST

/* ---- lookups through the index ---- */

static int targets[64];
static fcr_router *r;
static fcr_match m;
static char scratch[512];

static void setup(void)
{
    r = fcr_router_new();
    ck_assert_ptr_nonnull(r);
}

static void teardown(void)
{
    fcr_router_free(r);
    r = NULL;
}

static void add(unsigned methods, const char *pattern, int t)
{
    fcr_router_error err;
    int rc = fcr_router_add(r, methods, pattern, &targets[t], &err);
    ck_assert_msg(rc == 0, "add %s: %d %s", pattern, rc, err.message);
}

/* The target number found for GET `path`, -1 for 404, -2 for 405. */
static int get(const char *path)
{
    ck_assert_int_eq(
        fcr_router_match(r, FCR_GET, path, strlen(path), 0, &m, scratch, sizeof scratch), 0);
    if (m.status == FCR_MATCH_NOT_FOUND)
        return -1;
    if (m.status == FCR_MATCH_NOT_ALLOWED)
        return -2;
    ck_assert_int_eq(m.status, FCR_MATCH_FOUND);
    return (int)((int *)m.target - targets);
}

START_TEST(param_first_before_literal_wins)
{
    /* Both match /acme/res1/2: the one registered first wins, though the literal one sits on
     * another branch of the index. */
    add(FCR_GET, "/(?<tenant>[a-z]+)/res1/(?<id>[0-9]+)", 1);
    add(FCR_GET, "/acme/res1/(?<id>[0-9]+)", 2);
    ck_assert_int_eq(get("/acme/res1/2"), 1);
    ck_assert_str_eq(fcr_match_param(&m, "tenant"), "acme");
    ck_assert_int_eq(get("/ACME/res1/2"), -1);
}
END_TEST

START_TEST(literal_before_param_first_wins)
{
    add(FCR_GET, "/acme/res1/(?<id>[0-9]+)", 2);
    add(FCR_GET | FCR_PUT, "/(?<tenant>[a-z]+)/res1/(?<id>[0-9]+)", 1);
    add(FCR_GET, "/(?<all>.*)", 3);
    ck_assert_int_eq(get("/acme/res1/2"), 2);
    ck_assert_uint_eq(m.allowed, FCR_GET | FCR_HEAD | FCR_PUT | FCR_OPTIONS);
    ck_assert_int_eq(get("/other/res1/2"), 1);
    ck_assert_int_eq(get("/other/res1/x"), 3);
    ck_assert_int_eq(get("/"), 3);
    ck_assert_int_eq(get(""), -1);
}
END_TEST

START_TEST(layouts_of_many_routes)
{
    char pat[96], path[96];
    for (int i = 0; i < 60; i++) {
        snprintf(pat, sizeof pat,
                 i % 3 == 0   ? "/res%d/(?<id>[0-9]+)"
                 : i % 3 == 1 ? "/api/v1/res%d/(?<id>[0-9]+)"
                              : "/(?<tenant>[a-z]+)/res%d/(?<id>[0-9]+)",
                 i);
        add(FCR_GET, pat, i);
    }
    for (int i = 0; i < 60; i++) {
        snprintf(path, sizeof path,
                 i % 3 == 0   ? "/res%d/42"
                 : i % 3 == 1 ? "/api/v1/res%d/42"
                              : "/acme/res%d/42",
                 i);
        ck_assert_int_eq(get(path), i);
        ck_assert_str_eq(fcr_match_param(&m, "id"), "42");
    }
    /* "/api/res0/1" is the param-first layout's shape with tenant "api" ... and res0 is only
     * registered in the distinct layout. */
    ck_assert_int_eq(get("/api/res0/1"), -1);
    ck_assert_int_eq(get("/api/res2/1"), 2);
    ck_assert_int_eq(get("/api/v1/res2/1"), -1);
    ck_assert_int_eq(get("/res1/1"), -1);
}
END_TEST

START_TEST(mounts_and_catch_alls_keep_order)
{
    add(FCR_GET, "/api/v1/res1/(?<id>[0-9]+)", 1);
    fcr_router *child = fcr_router_new();
    ck_assert_ptr_nonnull(child);
    ck_assert_int_eq(fcr_router_mount(r, "/api", child), 0);
    fcr_router_error err;
    ck_assert_int_eq(fcr_router_add(child, FCR_GET, "/v1/(?<kind>[a-z]+)(?<n>[0-9])/(?<id>.+)",
                                    &targets[2], &err),
                     0);
    ck_assert_int_eq(fcr_router_add(child, FCR_GET, "", &targets[4], &err), 0);
    add(FCR_GET, "/api/v1/res2/(?<id>[0-9]+)", 3);
    ck_assert_int_eq(get("/api/v1/res1/7"), 1);
    ck_assert_int_eq(get("/api/v1/res2/7"), 2);
    ck_assert_int_eq(get("/api/v1/res2/7/8"), 2);
    ck_assert_int_eq(get("/api"), 4);
    ck_assert_int_eq(get("/api/"), -1);
    ck_assert_int_eq(get("/apix/v1/res2/7"), -1);
}
END_TEST

START_TEST(empty_and_odd_paths)
{
    add(FCR_GET, "/", 1);
    add(FCR_GET, "//(?<x>[a-z]*)", 2);
    add(FCR_GET, "/a//b", 3);
    ck_assert_int_eq(get("/"), 1);
    ck_assert_int_eq(get("//"), 2);
    ck_assert_int_eq(get("//q"), 2);
    ck_assert_int_eq(get("/a//b"), 3);
    ck_assert_int_eq(get("/a/b"), -1);
    ck_assert_int_eq(get(""), -1);
    ck_assert_int_eq(get("no-slash"), -1);
}
END_TEST

START_TEST(many_branches_fall_back_to_a_scan)
{
    /* 64 routes of six segments, each literal "x" or any: a path of six "x" reaches every
     * one, more branches than a lookup follows at once. The router then tries every route in
     * order and still answers as the index would. Route k has "x" where bit i of k is set; they
     * are registered from k = 63 down. */
    for (int k = 63; k >= 0; k--) {
        char pat[128] = "";
        for (int i = 0; i < 6; i++)
            strcat(pat, (k >> i) & 1 ? "/x" : "/[a-z]+");
        add(FCR_GET, pat, k);
    }
    ck_assert_int_eq(get("/x/x/x/x/x/x"), 63);
    ck_assert_int_eq(get("/x/x/x/x/x/y"), 31);
    ck_assert_int_eq(get("/y/x/x/x/x/x"), 62);
    ck_assert_int_eq(get("/y/y/x/x/x/y"), 28);
    ck_assert_int_eq(get("/x/x/x/x/x"), -1);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("router_index");
    TCase *tc = tcase_create("scan");
    tcase_add_test(tc, scan_layouts);
    tcase_add_test(tc, scan_stops_where_it_cannot_prove);
    tcase_add_test(tc, scan_literal_only_when_exact);
    tcase_add_test(tc, scan_many_segments);
    suite_add_tcase(s, tc);
    tc = tcase_create("lookup");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, param_first_before_literal_wins);
    tcase_add_test(tc, literal_before_param_first_wins);
    tcase_add_test(tc, layouts_of_many_routes);
    tcase_add_test(tc, mounts_and_catch_alls_keep_order);
    tcase_add_test(tc, empty_and_odd_paths);
    tcase_add_test(tc, many_branches_fall_back_to_a_scan);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
