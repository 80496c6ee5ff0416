/* The request scheduler: one bounded FIFO and one worker thread per model.
 * A worker waits briefly for more jobs of its model (dynamic batching, up to
 * max_batch or batch_timeout_ms), decodes the images and runs them through
 * hadm_detect_batch. A job may want both models; it is then queued on both
 * and runs on both workers at once when there are cores for it. Callers are
 * never blocked: submit either queues every job (done() is then called exactly
 * once per job, from a worker thread) or refuses them all with a reason. */
#ifndef HADM_SCHED_QUEUE_H
#define HADM_SCHED_QUEUE_H

#include <pthread.h>
#include <stdint.h>

#include "hadm.h"
#include "sched/registry.h"

typedef enum {
    JOB_OK = 0,
    JOB_BAD_IMAGE,   /* 400: undecodable */
    JOB_NOT_IMAGE,   /* 415 */
    JOB_TOO_LARGE,   /* 422: too many pixels */
    JOB_UNAVAILABLE, /* 503: model not configured, not loaded or failed */
    JOB_QUEUE_FULL,  /* 503 + Retry-After */
    JOB_TIMEOUT,     /* 504: deadline passed before it could run */
    JOB_INTERNAL,    /* 500: the engine failed */
} job_code;

typedef struct sched_job sched_job;
typedef void (*job_done_fn)(sched_job *job, void *user);

typedef struct job_node {
    sched_job *job;
    struct job_node *next;
} job_node;

struct sched_job {
    /* Set by the submitter; bytes must stay valid until done(). */
    const void *bytes;
    size_t len;
    int want[REG_MODELS];
    double deadline;          /* hadm_now() seconds; 0 = none */
    job_done_fn done;
    void *user;
    /* Optional: runs once, on the worker that completes the job, just before
     * done() and while the decoded image still exists (NULL when decoding
     * failed): for work on the pixels, such as drawing the boxes, that must
     * not run on the submitter's thread. The image may be changed. */
    void (*with_image)(sched_job *job, hadm_image *img, void *user);
    void *with_image_user;
    /* Filled before done(). result[i] is owned by the job (sched_job_clear). */
    hadm_result *result[REG_MODELS];
    job_code code[REG_MODELS];
    hadm_error err[REG_MODELS];
    int image_width, image_height;
    double submitted, finished;
    /* Private to the scheduler. */
    pthread_mutex_t lock;
    int pending;
    int decoded;
    hadm_status decode_status;
    hadm_error decode_err;
    hadm_image image;
    job_node node[REG_MODELS];
    registry *reg;
    model_ref *hold[REG_MODELS]; /* keeps result class names valid */
};

void sched_job_init(sched_job *j);
/* Frees results and releases the models they came from; init again to reuse. */
void sched_job_clear(sched_job *j);

/* The job's overall outcome: the first failing model's code (and its message). */
job_code sched_job_outcome(const sched_job *j, const char **msg);

typedef struct {
    int max_batch;          /* >= 1 */
    int batch_timeout_ms;   /* how long a worker waits to fill a batch */
    int max_queue;          /* jobs waiting per model */
    int lazy;               /* load a model on the first job that needs it */
    int concurrent;         /* models may compute at the same time */
    int64_t max_pixels;
    int allow_truncated;    /* decode truncated JPEGs as the original reader does */
    hadm_detect_options detect;
} sched_config;

#define SCHED_BATCH_MAX 64
#define SCHED_INFER_BUCKETS 12
extern const double SCHED_INFER_BOUNDS[SCHED_INFER_BUCKETS];

typedef struct {
    int queued[REG_MODELS], running[REG_MODELS];
    uint64_t batches[REG_MODELS][SCHED_BATCH_MAX + 1]; /* by batch size */
    uint64_t images_ok[REG_MODELS], images_failed[REG_MODELS], timeouts, rejected_full;
    /* per-image inference seconds (engine total), histogram + sum */
    uint64_t infer_bucket[REG_MODELS][SCHED_INFER_BUCKETS];
    uint64_t infer_count[REG_MODELS];
    double infer_sum[REG_MODELS];
    /* summed stage seconds: decode, preprocess, backbone, fpn, rpn, roi_heads, postprocess */
    double stage_sum[REG_MODELS][7];
} sched_stats;
extern const char *const SCHED_STAGE_NAMES[7];

typedef struct sched sched;

sched *sched_new(const sched_config *cfg, registry *reg, hadm_error *err);
/* Finishes every queued job, then stops and joins the workers. */
void sched_free(sched *s);

/* All or nothing (see the top of this file). On refusal returns the code
 * (JOB_UNAVAILABLE, JOB_QUEUE_FULL) and a message in why. */
job_code sched_submit(sched *s, sched_job **jobs, int n, hadm_error *why);

void sched_get_stats(sched *s, sched_stats *out);
const sched_config *sched_get_config(const sched *s);

#endif
