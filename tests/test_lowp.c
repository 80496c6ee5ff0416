/* Attention in f32 and int8, reduced-precision matmuls (ops/cpu/dnnl_lowp.c) and int8 convolutions
 * (conv_int8.c) against double-precision
 * references: the int8 path must equal the exact product of its own
 * dequantised operands (this checks zero points, column sums, scales, bias,
 * accumulate and strided C), and both reduced paths must stay within
 * their expected distance of the f32 product. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ops/cpu/cpu.h"
#include "ops/ops.h"
#include "testutil.h"

enum { M = 37, N = 50, K = 300, LDC = 53 };

static uint64_t rng = 7;
static float uniform(void)   /* [-1, 1) */
{
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng >> 40) & 0xffffff) / 8388608.0f - 1.0f;
}

/* Rows of different magnitudes and offsets, an all-zero row, a row with one
 * outlier and an all-positive row (as after a ReLU). */
static void fill_a(float *a)
{
    for (int m = 0; m < M; m++)
        for (int k = 0; k < K; k++) {
            float v = uniform() * (0.01f + m * 0.3f);
            a[m * K + k] = m == 3 ? 0.0f : m == 5 ? fabsf(v) + 0.5f : v + (m % 4 == 1 ? 2.0f : 0.0f);
        }
    a[7 * K + 11] = 40.0f;
}

/* Largest |got - want| relative to the largest |want| over the matrix. */
static double rel_err(const float *got, const double *want)
{
    double d = 0, mx = 0;
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            double e = fabs(got[m * LDC + n] - want[m * N + n]);
            d = e > d ? e : d;
            mx = fabs(want[m * N + n]) > mx ? fabs(want[m * N + n]) : mx;
        }
    return d / mx;
}

/* want = A·Wᵀ + bias (+ c0 when accumulating), in double. */
static void reference(const float *a, const float *w, const float *bias, const float *c0, double *want)
{
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            double s = 0;
            for (int k = 0; k < K; k++)
                s += (double)a[m * K + k] * w[n * K + k];
            want[m * N + n] = s + bias[n] + (c0 ? c0[m * LDC + n] : 0);
        }
}

static void test_u8_rows(ops_ctx *c, const float *a)
{
    static uint8_t q[M * K];
    float scale[M];
    int32_t zero[M];
    for (int levels = 127; levels <= 255; levels += 128) {
        ops_rows_to_u8(c, M, K, a, K, levels, q, scale, zero);
        int bad = 0;
        for (int m = 0; m < M; m++)
            for (int k = 0; k < K; k++) {
                float back = scale[m] * (float)(q[m * K + k] - zero[m]);
                bad += q[m * K + k] > levels || fabsf(back - a[m * K + k]) > 0.5001f * scale[m] + 1e-7f;
                bad += a[m * K + k] == 0.0f && back != 0.0f;
            }
        CHECK(bad == 0, "levels %d: %d values off by more than half a step", levels, bad);
        CHECK(zero[3] == 0 && scale[3] == 1.0f, "all-zero row: scale %g zero %d", scale[3], zero[3]);
        CHECK(zero[5] == 0, "all-positive row has zero point %d", zero[5]);
    }
}

static void run(ops_ctx *c, const ops_packed *pk, const float *a, const float *bias, int acc, float *out)
{
    hadm_error err = {0};
    ops_gemm g = {.M = M, .N = N, .K = K, .A = a, .lda = K, .trans_b = 1, .bias = bias, .C = out,
                  .ldc = LDC, .accumulate = acc, .packed = pk};
    CHECK(ops_matmul(c, &g, &err) == HADM_OK, "matmul: %s", err.msg);
}

/* The int8 product of the dequantised operands, which the path must equal
 * to float rounding: a = scale (q - zero) per row, w = wscale q per row. */
static void int8_operands(ops_ctx *c, const float *a, const float *w, float *aq, float *wq)
{
    static uint8_t q[M * K];
    static int8_t w8[N * K];
    float scale[M], wscale[N], row[K];
    int32_t zero[M];
    ops_rows_to_u8(c, M, K, a, K, 255, q, scale, zero);
    for (int i = 0; i < M * K; i++)
        aq[i] = scale[i / K] * (float)(q[i] - zero[i / K]);
    ops_wpart p = {w, OPS_SRC_F32, NULL, N};
    ops_part_convert(&p, K, OPS_S8, w8, wscale, row);
    for (int i = 0; i < N * K; i++)
        wq[i] = wscale[i / K] * w8[i];
}

/* int8 convolution (im2col rows quantised one by one) against the f32 one:
 * stride 1 and 2, a zero image (must give exactly the bias). */
static void test_conv_int8(void)
{
    enum { B = 3, H = 7, W = 6, CI = 20, CO = 12 };
    static float x[B * H * W * CI], w[CO * CI * 9], y32[B * H * W * CO], y8[B * H * W * CO];
    float bias[CO];
    for (int i = 0; i < B * H * W * CI; i++)
        x[i] = i / (H * W * CI) == 1 ? 0.0f : uniform() * (1 + i % 3);
    for (int i = 0; i < CO * CI * 9; i++)
        w[i] = uniform() * 0.1f;
    for (int i = 0; i < CO; i++)
        bias[i] = uniform();
    ops_ctx *f = NULL, *q = NULL;
    hadm_error err = {0};
    CHECK(ops_ctx_new(2, &f, &err) == HADM_OK && ops_ctx_new(2, &q, &err) == HADM_OK, "%s", err.msg);
    ops_ctx_set_compute(q, OPS_S8);
    for (int stride = 1; stride <= 2; stride++) {
        ops_conv p = {.N = B, .H = H, .W = W, .Cin = CI, .Cout = CO, .kh = 3, .kw = 3, .stride = stride,
                      .pad = 1, .x = x, .w = w, .bias = bias, .y = y32};
        CHECK(ops_conv2d(f, &p, &err) == HADM_OK, "f32 conv: %s", err.msg);
        p.y = y8;
        CHECK(ops_conv2d(q, &p, &err) == HADM_OK, "int8 conv: %s", err.msg);
        int ho = (H - 1) / stride + 1, wo = (W - 1) / stride + 1, n = B * ho * wo * CO;
        double d = 0, mx = 0;
        int zero_ok = 1;
        for (int i = 0; i < n; i++) {
            d = fabs(y8[i] - y32[i]) > d ? fabs(y8[i] - y32[i]) : d;
            mx = fabs(y32[i]) > mx ? fabs(y32[i]) : mx;
            if (i / (ho * wo * CO) == 1)
                zero_ok &= y8[i] == bias[i % CO];
        }
        printf("int8 conv stride %d: vs f32 %.2e\n", stride, d / mx);
        CHECK(d / mx < 2e-2, "int8 conv stride %d: %.3g of the f32 output's range", stride, d / mx);
        CHECK(zero_ok, "int8 conv: a zero image does not give exactly the bias");
    }
    ops_ctx_free(f);
    ops_ctx_free(q);
}

/* A gemm whose B is a raw f32 weight (b_weight) in an S8 context: B packed
 * as int8 on first use and kept under its pointer, given as rows (trans_b)
 * or as its transpose; each call must be the exact product of its own
 * dequantised operands, also when a second weight of the same shape takes
 * turns with the first. */
static void test_weight_gemm_s8(const float *a, const float *w, const float *bias)
{
    static float w2[N * K], wt[K * N], w2t[K * N], aq[M * K], wq[N * K], wq2[N * K], out[M * LDC];
    static double exact[M * N];
    for (int i = 0; i < N * K; i++)
        w2[i] = -0.7f * w[i] + 0.01f * uniform();
    for (int n = 0; n < N; n++)
        for (int k = 0; k < K; k++)
            wt[k * N + n] = w[n * K + k], w2t[k * N + n] = w2[n * K + k];
    ops_ctx *c = NULL;
    hadm_error err = {0};
    CHECK(ops_ctx_new(2, &c, &err) == HADM_OK, "%s", err.msg);
    ops_ctx_set_compute(c, OPS_S8);
    int8_operands(c, a, w2, aq, wq2);
    int8_operands(c, a, w, aq, wq);
    double tol = ops_u8_levels(c) == 255 ? 2e-6 : 2e-2;   /* 7-bit activations without VNNI */
    for (int trans = 1; trans >= 0; trans--)
        for (int turn = 0; turn < 3; turn++) {
            int second = turn == 1;
            const float *b = trans ? (second ? w2 : w) : (second ? w2t : wt);
            ops_gemm g = {.M = M, .N = N, .K = K, .A = a, .lda = K, .B = b, .ldb = trans ? K : N,
                          .trans_b = trans, .bias = bias, .C = out, .ldc = LDC, .b_weight = 1};
            CHECK(ops_matmul(c, &g, &err) == HADM_OK, "weight gemm: %s", err.msg);
            reference(aq, second ? wq2 : wq, bias, NULL, exact);
            double x = rel_err(out, exact);
            CHECK(x < tol, "int8 weight gemm trans_b=%d turn %d: %.3g from its own operands' product", trans, turn,
                  x);
        }
    ops_ctx_free(c);
}

/* A gemm whose B is bf16 or f16 (b_type: a reduced file's weight, read in
 * place) must give exactly the product with the same values as f32: as
 * rows and transposed, in an F32 context and as an S8 b_weight. */
static void test_typed_b(const float *a, const float *w)
{
    static uint16_t half[N * K];
    static float wide[N * K], y0[M * LDC], y1[M * LDC];
    hadm_error err = {0};
    for (int s8 = 0; s8 <= 1; s8++)
        for (ops_src_type t = OPS_SRC_BF16; t <= OPS_SRC_F16; t++)
            for (int trans = 0; trans <= 1; trans++) {
                /* a fresh context: an S8 one keeps weights by pointer, and
                 * these arrays are refilled */
                ops_ctx *c = NULL;
                CHECK(ops_ctx_new(2, &c, &err) == HADM_OK, "%s", err.msg);
                ops_ctx_set_compute(c, s8 ? OPS_S8 : OPS_F32);
                /* B is [N][K] (trans_b) or [K][N] */
                for (int n = 0; n < N; n++)
                    for (int k = 0; k < K; k++) {
                        int i = trans ? n * K + k : k * N + n;
                        half[i] = t == OPS_SRC_BF16 ? ops_f32_to_bf16(w[n * K + k]) : ops_f32_to_f16(w[n * K + k]);
                        wide[i] = t == OPS_SRC_BF16 ? ops_bf16_to_f32(half[i]) : ops_f16_to_f32(half[i]);
                    }
                ops_gemm g = {.M = M, .N = N, .K = K, .A = a, .lda = K, .B = wide, .ldb = trans ? K : N,
                              .trans_b = trans, .C = y0, .ldc = LDC, .b_weight = s8};
                int ok = ops_matmul(c, &g, &err) == HADM_OK;
                g.B = (const float *)half, g.b_type = t, g.C = y1;
                ok = ok && ops_matmul(c, &g, &err) == HADM_OK && !memcmp(y0, y1, sizeof y0);
                CHECK(ok, "%s gemm, %s B trans_b=%d: differs from its f32 values", s8 ? "int8" : "f32",
                      t == OPS_SRC_BF16 ? "bf16" : "f16", trans);
                ops_ctx_free(c);
            }
}

/* The attention's unnormalised softmax (AVX-512 where the CPU has it, AVX2
 * otherwise, and the bf16-output path) against double precision, for row
 * lengths around the vector widths and a 4096-key row. */
static void test_softmax_unnorm(ops_ctx *c)
{
    static const int lens[] = {1, 7, 16, 17, 33, 196, 4096};
    static float x[4096], keep[4096];
    static uint16_t y[4096];
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
        int n = lens[li];
        for (int i = 0; i < n; i++)
            keep[i] = x[i] = uniform() * 12.0f;
        double mx = -INFINITY, sum = 0, worst = 0;
        for (int i = 0; i < n; i++)
            mx = keep[i] > mx ? keep[i] : mx;
        for (int i = 0; i < n; i++)
            sum += exp(keep[i] - mx);
        float inv = 0, inv_b = 0;
        ops_softmax_rows_unnorm(c, 1, n, x, n, NULL, n, &inv);
        for (int i = 0; i < n; i++) {
            double want = exp(keep[i] - mx);
            worst = fabs(x[i] - want) > worst ? fabs(x[i] - want) : worst;
        }
        memcpy(x, keep, (size_t)n * sizeof *x);
        ops_softmax_rows_unnorm(c, 1, n, x, n, y, n, &inv_b);
        double worst_b = 0;
        for (int i = 0; i < n; i++)
            worst_b = fmax(worst_b, fabs(ops_bf16_to_f32(y[i]) - exp(keep[i] - mx)));
        CHECK(worst < 1e-6 && fabs(inv * sum - 1) < 1e-6, "softmax n=%d: exp off by %.3g, 1/sum by %.3g%s", n,
              worst, fabs(inv * sum - 1), ops_have_avx512() ? " (AVX-512)" : "");
        CHECK(worst_b < 4e-3 && fabs(inv_b * sum - 1) < 1e-6, "bf16 softmax n=%d: off by %.3g", n, worst_b);
    }
}

/* The int8 attention's softmax from s32 sums to u8 probabilities, AVX-512
 * (where the CPU has it) and AVX2, against double precision: every
 * probability round(levels 2^(score - max)) exact except where the exact
 * value lies within 0.05 of a rounding boundary (then off by at most one),
 * and the reported sum that of the probabilities written. */
static void test_softmax_s32_u8(ops_ctx *c)
{
    static const int lens[] = {1, 7, 16, 17, 196, 4096};
    static int32_t x[2 * 4096], keep[2 * 4096];
    static float ks[2 * 4096], ksum[2 * 4096], kss[2 * 4096];
    static uint8_t p[2 * 4096];
    float scale[2] = {3e-2f, 7e-3f};
    int32_t zero[2] = {131, 7}, psum[2];
    for (int avx2 = 0; avx2 <= 1; avx2++) {
        ops_test_avx512_off(avx2);
        for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
            int n = lens[li], bad = 0, sums_ok = 1;
            for (int i = 0; i < 2 * n; i++) {
                keep[i] = x[i] = (int32_t)(uniform() * 40000.0f) + 20000;
                ks[i] = 0.005f + 0.01f * (uniform() + 1.0f);
                ksum[i] = (float)(int)(uniform() * 200.0f);
                kss[i] = ks[i] * ksum[i];
            }
            /* two rows, one per head (rows_per_head 1): key arrays [h][n] */
            ops_softmax2_rows_s32_u8(c, 2, n, x, n, 1, scale, zero, ks, kss, 255, p, n, psum);
            for (int r = 0; r < 2; r++) {
                double mx = -INFINITY, sc[4096];
                int32_t total = 0;
                for (int j = 0; j < n; j++) {
                    int i = r * n + j;
                    sc[j] = (double)scale[r] * ks[i] * ((double)keep[i] - (double)zero[r] * ksum[i]);
                    mx = sc[j] > mx ? sc[j] : mx;
                }
                for (int j = 0; j < n; j++) {
                    double want = 255.0 * exp2(sc[j] - mx);
                    int near = fabs(want - floor(want) - 0.5) < 0.05;
                    int got = p[r * n + j];
                    total += got;
                    bad += near ? abs(got - (int)nearbyint(want)) > 1 : got != (int)nearbyint(want);
                }
                sums_ok &= total == psum[r];
            }
            CHECK(bad == 0 && sums_ok, "s32 -> u8 softmax n=%d%s: %d probabilities off, sums %s", n,
                  avx2 ? " (AVX2)" : "", bad, sums_ok ? "right" : "wrong");
        }
    }
    ops_test_avx512_off(0);
}

/* bf16-packed weights in an F32 context (CPUs whose bf16 is slow) are
 * widened to f32: the product must be the f32 one of the bf16-rounded
 * weights, also when three weights take turns in the two widened slots. */
static void test_widened(const float *a, const float *w, const float *bias, const float *c0)
{
    static float wr[3][N * K], out[M * LDC];
    static double want[M * N];
    ops_ctx *c = NULL;
    hadm_error err = {0};
    CHECK(ops_ctx_new(2, &c, &err) == HADM_OK, "%s", err.msg);
    ops_packed *pk[3] = {0};
    for (int j = 0; j < 3; j++) {
        for (int i = 0; i < N * K; i++)
            wr[j][i] = ops_bf16_to_f32(ops_f32_to_bf16(w[i] * (float)(j + 1) - 0.01f * (float)j));
        ops_wpart part = {wr[j], OPS_SRC_F32, NULL, N};
        CHECK(ops_pack_parts(c, M, K, &part, 1, OPS_BF16, &pk[j], &err) == HADM_OK, "pack: %s", err.msg);
    }
    static const int order[] = {0, 1, 2, 0, 2, 1, 1};
    for (int o = 0; o < 7 && pk[2]; o++) {
        int j = order[o], acc = o % 2;
        memcpy(out, c0, sizeof out);
        run(c, pk[j], a, bias, acc, out);
        reference(a, wr[j], bias, acc ? c0 : NULL, want);
        double e = rel_err(out, want);
        CHECK(e < 1e-5, "widened bf16 weight %d (turn %d, acc %d): %.3g from the f32 product", j, o, acc, e);
    }
    for (int j = 0; j < 3; j++)
        ops_packed_free(pk[j]);
    ops_ctx_free(c);
}

/* ops_matmul_swiglu_ln must give exactly what the unfused ops give (matmul,
 * silu_mul, layernorm) for f32, bf16 and int8 weights, and the f32 one the
 * double-precision SwiGLU + LayerNorm. */
static void test_swiglu_ln(ops_ctx *c, const float *a, const float *w, const float *bias)
{
    enum { F = N / 2 };
    static float h[M * N], h2[M * N], fused[M * LDC], plain[M * LDC];
    float lg[F], lb[F];
    for (int i = 0; i < F; i++)
        lg[i] = 1 + 0.2f * uniform(), lb[i] = 0.1f * uniform();
    hadm_error err = {0};
    for (int t = OPS_F32; t <= OPS_S8; t++) {
        ops_packed *pk = NULL;
        ops_wpart part = {w, OPS_SRC_F32, NULL, N};
        CHECK(ops_pack_parts(c, M, K, &part, 1, (ops_dtype)t, &pk, &err) == HADM_OK, "pack: %s", err.msg);
        ops_gemm g = {.M = M, .N = N, .K = K, .A = a, .lda = K, .B = w, .ldb = K, .trans_b = 1, .bias = bias,
                      .C = fused, .ldc = LDC, .packed = pk};
        memset(fused, 0, sizeof fused), memset(plain, 0, sizeof plain);
        CHECK(ops_matmul_swiglu_ln(c, &g, h, lg, lb, 1e-6f, &err) == HADM_OK, "swiglu: %s", err.msg);
        g.C = h2, g.ldc = N;
        CHECK(ops_matmul(c, &g, &err) == HADM_OK, "matmul: %s", err.msg);
        ops_silu_mul(c, M, F, h2, N, h2 + F, N);
        ops_layernorm(c, M, F, h2, N, lg, lb, 1e-6f, plain, LDC);
        CHECK(!memcmp(fused, plain, sizeof fused), "swiglu_ln dtype %d differs from the unfused ops", t);
        if (t == OPS_F32) {
            double worst = 0;
            for (int m = 0; m < M; m++) {
                double y[F], mean = 0, var = 0;
                for (int f = 0; f < F; f++) {
                    double u = bias[f], v = bias[F + f];
                    for (int k = 0; k < K; k++)
                        u += (double)a[m * K + k] * w[f * K + k], v += (double)a[m * K + k] * w[(F + f) * K + k];
                    y[f] = u / (1 + exp(-u)) * v;
                    mean += y[f] / F;
                }
                for (int f = 0; f < F; f++)
                    var += (y[f] - mean) * (y[f] - mean) / F;
                for (int f = 0; f < F; f++) {
                    double want = (y[f] - mean) / sqrt(var + 1e-6) * lg[f] + lb[f];
                    worst = fmax(worst, fabs(fused[m * LDC + f] - want));
                }
            }
            CHECK(worst < 1e-4, "f32 swiglu_ln off by %.3g from double", worst);
        }
        ops_packed_free(pk);
    }
}

/* Query i's scores q_i . k_j into p[j] (n keys, head dim hd); returns their max. */
static double score_row(int n, int hd, const double *q, const double *k, int i, double *p)
{
    double mx = -INFINITY;
    for (int j = 0; j < n; j++) {
        double d = 0;
        for (int e = 0; e < hd; e++)
            d += q[i * hd + e] * k[j * hd + e];
        p[j] = d;
        mx = d > mx ? d : mx;
    }
    return mx;
}

/* Attention in double from q (pre-scaled), k, v rows [n][ld] of one head. */
static void attention_ref(int n, int hd, const double *q, const double *k, const float *v, int ld, double *out)
{
    double *p = malloc((size_t)n * sizeof *p);
    for (int i = 0; i < n; i++) {
        double mx = score_row(n, hd, q, k, i, p), sum = 0;
        for (int j = 0; j < n; j++)
            sum += p[j] = exp(p[j] - mx);
        for (int e = 0; e < hd; e++) {
            double o = 0;
            for (int j = 0; j < n; j++)
                o += p[j] * v[j * ld + e];
            out[i * hd + e] = o / sum;
        }
    }
    free(p);
}

/* n rows (stride ld) of hd values as s8, one symmetric scale per channel
 * (max |x| / 127), as the int8 attention quantises K and V. */
static void channels_to_s8(const float *x, int ld, int n, int hd, float *scale, int8_t *y)
{
    for (int e = 0; e < hd; e++) {
        float mx = 0;
        for (int j = 0; j < n; j++)
            mx = fabsf(x[j * ld + e]) > mx ? fabsf(x[j * ld + e]) : mx;
        scale[e] = mx > 0 ? mx / 127.0f : 1.0f;
        for (int j = 0; j < n; j++)
            y[j * hd + e] = (int8_t)nearbyintf(x[j * ld + e] / scale[e]);
    }
}

/* The int8 attention's own arithmetic in double, from its dequantised
 * queries and keys (pre-scaled): V per channel in s8 (max |v| / 127), the
 * probabilities p = round(levels exp(s - max)), out = sum p v / sum p.
 * bound[i][e] is how far the engine may be from out: a p whose value lies
 * within 0.05 of a rounding boundary may round either way in the engine's
 * float exp, moving out by at most |v| / sum p, and sum p by one. */
static void attention_int8_ref(int n, int hd, const double *q, const double *k, const float *v, int ld,
                               int levels, double *out, double *bound)
{
    double *p = malloc((size_t)n * sizeof *p), *vd = malloc((size_t)n * hd * sizeof *vd);
    int *near = malloc((size_t)n * sizeof *near);
    float vs[64];
    int8_t *v8 = malloc((size_t)n * hd);
    channels_to_s8(v, ld, n, hd, vs, v8);
    for (int j = 0; j < n * hd; j++)
        vd[j] = (double)vs[j % hd] * v8[j];
    free(v8);
    for (int i = 0; i < n; i++) {
        double mx = score_row(n, hd, q, k, i, p), sum = 0;
        int flips = 0;
        for (int j = 0; j < n; j++) {
            double x = levels * exp(p[j] - mx);
            near[j] = fabs(x - floor(x) - 0.5) < 0.05;
            flips += near[j];
            sum += p[j] = nearbyint(x);
        }
        for (int e = 0; e < hd; e++) {
            double o = 0, moved = 0;
            for (int j = 0; j < n; j++) {
                o += p[j] * vd[j * hd + e];
                moved += near[j] ? fabs(vd[j * hd + e]) : 0;
            }
            out[i * hd + e] = o / sum;
            bound[i * hd + e] = (moved + flips * fabs(o / sum)) / (sum - flips) + 1e-5;
        }
    }
    free(p), free(vd), free(near);
}

/* f32 attention against exact attention, including a global-block-sized
 * row (4096 keys), where the scores of one head fill the score budget and
 * K and V are copied one head at a time. */
static void test_attention_f32(void)
{
    static const int shapes[][3] = {{37, 3, 16}, {4096, 2, 8}};   /* tokens, heads, head dim */
    ops_ctx *c = NULL;
    hadm_error err = {0};
    CHECK(ops_ctx_new(2, &c, &err) == HADM_OK, "%s", err.msg);
    for (int si = 0; c && si < 2; si++) {
        int n = shapes[si][0], heads = shapes[si][1], hd = shapes[si][2], ld = 3 * heads * hd;
        float scale = 1.0f / sqrtf((float)hd);
        float *qkv = malloc((size_t)n * ld * sizeof *qkv), *out = malloc((size_t)n * heads * hd * sizeof *out);
        double *q = malloc((size_t)n * hd * 2 * sizeof *q), *k = q + (size_t)n * hd;
        double *want = malloc((size_t)n * hd * sizeof *want);
        for (int i = 0; i < n * ld; i++)
            qkv[i] = uniform() * 2.5f + (i % 7 == 0 ? 1.0f : 0.0f);
        CHECK(ops_attention(c, n, heads, hd, scale, qkv, qkv + heads * hd, qkv + 2 * heads * hd, ld, out,
                            heads * hd, &err) == HADM_OK, "f32 attention: %s", err.msg);
        double worst = 0;
        for (int h = 0; h < heads; h++) {
            for (int t = 0; t < n; t++)
                for (int e = 0; e < hd; e++) {
                    q[(size_t)t * hd + e] = (double)qkv[(size_t)t * ld + h * hd + e] * scale;
                    k[(size_t)t * hd + e] = qkv[(size_t)t * ld + heads * hd + h * hd + e];
                }
            attention_ref(n, hd, q, k, qkv + 2 * heads * hd + h * hd, ld, want);
            for (int t = 0; t < n; t++)
                for (int e = 0; e < hd; e++)
                    worst = fmax(worst, fabs(out[(size_t)t * heads * hd + h * hd + e] - want[(size_t)t * hd + e]));
        }
        CHECK(worst < 1e-4, "f32 attention n=%d heads=%d: %.3g from exact attention", n, heads, worst);
        free(qkv), free(out), free(q), free(want);
    }
    ops_ctx_free(c);
}

/* The int8 context's attention (both products in u8 x s8) must equal its
 * own arithmetic done exactly (attention_int8_ref, which checks the zero
 * points, scales and key sums of the scores, the u8 probabilities and their
 * sum, V's channel scales), and stay near f32 attention. */
static void test_attention_int8(void)
{
    static const int shapes[][3] = {{37, 3, 16}, {196, 2, 64}};   /* tokens, heads, head dim */
    ops_ctx *c = NULL;
    hadm_error err = {0};
    CHECK(ops_ctx_new(2, &c, &err) == HADM_OK, "%s", err.msg);
    ops_ctx_set_compute(c, OPS_S8);
    for (int si = 0; si < 2; si++) {
        int n = shapes[si][0], heads = shapes[si][1], hd = shapes[si][2], ld = 3 * heads * hd;
        float scale = 1.0f / sqrtf((float)hd), qs, ks;
        float *qkv = malloc((size_t)n * ld * sizeof *qkv), *out = malloc((size_t)n * heads * hd * sizeof *out);
        double *q = malloc((size_t)n * hd * 4 * sizeof *q), *k = q + n * hd, *qd = k + n * hd, *kd = qd + n * hd;
        double *want = malloc((size_t)n * hd * 3 * sizeof *want), *exact = want + n * hd, *bound = exact + n * hd;
        int8_t k8[64];
        for (int i = 0; i < n * ld; i++)
            qkv[i] = uniform() * 2.5f + (i % 7 == 0 ? 1.0f : 0.0f);
        CHECK(ops_attention(c, n, heads, hd, scale, qkv, qkv + heads * hd, qkv + 2 * heads * hd, ld, out,
                            heads * hd, &err) == HADM_OK, "int8 attention: %s", err.msg);
        double worst_exact = 0, num = 0, den = 0;
        for (int h = 0; h < heads; h++) {
            /* each key and query row on its own range; the queries' scales
             * carry the softmax scale and log2(e): the s32 sums are scores
             * in base 2, hence the ln 2 back to natural units */
            for (int t = 0; t < n; t++) {
                const float *qr = qkv + t * ld + h * hd, *kr = qr + heads * hd;
                uint8_t qu[64];
                int32_t qz, ksum;
                ops_row_to_u8(qr, hd, ops_u8_levels(c), qu, &qs, &qz);
                ops_row_to_s8(kr, hd, k8, &ks, &ksum);
                qs *= scale * OPS_EXP_LOG2E;
                for (int e = 0; e < hd; e++) {
                    q[t * hd + e] = (double)qr[e] * scale;
                    k[t * hd + e] = kr[e];
                    qd[t * hd + e] = (double)qs * (qu[e] - qz) * M_LN2;
                    kd[t * hd + e] = (double)ks * k8[e];
                }
            }
            const float *v = qkv + 2 * heads * hd + h * hd;
            attention_ref(n, hd, q, k, v, ld, want);
            attention_int8_ref(n, hd, qd, kd, v, ld, ops_u8_levels(c), exact, bound);
            for (int t = 0; t < n; t++)
                for (int e = 0; e < hd; e++) {
                    double got = out[t * heads * hd + h * hd + e];
                    worst_exact = fmax(worst_exact, fabs(got - exact[t * hd + e]) / bound[t * hd + e]);
                    num += (got - want[t * hd + e]) * (got - want[t * hd + e]);
                    den += want[t * hd + e] * want[t * hd + e];
                }
        }
        double rel = sqrt(num / den);
        printf("int8 attention n=%d hd=%d: vs own arithmetic %.2f of its bound, vs exact rel L2 %.2e\n", n, hd,
               worst_exact, rel);
        CHECK(worst_exact <= 1, "int8 attention n=%d: %.3g times its bound from its own arithmetic done exactly",
              n, worst_exact);
        /* u8 Q and s8 K alone measured ~1e-2 here; u8 P and s8 V double it */
        CHECK(rel < 3e-2, "int8 attention n=%d: rel L2 %.3g from exact attention", n, rel);
        free(qkv), free(out), free(q), free(want);
    }
    ops_ctx_free(c);
}

int main(void)
{
    static float a[M * K], w[N * K], aq[M * K], wq[N * K], out[M * LDC], c0[M * LDC];
    static double want[M * N], exact[M * N];
    float bias[N];
    fill_a(a);
    for (int i = 0; i < N * K; i++)
        w[i] = uniform() * 0.05f * (1 + i / K % 5);
    for (int n = 0; n < N; n++)
        bias[n] = uniform();
    for (int i = 0; i < M * LDC; i++)
        c0[i] = uniform();
    ops_ctx *c = NULL;
    hadm_error err = {0};
    CHECK(ops_ctx_new(2, &c, &err) == HADM_OK, "%s", err.msg);
    ops_ctx_set_compute(c, OPS_BF16);   /* bf16 weights computed in bf16, whatever this CPU prefers */
    test_u8_rows(c, a);
    test_softmax_unnorm(c);
    test_softmax_s32_u8(c);
    test_swiglu_ln(c, a, w, bias);
    int8_operands(c, a, w, aq, wq);
    /* The S8 path quantises with 127 levels on CPUs without VNNI: then it
     * cannot equal the 255-level operands, only the f32 product. */
    const char *isa_note = "";
    for (int acc = 0; acc <= 1; acc++) {
        for (int t = OPS_BF16; t <= OPS_S8; t++) {
            ops_packed *pk = NULL;
            ops_wpart part = {w, OPS_SRC_F32, NULL, N};
            CHECK(ops_pack_parts(c, M, K, &part, 1, (ops_dtype)t, &pk, &err) == HADM_OK, "pack: %s", err.msg);
            if (!pk)
                continue;
            memcpy(out, c0, sizeof out);
            run(c, pk, a, bias, acc, out);
            reference(a, w, bias, acc ? c0 : NULL, want);
            double e = rel_err(out, want);
            CHECK(e < (t == OPS_S8 ? 2e-2 : 8e-3), "%s acc=%d: %.3g of the f32 product's range",
                  t == OPS_S8 ? "int8" : "bf16", acc, e);
            if (t == OPS_S8) {
                reference(aq, wq, bias, acc ? c0 : NULL, exact);
                double x = rel_err(out, exact);
                CHECK(x < 2e-6 || (x < 2e-2 && (isa_note = " (no VNNI: 7-bit activations)")),
                      "int8 acc=%d differs from its dequantised operands' product by %.3g", acc, x);
                printf("int8 acc=%d: vs f32 %.2e, vs own operands %.2e%s\n", acc, e, x, isa_note);
                /* the all-zero row gives exactly the bias (plus C) */
                int zero_ok = 1;
                for (int n = 0; n < N; n++)
                    zero_ok &= out[3 * LDC + n] == (float)(bias[n] + (acc ? c0[3 * LDC + n] : 0));
                CHECK(zero_ok, "int8: a zero row is not exactly the bias");
            } else {
                printf("bf16 acc=%d: vs f32 %.2e\n", acc, e);
            }
            /* C's padding columns are never written */
            int pad_ok = 1;
            for (int m = 0; m < M; m++)
                for (int n = N; n < LDC; n++)
                    pad_ok &= out[m * LDC + n] == c0[m * LDC + n];
            CHECK(pad_ok, "dtype %d wrote past N in a strided C", t);
            ops_packed_free(pk);
        }
    }
    ops_ctx_free(c);
    test_conv_int8();
    test_attention_f32();
    test_attention_int8();
    test_widened(a, w, bias, c0);
    test_weight_gemm_s8(a, w, bias);
    test_typed_b(a, w);
    return test_finish();
}
