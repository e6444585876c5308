/* The "tcp:HOST:PORT" address form, split without I/O: listeners and the test client's
 * connections parse it the same way. */
#include "addr.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int fcr__hostport_split(const char *hostport, char *host, size_t cap, char *port, size_t pcap)
{
    const char *p;
    size_t hlen;
    if (hostport[0] == '[') {
        const char *end = strchr(hostport, ']');
        if (!end || end[1] != ':')
            return FCR_EADDR;
        hlen = (size_t)(end - hostport - 1);
        if (hlen >= cap)
            return FCR_EADDR;
        memcpy(host, hostport + 1, hlen);
        p = end + 2;
    } else {
        const char *colon = strrchr(hostport, ':');
        if (!colon)
            return FCR_EADDR;
        hlen = (size_t)(colon - hostport);
        if (hlen >= cap)
            return FCR_EADDR;
        memcpy(host, hostport, hlen);
        p = colon + 1;
    }
    host[hlen] = '\0';
    size_t plen = strlen(p);
    if (plen == 0 || plen >= pcap || strspn(p, "0123456789") != plen)
        return FCR_EADDR;
    errno = 0;
    unsigned long number = strtoul(p, NULL, 10);
    if (errno || number > 65535) /* getaddrinfo would take it modulo 65536 */
        return FCR_EADDR;
    memcpy(port, p, plen + 1);
    return 0;
}
