/*
** batch.c: change batches, the one container that carries changes between
** the replica (knit_changes_since, knit_apply), the wire codec and the relay.
**
** A batch owns everything it points to.  Strings, keys and value bytes are
** copied into an arena of large blocks that is freed in one go, so building
** a batch of a million changes costs a few hundred allocations, not millions,
** and freeing it cannot leak a piece.  Arrays of changes, tables and units
** grow by doubling.
*/
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "arena.h"
#include "knit.h"

#define ARENA_BLOCK (64 * 1024)

typedef struct batch_priv_s {
    knit_arena_t arena;                                          /* names, keys, values */
    size_t cap_ns, cap_sites, cap_tables, cap_changes, cap_txns; /* capacities */
} batch_priv_t;

/* Grows *arr (element size sz) to hold at least need elements. */
static int grow(void **arr, size_t *cap, size_t need, size_t sz)
{
    if (need <= *cap)
        return 0;
    size_t c = *cap ? *cap * 2 : 8;
    while (c < need)
        c *= 2;
    void *n = knit__realloc(*arr, c * sz);
    if (!n)
        return KNIT_ENOMEM;
    *arr = n;
    *cap = c;
    return 0;
}

int knit_batch_new(knit_batch_t **out) /* see knit.h */
{
    knit_batch_t *b = knit__calloc(1, sizeof *b);
    batch_priv_t *p = knit__calloc(1, sizeof *p);
    if (!b || !p) {
        knit__free(b);
        knit__free(p);
        *out = NULL;
        return KNIT_ENOMEM;
    }
    knit__arena_init(&p->arena, ARENA_BLOCK);
    b->priv = p;
    *out = b;
    return 0;
}

void knit_batch_free(knit_batch_t *b) /* see knit.h */
{
    if (!b)
        return;
    batch_priv_t *p = b->priv;
    knit__arena_free(&p->arena);
    knit__free(p);
    knit__free(b->ns);
    knit__free(b->sites);
    knit__free(b->tables);
    knit__free(b->changes);
    knit__free(b->txns);
    knit__free(b);
}

int knit_batch_ns(knit_batch_t *b, const char *name, uint32_t *idx) /* see knit.h */
{
    batch_priv_t *p = b->priv;
    for (size_t i = 0; i < b->nns; i++) {
        if (strcmp(b->ns[i], name) == 0) {
            *idx = (uint32_t)i;
            return 0;
        }
    }
    if (grow((void **)&b->ns, &p->cap_ns, b->nns + 1, sizeof *b->ns))
        return KNIT_ENOMEM;
    char *s = knit__arena_strdup(&p->arena, name);
    if (!s)
        return KNIT_ENOMEM;
    b->ns[b->nns] = s;
    *idx = (uint32_t)b->nns++;
    return 0;
}

int knit_batch_site(knit_batch_t *b, const knit_site_t *s, uint32_t *idx) /* see knit.h */
{
    batch_priv_t *p = b->priv;
    for (size_t i = 0; i < b->nsites; i++) {
        if (knit_site_cmp(&b->sites[i], s) == 0) {
            *idx = (uint32_t)i;
            return 0;
        }
    }
    if (grow((void **)&b->sites, &p->cap_sites, b->nsites + 1, sizeof *b->sites))
        return KNIT_ENOMEM;
    b->sites[b->nsites] = *s;
    *idx = (uint32_t)b->nsites++;
    return 0;
}

int knit_batch_table(knit_batch_t *b, const char *name, uint32_t npk, uint32_t ncols,
                     const char *const *cols, const uint8_t *orset, uint32_t *idx) /* see knit.h */
{
    batch_priv_t *p = b->priv;
    for (size_t i = 0; i < b->ntables; i++) {
        knit_batch_table_t *t = &b->tables[i];
        if (strcmp(t->name, name) != 0)
            continue;
        if (t->npk != npk || t->ncols != ncols)
            return KNIT_EINVAL;
        for (uint32_t c = 0; c < ncols; c++)
            if (strcmp(t->cols[c], cols[c]) != 0 || t->orset[c] != (orset[c] != 0))
                return KNIT_EINVAL;
        *idx = (uint32_t)i;
        return 0;
    }
    if (npk == 0)
        return KNIT_EINVAL;
    if (grow((void **)&b->tables, &p->cap_tables, b->ntables + 1, sizeof *b->tables))
        return KNIT_ENOMEM;
    knit_batch_table_t t;
    t.name = knit__arena_strdup(&p->arena, name);
    t.npk = npk;
    t.ncols = ncols;
    t.cols = knit__arena_alloc(&p->arena, (ncols ? ncols : 1) * sizeof *t.cols);
    t.orset = knit__arena_alloc(&p->arena, ncols ? ncols : 1);
    if (!t.name || !t.cols || !t.orset)
        return KNIT_ENOMEM;
    for (uint32_t c = 0; c < ncols; c++) {
        if (!(t.cols[c] = knit__arena_strdup(&p->arena, cols[c])))
            return KNIT_ENOMEM;
        t.orset[c] = orset[c] != 0;
    }
    b->tables[b->ntables] = t;
    *idx = (uint32_t)b->ntables++;
    return 0;
}

int knit_batch_begin(knit_batch_t *b, uint64_t version) /* see knit.h */
{
    batch_priv_t *p = b->priv;
    if (grow((void **)&b->txns, &p->cap_txns, b->ntxns + 1, sizeof *b->txns))
        return KNIT_ENOMEM;
    b->txns[b->ntxns].version = version;
    b->txns[b->ntxns].first = b->nchanges;
    b->txns[b->ntxns].count = 0;
    b->ntxns++;
    return 0;
}

/* Copies TEXT/BLOB bytes of v into the arena. */
static int own_value(batch_priv_t *p, knit_value_t *v)
{
    if ((v->type == KNIT_TEXT || v->type == KNIT_BLOB) && v->u.b.n) {
        void *c = knit__arena_alloc(&p->arena, v->u.b.n);
        if (!c)
            return KNIT_ENOMEM;
        memcpy(c, v->u.b.p, v->u.b.n);
        v->u.b.p = c;
    }
    return 0;
}

int knit_batch_add(knit_batch_t *b, const knit_change_t *c) /* see knit.h */
{
    batch_priv_t *p = b->priv;
    if (b->ntxns == 0 || c->ns >= b->nns || c->table >= b->ntables || c->site >= b->nsites)
        return KNIT_EINVAL;
    const knit_batch_table_t *t = &b->tables[c->table];
    if (c->col > t->ncols)
        return KNIT_EINVAL;
    if (grow((void **)&b->changes, &p->cap_changes, b->nchanges + 1, sizeof *b->changes))
        return KNIT_ENOMEM;
    knit_change_t n = *c;
    n.pk = knit__arena_alloc(&p->arena, t->npk * sizeof *n.pk);
    if (!n.pk)
        return KNIT_ENOMEM;
    for (uint32_t i = 0; i < t->npk; i++) {
        n.pk[i] = c->pk[i];
        if (own_value(p, &n.pk[i]))
            return KNIT_ENOMEM;
    }
    if (own_value(p, &n.value))
        return KNIT_ENOMEM;
    b->changes[b->nchanges++] = n;
    b->txns[b->ntxns - 1].count++;
    return 0;
}

/* Sort key for knit__batch_regroup. */
typedef struct regroup_s {
    uint64_t ver; /* unit the change belongs to */
    size_t idx;   /* original position, so equal versions keep their order */
} regroup_t;

static int regroup_cmp(const void *a, const void *b)
{
    const regroup_t *x = a, *y = b;
    if (x->ver != y->ver)
        return x->ver < y->ver ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* Moves each change to its place in version order, in place: position i
** takes the change at keys[i].idx.  Follows each cycle of the permutation
** once, marking the places it fills (idx = own position), so it needs no
** second array of changes: for a first push of a million cells that array
** was 64 MB of the reader's peak. */
static void regroup_permute(knit_change_t *v, regroup_t *keys, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (keys[i].idx == i)
            continue;
        knit_change_t held = v[i];
        size_t j = i;
        while (keys[j].idx != i) {
            size_t from = keys[j].idx;
            v[j] = v[from];
            keys[j].idx = j;
            j = from;
        }
        v[j] = held;
        keys[j].idx = j;
    }
}

int knit__batch_regroup(knit_batch_t *b, const uint64_t *vers, size_t max_changes)
{
    size_t n = b->nchanges, i;
    regroup_t *keys = NULL;
    /* A read in version order (one unit, or rows written in order) needs
    ** no sort. */
    for (i = 1; i < n && vers[i - 1] <= vers[i]; i++)
        ;
    if (i < n) {
        if (!(keys = knit__malloc(n * sizeof *keys)))
            return KNIT_ENOMEM;
        for (i = 0; i < n; i++) {
            keys[i].ver = vers[i];
            keys[i].idx = i;
        }
        qsort(keys, n, sizeof *keys, regroup_cmp);
        regroup_permute(b->changes, keys, n);
    }
    b->ntxns = 0;
    size_t kept = 0;
    int rc = 0;
    for (i = 0; i < n; i++) {
        uint64_t v = keys ? keys[i].ver : vers[i];
        if (i == 0 || v != (keys ? keys[i - 1].ver : vers[i - 1])) {
            if (max_changes && kept >= max_changes)
                break;
            if ((rc = knit_batch_begin(b, v)) != 0)
                break;
            b->txns[b->ntxns - 1].first = kept;
        }
        b->txns[b->ntxns - 1].count++;
        kept++;
    }
    /* On an error the changes are reordered but the batch is dropped. */
    if (!rc)
        b->nchanges = kept;
    knit__free(keys);
    return rc;
}

/* Order of knit_batch_coalesce: namespace, table, key, causal length,
** column. */
static int coalesce_cmp(const knit_batch_t *b, const knit_change_t *x, const knit_change_t *y)
{
    if (x->ns != y->ns)
        return x->ns < y->ns ? -1 : 1;
    if (x->table != y->table)
        return x->table < y->table ? -1 : 1;
    for (uint32_t i = 0; i < b->tables[x->table].npk; i++) {
        int c = knit_value_cmp(&x->pk[i], &y->pk[i]);
        if (c)
            return c;
    }
    if (x->cl != y->cl)
        return x->cl < y->cl ? -1 : 1;
    return x->col < y->col ? -1 : x->col > y->col;
}

/* Stable merge sort of v[lo, hi) through tmp. */
static void coalesce_sort(const knit_batch_t *b, knit_change_t *v, knit_change_t *tmp, size_t lo,
                          size_t hi)
{
    if (hi - lo < 2)
        return;
    size_t mid = lo + (hi - lo) / 2, i = lo, j = mid, o = lo;
    coalesce_sort(b, v, tmp, lo, mid);
    coalesce_sort(b, v, tmp, mid, hi);
    if (coalesce_cmp(b, &v[mid - 1], &v[mid]) <= 0)
        return; /* already in order: the common case of one unit's rows */
    while (i < mid && j < hi)
        tmp[o++] = coalesce_cmp(b, &v[j], &v[i]) < 0 ? v[j++] : v[i++];
    while (i < mid)
        tmp[o++] = v[i++];
    while (j < hi)
        tmp[o++] = v[j++];
    memcpy(&v[lo], &tmp[lo], (hi - lo) * sizeof *v);
}

int knit_batch_coalesce(knit_batch_t *b) /* see knit.h */
{
    if (b->ntxns < 2)
        return 0;
    if (b->nchanges > 1) {
        knit_change_t *tmp = knit__malloc(b->nchanges * sizeof *tmp);
        if (!tmp)
            return KNIT_ENOMEM;
        coalesce_sort(b, b->changes, tmp, 0, b->nchanges);
        knit__free(tmp);
    }
    b->txns[0].version = b->txns[b->ntxns - 1].version;
    b->txns[0].first = 0;
    b->txns[0].count = b->nchanges;
    b->ntxns = 1;
    return 0;
}
