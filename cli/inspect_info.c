/*
** inspect_info.c: `sync-inspect info`, a one-screen summary of a replica:
** its site id, namespaces and relay cursors, tracked tables and their
** column kinds, the current hybrid logical clock, row and cell counts, and
** what is pending (stamped local changes the relay has not acknowledged,
** and captured writes not stamped yet).
**
** Everything is read in one read transaction, so the counts agree with
** each other even while an agent writes the file.  A cell is counted the
** way the state digest counts it: every row's liveness, and the written
** column cells of live rows.
*/
#include <stdlib.h>
#include <string.h>

#include "inspect_replica.h"
#include "schema.h"

#define CMD "info"

static void help(void)
{
    fputs("usage: sync-inspect info [--json] REPLICA\n"
          "\n"
          "Summarize a replica: its site id, namespaces with their relay cursors and\n"
          "row counts, tracked tables with key columns and column kinds (lww or\n"
          "orset), the current hybrid logical clock as ISO-8601 time and counter,\n"
          "local version and acknowledged version, row and cell counts, and pending\n"
          "work: local changes not yet acknowledged by the relay, and captured\n"
          "writes not yet stamped (knit stamps them on its next read or sync).\n"
          "Cells kept waiting for columns or tables this replica does not track yet\n"
          "are counted (--json also gives the tracked schema's fingerprint, what\n"
          "the replica reports to the relay); `sync-inspect schema` shows both per\n"
          "table and column.\n"
          "\n"
          "The replica is opened read-only and never modified; it may be in use by\n"
          "an agent meanwhile.  A lock held by another connection is waited for\n"
          "2 s, then reported.\n"
          "\n"
          "  --json    one JSON document instead of text\n"
          "\n"
          "Exit status: 0 shown, 2 usage error or unreadable replica.\n",
          stdout);
}

/* Counts for one table. */
typedef struct tcount_s {
    uint64_t rows, live, cells, pending, unstamped, bad; /* see the JSON names */
} tcount_t;

/* Everything the summary shows, read in one snapshot. */
typedef struct info_s {
    knit_t *k;           /* replica */
    inspect_ns_t ns;     /* namespaces */
    uint64_t *ns_rows;   /* rows per namespace idx (ns.n + 1; last = unknown) */
    tcount_t *tc;        /* per table */
    uint64_t *vers;      /* versions of pending cells (sorted, unique at the end) */
    size_t nvers, cvers; /* count and capacity */
    int64_t hlc, version, acked, schema, write_ns; /* from _knit_meta */
    uint64_t nsites;                               /* rows of _knit_sites */
    uint64_t pending;                              /* pending cells, all tables */
    uint64_t unstamped;                            /* captured writes, all tables */
    char fp[KNIT_SCHEMA_FP_HEX]; /* tracked schema's fingerprint, "" if unreadable */
    uint64_t waiting;            /* cells waiting in _knit_aside for a column or table */
} info_t;

static int add_version(info_t *in, uint64_t v)
{
    if (in->nvers && in->vers[in->nvers - 1] == v)
        return 0; /* rows often share their stamp's version */
    if (in->nvers == in->cvers) {
        size_t n = in->cvers ? in->cvers * 2 : 64;
        uint64_t *p = knit__realloc(in->vers, n * sizeof *p);
        if (!p)
            return KNIT_ENOMEM;
        in->vers = p;
        in->cvers = n;
    }
    in->vers[in->nvers++] = v;
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int count_table(info_t *in, ktable_t *t, tcount_t *tc)
{
    inspect_rows_t r;
    int rc = inspect_rows_open(&r, in->k, t, NULL);
    while (!rc && (rc = inspect_rows_next(&r)) == 1) {
        uint32_t ncells = knit_cl_live(r.cl) ? t->ncols + 1 : 1;
        rc = 0;
        tc->rows++;
        tc->live += knit_cl_live(r.cl);
        in->ns_rows[r.ns < in->ns.n ? r.ns : in->ns.n]++;
        if (!r.cells_ok) {
            tc->bad++;
            continue;
        }
        for (uint32_t i = 0; i < ncells && !rc; i++) {
            if (!r.cells[i].hlc)
                continue;
            tc->cells++;
            if (r.cells[i].site == in->k->site_idx && r.cells[i].ver > (uint64_t)in->acked) {
                tc->pending++;
                rc = add_version(in, r.cells[i].ver);
            }
        }
    }
    inspect_rows_close(&r);
    if (rc < 0)
        return rc;
    in->pending += tc->pending;
    rc = inspect_unstamped(in->k, t, NULL, &tc->unstamped);
    in->unstamped += tc->unstamped;
    return rc;
}

static int gather(info_t *in)
{
    knit_t *k = in->k;
    sqlite3_stmt *st = NULL;
    int rc;
    if ((rc = knit__meta_get_int(k, "hlc", &in->hlc)) != 0 ||
        (rc = knit__meta_get_int(k, "version", &in->version)) != 0 ||
        (rc = knit__meta_get_int(k, "acked", &in->acked)) != 0 ||
        (rc = knit__meta_get_int(k, "schema", &in->schema)) != 0 ||
        (rc = knit__meta_get_int(k, "write_ns", &in->write_ns)) != 0)
        return rc;
    if (in->write_ns <= 0)
        in->write_ns = KNIT_HOME_NS;
    if (sqlite3_prepare_v2(k->db, "SELECT count(*) FROM _knit_sites", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        in->nsites = (uint64_t)sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    /* Best effort: a replica whose _knit_tables is damaged still gets the
    ** rest of its summary (verify says what is wrong). */
    {
        knit_schema_t *sc = NULL;
        if (knit__schema_read(k, &sc) == 0)
            knit__schema_fp_hex(sc->fp, in->fp);
        knit__schema_free(sc);
    }
    if (sqlite3_prepare_v2(k->db, "SELECT count(*) FROM _knit_aside WHERE kind = 'waiting'", -1,
                           &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        in->waiting = (uint64_t)sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    st = NULL;
    if ((rc = inspect_ns_load(k, &in->ns)) != 0)
        return rc;
    in->ns_rows = knit__calloc(in->ns.n + 1, sizeof *in->ns_rows);
    in->tc = knit__calloc(k->ntables ? k->ntables : 1, sizeof *in->tc);
    if (!in->ns_rows || !in->tc)
        return KNIT_ENOMEM;
    for (size_t i = 0; i < k->ntables && !rc; i++)
        rc = count_table(in, &k->tables[i], &in->tc[i]);
    if (!rc && in->nvers) {
        size_t j = 0;
        qsort(in->vers, in->nvers, sizeof *in->vers, cmp_u64);
        for (size_t i = 1; i < in->nvers; i++)
            if (in->vers[i] != in->vers[j])
                in->vers[++j] = in->vers[i];
        in->nvers = j + 1;
    }
    return rc;
}

static void print_text(info_t *in, const char *path)
{
    knit_t *k = in->k;
    FILE *f = stdout;
    uint32_t i;
    fputs("replica     ", f);
    inspect_text(f, path, strlen(path));
    fputs("\nsite        ", f);
    inspect_hex(f, k->site.b, 16);
    fprintf(f, "\nschema      %lld\n", (long long)in->schema);
    fputs("clock       ", f);
    if (in->hlc)
        inspect_hlc_text(f, (uint64_t)in->hlc);
    else
        fputs("none yet (nothing stamped or received)", f);
    fprintf(f, "\nversion     %lld (acknowledged up to %lld)\n", (long long)in->version,
            (long long)in->acked);
    fprintf(f, "sites       %llu known\n", (unsigned long long)in->nsites);
    fputs("namespaces\n", f);
    for (i = 0; i < in->ns.n; i++) {
        int home = i == KNIT_HOME_NS, wr = (int64_t)i == in->write_ns;
        if (!in->ns.names[i])
            continue;
        fputs("  ", f);
        inspect_ns_text(f, &in->ns, i);
        if (home || wr)
            fprintf(f, " (%s%s%s)", wr ? "write" : "", wr && home ? ", " : "", home ? "home" : "");
        fprintf(f, ": cursor %llu, rows %llu\n", (unsigned long long)in->ns.cursor[i],
                (unsigned long long)in->ns_rows[i]);
    }
    if (in->ns_rows[in->ns.n])
        fprintf(f, "  (unknown namespace): rows %llu\n", (unsigned long long)in->ns_rows[in->ns.n]);
    fputs("tables\n", f);
    if (!k->ntables)
        fputs("  (none tracked)\n", f);
    for (size_t t = 0; t < k->ntables; t++) {
        ktable_t *tb = &k->tables[t];
        tcount_t *tc = &in->tc[t];
        fputs("  ", f);
        inspect_text(f, tb->name, strlen(tb->name));
        fputs(": key ", f);
        for (i = 0; i < tb->npk; i++) {
            fputs(i ? ", " : "", f);
            inspect_text(f, tb->pk[i], strlen(tb->pk[i]));
        }
        fputs("; columns ", f);
        for (i = 0; i < tb->ncols; i++) {
            fputs(i ? ", " : "", f);
            inspect_text(f, tb->cols[i], strlen(tb->cols[i]));
            fputs(tb->orset[i] ? " orset" : " lww", f);
        }
        if (!tb->ncols)
            fputs("(none)", f);
        fprintf(f,
                "\n    rows %llu (%llu live, %llu deleted), cells %llu, pending %llu, "
                "unstamped %llu",
                (unsigned long long)tc->rows, (unsigned long long)tc->live,
                (unsigned long long)(tc->rows - tc->live), (unsigned long long)tc->cells,
                (unsigned long long)tc->pending, (unsigned long long)tc->unstamped);
        if (tc->bad)
            fprintf(f, ", %llu with undecodable metadata (run verify)",
                    (unsigned long long)tc->bad);
        fputc('\n', f);
    }
    if (in->pending)
        fprintf(f, "pending     %llu change%s in %zu transaction%s (versions %llu to %llu)\n",
                (unsigned long long)in->pending, in->pending == 1 ? "" : "s", in->nvers,
                in->nvers == 1 ? "" : "s", (unsigned long long)in->vers[0],
                (unsigned long long)in->vers[in->nvers - 1]);
    else
        fputs("pending     none\n", f);
    fprintf(f, "unstamped   %llu captured write%s\n", (unsigned long long)in->unstamped,
            in->unstamped == 1 ? "" : "s");
    /* The text form stays as it was (scripts and golden tests read it);
    ** waiting cells are mentioned only when there are some. */
    if (in->waiting)
        fprintf(f,
                "waiting     %llu cell%s of columns or tables not tracked here yet"
                " (sync-inspect schema)\n",
                (unsigned long long)in->waiting, in->waiting == 1 ? "" : "s");
}

static void print_json(info_t *in, const char *path)
{
    knit_t *k = in->k;
    FILE *f = stdout;
    uint32_t i;
    int first = 1;
    fputs("{\"replica\": ", f);
    inspect_json_string(f, path, strlen(path));
    fputs(", \"site\": \"", f);
    inspect_hex(f, k->site.b, 16);
    fprintf(f, "\", \"schema\": %lld, \"clock\": {", (long long)in->schema);
    inspect_hlc_json(f, (uint64_t)in->hlc);
    fprintf(f, "}, \"version\": %lld, \"acked\": %lld, \"sites\": %llu, \"namespaces\": [",
            (long long)in->version, (long long)in->acked, (unsigned long long)in->nsites);
    for (i = 0; i < in->ns.n; i++) {
        if (!in->ns.names[i])
            continue;
        fputs(first ? "{\"name\": " : ", {\"name\": ", f);
        first = 0;
        inspect_ns_json(f, &in->ns, i);
        fprintf(f, ", \"idx\": %u, \"home\": %s, \"write\": %s, \"cursor\": %llu, \"rows\": %llu}",
                i, i == KNIT_HOME_NS ? "true" : "false",
                (int64_t)i == in->write_ns ? "true" : "false", (unsigned long long)in->ns.cursor[i],
                (unsigned long long)in->ns_rows[i]);
    }
    fputs("], \"tables\": [", f);
    for (size_t t = 0; t < k->ntables; t++) {
        ktable_t *tb = &k->tables[t];
        tcount_t *tc = &in->tc[t];
        fputs(t ? ", {\"name\": " : "{\"name\": ", f);
        inspect_json_string(f, tb->name, strlen(tb->name));
        fprintf(f, ", \"id\": %d, \"key\": [", tb->id);
        for (i = 0; i < tb->npk; i++) {
            fputs(i ? ", " : "", f);
            inspect_json_string(f, tb->pk[i], strlen(tb->pk[i]));
        }
        fputs("], \"columns\": [", f);
        for (i = 0; i < tb->ncols; i++) {
            fputs(i ? ", {\"name\": " : "{\"name\": ", f);
            inspect_json_string(f, tb->cols[i], strlen(tb->cols[i]));
            fprintf(f, ", \"kind\": \"%s\"}", tb->orset[i] ? "orset" : "lww");
        }
        fprintf(f,
                "], \"rows\": %llu, \"live\": %llu, \"deleted\": %llu, \"cells\": %llu, "
                "\"pending\": %llu, \"unstamped\": %llu, \"undecodable\": %llu}",
                (unsigned long long)tc->rows, (unsigned long long)tc->live,
                (unsigned long long)(tc->rows - tc->live), (unsigned long long)tc->cells,
                (unsigned long long)tc->pending, (unsigned long long)tc->unstamped,
                (unsigned long long)tc->bad);
    }
    fprintf(f, "], \"pending\": {\"changes\": %llu, \"transactions\": %zu",
            (unsigned long long)in->pending, in->nvers);
    if (in->nvers)
        fprintf(f, ", \"first_version\": %llu, \"last_version\": %llu",
                (unsigned long long)in->vers[0], (unsigned long long)in->vers[in->nvers - 1]);
    fprintf(f, "}, \"unstamped\": %llu, \"fingerprint\": ", (unsigned long long)in->unstamped);
    if (in->fp[0])
        fprintf(f, "\"%s\"", in->fp);
    else
        fputs("null", f);
    fprintf(f, ", \"waiting\": %llu}\n", (unsigned long long)in->waiting);
}

int cmd_info(int argc, char **argv) /* see inspect_util.h */
{
    const char *pos[1];
    int json = 0, npos, rc;
    const inspect_opt_t opts[] = {{"--json", NULL, &json}, {NULL, NULL, NULL}};
    info_t in;

    if ((rc = inspect_args(CMD, argc, argv, opts, help, pos, 1, &npos)) >= 0)
        return rc;
    if (npos != 1)
        return inspect_usage_err(CMD, "expected one REPLICA");
    memset(&in, 0, sizeof in);
    if (inspect_open_replica(CMD, pos[0], &in.k) != 0)
        return INSPECT_EXIT_ERROR;
    rc = inspect_read_begin(CMD, in.k);
    if (!rc) {
        int r2 = gather(&in);
        if (r2)
            rc = inspect_knit_fail(CMD, in.k, r2);
        else if (json)
            print_json(&in, pos[0]);
        else
            print_text(&in, pos[0]);
        inspect_read_end(in.k);
    }
    inspect_ns_free(&in.ns);
    knit__free(in.ns_rows);
    knit__free(in.tc);
    knit__free(in.vers);
    knit_close(in.k);
    return inspect_finish(CMD, rc);
}
