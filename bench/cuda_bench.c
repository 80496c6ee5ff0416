/* hadm-cuda-bench: HADM on the GPU against the GPU's own bf16 ceiling.
 *
 * Measures, in one run: the cuBLASLt bf16 GEMM peak (best of a square 8192
 * GEMM and the ViT MLP shape), then for HADM-L and HADM-G (synthetic
 * random-weight models of the chosen size, written to --dir): load time,
 * first-request latency right after load, steady-state ms per image at batch
 * 1 and 8 (median of --reps), the work per image and its ratio to the FLOP
 * floor (FLOPs / peak). "both" is HADM-L + HADM-G on the same image, one
 * after the other. Prints a table, and one JSON object with --json.
 *
 * usage: hadm-cuda-bench [--size tiny|full] [--reps N] [--dir D] [--device I] [--json] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "engine/config.h"
#include "engine/device_plan.h"
#include "engine/synth.h"
#include "hadm.h"
#include "ops/cuda/cuda_ops.h"
#include "util/timer.h"

typedef struct {
    double load_s, first_ms, b1_ms, b8_ms, b8_first_ms, gpu_b8_ms, gflop;
} model_times;

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* TFLOP/s of the best bf16 GEMM shape, f32 accumulation, as the model uses it. */
static double measure_peak(int device)
{
    static const int shapes[2][3] = {{8192, 8192, 8192}, {32768, 2730, 1024}};
    hadm_error err = {0};
    cuda_dev *d = NULL;
    cuda_timer *t = NULL;
    double best = 0;
    if (cuda_dev_new(device, (size_t)32 << 20, &d, &err) || cuda_timer_new(&t, &err)) {
        fprintf(stderr, "hadm-cuda-bench: %s\n", err.msg);
        exit(1);
    }
    for (int s = 0; s < 2; s++) {
        int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
        void *A = NULL, *W = NULL, *C = NULL;
        if (cuda_malloc(device, (size_t)M * K * 2, &A, &err) || cuda_malloc(device, (size_t)N * K * 2, &W, &err) ||
            cuda_malloc(device, (size_t)M * N * 4, &C, &err) || cuda_memset(d, A, 0x3c, (size_t)M * K * 2, &err) ||
            cuda_memset(d, W, 0x3c, (size_t)N * K * 2, &err)) {
            fprintf(stderr, "hadm-cuda-bench: %s\n", err.msg);
            exit(1);
        }
        cuda_gemm g = {M, N, K, A, K, W, K, NULL, C, N, 0, 0};
        double ms[7];
        for (int r = 0; r < 8; r++) {   /* the first run loads kernels */
            cuda_timer_start(d, t);
            for (int i = 0; i < 10; i++)
                cuda_matmul(d, &g, &err);
            double v = cuda_timer_stop_ms(d, t) / 10;
            if (r)
                ms[r - 1] = v;
        }
        double tf = 2.0 * M * N * K / (median(ms, 7) * 1e-3) * 1e-12;
        best = tf > best ? tf : best;
        cuda_free(A), cuda_free(W), cuda_free(C);
    }
    cuda_timer_free(t);
    cuda_dev_free(d);
    return best;
}

static void make_model(char variant, int full, const char *path)
{
    struct stat st;
    if (stat(path, &st) == 0)
        return;
    hadm_config cfg;
    synth_model m = {0};
    hadm_error err = {0};
    if (config_default(&cfg, variant, !full, &err) || synth_build(&cfg, 1, &m, &err) ||
        st_writer_save(m.writer, path, &err)) {
        fprintf(stderr, "hadm-cuda-bench: %s: %s\n", path, err.msg);
        exit(1);
    }
    synth_free(&m);
    config_free(&cfg);
}

static double detect_ms(hadm_model *m, const hadm_image *img, int n, double *gpu_ms, double *gflop)
{
    hadm_result *res[8] = {0};
    hadm_error err = {0}, errs[8];
    double t0 = hadm_now();
    hadm_status s = n == 1 ? hadm_detect(m, img, NULL, &res[0], &err)
                           : hadm_detect_batch(m, img, n, NULL, res, errs, &err);
    double ms = (hadm_now() - t0) * 1e3;
    if (s || !res[0]) {
        fprintf(stderr, "hadm-cuda-bench: detect failed: %s\n", s ? err.msg : errs[0].msg);
        exit(1);
    }
    if (gpu_ms)
        *gpu_ms = res[0]->timings.backbone * 1e3 * n;
    if (gflop)
        *gflop = res[0]->gflop;
    for (int i = 0; i < n; i++)
        hadm_result_free(res[i]);
    return ms;
}

static model_times bench_model(const char *path, int device, int reps, const hadm_image *imgs)
{
    model_times t = {0};
    hadm_open_options o = {.device = HADM_DEVICE_CUDA, .device_index = device};
    hadm_model *m = NULL;
    hadm_error err = {0};
    double t0 = hadm_now();
    if (hadm_model_open(path, &o, &m, &err)) {
        fprintf(stderr, "hadm-cuda-bench: %s\n", err.msg);
        exit(1);
    }
    t.load_s = hadm_now() - t0;
    t.first_ms = detect_ms(m, imgs, 1, NULL, &t.gflop);
    double *v = malloc((size_t)reps * sizeof *v), *g = malloc((size_t)reps * sizeof *g);
    for (int r = 0; r < reps; r++)
        v[r] = detect_ms(m, imgs, 1, NULL, NULL);
    t.b1_ms = median(v, reps);
    t.b8_first_ms = detect_ms(m, imgs, 8, NULL, NULL) / 8;
    for (int r = 0; r < reps; r++)
        v[r] = detect_ms(m, imgs, 8, &g[r], NULL) / 8;
    t.b8_ms = median(v, reps);
    t.gpu_b8_ms = median(g, reps) / 8;
    free(v), free(g);
    hadm_model_close(m);
    return t;
}

int main(int argc, char **argv)
{
    int full = 1, reps = 10, json = 0, device = 0;
    const char *dir = "/tmp/hadm-cuda-bench";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--json"))
            json = 1;
        else if (!strcmp(a, "--size") && v)
            full = strcmp(v, "tiny") != 0, i++;
        else if (!strcmp(a, "--reps") && v)
            reps = atoi(v) > 0 ? atoi(v) : 1, i++;
        else if (!strcmp(a, "--dir") && v)
            dir = v, i++;
        else if (!strcmp(a, "--device") && v)
            device = atoi(v), i++;
        else {
            fprintf(stderr, "usage: hadm-cuda-bench [--size tiny|full] [--reps N] [--dir D] [--device I] [--json]\n");
            return 2;
        }
    }
    int ndev = 0;
    hadm_error derr = {0};
    if (cuda_device_count(&ndev, &derr) || ndev <= device) {
        fprintf(stderr, "hadm-cuda-bench: no CUDA device %d visible%s%s\n", device, derr.msg[0] ? ": " : "", derr.msg);
        return 77;
    }
    mkdir(dir, 0755);
    char path[2][1024];
    for (int v = 0; v < 2; v++) {
        snprintf(path[v], sizeof path[v], "%s/hadm-%c-%s.safetensors", dir, "lg"[v], full ? "full" : "tiny");
        make_model("lg"[v], full, path[v]);
    }
    hadm_image imgs[8];
    for (int i = 0; i < 8; i++) {
        imgs[i] = (hadm_image){1024, 768, malloc((size_t)1024 * 768 * 3)};
        uint32_t s = 777u + (uint32_t)i;
        for (size_t p = 0; p < (size_t)1024 * 768 * 3; p++)
            s = s * 1664525u + 1013904223u, imgs[i].rgb[p] = (uint8_t)(s >> 24);
    }
    double peak = measure_peak(device);
    model_times t[2];
    for (int v = 0; v < 2; v++)
        t[v] = bench_model(path[v], device, reps, imgs);
    const char *names[3] = {"HADM-L", "HADM-G", "both"};
    if (!json) {
        printf("cuBLASLt bf16 peak (measured): %.1f TFLOP/s\n", peak);
        printf("%-7s %8s %9s %9s %10s %9s %9s %8s %8s\n", "model", "load_s", "first_ms", "b1_ms", "b8_first", "b8_ms",
               "gpu_b8", "GFLOP", "x floor");
    } else {
        printf("{\"size\": \"%s\", \"peak_tflops_bf16\": %.3f, \"models\": {", full ? "full" : "tiny", peak);
    }
    for (int v = 0; v < 3; v++) {
        model_times x = v < 2 ? t[v] : (model_times){t[0].load_s + t[1].load_s, t[0].first_ms + t[1].first_ms,
                                                      t[0].b1_ms + t[1].b1_ms, t[0].b8_ms + t[1].b8_ms,
                                                      t[0].b8_first_ms + t[1].b8_first_ms,
                                                      t[0].gpu_b8_ms + t[1].gpu_b8_ms, t[0].gflop + t[1].gflop};
        double floor_ms = x.gflop / (peak * 1e3);
        if (!json)
            printf("%-7s %8.2f %9.2f %9.2f %10.2f %9.2f %9.2f %8.0f %8.2f\n", names[v], x.load_s, x.first_ms, x.b1_ms,
                   x.b8_first_ms, x.b8_ms, x.gpu_b8_ms, x.gflop, x.b8_ms / floor_ms);
        else
            printf("%s\"%s\": {\"load_s\": %.4f, \"first_request_ms\": %.3f, \"batch1_ms_per_image\": %.3f, "
                   "\"batch8_first_ms_per_image\": %.3f, \"batch8_ms_per_image\": %.3f, \"batch8_gpu_ms_per_image\": %.3f, "
                   "\"gflop_per_image\": %.1f, \"floor_ms\": %.3f, \"ratio_to_floor_b8\": %.3f, "
                   "\"first_over_steady\": %.3f}",
                   v ? ", " : "", names[v], x.load_s, x.first_ms, x.b1_ms, x.b8_first_ms, x.b8_ms, x.gpu_b8_ms, x.gflop,
                   floor_ms, x.b8_ms / floor_ms, x.first_ms / x.b1_ms);
    }
    if (json)
        printf("}}\n");
    else
        printf("first request after load / steady state (batch 1): HADM-L %.2fx, HADM-G %.2fx\n",
               t[0].first_ms / t[0].b1_ms, t[1].first_ms / t[1].b1_ms);
    for (int i = 0; i < 8; i++)
        free(imgs[i].rgb);
    return 0;
}
