/*
** cells.c: the cell format, and values between knit and SQLite.
**
** Each row's metadata is one blob of cells in _knit_rows_<id>.cells; the
** SQL functions registered here let stamp.c build and merge those blobs
** inside SQLite's own statements.
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
*/
#include <string.h>

#include "replica.h"
/* ---------------------------------------------------------------------- */
/* Cells blobs                                                            */

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

/* Milliseconds since the epoch of a log row's `at`: julianday() days
** (capture version 3; a Julian day number is far below 1e9) or, from
** version-2 triggers, milliseconds already. */
static int64_t at_ms(sqlite3_value *at)
{
    double d = sqlite3_value_double(at);
    if (d < 1e9) {
        double ms = (d - 2440587.5) * 86400000.0; /* to the nearest ms */
        return (int64_t)(ms < 0 ? ms - 0.5 : ms + 0.5);
    }
    return sqlite3_value_int64(at);
}

/* The stamp of one logged write before knit_cells_merge raises it above its
** row's cells (design notes 1 and 2 of stamp.c): 1 for a backfilled default
** (at = 0); the tick when the row has no wall time or wall times are
** unusable; else its wall time (above the HLC a version-2 trigger logged),
** never beyond the tick. */
static uint64_t log_stamp(sqlite3_value *at, sqlite3_value *hlc, uint64_t tick, int wall_ok)
{
    if (sqlite3_value_type(at) != SQLITE_NULL && sqlite3_value_double(at) == 0)
        return 1;
    if (sqlite3_value_type(at) == SQLITE_NULL || !wall_ok)
        return tick;
    int64_t ms = at_ms(at);
    uint64_t s = ms > 0 ? (uint64_t)ms << 16 : 0, seen = 0;
    if (sqlite3_value_type(hlc) != SQLITE_NULL)
        seen = (uint64_t)sqlite3_value_int64(hlc) + 1;
    if (s < seen)
        s = seen;
    if (s < 1)
        s = 1;
    return s < tick ? s : tick;
}

/* knit_cells_new(op, mask, ncols, at, hlc, tick, wall_ok, site, ver): the
** cells a logged write stamps: liveness and every column for an insert, the
** masked columns for an update, liveness alone for a delete. */
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
    uint64_t hlc = log_stamp(argv[3], argv[4], (uint64_t)sqlite3_value_int64(argv[5]),
                             sqlite3_value_int(argv[6]));
    kcell_t s = {hlc, (uint32_t)sqlite3_value_int64(argv[7]),
                 (uint64_t)sqlite3_value_int64(argv[8])};
    memset(cells, 0, (size_t)(ncols + 1) * sizeof cells[0]);
    if (op != KNIT_OP_UPDATE)
        cells[0] = s;
    for (int64_t i = 0; i < ncols && op != KNIT_OP_DELETE; i++)
        if (op == KNIT_OP_INSERT || (mask >> i & 1))
            cells[i + 1] = s;
    size_t n = knit__cells_encode(cells, (uint32_t)ncols + 1, buf);
    sqlite3_result_blob(ctx, buf, (int)n, SQLITE_TRANSIENT);
}

/* knit_cells_merge(old, new, tick): each cell from new where new wrote it,
** else from old.  A write saw every cell its row held (stamp.c design note
** 1), so a new stamp at or below the newest of them is raised just above it
** (never beyond the tick); a backfilled default (HLC 1) stays below all. */
static void fn_cells_merge(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    kcell_t a[KNIT_MAX_COLS + 1], b[KNIT_MAX_COLS + 1];
    uint8_t buf[(KNIT_MAX_COLS + 1) * KNIT_CELL_MAXBYTES + KNIT_VARINT_MAX];
    uint64_t na = 0, nb = 0, seen = 0, tick = (uint64_t)sqlite3_value_int64(argv[2]);
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
    for (uint32_t i = 0; i < na; i++)
        if (a[i].hlc > seen)
            seen = a[i].hlc;
    uint64_t floor_hlc = seen < tick ? seen + 1 : tick;
    uint32_t n = (uint32_t)(na > nb ? na : nb);
    for (uint32_t i = 0; i < n; i++) {
        kcell_t o = i < na ? a[i] : (kcell_t){0};
        if (i < nb && b[i].hlc) {
            a[i] = b[i];
            if (b[i].hlc > 1 && b[i].hlc < floor_hlc)
                a[i].hlc = floor_hlc;
        } else {
            a[i] = o;
        }
    }
    size_t len = knit__cells_encode(a, n, buf);
    sqlite3_result_blob(ctx, buf, (int)len, SQLITE_TRANSIENT);
}

int knit__register_functions(knit_t *k)
{
    int flags = SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_DIRECTONLY;
    int rc =
        sqlite3_create_function(k->db, "knit_cells_new", 9, flags, NULL, fn_cells_new, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_create_function(k->db, "knit_cells_merge", 3, flags, NULL, fn_cells_merge,
                                     NULL, NULL);
    return rc == SQLITE_OK ? 0 : knit__dberr(k, rc, "registering functions");
}
