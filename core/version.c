/* The library's version, fixed when the library is compiled. */
#include <fcrest/version.h>

const char *fcr_version(void)
{
    return FCR_VERSION_STRING;
}

int fcr_version_number(void)
{
    return FCR_VERSION_NUMBER;
}
