/*
** schema.c: a replica's tracked schema as a value, and its fingerprint
** (format and canonical form in schema.h).
**
** The schema is read from _knit_tables with plain SQL rather than from the
** ktable_t cache, so it works on a read-only handle (sync-inspect) and
** inside any transaction, and never repairs or reloads anything.
*/
#include "schema.h"

#include <bearssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "replica.h"
#include "value.h"

#define FP_TAG "knit.schema.1"

/* ---------------------------------------------------------------------- */
/* Canonical form and fingerprint                                         */

static int name_ok(const char *s)
{
    return s && s[0] && strlen(s) <= KNIT_SCHEMA_MAX_NAME;
}

static int fail(const char **why, int rc, const char *msg)
{
    if (why)
        *why = msg;
    return rc;
}

int knit__schema_check(const knit_schema_t *s, const char **why) /* see schema.h */
{
    if (s->ntables > KNIT_SCHEMA_MAX_TABLES)
        return fail(why, KNIT_ETOOBIG, "schema has too many tables");
    if (s->ntables && !s->tables)
        return fail(why, KNIT_EINVAL, "schema tables missing");
    for (size_t i = 0; i < s->ntables; i++) {
        const knit_schema_table_t *t = &s->tables[i];
        if (!t->name || !t->name[0])
            return fail(why, KNIT_EINVAL, "schema table without a name");
        if (strlen(t->name) > KNIT_SCHEMA_MAX_NAME)
            return fail(why, KNIT_ETOOBIG, "schema table name too long");
        if (i && strcmp(s->tables[i - 1].name, t->name) >= 0)
            return fail(why, KNIT_EINVAL, "schema tables not in ascending name order");
        if (t->nkeys == 0 || !t->keys)
            return fail(why, KNIT_EINVAL, "schema table without key columns");
        if ((uint64_t)t->nkeys + t->ncols > KNIT_SCHEMA_MAX_COLS)
            return fail(why, KNIT_ETOOBIG, "schema table has too many columns");
        if (t->ncols && !t->cols)
            return fail(why, KNIT_EINVAL, "schema columns missing");
        for (uint32_t c = 0; c < t->ncols; c++) {
            if (!t->cols[c].name || !t->cols[c].name[0])
                return fail(why, KNIT_EINVAL, "schema column without a name");
            if (strlen(t->cols[c].name) > KNIT_SCHEMA_MAX_NAME)
                return fail(why, KNIT_ETOOBIG, "schema column name too long");
            if (c && strcmp(t->cols[c - 1].name, t->cols[c].name) >= 0)
                return fail(why, KNIT_EINVAL, "schema columns not in ascending name order");
            if (t->cols[c].orset != 0 && t->cols[c].orset != 1)
                return fail(why, KNIT_EINVAL, "schema column kind unknown");
        }
        for (uint32_t k = 0; k < t->nkeys; k++) {
            if (!t->keys[k] || !t->keys[k][0])
                return fail(why, KNIT_EINVAL, "schema key column without a name");
            if (strlen(t->keys[k]) > KNIT_SCHEMA_MAX_NAME)
                return fail(why, KNIT_ETOOBIG, "schema key column name too long");
            for (uint32_t j = 0; j < k; j++)
                if (strcmp(t->keys[j], t->keys[k]) == 0)
                    return fail(why, KNIT_EINVAL, "schema key column named twice");
            /* Columns are sorted: binary search. */
            uint32_t lo = 0, hi = t->ncols;
            while (lo < hi) {
                uint32_t mid = lo + (hi - lo) / 2;
                int d = strcmp(t->cols[mid].name, t->keys[k]);
                if (d == 0)
                    return fail(why, KNIT_EINVAL, "schema key column is also a column");
                if (d < 0)
                    lo = mid + 1;
                else
                    hi = mid;
            }
        }
    }
    return 0;
}

static void put_num(br_sha256_context *h, uint64_t v)
{
    uint8_t b[KNIT_VARINT_MAX];
    br_sha256_update(h, b, knit_varint_put(b, v));
}

static void put_str(br_sha256_context *h, const char *s)
{
    size_t n = strlen(s);
    put_num(h, n);
    br_sha256_update(h, s, n);
}

void knit__schema_fingerprint(const knit_schema_t *s,
                              uint8_t fp[KNIT_SCHEMA_FP_LEN]) /* see schema.h */
{
    br_sha256_context h;
    uint8_t out[32];
    br_sha256_init(&h);
    put_str(&h, FP_TAG);
    put_num(&h, s->ntables);
    for (size_t i = 0; i < s->ntables; i++) {
        const knit_schema_table_t *t = &s->tables[i];
        put_str(&h, t->name);
        put_num(&h, t->nkeys);
        for (uint32_t k = 0; k < t->nkeys; k++)
            put_str(&h, t->keys[k]);
        put_num(&h, t->ncols);
        for (uint32_t c = 0; c < t->ncols; c++) {
            uint8_t kind = (uint8_t)(t->cols[c].orset != 0);
            put_str(&h, t->cols[c].name);
            br_sha256_update(&h, &kind, 1);
        }
    }
    br_sha256_out(&h, out);
    memcpy(fp, out, KNIT_SCHEMA_FP_LEN);
}

void knit__schema_fp_hex(const uint8_t fp[KNIT_SCHEMA_FP_LEN],
                         char out[KNIT_SCHEMA_FP_HEX]) /* see schema.h */
{
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < KNIT_SCHEMA_FP_LEN; i++) {
        out[2 * i] = hex[fp[i] >> 4];
        out[2 * i + 1] = hex[fp[i] & 15];
    }
    out[2 * KNIT_SCHEMA_FP_LEN] = '\0';
}

/* ---------------------------------------------------------------------- */
/* Packing                                                                */

static int cmp_table(const void *a, const void *b)
{
    return strcmp(((const knit_schema_table_t *)a)->name, ((const knit_schema_table_t *)b)->name);
}

static int cmp_col(const void *a, const void *b)
{
    return strcmp(((const knit_schema_col_t *)a)->name, ((const knit_schema_col_t *)b)->name);
}

/* Bump allocator over the one block (pointer-aligned pieces first, then
** strings). */
typedef struct pack_s {
    char *p;   /* next free byte */
    char *end; /* end of the block */
} pack_t;

static void *take(pack_t *k, size_t n)
{
    void *r = k->p;
    k->p += (n + sizeof(void *) - 1) & ~(sizeof(void *) - 1);
    return r;
}

static const char *take_str(pack_t *k, const char *s)
{
    size_t n = strlen(s) + 1;
    char *r = k->p;
    memcpy(r, s, n);
    k->p += n;
    return r;
}

#define ALIGN(n) (((n) + sizeof(void *) - 1) & ~(sizeof(void *) - 1))

int knit__schema_pack(const knit_schema_t *s, knit_schema_t **out) /* see schema.h */
{
    size_t size = ALIGN(sizeof(knit_schema_t)), strs = 0;
    knit_schema_t *r;
    knit_schema_table_t *tabs;
    pack_t k;
    int rc;

    *out = NULL;
    if (s->ntables > KNIT_SCHEMA_MAX_TABLES)
        return KNIT_ETOOBIG;
    size += ALIGN(s->ntables * sizeof(knit_schema_table_t));
    for (size_t i = 0; i < s->ntables; i++) {
        const knit_schema_table_t *t = &s->tables[i];
        if (!name_ok(t->name) || (uint64_t)t->nkeys + t->ncols > KNIT_SCHEMA_MAX_COLS)
            return t->name && t->name[0] ? KNIT_ETOOBIG : KNIT_EINVAL;
        size += ALIGN(t->nkeys * sizeof(char *)) + ALIGN(t->ncols * sizeof(knit_schema_col_t));
        strs += strlen(t->name) + 1;
        for (uint32_t j = 0; j < t->nkeys; j++) {
            if (!name_ok(t->keys[j]))
                return t->keys[j] && t->keys[j][0] ? KNIT_ETOOBIG : KNIT_EINVAL;
            strs += strlen(t->keys[j]) + 1;
        }
        for (uint32_t j = 0; j < t->ncols; j++) {
            if (!name_ok(t->cols[j].name))
                return t->cols[j].name && t->cols[j].name[0] ? KNIT_ETOOBIG : KNIT_EINVAL;
            strs += strlen(t->cols[j].name) + 1;
        }
    }
    if (!(r = knit__malloc(size + strs)))
        return KNIT_ENOMEM;
    k.p = (char *)r;
    k.end = (char *)r + size + strs;
    take(&k, sizeof *r);
    tabs = take(&k, s->ntables * sizeof *tabs);
    r->tables = s->ntables ? tabs : NULL;
    r->ntables = s->ntables;
    for (size_t i = 0; i < s->ntables; i++) {
        const knit_schema_table_t *t = &s->tables[i];
        tabs[i].nkeys = t->nkeys;
        tabs[i].ncols = t->ncols;
        tabs[i].keys = take(&k, t->nkeys * sizeof(char *));
        tabs[i].cols = take(&k, t->ncols * sizeof(knit_schema_col_t));
    }
    for (size_t i = 0; i < s->ntables; i++) {
        const knit_schema_table_t *t = &s->tables[i];
        const char **keys = (const char **)tabs[i].keys;
        knit_schema_col_t *cols = (knit_schema_col_t *)tabs[i].cols;
        tabs[i].name = take_str(&k, t->name);
        for (uint32_t j = 0; j < t->nkeys; j++)
            keys[j] = take_str(&k, t->keys[j]);
        for (uint32_t j = 0; j < t->ncols; j++) {
            cols[j].name = take_str(&k, t->cols[j].name);
            cols[j].orset = t->cols[j].orset != 0;
        }
        qsort(cols, t->ncols, sizeof *cols, cmp_col);
    }
    qsort(tabs, s->ntables, sizeof *tabs, cmp_table);
    if ((rc = knit__schema_check(r, NULL)) != 0) {
        knit__free(r);
        return rc;
    }
    knit__schema_fingerprint(r, r->fp);
    *out = r;
    return 0;
}

void knit__schema_free(knit_schema_t *s) /* see schema.h */
{
    knit__free(s);
}

/* ---------------------------------------------------------------------- */
/* Reading a replica's schema                                             */

/* Builder: every piece allocated separately, packed at the end. */
typedef struct build_s {
    knit_schema_table_t *tabs; /* tables read so far */
    size_t ntabs;              /* count */
} build_t;

static void build_free(build_t *b)
{
    for (size_t i = 0; i < b->ntabs; i++) {
        knit_schema_table_t *t = &b->tabs[i];
        knit__free((char *)t->name);
        for (uint32_t j = 0; j < t->nkeys; j++)
            knit__free((char *)t->keys[j]);
        for (uint32_t j = 0; j < t->ncols; j++)
            knit__free((char *)t->cols[j].name);
        knit__free((void *)t->keys);
        knit__free((void *)t->cols);
    }
    knit__free(b->tabs);
}

/* The strings of JSON array text `json`, in order, via SQLite's json_each
** (the format _knit_tables keeps). */
static int json_list(knit_t *k, sqlite3_stmt *je, const char *json, char ***out, uint32_t *n)
{
    char **v = NULL;
    uint32_t cnt = 0;
    int rc;
    *out = NULL;
    *n = 0;
    sqlite3_reset(je);
    sqlite3_bind_text(je, 1, json ? json : "[]", -1, SQLITE_TRANSIENT);
    while ((rc = sqlite3_step(je)) == SQLITE_ROW) {
        const char *s = (const char *)sqlite3_column_text(je, 0);
        char **nv;
        if (cnt >= KNIT_SCHEMA_MAX_COLS) {
            rc = KNIT_ETOOBIG;
            break;
        }
        nv = knit__realloc(v, (cnt + 1) * sizeof *nv);
        if (!nv || !(nv[cnt] = knit__strdup(s ? s : ""))) {
            v = nv ? nv : v;
            rc = KNIT_ENOMEM;
            break;
        }
        v = nv;
        cnt++;
    }
    sqlite3_reset(je);
    if (rc != SQLITE_DONE) {
        for (uint32_t i = 0; i < cnt; i++)
            knit__free(v[i]);
        knit__free(v);
        if (rc == KNIT_ETOOBIG || rc == KNIT_ENOMEM)
            return rc == KNIT_ETOOBIG ? knit__err(k, rc, "a tracked table has too many columns")
                                      : rc;
        return knit__dberr(k, rc, "reading _knit_tables");
    }
    *out = v;
    *n = cnt;
    return 0;
}

static void free_list(char **v, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        knit__free(v[i]);
    knit__free(v);
}

int knit__schema_read(knit_t *k, knit_schema_t **out) /* see schema.h */
{
    sqlite3_stmt *st = NULL, *je = NULL;
    build_t b = {NULL, 0};
    knit_schema_t tmp;
    int rc;

    *out = NULL;
    rc = sqlite3_prepare_v2(k->db, "SELECT name, pk, cols, kinds FROM _knit_tables ORDER BY name",
                            -1, &st, NULL);
    if (rc != SQLITE_OK)
        return knit__dberr(k, rc, "reading _knit_tables");
    rc = sqlite3_prepare_v2(k->db, "SELECT value FROM json_each(?1) ORDER BY key", -1, &je, NULL);
    if (rc != SQLITE_OK) {
        sqlite3_finalize(st);
        return knit__dberr(k, rc, "reading _knit_tables");
    }
    rc = 0;
    while (!rc) {
        int s = sqlite3_step(st);
        char **keys = NULL, **cols = NULL, **kinds = NULL;
        uint32_t nk = 0, nc = 0, nkinds = 0;
        knit_schema_table_t *nt, *t;
        if (s == SQLITE_DONE)
            break;
        if (s != SQLITE_ROW) {
            rc = knit__dberr(k, s, "reading _knit_tables");
            break;
        }
        if (b.ntabs >= KNIT_SCHEMA_MAX_TABLES) {
            rc = knit__err(k, KNIT_ETOOBIG, "more than %d tracked tables", KNIT_SCHEMA_MAX_TABLES);
            break;
        }
        if (!(nt = knit__realloc(b.tabs, (b.ntabs + 1) * sizeof *nt))) {
            rc = KNIT_ENOMEM;
            break;
        }
        b.tabs = nt;
        t = &b.tabs[b.ntabs];
        memset(t, 0, sizeof *t);
        if (!(t->name = knit__strdup((const char *)sqlite3_column_text(st, 0)
                                         ? (const char *)sqlite3_column_text(st, 0)
                                         : ""))) {
            rc = KNIT_ENOMEM;
            break;
        }
        b.ntabs++;
        if ((rc = json_list(k, je, (const char *)sqlite3_column_text(st, 1), &keys, &nk)) != 0 ||
            (rc = json_list(k, je, (const char *)sqlite3_column_text(st, 2), &cols, &nc)) != 0 ||
            (rc = json_list(k, je, (const char *)sqlite3_column_text(st, 3), &kinds, &nkinds)) !=
                0) {
            free_list(keys, nk);
            free_list(cols, nc);
            break;
        }
        if (nkinds != nc) {
            free_list(keys, nk);
            free_list(cols, nc);
            free_list(kinds, nkinds);
            rc = knit__err(k, KNIT_ECORRUPT, "_knit_tables entry for %s is inconsistent", t->name);
            break;
        }
        t->keys = (const char *const *)keys;
        t->nkeys = nk;
        if (nc && !(t->cols = knit__calloc(nc, sizeof *t->cols))) {
            free_list(cols, nc);
            free_list(kinds, nkinds);
            rc = KNIT_ENOMEM;
            break;
        }
        for (uint32_t i = 0; i < nc; i++) {
            knit_schema_col_t *c = (knit_schema_col_t *)&t->cols[i];
            c->name = cols[i];
            c->orset = strcmp(kinds[i], "orset") == 0;
        }
        t->ncols = nc;
        knit__free(cols); /* the names now belong to t->cols */
        free_list(kinds, nkinds);
    }
    sqlite3_finalize(st);
    sqlite3_finalize(je);
    if (!rc) {
        tmp.tables = b.tabs;
        tmp.ntables = b.ntabs;
        rc = knit__schema_pack(&tmp, out);
        if (rc == KNIT_ETOOBIG)
            rc = knit__err(k, rc, "a tracked table or column name is longer than %d bytes",
                           KNIT_SCHEMA_MAX_NAME);
        else if (rc == KNIT_EINVAL)
            rc = knit__err(k, KNIT_ECORRUPT, "_knit_tables names a table or column twice");
    }
    build_free(&b);
    return rc;
}
