/* Whole models on the GPU against the CPU engine and the golden cases (part
 * of test_backend_ops; tolerances are listed there). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/cuda/cuda_model.h"
#include "golden.h"
#include "testutil.h"

typedef struct {
    int n;
    const float *box;    /* [n][4] */
    const float *score;
    const int *cls;
} det_list;

static double iou(const float *a, const float *b)
{
    double w = fmin(a[2], b[2]) - fmax(a[0], b[0]), h = fmin(a[3], b[3]) - fmax(a[1], b[1]);
    double inter = (w > 0 ? w : 0) * (h > 0 ? h : 0);
    double ua = (double)(a[2] - a[0]) * (a[3] - a[1]) + (double)(b[2] - b[0]) * (b[3] - b[1]) - inter;
    return ua > 0 ? inter / ua : 0;
}

/* Detections of `a` scoring >= 0.1 without a partner in `b` (same class, IoU >= 0.9, |ds| <= 0.03). */
static int unmatched(const det_list *a, const det_list *b, double *worst_ds)
{
    int miss = 0;
    for (int i = 0; i < a->n; i++) {
        if (a->score[i] < 0.1f)
            continue;
        int found = 0;
        for (int j = 0; j < b->n && !found; j++) {
            double ds = fabs((double)a->score[i] - b->score[j]);
            if (b->cls[j] == a->cls[i] && ds <= 0.03 && iou(a->box + 4 * i, b->box + 4 * j) >= 0.9) {
                found = 1;
                *worst_ds = ds > *worst_ds ? ds : *worst_ds;
            }
        }
        miss += !found;
    }
    return miss;
}

static void result_list(const hadm_result *r, float *box, float *score, int *cls, det_list *l)
{
    for (int i = 0; i < r->count; i++) {
        const hadm_detection *d = &r->dets[i];
        box[4 * i] = d->x1, box[4 * i + 1] = d->y1, box[4 * i + 2] = d->x2, box[4 * i + 3] = d->y2;
        score[i] = d->score, cls[i] = d->class_id;
    }
    *l = (det_list){r->count, box, score, cls};
}

static void compare_dets(const char *what, const det_list *want, const det_list *got)
{
    double ds = 0;
    int miss_a = unmatched(want, got, &ds), miss_b = unmatched(got, want, &ds);
    printf("%s: %d reference vs %d gpu detections, unmatched %d / %d, worst score diff %.3g\n", what, want->n, got->n,
           miss_a, miss_b, ds);
    CHECK(miss_a == 0 && miss_b == 0, "%s: %d reference and %d gpu detections unmatched", what, miss_a, miss_b);
}

/* Preprocess on the CPU; backbone + pyramid on both; compare; leaves the CPU maps. */
static void compare_features(hadm_model *mc, hadm_model *mg, ops_ctx *cpu, const hadm_image *img, const char *name)
{
    const hadm_config *cfg = &mc->cfg;
    hadm_error err = {0};
    int nw = 0, nh = 0;
    hadm_image rs = {0};
    size_t S = (size_t)cfg->square_pad;
    float *chw = malloc(3 * S * S * sizeof *chw);
    CHECK(preprocess_size(cfg, img->width, img->height, &nw, &nh, &err) == HADM_OK &&
              preprocess_resize(img, nw, nh, &rs, &err) == HADM_OK, "%s", err.msg);
    preprocess_normalize_pad(cfg, &rs, HADM_RGB, chw);
    hadm_image_free(&rs);
    cuda_model *cm = mg->cuda;
    cuda_exec *x = cm->all[0];
    const cuda_dims *d = &x->lay.d;
    float *tok = malloc((size_t)d->T * d->D * sizeof *tok);
    fpn_maps maps;
    CHECK(vit_forward(mc, cpu, chw, tok, NULL, &err) == HADM_OK && fpn_alloc(cfg, &maps, &err) == HADM_OK &&
              fpn_forward(mc, cpu, tok, &maps, NULL, &err) == HADM_OK,
          "cpu forward: %s", err.msg);
    int geom[4] = {nw, nh, img->width, img->height};
    CHECK(cuda_copy_to_device(x->dev, AF(x, AR_INPUT), chw, 3 * S * S * sizeof *chw, &err) == HADM_OK &&
              cuda_copy_to_device(x->dev, AI(x, AR_GEOM), geom, sizeof geom, &err) == HADM_OK &&
              cuda_backbone(mg, cm, x, 1, &err) == HADM_OK && cuda_heads(mg, cm, x, 0, &err) == HADM_OK &&
              cuda_dev_sync(x->dev, &err) == HADM_OK,
          "gpu forward: %s", err.msg);
    size_t tn = (size_t)d->T * d->D;
    float *gt = malloc(tn * sizeof *gt);
    CHECK(cuda_copy_to_host(x->dev, gt, AF(x, AR_X), tn * sizeof *gt, &err) == HADM_OK &&
              cuda_dev_sync(x->dev, &err) == HADM_OK, "%s", err.msg);
    double e = 0;
    for (size_t i = 0; i < tn; i++)
        e += ((double)gt[i] - tok[i]) * ((double)gt[i] - tok[i]);
    double m = 1e-30;
    for (size_t i = 0; i < tn; i++)
        m += (double)tok[i] * tok[i];
    printf("%s backbone tokens: relative L2 error %.3e\n", name, sqrt(e / m));
    CHECK(sqrt(e / m) <= 3e-2, "%s backbone: %.3e", name, sqrt(e / m));
    for (int l = 0; l < 5; l++) {
        size_t n = (size_t)maps.h[l] * maps.w[l] * maps.C;
        float *g = realloc(gt, n * sizeof *g);
        gt = g;
        CHECK(cuda_copy_to_host(x->dev, g, AF(x, (arena_buf)(AR_MAP0 + l)), n * sizeof *g, &err) == HADM_OK &&
                  cuda_dev_sync(x->dev, &err) == HADM_OK, "%s", err.msg);
        double pe = 0, pm = 1e-30;
        for (size_t i = 0; i < n; i++)
            pe += ((double)g[i] - maps.map[l][i]) * ((double)g[i] - maps.map[l][i]), pm += (double)maps.map[l][i] * maps.map[l][i];
        printf("%s p%d: relative L2 error %.3e\n", name, l + 2, sqrt(pe / pm));
        CHECK(sqrt(pe / pm) <= 3e-2, "%s p%d: %.3e", name, l + 2, sqrt(pe / pm));
    }
    free(gt), free(tok), free(chw);
    fpn_free(&maps);
}

static cuda_dev *g_dev;
static ops_ctx *g_cpu;

static hadm_model *open_gpu(const char *path)
{
    hadm_open_options o = {.device = HADM_DEVICE_CUDA};
    hadm_model *m = NULL;
    hadm_error err = {0};
    CHECK(hadm_model_open(path, &o, &m, &err) == HADM_OK, "open %s on cuda: %s", path, err.msg);
    return m;
}

static void golden_case_on_gpu(const golden_case *c)
{
    char path[1400];
    snprintf(path, sizeof path, "%s/model.safetensors", c->dir);
    hadm_model *mc = golden_open_model(c), *mg = open_gpu(path);
    hadm_image img = {0};
    hadm_error err = {0};
    CHECK(hadm_image_load(c->image, NULL, &img, &err) == HADM_OK, "%s: %s", c->image, err.msg);
    if (!mc || !mg || !img.rgb)
        goto done;
    compare_features(mc, mg, g_cpu, &img, c->name);
    hadm_result *rc = NULL, *rg = NULL;
    CHECK(hadm_detect(mc, &img, NULL, &rc, &err) == HADM_OK, "cpu detect: %s", err.msg);
    CHECK(hadm_detect(mg, &img, NULL, &rg, &err) == HADM_OK, "gpu detect: %s", err.msg);
    int64_t nb = 0, ns = 0, nk = 0;
    double *gb = golden_tensor(c, "det.boxes", &nb, NULL), *gs = golden_tensor(c, "det.scores", &ns, NULL);
    double *gk = golden_tensor(c, "det.classes", &nk, NULL);
    if (rc && rg && gb && gs && gk && nb == 4 * ns && nk == ns) {
        float *b[3] = {malloc((size_t)(nb + 4) * 4), malloc((size_t)(4 * rc->count + 4) * 4), malloc((size_t)(4 * rg->count + 4) * 4)};
        float *s[3] = {malloc((size_t)(ns + 1) * 4), malloc((size_t)(rc->count + 1) * 4), malloc((size_t)(rg->count + 1) * 4)};
        int *k[3] = {malloc((size_t)(ns + 1) * 4), malloc((size_t)(rc->count + 1) * 4), malloc((size_t)(rg->count + 1) * 4)};
        for (int64_t i = 0; i < nb; i++)
            b[0][i] = (float)gb[i];
        for (int64_t i = 0; i < ns; i++)
            s[0][i] = (float)gs[i], k[0][i] = (int)gk[i];
        det_list golden = {(int)ns, b[0], s[0], k[0]}, cpu_l, gpu_l;
        result_list(rc, b[1], s[1], k[1], &cpu_l);
        result_list(rg, b[2], s[2], k[2], &gpu_l);
        char what[300];
        snprintf(what, sizeof what, "%s golden vs gpu", c->name);
        compare_dets(what, &golden, &gpu_l);
        snprintf(what, sizeof what, "%s cpu f32 vs gpu", c->name);
        compare_dets(what, &cpu_l, &gpu_l);
        for (int i = 0; i < 3; i++)
            free(b[i]), free(s[i]), free(k[i]);
    } else {
        CHECK(0, "%s: detections or golden det.* missing", c->name);
    }
    free(gb), free(gs), free(gk);
    hadm_result_free(rc);
    hadm_result_free(rg);
done:
    hadm_image_free(&img);
    hadm_model_close(mc);
    hadm_model_close(mg);
}

/* A model given by path (e.g. full-size synthetic): features only, on a
 * seeded noise image; its random-weight detections are reported, not judged. */
static void extra_model(const char *path)
{
    hadm_open_options o = {.device = HADM_DEVICE_CPU};
    hadm_model *mc = NULL, *mg = open_gpu(path);
    hadm_error err = {0};
    CHECK(hadm_model_open(path, &o, &mc, &err) == HADM_OK, "%s: %s", path, err.msg);
    hadm_image img = {1024, 768, malloc((size_t)1024 * 768 * 3)};
    uint32_t s = 12345;
    for (size_t i = 0; i < (size_t)1024 * 768 * 3; i++)
        s = s * 1664525u + 1013904223u, img.rgb[i] = (uint8_t)(s >> 24);
    if (mc && mg) {
        compare_features(mc, mg, g_cpu, &img, path);
        hadm_result *rc = NULL, *rg = NULL;
        if (hadm_detect(mc, &img, NULL, &rc, &err) == HADM_OK && hadm_detect(mg, &img, NULL, &rg, &err) == HADM_OK) {
            float *b[2] = {malloc((size_t)(4 * rc->count + 4) * 4), malloc((size_t)(4 * rg->count + 4) * 4)};
            float *sc[2] = {malloc((size_t)(rc->count + 1) * 4), malloc((size_t)(rg->count + 1) * 4)};
            int *k[2] = {malloc((size_t)(rc->count + 1) * 4), malloc((size_t)(rg->count + 1) * 4)};
            det_list lc, lg;
            result_list(rc, b[0], sc[0], k[0], &lc);
            result_list(rg, b[1], sc[1], k[1], &lg);
            double ds = 0;
            printf("%s: cpu %d / gpu %d detections; unmatched (report only) %d / %d\n", path, lc.n, lg.n,
                   unmatched(&lc, &lg, &ds), unmatched(&lg, &lc, &ds));
            for (int i = 0; i < 2; i++)
                free(b[i]), free(sc[i]), free(k[i]);
        }
        hadm_result_free(rc);
        hadm_result_free(rg);
    }
    free(img.rgb);
    hadm_model_close(mc);
    hadm_model_close(mg);
}

void test_models(cuda_dev *dev, ops_ctx *cpu);
void test_models(cuda_dev *dev, ops_ctx *cpu)
{
    g_dev = dev, g_cpu = cpu;
    if (!getenv("HADM_XCHECK_SKIP_GOLDEN"))
        golden_for_each(golden_case_on_gpu);
    const char *extra = getenv("HADM_XCHECK_MODEL");
    if (extra && *extra)
        extra_model(extra);
}
