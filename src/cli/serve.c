/* hadm serve: the HTTP inference server (DESIGN.md "HTTP API", "Start-up
 * modes"). Parses flags, finds the model files (or falls back to the built-in
 * demo models), starts the registry and the scheduler, then serves until
 * SIGTERM/SIGINT. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "engine/device_plan.h"
#include "hadm.h"
#include "sched/log.h"
#include "sched/queue.h"
#include "sched/registry.h"
#include "server/server.h"

#define MAX_KEYS 16
#define MAX_HOSTS 16

static const char USAGE[] =
    "usage: hadm serve [--host H] [--port P] [--models DIR | --local F --global F]\n"
    "                  [--lazy | --preload] [--channel-order rgb|bgr]\n"
    "                  [--max-batch N] [--batch-timeout-ms T] [--max-queue N]\n"
    "                  [--api-key K | --api-key-file F] [--device cpu|cuda[:i]] [--threads N]\n"
    "                  [--gpu-memory-fraction F]\n"
    "\n"
    "Serves HADM-L/HADM-G over HTTP (HADM-Server compatible routes, KServe v2, /metrics).\n"
    "\n"
    "  --host H              address to bind (default 127.0.0.1; 0.0.0.0 for all)\n"
    "  --port P              port (default 8080; 0 = any free port, logged)\n"
    "  --models DIR          directory with hadm-l.safetensors and hadm-g.safetensors\n"
    "                        (default $HADM_MODELS, then ./models; none found = demo models)\n"
    "  --local F, --global F model files named directly (either or both)\n"
    "  --lazy                load a model on the first request that needs it\n"
    "  --preload             load both models before listening (exit 1 if one fails)\n"
    "                        (default: listen at once, load both in the background)\n"
    "  --channel-order O     rgb (default, as trained) or bgr (as the authors' demo)\n"
    "  --max-batch N         images per engine batch (default 4, at most 64)\n"
    "  --batch-timeout-ms T  how long a batch waits to fill (default 5)\n"
    "  --max-queue N         jobs waiting per model before 503 (default 64)\n"
    "  --api-key K           require this key (repeatable; also $HADM_API_KEY)\n"
    "  --api-key-file F      keys from a file, one per line\n"
    "  --device D            cpu (default) or cuda[:i]\n"
    "  --gpu-memory-fraction F  share of the GPU's memory both models may use, in (0, 1]\n"
    "                        (default 0.95); a model that does not fit fails to load\n"
    "  --precision P         auto (default: follow the model files), f32, bf16 or int8\n"
    "  --threads N           threads per inference (default: all cores, or half each\n"
    "                        when there are enough cores to run both models at once)\n"
    "  --timeout-ms N        deadline of a detect request, 504 beyond (default 120000)\n"
    "  --max-body-mb N       request body limit in MiB, 413 beyond (default 50)\n"
    "  --max-pixels N        image size limit read from the header, 422 beyond\n"
    "                        (default 100000000)\n"
    "  --max-batch-images N  images in one /detect/batch request (default 64)\n"
    "  --min-score S         drop detections scoring below S (default 0: none)\n"
    "  --allow-truncated     decode JPEGs whose data ends early (rest black), as the\n"
    "                        original reader does; by default they are a 400\n"
    "  --warmup              run one image through each model after loading\n"
    "  --cors-origin O       send Access-Control-Allow-Origin: O (default: no CORS)\n"
    "  --url-allow HOST      enable /api/v1/detect-url for images on HOST (repeatable;\n"
    "                        exact host names; http/https only, no redirects). Private,\n"
    "                        loopback and link-local addresses are fetched only when\n"
    "                        listed literally, e.g. --url-allow 127.0.0.1\n"
    "  --http-threads N      HTTP I/O threads (default 2)\n"
    "  --port-file F         write the bound port to F once listening\n"
    "  --idle-timeout-s N    close a connection silent for N s (default 60); a request\n"
    "                        body must also arrive within --timeout-ms\n";

typedef struct {
    server_config srv;
    const char *models_dir, *local, *global, *key_file;
    const char *keys[MAX_KEYS], *hosts[MAX_HOSTS];
    char key_store[MAX_KEYS][256];
    int n_keys, n_hosts, preload, warmup, threads;
    hadm_open_options open;
    sched_config sch;
} serve_opts;

static int parse_long(const char *flag, const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = s ? strtol(s, &end, 10) : 0;
    if (!s || !*s || *end || errno || v < lo || v > hi) {
        cli_error("%s needs a whole number in %ld..%ld, got '%s'", flag, lo, hi, s ? s : "");
        return -1;
    }
    *out = v;
    return 0;
}

static int add_key(serve_opts *o, const char *k)
{
    size_t n = strlen(k);
    while (n && (k[n - 1] == '\n' || k[n - 1] == '\r' || k[n - 1] == ' '))
        n--;
    if (n == 0)
        return 0;
    if (o->n_keys >= MAX_KEYS || n >= sizeof o->key_store[0]) {
        cli_error("too many API keys (at most %d) or a key over 255 characters", MAX_KEYS);
        return -1;
    }
    memcpy(o->key_store[o->n_keys], k, n);
    o->key_store[o->n_keys][n] = '\0';
    o->keys[o->n_keys] = o->key_store[o->n_keys];
    o->n_keys++;
    return 0;
}

static int read_key_file(serve_opts *o, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        cli_error("--api-key-file %s: %s", path, strerror(errno));
        return -1;
    }
    char line[512];
    int rc = 0;
    while (!rc && fgets(line, sizeof line, f))
        if (line[0] != '#')
            rc = add_key(o, line);
    fclose(f);
    return rc;
}

static int parse_device(serve_opts *o, const char *s)
{
    hadm_error err = {0};
    if (!device_parse(s, &o->open.device, &o->open.device_index, &err))
        return 0;
    cli_error("--device: %s", err.msg);
    return -1;
}

/* Returns 0 to go on, 1 for --help, 2 for a usage error. */
static int parse_args(int argc, char **argv, serve_opts *o)
{
    long v;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        int takes = 1, bad = 0;
        if (!strcmp(a, "--help") || !strcmp(a, "-h"))
            return 1;
        else if (!strcmp(a, "--lazy"))
            o->sch.lazy = o->srv.lazy = 1, takes = 0;
        else if (!strcmp(a, "--preload"))
            o->preload = 1, takes = 0;
        else if (!strcmp(a, "--allow-truncated"))
            o->sch.allow_truncated = 1, takes = 0;
        else if (!strcmp(a, "--warmup"))
            o->warmup = 1, takes = 0;
        else if (!val) {
            cli_error("%s needs a value (see hadm serve --help)", a);
            return 2;
        } else if (!strcmp(a, "--host"))
            o->srv.host = val;
        else if (!strcmp(a, "--port"))
            bad = parse_long(a, val, 0, 65535, &v), o->srv.port = (int)v;
        else if (!strcmp(a, "--models"))
            o->models_dir = val;
        else if (!strcmp(a, "--local"))
            o->local = val;
        else if (!strcmp(a, "--global"))
            o->global = val;
        else if (!strcmp(a, "--channel-order")) {
            bad = strcmp(val, "rgb") && strcmp(val, "bgr");
            o->sch.detect.channel_order = !strcmp(val, "bgr") ? HADM_BGR : HADM_RGB;
            if (bad)
                cli_error("--channel-order must be rgb or bgr");
        } else if (!strcmp(a, "--max-batch"))
            bad = parse_long(a, val, 1, SCHED_BATCH_MAX, &v), o->sch.max_batch = (int)v;
        else if (!strcmp(a, "--batch-timeout-ms"))
            bad = parse_long(a, val, 0, 60000, &v), o->sch.batch_timeout_ms = (int)v;
        else if (!strcmp(a, "--max-queue"))
            bad = parse_long(a, val, 1, 1000000, &v), o->sch.max_queue = (int)v;
        else if (!strcmp(a, "--api-key"))
            bad = add_key(o, val);
        else if (!strcmp(a, "--api-key-file"))
            o->key_file = val;
        else if (!strcmp(a, "--device"))
            bad = parse_device(o, val);
        else if (!strcmp(a, "--gpu-memory-fraction")) {
            hadm_error err = {0};
            if ((bad = device_parse_fraction(val, &o->open.gpu_memory_fraction, &err) != 0))
                cli_error("%s", err.msg);
        }
        else if (!strcmp(a, "--precision")) {
            if ((bad = hadm_precision_parse(val, &o->open.precision) != 0))
                cli_error("--precision must be auto, f32, bf16 or int8");
        }
        else if (!strcmp(a, "--threads"))
            bad = parse_long(a, val, 1, 1024, &v), o->threads = (int)v;
        else if (!strcmp(a, "--timeout-ms"))
            bad = parse_long(a, val, 1, 24L * 3600 * 1000, &v), o->srv.request_timeout_ms = (int)v;
        else if (!strcmp(a, "--max-body-mb"))
            bad = parse_long(a, val, 1, 4096, &v), o->srv.max_body = (size_t)v << 20;
        else if (!strcmp(a, "--max-pixels"))
            bad = parse_long(a, val, 1, 1L << 40, &v), o->srv.max_pixels = o->sch.max_pixels = v;
        else if (!strcmp(a, "--max-batch-images"))
            bad = parse_long(a, val, 1, SCHED_BATCH_MAX, &v), o->srv.max_batch_images = (int)v;
        else if (!strcmp(a, "--min-score")) {
            char *end;
            o->sch.detect.min_score = strtof(val, &end);
            if ((bad = *end || o->sch.detect.min_score < 0 || o->sch.detect.min_score > 1))
                cli_error("--min-score must be a number in 0..1");
        } else if (!strcmp(a, "--cors-origin"))
            o->srv.cors_origin = val;
        else if (!strcmp(a, "--url-allow")) {
            if ((bad = o->n_hosts >= MAX_HOSTS))
                cli_error("at most %d --url-allow hosts", MAX_HOSTS);
            else
                o->hosts[o->n_hosts++] = val;
        } else if (!strcmp(a, "--http-threads"))
            bad = parse_long(a, val, 1, 64, &v), o->srv.http_threads = (int)v;
        else if (!strcmp(a, "--port-file"))
            o->srv.port_file = val;
        else if (!strcmp(a, "--idle-timeout-s"))
            bad = parse_long(a, val, 1, 3600, &v), o->srv.idle_timeout_s = (int)v;
        else {
            cli_error("unknown option '%s' (see hadm serve --help)", a);
            return 2;
        }
        if (bad)
            return 2;
        i += takes;
    }
    if (o->sch.lazy && o->preload) {
        cli_error("--lazy and --preload exclude each other");
        return 2;
    }
    if (o->models_dir && (o->local || o->global)) {
        cli_error("use --models DIR or --local/--global, not both");
        return 2;
    }
    return 0;
}

static void defaults(serve_opts *o)
{
    memset(o, 0, sizeof *o);
    o->srv.host = "127.0.0.1";
    o->srv.port = 8080;
    o->srv.http_threads = 2;
    o->srv.max_body = (size_t)50 << 20;
    o->srv.max_pixels = o->sch.max_pixels = HADM_DEFAULT_MAX_PIXELS;
    o->srv.request_timeout_ms = 120000;
    o->srv.idle_timeout_s = 60;
    o->srv.max_batch_images = SCHED_BATCH_MAX;
    o->sch.max_batch = 4;
    o->sch.batch_timeout_ms = 5;
    o->sch.max_queue = 64;
}

static hadm_status build_demo(void *user, char variant, const hadm_open_options *opt, hadm_model **out,
                              hadm_error *err)
{
    (void)user;
    return hadm_model_open_demo(variant, variant == 'l' ? 1 : 2, opt, out, err);
}

static int readable(const char *path) { return access(path, R_OK) == 0; }

/* Resolves the model files from the flags or a models directory; with none
 * found (and no --models), *demo is set. Returns the number of models. */
static int find_models(serve_opts *o, char paths[REG_MODELS][4096], int *demo)
{
    const char *files[REG_MODELS] = {o->local, o->global};
    *demo = 0;
    if (!o->local && !o->global) {
        const char *env = getenv("HADM_MODELS");
        const char *dir = o->models_dir ? o->models_dir : env && *env ? env : "./models";
        static const char *NAMES[REG_MODELS] = {"hadm-l.safetensors", "hadm-g.safetensors"};
        for (int i = 0; i < REG_MODELS; i++) {
            snprintf(paths[i], 4096, "%s/%s", dir, NAMES[i]);
            files[i] = readable(paths[i]) ? paths[i] : NULL;
        }
        if (!files[REG_L] && !files[REG_G] && o->models_dir) {
            cli_error("--models %s: no hadm-l.safetensors or hadm-g.safetensors there "
                      "(convert .pth checkpoints with `hadm convert`)", dir);
            return -1;
        }
        if (!files[REG_L] && !files[REG_G]) {
            *demo = 1;
            return REG_MODELS;
        }
    }
    int n = 0;
    for (int i = 0; i < REG_MODELS; i++) {
        if (files[i] && !readable(files[i])) {
            cli_error("%s: %s", files[i], strerror(errno));
            return -1;
        }
        if (files[i] != paths[i])
            snprintf(paths[i], 4096, "%s", files[i] ? files[i] : "");
        else if (!files[i])
            paths[i][0] = '\0';
        n += files[i] != NULL;
    }
    return n;
}

static void configure_models(registry *reg, char paths[REG_MODELS][4096], int demo)
{
    if (demo) {
        fprintf(stderr, "hadm: WARNING: no model files found (--models, $HADM_MODELS, ./models).\n"
                        "hadm: WARNING: serving the built-in DEMO models: tiny, random weights.\n"
                        "hadm: WARNING: their detections MEAN NOTHING. Give real models with --models DIR.\n");
        log_line("warn", "demo_models", "\"detail\":\"no model files found; detections mean nothing\"");
    }
    for (int i = 0; i < REG_MODELS; i++) {
        model_source src = {paths[i], NULL, NULL, paths[i]};
        if (demo) {
            src = (model_source){NULL, build_demo, NULL,
                                 i == REG_L ? "built-in demo HADM-L (random weights)"
                                            : "built-in demo HADM-G (random weights)"};
        } else if (!paths[i][0]) {
            continue;
        }
        registry_configure(reg, i, &src);
    }
}

/* Both models at once only when each can have its own cores. */
static void plan_threads(serve_opts *o, int n_models)
{
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (cores < 1)
        cores = 1;
    if (o->threads) {
        o->open.threads = o->threads;
        o->sch.concurrent = n_models < 2 || 2L * o->threads <= cores;
    } else if (n_models >= 2 && cores >= 4) {
        o->open.threads = (int)(cores / 2);
        o->sch.concurrent = 1;
    } else {
        o->open.threads = (int)cores;
        o->sch.concurrent = n_models < 2;
    }
}

static int load_delay_ms(void)
{
    const char *s = getenv("HADM_TEST_LOAD_DELAY_MS");
    long v = s ? strtol(s, NULL, 10) : 0;
    return v > 0 && v < 600000 ? (int)v : 0;
}

static int start_loads(serve_opts *o, registry *reg)
{
    if (o->sch.lazy)
        return 0;
    for (int i = 0; i < REG_MODELS; i++)
        if (registry_state(reg, i) == MODEL_UNLOADED)
            registry_load(reg, i, 0, NULL); /* in parallel, in the background */
    if (!o->preload)
        return 0;
    for (int i = 0; i < REG_MODELS; i++) {
        hadm_error err = {0};
        if (registry_state(reg, i) != MODEL_UNCONFIGURED && registry_load(reg, i, 1, &err)) {
            cli_error("%s: %s", registry_variant(i), err.msg);
            return -1;
        }
    }
    return 0;
}

int cmd_serve(int argc, char **argv)
{
    serve_opts o;
    defaults(&o);
    int rc = parse_args(argc, argv, &o);
    if (rc == 1) {
        fputs(USAGE, stdout);
        return 0;
    }
    if (rc)
        return 2;
    const char *env_key = getenv("HADM_API_KEY");
    if ((env_key && add_key(&o, env_key)) || (o.key_file && read_key_file(&o, o.key_file)))
        return 2;
    o.srv.api_keys = o.keys;
    o.srv.n_api_keys = o.n_keys;
    o.srv.url_allow = o.hosts;
    o.srv.n_url_allow = o.n_hosts;

    /* Signals go to the main thread only: block them before any thread starts. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    static char paths[REG_MODELS][4096];
    int demo = 0, n_models = find_models(&o, paths, &demo);
    if (n_models < 0)
        return 2;
    plan_threads(&o, n_models);
    registry_config rc_cfg = {.open = o.open, .warmup = o.warmup, .load_delay_ms = load_delay_ms()};
    registry *reg = registry_new(&rc_cfg);
    if (!reg) {
        cli_error("out of memory");
        return 1;
    }
    configure_models(reg, paths, demo);
    hadm_error err = {0};
    sched *sch = sched_new(&o.sch, reg, &err);
    if (!sch) {
        cli_error("%s", err.msg);
        registry_free(reg);
        return 1;
    }
    log_line("info", "starting",
             "\"version\":\"%s\",\"mode\":\"%s\",\"threads_per_model\":%d,\"models_concurrent\":%s,"
             "\"max_batch\":%d,\"batch_timeout_ms\":%d,\"max_queue\":%d,\"auth\":%s",
             HADM_VERSION, o.sch.lazy ? "lazy" : o.preload ? "preload" : "background", o.open.threads,
             o.sch.concurrent ? "true" : "false", o.sch.max_batch, o.sch.batch_timeout_ms, o.sch.max_queue,
             o.n_keys ? "true" : "false");
    rc = start_loads(&o, reg) ? 1 : server_run(&o.srv, reg, sch);
    sched_free(sch);
    registry_free(reg);
    return rc;
}
