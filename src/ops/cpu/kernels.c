/* Row and elementwise kernels: memory-bound, so they are simple loops the
 * compiler vectorises, split across the context's threads. Statistics and
 * softmax sums are accumulated in double: a 2730-wide LayerNorm or a
 * 4096-key softmax in float loses digits the golden tolerance needs. */
#include <immintrin.h>
#include <math.h>
#include <omp.h>

#include "ops/cpu/cpu.h"

#define PAR_MIN 32768   /* below this many elements threads cost more than they save */

/* exp(x) on 8 floats (libm's expf does not vectorise): x = n ln2 + r with
 * |r| <= ln2/2, e^r by its degree-7 Taylor series (truncation < 5e-9
 * relative), 2^n built in the exponent bits. Inputs are clamped so n stays
 * a normal exponent. */
static inline __m256 exp8(__m256 x)
{
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
    __m256 kf = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(kf, _mm256_set1_ps(0.693145751953125f), x);
    r = _mm256_fnmadd_ps(kf, _mm256_set1_ps(1.428606765330187e-06f), r);
    static const float c[8] = {1.0f / 5040, 1.0f / 720, 1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f, 1.0f, 1.0f};
    __m256 p = _mm256_set1_ps(c[0]);
    for (int i = 1; i < 8; i++)
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c[i]));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(kf), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

void ops_layernorm(ops_ctx *c, int64_t rows, int n, const float *x, int64_t ldx, const float *g,
                   const float *b, float eps, float *y, int64_t ldy)
{
    ops_ctx_enter(c);
#pragma omp parallel for schedule(static) if (rows * n > PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * ldx;
        float *yr = y + r * ldy;
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

void ops_silu_mul(ops_ctx *c, int64_t rows, int n, float *a, int64_t lda, const float *b, int64_t ldb)
{
    ops_ctx_enter(c);
#pragma omp parallel for schedule(static) if (rows * n > PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        float *ar = a + r * lda;
        const float *br = b + r * ldb;
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

/* Max-subtracted softmax. Partial sums stay in 8 float lanes (each lane adds
 * n/8 values in [0, 1]), which keeps the error near 1e-7 for 4096 keys. */
static void softmax_row(float *x, int n)
{
    int i = 0;
    __m256 vmax = _mm256_set1_ps(-INFINITY);
    for (; i + 8 <= n; i += 8)
        vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(x + i));
    float mx = hmax8(vmax);
    for (; i < n; i++)
        mx = x[i] > mx ? x[i] : mx;
    __m256 vsum = _mm256_setzero_ps(), vm = _mm256_set1_ps(mx);
    for (i = 0; i + 8 <= n; i += 8) {
        __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm));
        _mm256_storeu_ps(x + i, e);
        vsum = _mm256_add_ps(vsum, e);
    }
    double sum = hsum8(vsum);
    for (; i < n; i++) {
        x[i] = expf(x[i] - mx);
        sum += x[i];
    }
    __m256 inv = _mm256_set1_ps((float)(1.0 / sum));
    for (i = 0; i + 8 <= n; i += 8)
        _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), inv));
    for (; i < n; i++)
        x[i] *= (float)(1.0 / sum);
}

void ops_softmax_rows(ops_ctx *c, int64_t rows, int n, float *x, int64_t ld)
{
    ops_ctx_enter(c);
#pragma omp parallel for schedule(static) if (rows * n > PAR_MIN)
    for (int64_t r = 0; r < rows; r++)
        softmax_row(x + r * ld, n);
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
