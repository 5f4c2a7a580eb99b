/*
** reject.c: rolling back local writes the relay refused for good
** (knit_reject), and the _knit_rejected table apps read them from.
**
** The relay may refuse single changes of a push (a stamp too far ahead of
** its clock, a change no replica can apply, later: no write rights).  A
** refusal is terminal: the replica takes the relay's word for those cells,
** records the refusal and tells the app, and the sync client pushes the
** rest of its changes.  docs/ARCHITECTURE.md, "Rejected writes", has the
** whole story.
**
** Design notes
**   1. One refusal batch, one write transaction: captured writes are stamped
**      first (so a write newer than the refused one is a cell of its own),
**      then each refused cell is reset, then the relay's state is merged
**      with the ordinary apply, then the refusals are recorded, then it
**      commits.  A failure rolls all of it back; the client then stops
**      pushing (the changes stay pending) as it did before refusals rolled
**      back.
**   2. A refused cell is rolled back only while it still holds the refused
**      write: same causal length, same stamp, this replica's site.  A cell
**      overwritten since (a newer local write, or a remote change that won)
**      is left alone; the refusal is still recorded, rolled_back = 0.
**   3. Resetting a cell makes it "never written" (stamp 0): the relay's
**      cell, merged next, always wins over it, so the replica ends with
**      exactly the relay's cell.  When the relay holds none, the cell stays
**      unwritten and its column NULL, which is what a replica that never
**      made the write holds (a stamp-0 cell is in no digest).
**   4. A refused liveness change (an insert, a delete, a re-insert) resets
**      the whole row: the user row, its metadata and its OR-set states go,
**      and the relay's cells of the row (it sends all of them when the
**      liveness is refused) rebuild it.  An insert the relay never held thus
**      disappears without a trace, and the replica's digest is that of a
**      replica that never made it.
**   5. Writes made here are knit's own: the log rows they produce (when the
**      app's triggers keep capture on, replica.h note 4) are deleted before
**      the merge stamps the log again.
**   6. The change notification is fired here, not by notify.c, because a
**      removed row has no metadata left for notify.c to find: the event
**      names every rolled-back row with rolled_back = 1.  The rows' new
**      versions are then marked seen, unless other commits came between
**      (then a later event may name them again; nothing is missed).
**   7. Other handles on the file (the followers of a device, `sync-agent
**      watch`) learn of a rollback from _knit_rejected: knit_poll calls
**      knit__rejected_poll, which reads the refusals recorded after the
**      newest this handle has seen (k->seen_rejected, set at open and by
**      knit_reject itself) and fires the same event as note 6 for their
**      rows.  The key is read back from its SQL literals by SQLite itself
**      (a read-only "SELECT <key>"), so no second parser exists.
**   8. A refused tombstone that ends a row's life in a namespace it has
**      left, stamped with the row's own liveness cell when another replica
**      wrote that life (nscol.c design note 5: pushed again from whichever
**      replica saw both lives), is no write of this user: a viewer of that
**      namespace has it refused, and recording it would tell the user of a
**      write they never made.  It is not recorded; the relay's state is
**      merged as for any refusal.  The tombstone of a move this replica
**      made is its own site's, and is recorded as before.
*/
#include <string.h>

#include "replica.h"

static const char REJECTED_SQL[] =
    "CREATE TABLE IF NOT EXISTS _knit_rejected(id INTEGER PRIMARY KEY, ns TEXT NOT NULL,"
    "  tbl TEXT NOT NULL, key TEXT NOT NULL, col TEXT NOT NULL, value, code INTEGER NOT NULL,"
    "  code_name TEXT NOT NULL, reason TEXT NOT NULL, rolled_back INTEGER NOT NULL,"
    "  at INTEGER NOT NULL)";

int knit__rejected_create(knit_t *k) /* see replica.h */
{
    return knit__exec(k, REJECTED_SQL);
}

/* A rolled-back row, for the event. */
typedef struct rrow_s {
    ktable_t *t;            /* its table */
    const knit_value_t *pk; /* its key (the pushed batch's) */
    int whole;              /* the whole row was reset (its liveness was refused) */
    uint64_t reset;         /* columns reset (bit c - 1 for cell c): NULL unless merged */
} rrow_t;

static void sql_literal(sqlite3_str *s, const knit_value_t *v)
{
    switch (v->type) {
    case KNIT_INTEGER:
        sqlite3_str_appendf(s, "%lld", (long long)v->u.i);
        break;
    case KNIT_REAL:
        sqlite3_str_appendf(s, "%!.17g", v->u.r);
        break;
    case KNIT_TEXT:
        /* Batch text is not NUL-terminated: the precision bounds it. */
        sqlite3_str_appendf(s, "%.*Q", (int)v->u.b.n, v->u.b.n ? (const char *)v->u.b.p : "");
        break;
    case KNIT_BLOB:
        sqlite3_str_appendall(s, "X'");
        for (size_t i = 0; i < v->u.b.n; i++)
            sqlite3_str_appendf(s, "%02X", ((const uint8_t *)v->u.b.p)[i]);
        sqlite3_str_appendall(s, "'");
        break;
    default:
        sqlite3_str_appendall(s, "NULL");
    }
}

/* The row's metadata: *has = 0 when there is none. */
static int row_read(knit_t *k, ktable_t *t, const knit_value_t *pk, int *has, uint64_t *cl,
                    kcell_t *cells)
{
    sqlite3_stmt *st = NULL;
    sqlite3_str *s = sqlite3_str_new(k->db);
    sqlite3_str_appendf(s, "SELECT cl, cells FROM _knit_rows_%d WHERE ", t->id);
    knit__where_meta_keys(s, t->npk);
    int rc = knit__prepare_temp(k, &st, s, "reading row metadata");
    if (rc)
        return rc;
    for (uint32_t i = 0; i < t->npk; i++)
        knit__bind_value(st, (int)i + 1, &pk[i]);
    *has = 0;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *has = 1;
        *cl = (uint64_t)sqlite3_column_int64(st, 0);
        rc = knit__cells_decode(sqlite3_column_blob(st, 1), (size_t)sqlite3_column_bytes(st, 1),
                                t->ncols + 1, cells)
                 ? knit__err(k, KNIT_ECORRUPT, "%s: corrupt row metadata", t->name)
                 : 0;
    } else {
        rc = rc == SQLITE_DONE ? 0 : knit__dberr(k, rc, "reading row metadata");
    }
    sqlite3_finalize(st);
    return rc;
}

/* Design note 4: the row, its metadata and its OR-set states go. */
int knit__row_forget(knit_t *k, ktable_t *t, const knit_value_t *pk, int user_row)
{
    int rc = 0;
    if (user_row)
        rc = knit__user_delete(k, t, pk);
    if (!rc) {
        sqlite3_str *s = sqlite3_str_new(k->db);
        sqlite3_str_appendf(s, "DELETE FROM _knit_rows_%d WHERE ", t->id);
        knit__where_meta_keys(s, t->npk);
        rc = knit__run_keyed(k, s, t, pk, "removing row metadata");
    }
    if (!rc && t->setmask) {
        sqlite3_str *s = sqlite3_str_new(k->db);
        sqlite3_str_appendf(s, "DELETE FROM _knit_sets_%d WHERE ", t->id);
        knit__where_meta_keys(s, t->npk);
        rc = knit__run_keyed(k, s, t, pk, "removing OR-set states");
    }
    return rc;
}

/* Design note 3: cell c (>= 1) becomes unwritten (its column is made NULL
** after the merge, null_unmerged: NULL now would break NOT NULL columns). */
static int reset_cell(knit_t *k, ktable_t *t, const knit_value_t *pk, uint64_t cl, kcell_t *cells,
                      uint32_t c, uint64_t ver)
{
    uint8_t buf[(KNIT_MAX_COLS + 1) * KNIT_CELL_MAXBYTES + KNIT_VARINT_MAX];
    sqlite3_stmt *st = NULL;
    int rc;
    (void)cl;
    cells[c].hlc = 0;
    cells[c].site = 0;
    cells[c].ver = ver;
    size_t n = knit__cells_encode(cells, t->ncols + 1, buf);
    sqlite3_str *s = sqlite3_str_new(k->db);
    sqlite3_str_appendf(s, "UPDATE _knit_rows_%d SET cells = ?%u, ver = ?%u WHERE ", t->id,
                        t->npk + 1, t->npk + 2);
    knit__where_meta_keys(s, t->npk);
    if ((rc = knit__prepare_temp(k, &st, s, "resetting a cell")) != 0)
        return rc;
    for (uint32_t i = 0; i < t->npk; i++)
        knit__bind_value(st, (int)i + 1, &pk[i]);
    sqlite3_bind_blob(st, (int)t->npk + 1, buf, (int)n, SQLITE_STATIC);
    sqlite3_bind_int64(st, (int)t->npk + 2, (int64_t)ver);
    rc = sqlite3_step(st);
    rc = rc == SQLITE_DONE ? 0 : knit__dberr(k, rc, "resetting a cell");
    sqlite3_finalize(st);
    if (!rc && (t->setmask >> (c - 1) & 1)) {
        s = sqlite3_str_new(k->db);
        sqlite3_str_appendf(s, "DELETE FROM _knit_sets_%d WHERE ", t->id);
        knit__where_meta_keys(s, t->npk);
        sqlite3_str_appendf(s, " AND col = %u", c - 1);
        rc = knit__run_keyed(k, s, t, pk, "removing an OR-set state");
    }
    return rc;
}

/* Design note 3, after the merge: a reset column the relay's state did not
** write becomes NULL.  A constraint that refuses NULL (NOT NULL) keeps the
** value: the cell is unwritten all the same, so no digest counts it. */
static int null_unmerged(knit_t *k, const rrow_t *r)
{
    kcell_t cells[KNIT_MAX_COLS + 1];
    knit_value_t null = {.type = KNIT_NULL};
    uint64_t cl = 0;
    int has = 0, rc = row_read(k, r->t, r->pk, &has, &cl, cells);
    for (uint32_t c = 1; !rc && has && knit_cl_live(cl) && c <= r->t->ncols; c++)
        if ((r->reset >> (c - 1) & 1) && !cells[c].hlc) {
            rc = knit__user_write_col(k, r->t, r->pk, c - 1, &null);
            if (rc == KNIT_ECONSTRAINT && !sqlite3_get_autocommit(k->db))
                rc = 0;
        }
    return rc;
}

/* Local cell index of column c of batch table bt in t (0: liveness), or -1. */
static int local_col(const ktable_t *t, const knit_batch_table_t *bt, uint32_t c)
{
    if (c == 0)
        return 0;
    if (c > bt->ncols)
        return -1;
    for (uint32_t j = 0; j < t->ncols; j++)
        if (strcmp(t->cols[j], bt->cols[c - 1]) == 0)
            return (int)j + 1;
    return -1;
}

/* A copy of b whose changes all name namespace ns (the state of a REJECT
** comes with a placeholder namespace). */
static int copy_in_ns(const knit_batch_t *b, const char *ns, knit_batch_t **out)
{
    knit_batch_t *c;
    uint32_t nsi, idx;
    uint32_t *sites = NULL, *tabs = NULL;
    int rc = knit_batch_new(&c);
    if (rc)
        return rc;
    if ((rc = knit_batch_ns(c, ns, &nsi)) != 0)
        goto done;
    sites = knit__calloc(b->nsites + 1, sizeof *sites);
    tabs = knit__calloc(b->ntables + 1, sizeof *tabs);
    if (!sites || !tabs) {
        rc = KNIT_ENOMEM;
        goto done;
    }
    for (size_t i = 0; !rc && i < b->nsites; i++)
        rc = knit_batch_site(c, &b->sites[i], &sites[i]);
    for (size_t i = 0; !rc && i < b->ntables; i++) {
        const knit_batch_table_t *t = &b->tables[i];
        rc = knit_batch_table(c, t->name, t->npk, t->ncols, (const char *const *)t->cols, t->orset,
                              &tabs[i]);
    }
    for (size_t u = 0; !rc && u < b->ntxns; u++) {
        rc = knit_batch_begin(c, b->txns[u].version);
        for (size_t i = 0; !rc && i < b->txns[u].count; i++) {
            knit_change_t ch = b->changes[b->txns[u].first + i];
            if (ch.site >= b->nsites || ch.table >= b->ntables) {
                rc = KNIT_EINVAL;
                break;
            }
            ch.ns = nsi;
            ch.site = sites[ch.site];
            ch.table = tabs[ch.table];
            rc = knit_batch_add(c, &ch);
        }
    }
    (void)idx;
done:
    knit__free(sites);
    knit__free(tabs);
    if (rc)
        knit_batch_free(c);
    else
        *out = c;
    return rc;
}

/* Design note 8: ch is the end of a life in a namespace the row has left,
** stamped with the row's own life, which another replica wrote (nscol.c
** design note 5): not a write of this user. */
static int end_of_left_life(knit_t *k, const knit_batch_t *b, const knit_change_t *ch, uint64_t cl,
                            const kcell_t *cells)
{
    const knit_site_t *life = knit__site_get(k, cells[0].site);
    return ch->col == 0 && !knit_cl_live(ch->cl) && cl != ch->cl && cells[0].hlc == ch->hlc &&
           cells[0].site != k->site_idx && life && ch->site < b->nsites &&
           memcmp(life->b, b->sites[ch->site].b, 16) == 0;
}

static int record(knit_t *k, sqlite3_stmt *ins, const char *ns, const knit_batch_t *b,
                  const knit_change_t *ch, const knit_refusal_t *r, int rolled, uint64_t at)
{
    const knit_batch_table_t *bt = &b->tables[ch->table];
    sqlite3_str *s = sqlite3_str_new(k->db);
    char *key;
    for (uint32_t i = 0; i < bt->npk; i++) {
        if (i)
            sqlite3_str_appendall(s, ", ");
        sql_literal(s, &ch->pk[i]);
    }
    if (!(key = knit__str_done(s)))
        return KNIT_ENOMEM;
    sqlite3_bind_text(ins, 1, ns, -1, SQLITE_STATIC);
    sqlite3_bind_text(ins, 2, bt->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(ins, 3, key, -1, SQLITE_STATIC);
    sqlite3_bind_text(ins, 4, ch->col && ch->col <= bt->ncols ? bt->cols[ch->col - 1] : "", -1,
                      SQLITE_STATIC);
    if (ch->col)
        knit__bind_value(ins, 5, &ch->value);
    else
        sqlite3_bind_null(ins, 5);
    sqlite3_bind_int(ins, 6, r->code);
    sqlite3_bind_text(ins, 7, knit_err_name(r->code), -1, SQLITE_STATIC);
    sqlite3_bind_text(ins, 8, r->message && *r->message ? r->message : knit_strerror(r->code), -1,
                      SQLITE_STATIC);
    sqlite3_bind_int(ins, 9, rolled);
    sqlite3_bind_int64(ins, 10, (int64_t)at);
    int rc = sqlite3_step(ins);
    sqlite3_reset(ins);
    sqlite3_clear_bindings(ins);
    sqlite3_free(key);
    return rc == SQLITE_DONE ? 0 : knit__dberr(k, rc, "recording a refusal");
}

/* Design note 6. */
static void fire(knit_t *k, const rrow_t *rows, size_t n)
{
    const char **names = knit__calloc(n + 1, sizeof *names);
    size_t *counts = knit__calloc(n + 1, sizeof *counts);
    knit_event_key_t *keys = k->ev_max_keys ? knit__calloc(n + 1, sizeof *keys) : NULL;
    ktable_t **tabs = knit__calloc(n + 1, sizeof *tabs);
    size_t nt = 0, nk = 0;
    if (!names || !counts || !tabs || (k->ev_max_keys && !keys))
        goto done;
    for (size_t i = 0; i < n; i++) {
        size_t j;
        for (j = 0; j < nt && tabs[j] != rows[i].t; j++)
            ;
        if (j == nt) {
            tabs[nt] = rows[i].t;
            names[nt++] = rows[i].t->name;
        }
        counts[j]++;
    }
    /* Keys table by table, as notify.c gives them. */
    for (size_t j = 0; keys && j < nt; j++)
        for (size_t i = 0; i < n && nk < k->ev_max_keys; i++) {
            if (rows[i].t != tabs[j])
                continue;
            int has = 0;
            uint64_t cl = 0;
            kcell_t cells[KNIT_MAX_COLS + 1];
            if (row_read(k, rows[i].t, rows[i].pk, &has, &cl, cells) != 0)
                has = 0;
            keys[nk].table = j;
            keys[nk].npk = rows[i].t->npk;
            keys[nk].pk = rows[i].pk;
            keys[nk].remote = 0;
            keys[nk].deleted = !has || !knit_cl_live(cl);
            keys[nk].rolled_back = 1;
            nk++;
        }
    knit_event_t ev;
    memset(&ev, 0, sizeof ev);
    ev.remote = 0;
    ev.ntables = nt;
    ev.tables = names;
    ev.rows = counts;
    ev.nkeys = nk;
    ev.keys = keys;
    ev.truncated = keys && nk < n;
    ev.rolled_back = 1;
    k->notified++;
    k->on_change(k, &ev, k->on_change_data);
done:
    knit__free(names);
    knit__free(counts);
    knit__free(keys);
    knit__free(tabs);
}

int knit_reject(knit_t *k, const knit_batch_t *pushed, const knit_refusal_t *refusals, size_t n,
                const knit_batch_t *state, size_t *rolled_out) /* see knit.h */
{
    rrow_t *rows = NULL;
    size_t nrows = 0;
    knit_batch_t *copy = NULL;
    sqlite3_stmt *ins = NULL;
    uint64_t ver = 0, seen = 0, before = 0, after = 0;
    int rc;

    if (rolled_out)
        *rolled_out = 0;
    if (!k || !pushed || (n && !refusals))
        return KNIT_EINVAL;
    if (k->readonly)
        return knit__err(k, KNIT_EINVAL, "the replica is open read-only");
    /* Local writes not stamped yet are notified as local writes first. */
    if ((rc = knit_stamp(k)) < 0)
        return rc;
    if ((rc = knit__begin(k)) != 0)
        return rc;
    if ((rc = knit__stamp_locked(k, NULL)) != 0)
        goto fail;
    seen = k->seen_version;
    knit_version(k, &before);
    if (!(rows = knit__calloc(n + 1, sizeof *rows))) {
        rc = KNIT_ENOMEM;
        goto fail;
    }
    if (sqlite3_prepare_v2(k->db,
                           "INSERT INTO _knit_rejected(ns, tbl, key, col, value, code, "
                           "code_name, reason, rolled_back, at) VALUES "
                           "(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                           -1, &ins, NULL) != SQLITE_OK) {
        rc = knit__dberr(k, sqlite3_errcode(k->db), "preparing the refusal record");
        goto fail;
    }
    uint64_t at = knit__now(k);
    for (size_t i = 0; i < n; i++) {
        const knit_refusal_t *r = &refusals[i];
        if (r->change >= pushed->nchanges) {
            rc = knit__err(k, KNIT_EINVAL, "refusal of change %zu of a batch of %zu", r->change,
                           pushed->nchanges);
            goto fail;
        }
        const knit_change_t *ch = &pushed->changes[r->change];
        if (ch->table >= pushed->ntables || ch->ns >= pushed->nns) {
            rc = knit__err(k, KNIT_EINVAL, "refused change %zu is malformed", r->change);
            goto fail;
        }
        const knit_batch_table_t *bt = &pushed->tables[ch->table];
        ktable_t *t = knit__table(k, bt->name);
        int c = t && t->npk == bt->npk ? local_col(t, bt, ch->col) : -1, rolled = 0, has = 0;
        kcell_t cells[KNIT_MAX_COLS + 1];
        uint64_t cl = 0;
        if (c >= 0 && (rc = row_read(k, t, ch->pk, &has, &cl, cells)) != 0)
            goto fail;
        size_t j;
        for (j = 0; c >= 0 && j < nrows; j++)
            if (rows[j].t == t && knit__keys_equal(rows[j].pk, ch->pk, t->npk))
                break;
        if (c >= 0 && j < nrows && rows[j].whole) {
            rolled = 1; /* the row went whole with its refused liveness */
        } else if (has && cl == ch->cl && cells[c].hlc == ch->hlc && cells[c].site == k->site_idx) {
            /* Design note 2: only while the cell still holds the refused write. */
            if (!ver && (rc = knit__next_version(k, &ver)) != 0)
                goto fail;
            rc = c == 0 ? knit__row_forget(k, t, ch->pk, knit_cl_live(cl))
                        : reset_cell(k, t, ch->pk, cl, cells, (uint32_t)c, ver);
            if (rc)
                goto fail;
            rolled = 1;
            if (j == nrows) {
                rows[nrows].t = t;
                rows[nrows++].pk = ch->pk;
            }
            rows[j].whole |= c == 0;
            if (c > 0)
                rows[j].reset |= UINT64_C(1) << (c - 1);
        }
        if (!rolled && c == 0 && has && end_of_left_life(k, pushed, ch, cl, cells))
            continue; /* design note 8: no write of this user */
        if ((rc = record(k, ins, pushed->ns[ch->ns], pushed, ch, r, rolled, at)) != 0)
            goto fail;
    }
    /* Design note 5. */
    for (size_t j = 0; j < nrows; j++) {
        size_t i;
        for (i = 0; i < j && rows[i].t != rows[j].t; i++)
            ;
        if (i < j)
            continue;
        sqlite3_str *s = sqlite3_str_new(k->db);
        sqlite3_str_appendf(s, "DELETE FROM _knit_log_%d", rows[j].t->id);
        if ((rc = knit__exec_str(k, s)) != 0)
            goto fail;
    }
    if (state && state->nchanges && pushed->nns) {
        knit_apply_stats_t st;
        if ((rc = copy_in_ns(state, pushed->ns[0], &copy)) != 0)
            goto fail;
        if ((rc = knit__apply_locked(k, copy, &st)) != 0)
            goto fail;
    }
    for (size_t j = 0; j < nrows; j++)
        if (!rows[j].whole && rows[j].reset && (rc = null_unmerged(k, &rows[j])) != 0)
            goto fail;
    if (!rc && sqlite3_get_autocommit(k->db))
        rc = knit__err(k, KNIT_EIO, "the rollback's transaction was rolled back by SQLite");
    if (rc || (rc = knit__commit(k)) != 0)
        goto fail;
    knit_batch_free(copy);
    copy = NULL;
    sqlite3_finalize(ins);
    ins = NULL;
    /* The merge's own notification is this event (design note 6). */
    k->ev_remote = k->ev_local = 0;
    for (size_t i = 0; i < k->ntables; i++)
        k->tables[i].ev_rows = 0;
    knit_version(k, &after);
    if (seen == before)
        k->seen_version = after;
    knit__rejected_seen(k); /* note 7: this handle's own refusals are announced here */
    if (nrows && k->on_change)
        fire(k, rows, nrows);
    knit__free(rows);
    if (rolled_out)
        *rolled_out = nrows;
    return 0;
fail : {
    char saved[sizeof k->errmsg];
    memcpy(saved, k->errmsg, sizeof saved);
    knit__rollback(k);
    memcpy(k->errmsg, saved, sizeof saved);
}
    sqlite3_finalize(ins);
    knit_batch_free(copy);
    knit__free(rows);
    return rc;
}

/* ---------------------------------------------------------------------- */
/* Rollbacks made by other handles (design note 7)                        */

void knit__rejected_seen(knit_t *k) /* see replica.h */
{
    k->seen_rejected = knit__fixed_int(k, KS_REJECTED_MAX, k->seen_rejected);
}

#define POLL_ROWS 256 /* rows per event read back from _knit_rejected */

/* The key of a refusal, back from its SQL literals (note 7): *out is a
** statement stepped to its row, whose columns are the npk key values. */
static int key_parse(knit_t *k, const char *key, uint32_t npk, sqlite3_stmt **out)
{
    sqlite3_stmt *st = NULL;
    char *sql = sqlite3_mprintf("SELECT %s", key);
    *out = NULL;
    if (!sql)
        return KNIT_ENOMEM;
    int rc = sqlite3_prepare_v2(k->db, sql, -1, &st, NULL);
    sqlite3_free(sql);
    if (rc != SQLITE_OK || !sqlite3_stmt_readonly(st) || sqlite3_column_count(st) != (int)npk ||
        sqlite3_step(st) != SQLITE_ROW) {
        sqlite3_finalize(st);
        return KNIT_EINVAL; /* not a key this knit wrote: skipped */
    }
    *out = st;
    return 0;
}

int knit__rejected_poll(knit_t *k) /* see replica.h */
{
    sqlite3_stmt *sel = NULL;
    int rc = 0;
    if (!k->on_change) {
        knit__rejected_seen(k);
        return 0;
    }
    if (sqlite3_prepare_v2(k->db,
                           "SELECT id, tbl, key FROM _knit_rejected WHERE id > ?1 AND "
                           "rolled_back = 1 ORDER BY id LIMIT ?2",
                           -1, &sel, NULL) != SQLITE_OK) {
        sqlite3_finalize(sel);
        return 0; /* no table (a replica older knits made, read-only): nothing to tell */
    }
    for (;;) {
        rrow_t rows[POLL_ROWS];
        sqlite3_stmt *keys[POLL_ROWS];
        char *texts[POLL_ROWS];
        size_t n = 0, read = 0;
        int step;
        sqlite3_reset(sel);
        sqlite3_bind_int64(sel, 1, k->seen_rejected);
        sqlite3_bind_int(sel, 2, POLL_ROWS);
        while ((step = sqlite3_step(sel)) == SQLITE_ROW) {
            read++;
            k->seen_rejected = sqlite3_column_int64(sel, 0);
            ktable_t *t = knit__table(k, (const char *)sqlite3_column_text(sel, 1));
            const char *key = (const char *)sqlite3_column_text(sel, 2);
            size_t j;
            if (!t || !key)
                continue;
            for (j = 0; j < n && !(rows[j].t == t && strcmp(texts[j], key) == 0); j++)
                ;
            if (j < n)
                continue; /* another refused cell of a row already named */
            if (!(texts[n] = knit__strdup(key))) {
                rc = KNIT_ENOMEM;
                break;
            }
            if (key_parse(k, key, t->npk, &keys[n]) != 0) {
                knit__free(texts[n]);
                continue;
            }
            knit_value_t *pk = knit__calloc(t->npk ? t->npk : 1, sizeof *pk);
            if (!pk) {
                sqlite3_finalize(keys[n]);
                knit__free(texts[n]);
                rc = KNIT_ENOMEM;
                break;
            }
            for (uint32_t i = 0; i < t->npk; i++)
                knit__column_value(keys[n], (int)i, &pk[i]);
            memset(&rows[n], 0, sizeof rows[n]);
            rows[n].t = t;
            rows[n].pk = pk;
            n++;
        }
        if (!rc && step != SQLITE_DONE && step != SQLITE_ROW)
            rc = knit__dberr(k, step, "reading refusals");
        sqlite3_reset(sel);
        if (n)
            fire(k, rows, n);
        for (size_t i = 0; i < n; i++) {
            knit__free((void *)rows[i].pk);
            sqlite3_finalize(keys[i]);
            knit__free(texts[i]);
        }
        if (rc || read < POLL_ROWS)
            break;
    }
    sqlite3_finalize(sel);
    return rc;
}
