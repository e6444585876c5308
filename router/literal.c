/* Literal prefix of a route pattern, for the router's index.
 *
 * Written by hand because PCRE2 reports only the first code unit a match must start with
 * (PCRE2_INFO_FIRSTCODEUNIT), which is '/' for nearly every route, and no longer prefix. The
 * scan is conservative: a pattern with a top-level alternative, or with syntax whose extent it
 * cannot follow (extended mode, callouts, verbs), yields no prefix and is tried on every
 * lookup; that costs speed, never correctness. It runs only on patterns PCRE2 has already
 * compiled, so the syntax is known to be valid. */
#include <string.h>

#include "router/router_int.h"

static bool is_alnum(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_alpha(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_meta(unsigned char c)
{
    return c != '\0' && strchr("\\^$.[]|(){}?*+", c) != NULL;
}

/* True when the item at `p`, which ends the literal prefix, is certainly not a quantifier of
 * the character before it. A quantifier may also hide behind items that match nothing: in
 * "/a(?#note)?" or "/a\E?" the '?' applies to the 'a'. Anything not known to be an atom or the
 * end of the pattern counts as a possible quantifier. */
static bool ends_cleanly(const char *p)
{
    switch (*p) {
    case '\0':
    case '[':
    case '.':
    case '^':
    case '$':
        return true;
    case '\\':
        return p[1] != '\0' && strchr("dDwWsShHvVpPxX", p[1]) != NULL;
    case '(':
        if (p[1] == '*')
            return false; /* a verb matches nothing */
        if (p[1] != '?')
            return true; /* a capturing group */
        /* Groups: (?: (?| (?> (?= (?! (?<= (?<! (?<name> (?'name' (?P<name>. Not (?# or an
         * option setting such as (?i). */
        return p[2] != '\0' && (strchr(":|>=!<'", p[2]) != NULL || (p[2] == 'P' && p[3] == '<'));
    default:
        return false;
    }
}

/* `p` points just after a backslash. Returns the end of the escape, or NULL when the scan
 * cannot follow it. \Q...\E quotes everything up to \E (or the end of the pattern); \cX takes
 * the next character, whatever it is. Longer escapes (\x{..}, \p{..}, \g{..}) hold no
 * parentheses, brackets or bars, so skipping their first character is enough. */
static const char *skip_escape(const char *p)
{
    if (*p == '\0')
        return NULL;
    if (*p == 'Q') {
        const char *e = strstr(p + 1, "\\E");
        return e != NULL ? e + 2 : p + strlen(p);
    }
    if (*p == 'c')
        return p[1] != '\0' ? p + 2 : NULL;
    return p + 1;
}

/* `p` points just after the '[' opening a character class. Returns the end of the class, or
 * NULL when the scan cannot follow it. */
static const char *skip_class(const char *p)
{
    if (*p == '^')
        p++;
    if (*p == ']') /* a ']' first in the class is a literal */
        p++;
    while (*p != ']') {
        if (*p == '\0')
            return NULL;
        if (*p == '\\') {
            p = skip_escape(p + 1);
            if (p == NULL)
                return NULL;
            continue;
        }
        if (*p == '[' && (p[1] == ':' || p[1] == '.' || p[1] == '=')) {
            /* A POSIX class such as [:alpha:] ends at the first ']', preceded by its
             * opening punctuation; anything else means the '[' was a literal. */
            const char *close = strchr(p + 2, ']');
            if (close == NULL)
                return NULL;
            if (memchr(p + 2, '\\', (size_t)(close - (p + 2))) != NULL)
                return NULL;
            if (close > p + 2 && close[-1] == p[1]) {
                p = close + 1;
                continue;
            }
        }
        p++;
    }
    return p + 1;
}

/* True when the pattern is one sequence (no '|' outside every group) made only of syntax
 * this scan can follow. */
bool fcr__pattern_one_sequence(const char *p)
{
    int depth = 0;
    while (*p != '\0') {
        switch (*p) {
        case '\\':
            p = skip_escape(p + 1);
            if (p == NULL)
                return false;
            break;
        case '[':
            p = skip_class(p + 1);
            if (p == NULL)
                return false;
            break;
        case '(':
            if (p[1] == '*') /* verbs carry names that may hold any byte */
                return false;
            if (p[1] == '?') {
                if (p[2] == '#') { /* a comment runs to the first ')' */
                    p = strchr(p + 3, ')');
                    if (p == NULL)
                        return false;
                    p++;
                    break;
                }
                if (p[2] == 'C' || p[2] == '[') /* callout strings, extended classes */
                    return false;
                /* Option settings such as (?i) or (?x:...): extended mode makes '#' start
                 * a comment and whitespace vanish, which this scan does not follow. */
                const char *q = p + 2;
                while (is_alpha((unsigned char)*q) || *q == '^' || *q == '-')
                    q++;
                if ((*q == ')' || *q == ':') && memchr(p + 2, 'x', (size_t)(q - (p + 2))) != NULL)
                    return false;
            }
            depth++;
            p++;
            break;
        case ')':
            if (--depth < 0)
                return false;
            p++;
            break;
        case '|':
            if (depth == 0)
                return false;
            p++;
            break;
        default:
            p++;
            break;
        }
    }
    return depth == 0;
}

void fcr__pattern_prefix_scan(const char *pattern, char *lit, fcr__pattern_prefix *out)
{
    memset(out, 0, sizeof *out);
    if (!fcr__pattern_one_sequence(pattern))
        return;

    /* Collect the leading literal characters. A quantifier after the last one makes that
     * character optional or repeated, so unless what follows is known not to be one, it is
     * dropped (all of it, when it is a multi-byte UTF-8 character). */
    const char *p = pattern;
    size_t n = 0, char_start = 0;
    while (*p != '\0') {
        unsigned char c = (unsigned char)*p;
        if (c == '\\') {
            unsigned char d = (unsigned char)p[1];
            if (d == '\0' || d >= 0x80 || is_alnum(d))
                break; /* \d, \Q, \x.. and the like are not one literal byte */
            char_start = n;
            lit[n++] = (char)d;
            p += 2;
        } else if (is_meta(c)) {
            break;
        } else {
            if ((c & 0xc0) != 0x80)
                char_start = n;
            lit[n++] = (char)c;
            p++;
        }
    }
    bool whole = *p == '\0';
    if (!ends_cleanly(p))
        n = char_start;
    out->lit_len = n;

    if (n == 0 || lit[0] != '/')
        return;
    const char *slash = memchr(lit + 1, '/', n - 1);
    if (slash != NULL) {
        out->has_key = true;
        out->key_len = (size_t)(slash - (lit + 1));
    } else if (whole) {
        out->has_key = true;
        out->key_len = n - 1;
    }
}
