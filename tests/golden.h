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
/* Runs fn on every case found (a failure if none is), freeing each after. */
void golden_for_each(void (*fn)(const golden_case *c));
/* Opens the case's model.safetensors; NULL (and a recorded failure) if it can't. */
hadm_model *golden_open_model(const golden_case *c);
/* Tensor as float64 (any float/int dtype); NULL if missing. Caller frees. */
double *golden_tensor(const golden_case *c, const char *name, int64_t *numel, const st_tensor **info);

/* The engine's trace hook collecting every traced tensor, converted to the
 * golden layout (NHWC maps become NCHW) and to double. */
#include "engine/engine.h"

#define TRACE_STORE_MAX 400

typedef struct {
    char name[80];
    int is_int, ndim;
    int64_t shape[4], rows, numel;
    double *data;         /* in the golden tensor's layout */
} traced;

typedef struct {
    traced t[TRACE_STORE_MAX];
    int n;
} trace_store;

void trace_store_on_tensor(void *user, const char *name, trace_layout layout, const void *data,
                           int is_int, int ndim, const int64_t *shape);
/* The latest tensor traced under `name`, or NULL. */
const traced *trace_store_find(const trace_store *st, const char *name);
void trace_store_clear(trace_store *st);

#endif
