/*
** check_rt.h: the replica's half of the consistency check's repair
** (check_rt.c), for the sync client (transport/client/checker.c).  Not
** installed.
*/
#ifndef KNIT_CHECK_RT_H
#define KNIT_CHECK_RT_H

#include <stddef.h>

#include "knit.h"

/* Restores rows of namespace ns to a state given as batches, in one write
** transaction: captured writes are stamped first; then every row that a
** change of relay or local names (by table and key) is forgotten, user
** row, metadata, OR-set states and departure from ns alike, without being
** captured as a local delete; then relay (the relay's cells of those rows)
** and local (this replica's cells of them that the relay lacks or that
** beat the relay's, may be NULL) are merged in as by knit_apply.  So a row
** changed, deleted or added behind knit's back holds the merged state of
** both again; local cells get new local versions and are pushed again,
** also those of other sites (check_rt.c note 4: their range is recorded
** as re-pushed until the relay acknowledges it).  *rows (may be NULL) counts the rows
** restored.  version is the replica's local version (knit_version) when
** local was read: when the stamp moves it (a write or an apply came
** between), nothing is done and KNIT_EBUSY says to check again, so a cell
** local does not hold is never forgotten.  Batches are read during the
** call only. */
int knit__check_restore(knit_t *k, const knit_batch_t *relay, const knit_batch_t *local,
                        uint64_t version, size_t *rows /* OUT */);

#endif
