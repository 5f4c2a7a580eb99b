/*
** buckets.c: bucketed state digests from change batches (see buckets.h), the
** engine both ends of the consistency check run.
*/
#include "buckets.h"

#include <bearssl.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "orset.h"
#include "value.h"

#define BUCKET_TAG "knit.bucket.1"

struct knit_check_s {
    char *ns;                 /* namespace name the cells hash with, owned */
    uint32_t nbuckets;        /* buckets */
    knit_check_cell_t *cells; /* every cell added */
    size_t ncells;            /* count */
    size_t capcells;          /* allocated */
    knit_check_row_t *rows;   /* after finish */
    size_t nrows;             /* count */
};

int knit__check_new(const char *ns, uint32_t nbuckets, knit_check_t **out) /* see buckets.h */
{
    knit_check_t *c;
    *out = NULL;
    if (!ns || nbuckets == 0 || nbuckets > KNIT_CHECK_MAX_BUCKETS)
        return KNIT_EINVAL;
    if (!(c = knit__calloc(1, sizeof *c)))
        return KNIT_ENOMEM;
    if (!(c->ns = knit__strdup(ns))) {
        knit__free(c);
        return KNIT_ENOMEM;
    }
    c->nbuckets = nbuckets;
    *out = c;
    return 0;
}

void knit__check_free(knit_check_t *c) /* see buckets.h */
{
    if (!c)
        return;
    for (size_t i = 0; i < c->ncells; i++)
        knit__free(c->cells[i].key);
    knit__free(c->cells);
    knit__free(c->rows);
    knit__free(c->ns);
    knit__free(c);
}

/* str(table) str(pk): the row's key bytes, new (knit__free). */
static int row_key(const knit_batch_t *b, const knit_change_t *ch, uint8_t **out, size_t *n)
{
    const knit_batch_table_t *t = &b->tables[ch->table];
    size_t tl = strlen(t->name), pl = 0;
    for (uint32_t i = 0; i < t->npk; i++)
        pl += knit_value_encoded_size(&ch->pk[i]);
    uint8_t *p = knit__malloc(2 * KNIT_VARINT_MAX + tl + pl);
    if (!p)
        return KNIT_ENOMEM;
    size_t o = knit_varint_put(p, tl);
    memcpy(p + o, t->name, tl);
    o += tl;
    o += knit_varint_put(p + o, pl);
    for (uint32_t i = 0; i < t->npk; i++)
        o += knit_value_encode(&ch->pk[i], p + o);
    *out = p;
    *n = o;
    return 0;
}

static uint32_t key_bucket(const uint8_t *key, size_t n, uint32_t nbuckets)
{
    br_sha256_context h;
    uint8_t tag[1 + sizeof BUCKET_TAG], d[32];
    size_t tl = knit_varint_put(tag, sizeof BUCKET_TAG - 1);
    memcpy(tag + tl, BUCKET_TAG, sizeof BUCKET_TAG - 1);
    br_sha256_init(&h);
    br_sha256_update(&h, tag, tl + sizeof BUCKET_TAG - 1);
    br_sha256_update(&h, key, n);
    br_sha256_out(&h, d);
    uint32_t v = (uint32_t)d[0] << 24 | (uint32_t)d[1] << 16 | (uint32_t)d[2] << 8 | d[3];
    return v % nbuckets;
}

uint32_t knit__check_bucket(const knit_batch_t *b, const knit_change_t *ch,
                            uint32_t nbuckets) /* see buckets.h */
{
    uint8_t *key;
    size_t n;
    if (row_key(b, ch, &key, &n))
        return 0; /* out of memory: callers that care use knit__check_add */
    uint32_t r = key_bucket(key, n, nbuckets);
    knit__free(key);
    return r;
}

/* The cell hash of change ch (crdt/digest.h cell bytes). */
static int cell_hash(const knit_check_t *c, const knit_batch_t *b, const knit_change_t *ch,
                     const uint8_t *key, size_t keylen, uint8_t h[32])
{
    const knit_batch_table_t *t = &b->tables[ch->table];
    static const uint8_t null_enc = 0x00;
    uint8_t *val = NULL, *canon = NULL;
    uint64_t tl, pl;
    size_t o;
    knit_cell_t cell;
    int rc = 0;

    /* The key bytes are str(table) str(pk): find pk inside them. */
    o = 0;
    if (knit_varint_get(key, keylen, &tl, &o) || o + tl > keylen)
        return KNIT_ECORRUPT;
    size_t po = o + (size_t)tl, pn = 0;
    if (knit_varint_get(key + po, keylen - po, &pl, &pn))
        return KNIT_ECORRUPT;
    memset(&cell, 0, sizeof cell);
    cell.ns = c->ns;
    cell.table = t->name;
    cell.pk = key + po + pn;
    cell.pk_len = (size_t)pl;
    cell.cl = ch->cl;
    if (ch->col == 0) {
        cell.column = "";
        cell.val = &null_enc;
        cell.val_len = 1;
        cell.hlc = ch->hlc;
        cell.site = b->sites[ch->site];
    } else if (!t->orset[ch->col - 1]) {
        size_t vn = knit_value_encoded_size(&ch->value);
        if (!(val = knit__malloc(vn ? vn : 1)))
            return KNIT_ENOMEM;
        knit_value_encode(&ch->value, val);
        cell.column = t->cols[ch->col - 1];
        cell.val = val;
        cell.val_len = vn;
        cell.hlc = ch->hlc;
        cell.site = b->sites[ch->site];
    } else {
        knit_orset_t s;
        size_t cn = 0;
        if (ch->value.type != KNIT_BLOB)
            return KNIT_ECORRUPT;
        if ((rc = knit_orset_decode(ch->value.u.b.p, ch->value.u.b.n, &s)) != 0)
            return rc == KNIT_ENOMEM ? rc : KNIT_ECORRUPT;
        rc = knit_orset_canonical(&s, b->sites, b->nsites, &canon, &cn);
        knit_orset_free(&s);
        if (rc)
            return rc == KNIT_ENOMEM ? rc : KNIT_ECORRUPT;
        cell.column = t->cols[ch->col - 1];
        cell.val = canon;
        cell.val_len = cn; /* hlc 0, site zeros: an OR-set counts by its state */
    }
    knit_cell_hash(&cell, h);
    knit__free(val);
    knit__free(canon);
    return 0;
}

int knit__check_add(knit_check_t *c, const knit_batch_t *b, const uint8_t *only) /* see buckets.h */
{
    for (size_t i = 0; i < b->nchanges; i++) {
        const knit_change_t *ch = &b->changes[i];
        knit_check_cell_t *e;
        uint8_t *key;
        size_t keylen;
        int rc;
        if (ch->table >= b->ntables || ch->site >= b->nsites ||
            ch->col > b->tables[ch->table].ncols)
            return KNIT_ECORRUPT;
        if ((rc = row_key(b, ch, &key, &keylen)) != 0)
            return rc;
        uint32_t bucket = key_bucket(key, keylen, c->nbuckets);
        if (only && !only[bucket]) {
            knit__free(key);
            continue;
        }
        if (c->ncells == c->capcells) {
            size_t cap = c->capcells ? c->capcells * 2 : 256;
            knit_check_cell_t *n = knit__realloc(c->cells, cap * sizeof *n);
            if (!n) {
                knit__free(key);
                return KNIT_ENOMEM;
            }
            c->cells = n;
            c->capcells = cap;
        }
        e = &c->cells[c->ncells];
        memset(e, 0, sizeof *e);
        if ((rc = cell_hash(c, b, ch, key, keylen, e->h)) != 0) {
            knit__free(key);
            return rc;
        }
        e->key = key;
        e->keylen = keylen;
        e->bucket = bucket;
        e->b = b;
        e->change = i;
        e->cl = ch->cl;
        e->live = ch->col == 0;
        c->ncells++;
    }
    return 0;
}

static int key_cmp(const uint8_t *a, size_t an, const uint8_t *b, size_t bn)
{
    int r = memcmp(a, b, an < bn ? an : bn);
    return r ? r : (an > bn) - (an < bn);
}

/* Rows in key order, each row's liveness cells first. */
static int cell_order(const void *pa, const void *pb)
{
    const knit_check_cell_t *a = pa, *b = pb;
    int r = key_cmp(a->key, a->keylen, b->key, b->keylen);
    return r ? r : b->live - a->live;
}

int knit__check_finish(knit_check_t *c, knit_digest_t *total,
                       knit_digest_t *buckets) /* see buckets.h */
{
    knit_digest_zero(total);
    if (buckets)
        for (uint32_t i = 0; i < c->nbuckets; i++)
            knit_digest_zero(&buckets[i]);
    if (c->ncells)
        qsort(c->cells, c->ncells, sizeof *c->cells, cell_order);
    knit__free(c->rows);
    c->rows = NULL;
    c->nrows = 0;
    size_t nrows = 0;
    for (size_t i = 0; i < c->ncells; i++)
        nrows += i == 0 || key_cmp(c->cells[i].key, c->cells[i].keylen, c->cells[i - 1].key,
                                   c->cells[i - 1].keylen) != 0;
    if (nrows && !(c->rows = knit__calloc(nrows, sizeof *c->rows)))
        return KNIT_ENOMEM;
    for (size_t i = 0; i < c->ncells;) {
        size_t j = i;
        uint64_t rowcl = 0;
        int has_live = 0;
        while (j < c->ncells && key_cmp(c->cells[j].key, c->cells[j].keylen, c->cells[i].key,
                                        c->cells[i].keylen) == 0)
            j++;
        knit_check_row_t *r = &c->rows[c->nrows++];
        r->bucket = c->cells[i].bucket;
        r->first = i;
        r->n = j - i;
        knit_digest_zero(&r->digest);
        /* Design note 1: liveness cells count; column cells only in the
        ** live row's current life. */
        for (size_t k = i; k < j; k++)
            if (c->cells[k].live) {
                has_live = 1;
                if (c->cells[k].cl > rowcl)
                    rowcl = c->cells[k].cl;
            }
        for (size_t k = i; k < j; k++) {
            knit_check_cell_t *e = &c->cells[k];
            e->counted = e->live || (has_live && (rowcl & 1) && e->cl == rowcl);
            if (e->counted)
                knit_digest_add(&r->digest, e->h);
        }
        /* A row is a sum of cell hashes: add its cells to the bucket and
        ** the total one by one, so the sums are those of the digest. */
        for (size_t k = i; k < j; k++)
            if (c->cells[k].counted) {
                knit_digest_add(total, c->cells[k].h);
                if (buckets)
                    knit_digest_add(&buckets[r->bucket], c->cells[k].h);
            }
        i = j;
    }
    return 0;
}

const knit_check_row_t *knit__check_rows(const knit_check_t *c, size_t *n) /* see buckets.h */
{
    *n = c->nrows;
    return c->rows;
}

const knit_check_cell_t *knit__check_cells(const knit_check_t *c, size_t *n) /* see buckets.h */
{
    *n = c->ncells;
    return c->cells;
}

int knit__check_copy(knit_batch_t *dst, uint32_t dst_ns, const knit_batch_t *src,
                     const knit_change_t *ch) /* see buckets.h */
{
    const knit_batch_table_t *t = &src->tables[ch->table];
    knit_change_t x = *ch;
    uint8_t *enc = NULL;
    int rc = knit_batch_table(dst, t->name, t->npk, t->ncols, (const char *const *)t->cols,
                              t->orset, &x.table);
    if (!rc)
        rc = knit_batch_site(dst, &src->sites[ch->site], &x.site);
    x.ns = dst_ns;
    if (!rc && ch->col > 0 && t->orset[ch->col - 1] && ch->value.type == KNIT_BLOB) {
        /* The state's sites are numbered by src's dictionary: renumber. */
        knit_orset_t s;
        uint32_t *map = knit__calloc(src->nsites ? src->nsites : 1, sizeof *map);
        size_t n = 0;
        if (!map)
            return KNIT_ENOMEM;
        for (size_t i = 0; !rc && i < src->nsites; i++)
            rc = knit_batch_site(dst, &src->sites[i], &map[i]);
        if (!rc && (rc = knit_orset_decode(ch->value.u.b.p, ch->value.u.b.n, &s)) == 0) {
            rc = knit_orset_remap(&s, map, src->nsites);
            if (!rc)
                rc = knit_orset_encode(&s, &enc, &n);
            knit_orset_free(&s);
        }
        knit__free(map);
        if (!rc) {
            x.value.type = KNIT_BLOB;
            x.value.u.b.p = enc;
            x.value.u.b.n = n;
        }
    }
    if (!rc)
        rc = knit_batch_add(dst, &x);
    knit__free(enc);
    return rc;
}
