/* EVA-02 ViT backbone (spec MODEL.md section 2), read top to bottom:
 * patch embed -> + pos embed -> L x (attention block, SwiGLU block).
 * Tokens are [G*G][D] row-major (token ty*G + tx) per image; a batch of B
 * images is B such grids back to back, so every Linear, LayerNorm and the
 * MLP run once over B*G*G rows and only attention is per image. */
#include <stdio.h>
#include <string.h>

#include "engine/engine.h"
#include "util/err.h"

/* Scratch slots. The patch columns and the MLP's hidden rows live in the
 * q|k|v slot, which is free outside attention: slots keep their largest
 * size until the backbone ends, so a slot per buffer would hold ~33 MB more
 * at full size. */
enum { BUF_NORM, BUF_QKV };

typedef struct {
    const struct hadm_model *m;
    ops_ctx *c;
    int G, D, F, T, B;   /* grid side, width, MLP width, tokens per image, images */
    hadm_error *err;
} vit_run;

static hadm_status linear(vit_run *r, int rows, const float *x, int ldx, const float *w, const float *bias,
                          const ops_packed *pk, int out, int in, float *y, int ldy, int accumulate)
{
    ops_gemm g = {.M = rows, .N = out, .K = in, .A = x, .lda = ldx, .B = w, .ldb = in,
                  .trans_b = 1, .bias = bias, .C = y, .ldc = ldy, .accumulate = accumulate,
                  .packed = pk};
    return ops_matmul(r->c, &g, r->err);
}

/* Non-overlapping P x P patches of each CHW input, flattened (c, ky, kx) to
 * match the conv weight [D][3][P][P], then one matmul for the batch. */
static hadm_status patch_embed(vit_run *r, const float *const *chw, float *tokens)
{
    const hadm_config *cfg = &r->m->cfg;
    int P = cfg->patch, S = cfg->img_size, K = cfg->in_chans * P * P;
    float *cols = ops_scratch(r->c, BUF_QKV, (size_t)r->B * r->T * K);
    if (!cols)
        return hadm_fail(r->err, HADM_ERR_NOMEM, "out of memory");
    for (int b = 0; b < r->B; b++)
        for (int t = 0; t < r->T; t++) {
            int ty = t / r->G, tx = t % r->G;
            float *row = cols + ((size_t)b * r->T + t) * K;
            for (int ch = 0; ch < cfg->in_chans; ch++)
                for (int ky = 0; ky < P; ky++)
                    memcpy(row + (ch * P + ky) * P, chw[b] + ((size_t)ch * S + ty * P + ky) * S + tx * P,
                           (size_t)P * sizeof *row);
        }
    const linear_w *pw = &r->m->w.patch;
    return linear(r, r->B * r->T, cols, K, pw->w, pw->b, NULL, r->D, K, tokens, r->D, 0);
}

/* Copies one image's normed tokens into window order, zero-padding the grid
 * to a multiple of the window (spec 2.4: padded tokens are attended to). */
static void window_partition(const float *x, float *win, int G, int D, int WS, int nw_side)
{
    for (int wy = 0; wy < nw_side; wy++)
        for (int wx = 0; wx < nw_side; wx++)
            for (int iy = 0; iy < WS; iy++)
                for (int ix = 0; ix < WS; ix++) {
                    int y = wy * WS + iy, xx = wx * WS + ix;
                    float *dst = win + ((((size_t)wy * nw_side + wx) * WS + iy) * WS + ix) * D;
                    if (y < G && xx < G)
                        memcpy(dst, x + ((size_t)y * G + xx) * D, (size_t)D * sizeof *dst);
                    else
                        memset(dst, 0, (size_t)D * sizeof *dst);
                }
}

/* Adds window-ordered rows back into the residual grid, dropping the padding. */
static void window_unpartition_add(const float *win, float *x, int G, int D, int WS, int nw_side)
{
    for (int y = 0; y < G; y++)
        for (int xx = 0; xx < G; xx++) {
            int wy = y / WS, wx = xx / WS, iy = y % WS, ix = xx % WS;
            const float *src = win + ((((size_t)wy * nw_side + wx) * WS + iy) * WS + ix) * D;
            float *dst = x + ((size_t)y * G + xx) * D;
            for (int d = 0; d < D; d++)
                dst[d] += src[d];
        }
}

/* x += proj(Attention(norm1(x))), window or global (spec 2.4-2.6). q, k and v
 * come from one matmul: row r of the qkv buffer is [q | k | v]. */
static hadm_status attention_block(vit_run *r, const vit_block_w *b, int global, float *x)
{
    const hadm_config *cfg = &r->m->cfg;
    const hadm_weights *w = &r->m->w;
    int D = r->D, WS = cfg->window_size;
    int nw_side = global ? 1 : (r->G + WS - 1) / WS;
    int unit = global ? r->T : WS * WS, units = r->B * (global ? 1 : nw_side * nw_side);
    int rows = unit * units, per_image = rows / r->B;
    float *h = ops_scratch(r->c, BUF_NORM, (size_t)rows * D);
    float *qkv = ops_scratch(r->c, BUF_QKV, (size_t)rows * 3 * D);
    if (!h || !qkv)
        return hadm_fail(r->err, HADM_ERR_NOMEM, "out of memory");
    /* h holds the normed rows, then (dead once q|k|v exist) attention's
     * output. q|k|v's memory is free before the q|k|v matmul and after
     * attention: a window block norms into it before partitioning into h,
     * and its projection goes there before unpartitioning. */
    float *normed = global ? h : qkv;
    ops_layernorm(r->c, (int64_t)r->B * r->T, D, x, D, b->norm1_g, b->norm1_b, cfg->ln_eps, normed, D);
    for (int i = 0; !global && i < r->B; i++)
        window_partition(normed + (size_t)i * r->T * D, h + (size_t)i * per_image * D, r->G, D, WS, nw_side);
    hadm_status s = linear(r, rows, h, D, NULL, b->qkv_b, b->qkv_pk, 3 * D, D, qkv, 3 * D, 0);
    if (s)
        return s;
    float *q = qkv, *k = qkv + D, *v = qkv + 2 * D;
    const float *rc = global ? w->rope_glb_cos : w->rope_win_cos;
    const float *rs = global ? w->rope_glb_sin : w->rope_win_sin;
    ops_rope(r->c, rows, cfg->num_heads, cfg->head_dim, q, 3 * D, rc, rs, unit);
    ops_rope(r->c, rows, cfg->num_heads, cfg->head_dim, k, 3 * D, rc, rs, unit);
    for (int u = 0; u < units; u++) {
        size_t off = (size_t)u * unit * 3 * D;
        if ((s = ops_attention(r->c, unit, cfg->num_heads, cfg->head_dim, cfg->attn_scale, q + off,
                               k + off, v + off, 3 * D, h + (size_t)u * unit * D, D, r->err)))
            return s;
    }
    if (global)
        return linear(r, rows, h, D, NULL, b->proj.b, b->proj_pk, D, D, x, D, 1);
    if ((s = linear(r, rows, h, D, NULL, b->proj.b, b->proj_pk, D, D, qkv, D, 0)))
        return s;
    for (int i = 0; i < r->B; i++)
        window_unpartition_add(qkv + (size_t)i * per_image * D, x + (size_t)i * r->T * D, r->G, D, WS, nw_side);
    return HADM_OK;
}

/* x += w3(LN_F(silu(w1 n) * (w2 n))), n = norm2(x) (spec 2.7). w1 and w2 are
 * one matmul whose rows [w1 n | w2 n] ops_matmul_swiglu_ln turns into
 * LN_F(silu(w1 n) * (w2 n)) in a dense buffer (oneDNN runs a packed matmul
 * on a strided A with its reference kernel, hundreds of times slower); with
 * int8 weights it does so straight from the s32 sums. Every step is
 * row-wise, so the rows go in chunks: the 2F-wide hidden buffer is then
 * 22 MB instead of 89 at full size. */
#define MLP_CHUNK 1024
static hadm_status mlp_block(vit_run *r, const vit_block_w *b, float *x)
{
    const hadm_config *cfg = &r->m->cfg;
    int D = r->D, F = r->F, rows = r->B * r->T, chunk = rows < MLP_CHUNK ? rows : MLP_CHUNK;
    float *n = ops_scratch(r->c, BUF_NORM, (size_t)chunk * D);
    float *hid = ops_scratch(r->c, BUF_QKV, (size_t)chunk * 3 * F);
    float *ffn = hid ? hid + (size_t)chunk * 2 * F : NULL;
    if (!n || !hid)
        return hadm_fail(r->err, HADM_ERR_NOMEM, "out of memory");
    hadm_status s = HADM_OK;
    for (int r0 = 0; !s && r0 < rows; r0 += chunk) {
        int m = rows - r0 < chunk ? rows - r0 : chunk;
        float *xr = x + (size_t)r0 * D;
        ops_layernorm(r->c, m, D, xr, D, b->norm2_g, b->norm2_b, cfg->ln_eps, n, D);
        ops_gemm w12 = {.M = m, .N = 2 * F, .K = D, .A = n, .lda = D, .ldb = D, .trans_b = 1,
                        .bias = b->w12_b, .C = ffn, .ldc = F, .packed = b->w12_pk};
        if ((s = ops_matmul_swiglu_ln(r->c, &w12, hid, b->ffn_ln_g, b->ffn_ln_b, cfg->ln_eps, r->err)))
            break;
        s = linear(r, m, ffn, F, NULL, b->w3.b, b->w3_pk, D, F, xr, D, 1);
    }
    return s;
}

/* Traces image 0 of the batch (the golden tests run one image). */
static void trace_tokens(const vit_run *r, const engine_trace *t, const char *name, const float *x)
{
    int64_t shape[4] = {1, r->G, r->G, r->D};
    trace_f32(t, name, TRACE_SAME, x, 4, shape);
}

hadm_status vit_forward_batch(const struct hadm_model *m, ops_ctx *c, const float *const *chw, int B,
                              float *tokens, const engine_trace *t, hadm_error *err)
{
    const hadm_config *cfg = &m->cfg;
    vit_run r = {m, c, cfg->img_size / cfg->patch, cfg->embed_dim, cfg->mlp_hidden, 0, B, err};
    r.T = r.G * r.G;
    hadm_status s = patch_embed(&r, chw, tokens);
    if (s)
        return s;
    trace_tokens(&r, t, "vit.patch_embed", tokens);
    if (cfg->use_abs_pos) {
        float *pos = ops_scratch(c, BUF_NORM, (size_t)r.T * r.D);   /* free until attention */
        if (!pos)
            return hadm_fail(err, HADM_ERR_NOMEM, "out of memory");
        model_pos_embed(m, pos);
        trace_tokens(&r, t, "vit.pos_embed_resized", pos);
        for (int i = 0; i < B; i++)
            ops_add(c, tokens + (size_t)i * r.T * r.D, pos, (int64_t)r.T * r.D);
    }
    trace_tokens(&r, t, "vit.tokens_in", tokens);
    for (int i = 0; i < cfg->depth; i++) {
        if ((s = model_pack_block(m, i, c, err)) ||
            (s = attention_block(&r, &m->w.blocks[i], cfg->is_global[i], tokens)) ||
            (s = mlp_block(&r, &m->w.blocks[i], tokens)))
            return s;
        char name[48];
        snprintf(name, sizeof name, "vit.block%d.out", i);
        trace_tokens(&r, t, name, tokens);
    }
    return HADM_OK;
}

hadm_status vit_forward(const struct hadm_model *m, ops_ctx *c, const float *chw, float *tokens,
                        const engine_trace *t, hadm_error *err)
{
    return vit_forward_batch(m, c, &chw, 1, tokens, t, err);
}
