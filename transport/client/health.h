/*
** health.h: the sync client's health figures (health.c), kept by the
** leading client and published in the replica with its status, so every
** process of the device reads the same (knit_sync_report).  Not installed.
**
** Write-to-ACK latency is measured per acknowledged change, from the
** physical part of the change's HLC stamp (the commit's wall time under
** capture version 3, raised only above the row's newest cell) to the wall
** time the ACK arrived.  A write made offline therefore counts the time
** the device was offline: that is what the user waited.  Samples go into
** log-linear buckets (exact below 16 ms, then four per power of two), so a
** quantile is the upper edge of its bucket: at most 25% above the truth,
** never below it.  The figures cover the leader's run, from its start.
** The consistency checker's counts (checks, inconsistencies found and
** repaired, rows repaired) are the engine's (knit_client_stats_t) and are
** published beside these (client.c health_lines).
*/
#ifndef KNIT_HEALTH_H
#define KNIT_HEALTH_H

#include <stddef.h>
#include <stdint.h>

#define KNIT_HEALTH_BUCKETS 160 /* 16 exact + 4 per power of two up to 2^40 ms */
#define KNIT_HEALTH_KINDS 16    /* error kinds counted apart; more go to "other" */

typedef struct knit_health_s {
    uint64_t lat[KNIT_HEALTH_BUCKETS]; /* write-to-ACK samples per bucket */
    uint64_t nlat;                     /* samples */
    uint64_t lat_sum_ms;               /* their sum, for the mean */
    uint64_t attempts;                 /* connection attempts */
    uint64_t errors;                   /* error events */
    int kind[KNIT_HEALTH_KINDS];       /* KNIT_E* codes counted apart */
    uint64_t nkind[KNIT_HEALTH_KINDS]; /* their counts */
    size_t nkinds;                     /* kinds in use */
    uint64_t other;                    /* errors of further kinds */
    uint64_t last_synced_ms;           /* wall ms SYNCED last held (0: never) */
} knit_health_t;

/* One write-to-ACK sample of ms milliseconds. */
void knit__health_latency(knit_health_t *h, uint64_t ms);

/* The q-quantile (0 < q <= 1) of the samples, in ms, as the upper edge of
** its bucket; 0 without samples. */
uint64_t knit__health_quantile(const knit_health_t *h, double q);

/* One error event of code (a negative KNIT_E* code). */
void knit__health_error(knit_health_t *h, int code);

/* "EIO 2, ECONN 1" (most frequent first, "other N" last) into buf, or "-"
** when there were none. */
void knit__health_kinds(const knit_health_t *h, char *buf, size_t n);

#endif
