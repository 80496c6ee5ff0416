/* Image decoding (spec/MODEL.md 1.1): EXIF orientations 1-8 (JPEG APP1,
 * PNG eXIf, WebP EXIF), PNG colour types and depths with PIL's conversion
 * rules, CMYK/YCCK JPEG, WebP, limits, and bad input. Test images are made
 * here with the encoders of libjpeg, libspng and libwebp. The golden images
 * are decoded (and their decode/resize timed) in test_preprocess.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <spng.h>
#include <webp/encode.h>

#include "hadm.h"
#include "testutil.h"

typedef struct {
    uint8_t *data;
    size_t len;
} blob;

/* ---- encoders ---------------------------------------------------------- */

typedef struct {
    int comps;             /* 1, 3 or 4 */
    J_COLOR_SPACE in_cs, jpeg_cs;
    int quality, progressive, full_chroma;
    const uint8_t *app1;   /* written as an APP1 marker if set */
    size_t app1_len;
} jpeg_opts;

static blob jpeg_encode(const uint8_t *px, int w, int h, const jpeg_opts *o)
{
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr e;
    c.err = jpeg_std_error(&e);
    jpeg_create_compress(&c);
    unsigned char *buf = NULL;
    unsigned long len = 0;
    jpeg_mem_dest(&c, &buf, &len);
    c.image_width = (JDIMENSION)w;
    c.image_height = (JDIMENSION)h;
    c.input_components = o->comps;
    c.in_color_space = o->in_cs;
    jpeg_set_defaults(&c);
    if (o->jpeg_cs != JCS_UNKNOWN)
        jpeg_set_colorspace(&c, o->jpeg_cs);
    jpeg_set_quality(&c, o->quality, TRUE);
    if (o->full_chroma)
        for (int i = 0; i < c.num_components; i++)
            c.comp_info[i].h_samp_factor = c.comp_info[i].v_samp_factor = 1;
    if (o->progressive)
        jpeg_simple_progression(&c);
    jpeg_start_compress(&c, TRUE);
    if (o->app1)
        jpeg_write_marker(&c, JPEG_APP0 + 1, o->app1, (unsigned)o->app1_len);
    while (c.next_scanline < c.image_height) {
        JSAMPROW row = (JSAMPROW)(px + (size_t)c.next_scanline * w * o->comps);
        jpeg_write_scanlines(&c, &row, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    return (blob){buf, len};
}

static blob jpeg_rgb(const uint8_t *rgb, int w, int h, int quality, const uint8_t *app1,
                     size_t app1_len)
{
    jpeg_opts o = {3, JCS_RGB, JCS_UNKNOWN, quality, 0, 1, app1, app1_len};
    return jpeg_encode(rgb, w, h, &o);
}

static blob png_encode(int w, int h, int color, int depth, const void *raw, size_t raw_len,
                       const struct spng_plte *plte, const uint8_t *exif, size_t exif_len)
{
    spng_ctx *ctx = spng_ctx_new(SPNG_CTX_ENCODER);
    spng_set_option(ctx, SPNG_ENCODE_TO_BUFFER, 1);
    struct spng_ihdr ihdr = {(uint32_t)w, (uint32_t)h, (uint8_t)depth, (uint8_t)color, 0, 0, 0};
    spng_set_ihdr(ctx, &ihdr);
    if (plte)
        spng_set_plte(ctx, (struct spng_plte *)plte);
    if (exif) {
        struct spng_exif ex = {exif_len, (char *)exif};
        spng_set_exif(ctx, &ex);
    }
    int rc = spng_encode_image(ctx, raw, raw_len, SPNG_FMT_PNG, SPNG_ENCODE_FINALIZE);
    CHECK(rc == 0, "spng encode: %s", spng_strerror(rc));
    blob b = {0};
    int e = 0;
    b.data = rc ? NULL : spng_get_png_buffer(ctx, &b.len, &e);
    spng_ctx_free(ctx);
    return b;
}

/* "Exif\0\0" + a TIFF with one IFD0 entry: Orientation (274), SHORT, 1. */
static size_t make_exif(uint8_t *b, int orientation, int big_endian, int with_header)
{
    size_t n = 0;
    if (with_header) {
        memcpy(b, "Exif\0\0", 6);
        n = 6;
    }
    uint8_t *t = b + n;
    static const uint8_t le[] = {'I', 'I', 42, 0, 8, 0, 0, 0, 1, 0, 0x12, 1, 3, 0, 1, 0, 0, 0,
                                 0, 0, 0, 0, 0, 0, 0, 0};
    static const uint8_t be[] = {'M', 'M', 0, 42, 0, 0, 0, 8, 0, 1, 1, 0x12, 0, 3, 0, 0, 0, 1,
                                 0, 0, 0, 0, 0, 0, 0, 0};
    memcpy(t, big_endian ? be : le, sizeof le);
    t[big_endian ? 19 : 18] = (uint8_t)orientation;   /* value, in the entry's first 2 bytes */
    return n + sizeof le;
}

/* 8 solid 8x8 blocks in a 4x2 grid (32x16): every orientation differs, and
 * solid blocks survive JPEG almost exactly. */
static void block_colour(int bx, int by, uint8_t *c)
{
    int i = by * 4 + bx;
    c[0] = (uint8_t)(30 * i + 10);
    c[1] = (uint8_t)(230 - 25 * i);
    c[2] = (uint8_t)((i * 97) % 256);
}

static uint8_t *block_pattern(void)
{
    uint8_t *p = malloc(32 * 16 * 3);
    for (int y = 0; y < 16; y++)
        for (int x = 0; x < 32; x++)
            block_colour(x / 8, y / 8, p + (y * 32 + x) * 3);
    return p;
}

static int max_abs_diff(const uint8_t *a, const uint8_t *b, size_t n)
{
    int m = 0;
    for (size_t i = 0; i < n; i++) {
        int d = abs((int)a[i] - (int)b[i]);
        m = d > m ? d : m;
    }
    return m;
}

/* Checks img against the pattern transformed by `orientation` (spec table). */
static void check_oriented(const char *what, const hadm_image *img, const uint8_t *pat,
                           int orientation, int tol)
{
    const int W = 32, H = 16;
    int swap = orientation >= 5;
    CHECK(img->width == (swap ? H : W) && img->height == (swap ? W : H),
          "%s orientation %d: size %dx%d", what, orientation, img->width, img->height);
    if (img->width != (swap ? H : W))
        return;
    int worst = 0;
    for (int y = 0; y < img->height; y++)
        for (int x = 0; x < img->width; x++) {
            int sx, sy;
            switch (orientation) {
            case 2: sx = W - 1 - x; sy = y; break;
            case 3: sx = W - 1 - x; sy = H - 1 - y; break;
            case 4: sx = x; sy = H - 1 - y; break;
            case 5: sx = y; sy = x; break;
            case 6: sx = y; sy = H - 1 - x; break;
            case 7: sx = W - 1 - y; sy = H - 1 - x; break;
            case 8: sx = W - 1 - y; sy = x; break;
            default: sx = x; sy = y;
            }
            int d = max_abs_diff(img->rgb + ((size_t)y * img->width + x) * 3,
                                 pat + ((size_t)sy * W + sx) * 3, 3);
            worst = d > worst ? d : worst;
        }
    CHECK(worst <= tol, "%s orientation %d: pixels moved wrongly (max diff %d)", what, orientation,
          worst);
}

static hadm_status decode(blob b, hadm_image *img, hadm_error *err)
{
    return hadm_image_decode(b.data, b.len, NULL, img, err);
}

static void test_exif_jpeg(void)
{
    uint8_t *pat = block_pattern();
    hadm_error err = {0};
    for (int be = 0; be < 2; be++)
        for (int o = 1; o <= 8; o++) {
            uint8_t exif[64];
            size_t n = make_exif(exif, o, be, 1);
            blob b = jpeg_rgb(pat, 32, 16, 100, exif, n);
            hadm_image img = {0};
            hadm_status s = decode(b, &img, &err);
            CHECK(s == HADM_OK, "jpeg exif %d: %s", o, err.msg);
            const char *fmt = NULL;
            int pw = 0, ph = 0;
            s = hadm_image_probe(b.data, b.len, &fmt, &pw, &ph, &err);
            CHECK(s == HADM_OK && pw == 32 && ph == 16 && !strcmp(fmt, "jpeg"),
                  "probe gives the stored size: %dx%d", pw, ph);
            check_oriented(be ? "JPEG (MM)" : "JPEG (II)", &img, pat, o, 6);
            hadm_image_free(&img);
            free(b.data);
        }
    /* Unparseable EXIF is ignored, like the original does. */
    uint8_t junk[40] = "Exif\0\0MM\0*\0\0\0\xff\xff\xff";
    blob b = jpeg_rgb(pat, 32, 16, 100, junk, sizeof junk);
    hadm_image img = {0};
    CHECK(decode(b, &img, &err) == HADM_OK, "junk EXIF: %s", err.msg);
    check_oriented("JPEG junk EXIF", &img, pat, 1, 6);
    hadm_image_free(&img);
    free(b.data);
    free(pat);
}

static void test_exif_png_webp(void)
{
    uint8_t *pat = block_pattern();
    hadm_error err = {0};
    for (int o = 1; o <= 8; o++) {
        uint8_t exif[64];
        size_t n = make_exif(exif, o, o & 1, 0);   /* PNG eXIf: bare TIFF */
        blob b = png_encode(32, 16, SPNG_COLOR_TYPE_TRUECOLOR, 8, pat, 32 * 16 * 3, NULL, exif, n);
        hadm_image img = {0};
        CHECK(decode(b, &img, &err) == HADM_OK, "png exif %d: %s", o, err.msg);
        check_oriented("PNG eXIf", &img, pat, o, 0);
        hadm_image_free(&img);
        free(b.data);
    }
    /* WebP: lossless image chunk wrapped in an extended (VP8X) file with EXIF */
    uint8_t *simple = NULL;
    size_t slen = WebPEncodeLosslessRGB(pat, 32, 16, 32 * 3, &simple);
    CHECK(slen > 12, "WebP encode failed");
    for (int o = 1; slen > 12 && o <= 8; o++) {
        uint8_t exif[64];
        size_t n = make_exif(exif, o, 0, o & 1);   /* with and without "Exif\0\0" */
        size_t total = 12 + 18 + (slen - 12) + 8 + n + (n & 1);
        uint8_t *f = calloc(1, total);
        size_t p = 0;
        memcpy(f, "RIFF\0\0\0\0WEBPVP8X", 16);
        p = 16;
        f[p] = 10;                    /* chunk size */
        f[p + 4] = 0x08;              /* flags: EXIF present */
        f[p + 8] = 31;                /* canvas width - 1 (24 bit LE) */
        f[p + 11] = 15;               /* canvas height - 1 */
        p += 14;
        memcpy(f + p, simple + 12, slen - 12);
        p += slen - 12;
        memcpy(f + p, "EXIF", 4);
        f[p + 4] = (uint8_t)n;
        memcpy(f + p + 8, exif, n);
        uint32_t riff = (uint32_t)(total - 8);
        memcpy(f + 4, &riff, 4);      /* little-endian host */
        hadm_image img = {0};
        hadm_status s = hadm_image_decode(f, total, NULL, &img, &err);
        CHECK(s == HADM_OK, "webp exif %d: %s", o, err.msg);
        if (!s)
            check_oriented("WebP EXIF", &img, pat, o, 0);
        hadm_image_free(&img);
        free(f);
    }
    WebPFree(simple);
    free(pat);
}

/* ---- PNG colour types -------------------------------------------------- */

static void put_sample(uint8_t *row, int i, int depth, unsigned v)
{
    if (depth == 16) {
        uint16_t s = (uint16_t)v;
        memcpy(row + 2 * i, &s, 2);   /* SPNG_FMT_PNG: host order */
    } else if (depth == 8) {
        row[i] = (uint8_t)v;
    } else {
        int bit = i * depth;
        row[bit / 8] |= (uint8_t)(v << (8 - depth - bit % 8));
    }
}

/* Encodes a W x H image of the given type whose sample c of pixel (x, y) is
 * value(x, y, c), decodes it and compares with expect(x, y) under PIL rules. */
#define PW 13
#define PH 5
static unsigned value(int x, int y, int c, int depth)
{
    unsigned max = (1u << depth) - 1;
    unsigned v = (unsigned)(x * 37 + y * 101 + c * 59) * 2654435761u >> 7;
    if (depth == 16 && c == 0 && x < 4)
        v %= 300;   /* small 16-bit grey values: PIL clamps them, not scales */
    return v & max;
}

static void png_case(int color, int depth, const struct spng_plte *plte)
{
    int ch = color == 0 || color == 3 ? 1 : color == 4 ? 2 : color == 2 ? 3 : 4;
    size_t stride = ((size_t)PW * ch * depth + 7) / 8;
    uint8_t *raw = calloc(PH, stride);
    uint8_t want[PW * PH * 3];
    for (int y = 0; y < PH; y++)
        for (int x = 0; x < PW; x++) {
            unsigned v[4];
            for (int c = 0; c < ch; c++) {
                v[c] = value(x, y, c, depth);
                if (color == 3)
                    v[c] %= plte->n_entries + 1;   /* one index past the palette */
                put_sample(raw + y * stride, x * ch + c, depth, v[c]);
            }
            uint8_t *w = want + (y * PW + x) * 3;
            unsigned max = (1u << depth) - 1;
            if (color == 0) {
                unsigned g = depth == 16 ? (v[0] > 255 ? 255 : v[0]) : v[0] * 255 / max;
                w[0] = w[1] = w[2] = (uint8_t)g;
            } else if (color == 3) {
                int in = v[0] < plte->n_entries;
                w[0] = in ? plte->entries[v[0]].red : (uint8_t)v[0];
                w[1] = in ? plte->entries[v[0]].green : (uint8_t)v[0];
                w[2] = in ? plte->entries[v[0]].blue : (uint8_t)v[0];
            } else if (color == 4) {
                w[0] = w[1] = w[2] = (uint8_t)(depth == 16 ? v[0] >> 8 : v[0]);
            } else {
                for (int c = 0; c < 3; c++)
                    w[c] = (uint8_t)(depth == 16 ? v[c] >> 8 : v[c]);
            }
        }
    blob b = png_encode(PW, PH, color, depth, raw, PH * stride, plte, NULL, 0);
    hadm_image img = {0};
    hadm_error err = {0};
    hadm_status s = decode(b, &img, &err);
    CHECK(s == HADM_OK, "PNG colour %d depth %d: %s", color, depth, err.msg);
    if (!s) {
        CHECK(img.width == PW && img.height == PH, "PNG size");
        int d = max_abs_diff(img.rgb, want, sizeof want);
        CHECK(d == 0, "PNG colour %d depth %d: max diff %d from PIL's rules", color, depth, d);
    }
    hadm_image_free(&img);
    free(b.data);
    free(raw);
}

static void test_png_types(void)
{
    static const int grey[] = {1, 2, 4, 8, 16};
    for (int i = 0; i < 5; i++)
        png_case(SPNG_COLOR_TYPE_GRAYSCALE, grey[i], NULL);
    for (int d = 8; d <= 16; d += 8) {
        png_case(SPNG_COLOR_TYPE_TRUECOLOR, d, NULL);
        png_case(SPNG_COLOR_TYPE_GRAYSCALE_ALPHA, d, NULL);
        png_case(SPNG_COLOR_TYPE_TRUECOLOR_ALPHA, d, NULL);
    }
    struct spng_plte plte = {0};
    for (int i = 0; i < 3; i++)
        plte.entries[i] = (struct spng_plte_entry){(uint8_t)(200 - 60 * i), (uint8_t)(17 + i),
                                                   (uint8_t)(90 * i), 255};
    for (int d = 1; d <= 8; d *= 2) {
        plte.n_entries = d == 1 ? 1 : 3;   /* at most 2^depth entries */
        png_case(SPNG_COLOR_TYPE_INDEXED, d, &plte);
    }
}

/* ---- CMYK / YCCK JPEG --------------------------------------------------- */

static void test_cmyk(void)
{
    /* 16x8 of two solid 8x8 blocks; PIL reads libjpeg's CMYK as Adobe-
     * inverted ("CMYK;I") then R = K' - round((255-C)*K'/255) with K' the
     * decoded K. The values make inverted and non-inverted readings differ. */
    static const uint8_t cmyk[2][4] = {{200, 30, 120, 255}, {10, 250, 90, 128}};
    uint8_t px[16 * 8 * 4];
    for (int i = 0; i < 16 * 8; i++)
        memcpy(px + i * 4, cmyk[(i % 16) / 8], 4);
    for (int ycck = 0; ycck < 2; ycck++) {
        jpeg_opts o = {4, JCS_CMYK, ycck ? JCS_YCCK : JCS_CMYK, 100, 0, 1, NULL, 0};
        blob b = jpeg_encode(px, 16, 8, &o);
        hadm_image img = {0};
        hadm_error err = {0};
        hadm_status s = decode(b, &img, &err);
        CHECK(s == HADM_OK, "%s JPEG: %s", ycck ? "YCCK" : "CMYK", err.msg);
        for (int blk = 0; !s && blk < 2; blk++) {
            const uint8_t *c = cmyk[blk];
            const uint8_t *got = img.rgb + (4 + blk * 8) * 3;   /* pixel (4+8*blk, 0) */
            for (int ch = 0; ch < 3; ch++) {
                int t = (255 - c[ch]) * c[3] + 128;
                int want = c[3] - (((t >> 8) + t) >> 8);
                CHECK(abs(got[ch] - want) <= 3, "%s block %d channel %d: %d, want %d",
                      ycck ? "YCCK" : "CMYK", blk, ch, got[ch], want);
            }
        }
        hadm_image_free(&img);
        free(b.data);
    }
}

/* ---- grey JPEG and WebP -------------------------------------------------- */

static void test_grey_jpeg_and_webp(void)
{
    uint8_t grey[32 * 16], *pat = block_pattern();
    for (int i = 0; i < 32 * 16; i++)
        grey[i] = pat[i * 3];
    jpeg_opts o = {1, JCS_GRAYSCALE, JCS_UNKNOWN, 100, 0, 1, NULL, 0};
    blob b = jpeg_encode(grey, 32, 16, &o);
    hadm_image img = {0};
    hadm_error err = {0};
    CHECK(decode(b, &img, &err) == HADM_OK, "grey JPEG: %s", err.msg);
    int bad = 0;
    for (int i = 0; img.rgb && i < 32 * 16; i++)
        bad += img.rgb[3 * i] != img.rgb[3 * i + 1] || img.rgb[3 * i] != img.rgb[3 * i + 2] ||
               abs(img.rgb[3 * i] - grey[i]) > 3;
    CHECK(img.rgb && bad == 0, "grey JPEG must give R=G=B=L (%d bad pixels)", bad);
    hadm_image_free(&img);
    free(b.data);

    /* lossless RGBA with alpha: alpha is dropped, RGB kept exactly */
    uint8_t rgba[32 * 16 * 4];
    for (int i = 0; i < 32 * 16; i++) {
        memcpy(rgba + 4 * i, pat + 3 * i, 3);
        rgba[4 * i + 3] = (uint8_t)(1 + (i * 7) % 255);
    }
    uint8_t *wp = NULL;
    size_t wl = WebPEncodeLosslessRGBA(rgba, 32, 16, 32 * 4, &wp);
    CHECK(hadm_image_decode(wp, wl, NULL, &img, &err) == HADM_OK, "WebP RGBA: %s", err.msg);
    check_oriented("WebP RGBA", &img, pat, 1, 0);
    const char *fmt = NULL;
    int w = 0, h = 0;
    CHECK(hadm_image_probe(wp, wl, &fmt, &w, &h, &err) == HADM_OK && w == 32 && h == 16 &&
              !strcmp(fmt, "webp"), "WebP probe");
    hadm_image_free(&img);
    /* truncated WebP: a clear error */
    CHECK(hadm_image_decode(wp, wl / 2, NULL, &img, &err) == HADM_ERR_IMAGE,
          "truncated WebP must fail cleanly");
    WebPFree(wp);
    /* lossy RGB */
    wl = WebPEncodeRGB(pat, 32, 16, 32 * 3, 95, &wp);
    CHECK(hadm_image_decode(wp, wl, NULL, &img, &err) == HADM_OK, "WebP lossy: %s", err.msg);
    long sum = 0;
    for (int i = 0; img.rgb && i < 32 * 16 * 3; i++)
        sum += abs(img.rgb[i] - pat[i]);
    CHECK(img.width == 32 && img.height == 16 && sum < 32 * 16 * 3 * 12,
          "lossy WebP: %dx%d, mean diff %.1f", img.width, img.height, sum / (32.0 * 16 * 3));
    hadm_image_free(&img);
    WebPFree(wp);
    free(pat);
}

/* ---- bad input and limits ------------------------------------------------ */

static uint32_t crc32_png(const uint8_t *p, size_t n)
{
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
    }
    return ~c;
}

/* A valid small PNG whose IHDR then claims w x h (CRC fixed up). */
static blob png_claiming(uint32_t w, uint32_t h)
{
    uint8_t px[4 * 4 * 3] = {0};
    blob b = png_encode(4, 4, SPNG_COLOR_TYPE_TRUECOLOR, 8, px, sizeof px, NULL, NULL, 0);
    const uint8_t dims[8] = {w >> 24, w >> 16, w >> 8, w, h >> 24, h >> 16, h >> 8, h};
    memcpy(b.data + 16, dims, 8);
    uint32_t crc = crc32_png(b.data + 12, 17);
    const uint8_t c[4] = {crc >> 24, crc >> 16, crc >> 8, crc};
    memcpy(b.data + 29, c, 4);
    return b;
}

static void gradient(uint8_t *rgb, int w, int h)
{
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            uint8_t *p = rgb + ((size_t)y * w + x) * 3;
            p[0] = (uint8_t)(x * 255 / (w - 1));
            p[1] = (uint8_t)(y * 255 / (h - 1));
            p[2] = (uint8_t)((x + y) & 255);
        }
}

static void test_truncated(void)
{
    hadm_error err = {0};
    enum { TW = 128, TH = 128 };
    uint8_t *rgb = malloc(TW * TH * 3);
    gradient(rgb, TW, TH);
    for (int i = 0; i < TW * TH * 3; i += 5)
        rgb[i] ^= (uint8_t)(i * 13);   /* texture, so that rows cost bytes */
    jpeg_opts o = {3, JCS_RGB, JCS_UNKNOWN, 90, 0, 0, NULL, 0};
    blob b = jpeg_encode(rgb, TW, TH, &o);
    hadm_image full = {0}, part = {0};
    CHECK(decode(b, &full, &err) == HADM_OK, "baseline JPEG: %s", err.msg);
    /* By default a truncated JPEG is an error that says what to do. */
    hadm_status s = hadm_image_decode(b.data, b.len * 6 / 10, NULL, &part, &err);
    CHECK(s == HADM_ERR_IMAGE && part.rgb == NULL && strstr(err.msg, "truncated") &&
              strstr(err.msg, "--allow-truncated"), "strict truncated JPEG: %d %s", s, err.msg);
    /* allow_truncated = PIL with LOAD_TRUNCATED_IMAGES: rows decoded before
     * the data ran out, black below. */
    hadm_decode_options lenient = {.allow_truncated = 1};
    s = hadm_image_decode(b.data, b.len * 6 / 10, &lenient, &part, &err);
    CHECK(s == HADM_OK && part.width == TW && part.height == TH, "truncated JPEG: %s", err.msg);
    if (!s && full.rgb) {
        CHECK(!memcmp(part.rgb, full.rgb, 32 * TW * 3), "first rows of a truncated JPEG differ");
        int black = 1;
        for (int i = (TH - 1) * TW * 3; i < TH * TW * 3; i++)
            black &= part.rgb[i] == 0;
        CHECK(black, "rows after the end of the data must be black (0)");
    }
    hadm_image_free(&part);
    hadm_image_free(&full);
    /* cut inside the headers: an error, not a crash */
    CHECK(hadm_image_decode(b.data, 200, NULL, &part, &err) == HADM_ERR_IMAGE,
          "JPEG cut in its header must fail");
    CHECK(part.rgb == NULL, "no image on failure");
    free(b.data);
    o.progressive = 1;
    b = jpeg_encode(rgb, TW, TH, &o);
    s = hadm_image_decode(b.data, b.len * 6 / 10, NULL, &part, &err);
    CHECK(s == HADM_ERR_IMAGE, "truncated progressive JPEG: %d %s", s, err.msg);
    free(b.data);
    blob p = png_encode(TW, TH, SPNG_COLOR_TYPE_TRUECOLOR, 8, rgb, TW * TH * 3, NULL, NULL, 0);
    s = hadm_image_decode(p.data, p.len / 2, NULL, &part, &err);
    CHECK(s == HADM_ERR_IMAGE, "truncated PNG must fail clearly: %d", s);
    CHECK(strstr(err.msg, "PNG") != NULL, "message names PNG: %s", err.msg);
    free(p.data);
    free(rgb);
}

static void test_bad_input(void)
{
    hadm_error err = {0};
    hadm_image img = {0};
    const char *text = "hello, this is not an image\n";
    hadm_status s = hadm_image_decode(text, strlen(text), NULL, &img, &err);
    CHECK(s == HADM_ERR_NOT_IMAGE, "text: %d", s);
    CHECK(!strcmp(err.msg, "not an image (expected JPEG, PNG or WebP)"), "message: %s", err.msg);
    CHECK(hadm_image_decode("", 0, NULL, &img, &err) == HADM_ERR_NOT_IMAGE, "empty buffer");
    CHECK(hadm_image_decode(NULL, 5, NULL, &img, &err) == HADM_ERR_ARG, "NULL bytes");
    uint8_t rnd[2000];
    srand(7);
    for (int trial = 0; trial < 20; trial++) {
        for (size_t i = 0; i < sizeof rnd; i++)
            rnd[i] = (uint8_t)rand();
        rnd[0] = 0xff, rnd[1] = 0xd8, rnd[2] = 0xff;
        s = hadm_image_decode(rnd, sizeof rnd, NULL, &img, &err);
        CHECK(s == HADM_ERR_IMAGE, "random bytes with a JPEG magic: %d", s);
        hadm_image_free(&img);
    }
    blob z = png_claiming(0, 0);
    CHECK(hadm_image_decode(z.data, z.len, NULL, &img, &err) == HADM_ERR_IMAGE, "0x0 PNG");
    int w = -1, h = -1;
    CHECK(hadm_image_probe(z.data, z.len, NULL, &w, &h, &err) == HADM_ERR_IMAGE, "0x0 probe");
    free(z.data);
    blob big = png_claiming(100000, 100000);
    const char *fmt = NULL;
    s = hadm_image_probe(big.data, big.len, &fmt, &w, &h, &err);
    CHECK(s == HADM_OK && w == 100000 && h == 100000 && !strcmp(fmt, "png"),
          "probe of a huge PNG: %d %dx%d", s, w, h);
    s = hadm_image_decode(big.data, big.len, NULL, &img, &err);
    CHECK(s == HADM_ERR_TOO_LARGE && img.rgb == NULL, "huge PNG: %d %s", s, err.msg);
    free(big.data);
    /* the caller's limit */
    uint8_t rgb[64 * 64 * 3];
    gradient(rgb, 64, 64);
    blob b = jpeg_rgb(rgb, 64, 64, 90, NULL, 0);
    hadm_decode_options opt = {.max_pixels = 64 * 64 - 1};
    CHECK(hadm_image_decode(b.data, b.len, &opt, &img, &err) == HADM_ERR_TOO_LARGE, "limit-1");
    opt.max_pixels = 64 * 64;
    CHECK(hadm_image_decode(b.data, b.len, &opt, &img, &err) == HADM_OK, "limit: %s", err.msg);
    hadm_image_free(&img);
    /* files */
    char path[512];
    snprintf(path, sizeof path, "%s/img.jpg", test_tmpdir());
    FILE *f = fopen(path, "wb");
    CHECK(f && fwrite(b.data, 1, b.len, f) == b.len, "write %s", path);
    if (f)
        fclose(f);
    CHECK(hadm_image_load(path, NULL, &img, &err) == HADM_OK && img.width == 64, "load: %s",
          err.msg);
    hadm_image_free(&img);
    snprintf(path, sizeof path, "%s/missing.jpg", test_tmpdir());
    CHECK(hadm_image_load(path, NULL, &img, &err) == HADM_ERR_IO, "missing file");
    CHECK(strstr(err.msg, "missing.jpg") != NULL, "message names the file: %s", err.msg);
    CHECK(hadm_image_load(test_tmpdir(), NULL, &img, &err) == HADM_ERR_IO, "directory");
    free(b.data);
}

/* Random corruptions of valid files: any outcome but a crash, a hang or a
 * leak (the sanitizer build checks the last). */
static void test_mutations(void)
{
    uint8_t rgb[40 * 24 * 3];
    gradient(rgb, 40, 24);
    jpeg_opts prog = {3, JCS_RGB, JCS_UNKNOWN, 80, 1, 0, NULL, 0};
    blob src[4];
    src[0] = jpeg_rgb(rgb, 40, 24, 80, NULL, 0);
    src[1] = jpeg_encode(rgb, 40, 24, &prog);
    src[2] = png_encode(40, 24, SPNG_COLOR_TYPE_TRUECOLOR, 8, rgb, sizeof rgb, NULL, NULL, 0);
    src[3].len = WebPEncodeRGB(rgb, 40, 24, 40 * 3, 80, &src[3].data);
    srand(99);
    int ok = 0, failed = 0, odd = 0;
    for (int f = 0; f < 4; f++) {
        uint8_t *buf = malloc(src[f].len);
        for (int trial = 0; trial < 150; trial++) {
            memcpy(buf, src[f].data, src[f].len);
            int flips = 1 + rand() % 8;
            for (int k = 0; k < flips; k++)
                buf[3 + rand() % (src[f].len - 3)] = (uint8_t)rand();
            size_t len = trial % 3 == 0 ? (size_t)rand() % src[f].len : src[f].len;
            hadm_image img = {0};
            hadm_error err = {0};
            hadm_status s = hadm_image_decode(buf, len, NULL, &img, &err);
            if (s == HADM_OK)
                ok++, odd += img.width <= 0 || img.height <= 0 || !img.rgb;
            else
                failed++, odd += img.rgb != NULL || !err.msg[0];
            hadm_image_free(&img);
        }
        free(buf);
    }
    printf("mutations: %d decoded, %d refused\n", ok, failed);
    CHECK(odd == 0, "%d mutated inputs gave an inconsistent result", odd);
    free(src[0].data);
    free(src[1].data);
    free(src[2].data);
    WebPFree(src[3].data);
}

int main(void)
{
    test_exif_jpeg();
    test_exif_png_webp();
    test_png_types();
    test_cmyk();
    test_grey_jpeg_and_webp();
    test_truncated();
    test_bad_input();
    test_mutations();
    return test_finish();
}
