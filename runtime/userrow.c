/*
** userrow.c: reading and writing the application's own rows.
**
** Apply writes each user row once per batch, with every cell the batch
** holds for it (so NOT NULL and CHECK constraints see the whole row), and
** stamp.c rewrites an OR-set column in canonical form.  Statements are built
** per table and column mask and kept in the table cache.
*/
#include "replica.h"
/* ---------------------------------------------------------------------- */
/* SQL text                                                               */

/* "p1" = ?first AND "p2" = ?first+1 ... */
static void where_keys(sqlite3_str *s, const ktable_t *t, int first_param)
{
    for (uint32_t i = 0; i < t->npk; i++)
        sqlite3_str_appendf(s, "%s\"%w\" = ?%d", i ? " AND " : "", t->pk[i], first_param + (int)i);
}

/* k0 = ?1 AND k1 = ?2 ... on knit's own tables. */
void knit__where_meta_keys(sqlite3_str *s, uint32_t npk)
{
    for (uint32_t i = 0; i < npk; i++)
        sqlite3_str_appendf(s, "%sk%u = ?%u", i ? " AND " : "", i, i + 1);
}

int knit__user_get_prepare(knit_t *k, ktable_t *t)
{
    if (t->st[ST_USERGET]) {
        sqlite3_reset(t->st[ST_USERGET]);
        return 0;
    }
    sqlite3_str *s = sqlite3_str_new(k->db);
    sqlite3_str_appendall(s, "SELECT ");
    for (uint32_t c = 0; c < t->ncols; c++)
        sqlite3_str_appendf(s, "%s\"%w\"", c ? ", " : "", t->cols[c]);
    if (!t->ncols)
        sqlite3_str_appendall(s, "1");
    sqlite3_str_appendf(s, " FROM \"%w\" WHERE ", t->name);
    where_keys(s, t, 1);
    return knit__prepare_str(k, &t->st[ST_USERGET], s);
}

/* Finds or builds the statement that writes the columns in mask of one
** user row: an INSERT of key + columns when insert (an upsert, so that a
** row already present without live metadata, one written while capture was
** missing or by an app trigger, is merged rather than refused), else an
** UPDATE. */
static int user_stmt(knit_t *k, ktable_t *t, uint64_t mask, int insert, sqlite3_stmt **out)
{
    for (int i = 0; i < KNIT_MASK_CACHE; i++) {
        if (t->wr[i].stmt && t->wr[i].mask == mask && t->wr[i].insert == insert) {
            sqlite3_reset(t->wr[i].stmt);
            *out = t->wr[i].stmt;
            return 0;
        }
    }
    sqlite3_str *s = sqlite3_str_new(k->db);
    int param = 1;
    if (insert) {
        sqlite3_str_appendf(s, "INSERT INTO \"%w\"(", t->name);
        for (uint32_t i = 0; i < t->npk; i++)
            sqlite3_str_appendf(s, "%s\"%w\"", i ? ", " : "", t->pk[i]);
        for (uint32_t c = 0; c < t->ncols; c++)
            if (mask >> c & 1)
                sqlite3_str_appendf(s, ", \"%w\"", t->cols[c]);
        sqlite3_str_appendall(s, ") VALUES (");
        for (uint32_t i = 0; i < t->npk; i++)
            sqlite3_str_appendf(s, "%s?%d", i ? ", " : "", param++);
        for (uint32_t c = 0; c < t->ncols; c++)
            if (mask >> c & 1)
                sqlite3_str_appendf(s, ", ?%d", param++);
        sqlite3_str_appendall(s, ") ON CONFLICT(");
        for (uint32_t i = 0; i < t->npk; i++)
            sqlite3_str_appendf(s, "%s\"%w\"", i ? ", " : "", t->pk[i]);
        if (mask) {
            sqlite3_str_appendall(s, ") DO UPDATE SET ");
            int first = 1;
            for (uint32_t c = 0; c < t->ncols; c++) {
                if (!(mask >> c & 1))
                    continue;
                sqlite3_str_appendf(s, "%s\"%w\" = excluded.\"%w\"", first ? "" : ", ", t->cols[c],
                                    t->cols[c]);
                first = 0;
            }
        } else {
            sqlite3_str_appendall(s, ") DO NOTHING");
        }
    } else {
        sqlite3_str_appendf(s, "UPDATE \"%w\" SET ", t->name);
        param = (int)t->npk + 1;
        int first = 1;
        for (uint32_t c = 0; c < t->ncols; c++) {
            if (!(mask >> c & 1))
                continue;
            sqlite3_str_appendf(s, "%s\"%w\" = ?%d", first ? "" : ", ", t->cols[c], param++);
            first = 0;
        }
        sqlite3_str_appendall(s, " WHERE ");
        where_keys(s, t, 1);
    }
    int slot = (int)(t->wr_next++ % KNIT_MASK_CACHE);
    sqlite3_finalize(t->wr[slot].stmt);
    t->wr[slot].stmt = NULL;
    int rc = knit__prepare_str(k, &t->wr[slot].stmt, s);
    if (!rc) {
        t->wr[slot].mask = mask;
        t->wr[slot].insert = insert;
        *out = t->wr[slot].stmt;
    }
    return rc;
}

/* Writes vals[c] for every c in mask (INSERT or UPDATE); *changed gets the
** number of rows the statement changed. */
int knit__user_write(knit_t *k, ktable_t *t, const knit_value_t *pk, uint64_t mask, int insert,
                     const knit_value_t *vals, int *changed)
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
    if (changed)
        *changed = sqlite3_changes(k->db);
    if (rc != SQLITE_DONE) {
        /* SQLite's message ("NOT NULL constraint failed: kv.v") is read
        ** before the reset. */
        rc = knit__dberr(k, rc, insert ? "inserting a row" : "updating a row");
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
        return rc;
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return 0;
}

int knit__user_write_col(knit_t *k, ktable_t *t, const knit_value_t *pk, uint32_t c,
                         const knit_value_t *v)
{
    knit_value_t vals[KNIT_MAX_COLS];
    vals[c] = *v;
    return knit__user_write(k, t, pk, UINT64_C(1) << c, 0, vals, NULL);
}

int knit__user_delete(knit_t *k, ktable_t *t, const knit_value_t *pk)
{
    if (!t->st[ST_USERDEL]) {
        sqlite3_str *s = sqlite3_str_new(k->db);
        sqlite3_str_appendf(s, "DELETE FROM \"%w\" WHERE ", t->name);
        where_keys(s, t, 1);
        int rc = knit__prepare_str(k, &t->st[ST_USERDEL], s);
        if (rc)
            return rc;
    }
    sqlite3_stmt *st = t->st[ST_USERDEL];
    sqlite3_reset(st);
    for (uint32_t i = 0; i < t->npk; i++)
        knit__bind_value(st, (int)i + 1, &pk[i]);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_DONE)
        rc = knit__dberr(k, rc, "deleting a row");
    else
        rc = 0;
    sqlite3_reset(st);
    return rc;
}
