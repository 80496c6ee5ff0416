/* KServe v2 / Open Inference Protocol: health, model metadata and infer.
 * The input is one encoded image: a BYTES tensor (base64 in JSON, or raw in
 * the binary-data extension, with or without Triton's 4-byte length prefix)
 * or a UINT8 tensor of the file's bytes. Outputs: boxes [N,4] FP32, scores
 * [N] FP32, class_ids [N] INT32, class_names [N] BYTES; as binary data too
 * when the request asks for it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/encode.h"
#include "server/jsonlimit.h"
#include "server/routes.h"

typedef struct {
    int idx;
    uint8_t *owned;
    const void *bytes;
    size_t len;
    char id[128];
    int binary_out;
} infer_state;

static void infer_free(void *p)
{
    infer_state *st = p;
    if (st)
        free(st->owned);
    free(st);
}

int route_v2_server(req_ctx *c)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", "hadm");
    cJSON_AddStringToObject(o, "version", HADM_VERSION);
    cJSON *ext = cJSON_AddArrayToObject(o, "extensions");
    cJSON_AddItemToArray(ext, cJSON_CreateString("binary_tensor_data"));
    http_json(c, 200, o);
    return ROUTE_DONE;
}

int route_v2_live(req_ctx *c)
{
    http_respond_static(c, 200, "application/json", "{\"live\":true}");
    return ROUTE_DONE;
}

int route_v2_ready(req_ctx *c)
{
    char why[600];
    int ok = server_is_ready(c->srv, why, sizeof why);
    http_respond_static(c, ok ? 200 : 503, "application/json", ok ? "{\"ready\":true}" : "{\"ready\":false}");
    return ROUTE_DONE;
}

static int model_of_path(req_ctx *c)
{
    int idx = registry_index(c->arg);
    if (idx < 0)
        http_error(c, 404, "unknown model '%s' (hadm-l or hadm-g)", c->arg);
    return idx;
}

static void add_tensor_meta(cJSON *list, const char *name, const char *dtype, int d0, int d1)
{
    cJSON *t = cJSON_CreateObject();
    cJSON_AddStringToObject(t, "name", name);
    cJSON_AddStringToObject(t, "datatype", dtype);
    int shape[2] = {d0, d1};
    cJSON_AddItemToObject(t, "shape", cJSON_CreateIntArray(shape, d1 ? 2 : 1));
    cJSON_AddItemToArray(list, t);
}

int route_v2_model(req_ctx *c)
{
    int idx = model_of_path(c);
    if (idx < 0)
        return ROUTE_DONE;
    model_info mi;
    registry_info(c->srv->reg, idx, &mi);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", registry_name(idx));
    cJSON *v = cJSON_AddArrayToObject(o, "versions");
    cJSON_AddItemToArray(v, cJSON_CreateString("1"));
    cJSON_AddStringToObject(o, "platform", "hadm");
    cJSON_AddStringToObject(o, "state", model_state_name(mi.state));
    add_tensor_meta(cJSON_AddArrayToObject(o, "inputs"), "image", "BYTES", 1, 0);
    cJSON *out = cJSON_AddArrayToObject(o, "outputs");
    add_tensor_meta(out, "boxes", "FP32", -1, 4);
    add_tensor_meta(out, "scores", "FP32", -1, 0);
    add_tensor_meta(out, "class_ids", "INT32", -1, 0);
    add_tensor_meta(out, "class_names", "BYTES", -1, 0);
    http_json(c, 200, o);
    return ROUTE_DONE;
}

int route_v2_model_ready(req_ctx *c)
{
    int idx = model_of_path(c);
    if (idx < 0)
        return ROUTE_DONE;
    int ready = registry_state(c->srv->reg, idx) == MODEL_READY;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", registry_name(idx));
    cJSON_AddBoolToObject(o, "ready", ready);
    http_json(c, ready ? 200 : 503, o);
    return ROUTE_DONE;
}

static int json_flag(const cJSON *params, const char *key)
{
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(params, key));
}

/* The image bytes of the request's input from the binary section. */
static const char *take_binary(infer_state *st, const cJSON *inputs, const cJSON *in,
                               const uint8_t *bin, size_t bin_len)
{
    size_t off = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, inputs)
    {
        const cJSON *sz = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(it, "parameters"),
                                                           "binary_data_size");
        double n = cJSON_IsNumber(sz) ? sz->valuedouble : 0;
        if (n < 0 || n > (double)(bin_len - off))
            return "binary_data_size runs past the end of the body";
        if (it == in) {
            st->bytes = bin + off;
            st->len = (size_t)n;
            break;
        }
        off += (size_t)n;
    }
    const uint8_t *b = st->bytes;
    if (st->len >= 4 && (size_t)(b[0] | b[1] << 8 | b[2] << 16 | (uint32_t)b[3] << 24) == st->len - 4) {
        st->bytes = b + 4; /* Triton's BYTES element: 4-byte length, then the bytes */
        st->len -= 4;
    }
    return NULL;
}

static const char *take_json_data(infer_state *st, const cJSON *in, const char *dtype)
{
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(in, "data");
    while (cJSON_IsArray(data) && cJSON_GetArraySize(data) == 1 && cJSON_IsArray(data->child))
        data = data->child; /* [[...]] */
    if (!cJSON_IsArray(data) || !data->child)
        return "input data is missing";
    if (!strcmp(dtype, "BYTES")) {
        if (cJSON_GetArraySize(data) != 1 || !cJSON_IsString(data->child))
            return "BYTES input must hold one base64 string (one image per request)";
        const char *s = data->child->valuestring;
        if (!(st->owned = base64_decode(s, strlen(s), &st->len)))
            return "BYTES input is not valid base64";
    } else {
        int n = cJSON_GetArraySize(data);
        if (!(st->owned = malloc((size_t)n + 1)))
            return "out of memory";
        const cJSON *v;
        st->len = 0;
        cJSON_ArrayForEach(v, data)
        {
            if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 255)
                return "UINT8 input must hold numbers 0..255";
            st->owned[st->len++] = (uint8_t)v->valuedouble;
        }
    }
    st->bytes = st->owned;
    return NULL;
}

static const char *parse_infer(req_ctx *c, infer_state *st)
{
    size_t json_len = c->body.len;
    const char *hl = http_header(c, "Inference-Header-Content-Length");
    if (hl) {
        char *end;
        unsigned long long n = strtoull(hl, &end, 10);
        if (*end || n > c->body.len)
            return "Inference-Header-Content-Length is larger than the body";
        json_len = (size_t)n;
    }
    char why[128];
    if (c->body.data && json_check_limits(c->body.data, json_len, why, sizeof why))
        return "the inference request is nested too deeply or holds too many values";
    cJSON *j = c->body.data ? cJSON_ParseWithLength(c->body.data, json_len) : NULL;
    const char *bad = NULL;
    const cJSON *inputs = cJSON_GetObjectItemCaseSensitive(j, "inputs"), *in = NULL, *it;
    cJSON_ArrayForEach(it, inputs)
    {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(it, "name");
        if (!in || (cJSON_IsString(name) && !strcmp(name->valuestring, "image")))
            in = it;
    }
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(in, "datatype");
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(j, "id");
    if (cJSON_IsString(id))
        snprintf(st->id, sizeof st->id, "%s", id->valuestring);
    st->binary_out = json_flag(cJSON_GetObjectItemCaseSensitive(j, "parameters"), "binary_data_output");
    if (!cJSON_IsObject(j))
        bad = "the inference request must be a JSON object";
    else if (!in)
        bad = "inputs must hold one tensor (the encoded image)";
    else if (!cJSON_IsString(dt) || (strcmp(dt->valuestring, "BYTES") && strcmp(dt->valuestring, "UINT8")))
        bad = "the input datatype must be BYTES or UINT8";
    else if (cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(in, "parameters"), "binary_data_size"))
        bad = take_binary(st, inputs, in, (const uint8_t *)c->body.data + json_len, c->body.len - json_len);
    else
        bad = take_json_data(st, in, dt->valuestring);
    cJSON_Delete(j);
    return bad;
}

int route_v2_infer_start(req_ctx *c)
{
    int idx = model_of_path(c);
    if (idx < 0)
        return ROUTE_DONE;
    infer_state *st = calloc(1, sizeof *st);
    if (!st) {
        http_error(c, 503, "out of memory");
        return ROUTE_DONE;
    }
    st->idx = idx;
    c->state = st;
    c->free_state = infer_free;
    const char *bad = parse_infer(c, st);
    if (bad) {
        http_error(c, 400, "%s", bad);
        return ROUTE_DONE;
    }
    const char *format;
    int w, h;
    hadm_error err = {0};
    hadm_status s = hadm_image_probe(st->bytes, st->len, &format, &w, &h, &err);
    if (s) {
        http_error(c, s == HADM_ERR_NOT_IMAGE ? 415 : 400, "%s", err.msg);
        return ROUTE_DONE;
    }
    if ((int64_t)w * h > c->srv->cfg.max_pixels) {
        http_error(c, 422, "image is %dx%d, over the limit of %lld pixels", w, h, (long long)c->srv->cfg.max_pixels);
        return ROUTE_DONE;
    }
    if (!(c->jobs = calloc(1, sizeof *c->jobs))) {
        http_error(c, 503, "out of memory");
        return ROUTE_DONE;
    }
    c->njobs = 1;
    sched_job_init(c->jobs);
    c->jobs->bytes = st->bytes;
    c->jobs->len = st->len;
    c->jobs->want[idx] = 1;
    return http_submit(c, c->jobs, 1);
}

/* Output tensors; with binary, each tensor's bytes are appended to bin. */
static void add_output(cJSON *outs, const char *name, const char *dtype, int n, int cols, cJSON *data,
                       byte_buf *bin, const void *raw, size_t raw_len)
{
    cJSON *t = cJSON_CreateObject();
    cJSON_AddStringToObject(t, "name", name);
    cJSON_AddStringToObject(t, "datatype", dtype);
    int shape[2] = {n, cols};
    cJSON_AddItemToObject(t, "shape", cJSON_CreateIntArray(shape, cols ? 2 : 1));
    if (bin) {
        cJSON_AddNumberToObject(cJSON_AddObjectToObject(t, "parameters"), "binary_data_size", (double)raw_len);
        buf_append(bin, raw, raw_len);
        cJSON_Delete(data);
    } else {
        cJSON_AddItemToObject(t, "data", data);
    }
    cJSON_AddItemToArray(outs, t);
}

static void add_outputs(cJSON *outs, const hadm_result *r, byte_buf *bin)
{
    int n = r ? r->count : 0;
    float *f = malloc(sizeof(float) * 4 * (size_t)(n + 1));
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)(n + 1));
    byte_buf names = {0};
    cJSON *jnames = cJSON_CreateArray();
    for (int i = 0; f && ids && i < n; i++) {
        const hadm_detection *d = &r->dets[i];
        f[4 * i] = d->x1, f[4 * i + 1] = d->y1, f[4 * i + 2] = d->x2, f[4 * i + 3] = d->y2;
        ids[i] = d->class_id;
        const char *cn = d->class_name ? d->class_name : "";
        uint32_t len = (uint32_t)strlen(cn);
        uint8_t le[4] = {(uint8_t)len, (uint8_t)(len >> 8), (uint8_t)(len >> 16), (uint8_t)(len >> 24)};
        buf_append(&names, le, 4);
        buf_append(&names, cn, len);
        cJSON_AddItemToArray(jnames, cJSON_CreateString(cn));
    }
    if (!f || !ids)
        n = 0;
    add_output(outs, "boxes", "FP32", n, 4, cJSON_CreateFloatArray(f, 4 * n), bin, f, sizeof(float) * 4 * (size_t)n);
    for (int i = 0; i < n; i++)
        f[i] = r->dets[i].score;
    add_output(outs, "scores", "FP32", n, 0, cJSON_CreateFloatArray(f, n), bin, f, sizeof(float) * (size_t)n);
    add_output(outs, "class_ids", "INT32", n, 0, cJSON_CreateIntArray(ids, n), bin, ids, sizeof(int32_t) * (size_t)n);
    add_output(outs, "class_names", "BYTES", n, 0, jnames, bin, names.data, names.len);
    buf_free(&names);
    free(f);
    free(ids);
}

void route_v2_infer_finish(req_ctx *c)
{
    infer_state *st = c->state;
    const char *msg;
    job_code code = sched_job_outcome(c->jobs, &msg);
    if (code != JOB_OK) {
        http_error(c, http_status_of_job(code), "%s", msg);
        return;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "model_name", registry_name(st->idx));
    cJSON_AddStringToObject(o, "model_version", "1");
    if (st->id[0])
        cJSON_AddStringToObject(o, "id", st->id);
    byte_buf bin = {0};
    add_outputs(cJSON_AddArrayToObject(o, "outputs"), c->jobs->result[st->idx], st->binary_out ? &bin : NULL);
    if (!st->binary_out) {
        http_json(c, 200, o);
        return;
    }
    char *head = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    byte_buf body = {0};
    if (!head || buf_append(&body, head, strlen(head)) || buf_append(&body, bin.data ? bin.data : "", bin.len)) {
        free(head);
        buf_free(&bin);
        buf_free(&body);
        http_error(c, 503, "out of memory");
        return;
    }
    c->extra_name = "Inference-Header-Content-Length";
    snprintf(c->extra_value, sizeof c->extra_value, "%zu", strlen(head));
    free(head);
    buf_free(&bin);
    http_respond(c, 200, "application/octet-stream", body.data, body.len);
}
