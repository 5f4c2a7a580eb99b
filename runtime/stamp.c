/*
** stamp.c: turning captured writes into CRDT metadata.
**
** The capture triggers log (op, mask, key, at): at is the writer's wall
** time as julianday() (plain SQL cannot run knit's clock); a log row of
** capture version 2 has it in ms and also the HLC its writer saw.
** Stamping runs in a write transaction, so it sees every committed log row
** and nothing else can write meanwhile.  It takes one new HLC (the tick) and one new local version
** (one "stamp" is the unit that later travels together), and folds the log
** into _knit_rows_<id> with a single INSERT ... SELECT ... ON CONFLICT
** statement per table, so SQLite's engine does the per-row work.
**
** Design notes
**   1. Last writer wins by the time of the write, not of the stamp: a write
**      made while no agent ran must not beat a later write made elsewhere.
**      Each logged row is stamped with its wall time, at << 16 (never
**      beyond the tick), and then raised just above every cell its row
**      holds (knit_cells_merge).  Every apply stamps the log first, so the
**      cells a row holds when its log row is folded are the cells the
**      writer saw, and the write beats them even when the wall clock lags
**      (causality, per row: LWW compares the cells of one row only).  For
**      one key the log order is kept, so a later write of the same fold
**      beats an earlier one.  Log rows of capture version 2 also carry the
**      HLC the writer saw in _knit_meta; their stamp is at least that + 1.
**      The tick bounds it from above, so no stamp is beyond the replica's
**      clock (an injected test clock still rules) and the stored HLC
**      advances to the tick as before.
**   2. Log rows without a wall time (written by an older knit's triggers, or
**      found by a capture repair) are stamped with the tick.  So is every
**      row when the replica's clock is not the OS clock the triggers read
**      (knit_options_t.clock more than WALL_AGREE_MS away from it, as test
**      clocks are): times of two different clocks do not compare.  Cells of
**      a column backfilled by knit_track log at = 0: nobody wrote them, and
**      they get HLC 1, below any real write (track.c design note 1).
**   3. Stamps within one fold may differ per row; for one key the log order
**      decides (a later log row replaces the cells it writes), which is the
**      order of the commits.
**   4. A long log becomes several units.  A stamp is one local version, one
**      unit that travels whole, unless its log may change more than
**      UNIT_CELLS cells (estimated per log row: an insert all its cells, an
**      update those of its mask and the liveness, a delete one).  Then it
**      takes a new version every UNIT_CELLS cells, in log order (the order
**      of the commits), which bounds what a reader of one unit holds in
**      memory.  Nothing that would travel whole is split: a push carries at
**      most the relay's max_changes (65,536 by default), and a unit larger
**      than a push is sent in pieces anyway (PROTOCOL.md 6.3); units that
**      fit one push together still travel as one (the client coalesces a
**      push's units).  The fold of each unit is the statement above, on its
**      range of the log; the OR-set pass runs once, after all of them, on
**      the rows as they end.  Tables whose column picks the namespace
**      (nscol.c) are folded whole.
**
** OR-set columns: after the fold, each logged row's arrays are compared
** with the stored set states; new elements are added with fresh dots of this
** site, missing ones removed, and the column rewritten in canonical form when
** the app wrote it otherwise.
*/
#include <string.h>
#include <time.h>

#include "replica.h"

/* ---------------------------------------------------------------------- */
/* Stamping OR-set columns                                                */

/* Parses the JSON array the app wrote into a sorted, unique element list
** (an OR-set used only for its elements).  NULL is the empty set. */
static int parse_array(knit_t *k, ktable_t *t, uint32_t col, const knit_value_t *json,
                       knit_orset_t *want)
{
    sqlite3_stmt *st;
    int rc;
    knit_orset_init(want);
    if (json->type == KNIT_NULL)
        return 0;
    if (!(st = knit__fixed(k, KS_JSON_ARRAY))) /* its first row: is it an array */
        return knit__dberr(k, sqlite3_errcode(k->db), "reading an OR-set array");
    knit__bind_value(st, 1, json);
    int first = 1;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        knit_value_t e;
        const char *type = (const char *)sqlite3_column_text(st, 1);
        if (first) {
            first = 0;
            if (json->type != KNIT_TEXT || !type || strcmp(type, "array") != 0) {
                rc = SQLITE_MISMATCH;
                break;
            }
            continue;
        }
        if (!type || (strcmp(type, "null") && strcmp(type, "integer") && strcmp(type, "real") &&
                      strcmp(type, "text"))) {
            rc = SQLITE_MISMATCH;
            break;
        }
        knit__column_value(st, 0, &e);
        if ((rc = knit_orset_add(want, 0, &e, NULL)) != 0) {
            sqlite3_reset(st);
            knit_orset_free(want);
            return rc;
        }
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        knit_orset_free(want);
        return knit__err(k, KNIT_ECONSTRAINT,
                         "%s.%s is an OR-set column and holds something other than a JSON "
                         "array of strings, numbers or nulls",
                         t->name, t->cols[col]);
    }
    return 0;
}

/* Brings set state s to the elements of want, with dots of this site.
** *changed is set when s changed. */
static int set_diff(knit_t *k, knit_orset_t *s, const knit_orset_t *want, int *changed)
{
    int rc = 0;
    *changed = 0;
    for (size_t i = 0; i < want->nelems && !rc; i++) {
        if (!knit_orset_contains(s, &want->elems[i].v)) {
            rc = knit_orset_add(s, k->site_idx, &want->elems[i].v, NULL);
            *changed = 1;
        }
    }
    for (size_t i = 0; i < s->nelems && !rc;) {
        if (!knit_orset_contains(want, &s->elems[i].v)) {
            knit_value_t e = s->elems[i].v;
            /* e's bytes belong to s; remove compares before it frees. */
            rc = knit_orset_remove(s, &e, NULL);
            *changed = 1;
        } else {
            i++;
        }
    }
    return rc;
}

/* Processes the OR-set columns of every row logged up to seq max. */
static int stamp_sets(knit_t *k, ktable_t *t, int64_t max)
{
    int rc;
    if (!t->st[ST_SETROWS]) {
        sqlite3_str *q = sqlite3_str_new(NULL);
        /* Per key: whether an insert started a new life of the row
        ** (marked by mark_new_lives), whose sets start empty (R5). */
        sqlite3_str_appendall(q, "SELECT ");
        knit__keylist_str(q, t->npk, "");
        sqlite3_str_appendf(q,
                            ", max(op = 1 AND mask = 0) FROM _knit_log_%d WHERE seq <= ?1"
                            " AND (op = 1 OR (op = 2 AND (mask & ?2) <> 0)) GROUP BY ",
                            t->id);
        knit__keylist_str(q, t->npk, "");
        if ((rc = knit__prepare_str(k, &t->st[ST_SETROWS], q)) != 0)
            return rc;
    } else {
        sqlite3_reset(t->st[ST_SETROWS]);
    }
    if ((rc = knit__user_get_prepare(k, t)) != 0)
        return rc;
    sqlite3_stmt *rows = t->st[ST_SETROWS];
    sqlite3_bind_int64(rows, 1, max);
    sqlite3_bind_int64(rows, 2, (int64_t)t->setmask);
    knit_value_t pk[KNIT_MAX_PK];
    int step;
    while ((step = sqlite3_step(rows)) == SQLITE_ROW) {
        for (uint32_t i = 0; i < t->npk; i++)
            knit__column_value(rows, (int)i, &pk[i]);
        int new_life = sqlite3_column_int(rows, (int)t->npk);
        sqlite3_stmt *ug = t->st[ST_USERGET];
        sqlite3_reset(ug);
        for (uint32_t i = 0; i < t->npk; i++)
            knit__bind_value(ug, (int)i + 1, &pk[i]);
        int urc = sqlite3_step(ug);
        if (urc == SQLITE_DONE)
            continue; /* deleted later in the same stamp: the delete decides */
        if (urc != SQLITE_ROW) {
            rc = knit__dberr(k, urc, "reading a row");
            break;
        }
        for (uint32_t c = 0; c < t->ncols && !rc; c++) {
            if (!t->orset[c])
                continue;
            knit_value_t cur;
            knit_orset_t s, want;
            int found, changed;
            char *json = NULL;
            size_t jn = 0;
            knit__column_value(ug, (int)c, &cur);
            if ((rc = parse_array(k, t, c, &cur, &want)) != 0)
                break;
            if ((rc = knit__set_load(k, t, pk, c, &s, &found)) != 0) {
                knit_orset_free(&want);
                break;
            }
            if (new_life) {
                /* The stored state is an earlier life's: its dots and
                ** removes must not leak into this one. */
                knit_orset_free(&s);
                knit_orset_init(&s);
                found = 0;
            }
            rc = set_diff(k, &s, &want, &changed);
            if (!rc && (changed || !found))
                rc = knit__set_save(k, t, pk, c, &s);
            if (!rc)
                rc = knit_orset_json(&s, &json, &jn);
            if (!rc &&
                (cur.type != KNIT_TEXT || cur.u.b.n != jn || memcmp(cur.u.b.p, json, jn) != 0)) {
                knit_value_t v = {.type = KNIT_TEXT};
                v.u.b.p = json;
                v.u.b.n = jn;
                rc = knit__user_write_col(k, t, pk, c, &v);
            }
            knit__free(json);
            knit_orset_free(&s);
            knit_orset_free(&want);
        }
        sqlite3_reset(ug);
        if (rc)
            break;
    }
    if (!rc && step != SQLITE_ROW && step != SQLITE_DONE)
        rc = knit__dberr(k, step, "reading the capture log");
    sqlite3_reset(rows);
    return rc;
}

/* ---------------------------------------------------------------------- */
/* Stamping                                                               */

/* Empties t's capture log (after its fold). */
static int log_clear(knit_t *k, ktable_t *t)
{
    int rc;
    if (!t->st[ST_LOGCLEAR]) {
        sqlite3_str *q = sqlite3_str_new(NULL);
        sqlite3_str_appendf(q, "DELETE FROM _knit_log_%d", t->id);
        if ((rc = knit__prepare_str(k, &t->st[ST_LOGCLEAR], q)) != 0)
            return rc;
    }
    rc = sqlite3_step(t->st[ST_LOGCLEAR]);
    sqlite3_reset(t->st[ST_LOGCLEAR]);
    return rc == SQLITE_DONE ? 0 : knit__dberr(k, rc, "clearing the capture log");
}

/* Advances the replica's HLC for a local event, persisting it. */
int knit__tick(knit_t *k, uint64_t *out)
{
    int64_t h;
    uint64_t clock;
    int rc = knit__meta_get_int(k, "hlc", &h);
    if (rc)
        return rc;
    clock = (uint64_t)h;
    if ((rc = knit_hlc_tick(&clock, knit__now(k), out)) != 0)
        return knit__err(k, rc, "the HLC cannot advance");
    return knit__meta_set_int(k, "hlc", (int64_t)clock);
}

/* Takes the next local version. */
int knit__next_version(knit_t *k, uint64_t *out)
{
    int64_t v;
    int rc = knit__meta_get_int(k, "version", &v);
    if (!rc)
        rc = knit__meta_set_int(k, "version", v + 1);
    *out = (uint64_t)v + 1;
    return rc;
}

/* One stamp: its tick and version, taken when the first log row is found. */
typedef struct stamp_s {
    uint64_t hlc;     /* the tick (0 = not taken yet) */
    uint64_t ver;     /* the local version */
    int64_t write_ns; /* namespace of new rows */
    int wall_times;   /* the log's wall times are comparable to the clock (note 2) */
    size_t rows;      /* metadata rows written */
    size_t cells;     /* cells the current unit may hold so far (note 4) */
} stamp_t;

#define WALL_AGREE_MS 1000 /* design note 2 */

/* Whether the replica's clock is the clock the capture triggers read
** (SQLite's 'now', from the VFS), give or take WALL_AGREE_MS (design
** note 2).  A test clock far from it makes the log's times meaningless. */
static int wall_times_usable(knit_t *k)
{
    int64_t sql_now = knit__fixed_int(k, KS_SQL_NOW, 0);
    int64_t d = (int64_t)knit__now(k) - sql_now;
    return d >= -WALL_AGREE_MS && d <= WALL_AGREE_MS;
}

/* Before the fold: marks (mask = 0; an insert logs -1, unused by the fold) each
** logged insert that starts a new life of its row, because the row was
** deleted before this stamp or earlier in this log.  An insert of a live
** row (INSERT OR REPLACE) stays in the same life and keeps its sets'
** states; a new life's sets start empty, or the earlier life's dots and
** removes would leak into it and cancel a concurrent re-insert's adds. */
static int mark_new_lives(knit_t *k, ktable_t *t, int64_t max)
{
    int rc;
    if (!t->st[ST_NEWLIFE]) {
        /* The keys the log deletes, with their first delete, materialized
        ** once: SQLite gives the CTE an automatic index, so each logged
        ** insert costs one lookup, not a scan of the log before it (which
        ** made a first stamp of many rows quadratic). */
        sqlite3_str *q = sqlite3_str_new(NULL);
        sqlite3_str_appendall(q, "WITH d AS MATERIALIZED (SELECT ");
        knit__keylist_str(q, t->npk, "");
        sqlite3_str_appendf(q,
                            ", min(seq) AS s FROM _knit_log_%d WHERE seq <= ?1 AND op = 3"
                            " GROUP BY ",
                            t->id);
        knit__keylist_str(q, t->npk, "");
        sqlite3_str_appendf(q,
                            ") UPDATE _knit_log_%d AS l SET mask = 0 WHERE seq <= ?1 AND op = 1"
                            " AND (EXISTS (SELECT 1 FROM d WHERE d.s < l.seq",
                            t->id);
        for (uint32_t i = 0; i < t->npk; i++)
            sqlite3_str_appendf(q, " AND d.k%u = l.k%u", i, i);
        sqlite3_str_appendf(q, ") OR EXISTS (SELECT 1 FROM _knit_rows_%d r WHERE (r.cl & 1) = 0",
                            t->id);
        for (uint32_t i = 0; i < t->npk; i++)
            sqlite3_str_appendf(q, " AND r.k%u = l.k%u", i, i);
        sqlite3_str_appendall(q, "))");
        if ((rc = knit__prepare_str(k, &t->st[ST_NEWLIFE], q)) != 0)
            return rc;
    }
    sqlite3_stmt *st = t->st[ST_NEWLIFE];
    sqlite3_bind_int64(st, 1, max);
    rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : knit__dberr(k, rc, "reading the capture log");
}

int knit__load_tables(knit_t *k)
{
    int moved = 0, need = 0;
    int rc = knit__tables_refresh(k, &moved);
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
    return knit__tables_refresh(k, &moved);
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

/* The newest seq of t's capture log; *empty when it holds nothing. */
static int log_max(knit_t *k, ktable_t *t, int64_t *max, int *empty)
{
    int rc;
    if (!t->st[ST_LOGMAX]) {
        sqlite3_str *q = sqlite3_str_new(NULL);
        sqlite3_str_appendf(q, "SELECT max(seq) FROM _knit_log_%d", t->id);
        if ((rc = knit__prepare_str(k, &t->st[ST_LOGMAX], q)) != 0)
            return rc;
    }
    rc = sqlite3_step(t->st[ST_LOGMAX]);
    *max = rc == SQLITE_ROW ? sqlite3_column_int64(t->st[ST_LOGMAX], 0) : 0;
    *empty = rc != SQLITE_ROW || sqlite3_column_type(t->st[ST_LOGMAX], 0) == SQLITE_NULL;
    sqlite3_reset(t->st[ST_LOGMAX]);
    return rc == SQLITE_ROW ? 0 : knit__dberr(k, rc, "reading the capture log");
}

int knit__stamp_needed(knit_t *k, int *needed) /* see replica.h */
{
    int rc;
    *needed = 0;
    for (size_t i = 0; i < k->ntables; i++)
        if (k->tables[i].capture != KNIT_CAPTURE_OK) {
            *needed = 1; /* a repair, or a broken capture to report */
            return 0;
        }
    for (size_t i = 0; i < k->ntables && !*needed; i++) {
        int64_t max;
        int empty;
        if ((rc = log_max(k, &k->tables[i], &max, &empty)) != 0)
            return rc;
        *needed = !empty;
    }
    return 0;
}

#define UNIT_CELLS 65536 /* design note 4: the default push limit */

/* Cells one log row may change (design note 4): an insert all, a delete the
** liveness, an update the columns of its mask and the liveness. */
static size_t row_cells(const ktable_t *t, int op, uint64_t mask)
{
    if (op == 3)
        return 1;
    if (op == 1)
        return t->ncols + 1;
    if (t->ncols < 64)
        mask &= (UINT64_C(1) << t->ncols) - 1;
    return (size_t)__builtin_popcountll(mask) + 1;
}

/* Sets *hi to the last seq of t's log after lo that the current unit takes
** (design note 4): all of it up to max when it fits, else as many rows as
** fit UNIT_CELLS, and at least one when the unit is empty. */
static int unit_end(knit_t *k, ktable_t *t, stamp_t *sp, int64_t lo, int64_t max, int64_t *hi)
{
    size_t room = sp->cells < UNIT_CELLS ? UNIT_CELLS - sp->cells : 0;
    *hi = max;
    if ((uint64_t)(max - lo) <= room / (t->ncols + 1)) { /* seqs after lo: at most max - lo rows */
        sp->cells += (size_t)(max - lo) * (t->ncols + 1);
        return 0;
    }
    int rc;
    if (!t->st[ST_LOGCELLS]) {
        sqlite3_str *q = sqlite3_str_new(NULL);
        sqlite3_str_appendf(q,
                            "SELECT seq, op, mask FROM _knit_log_%d WHERE seq > ?1 AND seq <= ?2"
                            " ORDER BY seq",
                            t->id);
        if ((rc = knit__prepare_str(k, &t->st[ST_LOGCELLS], q)) != 0)
            return rc;
    }
    sqlite3_stmt *st = t->st[ST_LOGCELLS];
    sqlite3_bind_int64(st, 1, lo);
    sqlite3_bind_int64(st, 2, max);
    *hi = lo;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        size_t c = row_cells(t, sqlite3_column_int(st, 1), (uint64_t)sqlite3_column_int64(st, 2));
        if (sp->cells && sp->cells + c > UNIT_CELLS)
            break;
        sp->cells += c;
        *hi = sqlite3_column_int64(st, 0);
    }
    int more = rc == SQLITE_ROW;
    sqlite3_reset(st);
    if (!more && rc != SQLITE_DONE)
        return knit__dberr(k, rc, "reading the capture log");
    if (!more)
        *hi = max; /* all of it fits (hi = lo: the unit was full before this table) */
    return 0;
}

/* Folds every table's log into its metadata (design notes 1 to 4). */
static int fold_logs(knit_t *k, stamp_t *sp)
{
    int rc;
    for (size_t i = 0; i < k->ntables; i++) {
        ktable_t *t = &k->tables[i];
        int64_t max;
        int empty;
        if ((rc = log_max(k, t, &max, &empty)) != 0)
            return rc;
        if (empty)
            continue;
        if (!sp->ver) {
            if ((rc = knit__tick(k, &sp->hlc)) != 0 ||
                (rc = knit__next_version(k, &sp->ver)) != 0 ||
                (rc = knit__meta_get_int(k, "write_ns", &sp->write_ns)) != 0)
                return rc;
            if (sp->write_ns <= 0)
                sp->write_ns = KNIT_HOME_NS;
            sp->wall_times = wall_times_usable(k);
        }
        /* Rows are folded in key order, which walks _knit_rows_<id> from
        ** one end to the other instead of hopping across it; for one key
        ** the log order (seq) is kept, and DO UPDATE sees the row as updated
        ** by the earlier log rows of the same statement, so insert, delete,
        ** insert of one key ends at causal length 3.  ?4 is the tick; each
        ** row's stamp is design note 1's (65536 = 1 << 16, the HLC's
        ** millisecond unit), or note 2's: 1 for at = 0, else the tick when
        ** at is NULL or ?7 (wall times usable) is 0. */
        if (t->nscol >= 0 && (rc = knit__ns_fold(k, t, sp->write_ns, sp->hlc, sp->ver, max)) != 0)
            return rc;
        if (t->setmask && (rc = mark_new_lives(k, t, max)) != 0)
            return rc;
        if (!t->st[ST_STAMP]) {
            sqlite3_str *q = sqlite3_str_new(NULL);
            sqlite3_str_appendf(q, "INSERT INTO _knit_rows_%d(", t->id);
            knit__keylist_str(q, t->npk, "");
            sqlite3_str_appendall(q, ", ns, cl, ver, cells) SELECT ");
            knit__keylist_str(q, t->npk, "");
            if (t->nscol < 0) {
                sqlite3_str_appendall(q, ", ?1");
            } else {
                /* nscol.c design note 1: a new row's namespace is its column's. */
                sqlite3_str_appendf(q, ", knit_ns_of((SELECT u.\"%w\" FROM \"%w\" AS u WHERE ",
                                    t->cols[t->nscol], t->name);
                knit__keys_join(q, t, "u", "_knit_log_x");
                sqlite3_str_appendall(q, "), ?1)");
            }
            sqlite3_str_appendf(q,
                                ", CASE op WHEN 3 THEN 2 ELSE 1 END, ?2,"
                                " knit_cells_new(op, mask, ?3, at, hlc, ?4, ?7, ?5, ?2)"
                                " FROM _knit_log_%d AS _knit_log_x WHERE seq > ?8 AND seq <= ?6"
                                " ORDER BY ",
                                t->id);
            knit__keylist_str(q, t->npk, "");
            sqlite3_str_appendall(q, ", seq ON CONFLICT(");
            knit__keylist_str(q, t->npk, "");
            sqlite3_str_appendall(
                q, ") DO UPDATE SET"
                   " cl = CASE WHEN excluded.cl = 2 THEN cl + (cl & 1) ELSE cl + 1 - (cl & 1) END,"
                   " ver = excluded.ver, cells = knit_cells_merge(cells, excluded.cells, ?4)");
            if ((rc = knit__prepare_str(k, &t->st[ST_STAMP], q)) != 0)
                return rc;
        }
        /* Design note 4: a long log becomes several units, in log order. */
        for (int64_t lo = 0;;) {
            int64_t hi = max;
            if (t->nscol < 0 && (rc = unit_end(k, t, sp, lo, max, &hi)) != 0)
                return rc;
            sqlite3_stmt *st = t->st[ST_STAMP];
            sqlite3_bind_int64(st, 1, sp->write_ns);
            sqlite3_bind_int64(st, 2, (int64_t)sp->ver);
            sqlite3_bind_int64(st, 3, t->ncols);
            sqlite3_bind_int64(st, 4, (int64_t)sp->hlc);
            sqlite3_bind_int64(st, 5, k->site_idx);
            sqlite3_bind_int64(st, 6, hi);
            sqlite3_bind_int(st, 7, sp->wall_times);
            sqlite3_bind_int64(st, 8, lo);
            rc = sqlite3_step(st);
            sqlite3_reset(st);
            if (rc != SQLITE_DONE)
                return knit__dberr(k, rc, "stamping captured writes");
            size_t n = (size_t)sqlite3_changes(k->db);
            t->ev_rows += n;
            sp->rows += n;
            if (hi >= max)
                break;
            if ((rc = knit__next_version(k, &sp->ver)) != 0)
                return rc;
            sp->cells = 0;
            lo = hi;
        }
        if (t->setmask && (rc = stamp_sets(k, t, max)) != 0)
            return rc;
        /* Cleared here, not at the end: a capture repair may log again. */
        if ((rc = log_clear(k, t)) != 0)
            return rc;
    }
    return 0;
}

int knit__stamp_locked(knit_t *k, size_t *rows_out)
{
    stamp_t sp = {0};
    int rc, repair = 0;

    if ((rc = knit__load_tables(k)) != 0 || (rc = knit__capture_begin(k)) != 0)
        return rc;
    if ((rc = fold_logs(k, &sp)) != 0)
        return rc;
    /* Capture that was missing or outdated (capture.c design note 1):
    ** reinstall it, and fold what it finds in the same stamp. */
    for (size_t i = 0; i < k->ntables; i++)
        repair |= k->tables[i].capture == KNIT_CAPTURE_REPAIR;
    if (repair) {
        size_t logged = 0;
        if ((rc = knit__capture_repair(k, &logged)) != 0)
            return rc;
        if (logged && (rc = fold_logs(k, &sp)) != 0)
            return rc;
    }
    if (sp.rows)
        k->ev_local = 1;
    if (rows_out)
        *rows_out = sp.rows;
    return 0;
}

int knit_stamp(knit_t *k) /* see knit.h */
{
    size_t n = 0;
    int rc = knit__begin(k);
    if (rc)
        return rc;
    rc = knit__stamp_locked(k, &n);
    if (!rc)
        rc = knit__commit(k);
    if (rc) {
        knit__rollback(k);
        return rc;
    }
    knit__notify(k);
    return (int)(n > 0x7fffffff ? 0x7fffffff : n);
}
