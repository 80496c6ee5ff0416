#include "engine/weights.h"

#include <stdarg.h>
#include <stdio.h>

typedef struct {
    weights_visit_fn fn;
    void *user;
    hadm_error *err;
    hadm_status st;
} visitor;

/* visit(v, slot, ndim, dims..., fmt, ...) */
static void visit(visitor *v, const float **slot, ops_src_type *type, int ndim, const int64_t *shape,
                  const char *fmt, ...)
{
    if (v->st)
        return;
    char name[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    v->st = v->fn(v->user, name, ndim, shape, slot, type, v->err);
}

#define SHAPE(...) ((const int64_t[]){__VA_ARGS__})
#define V1(slot, a, ...) visit(v, slot, NULL, 1, SHAPE(a), __VA_ARGS__)
#define V2(slot, a, b, ...) visit(v, slot, NULL, 2, SHAPE(a, b), __VA_ARGS__)
#define V3(slot, a, b, c, ...) visit(v, slot, NULL, 3, SHAPE(a, b, c), __VA_ARGS__)
#define V4(slot, a, b, c, d, ...) visit(v, slot, NULL, 4, SHAPE(a, b, c, d), __VA_ARGS__)
/* a convolution weight, which may stay bf16/f16: l is its linear_w/conv_ln_w */
#define VCONV(l, a, b, c, d, ...) visit(v, &(l)->w, &(l)->wt, 4, SHAPE(a, b, c, d), __VA_ARGS__)

static void vit_tensors(visitor *v, const hadm_config *c, hadm_weights *w)
{
    int64_t D = c->embed_dim, F = c->mlp_hidden, P = c->patch;
    int64_t grid = c->pretrain_img_size / c->patch;
    V4(&w->patch.w, D, c->in_chans, P, P, "backbone.net.patch_embed.proj.weight");
    V1(&w->patch.b, D, "backbone.net.patch_embed.proj.bias");
    if (c->use_abs_pos)
        V3(NULL, 1, grid * grid + (c->pretrain_cls_token ? 1 : 0), D, "backbone.net.pos_embed");
    for (int i = 0; i < c->depth; i++) {
        vit_block_w *b = &w->blocks[i];
        const char *p = "backbone.net.blocks";
        V1(&b->norm1_g, D, "%s.%d.norm1.weight", p, i);
        V1(&b->norm1_b, D, "%s.%d.norm1.bias", p, i);
        V1(&b->q_bias, D, "%s.%d.attn.q_bias", p, i);
        V1(&b->v_bias, D, "%s.%d.attn.v_bias", p, i);
        V2(&b->q_w, D, D, "%s.%d.attn.q_proj.weight", p, i);
        V2(&b->k_w, D, D, "%s.%d.attn.k_proj.weight", p, i);
        V2(&b->v_w, D, D, "%s.%d.attn.v_proj.weight", p, i);
        V2(&b->proj.w, D, D, "%s.%d.attn.proj.weight", p, i);
        V1(&b->proj.b, D, "%s.%d.attn.proj.bias", p, i);
        V1(&b->norm2_g, D, "%s.%d.norm2.weight", p, i);
        V1(&b->norm2_b, D, "%s.%d.norm2.bias", p, i);
        V2(&b->w1.w, F, D, "%s.%d.mlp.w1.weight", p, i);
        V1(&b->w1.b, F, "%s.%d.mlp.w1.bias", p, i);
        V2(&b->w2.w, F, D, "%s.%d.mlp.w2.weight", p, i);
        V1(&b->w2.b, F, "%s.%d.mlp.w2.bias", p, i);
        V1(&b->ffn_ln_g, F, "%s.%d.mlp.ffn_ln.weight", p, i);
        V1(&b->ffn_ln_b, F, "%s.%d.mlp.ffn_ln.bias", p, i);
        V2(&b->w3.w, D, F, "%s.%d.mlp.w3.weight", p, i);
        V1(&b->w3.b, D, "%s.%d.mlp.w3.bias", p, i);
    }
}

static void conv_ln(visitor *v, conv_ln_w *cl, int64_t out, int64_t in, int64_t k, const char *name)
{
    VCONV(cl, out, in, k, k, "%s.weight", name);
    V1(&cl->g, out, "%s.norm.weight", name);
    V1(&cl->b, out, "%s.norm.bias", name);
}

static void fpn_tensors(visitor *v, const hadm_config *c, hadm_weights *w)
{
    int64_t D = c->embed_dim, F = c->fpn_channels;
    VCONV(&w->p2_up0, D, D / 2, 2, 2, "backbone.simfp_2.0.weight");
    V1(&w->p2_up0.b, D / 2, "backbone.simfp_2.0.bias");
    V1(&w->p2_ln_g, D / 2, "backbone.simfp_2.1.weight");
    V1(&w->p2_ln_b, D / 2, "backbone.simfp_2.1.bias");
    VCONV(&w->p2_up1, D / 2, D / 4, 2, 2, "backbone.simfp_2.3.weight");
    V1(&w->p2_up1.b, D / 4, "backbone.simfp_2.3.bias");
    conv_ln(v, &w->p2_lat, F, D / 4, 1, "backbone.simfp_2.4");
    conv_ln(v, &w->p2_out, F, F, 3, "backbone.simfp_2.5");
    VCONV(&w->p3_up0, D, D / 2, 2, 2, "backbone.simfp_3.0.weight");
    V1(&w->p3_up0.b, D / 2, "backbone.simfp_3.0.bias");
    conv_ln(v, &w->p3_lat, F, D / 2, 1, "backbone.simfp_3.1");
    conv_ln(v, &w->p3_out, F, F, 3, "backbone.simfp_3.2");
    conv_ln(v, &w->p4_lat, F, D, 1, "backbone.simfp_4.0");
    conv_ln(v, &w->p4_out, F, F, 3, "backbone.simfp_4.1");
    conv_ln(v, &w->p5_lat, F, D, 1, "backbone.simfp_5.1");
    conv_ln(v, &w->p5_out, F, F, 3, "backbone.simfp_5.2");
}

static void head_tensors(visitor *v, const hadm_config *c, hadm_weights *w)
{
    int64_t F = c->fpn_channels, A = c->num_anchors, K1 = c->num_classes + 1;
    const char *r = "proposal_generator.rpn_head";
    for (int i = 0; i < c->rpn_convs; i++) {
        VCONV(&w->rpn_conv[i], c->rpn_conv_dims[i], i ? c->rpn_conv_dims[i - 1] : F, 3, 3,
              "%s.conv.conv%d.weight", r, i);
        V1(&w->rpn_conv[i].b, c->rpn_conv_dims[i], "%s.conv.conv%d.bias", r, i);
    }
    int64_t rc = c->rpn_conv_dims[c->rpn_convs - 1];
    V4(&w->rpn_obj.w, A, rc, 1, 1, "%s.objectness_logits.weight", r);
    V1(&w->rpn_obj.b, A, "%s.objectness_logits.bias", r);
    V4(&w->rpn_delta.w, 4 * A, rc, 1, 1, "%s.anchor_deltas.weight", r);
    V1(&w->rpn_delta.b, 4 * A, "%s.anchor_deltas.bias", r);
    for (int s = 0; s < c->num_stages; s++) {
        int64_t in = F;
        char name[96];
        for (int k = 0; k < c->box_convs; k++) {
            snprintf(name, sizeof name, "roi_heads.box_head.%d.conv%d", s, k + 1);
            conv_ln(v, &w->stage[s].conv[k], c->box_conv_dims[k], in, 3, name);
            in = c->box_conv_dims[k];
        }
        in *= (int64_t)c->pool_res * c->pool_res;
        for (int j = 0; j < c->box_fcs; j++) {
            V2(&w->stage[s].fc[j].w, c->box_fc_dims[j], in, "roi_heads.box_head.%d.fc%d.weight", s, j + 1);
            V1(&w->stage[s].fc[j].b, c->box_fc_dims[j], "roi_heads.box_head.%d.fc%d.bias", s, j + 1);
            in = c->box_fc_dims[j];
        }
        V2(&w->stage[s].cls.w, K1, in, "roi_heads.box_predictor.%d.cls_score.weight", s);
        V1(&w->stage[s].cls.b, K1, "roi_heads.box_predictor.%d.cls_score.bias", s);
        V2(&w->stage[s].bbox.w, 4, in, "roi_heads.box_predictor.%d.bbox_pred.weight", s);
        V1(&w->stage[s].bbox.b, 4, "roi_heads.box_predictor.%d.bbox_pred.bias", s);
    }
}

hadm_status weights_enumerate(const hadm_config *cfg, hadm_weights *w, weights_visit_fn fn,
                              void *user, hadm_error *err)
{
    visitor v = {fn, user, err, HADM_OK};
    vit_tensors(&v, cfg, w);
    fpn_tensors(&v, cfg, w);
    head_tensors(&v, cfg, w);
    return v.st;
}

static hadm_status count_visit(void *user, const char *name, int ndim, const int64_t *shape,
                               const float **slot, ops_src_type *type, hadm_error *err)
{
    (void)name, (void)slot, (void)type, (void)err;
    int64_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= shape[i];
    *(int64_t *)user += n;
    return HADM_OK;
}

int64_t weights_param_count(const hadm_config *cfg)
{
    hadm_weights w;
    int64_t n = 0;
    weights_enumerate(cfg, &w, count_visit, &n, NULL);
    return n;
}
