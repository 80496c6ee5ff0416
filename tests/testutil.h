/* A small test harness: CHECK records a failure and goes on; each program
 * ends with test_finish(), which prints "N passed, N failed" and returns the
 * exit code. */
#ifndef HADM_TESTUTIL_H
#define HADM_TESTUTIL_H
#include <stdio.h>

extern int tu_passed, tu_failed;

#define CHECK(cond, ...)                                                          \
    do {                                                                          \
        if (cond) {                                                               \
            tu_passed++;                                                          \
        } else {                                                                  \
            tu_failed++;                                                          \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);       \
            fprintf(stderr, __VA_ARGS__);                                         \
            fputc('\n', stderr);                                                  \
        }                                                                         \
    } while (0)

int test_finish(void);
/* $HADM_GOLDEN_DIR or ../shared/golden */
const char *test_golden_dir(void);
/* Reads a whole file (NUL-terminated); NULL on error. */
unsigned char *test_read_file(const char *path, size_t *len);
/* A fresh temporary directory for this test program. */
const char *test_tmpdir(void);

#endif
