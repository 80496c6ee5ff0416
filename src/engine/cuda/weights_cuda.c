/* Weights to the GPU, once, at load: GEMM operands converted to bf16 in the
 * layout the device forward multiplies with (W[N][K]), vectors and tables
 * as f32, all in one allocation sized by cuda_weight_bytes. */
#include <stdlib.h>
#include <string.h>

#include "engine/cuda/cuda_model.h"
#include "util/err.h"

#define ALIGN 256

typedef struct {
    cuda_model *cm;
    const struct hadm_model *m;
    hadm_error *err;
    hadm_status st;
    uint16_t *tmp;        /* host staging for conversions */
    size_t tmp_n;
} uploader;

/* Round to nearest even, NaN kept quiet. */
static uint16_t to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static void *put(uploader *u, const void *src, size_t bytes)
{
    if (u->st)
        return NULL;
    cuda_model *cm = u->cm;
    if (cm->wused + bytes > cm->wsize) {
        u->st = hadm_fail(u->err, HADM_ERR_INTERNAL, "cuda weights: plan of %zu bytes exceeded", cm->wsize);
        return NULL;
    }
    void *dst = cm->wblock + cm->wused;
    cm->wused += (bytes + ALIGN - 1) / ALIGN * ALIGN;
    u->st = cuda_upload(dst, src, bytes, u->err);
    return u->st ? NULL : dst;
}

static uint16_t *staging(uploader *u, size_t n)
{
    if (n > u->tmp_n) {
        free(u->tmp);
        u->tmp = malloc(n * sizeof *u->tmp);
        u->tmp_n = u->tmp ? n : 0;
    }
    if (!u->tmp && !u->st)
        u->st = hadm_fail(u->err, HADM_ERR_NOMEM, "out of memory (weight staging)");
    return u->tmp;
}

static const float *vec(uploader *u, const float *v, int64_t n)
{
    return v ? put(u, v, (size_t)n * sizeof(float)) : NULL;
}

/* rows x cols f32 -> bf16 in the same layout, or transposed when transpose */
static void refuse_reduced(uploader *u)
{
    if (!u->st)
        u->st = hadm_fail(u->err, HADM_ERR_UNSUPPORTED,
                          "the CUDA backend uploads float32 weights; this model's are stored in reduced precision");
}

static const bf16_t *mat(uploader *u, const float *w, int64_t rows, int64_t cols, int transpose)
{
    if (!w) {
        refuse_reduced(u);
        return NULL;
    }
    uint16_t *t = staging(u, (size_t)(rows * cols));
    if (!t)
        return NULL;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++)
            t[transpose ? c * rows + r : r * cols + c] = to_bf16(w[r * cols + c]);
    return put(u, t, (size_t)(rows * cols) * 2);
}

/* [Cout][Cin][k][k] -> [Cout][k][k][Cin] bf16, the im2col column order */
/* A weight the CPU path may read in place as bf16/f16 (linear_w.wt): the
 * uploader reads f32 only, so such a model is refused like mat() does. */
static const float *f32_only(uploader *u, const float *w, ops_src_type t)
{
    if (t == OPS_SRC_F32)
        return w;
    refuse_reduced(u);
    return NULL;
}

static const bf16_t *conv(uploader *u, const float *w, int Cout, int Cin, int k)
{
    size_t n = (size_t)Cout * Cin * k * k;
    if (!w)
        return NULL;
    uint16_t *t = staging(u, n);
    if (!t)
        return NULL;
#pragma omp parallel for schedule(static)
    for (int o = 0; o < Cout; o++)
        for (int c = 0; c < Cin; c++)
            for (int tap = 0; tap < k * k; tap++)
                t[((size_t)o * k * k + tap) * Cin + c] = to_bf16(w[((size_t)o * Cin + c) * k * k + tap]);
    return put(u, t, n * 2);
}

/* Stacks row blocks (rows_i x K each) and zero rows up to total, as bf16 + f32 bias. */
static dlin stacked(uploader *u, const float *const *w, const float *const *b, const int *rows, int parts, int total,
                    int K)
{
    dlin out = {0};
    uint16_t *t = staging(u, (size_t)total * K);
    float *bias = calloc((size_t)total, sizeof *bias);
    if (!t || !bias) {
        free(bias);
        if (!u->st)
            u->st = hadm_fail(u->err, HADM_ERR_NOMEM, "out of memory");
        return out;
    }
    memset(t, 0, (size_t)total * K * sizeof *t);
    int r0 = 0;
    for (int p = 0; p < parts; p++) {
        for (int64_t i = 0; i < (int64_t)rows[p] * K; i++)
            t[(int64_t)r0 * K + i] = to_bf16(w[p][i]);
        memcpy(bias + r0, b[p], (size_t)rows[p] * sizeof *bias);
        r0 += rows[p];
    }
    out.w = put(u, t, (size_t)total * K * 2);
    out.b = put(u, bias, (size_t)total * sizeof *bias);
    free(bias);
    return out;
}

static dlin linear(uploader *u, const linear_w *l, int N, int K) { return (dlin){mat(u, l->w, N, K, 0), vec(u, l->b, N)}; }

static dconv_ln conv_ln(uploader *u, const conv_ln_w *c, int Cout, int Cin, int k)
{
    return (dconv_ln){conv(u, f32_only(u, c->w, c->wt), Cout, Cin, k), vec(u, c->g, Cout), vec(u, c->b, Cout)};
}

/* ConvTranspose [Cin][Cout][2][2] seen as B[Cin][Cout*4]: stored as W[Cout*4][Cin]. */
static dlin conv_t(uploader *u, const linear_w *l, int Cin, int Cout)
{
    return (dlin){mat(u, f32_only(u, l->w, l->wt), Cin, (int64_t)Cout * 4, 1), vec(u, l->b, Cout)};
}

static void upload_vit(uploader *u, const hadm_config *c, const hadm_weights *w, dweights *d)
{
    int D = c->embed_dim, F = c->mlp_hidden, G = c->img_size / c->patch, HD = c->head_dim;
    int WS = c->window_size;
    d->patch = linear(u, &w->patch, D, c->in_chans * c->patch * c->patch);
    d->pos = NULL;
    if (c->use_abs_pos) {
        float *pos = malloc((size_t)G * G * D * sizeof *pos);
        if (pos)
            model_pos_embed(u->m, pos);
        else if (!u->st)
            u->st = hadm_fail(u->err, HADM_ERR_NOMEM, "out of memory (position embedding)");
        d->pos = pos ? vec(u, pos, (int64_t)G * G * D) : NULL;
        free(pos);
    }
    d->rope_win_cos = vec(u, w->rope_win_cos, (int64_t)WS * WS * HD);
    d->rope_win_sin = vec(u, w->rope_win_sin, (int64_t)WS * WS * HD);
    d->rope_glb_cos = vec(u, w->rope_glb_cos, (int64_t)G * G * HD);
    d->rope_glb_sin = vec(u, w->rope_glb_sin, (int64_t)G * G * HD);
    for (int i = 0; i < c->depth && !u->st; i++) {
        const vit_block_w *b = &w->blocks[i];
        dblock *o = &d->blocks[i];
        o->norm1_g = vec(u, b->norm1_g, D), o->norm1_b = vec(u, b->norm1_b, D);
        o->norm2_g = vec(u, b->norm2_g, D), o->norm2_b = vec(u, b->norm2_b, D);
        o->ffn_g = vec(u, b->ffn_ln_g, F), o->ffn_b = vec(u, b->ffn_ln_b, F);
        linear_w q = {.w = b->q_w, .b = b->q_bias}, k = {.w = b->k_w}, v = {.w = b->v_w, .b = b->v_bias};
        o->q = linear(u, &q, D, D), o->k = linear(u, &k, D, D), o->v = linear(u, &v, D, D);
        o->proj = linear(u, &b->proj, D, D);
        o->w1 = linear(u, &b->w1, F, D), o->w2 = linear(u, &b->w2, F, D), o->w3 = linear(u, &b->w3, D, F);
    }
}

static void upload_fpn(uploader *u, const hadm_config *c, const hadm_weights *w, dweights *d)
{
    int D = c->embed_dim, C = c->fpn_channels;
    d->p2_up0 = conv_t(u, &w->p2_up0, D, D / 2);
    d->p2_ln_g = vec(u, w->p2_ln_g, D / 2), d->p2_ln_b = vec(u, w->p2_ln_b, D / 2);
    d->p2_up1 = conv_t(u, &w->p2_up1, D / 2, D / 4);
    d->p2_lat = conv_ln(u, &w->p2_lat, C, D / 4, 1), d->p2_out = conv_ln(u, &w->p2_out, C, C, 3);
    d->p3_up0 = conv_t(u, &w->p3_up0, D, D / 2);
    d->p3_lat = conv_ln(u, &w->p3_lat, C, D / 2, 1), d->p3_out = conv_ln(u, &w->p3_out, C, C, 3);
    d->p4_lat = conv_ln(u, &w->p4_lat, C, D, 1), d->p4_out = conv_ln(u, &w->p4_out, C, C, 3);
    d->p5_lat = conv_ln(u, &w->p5_lat, C, D, 1), d->p5_out = conv_ln(u, &w->p5_out, C, C, 3);
}

static void upload_heads(uploader *u, const hadm_config *c, const hadm_weights *w, dweights *d)
{
    cuda_dims dm;
    cuda_dims_of(c, 1, &dm);
    int cin = c->fpn_channels, A = c->num_anchors;
    for (int i = 0; i < c->rpn_convs; i++) {
        d->rpn_conv[i] = (dlin){conv(u, f32_only(u, w->rpn_conv[i].w, w->rpn_conv[i].wt), c->rpn_conv_dims[i], cin, 3),
                                vec(u, w->rpn_conv[i].b, c->rpn_conv_dims[i])};
        cin = c->rpn_conv_dims[i];
    }
    const float *rw[2] = {w->rpn_obj.w, w->rpn_delta.w}, *rb[2] = {w->rpn_obj.b, w->rpn_delta.b};
    int rrows[2] = {A, 4 * A};
    d->rpn_head = stacked(u, rw, rb, rrows, 2, dm.NR, cin);
    for (int s = 0; s < c->num_stages && !u->st; s++) {
        int in = c->fpn_channels;
        for (int k = 0; k < c->box_convs; k++) {
            d->stage[s].conv[k] = conv_ln(u, &w->stage[s].conv[k], c->box_conv_dims[k], in, 3);
            in = c->box_conv_dims[k];
        }
        in *= c->pool_res * c->pool_res;
        for (int j = 0; j < c->box_fcs; j++) {
            d->stage[s].fc[j] = linear(u, &w->stage[s].fc[j], c->box_fc_dims[j], in);
            in = c->box_fc_dims[j];
        }
        const float *pw[2] = {w->stage[s].cls.w, w->stage[s].bbox.w}, *pb[2] = {w->stage[s].cls.b, w->stage[s].bbox.b};
        int prows[2] = {dm.K1, 4};
        d->stage[s].pred = stacked(u, pw, pb, prows, 2, dm.NP, in);
    }
}

hadm_status cuda_upload_weights(cuda_model *cm, const struct hadm_model *m, hadm_error *err)
{
    uploader u = {cm, m, err, HADM_OK, NULL, 0};
    cm->wsize = cuda_weight_bytes(&m->cfg);
    hadm_status s = cuda_malloc(cm->device, cm->wsize, (void **)&cm->wblock, err);
    if (s)
        return s;
    upload_vit(&u, &m->cfg, &m->w, &cm->w);
    upload_fpn(&u, &m->cfg, &m->w, &cm->w);
    upload_heads(&u, &m->cfg, &m->w, &cm->w);
    free(u.tmp);
    return u.st;
}
