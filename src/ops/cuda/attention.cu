// Multi-head attention on the GPU.
//
// The fused kernel (head dim 64) is flash attention on tensor cores: a block
// owns 64 queries of one head of one unit (a window or the whole grid), four
// warps of 16 queries each. Keys and values stream through shared memory 64
// at a time; each warp computes its 16x64 score tile with WMMA (bf16 in, f32
// out), updates its rows' running max and sum (online softmax, f32), and adds
// P·V into an f32 output tile kept in shared memory. Scores for a 4096-token
// unit never exist in full: memory traffic is O(N·hd) per head.
//
// The plain kernel (one thread per query row, f32 throughout) serves other
// head dims (the tiny test models) and is the reference in the cross-check.
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <mma.h>

#include "ops/cuda/cuda_internal.h"
extern "C" {
#include "util/err.h"
}

using namespace nvcuda;

#define HD 64
#define QT 64           // queries per block
#define KT 64           // keys per tile
#define LDH (HD + 8)    // bf16 tile row stride (multiple of 8, off the bank period)
#define LDF (KT + 4)    // f32 tile row stride (multiple of 4)
#define WARPS 4

struct flash_smem {
    __nv_bfloat16 q[QT * LDH], k[KT * LDH], v[KT * LDH];
    __nv_bfloat16 p[WARPS][16 * LDH];
    float s[WARPS][16 * LDF];
    float o[WARPS][16 * LDF];
};

// rows [row0, row0 + 64) of x (columns h*64..), scaled, as bf16; rows >= N are zero
__device__ void load_tile(__nv_bfloat16 *dst, const float *x, int64_t ld, int row0, int N, int h, float scale)
{
    for (int e = threadIdx.x; e < 64 * HD; e += blockDim.x) {
        int r = e / HD, c = e % HD;
        float v = row0 + r < N ? x[(int64_t)(row0 + r) * ld + h * HD + c] * scale : 0.0f;
        dst[r * LDH + c] = __float2bfloat16_rn(v);
    }
}

__global__ void __launch_bounds__(WARPS * 32) k_flash64(int N, float scale, const float *q, const float *k,
                                                         const float *v, int64_t ld, bf16_t *out, int64_t ldo)
{
    extern __shared__ __align__(128) unsigned char raw[];
    flash_smem &sm = *reinterpret_cast<flash_smem *>(raw);
    int q0 = blockIdx.x * QT, h = blockIdx.y;
    int64_t unit_row = (int64_t)blockIdx.z * N;
    q += unit_row * ld, k += unit_row * ld, v += unit_row * ld;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int r = lane >> 1, half = lane & 1;   // this lane's row in the warp tile and half of its columns
    float *S = sm.s[warp], *O = sm.o[warp];
    __nv_bfloat16 *P = sm.p[warp];
    load_tile(sm.q, q, ld, q0, N, h, scale);
    for (int c = 0; c < 32; c++)
        O[r * LDF + half * 32 + c] = 0.0f;
    float m = -INFINITY, l = 0.0f;
    for (int k0 = 0; k0 < N; k0 += KT) {
        __syncthreads();   // every warp is done with the previous K/V tile
        load_tile(sm.k, k, ld, k0, N, h, 1.0f);
        load_tile(sm.v, v, ld, k0, N, h, 1.0f);
        __syncthreads();
        for (int nt = 0; nt < KT / 16; nt++) {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
            wmma::fill_fragment(acc, 0.0f);
            for (int kk = 0; kk < HD / 16; kk++) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> a;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> b;
                wmma::load_matrix_sync(a, sm.q + warp * 16 * LDH + kk * 16, LDH);
                wmma::load_matrix_sync(b, sm.k + nt * 16 * LDH + kk * 16, LDH);
                wmma::mma_sync(acc, a, b, acc);
            }
            wmma::store_matrix_sync(S + nt * 16, acc, LDF, wmma::mem_row_major);
        }
        __syncwarp();
        float mx = -INFINITY;
        for (int c = 0; c < 32; c++) {
            int col = half * 32 + c;
            float s = k0 + col < N ? S[r * LDF + col] : -INFINITY;
            S[r * LDF + col] = s;
            mx = fmaxf(mx, s);
        }
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        float m_new = fmaxf(m, mx);
        float alpha = expf(m - m_new);   // 0 on the first tile (m = -inf)
        float sum = 0.0f;
        for (int c = 0; c < 32; c++) {
            int col = half * 32 + c;
            float p = expf(S[r * LDF + col] - m_new);
            sum += p;
            P[r * LDH + col] = __float2bfloat16_rn(p);
            O[r * LDF + col] *= alpha;
        }
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        l = l * alpha + sum;
        m = m_new;
        __syncwarp();
        for (int nt = 0; nt < HD / 16; nt++) {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
            wmma::load_matrix_sync(acc, O + nt * 16, LDF, wmma::mem_row_major);
            for (int kk = 0; kk < KT / 16; kk++) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> a;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> b;
                wmma::load_matrix_sync(a, P + kk * 16, LDH);
                wmma::load_matrix_sync(b, sm.v + kk * 16 * LDH + nt * 16, LDH);
                wmma::mma_sync(acc, a, b, acc);
            }
            wmma::store_matrix_sync(O + nt * 16, acc, LDF, wmma::mem_row_major);
        }
        __syncwarp();
    }
    int row = q0 + warp * 16 + r;
    if (row < N) {
        float inv = 1.0f / l;
        bf16_t *dst = out + (unit_row + row) * ldo + h * HD + half * 32;
        for (int c = 0; c < 32; c++)
            dst[c] = __bfloat16_as_ushort(__float2bfloat16_rn(O[r * LDF + half * 32 + c] * inv));
    }
}

// One thread per (unit, head, query): online softmax over all keys in f32.
__global__ void k_attention_simple(int units, int N, int heads, int hd, float scale, const float *q,
                                   const float *k, const float *v, int64_t ld, bf16_t *out, int64_t ldo)
{
    int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (i >= (int64_t)units * heads * N)
        return;
    int t = (int)(i % N), h = (int)(i / N % heads);
    int64_t base = i / ((int64_t)N * heads) * N;
    const float *qr = q + (base + t) * ld + (int64_t)h * hd;
    float acc[128];
    for (int d = 0; d < hd; d++)
        acc[d] = 0.0f;
    float m = -INFINITY, l = 0.0f;
    for (int j = 0; j < N; j++) {
        const float *kr = k + (base + j) * ld + (int64_t)h * hd, *vr = v + (base + j) * ld + (int64_t)h * hd;
        float s = 0.0f;
        for (int d = 0; d < hd; d++)
            s += qr[d] * kr[d];
        s *= scale;
        float m_new = fmaxf(m, s), alpha = expf(m - m_new), p = expf(s - m_new);
        l = l * alpha + p;
        for (int d = 0; d < hd; d++)
            acc[d] = acc[d] * alpha + p * vr[d];
        m = m_new;
    }
    bf16_t *dst = out + (base + t) * ldo + (int64_t)h * hd;
    for (int d = 0; d < hd; d++)
        dst[d] = __bfloat16_as_ushort(__float2bfloat16_rn(acc[d] / l));
}

extern "C" hadm_status cuda_kernels_init(hadm_error *err)
{
    cudaError_t e = cudaFuncSetAttribute(k_flash64, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         (int)sizeof(flash_smem));
    if (e != cudaSuccess)
        return hadm_fail(err, HADM_ERR_INTERNAL, "CUDA: flash attention needs %zu bytes of shared memory: %s",
                         sizeof(flash_smem), cudaGetErrorString(e));
    return HADM_OK;
}

extern "C" hadm_status cuda_attention_simple(cuda_dev *d, int units, int N, int heads, int hd, float scale,
                                             const float *q, const float *k, const float *v, int64_t ld,
                                             bf16_t *out, int64_t ldo, hadm_error *err)
{
    if (hd > 128 || hd <= 0 || N <= 0 || units <= 0)
        return hadm_fail(err, HADM_ERR_INTERNAL, "cuda attention: unsupported head dim %d / N %d", hd, N);
    int64_t n = (int64_t)units * heads * N;
    k_attention_simple<<<(unsigned)((n + 127) / 128), 128, 0, (cudaStream_t)cuda_dev_stream(d)>>>(
        units, N, heads, hd, scale, q, k, v, ld, out, ldo);
    return HADM_OK;
}

extern "C" hadm_status cuda_attention(cuda_dev *d, int units, int N, int heads, int hd, float scale, const float *q,
                                      const float *k, const float *v, int64_t ld, bf16_t *out, int64_t ldo,
                                      hadm_error *err)
{
    if (hd != HD || units > 65535 || heads > 65535)
        return cuda_attention_simple(d, units, N, heads, hd, scale, q, k, v, ld, out, ldo, err);
    dim3 grid((unsigned)((N + QT - 1) / QT), (unsigned)heads, (unsigned)units);
    k_flash64<<<grid, WARPS * 32, sizeof(flash_smem), (cudaStream_t)cuda_dev_stream(d)>>>(N, scale, q, k, v, ld,
                                                                                          out, ldo);
    return HADM_OK;
}
