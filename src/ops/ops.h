/* ops: the tensor operations the engine needs, behind one interface.
 *
 * Ops know nothing of HADM. Dense matrices are row-major float32 with explicit
 * leading dimensions; feature maps are NHWC (channels contiguous), which makes
 * the channel LayerNorms, ROIAlign and 1x1 convs contiguous.
 *
 * An ops_ctx holds what one thread of execution needs (scratch memory, the
 * thread count); it must not be used by two threads at once. A backend is the
 * set of functions below; the CPU one is in ops/cpu (oneDNN + own kernels).
 * Every function returns 0 on success, non-zero (and fills err) on failure. */
#ifndef HADM_OPS_H
#define HADM_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "hadm.h"

typedef struct ops_ctx ops_ctx;

hadm_status ops_ctx_new(int threads, ops_ctx **out, hadm_error *err);
void ops_ctx_free(ops_ctx *c);
int ops_ctx_threads(const ops_ctx *c);
/* FLOPs done by the dense ops of this context since the last reset. */
double ops_ctx_flops(const ops_ctx *c);
void ops_ctx_reset_flops(ops_ctx *c);

/* ---- dense ---------------------------------------------------------------
 * C[M,N] = A[M,K] · op(B) (+ bias[N]) (+ C if accumulate)
 * op(B) = Bᵀ where B is stored [N,K] (trans_b = 1, PyTorch Linear weight)
 *       = B  where B is stored [K,N] (trans_b = 0). ldb is B's row stride. */
/* A Linear weight [N][K] reordered once into the layout the matmul kernel
 * wants for C[M,N] = A[M,K]·Wᵀ (10-40% faster than reading the plain
 * transposed matrix each call). Immutable: may be shared by contexts. */
typedef struct ops_packed ops_packed;
hadm_status ops_pack_weights(ops_ctx *c, int M, int N, int K, const float *w, ops_packed **out,
                             hadm_error *err);

/* Reduced precision (ops/cpu/dnnl_lowp.c). A packed weight's element type
 * decides how a matmul with it runs: BF16 converts A to bf16 on the fly; S8
 * quantises A per call to u8 with a scale and zero point per row, and uses
 * the weight's per-output-channel scales. Both accumulate in f32 (s32 for
 * S8) and write f32 C, with bias and accumulate applied in f32. */
typedef enum { OPS_F32 = 0, OPS_BF16 = 1, OPS_S8 = 2 } ops_dtype;
typedef enum { OPS_SRC_F32, OPS_SRC_BF16, OPS_SRC_F16, OPS_SRC_S8 } ops_src_type;
/* `rows` rows of K values in a file's element type; S8 rows carry a scale
 * per row (value = q * scale[row]). */
typedef struct {
    const void *data;
    ops_src_type type;
    const float *scale;
    int rows;
} ops_wpart;
/* Packs the rows of all parts, stacked, as one [N = sum rows][K] Linear
 * weight in element type `to`. */
hadm_status ops_pack_parts(ops_ctx *c, int M, int K, const ops_wpart *parts, int nparts, ops_dtype to,
                           ops_packed **out, hadm_error *err);
ops_dtype ops_packed_dtype(const ops_packed *p);
/* The element type attention and convolutions compute in for this context:
 * F32; BF16 (both in bf16); S8 (convolutions, weight gemms (b_weight)
 * and both products of attention in int8 like the Linears). Norms,
 * softmax and everything else stay f32. */
void ops_ctx_set_compute(ops_ctx *c, ops_dtype t);
ops_dtype ops_ctx_compute(const ops_ctx *c);
/* Whether convolution weights, once reordered for their primitive, stay
 * (the default) or go with the scratch memory at ops_scratch_release and
 * are reordered again at their next use (~40 MB of weights per full-size
 * model, a few ms per forward): for models opened to save memory. */
void ops_ctx_keep_conv_weights(ops_ctx *c, int keep);
/* Whether this CPU multiplies bf16 clearly faster than f32 (its bf16 dot
 * product measured against its f32 FMA once per process, ~3 ms;
 * HADM_BF16_COMPUTE=native|f32 overrides). Where it does not, a bf16 model
 * keeps its weights packed in bf16 but computes in f32: an F32 context
 * widens bf16-packed weights to f32 per use (one layer at a time). */
int ops_bf16_native(void);
/* Element conversions used by the loader and the quantizer. */
float ops_bf16_to_f32(uint16_t h);
uint16_t ops_f32_to_bf16(float f);   /* round to nearest even */
float ops_f16_to_f32(uint16_t h);
uint16_t ops_f32_to_f16(float f);
/* dst[i] = value of element i of a part of `n` elements (row r = i / K). */
void ops_part_to_f32(const ops_wpart *p, int64_t K, int64_t n, float *dst);
size_t ops_src_size(ops_src_type t);   /* bytes per element */
/* The p->rows rows of p as element type `to` at dst (S8: with a scale per
 * row, max|row| / 127, at scale). row_f32 is scratch for K floats. */
void ops_part_convert(const ops_wpart *p, int64_t K, ops_dtype to, void *dst, float *scale,
                      float *row_f32);
void ops_packed_free(ops_packed *p);
size_t ops_packed_bytes(const ops_packed *p);

typedef struct {
    int M, N, K;
    const float *A; int64_t lda;
    const float *B; int64_t ldb; int trans_b;
    const float *bias;          /* may be NULL */
    float *C; int64_t ldc;
    int accumulate;             /* C += result */
    const ops_packed *packed;   /* optional: used instead of B when M, N, K match */
    int ab_bf16;                /* A and B hold bf16 (uint16) elements, not f32 */
    int ab_int8;                /* A holds u8, B s8 and C s32 (no bias/accumulate) */
    /* B is a model weight (the same at every call): an S8 context packs it
     * as int8 on first use, keeps it, and multiplies in int8 */
    int b_weight;
    /* B's element type when it is not f32 (a weight read in place from a
     * bf16/f16 file): widened per call (ops_matmul only, not batched) */
    ops_src_type b_type;
    /* With bf16/s8 packed weights: A already holds the operand type (dense,
     * lda = K), so no conversion pass is made. For S8 that is u8 with
     * value = a_scale[m] * (q - a_zero[m]) in row m. */
    int a_converted;
    const float *a_scale;
    const int32_t *a_zero;
} ops_gemm;
hadm_status ops_matmul(ops_ctx *c, const ops_gemm *g, hadm_error *err);

/* The SwiGLU MLP's middle: C[M][N/2] = LayerNorm(silu(H[:, :N/2]) * H[:, N/2:])
 * with ln_g, ln_b, eps, where H = A·op(B) + bias is [M][N] and h is caller
 * scratch for it (M x N floats). With int8 weights the s32 sums become C row
 * by row in h's memory, without an f32 pass over H. No accumulate. */
hadm_status ops_matmul_swiglu_ln(ops_ctx *c, const ops_gemm *g, float *h, const float *ln_g,
                                 const float *ln_b, float eps, hadm_error *err);

/* The same gemm repeated over `batch` independent problems, A/B/C advanced by
 * the given element strides per batch entry (bias and accumulate unsupported). */
hadm_status ops_matmul_batched(ops_ctx *c, const ops_gemm *g, int batch, int64_t stride_a,
                               int64_t stride_b, int64_t stride_c, hadm_error *err);

/* 2-D convolution, NHWC in and out, weight in PyTorch layout [Cout][Cin][kh][kw],
 * zero padding, optional bias. */
typedef struct {
    int N, H, W, Cin, Cout, kh, kw, stride, pad;
    /* x's first and last `pad` rows are the padding already (a band of a
     * larger map, with its neighbours' rows): only columns get zeros */
    int rows_padded;
    const float *x;        /* N*H*W*Cin */
    const float *w;        /* Cout*Cin*kh*kw */
    ops_src_type w_type;   /* w's element type (a bf16/f16 file's, read in place) */
    const float *bias;     /* Cout or NULL */
    float *y;              /* N*Ho*Wo*Cout */
} ops_conv;
hadm_status ops_conv2d(ops_ctx *c, const ops_conv *p, hadm_error *err);
static inline int ops_conv_pad_rows(const ops_conv *p) { return p->rows_padded ? 0 : p->pad; }
static inline int ops_conv_out_h(const ops_conv *p)
{
    return (p->H + 2 * ops_conv_pad_rows(p) - p->kh) / p->stride + 1;
}
static inline int ops_conv_out_w(const ops_conv *p) { return (p->W + 2 * p->pad - p->kw) / p->stride + 1; }

/* ---- elementwise and row ops (own kernels, threaded) ------------------- */
/* y[r] = LayerNorm(x[r]) * g + b over n values per row; x may equal y. */
void ops_layernorm(ops_ctx *c, int64_t rows, int n, const float *x, int64_t ldx, const float *g,
                   const float *b, float eps, float *y, int64_t ldy);
void ops_relu(ops_ctx *c, float *x, int64_t n);
void ops_gelu_erf(ops_ctx *c, float *x, int64_t n);
/* a[i] = silu(a[i]) * b[i] for rows x n, with row strides */
void ops_silu_mul(ops_ctx *c, int64_t rows, int n, float *a, int64_t lda, const float *b, int64_t ldb);
/* in-place softmax of each row of n values (row stride ld) */
void ops_softmax_rows(ops_ctx *c, int64_t rows, int n, float *x, int64_t ld);
/* 2-D RoPE, interleaved pairs: row r of x (heads x hd values, row stride ld)
 * is rotated with table row (r % period) of cos/sin [period][hd]. */
void ops_rope(ops_ctx *c, int64_t rows, int heads, int hd, float *x, int64_t ld, const float *cos,
              const float *sin, int64_t period);
/* y += x */
void ops_add(ops_ctx *c, float *y, const float *x, int64_t n);

/* Multi-head attention for one unit of N tokens (a window or the whole grid):
 * q,k,v: [N][ld] with head h in columns [h*hd, (h+1)*hd); RoPE already applied.
 * out:   [N][ldo], same head layout. Scores are never held for all heads and
 * all queries at once: queries are processed in tiles. */
hadm_status ops_attention(ops_ctx *c, int N, int heads, int hd, float scale, const float *q,
                          const float *k, const float *v, int64_t ld, float *out, int64_t ldo,
                          hadm_error *err);

/* Greedy NMS with torchvision semantics on xyxy boxes: `order` lists candidate
 * indices by descending score; a later box is suppressed when IoU > thresh
 * (strictly). Writes the kept indices (in order) to keep, returns their count.
 * keep must have room for n entries (it doubles as the suppression flags). */
int ops_nms(const float *boxes, const int *order, int n, float iou_thresh, int *keep);

/* ROIAlign (torchvision roi_align) of one xyxy box on an NHWC map [H][W][C]:
 * out [res][res][C]. sampling_ratio 0 = adaptive ceil(size/res) per axis. */
void ops_roi_align(const float *map, int H, int W, int C, const float box[4], float spatial_scale,
                   int res, int sampling_ratio, int aligned, float *out);

/* Scratch memory owned by the context, grown on demand, valid until the next
 * call that asks for the same slot. */
float *ops_scratch(ops_ctx *c, int slot, size_t nfloats);
/* Returns all scratch memory to the system. Called between pipeline stages:
 * each stage's buffers are then resident only while it runs, so peak memory
 * is the largest stage, not the sum of every stage's largest buffers. */
void ops_scratch_release(ops_ctx *c);
/* Returns one slot's memory (a stage's buffer that is dead before the stage
 * ends). */
void ops_scratch_free(ops_ctx *c, int slot);
#define OPS_SCRATCH_SLOTS 8
#define OPS_SCRATCH_ATTN 7   /* reserved for ops_attention */

#endif
