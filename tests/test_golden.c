/* Golden parity: every case under $HADM_GOLDEN_DIR runs end to end through
 * the engine with a trace hook, and every tensor the case provides is
 * compared with ours (RGB run, and the demo's BGR run for demo_bgr.*).
 * A golden tensor without a comparison rule, or one the engine did not
 * produce, is a failure: nothing is skipped silently.
 *
 * Tolerances (issue 2 acceptance): resized image pixel-identical; input
 * tensor max abs error <= 1e-4; every other intermediate relative L2 error
 * <= 1e-4 (per-ROI tensors over rows whose float64 decision is not within
 * 1e-4 of flipping: roi.fragile_rows); proposals compared as a set; final
 * detections: same count, classes and order, boxes within 0.05 px, scores
 * within 1e-4. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "golden.h"
#include "testutil.h"

#define REL_TOL 1e-4
#define BOX_TOL 0.05
#define SCORE_TOL 1e-4

/* Our tensor subsampled [::2] on the axes where the golden one is halved. */
static double *subsample(const traced *ours, const st_tensor *g)
{
    if (g->ndim != 4 || ours->ndim != 4)
        return NULL;
    int64_t gs[4];
    for (int i = 0; i < 4; i++)
        gs[i] = g->shape[i];
    int64_t step[4];
    for (int i = 0; i < 4; i++) {
        step[i] = gs[i] == ours->shape[i] ? 1 : 2;
        if (step[i] == 2 && gs[i] != (ours->shape[i] + 1) / 2)
            return NULL;
    }
    double *out = malloc((size_t)(gs[0] * gs[1] * gs[2] * gs[3]) * sizeof *out);
    int64_t k = 0;
    for (int64_t a = 0; a < gs[0]; a++)
        for (int64_t b = 0; b < gs[1]; b++)
            for (int64_t c = 0; c < gs[2]; c++)
                for (int64_t d = 0; d < gs[3]; d++)
                    out[k++] = ours->data[((a * step[0] * ours->shape[1] + b * step[1]) * ours->shape[2] +
                                           c * step[2]) * ours->shape[3] + d * step[3]];
    return out;
}

typedef struct {
    const golden_case *gc;
    const trace_store *st;
    const char *prefix;       /* "" or "demo_bgr." */
    int *row_map;             /* golden proposal row -> our row, -1 unmatched */
    int R;
    const uint8_t *fragile;
} compare_ctx;

static double rel_l2(const double *a, const double *b, int64_t n, double *maxabs)
{
    double num = 0, den = 0;
    *maxabs = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = a[i] - b[i];
        num += d * d;
        den += b[i] * b[i];
        if (fabs(d) > *maxabs || isnan(d))
            *maxabs = isnan(d) ? INFINITY : fabs(d);
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}


static const traced *ours_for(const compare_ctx *cc, const char *base)
{
    char full[96];
    snprintf(full, sizeof full, "%s", base);
    const traced *t = trace_store_find(cc->st, full);
    CHECK(t != NULL, "%s: engine produced no tensor '%s'", cc->gc->name, full);
    return t;
}

static void compare_dense(const compare_ctx *cc, const char *gname, const char *base)
{
    const st_tensor *info;
    int64_t n = 0;
    double *g = golden_tensor(cc->gc, gname, &n, &info);
    const traced *t = ours_for(cc, base);
    if (!g || !t) {
        free(g);
        return;
    }
    double *ours = t->data, *sub = NULL;
    if (strstr(gname, ".sub2"))
        ours = sub = subsample(t, info);
    CHECK(ours && n == (sub ? n : t->numel), "%s: %s: %lld golden values, %lld ours", cc->gc->name,
          gname, (long long)n, (long long)t->numel);
    if (ours && n == (sub ? n : t->numel)) {
        double maxabs, rel = rel_l2(ours, g, n, &maxabs);
        int is_input = !strcmp(base, "input.tensor");
        printf("  %-40s rel_l2 %.3e  max_abs %.3e\n", gname, rel, maxabs);
        if (is_input)
            CHECK(maxabs <= 1e-4, "%s: %s max abs error %.3e > 1e-4", cc->gc->name, gname, maxabs);
        else
            CHECK(rel <= REL_TOL, "%s: %s rel L2 %.3e > %.0e", cc->gc->name, gname, rel, REL_TOL);
    }
    free(sub);
    free(g);
}

/* Proposals as a set: each golden box must have one of ours within
 * 1e-3 px + 5e-6 |coordinate| (FORMAT.md section 4); fills cc->row_map. */
static void match_proposals(compare_ctx *cc, const char *gname)
{
    int64_t n = 0;
    double *g = golden_tensor(cc->gc, gname, &n, NULL);
    const traced *t = ours_for(cc, "rpn.proposals.boxes");
    if (!g || !t) {
        free(g);
        return;
    }
    int R = (int)(n / 4), ours = (int)(t->numel / 4), unmatched = 0;
    double worst = 0;
    CHECK(R == ours, "%s: %d proposals, golden %d", cc->gc->name, ours, R);
    free(cc->row_map);
    cc->row_map = malloc((size_t)(R ? R : 1) * sizeof(int));
    cc->R = R;
    for (int i = 0; i < R; i++) {
        int best = -1;
        double bestd = INFINITY;
        for (int dj = 0; dj < ours && bestd > 0; dj++) {
            /* search outward from the same index: order differs only locally */
            for (int sgn = -1; sgn <= 1; sgn += 2) {
                int j = i + sgn * dj;
                if (j < 0 || j >= ours)
                    continue;
                double d = 0;
                for (int k = 0; k < 4; k++)
                    d = fmax(d, fabs(t->data[j * 4 + k] - g[i * 4 + k]) / (1e-3 + 5e-6 * fabs(g[i * 4 + k])));
                if (d < bestd)
                    bestd = d, best = j;
            }
            if (bestd <= 1 && dj > 8)
                break;
        }
        cc->row_map[i] = bestd <= 1 ? best : -1;
        unmatched += bestd > 1;
        if (bestd <= 1)
            worst = fmax(worst, bestd);
    }
    printf("  %-40s %d/%d matched (worst %.2f of tolerance)\n", gname, R - unmatched, R, worst);
    CHECK(unmatched == 0, "%s: %d golden proposals have no match", cc->gc->name, unmatched);
    free(g);
}

/* Per-proposal-row tensor: rows mapped through row_map; rows flagged fragile
 * for stages <= stage are left out; first_n limits to the stored leading rows. */
static void compare_rows(const compare_ctx *cc, const char *gname, const char *base, int stage, int exact)
{
    int64_t n = 0;
    const st_tensor *info;
    double *g = golden_tensor(cc->gc, gname, &n, &info);
    const traced *t = ours_for(cc, base);
    if (!g || !t || !cc->row_map || info->ndim < 1) {
        CHECK(cc->row_map != NULL, "%s: %s compared before proposals", cc->gc->name, gname);
        free(g);
        return;
    }
    int64_t rows = info->shape[0], cols = rows ? n / rows : 0, our_rows = t->numel / (cols ? cols : 1);
    unsigned mask = stage < 0 ? 0 : (1u << (stage + 1)) - 1;
    double num = 0, den = 0, maxabs = 0;
    int used = 0, mismatched = 0;
    for (int64_t i = 0; i < rows && i < cc->R; i++) {
        int j = cc->row_map[i];
        if (j < 0 || j >= our_rows || (cc->fragile && (cc->fragile[i] & mask)))
            continue;
        used++;
        int bad = 0;
        for (int64_t k = 0; k < cols; k++) {
            double d = t->data[j * cols + k] - g[i * cols + k];
            num += d * d, den += g[i * cols + k] * g[i * cols + k];
            maxabs = fmax(maxabs, fabs(d));
            bad |= d != 0;
        }
        mismatched += bad;
    }
    if (exact) {
        printf("  %-40s %d rows, %d differ\n", gname, used, mismatched);
        CHECK(mismatched == 0, "%s: %s differs in %d rows", cc->gc->name, gname, mismatched);
    } else {
        double rel = den > 0 ? sqrt(num / den) : sqrt(num);
        printf("  %-40s rel_l2 %.3e  max_abs %.3e  (%d rows)\n", gname, rel, maxabs, used);
        CHECK(rel <= REL_TOL, "%s: %s rel L2 %.3e > %.0e", cc->gc->name, gname, rel, REL_TOL);
    }
    CHECK(used > 0 || rows == 0, "%s: %s: no comparable rows", cc->gc->name, gname);
    free(g);
}

/* Final detections: same count and order; boxes within BOX_TOL px, scores
 * within SCORE_TOL, classes exact. */
static void compare_dets(const compare_ctx *cc, const char *gname, const char *base)
{
    int64_t n = 0;
    double *g = golden_tensor(cc->gc, gname, &n, NULL);
    const traced *t = ours_for(cc, base);
    if (!g || !t) {
        free(g);
        return;
    }
    CHECK(n == t->numel, "%s: %s: %lld values, golden %lld", cc->gc->name, gname, (long long)t->numel,
          (long long)n);
    double maxabs = 0;
    for (int64_t i = 0; i < n && i < t->numel; i++)
        maxabs = fmax(maxabs, fabs(t->data[i] - g[i]));
    double tol = strstr(base, "classes") ? 0 : strstr(base, "scores") ? SCORE_TOL : BOX_TOL;
    printf("  %-40s %lld values, max_abs %.3e (tol %.0e)\n", gname, (long long)n, maxabs, tol);
    CHECK(n == t->numel && maxabs <= tol, "%s: %s max abs error %.3e > %.0e", cc->gc->name, gname,
          maxabs, tol);
    free(g);
}

static int starts(const char *s, const char *p) { return !strncmp(s, p, strlen(p)); }

static void compare_one(compare_ctx *cc, const char *gname, const char *base)
{
    int stage = -1;
    char field[64] = "";
    if (starts(base, "input.tensor") || starts(base, "vit.") || starts(base, "fpn.") || starts(base, "rpn.head."))
        compare_dense(cc, gname, base);
    else if (!strcmp(base, "rpn.proposals.boxes"))
        return; /* matched first, in compare_case */
    else if (!strcmp(base, "rpn.proposals.objectness_logits"))
        compare_rows(cc, gname, base, -1, 0);
    else if (sscanf(base, "roi.stage%d.%63s", &stage, field) == 2)
        compare_rows(cc, gname, base, stage, !strcmp(field, "pooler_level"));
    else if (!strcmp(base, "roi.scores_mean"))
        compare_rows(cc, gname, base, 30, 0);
    else if (starts(base, "det.") && strcmp(base, "det.resized.proposal_index"))
        compare_dets(cc, gname, base);
    else
        CHECK(0, "%s: no comparison rule for golden tensor '%s'", cc->gc->name, gname);
}

/* Golden name -> (run prefix, our base name). */
static void split_name(const char *gname, const char *prefix, char *base, size_t len)
{
    snprintf(base, len, "%s", gname + strlen(prefix));
    char *p;
    if ((p = strstr(base, ".f64")) && p[4] == 0)
        *p = 0;
    if ((p = strstr(base, ".sub2")) && p[5] == 0)
        *p = 0;
}

static int is_metadata(const char *gname)
{
    return !strcmp(gname, "roi.fragile_rows") || !strcmp(gname, "det.resized.proposal_index") ||
           starts(gname, "input.decoded_u8") || starts(gname, "input.resized_u8");
}

static void compare_run(const golden_case *gc, const trace_store *st, const char *prefix)
{
    compare_ctx cc = {gc, st, prefix, NULL, 0, NULL};
    const st_tensor *fr = st_find(gc->expected, "roi.fragile_rows");
    cc.fragile = fr && fr->dtype == ST_U8 ? fr->data : NULL;
    char key[96], base[96];
    snprintf(key, sizeof key, "%srpn.proposals.boxes", prefix);
    if (!st_find(gc->expected, key))
        snprintf(key, sizeof key, "%srpn.proposals.boxes.f64", prefix);
    if (st_find(gc->expected, key))
        match_proposals(&cc, key);
    for (int i = 0; i < st_count(gc->expected); i++) {
        const char *gname = st_at(gc->expected, i)->name;
        int bgr = starts(gname, "demo_bgr.");
        if (bgr != (*prefix != 0) || is_metadata(gname))
            continue;
        split_name(gname, prefix, base, sizeof base);
        if (!strcmp(base, "rpn.proposals.boxes"))
            continue;
        compare_one(&cc, gname, base);
    }
    free(cc.row_map);
}

/* input.resized_u8 (and decoded_u8 when stored) must be identical. */
static void compare_pixels(const golden_case *gc, const hadm_model *m)
{
    hadm_image img = {0}, rs = {0};
    hadm_error err = {0};
    CHECK(hadm_image_load(gc->image, NULL, &img, &err) == HADM_OK, "%s: %s", gc->name, err.msg);
    int nw = 0, nh = 0;
    if (img.rgb && preprocess_size(&m->cfg, img.width, img.height, &nw, &nh, &err) == HADM_OK &&
        preprocess_resize(&img, nw, nh, &rs, &err) == HADM_OK) {
        const char *names[2] = {"input.decoded_u8", "input.resized_u8"};
        const hadm_image *ims[2] = {&img, &rs};
        for (int k = 0; k < 2; k++) {
            const st_tensor *t = st_find(gc->expected, names[k]);
            if (!t)
                continue;
            int64_t n = (int64_t)ims[k]->width * ims[k]->height * 3, diff = 0;
            CHECK(t->numel == n, "%s: %s size differs", gc->name, names[k]);
            for (int64_t i = 0; t->numel == n && i < n; i++)
                diff += ((const uint8_t *)t->data)[i] != ims[k]->rgb[i];
            printf("  %-40s %lld of %lld values differ\n", names[k], (long long)diff, (long long)n);
            CHECK(diff == 0, "%s: %s has %lld differing values", gc->name, names[k], (long long)diff);
        }
    }
    CHECK(st_find(gc->expected, "input.resized_u8") != NULL, "%s: input.resized_u8 missing", gc->name);
    hadm_image_free(&rs);
    hadm_image_free(&img);
}

static void run_case(const golden_case *gc)
{
    printf("case %s (%s, %dx%d -> %dx%d)\n", gc->name, gc->variant, gc->orig_w, gc->orig_h,
           gc->resized_w, gc->resized_h);
    hadm_model *m = golden_open_model(gc);
    hadm_error err = {0};
    if (!m)
        return;
    CHECK(!strcmp(hadm_model_variant(m), gc->variant), "%s: variant %s", gc->name, hadm_model_variant(m));
    compare_pixels(gc, m);
    hadm_image img = {0};
    CHECK(hadm_image_load(gc->image, NULL, &img, &err) == HADM_OK, "%s: %s", gc->name, err.msg);
    for (int bgr = 0; bgr < 2 && img.rgb; bgr++) {
        trace_store *st = calloc(1, sizeof *st);
        engine_trace tr = {trace_store_on_tensor, st};
        hadm_detect_options opt = {.channel_order = bgr ? HADM_BGR : HADM_RGB};
        hadm_result *res = NULL;
        hadm_status s = engine_detect(m, &img, &opt, &tr, &res, &err);
        CHECK(s == HADM_OK, "%s: detect failed: %s", gc->name, err.msg);
        if (s == HADM_OK) {
            printf(" %s run: %d detections, %.3f s\n", bgr ? "BGR (demo)" : "RGB", res->count, res->timings.total);
            compare_run(gc, st, bgr ? "demo_bgr." : "");
        }
        hadm_result_free(res);
        trace_store_clear(st);
        free(st);
    }
    hadm_image_free(&img);
    hadm_model_close(m);
}

int main(void)
{
    golden_for_each(run_case);
    return test_finish();
}
