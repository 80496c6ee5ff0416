/* Request-context helpers used by http.c (see request.c). */
#ifndef HADM_SERVER_REQUEST_H
#define HADM_SERVER_REQUEST_H
#include "server/http.h"

req_ctx *ctx_new(server *srv, struct MHD_Connection *conn, const char *url, const char *method);
void ctx_free(req_ctx *c);
/* Finds the route for the request's method and path; 0 if none (then
 * *method_mismatch says whether the path exists with another method). */
int ctx_route(req_ctx *c, int *method_mismatch);
int ctx_authorized(req_ctx *c);
/* 1 when given equals key, in time independent of given's content. */
int ctx_key_equal(const char *given, const char *key);
/* Starts a form parser for multipart/urlencoded bodies: 1 started, 0 the body
 * is not a form, -1 a form without a usable boundary. */
int ctx_open_form(req_ctx *c);
/* Feeds a body chunk, enforcing the body limit. */
void ctx_consume(req_ctx *c, const char *data, size_t n);
int buf_reserve(byte_buf *b, size_t cap);
#endif
