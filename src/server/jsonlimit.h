/* Bounds on JSON request bodies, checked before cJSON builds its tree: a
 * deeply nested body costs stack in the recursive parser, and one of many
 * tiny values ("[0,0,0,...]") costs ~64 bytes of tree per 2 bytes of body. */
#ifndef HADM_SERVER_JSONLIMIT_H
#define HADM_SERVER_JSONLIMIT_H

#include <stddef.h>

#define JSON_MAX_DEPTH 32
/* Enough for a 4 MiB image sent as a KServe UINT8 array of numbers. */
#define JSON_MAX_VALUES ((size_t)4 << 20)

/* 0 when s[0..n) stays within both bounds; otherwise the HTTP status to
 * answer (400 too deep, 413 too many values) with the reason in why. Only
 * counts brackets and commas outside strings: syntax is cJSON's job. */
int json_check_limits(const char *s, size_t n, char *why, size_t cap);

#endif
