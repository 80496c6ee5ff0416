#include "sched/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

const char *log_quote(char *dst, size_t cap, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    if (cap < 3) {
        if (cap)
            dst[0] = '\0';
        return dst;
    }
    dst[o++] = '"';
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p && o + 8 < cap; p++) {
        if (*p == '"' || *p == '\\') {
            dst[o++] = '\\';
            dst[o++] = (char)*p;
        } else if (*p < 0x20) {
            memcpy(dst + o, "\\u00", 4);
            dst[o + 4] = hex[*p >> 4];
            dst[o + 5] = hex[*p & 15];
            o += 6;
        } else {
            dst[o++] = (char)*p;
        }
    }
    dst[o++] = '"';
    dst[o] = '\0';
    return dst;
}

void log_line(const char *level, const char *event, const char *fields_fmt, ...)
{
    char fields[2048] = "";
    if (fields_fmt && *fields_fmt) {
        va_list ap;
        va_start(ap, fields_fmt);
        fields[0] = ',';
        vsnprintf(fields + 1, sizeof fields - 1, fields_fmt, ap);
        va_end(ap);
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[32];
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    /* One fprintf per line: stdio locks the stream, so lines never interleave. */
    fprintf(stderr, "{\"ts\":\"%s.%03ldZ\",\"level\":\"%s\",\"event\":\"%s\"%s}\n", when,
            ts.tv_nsec / 1000000, level, event, fields);
}
