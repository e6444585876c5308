/* notes_store.c: the store interface of the notes example: a URL to a backend, and the
 * operations handed to it (see notes_store.h). */
#include "notes_store.h"

#include <stdio.h>
#include <string.h>

int notes_store_new(const char *url, double timeout, notes_store **out, char *err, size_t errlen)
{
    if (!out)
        return FCR_EINVAL;
    *out = NULL;
    if (!url || !*url)
        url = NOTES_STORE_DEFAULT;
    if (timeout <= 0)
        timeout = NOTES_STORE_TIMEOUT;
    if (strncmp(url, "sqlite:", 7) == 0) {
        if (!url[7]) {
            snprintf(err, errlen, "--db sqlite:PATH needs a path");
            return FCR_EINVAL;
        }
        return notes_sqlite_new(url + 7, timeout, out, err, errlen);
    }
    if (strncmp(url, "postgresql://", 13) == 0 || strncmp(url, "postgres://", 11) == 0) {
#ifdef NOTES_HAVE_PG
        return notes_pg_new(url, timeout, out, err, errlen);
#else
        /* The URI may hold a password: it is not repeated. */
        snprintf(err, errlen,
                 "--db names a PostgreSQL database, and this notes program was built without "
                 "PostgreSQL (libpq); use --db sqlite:PATH");
        return FCR_EINVAL;
#endif
    }
    const char *colon = strchr(url, ':');
    snprintf(err, errlen,
             "--db: unknown kind of store \"%.*s\": use sqlite:PATH or postgresql://...",
             colon ? (int)(colon - url) : 0, url);
    return FCR_EINVAL;
}

int notes_store_start(notes_store *s, struct ev_loop *loop, char *err, size_t errlen)
{
    if (!s)
        return FCR_EINVAL;
    return s->backend->start(s, loop, err, errlen);
}

void notes_store_stop(notes_store *s, struct ev_loop *loop)
{
    if (s && s->backend->stop)
        s->backend->stop(s, loop);
}

void notes_store_free(notes_store *s)
{
    if (s)
        s->backend->free(s);
}

static int run(notes_store *s, fcr_req *req, fcr_res *res, const notes_store_query *q,
               notes_store_cb cb, void *data)
{
    if (!s || !req || !res || !cb)
        return FCR_EINVAL;
    return s->backend->run(s, req, res, q, cb, data);
}

int notes_store_list(notes_store *s, fcr_req *req, fcr_res *res, size_t offset, size_t limit,
                     notes_store_cb cb, void *data)
{
    notes_store_query q = {.kind = NOTES_OP_LIST, .offset = offset, .limit = limit};
    return run(s, req, res, &q, cb, data);
}

int notes_store_get(notes_store *s, fcr_req *req, fcr_res *res, long long id, notes_store_cb cb,
                    void *data)
{
    notes_store_query q = {.kind = NOTES_OP_GET, .id = id};
    return run(s, req, res, &q, cb, data);
}

int notes_store_create(notes_store *s, fcr_req *req, fcr_res *res, const char *title,
                       const char *body, const char *author, notes_store_cb cb, void *data)
{
    if (!title || !body)
        return FCR_EINVAL;
    notes_store_query q = {.kind = NOTES_OP_CREATE, .title = title, .body = body, .author = author};
    return run(s, req, res, &q, cb, data);
}

int notes_store_update(notes_store *s, fcr_req *req, fcr_res *res, long long id, long long expect,
                       const char *title, const char *body, const char *author, notes_store_cb cb,
                       void *data)
{
    if (!title || !body || expect < 0)
        return FCR_EINVAL;
    notes_store_query q = {.kind = NOTES_OP_UPDATE,
                           .id = id,
                           .title = title,
                           .body = body,
                           .author = author,
                           .expect = expect};
    return run(s, req, res, &q, cb, data);
}

int notes_store_delete(notes_store *s, fcr_req *req, fcr_res *res, long long id, long long expect,
                       notes_store_cb cb, void *data)
{
    if (expect < 0)
        return FCR_EINVAL;
    notes_store_query q = {.kind = NOTES_OP_DELETE, .id = id, .expect = expect};
    return run(s, req, res, &q, cb, data);
}
