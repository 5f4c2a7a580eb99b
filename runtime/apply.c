/*
** apply.c: merging a batch of remote changes into the replica (knit_apply),
** and the set-aside changes a replica cannot apply (yet).
**
** Design notes
**   1. One batch, one write transaction: local captured writes are stamped
**      first (so they compete with their own stamps), then every change is
**      merged, then the log rows that knit's own writes produced are deleted
**      and the transaction commits.  A failure of the disk, of memory or of
**      the batch's own structure rolls all of it back.
**   2. A cell merges by (causal length, HLC, site): a change from a later
**      life of the row resets the row's cells and wins; one from an earlier
**      life loses; within a life the larger stamp wins.  OR-set columns join
**      their states within a life and take the incoming state whole when it
**      comes from a later life; a row that enters a later life forgets every
**      set state of the earlier one, also of set columns the batch does not
**      carry (their cells arrive later, and until then the set is empty).
**   3. Each row is written once per batch, with every cell the batch holds
**      for it.  The changes are visited in (table, key) order, whatever unit
**      they travel in (a row's liveness often sits in the unit of its insert
**      and its value in the unit of a later update), merged into an
**      in-memory copy of the row's metadata, and flushed with one user-table
**      statement: INSERT when the row becomes live (so NOT NULL columns
**      arrive together), UPDATE of the written columns, or DELETE.  Key
**      order also walks _knit_rows_<id> sequentially.
**   4. One row never blocks the others.  When the user-table statement of a
**      row fails on a constraint (NOT NULL, CHECK, a stricter schema than
**      the writer's), SQLite undoes that statement alone; the row's changes
**      go to _knit_aside as 'refused', with SQLite's message, its metadata
**      is left as it was (but see note 8), and the batch goes on.  A change that cannot be
**      merged at all (a malformed or unrepresentable OR-set state) is set
**      aside alone.  Cells of tables or columns this replica does not track
**      are kept there as 'waiting'.
**   5. Set-aside changes of a row are merged again with the changes of any
**      later batch that touches the row (its missing NOT NULL value may
**      arrive in the next page), and all of them when the schema changed
**      since the last try (knit_track, ALTER TABLE) or on knit_aside_retry.
**      Those that apply leave _knit_aside in the same transaction.  OR-set
**      states are kept there in the replica's own site numbering.
**   6. Stamps beyond now + max drift refuse the whole batch before anything
**      is written; otherwise the replica's HLC moves past every stamp seen.
**   7. App triggers.  When a tracked table has triggers of the app's own,
**      knit's writes fire them (FTS indexes, audit logs and counters stay
**      current) and fire capture too.  The log rows of each row knit wrote
**      are deleted right after it (they are the applied change itself, not
**      a local write); whatever else the app's triggers wrote into tracked
**      tables during the apply is a local write of this replica, stamped at
**      the end of the same transaction.  A row a trigger made on both sides
**      under one key therefore merges into one row; apply upserts, so a
**      trigger-made copy that is already there does not refuse the origin's.
**   8. A row refused in a later life than the live one shown here is not
**      left showing that dead life: the user row is deleted and the
**      metadata moves to the deletion before the refused life, without
**      cells.  Otherwise a local write to it would be stamped in the dead
**      life and lose, unseen, once the refused life applies; now a local
**      insert starts the refused life itself and merges with it on retry.
**   9. An OR-set state goes into _knit_aside renumbered to local sites or
**      not at all: aside_load reads every state there as local.  So when
**      memory runs out while renumbering, the apply fails and rolls back
**      (note 1) rather than keep the state in the batch's numbering, where
**      its dots would later be read as some other site's, or as no site's.
**  10. A change set aside by an apply is not merged again in it: the row was
**      just merged with all of its set-aside changes, and the retry of a
**      changed schema (note 5) that read back only some of them would write
**      a row of the refused life without its refused cells, shown while
**      they stay aside.  The changes older than the apply are those with an
**      id up to the newest one before it (aside_floor); so every change an
**      apply sets aside, new or refused again, takes an id above that
**      floor, also when the apply removed the rows that held the ids below
**      (_knit_aside ids are reused: it has no AUTOINCREMENT).
*/
#include <string.h>

#include "replica.h"
#include "validate.h"

#define REFUSE 1 /* merge result: set this change aside (reason in errmsg) */

/* ---------------------------------------------------------------------- */
/* The changes of one row                                                 */

/* One cell change, resolved to the replica's own numbering.  It comes from
** the batch, or from _knit_aside (aside_id > 0). */
typedef struct xch_s {
    uint32_t col;         /* 0 = liveness, else 1 + local column */
    const char *colname;  /* column name ("" = liveness) */
    const char *nsname;   /* namespace name ("" = home) */
    uint32_t ns;          /* local namespace idx */
    uint32_t site;        /* local site idx of the writer */
    uint64_t cl;          /* causal length of the life it belongs to */
    uint64_t hlc;         /* stamp */
    knit_value_t value;   /* LWW value or OR-set state */
    const uint32_t *smap; /* OR-set state: batch site -> local site; NULL = local already */
    size_t nsmap;         /* entries in smap */
    int64_t aside_id;     /* _knit_aside row, 0 = from the batch */
} xch_t;

/* The row being merged. */
typedef struct arow_s {
    ktable_t *t;                      /* its table */
    const knit_value_t *pk;           /* key values */
    int has_meta;                     /* a _knit_rows row exists */
    uint32_t ns;                      /* namespace idx */
    uint64_t cl0;                     /* causal length when loaded */
    uint64_t cl;                      /* causal length now */
    kcell_t cells[KNIT_MAX_COLS + 1]; /* stamps: 0 = liveness, c + 1 = column c */
    uint64_t wmask;                   /* columns whose user value must be written */
    uint64_t smask;                   /* OR-set columns whose state must be saved */
    knit_value_t vals[KNIT_MAX_COLS]; /* their values (LWW: change memory; sets: json) */
    char *json[KNIT_MAX_COLS];        /* owned set materializations */
    knit_orset_t sets[KNIT_MAX_COLS]; /* merged set states (smask, or loaded) */
    uint64_t loaded;                  /* OR-set columns whose state is in sets[] */
    int dirty;                        /* metadata must be written */
} arow_t;

/* Per-apply context. */
typedef struct actx_s {
    knit_t *k;
    knit_apply_stats_t *st;
    uint64_t ver;            /* the local version this apply writes */
    uint64_t endver;         /* version of the lives this apply ended (ns_move), 0: none */
    int have_aside;          /* _knit_aside held rows before this apply */
    int64_t aside_floor;     /* the newest of them: later ones were set aside
                                by this apply and are not merged again in it */
    sqlite3_stmt *aside_get; /* set-aside changes of one (tbl, pk) */
    sqlite3_stmt *aside_put; /* add one */
    sqlite3_stmt *aside_del; /* remove one by id */
    sqlite3_stmt *aside_upd; /* refresh kind and reason by id */
    xch_t *x;                /* the current row's changes */
    size_t nx, capx;         /* used, allocated */
    void **owned;            /* memory of set-aside changes read back */
    size_t nowned, capowned; /* used, allocated */
    sqlite3_stmt **logdel;   /* per table: delete one key's log rows (note 7) */
    sqlite3_stmt **setdel;   /* per table: delete one key's OR-set states */
} actx_t;

static void row_release(arow_t *r)
{
    uint32_t n = r->t ? r->t->ncols : KNIT_MAX_COLS; /* json and sets are per column */
    for (uint32_t c = 0; c < n; c++) {
        knit__free(r->json[c]);
        r->json[c] = NULL;
        if (r->loaded >> c & 1)
            knit_orset_free(&r->sets[c]);
    }
    r->loaded = r->smask = 0;
    r->t = NULL;
}

static int row_load(knit_t *k, ktable_t *t, const knit_value_t *pk, arow_t *r)
{
    int rc;
    if (!t->st[ST_ROWGET]) {
        sqlite3_str *s = sqlite3_str_new(k->db);
        sqlite3_str_appendf(s, "SELECT ns, cl, cells FROM _knit_rows_%d WHERE ", t->id);
        knit__where_meta_keys(s, t->npk);
        if ((rc = knit__prepare_str(k, &t->st[ST_ROWGET], s)) != 0)
            return rc;
    }
    sqlite3_stmt *st = t->st[ST_ROWGET];
    for (uint32_t i = 0; i < t->npk; i++)
        knit__bind_value(st, (int)i + 1, &pk[i]);
    r->t = t;
    r->pk = pk;
    r->wmask = r->smask = r->loaded = 0;
    r->dirty = 0;
    memset(r->cells, 0, (t->ncols + 1) * sizeof r->cells[0]);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        r->has_meta = 1;
        r->ns = (uint32_t)sqlite3_column_int64(st, 0);
        r->cl0 = r->cl = (uint64_t)sqlite3_column_int64(st, 1);
        rc = knit__cells_decode(sqlite3_column_blob(st, 2), (size_t)sqlite3_column_bytes(st, 2),
                                t->ncols + 1, r->cells);
        if (rc)
            rc = knit__err(k, KNIT_ECORRUPT, "%s: corrupt row metadata", t->name);
    } else if (rc == SQLITE_DONE) {
        r->has_meta = 0;
        r->ns = 0;
        r->cl0 = r->cl = 0;
        rc = 0;
    } else {
        rc = knit__dberr(k, rc, "reading row metadata");
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc;
}

static int meta_write(knit_t *k, arow_t *r, uint64_t ver)
{
    ktable_t *t = r->t;
    uint8_t buf[(KNIT_MAX_COLS + 1) * KNIT_CELL_MAXBYTES + KNIT_VARINT_MAX];
    int rc;
    if (!t->st[ST_ROWPUT]) {
        sqlite3_str *s = sqlite3_str_new(k->db);
        sqlite3_str_appendf(s, "INSERT OR REPLACE INTO _knit_rows_%d(", t->id);
        for (uint32_t i = 0; i < t->npk; i++)
            sqlite3_str_appendf(s, "k%u, ", i);
        sqlite3_str_appendall(s, "ns, cl, ver, cells) VALUES (");
        for (uint32_t i = 0; i < t->npk + 4; i++)
            sqlite3_str_appendf(s, "%s?%u", i ? ", " : "", i + 1);
        sqlite3_str_appendall(s, ")");
        if ((rc = knit__prepare_str(k, &t->st[ST_ROWPUT], s)) != 0)
            return rc;
    }
    sqlite3_stmt *st = t->st[ST_ROWPUT];
    for (uint32_t i = 0; i < t->npk; i++)
        knit__bind_value(st, (int)i + 1, &r->pk[i]);
    size_t n = knit__cells_encode(r->cells, t->ncols + 1, buf);
    sqlite3_bind_int64(st, (int)t->npk + 1, r->ns);
    sqlite3_bind_int64(st, (int)t->npk + 2, (int64_t)r->cl);
    sqlite3_bind_int64(st, (int)t->npk + 3, (int64_t)ver);
    sqlite3_bind_blob(st, (int)t->npk + 4, buf, (int)n, SQLITE_STATIC);
    rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_DONE ? 0 : knit__dberr(k, rc, "writing row metadata");
}

/* Writes the user row (note 3).  Returns REFUSE when a constraint refused
** it and the transaction is still open. */
static int user_flush(knit_t *k, arow_t *r)
{
    ktable_t *t = r->t;
    int was_live = r->has_meta && knit_cl_live(r->cl0);
    int now_live = knit_cl_live(r->cl);
    int rc = 0, changed = 1;
    if (was_live && !now_live)
        rc = knit__user_delete(k, t, r->pk);
    else if (now_live && !was_live)
        rc = knit__user_write(k, t, r->pk, r->wmask, 1, r->vals, NULL);
    else if (now_live && r->cl != r->cl0) {
        /* Live to live in a later life: the row was deleted and inserted
        ** again elsewhere.  So it is here: columns this life has not
        ** written yet must not keep the earlier life's values.  The pair
        ** is one savepoint, so a refused insert keeps the old row. */
        if ((rc = knit__exec(k, "SAVEPOINT knit_life")) != 0)
            return rc;
        rc = knit__user_delete(k, t, r->pk);
        if (!rc)
            rc = knit__user_write(k, t, r->pk, r->wmask, 1, r->vals, NULL);
        if (rc && !sqlite3_get_autocommit(k->db)) {
            char saved[sizeof k->errmsg];
            memcpy(saved, k->errmsg, sizeof saved);
            knit__exec(k, "ROLLBACK TO knit_life");
            memcpy(k->errmsg, saved, sizeof saved);
        }
        if (!sqlite3_get_autocommit(k->db)) {
            int r2 = knit__exec(k, "RELEASE knit_life");
            if (!rc)
                rc = r2;
        }
    } else if (now_live && r->wmask) {
        rc = knit__user_write(k, t, r->pk, r->wmask, 0, r->vals, &changed);
        /* Live metadata without a user row: the row was deleted while
        ** capture was missing.  Write it back with what this batch holds. */
        if (!rc && !changed)
            rc = knit__user_write(k, t, r->pk, r->wmask, 1, r->vals, NULL);
    }
    if (rc == KNIT_ECONSTRAINT && !sqlite3_get_autocommit(k->db))
        return REFUSE;
    return rc;
}

/* A change from a later life of the row: everything written before is of
** an older life and loses to it. */
static void new_life(arow_t *r, uint64_t cl)
{
    r->cl = cl;
    memset(r->cells, 0, sizeof r->cells);
    for (uint32_t c = 0; c < KNIT_MAX_COLS; c++)
        if (r->loaded >> c & 1)
            knit_orset_free(&r->sets[c]);
    r->loaded = r->smask = 0;
    r->dirty = 1;
}

/* ---------------------------------------------------------------------- */
/* Batch mapping                                                          */

typedef struct bmap_s {
    ktable_t **tables; /* per batch table: local table or NULL */
    int32_t **cols;    /* per batch table, per column: local column or -1 */
    uint32_t *ns;      /* per batch ns: local idx */
    uint32_t *sites;   /* per batch site: local idx */
} bmap_t;

static void bmap_free(const knit_batch_t *b, bmap_t *m)
{
    if (m->cols)
        for (size_t i = 0; i < b->ntables; i++)
            knit__free(m->cols[i]);
    knit__free(m->cols);
    knit__free(m->tables);
    knit__free(m->ns);
    knit__free(m->sites);
}

static int bmap_build(knit_t *k, const knit_batch_t *b, bmap_t *m)
{
    int rc = 0;
    memset(m, 0, sizeof *m);
    m->tables = knit__calloc(b->ntables + 1, sizeof *m->tables);
    m->cols = knit__calloc(b->ntables + 1, sizeof *m->cols);
    m->ns = knit__calloc(b->nns + 1, sizeof *m->ns);
    m->sites = knit__calloc(b->nsites + 1, sizeof *m->sites);
    if (!m->tables || !m->cols || !m->ns || !m->sites)
        return KNIT_ENOMEM;
    for (size_t i = 0; i < b->ntables; i++) {
        const knit_batch_table_t *bt = &b->tables[i];
        ktable_t *t = knit__table(k, bt->name);
        if (t && t->npk != bt->npk)
            t = NULL;
        m->tables[i] = t;
        if (!(m->cols[i] = knit__calloc(bt->ncols + 1, sizeof **m->cols)))
            return KNIT_ENOMEM;
        for (uint32_t c = 0; c < bt->ncols; c++) {
            m->cols[i][c] = -1;
            for (uint32_t j = 0; t && j < t->ncols; j++)
                if (strcmp(t->cols[j], bt->cols[c]) == 0 && t->orset[j] == bt->orset[c])
                    m->cols[i][c] = (int32_t)j;
        }
    }
    for (size_t i = 0; i < b->nns && !rc; i++)
        rc = knit__ns_intern(k, b->ns[i], &m->ns[i]);
    for (size_t i = 0; i < b->nsites && !rc; i++)
        rc = knit__site_intern(k, &b->sites[i], &m->sites[i]);
    return rc;
}

/* ---------------------------------------------------------------------- */
/* _knit_aside                                                            */

/* Appends v as an SQL literal. */
static void sql_literal(sqlite3_str *s, const knit_value_t *v)
{
    switch (v->type) {
    case KNIT_INTEGER:
        sqlite3_str_appendf(s, "%lld", (long long)v->u.i);
        break;
    case KNIT_REAL:
        sqlite3_str_appendf(s, "%!.17g", v->u.r);
        break;
    case KNIT_TEXT:
        sqlite3_str_appendf(s, "'%.*q'", (int)v->u.b.n, (const char *)v->u.b.p);
        break;
    case KNIT_BLOB:
        sqlite3_str_appendall(s, "X'");
        for (size_t i = 0; i < v->u.b.n; i++)
            sqlite3_str_appendf(s, "%02X", ((const uint8_t *)v->u.b.p)[i]);
        sqlite3_str_appendall(s, "'");
        break;
    default:
        sqlite3_str_appendall(s, "NULL");
    }
}

/* The key as concatenated value encodings, and as SQL literals. */
static int key_forms(knit_t *k, const knit_value_t *pk, uint32_t npk, uint8_t **blob, size_t *n,
                     char **text)
{
    size_t len = 0;
    for (uint32_t i = 0; i < npk; i++)
        len += knit_value_encoded_size(&pk[i]);
    *blob = knit__malloc(len ? len : 1);
    sqlite3_str *s = sqlite3_str_new(k->db);
    for (uint32_t i = 0; i < npk; i++) {
        if (i)
            sqlite3_str_appendall(s, ", ");
        sql_literal(s, &pk[i]);
    }
    *text = sqlite3_str_finish(s);
    if (!*blob || !*text) {
        knit__free(*blob);
        sqlite3_free(*text);
        return KNIT_ENOMEM;
    }
    size_t off = 0;
    for (uint32_t i = 0; i < npk; i++)
        off += knit_value_encode(&pk[i], *blob + off);
    *n = off;
    return 0;
}

static int aside_prepare(actx_t *a)
{
    knit_t *k = a->k;
    int rc = 0;
    if (!a->aside_put)
        rc = knit__prepare(
            k, &a->aside_put,
            "INSERT OR IGNORE INTO _knit_aside(id, tbl, pk, key, col, ns, cl, hlc, site,"
            " orset, value, kind, reason, at) VALUES ((SELECT max(?14, coalesce(max(id), 0))"
            " + 1 FROM _knit_aside), ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)");
    if (!rc && !a->aside_get)
        rc = knit__prepare(k, &a->aside_get,
                           "SELECT id, col, ns, cl, hlc, site, orset, value FROM _knit_aside"
                           " WHERE tbl = ?1 AND pk = ?2 AND id <= ?3 ORDER BY id");
    if (!rc && !a->aside_del)
        rc = knit__prepare(k, &a->aside_del, "DELETE FROM _knit_aside WHERE id = ?1");
    if (!rc && !a->aside_upd)
        rc = knit__prepare(k, &a->aside_upd,
                           "UPDATE _knit_aside SET id = (SELECT max(?5, coalesce(max(id), 0)) + 1"
                           " FROM _knit_aside), kind = ?2, reason = ?3, at = ?4 WHERE id = ?1");
    return rc;
}

/* Keeps one change in _knit_aside, under an id above the apply's floor
** (note 10), once: the same cell change with the same value, set aside
** again by a repeated batch, is ignored; OR-set states of one stamp can
** differ, and are all kept until they merge.  An OR-set state in batch
** numbering is stored in local numbering (note 5); one that cannot be
** renumbered is stored as it came (it stays refused). */
static int aside_put(actx_t *a, const char *tbl, const knit_value_t *pk, uint32_t npk,
                     const xch_t *x, int orset, const char *kind, const char *reason)
{
    knit_t *k = a->k;
    uint8_t *blob = NULL, *state = NULL;
    char *text = NULL;
    size_t n = 0, sn = 0;
    int rc = aside_prepare(a);
    if (rc)
        return rc;
    if ((rc = key_forms(k, pk, npk, &blob, &n, &text)) != 0)
        return rc;
    knit_value_t v = x->value;
    if (orset && x->smap && v.type == KNIT_BLOB) {
        /* Only a state that is not renumberable is kept as it came; running
        ** out of memory fails the apply (note 9). */
        knit_orset_t s;
        rc = knit_orset_decode(v.u.b.p, v.u.b.n, &s);
        if (rc == 0) {
            rc = knit_orset_remap(&s, x->smap, x->nsmap);
            if (rc == 0 && (rc = knit_orset_encode(&s, &state, &sn)) == 0) {
                v.u.b.p = state;
                v.u.b.n = sn;
            }
            knit_orset_free(&s);
        }
        if (rc == KNIT_ENOMEM) {
            knit__free(blob);
            sqlite3_free(text);
            return rc;
        }
        rc = 0;
    }
    sqlite3_stmt *st = a->aside_put;
    const knit_site_t *sid = knit__site_get(k, x->site);
    sqlite3_bind_text(st, 1, tbl, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 2, blob, (int)n, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, text, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, x->colname, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, x->nsname, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 6, (int64_t)x->cl);
    sqlite3_bind_int64(st, 7, (int64_t)x->hlc);
    sqlite3_bind_blob(st, 8, sid->b, 16, SQLITE_STATIC);
    sqlite3_bind_int(st, 9, orset);
    knit__bind_value(st, 10, &v);
    sqlite3_bind_text(st, 11, kind, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 12, reason, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 13, (int64_t)knit__now(k));
    sqlite3_bind_int64(st, 14, a->aside_floor);
    rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    knit__free(blob);
    knit__free(state);
    sqlite3_free(text);
    if (rc != SQLITE_DONE)
        return knit__dberr(k, rc, "setting a change aside");
    return 0;
}

static int aside_del(actx_t *a, int64_t id)
{
    sqlite3_stmt *st = a->aside_del;
    sqlite3_bind_int64(st, 1, id);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : knit__dberr(a->k, rc, "clearing a set-aside change");
}

/* A set-aside change refused again: new reason, and an id above the
** apply's floor (note 10). */
static int aside_refresh(actx_t *a, int64_t id, const char *kind, const char *reason)
{
    sqlite3_stmt *st = a->aside_upd;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_text(st, 2, kind, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, reason, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 4, (int64_t)knit__now(a->k));
    sqlite3_bind_int64(st, 5, a->aside_floor);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : knit__dberr(a->k, rc, "updating a set-aside change");
}

static int own(actx_t *a, void *p)
{
    if (!p)
        return KNIT_ENOMEM;
    if (a->nowned == a->capowned) {
        size_t c = a->capowned ? a->capowned * 2 : 16;
        void **n = knit__realloc(a->owned, c * sizeof *n);
        if (!n) {
            knit__free(p);
            return KNIT_ENOMEM;
        }
        a->owned = n;
        a->capowned = c;
    }
    a->owned[a->nowned++] = p;
    return 0;
}

static void disown_all(actx_t *a)
{
    for (size_t i = 0; i < a->nowned; i++)
        knit__free(a->owned[i]);
    a->nowned = 0;
}

static int xpush(actx_t *a, const xch_t *x)
{
    if (a->nx == a->capx) {
        size_t c = a->capx ? a->capx * 2 : 16;
        xch_t *n = knit__realloc(a->x, c * sizeof *n);
        if (!n)
            return KNIT_ENOMEM;
        a->x = n;
        a->capx = c;
    }
    a->x[a->nx++] = *x;
    return 0;
}

static char *dup_bytes(const void *p, size_t n)
{
    char *d = knit__malloc(n + 1);
    if (d) {
        if (n)
            memcpy(d, p, n);
        d[n] = 0;
    }
    return d;
}

/* Adds the set-aside changes of (t, pk) to the row's changes; those whose
** column this replica still lacks stay where they are. */
static int aside_load(actx_t *a, ktable_t *t, const knit_value_t *pk)
{
    knit_t *k = a->k;
    uint8_t *blob = NULL;
    char *text = NULL;
    size_t n = 0;
    int rc = aside_prepare(a);
    if (rc || (rc = key_forms(k, pk, t->npk, &blob, &n, &text)) != 0)
        return rc;
    sqlite3_free(text);
    sqlite3_stmt *st = a->aside_get;
    sqlite3_bind_text(st, 1, t->name, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 2, blob, (int)n, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, a->aside_floor);
    while (!rc && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        rc = 0;
        xch_t x = {0};
        const char *col = (const char *)sqlite3_column_text(st, 1);
        int orset = sqlite3_column_int(st, 6);
        x.aside_id = sqlite3_column_int64(st, 0);
        x.col = UINT32_MAX;
        if (!col || !col[0]) {
            x.col = 0;
        } else {
            for (uint32_t c = 0; c < t->ncols; c++)
                if (strcmp(t->cols[c], col) == 0 && t->orset[c] == (orset != 0))
                    x.col = c + 1;
        }
        if (x.col == UINT32_MAX || sqlite3_column_bytes(st, 5) != 16)
            continue; /* still waiting for its column */
        knit_site_t sid;
        memcpy(sid.b, sqlite3_column_blob(st, 5), 16);
        if ((rc = knit__site_intern(k, &sid, &x.site)) != 0)
            break;
        char *cn = dup_bytes(col ? col : "", col ? strlen(col) : 0);
        const char *nsn = (const char *)sqlite3_column_text(st, 2);
        char *ns = dup_bytes(nsn ? nsn : "", nsn ? strlen(nsn) : 0);
        if ((rc = own(a, cn)) != 0 || (rc = own(a, ns)) != 0)
            break;
        x.colname = cn;
        x.nsname = ns;
        if ((rc = knit__ns_intern(k, ns, &x.ns)) != 0)
            break;
        x.cl = (uint64_t)sqlite3_column_int64(st, 3);
        x.hlc = (uint64_t)sqlite3_column_int64(st, 4);
        knit__column_value(st, 7, &x.value);
        if (x.value.type == KNIT_TEXT || x.value.type == KNIT_BLOB) {
            char *d = dup_bytes(x.value.u.b.p, x.value.u.b.n);
            if ((rc = own(a, d)) != 0)
                break;
            x.value.u.b.p = d;
        }
        rc = xpush(a, &x);
    }
    if (rc == SQLITE_DONE)
        rc = 0;
    else if (rc > 0)
        rc = knit__dberr(k, rc, "reading set-aside changes");
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    knit__free(blob);
    return rc;
}

/* ---------------------------------------------------------------------- */
/* Merging one change                                                     */

/* The OR-set state of column c as merged so far in this batch. */
static int set_current(knit_t *k, arow_t *r, uint32_t c)
{
    if (r->loaded >> c & 1)
        return 0;
    int found = 0, rc = 0;
    knit_orset_init(&r->sets[c]);
    /* A cell never written in this life holds no state of this life. */
    if (r->cells[c + 1].hlc)
        rc = knit__set_load(k, r->t, r->pk, c, &r->sets[c], &found);
    if (rc)
        return rc;
    r->loaded |= UINT64_C(1) << c;
    return 0;
}

/* Merges an OR-set change into column c of r. */
static int merge_set(actx_t *a, arow_t *r, uint32_t c, const xch_t *x)
{
    knit_t *k = a->k;
    knit_orset_t in, cur;
    kcell_t *cell = &r->cells[c + 1];
    int rc;
    if (x->value.type != KNIT_BLOB)
        return knit__err(k, REFUSE, "%s.%s: OR-set change without a state", r->t->name,
                         r->t->cols[c]);
    rc = knit_orset_decode(x->value.u.b.p, x->value.u.b.n, &in);
    if (rc == KNIT_ENOMEM)
        return rc;
    if (rc)
        return knit__err(k, REFUSE, "%s.%s: malformed OR-set state", r->t->name, r->t->cols[c]);
    if (x->smap && (rc = knit_orset_remap(&in, x->smap, x->nsmap)) != 0) {
        knit_orset_free(&in);
        return rc == KNIT_ENOMEM ? rc
                                 : knit__err(k, REFUSE, "%s.%s: OR-set state names an unknown site",
                                             r->t->name, r->t->cols[c]);
    }
    if ((rc = set_current(k, r, c)) != 0) {
        knit_orset_free(&in);
        return rc;
    }
    knit_orset_init(&cur);
    rc = knit_orset_copy(&cur, &r->sets[c]);
    if (!rc)
        rc = knit_orset_join(&cur, &in);
    if (!rc && (!knit_orset_equal(&r->sets[c], &cur) || !cell->hlc)) {
        char *json = NULL;
        size_t jn = 0;
        rc = knit_orset_json(&cur, &json, &jn);
        if (rc == KNIT_EINVAL)
            rc = knit__err(k, REFUSE,
                           "%s.%s: OR-set element has no JSON form (a BLOB or "
                           "TEXT that is not UTF-8)",
                           r->t->name, r->t->cols[c]);
        if (!rc) {
            knit__free(r->json[c]);
            r->json[c] = json;
            r->vals[c].type = KNIT_TEXT;
            r->vals[c].u.b.p = json;
            r->vals[c].u.b.n = jn;
            r->wmask |= UINT64_C(1) << c;
            r->smask |= UINT64_C(1) << c;
            uint64_t h = x->hlc ? x->hlc : 1;
            /* If the merged state holds something the incoming one lacked,
            ** the sender has not seen it: it may be this replica's own
            ** unpushed work, so the cell stays a local change (pushed, and
            ** harmless to push twice).  Otherwise the cell is simply what
            ** the sender sent. */
            int ours = cell->hlc && !knit_orset_equal(&cur, &in);
            if (h > cell->hlc)
                cell->hlc = h;
            cell->site = ours ? k->site_idx : x->site;
            cell->ver = a->ver;
            r->dirty = 1;
            knit_orset_free(&r->sets[c]);
            r->sets[c] = cur;
            knit_orset_init(&cur);
            a->st->applied++;
        }
    } else if (!rc) {
        a->st->known++;
    }
    knit_orset_free(&cur);
    knit_orset_free(&in);
    return rc;
}

/* The liveness change of x's life among the row's changes, or NULL. */
static const xch_t *life_of(const actx_t *a, const xch_t *x)
{
    if (x->col == 0)
        return x;
    for (size_t i = 0; i < a->nx; i++)
        if (a->x[i].col == 0 && a->x[i].ns == x->ns && a->x[i].cl == x->cl)
            return &a->x[i];
    return NULL;
}

/* The liveness cell that ends a row's life in the namespace it loses
** (nscol.c design note 5): stamped with the winning life's liveness, so
** every replica that sees both writes the same cell, and for a move it is
** the tombstone the mover wrote.  It takes a version of its own, pushed
** again whatever its site (sites.c, re-pushed versions), so the relay gets
** it even when the winner's writer never held that namespace. */
static int end_cell(actx_t *a, uint64_t hlc, uint32_t site, kcell_t *out)
{
    int rc;
    if (!a->endver && ((rc = knit__next_version(a->k, &a->endver)) != 0 ||
                       (rc = knit__repush_add(a->k, a->endver, a->endver)) != 0))
        return rc;
    *out = (kcell_t){hlc, site, a->endver};
    return 0;
}

/* nscol.c design note 4: change x comes from another namespace than row r
** is in.  *adopt = 1 when the row moves there (x then merges as usual);
** else x is that namespace's state of a row that has left it, kept as a
** departure.  A key alive in both (concurrent moves to different
** namespaces, a row made again under its key where this replica's has
** moved, or a move whose tombstone has not arrived yet) goes to the
** larger causal length, then liveness stamp; the losing namespace gets
** the tombstone of end_cell from here, whether the row stays or moves. */
static int ns_move(actx_t *a, arow_t *r, const xch_t *x, int *adopt)
{
    knit_t *k = a->k;
    uint64_t gcl;
    kcell_t g0;
    int rc = knit__gone_get(k, r->t, r->pk, x->ns, &gcl, &g0);
    if (rc)
        return rc;
    *adopt = 0;
    int later = x->cl > r->cl || (!knit_cl_live(r->cl) && knit_cl_live(x->cl));
    const xch_t *life = NULL;
    int tie = !later && knit_cl_live(x->cl) && knit_cl_live(r->cl) && x->cl > gcl &&
              (life = life_of(a, x)) != NULL;
    int wins = tie && x->cl == r->cl &&
               knit_stamp_cmp(life->hlc, knit__site_get(k, life->site), r->cells[0].hlc,
                              knit__site_get(k, r->cells[0].site)) > 0;
    if ((!later && !wins) || x->cl <= gcl) {
        kcell_t c0 = {0, 0, 0};
        uint64_t cl = x->cl;
        if (tie) { /* the row stays: its life in x's namespace ends */
            if ((rc = end_cell(a, r->cells[0].hlc, r->cells[0].site, &c0)) != 0)
                return rc;
            cl++;
        } else if (x->col == 0) {
            c0 = (kcell_t){x->hlc, x->site, a->ver};
        }
        a->st->lost++;
        return knit__gone_put(k, r->t, r->pk, x->ns, cl, &c0);
    }
    kcell_t left = r->cells[0];
    uint64_t lcl = r->cl;
    if (knit_cl_live(r->cl)) { /* alive here too: the row moves, its life here ends */
        if (!life)
            life = life_of(a, x);
        if (!life)
            life = x; /* the batch lacks its liveness: x's stamp is the next best */
        if ((rc = end_cell(a, life->hlc, life->site, &left)) != 0)
            return rc;
        lcl++;
    }
    if ((rc = knit__gone_put(k, r->t, r->pk, r->ns, lcl, &left)) != 0 ||
        (rc = knit__gone_del(k, r->t, r->pk, x->ns)) != 0)
        return rc;
    r->ns = x->ns;
    if (x->cl <= r->cl)
        new_life(r, x->cl); /* that namespace's own life, over a local tombstone or a tie */
    r->dirty = 1;
    *adopt = 1;
    return 0;
}

static int merge_change(actx_t *a, arow_t *r, const xch_t *x)
{
    knit_t *k = a->k;
    const knit_site_t *sid = knit__site_get(k, x->site);
    if (!r->has_meta && !r->dirty) {
        r->ns = x->ns;
    } else if (x->ns != r->ns && r->t->nscol >= 0) {
        int adopt, rc = ns_move(a, r, x, &adopt);
        if (rc || !adopt)
            return rc;
    }
    if (x->cl < r->cl) {
        a->st->lost++;
        return 0;
    }
    if (x->col == 0) {
        kcell_t *cell = &r->cells[0];
        if (x->cl > r->cl) {
            new_life(r, x->cl);
        } else if (cell->hlc) {
            int cmp = knit_stamp_cmp(x->hlc, sid, cell->hlc, knit__site_get(k, cell->site));
            if (cmp <= 0) {
                if (cmp == 0)
                    a->st->known++;
                else
                    a->st->lost++;
                return 0;
            }
        }
        cell->hlc = x->hlc;
        cell->site = x->site;
        cell->ver = a->ver;
        r->dirty = 1;
        a->st->applied++;
        return 0;
    }
    uint32_t lc = x->col - 1;
    if (x->cl > r->cl)
        new_life(r, x->cl);
    if (r->t->orset[lc])
        return merge_set(a, r, lc, x);
    kcell_t *cell = &r->cells[lc + 1];
    if (cell->hlc) {
        int cmp = knit_stamp_cmp(x->hlc, sid, cell->hlc, knit__site_get(k, cell->site));
        if (cmp <= 0) {
            if (cmp == 0)
                a->st->known++;
            else
                a->st->lost++;
            return 0;
        }
    }
    cell->hlc = x->hlc;
    cell->site = x->site;
    cell->ver = a->ver;
    r->vals[lc] = x->value;
    r->wmask |= UINT64_C(1) << lc;
    r->dirty = 1;
    a->st->applied++;
    return 0;
}

/* 1 when change y makes x redundant: the same LWW cell or liveness with a
** larger (cl, hlc, site), or the very same stamp (then the one already set
** aside, or the earlier, is kept).  OR-set states join, so none is. */
static int supersedes(actx_t *a, const arow_t *r, const xch_t *y, size_t yi, const xch_t *x,
                      size_t xi)
{
    if (y->col != x->col || (x->col && r->t->orset[x->col - 1]))
        return 0;
    if (y->cl != x->cl)
        return y->cl > x->cl;
    int cmp = knit_stamp_cmp(y->hlc, knit__site_get(a->k, y->site), x->hlc,
                             knit__site_get(a->k, x->site));
    if (cmp)
        return cmp > 0;
    if (!x->aside_id != !y->aside_id)
        return y->aside_id != 0;
    return yi < xi;
}

/* Sets the row's changes aside as refused, with the reason, keeping one
** change per cell: a row refused again and again must not pile up copies
** of the same cells. */
static int refuse_row(actx_t *a, arow_t *r, const char *reason)
{
    int rc = 0;
    for (size_t i = 0; i < a->nx && !rc; i++) {
        xch_t *x = &a->x[i];
        int orset = x->col && r->t->orset[x->col - 1], redundant = 0;
        for (size_t j = 0; j < a->nx && !redundant; j++)
            redundant = j != i && supersedes(a, r, &a->x[j], j, x, i);
        if (redundant) {
            if (x->aside_id)
                rc = aside_del(a, x->aside_id);
            continue;
        }
        if (x->aside_id)
            rc = aside_refresh(a, x->aside_id, "refused", reason);
        else
            rc = aside_put(a, r->t->name, r->pk, r->t->npk, x, orset, "refused", reason);
        a->st->aside++;
    }
    return rc;
}

/* Deletes the capture log rows of one key that knit's own write made
** (note 7). */
static int log_forget(actx_t *a, ktable_t *t, const knit_value_t *pk)
{
    knit_t *k = a->k;
    size_t ti = (size_t)(t - k->tables);
    int rc;
    if (!a->logdel && !(a->logdel = knit__calloc(k->ntables + 1, sizeof *a->logdel)))
        return KNIT_ENOMEM;
    if (!a->logdel[ti]) {
        sqlite3_str *s = sqlite3_str_new(k->db);
        sqlite3_str_appendf(s, "DELETE FROM _knit_log_%d WHERE ", t->id);
        knit__where_meta_keys(s, t->npk);
        if ((rc = knit__prepare_str(k, &a->logdel[ti], s)) != 0)
            return rc;
    }
    sqlite3_stmt *st = a->logdel[ti];
    for (uint32_t i = 0; i < t->npk; i++)
        knit__bind_value(st, (int)i + 1, &pk[i]);
    rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_DONE ? 0 : knit__dberr(k, rc, "clearing the capture log");
}

/* Deletes every OR-set state of one key: the row entered a later life in
** this apply, and states of the earlier one must not be taken for this
** life's (R5).  A set cell this life has not written yet holds the empty
** set; were the old state kept, a local write of the column would diff
** against it and carry the earlier life's dots and removes into this life,
** where they cancel other replicas' adds. */
static int sets_forget(actx_t *a, ktable_t *t, const knit_value_t *pk)
{
    knit_t *k = a->k;
    size_t ti = (size_t)(t - k->tables);
    int rc;
    if (!a->setdel && !(a->setdel = knit__calloc(k->ntables + 1, sizeof *a->setdel)))
        return KNIT_ENOMEM;
    if (!a->setdel[ti]) {
        sqlite3_str *s = sqlite3_str_new(k->db);
        sqlite3_str_appendf(s, "DELETE FROM _knit_sets_%d WHERE ", t->id);
        knit__where_meta_keys(s, t->npk);
        if ((rc = knit__prepare_str(k, &a->setdel[ti], s)) != 0)
            return rc;
    }
    sqlite3_stmt *st = a->setdel[ti];
    for (uint32_t i = 0; i < t->npk; i++)
        knit__bind_value(st, (int)i + 1, &pk[i]);
    rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_DONE ? 0 : knit__dberr(k, rc, "clearing OR-set states");
}

/* A row refused in a later life than the one shown here (note 8): that
** earlier life is over wherever the refused changes came from, so the row
** must not stay visible as if it were alive.  A local write to it would be
** stamped in the dead life and lose to the set-aside one on retry, silently.
** So the user row is deleted and the metadata moves to the deletion that
** preceded the refused life, without cells.  A local insert then starts that
** very life, and merges with the set-aside changes cell by cell when they
** are retried. */
static int refuse_ends_life(actx_t *a, ktable_t *t, const knit_value_t *pk, arow_t *r)
{
    knit_t *k = a->k;
    if (!knit_cl_live(r->cl) || r->cl - 1 <= r->cl0)
        return 0;
    int rc = 0;
    if (r->has_meta && knit_cl_live(r->cl0)) {
        rc = knit__user_delete(k, t, pk);
        if (rc == KNIT_ECONSTRAINT && !sqlite3_get_autocommit(k->db))
            return 0; /* the app's constraints keep the row: it stays as it was */
    }
    if (!rc && t->setmask && r->has_meta)
        rc = sets_forget(a, t, pk);
    r->cl -= 1;
    memset(r->cells, 0, sizeof r->cells);
    if (!rc)
        rc = meta_write(k, r, a->ver);
    if (!rc && !k->triggers_off)
        rc = log_forget(a, t, pk);
    return rc;
}

/* Merges the current row's changes (a->x) into it and writes it once. */
static int row_apply(actx_t *a, ktable_t *t, const knit_value_t *pk, arow_t *r)
{
    knit_t *k = a->k;
    knit_apply_stats_t before = *a->st;
    int rc;
    if (a->have_aside && (rc = aside_load(a, t, pk)) != 0)
        return rc;
    if (!a->nx)
        return 0;
    /* The version is taken with the first row that has changes, so an apply
    ** or retry that brings nothing does not advance it. */
    if (!a->ver && (rc = knit__next_version(k, &a->ver)) != 0)
        return rc;
    if ((rc = row_load(k, t, pk, r)) != 0)
        return rc;
    /* Merge; a change that cannot be merged at all is set aside alone. */
    for (size_t i = 0; i < a->nx && !rc;) {
        xch_t *x = &a->x[i];
        rc = merge_change(a, r, x);
        if (rc == REFUSE) {
            int orset = x->col && t->orset[x->col - 1];
            char reason[sizeof k->errmsg];
            memcpy(reason, k->errmsg, sizeof reason);
            /* One already set aside keeps the reason it was given. */
            rc = x->aside_id ? 0 : aside_put(a, t->name, pk, t->npk, x, orset, "refused", reason);
            a->st->aside++;
            a->x[i] = a->x[--a->nx];
            continue;
        }
        i++;
    }
    if (!rc && r->dirty) {
        rc = user_flush(k, r);
        if (rc == REFUSE) {
            /* Undo this row's counts: nothing of it was applied. */
            size_t aside = a->st->aside;
            *a->st = before;
            a->st->aside = aside;
            char reason[sizeof k->errmsg];
            memcpy(reason, k->errmsg, sizeof reason);
            rc = refuse_row(a, r, reason);
            if (!rc)
                rc = refuse_ends_life(a, t, pk, r);
            goto out;
        }
        if (!rc && t->setmask && r->has_meta && r->cl != r->cl0)
            rc = sets_forget(a, t, pk);
        for (uint32_t c = 0; !rc && c < t->ncols; c++)
            if (r->smask >> c & 1)
                rc = knit__set_save(k, t, pk, c, &r->sets[c]);
        if (!rc)
            rc = meta_write(k, r, a->ver);
        if (!rc && !k->triggers_off)
            rc = log_forget(a, t, pk);
        t->ev_rows++;
    }
    for (size_t i = 0; i < a->nx && !rc; i++) {
        if (a->x[i].aside_id) {
            rc = aside_del(a, a->x[i].aside_id);
            a->st->recovered++;
        }
    }
out:
    row_release(r);
    return rc;
}

/* ---------------------------------------------------------------------- */
/* Ordering a batch by row                                                */

typedef struct order_s {
    const knit_batch_t *b;
    uint32_t *idx; /* change indexes, sorted */
    uint32_t *tmp; /* merge buffer */
} order_t;

static int change_cmp(const knit_batch_t *b, uint32_t i, uint32_t j)
{
    const knit_change_t *x = &b->changes[i], *y = &b->changes[j];
    if (x->table != y->table)
        return x->table < y->table ? -1 : 1;
    uint32_t npk = b->tables[x->table].npk;
    for (uint32_t p = 0; p < npk; p++) {
        int c = knit_value_cmp(&x->pk[p], &y->pk[p]);
        if (!c && x->pk[p].type != y->pk[p].type)
            c = x->pk[p].type < y->pk[p].type ? -1 : 1;
        if (c)
            return c;
    }
    return 0;
}

/* Stable merge sort of o->idx[lo, hi) by (table, key). */
static void order_sort(order_t *o, size_t lo, size_t hi)
{
    if (hi - lo < 2)
        return;
    size_t mid = lo + (hi - lo) / 2;
    order_sort(o, lo, mid);
    order_sort(o, mid, hi);
    if (change_cmp(o->b, o->idx[mid - 1], o->idx[mid]) <= 0)
        return; /* already in order: batches from one replica mostly are */
    size_t i = lo, j = mid, n = 0;
    while (i < mid && j < hi)
        o->tmp[n++] = change_cmp(o->b, o->idx[j], o->idx[i]) < 0 ? o->idx[j++] : o->idx[i++];
    while (i < mid)
        o->tmp[n++] = o->idx[i++];
    while (j < hi)
        o->tmp[n++] = o->idx[j++];
    memcpy(o->idx + lo, o->tmp, n * sizeof *o->tmp);
}

/* ---------------------------------------------------------------------- */
/* Apply                                                                  */

/* Refuses the batch if any stamp is too far ahead; else moves the HLC past
** the newest stamp. */
static int receive_clock(knit_t *k, const knit_batch_t *b)
{
    uint64_t max = 0, now = knit__now(k);
    for (size_t i = 0; i < b->nchanges; i++) {
        uint64_t h = b->changes[i].hlc;
        if (knit_hlc_ms(h) > now + k->max_drift_ms)
            return knit__err(
                k, KNIT_ECLOCKSKEW, "change %zu is stamped %llu ms in the future (limit %llu ms)",
                i, (unsigned long long)(knit_hlc_ms(h) - now), (unsigned long long)k->max_drift_ms);
        if (h > max)
            max = h;
    }
    if (!max)
        return 0;
    int64_t cur;
    int rc = knit__meta_get_int(k, "hlc", &cur);
    if (rc)
        return rc;
    uint64_t clock = (uint64_t)cur;
    if ((rc = knit_hlc_recv(&clock, max, now, k->max_drift_ms)) != 0)
        return knit__err(k, rc, "remote stamp refused");
    return clock != (uint64_t)cur ? knit__meta_set_int(k, "hlc", (int64_t)clock) : 0;
}

/* The newest set-aside change before this apply (0 = none). */
static int aside_newest(knit_t *k, int64_t *id)
{
    sqlite3_stmt *st = knit__fixed(k, KS_ASIDE_MAX);
    int rc;
    *id = 0;
    if (!st)
        return knit__dberr(k, sqlite3_errcode(k->db), "reading _knit_aside");
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *id = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    return rc == SQLITE_ROW ? 0 : knit__dberr(k, rc, "reading _knit_aside");
}

/* Sets a batch change aside as 'waiting' for its table or column. */
static int wait_change(actx_t *a, const knit_batch_t *b, const bmap_t *m, const knit_change_t *ch)
{
    const knit_batch_table_t *bt = &b->tables[ch->table];
    xch_t x = {0};
    char reason[512];
    x.colname = ch->col ? bt->cols[ch->col - 1] : "";
    x.nsname = b->ns[ch->ns];
    x.site = m->sites[ch->site];
    x.cl = ch->cl;
    x.hlc = ch->hlc;
    x.value = ch->value;
    x.smap = m->sites;
    x.nsmap = b->nsites;
    if (!m->tables[ch->table])
        snprintf(reason, sizeof reason, "table %s is not tracked here", bt->name);
    else
        snprintf(reason, sizeof reason, "column %s.%s is not tracked here", bt->name, x.colname);
    a->st->skipped++;
    return aside_put(a, bt->name, ch->pk, bt->npk, &x, ch->col && bt->orset[ch->col - 1], "waiting",
                     reason);
}

/* Merges every set-aside change again (schema changed, or asked). */
static int retry_all(actx_t *a, arow_t *r)
{
    knit_t *k = a->k;
    sqlite3_stmt *st = NULL;
    struct key_s {
        ktable_t *t;
        knit_value_t pk[KNIT_MAX_PK];
        uint8_t *blob;
    } *keys = NULL;
    size_t n = 0, cap = 0;
    int rc = sqlite3_prepare_v2(k->db, "SELECT DISTINCT tbl, pk FROM _knit_aside ORDER BY tbl, pk",
                                -1, &st, NULL);
    if (rc != SQLITE_OK)
        return knit__dberr(k, rc, "reading _knit_aside");
    rc = 0;
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        ktable_t *t = knit__table(k, (const char *)sqlite3_column_text(st, 0));
        if (!t)
            continue;
        if (n == cap) {
            size_t c = cap ? cap * 2 : 16;
            struct key_s *nk = knit__realloc(keys, c * sizeof *nk);
            if (!nk) {
                rc = KNIT_ENOMEM;
                break;
            }
            keys = nk;
            cap = c;
        }
        struct key_s *e = &keys[n];
        size_t bn = (size_t)sqlite3_column_bytes(st, 1), off = 0;
        if (!(e->blob = knit__malloc(bn ? bn : 1))) {
            rc = KNIT_ENOMEM;
            break;
        }
        if (bn)
            memcpy(e->blob, sqlite3_column_blob(st, 1), bn);
        e->t = t;
        n++;
        uint32_t i;
        for (i = 0; i < t->npk && off < bn; i++) {
            size_t used;
            if (knit_value_decode(e->blob + off, bn - off, &e->pk[i], &used) != 0)
                break;
            off += used;
        }
        if (i != t->npk || off != bn) {
            knit__free(e->blob);
            n--; /* a key of another shape: the table changed; it stays aside */
        }
    }
    if (!rc && step != SQLITE_DONE)
        rc = knit__dberr(k, step, "reading _knit_aside");
    sqlite3_finalize(st);
    for (size_t i = 0; i < n && !rc; i++) {
        a->nx = 0;
        rc = row_apply(a, keys[i].t, keys[i].pk, r);
        disown_all(a);
    }
    for (size_t i = 0; i < n; i++)
        knit__free(keys[i].blob);
    knit__free(keys);
    return rc;
}

static int apply_locked(knit_t *k, const knit_batch_t *b, knit_apply_stats_t *st, int retry)
{
    bmap_t m;
    arow_t *r = NULL;
    actx_t a;
    order_t o = {b, NULL, NULL};
    int rc;

    memset(&a, 0, sizeof a);
    memset(&m, 0, sizeof m);
    a.k = k;
    a.st = st;
    if ((rc = knit__stamp_locked(k, NULL)) != 0)
        return rc;
    if (b && (rc = receive_clock(k, b)) != 0)
        return rc;
    if (b && (rc = bmap_build(k, b, &m)) != 0)
        goto done;
    if ((rc = aside_newest(k, &a.aside_floor)) != 0)
        goto done;
    a.have_aside = a.aside_floor > 0;
    if (a.have_aside && k->aside_cookie != k->schema_cookie)
        retry = 1; /* note 5: the schema changed since the last try */
    if (!(r = knit__calloc(1, sizeof *r))) {
        rc = KNIT_ENOMEM;
        goto done;
    }
    if (b && b->nchanges) {
        o.idx = knit__malloc(b->nchanges * sizeof *o.idx);
        o.tmp = knit__malloc(b->nchanges * sizeof *o.tmp);
        if (!o.idx || !o.tmp) {
            rc = KNIT_ENOMEM;
            goto done;
        }
        for (size_t i = 0; i < b->nchanges; i++) {
            const knit_change_t *ch = &b->changes[i];
            if (ch->table >= b->ntables || ch->ns >= b->nns || ch->site >= b->nsites ||
                ch->col > b->tables[ch->table].ncols) {
                rc = knit__err(k, KNIT_EINVAL, "change %zu has an index out of range", i);
                goto done;
            }
            o.idx[i] = (uint32_t)i;
        }
        order_sort(&o, 0, b->nchanges);
    }
    for (size_t i = 0; b && i < b->nchanges && !rc;) {
        const knit_change_t *first = &b->changes[o.idx[i]];
        ktable_t *t = m.tables[first->table];
        size_t j = i;
        a.nx = 0;
        for (; j < b->nchanges && change_cmp(b, o.idx[i], o.idx[j]) == 0 && !rc; j++) {
            const knit_change_t *ch = &b->changes[o.idx[j]];
            int32_t lc = ch->col ? m.cols[ch->table][ch->col - 1] : 0;
            if (!t || lc < 0) {
                rc = wait_change(&a, b, &m, ch);
                continue;
            }
            char why[512];
            int bad = knit_change_check(b, ch, why, sizeof why);
            if (bad == KNIT_ENOMEM) {
                rc = bad;
                break;
            }
            xch_t x = {0};
            x.col = ch->col ? (uint32_t)lc + 1 : 0;
            x.colname = ch->col ? b->tables[ch->table].cols[ch->col - 1] : "";
            x.nsname = b->ns[ch->ns];
            x.ns = m.ns[ch->ns];
            x.site = m.sites[ch->site];
            x.cl = ch->cl;
            x.hlc = ch->hlc;
            x.value = ch->value;
            x.smap = m.sites;
            x.nsmap = b->nsites;
            if (bad) {
                /* The relay refuses these too (validate.h); one from
                ** elsewhere is set aside alone, the row goes on. */
                rc = aside_put(&a, t->name, ch->pk, t->npk, &x, ch->col && t->orset[lc], "refused",
                               why);
                st->aside++;
                continue;
            }
            rc = xpush(&a, &x);
        }
        if (!rc && t && a.nx)
            rc = row_apply(&a, t, first->pk, r);
        disown_all(&a);
        i = j;
    }
    if (!rc && retry && a.have_aside) {
        rc = retry_all(&a, r);
        if (!rc)
            k->aside_cookie = k->schema_cookie;
    }
    if (!rc && !k->triggers_off)
        rc = knit__stamp_locked(k, NULL); /* note 7: what app triggers wrote */
    if (!rc && (st->applied || st->recovered))
        k->ev_remote = 1;
done:
    if (r)
        row_release(r);
    knit__free(r);
    disown_all(&a);
    knit__free(a.owned);
    knit__free(a.x);
    knit__free(o.idx);
    knit__free(o.tmp);
    sqlite3_finalize(a.aside_get);
    sqlite3_finalize(a.aside_put);
    sqlite3_finalize(a.aside_del);
    sqlite3_finalize(a.aside_upd);
    for (size_t i = 0; a.logdel && i < k->ntables; i++)
        sqlite3_finalize(a.logdel[i]);
    knit__free(a.logdel);
    for (size_t i = 0; a.setdel && i < k->ntables; i++)
        sqlite3_finalize(a.setdel[i]);
    knit__free(a.setdel);
    if (b)
        bmap_free(b, &m);
    return rc;
}

static int apply(knit_t *k, const knit_batch_t *b, const char *ns, uint64_t seq,
                 knit_apply_stats_t *stats, int retry)
{
    knit_apply_stats_t st = {0};
    int rc = knit__begin(k);
    if (rc)
        return rc;
    rc = apply_locked(k, b, &st, retry);
    if (!rc && ns) {
        uint32_t idx;
        sqlite3_stmt *s = NULL;
        rc = knit__ns_intern(k, ns, &idx);
        if (!rc && (s = knit__fixed(k, KS_NS_CURSOR)) != NULL) {
            sqlite3_bind_int64(s, 1, (int64_t)seq);
            sqlite3_bind_int64(s, 2, idx);
            if (sqlite3_step(s) != SQLITE_DONE)
                rc = knit__dberr(k, sqlite3_errcode(k->db), "saving the cursor");
            sqlite3_reset(s);
        } else if (!rc) {
            rc = knit__dberr(k, sqlite3_errcode(k->db), "saving the cursor");
        }
    }
    /* SQLite rolls a transaction back by itself on some errors (a full
    ** disk); an error path that went on would then write outside any
    ** transaction.  Make sure that never passed for success. */
    if (!rc && sqlite3_get_autocommit(k->db))
        rc = knit__err(k, KNIT_EIO, "the apply's transaction was rolled back by SQLite");
    if (!rc)
        rc = knit__commit(k);
    if (rc) {
        char saved[sizeof k->errmsg];
        memcpy(saved, k->errmsg, sizeof saved);
        knit__rollback(k);
        memcpy(k->errmsg, saved, sizeof saved);
        return rc;
    }
    if (stats)
        *stats = st;
    knit__notify(k);
    return 0;
}

int knit__apply_locked(knit_t *k, const knit_batch_t *b, knit_apply_stats_t *st) /* see replica.h */
{
    knit_apply_stats_t dummy = {0};
    return apply_locked(k, b, st ? st : &dummy, 0);
}

int knit_apply(knit_t *k, const knit_batch_t *b, knit_apply_stats_t *stats) /* see knit.h */
{
    if (!b)
        return knit__err(k, KNIT_EINVAL, "no batch");
    return apply(k, b, NULL, 0, stats, 0);
}

int knit_apply_at(knit_t *k, const knit_batch_t *b, const char *ns, uint64_t seq,
                  knit_apply_stats_t *stats) /* see knit.h */
{
    if (!b)
        return knit__err(k, KNIT_EINVAL, "no batch");
    return apply(k, b, ns, seq, stats, 0);
}

int knit_aside_retry(knit_t *k, knit_apply_stats_t *stats) /* see knit.h */
{
    return apply(k, NULL, NULL, 0, stats, 1);
}

int knit_aside_count(knit_t *k, size_t *refused_rows, size_t *waiting) /* see knit.h */
{
    sqlite3_stmt *st = NULL;
    if (refused_rows)
        *refused_rows = 0;
    if (waiting)
        *waiting = 0;
    int rc = sqlite3_prepare_v2(k->db,
                                "SELECT (SELECT count(*) FROM (SELECT DISTINCT tbl, pk FROM"
                                " _knit_aside WHERE kind = 'refused')),"
                                " (SELECT count(*) FROM _knit_aside WHERE kind = 'waiting')",
                                -1, &st, NULL);
    if (rc != SQLITE_OK) {
        /* A read-only replica made by an older knit has no _knit_aside. */
        int none = strstr(sqlite3_errmsg(k->db), "no such table") != NULL;
        return none ? 0 : knit__dberr(k, rc, "reading _knit_aside");
    }
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        if (refused_rows)
            *refused_rows = (size_t)sqlite3_column_int64(st, 0);
        if (waiting)
            *waiting = (size_t)sqlite3_column_int64(st, 1);
    }
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? 0 : knit__dberr(k, rc, "reading _knit_aside");
}
