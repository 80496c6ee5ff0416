/* The attention softmax (unnormalised: exp(x - max) and 1/sum) with 512-bit
 * vectors, for CPUs that have AVX-512; the build floor is AVX2, so this file
 * is compiled for AVX-512 function by function and chosen at run time. On
 * the 4096-key rows of global attention it is a fifth of the attention's
 * time in the AVX2 version. Same exp as kernels.c's exp8 (constants in
 * cpu.h), 16 lanes at a time. */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "ops/cpu/cpu.h"

#define AVX512 __attribute__((target("avx512f")))

AVX512 static inline __m512 exp16(__m512 x)
{
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(OPS_EXP_MIN)), _mm512_set1_ps(OPS_EXP_MAX));
    __m512 kf = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(OPS_EXP_LOG2E)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(kf, _mm512_set1_ps(OPS_EXP_LN2_HI), x);
    r = _mm512_fnmadd_ps(kf, _mm512_set1_ps(OPS_EXP_LN2_LO), r);
    __m512 p = _mm512_set1_ps(ops_exp_taylor[0]);
    for (int i = 1; i < 8; i++)
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(ops_exp_taylor[i]));
    __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(kf), _mm512_set1_epi32(127)), 23);
    return _mm512_mul_ps(p, _mm512_castsi512_ps(e));
}

AVX512 void ops_softmax_row_unnorm512(float *x, int n, float *inv_sum)
{
    __m512 vmax = _mm512_set1_ps(-INFINITY);
    int i = 0;
    for (; i + 16 <= n; i += 16)
        vmax = _mm512_max_ps(vmax, _mm512_loadu_ps(x + i));
    __mmask16 tail = (__mmask16)((1u << (n - i)) - 1);
    vmax = _mm512_max_ps(vmax, _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), tail, x + i));
    __m512 vm = _mm512_set1_ps(_mm512_reduce_max_ps(vmax)), vsum = _mm512_setzero_ps();
    for (i = 0; i + 16 <= n; i += 16) {
        __m512 e = exp16(_mm512_sub_ps(_mm512_loadu_ps(x + i), vm));
        _mm512_storeu_ps(x + i, e);
        vsum = _mm512_add_ps(vsum, e);
    }
    if (tail) {
        __m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(tail, x + i), vm));
        e = _mm512_maskz_mov_ps(tail, e);
        _mm512_mask_storeu_ps(x + i, tail, e);
        vsum = _mm512_add_ps(vsum, e);
    }
    *inv_sum = (float)(1.0 / (double)_mm512_reduce_add_ps(vsum));
}

/* exp for the u8 probabilities: x <= 0, and a result needs only to land on
 * the right step of 1/255, so the Taylor series stops at degree 4 (relative
 * error < 5e-5, a hundredth of a step). */
AVX512 static inline __m512 exp16_u8(__m512 x)
{
    x = _mm512_max_ps(x, _mm512_set1_ps(OPS_EXP_MIN));
    __m512 kf = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(OPS_EXP_LOG2E)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(kf, _mm512_set1_ps(OPS_EXP_LN2_HI), x);
    __m512 p = _mm512_set1_ps(ops_exp_taylor[3]);
    for (int i = 4; i < 8; i++)
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(ops_exp_taylor[i]));
    __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(kf), _mm512_set1_epi32(127)), 23);
    return _mm512_mul_ps(p, _mm512_castsi512_ps(e));
}

/* score[j] = rs cs[j] (x[j] - rz colsum[j]) for lanes in mask */
AVX512 static inline __m512 score16(const int32_t *x, const float *cs, const int32_t *colsum, __m512 rs,
                                    __m512i rz, __mmask16 mask)
{
    __m512i d = _mm512_sub_epi32(_mm512_maskz_loadu_epi32(mask, x),
                                 _mm512_mullo_epi32(rz, _mm512_maskz_loadu_epi32(mask, colsum)));
    return _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(d), rs), _mm512_maskz_loadu_ps(mask, cs));
}

/* One row of ops_softmax_rows_s32_u8: the scores are made and their max
 * taken in one pass (stored as f32 over the sums, in L1), then exp(score -
 * max) goes straight from the registers to u8. Returns the sum of q. */
AVX512 int32_t ops_softmax_row_s32_u8_512(int32_t *x, int n, float row_scale, int32_t row_zero, const float *cs,
                                          const int32_t *colsum, int levels, uint8_t *q)
{
    __m512 rs = _mm512_set1_ps(row_scale), vmax = _mm512_set1_ps(-INFINITY);
    __m512i rz = _mm512_set1_epi32(row_zero);
    float *f = (float *)x;
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 v = score16(x + i, cs + i, colsum + i, rs, rz, 0xffff);
        _mm512_storeu_ps(f + i, v);
        vmax = _mm512_max_ps(vmax, v);
    }
    __mmask16 tail = (__mmask16)((1u << (n - i)) - 1);
    if (tail) {
        __m512 v = score16(x + i, cs + i, colsum + i, rs, rz, tail);
        _mm512_mask_storeu_ps(f + i, tail, v);
        vmax = _mm512_mask_max_ps(vmax, tail, vmax, v);
    }
    __m512 vm = _mm512_set1_ps(_mm512_reduce_max_ps(vmax)), mul = _mm512_set1_ps((float)levels);
    __m512i acc = _mm512_setzero_si512();
    for (i = 0; i + 16 <= n; i += 16) {
        __m512i v = _mm512_cvtps_epi32(_mm512_mul_ps(exp16_u8(_mm512_sub_ps(_mm512_loadu_ps(f + i), vm)), mul));
        acc = _mm512_add_epi32(acc, v);
        _mm_storeu_si128((__m128i *)(q + i), _mm512_cvtusepi32_epi8(v));
    }
    if (tail) {
        __m512 e = exp16_u8(_mm512_sub_ps(_mm512_maskz_loadu_ps(tail, f + i), vm));
        __m512i v = _mm512_maskz_mov_epi32(tail, _mm512_cvtps_epi32(_mm512_mul_ps(e, mul)));
        acc = _mm512_add_epi32(acc, v);
        uint8_t last[16];   /* a masked byte store needs AVX-512BW */
        _mm_storeu_si128((__m128i *)last, _mm512_cvtusepi32_epi8(v));
        memcpy(q + i, last, (size_t)(n - i));
    }
    return _mm512_reduce_add_epi32(acc);
}

int ops_have_avx512(void)
{
    static int have = -1;
    if (have < 0) {
        __builtin_cpu_init();
        have = __builtin_cpu_supports("avx512f") != 0;
    }
    return have;
}

void ops_softmax_rows_unnorm512(ops_ctx *c, int64_t rows, int n, float *x, int64_t ldx, float *inv_sum)
{
    ops_ctx_enter(c);
#pragma omp parallel for schedule(static) if (rows * n > OPS_PAR_MIN)
    for (int64_t r = 0; r < rows; r++)
        ops_softmax_row_unnorm512(x + r * ldx, n, &inv_sum[r]);
}
