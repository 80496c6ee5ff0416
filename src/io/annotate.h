/* Detections drawn onto an image with cairo: one outline per box and a
 * "class score" label, HADM-L in warm colours and HADM-G in cool ones (one
 * colour per class). Used by `hadm detect --annotate` and by the server's
 * `?annotate=1` / `annotated_image` answers.
 *
 * Geometry, which the tests rely on: a box covers the pixel columns
 * [round(x1), round(x2)) and rows [round(y1), round(y2)), clipped to the
 * image; its outline is style.line_width pixels wide, drawn inside that
 * rectangle in the box colour exactly (no antialiasing: the edges sit on
 * pixel boundaries). A label is a filled rectangle of the box colour just
 * above the box (inside its top edge when there is no room above), moved as
 * needed to lie entirely inside the image; only its text is antialiased.
 * Boxes are drawn global first, then local, each lowest score first, and
 * the labels after every box in the same order, so the most confident local
 * detection ends up on top. Nothing outside boxes and labels changes. */
#ifndef HADM_IO_ANNOTATE_H
#define HADM_IO_ANNOTATE_H

#include <stddef.h>
#include <stdint.h>

#include "hadm.h"
#include "io/image_encode.h"

typedef struct {
    int line_width;   /* pixels */
    double font_size; /* pixels (cairo's em size) */
} annotate_style;

/* Scaled with the image so that boxes and labels stay readable when the
 * image is shown fitted to a screen, from about 200 to 8000 pixels a side. */
annotate_style annotate_style_for(int width, int height);

/* The colour of class_id of HADM-G (global != 0) or HADM-L. */
void annotate_colour(int global, int class_id, uint8_t rgb[3]);

typedef struct {
    int x0, y0, x1, y1; /* pixels [x0, x1) x [y0, y1) */
} annotate_rect;

typedef struct {
    annotate_rect box, label; /* both empty (x0 == x1) when the box is outside the image */
    uint8_t colour[3];
    char text[96];
    double text_x, text_y;    /* baseline origin of the text */
} annotate_item;

/* Where everything goes for an image of width x height, in drawing order.
 * *items is malloc'd (NULL when there is nothing to draw). Either result
 * may be NULL. */
hadm_status annotate_layout(int width, int height, const hadm_result *local,
                            const hadm_result *global, annotate_item **items, int *n,
                            hadm_error *err);

/* Draws the detections over img's pixels (which they refer to). Memory used
 * beyond the image stays bounded (a tile at a time), so very large
 * images can be annotated. */
hadm_status annotate_draw(hadm_image *img, const hadm_result *local, const hadm_result *global,
                          hadm_error *err);

/* Draws, then encodes as `want` into a malloc'd buffer. *used says what was
 * written: PNG when a JPEG cannot hold the size (more than 65500 pixels a
 * side). */
hadm_status annotate_encode(hadm_image *img, const hadm_result *local, const hadm_result *global,
                            image_format want, uint8_t **out, size_t *len, image_format *used,
                            hadm_error *err);

#endif
