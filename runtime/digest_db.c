/*
** digest_db.c: the canonical state digest of a replica (knit_digest).
**
** The digest covers, for every row (optionally of one namespace): its
** liveness cell, and when the row is live every cell written in its current
** life.  Cell bytes follow crdt/digest.h; an OR-set's value is its state
** encoded with sites renumbered in site-id order, so replicas (and the
** relay) that number sites differently still agree.  Only knit metadata and
** the values in the user tables enter it: two replicas holding the same
** merged state have equal digests whatever order they learned it in.
*/
#include <string.h>

#include "replica.h"

int knit__orset_canonical(knit_t *k, knit_orset_t *s, uint8_t **out, size_t *n)
{
    int rc = knit_orset_canonical(s, k->sites, k->nsites, out, n);
    if (rc == KNIT_EINVAL && knit__load_sites(k) == 0) /* a site newer than the cache */
        rc = knit_orset_canonical(s, k->sites, k->nsites, out, n);
    return rc;
}

/* Appends the knit_value encoding of v to *buf (growing it). */
static int put_value(uint8_t **buf, size_t *len, size_t *cap, const knit_value_t *v)
{
    size_t need = knit_value_encoded_size(v);
    if (*len + need > *cap) {
        size_t c = (*cap ? *cap * 2 : 256);
        while (c < *len + need)
            c *= 2;
        uint8_t *n = knit__realloc(*buf, c);
        if (!n)
            return KNIT_ENOMEM;
        *buf = n;
        *cap = c;
    }
    *len += knit_value_encode(v, *buf + *len);
    return 0;
}

/* The query of digest_table: every row (of namespace ?1, or all when ?1 is
** 0) with its metadata and the user row's values, grouped by namespace. */
static char *digest_sql(const ktable_t *t)
{
    sqlite3_str *q = sqlite3_str_new(NULL);
    knit__rows_join_str(q, t, "r.ns, r.cl, r.cells");
    sqlite3_str_appendall(q, " WHERE ?1 = 0 OR r.ns = ?1 ORDER BY r.ns");
    return sqlite3_str_finish(q); /* NULL when out of memory */
}

static int digest_table(knit_t *k, ktable_t *t, int64_t ns_idx, knit_digest_t *d)
{
    char *sql = digest_sql(t);
    sqlite3_stmt *st = NULL;
    uint8_t *pkb = NULL, *vb = NULL;
    size_t pkcap = 0, vcap = 0;
    int rc = KNIT_ENOMEM;
    char *nsname = NULL;
    int64_t cur_ns = -1;
    if (!sql)
        goto out;
    if ((rc = sqlite3_prepare_v2(k->db, sql, -1, &st, NULL)) != SQLITE_OK) {
        rc = knit__dberr(k, rc, "computing the digest");
        goto out;
    }
    sqlite3_bind_int64(st, 1, ns_idx);
    rc = 0;
    int step;
    knit_value_t pk[KNIT_MAX_PK];
    kcell_t cells[KNIT_MAX_COLS + 1];
    while (!rc && (step = sqlite3_step(st)) == SQLITE_ROW) {
        int base = (int)t->npk;
        size_t pklen = 0;
        for (uint32_t i = 0; i < t->npk && !rc; i++) {
            knit__column_value(st, (int)i, &pk[i]);
            rc = put_value(&pkb, &pklen, &pkcap, &pk[i]);
        }
        int64_t ns = sqlite3_column_int64(st, base);
        uint64_t cl = (uint64_t)sqlite3_column_int64(st, base + 1);
        if (!rc && ns != cur_ns) {
            knit__free(nsname);
            nsname = NULL;
            rc = knit__ns_name(k, (uint32_t)ns, &nsname);
            cur_ns = ns;
        }
        if (!rc &&
            knit__cells_decode(sqlite3_column_blob(st, base + 2),
                               (size_t)sqlite3_column_bytes(st, base + 2), t->ncols + 1, cells))
            rc = knit__err(k, KNIT_ECORRUPT, "%s: corrupt row metadata", t->name);
        uint32_t ncells = knit_cl_live(cl) ? t->ncols + 1 : 1;
        for (uint32_t i = 0; !rc && i < ncells; i++) {
            if (!cells[i].hlc)
                continue;
            knit_cell_t c;
            uint8_t h[32], *set = NULL;
            size_t vlen = 0;
            memset(&c, 0, sizeof c);
            c.ns = nsname;
            c.table = t->name;
            c.pk = pkb;
            c.pk_len = pklen;
            c.cl = cl;
            if (i == 0 || !t->orset[i - 1]) {
                knit_value_t v = {.type = KNIT_NULL};
                if (i > 0)
                    knit__column_value(st, base + 3 + (int)i - 1, &v);
                rc = put_value(&vb, &vlen, &vcap, &v);
                c.column = i ? t->cols[i - 1] : "";
                c.val = vb;
                c.val_len = vlen;
                c.hlc = cells[i].hlc;
                c.site = *knit__site_get(k, cells[i].site);
            } else {
                knit_orset_t s;
                int found;
                rc = knit__set_load(k, t, pk, i - 1, &s, &found);
                if (!rc)
                    rc = knit__orset_canonical(k, &s, &set, &vlen);
                knit_orset_free(&s);
                c.column = t->cols[i - 1];
                c.val = set;
                c.val_len = vlen;
            }
            if (!rc) {
                knit_cell_hash(&c, h);
                knit_digest_add(d, h);
            }
            knit__free(set);
        }
    }
    if (!rc && step != SQLITE_DONE)
        rc = knit__dberr(k, step, "computing the digest");
out:
    sqlite3_finalize(st);
    knit__free(nsname);
    knit__free(pkb);
    knit__free(vb);
    sqlite3_free(sql);
    return rc;
}

/* A departure (nscol.c design note 3) enters as the dead row it is in the
** namespace it left: its liveness cell alone. */
typedef struct gone_dg_s {
    knit_t *k;
    ktable_t *t;
    knit_digest_t *d;
} gone_dg_t;

static int gone_digest(void *arg, const knit_value_t *pk, uint32_t ns, uint64_t cl,
                       const kcell_t *cell0)
{
    gone_dg_t *g = arg;
    uint8_t *pkb = NULL, *vb = NULL, h[32];
    size_t pkcap = 0, pklen = 0, vcap = 0, vlen = 0;
    char *nsname = NULL;
    if (!cell0->hlc)
        return 0;
    int rc = 0;
    for (uint32_t i = 0; i < g->t->npk && !rc; i++)
        rc = put_value(&pkb, &pklen, &pkcap, &pk[i]);
    knit_value_t nul = {.type = KNIT_NULL};
    if (!rc)
        rc = put_value(&vb, &vlen, &vcap, &nul);
    if (!rc)
        rc = knit__ns_name(g->k, ns, &nsname);
    if (!rc) {
        knit_cell_t c;
        memset(&c, 0, sizeof c);
        c.ns = nsname;
        c.table = g->t->name;
        c.pk = pkb;
        c.pk_len = pklen;
        c.cl = cl;
        c.column = "";
        c.val = vb;
        c.val_len = vlen;
        c.hlc = cell0->hlc;
        c.site = *knit__site_get(g->k, cell0->site);
        knit_cell_hash(&c, h);
        knit_digest_add(g->d, h);
    }
    knit__free(nsname);
    knit__free(pkb);
    knit__free(vb);
    return rc;
}

int knit_digest(knit_t *k, const char *ns, knit_digest_t *out) /* see knit.h */
{
    int64_t ns_idx = 0;
    int rc = k->readonly ? knit__exec(k, "BEGIN") : knit__begin(k);
    if (rc)
        return rc;
    knit_digest_zero(out);
    if (!k->readonly)
        rc = knit__stamp_locked(k, NULL);
    if (!rc)
        rc = knit__load_tables(k);
    if (!rc && ns) {
        sqlite3_stmt *st = NULL;
        ns_idx = -1;
        if (!ns[0]) {
            ns_idx = KNIT_HOME_NS;
        } else if (sqlite3_prepare_v2(k->db, "SELECT idx FROM _knit_ns WHERE name = ?", -1, &st,
                                      NULL) == SQLITE_OK) {
            sqlite3_bind_text(st, 1, ns, -1, SQLITE_STATIC);
            if (sqlite3_step(st) == SQLITE_ROW)
                ns_idx = sqlite3_column_int64(st, 0);
        }
        sqlite3_finalize(st);
    }
    for (size_t i = 0; !rc && i < k->ntables; i++) {
        gone_dg_t g = {k, &k->tables[i], out};
        rc = digest_table(k, &k->tables[i], ns_idx, out);
        if (!rc)
            rc = knit__gone_each(k, &k->tables[i], ns_idx, gone_digest, &g);
    }
    if (!rc)
        rc = knit__commit(k);
    if (rc)
        knit__rollback(k);
    else
        knit__notify(k);
    return rc;
}
