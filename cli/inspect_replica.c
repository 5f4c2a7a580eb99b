/*
** inspect_replica.c: opening replicas and relay stores read-only, walking
** row metadata, parsing keys, and showing sites, clocks and namespaces for
** sync-inspect's commands (see inspect_replica.h).
*/
#include "inspect_replica.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "inspect_store.h"

/* ---------------------------------------------------------------------- */
/* Opening                                                                 */

/* Checks that path names a readable, non-empty SQLite file; reports why
** not.  Done before SQLite sees the file so that the messages say what is
** wrong in the user's terms rather than SQLite's. */
static int check_file(const char *cmd, const char *path)
{
    static const char magic[16] = "SQLite format 3";
    char head[16];
    struct stat sb;
    ssize_t n;
    int fd;
    if (stat(path, &sb) != 0) {
        inspect_err(cmd, "cannot open '%s': %s", path, strerror(errno));
        return INSPECT_EXIT_ERROR;
    }
    if (S_ISDIR(sb.st_mode)) {
        inspect_err(cmd, "'%s' is a directory, not a replica or relay store", path);
        return INSPECT_EXIT_ERROR;
    }
    if (!S_ISREG(sb.st_mode)) {
        inspect_err(cmd, "'%s' is not a regular file", path);
        return INSPECT_EXIT_ERROR;
    }
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
        inspect_err(cmd, "cannot open '%s': %s", path, strerror(errno));
        return INSPECT_EXIT_ERROR;
    }
    n = read(fd, head, sizeof head);
    close(fd);
    if (n < 0) {
        inspect_err(cmd, "cannot read '%s': %s", path, strerror(errno));
        return INSPECT_EXIT_ERROR;
    }
    if (n == 0) {
        inspect_err(cmd, "'%s' is empty, not a knit replica or relay store", path);
        return INSPECT_EXIT_ERROR;
    }
    if (n != (ssize_t)sizeof head || memcmp(head, magic, sizeof head) != 0) {
        inspect_err(cmd, "'%s' is not an SQLite database, so not a knit replica or relay store",
                    path);
        return INSPECT_EXIT_ERROR;
    }
    return 0;
}

static void report_locked(const char *cmd, const char *path)
{
    inspect_err(cmd, "'%s' is locked by another connection; gave up after %d s", path,
                INSPECT_BUSY_MS / 1000);
}

int inspect_probe(const char *cmd, const char *path, int *kind) /* see inspect_replica.h */
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    knit_relay_store_t *rs = NULL;
    int rc, meta = 0;

    if (inspect_store_is_uri(path)) {
        *kind = INSPECT_KIND_RELAY; /* PostgreSQL: opened by inspect_store_open */
        return 0;
    }
    if (check_file(cmd, path) != 0)
        return INSPECT_EXIT_ERROR;
    rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_busy_timeout(db, INSPECT_BUSY_MS);
        rc = sqlite3_prepare_v2(db,
                                "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = "
                                "'_knit_meta'",
                                -1, &st, NULL);
    }
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(st);
        meta = rc == SQLITE_ROW;
        if (rc == SQLITE_ROW || rc == SQLITE_DONE)
            rc = SQLITE_OK;
    }
    if (rc != SQLITE_OK) {
        if ((rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED)
            report_locked(cmd, path);
        else
            inspect_err(cmd, "cannot read '%s': %s", path,
                        db ? sqlite3_errmsg(db) : "out of memory");
        sqlite3_finalize(st);
        sqlite3_close(db);
        return INSPECT_EXIT_ERROR;
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    if (meta) {
        *kind = INSPECT_KIND_REPLICA;
        return 0;
    }
    /* The relay store checks its own marks (application id and version). */
    rc = knit_relay_store_open(path, KNIT_RELAY_STORE_READONLY, &rs);
    knit_relay_store_close(rs);
    if (rc == 0) {
        *kind = INSPECT_KIND_RELAY;
        return 0;
    }
    if (rc == KNIT_EBUSY)
        report_locked(cmd, path);
    else if (rc == KNIT_EVERSION)
        inspect_err(cmd,
                    "'%s' is a relay store of a schema version this sync-inspect does not "
                    "read (older or newer)",
                    path);
    else
        inspect_err(cmd,
                    "'%s' is an SQLite database but not a knit replica or relay store "
                    "(it has no knit metadata)",
                    path);
    return INSPECT_EXIT_ERROR;
}

int inspect_open_replica(const char *cmd, const char *path,
                         knit_t **out) /* see inspect_replica.h */
{
    knit_options_t o;
    int kind, rc;
    *out = NULL;
    if (inspect_probe(cmd, path, &kind) != 0)
        return INSPECT_EXIT_ERROR;
    if (kind == INSPECT_KIND_RELAY) {
        char shown[1024];
        inspect_store_redact(path, shown, sizeof shown);
        inspect_err(cmd,
                    "'%s' is a relay store, not a replica (see 'sync-inspect relay' and "
                    "'sync-inspect digest --ns')",
                    shown);
        return INSPECT_EXIT_ERROR;
    }
    memset(&o, 0, sizeof o);
    o.readonly = 1;
    o.busy_timeout_ms = INSPECT_BUSY_MS;
    rc = knit_open(path, &o, out);
    switch (rc) {
    case 0:
        return 0;
    case KNIT_EBUSY:
        report_locked(cmd, path);
        break;
    case KNIT_EVERSION:
        inspect_err(cmd, "'%s' has replica metadata newer than this sync-inspect; upgrade knit",
                    path);
        break;
    case KNIT_ENOTREPLICA:
        inspect_err(cmd, "'%s' is not a knit replica (its metadata is incomplete)", path);
        break;
    default:
        inspect_err(cmd, "cannot open '%s': %s", path, knit_strerror(rc));
    }
    return INSPECT_EXIT_ERROR;
}

int inspect_open_relay(const char *cmd, const char *path,
                       knit_relay_store_t **out) /* see inspect_replica.h */
{
    int kind, rc;
    *out = NULL;
    if (inspect_probe(cmd, path, &kind) != 0)
        return INSPECT_EXIT_ERROR;
    if (kind != INSPECT_KIND_RELAY) {
        inspect_err(cmd, "'%s' is a replica, not a relay store", path);
        return INSPECT_EXIT_ERROR;
    }
    rc = knit_relay_store_open(path, KNIT_RELAY_STORE_READONLY, out);
    if (rc == 0)
        return 0;
    if (rc == KNIT_EBUSY)
        report_locked(cmd, path);
    else
        inspect_err(cmd, "cannot open relay store '%s': %s", path, knit_strerror(rc));
    return INSPECT_EXIT_ERROR;
}

int inspect_knit_fail(const char *cmd, knit_t *k, int rc) /* see inspect_replica.h */
{
    const char *msg = k ? knit_errmsg(k) : "";
    if (rc == KNIT_EBUSY)
        inspect_err(cmd, "the replica is locked by another connection; gave up after %d s",
                    INSPECT_BUSY_MS / 1000);
    else if (msg[0])
        inspect_err(cmd, "%s (%s)", msg, knit_err_name(rc));
    else
        inspect_err(cmd, "%s (%s)", knit_strerror(rc), knit_err_name(rc));
    return INSPECT_EXIT_ERROR;
}

int inspect_read_begin(const char *cmd, knit_t *k) /* see inspect_replica.h */
{
    /* BEGIN is deferred: the snapshot starts at the first read below, and a
    ** read-only connection never asks for a write lock. */
    int rc = knit__exec(k, "BEGIN");
    if (!rc)
        rc = knit__load_tables(k); /* the table list of this snapshot */
    if (!rc)
        rc = knit__load_sites(k);
    if (rc) {
        knit__rollback(k);
        return inspect_knit_fail(cmd, k, rc);
    }
    return 0;
}

void inspect_read_end(knit_t *k) /* see inspect_replica.h */
{
    knit__rollback(k); /* nothing was written; ending the read is all */
}

/* ---------------------------------------------------------------------- */
/* Sites, clocks, namespaces                                               */

int inspect_site_known(knit_t *k, uint32_t idx) /* see inspect_replica.h */
{
    if (idx >= k->nsites)
        knit__load_sites(k); /* another process may have added it */
    return idx > 0 && idx < k->nsites;
}

void inspect_site_short(const knit_site_t *s, char out[9]) /* see inspect_replica.h */
{
    snprintf(out, 9, "%02x%02x%02x%02x", s->b[0], s->b[1], s->b[2], s->b[3]);
}

void inspect_site_text(FILE *f, knit_t *k, uint32_t idx) /* see inspect_replica.h */
{
    char s[9];
    if (!inspect_site_known(k, idx)) {
        fprintf(f, "#%u (unknown site)", idx);
        return;
    }
    inspect_site_short(knit__site_get(k, idx), s);
    fprintf(f, "%s%s", s, idx == k->site_idx ? " (local)" : "");
}

void inspect_site_json(FILE *f, knit_t *k, uint32_t idx) /* see inspect_replica.h */
{
    if (!inspect_site_known(k, idx)) {
        fputs("null", f);
        return;
    }
    fputc('"', f);
    inspect_hex(f, knit__site_get(k, idx)->b, 16);
    fputc('"', f);
}

void inspect_hlc_text(FILE *f, uint64_t hlc) /* see inspect_replica.h */
{
    char buf[KNIT_HLC_FMT_LEN];
    knit_hlc_format(hlc, buf, sizeof buf);
    fputs(buf, f);
}

void inspect_hlc_json(FILE *f, uint64_t hlc) /* see inspect_replica.h */
{
    char buf[KNIT_HLC_FMT_LEN];
    knit_hlc_format(hlc, buf, sizeof buf);
    fprintf(f, "\"hlc\": %llu, \"time\": \"%s\"", (unsigned long long)hlc, buf);
}

void inspect_ms_text(FILE *f, uint64_t ms) /* see inspect_replica.h */
{
    char buf[KNIT_HLC_FMT_LEN], *hash;
    knit_hlc_format(knit_hlc_make(ms > KNIT_HLC_MAX_MS ? KNIT_HLC_MAX_MS : ms, 0), buf, sizeof buf);
    if ((hash = strchr(buf, '#')) != NULL)
        *hash = '\0';
    fputs(buf, f);
}

int inspect_ns_load(knit_t *k, inspect_ns_t *ns) /* see inspect_replica.h */
{
    sqlite3_stmt *st = NULL;
    int rc;
    memset(ns, 0, sizeof *ns);
    rc = sqlite3_prepare_v2(k->db,
                            "SELECT idx, name, cursor FROM _knit_ns WHERE idx > 0 AND "
                            "idx < 1000000 ORDER BY idx",
                            -1, &st, NULL);
    if (rc != SQLITE_OK)
        return knit__dberr(k, rc, "reading _knit_ns");
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        uint32_t idx = (uint32_t)sqlite3_column_int64(st, 0);
        const char *name = (const char *)sqlite3_column_text(st, 1);
        if (idx >= ns->n) {
            char **nn = knit__realloc(ns->names, (idx + 1) * sizeof *nn);
            uint64_t *nc = nn ? knit__realloc(ns->cursor, (idx + 1) * sizeof *nc) : NULL;
            if (nn)
                ns->names = nn;
            if (!nc) {
                sqlite3_finalize(st);
                inspect_ns_free(ns);
                return KNIT_ENOMEM;
            }
            ns->cursor = nc;
            memset(ns->names + ns->n, 0, (idx + 1 - ns->n) * sizeof *nn);
            memset(ns->cursor + ns->n, 0, (idx + 1 - ns->n) * sizeof *nc);
            ns->n = idx + 1;
        }
        if (!(ns->names[idx] = knit__strdup(name ? name : ""))) {
            sqlite3_finalize(st);
            inspect_ns_free(ns);
            return KNIT_ENOMEM;
        }
        ns->cursor[idx] = (uint64_t)sqlite3_column_int64(st, 2);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        inspect_ns_free(ns);
        return knit__dberr(k, rc, "reading _knit_ns");
    }
    return 0;
}

void inspect_ns_free(inspect_ns_t *ns) /* see inspect_replica.h */
{
    for (uint32_t i = 0; i < ns->n; i++)
        knit__free(ns->names[i]);
    knit__free(ns->names);
    knit__free(ns->cursor);
    memset(ns, 0, sizeof *ns);
}

const char *inspect_ns_name(const inspect_ns_t *ns, uint32_t idx) /* see inspect_replica.h */
{
    return idx < ns->n ? ns->names[idx] : NULL;
}

void inspect_ns_text(FILE *f, const inspect_ns_t *ns, uint32_t idx) /* see inspect_replica.h */
{
    const char *name = inspect_ns_name(ns, idx);
    if (!name)
        fprintf(f, "#%u (unknown namespace)", idx);
    else if (!name[0])
        fputs("(unnamed home)", f);
    else
        inspect_text(f, name, strlen(name));
}

void inspect_ns_json(FILE *f, const inspect_ns_t *ns, uint32_t idx) /* see inspect_replica.h */
{
    const char *name = inspect_ns_name(ns, idx);
    if (name)
        inspect_json_string(f, name, strlen(name));
    else
        fputs("null", f);
}

/* ---------------------------------------------------------------------- */
/* Row metadata                                                            */

/* 1 if the user table has column `name` (columns may have been dropped
** since tracking; their values then read as NULL). */
static int user_has_column(sqlite3_stmt *info, const char *name)
{
    int found = 0;
    sqlite3_reset(info);
    while (!found && sqlite3_step(info) == SQLITE_ROW) {
        const char *c = (const char *)sqlite3_column_text(info, 0);
        found = c && strcmp(c, name) == 0;
    }
    sqlite3_reset(info);
    return found;
}

int inspect_rows_open(inspect_rows_t *r, knit_t *k, ktable_t *t,
                      const knit_value_t *key) /* see inspect_replica.h */
{
    sqlite3_str *s = sqlite3_str_new(k->db);
    sqlite3_stmt *info = NULL;
    char *sql, *qt = knit__quote(t->name);
    int rc;
    uint32_t i;

    memset(r, 0, sizeof *r);
    r->k = k;
    r->t = t;
    if (!qt) {
        sqlite3_free(sqlite3_str_finish(s));
        return KNIT_ENOMEM;
    }
    rc = sqlite3_prepare_v2(k->db, "SELECT name FROM pragma_table_info(?1)", -1, &info, NULL);
    if (rc != SQLITE_OK) {
        knit__free(qt);
        sqlite3_free(sqlite3_str_finish(s));
        return knit__dberr(k, rc, "reading the table's columns");
    }
    sqlite3_bind_text(info, 1, t->name, -1, SQLITE_STATIC);
    r->user_table = sqlite3_step(info) == SQLITE_ROW; /* a table has at least one column */
    /* The key columns must all exist to join; else read metadata alone. */
    for (i = 0; r->user_table && i < t->npk; i++)
        r->user_table = user_has_column(info, t->pk[i]);

    sqlite3_str_appendf(s, "SELECT ");
    for (i = 0; i < t->npk; i++)
        sqlite3_str_appendf(s, "r.k%u, ", i);
    sqlite3_str_appendf(s, "r.ns, r.cl, r.ver, r.cells");
    if (r->user_table) {
        char *q = knit__quote(t->pk[0]);
        sqlite3_str_appendf(s, ", u.%s IS NOT NULL", q ? q : "\"\"");
        knit__free(q);
    } else {
        sqlite3_str_appendf(s, ", 0");
    }
    for (i = 0; i < t->ncols; i++) {
        if (r->user_table && user_has_column(info, t->cols[i])) {
            char *q = knit__quote(t->cols[i]);
            sqlite3_str_appendf(s, ", u.%s", q ? q : "NULL");
            knit__free(q);
        } else {
            sqlite3_str_appendf(s, ", NULL");
        }
    }
    sqlite3_str_appendf(s, " FROM _knit_rows_%d AS r", t->id);
    if (r->user_table) {
        sqlite3_str_appendf(s, " LEFT JOIN %s AS u ON ", qt);
        for (i = 0; i < t->npk; i++) {
            char *q = knit__quote(t->pk[i]);
            sqlite3_str_appendf(s, "%su.%s = r.k%u", i ? " AND " : "", q ? q : "\"\"", i);
            knit__free(q);
        }
    }
    if (key) {
        sqlite3_str_appendf(s, " WHERE ");
        for (i = 0; i < t->npk; i++)
            sqlite3_str_appendf(s, "%sr.k%u = ?%u", i ? " AND " : "", i, i + 1);
    }
    /* Key order, the order of the metadata table's own index, so a walk is
    ** one pass and two replicas' walks can be merged (inspect diff). */
    sqlite3_str_appendf(s, " ORDER BY ");
    for (i = 0; i < t->npk; i++)
        sqlite3_str_appendf(s, "%sr.k%u", i ? ", " : "", i);
    sqlite3_finalize(info);
    knit__free(qt);
    if (!(sql = sqlite3_str_finish(s)))
        return KNIT_ENOMEM;
    rc = sqlite3_prepare_v2(k->db, sql, -1, &r->st, NULL);
    sqlite3_free(sql);
    if (rc != SQLITE_OK)
        return knit__dberr(k, rc, "reading row metadata");
    for (i = 0; key && i < t->npk; i++)
        knit__bind_value(r->st, (int)i + 1, &key[i]);
    return 0;
}

int inspect_rows_next(inspect_rows_t *r) /* see inspect_replica.h */
{
    int rc = sqlite3_step(r->st), base = (int)r->t->npk;
    if (rc == SQLITE_DONE)
        return 0;
    if (rc != SQLITE_ROW)
        return knit__dberr(r->k, rc, "reading row metadata");
    for (uint32_t i = 0; i < r->t->npk; i++)
        knit__column_value(r->st, (int)i, &r->pk[i]);
    r->ns = (uint32_t)sqlite3_column_int64(r->st, base);
    r->cl = (uint64_t)sqlite3_column_int64(r->st, base + 1);
    r->ver = (uint64_t)sqlite3_column_int64(r->st, base + 2);
    r->cells_ok = knit__cells_decode(sqlite3_column_blob(r->st, base + 3),
                                     (size_t)sqlite3_column_bytes(r->st, base + 3), r->t->ncols + 1,
                                     r->cells) == 0;
    if (!r->cells_ok)
        memset(r->cells, 0, sizeof r->cells);
    r->has_user = sqlite3_column_int(r->st, base + 4);
    for (uint32_t c = 0; c < r->t->ncols; c++)
        knit__column_value(r->st, base + 5 + (int)c, &r->vals[c]);
    return 1;
}

void inspect_rows_close(inspect_rows_t *r) /* see inspect_replica.h */
{
    sqlite3_finalize(r->st);
    r->st = NULL;
}

int inspect_unstamped(knit_t *k, ktable_t *t, const knit_value_t *key,
                      uint64_t *n) /* see inspect_replica.h */
{
    sqlite3_str *s = sqlite3_str_new(k->db);
    sqlite3_stmt *st = NULL;
    char *sql;
    int rc;
    *n = 0;
    sqlite3_str_appendf(s, "SELECT count(*) FROM _knit_log_%d", t->id);
    for (uint32_t i = 0; key && i < t->npk; i++)
        sqlite3_str_appendf(s, "%sk%u = ?%u", i ? " AND " : " WHERE ", i, i + 1);
    if (!(sql = sqlite3_str_finish(s)))
        return KNIT_ENOMEM;
    rc = sqlite3_prepare_v2(k->db, sql, -1, &st, NULL);
    sqlite3_free(sql);
    if (rc != SQLITE_OK) {
        /* A missing log is verify's finding; here it holds nothing. */
        sqlite3_finalize(st);
        return 0;
    }
    for (uint32_t i = 0; key && i < t->npk; i++)
        knit__bind_value(st, (int)i + 1, &key[i]);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *n = (uint64_t)sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? 0 : knit__dberr(k, rc, "reading the capture log");
}

/* ---------------------------------------------------------------------- */
/* Keys typed by people                                                    */

static int is_digit(int c)
{
    return c >= '0' && c <= '9';
}

static int is_hex(int c)
{
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static int is_ident(int c)
{
    return c == '_' || is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (unsigned char)c >= 0x80;
}

/* Checks that s is a comma-separated list of SQL literals and counts them;
** on failure *why says what is wrong and *at where.  Only these tokens are
** accepted, so handing s to SQLite afterwards evaluates literals and can do
** nothing else. */
static int literal_list(const char *s, uint32_t *count, const char **why, size_t *at)
{
    const char *p = s;
    uint32_t n = 0;
    for (;;) {
        while (*p == ' ' || *p == '\t')
            p++;
        *at = (size_t)(p - s);
        if (*p == '+' || *p == '-') {
            p++;
            while (*p == ' ' || *p == '\t')
                p++;
            if (!is_digit(*p) && !(*p == '.' && is_digit(p[1]))) {
                *why = "a sign must be followed by a number";
                return -1;
            }
        }
        if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X') && is_hex(p[2])) {
            for (p += 2; is_hex(*p); p++)
                ;
        } else if (is_digit(*p) || (*p == '.' && is_digit(p[1]))) {
            while (is_digit(*p))
                p++;
            if (*p == '.')
                for (p++; is_digit(*p); p++)
                    ;
            if (*p == 'e' || *p == 'E') {
                p++;
                if (*p == '+' || *p == '-')
                    p++;
                if (!is_digit(*p)) {
                    *why = "an exponent needs digits";
                    return -1;
                }
                while (is_digit(*p))
                    p++;
            }
        } else if (*p == '\'') {
            for (p++;; p++) {
                if (!*p) {
                    *why = "a string is not closed with '";
                    return -1;
                }
                if (*p == '\'' && p[1] == '\'')
                    p++;
                else if (*p == '\'')
                    break;
            }
            p++;
        } else if ((*p == 'x' || *p == 'X') && p[1] == '\'') {
            size_t digits = 0;
            for (p += 2; is_hex(*p); p++)
                digits++;
            if (*p != '\'' || digits % 2) {
                *why = "a BLOB literal is X' followed by an even number of hex digits and '";
                return -1;
            }
            p++;
        } else if (strncasecmp(p, "NULL", 4) == 0 && !is_ident(p[4])) {
            p += 4;
        } else if (strncasecmp(p, "TRUE", 4) == 0 && !is_ident(p[4])) {
            p += 4;
        } else if (strncasecmp(p, "FALSE", 5) == 0 && !is_ident(p[5])) {
            p += 5;
        } else {
            *why = *p  ? "expected a literal: a number, 'text', X'hex', NULL, TRUE or FALSE"
                   : n ? "expected a literal after ','"
                       : "it is empty";
            return -1;
        }
        if (is_ident(*p) || *p == '.' || *p == '\'') {
            *at = (size_t)(p - s);
            *why = "unexpected characters after a literal";
            return -1;
        }
        n++;
        while (*p == ' ' || *p == '\t')
            p++;
        if (!*p)
            break;
        if (*p != ',') {
            *at = (size_t)(p - s);
            *why = "expected ',' between key values";
            return -1;
        }
        p++;
    }
    *count = n;
    return 0;
}

/* SQLite's column affinity for a declared type (the rules of "Determination
** Of Column Affinity" in SQLite's datatype documentation), as a type name
** that has exactly that affinity. */
static const char *affinity(const char *decl)
{
    char up[128];
    size_t i;
    if (!decl || !decl[0])
        return "BLOB";
    for (i = 0; decl[i] && i + 1 < sizeof up; i++)
        up[i] = (char)(decl[i] >= 'a' && decl[i] <= 'z' ? decl[i] - 32 : decl[i]);
    up[i] = '\0';
    if (strstr(up, "INT"))
        return "INTEGER";
    if (strstr(up, "CHAR") || strstr(up, "CLOB") || strstr(up, "TEXT"))
        return "TEXT";
    if (strstr(up, "BLOB"))
        return "BLOB";
    if (strstr(up, "REAL") || strstr(up, "FLOA") || strstr(up, "DOUB"))
        return "REAL";
    return "NUMERIC";
}

/* Copies the values of st's columns into key, bytes owned. */
static int key_copy(sqlite3_stmt *st, inspect_key_t *key)
{
    for (uint32_t i = 0; i < key->n; i++) {
        knit_value_t v;
        knit__column_value(st, (int)i, &v);
        if ((v.type == KNIT_TEXT || v.type == KNIT_BLOB)) {
            void *copy = knit__memdup(v.u.b.n ? v.u.b.p : "", v.u.b.n ? v.u.b.n : 1);
            if (!copy)
                return KNIT_ENOMEM;
            v.u.b.p = copy;
        }
        key->v[i] = v;
    }
    return 0;
}

int inspect_parse_key(const char *cmd, knit_t *k, ktable_t *t, const char *arg,
                      inspect_key_t *key) /* see inspect_replica.h */
{
    sqlite3 *mem = NULL;
    sqlite3_stmt *sel = NULL, *info = NULL, *ins = NULL, *back = NULL;
    sqlite3_str *s;
    const char *why = NULL;
    char *sql = NULL;
    size_t at = 0;
    uint32_t n = 0, i;
    int rc = INSPECT_EXIT_ERROR;

    memset(key, 0, sizeof *key);
    if (literal_list(arg, &n, &why, &at) != 0) {
        inspect_err(cmd,
                    "key: %s (at character %zu); give it as SQL literals: 42, 'alice', or "
                    "'alice', 3 for a composite key",
                    why, at + 1);
        return INSPECT_EXIT_ERROR;
    }
    if (n != t->npk) {
        inspect_err(cmd, "the key of %s has %u column%s but %u value%s given", t->name, t->npk,
                    t->npk == 1 ? "" : "s", n, n == 1 ? " was" : "s were");
        return INSPECT_EXIT_ERROR;
    }
    /* A private in-memory database evaluates the literals exactly as SQLite
    ** reads them (9223372036854775808 is a REAL, 0x10 is 16) and applies the
    ** key columns' affinities through a scratch table of the same types. */
    if (sqlite3_open_v2(":memory:", &mem, SQLITE_OPEN_READWRITE | SQLITE_OPEN_MEMORY, NULL) !=
        SQLITE_OK)
        goto oom;
    if (!(sql = sqlite3_mprintf("SELECT %s", arg)) ||
        sqlite3_prepare_v2(mem, sql, -1, &sel, NULL) != SQLITE_OK) {
        inspect_err(cmd, "key: %s", sqlite3_errmsg(mem));
        goto done;
    }
    if ((uint32_t)sqlite3_column_count(sel) != n || sqlite3_step(sel) != SQLITE_ROW) {
        inspect_err(cmd, "key: %s", sqlite3_errmsg(mem));
        goto done;
    }
    if (sqlite3_prepare_v2(k->db, "SELECT type FROM pragma_table_info(?1) WHERE name = ?2", -1,
                           &info, NULL) != SQLITE_OK) {
        inspect_err(cmd, "reading the columns of %s: %s", t->name, sqlite3_errmsg(k->db));
        goto done;
    }
    s = sqlite3_str_new(mem);
    sqlite3_str_appendf(s, "CREATE TABLE key(");
    for (i = 0; i < n; i++) {
        const char *decl = NULL;
        sqlite3_reset(info);
        sqlite3_bind_text(info, 1, t->name, -1, SQLITE_STATIC);
        sqlite3_bind_text(info, 2, t->pk[i], -1, SQLITE_STATIC);
        if (sqlite3_step(info) == SQLITE_ROW)
            decl = (const char *)sqlite3_column_text(info, 0);
        sqlite3_str_appendf(s, "%sc%u %s", i ? ", " : "", i, affinity(decl));
    }
    sqlite3_str_appendf(s, ")");
    sqlite3_free(sql);
    if (!(sql = sqlite3_str_finish(s)) || sqlite3_exec(mem, sql, NULL, NULL, NULL) != SQLITE_OK)
        goto oom;
    sqlite3_free(sql);
    s = sqlite3_str_new(mem);
    sqlite3_str_appendf(s, "INSERT INTO key VALUES (");
    for (i = 0; i < n; i++)
        sqlite3_str_appendf(s, "%s?", i ? ", " : "");
    sqlite3_str_appendf(s, ")");
    if (!(sql = sqlite3_str_finish(s)) || sqlite3_prepare_v2(mem, sql, -1, &ins, NULL) != SQLITE_OK)
        goto oom;
    for (i = 0; i < n; i++)
        sqlite3_bind_value(ins, (int)i + 1, sqlite3_column_value(sel, (int)i));
    if (sqlite3_step(ins) != SQLITE_DONE ||
        sqlite3_prepare_v2(mem, "SELECT * FROM key", -1, &back, NULL) != SQLITE_OK ||
        sqlite3_step(back) != SQLITE_ROW)
        goto oom;
    key->n = n;
    for (i = 0; i < n; i++)
        if (sqlite3_column_type(back, (int)i) == SQLITE_NULL) {
            inspect_err(cmd, "key column %s is NULL: knit never stores a NULL key", t->pk[i]);
            goto done;
        }
    if (key_copy(back, key) != 0)
        goto oom;
    rc = 0;
    goto done;
oom:
    inspect_err(cmd, "out of memory parsing the key");
done:
    if (rc)
        inspect_key_free(key);
    sqlite3_free(sql);
    sqlite3_finalize(sel);
    sqlite3_finalize(info);
    sqlite3_finalize(ins);
    sqlite3_finalize(back);
    sqlite3_close(mem);
    return rc;
}

void inspect_key_free(inspect_key_t *key) /* see inspect_replica.h */
{
    for (uint32_t i = 0; i < KNIT_MAX_PK; i++)
        if (key->v[i].type == KNIT_TEXT || key->v[i].type == KNIT_BLOB)
            knit__free((void *)key->v[i].u.b.p);
    memset(key, 0, sizeof *key);
}

void inspect_row_text(FILE *f, const ktable_t *t,
                      const knit_value_t *pk) /* see inspect_replica.h */
{
    inspect_text(f, t->name, strlen(t->name));
    fputc(' ', f);
    inspect_sql_list(f, pk, t->npk);
}

/* ---------------------------------------------------------------------- */
/* Change batches                                                          */

/* Writes an OR-set state carried in a batch as its element list, or
** "(undecodable OR-set state)". */
static void batch_set_text(FILE *f, const knit_value_t *v, int json)
{
    knit_orset_t s;
    if (v->type != KNIT_BLOB || knit_orset_decode(v->u.b.p, v->u.b.n, &s) != 0) {
        fputs(json ? "null" : "(undecodable OR-set state)", f);
        return;
    }
    fputc('[', f);
    for (size_t i = 0; i < s.nelems; i++) {
        if (i)
            fputs(json ? ", " : ",", f);
        inspect_json_value(f, &s.elems[i].v);
    }
    fputc(']', f);
    knit_orset_free(&s);
}

void inspect_change_text(FILE *f, knit_t *k, const knit_batch_t *b,
                         const knit_change_t *c) /* see inspect_replica.h */
{
    const knit_batch_table_t *t = &b->tables[c->table];
    const knit_site_t *site = &b->sites[c->site];
    char sh[9];
    fputs("  ", f);
    inspect_text(f, t->name, strlen(t->name));
    fputc(' ', f);
    inspect_sql_list(f, c->pk, t->npk);
    fputs(": ", f);
    if (c->col == 0) {
        fprintf(f, "%s (cl %llu)", knit_cl_live(c->cl) ? "live" : "deleted",
                (unsigned long long)c->cl);
    } else {
        const char *col = t->cols[c->col - 1];
        inspect_text(f, col, strlen(col));
        fputs(" = ", f);
        if (t->orset[c->col - 1])
            batch_set_text(f, &c->value, 0);
        else
            inspect_sql_value(f, &c->value, INSPECT_SHOW_MAX);
    }
    fputs("  @ ", f);
    inspect_hlc_text(f, c->hlc);
    inspect_site_short(site, sh);
    fprintf(f, " by %s%s in ", sh, knit_site_cmp(site, &k->site) == 0 ? " (local)" : "");
    if (b->ns[c->ns][0])
        inspect_text(f, b->ns[c->ns], strlen(b->ns[c->ns]));
    else
        fputs("(unnamed home)", f);
    fputc('\n', f);
}

void inspect_change_json(FILE *f, knit_t *k, const knit_batch_t *b,
                         const knit_change_t *c) /* see inspect_replica.h */
{
    const knit_batch_table_t *t = &b->tables[c->table];
    const knit_site_t *site = &b->sites[c->site];
    fputs("{\"table\": ", f);
    inspect_json_string(f, t->name, strlen(t->name));
    fputs(", \"key\": ", f);
    inspect_json_sql_list(f, c->pk, t->npk);
    if (c->col == 0) {
        fprintf(f, ", \"column\": null, \"kind\": \"liveness\", \"live\": %s",
                knit_cl_live(c->cl) ? "true" : "false");
    } else {
        const char *col = t->cols[c->col - 1];
        int set = t->orset[c->col - 1];
        fputs(", \"column\": ", f);
        inspect_json_string(f, col, strlen(col));
        fprintf(f, ", \"kind\": \"%s\", \"value\": ", set ? "orset" : "lww");
        if (set)
            batch_set_text(f, &c->value, 1);
        else
            inspect_json_value(f, &c->value);
    }
    fprintf(f, ", \"cl\": %llu, ", (unsigned long long)c->cl);
    inspect_hlc_json(f, c->hlc);
    fputs(", \"site\": \"", f);
    inspect_hex(f, site->b, 16);
    fprintf(f, "\", \"local\": %s, \"namespace\": ",
            knit_site_cmp(site, &k->site) == 0 ? "true" : "false");
    inspect_json_string(f, b->ns[c->ns], strlen(b->ns[c->ns]));
    fputc('}', f);
}

void inspect_batch_print(FILE *f, knit_t *k, const knit_batch_t *b, uint64_t after, int json,
                         size_t *ntxns, size_t *nchanges) /* see inspect_replica.h */
{
    size_t shown = 0, changes = 0;
    for (size_t i = 0; i < b->ntxns; i++) {
        const knit_txn_t *x = &b->txns[i];
        if (x->version <= after)
            continue;
        if (json)
            fprintf(f, "%s{\"version\": %llu, \"changes\": [", shown ? ", " : "",
                    (unsigned long long)x->version);
        else
            fprintf(f, "version %llu (%zu change%s)\n", (unsigned long long)x->version, x->count,
                    x->count == 1 ? "" : "s");
        for (size_t c = 0; c < x->count; c++) {
            if (json) {
                fputs(c ? ", " : "", f);
                inspect_change_json(f, k, b, &b->changes[x->first + c]);
            } else {
                inspect_change_text(f, k, b, &b->changes[x->first + c]);
            }
        }
        if (json)
            fputs("]}", f);
        shown++;
        changes += x->count;
    }
    *ntxns = shown;
    *nchanges = changes;
}

int inspect_list_command(const char *cmd, int argc, char **argv, void (*help)(void),
                         inspect_list_fn list) /* see inspect_replica.h */
{
    const char *pos[1];
    int json = 0, npos, rc, found = 0;
    const inspect_opt_t opts[] = {{"--json", NULL, &json}, {NULL, NULL, NULL}};
    knit_t *k = NULL;

    if ((rc = inspect_args(cmd, argc, argv, opts, help, pos, 1, &npos)) >= 0)
        return rc;
    if (npos != 1)
        return inspect_usage_err(cmd, "expected one REPLICA");
    if (inspect_open_replica(cmd, pos[0], &k) != 0)
        return INSPECT_EXIT_ERROR;
    rc = list(pos[0], k, json, &found);
    if (rc)
        rc = inspect_knit_fail(cmd, k, rc);
    knit_close(k);
    return inspect_finish(cmd, rc ? rc : found ? INSPECT_EXIT_FINDING : INSPECT_EXIT_OK);
}
