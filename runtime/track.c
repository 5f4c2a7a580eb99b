/*
** track.c: making a table synced (knit_track), and the cache of tracked
** tables every other runtime file works from.
**
** knit_track reads the table's schema, refuses what merging cannot keep
** (the reasons are listed in docs/ARCHITECTURE.md), creates the per-table
** metadata tables and the capture triggers, and backfills existing rows by
** logging them as inserts and stamping them, all in one transaction.
**
** The triggers are plain SQL: they only append (op, changed-column mask,
** key) to _knit_log_<id>.  OR-set columns get BEFORE triggers that refuse
** anything but a JSON array of scalars, rolling the writer's transaction back.
*/
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "replica.h"

/* A growable string for building SQL. */
typedef struct sbuf_s {
    char *p;    /* NUL-terminated text, or NULL after an allocation failure */
    size_t n;   /* length */
    size_t cap; /* allocated */
} sbuf_t;

static void sb_add(sbuf_t *b, const char *s)
{
    size_t l = strlen(s);
    if (b->cap == (size_t)-1)
        return;
    if (b->n + l + 1 > b->cap) {
        size_t c = b->cap ? b->cap * 2 : 256;
        while (c < b->n + l + 1)
            c *= 2;
        char *q = knit__realloc(b->p, c);
        if (!q) {
            knit__free(b->p);
            b->p = NULL;
            b->cap = (size_t)-1;
            return;
        }
        b->p = q;
        b->cap = c;
    }
    memcpy(b->p + b->n, s, l + 1);
    b->n += l;
}

#ifdef __GNUC__
__attribute__((format(printf, 2, 3)))
#endif
static void sb_fmt(sbuf_t *b, const char *fmt, ...)
{
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    sb_add(b, tmp);
}

/* Appends ident as a quoted SQL identifier. */
static void sb_ident(sbuf_t *b, const char *ident)
{
    char *q = knit__quote(ident);
    if (!q) {
        knit__free(b->p);
        b->p = NULL;
        b->cap = (size_t)-1;
        return;
    }
    sb_add(b, q);
    knit__free(q);
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

void knit__keylist(char *buf, size_t n, uint32_t npk, const char *prefix)
{
    size_t off = 0;
    buf[0] = 0;
    for (uint32_t i = 0; i < npk && off < n; i++)
        off += (size_t)snprintf(buf + off, n - off, "%s%sk%u", i ? ", " : "", prefix, i);
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

int knit__load_tables(knit_t *k)
{
    sqlite3_stmt *st = NULL;
    int cookie = -1, rc;

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
    k->schema_cookie = cookie;
    return 0;
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

/* Reads the table's columns and checks everything merging depends on. */
static int inspect_table(knit_t *k, const char *name, tinfo_t *ti)
{
    sqlite3_stmt *st = NULL;
    int rc, without_rowid = 0;
    char sql[256];
    memset(ti, 0, sizeof *ti);

    rc = sqlite3_prepare_v2(k->db, "SELECT type, sql FROM sqlite_schema WHERE name = ?", -1, &st,
                            NULL);
    if (rc != SQLITE_OK)
        return knit__dberr(k, rc, "reading the schema");
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        sqlite3_finalize(st);
        return knit__err(k, KNIT_ENOTFOUND, "no table named %s", name);
    }
    const char *type = (const char *)sqlite3_column_text(st, 0);
    const char *ddl = (const char *)sqlite3_column_text(st, 1);
    if (!type || strcmp(type, "table") != 0 || !ddl || sqlite3_strnicmp(ddl, "CREATE TABLE", 12)) {
        sqlite3_finalize(st);
        return knit__err(k, KNIT_ESCHEMA, "%s is not an ordinary table (views and virtual tables "
                         "cannot be tracked)", name);
    }
    if (sqlite3_strlike("%WITHOUT%ROWID%", ddl, 0) == 0)
        without_rowid = 1;
    if (sqlite3_strlike("%AUTOINCREMENT%", ddl, 0) == 0) {
        sqlite3_finalize(st);
        return knit__err(k, KNIT_ESCHEMA,
                         "%s uses AUTOINCREMENT: its keys are assigned per replica and would "
                         "collide; use a globally unique key (a UUID, or a natural key)", name);
    }
    sqlite3_finalize(st);

    char *qn = knit__quote(name);
    if (!qn)
        return KNIT_ENOMEM;
    snprintf(sql, sizeof sql, "PRAGMA table_xinfo(%.200s)", qn);
    knit__free(qn);
    rc = sqlite3_prepare_v2(k->db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK)
        return knit__dberr(k, rc, "reading the table's columns");
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        colinfo_t *nc;
        if (ti->n >= MAX_TABLE_COLS || !(nc = knit__realloc(ti->c, (ti->n + 1) * sizeof *nc))) {
            rc = SQLITE_NOMEM;
            break;
        }
        ti->c = nc;
        colinfo_t *c = &ti->c[ti->n];
        const char *cn = (const char *)sqlite3_column_text(st, 1);
        const char *ct = (const char *)sqlite3_column_text(st, 2);
        c->name = knit__strdup(cn ? cn : "");
        c->type = knit__strdup(ct ? ct : "");
        c->notnull = sqlite3_column_int(st, 3);
        c->has_dflt = sqlite3_column_type(st, 4) != SQLITE_NULL;
        c->pk = sqlite3_column_int(st, 5);
        c->generated = sqlite3_column_int(st, 6) >= 2;
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
                         "holding a UUID, or a natural key)", name);
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
                         "globally unique integers yourself", name);
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
    qn = knit__quote(name);
    if (!qn) {
        tinfo_free(ti);
        return KNIT_ENOMEM;
    }
    snprintf(sql, sizeof sql, "PRAGMA index_list(%.200s)", qn);
    rc = sqlite3_prepare_v2(k->db, sql, -1, &st, NULL);
    char pkindex[256] = "";
    while (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) {
        const char *iname = (const char *)sqlite3_column_text(st, 1);
        int unique = sqlite3_column_int(st, 2);
        const char *origin = (const char *)sqlite3_column_text(st, 3);
        if (origin && strcmp(origin, "pk") == 0) {
            snprintf(pkindex, sizeof pkindex, "%s", iname ? iname : "");
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
        knit__free(qn);
        tinfo_free(ti);
        return rc == SQLITE_CONSTRAINT ? KNIT_ESCHEMA : knit__dberr(k, rc, "reading indexes");
    }
    /* Key collation must be BINARY: knit's metadata keys rows byte-exactly. */
    if (pkindex[0] || without_rowid) {
        char *qi = knit__quote(pkindex[0] ? pkindex : name);
        snprintf(sql, sizeof sql, "PRAGMA index_xinfo(%.200s)", qi ? qi : "\"\"");
        knit__free(qi);
        rc = sqlite3_prepare_v2(k->db, sql, -1, &st, NULL);
        while (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) {
            const char *coll = (const char *)sqlite3_column_text(st, 4);
            if (sqlite3_column_int(st, 5) && coll && !ci_equal(coll, "BINARY")) {
                knit__err(k, KNIT_ESCHEMA,
                          "%s's primary key uses collation %s; knit needs BINARY keys so that "
                          "every replica agrees which rows are the same", name, coll);
                rc = SQLITE_CONSTRAINT;
            }
        }
        sqlite3_finalize(st);
        if (rc != SQLITE_OK && rc != SQLITE_CONSTRAINT)
            rc = SQLITE_OK; /* no such index: nothing to check */
        if (rc == SQLITE_CONSTRAINT) {
            knit__free(qn);
            tinfo_free(ti);
            return KNIT_ESCHEMA;
        }
    }
    /* Foreign keys: a delete on one replica and an insert of a child on
    ** another are each valid and together violate the constraint. */
    snprintf(sql, sizeof sql, "PRAGMA foreign_key_list(%.200s)", qn);
    knit__free(qn);
    rc = sqlite3_prepare_v2(k->db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) {
        sqlite3_finalize(st);
        tinfo_free(ti);
        return knit__err(k, KNIT_ESCHEMA,
                         "%s declares FOREIGN KEY constraints: a parent deleted on one replica "
                         "while a child is inserted on another cannot be merged into a state "
                         "that satisfies them; drop the constraint and treat dangling "
                         "references in the application", name);
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
        char item[512];
        size_t n = strcspn(p, ",");
        if (n >= sizeof item)
            return knit__err(k, KNIT_EINVAL, "spec item too long");
        memcpy(item, p, n);
        item[n] = 0;
        p += n + (p[n] == ',');
        char *colon = strrchr(item, ':');
        char *col = item;
        while (*col == ' ')
            col++;
        if (!*col)
            continue;
        const char *kind = "lww";
        if (colon) {
            *colon = 0;
            kind = colon + 1;
        }
        int is_set;
        if (strcmp(kind, "orset") == 0)
            is_set = 1;
        else if (strcmp(kind, "lww") == 0)
            is_set = 0;
        else
            return knit__err(k, KNIT_EINVAL, "unknown column kind \"%s\" (use lww or orset)",
                             kind);
        int found = 0;
        for (int i = 0; i < ti->n; i++) {
            if (strcmp(ti->c[i].name, col) != 0)
                continue;
            if (ti->c[i].pk)
                return knit__err(k, KNIT_ESCHEMA, "%s.%s is part of the primary key and cannot "
                                 "be an OR-set", table, col);
            if (ti->c[i].generated)
                return knit__err(k, KNIT_ESCHEMA, "%s.%s is a generated column", table, col);
            kinds[i] = (uint8_t)is_set;
            found = 1;
        }
        if (!found)
            return knit__err(k, KNIT_ENOTFOUND, "%s has no column %s", table, col);
    }
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Triggers                                                                */

/* "NEW."p1", NEW."p2"" for the key columns of t. */
static void sb_keyrefs(sbuf_t *b, const ktable_t *t, const char *rec)
{
    for (uint32_t i = 0; i < t->npk; i++) {
        sb_fmt(b, "%s%s.", i ? ", " : "", rec);
        sb_ident(b, t->pk[i]);
    }
}

/* Builds every trigger of t (dropping the old ones first).  A column's
** affinity decides whether its change test must also compare storage
** classes: only a column without affinity can hold both 1 and 1.0, which
** `IS NOT` calls equal. */
static int create_triggers(knit_t *k, const ktable_t *t, const tinfo_t *ti)
{
    sbuf_t b = {0};
    char keys[512];
    int id = t->id;
    knit__keylist(keys, sizeof keys, t->npk, "");

    sb_fmt(&b, "DROP TRIGGER IF EXISTS _knit_ins_%d; DROP TRIGGER IF EXISTS _knit_upd_%d;"
               "DROP TRIGGER IF EXISTS _knit_updk_%d; DROP TRIGGER IF EXISTS _knit_del_%d;",
           id, id, id, id);
    for (uint32_t c = 0; c < KNIT_MAX_COLS; c++)
        sb_fmt(&b, "DROP TRIGGER IF EXISTS _knit_set%u_%d;", c, id);

    /* INSERT: every column is written. */
    sb_fmt(&b, "CREATE TRIGGER _knit_ins_%d AFTER INSERT ON ", id);
    sb_ident(&b, t->name);
    sb_fmt(&b, " BEGIN INSERT INTO _knit_log_%d(op, mask, %s) VALUES (1, -1, ", id, keys);
    sb_keyrefs(&b, t, "NEW");
    sb_add(&b, "); END;");

    /* UPDATE keeping the key: log the mask of changed columns, if any. */
    sb_fmt(&b, "CREATE TRIGGER _knit_upd_%d AFTER UPDATE ON ", id);
    sb_ident(&b, t->name);
    sb_add(&b, " WHEN ");
    for (uint32_t i = 0; i < t->npk; i++) {
        sb_add(&b, i ? " AND OLD." : "OLD.");
        sb_ident(&b, t->pk[i]);
        sb_add(&b, " IS NEW.");
        sb_ident(&b, t->pk[i]);
    }
    sb_fmt(&b, " BEGIN INSERT INTO _knit_log_%d(op, mask, %s) SELECT 2, m, ", id, keys);
    sb_keyrefs(&b, t, "NEW");
    sb_add(&b, " FROM (SELECT 0");
    for (uint32_t i = 0; i < t->ncols; i++) {
        int noaff = 1;
        for (int j = 0; j < ti->n; j++)
            if (strcmp(ti->c[j].name, t->cols[i]) == 0)
                noaff = ti->c[j].type[0] == 0 ||
                        sqlite3_strlike("%BLOB%", ti->c[j].type, 0) == 0;
        sb_add(&b, " | ((OLD.");
        sb_ident(&b, t->cols[i]);
        sb_add(&b, " IS NOT NEW.");
        sb_ident(&b, t->cols[i]);
        sb_add(&b, " COLLATE BINARY");
        if (noaff) {
            sb_add(&b, " OR typeof(OLD.");
            sb_ident(&b, t->cols[i]);
            sb_add(&b, ") <> typeof(NEW.");
            sb_ident(&b, t->cols[i]);
            sb_add(&b, ")");
        }
        sb_fmt(&b, ") << %u)", i);
    }
    sb_add(&b, " AS m) WHERE m <> 0; END;");

    /* UPDATE changing the key: the old row is deleted, a new one inserted. */
    sb_fmt(&b, "CREATE TRIGGER _knit_updk_%d AFTER UPDATE ON ", id);
    sb_ident(&b, t->name);
    sb_add(&b, " WHEN NOT (");
    for (uint32_t i = 0; i < t->npk; i++) {
        sb_add(&b, i ? " AND OLD." : "OLD.");
        sb_ident(&b, t->pk[i]);
        sb_add(&b, " IS NEW.");
        sb_ident(&b, t->pk[i]);
    }
    sb_fmt(&b, ") BEGIN INSERT INTO _knit_log_%d(op, mask, %s) VALUES (3, 0, ", id, keys);
    sb_keyrefs(&b, t, "OLD");
    sb_fmt(&b, "); INSERT INTO _knit_log_%d(op, mask, %s) VALUES (1, -1, ", id, keys);
    sb_keyrefs(&b, t, "NEW");
    sb_add(&b, "); END;");

    /* DELETE */
    sb_fmt(&b, "CREATE TRIGGER _knit_del_%d AFTER DELETE ON ", id);
    sb_ident(&b, t->name);
    sb_fmt(&b, " BEGIN INSERT INTO _knit_log_%d(op, mask, %s) VALUES (3, 0, ", id, keys);
    sb_keyrefs(&b, t, "OLD");
    sb_add(&b, "); END;");

    /* OR-set columns accept only a JSON array of scalars (or NULL = []). */
    for (uint32_t i = 0; i < t->ncols; i++) {
        if (!t->orset[i])
            continue;
        for (int ins = 0; ins < 2; ins++) {
            if (ins)
                sb_fmt(&b, "CREATE TRIGGER _knit_set%u_%d BEFORE INSERT ON ", i, id);
            else {
                /* Trigger names: _knit_set<i>_<id> for INSERT, _knit_setu<i>_... */
                sb_fmt(&b, "DROP TRIGGER IF EXISTS _knit_setu%u_%d;", i, id);
                sb_fmt(&b, "CREATE TRIGGER _knit_setu%u_%d BEFORE UPDATE OF ", i, id);
                sb_ident(&b, t->cols[i]);
                sb_add(&b, " ON ");
            }
            sb_ident(&b, t->name);
            sb_add(&b, " WHEN NEW.");
            sb_ident(&b, t->cols[i]);
            sb_add(&b, " IS NOT NULL AND (typeof(NEW.");
            sb_ident(&b, t->cols[i]);
            sb_add(&b, ") <> 'text' OR NOT json_valid(NEW.");
            sb_ident(&b, t->cols[i]);
            sb_add(&b, ") OR json_type(NEW.");
            sb_ident(&b, t->cols[i]);
            sb_add(&b, ") <> 'array' OR EXISTS (SELECT 1 FROM json_each(NEW.");
            sb_ident(&b, t->cols[i]);
            sb_add(&b, ") WHERE type NOT IN ('null', 'integer', 'real', 'text')))"
                       " BEGIN SELECT RAISE(ROLLBACK, ");
            char msg[600];
            char *lit;
            snprintf(msg, sizeof msg,
                     "knit: %s.%s is an OR-set column: write a JSON array of strings, numbers "
                     "or nulls, e.g. '[\"a\",\"b\"]'", t->name, t->cols[i]);
            lit = sqlite3_mprintf("%Q", msg);
            sb_add(&b, lit ? lit : "'knit: OR-set column needs a JSON array'");
            sqlite3_free(lit);
            sb_add(&b, "); END;");
        }
    }
    if (!b.p)
        return KNIT_ENOMEM;
    int rc = knit__exec(k, b.p);
    knit__free(b.p);
    return rc;
}

/* Creates _knit_log_<id>, _knit_rows_<id> and _knit_sets_<id>. */
static int create_meta_tables(knit_t *k, const ktable_t *t)
{
    sbuf_t b = {0};
    char keys[512];
    knit__keylist(keys, sizeof keys, t->npk, "");
    sb_fmt(&b, "CREATE TABLE IF NOT EXISTS _knit_log_%d(seq INTEGER PRIMARY KEY, op INTEGER, "
               "mask INTEGER", t->id);
    for (uint32_t i = 0; i < t->npk; i++) {
        char msg[400], *lit;
        snprintf(msg, sizeof msg, "knit: primary key column %s.%s must not be NULL", t->name,
                 t->pk[i]);
        lit = sqlite3_mprintf("%w", msg);
        sb_fmt(&b, ", k%u CONSTRAINT \"%s\" CHECK (k%u IS NOT NULL)", i, lit ? lit : "knit: NULL key", i);
        sqlite3_free(lit);
    }
    sb_add(&b, ");");
    sb_fmt(&b, "CREATE TABLE IF NOT EXISTS _knit_rows_%d(", t->id);
    for (uint32_t i = 0; i < t->npk; i++)
        sb_fmt(&b, "k%u, ", i);
    sb_fmt(&b, "ns INTEGER NOT NULL, cl INTEGER NOT NULL, ver INTEGER NOT NULL, cells BLOB NOT "
               "NULL, PRIMARY KEY(%s)) WITHOUT ROWID;", keys);
    sb_fmt(&b, "CREATE INDEX IF NOT EXISTS _knit_rows_%d_ver ON _knit_rows_%d(ver);", t->id,
           t->id);
    sb_fmt(&b, "CREATE TABLE IF NOT EXISTS _knit_sets_%d(", t->id);
    for (uint32_t i = 0; i < t->npk; i++)
        sb_fmt(&b, "k%u, ", i);
    sb_fmt(&b, "col INTEGER NOT NULL, state BLOB NOT NULL, PRIMARY KEY(%s, col)) WITHOUT ROWID;",
           keys);
    if (!b.p)
        return KNIT_ENOMEM;
    int rc = knit__exec(k, b.p);
    knit__free(b.p);
    return rc;
}

/* Writes t's entry in _knit_tables. */
static int save_table(knit_t *k, const ktable_t *t)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(
        k->db,
        "INSERT OR REPLACE INTO _knit_tables(name, id, pk, cols, kinds) VALUES (?, ?, ?, ?, ?)",
        -1, &st, NULL);
    if (rc != SQLITE_OK)
        return knit__dberr(k, rc, "writing _knit_tables");
    sbuf_t kinds = {0};
    sb_add(&kinds, "[");
    for (uint32_t i = 0; i < t->ncols; i++)
        sb_add(&kinds, t->orset[i] ? (i ? ",\"orset\"" : "\"orset\"")
                                   : (i ? ",\"lww\"" : "\"lww\""));
    sb_add(&kinds, "]");
    rc = kinds.p ? 0 : KNIT_ENOMEM;
    if (!rc) {
        /* json_array() over bound names quotes any character correctly. */
        sqlite3_stmt *ja = NULL;
        sbuf_t q = {0};
        sb_add(&q, "SELECT json_array(");
        for (uint32_t i = 0; i < t->npk; i++)
            sb_fmt(&q, "%s?%u", i ? "," : "", i + 1);
        sb_add(&q, "), json_array(");
        for (uint32_t i = 0; i < t->ncols; i++)
            sb_fmt(&q, "%s?%u", i ? "," : "", t->npk + i + 1);
        sb_add(&q, ")");
        rc = q.p ? sqlite3_prepare_v2(k->db, q.p, -1, &ja, NULL) : SQLITE_NOMEM;
        knit__free(q.p);
        if (rc == SQLITE_OK) {
            for (uint32_t i = 0; i < t->npk; i++)
                sqlite3_bind_text(ja, (int)i + 1, t->pk[i], -1, SQLITE_STATIC);
            for (uint32_t i = 0; i < t->ncols; i++)
                sqlite3_bind_text(ja, (int)(t->npk + i) + 1, t->cols[i], -1, SQLITE_STATIC);
            if (sqlite3_step(ja) == SQLITE_ROW) {
                sqlite3_bind_text(st, 1, t->name, -1, SQLITE_STATIC);
                sqlite3_bind_int(st, 2, t->id);
                sqlite3_bind_text(st, 3, (const char *)sqlite3_column_text(ja, 0), -1,
                                  SQLITE_TRANSIENT);
                sqlite3_bind_text(st, 4, (const char *)sqlite3_column_text(ja, 1), -1,
                                  SQLITE_TRANSIENT);
                sqlite3_bind_text(st, 5, kinds.p, -1, SQLITE_STATIC);
                rc = sqlite3_step(st) == SQLITE_DONE ? 0 : knit__dberr(k, sqlite3_errcode(k->db),
                                                                       "writing _knit_tables");
            } else {
                rc = knit__dberr(k, sqlite3_errcode(k->db), "encoding names");
            }
        } else {
            rc = knit__dberr(k, rc, "encoding names");
        }
        sqlite3_finalize(ja);
    }
    sqlite3_finalize(st);
    knit__free(kinds.p);
    return rc;
}

/* Logs every existing row as an insert of the given columns, so the next
** stamp backfills them as changes. */
static int backfill(knit_t *k, const ktable_t *t, int op, uint64_t mask)
{
    sbuf_t b = {0};
    char keys[512];
    knit__keylist(keys, sizeof keys, t->npk, "");
    sb_fmt(&b, "INSERT INTO _knit_log_%d(op, mask, %s) SELECT %d, %lld, ", t->id, keys, op,
           (long long)mask);
    sb_keyrefs(&b, t, "t");
    sb_add(&b, " FROM ");
    sb_ident(&b, t->name);
    sb_add(&b, " AS t");
    if (!b.p)
        return KNIT_ENOMEM;
    int rc = knit__exec(k, b.p);
    knit__free(b.p);
    return rc;
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
        return knit__err(k, KNIT_ESCHEMA, "%s: names starting with _knit_ or sqlite_ are "
                         "reserved", table);
    if ((rc = knit__begin(k)) != 0)
        return rc;
    memset(&t, 0, sizeof t);
    if ((rc = knit__load_tables(k)) != 0 || (rc = inspect_table(k, table, &ti)) != 0) {
        knit__rollback(k);
        return rc;
    }
    if (!(kinds = knit__calloc((size_t)ti.n, 1))) {
        rc = KNIT_ENOMEM;
        goto done;
    }
    if ((rc = parse_spec(k, table, spec, &ti, kinds)) != 0)
        goto done;

    ktable_t *old = knit__table(k, table);
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
                rc = knit__err(k, KNIT_ESCHEMA, "%s.%s is already tracked as %s; a column's kind "
                               "cannot change", table, old->cols[i], old->orset[i] ? "orset" : "lww");
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
        if (sqlite3_prepare_v2(k->db, "SELECT coalesce(max(id), 0) + 1 FROM _knit_tables", -1,
                               &st, NULL) == SQLITE_OK &&
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
    return rc;
}
