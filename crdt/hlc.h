/*
** hlc.h: hybrid logical clock and site ids.
**
** A stamp is one uint64: the high 48 bits are milliseconds since the Unix
** epoch, the low 16 bits a counter that orders events within one millisecond.
** Stamps compare as plain integers.  The clock functions take the wall time as
** an argument and never read a clock themselves.
**
** Design notes
**   1. knit_hlc_tick() returns a stamp strictly greater than every stamp the
**      clock issued or received before, whatever the wall time says.
**   2. When the counter would pass 0xffff the millisecond part advances by
**      one and the counter restarts at 0: the clock runs ahead of the wall
**      clock briefly rather than go backwards.
**   3. knit_hlc_recv() refuses (KNIT_ECLOCKSKEW) a remote stamp whose
**      millisecond part is more than max_drift_ms ahead of the wall time, and
**      then leaves the clock unchanged, so one bad clock cannot drag ours.
*/
#ifndef KNIT_HLC_H
#define KNIT_HLC_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "knit_errors.h"

#define KNIT_HLC_MAX_MS ((UINT64_C(1) << 48) - 1)
#define KNIT_HLC_MAX_COUNTER 0xffffu
#define KNIT_HLC_FMT_LEN 40 /* buffer size that knit_hlc_format() always fits */

static inline uint64_t knit_hlc_make(uint64_t ms, unsigned counter)
{
    return (ms << 16) | (counter & 0xffffu);
}
static inline uint64_t knit_hlc_ms(uint64_t h)
{
    return h >> 16;
}
static inline unsigned knit_hlc_counter(uint64_t h)
{
    return (unsigned)(h & 0xffffu);
}

/* Local event.  *clock is the last stamp this replica issued or received; on
** success it is advanced and the new stamp stored in *out.  KNIT_EOVERFLOW
** only when the 48-bit millisecond field itself would overflow. */
KNIT_EXTERN int knit_hlc_tick(uint64_t *clock, uint64_t wall_ms, uint64_t *out /* OUT */);

/* Receive a remote stamp: advances *clock so that later ticks exceed it.
** KNIT_ECLOCKSKEW (clock unchanged) when knit_hlc_ms(remote) > wall_ms +
** max_drift_ms. */
KNIT_EXTERN int knit_hlc_recv(uint64_t *clock, uint64_t remote, uint64_t wall_ms,
                              uint64_t max_drift_ms);

/* Formats "2026-11-21T05:01:46.123Z#42" (ISO-8601 UTC, '#', counter) into
** buf; returns the length written, or 0 if n < KNIT_HLC_FMT_LEN. */
KNIT_EXTERN size_t knit_hlc_format(uint64_t h, char *buf, size_t n);

/* Site id: 16 random bytes per replica; byte-wise order breaks LWW ties. */
typedef struct knit_site_s {
    uint8_t b[16]; /* opaque bytes; compared with memcmp */
} knit_site_t;

static inline int knit_site_cmp(const knit_site_t *a, const knit_site_t *b)
{
    return memcmp(a->b, b->b, 16);
}

/* Order of two LWW stamps: by HLC, then by site.  <0, 0, >0 like memcmp.
** The larger stamp wins a merge. */
static inline int knit_stamp_cmp(uint64_t hlc_a, const knit_site_t *site_a, uint64_t hlc_b,
                                 const knit_site_t *site_b)
{
    if (hlc_a != hlc_b)
        return hlc_a < hlc_b ? -1 : 1;
    return knit_site_cmp(site_a, site_b);
}

#endif
