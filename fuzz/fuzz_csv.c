/* libFuzzer target for the CSV reader of examples/csv2json.c (compiled in here with its main()
 * renamed).
 *
 * The input is a CSV file. csv_to_json() must either give an array of objects that all have
 * the header's names, or fail with a message naming a line within the input. A result with
 * rows is written back as CSV (every field quoted, CRLF line ends, the header from the first
 * object's keys) and read again: the second reading must give an equal array. */
#define main csv2json_main
#include "../examples/csv2json.c"
#undef main

#include <stdint.h>

static void must(bool ok)
{
    if (!ok)
        abort();
}

typedef struct out_buf {
    char *p;
    size_t len, cap;
} out_buf;

static void put(out_buf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        b->p = realloc(b->p, cap);
        must(b->p != NULL);
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void put_field(out_buf *b, const char *s, size_t n, bool last)
{
    put(b, "\"", 1);
    for (size_t i = 0; i < n; i++)
        put(b, s[i] == '"' ? "\"\"" : &s[i], s[i] == '"' ? 2 : 1);
    put(b, last ? "\"\r\n" : "\",", last ? 3 : 2);
}

/* Writes `rows` (objects with the same keys) back as CSV. */
static void write_csv(json_t *rows, out_buf *b)
{
    json_t *first = json_array_get(rows, 0);
    size_t ncols = json_object_size(first);
    const char *key;
    size_t klen;
    json_t *v;
    size_t i = 0;
    json_object_keylen_foreach(first, key, klen, v)
    {
        put_field(b, key, klen, ++i == ncols);
    }
    size_t r;
    json_t *row;
    json_array_foreach(rows, r, row)
    {
        i = 0;
        json_object_keylen_foreach(first, key, klen, v)
        {
            json_t *f = json_object_getn(row, key, klen);
            must(json_is_string(f));
            put_field(b, json_string_value(f), json_string_length(f), ++i == ncols);
        }
    }
}

/* json_equal() looks object keys up as C strings, so it calls objects whose keys hold NUL
 * bytes different; this compares keys with their lengths. */
static bool rows_equal(json_t *a, json_t *b)
{
    if (json_array_size(a) != json_array_size(b))
        return false;
    for (size_t i = 0; i < json_array_size(a); i++) {
        json_t *oa = json_array_get(a, i), *ob = json_array_get(b, i);
        if (json_object_size(oa) != json_object_size(ob))
            return false;
        const char *key;
        size_t klen;
        json_t *v;
        json_object_keylen_foreach(oa, key, klen, v)
        {
            json_t *w = json_object_getn(ob, key, klen);
            if (!w || !json_equal(v, w))
                return false;
        }
    }
    return true;
}

static json_t *read_csv(const char *p, size_t n, csv_reader *c)
{
    memset(c, 0, sizeof *c);
    c->p = p;
    c->n = n;
    c->line = 1;
    json_t *out = csv_to_json(c);
    free(c->field);
    c->field = NULL;
    return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    csv_reader c;
    json_t *out = read_csv((const char *)data, size, &c);
    if (!out) {
        unsigned long line = 0;
        must(sscanf(c.error, "line %lu: ", &line) == 1 && line >= 1);
        size_t lines = 1;
        for (size_t i = 0; i < size; i++)
            lines += data[i] == '\n';
        must(line <= lines);
        return 0;
    }
    must(json_is_array(out));
    size_t nrows = json_array_size(out);
    size_t ncols = nrows ? json_object_size(json_array_get(out, 0)) : 0;
    size_t r;
    json_t *row;
    json_array_foreach(out, r, row)
    {
        must(json_is_object(row) && json_object_size(row) == ncols);
    }
    if (nrows > 0) {
        out_buf b = {0};
        write_csv(out, &b);
        csv_reader c2;
        json_t *again = read_csv(b.p, b.len, &c2);
        must(again && rows_equal(out, again));
        json_decref(again);
        free(b.p);
    }
    json_decref(out);
    return 0;
}
