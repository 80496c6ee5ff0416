/* Row and elementwise kernels: memory-bound, so they are simple loops the
 * compiler vectorises, split across the context's threads. Statistics and
 * softmax sums are accumulated in double: a 2730-wide LayerNorm or a
 * 4096-key softmax in float loses digits the golden tolerance needs. */
#include <immintrin.h>
#include <math.h>
#include <omp.h>

#include "ops/cpu/cpu.h"

#define PAR_MIN OPS_PAR_MIN

/* exp(x) on 8 floats (libm's expf does not vectorise): x = n ln2 + r with
 * |r| <= ln2/2, e^r by its degree-7 Taylor series (truncation < 5e-9
 * relative), 2^n built in the exponent bits. Inputs are clamped so n stays
 * a normal exponent. */
static inline __m256 exp8(__m256 x)
{
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(OPS_EXP_MIN)), _mm256_set1_ps(OPS_EXP_MAX));
    __m256 kf = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(OPS_EXP_LOG2E)),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(kf, _mm256_set1_ps(OPS_EXP_LN2_HI), x);
    r = _mm256_fnmadd_ps(kf, _mm256_set1_ps(OPS_EXP_LN2_LO), r);
    __m256 p = _mm256_set1_ps(ops_exp_taylor[0]);
    for (int i = 1; i < 8; i++)
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(ops_exp_taylor[i]));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(kf), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

void ops_layernorm_row(const float *xr, int n, const float *g, const float *b, float eps, float *yr)
{
    double sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int i = 0; i < n; i++)
        sum += xr[i];
    float mean = (float)(sum / n);
    double var = 0;
#pragma omp simd reduction(+ : var)
    for (int i = 0; i < n; i++) {
        float d = xr[i] - mean;
        var += (double)d * d;
    }
    float inv = (float)(1.0 / sqrt(var / n + (double)eps));
    for (int i = 0; i < n; i++)
        yr[i] = (xr[i] - mean) * inv * g[i] + b[i];
}

void ops_layernorm(ops_ctx *c, int64_t rows, int n, const float *x, int64_t ldx, const float *g,
                   const float *b, float eps, float *y, int64_t ldy)
{
    ops_ctx_enter(c);
#pragma omp parallel for schedule(static) if (rows * n > PAR_MIN)
    for (int64_t r = 0; r < rows; r++)
        ops_layernorm_row(x + r * ldx, n, g, b, eps, y + r * ldy);
}

void ops_relu(ops_ctx *c, float *x, int64_t n)
{
    ops_ctx_enter(c);
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++)
        x[i] = x[i] > 0 ? x[i] : 0;
}

void ops_gelu_erf(ops_ctx *c, float *x, int64_t n)
{
    ops_ctx_enter(c);
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++)
        x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * (float)M_SQRT1_2));
}

void ops_silu_mul_row(float *ar, const float *br, int n)
{
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 x = _mm256_loadu_ps(ar + i);
        __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), x));
        __m256 s = _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
        _mm256_storeu_ps(ar + i, _mm256_mul_ps(s, _mm256_loadu_ps(br + i)));
    }
    for (; i < n; i++)
        ar[i] = ar[i] / (1.0f + expf(-ar[i])) * br[i];
}

void ops_silu_mul(ops_ctx *c, int64_t rows, int n, float *a, int64_t lda, const float *b, int64_t ldb)
{
    ops_ctx_enter(c);
#pragma omp parallel for schedule(static) if (rows * n > PAR_MIN)
    for (int64_t r = 0; r < rows; r++)
        ops_silu_mul_row(a + r * lda, b + r * ldb, n);
}

static float hsum8(__m256 v)
{
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    return _mm_cvtss_f32(_mm_add_ss(q, _mm_shuffle_ps(q, q, 1)));
}

static float hmax8(__m256 v)
{
    __m128 q = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    q = _mm_max_ps(q, _mm_movehl_ps(q, q));
    return _mm_cvtss_f32(_mm_max_ss(q, _mm_shuffle_ps(q, q, 1)));
}

static inline __m128i bf16x8(__m256 v)
{
    /* round to nearest even on the dropped 16 bits */
    __m256i u = _mm256_castps_si256(v);
    __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    u = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff))), 16);
    return _mm_packus_epi32(_mm256_castsi256_si128(u), _mm256_extracti128_si256(u, 1));
}

/* Max-subtracted softmax. Partial sums stay in 8 float lanes (each lane adds
 * n/8 values in [0, 1]), which keeps the error near 1e-7 for 4096 keys. The
 * result goes back to x, or as bf16 to y when y is not NULL. With inv_sum,
 * the row is left unnormalised (exp(x - max), the form attention wants: it
 * scales its 64-wide output rows instead of the 4096-wide probabilities)
 * and 1/sum is stored there. */
static void softmax_row(float *x, int n, uint16_t *y, float *inv_sum)
{
    int i = 0;
    __m256 vmax = _mm256_set1_ps(-INFINITY);
    for (; i + 8 <= n; i += 8)
        vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(x + i));
    float mx = hmax8(vmax);
    for (; i < n; i++)
        mx = x[i] > mx ? x[i] : mx;
    __m256 vsum = _mm256_setzero_ps(), vm = _mm256_set1_ps(mx);
    int direct = inv_sum && y;   /* the exponentials go straight out as bf16 */
    for (i = 0; i + 8 <= n; i += 8) {
        __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm));
        if (direct)
            _mm_storeu_si128((__m128i *)(y + i), bf16x8(e));
        else
            _mm256_storeu_ps(x + i, e);
        vsum = _mm256_add_ps(vsum, e);
    }
    double sum = hsum8(vsum);
    for (; i < n; i++) {
        float e = expf(x[i] - mx);
        if (direct)
            y[i] = ops_f32_to_bf16(e);
        else
            x[i] = e;
        sum += e;
    }
    if (inv_sum) {
        *inv_sum = (float)(1.0 / sum);
        return;
    }
    __m256 inv = _mm256_set1_ps((float)(1.0 / sum));
    for (i = 0; i + 8 <= n; i += 8) {
        __m256 p = _mm256_mul_ps(_mm256_loadu_ps(x + i), inv);
        if (y)
            _mm_storeu_si128((__m128i *)(y + i), bf16x8(p));
        else
            _mm256_storeu_ps(x + i, p);
    }
    for (; i < n; i++) {
        float p = x[i] * (float)(1.0 / sum);
        if (y)
            y[i] = ops_f32_to_bf16(p);
        else
            x[i] = p;
    }
}

void ops_softmax_rows(ops_ctx *c, int64_t rows, int n, float *x, int64_t ld)
{
    ops_ctx_enter(c);
#pragma omp parallel for schedule(static) if (rows * n > PAR_MIN)
    for (int64_t r = 0; r < rows; r++)
        softmax_row(x + r * ld, n, NULL, NULL);
}

void ops_softmax_rows_unnorm(ops_ctx *c, int64_t rows, int n, float *x, int64_t ldx, uint16_t *y,
                             int64_t ldy, float *inv_sum)
{
    if (!y && ops_have_avx512()) {
        ops_softmax_rows_unnorm512(c, rows, n, x, ldx, inv_sum);
        return;
    }
    ops_ctx_enter(c);
#pragma omp parallel for schedule(static) if (rows * n > PAR_MIN)
    for (int64_t r = 0; r < rows; r++)
        softmax_row(x + r * ldx, n, y ? y + r * ldy : NULL, &inv_sum[r]);
}

void ops_rows_to_bf16(ops_ctx *c, int64_t rows, int n, const float *x, int64_t ldx, uint16_t *y)
{
    ops_ctx_enter(c);
#pragma omp parallel for schedule(static) if (rows * n > PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * ldx;
        uint16_t *yr = y + r * (int64_t)n;
        int i = 0;
        for (; i + 8 <= n; i += 8)
            _mm_storeu_si128((__m128i *)(yr + i), bf16x8(_mm256_loadu_ps(xr + i)));
        for (; i < n; i++)
            yr[i] = ops_f32_to_bf16(xr[i]);
    }
}

static inline float hmin8(__m256 v)
{
    __m128 m = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_min_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_min_ss(m, _mm_movehdup_ps(m)));
}

/* One row's range, widened to include 0 so that zero (window padding, ReLU
 * output) is exact after quantisation. */
void ops_row_range(const float *x, int n, float *lo, float *hi)
{
    __m256 mn = _mm256_setzero_ps(), mx = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        mn = _mm256_min_ps(mn, v);
        mx = _mm256_max_ps(mx, v);
    }
    float l = hmin8(mn), h = hmax8(mx);
    for (; i < n; i++) {
        l = x[i] < l ? x[i] : l;
        h = x[i] > h ? x[i] : h;
    }
    *lo = l, *hi = h;
}

void ops_u8_params(float lo, float hi, int levels, float *scale, int32_t *zero)
{
    float s = hi > lo && isfinite(hi - lo) ? (hi - lo) / (float)levels : 1.0f;
    int32_t z = (int32_t)nearbyintf(-lo / s);
    *scale = s;
    *zero = z < 0 ? 0 : z > levels ? levels : z;
}

void ops_quantize_u8(const float *x, int n, float s, int32_t z, int levels, uint8_t *y)
{
    __m256 inv = _mm256_set1_ps(1.0f / s);
    __m256i zv = _mm256_set1_epi32(z), top = _mm256_set1_epi32(levels);
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        /* cvtps rounds to nearest even; the u8 pack saturates below 0 */
        __m256i a = _mm256_add_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i), inv)), zv);
        __m256i b = _mm256_add_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i + 8), inv)), zv);
        a = _mm256_min_epi32(a, top);
        b = _mm256_min_epi32(b, top);
        __m256i w = _mm256_permute4x64_epi64(_mm256_packs_epi32(a, b), 0xd8);
        __m128i q = _mm_packus_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
        _mm_storeu_si128((__m128i *)(y + i), q);
    }
    for (; i < n; i++) {
        float v = nearbyintf(x[i] / s) + (float)z;
        y[i] = (uint8_t)(v < 0 ? 0 : v > (float)levels ? levels : v);
    }
}

void ops_row_to_u8(const float *x, int n, int levels, uint8_t *y, float *scale, int32_t *zero)
{
    float lo, hi;
    ops_row_range(x, n, &lo, &hi);
    ops_u8_params(lo, hi, levels, scale, zero);
    ops_quantize_u8(x, n, *scale, *zero, levels, y);
}

void ops_row_to_s8(const float *x, int n, int8_t *y, float *scale, int32_t *sum)
{
    float lo, hi;
    ops_row_range(x, n, &lo, &hi);
    float mx = hi > -lo ? hi : -lo;
    float s = mx > 0 && isfinite(mx) ? mx / 127.0f : 1.0f;
    __m256 inv = _mm256_set1_ps(1.0f / s);
    __m256i lim = _mm256_set1_epi32(127), acc = _mm256_setzero_si256();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256i a = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i), inv));
        __m256i b = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i + 8), inv));
        a = _mm256_max_epi32(_mm256_min_epi32(a, lim), _mm256_sub_epi32(_mm256_setzero_si256(), lim));
        b = _mm256_max_epi32(_mm256_min_epi32(b, lim), _mm256_sub_epi32(_mm256_setzero_si256(), lim));
        acc = _mm256_add_epi32(acc, _mm256_add_epi32(a, b));
        __m256i w = _mm256_permute4x64_epi64(_mm256_packs_epi32(a, b), 0xd8);
        _mm_storeu_si128((__m128i *)(y + i), _mm_packs_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1)));
    }
    int32_t total = 0, lanes[8];
    _mm256_storeu_si256((__m256i *)lanes, acc);
    for (int l = 0; l < 8; l++)
        total += lanes[l];
    for (; i < n; i++) {
        float v = nearbyintf(x[i] * (1.0f / s));
        y[i] = (int8_t)(v > 127 ? 127 : v < -127 ? -127 : v);
        total += y[i];
    }
    *scale = s;
    *sum = total;
}

void ops_rows_to_u8(ops_ctx *c, int64_t rows, int n, const float *x, int64_t ldx, int levels, uint8_t *y,
                    float *scale, int32_t *zero)
{
    ops_ctx_enter(c);
#pragma omp parallel for schedule(static) if (rows * n > PAR_MIN)
    for (int64_t r = 0; r < rows; r++)
        ops_row_to_u8(x + r * ldx, n, levels, y + r * (int64_t)n, &scale[r], &zero[r]);
}

/* One row of the int8 epilogue (see cpu.h); cr may alias ar. */
static void int8_row(const int32_t *ar, int N, float rs, int32_t rz, const float *col_scale,
                     const int32_t *colsum, const float *bias, float *cr, int accumulate)
{
    __m256i z = _mm256_set1_epi32(rz);
    __m256 s = _mm256_set1_ps(rs);
    int n = 0;
    for (; n + 8 <= N; n += 8) {
        __m256i d = _mm256_sub_epi32(_mm256_loadu_si256((const __m256i *)(ar + n)),
                                     _mm256_mullo_epi32(z, _mm256_loadu_si256((const __m256i *)(colsum + n))));
        __m256 v = _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(d), s), _mm256_loadu_ps(col_scale + n));
        if (bias)
            v = _mm256_add_ps(v, _mm256_loadu_ps(bias + n));
        if (accumulate)
            v = _mm256_add_ps(v, _mm256_loadu_ps(cr + n));
        _mm256_storeu_ps(cr + n, v);
    }
    for (; n < N; n++) {
        float v = (float)(ar[n] - rz * colsum[n]) * rs * col_scale[n];
        v += bias ? bias[n] : 0.0f;
        cr[n] = accumulate ? cr[n] + v : v;
    }
}

void ops_int8_epilogue(ops_ctx *c, int M, int N, const int32_t *acc, int64_t ldacc, const float *row_scale,
                       const int32_t *row_zero, const float *col_scale, const int32_t *colsum,
                       const float *bias, float *C, int64_t ldc, int accumulate)
{
    ops_ctx_enter(c);
#pragma omp parallel for schedule(static) if ((int64_t)M * N > PAR_MIN)
    for (int m = 0; m < M; m++)
        int8_row(acc + m * ldacc, N, row_scale[m], row_zero[m], col_scale, colsum, bias, C + m * ldc,
                 accumulate);
}

void ops_int8_swiglu_ln(ops_ctx *c, int M, int F, int32_t *acc, int64_t ldacc, const float *row_scale,
                        const int32_t *row_zero, const float *col_scale, const int32_t *colsum,
                        const float *bias, const float *g, const float *b, float eps, float *C, int64_t ldc)
{
    ops_ctx_enter(c);
#pragma omp parallel for schedule(static) if ((int64_t)M * F > PAR_MIN)
    for (int m = 0; m < M; m++) {
        int32_t *ar = acc + m * ldacc;
        float *h = (float *)ar;   /* the row's f32 values replace its sums, in L1 */
        int8_row(ar, 2 * F, row_scale[m], row_zero[m], col_scale, colsum, bias, h, 0);
        ops_silu_mul_row(h, h + F, F);
        ops_layernorm_row(h, F, g, b, eps, C + m * ldc);
    }
}

/* exp values in [0, 1] (a row's max is exactly 1) as round(e levels), into
 * q; returns their sum. */
static int32_t probs_to_u8(const float *e, int n, int levels, uint8_t *q)
{
    __m256 mul = _mm256_set1_ps((float)levels);
    __m256i acc = _mm256_setzero_si256();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256i a = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(e + i), mul));
        __m256i b = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(e + i + 8), mul));
        acc = _mm256_add_epi32(acc, _mm256_add_epi32(a, b));
        __m256i w = _mm256_permute4x64_epi64(_mm256_packs_epi32(a, b), 0xd8);
        _mm_storeu_si128((__m128i *)(q + i),
                         _mm_packus_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1)));
    }
    int32_t total = 0, lanes[8];
    _mm256_storeu_si256((__m256i *)lanes, acc);
    for (int l = 0; l < 8; l++)
        total += lanes[l];
    for (; i < n; i++) {
        q[i] = (uint8_t)nearbyintf(e[i] * (float)levels);
        total += q[i];
    }
    return total;
}

void ops_softmax2_rows_s32_u8(ops_ctx *c, int64_t rows, int n, int32_t *x, int64_t ldx, int rows_per_head,
                              const float *row_scale, const int32_t *row_zero, const float *kscale,
                              const float *kss, int levels, uint8_t *p, int64_t ldp, int32_t *psum)
{
    int wide = ops_have_avx512();
    ops_ctx_enter(c);
#pragma omp parallel for schedule(static) if (rows * n > PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *ks = kscale + r / rows_per_head * n, *kz = kss + r / rows_per_head * n;
        float a = row_scale[r], b = row_scale[r] * (float)row_zero[r];
        int32_t *xr = x + r * ldx;
        if (wide) {
            psum[r] = ops_softmax2_row_s32_u8_512(xr, n, a, b, ks, kz, levels, p + r * ldp);
            continue;
        }
        /* the natural-base scores replace the sums in place, then the f32 softmax */
        float *f = (float *)xr, unused;
        for (int j = 0; j < n; j++)
            f[j] = (a * (ks[j] * (float)xr[j]) - b * kz[j]) * 0.693147181f;
        softmax_row(f, n, NULL, &unused);
        psum[r] = probs_to_u8(f, n, levels, p + r * ldp);
    }
}

void ops_add(ops_ctx *c, float *y, const float *x, int64_t n)
{
    ops_ctx_enter(c);
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++)
        y[i] += x[i];
}

void ops_rope(ops_ctx *c, int64_t rows, int heads, int hd, float *x, int64_t ld, const float *cos,
              const float *sin, int64_t period)
{
    ops_ctx_enter(c);
#pragma omp parallel for schedule(static) if (rows * heads * hd > PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *cr = cos + (r % period) * hd, *sr = sin + (r % period) * hd;
        for (int h = 0; h < heads; h++) {
            float *v = x + r * ld + (int64_t)h * hd;
            for (int d = 0; d < hd; d += 2) {
                float a = v[d], b = v[d + 1];
                v[d] = a * cr[d] - b * sr[d];
                v[d + 1] = b * cr[d + 1] + a * sr[d + 1];
            }
        }
    }
}
