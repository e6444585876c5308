/* Unit tests of the router: precedence, 404/405/OPTIONS, HEAD, params, mounts, errors. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <fcrest/router.h>

/* Distinct addresses to use as targets. */
static int t1, t2, t3, t4, t5;

static fcr_router *r;
static fcr_match m;
static char scratch[512];

static void setup(void)
{
    r = fcr_router_new();
    ck_assert_ptr_nonnull(r);
    memset(&m, 0xa5, sizeof m);
}

static void teardown(void)
{
    fcr_router_free(r);
    r = NULL;
}

static void add(fcr_router *rt, unsigned methods, const char *pattern, void *target)
{
    fcr_router_error err;
    int rc = fcr_router_add(rt, methods, pattern, target, &err);
    ck_assert_msg(rc == 0, "add %s: %d %s at %zu", pattern, rc, err.message, err.offset);
}

/* Looks up a raw path (as in REQUEST_URI): params are percent-decoded. */
static fcr_match_status look(unsigned method, const char *path)
{
    int rc = fcr_router_match(r, method, path, strlen(path), FCR_MATCH_DECODE, &m, scratch,
                              sizeof scratch);
    ck_assert_int_eq(rc, 0);
    return m.status;
}

/* Looks up a path the web server has decoded already (SCRIPT_NAME + PATH_INFO): params are
 * taken verbatim. */
static fcr_match_status look_decoded(unsigned method, const char *path, size_t len)
{
    int rc = fcr_router_match(r, method, path, len, 0, &m, scratch, sizeof scratch);
    ck_assert_int_eq(rc, 0);
    return m.status;
}

static const char *allowed(void)
{
    static char buf[128];
    ck_assert_int_ge(fcr_methods_format(m.allowed, buf, sizeof buf), 0);
    return buf;
}

/* ---- precedence ---- */

START_TEST(first_registered_wins)
{
    add(r, FCR_GET, "/notes/(?<id>[0-9]+)", &t1);
    add(r, FCR_GET, "/notes/(?<any>[^/]+)", &t2);
    ck_assert_int_eq(look(FCR_GET, "/notes/42"), FCR_MATCH_FOUND);
    ck_assert_ptr_eq(m.target, &t1);
    ck_assert_str_eq(fcr_match_param(&m, "id"), "42");
    ck_assert_ptr_null(fcr_match_param(&m, "any"));
    ck_assert_int_eq(look(FCR_GET, "/notes/abc"), FCR_MATCH_FOUND);
    ck_assert_ptr_eq(m.target, &t2);
}
END_TEST

START_TEST(first_registered_wins_reversed)
{
    add(r, FCR_GET, "/notes/(?<any>[^/]+)", &t2);
    add(r, FCR_GET, "/notes/(?<id>[0-9]+)", &t1);
    ck_assert_int_eq(look(FCR_GET, "/notes/42"), FCR_MATCH_FOUND);
    ck_assert_ptr_eq(m.target, &t2);
}
END_TEST

/* Indexed routes (literal first segment) and generic ones keep one registration order. */
START_TEST(indexed_and_generic_keep_order)
{
    add(r, FCR_GET, "/(?<kind>[a-z]+)/(?<id>[0-9]+)", &t1);
    add(r, FCR_GET, "/notes/(?<id>[0-9]+)", &t2);
    add(r, FCR_GET, "/(?<kind>[a-z]+)/x", &t3);
    ck_assert_int_eq(look(FCR_GET, "/notes/7"), FCR_MATCH_FOUND);
    ck_assert_ptr_eq(m.target, &t1);
    ck_assert_str_eq(fcr_match_param(&m, "kind"), "notes");

    fcr_router_free(r);
    r = fcr_router_new();
    add(r, FCR_GET, "/notes/(?<id>[0-9]+)", &t2);
    add(r, FCR_GET, "/(?<kind>[a-z]+)/(?<id>[0-9]+)", &t1);
    ck_assert_int_eq(look(FCR_GET, "/notes/7"), FCR_MATCH_FOUND);
    ck_assert_ptr_eq(m.target, &t2);
    ck_assert_int_eq(look(FCR_GET, "/other/7"), FCR_MATCH_FOUND);
    ck_assert_ptr_eq(m.target, &t1);
}
END_TEST

START_TEST(mount_before_route_wins)
{
    fcr_router *api = fcr_router_new();
    add(api, FCR_GET, "/users", &t1);
    ck_assert_int_eq(fcr_router_mount(r, "/api", api), 0);
    add(r, FCR_GET, "/api/users", &t2);
    ck_assert_int_eq(look(FCR_GET, "/api/users"), FCR_MATCH_FOUND);
    ck_assert_ptr_eq(m.target, &t1);
}
END_TEST

START_TEST(route_before_mount_wins)
{
    add(r, FCR_GET, "/api/users", &t2);
    fcr_router *api = fcr_router_new();
    add(api, FCR_GET, "/users", &t1);
    add(api, FCR_GET, "/items", &t3);
    ck_assert_int_eq(fcr_router_mount(r, "/api", api), 0);
    ck_assert_int_eq(look(FCR_GET, "/api/users"), FCR_MATCH_FOUND);
    ck_assert_ptr_eq(m.target, &t2);
    ck_assert_int_eq(look(FCR_GET, "/api/items"), FCR_MATCH_FOUND);
    ck_assert_ptr_eq(m.target, &t3);
}
END_TEST

/* A pattern with a top-level '|' must not be filed under its first branch's segment. */
START_TEST(top_level_alternation)
{
    add(r, FCR_GET, "/a/x|/b/(?<y>y)", &t1);
    add(r, FCR_GET, "/c/(?:d|e)", &t2);
    ck_assert_int_eq(look(FCR_GET, "/a/x"), FCR_MATCH_FOUND);
    ck_assert_int_eq(look(FCR_GET, "/b/y"), FCR_MATCH_FOUND);
    ck_assert_ptr_eq(m.target, &t1);
    ck_assert_str_eq(fcr_match_param(&m, "y"), "y");
    ck_assert_int_eq(look(FCR_GET, "/c/e"), FCR_MATCH_FOUND);
    ck_assert_ptr_eq(m.target, &t2);
    ck_assert_int_eq(look(FCR_GET, "/a/xb/y"), FCR_MATCH_NOT_FOUND);
}
END_TEST

/* Literal prefixes that are not what they seem: quantifiers, escapes, classes, comments. */
START_TEST(literal_prefix_edge_cases)
{
    add(r, FCR_GET, "/ab?/x", &t1);          /* "b" optional: "/a/x" must match */
    add(r, FCR_GET, "/q\\.z/(?<n>.+)", &t2); /* escaped dot is a literal */
    add(r, FCR_GET, "/k[|]/(?#a|b)z", &t3);  /* '|' in a class and in a comment */
    add(r, FCR_GET, "/s/x(?x) | /t", &t4);   /* extended mode: not indexed, still correct */
    add(r, FCR_GET, "/\\Q(a|b)\\E|/w", &t5); /* quoted text, then a top-level '|' */
    ck_assert_int_eq(look(FCR_GET, "/a/x"), FCR_MATCH_FOUND);
    ck_assert_ptr_eq(m.target, &t1);
    ck_assert_int_eq(look(FCR_GET, "/ab/x"), FCR_MATCH_FOUND);
    ck_assert_ptr_eq(m.target, &t1);
    ck_assert_int_eq(look(FCR_GET, "/q.z/1"), FCR_MATCH_FOUND);
    ck_assert_ptr_eq(m.target, &t2);
    ck_assert_int_eq(look(FCR_GET, "/qxz/1"), FCR_MATCH_NOT_FOUND);
    ck_assert_int_eq(look(FCR_GET, "/k|/z"), FCR_MATCH_FOUND);
    ck_assert_ptr_eq(m.target, &t3);
    ck_assert_int_eq(look(FCR_GET, "/t"), FCR_MATCH_FOUND);
    ck_assert_ptr_eq(m.target, &t4);
    ck_assert_int_eq(look(FCR_GET, "/(a|b)"), FCR_MATCH_FOUND);
    ck_assert_ptr_eq(m.target, &t5);
    ck_assert_int_eq(look(FCR_GET, "/w"), FCR_MATCH_FOUND);
    ck_assert_ptr_eq(m.target, &t5);
}
END_TEST

/* A quantifier may follow items that match nothing: it still applies to the character
 * before them, so that character is not part of the literal prefix. */
START_TEST(quantifier_after_empty_items)
{
    add(r, FCR_GET, "/c/(?#note)?x", &t1); /* "/c" then an optional '/' */
    add(r, FCR_GET, "/d/\\E*y", &t2);      /* \E alone is ignored */
    ck_assert_int_eq(look(FCR_GET, "/cx"), FCR_MATCH_FOUND);
    ck_assert_ptr_eq(m.target, &t1);
    ck_assert_int_eq(look(FCR_GET, "/c/x"), FCR_MATCH_FOUND);
    ck_assert_int_eq(look(FCR_GET, "/dy"), FCR_MATCH_FOUND);
    ck_assert_ptr_eq(m.target, &t2);
    ck_assert_int_eq(look(FCR_GET, "/d///y"), FCR_MATCH_FOUND);
}
END_TEST

/* Backtracking verbs can make PCRE2's JIT report a match that does not cover the path; such
 * a match does not count. */
START_TEST(match_covers_whole_path)
{
    add(r, FCR_GET, "/(*ACCEPT)x", &t1);
    add(r, FCR_GET, "/a(*ACCEPT)b", &t2);
    ck_assert_int_eq(look(FCR_GET, "//"), FCR_MATCH_NOT_FOUND);
    ck_assert_int_eq(look(FCR_GET, "/"), FCR_MATCH_FOUND);
    ck_assert_ptr_eq(m.target, &t1);
    ck_assert_int_eq(look(FCR_GET, "/a"), FCR_MATCH_FOUND);
    ck_assert_ptr_eq(m.target, &t2);
    ck_assert_int_eq(look(FCR_GET, "/ab"), FCR_MATCH_NOT_FOUND);
    /* \K moves the reported start, not the start of the match. */
    add(r, FCR_GET, "/k/\\K(?<id>[0-9]+)", &t3);
    ck_assert_int_eq(look(FCR_GET, "/k/12"), FCR_MATCH_FOUND);
    ck_assert_ptr_eq(m.target, &t3);
    ck_assert_str_eq(fcr_match_param(&m, "id"), "12");
}
END_TEST

/* ---- 404 / 405 / HEAD / OPTIONS ---- */

START_TEST(not_found_vs_not_allowed)
{
    add(r, FCR_GET | FCR_POST, "/notes", &t1);
    add(r, FCR_DELETE, "/notes", &t2);
    add(r, FCR_PUT, "/notes/(?<id>[0-9]+)", &t3);
    ck_assert_int_eq(look(FCR_GET, "/nope"), FCR_MATCH_NOT_FOUND);
    ck_assert_uint_eq(m.allowed, 0);
    ck_assert_ptr_null(m.target);
    ck_assert_int_eq(look(FCR_PATCH, "/notes"), FCR_MATCH_NOT_ALLOWED);
    ck_assert_str_eq(allowed(), "GET, HEAD, POST, DELETE, OPTIONS");
    ck_assert_ptr_null(m.target);
    ck_assert_uint_eq(m.nparams, 0);
    ck_assert_int_eq(look(FCR_GET, "/notes/5"), FCR_MATCH_NOT_ALLOWED);
    ck_assert_str_eq(allowed(), "PUT, OPTIONS");
    /* FOUND reports the whole Allow set as well. */
    ck_assert_int_eq(look(FCR_DELETE, "/notes"), FCR_MATCH_FOUND);
    ck_assert_ptr_eq(m.target, &t2);
    ck_assert_str_eq(allowed(), "GET, HEAD, POST, DELETE, OPTIONS");
}
END_TEST

START_TEST(unknown_method)
{
    add(r, FCR_GET, "/x", &t1);
    ck_assert_uint_eq(fcr_method_parse("BREW", 4), 0);
    ck_assert_int_eq(look(0, "/x"), FCR_MATCH_NOT_ALLOWED);
    ck_assert_str_eq(allowed(), "GET, HEAD, OPTIONS");
    ck_assert_int_eq(look(0, "/y"), FCR_MATCH_NOT_FOUND);
    /* Not one method bit. */
    ck_assert_int_eq(
        fcr_router_match(r, FCR_GET | FCR_POST, "/x", 2, FCR_MATCH_DECODE, &m, scratch, 8),
        FCR_EINVAL);
    ck_assert_int_eq(fcr_router_match(r, 1u << 12, "/x", 2, FCR_MATCH_DECODE, &m, scratch, 8),
                     FCR_EINVAL);
}
END_TEST

START_TEST(head_via_get)
{
    add(r, FCR_GET, "/notes/(?<id>[0-9]+)", &t1);
    ck_assert_int_eq(look(FCR_HEAD, "/notes/3"), FCR_MATCH_FOUND);
    ck_assert_ptr_eq(m.target, &t1);
    ck_assert(m.head_as_get);
    ck_assert_str_eq(fcr_match_param(&m, "id"), "3");
    ck_assert_str_eq(allowed(), "GET, HEAD, OPTIONS");
    ck_assert_int_eq(look(FCR_GET, "/notes/3"), FCR_MATCH_FOUND);
    ck_assert(!m.head_as_get);
}
END_TEST

START_TEST(explicit_head_wins)
{
    add(r, FCR_GET, "/f/(?<a>[a-z]+)", &t1);
    add(r, FCR_HEAD, "/f/(?<b>[a-z]+)", &t2);
    ck_assert_int_eq(look(FCR_HEAD, "/f/zz"), FCR_MATCH_FOUND);
    ck_assert_ptr_eq(m.target, &t2);
    ck_assert(!m.head_as_get);
    ck_assert_uint_eq(m.nparams, 1);
    ck_assert_str_eq(fcr_match_param(&m, "b"), "zz");
    ck_assert_ptr_null(fcr_match_param(&m, "a"));
    ck_assert_int_eq(look(FCR_GET, "/f/zz"), FCR_MATCH_FOUND);
    ck_assert_ptr_eq(m.target, &t1);
}
END_TEST

START_TEST(head_without_get)
{
    add(r, FCR_POST, "/p", &t1);
    ck_assert_int_eq(look(FCR_HEAD, "/p"), FCR_MATCH_NOT_ALLOWED);
    ck_assert_str_eq(allowed(), "POST, OPTIONS");
}
END_TEST

START_TEST(options_auto_and_explicit)
{
    add(r, FCR_GET, "/a", &t1);
    add(r, FCR_PUT, "/a", &t2);
    ck_assert_int_eq(look(FCR_OPTIONS, "/a"), FCR_MATCH_OPTIONS);
    ck_assert_ptr_null(m.target);
    ck_assert_str_eq(allowed(), "GET, HEAD, PUT, OPTIONS");
    ck_assert_int_eq(look(FCR_OPTIONS, "/b"), FCR_MATCH_NOT_FOUND);
    add(r, FCR_OPTIONS, "/a", &t3);
    ck_assert_int_eq(look(FCR_OPTIONS, "/a"), FCR_MATCH_FOUND);
    ck_assert_ptr_eq(m.target, &t3);
    ck_assert_str_eq(allowed(), "GET, HEAD, PUT, OPTIONS");
}
END_TEST

/* ---- params and percent-decoding ---- */

START_TEST(encoded_slash_stays_in_param)
{
    add(r, FCR_GET, "/files/(?<name>[^/]+)", &t1);
    add(r, FCR_GET, "/files/(?<dir>[^/]+)/(?<name>[^/]+)", &t2);
    ck_assert_int_eq(look(FCR_GET, "/files/a%2Fb"), FCR_MATCH_FOUND);
    ck_assert_ptr_eq(m.target, &t1);
    ck_assert_str_eq(fcr_match_param(&m, "name"), "a/b");
    ck_assert_uint_eq(m.params[0].len, 3);
    ck_assert_int_eq(look(FCR_GET, "/files/a/b"), FCR_MATCH_FOUND);
    ck_assert_ptr_eq(m.target, &t2);
}
END_TEST

START_TEST(utf8_and_nul_bytes)
{
    add(r, FCR_GET, "/w/(?<word>[^/]+)", &t1);
    ck_assert_int_eq(look(FCR_GET, "/w/caf%C3%A9+x"), FCR_MATCH_FOUND);
    ck_assert_str_eq(fcr_match_param(&m, "word"), "caf\xc3\xa9+x");
    ck_assert_int_eq(look(FCR_GET, "/w/a%01b"), FCR_MATCH_FOUND);
    ck_assert_uint_eq(m.params[0].len, 3);
    ck_assert_int_eq(memcmp(m.params[0].value, "a\1b", 4), 0);
    /* A value that would decode to a NUL byte would end early as a C string (fcr_match_param,
     * fcr_req_path_param) and hide its rest: such a path does not match the route. */
    ck_assert_int_eq(look(FCR_GET, "/w/a%00b"), FCR_MATCH_NOT_FOUND);
    ck_assert_int_eq(look(FCR_GET, "/w/%00"), FCR_MATCH_NOT_FOUND);
    ck_assert_int_eq(
        fcr_router_match(r, FCR_GET, "/w/a\0b", 6, FCR_MATCH_DECODE, &m, scratch, sizeof scratch),
        0);
    ck_assert_int_eq(m.status, FCR_MATCH_NOT_FOUND);
    /* Raw UTF-8 in the path matches; invalid UTF-8 does not, and does no harm. */
    ck_assert_int_eq(look(FCR_GET, "/w/\xc3\xa9"), FCR_MATCH_FOUND);
    ck_assert_int_eq(look(FCR_GET, "/w/\xff\xfe"), FCR_MATCH_NOT_FOUND);
    ck_assert_int_eq(look(FCR_GET, "/w/\xc3"), FCR_MATCH_NOT_FOUND);
}
END_TEST

START_TEST(bad_escape_is_not_found)
{
    add(r, FCR_GET, "/w/(?<word>[^/]+)", &t1);
    ck_assert_int_eq(look(FCR_GET, "/w/%zz"), FCR_MATCH_NOT_FOUND);
    ck_assert_int_eq(look(FCR_GET, "/w/abc%2"), FCR_MATCH_NOT_FOUND);
    ck_assert_int_eq(look(FCR_GET, "/w/abc%"), FCR_MATCH_NOT_FOUND);
    ck_assert_int_eq(look(FCR_POST, "/w/%zz"), FCR_MATCH_NOT_FOUND);
    /* A later route without a param there still serves the path. */
    add(r, FCR_GET, "/w/.*", &t2);
    ck_assert_int_eq(look(FCR_GET, "/w/%zz"), FCR_MATCH_FOUND);
    ck_assert_ptr_eq(m.target, &t2);
    ck_assert_uint_eq(m.nparams, 0);
}
END_TEST

/* Decode once: a path the web server decoded is not decoded again. These are the params that
 * reach a handler of "/p/(?<v>[^/]+)" behind Apache, nginx or lighttpd when the client sends
 * "/p/%252e%252e", "/p/100%25", "/p/%2541", "/p/%2500" and "/p/caf%C3%A9". */
START_TEST(decoded_path_params_verbatim)
{
    add(r, FCR_GET, "/p/(?<v>[^/]+)", &t1);
    const struct {
        const char *path, *value;
    } cases[] = {
        {"/p/%2e%2e", "%2e%2e"}, {"/p/100%", "100%"},
        {"/p/%41", "%41"},       {"/p/%00", "%00"},
        {"/p/%", "%"},           {"/p/%zz%2", "%zz%2"},
        {"/p/a+b", "a+b"},       {"/p/caf\xc3\xa9", "caf\xc3\xa9"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ck_assert_int_eq(look_decoded(FCR_GET, cases[i].path, strlen(cases[i].path)),
                         FCR_MATCH_FOUND);
        ck_assert_ptr_eq(m.target, &t1);
        ck_assert_uint_eq(m.nparams, 1);
        ck_assert_str_eq(fcr_match_param(&m, "v"), cases[i].value);
        ck_assert_uint_eq(m.params[0].len, strlen(cases[i].value));
    }
    /* A NUL byte still makes the value no C string: the route does not match, and adds
     * nothing to the Allow set. */
    ck_assert_int_eq(look_decoded(FCR_GET, "/p/a\0b", 6), FCR_MATCH_NOT_FOUND);
    ck_assert_int_eq(look_decoded(FCR_POST, "/p/a\0b", 6), FCR_MATCH_NOT_FOUND);
    ck_assert_int_eq(look_decoded(FCR_GET, "/p/\0", 4), FCR_MATCH_NOT_FOUND);
    add(r, FCR_GET, "/p/.*", &t2);
    ck_assert_int_eq(look_decoded(FCR_GET, "/p/a\0b", 6), FCR_MATCH_FOUND);
    ck_assert_ptr_eq(m.target, &t2);
    /* Patterns see the same bytes: '%' needs no escape of its own. */
    add(r, FCR_GET, "/pct/(?<n>[0-9]+)%", &t3);
    ck_assert_int_eq(look_decoded(FCR_GET, "/pct/100%", 9), FCR_MATCH_FOUND);
    ck_assert_ptr_eq(m.target, &t3);
    ck_assert_str_eq(fcr_match_param(&m, "n"), "100");
}
END_TEST

START_TEST(raw_path_params_decoded_once)
{
    add(r, FCR_GET, "/p/(?<v>[^/]+)", &t1);
    const struct {
        const char *path, *value;
    } cases[] = {
        {"/p/%252e%252e", "%2e%2e"}, {"/p/100%25", "100%"},           {"/p/%2541", "%41"},
        {"/p/%2500", "%00"},         {"/p/caf%C3%A9", "caf\xc3\xa9"}, {"/p/a%2Fb", "a/b"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ck_assert_int_eq(look(FCR_GET, cases[i].path), FCR_MATCH_FOUND);
        ck_assert_str_eq(fcr_match_param(&m, "v"), cases[i].value);
    }
    /* Invalid escapes and %00 are no value there. */
    ck_assert_int_eq(look(FCR_GET, "/p/100%"), FCR_MATCH_NOT_FOUND);
    ck_assert_int_eq(look(FCR_GET, "/p/%00"), FCR_MATCH_NOT_FOUND);
}
END_TEST

START_TEST(match_flags)
{
    add(r, FCR_GET, "/p/(?<v>[^/]+)", &t1);
    ck_assert_int_eq(fcr_router_match(r, FCR_GET, "/p/x", 4, 2, &m, scratch, sizeof scratch),
                     FCR_EINVAL);
    ck_assert_int_eq(m.status, FCR_MATCH_NOT_FOUND);
    ck_assert_int_eq(fcr_router_match(r, FCR_GET, "/p/x", 4, FCR_MATCH_DECODE | 0x100u, &m, scratch,
                                      sizeof scratch),
                     FCR_EINVAL);
    /* A mounted router gets the same flags. */
    fcr_router *child = fcr_router_new();
    add(child, FCR_GET, "/q/(?<v>.+)", &t2);
    ck_assert_int_eq(fcr_router_mount(r, "/api", child), 0);
    ck_assert_int_eq(look_decoded(FCR_GET, "/api/q/%2F%25", 13), FCR_MATCH_FOUND);
    ck_assert_ptr_eq(m.target, &t2);
    ck_assert_str_eq(fcr_match_param(&m, "v"), "%2F%25");
    ck_assert_int_eq(look(FCR_GET, "/api/q/%2F%25"), FCR_MATCH_FOUND);
    ck_assert_str_eq(fcr_match_param(&m, "v"), "/%");
}
END_TEST

START_TEST(multiple_params)
{
    add(r, FCR_GET, "/u/(?<user>[^/]+)/notes/(?<note>[0-9]+)(?:/(?<part>[a-z]+))?", &t1);
    ck_assert_int_eq(look(FCR_GET, "/u/ann%20lee/notes/17/body"), FCR_MATCH_FOUND);
    ck_assert_uint_eq(m.nparams, 3);
    ck_assert_str_eq(fcr_match_param(&m, "user"), "ann lee");
    ck_assert_str_eq(fcr_match_param(&m, "note"), "17");
    ck_assert_str_eq(fcr_match_param(&m, "part"), "body");
    ck_assert_ptr_null(fcr_match_param(&m, "nope"));
    /* An optional group that did not take part gives no param. */
    ck_assert_int_eq(look(FCR_GET, "/u/bo/notes/1"), FCR_MATCH_FOUND);
    ck_assert_uint_eq(m.nparams, 2);
    ck_assert_ptr_null(fcr_match_param(&m, "part"));
}
END_TEST

START_TEST(duplicate_names)
{
    add(r, FCR_GET, "(?J)/(?:a/(?<id>[0-9]+)|b/(?<id>[a-z]+))", &t1);
    ck_assert_int_eq(look(FCR_GET, "/a/12"), FCR_MATCH_FOUND);
    ck_assert_uint_eq(m.nparams, 1);
    ck_assert_str_eq(fcr_match_param(&m, "id"), "12");
    ck_assert_int_eq(look(FCR_GET, "/b/xy"), FCR_MATCH_FOUND);
    ck_assert_str_eq(fcr_match_param(&m, "id"), "xy");
}
END_TEST

START_TEST(scratch_too_small)
{
    add(r, FCR_GET, "/n/(?<a>[a-z]+)/(?<b>[a-z]+)", &t1);
    const char *p = "/n/abcd/efgh";
    /* Needs "abcd\0efgh\0": 10 bytes. */
    ck_assert_int_eq(fcr_router_match(r, FCR_GET, p, strlen(p), FCR_MATCH_DECODE, &m, scratch, 9),
                     FCR_ETOOBIG);
    ck_assert_int_eq(m.status, FCR_MATCH_NOT_FOUND);
    ck_assert_ptr_null(m.target);
    ck_assert_uint_eq(m.nparams, 0);
    ck_assert_int_eq(fcr_router_match(r, FCR_GET, p, strlen(p), FCR_MATCH_DECODE, &m, scratch, 10),
                     0);
    ck_assert_str_eq(fcr_match_param(&m, "b"), "efgh");
    ck_assert_int_eq(fcr_router_match(r, FCR_GET, p, strlen(p), FCR_MATCH_DECODE, &m, NULL, 0),
                     FCR_ETOOBIG);
    /* No params: no scratch needed. */
    add(r, FCR_GET, "/plain", &t2);
    ck_assert_int_eq(fcr_router_match(r, FCR_GET, "/plain", 6, FCR_MATCH_DECODE, &m, NULL, 0), 0);
    ck_assert_int_eq(m.status, FCR_MATCH_FOUND);
    /* The documented bound: len + FCR_MAX_PATH_PARAMS. */
    char small[sizeof "/n/abcd/efgh" - 1 + FCR_MAX_PATH_PARAMS];
    ck_assert_int_eq(
        fcr_router_match(r, FCR_GET, p, strlen(p), FCR_MATCH_DECODE, &m, small, sizeof small), 0);
    ck_assert_int_eq(fcr_router_match(r, FCR_GET, p, strlen(p), 0, &m, small, sizeof small), 0);
    ck_assert_int_eq(fcr_router_match(r, FCR_GET, p, strlen(p), 0, &m, scratch, 9), FCR_ETOOBIG);
}
END_TEST

START_TEST(too_many_names)
{
    char pat[512] = "/x";
    for (int i = 0; i < FCR_MAX_PATH_PARAMS; i++)
        snprintf(pat + strlen(pat), sizeof pat - strlen(pat), "/(?<p%d>[a-z])", i);
    add(r, FCR_GET, pat, &t1);
    snprintf(pat + strlen(pat), sizeof pat - strlen(pat), "/(?<extra>[a-z])");
    fcr_router_error err;
    ck_assert_int_eq(fcr_router_add(r, FCR_GET, pat, &t1, &err), FCR_EPARSE);
    ck_assert_ptr_nonnull(strstr(err.message, "named captures"));
}
END_TEST

/* ---- mounts ---- */

START_TEST(mount_basic_and_boundary)
{
    fcr_router *api = fcr_router_new();
    add(api, FCR_GET, "", &t1);
    add(api, FCR_GET, "/", &t2);
    add(api, FCR_GET, "/notes/(?<id>[0-9]+)", &t3);
    ck_assert_int_eq(fcr_router_mount(r, "/api", api), 0);
    add(r, FCR_GET, "/apix", &t4);
    ck_assert_int_eq(look(FCR_GET, "/api"), FCR_MATCH_FOUND);
    ck_assert_ptr_eq(m.target, &t1);
    ck_assert_int_eq(look(FCR_GET, "/api/"), FCR_MATCH_FOUND);
    ck_assert_ptr_eq(m.target, &t2);
    ck_assert_int_eq(look(FCR_GET, "/api/notes/9"), FCR_MATCH_FOUND);
    ck_assert_ptr_eq(m.target, &t3);
    ck_assert_str_eq(fcr_match_param(&m, "id"), "9");
    ck_assert_int_eq(look(FCR_GET, "/apix"), FCR_MATCH_FOUND);
    ck_assert_ptr_eq(m.target, &t4);
    ck_assert_int_eq(look(FCR_GET, "/apix/notes/9"), FCR_MATCH_NOT_FOUND);
    ck_assert_int_eq(look(FCR_GET, "/notes/9"), FCR_MATCH_NOT_FOUND);
    ck_assert_int_eq(look(FCR_POST, "/api/notes/9"), FCR_MATCH_NOT_ALLOWED);
    ck_assert_str_eq(allowed(), "GET, HEAD, OPTIONS");
    /* Routes added to the child after mounting count. */
    add(api, FCR_POST, "/notes/(?<id>[0-9]+)", &t5);
    ck_assert_int_eq(look(FCR_POST, "/api/notes/9"), FCR_MATCH_FOUND);
    ck_assert_ptr_eq(m.target, &t5);
}
END_TEST

START_TEST(mount_nested)
{
    fcr_router *api = fcr_router_new();
    fcr_router *v1 = fcr_router_new();
    add(v1, FCR_GET, "/items/(?<id>[0-9]+)", &t1);
    ck_assert_int_eq(fcr_router_mount(api, "/v1", v1), 0);
    ck_assert_int_eq(fcr_router_mount(r, "/api/x", api), 0);
    ck_assert_int_eq(look(FCR_GET, "/api/x/v1/items/4"), FCR_MATCH_FOUND);
    ck_assert_ptr_eq(m.target, &t1);
    ck_assert_str_eq(fcr_match_param(&m, "id"), "4");
    ck_assert_int_eq(look(FCR_GET, "/api/xv1/items/4"), FCR_MATCH_NOT_FOUND);
    ck_assert_int_eq(look(FCR_GET, "/api/x/v1x/items/4"), FCR_MATCH_NOT_FOUND);
    ck_assert_int_eq(look(FCR_HEAD, "/api/x/v1/items/4"), FCR_MATCH_FOUND);
    ck_assert(m.head_as_get);
    /* HEAD served by a route in the parent beats GET in the mount. */
    add(r, FCR_HEAD, "/api/x/v1/items/[0-9]+", &t2);
    ck_assert_int_eq(look(FCR_HEAD, "/api/x/v1/items/4"), FCR_MATCH_FOUND);
    ck_assert_ptr_eq(m.target, &t2);
    ck_assert(!m.head_as_get);
    ck_assert_uint_eq(m.nparams, 0);
}
END_TEST

START_TEST(mount_root_and_errors)
{
    fcr_router *all = fcr_router_new();
    add(all, FCR_GET, "/z", &t1);
    ck_assert_int_eq(fcr_router_mount(r, "/", all), 0);
    ck_assert_int_eq(look(FCR_GET, "/z"), FCR_MATCH_FOUND);
    ck_assert_ptr_eq(m.target, &t1);

    /* Bad prefixes: the child is freed (ASan would report a leak otherwise). */
    ck_assert_int_eq(fcr_router_mount(r, "", fcr_router_new()), FCR_EINVAL);
    ck_assert_int_eq(fcr_router_mount(r, "api", fcr_router_new()), FCR_EINVAL);
    ck_assert_int_eq(fcr_router_mount(r, "/api/", fcr_router_new()), FCR_EINVAL);
    ck_assert_int_eq(fcr_router_mount(r, NULL, fcr_router_new()), FCR_EINVAL);
    ck_assert_int_eq(fcr_router_mount(NULL, "/a", fcr_router_new()), FCR_EINVAL);
    ck_assert_int_eq(fcr_router_mount(r, "/a", NULL), FCR_EINVAL);
    /* Cycles and double mounts are refused without freeing anything. */
    ck_assert_int_eq(fcr_router_mount(r, "/a", r), FCR_EEXIST);
    ck_assert_int_eq(fcr_router_mount(all, "/a", r), FCR_EEXIST);
    ck_assert_int_eq(fcr_router_mount(r, "/b", all), FCR_EEXIST);
    ck_assert_int_eq(look(FCR_GET, "/z"), FCR_MATCH_FOUND);
}
END_TEST

/* ---- patterns ---- */

START_TEST(bad_pattern_refused)
{
    fcr_router_error err;
    ck_assert_int_eq(fcr_router_add(r, FCR_GET, "/notes/(?<id>[0-9]+", &t1, &err), FCR_EPARSE);
    ck_assert_str_eq(err.message, "missing closing parenthesis");
    ck_assert_uint_eq(err.offset, 19);
    ck_assert_int_eq(fcr_router_add(r, FCR_GET, "/a/[z-a]", &t1, &err), FCR_EPARSE);
    ck_assert_uint_eq(err.offset, 6); /* at the range's end */
    ck_assert_ptr_nonnull(strstr(err.message, "range out of order"));
    ck_assert_int_eq(fcr_router_add(r, FCR_GET, "/a/\\C", &t1, &err), FCR_EPARSE);
    ck_assert_int_eq(fcr_router_add(r, FCR_GET, "/a/\xff", &t1, &err), FCR_EPARSE);
    ck_assert_int_eq(fcr_router_add(r, FCR_GET, "/a(", &t1, NULL), FCR_EPARSE);
    ck_assert_int_eq(fcr_router_add(r, 0, "/a", &t1, &err), FCR_EINVAL);
    ck_assert_int_eq(fcr_router_add(r, 1u << 10, "/a", &t1, &err), FCR_EINVAL);
    ck_assert_int_eq(fcr_router_add(r, FCR_GET, NULL, &t1, &err), FCR_EINVAL);
    ck_assert_int_eq(fcr_router_add(NULL, FCR_GET, "/a", &t1, &err), FCR_EINVAL);
    /* Nothing was added. */
    ck_assert_int_eq(look(FCR_GET, "/a("), FCR_MATCH_NOT_FOUND);
}
END_TEST

START_TEST(anchored_both_ends)
{
    add(r, FCR_GET, "/a", &t1);
    add(r, FCR_GET, "/b|/c", &t2);
    add(r, FCR_GET, "(?<seg>[a-z]+)", &t3);
    ck_assert_int_eq(look(FCR_GET, "/a"), FCR_MATCH_FOUND);
    ck_assert_int_eq(look(FCR_GET, "/ab"), FCR_MATCH_NOT_FOUND);
    ck_assert_int_eq(look(FCR_GET, "/x/a"), FCR_MATCH_NOT_FOUND);
    ck_assert_int_eq(look(FCR_GET, "/a/"), FCR_MATCH_NOT_FOUND);
    ck_assert_int_eq(look(FCR_GET, "/bx"), FCR_MATCH_NOT_FOUND);
    ck_assert_int_eq(look(FCR_GET, "x/c"), FCR_MATCH_NOT_FOUND);
    ck_assert_int_eq(look(FCR_GET, "/c"), FCR_MATCH_FOUND);
    ck_assert_int_eq(look(FCR_GET, "abc"), FCR_MATCH_FOUND);
    ck_assert_ptr_eq(m.target, &t3);
    ck_assert_int_eq(look(FCR_GET, "abc/"), FCR_MATCH_NOT_FOUND);
    ck_assert_int_eq(look(FCR_GET, ""), FCR_MATCH_NOT_FOUND);
    /* The length is what counts, not a NUL. */
    ck_assert_int_eq(
        fcr_router_match(r, FCR_GET, "/a\0b", 4, FCR_MATCH_DECODE, &m, scratch, sizeof scratch), 0);
    ck_assert_int_eq(m.status, FCR_MATCH_NOT_FOUND);
    ck_assert_int_eq(
        fcr_router_match(r, FCR_GET, "/ab", 2, FCR_MATCH_DECODE, &m, scratch, sizeof scratch), 0);
    ck_assert_int_eq(m.status, FCR_MATCH_FOUND);
    ck_assert_ptr_eq(m.target, &t1);
}
END_TEST

START_TEST(many_routes)
{
    /* Many indexed routes plus generic ones, looked up at the start, middle and end. */
    static int targets[1000];
    char pat[64];
    for (int i = 0; i < 1000; i++) {
        snprintf(pat, sizeof pat, "/res%d/(?<id>[0-9]+)", i);
        add(r, FCR_GET | FCR_PUT, pat, &targets[i]);
        if (i % 100 == 0)
            add(r, FCR_DELETE, "/(?<kind>res[0-9]+)/[0-9]+", &t1);
    }
    char path[64];
    for (int i = 0; i < 1000; i += 37) {
        snprintf(path, sizeof path, "/res%d/%d", i, i * 3);
        ck_assert_int_eq(look(FCR_PUT, path), FCR_MATCH_FOUND);
        ck_assert_ptr_eq(m.target, &targets[i]);
        ck_assert_int_eq(atoi(fcr_match_param(&m, "id")), i * 3);
        ck_assert_int_eq(look(FCR_DELETE, path), FCR_MATCH_FOUND);
        ck_assert_ptr_eq(m.target, &t1);
        ck_assert_int_eq(look(FCR_POST, path), FCR_MATCH_NOT_ALLOWED);
        ck_assert_str_eq(allowed(), "GET, HEAD, PUT, DELETE, OPTIONS");
    }
    ck_assert_int_eq(look(FCR_GET, "/res1000/1"), FCR_MATCH_NOT_ALLOWED);
    ck_assert_int_eq(look(FCR_GET, "/res1001x/1"), FCR_MATCH_NOT_FOUND);
}
END_TEST

START_TEST(invalid_arguments)
{
    ck_assert_int_eq(fcr_router_match(r, FCR_GET, NULL, 1, FCR_MATCH_DECODE, &m, scratch, 8),
                     FCR_EINVAL);
    ck_assert_int_eq(fcr_router_match(NULL, FCR_GET, "/", 1, FCR_MATCH_DECODE, &m, scratch, 8),
                     FCR_EINVAL);
    ck_assert_int_eq(fcr_router_match(r, FCR_GET, "/", 1, FCR_MATCH_DECODE, NULL, scratch, 8),
                     FCR_EINVAL);
    ck_assert_int_eq(fcr_router_match(r, FCR_GET, "/", 1, FCR_MATCH_DECODE, &m, NULL, 8),
                     FCR_EINVAL);
    ck_assert_int_eq(fcr_router_match(r, FCR_GET, NULL, 0, FCR_MATCH_DECODE, &m, NULL, 0), 0);
    ck_assert_int_eq(m.status, FCR_MATCH_NOT_FOUND);
    ck_assert_ptr_null(fcr_match_param(NULL, "x"));
    ck_assert_ptr_null(fcr_match_param(&m, NULL));
    fcr_router_free(NULL);
}
END_TEST

/* ---- methods and percent-decoding helpers ---- */

START_TEST(methods)
{
    ck_assert_uint_eq(fcr_method_parse("GET", 3), FCR_GET);
    ck_assert_uint_eq(fcr_method_parse("CONNECT", 7), FCR_CONNECT);
    ck_assert_uint_eq(fcr_method_parse("DELETEX", 6), FCR_DELETE);
    ck_assert_uint_eq(fcr_method_parse("get", 3), 0);
    ck_assert_uint_eq(fcr_method_parse("GE", 2), 0);
    ck_assert_uint_eq(fcr_method_parse("", 0), 0);
    ck_assert_uint_eq(fcr_method_parse(NULL, 3), 0);
    ck_assert_str_eq(fcr_method_name(FCR_PATCH), "PATCH");
    ck_assert_ptr_null(fcr_method_name(FCR_GET | FCR_PUT));
    ck_assert_ptr_null(fcr_method_name(0));
    for (unsigned b = 1; b <= FCR_CONNECT; b <<= 1) {
        const char *n = fcr_method_name(b);
        ck_assert_uint_eq(fcr_method_parse(n, strlen(n)), b);
    }
}
END_TEST

START_TEST(methods_format)
{
    char buf[64];
    ck_assert_int_eq(fcr_methods_format(FCR_PUT | FCR_GET, buf, sizeof buf), 8);
    ck_assert_str_eq(buf, "GET, PUT");
    ck_assert_int_eq(fcr_methods_format(0, buf, sizeof buf), 0);
    ck_assert_str_eq(buf, "");
    int n = fcr_methods_format(FCR_ANY_METHOD, buf, sizeof buf);
    ck_assert_str_eq(buf, "GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, TRACE, CONNECT");
    ck_assert_int_eq(n, (int)strlen(buf));
    ck_assert_int_eq(fcr_methods_format(FCR_ANY_METHOD, buf, (size_t)n), FCR_ETOOBIG);
    ck_assert_str_eq(buf, "");
    ck_assert_int_eq(fcr_methods_format(FCR_ANY_METHOD, buf, (size_t)n + 1), n);
    ck_assert_int_eq(fcr_methods_format(FCR_GET, buf, 3), FCR_ETOOBIG);
    ck_assert_int_eq(fcr_methods_format(FCR_GET, buf, 4), 3);
    ck_assert_int_eq(fcr_methods_format(FCR_GET, buf, 0), FCR_ETOOBIG);
    ck_assert_int_eq(fcr_methods_format(FCR_GET | 0x8000u, buf, sizeof buf), 3);
}
END_TEST

START_TEST(percent_decode)
{
    char out[64];
    size_t n = 99;
    ck_assert_int_eq(fcr_percent_decode("a%20b+c", 7, out, &n, false), 0);
    ck_assert_uint_eq(n, 5);
    ck_assert_str_eq(out, "a b+c");
    ck_assert_int_eq(fcr_percent_decode("a%20b+c", 7, out, &n, true), 0);
    ck_assert_uint_eq(n, 5);
    ck_assert_str_eq(out, "a b c");
    ck_assert_int_eq(fcr_percent_decode("%2f%2F%e2%82%AC", 15, out, &n, false), 0);
    ck_assert_uint_eq(n, 5);
    ck_assert_str_eq(out, "//\xe2\x82\xac");
    ck_assert_int_eq(fcr_percent_decode("", 0, out, &n, false), 0);
    ck_assert_uint_eq(n, 0);
    ck_assert_str_eq(out, "");
    ck_assert_int_eq(fcr_percent_decode("%zz", 3, out, NULL, false), FCR_EPARSE);
    ck_assert_int_eq(fcr_percent_decode("%4", 2, out, NULL, false), FCR_EPARSE);
    ck_assert_int_eq(fcr_percent_decode("ab%", 3, out, &n, false), FCR_EPARSE);
    ck_assert_uint_eq(n, 2);
    ck_assert_str_eq(out, "ab");
    /* Only `len` bytes are read: "%41" cut after "%4" is an error. */
    ck_assert_int_eq(fcr_percent_decode("%41", 2, out, NULL, false), FCR_EPARSE);
    ck_assert_int_eq(fcr_percent_decode(NULL, 1, out, NULL, false), FCR_EINVAL);
    ck_assert_int_eq(fcr_percent_decode("a", 1, NULL, NULL, false), FCR_EINVAL);
    char inplace[] = "x%41y%00z";
    ck_assert_int_eq(fcr_percent_decode(inplace, strlen(inplace), inplace, &n, false), 0);
    ck_assert_uint_eq(n, 5);
    ck_assert_int_eq(memcmp(inplace, "xAy\0z", 6), 0);
}
END_TEST

static Suite *router_suite(void)
{
    Suite *s = suite_create("router");
    TCase *tc = tcase_create("precedence");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, first_registered_wins);
    tcase_add_test(tc, first_registered_wins_reversed);
    tcase_add_test(tc, indexed_and_generic_keep_order);
    tcase_add_test(tc, mount_before_route_wins);
    tcase_add_test(tc, route_before_mount_wins);
    tcase_add_test(tc, top_level_alternation);
    tcase_add_test(tc, literal_prefix_edge_cases);
    tcase_add_test(tc, quantifier_after_empty_items);
    tcase_add_test(tc, match_covers_whole_path);
    suite_add_tcase(s, tc);

    tc = tcase_create("status");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, not_found_vs_not_allowed);
    tcase_add_test(tc, unknown_method);
    tcase_add_test(tc, head_via_get);
    tcase_add_test(tc, explicit_head_wins);
    tcase_add_test(tc, head_without_get);
    tcase_add_test(tc, options_auto_and_explicit);
    suite_add_tcase(s, tc);

    tc = tcase_create("params");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, encoded_slash_stays_in_param);
    tcase_add_test(tc, utf8_and_nul_bytes);
    tcase_add_test(tc, bad_escape_is_not_found);
    tcase_add_test(tc, decoded_path_params_verbatim);
    tcase_add_test(tc, raw_path_params_decoded_once);
    tcase_add_test(tc, match_flags);
    tcase_add_test(tc, multiple_params);
    tcase_add_test(tc, duplicate_names);
    tcase_add_test(tc, scratch_too_small);
    tcase_add_test(tc, too_many_names);
    suite_add_tcase(s, tc);

    tc = tcase_create("mounts");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, mount_basic_and_boundary);
    tcase_add_test(tc, mount_nested);
    tcase_add_test(tc, mount_root_and_errors);
    suite_add_tcase(s, tc);

    tc = tcase_create("patterns");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, bad_pattern_refused);
    tcase_add_test(tc, anchored_both_ends);
    tcase_add_test(tc, many_routes);
    tcase_add_test(tc, invalid_arguments);
    suite_add_tcase(s, tc);

    tc = tcase_create("helpers");
    tcase_add_test(tc, methods);
    tcase_add_test(tc, methods_format);
    tcase_add_test(tc, percent_decode);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(router_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
