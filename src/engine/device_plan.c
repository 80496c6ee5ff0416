/* Host-side planning of the CUDA backend (see device_plan.h). */
#include "engine/device_plan.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/weights.h"
#include "util/err.h"

#define ALIGN 256

static size_t align_up(size_t n) { return (n + ALIGN - 1) / ALIGN * ALIGN; }
static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }
static int round_up(int n, int m) { return (n + m - 1) / m * m; }

hadm_status device_parse(const char *s, hadm_device_kind *kind, int *index, hadm_error *err)
{
    if (!s || !*s)
        return hadm_fail(err, HADM_ERR_ARG, "device must be cpu or cuda[:i], got ''");
    if (!strcmp(s, "cpu")) {
        *kind = HADM_DEVICE_CPU, *index = 0;
        return HADM_OK;
    }
    if (!strcmp(s, "cuda")) {
        *kind = HADM_DEVICE_CUDA, *index = 0;
        return HADM_OK;
    }
    if (!strncmp(s, "cuda:", 5) && s[5] >= '0' && s[5] <= '9') {
        char *end;
        errno = 0;
        long v = strtol(s + 5, &end, 10);
        if (!errno && !*end && v >= 0 && v <= 63) {
            *kind = HADM_DEVICE_CUDA, *index = (int)v;
            return HADM_OK;
        }
    }
    return hadm_fail(err, HADM_ERR_ARG, "device must be cpu or cuda[:i] (i in 0..63), got '%.64s'", s);
}

hadm_status device_parse_fraction(const char *s, float *out, hadm_error *err)
{
    char *end = NULL;
    errno = 0;
    double v = s ? strtod(s, &end) : 0;
    if (!s || end == s || *end || errno || !(v > 0.0 && v <= 1.0))
        return hadm_fail(err, HADM_ERR_ARG, "--gpu-memory-fraction must be a number in (0, 1], got '%.64s'",
                         s ? s : "");
    *out = (float)v;
    return HADM_OK;
}

void cuda_dims_of(const hadm_config *cfg, int batch, cuda_dims *d)
{
    memset(d, 0, sizeof *d);
    d->B = batch;
    d->S = cfg->img_size, d->P = cfg->patch, d->G = d->S / d->P, d->T = d->G * d->G;
    d->D = cfg->embed_dim, d->F = cfg->mlp_hidden, d->WS = cfg->window_size;
    d->nw = (d->G + d->WS - 1) / d->WS;
    int Tw = d->nw * d->nw * d->WS * d->WS;
    d->rows = batch * (Tw > d->T ? Tw : d->T);
    d->Kp = cfg->in_chans * d->P * d->P;
    d->C = cfg->fpn_channels;
    d->Cr = d->C;
    for (int i = 0; i < cfg->rpn_convs; i++)
        d->Cr = cfg->rpn_conv_dims[i] > d->Cr ? cfg->rpn_conv_dims[i] : d->Cr;
    d->Cb = d->C;
    for (int i = 0; i < cfg->box_convs; i++)
        d->Cb = cfg->box_conv_dims[i] > d->Cb ? cfg->box_conv_dims[i] : d->Cb;
    d->A = cfg->num_anchors;
    d->NR = round_up(5 * d->A, 4);   /* ld of the fused 1x1 output stays 16-byte aligned */
    d->levels = cfg->n_levels;
    int side[5] = {4 * d->G, 2 * d->G, d->G, d->G / 2, (d->G / 2 + 1) / 2};
    for (int l = 0; l < d->levels && l < 5; l++) {
        d->side[l] = side[l];
        d->anchors[l] = (int64_t)side[l] * side[l] * d->A;
        d->max_level_anchors = max64(d->max_level_anchors, d->anchors[l]);
        d->n_anchor_pos += (int64_t)side[l] * side[l];
        d->pre_k[l] = (int)(d->anchors[l] < cfg->rpn_pre_topk ? d->anchors[l] : cfg->rpn_pre_topk);
        d->NC += d->pre_k[l];
    }
    d->Rmax = cfg->rpn_post_topk;
    d->K = cfg->num_classes, d->K1 = d->K + 1;
    d->NP = round_up(d->K1 + 4, 4);
    d->res = cfg->pool_res;
    d->fc = 0;
    for (int j = 0; j < cfg->box_fcs; j++)
        d->fc = cfg->box_fc_dims[j] > d->fc ? cfg->box_fc_dims[j] : d->fc;
    d->NQ = d->NC > d->Rmax * d->K ? d->NC : d->Rmax * d->K;
    d->max_dets = cfg->max_dets;
}

size_t cuda_sort_temp_estimate(int64_t n)
{
    /* onesweep/ping-pong radix sort: a copy of keys and values plus per-block
     * histograms; generous so that a plan never under-reserves */
    return align_up((size_t)n * 16 + ((size_t)4 << 20));
}

void cuda_arena_layout(const hadm_config *cfg, int batch, size_t sort_temp, cuda_arena *a)
{
    memset(a, 0, sizeof *a);
    cuda_dims_of(cfg, batch, &a->d);
    const cuda_dims *d = &a->d;
    int64_t B = d->B, T = d->T, D = d->D, F = d->F, rows = d->rows, C = d->C;
    int64_t P2 = (int64_t)d->side[0] * d->side[0];   /* largest pyramid level */
    int64_t R = d->Rmax, bins = (int64_t)d->res * d->res, NQ = d->NQ;
    int64_t sort_n = max64(max64(d->max_level_anchors, d->NC), NQ);
    size_t f = sizeof(float), h = 2, i4 = sizeof(int);
    size_t *s = a->size;
    s[AR_INPUT] = (size_t)B * 3 * d->S * d->S * f;
    s[AR_X] = (size_t)(B * T * D) * f;
    s[AR_NORM] = s[AR_Q] = s[AR_K] = s[AR_V] = (size_t)(rows * D) * f;
    s[AR_ABF] = (size_t)max64(max64(rows * D, B * T * d->Kp), B * T * F) * h;
    s[AR_HA] = s[AR_HB] = (size_t)(B * T * F) * f;
    for (int l = 0; l < d->levels && l < 5; l++)
        s[AR_MAP0 + l] = (size_t)d->side[l] * d->side[l] * C * f;
    s[AR_UP] = (size_t)(4 * T * D) * f;                          /* p2's second conv-transpose */
    s[AR_FMAP] = (size_t)(4 * T * D) * f;
    s[AR_FBF] = (size_t)max64(4 * T * D, P2 * d->Cr) * h;
    s[AR_MID] = (size_t)(P2 * C) * f;
    s[AR_COLS] = (size_t)max64(P2 * 9 * max64(C, d->Cr), R * bins * 9 * d->Cb) * h;
    s[AR_RPN_A] = s[AR_RPN_B] = (size_t)(P2 * d->Cr) * f;
    s[AR_RPN_OUT] = (size_t)(d->n_anchor_pos * d->NR) * f;
    s[AR_SORT_KEY_IN] = s[AR_SORT_KEY_OUT] = (size_t)sort_n * f;
    s[AR_SORT_VAL_IN] = s[AR_SORT_VAL_OUT] = (size_t)sort_n * i4;
    s[AR_SORT_TEMP] = sort_temp ? sort_temp : cuda_sort_temp_estimate(sort_n);
    s[AR_CAND_BOX] = (size_t)NQ * 4 * f;
    s[AR_CAND_KEY] = (size_t)NQ * f;
    s[AR_CAND_GRP] = (size_t)NQ * i4;
    s[AR_NMS_MASK] = (size_t)NQ * (size_t)((NQ + 63) / 64) * sizeof(unsigned long long);
    s[AR_KEEP] = (size_t)NQ * i4;
    s[AR_COUNTS] = 16 * i4;
    s[AR_BOXES_IN] = (size_t)R * 4 * f;
    s[AR_LEVEL] = (size_t)R * i4;
    s[AR_POOL] = s[AR_CONV] = (size_t)(R * bins * d->Cb) * f;
    s[AR_FLAT] = (size_t)(R * bins * d->Cb) * h;
    s[AR_FC_A] = s[AR_FC_B] = (size_t)(R * d->fc) * f;
    s[AR_FC_BF] = (size_t)(R * max64(d->fc, bins * d->Cb)) * h;
    s[AR_PRED] = (size_t)(R * d->NP) * f;
    s[AR_SCORES] = (size_t)(R * d->K1) * f;
    s[AR_BOXES_OUT] = (size_t)R * 4 * f;
    s[AR_GEOM] = (size_t)B * 4 * i4;
    a->result_stride = align_up(4 * i4 + (size_t)d->max_dets * 6 * f);
    s[AR_RESULT] = (size_t)B * a->result_stride;
    size_t off = 0;
    for (int b = 0; b < AR_COUNT; b++) {
        a->off[b] = off;
        off += align_up(s[b]);
    }
    a->total = off;
}

typedef struct {
    size_t bytes;
} weight_sum;

static hadm_status weight_visit(void *user, const char *name, int ndim, const int64_t *shape,
                                const float **slot, ops_src_type *type, hadm_error *err)
{
    (void)type;
    (void)name, (void)slot, (void)err;
    int64_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= shape[i];
    ((weight_sum *)user)->bytes += align_up((size_t)n * (ndim >= 2 ? 2 : 4));
    return HADM_OK;
}

size_t cuda_weight_bytes(const hadm_config *cfg)
{
    hadm_weights w;
    weight_sum sum = {0};
    weights_enumerate(cfg, &w, weight_visit, &sum, NULL);
    cuda_dims d;
    cuda_dims_of(cfg, 1, &d);
    size_t f = sizeof(float);
    sum.bytes += align_up((size_t)d.T * d.D * f);                                 /* pos embed */
    sum.bytes += 2 * align_up((size_t)d.WS * d.WS * cfg->head_dim * f);           /* RoPE window */
    sum.bytes += 2 * align_up((size_t)d.T * cfg->head_dim * f);                   /* RoPE global */
    int rc = cfg->rpn_conv_dims[cfg->rpn_convs - 1];
    sum.bytes += align_up((size_t)d.NR * rc * 2) + align_up((size_t)d.NR * f);    /* fused RPN 1x1 */
    sum.bytes += (size_t)cfg->num_stages * (align_up((size_t)d.NP * d.fc * 2) + align_up((size_t)d.NP * f));
    return sum.bytes;
}

void cuda_plan_model(const hadm_config *cfg, int batch, int contexts, cuda_plan *p)
{
    cuda_arena a;
    cuda_arena_layout(cfg, batch, 0, &a);
    p->batch = batch;
    p->contexts = contexts;
    p->weights = cuda_weight_bytes(cfg);
    p->arena = a.total;
    p->workspace = CUDA_GEMM_WORKSPACE;
    p->total = p->weights + (size_t)contexts * (p->arena + p->workspace);
}

static double gib(size_t b) { return (double)b / (1024.0 * 1024.0 * 1024.0); }

hadm_status cuda_plan_fit(const cuda_plan *p, size_t reserved, size_t total_mem, size_t free_mem,
                          float fraction, const char *what, hadm_error *err)
{
    if (!(fraction > 0.0f && fraction <= 1.0f))
        return hadm_fail(err, HADM_ERR_ARG, "gpu memory fraction %g is not in (0, 1]", (double)fraction);
    double cap = (double)fraction * (double)total_mem;
    double avail = cap - (double)reserved;
    if ((double)p->total > avail)
        return hadm_fail(err, HADM_ERR_NOMEM,
                         "%s does not fit on the GPU: it needs %.2f GiB (weights %.2f + %d x (activations "
                         "%.2f for batch %d + workspace %.2f)), but --gpu-memory-fraction %.2f of %.2f GiB "
                         "leaves %.2f GiB%s",
                         what, gib(p->total), gib(p->weights), p->contexts, gib(p->arena), p->batch,
                         gib(p->workspace), (double)fraction, gib(total_mem),
                         avail > 0 ? avail / (1024.0 * 1024.0 * 1024.0) : 0.0,
                         reserved ? " after the models already loaded" : "");
    if (p->total > free_mem)
        return hadm_fail(err, HADM_ERR_NOMEM,
                         "%s does not fit on the GPU: it needs %.2f GiB but only %.2f GiB are free "
                         "(other processes on the GPU?)",
                         what, gib(p->total), gib(free_mem));
    return HADM_OK;
}

/* 2*M*N*K per GEMM, as ops_ctx counts them on the CPU. */
double cuda_forward_flops(const hadm_config *cfg, int R)
{
    cuda_dims d;
    cuda_dims_of(cfg, 1, &d);
    double T = d.T, D = d.D, F = d.F, C = d.C, fl = 0;
    fl += 2 * T * D * d.Kp;
    for (int i = 0; i < cfg->depth; i++) {
        double unit = cfg->is_global[i] ? T : (double)d.WS * d.WS;
        double rows = cfg->is_global[i] ? T : (double)d.nw * d.nw * unit;
        fl += 2 * rows * D * D * 4 + 2 * T * D * F * 3 + 4 * rows * unit * D;
    }
    /* pyramid: conv-transposes, laterals, 3x3 outputs */
    fl += 2 * T * D * (D / 2 * 4) + 2 * 4 * T * (D / 2) * (D / 4 * 4) + 2 * T * D * (D / 2 * 4);
    double pos[4] = {16 * T, 4 * T, T, T / 4}, cin[4] = {D / 4, D / 2, D, D};
    for (int l = 0; l < 4; l++)
        fl += 2 * pos[l] * C * cin[l] + 2 * pos[l] * C * C * 9;
    double cin_r = C;
    for (int i = 0; i < cfg->rpn_convs; i++) {
        fl += 2 * (double)d.n_anchor_pos * cfg->rpn_conv_dims[i] * cin_r * 9;
        cin_r = cfg->rpn_conv_dims[i];
    }
    fl += 2 * (double)d.n_anchor_pos * 5 * d.A * cin_r;
    double bins = (double)d.res * d.res, stage = 0, in = C;
    for (int k = 0; k < cfg->box_convs; k++) {
        stage += 2 * R * bins * cfg->box_conv_dims[k] * in * 9;
        in = cfg->box_conv_dims[k];
    }
    in *= bins;
    for (int j = 0; j < cfg->box_fcs; j++) {
        stage += 2 * (double)R * cfg->box_fc_dims[j] * in;
        in = cfg->box_fc_dims[j];
    }
    stage += 2 * (double)R * (d.K1 + 4) * in;
    return fl + cfg->num_stages * stage;
}
