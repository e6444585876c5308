/* Path segments of a route pattern, for the router's segment index.
 *
 * A path splits at each '/' into segments: "/api/v1/x" is "", "api", "v1", "x". This scan
 * reads a pattern from its start and says, for as long as it can prove it, which segment of
 * every path the pattern matches is a given literal and which may be anything. The proof rests
 * on one property: every item of the pattern except its literal '/' characters is known never
 * to match a '/' (a literal other than '/', \d, \w, \s, a character class without '/', a
 * group made of such items, assertions that match nothing). Then every '/' of a matching path
 * is one of the pattern's literal '/' characters, in order, and the text between two of them
 * is one segment of the path; where that text is all literal characters, the segment is
 * exactly those bytes.
 *
 * At the first item it cannot prove (a '.', a class that may hold '/', a quantified '/', a
 * lookaround, an option setting, a verb, ...) it stops: the segments before it, each closed by
 * a literal '/', still hold for every matching path, which has more segments after them. A
 * pattern with a '|' outside every group proves nothing. Like the literal prefix scan, it runs
 * only on patterns PCRE2 compiled (anchored, UTF-8, not extended) and is conservative: what it
 * cannot prove costs speed, never correctness, as every candidate still runs its own
 * pattern. */
#include <string.h>

#include "router/router_int.h"

struct scan {
    const char *p;
    char *buf;        /* the literal bytes of all segments, one after another */
    size_t used;      /* bytes of buf in use */
    size_t seg_start; /* where the current segment's bytes start in buf */
    bool seg_literal; /* the current segment is literal bytes so far */
    fcr__pattern_segs *out;
};

static bool is_alnum(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* A quantifier at `p`: its end (with a lazy '?' or possessive '+'), or `p` when there is
 * none. Braces count as a quantifier when they hold only digits, commas and spaces: whether
 * PCRE2 reads them as one or as literal characters, none of them is a '/'. */
static const char *skip_quantifier(const char *p)
{
    const char *q = p;
    if (*q == '?' || *q == '*' || *q == '+') {
        q++;
    } else if (*q == '{') {
        q++;
        while ((*q >= '0' && *q <= '9') || *q == ',' || *q == ' ')
            q++;
        if (*q != '}')
            return p;
        q++;
    } else {
        return p;
    }
    if (*q == '?' || *q == '+')
        q++;
    return q;
}

/* True when what starts at `p`, just after an item, may be a quantifier of that item: one
 * itself, or one behind items that match nothing ("/(?#note)?" or "/\\E?" make the '/'
 * optional), or syntax this scan does not follow that could hide one. */
static bool may_be_quantified(const char *p)
{
    switch (*p) {
    case '\0':
    case '/':
    case '[':
    case '.':
    case '^':
    case '$':
    case ')':
    case '|':
        return false;
    case '?':
    case '*':
    case '+':
    case '{':
        return true;
    case '\\':
        return p[1] == 'E' || p[1] == 'Q';
    case '(':
        if (p[1] == '*')
            return true;
        if (p[1] != '?')
            return false;
        /* Groups and lookarounds are items; comments, option settings, callouts and the
         * like may not be. */
        return !(p[2] != '\0' && (strchr(":|>=!<'", p[2]) != NULL || (p[2] == 'P' && p[3] == '<')));
    default:
        return false;
    }
}

/* POSIX classes that hold no '/'. */
static bool posix_slash_free(const char *name, size_t len)
{
    static const char *const names[] = {"alpha",  "digit", "alnum", "lower", "upper",
                                        "xdigit", "space", "word",  "blank"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strlen(names[i]) == len && memcmp(names[i], name, len) == 0)
            return true;
    }
    return false;
}

/* `p` points just after a '['. Returns the end of the class when it certainly matches no '/',
 * else NULL. A negated class does so when '/' is one of its members; a positive one when
 * every member is known: characters other than '/' and '\', escaped punctuation other than
 * '/', \d \w \s, POSIX classes without '/', and ranges of plain ASCII characters that do not
 * span '/'. */
static const char *slash_free_class(const char *p)
{
    bool negated = *p == '^';
    bool has_slash = false, unknown = false;
    if (negated)
        p++;
    bool first = true;
    while (*p != ']' || first) {
        unsigned char c = (unsigned char)*p;
        if (c == '\0')
            return NULL;
        first = false;
        if (c == '\\') {
            unsigned char d = (unsigned char)p[1];
            if (d == '/')
                has_slash = true;
            else if (d == '\0' || d >= 0x80 || (is_alnum(d) && strchr("dws", d) == NULL))
                unknown = true; /* \x2f, \D, \Q...: not followed here */
            if (d == '\0' || d == 'Q' || d == 'E' || d == 'x' || d == 'o' || d == 'c' || d == 'p' ||
                d == 'P' || d == 'N')
                return NULL; /* escapes whose extent this scan does not follow */
            if (p[2] == '-' && p[3] != ']')
                unknown = true; /* a range from an escape */
            p += 2;
            continue;
        }
        if (c == '[' && p[1] == ':') {
            /* A POSIX class is "[:" letters ":]" (PCRE2 refuses an unknown name); anything
             * else makes the '[' a member like any other. */
            const char *name = p + 2;
            if (*name == '^')
                name++;
            const char *q = name;
            while ((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z'))
                q++;
            if (q[0] == ':' && q[1] == ']') {
                if (name != p + 2 || !posix_slash_free(name, (size_t)(q - name)))
                    unknown = true;
                p = q + 2;
                continue;
            }
        }
        if (c == '[' && (p[1] == '.' || p[1] == '='))
            return NULL;
        if (p[1] == '-' && p[2] != ']' && p[2] != '\0') {
            unsigned char e = (unsigned char)p[2];
            if (c >= 0x80 || e >= 0x80 || e == '\\' || e == '[')
                unknown = true;
            else if (c <= '/' && e >= '/')
                has_slash = true;
            if (e == '\\' || e == '[')
                p += 2; /* the escape or bracket is read on the next round */
            else
                p += 3;
            continue;
        }
        if (c == '/')
            has_slash = true;
        p++;
    }
    if (negated)
        return has_slash ? p + 1 : NULL;
    return !has_slash && !unknown ? p + 1 : NULL;
}

static const char *slash_free_items(const char *p);

/* `p` points at a '('. Returns the end of the group when it is a plain, capturing, named,
 * atomic or branch-reset group whose items match no '/', else NULL. */
static const char *slash_free_group(const char *p)
{
    p++;
    if (*p == '?') {
        if (p[1] == ':' || p[1] == '|' || p[1] == '>') {
            p += 2;
        } else if ((p[1] == '<' && p[2] != '=' && p[2] != '!') || p[1] == '\'' ||
                   (p[1] == 'P' && p[2] == '<')) {
            char close = p[1] == '\'' ? '\'' : '>';
            p = strchr(p + 2, close);
            if (p == NULL)
                return NULL;
            p++;
        } else {
            return NULL; /* lookarounds, options, comments, references, conditions */
        }
    } else if (*p == '*') {
        return NULL;
    }
    p = slash_free_items(p);
    return p != NULL && *p == ')' ? p + 1 : NULL;
}

/* The end of one atom at `p` that matches no '/' (not a literal character: the caller reads
 * those), or NULL when `p` holds none. `*zero_width` tells an assertion that matches
 * nothing. */
static const char *slash_free_atom(const char *p, bool *zero_width)
{
    *zero_width = false;
    switch (*p) {
    case '^':
    case '$':
        *zero_width = true;
        return p + 1;
    case '[':
        return slash_free_class(p + 1);
    case '(':
        return slash_free_group(p);
    case '\\':
        if (p[1] != '\0' && strchr("dws", p[1]) != NULL)
            return p + 2;
        if (p[1] != '\0' && strchr("bBAzZG", p[1]) != NULL) {
            *zero_width = true;
            return p + 2;
        }
        return NULL;
    default:
        return NULL;
    }
}

/* Items up to the ')' closing a group, all matching no '/': returns the ')', or NULL. */
static const char *slash_free_items(const char *p)
{
    for (;;) {
        unsigned char c = (unsigned char)*p;
        if (c == ')')
            return p;
        if (c == '\0' || c == '/' || c == '.' || c == '{' || c == '*' || c == '+' || c == '?')
            return NULL;
        if (c == '|') {
            p++;
            continue;
        }
        const char *next;
        bool zw;
        if (c == '\\' && p[1] != '\0' && (unsigned char)p[1] < 0x80 &&
            !is_alnum((unsigned char)p[1])) {
            if (p[1] == '/')
                return NULL;
            next = p + 2;
        } else if (c == '\\' || c == '[' || c == '(' || c == '^' || c == '$') {
            next = slash_free_atom(p, &zw);
            if (next == NULL)
                return NULL;
        } else {
            next = p + 1;
        }
        p = skip_quantifier(next);
    }
}

/* Closes the current segment as the next of `out`; false when there is no room. */
static bool close_segment(struct scan *s)
{
    fcr__pattern_segs *o = s->out;
    if (o->n == FCR__MAX_SEGS)
        return false;
    if (s->seg_literal)
        o->seg[o->n] = (fcr__seg){.lit = s->buf + s->seg_start, .len = s->used - s->seg_start};
    else
        o->seg[o->n] = (fcr__seg){.lit = NULL, .len = 0};
    o->n++;
    s->seg_start = s->used;
    s->seg_literal = true;
    return true;
}

void fcr__pattern_segments(const char *pattern, char *buf, fcr__pattern_segs *out)
{
    out->n = 0;
    out->exact = false;
    if (!fcr__pattern_one_sequence(pattern))
        return;
    struct scan s = {.p = pattern, .buf = buf, .seg_literal = true, .out = out};
    for (;;) {
        const char *p = s.p;
        unsigned char c = (unsigned char)*p;
        if (c == '\0') {
            /* The last segment ends with the path. */
            if (close_segment(&s))
                out->exact = true;
            return;
        }
        bool escaped_punct = c == '\\' && p[1] != '\0' && (unsigned char)p[1] < 0x80 &&
                             !is_alnum((unsigned char)p[1]);
        char lit = escaped_punct ? p[1] : (char)c;
        const char *next = escaped_punct ? p + 2 : p + 1;
        if (lit == '/' && (escaped_punct || c == '/')) {
            if (may_be_quantified(next) || !close_segment(&s))
                return; /* a '/' that may repeat or be left out: nothing more is known */
            s.p = next;
            continue;
        }
        if (escaped_punct || (c != '\0' && strchr("\\^$.[]|(){}?*+", c) == NULL)) {
            /* A literal character (or one byte of it) other than '/'. */
            if (may_be_quantified(next))
                s.seg_literal = false;
            else
                buf[s.used++] = lit;
            s.p = skip_quantifier(next);
            continue;
        }
        if (c == ']' || c == '}') { /* literal characters too, kept out of the exact bytes */
            s.seg_literal = false;
            s.p = skip_quantifier(next);
            continue;
        }
        bool zero_width;
        next = slash_free_atom(p, &zero_width);
        if (next == NULL)
            return;
        const char *q = skip_quantifier(next);
        if (zero_width && q != next)
            return; /* a quantified assertion: not followed here */
        if (!zero_width)
            s.seg_literal = false;
        s.p = q;
    }
}
