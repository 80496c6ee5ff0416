/* The detect routes' request parsing: multipart and urlencoded forms, raw
 * image bodies, the JSON of detect-base64 and of /detect/batch, the `mode`
 * field and query, the API key carriers (see server_harness.h for the input
 * layout). */
#include "fuzz.h"
#include "server_harness.h"

static const char *const PATHS[] = {"/api/v1/detect", "/api/detect", "/detect", "/api/v1/detect-base64",
                                    "/detect/batch"};

int fuzz_request(const uint8_t *data, size_t size)
{
    harness_request(PATHS, (int)(sizeof PATHS / sizeof *PATHS), data, size);
    return 0;
}

FUZZ_ENTRY(fuzz_request)
