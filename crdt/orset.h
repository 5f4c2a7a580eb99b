/*
** orset.h: add-wins observed-remove set, delta-state, with a compact causal
** context.
**
** State = a dot store (each element with the dots of the adds that are still
** in effect) plus a causal context (every dot this state has seen).  A dot is
** (site, n) with n counting that site's adds to this one set from 1 upward,
** so the context compacts into a version vector; dots seen out of order wait
** in a small "cloud" until the gap fills.  A removed add is a dot that is in
** the context but not in the store: no per-element tombstones exist.
**
**   add(e)    delta = store {e:{d}}, context {d} + old dots of e   (d fresh)
**   remove(e) delta = store {},      context old dots of e
**   join      keep a dot of e if both stores have it, or if one store has it
**             and the other context has not seen it; contexts unite.
**
** A delta is itself a knit_orset_t and joins like a state.  Elements are
** knit_value_t in canonical form (knit_value_canon) and are kept sorted by
** knit_value_cmp, so materialization is sorted and unique.
**
** Sites are indexes into a caller's table (see vv.h).
*/
#ifndef KNIT_ORSET_H
#define KNIT_ORSET_H

#include <stddef.h>
#include <stdint.h>

#include "value.h"
#include "vv.h"

typedef struct knit_orset_elem_s {
    knit_value_t v;   /* element; TEXT/BLOB bytes owned by the set */
    knit_dot_t *dots; /* live dots, sorted by (site, n); owned; ndots >= 1 */
    size_t ndots;     /* dot count */
} knit_orset_elem_t;

typedef struct knit_orset_s {
    knit_orset_elem_t *elems; /* sorted by knit_value_cmp; owned */
    size_t nelems;            /* element count */
    size_t cap;               /* elements allocated */
    knit_vv_t vv;             /* compacted context: every (s, 1..vv[s]) seen */
    knit_dot_t *cloud;        /* seen dots beyond vv, sorted, owned */
    size_t ncloud;            /* cloud size */
} knit_orset_t;

KNIT_EXTERN void knit_orset_init(knit_orset_t *s);
KNIT_EXTERN void knit_orset_free(knit_orset_t *s);
/* dst is overwritten as an out-parameter (its old contents are not freed);
** on KNIT_ENOMEM it is left empty and initialized. */
KNIT_EXTERN int knit_orset_copy(knit_orset_t *dst, const knit_orset_t *src);

/* 1 if e (canonicalized) is in the set. */
KNIT_EXTERN int knit_orset_contains(const knit_orset_t *s, const knit_value_t *e);
/* Add e with a fresh dot of `site`.  If delta is not NULL it must be an
** initialized set; the operation's delta is joined into it. On error s is
** unchanged.  A NaN REAL is refused (KNIT_EINVAL); e's bytes are copied. */
KNIT_EXTERN int knit_orset_add(knit_orset_t *s, uint32_t site, const knit_value_t *e,
                               knit_orset_t *delta);
/* Remove e (no-op when absent); delta as for add.  e may point at an
** element of s itself: it is read before its bytes are freed. */
KNIT_EXTERN int knit_orset_remove(knit_orset_t *s, const knit_value_t *e, knit_orset_t *delta);
/* s = s join o.  On error s is unchanged. */
KNIT_EXTERN int knit_orset_join(knit_orset_t *s, const knit_orset_t *o);
/* 1 if the two states are equal (elements, dots and context). */
KNIT_EXTERN int knit_orset_equal(const knit_orset_t *a, const knit_orset_t *b);
/* Renumbers sites (see knit_vv_remap); keeps every order invariant. */
KNIT_EXTERN int knit_orset_remap(knit_orset_t *s, const uint32_t *map, size_t nmap);

/* Binary form (for storage, the wire and digests), all counts varints:
**   nvv   { site n }*        compact context
**   ncloud { site n }*       cloud
**   nelems { value ndots { site n }* }*
** Encoding is canonical: equal states encode to equal bytes. */
KNIT_EXTERN int knit_orset_encode(const knit_orset_t *s, uint8_t **out /* OUT, knit__free */,
                                  size_t *n /* OUT */);
/* Strict: KNIT_ECORRUPT on unsorted, duplicate or zero entries, trailing
** bytes, element dots outside the context, a non-compact cloud or a
** non-canonical element; KNIT_ETRUNCATED when the input ends early.  s is
** an out-parameter (old contents not freed); on error it is left empty. */
KNIT_EXTERN int knit_orset_decode(const uint8_t *p, size_t n, knit_orset_t *s /* OUT */);

/* Canonical bytes for digests, independent of how sites are numbered:
**   varint m | the m site ids the state mentions, ascending | the state
**   encoded with each site renumbered to its rank in that list.
** sites[i] is the id of site index i (i < nsites, else KNIT_EINVAL).
** Implemented in orset_canon.c. */
#include "hlc.h"
KNIT_EXTERN int knit_orset_canonical(const knit_orset_t *s, const knit_site_t *sites, size_t nsites,
                                     uint8_t **out /* OUT, knit__free */, size_t *n /* OUT */);

/* Materialization: canonical JSON array of the elements in order, e.g.
** [null,-1,2.5,"a"] (REALs with %.17g, always with '.' or 'e'; +-Inf as
** 9e999 / -9e999 like SQLite's JSON; strings JSON-escaped, control
** characters as \u00xx; BLOB elements and TEXT that is not valid UTF-8 are
** refused with KNIT_EINVAL).  *out is NUL-terminated; *n excludes the NUL. */
KNIT_EXTERN int knit_orset_json(const knit_orset_t *s, char **out /* OUT, knit__free */,
                                size_t *n /* OUT */);

#endif
