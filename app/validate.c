/* Validation of JSON request bodies against a table of fields (types, required members, lengths,
 * ranges, nested objects and arrays), every failure named by a JSON Pointer (RFC 6901) in a 422
 * problem+json answer. */
#include "app_int.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* At most this many failures are listed; the detail says how many there were. */
#define MAX_ERRORS 32
/* Pointers longer than this are cut (they only name a place for a person to read). */
#define MAX_POINTER 512
/* Nested field tables deeper than this are not followed. */
#define MAX_DEPTH 32

typedef struct check {
    json_t *errors; /* array of {"pointer", "detail"}, or NULL when out of memory */
    size_t count;   /* failures, also those not listed */
    char ptr[MAX_POINTER + 1];
    size_t plen;
    bool oom;
} check;

static void fail(check *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void fail(check *c, const char *fmt, ...)
{
    c->count++;
    if (c->count > MAX_ERRORS || !c->errors)
        return;
    char detail[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    json_t *e = json_pack("{s:s%,s:s}", "pointer", c->ptr, c->plen, "detail", detail);
    if (!e || json_array_append_new(c->errors, e) < 0)
        c->oom = true;
}

/* Appends "/" and `name` escaped (~ as ~0, / as ~1) to the pointer; returns the old length. */
static size_t push(check *c, const char *name, size_t len)
{
    size_t old = c->plen;
    if (c->plen < MAX_POINTER)
        c->ptr[c->plen++] = '/';
    for (size_t i = 0; i < len && c->plen + 2 <= MAX_POINTER; i++) {
        if (name[i] == '~' || name[i] == '/') {
            c->ptr[c->plen++] = '~';
            c->ptr[c->plen++] = name[i] == '~' ? '0' : '1';
        } else {
            c->ptr[c->plen++] = name[i];
        }
    }
    c->ptr[c->plen] = '\0';
    return old;
}

static void pop(check *c, size_t old)
{
    c->plen = old;
    c->ptr[old] = '\0';
}

/* Characters (code points) of a UTF-8 string. */
static size_t chars(const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += ((unsigned char)s[i] & 0xc0) != 0x80;
    return n;
}

static const char *kind_name(int kind)
{
    switch (kind) {
    case FCR_FIELD_STRING:
        return "a string";
    case FCR_FIELD_INTEGER:
        return "an integer";
    case FCR_FIELD_NUMBER:
        return "a number";
    case FCR_FIELD_BOOLEAN:
        return "true or false";
    case FCR_FIELD_OBJECT:
        return "an object";
    case FCR_FIELD_ARRAY:
        return "an array";
    default:
        return "a value";
    }
}

static bool kind_ok(int kind, const json_t *v)
{
    switch (kind) {
    case FCR_FIELD_STRING:
        return json_is_string(v);
    case FCR_FIELD_INTEGER:
        return json_is_integer(v);
    case FCR_FIELD_NUMBER:
        return json_is_number(v);
    case FCR_FIELD_BOOLEAN:
        return json_is_boolean(v);
    case FCR_FIELD_OBJECT:
        return json_is_object(v);
    case FCR_FIELD_ARRAY:
        return json_is_array(v);
    default:
        return true;
    }
}

/* "from 1 to 200", "at least 1", "at most 200" for the field's bounds (%g). */
static void bounds(const fcr_field *f, char *out, size_t cap)
{
    bool lo = f->flags & FCR_FIELD_MIN, hi = f->flags & FCR_FIELD_MAX;
    if (lo && hi)
        snprintf(out, cap, "from %g to %g", f->min, f->max);
    else if (lo)
        snprintf(out, cap, "at least %g", f->min);
    else
        snprintf(out, cap, "at most %g", f->max);
}

static bool in_bounds(const fcr_field *f, double x)
{
    return !((f->flags & FCR_FIELD_MIN) && x < f->min) &&
           !((f->flags & FCR_FIELD_MAX) && x > f->max);
}

static void check_object(check *c, const json_t *obj, const fcr_field *fields, unsigned flags,
                         unsigned depth);

static void check_value(check *c, const json_t *v, const fcr_field *f, unsigned flags,
                        unsigned depth)
{
    if (json_is_null(v) && (f->flags & FCR_FIELD_NULLABLE))
        return;
    if (!kind_ok(f->kind, v)) {
        fail(c, "must be %s%s", kind_name(f->kind),
             (f->flags & FCR_FIELD_NULLABLE) ? " or null" : "");
        return;
    }
    char b[96];
    bool bounded = f->flags & (FCR_FIELD_MIN | FCR_FIELD_MAX);
    switch (f->kind) {
    case FCR_FIELD_STRING: {
        size_t n = chars(json_string_value(v), json_string_length(v));
        if (bounded && !in_bounds(f, (double)n)) {
            bounds(f, b, sizeof b);
            fail(c, "must be %s characters long (it has %zu)", b, n);
        }
        return;
    }
    case FCR_FIELD_INTEGER:
    case FCR_FIELD_NUMBER: {
        double x = json_is_integer(v) ? (double)json_integer_value(v) : json_real_value(v);
        if (bounded && !in_bounds(f, x)) {
            bounds(f, b, sizeof b);
            fail(c, "must be %s", b);
        }
        return;
    }
    case FCR_FIELD_ARRAY: {
        size_t n = json_array_size(v);
        if (bounded && !in_bounds(f, (double)n)) {
            bounds(f, b, sizeof b);
            fail(c, "must have %s items (it has %zu)", b, n);
        }
        if (f->items && depth < MAX_DEPTH) {
            for (size_t i = 0; i < n; i++) {
                char idx[24];
                int k = snprintf(idx, sizeof idx, "%zu", i);
                size_t old = push(c, idx, (size_t)k);
                check_value(c, json_array_get(v, i), f->items, flags, depth + 1);
                pop(c, old);
            }
        }
        return;
    }
    case FCR_FIELD_OBJECT:
        if (f->fields && depth < MAX_DEPTH)
            check_object(c, v, f->fields, flags, depth + 1);
        return;
    default:
        return;
    }
}

static void check_object(check *c, const json_t *obj, const fcr_field *fields, unsigned flags,
                         unsigned depth)
{
    for (const fcr_field *f = fields; f->name; f++) {
        const json_t *v = json_object_get(obj, f->name);
        size_t old = push(c, f->name, strlen(f->name));
        if (!v) {
            if (f->flags & FCR_FIELD_REQUIRED)
                fail(c, "is required");
        } else {
            check_value(c, v, f, flags, depth);
        }
        pop(c, old);
    }
    if (flags & FCR_VALIDATE_NO_EXTRA) {
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)obj, k, v)
        {
            const fcr_field *f = fields;
            while (f->name && strcmp(f->name, k) != 0)
                f++;
            if (!f->name) {
                size_t old = push(c, k, strlen(k));
                fail(c, "is not a member this resource has");
                pop(c, old);
            }
        }
    }
}

int fcr_validate(fcr_res *res, const json_t *value, const fcr_field *fields, unsigned flags)
{
    if (!res || !value || !fields || (flags & ~(unsigned)FCR_VALIDATE_NO_EXTRA))
        return FCR_EINVAL;
    check c = {.errors = json_array()};
    if (!c.errors)
        return FCR_ENOMEM;
    if (!json_is_object(value))
        fail(&c, "must be an object");
    else
        check_object(&c, value, fields, flags, 0);
    if (c.oom) {
        json_decref(c.errors);
        return FCR_ENOMEM;
    }
    if (c.count == 0) {
        json_decref(c.errors);
        return 0;
    }
    char detail[128];
    if (c.count > MAX_ERRORS)
        snprintf(detail, sizeof detail,
                 "the request body has %zu invalid members (the first %d "
                 "are listed)",
                 c.count, MAX_ERRORS);
    else
        snprintf(detail, sizeof detail, "the request body has %zu invalid member%s", c.count,
                 c.count == 1 ? "" : "s");
    json_t *ext = json_pack("{s:o}", "errors", c.errors);
    int rc = fcr_res_set_problem_new(res, 422, NULL, detail, ext);
    return rc < 0 ? rc : 422;
}
