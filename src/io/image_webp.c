/* WebP decoding with libwebp. PIL decodes WebP to RGBA (non-premultiplied)
 * or RGB and convert("RGB") drops alpha, which is what WebPDecodeRGB gives.
 * The EXIF chunk (extended format) carries the orientation, which PIL's
 * getexif() reads. Animated WebP (PIL would take the first frame) needs
 * libwebpdemux, which we do not link: refused with a clear message. */
#include <stdlib.h>
#include <string.h>

#include <webp/decode.h>

#include "io/image.h"
#include "util/err.h"

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

hadm_status image_webp_probe(const uint8_t *b, size_t n, int *w, int *h, hadm_error *err)
{
    if (!WebPGetInfo(b, n, w, h))
        return hadm_fail(err, HADM_ERR_IMAGE, "WebP: invalid or truncated header");
    return HADM_OK;
}

/* Walks the RIFF chunks after "RIFF<size>WEBP" for the first "EXIF". */
static int webp_orientation(const uint8_t *b, size_t n)
{
    size_t riff_end = 8 + (size_t)le32(b + 4);
    if (riff_end < n)
        n = riff_end;
    size_t pos = 12;
    while (pos + 8 <= n) {
        size_t len = le32(b + pos + 4);
        if (len > n - pos - 8)
            return 1;
        if (!memcmp(b + pos, "EXIF", 4))
            return exif_orientation(b + pos + 8, len);
        pos += 8 + len + (len & 1);
    }
    return 1;
}

static const char *vp8_status_text(VP8StatusCode c)
{
    switch (c) {
    case VP8_STATUS_OUT_OF_MEMORY: return "out of memory";
    case VP8_STATUS_INVALID_PARAM: return "invalid parameter";
    case VP8_STATUS_BITSTREAM_ERROR: return "corrupt bitstream";
    case VP8_STATUS_UNSUPPORTED_FEATURE: return "unsupported feature";
    case VP8_STATUS_NOT_ENOUGH_DATA: return "truncated data";
    default: return "decoding failed";
    }
}

hadm_status image_webp_decode(const uint8_t *b, size_t n, int64_t max_pixels, hadm_image *out,
                              int *orientation, hadm_error *err)
{
    WebPBitstreamFeatures f;
    VP8StatusCode rc = WebPGetFeatures(b, n, &f);
    if (rc != VP8_STATUS_OK)
        return hadm_fail(err, HADM_ERR_IMAGE, "WebP: %s", vp8_status_text(rc));
    if (f.has_animation)
        return hadm_fail(err, HADM_ERR_IMAGE, "WebP: animated images are not supported");
    hadm_status s = image_check_size("WebP", f.width, f.height, max_pixels, err);
    if (s)
        return s;
    if ((s = image_alloc(out, f.width, f.height, err)))
        return s;
    size_t size = (size_t)f.width * (size_t)f.height * 3;
    if (!WebPDecodeRGBInto(b, n, out->rgb, size, f.width * 3)) {
        hadm_image_free(out);
        return hadm_fail(err, HADM_ERR_IMAGE, "WebP: corrupt or truncated image data");
    }
    *orientation = webp_orientation(b, n);
    return HADM_OK;
}
