/* hadm doctor [--json] [--quick] [--models DIR | --local F --global F]
 *
 * What the original setup and troubleshooting guide asked users to check by
 * hand, measured: each check prints ok / warn / fail and, when not ok, a
 * one-line fix. Exit code 0 when nothing fails. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "cli/doctor.h"
#include "cli/modelcache.h"
#include "hadm.h"

doctor_check *doctor_add(doctor_report *r, const char *name, check_status status, const char *fix,
                         const char *fmt, ...)
{
    if (r->n == r->cap) {
        int cap = r->cap ? r->cap * 2 : 16;
        doctor_check *items = realloc(r->items, (size_t)cap * sizeof *items);
        if (!items)
            return NULL;
        r->items = items;
        r->cap = cap;
    }
    doctor_check *c = &r->items[r->n++];
    memset(c, 0, sizeof *c);
    snprintf(c->name, sizeof c->name, "%s", name);
    c->status = status;
    snprintf(c->fix, sizeof c->fix, "%s", fix && status != CHECK_OK ? fix : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->detail, sizeof c->detail, fmt, ap);
    va_end(ap);
    return c;
}

static const char *STATUS[] = {"ok", "warn", "fail"};

static int is_file(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

char *doctor_find_model(const char *dir, const char *name, const char *prefix)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (is_file(path))
        return strdup(path);
    DIR *d = opendir(dir);
    char best[256] = "";
    for (struct dirent *e; d && (e = readdir(d));) {
        size_t n = strlen(e->d_name);
        if (!strncmp(e->d_name, prefix, strlen(prefix)) && n > 4 && !strcasecmp(e->d_name + n - 4, ".pth") &&
            strcmp(e->d_name, best) > 0 && n < sizeof best)
            snprintf(best, sizeof best, "%s", e->d_name);
    }
    if (d)
        closedir(d);
    if (best[0])
        snprintf(path, sizeof path, "%s/%s", dir, best);
    return strdup(path);
}

static void print_text(const doctor_report *r)
{
    printf("hadm doctor (hadm %s)\n", HADM_VERSION);
    int count[3] = {0};
    for (int i = 0; i < r->n; i++) {
        const doctor_check *c = &r->items[i];
        count[c->status]++;
        printf("  %-5s %-12s %s\n", STATUS[c->status], c->name, c->detail);
        if (c->fix[0])
            printf("  %-5s %-12s fix: %s\n", "", "", c->fix);
    }
    printf("%d ok, %d warning%s, %d failure%s\n", count[0], count[1], count[1] == 1 ? "" : "s", count[2],
           count[2] == 1 ? "" : "s");
}

static int print_json(const doctor_report *r)
{
    cJSON *root = cJSON_CreateObject(), *list = cJSON_AddArrayToObject(root, "checks");
    int count[3] = {0};
    cJSON_AddStringToObject(root, "hadm_version", HADM_VERSION);
    for (int i = 0; i < r->n; i++) {
        const doctor_check *c = &r->items[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", c->name);
        cJSON_AddStringToObject(o, "status", STATUS[c->status]);
        cJSON_AddStringToObject(o, "detail", c->detail);
        if (c->fix[0])
            cJSON_AddStringToObject(o, "fix", c->fix);
        cJSON_AddItemToArray(list, o);
        count[c->status]++;
    }
    cJSON_AddNumberToObject(root, "ok", count[0]);
    cJSON_AddNumberToObject(root, "warn", count[1]);
    cJSON_AddNumberToObject(root, "fail", count[2]);
    char *text = cJSON_Print(root);
    int ok = text != NULL;
    if (text)
        printf("%s\n", text);
    free(text);
    cJSON_Delete(root);
    return ok;
}

/* A GPU with no CUDA backend in this build deserves a word. */
static void check_backend(doctor_report *r)
{
    hadm_open_options opt = {.device = HADM_DEVICE_CUDA};
    hadm_model *m = NULL;
    hadm_error err = {0};
    int cuda = hadm_model_open("/nonexistent/probe.safetensors", &opt, &m, &err) != HADM_ERR_UNSUPPORTED;
    hadm_model_close(m);
    doctor_check *gpu = NULL;
    for (int i = 0; i < r->n; i++)
        if (!strcmp(r->items[i].name, "gpu"))
            gpu = &r->items[i];
    if (gpu && !cuda && strstr(gpu->detail, " GPU")) {
        gpu->status = CHECK_WARN;
        snprintf(gpu->fix, sizeof gpu->fix, "this hadm has no CUDA backend: rebuild with -DHADM_CUDA=ON to use the GPU");
    }
}

static void doctor_usage(FILE *out)
{
    fprintf(out,
            "usage: hadm doctor [--json] [--quick] [--models DIR | --local F --global F]\n\n"
            "Checks this machine and the model files: CPU features and threads, memory,\n"
            "NVIDIA GPU, environment variables, each model (present, valid, variant,\n"
            "dtype, size, SHA-256, cold read speed) and the filesystems they live on.\n"
            "--quick skips the SHA-256 and read-speed pass over the model files.\n"
            "Exit code 0 unless a check fails.\n");
}

int cmd_doctor(int argc, char **argv)
{
    int json = 0, quick = 0;
    const char *models = NULL, *local = NULL, *global = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            doctor_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else if (!strcmp(a, "--quick")) {
            quick = 1;
        } else if (!strcmp(a, "--models") && v) {
            models = argv[++i];
        } else if (!strcmp(a, "--local") && v) {
            local = argv[++i];
        } else if (!strcmp(a, "--global") && v) {
            global = argv[++i];
        } else {
            cli_error("unknown or incomplete option '%s' (see hadm doctor --help)", a);
            return 2;
        }
    }
    if (models && (local || global)) {
        cli_error("--models and --local/--global exclude each other");
        return 2;
    }
    char *paths[2] = {NULL, NULL};
    const char *dir = models ? models : getenv("HADM_MODELS") && *getenv("HADM_MODELS") ? getenv("HADM_MODELS") : "./models";
    if (local || global) {
        paths[0] = local ? strdup(local) : NULL;
        paths[1] = global ? strdup(global) : NULL;
    } else {
        paths[0] = doctor_find_model(dir, "hadm-l.safetensors", "HADM-L_");
        paths[1] = doctor_find_model(dir, "hadm-g.safetensors", "HADM-G_");
    }
    doctor_report r = {0};
    doctor_check_cpu(&r);
    doctor_check_gpu(&r);
    check_backend(&r);
    doctor_check_env(&r);
    uint64_t need = 0, convert_need = 0;
    const char *labels[2] = {"model-l", "model-g"};
    for (int i = 0; i < 2; i++) {
        if (!paths[i] && (local || global))
            continue;   /* only the named model is wanted */
        uint64_t w = doctor_check_model(&r, labels[i], paths[i], !quick);
        need += w;
        if (w && modelcache_is_checkpoint(paths[i]))
            convert_need += w;
        if (w)
            doctor_check_filesystem(&r, i ? "storage-g" : "storage-l", paths[i], 0);
    }
    struct stat dst;
    if (!local && !global && !need && stat(dir, &dst) == 0)
        doctor_check_filesystem(&r, "storage", dir, 0);   /* where the models are expected */
    doctor_check_memory(&r, need);
    char cached[4096], msg[256];
    if (paths[0] && modelcache_is_checkpoint(paths[0]) && !modelcache_path(paths[0], cached, sizeof cached, msg, sizeof msg)) {
        char *slash = strrchr(cached, '/');
        *slash = 0;
        struct stat st;
        while (stat(cached, &st) != 0 && (slash = strrchr(cached, '/')) && slash != cached)
            *slash = 0;   /* the nearest existing parent tells the filesystem */
        doctor_check_filesystem(&r, "cache", cached, convert_need);
    }
    int fails = 0;
    for (int i = 0; i < r.n; i++)
        fails += r.items[i].status == CHECK_FAIL;
    if (json) {
        if (!print_json(&r))
            fails++;
    } else {
        print_text(&r);
    }
    free(r.items);
    free(paths[0]);
    free(paths[1]);
    return fails ? 1 : 0;
}
