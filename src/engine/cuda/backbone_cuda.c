/* The EVA-02 ViT on the GPU (vit.c's dataflow, spec MODEL.md section 2):
 * patch embed, + pos embed, then per block x += proj(attn(LN x)) and
 * x += w3(LN(silu(w1 n) * w2 n)). The residual stream stays f32; every
 * kernel that feeds a GEMM writes its output as bf16 directly. */
#include "engine/cuda/cuda_model.h"
#include "util/err.h"

typedef struct {
    const hadm_config *cfg;
    const cuda_dims *d;
    cuda_exec *x;
    int B;
    hadm_error *err;
} bb_run;

static hadm_status gemm(bb_run *r, int M, int N, int K, const bf16_t *A, const dlin *l, float *C, float beta)
{
    cuda_gemm g = {.M = M, .N = N, .K = K, .A = A, .lda = K, .W = l->w, .ldw = K, .bias = l->b, .C = C,
                   .ldc = N, .beta = beta};
    return cuda_matmul(r->x->dev, &g, r->err);
}

static hadm_status attention_block(bb_run *r, const cuda_model *cm, const dblock *b, int global)
{
    const hadm_config *cfg = r->cfg;
    const cuda_dims *d = r->d;
    cuda_exec *x = r->x;
    cuda_dev *dev = x->dev;
    int D = d->D, B = r->B;
    int unit = global ? d->T : d->WS * d->WS, units = B * (global ? 1 : d->nw * d->nw), rows = unit * units;
    float *X = AF(x, AR_X), *q = AF(x, AR_Q), *k = AF(x, AR_K), *v = AF(x, AR_V);
    bf16_t *h = AH(x, AR_ABF);
    if (global) {
        cuda_layernorm(dev, (int64_t)B * d->T, D, X, D, b->norm1_g, b->norm1_b, cfg->ln_eps, CUDA_ACT_NONE, NULL, 0,
                       h, D);
    } else {
        float *n = AF(x, AR_NORM);
        cuda_layernorm(dev, (int64_t)B * d->T, D, X, D, b->norm1_g, b->norm1_b, cfg->ln_eps, CUDA_ACT_NONE, n, D,
                       NULL, 0);
        cuda_window_partition(dev, n, h, B, d->G, D, d->WS, d->nw);
    }
    hadm_status s;
    if ((s = gemm(r, rows, D, D, h, &b->q, q, 0)) || (s = gemm(r, rows, D, D, h, &b->k, k, 0)) ||
        (s = gemm(r, rows, D, D, h, &b->v, v, 0)))
        return s;
    const float *rc = global ? cm->w.rope_glb_cos : cm->w.rope_win_cos;
    const float *rs = global ? cm->w.rope_glb_sin : cm->w.rope_win_sin;
    cuda_rope(dev, rows, cfg->num_heads, cfg->head_dim, q, D, rc, rs, unit);
    cuda_rope(dev, rows, cfg->num_heads, cfg->head_dim, k, D, rc, rs, unit);
    /* attention output (bf16) reuses the GEMM-input buffer: h is dead now */
    if ((s = cuda_attention(dev, units, unit, cfg->num_heads, cfg->head_dim, cfg->attn_scale, q, k, v, D, h, D,
                            r->err)))
        return s;
    if (global)
        return gemm(r, rows, D, D, h, &b->proj, X, 1.0f);
    if ((s = gemm(r, rows, D, D, h, &b->proj, q, 0)))
        return s;
    cuda_window_unpartition_add(dev, q, X, B, d->G, D, d->WS, d->nw);
    return HADM_OK;
}

static hadm_status mlp_block(bb_run *r, const dblock *b)
{
    const cuda_dims *d = r->d;
    cuda_exec *x = r->x;
    int D = d->D, F = d->F, rows = r->B * d->T;
    float *X = AF(x, AR_X), *a = AF(x, AR_HA), *g = AF(x, AR_HB);
    bf16_t *h = AH(x, AR_ABF);
    cuda_layernorm(x->dev, rows, D, X, D, b->norm2_g, b->norm2_b, r->cfg->ln_eps, CUDA_ACT_NONE, NULL, 0, h, D);
    hadm_status s;
    if ((s = gemm(r, rows, F, D, h, &b->w1, a, 0)) || (s = gemm(r, rows, F, D, h, &b->w2, g, 0)))
        return s;
    cuda_silu_mul(x->dev, rows, F, a, F, g, F);
    cuda_layernorm(x->dev, rows, F, a, F, b->ffn_g, b->ffn_b, r->cfg->ln_eps, CUDA_ACT_NONE, NULL, 0, h, F);
    return gemm(r, rows, D, F, h, &b->w3, X, 1.0f);
}

hadm_status cuda_backbone(const struct hadm_model *m, const cuda_model *cm, cuda_exec *x, int B, hadm_error *err)
{
    const hadm_config *cfg = &m->cfg;
    bb_run r = {cfg, &x->lay.d, x, B, err};
    const cuda_dims *d = r.d;
    bf16_t *cols = AH(x, AR_ABF);
    cuda_patch_im2col(x->dev, AF(x, AR_INPUT), B, cfg->in_chans, d->S, d->P, cols);
    hadm_status s = gemm(&r, B * d->T, d->D, d->Kp, cols, &cm->w.patch, AF(x, AR_X), 0);
    if (s)
        return s;
    if (cm->w.pos)
        cuda_add_broadcast(x->dev, AF(x, AR_X), cm->w.pos, (int64_t)d->T * d->D, B);
    for (int i = 0; i < cfg->depth; i++)
        if ((s = attention_block(&r, cm, &cm->w.blocks[i], cfg->is_global[i])) ||
            (s = mlp_block(&r, &cm->w.blocks[i])))
            return s;
    return cuda_dev_check(x->dev, "backbone", err);
}
