/* Internal to the CUDA backend: what the host runtime (cuda_rt.c) and the
 * kernel files share. */
#ifndef HADM_OPS_CUDA_INTERNAL_H
#define HADM_OPS_CUDA_INTERNAL_H

#include "ops/cuda/cuda_ops.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One-time kernel attributes (shared-memory opt-in of the flash kernel);
 * idempotent, called when a context is made, never during a capture. */
hadm_status cuda_kernels_init(hadm_error *err);
/* The tiled CUDA-core GEMM behind cuda_matmul_simple. */
void cuda_gemm_simple_launch(cuda_dev *d, const cuda_gemm *g);

#ifdef __cplusplus
}
#endif
#endif
