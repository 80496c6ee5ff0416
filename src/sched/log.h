/* Structured logging: one JSON object per line on stderr, so log collectors
 * can parse every line ({"ts", "level", "event", ...fields}). */
#ifndef HADM_SCHED_LOG_H
#define HADM_SCHED_LOG_H
#include <stddef.h>

#include "util/err.h"

/* fields_fmt produces the extra members, already JSON ("\"k\":1,\"s\":\"x\""),
 * or is NULL/empty for none. Strings from outside must go through log_quote. */
void log_line(const char *level, const char *event, const char *fields_fmt, ...) HADM_PRINTF(3, 4);

/* Writes s as a quoted JSON string into dst (truncating, always terminated)
 * and returns dst, so it can be used inside a log_line argument list. */
const char *log_quote(char *dst, size_t cap, const char *s);

#endif
