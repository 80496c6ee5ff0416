/* JPEG decoding with libjpeg-turbo, reproducing PIL (spec/MODEL.md 1.1):
 *
 * - Default decompression settings (ISLOW IDCT, fancy upsampling): the
 *   same pixels as PIL's libjpeg-turbo.
 * - Like PIL's decoder, the data source *suspends* at the end of the data
 *   instead of inventing an EOI marker. A JPEG that ends early (or hits a
 *   fatal decoder error) is refused by default: a user screening images
 *   wants to know the file is damaged. With allow_truncated we do what the
 *   original does (it sets LOAD_TRUNCATED_IMAGES): keep the rows decoded so
 *   far and leave the rest black (0). A file that yields no row at all is
 *   an error either way (PIL would
 *   return an all-black image; that is useless, so we refuse it). This
 *   includes truncated progressive files, whose rows only come out once all
 *   scans have been read.
 * - 1 component -> R=G=B; 3 -> RGB; 4 (CMYK/YCCK) -> PIL's "CMYK;I" reading
 *   (Adobe inverted) followed by PIL's cmyk2rgb formula.
 * - Errors never call exit(): the error manager longjmps back here. */
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>

#include "io/image.h"
#include "util/err.h"

/* More scans than this is a decompression-time bomb, not a photo. */
#define JPEG_MAX_SCANS 1000

typedef struct {
    struct jpeg_decompress_struct cinfo;
    struct jpeg_error_mgr errmgr;
    struct jpeg_source_mgr src;
    struct jpeg_progress_mgr progress;
    jmp_buf jump;
    char msg[JMSG_LENGTH_MAX + 64];
    int created;
    int rows_done;
    int allow_truncated;
    uint8_t *cmyk_row;
} jpeg_job;

static void on_error_exit(j_common_ptr c)
{
    jpeg_job *job = c->client_data;
    c->err->format_message(c, job->msg);
    longjmp(job->jump, 1);
}

static void on_output_message(j_common_ptr c)
{
    (void)c;   /* warnings (corrupt data) are not printed, as in PIL */
}

static void on_progress(j_common_ptr c)
{
    jpeg_job *job = c->client_data;
    if (job->cinfo.input_scan_number > JPEG_MAX_SCANS) {
        snprintf(job->msg, sizeof job->msg, "more than %d scans", JPEG_MAX_SCANS);
        longjmp(job->jump, 1);
    }
}

static void src_init(j_decompress_ptr c)
{
    (void)c;
}

static boolean src_fill(j_decompress_ptr c)
{
    (void)c;
    return FALSE;   /* all data was given up front: suspend = end of data */
}

static void src_skip(j_decompress_ptr c, long n)
{
    struct jpeg_source_mgr *s = c->src;
    if (n <= 0)
        return;
    if ((size_t)n > s->bytes_in_buffer)
        n = (long)s->bytes_in_buffer;
    s->next_input_byte += n;
    s->bytes_in_buffer -= (size_t)n;
}

static void src_term(j_decompress_ptr c)
{
    (void)c;
}

/* Must be called with job->jump armed: jpeg_create_decompress can fail. */
static void job_start(jpeg_job *job, const uint8_t *b, size_t n)
{
    struct jpeg_decompress_struct *ci = &job->cinfo;
    ci->client_data = job;
    ci->err = jpeg_std_error(&job->errmgr);
    job->errmgr.error_exit = on_error_exit;
    job->errmgr.output_message = on_output_message;
    jpeg_create_decompress(ci);
    job->created = 1;
    job->src.init_source = src_init;
    job->src.fill_input_buffer = src_fill;
    job->src.skip_input_data = src_skip;
    job->src.resync_to_restart = jpeg_resync_to_restart;
    job->src.term_source = src_term;
    job->src.next_input_byte = b;
    job->src.bytes_in_buffer = n;
    ci->src = &job->src;
    job->progress.progress_monitor = on_progress;
    ci->progress = &job->progress;
}

static jpeg_job *job_new(void)
{
    return calloc(1, sizeof(jpeg_job));
}

static void job_free(jpeg_job *job)
{
    if (job->created)
        jpeg_destroy_decompress(&job->cinfo);
    free(job->cmyk_row);
    free(job);
}

static hadm_status header_truncated(hadm_error *err)
{
    return hadm_fail(err, HADM_ERR_IMAGE, "JPEG: data ends before the image data starts");
}

hadm_status image_jpeg_probe(const uint8_t *b, size_t n, int *w, int *h, hadm_error *err)
{
    jpeg_job *job = job_new();
    if (!job)
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory");
    hadm_status s;
    if (setjmp(job->jump)) {
        s = hadm_fail(err, HADM_ERR_IMAGE, "JPEG: %s", job->msg);
    } else {
        job_start(job, b, n);
        if (jpeg_read_header(&job->cinfo, TRUE) != JPEG_HEADER_OK) {
            s = header_truncated(err);
        } else {
            *w = (int)job->cinfo.image_width;
            *h = (int)job->cinfo.image_height;
            s = HADM_OK;
        }
    }
    job_free(job);
    return s;
}

static int first_exif_orientation(j_decompress_ptr ci)
{
    for (jpeg_saved_marker_ptr m = ci->marker_list; m; m = m->next)
        if (m->marker == JPEG_APP0 + 1 && m->data_length >= 6 && !memcmp(m->data, "Exif\0", 5))
            return exif_orientation(m->data, m->data_length);   /* PIL keeps the first */
    return 1;
}

/* PIL: MULDIV255(a, b) = round(a*b/255) computed as below. */
static inline int muldiv255(int a, int b)
{
    int t = a * b + 128;
    return ((t >> 8) + t) >> 8;
}

/* libjpeg's CMYK -> PIL "CMYK;I" (inverted) -> cmyk2rgb. */
static void cmyk_to_rgb(const uint8_t *in, uint8_t *out, int w)
{
    for (int x = 0; x < w; x++, in += 4, out += 3) {
        int nk = in[3];   /* 255 - (255 - K) */
        for (int c = 0; c < 3; c++) {
            int v = nk - muldiv255(255 - in[c], nk);
            out[c] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
        }
    }
}

static hadm_status choose_output(j_decompress_ptr ci, hadm_error *err)
{
    switch (ci->num_components) {
    case 1:
    case 3:
        ci->out_color_space = JCS_RGB;   /* grey is replicated, as PIL's L -> RGB */
        return HADM_OK;
    case 4:
        ci->out_color_space = JCS_CMYK;  /* from CMYK or YCCK */
        return HADM_OK;
    default:
        return hadm_fail(err, HADM_ERR_IMAGE, "JPEG with %d colour components is not supported",
                         ci->num_components);
    }
}

/* One row per call, as PIL does, so that a fatal error leaves exactly the
 * rows PIL would have kept. */
static void read_rows(jpeg_job *job, hadm_image *out)
{
    j_decompress_ptr ci = &job->cinfo;
    size_t stride = (size_t)out->width * 3;
    while (ci->output_scanline < ci->output_height) {
        uint8_t *dst = out->rgb + (size_t)job->rows_done * stride;
        JSAMPROW row = job->cmyk_row ? job->cmyk_row : dst;
        if (jpeg_read_scanlines(ci, &row, 1) != 1)
            return;   /* suspended: the data ran out */
        if (job->cmyk_row)
            cmyk_to_rgb(job->cmyk_row, dst, out->width);
        job->rows_done++;
    }
}

static hadm_status truncated(const jpeg_job *job, int height, hadm_error *err)
{
    if (job->allow_truncated)
        return HADM_OK;
    return hadm_fail(err, HADM_ERR_IMAGE,
                     "JPEG is truncated or corrupt (%d of %d rows decodable); the original "
                     "reader accepts such files: use --allow-truncated to do the same",
                     job->rows_done, height);
}

static hadm_status decode_body(jpeg_job *job, const uint8_t *b, size_t n, int64_t max_pixels,
                               hadm_image *out, int *orientation, hadm_error *err)
{
    j_decompress_ptr ci = &job->cinfo;
    job_start(job, b, n);
    jpeg_save_markers(ci, JPEG_APP0 + 1, 0xffff);
    if (jpeg_read_header(ci, TRUE) != JPEG_HEADER_OK)
        return header_truncated(err);
    hadm_status s = image_check_size("JPEG", ci->image_width, ci->image_height, max_pixels, err);
    if (!s)
        s = choose_output(ci, err);
    if (s)
        return s;
    *orientation = first_exif_orientation(ci);
    if (ci->num_components == 4 && !(job->cmyk_row = malloc((size_t)ci->image_width * 4)))
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory");
    if ((s = image_alloc(out, (int)ci->image_width, (int)ci->image_height, err)))
        return s;
    if (!jpeg_start_decompress(ci))
        return hadm_fail(err, HADM_ERR_IMAGE,
                         "JPEG: truncated progressive/multi-scan image, no rows decodable");
    if (ci->output_width != ci->image_width || ci->output_height != ci->image_height ||
        ci->output_components != (ci->num_components == 4 ? 4 : 3))
        return hadm_fail(err, HADM_ERR_INTERNAL, "JPEG: unexpected output geometry");
    read_rows(job, out);
    if (job->rows_done == 0)
        return hadm_fail(err, HADM_ERR_IMAGE, "JPEG: data ends before the first row");
    return job->rows_done == out->height ? HADM_OK : truncated(job, out->height, err);
}

hadm_status image_jpeg_decode(const uint8_t *b, size_t n, int64_t max_pixels, int allow_truncated,
                              hadm_image *out, int *orientation, hadm_error *err)
{
    jpeg_job *job = job_new();
    if (!job)
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory");
    job->allow_truncated = allow_truncated;
    hadm_status s;
    if (setjmp(job->jump)) {
        /* A fatal decoder error. PIL (LOAD_TRUNCATED_IMAGES) keeps the rows
         * decoded so far; with none, there is nothing to keep. */
        if (job->rows_done > 0 && out->rgb)
            s = truncated(job, out->height, err);
        else
            s = hadm_fail(err, HADM_ERR_IMAGE, "JPEG: %s", job->msg);
    } else {
        s = decode_body(job, b, n, max_pixels, out, orientation, err);
    }
    job_free(job);
    if (s)
        hadm_image_free(out);
    return s;
}
