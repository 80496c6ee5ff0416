/* Error reporting: every failing function fills the caller's hadm_error. */
#ifndef HADM_UTIL_ERR_H
#define HADM_UTIL_ERR_H
#include "hadm.h"

#if defined(__GNUC__)
#define HADM_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define HADM_PRINTF(a, b)
#endif

/* Sets err (if not NULL) and returns code, so callers can `return hadm_fail(...)`. */
hadm_status hadm_fail(hadm_error *err, hadm_status code, const char *fmt, ...) HADM_PRINTF(3, 4);

/* Prefixes an existing message, e.g. with the file name it concerns. */
void hadm_error_prefix(hadm_error *err, const char *fmt, ...) HADM_PRINTF(2, 3);

#endif
