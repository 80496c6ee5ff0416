/* Annotated-image answers of the detect routes (see annotate_reply.h). */
#include "server/annotate_reply.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "io/annotate.h"
#include "server/encode.h"

/* ---- parameters ------------------------------------------------------------------ */

/* The parameter as text from the form or the query; NULL when absent. */
static const char *param_text(req_ctx *c, const char *name)
{
    const form_part *f = http_form(c, name);
    if (f)
        return f->data.data ? f->data.data : "";
    return http_query(c, name);
}

/* 1 true, 0 false, -1 not a boolean. */
static int parse_flag(const char *v)
{
    static const char *const YES[] = {"1", "true", "yes", "on"}, *const NO[] = {"0", "false", "no", "off", ""};
    for (size_t i = 0; i < sizeof YES / sizeof *YES; i++)
        if (!strcasecmp(v, YES[i]))
            return 1;
    for (size_t i = 0; i < sizeof NO / sizeof *NO; i++)
        if (!strcasecmp(v, NO[i]))
            return 0;
    return -1;
}

/* -1 absent, 0/1 given, -2 invalid. */
static int flag_param(req_ctx *c, const cJSON *json, const char *name)
{
    const char *v = param_text(c, name);
    if (v)
        return parse_flag(v) < 0 ? -2 : parse_flag(v);
    const cJSON *j = json ? cJSON_GetObjectItemCaseSensitive(json, name) : NULL;
    if (!j || cJSON_IsNull(j))
        return -1;
    if (cJSON_IsBool(j))
        return cJSON_IsTrue(j);
    if (cJSON_IsNumber(j))
        return j->valuedouble != 0;
    if (cJSON_IsString(j))
        return parse_flag(j->valuestring) < 0 ? -2 : parse_flag(j->valuestring);
    return -2;
}

/* How specifically a media range matches type/sub: 3 exactly, 2 by its type
 * with any subtype, 1 as the any-type range; 0 not at all. */
static int range_match(const char *range, size_t n, const char *type, const char *sub)
{
    const char *slash = memchr(range, '/', n);
    if (!slash)
        return 0;
    size_t tn = (size_t)(slash - range), sn = n - tn - 1;
    const char *rs = slash + 1;
    if (tn == 1 && range[0] == '*' && sn == 1 && rs[0] == '*')
        return 1;
    if (tn != strlen(type) || strncasecmp(range, type, tn))
        return 0;
    if (sn == 1 && rs[0] == '*')
        return 2;
    return sn == strlen(sub) && !strncasecmp(rs, sub, sn) ? 3 : 0;
}

static double param_q(const char *p, const char *end)
{
    while (p < end) { /* p at a ';' */
        p++;
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        if (end - p > 2 && (p[0] == 'q' || p[0] == 'Q') && p[1] == '=') {
            char num[16];
            size_t n = (size_t)(end - p - 2) < sizeof num - 1 ? (size_t)(end - p - 2) : sizeof num - 1;
            memcpy(num, p + 2, n);
            num[n] = 0;
            char *stop;
            double q = strtod(num, &stop);
            return stop == num || !(q >= 0) ? 1.0 : q > 1 ? 1.0 : q;
        }
        const char *next = memchr(p, ';', (size_t)(end - p));
        p = next ? next : end;
    }
    return 1.0;
}

/* The weight Accept gives type/sub: the q of the most specific range that
 * matches (RFC 9110, 12.5.1); 0 when none does. */
static double accept_q(const char *accept, const char *type, const char *sub)
{
    double best_q = 0;
    int best = 0;
    for (const char *p = accept; *p;) {
        const char *end = strchr(p, ',');
        end = end ? end : p + strlen(p);
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        size_t len = end > p ? (size_t)(end - p) : 0;
        const char *semi = memchr(p, ';', len);
        const char *rend = semi ? semi : end;
        while (rend > p && (rend[-1] == ' ' || rend[-1] == '\t'))
            rend--;
        int m = range_match(p, (size_t)(rend - p), type, sub);
        if (m > best) {
            best = m;
            best_q = semi ? param_q(semi, end) : 1.0;
        }
        p = *end ? end + 1 : end;
    }
    return best_q;
}

int annot_accept_image(const char *accept, image_format *format)
{
    if (!accept)
        return 0;
    double json = accept_q(accept, "application", "json");
    double jpeg = accept_q(accept, "image", "jpeg"), png = accept_q(accept, "image", "png");
    if ((jpeg > png ? jpeg : png) <= json)
        return 0;
    *format = png > jpeg ? IMAGE_PNG : IMAGE_JPEG;
    return 1;
}

int annot_parse(req_ctx *c, const cJSON *json, int batch, annot_request *out)
{
    memset(out, 0, sizeof *out);
    int image = flag_param(c, json, "annotate"), field = flag_param(c, json, "annotated_image");
    if (image == -2 || field == -2) {
        http_error(c, 400, "%s must be true or false (1 or 0)", image == -2 ? "annotate" : "annotated_image");
        return -1;
    }
    if (image == 1 && batch) {
        http_error(c, 400, "annotate=1 answers with one image; for a batch, ask for annotated_image=1");
        return -1;
    }
    if (image == 1)
        out->kind = ANNOT_IMAGE;
    else if (field == 1)
        out->kind = ANNOT_JSON;
    else if (image == -1 && !batch && annot_accept_image(http_header(c, "Accept"), &out->format))
        out->kind = ANNOT_IMAGE;
    const char *fmt = param_text(c, "annotate_format");
    const cJSON *jf = json ? cJSON_GetObjectItemCaseSensitive(json, "annotate_format") : NULL;
    if (!fmt && jf)
        fmt = cJSON_IsString(jf) ? jf->valuestring : "";
    if (fmt && image_format_parse(fmt, &out->format)) {
        http_error(c, 400, "annotate_format must be jpeg or png");
        return -1;
    }
    return 0;
}

/* ---- on the worker ------------------------------------------------------------------ */

static void draw_on_worker(sched_job *job, hadm_image *img, void *user)
{
    annot_output *o = user;
    if (!img || sched_job_outcome(job, NULL) != JOB_OK)
        return; /* the answer is the error */
    const hadm_result *l = job->result[REG_L], *g = job->result[REG_G];
    o->n_local = l ? l->count : 0;
    o->n_global = g ? g->count : 0;
    hadm_error err = {0};
    o->done = 1;
    if (annotate_encode(img, l, g, o->req->format, &o->bytes, &o->len, &o->format, &err)) {
        o->failed = 1;
        snprintf(o->error, sizeof o->error, "cannot draw the annotated image: %s", err.msg);
        return;
    }
    if (o->req->kind != ANNOT_JSON)
        return;
    o->base64 = base64_encode(o->bytes, o->len);
    free(o->bytes);
    o->bytes = NULL;
    if (!o->base64) {
        o->failed = 1;
        snprintf(o->error, sizeof o->error, "out of memory for the annotated image");
    }
}

void annot_attach(sched_job *job, const annot_request *req, annot_output *out)
{
    if (req->kind == ANNOT_NONE)
        return;
    out->req = req;
    job->with_image = draw_on_worker;
    job->with_image_user = out;
}

void annot_output_free(annot_output *o)
{
    free(o->bytes);
    free(o->base64);
    o->bytes = NULL;
    o->base64 = NULL;
}

/* ---- in finish() ----------------------------------------------------------------------- */

void annot_respond_image(req_ctx *c, annot_output *o)
{
    if (!o->done || o->failed || !o->bytes) {
        http_error(c, 500, "%s", o->failed ? o->error : "the annotated image was not drawn");
        return;
    }
    c->extra_name = "X-HADM-Detections";
    snprintf(c->extra_value, sizeof c->extra_value, "local=%d, global=%d", o->n_local, o->n_global);
    http_respond(c, 200, image_format_mime(o->format), (char *)o->bytes, o->len);
    o->bytes = NULL; /* http_respond owns it now */
}

int annot_add_json(cJSON *response, annot_output *o)
{
    if (!o->done || o->failed || !o->base64) {
        if (!o->failed)
            snprintf(o->error, sizeof o->error, "the annotated image was not drawn");
        return -1;
    }
    cJSON *s = cJSON_CreateStringReference(o->base64);
    if (!s) {
        snprintf(o->error, sizeof o->error, "out of memory for the annotated image");
        return -1;
    }
    cJSON_AddItemToObject(response, "annotated_image", s);
    cJSON_AddStringToObject(response, "annotated_image_type", image_format_mime(o->format));
    return 0;
}
