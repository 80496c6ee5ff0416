/* hadm monitor --mode load|startup|inference [--lazy] [--report FILE]
 *
 * The original guide's performance monitor, measured:
 *  load       each model's load in process: cold file read, then open
 *             (validate, bind, pack); then both models loaded in parallel,
 *             which should take about the time of the slower one.
 *  startup    `hadm serve` from exec to listening, ready, first detect and N
 *             more (monitor_startup.c), with its RSS over time, checked
 *             against the server's own /metrics.
 *  inference  per-stage engine times over N runs. */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/doctor.h"
#include "cli/modelcache.h"
#include "cli/monitor.h"
#include "hadm.h"

static const char *NAMES[2] = {"hadm-l", "hadm-g"};

int mon_model_paths(const mon_options *o, char *paths[2])
{
    paths[0] = paths[1] = NULL;
    char *found[2] = {NULL, NULL};
    if (o->local || o->global) {
        found[0] = o->local ? strdup(o->local) : NULL;
        found[1] = o->global ? strdup(o->global) : NULL;
    } else {
        const char *env = getenv("HADM_MODELS");
        const char *dir = o->models_dir ? o->models_dir : env && *env ? env : "./models";
        found[0] = doctor_find_model(dir, "hadm-l.safetensors", "HADM-L_");
        found[1] = doctor_find_model(dir, "hadm-g.safetensors", "HADM-G_");
        for (int i = 0; i < 2; i++)
            if (found[i] && access(found[i], R_OK) != 0) {
                free(found[i]);
                found[i] = NULL;
            }
    }
    int rc = 0;
    for (int i = 0; i < 2 && !rc; i++) {
        char msg[1024];
        if (found[i] && modelcache_resolve(found[i], &paths[i], msg, sizeof msg) != 0) {
            cli_error("%s", msg);
            rc = -1;
        }
    }
    free(found[0]);
    free(found[1]);
    return rc;
}

static double percentile(const double *v, int n, double p)
{
    double *s = malloc((size_t)(n ? n : 1) * sizeof *s);
    if (!s || !n) {
        free(s);
        return 0;
    }
    memcpy(s, v, (size_t)n * sizeof *s);
    for (int i = 1; i < n; i++)   /* n is small: insertion sort */
        for (int j = i; j > 0 && s[j - 1] > s[j]; j--) {
            double t = s[j];
            s[j] = s[j - 1];
            s[j - 1] = t;
        }
    int k = (int)(p * n + 0.999999) - 1;
    double x = s[k < 0 ? 0 : k >= n ? n - 1 : k];
    free(s);
    return x;
}

/* ---- load ---- */

typedef struct {
    const char *path, *name, *lane;
    int threads;
    double t_origin;
    mon_report *r;
    double read_s, open_s, mb_s;
    int ok;
} load_job;

/* Reads the file with its cached pages dropped first, as a cold start would. */
static double cold_read(const char *path, double *mb_s)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    char *buf = malloc(8 << 20);
    double t0 = mon_now();
    long long total = 0;
    ssize_t n;
    while (buf && (n = read(fd, buf, 8 << 20)) > 0)
        total += n;
    double dt = mon_now() - t0;
    free(buf);
    close(fd);
    *mb_s = dt > 0 ? (double)total / 1e6 / dt : 0;
    return dt;
}

static void *load_one(void *arg)
{
    load_job *j = arg;
    double t0 = mon_now();
    j->read_s = cold_read(j->path, &j->mb_s);
    char label[96];
    snprintf(label, sizeof label, "read file (cold, %.0f MB/s)", j->mb_s);
    double t1 = mon_now();
    hadm_open_options opt = {.threads = j->threads};
    hadm_model *m = NULL;
    hadm_error err = {0};
    j->ok = hadm_model_open(j->path, &opt, &m, &err) == HADM_OK;
    double t2 = mon_now();
    j->open_s = t2 - t1;
    hadm_model_close(m);
    if (!j->ok)
        cli_error("%s", err.msg);
    pthread_mutex_lock(&j->r->lock);
    mon_span_add(j->r, j->lane, label, t0 - j->t_origin, t1 - j->t_origin);
    mon_span_add(j->r, j->lane, "open: validate, bind, pack", t1 - j->t_origin, t2 - j->t_origin);
    pthread_mutex_unlock(&j->r->lock);
    return NULL;
}

static int monitor_load(const mon_options *o, mon_report *r)
{
    char *paths[2];
    double origin = mon_now();
    if (mon_model_paths(o, paths) != 0)
        return 1;
    if (mon_now() - origin > 0.5)
        mon_span_add(r, "setup", "convert .pth into the cache", 0, mon_now() - origin);
    if (!paths[0] && !paths[1]) {
        cli_error("no model files (use --models DIR or --local/--global); hadm serve would run demo models");
        return 1;
    }
    load_job jobs[2] = {{0}}, par[2] = {{0}};
    double sum = 0, slowest = 0, base = mon_now();
    int failed = 0;
    for (int i = 0; i < 2; i++) {
        if (!paths[i])
            continue;
        jobs[i] = (load_job){paths[i], NAMES[i], NAMES[i], o->threads, origin, r, 0, 0, 0, 0};
        load_one(&jobs[i]);
        failed |= !jobs[i].ok;
        char key[64];
        snprintf(key, sizeof key, "%s.read_cold_s", NAMES[i]);
        mon_metric_add(r, key, jobs[i].read_s, "s");
        snprintf(key, sizeof key, "%s.open_s", NAMES[i]);
        mon_metric_add(r, key, jobs[i].open_s, "s");
        sum += jobs[i].read_s + jobs[i].open_s;
        slowest = jobs[i].read_s + jobs[i].open_s > slowest ? jobs[i].read_s + jobs[i].open_s : slowest;
    }
    mon_metric_add(r, "sequential_total_s", mon_now() - base, "s");
    if (paths[0] && paths[1] && !failed) {
        pthread_t th[2];
        double t0 = mon_now();
        for (int i = 0; i < 2; i++) {
            par[i] = (load_job){paths[i], NAMES[i], i ? "parallel: hadm-g" : "parallel: hadm-l", o->threads ? o->threads : 0,
                                origin, r, 0, 0, 0, 0};
            pthread_create(&th[i], NULL, load_one, &par[i]);
        }
        for (int i = 0; i < 2; i++)
            pthread_join(th[i], NULL);
        double wall = mon_now() - t0;
        mon_metric_add(r, "parallel_both_s", wall, "s");
        mon_metric_add(r, "parallel_vs_slowest", wall / (slowest > 0 ? slowest : 1), "x");
        mon_note(r, "both models in parallel: %.3f s, against %.3f s one after the other and %.3f s for the slower "
                 "alone", wall, sum, slowest);
    }
    free(paths[0]);
    free(paths[1]);
    return failed;
}

/* ---- inference ---- */

static int load_image(const mon_options *o, hadm_image *img)
{
    hadm_error err = {0};
    if (o->image) {
        if (hadm_image_load(o->image, NULL, img, &err) != HADM_OK) {
            cli_error("%s", err.msg);
            return -1;
        }
        return 0;
    }
    size_t len = 0;
    unsigned char *png = mon_make_png(1024, 768, &len);
    int rc = png && hadm_image_decode(png, len, NULL, img, &err) == HADM_OK ? 0 : -1;
    if (rc)
        cli_error("cannot make the test image: %s", err.msg);
    free(png);
    return rc;
}

static const char *STAGES[] = {"preprocess", "backbone", "fpn", "rpn", "roi_heads", "postprocess"};

static void stage_values(const hadm_timings *t, double v[6])
{
    v[0] = t->preprocess, v[1] = t->backbone, v[2] = t->fpn, v[3] = t->rpn, v[4] = t->roi_heads, v[5] = t->postprocess;
}

static int run_model(const mon_options *o, mon_report *r, const char *name, hadm_model *m, const hadm_image *img,
                     double origin)
{
    int runs = o->runs > 0 ? o->runs : 5;
    double *totals = calloc((size_t)runs, sizeof *totals), *stages = calloc((size_t)runs * 6, sizeof *stages);
    hadm_detect_options dopt = {0};
    int ok = totals && stages;
    for (int k = -1; ok && k < runs; k++) {   /* k = -1: the first run, reported apart */
        hadm_result *res = NULL;
        hadm_error err = {0};
        double t0 = mon_now() - origin;
        if (hadm_detect(m, img, &dopt, &res, &err) != HADM_OK) {
            cli_error("%s: %s", name, err.msg);
            ok = 0;
            break;
        }
        double v[6], t = t0;
        stage_values(&res->timings, v);
        char lane[48];
        snprintf(lane, sizeof lane, "%s%s", name, k < 0 ? " (first run)" : "");
        for (int s = 0; s < 6; s++) {
            mon_span_add(r, lane, STAGES[s], t, t + v[s]);
            t += v[s];
        }
        if (k < 0) {
            char key[64];
            snprintf(key, sizeof key, "%s.first_run_s", name);
            mon_metric_add(r, key, res->timings.total, "s");
        } else {
            totals[k] = res->timings.total;
            memcpy(stages + 6 * k, v, sizeof v);
        }
        hadm_result_free(res);
    }
    for (int s = 0; ok && s < 6; s++) {
        double col[runs];
        for (int k = 0; k < runs; k++)
            col[k] = stages[6 * k + s];
        char key[64];
        snprintf(key, sizeof key, "%s.%s_p50_ms", name, STAGES[s]);
        mon_metric_add(r, key, 1000 * percentile(col, runs, 0.5), "ms");
    }
    if (ok) {
        char key[64];
        snprintf(key, sizeof key, "%s.total_p50_s", name);
        mon_metric_add(r, key, percentile(totals, runs, 0.5), "s");
        snprintf(key, sizeof key, "%s.total_p95_s", name);
        mon_metric_add(r, key, percentile(totals, runs, 0.95), "s");
    }
    free(totals);
    free(stages);
    return ok ? 0 : 1;
}

static int monitor_inference(const mon_options *o, mon_report *r)
{
    char *paths[2];
    if (mon_model_paths(o, paths) != 0)
        return 1;
    hadm_image img = {0};
    if (load_image(o, &img) != 0) {
        free(paths[0]);
        free(paths[1]);
        return 1;
    }
    mon_note(r, "image %dx%d%s%s, %d runs after a first one", img.width, img.height, o->image ? ": " : " (synthetic)",
             o->image ? o->image : "", o->runs > 0 ? o->runs : 5);
    double origin = mon_now();
    int rc = 0;
    for (int i = 0; i < 2 && !rc; i++) {
        hadm_model *m = NULL;
        hadm_error err = {0};
        hadm_open_options opt = {.threads = o->threads};
        hadm_status s = paths[i] ? hadm_model_open(paths[i], &opt, &m, &err)
                                 : !paths[0] && !paths[1] ? hadm_model_open_demo(i ? 'g' : 'l', 1, &opt, &m, &err)
                                                         : HADM_OK;
        if (s) {
            cli_error("%s", err.msg);
            rc = 1;
        } else if (m) {
            if (!paths[i])
                mon_note(r, "%s: no model file, the built-in demo model was measured", NAMES[i]);
            rc = run_model(o, r, NAMES[i], m, &img, origin);
        }
        hadm_model_close(m);
    }
    hadm_image_free(&img);
    free(paths[0]);
    free(paths[1]);
    return rc;
}

static void monitor_usage(FILE *out)
{
    fprintf(out,
            "usage: hadm monitor --mode load|startup|inference [--lazy] [--report FILE]\n"
            "                    [--models DIR | --local F --global F] [--runs N] [--image F] [--threads N]\n\n"
            "  load       each model's load timed in process (cold read, open), then both in parallel\n"
            "  startup    starts hadm serve on a free port: exec -> listening -> ready -> first\n"
            "             detect -> N more (p50/p95), RSS over time, compared with its /metrics\n"
            "  inference  per-stage engine times over N runs (default 5)\n\n"
            "Writes FILE.json and FILE.html (default ./hadm-monitor-MODE); the HTML is one\n"
            "self-contained page with an SVG timeline.\n");
}

int cmd_monitor(int argc, char **argv)
{
    mon_options o = {0};
    const char *mode = NULL, *report = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            monitor_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--lazy")) {
            o.lazy = 1;
        } else if (v && (!strcmp(a, "--mode") || !strcmp(a, "--report") || !strcmp(a, "--models") ||
                         !strcmp(a, "--local") || !strcmp(a, "--global") || !strcmp(a, "--image") ||
                         !strcmp(a, "--runs") || !strcmp(a, "--threads"))) {
            const char **slot[] = {&mode, &report, &o.models_dir, &o.local, &o.global, &o.image};
            const char *names[] = {"--mode", "--report", "--models", "--local", "--global", "--image"};
            for (int k = 0; k < 6; k++)
                if (!strcmp(a, names[k]))
                    *slot[k] = v;
            if (!strcmp(a, "--runs") && (o.runs = atoi(v)) <= 0) {
                cli_error("--runs must be a positive number");
                return 2;
            }
            if (!strcmp(a, "--threads") && (o.threads = atoi(v)) <= 0) {
                cli_error("--threads must be a positive number");
                return 2;
            }
            i++;
        } else {
            cli_error("unknown or incomplete option '%s' (see hadm monitor --help)", a);
            return 2;
        }
    }
    if (!mode || (strcmp(mode, "load") && strcmp(mode, "startup") && strcmp(mode, "inference"))) {
        cli_error("--mode load|startup|inference is required");
        return 2;
    }
    if (o.models_dir && (o.local || o.global)) {
        cli_error("--models and --local/--global exclude each other");
        return 2;
    }
    char base[256], title[128];
    snprintf(base, sizeof base, "hadm-monitor-%s", mode);
    snprintf(title, sizeof title, "hadm %s on %ld CPUs%s", HADM_VERSION, sysconf(_SC_NPROCESSORS_ONLN),
             o.lazy ? ", --lazy" : "");
    mon_report r;
    mon_init(&r, mode, title);
    int rc = !strcmp(mode, "load")      ? monitor_load(&o, &r)
             : !strcmp(mode, "startup") ? monitor_startup(&o, &r)
                                        : monitor_inference(&o, &r);
    if (mon_finish(&r, report ? report : base) != 0)
        rc = 1;
    mon_free(&r);
    return rc;
}
