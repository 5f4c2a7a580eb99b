/*
** replica.c: opening and closing replicas, knit's metadata tables, the site
** id and its copy detection, namespaces, and the small helpers every other
** runtime file uses (errors, transactions, the _knit_meta key/value store).
**
** Copy detection.  A replica remembers the identity of the file it lives in
** (device, inode and machine id) in _knit_meta.file_id.  A copy, a restore
** from backup or the same file on another machine has a different identity;
** on the first writable open there knit takes a fresh site id before
** anything else is written, so two files never issue the same (site, counter)
** dots or stamps.  A rename keeps the inode and so keeps the site id.
**
** Inherited sites.  A copy is often the only survivor of the original's
** work (a new machine, a restored backup), so the copy pushes everything
** the original had not had acknowledged.  When it takes its new site it
** records the old one as inherited: _knit_meta key "inherit:<idx>" (idx the
** old site's _knit_sites index) = the local version at the takeover.
** Inherited keys travel with the file, so a copy of a copy inherits the
** sites its source inherited too.  knit_changes_since(local_only) takes a
** cell as this replica's own when its site is this replica's, or an
** inherited site and its version is at or below that site's takeover
** version; cells of an inherited site that arrive later (the original,
** still running, syncing through the relay) get newer versions and are
** remote.  If the original keeps running, both push the same changes,
** which merge idempotently.
**
** Accounts.  A replica file serves one account: once it has used an
** account namespace "user:<sub>" (kept in _knit_meta "account"), naming
** another "user:*" namespace fails with KNIT_EACCOUNT.  Rows with the same
** key would otherwise collide, and the second user's edits of the first
** one's rows would reach the first one's account.  "anon:*" to "user:*"
** (signing in) is allowed.
*/
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

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

/* ---------------------------------------------------------------------- */
/* Errors                                                                  */

int knit__err(knit_t *k, int code, const char *fmt, ...)
{
    if (k) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(k->errmsg, sizeof k->errmsg, fmt, ap);
        va_end(ap);
    }
    return code;
}

int knit__dberr(knit_t *k, int rc, const char *what)
{
    int code = KNIT_EDB;
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        code = KNIT_EBUSY;
        break;
    case SQLITE_NOMEM:
        code = KNIT_ENOMEM;
        break;
    case SQLITE_CONSTRAINT:
        code = KNIT_ECONSTRAINT;
        break;
    case SQLITE_NOTADB:
        code = KNIT_ENOTREPLICA;
        break;
    case SQLITE_CORRUPT:
        code = KNIT_ECORRUPT;
        break;
    case SQLITE_FULL:
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
        code = KNIT_EIO;
        break;
    case SQLITE_READONLY:
        code = KNIT_EREADONLY;
        break;
    }
    return knit__err(k, code, "%s: %s", what,
                     k && k->db ? sqlite3_errmsg(k->db) : sqlite3_errstr(rc));
}

const char *knit_errmsg(knit_t *k) /* see knit.h */
{
    return k ? k->errmsg : "";
}

int knit__exec(knit_t *k, const char *sql)
{
    char *msg = NULL;
    int rc = sqlite3_exec(k->db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        int code = knit__dberr(k, rc, "sql");
        if (msg)
            knit__err(k, code, "%s", msg);
        sqlite3_free(msg);
        return code;
    }
    return 0;
}

int knit__begin(knit_t *k)
{
    if (k->readonly)
        return knit__err(k, KNIT_EREADONLY, "replica was opened read-only");
    int rc = knit__exec(k, "BEGIN IMMEDIATE");
    /* After a rollback the site cache is empty (knit__rollback): reload it
    ** inside the transaction, where it cannot change under us. */
    if (!rc && k->sites_stale) {
        if ((rc = knit__load_sites(k)) != 0)
            sqlite3_exec(k->db, "ROLLBACK", NULL, NULL, NULL);
        else
            k->sites_stale = 0;
    }
    return rc;
}

int knit__commit(knit_t *k)
{
    return knit__exec(k, "COMMIT");
}

void knit__rollback(knit_t *k)
{
    if (!sqlite3_get_autocommit(k->db))
        sqlite3_exec(k->db, "ROLLBACK", NULL, NULL, NULL);
    /* Every in-memory mirror of the file may now describe rows the
    ** rollback removed (a site interned by a failed apply, a table tracked
    ** by a failed knit_track): forget them all; they reload from the file
    ** when next needed. */
    k->nsites = 0;
    k->sites_stale = 1;
    k->schema_cookie = -1;
    for (size_t i = 0; i < k->ntables; i++)
        k->tables[i].ev_rows = 0;
    k->ev_local = k->ev_remote = 0;
}

int knit__prepare(knit_t *k, sqlite3_stmt **st, const char *sql)
{
    if (*st) {
        sqlite3_reset(*st);
        return 0;
    }
    int rc = sqlite3_prepare_v3(k->db, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL);
    return rc == SQLITE_OK ? 0 : knit__dberr(k, rc, "prepare");
}

/* ---------------------------------------------------------------------- */
/* _knit_meta                                                              */

static int meta_get(knit_t *k, const char *key, sqlite3_stmt **out)
{
    int rc = knit__prepare(k, &k->meta_get, "SELECT value FROM _knit_meta WHERE key = ?");
    if (rc)
        return rc;
    sqlite3_bind_text(k->meta_get, 1, key, -1, SQLITE_STATIC);
    rc = sqlite3_step(k->meta_get);
    if (rc == SQLITE_ROW) {
        *out = k->meta_get;
        return 0;
    }
    sqlite3_reset(k->meta_get);
    if (rc == SQLITE_DONE)
        return KNIT_ENOTFOUND;
    return knit__dberr(k, rc, "reading _knit_meta");
}

int knit__meta_get_int(knit_t *k, const char *key, int64_t *out)
{
    sqlite3_stmt *st;
    int rc = meta_get(k, key, &st);
    if (rc == KNIT_ENOTFOUND) {
        *out = 0;
        return 0;
    }
    if (rc)
        return rc;
    *out = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    return 0;
}

static int meta_put(knit_t *k, const char *key, const knit_value_t *v)
{
    int rc = knit__prepare(k, &k->meta_put,
                           "INSERT OR REPLACE INTO _knit_meta(key, value) VALUES (?, ?)");
    if (rc)
        return rc;
    sqlite3_bind_text(k->meta_put, 1, key, -1, SQLITE_STATIC);
    knit__bind_value(k->meta_put, 2, v);
    rc = sqlite3_step(k->meta_put);
    sqlite3_reset(k->meta_put);
    sqlite3_clear_bindings(k->meta_put);
    return rc == SQLITE_DONE ? 0 : knit__dberr(k, rc, "writing _knit_meta");
}

int knit__meta_set_int(knit_t *k, const char *key, int64_t v)
{
    knit_value_t x = {.type = KNIT_INTEGER, .u.i = v};
    return meta_put(k, key, &x);
}

static int meta_set_blob(knit_t *k, const char *key, const void *p, size_t n, int text)
{
    knit_value_t x = {.type = text ? KNIT_TEXT : KNIT_BLOB};
    x.u.b.p = p;
    x.u.b.n = n;
    return meta_put(k, key, &x);
}

/* ---------------------------------------------------------------------- */
/* Clock                                                                   */

static uint64_t system_clock(void *data)
{
    struct timespec ts;
    (void)data;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t knit__now(knit_t *k)
{
    return k->clock(k->clock_data);
}

/* ---------------------------------------------------------------------- */
/* Sites                                                                   */

int knit__load_sites(knit_t *k)
{
    sqlite3_stmt *st = NULL;
    int rc =
        sqlite3_prepare_v2(k->db, "SELECT idx, site FROM _knit_sites ORDER BY idx", -1, &st, NULL);
    if (rc != SQLITE_OK)
        return knit__dberr(k, rc, "reading _knit_sites");
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t idx = sqlite3_column_int64(st, 0);
        const void *p = sqlite3_column_blob(st, 1);
        if (idx <= 0 || idx > (int64_t)UINT32_MAX - 1 || sqlite3_column_bytes(st, 1) != 16) {
            sqlite3_finalize(st);
            return knit__err(k, KNIT_ECORRUPT, "_knit_sites holds a malformed entry (idx %lld)",
                             (long long)idx);
        }
        if ((uint32_t)idx >= k->nsites) {
            knit_site_t *n = knit__realloc(k->sites, ((size_t)idx + 1) * sizeof *n);
            if (!n) {
                sqlite3_finalize(st);
                return KNIT_ENOMEM;
            }
            memset(n + k->nsites, 0, ((size_t)idx + 1 - k->nsites) * sizeof *n);
            k->sites = n;
            k->nsites = (uint32_t)idx + 1;
        }
        memcpy(k->sites[idx].b, p, 16);
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : knit__dberr(k, rc, "reading _knit_sites");
}

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

static int random_site(knit_site_t *s)
{
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    size_t got = 0;
    if (fd < 0)
        return KNIT_EIO;
    while (got < sizeof s->b) {
        ssize_t r = read(fd, s->b + got, sizeof s->b - got);
        if (r <= 0) {
            if (r < 0 && errno == EINTR)
                continue;
            close(fd);
            return KNIT_EIO;
        }
        got += (size_t)r;
    }
    close(fd);
    return 0;
}

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
    if ((rc = random_site(&s)) != 0)
        return knit__err(k, rc, "cannot read /dev/urandom for a site id");
    if ((rc = knit__site_intern(k, &s, &idx)) != 0)
        return rc;
    if ((rc = meta_set_blob(k, "site", s.b, 16, 0)) != 0 ||
        (rc = knit__meta_set_int(k, "site_idx", idx)) != 0)
        return rc;
    k->site = s;
    k->site_idx = idx;
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Namespaces                                                              */

int knit__ns_intern(knit_t *k, const char *name, uint32_t *idx)
{
    sqlite3_stmt *st = NULL;
    int rc;
    if (!name[0]) {
        *idx = KNIT_HOME_NS;
        return 0;
    }
    rc = sqlite3_prepare_v2(k->db, "SELECT idx FROM _knit_ns WHERE name = ?", -1, &st, NULL);
    if (rc != SQLITE_OK)
        return knit__dberr(k, rc, "reading _knit_ns");
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *idx = (uint32_t)sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        return 0;
    }
    sqlite3_finalize(st);
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
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(k->db, "SELECT name FROM _knit_ns WHERE idx = ?", -1, &st, NULL);
    if (rc != SQLITE_OK)
        return knit__dberr(k, rc, "reading _knit_ns");
    sqlite3_bind_int64(st, 1, idx);
    rc = sqlite3_step(st);
    const char *name = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(st, 0) : NULL;
    *out = knit__strdup(name ? name : "");
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return knit__dberr(k, rc, "reading _knit_ns");
    return *out ? 0 : KNIT_ENOMEM;
}

static int is_account_ns(const char *ns)
{
    return strncmp(ns, "user:", 5) == 0;
}

/* The account this replica file belongs to into *out (knit__free), or NULL
** when it has none yet: _knit_meta "account", or for replicas from before
** it was kept, an account write or home namespace. */
static int replica_account(knit_t *k, char **out)
{
    sqlite3_stmt *st;
    int64_t write_ns;
    int rc = meta_get(k, "account", &st);
    *out = NULL;
    if (rc == 0) {
        const char *v = (const char *)sqlite3_column_text(st, 0);
        if (v && is_account_ns(v) && !(*out = knit__strdup(v)))
            rc = KNIT_ENOMEM;
        sqlite3_reset(st);
        if (rc || *out)
            return rc;
    } else if (rc != KNIT_ENOTFOUND) {
        return rc;
    }
    if ((rc = knit__meta_get_int(k, "write_ns", &write_ns)) != 0)
        return rc;
    uint32_t cand[2] = {write_ns > 0 ? (uint32_t)write_ns : KNIT_HOME_NS, KNIT_HOME_NS};
    for (int i = 0; i < 2; i++) {
        char *name = NULL;
        if ((rc = knit__ns_name(k, cand[i], &name)) != 0)
            return rc;
        if (is_account_ns(name)) {
            *out = name;
            return 0;
        }
        knit__free(name);
    }
    return 0;
}

/* Refuses to make ns, an account namespace, the write namespace of a
** replica that belongs to another account; records the account the first
** time.  Inside a write transaction. */
static int claim_account(knit_t *k, const char *ns)
{
    char *acct = NULL;
    int rc;
    if (!is_account_ns(ns))
        return 0;
    if ((rc = replica_account(k, &acct)) != 0)
        return rc;
    if (acct && strcmp(acct, ns) != 0)
        rc = knit__err(k, KNIT_EACCOUNT,
                       "this replica file belongs to account %s, so %s cannot use it: use one "
                       "replica file per account (open or create another file for %s)",
                       acct, ns, ns);
    else
        rc = meta_set_blob(k, "account", ns, strlen(ns), 1);
    knit__free(acct);
    return rc;
}

int knit_set_namespace(knit_t *k, const char *ns) /* see knit.h */
{
    int rc;
    uint32_t idx;
    sqlite3_stmt *st = NULL;
    if (!ns || !ns[0])
        return knit__err(k, KNIT_EINVAL, "namespace name must not be empty");
    if ((rc = knit__begin(k)) != 0)
        return rc;
    if ((rc = claim_account(k, ns)) != 0) {
        knit__rollback(k);
        return rc;
    }
    /* The first namespace ever set names home, unless it already exists. */
    rc = sqlite3_prepare_v2(k->db,
                            "UPDATE _knit_ns SET name = ?1 WHERE idx = 1 AND name IS NULL"
                            " AND NOT EXISTS (SELECT 1 FROM _knit_ns WHERE name = ?1)",
                            -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, ns, -1, SQLITE_STATIC);
        rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(k->db);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_OK)
        rc = knit__dberr(k, rc, "naming the home namespace");
    if (!rc)
        rc = knit__ns_intern(k, ns, &idx);
    if (!rc)
        rc = knit__meta_set_int(k, "write_ns", idx);
    if (!rc)
        rc = knit__commit(k);
    if (rc)
        knit__rollback(k);
    return rc;
}

int knit_move_namespace(knit_t *k, const char *from, const char *to) /* see knit.h */
{
    uint32_t fidx = 0, tidx;
    int64_t write_ns;
    int moved = 0, rc;
    sqlite3_stmt *st = NULL;
    if (!from || !from[0] || !to || !to[0])
        return knit__err(k, KNIT_EINVAL, "namespace names must not be empty");
    if (strcmp(from, to) == 0)
        return 0;
    if ((rc = knit__begin(k)) != 0)
        return rc;
    /* Never into another account's namespace; then stamp first, so
    ** captured writes of `from` move with their rows. */
    rc = claim_account(k, to);
    if (!rc)
        rc = knit__stamp_locked(k, NULL);
    if (!rc && sqlite3_prepare_v2(k->db, "SELECT idx FROM _knit_ns WHERE name = ?", -1, &st,
                                  NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, from, -1, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_ROW)
            fidx = (uint32_t)sqlite3_column_int64(st, 0);
    } else if (!rc) {
        rc = knit__dberr(k, sqlite3_errcode(k->db), "reading _knit_ns");
    }
    sqlite3_finalize(st);
    if (!rc)
        rc = knit__ns_intern(k, to, &tidx);
    for (size_t i = 0; !rc && fidx && i < k->ntables; i++) {
        char *sql =
            sqlite3_mprintf("UPDATE _knit_rows_%d SET ns = ?1 WHERE ns = ?2", k->tables[i].id);
        st = NULL;
        if (!sql) {
            rc = KNIT_ENOMEM;
            break;
        }
        int prc = sqlite3_prepare_v2(k->db, sql, -1, &st, NULL);
        sqlite3_free(sql);
        if (prc != SQLITE_OK) {
            rc = knit__dberr(k, prc, "moving rows");
            break;
        }
        sqlite3_bind_int64(st, 1, tidx);
        sqlite3_bind_int64(st, 2, fidx);
        if (sqlite3_step(st) != SQLITE_DONE)
            rc = knit__dberr(k, sqlite3_errcode(k->db), "moving rows");
        else
            moved += sqlite3_changes(k->db);
        sqlite3_finalize(st);
    }
    if (!rc)
        rc = knit__meta_get_int(k, "write_ns", &write_ns);
    if (!rc && fidx && (write_ns == (int64_t)fidx || (write_ns <= 0 && fidx == KNIT_HOME_NS)))
        rc = knit__meta_set_int(k, "write_ns", tidx);
    if (!rc)
        rc = knit__commit(k);
    if (rc) {
        knit__rollback(k);
        return rc;
    }
    knit__notify(k);
    return moved;
}

int knit_namespace(knit_t *k, char *buf, size_t n) /* see knit.h */
{
    int64_t idx;
    char *name = NULL;
    int rc = knit__meta_get_int(k, "write_ns", &idx);
    if (!rc)
        rc = knit__ns_name(k, idx ? (uint32_t)idx : KNIT_HOME_NS, &name);
    if (!rc && n)
        snprintf(buf, n, "%s", name);
    knit__free(name);
    return rc;
}

int knit_cursor(knit_t *k, const char *ns, uint64_t *seq) /* see knit.h */
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(k->db, "SELECT cursor FROM _knit_ns WHERE name = ?", -1, &st, NULL);
    if (rc != SQLITE_OK)
        return knit__dberr(k, rc, "reading a cursor");
    sqlite3_bind_text(st, 1, ns, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    *seq = rc == SQLITE_ROW ? (uint64_t)sqlite3_column_int64(st, 0) : 0;
    sqlite3_finalize(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : knit__dberr(k, rc, "reading a cursor");
}

int knit_ack(knit_t *k, uint64_t version) /* see knit.h */
{
    int64_t cur;
    int rc = knit__begin(k);
    if (!rc)
        rc = knit__meta_get_int(k, "acked", &cur);
    if (!rc && (uint64_t)cur < version)
        rc = knit__meta_set_int(k, "acked", (int64_t)version);
    if (!rc)
        rc = knit__commit(k);
    if (rc)
        knit__rollback(k);
    return rc;
}

int knit_acked(knit_t *k, uint64_t *out) /* see knit.h */
{
    int64_t v = 0;
    int rc = knit__meta_get_int(k, "acked", &v);
    *out = (uint64_t)v;
    return rc;
}

int knit_version(knit_t *k, uint64_t *out) /* see knit.h */
{
    int64_t v = 0;
    int rc = knit__meta_get_int(k, "version", &v);
    *out = (uint64_t)v;
    return rc;
}

int knit_setting_get(knit_t *k, const char *key, char **value) /* see knit.h */
{
    sqlite3_stmt *st = NULL;
    *value = NULL;
    int rc = sqlite3_prepare_v2(k->db, "SELECT value FROM _knit_meta WHERE key = 'setting:' || ?",
                                -1, &st, NULL);
    if (rc != SQLITE_OK)
        return knit__dberr(k, rc, "reading a setting");
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL) {
        const char *v = (const char *)sqlite3_column_text(st, 0);
        *value = knit__strdup(v ? v : "");
        rc = *value ? 0 : KNIT_ENOMEM;
    } else {
        rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : knit__dberr(k, rc, "reading a setting");
    }
    sqlite3_finalize(st);
    return rc;
}

int knit_setting_set(knit_t *k, const char *key, const char *value) /* see knit.h */
{
    sqlite3_stmt *st = NULL;
    if (k->readonly)
        return knit__err(k, KNIT_EREADONLY, "replica was opened read-only");
    int rc = sqlite3_prepare_v2(k->db,
                                value ? "INSERT OR REPLACE INTO _knit_meta(key, value) "
                                        "VALUES ('setting:' || ?1, ?2)"
                                      : "DELETE FROM _knit_meta WHERE key = 'setting:' || ?1",
                                -1, &st, NULL);
    if (rc != SQLITE_OK)
        return knit__dberr(k, rc, "writing a setting");
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    if (value)
        sqlite3_bind_text(st, 2, value, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : knit__dberr(k, rc, "writing a setting");
}

int knit_setting_init(knit_t *k, const char *key, const char *value, char **actual) /* see knit.h */
{
    int rc = knit__begin(k);
    *actual = NULL;
    if (rc)
        return rc;
    rc = knit_setting_get(k, key, actual);
    if (!rc && !*actual) {
        rc = knit_setting_set(k, key, value);
        if (!rc && !(*actual = knit__strdup(value)))
            rc = KNIT_ENOMEM;
    }
    if (!rc)
        rc = knit__commit(k);
    if (rc) {
        knit__rollback(k);
        knit__free(*actual);
        *actual = NULL;
    }
    return rc;
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
/* Open and close                                                          */

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
    rc = meta_get(k, "file_id", &st);
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
        if ((rc = meta_set_blob(k, "file_id", fid, strlen(fid), 1)) != 0)
            return rc;
    }
    if (ver < 2 && (rc = knit__exec(k, ASIDE_SQL)) != 0)
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
    k->clock = o.clock ? o.clock : system_clock;
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
    sqlite3_busy_timeout(k->db, o.busy_timeout_ms > 0 ? o.busy_timeout_ms : 5000);
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
    if ((rc = knit__register_functions(k)) != 0)
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
    sqlite3_finalize(k->meta_get);
    sqlite3_finalize(k->meta_put);
    sqlite3_close_v2(k->db);
    sqlite3_close_v2(k->app_db);
    knit__free(k->path);
    knit__free(k->sites);
    knit__free(k);
}
