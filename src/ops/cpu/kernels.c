/* Row and elementwise kernels: memory-bound, so they are simple loops the
 * compiler vectorises, split across the context's threads. Statistics and
 * softmax sums are accumulated in double: a 2730-wide LayerNorm or a
 * 4096-key softmax in float loses digits the golden tolerance needs. */
#include <math.h>
#include <omp.h>

#include "ops/cpu/cpu.h"

#define PAR_MIN 32768   /* below this many elements threads cost more than they save */

void ops_layernorm(ops_ctx *c, int64_t rows, int n, const float *x, int64_t ldx, const float *g,
                   const float *b, float eps, float *y, int64_t ldy)
{
    ops_ctx_enter(c);
#pragma omp parallel for schedule(static) if (rows * n > PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * ldx;
        float *yr = y + r * ldy;
        double sum = 0;
        for (int i = 0; i < n; i++)
            sum += xr[i];
        float mean = (float)(sum / n);
        double var = 0;
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
        for (int i = 0; i < n; i++)
            ar[i] = ar[i] / (1.0f + expf(-ar[i])) * br[i];
    }
}

static void softmax_row(float *x, int n)
{
    float mx = x[0];
    for (int i = 1; i < n; i++)
        mx = x[i] > mx ? x[i] : mx;
    double sum = 0;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - mx);
        sum += x[i];
    }
    float inv = (float)(1.0 / sum);
    for (int i = 0; i < n; i++)
        x[i] *= inv;
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
