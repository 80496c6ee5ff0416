/* The safetensors reader, then (for files it accepts) model validation as
 * hadm_model_open does it on a real file: the bytes go to a memfd opened by
 * its /proc path, so the mmap path of st_open is the one exercised. Every
 * tensor an accepted file lists must lie inside the data section with the
 * size its dtype and shape give. */
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz.h"
#include "hadm.h"
#include "io/safetensors.h"

static volatile uint8_t touched;

static void check_tensors(const st_file *f, const uint8_t *data, size_t size)
{
    uint8_t sink = 0;
    for (int i = 0; i < st_count(f); i++) {
        const st_tensor *t = st_at(f, i);
        const uint8_t *p = t->data;
        FUZZ_CHECK(t->name && st_find(f, t->name));
        FUZZ_CHECK(t->ndim >= 0 && t->ndim <= ST_MAX_DIMS);
        FUZZ_CHECK(t->nbytes == (size_t)t->numel * st_dtype_size(t->dtype));
        FUZZ_CHECK(p >= data && t->nbytes <= size && (size_t)(p - data) <= size - t->nbytes);
        if (t->nbytes)
            sink ^= p[0] ^ p[t->nbytes - 1];
    }
    touched = sink;
}

static void open_as_model(const uint8_t *data, size_t size)
{
    static int fd = -1;
    if (fd < 0 && (fd = memfd_create("fuzz-model", MFD_CLOEXEC)) < 0)
        return;
    if (ftruncate(fd, 0) || pwrite(fd, data, size, 0) != (ssize_t)size)
        return;
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    hadm_open_options opt = {.threads = 1};
    hadm_model *m = NULL;
    hadm_error err = {0};
    hadm_status s = hadm_model_open(path, &opt, &m, &err);
    if (s == HADM_OK) {
        FUZZ_CHECK(m && hadm_model_num_classes(m) > 0);
        for (int k = 0; k < hadm_model_num_classes(m); k++)
            FUZZ_CHECK(hadm_model_class_name(m, k));
        hadm_model_close(m);
    } else {
        FUZZ_CHECK(!m && err.msg[0]);
    }
}

int fuzz_safetensors(const uint8_t *data, size_t size)
{
    st_file *f = NULL;
    hadm_error err = {0};
    if (st_open_buffer(data, size, "<fuzz>", &f, &err) != HADM_OK) {
        FUZZ_CHECK(!f && err.msg[0]);
        return 0;
    }
    check_tensors(f, data, size);
    const char *format = st_meta(f, "format");
    int model = format && !strcmp(format, "hadm/1");
    st_close(f);
    if (model)
        open_as_model(data, size);
    return 0;
}

FUZZ_ENTRY(fuzz_safetensors)
