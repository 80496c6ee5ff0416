/* The EXIF orientation reader on its own (libexif underneath), fed the blob
 * as JPEG APP1, PNG eXIf and WebP EXIF chunks carry it. */
#include "fuzz.h"
#include "io/image.h"

int fuzz_exif(const uint8_t *data, size_t size)
{
    int o = exif_orientation(data, size);
    FUZZ_CHECK(o >= 1 && o <= 8);
    return 0;
}

FUZZ_ENTRY(fuzz_exif)
