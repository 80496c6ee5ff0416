#include "testutil.h"

#include <stdlib.h>
#include <string.h>

int tu_passed, tu_failed;

static char tmp_root[256];

int test_finish(void)
{
    if (tmp_root[0]) {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_root);
        if (system(cmd) != 0)
            fprintf(stderr, "warning: could not remove %s\n", tmp_root);
    }
    printf("%d passed, %d failed\n", tu_passed, tu_failed);
    return tu_failed ? 1 : 0;
}

const char *test_golden_dir(void)
{
    const char *d = getenv("HADM_GOLDEN_DIR");
    return d && *d ? d : "../shared/golden";
}

unsigned char *test_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) {
        buf[n] = 0;
        if (len)
            *len = (size_t)n;
    }
    return buf;
}

const char *test_tmpdir(void)
{
    if (!tmp_root[0]) {
        snprintf(tmp_root, sizeof tmp_root, "/tmp/hadm-test-XXXXXX");
        if (!mkdtemp(tmp_root)) {
            tmp_root[0] = 0;
            return "/tmp";
        }
    }
    return tmp_root;
}
