#include "golden.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

static int by_name(const void *a, const void *b)
{
    return strcmp(((const golden_case *)a)->name, ((const golden_case *)b)->name);
}

static int int_pair(const cJSON *root, const char *key, int *a, int *b)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != 2)
        return 0;
    *a = cJSON_GetArrayItem(v, 0)->valueint;
    *b = cJSON_GetArrayItem(v, 1)->valueint;
    return 1;
}

static int load_case(golden_case *c, const char *root, const char *name)
{
    memset(c, 0, sizeof *c);
    snprintf(c->name, sizeof c->name, "%s", name);
    snprintf(c->dir, sizeof c->dir, "%s/%s", root, name);
    char path[1200];
    snprintf(path, sizeof path, "%s/expected.json", c->dir);
    c->json = (char *)test_read_file(path, NULL);
    CHECK(c->json != NULL, "%s: cannot read expected.json", name);
    if (!c->json)
        return 0;
    cJSON *j = cJSON_Parse(c->json);
    const cJSON *img = cJSON_GetObjectItemCaseSensitive(j, "image");
    const cJSON *var = cJSON_GetObjectItemCaseSensitive(j, "variant");
    int ok = cJSON_IsString(img) && cJSON_IsString(var) &&
             int_pair(j, "original_hw", &c->orig_h, &c->orig_w) &&
             int_pair(j, "resized_hw", &c->resized_h, &c->resized_w);
    CHECK(ok, "%s: expected.json lacks image/variant/original_hw/resized_hw", name);
    if (ok) {
        snprintf(c->image, sizeof c->image, "%s/%s", c->dir, img->valuestring);
        snprintf(c->variant, sizeof c->variant, "%s", var->valuestring);
    }
    cJSON_Delete(j);
    if (!ok)
        return 0;
    hadm_error err = {0};
    snprintf(path, sizeof path, "%s/expected.safetensors", c->dir);
    hadm_status s = st_open(path, &c->expected, &err);
    CHECK(s == HADM_OK, "%s: %s", name, err.msg);
    return s == HADM_OK;
}

int golden_cases(golden_case *cases, int max)
{
    const char *root = test_golden_dir();
    DIR *d = opendir(root);
    CHECK(d != NULL, "cannot open golden dir %s", root);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < max) {
        if (e->d_name[0] == '.')
            continue;
        char probe[1200];
        snprintf(probe, sizeof probe, "%s/%s/model.safetensors", root, e->d_name);
        FILE *f = fopen(probe, "rb");
        if (!f)
            continue;
        fclose(f);
        if (load_case(&cases[n], root, e->d_name))
            n++;
        else
            golden_case_free(&cases[n]);
    }
    closedir(d);
    qsort(cases, (size_t)n, sizeof *cases, by_name);
    return n;
}

void golden_case_free(golden_case *c)
{
    st_close(c->expected);
    free(c->json);
    c->expected = NULL;
    c->json = NULL;
}

double *golden_tensor(const golden_case *c, const char *name, int64_t *numel, const st_tensor **info)
{
    const st_tensor *t = st_find(c->expected, name);
    if (info)
        *info = t;
    if (!t)
        return NULL;
    double *out = malloc((size_t)(t->numel ? t->numel : 1) * sizeof *out);
    if (!out)
        return NULL;
    /* tensor data is only byte-aligned inside the file: copy each value out */
    const unsigned char *p = t->data;
    for (int64_t i = 0; i < t->numel; i++) {
        float f;
        double d;
        int64_t l;
        int32_t w;
        switch (t->dtype) {
        case ST_F32: memcpy(&f, p + 4 * i, 4), out[i] = f; break;
        case ST_F64: memcpy(&d, p + 8 * i, 8), out[i] = d; break;
        case ST_I64: memcpy(&l, p + 8 * i, 8), out[i] = (double)l; break;
        case ST_I32: memcpy(&w, p + 4 * i, 4), out[i] = w; break;
        case ST_U8: out[i] = p[i]; break;
        default: free(out); return NULL;
        }
    }
    *numel = t->numel;
    return out;
}

void trace_store_on_tensor(void *user, const char *name, trace_layout layout, const void *data,
                           int is_int, int ndim, const int64_t *shape)
{
    trace_store *st = user;
    if (st->n >= TRACE_STORE_MAX || ndim > 4)
        return;
    traced *t = &st->t[st->n++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->is_int = is_int, t->ndim = ndim, t->rows = ndim ? shape[0] : 1, t->numel = 1;
    for (int i = 0; i < ndim; i++)
        t->numel *= (t->shape[i] = shape[i]);
    t->data = malloc((size_t)(t->numel ? t->numel : 1) * sizeof *t->data);
    for (int64_t i = 0; t->data && i < t->numel; i++) {
        int64_t src = i;
        if (layout == TRACE_NHWC_OF_NCHW) { /* golden index i is (n, c, p) */
            int64_t C = shape[1], P = shape[2] * shape[3];
            src = i / (C * P) * C * P + i % P * C + i / P % C;
        }
        t->data[i] = is_int ? ((const int32_t *)data)[src] : ((const float *)data)[src];
    }
}

const traced *trace_store_find(const trace_store *st, const char *name)
{
    for (int i = st->n - 1; i >= 0; i--)
        if (!strcmp(st->t[i].name, name))
            return &st->t[i];
    return NULL;
}

void trace_store_clear(trace_store *st)
{
    for (int i = 0; i < st->n; i++)
        free(st->t[i].data);
    st->n = 0;
}

void golden_for_each(void (*fn)(const golden_case *c))
{
    static golden_case cases[64];
    int n = golden_cases(cases, 64);
    CHECK(n > 0, "no golden cases found under %s", test_golden_dir());
    for (int i = 0; i < n; i++) {
        fn(&cases[i]);
        golden_case_free(&cases[i]);
    }
}

hadm_model *golden_open_model(const golden_case *c)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/model.safetensors", c->dir);
    hadm_model *m = NULL;
    hadm_error err = {0};
    CHECK(hadm_model_open(path, NULL, &m, &err) == HADM_OK, "%s: %s", c->name, err.msg);
    return m;
}
