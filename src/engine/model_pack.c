/* Weights reordered for the kernels, in the model's precision, on first
 * use: the ViT's Linears block by block (q|k|v and w1|w2 stacked into one
 * matmul each) and the box heads' fc layers. The mapped originals are
 * dropped afterwards so the model is not held twice. */
#include <stdio.h>
#include <string.h>

#include "engine/model.h"
#include "io/safetensors.h"
#include "util/err.h"

static ops_dtype packed_type(hadm_precision p)
{
    return p == HADM_PRECISION_BF16 ? OPS_BF16 : p == HADM_PRECISION_INT8 ? OPS_S8 : OPS_F32;
}

/* Packs the named [rows][K] weights of block i, stacked, in the model's
 * precision; then drops their mapped pages, which are not read again. */
static hadm_status pack_stack(struct hadm_model *m, ops_ctx *ctx, int i, const char *const *names, int n,
                              int rows, int K, ops_packed **out, hadm_error *err)
{
    ops_wpart parts[3];
    int64_t shape[2] = {rows, K};
    hadm_status s = HADM_OK;
    for (int j = 0; !s && j < n; j++) {
        char name[160];
        snprintf(name, sizeof name, "backbone.net.blocks.%d.%s.weight", i, names[j]);
        s = model_weight_part(m, name, 2, shape, &parts[j], err);
    }
    int G = m->cfg.img_size / m->cfg.patch;
    if (s || (s = ops_pack_parts(ctx, G * G, K, parts, n, packed_type(m->precision), out, err)))
        return s;
    for (int j = 0; j < n; j++) {
        st_release_pages(m->file, parts[j].data, (size_t)rows * K * ops_src_size(parts[j].type));
    }
    return HADM_OK;
}

static float *stack_bias(struct hadm_model *m, const float *const *parts, int n, int len)
{
    float *b = model_own(m, (size_t)n * len * sizeof *b);
    for (int j = 0; b && j < n; j++) {
        if (parts[j])
            memcpy(b + (size_t)j * len, parts[j], (size_t)len * sizeof *b);
        else
            memset(b + (size_t)j * len, 0, (size_t)len * sizeof *b);
    }
    return b;
}

/* The ViT's Linear weights are 80% of the work (spec 8): they are reordered
 * once for the 4096-row matmuls they serve, in the model's precision, after
 * which the mapped originals are dropped so the model is not held twice. */
hadm_status model_pack_block(const struct hadm_model *cm, int i, ops_ctx *ctx, hadm_error *err)
{
    struct hadm_model *m = (struct hadm_model *)cm;   /* the pack cache is the mutable part */
    int D = m->cfg.embed_dim, F = m->cfg.mlp_hidden;
    vit_block_w *b = &m->w.blocks[i];
    static const char *const qkv[] = {"attn.q_proj", "attn.k_proj", "attn.v_proj"};
    static const char *const proj[] = {"attn.proj"}, *const w12[] = {"mlp.w1", "mlp.w2"}, *const w3[] = {"mlp.w3"};
    hadm_status s = HADM_OK;
    pthread_mutex_lock(&m->pack_lock);
    if (!b->packed) {
        const float *qkv_b[3] = {b->q_bias, NULL, b->v_bias}, *w12_b[2] = {b->w1.b, b->w2.b};
        if (!(b->qkv_b = stack_bias(m, qkv_b, 3, D)) || !(b->w12_b = stack_bias(m, w12_b, 2, F)))
            s = hadm_fail(err, HADM_ERR_NOMEM, "out of memory");
        if (!s)
            s = pack_stack(m, ctx, i, qkv, 3, D, D, &b->qkv_pk, err);
        if (!s)
            s = pack_stack(m, ctx, i, proj, 1, D, D, &b->proj_pk, err);
        if (!s)
            s = pack_stack(m, ctx, i, w12, 2, F, D, &b->w12_pk, err);
        if (!s)
            s = pack_stack(m, ctx, i, w3, 1, D, F, &b->w3_pk, err);
        b->packed = !s;
    }
    pthread_mutex_unlock(&m->pack_lock);
    return s;
}

hadm_status model_pack_heads(const struct hadm_model *cm, ops_ctx *ctx, hadm_error *err)
{
    struct hadm_model *m = (struct hadm_model *)cm;
    const hadm_config *cfg = &m->cfg;
    hadm_status s = HADM_OK;
    pthread_mutex_lock(&m->pack_lock);
    for (int st = 0; !m->heads_packed && !s && st < cfg->num_stages; st++) {
        int K = cfg->fpn_channels * cfg->pool_res * cfg->pool_res;
        for (int j = 0; !s && j < cfg->box_fcs; j++) {
            int N = cfg->box_fc_dims[j];
            char name[96];
            snprintf(name, sizeof name, "roi_heads.box_head.%d.fc%d.weight", st, j + 1);
            int64_t shape[2] = {N, K};
            ops_wpart part;
            int widened = m->precision == HADM_PRECISION_BF16 && !ops_bf16_native();
            int nb = widened && N % FC_BLOCKS == 0 ? FC_BLOCKS : 1;
            m->w.stage[st].fc_blocks[j] = nb;
            if ((s = model_weight_part(m, name, 2, shape, &part, err)))
                break;
            for (int b = 0; !s && b < nb; b++) {
                ops_wpart blk = part;
                size_t first = (size_t)b * (N / nb);
                blk.rows = N / nb;
                blk.data = (const char *)part.data + first * K * ops_src_size(part.type);
                blk.scale = part.scale ? part.scale + first : NULL;
                s = ops_pack_parts(ctx, ROI_CHUNK, K, &blk, 1, packed_type(m->precision),
                                   &m->w.stage[st].fc_pk[j][b], err);
            }
            if (!s)
                st_release_pages(m->file, part.data, (size_t)N * K * ops_src_size(part.type));
            K = N;
        }
    }
    m->heads_packed = !s;
    pthread_mutex_unlock(&m->pack_lock);
    return s;
}

/* Releases the file pages of a weight read in place (a no-op for owned ones). */
static void release(const struct hadm_model *m, const void *w, ops_src_type t, size_t numel)
{
    st_release_pages(m->file, w, numel * ops_src_size(t));
}

void model_release_conv_sources(const struct hadm_model *m)
{
    const hadm_config *cfg = &m->cfg;
    const hadm_weights *w = &m->w;
    size_t D = (size_t)cfg->embed_dim, F = (size_t)cfg->fpn_channels;
    const conv_ln_w *outs[4] = {&w->p2_out, &w->p3_out, &w->p4_out, &w->p5_out};
    for (int i = 0; i < 4; i++)
        release(m, outs[i]->w, outs[i]->wt, F * F * 9);
    /* the pyramid's other weights are read in place, once per forward */
    release(m, w->p2_up0.w, w->p2_up0.wt, D * D / 2 * 4);
    release(m, w->p2_up1.w, w->p2_up1.wt, D / 2 * D / 4 * 4);
    release(m, w->p3_up0.w, w->p3_up0.wt, D * D / 2 * 4);
    const conv_ln_w *lat[4] = {&w->p2_lat, &w->p3_lat, &w->p4_lat, &w->p5_lat};
    size_t lat_in[4] = {D / 4, D / 2, D, D};
    for (int i = 0; i < 4; i++)
        release(m, lat[i]->w, lat[i]->wt, F * lat_in[i]);
    for (int i = 0; i < cfg->rpn_convs; i++) {
        size_t in = i ? (size_t)cfg->rpn_conv_dims[i - 1] : F;
        release(m, w->rpn_conv[i].w, w->rpn_conv[i].wt, (size_t)cfg->rpn_conv_dims[i] * in * 9);
    }
    for (int s = 0; s < cfg->num_stages; s++)
        for (int k = 0; k < cfg->box_convs; k++) {
            size_t in = k ? (size_t)cfg->box_conv_dims[k - 1] : F;
            const conv_ln_w *cw = &w->stage[s].conv[k];
            release(m, cw->w, cw->wt, (size_t)cfg->box_conv_dims[k] * in * 9);
        }
}

void model_stage_end(const struct hadm_model *m, ops_ctx *c)
{
    ops_scratch_release(c);
    model_release_conv_sources(m);
}

void model_unpack_all(struct hadm_model *m)
{
    for (int s = 0; s < CFG_MAX_STAGES; s++)
        for (int j = 0; j < CFG_MAX_CONVS; j++) {
            for (int b = 0; b < FC_BLOCKS; b++) {
                ops_packed_free(m->w.stage[s].fc_pk[j][b]);
                m->w.stage[s].fc_pk[j][b] = NULL;
            }
        }
    m->heads_packed = 0;
    for (int i = 0; i < CFG_MAX_BLOCKS; i++) {
        vit_block_w *b = &m->w.blocks[i];
        ops_packed **all[4] = {&b->qkv_pk, &b->proj_pk, &b->w12_pk, &b->w3_pk};
        for (int j = 0; j < 4; j++) {
            ops_packed_free(*all[j]);
            *all[j] = NULL;
        }
    }
}
