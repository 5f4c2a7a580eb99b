/*
** orset.c: the add-wins observed-remove set (semantics in orset.h).
**
** This is the optimized delta-state OR-set of Almeida, Shoker and Baquero
** ("Delta state replicated data types", 2018): a dot store mapping each
** element to the dots of its live adds, and a causal context of every dot
** seen.  The context is kept compressed as a version vector plus a cloud of
** dots that arrived ahead of a gap, so a set written by one site carries one
** vector entry and no tombstones however long it churns.
**
** Design notes
**   1. Elements are canonical (knit_value_canon), strictly increasing by
**      knit_value_cmp, and own their TEXT/BLOB bytes.
**   2. Every element has at least one dot; its dots are strictly increasing
**      by (site, n) and each is covered by the context.
**   3. The context is compact: vv entries are >= 1, cloud dots are strictly
**      increasing by (site, n) and every cloud dot (s, n) has n > vv[s] + 1;
**      a dot that closes a gap is folded into the vector at once.  So equal
**      contexts have equal representations, which keeps encoding canonical.
**   4. A fresh dot for site s is 1 + the largest counter of s in the context,
**      so it was never seen before by this replica.
**   5. Every operation allocates everything it needs before it changes
**      anything: on error the set (and the delta accumulator) is unchanged.
**
** Joins build their result beside the old state and then swap it in; to
** avoid copying every element, the result borrows the bytes and dot arrays
** of the left operand's elements, and the swap frees only what it did not
** keep.
*/
#include "orset.h"
#include "utf8.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"

/* ---------------------------------------------------------------------- */
/* Dots and the causal context. */

static int dot_cmp(const knit_dot_t *a, const knit_dot_t *b)
{
    if (a->site != b->site)
        return a->site < b->site ? -1 : 1;
    if (a->n != b->n)
        return a->n < b->n ? -1 : 1;
    return 0;
}

/* Index of the first dot in d[0..n) that is >= x. */
static size_t dots_lower_bound(const knit_dot_t *d, size_t n, const knit_dot_t *x)
{
    size_t lo = 0, hi = n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (dot_cmp(&d[mid], x) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* 1 if the context of s has seen dot d. */
static int ctx_has(const knit_orset_t *s, const knit_dot_t *d)
{
    size_t i;

    if (d->n <= knit_vv_get(&s->vv, d->site))
        return 1;
    i = dots_lower_bound(s->cloud, s->ncloud, d);
    return i < s->ncloud && dot_cmp(&s->cloud[i], d) == 0;
}

/* Largest counter of `site` in the context (note 4). */
static uint64_t ctx_max(const knit_orset_t *s, uint32_t site)
{
    knit_dot_t past = {site, UINT64_MAX};
    size_t i = dots_lower_bound(s->cloud, s->ncloud, &past);

    /* Cloud dots for `site` end just before the first dot past them; the
    ** one at `past` itself, if any, is that site's last. */
    if (i < s->ncloud && s->cloud[i].site == site)
        return s->cloud[i].n;
    if (i > 0 && s->cloud[i - 1].site == site)
        return s->cloud[i - 1].n;
    return knit_vv_get(&s->vv, site);
}

/* Room for `want` vector entries, without touching the entries. */
static int vv_reserve(knit_vv_t *vv, size_t want)
{
    knit_dot_t *e;
    size_t cap;

    if (want <= vv->cap)
        return 0;
    cap = vv->cap ? vv->cap * 2 : 4;
    if (cap < want)
        cap = want;
    e = knit__realloc(vv->e, cap * sizeof *e);
    if (!e)
        return KNIT_ENOMEM;
    vv->e = e;
    vv->cap = cap;
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Elements. */

static int owns_bytes(const knit_value_t *v)
{
    return v->type == KNIT_TEXT || v->type == KNIT_BLOB;
}

/* Copies v's bytes so the set owns them; *out is v with the new pointer. */
static int value_dup(const knit_value_t *v, knit_value_t *out)
{
    *out = *v;
    if (owns_bytes(v)) {
        out->u.b.p = knit__memdup(v->u.b.p, v->u.b.n);
        if (!out->u.b.p)
            return KNIT_ENOMEM;
    }
    return 0;
}

static void value_release(knit_value_t *v)
{
    if (owns_bytes(v))
        knit__free((void *)v->u.b.p);
}

/* Binary search for e; *pos is its index or where it would go. */
static int find_elem(const knit_orset_t *s, const knit_value_t *e, size_t *pos)
{
    size_t lo = 0, hi = s->nelems;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = knit_value_cmp(&s->elems[mid].v, e);
        if (c == 0) {
            *pos = mid;
            return 1;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *pos = lo;
    return 0;
}

static int reserve_elems(knit_orset_t *s, size_t want)
{
    knit_orset_elem_t *e;
    size_t cap;

    if (want <= s->cap)
        return 0;
    cap = s->cap ? s->cap * 2 : 4;
    if (cap < want)
        cap = want;
    e = knit__realloc(s->elems, cap * sizeof *e);
    if (!e)
        return KNIT_ENOMEM;
    s->elems = e;
    s->cap = cap;
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Life cycle. */

void knit_orset_init(knit_orset_t *s) /* see orset.h */
{
    s->elems = NULL;
    s->nelems = 0;
    s->cap = 0;
    knit_vv_init(&s->vv);
    s->cloud = NULL;
    s->ncloud = 0;
}

void knit_orset_free(knit_orset_t *s) /* see orset.h */
{
    size_t i;

    if (!s)
        return;
    for (i = 0; i < s->nelems; i++) {
        value_release(&s->elems[i].v);
        knit__free(s->elems[i].dots);
    }
    knit__free(s->elems);
    knit_vv_free(&s->vv);
    knit__free(s->cloud);
    knit_orset_init(s);
}

int knit_orset_copy(knit_orset_t *dst, const knit_orset_t *src) /* see orset.h */
{
    size_t i;

    knit_orset_init(dst);
    if (knit_vv_copy(&dst->vv, &src->vv))
        goto nomem;
    if (src->ncloud) {
        dst->cloud = knit__memdup(src->cloud, src->ncloud * sizeof *src->cloud);
        if (!dst->cloud)
            goto nomem;
        dst->ncloud = src->ncloud;
    }
    if (src->nelems) {
        dst->elems = knit__malloc(src->nelems * sizeof *dst->elems);
        if (!dst->elems)
            goto nomem;
        dst->cap = src->nelems;
    }
    for (i = 0; i < src->nelems; i++) {
        knit_orset_elem_t *d = &dst->elems[i];
        const knit_orset_elem_t *e = &src->elems[i];
        d->dots = knit__memdup(e->dots, e->ndots * sizeof *e->dots);
        if (!d->dots)
            goto nomem;
        if (value_dup(&e->v, &d->v)) {
            knit__free(d->dots);
            goto nomem;
        }
        d->ndots = e->ndots;
        dst->nelems++;
    }
    return 0;
nomem:
    knit_orset_free(dst);
    return KNIT_ENOMEM;
}

int knit_orset_contains(const knit_orset_t *s, const knit_value_t *e) /* see orset.h */
{
    knit_value_t v = *e;
    size_t pos;

    knit_value_canon(&v);
    return find_elem(s, &v, &pos);
}

/* ---------------------------------------------------------------------- */
/* Join.
**
** A join is built in a fresh result r and committed by swapping it into s.
** r borrows from s: element bytes always (an element of s that survives
** keeps its bytes), dot arrays when the element's dots did not change.  The
** flag arrays record what was borrowed so that commit frees exactly what r
** does not keep, and abort frees exactly what r allocated. */

#define BORROW_BYTES 1 /* r element's bytes belong to an element of s */
#define BORROW_DOTS 2  /* r element's dot array belongs to an element of s */

typedef struct join_s {
    knit_orset_t r;  /* the result under construction */
    uint8_t *sflags; /* per element of s: BORROW_* parts r kept */
    uint8_t *rflags; /* per element of r: BORROW_* parts it borrows */
} join_t;

/* The dots of one element after the join (the rule in orset.h): a dot on
** both sides stays; a dot on one side stays unless the other side's context
** has seen it (then the other side removed it).  Writes to out when it is
** not NULL; returns the count and sets *same when the result is exactly a. */
static size_t join_dots(const knit_dot_t *a, size_t na, const knit_orset_t *actx,
                        const knit_dot_t *b, size_t nb, const knit_orset_t *bctx, knit_dot_t *out,
                        int *same)
{
    size_t i = 0, j = 0, k = 0;

    *same = 1;
    while (i < na || j < nb) {
        int c = i == na ? 1 : j == nb ? -1 : dot_cmp(&a[i], &b[j]);
        if (c == 0) {
            if (out)
                out[k] = a[i];
            k++, i++, j++;
        } else if (c < 0) {
            if (!ctx_has(bctx, &a[i])) {
                if (out)
                    out[k] = a[i];
                k++;
            } else {
                *same = 0;
            }
            i++;
        } else {
            if (!ctx_has(actx, &b[j])) {
                if (out)
                    out[k] = b[j];
                k++;
                *same = 0;
            }
            j++;
        }
    }
    return k;
}

/* r's context = s's united with o's, compacted (note 3).  Tolerates an o
** whose context is not compact (the operation deltas built below). */
static int join_context(const knit_orset_t *s, const knit_orset_t *o, knit_orset_t *r)
{
    size_t nc = s->ncloud + o->ncloud, ns = s->vv.len + o->vv.len + nc;
    size_t i = 0, j = 0, k = 0, m = 0, a = 0, b = 0;
    knit_dot_t *c = NULL, *v = NULL;

    if (nc) {
        c = knit__malloc(nc * sizeof *c);
        if (!c)
            return KNIT_ENOMEM;
    }
    if (ns) {
        v = knit__malloc(ns * sizeof *v);
        if (!v) {
            knit__free(c);
            return KNIT_ENOMEM;
        }
    }
    /* Union of the clouds, sorted, without duplicates. */
    while (i < s->ncloud || j < o->ncloud) {
        int d = i == s->ncloud ? 1 : j == o->ncloud ? -1 : dot_cmp(&s->cloud[i], &o->cloud[j]);
        c[k++] = d <= 0 ? s->cloud[i] : o->cloud[j];
        i += d <= 0;
        j += d >= 0;
    }
    nc = k;
    /* One walk over every site of either vector or the cloud, in order:
    ** the vector entry is the larger of the two, then cloud dots it covers
    ** are dropped, dots that extend it by one are folded in, and the rest
    ** (beyond a gap) stay in the cloud, written back over the cloud itself
    ** (the write index never passes the read index). */
    i = j = k = 0;
    while (a < s->vv.len || b < o->vv.len || i < nc) {
        uint32_t site = UINT32_MAX;
        uint64_t n = 0;
        if (a < s->vv.len && s->vv.e[a].site < site)
            site = s->vv.e[a].site;
        if (b < o->vv.len && o->vv.e[b].site < site)
            site = o->vv.e[b].site;
        if (i < nc && c[i].site < site)
            site = c[i].site;
        if (a < s->vv.len && s->vv.e[a].site == site)
            n = s->vv.e[a++].n;
        if (b < o->vv.len && o->vv.e[b].site == site && o->vv.e[b].n > n)
            n = o->vv.e[b].n;
        if (b < o->vv.len && o->vv.e[b].site == site)
            b++;
        /* Ascending order means that once one dot is kept (a gap), no
        ** later dot of the site can extend the vector either. */
        for (; i < nc && c[i].site == site; i++) {
            if (c[i].n <= n)
                continue;
            if (c[i].n == n + 1)
                n++;
            else
                c[k++] = c[i];
        }
        if (n)
            v[m++] = (knit_dot_t){site, n};
    }
    if (k == 0) {
        knit__free(c);
        c = NULL;
    }
    r->cloud = c;
    r->ncloud = k;
    if (m == 0) {
        knit__free(v);
        v = NULL;
    }
    r->vv.e = v;
    r->vv.len = m;
    r->vv.cap = m ? ns : 0;
    return 0;
}

static void join_abort(join_t *J)
{
    size_t i;

    for (i = 0; i < J->r.nelems; i++) {
        if (!(J->rflags[i] & BORROW_BYTES))
            value_release(&J->r.elems[i].v);
        if (!(J->rflags[i] & BORROW_DOTS))
            knit__free(J->r.elems[i].dots);
    }
    knit__free(J->r.elems);
    knit_vv_free(&J->r.vv);
    knit__free(J->r.cloud);
    knit__free(J->sflags);
}

/* Computes s join o into J without changing s. */
static int join_build(const knit_orset_t *s, const knit_orset_t *o, join_t *J)
{
    size_t i = 0, j = 0, cap = s->nelems + o->nelems;

    knit_orset_init(&J->r);
    J->sflags = NULL;
    J->rflags = NULL;
    if (s->nelems + cap) {
        J->sflags = knit__calloc(s->nelems + cap, 1);
        if (!J->sflags)
            return KNIT_ENOMEM;
        J->rflags = J->sflags + s->nelems;
    }
    if (cap) {
        J->r.elems = knit__malloc(cap * sizeof *J->r.elems);
        if (!J->r.elems)
            goto nomem;
        J->r.cap = cap;
    }
    while (i < s->nelems || j < o->nelems) {
        const knit_orset_elem_t *a = i < s->nelems ? &s->elems[i] : NULL;
        const knit_orset_elem_t *b = j < o->nelems ? &o->elems[j] : NULL;
        knit_orset_elem_t *out = &J->r.elems[J->r.nelems];
        int c = !a ? 1 : !b ? -1 : knit_value_cmp(&a->v, &b->v);
        const knit_dot_t *ad = c <= 0 ? a->dots : NULL, *bd = c >= 0 ? b->dots : NULL;
        size_t na = c <= 0 ? a->ndots : 0, nb = c >= 0 ? b->ndots : 0, nd;
        int same;
        uint8_t flags = 0;

        nd = join_dots(ad, na, s, bd, nb, o, NULL, &same);
        if (nd == 0)
            goto next; /* every add of it was removed */
        if (c <= 0) {
            out->v = a->v;
            flags |= BORROW_BYTES;
        } else if (value_dup(&b->v, &out->v)) {
            goto nomem;
        }
        if (c <= 0 && same) {
            out->dots = a->dots;
            flags |= BORROW_DOTS;
        } else {
            out->dots = knit__malloc(nd * sizeof *out->dots);
            if (!out->dots) {
                if (!(flags & BORROW_BYTES))
                    value_release(&out->v);
                goto nomem;
            }
            join_dots(ad, na, s, bd, nb, o, out->dots, &same);
        }
        out->ndots = nd;
        if (c <= 0)
            J->sflags[i] = flags;
        J->rflags[J->r.nelems++] = flags;
    next:
        i += c <= 0;
        j += c >= 0;
    }
    if (join_context(s, o, &J->r))
        goto nomem;
    return 0;
nomem:
    join_abort(J);
    return KNIT_ENOMEM;
}

/* Swaps the result into s, freeing the parts of s it did not borrow. */
static void join_commit(knit_orset_t *s, join_t *J)
{
    size_t i;

    for (i = 0; i < s->nelems; i++) {
        if (!(J->sflags[i] & BORROW_BYTES))
            value_release(&s->elems[i].v);
        if (!(J->sflags[i] & BORROW_DOTS))
            knit__free(s->elems[i].dots);
    }
    knit__free(s->elems);
    knit_vv_free(&s->vv);
    knit__free(s->cloud);
    knit__free(J->sflags);
    *s = J->r;
    if (s->nelems == 0) {
        knit__free(s->elems);
        s->elems = NULL;
        s->cap = 0;
    }
}

int knit_orset_join(knit_orset_t *s, const knit_orset_t *o) /* see orset.h */
{
    join_t J;
    int rc = join_build(s, o, &J);

    if (rc)
        return rc;
    join_commit(s, &J);
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Local operations. */

int knit_orset_add(knit_orset_t *s, uint32_t site, const knit_value_t *e,
                   knit_orset_t *delta) /* see orset.h */
{
    knit_value_t v = *e, owned;
    knit_dot_t d, *dot = NULL, *dctx = NULL;
    knit_orset_elem_t *el = NULL;
    size_t pos, cpos = 0;
    uint64_t max;
    int found, to_vv, dup = 0;
    join_t J;

    knit_value_canon(&v);
    if (v.type == KNIT_REAL && v.u.r != v.u.r)
        return KNIT_EINVAL; /* NaN has no encoding (and SQLite stores NULL) */
    found = find_elem(s, &v, &pos);
    if (found)
        el = &s->elems[pos];
    max = ctx_max(s, site);
    if (max == UINT64_MAX)
        return KNIT_EOVERFLOW;
    d.site = site;
    d.n = max + 1;
    /* With no cloud dots of this site the new dot extends the vector;
    ** otherwise it lands in the cloud after them, still beyond the gap. */
    to_vv = max == knit_vv_get(&s->vv, site);

    /* Allocate everything first (note 5). */
    dot = knit__malloc(sizeof *dot);
    if (!dot)
        return KNIT_ENOMEM;
    owned = v;
    if (!found) {
        if (value_dup(&v, &owned))
            goto fail;
        dup = 1;
    }
    if (!found && reserve_elems(s, s->nelems + 1))
        goto fail;
    if (to_vv && max == 0 && vv_reserve(&s->vv, s->vv.len + 1))
        goto fail;
    if (!to_vv) {
        knit_dot_t *c = knit__realloc(s->cloud, (s->ncloud + 1) * sizeof *c);
        if (!c)
            goto fail;
        s->cloud = c;
        cpos = dots_lower_bound(s->cloud, s->ncloud, &d);
    }
    if (delta) {
        /* The operation's delta: store {v: {d}}, context {d} + old dots. */
        knit_orset_elem_t oe;
        knit_orset_t op;
        size_t nold = found ? el->ndots : 0, at;

        dctx = knit__malloc((nold + 1) * sizeof *dctx);
        if (!dctx)
            goto fail;
        at = found ? dots_lower_bound(el->dots, nold, &d) : 0;
        if (at)
            memcpy(dctx, el->dots, at * sizeof *dctx);
        dctx[at] = d;
        if (nold > at)
            memcpy(dctx + at + 1, el->dots + at, (nold - at) * sizeof *dctx);
        oe.v = v;
        oe.dots = &d;
        oe.ndots = 1;
        knit_orset_init(&op);
        op.elems = &oe;
        op.nelems = 1;
        op.cloud = dctx;
        op.ncloud = nold + 1;
        if (join_build(delta, &op, &J))
            goto fail;
        join_commit(delta, &J);
        knit__free(dctx);
    }

    /* Commit: nothing below can fail. */
    *dot = d;
    if (found) {
        knit__free(el->dots);
    } else {
        memmove(s->elems + pos + 1, s->elems + pos, (s->nelems - pos) * sizeof *s->elems);
        el = &s->elems[pos];
        el->v = owned;
        s->nelems++;
    }
    el->dots = dot;
    el->ndots = 1;
    if (to_vv) {
        knit_vv_set(&s->vv, site, d.n); /* room reserved above */
    } else {
        memmove(s->cloud + cpos + 1, s->cloud + cpos, (s->ncloud - cpos) * sizeof *s->cloud);
        s->cloud[cpos] = d;
        s->ncloud++;
    }
    return 0;
fail:
    knit__free(dctx);
    if (dup)
        value_release(&owned);
    knit__free(dot);
    return KNIT_ENOMEM;
}

int knit_orset_remove(knit_orset_t *s, const knit_value_t *e, knit_orset_t *delta) /* see orset.h */
{
    knit_value_t v = *e;
    knit_orset_elem_t *el;
    size_t pos;
    join_t J;

    knit_value_canon(&v);
    if (!find_elem(s, &v, &pos))
        return 0;
    el = &s->elems[pos];
    if (delta) {
        /* The operation's delta: empty store, context = the dots removed. */
        knit_orset_t op;
        knit_orset_init(&op);
        op.cloud = el->dots;
        op.ncloud = el->ndots;
        if (join_build(delta, &op, &J))
            return KNIT_ENOMEM;
        join_commit(delta, &J);
    }
    /* The removed dots stay in the context; that is what removes them. */
    value_release(&el->v);
    knit__free(el->dots);
    memmove(s->elems + pos, s->elems + pos + 1, (s->nelems - pos - 1) * sizeof *s->elems);
    s->nelems--;
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Comparison and renumbering. */

static int dots_equal(const knit_dot_t *a, const knit_dot_t *b, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        if (dot_cmp(&a[i], &b[i]))
            return 0;
    return 1;
}

int knit_orset_equal(const knit_orset_t *a, const knit_orset_t *b) /* see orset.h */
{
    size_t i;

    if (a->nelems != b->nelems || a->ncloud != b->ncloud || a->vv.len != b->vv.len)
        return 0;
    if (!dots_equal(a->vv.e, b->vv.e, a->vv.len) || !dots_equal(a->cloud, b->cloud, a->ncloud))
        return 0;
    for (i = 0; i < a->nelems; i++) {
        const knit_orset_elem_t *x = &a->elems[i], *y = &b->elems[i];
        if (x->v.type != y->v.type || knit_value_cmp(&x->v, &y->v) != 0)
            return 0;
        if (x->ndots != y->ndots || !dots_equal(x->dots, y->dots, x->ndots))
            return 0;
    }
    return 1;
}

static int qsort_dot_cmp(const void *x, const void *y)
{
    return dot_cmp(x, y);
}

static int qsort_u32_cmp(const void *x, const void *y)
{
    uint32_t a = *(const uint32_t *)x, b = *(const uint32_t *)y;

    return a < b ? -1 : a > b;
}

int knit_orset_remap(knit_orset_t *s, const uint32_t *map, size_t nmap) /* see orset.h */
{
    knit_vv_t vv;
    knit_dot_t *cloud = NULL;
    uint32_t *sites = NULL;
    size_t i, j, k = 0, nsites = s->vv.len + s->ncloud;
    int rc = KNIT_ENOMEM;

    /* Every site named anywhere must have a mapping; element dots lie in
    ** the context, but a hand-built set may break that, so check them too. */
    for (i = 0; i < s->vv.len; i++)
        if (s->vv.e[i].site >= nmap)
            return KNIT_EINVAL;
    for (i = 0; i < s->ncloud; i++)
        if (s->cloud[i].site >= nmap)
            return KNIT_EINVAL;
    for (i = 0; i < s->nelems; i++)
        for (j = 0; j < s->elems[i].ndots; j++)
            if (s->elems[i].dots[j].site >= nmap)
                return KNIT_EINVAL;
    if (nsites == 0 && s->nelems == 0)
        return 0;

    /* Distinct sites of the context must stay distinct after mapping. */
    if (nsites) {
        sites = knit__malloc(nsites * sizeof *sites);
        if (!sites)
            return KNIT_ENOMEM;
        for (i = 0; i < s->vv.len; i++)
            sites[k++] = s->vv.e[i].site;
        for (i = 0; i < s->ncloud; i++)
            if (i == 0 || s->cloud[i].site != s->cloud[i - 1].site)
                if (knit_vv_get(&s->vv, s->cloud[i].site) == 0)
                    sites[k++] = s->cloud[i].site;
        for (i = 0; i < k; i++)
            sites[i] = map[sites[i]];
        qsort(sites, k, sizeof *sites, qsort_u32_cmp);
        for (i = 1; i < k; i++) {
            if (sites[i] == sites[i - 1]) {
                knit__free(sites);
                return KNIT_EINVAL;
            }
        }
        knit__free(sites);
    }
    if (knit_vv_copy(&vv, &s->vv))
        return KNIT_ENOMEM;
    if ((rc = knit_vv_remap(&vv, map, nmap)) != 0)
        goto fail;
    rc = KNIT_ENOMEM;
    if (s->ncloud) {
        cloud = knit__malloc(s->ncloud * sizeof *cloud);
        if (!cloud)
            goto fail;
        for (i = 0; i < s->ncloud; i++) {
            cloud[i].site = map[s->cloud[i].site];
            cloud[i].n = s->cloud[i].n;
        }
        qsort(cloud, s->ncloud, sizeof *cloud, qsort_dot_cmp);
    }
    /* Commit; renumbering the element dots in place cannot fail. */
    knit_vv_free(&s->vv);
    s->vv = vv;
    knit__free(s->cloud);
    s->cloud = cloud;
    for (i = 0; i < s->nelems; i++) {
        knit_orset_elem_t *el = &s->elems[i];
        for (j = 0; j < el->ndots; j++)
            el->dots[j].site = map[el->dots[j].site];
        qsort(el->dots, el->ndots, sizeof *el->dots, qsort_dot_cmp);
    }
    return 0;
fail:
    knit_vv_free(&vv);
    knit__free(cloud);
    return rc;
}

/* ---------------------------------------------------------------------- */
/* Binary form (layout in orset.h):
**
**   +------+----------------+--------+----------------+--------+--------
**   | nvv  | site n ...     | ncloud | site n ...     | nelems | value ndots site n ... ...
**   +------+----------------+--------+----------------+--------+--------
**
** Every number is a shortest-form varint and every list is in the sorted,
** compact order of the design notes, which is what makes it canonical. */

static size_t vlen(uint64_t x)
{
    uint8_t tmp[KNIT_VARINT_MAX];

    return knit_varint_put(tmp, x);
}

static size_t dots_size(const knit_dot_t *d, size_t n)
{
    size_t i, sz = vlen(n);

    for (i = 0; i < n; i++)
        sz += vlen(d[i].site) + vlen(d[i].n);
    return sz;
}

static uint8_t *put_dots(uint8_t *p, const knit_dot_t *d, size_t n)
{
    size_t i;

    p += knit_varint_put(p, n);
    for (i = 0; i < n; i++) {
        p += knit_varint_put(p, d[i].site);
        p += knit_varint_put(p, d[i].n);
    }
    return p;
}

int knit_orset_encode(const knit_orset_t *s, uint8_t **out, size_t *n) /* see orset.h */
{
    size_t i, sz = dots_size(s->vv.e, s->vv.len) + dots_size(s->cloud, s->ncloud);
    uint8_t *buf, *p;

    sz += vlen(s->nelems);
    for (i = 0; i < s->nelems; i++)
        sz += knit_value_encoded_size(&s->elems[i].v) +
              dots_size(s->elems[i].dots, s->elems[i].ndots);
    buf = knit__malloc(sz);
    if (!buf)
        return KNIT_ENOMEM;
    p = put_dots(buf, s->vv.e, s->vv.len);
    p = put_dots(p, s->cloud, s->ncloud);
    p += knit_varint_put(p, s->nelems);
    for (i = 0; i < s->nelems; i++) {
        p += knit_value_encode(&s->elems[i].v, p);
        p = put_dots(p, s->elems[i].dots, s->elems[i].ndots);
    }
    *out = buf;
    *n = (size_t)(p - buf);
    return 0;
}

/* A reading cursor over hostile bytes. */
typedef struct rd_s {
    const uint8_t *p; /* next byte */
    size_t n;         /* bytes left */
} rd_t;

static int rd_varint(rd_t *r, uint64_t *x)
{
    size_t used;
    int rc = knit_varint_get(r->p, r->n, x, &used);

    if (rc)
        return rc;
    r->p += used;
    r->n -= used;
    return 0;
}

/* A count of items each at least `min` bytes long: refused before any
** allocation when the input left could not hold them. */
static int rd_count(rd_t *r, size_t min, size_t *count)
{
    uint64_t x;
    int rc = rd_varint(r, &x);

    if (rc)
        return rc;
    if (x > r->n / min)
        return KNIT_ETRUNCATED;
    *count = (size_t)x;
    return 0;
}

static int rd_dot(rd_t *r, knit_dot_t *d)
{
    uint64_t site, n;
    int rc;

    if ((rc = rd_varint(r, &site)) != 0 || (rc = rd_varint(r, &n)) != 0)
        return rc;
    if (site > UINT32_MAX || n == 0)
        return KNIT_ECORRUPT;
    d->site = (uint32_t)site;
    d->n = n;
    return 0;
}

static int decode_body(rd_t *r, knit_orset_t *s)
{
    size_t i, j, cnt;
    int rc;

    /* Compact vector: sites strictly increasing, counters >= 1. */
    if ((rc = rd_count(r, 2, &cnt)) != 0)
        return rc;
    if (cnt) {
        s->vv.e = knit__malloc(cnt * sizeof *s->vv.e);
        if (!s->vv.e)
            return KNIT_ENOMEM;
        s->vv.cap = cnt;
    }
    for (i = 0; i < cnt; i++) {
        knit_dot_t *d = &s->vv.e[i];
        if ((rc = rd_dot(r, d)) != 0)
            return rc;
        if (i > 0 && d->site <= d[-1].site)
            return KNIT_ECORRUPT;
        s->vv.len++;
    }

    /* Cloud: strictly increasing, each beyond a gap (note 3). */
    if ((rc = rd_count(r, 2, &cnt)) != 0)
        return rc;
    if (cnt) {
        s->cloud = knit__malloc(cnt * sizeof *s->cloud);
        if (!s->cloud)
            return KNIT_ENOMEM;
    }
    for (i = 0; i < cnt; i++) {
        knit_dot_t *d = &s->cloud[i];
        uint64_t base;
        if ((rc = rd_dot(r, d)) != 0)
            return rc;
        if (i > 0 && dot_cmp(&d[-1], d) >= 0)
            return KNIT_ECORRUPT;
        base = knit_vv_get(&s->vv, d->site);
        if (d->n <= base || d->n - base == 1)
            return KNIT_ECORRUPT;
        s->ncloud++;
    }

    /* Elements: canonical, strictly increasing, dots inside the context.
    ** An element takes at least 4 bytes: value, ndots and one dot. */
    if ((rc = rd_count(r, 4, &cnt)) != 0)
        return rc;
    if (cnt) {
        s->elems = knit__malloc(cnt * sizeof *s->elems);
        if (!s->elems)
            return KNIT_ENOMEM;
        s->cap = cnt;
    }
    for (i = 0; i < cnt; i++) {
        knit_orset_elem_t *el = &s->elems[i];
        knit_value_t v, canon;
        size_t used, nd;
        if ((rc = knit_value_decode(r->p, r->n, &v, &used)) != 0)
            return rc;
        r->p += used;
        r->n -= used;
        canon = v;
        knit_value_canon(&canon);
        if (canon.type != v.type)
            return KNIT_ECORRUPT;
        if (i > 0 && knit_value_cmp(&el[-1].v, &v) >= 0)
            return KNIT_ECORRUPT;
        if ((rc = rd_count(r, 2, &nd)) != 0)
            return rc;
        if (nd == 0)
            return KNIT_ECORRUPT;
        el->dots = knit__malloc(nd * sizeof *el->dots);
        if (!el->dots)
            return KNIT_ENOMEM;
        if (value_dup(&v, &el->v)) {
            knit__free(el->dots);
            return KNIT_ENOMEM;
        }
        el->ndots = 0;
        s->nelems++; /* owned from here on: knit_orset_free() releases it */
        for (j = 0; j < nd; j++) {
            knit_dot_t *d = &el->dots[j];
            if ((rc = rd_dot(r, d)) != 0)
                return rc;
            if (j > 0 && dot_cmp(&d[-1], d) >= 0)
                return KNIT_ECORRUPT;
            if (!ctx_has(s, d))
                return KNIT_ECORRUPT;
            el->ndots++;
        }
    }
    return r->n ? KNIT_ECORRUPT : 0;
}

int knit_orset_decode(const uint8_t *p, size_t n, knit_orset_t *s) /* see orset.h */
{
    rd_t r = {p, n};
    int rc;

    knit_orset_init(s);
    rc = decode_body(&r, s);
    if (rc)
        knit_orset_free(s);
    return rc;
}

/* ---------------------------------------------------------------------- */
/* JSON materialization. */

/* Appends to out (when not NULL) at *k; always advances *k. */
static void emit(char *out, size_t *k, const char *s, size_t n)
{
    if (out)
        memcpy(out + *k, s, n);
    *k += n;
}

static int json_text(const knit_value_t *v, char *out, size_t *k)
{
    const uint8_t *p = v->u.b.p;
    size_t i = 0, n = v->u.b.n;
    char esc[8];

    emit(out, k, "\"", 1);
    while (i < n) {
        size_t len;
        if (p[i] == '"' || p[i] == '\\') {
            esc[0] = '\\';
            esc[1] = (char)p[i];
            emit(out, k, esc, 2);
            i++;
            continue;
        }
        if (p[i] < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", p[i]);
            emit(out, k, esc, 6);
            i++;
            continue;
        }
        len = knit__utf8_next(p + i, n - i, NULL);
        if (len == 0)
            return KNIT_EINVAL;
        emit(out, k, (const char *)p + i, len);
        i += len;
    }
    emit(out, k, "\"", 1);
    return 0;
}

static int json_value(const knit_value_t *v, char *out, size_t *k)
{
    char num[40];
    int len;
    size_t i;

    switch (v->type) {
    case KNIT_INTEGER:
        len = snprintf(num, sizeof num, "%lld", (long long)v->u.i);
        emit(out, k, num, (size_t)len);
        return 0;
    case KNIT_REAL:
        if (v->u.r != v->u.r)
            return KNIT_EINVAL;
        if (v->u.r > 1.7976931348623157e308 || v->u.r < -1.7976931348623157e308) {
            /* What SQLite's JSON writes for infinity; it reads back as one. */
            if (v->u.r < 0)
                emit(out, k, "-9e999", 6);
            else
                emit(out, k, "9e999", 5);
            return 0;
        }
        len = snprintf(num, sizeof num, "%.17g", v->u.r);
        for (i = 0; i < (size_t)len; i++)
            if (num[i] == ',')
                num[i] = '.'; /* a caller's locale must not change the bytes */
        if (!memchr(num, '.', (size_t)len) && !memchr(num, 'e', (size_t)len)) {
            memcpy(num + len, ".0", 2);
            len += 2;
        }
        emit(out, k, num, (size_t)len);
        return 0;
    case KNIT_TEXT:
        return json_text(v, out, k);
    case KNIT_BLOB:
        return KNIT_EINVAL; /* JSON has no bytes type */
    default:
        emit(out, k, "null", 4);
        return 0;
    }
}

/* The whole array into out (when not NULL); *k gets the length. */
static int json_array(const knit_orset_t *s, char *out, size_t *k)
{
    size_t i;
    int rc;

    *k = 0;
    emit(out, k, "[", 1);
    for (i = 0; i < s->nelems; i++) {
        if (i)
            emit(out, k, ",", 1);
        if ((rc = json_value(&s->elems[i].v, out, k)) != 0)
            return rc;
    }
    emit(out, k, "]", 1);
    return 0;
}

int knit_orset_json(const knit_orset_t *s, char **out, size_t *n) /* see orset.h */
{
    size_t len;
    char *buf;
    int rc;

    /* Measure, then write: two passes over small sets beat regrowing. */
    if ((rc = json_array(s, NULL, &len)) != 0)
        return rc;
    buf = knit__malloc(len + 1);
    if (!buf)
        return KNIT_ENOMEM;
    json_array(s, buf, &len);
    buf[len] = '\0';
    *out = buf;
    *n = len;
    return 0;
}
