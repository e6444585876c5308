/* JSON text of jansson values, written straight into a response body: the same bytes as
 * json_dumpb(JSON_COMPACT | JSON_ENCODE_ANY) gives, without its allocations (jansson's dump
 * keeps a table of the containers it is inside, to refuse cycles, and allocates it for every
 * call). Written here because jansson offers no dump that allocates nothing; cycles are
 * refused by a depth limit instead (the parser's own). */
#include "app_int.h"

#include <stdio.h>
#include <string.h>

/* Nesting deeper than jansson's parser accepts is refused (and so is a cycle). */
#define MAX_DEPTH 2048

/* Where text goes: bytes past `cap` are only counted, so one pass measures and another
 * writes. */
typedef struct sink {
    char *p;
    size_t n, cap;
} sink;

static void put(sink *s, const char *b, size_t len)
{
    if (s->p && s->n < s->cap) {
        size_t k = s->cap - s->n < len ? s->cap - s->n : len;
        memcpy(s->p + s->n, b, k);
    }
    s->n += len;
}

static void putc1(sink *s, char c)
{
    if (s->p && s->n < s->cap)
        s->p[s->n] = c;
    s->n++;
}

/* A JSON string with the escapes jansson writes: \" \\ \b \f \n \r \t, and \u00XX (upper case
 * hex) for the other control bytes; everything else (UTF-8 included) as it is. */
static void put_string(sink *s, const char *str, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    putc1(s, '"');
    size_t run = 0; /* bytes copied as they are, in one put */
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)str[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        put(s, str + run, i - run);
        run = i + 1;
        char e[6] = {'\\', 0, 0, 0, 0, 0};
        size_t elen = 2;
        switch (c) {
        case '"':
            e[1] = '"';
            break;
        case '\\':
            e[1] = '\\';
            break;
        case '\b':
            e[1] = 'b';
            break;
        case '\f':
            e[1] = 'f';
            break;
        case '\n':
            e[1] = 'n';
            break;
        case '\r':
            e[1] = 'r';
            break;
        case '\t':
            e[1] = 't';
            break;
        default:
            e[1] = 'u', e[2] = '0', e[3] = '0', e[4] = hex[c >> 4], e[5] = hex[c & 15];
            elen = 6;
            break;
        }
        put(s, e, elen);
    }
    put(s, str + run, len - run);
    putc1(s, '"');
}

/* A real as jansson writes it: %.17g, with ".0" added when it would read back as an integer,
 * and the exponent without '+' or leading zeros. */
static void put_real(sink *s, double v)
{
    char b[64];
    int n = snprintf(b, sizeof b, "%.17g", v);
    if (n <= 0 || (size_t)n >= sizeof b - 3)
        return;
    /* A locale with a decimal comma writes one: JSON wants a point. */
    char *comma = strchr(b, ',');
    if (comma)
        *comma = '.';
    if (!strchr(b, '.') && !strchr(b, 'e')) {
        memcpy(b + n, ".0", 3);
        n += 2;
    }
    char *e = strchr(b, 'e');
    if (e) {
        /* After 'e': a '-' stays, a '+' goes, and so do the exponent's leading zeros. */
        char *to = e + 1;
        if (*to == '-')
            to++;
        char *from = e + 2;
        while (*from == '0' && from[1])
            from++;
        memmove(to, from, strlen(from) + 1);
        n = (int)strlen(b);
    }
    put(s, b, (size_t)n);
}

static int put_value(sink *s, const json_t *v, unsigned depth)
{
    if (depth > MAX_DEPTH)
        return FCR_EINVAL;
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        putc1(s, '{');
        const char *k;
        json_t *m;
        bool first = true;
        /* Keys in the object's order (insertion, which jansson keeps). */
        json_object_foreach((json_t *)v, k, m)
        {
            if (!first)
                putc1(s, ',');
            first = false;
            put_string(s, k, strlen(k));
            putc1(s, ':');
            int rc = put_value(s, m, depth + 1);
            if (rc < 0)
                return rc;
        }
        putc1(s, '}');
        return 0;
    }
    case JSON_ARRAY: {
        putc1(s, '[');
        size_t n = json_array_size(v);
        for (size_t i = 0; i < n; i++) {
            if (i)
                putc1(s, ',');
            int rc = put_value(s, json_array_get(v, i), depth + 1);
            if (rc < 0)
                return rc;
        }
        putc1(s, ']');
        return 0;
    }
    case JSON_STRING:
        put_string(s, json_string_value(v), json_string_length(v));
        return 0;
    case JSON_INTEGER: {
        char b[32];
        int n = snprintf(b, sizeof b, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        put(s, b, (size_t)n);
        return 0;
    }
    case JSON_REAL:
        put_real(s, json_real_value(v));
        return 0;
    case JSON_TRUE:
        put(s, "true", 4);
        return 0;
    case JSON_FALSE:
        put(s, "false", 5);
        return 0;
    case JSON_NULL:
        put(s, "null", 4);
        return 0;
    default:
        return FCR_EINVAL;
    }
}

size_t fcr__json_size(const json_t *v)
{
    sink s = {NULL, 0, 0};
    return v && put_value(&s, v, 0) == 0 ? s.n : 0;
}

size_t fcr__json_write(const json_t *v, char *out, size_t cap)
{
    sink s = {out, 0, cap};
    return v && put_value(&s, v, 0) == 0 ? s.n : 0;
}

void fcr__json_put_raw(char *out, size_t *n, size_t cap, const char *b, size_t len)
{
    sink s = {out, *n, cap};
    put(&s, b, len);
    *n = s.n;
}

void fcr__json_put_string(char *out, size_t *n, size_t cap, const char *str, size_t len)
{
    sink s = {out, *n, cap};
    put_string(&s, str, len);
    *n = s.n;
}

bool fcr__utf8_valid(const char *str, size_t len)
{
    const unsigned char *p = (const unsigned char *)str;
    size_t i = 0;
    while (i < len) {
        unsigned char c = p[i];
        size_t k;
        unsigned min;
        unsigned cp;
        if (c < 0x80) {
            if (c == 0)
                return false; /* a C string cannot hold it; jansson refuses it too */
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            k = 1, min = 0x80, cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            k = 2, min = 0x800, cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            k = 3, min = 0x10000, cp = c & 0x07;
        } else {
            return false;
        }
        if (len - i <= k)
            return false;
        for (size_t j = 1; j <= k; j++) {
            if ((p[i + j] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (p[i + j] & 0x3f);
        }
        /* Overlong forms, surrogates and code points past U+10FFFF are not UTF-8. */
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += k + 1;
    }
    return true;
}
