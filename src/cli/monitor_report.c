/* hadm monitor's reports: a table on the terminal, a JSON file, and one
 * self-contained HTML file (inline CSS and SVG, no scripts, no network) whose
 * timeline shows at a glance where start-up or inference time goes. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "cli/monitor.h"
#include "hadm.h"

void mon_init(mon_report *r, const char *mode, const char *title)
{
    memset(r, 0, sizeof *r);
    snprintf(r->mode, sizeof r->mode, "%s", mode);
    snprintf(r->title, sizeof r->title, "%s", title);
    pthread_mutex_init(&r->lock, NULL);
}

void mon_free(mon_report *r)
{
    free(r->spans);
    free(r->samples);
    free(r->metrics);
    pthread_mutex_destroy(&r->lock);
}

static void *grow(void *p, int *cap, int n, size_t size)
{
    if (n < *cap)
        return p;
    int c = *cap ? *cap * 2 : 32;
    void *q = realloc(p, (size_t)c * size);
    if (q)
        *cap = c;
    return q;
}

void mon_span_add(mon_report *r, const char *lane, const char *label, double t0, double t1)
{
    mon_span *s = grow(r->spans, &r->span_cap, r->nspans, sizeof *s);
    if (!s)
        return;
    r->spans = s;
    s = &r->spans[r->nspans++];
    snprintf(s->lane, sizeof s->lane, "%s", lane);
    snprintf(s->label, sizeof s->label, "%s", label);
    s->t0 = t0;
    s->t1 = t1 < t0 ? t0 : t1;
}

void mon_sample_add(mon_report *r, double t, double rss_mb)
{
    pthread_mutex_lock(&r->lock);
    mon_sample *s = grow(r->samples, &r->sample_cap, r->nsamples, sizeof *s);
    if (s) {
        r->samples = s;
        r->samples[r->nsamples++] = (mon_sample){t, rss_mb};
    }
    pthread_mutex_unlock(&r->lock);
}

mon_metric *mon_metric_add(mon_report *r, const char *name, double value, const char *unit)
{
    mon_metric *m = grow(r->metrics, &r->metric_cap, r->nmetrics, sizeof *m);
    if (!m)
        return NULL;
    r->metrics = m;
    m = &r->metrics[r->nmetrics++];
    memset(m, 0, sizeof *m);
    snprintf(m->name, sizeof m->name, "%s", name);
    snprintf(m->unit, sizeof m->unit, "%s", unit);
    m->value = value;
    return m;
}

void mon_note(mon_report *r, const char *fmt, ...)
{
    if (r->nnotes >= 8)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->notes[r->nnotes++], sizeof r->notes[0], fmt, ap);
    va_end(ap);
}

double mon_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

double mon_rss_mb(int pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    double mb = 0;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) {
            mb = strtod(line + 6, NULL) / 1024.0;
            break;
        }
    if (f)
        fclose(f);
    return mb;
}

static double deviation(const mon_metric *m)
{
    return m->has_server && m->server != 0 ? fabs(m->value - m->server) / fabs(m->server) : 0;
}

static void print_table(const mon_report *r)
{
    printf("hadm monitor --mode %s: %s\n", r->mode, r->title);
    printf("  %-34s %12s   %s\n", "measure", "value", "server /metrics");
    for (int i = 0; i < r->nmetrics; i++) {
        const mon_metric *m = &r->metrics[i];
        printf("  %-34s %10.4g %-3s", m->name, m->value, m->unit);
        if (m->has_server)
            printf("   %.4g (%+.1f%%)", m->server, 100 * (m->value - m->server) / (m->server ? m->server : 1));
        printf("\n");
    }
    for (int i = 0; i < r->nnotes; i++)
        printf("  note: %s\n", r->notes[i]);
}

static char *to_json(const mon_report *r)
{
    cJSON *root = cJSON_CreateObject();
    char when[32];
    time_t now = time(NULL);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    cJSON_AddStringToObject(root, "mode", r->mode);
    cJSON_AddStringToObject(root, "title", r->title);
    cJSON_AddStringToObject(root, "hadm_version", HADM_VERSION);
    cJSON_AddStringToObject(root, "created", when);
    cJSON *ms = cJSON_AddObjectToObject(root, "metrics");
    for (int i = 0; i < r->nmetrics; i++) {
        const mon_metric *m = &r->metrics[i];
        cJSON *o = cJSON_AddObjectToObject(ms, m->name);
        cJSON_AddNumberToObject(o, "value", m->value);
        cJSON_AddStringToObject(o, "unit", m->unit);
        if (m->has_server) {
            cJSON_AddNumberToObject(o, "server", m->server);
            cJSON_AddNumberToObject(o, "deviation", deviation(m));
        }
    }
    cJSON *sp = cJSON_AddArrayToObject(root, "timeline");
    for (int i = 0; i < r->nspans; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "lane", r->spans[i].lane);
        cJSON_AddStringToObject(o, "label", r->spans[i].label);
        cJSON_AddNumberToObject(o, "start_s", r->spans[i].t0);
        cJSON_AddNumberToObject(o, "end_s", r->spans[i].t1);
        cJSON_AddItemToArray(sp, o);
    }
    cJSON *rs = cJSON_AddArrayToObject(root, "rss_mb");
    for (int i = 0; i < r->nsamples; i++) {
        cJSON *pair = cJSON_CreateArray();
        cJSON_AddItemToArray(pair, cJSON_CreateNumber(r->samples[i].t));
        cJSON_AddItemToArray(pair, cJSON_CreateNumber(r->samples[i].rss_mb));
        cJSON_AddItemToArray(rs, pair);
    }
    cJSON *notes = cJSON_AddArrayToObject(root, "notes");
    for (int i = 0; i < r->nnotes; i++)
        cJSON_AddItemToArray(notes, cJSON_CreateString(r->notes[i]));
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    return text;
}

static void html_text(FILE *f, const char *s)
{
    for (; *s; s++)
        switch (*s) {
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '&': fputs("&amp;", f); break;
        case '"': fputs("&quot;", f); break;
        default: fputc(*s, f);
        }
}

static const char *COLORS[] = {"#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#9c755f"};

/* Row of each span: lanes numbered in order of first appearance. Returns the lane count. */
static int assign_lanes(const mon_report *r, int *lane)
{
    int lanes = 0;
    for (int i = 0; i < r->nspans; i++) {
        lane[i] = -1;
        for (int j = 0; j < i && lane[i] < 0; j++)
            if (!strcmp(r->spans[j].lane, r->spans[i].lane))
                lane[i] = lane[j];
        if (lane[i] < 0)
            lane[i] = lanes++;
    }
    return lanes;
}

static void svg_timeline(FILE *f, const mon_report *r)
{
    double end = 1e-3, rss_max = 1;
    for (int i = 0; i < r->nspans; i++)
        end = fmax(end, r->spans[i].t1);
    for (int i = 0; i < r->nsamples; i++) {
        end = fmax(end, r->samples[i].t);
        rss_max = fmax(rss_max, r->samples[i].rss_mb);
    }
    int *lane_of = calloc((size_t)r->nspans + 1, sizeof *lane_of);
    if (!lane_of)
        return;
    int lanes = assign_lanes(r, lane_of);
    const double X0 = 150, W = 820, LANE = 30, top = 30;
    double rss_top = top + lanes * LANE + 20, rss_h = r->nsamples ? 120 : 0;
    double height = rss_top + rss_h + 40;
    fprintf(f, "<svg id=\"timeline\" width=\"1000\" height=\"%.0f\" "
               "font-family=\"sans-serif\" font-size=\"11\">\n", height);
    fprintf(f, "<title>timeline, 0 to %.3f s</title>\n", end);
    for (int k = 0; k <= 10; k++) {   /* time axis */
        double x = X0 + W * k / 10, t = end * k / 10;
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.0f\" x2=\"%.1f\" y2=\"%.0f\" stroke=\"#ddd\"/>"
                   "<text x=\"%.1f\" y=\"%.0f\" text-anchor=\"middle\" fill=\"#555\">%.3g s</text>\n",
                x, top - 5, x, height - 25, x, height - 10, t);
    }
    for (int i = 0; i < r->nspans; i++) {
        const mon_span *s = &r->spans[i];
        int lane = lane_of[i], first = 1;
        for (int j = 0; j < i && first; j++)
            first = lane_of[j] != lane;
        double y = top + lane * LANE, x = X0 + W * s->t0 / end, w = W * (s->t1 - s->t0) / end;
        if (first) {
            fprintf(f, "<text x=\"4\" y=\"%.0f\" class=\"lane\">", y + 18);
            html_text(f, s->lane);
            fprintf(f, "</text>\n");
        }
        fprintf(f, "<g><title>");
        html_text(f, s->label);
        fprintf(f, ": %.4f to %.4f s (%.1f ms)</title>", s->t0, s->t1, 1000 * (s->t1 - s->t0));
        if (w < 1.5)   /* an instant: a marker */
            fprintf(f, "<line x1=\"%.1f\" y1=\"%.0f\" x2=\"%.1f\" y2=\"%.0f\" stroke=\"#333\" stroke-width=\"2\"/>",
                    x, y + 2, x, y + LANE - 4);
        else
            fprintf(f, "<rect class=\"span\" x=\"%.1f\" y=\"%.0f\" width=\"%.1f\" height=\"%.0f\" fill=\"%s\" rx=\"2\"/>",
                    x, y + 4, w, LANE - 10, COLORS[i % 8]);
        if (w > 40 || w < 1.5) {
            fprintf(f, "<text x=\"%.1f\" y=\"%.0f\" fill=\"%s\">", x + 3, y + 18,
                    w < 1.5 ? "#333" : "#fff");
            html_text(f, s->label);
            fprintf(f, "</text>");
        }
        fprintf(f, "</g>\n");
    }
    if (r->nsamples) {
        fprintf(f, "<text x=\"4\" y=\"%.0f\" class=\"lane\">RSS (max %.0f MB)</text>\n<polyline fill=\"none\" "
                   "stroke=\"#e15759\" stroke-width=\"1.5\" points=\"", rss_top + 14, rss_max);
        for (int i = 0; i < r->nsamples; i++)
            fprintf(f, "%.1f,%.1f ", X0 + W * r->samples[i].t / end,
                    rss_top + rss_h - rss_h * r->samples[i].rss_mb / rss_max);
        fprintf(f, "\"/>\n");
    }
    fprintf(f, "</svg>\n");
    free(lane_of);
}

static int write_html(const mon_report *r, const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fprintf(f, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>hadm monitor: %s</title>\n"
               "<style>body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse}"
               "td,th{padding:3px 10px;border-bottom:1px solid #ddd;text-align:right}td:first-child,th:first-child"
               "{text-align:left}.lane{font-weight:bold;fill:#333}.off{color:#b00}</style></head><body>\n",
            r->mode);
    fprintf(f, "<h1>hadm monitor &mdash; %s</h1>\n<p>", r->mode);
    html_text(f, r->title);
    fprintf(f, "</p>\n<h2>Timeline</h2>\n");
    svg_timeline(f, r);
    fprintf(f, "<h2>Measurements</h2>\n<table id=\"metrics\"><tr><th>measure</th><th>value</th><th>unit</th>"
               "<th>server /metrics</th><th>deviation</th></tr>\n");
    for (int i = 0; i < r->nmetrics; i++) {
        const mon_metric *m = &r->metrics[i];
        fprintf(f, "<tr><td>");
        html_text(f, m->name);
        fprintf(f, "</td><td>%.4g</td><td>%s</td>", m->value, m->unit);
        if (m->has_server)
            fprintf(f, "<td>%.4g</td><td%s>%.1f%%</td></tr>\n", m->server, deviation(m) > 0.1 ? " class=\"off\"" : "",
                    100 * deviation(m));
        else
            fprintf(f, "<td></td><td></td></tr>\n");
    }
    fprintf(f, "</table>\n");
    for (int i = 0; i < r->nnotes; i++) {
        fprintf(f, "<p class=\"note\">");
        html_text(f, r->notes[i]);
        fprintf(f, "</p>\n");
    }
    fprintf(f, "<p><small>hadm %s</small></p>\n</body></html>\n", HADM_VERSION);
    return fclose(f) == 0 ? 0 : -1;
}

int mon_finish(mon_report *r, const char *base)
{
    print_table(r);
    char json_path[4096], html_path[4096];
    size_t n = strlen(base);
    int has_ext = n > 5 && (!strcmp(base + n - 5, ".json") || !strcmp(base + n - 5, ".html"));
    snprintf(json_path, sizeof json_path, "%.*s.json", (int)(has_ext ? n - 5 : n), base);
    snprintf(html_path, sizeof html_path, "%.*s.html", (int)(has_ext ? n - 5 : n), base);
    char *json = to_json(r);
    FILE *f = json ? fopen(json_path, "w") : NULL;
    int ok = f && fputs(json, f) >= 0 && fputc('\n', f) != EOF;
    if (f && fclose(f) != 0)
        ok = 0;
    free(json);
    if (!ok || write_html(r, html_path) != 0) {
        cli_error("cannot write the report %s / %s", json_path, html_path);
        return -1;
    }
    printf("report: %s, %s\n", json_path, html_path);
    return 0;
}
