/*
** track.c: making a table synced (knit_track).  The capture triggers it
** installs are capture.c's; the cache of tracked tables is tables.c's.
**
** knit_track reads the table's schema, refuses what merging cannot keep
** (the reasons are listed in docs/ARCHITECTURE.md), creates the per-table
** metadata tables and the capture triggers, and backfills existing rows by
** logging them and stamping them, all in one transaction.
**
** Design notes
**   1. A column added by ALTER TABLE ADD COLUMN holds, in every existing
**      row, a default nobody wrote.  knit_track backfills those cells with
**      the lowest stamp (wall time 0, HLC 0: stamp.c turns that into HLC 1),
**      so any real write, on any replica, wins over them.
**   2. All SQL text is built with sqlite3_str (%w inside double quotes for
**      identifiers, %Q for literals): names of any length and content.
*/
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "replica.h"

/* Column kinds in a spec. */
#define KIND_LWW 0
#define KIND_ORSET 1
#define KIND_NS 2 /* LWW, and its value selects the row's namespace (nscol.c) */

/* Parses spec ("tags:orset,labels:orset", "tags:lww" or "org_id:ns")
** against the table's columns into kinds[i].  Unknown columns or kinds, and
** more than one ns column, are errors. */
static int parse_spec(knit_t *k, const char *table, const char *spec, const ktinfo_t *ti,
                      uint8_t *kinds)
{
    const char *p = spec ? spec : "";
    int nsdecl = 0;
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
            is_set = KIND_ORSET;
        else if (kn == 3 && memcmp(kind, "lww", 3) == 0)
            is_set = KIND_LWW;
        else if (kn == 2 && memcmp(kind, "ns", 2) == 0)
            is_set = KIND_NS;
        else
            return knit__err(k, KNIT_EINVAL, "unknown column kind \"%.*s\" (use lww, orset or ns)",
                             (int)(kn > 100 ? 100 : kn), kind);
        if (is_set == KIND_NS && nsdecl++)
            return knit__err(k, KNIT_EINVAL, "%s: only one column can select the namespace", table);
        int found = 0;
        for (int i = 0; i < ti->n; i++) {
            if (strlen(ti->c[i].name) != cn || memcmp(ti->c[i].name, col, cn) != 0)
                continue;
            if (ti->c[i].pk)
                return knit__err(k, KNIT_ESCHEMA,
                                 "%s.%s is part of the primary key and cannot "
                                 "be an OR-set or select the namespace",
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
/* Tracking a table                                                       */

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
    /* at: the commit's wall time (julianday(); capture version 2: ms); hlc:
    ** the replica's HLC the writer saw (capture version 2 only, else NULL). */
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
    return knit__exec_str(k, s);
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
        sqlite3_str_appendf(s, "%s'%s'", i ? ", " : "",
                            t->orset[i]          ? "orset"
                            : t->nscol == (int)i ? "ns"
                                                 : "lww");
    sqlite3_str_appendall(s, "))");
    int rc = knit__prepare_temp(k, &st, s, "writing _knit_tables");
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
    knit__log_insert(s, t);
    sqlite3_str_appendf(s, "SELECT %d, %lld, ", op, (long long)mask);
    knit__keyrefs(s, t, "u");
    sqlite3_str_appendf(s, ", %s FROM \"%w\" AS u", op == KNIT_OP_INSERT ? "NULL, NULL" : "0, 0",
                        t->name);
    if (op != KNIT_OP_INSERT) {
        sqlite3_str_appendf(s,
                            " WHERE NOT EXISTS (SELECT 1 FROM _knit_log_%d AS l WHERE "
                            "l.op = 1 AND ",
                            t->id);
        knit__keys_join(s, t, "u", "l");
        sqlite3_str_appendall(s, ")");
    }
    return knit__exec_str(k, s);
}

int knit_track(knit_t *k, const char *table, const char *spec) /* see knit.h */
{
    ktinfo_t ti;
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
    t.nscol = -1;
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
    if ((rc = knit__inspect_table(k, table, &ti)) != 0)
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
            int was = old->orset[i] ? KIND_ORSET : old->nscol == (int)i ? KIND_NS : KIND_LWW;
            if (declared && kinds[found] != was)
                rc = knit__err(k, KNIT_ESCHEMA,
                               "%s.%s is already tracked as %s; a column's kind "
                               "cannot change",
                               table, old->cols[i],
                               was == KIND_ORSET ? "orset"
                               : was == KIND_NS  ? "ns"
                                                 : "lww");
            if (was == KIND_NS)
                t.nscol = (int)t.ncols;
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
        if (kinds[j] == KIND_NS) {
            if (t.nscol >= 0) {
                rc = knit__err(k, KNIT_ESCHEMA, "%s.%s already selects the namespace", table,
                               t.cols[t.nscol]);
                break;
            }
            t.nscol = (int)t.ncols;
        }
        t.orset[t.ncols] = kinds[j] == KIND_ORSET;
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
    if (t.nscol >= 0 && (rc = knit__gone_create(k, &t)) != 0)
        goto done;
    if ((rc = save_table(k, &t)) != 0 || (rc = knit__create_triggers(k, &t, &ti)) != 0)
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
    knit__free_table(&t);
    knit__free(kinds);
    knit__tinfo_free(&ti);
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
