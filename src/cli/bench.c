/* hadm bench: forward speed of a synthetic HADM-L against ceilings measured
 * in the same run (oneDNN f32 matmul peak, memory bandwidth), so the figures
 * are ratios that survive a noisy shared machine (DESIGN.md "Command line"). */
#include <errno.h>
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli/cli.h"
#include "engine/config.h"
#include "engine/synth.h"
#include "hadm.h"
#include "ops/ops.h"
#include "util/timer.h"

#define PEAK_DIM 4096          /* the sgemms of the peak: 4096^3 and 4096x1024x2730 */
#define PEAK_DIM_TINY 2048     /* --size tiny: 17 GFLOP, nearly the same rate, 8x quicker */
#define PEAK_REPS 5
#define BW_FLOATS (16u << 20)  /* 64 MB per array: far beyond any cache */
#define BW_REPS 7
#define IMAGE_SIDE 1024
#define MAX_REPS 100

typedef struct {
    int full, threads, json, reps;
    unsigned long long seed;
    const char *model_path;     /* --model F: bench this file instead of a synthetic one */
} bench_args;

typedef struct {
    double peak_gflops, bw_triad_gbs, bw_copy_gbs;
    int threads;
    double load_s, forward_s, gflop;
    hadm_timings stage;         /* per-stage medians */
    long long peak_rss_bytes;
    const char *variant;
} bench_report;

static void bench_usage(FILE *out)
{
    fprintf(out,
            "usage: hadm bench [--size tiny|full] [--precision f32|bf16|int8|all]\n"
            "                  [--device cpu|cuda[:i]] [--threads N] [--json]\n"
            "                  [--reps N] [--seed N] [--model F]\n\n"
            "Measures this machine's oneDNN f32 matmul peak (%d^3 sgemm, %d^3 for tiny) and\n"
            "memory bandwidth, then times forwards of a synthetic HADM-L (default full size)\n"
            "on a %dx%d image: median seconds per stage, GFLOP counted by the engine,\n"
            "achieved GFLOP/s, its ratio to the peak, and peak RSS.\n"
            "  --reps N   timed forwards after one warm-up (default 3)\n"
            "  --model F  time this model file instead of a synthetic one\n"
            "Only f32 is supported for now.\n",
            PEAK_DIM, PEAK_DIM_TINY, IMAGE_SIDE, IMAGE_SIDE);
}

static int parse_count(const char *v, int lo, int hi, int *out)
{
    char *end;
    errno = 0;
    long n = v ? strtol(v, &end, 10) : 0;
    if (!v || errno || end == v || *end || n < lo || n > hi)
        return -1;
    *out = (int)n;
    return 0;
}

/* Returns -1 to go on, else the exit code. */
static int parse_bench_args(int argc, char **argv, bench_args *a)
{
    memset(a, 0, sizeof *a);
    a->full = 1;
    a->reps = 3;
    a->seed = 1;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int takes_value = strcmp(o, "--json") && strcmp(o, "--help") && strcmp(o, "-h");
        if (takes_value && !v) {
            cli_error("%s needs a value (see hadm bench --help)", o);
            return 2;
        }
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
            bench_usage(stdout);
            return 0;
        } else if (!strcmp(o, "--json")) {
            a->json = 1;
            continue;
        } else if (!strcmp(o, "--size")) {
            if (strcmp(v, "tiny") && strcmp(v, "full"))
                goto bad;
            a->full = !strcmp(v, "full");
        } else if (!strcmp(o, "--precision")) {
            if (!strcmp(v, "bf16") || !strcmp(v, "int8")) {
                cli_error("--precision %s: not supported yet (only f32)", v);
                return 1;
            }
            if (strcmp(v, "f32") && strcmp(v, "all"))
                goto bad;
            if (!strcmp(v, "all"))
                fprintf(stderr, "hadm: note: bf16 and int8 are not supported yet; running f32 only\n");
        } else if (!strcmp(o, "--device")) {
            if (!strcmp(v, "cpu"))
                ;
            else if (!strncmp(v, "cuda", 4)) {
                cli_error("--device %s: this build has no CUDA backend", v);
                return 1;
            } else
                goto bad;
        } else if (!strcmp(o, "--threads")) {
            if (parse_count(v, 0, 4096, &a->threads))
                goto bad;
        } else if (!strcmp(o, "--reps")) {
            if (parse_count(v, 1, MAX_REPS, &a->reps))
                goto bad;
        } else if (!strcmp(o, "--seed")) {
            char *end;
            errno = 0;
            a->seed = strtoull(v, &end, 10);
            if (errno || end == v || *end)
                goto bad;
        } else if (!strcmp(o, "--model")) {
            a->model_path = v;
        } else {
            cli_error("unknown option '%s' (see hadm bench --help)", o);
            return 2;
        }
        i++;
        continue;
    bad:
        cli_error("invalid value '%s' for %s (see hadm bench --help)", v, o);
        return 2;
    }
    return -1;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* ---- ceilings ----------------------------------------------------------- */

/* Median GFLOP/s of C[M,N] = A[M,K]·Bᵀ, with B pre-packed when `packed`
 * (how the engine holds its weights) else read plain. */
static hadm_status sgemm_rate(ops_ctx *c, int M, int N, int K, const float *a, const float *b,
                              float *out, int packed, double *gflops, hadm_error *err)
{
    ops_packed *pk = NULL;
    if (packed && ops_pack_weights(c, M, N, K, b, &pk, err))
        return err->code;
    ops_gemm g = {.M = M, .N = N, .K = K, .A = a, .lda = K, .B = b, .ldb = K, .trans_b = 1,
                  .C = out, .ldc = N, .packed = pk};
    double t[PEAK_REPS];
    hadm_status s = ops_matmul(c, &g, err);   /* warm-up: primitive creation */
    for (int r = 0; !s && r < PEAK_REPS; r++) {
        double t0 = hadm_now();
        s = ops_matmul(c, &g, err);
        t[r] = hadm_now() - t0;
    }
    ops_packed_free(pk);
    if (!s)
        *gflops = 2.0 * M * N * (double)K * 1e-9 / median(t, PEAK_REPS);
    return s;
}

static hadm_status measure_peak(int threads, int dim, double *peak, int *threads_used,
                                hadm_error *err)
{
    size_t n = (size_t)dim * (size_t)dim;
    float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b), *c = malloc(n * sizeof *c);
    ops_ctx *ctx = NULL;
    hadm_status s = !a || !b || !c ? HADM_ERR_NOMEM : ops_ctx_new(threads, &ctx, err);
    if (s == HADM_ERR_NOMEM)
        snprintf(err->msg, sizeof err->msg, "out of memory");
    if (!s) {
        uint64_t state = 42;
        for (size_t i = 0; i < n; i++) {
            state = state * 6364136223846793005ull + 1442695040888963407ull;
            a[i] = (float)((state >> 40) & 0xffff) / 65536.0f - 0.5f;
            b[i] = (float)((state >> 20) & 0xffff) / 65536.0f - 0.5f;
        }
        /* The ceiling is the best large sgemm this oneDNN reaches here: the
         * square dim^3 one, plain and packed, and the ViT MLP's shape
         * (4096 x 1024 -> 2730 at full size), which runs faster than the
         * square one on these cores. */
        int shapes[3][4] = {{dim, dim, dim, 0}, {dim, dim, dim, 1}, {dim, dim * 2730 / 4096, dim / 4, 1}};
        *peak = 0;
        for (int k = 0; !s && k < 3; k++) {
            double rate = 0;
            s = sgemm_rate(ctx, shapes[k][0], shapes[k][1], shapes[k][2], a, b, c, shapes[k][3], &rate, err);
            if (getenv("HADM_BENCH_VERBOSE"))
                fprintf(stderr, "hadm: sgemm %dx%dx%d%s: %.1f GFLOP/s\n", shapes[k][0], shapes[k][2], shapes[k][1], shapes[k][3] ? " packed" : "", rate);
            *peak = rate > *peak ? rate : *peak;
        }
        *threads_used = ops_ctx_threads(ctx);
    }
    ops_ctx_free(ctx);
    free(a);
    free(b);
    free(c);
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
static hadm_status measure_bandwidth(int threads, double *copy_gbs, double *triad_gbs, hadm_error *err)
{
    float *a = malloc(BW_FLOATS * sizeof *a), *b = malloc(BW_FLOATS * sizeof *b);
    float *c = malloc(BW_FLOATS * sizeof *c);
    if (!a || !b || !c) {
        free(a), free(b), free(c);
        snprintf(err->msg, sizeof err->msg, "out of memory");
        return err->code = HADM_ERR_NOMEM;
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
    *copy_gbs = 2 * bytes * 1e-9 / median(tc, BW_REPS);
    *triad_gbs = 3 * bytes * 1e-9 / median(tt, BW_REPS);
    free(a), free(b), free(c);
    return HADM_OK;
}

/* ---- the model and the forwards --------------------------------------- */

/* Writes the synthetic model in a child process: its 1.4 GB build buffer
 * then never counts in this process's peak RSS, which is meant to show what
 * inference needs. */
static int synth_to_file(const bench_args *a, const char *path)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        cli_error("fork: %s", strerror(errno));
        return 1;
    }
    if (pid == 0) {
        hadm_config cfg;
        synth_model m;
        hadm_error err = {0};
        int rc = 0;
        if (config_default(&cfg, 'l', !a->full, &err) || synth_build(&cfg, a->seed, &m, &err)) {
            cli_error("bench: synthetic model: %s", err.msg);
            _exit(1);
        }
        if (st_writer_save(m.writer, path, &err)) {
            cli_error("bench: %s", err.msg);
            rc = 1;
        }
        synth_free(&m);
        config_free(&cfg);
        _exit(rc);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        if (!WIFEXITED(status))
            cli_error("bench: the process writing the synthetic model died (signal %d)",
                      WIFSIGNALED(status) ? WTERMSIG(status) : 0);
        return 1;
    }
    return 0;
}

/* Opens the model to time: --model F, or a synthetic one in a temp file that
 * is unlinked as soon as it is mapped. */
static int open_bench_model(const bench_args *a, int threads, hadm_model **m, double *load_s)
{
    char tmp[4096];
    const char *path = a->model_path;
    if (!path) {
        const char *dir = getenv("TMPDIR");
        snprintf(tmp, sizeof tmp, "%s/hadm-bench-XXXXXX.safetensors", dir && *dir ? dir : "/tmp");
        int fd = mkstemps(tmp, 12);
        if (fd < 0) {
            cli_error("bench: cannot create %s: %s", tmp, strerror(errno));
            return 1;
        }
        close(fd);
        if (!a->json)
            fprintf(stderr, "hadm: writing a %s synthetic HADM-L to %s...\n", a->full ? "full-size" : "tiny", tmp);
        if (synth_to_file(a, tmp)) {
            unlink(tmp);
            return 1;
        }
        path = tmp;
    }
    hadm_open_options opt = {.threads = threads, .device = HADM_DEVICE_CPU};
    hadm_error err = {0};
    double t0 = hadm_now();
    hadm_status s = hadm_model_open(path, &opt, m, &err);
    *load_s = hadm_now() - t0;
    if (!a->model_path)
        unlink(tmp);
    if (s) {
        cli_error("%s", err.msg);
        return 1;
    }
    return 0;
}

/* A deterministic photo-like image: smooth gradients plus a little noise. */
static int make_image(hadm_image *img)
{
    img->width = img->height = IMAGE_SIDE;
    img->rgb = malloc((size_t)IMAGE_SIDE * IMAGE_SIDE * 3);
    if (!img->rgb)
        return -1;
    uint32_t state = 12345;
    for (int y = 0; y < IMAGE_SIDE; y++)
        for (int x = 0; x < IMAGE_SIDE; x++) {
            state = state * 1664525u + 1013904223u;
            uint8_t *p = img->rgb + ((size_t)y * IMAGE_SIDE + (size_t)x) * 3;
            p[0] = (uint8_t)((x / 4 + (state >> 28)) & 0xff);
            p[1] = (uint8_t)((y / 4 + (state >> 24 & 15)) & 0xff);
            p[2] = (uint8_t)(((x + y) / 8) & 0xff);
        }
    return 0;
}

#define STAGE_FIELDS(X) X(preprocess) X(backbone) X(fpn) X(rpn) X(roi_heads) X(postprocess) X(total)

/* One warm-up forward (primitive creation, first touch of the weights),
 * then a.reps timed ones; per-stage medians. */
static int time_forwards(const bench_args *a, hadm_model *m, bench_report *r)
{
    hadm_image img = {0};
    if (make_image(&img)) {
        cli_error("out of memory");
        return 1;
    }
    double t[7][MAX_REPS];
    hadm_detect_options opt = {.channel_order = HADM_RGB};
    int rc = 0;
    for (int i = -1; i < a->reps && !rc; i++) {
        hadm_result *res = NULL;
        hadm_error err = {0};
        if (!a->json)
        {
            if (i < 0)
                fprintf(stderr, "hadm: warm-up forward...\n");
            else
                fprintf(stderr, "hadm: timed forward %d/%d...\n", i + 1, a->reps);
        }
        if (hadm_detect(m, &img, &opt, &res, &err)) {
            cli_error("bench: forward: %s", err.msg);
            rc = 1;
            break;
        }
        if (i >= 0) {
            int k = 0;
#define TAKE(f) t[k++][i] = res->timings.f;
            STAGE_FIELDS(TAKE)
#undef TAKE
            r->gflop = res->gflop;
        }
        hadm_result_free(res);
    }
    if (!rc) {
        int k = 0;
#define MED(f) r->stage.f = median(t[k++], a->reps);
        STAGE_FIELDS(MED)
#undef MED
        r->forward_s = r->stage.total;
    }
    hadm_image_free(&img);
    return rc;
}

/* ---- report ------------------------------------------------------------- */

static void print_text(const bench_args *a, const bench_report *r)
{
    double achieved = r->gflop / r->forward_s;
    printf("hadm bench: %s %s (%s), %dx%d image, %d threads, cpu\n", r->variant,
           a->model_path ? "from file" : a->full ? "full" : "tiny", a->model_path ? a->model_path : "synthetic",
           IMAGE_SIDE, IMAGE_SIDE, r->threads);
    printf("ceilings:  f32 matmul peak %.1f GFLOP/s (best sgemm of %d^3 and the ViT MLP shape, median of %d,"
           " best of before/after), "
           "bandwidth %.1f GB/s triad, %.1f GB/s copy\n",
           r->peak_gflops, a->full ? PEAK_DIM : PEAK_DIM_TINY, PEAK_REPS, r->bw_triad_gbs, r->bw_copy_gbs);
    printf("load:      %.2f s\n", r->load_s);
    printf("f32:       forward %.3f s (median of %d)\n", r->forward_s, a->reps);
    printf("  stages:  preprocess %.3f  backbone %.3f  fpn %.3f  rpn %.3f  roi_heads %.3f  "
           "postprocess %.3f s\n",
           r->stage.preprocess, r->stage.backbone, r->stage.fpn, r->stage.rpn, r->stage.roi_heads,
           r->stage.postprocess);
    printf("  work:    %.1f GFLOP, %.1f GFLOP/s achieved = %.1f%% of the matmul peak\n", r->gflop,
           achieved, 100.0 * achieved / r->peak_gflops);
    printf("  memory:  peak RSS %.2f GB\n", (double)r->peak_rss_bytes / 1e9);
}

static void print_json(const bench_args *a, const bench_report *r)
{
    double achieved = r->gflop / r->forward_s;
    printf("{\"model\": \"%s\", \"size\": \"%s\", \"synthetic\": %s, \"image\": [%d, %d], "
           "\"threads\": %d, \"device\": \"cpu\", \"reps\": %d, \"load_s\": %.6g,\n",
           r->variant, a->full ? "full" : "tiny", a->model_path ? "false" : "true", IMAGE_SIDE,
           IMAGE_SIDE, r->threads, a->reps, r->load_s);
    printf(" \"peak_gflops\": {\"f32\": %.6g}, \"peak_sgemm_dim\": %d, \"bandwidth_gbs\": %.6g, \"bandwidth_copy_gbs\": %.6g,\n",
           r->peak_gflops, a->full ? PEAK_DIM : PEAK_DIM_TINY, r->bw_triad_gbs, r->bw_copy_gbs);
    printf(" \"precisions\": {\"f32\": {\"forward_s\": %.6g, \"stage_s\": {\"preprocess\": %.6g, "
           "\"backbone\": %.6g, \"fpn\": %.6g, \"rpn\": %.6g, \"roi_heads\": %.6g, "
           "\"postprocess\": %.6g}, \"gflop\": %.6g, \"achieved_gflops\": %.6g, "
           "\"ratio_to_peak\": %.6g, \"peak_rss_bytes\": %lld}}}\n",
           r->forward_s, r->stage.preprocess, r->stage.backbone, r->stage.fpn, r->stage.rpn,
           r->stage.roi_heads, r->stage.postprocess, r->gflop, achieved, achieved / r->peak_gflops,
           r->peak_rss_bytes);
}

int cmd_bench(int argc, char **argv)
{
    bench_args a;
    int rc = parse_bench_args(argc, argv, &a);
    if (rc >= 0)
        return rc;
    bench_report r = {0};
    hadm_error err = {0};
    int peak_dim = a.full ? PEAK_DIM : PEAK_DIM_TINY;
    if (!a.json)
        fprintf(stderr, "hadm: measuring the matmul peak and memory bandwidth...\n");
    if (measure_peak(a.threads, peak_dim, &r.peak_gflops, &r.threads, &err) ||
        measure_bandwidth(r.threads, &r.bw_copy_gbs, &r.bw_triad_gbs, &err)) {
        cli_error("bench: %s", err.msg);
        return 1;
    }
    hadm_model *m = NULL;
    if (open_bench_model(&a, r.threads, &m, &r.load_s))
        return 1;
    r.variant = hadm_model_variant(m);
    rc = time_forwards(&a, m, &r);
    if (!rc) {
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        r.peak_rss_bytes = (long long)ru.ru_maxrss * 1024;
        /* Other work on a shared machine can slow either measurement: the peak
         * is measured again after the forwards and the higher one kept, so a
         * disturbed first measurement cannot inflate the ratio. */
        double again = 0;
        int t_again = 0;
        if (!measure_peak(a.threads, peak_dim, &again, &t_again, &err) && again > r.peak_gflops)
            r.peak_gflops = again;
        if (a.json)
            print_json(&a, &r);
        else
            print_text(&a, &r);
    }
    hadm_model_close(m);
    return rc;
}
