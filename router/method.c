/* HTTP method names and sets. */
#include <string.h>

#include <fcrest/router.h>

/* In bit order, so formatting a set lists its methods in that order. */
static const char *const method_names[] = {
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
};
#define NMETHODS (sizeof method_names / sizeof method_names[0])

unsigned fcr_method_parse(const char *name, size_t len)
{
    if (name == NULL)
        return 0;
    for (size_t i = 0; i < NMETHODS; i++) {
        if (strlen(method_names[i]) == len && memcmp(method_names[i], name, len) == 0)
            return 1u << i;
    }
    return 0;
}

const char *fcr_method_name(unsigned method)
{
    for (size_t i = 0; i < NMETHODS; i++) {
        if (method == 1u << i)
            return method_names[i];
    }
    return NULL;
}

int fcr_methods_format(unsigned set, char *buf, size_t cap)
{
    if (buf == NULL || cap == 0)
        return FCR_ETOOBIG;
    size_t len = 0;
    for (size_t i = 0; i < NMETHODS; i++) {
        if (!(set & (1u << i)))
            continue;
        const char *sep = len > 0 ? ", " : "";
        size_t slen = strlen(sep), nlen = strlen(method_names[i]);
        if (len + slen + nlen + 1 > cap) {
            buf[0] = '\0';
            return FCR_ETOOBIG;
        }
        memcpy(buf + len, sep, slen);
        memcpy(buf + len + slen, method_names[i], nlen);
        len += slen + nlen;
    }
    buf[len] = '\0';
    return (int)len;
}
