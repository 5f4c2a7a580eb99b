/*
** stamp.c: turning captured writes into CRDT metadata.
**
** The capture triggers log (op, mask, key, at, hlc): at is the writer's
** wall time in ms, hlc the replica's HLC as the writer's transaction saw it
** in _knit_meta (plain SQL cannot run knit's clock).  Stamping runs in a
** write transaction, so it sees every committed log row and nothing else can
** write meanwhile.  It takes one new HLC (the tick) and one new local version
** (one "stamp" is the unit that later travels together), and folds the log
** into _knit_rows_<id> with a single INSERT ... SELECT ... ON CONFLICT
** statement per table, so SQLite's engine does the per-row work.
**
** Design notes
**   1. Last writer wins by the time of the write, not of the stamp: a write
**      made while no agent ran must not beat a later write made elsewhere.
**      Each logged row is stamped
**          hlc = min(tick, max(at << 16, logged hlc + 1))
**      Every apply stamps the log first, so a logged write follows every
**      cell present when it committed, and all of those are at most the
**      HLC it logged: logged hlc + 1 keeps it above them, and above every
**      stamp issued before it (causality), even when the wall clock lags.
**      The tick bounds it from above, so no stamp is beyond the replica's
**      clock (an injected test clock still rules) and the stored HLC
**      advances to the tick as before.
**   2. Log rows without a wall time (written by an older knit's triggers, or
**      found by a capture repair) are stamped with the tick.  So is every
**      row when the replica's clock is not the OS clock the triggers read
**      (knit_options_t.clock more than WALL_AGREE_MS away from it, as test
**      clocks are): times of two different clocks do not compare.  Cells of
**      a column backfilled by knit_track log at = 0: nobody wrote them, and
**      they get HLC 1, below any real write (track.c design note 3).
**   3. Stamps within one fold may differ per row; for one key the log order
**      decides (a later log row replaces the cells it writes), which is the
**      order of the commits.
**
** Cells blob (one per row, in _knit_rows_<id>.cells), cell 0 = liveness,
** cell i = column i - 1:
**
**   +--------+-------------------------------------------------+
**   | count  | cell * count                                    |
**   | varint |   0x00                 not written in this life |
**   |        |   0x01                 same stamp as previous   |
**   |        |   0x02 hlc:u64be site:varint ver:varint         |
**   +--------+-------------------------------------------------+
**
** A freshly inserted row stamps every cell alike, so its blob is one full
** stamp plus a byte per column.
**
** OR-set columns: after the fold, each logged row's arrays are compared
** with the stored set states; new elements are added with fresh dots of this
** site, missing ones removed, and the column rewritten in canonical form when
** the app wrote it otherwise.
*/
#include <string.h>
#include <time.h>

#include "replica.h"

/* Prepares the SQL built in q (consumed) as a persistent statement *st. */
static int prepare_str(knit_t *k, sqlite3_stmt **st, sqlite3_str *q)
{
    if (sqlite3_str_errcode(q) != SQLITE_OK) {
        sqlite3_free(sqlite3_str_finish(q));
        return knit__err(k, KNIT_ENOMEM, "out of memory building SQL");
    }
    char *sql = sqlite3_str_finish(q);
    int rc = knit__prepare(k, st, sql);
    sqlite3_free(sql);
    return rc;
}

/* ---------------------------------------------------------------------- */
/* Cells blobs                                                             */

int knit__cells_decode(const void *blob, size_t n, uint32_t ncells, kcell_t *out)
{
    const uint8_t *p = blob;
    uint64_t count, x;
    size_t used, off = 0;
    memset(out, 0, ncells * sizeof *out);
    if (n == 0)
        return 0;
    if (knit_varint_get(p, n, &count, &used))
        return KNIT_ECORRUPT;
    off = used;
    for (uint64_t i = 0; i < count; i++) {
        kcell_t c = {0};
        if (off >= n)
            return KNIT_ECORRUPT;
        uint8_t tag = p[off++];
        if (tag == 1) {
            if (i == 0)
                return KNIT_ECORRUPT;
            c = i - 1 < ncells ? out[i - 1] : c;
        } else if (tag == 2) {
            if (n - off < 8)
                return KNIT_ECORRUPT;
            for (int b = 0; b < 8; b++)
                c.hlc = c.hlc << 8 | p[off++];
            if (knit_varint_get(p + off, n - off, &x, &used) || x > UINT32_MAX)
                return KNIT_ECORRUPT;
            c.site = (uint32_t)x;
            off += used;
            if (knit_varint_get(p + off, n - off, &c.ver, &used))
                return KNIT_ECORRUPT;
            off += used;
        } else if (tag != 0) {
            return KNIT_ECORRUPT;
        }
        if (i < ncells)
            out[i] = c;
    }
    return off == n ? 0 : KNIT_ECORRUPT;
}

size_t knit__cells_encode(const kcell_t *c, uint32_t ncells, uint8_t *out)
{
    size_t off = knit_varint_put(out, ncells);
    for (uint32_t i = 0; i < ncells; i++) {
        if (c[i].hlc == 0) {
            out[off++] = 0;
        } else if (i > 0 && c[i].hlc == c[i - 1].hlc && c[i].site == c[i - 1].site &&
                   c[i].ver == c[i - 1].ver) {
            out[off++] = 1;
        } else {
            out[off++] = 2;
            for (int b = 7; b >= 0; b--)
                out[off++] = (uint8_t)(c[i].hlc >> (8 * b));
            off += knit_varint_put(out + off, c[i].site);
            off += knit_varint_put(out + off, c[i].ver);
        }
    }
    return off;
}

/* knit_cells_new(op, mask, ncols, hlc, site, ver): the cells a logged write
** stamps: liveness and every column for an insert, the masked columns for an
** update, liveness alone for a delete. */
static void fn_cells_new(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    int op = sqlite3_value_int(argv[0]);
    uint64_t mask = (uint64_t)sqlite3_value_int64(argv[1]);
    int64_t ncols = sqlite3_value_int64(argv[2]);
    kcell_t cells[KNIT_MAX_COLS + 1];
    uint8_t buf[(KNIT_MAX_COLS + 1) * KNIT_CELL_MAXBYTES + KNIT_VARINT_MAX];
    (void)argc;
    if (ncols < 0 || ncols > KNIT_MAX_COLS) {
        sqlite3_result_error(ctx, "knit_cells_new: bad column count", -1);
        return;
    }
    kcell_t s = {(uint64_t)sqlite3_value_int64(argv[3]), (uint32_t)sqlite3_value_int64(argv[4]),
                 (uint64_t)sqlite3_value_int64(argv[5])};
    memset(cells, 0, sizeof cells);
    if (op != KNIT_OP_UPDATE)
        cells[0] = s;
    for (int64_t i = 0; i < ncols && op != KNIT_OP_DELETE; i++)
        if (op == KNIT_OP_INSERT || (mask >> i & 1))
            cells[i + 1] = s;
    size_t n = knit__cells_encode(cells, (uint32_t)ncols + 1, buf);
    sqlite3_result_blob(ctx, buf, (int)n, SQLITE_TRANSIENT);
}

/* knit_cells_merge(old, new): each cell from new where new wrote it, else
** from old. */
static void fn_cells_merge(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    kcell_t a[KNIT_MAX_COLS + 1], b[KNIT_MAX_COLS + 1];
    uint8_t buf[(KNIT_MAX_COLS + 1) * KNIT_CELL_MAXBYTES + KNIT_VARINT_MAX];
    uint64_t na = 0, nb = 0;
    size_t used;
    (void)argc;
    const uint8_t *pa = sqlite3_value_blob(argv[0]), *pb = sqlite3_value_blob(argv[1]);
    size_t la = (size_t)sqlite3_value_bytes(argv[0]), lb = (size_t)sqlite3_value_bytes(argv[1]);
    if ((la && knit_varint_get(pa, la, &na, &used)) ||
        (lb && knit_varint_get(pb, lb, &nb, &used)) || na > KNIT_MAX_COLS + 1 ||
        nb > KNIT_MAX_COLS + 1 || knit__cells_decode(pa, la, (uint32_t)na, a) ||
        knit__cells_decode(pb, lb, (uint32_t)nb, b)) {
        sqlite3_result_error(ctx, "knit_cells_merge: corrupt cells", -1);
        return;
    }
    uint32_t n = (uint32_t)(na > nb ? na : nb);
    for (uint32_t i = 0; i < n; i++) {
        kcell_t o = i < na ? a[i] : (kcell_t){0};
        a[i] = i < nb && b[i].hlc ? b[i] : o;
    }
    size_t len = knit__cells_encode(a, n, buf);
    sqlite3_result_blob(ctx, buf, (int)len, SQLITE_TRANSIENT);
}

int knit__register_functions(knit_t *k)
{
    int flags = SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_DIRECTONLY;
    int rc =
        sqlite3_create_function(k->db, "knit_cells_new", 6, flags, NULL, fn_cells_new, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_create_function(k->db, "knit_cells_merge", 2, flags, NULL, fn_cells_merge,
                                     NULL, NULL);
    return rc == SQLITE_OK ? 0 : knit__dberr(k, rc, "registering functions");
}

/* ---------------------------------------------------------------------- */
/* Values                                                                  */

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
/* OR-set states                                                           */

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
        if ((rc = prepare_str(k, &t->st[ST_SETGET], q)) != 0)
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
        if ((rc = prepare_str(k, &t->st[ST_SETPUT], q)) != 0)
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

/* Parses the JSON array the app wrote into a sorted, unique element list
** (an OR-set used only for its elements).  NULL is the empty set. */
static int parse_array(knit_t *k, ktable_t *t, uint32_t col, const knit_value_t *json,
                       knit_orset_t *want)
{
    sqlite3_stmt *st = NULL;
    int rc;
    knit_orset_init(want);
    if (json->type == KNIT_NULL)
        return 0;
    /* The first row says whether the text is an array at all (json_each
    ** would walk an object's members); the rest are its elements. */
    rc = sqlite3_prepare_v2(k->db,
                            "SELECT NULL, json_type(?1) UNION ALL"
                            " SELECT value, type FROM json_each(?1) WHERE json_type(?1) = 'array'",
                            -1, &st, NULL);
    if (rc != SQLITE_OK)
        return knit__dberr(k, rc, "reading an OR-set array");
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
            sqlite3_finalize(st);
            knit_orset_free(want);
            return rc;
        }
    }
    sqlite3_finalize(st);
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
        if ((rc = prepare_str(k, &t->st[ST_SETROWS], q)) != 0)
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
/* Stamping                                                                */

/* Empties t's capture log (after its fold). */
static int log_clear(knit_t *k, ktable_t *t)
{
    int rc;
    if (!t->st[ST_LOGCLEAR]) {
        sqlite3_str *q = sqlite3_str_new(NULL);
        sqlite3_str_appendf(q, "DELETE FROM _knit_log_%d", t->id);
        if ((rc = prepare_str(k, &t->st[ST_LOGCLEAR], q)) != 0)
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
} stamp_t;

#define WALL_AGREE_MS 1000 /* design note 2 */

/* Whether the replica's clock is the clock the capture triggers read
** (SQLite's 'now', from the VFS), give or take WALL_AGREE_MS (design
** note 2).  A test clock far from it makes the log's times meaningless. */
static int wall_times_usable(knit_t *k)
{
    sqlite3_stmt *st = NULL;
    int64_t sql_now = 0;
    if (sqlite3_prepare_v2(k->db,
                           "SELECT CAST((julianday('now') - 2440587.5) * 86400000"
                           " AS INTEGER)",
                           -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        sql_now = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
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
        sqlite3_str *q = sqlite3_str_new(NULL);
        sqlite3_str_appendf(q,
                            "UPDATE _knit_log_%d AS l SET mask = 0 WHERE seq <= ?1 AND op = 1"
                            " AND (EXISTS (SELECT 1 FROM _knit_log_%d d WHERE d.seq < l.seq"
                            " AND d.op = 3",
                            t->id, t->id);
        for (uint32_t i = 0; i < t->npk; i++)
            sqlite3_str_appendf(q, " AND d.k%u = l.k%u", i, i);
        sqlite3_str_appendf(q, ") OR EXISTS (SELECT 1 FROM _knit_rows_%d r WHERE (r.cl & 1) = 0",
                            t->id);
        for (uint32_t i = 0; i < t->npk; i++)
            sqlite3_str_appendf(q, " AND r.k%u = l.k%u", i, i);
        sqlite3_str_appendall(q, "))");
        if ((rc = prepare_str(k, &t->st[ST_NEWLIFE], q)) != 0)
            return rc;
    }
    sqlite3_stmt *st = t->st[ST_NEWLIFE];
    sqlite3_bind_int64(st, 1, max);
    rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : knit__dberr(k, rc, "reading the capture log");
}

/* Folds every table's log into its metadata (design notes 1 to 3). */
static int fold_logs(knit_t *k, stamp_t *sp)
{
    int rc;
    for (size_t i = 0; i < k->ntables; i++) {
        ktable_t *t = &k->tables[i];
        if (!t->st[ST_LOGMAX]) {
            sqlite3_str *q = sqlite3_str_new(NULL);
            sqlite3_str_appendf(q, "SELECT max(seq) FROM _knit_log_%d", t->id);
            if ((rc = prepare_str(k, &t->st[ST_LOGMAX], q)) != 0)
                return rc;
        }
        rc = sqlite3_step(t->st[ST_LOGMAX]);
        int64_t max = rc == SQLITE_ROW ? sqlite3_column_int64(t->st[ST_LOGMAX], 0) : 0;
        int empty = rc != SQLITE_ROW || sqlite3_column_type(t->st[ST_LOGMAX], 0) == SQLITE_NULL;
        sqlite3_reset(t->st[ST_LOGMAX]);
        if (rc != SQLITE_ROW)
            return knit__dberr(k, rc, "reading the capture log");
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
        if (t->setmask && (rc = mark_new_lives(k, t, max)) != 0)
            return rc;
        if (!t->st[ST_STAMP]) {
            sqlite3_str *q = sqlite3_str_new(NULL);
            sqlite3_str_appendf(q, "INSERT INTO _knit_rows_%d(", t->id);
            knit__keylist_str(q, t->npk, "");
            sqlite3_str_appendall(q, ", ns, cl, ver, cells) SELECT ");
            knit__keylist_str(q, t->npk, "");
            sqlite3_str_appendf(q,
                                ", ?1, CASE op WHEN 3 THEN 2 ELSE 1 END, ?2,"
                                " knit_cells_new(op, mask, ?3, CASE WHEN at = 0 THEN 1"
                                " WHEN at IS NULL OR NOT ?7 THEN ?4"
                                " ELSE min(?4, max(at * 65536, coalesce(hlc, 0) + 1)) END, ?5, ?2)"
                                " FROM _knit_log_%d WHERE seq <= ?6 ORDER BY ",
                                t->id);
            knit__keylist_str(q, t->npk, "");
            sqlite3_str_appendall(q, ", seq ON CONFLICT(");
            knit__keylist_str(q, t->npk, "");
            sqlite3_str_appendall(
                q, ") DO UPDATE SET"
                   " cl = CASE WHEN excluded.cl = 2 THEN cl + (cl & 1) ELSE cl + 1 - (cl & 1) END,"
                   " ver = excluded.ver, cells = knit_cells_merge(cells, excluded.cells)");
            if ((rc = prepare_str(k, &t->st[ST_STAMP], q)) != 0)
                return rc;
        }
        sqlite3_stmt *st = t->st[ST_STAMP];
        sqlite3_bind_int64(st, 1, sp->write_ns);
        sqlite3_bind_int64(st, 2, (int64_t)sp->ver);
        sqlite3_bind_int64(st, 3, t->ncols);
        sqlite3_bind_int64(st, 4, (int64_t)sp->hlc);
        sqlite3_bind_int64(st, 5, k->site_idx);
        sqlite3_bind_int64(st, 6, max);
        sqlite3_bind_int(st, 7, sp->wall_times);
        rc = sqlite3_step(st);
        sqlite3_reset(st);
        if (rc != SQLITE_DONE)
            return knit__dberr(k, rc, "stamping captured writes");
        size_t n = (size_t)sqlite3_changes(k->db);
        t->ev_rows += n;
        sp->rows += n;
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
    /* Capture that was missing or outdated (track.c design note 1):
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
