/* Region proposal network (spec MODEL.md section 4): the shared head on
 * every pyramid level, then proposal selection in the original's order of
 * operations (P14): per-level top-k on raw logits, decode, drop non-finite,
 * clip to the resized (unpadded) image, drop empty boxes, NMS per level,
 * merge, global top-k. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/boxes.h"
#include "util/err.h"

enum { BUF_CONV_A, BUF_CONV_B, BUF_BAND };

/* Output rows per pass of the head. At full size the convs' outputs on p2
 * are 67 MB each; a band of 32 rows (plus the rows of context its convs
 * need, recomputed: 6% more work for the first conv) needs ~9 MB. */
#define RPN_BAND 32

/* Rows [y0 - halo, y0 + rows + halo) of map into band, zeros outside it. */
static void copy_band(const float *map, int H, int W, int C, int y0, int rows, int halo, float *band)
{
    size_t row = (size_t)W * C;
    for (int r = 0; r < rows + 2 * halo; r++) {
        int y = y0 - halo + r;
        if (y < 0 || y >= H)
            memset(band + r * row, 0, row * sizeof *band);
        else
            memcpy(band + r * row, map + y * row, row * sizeof *band);
    }
}

/* The head's 3x3 convs (+ReLU) on one band; returns the last output, whose
 * rows are the band's. Each conv eats one row of context per side; between
 * convs, rows beyond the map are zeroed: they are the next conv's padding,
 * not a convolution of padding. */
static hadm_status band_convs(const struct hadm_model *m, ops_ctx *c, float *x, int H, int W, int y0,
                              int rows, float *buf[2], float **out, hadm_error *err)
{
    const hadm_config *cfg = &m->cfg;
    int n = cfg->rpn_convs, xr = rows + 2 * n, cin = cfg->fpn_channels;
    for (int i = 0; i < n; i++) {
        int cout = cfg->rpn_conv_dims[i];
        float *y = buf[i % 2];
        ops_conv cv = {.N = 1, .H = xr, .W = W, .Cin = cin, .Cout = cout, .kh = 3, .kw = 3,
                       .stride = 1, .pad = 1, .rows_padded = 1, .x = x, .w = m->w.rpn_conv[i].w,
                       .w_type = m->w.rpn_conv[i].wt, .bias = m->w.rpn_conv[i].b, .y = y};
        hadm_status s = ops_conv2d(c, &cv, err);
        if (s)
            return s;
        xr -= 2;
        ops_relu(c, y, (int64_t)xr * W * cout);
        int first = y0 - n + i + 1;   /* map row of y's first row */
        for (int r = 0; r < xr; r++)
            if (first + r < 0 || first + r >= H)
                memset(y + (size_t)r * W * cout, 0, (size_t)W * cout * sizeof *y);
        x = y, cin = cout;
    }
    *out = x;
    return HADM_OK;
}

hadm_status rpn_head_level(const struct hadm_model *m, ops_ctx *c, const float *map, int H, int W,
                           float *logits, float *deltas, hadm_error *err)
{
    const hadm_config *cfg = &m->cfg;
    const hadm_weights *w = &m->w;
    int A = cfg->num_anchors, n = cfg->rpn_convs, C = cfg->fpn_channels, band = H < RPN_BAND ? H : RPN_BAND;
    int widest = C;
    for (int i = 0; i < n; i++)
        widest = cfg->rpn_conv_dims[i] > widest ? cfg->rpn_conv_dims[i] : widest;
    size_t cells = (size_t)(band + 2 * n) * W;
    float *in = ops_scratch(c, BUF_BAND, cells * C);
    float *buf[2] = {ops_scratch(c, BUF_CONV_A, cells * widest), ops_scratch(c, BUF_CONV_B, cells * widest)};
    if (!in || !buf[0] || !buf[1])
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory (rpn head)");
    int cin = n ? cfg->rpn_conv_dims[n - 1] : C;
    for (int y0 = 0; y0 < H; y0 += band) {
        int rows = H - y0 < band ? H - y0 : band;
        float *x;
        copy_band(map, H, W, C, y0, rows, n, in);
        hadm_status s = band_convs(m, c, in, H, W, y0, rows, buf, &x, err);
        if (s)
            return s;
        /* the 1x1 convs are matmuls over the NHWC pixels; their outputs
         * [P][A] and [P][4A] are already in the (y, x, a) anchor order */
        size_t p0 = (size_t)y0 * W;
        ops_gemm g = {.M = rows * W, .N = A, .K = cin, .A = x, .lda = cin, .B = w->rpn_obj.w,
                      .ldb = cin, .trans_b = 1, .bias = w->rpn_obj.b, .C = logits + p0 * A, .ldc = A};
        if ((s = ops_matmul(c, &g, err)))
            return s;
        g.N = 4 * A, g.B = w->rpn_delta.w, g.bias = w->rpn_delta.b, g.C = deltas + p0 * 4 * A, g.ldc = 4 * A;
        if ((s = ops_matmul(c, &g, err)))
            return s;
    }
    return HADM_OK;
}

/* The per-level top-k candidates, decoded. */
typedef struct {
    int n;            /* candidates so far */
    float *box;       /* [n][4] */
    float *logit;     /* [n] */
    int *level;       /* [n] */
} candidates;

static void trace_head(const engine_trace *t, int level, int A, int H, int W, const float *logits,
                       const float *deltas)
{
    if (!t)
        return;
    char name[64];
    int64_t shape[4] = {1, A, H, W};
    snprintf(name, sizeof name, "rpn.head.objectness_logits.p%d", level + 2);
    trace_f32(t, name, TRACE_NHWC_OF_NCHW, logits, 4, shape);
    shape[1] = 4 * A;
    snprintf(name, sizeof name, "rpn.head.anchor_deltas.p%d", level + 2);
    trace_f32(t, name, TRACE_NHWC_OF_NCHW, deltas, 4, shape);
}

/* Head on level l, its top-k anchors by raw logit, decoded (before any clip). */
static hadm_status level_candidates(const struct hadm_model *m, ops_ctx *c, const fpn_maps *maps,
                                    int l, candidates *cd, const engine_trace *t, hadm_error *err)
{
    const hadm_config *cfg = &m->cfg;
    int A = cfg->num_anchors, H = maps->h[l], W = maps->w[l];
    int64_t n = (int64_t)H * W * A;
    int k = (int)(n < cfg->rpn_pre_topk ? n : cfg->rpn_pre_topk);
    if (n == 0) /* a level too small to hold a pixel has no anchors */
        return HADM_OK;
    float *logits = malloc((size_t)n * sizeof *logits);
    float *deltas = malloc((size_t)n * 4 * sizeof *deltas);
    int *idx = malloc((size_t)k * sizeof *idx);
    hadm_status s = HADM_OK;
    if (!logits || !deltas || !idx)
        s = hadm_fail(err, HADM_ERR_NOMEM, "out of memory (rpn)");
    if (!s)
        s = rpn_head_level(m, c, maps->map[l], H, W, logits, deltas, err);
    if (!s) {
        trace_head(t, l, A, H, W, logits, deltas);
        s = boxes_topk(logits, n, k, idx, err);
    }
    if (!s) {
        float cell[CFG_MAX_RATIOS][4];
        boxes_cell_anchors(cfg, l, cell);
        float clamp = (float)cfg->scale_clamp;
        for (int j = 0; j < k; j++) {
            float anchor[4];
            boxes_anchor(cell, A, W, maps->stride[l], cfg->anchor_offset, idx[j], anchor);
            int o = cd->n++;
            boxes_decode(anchor, deltas + (int64_t)idx[j] * 4, cfg->rpn_weights, clamp, cd->box + o * 4);
            cd->logit[o] = logits[idx[j]];
            cd->level[o] = l;
        }
    }
    free(logits);
    free(deltas);
    free(idx);
    return s;
}

/* Drops non-finite candidates, clips, drops boxes not larger than min_size
 * (in place, order kept). */
static void filter_candidates(candidates *cd, const image_geom *g, float min_size)
{
    int n = 0;
    for (int i = 0; i < cd->n; i++) {
        float *b = cd->box + i * 4;
        if (!boxes_finite(b) || !isfinite(cd->logit[i]))
            continue;
        boxes_clip(b, g->new_h, g->new_w);
        if (!(b[2] - b[0] > min_size && b[3] - b[1] > min_size))
            continue;
        float *d = cd->box + n * 4;
        d[0] = b[0], d[1] = b[1], d[2] = b[2], d[3] = b[3];
        cd->logit[n] = cd->logit[i];
        cd->level[n] = cd->level[i];
        n++;
    }
    cd->n = n;
}

static void trace_proposals(const engine_trace *t, const float *boxes, const float *logit,
                            const int *keep, int nk)
{
    if (!t)
        return;
    float *kept = malloc((size_t)(nk > 0 ? nk : 1) * sizeof *kept);
    if (!kept)
        return;
    for (int i = 0; i < nk; i++)
        kept[i] = logit[keep[i]];
    int64_t shape[2] = {nk, 4};
    trace_f32(t, "rpn.proposals.boxes", TRACE_SAME, boxes, 2, shape);
    trace_f32(t, "rpn.proposals.objectness_logits", TRACE_SAME, kept, 1, shape);
    free(kept);
}

hadm_status rpn_forward(const struct hadm_model *m, ops_ctx *c, const fpn_maps *maps,
                        const image_geom *g, float *proposals, int *n, const engine_trace *t,
                        hadm_error *err)
{
    const hadm_config *cfg = &m->cfg;
    *n = 0;
    if (maps->n < cfg->n_levels || maps->C != cfg->fpn_channels)
        return hadm_fail(err, HADM_ERR_INTERNAL, "rpn: pyramid has %d levels of %d channels", maps->n,
                         maps->C);
    if (g->new_w <= 0 || g->new_h <= 0)
        return hadm_fail(err, HADM_ERR_ARG, "rpn: empty image %dx%d", g->new_w, g->new_h);
    int cap = cfg->n_levels * cfg->rpn_pre_topk;
    candidates cd = {0, malloc((size_t)cap * 4 * sizeof(float)), malloc((size_t)cap * sizeof(float)),
                     malloc((size_t)cap * sizeof(int))};
    int *keep = malloc((size_t)cap * sizeof *keep);
    hadm_status s = HADM_OK;
    if (!cd.box || !cd.logit || !cd.level || !keep)
        s = hadm_fail(err, HADM_ERR_NOMEM, "out of memory (rpn)");
    for (int l = 0; !s && l < cfg->n_levels; l++)
        s = level_candidates(m, c, maps, l, &cd, t, err);
    int nk = 0;
    if (!s) {
        filter_candidates(&cd, g, cfg->rpn_min_size);
        s = boxes_batched_nms(cd.box, cd.logit, cd.level, cd.n, cfg->rpn_nms_thresh, keep, &nk, err);
    }
    if (!s) {
        nk = nk < cfg->rpn_post_topk ? nk : cfg->rpn_post_topk;
        for (int i = 0; i < nk; i++)
            memcpy(proposals + i * 4, cd.box + keep[i] * 4, 4 * sizeof(float));
        *n = nk;
        trace_proposals(t, proposals, cd.logit, keep, nk);
    }
    free(cd.box);
    free(cd.logit);
    free(cd.level);
    free(keep);
    return s;
}
