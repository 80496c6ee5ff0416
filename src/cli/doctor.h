/* hadm doctor: measured checks of the machine and the model files, each
 * ok / warn / fail with a one-line fix. Shared by doctor.c (command, output),
 * doctor_system.c (CPU, memory, GPU, environment, filesystems) and
 * doctor_model.c (model files). */
#ifndef HADM_CLI_DOCTOR_H
#define HADM_CLI_DOCTOR_H

#include <stdint.h>

typedef enum { CHECK_OK, CHECK_WARN, CHECK_FAIL } check_status;

typedef struct {
    char name[32];
    check_status status;
    char detail[600];
    char fix[300];     /* empty when ok */
} doctor_check;

typedef struct {
    doctor_check *items;
    int n, cap;
} doctor_report;

/* Appends a check; fix may be NULL. Returns it (or NULL when out of memory). */
doctor_check *doctor_add(doctor_report *r, const char *name, check_status status, const char *fix,
                         const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* dir/name if it exists, else the last dir/PREFIX*.pth (highest iteration),
 * else dir/name (which does not exist). Caller frees. */
char *doctor_find_model(const char *dir, const char *name, const char *prefix);

/* ---- doctor_system.c ---- */
void doctor_check_cpu(doctor_report *r);
/* need_bytes: what the found models take in memory (0 = none found). */
void doctor_check_memory(doctor_report *r, uint64_t need_bytes);
void doctor_check_gpu(doctor_report *r);
void doctor_check_env(doctor_report *r);
/* Flags network (NFS, SMB, Ceph, ...), FUSE and tmpfs filesystems and low free
 * space (< need_free bytes) for the file or directory at path. */
void doctor_check_filesystem(doctor_report *r, const char *name, const char *path, uint64_t need_free);
/* Filesystem type name of path ("ext4", "nfs", "tmpfs", ...) and whether it is
 * remote/FUSE (2), in-memory (1) or local (0). */
const char *doctor_fs_type(const char *path, int *kind);

/* ---- doctor_model.c ---- */
/* Checks one model file (safetensors or .pth): present, valid, variant, dtype,
 * size, SHA-256, read speed. Returns the bytes it needs in memory (0 if unusable). */
uint64_t doctor_check_model(doctor_report *r, const char *label, const char *path, int measure_speed);

#endif
