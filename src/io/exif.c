/* EXIF orientation via libexif. The original reads tag 274 with PIL's
 * getexif() and ignores any failure to parse (detection_utils.
 * _apply_exif_orientation), so every problem here just means "no rotation". */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <libexif/exif-data.h>

#include "io/image.h"

#define EXIF_MAX_BYTES (16u << 20)

static const uint8_t exif_header[6] = {'E', 'x', 'i', 'f', 0, 0};

static int orientation_of(ExifData *ed)
{
    ExifEntry *e = exif_content_get_entry(ed->ifd[EXIF_IFD_0], EXIF_TAG_ORIENTATION);
    if (!e || !e->data || e->components != 1)
        return 1;
    ExifByteOrder order = exif_data_get_byte_order(ed);
    long v;
    if (e->format == EXIF_FORMAT_SHORT && e->size >= 2)
        v = exif_get_short(e->data, order);
    else if (e->format == EXIF_FORMAT_LONG && e->size >= 4)
        v = (long)exif_get_long(e->data, order);
    else
        return 1;
    return v >= 1 && v <= 8 ? (int)v : 1;
}

int exif_orientation(const uint8_t *data, size_t len)
{
    if (!data || len < 8 || len > EXIF_MAX_BYTES)
        return 1;
    /* libexif wants the "Exif\0\0" header in front of the TIFF structure. */
    uint8_t *owned = NULL;
    if (memcmp(data, exif_header, sizeof exif_header) != 0) {
        int tiff = !memcmp(data, "II*\0", 4) || !memcmp(data, "MM\0*", 4);
        if (!tiff)
            return 1;
        owned = malloc(len + sizeof exif_header);
        if (!owned)
            return 1;
        memcpy(owned, exif_header, sizeof exif_header);
        memcpy(owned + sizeof exif_header, data, len);
        data = owned;
        len += sizeof exif_header;
    }
    int orientation = 1;
    ExifData *ed = exif_data_new();
    if (ed) {
        /* "Following the specification" would make libexif add or rewrite
         * entries; we want exactly what the file says. */
        exif_data_unset_option(ed, EXIF_DATA_OPTION_FOLLOW_SPECIFICATION);
        exif_data_load_data(ed, data, (unsigned int)len);
        orientation = orientation_of(ed);
        exif_data_unref(ed);
    }
    free(owned);
    return orientation;
}
