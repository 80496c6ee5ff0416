/* Output of `hadm detect`: the JSON of DESIGN.md ("Command line"), JSON
 * lines, or a table for people. */
#ifndef HADM_CLI_DETECT_OUTPUT_H
#define HADM_CLI_DETECT_OUTPUT_H

#include <stdio.h>

#include "hadm.h"

typedef enum { DETECT_FORMAT_JSON, DETECT_FORMAT_JSONL, DETECT_FORMAT_TABLE } detect_format;

/* What one image produced. A model that was not run has a NULL result and
 * prints as an empty list (both lists are always present). */
typedef struct {
    const char *path;
    int width, height;             /* original image, after EXIF orientation */
    const char *mode;              /* "local", "global" or "both" */
    const hadm_result *local, *global;
} detect_record;

typedef struct {
    FILE *out;
    detect_format format;
    int as_array;                  /* json: several images -> one array */
    int printed;
} detect_printer;

/* as_array applies to json only: one image prints a bare object. */
void detect_printer_begin(detect_printer *p, FILE *out, detect_format format, int as_array);
void detect_printer_add(detect_printer *p, const detect_record *r);
void detect_printer_end(detect_printer *p);

/* Writes s as a JSON string literal (quotes included). */
void json_write_string(FILE *out, const char *s);

#endif
