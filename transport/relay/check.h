/*
** check.h: the relay's half of the consistency check (CHECK / CHECKED,
** docs/PROTOCOL.md): its digest of a namespace, the bucket digests and the
** cells of the buckets a client fetches.  No I/O of its own: it reads the
** store through the backend's catch_up (store.h), so every backend has it.
*/
#ifndef KNIT_RELAY_CHECK_H
#define KNIT_RELAY_CHECK_H

#include "codec.h"
#include "store.h"

/* Answers CHECK q from the store: fills *a (id, ns, seq, digest; buckets
** when the digests differ and q asks for buckets; state when q fetches
** buckets).  a->buckets and a->state are new (knit__relay_check_clear).
** The namespace is read in one catch-up from sequence 0, one snapshot, so
** the digest is of the state at a->seq exactly. */
int knit__relay_check(const knit_relay_backend_t *st, const knit_check_msg_t *q,
                      knit_checked_t *a /* OUT */);

/* Frees what knit__relay_check() made in *a. */
void knit__relay_check_clear(knit_checked_t *a);

#endif
