/* csv2json: a FastCGI FILTER-role program. The web server sends the file to filter as the DATA
 * stream; a CSV file (RFC 4180: fields separated by commas, records by CRLF or LF, fields in
 * double quotes may hold commas, line breaks and "" for a quote) becomes a JSON array of
 * objects keyed by the header row:
 *
 *   name,note            [{"name":"ada","note":"first, \"best\""},
 *   ada,"first, ""best"""  {"name":"bob","note":""}]
 *   bob,
 *
 * An empty file gives []. Malformed CSV (an unterminated or misplaced quote, a record whose
 * field count differs from the header's, a repeated header name, bytes that are not UTF-8) is
 * answered 422 problem+json naming the line. FCGI_DATA_LAST_MOD becomes Last-Modified.
 *
 * Usage: csv2json [--listen unix:PATH | --listen tcp:HOST:PORT]... (see --help) */
#include <fcrest.h>

#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct csv_reader {
    const char *p;
    size_t n, i;
    size_t line; /* line of the current position, from 1 */
    char *field; /* the field being read */
    size_t flen, fcap;
    char error[160];
} csv_reader;

static int csv_fail(csv_reader *c, size_t line, const char *what)
{
    snprintf(c->error, sizeof c->error, "line %zu: %s", line, what);
    return -1;
}

static int csv_put(csv_reader *c, char ch)
{
    if (c->flen == c->fcap) {
        size_t cap = c->fcap ? c->fcap * 2 : 64;
        char *f = realloc(c->field, cap);
        if (!f)
            return csv_fail(c, c->line, "out of memory");
        c->field = f;
        c->fcap = cap;
    }
    c->field[c->flen++] = ch;
    return 0;
}

static bool csv_at_eol(const csv_reader *c)
{
    return c->i >= c->n || c->p[c->i] == '\n' ||
           (c->p[c->i] == '\r' && c->i + 1 < c->n && c->p[c->i + 1] == '\n');
}

/* Reads one record into `fields` (strings). Returns 0 or -1 with c->error set. */
static int csv_record(csv_reader *c, json_t *fields)
{
    for (;;) {
        c->flen = 0;
        size_t start_line = c->line;
        if (c->i < c->n && c->p[c->i] == '"') {
            c->i++;
            for (;;) {
                if (c->i >= c->n)
                    return csv_fail(c, start_line, "unterminated quoted field");
                char ch = c->p[c->i++];
                if (ch == '"') {
                    if (c->i < c->n && c->p[c->i] == '"')
                        c->i++;
                    else
                        break;
                } else if (ch == '\n') {
                    c->line++;
                }
                if (csv_put(c, ch) < 0)
                    return -1;
            }
            if (c->i < c->n && c->p[c->i] != ',' && !csv_at_eol(c))
                return csv_fail(c, c->line, "text after a closing quote");
        } else {
            while (c->i < c->n && c->p[c->i] != ',' && c->p[c->i] != '\n' && c->p[c->i] != '\r') {
                if (c->p[c->i] == '"')
                    return csv_fail(c, c->line, "quote inside an unquoted field");
                if (csv_put(c, c->p[c->i++]) < 0)
                    return -1;
            }
            if (c->i < c->n && c->p[c->i] == '\r' && !csv_at_eol(c))
                return csv_fail(c, c->line, "carriage return without line feed");
        }
        json_t *s = json_stringn(c->field ? c->field : "", c->flen);
        if (!s)
            return csv_fail(c, start_line, "field is not valid UTF-8");
        if (json_array_append_new(fields, s) < 0)
            return csv_fail(c, c->line, "out of memory");
        if (c->i < c->n && c->p[c->i] == ',') {
            c->i++;
            continue;
        }
        if (c->i < c->n && c->p[c->i] == '\r')
            c->i++;
        if (c->i < c->n && c->p[c->i] == '\n') {
            c->i++;
            c->line++;
        }
        return 0;
    }
}

/* Converts CSV text to a new JSON array, or returns NULL with the reason in c->error. */
static json_t *csv_to_json(csv_reader *c)
{
    json_t *out = json_array();
    json_t *header = json_array();
    json_t *row = NULL;
    if (!out || !header) {
        csv_fail(c, 1, "out of memory");
        goto fail;
    }
    if (c->n == 0)
        goto done;
    if (csv_record(c, header) < 0)
        goto fail;
    size_t ncols = json_array_size(header);
    for (size_t a = 0; a < ncols; a++) {
        for (size_t b = a + 1; b < ncols; b++) {
            if (json_equal(json_array_get(header, a), json_array_get(header, b))) {
                csv_fail(c, 1, "repeated name in the header row");
                goto fail;
            }
        }
    }
    while (c->i < c->n) {
        size_t line = c->line;
        row = json_array();
        if (!row || csv_record(c, row) < 0)
            goto fail;
        if (json_array_size(row) != ncols) {
            char what[96];
            snprintf(what, sizeof what, "%zu fields where the header has %zu", json_array_size(row),
                     ncols);
            csv_fail(c, line, what);
            goto fail;
        }
        json_t *obj = json_object();
        if (!obj || json_array_append_new(out, obj) < 0) {
            csv_fail(c, line, "out of memory");
            goto fail;
        }
        for (size_t k = 0; k < ncols; k++) {
            json_t *key = json_array_get(header, k);
            if (json_object_setn(obj, json_string_value(key), json_string_length(key),
                                 json_array_get(row, k)) < 0) {
                csv_fail(c, line, "out of memory");
                goto fail;
            }
        }
        json_decref(row);
        row = NULL;
    }
done:
    json_decref(header);
    return out;
fail:
    json_decref(row);
    json_decref(header);
    json_decref(out);
    return NULL;
}

static fcr_handler_result csv2json(fcr_req *req, fcr_res *res, void *data)
{
    (void)data;
    size_t len;
    const char *csv = fcr_req_data(req, &len);
    csv_reader c = {.p = csv, .n = len, .line = 1};
    json_t *out = csv_to_json(&c);
    free(c.field);
    if (!out)
        return fcr_res_set_problem(res, 422, "malformed CSV: %s", c.error);
    int64_t mod;
    if (fcr_req_data_last_mod(req, &mod) == 0) {
        time_t t = (time_t)mod;
        struct tm tm;
        char date[64];
        if (gmtime_r(&t, &tm) && strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm))
            fcr_res_set_header(res, "Last-Modified", date);
    }
    return fcr_res_set_json_new(res, 200, out);
}

int main(int argc, char **argv)
{
    fcr_app *app = fcr_app_new();
    if (!app || fcr_app_set_filter(app, csv2json, NULL) < 0) {
        fprintf(stderr, "csv2json: out of memory\n");
        fcr_app_free(app);
        return 1;
    }
    int rc = fcr_app_run(app, argc, argv);
    fcr_app_free(app);
    return rc == 0 ? 0 : 1;
}
