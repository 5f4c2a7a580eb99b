/*
** inspect_diff.c: `sync-inspect diff`, the logical differences between two
** replicas: tracked tables and columns, rows (present, live or deleted,
** namespace) and cells (value and stamp), compared with real site ids so
** that two replicas that number their sites differently still agree.
**
** What is compared is exactly what the state digest covers (crdt/digest.h):
** every row's liveness (causal length and stamp), and for live rows each
** column cell written in the current life: an LWW cell's value, HLC and
** site, an OR-set cell's state in canonical form.  So two replicas have
** equal digests if and only if diff finds nothing, and diff says where
** unequal digests come from.  Local versions, cursors and site numbering
** are per-replica bookkeeping and are not compared.
**
** Both replicas are walked in key order (the metadata tables' own index)
** and merged like sorted lists, one row at a time, so memory does not grow
** with the replica.  Each difference is of one kind:
**   row       a row only in one replica, or live in one and deleted in the
**             other, or in different namespaces
**   cell      a column whose value (or OR-set elements) differ
**   metadata  same value, different stamp or OR-set dots; tables and
**             columns tracked differently
*/
#include <string.h>

#include "inspect_replica.h"

#define CMD "diff"

static void help(void)
{
    fputs("usage: sync-inspect diff [--json] [--limit N] A B\n"
          "\n"
          "Compare two replicas: which tables and columns each tracks, which rows\n"
          "each holds (live or deleted, and in which namespace), and for live rows\n"
          "every cell: value and stamp (HLC and site id), or an OR-set's elements\n"
          "and dots.  This is what the state digest covers: two replicas have\n"
          "equal digests exactly when diff finds nothing.  Local versions, relay\n"
          "cursors and how each replica numbers sites are not compared.\n"
          "\n"
          "Each difference is one line, of one of three kinds:\n"
          "  row       only in one replica; live in one and deleted in the other;\n"
          "            in different namespaces\n"
          "  cell      different values or OR-set elements\n"
          "  metadata  same value but a different stamp or different OR-set dots;\n"
          "            tables or columns tracked differently\n"
          "Keys are SQL literals, as 'why' takes them.\n"
          "\n"
          "  --limit N  print at most N differences (all are still counted)\n"
          "  --json     one JSON document instead of text\n"
          "\n"
          "Exit status: 0 no differences, 1 the replicas differ, 2 usage error or\n"
          "unreadable replica.\n",
          stdout);
}

enum { K_ROW, K_CELL, K_META };
static const char *const kind_name[] = {"row", "cell", "metadata"};

/* One side of a difference: what to show of replica A or B. */
typedef struct side_s {
    int present;               /* 0: the thing is absent on this side */
    const char *text;          /* a name (namespace, kind), or NULL */
    const knit_value_t *value; /* an LWW value, or NULL */
    const knit_orset_t *set;   /* OR-set elements, or NULL */
    int has_cl;                /* show the causal length */
    uint64_t cl;               /* it */
    int has_stamp;             /* show the stamp (or "not written") */
    uint64_t hlc;              /* 0 = not written */
    const knit_site_t *site;   /* writer */
} side_t;

/* The comparison's state. */
typedef struct diff_s {
    knit_t *a, *b;         /* the replicas */
    inspect_ns_t nsa, nsb; /* their namespaces */
    int json;              /* output form */
    uint64_t limit;        /* print at most this many (0 = all) */
    uint64_t count[3];     /* differences by kind */
    uint64_t shown;        /* printed */
} diff_t;

static void side_text(const side_t *s)
{
    FILE *f = stdout;
    int sp = 0;
    char sh[9];
    if (!s->present) {
        fputs("(absent)", f);
        return;
    }
    if (s->text) {
        inspect_text(f, s->text, strlen(s->text));
        sp = 1;
    }
    if (s->has_cl) {
        fprintf(f, "%s%s (cl %llu)", sp ? " " : "", knit_cl_live(s->cl) ? "live" : "deleted",
                (unsigned long long)s->cl);
        sp = 1;
    }
    if (s->value) {
        fputs(sp ? " " : "", f);
        inspect_sql_value(f, s->value, INSPECT_SHOW_MAX);
        sp = 1;
    }
    if (s->set) {
        fputs(sp ? " [" : "[", f);
        for (size_t i = 0; i < s->set->nelems; i++) {
            fputs(i ? "," : "", f);
            inspect_json_value(f, &s->set->elems[i].v);
        }
        fputc(']', f);
        sp = 1;
    }
    if (s->has_stamp) {
        fputs(sp ? " " : "", f);
        if (!s->hlc) {
            fputs("(not written)", f);
        } else {
            fputs("@ ", f);
            inspect_hlc_text(f, s->hlc);
            inspect_site_short(s->site, sh);
            fprintf(f, " by %s", sh);
        }
    }
}

static void side_json(const side_t *s)
{
    FILE *f = stdout;
    int n = 0;
    if (!s->present) {
        fputs("null", f);
        return;
    }
    if (s->text && !s->has_cl && !s->value && !s->set && !s->has_stamp) {
        inspect_json_string(f, s->text, strlen(s->text));
        return;
    }
    fputc('{', f);
    if (s->has_cl) {
        fprintf(f, "\"cl\": %llu, \"live\": %s", (unsigned long long)s->cl,
                knit_cl_live(s->cl) ? "true" : "false");
        n++;
    }
    if (s->value) {
        fputs(n++ ? ", \"value\": " : "\"value\": ", f);
        inspect_json_value(f, s->value);
    }
    if (s->set) {
        fputs(n++ ? ", \"value\": [" : "\"value\": [", f);
        for (size_t i = 0; i < s->set->nelems; i++) {
            fputs(i ? ", " : "", f);
            inspect_json_value(f, &s->set->elems[i].v);
        }
        fputc(']', f);
    }
    if (s->has_stamp) {
        fprintf(f, "%s\"written\": %s", n++ ? ", " : "", s->hlc ? "true" : "false");
        if (s->hlc) {
            fputs(", ", f);
            inspect_hlc_json(f, s->hlc);
            fputs(", \"site\": \"", f);
            inspect_hex(f, s->site->b, 16);
            fputc('"', f);
        }
    }
    fputc('}', f);
}

/* Counts one difference and prints it unless past --limit.  pk may be NULL
** (a table-level difference); column NULL for the row itself; note is a
** short prefix for text ("stamps differ"), or NULL. */
static void emit(diff_t *d, int kind, const char *what, const ktable_t *t, const char *table,
                 const knit_value_t *pk, const char *column, const char *note, const side_t *a,
                 const side_t *b)
{
    FILE *f = stdout;
    d->count[kind]++;
    if (d->limit && d->shown >= d->limit)
        return;
    if (d->json) {
        fprintf(f, "%s{\"kind\": \"%s\", \"what\": \"%s\", \"table\": ", d->shown ? ", " : "",
                kind_name[kind], what);
        inspect_json_string(f, table, strlen(table));
        fputs(", \"key\": ", f);
        if (pk)
            inspect_json_sql_list(f, pk, t->npk);
        else
            fputs("null", f);
        fputs(", \"column\": ", f);
        if (column)
            inspect_json_string(f, column, strlen(column));
        else
            fputs("null", f);
        fputs(", \"a\": ", f);
        side_json(a);
        fputs(", \"b\": ", f);
        side_json(b);
        fputc('}', f);
    } else {
        inspect_text(f, table, strlen(table));
        if (pk) {
            fputc(' ', f);
            inspect_sql_list(f, pk, t->npk);
        }
        fputs(": ", f);
        if (column) {
            inspect_text(f, column, strlen(column));
            fputs(": ", f);
        }
        if (note)
            fprintf(f, "%s: ", note);
        if (!a->present || !b->present) {
            fprintf(f, "only in %s: ", a->present ? "A" : "B");
            side_text(a->present ? a : b);
        } else {
            side_text(a);
            fputs(" vs ", f);
            side_text(b);
        }
        fputc('\n', f);
    }
    d->shown++;
}

/* Table-level difference with a plain message on each side. */
static void emit_table(diff_t *d, const char *what, const char *table, const char *column,
                       const char *note, const char *ta, const char *tb)
{
    side_t a = {0}, b = {0};
    a.present = ta != NULL;
    a.text = ta;
    b.present = tb != NULL;
    b.text = tb;
    emit(d, K_META, what, NULL, table, NULL, column, note, &a, &b);
}

static int same_value(const knit_value_t *x, const knit_value_t *y)
{
    return x->type == y->type && knit_value_cmp(x, y) == 0;
}

static int same_elements(const knit_orset_t *x, const knit_orset_t *y)
{
    if (x->nelems != y->nelems)
        return 0;
    for (size_t i = 0; i < x->nelems; i++)
        if (!same_value(&x->elems[i].v, &y->elems[i].v))
            return 0;
    return 1;
}

/* Key order of two rows of the same key shape, as SQLite orders them. */
static int key_cmp(const knit_value_t *x, const knit_value_t *y, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        int c = knit_value_cmp(&x[i], &y[i]);
        if (c)
            return c;
    }
    return 0;
}

/* A column both replicas track, alike: its index in each table. */
typedef struct colpair_s {
    uint32_t ca, cb; /* column indexes in A's and B's table */
} colpair_t;

/* Loads an OR-set cell's state and its canonical bytes.  *ok = 0 when the
** stored state cannot be read. */
static int load_set(knit_t *k, ktable_t *t, const knit_value_t *pk, uint32_t c, knit_orset_t *s,
                    uint8_t **canon, size_t *n, int *ok)
{
    int found = 0, rc = knit__set_load(k, t, pk, c, s, &found);
    *canon = NULL;
    *n = 0;
    *ok = 1;
    if (rc == KNIT_ECORRUPT) {
        knit_orset_init(s);
        *ok = 0;
        return 0;
    }
    if (rc)
        return rc;
    rc = knit_orset_canonical(s, k->sites, k->nsites, canon, n);
    if (rc == KNIT_EINVAL) { /* a site index _knit_sites lacks */
        *ok = 0;
        rc = 0;
    }
    return rc;
}

static int compare_cell(diff_t *d, ktable_t *ta, ktable_t *tb, inspect_rows_t *ra,
                        inspect_rows_t *rb, colpair_t p)
{
    const kcell_t *x = &ra->cells[p.ca + 1], *y = &rb->cells[p.cb + 1];
    const char *col = ta->cols[p.ca];
    side_t a = {0}, b = {0};
    int rc = 0;
    if (!x->hlc && !y->hlc)
        return 0; /* neither wrote it in this life: the digest skips it too */
    a.present = b.present = 1;
    a.has_stamp = b.has_stamp = 1;
    a.hlc = x->hlc;
    b.hlc = y->hlc;
    a.site = knit__site_get(d->a, x->site);
    b.site = knit__site_get(d->b, y->site);
    if (!ta->orset[p.ca]) {
        int same_stamp = x->hlc == y->hlc && (!x->hlc || knit_site_cmp(a.site, b.site) == 0);
        a.value = &ra->vals[p.ca];
        b.value = &rb->vals[p.cb];
        if (!same_value(a.value, b.value))
            emit(d, K_CELL, "value", ta, ta->name, ra->pk, col, NULL, &a, &b);
        else if (!same_stamp)
            emit(d, K_META, "stamp", ta, ta->name, ra->pk, col, "stamps differ", &a, &b);
        return 0;
    }
    {
        knit_orset_t sa, sb;
        uint8_t *ca = NULL, *cb = NULL;
        size_t na = 0, nb = 0;
        int oka = 1, okb = 1;
        knit_orset_init(&sa);
        knit_orset_init(&sb);
        rc = load_set(d->a, ta, ra->pk, p.ca, &sa, &ca, &na, &oka);
        if (!rc)
            rc = load_set(d->b, tb, rb->pk, p.cb, &sb, &cb, &nb, &okb);
        /* The digest counts an OR-set by its state alone, not its stamp. */
        a.has_stamp = b.has_stamp = 0;
        a.set = &sa;
        b.set = &sb;
        if (!rc && (!oka || !okb)) {
            side_t ua = {0}, ub = {0};
            ua.present = ub.present = 1;
            ua.text = oka ? "readable" : "unreadable (see verify)";
            ub.text = okb ? "readable" : "unreadable (see verify)";
            emit(d, K_META, "orset_state", ta, ta->name, ra->pk, col, "OR-set state", &ua, &ub);
        } else if (!rc && (na != nb || (na && memcmp(ca, cb, na) != 0))) {
            if (!same_elements(&sa, &sb))
                emit(d, K_CELL, "elements", ta, ta->name, ra->pk, col, NULL, &a, &b);
            else
                emit(d, K_META, "dots", ta, ta->name, ra->pk, col,
                     "same elements, different dots or removed dots", &a, &b);
        }
        knit__free(ca);
        knit__free(cb);
        knit_orset_free(&sa);
        knit_orset_free(&sb);
    }
    return rc;
}

static void row_side(diff_t *d, knit_t *k, inspect_rows_t *r, side_t *s)
{
    memset(s, 0, sizeof *s);
    (void)d;
    s->present = 1;
    s->has_cl = 1;
    s->cl = r->cl;
    s->has_stamp = 1;
    s->hlc = r->cells[0].hlc;
    s->site = knit__site_get(k, r->cells[0].site);
}

static int compare_row(diff_t *d, ktable_t *ta, ktable_t *tb, inspect_rows_t *ra,
                       inspect_rows_t *rb, const colpair_t *pairs, uint32_t npairs)
{
    const char *na = inspect_ns_name(&d->nsa, ra->ns), *nb = inspect_ns_name(&d->nsb, rb->ns);
    side_t a, b;
    int rc = 0;
    if (!na || !nb || strcmp(na, nb) != 0) {
        memset(&a, 0, sizeof a);
        memset(&b, 0, sizeof b);
        a.present = b.present = 1;
        a.text = na ? (na[0] ? na : "(unnamed home)") : "(unknown namespace)";
        b.text = nb ? (nb[0] ? nb : "(unnamed home)") : "(unknown namespace)";
        emit(d, K_ROW, "namespace", ta, ta->name, ra->pk, NULL, "namespace", &a, &b);
    }
    row_side(d, d->a, ra, &a);
    row_side(d, d->b, rb, &b);
    if (ra->cl != rb->cl) {
        emit(d, K_ROW, "liveness", ta, ta->name, ra->pk, NULL, NULL, &a, &b);
        return 0; /* cells of different lives are not comparable */
    }
    if (a.hlc != b.hlc || (a.hlc && knit_site_cmp(a.site, b.site) != 0))
        emit(d, K_META, "liveness_stamp", ta, ta->name, ra->pk, NULL, "liveness stamps differ", &a,
             &b);
    if (!ra->cells_ok || !rb->cells_ok) {
        side_t ua = {0}, ub = {0};
        ua.present = ub.present = 1;
        ua.text = ra->cells_ok ? "readable" : "unreadable (see verify)";
        ub.text = rb->cells_ok ? "readable" : "unreadable (see verify)";
        emit(d, K_META, "cells", ta, ta->name, ra->pk, NULL, "cell stamps", &ua, &ub);
        return 0;
    }
    for (uint32_t i = 0; knit_cl_live(ra->cl) && i < npairs && !rc; i++)
        rc = compare_cell(d, ta, tb, ra, rb, pairs[i]);
    return rc;
}

static int compare_table(diff_t *d, ktable_t *ta, ktable_t *tb)
{
    colpair_t pairs[KNIT_MAX_COLS];
    uint32_t npairs = 0, i, j;
    inspect_rows_t ra, rb;
    int rc, ha, hb;

    /* Keys must have the same shape for rows to be matched at all. */
    int same_key = ta->npk == tb->npk;
    for (i = 0; same_key && i < ta->npk; i++)
        same_key = strcmp(ta->pk[i], tb->pk[i]) == 0;
    if (!same_key) {
        char ka[256] = "", kb[256] = "";
        size_t oa = 0, ob = 0;
        for (i = 0; i < ta->npk && oa < sizeof ka; i++)
            oa += (size_t)snprintf(ka + oa, sizeof ka - oa, "%s%s", i ? ", " : "", ta->pk[i]);
        for (i = 0; i < tb->npk && ob < sizeof kb; i++)
            ob += (size_t)snprintf(kb + ob, sizeof kb - ob, "%s%s", i ? ", " : "", tb->pk[i]);
        emit_table(d, "key_columns", ta->name, NULL, "key columns differ, rows not compared", ka,
                   kb);
        return 0;
    }
    for (i = 0; i < ta->ncols; i++) {
        for (j = 0; j < tb->ncols && strcmp(ta->cols[i], tb->cols[j]) != 0; j++)
            ;
        if (j == tb->ncols) {
            emit_table(d, "column_only_in_a", ta->name, ta->cols[i], NULL,
                       ta->orset[i] ? "orset" : "lww", NULL);
        } else if (ta->orset[i] != tb->orset[j]) {
            emit_table(d, "column_kind", ta->name, ta->cols[i], "kind",
                       ta->orset[i] ? "orset" : "lww", tb->orset[j] ? "orset" : "lww");
        } else {
            pairs[npairs].ca = i;
            pairs[npairs++].cb = j;
        }
    }
    for (j = 0; j < tb->ncols; j++) {
        for (i = 0; i < ta->ncols && strcmp(ta->cols[i], tb->cols[j]) != 0; i++)
            ;
        if (i == ta->ncols)
            emit_table(d, "column_only_in_b", ta->name, tb->cols[j], NULL, NULL,
                       tb->orset[j] ? "orset" : "lww");
    }
    if ((rc = inspect_rows_open(&ra, d->a, ta, NULL)) != 0)
        return rc;
    if ((rc = inspect_rows_open(&rb, d->b, tb, NULL)) != 0) {
        inspect_rows_close(&ra);
        return rc;
    }
    ha = inspect_rows_next(&ra);
    hb = ha < 0 ? 0 : inspect_rows_next(&rb);
    while (ha > 0 || hb > 0) {
        side_t a, b;
        int c = ha <= 0 ? 1 : hb <= 0 ? -1 : key_cmp(ra.pk, rb.pk, ta->npk);
        if (c < 0) {
            row_side(d, d->a, &ra, &a);
            memset(&b, 0, sizeof b);
            emit(d, K_ROW, "only_in_a", ta, ta->name, ra.pk, NULL, NULL, &a, &b);
            ha = inspect_rows_next(&ra);
        } else if (c > 0) {
            memset(&a, 0, sizeof a);
            row_side(d, d->b, &rb, &b);
            emit(d, K_ROW, "only_in_b", ta, ta->name, rb.pk, NULL, NULL, &a, &b);
            hb = inspect_rows_next(&rb);
        } else {
            if ((rc = compare_row(d, ta, tb, &ra, &rb, pairs, npairs)) != 0)
                break;
            ha = inspect_rows_next(&ra);
            hb = inspect_rows_next(&rb);
        }
        if (ha < 0 || hb < 0)
            break;
    }
    if (!rc)
        rc = ha < 0 ? ha : hb < 0 ? hb : 0;
    inspect_rows_close(&ra);
    inspect_rows_close(&rb);
    return rc;
}

static int compare(diff_t *d)
{
    knit_t *a = d->a, *b = d->b;
    int rc = 0;
    for (size_t i = 0; i < a->ntables && !rc; i++) {
        ktable_t *tb = knit__table(b, a->tables[i].name);
        if (!tb)
            emit_table(d, "table_only_in_a", a->tables[i].name, NULL, NULL, "tracked", NULL);
        else
            rc = compare_table(d, &a->tables[i], tb);
    }
    for (size_t i = 0; i < b->ntables && !rc; i++)
        if (!knit__table(a, b->tables[i].name))
            emit_table(d, "table_only_in_b", b->tables[i].name, NULL, NULL, NULL, "tracked");
    return rc;
}

static void header(const char *label, const char *path, knit_t *k, int json)
{
    char sh[9];
    if (json) {
        fputs("{\"replica\": ", stdout);
        inspect_json_string(stdout, path, strlen(path));
        fputs(", \"site\": \"", stdout);
        inspect_hex(stdout, k->site.b, 16);
        fputs("\"}", stdout);
        return;
    }
    inspect_site_short(&k->site, sh);
    printf("%s: ", label);
    inspect_text(stdout, path, strlen(path));
    printf(" (site %s)\n", sh);
}

static int run(diff_t *d, const char *pa, const char *pb)
{
    uint64_t total;
    int rc;
    if (inspect_read_begin(CMD, d->a) != 0)
        return INSPECT_EXIT_ERROR;
    if (inspect_read_begin(CMD, d->b) != 0) {
        inspect_read_end(d->a);
        return INSPECT_EXIT_ERROR;
    }
    if ((rc = inspect_ns_load(d->a, &d->nsa)) != 0 || (rc = inspect_ns_load(d->b, &d->nsb)) != 0)
        goto out;
    if (d->json) {
        fputs("{\"a\": ", stdout);
        header("A", pa, d->a, 1);
        fputs(", \"b\": ", stdout);
        header("B", pb, d->b, 1);
        fputs(", \"differences\": [", stdout);
    } else {
        header("A", pa, d->a, 0);
        header("B", pb, d->b, 0);
    }
    rc = compare(d);
out:
    inspect_read_end(d->a);
    inspect_read_end(d->b);
    if (rc) {
        /* Which replica failed: the one whose message is set. */
        knit_t *k = knit_errmsg(d->b)[0] ? d->b : d->a;
        return inspect_knit_fail(CMD, k, rc);
    }
    total = d->count[K_ROW] + d->count[K_CELL] + d->count[K_META];
    if (d->json) {
        printf("], \"equal\": %s, \"counts\": {\"rows\": %llu, \"cells\": %llu, "
               "\"metadata\": %llu, \"total\": %llu}, \"shown\": %llu}\n",
               total ? "false" : "true", (unsigned long long)d->count[K_ROW],
               (unsigned long long)d->count[K_CELL], (unsigned long long)d->count[K_META],
               (unsigned long long)total, (unsigned long long)d->shown);
    } else if (total) {
        if (d->shown < total)
            printf("(%llu more not shown: --limit %llu)\n", (unsigned long long)(total - d->shown),
                   (unsigned long long)d->limit);
        printf("%llu difference%s: %llu row, %llu cell, %llu metadata\n", (unsigned long long)total,
               total == 1 ? "" : "s", (unsigned long long)d->count[K_ROW],
               (unsigned long long)d->count[K_CELL], (unsigned long long)d->count[K_META]);
    } else {
        fputs("no differences: same tables, rows, cells and stamps\n", stdout);
    }
    return total ? INSPECT_EXIT_FINDING : INSPECT_EXIT_OK;
}

int cmd_diff(int argc, char **argv) /* see inspect_util.h */
{
    const char *pos[2], *limit_s = NULL;
    int json = 0, npos, rc;
    const inspect_opt_t opts[] = {
        {"--json", NULL, &json}, {"--limit", &limit_s, NULL}, {NULL, NULL, NULL}};
    diff_t d;

    memset(&d, 0, sizeof d);
    if ((rc = inspect_args(CMD, argc, argv, opts, help, pos, 2, &npos)) >= 0)
        return rc;
    if (npos != 2)
        return inspect_usage_err(CMD, "expected two replicas, A and B");
    if (limit_s && inspect_u64_arg(CMD, "--limit", limit_s, &d.limit) != 0)
        return INSPECT_EXIT_ERROR;
    if (limit_s && d.limit == 0)
        return inspect_usage_err(CMD, "--limit must be at least 1");
    d.json = json;
    if (inspect_open_replica(CMD, pos[0], &d.a) != 0)
        return INSPECT_EXIT_ERROR;
    if (inspect_open_replica(CMD, pos[1], &d.b) != 0) {
        knit_close(d.a);
        return INSPECT_EXIT_ERROR;
    }
    rc = run(&d, pos[0], pos[1]);
    inspect_ns_free(&d.nsa);
    inspect_ns_free(&d.nsb);
    knit_close(d.a);
    knit_close(d.b);
    return inspect_finish(CMD, rc);
}
