/* The ceilings hadm bench divides by, measured in the same run: oneDNN
 * matmul rates for f32, bf16 and s8 at the model's shapes, memory
 * bandwidth (STREAM-style copy and triad), and the raw rate of each type's
 * multiply-add instruction, which says what a matmul could reach at best
 * (on some CPUs the bf16 dot product runs at half the f32 FMA rate). */
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/bench.h"
#include "ops/cpu/isa.h"
#include "ops/ops.h"
#include "util/err.h"
#include "util/timer.h"

#define PEAK_REPS 5
#define BW_FLOATS (16u << 20)  /* 64 MB per array: far beyond any cache */
#define BW_REPS 7

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double bench_median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Median rate of C[M,N] = A[M,K]·Wᵀ with W packed in type t; A is handed over
 * already as that type's operand (a_converted: bf16, or u8 with row scales
 * and zero points for s8), as the peak of the kernel itself. */
static hadm_status gemm_rate(ops_ctx *c, ops_dtype t, int M, int N, int K, const float *a, void *a_lowp,
                             const float *w, float *out, double *gflops, hadm_error *err)
{
    ops_packed *pk = NULL;
    ops_wpart part = {w, OPS_SRC_F32, NULL, N};
    hadm_status s = ops_pack_parts(c, M, K, &part, 1, t, &pk, err);
    float *row_scale = calloc((size_t)M, sizeof *row_scale);
    int32_t *row_zero = calloc((size_t)M, sizeof *row_zero);
    if (!s && (!row_scale || !row_zero))
        s = hadm_fail(err, HADM_ERR_NOMEM, "out of memory");
    if (s) {
        ops_packed_free(pk);
        free(row_scale), free(row_zero);
        return s;
    }
    for (int m = 0; m < M; m++)
        row_scale[m] = 1.0f / 255, row_zero[m] = 128;
    if (t == OPS_BF16)
        for (size_t i = 0; i < (size_t)M * K; i++)
            ((uint16_t *)a_lowp)[i] = ops_f32_to_bf16(a[i]);
    else if (t == OPS_S8)
        for (size_t i = 0; i < (size_t)M * K; i++)
            ((uint8_t *)a_lowp)[i] = (uint8_t)(128 + (int)(a[i] * 254.0f));
    ops_gemm g = {.M = M, .N = N, .K = K, .A = t == OPS_F32 ? a : a_lowp, .lda = K, .trans_b = 1,
                  .C = out, .ldc = N, .packed = pk, .a_converted = t != OPS_F32, .a_scale = row_scale,
                  .a_zero = row_zero};
    double times[PEAK_REPS];
    s = ops_matmul(c, &g, err);   /* warm-up: primitive creation */
    for (int r = 0; !s && r < PEAK_REPS; r++) {
        double t0 = hadm_now();
        s = ops_matmul(c, &g, err);
        times[r] = hadm_now() - t0;
    }
    ops_packed_free(pk);
    free(row_scale), free(row_zero);
    if (!s)
        *gflops = 2.0 * M * N * (double)K * 1e-9 / bench_median(times, PEAK_REPS);
    return s;
}

hadm_status bench_measure_matmul(int threads, int dim, const int want[3], bench_ceilings *ceil, hadm_error *err)
{
    size_t n = (size_t)dim * (size_t)dim;
    /* C of the MLP shape is dim x 2*2730/4096*dim: 1.33 n */
    float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b), *c = malloc(2 * n * sizeof *c);
    void *lowp = malloc(n * 2);
    ops_ctx *ctx = NULL;
    hadm_status s = !a || !b || !c || !lowp ? hadm_fail(err, HADM_ERR_NOMEM, "out of memory")
                                            : ops_ctx_new(threads, &ctx, err);
    if (!s) {
        uint64_t state = 42;
        for (size_t i = 0; i < n; i++) {
            state = state * 6364136223846793005ull + 1442695040888963407ull;
            a[i] = (float)((state >> 40) & 0xffff) / 65536.0f - 0.5f;
            b[i] = (float)((state >> 20) & 0xffff) / 65536.0f - 0.5f;
        }
        /* The square dim^3 product and the ViT MLP's w1|w2 shape (4096 x 1024
         * -> 2 x 2730 at full size), which runs faster than the square one. */
        int shapes[2][3] = {{dim, dim, dim}, {dim, 2 * (dim * 2730 / 4096), dim / 4}};
        double *out[3] = {&ceil->f32, &ceil->bf16, &ceil->s8};
        static const char *const names[3] = {"f32", "bf16", "s8"};
        for (int t = 0; !s && t < 3; t++) {
            *out[t] = 0;
            for (int k = 0; !s && want[t] && k < 2; k++) {
                double rate = 0;
                s = gemm_rate(ctx, (ops_dtype)t, shapes[k][0], shapes[k][1], shapes[k][2], a, lowp, b, c,
                              &rate, err);
                if (getenv("HADM_BENCH_VERBOSE"))
                    fprintf(stderr, "hadm: %s matmul %dx%dx%d packed: %.1f G/s\n", names[t], shapes[k][0],
                            shapes[k][2], shapes[k][1], rate);
                *out[t] = rate > *out[t] ? rate : *out[t];
            }
        }
        ceil->threads = ops_ctx_threads(ctx);
    }
    ops_ctx_free(ctx);
    free(a), free(b), free(c), free(lowp);
    return s;
}

typedef struct {
    float *a, *b, *c;
    size_t begin, end;
    int triad;
} bw_slice;

/* Streaming (non-temporal) stores, as STREAM-style ceilings are usually
 * quoted: the destination is not read into the cache before being written. */
static void *bw_worker(void *arg)
{
    bw_slice *s = arg;
    size_t i = s->begin;
    for (; i < s->end && ((uintptr_t)(s->a + i) & 31); i++)
        s->a[i] = s->triad ? s->b[i] + 3.0f * s->c[i] : s->b[i];
    const __m256 three = _mm256_set1_ps(3.0f);
    if (s->triad)
        for (; i + 8 <= s->end; i += 8)
            _mm256_stream_ps(s->a + i, _mm256_fmadd_ps(three, _mm256_loadu_ps(s->c + i),
                                                       _mm256_loadu_ps(s->b + i)));
    else
        for (; i + 8 <= s->end; i += 8)
            _mm256_stream_ps(s->a + i, _mm256_loadu_ps(s->b + i));
    for (; i < s->end; i++)
        s->a[i] = s->triad ? s->b[i] + 3.0f * s->c[i] : s->b[i];
    _mm_sfence();
    return NULL;
}

/* One pass of copy (a = b) or triad (a = b + 3c) over `threads` threads. */
static void bw_pass(float *a, float *b, float *c, int threads, int triad)
{
    pthread_t tid[64];
    bw_slice sl[64];
    int created[64] = {0};
    int nt = threads < 1 ? 1 : threads > 64 ? 64 : threads;
    size_t chunk = BW_FLOATS / (size_t)nt;
    for (int t = 0; t < nt; t++) {
        size_t end = t + 1 == nt ? BW_FLOATS : chunk * (size_t)(t + 1);
        sl[t] = (bw_slice){a, b, c, chunk * (size_t)t, end, triad};
        if (t > 0)
            created[t] = pthread_create(&tid[t], NULL, bw_worker, &sl[t]) == 0;
    }
    for (int t = 0; t < nt; t++)
        if (!created[t])
            bw_worker(&sl[t]);
    for (int t = 1; t < nt; t++)
        if (created[t])
            pthread_join(tid[t], NULL);
}

/* STREAM convention: bytes read + written, write-allocate not counted. */
hadm_status bench_measure_bandwidth(int threads, bench_ceilings *ceil, hadm_error *err)
{
    float *a = malloc(BW_FLOATS * sizeof *a), *b = malloc(BW_FLOATS * sizeof *b);
    float *c = malloc(BW_FLOATS * sizeof *c);
    if (!a || !b || !c) {
        free(a), free(b), free(c);
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < BW_FLOATS; i++)
        a[i] = 0, b[i] = 1, c[i] = 2;   /* also faults every page in before timing */
    double tc[BW_REPS], tt[BW_REPS];
    for (int r = 0; r < BW_REPS; r++) {
        double t0 = hadm_now();
        bw_pass(a, b, c, threads, 0);
        double t1 = hadm_now();
        bw_pass(a, b, c, threads, 1);
        tc[r] = t1 - t0;
        tt[r] = hadm_now() - t1;
    }
    double bytes = (double)BW_FLOATS * sizeof(float);
    ceil->bw_copy_gbs = 2 * bytes * 1e-9 / bench_median(tc, BW_REPS);
    ceil->bw_triad_gbs = 3 * bytes * 1e-9 / bench_median(tt, BW_REPS);
    free(a), free(b), free(c);
    return HADM_OK;
}

/* ---- instruction peaks (loops in ops/cpu/isa.h) ---------------------- */
#define ISA_ITERS 20000000L

typedef struct {
    int kind;       /* OPS_ISA_F32_FMA, OPS_ISA_BF16_DOT or OPS_ISA_U8S8_DOT */
    double rate;    /* operations per second on this thread */
} isa_job;

static void *isa_worker(void *arg)
{
    isa_job *j = arg;
    j->rate = ops_isa_rate(j->kind, ISA_ITERS);
    return NULL;
}

void bench_measure_isa(int threads, bench_ceilings *ceil)
{
    double *out[3] = {&ceil->isa_f32, &ceil->isa_bf16, &ceil->isa_s8};
    int nt = threads < 1 ? 1 : threads > 64 ? 64 : threads;
    for (int k = 0; k < 3; k++) {
        *out[k] = 0;
        if (!ops_isa_rate(k, 1))
            continue;   /* not on this CPU */
        pthread_t tid[64];
        isa_job jobs[64];
        int created[64] = {0};
        for (int t = 0; t < nt; t++) {
            jobs[t] = (isa_job){k, 0};
            if (t > 0)
                created[t] = pthread_create(&tid[t], NULL, isa_worker, &jobs[t]) == 0;
        }
        isa_worker(&jobs[0]);
        for (int t = 1; t < nt; t++) {
            if (created[t])
                pthread_join(tid[t], NULL);
            else
                isa_worker(&jobs[t]);
        }
        for (int t = 0; t < nt; t++)
            *out[k] += jobs[t].rate * 1e-9;
    }
}
