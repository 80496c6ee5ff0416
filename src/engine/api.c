/* The forward pass for one image, stage by stage as in spec/PIPELINE.md,
 * and the public detect entry points. */
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "util/err.h"
#include "util/timer.h"

typedef struct {
    float *chw, *tokens, *proposals, *scores, *boxes;
    fpn_maps maps;
} forward_buffers;

static void buffers_free(forward_buffers *b)
{
    free(b->chw);
    free(b->tokens);
    free(b->proposals);
    free(b->scores);
    free(b->boxes);
    fpn_free(&b->maps);
}

static hadm_status buffers_alloc(const hadm_config *cfg, forward_buffers *b, hadm_error *err)
{
    memset(b, 0, sizeof *b);
    size_t S = (size_t)cfg->square_pad, G = (size_t)(cfg->img_size / cfg->patch);
    size_t R = (size_t)cfg->rpn_post_topk;
    b->chw = malloc(3 * S * S * sizeof(float));
    b->tokens = malloc(G * G * (size_t)cfg->embed_dim * sizeof(float));
    b->proposals = malloc(R * 4 * sizeof(float));
    b->scores = malloc(R * (size_t)(cfg->num_classes + 1) * sizeof(float));
    b->boxes = malloc(R * 4 * sizeof(float));
    if (!b->chw || !b->tokens || !b->proposals || !b->scores || !b->boxes) {
        buffers_free(b);
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory");
    }
    hadm_status s = fpn_alloc(cfg, &b->maps, err);
    if (s)
        buffers_free(b);
    return s;
}

static hadm_status preprocess(const hadm_config *cfg, const hadm_image *img, hadm_channel_order order,
                              image_geom *g, float *chw, const engine_trace *t, hadm_error *err)
{
    g->orig_w = img->width;
    g->orig_h = img->height;
    hadm_status s = preprocess_size(cfg, img->width, img->height, &g->new_w, &g->new_h, err);
    if (s)
        return s;
    hadm_image resized = {0};
    if ((s = preprocess_resize(img, g->new_w, g->new_h, &resized, err)))
        return s;
    preprocess_normalize_pad(cfg, &resized, order, chw);
    hadm_image_free(&resized);
    int64_t shape[4] = {1, 3, cfg->square_pad, cfg->square_pad};
    trace_f32(t, "input.tensor", TRACE_SAME, chw, 4, shape);
    return HADM_OK;
}

static void apply_min_score(hadm_result *res, float min_score)
{
    int n = 0;
    for (int i = 0; i < res->count; i++)
        if (res->dets[i].score >= min_score)
            res->dets[n++] = res->dets[i];
    res->count = n;
}

static hadm_status forward(struct hadm_model *m, ops_ctx *c, const hadm_image *img,
                           const hadm_detect_options *opt, const engine_trace *t, hadm_result *res,
                           forward_buffers *b, hadm_error *err)
{
    const hadm_config *cfg = &m->cfg;
    hadm_timings *tm = &res->timings;
    image_geom g;
    double t0 = hadm_now(), t1;
    hadm_status s = preprocess(cfg, img, opt ? opt->channel_order : HADM_RGB, &g, b->chw, t, err);
    if (s)
        return s;
    res->image_width = g.orig_w;
    res->image_height = g.orig_h;
    res->resized_width = g.new_w;
    res->resized_height = g.new_h;
    tm->preprocess = (t1 = hadm_now()) - t0;
    if ((s = vit_forward(m, c, b->chw, b->tokens, t, err)))
        return s;
    tm->backbone = hadm_now() - t1, t1 = hadm_now();
    if ((s = fpn_forward(m, c, b->tokens, &b->maps, t, err)))
        return s;
    tm->fpn = hadm_now() - t1, t1 = hadm_now();
    int R = 0;
    if ((s = rpn_forward(m, c, &b->maps, &g, b->proposals, &R, t, err)))
        return s;
    tm->rpn = hadm_now() - t1, t1 = hadm_now();
    if ((s = roi_heads_forward(m, c, &b->maps, &g, b->proposals, R, b->scores, b->boxes, t, err)))
        return s;
    tm->roi_heads = hadm_now() - t1, t1 = hadm_now();
    if ((s = postprocess_detections(cfg, b->scores, b->boxes, R, &g, res, t, err)))
        return s;
    if (opt && opt->min_score > 0)
        apply_min_score(res, opt->min_score);
    tm->postprocess = hadm_now() - t1;
    tm->total = hadm_now() - t0;
    return HADM_OK;
}

hadm_status engine_detect(struct hadm_model *m, const hadm_image *img, const hadm_detect_options *opt,
                          const engine_trace *t, hadm_result **out, hadm_error *err)
{
    if (!m || !img || !out || !img->rgb || img->width <= 0 || img->height <= 0)
        return hadm_fail(err, HADM_ERR_ARG, "detect: missing model or empty image");
    *out = NULL;
    hadm_result *res = calloc(1, sizeof *res);
    if (!res)
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory");
    ops_ctx *c = NULL;
    forward_buffers b;
    hadm_status s = buffers_alloc(&m->cfg, &b, err);
    if (!s) {
        if (!(s = model_ctx_acquire(m, &c, err))) {
            ops_ctx_reset_flops(c);
            s = forward(m, c, img, opt, t, res, &b, err);
            res->gflop = ops_ctx_flops(c) * 1e-9;
            model_ctx_release(m, c);
        }
        buffers_free(&b);
    }
    if (s) {
        hadm_result_free(res);
        return s;
    }
    *out = res;
    return HADM_OK;
}

hadm_status hadm_detect(hadm_model *m, const hadm_image *img, const hadm_detect_options *opt,
                        hadm_result **out, hadm_error *err)
{
    return engine_detect(m, img, opt, NULL, out, err);
}

hadm_status hadm_detect_batch(hadm_model *m, const hadm_image *imgs, int n,
                              const hadm_detect_options *opt, hadm_result **results,
                              hadm_error *errs, hadm_error *err)
{
    if (!m || (!imgs && n > 0) || !results || n < 0)
        return hadm_fail(err, HADM_ERR_ARG, "detect_batch: bad arguments");
    for (int i = 0; i < n; i++) {
        hadm_error e = {0};
        results[i] = NULL;
        if (engine_detect(m, &imgs[i], opt, NULL, &results[i], &e) != HADM_OK && errs)
            errs[i] = e;
        else if (errs)
            memset(&errs[i], 0, sizeof errs[i]);
    }
    return HADM_OK;
}

void hadm_result_free(hadm_result *r)
{
    if (!r)
        return;
    free(r->dets);
    free(r);
}
