/*
** apply.c: merging a batch of remote changes into the replica (knit_apply).
**
** Design notes
**   1. One batch, one write transaction: local captured writes are stamped
**      first (so they compete with their own stamps), then every change is
**      merged, then the log rows that knit's own writes produced are deleted
**      and the transaction commits.  A failure anywhere rolls all of it back.
**   2. A cell merges by (causal length, HLC, site): a change from a later
**      life of the row resets the row's cells and wins; one from an earlier
**      life loses; within a life the larger stamp wins.  OR-set columns join
**      their states within a life and take the incoming state whole when it
**      comes from a later life.
**   3. Changes are merged into an in-memory copy of the row's metadata and
**      written out once per row ("flush"), together with one user-table
**      statement: INSERT when the row becomes live (so NOT NULL columns
**      arrive together), UPDATE of the written columns, or DELETE.
**   4. Stamps beyond now + max drift refuse the whole batch before anything
**      is written; otherwise the replica's HLC moves past every stamp seen.
*/
#include <string.h>

#include "replica.h"

/* ---------------------------------------------------------------------- */
/* User-table statements                                                   */

static void where_keys(char *buf, size_t n, const ktable_t *t, int first_param)
{
    size_t off = 0;
    buf[0] = 0;
    for (uint32_t i = 0; i < t->npk && off < n; i++) {
        char *q = knit__quote(t->pk[i]);
        off += (size_t)snprintf(buf + off, n - off, "%s%s = ?%d", i ? " AND " : "",
                                q ? q : "\"\"", first_param + (int)i);
        knit__free(q);
    }
}

int knit__user_get_prepare(knit_t *k, ktable_t *t)
{
    if (t->st[ST_USERGET]) {
        sqlite3_reset(t->st[ST_USERGET]);
        return 0;
    }
    size_t cap = 256 + (size_t)(t->ncols + t->npk) * 300;
    char *sql = knit__malloc(cap), *qt = knit__quote(t->name);
    int rc = KNIT_ENOMEM;
    if (sql && qt) {
        size_t off = (size_t)snprintf(sql, cap, "SELECT ");
        for (uint32_t c = 0; c < t->ncols; c++) {
            char *q = knit__quote(t->cols[c]);
            off += (size_t)snprintf(sql + off, cap - off, "%s%s", c ? ", " : "", q ? q : "NULL");
            knit__free(q);
        }
        if (!t->ncols)
            off += (size_t)snprintf(sql + off, cap - off, "1");
        off += (size_t)snprintf(sql + off, cap - off, " FROM %s WHERE ", qt);
        where_keys(sql + off, cap - off, t, 1);
        rc = knit__prepare(k, &t->st[ST_USERGET], sql);
    }
    knit__free(sql);
    knit__free(qt);
    return rc;
}

/* Finds or builds the statement that writes the columns in mask of one
** user row: INSERT (key + columns) when insert, else UPDATE. */
static int user_stmt(knit_t *k, ktable_t *t, uint64_t mask, int insert, sqlite3_stmt **out)
{
    for (int i = 0; i < KNIT_MASK_CACHE; i++) {
        if (t->wr[i].stmt && t->wr[i].mask == mask && t->wr[i].insert == insert) {
            sqlite3_reset(t->wr[i].stmt);
            *out = t->wr[i].stmt;
            return 0;
        }
    }
    size_t cap = 256 + (size_t)(t->ncols + t->npk) * 300;
    char *sql = knit__malloc(cap), *qt = knit__quote(t->name);
    int rc = KNIT_ENOMEM;
    if (sql && qt) {
        size_t off = 0;
        int param = 1;
        if (insert) {
            off += (size_t)snprintf(sql + off, cap - off, "INSERT INTO %s(", qt);
            for (uint32_t i = 0; i < t->npk; i++) {
                char *q = knit__quote(t->pk[i]);
                off += (size_t)snprintf(sql + off, cap - off, "%s%s", i ? ", " : "", q ? q : "");
                knit__free(q);
            }
            for (uint32_t c = 0; c < t->ncols; c++) {
                if (!(mask >> c & 1))
                    continue;
                char *q = knit__quote(t->cols[c]);
                off += (size_t)snprintf(sql + off, cap - off, ", %s", q ? q : "");
                knit__free(q);
            }
            off += (size_t)snprintf(sql + off, cap - off, ") VALUES (");
            for (uint32_t i = 0; i < t->npk; i++)
                off += (size_t)snprintf(sql + off, cap - off, "%s?%d", i ? ", " : "", param++);
            for (uint32_t c = 0; c < t->ncols; c++)
                if (mask >> c & 1)
                    off += (size_t)snprintf(sql + off, cap - off, ", ?%d", param++);
            snprintf(sql + off, cap - off, ")");
        } else {
            off += (size_t)snprintf(sql + off, cap - off, "UPDATE %s SET ", qt);
            param = (int)t->npk + 1;
            int first = 1;
            for (uint32_t c = 0; c < t->ncols; c++) {
                if (!(mask >> c & 1))
                    continue;
                char *q = knit__quote(t->cols[c]);
                off += (size_t)snprintf(sql + off, cap - off, "%s%s = ?%d", first ? "" : ", ",
                                        q ? q : "", param++);
                first = 0;
                knit__free(q);
            }
            off += (size_t)snprintf(sql + off, cap - off, " WHERE ");
            where_keys(sql + off, cap - off, t, 1);
        }
        int slot = (int)(t->wr_next++ % KNIT_MASK_CACHE);
        sqlite3_finalize(t->wr[slot].stmt);
        t->wr[slot].stmt = NULL;
        rc = knit__prepare(k, &t->wr[slot].stmt, sql);
        if (!rc) {
            t->wr[slot].mask = mask;
            t->wr[slot].insert = insert;
            *out = t->wr[slot].stmt;
        }
    }
    knit__free(sql);
    knit__free(qt);
    return rc;
}

/* Writes vals[c] for every c in mask (INSERT or UPDATE). */
static int user_write(knit_t *k, ktable_t *t, const knit_value_t *pk, uint64_t mask, int insert,
                      const knit_value_t *vals)
{
    sqlite3_stmt *st;
    int rc = user_stmt(k, t, mask, insert, &st);
    if (rc)
        return rc;
    for (uint32_t i = 0; i < t->npk; i++)
        knit__bind_value(st, (int)i + 1, &pk[i]);
    int param = (int)t->npk + 1;
    for (uint32_t c = 0; c < t->ncols; c++)
        if (mask >> c & 1)
            knit__bind_value(st, param++, &vals[c]);
    rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (rc != SQLITE_DONE)
        return knit__dberr(k, rc, insert ? "inserting a row" : "updating a row");
    return 0;
}

int knit__user_write_col(knit_t *k, ktable_t *t, const knit_value_t *pk, uint32_t c,
                         const knit_value_t *v)
{
    knit_value_t vals[KNIT_MAX_COLS];
    vals[c] = *v;
    return user_write(k, t, pk, UINT64_C(1) << c, 0, vals);
}

static int user_delete(knit_t *k, ktable_t *t, const knit_value_t *pk)
{
    if (!t->st[ST_USERDEL]) {
        char *qt = knit__quote(t->name);
        size_t cap = 256 + (size_t)t->npk * 300;
        char *sql = knit__malloc(cap);
        int rc = KNIT_ENOMEM;
        if (qt && sql) {
            size_t off = (size_t)snprintf(sql, cap, "DELETE FROM %s WHERE ", qt);
            where_keys(sql + off, cap - off, t, 1);
            rc = knit__prepare(k, &t->st[ST_USERDEL], sql);
        }
        knit__free(qt);
        knit__free(sql);
        if (rc)
            return rc;
    }
    sqlite3_stmt *st = t->st[ST_USERDEL];
    sqlite3_reset(st);
    for (uint32_t i = 0; i < t->npk; i++)
        knit__bind_value(st, (int)i + 1, &pk[i]);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : knit__dberr(k, rc, "deleting a row");
}

/* ---------------------------------------------------------------------- */
/* Row metadata                                                            */

/* The row being merged. */
typedef struct arow_s {
    ktable_t *t;                       /* its table, NULL when none loaded */
    const knit_value_t *pk;            /* key values (batch memory) */
    int has_meta;                      /* a _knit_rows row exists */
    uint32_t ns;                       /* namespace idx */
    uint64_t cl0;                      /* causal length when loaded */
    uint64_t cl;                       /* causal length now */
    kcell_t cells[KNIT_MAX_COLS + 1];  /* stamps: 0 = liveness, c + 1 = column c */
    uint64_t wmask;                    /* columns whose user value must be written */
    knit_value_t vals[KNIT_MAX_COLS];  /* their values (LWW: batch memory; sets: json) */
    char *json[KNIT_MAX_COLS];         /* owned set materializations */
    int dirty;                         /* metadata must be written */
} arow_t;

static int row_load(knit_t *k, ktable_t *t, const knit_value_t *pk, arow_t *r)
{
    int rc;
    if (!t->st[ST_ROWGET]) {
        char sql[1024], where[600];
        size_t off = 0;
        where[0] = 0;
        for (uint32_t i = 0; i < t->npk; i++)
            off += (size_t)snprintf(where + off, sizeof where - off, "%sk%u = ?%u",
                                    i ? " AND " : "", i, i + 1);
        snprintf(sql, sizeof sql, "SELECT ns, cl, cells FROM _knit_rows_%d WHERE %s", t->id,
                 where);
        if ((rc = knit__prepare(k, &t->st[ST_ROWGET], sql)) != 0)
            return rc;
    }
    sqlite3_stmt *st = t->st[ST_ROWGET];
    for (uint32_t i = 0; i < t->npk; i++)
        knit__bind_value(st, (int)i + 1, &pk[i]);
    r->t = t;
    r->pk = pk;
    r->wmask = 0;
    r->dirty = 0;
    memset(r->cells, 0, sizeof r->cells);
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

static void row_release(arow_t *r)
{
    for (uint32_t c = 0; c < KNIT_MAX_COLS; c++) {
        knit__free(r->json[c]);
        r->json[c] = NULL;
    }
    r->t = NULL;
}

static int row_flush(knit_t *k, arow_t *r, uint64_t ver)
{
    ktable_t *t = r->t;
    int rc = 0;
    if (!t || !r->dirty)
        goto out;
    {
        uint8_t buf[(KNIT_MAX_COLS + 1) * KNIT_CELL_MAXBYTES + KNIT_VARINT_MAX];
        if (!t->st[ST_ROWPUT]) {
            char sql[1024], keys[512], qs[512] = "";
            size_t off = 0;
            knit__keylist(keys, sizeof keys, t->npk, "");
            for (uint32_t i = 0; i < t->npk + 4; i++)
                off += (size_t)snprintf(qs + off, sizeof qs - off, "%s?%u", i ? ", " : "", i + 1);
            snprintf(sql, sizeof sql,
                     "INSERT OR REPLACE INTO _knit_rows_%d(%s, ns, cl, ver, cells) VALUES (%s)",
                     t->id, keys, qs);
            if ((rc = knit__prepare(k, &t->st[ST_ROWPUT], sql)) != 0)
                goto out;
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
        if (rc != SQLITE_DONE) {
            rc = knit__dberr(k, rc, "writing row metadata");
            goto out;
        }
        rc = 0;
    }
    {
        int was_live = r->has_meta && knit_cl_live(r->cl0);
        int now_live = knit_cl_live(r->cl);
        if (was_live && !now_live)
            rc = user_delete(k, t, r->pk);
        else if (now_live && !was_live)
            rc = user_write(k, t, r->pk, r->wmask, 1, r->vals);
        else if (now_live && r->wmask)
            rc = user_write(k, t, r->pk, r->wmask, 0, r->vals);
        if (rc == KNIT_ECONSTRAINT)
            rc = knit__err(k, rc, "%s: a merged row violates a constraint of the table (%s)",
                           t->name, knit_errmsg(k));
    }
    t->ev_rows++;
out:
    row_release(r);
    return rc;
}

static int same_key(const ktable_t *t, const knit_value_t *a, const knit_value_t *b)
{
    for (uint32_t i = 0; i < t->npk; i++)
        if (a[i].type != b[i].type || knit_value_cmp(&a[i], &b[i]) != 0)
            return 0;
    return 1;
}

/* A change from a later life of the row: everything written before is of
** an older life and loses to it. */
static void new_life(arow_t *r, uint64_t cl)
{
    r->cl = cl;
    memset(r->cells, 0, sizeof r->cells);
    r->dirty = 1;
}

/* ---------------------------------------------------------------------- */
/* Batch mapping                                                           */

typedef struct bmap_s {
    ktable_t **tables;   /* per batch table: local table or NULL (skip) */
    int32_t **cols;      /* per batch table, per column: local column or -1 */
    uint32_t *ns;        /* per batch ns: local idx */
    uint32_t *sites;     /* per batch site: local idx */
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
/* Merging one change                                                      */

/* Merges an OR-set change into column c of r. */
static int merge_set(knit_t *k, arow_t *r, uint32_t c, const knit_change_t *ch, const bmap_t *m,
                     const knit_batch_t *b, uint64_t ver, knit_apply_stats_t *st)
{
    knit_orset_t in, cur;
    int found = 0, rc;
    kcell_t *cell = &r->cells[c + 1];
    if (ch->value.type != KNIT_BLOB)
        return knit__err(k, KNIT_ECORRUPT, "%s.%s: OR-set change without a state", r->t->name,
                         r->t->cols[c]);
    knit_orset_init(&cur);
    rc = knit_orset_decode(ch->value.u.b.p, ch->value.u.b.n, &in);
    if (rc == KNIT_ENOMEM)
        return rc;
    if (rc)
        return knit__err(k, rc, "%s.%s: malformed OR-set state in batch", r->t->name,
                         r->t->cols[c]);
    if ((rc = knit_orset_remap(&in, m->sites, b->nsites)) != 0) {
        knit_orset_free(&in);
        if (rc == KNIT_ENOMEM)
            return rc;
        return knit__err(k, KNIT_ECORRUPT, "%s.%s: OR-set state names an unknown site",
                         r->t->name, r->t->cols[c]);
    }
    /* A cell never written in this life holds no state of this life. */
    if (cell->hlc && (rc = knit__set_load(k, r->t, r->pk, c, &cur, &found)) != 0) {
        knit_orset_free(&in);
        return rc;
    }
    knit_orset_t before;
    knit_orset_init(&before);
    rc = knit_orset_copy(&before, &cur);
    if (!rc)
        rc = knit_orset_join(&cur, &in);
    if (!rc) {
        int changed = !knit_orset_equal(&before, &cur) || !cell->hlc;
        if (changed) {
            char *json = NULL;
            size_t jn = 0;
            rc = knit__set_save(k, r->t, r->pk, c, &cur);
            if (!rc)
                rc = knit_orset_json(&cur, &json, &jn);
            if (!rc) {
                knit__free(r->json[c]);
                r->json[c] = json;
                r->vals[c].type = KNIT_TEXT;
                r->vals[c].u.b.p = json;
                r->vals[c].u.b.n = jn;
                r->wmask |= UINT64_C(1) << c;
                uint64_t h = ch->hlc ? ch->hlc : 1;
                /* If the merged state holds something the incoming one
                ** lacked, the sender has not seen it: it may be this
                ** replica's own unpushed work, so the cell stays a local
                ** change (pushed, and harmless to push twice).  Otherwise
                ** the cell is simply what the sender sent. */
                int ours = cell->hlc && !knit_orset_equal(&cur, &in);
                if (h > cell->hlc)
                    cell->hlc = h;
                cell->site = ours ? k->site_idx : m->sites[ch->site];
                cell->ver = ver;
                r->dirty = 1;
                st->applied++;
            }
        } else {
            st->known++;
        }
    }
    knit_orset_free(&before);
    knit_orset_free(&cur);
    knit_orset_free(&in);
    return rc;
}

static int merge_change(knit_t *k, arow_t *r, const knit_change_t *ch, int32_t lc,
                        const bmap_t *m, const knit_batch_t *b, uint64_t ver,
                        knit_apply_stats_t *st)
{
    uint32_t site = m->sites[ch->site];
    const knit_site_t *sid = &b->sites[ch->site];
    if (!r->has_meta && !r->dirty) {
        r->ns = m->ns[ch->ns];
    }
    if (ch->cl < r->cl) {
        st->lost++;
        return 0;
    }
    if (ch->col == 0) {
        kcell_t *cell = &r->cells[0];
        if (ch->cl > r->cl) {
            new_life(r, ch->cl);
        } else {
            int cmp = knit_stamp_cmp(ch->hlc, sid, cell->hlc, knit__site_get(k, cell->site));
            if (cell->hlc && cmp <= 0) {
                if (cmp == 0)
                    st->known++;
                else
                    st->lost++;
                return 0;
            }
        }
        cell->hlc = ch->hlc;
        cell->site = site;
        cell->ver = ver;
        r->dirty = 1;
        st->applied++;
        return 0;
    }
    if (ch->cl > r->cl)
        new_life(r, ch->cl);
    if (r->t->orset[lc])
        return merge_set(k, r, (uint32_t)lc, ch, m, b, ver, st);
    kcell_t *cell = &r->cells[lc + 1];
    if (cell->hlc) {
        int cmp = knit_stamp_cmp(ch->hlc, sid, cell->hlc, knit__site_get(k, cell->site));
        if (cmp <= 0) {
            if (cmp == 0)
                st->known++;
            else
                st->lost++;
            return 0;
        }
    }
    cell->hlc = ch->hlc;
    cell->site = site;
    cell->ver = ver;
    r->vals[lc] = ch->value;
    r->wmask |= UINT64_C(1) << lc;
    r->dirty = 1;
    st->applied++;
    return 0;
}

/* Refuses the batch if any stamp is too far ahead; else moves the HLC past
** the newest stamp. */
static int receive_clock(knit_t *k, const knit_batch_t *b)
{
    uint64_t max = 0, now = knit__now(k);
    for (size_t i = 0; i < b->nchanges; i++) {
        uint64_t h = b->changes[i].hlc;
        if (knit_hlc_ms(h) > now + k->max_drift_ms)
            return knit__err(k, KNIT_ECLOCKSKEW,
                             "change %zu is stamped %llu ms in the future (limit %llu ms)", i,
                             (unsigned long long)(knit_hlc_ms(h) - now),
                             (unsigned long long)k->max_drift_ms);
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

static int apply_locked(knit_t *k, const knit_batch_t *b, knit_apply_stats_t *st)
{
    bmap_t m;
    arow_t *r = NULL;
    uint64_t ver = 0;
    int rc;

    if ((rc = knit__stamp_locked(k, NULL)) != 0)
        return rc;
    if ((rc = receive_clock(k, b)) != 0)
        return rc;
    if ((rc = bmap_build(k, b, &m)) != 0)
        goto done;
    if (!(r = knit__calloc(1, sizeof *r))) {
        rc = KNIT_ENOMEM;
        goto done;
    }
    for (size_t i = 0; i < b->nchanges && !rc; i++) {
        const knit_change_t *ch = &b->changes[i];
        if (ch->table >= b->ntables || ch->ns >= b->nns || ch->site >= b->nsites) {
            rc = knit__err(k, KNIT_EINVAL, "change %zu has an index out of range", i);
            break;
        }
        ktable_t *t = m.tables[ch->table];
        int32_t lc = ch->col ? (ch->col <= b->tables[ch->table].ncols
                                    ? m.cols[ch->table][ch->col - 1] : -1)
                             : 0;
        if (!t || lc < 0) {
            st->skipped++;
            continue;
        }
        if (r->t != t || !same_key(t, r->pk, ch->pk)) {
            if (!ver && (rc = knit__next_version(k, &ver)) != 0)
                break;
            if ((rc = row_flush(k, r, ver)) != 0 || (rc = row_load(k, t, ch->pk, r)) != 0)
                break;
        }
        rc = merge_change(k, r, ch, lc, &m, b, ver, st);
    }
    if (!rc && r && r->t)
        rc = row_flush(k, r, ver);
    if (!rc && !k->triggers_off)
        rc = knit__clear_logs(k); /* replica.h design note 4 */
    if (!rc && st->applied)
        k->ev_remote = 1;
done:
    if (r)
        row_release(r);
    knit__free(r);
    bmap_free(b, &m);
    return rc;
}

static int apply(knit_t *k, const knit_batch_t *b, const char *ns, uint64_t seq,
                 knit_apply_stats_t *stats)
{
    knit_apply_stats_t st = {0};
    int rc = knit__begin(k);
    if (rc)
        return rc;
    rc = apply_locked(k, b, &st);
    if (!rc && ns) {
        uint32_t idx;
        sqlite3_stmt *s = NULL;
        rc = knit__ns_intern(k, ns, &idx);
        if (!rc && sqlite3_prepare_v2(k->db,
                                      "UPDATE _knit_ns SET cursor = ? WHERE idx = ?",
                                      -1, &s, NULL) == SQLITE_OK) {
            sqlite3_bind_int64(s, 1, (int64_t)seq);
            sqlite3_bind_int64(s, 2, idx);
            if (sqlite3_step(s) != SQLITE_DONE)
                rc = knit__dberr(k, sqlite3_errcode(k->db), "saving the cursor");
        } else if (!rc) {
            rc = knit__dberr(k, sqlite3_errcode(k->db), "saving the cursor");
        }
        sqlite3_finalize(s);
    }
    if (!rc)
        rc = knit__commit(k);
    if (rc) {
        char saved[sizeof k->errmsg];
        memcpy(saved, k->errmsg, sizeof saved);
        knit__rollback(k);
        memcpy(k->errmsg, saved, sizeof saved);
        for (size_t i = 0; i < k->ntables; i++)
            k->tables[i].ev_rows = 0;
        k->ev_local = k->ev_remote = 0;
        return rc;
    }
    if (stats)
        *stats = st;
    knit__notify(k);
    return 0;
}

int knit_apply(knit_t *k, const knit_batch_t *b, knit_apply_stats_t *stats) /* see knit.h */
{
    return apply(k, b, NULL, 0, stats);
}

int knit_apply_at(knit_t *k, const knit_batch_t *b, const char *ns, uint64_t seq,
                  knit_apply_stats_t *stats) /* see knit.h */
{
    return apply(k, b, ns, seq, stats);
}
