#include "engine/config.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/err.h"

/* Reads one key; a missing or mistyped key is an error naming the key. */
typedef struct {
    const cJSON *root;
    hadm_error *err;
    hadm_status st;
} reader;

static const cJSON *get(reader *r, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(r->root, key);
    if (!v && !r->st)
        r->st = hadm_fail(r->err, HADM_ERR_FORMAT, "hadm.config: missing key '%s'", key);
    return v;
}

static double num(reader *r, const char *key)
{
    const cJSON *v = get(r, key);
    if (v && !cJSON_IsNumber(v) && !r->st)
        r->st = hadm_fail(r->err, HADM_ERR_FORMAT, "hadm.config: '%s' is not a number", key);
    return v && cJSON_IsNumber(v) ? v->valuedouble : 0;
}

static int integer(reader *r, const char *key, int lo, int hi)
{
    double d = num(r, key);
    if (!r->st && (d != floor(d) || d < lo || d > hi))
        r->st = hadm_fail(r->err, HADM_ERR_FORMAT, "hadm.config: '%s' = %g out of range [%d, %d]",
                          key, d, lo, hi);
    return r->st ? 0 : (int)d;
}

static int boolean(reader *r, const char *key)
{
    const cJSON *v = get(r, key);
    if (v && !cJSON_IsBool(v) && !r->st)
        r->st = hadm_fail(r->err, HADM_ERR_FORMAT, "hadm.config: '%s' is not a boolean", key);
    return v && cJSON_IsTrue(v);
}

/* Numeric array (nested one-element arrays, as in anchor_sizes, are flattened). */
static int numbers(reader *r, const char *key, double *out, int max)
{
    const cJSON *v = get(r, key);
    if (!v)
        return 0;
    if (!cJSON_IsArray(v)) {
        if (!r->st)
            r->st = hadm_fail(r->err, HADM_ERR_FORMAT, "hadm.config: '%s' is not an array", key);
        return 0;
    }
    int n = 0;
    for (const cJSON *e = v->child; e; e = e->next) {
        const cJSON *x = cJSON_IsArray(e) && cJSON_GetArraySize(e) == 1 ? e->child : e;
        if (!cJSON_IsNumber(x) || n >= max) {
            if (!r->st)
                r->st = hadm_fail(r->err, HADM_ERR_FORMAT,
                                  "hadm.config: '%s' must hold at most %d numbers", key, max);
            return 0;
        }
        out[n++] = x->valuedouble;
    }
    return n;
}

static int floats(reader *r, const char *key, float *out, int min, int max)
{
    double tmp[64];
    int n = numbers(r, key, tmp, max < 64 ? max : 64);
    if (!r->st && n < min)
        r->st = hadm_fail(r->err, HADM_ERR_FORMAT, "hadm.config: '%s' needs at least %d values", key, min);
    for (int i = 0; i < n; i++)
        out[i] = (float)tmp[i];
    return n;
}

static int ints(reader *r, const char *key, int *out, int min, int max)
{
    double tmp[64];
    int n = numbers(r, key, tmp, max < 64 ? max : 64);
    if (!r->st && n < min)
        r->st = hadm_fail(r->err, HADM_ERR_FORMAT, "hadm.config: '%s' needs at least %d values", key, min);
    for (int i = 0; i < n && !r->st; i++) {
        if (tmp[i] != floor(tmp[i]) || tmp[i] < 0 || tmp[i] > 1 << 20)
            r->st = hadm_fail(r->err, HADM_ERR_FORMAT, "hadm.config: '%s' has a bad value", key);
        out[i] = (int)tmp[i];
    }
    return n;
}

static void read_input_and_vit(reader *r, hadm_config *c)
{
    floats(r, "pixel_mean", c->pixel_mean, 3, 3);
    floats(r, "pixel_std", c->pixel_std, 3, 3);
    c->resize_short = integer(r, "test_resize_short_edge", 1, 8192);
    c->resize_max = integer(r, "test_resize_max_size", 1, 8192);
    c->square_pad = integer(r, "square_pad", 1, 8192);
    c->img_size = integer(r, "vit_img_size", 1, 8192);
    c->patch = integer(r, "vit_patch_size", 1, 64);
    c->in_chans = integer(r, "vit_in_chans", 3, 3);
    c->embed_dim = integer(r, "vit_embed_dim", 1, 8192);
    c->depth = integer(r, "vit_depth", 1, CFG_MAX_BLOCKS);
    c->num_heads = integer(r, "vit_num_heads", 1, 256);
    c->head_dim = integer(r, "vit_head_dim", 2, 1024);
    c->attn_scale = (float)num(r, "vit_attn_scale");
    c->mlp_hidden = integer(r, "vit_mlp_hidden_dim", 1, 1 << 16);
    c->ln_eps = (float)num(r, "vit_layer_norm_eps");
    c->window_size = integer(r, "vit_window_size", 1, 1024);
    int glob[CFG_MAX_BLOCKS];
    int ng = ints(r, "vit_global_block_indexes", glob, 0, CFG_MAX_BLOCKS);
    for (int i = 0; i < ng && !r->st; i++) {
        if (glob[i] >= c->depth)
            r->st = hadm_fail(r->err, HADM_ERR_FORMAT, "hadm.config: global block %d >= depth", glob[i]);
        else
            c->is_global[glob[i]] = 1;
    }
    c->use_abs_pos = boolean(r, "vit_use_abs_pos");
    c->pretrain_img_size = integer(r, "vit_pretrain_img_size", 1, 8192);
    c->pretrain_cls_token = boolean(r, "vit_pretrain_use_cls_token");
    c->rope_dim = integer(r, "vit_rope_dim", 1, 1024);
    c->rope_theta = (float)num(r, "vit_rope_theta");
    c->rope_pt_seq_len = integer(r, "vit_rope_pt_seq_len", 1, 1024);
}

static void read_fpn_rpn(reader *r, hadm_config *c)
{
    c->n_scales = floats(r, "fpn_scale_factors", c->fpn_scales, 4, 4);
    c->fpn_channels = integer(r, "fpn_out_channels", 1, 4096);
    c->fpn_eps = (float)num(r, "fpn_norm_eps");
    c->n_levels = ints(r, "anchor_strides", c->anchor_strides, 5, CFG_MAX_LEVELS);
    c->rpn_convs = ints(r, "rpn_head_conv_dims", c->rpn_conv_dims, 1, CFG_MAX_CONVS);
    c->num_anchors = integer(r, "rpn_num_anchors", 1, CFG_MAX_RATIOS);
    int ns = floats(r, "anchor_sizes", c->anchor_sizes, 5, CFG_MAX_LEVELS);
    c->n_ratios = floats(r, "anchor_aspect_ratios", c->aspect_ratios, 1, CFG_MAX_RATIOS);
    c->anchor_offset = (float)num(r, "anchor_offset");
    floats(r, "rpn_box2box_weights", c->rpn_weights, 4, 4);
    c->scale_clamp = num(r, "box2box_scale_clamp");
    c->rpn_pre_topk = integer(r, "rpn_pre_nms_topk_test", 1, 1 << 20);
    c->rpn_post_topk = integer(r, "rpn_post_nms_topk_test", 1, 1 << 20);
    c->rpn_nms_thresh = (float)num(r, "rpn_nms_thresh");
    c->rpn_min_size = (float)num(r, "rpn_min_box_size");
    if (!r->st && (ns != c->n_levels || c->n_ratios != c->num_anchors))
        r->st = hadm_fail(r->err, HADM_ERR_FORMAT,
                          "hadm.config: anchor sizes/strides/ratios are inconsistent");
}

static void read_roi(reader *r, hadm_config *c)
{
    c->pool_res = integer(r, "roi_pooler_resolution", 1, 64);
    c->sampling_ratio = integer(r, "roi_pooler_sampling_ratio", 0, 64);
    c->aligned = boolean(r, "roi_pooler_aligned");
    c->roi_levels = floats(r, "roi_pooler_scales", c->pool_scales, 1, CFG_MAX_LEVELS);
    c->canonical_size = integer(r, "roi_pooler_canonical_box_size", 1, 1 << 16);
    c->canonical_level = integer(r, "roi_pooler_canonical_level", 0, 16);
    c->min_level = integer(r, "roi_pooler_min_level", 0, 16);
    c->max_level = integer(r, "roi_pooler_max_level", 0, 16);
    c->box_convs = ints(r, "box_head_conv_dims", c->box_conv_dims, 0, CFG_MAX_CONVS);
    c->box_fcs = ints(r, "box_head_fc_dims", c->box_fc_dims, 1, CFG_MAX_CONVS);
    c->num_stages = integer(r, "cascade_num_stages", 1, CFG_MAX_STAGES);
    const cJSON *cw = get(r, "cascade_box2box_weights");
    int s = 0;
    for (const cJSON *e = cw ? cw->child : NULL; e && s < CFG_MAX_STAGES; e = e->next, s++) {
        int k = 0;
        for (const cJSON *x = e->child; x && k < 4; x = x->next, k++)
            c->cascade_weights[s][k] = cJSON_IsNumber(x) ? (float)x->valuedouble : 0;
        if (k != 4 && !r->st)
            r->st = hadm_fail(r->err, HADM_ERR_FORMAT, "hadm.config: cascade weights need 4 values");
    }
    if (!r->st && s != c->num_stages)
        r->st = hadm_fail(r->err, HADM_ERR_FORMAT, "hadm.config: %d cascade weight sets for %d stages",
                          s, c->num_stages);
    c->num_classes = integer(r, "num_classes", 1, CFG_MAX_CLASSES);
    c->use_sigmoid = boolean(r, "use_sigmoid_ce");
    c->score_thresh = (float)num(r, "test_score_thresh");
    c->nms_thresh = (float)num(r, "test_nms_thresh");
    c->max_dets = integer(r, "test_detections_per_image", 1, 1 << 16);
}

static hadm_status check_consistency(const hadm_config *c, hadm_error *err)
{
#define REQUIRE(cond, ...) \
    if (!(cond))           \
    return hadm_fail(err, HADM_ERR_FORMAT, "hadm.config: " __VA_ARGS__)
    REQUIRE(c->head_dim * c->num_heads == c->embed_dim, "heads x head_dim != embed_dim");
    REQUIRE(c->img_size % c->patch == 0, "vit_img_size not a multiple of the patch size");
    REQUIRE(c->square_pad == c->img_size, "square_pad must equal vit_img_size");
    REQUIRE(c->resize_max <= c->square_pad, "resize max size exceeds square_pad");
    REQUIRE(c->rope_dim * 2 == c->head_dim && c->rope_dim % 2 == 0, "vit_rope_dim must be head_dim/2 and even");
    REQUIRE(c->embed_dim % 4 == 0, "embed_dim must be a multiple of 4");
    REQUIRE(c->n_levels == 5 && c->n_scales == 4, "need pyramid levels p2..p6");
    REQUIRE(c->fpn_scales[0] == 4 && c->fpn_scales[1] == 2 && c->fpn_scales[2] == 1 && c->fpn_scales[3] == 0.5f,
            "fpn_scale_factors must be [4, 2, 1, 0.5]");
    REQUIRE(c->roi_levels == 4 && c->min_level == 2 && c->max_level == 5, "ROI levels must be p2..p5");
    for (int i = 0; i < c->rpn_convs; i++)
        REQUIRE(c->rpn_conv_dims[i] == c->fpn_channels, "rpn conv dims must equal fpn channels");
    for (int i = 0; i < c->box_convs; i++)
        REQUIRE(c->box_conv_dims[i] == c->fpn_channels, "box head conv dims must equal fpn channels");
    REQUIRE(c->attn_scale > 0 && c->ln_eps > 0 && c->fpn_eps > 0, "scale/eps must be positive");
    for (int i = 0; i < 3; i++)
        REQUIRE(c->pixel_std[i] != 0, "pixel_std is zero");
    return HADM_OK;
#undef REQUIRE
}

static hadm_status parse_classes(hadm_config *cfg, const char *classes_json, hadm_error *err)
{
    cJSON *arr = classes_json ? cJSON_Parse(classes_json) : NULL;
    int n = cJSON_IsArray(arr) ? cJSON_GetArraySize(arr) : -1;
    if (n != cfg->num_classes) {
        cJSON_Delete(arr);
        return hadm_fail(err, HADM_ERR_FORMAT, "hadm.classes: expected a JSON array of %d names",
                         cfg->num_classes);
    }
    int i = 0;
    for (const cJSON *e = arr->child; e; e = e->next, i++) {
        if (!cJSON_IsString(e) || !(cfg->class_names[i] = strdup(e->valuestring))) {
            cJSON_Delete(arr);
            return hadm_fail(err, HADM_ERR_FORMAT, "hadm.classes: entry %d is not a string", i);
        }
    }
    cJSON_Delete(arr);
    return HADM_OK;
}

hadm_status config_parse(hadm_config *cfg, const char *config_json, const char *variant,
                         const char *classes_json, hadm_error *err)
{
    memset(cfg, 0, sizeof *cfg);
    if (!config_json)
        return hadm_fail(err, HADM_ERR_FORMAT, "metadata 'hadm.config' is missing");
    if (!variant || (strcmp(variant, "HADM-L") && strcmp(variant, "HADM-G")))
        return hadm_fail(err, HADM_ERR_FORMAT, "metadata 'hadm.variant' must be HADM-L or HADM-G");
    snprintf(cfg->variant, sizeof cfg->variant, "%s", variant);
    cJSON *root = cJSON_Parse(config_json);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return hadm_fail(err, HADM_ERR_FORMAT, "metadata 'hadm.config' is not a JSON object");
    }
    reader r = {root, err, HADM_OK};
    read_input_and_vit(&r, cfg);
    read_fpn_rpn(&r, cfg);
    read_roi(&r, cfg);
    cJSON_Delete(root);
    hadm_status s = r.st ? r.st : check_consistency(cfg, err);
    if (!s)
        s = parse_classes(cfg, classes_json, err);
    if (s)
        config_free(cfg);
    return s;
}

void config_free(hadm_config *cfg)
{
    for (int i = 0; i < CFG_MAX_CLASSES; i++) {
        free(cfg->class_names[i]);
        cfg->class_names[i] = NULL;
    }
}
