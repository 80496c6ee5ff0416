/* The route table and the operational routes: web page, health, readiness,
 * model status and control, diagnostics, metrics and the OpenAPI document. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/cuda_hooks.h"
#include "server/encode.h"
#include "server/routes.h"
#include "util/timer.h"

/* Order matters only for readability; paths are unique per method. */
const route_def ROUTES[] = {
    {"GET", "/", 1, route_web_asset, route_no_finish},
    {"GET", "/console.css", 1, route_web_asset, route_no_finish},
    {"GET", "/console.js", 1, route_web_asset, route_no_finish},
    {"GET", "/health", 0, route_health, route_no_finish},
    {"GET", "/ready", 0, route_ready, route_no_finish},
    {"GET", "/models/status", 1, route_models_status, route_no_finish},
    {"POST", "/api/control/{action}", 1, route_control, route_no_finish},
    {"GET", "/api/diagnostics", 1, route_diagnostics, route_no_finish},
    {"GET", "/metrics", 1, route_metrics, route_no_finish},
    {"GET", "/openapi.json", 1, route_openapi, route_no_finish},
    {"POST", "/api/v1/detect", 1, route_detect_start, route_detect_finish},
    {"POST", "/api/detect", 1, route_detect_start, route_detect_finish},
    {"POST", "/api/v1/detect-base64", 1, route_detect_base64_start, route_detect_finish},
    {"POST", "/api/v1/detect-url", 1, route_detect_url_start, route_detect_finish},
    {"POST", "/detect", 1, route_detect_start, route_detect_finish},
    {"POST", "/detect/batch", 1, route_detect_batch_start, route_detect_finish},
    {"GET", "/v2/health/live", 0, route_v2_live, route_no_finish},
    {"GET", "/v2/health/ready", 0, route_v2_ready, route_no_finish},
    {"GET", "/v2", 1, route_v2_server, route_no_finish},
    {"GET", "/v2/models/{name}", 1, route_v2_model, route_no_finish},
    {"GET", "/v2/models/{name}/ready", 1, route_v2_model_ready, route_no_finish},
    {"POST", "/v2/models/{name}/infer", 1, route_v2_infer_start, route_v2_infer_finish},
};
const int ROUTE_COUNT = (int)(sizeof ROUTES / sizeof ROUTES[0]);

void route_no_finish(req_ctx *c) { http_error(c, 500, "internal: route has no asynchronous part"); }

int route_openapi(req_ctx *c)
{
    http_respond_static(c, 200, "application/json", OPENAPI_JSON);
    return ROUTE_DONE;
}

int server_is_ready(server *srv, char *why, size_t cap)
{
    why[0] = '\0';
    for (int i = 0; i < REG_MODELS; i++) {
        model_state st = registry_state(srv->reg, i);
        int ok = st == MODEL_UNCONFIGURED || st == MODEL_READY ||
                 (srv->cfg.lazy && (st == MODEL_UNLOADED || st == MODEL_LOADING));
        if (!ok) {
            registry_unavailable_reason(srv->reg, i, why, cap);
            return 0;
        }
    }
    return 1;
}

static cJSON *states_json(server *srv)
{
    cJSON *o = cJSON_CreateObject();
    for (int i = 0; i < REG_MODELS; i++)
        cJSON_AddStringToObject(o, registry_name(i), model_state_name(registry_state(srv->reg, i)));
    return o;
}

int route_health(req_ctx *c)
{
    sched_stats st;
    sched_get_stats(c->srv->sch, &st);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "status", "ok");
    cJSON_AddStringToObject(o, "version", HADM_VERSION);
    cJSON_AddNumberToObject(o, "uptime_s", hadm_now() - c->srv->started);
    cJSON_AddItemToObject(o, "models", states_json(c->srv));
    cJSON_AddNumberToObject(o, "queue_depth", st.queued[REG_L] + st.queued[REG_G]);
    http_json(c, 200, o);
    return ROUTE_DONE;
}

int route_ready(req_ctx *c)
{
    char why[600];
    int ok = server_is_ready(c->srv, why, sizeof why);
    cJSON *o = ok ? cJSON_CreateObject() : json_error_object(why);
    cJSON_AddBoolToObject(o, "ready", ok);
    cJSON_AddItemToObject(o, "models", states_json(c->srv));
    http_json(c, ok ? 200 : 503, o);
    return ROUTE_DONE;
}

static cJSON *model_json(server *srv, int idx)
{
    model_info mi;
    registry_info(srv->reg, idx, &mi);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", registry_name(idx));
    cJSON_AddStringToObject(o, "variant", registry_variant(idx));
    cJSON_AddStringToObject(o, "state", model_state_name(mi.state));
    cJSON_AddStringToObject(o, "source", mi.source);
    if (mi.error[0])
        cJSON_AddStringToObject(o, "error", mi.error);
    else
        cJSON_AddNullToObject(o, "error");
    cJSON_AddNumberToObject(o, "load_seconds", mi.load_seconds);
    cJSON_AddNumberToObject(o, "open_seconds", mi.open_seconds);
    cJSON_AddNumberToObject(o, "warmup_seconds", mi.warmup_seconds);
    cJSON_AddNumberToObject(o, "loading_for_seconds", mi.loading_for);
    cJSON_AddNumberToObject(o, "params", (double)mi.params);
    cJSON_AddNumberToObject(o, "num_classes", mi.num_classes);
    cJSON_AddNumberToObject(o, "input_size", mi.input_size);
    cJSON_AddNumberToObject(o, "loads_ok", mi.loads_ok);
    cJSON_AddNumberToObject(o, "loads_failed", mi.loads_failed);
    cJSON_AddNumberToObject(o, "unloads", mi.unloads);
    cJSON_AddNumberToObject(o, "in_use", mi.refs);
    return o;
}

static cJSON *models_json(server *srv)
{
    cJSON *o = cJSON_CreateObject();
    for (int i = 0; i < REG_MODELS; i++)
        cJSON_AddItemToObject(o, registry_name(i), model_json(srv, i));
    return o;
}

int route_models_status(req_ctx *c)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "models", models_json(c->srv));
    cJSON_AddBoolToObject(o, "lazy", c->srv->cfg.lazy);
    http_json(c, 200, o);
    return ROUTE_DONE;
}

int route_control(req_ctx *c)
{
    static const char *ACTIONS[] = {"load_l", "unload_l", "load_g", "unload_g"};
    int a = -1;
    for (int i = 0; i < 4; i++)
        if (!strcmp(c->arg, ACTIONS[i]))
            a = i;
    if (a < 0) {
        http_error(c, 404, "unknown control action '%s' (load_l, unload_l, load_g, unload_g)", c->arg);
        return ROUTE_DONE;
    }
    int idx = a < 2 ? REG_L : REG_G, load = a % 2 == 0;
    model_state before = registry_state(c->srv->reg, idx);
    hadm_error err = {0};
    hadm_status s = load ? registry_load(c->srv->reg, idx, 0, &err) : registry_unload(c->srv->reg, idx, &err);
    if (s) {
        http_error(c, 400, "%s", err.msg);
        return ROUTE_DONE;
    }
    model_state after = registry_state(c->srv->reg, idx);
    char msg[200];
    const char *v = registry_variant(idx);
    if (load)
        snprintf(msg, sizeof msg, before == MODEL_READY ? "%s is already loaded"
                                  : before == MODEL_LOADING ? "%s is already loading"
                                                             : "%s loading started",
                 v);
    else
        snprintf(msg, sizeof msg, after == MODEL_LOADING ? "%s will be unloaded when its load finishes"
                                                         : "%s unloaded",
                 v);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddBoolToObject(o, "success", 1);
    cJSON_AddStringToObject(o, "message", msg);
    cJSON_AddStringToObject(o, "model", registry_name(idx));
    cJSON_AddStringToObject(o, "state", model_state_name(after));
    http_json(c, 200, o);
    return ROUTE_DONE;
}

/* "key: value" lines of a /proc file. */
static int proc_value(const char *path, const char *key, char *out, size_t cap)
{
    FILE *f = fopen(path, "r");
    char line[512];
    size_t klen = strlen(key);
    int found = 0;
    while (f && !found && fgets(line, sizeof line, f)) {
        if (strncmp(line, key, klen) || (line[klen] != ':' && line[klen] != ' ' && line[klen] != '\t'))
            continue;
        const char *v = strchr(line, ':');
        v = v ? v + 1 : line + klen;
        while (*v == ' ' || *v == '\t')
            v++;
        snprintf(out, cap, "%s", v);
        out[strcspn(out, "\n")] = '\0';
        found = 1;
    }
    if (f)
        fclose(f);
    return found;
}

static double meminfo_bytes(const char *key)
{
    char v[64];
    return proc_value("/proc/meminfo", key, v, sizeof v) ? atof(v) * 1024.0 : 0;
}

/* The GPUs the models run on (engine/cuda), with their memory. */
static void gpu_json(cJSON *gpu)
{
    cuda_gpu_status g[8];
    int n = cuda_gpu_status_list(g, 8);
    cJSON_AddBoolToObject(gpu, "available", n > 0);
    cJSON_AddBoolToObject(gpu, "cuda_backend", n >= 0);
    if (n <= 0) {
        cJSON_AddStringToObject(gpu, "detail", n < 0 ? "this build has no CUDA backend (rebuild with -DHADM_CUDA=ON)"
                                                     : "no model runs on a GPU");
        return;
    }
    cJSON *devs = cJSON_AddArrayToObject(gpu, "devices");
    for (int i = 0; i < n; i++) {
        cJSON *d = cJSON_CreateObject();
        cJSON_AddNumberToObject(d, "index", g[i].index);
        cJSON_AddStringToObject(d, "name", g[i].name);
        cJSON_AddNumberToObject(d, "total_bytes", (double)g[i].total_bytes);
        cJSON_AddNumberToObject(d, "free_bytes", (double)g[i].free_bytes);
        cJSON_AddNumberToObject(d, "reserved_by_models_bytes", (double)g[i].reserved_bytes);
        cJSON_AddItemToArray(devs, d);
    }
}

int route_diagnostics(req_ctx *c)
{
    server *srv = c->srv;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "version", HADM_VERSION);
    cJSON_AddNumberToObject(o, "uptime_s", hadm_now() - srv->started);
    cJSON *cpu = cJSON_AddObjectToObject(o, "cpu");
    char model[256] = "unknown";
    proc_value("/proc/cpuinfo", "model name", model, sizeof model);
    cJSON_AddStringToObject(cpu, "model", model);
    cJSON_AddNumberToObject(cpu, "cores", (double)sysconf(_SC_NPROCESSORS_ONLN));
    cJSON *mem = cJSON_AddObjectToObject(o, "memory");
    cJSON_AddNumberToObject(mem, "total_bytes", meminfo_bytes("MemTotal"));
    cJSON_AddNumberToObject(mem, "available_bytes", meminfo_bytes("MemAvailable"));
    cJSON_AddNumberToObject(mem, "process_rss_bytes", (double)process_rss_bytes());
    gpu_json(cJSON_AddObjectToObject(o, "gpu"));
    cJSON_AddItemToObject(o, "models", models_json(srv));
    sched_stats st;
    sched_get_stats(srv->sch, &st);
    const sched_config *sc = sched_get_config(srv->sch);
    cJSON *q = cJSON_AddObjectToObject(o, "queue");
    for (int i = 0; i < REG_MODELS; i++) {
        cJSON *m = cJSON_AddObjectToObject(q, registry_name(i));
        cJSON_AddNumberToObject(m, "queued", st.queued[i]);
        cJSON_AddNumberToObject(m, "running", st.running[i]);
        cJSON_AddNumberToObject(m, "images_ok", (double)st.images_ok[i]);
        cJSON_AddNumberToObject(m, "images_failed", (double)st.images_failed[i]);
    }
    cJSON_AddNumberToObject(q, "max_queue", sc->max_queue);
    cJSON_AddNumberToObject(q, "max_batch", sc->max_batch);
    cJSON_AddNumberToObject(q, "batch_timeout_ms", sc->batch_timeout_ms);
    cJSON_AddBoolToObject(q, "models_run_concurrently", sc->concurrent);
    cJSON_AddNumberToObject(q, "timeouts", (double)st.timeouts);
    cJSON_AddNumberToObject(q, "rejected_queue_full", (double)st.rejected_full);
    cJSON_AddNumberToObject(o, "requests_in_flight", __atomic_load_n(&srv->active, __ATOMIC_RELAXED));
    http_json(c, 200, o);
    return ROUTE_DONE;
}

int route_metrics(req_ctx *c)
{
    size_t len = 0;
    char *text = metrics_render(c->srv->met, c->srv, &len);
    if (!text)
        http_error(c, 503, "out of memory");
    else
        http_respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
    return ROUTE_DONE;
}
