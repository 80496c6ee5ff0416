/* The engine's hooks into the CUDA forward (engine/cuda, built with
 * -DHADM_CUDA=ON). Without it, cuda_hooks.c answers that there is no CUDA
 * backend, so model.c and api.c need no #ifdef. */
#ifndef HADM_ENGINE_CUDA_HOOKS_H
#define HADM_ENGINE_CUDA_HOOKS_H

#include "engine/engine.h"

int cuda_backend_built(void);

/* Uploads the model's weights to opt->device_index after checking the memory
 * plan against opt->gpu_memory_fraction; sets m->cuda. */
hadm_status cuda_model_attach(struct hadm_model *m, const hadm_open_options *opt, hadm_error *err);
void cuda_model_detach(struct hadm_model *m);

/* One preprocessed image for the GPU. */
typedef struct {
    const float *chw;     /* [3][S][S] */
    image_geom g;
    hadm_result *res;     /* filled: dets, count, timings.backbone (GPU time), gflop */
    hadm_error err;
    hadm_status st;
} cuda_job;

/* What /api/diagnostics reports per GPU in use. */
typedef struct {
    int index;
    char name[96];
    size_t total_bytes, free_bytes, reserved_bytes;   /* reserved: the plans of this process's models */
} cuda_gpu_status;

/* The GPUs this process's models are on, up to max; -1 when the build has no
 * CUDA backend. Touches the CUDA runtime only when a model is on a GPU (so
 * a CPU server never creates a CUDA context by answering diagnostics). */
int cuda_gpu_status_list(cuda_gpu_status *out, int max);

/* Runs n <= CUDA_MAX_BATCH images as one batch; each job's st says how it went. */
void cuda_detect_jobs(struct hadm_model *m, cuda_job *jobs, int n, const hadm_detect_options *opt);

#endif
