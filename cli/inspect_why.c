/*
** inspect_why.c: `sync-inspect why`, which explains one row, or one cell,
** of a tracked table: the value, the stamp that won it (HLC as time and
** counter, and the site that wrote it, marked local or remote), the row's
** namespace and causal length, and whether the relay has acknowledged it.
** For an OR-set column it lists every element with the dots that keep it
** in the set, and the dots the set has seen removed.
**
** An OR-set state is a dot store plus a causal context (crdt/orset.h):
**
**   context   vv {site: n} = dots (site, 1..n) seen, plus a "cloud" of
**             dots seen beyond vv
**   elements  each with its live dots, all inside the context
**   removed   context minus live dots: adds that a remove has observed
**
** Removed dots are shown per site as ranges ("1a2b3c4d: 1-3,5"); a site
** whose dots are all live has none.
*/
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "inspect_replica.h"

#define CMD "why"
#define MAX_TEXT_RANGES 32 /* text output lists at most this many per site */

static void help(void)
{
    fputs("usage: sync-inspect why [--json] REPLICA TABLE KEY [COLUMN]\n"
          "\n"
          "Explain why a row, or one of its cells, holds what it holds: the value;\n"
          "the stamp that won it (hybrid logical clock as ISO-8601 time and\n"
          "counter, and the site that wrote it, marked (local) when it is this\n"
          "replica); the row's namespace and causal length (odd = live, even =\n"
          "deleted); and the cell's status: acknowledged or pending for local\n"
          "writes, received for writes from elsewhere.  For an OR-set column, every\n"
          "element with its dots (site:counter) and the removed dots per site.\n"
          "\n"
          "KEY is the primary key as SQL literals, one per key column, separated by\n"
          "commas: 42, 'alice', X'00ff', -1.5, or 'alice', 3 for a composite key.\n"
          "Quote it for the shell: sync-inspect why app.db notes \"'n1'\".  Values\n"
          "take the key columns' types as on insert ('7' finds 7 in an INTEGER\n"
          "column).  Only literals are accepted; nothing typed here runs as SQL.\n"
          "\n"
          "  --json    one JSON document instead of text\n"
          "\n"
          "Exit status: 0 explained, 1 no such row (knit holds no metadata for the\n"
          "key), 2 usage error, unknown table or column, or unreadable replica.\n",
          stdout);
}

/* A state's removed dots of one site, as ranges [a, b]. */
typedef struct range_s {
    uint64_t a, b; /* inclusive */
} range_t;

typedef struct ranges_s {
    range_t *r;    /* ranges, ascending, not adjacent */
    size_t n, cap; /* count, capacity */
} ranges_t;

static int ranges_add(ranges_t *rs, uint64_t a, uint64_t b)
{
    if (rs->n && rs->r[rs->n - 1].b + 1 == a) {
        rs->r[rs->n - 1].b = b;
        return 0;
    }
    if (rs->n == rs->cap) {
        size_t c = rs->cap ? rs->cap * 2 : 16;
        range_t *p = knit__realloc(rs->r, c * sizeof *p);
        if (!p)
            return KNIT_ENOMEM;
        rs->r = p;
        rs->cap = c;
    }
    rs->r[rs->n].a = a;
    rs->r[rs->n].b = b;
    rs->n++;
    return 0;
}

/* [a, b] minus the sorted points live[0..nlive), appended to rs. */
static int ranges_sub(ranges_t *rs, uint64_t a, uint64_t b, const uint64_t *live, size_t nlive)
{
    uint64_t cur = a;
    int rc = 0;
    for (size_t i = 0; i < nlive && !rc; i++) {
        if (live[i] < cur || live[i] > b)
            continue;
        if (live[i] > cur)
            rc = ranges_add(rs, cur, live[i] - 1);
        cur = live[i] + 1;
    }
    if (!rc && cur <= b && cur >= a)
        rc = ranges_add(rs, cur, b);
    return rc;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The removed dots of `site` in s. */
static int removed_of(const knit_orset_t *s, uint32_t site, ranges_t *rs)
{
    uint64_t *live = NULL, vv = knit_vv_get(&s->vv, site);
    size_t nlive = 0, cap = 0;
    int rc = 0;
    memset(rs, 0, sizeof *rs);
    for (size_t e = 0; e < s->nelems && !rc; e++)
        for (size_t d = 0; d < s->elems[e].ndots && !rc; d++) {
            if (s->elems[e].dots[d].site != site)
                continue;
            if (nlive == cap) {
                size_t c = cap ? cap * 2 : 16;
                uint64_t *p = knit__realloc(live, c * sizeof *p);
                if (!p) {
                    rc = KNIT_ENOMEM;
                    break;
                }
                live = p;
                cap = c;
            }
            live[nlive++] = s->elems[e].dots[d].n;
        }
    if (!rc && nlive) {
        size_t j = 0;
        /* Gathered element by element: sort the counters, drop repeats. */
        qsort(live, nlive, sizeof *live, cmp_u64);
        for (size_t i = 1; i < nlive; i++)
            if (live[i] != live[j])
                live[++j] = live[i];
        nlive = j + 1;
    }
    if (!rc && vv)
        rc = ranges_sub(rs, 1, vv, live, nlive);
    for (size_t i = 0; i < s->ncloud && !rc; i++)
        if (s->cloud[i].site == site)
            rc = ranges_sub(rs, s->cloud[i].n, s->cloud[i].n, live, nlive);
    knit__free(live);
    if (rc) {
        knit__free(rs->r);
        memset(rs, 0, sizeof *rs);
    }
    return rc;
}

/* The sites a state's context mentions, ascending (vv and cloud are both
** sorted by site). */
static size_t context_sites(const knit_orset_t *s, uint32_t *out, size_t max)
{
    size_t n = 0, i = 0, j = 0;
    while ((i < s->vv.len || j < s->ncloud) && n < max) {
        uint32_t a = i < s->vv.len ? s->vv.e[i].site : UINT32_MAX;
        uint32_t b = j < s->ncloud ? s->cloud[j].site : UINT32_MAX;
        uint32_t m = a < b ? a : b;
        if (!n || out[n - 1] != m)
            out[n++] = m;
        if (a == m)
            i++;
        else
            j++;
    }
    return n;
}

/* Context of one explanation. */
typedef struct why_s {
    knit_t *k;         /* replica */
    ktable_t *t;       /* table */
    inspect_rows_t *r; /* the row */
    uint64_t acked;    /* highest acknowledged local version */
    int json;          /* output form */
} why_t;

static const char *status_of(why_t *w, const kcell_t *c)
{
    if (c->site != w->k->site_idx)
        return "received";
    return c->ver <= w->acked ? "acknowledged" : "pending";
}

static void stamp_text(why_t *w, const kcell_t *c)
{
    inspect_hlc_text(stdout, c->hlc);
    fputs(" by ", stdout);
    inspect_site_text(stdout, w->k, c->site);
    printf(", version %llu, %s", (unsigned long long)c->ver, status_of(w, c));
}

static void stamp_json(why_t *w, const kcell_t *c)
{
    inspect_hlc_json(stdout, c->hlc);
    fputs(", \"site\": ", stdout);
    inspect_site_json(stdout, w->k, c->site);
    printf(", \"local\": %s, \"version\": %llu, \"status\": \"%s\"",
           c->site == w->k->site_idx ? "true" : "false", (unsigned long long)c->ver,
           status_of(w, c));
}

/* The dots of one element, text: "1a2b3c4d:2, 99aa88bb:1". */
static void dots_text(why_t *w, const knit_orset_elem_t *e)
{
    for (size_t d = 0; d < e->ndots; d++) {
        if (d)
            fputs(", ", stdout);
        inspect_site_text(stdout, w->k, e->dots[d].site);
        printf(":%llu", (unsigned long long)e->dots[d].n);
    }
}

static int set_text(why_t *w, const knit_orset_t *s)
{
    uint32_t *sites = knit__malloc((s->vv.len + s->ncloud + 1) * sizeof *sites);
    size_t ns = sites ? context_sites(s, sites, s->vv.len + s->ncloud) : 0;
    int any = 0, rc = sites ? 0 : KNIT_ENOMEM;
    for (size_t e = 0; e < s->nelems; e++) {
        fputs("    element ", stdout);
        inspect_json_value(stdout, &s->elems[e].v);
        fputs(": dots ", stdout);
        dots_text(w, &s->elems[e]);
        fputc('\n', stdout);
    }
    if (!s->nelems)
        fputs("    no elements\n", stdout);
    for (size_t i = 0; i < ns && !rc; i++) {
        ranges_t rs;
        if ((rc = removed_of(s, sites[i], &rs)) != 0)
            break;
        if (rs.n) {
            fputs(any ? "                  " : "    removed dots: ", stdout);
            any = 1;
            inspect_site_text(stdout, w->k, sites[i]);
            fputs(": ", stdout);
            for (size_t j = 0; j < rs.n && j < MAX_TEXT_RANGES; j++) {
                if (j)
                    fputc(',', stdout);
                if (rs.r[j].a == rs.r[j].b)
                    printf("%llu", (unsigned long long)rs.r[j].a);
                else
                    printf("%llu-%llu", (unsigned long long)rs.r[j].a,
                           (unsigned long long)rs.r[j].b);
            }
            if (rs.n > MAX_TEXT_RANGES)
                printf(" and %zu more ranges (see --json)", rs.n - MAX_TEXT_RANGES);
            fputc('\n', stdout);
        }
        knit__free(rs.r);
    }
    if (!rc && !any)
        fputs("    removed dots: none\n", stdout);
    knit__free(sites);
    return rc;
}

static int set_json(why_t *w, const knit_orset_t *s)
{
    uint32_t *sites = knit__malloc((s->vv.len + s->ncloud + 1) * sizeof *sites);
    size_t ns = sites ? context_sites(s, sites, s->vv.len + s->ncloud) : 0;
    int rc = sites ? 0 : KNIT_ENOMEM, first = 1;
    fputs(", \"elements\": [", stdout);
    for (size_t e = 0; e < s->nelems; e++) {
        fputs(e ? ", {\"value\": " : "{\"value\": ", stdout);
        inspect_json_value(stdout, &s->elems[e].v);
        fputs(", \"dots\": [", stdout);
        for (size_t d = 0; d < s->elems[e].ndots; d++) {
            fputs(d ? ", {\"site\": " : "{\"site\": ", stdout);
            inspect_site_json(stdout, w->k, s->elems[e].dots[d].site);
            printf(", \"n\": %llu}", (unsigned long long)s->elems[e].dots[d].n);
        }
        fputs("]}", stdout);
    }
    fputs("], \"removed\": [", stdout);
    for (size_t i = 0; i < ns && !rc; i++) {
        ranges_t rs;
        if ((rc = removed_of(s, sites[i], &rs)) != 0)
            break;
        if (rs.n) {
            fputs(first ? "{\"site\": " : ", {\"site\": ", stdout);
            first = 0;
            inspect_site_json(stdout, w->k, sites[i]);
            fputs(", \"ranges\": [", stdout);
            for (size_t j = 0; j < rs.n; j++)
                printf("%s[%llu, %llu]", j ? ", " : "", (unsigned long long)rs.r[j].a,
                       (unsigned long long)rs.r[j].b);
            fputs("]}", stdout);
        }
        knit__free(rs.r);
    }
    fputc(']', stdout);
    knit__free(sites);
    return rc;
}

/* Explains column c (0-based) of the row. */
static int column(why_t *w, uint32_t c)
{
    inspect_rows_t *r = w->r;
    ktable_t *t = w->t;
    const kcell_t *cell = &r->cells[c + 1];
    const char *name = t->cols[c];
    knit_orset_t s;
    int found = 0, rc = 0, set = t->orset[c];
    char *mat = NULL;
    size_t matn = 0;

    if (set) {
        rc = knit__set_load(w->k, t, r->pk, c, &s, &found);
        if (rc == KNIT_ECORRUPT) {
            knit_orset_init(&s);
            found = -1;
            rc = 0;
        }
        if (rc)
            return rc;
        if (found > 0 && knit_orset_json(&s, &mat, &matn) != 0)
            mat = NULL;
    }
    if (w->json) {
        fputs("{\"name\": ", stdout);
        inspect_json_string(stdout, name, strlen(name));
        printf(", \"kind\": \"%s\", \"value\": ", set ? "orset" : "lww");
        if (set) {
            fputc('[', stdout);
            for (size_t e = 0; e < s.nelems; e++) {
                fputs(e ? ", " : "", stdout);
                inspect_json_value(stdout, &s.elems[e].v);
            }
            fputs("], \"column_value\": ", stdout);
        }
        if (r->has_user)
            inspect_json_value(stdout, &r->vals[c]);
        else
            fputs("null", stdout);
        printf(", \"written\": %s", cell->hlc ? "true" : "false");
        if (cell->hlc) {
            fputs(", ", stdout);
            stamp_json(w, cell);
        }
        if (set) {
            printf(", \"state\": \"%s\"", found > 0 ? "ok" : found < 0 ? "corrupt" : "missing");
            rc = set_json(w, &s);
        }
        fputc('}', stdout);
    } else {
        fputs("  ", stdout);
        inspect_text(stdout, name, strlen(name));
        fputs(" = ", stdout);
        if (!r->has_user)
            fputs("(no row in the table)", stdout);
        else if (set && r->vals[c].type == KNIT_TEXT)
            inspect_text(stdout, r->vals[c].u.b.p, r->vals[c].u.b.n);
        else
            inspect_sql_value(stdout, &r->vals[c], 0);
        fputs(set ? "  (OR-set)\n" : "\n", stdout);
        if (cell->hlc) {
            fputs(set ? "    latest op " : "    stamped ", stdout);
            stamp_text(w, cell);
            fputc('\n', stdout);
        } else {
            fputs("    not written in the row's current life\n", stdout);
        }
        if (set && found < 0)
            fputs("    warning: the stored OR-set state cannot be decoded (see verify)\n", stdout);
        else if (set && !found)
            fputs("    no OR-set state is stored for this cell\n", stdout);
        if (set && found > 0 && mat && r->has_user &&
            (r->vals[c].type != KNIT_TEXT || r->vals[c].u.b.n != matn ||
             memcmp(r->vals[c].u.b.p, mat, matn) != 0)) {
            fputs("    warning: the column differs from its set state, which holds ", stdout);
            inspect_text(stdout, mat, matn);
            fputs(" (see verify)\n", stdout);
        }
        if (set)
            rc = set_text(w, &s);
    }
    knit__free(mat);
    if (set)
        knit_orset_free(&s);
    return rc;
}

static int explain(why_t *w, const inspect_ns_t *ns, int col, uint64_t unstamped, const char *path)
{
    inspect_rows_t *r = w->r;
    ktable_t *t = w->t;
    int live = knit_cl_live(r->cl), rc = 0;
    uint32_t c;
    if (w->json) {
        fputs("{\"replica\": ", stdout);
        inspect_json_string(stdout, path, strlen(path));
        fputs(", \"table\": ", stdout);
        inspect_json_string(stdout, t->name, strlen(t->name));
        fputs(", \"key\": ", stdout);
        inspect_json_sql_list(stdout, r->pk, t->npk);
        fputs(", \"found\": true, \"namespace\": ", stdout);
        inspect_ns_json(stdout, ns, r->ns);
        printf(", \"cl\": %llu, \"live\": %s, \"row_in_table\": %s, \"unstamped\": %llu, "
               "\"acked\": %llu, \"metadata_ok\": %s, \"liveness\": ",
               (unsigned long long)r->cl, live ? "true" : "false", r->has_user ? "true" : "false",
               (unsigned long long)unstamped, (unsigned long long)w->acked,
               r->cells_ok ? "true" : "false");
        if (r->cells[0].hlc) {
            fputc('{', stdout);
            stamp_json(w, &r->cells[0]);
            fputc('}', stdout);
        } else {
            fputs("null", stdout);
        }
        fputs(", \"columns\": [", stdout);
        for (c = 0; live && c < t->ncols && !rc; c++) {
            if (col >= 0 && (uint32_t)col != c)
                continue;
            if (col < 0 && c)
                fputs(", ", stdout);
            rc = column(w, c);
        }
        fputs("]}\n", stdout);
        return rc;
    }
    inspect_row_text(stdout, t, r->pk);
    fputs(" in ", stdout);
    inspect_ns_text(stdout, ns, r->ns);
    printf(": %s (causal length %llu)\n", live ? "live" : "deleted", (unsigned long long)r->cl);
    if (!r->cells_ok)
        fputs("  warning: the row's cell stamps cannot be decoded (see verify)\n", stdout);
    fputs("  liveness: ", stdout);
    if (r->cells[0].hlc) {
        fputs("stamped ", stdout);
        stamp_text(w, &r->cells[0]);
    } else {
        fputs("not stamped", stdout);
    }
    fputc('\n', stdout);
    if (live && !r->has_user && r->user_table)
        fputs("  warning: live in metadata but missing from the table (see verify)\n", stdout);
    if (!live && r->has_user)
        fputs("  warning: deleted in metadata but present in the table (see verify)\n", stdout);
    if (unstamped)
        printf("  note: %llu captured write%s to this row %s not stamped yet: values are the "
               "table's, stamps are from before %s\n",
               (unsigned long long)unstamped, unstamped == 1 ? "" : "s",
               unstamped == 1 ? "is" : "are", unstamped == 1 ? "it" : "them");
    if (!live) {
        printf("  a deleted row holds no column values; an insert starts life %llu\n",
               (unsigned long long)r->cl + 1);
        return 0;
    }
    for (c = 0; c < t->ncols && !rc; c++)
        if (col < 0 || (uint32_t)col == c)
            rc = column(w, c);
    return rc;
}

/* The tracked table named `name`; SQLite names are case-insensitive (for
** ASCII letters), so an exact match is tried first, then one ignoring case. */
static ktable_t *find_table(knit_t *k, const char *name)
{
    ktable_t *t = knit__table(k, name);
    for (size_t i = 0; !t && i < k->ntables; i++)
        if (strcasecmp(k->tables[i].name, name) == 0)
            t = &k->tables[i];
    return t;
}

/* Index of column `name` in names[0..n), exact match first, or -1. */
static int find_name(char **names, uint32_t n, const char *name)
{
    for (uint32_t i = 0; i < n; i++)
        if (strcmp(names[i], name) == 0)
            return (int)i;
    for (uint32_t i = 0; i < n; i++)
        if (strcasecmp(names[i], name) == 0)
            return (int)i;
    return -1;
}

static int lookup(const char *path, knit_t *k, const char *table, const char *keyarg,
                  const char *colarg, int json)
{
    ktable_t *t = find_table(k, table);
    inspect_key_t key;
    inspect_rows_t r;
    inspect_ns_t ns;
    why_t w;
    uint64_t unstamped = 0;
    int col = -1, rc, found;

    if (!t) {
        inspect_err(CMD, "table '%s' is not tracked in '%s'%s", table, path,
                    k->ntables ? "; tracked tables:" : " (no table is tracked)");
        for (size_t i = 0; i < k->ntables; i++)
            inspect_err(CMD, "  %s", k->tables[i].name);
        return INSPECT_EXIT_ERROR;
    }
    if (colarg) {
        col = find_name(t->cols, t->ncols, colarg);
        if (col < 0 && find_name(t->pk, t->npk, colarg) >= 0) {
            inspect_err(CMD,
                        "'%s' is a key column of %s: it has no stamp of its own; "
                        "leave COLUMN out to explain the row",
                        colarg, t->name);
            return INSPECT_EXIT_ERROR;
        }
        if (col < 0) {
            inspect_err(CMD, "table %s has no tracked column '%s'", table, colarg);
            return INSPECT_EXIT_ERROR;
        }
    }
    if (inspect_parse_key(CMD, k, t, keyarg, &key) != 0)
        return INSPECT_EXIT_ERROR;
    memset(&w, 0, sizeof w);
    memset(&r, 0, sizeof r);
    w.k = k;
    w.t = t;
    w.r = &r;
    w.json = json;
    rc = knit_acked(k, &w.acked);
    if (!rc)
        rc = inspect_ns_load(k, &ns);
    if (rc) {
        inspect_key_free(&key);
        return inspect_knit_fail(CMD, k, rc);
    }
    if (!(rc = inspect_unstamped(k, t, key.v, &unstamped)))
        rc = inspect_rows_open(&r, k, t, key.v);
    found = rc ? rc : inspect_rows_next(&r);
    if (found == 1) {
        rc = explain(&w, &ns, col, unstamped, path);
    } else if (found == 0 && json) {
        fputs("{\"replica\": ", stdout);
        inspect_json_string(stdout, path, strlen(path));
        fputs(", \"table\": ", stdout);
        inspect_json_string(stdout, t->name, strlen(t->name));
        fputs(", \"key\": ", stdout);
        inspect_json_sql_list(stdout, key.v, key.n);
        printf(", \"found\": false, \"unstamped\": %llu}\n", (unsigned long long)unstamped);
    } else if (found == 0) {
        inspect_row_text(stdout, t, key.v);
        fputs(": no such row: knit holds no metadata for this key", stdout);
        if (unstamped)
            printf("; %llu captured write%s to it %s not stamped yet\n",
                   (unsigned long long)unstamped, unstamped == 1 ? "" : "s",
                   unstamped == 1 ? "is" : "are");
        else
            fputs(" (never written here, nor received)\n", stdout);
    } else {
        rc = found;
    }
    inspect_rows_close(&r);
    inspect_ns_free(&ns);
    inspect_key_free(&key);
    if (rc)
        return inspect_knit_fail(CMD, k, rc);
    return found == 1 ? INSPECT_EXIT_OK : INSPECT_EXIT_FINDING;
}

int cmd_why(int argc, char **argv) /* see inspect_util.h */
{
    const char *pos[4];
    int json = 0, npos, rc;
    const inspect_opt_t opts[] = {{"--json", NULL, &json}, {NULL, NULL, NULL}};
    knit_t *k = NULL;

    if ((rc = inspect_args(CMD, argc, argv, opts, help, pos, 4, &npos)) >= 0)
        return rc;
    if (npos < 3)
        return inspect_usage_err(CMD, "expected REPLICA TABLE KEY [COLUMN]");
    if (inspect_open_replica(CMD, pos[0], &k) != 0)
        return INSPECT_EXIT_ERROR;
    rc = inspect_read_begin(CMD, k);
    if (!rc) {
        rc = lookup(pos[0], k, pos[1], pos[2], npos > 3 ? pos[3] : NULL, json);
        inspect_read_end(k);
    }
    knit_close(k);
    return inspect_finish(CMD, rc);
}
