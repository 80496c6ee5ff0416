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

#include "engine/synth.h"
#include "engine/weights.h"
#include "util/err.h"

static hadm_status check_tensor(const st_tensor *t, const char *name, int ndim,
                                const int64_t *shape, hadm_error *err)
{
    if (!t)
        return hadm_fail(err, HADM_ERR_FORMAT, "tensor '%s' is missing", name);
    if (t->dtype != ST_F32)
        return hadm_fail(err, HADM_ERR_FORMAT, "tensor '%s' has dtype %s, expected F32", name,
                         st_dtype_name(t->dtype));
    /* The weights are used in place from the mapping, so they must sit on
     * their element size (writers pad the header to 8 bytes for this). */
    if ((uintptr_t)t->data % sizeof(float))
        return hadm_fail(err, HADM_ERR_FORMAT,
                         "tensor '%s' is not 4-byte aligned in the file (header not padded?)", name);
    int ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++)
        ok = t->shape[i] == shape[i];
    if (!ok) {
        char got[128] = "", want[128] = "";
        for (int i = 0; i < t->ndim; i++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", i ? "," : "", (long long)t->shape[i]);
        for (int i = 0; i < ndim; i++)
            snprintf(want + strlen(want), sizeof want - strlen(want), "%s%lld", i ? "," : "", (long long)shape[i]);
        return hadm_fail(err, HADM_ERR_FORMAT, "tensor '%s' has shape [%s], config implies [%s]",
                         name, got, want);
    }
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
    if (!s)
        *out = t->data;
    return s;
}

static hadm_status bind_visit(void *user, const char *name, int ndim, const int64_t *shape,
                              const float **slot, hadm_error *err)
{
    struct hadm_model *m = user;
    const st_tensor *t = st_find(m->file, name);
    hadm_status s = check_tensor(t, name, ndim, shape, err);
    if (!s && slot)
        *slot = t->data;
    if (!s)
        m->params += t->numel;
    return s;
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

/* pos_embed (1, [cls +] g*g, D) -> G x G x D, spec 2.2. */
static hadm_status make_pos_embed(struct hadm_model *m, hadm_error *err)
{
    const hadm_config *c = &m->cfg;
    int g = c->pretrain_img_size / c->patch, G = c->img_size / c->patch, D = c->embed_dim;
    const float *pe;
    hadm_status s = model_tensor(m, "backbone.net.pos_embed", &pe, err, 3, (int64_t)1,
                                 (int64_t)(g * g + (c->pretrain_cls_token ? 1 : 0)), (int64_t)D);
    if (s)
        return s;
    if (c->pretrain_cls_token)
        pe += D;
    float *out = malloc((size_t)G * G * D * sizeof *out);
    if (!(m->w.pos_embed = out))
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory");
    if (g == G) {
        memcpy(out, pe, (size_t)G * G * D * sizeof *out);
        return HADM_OK;
    }
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
    return HADM_OK;
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

/* The ViT's Linear weights are 80% of the work (spec 8): they are reordered
 * once for the 4096-row matmuls they serve, after which the kernel may drop
 * the mapped originals so the model is not held twice in memory. */
hadm_status model_pack_block(const struct hadm_model *cm, int i, ops_ctx *ctx, hadm_error *err)
{
    struct hadm_model *m = (struct hadm_model *)cm;   /* the pack cache is the mutable part */
    const hadm_config *c = &m->cfg;
    int G = c->img_size / c->patch, D = c->embed_dim, F = c->mlp_hidden;
    vit_block_w *b = &m->w.blocks[i];
    hadm_status s = HADM_OK;
    pthread_mutex_lock(&m->pack_lock);
    if (!b->packed && !getenv("HADM_NO_PACK")) {
        struct { const float *w; ops_packed **pk; int n, k; } jobs[7] = {
            {b->q_w, &b->q_pk, D, D},     {b->k_w, &b->k_pk, D, D},   {b->v_w, &b->v_pk, D, D},
            {b->proj.w, &b->proj_pk, D, D}, {b->w1.w, &b->w1_pk, F, D}, {b->w2.w, &b->w2_pk, F, D},
            {b->w3.w, &b->w3_pk, D, F}};
        for (int j = 0; !s && j < 7; j++) {
            s = ops_pack_weights(ctx, G * G, jobs[j].n, jobs[j].k, jobs[j].w, jobs[j].pk, err);
            if (!s)
                st_release_pages(m->file, jobs[j].w, (size_t)jobs[j].n * jobs[j].k * sizeof(float));
        }
    }
    b->packed = !s;
    pthread_mutex_unlock(&m->pack_lock);
    return s;
}

static void unpack_vit(struct hadm_model *m)
{
    for (int i = 0; i < CFG_MAX_BLOCKS; i++) {
        vit_block_w *b = &m->w.blocks[i];
        ops_packed **all[7] = {&b->q_pk, &b->k_pk, &b->v_pk, &b->proj_pk, &b->w1_pk, &b->w2_pk, &b->w3_pk};
        for (int j = 0; j < 7; j++) {
            ops_packed_free(*all[j]);
            *all[j] = NULL;
        }
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
    if ((s = weights_enumerate(&m->cfg, &m->w, bind_visit, m, err)))
        return s;
    if (m->cfg.use_abs_pos && (s = make_pos_embed(m, err)))
        return s;
    int G = m->cfg.img_size / m->cfg.patch;
    if ((s = make_rope(m, "rope_win", m->cfg.window_size, &m->w.rope_win_cos, &m->w.rope_win_sin, err)) ||
        (s = make_rope(m, "rope_glb", G, &m->w.rope_glb_cos, &m->w.rope_glb_sin, err)))
        return s;
    take_pixel_stats(m);
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
    return m;
}

hadm_status hadm_model_open(const char *path, const hadm_open_options *opt, hadm_model **out,
                            hadm_error *err)
{
    if (!path || !out)
        return hadm_fail(err, HADM_ERR_ARG, "hadm_model_open: NULL argument");
    *out = NULL;
    if (opt && opt->device != HADM_DEVICE_CPU)
        return hadm_fail(err, HADM_ERR_UNSUPPORTED, "%s: this build has no CUDA backend", path);
    struct hadm_model *m = model_new(opt);
    if (!m)
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory");
    hadm_status s = st_open(path, &m->file, err);
    if (!s && (s = model_prepare(m, err)))
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
    while (m->free_ctx) {
        ctx_slot *n = m->free_ctx->next;
        ops_ctx_free(m->free_ctx->ops);
        free(m->free_ctx);
        m->free_ctx = n;
    }
    unpack_vit(m);
    free(m->w.pos_embed);
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
    return ops_ctx_new(m->threads, out, err);
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

const char *hadm_model_class_name(const hadm_model *m, int id)
{
    return id >= 0 && id < m->cfg.num_classes ? m->cfg.class_names[id] : NULL;
}
