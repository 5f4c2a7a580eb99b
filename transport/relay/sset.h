/*
** sset.h: OR-set cell values as the relay stores keep them.  A stored
** OR-set names its sites itself, with full site ids, so it reads alone:
**
**   +---------+-------------------+-------------------------------------+
**   | varint k| k site ids (16 B) | knit_orset_encode, sites 0..k-1     |
**   +---------+-------------------+-------------------------------------+
**
** The k site ids are exactly the sites the set names, strictly increasing
** in byte order, and the set numbers them by position: byte for byte
** knit_orset_canonical() (crdt/orset.h), the form crdt/digest.h hashes.
** Both stores (relay_store.c, store_pg.c) merge and store OR-sets through
** these functions, so equal states are equal bytes in either.
**
** Ownership: a knit_sset_t owns its sites and set (knit__sset_free);
** buffers handed out are the caller's (knit__free).
*/
#ifndef KNIT_RELAY_SSET_H
#define KNIT_RELAY_SSET_H

#include <stddef.h>
#include <stdint.h>

#include "knit.h"
#include "orset.h"

/* An OR-set with its own site table, numbered by position. */
typedef struct knit_sset_s {
    knit_site_t *sites; /* site ids, strictly increasing when canonical; owned */
    size_t nsites;      /* count */
    knit_orset_t set;   /* the state, sites index `sites` */
} knit_sset_t;

void knit__sset_init(knit_sset_t *x);
void knit__sset_free(knit_sset_t *x);
/* Makes x canonical: x->set indexes tab[0..ntab) on entry.  KNIT_ECORRUPT
** if it names a site outside tab or two named sites are the same id. */
int knit__sset_canon(knit_sset_t *x, const knit_site_t *tab, size_t ntab);
/* Stored form of canonical x into a new buffer. */
int knit__sset_encode(const knit_sset_t *x, uint8_t **out /* OUT */, size_t *n /* OUT */);
/* Splits stored bytes into site list and body (pointing into p),
** checking the site list's shape (KNIT_ECORRUPT). */
int knit__sset_split(const uint8_t *p, size_t n, const uint8_t **sites /* OUT */,
                     size_t *nsites /* OUT */, const uint8_t **body /* OUT */,
                     size_t *nbody /* OUT */);
/* Decodes stored bytes (hostile input) into x, initialized here. */
int knit__sset_decode(knit_sset_t *x /* OUT */, const uint8_t *p, size_t n);
/* Joins o into x (both canonical; o's sites are taken); x stays canonical. */
int knit__sset_join(knit_sset_t *x, knit_sset_t *o);
/* Encodes x for batch b (sites interned into b); x is renumbered in place. */
int knit__sset_to_batch(knit_sset_t *x, knit_batch_t *b, uint8_t **out /* OUT */,
                        size_t *n /* OUT */);

#endif
