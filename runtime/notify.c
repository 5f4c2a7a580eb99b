/*
** notify.c: telling the application that tracked tables changed.
**
** Stamp and apply count, per table, the rows they changed (ktable_t.ev_rows)
** and whether the change was local or remote (knit->ev_local, ev_remote);
** after their commit they call knit__notify, which fires the callback once
** and clears the counts.  knit_poll (changes.c) finds other connections'
** commits.
**
** Design notes
**   1. With keys asked for (knit_on_change_keys), an event is read from the
**      metadata rather than from the counts: the rows whose version is in
**      (seen_version, V], where V is the replica's version read first and
**      seen_version the V of the last event.  Every write, by this handle,
**      another process or a remote batch, takes a new version for each row
**      it touches, so each change falls in exactly one event's range; a row
**      written again after V is reported again by the next event.
**   2. A row is remote when every cell that changed in the range carries
**      another device's site; a cell of this replica's site (or of a site
**      it inherited as a copy, sites.c) makes it local, since it was
**      written on this device, whichever process did it.
**   3. Key values are copied into one buffer per event and freed after the
**      callback returns (knit.h: pointers in events live for the call).
*/
#include <string.h>

#include "replica.h"
/* ---------------------------------------------------------------------- */
/* Notification                                                           */

int knit_on_change(knit_t *k, knit_change_fn cb, void *data) /* see knit.h */
{
    k->on_change = cb;
    k->on_change_data = data;
    return 0;
}

int knit_on_change_keys(knit_t *k, size_t max_keys) /* see knit.h */
{
    k->ev_max_keys = max_keys;
    return 0;
}

/* The keys of one event (note 3). */
typedef struct evkeys_s {
    knit_event_key_t *keys; /* named rows */
    size_t n, cap;          /* count, capacity */
    knit_value_t *vals;     /* key values, keys[i].pk points in here at the end */
    size_t nvals, capvals;  /* count, capacity */
    size_t *off;            /* per value: offset of its bytes in buf (TEXT/BLOB) */
    size_t capoff;          /* capacity of off */
    uint8_t *buf;           /* bytes of TEXT and BLOB key values */
    size_t nbuf, capbuf;    /* used, capacity */
    size_t *rows;           /* rows per table (k->ntables), all counted */
    int truncated;          /* more rows than max_keys */
    int all_remote;         /* every key is remote */
} evkeys_t;

static int grow(void **p, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap * 2 : 64;
    while (n < need)
        n *= 2;
    void *q = knit__realloc(*p, n * size);
    if (!q)
        return KNIT_ENOMEM;
    *p = q;
    *cap = n;
    return 0;
}

static void evkeys_free(evkeys_t *e)
{
    knit__free(e->keys);
    knit__free(e->vals);
    knit__free(e->off);
    knit__free(e->buf);
    knit__free(e->rows);
}

/* Adds the rows of table ti changed in (lo, hi] (note 1). */
static int table_keys(knit_t *k, size_t ti, uint64_t lo, uint64_t hi, const klocal_t *local,
                      evkeys_t *e)
{
    ktable_t *t = &k->tables[ti];
    sqlite3_stmt *st;
    int rc = 0, step;
    if (!t->st[ST_NOTIFY]) {
        sqlite3_str *q = sqlite3_str_new(NULL);
        sqlite3_str_appendall(q, "SELECT ");
        knit__keylist_str(q, t->npk, "");
        sqlite3_str_appendf(q, ", cl, cells FROM _knit_rows_%d WHERE ver > ?1 AND ver <= ?2",
                            t->id);
        if ((rc = knit__prepare_str(k, &t->st[ST_NOTIFY], q)) != 0)
            return rc;
    }
    st = t->st[ST_NOTIFY];
    sqlite3_reset(st);
    sqlite3_bind_int64(st, 1, (int64_t)lo);
    sqlite3_bind_int64(st, 2, (int64_t)hi);
    kcell_t cells[KNIT_MAX_COLS + 1];
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        int base = (int)t->npk, remote = 1;
        uint64_t cl = (uint64_t)sqlite3_column_int64(st, base);
        if (knit__cells_decode(sqlite3_column_blob(st, base + 1),
                               (size_t)sqlite3_column_bytes(st, base + 1), t->ncols + 1,
                               cells) == 0) {
            for (uint32_t c = 0; c <= t->ncols && remote; c++)
                if (cells[c].hlc && cells[c].ver > lo && cells[c].ver <= hi &&
                    knit__local_is(k, local, cells[c].site, cells[c].ver))
                    remote = 0;
        } else {
            remote = 0; /* unreadable metadata: do not claim it came from elsewhere */
        }
        e->rows[ti]++;
        if (e->n >= k->ev_max_keys) {
            e->truncated = 1;
            if (!remote)
                e->all_remote = 0;
            continue;
        }
        if ((rc = grow((void **)&e->keys, &e->cap, e->n + 1, sizeof *e->keys)) != 0 ||
            (rc = grow((void **)&e->vals, &e->capvals, e->nvals + t->npk, sizeof *e->vals)) != 0)
            break;
        if ((rc = grow((void **)&e->off, &e->capoff, e->nvals + t->npk, sizeof *e->off)) != 0)
            break;
        knit_event_key_t *key = &e->keys[e->n++];
        key->table = ti;
        key->npk = t->npk;
        key->pk = NULL;
        key->remote = remote;
        key->deleted = !knit_cl_live(cl);
        key->rolled_back = 0; /* reject.c fires rollbacks; the array is not zeroed */
        if (!remote)
            e->all_remote = 0;
        for (uint32_t i = 0; i < t->npk && !rc; i++) {
            knit_value_t *v = &e->vals[e->nvals];
            knit__column_value(st, (int)i, v);
            e->off[e->nvals++] = e->nbuf;
            if (v->type == KNIT_TEXT || v->type == KNIT_BLOB) {
                if ((rc = grow((void **)&e->buf, &e->capbuf, e->nbuf + v->u.b.n + 1, 1)) != 0)
                    break;
                if (v->u.b.n)
                    memcpy(e->buf + e->nbuf, v->u.b.p, v->u.b.n);
                e->nbuf += v->u.b.n;
            }
        }
    }
    if (!rc && step != SQLITE_DONE)
        rc = knit__dberr(k, step, "reading changed rows");
    sqlite3_reset(st);
    return rc;
}

/* Reads the event's keys (note 1) and points each key at its values. */
static int read_keys(knit_t *k, uint64_t lo, uint64_t hi, evkeys_t *e)
{
    klocal_t local;
    int rc;
    memset(e, 0, sizeof *e);
    e->all_remote = 1;
    if (!(e->rows = knit__calloc(k->ntables ? k->ntables : 1, sizeof *e->rows)))
        return KNIT_ENOMEM;
    if ((rc = knit__local_load(k, &local)) != 0)
        return rc;
    for (size_t i = 0; !rc && i < k->ntables; i++)
        rc = table_keys(k, i, lo, hi, &local, e);
    knit__local_free(&local);
    if (rc)
        return rc;
    size_t v = 0;
    for (size_t i = 0; i < e->n; i++) {
        e->keys[i].pk = e->vals + v;
        for (uint32_t j = 0; j < e->keys[i].npk; j++, v++)
            if (e->vals[v].type == KNIT_TEXT || e->vals[v].type == KNIT_BLOB)
                e->vals[v].u.b.p = e->buf + e->off[v];
    }
    return 0;
}

/* Fires the callback with the rows changed since the last event (note 1). */
static void notify_keys(knit_t *k, uint64_t lo, uint64_t hi)
{
    evkeys_t e;
    memset(&e, 0, sizeof e);
    size_t n = 0, nt = k->ntables ? k->ntables : 1;
    const char **names = knit__calloc(nt, sizeof *names);
    size_t *rows = knit__calloc(nt, sizeof *rows), *first = knit__calloc(nt, sizeof *first);
    int rc = names && rows && first ? read_keys(k, lo, hi, &e) : KNIT_ENOMEM;
    if (rc) {
        /* Out of memory or a read error: an event without keys still says
        ** which tables to refresh, from the counts. */
        evkeys_free(&e);
        memset(&e, 0, sizeof e);
        e.truncated = 1;
        for (size_t i = 0; names && rows && i < k->ntables; i++)
            if (k->tables[i].ev_rows) {
                names[n] = k->tables[i].name;
                rows[n++] = k->tables[i].ev_rows;
            }
    } else {
        for (size_t i = 0; i < k->ntables; i++)
            if (e.rows[i]) {
                first[i] = n;
                names[n] = k->tables[i].name;
                rows[n++] = e.rows[i];
            }
        for (size_t i = 0; i < e.n; i++) /* table indexes into the event's own list */
            e.keys[i].table = first[e.keys[i].table];
    }
    for (size_t i = 0; i < k->ntables; i++)
        k->tables[i].ev_rows = 0;
    if (n) {
        knit_event_t ev;
        memset(&ev, 0, sizeof ev);
        ev.remote = !rc && e.all_remote;
        ev.ntables = n;
        ev.tables = names;
        ev.rows = rows;
        ev.nkeys = e.n;
        ev.keys = e.keys;
        ev.truncated = e.truncated;
        k->on_change(k, &ev, k->on_change_data);
    }
    evkeys_free(&e);
    knit__free(names);
    knit__free(rows);
    knit__free(first);
}

void knit__notify(knit_t *k)
{
    int remote = k->ev_remote, local = k->ev_local;
    uint64_t lo = k->seen_version;
    k->ev_remote = k->ev_local = 0;
    knit_version(k, &k->seen_version);
    k->notified += remote || local;
    if ((!remote && !local) || !k->on_change) {
        for (size_t i = 0; i < k->ntables; i++)
            k->tables[i].ev_rows = 0;
        return;
    }
    if (k->ev_max_keys) {
        notify_keys(k, lo, k->seen_version);
        return;
    }
    const char *names[256];
    size_t rows[256], n = 0;
    for (size_t i = 0; i < k->ntables; i++) {
        if (k->tables[i].ev_rows && n < 256) {
            names[n] = k->tables[i].name;
            rows[n++] = k->tables[i].ev_rows;
        }
        k->tables[i].ev_rows = 0;
    }
    if (!n)
        return;
    knit_event_t ev;
    memset(&ev, 0, sizeof ev);
    ev.remote = remote;
    ev.ntables = n;
    ev.tables = names;
    ev.rows = rows;
    k->on_change(k, &ev, k->on_change_data);
}
