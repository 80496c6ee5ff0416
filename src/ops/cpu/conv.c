/* 2-D convolution through oneDNN (f32 or bf16; int8 is conv_int8.c).
 * Primitives are cached per shape like the matmuls; the weights, reordered
 * into the layout a primitive chose, live in a table of their own, keyed by
 * the caller's weight pointer and that layout, so a weight used at several
 * input sizes is held once. A context told not to keep them
 * (ops_ctx_keep_conv_weights) drops them with its scratch memory. */
#include <stdlib.h>
#include <string.h>

#include "ops/cpu/dnnl_internal.h"

void cpu_conv_weights_release(ops_ctx *c)
{
    for (int i = 0; i < CONV_WEIGHT_SLOTS; i++) {
        cpu_pages_free(c->convw[i].data, c->convw[i].bytes);
        memset(&c->convw[i], 0, sizeof c->convw[i]);
    }
}

/* Reorders PyTorch OIHW weights into the layout `want`. */
static hadm_status pack_weights(ops_ctx *c, const ops_conv *p, const dnnl_memory_desc_t *want,
                                void *dst, hadm_error *err)
{
    hadm_status s = HADM_OK;
    dnnl_memory_desc_t user_md;
    dnnl_dims_t wd = {p->Cout, p->Cin, p->kh, p->kw};
    float *wide;
    const float *w = ops_as_f32(p->w, p->w_type, (size_t)p->Cout * p->Cin * p->kh * p->kw, &wide);
    if (!w)
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory (conv weights)");
    DNNL_TRY(dnnl_memory_desc_init_by_tag(&user_md, 4, wd, dnnl_f32, dnnl_oihw), "md");
    s = cpu_reorder(c, &user_md, w, want, dst, err);
fail:
    free(wide);
    return s;
}

/* p's weights in layout `want`: from the table, or packed into it now (into
 * a free slot, else the least recently used one). */
static hadm_status conv_weights(ops_ctx *c, const ops_conv *p, const dnnl_memory_desc_t *want,
                                void **out, hadm_error *err)
{
    conv_weight *slot = &c->convw[0];
    for (int i = 0; i < CONV_WEIGHT_SLOTS; i++) {
        conv_weight *w = &c->convw[i];
        if (w->src == p->w && dnnl_memory_desc_equal(&w->md, want)) {
            w->last_use = ++c->clock;
            *out = w->data;
            return HADM_OK;
        }
        if (slot->src && (!w->src || w->last_use < slot->last_use))
            slot = w;
    }
    cpu_pages_free(slot->data, slot->bytes);
    memset(slot, 0, sizeof *slot);
    size_t bytes = dnnl_memory_desc_get_size(want);
    void *data = cpu_pages_alloc(bytes);
    if (!data)
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory (conv weights)");
    hadm_status s = pack_weights(c, p, want, data, err);
    if (s) {
        cpu_pages_free(data, bytes);
        return s;
    }
    slot->data = data;
    slot->bytes = bytes;
    slot->src = p->w;
    slot->md = *want;
    slot->last_use = ++c->clock;
    *out = data;
    return HADM_OK;
}

static hadm_status conv_primitive(ops_ctx *c, const ops_conv *p, int ho, int wo, int bf16,
                                  cache_entry **out, hadm_error *err)
{
    int64_t key[KEY_WORDS] = {2, p->N, p->H, p->W, p->Cin, p->Cout, p->kh, p->kw, p->stride, p->pad,
                              p->bias != NULL, bf16, p->rows_padded};
    cache_entry *e = cpu_cache_find(c, key);
    if ((*out = e))
        return HADM_OK;
    e = cpu_cache_victim(c, key);
    hadm_status s = HADM_OK;
    dnnl_data_type_t xt = bf16 ? dnnl_bf16 : dnnl_f32;
    dnnl_memory_desc_t x_md, w_md, b_md, y_md;
    dnnl_dims_t xd = {p->N, p->Cin, p->H, p->W}, yd = {p->N, p->Cout, ho, wo};
    dnnl_dims_t wd = {p->Cout, p->Cin, p->kh, p->kw}, bd = {p->Cout};
    dnnl_dims_t st = {p->stride, p->stride}, pad = {ops_conv_pad_rows(p), p->pad};
    DNNL_TRY(dnnl_memory_desc_init_by_tag(&x_md, 4, xd, xt, dnnl_nhwc), "md");
    DNNL_TRY(dnnl_memory_desc_init_by_tag(&y_md, 4, yd, dnnl_f32, dnnl_nhwc), "md");
    DNNL_TRY(dnnl_memory_desc_init_by_tag(&w_md, 4, wd, xt, dnnl_format_tag_any), "md");
    DNNL_TRY(dnnl_memory_desc_init_by_tag(&b_md, 1, bd, dnnl_f32, dnnl_a), "md");
    dnnl_convolution_desc_t cd;
    DNNL_TRY(dnnl_convolution_forward_desc_init(&cd, dnnl_forward_inference, dnnl_convolution_direct,
                                                &x_md, &w_md, p->bias ? &b_md : NULL, &y_md, st, pad,
                                                pad), "conv desc");
    entry_attr ea = {0};
    if ((s = cpu_entry_build(c, e, &cd, &ea, err)))
        return s;
    *out = e;
    return HADM_OK;
fail:
    cpu_entry_clear(e);
    return s;
}

hadm_status ops_conv2d(ops_ctx *c, const ops_conv *p, hadm_error *err)
{
    int ho = ops_conv_out_h(p), wo = ops_conv_out_w(p);
    if (p->N <= 0 || ho <= 0 || wo <= 0)
        return p->N == 0 ? HADM_OK : hadm_fail(err, HADM_ERR_ARG, "conv2d: bad shape");
    if (c->compute == OPS_S8)
        return cpu_conv_int8(c, p, err);
    int bf16 = c->compute == OPS_BF16;
    const void *x = p->x;
    if (bf16) {
        int64_t rows = (int64_t)p->N * p->H * p->W;
        void *xb = ops_lowp_buffer(c, (size_t)rows * p->Cin * 2);
        if (!xb)
            return hadm_fail(err, HADM_ERR_NOMEM, "out of memory (conv input)");
        ops_rows_to_bf16(c, rows, p->Cin, p->x, p->Cin, xb);
        x = xb;
    }
    cache_entry *e;
    void *w = NULL;
    hadm_status s = conv_primitive(c, p, ho, wo, bf16, &e, err);
    if (s || (s = conv_weights(c, p, dnnl_primitive_desc_query_md(e->pd, dnnl_query_weights_md, 0), &w, err)))
        return s;
    exec_arg a[4] = {{DNNL_ARG_SRC, dnnl_query_src_md, 0, (void *)x, NULL},
                     {DNNL_ARG_WEIGHTS, dnnl_query_weights_md, 0, w, NULL},
                     {DNNL_ARG_DST, dnnl_query_dst_md, 0, p->y, NULL},
                     {DNNL_ARG_BIAS, dnnl_query_weights_md, 1, (void *)p->bias, NULL}};
    if ((s = cpu_execute(c, e, a, p->bias ? 4 : 3, err)))
        return s;
    c->flops += 2.0 * p->N * ho * (double)wo * p->Cout * p->Cin * p->kh * p->kw;
    return HADM_OK;
}
