/* Box arithmetic shared by the RPN, the cascade and post-processing
 * (spec MODEL.md 4.2-4.5): anchors, Box2BoxTransform decoding, clipping,
 * deterministic top-k and score ordering, and NMS run per group. Boxes are
 * xyxy float32 in resized-image pixels, as detectron2 keeps them. */
#ifndef HADM_ENGINE_BOXES_H
#define HADM_ENGINE_BOXES_H

#include "engine/engine.h"

/* The A cell anchors of pyramid level `level` (spec 4.2): computed in double,
 * stored as float, one per aspect ratio in config order: cell[a][4]. */
void boxes_cell_anchors(const hadm_config *cfg, int level, float cell[][4]);

/* Anchor of flattened index i = (y*W + x)*A + a on a level of the given stride:
 * cell[a] shifted by (x*stride, y*stride) plus the config offset, in float. */
void boxes_anchor(const float cell[][4], int A, int W, int stride, float offset, int64_t i,
                  float out[4]);

/* Box2BoxTransform.apply_deltas on one box, in float32 (spec 4.3): deltas are
 * divided by the weights, dw/dh clamped from above only at scale_clamp. */
void boxes_decode(const float box[4], const float delta[4], const float weights[4],
                  float scale_clamp, float out[4]);

/* Boxes.clip: x to [0, w], y to [0, h], each coordinate independently. */
void boxes_clip(float b[4], int h, int w);

/* All four coordinates finite. */
int boxes_finite(const float b[4]);

/* Ordering used wherever scores are ranked: descending score, then lower
 * index first (spec P22); NaN ranks above everything, as in torch.topk. */
int boxes_ranks_before(float sa, int64_t ia, float sb, int64_t ib);

/* Sorts idx[0..n) by that order of score[idx[.]]. */
void boxes_sort_by_score(const float *score, int *idx, int n);

/* The k best of score[0..n) in that order, written to idx[0..k) (k <= n). */
hadm_status boxes_topk(const float *score, int64_t n, int k, int *idx, hadm_error *err);

/* NMS run independently inside each group (torchvision batched_nms with its
 * exact per-group semantics, spec 4.5): candidates are boxes[i] (xyxy),
 * score[i], group[i] for i in [0, n). The survivors' indices, ordered by
 * score (descending, lower index first), go to keep; *nkeep is their count. */
hadm_status boxes_batched_nms(const float *boxes, const float *score, const int *group, int n,
                              float iou_thresh, int *keep, int *nkeep, hadm_error *err);

/* ---- RPN internals (rpn.c), exposed for the golden tests ---------------- */

/* The RPN head on one NHWC level map [H][W][C]: objectness logits [H*W][A] and
 * anchor deltas [H*W][4A] (the (y, x, a) flattening of spec 4.1). */
hadm_status rpn_head_level(const struct hadm_model *m, ops_ctx *c, const float *map, int H, int W,
                           float *logits, float *deltas, hadm_error *err);

#endif
