/* See server_harness.h. */
#include "server_harness.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fuzz.h"
#include "server/http.h"

#define MAX_HEADERS 16
#define MAX_LINE 1024
#define STALL_ROUNDS 20000

static server SRV;
static struct MHD_Daemon *DAEMON;

/* A small body limit, so that the fuzzer's inputs reach the 413 paths. */
static void harness_init(void)
{
    static const char *const keys[] = {"fuzz-key"};
    server_config cfg = {.host = "127.0.0.1", .http_threads = 1, .max_body = 4096,
                         .max_pixels = 1 << 20, .request_timeout_ms = 30000, .max_batch_images = 8,
                         .api_keys = keys, .n_api_keys = 1};
    registry_config rc = {.open = {.threads = 1}};
    sched_config sc = {.max_batch = 1, .max_queue = 4, .max_pixels = cfg.max_pixels};
    hadm_error err = {0};
#ifdef HADM_LIBFUZZER
    /* The server logs one line per request to stderr: millions in a fuzz run.
     * glibc lets a program point stderr elsewhere; libFuzzer and the
     * sanitizers keep writing to fd 2, and so does FUZZ_CHECK. */
    FILE *null = fopen("/dev/null", "w");
    if (null)
        stderr = null;
#endif
    SRV.cfg = cfg;
    FUZZ_CHECK((SRV.reg = registry_new(&rc)));
    FUZZ_CHECK((SRV.sch = sched_new(&sc, SRV.reg, &err)));
    FUZZ_CHECK((SRV.met = metrics_new()));
    FUZZ_CHECK((DAEMON = http_daemon_embedded(&SRV)));
}

typedef struct {
    char *p;
    size_t len, cap;
} text;

static void add(text *t, const void *s, size_t n)
{
    if (t->len + n + 1 > t->cap) {
        size_t cap = (t->len + n + 1) * 2;
        char *p = realloc(t->p, cap);
        FUZZ_CHECK(p);
        t->p = p;
        t->cap = cap;
    }
    memcpy(t->p + t->len, s, n);
    t->len += n;
    t->p[t->len] = '\0';
}

static void add_str(text *t, const char *s) { add(t, s, strlen(s)); }

/* The next '\n'-terminated line of the input, at most MAX_LINE bytes kept. */
static size_t next_line(const uint8_t **p, const uint8_t *end, char *out, int query)
{
    size_t n = 0;
    while (*p < end && **p != '\n') {
        uint8_t c = *(*p)++;
        int bad = c < 0x20 || c == 0x7f || (query && (c == ' ' || c == '#'));
        if (n < MAX_LINE)
            out[n++] = bad ? '_' : (char)c;
    }
    if (*p < end)
        (*p)++;
    out[n] = '\0';
    return n;
}

static int header_allowed(const char *line)
{
    static const char *const own[] = {"host:", "connection:", "content-length:", "transfer-encoding:"};
    if (line[0] == ' ' || line[0] == '\t' || line[0] == ':' || !strchr(line, ':'))
        return 0;
    for (size_t i = 0; i < sizeof own / sizeof *own; i++)
        if (!strncasecmp(line, own[i], strlen(own[i])))
            return 0;
    return 1;
}

static void build_request(const char *path, const uint8_t *p, const uint8_t *end, text *req)
{
    char line[MAX_LINE + 1];
    add_str(req, "POST ");
    add_str(req, path);
    if (next_line(&p, end, line, 1)) {
        add_str(req, "?");
        add_str(req, line);
    }
    add_str(req, " HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n");
    for (int i = 0; i < MAX_HEADERS && p < end && next_line(&p, end, line, 0); i++)
        if (header_allowed(line)) {
            add_str(req, line);
            add_str(req, "\r\n");
        }
    char cl[64];
    snprintf(cl, sizeof cl, "Content-Length: %zu\r\n\r\n", (size_t)(end - p));
    add_str(req, cl);
    add(req, p, (size_t)(end - p));
}

/* Sends the request and collects the bytes until the server closes. */
static void exchange(const text *req, text *resp)
{
    int sv[2];
    FUZZ_CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    FUZZ_CHECK(fcntl(sv[1], F_SETFL, O_NONBLOCK) == 0);
    struct sockaddr_in peer = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    FUZZ_CHECK(MHD_add_connection(DAEMON, sv[0], (const struct sockaddr *)&peer, sizeof peer) == MHD_YES);
    size_t sent = 0;
    for (int idle = 0; idle < STALL_ROUNDS;) {
        int progress = 0;
        if (sent < req->len) {
            ssize_t k = send(sv[1], req->p + sent, req->len - sent, MSG_NOSIGNAL);
            if (k > 0)
                sent += (size_t)k, progress = 1;
            else if (k < 0 && errno != EAGAIN && errno != EINTR)
                sent = req->len; /* the server closed early: it may have answered */
        }
        MHD_run(DAEMON);
        char buf[16384];
        ssize_t r = recv(sv[1], buf, sizeof buf, 0);
        if (r == 0)
            break;
        if (r > 0)
            add(resp, buf, (size_t)r), progress = 1;
        idle = progress ? 0 : idle + 1;
    }
    close(sv[1]);
    /* Let the daemon see the close and free the request context. */
    for (int i = 0; i < STALL_ROUNDS && __atomic_load_n(&SRV.active, __ATOMIC_SEQ_CST); i++)
        MHD_run(DAEMON);
    FUZZ_CHECK(__atomic_load_n(&SRV.active, __ATOMIC_SEQ_CST) == 0);
}

static const char *find_header(const char *head, size_t head_len, const char *name)
{
    size_t n = strlen(name);
    const char *end = head + head_len;
    for (const char *p = head; p < end;) {
        const char *eol = strstr(p, "\r\n");
        if (!eol || eol > end)
            eol = end;
        if ((size_t)(eol - p) > n && !strncasecmp(p, name, n) && p[n] == ':')
            return p + n + 1;
        p = eol + 2;
    }
    return NULL;
}

/* Exactly one response: status line, headers, and a body of Content-Length. */
static int check_response(const text *resp)
{
    FUZZ_CHECK(resp->len > 12 && !memcmp(resp->p, "HTTP/1.1 ", 9));
    int status = atoi(resp->p + 9);
    FUZZ_CHECK(status >= 200 && status < 600 && status != 500);
    const char *end = strstr(resp->p, "\r\n\r\n");
    FUZZ_CHECK(end);
    size_t head_len = (size_t)(end - resp->p), body_at = head_len + 4;
    const char *cl = find_header(resp->p, head_len, "Content-Length");
    FUZZ_CHECK(cl);
    FUZZ_CHECK(resp->len == body_at + strtoull(cl, NULL, 10));
    const char *ct = find_header(resp->p, head_len, "Content-Type");
    while (ct && *ct == ' ')
        ct++;
    if (ct && !strncmp(ct, "application/json", 16)) {
        cJSON *j = cJSON_ParseWithLength(resp->p + body_at, resp->len - body_at);
        FUZZ_CHECK(cJSON_IsObject(j));
        cJSON_Delete(j);
    }
    return status;
}

int harness_request(const char *const *paths, int npaths, const uint8_t *data, size_t size)
{
    if (!DAEMON)
        harness_init();
    if (size == 0)
        return 0;
    text req = {0}, resp = {0};
    build_request(paths[data[0] % npaths], data + 1, data + size, &req);
    exchange(&req, &resp);
    int status = check_response(&resp);
    free(req.p);
    free(resp.p);
    return status;
}
