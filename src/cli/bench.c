/* hadm bench: forward speed of a synthetic HADM-L in each precision against
 * ceilings measured in the same run (oneDNN matmul rates per element type,
 * memory bandwidth), so the figures are ratios that survive a noisy shared
 * machine (DESIGN.md "Command line"). Each precision runs in its own child
 * process, so its peak RSS is its own. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli/bench.h"
#include "cli/cli.h"
#include "engine/config.h"
#include "engine/synth.h"
#include "ops/ops.h"
#include "util/timer.h"

#define PEAK_DIM 4096          /* the products of the peak: 4096^3 and 4096x1024x5460 */
#define PEAK_DIM_TINY 2048     /* --size tiny: nearly the same rate, 8x quicker */
#define IMAGE_SIDE 1024
#define MAX_REPS 100
#define NPREC 3

typedef struct {
    int full, threads, json, reps, rss_both;
    int want[NPREC];            /* f32, bf16, int8 */
    unsigned long long seed;
    const char *model_path;     /* --model F: bench this file instead of a synthetic one */
} bench_args;

/* What one precision's child reports back through a pipe. */
typedef struct {
    int ok;
    double load_s, forward_s, gflop;
    hadm_timings stage;         /* per-stage medians */
    long long peak_rss_bytes, both_rss_bytes;
    long long both_files_rss_bytes;   /* bf16: the same from `hadm quantize --type bf16` files */
    bench_ceilings ceil;        /* the ceilings child's result */
    char variant[16], error[600];
} prec_report;

static const char *const PREC_NAME[NPREC] = {"f32", "bf16", "int8"};
static const hadm_precision PREC[NPREC] = {HADM_PRECISION_F32, HADM_PRECISION_BF16, HADM_PRECISION_INT8};

static void bench_usage(FILE *out)
{
    fprintf(out,
            "usage: hadm bench [--size tiny|full] [--precision f32|bf16|int8|all]\n"
            "                  [--device cpu|cuda[:i]] [--threads N] [--json]\n"
            "                  [--reps N] [--seed N] [--model F] [--rss-both]\n\n"
            "Measures this machine's oneDNN matmul ceilings (f32, bf16, s8; %d^3 and the ViT\n"
            "MLP shape, %d for tiny) and memory bandwidth, then times forwards of a synthetic\n"
            "HADM-L (default full size) on a %dx%d image in each precision (default all):\n"
            "median seconds per stage, GFLOP counted by the engine, achieved GFLOP/s, its\n"
            "ratio to the ceiling, speed-up over f32, and peak RSS. Each precision runs in\n"
            "its own process, their forwards in turns (f32, bf16, int8, f32, ...), so that\n"
            "the ratios compare forwards seconds apart on a machine whose speed drifts.\n"
            "  --reps N     timed forwards after one warm-up (default 3)\n"
            "  --model F    time this model file instead of a synthetic one\n"
            "  --rss-both   also load HADM-L and HADM-G together in each precision, run\n"
            "               HADM-L, HADM-G and HADM-L again (the last with both models'\n"
            "               weights packed, as a server holds them), and report that\n"
            "               process's peak RSS; for bf16 also from the two models written\n"
            "               as bf16 files (hadm quantize --type bf16)\n",
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

static int parse_precision(const char *v, bench_args *a)
{
    int all = !strcmp(v, "all"), any = all;
    for (int p = 0; p < NPREC; p++) {
        a->want[p] = all || !strcmp(v, PREC_NAME[p]);
        any |= a->want[p];
    }
    return any ? 0 : -1;
}

/* Returns -1 to go on, else the exit code. */
static int parse_bench_args(int argc, char **argv, bench_args *a)
{
    memset(a, 0, sizeof *a);
    a->full = 1;
    a->reps = 3;
    a->seed = 1;
    a->want[0] = a->want[1] = a->want[2] = 1;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
            bench_usage(stdout);
            return 0;
        } else if (!strcmp(o, "--json") || !strcmp(o, "--rss-both")) {
            *(o[2] == 'j' ? &a->json : &a->rss_both) = 1;
            continue;
        }
        if (!v) {
            cli_error("%s needs a value (see hadm bench --help)", o);
            return 2;
        }
        if (!strcmp(o, "--size")) {
            if (strcmp(v, "tiny") && strcmp(v, "full"))
                goto bad;
            a->full = !strcmp(v, "full");
        } else if (!strcmp(o, "--precision")) {
            if (parse_precision(v, a))
                goto bad;
        } else if (!strcmp(o, "--device")) {
            if (!strncmp(v, "cuda", 4)) {
                cli_error("--device %s: hadm bench measures the CPU; the GPU benchmark is hadm-cuda-bench "
                          "(built with -DHADM_CUDA=ON, see tools/cuda_check.sh)", v);
                return 1;
            } else if (strcmp(v, "cpu"))
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

/* ---- child processes ---------------------------------------------------- */

/* Runs fn(arg, report) in a child process and returns its report: the
 * child's memory (a 1.4 GB synthetic build buffer, one precision's weights)
 * never counts in another measurement's peak RSS. */
typedef struct {
    pid_t pid;
    int report;   /* read end of the pipe the child's report comes through */
} child;

/* Parent-side ends of the forward children's turn pipes: every child closes
 * them, so that a child's exit is seen as end-of-file by the parent alone. */
static int turn_fds[4 * NPREC], n_turn_fds;

static int child_spawn(void (*fn)(const void *arg, prec_report *r), const void *arg, child *ch,
                       prec_report *out)
{
    int fd[2];
    memset(out, 0, sizeof *out);
    ch->pid = -1, ch->report = -1;
    if (pipe(fd)) {
        snprintf(out->error, sizeof out->error, "pipe: %s", strerror(errno));
        return 1;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        close(fd[0]);
        for (int i = 0; i < n_turn_fds; i++)
            close(turn_fds[i]);
        prec_report r = {0};
        fn(arg, &r);
        ssize_t n = write(fd[1], &r, sizeof r);
        _exit(n == (ssize_t)sizeof r ? 0 : 1);
    }
    close(fd[1]);
    ch->pid = pid, ch->report = fd[0];
    if (pid < 0) {
        close(fd[0]);
        snprintf(out->error, sizeof out->error, "the measuring process could not start");
        return 1;
    }
    return 0;
}

static int child_collect(child *ch, prec_report *out)
{
    ssize_t got = 0;
    while (got < (ssize_t)sizeof *out) {
        ssize_t n = read(ch->report, (char *)out + got, sizeof *out - (size_t)got);
        if (n <= 0 && !(n < 0 && errno == EINTR))
            break;
        got += n > 0 ? n : 0;
    }
    close(ch->report);
    int status = 0;
    while (waitpid(ch->pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (got != (ssize_t)sizeof *out) {
        memset(out, 0, sizeof *out);
        snprintf(out->error, sizeof out->error, "the measuring process %s",
                 WIFSIGNALED(status) ? "was killed by a signal" : "failed");
        return 1;
    }
    return !out->ok;
}

static int in_child(void (*fn)(const void *arg, prec_report *r), const void *arg, prec_report *out)
{
    child ch;
    return child_spawn(fn, arg, &ch, out) || child_collect(&ch, out);
}

typedef struct {
    const bench_args *a;
    char variant;
    const char *path;
} synth_job;

static void synth_child(const void *arg, prec_report *r)
{
    const synth_job *j = arg;
    hadm_config cfg;
    synth_model m;
    hadm_error err = {0};
    if (config_default(&cfg, j->variant, !j->a->full, &err) || synth_build(&cfg, j->a->seed, &m, &err) ||
        st_writer_save(m.writer, j->path, &err)) {
        snprintf(r->error, sizeof r->error, "synthetic model: %.500s", err.msg);
        return;
    }
    r->ok = 1;
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

typedef struct {
    const bench_args *a;
    int prec;
    const char *paths[2];       /* HADM-L, and HADM-G for the both-models run */
    int threads;
    int go, done;               /* turn pipes (child ends), -1 when ungated */
} forward_job;

/* A gated forward waits for its turn and reports its end, so that the
 * precisions' forwards alternate instead of running minutes apart. */
static int wait_turn(const forward_job *j)
{
    char b;
    return j->go < 0 || read(j->go, &b, 1) == 1 ? 0 : 1;
}

static void end_turn(const forward_job *j)
{
    char b = 1;
    if (j->done >= 0 && write(j->done, &b, 1) != 1)
        return;   /* the parent is gone; the report write will fail too */
}

static long long peak_rss(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (long long)ru.ru_maxrss * 1024;
}

/* One warm-up forward (primitive creation, weight packing), then reps timed
 * ones, each when its turn comes; per-stage medians. */
static void forward_child(const void *arg, prec_report *r)
{
    const forward_job *j = arg;
    hadm_open_options opt = {.threads = j->threads, .precision = PREC[j->prec]};
    hadm_error err = {0};
    hadm_model *m = NULL;
    hadm_image img = {0};
    double t[7][MAX_REPS];
    double t0 = hadm_now();
    if (hadm_model_open(j->paths[0], &opt, &m, &err) || make_image(&img)) {
        snprintf(r->error, sizeof r->error, "%s", m ? "out of memory" : err.msg);
        hadm_model_close(m);
        return;
    }
    r->load_s = hadm_now() - t0;
    snprintf(r->variant, sizeof r->variant, "%s", hadm_model_variant(m));
    hadm_detect_options dopt = {.channel_order = HADM_RGB};
    for (int i = -1; i < j->a->reps; i++) {
        hadm_result *res = NULL;
        if (!j->a->json)
            fprintf(stderr, "hadm: %s: %s forward %d/%d...\n", PREC_NAME[j->prec], i < 0 ? "warm-up" : "timed",
                    i < 0 ? 1 : i + 1, i < 0 ? 1 : j->a->reps);
        if (wait_turn(j)) {
            snprintf(r->error, sizeof r->error, "lost the bench's parent process");
            goto done;
        }
        int failed = hadm_detect(m, &img, &dopt, &res, &err);
        end_turn(j);
        if (failed) {
            snprintf(r->error, sizeof r->error, "forward: %.500s", err.msg);
            goto done;
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
    int k = 0;
#define MED(f) r->stage.f = bench_median(t[k++], j->a->reps);
    STAGE_FIELDS(MED)
#undef MED
    r->forward_s = r->stage.total;
    r->peak_rss_bytes = peak_rss();
    r->ok = 1;
done:
    hadm_image_free(&img);
    hadm_model_close(m);
}

/* Both models open at once (as `hadm serve` holds them): HADM-L, HADM-G,
 * then HADM-L again. Weights are packed on first use, so only the third
 * forward runs with both models fully resident, as every request after a
 * server's first two does; it is the peak that counts. */
static void both_child(const void *arg, prec_report *r)
{
    const forward_job *j = arg;
    hadm_open_options opt = {.threads = j->threads, .precision = PREC[j->prec]};
    hadm_error err = {0};
    hadm_model *m[2] = {0};
    hadm_image img = {0};
    hadm_detect_options dopt = {.channel_order = HADM_RGB};
    if (make_image(&img)) {
        snprintf(r->error, sizeof r->error, "out of memory");
        return;
    }
    int ok = 1;
    for (int i = 0; ok && i < 2; i++)
        ok = !hadm_model_open(j->paths[i], &opt, &m[i], &err);
    for (int k = 0; ok && k < 3; k++) {
        hadm_result *res = NULL;
        if (!j->a->json)
            fprintf(stderr, "hadm: %s: both models loaded, forward on %s...\n", PREC_NAME[j->prec],
                    hadm_model_variant(m[k % 2]));
        ok = !hadm_detect(m[k % 2], &img, &dopt, &res, &err);
        hadm_result_free(res);
    }
    if (ok) {
        r->both_rss_bytes = peak_rss();
        r->ok = 1;
    } else {
        snprintf(r->error, sizeof r->error, "%s", err.msg);
    }
    for (int i = 0; i < 2; i++)
        hadm_model_close(m[i]);
    hadm_image_free(&img);
}

typedef struct {
    const char *in, *out;
} quantize_job;

static void quantize_child(const void *arg, prec_report *r)
{
    const quantize_job *q = arg;
    hadm_error err = {0};
    if (quantize_model(q->in, q->out, "bf16", &err))
        snprintf(r->error, sizeof r->error, "%s", err.msg);
    else
        r->ok = 1;
}

/* The both-models peak again, from the two models written as bf16 files
 * (what `hadm quantize --type bf16` gives users), which are read
 * differently: their convolution weights are bf16 in the mapping. */
static void both_from_bf16_files(const forward_job *fj, prec_report *r)
{
    const char *dir = getenv("TMPDIR");
    char q[2][4096];
    int made = 0;
    forward_job qj = *fj;
    prec_report res = {0};
    for (; made < 2; made++) {
        snprintf(q[made], sizeof q[made], "%s/hadm-bench-XXXXXX.safetensors", dir && *dir ? dir : "/tmp");
        int fd = mkstemps(q[made], 12);
        if (fd < 0) {
            snprintf(r->error, sizeof r->error, "bf16 files: cannot create %.400s: %s", q[made], strerror(errno));
            break;
        }
        close(fd);
        if (!fj->a->json)
            fprintf(stderr, "hadm: bf16: writing HADM-%c as a bf16 file to %s...\n", made ? 'G' : 'L', q[made]);
        quantize_job qz = {fj->paths[made], q[made]};
        if (in_child(quantize_child, &qz, &res)) {
            snprintf(r->error, sizeof r->error, "bf16 files: %.500s", res.error);
            made++;
            break;
        }
        qj.paths[made] = q[made];
    }
    if (made == 2 && !r->error[0]) {
        if (in_child(both_child, &qj, &res))
            snprintf(r->error, sizeof r->error, "bf16 files, both models: %.500s", res.error);
        else
            r->both_files_rss_bytes = res.both_rss_bytes;
    }
    for (int i = 0; i < made; i++)
        unlink(q[i]);
    if (r->error[0])
        r->ok = 0;
}

/* ---- report ------------------------------------------------------------- */

/* The matmul type a precision computes in: bf16 computes in f32 on CPUs
 * whose bf16 dot product is not clearly faster (ops_bf16_native). */
static const char *compute_of(int p)
{
    return p == 0 ? "f32" : p == 1 ? (ops_bf16_native() ? "bf16" : "f32") : "s8";
}

/* The ceiling a precision's achieved rate is divided by: its own compute
 * type's (int8 runs its Linears, convolutions and Q·Kᵀ in s8, the rest in
 * f32; the s8 rate is the stricter yardstick). */
static double ceiling_of(const bench_ceilings *c, int p)
{
    const char *t = compute_of(p);
    return !strcmp(t, "f32") ? c->f32 : !strcmp(t, "bf16") ? c->bf16 : c->s8;
}

static void print_text(const bench_args *a, const bench_ceilings *c, const prec_report *r)
{
    printf("hadm bench: HADM-L %s (%s), %dx%d image, %d threads, cpu\n",
           a->model_path ? "from file" : a->full ? "full" : "tiny", a->model_path ? a->model_path : "synthetic",
           IMAGE_SIDE, IMAGE_SIDE, c->threads);
    printf("ceilings:  matmul f32 %.1f GFLOP/s, bf16 %.1f GFLOP/s, s8 %.1f GOP/s (packed, best of the %d^3\n"
           "           and ViT MLP shapes, median of 5, best of before/after); bandwidth %.1f GB/s triad, "
           "%.1f GB/s copy\n",
           c->f32, c->bf16, c->s8, a->full ? PEAK_DIM : PEAK_DIM_TINY, c->bw_triad_gbs, c->bw_copy_gbs);
    if (c->isa_f32 > 0)
        printf("           instruction peaks (all threads): f32 FMA %.0f GFLOP/s, bf16 dot %.0f GFLOP/s (%.2fx), "
               "u8*s8 dot %.0f GOP/s (%.2fx)\n",
               c->isa_f32, c->isa_bf16, c->isa_bf16 / c->isa_f32, c->isa_s8, c->isa_s8 / c->isa_f32);
    for (int p = 0; p < NPREC; p++) {
        if (!a->want[p])
            continue;
        const prec_report *q = &r[p];
        if (!q->ok) {
            printf("%-5s      failed: %s\n", PREC_NAME[p], q->error);
            continue;
        }
        double achieved = q->gflop / q->forward_s;
        printf("%-5s      forward %.3f s (median of %d; load %.2f s)", PREC_NAME[p], q->forward_s, a->reps,
               q->load_s);
        if (p > 0 && r[0].ok)
            printf(" = %.2fx f32", r[0].forward_s / q->forward_s);
        printf("\n  stages:  preprocess %.3f  backbone %.3f  fpn %.3f  rpn %.3f  roi_heads %.3f  "
               "postprocess %.3f s\n",
               q->stage.preprocess, q->stage.backbone, q->stage.fpn, q->stage.rpn, q->stage.roi_heads,
               q->stage.postprocess);
        printf("  work:    %.1f GFLOP, %.1f GFLOP/s achieved = %.1f%% of the %s matmul ceiling\n", q->gflop,
               achieved, 100.0 * achieved / ceiling_of(c, p), compute_of(p));
        if (p == 1 && !ops_bf16_native())
            printf("  note:    bf16 weights widened to f32 per layer: this CPU's bf16 dot product is not\n"
                   "           faster than its f32 FMA (HADM_BF16_COMPUTE=native forces bf16 compute)\n");
        printf("  memory:  peak RSS %.2f GB", (double)q->peak_rss_bytes / 1e9);
        if (q->both_rss_bytes)
            printf("; HADM-L + HADM-G loaded, forwards L, G, L: peak RSS %.2f GB",
                   (double)q->both_rss_bytes / 1e9);
        printf("\n");
        if (q->both_files_rss_bytes)
            printf("           the same from files written by `hadm quantize --type bf16`: peak RSS %.2f GB\n",
                   (double)q->both_files_rss_bytes / 1e9);
    }
}

static void print_json(const bench_args *a, const bench_ceilings *c, const prec_report *r)
{
    printf("{\"model\": \"HADM-L\", \"size\": \"%s\", \"synthetic\": %s, \"image\": [%d, %d], "
           "\"threads\": %d, \"device\": \"cpu\", \"reps\": %d,\n",
           a->full ? "full" : "tiny", a->model_path ? "false" : "true", IMAGE_SIDE, IMAGE_SIDE, c->threads,
           a->reps);
    printf(" \"peak_gflops\": {\"f32\": %.6g, \"bf16\": %.6g, \"int8\": %.6g}, \"peak_dim\": %d, "
           "\"bandwidth_gbs\": %.6g, \"bandwidth_copy_gbs\": %.6g,\n"
           " \"instruction_peak_gflops\": {\"f32\": %.6g, \"bf16\": %.6g, \"int8\": %.6g},\n \"precisions\": {",
           c->f32, c->bf16, c->s8, a->full ? PEAK_DIM : PEAK_DIM_TINY, c->bw_triad_gbs, c->bw_copy_gbs,
           c->isa_f32, c->isa_bf16, c->isa_s8);
    const char *sep = "";
    for (int p = 0; p < NPREC; p++) {
        const prec_report *q = &r[p];
        if (!a->want[p] || !q->ok)
            continue;
        double achieved = q->gflop / q->forward_s;
        printf("%s\n  \"%s\": {\"load_s\": %.6g, \"forward_s\": %.6g, \"stage_s\": {\"preprocess\": %.6g, "
               "\"backbone\": %.6g, \"fpn\": %.6g, \"rpn\": %.6g, \"roi_heads\": %.6g, \"postprocess\": %.6g}, "
               "\"gflop\": %.6g, \"achieved_gflops\": %.6g, \"ratio_to_peak\": %.6g, \"speedup_vs_f32\": %.6g, "
               "\"peak_rss_bytes\": %lld, \"both_models_peak_rss_bytes\": %lld, "
               "\"both_models_bf16_files_peak_rss_bytes\": %lld, \"compute\": \"%s\"}",
               sep, PREC_NAME[p], q->load_s, q->forward_s, q->stage.preprocess, q->stage.backbone, q->stage.fpn,
               q->stage.rpn, q->stage.roi_heads, q->stage.postprocess, q->gflop, achieved,
               achieved / ceiling_of(c, p), r[0].ok ? r[0].forward_s / q->forward_s : 0.0,
               q->peak_rss_bytes, q->both_rss_bytes, q->both_files_rss_bytes, compute_of(p));
        sep = ",";
    }
    printf("}}\n");
}

typedef struct {
    const bench_args *a;
    int bandwidth;
} ceiling_job;

static void ceiling_child(const void *arg, prec_report *r)
{
    const ceiling_job *j = arg;
    hadm_error err = {0};
    int dim = j->a->full ? PEAK_DIM : PEAK_DIM_TINY;
    /* the ceilings of the types the wanted precisions compute in */
    int want[NPREC] = {j->a->want[0], j->a->want[1], j->a->want[2]};
    if (want[1] && !strcmp(compute_of(1), "f32"))
        want[0] = 1;
    if (bench_measure_matmul(j->a->threads, dim, want, &r->ceil, &err) ||
        (j->bandwidth && bench_measure_bandwidth(r->ceil.threads, &r->ceil, &err))) {
        snprintf(r->error, sizeof r->error, "%.500s", err.msg);
        return;
    }
    if (j->bandwidth)
        bench_measure_isa(r->ceil.threads, &r->ceil);
    r->ok = 1;
}

/* Measured in a child process like everything that computes: libgomp's
 * thread pool does not survive fork(), so the parent never starts it.
 * Other work on a shared machine can slow a measurement: the ceilings are
 * measured again after the forwards and the higher kept, so a disturbed
 * first measurement cannot inflate the ratios. */
static int measure_ceilings(const bench_args *a, bench_ceilings *c, int first)
{
    ceiling_job j = {a, first};
    prec_report r;
    if (in_child(ceiling_child, &j, &r)) {
        cli_error("bench: %s", r.error);
        return 1;
    }
    if (first) {
        *c = r.ceil;
        return 0;
    }
    c->f32 = r.ceil.f32 > c->f32 ? r.ceil.f32 : c->f32;
    c->bf16 = r.ceil.bf16 > c->bf16 ? r.ceil.bf16 : c->bf16;
    c->s8 = r.ceil.s8 > c->s8 ? r.ceil.s8 : c->s8;
    return 0;   /* bandwidth and instruction peaks: first measurement only */
}

/* Synthetic HADM-L (and HADM-G for --rss-both) in temp files. */
static int make_models(const bench_args *a, char paths[2][4096])
{
    const char *dir = getenv("TMPDIR");
    for (int i = 0; i < 1 + a->rss_both; i++) {
        snprintf(paths[i], 4096, "%s/hadm-bench-XXXXXX.safetensors", dir && *dir ? dir : "/tmp");
        int fd = mkstemps(paths[i], 12);
        if (fd < 0) {
            cli_error("bench: cannot create %s: %s", paths[i], strerror(errno));
            paths[i][0] = 0;
            return 1;
        }
        close(fd);
        if (!a->json)
            fprintf(stderr, "hadm: writing a %s synthetic HADM-%c to %s...\n", a->full ? "full-size" : "tiny",
                    i ? 'G' : 'L', paths[i]);
        synth_job sj = {a, i ? 'g' : 'l', paths[i]};
        prec_report r;
        if (in_child(synth_child, &sj, &r)) {
            cli_error("bench: %s", r.error);
            return 1;
        }
    }
    return 0;
}

/* Every wanted precision in its own process, all started at once (each
 * holds its model), their forwards taken in turns: warm-ups, then timed
 * forward 1 of each precision, then 2... On a shared machine whose speed
 * drifts over minutes, the ratios then compare forwards seconds apart.
 * The both-models runs follow, one process at a time. */
static int run_forwards(const bench_args *a, int threads, const char *l_path, const char *g_path,
                        prec_report *r)
{
    forward_job fj[NPREC];
    child ch[NPREC];
    int go[NPREC], done[NPREC], piped[NPREC] = {0}, alive[NPREC] = {0}, rc = 0;
    signal(SIGPIPE, SIG_IGN);   /* a child that failed closes its turn pipe */
    n_turn_fds = 0;
    for (int p = 0; p < NPREC; p++) {
        int gp[2], dp[2];
        ch[p].pid = -1;
        if (!a->want[p])
            continue;
        fj[p] = (forward_job){a, p, {l_path, g_path}, threads, -1, -1};
        if (pipe(gp) || (pipe(dp) && (close(gp[0]), close(gp[1]), 1))) {
            snprintf(r[p].error, sizeof r[p].error, "pipe: %s", strerror(errno));
            continue;
        }
        fj[p].go = gp[0], fj[p].done = dp[1];
        go[p] = gp[1], done[p] = dp[0], piped[p] = 1;
        turn_fds[n_turn_fds++] = gp[1], turn_fds[n_turn_fds++] = dp[0];
        alive[p] = !child_spawn(forward_child, &fj[p], &ch[p], &r[p]);
        close(gp[0]), close(dp[1]);
    }
    for (int step = 0; step <= a->reps; step++)
        for (int p = 0; p < NPREC; p++) {
            char b = 1;
            if (alive[p] && (write(go[p], &b, 1) != 1 || read(done[p], &b, 1) != 1))
                alive[p] = 0;   /* it failed: its report says why */
        }
    for (int p = 0; p < NPREC; p++) {
        if (piped[p])
            close(go[p]), close(done[p]);
        if (ch[p].pid > 0)
            child_collect(&ch[p], &r[p]);
    }
    n_turn_fds = 0;   /* closed: their numbers may be reused from here on */
    for (int p = 0; p < NPREC; p++) {
        if (!a->want[p])
            continue;
        if (r[p].ok && a->rss_both) {
            prec_report both;
            if (in_child(both_child, &fj[p], &both))
                snprintf(r[p].error, sizeof r[p].error, "both models: %.500s", both.error), r[p].ok = 0;
            r[p].both_rss_bytes = both.both_rss_bytes;
            if (r[p].ok && p == 1)
                both_from_bf16_files(&fj[p], &r[p]);
        }
        if (!r[p].ok)
            rc = 1;
    }
    return rc;
}

int cmd_bench(int argc, char **argv)
{
    bench_args a;
    int rc = parse_bench_args(argc, argv, &a);
    if (rc >= 0)
        return rc;
    if (a.model_path && a.rss_both) {
        cli_error("--rss-both needs the synthetic models (drop --model)");
        return 2;
    }
    bench_ceilings c = {0};
    if (!a.json)
        fprintf(stderr, "hadm: measuring matmul ceilings (f32, bf16, s8) and memory bandwidth...\n");
    if (measure_ceilings(&a, &c, 1))
        return 1;
    char paths[2][4096] = {"", ""};
    rc = a.model_path ? 0 : make_models(&a, paths);
    prec_report r[NPREC];
    memset(r, 0, sizeof r);
    if (!rc)
        rc = run_forwards(&a, c.threads, a.model_path ? a.model_path : paths[0], paths[1], r);
    for (int i = 0; i < 2; i++)
        if (paths[i][0])
            unlink(paths[i]);
    if (measure_ceilings(&a, &c, 0))
        return 1;
    if (a.json)
        print_json(&a, &c, r);
    else
        print_text(&a, &c, r);
    return rc;
}
