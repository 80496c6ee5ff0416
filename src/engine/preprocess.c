/* Test-time preprocessing, spec/MODEL.md 1.2-1.5: the ResizeShortestEdge
 * output size, PIL's antialiased BILINEAR resize (bit-exact with Pillow's
 * Resample.c: 22-bit fixed point, horizontal pass then vertical, uint8 in
 * between), normalisation and zero padding into a square CHW tensor. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "util/err.h"

#define PRECISION_BITS 22   /* Pillow: 32 - 8 - 2 */

hadm_status preprocess_size(const hadm_config *cfg, int w, int h, int *new_w, int *new_h,
                            hadm_error *err)
{
    if (w <= 0 || h <= 0)
        return hadm_fail(err, HADM_ERR_ARG, "image size %dx%d is empty", w, h);
    if (cfg->resize_short <= 0 || cfg->resize_max <= 0)
        return hadm_fail(err, HADM_ERR_ARG, "resize sizes must be positive");
    /* detectron2 ResizeShortestEdge.get_output_shape, in double, step by step. */
    double size = cfg->resize_short;
    double scale = size / (h < w ? h : w);
    double nh, nw;
    if (h < w) {
        nh = size;
        nw = scale * w;
    } else {
        nh = scale * h;
        nw = size;
    }
    double longest = nh > nw ? nh : nw;
    if (longest > cfg->resize_max) {
        double s2 = cfg->resize_max / longest;
        nh = nh * s2;
        nw = nw * s2;
    }
    int ow = (int)(nw + 0.5), oh = (int)(nh + 0.5);
    if (ow <= 0 || oh <= 0)
        return hadm_fail(err, HADM_ERR_IMAGE,
                         "image %dx%d is too thin: it would be resized to %dx%d", w, h, ow, oh);
    *new_w = ow;
    *new_h = oh;
    return HADM_OK;
}

/* Per-axis filter taps: output o reads in[bounds[2o] .. + bounds[2o+1]) with
 * fixed-point weights kk[o*ksize ..]. */
typedef struct {
    int ksize;
    int *bounds;
    int32_t *kk;
} axis_coeffs;

static double bilinear_filter(double x)
{
    if (x < 0.0)
        x = -x;
    return x < 1.0 ? 1.0 - x : 0.0;
}

static void coeffs_free(axis_coeffs *c)
{
    free(c->bounds);
    free(c->kk);
    c->bounds = NULL;
    c->kk = NULL;
}

/* Pillow precompute_coeffs + normalize_coeffs_8bpc, same operations in the
 * same order (note: multiplication by ss = 1/filterscale). */
static hadm_status coeffs_compute(int in_size, int out_size, axis_coeffs *c, hadm_error *err)
{
    double scale = (double)in_size / out_size;
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double support = 1.0 * filterscale;
    c->ksize = (int)ceil(support) * 2 + 1;
    c->bounds = malloc((size_t)out_size * 2 * sizeof *c->bounds);
    c->kk = calloc((size_t)out_size * (size_t)c->ksize, sizeof *c->kk);
    double *w = malloc((size_t)c->ksize * sizeof *w);
    if (!c->bounds || !c->kk || !w) {
        free(w);
        coeffs_free(c);
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory for resize coefficients");
    }
    double ss = 1.0 / filterscale;
    for (int o = 0; o < out_size; o++) {
        double center = (o + 0.5) * scale;
        int xmin = (int)(center - support + 0.5);
        if (xmin < 0)
            xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > in_size)
            xmax = in_size;
        int n = xmax - xmin;
        if (n > c->ksize)
            n = c->ksize;   /* cannot happen; keeps writes in bounds */
        double ww = 0.0;
        for (int t = 0; t < n; t++) {
            w[t] = bilinear_filter((t + xmin - center + 0.5) * ss);
            ww += w[t];
        }
        int32_t *k = c->kk + (size_t)o * c->ksize;
        for (int t = 0; t < n; t++) {
            double v = ww != 0.0 ? w[t] / ww : w[t];
            k[t] = v < 0 ? (int32_t)(-0.5 + v * (1 << PRECISION_BITS))
                         : (int32_t)(0.5 + v * (1 << PRECISION_BITS));
        }
        c->bounds[2 * o] = xmin;
        c->bounds[2 * o + 1] = n < 0 ? 0 : n;
    }
    free(w);
    return HADM_OK;
}

static inline uint8_t clip8(int32_t v)
{
    v >>= PRECISION_BITS;
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

/* One row of the horizontal pass, plain. */
static void row_horizontal(const uint8_t *in, const axis_coeffs *c, uint8_t *out, int dw)
{
    for (int x = 0; x < dw; x++) {
        const int32_t *k = c->kk + (size_t)x * c->ksize;
        const uint8_t *p = in + (size_t)c->bounds[2 * x] * 3;
        int n = c->bounds[2 * x + 1];
        int32_t s0 = 1 << (PRECISION_BITS - 1), s1 = s0, s2 = s0;
        for (int t = 0; t < n; t++, p += 3) {
            s0 += p[0] * k[t];
            s1 += p[1] * k[t];
            s2 += p[2] * k[t];
        }
        out[3 * x] = clip8(s0);
        out[3 * x + 1] = clip8(s1);
        out[3 * x + 2] = clip8(s2);
    }
}

/* HROWS rows at once: the block is first interleaved column-major
 * (blk[x][row][channel]) so that each filter tap is one contiguous run of
 * HROWS*3 = 24 samples, summed with AVX2 where the CPU has it (checked at
 * run time, so any build works anywhere). Same products, same order of
 * additions as the plain version: bit-identical. */
#define HROWS 8
#define HLANES (HROWS * 3)

static void taps_plain(const uint8_t *p, const int32_t *k, int n, uint8_t *out)
{
    int32_t acc[HLANES];
    for (int i = 0; i < HLANES; i++)
        acc[i] = 1 << (PRECISION_BITS - 1);
    for (int t = 0; t < n; t++, p += HLANES)
        for (int i = 0; i < HLANES; i++)
            acc[i] += p[i] * k[t];
    for (int i = 0; i < HLANES; i++)
        out[i] = clip8(acc[i]);
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define HAVE_TAPS_AVX2 1

__attribute__((target("avx2"))) static void taps_avx2(const uint8_t *p, const int32_t *k, int n,
                                                      uint8_t *out)
{
    __m256i a0 = _mm256_set1_epi32(1 << (PRECISION_BITS - 1)), a1 = a0, a2 = a0;
    for (int t = 0; t < n; t++, p += HLANES) {
        __m256i kt = _mm256_set1_epi32(k[t]);
        __m256i v0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p));
        __m256i v1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(p + 8)));
        __m256i v2 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(p + 16)));
        a0 = _mm256_add_epi32(a0, _mm256_mullo_epi32(v0, kt));
        a1 = _mm256_add_epi32(a1, _mm256_mullo_epi32(v1, kt));
        a2 = _mm256_add_epi32(a2, _mm256_mullo_epi32(v2, kt));
    }
    /* clip8: arithmetic shift, then the saturating packs clamp to 0..255 */
    a0 = _mm256_srai_epi32(a0, PRECISION_BITS);
    a1 = _mm256_srai_epi32(a1, PRECISION_BITS);
    a2 = _mm256_srai_epi32(a2, PRECISION_BITS);
    __m256i w01 = _mm256_permute4x64_epi64(_mm256_packs_epi32(a0, a1), 0xd8);  /* 16 x i16 */
    __m128i w2 = _mm_packs_epi32(_mm256_castsi256_si128(a2), _mm256_extracti128_si256(a2, 1));
    __m128i b01 = _mm_packus_epi16(_mm256_castsi256_si128(w01), _mm256_extracti128_si256(w01, 1));
    __m128i b2 = _mm_packus_epi16(w2, w2);
    _mm_storeu_si128((__m128i *)out, b01);
    _mm_storel_epi64((__m128i *)(out + 16), b2);
}
#endif

typedef void (*taps_fn)(const uint8_t *p, const int32_t *k, int n, uint8_t *out);

static taps_fn pick_taps(void)
{
#ifdef HAVE_TAPS_AVX2
    if (__builtin_cpu_supports("avx2"))
        return taps_avx2;
#endif
    return taps_plain;
}

/* blk needs HLANES * sw + 1 bytes. Each pixel is copied as 4 bytes, rows
 * ascending within a column, so every stray 4th byte is overwritten by the
 * next copy; the last column is copied as 3 bytes so as not to read past
 * the end of the source. */
static void interleave_rows(const uint8_t *src, int sw, uint8_t *blk)
{
    size_t stride = (size_t)sw * 3;
    int x = 0;
    for (; x + 1 < sw; x++) {
        const uint8_t *in = src + (size_t)x * 3;
        uint8_t *out = blk + (size_t)x * HLANES;
        for (int r = 0; r < HROWS; r++) {
            uint32_t v;
            memcpy(&v, in + r * stride, 4);
            memcpy(out + r * 3, &v, 4);
        }
    }
    for (int r = 0; r < HROWS; r++)
        memcpy(blk + (size_t)x * HLANES + r * 3, src + r * stride + (size_t)x * 3, 3);
}

static void block_horizontal(const uint8_t *src, int sw, const axis_coeffs *c, taps_fn taps,
                             uint8_t *blk, uint8_t *dst, int dw)
{
    interleave_rows(src, sw, blk);
    size_t stride = (size_t)dw * 3;
    for (int x = 0; x < dw; x++) {
        uint8_t px[HLANES + 1];
        taps(blk + (size_t)c->bounds[2 * x] * HLANES, c->kk + (size_t)x * c->ksize,
             c->bounds[2 * x + 1], px);
        /* 4-byte stores: the stray byte lands on pixel x+1 of the same row,
         * written next; the last pixel of a row gets an exact 3-byte copy. */
        uint8_t *out = dst + (size_t)x * 3;
        if (x + 1 < dw)
            for (int r = 0; r < HROWS; r++)
                memcpy(out + r * stride, px + r * 3, 4);
        else
            for (int r = 0; r < HROWS; r++)
                memcpy(out + r * stride, px + r * 3, 3);
    }
}

/* Horizontal pass over `rows` rows of src (width sw) into dst (width dw). */
static void pass_horizontal(const uint8_t *src, int sw, int rows, const axis_coeffs *c,
                            uint8_t *dst, int dw)
{
    int nblocks = (rows + HROWS - 1) / HROWS;
    taps_fn taps = pick_taps();
#pragma omp parallel if (rows > 64)
    {
        uint8_t *blk = malloc((size_t)sw * HLANES + 1);
#pragma omp for schedule(static)
        for (int b = 0; b < nblocks; b++) {
            int y0 = b * HROWS;
            const uint8_t *in = src + (size_t)y0 * sw * 3;
            uint8_t *out = dst + (size_t)y0 * dw * 3;
            if (blk && y0 + HROWS <= rows) {
                block_horizontal(in, sw, c, taps, blk, out, dw);
                continue;
            }
            for (int y = y0; y < rows && y < y0 + HROWS; y++)   /* tail, or no memory */
                row_horizontal(src + (size_t)y * sw * 3, c, dst + (size_t)y * dw * 3, dw);
        }
        free(blk);
    }
}

/* Vertical pass: output row y sums whole input rows, which vectorises; the
 * input row index is offset by `first` (rows before it were not computed). */
static void pass_vertical(const uint8_t *src, int w, int first, const axis_coeffs *c,
                          uint8_t *dst, int dh)
{
    size_t n3 = (size_t)w * 3;
#pragma omp parallel if (dh > 64)
    {
        int32_t *acc = malloc(n3 * sizeof *acc);
#pragma omp for schedule(static)
        for (int y = 0; y < dh; y++) {
            uint8_t *out = dst + (size_t)y * n3;
            const int32_t *k = c->kk + (size_t)y * c->ksize;
            int y0 = c->bounds[2 * y] - first, n = c->bounds[2 * y + 1];
            if (!acc) {   /* out of memory in this thread: the slow way */
                for (size_t i = 0; i < n3; i++) {
                    int32_t s = 1 << (PRECISION_BITS - 1);
                    for (int t = 0; t < n; t++)
                        s += src[(size_t)(y0 + t) * n3 + i] * k[t];
                    out[i] = clip8(s);
                }
                continue;
            }
            for (size_t i = 0; i < n3; i++)
                acc[i] = 1 << (PRECISION_BITS - 1);
            for (int t = 0; t < n; t++) {
                const uint8_t *row = src + (size_t)(y0 + t) * n3;
                int32_t kt = k[t];
                for (size_t i = 0; i < n3; i++)
                    acc[i] += row[i] * kt;
            }
            for (size_t i = 0; i < n3; i++)
                out[i] = clip8(acc[i]);
        }
        free(acc);
    }
}

static hadm_status resize_passes(const hadm_image *src, int new_w, int new_h, uint8_t *dst,
                                 hadm_error *err)
{
    int need_h = new_w != src->width, need_v = new_h != src->height;
    axis_coeffs ch = {0}, cv = {0};
    hadm_status s = HADM_OK;
    if (need_h && (s = coeffs_compute(src->width, new_w, &ch, err)))
        return s;
    if (need_v && (s = coeffs_compute(src->height, new_h, &cv, err))) {
        coeffs_free(&ch);
        return s;
    }
    if (need_h && !need_v) {
        pass_horizontal(src->rgb, src->width, src->height, &ch, dst, new_w);
    } else if (!need_h) {
        pass_vertical(src->rgb, src->width, 0, &cv, dst, new_h);
    } else {
        /* Like Pillow, the horizontal pass only computes the rows the
         * vertical pass will read. */
        int first = cv.bounds[0];
        int last = cv.bounds[2 * (new_h - 1)] + cv.bounds[2 * (new_h - 1) + 1];
        uint8_t *mid = malloc((size_t)(last - first) * (size_t)new_w * 3);
        if (!mid) {
            s = hadm_fail(err, HADM_ERR_NOMEM, "out of memory resizing to %dx%d", new_w, new_h);
        } else {
            pass_horizontal(src->rgb + (size_t)first * src->width * 3, src->width, last - first,
                            &ch, mid, new_w);
            pass_vertical(mid, new_w, first, &cv, dst, new_h);
            free(mid);
        }
    }
    coeffs_free(&ch);
    coeffs_free(&cv);
    return s;
}

hadm_status preprocess_resize(const hadm_image *src, int new_w, int new_h, hadm_image *dst,
                              hadm_error *err)
{
    if (!dst)
        return hadm_fail(err, HADM_ERR_ARG, "no output image");
    memset(dst, 0, sizeof *dst);
    if (!src || !src->rgb || src->width <= 0 || src->height <= 0)
        return hadm_fail(err, HADM_ERR_ARG, "resize: empty source image");
    if (new_w <= 0 || new_h <= 0)
        return hadm_fail(err, HADM_ERR_ARG, "resize: target size %dx%d is empty", new_w, new_h);
    size_t bytes = (size_t)new_w * (size_t)new_h * 3;
    uint8_t *out = malloc(bytes);
    if (!out)
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory resizing to %dx%d", new_w, new_h);
    hadm_status s = HADM_OK;
    if (new_w == src->width && new_h == src->height)
        memcpy(out, src->rgb, bytes);   /* PIL: same size is a copy */
    else
        s = resize_passes(src, new_w, new_h, out, err);
    if (s) {
        free(out);
        return s;
    }
    dst->rgb = out;
    dst->width = new_w;
    dst->height = new_h;
    return HADM_OK;
}

void preprocess_normalize_pad(const hadm_config *cfg, const hadm_image *resized,
                              hadm_channel_order order, float *chw)
{
    size_t S = (size_t)cfg->square_pad;
    memset(chw, 0, 3 * S * S * sizeof *chw);
    size_t w = (size_t)resized->width < S ? (size_t)resized->width : S;
    size_t h = (size_t)resized->height < S ? (size_t)resized->height : S;
    for (int c = 0; c < 3; c++) {
        /* BGR (the demo's feeding): plane c holds colour 2-c, still normalised
         * with the statistics of index c (spec 1.4, pitfall P1). */
        int src_c = order == HADM_BGR ? 2 - c : c;
        float mean = cfg->pixel_mean[c], std = cfg->pixel_std[c];
        float *plane = chw + (size_t)c * S * S;
        for (size_t y = 0; y < h; y++) {
            const uint8_t *row = resized->rgb + y * (size_t)resized->width * 3 + src_c;
            float *out = plane + y * S;
            for (size_t x = 0; x < w; x++)
                out[x] = ((float)row[3 * x] - mean) / std;   /* subtract, then divide */
        }
    }
}
