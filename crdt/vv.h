/*
** vv.h: version vectors over site indexes.
**
** Sites are named by small integers (uint32) that index a table the caller
** keeps (a replica's site table, a relay's, or a message's): the CRDT core
** only ever compares them for equality, and knit_vv_remap() translates
** between numberings.  A version vector maps site -> highest counter seen,
** stored sorted by site; absent means 0.
*/
#ifndef KNIT_VV_H
#define KNIT_VV_H

#include <stddef.h>
#include <stdint.h>

#include "knit_errors.h"

typedef struct knit_dot_s {
    uint32_t site; /* site index */
    uint64_t n;    /* counter, >= 1 */
} knit_dot_t;

typedef struct knit_vv_s {
    knit_dot_t *e; /* entries sorted by site, n > 0; owned */
    size_t len;    /* entries in use */
    size_t cap;    /* entries allocated */
} knit_vv_t;

enum {
    KNIT_VV_EQUAL = 0,     /* same vector */
    KNIT_VV_BEFORE = 1,    /* a < b: b has seen everything a has, and more */
    KNIT_VV_AFTER = 2,     /* a > b */
    KNIT_VV_CONCURRENT = 3 /* each has seen something the other has not */
};

KNIT_EXTERN void knit_vv_init(knit_vv_t *vv);
KNIT_EXTERN void knit_vv_free(knit_vv_t *vv);
KNIT_EXTERN uint64_t knit_vv_get(const knit_vv_t *vv, uint32_t site);
/* Sets site's entry to n (0 removes it). */
KNIT_EXTERN int knit_vv_set(knit_vv_t *vv, uint32_t site, uint64_t n);
/* a = pointwise max(a, b). On KNIT_ENOMEM a is unchanged. */
KNIT_EXTERN int knit_vv_merge(knit_vv_t *a, const knit_vv_t *b);
KNIT_EXTERN int knit_vv_compare(const knit_vv_t *a, const knit_vv_t *b);
/* dst is overwritten as an out-parameter (its old entries are not freed);
** on KNIT_ENOMEM it is left empty and initialized. */
KNIT_EXTERN int knit_vv_copy(knit_vv_t *dst, const knit_vv_t *src);
/* Renumbers sites: site s becomes map[s] (s < nmap, else KNIT_EINVAL). */
KNIT_EXTERN int knit_vv_remap(knit_vv_t *vv, const uint32_t *map, size_t nmap);

#endif
