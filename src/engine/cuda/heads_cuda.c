/* Pyramid, RPN, cascade and detections of one image on the GPU (fpn.c,
 * rpn.c, roi_heads.c and postprocess.c's dataflow). Shapes are static: the
 * cascade always runs rpn_post_topk rows and the counts of proposals and
 * detections stay in device counters, so the whole thing can be captured
 * into a graph. Only the detections (resized-image pixels) reach the host. */
#include "engine/boxes.h"
#include "engine/cuda/cuda_model.h"
#include "util/err.h"

typedef struct {
    const struct hadm_model *m;
    const cuda_model *cm;
    const cuda_dims *d;
    cuda_exec *x;
    const int *geom;
    hadm_error *err;
} hd_run;

static hadm_status gemm(hd_run *r, int M, int N, int K, const bf16_t *A, const bf16_t *W, const float *bias,
                        float *C, int64_t ldc, int relu)
{
    cuda_gemm g = {.M = M, .N = N, .K = K, .A = A, .lda = K, .W = W, .ldw = K, .bias = bias, .C = C, .ldc = ldc,
                   .relu = relu};
    return cuda_matmul(r->x->dev, &g, r->err);
}

/* 3x3 conv, stride 1, pad 1, as im2col + GEMM. */
static hadm_status conv3x3(hd_run *r, const float *in, int N, int H, int W, int Cin, const bf16_t *w,
                           const float *bias, int Cout, float *out, int relu)
{
    bf16_t *cols = AH(r->x, AR_COLS);
    cuda_im2col3x3(r->x->dev, in, N, H, W, Cin, cols);
    return gemm(r, N * H * W, Cout, 9 * Cin, cols, w, bias, out, Cout, relu);
}

/* ---- pyramid ---- */
/* ConvTranspose 2x2 stride 2: one GEMM, then each column to its sub-pixel. */
static hadm_status conv_t(hd_run *r, const bf16_t *in, int H, int W, int Cin, const dlin *l, int Cout, float *out)
{
    float *tmp = AF(r->x, AR_UP);
    hadm_status s = gemm(r, H * W, Cout * 4, Cin, in, l->w, NULL, tmp, Cout * 4, 0);
    if (!s)
        cuda_conv_transpose_scatter(r->x->dev, tmp, H, W, Cout, l->b, out);
    return s;
}

/* 1x1 conv + LN2d, 3x3 conv + LN2d, into dst. */
static hadm_status lateral_output(hd_run *r, const bf16_t *in, int P, int Hs, int Cin, const dconv_ln *lat,
                                  const dconv_ln *out, float *dst)
{
    const hadm_config *cfg = &r->m->cfg;
    cuda_dev *dev = r->x->dev;
    int C = r->d->C;
    float *mid = AF(r->x, AR_MID);
    hadm_status s = gemm(r, P, C, Cin, in, lat->w, NULL, mid, C, 0);
    if (s)
        return s;
    cuda_layernorm(dev, P, C, mid, C, lat->g, lat->b, cfg->fpn_eps, CUDA_ACT_NONE, mid, C, NULL, 0);
    if ((s = conv3x3(r, mid, 1, Hs, Hs, C, out->w, NULL, C, dst, 0)))
        return s;
    cuda_layernorm(dev, P, C, dst, C, out->g, out->b, cfg->fpn_eps, CUDA_ACT_NONE, dst, C, NULL, 0);
    return HADM_OK;
}

static hadm_status pyramid(hd_run *r, int b)
{
    const hadm_config *cfg = &r->m->cfg;
    const dweights *w = &r->cm->w;
    const cuda_dims *d = r->d;
    cuda_exec *x = r->x;
    cuda_dev *dev = x->dev;
    int G = d->G, D = d->D, T = d->T;
    const float *tok = AF(x, AR_X) + (size_t)b * T * D;
    bf16_t *tok_bf = AH(x, AR_ABF), *fbf = AH(x, AR_FBF);
    float *fmap = AF(x, AR_FMAP);
    cuda_f32_to_bf16(dev, tok, tok_bf, (int64_t)T * D);
    hadm_status s;
    /* p2: ConvT, LN, GELU, ConvT, lateral */
    if ((s = conv_t(r, tok_bf, G, G, D, &w->p2_up0, D / 2, fmap)))
        return s;
    cuda_layernorm(dev, (int64_t)4 * T, D / 2, fmap, D / 2, w->p2_ln_g, w->p2_ln_b, cfg->fpn_eps, CUDA_ACT_GELU, NULL,
                   0, fbf, D / 2);
    if ((s = conv_t(r, fbf, 2 * G, 2 * G, D / 2, &w->p2_up1, D / 4, fmap)))
        return s;
    cuda_f32_to_bf16(dev, fmap, fbf, (int64_t)16 * T * (D / 4));
    if ((s = lateral_output(r, fbf, 16 * T, 4 * G, D / 4, &w->p2_lat, &w->p2_out, AF(x, AR_MAP0))))
        return s;
    /* p3: ConvT, lateral */
    if ((s = conv_t(r, tok_bf, G, G, D, &w->p3_up0, D / 2, fmap)))
        return s;
    cuda_f32_to_bf16(dev, fmap, fbf, (int64_t)4 * T * (D / 2));
    if ((s = lateral_output(r, fbf, 4 * T, 2 * G, D / 2, &w->p3_lat, &w->p3_out, AF(x, AR_MAP1))))
        return s;
    /* p4: lateral on the tokens */
    if ((s = lateral_output(r, tok_bf, T, G, D, &w->p4_lat, &w->p4_out, AF(x, AR_MAP2))))
        return s;
    /* p5: max-pool 2x2, lateral; p6: p5 subsampled */
    cuda_maxpool2(dev, tok, G, G, D, fmap);
    cuda_f32_to_bf16(dev, fmap, fbf, (int64_t)(G / 2) * (G / 2) * D);
    if ((s = lateral_output(r, fbf, (G / 2) * (G / 2), G / 2, D, &w->p5_lat, &w->p5_out, AF(x, AR_MAP3))))
        return s;
    cuda_subsample2(dev, AF(x, AR_MAP3), d->side[3], d->C, AF(x, AR_MAP4), d->side[4], d->side[4]);
    return HADM_OK;
}

/* ---- RPN ---- */
static hadm_status sort_desc(hd_run *r, const float *keys, int n)
{
    cuda_exec *x = r->x;
    cuda_iota(x->dev, AI(x, AR_SORT_VAL_IN), n);
    return cuda_sort_desc(x->dev, arena_ptr(x, AR_SORT_TEMP), x->lay.size[AR_SORT_TEMP], keys,
                          AF(x, AR_SORT_KEY_OUT), AI(x, AR_SORT_VAL_IN), AI(x, AR_SORT_VAL_OUT), n, r->err);
}

/* Head on level l, its top-k anchors decoded into candidate slots [slot0, slot0 + k). */
static hadm_status rpn_level(hd_run *r, int l, int64_t pos0, int slot0)
{
    const hadm_config *cfg = &r->m->cfg;
    const dweights *w = &r->cm->w;
    const cuda_dims *d = r->d;
    cuda_exec *x = r->x;
    int S = d->side[l], P = S * S, cin = d->C;
    if (P == 0)
        return HADM_OK;
    const float *in = AF(x, (arena_buf)(AR_MAP0 + l));
    hadm_status s;
    for (int i = 0; i < cfg->rpn_convs; i++) {
        float *out = AF(x, i % 2 ? AR_RPN_B : AR_RPN_A);
        if ((s = conv3x3(r, in, 1, S, S, cin, w->rpn_conv[i].w, w->rpn_conv[i].b, cfg->rpn_conv_dims[i], out, 1)))
            return s;
        in = out, cin = cfg->rpn_conv_dims[i];
    }
    bf16_t *fbf = AH(x, AR_FBF);
    float *head = AF(x, AR_RPN_OUT) + pos0 * d->NR;
    cuda_f32_to_bf16(x->dev, in, fbf, (int64_t)P * cin);
    if ((s = gemm(r, P, d->NR, cin, fbf, w->rpn_head.w, w->rpn_head.b, head, d->NR, 0)))
        return s;
    cuda_gather_cols(x->dev, head, P, d->A, d->NR, AF(x, AR_SORT_KEY_IN));
    if ((s = sort_desc(r, AF(x, AR_SORT_KEY_IN), (int)d->anchors[l])))
        return s;
    cuda_level lv = {S, S, cfg->anchor_strides[l], {{0}}};
    boxes_cell_anchors(cfg, l, lv.cell);
    cuda_rpn_decode(x->dev, &lv, d->A, AF(x, AR_SORT_KEY_OUT), AI(x, AR_SORT_VAL_OUT), d->pre_k[l], head, d->NR,
                    cfg->anchor_offset, cfg->rpn_weights, (float)cfg->scale_clamp, cfg->rpn_min_size, r->geom, l,
                    AF(x, AR_CAND_BOX) + (size_t)slot0 * 4, AF(x, AR_CAND_KEY) + slot0, AI(x, AR_CAND_GRP) + slot0);
    return HADM_OK;
}

/* Sort the candidates' keys, NMS per group, keep at most max_keep. */
static hadm_status nms(hd_run *r, int n, float thresh, int max_keep)
{
    cuda_exec *x = r->x;
    hadm_status s = sort_desc(r, AF(x, AR_CAND_KEY), n);
    if (!s)
        cuda_nms(x->dev, AF(x, AR_CAND_BOX), AI(x, AR_CAND_GRP), AF(x, AR_SORT_KEY_OUT), AI(x, AR_SORT_VAL_OUT), n,
                 thresh, max_keep, arena_ptr(x, AR_NMS_MASK), AI(x, AR_KEEP), AI(x, AR_COUNTS));
    return s;
}

static hadm_status rpn(hd_run *r)
{
    const hadm_config *cfg = &r->m->cfg;
    const cuda_dims *d = r->d;
    int64_t pos0 = 0;
    int slot0 = 0;
    hadm_status s;
    for (int l = 0; l < d->levels; l++) {
        if ((s = rpn_level(r, l, pos0, slot0)))
            return s;
        pos0 += (int64_t)d->side[l] * d->side[l];
        slot0 += d->pre_k[l];
    }
    if ((s = nms(r, d->NC, cfg->rpn_nms_thresh, d->Rmax)))
        return s;
    cuda_gather_proposals(r->x->dev, AF(r->x, AR_CAND_BOX), AI(r->x, AR_KEEP), AI(r->x, AR_COUNTS), d->Rmax,
                          AF(r->x, AR_BOXES_IN));
    return HADM_OK;
}

/* ---- cascade ---- */
static hadm_status box_head(hd_run *r, int st)
{
    const hadm_config *cfg = &r->m->cfg;
    const cuda_dims *d = r->d;
    cuda_exec *x = r->x;
    int R = d->Rmax, res = d->res, C = d->C;
    float *cur = AF(x, AR_POOL), *other = AF(x, AR_CONV);
    hadm_status s;
    for (int k = 0; k < cfg->box_convs; k++) {
        const dconv_ln *cw = &r->cm->w.stage[st].conv[k];
        int Cout = cfg->box_conv_dims[k];
        if ((s = conv3x3(r, cur, R, res, res, C, cw->w, NULL, Cout, other, 0)))
            return s;
        cuda_layernorm(x->dev, (int64_t)R * res * res, Cout, other, Cout, cw->g, cw->b, cfg->fpn_eps, CUDA_ACT_RELU,
                       other, Cout, NULL, 0);
        float *t = cur;
        cur = other, other = t, C = Cout;
    }
    bf16_t *in = AH(x, AR_FLAT);
    cuda_flatten_cmajor(x->dev, cur, R, res * res, C, in);
    int K = res * res * C;
    for (int j = 0; j < cfg->box_fcs; j++) {
        const dlin *fc = &r->cm->w.stage[st].fc[j];
        int N = cfg->box_fc_dims[j];
        float *out = AF(x, j % 2 ? AR_FC_B : AR_FC_A);
        if ((s = gemm(r, R, N, K, in, fc->w, fc->b, out, N, 1)))
            return s;
        cuda_f32_to_bf16(x->dev, out, AH(x, AR_FC_BF), (int64_t)R * N);
        in = AH(x, AR_FC_BF), K = N;
    }
    const dlin *p = &r->cm->w.stage[st].pred;
    return gemm(r, R, d->NP, K, in, p->w, p->b, AF(x, AR_PRED), d->NP, 0);
}

static hadm_status cascade(hd_run *r)
{
    const hadm_config *cfg = &r->m->cfg;
    const cuda_dims *d = r->d;
    cuda_exec *x = r->x;
    cuda_pooler pl = {.C = d->C, .res = d->res, .sampling_ratio = cfg->sampling_ratio, .aligned = cfg->aligned,
                      .min_level = cfg->min_level, .max_level = cfg->max_level,
                      .canonical_level = cfg->canonical_level, .canonical_size = cfg->canonical_size};
    for (int l = 0; l < 4 && l < cfg->roi_levels; l++) {
        pl.map[l] = AF(x, (arena_buf)(AR_MAP0 + l));
        pl.H[l] = pl.W[l] = d->side[l];
        pl.scale[l] = cfg->pool_scales[l];
    }
    hadm_status s;
    for (int st = 0; st < cfg->num_stages; st++) {
        cuda_roi_align(x->dev, &pl, AF(x, AR_BOXES_IN), AI(x, AR_COUNTS), d->Rmax, AI(x, AR_LEVEL), AF(x, AR_POOL));
        if ((s = box_head(r, st)))
            return s;
        int last = st == cfg->num_stages - 1;
        cuda_stage_tail(x->dev, AF(x, AR_PRED), d->NP, d->K1, cfg->use_sigmoid, st == 0, AF(x, AR_BOXES_IN),
                        cfg->cascade_weights[st], (float)cfg->scale_clamp, r->geom, AI(x, AR_COUNTS), d->Rmax,
                        AF(x, AR_SCORES), AF(x, AR_BOXES_OUT), last ? NULL : AF(x, AR_BOXES_IN));
    }
    cuda_scale(x->dev, AF(x, AR_SCORES), (int64_t)d->Rmax * d->K1, (float)(1.0 / cfg->num_stages));
    return HADM_OK;
}

hadm_status cuda_heads(const struct hadm_model *m, const cuda_model *cm, cuda_exec *x, int b, hadm_error *err)
{
    const hadm_config *cfg = &m->cfg;
    hd_run r = {m, cm, &x->lay.d, x, AI(x, AR_GEOM) + 4 * b, err};
    const cuda_dims *d = r.d;
    if (cfg->min_level != 2 || cfg->max_level > 5 || cfg->n_levels != 5)
        return hadm_fail(err, HADM_ERR_UNSUPPORTED, "cuda: pyramid levels other than p2..p6 are not supported");
    hadm_status s;
    if ((s = pyramid(&r, b)) || (s = rpn(&r)) || (s = cascade(&r)))
        return s;
    cuda_detection_candidates(x->dev, AF(x, AR_SCORES), AF(x, AR_BOXES_OUT), AI(x, AR_COUNTS), d->Rmax, d->K,
                              cfg->score_thresh, r.geom, AF(x, AR_CAND_BOX), AF(x, AR_CAND_KEY), AI(x, AR_CAND_GRP));
    if ((s = nms(&r, d->Rmax * d->K, cfg->nms_thresh, d->max_dets)))
        return s;
    cuda_write_detections(x->dev, AF(x, AR_CAND_BOX), AF(x, AR_CAND_KEY), AI(x, AR_CAND_GRP), AI(x, AR_KEEP),
                          AI(x, AR_COUNTS), d->max_dets, (unsigned char *)arena_ptr(x, AR_RESULT) + (size_t)b * x->lay.result_stride);
    return cuda_dev_check(x->dev, "heads", err);
}
