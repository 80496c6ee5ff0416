/* JSON size and depth bounds (see jsonlimit.h). */
#include "server/jsonlimit.h"

#include <stdio.h>

int json_check_limits(const char *s, size_t n, char *why, size_t cap)
{
    size_t depth = 0, values = 1;
    int in_string = 0, escaped = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (in_string) {
            if (escaped)
                escaped = 0;
            else if (ch == '\\')
                escaped = 1;
            else if (ch == '"')
                in_string = 0;
            continue;
        }
        if (ch == '"') {
            in_string = 1;
        } else if (ch == '[' || ch == '{') {
            if (++depth > JSON_MAX_DEPTH) {
                snprintf(why, cap, "JSON nested deeper than %d levels", JSON_MAX_DEPTH);
                return 400;
            }
            values++;
        } else if (ch == ']' || ch == '}') {
            depth -= depth > 0;
        } else if (ch == ',') {
            values++;
        }
        if (values > JSON_MAX_VALUES) {
            snprintf(why, cap, "JSON with more than %zu values (send large images as binary data)",
                     JSON_MAX_VALUES);
            return 413;
        }
    }
    return 0;
}
