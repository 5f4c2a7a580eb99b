/*
** verify.c: checking a replica's metadata against its data (knit_verify).
**
** Used by tests after every simulated crash and by `sync-inspect verify`.
** It only reads, so it runs on a read-only handle while an agent syncs the
** same file.  Rows whose writes are still in the capture log are skipped
** where the log explains the difference: they are pending, not damaged.
**
** Findings: SQLite's integrity_check; a tracked table whose capture is
** missing, outdated or cannot be repaired (capture.c's check); a user row without live metadata;
*live metadata without a user
** row; undecodable cells, unknown sites, stamps beyond the stored clock;
** OR-set columns that differ from their set state; set states without a row.
*/
#include <stdarg.h>
#include <string.h>

#include "replica.h"

/* Context for one verify run. */
typedef struct vctx_s {
    knit_t *k;          /* replica */
    knit_problem_fn fn; /* reporter */
    void *data;         /* its argument */
    int count;          /* problems found */
} vctx_t;

static void report(vctx_t *v, const char *table, const char *pk, const char *msg)
{
    v->count++;
    if (v->fn)
        v->fn(v->data, table, pk, msg);
}

/* report() with a formatted message (any length). */
#ifdef __GNUC__
__attribute__((format(printf, 4, 5)))
#endif
static void
reportf(vctx_t *v, const char *table, const char *pk, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *msg = sqlite3_vmprintf(fmt, ap);
    va_end(ap);
    report(v, table, pk, msg ? msg : fmt);
    sqlite3_free(msg);
}

/* "'a', 2" for the key columns 0..npk-1 of st (quote() of each). */
static char *key_sql(sqlite3_stmt *st, uint32_t npk)
{
    sqlite3_str *s = sqlite3_str_new(NULL);
    for (uint32_t i = 0; i < npk; i++) {
        switch (sqlite3_column_type(st, (int)i)) {
        case SQLITE_INTEGER:
            sqlite3_str_appendf(s, "%s%lld", i ? ", " : "", sqlite3_column_int64(st, (int)i));
            break;
        case SQLITE_FLOAT:
            sqlite3_str_appendf(s, "%s%!.17g", i ? ", " : "", sqlite3_column_double(st, (int)i));
            break;
        case SQLITE_TEXT:
            sqlite3_str_appendf(s, "%s%Q", i ? ", " : "", sqlite3_column_text(st, (int)i));
            break;
        case SQLITE_BLOB: {
            const unsigned char *p = sqlite3_column_blob(st, (int)i);
            int n = sqlite3_column_bytes(st, (int)i);
            sqlite3_str_appendf(s, "%sX'", i ? ", " : "");
            for (int j = 0; j < n; j++)
                sqlite3_str_appendf(s, "%02X", p[j]);
            sqlite3_str_appendf(s, "'");
            break;
        }
        default:
            sqlite3_str_appendf(s, "%sNULL", i ? ", " : "");
        }
    }
    return sqlite3_str_finish(s);
}

/* Runs sql; for each row reports msg with the key in columns 0..npk-1. */
static int each_key(vctx_t *v, ktable_t *t, const char *sql, const char *msg)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(v->k->db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK)
        return knit__dberr(v->k, rc, "verify");
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        char *key = key_sql(st, t->npk);
        report(v, t->name, key, msg);
        sqlite3_free(key);
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : knit__dberr(v->k, rc, "verify");
}

/* "u."p1" = r.k0 AND ..." : the user row u of metadata row r. */
static void join_keys(sqlite3_str *s, const ktable_t *t, const char *meta)
{
    for (uint32_t i = 0; i < t->npk; i++)
        sqlite3_str_appendf(s, "%su.\"%w\" = %s.k%u", i ? " AND " : "", t->pk[i], meta, i);
}

/* Runs the query built in s (consumed) through each_key. */
static int each_key_str(vctx_t *v, ktable_t *t, sqlite3_str *s, const char *msg)
{
    int bad = sqlite3_str_errcode(s) != SQLITE_OK;
    char *q = sqlite3_str_finish(s);
    int rc = q && !bad ? each_key(v, t, q, msg) : KNIT_ENOMEM;
    sqlite3_free(q);
    return rc;
}

static int verify_table(vctx_t *v, ktable_t *t, uint64_t hlc_now, uint64_t ver_now)
{
    knit_t *k = v->k;
    int rc;

    /* Capture: each missing log trigger by name, else what capture.c's check
    ** (run when the cache was loaded) found: outdated triggers or log, a
    ** missing OR-set trigger, or a table knit can no longer track. */
    static const char *kinds[] = {"ins", "upd", "updk", "del"};
    int missing = 0;
    for (int i = 0; i < 4; i++) {
        sqlite3_stmt *st = NULL;
        char name[48];
        snprintf(name, sizeof name, "_knit_%s_%d", kinds[i], t->id);
        if (sqlite3_prepare_v2(k->db,
                               "SELECT 1 FROM sqlite_schema WHERE type = 'trigger' AND "
                               "name = ?1",
                               -1, &st, NULL) == SQLITE_OK) {
            sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
            if (sqlite3_step(st) != SQLITE_ROW) {
                reportf(v, t->name, NULL,
                        "capture trigger %s is missing: writes to the table "
                        "are not being recorded",
                        name);
                missing++;
            }
        }
        sqlite3_finalize(st);
    }
    if (!missing && t->capture != KNIT_CAPTURE_OK)
        report(v, t->name, NULL, t->capture_msg ? t->capture_msg : "capture is not current");
    if (t->capture == KNIT_CAPTURE_BROKEN)
        return 0; /* the table or a tracked column is gone: rows cannot be compared */

    /* User rows without live metadata. */
    {
        sqlite3_str *s = sqlite3_str_new(NULL);
        sqlite3_str_appendall(s, "SELECT ");
        for (uint32_t i = 0; i < t->npk; i++)
            sqlite3_str_appendf(s, "%su.\"%w\"", i ? ", " : "", t->pk[i]);
        sqlite3_str_appendf(s, " FROM \"%w\" AS u LEFT JOIN _knit_rows_%d AS r ON ", t->name,
                            t->id);
        join_keys(s, t, "r");
        sqlite3_str_appendf(s,
                            " WHERE (r.cl IS NULL OR r.cl %% 2 = 0) AND NOT EXISTS (SELECT 1 "
                            "FROM _knit_log_%d AS l WHERE ",
                            t->id);
        join_keys(s, t, "l");
        sqlite3_str_appendall(s, ")");
        rc = each_key_str(v, t, s,
                          "row exists but its metadata says it is missing or deleted "
                          "(liveness lost)");
        if (rc)
            return rc;
    }
    /* Live metadata without a user row. */
    {
        sqlite3_str *s = sqlite3_str_new(NULL);
        sqlite3_str_appendall(s, "SELECT ");
        knit__keylist_str(s, t->npk, "r.");
        sqlite3_str_appendf(s,
                            " FROM _knit_rows_%d AS r WHERE r.cl %% 2 = 1 AND NOT EXISTS "
                            "(SELECT 1 FROM \"%w\" AS u WHERE ",
                            t->id, t->name);
        join_keys(s, t, "r");
        sqlite3_str_appendf(s, ") AND NOT EXISTS (SELECT 1 FROM _knit_log_%d AS l WHERE 1", t->id);
        for (uint32_t i = 0; i < t->npk; i++)
            sqlite3_str_appendf(s, " AND l.k%u = r.k%u", i, i);
        sqlite3_str_appendall(s, ")");
        rc = each_key_str(v, t, s, "metadata says the row is live but the row is missing");
        if (rc)
            return rc;
    }
    /* Set states without a metadata row, or for a column that is not a set. */
    {
        sqlite3_str *s = sqlite3_str_new(NULL);
        sqlite3_str_appendall(s, "SELECT ");
        knit__keylist_str(s, t->npk, "s.");
        sqlite3_str_appendf(s,
                            " FROM _knit_sets_%d AS s WHERE s.col >= %u OR NOT EXISTS "
                            "(SELECT 1 FROM _knit_rows_%d AS r WHERE 1",
                            t->id, t->ncols, t->id);
        for (uint32_t i = 0; i < t->npk; i++)
            sqlite3_str_appendf(s, " AND r.k%u = s.k%u", i, i);
        sqlite3_str_appendall(s, ")");
        rc = each_key_str(v, t, s, "orphan OR-set state (no row metadata)");
        if (rc)
            return rc;
    }
    /* Cells, stamps, and OR-set columns against their states.  Whether the
    ** user row exists is read from its first key column, which a row never
    ** has NULL (the capture log refuses NULL keys). */
    {
        sqlite3_str *s = sqlite3_str_new(NULL);
        sqlite3_str_appendall(s, "SELECT ");
        knit__keylist_str(s, t->npk, "r.");
        sqlite3_str_appendf(s, ", r.cl, r.cells, u.\"%w\" IS NOT NULL", t->pk[0]);
        for (uint32_t c = 0; c < t->ncols; c++)
            sqlite3_str_appendf(s, ", u.\"%w\"", t->cols[c]);
        sqlite3_str_appendf(s, ", EXISTS (SELECT 1 FROM _knit_log_%d AS l WHERE 1", t->id);
        for (uint32_t i = 0; i < t->npk; i++)
            sqlite3_str_appendf(s, " AND l.k%u = r.k%u", i, i);
        sqlite3_str_appendf(s, ") FROM _knit_rows_%d AS r LEFT JOIN \"%w\" AS u ON ", t->id,
                            t->name);
        join_keys(s, t, "r");
        int bad = sqlite3_str_errcode(s) != SQLITE_OK;
        char *q = sqlite3_str_finish(s);
        sqlite3_stmt *st = NULL;
        rc = q && !bad ? sqlite3_prepare_v2(k->db, q, -1, &st, NULL) : SQLITE_NOMEM;
        sqlite3_free(q);
        if (rc != SQLITE_OK)
            return knit__dberr(k, rc, "verify");
        int step;
        kcell_t cells[KNIT_MAX_COLS + 1];
        knit_value_t pk[KNIT_MAX_PK];
        rc = 0;
        while (!rc && (step = sqlite3_step(st)) == SQLITE_ROW) {
            int base = (int)t->npk;
            uint64_t cl = (uint64_t)sqlite3_column_int64(st, base);
            int has_row = sqlite3_column_int(st, base + 2);
            int pending = sqlite3_column_int(st, base + 3 + (int)t->ncols);
            char *key = key_sql(st, t->npk);
            if (knit__cells_decode(sqlite3_column_blob(st, base + 1),
                                   (size_t)sqlite3_column_bytes(st, base + 1), t->ncols + 1,
                                   cells)) {
                report(v, t->name, key, "row metadata (cells) cannot be decoded");
                sqlite3_free(key);
                continue;
            }
            if (cl == 0)
                report(v, t->name, key, "causal length is 0");
            for (uint32_t i = 0; i <= t->ncols; i++) {
                if (!cells[i].hlc)
                    continue;
                if (cells[i].hlc > hlc_now) {
                    reportf(v, t->name, key, "%s is stamped after the replica's clock",
                            i ? t->cols[i - 1] : "liveness");
                }
                if (cells[i].ver > ver_now) {
                    reportf(v, t->name, key, "%s has a version beyond the replica's",
                            i ? t->cols[i - 1] : "liveness");
                }
                if (cells[i].site == 0 || cells[i].site >= k->nsites) {
                    reportf(v, t->name, key, "%s names an unknown site",
                            i ? t->cols[i - 1] : "liveness");
                }
            }
            if (knit_cl_live(cl) && has_row && !pending && t->setmask) {
                for (uint32_t i = 0; i < t->npk; i++)
                    knit__column_value(st, (int)i, &pk[i]);
                for (uint32_t c = 0; c < t->ncols && !rc; c++) {
                    if (!t->orset[c])
                        continue;
                    knit_orset_t set;
                    int found;
                    char *json = NULL;
                    size_t jn = 0;
                    int r2 = knit__set_load(k, t, pk, c, &set, &found);
                    if (r2 == KNIT_ECORRUPT) {
                        reportf(v, t->name, key, "OR-set state of %s cannot be decoded",
                                t->cols[c]);
                        continue;
                    }
                    if (r2) {
                        rc = r2;
                        break;
                    }
                    if (!knit_orset_json(&set, &json, &jn)) {
                        const unsigned char *cur = sqlite3_column_text(st, base + 3 + (int)c);
                        int curn = sqlite3_column_bytes(st, base + 3 + (int)c);
                        /* NULL is the empty set (ARCHITECTURE.md): a row
                        ** whose set cell has not arrived yet holds it. */
                        int empty_null = !cur && set.nelems == 0;
                        if (!empty_null &&
                            (!cur || (size_t)curn != jn || memcmp(cur, json, jn) != 0)) {
                            reportf(v, t->name, key,
                                    "OR-set column %s holds %.80s but its set "
                                    "state is %.80s",
                                    t->cols[c], cur ? (const char *)cur : "NULL", json);
                        }
                    }
                    knit__free(json);
                    knit_orset_free(&set);
                }
            }
            sqlite3_free(key);
        }
        if (!rc && step != SQLITE_DONE)
            rc = knit__dberr(k, step, "verify");
        sqlite3_finalize(st);
    }
    return rc;
}

int knit_verify(knit_t *k, knit_problem_fn problem, void *data) /* see knit.h */
{
    vctx_t v = {k, problem, data, 0};
    sqlite3_stmt *st = NULL;
    int64_t hlc, ver;
    int rc = knit__exec(k, "BEGIN");
    if (rc)
        return rc;
    rc = sqlite3_prepare_v2(k->db, "PRAGMA integrity_check", -1, &st, NULL);
    if (rc == SQLITE_OK) {
        while (sqlite3_step(st) == SQLITE_ROW) {
            const char *line = (const char *)sqlite3_column_text(st, 0);
            if (line && strcmp(line, "ok") != 0)
                report(&v, NULL, NULL, line);
        }
        rc = 0;
    } else {
        rc = knit__dberr(k, rc, "integrity_check");
    }
    sqlite3_finalize(st);
    if (!rc)
        rc = knit__meta_get_int(k, "hlc", &hlc);
    if (!rc)
        rc = knit__meta_get_int(k, "version", &ver);
    if (!rc) {
        k->schema_cookie = -1;
        rc = knit__load_tables(k);
    }
    if (!rc)
        rc = knit__load_sites(k);
    if (!rc && (k->site_idx == 0 || k->site_idx >= k->nsites))
        report(&v, NULL, NULL, "the replica's own site id is missing from _knit_sites");
    for (size_t i = 0; !rc && i < k->ntables; i++)
        rc = verify_table(&v, &k->tables[i], (uint64_t)hlc, (uint64_t)ver);
    knit__rollback(k);
    return rc ? rc : v.count;
}
