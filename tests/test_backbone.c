/* Backbone and pyramid alone: the golden network input (input.tensor, stored
 * by the tiny cases) goes straight into vit_forward and fpn_forward, so a
 * mismatch here points at the ViT or the pyramid, not at decoding. Cases
 * without input.tensor rebuild it from input.resized_u8 (spec 1.3-1.5). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "golden.h"
#include "testutil.h"

typedef struct {
    const golden_case *gc;
    int compared;
} check_ctx;

/* Compares a traced tensor with the golden one of the same name, if stored. */
static void on_tensor(void *user, const char *name, trace_layout layout, const void *data, int is_int,
                      int ndim, const int64_t *shape)
{
    check_ctx *cc = user;
    int64_t n = 0;
    double *g = golden_tensor(cc->gc, name, &n, NULL);
    if (!g || is_int)
        return free(g);
    int64_t numel = 1;
    for (int i = 0; i < ndim; i++)
        numel *= shape[i];
    CHECK(numel == n, "%s: %s has %lld values, golden %lld", cc->gc->name, name, (long long)numel, (long long)n);
    const float *v = data;
    double num = 0, den = 0;
    for (int64_t i = 0; numel == n && i < n; i++) {
        int64_t src = i;
        if (layout == TRACE_NHWC_OF_NCHW) { /* golden index i is (c, y, x) */
            int64_t C = shape[1], HW = shape[2] * shape[3], c = i / HW % C, p = i % HW;
            src = (i / (C * HW)) * C * HW + p * C + c;
        }
        double d = v[src] - g[i];
        num += d * d, den += g[i] * g[i];
    }
    double rel = sqrt(num / (den > 0 ? den : 1));
    printf("  %-28s rel_l2 %.3e\n", name, rel);
    CHECK(rel <= 1e-4, "%s: %s rel L2 %.3e > 1e-4", cc->gc->name, name, rel);
    cc->compared++;
    free(g);
}

static float *network_input(const golden_case *gc, const hadm_model *m)
{
    int S = m->cfg.square_pad;
    int64_t n = 0;
    double *t = golden_tensor(gc, "input.tensor", &n, NULL);
    float *chw = calloc((size_t)3 * S * S, sizeof *chw);
    if (t && n == (int64_t)3 * S * S) {
        for (int64_t i = 0; i < n; i++)
            chw[i] = (float)t[i];
    } else {
        const st_tensor *u8 = st_find(gc->expected, "input.resized_u8");
        CHECK(u8 && u8->ndim == 3, "%s: neither input.tensor nor input.resized_u8", gc->name);
        if (u8 && u8->ndim == 3) {
            hadm_image img = {(int)u8->shape[1], (int)u8->shape[0], (uint8_t *)u8->data};
            preprocess_normalize_pad(&m->cfg, &img, HADM_RGB, chw);
        }
    }
    free(t);
    return chw;
}

static void run_case(const golden_case *gc)
{
    hadm_model *m = golden_open_model(gc);
    hadm_error err = {0};
    if (!m)
        return;
    printf("case %s\n", gc->name);
    const hadm_config *cfg = &m->cfg;
    int G = cfg->img_size / cfg->patch;
    float *chw = network_input(gc, m), *tokens = malloc((size_t)G * G * cfg->embed_dim * sizeof(float));
    ops_ctx *c = NULL;
    fpn_maps maps;
    check_ctx cc = {gc, 0};
    engine_trace tr = {on_tensor, &cc};
    CHECK(model_ctx_acquire(m, &c, &err) == HADM_OK && fpn_alloc(cfg, &maps, &err) == HADM_OK, "%s", err.msg);
    CHECK(vit_forward(m, c, chw, tokens, &tr, &err) == HADM_OK, "%s: vit: %s", gc->name, err.msg);
    CHECK(fpn_forward(m, c, tokens, &maps, &tr, &err) == HADM_OK, "%s: fpn: %s", gc->name, err.msg);
    CHECK(cc.compared >= 3, "%s: only %d tensors compared", gc->name, cc.compared);
    fpn_free(&maps);
    model_ctx_release(m, c);
    free(chw);
    free(tokens);
    hadm_model_close(m);
}

int main(void)
{
    golden_for_each(run_case);
    return test_finish();
}
