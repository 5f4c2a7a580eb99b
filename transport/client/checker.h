/*
** checker.h: the replica side of the consistency check (checker.c): what
** the sync client's glue (client.c) does when the engine asks for the
** replica's digests of a namespace, and when it repairs buckets with the
** relay's cells.  Not installed.
*/
#ifndef KNIT_CHECKER_H
#define KNIT_CHECKER_H

#include <stddef.h>
#include <stdint.h>

#include "knit.h"

/* The replica's state digest of ns (knit_digest) into *total, and its
** nbuckets bucket digests (transport/wire/buckets.h) into buckets.
** KNIT_EBUSY when the replica has local rows not acknowledged, or changed
** while it was read: the digests would differ for that, not for damage. */
int knit__checker_digest(knit_t *k, const char *ns, uint32_t nbuckets,
                         knit_digest_t *total /* OUT */, knit_digest_t *buckets /* OUT */);

/* Repairs buckets fetch[0..nfetch) of ns from state, the relay's cells of
** those buckets' rows (CHECKED): rows whose digests differ are restored to
** the merge of the relay's cells and the replica's cells that the relay
** lacks or that beat its own (runtime/check_rt.h).  *rows counts the rows
** restored, *cells the replica's cells among them to push again. */
int knit__checker_repair(knit_t *k, const char *ns, uint32_t nbuckets, const uint32_t *fetch,
                         size_t nfetch, const knit_batch_t *state, size_t *rows /* OUT */,
                         size_t *cells /* OUT */);

#endif
