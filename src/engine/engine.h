/* The pipeline stages of spec/PIPELINE.md and the trace hook used by the
 * golden tests to compare every intermediate tensor with the original. */
#ifndef HADM_ENGINE_ENGINE_H
#define HADM_ENGINE_ENGINE_H

#include "engine/model.h"

/* How a traced tensor is laid out relative to the golden tensor of the same name. */
typedef enum {
    TRACE_SAME = 0,      /* identical layout and shape (flattened) */
    TRACE_NHWC_OF_NCHW,  /* ours is [N][H][W][C], golden [N][C][H][W]; shape given as N,C,H,W */
} trace_layout;

typedef struct {
    void (*tensor)(void *user, const char *name, trace_layout layout, const void *data,
                   int is_int, int ndim, const int64_t *shape);
    void *user;
} engine_trace;

static inline void trace_f32(const engine_trace *t, const char *name, trace_layout layout,
                             const float *data, int ndim, const int64_t *shape)
{
    if (t && t->tensor)
        t->tensor(t->user, name, layout, data, 0, ndim, shape);
}
static inline void trace_i32(const engine_trace *t, const char *name, const int32_t *data,
                             int ndim, const int64_t *shape)
{
    if (t && t->tensor)
        t->tensor(t->user, name, TRACE_SAME, data, 1, ndim, shape);
}

/* Feature pyramid p2..p6, NHWC, C channels each. */
typedef struct {
    int n, C;
    int h[CFG_MAX_LEVELS], w[CFG_MAX_LEVELS], stride[CFG_MAX_LEVELS];
    float *map[CFG_MAX_LEVELS];
} fpn_maps;

typedef struct {
    int orig_w, orig_h;   /* after EXIF */
    int new_w, new_h;     /* resized, before padding */
} image_geom;

/* preprocess.c: size of the test-time resize (spec 1.2), bit-exact PIL bilinear
 * resize (1.2), normalise + pad into a CHW float square (1.3-1.5). */
hadm_status preprocess_size(const hadm_config *cfg, int w, int h, int *new_w, int *new_h,
                            hadm_error *err);
hadm_status preprocess_resize(const hadm_image *src, int new_w, int new_h, hadm_image *dst,
                              hadm_error *err);
void preprocess_normalize_pad(const hadm_config *cfg, const hadm_image *resized,
                              hadm_channel_order order, float *chw /* 3*S*S */);

/* vit.c: input CHW [3][S][S] -> tokens [G*G][D] */
hadm_status vit_forward(const struct hadm_model *m, ops_ctx *c, const float *chw, float *tokens,
                        const engine_trace *t, hadm_error *err);
/* The same for B images at once: chw[i] -> tokens + i*G*G*D. */
hadm_status vit_forward_batch(const struct hadm_model *m, ops_ctx *c, const float *const *chw, int B,
                              float *tokens, const engine_trace *t, hadm_error *err);
/* fpn.c: tokens -> p2..p6 (maps allocated by the caller via fpn_alloc) */
hadm_status fpn_alloc(const hadm_config *cfg, fpn_maps *maps, hadm_error *err);
void fpn_free(fpn_maps *maps);
hadm_status fpn_forward(const struct hadm_model *m, ops_ctx *c, const float *tokens, fpn_maps *maps,
                        const engine_trace *t, hadm_error *err);
/* rpn.c: proposals [*n][4] (xyxy, resized-image pixels), at most rpn_post_topk */
hadm_status rpn_forward(const struct hadm_model *m, ops_ctx *c, const fpn_maps *maps,
                        const image_geom *g, float *proposals, int *n, const engine_trace *t,
                        hadm_error *err);
/* roi_heads.c: cascade; scores [R][K+1] (mean of stage probs), boxes [R][4] (last stage, unclipped) */
hadm_status roi_heads_forward(const struct hadm_model *m, ops_ctx *c, const fpn_maps *maps,
                              const image_geom *g, const float *proposals, int R, float *scores,
                              float *boxes, const engine_trace *t, hadm_error *err);
/* postprocess.c: threshold, per-class NMS, top-k, rescale to the original image. */
hadm_status postprocess_detections(const hadm_config *cfg, const float *scores, const float *boxes,
                                   int R, const image_geom *g, hadm_result *res,
                                   const engine_trace *t, hadm_error *err);

/* The whole forward for one decoded image, with optional trace. */
hadm_status engine_detect(struct hadm_model *m, const hadm_image *img,
                          const hadm_detect_options *opt, const engine_trace *t,
                          hadm_result **out, hadm_error *err);

#endif
