/* Encodings of the HTTP API: the detect response of DESIGN.md (field order
 * is part of the contract), base64 and the `mode` parameter. */
#ifndef HADM_SERVER_ENCODE_H
#define HADM_SERVER_ENCODE_H
#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "sched/queue.h"

/* {"success", "message", "results", "local_detections", "global_detections",
 * "processing_time"} for a job whose wanted models all succeeded. */
cJSON *json_detect_response(const sched_job *job, const char *mode, double seconds);
/* {"success": false, "detail": msg} */
cJSON *json_error_object(const char *msg);

/* "local" | "global" | "both" (NULL or "" = both) -> want[]; -1 if invalid. */
int parse_mode(const char *s, int want[REG_MODELS], const char **canonical);

/* Decodes standard or URL-safe base64, skipping whitespace and an optional
 * "data:...;base64," prefix. Returns a malloc'd buffer (NULL on bad input). */
uint8_t *base64_decode(const char *in, size_t in_len, size_t *out_len);
/* Standard base64 with padding, NUL-terminated, malloc'd (NULL: no memory). */
char *base64_encode(const uint8_t *in, size_t len);
#endif
