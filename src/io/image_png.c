/* PNG decoding with libspng, converted to RGB exactly as PIL 9.1's
 * PngImagePlugin + convert("RGB") do (spec/MODEL.md 1.1):
 *
 *   grey 1/2/4/8 bit   mode "1"/"L" (values scaled to 0..255) -> R=G=B
 *   grey 16 bit        mode "I" (the 16-bit value); I -> RGB *clamps* to
 *                      0..255 (PIL's i2rgb), so most of the range is white
 *   RGB 8/16 bit       16 bit keeps the high byte ("RGB;16B")
 *   palette 1..8 bit   palette lookup; an index past the PLTE entries gets
 *                      PIL's initial palette ramp (i, i, i)
 *   grey+alpha 8/16    alpha dropped; 16 bit keeps the high byte ("LA;16B")
 *   RGBA 8/16 bit      alpha dropped, no compositing; 16 bit: high byte
 *
 * tRNS, gamma, sRGB and ICC chunks are ignored, as PIL's convert does.
 * Unlike PIL with LOAD_TRUNCATED_IMAGES, a truncated or corrupt PNG is an
 * error (spng needs the whole stream). */
#include <stdlib.h>
#include <string.h>

#include <spng.h>

#include "io/image.h"
#include "util/err.h"

#define PNG_CHUNK_LIMIT ((size_t)64 << 20)

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

hadm_status image_png_probe(const uint8_t *b, size_t n, int *w, int *h, hadm_error *err)
{
    /* signature (8) + length (4) + "IHDR" + width (4) + height (4) */
    if (n < 24 || memcmp(b + 12, "IHDR", 4) != 0)
        return hadm_fail(err, HADM_ERR_IMAGE, "PNG: missing IHDR header");
    uint32_t W = be32(b + 16), H = be32(b + 20);
    if (W == 0 || H == 0 || W > INT32_MAX || H > INT32_MAX)
        return hadm_fail(err, HADM_ERR_IMAGE, "PNG: invalid size %ux%u", W, H);
    *w = (int)W;
    *h = (int)H;
    return HADM_OK;
}

/* Sample x of a packed row of `depth`-bit samples (1, 2, 4, 8 or 16). */
static inline unsigned sample(const uint8_t *row, size_t x, int depth)
{
    switch (depth) {
    case 16: return ((const uint16_t *)row)[x];   /* SPNG_FMT_PNG: host-endian */
    case 8: return row[x];
    default: {
        size_t bit = x * (size_t)depth;
        unsigned shift = 8 - depth - (unsigned)(bit & 7);
        return (row[bit >> 3] >> shift) & ((1u << depth) - 1);
    }
    }
}

typedef struct {
    int color, depth, width;
    const struct spng_plte *plte;
} png_layout;

static void convert_row(const png_layout *L, const uint8_t *row, uint8_t *out)
{
    int d = L->depth;
    for (size_t x = 0; x < (size_t)L->width; x++, out += 3) {
        unsigned v;
        switch (L->color) {
        case SPNG_COLOR_TYPE_GRAYSCALE:
            v = sample(row, x, d);
            if (d == 16)
                v = v > 255 ? 255 : v;        /* PIL "I" -> RGB clamps */
            else if (d < 8)
                v = v * 255 / ((1u << d) - 1);  /* "1", "L;2", "L;4" */
            out[0] = out[1] = out[2] = (uint8_t)v;
            break;
        case SPNG_COLOR_TYPE_GRAYSCALE_ALPHA:
            v = sample(row, 2 * x, d);
            out[0] = out[1] = out[2] = (uint8_t)(d == 16 ? v >> 8 : v);
            break;
        case SPNG_COLOR_TYPE_INDEXED:
            v = sample(row, x, d);
            if (v < L->plte->n_entries) {
                out[0] = L->plte->entries[v].red;
                out[1] = L->plte->entries[v].green;
                out[2] = L->plte->entries[v].blue;
            } else {
                out[0] = out[1] = out[2] = (uint8_t)v;
            }
            break;
        default: {   /* truecolour, with or without alpha */
            size_t ch = L->color == SPNG_COLOR_TYPE_TRUECOLOR ? 3 : 4;
            for (size_t c = 0; c < 3; c++) {
                v = sample(row, ch * x + c, d);
                out[c] = (uint8_t)(d == 16 ? v >> 8 : v);
            }
        }
        }
    }
}

static hadm_status spng_failed(int rc, const char *what, hadm_error *err)
{
    return hadm_fail(err, HADM_ERR_IMAGE, "PNG: %s: %s", what, spng_strerror(rc));
}

static hadm_status decode_ctx(spng_ctx *ctx, const uint8_t *b, size_t n, int64_t max_pixels,
                              hadm_image *out, int *orientation, hadm_error *err)
{
    int rc;
    struct spng_ihdr ihdr;
    if ((rc = spng_set_png_buffer(ctx, b, n)) || (rc = spng_get_ihdr(ctx, &ihdr)))
        return spng_failed(rc, "header", err);
    hadm_status s = image_check_size("PNG", ihdr.width, ihdr.height, max_pixels, err);
    if (s)
        return s;
    struct spng_plte plte = {0};
    if (ihdr.color_type == SPNG_COLOR_TYPE_INDEXED && (rc = spng_get_plte(ctx, &plte)))
        return spng_failed(rc, "palette", err);
    size_t size;
    if ((rc = spng_decoded_image_size(ctx, SPNG_FMT_PNG, &size)))
        return spng_failed(rc, "size", err);
    uint8_t *raw = malloc(size);
    if (!raw)
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory decoding a %ux%u PNG", ihdr.width,
                         ihdr.height);
    if ((rc = spng_decode_image(ctx, raw, size, SPNG_FMT_PNG, 0))) {
        free(raw);
        return spng_failed(rc, "decode", err);
    }
    if ((s = image_alloc(out, (int)ihdr.width, (int)ihdr.height, err))) {
        free(raw);
        return s;
    }
    png_layout L = {ihdr.color_type, ihdr.bit_depth, (int)ihdr.width, &plte};
    size_t stride = size / ihdr.height;
    size_t channels = ihdr.color_type == 0 || ihdr.color_type == 3 ? 1
                      : ihdr.color_type == 4 ? 2 : ihdr.color_type == 2 ? 3 : 4;
    if (stride * 8 < (size_t)ihdr.width * channels * ihdr.bit_depth) {
        free(raw);
        return hadm_fail(err, HADM_ERR_INTERNAL, "PNG: decoded row shorter than expected");
    }
    for (uint32_t y = 0; y < ihdr.height; y++)
        convert_row(&L, raw + y * stride, out->rgb + (size_t)y * ihdr.width * 3);
    free(raw);
    struct spng_exif exif;
    if (spng_get_exif(ctx, &exif) == 0)
        *orientation = exif_orientation((const uint8_t *)exif.data, exif.length);
    return HADM_OK;
}

hadm_status image_png_decode(const uint8_t *b, size_t n, int64_t max_pixels, hadm_image *out,
                             int *orientation, hadm_error *err)
{
    spng_ctx *ctx = spng_ctx_new(0);
    if (!ctx)
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory");
    spng_set_chunk_limits(ctx, PNG_CHUNK_LIMIT, PNG_CHUNK_LIMIT);
    hadm_status s = decode_ctx(ctx, b, n, max_pixels, out, orientation, err);
    spng_ctx_free(ctx);
    if (s)
        hadm_image_free(out);
    return s;
}
