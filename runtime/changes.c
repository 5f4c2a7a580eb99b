/*
** changes.c: reading changes out of a replica (knit_changes_since), and
** finding the commits of other connections (knit_poll; the callback itself
** is notify.c's).
**
** Every cell records the local version at which it last changed, and
** _knit_rows_<id>.ver (indexed) is the newest of its cells, so "changes
** since v" visits only rows touched after v and, in each, only cells newer
** than v.  A cell overwritten later appears once, in the unit of its latest
** version.  Values come from the user table itself (a join on the key):
** knit keeps no second copy of the data.
**
** Design note
**   1. A read cut at max_changes decides where before it reads values.  The
**      cells of one unit are spread over every row changed since (a row's
**      liveness sits in the unit of its insert, its value in that of its
**      last update), so a cut cannot stop the scan early.  The read stops
**      when it holds more than max_changes changes; then it counts the
**      cells per version from the metadata alone (no join, no values),
**      takes the newest version it needs to reach max_changes, and reads
**      again, keeping only cells up to it.  A read that fits (a live push)
**      costs nothing more.  A push's read then holds about
**      max_changes changes in memory, not every change since v (a replica
**      that wrote a million cells offline held them all, 280 MiB, to push
**      the first 262,144).  The count is only an estimate of size:
**      departures (nscol.c) are not counted, and whatever it says, what is
**      read is every change up to one version, so units stay whole.
*/
#include <stdlib.h>
#include <string.h>

#include "replica.h"

/* Per-call state of knit_changes_since. */
typedef struct since_s {
    knit_batch_t *b;   /* batch being built */
    uint64_t *vers;    /* version of each change added */
    size_t cap;        /* capacity of vers */
    uint32_t *sitemap; /* local site idx -> batch idx + 1 (0 = not yet) */
    uint32_t nsitemap; /* entries */
    uint32_t *nsmap;   /* local ns idx -> batch idx + 1 */
    uint32_t nnsmap;   /* entries */
    klocal_t local;    /* the local_only rule */
    uint64_t upto;     /* only cells of versions <= upto (0 = all); design note 1 */
    size_t limit;      /* stop (SINCE_FULL) past this many changes; 0 = never */
} since_t;

#define SINCE_FULL 1 /* not an error: the read went past s->limit (note 1) */

static int map_site(knit_t *k, since_t *s, uint32_t local, uint32_t *out)
{
    if (local >= s->nsitemap) {
        uint32_t n = local + 16;
        uint32_t *m = knit__realloc(s->sitemap, n * sizeof *m);
        if (!m)
            return KNIT_ENOMEM;
        memset(m + s->nsitemap, 0, (n - s->nsitemap) * sizeof *m);
        s->sitemap = m;
        s->nsitemap = n;
    }
    if (!s->sitemap[local]) {
        uint32_t idx;
        int rc = knit_batch_site(s->b, knit__site_get(k, local), &idx);
        if (rc)
            return rc;
        s->sitemap[local] = idx + 1;
    }
    *out = s->sitemap[local] - 1;
    return 0;
}

static int map_ns(knit_t *k, since_t *s, uint32_t local, uint32_t *out)
{
    if (local >= s->nnsmap) {
        uint32_t n = local + 16;
        uint32_t *m = knit__realloc(s->nsmap, n * sizeof *m);
        if (!m)
            return KNIT_ENOMEM;
        memset(m + s->nnsmap, 0, (n - s->nnsmap) * sizeof *m);
        s->nsmap = m;
        s->nnsmap = n;
    }
    if (!s->nsmap[local]) {
        char *name = NULL;
        uint32_t idx;
        int rc = knit__ns_name(k, local, &name);
        if (!rc)
            rc = knit_batch_ns(s->b, name, &idx);
        knit__free(name);
        if (rc)
            return rc;
        s->nsmap[local] = idx + 1;
    }
    *out = s->nsmap[local] - 1;
    return 0;
}

static int add_change(since_t *s, const knit_change_t *c, uint64_t ver)
{
    if (s->limit && s->b->nchanges >= s->limit)
        return SINCE_FULL;
    if (s->b->nchanges + 1 > s->cap) {
        size_t n = s->cap ? s->cap * 2 : 1024;
        uint64_t *v = knit__realloc(s->vers, n * sizeof *v);
        if (!v)
            return KNIT_ENOMEM;
        s->vers = v;
        s->cap = n;
    }
    int rc = knit_batch_add(s->b, c);
    if (!rc)
        s->vers[s->b->nchanges - 1] = ver;
    return rc;
}

/* Whether a read after version takes cell: written, newer, not past the
** cut (design note 1), and this replica's own under local_only.  The count
** of a cut and the read itself must take the same cells. */
static int cell_wanted(const knit_t *k, const since_t *s, const knit_since_opts_t *o,
                       uint64_t version, const kcell_t *cell)
{
    if (!cell->hlc || cell->ver <= version || (s->upto && cell->ver > s->upto))
        return 0;
    return !(o && o->local_only) || knit__local_is(k, &s->local, cell->site, cell->ver);
}

/* Encodes set state with sites renumbered into the batch's site table. */
static int set_for_batch(knit_t *k, since_t *s, knit_orset_t *st, uint8_t **out, size_t *n)
{
    uint32_t *map = knit__calloc(k->nsites ? k->nsites : 1, sizeof *map);
    int rc = map ? 0 : KNIT_ENOMEM;
    /* Only sites the state mentions enter the batch. */
    for (size_t i = 0; !rc && i < st->vv.len; i++)
        rc = st->vv.e[i].site < k->nsites ? map_site(k, s, st->vv.e[i].site, &map[st->vv.e[i].site])
                                          : KNIT_ECORRUPT;
    for (size_t i = 0; !rc && i < st->ncloud; i++)
        rc = st->cloud[i].site < k->nsites
                 ? map_site(k, s, st->cloud[i].site, &map[st->cloud[i].site])
                 : KNIT_ECORRUPT;
    for (size_t e = 0; !rc && e < st->nelems; e++)
        for (size_t d = 0; !rc && d < st->elems[e].ndots; d++) {
            uint32_t site = st->elems[e].dots[d].site;
            rc = site < k->nsites ? map_site(k, s, site, &map[site]) : KNIT_ECORRUPT;
        }
    if (!rc)
        rc = knit_orset_remap(st, map, k->nsites);
    if (!rc)
        rc = knit_orset_encode(st, out, n);
    knit__free(map);
    return rc;
}

/* The query of since_table: each row changed after ?1 (of namespace ?2,
** or all when ?2 is 0) with its metadata and the user row's values. */
/* The departures of rows from namespaces (nscol.c design note 3) are the
** tombstones they are there. */
typedef struct gone_ctx_s {
    knit_t *k;
    since_t *s;
    const knit_since_opts_t *o;
    uint64_t version;
    uint32_t tidx;
} gone_ctx_t;

static int gone_change(void *arg, const knit_value_t *pk, uint32_t ns, uint64_t cl,
                       const kcell_t *cell0)
{
    gone_ctx_t *g = arg;
    if (!cell_wanted(g->k, g->s, g->o, g->version, cell0))
        return 0;
    knit_change_t c;
    memset(&c, 0, sizeof c);
    c.table = g->tidx;
    c.pk = (knit_value_t *)pk; /* knit_batch_add copies it */
    c.cl = cl;
    c.col = 0;
    c.hlc = cell0->hlc;
    c.value.type = KNIT_NULL;
    int rc = map_ns(g->k, g->s, ns, &c.ns);
    if (!rc)
        rc = map_site(g->k, g->s, cell0->site, &c.site);
    return rc ? rc : add_change(g->s, &c, cell0->ver);
}

static char *since_sql(const ktable_t *t)
{
    sqlite3_str *q = sqlite3_str_new(NULL);
    knit__rows_join_str(q, t, "r.ns, r.cl, r.ver, r.cells");
    sqlite3_str_appendall(q, " WHERE r.ver > ?1 AND (?2 = 0 OR r.ns = ?2)");
    return sqlite3_str_finish(q); /* NULL when out of memory */
}

static int since_table(knit_t *k, ktable_t *t, since_t *s, uint64_t version,
                       const knit_since_opts_t *o, int64_t ns_idx)
{
    uint32_t tidx;
    int rc = 0;
    if (!t->st[ST_SINCE]) {
        char *sql = since_sql(t);
        if (!sql)
            return KNIT_ENOMEM;
        rc = knit__prepare(k, &t->st[ST_SINCE], sql);
        sqlite3_free(sql);
        if (rc)
            return rc;
    }
    sqlite3_reset(t->st[ST_SINCE]);
    {
        const char **names = knit__calloc(t->ncols + 1, sizeof *names);
        if (!names)
            return KNIT_ENOMEM;
        for (uint32_t c = 0; c < t->ncols; c++)
            names[c] = t->cols[c];
        rc = knit_batch_table(s->b, t->name, t->npk, t->ncols, names, t->orset, &tidx);
        knit__free(names);
        if (rc)
            return rc;
    }
    sqlite3_stmt *st = t->st[ST_SINCE];
    sqlite3_bind_int64(st, 1, (int64_t)version);
    sqlite3_bind_int64(st, 2, ns_idx);
    int step;
    knit_value_t pk[KNIT_MAX_PK];
    kcell_t cells[KNIT_MAX_COLS + 1];
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        int base = (int)t->npk;
        for (uint32_t i = 0; i < t->npk; i++)
            knit__column_value(st, (int)i, &pk[i]);
        uint32_t ns_local = (uint32_t)sqlite3_column_int64(st, base);
        uint64_t cl = (uint64_t)sqlite3_column_int64(st, base + 1);
        if ((rc = knit__cells_decode(sqlite3_column_blob(st, base + 3),
                                     (size_t)sqlite3_column_bytes(st, base + 3), t->ncols + 1,
                                     cells)) != 0) {
            rc = knit__err(k, KNIT_ECORRUPT, "%s: corrupt row metadata", t->name);
            break;
        }
        knit_change_t c;
        memset(&c, 0, sizeof c);
        c.table = tidx;
        c.pk = pk;
        c.cl = cl;
        if ((rc = map_ns(k, s, ns_local, &c.ns)) != 0)
            break;
        uint32_t ncells = knit_cl_live(cl) ? t->ncols + 1 : 1;
        for (uint32_t i = 0; i < ncells && !rc; i++) {
            const kcell_t *cell = &cells[i];
            if (!cell_wanted(k, s, o, version, cell))
                continue;
            c.col = i;
            c.hlc = cell->hlc;
            if ((rc = map_site(k, s, cell->site, &c.site)) != 0)
                break;
            memset(&c.value, 0, sizeof c.value);
            c.value.type = KNIT_NULL;
            if (i == 0) {
                rc = add_change(s, &c, cell->ver);
            } else if (!t->orset[i - 1]) {
                knit__column_value(st, base + 4 + (int)i - 1, &c.value);
                rc = add_change(s, &c, cell->ver);
            } else {
                knit_orset_t set;
                int found;
                uint8_t *blob = NULL;
                size_t bn = 0;
                rc = knit__set_load(k, t, pk, i - 1, &set, &found);
                if (!rc)
                    rc = set_for_batch(k, s, &set, &blob, &bn);
                if (!rc) {
                    c.value.type = KNIT_BLOB;
                    c.value.u.b.p = blob;
                    c.value.u.b.n = bn;
                    rc = add_change(s, &c, cell->ver);
                }
                knit__free(blob);
                knit_orset_free(&set);
            }
        }
        if (rc)
            break;
    }
    if (!rc && step != SQLITE_DONE)
        rc = knit__dberr(k, step, "reading changes");
    sqlite3_reset(st);
    if (!rc && t->nscol >= 0) {
        gone_ctx_t g = {k, s, o, version, tidx};
        rc = knit__gone_each(k, t, ns_idx, gone_change, &g);
    }
    return rc;
}

/* Cells per version (design note 1): an open-addressing table of
** (version, count), grown at half load. */
typedef struct vcount_s {
    uint64_t ver;   /* 0 = empty slot */
    uint64_t count; /* cells */
} vcount_t;

typedef struct vhist_s {
    vcount_t *v; /* slots */
    size_t cap;  /* a power of two */
    size_t n;    /* used */
} vhist_t;

static int vhist_add(vhist_t *h, uint64_t ver)
{
    if (2 * (h->n + 1) > h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 256;
        vcount_t *v = knit__calloc(cap, sizeof *v);
        if (!v)
            return KNIT_ENOMEM;
        for (size_t i = 0; i < h->cap; i++) {
            if (!h->v[i].ver)
                continue;
            size_t j = (size_t)(h->v[i].ver * UINT64_C(0x9e3779b97f4a7c15) >> 32) & (cap - 1);
            while (v[j].ver)
                j = (j + 1) & (cap - 1);
            v[j] = h->v[i];
        }
        knit__free(h->v);
        h->v = v;
        h->cap = cap;
    }
    size_t j = (size_t)(ver * UINT64_C(0x9e3779b97f4a7c15) >> 32) & (h->cap - 1);
    while (h->v[j].ver && h->v[j].ver != ver)
        j = (j + 1) & (h->cap - 1);
    if (!h->v[j].ver) {
        h->v[j].ver = ver;
        h->n++;
    }
    h->v[j].count++;
    return 0;
}

static int vcount_cmp(const void *a, const void *b)
{
    const vcount_t *x = a, *y = b;
    return x->ver < y->ver ? -1 : x->ver > y->ver;
}

/* Counts t's cells after version (and the local_only rule) into h. */
static int count_table(knit_t *k, ktable_t *t, since_t *s, uint64_t version,
                       const knit_since_opts_t *o, int64_t ns_idx, vhist_t *h)
{
    kcell_t cells[KNIT_MAX_COLS + 1];
    int rc = 0, step = SQLITE_DONE;
    if (!t->st[ST_SINCECUT]) {
        char *sql = sqlite3_mprintf("SELECT cl, cells FROM _knit_rows_%d WHERE ver > ?1"
                                    " AND (?2 = 0 OR ns = ?2)",
                                    t->id);
        rc = sql ? knit__prepare(k, &t->st[ST_SINCECUT], sql) : KNIT_ENOMEM;
        sqlite3_free(sql);
        if (rc)
            return rc;
    }
    sqlite3_stmt *st = t->st[ST_SINCECUT];
    sqlite3_bind_int64(st, 1, (int64_t)version);
    sqlite3_bind_int64(st, 2, ns_idx);
    while (!rc && (step = sqlite3_step(st)) == SQLITE_ROW) {
        uint64_t cl = (uint64_t)sqlite3_column_int64(st, 0);
        if (knit__cells_decode(sqlite3_column_blob(st, 1), (size_t)sqlite3_column_bytes(st, 1),
                               t->ncols + 1, cells) != 0) {
            rc = knit__err(k, KNIT_ECORRUPT, "%s: corrupt row metadata", t->name);
            break;
        }
        uint32_t ncells = knit_cl_live(cl) ? t->ncols + 1 : 1;
        for (uint32_t i = 0; i < ncells && !rc; i++) {
            if (cell_wanted(k, s, o, version, &cells[i]))
                rc = vhist_add(h, cells[i].ver);
        }
    }
    if (!rc && step != SQLITE_DONE)
        rc = knit__dberr(k, step, "counting changes");
    sqlite3_reset(st);
    return rc;
}

/* Sets s->upto to the newest version a read of o->max_changes needs, or 0
** when everything after version fits (design note 1). */
static int cut_version(knit_t *k, since_t *s, uint64_t version, const knit_since_opts_t *o,
                       int64_t ns_idx)
{
    vhist_t h = {NULL, 0, 0};
    int rc = 0;
    for (size_t i = 0; !rc && i < k->ntables; i++)
        rc = count_table(k, &k->tables[i], s, version, o, ns_idx, &h);
    if (!rc && h.n) {
        size_t n = 0;
        for (size_t i = 0; i < h.cap; i++)
            if (h.v[i].ver)
                h.v[n++] = h.v[i];
        qsort(h.v, n, sizeof *h.v, vcount_cmp);
        uint64_t sum = 0;
        for (size_t i = 0; i < n; i++) {
            sum += h.v[i].count;
            if (sum >= o->max_changes) {
                if (i + 1 < n)
                    s->upto = h.v[i].ver;
                break;
            }
        }
    }
    knit__free(h.v);
    return rc;
}

int knit_changes_since(knit_t *k, uint64_t version, const knit_since_opts_t *opts,
                       knit_batch_t **out) /* see knit.h */
{
    since_t s;
    int rc;
    int64_t ns_idx = 0;
    memset(&s, 0, sizeof s);
    *out = NULL;
    /* Stamp first so the answer includes every committed write; a
    ** read-only handle reads a snapshot of what is stamped. */
    rc = k->readonly ? knit__exec(k, "BEGIN") : knit__begin(k);
    if (rc)
        return rc;
    if (!k->readonly)
        rc = knit__stamp_locked(k, NULL);
    if (!rc)
        rc = knit__load_tables(k);
    if (!rc && opts && opts->local_only)
        rc = knit__local_load(k, &s.local);
    if (!rc && opts && opts->ns) {
        sqlite3_stmt *st = NULL;
        ns_idx = -1; /* unknown namespace: no rows */
        if (!opts->ns[0]) {
            ns_idx = KNIT_HOME_NS;
        } else if (sqlite3_prepare_v2(k->db, "SELECT idx FROM _knit_ns WHERE name = ?", -1, &st,
                                      NULL) == SQLITE_OK) {
            sqlite3_bind_text(st, 1, opts->ns, -1, SQLITE_STATIC);
            if (sqlite3_step(st) == SQLITE_ROW)
                ns_idx = sqlite3_column_int64(st, 0);
        }
        sqlite3_finalize(st);
    }
    s.limit = opts ? opts->max_changes : 0;
    for (int pass = 0; !rc && pass < 2; pass++) {
        if ((rc = knit_batch_new(&s.b)) == 0)
            rc = knit_batch_begin(s.b, 0); /* regrouped by version below */
        for (size_t i = 0; !rc && i < k->ntables; i++)
            rc = since_table(k, &k->tables[i], &s, version, opts, ns_idx);
        if (rc != SINCE_FULL)
            break;
        /* Design note 1: too much for one read; count, cut, read again. */
        knit_batch_free(s.b);
        s.b = NULL;
        if (s.sitemap)
            memset(s.sitemap, 0, s.nsitemap * sizeof *s.sitemap);
        if (s.nsmap)
            memset(s.nsmap, 0, s.nnsmap * sizeof *s.nsmap);
        s.limit = 0;
        rc = cut_version(k, &s, version, opts, ns_idx);
    }
    if (!rc)
        rc = knit__batch_regroup(s.b, s.vers, opts ? opts->max_changes : 0);
    if (!rc)
        rc = knit__commit(k);
    if (rc) {
        knit__rollback(k);
        knit_batch_free(s.b);
        s.b = NULL;
    } else {
        *out = s.b;
    }
    knit__free(s.vers);
    knit__free(s.sitemap);
    knit__free(s.nsmap);
    knit__local_free(&s.local);
    if (!rc)
        knit__notify(k);
    return rc;
}

/* ---------------------------------------------------------------------- */
/* Changes by other connections                                           */

/* Counts rows another connection changed (applied) since our last look. */
static int foreign_changes(knit_t *k, uint64_t since)
{
    for (size_t i = 0; i < k->ntables; i++) {
        ktable_t *t = &k->tables[i];
        sqlite3_stmt *st = NULL;
        char *sql = sqlite3_mprintf("SELECT count(*) FROM _knit_rows_%d WHERE ver > ?", t->id);
        if (!sql)
            return KNIT_ENOMEM;
        int rc = sqlite3_prepare_v2(k->db, sql, -1, &st, NULL);
        sqlite3_free(sql);
        if (rc != SQLITE_OK)
            return knit__dberr(k, rc, "counting changes");
        sqlite3_bind_int64(st, 1, (int64_t)since);
        if (sqlite3_step(st) == SQLITE_ROW)
            t->ev_rows += (size_t)sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    }
    return 0;
}

int knit_poll(knit_t *k) /* see knit.h */
{
    int dv = (int)knit__fixed_int(k, KS_DATA_VERSION, 0), rc;
    if (dv == k->data_version)
        return 0;
    /* Until this poll has done its work: a poll that fails (another writer
    ** held the file past the busy timeout) leaves the commits it saw to be
    ** found again by the next one, not only after the next commit. */
    int seen = k->data_version;
    k->data_version = dv;
    unsigned notified = k->notified;
    if ((rc = knit__load_tables(k)) != 0) { /* may repair capture and report it */
        k->data_version = seen;
        return rc;
    }
    uint64_t before = k->seen_version, now = 0;
    /* Another connection that stamps its own writes (an app that loads
    ** knit) leaves nothing to stamp: then no write lock is taken, so a
    ** poll never waits for, nor holds up, the app's next transaction. */
    int stamp = !k->readonly;
    if (stamp && (rc = knit__stamp_needed(k, &stamp)) != 0) {
        k->data_version = seen;
        return rc;
    }
    if (stamp) {
        /* Local writes by others: stamp them (this reports them). */
        size_t n = 0;
        if ((rc = knit__begin(k)) != 0) {
            k->data_version = seen;
            return rc;
        }
        uint64_t v0;
        knit_version(k, &v0);
        if (v0 > before && (rc = foreign_changes(k, before)) == 0)
            k->ev_remote = 1;
        if (!rc)
            rc = knit__stamp_locked(k, &n);
        if (!rc)
            rc = knit__commit(k);
        if (rc) {
            knit__rollback(k);
            k->data_version = seen;
            return rc;
        }
    } else {
        knit_version(k, &now);
        if (now > before && (rc = foreign_changes(k, before)) == 0)
            k->ev_remote = 1;
        if (rc) {
            k->data_version = seen;
            return rc;
        }
    }
    knit__notify(k);
    /* Rollbacks the leader made are announced to this handle too (reject.c
    ** note 7); a failure to read them loses no data and is not the poll's. */
    (void)knit__rejected_poll(k);
    return k->notified != notified;
}

/* ---------------------------------------------------------------------- */
/* Pending local changes                                                  */

typedef struct pend_ctx_s {
    knit_t *k;
    const klocal_t *local;
    uint64_t acked;
    uint64_t *rows;
} pend_ctx_t;

/* A departure not acknowledged yet is a pending tombstone. */
static int gone_pending(void *arg, const knit_value_t *pk, uint32_t ns, uint64_t cl,
                        const kcell_t *cell0)
{
    pend_ctx_t *p = arg;
    (void)pk, (void)ns, (void)cl;
    if (cell0->hlc && cell0->ver > p->acked &&
        knit__local_is(p->k, p->local, cell0->site, cell0->ver))
        (*p->rows)++;
    return 0;
}

/* Rows of t with a change of this device newer than acked, plus its
** captured writes not stamped yet. */
static int pending_table(knit_t *k, ktable_t *t, uint64_t acked, const klocal_t *local,
                         uint64_t *rows)
{
    sqlite3_stmt *st = NULL;
    kcell_t cells[KNIT_MAX_COLS + 1];
    int rc, step;
    char *sql = sqlite3_mprintf("SELECT cells FROM _knit_rows_%d WHERE ver > ?", t->id);
    if (!sql)
        return KNIT_ENOMEM;
    rc = sqlite3_prepare_v2(k->db, sql, -1, &st, NULL);
    sqlite3_free(sql);
    if (rc != SQLITE_OK)
        return knit__dberr(k, rc, "counting pending changes");
    sqlite3_bind_int64(st, 1, (int64_t)acked);
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        if (knit__cells_decode(sqlite3_column_blob(st, 0), (size_t)sqlite3_column_bytes(st, 0),
                               t->ncols + 1, cells) != 0)
            continue;
        for (uint32_t c = 0; c <= t->ncols; c++)
            if (cells[c].hlc && cells[c].ver > acked &&
                knit__local_is(k, local, cells[c].site, cells[c].ver)) {
                (*rows)++;
                break;
            }
    }
    sqlite3_finalize(st);
    if (step != SQLITE_DONE)
        return knit__dberr(k, step, "counting pending changes");
    if (!(sql = sqlite3_mprintf("SELECT count(*) FROM _knit_log_%d", t->id)))
        return KNIT_ENOMEM;
    rc = sqlite3_prepare_v2(k->db, sql, -1, &st, NULL);
    sqlite3_free(sql);
    if (rc != SQLITE_OK)
        return knit__dberr(k, rc, "counting captured writes");
    if (sqlite3_step(st) == SQLITE_ROW)
        *rows += (uint64_t)sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    pend_ctx_t p = {k, local, acked, rows};
    return knit__gone_each(k, t, 0, gone_pending, &p);
}

int knit_pending(knit_t *k, uint64_t *rows) /* see knit.h */
{
    int64_t acked = 0;
    klocal_t local;
    int rc;
    *rows = 0;
    if ((rc = knit__load_tables(k)) != 0)
        return rc;
    if ((rc = knit__exec(k, "BEGIN")) != 0) /* one snapshot for every table */
        return rc;
    rc = knit__meta_get_int(k, "acked", &acked);
    if (!rc)
        rc = knit__local_load(k, &local);
    if (!rc) {
        for (size_t i = 0; !rc && i < k->ntables; i++)
            rc = pending_table(k, &k->tables[i], (uint64_t)acked, &local, rows);
        knit__local_free(&local);
    }
    if (!rc)
        rc = knit__exec(k, "COMMIT");
    if (rc) {
        knit__rollback(k);
        *rows = 0;
    }
    return rc;
}
