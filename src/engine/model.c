/* Opening a model: map the file, parse and check the config, bind every
 * tensor (dtype and shape checked against the config), and compute the
 * tables that depend only on the config (pos-embed interpolation, RoPE). */
#include "engine/model.h"

#include <math.h>
#include <stdint.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/cuda_hooks.h"
#include "engine/synth.h"
#include "engine/weights.h"
#include "util/err.h"

static hadm_status check_shape(const st_tensor *t, const char *name, int ndim, const int64_t *shape,
                               hadm_error *err)
{
    int ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++)
        ok = t->shape[i] == shape[i];
    if (ok)
        return HADM_OK;
    char got[128] = "", want[128] = "";
    for (int i = 0; i < t->ndim; i++)
        snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", i ? "," : "", (long long)t->shape[i]);
    for (int i = 0; i < ndim; i++)
        snprintf(want + strlen(want), sizeof want - strlen(want), "%s%lld", i ? "," : "", (long long)shape[i]);
    return hadm_fail(err, HADM_ERR_FORMAT, "tensor '%s' has shape [%s], config implies [%s]", name, got,
                     want);
}

/* Weights (".weight" tensors of 2+ dims) may also be BF16, F16 or I8 (files
 * from hadm quantize); everything else must be F32. */
static int reduced_allowed(const char *name, int ndim)
{
    size_t n = strlen(name);
    return ndim >= 2 && n > 7 && !strcmp(name + n - 7, ".weight");
}

static hadm_status check_tensor(const st_tensor *t, const char *name, int ndim,
                                const int64_t *shape, hadm_error *err)
{
    if (!t)
        return hadm_fail(err, HADM_ERR_FORMAT, "tensor '%s' is missing", name);
    int reduced = t->dtype == ST_BF16 || t->dtype == ST_F16 || t->dtype == ST_I8;
    if (t->dtype != ST_F32 && !(reduced && reduced_allowed(name, ndim)))
        return hadm_fail(err, HADM_ERR_FORMAT, "tensor '%s' has dtype %s, expected F32%s", name,
                         st_dtype_name(t->dtype), reduced_allowed(name, ndim) ? ", BF16, F16 or I8" : "");
    /* The weights are used in place from the mapping, so they must sit on
     * their element size (writers pad the header to 8 bytes for this). */
    size_t esz = st_dtype_size(t->dtype);
    if ((uintptr_t)t->data % esz)
        return hadm_fail(err, HADM_ERR_FORMAT,
                         "tensor '%s' is not %zu-byte aligned in the file (header not padded?)", name, esz);
    return check_shape(t, name, ndim, shape, err);
}

hadm_status model_weight_part(const struct hadm_model *m, const char *name, int ndim,
                              const int64_t *shape, ops_wpart *out, hadm_error *err)
{
    const st_tensor *t = st_find(m->file, name);
    hadm_status s = check_tensor(t, name, ndim, shape, err);
    if (s)
        return s;
    static const ops_src_type types[] = {[ST_F32] = OPS_SRC_F32, [ST_BF16] = OPS_SRC_BF16,
                                         [ST_F16] = OPS_SRC_F16, [ST_I8] = OPS_SRC_S8};
    *out = (ops_wpart){t->data, types[t->dtype], NULL, (int)shape[0]};
    if (t->dtype != ST_I8)
        return HADM_OK;
    char key[200];
    snprintf(key, sizeof key, "%s_scale", name);
    const st_tensor *sc = st_find(m->file, key);
    if (!sc)
        return hadm_fail(err, HADM_ERR_FORMAT, "int8 tensor '%s' has no '%s'", name, key);
    if ((s = check_tensor(sc, key, 1, shape, err)))
        return s;
    const float *v = sc->data;
    for (int64_t i = 0; i < shape[0]; i++)
        if (!(v[i] > 0) || !isfinite(v[i]))
            return hadm_fail(err, HADM_ERR_FORMAT, "'%s'[%lld] is %g, expected a positive scale", key,
                             (long long)i, v[i]);
    out->scale = v;
    return HADM_OK;
}

hadm_status model_tensor(const struct hadm_model *m, const char *name, const float **out,
                         hadm_error *err, int ndim, ...)
{
    int64_t shape[ST_MAX_DIMS];
    va_list ap;
    va_start(ap, ndim);
    for (int i = 0; i < ndim && i < ST_MAX_DIMS; i++)
        shape[i] = va_arg(ap, int64_t);
    va_end(ap);
    const st_tensor *t = st_find(m->file, name);
    hadm_status s = check_tensor(t, name, ndim, shape, err);
    if (!s && t->dtype != ST_F32)
        s = hadm_fail(err, HADM_ERR_FORMAT, "tensor '%s' has dtype %s, expected F32", name,
                      st_dtype_name(t->dtype));
    if (!s)
        *out = t->data;
    return s;
}

/* Linear weights used only packed (model_pack_block, model_pack_heads):
 * the ViT's and the box heads' fc layers. */
static int is_packed_linear(const char *name)
{
    int s, j, end = 0;
    if (sscanf(name, "roi_heads.box_head.%d.fc%d.weight%n", &s, &j, &end) == 2 && name[end] == 0)
        return 1;
    static const char *const ends[] = {".attn.q_proj.weight", ".attn.k_proj.weight", ".attn.v_proj.weight",
                                       ".attn.proj.weight",   ".mlp.w1.weight",      ".mlp.w2.weight",
                                       ".mlp.w3.weight"};
    size_t n = strlen(name);
    if (strncmp(name, "backbone.net.blocks.", 20))
        return 0;
    for (size_t i = 0; i < sizeof ends / sizeof ends[0]; i++) {
        size_t e = strlen(ends[i]);
        if (n > e && !strcmp(name + n - e, ends[i]))
            return 1;
    }
    return 0;
}

float *model_own(struct hadm_model *m, size_t bytes)
{
    if (m->n_owned == m->cap_owned) {
        int cap = m->cap_owned ? 2 * m->cap_owned : 64;
        void **p = realloc(m->owned, (size_t)cap * sizeof *p);
        if (!p)
            return NULL;
        m->owned = p;
        m->cap_owned = cap;
    }
    float *buf = malloc(bytes ? bytes : 1);
    if (buf)
        m->owned[m->n_owned++] = buf;
    return buf;
}

/* F32 tensors are used in place, except vectors (below). A reduced-precision
 * weight is expanded to an owned f32 copy, except the ViT Linear weights:
 * those are only ever used packed, and are packed straight from the file
 * (model_pack_block). */
static hadm_status bind_visit(void *user, const char *name, int ndim, const int64_t *shape,
                              const float **slot, ops_src_type *type, hadm_error *err)
{
    struct hadm_model *m = user;
    ops_wpart part;
    hadm_status s = model_weight_part(m, name, ndim, shape, &part, err);
    if (s)
        return s;
    int64_t numel = 1;
    for (int i = 0; i < ndim; i++)
        numel *= shape[i];
    m->params += numel;
    /* Vectors (biases, norms: ~2 MB at full size) are copied: read in place
     * every forward, each would keep its neighbours' pages mapped too (the
     * kernel maps 64 KB around a fault), and those are packed weights'
     * pages, released after packing. */
    if (slot && part.type == OPS_SRC_F32 && ndim != 1) {
        *slot = part.data;
        return HADM_OK;
    }
    /* a reduced file's convolution weights are read in place too, widened
     * per use: expanded at load they were ~65 MB of f32 per full-size model */
    if (slot && type && (part.type == OPS_SRC_BF16 || part.type == OPS_SRC_F16)) {
        *slot = part.data;
        *type = part.type;
        return HADM_OK;
    }
    if (!slot)
        return HADM_OK;
    if (is_packed_linear(name)) {
        *slot = NULL;
        return HADM_OK;
    }
    float *buf = model_own(m, (size_t)numel * sizeof *buf);
    if (!buf)
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory expanding '%s'", name);
    ops_part_to_f32(&part, numel / shape[0], numel, buf);
    *slot = buf;
    return HADM_OK;
}

/* PyTorch bicubic (A = -0.75, align_corners=False) weights for one output index. */
static void bicubic_taps(int in, int out, int o, int idx[4], double w[4])
{
    const double A = -0.75;
    double src = (double)in / out * (o + 0.5) - 0.5;
    double f = floor(src), t = src - f;
    for (int k = 0; k < 4; k++) {
        int i = (int)f - 1 + k;
        idx[k] = i < 0 ? 0 : i > in - 1 ? in - 1 : i;
    }
    double t1 = t + 1, t2 = 1 - t, t3 = 2 - t;
    w[0] = ((A * t1 - 5 * A) * t1 + 8 * A) * t1 - 4 * A;
    w[1] = ((A + 2) * t - (A + 3)) * t * t + 1;
    w[2] = ((A + 2) * t2 - (A + 3)) * t2 * t2 + 1;
    w[3] = ((A * t3 - 5 * A) * t3 + 8 * A) * t3 - 4 * A;
}

/* The stored pos_embed (1, [cls +] g*g, D), checked once at load. */
static hadm_status find_pos_embed(struct hadm_model *m, hadm_error *err)
{
    const hadm_config *c = &m->cfg;
    int g = c->pretrain_img_size / c->patch, D = c->embed_dim;
    const float *pe;
    hadm_status s = model_tensor(m, "backbone.net.pos_embed", &pe, err, 3, (int64_t)1,
                                 (int64_t)(g * g + (c->pretrain_cls_token ? 1 : 0)), (int64_t)D);
    if (!s)
        m->w.pos_src = pe + (c->pretrain_cls_token ? D : 0);
    return s;
}

/* pos_embed g x g x D -> G x G x D (spec 2.2), recomputed per forward
 * (~20 ms) rather than held: 16 MB per full-size model. */
void model_pos_embed(const struct hadm_model *m, float *out)
{
    const hadm_config *c = &m->cfg;
    int g = c->pretrain_img_size / c->patch, G = c->img_size / c->patch, D = c->embed_dim;
    const float *pe = m->w.pos_src;
    if (g == G) {
        memcpy(out, pe, (size_t)G * G * D * sizeof *out);
        return;
    }
#pragma omp parallel for schedule(static)
    for (int oy = 0; oy < G; oy++) {
        int iy[4];
        double wy[4];
        bicubic_taps(g, G, oy, iy, wy);
        for (int ox = 0; ox < G; ox++) {
            int ix[4];
            double wx[4];
            bicubic_taps(g, G, ox, ix, wx);
            for (int d = 0; d < D; d++) {
                double acc = 0;
                for (int j = 0; j < 4; j++) {
                    double row = 0;
                    for (int i = 0; i < 4; i++)
                        row += wx[i] * pe[((size_t)iy[j] * g + ix[i]) * D + d];
                    acc += wy[j] * row;
                }
                out[((size_t)oy * G + ox) * D + d] = (float)acc;
            }
        }
    }
}

/* RoPE cos/sin tables (spec 2.6) for a side-Sg grid: [Sg*Sg][HD], computed in
 * float32 as the original does. A stored table of the right shape wins. */
static hadm_status make_rope(struct hadm_model *m, const char *name, int Sg, float **cos_out,
                             float **sin_out, hadm_error *err)
{
    const hadm_config *c = &m->cfg;
    int HD = c->head_dim, half = HD / 2;
    size_t n = (size_t)Sg * Sg * HD;
    float *cs = malloc(n * sizeof *cs), *sn = malloc(n * sizeof *sn);
    *cos_out = cs;
    *sin_out = sn;
    if (!cs || !sn)
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory");
    char key[96];
    snprintf(key, sizeof key, "backbone.net.%s.freqs_cos", name);
    const st_tensor *tc = st_find(m->file, key);
    snprintf(key, sizeof key, "backbone.net.%s.freqs_sin", name);
    const st_tensor *ts = st_find(m->file, key);
    if (tc || ts) {
        int64_t shape[2] = {(int64_t)Sg * Sg, HD};
        hadm_status s;
        snprintf(key, sizeof key, "backbone.net.%s.freqs_cos", name);
        if ((s = check_tensor(tc, key, 2, shape, err)))
            return s;
        snprintf(key, sizeof key, "backbone.net.%s.freqs_sin", name);
        if ((s = check_tensor(ts, key, 2, shape, err)))
            return s;
        memcpy(cs, tc->data, n * sizeof *cs);
        memcpy(sn, ts->data, n * sizeof *sn);
        return HADM_OK;
    }
    for (int r = 0; r < Sg; r++)
        for (int col = 0; col < Sg; col++)
            for (int d = 0; d < HD; d++) {
                int pos = d < half ? r : col, j = (d % half) / 2;
                float f = 1.0f / powf(c->rope_theta, (float)(2 * j) / (float)half);
                float t = (float)pos / (float)Sg * (float)c->rope_pt_seq_len;
                float a = t * f;
                cs[((size_t)r * Sg + col) * HD + d] = cosf(a);
                sn[((size_t)r * Sg + col) * HD + d] = sinf(a);
            }
    return HADM_OK;
}

/* Buffers the EMA may have drifted (FORMAT.md 1.3): use the file's copy when present. */
static void take_pixel_stats(struct hadm_model *m)
{
    const st_tensor *mean = st_find(m->file, "pixel_mean"), *std = st_find(m->file, "pixel_std");
    if (mean && mean->dtype == ST_F32 && mean->numel == 3)
        memcpy(m->cfg.pixel_mean, mean->data, 3 * sizeof(float));
    if (std && std->dtype == ST_F32 && std->numel == 3) {
        const float *v = std->data;
        if (v[0] != 0 && v[1] != 0 && v[2] != 0)
            memcpy(m->cfg.pixel_std, v, 3 * sizeof(float));
    }
}

static hadm_status model_prepare(struct hadm_model *m, hadm_error *err)
{
    const char *fmt = st_meta(m->file, "format");
    if (!fmt || strcmp(fmt, "hadm/1") != 0)
        return hadm_fail(err, HADM_ERR_FORMAT, "metadata 'format' is %s%s%s, expected \"hadm/1\"",
                         fmt ? "\"" : "", fmt ? fmt : "missing", fmt ? "\"" : "");
    hadm_status s = config_parse(&m->cfg, st_meta(m->file, "hadm.config"),
                                 st_meta(m->file, "hadm.variant"), st_meta(m->file, "hadm.classes"), err);
    if (s)
        return s;
    if (m->precision == HADM_PRECISION_AUTO) {
        const st_tensor *t = st_find(m->file, "backbone.net.blocks.0.mlp.w1.weight");
        st_dtype dt = t ? t->dtype : ST_F32;
        m->precision = dt == ST_I8 ? HADM_PRECISION_INT8
                       : dt == ST_BF16 || dt == ST_F16 ? HADM_PRECISION_BF16 : HADM_PRECISION_F32;
    }
    if ((s = weights_enumerate(&m->cfg, &m->w, bind_visit, m, err)))
        return s;
    if (m->cfg.use_abs_pos && (s = find_pos_embed(m, err)))
        return s;
    int G = m->cfg.img_size / m->cfg.patch;
    if ((s = make_rope(m, "rope_win", m->cfg.window_size, &m->w.rope_win_cos, &m->w.rope_win_sin, err)) ||
        (s = make_rope(m, "rope_glb", G, &m->w.rope_glb_cos, &m->w.rope_glb_sin, err)))
        return s;
    take_pixel_stats(m);
    /* What loading read stays in the page cache; weights read in place
     * fault back in at their first use (big ones are packed then). */
    st_release_all(m->file);
    return HADM_OK;
}

static struct hadm_model *model_new(const hadm_open_options *opt)
{
    struct hadm_model *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    pthread_mutex_init(&m->pool_lock, NULL);
    pthread_mutex_init(&m->pack_lock, NULL);
    m->threads = opt && opt->threads > 0 ? opt->threads : 0;
    m->precision = opt ? opt->precision : HADM_PRECISION_AUTO;
    return m;
}

hadm_status hadm_model_open(const char *path, const hadm_open_options *opt, hadm_model **out,
                            hadm_error *err)
{
    if (!path || !out)
        return hadm_fail(err, HADM_ERR_ARG, "hadm_model_open: NULL argument");
    *out = NULL;
    if (opt && (unsigned)opt->precision > HADM_PRECISION_INT8)
        return hadm_fail(err, HADM_ERR_ARG, "hadm_model_open: unknown precision %d", (int)opt->precision);
    if (opt && opt->device != HADM_DEVICE_CPU && !cuda_backend_built())
        return hadm_fail(err, HADM_ERR_UNSUPPORTED,
                         "%s: this build has no CUDA backend; rebuild with -DHADM_CUDA=ON", path);
    struct hadm_model *m = model_new(opt);
    if (!m)
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory");
    hadm_status s = st_open(path, &m->file, err);
    if (!s && (s = model_prepare(m, err)))
        hadm_error_prefix(err, "%s", path);
    if (!s)
        s = st_check_intact(m->file, err);
    if (!s && opt && opt->device == HADM_DEVICE_CUDA && (s = cuda_model_attach(m, opt, err)))
        hadm_error_prefix(err, "%s", path);
    if (s) {
        hadm_model_close(m);
        return s;
    }
    *out = m;
    return HADM_OK;
}

hadm_status hadm_model_open_demo(char variant, uint64_t seed, const hadm_open_options *opt,
                                 hadm_model **out, hadm_error *err)
{
    *out = NULL;
    hadm_config cfg;
    synth_model syn = {0};
    struct hadm_model *m = NULL;
    size_t len = 0;
    hadm_status s = config_default(&cfg, variant, 1, err);
    if (s)
        return s;
    if (!(s = synth_build(&cfg, seed, &syn, err))) {
        if (!(m = model_new(opt)))
            s = hadm_fail(err, HADM_ERR_NOMEM, "out of memory");
        else if (!(s = st_writer_serialize(syn.writer, &m->owned_buf, &len, err)) &&
                 !(s = st_open_buffer(m->owned_buf, len, variant == 'g' ? "<demo HADM-G>" : "<demo HADM-L>",
                                      &m->file, err)))
            s = model_prepare(m, err);
        if (!s && opt && opt->device != HADM_DEVICE_CPU)
            s = cuda_model_attach(m, opt, err);
    }
    synth_free(&syn);
    config_free(&cfg);
    if (s) {
        hadm_model_close(m);
        return s;
    }
    *out = m;
    return HADM_OK;
}

void hadm_model_close(hadm_model *m)
{
    if (!m)
        return;
    cuda_model_detach(m);
    while (m->free_ctx) {
        ctx_slot *n = m->free_ctx->next;
        ops_ctx_free(m->free_ctx->ops);
        free(m->free_ctx);
        m->free_ctx = n;
    }
    model_unpack_all(m);
    for (int i = 0; i < m->n_owned; i++)
        free(m->owned[i]);
    free(m->owned);
    free(m->w.rope_win_cos);
    free(m->w.rope_win_sin);
    free(m->w.rope_glb_cos);
    free(m->w.rope_glb_sin);
    config_free(&m->cfg);
    st_close(m->file);
    free(m->owned_buf);
    pthread_mutex_destroy(&m->pool_lock);
    pthread_mutex_destroy(&m->pack_lock);
    free(m);
}

hadm_status model_ctx_acquire(struct hadm_model *m, ops_ctx **out, hadm_error *err)
{
    pthread_mutex_lock(&m->pool_lock);
    ctx_slot *slot = m->free_ctx;
    if (slot)
        m->free_ctx = slot->next;
    pthread_mutex_unlock(&m->pool_lock);
    if (slot) {
        *out = slot->ops;
        free(slot);
        return HADM_OK;
    }
    hadm_status s = ops_ctx_new(m->threads, out, err);
    /* int8 runs the convolutions and attention's Q·Kᵀ in int8 too, but P·V
     * in f32: most probabilities of a 4096-key row are below u8's step.
     * bf16 computes in bf16 only where the CPU does that faster than f32;
     * elsewhere its bf16-packed weights are widened per layer (ops.h). */
    if (s)
        return s;
    ops_ctx_set_compute(*out, m->precision == HADM_PRECISION_BF16 && ops_bf16_native() ? OPS_BF16
                              : m->precision == HADM_PRECISION_INT8 ? OPS_S8 : OPS_F32);
    ops_ctx_keep_conv_weights(*out, m->precision != HADM_PRECISION_BF16);
    return HADM_OK;
}

void model_ctx_release(struct hadm_model *m, ops_ctx *c)
{
    ctx_slot *slot = malloc(sizeof *slot);
    if (!slot) {
        ops_ctx_free(c);
        return;
    }
    slot->ops = c;
    pthread_mutex_lock(&m->pool_lock);
    slot->next = m->free_ctx;
    m->free_ctx = slot;
    pthread_mutex_unlock(&m->pool_lock);
}

const char *hadm_model_variant(const hadm_model *m) { return m->cfg.variant; }
int hadm_model_num_classes(const hadm_model *m) { return m->cfg.num_classes; }
int hadm_model_input_size(const hadm_model *m) { return m->cfg.square_pad; }
int64_t hadm_model_param_count(const hadm_model *m) { return m->params; }
hadm_precision hadm_model_precision(const hadm_model *m) { return m->precision; }

const char *hadm_precision_name(hadm_precision p)
{
    static const char *const names[] = {"auto", "f32", "bf16", "int8"};
    return (unsigned)p < 4 ? names[p] : "?";
}

int hadm_precision_parse(const char *s, hadm_precision *out)
{
    for (int p = HADM_PRECISION_AUTO; p <= HADM_PRECISION_INT8; p++)
        if (s && !strcmp(s, hadm_precision_name(p))) {
            *out = p;
            return 0;
        }
    return -1;
}

const char *hadm_model_class_name(const hadm_model *m, int id)
{
    return id >= 0 && id < m->cfg.num_classes ? m->cfg.class_names[id] : NULL;
}
