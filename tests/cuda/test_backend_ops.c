/* Cross-check of the CUDA backend against the CPU (like ggml's
 * test-backend-ops): every CUDA op on random inputs against the CPU op in
 * f32, then the backbone and pyramid of each golden model, then the golden
 * cases' detections on the GPU. Exits 77 (ctest: skipped) without a GPU.
 *
 * Tolerances (errors are max|gpu - cpu| / max|cpu| unless said otherwise):
 *   f32 kernels (LayerNorm, RoPE, SiLU-mul, softmax, layout moves) 1e-5;
 *   ROIAlign 1e-5; NMS: identical kept lists;
 *   bf16 GEMM against f32 on the same bf16-rounded operands: 1e-3;
 *   bf16 outputs (LayerNorm -> bf16): 8e-3 (bf16 has 8 bits of mantissa);
 *   attention (bf16 Q, K, P on tensor cores) against f32: 2e-2;
 *   backbone tokens after all blocks, pyramid maps: relative L2 error 3e-2;
 *   detections vs golden (f64 reference): every detection scoring >= 0.1 on
 *   either side matched by one of the same class with IoU >= 0.9 and
 *   |score difference| <= 0.03.
 * Set HADM_XCHECK_MODEL=<file.safetensors> to add that model (e.g. a
 * full-size synthetic one) to the backbone/pyramid comparison. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/boxes.h"
#include "engine/cuda/cuda_model.h"
#include "golden.h"
#include "ops/ops.h"
#include "testutil.h"

static cuda_dev *dev;
static ops_ctx *cpu;
static uint64_t rng = 0x9e3779b97f4a7c15ull;

static float frand(void)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

static float *rnd(size_t n, float scale)
{
    float *v = malloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++)
        v[i] = frand() * scale;
    return v;
}

static uint16_t bf(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static float unbf(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* host f32 -> bf16 bits and back to the rounded f32 (in place) */
static uint16_t *to_bf(float *v, size_t n)
{
    uint16_t *h = malloc(n * 2);
    for (size_t i = 0; i < n; i++)
        v[i] = unbf(h[i] = bf(v[i]));
    return h;
}

static void *up(const void *src, size_t bytes)
{
    void *d = NULL;
    hadm_error err = {0};
    if (cuda_malloc(0, bytes, &d, &err) || (src && cuda_upload(d, src, bytes, &err)))
        fprintf(stderr, "upload: %s\n", err.msg), exit(1);
    return d;
}

static void *down(const void *d, size_t bytes)
{
    void *h = malloc(bytes);
    hadm_error err = {0};
    if (cuda_copy_to_host(dev, h, d, bytes, &err) || cuda_dev_sync(dev, &err))
        fprintf(stderr, "download: %s\n", err.msg), exit(1);
    return h;
}

static double max_err(const float *got, const float *want, size_t n)
{
    double e = 0, m = 1e-12;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - want[i]);
        e = d > e || isnan(d) ? d : e;
        m = fabs(want[i]) > m ? fabs(want[i]) : m;
    }
    return e / m;
}

static void test_gemm(int M, int N, int K, int bias, int relu, float beta)
{
    float *A = rnd((size_t)M * K, 1), *W = rnd((size_t)N * K, 0.1f), *b = rnd((size_t)N, 1), *C = rnd((size_t)M * N, 1);
    uint16_t *Ah = to_bf(A, (size_t)M * K), *Wh = to_bf(W, (size_t)N * K);
    float *want = malloc((size_t)M * N * 4);
    memcpy(want, C, (size_t)M * N * 4);
    hadm_error err = {0};
    ops_gemm g = {.M = M, .N = N, .K = K, .A = A, .lda = K, .B = W, .ldb = K, .trans_b = 1, .bias = bias ? b : NULL,
                  .C = want, .ldc = N, .accumulate = beta != 0};
    CHECK(ops_matmul(cpu, &g, &err) == HADM_OK, "%s", err.msg);
    for (size_t i = 0; relu && i < (size_t)M * N; i++)
        want[i] = want[i] > 0 ? want[i] : 0;
    void *dA = up(Ah, (size_t)M * K * 2), *dW = up(Wh, (size_t)N * K * 2), *db = up(b, (size_t)N * 4);
    for (int simple = 0; simple < 2; simple++) {
        void *dC = up(C, (size_t)M * N * 4);
        cuda_gemm cg = {M, N, K, dA, K, dW, K, bias ? db : NULL, dC, N, beta, relu};
        CHECK((simple ? cuda_matmul_simple(dev, &cg, &err) : cuda_matmul(dev, &cg, &err)) == HADM_OK, "%s", err.msg);
        float *got = down(dC, (size_t)M * N * 4);
        double e = max_err(got, want, (size_t)M * N);
        printf("gemm%s %dx%dx%d bias %d relu %d beta %g: err %.2e\n", simple ? " (plain kernel)" : "", M, N, K, bias,
               relu, (double)beta, e);
        CHECK(e <= 1e-3, "gemm %dx%dx%d simple %d: %.3e", M, N, K, simple, e);
        free(got);
        cuda_free(dC);
    }
    cuda_free(dA), cuda_free(dW), cuda_free(db);
    free(A), free(W), free(b), free(C), free(Ah), free(Wh), free(want);
}

static void test_rows(int rows, int n)
{
    size_t sz = (size_t)rows * n;
    float *x = rnd(sz, 3), *g = rnd((size_t)n, 1), *b = rnd((size_t)n, 1), *y = rnd(sz, 1);
    for (int act = 0; act < 3; act++) {
        float *want = malloc(sz * 4);
        ops_layernorm(cpu, rows, n, x, n, g, b, 1e-6f, want, n);
        if (act == CUDA_ACT_GELU)
            ops_gelu_erf(cpu, want, (int64_t)sz);
        if (act == CUDA_ACT_RELU)
            ops_relu(cpu, want, (int64_t)sz);
        float *dx = up(x, sz * 4), *dg = up(g, (size_t)n * 4), *db = up(b, (size_t)n * 4), *dy = up(NULL, sz * 4);
        uint16_t *dh = up(NULL, sz * 2);
        cuda_layernorm(dev, rows, n, dx, n, dg, db, 1e-6f, act, dy, n, dh, n);
        float *got = down(dy, sz * 4);
        uint16_t *goth = down(dh, sz * 2);
        float *gotb = malloc(sz * 4);
        for (size_t i = 0; i < sz; i++)
            gotb[i] = unbf(goth[i]);
        double e = max_err(got, want, sz), eb = max_err(gotb, want, sz);
        printf("layernorm %dx%d act %d: f32 %.2e bf16 %.2e\n", rows, n, act, e, eb);
        CHECK(e <= 1e-5 && eb <= 8e-3, "layernorm %dx%d act %d: %.3e / %.3e", rows, n, act, e, eb);
        free(want), free(got), free(goth), free(gotb);
        cuda_free(dx), cuda_free(dg), cuda_free(db), cuda_free(dy), cuda_free(dh);
    }
    /* SiLU-mul and softmax in place */
    float *a = rnd(sz, 4), *want = malloc(sz * 4);
    memcpy(want, a, sz * 4);
    ops_silu_mul(cpu, rows, n, want, n, y, n);
    float *da = up(a, sz * 4), *dy = up(y, sz * 4);
    cuda_silu_mul(dev, rows, n, da, n, dy, n);
    float *got = down(da, sz * 4);
    double e = max_err(got, want, sz);
    CHECK(e <= 1e-5, "silu_mul %dx%d: %.3e", rows, n, e);
    free(got);
    memcpy(want, a, sz * 4);
    ops_softmax_rows(cpu, rows, n, want, n);
    cuda_free(da);
    da = up(a, sz * 4);
    cuda_softmax_rows(dev, rows, n, da, n);
    got = down(da, sz * 4);
    double es = max_err(got, want, sz);
    printf("silu_mul %dx%d: %.2e softmax: %.2e\n", rows, n, e, es);
    CHECK(es <= 1e-5, "softmax %dx%d: %.3e", rows, n, es);
    free(got), free(a), free(want), free(x), free(g), free(b), free(y);
    cuda_free(da), cuda_free(dy);
}

static void test_rope(int rows, int heads, int hd, int period)
{
    size_t sz = (size_t)rows * heads * hd;
    float *x = rnd(sz, 2), *cs = rnd((size_t)period * hd, 1), *sn = rnd((size_t)period * hd, 1);
    float *want = malloc(sz * 4);
    memcpy(want, x, sz * 4);
    ops_rope(cpu, rows, heads, hd, want, heads * hd, cs, sn, period);
    float *dx = up(x, sz * 4), *dc = up(cs, (size_t)period * hd * 4), *ds = up(sn, (size_t)period * hd * 4);
    cuda_rope(dev, rows, heads, hd, dx, heads * hd, dc, ds, period);
    float *got = down(dx, sz * 4);
    double e = max_err(got, want, sz);
    printf("rope %d rows: %.2e\n", rows, e);
    CHECK(e <= 1e-5, "rope: %.3e", e);
    free(x), free(cs), free(sn), free(want), free(got);
    cuda_free(dx), cuda_free(dc), cuda_free(ds);
}

static void test_attention(int units, int N, int heads, int hd)
{
    int D = heads * hd;
    size_t sz = (size_t)units * N * D;
    float *q = rnd(sz, 2), *k = rnd(sz, 2), *v = rnd(sz, 1), *want = malloc(sz * 4);
    hadm_error err = {0};
    float scale = 1.0f / sqrtf((float)hd);
    for (int u = 0; u < units; u++) {
        size_t o = (size_t)u * N * D;
        CHECK(ops_attention(cpu, N, heads, hd, scale, q + o, k + o, v + o, D, want + o, D, &err) == HADM_OK, "%s",
              err.msg);
    }
    float *dq = up(q, sz * 4), *dk = up(k, sz * 4), *dv = up(v, sz * 4);
    uint16_t *dout = up(NULL, sz * 2);
    float *got = malloc(sz * 4);
    for (int simple = 0; simple < 2; simple++) {
        hadm_status s = simple ? cuda_attention_simple(dev, units, N, heads, hd, scale, dq, dk, dv, D, dout, D, &err)
                               : cuda_attention(dev, units, N, heads, hd, scale, dq, dk, dv, D, dout, D, &err);
        CHECK(s == HADM_OK, "%s", err.msg);
        uint16_t *h = down(dout, sz * 2);
        for (size_t i = 0; i < sz; i++)
            got[i] = unbf(h[i]);
        double e = max_err(got, want, sz);
        printf("attention%s %d x %d tokens, %d heads x %d: err %.2e\n", simple ? " (plain)" : "", units, N, heads, hd, e);
        CHECK(e <= 2e-2, "attention %s N=%d hd=%d: %.3e", simple ? "plain" : "fused", N, hd, e);
        free(h);
    }
    free(q), free(k), free(v), free(want), free(got);
    cuda_free(dq), cuda_free(dk), cuda_free(dv), cuda_free(dout);
}

/* im2col + GEMM against the CPU convolution, on bf16-rounded operands */
static void test_conv(int N, int H, int Cin, int Cout)
{
    size_t xs = (size_t)N * H * H * Cin, ws = (size_t)Cout * Cin * 9, ys = (size_t)N * H * H * Cout;
    float *x = rnd(xs, 1), *w = rnd(ws, 0.1f), *b = rnd((size_t)Cout, 1), *want = malloc(ys * 4);
    free(to_bf(x, xs));
    uint16_t *wt = malloc(ws * 2), *wh = to_bf(w, ws);
    for (int o = 0; o < Cout; o++)
        for (int c = 0; c < Cin; c++)
            for (int t = 0; t < 9; t++)
                wt[((size_t)o * 9 + t) * Cin + c] = wh[((size_t)o * Cin + c) * 9 + t];
    hadm_error err = {0};
    ops_conv cv = {.N = N, .H = H, .W = H, .Cin = Cin, .Cout = Cout, .kh = 3, .kw = 3, .stride = 1, .pad = 1,
                   .x = x, .w = w, .bias = b, .y = want};
    CHECK(ops_conv2d(cpu, &cv, &err) == HADM_OK, "%s", err.msg);
    float *dx = up(x, xs * 4), *db = up(b, (size_t)Cout * 4), *dy = up(NULL, ys * 4);
    uint16_t *dw = up(wt, ws * 2), *cols = up(NULL, (size_t)N * H * H * 9 * Cin * 2);
    cuda_im2col3x3(dev, dx, N, H, H, Cin, cols);
    cuda_gemm g = {N * H * H, Cout, 9 * Cin, cols, 9 * Cin, dw, 9 * Cin, db, dy, Cout, 0, 0};
    CHECK(cuda_matmul(dev, &g, &err) == HADM_OK, "%s", err.msg);
    float *got = down(dy, ys * 4);
    double e = max_err(got, want, ys);
    printf("conv3x3 %dx%dx%dx%d -> %d: %.2e\n", N, H, H, Cin, Cout, e);
    CHECK(e <= 1e-3, "conv3x3: %.3e", e);
    free(x), free(w), free(b), free(want), free(wt), free(wh), free(got);
    cuda_free(dx), cuda_free(db), cuda_free(dy), cuda_free(dw), cuda_free(cols);
}

static void test_roi_align(void)
{
    int H = 40, W = 56, C = 32, res = 7, R = 64;
    float *map = rnd((size_t)H * W * C, 1), *boxes = malloc((size_t)R * 16);
    for (int r = 0; r < R; r++) {
        float x0 = (frand() + 1) * 200, y0 = (frand() + 1) * 150;
        boxes[r * 4] = x0, boxes[r * 4 + 1] = y0;
        boxes[r * 4 + 2] = x0 + (frand() + 1.05f) * 60, boxes[r * 4 + 3] = y0 + (frand() + 1.05f) * 60;
    }
    size_t per = (size_t)res * res * C;
    float *want = malloc(R * per * 4);
    for (int r = 0; r < R; r++)
        ops_roi_align(map, H, W, C, boxes + r * 4, 0.125f, res, 0, 1, want + r * per);
    int counts[4] = {0, R, 0, 0};
    float *dmap = up(map, (size_t)H * W * C * 4), *db = up(boxes, (size_t)R * 16), *dout = up(NULL, R * per * 4);
    int *dc = up(counts, sizeof counts), *dl = up(NULL, (size_t)R * 4);
    /* one level whatever the box size: min_level = max_level */
    cuda_pooler p = {.map = {dmap, dmap, dmap, dmap}, .H = {H, H, H, H}, .W = {W, W, W, W},
                     .scale = {0.125f, 0.125f, 0.125f, 0.125f}, .C = C, .res = res, .sampling_ratio = 0, .aligned = 1,
                     .min_level = 3, .max_level = 3, .canonical_level = 4, .canonical_size = 224};
    cuda_roi_align(dev, &p, db, dc, R, dl, dout);
    float *got = down(dout, R * per * 4);
    double e = max_err(got, want, R * per);
    printf("roi_align %d boxes: %.2e\n", R, e);
    CHECK(e <= 1e-5, "roi_align: %.3e", e);
    free(map), free(boxes), free(want), free(got);
    cuda_free(dmap), cuda_free(db), cuda_free(dout), cuda_free(dc), cuda_free(dl);
}

static void test_nms(int n, int groups)
{
    float *boxes = malloc((size_t)n * 16), *score = malloc((size_t)n * 4);
    int *grp = malloc((size_t)n * 4), *keep = malloc((size_t)n * 4), nk = 0;
    for (int i = 0; i < n; i++) {
        float x0 = (frand() + 1) * 300, y0 = (frand() + 1) * 300;
        boxes[i * 4] = x0, boxes[i * 4 + 1] = y0;
        boxes[i * 4 + 2] = x0 + (frand() + 1.1f) * 40, boxes[i * 4 + 3] = y0 + (frand() + 1.1f) * 40;
        score[i] = i % 17 == 0 ? -INFINITY : (float)(int)((frand() + 1) * 50) / 50.0f;   /* ties on purpose */
        grp[i] = (int)((frand() + 1) * 0.5f * groups) % groups;
    }
    int valid = 0;
    for (int i = 0; i < n; i++)
        if (isfinite(score[i]))
            boxes[valid * 4] = boxes[i * 4], boxes[valid * 4 + 1] = boxes[i * 4 + 1],
            boxes[valid * 4 + 2] = boxes[i * 4 + 2], boxes[valid * 4 + 3] = boxes[i * 4 + 3],
            score[valid] = score[i], grp[valid] = grp[i], valid++;
    for (int i = valid; i < n; i++)
        score[i] = -INFINITY;
    hadm_error err = {0};
    CHECK(boxes_batched_nms(boxes, score, grp, valid, 0.5f, keep, &nk, &err) == HADM_OK, "%s", err.msg);
    size_t temp = cuda_sort_temp_bytes(n);
    void *dt = up(NULL, temp);
    float *db = up(boxes, (size_t)n * 16), *dk = up(score, (size_t)n * 4), *dko = up(NULL, (size_t)n * 4);
    int *dg = up(grp, (size_t)n * 4), *dvi = up(NULL, (size_t)n * 4), *dvo = up(NULL, (size_t)n * 4);
    int *dkeep = up(NULL, (size_t)n * 4), *dc = up(NULL, 64);
    unsigned long long *dm = up(NULL, (size_t)n * ((n + 63) / 64) * 8);
    cuda_iota(dev, dvi, n);
    CHECK(cuda_sort_desc(dev, dt, temp, dk, dko, dvi, dvo, n, &err) == HADM_OK, "%s", err.msg);
    cuda_nms(dev, db, dg, dko, dvo, n, 0.5f, n, dm, dkeep, dc);
    int *counts = down(dc, 64), *got = down(dkeep, (size_t)n * 4);
    int same = counts[0] == nk && counts[2] == valid;
    for (int i = 0; same && i < nk; i++)
        same = got[i] == keep[i];
    printf("nms %d boxes (%d valid), %d groups: kept %d (cpu %d)%s\n", n, counts[2], groups, counts[0], nk,
           same ? "" : " DIFFERENT");
    CHECK(same, "nms differs: gpu kept %d of %d, cpu %d of %d", counts[0], counts[2], nk, valid);
    free(boxes), free(score), free(grp), free(keep), free(counts), free(got);
    cuda_free(dt), cuda_free(db), cuda_free(dk), cuda_free(dko), cuda_free(dg), cuda_free(dvi), cuda_free(dvo);
    cuda_free(dkeep), cuda_free(dc), cuda_free(dm);
}

/* backend_model.c: backbone, pyramid and detections of whole models */
void test_models(cuda_dev *dev, ops_ctx *cpu);

int main(void)
{
    int n = 0;
    hadm_error err = {0};
    if (cuda_device_count(&n, &err) || n == 0) {
        printf("no CUDA device (%s): skipped\n", err.msg[0] ? err.msg : "none visible");
        return 77;
    }
    if (cuda_dev_new(0, (size_t)32 << 20, &dev, &err) || ops_ctx_new(0, &cpu, &err)) {
        fprintf(stderr, "setup: %s\n", err.msg);
        return 1;
    }
    test_gemm(4096, 1024, 1024, 1, 0, 0);
    test_gemm(4096, 2730, 1024, 1, 0, 0);
    test_gemm(512, 1024, 2730, 1, 0, 1);
    test_gemm(1000, 1024, 12544, 1, 1, 0);
    test_gemm(1000, 12, 1024, 1, 0, 0);
    test_gemm(37, 7, 170, 1, 1, 0);
    test_gemm(256, 64, 170, 0, 0, 1);
    test_rows(300, 1024);
    test_rows(64, 2730);
    test_rows(1000, 7);
    test_rope(4096, 16, 64, 256);
    test_attention(4, 256, 16, 64);
    test_attention(1, 4096, 16, 64);
    test_attention(3, 100, 4, 64);
    test_attention(2, 16, 4, 16);
    test_conv(1, 64, 256, 256);
    test_conv(50, 7, 256, 256);
    test_roi_align();
    test_nms(4768, 5);
    test_nms(6000, 12);
    test_models(dev, cpu);
    cuda_dev_free(dev);
    ops_ctx_free(cpu);
    return test_finish();
}
