/* The forward pass, stage by stage as in spec/PIPELINE.md, and the public
 * detect entry points. A batch shares one pass through the ViT (its Linear
 * layers then see B*G*G rows); everything after the backbone is per image. */
#include <stdlib.h>
#include <string.h>

#include "engine/cuda_hooks.h"
#include "engine/device_plan.h"
#include "engine/engine.h"
#include "util/err.h"
#include "util/pages.h"
#include "util/timer.h"

/* Backbone rows per pass: batches of small models share a pass, a full-size
 * image (4096 tokens) already fills the matmuls and goes alone, which also
 * keeps activation memory to one image's worth. */
#define VIT_MAX_ROWS 4096
#define VIT_MAX_BATCH 64

typedef struct {
    const hadm_image *img;
    image_geom g;
    float *chw;
    hadm_result *res;
    hadm_error err;
    hadm_status st;
} job;

typedef struct {
    float *proposals, *scores, *boxes;
    fpn_maps maps;
} head_buffers;

static void heads_free(head_buffers *b)
{
    free(b->proposals);
    free(b->scores);
    free(b->boxes);
    fpn_free(&b->maps);
}

static hadm_status heads_alloc(const hadm_config *cfg, head_buffers *b, hadm_error *err)
{
    memset(b, 0, sizeof *b);
    size_t R = (size_t)cfg->rpn_post_topk;
    b->proposals = malloc(R * 4 * sizeof(float));
    b->scores = malloc(R * (size_t)(cfg->num_classes + 1) * sizeof(float));
    b->boxes = malloc(R * 4 * sizeof(float));
    if (!b->proposals || !b->scores || !b->boxes) {
        heads_free(b);
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory");
    }
    hadm_status s = fpn_alloc(cfg, &b->maps, err);
    if (s)
        heads_free(b);
    return s;
}

static hadm_status preprocess(const hadm_config *cfg, job *j, hadm_channel_order order,
                              const engine_trace *t)
{
    const hadm_image *img = j->img;
    if (!img || !img->rgb || img->width <= 0 || img->height <= 0)
        return hadm_fail(&j->err, HADM_ERR_ARG, "empty image");
    double t0 = hadm_now();
    j->g.orig_w = img->width;
    j->g.orig_h = img->height;
    hadm_status s = preprocess_size(cfg, img->width, img->height, &j->g.new_w, &j->g.new_h, &j->err);
    hadm_image resized = {0};
    if (s || (s = preprocess_resize(img, j->g.new_w, j->g.new_h, &resized, &j->err)))
        return s;
    size_t S = (size_t)cfg->square_pad;
    if (!(j->chw = malloc(3 * S * S * sizeof(float)))) {
        hadm_image_free(&resized);
        return hadm_fail(&j->err, HADM_ERR_NOMEM, "out of memory");
    }
    preprocess_normalize_pad(cfg, &resized, order, j->chw);
    hadm_image_free(&resized);
    int64_t shape[4] = {1, 3, (int64_t)S, (int64_t)S};
    trace_f32(t, "input.tensor", TRACE_SAME, j->chw, 4, shape);
    if (!(j->res = calloc(1, sizeof *j->res)))
        return hadm_fail(&j->err, HADM_ERR_NOMEM, "out of memory");
    j->res->image_width = j->g.orig_w;
    j->res->image_height = j->g.orig_h;
    j->res->resized_width = j->g.new_w;
    j->res->resized_height = j->g.new_h;
    j->res->timings.preprocess = hadm_now() - t0;
    return HADM_OK;
}

/* Pyramid, proposals, cascade and post-processing for one image. */
static hadm_status heads(struct hadm_model *m, ops_ctx *c, job *j, float *tokens,
                         head_buffers *b, const hadm_detect_options *opt, const engine_trace *t)
{
    hadm_timings *tm = &j->res->timings;
    hadm_error *err = &j->err;
    double t1 = hadm_now(), flops0 = ops_ctx_flops(c);
    hadm_status s;
    int R = 0;
    s = fpn_forward(m, c, tokens, &b->maps, t, err);
    /* the ViT's output is dead once the pyramid is built: 16 MB at full size */
    pages_discard(tokens, (size_t)(m->cfg.img_size / m->cfg.patch) * (m->cfg.img_size / m->cfg.patch) *
                              m->cfg.embed_dim * sizeof *tokens);
    if (s)
        return s;
    model_stage_end(m, c);
    tm->fpn = hadm_now() - t1, t1 = hadm_now();
    if ((s = rpn_forward(m, c, &b->maps, &j->g, b->proposals, &R, t, err)))
        return s;
    model_stage_end(m, c);
    tm->rpn = hadm_now() - t1, t1 = hadm_now();
    if ((s = roi_heads_forward(m, c, &b->maps, &j->g, b->proposals, R, b->scores, b->boxes, t, err)))
        return s;
    model_stage_end(m, c);
    tm->roi_heads = hadm_now() - t1, t1 = hadm_now();
    if ((s = postprocess_detections(&m->cfg, b->scores, b->boxes, R, &j->g, j->res, t, err)))
        return s;
    if (opt && opt->min_score > 0) {
        int n = 0;
        for (int i = 0; i < j->res->count; i++)
            if (j->res->dets[i].score >= opt->min_score)
                j->res->dets[n++] = j->res->dets[i];
        j->res->count = n;
    }
    tm->postprocess = hadm_now() - t1;
    j->res->gflop += (ops_ctx_flops(c) - flops0) * 1e-9;
    return HADM_OK;
}

/* Backbone for jobs[0..n) in one pass, then the heads of each. */
static void run_chunk(struct hadm_model *m, ops_ctx *c, job **jobs, int n, float *tokens,
                      head_buffers *b, const hadm_detect_options *opt, const engine_trace *t)
{
    const hadm_config *cfg = &m->cfg;
    size_t per = (size_t)(cfg->img_size / cfg->patch) * (cfg->img_size / cfg->patch) * cfg->embed_dim;
    const float *chw[VIT_MAX_BATCH];
    for (int i = 0; i < n; i++)
        chw[i] = jobs[i]->chw;
    double t0 = hadm_now(), f0 = ops_ctx_flops(c);
    hadm_error err = {0};
    hadm_status s = vit_forward_batch(m, c, chw, n, tokens, t, &err);
    ops_scratch_release(c);
    double share = (hadm_now() - t0) / n, gflop = (ops_ctx_flops(c) - f0) * 1e-9 / n;
    for (int i = 0; i < n; i++) {
        job *j = jobs[i];
        if (s) {
            j->st = s;
            j->err = err;
            continue;
        }
        j->res->timings.backbone = share;
        j->res->gflop = gflop;
        j->st = heads(m, c, j, tokens + i * per, b, opt, t);
    }
}

/* On the GPU the whole forward, NMS included, runs in one go per batch (engine/cuda). */
static void run_jobs_cuda(struct hadm_model *m, job *jobs, int n, const hadm_detect_options *opt)
{
    for (int i = 0; i < n;) {
        cuda_job cj[CUDA_MAX_BATCH];
        int idx[CUDA_MAX_BATCH], k = 0;
        for (; i < n && k < CUDA_MAX_BATCH; i++)
            if (jobs[i].st == HADM_OK)
                idx[k] = i, cj[k++] = (cuda_job){jobs[i].chw, jobs[i].g, jobs[i].res, {0}, HADM_OK};
        cuda_detect_jobs(m, cj, k, opt);
        for (int j = 0; j < k; j++)
            if ((jobs[idx[j]].st = cj[j].st))
                jobs[idx[j]].err = cj[j].err;
    }
}

static hadm_status run_jobs(struct hadm_model *m, job *jobs, int n, const hadm_detect_options *opt,
                            const engine_trace *t, hadm_error *err)
{
    const hadm_config *cfg = &m->cfg;
    int T = (cfg->img_size / cfg->patch) * (cfg->img_size / cfg->patch);
    int per_pass = VIT_MAX_ROWS / T > 1 ? VIT_MAX_ROWS / T : 1;
    per_pass = per_pass > VIT_MAX_BATCH ? VIT_MAX_BATCH : per_pass;
    for (int i = 0; i < n; i++)
        jobs[i].st = preprocess(cfg, &jobs[i], opt ? opt->channel_order : HADM_RGB, t);
    if (m->cuda) {
        run_jobs_cuda(m, jobs, n, opt);
        return HADM_OK;
    }
    ops_ctx *c = NULL;
    head_buffers b;
    float *tokens = malloc((size_t)per_pass * T * cfg->embed_dim * sizeof(float));
    job **ready = malloc((size_t)per_pass * sizeof *ready);
    hadm_status s = tokens && ready ? heads_alloc(cfg, &b, err) : hadm_fail(err, HADM_ERR_NOMEM, "out of memory");
    if (!s) {
        if (!(s = model_ctx_acquire(m, &c, err))) {
            int k = 0;
            for (int i = 0; i <= n; i++) {
                if (i < n && jobs[i].st == HADM_OK)
                    ready[k++] = &jobs[i];
                if (k == per_pass || (i == n && k > 0)) {
                    run_chunk(m, c, ready, k, tokens, &b, opt, t);
                    k = 0;
                }
            }
            model_ctx_release(m, c);
        }
        heads_free(&b);
        if (!s) /* weights read from a file that changed under us are not results */
            s = st_check_intact(m->file, err);
    }
    free(ready);
    free(tokens);
    return s;
}

static void job_finish(job *j, hadm_result **out, hadm_error *err)
{
    free(j->chw);
    if (j->st != HADM_OK) {
        hadm_result_free(j->res);
        *out = NULL;
        if (err)
            *err = j->err, err->code = j->st;
        return;
    }
    j->res->timings.total = j->res->timings.preprocess + j->res->timings.backbone + j->res->timings.fpn +
                            j->res->timings.rpn + j->res->timings.roi_heads + j->res->timings.postprocess;
    *out = j->res;
}

hadm_status engine_detect(struct hadm_model *m, const hadm_image *img, const hadm_detect_options *opt,
                          const engine_trace *t, hadm_result **out, hadm_error *err)
{
    if (!m || !img || !out)
        return hadm_fail(err, HADM_ERR_ARG, "detect: missing model or image");
    job j = {.img = img};
    hadm_status s = run_jobs(m, &j, 1, opt, t, err);
    if (s) {
        free(j.chw);
        hadm_result_free(j.res);
        return s;
    }
    job_finish(&j, out, err);
    return j.st;
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
    job *jobs = calloc((size_t)(n ? n : 1), sizeof *jobs);
    if (!jobs)
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory");
    for (int i = 0; i < n; i++)
        jobs[i].img = &imgs[i];
    hadm_status s = run_jobs(m, jobs, n, opt, NULL, err);
    for (int i = 0; i < n; i++) {
        if (s && jobs[i].st == HADM_OK)
            jobs[i].st = s, jobs[i].err = *err;
        job_finish(&jobs[i], &results[i], errs ? &errs[i] : NULL);
    }
    free(jobs);
    return HADM_OK;
}

void hadm_result_free(hadm_result *r)
{
    if (!r)
        return;
    free(r->dets);
    free(r);
}
