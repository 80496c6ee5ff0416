/* Printing `hadm detect` results (see detect_output.h). Floats are printed
 * with %.9g, enough digits for a float to round-trip exactly. */
#include "cli/detect_output.h"

#include <math.h>
#include <string.h>

void json_write_string(FILE *out, const char *s)
{
    fputc('"', out);
    for (const unsigned char *c = (const unsigned char *)(s ? s : ""); *c; c++) {
        switch (*c) {
        case '"': fputs("\\\"", out); break;
        case '\\': fputs("\\\\", out); break;
        case '\n': fputs("\\n", out); break;
        case '\r': fputs("\\r", out); break;
        case '\t': fputs("\\t", out); break;
        default:
            if (*c < 0x20 || *c == 0x7f)
                fprintf(out, "\\u%04x", *c);
            else
                fputc(*c, out);
        }
    }
    fputc('"', out);
}

/* JSON has no NaN or infinity; the engine never produces them, but a number
 * that is not finite must not make the whole output unparseable. */
static void json_write_float(FILE *out, float v)
{
    if (isfinite(v))
        fprintf(out, "%.9g", (double)v);
    else
        fputs("null", out);
}

static void json_write_det(FILE *out, const hadm_detection *d)
{
    fputs("{\"bbox\": [", out);
    json_write_float(out, d->x1);
    fputs(", ", out);
    json_write_float(out, d->y1);
    fputs(", ", out);
    json_write_float(out, d->x2);
    fputs(", ", out);
    json_write_float(out, d->y2);
    fputs("], \"confidence\": ", out);
    json_write_float(out, d->score);
    fprintf(out, ", \"class_id\": %d, \"class_name\": ", d->class_id);
    json_write_string(out, d->class_name);
    fputc('}', out);
}

/* indent < 0: everything on one line (jsonl). */
static void json_write_dets(FILE *out, const hadm_result *r, int indent)
{
    int n = r ? r->count : 0;
    if (n == 0) {
        fputs("[]", out);
        return;
    }
    fputc('[', out);
    for (int i = 0; i < n; i++) {
        if (indent >= 0)
            fprintf(out, "\n%*s", indent + 2, "");
        json_write_det(out, &r->dets[i]);
        if (i + 1 < n)
            fputs(indent >= 0 ? "," : ", ", out);
    }
    if (indent >= 0)
        fprintf(out, "\n%*s", indent, "");
    fputc(']', out);
}

static void json_write_record(FILE *out, const detect_record *r, int indent)
{
    const char *nl = indent >= 0 ? "\n" : "";
    int in = indent >= 0 ? indent + 2 : 0;
    const char *sep = indent >= 0 ? "," : ", ";
    fprintf(out, "{%s%*s\"image\": ", nl, in, "");
    json_write_string(out, r->path);
    fprintf(out, "%s%s%*s\"width\": %d", sep, nl, in, "", r->width);
    fprintf(out, "%s%s%*s\"height\": %d", sep, nl, in, "", r->height);
    fprintf(out, "%s%s%*s\"mode\": ", sep, nl, in, "");
    json_write_string(out, r->mode);
    fprintf(out, "%s%s%*s\"local_detections\": ", sep, nl, in, "");
    json_write_dets(out, r->local, indent >= 0 ? in : -1);
    fprintf(out, "%s%s%*s\"global_detections\": ", sep, nl, in, "");
    json_write_dets(out, r->global, indent >= 0 ? in : -1);
    fprintf(out, "%s%*s}", nl, indent >= 0 ? indent : 0, "");
}

static void table_write_dets(FILE *out, const char *model, const hadm_result *r)
{
    for (int i = 0; r && i < r->count; i++) {
        const hadm_detection *d = &r->dets[i];
        fprintf(out, "  %-7s %8.4f  %3d  %-28s %8.1f %8.1f %8.1f %8.1f\n", model, (double)d->score,
                d->class_id, d->class_name ? d->class_name : "?", (double)d->x1, (double)d->y1,
                (double)d->x2, (double)d->y2);
    }
}

static void table_write_record(FILE *out, const detect_record *r)
{
    int nl = r->local ? r->local->count : 0, ng = r->global ? r->global->count : 0;
    fprintf(out, "%s  %dx%d  mode %s  local %d  global %d\n", r->path, r->width, r->height,
            r->mode, nl, ng);
    if (nl + ng == 0) {
        fputs("  (no detections)\n", out);
        return;
    }
    fprintf(out, "  %-7s %8s  %3s  %-28s %8s %8s %8s %8s\n", "model", "score", "id", "class",
            "x1", "y1", "x2", "y2");
    table_write_dets(out, "HADM-L", r->local);
    table_write_dets(out, "HADM-G", r->global);
}

void detect_printer_begin(detect_printer *p, FILE *out, detect_format format, int as_array)
{
    memset(p, 0, sizeof *p);
    p->out = out;
    p->format = format;
    p->as_array = format == DETECT_FORMAT_JSON && as_array;
    if (p->as_array)
        fputc('[', out);
}

void detect_printer_add(detect_printer *p, const detect_record *r)
{
    switch (p->format) {
    case DETECT_FORMAT_JSON:
        if (p->as_array) {
            fputs(p->printed ? ",\n  " : "\n  ", p->out);
            json_write_record(p->out, r, 2);
        } else {
            json_write_record(p->out, r, 0);
            fputc('\n', p->out);
        }
        break;
    case DETECT_FORMAT_JSONL:
        json_write_record(p->out, r, -1);
        fputc('\n', p->out);
        break;
    case DETECT_FORMAT_TABLE:
        if (p->printed)
            fputc('\n', p->out);
        table_write_record(p->out, r);
        break;
    }
    p->printed++;
    fflush(p->out);
}

void detect_printer_end(detect_printer *p)
{
    if (p->as_array)
        fputs(p->printed ? "\n]\n" : "]\n", p->out);
    fflush(p->out);
}
