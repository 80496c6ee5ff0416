/* The web console's files (web/), embedded at build time by
 * cmake/embed_assets.cmake into a generated web_assets.c. */
#ifndef HADM_SERVER_WEB_ASSETS_H
#define HADM_SERVER_WEB_ASSETS_H
#include <stddef.h>

typedef struct {
    const char *url;          /* "/" for the page, "/console.js", ...; "" for ones only served indirectly */
    const char *content_type;
    const unsigned char *data; /* followed by a 0 byte not counted in len */
    size_t len;
    const char *etag;         /* quoted, as sent in the ETag header */
} web_asset;

extern const web_asset WEB_ASSETS[];
extern const int WEB_ASSET_COUNT;

/* The asset served at url, or NULL. */
const web_asset *web_asset_find(const char *url);
#endif
