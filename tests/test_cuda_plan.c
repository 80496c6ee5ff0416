/* The host-side logic of the CUDA backend, which runs on every build:
 * --device / --gpu-memory-fraction parsing, the activation-arena layout the
 * device forward carves its buffers from, the weight and memory plan and its
 * "does it fit" check, the FLOP count behind the benchmark's ratio, and the
 * error a CUDA request gets from a build or machine that cannot serve it. */
#include <string.h>

#include "engine/cuda_hooks.h"
#include "engine/device_plan.h"
#include "engine/weights.h"
#include "testutil.h"

static void test_device_parse(void)
{
    static const struct { const char *s; int ok; hadm_device_kind kind; int index; } cases[] = {
        {"cpu", 1, HADM_DEVICE_CPU, 0},   {"cuda", 1, HADM_DEVICE_CUDA, 0}, {"cuda:0", 1, HADM_DEVICE_CUDA, 0},
        {"cuda:7", 1, HADM_DEVICE_CUDA, 7}, {"cuda:63", 1, HADM_DEVICE_CUDA, 63}, {"cuda:64", 0, 0, 0},
        {"cuda:-1", 0, 0, 0}, {"cuda:", 0, 0, 0}, {"cuda:x", 0, 0, 0}, {"cuda:1x", 0, 0, 0},
        {"cuda: 1", 0, 0, 0}, {"cuda:+1", 0, 0, 0}, {"gpu", 0, 0, 0}, {"CPU", 0, 0, 0}, {"cudax", 0, 0, 0},
        {"", 0, 0, 0}, {"cuda:99999999999999999999", 0, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        hadm_device_kind kind = (hadm_device_kind)-1;
        int index = -1;
        hadm_error err = {0};
        hadm_status s = device_parse(cases[i].s, &kind, &index, &err);
        if (cases[i].ok)
            CHECK(s == HADM_OK && kind == cases[i].kind && index == cases[i].index, "'%s' -> %d kind %d index %d",
                  cases[i].s, (int)s, (int)kind, index);
        else
            CHECK(s == HADM_ERR_ARG && strstr(err.msg, "cpu or cuda"), "'%s' accepted (%s)", cases[i].s, err.msg);
    }
    hadm_device_kind kind;
    int index;
    CHECK(device_parse(NULL, &kind, &index, NULL) == HADM_ERR_ARG, "NULL accepted");
}

static void test_fraction_parse(void)
{
    static const struct { const char *s; int ok; float v; } cases[] = {
        {"0.5", 1, 0.5f}, {"1", 1, 1.0f}, {"1.0", 1, 1.0f}, {"0.05", 1, 0.05f}, {"1e-1", 1, 0.1f},
        {"0", 0, 0}, {"-0.1", 0, 0}, {"1.01", 0, 0}, {"abc", 0, 0}, {"nan", 0, 0}, {"inf", 0, 0},
        {"0.5x", 0, 0}, {"", 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        float v = -1;
        hadm_error err = {0};
        hadm_status s = device_parse_fraction(cases[i].s, &v, &err);
        if (cases[i].ok)
            CHECK(s == HADM_OK && v == cases[i].v, "'%s' -> %d %g", cases[i].s, (int)s, (double)v);
        else
            CHECK(s == HADM_ERR_ARG && strstr(err.msg, "(0, 1]"), "'%s' accepted (%s)", cases[i].s, err.msg);
    }
}

/* Every buffer 256-aligned, in order, disjoint, inside the total. */
static void check_layout(const cuda_arena *a, const char *what)
{
    size_t end = 0;
    for (int b = 0; b < AR_COUNT; b++) {
        CHECK(a->off[b] % 256 == 0, "%s: buffer %d at %zu", what, b, a->off[b]);
        CHECK(a->off[b] >= end, "%s: buffer %d overlaps the previous one", what, b);
        CHECK(a->size[b] > 0, "%s: buffer %d is empty", what, b);
        end = a->off[b] + a->size[b];
    }
    CHECK(end <= a->total && a->total - end < 256, "%s: total %zu, last end %zu", what, a->total, end);
}

static void test_layout_full(char variant, int K)
{
    hadm_config c;
    hadm_error err = {0};
    CHECK(config_default(&c, variant, 0, &err) == HADM_OK, "%s", err.msg);
    cuda_arena a;
    cuda_arena_layout(&c, 8, 0, &a);
    check_layout(&a, "full");
    const cuda_dims *d = &a.d;
    /* spec PIPELINE.md: 64x64 tokens, p2..p6 = 256..16, 261,888 anchors, 4,768 RPN candidates */
    CHECK(d->G == 64 && d->T == 4096 && d->rows == 8 * 4096, "grid %d tokens %d rows %d", d->G, d->T, d->rows);
    CHECK(d->side[0] == 256 && d->side[1] == 128 && d->side[2] == 64 && d->side[3] == 32 && d->side[4] == 16,
          "pyramid sides %d %d %d %d %d", d->side[0], d->side[1], d->side[2], d->side[3], d->side[4]);
    CHECK(d->n_anchor_pos * d->A == 261888, "anchors %lld", (long long)(d->n_anchor_pos * d->A));
    CHECK(d->NC == 4768, "candidates %d", d->NC);
    CHECK(d->NQ == (1000 * K > 4768 ? 1000 * K : 4768) && d->K1 == K + 1, "NQ %d K1 %d", d->NQ, d->K1);
    CHECK(d->NR % 4 == 0 && d->NR >= 5 * d->A && d->NP % 4 == 0 && d->NP >= K + 5, "NR %d NP %d", d->NR, d->NP);
    CHECK(a.size[AR_X] == (size_t)8 * 4096 * 1024 * 4, "residual %zu", a.size[AR_X]);
    CHECK(a.size[AR_HA] == (size_t)8 * 4096 * 2730 * 4, "mlp hidden %zu", a.size[AR_HA]);
    CHECK(a.size[AR_ABF] >= (size_t)8 * 4096 * 2730 * 2, "bf16 operand %zu", a.size[AR_ABF]);
    CHECK(a.size[AR_MAP0] == (size_t)256 * 256 * 256 * 4, "p2 %zu", a.size[AR_MAP0]);
    CHECK(a.size[AR_COLS] >= (size_t)256 * 256 * 9 * 256 * 2, "p2 im2col %zu", a.size[AR_COLS]);
    CHECK(a.size[AR_COLS] >= (size_t)1000 * 49 * 9 * 256 * 2, "box head im2col %zu", a.size[AR_COLS]);
    CHECK(a.size[AR_NMS_MASK] == (size_t)d->NQ * ((d->NQ + 63) / 64) * 8, "mask %zu", a.size[AR_NMS_MASK]);
    CHECK(a.result_stride >= 16 + 100 * 6 * 4 && a.size[AR_RESULT] == 8 * a.result_stride, "result %zu",
          a.result_stride);
    /* a smaller batch needs less: the layout for the maximum serves every batch */
    cuda_arena one;
    cuda_arena_layout(&c, 1, 0, &one);
    CHECK(one.total < a.total && one.size[AR_MAP0] == a.size[AR_MAP0], "batch 1 %zu vs 8 %zu", one.total, a.total);
    /* a measured sort scratch replaces the estimate */
    cuda_arena t;
    cuda_arena_layout(&c, 8, 12345, &t);
    CHECK(t.size[AR_SORT_TEMP] == 12345, "sort temp %zu", t.size[AR_SORT_TEMP]);
    CHECK(cuda_sort_temp_estimate(1000000) >= 1000000 * 16, "sort estimate too small");
    config_free(&c);
}

static void test_layout_tiny(void)
{
    hadm_config c;
    hadm_error err = {0};
    CHECK(config_default(&c, 'l', 1, &err) == HADM_OK, "%s", err.msg);
    cuda_arena a;
    cuda_arena_layout(&c, 3, 0, &a);
    check_layout(&a, "tiny");
    /* tiny: 256 px, patch 16 -> 16x16 grid, window 4; p2 = 64x64 ... p6 = 4x4 */
    CHECK(a.d.G == 16 && a.d.nw == 4 && a.d.side[0] == 64 && a.d.side[4] == 4 && a.d.rows == 3 * 256, "tiny dims G %d nw %d p6 %d",
          a.d.G, a.d.nw, a.d.side[4]);
    config_free(&c);
}

static void test_plan(void)
{
    hadm_config c;
    hadm_error err = {0};
    CHECK(config_default(&c, 'l', 0, &err) == HADM_OK, "%s", err.msg);
    int64_t params = weights_param_count(&c);
    size_t wb = cuda_weight_bytes(&c);
    /* bf16 matrices, f32 vectors and tables: a bit over 2 bytes per parameter */
    CHECK(wb >= (size_t)params * 2 && wb < (size_t)params * 2 + ((size_t)64 << 20), "weights %zu for %lld params",
          wb, (long long)params);
    cuda_plan p;
    cuda_plan_model(&c, 8, 2, &p);
    CHECK(p.total == p.weights + 2 * (p.arena + p.workspace) && p.weights == wb, "plan sum");
    const size_t GiB = (size_t)1 << 30, h200 = 141 * GiB;
    printf("full-size HADM-L on the GPU: weights %.2f GiB, activations %.2f GiB per context (batch 8), %d contexts, "
           "total %.2f GiB\n", (double)p.weights / GiB, (double)p.arena / GiB, p.contexts, (double)p.total / GiB);
    CHECK(p.total > 2 * GiB && p.total < 16 * GiB, "full-size plan %.2f GiB", (double)p.total / GiB);
    CHECK(cuda_plan_fit(&p, 0, h200, h200, 0.95f, "HADM-L", &err) == HADM_OK, "H200: %s", err.msg);
    /* both models fit in a fraction that holds two plans, the third does not */
    float frac = (float)(2.5 * (double)p.total / (double)h200);
    CHECK(cuda_plan_fit(&p, p.total, h200, h200, frac, "HADM-G", &err) == HADM_OK, "second model: %s", err.msg);
    CHECK(cuda_plan_fit(&p, 2 * p.total, h200, h200, frac, "third", &err) == HADM_ERR_NOMEM &&
              strstr(err.msg, "third does not fit") && strstr(err.msg, "--gpu-memory-fraction") &&
              strstr(err.msg, "already loaded"),
          "third model: %s", err.msg);
    /* an 8 GiB card with the default fraction */
    hadm_status want = (double)p.total > 0.95 * 8 * (double)GiB ? HADM_ERR_NOMEM : HADM_OK;
    CHECK(cuda_plan_fit(&p, 0, 8 * GiB, 8 * GiB, 0.95f, "HADM-L", &err) == want, "8 GiB: %s", err.msg);
    /* within the fraction but not free right now */
    CHECK(cuda_plan_fit(&p, 0, h200, p.total / 2, 0.95f, "HADM-L", &err) == HADM_ERR_NOMEM && strstr(err.msg, "free"),
          "busy GPU: %s", err.msg);
    CHECK(cuda_plan_fit(&p, 0, h200, h200, 0.0f, "HADM-L", &err) == HADM_ERR_ARG, "fraction 0 accepted");
    config_free(&c);
}

/* spec PIPELINE.md "Where the time goes": about 4246 GFLOP per model per image. */
static void test_flops(void)
{
    hadm_config c;
    hadm_error err = {0};
    CHECK(config_default(&c, 'g', 0, &err) == HADM_OK, "%s", err.msg);
    double gf = cuda_forward_flops(&c, 1000) * 1e-9;
    printf("full-size forward: %.1f GFLOP per image with 1000 proposals\n", gf);
    CHECK(gf > 4246 * 0.97 && gf < 4246 * 1.05, "full forward %.1f GFLOP", gf);
    CHECK(cuda_forward_flops(&c, 0) < cuda_forward_flops(&c, 1000), "cascade FLOPs do not scale with R");
    config_free(&c);
}

/* A CUDA request never silently runs on the CPU. */
static void test_open_cuda(void)
{
    hadm_open_options opt = {.device = HADM_DEVICE_CUDA};
    hadm_model *m = NULL;
    hadm_error err = {0};
    hadm_status s = hadm_model_open_demo('l', 1, &opt, &m, &err);
    if (!cuda_backend_built()) {
        CHECK(s == HADM_ERR_UNSUPPORTED && m == NULL && strstr(err.msg, "rebuild with -DHADM_CUDA=ON"),
              "demo on cuda: %d %s", (int)s, err.msg);
        s = hadm_model_open("/nonexistent.safetensors", &opt, &m, &err);
        CHECK(s == HADM_ERR_UNSUPPORTED && strstr(err.msg, "no CUDA backend"), "open on cuda: %s", err.msg);
    } else if (s != HADM_OK) {
        /* a CUDA build on a machine without a GPU */
        CHECK(m == NULL && (s == HADM_ERR_UNSUPPORTED || s == HADM_ERR_ARG) && strstr(err.msg, "CUDA"), "%d %s",
              (int)s, err.msg);
    }
    hadm_model_close(m);
}

int main(void)
{
    test_device_parse();
    test_fraction_parse();
    test_layout_full('l', 6);
    test_layout_full('g', 12);
    test_layout_tiny();
    test_plan();
    test_flops();
    test_open_cuda();
    return test_finish();
}
