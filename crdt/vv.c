/*
** vv.c: version vectors as sorted arrays of (site, counter).
**
** Vectors stay small (one entry per site that ever wrote the object), so a
** sorted array with binary search beats any tree, and keeping it sorted makes
** merge and compare single linear walks.
**
** Design notes
**   1. Entries are strictly increasing by site and every n is >= 1; a site
**      with counter 0 has no entry.
**   2. Every function that can fail allocates before it changes anything, so
**      on KNIT_ENOMEM or KNIT_EINVAL the vector is exactly as it was.
*/
#include "vv.h"

#include <stdlib.h>
#include <string.h>

#include "alloc.h"

void knit_vv_init(knit_vv_t *vv) /* see vv.h */
{
    vv->e = NULL;
    vv->len = 0;
    vv->cap = 0;
}

void knit_vv_free(knit_vv_t *vv) /* see vv.h */
{
    if (!vv)
        return;
    knit__free(vv->e);
    knit_vv_init(vv);
}

/* Index of the first entry with site >= `site`. */
static size_t lower_bound(const knit_vv_t *vv, uint32_t site)
{
    size_t lo = 0, hi = vv->len;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (vv->e[mid].site < site)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

uint64_t knit_vv_get(const knit_vv_t *vv, uint32_t site) /* see vv.h */
{
    size_t i = lower_bound(vv, site);

    return i < vv->len && vv->e[i].site == site ? vv->e[i].n : 0;
}

/* Room for `want` entries; growth doubles so n sets cost O(n) copies. */
static int reserve(knit_vv_t *vv, size_t want)
{
    size_t cap;
    knit_dot_t *e;

    if (want <= vv->cap)
        return 0;
    cap = vv->cap ? vv->cap * 2 : 4;
    if (cap < want)
        cap = want;
    if (cap > SIZE_MAX / sizeof *e)
        return KNIT_ENOMEM;
    e = knit__realloc(vv->e, cap * sizeof *e);
    if (!e)
        return KNIT_ENOMEM;
    vv->e = e;
    vv->cap = cap;
    return 0;
}

int knit_vv_set(knit_vv_t *vv, uint32_t site, uint64_t n) /* see vv.h */
{
    size_t i = lower_bound(vv, site);
    int found = i < vv->len && vv->e[i].site == site;

    if (n == 0) {
        if (found) {
            memmove(vv->e + i, vv->e + i + 1, (vv->len - i - 1) * sizeof *vv->e);
            vv->len--;
        }
        return 0;
    }
    if (found) {
        vv->e[i].n = n;
        return 0;
    }
    if (reserve(vv, vv->len + 1))
        return KNIT_ENOMEM;
    memmove(vv->e + i + 1, vv->e + i, (vv->len - i) * sizeof *vv->e);
    vv->e[i].site = site;
    vv->e[i].n = n;
    vv->len++;
    return 0;
}

int knit_vv_merge(knit_vv_t *a, const knit_vv_t *b) /* see vv.h */
{
    size_t i = 0, j = 0, k = 0, extra = 0;
    knit_dot_t *e;

    /* First pass: how many of b's sites a lacks.  When none (the common
    ** case once sites are known) the merge happens in place. */
    while (j < b->len) {
        if (i < a->len && a->e[i].site < b->e[j].site)
            i++;
        else if (i < a->len && a->e[i].site == b->e[j].site)
            i++, j++;
        else
            extra++, j++;
    }
    if (extra == 0) {
        for (i = 0, j = 0; j < b->len; j++) {
            while (a->e[i].site < b->e[j].site)
                i++;
            if (b->e[j].n > a->e[i].n)
                a->e[i].n = b->e[j].n;
        }
        return 0;
    }
    if (a->len + extra > SIZE_MAX / sizeof *e)
        return KNIT_ENOMEM;
    e = knit__malloc((a->len + extra) * sizeof *e);
    if (!e)
        return KNIT_ENOMEM;
    for (i = 0, j = 0; i < a->len || j < b->len;) {
        if (j == b->len || (i < a->len && a->e[i].site < b->e[j].site)) {
            e[k++] = a->e[i++];
        } else if (i == a->len || b->e[j].site < a->e[i].site) {
            e[k++] = b->e[j++];
        } else {
            e[k] = a->e[i];
            if (b->e[j].n > e[k].n)
                e[k].n = b->e[j].n;
            k++, i++, j++;
        }
    }
    knit__free(a->e);
    a->e = e;
    a->len = k;
    a->cap = a->len;
    return 0;
}

int knit_vv_compare(const knit_vv_t *a, const knit_vv_t *b) /* see vv.h */
{
    size_t i = 0, j = 0;
    int a_more = 0, b_more = 0; /* a (b) has seen something the other has not */

    while (i < a->len || j < b->len) {
        if (j == b->len || (i < a->len && a->e[i].site < b->e[j].site)) {
            a_more = 1;
            i++;
        } else if (i == a->len || b->e[j].site < a->e[i].site) {
            b_more = 1;
            j++;
        } else {
            if (a->e[i].n > b->e[j].n)
                a_more = 1;
            else if (a->e[i].n < b->e[j].n)
                b_more = 1;
            i++, j++;
        }
    }
    if (a_more && b_more)
        return KNIT_VV_CONCURRENT;
    if (a_more)
        return KNIT_VV_AFTER;
    if (b_more)
        return KNIT_VV_BEFORE;
    return KNIT_VV_EQUAL;
}

int knit_vv_copy(knit_vv_t *dst, const knit_vv_t *src) /* see vv.h */
{
    knit_vv_init(dst);
    if (src->len == 0)
        return 0;
    dst->e = knit__memdup(src->e, src->len * sizeof *src->e);
    if (!dst->e)
        return KNIT_ENOMEM;
    dst->len = dst->cap = src->len;
    return 0;
}

static int cmp_site(const void *x, const void *y)
{
    const knit_dot_t *a = x, *b = y;

    return a->site < b->site ? -1 : a->site > b->site;
}

int knit_vv_remap(knit_vv_t *vv, const uint32_t *map, size_t nmap) /* see vv.h */
{
    knit_dot_t *e;
    size_t i;

    if (vv->len == 0)
        return 0;
    for (i = 0; i < vv->len; i++)
        if (vv->e[i].site >= nmap)
            return KNIT_EINVAL;
    e = knit__malloc(vv->len * sizeof *e);
    if (!e)
        return KNIT_ENOMEM;
    for (i = 0; i < vv->len; i++) {
        e[i].site = map[vv->e[i].site];
        e[i].n = vv->e[i].n;
    }
    qsort(e, vv->len, sizeof *e, cmp_site);
    /* Two sites mapped to one would merge two histories into one entry:
    ** that is a caller's mistake, refused rather than guessed at. */
    for (i = 1; i < vv->len; i++) {
        if (e[i].site == e[i - 1].site) {
            knit__free(e);
            return KNIT_EINVAL;
        }
    }
    knit__free(vv->e);
    vv->e = e;
    vv->cap = vv->len;
    return 0;
}
