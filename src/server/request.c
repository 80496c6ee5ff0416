/* Per-request plumbing: context lifetime, route matching, API-key check,
 * bounded body buffers and the multipart/urlencoded form collector. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "server/http.h"
#include "server/request.h"
#include "util/timer.h"

int buf_append(byte_buf *b, const void *data, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->data, cap);
        if (!p)
            return -1;
        b->data = p;
        b->cap = cap;
    }
    if (n)
        memcpy(b->data + b->len, data, n);
    b->len += n;
    b->data[b->len] = '\0'; /* bodies double as C strings for the JSON parser */
    return 0;
}

int buf_reserve(byte_buf *b, size_t cap)
{
    if (cap <= b->cap)
        return 0;
    char *p = realloc(b->data, cap);
    if (!p)
        return -1;
    b->data = p;
    b->cap = cap;
    return 0;
}

void buf_free(byte_buf *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}

req_ctx *ctx_new(server *srv, struct MHD_Connection *conn, const char *url, const char *method)
{
    req_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->srv = srv;
    c->conn = conn;
    c->t0 = hadm_now();
    c->id = __atomic_add_fetch(&srv->next_id, 1, __ATOMIC_RELAXED);
    c->route_index = -1;
    snprintf(c->method, sizeof c->method, "%s", method);
    snprintf(c->path, sizeof c->path, "%s", url);
    size_t n = strlen(c->path);
    while (n > 1 && c->path[n - 1] == '/') /* "/health/" is "/health" */
        c->path[--n] = '\0';
    pthread_mutex_init(&c->lock, NULL);
    __atomic_add_fetch(&srv->active, 1, __ATOMIC_SEQ_CST);
    return c;
}

void ctx_free(req_ctx *c)
{
    if (c->pp)
        MHD_destroy_post_processor(c->pp);
    for (int i = 0; i < c->njobs; i++)
        sched_job_clear(&c->jobs[i]);
    free(c->jobs);
    if (c->free_state)
        c->free_state(c->state);
    for (int i = 0; i < c->nparts; i++)
        buf_free(&c->parts[i].data);
    free(c->parts);
    buf_free(&c->body);
    pthread_mutex_destroy(&c->lock);
    server *srv = c->srv;
    free(c);
    __atomic_sub_fetch(&srv->active, 1, __ATOMIC_SEQ_CST);
}

/* Segment-wise match; "{x}" takes one non-empty segment into arg. */
static int path_match(const char *pattern, const char *path, char *arg, size_t cap)
{
    while (*pattern && *path) {
        if (*pattern == '{') {
            const char *pe = strchr(pattern, '}');
            size_t n = strcspn(path, "/");
            if (!pe || n == 0 || n >= cap)
                return 0;
            memcpy(arg, path, n);
            arg[n] = '\0';
            pattern = pe + 1;
            path += n;
            continue;
        }
        if (*pattern++ != *path++)
            return 0;
    }
    return !*pattern && !*path;
}

int ctx_route(req_ctx *c, int *method_mismatch)
{
    *method_mismatch = 0;
    int is_get = !strcmp(c->method, "GET") || !strcmp(c->method, "HEAD");
    for (int i = 0; i < ROUTE_COUNT; i++) {
        const route_def *r = &ROUTES[i];
        if (!path_match(r->pattern, c->path, c->arg, sizeof c->arg))
            continue;
        if (!strcmp(r->method, c->method) || (is_get && !strcmp(r->method, "GET"))) {
            c->route = r;
            c->route_index = i;
            return 1;
        }
        *method_mismatch = 1;
    }
    return 0;
}

/* Compares in time that depends only on the configured key's length (every
 * byte is looked at, no early exit), so response times do not reveal how
 * much of a guessed key was right. */
int ctx_key_equal(const char *given, const char *key)
{
    size_t glen = strlen(given), klen = strlen(key);
    unsigned diff = glen != klen;
    for (size_t i = 0; i < klen; i++)
        diff |= (unsigned)((unsigned char)key[i] ^ (unsigned char)(i < glen ? given[i] : 0));
    return diff == 0;
}

int ctx_authorized(req_ctx *c)
{
    const server_config *cfg = &c->srv->cfg;
    if (!c->route->auth || cfg->n_api_keys == 0)
        return 1;
    const char *k = http_header(c, "X-API-Key");
    const char *auth = http_header(c, "Authorization");
    if (!k && auth && !strncasecmp(auth, "Bearer ", 7)) {
        k = auth + 7;
        while (*k == ' ')
            k++;
    }
    if (!k)
        k = http_query(c, "api_key");
    if (!k)
        return 0;
    int ok = 0;
    for (int i = 0; i < cfg->n_api_keys; i++)
        ok |= ctx_key_equal(k, cfg->api_keys[i]);
    return ok;
}

static enum MHD_Result form_iter(void *cls, enum MHD_ValueKind kind, const char *key,
                                 const char *filename, const char *content_type,
                                 const char *transfer_encoding, const char *data, uint64_t off,
                                 size_t size)
{
    (void)kind, (void)transfer_encoding;
    req_ctx *c = cls;
    form_part *p = c->nparts ? &c->parts[c->nparts - 1] : NULL;
    key = key ? key : "";
    /* A part's first chunk comes with offset 0; an empty first chunk of the
     * same field is the same part. */
    if (!p || (off == 0 && (p->data.len > 0 || strcmp(p->name, key)))) {
        if (c->nparts >= FORM_MAX_PARTS) { /* answered once the body is drained */
            c->refused = 413;
            snprintf(c->refused_msg, sizeof c->refused_msg, "more than %d form parts", FORM_MAX_PARTS);
            return MHD_NO;
        }
        form_part *np = realloc(c->parts, (size_t)(c->nparts + 1) * sizeof *np);
        if (!np) {
            c->nomem = 1;
            return MHD_NO;
        }
        c->parts = np;
        p = &c->parts[c->nparts++];
        memset(p, 0, sizeof *p);
        snprintf(p->name, sizeof p->name, "%s", key);
        snprintf(p->filename, sizeof p->filename, "%s", filename ? filename : "");
        snprintf(p->content_type, sizeof p->content_type, "%s", content_type ? content_type : "");
    }
    if (size && buf_append(&p->data, data, size)) {
        c->nomem = 1;
        return MHD_NO;
    }
    return MHD_YES;
}

int ctx_open_form(req_ctx *c)
{
    const char *ct = http_header(c, "Content-Type");
    if (!ct || (strncasecmp(ct, "multipart/form-data", 19) && strncasecmp(ct, "application/x-www-form-urlencoded", 33)))
        return 0;
    c->pp = MHD_create_post_processor(c->conn, 64 * 1024, form_iter, c);
    return c->pp ? 1 : -1;
}

void ctx_consume(req_ctx *c, const char *data, size_t n)
{
    c->body_seen += n;
    if (c->refused || c->too_large || c->nomem || c->form_error)
        return; /* drained, not kept */
    if (c->body_seen > c->srv->cfg.max_body) {
        /* Drop what we hold and ignore the rest: memory stays bounded. */
        c->too_large = 1;
        buf_free(&c->body);
        for (int i = 0; i < c->nparts; i++)
            buf_free(&c->parts[i].data);
        return;
    }
    if (c->pp) {
        if (MHD_post_process(c->pp, data, n) != MHD_YES && !c->nomem)
            c->form_error = 1;
    } else if (buf_append(&c->body, data, n)) {
        c->nomem = 1;
    }
}

const char *http_query(req_ctx *c, const char *key)
{
    return MHD_lookup_connection_value(c->conn, MHD_GET_ARGUMENT_KIND, key);
}

const char *http_header(req_ctx *c, const char *key)
{
    return MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND, key);
}

const form_part *http_form(req_ctx *c, const char *name)
{
    for (int i = 0; i < c->nparts; i++)
        if (!strcmp(c->parts[i].name, name))
            return &c->parts[i];
    return NULL;
}
