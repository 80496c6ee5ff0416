/* int8 weights outside the ViT: convolutions, and the Linears that reach
 * ops_matmul as raw f32 weights (b_weight: the pyramid's transposed and
 * lateral convolutions), packed as int8 on first use and kept.
 *
 * int8 convolution. Each output pixel's receptive field (kh x kw x Cin
 * values, taps in (ky, kx, c) order, zeros outside the image) is one row
 * quantised to u8 on that row's own range, exactly as a Linear's
 * activations are; the range is the union of its pixels' ranges, each
 * found once, and the row is quantised straight from the input; the rows then meet the int8 weights, reordered
 * to [Cout][ky][kx][Cin], in the int8 matmul (dnnl_lowp.c), whose epilogue
 * writes f32 NHWC output with the bias. Rows go in chunks, so the u8
 * buffer stays a few MB whatever the image size.
 *
 * A scale per row rather than per image matters: feature maps mix strong
 * and weak regions, and one range for all would crush the weak ones. */
#include <stdlib.h>
#include <string.h>

#include "ops/cpu/dnnl_internal.h"

#define CHUNK_ROWS 4096

/* Writes a weight as [N][K] floats, the layout the int8 packing reads;
 * nonzero when out of memory. */
typedef int (*weight_rows_fn)(const void *arg, float *nk);

/* A weight as a packed int8 matmul operand (N output channels, K inputs),
 * made from rows() on first use and kept in the context's cache under key
 * (the weight pointer and shape): an S8 context keeps its weights. */
static hadm_status cached_s8(ops_ctx *c, const int64_t *key, int N, int K, weight_rows_fn rows, const void *arg,
                             const ops_packed **out, hadm_error *err)
{
    cache_entry *e = cpu_cache_find(c, key);
    if (e) {
        *out = e->packed;
        return HADM_OK;
    }
    float *w = malloc((size_t)N * K * sizeof *w);
    if (!w)
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory (int8 weights)");
    if (rows(arg, w)) {
        free(w);
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory (int8 weights)");
    }
    ops_wpart part = {w, OPS_SRC_F32, NULL, N};
    ops_packed *pk = NULL;
    hadm_status s = ops_pack_parts(c, CHUNK_ROWS, K, &part, 1, OPS_S8, &pk, err);
    free(w);
    if (s)
        return s;
    e = cpu_cache_victim(c, key);
    e->packed = pk;
    *out = pk;
    return HADM_OK;
}

/* [Cout][Cin][kh][kw] -> [Cout][ky][kx][Cin], the order of an im2col row */
static int conv_rows(const void *arg, float *w)
{
    const ops_conv *p = arg;
    float *wide;
    const float *src = ops_as_f32(p->w, p->w_type, (size_t)p->Cout * p->Cin * p->kh * p->kw, &wide);
    if (!src)
        return -1;
    for (int o = 0; o < p->Cout; o++)
        for (int ci = 0; ci < p->Cin; ci++)
            for (int ky = 0; ky < p->kh; ky++)
                for (int kx = 0; kx < p->kw; kx++)
                    w[((size_t)(o * p->kh + ky) * p->kw + kx) * p->Cin + ci] =
                        src[((size_t)(o * p->Cin + ci) * p->kh + ky) * p->kw + kx];
    free(wide);
    return 0;
}

/* B of a gemm as [N][K]: its rows (trans_b) or its transpose */
static int gemm_rows(const void *arg, float *w)
{
    const ops_gemm *g = arg;
    float *wide;
    const float *B = ops_as_f32(g->B, g->b_type, ops_gemm_b_elems(g), &wide);
    if (!B)
        return -1;
    for (int r = 0; r < g->N; r++)
        for (int k = 0; k < g->K; k++)
            w[(size_t)r * g->K + k] = g->trans_b ? B[r * g->ldb + k] : B[k * g->ldb + r];
    free(wide);
    return 0;
}

hadm_status cpu_matmul_weight_s8(ops_ctx *c, const ops_gemm *g, hadm_error *err)
{
    int64_t key[KEY_WORDS] = {5, (int64_t)(intptr_t)g->B, g->N, g->K, g->trans_b, g->ldb};
    ops_gemm q = *g;
    hadm_status s = cached_s8(c, key, g->N, g->K, gemm_rows, g, &q.packed, err);
    if (s)
        return s;
    q.B = NULL, q.trans_b = 1, q.b_weight = 0, q.b_type = OPS_SRC_F32;
    return ops_matmul(c, &q, err);
}

/* Each input pixel's range, widened to include 0: [pixel][lo, hi]. */
static void pixel_ranges(ops_ctx *c, const ops_conv *p, float *range)
{
    int64_t pixels = (int64_t)p->N * p->H * p->W;
    ops_ctx_enter(c);
#pragma omp parallel for schedule(static) if (pixels * p->Cin > 65536)
    for (int64_t i = 0; i < pixels; i++)
        ops_row_range(p->x + i * p->Cin, p->Cin, &range[2 * i], &range[2 * i + 1]);
}

/* Row r of the im2col matrix (output pixel r of the batch: taps in (ky, kx,
 * c) order, zeros outside the image) as u8 on the row's own range, which is
 * the union of its taps' pixel ranges: quantised straight from the input,
 * never gathered as floats. */
static void quantize_row(const ops_conv *p, int ho, int wo, const float *range, int levels, int64_t r,
                         uint8_t *q, float *scale, int32_t *zero)
{
    int64_t n = r / ((int64_t)ho * wo);
    int rem = (int)(r % ((int64_t)ho * wo)), oy = rem / wo, ox = rem % wo;
    int y0 = oy * p->stride - ops_conv_pad_rows(p), x0 = ox * p->stride - p->pad;
    float lo = 0.0f, hi = 0.0f;
    for (int ky = 0; ky < p->kh; ky++)
        for (int kx = 0; kx < p->kw; kx++) {
            int iy = y0 + ky, ix = x0 + kx;
            if (iy >= 0 && iy < p->H && ix >= 0 && ix < p->W) {
                const float *rg = range + 2 * ((n * p->H + iy) * p->W + ix);
                lo = rg[0] < lo ? rg[0] : lo;
                hi = rg[1] > hi ? rg[1] : hi;
            }
        }
    ops_u8_params(lo, hi, levels, scale, zero);
    size_t cin = (size_t)p->Cin;
    for (int ky = 0; ky < p->kh; ky++)
        for (int kx = 0; kx < p->kw; kx++) {
            int iy = y0 + ky, ix = x0 + kx;
            uint8_t *dst = q + (size_t)(ky * p->kw + kx) * cin;
            if (iy >= 0 && iy < p->H && ix >= 0 && ix < p->W)
                ops_quantize_u8(p->x + ((n * p->H + iy) * p->W + ix) * cin, p->Cin, *scale, *zero, levels, dst);
            else
                memset(dst, *zero, cin);
        }
}

hadm_status cpu_conv_int8(ops_ctx *c, const ops_conv *p, hadm_error *err)
{
    int ho = ops_conv_out_h(p), wo = ops_conv_out_w(p);
    int K = p->kh * p->kw * p->Cin;
    int64_t rows = (int64_t)p->N * ho * wo, pixels = (int64_t)p->N * p->H * p->W;
    const ops_packed *pk = NULL;
    int64_t key[KEY_WORDS] = {4, (int64_t)(intptr_t)p->w, p->Cout, p->Cin, p->kh, p->kw};
    hadm_status s = cached_s8(c, key, p->Cout, K, conv_rows, p, &pk, err);
    if (s)
        return s;
    size_t qbytes = ((size_t)CHUNK_ROWS * K + 63) & ~(size_t)63;
    size_t rbytes = CHUNK_ROWS * sizeof(float);
    char *buf = ops_conv_buffer(c, qbytes + 2 * rbytes + (size_t)pixels * 2 * sizeof(float));
    if (!buf)
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory (int8 conv rows)");
    uint8_t *q = (uint8_t *)buf;
    float *scale = (float *)(buf + qbytes), *range = (float *)(buf + qbytes + 2 * rbytes);
    int32_t *zero = (int32_t *)(buf + qbytes + rbytes);
    int levels = ops_u8_levels(c);
    pixel_ranges(c, p, range);
    for (int64_t r0 = 0; !s && r0 < rows; r0 += CHUNK_ROWS) {
        int m = rows - r0 < CHUNK_ROWS ? (int)(rows - r0) : CHUNK_ROWS;
        ops_ctx_enter(c);
#pragma omp parallel for schedule(static)
        for (int i = 0; i < m; i++)
            quantize_row(p, ho, wo, range, levels, r0 + i, q + (size_t)i * K, &scale[i], &zero[i]);
        ops_gemm g = {.M = m, .N = p->Cout, .K = K, .A = (const float *)q, .lda = K, .trans_b = 1,
                      .bias = p->bias, .C = p->y + r0 * p->Cout, .ldc = p->Cout, .packed = pk,
                      .a_converted = 1, .a_scale = scale, .a_zero = zero};
        s = ops_matmul(c, &g, err);
    }
    return s;
}
