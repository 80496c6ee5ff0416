/* Internal to the oneDNN half of the CPU backend: the context, the
 * primitive cache and the helpers shared by dnnl_ops.c (f32 matmul, conv)
 * and dnnl_lowp.c (packed bf16/int8 weights). */
#ifndef HADM_OPS_DNNL_INTERNAL_H
#define HADM_OPS_DNNL_INTERNAL_H

#include <oneapi/dnnl/dnnl.h>

#include "ops/cpu/cpu.h"
#include "util/err.h"

#define CACHE_SLOTS 96
#define OPS_MAX_N 16384
#define KEY_WORDS 24
#define CONV_WEIGHT_SLOTS 48

/* A convolution weight reordered to the layout a primitive chose, found by
 * the caller's weight pointer and that layout, so that the primitives of
 * one weight at several input sizes (the RPN head on five levels) share
 * one copy. */
typedef struct {
    const void *src;
    dnnl_memory_desc_t md;
    void *data;   /* cpu_pages_alloc memory */
    size_t bytes;
    uint64_t last_use;
} conv_weight;

typedef struct {
    int64_t key[KEY_WORDS];
    int used;
    uint64_t last_use;
    dnnl_primitive_t prim;
    dnnl_primitive_desc_t pd;
    size_t scratch_bytes;
    ops_packed *packed;   /* int8 conv weights as a matmul operand (owned) */
} cache_entry;

struct ops_ctx {
    int threads;
    double flops;
    dnnl_engine_t eng;
    dnnl_stream_t stream;
    cache_entry cache[CACHE_SLOTS];
    uint64_t clock;
    void *scratch;
    size_t scratch_cap;
    float *slot[OPS_SCRATCH_SLOTS];
    size_t slot_cap[OPS_SCRATCH_SLOTS];
    ops_dtype compute;        /* attention and convolutions (see ops_ctx_set_compute) */
    int u8_levels;            /* see ops_u8_levels */
    void *lowp;               /* A converted for a reduced-precision matmul */
    size_t lowp_cap;
    void *convb;              /* quantised im2col rows of an int8 convolution */
    size_t convb_cap;
    /* bf16-packed weights widened to f32 for an F32 context: two, so that
     * the MLP's w12 and w3 stay widened across its row chunks */
    struct {
        const struct ops_packed *src;
        struct ops_packed *f32;   /* its data is buf */
        void *buf;
        size_t cap;
        uint64_t last_use;
    } wide[2];
    conv_weight convw[CONV_WEIGHT_SLOTS];
    int keep_conv_weights;    /* see ops_ctx_keep_conv_weights */
};

struct ops_packed {
    int M, N, K;
    ops_dtype dt;
    dnnl_memory_desc_t md;
    void *data;
    size_t bytes;
    float *wscale;     /* S8: per output column */
    int32_t *colsum;   /* S8: sum over k of the int8 weights of each column */
};

#define DNNL_TRY(call, what)                                                        \
    do {                                                                            \
        dnnl_status_t st_ = (call);                                                 \
        if (st_ != dnnl_success) {                                                  \
            s = hadm_fail(err, st_ == dnnl_out_of_memory ? HADM_ERR_NOMEM : HADM_ERR_INTERNAL, \
                          "oneDNN %s failed (status %d)", what, (int)st_);          \
            goto fail;                                                              \
        }                                                                           \
    } while (0)

/* Primitive cache, keyed by everything that shapes a primitive (KEY_WORDS
 * int64s, unused words zero). */
cache_entry *cpu_cache_find(ops_ctx *c, const int64_t *key);
cache_entry *cpu_cache_victim(ops_ctx *c, const int64_t *key);
void cpu_entry_clear(cache_entry *e);

/* What a primitive applies after the product: C += (accumulate). */
typedef struct {
    int accumulate;
} entry_attr;
hadm_status cpu_entry_build(ops_ctx *c, cache_entry *e, const void *op_desc, const entry_attr *ea,
                            hadm_error *err);

/* One primitive argument: memory described by a query of the primitive
 * descriptor, or by md when given. */
typedef struct {
    int arg;
    dnnl_query_t query;
    int index;
    void *ptr;
    const dnnl_memory_desc_t *md;
} exec_arg;
hadm_status cpu_execute(ops_ctx *c, cache_entry *e, const exec_arg *a, int n, hadm_error *err);

/* Copies src (layout from_md) into dst (layout to_md) with a oneDNN reorder. */
hadm_status cpu_reorder(ops_ctx *c, const dnnl_memory_desc_t *from_md, const void *src,
                        const dnnl_memory_desc_t *to_md, void *dst, hadm_error *err);

dnnl_data_type_t cpu_dnnl_type(ops_dtype t);

/* The f32 matmul path (dnnl_ops.c) and the packed reduced-precision one
 * (dnnl_lowp.c) it hands bf16/s8 weights to. */
/* Buffers straight from mmap (dnnl_ops.c), so that releasing one really
 * returns its pages: grown to `bytes` (contents lost), or released. */
void *cpu_buffer_grow(void **buf, size_t *cap, size_t bytes);
void cpu_buffer_release(void **buf, size_t *cap);
/* Memory for weights and their packing: whole 4 KB pages from mmap. Freed
 * weights then really return their pages (malloc leaves the holes between
 * later allocations resident: ~200 MB after packing two full-size models),
 * and no 2 MB huge page rounds a weight up. */
void *cpu_pages_alloc(size_t bytes);
void cpu_pages_free(void *p, size_t bytes);
/* Frees the widened weights (dnnl_lowp.c); called by ops_scratch_release. */
void cpu_wide_release(ops_ctx *c);
/* Frees the packed convolution weights (conv.c). */
void cpu_conv_weights_release(ops_ctx *c);
hadm_status cpu_gemm_lowp(ops_ctx *c, const ops_gemm *g, const ops_packed *pk, hadm_error *err);

#endif
