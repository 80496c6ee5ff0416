/* The fuzz targets. Each fuzz_<name>.c defines int fuzz_<name>(data, size);
 * built with HADM_LIBFUZZER (the fuzz build, see fuzz/CMakeLists.txt) it also
 * defines libFuzzer's entry point, and tests/test_fuzz_regress.c calls the
 * same functions on every committed input, so a past finding is replayed in
 * the ordinary (and the sanitizer) test run.
 *
 * A target aborts when an invariant of the code under test breaks: to the
 * fuzzer that is a finding like a crash. */
#ifndef HADM_FUZZ_H
#define HADM_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

typedef int (*fuzz_fn)(const uint8_t *data, size_t size);

int fuzz_image(const uint8_t *data, size_t size);
int fuzz_exif(const uint8_t *data, size_t size);
int fuzz_base64(const uint8_t *data, size_t size);
int fuzz_safetensors(const uint8_t *data, size_t size);
int fuzz_pth(const uint8_t *data, size_t size);
int fuzz_request(const uint8_t *data, size_t size);
int fuzz_kserve(const uint8_t *data, size_t size);

#ifdef HADM_LIBFUZZER
#define FUZZ_ENTRY(fn)                                                     \
    int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);          \
    int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fn(data, size); }
#else
#define FUZZ_ENTRY(fn)
#endif

#define FUZZ_CHECK(cond)                                                                   \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            dprintf(2, "fuzz invariant broken: %s (%s:%d)\n", #cond, __FILE__, __LINE__);    \
            abort();                                                                       \
        }                                                                                  \
    } while (0)

#endif
