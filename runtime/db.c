/*
** db.c: the bottom of the replica: errors, transactions, statements, the
** _knit_meta key/value store, the clock, and building SQL text.
**
** Every other runtime file reaches SQLite's handle through these helpers,
** so that one rule holds everywhere: an error leaves its text in
** knit->errmsg (knit_errmsg), with SQLite's own message where SQLite
** failed, and a failed transaction is rolled back with every in-memory
** mirror of the file reset (knit__rollback).
**
** SQL text is always built with sqlite3_str: identifiers inside double
** quotes with %w, literals with %Q, so names of any length and content are
** safe (no fixed buffers).
*/
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "replica.h"
#include "sqlerr.h"
/* ---------------------------------------------------------------------- */
/* Errors                                                                 */

int knit__err(knit_t *k, int code, const char *fmt, ...)
{
    if (k) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(k->errmsg, sizeof k->errmsg, fmt, ap);
        va_end(ap);
    }
    return code;
}

int knit__dberr(knit_t *k, int rc, const char *what)
{
    int code = knit__sqlite_code(rc);
    return knit__err(k, code, "%s: %s", what,
                     k && k->db ? sqlite3_errmsg(k->db) : sqlite3_errstr(rc));
}

const char *knit_errmsg(knit_t *k) /* see knit.h */
{
    return k ? k->errmsg : "";
}

int knit__exec(knit_t *k, const char *sql)
{
    char *msg = NULL;
    int rc = sqlite3_exec(k->db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        int code = knit__dberr(k, rc, "sql");
        if (msg)
            knit__err(k, code, "%s", msg);
        sqlite3_free(msg);
        return code;
    }
    return 0;
}

/* The SQL of knit__fixed's statements, by KS_*. */
static const char *const FIXED_SQL[KS_N] = {
    [KS_BEGIN] = "BEGIN IMMEDIATE",
    [KS_COMMIT] = "COMMIT",
    [KS_DATA_VERSION] = "PRAGMA data_version",
    [KS_SCHEMA_VERSION] = "PRAGMA schema_version",
    [KS_SQL_NOW] = "SELECT CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)",
    [KS_REJECTED_MAX] = "SELECT max(id) FROM _knit_rejected",
    [KS_NS_NAME] = "SELECT name FROM _knit_ns WHERE idx = ?",
    [KS_INHERITED] = "SELECT CAST(substr(key, 9) AS INTEGER), value FROM _knit_meta"
                     " WHERE key GLOB 'inherit:*'",
    [KS_ASIDE_MAX] = "SELECT max(id) FROM _knit_aside",
    [KS_NS_IDX] = "SELECT idx FROM _knit_ns WHERE name = ?",
    [KS_NS_CURSOR] = "UPDATE _knit_ns SET cursor = ? WHERE idx = ?",
    /* The first row says whether ?1 is an array at all (json_each would
    ** walk an object's members); the rest are its elements. */
    [KS_JSON_ARRAY] = "SELECT NULL, json_type(?1) UNION ALL"
                      " SELECT value, type FROM json_each(?1) WHERE json_type(?1) = 'array'",
    [KS_REPUSH] = "SELECT CAST(substr(key, 8) AS INTEGER), CAST(value AS INTEGER)"
                  " FROM _knit_meta WHERE key GLOB 'repush:*'",
};

sqlite3_stmt *knit__fixed(knit_t *k, int which)
{
    /* Preparing these cost more than running them: a poll that stamps one
    ** row prepared six statements, about a third of its instructions. */
    return knit__prepare(k, &k->fixed[which], FIXED_SQL[which]) == 0 ? k->fixed[which] : NULL;
}

int64_t knit__fixed_int(knit_t *k, int which, int64_t def)
{
    sqlite3_stmt *st = knit__fixed(k, which);
    int64_t v = def;
    if (st && sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0); /* NULL: 0 */
    if (st)
        sqlite3_reset(st);
    return v;
}

/* Steps a fixed statement that returns no row (BEGIN, COMMIT). */
static int fixed_run(knit_t *k, int which)
{
    sqlite3_stmt *st = knit__fixed(k, which);
    if (!st)
        return knit__dberr(k, sqlite3_errcode(k->db), "sql");
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) {
        sqlite3_reset(st);
        return 0;
    }
    rc = sqlite3_reset(st);
    return knit__err(k, knit__sqlite_code(rc), "%s", sqlite3_errmsg(k->db));
}

int knit__begin(knit_t *k)
{
    if (k->readonly)
        return knit__err(k, KNIT_EREADONLY, "replica was opened read-only");
    int rc = fixed_run(k, KS_BEGIN);
    /* After a rollback the site cache is empty (knit__rollback): reload it
    ** inside the transaction, where it cannot change under us. */
    if (!rc && k->sites_stale) {
        if ((rc = knit__load_sites(k)) != 0)
            sqlite3_exec(k->db, "ROLLBACK", NULL, NULL, NULL);
        else
            k->sites_stale = 0;
    }
    return rc;
}

int knit__commit(knit_t *k)
{
    return fixed_run(k, KS_COMMIT);
}

void knit__rollback(knit_t *k)
{
    if (!sqlite3_get_autocommit(k->db))
        sqlite3_exec(k->db, "ROLLBACK", NULL, NULL, NULL);
    /* Every in-memory mirror of the file may now describe rows the
    ** rollback removed (a site interned by a failed apply, a table tracked
    ** by a failed knit_track): forget them all; they reload from the file
    ** when next needed. */
    k->nsites = 0;
    k->sites_stale = 1;
    k->schema_cookie = -1;
    for (size_t i = 0; i < k->ntables; i++)
        k->tables[i].ev_rows = 0;
    k->ev_local = k->ev_remote = 0;
}

int knit__prepare(knit_t *k, sqlite3_stmt **st, const char *sql)
{
    if (*st) {
        sqlite3_reset(*st);
        return 0;
    }
    int rc = sqlite3_prepare_v3(k->db, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL);
    return rc == SQLITE_OK ? 0 : knit__dberr(k, rc, "prepare");
}

/* ---------------------------------------------------------------------- */
/* Values                                                                 */

int knit__bind_value(sqlite3_stmt *st, int i, const knit_value_t *v)
{
    switch (v->type) {
    case KNIT_INTEGER:
        return sqlite3_bind_int64(st, i, v->u.i);
    case KNIT_REAL:
        return sqlite3_bind_double(st, i, v->u.r);
    case KNIT_TEXT:
        return sqlite3_bind_text64(st, i, v->u.b.p ? v->u.b.p : "", v->u.b.n, SQLITE_STATIC,
                                   SQLITE_UTF8);
    case KNIT_BLOB:
        return sqlite3_bind_blob64(st, i, v->u.b.p ? v->u.b.p : "", v->u.b.n, SQLITE_STATIC);
    default:
        return sqlite3_bind_null(st, i);
    }
}

void knit__column_value(sqlite3_stmt *st, int i, knit_value_t *v)
{
    memset(v, 0, sizeof *v);
    switch (sqlite3_column_type(st, i)) {
    case SQLITE_INTEGER:
        v->type = KNIT_INTEGER;
        v->u.i = sqlite3_column_int64(st, i);
        break;
    case SQLITE_FLOAT:
        v->type = KNIT_REAL;
        v->u.r = sqlite3_column_double(st, i);
        break;
    case SQLITE_TEXT:
        v->type = KNIT_TEXT;
        v->u.b.p = sqlite3_column_text(st, i);
        v->u.b.n = (size_t)sqlite3_column_bytes(st, i);
        break;
    case SQLITE_BLOB:
        v->type = KNIT_BLOB;
        v->u.b.p = sqlite3_column_blob(st, i);
        v->u.b.n = (size_t)sqlite3_column_bytes(st, i);
        break;
    default:
        v->type = KNIT_NULL;
    }
}

/* ---------------------------------------------------------------------- */
/* The site cache                                                         */

/* Loads _knit_sites into k->sites: at open, and in the first transaction
** after a rollback emptied it. */
int knit__load_sites(knit_t *k)
{
    sqlite3_stmt *st = NULL;
    int rc =
        sqlite3_prepare_v2(k->db, "SELECT idx, site FROM _knit_sites ORDER BY idx", -1, &st, NULL);
    if (rc != SQLITE_OK)
        return knit__dberr(k, rc, "reading _knit_sites");
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t idx = sqlite3_column_int64(st, 0);
        const void *p = sqlite3_column_blob(st, 1);
        if (idx <= 0 || idx > (int64_t)UINT32_MAX - 1 || sqlite3_column_bytes(st, 1) != 16) {
            sqlite3_finalize(st);
            return knit__err(k, KNIT_ECORRUPT, "_knit_sites holds a malformed entry (idx %lld)",
                             (long long)idx);
        }
        if ((uint32_t)idx >= k->nsites) {
            knit_site_t *n = knit__realloc(k->sites, ((size_t)idx + 1) * sizeof *n);
            if (!n) {
                sqlite3_finalize(st);
                return KNIT_ENOMEM;
            }
            memset(n + k->nsites, 0, ((size_t)idx + 1 - k->nsites) * sizeof *n);
            k->sites = n;
            k->nsites = (uint32_t)idx + 1;
        }
        memcpy(k->sites[idx].b, p, 16);
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : knit__dberr(k, rc, "reading _knit_sites");
}

/* ---------------------------------------------------------------------- */
/* _knit_meta                                                             */

int knit__meta_get(knit_t *k, const char *key, sqlite3_stmt **out)
{
    int rc = knit__prepare(k, &k->meta_get, "SELECT value FROM _knit_meta WHERE key = ?");
    if (rc)
        return rc;
    sqlite3_bind_text(k->meta_get, 1, key, -1, SQLITE_STATIC);
    rc = sqlite3_step(k->meta_get);
    if (rc == SQLITE_ROW) {
        *out = k->meta_get;
        return 0;
    }
    sqlite3_reset(k->meta_get);
    if (rc == SQLITE_DONE)
        return KNIT_ENOTFOUND;
    return knit__dberr(k, rc, "reading _knit_meta");
}

int knit__meta_get_int(knit_t *k, const char *key, int64_t *out)
{
    sqlite3_stmt *st;
    int rc = knit__meta_get(k, key, &st);
    if (rc == KNIT_ENOTFOUND) {
        *out = 0;
        return 0;
    }
    if (rc)
        return rc;
    *out = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    return 0;
}

static int meta_put(knit_t *k, const char *key, const knit_value_t *v)
{
    int rc = knit__prepare(k, &k->meta_put,
                           "INSERT OR REPLACE INTO _knit_meta(key, value) VALUES (?, ?)");
    if (rc)
        return rc;
    sqlite3_bind_text(k->meta_put, 1, key, -1, SQLITE_STATIC);
    knit__bind_value(k->meta_put, 2, v);
    rc = sqlite3_step(k->meta_put);
    sqlite3_reset(k->meta_put);
    sqlite3_clear_bindings(k->meta_put);
    return rc == SQLITE_DONE ? 0 : knit__dberr(k, rc, "writing _knit_meta");
}

int knit__meta_set_int(knit_t *k, const char *key, int64_t v)
{
    knit_value_t x = {.type = KNIT_INTEGER, .u.i = v};
    return meta_put(k, key, &x);
}

int knit__meta_set_blob(knit_t *k, const char *key, const void *p, size_t n, int text)
{
    knit_value_t x = {.type = text ? KNIT_TEXT : KNIT_BLOB};
    x.u.b.p = p;
    x.u.b.n = n;
    return meta_put(k, key, &x);
}

/* ---------------------------------------------------------------------- */
/* Clock                                                                  */

uint64_t knit__system_clock(void *data)
{
    struct timespec ts;
    (void)data;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t knit__now(knit_t *k)
{
    return k->clock(k->clock_data);
}

int knit_version(knit_t *k, uint64_t *out) /* see knit.h */
{
    int64_t v = 0;
    int rc = knit__meta_get_int(k, "version", &v);
    *out = (uint64_t)v;
    return rc;
}

/* ---------------------------------------------------------------------- */
/* SQL text                                                               */

/* Finishes s (consumed); NULL if it ran out of memory. */
char *knit__str_done(sqlite3_str *s)
{
    if (sqlite3_str_errcode(s) != SQLITE_OK) {
        sqlite3_free(sqlite3_str_finish(s));
        return NULL;
    }
    return sqlite3_str_finish(s);
}

/* Runs the SQL built in s (consumed). */
int knit__exec_str(knit_t *k, sqlite3_str *s)
{
    char *sql = knit__str_done(s);
    if (!sql)
        return knit__err(k, KNIT_ENOMEM, "out of memory building SQL");
    int rc = knit__exec(k, sql);
    sqlite3_free(sql);
    return rc;
}

/* Prepares the SQL built in s (consumed) into *st. */
int knit__prepare_temp(knit_t *k, sqlite3_stmt **st, sqlite3_str *s, const char *what)
{
    char *sql = knit__str_done(s);
    *st = NULL;
    if (!sql)
        return knit__err(k, KNIT_ENOMEM, "out of memory building SQL");
    int rc = sqlite3_prepare_v2(k->db, sql, -1, st, NULL);
    sqlite3_free(sql);
    return rc == SQLITE_OK ? 0 : knit__dberr(k, rc, what);
}

int knit__prepare_str(knit_t *k, sqlite3_stmt **st, sqlite3_str *s)
{
    char *sql = knit__str_done(s);
    if (!sql)
        return knit__err(k, KNIT_ENOMEM, "out of memory building SQL");
    int rc = knit__prepare(k, st, sql);
    sqlite3_free(sql);
    return rc;
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
void knit__keyrefs(sqlite3_str *s, const ktable_t *t, const char *rec)
{
    for (uint32_t i = 0; i < t->npk; i++)
        sqlite3_str_appendf(s, "%s%s.\"%w\"", i ? ", " : "", rec, t->pk[i]);
}

/* "<a>."p1" = <b>.k0 AND ..." : the user row a of metadata or log row b. */
void knit__keys_join(sqlite3_str *s, const ktable_t *t, const char *user, const char *meta)
{
    for (uint32_t i = 0; i < t->npk; i++)
        sqlite3_str_appendf(s, "%s%s.\"%w\" = %s.k%u", i ? " AND " : "", user, t->pk[i], meta, i);
}

int knit__keys_equal(const knit_value_t *a, const knit_value_t *b, uint32_t npk)
{
    for (uint32_t i = 0; i < npk; i++)
        if (knit_value_cmp(&a[i], &b[i]) != 0)
            return 0;
    return 1;
}

int knit__run_keyed(knit_t *k, sqlite3_str *s, const ktable_t *t, const knit_value_t *pk,
                    const char *what)
{
    sqlite3_stmt *st = NULL;
    int rc = knit__prepare_temp(k, &st, s, what);
    if (rc)
        return rc;
    for (uint32_t i = 0; i < t->npk; i++)
        knit__bind_value(st, (int)i + 1, &pk[i]);
    rc = sqlite3_step(st);
    rc = rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : knit__dberr(k, rc, what);
    sqlite3_finalize(st);
    return rc;
}
