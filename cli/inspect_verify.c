/*
** inspect_verify.c: `sync-inspect verify`, which checks a replica's
** integrity and the consistency of knit's metadata with the data, and
** prints one line per problem.
**
** Most checks are knit_verify()'s (runtime/verify.c): SQLite's
** integrity_check, capture triggers, every user row has live metadata and
** every live metadata row a user row, cells decode, stamps are not beyond
** the stored clock and name known sites, OR-set columns equal their set
** states, no set state without its row.  This file adds what a damaged
** file can hide from those: tracked tables whose own table or metadata
** tables are gone (knit_verify cannot run its queries on them, so they are
** checked first and a failed knit_verify is then a finding, not an error),
** metadata tables of tables no longer tracked, and rows that name a
** namespace _knit_ns lacks.
**
** Rows whose writes are still in the capture log are not problems: knit
** stamps them on its next write transaction (knit_verify skips them).
*/
#include <stdlib.h>
#include <string.h>

#include "inspect_replica.h"

#define CMD "verify"

static void help(void)
{
    fputs("usage: sync-inspect verify [--json] REPLICA\n"
          "\n"
          "Check the replica: SQLite's integrity_check, and that knit's metadata\n"
          "agrees with the data: every tracked row has live metadata (its liveness)\n"
          "and no live metadata lacks its row; OR-set columns hold exactly what their\n"
          "dots say; no orphan metadata (set states without a row, metadata tables\n"
          "of untracked tables, rows naming an unknown namespace); cell stamps\n"
          "decode, name known sites and are not beyond the replica's stored clock;\n"
          "capture triggers are all in place.  Each problem is one line:\n"
          "  TABLE KEY: message      (a row; KEY as SQL literals, as 'why' takes it)\n"
          "  TABLE: message          (a table)\n"
          "  message                 (the file)\n"
          "Rows with captured writes not stamped yet are not problems.\n"
          "\n"
          "  --json    one JSON document instead of text\n"
          "\n"
          "Exit status: 0 no problems, 1 problems found, 2 usage error or unreadable\n"
          "replica.\n",
          stdout);
}

/* Problems reported so far, and how. */
typedef struct vctx_s {
    int json;  /* output form */
    int count; /* problems printed */
} vctx_t;

/* Prints one problem; key is either SQL text (from knit_verify) or values. */
static void problem(vctx_t *v, const char *table, const char *key_sql, const knit_value_t *pk,
                    uint32_t npk, const char *msg)
{
    if (v->json) {
        fputs(v->count ? ", {\"table\": " : "{\"table\": ", stdout);
        if (table)
            inspect_json_string(stdout, table, strlen(table));
        else
            fputs("null", stdout);
        fputs(", \"key\": ", stdout);
        if (key_sql)
            inspect_json_string(stdout, key_sql, strlen(key_sql));
        else if (pk)
            inspect_json_sql_list(stdout, pk, npk);
        else
            fputs("null", stdout);
        fputs(", \"message\": ", stdout);
        inspect_json_string(stdout, msg, strlen(msg));
        fputc('}', stdout);
    } else {
        if (table) {
            inspect_text(stdout, table, strlen(table));
            if (key_sql) {
                fputc(' ', stdout);
                inspect_text(stdout, key_sql, strlen(key_sql));
            } else if (pk) {
                fputc(' ', stdout);
                inspect_sql_list(stdout, pk, npk);
            }
            fputs(": ", stdout);
        }
        inspect_text(stdout, msg, strlen(msg));
        fputc('\n', stdout);
    }
    v->count++;
}

static void on_problem(void *data, const char *table, const char *pk_sql, const char *message)
{
    problem(data, table, pk_sql, NULL, 0, message);
}

static int exists(knit_t *k, const char *name, int *yes)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(k->db,
                                "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND "
                                "name = ?1",
                                -1, &st, NULL);
    if (rc != SQLITE_OK)
        return knit__dberr(k, rc, "reading the schema");
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    *yes = rc == SQLITE_ROW;
    sqlite3_finalize(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : knit__dberr(k, rc, "reading the schema");
}

/* Tracked tables whose table or metadata tables are missing; counts them
** in *broken (knit_verify cannot check those). */
static int check_structure(vctx_t *v, knit_t *k, int *broken)
{
    static const char *const kinds[] = {"rows", "sets", "log"};
    char name[64], msg[160];
    int rc = 0, yes;
    *broken = 0;
    for (size_t i = 0; i < k->ntables && !rc; i++) {
        ktable_t *t = &k->tables[i];
        if ((rc = exists(k, t->name, &yes)) != 0)
            break;
        if (!yes) {
            problem(v, t->name, NULL, NULL, 0, "the table is tracked but does not exist");
            (*broken)++;
        }
        for (int j = 0; j < 3 && !rc; j++) {
            snprintf(name, sizeof name, "_knit_%s_%d", kinds[j], t->id);
            if ((rc = exists(k, name, &yes)) != 0 || yes)
                continue;
            snprintf(msg, sizeof msg, "metadata table %s is missing", name);
            problem(v, t->name, NULL, NULL, 0, msg);
            (*broken)++;
        }
    }
    return rc;
}

/* Metadata tables no tracked table owns. */
static int check_orphan_tables(vctx_t *v, knit_t *k)
{
    sqlite3_stmt *st = NULL;
    char msg[200];
    int rc = sqlite3_prepare_v2(k->db,
                                "SELECT name FROM sqlite_schema WHERE type = 'table' AND ("
                                "name GLOB '_knit_rows_[0-9]*' OR name GLOB '_knit_sets_[0-9]*' "
                                "OR name GLOB '_knit_log_[0-9]*') ORDER BY name",
                                -1, &st, NULL);
    if (rc != SQLITE_OK)
        return knit__dberr(k, rc, "reading the schema");
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(st, 0);
        const char *us = name ? strrchr(name, '_') : NULL;
        char *end;
        long id = us ? strtol(us + 1, &end, 10) : -1;
        int owned = 0;
        if (!us || *end)
            continue; /* e.g. _knit_rows_1_ver is an index name pattern, not ours */
        for (size_t i = 0; i < k->ntables; i++)
            owned |= k->tables[i].id == id;
        if (!owned) {
            snprintf(msg, sizeof msg, "orphan metadata table %.100s: no tracked table has id %ld",
                     name, id);
            problem(v, NULL, NULL, NULL, 0, msg);
        }
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : knit__dberr(k, rc, "reading the schema");
}

/* Rows naming a namespace _knit_ns lacks. */
static int check_namespaces(vctx_t *v, knit_t *k)
{
    inspect_ns_t ns;
    int rc = inspect_ns_load(k, &ns);
    char msg[120];
    for (size_t i = 0; i < k->ntables && !rc; i++) {
        ktable_t *t = &k->tables[i];
        inspect_rows_t r;
        int yes = 0;
        char name[64];
        snprintf(name, sizeof name, "_knit_rows_%d", t->id);
        if ((rc = exists(k, name, &yes)) != 0 || !yes)
            continue;
        if ((rc = inspect_rows_open(&r, k, t, NULL)) != 0)
            break;
        while ((rc = inspect_rows_next(&r)) == 1) {
            if (inspect_ns_name(&ns, r.ns))
                continue;
            snprintf(msg, sizeof msg, "row metadata names namespace #%u, which _knit_ns lacks",
                     r.ns);
            problem(v, t->name, NULL, r.pk, t->npk, msg);
        }
        inspect_rows_close(&r);
    }
    inspect_ns_free(&ns);
    return rc < 0 ? rc : 0;
}

static int run(const char *path, knit_t *k, int json)
{
    vctx_t v = {json, 0};
    int broken = 0, rc, vr;
    char msg[600];

    if ((rc = inspect_read_begin(CMD, k)) != 0)
        return rc;
    if (json) {
        fputs("{\"replica\": ", stdout);
        inspect_json_string(stdout, path, strlen(path));
        fputs(", \"problems\": [", stdout);
    }
    rc = check_structure(&v, k, &broken);
    inspect_read_end(k);
    if (rc)
        return inspect_knit_fail(CMD, k, rc);
    vr = knit_verify(k, on_problem, &v);
    if (vr < 0) {
        /* With tables missing, knit_verify's queries fail: that is part of
        ** the damage already reported, not a failure to read the file. */
        if (!broken)
            return inspect_knit_fail(CMD, k, vr);
        snprintf(msg, sizeof msg, "further checks could not run on the damaged metadata: %s",
                 knit_errmsg(k)[0] ? knit_errmsg(k) : knit_strerror(vr));
        problem(&v, NULL, NULL, NULL, 0, msg);
    }
    if ((rc = inspect_read_begin(CMD, k)) != 0)
        return rc;
    rc = check_orphan_tables(&v, k);
    if (!rc)
        rc = check_namespaces(&v, k);
    inspect_read_end(k);
    if (rc)
        return inspect_knit_fail(CMD, k, rc);
    if (json)
        printf("], \"ok\": %s, \"count\": %d}\n", v.count ? "false" : "true", v.count);
    else if (v.count)
        printf("%d problem%s\n", v.count, v.count == 1 ? "" : "s");
    else
        printf("ok: no problems (integrity and metadata of %zu tracked table%s consistent)\n",
               k->ntables, k->ntables == 1 ? "" : "s");
    return v.count ? INSPECT_EXIT_FINDING : INSPECT_EXIT_OK;
}

int cmd_verify(int argc, char **argv) /* see inspect_util.h */
{
    const char *pos[1];
    int json = 0, npos, rc;
    const inspect_opt_t opts[] = {{"--json", NULL, &json}, {NULL, NULL, NULL}};
    knit_t *k = NULL;

    if ((rc = inspect_args(CMD, argc, argv, opts, help, pos, 1, &npos)) >= 0)
        return rc;
    if (npos != 1)
        return inspect_usage_err(CMD, "expected one REPLICA");
    if (inspect_open_replica(CMD, pos[0], &k) != 0)
        return INSPECT_EXIT_ERROR;
    rc = run(pos[0], k, json);
    knit_close(k);
    return inspect_finish(CMD, rc);
}
