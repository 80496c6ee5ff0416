/* The model hyper-parameters, read from the file's `hadm.config` metadata
 * (spec/FORMAT.md section 2). Nothing about the real model size is hard-coded:
 * the tiny golden models and the full models go through the same code. */
#ifndef HADM_ENGINE_CONFIG_H
#define HADM_ENGINE_CONFIG_H

#include "hadm.h"

#define CFG_MAX_BLOCKS 64
#define CFG_MAX_LEVELS 5
#define CFG_MAX_RATIOS 8
#define CFG_MAX_STAGES 4
#define CFG_MAX_CONVS 8
#define CFG_MAX_CLASSES 64

typedef struct {
    /* identity */
    char variant[16];                 /* "HADM-L" / "HADM-G" */
    int num_classes;                  /* K */
    char *class_names[CFG_MAX_CLASSES];
    int use_sigmoid;                  /* HADM-G: sigmoid scores, else softmax */

    /* input */
    float pixel_mean[3], pixel_std[3];
    int resize_short, resize_max, square_pad;

    /* ViT */
    int img_size, patch, in_chans, embed_dim, depth, num_heads, head_dim, mlp_hidden;
    int window_size;
    float attn_scale, ln_eps;
    unsigned char is_global[CFG_MAX_BLOCKS];
    int use_abs_pos, pretrain_img_size, pretrain_cls_token;
    int rope_dim, rope_pt_seq_len;
    float rope_theta;

    /* pyramid */
    int fpn_channels;
    int n_scales;                     /* branches p2..p5 */
    float fpn_scales[CFG_MAX_LEVELS];
    float fpn_eps;

    /* RPN */
    int n_levels;                     /* p2..p6 = 5 */
    int rpn_convs, rpn_conv_dims[CFG_MAX_CONVS];
    int num_anchors;                  /* per location = n_ratios */
    float anchor_sizes[CFG_MAX_LEVELS];
    int n_ratios;
    float aspect_ratios[CFG_MAX_RATIOS];
    int anchor_strides[CFG_MAX_LEVELS];
    float anchor_offset;
    float rpn_weights[4];
    double scale_clamp;
    int rpn_pre_topk, rpn_post_topk;
    float rpn_nms_thresh, rpn_min_size;

    /* cascade ROI heads */
    int pool_res, sampling_ratio, aligned;
    int roi_levels;                   /* p2..p5 = 4 */
    float pool_scales[CFG_MAX_LEVELS];
    int canonical_size, canonical_level, min_level, max_level;
    int box_convs, box_conv_dims[CFG_MAX_CONVS];
    int box_fcs, box_fc_dims[CFG_MAX_CONVS];
    int num_stages;
    float cascade_weights[CFG_MAX_STAGES][4];
    float score_thresh, nms_thresh;
    int max_dets;
} hadm_config;

/* Parses `hadm.config` (JSON object text) plus `hadm.variant`/`hadm.classes`.
 * Validates ranges and internal consistency (e.g. head_dim * heads = embed). */
hadm_status config_parse(hadm_config *cfg, const char *config_json, const char *variant,
                         const char *classes_json, hadm_error *err);
void config_free(hadm_config *cfg);

/* Serialises cfg back into the same JSON keys (used by synth/quantize). */
char *config_to_json(const hadm_config *cfg);

/* The real model's config for a variant ('l' or 'g'), optionally shrunk to the
 * tiny test geometry; used by `hadm synth` and the built-in demo models. */
hadm_status config_default(hadm_config *cfg, char variant, int tiny, hadm_error *err);

#endif
