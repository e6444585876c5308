/* Memory shared by the processes of one program: an anonymous shared mapping made before the
 * supervisor forks its workers, which inherit it (the framework's metrics live there). */
#include "internal.h"

#include <sys/mman.h>

void *fcr__shm_map(size_t len)
{
    if (len == 0)
        return NULL;
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p; /* zero-filled */
}

void fcr__shm_unmap(void *p, size_t len)
{
    if (p && len)
        munmap(p, len);
}

/* ---- The server's hooks ------------------------------------------------------------------ */

void fcr__server_set_supervision(fcr_server *srv, const fcr__supervision *sv)
{
    if (!srv)
        return;
    if (sv)
        srv->supervision = *sv;
    else
        srv->supervision = (fcr__supervision){0};
}

void fcr__server_set_conn_gauge(fcr_server *srv, _Atomic int64_t *gauge)
{
    if (!srv)
        return;
    srv->conn_gauge = gauge;
    if (gauge && srv->stats.conns)
        atomic_fetch_add_explicit(gauge, (int64_t)srv->stats.conns, memory_order_relaxed);
}
