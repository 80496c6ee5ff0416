/* One function per `hadm <command>`; each returns the process exit code
 * (0 ok, 1 runtime failure, 2 usage error) and prints errors as one line
 * starting "hadm: " on stderr. */
#ifndef HADM_CLI_H
#define HADM_CLI_H

#include "hadm.h"

int cmd_detect(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_synth(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_doctor(int argc, char **argv);
int cmd_monitor(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_quantize(int argc, char **argv);

/* hadm quantize's work, for other commands (bench): IN written to OUT with
 * its weights as type ("bf16", "f16" or "q8"). */
hadm_status quantize_model(const char *in, const char *out, const char *type, hadm_error *err);

/* Prints "hadm: <message>" to stderr. */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
