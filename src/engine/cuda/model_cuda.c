/* A model on the GPU: the memory plan checked against the process-wide cap,
 * weights uploaded, CUDA_CONTEXTS execution contexts made and warmed up (so
 * the first request replays a graph, like every later one), and the detect
 * path: stage the batch, replay (or record) the forward, fetch detections. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/cuda/cuda_model.h"
#include "util/err.h"
#include "util/timer.h"

int cuda_backend_built(void) { return 1; }

/* Bytes each device has promised to the models of this process. */
static pthread_mutex_t reserve_lock = PTHREAD_MUTEX_INITIALIZER;
static size_t reserved[64];

static void exec_free(cuda_exec *x)
{
    if (!x)
        return;
    if (x->dev)
        cuda_dev_sync(x->dev, NULL);
    for (int b = 0; b <= CUDA_MAX_BATCH; b++)
        cuda_graph_free(x->graph[b]);
    cuda_timer_free(x->timer);
    cuda_free(x->arena);
    cuda_host_free(x->pin_in);
    cuda_host_free(x->pin_geom);
    cuda_host_free(x->pin_res);
    cuda_dev_free(x->dev);
    free(x);
}

static hadm_status exec_new(const hadm_config *cfg, int device, cuda_exec **out, hadm_error *err)
{
    cuda_exec *x = calloc(1, sizeof *x);
    if (!x)
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory");
    cuda_dims d;
    cuda_dims_of(cfg, CUDA_MAX_BATCH, &d);
    int64_t sort_n = d.max_level_anchors > d.NQ ? d.max_level_anchors : d.NQ;
    size_t temp = cuda_sort_temp_bytes(sort_n), est = cuda_sort_temp_estimate(sort_n);
    cuda_arena_layout(cfg, CUDA_MAX_BATCH, temp > est ? temp : est, &x->lay);
    size_t in_b = (size_t)CUDA_MAX_BATCH * 3 * d.S * d.S * sizeof(float);
    hadm_status s;
    if ((s = cuda_dev_new(device, CUDA_GEMM_WORKSPACE, &x->dev, err)) ||
        (s = cuda_malloc(device, x->lay.total, (void **)&x->arena, err)) ||
        (s = cuda_host_alloc(in_b, (void **)&x->pin_in, err)) ||
        (s = cuda_host_alloc(x->lay.size[AR_GEOM], (void **)&x->pin_geom, err)) ||
        (s = cuda_host_alloc(x->lay.size[AR_RESULT], (void **)&x->pin_res, err)) ||
        (s = cuda_timer_new(&x->timer, err))) {
        exec_free(x);
        return s;
    }
    *out = x;
    return HADM_OK;
}

static hadm_status record(const struct hadm_model *m, const cuda_model *cm, cuda_exec *x, int B, hadm_error *err)
{
    hadm_status s = cuda_backbone(m, cm, x, B, err);
    for (int b = 0; !s && b < B; b++)
        s = cuda_heads(m, cm, x, b, err);
    return s;
}

/* Records the forward for B images into a graph; the stream is left usable on failure. */
static hadm_status capture(const struct hadm_model *m, const cuda_model *cm, cuda_exec *x, int B, hadm_error *err)
{
    hadm_status s = cuda_capture_begin(x->dev, err);
    if (s)
        return s;
    hadm_error e2 = {0};
    s = record(m, cm, x, B, err);
    cuda_graph *g = NULL;
    hadm_status s2 = cuda_capture_end(x->dev, &g, s ? &e2 : err);
    if (s || s2) {
        cuda_graph_free(g);
        return s ? s : s2;
    }
    x->graph[B] = g;
    return HADM_OK;
}

/* Inputs already in x->pin_in / pin_geom; detections end in x->pin_res. */
static hadm_status exec_run(const struct hadm_model *m, cuda_model *cm, cuda_exec *x, int B, double *gpu_ms,
                            hadm_error *err)
{
    const cuda_dims *d = &x->lay.d;
    hadm_status s = cuda_dev_activate(x->dev, err);
    if (s)
        return s;
    cuda_timer_start(x->dev, x->timer);
    if ((s = cuda_copy_to_device(x->dev, AF(x, AR_INPUT), x->pin_in, (size_t)B * 3 * d->S * d->S * sizeof(float), err)) ||
        (s = cuda_copy_to_device(x->dev, AI(x, AR_GEOM), x->pin_geom, (size_t)B * 4 * sizeof(int), err)))
        return s;
    int replay = cm->use_graphs && x->graph[B];
    s = replay ? cuda_graph_launch(x->dev, x->graph[B], err) : record(m, cm, x, B, err);
    if (!s)
        s = cuda_copy_to_host(x->dev, x->pin_res, arena_ptr(x, AR_RESULT), (size_t)B * x->lay.result_stride, err);
    double ms = cuda_timer_stop_ms(x->dev, x->timer);
    if (!s)
        s = cuda_dev_sync(x->dev, err);
    if (s)
        return s;
    *gpu_ms = ms;
    /* the first batch of this size ran eagerly; later ones replay its graph */
    if (!replay && cm->use_graphs) {
        hadm_error ignored;
        if (capture(m, cm, x, B, &ignored))
            cm->use_graphs = 0;
    }
    return HADM_OK;
}

/* A zero image through B = 1 and B = max on every context: module loading,
 * cuBLASLt heuristics and graph capture all happen here, not on a request. */
static hadm_status warm_up(const struct hadm_model *m, cuda_model *cm, cuda_exec *x, hadm_error *err)
{
    const cuda_dims *d = &x->lay.d;
    memset(x->pin_in, 0, (size_t)CUDA_MAX_BATCH * 3 * d->S * d->S * sizeof(float));
    for (int b = 0; b < CUDA_MAX_BATCH; b++) {
        int *g = x->pin_geom + 4 * b;
        g[0] = g[2] = d->S, g[1] = g[3] = d->S;
    }
    int sizes[2] = {1, CUDA_MAX_BATCH};
    for (int i = 0; i < 2; i++) {
        double ms;
        hadm_status s = exec_run(m, cm, x, sizes[i], &ms, err);
        if (s)
            return s;
    }
    return HADM_OK;
}

static void model_free(cuda_model *cm)
{
    for (int i = 0; i < cm->n_exec; i++)
        exec_free(cm->all[i]);
    cuda_free(cm->wblock);
    pthread_mutex_destroy(&cm->lock);
    pthread_cond_destroy(&cm->ready);
    free(cm);
}

static hadm_status check_fit(const struct hadm_model *m, const hadm_open_options *opt, cuda_plan *plan,
                             hadm_error *err)
{
    int n = 0, dev = opt->device_index;
    hadm_status s = cuda_device_count(&n, err);
    if (s)
        return s;
    if (n == 0)
        return hadm_fail(err, HADM_ERR_UNSUPPORTED, "no CUDA device is visible (driver? CUDA_VISIBLE_DEVICES?)");
    if (dev < 0 || dev >= n || dev >= 64)
        return hadm_fail(err, HADM_ERR_ARG, "--device cuda:%d: only %d CUDA device%s visible", dev, n, n > 1 ? "s" : "");
    size_t free_b = 0, total_b = 0;
    char name[128];
    if ((s = cuda_device_memory(dev, &free_b, &total_b, name, sizeof name, err)))
        return s;
    cuda_plan_model(&m->cfg, CUDA_MAX_BATCH, CUDA_CONTEXTS, plan);
    float frac = opt->gpu_memory_fraction > 0 ? opt->gpu_memory_fraction : CUDA_DEFAULT_MEMORY_FRACTION;
    char what[192];
    snprintf(what, sizeof what, "%s (on %s)", m->cfg.variant, name);
    pthread_mutex_lock(&reserve_lock);
    s = cuda_plan_fit(plan, reserved[dev], total_b, free_b, frac, what, err);
    if (!s)
        reserved[dev] += plan->total;
    pthread_mutex_unlock(&reserve_lock);
    return s;
}

hadm_status cuda_model_attach(struct hadm_model *m, const hadm_open_options *opt, hadm_error *err)
{
    cuda_plan plan;
    hadm_status s = check_fit(m, opt, &plan, err);
    if (s)
        return s;
    cuda_model *cm = calloc(1, sizeof *cm);
    if (!cm) {
        pthread_mutex_lock(&reserve_lock);
        reserved[opt->device_index] -= plan.total;
        pthread_mutex_unlock(&reserve_lock);
        return hadm_fail(err, HADM_ERR_NOMEM, "out of memory");
    }
    cm->device = opt->device_index;
    cm->plan = plan;
    const char *g = getenv("HADM_CUDA_GRAPHS");
    cm->use_graphs = !(g && !strcmp(g, "0"));
    pthread_mutex_init(&cm->lock, NULL);
    pthread_cond_init(&cm->ready, NULL);
    m->cuda = cm;   /* from here cuda_model_detach undoes everything */
    if ((s = cuda_upload_weights(cm, m, err)))
        return s;
    for (int i = 0; i < CUDA_CONTEXTS; i++) {
        cuda_exec *x = NULL;
        if ((s = exec_new(&m->cfg, cm->device, &x, err)))
            return s;
        cm->all[cm->n_exec++] = x;
        x->next = cm->idle;
        cm->idle = x;
        if ((s = warm_up(m, cm, x, err)))
            return s;
    }
    return HADM_OK;
}

void cuda_model_detach(struct hadm_model *m)
{
    cuda_model *cm = m->cuda;
    if (!cm)
        return;
    pthread_mutex_lock(&reserve_lock);
    reserved[cm->device] -= cm->plan.total;
    pthread_mutex_unlock(&reserve_lock);
    model_free(cm);
    m->cuda = NULL;
}

int cuda_gpu_status_list(cuda_gpu_status *out, int max)
{
    int n = 0;
    for (int dev = 0; dev < 64 && n < max; dev++) {
        pthread_mutex_lock(&reserve_lock);
        size_t r = reserved[dev];
        pthread_mutex_unlock(&reserve_lock);
        if (!r)
            continue;
        cuda_gpu_status *g = &out[n++];
        memset(g, 0, sizeof *g);
        g->index = dev, g->reserved_bytes = r;
        if (cuda_device_memory(dev, &g->free_bytes, &g->total_bytes, g->name, sizeof g->name, NULL))
            snprintf(g->name, sizeof g->name, "unknown (CUDA error)");
    }
    return n;
}

static cuda_exec *exec_acquire(cuda_model *cm)
{
    pthread_mutex_lock(&cm->lock);
    while (!cm->idle)
        pthread_cond_wait(&cm->ready, &cm->lock);
    cuda_exec *x = cm->idle;
    cm->idle = x->next;
    pthread_mutex_unlock(&cm->lock);
    return x;
}

static void exec_release(cuda_model *cm, cuda_exec *x)
{
    pthread_mutex_lock(&cm->lock);
    x->next = cm->idle;
    cm->idle = x;
    pthread_cond_signal(&cm->ready);
    pthread_mutex_unlock(&cm->lock);
}

/* detector_postprocess on the host: the device left resized-image pixels. */
static hadm_status finish_job(const hadm_config *cfg, const unsigned char *raw, cuda_job *j,
                              const hadm_detect_options *opt)
{
    int n = *(const int *)raw;
    const float(*det)[6] = (const float(*)[6])(raw + 4 * sizeof(int));
    if (n < 0 || n > cfg->max_dets)
        return hadm_fail(&j->err, HADM_ERR_INTERNAL, "cuda: device reported %d detections", n);
    hadm_result *res = j->res;
    free(res->dets);
    if (!(res->dets = malloc((size_t)(n > 0 ? n : 1) * sizeof *res->dets)))
        return hadm_fail(&j->err, HADM_ERR_NOMEM, "out of memory (detections)");
    float sx = (float)((double)j->g.orig_w / j->g.new_w), sy = (float)((double)j->g.orig_h / j->g.new_h);
    int kept = 0;
    for (int i = 0; i < n; i++) {
        float b[4] = {det[i][0] * sx, det[i][1] * sy, det[i][2] * sx, det[i][3] * sy};
        for (int c = 0; c < 4; c++) {
            float hi = (float)(c % 2 ? j->g.orig_h : j->g.orig_w);
            b[c] = b[c] < 0.0f ? 0.0f : b[c] > hi ? hi : b[c];
        }
        int k = (int)det[i][5];
        float score = det[i][4];
        if (!(b[2] - b[0] > 0.0f && b[3] - b[1] > 0.0f) || k < 0 || k >= cfg->num_classes)
            continue;
        if (opt && opt->min_score > 0 && score < opt->min_score)
            continue;
        res->dets[kept++] = (hadm_detection){b[0], b[1], b[2], b[3], score, k, cfg->class_names[k]};
    }
    res->count = kept;
    return HADM_OK;
}

void cuda_detect_jobs(struct hadm_model *m, cuda_job *jobs, int n, const hadm_detect_options *opt)
{
    cuda_model *cm = m->cuda;
    if (n <= 0)
        return;
    if (n > CUDA_MAX_BATCH) {
        for (int i = 0; i < n; i++)
            jobs[i].st = hadm_fail(&jobs[i].err, HADM_ERR_INTERNAL, "cuda: batch of %d > %d", n, CUDA_MAX_BATCH);
        return;
    }
    cuda_exec *x = exec_acquire(cm);
    const cuda_dims *d = &x->lay.d;
    size_t per = (size_t)3 * d->S * d->S;
    for (int i = 0; i < n; i++) {
        memcpy(x->pin_in + i * per, jobs[i].chw, per * sizeof(float));
        int *g = x->pin_geom + 4 * i;
        g[0] = jobs[i].g.new_w, g[1] = jobs[i].g.new_h, g[2] = jobs[i].g.orig_w, g[3] = jobs[i].g.orig_h;
    }
    double ms = 0, gflop = cuda_forward_flops(&m->cfg, d->Rmax) * 1e-9;
    hadm_error err = {0};
    hadm_status s = exec_run(m, cm, x, n, &ms, &err);
    for (int i = 0; i < n; i++) {
        cuda_job *j = &jobs[i];
        j->st = s ? s : finish_job(&m->cfg, x->pin_res + (size_t)i * x->lay.result_stride, j, opt);
        if (s)
            j->err = err;
        /* the GPU runs the whole forward: its time is reported as the backbone's */
        j->res->timings.backbone = ms * 1e-3 / n;
        j->res->gflop = gflop;
    }
    exec_release(cm, x);
}
