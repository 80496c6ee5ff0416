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

/* levels 2^u for u <= 0: u = k + f with |f| <= 1/2, levels 2^f by its
 * degree-4 Taylor series (relative error < 5e-5: a result needs only to
 * land on the right integer, and this moves it by 0.013 at most), times 2^k
 * by scalef. Below 2^-30 everything rounds to 0 anyway. */
AVX512 static inline __m512 pow2_levels16(__m512 u, const float c[5])
{
    u = _mm512_max_ps(u, _mm512_set1_ps(-30.0f));
    __m512 k = _mm512_roundscale_ps(u, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 f = _mm512_sub_ps(u, k), p = _mm512_set1_ps(c[4]);
    for (int i = 3; i >= 0; i--)
        p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(c[i]));
    return _mm512_scalef_ps(p, k);
}

/* score2[j] = a ks[j] x[j] - b kss[j], for lanes in mask */
AVX512 static inline __m512 score2_16(const int32_t *x, const float *ks, const float *kss, __m512 a, __m512 b,
                                      __mmask16 mask)
{
    __m512 xf = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_maskz_loadu_epi32(mask, x)),
                              _mm512_maskz_loadu_ps(mask, ks));
    return _mm512_fnmadd_ps(b, _mm512_maskz_loadu_ps(mask, kss), _mm512_mul_ps(a, xf));
}

/* One row of ops_softmax2_rows_s32_u8: the scores' max in one pass, then the
 * scores again (cheaper than storing them) and levels 2^(score - max)
 * straight from the registers to u8. Returns the sum of q. */
AVX512 int32_t ops_softmax2_row_s32_u8_512(const int32_t *x, int n, float a, float b, const float *ks,
                                           const float *kss, int levels, uint8_t *q)
{
    __m512 va = _mm512_set1_ps(a), vb = _mm512_set1_ps(b), vmax = _mm512_set1_ps(-INFINITY);
    int i = 0;
    for (; i + 16 <= n; i += 16)
        vmax = _mm512_max_ps(vmax, score2_16(x + i, ks + i, kss + i, va, vb, 0xffff));
    __mmask16 tail = (__mmask16)((1u << (n - i)) - 1);
    if (tail)
        vmax = _mm512_mask_max_ps(vmax, tail, vmax, score2_16(x + i, ks + i, kss + i, va, vb, tail));
    __m512 vm = _mm512_set1_ps(_mm512_reduce_max_ps(vmax));
    const float L = (float)levels, c[5] = {L, L * 0.693147181f, L * 0.240226507f, L * 0.0555041087f,
                                           L * 0.00961812911f};   /* L ln2^n / n! */
    __m512i acc = _mm512_setzero_si512();
    for (i = 0; i + 16 <= n; i += 16) {
        __m512 e = pow2_levels16(_mm512_sub_ps(score2_16(x + i, ks + i, kss + i, va, vb, 0xffff), vm), c);
        __m512i v = _mm512_cvtps_epi32(e);
        acc = _mm512_add_epi32(acc, v);
        _mm_storeu_si128((__m128i *)(q + i), _mm512_cvtusepi32_epi8(v));
    }
    if (tail) {
        __m512 e = pow2_levels16(_mm512_sub_ps(score2_16(x + i, ks + i, kss + i, va, vb, tail), vm), c);
        __m512i v = _mm512_maskz_mov_epi32(tail, _mm512_cvtps_epi32(e));
        acc = _mm512_add_epi32(acc, v);
        uint8_t last[16];   /* a masked byte store needs AVX-512BW */
        _mm_storeu_si128((__m128i *)last, _mm512_cvtusepi32_epi8(v));
        memcpy(q + i, last, (size_t)(n - i));
    }
    return _mm512_reduce_add_epi32(acc);
}

static int have_avx512 = -1;

int ops_have_avx512(void)
{
    if (have_avx512 < 0) {
        __builtin_cpu_init();
        have_avx512 = __builtin_cpu_supports("avx512f") != 0;
    }
    return have_avx512;
}

void ops_test_avx512_off(int off)
{
    have_avx512 = off ? 0 : -1;
}

void ops_softmax_rows_unnorm512(ops_ctx *c, int64_t rows, int n, float *x, int64_t ldx, float *inv_sum)
{
    ops_ctx_enter(c);
#pragma omp parallel for schedule(static) if (rows * n > OPS_PAR_MIN)
    for (int64_t r = 0; r < rows; r++)
        ops_softmax_row_unnorm512(x + r * ldx, n, &inv_sum[r]);
}
