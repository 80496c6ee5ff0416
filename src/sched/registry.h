/* The model registry: one slot per HADM variant, each with a load state
 * (unconfigured, unloaded -> loading -> ready | failed with the error kept).
 * Loads run on background threads, so both models load in parallel and no
 * caller blocks; running work holds a counted reference, so an unload never
 * closes a model under a detect call. */
#ifndef HADM_SCHED_REGISTRY_H
#define HADM_SCHED_REGISTRY_H

#include <stdint.h>

#include "hadm.h"

enum { REG_L = 0, REG_G = 1, REG_MODELS = 2 };

typedef enum {
    MODEL_UNCONFIGURED = 0, /* no source given: requests for it get 503 */
    MODEL_UNLOADED,
    MODEL_LOADING,
    MODEL_READY,
    MODEL_FAILED,
} model_state;

/* Builds a model in memory (demo models, tests) instead of opening a file. */
typedef hadm_status (*model_build_fn)(void *user, char variant, const hadm_open_options *opt,
                                      hadm_model **out, hadm_error *err);

typedef struct {
    const char *path;      /* file to open; NULL to use build */
    model_build_fn build;
    void *build_user;
    const char *label;     /* shown in status and logs; NULL = path */
} model_source;

typedef struct {
    model_state state;
    char source[1024];
    char error[512];        /* why the last load failed ("" otherwise) */
    double load_seconds;    /* last finished load, all phases */
    double open_seconds;    /* open + validate + map + prepare (one engine call) */
    double warmup_seconds;
    double loading_for;     /* seconds since the load in progress began */
    int64_t params;
    int num_classes, input_size;
    unsigned loads_ok, loads_failed, unloads;
    int refs;               /* holds by running work */
} model_info;

typedef struct registry registry;
typedef struct model_ref model_ref;

typedef struct {
    hadm_open_options open;
    int warmup;             /* run one detect on a grey image after loading */
    int load_delay_ms;      /* test knob (HADM_TEST_LOAD_DELAY_MS): slow every load */
} registry_config;

registry *registry_new(const registry_config *cfg);
/* Waits for loads in progress, then closes every model. */
void registry_free(registry *r);

/* Names: "hadm-l" / "hadm-g" (URLs, metrics), "HADM-L" / "HADM-G" (messages). */
const char *registry_name(int idx);
const char *registry_variant(int idx);
int registry_index(const char *name); /* -1 if unknown */

void registry_configure(registry *r, int idx, const model_source *src);

/* Starts a background load unless the model is loading or ready. With wait,
 * blocks until that load has finished and returns its outcome. */
hadm_status registry_load(registry *r, int idx, int wait, hadm_error *err);
/* Drops the model (closed once running work releases it). During a load, the
 * loaded model is discarded when the load finishes. */
hadm_status registry_unload(registry *r, int idx, hadm_error *err);

model_state registry_state(registry *r, int idx);
const char *model_state_name(model_state s);
void registry_info(registry *r, int idx, model_info *out);
/* One-line reason a model cannot serve now (for 503 bodies). */
void registry_unavailable_reason(registry *r, int idx, char *buf, size_t cap);

/* A counted hold on a ready model, or NULL when it is not ready. */
model_ref *registry_acquire(registry *r, int idx);
hadm_model *model_ref_get(model_ref *ref);
/* One more hold on a ref the caller already holds (results keep their model's
 * class names alive until they are freed). */
void registry_retain(registry *r, model_ref *ref);
void registry_release(registry *r, model_ref *ref);

/* Blocks while the model is loading, at most until `until` (hadm_now() clock). */
void registry_wait_loaded(registry *r, int idx, double until);

#endif
