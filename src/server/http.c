/* The libmicrohttpd daemon: request dispatch, answers, hand-off to the
 * scheduler with suspend/resume, request logs, and the graceful stop. */
#include <netdb.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sched/log.h"
#include "server/fetch.h"
#include "server/http.h"
#include "server/request.h"
#include "server/routes.h"
#include "util/timer.h"

/* Retry-After seconds: a full queue drains quickly; a model that is not
 * loaded needs an operator or a load. */
#define RETRY_QUEUE_FULL "1"
#define RETRY_UNAVAILABLE "5"
#define RESERVE_CAP ((size_t)16 << 20)

static void add_common_headers(req_ctx *c, struct MHD_Response *r, int status)
{
    char id[32];
    snprintf(id, sizeof id, "%llu", (unsigned long long)c->id);
    MHD_add_response_header(r, "X-Request-Id", id);
    if (status == 503)
        MHD_add_response_header(r, "Retry-After", c->retry_after ? c->retry_after : RETRY_UNAVAILABLE);
    if (c->extra_name)
        MHD_add_response_header(r, c->extra_name, c->extra_value);
    if (status == 401)
        MHD_add_response_header(r, "WWW-Authenticate", "Bearer");
    if (__atomic_load_n(&c->srv->stopping, __ATOMIC_RELAXED))
        MHD_add_response_header(r, "Connection", "close"); /* no new requests on kept-alive connections */
    const char *origin = c->srv->cfg.cors_origin;
    if (origin) {
        MHD_add_response_header(r, "Access-Control-Allow-Origin", origin);
        MHD_add_response_header(r, "Vary", "Origin");
    }
}

static void log_request(req_ctx *c, int status)
{
    char path[600];
    log_quote(path, sizeof path, c->path);
    log_line(status >= 500 ? "warn" : "info", "request",
             "\"id\":%llu,\"method\":\"%s\",\"route\":%s,\"status\":%d,\"bytes_in\":%zu,"
             "\"bytes_out\":%zu,\"ms\":%.2f",
             (unsigned long long)c->id, c->method, path, status, c->body_seen, c->bytes_out,
             (hadm_now() - c->t0) * 1e3);
}

static void queue_response(req_ctx *c, int status, struct MHD_Response *r, size_t len)
{
    add_common_headers(c, r, status);
    MHD_queue_response(c->conn, (unsigned)status, r);
    MHD_destroy_response(r);
    c->responded = 1;
    c->status = status;
    c->bytes_out = len;
    log_request(c, status);
    metrics_observe(c->srv->met, c->route_index, status, hadm_now() - c->t0);
}

void http_respond(req_ctx *c, int status, const char *content_type, char *body, size_t len)
{
    if (c->responded) {
        free(body);
        return;
    }
    struct MHD_Response *r = body ? MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE)
                                  : MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (!r) {
        free(body);
        return; /* out of memory: libmicrohttpd closes the connection */
    }
    MHD_add_response_header(r, "Content-Type", content_type);
    queue_response(c, status, r, len);
}

void http_respond_static(req_ctx *c, int status, const char *content_type, const char *body)
{
    if (c->responded)
        return;
    size_t len = strlen(body);
    struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_PERSISTENT);
    if (!r)
        return;
    MHD_add_response_header(r, "Content-Type", content_type);
    queue_response(c, status, r, len);
}

void http_respond_asset(req_ctx *c, int status, const char *content_type, const void *body, size_t len,
                        const char *etag, const char *cache_control)
{
    if (c->responded)
        return;
    struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_PERSISTENT);
    if (!r)
        return;
    if (content_type)
        MHD_add_response_header(r, "Content-Type", content_type);
    if (etag)
        MHD_add_response_header(r, "ETag", etag);
    MHD_add_response_header(r, "Cache-Control", cache_control);
    queue_response(c, status, r, len);
}

void http_json(req_ctx *c, int status, cJSON *obj)
{
    char *text = obj ? cJSON_PrintUnformatted(obj) : NULL;
    cJSON_Delete(obj);
    if (!text) {
        http_respond_static(c, 500, "application/json",
                            "{\"success\":false,\"detail\":\"out of memory building the response\"}");
        return;
    }
    http_respond(c, status, "application/json", text, strlen(text));
}

void http_error(req_ctx *c, int status, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddBoolToObject(o, "success", 0);
    cJSON_AddStringToObject(o, "detail", msg);
    if (!strncmp(c->path, "/v2/", 4)) /* Open Inference Protocol clients read "error" */
        cJSON_AddStringToObject(o, "error", msg);
    http_json(c, status, o);
}

int http_status_of_job(job_code code)
{
    switch (code) {
    case JOB_OK: return 200;
    case JOB_BAD_IMAGE: return 400;
    case JOB_NOT_IMAGE: return 415;
    case JOB_TOO_LARGE: return 422;
    case JOB_UNAVAILABLE:
    case JOB_QUEUE_FULL: return 503;
    case JOB_TIMEOUT: return 504;
    case JOB_INTERNAL: return 500;
    }
    return 500;
}

void http_release(req_ctx *c)
{
    pthread_mutex_lock(&c->lock);
    int wake = --c->pending == 0 && c->suspended;
    struct MHD_Connection *conn = c->conn;
    pthread_mutex_unlock(&c->lock);
    if (wake)
        MHD_resume_connection(conn); /* c may be freed from here on */
}

/* Runs on a scheduler worker: the last job of a request wakes its connection. */
static void job_done(sched_job *job, void *user)
{
    (void)job;
    http_release(user);
}

int http_submit(req_ctx *c, sched_job *jobs, int n)
{
    double now = hadm_now();
    double timeout = c->srv->cfg.request_timeout_ms * 1e-3;
    const char *h = http_header(c, "X-Timeout-Ms"); /* a client may ask for less, never more */
    if (h && atof(h) > 0 && atof(h) * 1e-3 < timeout)
        timeout = atof(h) * 1e-3;
    sched_job *ptrs[SCHED_BATCH_MAX];
    if (n > SCHED_BATCH_MAX) {
        http_error(c, 413, "at most %d images per request", SCHED_BATCH_MAX);
        return ROUTE_DONE;
    }
    for (int i = 0; i < n; i++) {
        jobs[i].deadline = now + timeout;
        jobs[i].done = job_done;
        jobs[i].user = c;
        ptrs[i] = &jobs[i];
    }
    c->pending = n;
    hadm_error why = {0};
    job_code code = sched_submit(c->srv->sch, ptrs, n, &why);
    if (code == JOB_OK)
        return ROUTE_ASYNC;
    c->pending = 0;
    if (code == JOB_QUEUE_FULL)
        c->retry_after = RETRY_QUEUE_FULL;
    http_error(c, http_status_of_job(code), "%s", why.msg);
    return ROUTE_DONE;
}

static enum MHD_Result answer_early(req_ctx *c, int status, const char *msg)
{
    http_error(c, status, "%s", msg);
    return MHD_YES;
}

/* How much of a refused or oversized body is read (and dropped) so that the
 * client gets the answer; beyond, the connection is closed. */
static unsigned long long drain_limit(const server *srv)
{
    return 4ULL * srv->cfg.max_body + (64ULL << 20);
}

/* A refusal decided from the headers. Answering before the body is read and
 * then closing makes the kernel reset the connection while the client is
 * still sending, and the client may never see the answer; so unless the
 * client waits for "100 Continue", the body is drained (not kept) first. */
static enum MHD_Result refuse(req_ctx *c, int status, const char *msg)
{
    const char *te = http_header(c, "Transfer-Encoding");
    const char *cl = http_header(c, "Content-Length");
    const char *expect = http_header(c, "Expect");
    unsigned long long n = cl ? strtoull(cl, NULL, 10) : 0;
    int body = te || n > 0;
    if (!body || (expect && !strcasecmp(expect, "100-continue")) || n > drain_limit(c->srv))
        return answer_early(c, status, msg);
    c->refused = status;
    snprintf(c->refused_msg, sizeof c->refused_msg, "%s", msg);
    return MHD_YES;
}

/* First call for a request: headers only. Refusals that need no body are
 * answered here, before a byte of the body is read. */
static enum MHD_Result begin(req_ctx *c)
{
    server *srv = c->srv;
    if (!strcmp(c->method, "OPTIONS") && srv->cfg.cors_origin) {
        struct MHD_Response *r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
        if (!r)
            return MHD_NO;
        MHD_add_response_header(r, "Access-Control-Allow-Methods", "GET, POST, OPTIONS");
        MHD_add_response_header(r, "Access-Control-Allow-Headers",
                                "Content-Type, Authorization, X-API-Key, X-Timeout-Ms, "
                                "Inference-Header-Content-Length");
        MHD_add_response_header(r, "Access-Control-Max-Age", "600");
        queue_response(c, 204, r, 0);
        return MHD_YES;
    }
    int wrong_method = 0;
    if (!ctx_route(c, &wrong_method))
        return refuse(c, wrong_method ? 405 : 404,
                      wrong_method ? "method not allowed on this route" : "no such route");
    if (!ctx_authorized(c)) {
        if (route_signin_page(c))
            return MHD_YES;
        return refuse(c, 401, "missing or invalid API key");
    }
    const char *cl = http_header(c, "Content-Length");
    unsigned long long n = 0;
    if (cl) {
        n = strtoull(cl, NULL, 10);
        if (n > srv->cfg.max_body) {
            char msg[128];
            snprintf(msg, sizeof msg, "request body of %llu bytes is over the limit of %zu bytes", n,
                     srv->cfg.max_body);
            return refuse(c, 413, msg);
        }
    }
    int form = ctx_open_form(c);
    if (form < 0)
        return answer_early(c, 400, "malformed form request (multipart without a boundary?)");
    /* A raw body of known size is read without reallocations (up to a cap,
     * so a bare header cannot pin much memory). */
    if (n && !form && buf_reserve(&c->body, (n < RESERVE_CAP ? (size_t)n : RESERVE_CAP) + 1))
        return answer_early(c, 503, "out of memory");
    return MHD_YES;
}

/* Whole body in: check it, run the route, suspend if it queued work. */
static enum MHD_Result start(req_ctx *c)
{
    c->started = 1;
    if (c->refused)
        return answer_early(c, c->refused, c->refused_msg);
    if (c->pp) {
        if (MHD_destroy_post_processor(c->pp) != MHD_YES && !c->too_large)
            c->form_error = 1;
        c->pp = NULL;
    }
    if (c->too_large)
        return answer_early(c, 413, "request body is over the size limit");
    if (c->nomem)
        return answer_early(c, 503, "out of memory reading the request");
    if (c->form_error)
        return answer_early(c, 400, "malformed form body");
    if (c->route->start(c) != ROUTE_ASYNC)
        return MHD_YES;
    pthread_mutex_lock(&c->lock);
    int wait = c->pending > 0;
    if (wait) {
        c->suspended = 1;
        MHD_suspend_connection(c->conn);
    }
    pthread_mutex_unlock(&c->lock);
    if (!wait)
        c->route->finish(c);
    return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_size, void **con_cls)
{
    (void)version;
    req_ctx *c = *con_cls;
    if (!c) {
        if (!(c = ctx_new(cls, conn, url, method)))
            return MHD_NO;
        *con_cls = c;
        return begin(c);
    }
    if (*upload_size) {
        if (!c->responded)
            ctx_consume(c, upload_data, *upload_size);
        *upload_size = 0;
        /* Past the drain limit, stop reading: closing is all that is left.
         * A body trickling in past the request deadline is cut off too: the
         * idle timeout alone never ends a slow-but-steady sender. */
        int timeout_ms = c->srv->cfg.request_timeout_ms;
        if (c->body_seen > drain_limit(c->srv) || (timeout_ms > 0 && hadm_now() - c->t0 > timeout_ms * 1e-3))
            return MHD_NO;
        return MHD_YES;
    }
    if (c->responded)
        return MHD_YES;
    if (!c->started)
        return start(c);
    c->route->finish(c); /* resumed: every job is done */
    if (!c->responded)
        http_error(c, 500, "route produced no answer");
    return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls, (void)conn;
    req_ctx *c = *con_cls;
    if (!c)
        return;
    *con_cls = NULL;
    if (!c->responded || toe != MHD_REQUEST_TERMINATED_COMPLETED_OK) {
        char path[600];
        log_line("warn", "request_aborted", "\"id\":%llu,\"route\":%s,\"status\":%d,\"reason\":%d",
                 (unsigned long long)c->id, log_quote(path, sizeof path, c->path),
                 c->responded ? c->status : 0, (int)toe);
        metrics_aborted(c->srv->met);
    }
    ctx_free(c);
}

static int resolve(const char *host, int port, struct sockaddr_storage *out, int *v6)
{
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    if (getaddrinfo(host, ps, &hints, &res) != 0 || !res)
        return -1;
    memcpy(out, res->ai_addr, res->ai_addrlen);
    *v6 = res->ai_family == AF_INET6;
    freeaddrinfo(res);
    return 0;
}

static struct MHD_Daemon *start_daemon(server *srv)
{
    const server_config *cfg = &srv->cfg;
    struct sockaddr_storage addr;
    int v6 = 0;
    if (resolve(cfg->host, cfg->port, &addr, &v6)) {
        log_line("error", "bind_failed", "\"detail\":\"cannot resolve host\"");
        return NULL;
    }
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_ITC | (v6 ? MHD_USE_IPv6 : 0);
    struct MHD_OptionItem opts[] = {
        {MHD_OPTION_SOCK_ADDR, 0, &addr},
        {MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_completed, srv},
        {MHD_OPTION_CONNECTION_TIMEOUT, (intptr_t)(cfg->idle_timeout_s > 0 ? cfg->idle_timeout_s : 60), NULL},
        {MHD_OPTION_CONNECTION_LIMIT, 2000, NULL},
        {MHD_OPTION_CONNECTION_MEMORY_LIMIT, 256 * 1024, NULL},
        {MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024, NULL},
        {cfg->http_threads > 1 ? MHD_OPTION_THREAD_POOL_SIZE : MHD_OPTION_END,
         cfg->http_threads, NULL},
        {MHD_OPTION_END, 0, NULL},
    };
    return MHD_start_daemon(flags, (uint16_t)cfg->port, NULL, NULL, on_request, srv,
                            MHD_OPTION_ARRAY, opts, MHD_OPTION_END);
}

/* For in-process drivers (the fuzz targets, their regression test): the same
 * request handling without a listening socket or threads of its own; the
 * driver adds connections with MHD_add_connection and turns MHD_run. */
struct MHD_Daemon *http_daemon_embedded(server *srv)
{
    return MHD_start_daemon(MHD_USE_NO_LISTEN_SOCKET | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ITC, 0, NULL,
                            NULL, on_request, srv, MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv,
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(256 * 1024), MHD_OPTION_END);
}

/* Stop accepting, then wait until every request in flight has its answer.
 * Returns 0 when drained; -1 when cut short by a second signal or by the
 * limit (an inference that never ends), and work may still be queued. */
static int drain(server *srv, const sigset_t *sigs)
{
    __atomic_store_n(&srv->stopping, 1, __ATOMIC_SEQ_CST);
    int fd = MHD_quiesce_daemon(srv->daemon);
    if (fd >= 0)
        close(fd);
    double limit = hadm_now() + srv->cfg.request_timeout_ms * 1e-3 + 30;
    struct timespec tick = {0, 10 * 1000000L};
    while (__atomic_load_n(&srv->active, __ATOMIC_SEQ_CST) > 0) {
        if (hadm_now() > limit || sigtimedwait(sigs, NULL, &tick) > 0) {
            log_line("warn", "shutdown_forced", "\"in_flight\":%d",
                     __atomic_load_n(&srv->active, __ATOMIC_SEQ_CST));
            return -1;
        }
    }
    return 0;
}

int server_run(const server_config *cfg, registry *reg, sched *sch)
{
    server srv = {.cfg = *cfg, .reg = reg, .sch = sch, .started = hadm_now()};
    if (fetch_global_init()) { /* before any thread can use libcurl (detect-url) */
        log_line("error", "curl_init_failed", NULL);
        return 1;
    }
    if (!(srv.met = metrics_new())) {
        fetch_global_cleanup();
        return 1;
    }
    if (!(srv.daemon = start_daemon(&srv))) {
        log_line("error", "listen_failed", "\"host\":\"%s\",\"port\":%d", cfg->host, cfg->port);
        metrics_free(srv.met);
        fetch_global_cleanup();
        return 1;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(srv.daemon, MHD_DAEMON_INFO_BIND_PORT);
    srv.port = info ? info->port : cfg->port;
    char host[300];
    log_line("info", "listening", "\"host\":%s,\"port\":%d,\"url\":\"http://%s:%d/\"",
             log_quote(host, sizeof host, cfg->host), srv.port, cfg->host, srv.port);
    if (cfg->port_file) {
        FILE *f = fopen(cfg->port_file, "w");
        if (f) {
            fprintf(f, "%d\n", srv.port);
            fclose(f);
        }
    }
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    int sig = 0;
    sigwait(&sigs, &sig);
    log_line("info", "shutting_down", "\"signal\":\"%s\",\"in_flight\":%d",
             sig == SIGTERM ? "SIGTERM" : "SIGINT", __atomic_load_n(&srv.active, __ATOMIC_SEQ_CST));
    if (drain(&srv, &sigs)) {
        /* Suspended requests would be resumed on a stopped daemon by the
         * workers: leave now instead; the operator asked twice. */
        fflush(stderr);
        _exit(1);
    }
    MHD_stop_daemon(srv.daemon);
    metrics_free(srv.met);
    fetch_global_cleanup();
    log_line("info", "stopped", NULL);
    return 0;
}
