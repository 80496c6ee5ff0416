#include "sched/queue.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sched/sync.h"
#include "util/err.h"
#include "util/timer.h"

const double SCHED_INFER_BOUNDS[SCHED_INFER_BUCKETS] = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                                        1,    2.5,   5,    10,  30,   60};
const char *const SCHED_STAGE_NAMES[7] = {"decode", "preprocess", "backbone",   "fpn",
                                          "rpn",    "roi_heads",  "postprocess"};

/* How often a worker waiting for a model load looks at its queue again
 * (deadlines of jobs that arrived meanwhile). */
#define LOAD_POLL_S 0.05

typedef struct {
    struct sched *s;
    int idx;
    job_node *head, *tail;
    int len, running;
    pthread_cond_t cond; /* new job or stop */
    pthread_t thread;
    int started;
} worker;

struct sched {
    sched_config cfg;
    registry *reg;
    pthread_mutex_t lock;
    pthread_mutex_t compute; /* serialises the models when cores are few */
    int stopping;
    worker w[REG_MODELS];
    sched_stats st;
};

void sched_job_init(sched_job *j)
{
    memset(j, 0, sizeof *j);
    pthread_mutex_init(&j->lock, NULL);
}

void sched_job_clear(sched_job *j)
{
    for (int i = 0; i < REG_MODELS; i++) {
        hadm_result_free(j->result[i]);
        j->result[i] = NULL;
        if (j->hold[i])
            registry_release(j->reg, j->hold[i]);
        j->hold[i] = NULL;
    }
    hadm_image_free(&j->image);
    pthread_mutex_destroy(&j->lock);
}

job_code sched_job_outcome(const sched_job *j, const char **msg)
{
    for (int i = 0; i < REG_MODELS; i++)
        if (j->want[i] && j->code[i] != JOB_OK) {
            if (msg)
                *msg = j->err[i].msg;
            return j->code[i];
        }
    if (msg)
        *msg = "";
    return JOB_OK;
}

const sched_config *sched_get_config(const sched *s) { return &s->cfg; }

static job_code code_of_status(hadm_status st)
{
    switch (st) {
    case HADM_OK: return JOB_OK;
    case HADM_ERR_IMAGE:
    case HADM_ERR_ARG: return JOB_BAD_IMAGE;
    case HADM_ERR_NOT_IMAGE: return JOB_NOT_IMAGE;
    case HADM_ERR_TOO_LARGE: return JOB_TOO_LARGE;
    default: return JOB_INTERNAL;
    }
}

/* Records one model's outcome; the last outcome of a job calls done(). */
static void complete(int idx, sched_job *job, job_code code, hadm_result *res, const hadm_error *e)
{
    pthread_mutex_lock(&job->lock);
    job->code[idx] = code;
    job->result[idx] = res;
    if (e && code != JOB_OK)
        job->err[idx] = *e;
    int last = --job->pending == 0;
    pthread_mutex_unlock(&job->lock);
    if (!last)
        return;
    if (job->with_image)
        job->with_image(job, job->image.rgb ? &job->image : NULL, job->with_image_user);
    hadm_image_free(&job->image);
    job->finished = hadm_now();
    job->done(job, job->user); /* the job may be freed from here on */
}

static void complete_failed(int idx, sched_job *job, job_code code, const char *fmt, const char *arg)
{
    hadm_error e = {0};
    hadm_fail(&e, HADM_ERR_INTERNAL, fmt, arg);
    complete(idx, job, code, NULL, &e);
}

/* Pops every node of w into a private list (caller holds the lock). */
static job_node *take_all(worker *w)
{
    job_node *all = w->head;
    w->head = w->tail = NULL;
    w->len = 0;
    return all;
}

/* Unlinks the jobs whose deadline has passed (caller holds the lock);
 * returns them as a list and the earliest remaining deadline in *next. */
static job_node *take_expired(worker *w, double now, double *next)
{
    job_node *expired = NULL, **link = &w->head, *prev = NULL;
    while (*link) {
        job_node *n = *link;
        double d = n->job->deadline;
        if (d > 0 && d <= now) {
            *link = n->next;
            n->next = expired;
            expired = n;
            w->len--;
        } else {
            if (d > 0 && d < *next)
                *next = d;
            prev = n;
            link = &n->next;
        }
    }
    w->tail = prev;
    return expired;
}

static void fail_list(int idx, job_node *list, job_code code, const char *msg)
{
    while (list) {
        job_node *n = list->next;
        complete_failed(idx, list->job, code, "%s", msg);
        list = n;
    }
}

static void decode_once(sched *s, int idx, sched_job *job)
{
    pthread_mutex_lock(&job->lock);
    if (!job->decoded) {
        job->decoded = 1;
        hadm_decode_options opt = {.max_pixels = s->cfg.max_pixels,
                                   .allow_truncated = s->cfg.allow_truncated};
        double t0 = hadm_now();
        job->decode_status = hadm_image_decode(job->bytes, job->len, &opt, &job->image, &job->decode_err);
        if (!job->decode_status) {
            job->image_width = job->image.width;
            job->image_height = job->image.height;
        }
        pthread_mutex_lock(&s->lock);
        s->st.stage_sum[idx][0] += hadm_now() - t0;
        pthread_mutex_unlock(&s->lock);
    }
    pthread_mutex_unlock(&job->lock);
}

static void record_result(sched *s, int idx, const hadm_result *r)
{
    const hadm_timings *t = &r->timings;
    pthread_mutex_lock(&s->lock);
    s->st.images_ok[idx]++;
    s->st.infer_count[idx]++;
    s->st.infer_sum[idx] += t->total;
    for (int b = 0; b < SCHED_INFER_BUCKETS; b++)
        if (t->total <= SCHED_INFER_BOUNDS[b])
            s->st.infer_bucket[idx][b]++;
    double *st = s->st.stage_sum[idx];
    st[1] += t->preprocess, st[2] += t->backbone, st[3] += t->fpn;
    st[4] += t->rpn, st[5] += t->roi_heads, st[6] += t->postprocess;
    pthread_mutex_unlock(&s->lock);
}

static void run_engine(sched *s, int idx, model_ref *ref, sched_job **jobs, const hadm_image *imgs,
                       int n)
{
    hadm_model *m = model_ref_get(ref);
    hadm_result *results[SCHED_BATCH_MAX] = {0};
    hadm_error errs[SCHED_BATCH_MAX], err = {0};
    if (!s->cfg.concurrent)
        pthread_mutex_lock(&s->compute);
    hadm_status st = hadm_detect_batch(m, imgs, n, &s->cfg.detect, results, errs, &err);
    if (!s->cfg.concurrent)
        pthread_mutex_unlock(&s->compute);
    pthread_mutex_lock(&s->lock);
    s->st.batches[idx][n]++;
    pthread_mutex_unlock(&s->lock);
    for (int i = 0; i < n; i++) {
        if (st) {
            hadm_result_free(results[i]);
            complete(idx, jobs[i], code_of_status(st), NULL, &err);
        } else if (results[i]) {
            record_result(s, idx, results[i]);
            registry_retain(s->reg, ref);
            jobs[i]->reg = s->reg;
            jobs[i]->hold[idx] = ref;
            complete(idx, jobs[i], JOB_OK, results[i], NULL);
        } else {
            hadm_status es = errs[i].code ? errs[i].code : HADM_ERR_INTERNAL;
            pthread_mutex_lock(&s->lock);
            s->st.images_failed[idx]++;
            pthread_mutex_unlock(&s->lock);
            complete(idx, jobs[i], code_of_status(es), NULL, &errs[i]);
        }
    }
}

static void run_batch(sched *s, int idx, job_node **nodes, int n)
{
    model_ref *ref = registry_acquire(s->reg, idx);
    if (!ref) {
        char why[600];
        registry_unavailable_reason(s->reg, idx, why, sizeof why);
        for (int i = 0; i < n; i++)
            complete_failed(idx, nodes[i]->job, JOB_UNAVAILABLE, "%s", why);
        return;
    }
    sched_job *jobs[SCHED_BATCH_MAX];
    hadm_image imgs[SCHED_BATCH_MAX];
    int m = 0;
    for (int i = 0; i < n; i++) {
        sched_job *job = nodes[i]->job;
        if (job->deadline > 0 && hadm_now() > job->deadline) {
            pthread_mutex_lock(&s->lock);
            s->st.timeouts++;
            pthread_mutex_unlock(&s->lock);
            complete_failed(idx, job, JOB_TIMEOUT, "%s", "request timed out waiting in the queue");
            continue;
        }
        decode_once(s, idx, job);
        if (job->decode_status) {
            complete(idx, job, code_of_status(job->decode_status), NULL, &job->decode_err);
            continue;
        }
        jobs[m] = job;
        imgs[m++] = job->image;
    }
    if (m)
        run_engine(s, idx, ref, jobs, imgs, m);
    registry_release(s->reg, ref);
}

/* Waits (lock held) until the batch is full or the oldest job has waited
 * batch_timeout_ms. */
static void gather_batch(sched *s, worker *w)
{
    if (s->cfg.batch_timeout_ms <= 0 || w->len >= s->cfg.max_batch)
        return;
    double until = w->head->job->submitted + s->cfg.batch_timeout_ms * 1e-3;
    while (w->len < s->cfg.max_batch && !s->stopping && w->head)
        if (cond_wait_until(&w->cond, &s->lock, until) == ETIMEDOUT)
            break;
}

/* Model not ready: wait for a load in progress (failing expired jobs), or
 * fail the queue when there is nothing to wait for. Lock held on entry and exit. */
static void handle_not_ready(sched *s, worker *w, model_state st)
{
    int idx = w->idx;
    if (st == MODEL_UNLOADED && s->cfg.lazy) {
        registry_load(s->reg, idx, 0, NULL);
        st = MODEL_LOADING;
    }
    if (st == MODEL_LOADING) {
        double now = hadm_now(), next = now + LOAD_POLL_S;
        job_node *expired = take_expired(w, now, &next);
        s->st.queued[idx] = w->len;
        pthread_mutex_unlock(&s->lock);
        fail_list(idx, expired, JOB_TIMEOUT, "request timed out waiting for the model to load");
        registry_wait_loaded(s->reg, idx, next);
        pthread_mutex_lock(&s->lock);
        return;
    }
    job_node *all = take_all(w);
    s->st.queued[idx] = 0;
    pthread_mutex_unlock(&s->lock);
    char why[600];
    registry_unavailable_reason(s->reg, idx, why, sizeof why);
    fail_list(idx, all, JOB_UNAVAILABLE, why);
    pthread_mutex_lock(&s->lock);
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    sched *s = w->s;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        while (!w->head && !s->stopping)
            pthread_cond_wait(&w->cond, &s->lock);
        if (!w->head)
            break; /* stopping, and everything queued is done */
        model_state st = registry_state(s->reg, w->idx);
        if (st != MODEL_READY) {
            handle_not_ready(s, w, st);
            continue;
        }
        gather_batch(s, w);
        job_node *batch[SCHED_BATCH_MAX];
        int n = 0;
        while (w->head && n < s->cfg.max_batch) {
            batch[n++] = w->head;
            w->head = w->head->next;
            w->len--;
        }
        if (!w->head)
            w->tail = NULL;
        w->running = n;
        s->st.queued[w->idx] = w->len;
        s->st.running[w->idx] = n;
        pthread_mutex_unlock(&s->lock);
        run_batch(s, w->idx, batch, n);
        pthread_mutex_lock(&s->lock);
        w->running = 0;
        s->st.running[w->idx] = 0;
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

sched *sched_new(const sched_config *cfg, registry *reg, hadm_error *err)
{
    if (cfg->max_batch < 1 || cfg->max_batch > SCHED_BATCH_MAX || cfg->max_queue < 1 ||
        cfg->batch_timeout_ms < 0) {
        hadm_fail(err, HADM_ERR_ARG, "max-batch must be 1..%d, max-queue >= 1, batch-timeout-ms >= 0",
                  SCHED_BATCH_MAX);
        return NULL;
    }
    sched *s = calloc(1, sizeof *s);
    if (!s) {
        hadm_fail(err, HADM_ERR_NOMEM, "out of memory");
        return NULL;
    }
    s->cfg = *cfg;
    s->reg = reg;
    pthread_mutex_init(&s->lock, NULL);
    pthread_mutex_init(&s->compute, NULL);
    for (int i = 0; i < REG_MODELS; i++) {
        worker *w = &s->w[i];
        w->s = s;
        w->idx = i;
        cond_init_monotonic(&w->cond);
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
            hadm_fail(err, HADM_ERR_INTERNAL, "cannot start a worker thread");
            sched_free(s);
            return NULL;
        }
        w->started = 1;
    }
    return s;
}

void sched_free(sched *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->lock);
    s->stopping = 1;
    for (int i = 0; i < REG_MODELS; i++)
        pthread_cond_broadcast(&s->w[i].cond);
    pthread_mutex_unlock(&s->lock);
    for (int i = 0; i < REG_MODELS; i++) {
        if (s->w[i].started)
            pthread_join(s->w[i].thread, NULL);
        pthread_cond_destroy(&s->w[i].cond);
    }
    pthread_mutex_destroy(&s->compute);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

/* Why model idx cannot take new jobs now, or 0 if it can (maybe after a load). */
static int refuse_reason(sched *s, int idx, hadm_error *why)
{
    model_state st = registry_state(s->reg, idx);
    if (st == MODEL_READY || st == MODEL_LOADING || (st == MODEL_UNLOADED && s->cfg.lazy))
        return 0;
    registry_unavailable_reason(s->reg, idx, why->msg, sizeof why->msg);
    why->code = HADM_ERR_UNSUPPORTED;
    return 1;
}

job_code sched_submit(sched *s, sched_job **jobs, int n, hadm_error *why)
{
    int need[REG_MODELS] = {0};
    for (int j = 0; j < n; j++) {
        int any = 0;
        for (int i = 0; i < REG_MODELS; i++) {
            need[i] += jobs[j]->want[i] != 0;
            any |= jobs[j]->want[i] != 0;
        }
        if (!any) {
            hadm_fail(why, HADM_ERR_ARG, "job %d wants no model", j);
            return JOB_INTERNAL;
        }
    }
    for (int i = 0; i < REG_MODELS; i++)
        if (need[i] && refuse_reason(s, i, why))
            return JOB_UNAVAILABLE;
    pthread_mutex_lock(&s->lock);
    if (s->stopping) {
        pthread_mutex_unlock(&s->lock);
        hadm_fail(why, HADM_ERR_UNSUPPORTED, "server is shutting down");
        return JOB_UNAVAILABLE;
    }
    for (int i = 0; i < REG_MODELS; i++)
        if (need[i] && s->w[i].len + need[i] > s->cfg.max_queue) {
            s->st.rejected_full++;
            pthread_mutex_unlock(&s->lock);
            hadm_fail(why, HADM_ERR_UNSUPPORTED, "queue full (%d jobs waiting for %s, --max-queue %d)",
                      s->w[i].len, registry_variant(i), s->cfg.max_queue);
            return JOB_QUEUE_FULL;
        }
    double now = hadm_now();
    for (int j = 0; j < n; j++) {
        sched_job *job = jobs[j];
        job->submitted = now;
        job->pending = 0;
        for (int i = 0; i < REG_MODELS; i++) {
            if (!job->want[i])
                continue;
            worker *w = &s->w[i];
            job->pending++;
            job->node[i] = (job_node){job, NULL};
            if (w->tail)
                w->tail->next = &job->node[i];
            else
                w->head = &job->node[i];
            w->tail = &job->node[i];
            w->len++;
        }
    }
    for (int i = 0; i < REG_MODELS; i++) {
        s->st.queued[i] = s->w[i].len;
        if (need[i])
            pthread_cond_signal(&s->w[i].cond);
    }
    pthread_mutex_unlock(&s->lock);
    return JOB_OK;
}

void sched_get_stats(sched *s, sched_stats *out)
{
    pthread_mutex_lock(&s->lock);
    *out = s->st;
    pthread_mutex_unlock(&s->lock);
}
