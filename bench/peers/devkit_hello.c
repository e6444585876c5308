/* devkit_hello: the Hello responder on the reference FastCGI C devkit (Debian's libfcgi-dev),
 * in its multithreaded form: a pool of threads, each looping on FCGX_Accept_r() with its own
 * request. The request body is read to its end and dropped before the answer is written.
 *
 * No accept mutex: the devkit's threaded example serializes FCGX_Accept_r() with one, which
 * Linux does not need, and with FCGI_KEEP_CONN a thread waits inside FCGX_Accept_r() for the
 * next request of its kept connection, so a mutex there would stop every other thread.
 * A kept connection holds its thread: with fewer threads than kept connections, the extra
 * connections are not served until one closes.
 *
 * Usage: devkit_hello unix:PATH | tcp:HOST:PORT [--threads N] (default: 2 per core) */
#include <fcgiapp.h>

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char hello[] = "Status: 200 OK\r\n"
                            "Content-Type: text/plain\r\n"
                            "Content-Length: 13\r\n"
                            "\r\n"
                            "Hello, world!";

static int listen_sock;

static void *serve(void *arg)
{
    (void)arg;
    FCGX_Request req;
    char buf[16384];
    if (FCGX_InitRequest(&req, listen_sock, 0) != 0)
        return NULL;
    while (FCGX_Accept_r(&req) >= 0) {
        while (FCGX_GetStr(buf, sizeof buf, req.in) > 0)
            ;
        FCGX_PutStr(hello, (int)(sizeof hello - 1), req.out);
        FCGX_Finish_r(&req);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    long threads = 2 * sysconf(_SC_NPROCESSORS_ONLN);
    if (argc == 4 && strcmp(argv[2], "--threads") == 0)
        threads = strtol(argv[3], NULL, 10);
    if ((argc != 2 && argc != 4) || threads < 1 || threads > 4096) {
        fprintf(stderr, "usage: %s unix:PATH | tcp:HOST:PORT [--threads N]\n", argv[0]);
        return 2;
    }
    /* FCGX_OpenSocket takes a path for a unix socket and "HOST:PORT" for TCP. */
    const char *addr = argv[1];
    if (strncmp(addr, "unix:", 5) == 0) {
        addr += 5;
        unlink(addr);
    } else if (strncmp(addr, "tcp:", 4) == 0) {
        addr += 4;
    } else {
        fprintf(stderr, "%s: bad address %s\n", argv[0], argv[1]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    if (FCGX_Init() != 0)
        return 1;
    /* The devkit's own SIGTERM handler only marks a shutdown that threads blocked in accept()
     * do not see until the next connection arrives: end at once instead. */
    signal(SIGTERM, SIG_DFL);
    listen_sock = FCGX_OpenSocket(addr, 1024);
    if (listen_sock < 0) {
        fprintf(stderr, "%s: cannot listen on %s\n", argv[0], argv[1]);
        return 1;
    }
    pthread_t *tids = calloc((size_t)threads, sizeof *tids);
    if (!tids)
        return 1;
    for (long i = 0; i < threads; i++) {
        if (pthread_create(&tids[i], NULL, serve, NULL) != 0) {
            fprintf(stderr, "%s: cannot start thread %ld\n", argv[0], i);
            return 1;
        }
    }
    for (long i = 0; i < threads; i++)
        pthread_join(tids[i], NULL);
    free(tids);
    return 0;
}
