/* Internal: address strings ("tcp:HOST:PORT"), parsed without I/O. */
#ifndef FCR__CORE_ADDR_H
#define FCR__CORE_ADDR_H

#include <stddef.h>

#include <fcrest/error.h>

/* Splits "HOST:PORT" or "[IPv6]:PORT" (HOST may be empty) into `host` (`cap` bytes) and `port`
 * (`pcap` bytes), both NUL-terminated. PORT must be decimal digits, at most 65535. Returns 0,
 * or FCR_EADDR for a malformed address or one that does not fit. */
int fcr__hostport_split(const char *hostport, char *host, size_t cap, char *port, size_t pcap);

#endif
