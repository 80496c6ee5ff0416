/* Cascade R-CNN heads (spec MODEL.md 5.1-5.4). Each stage pools its input
 * boxes on the level each box picks, runs its conv/fc box head and its
 * predictor, and decodes; the next stage gets the clipped decode, nothing is
 * filtered, and the scores are the mean of the stages' probabilities (P16).
 *
 * ROIs go through the box head in chunks of a fixed row count (the last
 * chunk zero-padded) so memory stays bounded and the conv/matmul primitives,
 * which are cached per shape, are built once rather than per image. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/boxes.h"
#include "util/err.h"


enum { BUF_POOL, BUF_CONV, BUF_FC_A, BUF_FC_B, BUF_FC_BLOCK };

/* Per-forward state: every array has Rp (R rounded up to the chunk) rows. */
typedef struct {
    const struct hadm_model *m;
    ops_ctx *c;
    const fpn_maps *maps;
    const engine_trace *t;
    int R, Rp, chunk, K1, fc_dim;
    float *in_boxes;     /* [R][4] this stage's input boxes */
    int32_t *level;      /* [R] pyramid level (2..5) per box */
    float *head;         /* [Rp][fc_dim] box head output */
    float *logits;       /* [Rp][K1] */
    float *deltas;       /* [Rp][4] */
    float *probs;        /* [R][K1] */
    float *pred;         /* [R][4] decoded boxes */
} cascade;

/* floor(canonical_level + log2(sqrt(area)/canonical_size + 1e-8)) clamped,
 * in double like the golden run (P18); a NaN box goes to the lowest level. */
static int32_t box_level(const hadm_config *cfg, const float *b)
{
    double w = (double)b[2] - b[0], h = (double)b[3] - b[1];
    double lvl = floor(cfg->canonical_level + log2(sqrt(w * h) / cfg->canonical_size + 1e-8));
    if (!(lvl >= cfg->min_level))
        return cfg->min_level;
    return lvl > cfg->max_level ? cfg->max_level : (int32_t)lvl;
}

/* ROIAlign of rows [r0, r0+n) into pooled [chunk][res][res][C]; rows past R are zero. */
static void pool_chunk(cascade *cs, int r0, int n, float *pooled)
{
    const hadm_config *cfg = &cs->m->cfg;
    int res = cfg->pool_res, C = cs->maps->C;
    size_t per = (size_t)res * res * C;
    int valid = cs->R - r0 < n ? cs->R - r0 : n;
#pragma omp parallel for schedule(dynamic, 4) num_threads(ops_ctx_threads(cs->c))
    for (int i = 0; i < n; i++) {
        float *out = pooled + i * per;
        if (i >= valid) {
            memset(out, 0, per * sizeof *out);
            continue;
        }
        /* min_level is 2 (checked by the caller), so level l is maps->map[l - 2] */
        int r = r0 + i, li = cs->level[r] - cfg->min_level;
        ops_roi_align(cs->maps->map[li], cs->maps->h[li], cs->maps->w[li], C, cs->in_boxes + r * 4,
                      cfg->pool_scales[li], res, cfg->sampling_ratio, cfg->aligned, out);
    }
}

/* [n][P][C] -> [n][C][P]: PyTorch flattens the box head's NCHW maps c-major. */
static void flatten_cmajor(ops_ctx *c, const float *x, int n, int P, int C, float *y)
{
#pragma omp parallel for schedule(static) num_threads(ops_ctx_threads(c))
    for (int i = 0; i < n; i++) {
        const float *xi = x + (size_t)i * P * C;
        float *yi = y + (size_t)i * P * C;
        for (int p = 0; p < P; p++)
            for (int ch = 0; ch < C; ch++)
                yi[(size_t)ch * P + p] = xi[(size_t)p * C + ch];
    }
}

/* Box head of stage s on pooled rows [r0, r0+chunk): convs (+LN2d+ReLU),
 * flatten, fcs (+ReLU); the result goes to cs->head rows r0... */
static hadm_status box_head_chunk(cascade *cs, int s, int r0, float *x, hadm_error *err)
{
    const hadm_config *cfg = &cs->m->cfg;
    const hadm_weights *w = &cs->m->w;
    ops_ctx *c = cs->c;
    int res = cfg->pool_res, C = cs->maps->C, n = cs->chunk, P = res * res;
    float *y = ops_scratch(c, BUF_CONV, (size_t)n * P * C);
    if (!y)
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory (box head)");
    hadm_status st;
    for (int k = 0; k < cfg->box_convs; k++) {
        const conv_ln_w *cw = &w->stage[s].conv[k];
        ops_conv cv = {.N = n, .H = res, .W = res, .Cin = C, .Cout = C, .kh = 3, .kw = 3,
                       .stride = 1, .pad = 1, .x = x, .w = cw->w, .w_type = cw->wt, .bias = NULL, .y = y};
        if ((st = ops_conv2d(c, &cv, err)))
            return st;
        ops_layernorm(c, (int64_t)n * P, C, y, C, cw->g, cw->b, cfg->fpn_eps, y, C);
        ops_relu(c, y, (int64_t)n * P * C);
        float *t = x;
        x = y, y = t;
    }
    flatten_cmajor(c, x, n, P, C, y);   /* y: whichever of the two the convs left free */
    const float *in = y;
    int K = P * C;
    for (int j = 0; j < cfg->box_fcs; j++) {
        int N = cfg->box_fc_dims[j];
        int last = j == cfg->box_fcs - 1;
        float *out = last ? cs->head + (size_t)r0 * N : ops_scratch(c, j % 2 ? BUF_FC_B : BUF_FC_A, (size_t)n * N);
        if (!out)
            return hadm_fail(err, HADM_ERR_NOMEM, "out of memory (box head)");
        /* column blocks go through a dense buffer: oneDNN runs a packed
         * matmul into a strided C with its reference kernel */
        int nb = w->stage[s].fc_blocks[j], Nb = N / nb;
        float *blk = nb > 1 ? ops_scratch(c, BUF_FC_BLOCK, (size_t)n * Nb) : out;
        if (!blk)
            return hadm_fail(err, HADM_ERR_NOMEM, "out of memory (box head)");
        for (int b = 0; b < nb; b++) {
            const float *wb = w->stage[s].fc[j].w, *bias = w->stage[s].fc[j].b;
            ops_gemm g = {.M = n, .N = Nb, .K = K, .A = in, .lda = K, .B = wb ? wb + (size_t)b * Nb * K : NULL,
                          .ldb = K, .trans_b = 1, .bias = bias ? bias + b * Nb : NULL, .C = blk,
                          .ldc = Nb, .packed = w->stage[s].fc_pk[j][b]};
            if ((st = ops_matmul(c, &g, err)))
                return st;
            for (int i = 0; nb > 1 && i < n; i++)
                memcpy(out + (size_t)i * N + b * Nb, blk + (size_t)i * Nb, (size_t)Nb * sizeof *out);
        }
        ops_relu(c, out, (int64_t)n * N);
        in = out, K = N;
    }
    return HADM_OK;
}

/* cls_score and bbox_pred on head rows [r0, r0+chunk). */
static hadm_status predictor_chunk(cascade *cs, int s, int r0, hadm_error *err)
{
    const hadm_weights *w = &cs->m->w;
    ops_gemm g = {.M = cs->chunk, .N = cs->K1, .K = cs->fc_dim, .A = cs->head + (size_t)r0 * cs->fc_dim,
                  .lda = cs->fc_dim, .B = w->stage[s].cls.w, .ldb = cs->fc_dim, .trans_b = 1,
                  .bias = w->stage[s].cls.b, .C = cs->logits + (size_t)r0 * cs->K1, .ldc = cs->K1};
    hadm_status st = ops_matmul(cs->c, &g, err);
    if (st)
        return st;
    g.N = 4, g.B = w->stage[s].bbox.w, g.bias = w->stage[s].bbox.b;
    g.C = cs->deltas + (size_t)r0 * 4, g.ldc = 4;
    return ops_matmul(cs->c, &g, err);
}

static void trace_stage(const cascade *cs, int s, const char *what, const void *data, int is_int,
                        trace_layout layout, int ndim, const int64_t *shape)
{
    char name[64];
    snprintf(name, sizeof name, "roi.stage%d.%s", s, what);
    if (is_int)
        trace_i32(cs->t, name, data, ndim, shape);
    else
        trace_f32(cs->t, name, layout, data, ndim, shape);
}

/* Probabilities of one stage: softmax over K+1 (HADM-L) or per-column sigmoid (HADM-G). */
static void stage_probs(cascade *cs)
{
    const hadm_config *cfg = &cs->m->cfg;
    size_t n = (size_t)cs->R * cs->K1;
    memcpy(cs->probs, cs->logits, n * sizeof(float));
    if (!cfg->use_sigmoid) {
        ops_softmax_rows(cs->c, cs->R, cs->K1, cs->probs, cs->K1);
        return;
    }
    for (size_t i = 0; i < n; i++)
        cs->probs[i] = 1.0f / (1.0f + expf(-cs->probs[i]));
}

/* One cascade stage on cs->in_boxes; leaves probs and pred filled. */
static hadm_status run_stage(cascade *cs, int s, hadm_error *err)
{
    const hadm_config *cfg = &cs->m->cfg;
    int R = cs->R, C = cs->maps->C, res = cfg->pool_res;
    for (int r = 0; r < R; r++)
        cs->level[r] = box_level(cfg, cs->in_boxes + r * 4);
    int64_t sh[4] = {R, 4};
    trace_stage(cs, s, "proposals", cs->in_boxes, 0, TRACE_SAME, 2, sh);
    trace_stage(cs, s, "pooler_level", cs->level, 1, TRACE_SAME, 1, sh);
    float *pooled = ops_scratch(cs->c, BUF_POOL, (size_t)cs->chunk * res * res * C);
    if (!pooled)
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory (roi pooling)");
    for (int r0 = 0; r0 < cs->Rp; r0 += cs->chunk) {
        pool_chunk(cs, r0, cs->chunk, pooled);
        if (r0 == 0 && cs->t) {
            int64_t ps[4] = {R < 16 ? R : 16, C, res, res};
            trace_stage(cs, s, "pooled_first16", pooled, 0, TRACE_NHWC_OF_NCHW, 4, ps);
        }
        hadm_status st = box_head_chunk(cs, s, r0, pooled, err);
        if (st || (st = predictor_chunk(cs, s, r0, err)))
            return st;
        if (r0 == 0)   /* the stage's convs are packed now; their file pages are not read again */
            model_release_conv_sources(cs->m);
    }
    int64_t hs[2] = {R < 64 ? R : 64, cs->fc_dim}, ls[2] = {R, cs->K1}, ds[2] = {R, 4};
    trace_stage(cs, s, "box_head_out_first64", cs->head, 0, TRACE_SAME, 2, hs);
    trace_stage(cs, s, "cls_logits", cs->logits, 0, TRACE_SAME, 2, ls);
    trace_stage(cs, s, "box_deltas", cs->deltas, 0, TRACE_SAME, 2, ds);
    stage_probs(cs);
    trace_stage(cs, s, "probs", cs->probs, 0, TRACE_SAME, 2, ls);
    float clamp = (float)cfg->scale_clamp;
    for (int r = 0; r < R; r++)
        boxes_decode(cs->in_boxes + r * 4, cs->deltas + r * 4, cfg->cascade_weights[s], clamp,
                     cs->pred + r * 4);
    trace_stage(cs, s, "pred_boxes", cs->pred, 0, TRACE_SAME, 2, ds);
    return HADM_OK;
}

static void cascade_free(cascade *cs)
{
    free(cs->in_boxes);
    free(cs->level);
    free(cs->head);
    free(cs->logits);
    free(cs->deltas);
    free(cs->probs);
    free(cs->pred);
}

static hadm_status cascade_alloc(cascade *cs, hadm_error *err)
{
    const hadm_config *cfg = &cs->m->cfg;
    cs->K1 = cfg->num_classes + 1;
    cs->fc_dim = cfg->box_fc_dims[cfg->box_fcs - 1];
    /* a fixed chunk keeps one primitive per shape; small R uses a multiple of 32 */
    cs->chunk = cs->R >= ROI_CHUNK ? ROI_CHUNK : (cs->R + 31) / 32 * 32;
    cs->Rp = (cs->R + cs->chunk - 1) / cs->chunk * cs->chunk;
    size_t R = (size_t)cs->R, Rp = (size_t)cs->Rp;
    cs->in_boxes = malloc(R * 4 * sizeof(float));
    cs->level = malloc(R * sizeof(int32_t));
    cs->head = malloc(Rp * cs->fc_dim * sizeof(float));
    cs->logits = malloc(Rp * cs->K1 * sizeof(float));
    cs->deltas = malloc(Rp * 4 * sizeof(float));
    cs->probs = malloc(R * cs->K1 * sizeof(float));
    cs->pred = malloc(R * 4 * sizeof(float));
    if (!cs->in_boxes || !cs->level || !cs->head || !cs->logits || !cs->deltas || !cs->probs || !cs->pred) {
        cascade_free(cs);
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory (cascade, %d boxes)", cs->R);
    }
    return HADM_OK;
}

hadm_status roi_heads_forward(const struct hadm_model *m, ops_ctx *c, const fpn_maps *maps,
                              const image_geom *g, const float *proposals, int R, float *scores,
                              float *boxes, const engine_trace *t, hadm_error *err)
{
    const hadm_config *cfg = &m->cfg;
    if (R < 0 || (R > 0 && (!proposals || !scores || !boxes)))
        return hadm_fail(err, HADM_ERR_ARG, "roi heads: bad arguments (R=%d)", R);
    if (maps->n < 4 || maps->C != cfg->fpn_channels || cfg->min_level != 2 || cfg->max_level > 5)
        return hadm_fail(err, HADM_ERR_INTERNAL, "roi heads: pyramid does not match the config");
    if (R == 0)
        return HADM_OK;
    cascade cs = {.m = m, .c = c, .maps = maps, .t = t, .R = R};
    hadm_status s = model_pack_heads(m, c, err);
    if (s || (s = cascade_alloc(&cs, err)))
        return s;
    size_t n = (size_t)R * cs.K1;
    memcpy(cs.in_boxes, proposals, (size_t)R * 4 * sizeof(float));
    for (int st = 0; !s && st < cfg->num_stages; st++) {
        if (st > 0) { /* the next stage pools at the clipped decode (P16) */
            memcpy(cs.in_boxes, cs.pred, (size_t)R * 4 * sizeof(float));
            for (int r = 0; r < R; r++)
                boxes_clip(cs.in_boxes + r * 4, g->new_h, g->new_w);
        }
        if ((s = run_stage(&cs, st, err)))
            break;
        /* each stage has its own weights: a bf16 model's widened fc and
         * packed convs go now, not when the next stage's need more, and
         * so do the mapped pages they were packed from */
        model_stage_end(m, c);
        /* Python's sum(): p0, then + p1, then + p2, in float */
        for (size_t i = 0; i < n; i++)
            scores[i] = st ? scores[i] + cs.probs[i] : cs.probs[i];
    }
    if (!s) {
        float inv = (float)(1.0 / cfg->num_stages);
        for (size_t i = 0; i < n; i++)
            scores[i] *= inv;
        memcpy(boxes, cs.pred, (size_t)R * 4 * sizeof(float));
        int64_t shape[2] = {R, cs.K1};
        trace_f32(t, "roi.scores_mean", TRACE_SAME, scores, 2, shape);
    }
    cascade_free(&cs);
    return s;
}
