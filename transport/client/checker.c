/*
** checker.c: the replica side of the consistency check (see checker.h).
**
** The replica's state of a namespace is knit_changes_since(0) of it: every
** cell once, its value read from the user table as the digest reads it.
** The bucket engine (transport/wire/buckets.h) sums it per row and bucket
** exactly as the relay sums its catch-up, so a bucket whose digests differ
** holds the rows that differ, and comparing the two sides' rows in it names
** them.
**
** Design notes
**   1. The relay's cell wins a tie.  A cell with the same causal length,
**      stamp and site on both sides but another value was changed behind
**      knit's back (the stamp did not move): the relay's value is the one
**      that was written.  The replica's cell is kept only where the relay
**      has none of that column, or where it beats the relay's (a later
**      life, a later stamp): those were never acknowledged, and are pushed
**      again.  An OR-set cell that differs is kept too (its merge is a join).
**   2. Only differing rows are restored; a bucket's other rows stay as
**      they are.
*/
#include "checker.h"

#include <string.h>

#include "alloc.h"
#include "buckets.h"
#include "check_rt.h"

int knit__checker_digest(knit_t *k, const char *ns, uint32_t nbuckets, knit_digest_t *total,
                         knit_digest_t *buckets) /* see checker.h */
{
    knit_since_opts_t o = {0, 0, ns};
    knit_batch_t *b = NULL;
    knit_check_t *acc = NULL;
    knit_digest_t sum;
    uint64_t before = 0, after = 0, pending = 0;
    int rc = knit_version(k, &before);
    if (!rc)
        rc = knit_digest(k, ns, total);
    if (!rc)
        rc = knit_changes_since(k, 0, &o, &b);
    /* A write the engine has not heard of yet (the file watch is about to
    ** tell it) makes the states differ for a moment: not now. */
    if (!rc && (rc = knit_version(k, &after)) == 0 && (rc = knit_pending(k, &pending)) == 0 &&
        (after != before || pending))
        rc = KNIT_EBUSY;
    if (!rc)
        rc = knit__check_new(ns, nbuckets, &acc);
    if (!rc)
        rc = knit__check_add(acc, b, NULL);
    if (!rc)
        rc = knit__check_finish(acc, &sum, buckets);
    knit__check_free(acc);
    knit_batch_free(b);
    return rc;
}

static const char *col_name(const knit_batch_t *b, const knit_change_t *ch)
{
    return ch->col ? b->tables[ch->table].cols[ch->col - 1] : "";
}

/* Design note 1: does the replica's cell l beat the relay's r? */
static int beats(const knit_check_cell_t *l, const knit_check_cell_t *r)
{
    const knit_change_t *a = &l->b->changes[l->change], *z = &r->b->changes[r->change];
    const knit_batch_table_t *t = &l->b->tables[a->table];
    if (a->cl != z->cl)
        return a->cl > z->cl;
    if (a->col && t->orset[a->col - 1])
        return memcmp(l->h, r->h, 32) != 0;
    if (a->hlc != z->hlc)
        return a->hlc > z->hlc;
    return memcmp(l->b->sites[a->site].b, r->b->sites[z->site].b, 16) > 0;
}

static int key_cmp(const knit_check_cell_t *a, const knit_check_cell_t *b)
{
    int r = memcmp(a->key, b->key, a->keylen < b->keylen ? a->keylen : b->keylen);
    return r ? r : (a->keylen > b->keylen) - (a->keylen < b->keylen);
}

/* Adds the differing row's cells to the two selections (design note 1). */
static int select_row(const knit_check_cell_t *lc, size_t nl, const knit_check_cell_t *rc_,
                      size_t nr, knit_batch_t *rsel, knit_batch_t *lsel, size_t *cells)
{
    int rc = 0;
    for (size_t i = 0; i < nr && !rc; i++)
        rc = knit__check_copy(rsel, 0, rc_[i].b, &rc_[i].b->changes[rc_[i].change]);
    for (size_t i = 0; i < nl && !rc; i++) {
        const knit_change_t *a = &lc[i].b->changes[lc[i].change];
        const char *name = col_name(lc[i].b, a);
        size_t j;
        if (!lc[i].counted)
            continue; /* a cell of a life that is over */
        for (j = 0; j < nr; j++)
            if (strcmp(col_name(rc_[j].b, &rc_[j].b->changes[rc_[j].change]), name) == 0)
                break;
        if (j == nr || beats(&lc[i], &rc_[j])) {
            rc = knit__check_copy(lsel, 0, lc[i].b, a);
            (*cells)++;
        }
    }
    return rc;
}

int knit__checker_repair(knit_t *k, const char *ns, uint32_t nbuckets, const uint32_t *fetch,
                         size_t nfetch, const knit_batch_t *state, size_t *rows,
                         size_t *cells) /* see checker.h */
{
    knit_since_opts_t o = {0, 0, ns};
    knit_batch_t *l = NULL, *rsel = NULL, *lsel = NULL;
    knit_check_t *la = NULL, *ra = NULL;
    knit_digest_t dl, dr;
    uint8_t *only = NULL;
    uint64_t version = 0;
    uint32_t nsi;
    int rc;

    *rows = *cells = 0;
    if (!(only = knit__calloc(nbuckets, 1)))
        return KNIT_ENOMEM;
    for (size_t i = 0; i < nfetch; i++)
        if (fetch[i] < nbuckets)
            only[fetch[i]] = 1;
    if ((rc = knit_changes_since(k, 0, &o, &l)) != 0 || (rc = knit_version(k, &version)) != 0)
        goto out;
    if ((rc = knit__check_new(ns, nbuckets, &la)) != 0 || (rc = knit__check_add(la, l, only)) ||
        (rc = knit__check_finish(la, &dl, NULL)) != 0)
        goto out;
    if ((rc = knit__check_new(ns, nbuckets, &ra)) != 0 ||
        (rc = knit__check_add(ra, state, only)) != 0 ||
        (rc = knit__check_finish(ra, &dr, NULL)) != 0)
        goto out;
    if ((rc = knit_batch_new(&rsel)) != 0 || (rc = knit_batch_ns(rsel, ns, &nsi)) != 0 ||
        (rc = knit_batch_begin(rsel, 1)) != 0 || (rc = knit_batch_new(&lsel)) != 0 ||
        (rc = knit_batch_ns(lsel, ns, &nsi)) != 0 || (rc = knit_batch_begin(lsel, 1)) != 0)
        goto out;

    /* Both row lists are in key order: walk them together (note 2). */
    size_t nlr, nrr, nlc, nrc, i = 0, j = 0, differ = 0;
    const knit_check_row_t *lr = knit__check_rows(la, &nlr), *rr = knit__check_rows(ra, &nrr);
    const knit_check_cell_t *lcell = knit__check_cells(la, &nlc),
                            *rcell = knit__check_cells(ra, &nrc);
    while (!rc && (i < nlr || j < nrr)) {
        int cmp = i == nlr ? 1 : j == nrr ? -1 : key_cmp(&lcell[lr[i].first], &rcell[rr[j].first]);
        if (cmp == 0 && knit_digest_equal(&lr[i].digest, &rr[j].digest)) {
            i++, j++;
            continue;
        }
        differ++;
        if (cmp == 0)
            rc = select_row(&lcell[lr[i].first], lr[i].n, &rcell[rr[j].first], rr[j].n, rsel, lsel,
                            cells);
        else if (cmp < 0)
            rc = select_row(&lcell[lr[i].first], lr[i].n, NULL, 0, rsel, lsel, cells);
        else
            rc = select_row(NULL, 0, &rcell[rr[j].first], rr[j].n, rsel, lsel, cells);
        if (cmp <= 0)
            i++;
        if (cmp >= 0)
            j++;
    }
    (void)nrc;
    if (!rc && differ)
        rc = knit__check_restore(k, rsel, lsel, version, rows);
out:
    knit__check_free(la);
    knit__check_free(ra);
    knit_batch_free(l);
    knit_batch_free(rsel);
    knit_batch_free(lsel);
    knit__free(only);
    return rc;
}
