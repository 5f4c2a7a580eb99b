/*
** buckets.h: bucketed state digests of one namespace, computed from change
** batches, for the consistency check (CHECK / CHECKED, docs/PROTOCOL.md).
**
** Both ends describe a namespace's state as change batches: the relay as
** the catch-up pages of the namespace from sequence 0, a replica as
** knit_changes_since(0) of the namespace.  This engine takes those batches
** and gives back, per row, the digest of the cells the state digest counts
** (crdt/digest.h: the row's liveness cell, and when it is live the column
** cells of its current life), summed per bucket and in total.  A row's
** bucket depends on its table and key alone, so the same row falls in the
** same bucket on both ends, and buckets whose digests differ say where
** the two states differ.  No I/O, no clock; everything is copied in.
**
** Design notes
**   1. A row's cells may come in different batches (catch-up pages) and in
**      any order: cells are collected first and counted once all are in
**      (knit__check_finish), so a column cell is counted exactly when the
**      row's liveness says the row is live in that cell's life.
**   2. Bucket of a row: the first four bytes of SHA-256 over
**      str("knit.bucket.1") str(table) str(key), big-endian, modulo the
**      bucket count, where str(s) is varint(len(s)) then s and the key is
**      the concatenated value encodings of the key columns (the bytes the
**      digest hashes).
**   3. An entry remembers its batch and change index, so the client can
**      name the differing rows' changes; those batches must outlive the
**      accumulator's use of them.  The relay does not need them.
**
** Ownership: an accumulator owns what it copied; knit__check_free() (NULL
** is a no-op) releases it.  Batches passed in stay the caller's.
*/
#ifndef KNIT_BUCKETS_H
#define KNIT_BUCKETS_H

#include <stddef.h>
#include <stdint.h>

#include "codec.h" /* KNIT_CHECK_MAX_BUCKETS */
#include "digest.h"
#include "knit.h"

typedef struct knit_check_s knit_check_t;

/* One cell seen by the accumulator. */
typedef struct knit_check_cell_s {
    uint8_t *key;          /* str(table) str(pk) of its row, owned */
    size_t keylen;         /* bytes at key */
    uint32_t bucket;       /* its row's bucket */
    const knit_batch_t *b; /* the batch it came in (design note 3) */
    size_t change;         /* its index in b->changes */
    uint64_t cl;           /* the change's causal length */
    int live;              /* 1: the row's liveness cell (column 0) */
    int counted;           /* 1: the digest counts it (set by finish) */
    uint8_t h[32];         /* its cell hash (crdt/digest.h) */
} knit_check_cell_t;

/* One row, after knit__check_finish: its cells are cells[first..first+n). */
typedef struct knit_check_row_s {
    uint32_t bucket;      /* see design note 2 */
    size_t first;         /* its first cell (sorted by key) */
    size_t n;             /* its cell count */
    knit_digest_t digest; /* sum of its counted cells */
} knit_check_row_t;

/* A new accumulator for namespace ns (the name the cells hash with) and
** nbuckets buckets (1 .. KNIT_CHECK_MAX_BUCKETS). */
int knit__check_new(const char *ns, uint32_t nbuckets, knit_check_t **out /* OUT */);
void knit__check_free(knit_check_t *c);

/* Adds every change of b (all of them belong to the namespace, whatever
** b's own name for it).  Only when only is not NULL: just the changes whose
** row's bucket has only[bucket] set.  KNIT_ECORRUPT for an OR-set state
** that does not decode, KNIT_ENOMEM. */
int knit__check_add(knit_check_t *c, const knit_batch_t *b, const uint8_t *only);

/* Counts the cells (design note 1) and sums rows, buckets and the total;
** buckets may be NULL, else it receives nbuckets digests.  Call once, after
** the last add. */
int knit__check_finish(knit_check_t *c, knit_digest_t *total /* OUT */,
                       knit_digest_t *buckets /* OUT */);

/* After finish: the rows in key order, and the cells they index. */
const knit_check_row_t *knit__check_rows(const knit_check_t *c, size_t *n /* OUT */);
const knit_check_cell_t *knit__check_cells(const knit_check_t *c, size_t *n /* OUT */);

/* The bucket of the row of change ch of b (design note 2). */
uint32_t knit__check_bucket(const knit_batch_t *b, const knit_change_t *ch, uint32_t nbuckets);

/* Appends a copy of change ch of src to dst's open unit, in namespace
** dst_ns (an index of dst), interning its table and site in dst and
** renumbering an OR-set state's sites to dst's. */
int knit__check_copy(knit_batch_t *dst, uint32_t dst_ns, const knit_batch_t *src,
                     const knit_change_t *ch);

#endif
