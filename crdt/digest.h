/*
** digest.h: order-independent state digests.
**
** A digest summarizes a set of cells: it is the sum, modulo 2^256, of the
** SHA-256 hash of every cell's canonical bytes (an additive multiset hash).
** Adding or removing one cell is one hash and one 256-bit add or subtract,
** so a replica keeps its digest current in O(1) per change; the order cells
** are added in does not matter; two different states collide only if SHA-256
** sums do, which is infeasible to arrange.
**
** Canonical cell bytes (all strings length-prefixed by a varint):
**   "knit.cell.1" ns table pk column value varint(cl) u64be(hlc) site[16]
** pk is the concatenated knit_value encodings of the key columns; column is
** "" for the row's liveness cell; value is a knit_value encoding (the NULL
** encoding 0x00 for liveness), or an OR-set's knit_orset_canonical() bytes,
** in which case hlc is 0 and site all zeros.
*/
#ifndef KNIT_DIGEST_H
#define KNIT_DIGEST_H

#include <stddef.h>
#include <stdint.h>

#include "hlc.h"

typedef struct knit_digest_s {
    uint8_t b[32]; /* little-endian 256-bit sum */
} knit_digest_t;

typedef struct knit_cell_s {
    const char *ns;     /* namespace, e.g. "user:alice" */
    const char *table;  /* table name */
    const uint8_t *pk;  /* concatenated knit_value encodings */
    size_t pk_len;      /* bytes at pk */
    const char *column; /* column name, "" for row liveness */
    const uint8_t *val; /* value bytes (see above); may be NULL if val_len 0 */
    size_t val_len;     /* bytes at val */
    uint64_t cl;        /* causal length */
    uint64_t hlc;       /* winning stamp (0 for OR-set cells) */
    knit_site_t site;   /* winning site (zeros for OR-set cells) */
} knit_cell_t;

KNIT_EXTERN void knit_digest_zero(knit_digest_t *d);
KNIT_EXTERN void knit_cell_hash(const knit_cell_t *c, uint8_t h[32] /* OUT */);
KNIT_EXTERN void knit_digest_add(knit_digest_t *d, const uint8_t h[32]);
KNIT_EXTERN void knit_digest_sub(knit_digest_t *d, const uint8_t h[32]);
KNIT_EXTERN int knit_digest_equal(const knit_digest_t *a, const knit_digest_t *b);
/* Lower-case hex, NUL-terminated, most significant byte first. */
KNIT_EXTERN void knit_digest_hex(const knit_digest_t *d, char out[65]);

#endif
