/* Drives the real HTTP request handling (src/server: routing, API key, body
 * limits, the multipart/urlencoded form collector, the JSON and KServe route
 * parsers, image probing) in-process: one libmicrohttpd daemon without socket
 * or thread (http_daemon_embedded), one socketpair connection per input. No
 * model is configured, so a request that gets through parsing is answered 503
 * by the scheduler at once and nothing runs inference.
 *
 * Input layout:
 *   byte 0         route: paths[byte % npaths]
 *   line           query string (the part after '?'; may be empty)
 *   lines          request headers "Name: value", up to an empty line
 *   rest           the body, sent with its Content-Length
 * Lines end at '\n'. Control bytes become '_' (the head must stay one HTTP
 * request); Host, Connection, Content-Length and Transfer-Encoding headers
 * are dropped (the harness sets them). The configured API key is "fuzz-key".
 *
 * Checked on every input: exactly one well-formed response, never a 500,
 * JSON bodies parse, and the request context is freed once it is done. */
#ifndef HADM_FUZZ_SERVER_HARNESS_H
#define HADM_FUZZ_SERVER_HARNESS_H

#include <stddef.h>
#include <stdint.h>

/* Returns the HTTP status of the response. */
int harness_request(const char *const *paths, int npaths, const uint8_t *data, size_t size);

#endif
