/* Fetching an image by URL for POST /api/v1/detect-url (DESIGN.md "HTTP API").
 *
 * Rules, all enforced here:
 * - only http:// and https:// (libcurl is restricted to both protocols);
 * - the URL's host must equal an allow-list entry (case-insensitive, exact:
 *   no wildcards, no subdomains);
 * - the host is resolved once; a loopback, private, link-local, CGNAT,
 *   multicast or otherwise non-public address is used only when that literal
 *   address is itself an allow-list entry (`--url-allow 127.0.0.1` allows
 *   http://127.0.0.1:8000/..., while `--url-allow localhost` does not let
 *   http://localhost/ reach 127.0.0.1). The address checked is the address
 *   connected to: it is pinned with CURLOPT_RESOLVE and checked again in
 *   the socket callback, so a DNS answer that changes in between (rebinding)
 *   cannot bypass the check. Proxies from the environment are ignored;
 * - redirects are not followed (a 3xx answer is a 502 naming the target);
 * - the size is bounded (the server's body limit; beyond: 413, the transfer
 *   is aborted) and so is the time (the caller's timeout: 504).
 * DNS resolution itself (getaddrinfo) is bounded by the system resolver only.
 */
#ifndef HADM_SERVER_FETCH_H
#define HADM_SERVER_FETCH_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *const *allow; /* host names or literal addresses */
    int n_allow;
    size_t max_bytes;         /* 413 beyond */
    long timeout_ms;          /* the whole transfer, connect included: 504 beyond */
} fetch_rules;

/* Most fetches running at once; more are answered 503. */
#define FETCH_MAX_IN_FLIGHT 8

/* Once at server start / stop (libcurl's global state). 0 on success. */
int fetch_global_init(void);
void fetch_global_cleanup(void);

/* The checks that need no network (syntax, scheme, allow-list), so a bad
 * request is answered on the HTTP thread: 0, or an HTTP status (400, 403)
 * with the reason in detail. */
int fetch_check_url(const char *url, const fetch_rules *rules, char *detail, size_t cap);

/* Claims one of FETCH_MAX_IN_FLIGHT slots: 1 claimed, 0 all busy. */
int fetch_slot_acquire(void);
void fetch_slot_release(void);

/* Blocking: checks, resolves and downloads. 0 with the bytes in *data
 * (malloc'd, the caller frees) and *len; or an HTTP status for the client
 * (400, 403, 413, 502, 503, 504) with the reason in detail. */
int fetch_url(const char *url, const fetch_rules *rules, uint8_t **data, size_t *len, char *detail,
              size_t cap);

#endif
