/* Encoding an RGB image to JPEG (libjpeg-turbo) or PNG (libspng) in memory:
 * the output side of annotation, shared by the CLI and the server. */
#ifndef HADM_IO_IMAGE_ENCODE_H
#define HADM_IO_IMAGE_ENCODE_H

#include <stddef.h>
#include <stdint.h>

#include "hadm.h"

typedef enum { IMAGE_JPEG = 0, IMAGE_PNG = 1 } image_format;

#define IMAGE_JPEG_QUALITY 90

/* "jpeg"/"jpg" or "png" (case-insensitive) -> *out; -1 if neither. */
int image_format_parse(const char *name, image_format *out);
const char *image_format_mime(image_format f);      /* "image/jpeg" | "image/png" */
const char *image_format_extension(image_format f); /* "jpg" | "png" */

/* Encodes img into a malloc'd buffer (*out, *len; the caller frees it).
 * quality applies to JPEG only (1..100; 0 = IMAGE_JPEG_QUALITY). */
hadm_status image_encode(const hadm_image *img, image_format f, int quality, uint8_t **out,
                         size_t *len, hadm_error *err);

#endif
