/*
** check.c: the relay's answer to CHECK (see check.h).
**
** The namespace's state is its catch-up from sequence 0: each cell once, in
** its latest state, which is exactly what the state digest covers once the
** bucket engine (transport/wire/buckets.h) has dropped column cells of
** lives that are over.  So the digest equals knit_relay_store_digest() for
** the SQLite store and the PostgreSQL one alike, without a backend
** operation of its own.  Its cost is one read of the namespace per check;
** clients check every few minutes, and only when they are caught up.
*/
#include "check.h"

#include <string.h>

#include "alloc.h"
#include "buckets.h"

int knit__relay_check(const knit_relay_backend_t *st, const knit_check_msg_t *q,
                      knit_checked_t *a) /* see check.h */
{
    knit_batch_t *b = NULL;
    knit_check_t *acc = NULL;
    knit_digest_t *buckets = NULL;
    uint8_t *only = NULL;
    uint64_t reached = 0;
    int more = 0, rc;
    uint32_t nb = q->nbuckets ? q->nbuckets : 1;

    memset(a, 0, sizeof *a);
    a->id = q->id;
    a->ns = q->ns;
    /* max_changes 0: the whole namespace in one page, one snapshot. */
    if ((rc = st->catch_up(st->data, q->ns, 0, 0, &b, &reached, &more)) != 0)
        return rc;
    if (!(buckets = knit__calloc(nb, sizeof *buckets))) {
        rc = KNIT_ENOMEM;
        goto out;
    }
    if ((rc = knit__check_new(q->ns, nb, &acc)) != 0 || (rc = knit__check_add(acc, b, NULL)) != 0 ||
        (rc = knit__check_finish(acc, &a->digest, buckets)) != 0)
        goto out;
    a->seq = reached;
    if (q->nbuckets && !knit_digest_equal(&a->digest, &q->digest)) {
        a->buckets = buckets;
        a->nbuckets = q->nbuckets;
        buckets = NULL;
    }
    if (q->nfetch) {
        uint32_t nsi;
        if (!(only = knit__calloc(nb, 1))) {
            rc = KNIT_ENOMEM;
            goto out;
        }
        for (size_t i = 0; i < q->nfetch; i++)
            only[q->fetch[i]] = 1;
        if ((rc = knit_batch_new(&a->state)) != 0 || (rc = knit_batch_ns(a->state, q->ns, &nsi)) ||
            (rc = knit_batch_begin(a->state, reached ? reached : 1)) != 0)
            goto out;
        for (size_t i = 0; i < b->nchanges && !rc; i++)
            if (only[knit__check_bucket(b, &b->changes[i], nb)])
                rc = knit__check_copy(a->state, nsi, b, &b->changes[i]);
    }
out:
    if (rc)
        knit__relay_check_clear(a);
    knit__free(only);
    knit__free(buckets);
    knit__check_free(acc);
    knit_batch_free(b);
    return rc;
}

void knit__relay_check_clear(knit_checked_t *a) /* see check.h */
{
    knit__free((void *)a->buckets);
    knit_batch_free(a->state);
    a->buckets = NULL;
    a->nbuckets = 0;
    a->state = NULL;
}
