/* Shared by the golden-case tests: enumerate cases, read expected tensors. */
#ifndef HADM_TEST_GOLDEN_H
#define HADM_TEST_GOLDEN_H

#include "io/safetensors.h"

typedef struct {
    char dir[1024];
    char name[256];
    char image[1536];       /* path of the input image */
    char variant[16];
    int orig_h, orig_w, resized_h, resized_w;
    st_file *expected;
    char *json;            /* expected.json text */
} golden_case;

/* Fills cases (up to max) from test_golden_dir(), sorted by name; returns the
 * count, or -1 if the directory cannot be read. Failures to read a case are
 * reported through CHECK and the case is left out. */
int golden_cases(golden_case *cases, int max);
void golden_case_free(golden_case *c);
/* Tensor as float64 (any float/int dtype); NULL if missing. Caller frees. */
double *golden_tensor(const golden_case *c, const char *name, int64_t *numel, const st_tensor **info);

#endif
