/*
** hlc.c: the hybrid logical clock (design notes in hlc.h).
**
** A stamp packs milliseconds and a counter so that stamps compare as plain
** integers; that also makes "the next stamp" simply the integer plus one,
** with the counter's overflow carrying into the milliseconds for free
** (design note 2).  Nothing here reads a clock: the wall time is an argument,
** which keeps the clock deterministic under test and simulation.
*/
#include "hlc.h"

#include <inttypes.h>
#include <stdio.h>

int knit_hlc_tick(uint64_t *clock, uint64_t wall_ms, uint64_t *out) /* see hlc.h */
{
    uint64_t next;

    if (wall_ms > KNIT_HLC_MAX_MS || *clock == UINT64_MAX)
        return KNIT_EOVERFLOW;
    /* Strictly after everything seen (note 1); jump to the wall clock when
    ** it is ahead, with the counter back at 0. */
    next = *clock + 1;
    if (knit_hlc_make(wall_ms, 0) > next)
        next = knit_hlc_make(wall_ms, 0);
    *clock = next;
    *out = next;
    return 0;
}

int knit_hlc_recv(uint64_t *clock, uint64_t remote, uint64_t wall_ms,
                  uint64_t max_drift_ms) /* see hlc.h */
{
    uint64_t rms = knit_hlc_ms(remote);

    /* Written as a difference so that wall_ms + max_drift_ms cannot wrap. */
    if (rms > wall_ms && rms - wall_ms > max_drift_ms)
        return KNIT_ECLOCKSKEW;
    if (remote > *clock)
        *clock = remote;
    return 0;
}

/* Days since 1970-01-01 to a proleptic Gregorian date.  Counts in 400-year
** eras of 146097 days that start on March 1st, so the leap day falls at the
** end of each year and needs no special case.  Own arithmetic rather than
** gmtime_r(): stamps reach year 10889, beyond some time_t conversions. */
static void civil_from_days(uint64_t days, uint64_t *y, unsigned *m, unsigned *d)
{
    uint64_t z = days + 719468; /* days since 0000-03-01 */
    uint64_t era = z / 146097;
    uint64_t doe = z - era * 146097;                                      /* [0, 146096] */
    uint64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365; /* [0, 399] */
    uint64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);               /* [0, 365] */
    uint64_t mp = (5 * doy + 2) / 153;                                    /* [0, 11], Mar = 0 */

    *d = (unsigned)(doy - (153 * mp + 2) / 5 + 1);
    *m = (unsigned)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

size_t knit_hlc_format(uint64_t h, char *buf, size_t n) /* see hlc.h */
{
    uint64_t ms = knit_hlc_ms(h), secs = ms / 1000, y;
    unsigned mo, d, sod = (unsigned)(secs % 86400);
    int k;

    if (n < KNIT_HLC_FMT_LEN)
        return 0;
    civil_from_days(secs / 86400, &y, &mo, &d);
    /* At most 5 + 20 + 6 = 31 characters: it always fits. */
    k = snprintf(buf, n, "%04" PRIu64 "-%02u-%02uT%02u:%02u:%02u.%03uZ#%u", y, mo, d, sod / 3600,
                 sod / 60 % 60, sod % 60, (unsigned)(ms % 1000), knit_hlc_counter(h));
    return k < 0 ? 0 : (size_t)k;
}
