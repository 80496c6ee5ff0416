/* Image fetching for /api/v1/detect-url with libcurl; the rules are at the
 * top of fetch.h. Everything here blocks: callers run it on their own
 * thread, never on an HTTP I/O thread. */
#include "server/fetch.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#define URL_MAX 8192

static int in_flight; /* atomic */

int fetch_global_init(void)
{
    return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -1;
}

void fetch_global_cleanup(void)
{
    curl_global_cleanup();
}

int fetch_slot_acquire(void)
{
    if (__atomic_add_fetch(&in_flight, 1, __ATOMIC_SEQ_CST) <= FETCH_MAX_IN_FLIGHT)
        return 1;
    __atomic_sub_fetch(&in_flight, 1, __ATOMIC_SEQ_CST);
    return 0;
}

void fetch_slot_release(void)
{
    __atomic_sub_fetch(&in_flight, 1, __ATOMIC_SEQ_CST);
}

/* ---- addresses ------------------------------------------------------------------ */

typedef struct {
    int family; /* AF_INET or AF_INET6 */
    uint8_t a[16];
} ip_addr;

static int ip_from_text(const char *s, ip_addr *ip)
{
    char buf[64];
    size_t n = strlen(s);
    if (n >= 2 && s[0] == '[' && s[n - 1] == ']') { /* "[::1]" as in URLs */
        if (n - 2 >= sizeof buf)
            return -1;
        memcpy(buf, s + 1, n - 2);
        buf[n - 2] = 0;
        s = buf;
    }
    if (inet_pton(AF_INET, s, ip->a) == 1)
        return ip->family = AF_INET, 0;
    if (inet_pton(AF_INET6, s, ip->a) == 1)
        return ip->family = AF_INET6, 0;
    return -1;
}

static int ip_from_sockaddr(const struct sockaddr *sa, ip_addr *ip)
{
    if (sa->sa_family == AF_INET) {
        ip->family = AF_INET;
        memcpy(ip->a, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        return 0;
    }
    if (sa->sa_family == AF_INET6) {
        ip->family = AF_INET6;
        memcpy(ip->a, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
        return 0;
    }
    return -1;
}

static int ip_equal(const ip_addr *x, const ip_addr *y)
{
    return x->family == y->family && !memcmp(x->a, y->a, x->family == AF_INET ? 4 : 16);
}

static int v4_is_public(const uint8_t *b)
{
    uint32_t a = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
    static const struct { uint32_t net; int bits; } deny[] = {
        {0x00000000, 8},  /* "this network" */
        {0x0A000000, 8},  /* private */
        {0x64400000, 10}, /* carrier-grade NAT */
        {0x7F000000, 8},  /* loopback */
        {0xA9FE0000, 16}, /* link-local (cloud metadata lives here) */
        {0xAC100000, 12}, /* private */
        {0xC0000000, 24}, /* IETF protocol assignments */
        {0xC0000200, 24}, /* documentation */
        {0xC0A80000, 16}, /* private */
        {0xC6120000, 15}, /* benchmarking */
        {0xC6336400, 24}, /* documentation */
        {0xCB007100, 24}, /* documentation */
        {0xE0000000, 4},  /* multicast */
        {0xF0000000, 4},  /* reserved, broadcast */
    };
    for (size_t i = 0; i < sizeof deny / sizeof deny[0]; i++)
        if ((a >> (32 - deny[i].bits)) == (deny[i].net >> (32 - deny[i].bits)))
            return 0;
    return 1;
}

/* Public: global unicast (2000::/3) outside documentation and Teredo, with
 * the IPv4 inside 6to4 addresses public too. Mapped/NAT64 forms of IPv4
 * lie outside 2000::/3 (or are checked as their IPv4). */
static int v6_is_public(const uint8_t *b)
{
    static const uint8_t nat64[12] = {0, 0x64, 0xff, 0x9b};
    if (!memcmp(b, nat64, 12))
        return v4_is_public(b + 12);
    if ((b[0] & 0xE0) != 0x20)
        return 0;
    if (b[0] == 0x20 && b[1] == 0x01 && ((b[2] == 0x0d && b[3] == 0xb8) || (b[2] == 0 && b[3] == 0)))
        return 0;
    if (b[0] == 0x20 && b[1] == 0x02)
        return v4_is_public(b + 2);
    return 1;
}

static int ip_is_public(const ip_addr *ip)
{
    return ip->family == AF_INET ? v4_is_public(ip->a) : v6_is_public(ip->a);
}

/* A non-public address is allowed only when named literally in the list. */
static int ip_permitted(const ip_addr *ip, const fetch_rules *r)
{
    if (ip_is_public(ip))
        return 1;
    for (int i = 0; i < r->n_allow; i++) {
        ip_addr lit;
        if (!ip_from_text(r->allow[i], &lit) && ip_equal(&lit, ip))
            return 1;
    }
    return 0;
}

/* ---- URL checks ------------------------------------------------------------------- */

typedef struct {
    char scheme[16];
    char host[256]; /* without brackets or a trailing dot */
    char port[8];
} url_parts;

static int host_equal(const char *a, const char *b)
{
    size_t na = strlen(a), nb = strlen(b);
    if (na >= 2 && a[0] == '[' && a[na - 1] == ']')
        a++, na -= 2;
    if (nb && b[nb - 1] == '.')
        nb--;
    return na == nb && !strncasecmp(a, b, na);
}

static int split_url(const char *url, url_parts *p, char *detail, size_t cap)
{
    if (strlen(url) > URL_MAX) {
        snprintf(detail, cap, "image_url is longer than %d characters", URL_MAX);
        return 400;
    }
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL, *port = NULL;
    int status = 400;
    if (!u) {
        snprintf(detail, cap, "out of memory");
        return 503;
    }
    if (curl_url_set(u, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME) ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) || curl_url_get(u, CURLUPART_HOST, &host, 0) ||
        curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT)) {
        snprintf(detail, cap, "image_url is not a valid absolute URL");
    } else if (strcasecmp(scheme, "http") && strcasecmp(scheme, "https")) {
        snprintf(detail, cap, "image_url must be http:// or https://, not %.16s://", scheme);
        status = 403;
    } else if (strlen(host) >= sizeof p->host || strlen(port) >= sizeof p->port) {
        snprintf(detail, cap, "image_url host is too long");
    } else {
        snprintf(p->scheme, sizeof p->scheme, "%s", scheme);
        size_t n = strlen(host);
        int bracket = n >= 2 && host[0] == '[' && host[n - 1] == ']';
        snprintf(p->host, sizeof p->host, "%.*s", (int)(n - 2 * bracket), host + bracket);
        n = strlen(p->host);
        if (n > 1 && p->host[n - 1] == '.')
            p->host[n - 1] = 0;
        snprintf(p->port, sizeof p->port, "%s", port);
        status = 0;
    }
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_url_cleanup(u);
    return status;
}

static int check_parts(const char *url, const fetch_rules *r, url_parts *p, char *detail, size_t cap)
{
    int status = split_url(url, p, detail, cap);
    if (status)
        return status;
    for (int i = 0; i < r->n_allow; i++)
        if (host_equal(r->allow[i], p->host))
            return 0;
    snprintf(detail, cap, "host '%.200s' is not on the --url-allow list", p->host);
    return 403;
}

int fetch_check_url(const char *url, const fetch_rules *rules, char *detail, size_t cap)
{
    url_parts p;
    return check_parts(url, rules, &p, detail, cap);
}

/* Resolves the host; the first permitted address is the one connected to. */
static int pick_address(const url_parts *p, const fetch_rules *r, ip_addr *out, char *detail, size_t cap)
{
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(p->host, p->port, &hints, &res);
    if (rc || !res) {
        snprintf(detail, cap, "cannot resolve '%.200s': %s", p->host, gai_strerror(rc));
        return 502;
    }
    char first[INET6_ADDRSTRLEN] = "";
    int found = 0;
    for (struct addrinfo *ai = res; ai && !found; ai = ai->ai_next) {
        ip_addr ip;
        if (ip_from_sockaddr(ai->ai_addr, &ip))
            continue;
        if (!first[0])
            inet_ntop(ip.family, ip.a, first, sizeof first);
        if (ip_permitted(&ip, r))
            *out = ip, found = 1;
    }
    freeaddrinfo(res);
    if (found)
        return 0;
    snprintf(detail, cap,
             "'%.200s' resolves to %s, a private, loopback or link-local address; "
             "allow it by listing that address with --url-allow",
             p->host, first[0] ? first : "no usable address");
    return 403;
}

/* ---- the transfer ------------------------------------------------------------------- */

typedef struct {
    uint8_t *data;
    size_t len, cap, max;
    int too_big, nomem;
    ip_addr pinned;
    int blocked;
} transfer;

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *user)
{
    transfer *t = user;
    size_t n = size * nmemb;
    if (n > t->max - t->len) {
        t->too_big = 1;
        return 0; /* aborts the transfer */
    }
    if (t->len + n > t->cap) {
        size_t cap = t->cap ? t->cap : 64 * 1024;
        while (cap < t->len + n)
            cap *= 2;
        if (cap > t->max)
            cap = t->max;
        uint8_t *p = realloc(t->data, cap);
        if (!p) {
            t->nomem = 1;
            return 0;
        }
        t->data = p;
        t->cap = cap;
    }
    memcpy(t->data + t->len, ptr, n);
    t->len += n;
    return n;
}

/* The last line of defence: connect only to the address that was checked. */
static curl_socket_t on_open_socket(void *user, curlsocktype purpose, struct curl_sockaddr *addr)
{
    transfer *t = user;
    ip_addr ip;
    if (purpose != CURLSOCKTYPE_IPCXN || ip_from_sockaddr(&addr->addr, &ip) || !ip_equal(&ip, &t->pinned)) {
        t->blocked = 1;
        return CURL_SOCKET_BAD;
    }
    return socket(addr->family, addr->socktype, addr->protocol);
}

static CURL *make_handle(const char *url, const url_parts *p, const fetch_rules *r, transfer *t,
                         struct curl_slist **pin, char *errbuf)
{
    CURL *h = curl_easy_init();
    if (!h)
        return NULL;
    ip_addr lit;
    if (ip_from_text(p->host, &lit)) { /* a name: pin it to the checked address */
        char addr[INET6_ADDRSTRLEN], entry[300];
        inet_ntop(t->pinned.family, t->pinned.a, addr, sizeof addr);
        snprintf(entry, sizeof entry, t->pinned.family == AF_INET6 ? "%s:%s:[%s]" : "%s:%s:%s", p->host,
                 p->port, addr);
        *pin = curl_slist_append(NULL, entry);
        curl_easy_setopt(h, CURLOPT_RESOLVE, *pin);
    }
    long timeout = r->timeout_ms > 0 ? r->timeout_ms : 1;
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_PROXY, ""); /* never the environment's proxy */
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, timeout);
    curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)r->max_bytes);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, t);
    curl_easy_setopt(h, CURLOPT_OPENSOCKETFUNCTION, on_open_socket);
    curl_easy_setopt(h, CURLOPT_OPENSOCKETDATA, t);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "hadm-server");
    return h;
}

/* The client's status for a finished transfer. */
static int transfer_status(CURL *h, CURLcode rc, const transfer *t, const char *errbuf, char *detail,
                           size_t cap)
{
    if (t->blocked) {
        snprintf(detail, cap, "refused to connect to an address that was not checked");
        return 403;
    }
    if (t->too_big || rc == CURLE_FILESIZE_EXCEEDED) {
        snprintf(detail, cap, "the image at image_url is over the limit of %zu bytes", t->max);
        return 413;
    }
    if (t->nomem) {
        snprintf(detail, cap, "out of memory fetching the image");
        return 503;
    }
    if (rc == CURLE_OPERATION_TIMEDOUT) {
        snprintf(detail, cap, "fetching image_url timed out: %s", errbuf[0] ? errbuf : "no answer");
        return 504;
    }
    if (rc != CURLE_OK) {
        snprintf(detail, cap, "fetching image_url failed: %s", errbuf[0] ? errbuf : curl_easy_strerror(rc));
        return 502;
    }
    long code = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    if (code >= 300 && code < 400) {
        char *to = NULL;
        curl_easy_getinfo(h, CURLINFO_REDIRECT_URL, &to);
        snprintf(detail, cap, "image_url redirects (HTTP %ld to %.300s); redirects are not followed", code,
                 to ? to : "?");
        return 502;
    }
    if (code < 200 || code >= 300) {
        snprintf(detail, cap, "image_url answered HTTP %ld", code);
        return 502;
    }
    return 0;
}

int fetch_url(const char *url, const fetch_rules *rules, uint8_t **data, size_t *len, char *detail,
              size_t cap)
{
    *data = NULL;
    *len = 0;
    url_parts p;
    transfer t = {.max = rules->max_bytes};
    int status = check_parts(url, rules, &p, detail, cap);
    if (!status)
        status = pick_address(&p, rules, &t.pinned, detail, cap);
    if (status)
        return status;
    char errbuf[CURL_ERROR_SIZE] = "";
    struct curl_slist *pin = NULL;
    CURL *h = make_handle(url, &p, rules, &t, &pin, errbuf);
    if (!h) {
        snprintf(detail, cap, "out of memory starting the fetch");
        return 503;
    }
    CURLcode rc = curl_easy_perform(h);
    status = transfer_status(h, rc, &t, errbuf, detail, cap);
    curl_easy_cleanup(h);
    curl_slist_free_all(pin);
    if (status) {
        free(t.data);
        return status;
    }
    *data = t.data;
    *len = t.len;
    return 0;
}
