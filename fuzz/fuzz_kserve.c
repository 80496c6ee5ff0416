/* KServe v2 infer requests: the JSON tensors (BYTES base64, UINT8 arrays) and
 * the binary-data extension (Inference-Header-Content-Length, binary_data_size,
 * Triton's length prefix); see server_harness.h for the input layout. */
#include "fuzz.h"
#include "server_harness.h"

static const char *const PATHS[] = {"/v2/models/hadm-l/infer", "/v2/models/hadm-g/infer",
                                    "/v2/models/other/infer"};

int fuzz_kserve(const uint8_t *data, size_t size)
{
    harness_request(PATHS, (int)(sizeof PATHS / sizeof *PATHS), data, size);
    return 0;
}

FUZZ_ENTRY(fuzz_kserve)
