/* hadm monitor: what a measurement run collects (spans on a timeline, memory
 * samples, named numbers with the server's own figure beside them) and how it
 * is reported (terminal table, JSON, self-contained HTML with an SVG
 * timeline). monitor.c runs the load and inference modes, monitor_startup.c
 * the startup mode, monitor_report.c writes the reports. */
#ifndef HADM_CLI_MONITOR_H
#define HADM_CLI_MONITOR_H

#include <pthread.h>

typedef struct {
    char lane[48];      /* timeline row, e.g. "hadm-l" or "server" */
    char label[96];
    double t0, t1;      /* seconds from the start of the run; t1 == t0 is a marker */
} mon_span;

typedef struct {
    double t, rss_mb;
} mon_sample;

typedef struct {
    char name[64];
    char unit[12];
    double value;
    double server;      /* the server's own figure (/metrics), when has_server */
    int has_server;
} mon_metric;

typedef struct {
    char mode[16];
    char title[128];
    mon_span *spans;
    int nspans, span_cap;
    mon_sample *samples;
    int nsamples, sample_cap;
    mon_metric *metrics;
    int nmetrics, metric_cap;
    char notes[8][300];
    int nnotes;
    pthread_mutex_t lock;   /* samples come from a sampler thread */
} mon_report;

void mon_init(mon_report *r, const char *mode, const char *title);
void mon_free(mon_report *r);
void mon_span_add(mon_report *r, const char *lane, const char *label, double t0, double t1);
void mon_sample_add(mon_report *r, double t, double rss_mb);
mon_metric *mon_metric_add(mon_report *r, const char *name, double value, const char *unit);
void mon_note(mon_report *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Seconds on the monotonic clock. */
double mon_now(void);
/* Resident set size of a process in MB (0 when unknown). */
double mon_rss_mb(int pid);

/* Writes BASE.json and BASE.html; prints the table; returns 0 or -1 (message printed). */
int mon_finish(mon_report *r, const char *base);

/* A synthetic test photo as a PNG file image (uncompressed deflate), malloc'd. */
unsigned char *mon_make_png(int w, int h, size_t *len);

/* ---- modes ---- */
typedef struct {
    const char *models_dir, *local, *global, *image;
    int lazy, runs, threads;
} mon_options;

/* Resolves the model paths like hadm serve does (.pth through the cache). */
int mon_model_paths(const mon_options *o, char *paths[2]);

int monitor_startup(const mon_options *o, mon_report *r);

#endif
