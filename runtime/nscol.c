/*
** nscol.c: namespaces chosen by a column (knit_track's "col:ns" kind).
**
** A tracked table may name one column whose value says which namespace a
** row belongs to: a value X puts the row in organization namespace
** "org:X", NULL in the replica's write namespace (the user's own).  The
** column is also an ordinary LWW column, synced like the others.
**
** Design notes
**   1. Stamping reads the column's current value in the user row of each
**      logged key (knit_ns_of in the fold's statement); the names are
**      interned first (knit__ns_fold), so the SQL function only looks them
**      up; that cache lives for one stamp only (a rollback may undo an
**      intern).  A value that is not a valid organization id (1 to 128
**      of A-Z a-z 0-9 _ - . @ | +, as the relay's grants) keeps the row
**      in the write namespace: nothing is shared by mistake.
**   2. A row whose value changed moves: the namespace it leaves gets a
**      tombstone (causal length L + 1, a liveness cell stamped now) and
**      the new one a new life (L + 2, or above what it already holds of
**      the key from an earlier stay) with every cell, republished by
**      this replica: each keeps its stamp's time and takes this site and
**      the stamp's version, so the next push (local changes only) carries
**      them all.  A relay keeps each
**      namespace apart, so without the tombstone the old namespace's
**      members would keep the row, and without the cells the new one's
**      would see a row with no values.
**   3. The replica holds one row per key, so the departures are kept in
**      _knit_gone_<id>: per key and namespace left, its causal length and
**      liveness cell.  Pushes (changes.c) carry the local ones; the digest
**      (digest_db.c) counts them as the dead rows they are in that
**      namespace, as the relay does.
**   4. Apply (apply.c ns_move): a change from another namespace than the
**      row's with a later life (a larger causal length, or a live life
**      over a local tombstone) moved there: the row follows it, and its
**      old namespace's state becomes a departure.  Otherwise it is that
**      namespace's older state of a row that has left it, merged into the
**      departure, not into the row.  A move therefore beats a concurrent
**      edit made in the namespace the row left.  A key alive in both at
**      once goes to the larger causal length, then liveness stamp, and the
**      losing namespace gets a tombstone from the replica that saw both.
**   5. That tombstone is deterministic: the losing life's causal length
**      plus one, stamped with the winning life's liveness cell (its time
**      and site).  Every replica that sees both lives writes the same
**      cell, and after an ordinary move it is exactly the mover's own
**      tombstone (note 2 stamps both with one tick), so receiving the new
**      life before the old namespace's tombstone changes nothing.  The
**      winner's writer may never have held the losing namespace (a row
**      made again in another organization), so the cell is pushed from
**      here too: it takes a version of its own, re-pushed whatever its
**      site (sites.c), and a relay that already holds it counts it known.
**      A replica that only reads the losing namespace has that push
**      refused: _knit_rejected records it with rolled_back 0 (reject.c
**      note 2: the cell is not this site's), and nothing else changes.
*/
#include <string.h>

#include "replica.h"

#define ORG_ID_MAX 128 /* design note 1 */

struct knsof_s {
    char *value;  /* the column's value, as text */
    uint32_t idx; /* namespace "org:<value>" */
};

static void fn_ns_of(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    knit_t *k = sqlite3_user_data(ctx);
    (void)argc;
    if (sqlite3_value_type(argv[0]) != SQLITE_NULL) {
        const char *v = (const char *)sqlite3_value_text(argv[0]);
        for (size_t i = 0; v && i < k->nnsof; i++)
            if (strcmp(k->nsof[i].value, v) == 0) {
                sqlite3_result_int64(ctx, k->nsof[i].idx);
                return;
            }
    }
    sqlite3_result_value(ctx, argv[1]);
}

int knit__nscol_register(knit_t *k)
{
    int rc = sqlite3_create_function(k->db, "knit_ns_of", 2, SQLITE_UTF8 | SQLITE_DIRECTONLY, k,
                                     fn_ns_of, NULL, NULL);
    return rc == SQLITE_OK ? 0 : knit__dberr(k, rc, "registering functions");
}

void knit__nscol_free(knit_t *k)
{
    for (size_t i = 0; i < k->nnsof; i++)
        knit__free(k->nsof[i].value);
    knit__free(k->nsof);
    k->nsof = NULL;
    k->nnsof = 0;
}

static int org_id_ok(const char *v)
{
    size_t n = strlen(v);
    if (n == 0 || n > ORG_ID_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = v[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.' || c == '@' || c == '|' || c == '+'))
            return 0;
    }
    return 1;
}

/* Interns "org:<v>" and remembers it for knit_ns_of. */
static int nsof_add(knit_t *k, const char *v)
{
    for (size_t i = 0; i < k->nnsof; i++)
        if (strcmp(k->nsof[i].value, v) == 0)
            return 0;
    if (!org_id_ok(v))
        return 0;
    char name[ORG_ID_MAX + 8];
    uint32_t idx;
    snprintf(name, sizeof name, "org:%s", v);
    int rc = knit__ns_intern(k, name, &idx);
    if (rc)
        return rc;
    struct knsof_s *n = knit__realloc(k->nsof, (k->nnsof + 1) * sizeof *n);
    if (!n)
        return KNIT_ENOMEM;
    k->nsof = n;
    if (!(n[k->nnsof].value = knit__strdup(v)))
        return KNIT_ENOMEM;
    n[k->nnsof++].idx = idx;
    return 0;
}

int knit__gone_create(knit_t *k, const ktable_t *t)
{
    sqlite3_str *s = sqlite3_str_new(NULL);
    sqlite3_str_appendf(s, "CREATE TABLE IF NOT EXISTS _knit_gone_%d(", t->id);
    for (uint32_t i = 0; i < t->npk; i++)
        sqlite3_str_appendf(s, "k%u, ", i);
    sqlite3_str_appendall(s, "ns INTEGER NOT NULL, cl INTEGER NOT NULL, cells BLOB NOT NULL, "
                             "PRIMARY KEY(");
    knit__keylist_str(s, t->npk, "");
    sqlite3_str_appendall(s, ", ns)) WITHOUT ROWID");
    return knit__exec_str(k, s);
}

/* ---------------------------------------------------------------------- */
/* Departures                                                             */

static void bind_keys(sqlite3_stmt *st, const ktable_t *t, const knit_value_t *pk)
{
    for (uint32_t i = 0; i < t->npk; i++)
        knit__bind_value(st, (int)i + 1, &pk[i]);
}

int knit__gone_del(knit_t *k, ktable_t *t, const knit_value_t *pk, uint32_t ns)
{
    int rc;
    if (!t->st[ST_GONEDEL]) {
        sqlite3_str *s = sqlite3_str_new(NULL);
        sqlite3_str_appendf(s, "DELETE FROM _knit_gone_%d WHERE ", t->id);
        knit__where_meta_keys(s, t->npk);
        sqlite3_str_appendf(s, " AND ns = ?%u", t->npk + 1);
        if ((rc = knit__prepare_str(k, &t->st[ST_GONEDEL], s)) != 0)
            return rc;
    }
    sqlite3_stmt *st = t->st[ST_GONEDEL];
    bind_keys(st, t, pk);
    sqlite3_bind_int64(st, (int)t->npk + 1, ns);
    rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : knit__dberr(k, rc, "forgetting a departure");
}

int knit__gone_get(knit_t *k, ktable_t *t, const knit_value_t *pk, uint32_t ns, uint64_t *cl,
                   kcell_t *cell0)
{
    int rc;
    if (!t->st[ST_GONEGET]) {
        sqlite3_str *s = sqlite3_str_new(NULL);
        sqlite3_str_appendf(s, "SELECT cl, cells FROM _knit_gone_%d WHERE ", t->id);
        knit__where_meta_keys(s, t->npk);
        sqlite3_str_appendf(s, " AND ns = ?%u", t->npk + 1);
        if ((rc = knit__prepare_str(k, &t->st[ST_GONEGET], s)) != 0)
            return rc;
    }
    sqlite3_stmt *st = t->st[ST_GONEGET];
    bind_keys(st, t, pk);
    sqlite3_bind_int64(st, (int)t->npk + 1, ns);
    *cl = 0;
    memset(cell0, 0, sizeof *cell0);
    if ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        *cl = (uint64_t)sqlite3_column_int64(st, 0);
        rc = knit__cells_decode(sqlite3_column_blob(st, 1), (size_t)sqlite3_column_bytes(st, 1), 1,
                                cell0) != 0
                 ? knit__err(k, KNIT_ECORRUPT, "%s: corrupt departure metadata", t->name)
                 : 0;
    } else {
        rc = rc == SQLITE_DONE ? 0 : knit__dberr(k, rc, "reading a departure");
    }
    sqlite3_reset(st);
    return rc;
}

int knit__gone_put(knit_t *k, ktable_t *t, const knit_value_t *pk, uint32_t ns, uint64_t cl,
                   const kcell_t *cell0)
{
    uint64_t ocl;
    kcell_t o, c = *cell0;
    int rc = knit__gone_get(k, t, pk, ns, &ocl, &o);
    if (rc)
        return rc;
    if (ocl) {
        /* The larger causal length, then the larger liveness stamp. */
        int older = ocl > cl;
        if (ocl == cl && o.hlc && c.hlc)
            older = knit_stamp_cmp(o.hlc, knit__site_get(k, o.site), c.hlc,
                                   knit__site_get(k, c.site)) >= 0;
        else if (ocl == cl)
            older = o.hlc != 0;
        if (older)
            return 0;
    }
    if (!t->st[ST_GONEPUT]) {
        sqlite3_str *s = sqlite3_str_new(NULL);
        sqlite3_str_appendf(s, "INSERT OR REPLACE INTO _knit_gone_%d(", t->id);
        knit__keylist_str(s, t->npk, "");
        sqlite3_str_appendall(s, ", ns, cl, cells) VALUES (");
        for (uint32_t i = 0; i < t->npk + 3; i++)
            sqlite3_str_appendf(s, "%s?%u", i ? ", " : "", i + 1);
        sqlite3_str_appendall(s, ")");
        if ((rc = knit__prepare_str(k, &t->st[ST_GONEPUT], s)) != 0)
            return rc;
    }
    sqlite3_stmt *st = t->st[ST_GONEPUT];
    uint8_t buf[KNIT_CELL_MAXBYTES + KNIT_VARINT_MAX];
    size_t n = knit__cells_encode(&c, 1, buf);
    bind_keys(st, t, pk);
    sqlite3_bind_int64(st, (int)t->npk + 1, ns);
    sqlite3_bind_int64(st, (int)t->npk + 2, (int64_t)cl);
    sqlite3_bind_blob(st, (int)t->npk + 3, buf, (int)n, SQLITE_STATIC);
    rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : knit__dberr(k, rc, "recording a departure");
}

int knit__gone_each(knit_t *k, ktable_t *t, int64_t ns, knit_gone_fn fn, void *arg)
{
    if (t->nscol < 0)
        return 0;
    sqlite3_stmt *st = NULL;
    sqlite3_str *s = sqlite3_str_new(NULL);
    sqlite3_str_appendall(s, "SELECT ");
    knit__keylist_str(s, t->npk, "");
    sqlite3_str_appendf(s, ", ns, cl, cells FROM _knit_gone_%d WHERE ?1 = 0 OR ns = ?1", t->id);
    int rc = knit__prepare_temp(k, &st, s, "reading departures");
    if (rc)
        return rc;
    sqlite3_bind_int64(st, 1, ns);
    knit_value_t pk[KNIT_MAX_PK];
    int step;
    while (!rc && (step = sqlite3_step(st)) == SQLITE_ROW) {
        int base = (int)t->npk;
        kcell_t c;
        for (uint32_t i = 0; i < t->npk; i++)
            knit__column_value(st, (int)i, &pk[i]);
        if (knit__cells_decode(sqlite3_column_blob(st, base + 2),
                               (size_t)sqlite3_column_bytes(st, base + 2), 1, &c) != 0)
            rc = knit__err(k, KNIT_ECORRUPT, "%s: corrupt departure metadata", t->name);
        else
            rc = fn(arg, pk, (uint32_t)sqlite3_column_int64(st, base),
                    (uint64_t)sqlite3_column_int64(st, base + 1), &c);
    }
    if (!rc && step != SQLITE_DONE)
        rc = knit__dberr(k, step, "reading departures");
    sqlite3_finalize(st);
    return rc;
}

/* ---------------------------------------------------------------------- */
/* Stamping: names first, then moves (design notes 1 and 2)               */

/* Appends "<alias>.k0 = u."p1" AND ..." joined to the user row u. */
static void user_join(sqlite3_str *s, const ktable_t *t, const char *alias)
{
    knit__keys_join(s, t, "u", alias);
}

typedef struct move_s {
    knit_value_t pk[KNIT_MAX_PK];
    uint8_t *keys; /* owned copies of text and blob keys */
    uint32_t from, to;
    uint64_t cl;
    kcell_t cells[KNIT_MAX_COLS + 1];
} move_t;

static void moves_free(move_t *m, size_t n)
{
    for (size_t i = 0; i < n; i++)
        knit__free(m[i].keys);
    knit__free(m);
}

/* Copies the key values of the current row of st (columns 0..npk-1). */
static int key_copy(sqlite3_stmt *st, const ktable_t *t, move_t *m)
{
    size_t need = 0;
    for (uint32_t i = 0; i < t->npk; i++) {
        knit__column_value(st, (int)i, &m->pk[i]);
        if (m->pk[i].type == KNIT_TEXT || m->pk[i].type == KNIT_BLOB)
            need += m->pk[i].u.b.n + 1;
    }
    if (!need)
        return 0;
    if (!(m->keys = knit__malloc(need)))
        return KNIT_ENOMEM;
    uint8_t *p = m->keys;
    for (uint32_t i = 0; i < t->npk; i++)
        if (m->pk[i].type == KNIT_TEXT || m->pk[i].type == KNIT_BLOB) {
            if (m->pk[i].u.b.n)
                memcpy(p, m->pk[i].u.b.p, m->pk[i].u.b.n);
            p[m->pk[i].u.b.n] = 0;
            m->pk[i].u.b.p = p;
            p += m->pk[i].u.b.n + 1;
        }
    return 0;
}

static int intern_values(knit_t *k, ktable_t *t, int64_t max)
{
    sqlite3_stmt *st = NULL;
    sqlite3_str *s = sqlite3_str_new(NULL);
    sqlite3_str_appendf(s, "SELECT DISTINCT u.\"%w\" FROM _knit_log_%d AS l JOIN \"%w\" AS u ON ",
                        t->cols[t->nscol], t->id, t->name);
    user_join(s, t, "l");
    sqlite3_str_appendf(s, " WHERE l.seq <= ?1 AND u.\"%w\" IS NOT NULL", t->cols[t->nscol]);
    int rc = knit__prepare_temp(k, &st, s, "reading namespaces");
    if (rc)
        return rc;
    sqlite3_bind_int64(st, 1, max);
    int step;
    while (!rc && (step = sqlite3_step(st)) == SQLITE_ROW) {
        const char *v = (const char *)sqlite3_column_text(st, 0);
        char *copy = knit__strdup(v ? v : "");
        rc = copy ? nsof_add(k, copy) : KNIT_ENOMEM;
        knit__free(copy);
    }
    if (!rc && step != SQLITE_DONE)
        rc = knit__dberr(k, step, "reading namespaces");
    sqlite3_finalize(st);
    return rc;
}

int knit__ns_fold(knit_t *k, ktable_t *t, int64_t write_ns, uint64_t tick, uint64_t ver,
                  int64_t max)
{
    /* The names are looked up again each stamp: a rollback may have
    ** undone an intern, and this cache must never outlive it. */
    knit__nscol_free(k);
    int rc = intern_values(k, t, max);
    if (rc)
        return rc;
    /* The logged rows that exist and whose namespace changed: the logged
    ** keys once each (the log has no key index), then a key lookup in the
    ** metadata and the user table for each. */
    sqlite3_stmt *st = NULL;
    sqlite3_str *s = sqlite3_str_new(NULL);
    sqlite3_str_appendall(s, "WITH lk AS MATERIALIZED (SELECT DISTINCT ");
    knit__keylist_str(s, t->npk, "");
    sqlite3_str_appendf(s, " FROM _knit_log_%d WHERE seq <= ?1) SELECT ", t->id);
    knit__keylist_str(s, t->npk, "r.");
    sqlite3_str_appendf(s,
                        ", r.ns, r.cl, r.cells, knit_ns_of(u.\"%w\", ?2) AS want"
                        " FROM lk JOIN _knit_rows_%d AS r ON ",
                        t->cols[t->nscol], t->id);
    for (uint32_t i = 0; i < t->npk; i++)
        sqlite3_str_appendf(s, "%sr.k%u = lk.k%u", i ? " AND " : "", i, i);
    sqlite3_str_appendf(s, " JOIN \"%w\" AS u ON ", t->name);
    user_join(s, t, "r");
    sqlite3_str_appendall(s, " WHERE r.ns <> want");
    if ((rc = knit__prepare_temp(k, &st, s, "finding moved rows")) != 0)
        return rc;
    sqlite3_bind_int64(st, 1, max);
    sqlite3_bind_int64(st, 2, write_ns);
    move_t *m = NULL;
    size_t n = 0, cap = 0;
    int step;
    while (!rc && (step = sqlite3_step(st)) == SQLITE_ROW) {
        int base = (int)t->npk;
        if (n == cap) {
            size_t c = cap ? cap * 2 : 16;
            move_t *nm = knit__realloc(m, c * sizeof *nm);
            if (!nm) {
                rc = KNIT_ENOMEM;
                break;
            }
            m = nm;
            cap = c;
        }
        move_t *v = &m[n];
        memset(v, 0, sizeof *v);
        n++;
        if ((rc = key_copy(st, t, v)) != 0)
            break;
        v->from = (uint32_t)sqlite3_column_int64(st, base);
        v->cl = (uint64_t)sqlite3_column_int64(st, base + 1);
        v->to = (uint32_t)sqlite3_column_int64(st, base + 3);
        if (knit__cells_decode(sqlite3_column_blob(st, base + 2),
                               (size_t)sqlite3_column_bytes(st, base + 2), t->ncols + 1,
                               v->cells) != 0)
            rc = knit__err(k, KNIT_ECORRUPT, "%s: corrupt row metadata", t->name);
    }
    if (!rc && step != SQLITE_DONE)
        rc = knit__dberr(k, step, "finding moved rows");
    sqlite3_finalize(st);
    st = NULL;
    if (!rc && n) {
        s = sqlite3_str_new(NULL);
        sqlite3_str_appendf(s,
                            "UPDATE _knit_rows_%d SET ns = ?%u, cl = ?%u, ver = ?%u, cells = ?%u"
                            " WHERE ",
                            t->id, t->npk + 1, t->npk + 2, t->npk + 3, t->npk + 4);
        knit__where_meta_keys(s, t->npk);
        rc = knit__prepare_temp(k, &st, s, "moving a row");
    }
    for (size_t i = 0; !rc && i < n; i++) {
        move_t *v = &m[i];
        int live = knit_cl_live(v->cl);
        kcell_t now = {tick, k->site_idx, ver};
        /* Design note 2: a live row leaves a tombstone; a dead one (about
        ** to be inserted again) its state as it is. */
        uint64_t gcl, newcl = live ? v->cl + 2 : v->cl;
        kcell_t g0;
        rc = knit__gone_put(k, t, v->pk, v->from, live ? v->cl + 1 : v->cl,
                            live ? &now : &v->cells[0]);
        if (!rc)
            rc = knit__gone_get(k, t, v->pk, v->to, &gcl, &g0);
        if (!rc)
            rc = knit__gone_del(k, t, v->pk, v->to);
        if (rc)
            break;
        /* A life in the namespace it enters must outlive what that one
        ** already holds of the key (the row was there before): the next
        ** odd length above it, or for a dead row (the fold adds one) the
        ** even one at or above it. */
        if (live && newcl <= gcl)
            newcl = gcl + 1 + (gcl & 1);
        else if (!live && newcl < gcl)
            newcl = gcl + (gcl & 1);
        if (live)
            v->cells[0] = now;
        for (uint32_t c = 0; c <= t->ncols; c++)
            if (v->cells[c].hlc) {
                v->cells[c].site = k->site_idx;
                v->cells[c].ver = ver;
            }
        uint8_t buf[(KNIT_MAX_COLS + 1) * KNIT_CELL_MAXBYTES + KNIT_VARINT_MAX];
        size_t len = knit__cells_encode(v->cells, t->ncols + 1, buf);
        sqlite3_reset(st);
        for (uint32_t j = 0; j < t->npk; j++)
            knit__bind_value(st, (int)j + 1, &v->pk[j]);
        sqlite3_bind_int64(st, (int)t->npk + 1, v->to);
        sqlite3_bind_int64(st, (int)t->npk + 2, (int64_t)newcl);
        sqlite3_bind_int64(st, (int)t->npk + 3, (int64_t)ver);
        sqlite3_bind_blob(st, (int)t->npk + 4, buf, (int)len, SQLITE_TRANSIENT);
        if (sqlite3_step(st) != SQLITE_DONE)
            rc = knit__dberr(k, sqlite3_errcode(k->db), "moving a row");
    }
    sqlite3_finalize(st);
    moves_free(m, n);
    return rc;
}
