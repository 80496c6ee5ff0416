#include "engine/synth.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/weights.h"
#include "util/err.h"

typedef struct {
    uint64_t state;
    float *next;        /* where the next tensor goes in the backing store */
    st_writer *w;
} synth_run;

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform in [-1, 1). */
static float uniform(uint64_t *s) { return (float)((double)(splitmix(s) >> 11) * 0x1.0p-52 - 1.0); }

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

static int is_norm_weight(const char *name)
{
    return ends_with(name, "norm.weight") || ends_with(name, "norm1.weight") ||
           ends_with(name, "norm2.weight") || ends_with(name, "ffn_ln.weight") ||
           !strcmp(name, "backbone.simfp_2.1.weight");
}

static hadm_status synth_visit(void *user, const char *name, int ndim, const int64_t *shape,
                               const float **slot, ops_src_type *type, hadm_error *err)
{
    (void)type;
    (void)slot;
    synth_run *r = user;
    int64_t n = 1, fan_in = ndim > 1 ? 1 : 0;
    for (int i = 0; i < ndim; i++)
        n *= shape[i];
    for (int i = 1; i < ndim; i++)
        fan_in *= shape[i];
    /* ConvTranspose weights are [in][out][k][k]: fan-in is the first dim. */
    if (strstr(name, "simfp_") && ndim == 4 && (strstr(name, ".0.weight") || strstr(name, ".3.weight")) &&
        !strstr(name, "simfp_4") && !strstr(name, "simfp_5"))
        fan_in = shape[0];
    float *d = r->next;
    r->next += n;
    float scale = fan_in ? (float)sqrt(3.0 / (double)fan_in) : 0.02f;
    for (int64_t i = 0; i < n; i++)
        d[i] = is_norm_weight(name) ? 1.0f + 0.1f * uniform(&r->state) : scale * uniform(&r->state);
    return st_writer_add(r->w, name, ST_F32, ndim, shape, d, err);
}

static hadm_status add_metadata(st_writer *w, const hadm_config *cfg, uint64_t seed, hadm_error *err)
{
    char *json = config_to_json(cfg);
    char classes[2048] = "[", note[160];
    for (int i = 0; i < cfg->num_classes; i++)
        snprintf(classes + strlen(classes), sizeof classes - strlen(classes), "%s\"%s\"", i ? ", " : "",
                 cfg->class_names[i]);
    snprintf(classes + strlen(classes), sizeof classes - strlen(classes), "]");
    snprintf(note, sizeof note, "hadm synth: random weights (seed %llu); not a trained model",
             (unsigned long long)seed);
    hadm_status s = json ? HADM_OK : hadm_fail(err, HADM_ERR_NOMEM, "out of memory");
    if (!s)
        s = st_writer_meta(w, "format", "hadm/1", err);
    if (!s)
        s = st_writer_meta(w, "hadm.variant", cfg->variant, err);
    if (!s)
        s = st_writer_meta(w, "hadm.classes", classes, err);
    if (!s)
        s = st_writer_meta(w, "hadm.config", json, err);
    if (!s)
        s = st_writer_meta(w, "hadm.note", note, err);
    free(json);
    return s;
}

hadm_status synth_build(const hadm_config *cfg, uint64_t seed, synth_model *out, hadm_error *err)
{
    memset(out, 0, sizeof *out);
    int64_t n = weights_param_count(cfg);
    out->data = malloc((size_t)n * sizeof(float));
    out->writer = st_writer_new();
    if (!out->data || !out->writer) {
        synth_free(out);
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory (%lld parameters)", (long long)n);
    }
    synth_run r = {seed * 0x2545F4914F6CDD1Dull + 1, out->data, out->writer};
    hadm_weights scratch;
    hadm_status s = weights_enumerate(cfg, &scratch, synth_visit, &r, err);
    if (!s)
        s = add_metadata(out->writer, cfg, seed, err);
    if (s)
        synth_free(out);
    return s;
}

void synth_free(synth_model *s)
{
    st_writer_free(s->writer);
    free(s->data);
    s->writer = NULL;
    s->data = NULL;
}
