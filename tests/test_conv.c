/* ops_conv2d (ops/cpu/conv.c) against a double-precision direct
 * convolution, through the weight table: one weight at two input sizes
 * (the RPN head on every level), two weights of one shape (one primitive,
 * two tables entries), more weights than the table holds, and a context
 * that drops its packed weights at every scratch release (bf16 models);
 * and a band of rows whose padding rows are its neighbours (the RPN head). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ops/ops.h"
#include "testutil.h"

enum { CIN = 8, COUT = 16, KS = 3, NW = 52 };

static uint64_t rng = 11;
static float uniform(void)   /* [-1, 1) */
{
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng >> 40) & 0xffffff) / 8388608.0f - 1.0f;
}

static void fill(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = uniform();
}

/* NHWC x, OIHW w, zero padding. */
static void reference(const ops_conv *p, double *y)
{
    int ho = (p->H + 2 * p->pad - p->kh) / p->stride + 1, wo = (p->W + 2 * p->pad - p->kw) / p->stride + 1;
    for (int oy = 0; oy < ho; oy++)
        for (int ox = 0; ox < wo; ox++)
            for (int o = 0; o < p->Cout; o++) {
                double acc = p->bias ? p->bias[o] : 0;
                for (int ky = 0; ky < p->kh; ky++)
                    for (int kx = 0; kx < p->kw; kx++) {
                        int iy = oy * p->stride - p->pad + ky, ix = ox * p->stride - p->pad + kx;
                        if (iy < 0 || iy >= p->H || ix < 0 || ix >= p->W)
                            continue;
                        for (int c = 0; c < p->Cin; c++)
                            acc += (double)p->x[((size_t)iy * p->W + ix) * p->Cin + c] *
                                   p->w[((size_t)(o * p->Cin + c) * p->kh + ky) * p->kw + kx];
                    }
                y[((size_t)oy * wo + ox) * p->Cout + o] = acc;
            }
}

/* Largest |got - want| over the largest |want|, for a conv run on ctx. */
static double conv_err(ops_ctx *c, const float *x, int H, int stride, const float *w, const float *bias)
{
    ops_conv p = {.N = 1, .H = H, .W = H + 1, .Cin = CIN, .Cout = COUT, .kh = KS, .kw = KS,
                  .stride = stride, .pad = 1, .x = x, .w = w, .bias = bias};
    int ho = (p.H + 2 - KS) / stride + 1, wo = (p.W + 2 - KS) / stride + 1;
    size_t n = (size_t)ho * wo * COUT;
    float *y = malloc(n * sizeof *y);
    double *want = malloc(n * sizeof *want);
    p.y = y;
    hadm_error err = {0};
    double d = INFINITY, mx = 0;
    if (ops_conv2d(c, &p, &err) == HADM_OK) {
        reference(&p, want);
        d = 0;
        for (size_t i = 0; i < n; i++) {
            d = fmax(d, fabs(y[i] - want[i]));
            mx = fmax(mx, fabs(want[i]));
        }
        d /= mx > 0 ? mx : 1;
    } else {
        fprintf(stderr, "conv: %s\n", err.msg);
    }
    free(y);
    free(want);
    return d;
}

/* Rows [4, 9) of a 13-row map's conv, from a band of rows [3, 10) with
 * rows_padded: must match those rows of the whole map's conv. */
static double band_err(ops_ctx *c, const float *x, const float *w, const float *bias)
{
    enum { H = 13, W = 14, Y0 = 4, ROWS = 5 };
    ops_conv full = {.N = 1, .H = H, .W = W, .Cin = CIN, .Cout = COUT, .kh = KS, .kw = KS,
                     .stride = 1, .pad = 1, .x = x, .w = w, .bias = bias};
    double *want = malloc((size_t)H * W * COUT * sizeof *want);
    float *y = malloc((size_t)ROWS * W * COUT * sizeof *y);
    reference(&full, want);
    ops_conv band = full;
    band.H = ROWS + 2, band.rows_padded = 1, band.x = x + (size_t)(Y0 - 1) * W * CIN, band.y = y;
    hadm_error err = {0};
    double d = INFINITY, mx = 0;
    if (ops_conv_out_h(&band) == ROWS && ops_conv2d(c, &band, &err) == HADM_OK) {
        d = 0;
        for (size_t i = 0; i < (size_t)ROWS * W * COUT; i++) {
            double t = want[(size_t)Y0 * W * COUT + i];
            d = fmax(d, fabs(y[i] - t));
            mx = fmax(mx, fabs(t));
        }
        d /= mx > 0 ? mx : 1;
    }
    free(want);
    free(y);
    return d;
}

/* A weight given as bf16 or f16 (w_type: a reduced file's, read in place)
 * must give exactly the output of the same values given as f32. */
static int typed_weight_same(ops_ctx *c, const float *x, const float *w, const float *bias)
{
    enum { H = 9, W = 10, NW8 = COUT * CIN * KS * KS };
    static uint16_t half[NW8];
    static float widened[NW8], y0[H * W * COUT], y1[H * W * COUT];
    int same = 1;
    for (ops_src_type t = OPS_SRC_BF16; t <= OPS_SRC_F16; t++) {
        for (int i = 0; i < NW8; i++) {
            half[i] = t == OPS_SRC_BF16 ? ops_f32_to_bf16(w[i]) : ops_f32_to_f16(w[i]);
            widened[i] = t == OPS_SRC_BF16 ? ops_bf16_to_f32(half[i]) : ops_f16_to_f32(half[i]);
        }
        ops_conv p = {.N = 1, .H = H, .W = W, .Cin = CIN, .Cout = COUT, .kh = KS, .kw = KS, .stride = 1,
                      .pad = 1, .x = x, .w = widened, .bias = bias, .y = y0};
        hadm_error err = {0};
        same &= ops_conv2d(c, &p, &err) == HADM_OK;
        p.w = (const float *)half, p.w_type = t, p.y = y1;
        same &= ops_conv2d(c, &p, &err) == HADM_OK && !memcmp(y0, y1, sizeof y0);
    }
    return same;
}

/* Every case on one context; tol is the precision's relative error. */
static void run_cases(ops_ctx *c, const char *what, double tol, const float *x, float *const *w,
                      const float *bias)
{
    CHECK(conv_err(c, x, 13, 1, w[0], bias) < tol, "%s: first use", what);
    CHECK(conv_err(c, x, 6, 1, w[0], NULL) < tol, "%s: same weight, smaller input", what);
    CHECK(conv_err(c, x, 13, 2, w[0], bias) < tol, "%s: same weight, stride 2", what);
    CHECK(conv_err(c, x, 13, 1, w[1], bias) < tol, "%s: second weight, same shape", what);
    CHECK(conv_err(c, x, 13, 1, w[0], bias) < tol, "%s: first weight again", what);
    double worst = 0;
    for (int i = 0; i < NW; i++)   /* more weights than the table has slots */
        worst = fmax(worst, conv_err(c, x, 6, 1, w[i], NULL));
    for (int i = 0; i < NW; i += 7)
        worst = fmax(worst, conv_err(c, x, 6, 1, w[i], NULL));
    CHECK(worst < tol, "%s: %d weights in turn: worst %g", what, NW, worst);
    ops_scratch_release(c);
    CHECK(conv_err(c, x, 13, 1, w[1], bias) < tol, "%s: after a scratch release", what);
    CHECK(band_err(c, x, w[2], bias) < tol, "%s: a band with its neighbours' rows as padding", what);
    CHECK(typed_weight_same(c, x, w[4], bias), "%s: a bf16/f16 weight differs from its f32 values", what);
}

int main(void)
{
    float *x = malloc((size_t)13 * 14 * CIN * sizeof *x), *bias = malloc(COUT * sizeof *bias);
    float *w[NW];
    fill(x, (size_t)13 * 14 * CIN);
    fill(bias, COUT);
    for (int i = 0; i < NW; i++) {
        w[i] = malloc((size_t)COUT * CIN * KS * KS * sizeof *w[i]);
        fill(w[i], (size_t)COUT * CIN * KS * KS);
    }
    hadm_error err = {0};
    ops_ctx *c = NULL;
    CHECK(ops_ctx_new(2, &c, &err) == HADM_OK, "ctx: %s", err.msg);
    if (c) {
        run_cases(c, "f32", 1e-5, x, w, bias);
        ops_ctx_keep_conv_weights(c, 0);
        run_cases(c, "f32, weights dropped with the scratch", 1e-5, x, w, bias);
        ops_ctx_set_compute(c, OPS_BF16);
        run_cases(c, "bf16", 2e-2, x, w, bias);
        ops_ctx_set_compute(c, OPS_S8);   /* im2col rows quantised per row */
        CHECK(band_err(c, x, w[3], bias) < 3e-2, "int8: a band with its neighbours' rows as padding");
        CHECK(typed_weight_same(c, x, w[5], bias), "int8: a bf16/f16 weight differs from its f32 values");
        ops_ctx_free(c);
    }
    for (int i = 0; i < NW; i++)
        free(w[i]);
    free(x);
    free(bias);
    return test_finish();
}
