/* Simple feature pyramid (spec MODEL.md section 3): four parallel branches
 * from the last ViT map (no top-down path) plus p6 = p5 subsampled.
 * All maps are NHWC, so every "LN" is a LayerNorm over contiguous channels. */
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "util/err.h"
#include "util/pages.h"

enum { BUF_UP, BUF_MAP_A, BUF_MAP_B, BUF_CONV };

hadm_status fpn_alloc(const hadm_config *cfg, fpn_maps *maps, hadm_error *err)
{
    memset(maps, 0, sizeof *maps);
    int G = cfg->img_size / cfg->patch;
    int side[5] = {4 * G, 2 * G, G, G / 2, (G / 2 + 1) / 2};
    maps->n = 5;
    maps->C = cfg->fpn_channels;
    for (int l = 0; l < 5; l++) {
        maps->h[l] = maps->w[l] = side[l];
        maps->stride[l] = cfg->anchor_strides[l];
        maps->map[l] = malloc((size_t)side[l] * side[l] * maps->C * sizeof(float));
        if (!maps->map[l]) {
            fpn_free(maps);
            return hadm_fail(err, HADM_ERR_NOMEM, "out of memory (feature pyramid)");
        }
    }
    return HADM_OK;
}

void fpn_free(fpn_maps *maps)
{
    for (int l = 0; l < CFG_MAX_LEVELS; l++) {
        free(maps->map[l]);
        maps->map[l] = NULL;
    }
}

/* Input rows per matmul of a transposed conv: its product for all of p2's
 * input (128 x 128 x 1024 floats) was 67 MB next to the 67 MB output. */
#define UP_BAND 16

/* ConvTranspose k2 s2 (non-overlapping): a matmul against the weight viewed
 * as [Cin][Cout*4], a band of input rows at a time, then each output column
 * (o, dy, dx) goes to pixel (2y+dy, 2x+dx). */
static hadm_status conv_transpose2x2(ops_ctx *c, const float *x, int H, int W, int Cin,
                                     const linear_w *l, int Cout, float *y, hadm_error *err)
{
    int band = H < UP_BAND ? H : UP_BAND, W2 = 2 * W;
    float *tmp = ops_scratch(c, BUF_UP, (size_t)band * W * Cout * 4);
    if (!tmp)
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory");
    for (int y0 = 0; y0 < H; y0 += band) {
        int rows = H - y0 < band ? H - y0 : band;
        ops_gemm g = {.M = rows * W, .N = Cout * 4, .K = Cin, .A = x + (size_t)y0 * W * Cin, .lda = Cin,
                      .B = l->w, .ldb = Cout * 4, .trans_b = 0, .C = tmp, .ldc = Cout * 4, .b_weight = 1,
                      .b_type = l->wt};
        hadm_status s = ops_matmul(c, &g, err);
        if (s)
            return s;
#pragma omp parallel for schedule(static)
        for (int p = 0; p < rows * W; p++) {
            int yy = y0 + p / W, xx = p % W;
            const float *src = tmp + (size_t)p * Cout * 4;
            for (int d = 0; d < 4; d++) {
                float *dst = y + ((size_t)(2 * yy + d / 2) * W2 + 2 * xx + d % 2) * Cout;
                for (int o = 0; o < Cout; o++)
                    dst[o] = src[o * 4 + d] + l->b[o];
            }
        }
    }
    ops_scratch_free(c, BUF_UP);
    return HADM_OK;
}

/* 1x1 conv + LN2d, then 3x3 conv + LN2d: the tail shared by all branches. */
/* x_slot: the scratch slot holding x (freed once read), or -1. */
static hadm_status lateral_output(ops_ctx *c, const hadm_config *cfg, const float *x, int x_slot, int H,
                                  int W, int Cin, const conv_ln_w *lat, const conv_ln_w *out, float *dst,
                                  hadm_error *err)
{
    int F = cfg->fpn_channels;
    int64_t P = (int64_t)H * W;
    float *mid = ops_scratch(c, BUF_CONV, (size_t)P * F);
    if (!mid)
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory");
    ops_gemm g = {.M = (int)P, .N = F, .K = Cin, .A = x, .lda = Cin, .B = lat->w, .ldb = Cin,
                  .trans_b = 1, .C = mid, .ldc = F, .b_weight = 1, .b_type = lat->wt};
    hadm_status s = ops_matmul(c, &g, err);
    if (s)
        return s;
    ops_scratch_free(c, x_slot);
    ops_layernorm(c, P, F, mid, F, lat->g, lat->b, cfg->fpn_eps, mid, F);
    ops_conv conv = {.N = 1, .H = H, .W = W, .Cin = F, .Cout = F, .kh = 3, .kw = 3, .stride = 1,
                     .pad = 1, .x = mid, .w = out->w, .w_type = out->wt, .y = dst};
    if ((s = ops_conv2d(c, &conv, err)))
        return s;
    ops_layernorm(c, P, F, dst, F, out->g, out->b, cfg->fpn_eps, dst, F);
    return HADM_OK;
}

/* p2 output rows per pass of its branch's tail. The second transposed
 * conv's output and the lateral's are 67 MB each at full size, next to p2
 * itself; made band by band (with one row of context each side for the
 * 3x3 conv, recomputed) they are a few MB. */
#define P2_BAND 32

/* Rows [y0, y0 + rows) of p2 from the first transposed conv's output `a`
 * (2G x 2G x D/2): the second transposed conv on the rows of `a` the band
 * needs, the lateral 1x1 conv + LN on the band's rows plus one each side
 * (zeros beyond the map: the 3x3 conv's padding), then the 3x3 conv + LN. */
static hadm_status p2_band(const struct hadm_model *m, ops_ctx *c, const float *a, int y0, int rows,
                           float *dst, hadm_error *err)
{
    const hadm_config *cfg = &m->cfg;
    int G = cfg->img_size / cfg->patch, D = cfg->embed_dim, F = cfg->fpn_channels;
    int H = 4 * G, W = 4 * G, Cb = D / 4;
    int lo = y0 > 0 ? y0 - 1 : 0, hi = y0 + rows < H ? y0 + rows + 1 : H;   /* p2 rows with context */
    int alo = lo / 2, ahi = (hi + 1) / 2;                                   /* rows of a they need */
    float *b = ops_scratch(c, BUF_MAP_B, (size_t)2 * (ahi - alo) * W * Cb);
    float *mid = ops_scratch(c, BUF_CONV, (size_t)(rows + 2) * W * F);
    if (!b || !mid)
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory");
    hadm_status s = conv_transpose2x2(c, a + (size_t)alo * (W / 2) * (D / 2), ahi - alo, W / 2, D / 2,
                                      &m->w.p2_up1, Cb, b, err);
    if (s)
        return s;
    /* mid row r is p2 row y0 - 1 + r */
    float *mid_lo = mid + (size_t)(lo - (y0 - 1)) * W * F;
    int64_t P = (int64_t)(hi - lo) * W;
    ops_gemm g = {.M = (int)P, .N = F, .K = Cb, .A = b + (size_t)(lo - 2 * alo) * W * Cb, .lda = Cb,
                  .B = m->w.p2_lat.w, .ldb = Cb, .trans_b = 1, .C = mid_lo, .ldc = F, .b_weight = 1,
                  .b_type = m->w.p2_lat.wt};
    if ((s = ops_matmul(c, &g, err)))
        return s;
    ops_layernorm(c, P, F, mid_lo, F, m->w.p2_lat.g, m->w.p2_lat.b, cfg->fpn_eps, mid_lo, F);
    if (y0 == 0)
        memset(mid, 0, (size_t)W * F * sizeof *mid);
    if (y0 + rows == H)
        memset(mid + (size_t)(rows + 1) * W * F, 0, (size_t)W * F * sizeof *mid);
    float *out = dst + (size_t)y0 * W * F;
    ops_conv conv = {.N = 1, .H = rows + 2, .W = W, .Cin = F, .Cout = F, .kh = 3, .kw = 3, .stride = 1,
                     .pad = 1, .rows_padded = 1, .x = mid, .w = m->w.p2_out.w, .w_type = m->w.p2_out.wt,
                     .y = out};
    if ((s = ops_conv2d(c, &conv, err)))
        return s;
    ops_layernorm(c, (int64_t)rows * W, F, out, F, m->w.p2_out.g, m->w.p2_out.b, cfg->fpn_eps, out, F);
    return HADM_OK;
}

static hadm_status branch_p2(const struct hadm_model *m, ops_ctx *c, const float *x, float *dst,
                             hadm_error *err)
{
    const hadm_config *cfg = &m->cfg;
    int G = cfg->img_size / cfg->patch, D = cfg->embed_dim, H = 4 * G;
    float *a = ops_scratch(c, BUF_MAP_A, (size_t)4 * G * G * D / 2);
    if (!a)
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory");
    hadm_status s = conv_transpose2x2(c, x, G, G, D, &m->w.p2_up0, D / 2, a, err);
    if (s)
        return s;
    ops_layernorm(c, (int64_t)4 * G * G, D / 2, a, D / 2, m->w.p2_ln_g, m->w.p2_ln_b, cfg->fpn_eps, a, D / 2);
    ops_gelu_erf(c, a, (int64_t)4 * G * G * D / 2);
    /* rows of a below the next band's first are dead: their pages go as
     * p2's fill, so the two are not both whole at once */
    size_t a_row = (size_t)2 * G * (D / 2);
    for (int y0 = 0; !s && y0 < H; y0 += P2_BAND) {
        s = p2_band(m, c, a, y0, H - y0 < P2_BAND ? H - y0 : P2_BAND, dst, err);
        int dead = (y0 + P2_BAND - 1) / 2;   /* the next band reads p2 rows from y0 + P2_BAND - 1 */
        pages_discard(a, (size_t)(dead < 2 * G ? dead : 2 * G) * a_row * sizeof *a);
    }
    return s;
}

static hadm_status branch_p3(const struct hadm_model *m, ops_ctx *c, const float *x, float *dst,
                             hadm_error *err)
{
    const hadm_config *cfg = &m->cfg;
    int G = cfg->img_size / cfg->patch, D = cfg->embed_dim;
    float *a = ops_scratch(c, BUF_MAP_A, (size_t)4 * G * G * D / 2);
    if (!a)
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory");
    hadm_status s = conv_transpose2x2(c, x, G, G, D, &m->w.p3_up0, D / 2, a, err);
    if (s)
        return s;
    return lateral_output(c, cfg, a, BUF_MAP_A, 2 * G, 2 * G, D / 2, &m->w.p3_lat, &m->w.p3_out, dst, err);
}

static hadm_status branch_p5(const struct hadm_model *m, ops_ctx *c, const float *x, float *dst,
                             hadm_error *err)
{
    const hadm_config *cfg = &m->cfg;
    int G = cfg->img_size / cfg->patch, D = cfg->embed_dim, H = G / 2;
    float *a = ops_scratch(c, BUF_MAP_A, (size_t)H * H * D);
    if (!a)
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory");
    for (int y = 0; y < H; y++)
        for (int xx = 0; xx < H; xx++) {
            const float *p00 = x + ((size_t)(2 * y) * G + 2 * xx) * D, *p01 = p00 + D;
            const float *p10 = p00 + (size_t)G * D, *p11 = p10 + D;
            float *o = a + ((size_t)y * H + xx) * D;
            for (int d = 0; d < D; d++) {
                float m0 = p00[d] > p01[d] ? p00[d] : p01[d], m1 = p10[d] > p11[d] ? p10[d] : p11[d];
                o[d] = m0 > m1 ? m0 : m1;
            }
        }
    return lateral_output(c, cfg, a, BUF_MAP_A, H, H, D, &m->w.p5_lat, &m->w.p5_out, dst, err);
}

static void subsample2(const float *src, int H, int W, int C, float *dst, int Ho, int Wo)
{
    for (int y = 0; y < Ho; y++)
        for (int x = 0; x < Wo; x++)
            memcpy(dst + ((size_t)y * Wo + x) * C, src + ((size_t)(2 * y) * W + 2 * x) * C,
                   (size_t)C * sizeof *dst);
    (void)H;
}

hadm_status fpn_forward(const struct hadm_model *m, ops_ctx *c, const float *tokens, fpn_maps *maps,
                        const engine_trace *t, hadm_error *err)
{
    const hadm_config *cfg = &m->cfg;
    int G = cfg->img_size / cfg->patch;
    hadm_status s;
    /* each branch's buffers are returned before the next, and p2 (67 MB at
     * full size) comes last: a branch's buffers then never sit beside it */
    if ((s = branch_p3(m, c, tokens, maps->map[1], err)))
        return s;
    model_stage_end(m, c);   /* each branch's buffers and the weights it read in place */
    if ((s = lateral_output(c, cfg, tokens, -1, G, G, cfg->embed_dim, &m->w.p4_lat, &m->w.p4_out,
                            maps->map[2], err)) ||
        (s = branch_p5(m, c, tokens, maps->map[3], err)))
        return s;
    subsample2(maps->map[3], maps->h[3], maps->w[3], maps->C, maps->map[4], maps->h[4], maps->w[4]);
    model_stage_end(m, c);
    if ((s = branch_p2(m, c, tokens, maps->map[0], err)))
        return s;
    static const char *names[5] = {"fpn.p2", "fpn.p3", "fpn.p4", "fpn.p5", "fpn.p6"};
    for (int l = 0; l < 5; l++) {
        int64_t shape[4] = {1, maps->C, maps->h[l], maps->w[l]};
        trace_f32(t, names[l], TRACE_NHWC_OF_NCHW, maps->map[l], 4, shape);
    }
    return HADM_OK;
}
