/*
** state.c: the sync state a replica keeps: its namespaces and account,
** the cursor per namespace, the acknowledged version, and settings.
**
** Accounts.  A replica file serves one account: once it has used an
** account namespace "user:<sub>" (kept in _knit_meta "account"), naming
** another "user:*" namespace fails with KNIT_EACCOUNT.  Rows with the same
** key would otherwise collide, and the second user's edits of the first
** one's rows would reach the first one's account.  "anon:*" to "user:*"
** (signing in) is allowed.  When the relay erases the account
** (KNIT_EERASED), knit_erase_account removes its rows and frees the file.
*/
#include <stdio.h>
#include <string.h>

#include "replica.h"
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
    int rc = knit__meta_get(k, "account", &st);
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
        rc = knit__meta_set_blob(k, "account", ns, strlen(ns), 1);
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
        if (!rc && k->tables[i].nscol >= 0) {
            /* Departures move too (nscol.c note 3); one the row already
            ** has in `to` is older than it and is dropped. */
            sqlite3_str *q = sqlite3_str_new(NULL);
            sqlite3_str_appendf(q, "UPDATE OR REPLACE _knit_gone_%d SET ns = %lld WHERE ns = %lld",
                                k->tables[i].id, (long long)tidx, (long long)fidx);
            rc = knit__exec_str(k, q);
        }
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

/* Removes the rows of namespace idx from table t and knit's metadata of
** them; *rows counts the user rows.  The deletes are logged when app
** triggers keep knit's connection's triggers on: the log is emptied after,
** since it held nothing before (the caller stamped first). */
static int erase_table(knit_t *k, ktable_t *t, int64_t idx, size_t *rows)
{
    sqlite3_str *q = sqlite3_str_new(NULL);
    sqlite3_str_appendf(q,
                        "DELETE FROM \"%w\" AS u WHERE EXISTS (SELECT 1 FROM _knit_rows_%d AS r"
                        " WHERE r.ns = %lld AND ",
                        t->name, t->id, (long long)idx);
    knit__keys_join(q, t, "u", "r");
    sqlite3_str_appendall(q, ")");
    int rc = knit__exec_str(k, q);
    if (rc)
        return rc;
    size_t n = (size_t)sqlite3_changes(k->db);
    *rows += n;
    t->ev_rows += n;
    q = sqlite3_str_new(NULL);
    sqlite3_str_appendf(q, "DELETE FROM _knit_sets_%d WHERE (", t->id);
    knit__keylist_str(q, t->npk, "");
    sqlite3_str_appendall(q, ") IN (SELECT ");
    knit__keylist_str(q, t->npk, "");
    sqlite3_str_appendf(q,
                        " FROM _knit_rows_%d WHERE ns = %lld); DELETE FROM _knit_rows_%d WHERE"
                        " ns = %lld; DELETE FROM _knit_log_%d;",
                        t->id, (long long)idx, t->id, (long long)idx, t->id);
    if (t->nscol >= 0)
        sqlite3_str_appendf(q, "DELETE FROM _knit_gone_%d WHERE ns = %lld;", t->id, (long long)idx);
    return knit__exec_str(k, q);
}

/* Inside a write transaction: stamps, then removes namespace ns's rows
** from every tracked table (erase_table), its set-aside changes and its
** cursor.  *idx is its _knit_ns idx (0: unknown, nothing removed). */
static int erase_ns(knit_t *k, const char *ns, int64_t *idx, size_t *rows)
{
    sqlite3_stmt *st = NULL;
    int rc;
    *idx = 0;
    if ((rc = knit__stamp_locked(k, NULL)) != 0)
        return rc;
    if ((rc = sqlite3_prepare_v2(k->db, "SELECT idx FROM _knit_ns WHERE name = ?1", -1, &st,
                                 NULL)) != SQLITE_OK)
        return knit__dberr(k, rc, "reading _knit_ns");
    sqlite3_bind_text(st, 1, ns, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW)
        *idx = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    for (size_t i = 0; !rc && *idx > 0 && i < k->ntables; i++)
        rc = erase_table(k, &k->tables[i], *idx, rows);
    if (!rc && *idx > 0) {
        sqlite3_str *q = sqlite3_str_new(NULL);
        sqlite3_str_appendf(q,
                            "DELETE FROM _knit_aside WHERE ns = %Q;"
                            " UPDATE _knit_ns SET cursor = 0 WHERE idx = %lld;",
                            ns, (long long)*idx);
        rc = knit__exec_str(k, q);
    }
    return rc;
}

int knit_erase_account(knit_t *k) /* see knit.h */
{
    char *acct = NULL;
    size_t rows = 0;
    int64_t idx = 0;
    int rc = knit__begin(k);
    if (rc)
        return rc;
    if ((rc = replica_account(k, &acct)) != 0 || !acct) {
        knit__rollback(k);
        return rc;
    }
    /* Local writes not yet stamped are the account's too: erase_ns folds
    ** them first, so the log holds only what the deletes make. */
    rc = erase_ns(k, acct, &idx, &rows);
    if (!rc && idx > 0) {
        sqlite3_str *q = sqlite3_str_new(NULL);
        sqlite3_str_appendf(q,
                            "UPDATE _knit_ns SET name = NULL WHERE idx = %d AND name = %Q;"
                            " UPDATE _knit_meta SET value = 0 WHERE key = 'write_ns'"
                            " AND value = %lld;",
                            KNIT_HOME_NS, acct, (long long)idx);
        rc = knit__exec_str(k, q);
    }
    if (!rc)
        rc = knit__exec(k, "DELETE FROM _knit_meta WHERE key = 'account'");
    if (!rc)
        rc = knit__commit(k);
    knit__free(acct);
    if (rc) {
        knit__rollback(k);
        return rc;
    }
    k->ev_remote = rows > 0;
    knit__notify(k);
    return (int)(rows > 0x7fffffff ? 0x7fffffff : rows);
}

int knit_drop_namespace(knit_t *k, const char *ns) /* see knit.h */
{
    size_t rows = 0;
    int64_t idx = 0;
    int rc = knit__begin(k);
    if (rc)
        return rc;
    rc = erase_ns(k, ns, &idx, &rows);
    if (!rc)
        rc = knit__commit(k);
    if (rc) {
        knit__rollback(k);
        return rc;
    }
    k->ev_remote = rows > 0;
    knit__notify(k);
    return (int)(rows > 0x7fffffff ? 0x7fffffff : rows);
}

void knit_free_names(char **names) /* see knit.h */
{
    for (size_t i = 0; names && names[i]; i++)
        knit__free(names[i]);
    knit__free(names);
}

int knit_namespaces(knit_t *k, const char *prefix, char ***out) /* see knit.h */
{
    sqlite3_str *q = sqlite3_str_new(NULL);
    sqlite3_stmt *st = NULL;
    char **v = NULL;
    size_t n = 0;
    int rc;
    *out = NULL;
    if ((rc = knit__load_tables(k)) != 0) {
        sqlite3_free(sqlite3_str_finish(q));
        return rc;
    }
    /* A namespace counts when it has a cursor or any row in a table. */
    sqlite3_str_appendall(q, "SELECT name FROM _knit_ns AS n WHERE substr(name, 1, length(?1)) = ?1"
                             " AND (cursor > 0");
    for (size_t i = 0; i < k->ntables; i++)
        sqlite3_str_appendf(q, " OR EXISTS (SELECT 1 FROM _knit_rows_%d WHERE ns = n.idx)",
                            k->tables[i].id);
    sqlite3_str_appendall(q, ") ORDER BY name");
    if ((rc = knit__prepare_temp(k, &st, q, "reading _knit_ns")) != 0)
        return rc;
    sqlite3_bind_text(st, 1, prefix, -1, SQLITE_STATIC);
    if (!(v = knit__calloc(1, sizeof *v)))
        rc = KNIT_ENOMEM;
    while (!rc && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        char **g = knit__realloc(v, (n + 2) * sizeof *v);
        rc = 0;
        if (!g) {
            rc = KNIT_ENOMEM;
            break;
        }
        v = g;
        v[n + 1] = NULL;
        if (!(v[n] = knit__strdup((const char *)sqlite3_column_text(st, 0)))) {
            rc = KNIT_ENOMEM;
            break;
        }
        n++;
    }
    if (rc == SQLITE_DONE)
        rc = 0;
    else if (rc > 0)
        rc = knit__dberr(k, rc, "reading _knit_ns");
    sqlite3_finalize(st);
    if (rc) {
        knit_free_names(v);
        return rc;
    }
    *out = v;
    return 0;
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
        rc = knit__repush_acked(k, version);
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
