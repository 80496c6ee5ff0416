/* Detections from the cascade output (spec MODEL.md 5.5-5.6, detectron2's
 * fast_rcnn_inference_single_image then detector_postprocess): drop
 * non-finite rows, clip, threshold every (row, class) pair, NMS per class,
 * keep the best max_dets, rescale to the original image, clip, drop empty. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/boxes.h"
#include "util/err.h"

typedef struct {
    int n;
    float *box;     /* [n][4] clipped, resized-image pixels */
    float *score;   /* [n] */
    int *cls;       /* [n] */
    int *keep;      /* [n] */
} cands;

static void cands_free(cands *c)
{
    free(c->box);
    free(c->score);
    free(c->cls);
    free(c->keep);
}

static int row_finite(const float *scores, int K1, const float *box)
{
    if (!boxes_finite(box))
        return 0;
    for (int k = 0; k < K1; k++)
        if (!isfinite(scores[k]))
            return 0;
    return 1;
}

/* Every (row, class) pair above the threshold, row-major, with the row's clipped box. */
static hadm_status collect(const hadm_config *cfg, const float *scores, const float *boxes, int R,
                           const image_geom *g, cands *c, hadm_error *err)
{
    int K = cfg->num_classes, K1 = K + 1;
    int n = 0;
    for (int i = 0; i < R; i++)
        if (row_finite(scores + (size_t)i * K1, K1, boxes + (size_t)i * 4))
            for (int k = 0; k < K; k++)
                n += scores[(size_t)i * K1 + k] > cfg->score_thresh;
    size_t cap = (size_t)(n > 0 ? n : 1);
    c->box = malloc(cap * 4 * sizeof(float));
    c->score = malloc(cap * sizeof(float));
    c->cls = malloc(cap * sizeof(int));
    c->keep = malloc(cap * sizeof(int));
    if (!c->box || !c->score || !c->cls || !c->keep)
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory (%d detections)", n);
    c->n = 0;
    for (int i = 0; i < R; i++) {
        const float *s = scores + (size_t)i * K1;
        float b[4];
        memcpy(b, boxes + (size_t)i * 4, sizeof b);
        if (!row_finite(s, K1, b))
            continue;
        boxes_clip(b, g->new_h, g->new_w);
        for (int k = 0; k < K; k++) {
            if (!(s[k] > cfg->score_thresh))
                continue;
            memcpy(c->box + (size_t)c->n * 4, b, sizeof b);
            c->score[c->n] = s[k];
            c->cls[c->n] = k;
            c->n++;
        }
    }
    return HADM_OK;
}

/* Traces boxes, scores and classes of n detections as PREFIX.{boxes,scores,classes}. */
static void trace_dets(const engine_trace *t, const char *prefix, const hadm_detection *d, int n)
{
    if (!t)
        return;
    size_t cap = (size_t)(n > 0 ? n : 1);
    float *b = malloc(cap * 4 * sizeof(float)), *s = malloc(cap * sizeof(float));
    int32_t *k = malloc(cap * sizeof(int32_t));
    if (b && s && k) {
        for (int i = 0; i < n; i++) {
            b[i * 4] = d[i].x1, b[i * 4 + 1] = d[i].y1, b[i * 4 + 2] = d[i].x2, b[i * 4 + 3] = d[i].y2;
            s[i] = d[i].score, k[i] = d[i].class_id;
        }
        char name[64];
        int64_t shape[2] = {n, 4};
        snprintf(name, sizeof name, "%s.boxes", prefix);
        trace_f32(t, name, TRACE_SAME, b, 2, shape);
        snprintf(name, sizeof name, "%s.scores", prefix);
        trace_f32(t, name, TRACE_SAME, s, 1, shape);
        snprintf(name, sizeof name, "%s.classes", prefix);
        trace_i32(t, name, k, 1, shape);
    }
    free(b);
    free(s);
    free(k);
}

/* detector_postprocess, in place: scale by orig/new (factors in double,
 * applied in float32 as PyTorch does), clip to the original size, drop
 * empty boxes; returns the count left (order kept). */
static int to_original(const image_geom *g, hadm_detection *d, int n)
{
    float sx = (float)((double)g->orig_w / g->new_w), sy = (float)((double)g->orig_h / g->new_h);
    int kept = 0;
    for (int i = 0; i < n; i++) {
        float b[4] = {d[i].x1 * sx, d[i].y1 * sy, d[i].x2 * sx, d[i].y2 * sy};
        boxes_clip(b, g->orig_h, g->orig_w);
        if (!(b[2] - b[0] > 0.0f && b[3] - b[1] > 0.0f))
            continue;
        d[kept] = d[i];
        d[kept].x1 = b[0], d[kept].y1 = b[1], d[kept].x2 = b[2], d[kept].y2 = b[3];
        kept++;
    }
    return kept;
}

hadm_status postprocess_detections(const hadm_config *cfg, const float *scores, const float *boxes,
                                   int R, const image_geom *g, hadm_result *res,
                                   const engine_trace *t, hadm_error *err)
{
    if (!res || R < 0 || (R > 0 && (!scores || !boxes)))
        return hadm_fail(err, HADM_ERR_ARG, "postprocess: bad arguments");
    if (g->new_w <= 0 || g->new_h <= 0 || g->orig_w <= 0 || g->orig_h <= 0)
        return hadm_fail(err, HADM_ERR_ARG, "postprocess: bad image geometry");
    free(res->dets);
    res->dets = NULL;
    res->count = 0;
    cands c = {0};
    int nk = 0;
    hadm_status s = collect(cfg, scores, boxes, R, g, &c, err);
    if (!s)
        s = boxes_batched_nms(c.box, c.score, c.cls, c.n, cfg->nms_thresh, c.keep, &nk, err);
    if (!s) {
        nk = nk < cfg->max_dets ? nk : cfg->max_dets;
        if (!(res->dets = malloc((size_t)(nk > 0 ? nk : 1) * sizeof *res->dets)))
            s = hadm_fail(err, HADM_ERR_NOMEM, "out of memory (detections)");
    }
    if (!s) {
        for (int i = 0; i < nk; i++) { /* still in resized-image pixels here */
            const float *b = c.box + (size_t)c.keep[i] * 4;
            int k = c.cls[c.keep[i]];
            res->dets[i] = (hadm_detection){b[0], b[1], b[2], b[3], c.score[c.keep[i]], k, cfg->class_names[k]};
        }
        trace_dets(t, "det.resized", res->dets, nk);
        res->count = to_original(g, res->dets, nk);
        trace_dets(t, "det", res->dets, res->count);
    }
    cands_free(&c);
    return s;
}
