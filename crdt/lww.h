/*
** lww.h: last-writer-wins registers and causal lengths.
**
** A row's liveness is a causal length: 1 when first inserted, +1 on every
** delete and every re-insert, so odd = live and even = deleted; merge = max.
** A cell (one column of one row) is an LWW register ordered by
** (causal length, HLC, site): a write made in a later life of the row beats
** any write of an earlier life, which is what makes a delete win over a
** concurrent update that did not see it and a re-insert win over the delete.
** Within one life the later HLC wins, and equal HLCs fall to the larger site.
*/
#ifndef KNIT_LWW_H
#define KNIT_LWW_H

#include <stdint.h>

#include "hlc.h"
#include "value.h"

static inline int knit_cl_live(uint64_t cl)
{
    return (int)(cl & 1);
}
static inline uint64_t knit_cl_merge(uint64_t a, uint64_t b)
{
    return a > b ? a : b;
}
/* Causal length after a local delete (if live) or insert (if deleted). */
static inline uint64_t knit_cl_delete(uint64_t cl)
{
    return knit_cl_live(cl) ? cl + 1 : cl;
}
static inline uint64_t knit_cl_insert(uint64_t cl)
{
    return knit_cl_live(cl) ? cl : cl + 1;
}

typedef struct knit_lww_s {
    uint64_t cl;        /* causal length of the row life this write belongs to */
    uint64_t hlc;       /* stamp of the write */
    knit_site_t site;   /* replica that made it */
    knit_value_t value; /* the value written (bytes not owned) */
} knit_lww_t;

/* Order of two register states; the larger wins.  <0, 0, >0. */
static inline int knit_lww_cmp(const knit_lww_t *a, const knit_lww_t *b)
{
    if (a->cl != b->cl)
        return a->cl < b->cl ? -1 : 1;
    return knit_stamp_cmp(a->hlc, &a->site, b->hlc, &b->site);
}

/* Merge b into a: a becomes the winner.  Returns 1 if a changed, else 0. */
static inline int knit_lww_merge(knit_lww_t *a, const knit_lww_t *b)
{
    if (knit_lww_cmp(b, a) > 0) {
        *a = *b;
        return 1;
    }
    return 0;
}

#endif
