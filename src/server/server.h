/* The HTTP server (DESIGN.md "HTTP API"), as used by `hadm serve`. */
#ifndef HADM_SERVER_SERVER_H
#define HADM_SERVER_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "sched/queue.h"
#include "sched/registry.h"

typedef struct {
    const char *host;               /* address to bind, e.g. "127.0.0.1", "0.0.0.0", "::" */
    int port;                       /* 0 = any free port (logged) */
    int http_threads;               /* libmicrohttpd polling threads */
    size_t max_body;                /* bytes; 413 beyond */
    int64_t max_pixels;             /* 422 beyond, from the image header */
    int request_timeout_ms;         /* deadline of a detect request: 504 beyond */
    int max_batch_images;           /* images in one /detect/batch request */
    const char *const *api_keys;    /* none: no auth */
    int n_api_keys;
    const char *cors_origin;        /* NULL: no CORS headers */
    const char *const *url_allow;   /* detect-url host allow-list; none: route disabled */
    int n_url_allow;
    int lazy;                       /* /ready semantics: loadable is enough */
    const char *port_file;          /* if set, the bound port is written there */
    int idle_timeout_s;             /* a connection silent this long is closed */
} server_config;

/* Serves until SIGTERM or SIGINT arrive (the caller blocks both in every
 * thread before starting any), then stops accepting, answers everything in
 * flight and returns 0; 1 if the server could not start. A second signal
 * during that drain (or a drain past the request timeout + 30 s) ends the
 * process at once with status 1. */
int server_run(const server_config *cfg, registry *reg, sched *sch);

#endif
