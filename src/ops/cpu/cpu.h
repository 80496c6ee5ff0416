/* Internal to the CPU backend. */
#ifndef HADM_OPS_CPU_H
#define HADM_OPS_CPU_H
#include "ops/ops.h"

/* Below this many elements, row kernels run on one thread: starting the
 * others costs more than they save. */
#define OPS_PAR_MIN 32768

/* The vector exp of kernels.c (exp8, AVX2) and softmax512.c (exp16): x is
 * clamped to [EXP_MIN, EXP_MAX] so 2^n stays a normal exponent, split as
 * x = n ln2 + r (ln2 in two parts, |r| <= ln2/2), e^r by its degree-7
 * Taylor series (Horner, highest term first; truncation < 5e-9 relative). */
#define OPS_EXP_MIN (-87.0f)
#define OPS_EXP_MAX 88.0f
#define OPS_EXP_LOG2E 1.44269504088896341f
#define OPS_EXP_LN2_HI 0.693145751953125f
#define OPS_EXP_LN2_LO 1.428606765330187e-06f
static const float ops_exp_taylor[8] = {1.0f / 5040, 1.0f / 720, 1.0f / 120, 1.0f / 24,
                                        1.0f / 6,    0.5f,        1.0f,        1.0f};

/* Applies the context's thread count to the calling thread's OpenMP teams. */
void ops_ctx_enter(ops_ctx *c);

/* The context's buffer for operands converted to bf16/s8 (grown on demand,
 * returned by ops_scratch_release); NULL when out of memory. */
void *ops_lowp_buffer(ops_ctx *c, size_t bytes);

/* Row conversions (lowp.c), threaded over rows: x is rows x n with stride ldx,
 * the output dense rows x n. */
void ops_rows_to_bf16(ops_ctx *c, int64_t rows, int n, const float *x, int64_t ldx, uint16_t *y);
/* One row of n values as u8: x = scale (y - zero), levels + 1 steps spanning
 * the row's range and 0 (so 0 is exact). */
void ops_row_to_u8(const float *x, int n, int levels, uint8_t *y, float *scale, int32_t *zero);
/* Its three steps, for rows whose range is known from their parts
 * (conv_int8.c): the row's min and max, widened to include 0; the scale and
 * zero point for that range; the values as u8 with them. */
void ops_row_range(const float *x, int n, float *lo, float *hi);
void ops_u8_params(float lo, float hi, int levels, float *scale, int32_t *zero);
void ops_quantize_u8(const float *x, int n, float scale, int32_t zero, int levels, uint8_t *y);
/* One row of n values as s8 on its own symmetric range (x = scale y; scale
 * 1 for an all-zero row), with the sum of its s8 values. */
void ops_row_to_s8(const float *x, int n, int8_t *y, float *scale, int32_t *sum);
/* u8 with a scale and zero point per row (x = scale[r] (y - zero[r])), on
 * levels + 1 steps (255 or 127) spanning the row's range and 0. */
void ops_rows_to_u8(ops_ctx *c, int64_t rows, int n, const float *x, int64_t ldx, int levels, uint8_t *y,
                    float *scale, int32_t *zero);
/* C[m][n] (+)= row_scale[m] col_scale[n] (acc[m][n] - row_zero[m] colsum[n]) + bias[n];
 * acc may be C itself (same stride) when not accumulating. */
void ops_int8_epilogue(ops_ctx *c, int M, int N, const int32_t *acc, int64_t ldacc, const float *row_scale,
                       const int32_t *row_zero, const float *col_scale, const int32_t *colsum,
                       const float *bias, float *C, int64_t ldc, int accumulate);
/* The SwiGLU MLP's middle from int8 sums, row by row while the row is in
 * L1: h = the epilogue above over 2F columns (in acc's own memory, which it
 * overwrites), then C[m] = LayerNorm(silu(h[:F]) * h[F:]) with g, b, eps. The
 * same row kernels as the unfused ops, so the result is identical. */
void ops_int8_swiglu_ln(ops_ctx *c, int M, int F, int32_t *acc, int64_t ldacc, const float *row_scale,
                        const int32_t *row_zero, const float *col_scale, const int32_t *colsum,
                        const float *bias, const float *g, const float *b, float eps, float *C, int64_t ldc);
void ops_silu_mul_row(float *a, const float *b, int n);
void ops_layernorm_row(const float *x, int n, const float *g, const float *b, float eps, float *y);
/* Activation levels for u8 operands of oneDNN's u8 x s8 kernels: 255 with
 * VNNI; 127 without, where pairs of products are summed in int16. */
int ops_u8_levels(const ops_ctx *c);
/* int8 convolution (conv_int8.c): im2col rows quantised one by one, then the
 * int8 matmul; used by ops_conv2d in an S8 context. */
hadm_status cpu_conv_int8(ops_ctx *c, const ops_conv *p, hadm_error *err);
/* n values of type t as f32: w itself when it is f32 (*owned = NULL), else
 * a malloc'd widened copy, also in *owned for the caller to free (a bf16/f16
 * weight read in place, widened for one use). NULL when out of memory. */
const float *ops_as_f32(const void *w, ops_src_type t, size_t n, float **owned);
/* Elements B spans: [N][ldb] rows (trans_b) or [K][ldb]. */
static inline size_t ops_gemm_b_elems(const ops_gemm *g)
{
    return g->trans_b ? (size_t)(g->N - 1) * g->ldb + g->K : (size_t)(g->K - 1) * g->ldb + g->N;
}
/* A gemm whose B is a weight (b_weight) in an S8 context: B packed as int8
 * once and kept, A quantised per row (conv_int8.c). */
hadm_status cpu_matmul_weight_s8(ops_ctx *c, const ops_gemm *g, hadm_error *err);
/* A second grown-on-demand buffer, for convolution operands. */
void *ops_conv_buffer(ops_ctx *c, size_t bytes);
/* Unnormalised softmax of each row: exp(x - max(x)) back into x, or as bf16
 * into y (stride ldy) when y is not NULL; 1 / sum of the row in inv_sum[r]. */
void ops_softmax_rows_unnorm(ops_ctx *c, int64_t rows, int n, float *x, int64_t ldx, uint16_t *y,
                             int64_t ldy, float *inv_sum);
/* The same (f32 output only) with AVX-512 (softmax512.c), where the CPU has it. */
int ops_have_avx512(void);
/* For tests: take the AVX2 paths even on a CPU with AVX-512 (off = 1), or
 * detect again (off = 0). */
void ops_test_avx512_off(int off);
void ops_softmax_rows_unnorm512(ops_ctx *c, int64_t rows, int n, float *x, int64_t ldx, float *inv_sum);
void ops_softmax_row_unnorm512(float *x, int n, float *inv_sum);
/* The softmax of rows of s32 sums from u8 x s8 (Q times Kᵀ), as u8
 * probabilities for the int8 P·V. Row r belongs to head h = r / rows_per_head
 * and its scores, in base 2, are
 *   score[r][j] = row_scale[r] kscale[h][j] (x[r][j] - row_zero[r] ksum[h][j])
 * given as kscale and kss = kscale ksum ([heads][n]: each key's scale, and
 * its scale times the sum of its s8 values); then
 * p[r][j] = round(levels 2^(score - max)) and psum[r] = sum over j of
 * p[r][j], the divisor that makes the rounded probabilities sum to 1. */
void ops_softmax2_rows_s32_u8(ops_ctx *c, int64_t rows, int n, int32_t *x, int64_t ldx, int rows_per_head,
                              const float *row_scale, const int32_t *row_zero, const float *kscale,
                              const float *kss, int levels, uint8_t *p, int64_t ldp, int32_t *psum);
int32_t ops_softmax2_row_s32_u8_512(const int32_t *x, int n, float a, float b, const float *ks, const float *kss,
                                    int levels, uint8_t *q);

#endif
