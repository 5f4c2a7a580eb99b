/*
** track.c: making a table synced (knit_track), its capture triggers, and
** the cache of tracked tables every other runtime file works from.
**
** knit_track reads the table's schema, refuses what merging cannot keep
** (the reasons are listed in docs/ARCHITECTURE.md), creates the per-table
** metadata tables and the capture triggers, and backfills existing rows by
** logging them and stamping them, all in one transaction.
**
** The triggers are plain SQL: they only append (op, changed-column mask,
** key, the commit's wall time, the replica's HLC as the writer saw it) to
** _knit_log_<id>.  OR-set columns get BEFORE triggers that refuse anything
** but a JSON array of scalars, rolling the writer's transaction back.
**
** Design notes
**   1. Capture is checked whenever the schema cookie moves (knit__load_tables):
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
**   3. A column added by ALTER TABLE ADD COLUMN holds, in every existing
**      row, a default nobody wrote.  knit_track backfills those cells with
**      the lowest stamp (wall time 0, HLC 0: stamp.c turns that into HLC 1),
**      so any real write, on any replica, wins over them.
**   4. All SQL text is built with sqlite3_str (%w inside double quotes for
**      identifiers, %Q for literals): names of any length and content.
*/
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "replica.h"

/* What a capture trigger logs besides (op, mask, key): the commit's wall
** time in ms since the epoch, in pure SQL so any connection computes it
** (SQLite 3.40 has no unixepoch('subsec')), and the replica's HLC as the
** writer saw it.  stamp.c's design notes say how they become stamps. */
#define CAPTURE_COLS "at, hlc"
#define CAPTURE_VALS                                                                               \
    "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER), "                                 \
    "(SELECT value FROM _knit_meta WHERE key = 'hlc')"

/* ---------------------------------------------------------------------- */
/* SQL text                                                                */

/* Finishes s (consumed); NULL if it ran out of memory. */
static char *str_done(sqlite3_str *s)
{
    if (sqlite3_str_errcode(s) != SQLITE_OK) {
        sqlite3_free(sqlite3_str_finish(s));
        return NULL;
    }
    return sqlite3_str_finish(s);
}

/* Runs the SQL built in s (consumed). */
static int exec_str(knit_t *k, sqlite3_str *s)
{
    char *sql = str_done(s);
    if (!sql)
        return knit__err(k, KNIT_ENOMEM, "out of memory building SQL");
    int rc = knit__exec(k, sql);
    sqlite3_free(sql);
    return rc;
}

/* Prepares the SQL built in s (consumed) into *st. */
static int prepare_str(knit_t *k, sqlite3_stmt **st, sqlite3_str *s, const char *what)
{
    char *sql = str_done(s);
    *st = NULL;
    if (!sql)
        return knit__err(k, KNIT_ENOMEM, "out of memory building SQL");
    int rc = sqlite3_prepare_v2(k->db, sql, -1, st, NULL);
    sqlite3_free(sql);
    return rc == SQLITE_OK ? 0 : knit__dberr(k, rc, what);
}

char *knit__quote(const char *ident)
{
    size_t n = 2, i, j = 0;
    for (i = 0; ident[i]; i++)
        n += ident[i] == '"' ? 2 : 1;
    char *q = knit__malloc(n + 1);
    if (!q)
        return NULL;
    q[j++] = '"';
    for (i = 0; ident[i]; i++) {
        q[j++] = ident[i];
        if (ident[i] == '"')
            q[j++] = '"';
    }
    q[j++] = '"';
    q[j] = 0;
    return q;
}

void knit__keylist_str(sqlite3_str *s, uint32_t npk, const char *prefix)
{
    for (uint32_t i = 0; i < npk; i++)
        sqlite3_str_appendf(s, "%s%sk%u", i ? ", " : "", prefix, i);
}

void knit__rows_join_str(sqlite3_str *s, const ktable_t *t, const char *meta)
{
    sqlite3_str_appendall(s, "SELECT ");
    for (uint32_t i = 0; i < t->npk; i++)
        sqlite3_str_appendf(s, "r.k%u, ", i);
    sqlite3_str_appendall(s, meta);
    for (uint32_t c = 0; c < t->ncols; c++)
        sqlite3_str_appendf(s, ", u.\"%w\"", t->cols[c]);
    sqlite3_str_appendf(s, " FROM _knit_rows_%d AS r LEFT JOIN \"%w\" AS u ON ", t->id, t->name);
    for (uint32_t i = 0; i < t->npk; i++)
        sqlite3_str_appendf(s, "%su.\"%w\" = r.k%u", i ? " AND " : "", t->pk[i], i);
}

/* "NEW."p1", NEW."p2"" for the key columns of t. */
static void keyrefs(sqlite3_str *s, const ktable_t *t, const char *rec)
{
    for (uint32_t i = 0; i < t->npk; i++)
        sqlite3_str_appendf(s, "%s%s.\"%w\"", i ? ", " : "", rec, t->pk[i]);
}

/* "<a>."p1" = <b>.k0 AND ..." : the user row a of metadata or log row b. */
static void keys_join(sqlite3_str *s, const ktable_t *t, const char *user, const char *meta)
{
    for (uint32_t i = 0; i < t->npk; i++)
        sqlite3_str_appendf(s, "%s%s.\"%w\" = %s.k%u", i ? " AND " : "", user, t->pk[i], meta, i);
}

/* ---------------------------------------------------------------------- */
/* The table cache                                                         */

static void free_table(ktable_t *t)
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
        free_table(&k->tables[i]);
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

static int capture_check(knit_t *k, ktable_t *t);

/* Rebuilds the cache if the schema cookie moved (*moved = 1), checking
** every table's capture (design note 1). */
static int load_cache(knit_t *k, int *moved)
{
    sqlite3_stmt *st = NULL;
    int cookie = -1, rc;

    *moved = 0;

    rc = sqlite3_prepare_v2(k->db, "PRAGMA schema_version", -1, &st, NULL);
    if (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        cookie = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
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
        for (uint32_t i = 0; !r2 && i < t.ncols; i++) {
            t.orset[i] = strcmp(kinds[i], "orset") == 0;
            if (t.orset[i])
                t.setmask |= UINT64_C(1) << i;
        }
        for (uint32_t i = 0; i < nk; i++)
            knit__free(kinds[i]);
        knit__free(kinds);
        ktable_t *nt = r2 ? NULL : knit__realloc(k->tables, (k->ntables + 1) * sizeof *nt);
        if (!nt) {
            free_table(&t);
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
        if ((rc = capture_check(k, &k->tables[i])) != 0) {
            knit__free_tables(k);
            return rc;
        }
    }
    k->schema_cookie = cookie;
    *moved = 1;
    return 0;
}

int knit__load_tables(knit_t *k)
{
    int moved = 0, need = 0;
    int rc = load_cache(k, &moved);
    if (rc || !moved || k->readonly || sqlite3_txn_state(k->db, NULL) != SQLITE_TXN_NONE)
        return rc;
    for (size_t i = 0; i < k->ntables; i++)
        need |= k->tables[i].capture == KNIT_CAPTURE_REPAIR;
    if (!need)
        return 0;
    /* Design note 1: repair at once, in a transaction of its own.  If that
    ** fails (the file is busy, a table is broken), the next stamp tries
    ** again, and knit__capture_current says capture is not current. */
    char saved[sizeof k->errmsg];
    memcpy(saved, k->errmsg, sizeof saved);
    if (knit__begin(k) == 0) {
        if (knit__stamp_locked(k, NULL) != 0 || knit__commit(k) != 0) {
            knit__rollback(k);
            k->schema_cookie = -1;
        } else {
            /* Report the repair's stamp now, as local writes, before the
            ** cache (and its per-table counts) is rebuilt below; this also
            ** keeps knit_poll from taking it for another process's. */
            knit__notify(k);
        }
    }
    memcpy(k->errmsg, saved, sizeof saved);
    return load_cache(k, &moved);
}

ktable_t *knit__table(knit_t *k, const char *name)
{
    for (size_t i = 0; i < k->ntables; i++)
        if (strcmp(k->tables[i].name, name) == 0)
            return &k->tables[i];
    return NULL;
}

/* ---------------------------------------------------------------------- */
/* Schema inspection                                                       */

#define MAX_TABLE_COLS 2000

typedef struct colinfo_s {
    char *name;    /* column name */
    char *type;    /* declared type ("" if none) */
    int pk;        /* 1-based position in the primary key, 0 if not a key */
    int generated; /* generated column (not tracked) */
    int notnull;   /* NOT NULL */
    int has_dflt;  /* has a DEFAULT */
} colinfo_t;

typedef struct tinfo_s {
    colinfo_t *c; /* columns in declaration order */
    int n;        /* count */
    int npk;      /* key columns */
    int rowid_pk; /* the key is the rowid (INTEGER PRIMARY KEY) */
} tinfo_t;

static void tinfo_free(tinfo_t *ti)
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
static int inspect_table(knit_t *k, const char *name, tinfo_t *ti)
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
        colinfo_t *nc;
        if (ti->n >= MAX_TABLE_COLS || !(nc = knit__realloc(ti->c, (ti->n + 1) * sizeof *nc))) {
            rc = SQLITE_NOMEM;
            break;
        }
        ti->c = nc;
        colinfo_t *c = &ti->c[ti->n];
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
        tinfo_free(ti);
        return rc == SQLITE_NOMEM ? KNIT_ENOMEM : knit__dberr(k, rc, "reading the columns");
    }
    if (ti->npk == 0) {
        tinfo_free(ti);
        return knit__err(k, KNIT_ESCHEMA,
                         "%s has no PRIMARY KEY: rows would be keyed by rowids that each replica "
                         "assigns on its own; declare a primary key (e.g. id TEXT PRIMARY KEY "
                         "holding a UUID, or a natural key)",
                         name);
    }
    if (ti->npk > KNIT_MAX_PK) {
        tinfo_free(ti);
        return knit__err(k, KNIT_ESCHEMA, "%s's primary key has more than %d columns", name,
                         KNIT_MAX_PK);
    }
    if (ti->npk == 1 && !without_rowid) {
        for (int i = 0; i < ti->n; i++)
            if (ti->c[i].pk == 1 && ci_equal(ti->c[i].type, "INTEGER"))
                ti->rowid_pk = 1;
    }
    if (ti->rowid_pk) {
        tinfo_free(ti);
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
            tinfo_free(ti);
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
        tinfo_free(ti);
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
            tinfo_free(ti);
            return KNIT_ESCHEMA;
        }
    }
    knit__free(pkindex);
    /* Foreign keys: a delete on one replica and an insert of a child on
    ** another are each valid and together violate the constraint. */
    rc = prepare_named(k, &st, "SELECT 1 FROM pragma_foreign_key_list(?1)", name);
    if (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) {
        sqlite3_finalize(st);
        tinfo_free(ti);
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

/* Parses spec ("tags:orset,labels:orset" or "tags:lww") against the table's
** columns; kinds[i] = 1 for OR-set.  Unknown columns or kinds are errors. */
static int parse_spec(knit_t *k, const char *table, const char *spec, const tinfo_t *ti,
                      uint8_t *kinds)
{
    const char *p = spec ? spec : "";
    while (*p) {
        size_t n = strcspn(p, ",");
        const char *col = p, *end = p + n, *colon = NULL;
        p += n + (p[n] == ',');
        while (col < end && *col == ' ')
            col++;
        if (col == end)
            continue;
        for (const char *q = col; q < end; q++)
            if (*q == ':')
                colon = q;
        const char *kind = colon ? colon + 1 : "lww";
        size_t kn = colon ? (size_t)(end - kind) : 3, cn = (size_t)((colon ? colon : end) - col);
        int is_set;
        if (kn == 5 && memcmp(kind, "orset", 5) == 0)
            is_set = 1;
        else if (kn == 3 && memcmp(kind, "lww", 3) == 0)
            is_set = 0;
        else
            return knit__err(k, KNIT_EINVAL, "unknown column kind \"%.*s\" (use lww or orset)",
                             (int)(kn > 100 ? 100 : kn), kind);
        int found = 0;
        for (int i = 0; i < ti->n; i++) {
            if (strlen(ti->c[i].name) != cn || memcmp(ti->c[i].name, col, cn) != 0)
                continue;
            if (ti->c[i].pk)
                return knit__err(k, KNIT_ESCHEMA,
                                 "%s.%s is part of the primary key and cannot "
                                 "be an OR-set",
                                 table, ti->c[i].name);
            if (ti->c[i].generated)
                return knit__err(k, KNIT_ESCHEMA, "%s.%s is a generated column", table,
                                 ti->c[i].name);
            kinds[i] = (uint8_t)is_set;
            found = 1;
        }
        if (!found)
            return knit__err(k, KNIT_ENOTFOUND, "%s has no column %.*s", table,
                             (int)(cn > 400 ? 400 : cn), col);
    }
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Capture triggers                                                        */

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
    char *sql = str_done(s);
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
static void log_insert(sqlite3_str *s, const ktable_t *t)
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

/* Builds the text of every trigger of t.  A column's affinity decides
** whether its change test must also compare storage classes: only a column
** without affinity can hold both 1 and 1.0, which `IS NOT` calls equal. */
static int build_capture(const ktable_t *t, const tinfo_t *ti, kcapture_t *c)
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
    log_insert(s, t);
    sqlite3_str_appendall(s, "VALUES (1, -1, ");
    keyrefs(s, t, "NEW");
    sqlite3_str_appendall(s, ", " CAPTURE_VALS "); END");
    rc = capture_add(c, s, "_knit_ins_%d", id);

    /* UPDATE keeping the key: log the mask of changed columns, if any (the
    ** clock and HLC are read only for a row that passes WHERE m <> 0). */
    s = sqlite3_str_new(NULL);
    sqlite3_str_appendf(s, "CREATE TRIGGER _knit_upd_%d AFTER UPDATE ON \"%w\" WHEN ", id, t->name);
    keys_same(s, t);
    sqlite3_str_appendf(s, " BEGIN /* knit capture %d */ ", KNIT_CAPTURE_VERSION);
    log_insert(s, t);
    sqlite3_str_appendall(s, "SELECT 2, m, ");
    keyrefs(s, t, "NEW");
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

    /* UPDATE changing the key: the old row is deleted, a new one inserted. */
    s = sqlite3_str_new(NULL);
    sqlite3_str_appendf(s, "CREATE TRIGGER _knit_updk_%d AFTER UPDATE ON \"%w\" WHEN NOT (", id,
                        t->name);
    keys_same(s, t);
    sqlite3_str_appendf(s, ") BEGIN /* knit capture %d */ ", KNIT_CAPTURE_VERSION);
    log_insert(s, t);
    sqlite3_str_appendall(s, "VALUES (3, 0, ");
    keyrefs(s, t, "OLD");
    sqlite3_str_appendall(s, ", " CAPTURE_VALS "); ");
    log_insert(s, t);
    sqlite3_str_appendall(s, "VALUES (1, -1, ");
    keyrefs(s, t, "NEW");
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
    log_insert(s, t);
    sqlite3_str_appendall(s, "VALUES (3, 0, ");
    keyrefs(s, t, "OLD");
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
    return exec_str(k, s);
}

/* Installs every trigger of t, replacing the old ones. */
static int create_triggers(knit_t *k, const ktable_t *t, const tinfo_t *ti)
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
/* Checking and repairing capture (design notes 1 and 2)                   */

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
    return str_done(s);
}

/* Sets t->capture from the schema as it is now. */
static int capture_check(knit_t *k, ktable_t *t)
{
    tinfo_t ti;
    kcapture_t c;
    char saved[sizeof k->errmsg];
    int rc;

    memcpy(saved, k->errmsg, sizeof saved);
    rc = inspect_table(k, t->name, &ti);
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
        tinfo_free(&ti);
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
            tinfo_free(&ti);
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
    tinfo_free(&ti);
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

int knit__capture_current(knit_t *k)
{
    int rc = knit__load_tables(k);
    if (rc)
        return rc;
    for (size_t i = 0; i < k->ntables; i++)
        if (k->tables[i].capture != KNIT_CAPTURE_OK)
            return knit__err(k, KNIT_ESCHEMA, "%s",
                             k->tables[i].capture_msg ? k->tables[i].capture_msg : "capture");
    return 0;
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
            if ((rc = exec_str(k, s)) != 0)
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
    log_insert(s, t);
    sqlite3_str_appendall(s, "SELECT 1, -1, ");
    keyrefs(s, t, "u");
    sqlite3_str_appendf(s, ", NULL, NULL FROM \"%w\" AS u WHERE ", t->name);
    for (uint32_t i = 0; i < t->npk; i++)
        sqlite3_str_appendf(s, "u.\"%w\" IS NOT NULL AND ", t->pk[i]);
    sqlite3_str_appendf(s, "NOT EXISTS (SELECT 1 FROM _knit_rows_%d AS r WHERE ", t->id);
    keys_join(s, t, "u", "r");
    sqlite3_str_appendall(s, " AND r.cl % 2 = 1)");
    if ((rc = exec_str(k, s)) != 0)
        return rc;
    *logged += (size_t)sqlite3_changes(k->db);
    /* Live metadata without a row: deletes. */
    s = sqlite3_str_new(NULL);
    log_insert(s, t);
    sqlite3_str_appendall(s, "SELECT 3, 0, ");
    knit__keylist_str(s, t->npk, "r.");
    sqlite3_str_appendf(s,
                        ", NULL, NULL FROM _knit_rows_%d AS r WHERE r.cl %% 2 = 1 AND NOT "
                        "EXISTS (SELECT 1 FROM \"%w\" AS u WHERE ",
                        t->id, t->name);
    keys_join(s, t, "u", "r");
    sqlite3_str_appendall(s, ")");
    if ((rc = exec_str(k, s)) != 0)
        return rc;
    *logged += (size_t)sqlite3_changes(k->db);
    return 0;
}

int knit__capture_repair(knit_t *k, size_t *logged)
{
    *logged = 0;
    for (size_t i = 0; i < k->ntables; i++) {
        ktable_t *t = &k->tables[i];
        tinfo_t ti;
        int rc;
        if (t->capture != KNIT_CAPTURE_REPAIR)
            continue;
        if ((rc = inspect_table(k, t->name, &ti)) != 0)
            return rc;
        rc = create_triggers(k, t, &ti);
        tinfo_free(&ti);
        if (!rc)
            rc = log_missed(k, t, logged);
        if (rc)
            return rc;
        k->schema_cookie = -1; /* re-check after this transaction, whatever its end */
        set_capture(t, KNIT_CAPTURE_OK, NULL);
    }
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Tracking a table                                                        */

/* Creates _knit_log_<id>, _knit_rows_<id> and _knit_sets_<id>. */
static int create_meta_tables(knit_t *k, const ktable_t *t)
{
    sqlite3_str *s = sqlite3_str_new(NULL);
    sqlite3_str_appendf(s,
                        "CREATE TABLE IF NOT EXISTS _knit_log_%d(seq INTEGER PRIMARY KEY, "
                        "op INTEGER, mask INTEGER",
                        t->id);
    for (uint32_t i = 0; i < t->npk; i++) {
        char *msg =
            sqlite3_mprintf("knit: primary key column %s.%s must not be NULL", t->name, t->pk[i]);
        sqlite3_str_appendf(s, ", k%u CONSTRAINT \"%w\" CHECK (k%u IS NOT NULL)", i,
                            msg ? msg : "knit: NULL key", i);
        sqlite3_free(msg);
    }
    /* at: the commit's wall time (ms); hlc: the replica's HLC the writer saw. */
    sqlite3_str_appendall(s, ", at INTEGER, hlc INTEGER);");
    sqlite3_str_appendf(s, "CREATE TABLE IF NOT EXISTS _knit_rows_%d(", t->id);
    for (uint32_t i = 0; i < t->npk; i++)
        sqlite3_str_appendf(s, "k%u, ", i);
    sqlite3_str_appendall(s, "ns INTEGER NOT NULL, cl INTEGER NOT NULL, ver INTEGER NOT NULL, "
                             "cells BLOB NOT NULL, PRIMARY KEY(");
    knit__keylist_str(s, t->npk, "");
    sqlite3_str_appendall(s, ")) WITHOUT ROWID;");
    sqlite3_str_appendf(s, "CREATE INDEX IF NOT EXISTS _knit_rows_%d_ver ON _knit_rows_%d(ver);",
                        t->id, t->id);
    sqlite3_str_appendf(s, "CREATE TABLE IF NOT EXISTS _knit_sets_%d(", t->id);
    for (uint32_t i = 0; i < t->npk; i++)
        sqlite3_str_appendf(s, "k%u, ", i);
    sqlite3_str_appendall(s, "col INTEGER NOT NULL, state BLOB NOT NULL, PRIMARY KEY(");
    knit__keylist_str(s, t->npk, "");
    sqlite3_str_appendall(s, ", col)) WITHOUT ROWID;");
    return exec_str(k, s);
}

/* Writes t's entry in _knit_tables; json_array() over bound names quotes
** any character correctly. */
static int save_table(knit_t *k, const ktable_t *t)
{
    sqlite3_stmt *st = NULL;
    sqlite3_str *s = sqlite3_str_new(NULL);
    sqlite3_str_appendall(s, "INSERT OR REPLACE INTO _knit_tables(name, id, pk, cols, kinds)"
                             " VALUES (?1, ?2, json_array(");
    for (uint32_t i = 0; i < t->npk; i++)
        sqlite3_str_appendf(s, "%s?%u", i ? ", " : "", i + 3);
    sqlite3_str_appendall(s, "), json_array(");
    for (uint32_t i = 0; i < t->ncols; i++)
        sqlite3_str_appendf(s, "%s?%u", i ? ", " : "", t->npk + i + 3);
    sqlite3_str_appendall(s, "), json_array(");
    for (uint32_t i = 0; i < t->ncols; i++)
        sqlite3_str_appendf(s, "%s'%s'", i ? ", " : "", t->orset[i] ? "orset" : "lww");
    sqlite3_str_appendall(s, "))");
    int rc = prepare_str(k, &st, s, "writing _knit_tables");
    if (rc)
        return rc;
    sqlite3_bind_text(st, 1, t->name, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, t->id);
    for (uint32_t i = 0; i < t->npk; i++)
        sqlite3_bind_text(st, (int)i + 3, t->pk[i], -1, SQLITE_STATIC);
    for (uint32_t i = 0; i < t->ncols; i++)
        sqlite3_bind_text(st, (int)(t->npk + i) + 3, t->cols[i], -1, SQLITE_STATIC);
    rc = sqlite3_step(st) == SQLITE_DONE
             ? 0
             : knit__dberr(k, sqlite3_errcode(k->db), "writing _knit_tables");
    sqlite3_finalize(st);
    return rc;
}

/* Logs every existing row, so the next stamp backfills it.  A first track
** logs inserts of every column, stamped like any write of now.  Columns
** added later (mask) are logged as updates with wall time 0 and HLC 0, the
** lowest stamp (design note 3), except in rows whose insert is still in the
** log: that insert is a real write of them and is stamped as such. */
static int backfill(knit_t *k, const ktable_t *t, int op, uint64_t mask)
{
    sqlite3_str *s = sqlite3_str_new(NULL);
    log_insert(s, t);
    sqlite3_str_appendf(s, "SELECT %d, %lld, ", op, (long long)mask);
    keyrefs(s, t, "u");
    sqlite3_str_appendf(s, ", %s FROM \"%w\" AS u", op == KNIT_OP_INSERT ? "NULL, NULL" : "0, 0",
                        t->name);
    if (op != KNIT_OP_INSERT) {
        sqlite3_str_appendf(s,
                            " WHERE NOT EXISTS (SELECT 1 FROM _knit_log_%d AS l WHERE "
                            "l.op = 1 AND ",
                            t->id);
        keys_join(s, t, "u", "l");
        sqlite3_str_appendall(s, ")");
    }
    return exec_str(k, s);
}

int knit_track(knit_t *k, const char *table, const char *spec) /* see knit.h */
{
    tinfo_t ti;
    uint8_t *kinds = NULL;
    ktable_t t;
    int rc;

    if (!table || !table[0])
        return knit__err(k, KNIT_EINVAL, "no table name given");
    if (sqlite3_strnicmp(table, "_knit_", 6) == 0 || sqlite3_strnicmp(table, "sqlite_", 7) == 0)
        return knit__err(k, KNIT_ESCHEMA,
                         "%s: names starting with _knit_ or sqlite_ are "
                         "reserved",
                         table);
    if ((rc = knit__begin(k)) != 0)
        return rc;
    memset(&t, 0, sizeof t);
    memset(&ti, 0, sizeof ti);
    if ((rc = knit__load_tables(k)) != 0) {
        knit__rollback(k);
        return rc;
    }
    ktable_t *old = knit__table(k, table);
    if (old && old->capture == KNIT_CAPTURE_BROKEN) {
        rc = knit__err(k, KNIT_ESCHEMA, "%s", old->capture_msg ? old->capture_msg : table);
        goto done;
    }
    if (old && old->capture == KNIT_CAPTURE_REPAIR) {
        /* Reinstall capture and log what was missed, before anything else
        ** changes; then work from the repaired schema. */
        if ((rc = knit__stamp_locked(k, NULL)) != 0 || (rc = knit__load_tables(k)) != 0)
            goto done;
        old = knit__table(k, table);
    }
    if ((rc = inspect_table(k, table, &ti)) != 0)
        goto done;
    if (!(kinds = knit__calloc((size_t)ti.n, 1))) {
        rc = KNIT_ENOMEM;
        goto done;
    }
    if ((rc = parse_spec(k, table, spec, &ti, kinds)) != 0)
        goto done;

    /* Columns: the old ones in their order, then any new ones. */
    t.name = knit__strdup(table);
    t.pk = knit__calloc((size_t)ti.npk, sizeof *t.pk);
    t.cols = knit__calloc((size_t)ti.n + 1, sizeof *t.cols);
    t.orset = knit__calloc((size_t)ti.n + 1, 1);
    if (!t.name || !t.pk || !t.cols || !t.orset) {
        rc = KNIT_ENOMEM;
        goto done;
    }
    t.npk = (uint32_t)ti.npk;
    for (int i = 0; i < ti.n; i++)
        if (ti.c[i].pk && !(t.pk[ti.c[i].pk - 1] = knit__strdup(ti.c[i].name))) {
            rc = KNIT_ENOMEM;
            goto done;
        }
    uint64_t newmask = 0;
    if (old) {
        if (old->npk != t.npk)
            rc = knit__err(k, KNIT_ESCHEMA, "%s's primary key changed since it was tracked", table);
        for (uint32_t i = 0; !rc && i < old->npk; i++)
            if (strcmp(old->pk[i], t.pk[i]) != 0)
                rc = knit__err(k, KNIT_ESCHEMA, "%s's primary key changed since it was tracked",
                               table);
        for (uint32_t i = 0; !rc && i < old->ncols; i++) {
            int found = -1;
            for (int j = 0; j < ti.n; j++)
                if (strcmp(ti.c[j].name, old->cols[i]) == 0)
                    found = j;
            if (found < 0) {
                rc = knit__err(k, KNIT_ESCHEMA, "%s.%s was tracked and is gone", table,
                               old->cols[i]);
                break;
            }
            int declared = spec && spec[0] && strstr(spec, old->cols[i]) != NULL;
            if (declared && kinds[found] != old->orset[i])
                rc = knit__err(k, KNIT_ESCHEMA,
                               "%s.%s is already tracked as %s; a column's kind "
                               "cannot change",
                               table, old->cols[i], old->orset[i] ? "orset" : "lww");
            t.cols[t.ncols] = knit__strdup(old->cols[i]);
            t.orset[t.ncols] = old->orset[i];
            if (!t.cols[t.ncols++])
                rc = KNIT_ENOMEM;
        }
        t.id = old->id;
    }
    for (int j = 0; !rc && j < ti.n; j++) {
        if (ti.c[j].pk || ti.c[j].generated)
            continue;
        int known = 0;
        for (uint32_t i = 0; i < t.ncols; i++)
            if (strcmp(t.cols[i], ti.c[j].name) == 0)
                known = 1;
        if (known)
            continue;
        if (t.ncols >= KNIT_MAX_COLS) {
            rc = knit__err(k, KNIT_ESCHEMA, "%s: knit tracks at most %d non-key columns", table,
                           KNIT_MAX_COLS);
            break;
        }
        newmask |= UINT64_C(1) << t.ncols;
        t.orset[t.ncols] = kinds[j];
        if (!(t.cols[t.ncols++] = knit__strdup(ti.c[j].name)))
            rc = KNIT_ENOMEM;
    }
    if (rc)
        goto done;
    for (uint32_t i = 0; i < t.ncols; i++)
        if (t.orset[i])
            t.setmask |= UINT64_C(1) << i;

    if (old && !newmask) {
        rc = 0; /* tracked already, nothing new */
        goto done;
    }
    if (!old) {
        int64_t next = 0;
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(k->db, "SELECT coalesce(max(id), 0) + 1 FROM _knit_tables", -1, &st,
                               NULL) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW)
            next = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        if (next <= 0) {
            rc = knit__dberr(k, sqlite3_errcode(k->db), "choosing a table id");
            goto done;
        }
        t.id = (int)next;
        if ((rc = create_meta_tables(k, &t)) != 0)
            goto done;
    }
    if ((rc = save_table(k, &t)) != 0 || (rc = create_triggers(k, &t, &ti)) != 0)
        goto done;
    if ((rc = backfill(k, &t, old ? KNIT_OP_UPDATE : KNIT_OP_INSERT, old ? newmask : ~UINT64_C(0))))
        goto done;
    k->schema_cookie = -1;
    if ((rc = knit__load_tables(k)) != 0)
        goto done;
    size_t stamped = 0;
    rc = knit__stamp_locked(k, &stamped);

done:
    if (!rc)
        rc = knit__commit(k);
    if (rc) {
        char saved[sizeof k->errmsg];
        memcpy(saved, k->errmsg, sizeof saved);
        knit__rollback(k);
        k->schema_cookie = -1;
        knit__load_tables(k);
        memcpy(k->errmsg, saved, sizeof saved);
    }
    free_table(&t);
    knit__free(kinds);
    tinfo_free(&ti);
    /* A column or table tracked now may have cells waiting in _knit_aside
    ** (received before this device migrated): apply them at once.  Track
    ** itself succeeded; a failure here leaves them for the next apply. */
    if (!rc) {
        char saved[sizeof k->errmsg];
        memcpy(saved, k->errmsg, sizeof saved);
        if (knit_aside_retry(k, NULL) != 0)
            memcpy(k->errmsg, saved, sizeof saved);
    }
    return rc;
}
