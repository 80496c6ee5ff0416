/* hadm.h — the public C API of hadm: open a HADM model, detect, free.
 *
 * Thread safety: a hadm_model is immutable once opened. hadm_detect* may be
 * called concurrently from any number of threads on the same model; each call
 * borrows a private execution context (arena, primitive cache) from a pool in
 * the model, so concurrent calls never share scratch memory. hadm_model_close
 * must not race with a detect call on the same model. Errors are reported
 * through the caller's hadm_error; there is no global error state. */
#ifndef HADM_H
#define HADM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define HADM_VERSION "0.1.0"

typedef enum {
    HADM_OK = 0,
    HADM_ERR_ARG,          /* bad argument from the caller */
    HADM_ERR_IO,           /* file could not be opened or read */
    HADM_ERR_FORMAT,       /* model file malformed or inconsistent */
    HADM_ERR_IMAGE,        /* image bytes undecodable or unsupported */
    HADM_ERR_NOT_IMAGE,    /* bytes are not any image format we know */
    HADM_ERR_TOO_LARGE,    /* image dimensions beyond the configured limit */
    HADM_ERR_NOMEM,
    HADM_ERR_UNSUPPORTED,  /* valid request the build cannot serve (e.g. no CUDA) */
    HADM_ERR_INTERNAL
} hadm_status;

typedef struct {
    hadm_status code;
    char msg[512];
} hadm_error;

const char *hadm_status_name(hadm_status s);

/* ---- images ---------------------------------------------------------- */

/* 8-bit interleaved RGB, rows packed (stride = 3*width). */
typedef struct {
    int width, height;
    uint8_t *rgb;
} hadm_image;

typedef struct {
    int64_t max_pixels;   /* 0 = default (HADM_DEFAULT_MAX_PIXELS) */
    /* A JPEG whose data ends early is an error unless this is set; then the
     * rows decoded so far are kept and the rest is black, as the original
     * reader does (PIL with LOAD_TRUNCATED_IMAGES). */
    int allow_truncated;
} hadm_decode_options;

#define HADM_DEFAULT_MAX_PIXELS (100LL * 1000 * 1000)

/* Reads only the header: format name ("jpeg", "png", "webp") and stored size
 * (before EXIF rotation). Cheap; used to refuse huge images before decoding. */
hadm_status hadm_image_probe(const void *bytes, size_t len, const char **format,
                             int *width, int *height, hadm_error *err);

/* Decodes JPEG/PNG/WebP to RGB as the original reader does (PIL semantics:
 * EXIF orientation applied, grey expanded, alpha dropped, 16-bit reduced). */
hadm_status hadm_image_decode(const void *bytes, size_t len,
                              const hadm_decode_options *opt,
                              hadm_image *out, hadm_error *err);
hadm_status hadm_image_load(const char *path, const hadm_decode_options *opt,
                            hadm_image *out, hadm_error *err);
void hadm_image_free(hadm_image *img);

/* ---- models ---------------------------------------------------------- */

typedef struct hadm_model hadm_model;

typedef enum { HADM_DEVICE_CPU = 0, HADM_DEVICE_CUDA = 1 } hadm_device_kind;

/* What the matmuls and convolutions compute in. AUTO follows the file:
 * F32 weights -> F32, BF16/F16 -> BF16, int8 (hadm quantize --type q8) ->
 * INT8. BF16: bf16 inputs, f32 accumulation. INT8: the ViT's Linear layers
 * take int8 weights (per-output-channel scales) and u8 activations
 * quantised per call and per row (scale + zero point); attention and
 * convolutions stay f32 (BF16 runs them in bf16). Norms,
 * softmax, box decoding and NMS are f32 in every mode. */
typedef enum {
    HADM_PRECISION_AUTO = 0,
    HADM_PRECISION_F32,
    HADM_PRECISION_BF16,
    HADM_PRECISION_INT8
} hadm_precision;

typedef struct {
    int threads;              /* 0 = all cores */
    hadm_device_kind device;
    int device_index;
    hadm_precision precision;
    /* CUDA only: the share of the GPU's memory this process may use for its
     * models (all of them together), in (0, 1]; 0 = 0.95. A model that does
     * not fit fails to open with a message saying how much it needs. */
    float gpu_memory_fraction;
} hadm_open_options;

const char *hadm_precision_name(hadm_precision p);   /* "auto", "f32", "bf16", "int8" */
/* Parses those names; returns -1 for anything else. */
int hadm_precision_parse(const char *s, hadm_precision *out);

hadm_status hadm_model_open(const char *path, const hadm_open_options *opt,
                            hadm_model **out, hadm_error *err);
void hadm_model_close(hadm_model *m);

/* A tiny model with seeded random weights, built in memory: for demos and
 * tests when no model files exist. Its detections mean nothing. */
hadm_status hadm_model_open_demo(char variant /* 'l' or 'g' */, uint64_t seed,
                                 const hadm_open_options *opt, hadm_model **out,
                                 hadm_error *err);

const char *hadm_model_variant(const hadm_model *m);   /* "HADM-L" / "HADM-G" */
int hadm_model_num_classes(const hadm_model *m);
const char *hadm_model_class_name(const hadm_model *m, int class_id);
int hadm_model_input_size(const hadm_model *m);        /* square side, e.g. 1024 */
int64_t hadm_model_param_count(const hadm_model *m);
hadm_precision hadm_model_precision(const hadm_model *m);   /* resolved, never AUTO */

/* ---- detection ------------------------------------------------------- */

typedef enum { HADM_RGB = 0, HADM_BGR = 1 } hadm_channel_order;

typedef struct {
    hadm_channel_order channel_order;  /* RGB (default) or the demo's BGR */
    float min_score;                   /* extra filter on output; 0 = none */
} hadm_detect_options;

typedef struct {
    float x1, y1, x2, y2;     /* original-image pixels */
    float score;
    int class_id;
    const char *class_name;   /* owned by the model */
} hadm_detection;

/* Seconds spent per pipeline stage, filled by every detect call. */
typedef struct {
    double preprocess, backbone, fpn, rpn, roi_heads, postprocess, total;
} hadm_timings;

typedef struct {
    int image_width, image_height;     /* original (after EXIF) */
    int resized_width, resized_height;
    int count;
    hadm_detection *dets;              /* score descending */
    hadm_timings timings;
    double gflop;                      /* work done, counted by the engine */
} hadm_result;

hadm_status hadm_detect(hadm_model *m, const hadm_image *img,
                        const hadm_detect_options *opt, hadm_result **out,
                        hadm_error *err);

/* Runs n images as one batch; results[i] is NULL where image i failed and
 * errs[i] (if errs is not NULL) says why. Returns HADM_OK unless the batch as
 * a whole could not run. */
hadm_status hadm_detect_batch(hadm_model *m, const hadm_image *imgs, int n,
                              const hadm_detect_options *opt,
                              hadm_result **results, hadm_error *errs,
                              hadm_error *err);

void hadm_result_free(hadm_result *r);

#ifdef __cplusplus
}
#endif
#endif
