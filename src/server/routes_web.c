/* The web console: the files of web/ compiled in (web_assets.c, generated),
 * served with ETags, and the sign-in page a browser gets in place of the
 * JSON 401 when the server wants an API key. */
#include <string.h>

#include "server/routes.h"
#include "server/web_assets.h"

/* Revalidate on every load (a cheap 304) so a new binary's console is seen
 * at once; "private" because, with keys set, the files are behind the key. */
#define ASSET_CACHE "private, no-cache"

const web_asset *web_asset_find(const char *url)
{
    for (int i = 0; i < WEB_ASSET_COUNT; i++)
        if (!strcmp(WEB_ASSETS[i].url, url))
            return &WEB_ASSETS[i];
    return NULL;
}

/* Whether an If-None-Match list names this tag (or is "*"). */
static int etag_matches(const char *header, const char *etag)
{
    if (!header)
        return 0;
    size_t n = strlen(etag);
    for (const char *p = header; *p;) {
        p += strspn(p, " \t,");
        if (!strncmp(p, "W/", 2))
            p += 2;
        if (*p == '*' || (!strncmp(p, etag, n) && (p[n] == '\0' || p[n] == ',' || p[n] == ' ')))
            return 1;
        p += strcspn(p, ",");
    }
    return 0;
}

int route_web_asset(req_ctx *c)
{
    const web_asset *a = web_asset_find(c->path);
    if (!a) {
        http_error(c, 404, "no such file");
        return ROUTE_DONE;
    }
    if (etag_matches(http_header(c, "If-None-Match"), a->etag))
        http_respond_asset(c, 304, NULL, "", 0, a->etag, ASSET_CACHE);
    else
        http_respond_asset(c, 200, a->content_type, a->data, a->len, a->etag, ASSET_CACHE);
    return ROUTE_DONE;
}

/* A browser opening / on a server with keys cannot send a header on that
 * navigation, so it gets the sign-in page as the 401's body: it holds no
 * data and no key; it asks for the key and loads the console with it
 * (web/signin.html). Other clients and other routes keep the JSON 401. */
int route_signin_page(req_ctx *c)
{
    const char *accept = http_header(c, "Accept");
    if (c->route->start != route_web_asset || strcmp(c->path, "/") || !accept || !strstr(accept, "text/html"))
        return 0;
    const web_asset *a = web_asset_find("#signin");
    if (!a)
        return 0;
    http_respond_asset(c, 401, a->content_type, a->data, a->len, NULL, "no-store");
    return 1;
}
