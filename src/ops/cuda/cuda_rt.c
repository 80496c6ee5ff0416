/* CUDA runtime plumbing of the backend: devices, memory, streams, graphs,
 * timers, and the cuBLASLt GEMM. */
#include <cublasLt.h>
#include <cuda_runtime_api.h>
#include <stdlib.h>
#include <string.h>

#include "ops/cuda/cuda_internal.h"
#include "util/err.h"

struct cuda_dev {
    int device;
    cudaStream_t stream;
    cublasLtHandle_t lt;
    void *workspace;
    size_t ws_size;
    double flops;
};

struct cuda_graph {
    cudaGraphExec_t exec;
};

struct cuda_timer {
    cudaEvent_t start, stop;
};

static hadm_status cu_fail(hadm_error *err, cudaError_t e, const char *what)
{
    return hadm_fail(err, e == cudaErrorMemoryAllocation ? HADM_ERR_NOMEM : HADM_ERR_INTERNAL, "CUDA %s: %s",
                     what, cudaGetErrorString(e));
}

#define CU(call, what)                                                                                        \
    do {                                                                                                       \
        cudaError_t e_ = (call);                                                                               \
        if (e_ != cudaSuccess)                                                                                 \
            return cu_fail(err, e_, what);                                                                     \
    } while (0)

hadm_status cuda_device_count(int *n, hadm_error *err)
{
    *n = 0;
    cudaError_t e = cudaGetDeviceCount(n);
    if (e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver) {
        *n = 0;
        return HADM_OK;
    }
    CU(e, "device count");
    return HADM_OK;
}

hadm_status cuda_device_memory(int device, size_t *free_b, size_t *total_b, char *name, size_t name_len,
                               hadm_error *err)
{
    CU(cudaSetDevice(device), "set device");
    CU(cudaMemGetInfo(free_b, total_b), "memory info");
    if (name && name_len) {
        struct cudaDeviceProp p;
        CU(cudaGetDeviceProperties(&p, device), "device properties");
        strncpy(name, p.name, name_len - 1);
        name[name_len - 1] = '\0';
    }
    return HADM_OK;
}

hadm_status cuda_dev_new(int device, size_t workspace, cuda_dev **out, hadm_error *err)
{
    *out = NULL;
    cuda_dev *d = calloc(1, sizeof *d);
    if (!d)
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory");
    d->device = device;
    hadm_status s = HADM_OK;
    cudaError_t e = cudaSetDevice(device);
    if (e == cudaSuccess)
        e = cudaStreamCreateWithFlags(&d->stream, cudaStreamNonBlocking);
    if (e == cudaSuccess && workspace)
        e = cudaMalloc(&d->workspace, workspace);
    if (e != cudaSuccess)
        s = cu_fail(err, e, "context");
    else if (cublasLtCreate(&d->lt) != CUBLAS_STATUS_SUCCESS)
        s = hadm_fail(err, HADM_ERR_INTERNAL, "cuBLASLt could not be initialised");
    d->ws_size = workspace;
    if (!s)
        s = cuda_kernels_init(err);
    if (s) {
        cuda_dev_free(d);
        return s;
    }
    *out = d;
    return HADM_OK;
}

void cuda_dev_free(cuda_dev *d)
{
    if (!d)
        return;
    cudaSetDevice(d->device);
    if (d->stream)
        cudaStreamSynchronize(d->stream);
    if (d->lt)
        cublasLtDestroy(d->lt);
    cudaFree(d->workspace);
    if (d->stream)
        cudaStreamDestroy(d->stream);
    free(d);
}

void *cuda_dev_stream(cuda_dev *d) { return d->stream; }
int cuda_dev_index(const cuda_dev *d) { return d->device; }
double cuda_dev_flops(const cuda_dev *d) { return d->flops; }
void cuda_dev_reset_flops(cuda_dev *d) { d->flops = 0; }

hadm_status cuda_dev_sync(cuda_dev *d, hadm_error *err)
{
    CU(cudaStreamSynchronize(d->stream), "synchronise");
    return HADM_OK;
}

hadm_status cuda_dev_activate(cuda_dev *d, hadm_error *err)
{
    CU(cudaSetDevice(d->device), "set device");
    return HADM_OK;
}

hadm_status cuda_dev_check(cuda_dev *d, const char *what, hadm_error *err)
{
    (void)d;
    CU(cudaGetLastError(), what);
    return HADM_OK;
}

hadm_status cuda_malloc(int device, size_t bytes, void **p, hadm_error *err)
{
    *p = NULL;
    CU(cudaSetDevice(device), "set device");
    CU(cudaMalloc(p, bytes ? bytes : 1), "allocation");
    return HADM_OK;
}

void cuda_free(void *p) { cudaFree(p); }

hadm_status cuda_host_alloc(size_t bytes, void **p, hadm_error *err)
{
    *p = NULL;
    CU(cudaMallocHost(p, bytes ? bytes : 1), "pinned allocation");
    return HADM_OK;
}

void cuda_host_free(void *p) { cudaFreeHost(p); }

hadm_status cuda_copy_to_device(cuda_dev *d, void *dst, const void *src, size_t bytes, hadm_error *err)
{
    CU(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, d->stream), "copy to device");
    return HADM_OK;
}

hadm_status cuda_copy_to_host(cuda_dev *d, void *dst, const void *src, size_t bytes, hadm_error *err)
{
    CU(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, d->stream), "copy to host");
    return HADM_OK;
}

hadm_status cuda_memset(cuda_dev *d, void *dst, int v, size_t bytes, hadm_error *err)
{
    CU(cudaMemsetAsync(dst, v, bytes, d->stream), "memset");
    return HADM_OK;
}

hadm_status cuda_upload(void *dst, const void *src, size_t bytes, hadm_error *err)
{
    CU(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice), "weight upload");
    return HADM_OK;
}

/* Thread-local capture: other workers may allocate or launch on their own
 * streams while this one records. */
hadm_status cuda_capture_begin(cuda_dev *d, hadm_error *err)
{
    CU(cudaStreamBeginCapture(d->stream, cudaStreamCaptureModeThreadLocal), "graph capture");
    return HADM_OK;
}

hadm_status cuda_capture_end(cuda_dev *d, cuda_graph **out, hadm_error *err)
{
    *out = NULL;
    cudaGraph_t g = NULL;
    CU(cudaStreamEndCapture(d->stream, &g), "graph capture end");
    cuda_graph *cg = calloc(1, sizeof *cg);
    cudaError_t e = cg ? cudaGraphInstantiate(&cg->exec, g, 0) : cudaErrorMemoryAllocation;
    cudaGraphDestroy(g);
    if (e != cudaSuccess) {
        free(cg);
        return cu_fail(err, e, "graph instantiate");
    }
    *out = cg;
    return HADM_OK;
}

hadm_status cuda_graph_launch(cuda_dev *d, cuda_graph *g, hadm_error *err)
{
    CU(cudaGraphLaunch(g->exec, d->stream), "graph launch");
    return HADM_OK;
}

void cuda_graph_free(cuda_graph *g)
{
    if (!g)
        return;
    cudaGraphExecDestroy(g->exec);
    free(g);
}

hadm_status cuda_timer_new(cuda_timer **out, hadm_error *err)
{
    cuda_timer *t = calloc(1, sizeof *t);
    if (!t)
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory");
    if (cudaEventCreate(&t->start) != cudaSuccess || cudaEventCreate(&t->stop) != cudaSuccess) {
        cuda_timer_free(t);
        return hadm_fail(err, HADM_ERR_INTERNAL, "CUDA events could not be created");
    }
    *out = t;
    return HADM_OK;
}

void cuda_timer_start(cuda_dev *d, cuda_timer *t) { cudaEventRecord(t->start, d->stream); }

double cuda_timer_stop_ms(cuda_dev *d, cuda_timer *t)
{
    float ms = 0;
    cudaEventRecord(t->stop, d->stream);
    if (cudaEventSynchronize(t->stop) != cudaSuccess || cudaEventElapsedTime(&ms, t->start, t->stop) != cudaSuccess)
        return -1;
    return ms;
}

void cuda_timer_free(cuda_timer *t)
{
    if (!t)
        return;
    if (t->start)
        cudaEventDestroy(t->start);
    if (t->stop)
        cudaEventDestroy(t->stop);
    free(t);
}

/* ---- GEMM ------------------------------------------------------------------
 * Row-major C[M,N] = A[M,K]·W[N,K]ᵀ is, in cuBLAS's column-major terms,
 * Cᵀ (N x M) = op(W) · Aᵀ with W seen as a K x N matrix (ld ldw) and
 * transposed, Aᵀ as K x M (ld lda): the "TN" case tensor cores like best. The
 * bias is per row of Cᵀ, i.e. per output column N, as the epilogue expects. */
typedef struct {
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t a, b, c;
    cublasLtMatmulPreference_t pref;
} lt_desc;

static void lt_desc_free(lt_desc *l)
{
    if (l->pref)
        cublasLtMatmulPreferenceDestroy(l->pref);
    if (l->c)
        cublasLtMatrixLayoutDestroy(l->c);
    if (l->b)
        cublasLtMatrixLayoutDestroy(l->b);
    if (l->a)
        cublasLtMatrixLayoutDestroy(l->a);
    if (l->op)
        cublasLtMatmulDescDestroy(l->op);
}

/* The heuristic assumes 256-byte aligned operands unless told otherwise;
 * offsets into the arena (a pyramid level, one image of a batch) can be less. */
static uint32_t alignment(const void *p)
{
    uint32_t a = 256;
    while (a > 1 && (uintptr_t)p % a)
        a /= 2;
    return a;
}

static int lt_desc_make(const cuda_dev *d, const cuda_gemm *g, lt_desc *l)
{
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    cublasLtEpilogue_t epi = g->bias ? (g->relu ? CUBLASLT_EPILOGUE_RELU_BIAS : CUBLASLT_EPILOGUE_BIAS)
                                     : (g->relu ? CUBLASLT_EPILOGUE_RELU : CUBLASLT_EPILOGUE_DEFAULT);
    size_t ws = d->ws_size;
    if (cublasLtMatmulDescCreate(&l->op, CUBLAS_COMPUTE_32F, CUDA_R_32F) ||
        cublasLtMatmulDescSetAttribute(l->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta) ||
        cublasLtMatmulDescSetAttribute(l->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb) ||
        cublasLtMatmulDescSetAttribute(l->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi))
        return -1;
    if (g->bias && cublasLtMatmulDescSetAttribute(l->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &g->bias,
                                                  sizeof g->bias))
        return -1;
    if (cublasLtMatrixLayoutCreate(&l->a, CUDA_R_16BF, (uint64_t)g->K, (uint64_t)g->N, g->ldw) ||
        cublasLtMatrixLayoutCreate(&l->b, CUDA_R_16BF, (uint64_t)g->K, (uint64_t)g->M, g->lda) ||
        cublasLtMatrixLayoutCreate(&l->c, CUDA_R_32F, (uint64_t)g->N, (uint64_t)g->M, g->ldc) ||
        cublasLtMatmulPreferenceCreate(&l->pref) ||
        cublasLtMatmulPreferenceSetAttribute(l->pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws))
        return -1;
    uint32_t al[3] = {alignment(g->W), alignment(g->A), alignment(g->C)};
    if (cublasLtMatmulPreferenceSetAttribute(l->pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al[0], 4) ||
        cublasLtMatmulPreferenceSetAttribute(l->pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al[1], 4) ||
        cublasLtMatmulPreferenceSetAttribute(l->pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al[2], 4) ||
        cublasLtMatmulPreferenceSetAttribute(l->pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al[2], 4))
        return -1;
    return 0;
}

static hadm_status gemm_args_ok(const cuda_gemm *g, hadm_error *err)
{
    if (g->M <= 0 || g->N <= 0 || g->K <= 0 || g->lda < g->K || g->ldw < g->K || g->ldc < g->N)
        return hadm_fail(err, HADM_ERR_INTERNAL, "cuda gemm: bad shape M=%d N=%d K=%d lda=%lld ldw=%lld ldc=%lld",
                         g->M, g->N, g->K, (long long)g->lda, (long long)g->ldw, (long long)g->ldc);
    return HADM_OK;
}

hadm_status cuda_matmul(cuda_dev *d, const cuda_gemm *g, hadm_error *err)
{
    hadm_status s = gemm_args_ok(g, err);
    if (s)
        return s;
    d->flops += 2.0 * g->M * g->N * g->K;
    lt_desc l = {0};
    cublasLtMatmulHeuristicResult_t h;
    int found = 0;
    if (!lt_desc_make(d, g, &l) &&
        cublasLtMatmulAlgoGetHeuristic(d->lt, l.op, l.a, l.b, l.c, l.c, l.pref, 1, &h, &found) ==
            CUBLAS_STATUS_SUCCESS &&
        found > 0) {
        float alpha = 1.0f, beta = g->beta;
        cublasStatus_t st = cublasLtMatmul(d->lt, l.op, &alpha, g->W, l.a, g->A, l.b, &beta, g->C, l.c, g->C, l.c,
                                           &h.algo, d->workspace, d->ws_size, d->stream);
        lt_desc_free(&l);
        if (st != CUBLAS_STATUS_SUCCESS)
            return hadm_fail(err, HADM_ERR_INTERNAL, "cuBLASLt matmul failed (status %d, M=%d N=%d K=%d)", (int)st,
                             g->M, g->N, g->K);
        return HADM_OK;
    }
    lt_desc_free(&l);
    d->flops -= 2.0 * g->M * g->N * g->K;
    return cuda_matmul_simple(d, g, err);
}

hadm_status cuda_matmul_simple(cuda_dev *d, const cuda_gemm *g, hadm_error *err)
{
    hadm_status s = gemm_args_ok(g, err);
    if (s)
        return s;
    d->flops += 2.0 * g->M * g->N * g->K;
    cuda_gemm_simple_launch(d, g);
    return HADM_OK;
}
