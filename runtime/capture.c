/*
** capture.c: reading a user table's schema, the capture triggers, and
** checking and repairing them.
**
** The triggers are plain SQL: they only append (op, changed-column mask,
** key, the commit's wall time) to _knit_log_<id>.  OR-set columns get BEFORE triggers that refuse
*anything
** but a JSON array of scalars, rolling the writer's transaction back.
**
** Design notes
**   1. Capture is checked whenever the schema cookie moves (tables.c):
**      every trigger must be, byte for byte, the one this knit installs (its
**      text carries KNIT_CAPTURE_VERSION), and the log must have the current
**      columns.  SQLite's table rebuild (CREATE new, INSERT ... SELECT, DROP
**      old, RENAME new) drops the triggers with the old table, and an older
**      knit left older ones.  Both are repaired by the next stamp, which
**      folds what was logged, reinstalls the triggers, then logs what the
**      table and its metadata disagree on: rows without live metadata as
**      inserts, live metadata without a row as deletes.  Updates made while
**      capture was missing leave no trace (knit stores no values) and are
**      not found.
**   2. A table that lost its key or a tracked column, or no longer exists,
**      cannot be repaired: rows are identified by key and cells by column
**      name.  Stamping refuses it (KNIT_ESCHEMA, naming the table and the
**      fix) until the schema is restored, rather than sync part of it.
*/
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "replica.h"

/* What a capture trigger logs besides (op, mask, key): the commit's wall
** time, in pure SQL so any connection computes it, as julianday() (days,
** REAL): converting it to milliseconds in the trigger costs more per write
** than the stamp's C code does (SQLite 3.40 has no unixepoch('subsec')
** either).  The hlc column is NULL since capture version 3: the stamp
** raises each write above the cells its row holds instead (stamp.c design
** note 1), which is what the HLC the writer saw was logged for. */
#define CAPTURE_COLS "at, hlc"
#define CAPTURE_VALS "julianday(), NULL"

/* ---------------------------------------------------------------------- */
/* Schema inspection                                                      */

#define MAX_TABLE_COLS 2000

void knit__tinfo_free(ktinfo_t *ti)
{
    for (int i = 0; i < ti->n; i++) {
        knit__free(ti->c[i].name);
        knit__free(ti->c[i].type);
    }
    knit__free(ti->c);
    memset(ti, 0, sizeof *ti);
}

static int ci_equal(const char *a, const char *b)
{
    return sqlite3_stricmp(a, b) == 0;
}

/* Prepares sql with ?1 bound to name (the pragma functions take the table
** name as an argument, so no name is ever quoted into the text). */
static int prepare_named(knit_t *k, sqlite3_stmt **st, const char *sql, const char *name)
{
    int rc = sqlite3_prepare_v2(k->db, sql, -1, st, NULL);
    if (rc != SQLITE_OK)
        return rc;
    return sqlite3_bind_text(*st, 1, name, -1, SQLITE_STATIC);
}

/* Reads the table's columns and checks everything merging depends on. */
int knit__inspect_table(knit_t *k, const char *name, ktinfo_t *ti)
{
    sqlite3_stmt *st = NULL;
    int rc, without_rowid = 0;
    memset(ti, 0, sizeof *ti);

    rc = prepare_named(k, &st, "SELECT type, sql FROM sqlite_schema WHERE name = ?1", name);
    if (rc != SQLITE_OK) {
        sqlite3_finalize(st);
        return knit__dberr(k, rc, "reading the schema");
    }
    rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        sqlite3_finalize(st);
        return knit__err(k, KNIT_ENOTFOUND, "no table named %s", name);
    }
    const char *type = (const char *)sqlite3_column_text(st, 0);
    const char *ddl = (const char *)sqlite3_column_text(st, 1);
    if (!type || strcmp(type, "table") != 0 || !ddl || sqlite3_strnicmp(ddl, "CREATE TABLE", 12)) {
        sqlite3_finalize(st);
        return knit__err(k, KNIT_ESCHEMA,
                         "%s is not an ordinary table (views and virtual tables "
                         "cannot be tracked)",
                         name);
    }
    if (sqlite3_strlike("%WITHOUT%ROWID%", ddl, 0) == 0)
        without_rowid = 1;
    if (sqlite3_strlike("%AUTOINCREMENT%", ddl, 0) == 0) {
        sqlite3_finalize(st);
        return knit__err(k, KNIT_ESCHEMA,
                         "%s uses AUTOINCREMENT: its keys are assigned per replica and would "
                         "collide; use a globally unique key (a UUID, or a natural key)",
                         name);
    }
    sqlite3_finalize(st);

    rc = prepare_named(k, &st,
                       "SELECT name, type, \"notnull\", dflt_value, pk, hidden"
                       " FROM pragma_table_xinfo(?1)",
                       name);
    if (rc != SQLITE_OK) {
        sqlite3_finalize(st);
        return knit__dberr(k, rc, "reading the table's columns");
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        kcolinfo_t *nc;
        if (ti->n >= MAX_TABLE_COLS || !(nc = knit__realloc(ti->c, (ti->n + 1) * sizeof *nc))) {
            rc = SQLITE_NOMEM;
            break;
        }
        ti->c = nc;
        kcolinfo_t *c = &ti->c[ti->n];
        const char *cn = (const char *)sqlite3_column_text(st, 0);
        const char *ct = (const char *)sqlite3_column_text(st, 1);
        c->name = knit__strdup(cn ? cn : "");
        c->type = knit__strdup(ct ? ct : "");
        c->notnull = sqlite3_column_int(st, 2);
        c->has_dflt = sqlite3_column_type(st, 3) != SQLITE_NULL;
        c->pk = sqlite3_column_int(st, 4);
        c->generated = sqlite3_column_int(st, 5) >= 2;
        ti->n++;
        if (!c->name || !c->type) {
            rc = SQLITE_NOMEM;
            break;
        }
        if (c->pk > ti->npk)
            ti->npk = c->pk;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        knit__tinfo_free(ti);
        return rc == SQLITE_NOMEM ? KNIT_ENOMEM : knit__dberr(k, rc, "reading the columns");
    }
    if (ti->npk == 0) {
        knit__tinfo_free(ti);
        return knit__err(k, KNIT_ESCHEMA,
                         "%s has no PRIMARY KEY: rows would be keyed by rowids that each replica "
                         "assigns on its own; declare a primary key (e.g. id TEXT PRIMARY KEY "
                         "holding a UUID, or a natural key)",
                         name);
    }
    if (ti->npk > KNIT_MAX_PK) {
        knit__tinfo_free(ti);
        return knit__err(k, KNIT_ESCHEMA, "%s's primary key has more than %d columns", name,
                         KNIT_MAX_PK);
    }
    if (ti->npk == 1 && !without_rowid) {
        for (int i = 0; i < ti->n; i++)
            if (ti->c[i].pk == 1 && ci_equal(ti->c[i].type, "INTEGER"))
                ti->rowid_pk = 1;
    }
    if (ti->rowid_pk) {
        knit__tinfo_free(ti);
        return knit__err(k, KNIT_ESCHEMA,
                         "%s's key is INTEGER PRIMARY KEY, an alias of the rowid that SQLite "
                         "assigns per replica when a row is inserted without one; use a TEXT or "
                         "BLOB key (e.g. a UUID), or declare it \"INT PRIMARY KEY\" if you assign "
                         "globally unique integers yourself",
                         name);
    }
    if (ti->n - ti->npk > KNIT_MAX_COLS + 0) {
        int tracked = 0;
        for (int i = 0; i < ti->n; i++)
            tracked += !ti->c[i].pk && !ti->c[i].generated;
        if (tracked > KNIT_MAX_COLS) {
            knit__tinfo_free(ti);
            return knit__err(k, KNIT_ESCHEMA, "%s has %d non-key columns; knit tracks at most %d",
                             name, tracked, KNIT_MAX_COLS);
        }
    }

    /* UNIQUE constraints other than the key: two replicas can each insert a
    ** row with the same value, and no merge could keep both. */
    char *pkindex = NULL;
    rc = prepare_named(k, &st, "SELECT name, \"unique\", origin FROM pragma_index_list(?1)", name);
    while (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) {
        const char *iname = (const char *)sqlite3_column_text(st, 0);
        int unique = sqlite3_column_int(st, 1);
        const char *origin = (const char *)sqlite3_column_text(st, 2);
        if (origin && strcmp(origin, "pk") == 0) {
            knit__free(pkindex);
            if (!(pkindex = knit__strdup(iname ? iname : "")))
                rc = SQLITE_NOMEM;
        } else if (unique) {
            knit__err(k, KNIT_ESCHEMA,
                      "%s has a UNIQUE constraint or index (%s) besides its primary key: rows "
                      "inserted on two replicas could both be valid alone and conflict when "
                      "merged; drop it, or make the unique columns the primary key",
                      name, iname ? iname : "?");
            rc = SQLITE_CONSTRAINT;
        }
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_OK) {
        knit__free(pkindex);
        knit__tinfo_free(ti);
        return rc == SQLITE_CONSTRAINT ? KNIT_ESCHEMA
               : rc == SQLITE_NOMEM    ? KNIT_ENOMEM
                                       : knit__dberr(k, rc, "reading indexes");
    }
    /* Key collation must be BINARY: knit's metadata keys rows byte-exactly. */
    if ((pkindex && pkindex[0]) || without_rowid) {
        rc = prepare_named(k, &st, "SELECT coll, key FROM pragma_index_xinfo(?1)",
                           pkindex && pkindex[0] ? pkindex : name);
        while (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) {
            const char *coll = (const char *)sqlite3_column_text(st, 0);
            if (sqlite3_column_int(st, 1) && coll && !ci_equal(coll, "BINARY")) {
                knit__err(k, KNIT_ESCHEMA,
                          "%s's primary key uses collation %s; knit needs BINARY keys so that "
                          "every replica agrees which rows are the same",
                          name, coll);
                rc = SQLITE_CONSTRAINT;
            }
        }
        sqlite3_finalize(st);
        if (rc == SQLITE_CONSTRAINT) {
            knit__free(pkindex);
            knit__tinfo_free(ti);
            return KNIT_ESCHEMA;
        }
    }
    knit__free(pkindex);
    /* Foreign keys: a delete on one replica and an insert of a child on
    ** another are each valid and together violate the constraint. */
    rc = prepare_named(k, &st, "SELECT 1 FROM pragma_foreign_key_list(?1)", name);
    if (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) {
        sqlite3_finalize(st);
        knit__tinfo_free(ti);
        return knit__err(k, KNIT_ESCHEMA,
                         "%s declares FOREIGN KEY constraints: a parent deleted on one replica "
                         "while a child is inserted on another cannot be merged into a state "
                         "that satisfies them; drop the constraint and treat dangling "
                         "references in the application",
                         name);
    }
    sqlite3_finalize(st);
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Capture triggers                                                       */

#define MAX_TRIGGERS (4 + 2 * KNIT_MAX_COLS)

/* The capture of one table: every trigger's name and its CREATE TRIGGER
** text exactly as sqlite_schema stores it. */
typedef struct kcapture_s {
    struct {
        char *name; /* trigger name (sqlite3_free) */
        char *sql;  /* CREATE TRIGGER statement (sqlite3_free) */
    } trig[MAX_TRIGGERS];
    int n; /* triggers */
} kcapture_t;

static void capture_free(kcapture_t *c)
{
    for (int i = 0; i < c->n; i++) {
        sqlite3_free(c->trig[i].name);
        sqlite3_free(c->trig[i].sql);
    }
    c->n = 0;
}

/* Adds the trigger named by fmt; its text is s (consumed). */
#ifdef __GNUC__
__attribute__((format(printf, 3, 4)))
#endif
static int
capture_add(kcapture_t *c, sqlite3_str *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *name = sqlite3_vmprintf(fmt, ap);
    va_end(ap);
    char *sql = knit__str_done(s);
    if (!name || !sql || c->n >= MAX_TRIGGERS) {
        sqlite3_free(name);
        sqlite3_free(sql);
        return KNIT_ENOMEM;
    }
    c->trig[c->n].name = name;
    c->trig[c->n].sql = sql;
    c->n++;
    return 0;
}

/* "INSERT INTO _knit_log_<id>(op, mask, k0.., at, hlc) " */
void knit__log_insert(sqlite3_str *s, const ktable_t *t)
{
    sqlite3_str_appendf(s, "INSERT INTO _knit_log_%d(op, mask, ", t->id);
    knit__keylist_str(s, t->npk, "");
    sqlite3_str_appendall(s, ", " CAPTURE_COLS ") ");
}

/* "OLD."p1" IS NEW."p1" AND ..." */
static void keys_same(sqlite3_str *s, const ktable_t *t)
{
    for (uint32_t i = 0; i < t->npk; i++)
        sqlite3_str_appendf(s, "%sOLD.\"%w\" IS NEW.\"%w\"", i ? " AND " : "", t->pk[i], t->pk[i]);
}

/* ""p1", "p2"" (the key columns), then ", "c1", ..." when cols: the column
** list of an UPDATE OF trigger, which SQLite runs only for an UPDATE (or an
** upsert's DO UPDATE) that sets one of them. */
static void update_of(sqlite3_str *s, const ktable_t *t, int cols)
{
    for (uint32_t i = 0; i < t->npk; i++)
        sqlite3_str_appendf(s, "%s\"%w\"", i ? ", " : "", t->pk[i]);
    for (uint32_t i = 0; cols && i < t->ncols; i++)
        sqlite3_str_appendf(s, ", \"%w\"", t->cols[i]);
}

/* Builds the text of every trigger of t.  A column's affinity decides
** whether its change test must also compare storage classes: only a column
** without affinity can hold both 1 and 1.0, which `IS NOT` calls equal. */
static int build_capture(const ktable_t *t, const ktinfo_t *ti, kcapture_t *c)
{
    int id = t->id, rc = 0;
    sqlite3_str *s;
    c->n = 0;

    /* INSERT: every column is written. */
    s = sqlite3_str_new(NULL);
    sqlite3_str_appendf(s,
                        "CREATE TRIGGER _knit_ins_%d AFTER INSERT ON \"%w\" BEGIN "
                        "/* knit capture %d */ ",
                        id, t->name, KNIT_CAPTURE_VERSION);
    knit__log_insert(s, t);
    sqlite3_str_appendall(s, "VALUES (1, -1, ");
    knit__keyrefs(s, t, "NEW");
    sqlite3_str_appendall(s, ", " CAPTURE_VALS "); END");
    rc = capture_add(c, s, "_knit_ins_%d", id);

    /* UPDATE keeping the key: log the mask of changed columns, if any (the
    ** clock is read only for a row that passes WHERE m <> 0).  Only an
    ** UPDATE that sets a key or tracked column runs it. */
    s = sqlite3_str_new(NULL);
    sqlite3_str_appendf(s, "CREATE TRIGGER _knit_upd_%d AFTER UPDATE OF ", id);
    update_of(s, t, 1);
    sqlite3_str_appendf(s, " ON \"%w\" WHEN ", t->name);
    keys_same(s, t);
    sqlite3_str_appendf(s, " BEGIN /* knit capture %d */ ", KNIT_CAPTURE_VERSION);
    knit__log_insert(s, t);
    sqlite3_str_appendall(s, "SELECT 2, m, ");
    knit__keyrefs(s, t, "NEW");
    sqlite3_str_appendall(s, ", " CAPTURE_VALS " FROM (SELECT 0");
    for (uint32_t i = 0; i < t->ncols; i++) {
        int noaff = 1;
        for (int j = 0; j < ti->n; j++)
            if (strcmp(ti->c[j].name, t->cols[i]) == 0)
                noaff = ti->c[j].type[0] == 0 || sqlite3_strlike("%BLOB%", ti->c[j].type, 0) == 0;
        sqlite3_str_appendf(s, " | ((OLD.\"%w\" IS NOT NEW.\"%w\" COLLATE BINARY", t->cols[i],
                            t->cols[i]);
        if (noaff)
            sqlite3_str_appendf(s, " OR typeof(OLD.\"%w\") <> typeof(NEW.\"%w\")", t->cols[i],
                                t->cols[i]);
        sqlite3_str_appendf(s, ") << %u)", i);
    }
    sqlite3_str_appendall(s, " AS m) WHERE m <> 0; END");
    if (!rc)
        rc = capture_add(c, s, "_knit_upd_%d", id);
    else
        sqlite3_free(sqlite3_str_finish(s));

    /* UPDATE changing the key: the old row is deleted, a new one inserted.
    ** Only an UPDATE that sets a key column runs it. */
    s = sqlite3_str_new(NULL);
    sqlite3_str_appendf(s, "CREATE TRIGGER _knit_updk_%d AFTER UPDATE OF ", id);
    update_of(s, t, 0);
    sqlite3_str_appendf(s, " ON \"%w\" WHEN NOT (", t->name);
    keys_same(s, t);
    sqlite3_str_appendf(s, ") BEGIN /* knit capture %d */ ", KNIT_CAPTURE_VERSION);
    knit__log_insert(s, t);
    sqlite3_str_appendall(s, "VALUES (3, 0, ");
    knit__keyrefs(s, t, "OLD");
    sqlite3_str_appendall(s, ", " CAPTURE_VALS "); ");
    knit__log_insert(s, t);
    sqlite3_str_appendall(s, "VALUES (1, -1, ");
    knit__keyrefs(s, t, "NEW");
    sqlite3_str_appendall(s, ", " CAPTURE_VALS "); END");
    if (!rc)
        rc = capture_add(c, s, "_knit_updk_%d", id);
    else
        sqlite3_free(sqlite3_str_finish(s));

    /* DELETE */
    s = sqlite3_str_new(NULL);
    sqlite3_str_appendf(s,
                        "CREATE TRIGGER _knit_del_%d AFTER DELETE ON \"%w\" BEGIN "
                        "/* knit capture %d */ ",
                        id, t->name, KNIT_CAPTURE_VERSION);
    knit__log_insert(s, t);
    sqlite3_str_appendall(s, "VALUES (3, 0, ");
    knit__keyrefs(s, t, "OLD");
    sqlite3_str_appendall(s, ", " CAPTURE_VALS "); END");
    if (!rc)
        rc = capture_add(c, s, "_knit_del_%d", id);
    else
        sqlite3_free(sqlite3_str_finish(s));

    /* OR-set columns accept only a JSON array of scalars (or NULL = []).
    ** Names: _knit_setu<i>_<id> for UPDATE, _knit_set<i>_<id> for INSERT. */
    for (uint32_t i = 0; i < t->ncols && !rc; i++) {
        if (!t->orset[i])
            continue;
        char *msg = sqlite3_mprintf("knit: %s.%s is an OR-set column: write a JSON array of "
                                    "strings, numbers or nulls, e.g. '[\"a\",\"b\"]'",
                                    t->name, t->cols[i]);
        if (!msg)
            rc = KNIT_ENOMEM;
        for (int ins = 0; ins < 2 && !rc; ins++) {
            s = sqlite3_str_new(NULL);
            if (ins)
                sqlite3_str_appendf(s, "CREATE TRIGGER _knit_set%u_%d BEFORE INSERT ON \"%w\"", i,
                                    id, t->name);
            else
                sqlite3_str_appendf(s,
                                    "CREATE TRIGGER _knit_setu%u_%d BEFORE UPDATE OF \"%w\" "
                                    "ON \"%w\"",
                                    i, id, t->cols[i], t->name);
            sqlite3_str_appendf(s,
                                " WHEN NEW.\"%w\" IS NOT NULL AND (typeof(NEW.\"%w\") <> 'text'"
                                " OR NOT json_valid(NEW.\"%w\") OR json_type(NEW.\"%w\") <> 'array'"
                                " OR EXISTS (SELECT 1 FROM json_each(NEW.\"%w\") WHERE type NOT IN"
                                " ('null', 'integer', 'real', 'text'))) BEGIN SELECT"
                                " RAISE(ROLLBACK, %Q); END",
                                t->cols[i], t->cols[i], t->cols[i], t->cols[i], t->cols[i], msg);
            rc = ins ? capture_add(c, s, "_knit_set%u_%d", i, id)
                     : capture_add(c, s, "_knit_setu%u_%d", i, id);
        }
        sqlite3_free(msg);
    }
    if (rc)
        capture_free(c);
    return rc;
}

/* Drops every capture trigger of table id t->id. */
static int drop_triggers(knit_t *k, const ktable_t *t)
{
    sqlite3_stmt *st = NULL;
    sqlite3_str *s = sqlite3_str_new(NULL);
    int rc = sqlite3_prepare_v2(k->db,
                                "SELECT name FROM sqlite_schema WHERE type = 'trigger'"
                                " AND name GLOB '_knit_*_' || ?1",
                                -1, &st, NULL);
    if (rc != SQLITE_OK) {
        sqlite3_free(sqlite3_str_finish(s));
        return knit__dberr(k, rc, "reading triggers");
    }
    sqlite3_bind_int(st, 1, t->id);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        sqlite3_str_appendf(s, "DROP TRIGGER \"%w\";", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        sqlite3_free(sqlite3_str_finish(s));
        return knit__dberr(k, rc, "reading triggers");
    }
    if (sqlite3_str_length(s) == 0) {
        sqlite3_free(sqlite3_str_finish(s));
        return 0;
    }
    return knit__exec_str(k, s);
}

/* Installs every trigger of t, replacing the old ones. */
int knit__create_triggers(knit_t *k, const ktable_t *t, const ktinfo_t *ti)
{
    kcapture_t c;
    int rc = build_capture(t, ti, &c);
    if (rc)
        return knit__err(k, rc, "out of memory building the capture triggers of %s", t->name);
    rc = drop_triggers(k, t);
    for (int i = 0; i < c.n && !rc; i++)
        rc = knit__exec(k, c.trig[i].sql);
    capture_free(&c);
    return rc;
}

/* ---------------------------------------------------------------------- */
/* Checking and repairing capture (design notes 1 and 2)                  */

/* Sets t's capture state, with message m (sqlite3_mprintf'd, consumed;
** NULL for OK). */
static int set_capture(ktable_t *t, int state, char *m)
{
    knit__free(t->capture_msg);
    t->capture_msg = NULL;
    t->capture = state;
    if (state != KNIT_CAPTURE_OK && !(t->capture_msg = m ? knit__strdup(m) : NULL)) {
        sqlite3_free(m);
        return KNIT_ENOMEM;
    }
    sqlite3_free(m);
    return 0;
}

/* Whether _knit_log_<id> has column name. */
static int log_has(knit_t *k, const ktable_t *t, const char *col, int *yes)
{
    sqlite3_stmt *st = NULL;
    char name[48];
    snprintf(name, sizeof name, "_knit_log_%d", t->id);
    int rc = sqlite3_prepare_v2(k->db, "SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2", -1,
                                &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, col, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
        *yes = rc == SQLITE_ROW;
        rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
    }
    sqlite3_finalize(st);
    return rc == SQLITE_OK ? 0 : knit__dberr(k, rc, "reading the capture log");
}

/* "a", "b" (the key, for messages) */
static char *key_names(const ktable_t *t)
{
    sqlite3_str *s = sqlite3_str_new(NULL);
    for (uint32_t i = 0; i < t->npk; i++)
        sqlite3_str_appendf(s, "%s%s", i ? ", " : "", t->pk[i]);
    return knit__str_done(s);
}

/* Sets t->capture from the schema as it is now. */
int knit__capture_check(knit_t *k, ktable_t *t)
{
    ktinfo_t ti;
    kcapture_t c;
    char saved[sizeof k->errmsg];
    int rc;

    memcpy(saved, k->errmsg, sizeof saved);
    rc = knit__inspect_table(k, t->name, &ti);
    if (rc == KNIT_ENOTFOUND || rc == KNIT_ESCHEMA) {
        char *m = rc == KNIT_ENOTFOUND
                      ? sqlite3_mprintf("tracked table %s no longer exists (dropped, or renamed "
                                        "with ALTER TABLE ... RENAME TO): knit cannot follow a "
                                        "renamed table or stop tracking one; rename it back or "
                                        "recreate it with its key and tracked columns",
                                        t->name)
                      : sqlite3_mprintf("tracked table %s changed so that knit cannot track it "
                                        "any more (%s); restore its previous schema",
                                        t->name, k->errmsg);
        memcpy(k->errmsg, saved, sizeof saved);
        return set_capture(t, KNIT_CAPTURE_BROKEN, m);
    }
    if (rc)
        return rc;
    memcpy(k->errmsg, saved, sizeof saved);

    /* The key, column by column in key order. */
    int same_key = ti.npk == (int)t->npk;
    for (int j = 0; j < ti.n && same_key; j++)
        if (ti.c[j].pk && strcmp(ti.c[j].name, t->pk[ti.c[j].pk - 1]) != 0)
            same_key = 0;
    if (!same_key) {
        char *keys = key_names(t);
        knit__tinfo_free(&ti);
        rc = set_capture(t, KNIT_CAPTURE_BROKEN,
                         sqlite3_mprintf("%s's primary key changed since it was tracked: knit "
                                         "identifies synced rows by their key and cannot re-key "
                                         "them; restore PRIMARY KEY(%s)",
                                         t->name, keys ? keys : "?"));
        sqlite3_free(keys);
        return rc;
    }
    /* Every tracked column, still an ordinary column. */
    for (uint32_t i = 0; i < t->ncols; i++) {
        int found = 0;
        for (int j = 0; j < ti.n; j++)
            if (!ti.c[j].pk && !ti.c[j].generated && strcmp(ti.c[j].name, t->cols[i]) == 0)
                found = 1;
        if (!found) {
            knit__tinfo_free(&ti);
            return set_capture(
                t, KNIT_CAPTURE_BROKEN,
                sqlite3_mprintf("%s.%s is tracked and no longer exists (dropped or renamed): "
                                "knit identifies synced cells by column name and cannot drop or "
                                "rename a tracked column; rename it back (ALTER TABLE ... RENAME "
                                "COLUMN ... TO \"%w\") or add it again (ALTER TABLE ... ADD "
                                "COLUMN \"%w\"); to rename a column, add the new one, copy the "
                                "values with UPDATE and keep the old one",
                                t->name, t->cols[i], t->cols[i], t->cols[i]));
        }
    }

    /* The triggers, byte for byte, and the log's columns. */
    rc = build_capture(t, &ti, &c);
    knit__tinfo_free(&ti);
    if (rc)
        return rc;
    sqlite3_stmt *st = NULL;
    int missing = 0, outdated = 0;
    rc = sqlite3_prepare_v2(k->db,
                            "SELECT sql FROM sqlite_schema WHERE type = 'trigger' AND "
                            "name = ?1",
                            -1, &st, NULL);
    for (int i = 0; i < c.n && rc == SQLITE_OK; i++) {
        sqlite3_bind_text(st, 1, c.trig[i].name, -1, SQLITE_STATIC);
        int step = sqlite3_step(st);
        if (step == SQLITE_ROW) {
            const char *sql = (const char *)sqlite3_column_text(st, 0);
            outdated += !sql || strcmp(sql, c.trig[i].sql) != 0;
        } else if (step == SQLITE_DONE) {
            missing++;
        } else {
            rc = step;
        }
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    capture_free(&c);
    if (rc != SQLITE_OK)
        return knit__dberr(k, rc, "reading triggers");
    int has_at = 0, has_hlc = 0;
    if ((rc = log_has(k, t, "at", &has_at)) != 0 || (rc = log_has(k, t, "hlc", &has_hlc)) != 0)
        return rc;
    outdated += !has_at || !has_hlc;
    if (missing)
        return set_capture(t, KNIT_CAPTURE_REPAIR,
                           sqlite3_mprintf("%d capture trigger(s) of %s are missing (a table "
                                           "rebuild drops them): its writes are not recorded "
                                           "until knit reinstalls them, which the next stamp "
                                           "does",
                                           missing, t->name));
    if (outdated)
        return set_capture(t, KNIT_CAPTURE_REPAIR,
                           sqlite3_mprintf("the capture of %s is not the one this knit installs "
                                           "(capture version %d): the next stamp reinstalls it",
                                           t->name, KNIT_CAPTURE_VERSION));
    return set_capture(t, KNIT_CAPTURE_OK, NULL);
}

int knit__capture_begin(knit_t *k)
{
    for (size_t i = 0; i < k->ntables; i++)
        if (k->tables[i].capture == KNIT_CAPTURE_BROKEN)
            return knit__err(k, KNIT_ESCHEMA, "%s",
                             k->tables[i].capture_msg ? k->tables[i].capture_msg : "capture");
    for (size_t i = 0; i < k->ntables; i++) {
        ktable_t *t = &k->tables[i];
        int has_at = 0, has_hlc = 0, rc;
        if (t->capture != KNIT_CAPTURE_REPAIR)
            continue;
        /* A log made before capture version 2: its rows have no wall time
        ** and are stamped with the tick (stamp.c). */
        if ((rc = log_has(k, t, "at", &has_at)) != 0 || (rc = log_has(k, t, "hlc", &has_hlc)) != 0)
            return rc;
        if (!has_at || !has_hlc) {
            sqlite3_str *s = sqlite3_str_new(NULL);
            if (!has_at)
                sqlite3_str_appendf(s, "ALTER TABLE _knit_log_%d ADD COLUMN at INTEGER;", t->id);
            if (!has_hlc)
                sqlite3_str_appendf(s, "ALTER TABLE _knit_log_%d ADD COLUMN hlc INTEGER;", t->id);
            if ((rc = knit__exec_str(k, s)) != 0)
                return rc;
            sqlite3_finalize(t->st[ST_STAMP]);
            t->st[ST_STAMP] = NULL;
            k->schema_cookie = -1; /* re-check after this transaction, whatever its end */
        }
    }
    return 0;
}

/* Logs what t and its metadata disagree on (design note 1), with no wall
** time (they are stamped with the tick). */
static int log_missed(knit_t *k, const ktable_t *t, size_t *logged)
{
    sqlite3_str *s = sqlite3_str_new(NULL);
    int rc;
    /* Rows without live metadata: inserts (NULL keys cannot be synced). */
    knit__log_insert(s, t);
    sqlite3_str_appendall(s, "SELECT 1, -1, ");
    knit__keyrefs(s, t, "u");
    sqlite3_str_appendf(s, ", NULL, NULL FROM \"%w\" AS u WHERE ", t->name);
    for (uint32_t i = 0; i < t->npk; i++)
        sqlite3_str_appendf(s, "u.\"%w\" IS NOT NULL AND ", t->pk[i]);
    sqlite3_str_appendf(s, "NOT EXISTS (SELECT 1 FROM _knit_rows_%d AS r WHERE ", t->id);
    knit__keys_join(s, t, "u", "r");
    sqlite3_str_appendall(s, " AND r.cl % 2 = 1)");
    if ((rc = knit__exec_str(k, s)) != 0)
        return rc;
    *logged += (size_t)sqlite3_changes(k->db);
    /* Live metadata without a row: deletes. */
    s = sqlite3_str_new(NULL);
    knit__log_insert(s, t);
    sqlite3_str_appendall(s, "SELECT 3, 0, ");
    knit__keylist_str(s, t->npk, "r.");
    sqlite3_str_appendf(s,
                        ", NULL, NULL FROM _knit_rows_%d AS r WHERE r.cl %% 2 = 1 AND NOT "
                        "EXISTS (SELECT 1 FROM \"%w\" AS u WHERE ",
                        t->id, t->name);
    knit__keys_join(s, t, "u", "r");
    sqlite3_str_appendall(s, ")");
    if ((rc = knit__exec_str(k, s)) != 0)
        return rc;
    *logged += (size_t)sqlite3_changes(k->db);
    return 0;
}

int knit__capture_repair(knit_t *k, size_t *logged)
{
    *logged = 0;
    for (size_t i = 0; i < k->ntables; i++) {
        ktable_t *t = &k->tables[i];
        ktinfo_t ti;
        int rc;
        if (t->capture != KNIT_CAPTURE_REPAIR)
            continue;
        if ((rc = knit__inspect_table(k, t->name, &ti)) != 0)
            return rc;
        rc = knit__create_triggers(k, t, &ti);
        knit__tinfo_free(&ti);
        if (!rc)
            rc = log_missed(k, t, logged);
        if (rc)
            return rc;
        k->schema_cookie = -1; /* re-check after this transaction, whatever its end */
        set_capture(t, KNIT_CAPTURE_OK, NULL);
    }
    return 0;
}
