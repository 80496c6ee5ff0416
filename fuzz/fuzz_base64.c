/* base64_decode (detect-base64, batch JSON, KServe BYTES) and parse_mode.
 * A decoded result re-encoded by base64_encode must decode to the same
 * bytes, and the output never exceeds what the input can hold. */
#include <string.h>

#include "fuzz.h"
#include "server/encode.h"

static void check_mode(const uint8_t *data, size_t size)
{
    char s[16];
    if (size >= sizeof s || memchr(data, 0, size))
        return;
    memcpy(s, data, size);
    s[size] = '\0';
    int want[REG_MODELS] = {0};
    const char *canonical = NULL;
    int valid = !*s || !strcmp(s, "local") || !strcmp(s, "global") || !strcmp(s, "both");
    FUZZ_CHECK((parse_mode(s, want, &canonical) == 0) == valid);
    if (valid)
        FUZZ_CHECK(canonical && (want[REG_L] || want[REG_G]));
}

int fuzz_base64(const uint8_t *data, size_t size)
{
    check_mode(data, size);
    size_t n = 0;
    uint8_t *out = base64_decode((const char *)data, size, &n);
    if (!out)
        return 0;
    FUZZ_CHECK(n <= size / 4 * 3 + 3);
    char *again = base64_encode(out, n);
    size_t m = 0;
    uint8_t *back = again ? base64_decode(again, strlen(again), &m) : NULL;
    if (again)
        FUZZ_CHECK(back && m == n && !memcmp(back, out, n));
    free(back);
    free(again);
    free(out);
    return 0;
}

FUZZ_ENTRY(fuzz_base64)
