// Elementwise, row and layout kernels of the CUDA backend, and the plain
// GEMM used when cuBLASLt has no algorithm for a shape. All memory-bound:
// one thread per element with grid-stride loops, except the row kernels
// (one block per row). Math follows ops/cpu/kernels.c (LayerNorm statistics
// in double, exact erf GELU) so the cross-check compares like with like.
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>

#include "ops/cuda/cuda_internal.h"

#define THREADS 256

static inline cudaStream_t stream_of(cuda_dev *d) { return (cudaStream_t)cuda_dev_stream(d); }

static inline unsigned blocks_for(int64_t n)
{
    int64_t b = (n + THREADS - 1) / THREADS;
    return (unsigned)(b < 1 ? 1 : b > (1 << 22) ? (1 << 22) : b);
}

__device__ __forceinline__ float bf2f(bf16_t v) { return __bfloat162float(__ushort_as_bfloat16(v)); }
__device__ __forceinline__ bf16_t f2bf(float v) { return __bfloat16_as_ushort(__float2bfloat16_rn(v)); }

#define GRID_LOOP(i, n) for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n); i += (int64_t)gridDim.x * blockDim.x)

__global__ void k_f32_to_bf16(const float *x, bf16_t *y, int64_t n)
{
    GRID_LOOP(i, n) y[i] = f2bf(x[i]);
}

__global__ void k_bf16_to_f32(const bf16_t *x, float *y, int64_t n)
{
    GRID_LOOP(i, n) y[i] = bf2f(x[i]);
}

extern "C" void cuda_f32_to_bf16(cuda_dev *d, const float *x, bf16_t *y, int64_t n)
{
    if (n > 0)
        k_f32_to_bf16<<<blocks_for(n), THREADS, 0, stream_of(d)>>>(x, y, n);
}

extern "C" void cuda_bf16_to_f32(cuda_dev *d, const bf16_t *x, float *y, int64_t n)
{
    if (n > 0)
        k_bf16_to_f32<<<blocks_for(n), THREADS, 0, stream_of(d)>>>(x, y, n);
}

// Sum over the block; every thread gets the total. sh: 32 doubles.
__device__ double block_sum(double v, double *sh)
{
    for (int o = 16; o; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    int w = threadIdx.x >> 5, l = threadIdx.x & 31, nw = blockDim.x >> 5;
    __syncthreads();
    if (l == 0)
        sh[w] = v;
    __syncthreads();
    v = l < nw ? sh[l] : 0.0;
    for (int o = 16; o; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float activate(float v, int act)
{
    if (act == CUDA_ACT_GELU)
        return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
    if (act == CUDA_ACT_RELU)
        return v > 0.0f ? v : 0.0f;
    return v;
}

__global__ void k_layernorm(int n, const float *x, int64_t ldx, const float *g, const float *b, float eps,
                            int act, float *y, int64_t ldy, bf16_t *ybf, int64_t ldyb)
{
    __shared__ double sh[32];
    int64_t r = blockIdx.x;
    const float *xr = x + r * ldx;
    double s = 0;
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        s += xr[i];
    float mean = (float)(block_sum(s, sh) / n);
    double v = 0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        float dd = xr[i] - mean;
        v += (double)dd * dd;
    }
    float inv = (float)(1.0 / sqrt(block_sum(v, sh) / n + (double)eps));
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        float o = activate((xr[i] - mean) * inv * g[i] + b[i], act);
        if (ybf)
            ybf[r * ldyb + i] = f2bf(o);
        if (y)
            y[r * ldy + i] = o;
    }
}

extern "C" void cuda_layernorm(cuda_dev *d, int64_t rows, int n, const float *x, int64_t ldx, const float *g,
                               const float *b, float eps, int act, float *y, int64_t ldy, bf16_t *ybf,
                               int64_t ldyb)
{
    if (rows > 0)
        k_layernorm<<<(unsigned)rows, THREADS, 0, stream_of(d)>>>(n, x, ldx, g, b, eps, act, y, ldy, ybf, ldyb);
}

__global__ void k_rope(int64_t rows, int heads, int hd, float *x, int64_t ld, const float *cs, const float *sn,
                       int64_t period)
{
    int64_t pairs = (int64_t)heads * hd / 2;
    GRID_LOOP(i, rows * pairs) {
        int64_t r = i / pairs;
        int64_t j = i % pairs;
        int h = (int)(j / (hd / 2)), dd = (int)(j % (hd / 2)) * 2;
        const float *cr = cs + (r % period) * hd, *sr = sn + (r % period) * hd;
        float *v = x + r * ld + (int64_t)h * hd;
        float a = v[dd], b = v[dd + 1];
        v[dd] = a * cr[dd] - b * sr[dd];
        v[dd + 1] = b * cr[dd + 1] + a * sr[dd + 1];
    }
}

extern "C" void cuda_rope(cuda_dev *d, int64_t rows, int heads, int hd, float *x, int64_t ld, const float *cos,
                          const float *sin, int64_t period)
{
    int64_t n = rows * heads * hd / 2;
    if (n > 0)
        k_rope<<<blocks_for(n), THREADS, 0, stream_of(d)>>>(rows, heads, hd, x, ld, cos, sin, period);
}

__global__ void k_silu_mul(int64_t rows, int n, float *a, int64_t lda, const float *b, int64_t ldb)
{
    GRID_LOOP(i, rows * n) {
        int64_t r = i / n;
        int c = (int)(i % n);
        float v = a[r * lda + c];
        a[r * lda + c] = v / (1.0f + expf(-v)) * b[r * ldb + c];
    }
}

extern "C" void cuda_silu_mul(cuda_dev *d, int64_t rows, int n, float *a, int64_t lda, const float *b, int64_t ldb)
{
    if (rows * n > 0)
        k_silu_mul<<<blocks_for(rows * n), THREADS, 0, stream_of(d)>>>(rows, n, a, lda, b, ldb);
}

__global__ void k_add_broadcast(float *y, const float *x, int64_t n, int reps)
{
    GRID_LOOP(i, n * reps) y[i] += x[i % n];
}

extern "C" void cuda_add_broadcast(cuda_dev *d, float *y, const float *x, int64_t n, int reps)
{
    if (n * reps > 0)
        k_add_broadcast<<<blocks_for(n * reps), THREADS, 0, stream_of(d)>>>(y, x, n, reps);
}

__global__ void k_softmax_rows(int n, float *x, int64_t ld)
{
    __shared__ double sh[32];
    __shared__ float mx_sh[32];
    float *xr = x + blockIdx.x * ld;
    float mx = -INFINITY;
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        mx = fmaxf(mx, xr[i]);
    for (int o = 16; o; o >>= 1)
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    if ((threadIdx.x & 31) == 0)
        mx_sh[threadIdx.x >> 5] = mx;
    __syncthreads();
    mx = -INFINITY;
    for (int w = 0; w < (int)(blockDim.x >> 5); w++)
        mx = fmaxf(mx, mx_sh[w]);
    double s = 0;
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        s += expf(xr[i] - mx);
    float inv = (float)(1.0 / block_sum(s, sh));
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        xr[i] = expf(xr[i] - mx) * inv;
}

extern "C" void cuda_softmax_rows(cuda_dev *d, int64_t rows, int n, float *x, int64_t ld)
{
    if (rows > 0)
        k_softmax_rows<<<(unsigned)rows, THREADS, 0, stream_of(d)>>>(n, x, ld);
}

__global__ void k_window_partition(const float *x, bf16_t *win, int B, int G, int D, int WS, int nw)
{
    int64_t per_img = (int64_t)nw * nw * WS * WS * D;
    GRID_LOOP(e, per_img * B) {
        int64_t b = e / per_img, r = e % per_img;
        int dd = (int)(r % D);
        int64_t tok = r / D;
        int ix = (int)(tok % WS), iy = (int)(tok / WS % WS);
        int64_t w = tok / ((int64_t)WS * WS);
        int wx = (int)(w % nw), wy = (int)(w / nw);
        int y = wy * WS + iy, xx = wx * WS + ix;
        float v = y < G && xx < G ? x[((b * G + y) * G + xx) * D + dd] : 0.0f;
        win[e] = f2bf(v);
    }
}

extern "C" void cuda_window_partition(cuda_dev *d, const float *x, bf16_t *win, int B, int G, int D, int WS, int nw)
{
    int64_t n = (int64_t)B * nw * nw * WS * WS * D;
    k_window_partition<<<blocks_for(n), THREADS, 0, stream_of(d)>>>(x, win, B, G, D, WS, nw);
}

__global__ void k_window_unpartition_add(const float *win, float *x, int B, int G, int D, int WS, int nw)
{
    int64_t per_img = (int64_t)G * G * D, per_win_img = (int64_t)nw * nw * WS * WS * D;
    GRID_LOOP(e, per_img * B) {
        int64_t b = e / per_img, r = e % per_img;
        int dd = (int)(r % D);
        int64_t tok = r / D;
        int y = (int)(tok / G), xx = (int)(tok % G);
        int wy = y / WS, wx = xx / WS, iy = y % WS, ix = xx % WS;
        x[e] += win[b * per_win_img + ((((int64_t)wy * nw + wx) * WS + iy) * WS + ix) * D + dd];
    }
}

extern "C" void cuda_window_unpartition_add(cuda_dev *d, const float *win, float *x, int B, int G, int D, int WS,
                                            int nw)
{
    int64_t n = (int64_t)B * G * G * D;
    k_window_unpartition_add<<<blocks_for(n), THREADS, 0, stream_of(d)>>>(win, x, B, G, D, WS, nw);
}

__global__ void k_patch_im2col(const float *chw, int B, int Cin, int S, int P, bf16_t *cols)
{
    int G = S / P, Kp = Cin * P * P;
    int64_t T = (int64_t)G * G;
    GRID_LOOP(e, B * T * Kp) {
        int64_t row = e / Kp;
        int k = (int)(e % Kp);
        int64_t b = row / T, t = row % T;
        int ty = (int)(t / G), tx = (int)(t % G);
        int ch = k / (P * P), ky = k / P % P, kx = k % P;
        cols[e] = f2bf(chw[((b * Cin + ch) * S + ty * P + ky) * (int64_t)S + tx * P + kx]);
    }
}

extern "C" void cuda_patch_im2col(cuda_dev *d, const float *chw, int B, int Cin, int S, int P, bf16_t *cols)
{
    int64_t G = S / P, n = (int64_t)B * G * G * Cin * P * P;
    k_patch_im2col<<<blocks_for(n), THREADS, 0, stream_of(d)>>>(chw, B, Cin, S, P, cols);
}

__global__ void k_im2col3x3(const float *x, int N, int H, int W, int Cin, bf16_t *cols)
{
    int64_t K = 9 * (int64_t)Cin;
    GRID_LOOP(e, (int64_t)N * H * W * K) {
        int64_t p = e / K;
        int k = (int)(e % K);
        int tap = k / Cin, c = k % Cin, ky = tap / 3, kx = tap % 3;
        int64_t n = p / ((int64_t)H * W);
        int y = (int)(p / W % H) + ky - 1, xx = (int)(p % W) + kx - 1;
        float v = y >= 0 && y < H && xx >= 0 && xx < W ? x[((n * H + y) * W + xx) * Cin + c] : 0.0f;
        cols[e] = f2bf(v);
    }
}

extern "C" void cuda_im2col3x3(cuda_dev *d, const float *x, int N, int H, int W, int Cin, bf16_t *cols)
{
    int64_t n = (int64_t)N * H * W * 9 * Cin;
    if (n > 0)
        k_im2col3x3<<<blocks_for(n), THREADS, 0, stream_of(d)>>>(x, N, H, W, Cin, cols);
}

__global__ void k_convt_scatter(const float *tmp, int H, int W, int Cout, const float *bias, float *y)
{
    int W2 = 2 * W;
    GRID_LOOP(e, (int64_t)4 * H * W * Cout) {
        int o = (int)(e % Cout);
        int64_t pix = e / Cout;
        int Y = (int)(pix / W2), X = (int)(pix % W2);
        int64_t p = (int64_t)(Y / 2) * W + X / 2;
        int dsub = (Y % 2) * 2 + X % 2;
        y[e] = tmp[p * Cout * 4 + (int64_t)o * 4 + dsub] + bias[o];
    }
}

extern "C" void cuda_conv_transpose_scatter(cuda_dev *d, const float *tmp, int H, int W, int Cout,
                                            const float *bias, float *y)
{
    int64_t n = (int64_t)4 * H * W * Cout;
    k_convt_scatter<<<blocks_for(n), THREADS, 0, stream_of(d)>>>(tmp, H, W, Cout, bias, y);
}

__global__ void k_maxpool2(const float *x, int W, int C, float *y, int Ho, int Wo)
{
    GRID_LOOP(e, (int64_t)Ho * Wo * C) {
        int c = (int)(e % C);
        int64_t p = e / C;
        int oy = (int)(p / Wo), ox = (int)(p % Wo);
        const float *p00 = x + ((int64_t)(2 * oy) * W + 2 * ox) * C + c, *p01 = p00 + C;
        const float *p10 = p00 + (int64_t)W * C, *p11 = p10 + C;
        float m0 = *p00 > *p01 ? *p00 : *p01, m1 = *p10 > *p11 ? *p10 : *p11;
        y[e] = m0 > m1 ? m0 : m1;
    }
}

extern "C" void cuda_maxpool2(cuda_dev *d, const float *x, int H, int W, int C, float *y)
{
    int Ho = H / 2, Wo = W / 2;
    int64_t n = (int64_t)Ho * Wo * C;
    if (n > 0)
        k_maxpool2<<<blocks_for(n), THREADS, 0, stream_of(d)>>>(x, W, C, y, Ho, Wo);
}

__global__ void k_subsample2(const float *x, int W, int C, float *y, int Ho, int Wo)
{
    GRID_LOOP(e, (int64_t)Ho * Wo * C) {
        int c = (int)(e % C);
        int64_t p = e / C;
        int oy = (int)(p / Wo), ox = (int)(p % Wo);
        y[e] = x[((int64_t)(2 * oy) * W + 2 * ox) * C + c];
    }
}

extern "C" void cuda_subsample2(cuda_dev *d, const float *x, int W, int C, float *y, int Ho, int Wo)
{
    int64_t n = (int64_t)Ho * Wo * C;
    if (n > 0)
        k_subsample2<<<blocks_for(n), THREADS, 0, stream_of(d)>>>(x, W, C, y, Ho, Wo);
}

__global__ void k_flatten_cmajor(const float *x, int n, int P, int C, bf16_t *y)
{
    int64_t per = (int64_t)P * C;
    GRID_LOOP(e, (int64_t)n * per) {
        int64_t i = e / per, r = e % per;
        int ch = (int)(r / P), p = (int)(r % P);
        y[e] = f2bf(x[i * per + (int64_t)p * C + ch]);
    }
}

extern "C" void cuda_flatten_cmajor(cuda_dev *d, const float *x, int n, int P, int C, bf16_t *y)
{
    int64_t e = (int64_t)n * P * C;
    if (e > 0)
        k_flatten_cmajor<<<blocks_for(e), THREADS, 0, stream_of(d)>>>(x, n, P, C, y);
}

// C[m][n] = sum_k A[m][k] W[n][k] (+bias[n]) (+beta C), then ReLU: 16x16 tiles.
__global__ void k_gemm_simple(cuda_gemm g)
{
    __shared__ float As[16][17], Ws[16][17];
    int tx = threadIdx.x, ty = threadIdx.y;
    int m = blockIdx.y * 16 + ty, n = blockIdx.x * 16 + tx, nw = blockIdx.x * 16 + ty;
    float acc = 0.0f;
    for (int k0 = 0; k0 < g.K; k0 += 16) {
        int k = k0 + tx;
        As[ty][tx] = m < g.M && k < g.K ? bf2f(g.A[(int64_t)m * g.lda + k]) : 0.0f;
        Ws[ty][tx] = nw < g.N && k < g.K ? bf2f(g.W[(int64_t)nw * g.ldw + k]) : 0.0f;
        __syncthreads();
        for (int kk = 0; kk < 16; kk++)
            acc += As[ty][kk] * Ws[tx][kk];
        __syncthreads();
    }
    if (m < g.M && n < g.N) {
        float *c = g.C + (int64_t)m * g.ldc + n;
        float v = acc;
        if (g.beta != 0.0f)
            v += g.beta * *c;
        if (g.bias)
            v += g.bias[n];
        *c = g.relu && v < 0.0f ? 0.0f : v;
    }
}

extern "C" void cuda_gemm_simple_launch(cuda_dev *d, const cuda_gemm *g)
{
    dim3 grid((unsigned)((g->N + 15) / 16), (unsigned)((g->M + 15) / 16)), block(16, 16);
    k_gemm_simple<<<grid, block, 0, stream_of(d)>>>(*g);
}
