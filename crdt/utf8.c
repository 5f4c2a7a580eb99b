/*
** utf8.c: RFC 3629 UTF-8 validation and decoding (see utf8.h).
*/
#include <string.h>

#include "utf8.h"

size_t knit__utf8_next(const uint8_t *s, size_t n, uint32_t *cp) /* see utf8.h */
{
    uint8_t c = s[0];
    size_t len;
    uint32_t v, min;
    if (c < 0x80) {
        if (cp)
            *cp = c;
        return 1;
    }
    if (c >= 0xC2 && c <= 0xDF)
        len = 2, v = c & 0x1F, min = 0x80;
    else if (c >= 0xE0 && c <= 0xEF)
        len = 3, v = c & 0x0F, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4)
        len = 4, v = c & 0x07, min = 0x10000;
    else
        return 0; /* a continuation byte, an overlong 2-byte lead, or past U+10FFFF */
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        v = (v << 6) | (s[i] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
        return 0;
    if (cp)
        *cp = v;
    return len;
}

int knit__utf8_valid(const uint8_t *s, size_t n) /* see utf8.h */
{
    size_t i = 0;
    while (i < n) {
        if (n - i >= 8) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (!(w & UINT64_C(0x8080808080808080))) {
                i += 8;
                continue;
            }
        }
        size_t len = knit__utf8_next(s + i, n - i, NULL);
        if (!len)
            return 0;
        i += len;
    }
    return 1;
}
