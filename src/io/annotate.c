/* Drawing detections with cairo (see annotate.h). Text goes through cairo's
 * font API, which finds the font with fontconfig and renders it with
 * FreeType; the boxes and label backgrounds are whole-pixel rectangles. */
#include "io/annotate.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cairo.h>

#include "util/err.h"

/* DejaVu comes with Debian's fonts-dejavu-core; fontconfig substitutes
 * another sans face when it is missing. */
#define LABEL_FONT "DejaVu Sans"
/* The drawing surface: bounded, so huge images cost no more than this. */
#define TILE_BYTES ((size_t)8 << 20)
#define TILE_SIDE 8192
#define JPEG_MAX_SIDE 65500

/* Warm for HADM-L, cool for HADM-G; saturated, so that labels stand out on
 * photographs, and distinct between neighbouring class ids. */
static const uint8_t LOCAL_COLOURS[][3] = {
    {220, 20, 60}, {255, 140, 0}, {255, 210, 0}, {255, 90, 170}, {150, 75, 0}, {255, 80, 40},
};
static const uint8_t GLOBAL_COLOURS[][3] = {
    {0, 90, 200},  {0, 200, 220},  {40, 180, 100}, {30, 60, 140},  {0, 160, 255}, {0, 140, 140},
    {110, 210, 120}, {90, 140, 230}, {0, 100, 60},  {0, 210, 170},  {60, 110, 110}, {150, 200, 255},
};
#define N_LOCAL_COLOURS ((int)(sizeof LOCAL_COLOURS / sizeof LOCAL_COLOURS[0]))
#define N_GLOBAL_COLOURS ((int)(sizeof GLOBAL_COLOURS / sizeof GLOBAL_COLOURS[0]))

annotate_style annotate_style_for(int width, int height)
{
    double side = width > height ? width : height, shortest = width < height ? width : height;
    annotate_style s;
    /* Proportional to the longer side (what a viewer fits to the screen),
     * but never so big that a narrow panorama is all label. */
    s.font_size = fmax(12.0, fmin(side * 0.02, shortest * 0.2));
    long lw = lround(fmin(side / 500.0, shortest / 40.0));
    s.line_width = lw < 2 ? 2 : (int)lw;
    return s;
}

void annotate_colour(int global, int class_id, uint8_t rgb[3])
{
    unsigned k = class_id < 0 ? 0u - (unsigned)class_id : (unsigned)class_id;
    const uint8_t *c = global ? GLOBAL_COLOURS[k % N_GLOBAL_COLOURS] : LOCAL_COLOURS[k % N_LOCAL_COLOURS];
    memcpy(rgb, c, 3);
}

/* ---- layout ---------------------------------------------------------------- */

/* Same font settings for measuring and drawing, so extents agree; hinting
 * off keeps them proportional to the size. */
static void set_label_font(cairo_t *cr, double size)
{
    cairo_select_font_face(cr, LABEL_FONT, CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_BOLD);
    cairo_set_font_size(cr, size);
    cairo_font_options_t *fo = cairo_font_options_create();
    cairo_font_options_set_antialias(fo, CAIRO_ANTIALIAS_GRAY);
    cairo_font_options_set_hint_style(fo, CAIRO_HINT_STYLE_NONE);
    cairo_font_options_set_hint_metrics(fo, CAIRO_HINT_METRICS_OFF);
    cairo_set_font_options(cr, fo);
    cairo_font_options_destroy(fo);
}

/* Rounds v to a pixel boundary in [0, limit]; NaN goes to 0. */
static int pixel_edge(float v, int limit)
{
    if (!(v > 0))
        return 0;
    if (v >= (float)limit)
        return limit;
    return (int)lroundf(v);
}

static void place_label(annotate_item *it, cairo_t *cr, int width, int height)
{
    if (it->box.x1 == it->box.x0)
        return; /* no box in the image to name */
    cairo_font_extents_t fe;
    cairo_text_extents_t te;
    cairo_font_extents(cr, &fe);
    cairo_text_extents(cr, it->text, &te);
    double size = fe.ascent + fe.descent;
    int pad_y = (int)ceil(size * 0.1), pad_x = (int)ceil(size * 0.25);
    int h = (int)ceil(size) + 2 * pad_y, w = (int)ceil(te.x_advance) + 2 * pad_x;
    int x = it->box.x0, y = it->box.y0 - h;
    if (y < 0)
        y = it->box.y0; /* no room above: inside the top edge */
    if (x + w > width)
        x = width - w;
    if (y + h > height)
        y = height - h;
    x = x < 0 ? 0 : x;
    y = y < 0 ? 0 : y;
    it->label = (annotate_rect){x, y, x + w < width ? x + w : width, y + h < height ? y + h : height};
    it->text_x = x + pad_x;
    it->text_y = y + pad_y + fe.ascent;
}

static int utf8_valid(const unsigned char *s)
{
    while (*s) {
        unsigned c = *s;
        int n = c < 0x80 ? 0 : (c & 0xE0) == 0xC0 ? 1 : (c & 0xF0) == 0xE0 ? 2 : (c & 0xF8) == 0xF0 ? 3 : -1;
        if (n < 0 || (n == 1 && c < 0xC2) || c > 0xF4)
            return 0;
        unsigned cp = n ? c & (0x3Fu >> n) : c;
        for (int k = 1; k <= n; k++) {
            if ((s[k] & 0xC0) != 0x80) /* also stops at the terminating NUL */
                return 0;
            cp = cp << 6 | (s[k] & 0x3Fu);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10FFFF)) || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        s += n + 1;
    }
    return 1;
}

/* Class names come from the model file, and cairo stops drawing at text
 * that is not UTF-8: control characters, and every non-ASCII byte of a
 * string that is not UTF-8, become '?'. */
static void sanitize_text(char *text)
{
    int utf8 = utf8_valid((const unsigned char *)text);
    for (unsigned char *p = (unsigned char *)text; *p; p++)
        if (*p < 0x20 || *p == 0x7F || (*p >= 0x80 && !utf8))
            *p = '?';
}

static void layout_one(annotate_item *it, const hadm_detection *d, int global, int width, int height)
{
    it->box = (annotate_rect){pixel_edge(d->x1, width), pixel_edge(d->y1, height), pixel_edge(d->x2, width),
                              pixel_edge(d->y2, height)};
    if (it->box.x1 <= it->box.x0 || it->box.y1 <= it->box.y0)
        it->box.x1 = it->box.x0, it->box.y1 = it->box.y0; /* empty: nothing of it to draw */
    annotate_colour(global, d->class_id, it->colour);
    float score = d->score >= 0 ? (d->score <= 1 ? d->score : 1) : 0; /* NaN -> 0 */
    if (d->class_name)
        snprintf(it->text, sizeof it->text, "%.80s %.2f", d->class_name, score);
    else
        snprintf(it->text, sizeof it->text, "class %d %.2f", d->class_id, score);
    sanitize_text(it->text);
}

static int result_count(const hadm_result *r) { return r && r->count > 0 ? r->count : 0; }

hadm_status annotate_layout(int width, int height, const hadm_result *local, const hadm_result *global,
                            annotate_item **items, int *n, hadm_error *err)
{
    *items = NULL;
    *n = 0;
    if (width <= 0 || height <= 0)
        return hadm_fail(err, HADM_ERR_ARG, "annotate: empty image");
    int total = result_count(local) + result_count(global);
    if (total == 0)
        return HADM_OK;
    annotate_item *it = calloc((size_t)total, sizeof *it);
    cairo_surface_t *scratch = cairo_image_surface_create(CAIRO_FORMAT_RGB24, 1, 1);
    cairo_t *cr = cairo_create(scratch);
    hadm_status s = HADM_OK;
    if (!it || cairo_status(cr) != CAIRO_STATUS_SUCCESS) {
        s = hadm_fail(err, HADM_ERR_NOMEM, "annotate: out of memory");
    } else {
        set_label_font(cr, annotate_style_for(width, height).font_size);
        int k = 0;
        const hadm_result *order[2] = {global, local};
        for (int m = 0; m < 2; m++) /* lowest score first: the best end up on top */
            for (int i = result_count(order[m]) - 1; i >= 0; i--) {
                layout_one(&it[k], &order[m]->dets[i], m == 0, width, height);
                place_label(&it[k++], cr, width, height);
            }
        if (cairo_status(cr) != CAIRO_STATUS_SUCCESS)
            s = hadm_fail(err, HADM_ERR_INTERNAL, "annotate: %s", cairo_status_to_string(cairo_status(cr)));
    }
    cairo_destroy(cr);
    cairo_surface_destroy(scratch);
    if (s) {
        free(it);
        return s;
    }
    *items = it;
    *n = total;
    return HADM_OK;
}

/* ---- drawing, one tile at a time ----------------------------------------------------- */

typedef struct {
    int x0, y0, w, h;
} tile;

static int overlaps(const annotate_rect *r, const tile *t)
{
    return r->x1 > r->x0 && r->x0 < t->x0 + t->w && r->x1 > t->x0 && r->y0 < t->y0 + t->h && r->y1 > t->y0;
}

static void set_colour(cairo_t *cr, const uint8_t c[3])
{
    cairo_set_source_rgb(cr, c[0] / 255.0, c[1] / 255.0, c[2] / 255.0);
}

static void draw_outline(cairo_t *cr, const annotate_item *it, int lw)
{
    const annotate_rect *b = &it->box;
    int w = b->x1 - b->x0, h = b->y1 - b->y0;
    set_colour(cr, it->colour);
    cairo_rectangle(cr, b->x0, b->y0, w, h);
    if (w > 2 * lw && h > 2 * lw) /* else the outline fills the whole box */
        cairo_rectangle(cr, b->x0 + lw, b->y0 + lw, w - 2 * lw, h - 2 * lw);
    cairo_fill(cr);
}

static void draw_label(cairo_t *cr, const annotate_item *it)
{
    const annotate_rect *l = &it->label;
    set_colour(cr, it->colour);
    cairo_rectangle(cr, l->x0, l->y0, l->x1 - l->x0, l->y1 - l->y0);
    cairo_fill(cr);
    /* Dark text on light colours, white on dark ones (Rec. 601 luma). */
    double luma = 0.299 * it->colour[0] + 0.587 * it->colour[1] + 0.114 * it->colour[2];
    double ink = luma > 150 ? 0.0 : 1.0;
    cairo_set_source_rgb(cr, ink, ink, ink);
    cairo_save(cr);
    cairo_rectangle(cr, l->x0, l->y0, l->x1 - l->x0, l->y1 - l->y0);
    cairo_clip(cr); /* a label moved inside the image keeps its text inside too */
    cairo_move_to(cr, it->text_x, it->text_y);
    cairo_show_text(cr, it->text);
    cairo_restore(cr);
}

static void rgb_to_tile(const hadm_image *img, const tile *t, uint8_t *px, int stride)
{
    for (int y = 0; y < t->h; y++) {
        const uint8_t *s = img->rgb + ((size_t)(t->y0 + y) * (size_t)img->width + (size_t)t->x0) * 3;
        uint32_t *d = (uint32_t *)(px + (size_t)y * (size_t)stride);
        for (int x = 0; x < t->w; x++, s += 3)
            d[x] = (uint32_t)s[0] << 16 | (uint32_t)s[1] << 8 | s[2];
    }
}

static void tile_to_rgb(hadm_image *img, const tile *t, const uint8_t *px, int stride)
{
    for (int y = 0; y < t->h; y++) {
        uint8_t *d = img->rgb + ((size_t)(t->y0 + y) * (size_t)img->width + (size_t)t->x0) * 3;
        const uint32_t *s = (const uint32_t *)(px + (size_t)y * (size_t)stride);
        for (int x = 0; x < t->w; x++, d += 3) {
            d[0] = (uint8_t)(s[x] >> 16);
            d[1] = (uint8_t)(s[x] >> 8);
            d[2] = (uint8_t)s[x];
        }
    }
}

static int tile_touched(const tile *t, const annotate_item *it, int n)
{
    for (int i = 0; i < n; i++)
        if (overlaps(&it[i].box, t) || overlaps(&it[i].label, t))
            return 1;
    return 0;
}

/* Draws what touches the tile into the surface, whose origin is the tile's. */
static cairo_status_t draw_tile(cairo_surface_t *surf, const tile *t, const annotate_item *it, int n,
                                const annotate_style *st)
{
    cairo_t *cr = cairo_create(surf);
    cairo_translate(cr, -t->x0, -t->y0);
    cairo_set_fill_rule(cr, CAIRO_FILL_RULE_EVEN_ODD);
    set_label_font(cr, st->font_size);
    for (int i = 0; i < n; i++)
        if (overlaps(&it[i].box, t))
            draw_outline(cr, &it[i], st->line_width);
    for (int i = 0; i < n; i++)
        if (overlaps(&it[i].label, t))
            draw_label(cr, &it[i]);
    cairo_status_t cs = cairo_status(cr);
    cairo_destroy(cr);
    return cs;
}

/* Tiles at most TILE_SIDE wide (cairo surfaces stop at 32767 pixels a side)
 * and TILE_BYTES big. */
static hadm_status draw_items(hadm_image *img, const annotate_item *it, int n, hadm_error *err)
{
    int tw = img->width < TILE_SIDE ? img->width : TILE_SIDE;
    int stride = cairo_format_stride_for_width(CAIRO_FORMAT_RGB24, tw);
    size_t rows = TILE_BYTES / (size_t)stride;
    int th = rows < 1 ? 1 : rows > (size_t)img->height ? img->height : (int)rows;
    cairo_surface_t *surf = cairo_image_surface_create(CAIRO_FORMAT_RGB24, tw, th);
    cairo_status_t cs = cairo_surface_status(surf);
    if (cs != CAIRO_STATUS_SUCCESS) {
        cairo_surface_destroy(surf);
        return hadm_fail(err, HADM_ERR_NOMEM, "annotate: cannot make a %dx%d drawing surface: %s", tw, th,
                         cairo_status_to_string(cs));
    }
    annotate_style st = annotate_style_for(img->width, img->height);
    uint8_t *px = cairo_image_surface_get_data(surf);
    for (int y0 = 0; y0 < img->height && cs == CAIRO_STATUS_SUCCESS; y0 += th)
        for (int x0 = 0; x0 < img->width && cs == CAIRO_STATUS_SUCCESS; x0 += tw) {
            tile t = {x0, y0, img->width - x0 < tw ? img->width - x0 : tw, img->height - y0 < th ? img->height - y0 : th};
            if (!tile_touched(&t, it, n))
                continue;
            cairo_surface_flush(surf);
            rgb_to_tile(img, &t, px, stride);
            cairo_surface_mark_dirty(surf);
            cs = draw_tile(surf, &t, it, n, &st);
            cairo_surface_flush(surf);
            tile_to_rgb(img, &t, px, stride);
        }
    if (cs == CAIRO_STATUS_SUCCESS)
        cs = cairo_surface_status(surf);
    cairo_surface_destroy(surf);
    if (cs != CAIRO_STATUS_SUCCESS)
        return hadm_fail(err, HADM_ERR_INTERNAL, "annotate: %s", cairo_status_to_string(cs));
    return HADM_OK;
}

hadm_status annotate_draw(hadm_image *img, const hadm_result *local, const hadm_result *global, hadm_error *err)
{
    if (!img || !img->rgb || img->width <= 0 || img->height <= 0)
        return hadm_fail(err, HADM_ERR_ARG, "annotate: empty image");
    annotate_item *items = NULL;
    int n = 0;
    hadm_status s = annotate_layout(img->width, img->height, local, global, &items, &n, err);
    if (!s && n > 0)
        s = draw_items(img, items, n, err);
    free(items);
    return s;
}

hadm_status annotate_encode(hadm_image *img, const hadm_result *local, const hadm_result *global,
                            image_format want, uint8_t **out, size_t *len, image_format *used, hadm_error *err)
{
    *out = NULL;
    *len = 0;
    hadm_status s = annotate_draw(img, local, global, err);
    if (s)
        return s;
    if (want == IMAGE_JPEG && (img->width > JPEG_MAX_SIDE || img->height > JPEG_MAX_SIDE))
        want = IMAGE_PNG;
    *used = want;
    return image_encode(img, want, 0, out, len, err);
}
