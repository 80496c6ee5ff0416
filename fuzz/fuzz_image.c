/* Image decoding (JPEG, PNG, WebP) and EXIF orientation, from raw bytes.
 * Beyond "no crash": a decodable image was also probeable, with the same size
 * up to the EXIF rotation (the server refuses huge images from the probe
 * alone, so the two must agree), and errors are input errors, never internal. */
#include "fuzz.h"
#include "hadm.h"

/* Small enough that a hostile header cannot make one run take seconds. */
#define FUZZ_MAX_PIXELS (1 << 20)

static volatile unsigned pixel_sum;

int fuzz_image(const uint8_t *data, size_t size)
{
    const char *format = NULL;
    int pw = 0, ph = 0;
    hadm_error err = {0};
    int probed = hadm_image_probe(data, size, &format, &pw, &ph, &err) == HADM_OK;
    /* The size's parity picks the truncation policy: both paths get fuzzed. */
    hadm_decode_options opt = {.max_pixels = FUZZ_MAX_PIXELS, .allow_truncated = (int)(size & 1)};
    hadm_image img;
    hadm_status s = hadm_image_decode(data, size, &opt, &img, &err);
    if (s == HADM_OK) {
        FUZZ_CHECK(probed);
        FUZZ_CHECK(img.rgb && img.width > 0 && img.height > 0);
        FUZZ_CHECK((int64_t)img.width * img.height <= FUZZ_MAX_PIXELS);
        FUZZ_CHECK((img.width == pw && img.height == ph) || (img.width == ph && img.height == pw));
        unsigned sum = 0; /* every byte is read: the sanitizers see the whole buffer */
        for (size_t i = 0; i < (size_t)img.width * img.height * 3; i++)
            sum += img.rgb[i];
        pixel_sum = sum;
    } else {
        FUZZ_CHECK(!img.rgb);
        FUZZ_CHECK(s != HADM_ERR_INTERNAL && s != HADM_ERR_ARG && err.msg[0]);
    }
    hadm_image_free(&img);
    return 0;
}

FUZZ_ENTRY(fuzz_image)
