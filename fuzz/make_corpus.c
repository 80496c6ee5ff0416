/* Writes the binary seed inputs of fuzz/corpus/ (images, EXIF blobs, a micro
 * model and plain safetensors files): `fuzz_make_corpus SRC.jpg OUTDIR`,
 * where SRC is any photo (the seeds were made from the golden case
 * landscape_640x427.jpg). The text seeds (requests, base64) come from
 * tools/fuzz_corpus.py. Built with the fuzz targets; not needed to run them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h> /* after stdio.h: it uses FILE and size_t */
#include <spng.h>
#include <webp/encode.h>

#include "engine/config.h"
#include "engine/synth.h"
#include "hadm.h"
#include "io/safetensors.h"

#define W 40
#define H 27

static const char *OUT;

static void save(const char *dir, const char *name, const void *p, size_t n)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s/%s", OUT, dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n || fclose(f)) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(1);
    }
}

/* TIFF with IFD0 = {Orientation: SHORT o}, optionally behind "Exif\0\0". */
static size_t exif_blob(uint8_t *b, int orientation, int motorola, int header)
{
    size_t n = 0;
    if (header)
        memcpy(b, "Exif\0\0", 6), n = 6;
    uint8_t tiff[26] = {0};
    memcpy(tiff, motorola ? "MM\0*\0\0\0\x08" : "II*\0\x08\0\0\0", 8);
    tiff[motorola ? 9 : 8] = 1;                            /* one entry */
    tiff[10] = motorola ? 0x01 : 0x12, tiff[11] = motorola ? 0x12 : 0x01; /* tag 274 */
    tiff[motorola ? 13 : 12] = 3;                          /* SHORT */
    tiff[motorola ? 17 : 14] = 1;                          /* count 1 */
    tiff[motorola ? 19 : 18] = (uint8_t)orientation;
    memcpy(b + n, tiff, sizeof tiff);
    return n + sizeof tiff;
}

static void jpeg(const char *name, const uint8_t *rgb, int comps, J_COLOR_SPACE cs, int progressive,
                 const uint8_t *app1, size_t app1_len)
{
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr e;
    c.err = jpeg_std_error(&e);
    jpeg_create_compress(&c);
    unsigned char *buf = NULL;
    unsigned long len = 0;
    jpeg_mem_dest(&c, &buf, &len);
    c.image_width = W, c.image_height = H, c.input_components = comps, c.in_color_space = cs;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, 70, TRUE);
    if (progressive)
        jpeg_simple_progression(&c);
    else
        c.restart_interval = 2;
    jpeg_start_compress(&c, TRUE);
    if (app1)
        jpeg_write_marker(&c, JPEG_APP0 + 1, app1, (unsigned)app1_len);
    uint8_t row[W * 4];
    while (c.next_scanline < H) {
        for (int x = 0; x < W; x++)
            for (int k = 0; k < comps; k++)
                row[x * comps + k] = rgb[(c.next_scanline * W + x) * 3 + (k < 3 ? k : 0)];
        JSAMPROW r = row;
        jpeg_write_scanlines(&c, &r, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    save("image", name, buf, len);
    free(buf);
}

static void png(const char *name, int color, int depth, const uint8_t *rgb, const uint8_t *exif, size_t exif_len)
{
    int ch = color == 0 || color == 3 ? 1 : color == 4 ? 2 : color == 2 ? 3 : 4;
    size_t stride = ((size_t)W * ch * depth + 7) / 8, len = stride * H;
    uint8_t *raw = calloc(len, 1);
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            for (int k = 0; k < ch; k++) {
                unsigned v = rgb[(y * W + x) * 3 + k % 3] >> (depth < 8 ? 8 - depth : 0);
                size_t bit = ((size_t)x * ch + k) * depth;
                uint8_t *p = raw + y * stride + bit / 8;
                if (depth == 16)
                    p[0] = (uint8_t)v, p[1] = (uint8_t)(v * 7);
                else if (depth == 8)
                    p[0] = (uint8_t)v;
                else
                    p[0] |= (uint8_t)(v << (8 - depth - bit % 8));
            }
    spng_ctx *ctx = spng_ctx_new(SPNG_CTX_ENCODER);
    spng_set_option(ctx, SPNG_ENCODE_TO_BUFFER, 1);
    struct spng_ihdr ihdr = {W, H, (uint8_t)depth, (uint8_t)color, 0, 0, 0};
    spng_set_ihdr(ctx, &ihdr);
    struct spng_plte plte = {.n_entries = 12};
    for (unsigned i = 0; i < plte.n_entries; i++)
        plte.entries[i] = (struct spng_plte_entry){(uint8_t)(i * 20), (uint8_t)(200 - i * 9), (uint8_t)(i * 77), 255};
    if (color == 3)
        spng_set_plte(ctx, &plte);
    struct spng_exif ex = {exif_len, (char *)exif};
    if (exif)
        spng_set_exif(ctx, &ex);
    int e = spng_encode_image(ctx, raw, len, SPNG_FMT_PNG, SPNG_ENCODE_FINALIZE);
    size_t n = 0;
    void *out = e ? NULL : spng_get_png_buffer(ctx, &n, &e);
    if (!out) {
        fprintf(stderr, "png %s failed\n", name);
        exit(1);
    }
    save("image", name, out, n);
    free(out);
    free(raw);
    spng_ctx_free(ctx);
}

static void put_le(uint8_t *p, uint32_t v, int n)
{
    for (int i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* Extended WebP: VP8X (EXIF flag) + the simple file's image chunk + EXIF. */
static void webp_with_exif(const uint8_t *simple, size_t n, const uint8_t *exif, size_t exif_len)
{
    size_t img = n - 12, ex = exif_len + (exif_len & 1);
    size_t total = 12 + 18 + img + 8 + ex;
    uint8_t *b = calloc(total, 1);
    memcpy(b, "RIFF", 4), put_le(b + 4, (uint32_t)(total - 8), 4), memcpy(b + 8, "WEBP", 4);
    memcpy(b + 12, "VP8X", 4), put_le(b + 16, 10, 4), b[20] = 0x08;
    put_le(b + 24, W - 1, 3), put_le(b + 27, H - 1, 3);
    memcpy(b + 30, simple + 12, img);
    memcpy(b + 30 + img, "EXIF", 4), put_le(b + 34 + img, (uint32_t)exif_len, 4);
    memcpy(b + 38 + img, exif, exif_len);
    save("image", "exif6.webp", b, total);
    free(b);
}

static void images(const uint8_t *rgb)
{
    uint8_t ex[64];
    size_t n = exif_blob(ex, 6, 0, 1);
    jpeg("base.jpg", rgb, 3, JCS_RGB, 0, NULL, 0);
    jpeg("progressive.jpg", rgb, 3, JCS_RGB, 1, NULL, 0);
    jpeg("grey.jpg", rgb, 1, JCS_GRAYSCALE, 0, NULL, 0);
    jpeg("cmyk.jpg", rgb, 4, JCS_CMYK, 0, NULL, 0);
    jpeg("exif6.jpg", rgb, 3, JCS_RGB, 0, ex, n);
    size_t m = exif_blob(ex, 3, 1, 0);
    png("rgb8.png", 2, 8, rgb, NULL, 0);
    png("rgba16.png", 6, 16, rgb, NULL, 0);
    png("grey16.png", 0, 16, rgb, NULL, 0);
    png("grey1.png", 0, 1, rgb, NULL, 0);
    png("ga8.png", 4, 8, rgb, NULL, 0);
    png("palette4.png", 3, 4, rgb, NULL, 0);
    png("exif3.png", 2, 8, rgb, ex, m);
    uint8_t *out = NULL;
    size_t len = WebPEncodeRGB(rgb, W, H, W * 3, 60, &out);
    save("image", "lossy.webp", out, len);
    n = exif_blob(ex, 8, 0, 0);
    webp_with_exif(out, len, ex, n);
    WebPFree(out);
    len = WebPEncodeLosslessRGB(rgb, W, H, W * 3, &out);
    save("image", "lossless.webp", out, len);
    WebPFree(out);
    for (int o = 1; o <= 8; o += 3) {
        char name[32];
        snprintf(name, sizeof name, "ii-%d.bin", o), n = exif_blob(ex, o, 0, 1), save("exif", name, ex, n);
        snprintf(name, sizeof name, "mm-%d.bin", o), n = exif_blob(ex, o, 1, 0), save("exif", name, ex, n);
    }
}

/* The smallest geometry the config accepts, through the real synth writer. */
static void micro_model(void)
{
    hadm_config c;
    hadm_error err = {0};
    if (config_default(&c, 'l', 1, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        exit(1);
    }
    c.resize_short = c.resize_max = c.square_pad = c.img_size = 64;
    c.embed_dim = 8, c.depth = 2, c.num_heads = 1, c.head_dim = 8, c.attn_scale = 0.35f;
    c.mlp_hidden = 8, c.window_size = 2, c.rope_dim = 4, c.pretrain_img_size = 32;
    memset(c.is_global, 0, sizeof c.is_global);
    c.is_global[1] = 1;
    c.fpn_channels = 4;
    for (int i = 0; i < c.rpn_convs; i++)
        c.rpn_conv_dims[i] = 4;
    for (int i = 0; i < c.box_convs; i++)
        c.box_conv_dims[i] = 4;
    for (int i = 0; i < c.box_fcs; i++)
        c.box_fc_dims[i] = 8;
    synth_model s;
    void *buf = NULL;
    size_t len = 0;
    if (synth_build(&c, 7, &s, &err) || st_writer_serialize(s.writer, &buf, &len, &err)) {
        fprintf(stderr, "micro model: %s\n", err.msg);
        exit(1);
    }
    st_file *f = NULL;
    if (st_open_buffer(buf, len, "micro", &f, &err)) {
        fprintf(stderr, "micro model does not reopen: %s\n", err.msg);
        exit(1);
    }
    st_close(f);
    save("safetensors", "micro-model.safetensors", buf, len);
    free(buf);
    synth_free(&s);
    config_free(&c);
}

static void plain_safetensors(void)
{
    st_writer *w = st_writer_new();
    hadm_error err = {0};
    static const float f[6] = {1, 2, 3, 4, 5, 6};
    static const int64_t s23[2] = {2, 3}, s6[1] = {6}, s0[1] = {0};
    st_writer_add(w, "a.weight", ST_F32, 2, s23, f, &err);
    st_writer_add(w, "b.i8", ST_I8, 1, s6, f, &err);
    st_writer_add(w, "c.bf16", ST_BF16, 1, s6, f, &err);
    st_writer_add(w, "d.empty", ST_F64, 1, s0, f, &err);
    st_writer_add(w, "e.scalar", ST_I32, 0, s0, f, &err);
    st_writer_meta(w, "format", "pt", &err);
    void *buf = NULL;
    size_t len = 0;
    if (st_writer_serialize(w, &buf, &len, &err)) {
        fprintf(stderr, "plain: %s\n", err.msg);
        exit(1);
    }
    save("safetensors", "plain.safetensors", buf, len);
    free(buf);
    st_writer_free(w);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: fuzz_make_corpus SRC.jpg OUTDIR (OUTDIR/{image,exif,safetensors} must exist)\n");
        return 2;
    }
    OUT = argv[2];
    hadm_image src;
    hadm_error err = {0};
    if (hadm_image_load(argv[1], NULL, &src, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    uint8_t rgb[W * H * 3];
    for (int y = 0; y < H; y++) /* nearest neighbour is plenty for a seed */
        for (int x = 0; x < W; x++)
            memcpy(rgb + (y * W + x) * 3, src.rgb + ((size_t)(y * src.height / H) * src.width + x * src.width / W) * 3, 3);
    hadm_image_free(&src);
    images(rgb);
    micro_model();
    plain_safetensors();
    return 0;
}
