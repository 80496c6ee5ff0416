#include "err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

hadm_status hadm_fail(hadm_error *err, hadm_status code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

void hadm_error_prefix(hadm_error *err, const char *fmt, ...)
{
    if (!err)
        return;
    char prefix[256], old[sizeof err->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    size_t n = strlen(prefix);
    if (n > sizeof err->msg - 3)
        n = sizeof err->msg - 3;
    memcpy(err->msg, prefix, n);
    memcpy(err->msg + n, ": ", 2);
    size_t rest = sizeof err->msg - n - 3;
    size_t m = strnlen(old, rest);
    memcpy(err->msg + n + 2, old, m);
    err->msg[n + 2 + m] = 0;
}

const char *hadm_status_name(hadm_status s)
{
    switch (s) {
    case HADM_OK: return "ok";
    case HADM_ERR_ARG: return "bad argument";
    case HADM_ERR_IO: return "i/o error";
    case HADM_ERR_FORMAT: return "bad model file";
    case HADM_ERR_IMAGE: return "bad image";
    case HADM_ERR_NOT_IMAGE: return "not an image";
    case HADM_ERR_TOO_LARGE: return "image too large";
    case HADM_ERR_NOMEM: return "out of memory";
    case HADM_ERR_UNSUPPORTED: return "unsupported";
    case HADM_ERR_INTERNAL: return "internal error";
    }
    return "unknown";
}
