/*
** tables.c: the cache of tracked tables (ktable_t) every other runtime file
** works from, rebuilt from _knit_tables whenever SQLite's schema cookie
** moves.  Rebuilding checks each table's capture (capture.c); repairing it
** needs a stamp, so the refresh that repairs is knit__load_tables in
** stamp.c.
*/
#include <string.h>

#include "replica.h"
/* ---------------------------------------------------------------------- */
/* The table cache                                                        */

void knit__free_table(ktable_t *t)
{
    for (int i = 0; i < ST_NSTMT; i++)
        sqlite3_finalize(t->st[i]);
    for (int i = 0; i < KNIT_MASK_CACHE; i++)
        sqlite3_finalize(t->wr[i].stmt);
    for (uint32_t i = 0; i < t->npk; i++)
        knit__free(t->pk[i]);
    for (uint32_t i = 0; i < t->ncols; i++)
        knit__free(t->cols[i]);
    knit__free(t->pk);
    knit__free(t->cols);
    knit__free(t->orset);
    knit__free(t->name);
    knit__free(t->capture_msg);
}

void knit__free_tables(knit_t *k)
{
    for (size_t i = 0; i < k->ntables; i++)
        knit__free_table(&k->tables[i]);
    knit__free(k->tables);
    k->tables = NULL;
    k->ntables = 0;
}

/* Splits a JSON array of strings (as stored in _knit_tables) using SQLite's
** own JSON reader, so names may hold any character. */
static int json_names(knit_t *k, const char *json, char ***out, uint32_t *n)
{
    sqlite3_stmt *st = NULL;
    char **v = NULL;
    uint32_t c = 0;
    int rc = sqlite3_prepare_v2(k->db, "SELECT value FROM json_each(?)", -1, &st, NULL);
    if (rc != SQLITE_OK)
        return knit__dberr(k, rc, "reading _knit_tables");
    sqlite3_bind_text(st, 1, json, -1, SQLITE_STATIC);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        char **nv = knit__realloc(v, (c + 1) * sizeof *v);
        const char *s = (const char *)sqlite3_column_text(st, 0);
        if (!nv || !(nv[c] = knit__strdup(s ? s : ""))) {
            v = nv ? nv : v;
            rc = SQLITE_NOMEM;
            break;
        }
        v = nv;
        c++;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        for (uint32_t i = 0; i < c; i++)
            knit__free(v[i]);
        knit__free(v);
        return rc == SQLITE_NOMEM ? KNIT_ENOMEM : knit__dberr(k, rc, "reading _knit_tables");
    }
    *out = v;
    *n = c;
    return 0;
}

/* Design note 4 of replica.h: knit's connection runs without triggers
** unless a tracked table has triggers of the application's own, which must
** fire on applied changes too.  Changing the setting expires prepared
** statements, so it is only touched when the answer changes. */
static int choose_triggers(knit_t *k)
{
    sqlite3_stmt *st = NULL;
    int app_triggers = 0, rc;
    rc = sqlite3_prepare_v2(k->db,
                            "SELECT count(*) FROM sqlite_schema AS s JOIN _knit_tables AS t"
                            " ON s.tbl_name = t.name WHERE s.type = 'trigger'"
                            " AND s.name NOT LIKE '\\_knit\\_%' ESCAPE '\\'",
                            -1, &st, NULL);
    if (rc != SQLITE_OK)
        return knit__dberr(k, rc, "reading triggers");
    if (sqlite3_step(st) == SQLITE_ROW)
        app_triggers = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    int off = app_triggers == 0 && !k->readonly;
    if (off != k->triggers_off) {
        int now = -1;
        sqlite3_db_config(k->db, SQLITE_DBCONFIG_ENABLE_TRIGGER, !off, &now);
        k->triggers_off = now == 0;
    }
    return 0;
}

/* Rebuilds the cache if the schema cookie moved (*moved = 1), checking
** every table's capture (design note 1). */
int knit__tables_refresh(knit_t *k, int *moved)
{
    sqlite3_stmt *st = NULL;
    int cookie = (int)knit__fixed_int(k, KS_SCHEMA_VERSION, -1), rc;

    *moved = 0;
    if (cookie == k->schema_cookie && cookie != -1)
        return 0;

    knit__free_tables(k);
    rc = sqlite3_prepare_v2(k->db, "SELECT name, id, pk, cols, kinds FROM _knit_tables ORDER BY id",
                            -1, &st, NULL);
    if (rc != SQLITE_OK)
        return knit__dberr(k, rc, "reading _knit_tables");
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        ktable_t t;
        char **kinds = NULL;
        uint32_t nk = 0;
        memset(&t, 0, sizeof t);
        t.name = knit__strdup((const char *)sqlite3_column_text(st, 0));
        t.id = sqlite3_column_int(st, 1);
        int r2 = t.name ? 0 : KNIT_ENOMEM;
        if (!r2)
            r2 = json_names(k, (const char *)sqlite3_column_text(st, 2), &t.pk, &t.npk);
        if (!r2)
            r2 = json_names(k, (const char *)sqlite3_column_text(st, 3), &t.cols, &t.ncols);
        if (!r2)
            r2 = json_names(k, (const char *)sqlite3_column_text(st, 4), &kinds, &nk);
        if (!r2 && (nk != t.ncols || t.npk == 0 || t.ncols > KNIT_MAX_COLS))
            r2 = knit__err(k, KNIT_ECORRUPT, "_knit_tables entry for %s is inconsistent", t.name);
        if (!r2 && !(t.orset = knit__calloc(t.ncols ? t.ncols : 1, 1)))
            r2 = KNIT_ENOMEM;
        t.nscol = -1;
        for (uint32_t i = 0; !r2 && i < t.ncols; i++) {
            if (strcmp(kinds[i], "ns") == 0)
                t.nscol = (int)i; /* an LWW column that also selects the namespace */
            t.orset[i] = strcmp(kinds[i], "orset") == 0;
            if (t.orset[i])
                t.setmask |= UINT64_C(1) << i;
        }
        for (uint32_t i = 0; i < nk; i++)
            knit__free(kinds[i]);
        knit__free(kinds);
        ktable_t *nt = r2 ? NULL : knit__realloc(k->tables, (k->ntables + 1) * sizeof *nt);
        if (!nt) {
            knit__free_table(&t);
            sqlite3_finalize(st);
            knit__free_tables(k);
            return r2 ? r2 : KNIT_ENOMEM;
        }
        k->tables = nt;
        k->tables[k->ntables++] = t;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return knit__dberr(k, rc, "reading _knit_tables");
    if ((rc = choose_triggers(k)) != 0)
        return rc;
    for (size_t i = 0; i < k->ntables; i++) {
        if ((rc = knit__capture_check(k, &k->tables[i])) != 0) {
            knit__free_tables(k);
            return rc;
        }
    }
    k->schema_cookie = cookie;
    *moved = 1;
    return 0;
}

ktable_t *knit__table(knit_t *k, const char *name)
{
    for (size_t i = 0; i < k->ntables; i++)
        if (strcmp(k->tables[i].name, name) == 0)
            return &k->tables[i];
    return NULL;
}
