/* Preprocessing (spec/MODEL.md 1.2-1.5): the resize size table, the
 * golden cases' resized image (pixel-identical with PIL) and network input
 * tensor (<= 1e-4), BGR plane order, and the optimised resize against a
 * direct transcription of Pillow's algorithm on random images. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/config.h"
#include "engine/engine.h"
#include "golden.h"
#include "testutil.h"
#include "util/timer.h"

static void test_size_table(void)
{
    /* W x H -> W x H, all from spec 1.2 / P3 (short = max = 1024) */
    static const int v[][4] = {
        {1024, 768, 1024, 768}, {4000, 3000, 1024, 768}, {3000, 4000, 768, 1024},
        {1920, 1080, 1024, 576}, {500, 333, 1024, 682},  {640, 427, 1024, 683},
        {3, 2, 1024, 683},       {1023, 1024, 1023, 1024}, {2048, 93, 1024, 46},
        {1, 1, 1024, 1024},      {2048, 1, 1024, 1},
    };
    hadm_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.resize_short = cfg.resize_max = 1024;
    hadm_error err = {0};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        int w = -1, h = -1;
        hadm_status s = preprocess_size(&cfg, v[i][0], v[i][1], &w, &h, &err);
        CHECK(s == HADM_OK && w == v[i][2] && h == v[i][3], "%dx%d -> %dx%d, expected %dx%d (%s)",
              v[i][0], v[i][1], w, h, v[i][2], v[i][3], err.msg);
    }
    int w, h;
    hadm_status s = preprocess_size(&cfg, 4096, 1, &w, &h, &err);
    CHECK(s == HADM_ERR_IMAGE, "4096x1 must be refused (side 0), got %d", s);
    CHECK(strstr(err.msg, "thin") != NULL, "error message: %s", err.msg);
    s = preprocess_size(&cfg, 1, 4096, &w, &h, &err);
    CHECK(s == HADM_ERR_IMAGE, "1x4096 must be refused, got %d", s);
    s = preprocess_size(&cfg, 0, 10, &w, &h, &err);
    CHECK(s != HADM_OK, "0x10 must be refused");
}

static int case_config(const golden_case *c, hadm_config *cfg)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/model.safetensors", c->dir);
    hadm_error err = {0};
    st_file *f = NULL;
    hadm_status s = st_open(path, &f, &err);
    if (!s)
        s = config_parse(cfg, st_meta(f, "hadm.config"), st_meta(f, "hadm.variant"),
                         st_meta(f, "hadm.classes"), &err);
    CHECK(s == HADM_OK, "%s: config: %s", c->name, err.msg);
    st_close(f);
    return s == HADM_OK;
}

static void compare_u8(const char *what, const uint8_t *ours, const uint8_t *ref, size_t n)
{
    size_t diff = 0;
    int maxd = 0;
    for (size_t i = 0; i < n; i++) {
        int d = abs((int)ours[i] - (int)ref[i]);
        diff += d != 0;
        maxd = d > maxd ? d : maxd;
    }
    printf("  %s: %zu of %zu values differ, max diff %d\n", what, diff, n, maxd);
    CHECK(diff == 0, "%s: %zu values differ (max %d)", what, diff, maxd);
}

static void check_input_tensor(const golden_case *c, const hadm_config *cfg,
                               const hadm_image *resized)
{
    size_t S = (size_t)cfg->square_pad;
    float *chw = malloc(3 * S * S * sizeof *chw), *bgr = malloc(3 * S * S * sizeof *bgr);
    preprocess_normalize_pad(cfg, resized, HADM_RGB, chw);
    preprocess_normalize_pad(cfg, resized, HADM_BGR, bgr);
    const st_tensor *t = st_find(c->expected, "input.tensor");
    if (t) {
        int ok = t->dtype == ST_F32 && t->numel == (int64_t)(3 * S * S);
        CHECK(ok, "%s: input.tensor is not F32 [1,3,%zu,%zu]", c->name, S, S);
        double maxe = 0;
        for (size_t i = 0; ok && i < 3 * S * S; i++) {
            float ref;
            memcpy(&ref, (const char *)t->data + i * 4, 4);
            double e = fabs((double)chw[i] - ref);
            maxe = e > maxe ? e : maxe;
        }
        printf("  input.tensor: max abs error %.3g\n", maxe);
        CHECK(ok && maxe <= 1e-4, "%s: input.tensor max abs error %g", c->name, maxe);
    }
    /* BGR: plane c = colour 2-c, normalised with statistics c; padding 0. */
    size_t bad = 0;
    for (size_t p = 0; p < 3; p++)
        for (size_t y = 0; y < S; y++)
            for (size_t x = 0; x < S; x++) {
                float want = 0.0f;
                if (y < (size_t)resized->height && x < (size_t)resized->width) {
                    uint8_t v = resized->rgb[(y * resized->width + x) * 3 + 2 - p];
                    want = ((float)v - cfg->pixel_mean[p]) / cfg->pixel_std[p];
                }
                bad += bgr[(p * S + y) * S + x] != want;
            }
    CHECK(bad == 0, "%s: %zu BGR input values wrong", c->name, bad);
    free(chw);
    free(bgr);
}

static void test_golden_case(const golden_case *c)
{
    printf("case %s (%s)\n", c->name, c->image);
    hadm_error err = {0};
    hadm_image img = {0};
    double t0 = hadm_now();
    hadm_status s = hadm_image_load(c->image, NULL, &img, &err);
    double t1 = hadm_now();
    CHECK(s == HADM_OK, "%s: decode: %s", c->name, err.msg);
    if (s)
        return;
    CHECK(img.width == c->orig_w && img.height == c->orig_h, "%s: decoded %dx%d, expected %dx%d",
          c->name, img.width, img.height, c->orig_w, c->orig_h);
    const st_tensor *dec = st_find(c->expected, "input.decoded_u8");
    if (dec) {
        CHECK(dec->numel == (int64_t)img.width * img.height * 3, "%s: decoded_u8 size", c->name);
        if (dec->numel == (int64_t)img.width * img.height * 3)
            compare_u8("input.decoded_u8", img.rgb, dec->data, (size_t)dec->numel);
    }
    hadm_config cfg;
    if (!case_config(c, &cfg)) {
        hadm_image_free(&img);
        return;
    }
    int nw = 0, nh = 0;
    s = preprocess_size(&cfg, img.width, img.height, &nw, &nh, &err);
    CHECK(s == HADM_OK && nw == c->resized_w && nh == c->resized_h,
          "%s: resized size %dx%d, expected %dx%d", c->name, nw, nh, c->resized_w, c->resized_h);
    hadm_image rs = {0};
    double t2 = hadm_now();
    s = s ? s : preprocess_resize(&img, nw, nh, &rs, &err);
    double t3 = hadm_now();
    CHECK(s == HADM_OK, "%s: resize: %s", c->name, err.msg);
    printf("  decode %dx%d: %.1f ms, resize to %dx%d: %.1f ms\n", img.width, img.height,
           (t1 - t0) * 1e3, nw, nh, (t3 - t2) * 1e3);
    const st_tensor *t = st_find(c->expected, "input.resized_u8");
    CHECK(t != NULL, "%s: expected.safetensors has no input.resized_u8", c->name);
    if (t && !s) {
        int shape_ok = t->dtype == ST_U8 && t->ndim == 3 && t->shape[0] == nh &&
                       t->shape[1] == nw && t->shape[2] == 3;
        CHECK(shape_ok, "%s: input.resized_u8 shape/dtype differs from %dx%dx3", c->name, nh, nw);
        if (shape_ok)
            compare_u8("input.resized_u8", rs.rgb, t->data, (size_t)t->numel);
    }
    if (!s)
        check_input_tensor(c, &cfg, &rs);
    hadm_image_free(&rs);
    hadm_image_free(&img);
    config_free(&cfg);
}

static void test_golden(void)
{
    static golden_case cases[32];
    int n = golden_cases(cases, 32);
    CHECK(n > 0, "no golden cases found in %s", test_golden_dir());
    for (int i = 0; i < n; i++) {
        test_golden_case(&cases[i]);
        golden_case_free(&cases[i]);
    }
}

/* ---- reference: Pillow's algorithm transcribed directly ---------------- */

static void ref_pass(const uint8_t *in, int in_size, int out_size, int lines, size_t step,
                     size_t line_step, size_t out_step, size_t out_line_step, uint8_t *out)
{
    double scale = (double)in_size / out_size, fs = scale < 1 ? 1 : scale, support = fs;
    for (int o = 0; o < out_size; o++) {
        double center = (o + 0.5) * scale, w[64], ww = 0;
        int xmin = (int)(center - support + 0.5), xmax = (int)(center + support + 0.5);
        xmin = xmin < 0 ? 0 : xmin;
        xmax = xmax > in_size ? in_size : xmax;
        for (int t = 0; t < xmax - xmin; t++) {
            double u = fabs((t + xmin - center + 0.5) * (1.0 / fs));
            ww += w[t] = u < 1 ? 1 - u : 0;
        }
        int k[64];
        for (int t = 0; t < xmax - xmin; t++)
            k[t] = (int)(0.5 + w[t] / ww * (1 << 22));
        for (int l = 0; l < lines; l++)
            for (int c = 0; c < 3; c++) {
                int s = 1 << 21;
                for (int t = 0; t < xmax - xmin; t++)
                    s += in[l * line_step + (size_t)(xmin + t) * step + c] * k[t];
                s >>= 22;
                out[l * out_line_step + (size_t)o * out_step + c] = (uint8_t)(s > 255 ? 255 : s);
            }
    }
}

static void ref_resize(const hadm_image *src, int nw, int nh, uint8_t *out)
{
    int W = src->width, H = src->height;
    uint8_t *mid = malloc((size_t)nw * H * 3);
    if (nw != W)
        ref_pass(src->rgb, W, nw, H, 3, (size_t)W * 3, 3, (size_t)nw * 3, mid);
    else
        memcpy(mid, src->rgb, (size_t)W * H * 3);
    if (nh != H)
        ref_pass(mid, H, nh, nw, (size_t)nw * 3, 3, (size_t)nw * 3, 3, out);
    else
        memcpy(out, mid, (size_t)nw * H * 3);
    free(mid);
}

static void test_random_resizes(void)
{
    static const int sizes[][4] = {
        {3, 2, 1024, 683}, {97, 61, 40, 25},  {61, 97, 200, 318}, {500, 333, 256, 170},
        {64, 64, 64, 17},  {64, 64, 17, 64},  {1, 1, 7, 5},       {300, 7, 299, 3},
    };
    srand(1234);
    hadm_error err = {0};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        hadm_image src = {sizes[i][0], sizes[i][1], NULL}, dst = {0};
        size_t n = (size_t)src.width * src.height * 3;
        src.rgb = malloc(n);
        for (size_t j = 0; j < n; j++)
            src.rgb[j] = (uint8_t)(rand() & 255);
        int nw = sizes[i][2], nh = sizes[i][3];
        hadm_status s = preprocess_resize(&src, nw, nh, &dst, &err);
        CHECK(s == HADM_OK && dst.width == nw && dst.height == nh, "resize %dx%d -> %dx%d: %s",
              src.width, src.height, nw, nh, err.msg);
        if (!s) {
            uint8_t *ref = malloc((size_t)nw * nh * 3);
            ref_resize(&src, nw, nh, ref);
            char what[64];
            snprintf(what, sizeof what, "random %dx%d -> %dx%d", src.width, src.height, nw, nh);
            compare_u8(what, dst.rgb, ref, (size_t)nw * nh * 3);
            free(ref);
        }
        hadm_image_free(&dst);
        /* same size: an exact copy in a new buffer */
        s = preprocess_resize(&src, src.width, src.height, &dst, &err);
        CHECK(s == HADM_OK && dst.rgb != src.rgb && !memcmp(dst.rgb, src.rgb, n),
              "same-size resize must copy");
        hadm_image_free(&dst);
        free(src.rgb);
    }
    /* a constant image stays constant at any scale (weights sum to one) */
    hadm_image flat = {5, 3, NULL}, out = {0};
    flat.rgb = malloc(45);
    memset(flat.rgb, 200, 45);
    CHECK(preprocess_resize(&flat, 1024, 614, &out, &err) == HADM_OK, "%s", err.msg);
    size_t off = 0;
    for (size_t j = 0; out.rgb && j < (size_t)1024 * 614 * 3; j++)
        off += out.rgb[j] != 200;
    CHECK(off == 0, "constant image changed in %zu values", off);
    hadm_image_free(&out);
    CHECK(preprocess_resize(&flat, 0, 5, &out, &err) == HADM_ERR_ARG, "0-wide target accepted");
    free(flat.rgb);
}

int main(void)
{
    test_size_table();
    test_golden();
    test_random_resizes();
    return test_finish();
}
