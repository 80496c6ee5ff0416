/* Linear layers with weights packed in reduced precision.
 *
 * bf16: A is converted to bf16 on the fly; oneDNN multiplies with f32
 * accumulation and applies bias and accumulate itself.
 *
 * int8: A is quantised per row, asymmetrically, to u8 (a = s[m] (q - z[m]));
 * the weights are int8 with one scale per output column (w = t[n] w_q).
 * oneDNN then runs its fastest integer kernel, u8 x s8 -> s32 with no
 * attributes at all (runtime output scales, or s8 activations with their
 * compensation, send oneDNN 2.6 to a reference kernel hundreds of times
 * slower), and our epilogue turns the s32 sums into f32:
 *   C[m][n] = s[m] t[n] (acc[m][n] - z[m] colsum[n]) + bias[n]
 * where colsum[n] = sum_k w_q[n][k]. A row's own range keeps the large
 * activations of one token from costing every other token its precision. */
#include <stdlib.h>
#include <string.h>

#include "ops/cpu/dnnl_internal.h"

dnnl_data_type_t cpu_dnnl_type(ops_dtype t)
{
    return t == OPS_BF16 ? dnnl_bf16 : t == OPS_S8 ? dnnl_s8 : dnnl_f32;
}

static size_t dtype_size(ops_dtype t) { return t == OPS_BF16 ? 2 : t == OPS_S8 ? 1 : 4; }
/* The activation type that meets weights of type t (int8 weights take u8). */
static dnnl_data_type_t src_type(ops_dtype t) { return t == OPS_S8 ? dnnl_u8 : cpu_dnnl_type(t); }

/* The weights layout a matmul of A[M,K] by a [K,N] weight of type dt picks. */
static hadm_status packed_layout(ops_ctx *c, int M, int N, int K, ops_dtype dt, dnnl_memory_desc_t *out,
                                 hadm_error *err)
{
    hadm_status s = HADM_OK;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_memory_desc_t a_md, b_any, c_md;
    dnnl_dims_t ad = {M, K}, bd = {K, N}, cd = {M, N};
    DNNL_TRY(dnnl_memory_desc_init_by_tag(&a_md, 2, ad, src_type(dt), dnnl_ab), "md");
    DNNL_TRY(dnnl_memory_desc_init_by_tag(&b_any, 2, bd, cpu_dnnl_type(dt), dnnl_format_tag_any), "md");
    DNNL_TRY(dnnl_memory_desc_init_by_tag(&c_md, 2, cd, dt == OPS_S8 ? dnnl_s32 : dnnl_f32, dnnl_ab), "md");
    dnnl_matmul_desc_t md;
    DNNL_TRY(dnnl_matmul_desc_init(&md, &a_md, &b_any, NULL, &c_md), "matmul desc");
    DNNL_TRY(dnnl_primitive_desc_create(&pd, &md, NULL, c->eng, NULL), "primitive descriptor");
    *out = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
fail:
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    return s;
}

static void column_sums(const int8_t *w, int N, int K, int32_t *colsum)
{
    for (int n = 0; n < N; n++) {
        int32_t sum = 0;
        for (int k = 0; k < K; k++)
            sum += w[(size_t)n * K + k];
        colsum[n] = sum;
    }
}

hadm_status ops_pack_parts(ops_ctx *c, int M, int K, const ops_wpart *parts, int nparts, ops_dtype to,
                           ops_packed **out, hadm_error *err)
{
    *out = NULL;
    int N = 0;
    for (int i = 0; i < nparts; i++)
        N += parts[i].rows;
    if (N <= 0 || K <= 0 || N > OPS_MAX_N)
        return hadm_fail(err, HADM_ERR_ARG, "pack: bad shape %dx%d", N, K);
    hadm_status s = HADM_OK;
    ops_packed *p = calloc(1, sizeof *p);
    size_t esz = dtype_size(to);
    size_t plain_bytes = (size_t)N * K * esz;
    void *plain = cpu_pages_alloc(plain_bytes);
    float *row = malloc((size_t)K * sizeof *row);
    if (!p || !plain || !row ||
        (to == OPS_S8 && (!(p->wscale = malloc((size_t)N * sizeof(float))) ||
                          !(p->colsum = malloc((size_t)N * sizeof(int32_t)))))) {
        s = hadm_fail(err, HADM_ERR_NOMEM, "out of memory (packing weights)");
        goto fail;
    }
    for (int i = 0, r0 = 0; i < nparts; r0 += parts[i].rows, i++)
        ops_part_convert(&parts[i], K, to, (char *)plain + (size_t)r0 * K * esz,
                         p->wscale ? p->wscale + r0 : NULL, row);
    if (to == OPS_S8)
        column_sums(plain, N, K, p->colsum);
    p->M = M, p->N = N, p->K = K, p->dt = to;
    if ((s = packed_layout(c, M, N, K, to, &p->md, err)))
        goto fail;
    p->bytes = dnnl_memory_desc_get_size(&p->md);
    if (!(p->data = cpu_pages_alloc(p->bytes))) {
        s = hadm_fail(err, HADM_ERR_NOMEM, "out of memory (packed weights)");
        goto fail;
    }
    dnnl_memory_desc_t user;
    dnnl_dims_t bd = {K, N};
    if (dnnl_memory_desc_init_by_tag(&user, 2, bd, cpu_dnnl_type(to), dnnl_ba) != dnnl_success) {
        s = hadm_fail(err, HADM_ERR_INTERNAL, "oneDNN md failed");
        goto fail;
    }
    if ((s = cpu_reorder(c, &user, plain, &p->md, p->data, err)))
        goto fail;
    *out = p;
    p = NULL;
fail:
    cpu_pages_free(plain, plain_bytes);
    free(row);
    ops_packed_free(p);
    return s;
}

hadm_status ops_pack_weights(ops_ctx *c, int M, int N, int K, const float *w, ops_packed **out,
                             hadm_error *err)
{
    ops_wpart part = {w, OPS_SRC_F32, NULL, N};
    return ops_pack_parts(c, M, K, &part, 1, OPS_F32, out, err);
}

ops_dtype ops_packed_dtype(const ops_packed *p) { return p->dt; }

void ops_packed_free(ops_packed *p)
{
    if (!p)
        return;
    cpu_pages_free(p->data, p->bytes);
    free(p->wscale);
    free(p->colsum);
    free(p);
}

size_t ops_packed_bytes(const ops_packed *p) { return p ? p->bytes : 0; }

/* Runs the cached primitive for A (type of pk's activations) times pk into
 * C with row stride ldc (s32 for int8; bf16 also adds bias and accumulates). */
static hadm_status run_packed(ops_ctx *c, const ops_gemm *g, const ops_packed *pk, const void *a,
                              void *C, int64_t ldc, const entry_attr *ea, hadm_error *err)
{
    int s8 = pk->dt == OPS_S8;
    const float *bias = s8 ? NULL : g->bias;
    int64_t key[KEY_WORDS] = {3, g->M, g->N, g->K, ldc, bias != NULL, ea->accumulate, pk->dt,
                              (int64_t)(intptr_t)pk};
    hadm_status s = HADM_OK;
    cache_entry *e = cpu_cache_find(c, key);
    if (!e) {
        e = cpu_cache_victim(c, key);
        dnnl_memory_desc_t a_md, c_md, bias_md;
        dnnl_dims_t ad = {g->M, g->K}, cd = {g->M, g->N}, cs = {ldc, 1}, rowd = {1, g->N};
        DNNL_TRY(dnnl_memory_desc_init_by_tag(&a_md, 2, ad, src_type(pk->dt), dnnl_ab), "md");
        DNNL_TRY(dnnl_memory_desc_init_by_strides(&c_md, 2, cd, s8 ? dnnl_s32 : dnnl_f32, cs), "md");
        DNNL_TRY(dnnl_memory_desc_init_by_tag(&bias_md, 2, rowd, dnnl_f32, dnnl_ab), "md");
        dnnl_matmul_desc_t md;
        DNNL_TRY(dnnl_matmul_desc_init(&md, &a_md, &pk->md, bias ? &bias_md : NULL, &c_md), "matmul desc");
        if ((s = cpu_entry_build(c, e, &md, ea, err)))
            return s;
    }
    exec_arg args[4] = {{DNNL_ARG_SRC, dnnl_query_src_md, 0, (void *)a, NULL},
                        {DNNL_ARG_WEIGHTS, dnnl_query_weights_md, 0, pk->data, NULL},
                        {DNNL_ARG_DST, dnnl_query_dst_md, 0, C, NULL},
                        {DNNL_ARG_BIAS, dnnl_query_weights_md, 1, (void *)bias, NULL}};
    if ((s = cpu_execute(c, e, args, bias ? 4 : 3, err)))
        return s;
    c->flops += 2.0 * g->M * (double)g->N * g->K;
    return HADM_OK;
fail:
    cpu_entry_clear(e);
    return s;
}

static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

/* int8 sums: quantises A (unless the caller did; row scales and zero
 * points come back in *scale and *zero) and multiplies it into s32 *acc,
 * which, when NULL, is placed in the low-precision buffer (ld N). */
static hadm_status int8_sums(ops_ctx *c, const ops_gemm *g, const ops_packed *pk, int32_t **acc,
                             int64_t ldacc, const float **scale, const int32_t **zero, hadm_error *err)
{
    int M = g->M, K = g->K;
    size_t a_bytes = g->a_converted ? 0 : align64((size_t)M * K);
    size_t row_bytes = g->a_converted ? 0 : align64((size_t)M * sizeof(float));
    size_t acc_bytes = *acc ? 0 : align64((size_t)M * g->N * sizeof(int32_t));
    char *buf = ops_lowp_buffer(c, a_bytes + 2 * row_bytes + acc_bytes + 64);
    if (!buf)
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory (int8 matmul operands)");
    const uint8_t *a = (const uint8_t *)g->A;
    *scale = g->a_scale, *zero = g->a_zero;
    if (!g->a_converted) {
        uint8_t *q = (uint8_t *)buf;
        float *sc = (float *)(buf + a_bytes);
        int32_t *zp = (int32_t *)(buf + a_bytes + row_bytes);
        ops_rows_to_u8(c, M, K, g->A, g->lda, ops_u8_levels(c), q, sc, zp);
        a = q, *scale = sc, *zero = zp;
    }
    if (!*scale || !*zero)
        return hadm_fail(err, HADM_ERR_ARG, "int8 matmul: converted A needs row scales and zero points");
    if (!*acc)
        *acc = (int32_t *)(buf + a_bytes + 2 * row_bytes), ldacc = g->N;
    entry_attr ea = {0};
    return run_packed(c, g, pk, a, *acc, ldacc, &ea, err);
}

/* int8: the sums go to C's own memory when C is overwritten, else to the
 * low-precision buffer; then the epilogue. */
static hadm_status gemm_int8(ops_ctx *c, const ops_gemm *g, const ops_packed *pk, hadm_error *err)
{
    int32_t *acc = g->accumulate ? NULL : (int32_t *)g->C;
    const float *scale;
    const int32_t *zero;
    hadm_status s = int8_sums(c, g, pk, &acc, g->ldc, &scale, &zero, err);
    if (s)
        return s;
    ops_int8_epilogue(c, g->M, g->N, acc, g->accumulate ? g->N : g->ldc, scale, zero, pk->wscale,
                      pk->colsum, g->bias, g->C, g->ldc, g->accumulate);
    return HADM_OK;
}

hadm_status ops_matmul_swiglu_ln(ops_ctx *c, const ops_gemm *g, float *h, const float *ln_g,
                                 const float *ln_b, float eps, hadm_error *err)
{
    int F = g->N / 2;
    if (g->accumulate || g->N % 2)
        return hadm_fail(err, HADM_ERR_ARG, "swiglu matmul: N must be even, no accumulate");
    ops_gemm hg = *g;
    hg.C = h, hg.ldc = g->N;
    const ops_packed *pk = g->packed;
    if (pk && pk->dt == OPS_S8 && pk->N == g->N && pk->K == g->K) {
        const float *scale;
        const int32_t *zero;
        int32_t *acc = (int32_t *)h;
        hadm_status s = int8_sums(c, &hg, pk, &acc, g->N, &scale, &zero, err);
        if (!s)
            ops_int8_swiglu_ln(c, g->M, F, (int32_t *)h, g->N, scale, zero, pk->wscale, pk->colsum, g->bias,
                               ln_g, ln_b, eps, g->C, g->ldc);
        return s;
    }
    hadm_status s = ops_matmul(c, &hg, err);
    if (s)
        return s;
    ops_silu_mul(c, g->M, F, h, g->N, h + F, g->N);
    ops_layernorm(c, g->M, F, h, g->N, ln_g, ln_b, eps, g->C, g->ldc);
    return HADM_OK;
}

void cpu_wide_release(ops_ctx *c)
{
    for (int i = 0; i < 2; i++) {
        cpu_buffer_release(&c->wide[i].buf, &c->wide[i].cap);
        free(c->wide[i].f32);
        c->wide[i].f32 = NULL;
        c->wide[i].src = NULL;
    }
}

/* pk (bf16) widened to f32 in the layout an f32 matmul packed for the same
 * shape takes: kept in one of two slots (least recently used goes), so a
 * layer's row chunks widen it once per forward. */
static hadm_status widened(ops_ctx *c, const ops_packed *pk, const ops_packed **out, hadm_error *err)
{
    int i = c->wide[0].src == pk ? 0 : c->wide[1].src == pk ? 1 : -1;
    if (i < 0) {
        i = c->wide[0].last_use <= c->wide[1].last_use ? 0 : 1;
        c->wide[i].src = NULL;
        ops_packed *w = c->wide[i].f32;
        if (!w && !(w = c->wide[i].f32 = calloc(1, sizeof *w)))
            return hadm_fail(err, HADM_ERR_NOMEM, "out of memory (widened weights)");
        hadm_status s = packed_layout(c, pk->M, pk->N, pk->K, OPS_F32, &w->md, err);
        if (s)
            return s;
        w->M = pk->M, w->N = pk->N, w->K = pk->K, w->dt = OPS_F32;
        w->bytes = dnnl_memory_desc_get_size(&w->md);
        if (!(w->data = cpu_buffer_grow(&c->wide[i].buf, &c->wide[i].cap, w->bytes)))
            return hadm_fail(err, HADM_ERR_NOMEM, "out of memory (widened weights)");
        if ((s = cpu_reorder(c, &pk->md, pk->data, &w->md, w->data, err)))
            return s;
        c->wide[i].src = pk;
    }
    c->wide[i].last_use = ++c->clock;
    *out = c->wide[i].f32;
    return HADM_OK;
}

hadm_status cpu_gemm_lowp(ops_ctx *c, const ops_gemm *g, const ops_packed *pk, hadm_error *err)
{
    if (pk->dt == OPS_S8)
        return gemm_int8(c, g, pk, err);
    if (c->compute == OPS_F32 && !g->a_converted) {
        ops_gemm wg = *g;
        hadm_status s = widened(c, pk, &wg.packed, err);
        return s ? s : ops_matmul(c, &wg, err);
    }
    const void *a = g->A;
    if (!g->a_converted) {
        void *buf = ops_lowp_buffer(c, (size_t)g->M * g->K * sizeof(uint16_t));
        if (!buf)
            return hadm_fail(err, HADM_ERR_NOMEM, "out of memory (matmul operand)");
        ops_rows_to_bf16(c, g->M, g->K, g->A, g->lda, buf);
        a = buf;
    }
    entry_attr ea = {.accumulate = g->accumulate};
    return run_packed(c, g, pk, a, g->C, g->ldc, &ea, err);
}
