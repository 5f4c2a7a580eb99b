/*
** replica.c: opening and closing replicas: knit's metadata tables, their
** versions, the site id and its copy detection.
**
** Copy detection.  A replica remembers the identity of the file it lives in
** (device, inode and machine id) in _knit_meta.file_id.  A copy, a restore
** from backup or the same file on another machine has a different identity;
** on the first writable open there knit takes a fresh site id before
** anything else is written, so two files never issue the same (site, counter)
** dots or stamps.  A rename keeps the inode and so keeps the site id.
**
** The copy then inherits the old site (sites.c, "Inherited sites"), so it
** pushes what the original had not had acknowledged.
*/
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "entropy.h"
#include "replica.h"

static const char *SCHEMA_SQL =
    "CREATE TABLE IF NOT EXISTS _knit_meta(key TEXT PRIMARY KEY, value) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS _knit_sites(idx INTEGER PRIMARY KEY,"
    "  site BLOB NOT NULL UNIQUE CHECK (length(site) = 16));"
    "CREATE TABLE IF NOT EXISTS _knit_ns(idx INTEGER PRIMARY KEY, name TEXT UNIQUE,"
    "  cursor INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE IF NOT EXISTS _knit_tables(name TEXT PRIMARY KEY, id INTEGER NOT NULL UNIQUE,"
    "  pk TEXT NOT NULL, cols TEXT NOT NULL, kinds TEXT NOT NULL) WITHOUT ROWID;"
    "INSERT OR IGNORE INTO _knit_ns(idx, name) VALUES (1, NULL);";

/* Added in metadata version 2; also created when an older replica opens. */
static const char *ASIDE_SQL =
    "CREATE TABLE IF NOT EXISTS _knit_aside(id INTEGER PRIMARY KEY, tbl TEXT NOT NULL,"
    "  pk BLOB NOT NULL, key TEXT NOT NULL, col TEXT NOT NULL, ns TEXT NOT NULL,"
    "  cl INTEGER NOT NULL, hlc INTEGER NOT NULL, site BLOB NOT NULL, orset INTEGER NOT NULL,"
    "  value, kind TEXT NOT NULL, reason TEXT NOT NULL, at INTEGER NOT NULL);"
    "CREATE UNIQUE INDEX IF NOT EXISTS _knit_aside_cell"
    "  ON _knit_aside(tbl, pk, col, cl, hlc, site, value);";

/* "dev:ino:machine" for the file at path. */
static void file_identity(const char *path, char *buf, size_t n)
{
    struct stat sb;
    char machine[128] = "";
    FILE *f = fopen("/etc/machine-id", "r");
    if (f) {
        if (!fgets(machine, sizeof machine, f))
            machine[0] = 0;
        fclose(f);
        machine[strcspn(machine, "\r\n")] = 0;
    }
    if (!machine[0])
        gethostname(machine, sizeof machine - 1);
    if (stat(path, &sb) != 0)
        memset(&sb, 0, sizeof sb);
    snprintf(buf, n, "%llu:%llu:%s", (unsigned long long)sb.st_dev, (unsigned long long)sb.st_ino,
             machine);
}

/* Makes a fresh site id the local one (new replica, or a detected copy).
** A copy inherits its old site (see "Inherited sites" above): that site's
** changes up to the current version stay this replica's to push. */
static int new_site(knit_t *k)
{
    knit_site_t s;
    uint32_t idx;
    int rc;
    if (k->site_idx) {
        int64_t version;
        char key[32];
        snprintf(key, sizeof key, "inherit:%u", (unsigned)k->site_idx);
        if ((rc = knit__meta_get_int(k, "version", &version)) != 0 ||
            (rc = knit__meta_set_int(k, key, version)) != 0)
            return rc;
    }
    if ((rc = knit__random(s.b, sizeof s.b)) != 0)
        return knit__err(k, rc, "the kernel gave no random bytes for a site id");
    if ((rc = knit__site_intern(k, &s, &idx)) != 0)
        return rc;
    if ((rc = knit__meta_set_blob(k, "site", s.b, 16, 0)) != 0 ||
        (rc = knit__meta_set_int(k, "site_idx", idx)) != 0)
        return rc;
    k->site = s;
    k->site_idx = idx;
    return 0;
}

void knit_free(void *p) /* see knit.h */
{
    knit__free(p);
}

const char *knit_filename(knit_t *k) /* see knit.h */
{
    return k->path;
}

void *knit_db(knit_t *k) /* see knit.h */
{
    if (!k->app_db) {
        int flags = k->readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE;
        if (sqlite3_open_v2(k->path, &k->app_db, flags, NULL) != SQLITE_OK) {
            knit__err(k, KNIT_EIO, "cannot open a connection to %s: %s", k->path,
                      k->app_db ? sqlite3_errmsg(k->app_db) : "out of memory");
            sqlite3_close(k->app_db);
            k->app_db = NULL;
            return NULL;
        }
        sqlite3_busy_timeout(k->app_db, 5000);
    }
    return k->app_db;
}

/* ---------------------------------------------------------------------- */
/* Open and close                                                         */

/* SQLite's busy handler for knit's connection.  Its own (sqlite3_busy_timeout)
** sleeps longer the longer it waits, up to 100 ms a try, so a stamp that
** waited out an app's burst of transactions slept through most of the gap
** after it.  This one tries again every millisecond for the first 200 ms,
** then every 5 ms, until busy_ms have passed. */
static int busy_wait(void *data, int tries)
{
    knit_t *k = data;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    double now = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
    if (tries == 0)
        k->busy_since = now;
    double waited = now - k->busy_since;
    if (waited * 1000 >= k->busy_ms)
        return 0;
    sqlite3_sleep(waited < 0.2 ? 1 : 5);
    return 1;
}

int knit_busy_timeout(knit_t *k, int ms) /* see knit.h */
{
    int was = k->busy_ms;
    if (ms >= 0)
        k->busy_ms = ms;
    return was;
}

static int has_metadata(knit_t *k, int *yes)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(
        k->db, "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = '_knit_meta'", -1, &st,
        NULL);
    if (rc != SQLITE_OK)
        return knit__dberr(k, rc, "reading the schema");
    rc = sqlite3_step(st);
    *yes = rc == SQLITE_ROW;
    sqlite3_finalize(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : knit__dberr(k, rc, "reading the schema");
}

/* Checks the metadata version and loads the site; takes a new site id when
** the file is new or a copy.  Runs inside a write transaction unless
** read-only. */
static int load_identity(knit_t *k, const char *path)
{
    int64_t ver, site_idx;
    sqlite3_stmt *st;
    char fid[256];
    int rc;

    if ((rc = knit__meta_get_int(k, "schema", &ver)) != 0)
        return rc;
    if (ver > KNIT_SCHEMA_VERSION)
        return knit__err(k, KNIT_EVERSION,
                         "replica metadata version %lld is newer than this knit (%d); upgrade knit",
                         (long long)ver, KNIT_SCHEMA_VERSION);
    if ((rc = knit__load_sites(k)) != 0)
        return rc;
    if ((rc = knit__meta_get_int(k, "site_idx", &site_idx)) != 0)
        return rc;
    if (site_idx > 0 && (uint64_t)site_idx < k->nsites) {
        k->site_idx = (uint32_t)site_idx;
        k->site = k->sites[site_idx];
    }
    if (k->readonly)
        return site_idx > 0 ? 0 : knit__err(k, KNIT_ENOTREPLICA, "replica has no site id");

    file_identity(path, fid, sizeof fid);
    rc = knit__meta_get(k, "file_id", &st);
    int same = 0;
    if (rc == 0) {
        const char *old = (const char *)sqlite3_column_text(st, 0);
        same = old && strcmp(old, fid) == 0;
        sqlite3_reset(st);
    } else if (rc != KNIT_ENOTFOUND) {
        return rc;
    }
    if (!same || site_idx <= 0) {
        if ((rc = new_site(k)) != 0)
            return rc;
        if ((rc = knit__meta_set_blob(k, "file_id", fid, strlen(fid), 1)) != 0)
            return rc;
    }
    if (ver < 2 && (rc = knit__exec(k, ASIDE_SQL)) != 0)
        return rc;
    /* Not a metadata version of its own: older knits open the file and
    ** ignore the table (reject.c). */
    if ((rc = knit__rejected_create(k)) != 0)
        return rc;
    if (ver < KNIT_SCHEMA_VERSION)
        rc = knit__meta_set_int(k, "schema", KNIT_SCHEMA_VERSION);
    return rc;
}

int knit_open(const char *path, const knit_options_t *opt, knit_t **out) /* see knit.h */
{
    knit_options_t o = {0};
    knit_t *k;
    int rc, flags, meta = 0;

    *out = NULL;
    if (opt)
        o = *opt;
    if (!path || !path[0] || strcmp(path, ":memory:") == 0 || strncmp(path, "file:", 5) == 0)
        return KNIT_EINVAL; /* a replica is a file: WAL, other connections, knit_db */
    /* The file is never opened outside SQLite: on POSIX, closing any
    ** descriptor of a file drops every lock this process holds on it,
    ** including those of other SQLite connections.  A file that is not a
    ** database fails the first read below (SQLITE_NOTADB), before anything
    ** is written. */
    if (!(k = knit__calloc(1, sizeof *k)))
        return KNIT_ENOMEM;
    k->readonly = o.readonly;
    k->clock = o.clock ? o.clock : knit__system_clock;
    k->clock_data = o.clock_data;
    k->max_drift_ms = o.max_drift_ms ? o.max_drift_ms : 5 * 60 * 1000;
    k->schema_cookie = -1;
    if (!(k->path = knit__strdup(path))) {
        knit__free(k);
        return KNIT_ENOMEM;
    }

    flags = o.readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
    rc = sqlite3_open_v2(path, &k->db, flags | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        rc = rc == SQLITE_CANTOPEN ? KNIT_EIO : knit__dberr(k, rc, "open");
        goto fail;
    }
    sqlite3_extended_result_codes(k->db, 0);
    k->busy_ms = o.busy_timeout_ms > 0 ? o.busy_timeout_ms : 5000;
    sqlite3_busy_handler(k->db, busy_wait, k);
    if ((rc = has_metadata(k, &meta)) != 0)
        goto fail;
    if (o.readonly) {
        if (!meta) {
            rc = knit__err(k, KNIT_ENOTREPLICA, "%s has no knit metadata", path);
            goto fail;
        }
    } else {
        /* WAL lets readers (other tabs, sync-inspect) run beside a writer;
        ** synchronous=NORMAL keeps commits atomic and crash-safe, and a
        ** power loss can only drop the newest commits, which were not yet
        ** pushed or, if pushed, are pulled back from the relay. */
        if ((rc = knit__exec(k, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL")) != 0)
            goto fail;
    }
    {
        /* Stamping and apply walk knit's metadata in bulk; a larger cache
        ** than SQLite's 2 MiB default keeps those walks out of the OS. */
        char sql[64];
        snprintf(sql, sizeof sql, "PRAGMA cache_size=-%d", o.cache_kib > 0 ? o.cache_kib : 32768);
        if ((rc = knit__exec(k, sql)) != 0)
            goto fail;
    }
    if ((rc = knit__register_functions(k)) != 0 || (rc = knit__nscol_register(k)) != 0)
        goto fail;
    if (!o.readonly) {
        if ((rc = knit__begin(k)) != 0)
            goto fail;
        if (!meta)
            rc = knit__exec(k, SCHEMA_SQL);
        if (!rc)
            rc = load_identity(k, path);
        if (!rc)
            rc = knit__commit(k);
        if (rc) {
            knit__rollback(k);
            goto fail;
        }
    } else if ((rc = load_identity(k, path)) != 0) {
        goto fail;
    }
    if ((rc = knit__load_tables(k)) != 0)
        goto fail;
    knit_version(k, &k->seen_version);
    knit__rejected_seen(k);
    {
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(k->db, "PRAGMA data_version", -1, &st, NULL) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW)
            k->data_version = sqlite3_column_int(st, 0);
        sqlite3_finalize(st);
    }
    *out = k;
    return 0;

fail:
    knit_close(k);
    return rc;
}

void knit_close(knit_t *k) /* see knit.h */
{
    if (!k)
        return;
    knit__free_tables(k);
    knit__nscol_free(k);
    sqlite3_finalize(k->meta_get);
    sqlite3_finalize(k->meta_put);
    for (int i = 0; i < KS_N; i++)
        sqlite3_finalize(k->fixed[i]);
    sqlite3_close_v2(k->db);
    sqlite3_close_v2(k->app_db);
    knit__free(k->path);
    knit__free(k->sites);
    knit__free(k);
}
