/* Internals shared by the HTTP layer: the per-request context, the route
 * table and the helpers routes use to answer. A route's start() runs on an
 * HTTP thread once the whole body is in; it either answers at once or hands
 * jobs to the scheduler (http_submit) and returns ROUTE_ASYNC; the connection
 * is then suspended and finish() builds the answer when every job is done. */
#ifndef HADM_SERVER_HTTP_H
#define HADM_SERVER_HTTP_H

#include <cjson/cJSON.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdint.h>

#include "sched/queue.h"
#include "sched/registry.h"
#include "server/server.h"
#include "util/err.h"

enum { ROUTE_DONE = 0, ROUTE_ASYNC = 1 };

typedef struct req_ctx req_ctx;

typedef struct {
    const char *method;   /* "GET" (also serves HEAD) or "POST" */
    const char *pattern;  /* path; "{name}" matches one segment */
    int auth;             /* needs the API key when keys are set */
    int (*start)(req_ctx *c);
    void (*finish)(req_ctx *c);
} route_def;

typedef struct metrics metrics;

typedef struct {
    server_config cfg;
    registry *reg;
    sched *sch;
    metrics *met;
    struct MHD_Daemon *daemon;
    double started;
    int port;
    int active;           /* requests not yet completed (atomic) */
    int stopping;         /* draining: answers close their connection (atomic) */
    uint64_t next_id;     /* atomic */
} server;

typedef struct {
    char *data;
    size_t len, cap;
} byte_buf;

typedef struct {
    char name[64];
    char filename[256];
    char content_type[128];
    byte_buf data;
} form_part;

#define FORM_MAX_PARTS 256

struct req_ctx {
    server *srv;
    struct MHD_Connection *conn;
    uint64_t id;
    double t0;
    char method[16];
    char path[512];
    char arg[64];         /* the {name} segment of the matched route */
    const route_def *route;
    int route_index;
    /* body */
    size_t body_seen;
    int too_large, nomem, form_error;
    int refused;          /* answer with this status once the body is drained */
    char refused_msg[160];
    byte_buf body;        /* raw body (when not a form) */
    struct MHD_PostProcessor *pp;
    form_part *parts;
    int nparts;
    /* async state */
    pthread_mutex_t lock;
    int started, pending, suspended, responded;
    sched_job *jobs;
    int njobs;
    void *state;          /* route-private, freed with free_state */
    void (*free_state)(void *);
    int status;
    size_t bytes_out;
    const char *retry_after;  /* for a 503; NULL = the default */
    const char *extra_name;   /* one more response header, when set */
    char extra_value[64];
};

/* The route table (routes.c). */
extern const route_def ROUTES[];
extern const int ROUTE_COUNT;

/* Answers; each takes ownership of what it is given. */
/* Drops one pending unit of work (a scheduler job, a URL fetch) of a
 * suspended request; the last one resumes the connection. Thread-safe; c
 * may be freed once this returns. */
void http_release(req_ctx *c);
void http_respond(req_ctx *c, int status, const char *content_type, char *body, size_t len);
void http_respond_static(req_ctx *c, int status, const char *content_type, const char *body);
/* A body that outlives the request (built-in files), with caching headers;
 * etag may be NULL. */
void http_respond_asset(req_ctx *c, int status, const char *content_type, const void *body, size_t len,
                        const char *etag, const char *cache_control);
void http_json(req_ctx *c, int status, cJSON *obj);
void http_error(req_ctx *c, int status, const char *fmt, ...) HADM_PRINTF(3, 4);

const char *http_query(req_ctx *c, const char *key);
const char *http_header(req_ctx *c, const char *key);
/* The first form part (field or file) with that name, or NULL. */
const form_part *http_form(req_ctx *c, const char *name);

/* Queues the jobs (done callbacks and deadlines are set here). ROUTE_ASYNC
 * when queued; otherwise it has answered 503 and returns ROUTE_DONE. */
int http_submit(req_ctx *c, sched_job *jobs, int n);
/* The HTTP status for a job outcome. */
int http_status_of_job(job_code code);

/* Byte buffers, bounded by the caller. */
int buf_append(byte_buf *b, const void *data, size_t n);
void buf_free(byte_buf *b);

/* http.c: a daemon with no socket or thread of its own, driven by the caller
 * (MHD_add_connection + MHD_run); srv->met must be set. For fuzz targets. */
struct MHD_Daemon *http_daemon_embedded(server *srv);

/* metrics.c */
metrics *metrics_new(void);
void metrics_free(metrics *m);
void metrics_observe(metrics *m, int route_index, int status, double seconds);
/* A request whose connection ended before its answer was sent in full. */
void metrics_aborted(metrics *m);
char *metrics_render(metrics *m, server *srv, size_t *len);
/* Resident set size of this process in bytes (0 if unknown). */
int64_t process_rss_bytes(void);

#endif
