/*
** sites.c: the sites and namespaces a replica knows, interned as small
** integers (_knit_sites, _knit_ns), and which sites count as its own.
**
** Inherited sites.  A copy is often the only survivor of the original's
** work (a new machine, a restored backup), so the copy pushes everything
** the original had not had acknowledged.  When it takes its new site
** (replica.c) it records the old one as inherited: _knit_meta key
** "inherit:<idx>" (idx the old site's _knit_sites index) = the local
** version at the takeover.  Inherited keys travel with the file, so a copy
** of a copy inherits the sites its source inherited too.
** knit_changes_since(local_only) takes a cell as this replica's own when its
** site is this replica's, or an inherited site and its version is at or
** below that site's takeover version; cells of an inherited site that
** arrive later (the original, still running, syncing through the relay) get
** newer versions and are remote.  If the original keeps running, both push
** the same changes, which merge idempotently.
**
** Re-pushed versions.  The consistency check's repair (check_rt.c) may
** keep cells of other sites that the relay lacks (the relay was restored
** from an older backup, and the device that wrote them is gone): this
** replica may be the last one holding them, so it pushes them like its
** own.  The repair merges them under versions of their own and records
** the range: _knit_meta key "repush:<lo>" = hi, plus "repush" = the
** largest hi (0: none), read by knit_ack through the cached statement.
** A cell whose version lies in such a range is local; knit_ack drops the
** ranges it covers, so once the relay has them they are remote again.
*/
#include <stdio.h>
#include <string.h>

#include "replica.h"
/* ---------------------------------------------------------------------- */
/* Sites                                                                  */

const knit_site_t *knit__site_get(knit_t *k, uint32_t idx)
{
    static const knit_site_t zero;
    if (idx >= k->nsites && knit__load_sites(k) != 0)
        return &zero;
    return idx < k->nsites ? &k->sites[idx] : &zero;
}

int knit__site_intern(knit_t *k, const knit_site_t *s, uint32_t *idx)
{
    for (uint32_t i = 1; i < k->nsites; i++) {
        if (knit_site_cmp(&k->sites[i], s) == 0) {
            *idx = i;
            return 0;
        }
    }
    /* Another process may have added it: insert-or-ignore, then reload. */
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(k->db, "INSERT OR IGNORE INTO _knit_sites(site) VALUES (?)", -1,
                                &st, NULL);
    if (rc != SQLITE_OK)
        return knit__dberr(k, rc, "adding a site");
    sqlite3_bind_blob(st, 1, s->b, 16, SQLITE_STATIC);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return knit__dberr(k, rc, "adding a site");
    if ((rc = knit__load_sites(k)) != 0)
        return rc;
    for (uint32_t i = 1; i < k->nsites; i++) {
        if (knit_site_cmp(&k->sites[i], s) == 0) {
            *idx = i;
            return 0;
        }
    }
    return knit__err(k, KNIT_ECORRUPT, "site vanished from _knit_sites");
}

int knit_site(knit_t *k, knit_site_t *out) /* see knit.h */
{
    *out = k->site;
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Namespaces                                                             */

int knit__ns_intern(knit_t *k, const char *name, uint32_t *idx)
{
    sqlite3_stmt *st = NULL;
    int rc;
    if (!name[0]) {
        *idx = KNIT_HOME_NS;
        return 0;
    }
    if (!(st = knit__fixed(k, KS_NS_IDX)))
        return knit__dberr(k, sqlite3_errcode(k->db), "reading _knit_ns");
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *idx = (uint32_t)sqlite3_column_int64(st, 0);
        sqlite3_reset(st);
        return 0;
    }
    sqlite3_reset(st);
    st = NULL;
    if (rc != SQLITE_DONE)
        return knit__dberr(k, rc, "reading _knit_ns");
    rc = sqlite3_prepare_v2(k->db, "INSERT INTO _knit_ns(name) VALUES (?)", -1, &st, NULL);
    if (rc != SQLITE_OK)
        return knit__dberr(k, rc, "adding a namespace");
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return knit__dberr(k, rc, "adding a namespace");
    *idx = (uint32_t)sqlite3_last_insert_rowid(k->db);
    return 0;
}

int knit__ns_name(knit_t *k, uint32_t idx, char **out)
{
    sqlite3_stmt *st = knit__fixed(k, KS_NS_NAME);
    int rc;
    *out = NULL;
    if (!st)
        return knit__dberr(k, sqlite3_errcode(k->db), "reading _knit_ns");
    sqlite3_bind_int64(st, 1, idx);
    rc = sqlite3_step(st);
    const char *name = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(st, 0) : NULL;
    *out = knit__strdup(name ? name : "");
    sqlite3_reset(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return knit__dberr(k, rc, "reading _knit_ns");
    return *out ? 0 : KNIT_ENOMEM;
}

/* ---------------------------------------------------------------------- */
/* Local sites                                                            */

/* Loads the sites this replica inherited as a copy ("Inherited sites" at
** the top of this file): a cell of such a site with a version at or below
** the takeover is the original's work the copy pushes as its own. */
int knit__local_load(knit_t *k, klocal_t *l)
{
    sqlite3_stmt *st = knit__fixed(k, KS_INHERITED);
    int rc;
    memset(l, 0, sizeof *l);
    if (!st)
        return knit__dberr(k, sqlite3_errcode(k->db), "reading inherited sites");
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t idx = sqlite3_column_int64(st, 0), ver = sqlite3_column_int64(st, 1);
        if (idx <= 0 || idx >= (int64_t)UINT32_MAX - 16 || ver < 0)
            continue; /* not a key knit wrote: ignore, never push more than it should */
        if ((uint64_t)idx >= l->n) {
            uint32_t n = (uint32_t)idx + 16;
            uint64_t *m = knit__realloc(l->inherit, n * sizeof *m);
            if (!m) {
                sqlite3_reset(st);
                knit__local_free(l);
                return KNIT_ENOMEM;
            }
            memset(m + l->n, 0, (n - l->n) * sizeof *m);
            l->inherit = m;
            l->n = n;
        }
        l->inherit[idx] = (uint64_t)ver + 1;
    }
    sqlite3_reset(st);
    st = NULL;
    if (rc == SQLITE_DONE)
        rc = (st = knit__fixed(k, KS_REPUSH)) != NULL ? SQLITE_OK : sqlite3_errcode(k->db);
    if (rc == SQLITE_OK)
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            int64_t lo = sqlite3_column_int64(st, 0), hi = sqlite3_column_int64(st, 1);
            if (lo <= 0 || hi < lo)
                continue; /* not a key knit wrote */
            uint64_t(*r)[2] = knit__realloc(l->repush, (l->nrepush + 1) * sizeof *r);
            if (!r) {
                sqlite3_reset(st);
                knit__local_free(l);
                return KNIT_ENOMEM;
            }
            l->repush = r;
            l->repush[l->nrepush][0] = (uint64_t)lo;
            l->repush[l->nrepush++][1] = (uint64_t)hi;
        }
    if (st)
        sqlite3_reset(st);
    if (rc == SQLITE_DONE)
        return 0;
    knit__local_free(l);
    return knit__dberr(k, rc, "reading inherited sites");
}

int knit__repush_add(knit_t *k, uint64_t lo, uint64_t hi) /* see replica.h */
{
    char key[40];
    int64_t max = 0;
    int rc = knit__meta_get_int(k, "repush", &max);
    snprintf(key, sizeof key, "repush:%llu", (unsigned long long)lo);
    if (!rc)
        rc = knit__meta_set_int(k, key, (int64_t)hi);
    if (!rc && (uint64_t)max < hi)
        rc = knit__meta_set_int(k, "repush", (int64_t)hi);
    return rc;
}

int knit__repush_acked(knit_t *k, uint64_t acked) /* see replica.h */
{
    int64_t max = 0;
    int rc = knit__meta_get_int(k, "repush", &max);
    if (rc || max <= 0)
        return rc; /* none: the common case costs one cached read */
    sqlite3_stmt *st = NULL;
    rc = sqlite3_prepare_v2(k->db,
                            "DELETE FROM _knit_meta WHERE key GLOB 'repush:*'"
                            " AND CAST(value AS INTEGER) <= ?1",
                            -1, &st, NULL);
    if (rc != SQLITE_OK)
        return knit__dberr(k, rc, "forgetting re-pushed versions");
    sqlite3_bind_int64(st, 1, (int64_t)acked);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return knit__dberr(k, rc, "forgetting re-pushed versions");
    return (uint64_t)max <= acked ? knit__meta_set_int(k, "repush", 0) : 0;
}

int knit__local_is(const knit_t *k, const klocal_t *l, uint32_t site, uint64_t ver)
{
    if (site == k->site_idx)
        return 1;
    if (site < l->n && l->inherit[site] && ver < l->inherit[site])
        return 1;
    for (uint32_t i = 0; i < l->nrepush; i++)
        if (ver >= l->repush[i][0] && ver <= l->repush[i][1])
            return 1;
    return 0;
}

void knit__local_free(klocal_t *l)
{
    knit__free(l->inherit);
    knit__free(l->repush);
    memset(l, 0, sizeof *l);
}
