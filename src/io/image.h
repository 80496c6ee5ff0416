/* Internal interface between the image front end (image.c) and the
 * per-format decoders (image_jpeg.c, image_png.c, image_webp.c, exif.c).
 *
 * Every decoder reproduces what the original reader does with PIL:
 * Image.open -> EXIF orientation -> convert("RGB") (spec/MODEL.md 1.1).
 * Decoders return the image as stored plus its EXIF orientation; image.c
 * applies the orientation. */
#ifndef HADM_IO_IMAGE_H
#define HADM_IO_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "hadm.h"

/* Refuses a stored size before any pixel buffer is allocated:
 * 0 side -> HADM_ERR_IMAGE, w*h > max_pixels -> HADM_ERR_TOO_LARGE. */
hadm_status image_check_size(const char *fmt, int64_t w, int64_t h, int64_t max_pixels,
                             hadm_error *err);

/* Zero-filled 3*w*h buffer for img (w, h already checked). */
hadm_status image_alloc(hadm_image *img, int w, int h, hadm_error *err);

/* Applies EXIF orientation 1..8 (table of spec 1.1); other values: no-op. */
hadm_status image_orient(hadm_image *img, int orientation, hadm_error *err);

/* EXIF orientation (tag 274 of IFD0) from an EXIF blob: either
 * "Exif\0\0" + TIFF (JPEG APP1, some WebP) or bare TIFF (PNG eXIf, WebP).
 * Returns 1 when absent, unreadable or not a single integer. */
int exif_orientation(const uint8_t *data, size_t len);

hadm_status image_jpeg_probe(const uint8_t *b, size_t n, int *w, int *h, hadm_error *err);
hadm_status image_jpeg_decode(const uint8_t *b, size_t n, int64_t max_pixels, int allow_truncated, hadm_image *out,
                              int *orientation, hadm_error *err);

hadm_status image_png_probe(const uint8_t *b, size_t n, int *w, int *h, hadm_error *err);
hadm_status image_png_decode(const uint8_t *b, size_t n, int64_t max_pixels, hadm_image *out,
                             int *orientation, hadm_error *err);

hadm_status image_webp_probe(const uint8_t *b, size_t n, int *w, int *h, hadm_error *err);
hadm_status image_webp_decode(const uint8_t *b, size_t n, int64_t max_pixels, hadm_image *out,
                              int *orientation, hadm_error *err);

#endif
