/*
** sset.c: OR-set cell values in the relay stores' stored form (sset.h).
** Shared by the SQLite store (relay_store.c) and the PostgreSQL store
** (store_pg.c), so both merge OR-set states with the same code and store
** the same bytes, which the state digest hashes as they are.
*/
#include "sset.h"

#include <stdlib.h>
#include <string.h>

#include "alloc.h"

/* ---------------------------------------------------------------------- */
/* OR-set values in stored form                                             */

/* An OR-set with its own site table, numbered by position. */
void knit__sset_init(knit_sset_t *x)
{
    x->sites = NULL;
    x->nsites = 0;
    knit_orset_init(&x->set);
}

void knit__sset_free(knit_sset_t *x)
{
    knit__free(x->sites);
    x->sites = NULL;
    x->nsites = 0;
    knit_orset_free(&x->set);
}

typedef struct site_ent_s {
    knit_site_t site; /* site id */
    uint32_t old;     /* its index in the table it came from */
} site_ent_t;

static int site_ent_cmp(const void *a, const void *b)
{
    const site_ent_t *x = a, *y = b;
    return knit_site_cmp(&x->site, &y->site);
}

/* Marks each site index set names; KNIT_ECORRUPT if one is >= ntab. */
static int mark_sites(const knit_orset_t *set, uint8_t *mark, size_t ntab)
{
    size_t i, j;
    for (i = 0; i < set->vv.len; i++) {
        if (set->vv.e[i].site >= ntab)
            return KNIT_ECORRUPT;
        mark[set->vv.e[i].site] = 1;
    }
    for (i = 0; i < set->ncloud; i++) {
        if (set->cloud[i].site >= ntab)
            return KNIT_ECORRUPT;
        mark[set->cloud[i].site] = 1;
    }
    for (i = 0; i < set->nelems; i++) {
        for (j = 0; j < set->elems[i].ndots; j++) {
            if (set->elems[i].dots[j].site >= ntab)
                return KNIT_ECORRUPT;
            mark[set->elems[i].dots[j].site] = 1;
        }
    }
    return 0;
}

/* Makes x canonical: x->set currently indexes tab[0..ntab); afterwards
** x->sites holds the sites it names in byte order and the set indexes them.
** KNIT_ECORRUPT if the set names a site outside tab or two of the named
** sites are the same id. */
int knit__sset_canon(knit_sset_t *x, const knit_site_t *tab, size_t ntab)
{
    uint8_t *mark = NULL;
    uint32_t *map = NULL;
    site_ent_t *ent = NULL;
    knit_site_t *sites = NULL;
    size_t i, k = 0;
    int rc = KNIT_ENOMEM;

    mark = knit__calloc(ntab ? ntab : 1, 1);
    map = knit__calloc(ntab ? ntab : 1, sizeof *map);
    if (!mark || !map)
        goto out;
    if ((rc = mark_sites(&x->set, mark, ntab)) != 0)
        goto out;
    for (i = 0; i < ntab; i++)
        k += mark[i];
    rc = KNIT_ENOMEM;
    ent = knit__malloc((k ? k : 1) * sizeof *ent);
    sites = knit__malloc((k ? k : 1) * sizeof *sites);
    if (!ent || !sites)
        goto out;
    k = 0;
    for (i = 0; i < ntab; i++) {
        if (mark[i]) {
            ent[k].site = tab[i];
            ent[k].old = (uint32_t)i;
            k++;
        }
    }
    qsort(ent, k, sizeof *ent, site_ent_cmp);
    for (i = 0; i < k; i++) {
        if (i > 0 && knit_site_cmp(&ent[i - 1].site, &ent[i].site) == 0) {
            rc = KNIT_ECORRUPT;
            goto out;
        }
        sites[i] = ent[i].site;
        map[ent[i].old] = (uint32_t)i;
    }
    if ((rc = knit_orset_remap(&x->set, map, ntab)) != 0) {
        rc = rc == KNIT_EINVAL ? KNIT_ECORRUPT : rc;
        goto out;
    }
    knit__free(x->sites);
    x->sites = sites;
    x->nsites = k;
    sites = NULL;
out:
    knit__free(mark);
    knit__free(map);
    knit__free(ent);
    knit__free(sites);
    return rc;
}

/* Stored form of x (canonical) into a new buffer. */
int knit__sset_encode(const knit_sset_t *x, uint8_t **out, size_t *n)
{
    uint8_t *body = NULL, *p;
    size_t nbody = 0, k;
    int rc;

    if ((rc = knit_orset_encode(&x->set, &body, &nbody)) != 0)
        return rc;
    p = knit__malloc(KNIT_VARINT_MAX + 16 * x->nsites + nbody);
    if (!p) {
        knit__free(body);
        return KNIT_ENOMEM;
    }
    k = knit_varint_put(p, x->nsites);
    for (size_t i = 0; i < x->nsites; i++, k += 16)
        memcpy(p + k, x->sites[i].b, 16);
    if (nbody)
        memcpy(p + k, body, nbody);
    knit__free(body);
    *out = p;
    *n = k + nbody;
    return 0;
}

/* Splits a stored value into its site list and OR-set body, checking the
** site list's shape.  Points into p. */
int knit__sset_split(const uint8_t *p, size_t n, const uint8_t **sites, size_t *nsites,
                     const uint8_t **body, size_t *nbody)
{
    uint64_t k;
    size_t used;
    int rc = knit_varint_get(p, n, &k, &used);
    if (rc)
        return KNIT_ECORRUPT;
    if (k > (n - used) / 16)
        return KNIT_ECORRUPT;
    *sites = p + used;
    *nsites = (size_t)k;
    *body = p + used + 16 * k;
    *nbody = n - used - 16 * (size_t)k;
    for (size_t i = 1; i < k; i++)
        if (memcmp(*sites + 16 * (i - 1), *sites + 16 * i, 16) >= 0)
            return KNIT_ECORRUPT;
    return 0;
}

/* Decodes a stored value (hostile input: the file may have been edited). */
int knit__sset_decode(knit_sset_t *x, const uint8_t *p, size_t n)
{
    const uint8_t *sites, *body;
    size_t nsites, nbody;
    uint8_t *mark = NULL;
    int rc;

    knit__sset_init(x);
    if ((rc = knit__sset_split(p, n, &sites, &nsites, &body, &nbody)) != 0)
        return rc;
    if ((rc = knit_orset_decode(body, nbody, &x->set)) != 0)
        return rc == KNIT_ENOMEM ? rc : KNIT_ECORRUPT;
    x->sites = knit__malloc((nsites ? nsites : 1) * sizeof *x->sites);
    mark = knit__calloc(nsites ? nsites : 1, 1);
    if (!x->sites || !mark) {
        knit__free(mark);
        knit__sset_free(x);
        return KNIT_ENOMEM;
    }
    for (size_t i = 0; i < nsites; i++)
        memcpy(x->sites[i].b, sites + 16 * i, 16);
    x->nsites = nsites;
    rc = mark_sites(&x->set, mark, nsites);
    knit__free(mark);
    if (rc)
        knit__sset_free(x);
    return rc;
}

/* Joins o into x (both canonical); x stays canonical. */
int knit__sset_join(knit_sset_t *x, knit_sset_t *o)
{
    size_t i = 0, j = 0, k = 0;
    knit_site_t *u;
    uint32_t *mx, *mo;
    int rc = KNIT_ENOMEM;

    u = knit__malloc((x->nsites + o->nsites + 1) * sizeof *u);
    mx = knit__malloc((x->nsites + 1) * sizeof *mx);
    mo = knit__malloc((o->nsites + 1) * sizeof *mo);
    if (!u || !mx || !mo)
        goto out;
    while (i < x->nsites || j < o->nsites) {
        int c = i == x->nsites   ? 1
                : j == o->nsites ? -1
                                 : knit_site_cmp(&x->sites[i], &o->sites[j]);
        if (c <= 0) {
            u[k] = x->sites[i];
            mx[i++] = (uint32_t)k;
            if (c == 0)
                mo[j++] = (uint32_t)k;
        } else {
            u[k] = o->sites[j];
            mo[j++] = (uint32_t)k;
        }
        k++;
    }
    if ((rc = knit_orset_remap(&x->set, mx, x->nsites)) != 0)
        goto out;
    if ((rc = knit_orset_remap(&o->set, mo, o->nsites)) != 0)
        goto out;
    knit__free(x->sites);
    x->sites = u;
    x->nsites = k;
    knit__free(o->sites);
    o->sites = NULL;
    o->nsites = 0;
    u = NULL;
    if ((rc = knit_orset_join(&x->set, &o->set)) != 0)
        goto out;
    /* A join never forgets a site of either context, but stay canonical
    ** whatever the set does. */
    {
        knit_site_t *tab = knit__memdup(x->sites, (x->nsites ? x->nsites : 1) * sizeof *tab);
        if (!tab) {
            rc = KNIT_ENOMEM;
            goto out;
        }
        rc = knit__sset_canon(x, tab, x->nsites);
        knit__free(tab);
    }
out:
    knit__free(u);
    knit__free(mx);
    knit__free(mo);
    return rc;
}

/* Encodes x for a batch: sites interned into b, set renumbered to b's
** table.  x->set is renumbered in place (x is not canonical afterwards). */
int knit__sset_to_batch(knit_sset_t *x, knit_batch_t *b, uint8_t **out, size_t *n)
{
    uint32_t *map = knit__malloc((x->nsites ? x->nsites : 1) * sizeof *map);
    int rc;
    if (!map)
        return KNIT_ENOMEM;
    for (size_t i = 0; i < x->nsites; i++) {
        if ((rc = knit_batch_site(b, &x->sites[i], &map[i])) != 0) {
            knit__free(map);
            return rc;
        }
    }
    rc = knit_orset_remap(&x->set, map, x->nsites);
    knit__free(map);
    if (rc)
        return rc;
    return knit_orset_encode(&x->set, out, n);
}
