#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "hadm.h"

void cli_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("hadm: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

typedef struct {
    const char *name;
    int (*run)(int, char **);
    const char *summary;
} command;

/* Commands whose implementation has not landed yet are weak, so the binary
 * links and says so instead of failing to build. */
#define WEAK __attribute__((weak))
WEAK int cmd_serve(int argc, char **argv);
WEAK int cmd_synth(int argc, char **argv);
WEAK int cmd_bench(int argc, char **argv);
WEAK int cmd_doctor(int argc, char **argv);
WEAK int cmd_monitor(int argc, char **argv);
WEAK int cmd_convert(int argc, char **argv);
WEAK int cmd_quantize(int argc, char **argv);
WEAK int cmd_detect(int argc, char **argv);

static const command COMMANDS[] = {
    {"detect", cmd_detect, "run HADM-L/HADM-G on images and print detections"},
    {"serve", cmd_serve, "HTTP inference server (drop-in for HADM-Server)"},
    {"doctor", cmd_doctor, "check the environment and model files"},
    {"monitor", cmd_monitor, "measure load, start-up and inference"},
    {"convert", cmd_convert, "convert an original HADM .pth checkpoint to safetensors"},
    {"quantize", cmd_quantize, "write a bf16/f16/q8 copy of a model"},
    {"synth", cmd_synth, "write a seeded random-weight model (tiny or full size)"},
    {"bench", cmd_bench, "measure forward speed against this machine's matmul peak"},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: hadm <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof COMMANDS / sizeof *COMMANDS; i++)
        fprintf(out, "  %-9s %s\n", COMMANDS[i].name, COMMANDS[i].summary);
    fprintf(out, "\n`hadm <command> --help` for a command's options.\n");
}

int main(int argc, char **argv)
{
    /* Past a file-size limit (ulimit -f) a write should fail with EFBIG, so
     * that writers remove their temporary file, not kill the process. */
    signal(SIGXFSZ, SIG_IGN);
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("hadm %s\n", HADM_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof COMMANDS / sizeof *COMMANDS; i++) {
        if (strcmp(argv[1], COMMANDS[i].name) != 0)
            continue;
        if (!COMMANDS[i].run) {
            cli_error("'%s' is not available in this build", argv[1]);
            return 1;
        }
        return COMMANDS[i].run(argc - 1, argv + 1);
    }
    cli_error("unknown command '%s' (see hadm --help)", argv[1]);
    return 2;
}
