/* Percent-decoding (RFC 3986, section 2.1). Written by hand: PCRE2 matches but does not
 * transform, and libc has no decoder. */
#include <fcrest/router.h>

#include "router/router_int.h"

/* Value of a hex digit, or -1. */
static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

bool fcr__percent_valid(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '\0')
            return false;
        if (s[i] != '%')
            continue;
        int hi = len - i >= 3 ? hexval((unsigned char)s[i + 1]) : -1;
        int lo = len - i >= 3 ? hexval((unsigned char)s[i + 2]) : -1;
        if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
            return false;
        i += 2;
    }
    return true;
}

int fcr_percent_decode(const char *in, size_t len, char *out, size_t *outlen, bool plus_is_space)
{
    if (out == NULL || (in == NULL && len > 0))
        return FCR_EINVAL;
    /* The write index never passes the read index, so in-place decoding is safe. */
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c == '%') {
            int hi = len - i >= 3 ? hexval((unsigned char)in[i + 1]) : -1;
            int lo = len - i >= 3 ? hexval((unsigned char)in[i + 2]) : -1;
            if (hi < 0 || lo < 0) {
                out[o] = '\0';
                if (outlen)
                    *outlen = o;
                return FCR_EPARSE;
            }
            out[o++] = (char)(hi << 4 | lo);
            i += 2;
        } else if (c == '+' && plus_is_space) {
            out[o++] = ' ';
        } else {
            out[o++] = (char)c;
        }
    }
    out[o] = '\0';
    if (outlen)
        *outlen = o;
    return 0;
}
