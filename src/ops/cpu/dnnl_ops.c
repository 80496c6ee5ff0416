/* Dense ops on the CPU through oneDNN: matmul (plain and batched) and 2-D
 * convolution. Primitives are cached per context, keyed by everything that
 * shapes them, because creating a primitive descriptor costs far more than a
 * small matmul. Scratchpads are user-managed so that contexts used by
 * different threads never share oneDNN's internal scratch memory. */
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "ops/cpu/dnnl_internal.h"

hadm_status ops_ctx_new(int threads, ops_ctx **out, hadm_error *err)
{
    *out = NULL;
    ops_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory");
    c->threads = threads > 0 ? threads : omp_get_num_procs();
    hadm_status s = HADM_OK;
    DNNL_TRY(dnnl_engine_create(&c->eng, dnnl_cpu, 0), "engine");
    DNNL_TRY(dnnl_stream_create(&c->stream, c->eng, dnnl_stream_default_flags), "stream");
    /* Without VNNI, oneDNN's u8 x s8 kernels sum pairs of products in int16
     * (vpmaddubsw), which saturates for u8 values above 127. */
    dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
    int vnni = (isa & dnnl_cpu_isa_avx512_core_vnni) == dnnl_cpu_isa_avx512_core_vnni ||
               (isa & dnnl_cpu_isa_avx2_vnni) == dnnl_cpu_isa_avx2_vnni;
    c->u8_levels = vnni ? 255 : 127;
    c->keep_conv_weights = 1;
    *out = c;
    return HADM_OK;
fail:
    ops_ctx_free(c);
    return s;
}

void cpu_entry_clear(cache_entry *e)
{
    if (e->prim)
        dnnl_primitive_destroy(e->prim);
    if (e->pd)
        dnnl_primitive_desc_destroy(e->pd);
    ops_packed_free(e->packed);
    memset(e, 0, sizeof *e);
}

void ops_ctx_free(ops_ctx *c)
{
    if (!c)
        return;
    for (int i = 0; i < CACHE_SLOTS; i++)
        cpu_entry_clear(&c->cache[i]);
    ops_scratch_release(c);
    cpu_conv_weights_release(c);
    free(c->scratch);
    if (c->stream)
        dnnl_stream_destroy(c->stream);
    if (c->eng)
        dnnl_engine_destroy(c->eng);
    free(c);
}

int ops_ctx_threads(const ops_ctx *c) { return c->threads; }
void ops_ctx_set_compute(ops_ctx *c, ops_dtype t) { c->compute = t; }
void ops_ctx_keep_conv_weights(ops_ctx *c, int keep) { c->keep_conv_weights = keep; }
ops_dtype ops_ctx_compute(const ops_ctx *c) { return c->compute; }

#define HUGE_PAGE ((size_t)2 << 20)

/* n bytes of fresh zero pages; from 2 MB up in 2 MB-aligned transparent
 * huge pages where the kernel allows them: a full-size forward faults in
 * ~1 GB of scratch, which in 4 KB pages is ~250k page faults (~0.4 s). */
static void *map_pages(size_t n)
{
    if (n < HUGE_PAGE)
        return cpu_pages_alloc(n);
    char *p = mmap(NULL, n + HUGE_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    size_t head = (HUGE_PAGE - (uintptr_t)p % HUGE_PAGE) % HUGE_PAGE;
    if (head)
        munmap(p, head);
    munmap(p + head + n, HUGE_PAGE - head);
    madvise(p + head, n, MADV_HUGEPAGE);   /* advice only: fine where refused */
    return p + head;
}

/* Buffers come straight from mmap so that releasing them really returns
 * the pages (malloc would keep large freed blocks in its heap). */
void *cpu_buffer_grow(void **buf, size_t *cap, size_t bytes)
{
    if (*cap < bytes) {
        if (*buf)
            munmap(*buf, *cap);
        *cap = 0;
        size_t n = bytes < HUGE_PAGE ? (bytes + 4095) & ~(size_t)4095 : (bytes + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1);
        void *p = map_pages(n);
        if (!p)
            return *buf = NULL;
        *buf = p;
        *cap = n;
    }
    return *buf;
}

void *cpu_pages_alloc(size_t bytes)
{
    void *p = mmap(NULL, bytes ? bytes : 1, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

void cpu_pages_free(void *p, size_t bytes)
{
    if (p)
        munmap(p, bytes ? bytes : 1);
}

void cpu_buffer_release(void **buf, size_t *cap)
{
    if (*buf)
        munmap(*buf, *cap);
    *buf = NULL;
    *cap = 0;
}

void *ops_lowp_buffer(ops_ctx *c, size_t bytes) { return cpu_buffer_grow(&c->lowp, &c->lowp_cap, bytes); }
void *ops_conv_buffer(ops_ctx *c, size_t bytes) { return cpu_buffer_grow(&c->convb, &c->convb_cap, bytes); }
int ops_u8_levels(const ops_ctx *c) { return c->u8_levels; }
double ops_ctx_flops(const ops_ctx *c) { return c->flops; }
void ops_ctx_reset_flops(ops_ctx *c) { c->flops = 0; }
/* Also flushes denormals to zero (FTZ, DAZ) on the calling thread; the
 * OpenMP threads it starts inherit the setting. Denormal operands cost a
 * microcode assist per instruction (a 256x1024x7 matmul took 8 ms instead
 * of 0.06); the values they stand for are below 1.2e-38. */
void ops_ctx_enter(ops_ctx *c)
{
    _mm_setcsr(_mm_getcsr() | 0x8040);
    omp_set_num_threads(c->threads);
}

float *ops_scratch(ops_ctx *c, int slot, size_t nfloats)
{
    if (slot < 0 || slot >= OPS_SCRATCH_SLOTS)
        return NULL;
    return cpu_buffer_grow((void **)&c->slot[slot], &c->slot_cap[slot], nfloats * sizeof(float));
}

void ops_scratch_free(ops_ctx *c, int slot)
{
    if (slot >= 0 && slot < OPS_SCRATCH_SLOTS)
        cpu_buffer_release((void **)&c->slot[slot], &c->slot_cap[slot]);
}

void ops_scratch_release(ops_ctx *c)
{
    for (int i = 0; i < OPS_SCRATCH_SLOTS; i++)
        cpu_buffer_release((void **)&c->slot[i], &c->slot_cap[i]);
    cpu_buffer_release(&c->lowp, &c->lowp_cap);
    cpu_buffer_release(&c->convb, &c->convb_cap);
    cpu_wide_release(c);
    if (!c->keep_conv_weights)
        cpu_conv_weights_release(c);
}

cache_entry *cpu_cache_find(ops_ctx *c, const int64_t *key)
{
    for (int i = 0; i < CACHE_SLOTS; i++)
        if (c->cache[i].used && !memcmp(c->cache[i].key, key, sizeof c->cache[i].key)) {
            c->cache[i].last_use = ++c->clock;
            return &c->cache[i];
        }
    return NULL;
}

cache_entry *cpu_cache_victim(ops_ctx *c, const int64_t *key)
{
    cache_entry *v = &c->cache[0];
    for (int i = 0; i < CACHE_SLOTS; i++) {
        if (!c->cache[i].used) {
            v = &c->cache[i];
            break;
        }
        if (c->cache[i].last_use < v->last_use)
            v = &c->cache[i];
    }
    cpu_entry_clear(v);
    memcpy(v->key, key, sizeof v->key);
    v->used = 1;
    v->last_use = ++c->clock;
    return v;
}

/* Makes the primitive from a descriptor, with user scratchpad and the
 * attributes above. */
hadm_status cpu_entry_build(ops_ctx *c, cache_entry *e, const void *op_desc, const entry_attr *ea,
                               hadm_error *err)
{
    hadm_status s = HADM_OK;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    DNNL_TRY(dnnl_primitive_attr_create(&attr), "attr");
    DNNL_TRY(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user), "scratchpad");
    if (ea->accumulate) {
        DNNL_TRY(dnnl_post_ops_create(&po), "post-ops");
        if (ea->accumulate)
            DNNL_TRY(dnnl_post_ops_append_sum(po, 1.0f), "sum");
        DNNL_TRY(dnnl_primitive_attr_set_post_ops(attr, po), "post-ops");
    }
    DNNL_TRY(dnnl_primitive_desc_create(&e->pd, op_desc, attr, c->eng, NULL), "primitive descriptor");
    DNNL_TRY(dnnl_primitive_create(&e->prim, e->pd), "primitive");
    e->scratch_bytes = dnnl_memory_desc_get_size(dnnl_primitive_desc_query_md(e->pd, dnnl_query_scratchpad_md, 0));
fail:
    if (po)
        dnnl_post_ops_destroy(po);
    if (attr)
        dnnl_primitive_attr_destroy(attr);
    if (s)
        cpu_entry_clear(e);
    return s;
}

static hadm_status ensure_scratch(ops_ctx *c, size_t bytes, hadm_error *err)
{
    if (bytes <= c->scratch_cap)
        return HADM_OK;
    free(c->scratch);
    c->scratch = aligned_alloc(64, (bytes + 63) & ~(size_t)63);
    c->scratch_cap = c->scratch ? bytes : 0;
    return c->scratch ? HADM_OK : hadm_fail(err, HADM_ERR_NOMEM, "out of memory (scratchpad)");
}

/* Executes e with the given arguments and the context's scratchpad. */
hadm_status cpu_execute(ops_ctx *c, cache_entry *e, const exec_arg *a, int n, hadm_error *err)
{
    hadm_status s = HADM_OK;
    dnnl_memory_t mem[8] = {0};
    dnnl_exec_arg_t args[8];
    int k = 0;
    if ((s = ensure_scratch(c, e->scratch_bytes, err)))
        return s;
    for (; k < n; k++) {
        const dnnl_memory_desc_t *md =
            a[k].md ? a[k].md : dnnl_primitive_desc_query_md(e->pd, a[k].query, a[k].index);
        DNNL_TRY(dnnl_memory_create(&mem[k], md, c->eng, a[k].ptr), "memory");
        args[k].arg = a[k].arg;
        args[k].memory = mem[k];
    }
    if (e->scratch_bytes) {
        const dnnl_memory_desc_t *md = dnnl_primitive_desc_query_md(e->pd, dnnl_query_scratchpad_md, 0);
        DNNL_TRY(dnnl_memory_create(&mem[k], md, c->eng, c->scratch), "memory");
        args[k].arg = DNNL_ARG_SCRATCHPAD;
        args[k].memory = mem[k];
        k++;
    }
    ops_ctx_enter(c);
    DNNL_TRY(dnnl_primitive_execute(e->prim, c->stream, k, args), "execute");
    DNNL_TRY(dnnl_stream_wait(c->stream), "wait");
fail:
    for (int i = 0; i < 8; i++)
        if (mem[i])
            dnnl_memory_destroy(mem[i]);
    return s;
}



static hadm_status gemm_run(ops_ctx *c, const ops_gemm *g, int batch, int64_t sa, int64_t sb,
                            int64_t sc, hadm_error *err)
{
    if (g->M <= 0 || g->N <= 0 || g->K <= 0 || batch <= 0)
        return g->M == 0 || batch == 0 ? HADM_OK
                                       : hadm_fail(err, HADM_ERR_ARG, "matmul: bad shape");
    const ops_packed *pk = g->packed;
    /* The packed layout is chosen for pk->M rows but serves any M (window
     * blocks with a padded grid, batches); reduced-precision weights exist
     * only packed, so a shape mismatch there is an error, not a fallback. */
    if (pk && (batch != 1 || pk->N != g->N || pk->K != g->K || !g->trans_b)) {
        if (pk->dt != OPS_F32 || !g->B)
            return hadm_fail(err, HADM_ERR_INTERNAL, "matmul: packed weight %dx%d used as %dx%d",
                             pk->N, pk->K, g->N, g->K);
        pk = NULL;
    }
    if (pk && pk->dt != OPS_F32)
        return cpu_gemm_lowp(c, g, pk, err);
    if (g->ab_int8 && (pk || g->bias || g->accumulate))
        return hadm_fail(err, HADM_ERR_ARG, "matmul: u8 x s8 takes no packed weights, bias or accumulate");
    dnnl_data_type_t ab = g->ab_bf16 ? dnnl_bf16 : dnnl_f32;
    dnnl_data_type_t a_dt = g->ab_int8 ? dnnl_u8 : ab, b_dt = g->ab_int8 ? dnnl_s8 : ab;
    dnnl_data_type_t c_dt = g->ab_int8 ? dnnl_s32 : dnnl_f32;
    int64_t key[KEY_WORDS] = {1, batch, g->M, g->N, g->K, g->lda, g->ldb, g->trans_b, g->ldc, sa, sb,
                              sc, g->bias != NULL, g->accumulate};
    key[15] = (int64_t)(intptr_t)pk;
    key[16] = g->ab_bf16 | g->ab_int8 << 1;
    key[17] = pk ? pk->M : 0;   /* a widened bf16 weight's slot serves several layouts */
    cache_entry *e = cpu_cache_find(c, key);
    hadm_status s = HADM_OK;
    if (!e) {
        e = cpu_cache_victim(c, key);
        dnnl_memory_desc_t a_md, b_md, c_md, bias_md;
        dnnl_dims_t ad = {batch, g->M, g->K}, bd = {batch, g->K, g->N}, cd = {batch, g->M, g->N};
        dnnl_dims_t as = {sa, g->lda, 1}, cs = {sc, g->ldc, 1};
        dnnl_dims_t bs_t = {sb, 1, g->ldb}, bs_n = {sb, g->ldb, 1};
        int off = batch == 1 ? 1 : 0, nd = 3 - off;
        DNNL_TRY(dnnl_memory_desc_init_by_strides(&a_md, nd, ad + off, a_dt, as + off), "md");
        if (pk)
            b_md = pk->md;
        else
            DNNL_TRY(dnnl_memory_desc_init_by_strides(&b_md, nd, bd + off, b_dt,
                                                      (g->trans_b ? bs_t : bs_n) + off), "md");
        DNNL_TRY(dnnl_memory_desc_init_by_strides(&c_md, nd, cd + off, c_dt, cs + off), "md");
        dnnl_dims_t biasd = {1, 1, g->N};
        if (g->bias)
            DNNL_TRY(dnnl_memory_desc_init_by_tag(&bias_md, nd, biasd + off, dnnl_f32,
                                                  nd == 2 ? dnnl_ab : dnnl_abc), "md");
        dnnl_matmul_desc_t md;
        DNNL_TRY(dnnl_matmul_desc_init(&md, &a_md, &b_md, g->bias ? &bias_md : NULL, &c_md), "matmul desc");
        entry_attr ea = {.accumulate = g->accumulate};
        if ((s = cpu_entry_build(c, e, &md, &ea, err)))
            return s;
    }
    exec_arg a[4] = {{DNNL_ARG_SRC, dnnl_query_src_md, 0, (void *)g->A, NULL},
                     {DNNL_ARG_WEIGHTS, dnnl_query_weights_md, 0, pk ? pk->data : (void *)g->B, NULL},
                     {DNNL_ARG_DST, dnnl_query_dst_md, 0, g->C, NULL},
                     {DNNL_ARG_BIAS, dnnl_query_weights_md, 1, (void *)g->bias, NULL}};
    if ((s = cpu_execute(c, e, a, g->bias ? 4 : 3, err)))
        return s;
    c->flops += 2.0 * batch * g->M * (double)g->N * g->K;
    return HADM_OK;
fail:
    cpu_entry_clear(e);
    return s;
}

hadm_status ops_matmul(ops_ctx *c, const ops_gemm *g, hadm_error *err)
{
    if (g->b_weight && c->compute == OPS_S8 && !g->packed && !g->ab_bf16 && !g->ab_int8 && g->M > 0)
        return cpu_matmul_weight_s8(c, g, err);
    if (g->b_type == OPS_SRC_F32 || g->packed || g->M <= 0)
        return gemm_run(c, g, 1, 0, 0, 0, err);
    /* a bf16/f16 weight, widened into the convolution buffer for this call */
    size_t n = ops_gemm_b_elems(g);
    float *wide = ops_conv_buffer(c, n * sizeof *wide);
    if (!wide)
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory (widened weight)");
    ops_wpart p = {g->B, g->b_type, NULL, 1};
    ops_part_to_f32(&p, (int64_t)n, (int64_t)n, wide);
    ops_gemm f = *g;
    f.B = wide, f.b_type = OPS_SRC_F32;
    return gemm_run(c, &f, 1, 0, 0, 0, err);
}

hadm_status ops_matmul_batched(ops_ctx *c, const ops_gemm *g, int batch, int64_t stride_a,
                               int64_t stride_b, int64_t stride_c, hadm_error *err)
{
    if (g->bias || g->accumulate || g->b_type != OPS_SRC_F32)
        return hadm_fail(err, HADM_ERR_ARG, "batched matmul: bias/accumulate/typed B unsupported");
    return gemm_run(c, g, batch, stride_a, stride_b, stride_c, err);
}

hadm_status cpu_reorder(ops_ctx *c, const dnnl_memory_desc_t *from_md, const void *src,
                                const dnnl_memory_desc_t *to_md, void *dst, hadm_error *err)
{
    hadm_status s = HADM_OK;
    dnnl_primitive_desc_t rpd = NULL;
    dnnl_primitive_t r = NULL;
    dnnl_memory_t from = NULL, to = NULL;
    DNNL_TRY(dnnl_reorder_primitive_desc_create(&rpd, from_md, c->eng, to_md, c->eng, NULL), "reorder");
    DNNL_TRY(dnnl_primitive_create(&r, rpd), "reorder");
    DNNL_TRY(dnnl_memory_create(&from, from_md, c->eng, (void *)src), "memory");
    DNNL_TRY(dnnl_memory_create(&to, to_md, c->eng, dst), "memory");
    dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}};
    ops_ctx_enter(c);
    DNNL_TRY(dnnl_primitive_execute(r, c->stream, 2, args), "reorder");
    DNNL_TRY(dnnl_stream_wait(c->stream), "wait");
fail:
    if (from)
        dnnl_memory_destroy(from);
    if (to)
        dnnl_memory_destroy(to);
    if (r)
        dnnl_primitive_destroy(r);
    if (rpd)
        dnnl_primitive_desc_destroy(rpd);
    return s;
}
