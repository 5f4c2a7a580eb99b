/*
** frame.c: the incremental frame reader and the writer helpers (frame.h).
**
** The reader is a two-state machine driven by knit_frame_read():
**
**        4 length bytes in, 0 < length <= max_frame
**   HEADER ------------------------------------------> PAYLOAD
**     ^   \--- length 0 / > max_frame ---> FAILED       |
**     |                                                 |
**     +------ `length` payload bytes in: hand it out ---+
**
** (nhdr < 4 is HEADER; nhdr == 4 is PAYLOAD.)  A frame that arrives whole
** inside one input chunk while nothing is buffered is handed out in place,
** without a copy; only frames split across chunks are gathered in buf,
** which grows with the bytes received (never past the checked length) and
** is reused for later frames.
*/
#include "frame.h"

#include <string.h>

#include "alloc.h"
#include "codec.h"

void knit_frame_reader_init(knit_frame_reader_t *r, size_t max_frame) /* see frame.h */
{
    memset(r, 0, sizeof *r);
    r->max_frame = max_frame ? max_frame : KNIT_DEFAULT_MAX_FRAME;
    if (r->max_frame > UINT32_MAX)
        r->max_frame = UINT32_MAX;
}

void knit_frame_reader_free(knit_frame_reader_t *r) /* see frame.h */
{
    if (!r)
        return;
    knit__free(r->buf);
    r->buf = NULL;
    r->have = r->cap = 0;
}

uint32_t knit_frame_length(const uint8_t hdr[4]) /* see frame.h */
{
    return (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
}

int knit_frame_header(uint8_t out[4], size_t len, size_t max_frame) /* see frame.h */
{
    if (!max_frame)
        max_frame = KNIT_DEFAULT_MAX_FRAME;
    if (len == 0)
        return KNIT_EINVAL;
    if (len > max_frame || len > UINT32_MAX)
        return KNIT_ETOOBIG;
    out[0] = (uint8_t)(len >> 24);
    out[1] = (uint8_t)(len >> 16);
    out[2] = (uint8_t)(len >> 8);
    out[3] = (uint8_t)len;
    return 0;
}

void knit_frame_done(knit_frame_reader_t *r) /* see frame.h */
{
    if (r->err || r->nhdr != 4 || r->have != r->need)
        return; /* no frame handed out, or a partial one is being gathered */
    r->nhdr = 0;
    r->have = 0;
    if (r->cap > KNIT_FRAME_KEEP) {
        knit__free(r->buf);
        r->buf = NULL;
        r->cap = 0;
    }
}

int knit_frame_pending(const knit_frame_reader_t *r) /* see frame.h */
{
    return r->nhdr > 0;
}

int knit_frame_read(knit_frame_reader_t *r, const uint8_t *p, size_t n, size_t *used,
                    const uint8_t **payload, size_t *len) /* see frame.h */
{
    size_t i = 0;
    *used = 0;
    if (r->err)
        return r->err;
    /* A frame handed out by the previous call is done with now. */
    if (r->nhdr == 4 && r->have == r->need) {
        r->nhdr = 0;
        r->have = 0;
    }
    while (r->nhdr < 4 && i < n)
        r->hdr[r->nhdr++] = p[i++];
    if (r->nhdr < 4) {
        *used = i;
        return 0;
    }
    r->need = knit_frame_length(r->hdr);
    if (r->need == 0) {
        *used = i;
        return r->err = KNIT_EPROTO;
    }
    if (r->need > r->max_frame) {
        *used = i;
        return r->err = KNIT_ETOOBIG;
    }
    /* Zero copy: the whole payload is in this chunk and nothing is buffered. */
    if (r->have == 0 && n - i >= r->need) {
        *payload = p + i;
        *len = r->need;
        *used = i + r->need;
        r->have = r->need;
        return 1;
    }
    size_t take = r->need - r->have;
    if (take > n - i)
        take = n - i;
    if (take == 0) {
        *used = i;
        return 0;
    }
    if (r->cap < r->have + take) {
        /* Grow with the bytes that actually arrived, not with the announced
        ** length, so a peer that announces 16 MiB and sends 1 byte costs
        ** kilobytes. */
        size_t cap = r->cap ? r->cap : 4096;
        while (cap < r->have + take)
            cap *= 2;
        if (cap > r->need)
            cap = r->need;
        uint8_t *b = knit__realloc(r->buf, cap);
        if (!b) {
            *used = i;
            return r->err = KNIT_ENOMEM;
        }
        r->buf = b;
        r->cap = cap;
    }
    memcpy(r->buf + r->have, p + i, take);
    r->have += take;
    i += take;
    *used = i;
    if (r->have < r->need)
        return 0;
    *payload = r->buf;
    *len = r->need;
    return 1;
}
