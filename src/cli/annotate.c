/* Drawing detections and writing the annotated JPEG (see annotate.h). */
#include "cli/annotate.h"

#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jpeglib.h>

#include "util/err.h"

#define ANNOTATE_QUALITY 90

static const uint8_t LOCAL_COLOURS[][3] = {
    {255, 40, 40}, {255, 140, 0}, {255, 215, 0}, {255, 0, 160}, {200, 0, 60}, {255, 110, 110},
};
static const uint8_t GLOBAL_COLOURS[][3] = {
    {0, 120, 255}, {0, 200, 255}, {0, 220, 120}, {140, 80, 255}, {0, 255, 200}, {80, 160, 220},
};

hadm_status annotator_init(annotator *a, const char *dir, hadm_error *err)
{
    memset(a, 0, sizeof *a);
    a->dir = dir;
    struct stat st;
    if (stat(dir, &st) == 0) {
        if (!S_ISDIR(st.st_mode))
            return hadm_fail(err, HADM_ERR_IO, "--annotate %s: not a directory", dir);
        return HADM_OK;
    }
    if (mkdir(dir, 0777) != 0)
        return hadm_fail(err, HADM_ERR_IO, "--annotate %s: cannot create: %s", dir, strerror(errno));
    return HADM_OK;
}

void annotator_free(annotator *a)
{
    for (int i = 0; i < a->count; i++)
        free(a->written[i]);
    free(a->written);
    memset(a, 0, sizeof *a);
}

static void fill_rect(hadm_image *img, int x0, int y0, int x1, int y1, const uint8_t c[3])
{
    x0 = x0 < 0 ? 0 : x0;
    y0 = y0 < 0 ? 0 : y0;
    x1 = x1 >= img->width ? img->width - 1 : x1;
    y1 = y1 >= img->height ? img->height - 1 : y1;
    for (int y = y0; y <= y1; y++)
        for (int x = x0; x <= x1; x++)
            memcpy(img->rgb + ((size_t)y * (size_t)img->width + (size_t)x) * 3, c, 3);
}

/* Clamps a float pixel coordinate into [0, limit-1] without overflowing int. */
static int clamp_coord(float v, int limit)
{
    if (!(v > 0))
        return 0;
    if (v >= (float)(limit - 1))
        return limit - 1;
    return (int)v;
}

static void draw_box(hadm_image *img, const hadm_detection *d, int thick, const uint8_t c[3])
{
    int x0 = clamp_coord(floorf(d->x1), img->width), x1 = clamp_coord(ceilf(d->x2) - 1, img->width);
    int y0 = clamp_coord(floorf(d->y1), img->height), y1 = clamp_coord(ceilf(d->y2) - 1, img->height);
    if (x1 < x0 || y1 < y0)
        return;
    fill_rect(img, x0, y0, x1, y0 + thick - 1, c);
    fill_rect(img, x0, y1 - thick + 1, x1, y1, c);
    fill_rect(img, x0, y0, x0 + thick - 1, y1, c);
    fill_rect(img, x1 - thick + 1, y0, x1, y1, c);
}

static void draw_result(hadm_image *img, const hadm_result *r, const uint8_t (*pal)[3], int npal,
                        int thick)
{
    /* Lowest scores first so the most confident boxes end up on top. */
    for (int i = r ? r->count - 1 : -1; i >= 0; i--) {
        int k = r->dets[i].class_id;
        draw_box(img, &r->dets[i], thick, pal[(k < 0 ? -k : k) % npal]);
    }
}

typedef struct {
    struct jpeg_error_mgr mgr;
    jmp_buf jump;
    char msg[JMSG_LENGTH_MAX];
} jpeg_err_jump;

static void on_jpeg_error(j_common_ptr ci)
{
    jpeg_err_jump *e = (jpeg_err_jump *)ci->err;
    ci->err->format_message(ci, e->msg);
    longjmp(e->jump, 1);
}

/* volatile: f and ok are read after a longjmp back into this frame. */
static hadm_status write_jpeg(const char *path, const hadm_image *img, hadm_error *err)
{
    FILE *volatile f = fopen(path, "wb");
    if (!f)
        return hadm_fail(err, HADM_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    struct jpeg_compress_struct ci;
    jpeg_err_jump je;
    memset(&ci, 0, sizeof ci);
    ci.err = jpeg_std_error(&je.mgr);
    je.mgr.error_exit = on_jpeg_error;
    if (setjmp(je.jump)) {
        jpeg_destroy_compress(&ci);
        fclose(f);
        remove(path);
        return hadm_fail(err, HADM_ERR_IO, "%s: JPEG encoder: %s", path, je.msg);
    }
    jpeg_create_compress(&ci);
    jpeg_stdio_dest(&ci, f);
    ci.image_width = (JDIMENSION)img->width;
    ci.image_height = (JDIMENSION)img->height;
    ci.input_components = 3;
    ci.in_color_space = JCS_RGB;
    jpeg_set_defaults(&ci);
    jpeg_set_quality(&ci, ANNOTATE_QUALITY, TRUE);
    jpeg_start_compress(&ci, TRUE);
    while (ci.next_scanline < ci.image_height) {
        JSAMPROW row = img->rgb + (size_t)ci.next_scanline * (size_t)img->width * 3;
        jpeg_write_scanlines(&ci, &row, 1);
    }
    jpeg_finish_compress(&ci);
    jpeg_destroy_compress(&ci);
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) {
        remove(path);
        return hadm_fail(err, HADM_ERR_IO, "%s: write error", path);
    }
    return HADM_OK;
}

static int name_used(const annotator *a, const char *name)
{
    for (int i = 0; i < a->count; i++)
        if (!strcmp(a->written[i], name))
            return 1;
    return 0;
}

/* OUTDIR/<stem>.jpg, or <stem>-N.jpg when this run already wrote <stem>.jpg. */
static hadm_status output_path(annotator *a, const char *image_path, char **out, hadm_error *err)
{
    const char *base = strrchr(image_path, '/');
    base = base ? base + 1 : image_path;
    const char *dot = strrchr(base, '.');
    int stem = (int)(dot && dot != base ? (size_t)(dot - base) : strlen(base));
    char name[512];
    snprintf(name, sizeof name, "%.*s.jpg", stem > 400 ? 400 : stem, base);
    for (int n = 2; name_used(a, name); n++)
        snprintf(name, sizeof name, "%.*s-%d.jpg", stem > 400 ? 400 : stem, base, n);
    if (a->count == a->cap) {
        int cap = a->cap ? 2 * a->cap : 16;
        char **w = realloc(a->written, (size_t)cap * sizeof *w);
        if (!w)
            return hadm_fail(err, HADM_ERR_NOMEM, "out of memory");
        a->written = w;
        a->cap = cap;
    }
    size_t len = strlen(a->dir) + strlen(name) + 2;
    char *path = malloc(len), *copy = strdup(name);
    if (!path || !copy) {
        free(path);
        free(copy);
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory");
    }
    snprintf(path, len, "%s/%s", a->dir, name);
    a->written[a->count++] = copy;
    *out = path;
    return HADM_OK;
}

hadm_status annotator_write(annotator *a, const char *image_path, const hadm_image *img,
                            const hadm_result *local, const hadm_result *global, hadm_error *err)
{
    if (!img || !img->rgb || img->width <= 0 || img->height <= 0)
        return hadm_fail(err, HADM_ERR_ARG, "annotate: empty image");
    size_t bytes = (size_t)img->width * (size_t)img->height * 3;
    hadm_image copy = {img->width, img->height, malloc(bytes)};
    if (!copy.rgb)
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory");
    memcpy(copy.rgb, img->rgb, bytes);
    int side = img->width > img->height ? img->width : img->height;
    int thick = side / 400 > 2 ? side / 400 : 2;
    draw_result(&copy, global, GLOBAL_COLOURS, (int)(sizeof GLOBAL_COLOURS / 3), thick);
    draw_result(&copy, local, LOCAL_COLOURS, (int)(sizeof LOCAL_COLOURS / 3), thick);
    char *path = NULL;
    hadm_status s = output_path(a, image_path, &path, err);
    if (!s)
        s = write_jpeg(path, &copy, err);
    free(path);
    free(copy.rgb);
    return s;
}
