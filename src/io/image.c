/* The public image API: format sniffing, size limits, EXIF orientation and
 * file loading. The per-format work is in image_{jpeg,png,webp}.c. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/image.h"
#include "util/err.h"

/* Files bigger than this are refused before reading them (a 100 MP PNG
 * with no compression at all is ~400 MB). */
#define MAX_FILE_BYTES ((int64_t)1 << 31)

typedef enum { FMT_NONE, FMT_JPEG, FMT_PNG, FMT_WEBP } image_format;

static image_format sniff(const uint8_t *b, size_t n)
{
    static const uint8_t png_magic[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (n >= 3 && b[0] == 0xff && b[1] == 0xd8 && b[2] == 0xff)
        return FMT_JPEG;
    if (n >= 8 && !memcmp(b, png_magic, 8))
        return FMT_PNG;
    if (n >= 12 && !memcmp(b, "RIFF", 4) && !memcmp(b + 8, "WEBP", 4))
        return FMT_WEBP;
    return FMT_NONE;
}

static hadm_status check_input(const void *bytes, size_t len, image_format *fmt, hadm_error *err)
{
    if (!bytes && len)
        return hadm_fail(err, HADM_ERR_ARG, "image bytes are NULL");
    if (!len)
        return hadm_fail(err, HADM_ERR_NOT_IMAGE, "not an image (empty input)");
    *fmt = sniff(bytes, len);
    if (*fmt == FMT_NONE)
        return hadm_fail(err, HADM_ERR_NOT_IMAGE, "not an image (expected JPEG, PNG or WebP)");
    return HADM_OK;
}

hadm_status image_check_size(const char *fmt, int64_t w, int64_t h, int64_t max_pixels,
                             hadm_error *err)
{
    if (w <= 0 || h <= 0)
        return hadm_fail(err, HADM_ERR_IMAGE, "%s image has an empty size %lldx%lld", fmt,
                         (long long)w, (long long)h);
    if (w > INT32_MAX / 4 || h > INT32_MAX / 4 || w * h > max_pixels)
        return hadm_fail(err, HADM_ERR_TOO_LARGE,
                         "%s image is %lldx%lld = %lld pixels, over the limit of %lld", fmt,
                         (long long)w, (long long)h, (long long)(w * h), (long long)max_pixels);
    return HADM_OK;
}

hadm_status image_alloc(hadm_image *img, int w, int h, hadm_error *err)
{
    img->rgb = calloc((size_t)w * (size_t)h, 3);
    if (!img->rgb)
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory for a %dx%d image", w, h);
    img->width = w;
    img->height = h;
    return HADM_OK;
}

/* ---- EXIF orientation ------------------------------------------------ */

static void swap_px(uint8_t *a, uint8_t *b)
{
    for (int c = 0; c < 3; c++) {
        uint8_t t = a[c];
        a[c] = b[c];
        b[c] = t;
    }
}

static void flip_left_right(hadm_image *img)
{
    size_t w = (size_t)img->width;
    for (int y = 0; y < img->height; y++) {
        uint8_t *row = img->rgb + (size_t)y * w * 3;
        for (size_t x = 0; x < w / 2; x++)
            swap_px(row + 3 * x, row + 3 * (w - 1 - x));
    }
}

static void flip_top_bottom(hadm_image *img)
{
    size_t stride = (size_t)img->width * 3;
    for (int y = 0; y < img->height / 2; y++) {
        uint8_t *a = img->rgb + (size_t)y * stride;
        uint8_t *b = img->rgb + (size_t)(img->height - 1 - y) * stride;
        for (size_t i = 0; i < stride; i++) {
            uint8_t t = a[i];
            a[i] = b[i];
            b[i] = t;
        }
    }
}

/* Orientations 5..8 swap the axes. Output pixel (x', y') of the H x W result
 * takes input pixel (sx, sy) with, for input size W x H:
 *   5: (y', x')   6: (y', H-1-x')   7: (W-1-y', H-1-x')   8: (W-1-y', x').
 * Done in 32x32 tiles so that both images are walked cache-friendly. */
static hadm_status transpose_like(hadm_image *img, int orientation, hadm_error *err)
{
    int W = img->width, H = img->height;
    uint8_t *out = malloc((size_t)W * (size_t)H * 3);
    if (!out)
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory rotating a %dx%d image", W, H);
    int flip_x = orientation == 6 || orientation == 7;  /* sy = H-1-x' */
    int flip_y = orientation == 7 || orientation == 8;  /* sx = W-1-y' */
    const int T = 32;
    for (int y0 = 0; y0 < W; y0 += T)
        for (int x0 = 0; x0 < H; x0 += T)
            for (int yo = y0; yo < W && yo < y0 + T; yo++) {
                int sx = flip_y ? W - 1 - yo : yo;
                for (int xo = x0; xo < H && xo < x0 + T; xo++) {
                    int sy = flip_x ? H - 1 - xo : xo;
                    const uint8_t *s = img->rgb + ((size_t)sy * W + sx) * 3;
                    uint8_t *d = out + ((size_t)yo * H + xo) * 3;
                    d[0] = s[0];
                    d[1] = s[1];
                    d[2] = s[2];
                }
            }
    free(img->rgb);
    img->rgb = out;
    img->width = H;
    img->height = W;
    return HADM_OK;
}

hadm_status image_orient(hadm_image *img, int orientation, hadm_error *err)
{
    switch (orientation) {
    case 2: flip_left_right(img); return HADM_OK;
    case 3: flip_left_right(img); flip_top_bottom(img); return HADM_OK;
    case 4: flip_top_bottom(img); return HADM_OK;
    case 5: case 6: case 7: case 8: return transpose_like(img, orientation, err);
    default: return HADM_OK;   /* 1, absent or unknown: PIL leaves the image as is */
    }
}

/* ---- public API ------------------------------------------------------ */

hadm_status hadm_image_probe(const void *bytes, size_t len, const char **format, int *width,
                             int *height, hadm_error *err)
{
    image_format fmt = FMT_NONE;
    hadm_status s = check_input(bytes, len, &fmt, err);
    if (s)
        return s;
    int w = 0, h = 0;
    const char *name = fmt == FMT_JPEG ? "jpeg" : fmt == FMT_PNG ? "png" : "webp";
    if (fmt == FMT_JPEG)
        s = image_jpeg_probe(bytes, len, &w, &h, err);
    else if (fmt == FMT_PNG)
        s = image_png_probe(bytes, len, &w, &h, err);
    else
        s = image_webp_probe(bytes, len, &w, &h, err);
    if (s)
        return s;
    if (format)
        *format = name;
    if (width)
        *width = w;
    if (height)
        *height = h;
    return HADM_OK;
}

hadm_status hadm_image_decode(const void *bytes, size_t len, const hadm_decode_options *opt,
                              hadm_image *out, hadm_error *err)
{
    if (!out)
        return hadm_fail(err, HADM_ERR_ARG, "no output image");
    memset(out, 0, sizeof *out);
    int64_t max_pixels = opt && opt->max_pixels ? opt->max_pixels : HADM_DEFAULT_MAX_PIXELS;
    if (max_pixels < 0)
        return hadm_fail(err, HADM_ERR_ARG, "max_pixels is negative");
    image_format fmt = FMT_NONE;
    hadm_status s = check_input(bytes, len, &fmt, err);
    if (s)
        return s;
    int orientation = 1;
    if (fmt == FMT_JPEG)
        s = image_jpeg_decode(bytes, len, max_pixels, opt && opt->allow_truncated, out, &orientation, err);
    else if (fmt == FMT_PNG)
        s = image_png_decode(bytes, len, max_pixels, out, &orientation, err);
    else
        s = image_webp_decode(bytes, len, max_pixels, out, &orientation, err);
    if (!s)
        s = image_orient(out, orientation, err);
    if (s)
        hadm_image_free(out);
    return s;
}

static hadm_status read_whole_file(const char *path, uint8_t **buf, size_t *len, hadm_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return hadm_fail(err, HADM_ERR_IO, "cannot open: %s", strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return hadm_fail(err, HADM_ERR_IO, "not a regular file");
    }
    if ((int64_t)st.st_size > MAX_FILE_BYTES) {
        fclose(f);
        return hadm_fail(err, HADM_ERR_TOO_LARGE, "file is %lld bytes, over the limit of %lld",
                         (long long)st.st_size, (long long)MAX_FILE_BYTES);
    }
    size_t n = (size_t)st.st_size;
    *buf = malloc(n ? n : 1);
    if (!*buf) {
        fclose(f);
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory reading %zu bytes", n);
    }
    size_t got = fread(*buf, 1, n, f);
    int bad = ferror(f);
    fclose(f);
    if (bad || got != n) {
        free(*buf);
        *buf = NULL;
        return hadm_fail(err, HADM_ERR_IO, "read error");
    }
    *len = n;
    return HADM_OK;
}

hadm_status hadm_image_load(const char *path, const hadm_decode_options *opt, hadm_image *out,
                            hadm_error *err)
{
    if (out)
        memset(out, 0, sizeof *out);
    if (!path || !out)
        return hadm_fail(err, HADM_ERR_ARG, "no path or no output image");
    uint8_t *buf = NULL;
    size_t len = 0;
    hadm_status s = read_whole_file(path, &buf, &len, err);
    if (!s)
        s = hadm_image_decode(buf, len, opt, out, err);
    free(buf);
    if (s)
        hadm_error_prefix(err, "%s", path);
    return s;
}

void hadm_image_free(hadm_image *img)
{
    if (!img)
        return;
    free(img->rgb);
    img->rgb = NULL;
    img->width = img->height = 0;
}
