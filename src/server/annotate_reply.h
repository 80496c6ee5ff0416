/* Annotated images from the detect routes. `annotate=1` (or an Accept
 * header that weighs image/jpeg, image/png or any image type above JSON)
 * answers with the image itself, boxes drawn; `annotated_image=1` keeps the
 * JSON answer and adds "annotated_image" (base64) and "annotated_image_type"
 * (its MIME type). `annotate_format=jpeg|png` picks the encoding (default
 * JPEG, or what Accept prefers). Each parameter may come from the query, a
 * form field or the JSON body. Drawing and encoding run on the scheduler's
 * worker (sched_job.with_image), never on an HTTP thread, and cost the
 * worker about 30 ms for a 640x427 JPEG, 0.1 s at 2048x2048 (0.8 s as PNG). */
#ifndef HADM_SERVER_ANNOTATE_REPLY_H
#define HADM_SERVER_ANNOTATE_REPLY_H

#include <cjson/cJSON.h>

#include "io/image_encode.h"
#include "server/http.h"

typedef enum { ANNOT_NONE = 0, ANNOT_IMAGE, ANNOT_JSON } annot_kind;

typedef struct {
    annot_kind kind;
    image_format format;
} annot_request;

/* One image's annotation, filled on the worker, read by finish(). */
typedef struct {
    const annot_request *req;
    uint8_t *bytes;        /* the encoded image (ANNOT_IMAGE) */
    size_t len;
    char *base64;          /* the encoded image in base64 (ANNOT_JSON) */
    image_format format;   /* what was encoded */
    int done, failed;
    char error[640];
    int n_local, n_global;
} annot_output;

/* Reads the parameters (form field, else query, else json, which may be
 * NULL) and the Accept header. A batch cannot answer with one image: an
 * explicit annotate=1 is refused there and Accept is not consulted.
 * Returns 0, or -1 after answering 400. */
int annot_parse(req_ctx *c, const cJSON *json, int batch, annot_request *out);

/* 1 when an Accept header weighs image/jpeg or image/png above
 * application/json (by the q of the most specific matching range), with the
 * preferred one (JPEG on a tie) in *format. */
int annot_accept_image(const char *accept, image_format *format);

/* Makes the job draw into out on its worker; nothing when req asks for no
 * annotation. out must live until the request is answered. */
void annot_attach(sched_job *job, const annot_request *req, annot_output *out);
void annot_output_free(annot_output *o);

/* Answers with the image (or a 500 when drawing failed). */
void annot_respond_image(req_ctx *c, annot_output *o);

/* Adds the base64 fields to a successful detect response; -1 (response
 * untouched, why in o->error) when drawing failed. */
int annot_add_json(cJSON *response, annot_output *o);

#endif
