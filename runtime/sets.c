/*
** sets.c: OR-set states, one per (row, column), in _knit_sets_<id>.
**
** The state is knit's CRDT for the column (crdt/orset.c): elements with
** their dots and the removed dots.  The user table holds only the canonical
** JSON array of the live elements; stamp.c derives adds and removes from
** what the app wrote, apply.c merges remote states.
*/
#include "replica.h"
/* ---------------------------------------------------------------------- */
/* OR-set states                                                          */

int knit__set_load(knit_t *k, ktable_t *t, const knit_value_t *pk, uint32_t col, knit_orset_t *s,
                   int *found)
{
    int rc;
    if (!t->st[ST_SETGET]) {
        sqlite3_str *q = sqlite3_str_new(NULL);
        sqlite3_str_appendf(q, "SELECT state FROM _knit_sets_%d WHERE ", t->id);
        for (uint32_t i = 0; i < t->npk; i++)
            sqlite3_str_appendf(q, "k%u = ?%u AND ", i, i + 1);
        sqlite3_str_appendf(q, "col = ?%u", t->npk + 1);
        if ((rc = knit__prepare_str(k, &t->st[ST_SETGET], q)) != 0)
            return rc;
    }
    sqlite3_stmt *st = t->st[ST_SETGET];
    for (uint32_t i = 0; i < t->npk; i++)
        knit__bind_value(st, (int)i + 1, &pk[i]);
    sqlite3_bind_int64(st, (int)t->npk + 1, col);
    knit_orset_init(s);
    *found = 0;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *found = 1;
        rc = knit_orset_decode(sqlite3_column_blob(st, 0), (size_t)sqlite3_column_bytes(st, 0), s);
        if (rc)
            rc = knit__err(k, rc, "%s: stored OR-set state of column %s is corrupt", t->name,
                           t->cols[col]);
    } else {
        rc = rc == SQLITE_DONE ? 0 : knit__dberr(k, rc, "reading an OR-set state");
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc;
}

int knit__set_save(knit_t *k, ktable_t *t, const knit_value_t *pk, uint32_t col,
                   const knit_orset_t *s)
{
    uint8_t *blob = NULL;
    size_t n = 0;
    int rc;
    if (!t->st[ST_SETPUT]) {
        sqlite3_str *q = sqlite3_str_new(NULL);
        sqlite3_str_appendf(q, "INSERT OR REPLACE INTO _knit_sets_%d(", t->id);
        knit__keylist_str(q, t->npk, "");
        sqlite3_str_appendall(q, ", col, state) VALUES (");
        for (uint32_t i = 0; i < t->npk + 2; i++)
            sqlite3_str_appendf(q, "%s?%u", i ? ", " : "", i + 1);
        sqlite3_str_appendall(q, ")");
        if ((rc = knit__prepare_str(k, &t->st[ST_SETPUT], q)) != 0)
            return rc;
    }
    if ((rc = knit_orset_encode(s, &blob, &n)) != 0)
        return rc;
    sqlite3_stmt *st = t->st[ST_SETPUT];
    for (uint32_t i = 0; i < t->npk; i++)
        knit__bind_value(st, (int)i + 1, &pk[i]);
    sqlite3_bind_int64(st, (int)t->npk + 1, col);
    sqlite3_bind_blob64(st, (int)t->npk + 2, blob, n, SQLITE_STATIC);
    rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    knit__free(blob);
    return rc == SQLITE_DONE ? 0 : knit__dberr(k, rc, "writing an OR-set state");
}
