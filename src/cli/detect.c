/* hadm detect: run HADM-L and/or HADM-G on images and print the detections
 * (DESIGN.md "Command line"). Argument parsing, input listing, model loading
 * and the per-image loop; output formats are in detect_output.c. */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/annotate.h"
#include "io/image_encode.h"
#include "cli/cli.h"
#include "cli/detect_output.h"
#include "cli/modelpath.h"
#include "engine/device_plan.h"
#include "hadm.h"
#include "util/timer.h"

enum { MODE_LOCAL = 1, MODE_GLOBAL = 2, MODE_BOTH = 3 };
#define MAX_DIR_DEPTH 32

typedef struct {
    const char *models_dir, *local, *global, *annotate_dir;
    int mode;                       /* 0 = pick from the available models */
    image_format annotate_format;
    detect_format format;
    hadm_open_options open;
    hadm_detect_options det;
    hadm_decode_options decode;
    const char **inputs;            /* IMAGE|DIR arguments, in order */
    int ninputs;
} detect_args;

typedef struct {
    char **paths;
    int count, cap;
} path_list;

typedef struct {
    int enabled, total, done;
    double t0;
} progress;

static void detect_usage(FILE *out)
{
    fprintf(out,
            "usage: hadm detect [--models DIR | --local F --global F] [--mode local|global|both]\n"
            "                   [--format json|jsonl|table] [--annotate OUTDIR]\n"
            "                   [--annotate-format jpeg|png] [--threads N]\n"
            "                   [--device cpu|cuda[:i]] [--gpu-memory-fraction F]\n"
            "                   [--channel-order rgb|bgr]\n"
            "                   [--min-score S] [--allow-truncated] IMAGE|DIR...\n\n"
            "Runs HADM-L (local artifacts) and/or HADM-G (global artifacts) on each image and\n"
            "prints the detections in original-image pixels.\n\n"
            "  --models DIR       directory with hadm-l.safetensors / hadm-g.safetensors\n"
            "                     (default $HADM_MODELS, then ./models)\n"
            "  --local F          HADM-L model file      --global F   HADM-G model file\n"
            "  --mode M           local, global or both (default: every model available)\n"
            "  --format F         json (default; an array unless a single IMAGE file is given),\n"
            "                     jsonl (one object per line) or table\n"
            "  --annotate OUTDIR  also write each image with its boxes and labels drawn\n"
            "                     (HADM-L in warm colours, HADM-G in cool ones)\n"
            "  --annotate-format F  jpeg (default; OUTDIR/NAME.jpg) or png (NAME.png, lossless)\n"
            "  --threads N        compute threads per model (default: all cores)\n"
            "  --device D         cpu (default) or cuda[:i]\n"
            "  --gpu-memory-fraction F  share of the GPU's memory the models may use (default 0.95)\n"
            "  --precision P      auto (default: follow the model file), f32, bf16 or int8\n"
            "  --channel-order C  rgb (default, what the models were trained on) or bgr\n"
            "                     (reproduces the authors' demo script and Python server)\n"
            "  --min-score S      drop detections scoring below S (0..1)\n"
            "  --allow-truncated  decode JPEGs whose data ends early (missing rows black),\n"
            "                     as the original reader does; by default they are errors\n\n"
            "Directories are searched (recursively) for .jpg/.jpeg/.png/.webp files, in name\n"
            "order. Exit status: 0 ok, 1 some image or model failed, 2 usage error.\n");
}

/* ---- argument parsing -------------------------------------------------- */

/* Matches "--name VALUE" and "--name=VALUE". Returns 0 if argv[*i] is another
 * option, 1 with *val set (or NULL when the value is missing). */
static int option_value(int argc, char **argv, int *i, const char *name, const char **val)
{
    const char *a = argv[*i];
    size_t n = strlen(name);
    if (strncmp(a, name, n) != 0)
        return 0;
    if (a[n] == '=') {
        *val = a + n + 1;
        return 1;
    }
    if (a[n] != 0)
        return 0;
    *val = *i + 1 < argc ? argv[++*i] : NULL;
    return 1;
}

static int parse_int(const char *s, long lo, long hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    *out = (int)v;
    return 0;
}

static int parse_device(const char *v, hadm_open_options *o)
{
    return device_parse(v, &o->device, &o->device_index, NULL) ? -1 : 0;
}

/* Applies one option with its value; returns 0, or 2 after printing why. */
static int apply_option(detect_args *a, const char *name, const char *v)
{
    if (!v) {
        cli_error("%s needs a value (see hadm detect --help)", name);
        return 2;
    }
    if (!strcmp(name, "--models"))
        a->models_dir = v;
    else if (!strcmp(name, "--local"))
        a->local = v;
    else if (!strcmp(name, "--global"))
        a->global = v;
    else if (!strcmp(name, "--annotate"))
        a->annotate_dir = v;
    else if (!strcmp(name, "--annotate-format")) {
        if (image_format_parse(v, &a->annotate_format))
            goto bad;
    }
    else if (!strcmp(name, "--mode")) {
        a->mode = !strcmp(v, "local") ? MODE_LOCAL : !strcmp(v, "global") ? MODE_GLOBAL
                : !strcmp(v, "both") ? MODE_BOTH : -1;
        if (a->mode < 0)
            goto bad;
    } else if (!strcmp(name, "--format")) {
        if (!strcmp(v, "json"))
            a->format = DETECT_FORMAT_JSON;
        else if (!strcmp(v, "jsonl"))
            a->format = DETECT_FORMAT_JSONL;
        else if (!strcmp(v, "table"))
            a->format = DETECT_FORMAT_TABLE;
        else
            goto bad;
    } else if (!strcmp(name, "--threads")) {
        if (parse_int(v, 0, 4096, &a->open.threads))
            goto bad;
    } else if (!strcmp(name, "--device")) {
        if (parse_device(v, &a->open))
            goto bad;
    } else if (!strcmp(name, "--gpu-memory-fraction")) {
        if (device_parse_fraction(v, &a->open.gpu_memory_fraction, NULL))
            goto bad;
    } else if (!strcmp(name, "--precision")) {
        if (hadm_precision_parse(v, &a->open.precision))
            goto bad;
    } else if (!strcmp(name, "--channel-order")) {
        if (strcasecmp(v, "rgb") && strcasecmp(v, "bgr"))
            goto bad;
        a->det.channel_order = strcasecmp(v, "bgr") ? HADM_RGB : HADM_BGR;
    } else if (!strcmp(name, "--min-score")) {
        char *end;
        double s = strtod(v, &end);
        if (end == v || *end || !(s >= 0 && s <= 1))
            goto bad;
        a->det.min_score = (float)s;
    }
    return 0;
bad:
    cli_error("invalid value '%s' for %s (see hadm detect --help)", v, name);
    return 2;
}

static const char *const VALUE_OPTIONS[] = {
    "--models", "--local", "--global", "--annotate", "--annotate-format", "--mode", "--format",
    "--threads", "--device", "--gpu-memory-fraction", "--precision", "--channel-order", "--min-score",
};

/* Returns -1 to go on, else the exit code (0 after --help). */
static int parse_args(int argc, char **argv, detect_args *a)
{
    memset(a, 0, sizeof *a);
    a->format = DETECT_FORMAT_JSON;
    a->inputs = calloc((size_t)argc, sizeof *a->inputs);
    if (!a->inputs) {
        cli_error("out of memory");
        return 1;
    }
    int only_inputs = 0;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i], *v = NULL;
        if (only_inputs || arg[0] != '-' || !strcmp(arg, "-")) {
            a->inputs[a->ninputs++] = arg;
            continue;
        }
        if (!strcmp(arg, "--")) {
            only_inputs = 1;
            continue;
        }
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
            detect_usage(stdout);
            return 0;
        }
        if (!strcmp(arg, "--allow-truncated")) {
            a->decode.allow_truncated = 1;
            continue;
        }
        size_t k = 0, nopt = sizeof VALUE_OPTIONS / sizeof *VALUE_OPTIONS;
        while (k < nopt && !option_value(argc, argv, &i, VALUE_OPTIONS[k], &v))
            k++;
        if (k == nopt) {
            cli_error("unknown option '%s' (see hadm detect --help)", arg);
            return 2;
        }
        int rc = apply_option(a, VALUE_OPTIONS[k], v);
        if (rc)
            return rc;
    }
    if (a->ninputs == 0) {
        cli_error("no images given (see hadm detect --help)");
        return 2;
    }
    if (a->annotate_format != IMAGE_JPEG && !a->annotate_dir) {
        cli_error("--annotate-format needs --annotate OUTDIR");
        return 2;
    }
    return -1;
}

/* ---- inputs ------------------------------------------------------------ */

static int list_add(path_list *l, const char *path)
{
    if (l->count == l->cap) {
        int cap = l->cap ? 2 * l->cap : 64;
        char **p = realloc(l->paths, (size_t)cap * sizeof *p);
        if (!p)
            return -1;
        l->paths = p;
        l->cap = cap;
    }
    if (!(l->paths[l->count] = strdup(path)))
        return -1;
    l->count++;
    return 0;
}

static void list_free(path_list *l)
{
    for (int i = 0; i < l->count; i++)
        free(l->paths[i]);
    free(l->paths);
    memset(l, 0, sizeof *l);
}

static int has_image_extension(const char *name)
{
    static const char *const EXTS[] = {".jpg", ".jpeg", ".png", ".webp"};
    size_t n = strlen(name);
    for (size_t k = 0; k < sizeof EXTS / sizeof *EXTS; k++) {
        size_t m = strlen(EXTS[k]);
        if (n > m && !strcasecmp(name + n - m, EXTS[k]))
            return 1;
    }
    return 0;
}

static int compare_paths(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Adds the image files under dir. Symlinked directories are not followed,
 * so a link loop cannot make the walk endless. Returns -1 on out of memory. */
static int walk_dir(path_list *l, const char *dir, int depth)
{
    DIR *d = opendir(dir);
    if (!d) {
        cli_error("%s: %s", dir, strerror(errno));
        return 0;
    }
    struct dirent *e;
    int rc = 0;
    while (rc == 0 && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        size_t len = strlen(dir) + strlen(e->d_name) + 2;
        char *path = malloc(len);
        if (!path) {
            rc = -1;
            break;
        }
        snprintf(path, len, "%s%s%s", dir, dir[strlen(dir) - 1] == '/' ? "" : "/", e->d_name);
        struct stat st;
        if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
            if (depth < MAX_DIR_DEPTH)
                rc = walk_dir(l, path, depth + 1);
        } else if (has_image_extension(e->d_name) && stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
            rc = list_add(l, path);
        }
        free(path);
    }
    closedir(d);
    return rc;
}

/* Files are taken as given (a missing one fails as an image later, so the
 * others still run); directories expand to their images, sorted by name.
 * Returns the number of directories that held no image, or -1. */
static int collect_inputs(const detect_args *a, path_list *l)
{
    int empty_dirs = 0;
    for (int i = 0; i < a->ninputs; i++) {
        struct stat st;
        if (stat(a->inputs[i], &st) != 0 || !S_ISDIR(st.st_mode)) {
            if (list_add(l, a->inputs[i]))
                return -1;
            continue;
        }
        int first = l->count;
        if (walk_dir(l, a->inputs[i], 0))
            return -1;
        qsort(l->paths + first, (size_t)(l->count - first), sizeof *l->paths, compare_paths);
        if (l->count == first) {
            cli_error("%s: no .jpg/.jpeg/.png/.webp files", a->inputs[i]);
            empty_dirs++;
        }
    }
    return empty_dirs;
}

/* ---- models ------------------------------------------------------------ */

typedef struct {
    const char *path, *variant, *flag;
    hadm_open_options opt;
    hadm_model *model;
    hadm_error err;
    hadm_status status;
} model_load;

static void *load_model(void *arg)
{
    model_load *j = arg;
    j->status = hadm_model_open(j->path, &j->opt, &j->model, &j->err);
    if (j->status == HADM_OK && strcmp(hadm_model_variant(j->model), j->variant) != 0) {
        snprintf(j->err.msg, sizeof j->err.msg, "%s is a %s model, but was given as the %s model",
                 j->path, hadm_model_variant(j->model), j->variant);
        j->status = HADM_ERR_ARG;
        hadm_model_close(j->model);
        j->model = NULL;
    }
    return NULL;
}

/* Opens the needed models, both at once in two threads when both are needed
 * (loading is mostly page-faulting and weight packing, which overlaps well). */
static int load_models(model_load *jobs, int n)
{
    pthread_t tid[2];
    int started[2] = {0, 0};
    for (int i = 0; i < n; i++) {
        if (i + 1 < n)
            started[i] = pthread_create(&tid[i], NULL, load_model, &jobs[i]) == 0;
        if (!started[i])
            load_model(&jobs[i]);
    }
    for (int i = 0; i < n; i++)
        if (started[i])
            pthread_join(tid[i], NULL);
    int failed = 0;
    for (int i = 0; i < n; i++) {
        if (jobs[i].status == HADM_OK)
            continue;
        if (strstr(jobs[i].err.msg, jobs[i].path))
            cli_error("%s", jobs[i].err.msg);
        else
            cli_error("%s: %s", jobs[i].path, jobs[i].err.msg);
        failed = 1;
    }
    return failed;
}

/* Picks the mode from what is available; 2 when --mode asks for a model that
 * was not given. */
static int choose_mode(detect_args *a, const char *local, const char *global)
{
    int available = (local ? MODE_LOCAL : 0) | (global ? MODE_GLOBAL : 0);
    if (!a->mode) {
        a->mode = available;
        return 0;
    }
    if ((a->mode & available) == a->mode)
        return 0;
    const char *missing = (a->mode & MODE_LOCAL) && !local ? "HADM-L (--local F, or hadm-l.safetensors in --models DIR)"
                                                           : "HADM-G (--global F, or hadm-g.safetensors in --models DIR)";
    cli_error("--mode %s needs %s", a->mode == MODE_BOTH ? "both" : a->mode == MODE_LOCAL ? "local" : "global",
              missing);
    return 2;
}

/* ---- progress ---------------------------------------------------------- */

static void progress_clear(progress *p)
{
    if (p->enabled)
        fputs("\r\033[K", stderr);
}

static void progress_show(progress *p)
{
    if (!p->enabled)
        return;
    double elapsed = hadm_now() - p->t0;
    double rate = elapsed > 0 ? p->done / elapsed : 0;
    fprintf(stderr, "\r\033[Khadm: %d/%d images", p->done, p->total);
    if (p->done > 0 && rate > 0) {
        long eta = lround((p->total - p->done) / rate);
        fprintf(stderr, ", %.2f img/s, ETA %ld:%02ld", rate, eta / 60, eta % 60);
    }
    fflush(stderr);
}

/* ---- the per-image loop ------------------------------------------------- */

typedef struct {
    const detect_args *args;
    hadm_model *local, *global;
    detect_printer printer;
    annotator annot;
    progress prog;
} detect_run;

static const char *mode_name(int mode)
{
    return mode == MODE_BOTH ? "both" : mode == MODE_LOCAL ? "local" : "global";
}

static int run_model(detect_run *r, hadm_model *m, const char *path, const hadm_image *img,
                     hadm_result **out)
{
    hadm_error err = {0};
    if (hadm_detect(m, img, &r->args->det, out, &err) == HADM_OK)
        return 0;
    progress_clear(&r->prog);
    cli_error("%s: %s: %s", path, hadm_model_variant(m), err.msg);
    return 1;
}

/* Returns 0 when the image was detected (and annotated), 1 otherwise. */
static int run_image(detect_run *r, const char *path)
{
    hadm_image img = {0};
    hadm_error err = {0};
    if (hadm_image_load(path, &r->args->decode, &img, &err) != HADM_OK) {
        progress_clear(&r->prog);
        if (strstr(err.msg, path))
            cli_error("%s", err.msg);
        else
            cli_error("%s: %s", path, err.msg);
        return 1;
    }
    hadm_result *lres = NULL, *gres = NULL;
    int failed = (r->local && run_model(r, r->local, path, &img, &lres)) ||
                 (r->global && run_model(r, r->global, path, &img, &gres));
    if (!failed) {
        detect_record rec = {path, img.width, img.height, mode_name(r->args->mode), lres, gres};
        progress_clear(&r->prog);
        detect_printer_add(&r->printer, &rec);
        if (r->args->annotate_dir && annotator_write(&r->annot, path, &img, lres, gres, &err)) {
            cli_error("%s", err.msg);
            failed = 1;
        }
    }
    hadm_result_free(lres);
    hadm_result_free(gres);
    hadm_image_free(&img);
    return failed;
}

static int run_all(detect_run *r, const path_list *images, int as_array)
{
    int failed = 0;
    r->prog.enabled = images->count > 1 && isatty(STDERR_FILENO);
    r->prog.total = images->count;
    r->prog.t0 = hadm_now();
    detect_printer_begin(&r->printer, stdout, r->args->format, as_array);
    for (int i = 0; i < images->count; i++) {
        progress_show(&r->prog);
        failed |= run_image(r, images->paths[i]);
        r->prog.done++;
    }
    progress_clear(&r->prog);
    detect_printer_end(&r->printer);
    return failed;
}

/* Resolves and opens the models; returns -1 to go on, else the exit code. */
static int open_models(detect_args *a, detect_run *r)
{
    char *lpath = NULL, *gpath = NULL, msg[1024];
    int rc = modelpath_resolve(a->models_dir, a->local, a->global, &lpath, &gpath, msg, sizeof msg);
    if (rc != MODELPATH_OK) {
        cli_error("%s", msg);
        return modelpath_exit_code(rc);
    }
    int code = choose_mode(a, lpath, gpath);
    if (!code) {
        model_load jobs[2];
        int n = 0;
        if (a->mode & MODE_LOCAL)
            jobs[n++] = (model_load){.path = lpath, .variant = "HADM-L", .opt = a->open};
        if (a->mode & MODE_GLOBAL)
            jobs[n++] = (model_load){.path = gpath, .variant = "HADM-G", .opt = a->open};
        code = load_models(jobs, n) ? 1 : -1;
        for (int i = 0; i < n; i++) {
            if (jobs[i].model && !strcmp(jobs[i].variant, "HADM-L"))
                r->local = jobs[i].model;
            else if (jobs[i].model)
                r->global = jobs[i].model;
        }
    }
    free(lpath);
    free(gpath);
    return code;
}

int cmd_detect(int argc, char **argv)
{
    detect_args a;
    int code = parse_args(argc, argv, &a);
    detect_run r;
    memset(&r, 0, sizeof r);
    r.args = &a;
    path_list images = {0};
    hadm_error err = {0};
    if (code < 0 && a.annotate_dir && annotator_init(&r.annot, a.annotate_dir, a.annotate_format, &err)) {
        cli_error("%s", err.msg);
        code = 1;
    }
    if (code < 0) {
        int empty = collect_inputs(&a, &images);
        if (empty < 0) {
            cli_error("out of memory");
            code = 1;
        } else if (images.count == 0) {
            code = 1;
        } else {
            code = open_models(&a, &r);
            if (code < 0) {
                int single_file = a.ninputs == 1 && images.count == 1 && !strcmp(images.paths[0], a.inputs[0]);
                code = run_all(&r, &images, !single_file) || empty ? 1 : 0;
            }
        }
    }
    hadm_model_close(r.local);
    hadm_model_close(r.global);
    annotator_free(&r.annot);
    list_free(&images);
    free(a.inputs);
    return code;
}
