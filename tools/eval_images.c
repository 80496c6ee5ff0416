/* hadm-eval-images: a varied, reproducible image set for accuracy checks.
 *
 * One photograph seldom exercises a detector much: its reduced-precision
 * modes can agree with f32 on it and still drift on other sizes, aspect
 * ratios, colour statistics or plain shapes. This writes N JPEGs derived from
 * one source image (geometric and photometric variants) plus synthetic
 * scenes, all deterministic, so that tools/precision_eval.sh compares like
 * with like from run to run and machine to machine.
 *
 * usage: hadm-eval-images SRC_IMAGE OUTDIR [N]   (N defaults to 16) */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "hadm.h"
#include "io/image_encode.h"

#define JPEG_QUALITY 92
#define SCENE_SEED 0x48414430ULL /* fixed: the synthetic scenes never change */
#define SCENE_SHAPES 40

static int img_alloc(hadm_image *img, int w, int h)
{
    img->width = w;
    img->height = h;
    img->rgb = malloc((size_t)w * h * 3);
    return img->rgb ? 0 : -1;
}

static uint8_t clamp_u8(double v) { return v <= 0 ? 0 : v >= 255 ? 255 : (uint8_t)lrint(v); }

static uint8_t px(const hadm_image *img, int x, int y, int c)
{
    return img->rgb[((size_t)y * img->width + x) * 3 + c];
}

/* Bilinear resampling of the region (x0, y0, cw, ch) of src to w x h, with
 * pixel centres aligned so that the region's edges map onto the output's. */
static int resample(const hadm_image *src, double x0, double y0, double cw, double ch, int w,
                    int h, hadm_image *dst)
{
    if (img_alloc(dst, w, h))
        return -1;
    for (int y = 0; y < h; y++) {
        double sy = y0 + (y + 0.5) * ch / h - 0.5;
        sy = fmin(fmax(sy, 0), src->height - 1);
        int y1 = (int)sy, y2 = y1 + 1 < src->height ? y1 + 1 : y1;
        double fy = sy - y1;
        for (int x = 0; x < w; x++) {
            double sx = x0 + (x + 0.5) * cw / w - 0.5;
            sx = fmin(fmax(sx, 0), src->width - 1);
            int x1 = (int)sx, x2 = x1 + 1 < src->width ? x1 + 1 : x1;
            double fx = sx - x1;
            for (int c = 0; c < 3; c++) {
                double top = px(src, x1, y1, c) * (1 - fx) + px(src, x2, y1, c) * fx;
                double bot = px(src, x1, y2, c) * (1 - fx) + px(src, x2, y2, c) * fx;
                dst->rgb[((size_t)y * w + x) * 3 + c] = clamp_u8(top * (1 - fy) + bot * fy);
            }
        }
    }
    return 0;
}

/* One pass of a (2r+1)-tap box filter along x (dx = 1) or y (dx = 0), edges
 * clamped; two passes make the separable 2-D blur. */
static void box_pass(const hadm_image *src, hadm_image *dst, int r, int dx)
{
    int w = src->width, h = src->height;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++) {
                int sum = 0;
                for (int k = -r; k <= r; k++) {
                    int xx = dx ? x + k : x, yy = dx ? y : y + k;
                    xx = xx < 0 ? 0 : xx >= w ? w - 1 : xx;
                    yy = yy < 0 ? 0 : yy >= h ? h - 1 : yy;
                    sum += px(src, xx, yy, c);
                }
                dst->rgb[((size_t)y * w + x) * 3 + c] = (uint8_t)((sum + r) / (2 * r + 1));
            }
}

static int box_blur(const hadm_image *src, int r, hadm_image *dst)
{
    hadm_image tmp;
    if (img_alloc(&tmp, src->width, src->height))
        return -1;
    if (img_alloc(dst, src->width, src->height)) {
        hadm_image_free(&tmp);
        return -1;
    }
    box_pass(src, &tmp, r, 1);
    box_pass(&tmp, dst, r, 0);
    hadm_image_free(&tmp);
    return 0;
}

/* Per-pixel colour changes: gain and offset per channel after mixing each
 * pixel toward its luma by `desat` (0 = unchanged, 1 = grey). */
static int recolour(const hadm_image *src, double desat, double gain, double offset, hadm_image *dst)
{
    if (img_alloc(dst, src->width, src->height))
        return -1;
    size_t n = (size_t)src->width * src->height;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *p = src->rgb + 3 * i;
        double luma = 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2];
        for (int c = 0; c < 3; c++)
            dst->rgb[3 * i + c] = clamp_u8((p[c] + desat * (luma - p[c])) * gain + offset);
    }
    return 0;
}

static int mirror(const hadm_image *src, hadm_image *dst)
{
    int w = src->width, h = src->height;
    if (img_alloc(dst, w, h))
        return -1;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            memcpy(dst->rgb + ((size_t)y * w + x) * 3, src->rgb + ((size_t)y * w + (w - 1 - x)) * 3, 3);
    return 0;
}

/* Clockwise: the output is h wide and w high, so the aspect ratio flips. */
static int rotate90(const hadm_image *src, hadm_image *dst)
{
    int w = src->width, h = src->height;
    if (img_alloc(dst, h, w))
        return -1;
    for (int y = 0; y < w; y++)
        for (int x = 0; x < h; x++)
            memcpy(dst->rgb + ((size_t)y * h + x) * 3, src->rgb + ((size_t)(h - 1 - x) * w + y) * 3, 3);
    return 0;
}

/* Bilinear alone aliases when shrinking by more than 2x; a box blur of about
 * half the reduction first keeps the result photograph-like. */
static int downscale(const hadm_image *src, int w, int h, hadm_image *dst)
{
    int r = (int)(fmax((double)src->width / w, (double)src->height / h) / 2);
    if (r < 1)
        return resample(src, 0, 0, src->width, src->height, w, h, dst);
    hadm_image blurred;
    if (box_blur(src, r, &blurred))
        return -1;
    int rc = resample(&blurred, 0, 0, src->width, src->height, w, h, dst);
    hadm_image_free(&blurred);
    return rc;
}

/* xorshift64*: tiny, and the same sequence on every platform. */
static uint32_t rng_next(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return (uint32_t)((*s * 0x2545F4914F6CDD1DULL) >> 32);
}

static int rng_range(uint64_t *s, int lo, int hi) { return lo + (int)(rng_next(s) % (uint32_t)(hi - lo + 1)); }

/* Flat-coloured rectangles and ellipses on a flat background: edges and
 * colours unlike the photograph, at sizes chosen independently of it. */
static int synthetic(int index, hadm_image *dst)
{
    uint64_t s = SCENE_SEED + 0x9E3779B97F4A7C15ULL * (uint64_t)(index + 1);
    int w = rng_range(&s, 768, 1280), h = rng_range(&s, 768, 1280);
    if (img_alloc(dst, w, h))
        return -1;
    uint8_t bg[3] = {(uint8_t)rng_next(&s), (uint8_t)rng_next(&s), (uint8_t)rng_next(&s)};
    for (size_t i = 0; i < (size_t)w * h; i++)
        memcpy(dst->rgb + 3 * i, bg, 3);
    for (int k = 0; k < SCENE_SHAPES; k++) {
        int cx = rng_range(&s, 0, w - 1), cy = rng_range(&s, 0, h - 1);
        int rx = rng_range(&s, 8, w / 5), ry = rng_range(&s, 8, h / 5), ellipse = rng_next(&s) & 1;
        uint8_t col[3] = {(uint8_t)rng_next(&s), (uint8_t)rng_next(&s), (uint8_t)rng_next(&s)};
        for (int y = cy - ry < 0 ? 0 : cy - ry; y <= cy + ry && y < h; y++)
            for (int x = cx - rx < 0 ? 0 : cx - rx; x <= cx + rx && x < w; x++) {
                double u = (double)(x - cx) / rx, v = (double)(y - cy) / ry;
                if (!ellipse || u * u + v * v <= 1.0)
                    memcpy(dst->rgb + ((size_t)y * w + x) * 3, col, 3);
            }
    }
    return 0;
}

/* Image `index` of the set: the fixed variants first, then synthetic scenes. */
static int make_image(const hadm_image *src, int index, hadm_image *dst)
{
    int w = src->width, h = src->height;
    switch (index) {
    case 0: return resample(src, 0, 0, w, h, w, h, dst); /* the source, re-encoded */
    case 1: return mirror(src, dst);
    case 2: return resample(src, 0, 0, w / 2, h / 2, w / 2, h / 2, dst); /* top-left quarter */
    case 3: return resample(src, w / 4.0, h / 4.0, w / 2.0, h / 2.0, 900, 700, dst);
    case 4: return recolour(src, 0.8, 1.0, 0, dst);
    case 5: return recolour(src, 0, 1.25, 25, dst);
    case 6: return recolour(src, 0, 0.6, 0.4 * 128, dst); /* contrast 0.6 about mid-grey */
    case 7: return rotate90(src, dst);
    case 8: return downscale(src, 640, 480, dst);
    case 9: return box_blur(src, 3, dst);
    default: return synthetic(index - 10, dst);
    }
}

static int write_jpeg(const hadm_image *img, const char *path)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    hadm_error err = {0};
    if (image_encode(img, IMAGE_JPEG, JPEG_QUALITY, &buf, &len, &err)) {
        fprintf(stderr, "hadm-eval-images: %s: %s\n", path, err.msg);
        return -1;
    }
    FILE *f = fopen(path, "wb");
    int ok = f && fwrite(buf, 1, len, f) == len;
    if (f && fclose(f) != 0)
        ok = 0;
    free(buf);
    if (!ok)
        fprintf(stderr, "hadm-eval-images: cannot write %s: %s\n", path, strerror(errno));
    return ok ? 0 : -1;
}

int main(int argc, char **argv)
{
    char *end = NULL;
    long n = argc == 4 ? strtol(argv[3], &end, 10) : 16;
    if (argc < 3 || argc > 4 || (end && (*end || n < 1 || n > 99))) {
        fprintf(stderr, "usage: hadm-eval-images SRC_IMAGE OUTDIR [N]   (N: 1..99, default 16)\n");
        return 2;
    }
    hadm_image src;
    hadm_error err = {0};
    if (hadm_image_load(argv[1], NULL, &src, &err)) {
        fprintf(stderr, "hadm-eval-images: %s\n", err.msg);
        return 1;
    }
    if (mkdir(argv[2], 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "hadm-eval-images: cannot create %s: %s\n", argv[2], strerror(errno));
        hadm_image_free(&src);
        return 1;
    }
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        char path[4096];
        hadm_image img = {0};
        snprintf(path, sizeof path, "%s/img%02d.jpg", argv[2], i);
        if (make_image(&src, i, &img)) {
            fprintf(stderr, "hadm-eval-images: out of memory for image %d\n", i);
            rc = 1;
        } else if (write_jpeg(&img, path)) {
            rc = 1;
        }
        hadm_image_free(&img);
    }
    hadm_image_free(&src);
    return rc;
}
