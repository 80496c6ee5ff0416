/* Prometheus text exposition (hadm_ prefix): HTTP counts and latency by
 * route and status, plus scheduler and registry figures read at scrape time. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server/http.h"
#include "util/timer.h"

static const int STATUSES[] = {200, 204, 400, 401, 403, 404, 405, 413, 415, 422, 500, 501, 503, 504};
#define NSTATUS ((int)(sizeof STATUSES / sizeof STATUSES[0]) + 1) /* + "other" */
static const double LAT_BOUNDS[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                    0.25,   0.5,   1,      2.5,   5,    10,   30,    120};
#define NLAT ((int)(sizeof LAT_BOUNDS / sizeof LAT_BOUNDS[0]))

typedef struct {
    uint64_t count;
    double sum;
    uint64_t bucket[NLAT]; /* not cumulative; summed when rendered */
} series;

struct metrics {
    pthread_mutex_t lock;
    int nroutes; /* the table's routes + one for unmatched paths */
    series *s;   /* [route][status] */
    uint64_t aborted; /* atomic */
};

metrics *metrics_new(void)
{
    metrics *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->nroutes = ROUTE_COUNT + 1;
    if (!(m->s = calloc((size_t)m->nroutes * NSTATUS, sizeof *m->s))) {
        free(m);
        return NULL;
    }
    pthread_mutex_init(&m->lock, NULL);
    return m;
}

void metrics_free(metrics *m)
{
    if (!m)
        return;
    pthread_mutex_destroy(&m->lock);
    free(m->s);
    free(m);
}

static int status_slot(int status)
{
    for (int i = 0; i < NSTATUS - 1; i++)
        if (STATUSES[i] == status)
            return i;
    return NSTATUS - 1;
}

void metrics_observe(metrics *m, int route_index, int status, double seconds)
{
    int r = route_index >= 0 && route_index < ROUTE_COUNT ? route_index : ROUTE_COUNT;
    series *s = &m->s[r * NSTATUS + status_slot(status)];
    int b = 0;
    while (b < NLAT && seconds > LAT_BOUNDS[b])
        b++;
    pthread_mutex_lock(&m->lock);
    s->count++;
    s->sum += seconds;
    if (b < NLAT)
        s->bucket[b]++;
    pthread_mutex_unlock(&m->lock);
}

void metrics_aborted(metrics *m)
{
    __atomic_add_fetch(&m->aborted, 1, __ATOMIC_RELAXED);
}

int64_t process_rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long long size = 0, rss = 0;
    int ok = f && fscanf(f, "%lld %lld", &size, &rss) == 2;
    if (f)
        fclose(f);
    return ok ? (int64_t)rss * sysconf(_SC_PAGESIZE) : 0;
}

static void out(byte_buf *b, const char *fmt, ...) HADM_PRINTF(2, 3);
static void out(byte_buf *b, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n > 0)
        buf_append(b, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

static const char *route_label(int r) { return r < ROUTE_COUNT ? ROUTES[r].pattern : "unmatched"; }

static void status_label(int slot, char *buf, size_t cap)
{
    if (slot < NSTATUS - 1)
        snprintf(buf, cap, "%d", STATUSES[slot]);
    else
        snprintf(buf, cap, "other");
}

static void render_http(metrics *m, byte_buf *b)
{
    series *copy = malloc((size_t)m->nroutes * NSTATUS * sizeof *copy);
    if (!copy)
        return;
    pthread_mutex_lock(&m->lock);
    memcpy(copy, m->s, (size_t)m->nroutes * NSTATUS * sizeof *copy);
    pthread_mutex_unlock(&m->lock);
    out(b, "# HELP hadm_http_requests_total HTTP requests answered, by route and status.\n"
           "# TYPE hadm_http_requests_total counter\n");
    char st[16];
    for (int r = 0; r < m->nroutes; r++)
        for (int k = 0; k < NSTATUS; k++)
            if (copy[r * NSTATUS + k].count) {
                status_label(k, st, sizeof st);
                out(b, "hadm_http_requests_total{route=\"%s\",status=\"%s\"} %llu\n", route_label(r), st,
                    (unsigned long long)copy[r * NSTATUS + k].count);
            }
    out(b, "# HELP hadm_http_request_duration_seconds Time from request headers to answer.\n"
           "# TYPE hadm_http_request_duration_seconds histogram\n");
    for (int r = 0; r < m->nroutes; r++)
        for (int k = 0; k < NSTATUS; k++) {
            const series *s = &copy[r * NSTATUS + k];
            if (!s->count)
                continue;
            status_label(k, st, sizeof st);
            uint64_t cum = 0;
            for (int i = 0; i < NLAT; i++) {
                cum += s->bucket[i];
                out(b, "hadm_http_request_duration_seconds_bucket{route=\"%s\",status=\"%s\",le=\"%g\"} %llu\n",
                    route_label(r), st, LAT_BOUNDS[i], (unsigned long long)cum);
            }
            out(b, "hadm_http_request_duration_seconds_bucket{route=\"%s\",status=\"%s\",le=\"+Inf\"} %llu\n",
                route_label(r), st, (unsigned long long)s->count);
            out(b, "hadm_http_request_duration_seconds_sum{route=\"%s\",status=\"%s\"} %.6f\n", route_label(r),
                st, s->sum);
            out(b, "hadm_http_request_duration_seconds_count{route=\"%s\",status=\"%s\"} %llu\n",
                route_label(r), st, (unsigned long long)s->count);
        }
    free(copy);
    out(b, "# HELP hadm_http_requests_aborted_total Requests whose connection closed before the whole "
           "answer was sent (client gone, timeout, cut-off body).\n"
           "# TYPE hadm_http_requests_aborted_total counter\nhadm_http_requests_aborted_total %llu\n",
        (unsigned long long)__atomic_load_n(&m->aborted, __ATOMIC_RELAXED));
}

static void render_sched(server *srv, byte_buf *b)
{
    sched_stats st;
    sched_get_stats(srv->sch, &st);
    out(b, "# HELP hadm_queue_depth Jobs waiting per model.\n# TYPE hadm_queue_depth gauge\n");
    for (int i = 0; i < REG_MODELS; i++)
        out(b, "hadm_queue_depth{model=\"%s\"} %d\n", registry_name(i), st.queued[i]);
    out(b, "# HELP hadm_running_jobs Jobs in the engine per model.\n# TYPE hadm_running_jobs gauge\n");
    for (int i = 0; i < REG_MODELS; i++)
        out(b, "hadm_running_jobs{model=\"%s\"} %d\n", registry_name(i), st.running[i]);
    out(b, "# HELP hadm_batch_size Images per engine batch.\n# TYPE hadm_batch_size histogram\n");
    static const int BATCH_LE[] = {1, 2, 4, 8, 16, 32, 64};
    for (int i = 0; i < REG_MODELS; i++) {
        uint64_t cum = 0, total = 0;
        double sum = 0;
        for (int n = 1; n <= SCHED_BATCH_MAX; n++)
            total += st.batches[i][n], sum += (double)n * (double)st.batches[i][n];
        for (int k = 0, n = 1; k < 7; k++) {
            for (; n <= BATCH_LE[k]; n++)
                cum += st.batches[i][n];
            out(b, "hadm_batch_size_bucket{model=\"%s\",le=\"%d\"} %llu\n", registry_name(i), BATCH_LE[k],
                (unsigned long long)cum);
        }
        out(b, "hadm_batch_size_bucket{model=\"%s\",le=\"+Inf\"} %llu\n", registry_name(i), (unsigned long long)total);
        out(b, "hadm_batch_size_sum{model=\"%s\"} %.0f\nhadm_batch_size_count{model=\"%s\"} %llu\n",
            registry_name(i), sum, registry_name(i), (unsigned long long)total);
    }
    out(b, "# HELP hadm_inference_seconds Engine time per image.\n# TYPE hadm_inference_seconds histogram\n");
    for (int i = 0; i < REG_MODELS; i++) {
        for (int k = 0; k < SCHED_INFER_BUCKETS; k++)
            out(b, "hadm_inference_seconds_bucket{model=\"%s\",le=\"%g\"} %llu\n", registry_name(i),
                SCHED_INFER_BOUNDS[k], (unsigned long long)st.infer_bucket[i][k]);
        out(b, "hadm_inference_seconds_bucket{model=\"%s\",le=\"+Inf\"} %llu\n", registry_name(i),
            (unsigned long long)st.infer_count[i]);
        out(b, "hadm_inference_seconds_sum{model=\"%s\"} %.6f\nhadm_inference_seconds_count{model=\"%s\"} %llu\n",
            registry_name(i), st.infer_sum[i], registry_name(i), (unsigned long long)st.infer_count[i]);
    }
    out(b, "# HELP hadm_stage_seconds_total Time per pipeline stage (decode included).\n"
           "# TYPE hadm_stage_seconds_total counter\n");
    for (int i = 0; i < REG_MODELS; i++)
        for (int k = 0; k < 7; k++)
            out(b, "hadm_stage_seconds_total{model=\"%s\",stage=\"%s\"} %.6f\n", registry_name(i),
                SCHED_STAGE_NAMES[k], st.stage_sum[i][k]);
    out(b, "# HELP hadm_images_total Images run per model and outcome.\n# TYPE hadm_images_total counter\n");
    for (int i = 0; i < REG_MODELS; i++)
        out(b, "hadm_images_total{model=\"%s\",outcome=\"ok\"} %llu\nhadm_images_total{model=\"%s\",outcome=\"error\"} %llu\n",
            registry_name(i), (unsigned long long)st.images_ok[i], registry_name(i),
            (unsigned long long)st.images_failed[i]);
    out(b, "# TYPE hadm_queue_rejected_total counter\nhadm_queue_rejected_total %llu\n",
        (unsigned long long)st.rejected_full);
    out(b, "# TYPE hadm_queue_timeouts_total counter\nhadm_queue_timeouts_total %llu\n",
        (unsigned long long)st.timeouts);
}

static void render_models(server *srv, byte_buf *b)
{
    static const model_state STATES[] = {MODEL_UNCONFIGURED, MODEL_UNLOADED, MODEL_LOADING, MODEL_READY,
                                         MODEL_FAILED};
    out(b, "# HELP hadm_model_state 1 for the state each model is in.\n# TYPE hadm_model_state gauge\n");
    model_info mi[REG_MODELS];
    for (int i = 0; i < REG_MODELS; i++) {
        registry_info(srv->reg, i, &mi[i]);
        for (int k = 0; k < 5; k++)
            out(b, "hadm_model_state{model=\"%s\",state=\"%s\"} %d\n", registry_name(i),
                model_state_name(STATES[k]), mi[i].state == STATES[k]);
    }
    out(b, "# HELP hadm_model_load_seconds Duration of the last finished load.\n"
           "# TYPE hadm_model_load_seconds gauge\n");
    for (int i = 0; i < REG_MODELS; i++)
        out(b, "hadm_model_load_seconds{model=\"%s\"} %.6f\n", registry_name(i), mi[i].load_seconds);
    out(b, "# TYPE hadm_model_loads_total counter\n");
    for (int i = 0; i < REG_MODELS; i++)
        out(b, "hadm_model_loads_total{model=\"%s\",result=\"ok\"} %u\nhadm_model_loads_total{model=\"%s\",result=\"failed\"} %u\n",
            registry_name(i), mi[i].loads_ok, registry_name(i), mi[i].loads_failed);
    out(b, "# HELP hadm_process_resident_memory_bytes Resident set size.\n"
           "# TYPE hadm_process_resident_memory_bytes gauge\nhadm_process_resident_memory_bytes %lld\n",
        (long long)process_rss_bytes());
    out(b, "# TYPE hadm_uptime_seconds gauge\nhadm_uptime_seconds %.3f\n", hadm_now() - srv->started);
    out(b, "# TYPE hadm_requests_in_flight gauge\nhadm_requests_in_flight %d\n",
        __atomic_load_n(&srv->active, __ATOMIC_RELAXED));
}

char *metrics_render(metrics *m, server *srv, size_t *len)
{
    byte_buf b = {0};
    render_http(m, &b);
    render_sched(srv, &b);
    render_models(srv, &b);
    *len = b.len;
    return b.data;
}
