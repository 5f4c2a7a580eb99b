/*
** inspect_schema.c: `sync-inspect schema`, a replica's view of schema
** versions: its tracked schema (tables, key columns, columns and kinds),
** the fingerprint it reports to the relay in HELLO (runtime/schema.h), and
** the cells it keeps waiting in _knit_aside for columns and tables it does
** not track yet (other devices run a newer schema; the cells apply when
** this replica migrates and tracks them, docs/ARCHITECTURE.md "Schema
** changes").
**
** Read in one read transaction; the replica is never modified.
*/
#include <stdlib.h>
#include <string.h>

#include "inspect_replica.h"
#include "schema.h"

#define CMD "schema"

static void help(void)
{
    fputs("usage: sync-inspect schema [--json] REPLICA\n"
          "\n"
          "Show a replica's tracked schema: every tracked table with its key columns\n"
          "and its columns with their kinds (lww or orset), and the schema's\n"
          "fingerprint, the 16 hex digits this replica reports to the relay in HELLO\n"
          "(`sync-inspect relay STORE schemas` lists the fingerprints of all\n"
          "devices).  Then, per table and column, the cells kept waiting: changes\n"
          "from devices that run a newer schema, of columns or tables this replica\n"
          "does not track yet.  They are applied when it migrates (ALTER TABLE, then\n"
          "track again).\n"
          "\n"
          "The replica is opened read-only and never modified.\n"
          "\n"
          "  --json    one JSON document instead of text\n"
          "\n"
          "Exit status: 0 shown, 2 usage error or unreadable replica.\n",
          stdout);
}

/* Waiting cells of one (table, column). */
typedef struct wait_s {
    char *table;    /* table name */
    char *column;   /* column name, "" for the row's liveness */
    uint64_t cells; /* waiting cells */
    uint64_t rows;  /* distinct rows they belong to */
} wait_t;

typedef struct sview_s {
    knit_schema_t *schema; /* tracked schema */
    wait_t *w;             /* waiting groups, by table then column */
    size_t nw;             /* count */
    uint64_t total;        /* waiting cells in all */
} sview_t;

static int read_waiting(knit_t *k, sview_t *v)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(k->db,
                                "SELECT tbl, col, count(*), count(DISTINCT pk) FROM _knit_aside"
                                " WHERE kind = 'waiting' GROUP BY tbl, col ORDER BY tbl, col",
                                -1, &st, NULL);
    if (rc != SQLITE_OK)
        return 0; /* a replica made by an older knit has no _knit_aside */
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *t = (const char *)sqlite3_column_text(st, 0);
        const char *c = (const char *)sqlite3_column_text(st, 1);
        wait_t *n = knit__realloc(v->w, (v->nw + 1) * sizeof *n);
        if (!n) {
            sqlite3_finalize(st);
            return KNIT_ENOMEM;
        }
        v->w = n;
        n = &v->w[v->nw];
        n->table = knit__strdup(t ? t : "");
        n->column = knit__strdup(c ? c : "");
        n->cells = (uint64_t)sqlite3_column_int64(st, 2);
        n->rows = (uint64_t)sqlite3_column_int64(st, 3);
        v->nw++;
        v->total += n->cells;
        if (!n->table || !n->column) {
            sqlite3_finalize(st);
            return KNIT_ENOMEM;
        }
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : knit__dberr(k, rc, "reading _knit_aside");
}

static void view_free(sview_t *v)
{
    for (size_t i = 0; i < v->nw; i++) {
        knit__free(v->w[i].table);
        knit__free(v->w[i].column);
    }
    knit__free(v->w);
    knit__schema_free(v->schema);
}

static const knit_schema_table_t *find_table(const knit_schema_t *s, const char *name)
{
    for (size_t i = 0; i < s->ntables; i++)
        if (strcmp(s->tables[i].name, name) == 0)
            return &s->tables[i];
    return NULL;
}

/* 1 when column `col` ("" = liveness) of table `tbl` is tracked here. */
static int tracked(const knit_schema_t *s, const char *tbl, const char *col)
{
    const knit_schema_table_t *t = find_table(s, tbl);
    if (!t)
        return 0;
    if (!col[0])
        return 1;
    for (uint32_t i = 0; i < t->ncols; i++)
        if (strcmp(t->cols[i].name, col) == 0)
            return 1;
    return 0;
}

/* Waiting cells of one tracked column. */
static uint64_t waiting_of(const sview_t *v, const char *tbl, const char *col)
{
    for (size_t i = 0; i < v->nw; i++)
        if (strcmp(v->w[i].table, tbl) == 0 && strcmp(v->w[i].column, col) == 0)
            return v->w[i].cells;
    return 0;
}

static void print_text(const sview_t *v, const char *path)
{
    FILE *f = stdout;
    char fp[KNIT_SCHEMA_FP_HEX];
    knit__schema_fp_hex(v->schema->fp, fp);
    fputs("replica     ", f);
    inspect_text(f, path, strlen(path));
    fprintf(f, "\nfingerprint %s\ntables\n", fp);
    if (!v->schema->ntables)
        fputs("  (none tracked)\n", f);
    for (size_t i = 0; i < v->schema->ntables; i++) {
        const knit_schema_table_t *t = &v->schema->tables[i];
        fputs("  ", f);
        inspect_text(f, t->name, strlen(t->name));
        fputs(": key ", f);
        for (uint32_t k = 0; k < t->nkeys; k++) {
            fputs(k ? ", " : "", f);
            inspect_text(f, t->keys[k], strlen(t->keys[k]));
        }
        fputc('\n', f);
        for (uint32_t c = 0; c < t->ncols; c++) {
            uint64_t w = waiting_of(v, t->name, t->cols[c].name);
            fputs("    ", f);
            inspect_text(f, t->cols[c].name, strlen(t->cols[c].name));
            fputs(t->cols[c].orset ? " orset" : " lww", f);
            if (w)
                fprintf(f, ", %llu waiting (tracked since they arrived)", (unsigned long long)w);
            fputc('\n', f);
        }
    }
    if (!v->total) {
        fputs("waiting     none\n", f);
        return;
    }
    fprintf(f, "waiting     %llu cell%s of columns or tables other devices have\n",
            (unsigned long long)v->total, v->total == 1 ? "" : "s");
    for (size_t i = 0; i < v->nw; i++) {
        const wait_t *w = &v->w[i];
        int tr = tracked(v->schema, w->table, w->column);
        fputs("  ", f);
        inspect_text(f, w->table, strlen(w->table));
        if (w->column[0]) {
            fputc('.', f);
            inspect_text(f, w->column, strlen(w->column));
        } else {
            fputs(" (row liveness)", f);
        }
        fprintf(f, ": %llu cell%s in %llu row%s%s\n", (unsigned long long)w->cells,
                w->cells == 1 ? "" : "s", (unsigned long long)w->rows, w->rows == 1 ? "" : "s",
                tr                                ? " (tracked now; applied on the next sync)"
                : find_table(v->schema, w->table) ? " (column not tracked here)"
                                                  : " (table not tracked here)");
    }
}

static void print_json(const sview_t *v, const char *path)
{
    FILE *f = stdout;
    char fp[KNIT_SCHEMA_FP_HEX];
    knit__schema_fp_hex(v->schema->fp, fp);
    fputs("{\"replica\": ", f);
    inspect_json_string(f, path, strlen(path));
    fprintf(f, ", \"fingerprint\": \"%s\", \"tables\": [", fp);
    for (size_t i = 0; i < v->schema->ntables; i++) {
        const knit_schema_table_t *t = &v->schema->tables[i];
        fputs(i ? ", {\"name\": " : "{\"name\": ", f);
        inspect_json_string(f, t->name, strlen(t->name));
        fputs(", \"key\": [", f);
        for (uint32_t k = 0; k < t->nkeys; k++) {
            fputs(k ? ", " : "", f);
            inspect_json_string(f, t->keys[k], strlen(t->keys[k]));
        }
        fputs("], \"columns\": [", f);
        for (uint32_t c = 0; c < t->ncols; c++) {
            fputs(c ? ", {\"name\": " : "{\"name\": ", f);
            inspect_json_string(f, t->cols[c].name, strlen(t->cols[c].name));
            fprintf(f, ", \"kind\": \"%s\", \"waiting\": %llu}", t->cols[c].orset ? "orset" : "lww",
                    (unsigned long long)waiting_of(v, t->name, t->cols[c].name));
        }
        fputs("]}", f);
    }
    fprintf(f, "], \"waiting_cells\": %llu, \"waiting\": [", (unsigned long long)v->total);
    for (size_t i = 0; i < v->nw; i++) {
        const wait_t *w = &v->w[i];
        fputs(i ? ", {\"table\": " : "{\"table\": ", f);
        inspect_json_string(f, w->table, strlen(w->table));
        fputs(", \"column\": ", f);
        inspect_json_string(f, w->column, strlen(w->column));
        fprintf(f, ", \"cells\": %llu, \"rows\": %llu, \"table_tracked\": %s, \"tracked\": %s}",
                (unsigned long long)w->cells, (unsigned long long)w->rows,
                find_table(v->schema, w->table) ? "true" : "false",
                tracked(v->schema, w->table, w->column) ? "true" : "false");
    }
    fputs("]}\n", f);
}

int cmd_schema(int argc, char **argv) /* see inspect_util.h */
{
    const char *pos[1];
    int json = 0, npos, rc;
    const inspect_opt_t opts[] = {{"--json", NULL, &json}, {NULL, NULL, NULL}};
    knit_t *k = NULL;
    sview_t v;

    if ((rc = inspect_args(CMD, argc, argv, opts, help, pos, 1, &npos)) >= 0)
        return rc;
    if (npos != 1)
        return inspect_usage_err(CMD, "expected one REPLICA");
    memset(&v, 0, sizeof v);
    if (inspect_open_replica(CMD, pos[0], &k) != 0)
        return INSPECT_EXIT_ERROR;
    rc = inspect_read_begin(CMD, k);
    if (!rc) {
        int r2 = knit__schema_read(k, &v.schema);
        if (!r2)
            r2 = read_waiting(k, &v);
        if (r2)
            rc = inspect_knit_fail(CMD, k, r2);
        else if (json)
            print_json(&v, pos[0]);
        else
            print_text(&v, pos[0]);
        inspect_read_end(k);
    }
    view_free(&v);
    knit_close(k);
    return inspect_finish(CMD, rc);
}
