/* The HADM-Server compatible detect routes: one image (multipart `file`, a
 * raw image body, base64 in JSON, or fetched from an allowed URL on a
 * thread of its own, see fetch.h) or a batch of them. Images are checked
 * from their header here (415/422 before any decoding); decoding and
 * inference happen on the scheduler's workers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "server/annotate_reply.h"
#include "server/encode.h"
#include "server/fetch.h"
#include "server/jsonlimit.h"
#include "server/routes.h"
#include "util/timer.h"

/* A fetch gets the request's time, but never more than this. */
#define FETCH_TIMEOUT_S 30.0

typedef struct {
    char filename[256];
    const void *bytes;  /* into a form part, the body, or owned */
    size_t len;
    uint8_t *owned;     /* base64-decoded bytes */
    int status;         /* != 0: refused before queueing, with detail */
    char detail[1024];
    int job;            /* index into c->jobs, or -1 */
    annot_output annot;
} image_entry;

typedef struct {
    int want[REG_MODELS];
    const char *mode;
    annot_request annot;
    int batch;
    int n;
    image_entry *e;
} detect_state;

static void state_free(void *p)
{
    detect_state *st = p;
    if (!st)
        return;
    for (int i = 0; i < st->n; i++) {
        free(st->e[i].owned);
        annot_output_free(&st->e[i].annot);
    }
    free(st->e);
    free(st);
}

static detect_state *state_new(req_ctx *c, int batch, int n)
{
    detect_state *st = calloc(1, sizeof *st);
    if (st && n > 0 && !(st->e = calloc((size_t)n, sizeof *st->e))) {
        free(st);
        st = NULL;
    }
    if (!st) {
        http_error(c, 503, "out of memory");
        return NULL;
    }
    st->batch = batch;
    st->n = n;
    for (int i = 0; i < n; i++)
        st->e[i].job = -1;
    c->state = st;
    c->free_state = state_free;
    return st;
}

/* mode and the annotation parameters: the form's field, else the query's,
 * else the JSON body's (json may be NULL). */
static int take_options(req_ctx *c, detect_state *st, const cJSON *json)
{
    const form_part *f = http_form(c, "mode");
    const char *m = f ? (f->data.data ? f->data.data : "") : http_query(c, "mode");
    const cJSON *jm = json ? cJSON_GetObjectItemCaseSensitive(json, "mode") : NULL;
    if (!m && cJSON_IsString(jm))
        m = jm->valuestring;
    if (parse_mode(m, st->want, &st->mode)) {
        http_error(c, 400, "mode must be local, global or both");
        return -1;
    }
    return annot_parse(c, json, st->batch, &st->annot);
}

static void entry_fail(image_entry *e, int status, const char *msg)
{
    e->status = status;
    snprintf(e->detail, sizeof e->detail, "%s", msg);
}

/* Header-only check, so oversized or non-image inputs never reach a decoder. */
static void probe_entry(req_ctx *c, image_entry *e)
{
    if (!e->bytes || e->len == 0) {
        entry_fail(e, 400, "empty image");
        return;
    }
    const char *format = NULL;
    int w = 0, h = 0;
    hadm_error err = {0};
    hadm_status s = hadm_image_probe(e->bytes, e->len, &format, &w, &h, &err);
    char msg[700];
    int64_t limit = c->srv->cfg.max_pixels;
    if (s == HADM_ERR_NOT_IMAGE) {
        snprintf(msg, sizeof msg, "not an image (JPEG, PNG or WebP expected): %s", err.msg);
        entry_fail(e, 415, msg);
    } else if (s == HADM_ERR_TOO_LARGE) {
        entry_fail(e, 422, err.msg);
    } else if (s) {
        snprintf(msg, sizeof msg, "cannot read the image: %s", err.msg);
        entry_fail(e, 400, msg);
    } else if (w <= 0 || h <= 0) {
        entry_fail(e, 400, "image has no pixels");
    } else if ((int64_t)w * h > limit) {
        snprintf(msg, sizeof msg, "image is %dx%d = %lld pixels, over the limit of %lld pixels", w, h,
                 (long long)w * h, (long long)limit);
        entry_fail(e, 422, msg);
    }
}

/* Probes every entry, queues the good ones. */
static int queue_entries(req_ctx *c, detect_state *st)
{
    int njobs = 0;
    for (int i = 0; i < st->n; i++) {
        probe_entry(c, &st->e[i]);
        njobs += st->e[i].status == 0;
    }
    if (!st->batch && st->e[0].status) {
        http_error(c, st->e[0].status, "%s", st->e[0].detail);
        return ROUTE_DONE;
    }
    if (njobs == 0) {
        route_detect_finish(c);
        return ROUTE_DONE;
    }
    if (!(c->jobs = calloc((size_t)njobs, sizeof *c->jobs))) {
        http_error(c, 503, "out of memory");
        return ROUTE_DONE;
    }
    for (int i = 0; i < st->n; i++) {
        image_entry *e = &st->e[i];
        if (e->status)
            continue;
        sched_job *j = &c->jobs[c->njobs];
        sched_job_init(j);
        annot_attach(j, &st->annot, &e->annot);
        j->bytes = e->bytes;
        j->len = e->len;
        memcpy(j->want, st->want, sizeof j->want);
        e->job = c->njobs++;
    }
    return http_submit(c, c->jobs, c->njobs);
}

static int take_base64(req_ctx *c, image_entry *e, const cJSON *b64)
{
    if (!cJSON_IsString(b64)) {
        http_error(c, 400, "image_base64 (a base64 string) is required");
        return -1;
    }
    e->owned = base64_decode(b64->valuestring, strlen(b64->valuestring), &e->len);
    if (!e->owned)
        entry_fail(e, 400, "image_base64 is not valid base64");
    e->bytes = e->owned;
    return 0;
}

static cJSON *parse_json_body(req_ctx *c)
{
    char why[128];
    int over = c->body.data ? json_check_limits(c->body.data, c->body.len, why, sizeof why) : 0;
    if (over) {
        http_error(c, over, "%s", why);
        return NULL;
    }
    cJSON *j = c->body.data ? cJSON_ParseWithLength(c->body.data, c->body.len) : NULL;
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        http_error(c, 400, "request body must be a JSON object");
        return NULL;
    }
    return j;
}

static int is_json(req_ctx *c)
{
    const char *ct = http_header(c, "Content-Type");
    return ct && !strncasecmp(ct, "application/json", 16);
}

static int single_from_json(req_ctx *c, detect_state *st)
{
    cJSON *j = parse_json_body(c);
    if (!j)
        return ROUTE_DONE;
    int bad = take_base64(c, &st->e[0], cJSON_GetObjectItemCaseSensitive(j, "image_base64")) ||
              take_options(c, st, j);
    cJSON_Delete(j);
    return bad ? ROUTE_DONE : queue_entries(c, st);
}

int route_detect_start(req_ctx *c)
{
    detect_state *st = state_new(c, 0, 1);
    if (!st)
        return ROUTE_DONE;
    image_entry *e = &st->e[0];
    if (c->nparts) {
        const form_part *f = http_form(c, "file");
        if (!f)
            f = http_form(c, "image");
        if (!f) {
            http_error(c, 400, "form field 'file' is required");
            return ROUTE_DONE;
        }
        snprintf(e->filename, sizeof e->filename, "%s", f->filename);
        e->bytes = f->data.data;
        e->len = f->data.len;
    } else if (is_json(c)) {
        return single_from_json(c, st);
    } else if (c->body.len) {
        e->bytes = c->body.data; /* a raw image body */
        e->len = c->body.len;
    } else {
        http_error(c, 400, "send the image as multipart form field 'file'");
        return ROUTE_DONE;
    }
    if (take_options(c, st, NULL))
        return ROUTE_DONE;
    return queue_entries(c, st);
}

int route_detect_base64_start(req_ctx *c)
{
    detect_state *st = state_new(c, 0, 1);
    return st ? single_from_json(c, st) : ROUTE_DONE;
}

/* ---- detect-url: the fetch runs on its own thread ------------------------------------ */

typedef struct {
    req_ctx *c;
    char *url;
    fetch_rules rules;
    double deadline;
} fetch_task;

static void fetch_job_done(sched_job *job, void *user)
{
    (void)job;
    http_release(user);
}

/* Queues the fetched image; 0 when queued (its done() releases the request). */
static int submit_fetched(req_ctx *c, detect_state *st, double deadline)
{
    image_entry *e = &st->e[0];
    if (!(c->jobs = calloc(1, sizeof *c->jobs))) {
        entry_fail(e, 503, "out of memory");
        return -1;
    }
    sched_job *j = &c->jobs[0];
    sched_job_init(j);
    annot_attach(j, &st->annot, &e->annot);
    c->njobs = 1;
    j->bytes = e->bytes;
    j->len = e->len;
    memcpy(j->want, st->want, sizeof j->want);
    j->deadline = deadline;
    j->done = fetch_job_done;
    j->user = c;
    e->job = 0;
    hadm_error why = {0};
    job_code code = sched_submit(c->srv->sch, &j, 1, &why);
    if (code == JOB_OK)
        return 0;
    e->job = -1;
    entry_fail(e, http_status_of_job(code), why.msg);
    return -1;
}

static void *fetch_main(void *arg)
{
    fetch_task *t = arg;
    req_ctx *c = t->c;
    detect_state *st = c->state;
    image_entry *e = &st->e[0];
    char detail[700];
    int status = fetch_url(t->url, &t->rules, &e->owned, &e->len, detail, sizeof detail);
    fetch_slot_release();
    if (status)
        entry_fail(e, status, detail);
    else {
        e->bytes = e->owned;
        probe_entry(c, e); /* the same checks as an upload: 415, 422, 400 */
    }
    double deadline = t->deadline;
    free(t->url);
    free(t);
    if (e->status || submit_fetched(c, st, deadline))
        http_release(c);
    return NULL;
}

/* The request's deadline; a client may ask for less (X-Timeout-Ms), never more. */
static double request_timeout_s(req_ctx *c)
{
    double timeout = c->srv->cfg.request_timeout_ms * 1e-3;
    const char *h = http_header(c, "X-Timeout-Ms");
    if (h && atof(h) > 0 && atof(h) * 1e-3 < timeout)
        timeout = atof(h) * 1e-3;
    return timeout;
}

static int start_fetch(req_ctx *c, const char *url)
{
    fetch_task *t = calloc(1, sizeof *t);
    if (!t || !(t->url = strdup(url))) {
        free(t);
        http_error(c, 503, "out of memory");
        return ROUTE_DONE;
    }
    double timeout = request_timeout_s(c);
    t->c = c;
    t->deadline = hadm_now() + timeout;
    t->rules = (fetch_rules){c->srv->cfg.url_allow, c->srv->cfg.n_url_allow, c->srv->cfg.max_body,
                             (long)(1e3 * (timeout < FETCH_TIMEOUT_S ? timeout : FETCH_TIMEOUT_S))};
    char detail[700];
    int status = fetch_check_url(url, &t->rules, detail, sizeof detail);
    if (status || !fetch_slot_acquire()) {
        free(t->url);
        free(t);
        if (status)
            http_error(c, status, "%s", detail);
        else {
            c->retry_after = "1";
            http_error(c, 503, "%d image fetches are already in flight; retry shortly", FETCH_MAX_IN_FLIGHT);
        }
        return ROUTE_DONE;
    }
    pthread_attr_t attr;
    pthread_t tid;
    c->pending = 1; /* before the thread exists: it may finish at once */
    int rc = pthread_attr_init(&attr);
    if (!rc) {
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        rc = pthread_create(&tid, &attr, fetch_main, t);
        pthread_attr_destroy(&attr);
    }
    if (rc) {
        c->pending = 0;
        fetch_slot_release();
        free(t->url);
        free(t);
        http_error(c, 503, "cannot start a fetch thread");
        return ROUTE_DONE;
    }
    return ROUTE_ASYNC;
}

int route_detect_url_start(req_ctx *c)
{
    if (c->srv->cfg.n_url_allow == 0) {
        http_error(c, 403, "detect-url is disabled; start the server with --url-allow HOST to enable it");
        return ROUTE_DONE;
    }
    detect_state *st = state_new(c, 0, 1);
    cJSON *j = st ? parse_json_body(c) : NULL;
    if (!j)
        return ROUTE_DONE;
    const cJSON *url = cJSON_GetObjectItemCaseSensitive(j, "image_url");
    int rc = ROUTE_DONE;
    if (!cJSON_IsString(url) || !url->valuestring[0])
        http_error(c, 400, "image_url (a string) is required");
    else if (!take_options(c, st, j))
        rc = start_fetch(c, url->valuestring);
    cJSON_Delete(j);
    return rc;
}

static int batch_from_form(req_ctx *c)
{
    int n = 0;
    for (int i = 0; i < c->nparts; i++)
        n += !strcmp(c->parts[i].name, "file") || !strcmp(c->parts[i].name, "files");
    if (n == 0) {
        http_error(c, 400, "form fields 'file' (one per image) are required");
        return ROUTE_DONE;
    }
    if (n > c->srv->cfg.max_batch_images) {
        http_error(c, 413, "%d images in one batch; the limit is %d", n, c->srv->cfg.max_batch_images);
        return ROUTE_DONE;
    }
    detect_state *st = state_new(c, 1, n);
    if (!st || take_options(c, st, NULL))
        return ROUTE_DONE;
    for (int i = 0, k = 0; i < c->nparts; i++) {
        const form_part *f = &c->parts[i];
        if (strcmp(f->name, "file") && strcmp(f->name, "files"))
            continue;
        image_entry *e = &st->e[k++];
        snprintf(e->filename, sizeof e->filename, "%s", f->filename);
        e->bytes = f->data.data;
        e->len = f->data.len;
    }
    return queue_entries(c, st);
}

static int batch_from_json(req_ctx *c)
{
    cJSON *j = parse_json_body(c);
    if (!j)
        return ROUTE_DONE;
    const cJSON *images = cJSON_GetObjectItemCaseSensitive(j, "images");
    int n = cJSON_GetArraySize(images);
    detect_state *st = NULL;
    if (!cJSON_IsArray(images) || n == 0)
        http_error(c, 400, "images (a non-empty array) is required");
    else if (n > c->srv->cfg.max_batch_images)
        http_error(c, 413, "%d images in one batch; the limit is %d", n, c->srv->cfg.max_batch_images);
    else if ((st = state_new(c, 1, n)) && take_options(c, st, j))
        st = NULL;
    int k = 0;
    const cJSON *img;
    cJSON_ArrayForEach(img, images)
    {
        if (!st)
            break;
        image_entry *e = &st->e[k++];
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(img, "filename");
        const cJSON *b64 = cJSON_GetObjectItemCaseSensitive(img, "image_base64");
        snprintf(e->filename, sizeof e->filename, "%s", cJSON_IsString(name) ? name->valuestring : "");
        if (!cJSON_IsString(b64))
            entry_fail(e, 400, "image_base64 (a base64 string) is required");
        else
            take_base64(c, e, b64);
    }
    cJSON_Delete(j);
    return st ? queue_entries(c, st) : ROUTE_DONE;
}

int route_detect_batch_start(req_ctx *c)
{
    if (c->nparts)
        return batch_from_form(c);
    if (is_json(c))
        return batch_from_json(c);
    http_error(c, 415, "send multipart form fields 'file', or JSON {\"images\": [...]}");
    return ROUTE_DONE;
}

/* The answer for one entry: the detect response, or its error. */
static cJSON *entry_result(req_ctx *c, detect_state *st, image_entry *e, int *status)
{
    if (e->status) {
        *status = e->status;
        return json_error_object(e->detail);
    }
    const sched_job *j = &c->jobs[e->job];
    const char *msg;
    job_code code = sched_job_outcome(j, &msg);
    if (code != JOB_OK) {
        *status = http_status_of_job(code);
        return json_error_object(msg);
    }
    cJSON *r = json_detect_response(j, st->mode, j->finished - j->submitted);
    *status = 200;
    if (st->annot.kind == ANNOT_JSON && annot_add_json(r, &e->annot)) {
        cJSON_Delete(r);
        *status = 500;
        return json_error_object(e->annot.error);
    }
    return r;
}

void route_detect_finish(req_ctx *c)
{
    detect_state *st = c->state;
    int status = 200;
    if (!st->batch) {
        image_entry *e = &st->e[0];
        if (st->annot.kind == ANNOT_IMAGE && !e->status && sched_job_outcome(&c->jobs[e->job], NULL) == JOB_OK) {
            annot_respond_image(c, &e->annot);
            return;
        }
        cJSON *r = entry_result(c, st, e, &status);
        if (status == 503)
            c->retry_after = "5";
        http_json(c, status, r);
        return;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON *list = cJSON_AddArrayToObject(o, "batch_results");
    for (int i = 0; i < st->n; i++) {
        cJSON *item = cJSON_CreateObject();
        cJSON_AddStringToObject(item, "filename", st->e[i].filename);
        cJSON_AddItemToObject(item, "result", entry_result(c, st, &st->e[i], &status));
        cJSON_AddItemToArray(list, item);
    }
    http_json(c, 200, o);
}
