/* `hadm detect --annotate OUTDIR`: the image with its detections drawn (see
 * io/annotate.h for what is drawn), written as a JPEG or PNG named after the
 * input. */
#ifndef HADM_CLI_ANNOTATE_H
#define HADM_CLI_ANNOTATE_H

#include "hadm.h"
#include "io/image_encode.h"

typedef struct {
    const char *dir;
    image_format format;
    char **written;     /* names used in this run, to avoid overwriting */
    int count, cap;
} annotator;

/* Creates dir if it does not exist. */
hadm_status annotator_init(annotator *a, const char *dir, image_format format, hadm_error *err);
void annotator_free(annotator *a);

/* Draws over img (the decoded, EXIF-oriented image the boxes refer to; its
 * pixels are changed) and writes OUTDIR/<input name without extension>.jpg
 * (or .png), adding -2, -3... when two inputs share a name. Either result
 * may be NULL. */
hadm_status annotator_write(annotator *a, const char *image_path, hadm_image *img,
                            const hadm_result *local, const hadm_result *global, hadm_error *err);

#endif
