#include "server/encode.h"

#include <stdlib.h>
#include <string.h>

cJSON *json_error_object(const char *msg)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddBoolToObject(o, "success", 0);
    cJSON_AddStringToObject(o, "detail", msg);
    return o;
}

int parse_mode(const char *s, int want[REG_MODELS], const char **canonical)
{
    static const char *NAMES[] = {"local", "global", "both"};
    int m = -1;
    if (!s || !*s)
        m = 2;
    for (int i = 0; i < 3 && m < 0; i++)
        if (!strcmp(s, NAMES[i]))
            m = i;
    if (m < 0)
        return -1;
    want[REG_L] = m != 1;
    want[REG_G] = m != 0;
    if (canonical)
        *canonical = NAMES[m];
    return 0;
}

static cJSON *detections_json(const hadm_result *r, int idx)
{
    cJSON *list = cJSON_CreateArray();
    for (int i = 0; r && i < r->count; i++) {
        const hadm_detection *d = &r->dets[i];
        cJSON *o = cJSON_CreateObject();
        double box[4] = {d->x1, d->y1, d->x2, d->y2};
        cJSON_AddItemToObject(o, "bbox", cJSON_CreateDoubleArray(box, 4));
        cJSON_AddNumberToObject(o, "confidence", d->score);
        cJSON_AddStringToObject(o, "class_name", d->class_name ? d->class_name : "");
        cJSON *a = cJSON_AddObjectToObject(o, "artifacts");
        cJSON_AddNumberToObject(a, "class_id", d->class_id);
        cJSON_AddStringToObject(a, "type", idx == REG_L ? "local_artifact" : "global_artifact");
        cJSON_AddStringToObject(a, "detection_method", registry_variant(idx));
        cJSON_AddNumberToObject(a, "bbox_area", (double)((d->x2 - d->x1) * (d->y2 - d->y1)));
        cJSON_AddItemToArray(list, o);
    }
    return list;
}

cJSON *json_detect_response(const sched_job *job, const char *mode, double seconds)
{
    const hadm_result *any = job->result[REG_L] ? job->result[REG_L] : job->result[REG_G];
    int size[2] = {any ? any->image_width : job->image_width, any ? any->image_height : job->image_height};
    cJSON *o = cJSON_CreateObject();
    cJSON_AddBoolToObject(o, "success", 1);
    cJSON_AddStringToObject(o, "message", "Detection completed successfully");
    cJSON *res = cJSON_AddObjectToObject(o, "results");
    cJSON_AddItemToObject(res, "image_size", cJSON_CreateIntArray(size, 2));
    cJSON_AddStringToObject(res, "mode", mode);
    cJSON_AddNumberToObject(res, "total_local_detections", job->result[REG_L] ? job->result[REG_L]->count : 0);
    cJSON_AddNumberToObject(res, "total_global_detections", job->result[REG_G] ? job->result[REG_G]->count : 0);
    cJSON_AddItemToObject(o, "local_detections", detections_json(job->result[REG_L], REG_L));
    cJSON_AddItemToObject(o, "global_detections", detections_json(job->result[REG_G], REG_G));
    cJSON_AddNumberToObject(o, "processing_time", seconds);
    return o;
}

static int b64_value(unsigned char ch)
{
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9')
        return ch - '0' + 52;
    if (ch == '+' || ch == '-')
        return 62;
    if (ch == '/' || ch == '_')
        return 63;
    return -1;
}

uint8_t *base64_decode(const char *in, size_t n, size_t *out_len)
{
    if (n > 5 && !strncmp(in, "data:", 5)) {
        const char *comma = memchr(in, ',', n);
        if (!comma)
            return NULL;
        n -= (size_t)(comma + 1 - in);
        in = comma + 1;
    }
    uint8_t *out = malloc(n / 4 * 3 + 4);
    if (!out)
        return NULL;
    size_t o = 0;
    unsigned acc = 0;
    int bits = 0, pad = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)in[i];
        if (ch == ' ' || ch == '\n' || ch == '\r' || ch == '\t')
            continue;
        if (ch == '=') {
            pad++;
            continue;
        }
        int v = b64_value(ch);
        if (v < 0 || pad) { /* a stray character, or data after padding */
            free(out);
            return NULL;
        }
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
        }
    }
    *out_len = o;
    return out;
}

char *base64_encode(const uint8_t *in, size_t len)
{
    static const char DIGITS[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    if (len > (SIZE_MAX - 1) / 4 * 3 - 3)
        return NULL;
    char *out = malloc((len + 2) / 3 * 4 + 1), *o = out;
    if (!out)
        return NULL;
    size_t i = 0;
    for (; i + 3 <= len; i += 3, o += 4) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        o[0] = DIGITS[v >> 18];
        o[1] = DIGITS[(v >> 12) & 63];
        o[2] = DIGITS[(v >> 6) & 63];
        o[3] = DIGITS[v & 63];
    }
    if (i < len) { /* one or two bytes left: pad to four characters */
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < len ? (uint32_t)in[i + 1] << 8 : 0);
        o[0] = DIGITS[v >> 18];
        o[1] = DIGITS[(v >> 12) & 63];
        o[2] = i + 1 < len ? DIGITS[(v >> 6) & 63] : '=';
        o[3] = '=';
        o += 4;
    }
    *o = 0;
    return out;
}
