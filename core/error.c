#include <fcrest/error.h>

const char *fcr_strerror(int err)
{
    switch (err) {
    case FCR_OK:
        return "success";
#define FCR__ERR_TEXT(name, code, text)                                                            \
    case FCR_##name:                                                                               \
        return text;
        FCR_ERRNO_MAP(FCR__ERR_TEXT)
#undef FCR__ERR_TEXT
    }
    return "unknown error";
}

const char *fcr_err_name(int err)
{
    switch (err) {
    case FCR_OK:
        return "FCR_OK";
#define FCR__ERR_NAME(name, code, text)                                                            \
    case FCR_##name:                                                                               \
        return "FCR_" #name;
        FCR_ERRNO_MAP(FCR__ERR_NAME)
#undef FCR__ERR_NAME
    }
    return "FCR_UNKNOWN";
}
