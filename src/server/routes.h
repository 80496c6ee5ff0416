/* Route handlers (see the table in routes.c). */
#ifndef HADM_SERVER_ROUTES_H
#define HADM_SERVER_ROUTES_H
#include "server/http.h"

/* routes_detect.c */
int route_detect_start(req_ctx *c);        /* /api/v1/detect, /api/detect, /detect */
int route_detect_base64_start(req_ctx *c); /* /api/v1/detect-base64 */
int route_detect_url_start(req_ctx *c);    /* /api/v1/detect-url */
int route_detect_batch_start(req_ctx *c);  /* /detect/batch */
void route_detect_finish(req_ctx *c);

/* routes_kserve.c */
int route_v2_server(req_ctx *c);
int route_v2_live(req_ctx *c);
int route_v2_ready(req_ctx *c);
int route_v2_model(req_ctx *c);
int route_v2_model_ready(req_ctx *c);
int route_v2_infer_start(req_ctx *c);
void route_v2_infer_finish(req_ctx *c);

/* routes_web.c: the console's files, and the sign-in page that answers a
 * browser's unauthorized GET / (1 when it answered). */
int route_web_asset(req_ctx *c);
int route_signin_page(req_ctx *c);

/* routes.c */
int route_health(req_ctx *c);
int route_ready(req_ctx *c);
int route_models_status(req_ctx *c);
int route_control(req_ctx *c);
int route_diagnostics(req_ctx *c);
int route_metrics(req_ctx *c);
int route_openapi(req_ctx *c);
void route_no_finish(req_ctx *c);

/* Whether every configured model can serve (lazy: none has failed); if not,
 * why in buf. */
int server_is_ready(server *srv, char *why, size_t cap);

/* assets.c: the OpenAPI document. */
extern const char OPENAPI_JSON[];
#endif
