/* `hadm detect --annotate OUTDIR`: the image with its detections drawn as
 * rectangle outlines (HADM-L in warm colours, HADM-G in cool ones, one
 * colour per class), written as a JPEG named after the input. */
#ifndef HADM_CLI_ANNOTATE_H
#define HADM_CLI_ANNOTATE_H

#include "hadm.h"

typedef struct {
    const char *dir;
    char **written;     /* names used in this run, to avoid overwriting */
    int count, cap;
} annotator;

/* Creates dir if it does not exist. */
hadm_status annotator_init(annotator *a, const char *dir, hadm_error *err);
void annotator_free(annotator *a);

/* Draws onto a copy of img (the decoded, EXIF-oriented image the boxes refer
 * to) and writes OUTDIR/<input name without extension>.jpg, adding -2, -3...
 * when two inputs share a name. Either result may be NULL. */
hadm_status annotator_write(annotator *a, const char *image_path, const hadm_image *img,
                            const hadm_result *local, const hadm_result *global, hadm_error *err);

#endif
