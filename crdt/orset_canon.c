/*
** orset_canon.c: the canonical, numbering-independent bytes of an OR-set
** state, used in digests (see digest.h).
**
** Replicas and the relay number sites differently, so the stored encoding
** of one logical state differs between them.  The canonical form lists the
** site ids the state mentions, sorted, and then encodes the state with each
** site renumbered to its rank in that list:
**
**   varint m | site id[16] * m (ascending) | knit_orset_encode(ranked state)
**
** Equal logical states give equal bytes; states that differ only in which
** site made a dot differ in the site list.
*/
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "orset.h"

/* Site list entry while ranking. */
typedef struct used_s {
    uint32_t idx;      /* caller's index */
    const uint8_t *id; /* its 16-byte id */
} used_t;

static int used_cmp(const void *a, const void *b)
{
    return memcmp(((const used_t *)a)->id, ((const used_t *)b)->id, 16);
}

static int note(used_t *u, size_t *n, uint32_t site, const knit_site_t *sites, size_t nsites)
{
    if (site >= nsites)
        return KNIT_EINVAL;
    for (size_t i = 0; i < *n; i++)
        if (u[i].idx == site)
            return 0;
    u[*n].idx = site;
    u[*n].id = sites[site].b;
    (*n)++;
    return 0;
}

int knit_orset_canonical(const knit_orset_t *s, const knit_site_t *sites, size_t nsites,
                         uint8_t **out, size_t *outlen) /* see orset.h */
{
    size_t cap = s->vv.len + s->ncloud, n = 0;
    for (size_t e = 0; e < s->nelems; e++)
        cap += s->elems[e].ndots;
    used_t *u = knit__malloc((cap ? cap : 1) * sizeof *u);
    uint32_t *map = knit__calloc(nsites ? nsites : 1, sizeof *map);
    knit_orset_t c;
    uint8_t *body = NULL;
    size_t blen = 0;
    int rc = u && map ? 0 : KNIT_ENOMEM;
    knit_orset_init(&c);
    for (size_t i = 0; !rc && i < s->vv.len; i++)
        rc = note(u, &n, s->vv.e[i].site, sites, nsites);
    for (size_t i = 0; !rc && i < s->ncloud; i++)
        rc = note(u, &n, s->cloud[i].site, sites, nsites);
    for (size_t e = 0; !rc && e < s->nelems; e++)
        for (size_t d = 0; !rc && d < s->elems[e].ndots; d++)
            rc = note(u, &n, s->elems[e].dots[d].site, sites, nsites);
    if (!rc) {
        qsort(u, n, sizeof *u, used_cmp);
        for (size_t i = 0; i < n; i++)
            map[u[i].idx] = (uint32_t)i;
        rc = knit_orset_copy(&c, s);
    }
    if (!rc)
        rc = knit_orset_remap(&c, map, nsites);
    if (!rc)
        rc = knit_orset_encode(&c, &body, &blen);
    if (!rc) {
        uint8_t *r = knit__malloc(KNIT_VARINT_MAX + n * 16 + blen);
        if (!r) {
            rc = KNIT_ENOMEM;
        } else {
            size_t off = knit_varint_put(r, n);
            for (size_t i = 0; i < n; i++, off += 16)
                memcpy(r + off, u[i].id, 16);
            memcpy(r + off, body, blen);
            *out = r;
            *outlen = off + blen;
        }
    }
    knit_orset_free(&c);
    knit__free(body);
    knit__free(u);
    knit__free(map);
    return rc;
}
