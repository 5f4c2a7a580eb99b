/*
** validate.h: what a replica needs of one change before it can apply it,
** checked the same way by the relay (which refuses such a change in a PUSH
** and never stores it) and by a replica's apply.
**
** A change the codec accepts can still be one no replica can apply: an
** OR-set state whose element is a BLOB, or TEXT that is not valid UTF-8,
** has no JSON form for the user's column (ARCHITECTURE.md statement 14); a
** NULL key value cannot name a row.  A relay that stored such a change
** would send it in every catch-up, to every replica, forever.  One function
** decides, so the relay and the replicas cannot disagree about what is
** applicable.
**
** The check reads only the batch: no I/O, no clock, no store.  It allocates
** (knit__malloc) only to decode an OR-set state, and frees before it
** returns.
*/
#ifndef KNIT_VALIDATE_H
#define KNIT_VALIDATE_H

#include <stddef.h>
#include <stdint.h>

#include "knit.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Checks change c of batch b:
**   - its namespace, table and site indexes name entries of b, its column
**     index is at most the table's column count, the table has a key;
**   - its causal length is at least 1;
**   - every key value is present and not NULL (and no REAL is NaN);
**   - row liveness (col 0) carries NULL; an LWW column any value but a NaN;
**   - an OR-set column a BLOB holding a valid state (knit_orset_decode)
**     whose site numbers are < b->nsites and whose every element has a JSON
**     form (knit_orset_json succeeds: no BLOB, no TEXT that is not UTF-8).
** Returns 0, or KNIT_EINVAL (the change contradicts itself or has no form a
** replica can store), KNIT_ECORRUPT (an OR-set state that does not decode
** or names an unknown site), KNIT_ENOMEM.  On failure why[0..n) (n may be
** 0, why NULL) gets a sentence naming the table, key and column, e.g.
** "items key ('a'): tags: OR-set element 2 is a BLOB, which has no JSON
** form". */
KNIT_EXTERN int knit_change_check(const knit_batch_t *b, const knit_change_t *c, char *why,
                                  size_t n);

/* Writes the key values pk[0..npk) as SQL literals ("'a', 2", BLOBs as
** X'..', long values shortened with "...") into buf[0..n), always
** NUL-terminated; for messages and logs. */
KNIT_EXTERN void knit__key_text(const knit_value_t *pk, uint32_t npk, char *buf, size_t n);

#ifdef __cplusplus
}
#endif
#endif
