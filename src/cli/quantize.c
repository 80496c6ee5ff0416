/* hadm quantize --type bf16|f16|q8 IN OUT
 *
 * Rewrites a model with its weights (".weight" tensors of two or more
 * dimensions: every Linear and convolution) in a smaller type; biases, norms,
 * embeddings and tables stay F32. q8 stores int8 values with one F32 scale
 * per output channel (row 0 of the weight), as `<name>_scale`:
 * value = q * scale, scale = max|row| / 127. The result loads directly; its
 * precision then defaults to what it holds (bf16 for bf16/f16, int8 for q8). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "io/safetensors.h"
#include "ops/ops.h"
#include "util/err.h"

typedef enum { Q_BF16, Q_F16, Q_Q8 } quant_type;

typedef struct {
    st_writer *w;
    void **owned;
    int n_owned;
    size_t bytes_in, bytes_out;
    int converted, kept;
} quant_job;

static void quantize_usage(FILE *out)
{
    fprintf(out,
            "usage: hadm quantize --type bf16|f16|q8 IN.safetensors OUT.safetensors\n\n"
            "Writes a copy of a model with its Linear and convolution weights in a smaller\n"
            "type: bf16 or f16 (half the size) or q8 (int8 with a scale per output channel,\n"
            "about a quarter). Biases, norms and tables stay F32. The file loads directly;\n"
            "detect and serve then run it in bf16 (bf16/f16 files) or int8 (q8) unless\n"
            "--precision says otherwise.\n");
}

static int is_weight(const st_tensor *t)
{
    size_t n = strlen(t->name);
    return t->ndim >= 2 && n > 7 && !strcmp(t->name + n - 7, ".weight") &&
           (t->dtype == ST_F32 || t->dtype == ST_BF16 || t->dtype == ST_F16 || t->dtype == ST_I8);
}

static int is_scale_of_weight(const st_file *f, const char *name)
{
    size_t n = strlen(name);
    if (n < 13 || strcmp(name + n - 13, ".weight_scale"))
        return 0;
    char base[256];
    if (n - 6 >= sizeof base)
        return 0;
    memcpy(base, name, n - 6);
    base[n - 6] = 0;
    const st_tensor *w = st_find(f, base);
    return w && w->dtype == ST_I8;
}

static void *own(quant_job *j, size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    void **o = p ? realloc(j->owned, (size_t)(j->n_owned + 1) * sizeof *o) : NULL;
    if (!o) {
        free(p);
        return NULL;
    }
    j->owned = o;
    return j->owned[j->n_owned++] = p;
}

/* Values of weight t as f32 (dequantising an int8 input with its scales). */
static hadm_status weight_f32(const st_file *f, const st_tensor *t, float *out, hadm_error *err)
{
    static const ops_src_type types[] = {[ST_F32] = OPS_SRC_F32, [ST_BF16] = OPS_SRC_BF16,
                                         [ST_F16] = OPS_SRC_F16, [ST_I8] = OPS_SRC_S8};
    ops_wpart part = {t->data, types[t->dtype], NULL, (int)t->shape[0]};
    if (t->dtype == ST_I8) {
        char key[300];
        snprintf(key, sizeof key, "%s_scale", t->name);
        const st_tensor *sc = st_find(f, key);
        if (!sc || sc->dtype != ST_F32 || sc->numel != t->shape[0])
            return hadm_fail(err, HADM_ERR_FORMAT, "int8 tensor '%s' has no valid '%s'", t->name, key);
        part.scale = sc->data;
    }
    ops_part_to_f32(&part, t->numel / t->shape[0], t->numel, out);
    return HADM_OK;
}

static hadm_status add_weight(quant_job *j, const st_file *f, const st_tensor *t, quant_type q,
                              hadm_error *err)
{
    int64_t rows = t->shape[0], K = t->numel / rows;
    float *v = malloc((size_t)t->numel * sizeof *v);
    if (!v)
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory");
    hadm_status s = weight_f32(f, t, v, err);
    if (s) {
        free(v);
        return s;
    }
    size_t esz = q == Q_Q8 ? 1 : 2;
    void *data = own(j, (size_t)t->numel * esz);
    float *scale = q == Q_Q8 ? own(j, (size_t)rows * sizeof *scale) : NULL;
    if (!data || (q == Q_Q8 && !scale)) {
        free(v);
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory");
    }
    if (q == Q_Q8) {
        ops_wpart src = {v, OPS_SRC_F32, NULL, (int)rows};
        float *row = malloc((size_t)K * sizeof *row);
        if (row)
            ops_part_convert(&src, K, OPS_S8, data, scale, row);
        free(row);
        if (!row)
            s = hadm_fail(err, HADM_ERR_NOMEM, "out of memory");
    } else {
        uint16_t *h = data;
        for (int64_t i = 0; i < t->numel; i++)
            h[i] = q == Q_BF16 ? ops_f32_to_bf16(v[i]) : ops_f32_to_f16(v[i]);
    }
    free(v);
    st_dtype dt = q == Q_Q8 ? ST_I8 : q == Q_BF16 ? ST_BF16 : ST_F16;
    if (!s)
        s = st_writer_add(j->w, t->name, dt, t->ndim, t->shape, data, err);
    if (!s && q == Q_Q8) {
        char key[300];
        snprintf(key, sizeof key, "%s_scale", t->name);
        s = st_writer_add(j->w, key, ST_F32, 1, &rows, scale, err);
        j->bytes_out += (size_t)rows * sizeof *scale;
    }
    j->bytes_out += (size_t)t->numel * esz;
    j->converted++;
    return s;
}

static hadm_status quantize_file(const char *in, const char *out, quant_type q, quant_job *j,
                                 hadm_error *err)
{
    hadm_model *m = NULL;
    hadm_open_options opt = {.threads = 1, .precision = HADM_PRECISION_F32};
    hadm_status s = hadm_model_open(in, &opt, &m, err);   /* refuses anything not a valid model */
    hadm_model_close(m);
    st_file *f = NULL;
    if (s || (s = st_open(in, &f, err)))
        return s;
    j->w = st_writer_new();
    if (!j->w)
        s = hadm_fail(err, HADM_ERR_NOMEM, "out of memory");
    static const char *const meta[] = {"format", "hadm.variant", "hadm.classes", "hadm.config"};
    for (size_t i = 0; !s && i < sizeof meta / sizeof meta[0]; i++)
        if (st_meta(f, meta[i]))
            s = st_writer_meta(j->w, meta[i], st_meta(f, meta[i]), err);
    static const char *const names[] = {"bf16", "f16", "q8"};
    if (!s)
        s = st_writer_meta(j->w, "hadm.quantized", names[q], err);
    for (int i = 0; !s && i < st_count(f); i++) {
        const st_tensor *t = st_at(f, i);
        j->bytes_in += t->nbytes;
        if (is_scale_of_weight(f, t->name))
            continue;                             /* regenerated with its weight */
        if (is_weight(t)) {
            s = add_weight(j, f, t, q, err);
        } else {
            s = st_writer_add(j->w, t->name, t->dtype, t->ndim, t->shape, t->data, err);
            j->bytes_out += t->nbytes;
            j->kept++;
        }
    }
    if (!s)
        s = st_writer_save(j->w, out, err);
    st_writer_free(j->w);
    st_close(f);
    return s;
}

hadm_status quantize_model(const char *in, const char *out, const char *type, hadm_error *err)
{
    quant_type q = !strcmp(type, "bf16") ? Q_BF16 : !strcmp(type, "f16") ? Q_F16 : Q_Q8;
    quant_job j = {0};
    hadm_status s = quantize_file(in, out, q, &j, err);
    for (int i = 0; i < j.n_owned; i++)
        free(j.owned[i]);
    free(j.owned);
    return s;
}

int cmd_quantize(int argc, char **argv)
{
    const char *type = NULL, *files[2] = {0};
    int nfiles = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            quantize_usage(stdout);
            return 0;
        } else if (!strncmp(argv[i], "--type=", 7)) {
            type = argv[i] + 7;
        } else if (!strcmp(argv[i], "--type")) {
            if (i + 1 >= argc) {
                cli_error("--type needs a value: bf16, f16 or q8");
                return 2;
            }
            type = argv[++i];
        } else if (argv[i][0] == '-' && argv[i][1]) {
            cli_error("unknown option '%s' (see hadm quantize --help)", argv[i]);
            return 2;
        } else if (nfiles < 2) {
            files[nfiles++] = argv[i];
        } else {
            cli_error("expected IN and OUT, got a third file '%s'", argv[i]);
            return 2;
        }
    }
    quant_type q = !type ? -1 : !strcmp(type, "bf16") ? Q_BF16 : !strcmp(type, "f16") ? Q_F16
                 : !strcmp(type, "q8") ? Q_Q8 : -1;
    if ((int)q < 0 || nfiles != 2) {
        cli_error(nfiles != 2 ? "expected IN and OUT files (see hadm quantize --help)"
                              : "--type must be bf16, f16 or q8");
        return 2;
    }
    quant_job j = {0};
    hadm_error err = {0};
    hadm_status s = quantize_file(files[0], files[1], q, &j, &err);
    for (int i = 0; i < j.n_owned; i++)
        free(j.owned[i]);
    free(j.owned);
    if (s) {
        cli_error("%s", err.msg);
        return 1;
    }
    fprintf(stderr, "hadm: wrote %s (%s): %d weights converted, %d tensors kept, %.1f MB -> %.1f MB (%.0f%%)\n",
            files[1], type, j.converted, j.kept, j.bytes_in / 1e6, j.bytes_out / 1e6,
            100.0 * j.bytes_out / (j.bytes_in ? j.bytes_in : 1));
    return 0;
}
