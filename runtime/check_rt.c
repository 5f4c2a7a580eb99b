/*
** check_rt.c: restoring rows the consistency check found different from
** the relay's (see check_rt.h).
**
** Design notes
**   1. One transaction: stamp, forget, merge, commit.  A failure rolls all
**      of it back and the next check finds the same rows again.  The
**      caller read the replica's cells before; a stamp or apply since then
**      moved the local version, and the repair is then refused, so no cell
**      the caller did not see is forgotten.
**   2. Forgetting is what makes a repair possible at all: a row changed
**      behind knit's back still carries the stamps of the cells it had, so
**      merging the relay's cells into it would change nothing (same stamp,
**      already held).  Forgotten, the row takes every merged cell afresh,
**      its value from the cell, not from what the file was made to say.
**   3. The deletes of user rows made here are knit's own: the log rows
**      capture writes for them are dropped before the merge (the log was
**      empty after the stamp, inside this write transaction).
**   4. Cells of other sites that the relay lacks (or that beat its own)
**      may survive only here: the relay was restored from an older backup
**      and their device is gone.  They are merged last, under versions of
**      their own, and that range is recorded as re-pushed (sites.c), so
**      the sync client pushes them as it pushes this replica's own cells,
**      and the relay, and every new device, has them again.
*/
#include "check_rt.h"

#include <string.h>

#include "replica.h"

typedef struct crow_s {
    ktable_t *t;            /* the row's table */
    const knit_value_t *pk; /* its key (a batch's) */
} crow_t;

/* 1 when b holds a change of another site than this replica's (note 4). */
static int foreign(const knit_t *k, const knit_batch_t *b)
{
    for (size_t i = 0; i < b->nchanges; i++)
        if (b->changes[i].site < b->nsites &&
            memcmp(b->sites[b->changes[i].site].b, k->site.b, sizeof k->site.b) != 0)
            return 1;
    return 0;
}

/* Design note 2: the row goes, with everything knit knows of it. */
static int forget_row(knit_t *k, ktable_t *t, const knit_value_t *pk, uint32_t ns)
{
    int rc = knit__row_forget(k, t, pk, 1);
    if (!rc && t->nscol >= 0) /* only tables with a namespace column have departures */
        rc = knit__gone_del(k, t, pk, ns);
    return rc;
}

/* Adds the rows b's changes name to rows[0..*n) (capacity cap). */
static int collect(knit_t *k, const knit_batch_t *b, crow_t **rows, size_t *n, size_t *cap)
{
    for (size_t i = 0; b && i < b->nchanges; i++) {
        const knit_change_t *ch = &b->changes[i];
        if (ch->table >= b->ntables)
            return knit__err(k, KNIT_EINVAL, "a restore change names no table");
        ktable_t *t = knit__table(k, b->tables[ch->table].name);
        if (!t || t->npk != b->tables[ch->table].npk)
            continue; /* not tracked here: apply sets it aside */
        size_t j;
        for (j = 0; j < *n; j++)
            if ((*rows)[j].t == t && knit__keys_equal((*rows)[j].pk, ch->pk, t->npk))
                break;
        if (j < *n)
            continue;
        if (*n == *cap) {
            size_t c = *cap ? *cap * 2 : 32;
            crow_t *r = knit__realloc(*rows, c * sizeof *r);
            if (!r)
                return KNIT_ENOMEM;
            *rows = r;
            *cap = c;
        }
        (*rows)[(*n)++] = (crow_t){t, ch->pk};
    }
    return 0;
}

int knit__check_restore(knit_t *k, const knit_batch_t *relay, const knit_batch_t *local,
                        uint64_t version, size_t *nrows) /* see check_rt.h */
{
    int64_t now_ver = 0;
    crow_t *rows = NULL;
    size_t n = 0, cap = 0;
    uint32_t ns = 0;
    int rc;

    if (nrows)
        *nrows = 0;
    if (!k || !relay || relay->nns != 1 || (local && local->nns != 1))
        return KNIT_EINVAL;
    if (k->readonly)
        return knit__err(k, KNIT_EINVAL, "the replica is open read-only");
    if ((rc = knit_stamp(k)) < 0)
        return rc;
    if ((rc = knit__begin(k)) != 0)
        return rc;
    if ((rc = knit__stamp_locked(k, NULL)) != 0 || (rc = knit__load_tables(k)) != 0 ||
        (rc = knit__meta_get_int(k, "version", &now_ver)) != 0 ||
        (rc = knit__ns_intern(k, relay->ns[0], &ns)) != 0)
        goto fail;
    if ((uint64_t)now_ver != version) {
        rc = knit__err(k, KNIT_EBUSY, "the replica changed since it was read; check again");
        goto fail;
    }
    if ((rc = collect(k, relay, &rows, &n, &cap)) != 0 ||
        (rc = collect(k, local, &rows, &n, &cap)) != 0)
        goto fail;
    for (size_t i = 0; i < n && !rc; i++)
        rc = forget_row(k, rows[i].t, rows[i].pk, ns);
    /* Design note 3. */
    for (size_t i = 0; i < n && !rc; i++) {
        size_t j;
        for (j = 0; j < i && rows[j].t != rows[i].t; j++)
            ;
        if (j < i)
            continue;
        sqlite3_str *s = sqlite3_str_new(k->db);
        sqlite3_str_appendf(s, "DELETE FROM _knit_log_%d", rows[i].t->id);
        rc = knit__exec_str(k, s);
    }
    if (rc)
        goto fail;
    if (relay->nchanges && (rc = knit__apply_locked(k, relay, NULL)) != 0)
        goto fail;
    if (local && local->nchanges) {
        /* Design note 4. */
        uint64_t before = 0, after = 0;
        if ((rc = knit_version(k, &before)) != 0 ||
            (rc = knit__apply_locked(k, local, NULL)) != 0 || (rc = knit_version(k, &after)) != 0)
            goto fail;
        if (after > before && foreign(k, local) && (rc = knit__repush_add(k, before + 1, after)))
            goto fail;
    }
    if ((rc = knit__commit(k)) != 0)
        goto fail;
    knit__free(rows);
    knit__notify(k);
    if (nrows)
        *nrows = n;
    return 0;
fail:
    knit__rollback(k);
    knit__free(rows);
    return rc;
}
