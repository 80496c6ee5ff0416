/* Internal to the CPU backend. */
#ifndef HADM_OPS_CPU_H
#define HADM_OPS_CPU_H
#include "ops/ops.h"

/* Applies the context's thread count to the calling thread's OpenMP teams. */
void ops_ctx_enter(ops_ctx *c);

/* The context's buffer for operands converted to bf16/s8 (grown on demand,
 * returned by ops_scratch_release); NULL when out of memory. */
void *ops_lowp_buffer(ops_ctx *c, size_t bytes);

/* Row conversions (lowp.c), threaded over rows: x is rows x n with stride ldx,
 * the output dense rows x n. */
void ops_rows_to_bf16(ops_ctx *c, int64_t rows, int n, const float *x, int64_t ldx, uint16_t *y);
float ops_rows_absmax(ops_ctx *c, int64_t rows, int n, const float *x, int64_t ldx);
void ops_rows_to_s8(ops_ctx *c, int64_t rows, int n, const float *x, int64_t ldx, float inv_scale,
                    int8_t *y);
/* Softmax of each row (as ops_softmax_rows) written as bf16 to y (stride ldy). */
void ops_softmax_rows_bf16(ops_ctx *c, int64_t rows, int n, const float *x, int64_t ldx, uint16_t *y,
                           int64_t ldy);

#endif
