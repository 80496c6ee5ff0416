/* The real HADM configs (spec/hadm-l.config.json, hadm-g.config.json) as
 * values, a tiny variant for tests and demos, and the JSON writer that turns
 * a config back into `hadm.config` metadata. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/config.h"
#include "util/err.h"

static const char *LOCAL_CLASSES[] = {"face", "torso", "arm", "leg", "hand", "feet"};
static const char *GLOBAL_CLASSES[] = {
    "human missing arm",  "human missing face",  "human missing feet",
    "human missing hand", "human missing leg",   "human missing torso",
    "human with extra arm", "human with extra face", "human with extra feet",
    "human with extra hand", "human with extra leg", "human with extra torso"};

static void set_full(hadm_config *c)
{
    const float mean[3] = {123.675f, 116.28f, 103.53f}, std[3] = {58.395f, 57.12f, 57.375f};
    memcpy(c->pixel_mean, mean, sizeof mean);
    memcpy(c->pixel_std, std, sizeof std);
    c->resize_short = c->resize_max = c->square_pad = c->img_size = 1024;
    c->patch = 16;
    c->in_chans = 3;
    c->embed_dim = 1024;
    c->depth = 24;
    c->num_heads = 16;
    c->head_dim = 64;
    c->attn_scale = 0.125f;
    c->mlp_hidden = 2730;
    c->ln_eps = 1e-6f;
    c->window_size = 16;
    for (int i = 2; i < 24; i += 3)
        c->is_global[i] = 1;
    c->use_abs_pos = 1;
    c->pretrain_img_size = 224;
    c->pretrain_cls_token = 1;
    c->rope_dim = 32;
    c->rope_theta = 10000.0f;
    c->rope_pt_seq_len = 16;
    c->fpn_channels = 256;
    c->n_scales = 4;
    const float scales[4] = {4, 2, 1, 0.5f};
    memcpy(c->fpn_scales, scales, sizeof scales);
    c->fpn_eps = 1e-6f;
    c->n_levels = 5;
    c->rpn_convs = 2;
    c->rpn_conv_dims[0] = c->rpn_conv_dims[1] = 256;
    c->num_anchors = c->n_ratios = 3;
    const float ratios[3] = {0.5f, 1.0f, 2.0f};
    memcpy(c->aspect_ratios, ratios, sizeof ratios);
    for (int l = 0; l < 5; l++) {
        c->anchor_sizes[l] = (float)(32 << l);
        c->anchor_strides[l] = 4 << l;
    }
    for (int k = 0; k < 4; k++)
        c->rpn_weights[k] = 1.0f;
    c->scale_clamp = log(1000.0 / 16);
    c->rpn_pre_topk = c->rpn_post_topk = 1000;
    c->rpn_nms_thresh = 0.7f;
    c->pool_res = 7;
    c->aligned = 1;
    c->roi_levels = 4;
    for (int l = 0; l < 4; l++)
        c->pool_scales[l] = 1.0f / (float)(4 << l);
    c->canonical_size = 224;
    c->canonical_level = 4;
    c->min_level = 2;
    c->max_level = 5;
    c->box_convs = 4;
    for (int i = 0; i < 4; i++)
        c->box_conv_dims[i] = 256;
    c->box_fcs = 1;
    c->box_fc_dims[0] = 1024;
    c->num_stages = 3;
    const float cw[3][4] = {{10, 10, 5, 5}, {20, 20, 10, 10}, {30, 30, 15, 15}};
    memcpy(c->cascade_weights, cw, sizeof cw);
    c->score_thresh = 0.05f;
    c->nms_thresh = 0.5f;
    c->max_dets = 100;
}

/* The golden "tiny" geometry: 256 px input, 64-wide ViT of depth 4. */
static void shrink_tiny(hadm_config *c)
{
    c->resize_short = c->resize_max = c->square_pad = c->img_size = 256;
    c->embed_dim = 64;
    c->depth = 4;
    c->num_heads = 4;
    c->head_dim = 16;
    c->attn_scale = 0.25f;
    c->mlp_hidden = 170;
    c->window_size = 4;
    memset(c->is_global, 0, sizeof c->is_global);
    c->is_global[1] = c->is_global[3] = 1;
    c->rope_dim = 8;
    c->fpn_channels = 32;
    c->rpn_conv_dims[0] = c->rpn_conv_dims[1] = 32;
    for (int i = 0; i < 4; i++)
        c->box_conv_dims[i] = 32;
    c->box_fc_dims[0] = 64;
}

hadm_status config_default(hadm_config *cfg, char variant, int tiny, hadm_error *err)
{
    memset(cfg, 0, sizeof *cfg);
    if (variant != 'l' && variant != 'g')
        return hadm_fail(err, HADM_ERR_ARG, "variant must be l or g");
    set_full(cfg);
    if (tiny)
        shrink_tiny(cfg);
    int global = variant == 'g';
    snprintf(cfg->variant, sizeof cfg->variant, "%s", global ? "HADM-G" : "HADM-L");
    cfg->use_sigmoid = global;
    cfg->num_classes = global ? 12 : 6;
    for (int i = 0; i < cfg->num_classes; i++)
        if (!(cfg->class_names[i] = strdup(global ? GLOBAL_CLASSES[i] : LOCAL_CLASSES[i]))) {
            config_free(cfg);
            return hadm_fail(err, HADM_ERR_NOMEM, "out of memory");
        }
    return HADM_OK;
}

static void add_floats(cJSON *o, const char *key, const float *v, int n)
{
    cJSON *a = cJSON_AddArrayToObject(o, key);
    for (int i = 0; i < n; i++)
        cJSON_AddItemToArray(a, cJSON_CreateNumber((double)v[i]));
}

static void add_ints(cJSON *o, const char *key, const int *v, int n)
{
    cJSON *a = cJSON_AddArrayToObject(o, key);
    for (int i = 0; i < n; i++)
        cJSON_AddItemToArray(a, cJSON_CreateNumber(v[i]));
}

static void add_vit(cJSON *o, const hadm_config *c)
{
    add_floats(o, "pixel_mean", c->pixel_mean, 3);
    add_floats(o, "pixel_std", c->pixel_std, 3);
    cJSON_AddStringToObject(o, "input_format", "RGB");
    cJSON_AddNumberToObject(o, "test_resize_short_edge", c->resize_short);
    cJSON_AddNumberToObject(o, "test_resize_max_size", c->resize_max);
    cJSON_AddStringToObject(o, "test_resize_interp", "pil_bilinear_uint8");
    cJSON_AddNumberToObject(o, "square_pad", c->square_pad);
    cJSON_AddNumberToObject(o, "pad_value", 0.0);
    cJSON_AddNumberToObject(o, "vit_img_size", c->img_size);
    cJSON_AddNumberToObject(o, "vit_patch_size", c->patch);
    cJSON_AddNumberToObject(o, "vit_in_chans", c->in_chans);
    cJSON_AddNumberToObject(o, "vit_embed_dim", c->embed_dim);
    cJSON_AddNumberToObject(o, "vit_depth", c->depth);
    cJSON_AddNumberToObject(o, "vit_num_heads", c->num_heads);
    cJSON_AddNumberToObject(o, "vit_head_dim", c->head_dim);
    cJSON_AddNumberToObject(o, "vit_attn_scale", c->attn_scale);
    cJSON_AddNumberToObject(o, "vit_mlp_hidden_dim", c->mlp_hidden);
    cJSON_AddStringToObject(o, "vit_mlp_type", "swiglu_subln");
    cJSON_AddNumberToObject(o, "vit_layer_norm_eps", c->ln_eps);
    cJSON_AddNumberToObject(o, "vit_window_size", c->window_size);
    int win[CFG_MAX_BLOCKS], glob[CFG_MAX_BLOCKS], nw = 0, ng = 0;
    for (int i = 0; i < c->depth; i++) {
        if (c->is_global[i])
            glob[ng++] = i;
        else
            win[nw++] = i;
    }
    add_ints(o, "vit_window_block_indexes", win, nw);
    add_ints(o, "vit_global_block_indexes", glob, ng);
    cJSON_AddBoolToObject(o, "vit_use_abs_pos", c->use_abs_pos);
    cJSON_AddNumberToObject(o, "vit_pretrain_img_size", c->pretrain_img_size);
    cJSON_AddBoolToObject(o, "vit_pretrain_use_cls_token", c->pretrain_cls_token);
    cJSON_AddNumberToObject(o, "vit_rope_dim", c->rope_dim);
    cJSON_AddNumberToObject(o, "vit_rope_theta", c->rope_theta);
    cJSON_AddNumberToObject(o, "vit_rope_pt_seq_len", c->rope_pt_seq_len);
}

static void add_heads(cJSON *o, const hadm_config *c)
{
    add_floats(o, "fpn_scale_factors", c->fpn_scales, c->n_scales);
    cJSON_AddNumberToObject(o, "fpn_out_channels", c->fpn_channels);
    cJSON_AddNumberToObject(o, "fpn_norm_eps", c->fpn_eps);
    add_ints(o, "rpn_head_conv_dims", c->rpn_conv_dims, c->rpn_convs);
    cJSON_AddNumberToObject(o, "rpn_num_anchors", c->num_anchors);
    cJSON *sizes = cJSON_AddArrayToObject(o, "anchor_sizes");
    for (int l = 0; l < c->n_levels; l++) {
        cJSON *one = cJSON_CreateArray();
        cJSON_AddItemToArray(one, cJSON_CreateNumber(c->anchor_sizes[l]));
        cJSON_AddItemToArray(sizes, one);
    }
    add_floats(o, "anchor_aspect_ratios", c->aspect_ratios, c->n_ratios);
    add_ints(o, "anchor_strides", c->anchor_strides, c->n_levels);
    cJSON_AddNumberToObject(o, "anchor_offset", c->anchor_offset);
    add_floats(o, "rpn_box2box_weights", c->rpn_weights, 4);
    cJSON_AddNumberToObject(o, "box2box_scale_clamp", c->scale_clamp);
    cJSON_AddNumberToObject(o, "rpn_pre_nms_topk_test", c->rpn_pre_topk);
    cJSON_AddNumberToObject(o, "rpn_post_nms_topk_test", c->rpn_post_topk);
    cJSON_AddNumberToObject(o, "rpn_nms_thresh", c->rpn_nms_thresh);
    cJSON_AddNumberToObject(o, "rpn_min_box_size", c->rpn_min_size);
    cJSON_AddNumberToObject(o, "roi_pooler_resolution", c->pool_res);
    add_floats(o, "roi_pooler_scales", c->pool_scales, c->roi_levels);
    cJSON_AddNumberToObject(o, "roi_pooler_sampling_ratio", c->sampling_ratio);
    cJSON_AddBoolToObject(o, "roi_pooler_aligned", c->aligned);
    cJSON_AddNumberToObject(o, "roi_pooler_canonical_box_size", c->canonical_size);
    cJSON_AddNumberToObject(o, "roi_pooler_canonical_level", c->canonical_level);
    cJSON_AddNumberToObject(o, "roi_pooler_min_level", c->min_level);
    cJSON_AddNumberToObject(o, "roi_pooler_max_level", c->max_level);
    add_ints(o, "box_head_conv_dims", c->box_conv_dims, c->box_convs);
    add_ints(o, "box_head_fc_dims", c->box_fc_dims, c->box_fcs);
    cJSON_AddNumberToObject(o, "cascade_num_stages", c->num_stages);
    cJSON *cw = cJSON_AddArrayToObject(o, "cascade_box2box_weights");
    for (int s = 0; s < c->num_stages; s++) {
        cJSON *w = cJSON_CreateArray();
        for (int k = 0; k < 4; k++)
            cJSON_AddItemToArray(w, cJSON_CreateNumber(c->cascade_weights[s][k]));
        cJSON_AddItemToArray(cw, w);
    }
    cJSON_AddNumberToObject(o, "num_classes", c->num_classes);
    cJSON_AddBoolToObject(o, "use_sigmoid_ce", c->use_sigmoid);
    cJSON_AddBoolToObject(o, "multi_label", c->use_sigmoid);
    cJSON_AddNumberToObject(o, "test_score_thresh", c->score_thresh);
    cJSON_AddNumberToObject(o, "test_nms_thresh", c->nms_thresh);
    cJSON_AddNumberToObject(o, "test_detections_per_image", c->max_dets);
}

char *config_to_json(const hadm_config *c)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    add_vit(o, c);
    add_heads(o, c);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}
