/* Annotated images: the drawing module (io/annotate.c) on synthetic images
 * and hand-made detections, the encoders, and `hadm detect --annotate` on
 * every golden case and a synthetic image.
 *
 * Every pixel is checked against the documented geometry (io/annotate.h):
 * box outlines are computed here from the detections (not taken from the
 * code under test) and must hold the box colour exactly; label rectangles
 * come from annotate_layout, whose placement is checked against the rules;
 * every other pixel must be unchanged (PNG, so exactly). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <cjson/cJSON.h>

#include "io/annotate.h"
#include "io/image_encode.h"
#include "server/annotate_reply.h"
#include "server/encode.h"
#include "testutil.h"

/* ---- the checker -------------------------------------------------------------------- */

static int edge(float v, int limit)
{
    if (!(v > 0))
        return 0;
    return v >= (float)limit ? limit : (int)lroundf(v);
}

/* The box as the documented rule puts it on pixels. */
static annotate_rect expected_box(const hadm_detection *d, int w, int h)
{
    annotate_rect r = {edge(d->x1, w), edge(d->y1, h), edge(d->x2, w), edge(d->y2, h)};
    if (r.x1 <= r.x0 || r.y1 <= r.y0)
        r.x1 = r.x0, r.y1 = r.y0;
    return r;
}

/* The detections in drawing order: global then local, lowest score first. */
static int drawing_order(const hadm_result *l, const hadm_result *g, const hadm_detection **out, int *is_global)
{
    int n = 0;
    const hadm_result *order[2] = {g, l};
    for (int m = 0; m < 2; m++)
        for (int i = order[m] ? order[m]->count - 1 : -1; i >= 0; i--) {
            is_global[n] = m == 0;
            out[n++] = &order[m]->dets[i];
        }
    return n;
}

static void check_label_place(const char *what, const annotate_item *it, int w, int h, double font)
{
    const annotate_rect *L = &it->label, *b = &it->box;
    int lw = L->x1 - L->x0, lh = L->y1 - L->y0;
    if (b->x1 == b->x0) { /* nothing of the box in the image: no label either */
        CHECK(lw == 0 || lh == 0, "%s: label for an empty box", what);
        return;
    }
    CHECK(L->x0 >= 0 && L->y0 >= 0 && L->x1 <= w && L->y1 <= h && lw > 0 && lh > 0,
          "%s: label [%d,%d)-[%d,%d) outside the %dx%d image", what, L->x0, L->x1, L->y0, L->y1, w, h);
    if (lh >= h || lw >= w)
        return; /* clipped to a tiny image: placement rules cannot hold */
    CHECK(lh >= font && lh <= 2.2 * font, "%s: label height %d for font %.1f", what, lh, font);
    CHECK(lw >= 0.3 * font * (double)strlen(it->text), "%s: label width %d too short for '%s'", what, lw,
          it->text);
    int want_y = b->y0 >= lh ? b->y0 - lh : b->y0 + lh <= h ? b->y0 : h - lh;
    int want_x = b->x0 + lw <= w ? b->x0 : w - lw;
    CHECK(L->y0 == want_y && L->x0 == want_x, "%s: label at (%d,%d), expected (%d,%d) for box (%d,%d)", what,
          L->x0, L->y0, want_x, want_y, b->x0, b->y0);
}

/* Owner of each pixel: -1 untouched, 2i outline of item i, 2i+1 its label. */
static int *owner_map(const annotate_item *it, int n, int w, int h, int lw)
{
    int *own = malloc((size_t)w * (size_t)h * sizeof *own);
    if (!own)
        return NULL;
    for (size_t k = 0; k < (size_t)w * (size_t)h; k++)
        own[k] = -1;
    for (int i = 0; i < n; i++) {
        const annotate_rect *b = &it[i].box;
        for (int y = b->y0; y < b->y1; y++)
            for (int x = b->x0; x < b->x1; x++) {
                int inner = x >= b->x0 + lw && x < b->x1 - lw && y >= b->y0 + lw && y < b->y1 - lw;
                if (!inner || b->x1 - b->x0 <= 2 * lw || b->y1 - b->y0 <= 2 * lw)
                    own[(size_t)y * (size_t)w + (size_t)x] = 2 * i;
            }
    }
    for (int i = 0; i < n; i++) {
        const annotate_rect *L = &it[i].label;
        for (int y = L->y0; y < L->y1; y++)
            for (int x = L->x0; x < L->x1; x++)
                own[(size_t)y * (size_t)w + (size_t)x] = 2 * i + 1;
    }
    return own;
}

/* A label pixel: the label colour blended towards black or towards white. */
static int label_pixel_ok(const uint8_t *p, const uint8_t *c)
{
    int dark = 1, light = 1;
    for (int k = 0; k < 3; k++) {
        dark &= p[k] <= c[k] + 1;
        light &= p[k] + 1 >= c[k];
    }
    return dark || light;
}

static void check_pixels(const char *what, const hadm_image *orig, const hadm_image *out, const annotate_item *it,
                         int n, const int *own)
{
    int w = orig->width, h = orig->height, bad_same = 0, bad_ring = 0, bad_label = 0;
    int *ink = calloc((size_t)n + 1, sizeof *ink), *area = calloc((size_t)n + 1, sizeof *area);
    for (size_t k = 0; ink && area && k < (size_t)w * (size_t)h; k++) {
        const uint8_t *p = out->rgb + 3 * k, *o = orig->rgb + 3 * k;
        int ow = own[k];
        if (ow < 0) {
            bad_same += memcmp(p, o, 3) != 0;
        } else if (ow % 2 == 0) {
            bad_ring += memcmp(p, it[ow / 2].colour, 3) != 0;
        } else {
            const uint8_t *c = it[ow / 2].colour;
            bad_label += !label_pixel_ok(p, c);
            area[ow / 2]++;
            ink[ow / 2] += abs(p[0] - c[0]) + abs(p[1] - c[1]) + abs(p[2] - c[2]) > 150;
        }
    }
    CHECK(bad_same == 0, "%s: %d pixels away from boxes and labels changed", what, bad_same);
    CHECK(bad_ring == 0, "%s: %d outline pixels not in their box colour", what, bad_ring);
    CHECK(bad_label == 0, "%s: %d label pixels not a blend of label colour and ink", what, bad_label);
    for (int i = 0; ink && area && i < n; i++) {
        const annotate_rect *L = &it[i].label;
        int full = (L->x1 - L->x0) * (L->y1 - L->y0);
        if (area[i] * 10 >= full * 9) /* not mostly hidden under later labels */
            CHECK(ink[i] * 60 >= full, "%s: label '%s' shows no text (%d ink pixels of %d)", what, it[i].text,
                  ink[i], full);
    }
    free(ink);
    free(area);
}

/* out must be orig with the detections drawn as documented. */
static void check_annotated(const char *what, const hadm_image *orig, const hadm_image *out,
                            const hadm_result *local, const hadm_result *global)
{
    if (!out->rgb || out->width != orig->width || out->height != orig->height) {
        CHECK(0, "%s: annotated image is %dx%d, expected %dx%d", what, out->width, out->height, orig->width,
              orig->height);
        return;
    }
    int w = orig->width, h = orig->height, n = 0;
    annotate_item *it = NULL;
    hadm_error err = {0};
    CHECK(annotate_layout(w, h, local, global, &it, &n, &err) == HADM_OK, "%s: layout: %s", what, err.msg);
    int total = (local ? local->count : 0) + (global ? global->count : 0);
    const hadm_detection **dets = calloc((size_t)total + 1, sizeof *dets);
    int *is_global = calloc((size_t)total + 1, sizeof *is_global);
    CHECK(n == total && dets && is_global, "%s: %d layout items for %d detections", what, n, total);
    if (n == total && dets && is_global) {
        drawing_order(local, global, dets, is_global);
        annotate_style st = annotate_style_for(w, h);
        for (int i = 0; i < n; i++) {
            annotate_rect b = expected_box(dets[i], w, h);
            uint8_t c[3];
            annotate_colour(is_global[i], dets[i]->class_id, c);
            CHECK(!memcmp(&b, &it[i].box, sizeof b) && !memcmp(c, it[i].colour, 3),
                  "%s: item %d box or colour differs from the detection", what, i);
            check_label_place(what, &it[i], w, h, st.font_size);
        }
        int *own = owner_map(it, n, w, h, st.line_width);
        CHECK(own != NULL, "out of memory");
        if (own)
            check_pixels(what, orig, out, it, n, own);
        free(own);
    }
    free(dets);
    free(is_global);
    free(it);
}

/* ---- synthetic images and detections -------------------------------------------------- */

static hadm_image make_image(int w, int h, unsigned seed)
{
    hadm_image img = {w, h, malloc((size_t)w * (size_t)h * 3)};
    for (size_t k = 0; img.rgb && k < (size_t)w * (size_t)h * 3; k++) {
        seed = seed * 1103515245u + 12345u;
        size_t x = k / 3 % (size_t)w, y = k / 3 / (size_t)w;
        img.rgb[k] = (uint8_t)((x * 255 / (size_t)w + y * 128 / (size_t)h + (seed >> 28)) & 255);
    }
    return img;
}

static hadm_image copy_image(const hadm_image *a)
{
    size_t n = (size_t)a->width * (size_t)a->height * 3;
    hadm_image c = {a->width, a->height, malloc(n)};
    if (c.rgb)
        memcpy(c.rgb, a->rgb, n);
    return c;
}

static hadm_detection det(float x1, float y1, float x2, float y2, float score, int cls, const char *name)
{
    return (hadm_detection){x1, y1, x2, y2, score, cls, name};
}

static void draw_and_check(const char *what, int w, int h, const hadm_result *l, const hadm_result *g)
{
    hadm_image orig = make_image(w, h, (unsigned)(w * 31 + h));
    hadm_image out = copy_image(&orig);
    hadm_error err = {0};
    CHECK(orig.rgb && out.rgb && annotate_draw(&out, l, g, &err) == HADM_OK, "%s: draw: %s", what, err.msg);
    if (orig.rgb && out.rgb)
        check_annotated(what, &orig, &out, l, g);
    free(orig.rgb);
    free(out.rgb);
}

/* Boxes at every awkward place: image edges, across the strips cairo draws
 * (8 MiB of rows: 524 rows at 4000 pixels wide), tiny, inverted, NaN, out
 * of the image, odd class ids and names. */
static void test_draw_edge_cases(void)
{
    hadm_detection ld[] = {
        det(100.4f, 0.f, 400.6f, 300.2f, 0.91f, 4, "hand"),        /* at the top: label inside */
        det(3700.f, 500.f, 4000.f, 560.f, 0.8f, 0, "face"),        /* right edge, across a strip */
        det(2000.f, 1040.f, 2003.f, 1043.f, 0.5f, 2, "arm"),       /* smaller than two outlines */
        det(-50.f, 900.f, 120.f, 1300.f, 0.4f, 1, "torso"),        /* partly outside */
        det(NAN, 10.f, 50.f, NAN, 0.3f, 3, "leg"),
        det(500.f, 500.f, 400.f, 400.f, 0.2f, 5, "feet"),          /* inverted: nothing but a label */
        det(1000.f, 1100.f, 1500.f, 1200.f, 1.5f, 99, NULL),       /* bottom: label above, no name */
    };
    hadm_detection gd[] = {
        det(50.f, 40.f, 3950.f, 1150.f, 0.7f, 7, "human with extra face"),
        det(1200.f, 300.f, 2600.f, 800.f, 0.6f, -3, "human missing arm"),
    };
    hadm_result l = {.image_width = 4000, .image_height = 1200, .count = 7, .dets = ld};
    hadm_result g = {.image_width = 4000, .image_height = 1200, .count = 2, .dets = gd};
    draw_and_check("edge cases 4000x1200", 4000, 1200, &l, &g);
    draw_and_check("local only", 4000, 1200, &l, NULL);

    hadm_detection small[] = {det(5.f, 5.f, 150.f, 190.f, 0.6f, 1, "human missing leg")};
    hadm_result s = {.count = 1, .dets = small};
    draw_and_check("200x200", 200, 200, NULL, &s);
    draw_and_check("40x30, a label wider than the image", 40, 30, NULL, &s);
    hadm_detection pano[] = {det(7900.f, 100.f, 8000.f, 300.f, 0.6f, 4, "hand"),
                             det(10.f, 0.f, 90.f, 80.f, 0.5f, 0, "face")};
    hadm_result p = {.count = 2, .dets = pano};
    draw_and_check("8000x300 panorama", 8000, 300, &p, NULL);

    /* wider than a cairo surface may be (32767): drawn in tiles of 8192 */
    hadm_detection wide[] = {det(32700.f, 5.f, 32900.f, 38.f, 0.6f, 2, "arm"),
                             det(8000.f, 20.f, 8400.f, 40.f, 0.5f, 1, "torso")};
    hadm_result wr = {.count = 2, .dets = wide};
    draw_and_check("33000x40, boxes across tiles", 33000, 40, &wr, NULL);

    /* class names from a model file: invalid UTF-8 must not stop cairo */
    hadm_detection names[] = {det(10.f, 60.f, 150.f, 190.f, 0.5f, 1, "bad\xff\xfe\tname"),
                              det(160.f, 60.f, 300.f, 190.f, 0.25f, 2, "caf\xc3\xa9")};
    hadm_result nr = {.count = 2, .dets = names};
    draw_and_check("class names that are not UTF-8", 320, 200, &nr, NULL);
    annotate_item *it = NULL;
    int n = 0;
    annotate_layout(320, 200, &nr, NULL, &it, &n, NULL);
    CHECK(n == 2 && !strcmp(it[0].text, "caf\xc3\xa9 0.25") && !strcmp(it[1].text, "bad???name 0.50"),
          "label texts: '%s', '%s'", n == 2 ? it[0].text : "", n == 2 ? it[1].text : "");
    free(it);

    hadm_image img = make_image(64, 48, 7), ref = copy_image(&img);
    hadm_error err = {0};
    CHECK(annotate_draw(&img, NULL, NULL, &err) == HADM_OK && !memcmp(img.rgb, ref.rgb, 64 * 48 * 3),
          "no detections must leave the image as it was: %s", err.msg);
    free(img.rgb);
    free(ref.rgb);
}

static void test_style(void)
{
    annotate_style a = annotate_style_for(200, 200), b = annotate_style_for(2048, 2048);
    annotate_style c = annotate_style_for(8000, 8000), p = annotate_style_for(8000, 200);
    CHECK(a.font_size >= 12 && a.line_width >= 2, "200px: font %.1f, line %d", a.font_size, a.line_width);
    CHECK(b.font_size > a.font_size && c.font_size > b.font_size && c.line_width > b.line_width,
          "sizes must grow with the image: %.1f %.1f %.1f", a.font_size, b.font_size, c.font_size);
    /* readable when 8000 px is shown 1000 px wide: at least 12 px on screen */
    CHECK(c.font_size / 8 >= 12 && c.line_width / 8.0 >= 1.5, "8000px: font %.1f, line %d", c.font_size,
          c.line_width);
    CHECK(p.font_size <= 200 * 0.25, "panorama 8000x200: font %.1f", p.font_size);
    uint8_t l0[3], g0[3];
    annotate_colour(0, 0, l0);
    annotate_colour(1, 0, g0);
    CHECK(l0[0] > l0[2] && g0[2] > g0[0], "local warm, global cool");
}

/* ---- encoders ---------------------------------------------------------------------------- */

static void test_encode(void)
{
    hadm_image img = make_image(97, 61, 3), back = {0};
    uint8_t *buf = NULL;
    size_t len = 0;
    hadm_error err = {0};
    CHECK(image_encode(&img, IMAGE_PNG, 0, &buf, &len, &err) == HADM_OK && len > 8 && !memcmp(buf, "\x89PNG", 4),
          "PNG encode: %s", err.msg);
    CHECK(buf && hadm_image_decode(buf, len, NULL, &back, &err) == HADM_OK && back.width == 97 &&
              back.height == 61 && !memcmp(back.rgb, img.rgb, 97 * 61 * 3),
          "PNG round trip is exact: %s", err.msg);
    free(buf);
    hadm_image_free(&back);
    CHECK(image_encode(&img, IMAGE_JPEG, 95, &buf, &len, &err) == HADM_OK && len > 2 && buf[0] == 0xFF &&
              buf[1] == 0xD8,
          "JPEG encode: %s", err.msg);
    double diff = 1e9;
    if (buf && hadm_image_decode(buf, len, NULL, &back, &err) == HADM_OK && back.width == 97) {
        diff = 0;
        for (size_t k = 0; k < 97 * 61 * 3; k++)
            diff += abs(back.rgb[k] - img.rgb[k]);
        diff /= 97 * 61 * 3;
    }
    CHECK(diff < 10, "JPEG round trip mean error %.2f", diff); /* noisy image: a sanity bound */
    free(buf);
    hadm_image_free(&back);
    free(img.rgb);

    /* JPEG cannot hold 65501 pixels a side: PNG instead, said so */
    hadm_image wide = make_image(65501, 2, 5);
    image_format used = IMAGE_JPEG;
    CHECK(annotate_encode(&wide, NULL, NULL, IMAGE_JPEG, &buf, &len, &used, &err) == HADM_OK && used == IMAGE_PNG,
          "65501 px wide: %s", err.msg);
    free(buf);
    free(wide.rgb);
    image_format f;
    CHECK(!image_format_parse("PNG", &f) && f == IMAGE_PNG && !image_format_parse("jpg", &f) && f == IMAGE_JPEG &&
              image_format_parse("gif", &f) && image_format_parse(NULL, &f),
          "format names");
}

static void test_base64(void)
{
    uint8_t data[64];
    for (int i = 0; i < 64; i++)
        data[i] = (uint8_t)(i * 73 + 11);
    for (size_t n = 0; n <= 64; n++) {
        char *s = base64_encode(data, n);
        size_t back_len = 0;
        uint8_t *back = s ? base64_decode(s, strlen(s), &back_len) : NULL;
        CHECK(s && strlen(s) == (n + 2) / 3 * 4 && back && back_len == n && !memcmp(back, data, n),
              "base64 round trip of %zu bytes", n);
        free(s);
        free(back);
    }
    char *s = base64_encode((const uint8_t *)"hadm", 4);
    CHECK(s && !strcmp(s, "aGFkbQ=="), "base64 of 'hadm': %s", s ? s : "(null)");
    free(s);
}

static void test_accept(void)
{
    static const struct {
        const char *accept;
        int image;
        image_format format;
    } CASES[] = {
        {"image/png", 1, IMAGE_PNG},
        {"image/jpeg", 1, IMAGE_JPEG},
        {"image/*", 1, IMAGE_JPEG},
        {"image/*;q=0.9, image/png", 1, IMAGE_PNG},
        {" IMAGE/PNG ; q=0.8 , application/json;q=0.5", 1, IMAGE_PNG},
        {"image/png;q=0.5, application/json", 0, IMAGE_JPEG},
        {"*/*", 0, IMAGE_JPEG},
        {"application/json", 0, IMAGE_JPEG},
        {"image/webp", 0, IMAGE_JPEG},
        {"", 0, IMAGE_JPEG},
        {"image/png;q=0", 0, IMAGE_JPEG},
        {"image/png;q=bogus, application/json;q=0.9", 1, IMAGE_PNG},
        /* a browser navigating: images only through the any-type range, like JSON */
        {"text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8", 0, IMAGE_JPEG},
        {"image/jpeg;q=0.4, image/png;q=0.6, */*;q=0.1", 1, IMAGE_PNG},
        {",,;;,image/", 0, IMAGE_JPEG},
    };
    for (size_t i = 0; i < sizeof CASES / sizeof *CASES; i++) {
        image_format f = IMAGE_JPEG;
        int got = annot_accept_image(CASES[i].accept, &f);
        CHECK(got == CASES[i].image && (!got || f == CASES[i].format), "Accept '%s': image %d format %d",
              CASES[i].accept, got, (int)f);
    }
    image_format f;
    CHECK(!annot_accept_image(NULL, &f), "no Accept header: JSON");
}

/* ---- hadm detect --annotate --------------------------------------------------------------- */

static char synth_path[600];

static hadm_result *result_from_json(const cJSON *list, int w, int h)
{
    int n = cJSON_GetArraySize(list);
    hadm_result *r = calloc(1, sizeof *r);
    if (!r || !(r->dets = calloc((size_t)n + 1, sizeof *r->dets))) {
        free(r);
        return NULL;
    }
    r->image_width = w;
    r->image_height = h;
    const cJSON *d;
    cJSON_ArrayForEach(d, list)
    {
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(d, "bbox");
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(d, "class_name");
        float v[4] = {0};
        for (int k = 0; k < 4 && cJSON_GetArraySize(b) == 4; k++)
            v[k] = (float)cJSON_GetArrayItem(b, k)->valuedouble;
        r->dets[r->count++] = det(v[0], v[1], v[2], v[3],
                                  (float)cJSON_GetObjectItemCaseSensitive(d, "confidence")->valuedouble,
                                  cJSON_GetObjectItemCaseSensitive(d, "class_id")->valueint,
                                  cJSON_IsString(name) ? name->valuestring : NULL);
    }
    return r;
}

static void free_result(hadm_result *r)
{
    if (r)
        free(r->dets);
    free(r);
}

static void check_cli_record(const char *case_name, const cJSON *rec, const char *annotated, int need_boxes)
{
    const cJSON *path = cJSON_GetObjectItemCaseSensitive(rec, "image");
    hadm_image orig = {0}, out = {0};
    hadm_error err = {0};
    CHECK(cJSON_IsString(path) && hadm_image_load(path->valuestring, NULL, &orig, &err) == HADM_OK,
          "%s: cannot read the input back: %s", case_name, err.msg);
    CHECK(hadm_image_load(annotated, NULL, &out, &err) == HADM_OK, "%s: %s", annotated, err.msg);
    hadm_result *l = result_from_json(cJSON_GetObjectItemCaseSensitive(rec, "local_detections"), orig.width,
                                      orig.height);
    hadm_result *g = result_from_json(cJSON_GetObjectItemCaseSensitive(rec, "global_detections"), orig.width,
                                      orig.height);
    if (orig.rgb && out.rgb && l && g) {
        char what[700];
        snprintf(what, sizeof what, "%s: %s", case_name, annotated);
        check_annotated(what, &orig, &out, l, g);
        CHECK(!need_boxes || (l->count > 0 && g->count > 0), "%s: the check needs local and global boxes", what);
        printf("  %s: %d local + %d global boxes checked pixel by pixel\n", what, l->count, g->count);
    }
    free_result(l);
    free_result(g);
    hadm_image_free(&orig);
    hadm_image_free(&out);
}

/* One run of both tiny golden models (model runs dominate the cost) on a
 * golden photograph and on the synthetic image. */
static void test_cli(void)
{
    const char *bin = getenv("HADM_BIN"), *gold = test_golden_dir();
    if (!bin || strchr(bin, '\'') || strchr(gold, '\'')) {
        CHECK(0, "needs $HADM_BIN, and paths without quotes");
        return;
    }
    char out_dir[700], cmd[8192], json_path[800], annotated[1200];
    snprintf(out_dir, sizeof out_dir, "%s/annotated", test_tmpdir());
    snprintf(json_path, sizeof json_path, "%s/out.json", test_tmpdir());
    snprintf(cmd, sizeof cmd,
             "'%s' detect --local '%s/tiny-local/model.safetensors' --global '%s/tiny-global/model.safetensors' "
             "--annotate '%s' --annotate-format png --format json '%s/tiny-global/landscape_640x427.jpg' '%s' >'%s'",
             bin, gold, gold, out_dir, gold, synth_path, json_path);
    CHECK(system(cmd) == 0, "failed: %s", cmd);
    char *text = (char *)test_read_file(json_path, NULL);
    cJSON *arr = text ? cJSON_Parse(text) : NULL;
    CHECK(cJSON_GetArraySize(arr) == 2, "expected 2 records in %s", json_path);
    if (cJSON_GetArraySize(arr) == 2) {
        snprintf(annotated, sizeof annotated, "%s/landscape_640x427.png", out_dir);
        check_cli_record("golden landscape_640x427.jpg", cJSON_GetArrayItem(arr, 0), annotated, 1);
        snprintf(annotated, sizeof annotated, "%s/synth.png", out_dir);
        check_cli_record("synthetic", cJSON_GetArrayItem(arr, 1), annotated, 0);
    }
    cJSON_Delete(arr);
    free(text);
}

static int write_synthetic_png(void)
{
    hadm_image img = make_image(300, 200, 11);
    uint8_t *buf = NULL;
    size_t len = 0;
    hadm_error err = {0};
    snprintf(synth_path, sizeof synth_path, "%s/synth.png", test_tmpdir());
    FILE *f = NULL;
    int ok = img.rgb && image_encode(&img, IMAGE_PNG, 0, &buf, &len, &err) == HADM_OK &&
             (f = fopen(synth_path, "wb")) && fwrite(buf, 1, len, f) == len;
    if (f && fclose(f) != 0)
        ok = 0;
    free(buf);
    free(img.rgb);
    CHECK(ok, "cannot write %s: %s", synth_path, err.msg);
    return ok;
}

static void test_cli_flags(void)
{
    const char *bin = getenv("HADM_BIN");
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "'%s' detect --annotate '%s/x' --annotate-format gif a.jpg 2>/dev/null", bin ? bin : "",
             test_tmpdir());
    int rc = system(cmd);
    CHECK(WIFEXITED(rc) && WEXITSTATUS(rc) == 2, "--annotate-format gif must be a usage error (rc %d)", rc);
    snprintf(cmd, sizeof cmd, "'%s' detect --annotate-format png a.jpg 2>/dev/null", bin ? bin : "");
    rc = system(cmd);
    CHECK(WIFEXITED(rc) && WEXITSTATUS(rc) == 2, "--annotate-format without --annotate: usage error (rc %d)", rc);
}

int main(void)
{
    test_style();
    test_draw_edge_cases();
    test_encode();
    test_base64();
    test_accept();
    test_cli_flags();
    if (write_synthetic_png())
        test_cli();
    return test_finish();
}
