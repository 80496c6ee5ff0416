/* hadm monitor --mode startup: starts `hadm serve` (this same binary) on a
 * free port and records exec -> listening -> first answer -> ready -> first
 * detect -> N more, the model loads it logs, and its RSS every 25 ms; then
 * reads its /metrics to set the server's own figures beside ours. */
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/monitor.h"
#include "io/pth.h"

/* ---- a test image: PNG with stored (uncompressed) deflate blocks ---- */

static void be32(unsigned char *p, uint32_t v) { p[0] = v >> 24, p[1] = (v >> 16) & 255, p[2] = (v >> 8) & 255, p[3] = v & 255; }

static unsigned char *chunk(unsigned char *p, const char *type, const unsigned char *data, uint32_t n)
{
    be32(p, n);
    memcpy(p + 4, type, 4);
    if (n)
        memcpy(p + 8, data, n);
    be32(p + 8 + n, pth_crc32(0, p + 4, n + 4));
    return p + 12 + n;
}

unsigned char *mon_make_png(int w, int h, size_t *len)
{
    size_t raw_n = (size_t)h * (1 + 3 * (size_t)w), blocks = raw_n / 65535 + 1;
    size_t z_n = 2 + raw_n + 5 * blocks + 4;
    unsigned char *raw = malloc(raw_n), *z = malloc(z_n), *png = malloc(z_n + 100);
    if (!raw || !z || !png) {
        free(raw), free(z), free(png);
        return NULL;
    }
    for (int y = 0; y < h; y++) {   /* sky, ground and a figure-like blob, so detection has work */
        unsigned char *row = raw + (size_t)y * (1 + 3 * (size_t)w);
        row[0] = 0;
        for (int x = 0; x < w; x++) {
            int dx = x - w / 2, dy = y - h / 2, body = dx * dx * 4 + dy * dy < (h / 3) * (h / 3);
            row[1 + 3 * x] = (unsigned char)(body ? 200 : y < h / 2 ? 90 + y * 100 / h : 60 + (x * 7 + y * 3) % 50);
            row[2 + 3 * x] = (unsigned char)(body ? 150 : y < h / 2 ? 140 + y * 80 / h : 110 + (x * 5) % 40);
            row[3 + 3 * x] = (unsigned char)(body ? 120 : y < h / 2 ? 230 : 50);
        }
    }
    unsigned char *q = z;
    *q++ = 0x78, *q++ = 0x01;
    uint32_t a = 1, b = 0;
    for (size_t off = 0; off < raw_n;) {
        size_t n = raw_n - off < 65535 ? raw_n - off : 65535;
        *q++ = off + n == raw_n;
        *q++ = n & 255, *q++ = (unsigned char)(n >> 8), *q++ = ~n & 255, *q++ = (unsigned char)(~n >> 8);
        memcpy(q, raw + off, n);
        for (size_t i = 0; i < n; i++)
            a = (a + raw[off + i]) % 65521, b = (b + a) % 65521;
        q += n, off += n;
    }
    be32(q, b << 16 | a);
    q += 4;
    unsigned char ihdr[13] = {0}, *p = png;
    be32(ihdr, (uint32_t)w), be32(ihdr + 4, (uint32_t)h), ihdr[8] = 8, ihdr[9] = 2;
    memcpy(p, "\x89PNG\r\n\x1a\n", 8);
    p = chunk(p + 8, "IHDR", ihdr, 13);
    p = chunk(p, "IDAT", z, (uint32_t)(q - z));
    p = chunk(p, "IEND", NULL, 0);
    *len = (size_t)(p - png);
    free(raw);
    free(z);
    return png;
}

/* ---- HTTP/1.1 over loopback, one request per connection ---- */

static int http(int port, const char *method, const char *path, const char *ctype, const void *body, size_t blen,
                char **resp, int *status)
{
    *resp = NULL;
    *status = 0;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {600, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    char head[512];
    int hn = snprintf(head, sizeof head, "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n"
                      "Content-Type: %s\r\nContent-Length: %zu\r\n\r\n", method, path, port, ctype ? ctype : "text/plain", blen);
    int ok = write(fd, head, (size_t)hn) == hn;
    for (size_t off = 0; ok && off < blen;) {
        ssize_t w = write(fd, (const char *)body + off, blen - off);
        ok = w > 0;
        off += ok ? (size_t)w : 0;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    ssize_t got;
    while (ok && buf && (got = read(fd, buf + n, cap - n)) > 0) {
        n += (size_t)got;
        if (n == cap) {
            char *nb = realloc(buf, 2 * cap + 1);
            if (!nb)
                break;
            buf = nb, cap *= 2;
        }
    }
    close(fd);
    if (!buf || !ok || n < 12 || strncmp(buf, "HTTP/1.", 7)) {
        free(buf);
        return -1;
    }
    buf[n] = 0;
    *status = atoi(buf + 9);
    *resp = buf;
    return 0;
}

/* Value of the exposition line starting with `series` (name{labels}), or -1. */
static double metric(const char *text, const char *series)
{
    size_t k = strlen(series);
    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (!strncmp(p, series, k) && p[k] == ' ')
            return strtod(p + k + 1, NULL);
    return -1;
}

/* ---- the server process: its log and its memory ---- */

typedef struct {
    pid_t pid;
    FILE *log;
    double origin;
    mon_report *r;
    pthread_mutex_t lock;
    pthread_cond_t changed;
    int port, exited, stop_sampling;
    double t_listen, t_loaded[2], load_s[2];
    char last_line[300];
} server;

static void on_event(server *s, const cJSON *e, double t)
{
    const cJSON *ev = cJSON_GetObjectItem(e, "event"), *model = cJSON_GetObjectItem(e, "model");
    if (!cJSON_IsString(ev))
        return;
    if (!strcmp(ev->valuestring, "listening") && !s->t_listen) {
        s->port = cJSON_GetObjectItem(e, "port") ? cJSON_GetObjectItem(e, "port")->valueint : 0;
        s->t_listen = t;
    } else if (!strcmp(ev->valuestring, "model_loaded") && cJSON_IsString(model)) {
        int i = !strcmp(model->valuestring, "hadm-g");
        const cJSON *total = cJSON_GetObjectItem(e, "total_s");
        s->t_loaded[i] = t;
        s->load_s[i] = cJSON_IsNumber(total) ? total->valuedouble : 0;
    }
}

static void *read_log(void *arg)
{
    server *s = arg;
    char line[8192];
    while (fgets(line, sizeof line, s->log)) {
        double t = mon_now() - s->origin;
        cJSON *e = cJSON_Parse(line);
        pthread_mutex_lock(&s->lock);
        if (e)
            on_event(s, e, t);
        else
            snprintf(s->last_line, sizeof s->last_line, "%.*s", (int)strcspn(line, "\n"), line);
        pthread_cond_broadcast(&s->changed);
        pthread_mutex_unlock(&s->lock);
        cJSON_Delete(e);
    }
    pthread_mutex_lock(&s->lock);
    s->exited = 1;
    pthread_cond_broadcast(&s->changed);
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

static void *sample_rss(void *arg)
{
    server *s = arg;
    for (;;) {
        pthread_mutex_lock(&s->lock);
        int stop = s->stop_sampling || s->exited;
        pthread_mutex_unlock(&s->lock);
        if (stop)
            break;
        double mb = mon_rss_mb(s->pid);
        if (mb > 0)
            mon_sample_add(s->r, mon_now() - s->origin, mb);
        usleep(25000);
    }
    return NULL;
}

static int spawn_server(const mon_options *o, server *s)
{
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    int fds[2];
    if (n <= 0 || pipe2(fds, O_CLOEXEC) != 0)
        return -1;
    exe[n] = 0;
    char threads[16];
    snprintf(threads, sizeof threads, "%d", o->threads);
    const char *argv[16] = {exe, "serve", "--host", "127.0.0.1", "--port", "0"};
    int k = 6;
    if (o->models_dir)
        argv[k++] = "--models", argv[k++] = o->models_dir;
    if (o->local)
        argv[k++] = "--local", argv[k++] = o->local;
    if (o->global)
        argv[k++] = "--global", argv[k++] = o->global;
    if (o->lazy)
        argv[k++] = "--lazy";
    if (o->threads)
        argv[k++] = "--threads", argv[k++] = threads;
    s->origin = mon_now();
    s->pid = fork();
    if (s->pid == 0) {
        dup2(fds[1], 1);
        dup2(fds[1], 2);
        execv(exe, (char *const *)argv);
        _exit(127);
    }
    close(fds[1]);
    if (s->pid < 0 || !(s->log = fdopen(fds[0], "r"))) {
        close(fds[0]);
        return -1;
    }
    return 0;
}

/* Waits until pred(s) holds, the server exits, or timeout seconds pass. */
static int wait_for(server *s, int (*pred)(const server *), double timeout)
{
    double end = mon_now() + timeout;
    pthread_mutex_lock(&s->lock);
    while (!pred(s) && !s->exited && mon_now() < end) {
        pthread_mutex_unlock(&s->lock);
        usleep(2000);
        pthread_mutex_lock(&s->lock);
    }
    int ok = pred(s);
    pthread_mutex_unlock(&s->lock);
    return ok;
}

static int listening(const server *s) { return s->t_listen > 0 && s->port > 0; }

/* Polls GET path every 5 ms until it answers 200; returns the time or -1. */
static double poll_until_ok(server *s, const char *path, double timeout)
{
    double end = mon_now() + timeout;
    while (mon_now() < end && !s->exited) {
        char *resp;
        int st;
        if (http(s->port, "GET", path, NULL, "", 0, &resp, &st) == 0 && st == 200) {
            free(resp);
            return mon_now() - s->origin;
        }
        free(resp);
        usleep(5000);
    }
    return -1;
}

/* ---- the run ---- */

static char *multipart(const unsigned char *img, size_t n, size_t *len)
{
    static const char *B = "hadmmonitorboundary7MA4YWxk";
    char head[512], tail[256];
    int hn = snprintf(head, sizeof head, "--%s\r\nContent-Disposition: form-data; name=\"mode\"\r\n\r\nboth\r\n"
                      "--%s\r\nContent-Disposition: form-data; name=\"file\"; filename=\"image.png\"\r\n"
                      "Content-Type: image/png\r\n\r\n", B, B);
    int tn = snprintf(tail, sizeof tail, "\r\n--%s--\r\n", B);
    char *body = malloc((size_t)hn + n + (size_t)tn);
    if (!body)
        return NULL;
    memcpy(body, head, (size_t)hn);
    memcpy(body + hn, img, n);
    memcpy(body + hn + n, tail, (size_t)tn);
    *len = (size_t)hn + n + (size_t)tn;
    return body;
}

static int detect_once(server *s, const char *body, size_t len, double *t0, double *t1)
{
    char *resp;
    int st = 0;
    *t0 = mon_now() - s->origin;
    int rc = http(s->port, "POST", "/api/v1/detect", "multipart/form-data; boundary=hadmmonitorboundary7MA4YWxk", body,
                  len, &resp, &st);
    *t1 = mon_now() - s->origin;
    if (rc || st != 200)
        cli_error("detect request failed (HTTP %d)%s%.200s", st, resp ? ": " : "", resp ? resp : "");
    free(resp);
    return rc || st != 200 ? -1 : 0;
}

static void stop_server(server *s)
{
    kill(s->pid, SIGTERM);
    for (int i = 0; i < 200; i++) {   /* up to 10 s for a clean shutdown */
        if (waitpid(s->pid, NULL, WNOHANG) == s->pid)
            return;
        usleep(50000);
    }
    kill(s->pid, SIGKILL);
    waitpid(s->pid, NULL, 0);
}

/* The server's own numbers beside ours. */
static void compare_metrics(server *s, mon_report *r, const double *lat, int n)
{
    char *text;
    int st;
    double rss_before = mon_rss_mb(s->pid);   /* read around the server's own reading */
    int got = http(s->port, "GET", "/metrics", NULL, "", 0, &text, &st);
    double rss_after = mon_rss_mb(s->pid);
    if (got != 0 || st != 200) {
        mon_note(r, "could not read the server's /metrics (HTTP %d)", st);
        free(text);
        return;
    }
    const char *names[2] = {"hadm-l", "hadm-g"};
    for (int i = 0; i < 2; i++) {
        char series[128], key[64];
        snprintf(series, sizeof series, "hadm_model_load_seconds{model=\"%s\"}", names[i]);
        double v = metric(text, series);
        if (v < 0 || !s->t_loaded[i])
            continue;
        snprintf(key, sizeof key, "%s.load_s (listening to loaded)", names[i]);
        mon_metric *m = mon_metric_add(r, key, s->t_loaded[i] - s->t_listen, "s");
        if (m)
            m->server = v, m->has_server = 1;
    }
    double sum = metric(text, "hadm_http_request_duration_seconds_sum{route=\"/api/v1/detect\",status=\"200\"}");
    double cnt = metric(text, "hadm_http_request_duration_seconds_count{route=\"/api/v1/detect\",status=\"200\"}");
    double mean = 0;
    for (int i = 0; i < n; i++)
        mean += lat[i] / n;
    mon_metric *m = mon_metric_add(r, "detect_mean_s (all requests)", mean, "s");
    if (m && cnt > 0)
        m->server = sum / cnt, m->has_server = 1;
    if (cnt >= 0 && (int)cnt != n)
        mon_note(r, "the server counted %.0f detect requests, the monitor sent %d", cnt, n);
    double rss = metric(text, "hadm_process_resident_memory_bytes");
    m = mon_metric_add(r, "rss_mb (at /metrics)", (rss_before + rss_after) / 2, "MB");
    if (m && rss > 0)
        m->server = rss / (1024.0 * 1024.0), m->has_server = 1;
    free(text);
}

static int run_requests(const mon_options *o, server *s, mon_report *r)
{
    size_t img_n = 0, len = 0;
    unsigned char *img = NULL;
    if (o->image) {
        FILE *f = fopen(o->image, "rb");
        if (f && fseek(f, 0, SEEK_END) == 0 && (img_n = (size_t)ftell(f)) > 0 && fseek(f, 0, SEEK_SET) == 0 &&
            (img = malloc(img_n)) && fread(img, 1, img_n, f) != img_n) {
            free(img);
            img = NULL;
        }
        if (f)
            fclose(f);
    } else {
        img = mon_make_png(1024, 768, &img_n);
    }
    char *body = img ? multipart(img, img_n, &len) : NULL;
    free(img);
    if (!body) {
        cli_error("cannot read the image %s", o->image ? o->image : "(synthetic)");
        return 1;
    }
    int runs = o->runs > 0 ? o->runs : 10, rc = 0;
    double *lat = calloc((size_t)runs + 1, sizeof *lat), t0, t1;
    for (int k = 0; lat && k <= runs && !rc; k++) {
        rc = detect_once(s, body, len, &t0, &t1);
        lat[k] = t1 - t0;
        char label[32];
        snprintf(label, sizeof label, k ? "detect %d" : "first detect", k);
        mon_span_add(r, k ? "requests" : "server", label, t0, t1);
        if (!k && !rc)
            mon_metric_add(r, "first_detect_s", lat[0], "s");
    }
    if (!rc && lat) {
        double rest[runs];
        memcpy(rest, lat + 1, sizeof rest);
        for (int i = 1; i < runs; i++)   /* sort the N after the first for percentiles */
            for (int j = i; j > 0 && rest[j - 1] > rest[j]; j--) {
                double t = rest[j];
                rest[j] = rest[j - 1], rest[j - 1] = t;
            }
        mon_metric_add(r, "detect_p50_s", rest[(runs - 1) / 2], "s");
        mon_metric_add(r, "detect_p95_s", rest[(int)(0.95 * runs + 0.999999) - 1], "s");
        compare_metrics(s, r, lat, runs + 1);
    }
    free(lat);
    free(body);
    return rc;
}

static int loaded_both(const server *s) { return s->t_loaded[0] > 0 && s->t_loaded[1] > 0; }

int monitor_startup(const mon_options *o, mon_report *r)
{
    server s = {.r = r};
    pthread_mutex_init(&s.lock, NULL);
    pthread_cond_init(&s.changed, NULL);
    if (spawn_server(o, &s) != 0) {
        cli_error("cannot start hadm serve");
        return 1;
    }
    pthread_t logger, sampler;
    pthread_create(&logger, NULL, read_log, &s);
    pthread_create(&sampler, NULL, sample_rss, &s);
    int rc = 1;
    double t_health = -1, t_ready = -1;
    if (!wait_for(&s, listening, 120)) {
        cli_error("hadm serve did not start listening%s%s", s.last_line[0] ? ": " : "", s.last_line);
    } else if ((t_health = poll_until_ok(&s, "/health", 30)) < 0) {
        cli_error("hadm serve never answered /health");
    } else if (!o->lazy && (t_ready = poll_until_ok(&s, "/ready", 1800)) < 0) {
        cli_error("hadm serve never became ready%s%s", s.last_line[0] ? ": " : "", s.last_line);
    } else {
        mon_span_add(r, "server", "exec to listening", 0, s.t_listen);
        mon_span_add(r, "server", "first answer (/health)", t_health, t_health);
        mon_metric_add(r, "listening_s (from exec)", s.t_listen, "s");
        mon_metric_add(r, "first_answer_s (from exec)", t_health, "s");
        if (!o->lazy) {
            mon_span_add(r, "server", "loading, /ready 503", s.t_listen, t_ready);
            mon_metric_add(r, "ready_s (from exec)", t_ready, "s");
        }
        rc = run_requests(o, &s, r);
    }
    pthread_mutex_lock(&s.lock);
    s.stop_sampling = 1;
    pthread_mutex_unlock(&s.lock);
    pthread_join(sampler, NULL);
    const char *names[2] = {"hadm-l", "hadm-g"};
    for (int i = 0; i < 2; i++)
        if (s.t_loaded[i] > 0)
            mon_span_add(r, names[i], "model load (server log)", s.t_loaded[i] - s.load_s[i], s.t_loaded[i]);
    if (wait_for(&s, loaded_both, 0) && s.load_s[0] > 0 && s.load_s[1] > 0) {
        double first = fmin(s.t_loaded[0] - s.load_s[0], s.t_loaded[1] - s.load_s[1]);
        double wall = fmax(s.t_loaded[0], s.t_loaded[1]) - first, slower = fmax(s.load_s[0], s.load_s[1]);
        mon_metric_add(r, "both_models_loaded_s", wall, "s");
        mon_metric_add(r, "load_wall_vs_slower", wall / slower, "x");
        mon_note(r, "both models loaded in %.3f s; the slower alone took %.3f s, the two one after the other %.3f s",
                 wall, slower, s.load_s[0] + s.load_s[1]);
    }
    stop_server(&s);
    pthread_join(logger, NULL);
    fclose(s.log);
    pthread_mutex_destroy(&s.lock);
    pthread_cond_destroy(&s.changed);
    return rc;
}
