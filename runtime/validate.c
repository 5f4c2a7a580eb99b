/*
** validate.c: knit_change_check(), the one definition of a change a replica
** can apply (API and rationale in validate.h).  The relay runs it on every
** pushed change before anything is stored (transport/proto_server.c, and
** again in runtime/relay_store.c), and on every stored cell it sends in a
** catch-up; a replica runs it before it merges a change.
*/
#include "validate.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "orset.h"

#define KEY_TEXT_MAX 120 /* bytes of key text in a message */

static int fail(char *why, size_t n, int code, const char *fmt, ...)
#ifdef __GNUC__
    __attribute__((format(printf, 4, 5)))
#endif
    ;

static int fail(char *why, size_t n, int code, const char *fmt, ...)
{
    if (why && n) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, n, fmt, ap);
        va_end(ap);
    }
    return code;
}

/* Appends to buf[*off..n), keeping it NUL-terminated. */
static void put(char *buf, size_t n, size_t *off, const char *fmt, ...)
#ifdef __GNUC__
    __attribute__((format(printf, 4, 5)))
#endif
    ;

static void put(char *buf, size_t n, size_t *off, const char *fmt, ...)
{
    va_list ap;
    int k;
    if (*off + 1 >= n)
        return;
    va_start(ap, fmt);
    k = vsnprintf(buf + *off, n - *off, fmt, ap);
    va_end(ap);
    if (k > 0)
        *off = *off + (size_t)k < n ? *off + (size_t)k : n - 1;
}

void knit__key_text(const knit_value_t *pk, uint32_t npk, char *buf, size_t n) /* see validate.h */
{
    size_t off = 0;
    if (!n)
        return;
    buf[0] = '\0';
    for (uint32_t i = 0; pk && i < npk; i++) {
        const knit_value_t *v = &pk[i];
        if (i)
            put(buf, n, &off, ", ");
        switch (v->type) {
        case KNIT_NULL:
            put(buf, n, &off, "NULL");
            break;
        case KNIT_INTEGER:
            put(buf, n, &off, "%lld", (long long)v->u.i);
            break;
        case KNIT_REAL:
            put(buf, n, &off, "%.17g", v->u.r);
            break;
        case KNIT_TEXT: {
            /* Quotes doubled; control bytes and non-ASCII shown as '?' so a
            ** key cannot forge log lines. */
            const unsigned char *p = v->u.b.p;
            put(buf, n, &off, "'");
            for (size_t j = 0; j < v->u.b.n && j < 48; j++) {
                unsigned char ch = p[j];
                if (ch == '\'')
                    put(buf, n, &off, "''");
                else
                    put(buf, n, &off, "%c", ch >= 0x20 && ch < 0x7f ? ch : '?');
            }
            put(buf, n, &off, "%s'", v->u.b.n > 48 ? "..." : "");
            break;
        }
        case KNIT_BLOB: {
            const unsigned char *p = v->u.b.p;
            put(buf, n, &off, "X'");
            for (size_t j = 0; j < v->u.b.n && j < 24; j++)
                put(buf, n, &off, "%02X", p[j]);
            put(buf, n, &off, "%s'", v->u.b.n > 24 ? "..." : "");
            break;
        }
        default:
            put(buf, n, &off, "?");
        }
    }
}

/* A value SQLite can hold: no NaN (SQLite has none), bytes where a length
** says so. */
static const char *value_problem(const knit_value_t *v)
{
    switch (v->type) {
    case KNIT_NULL:
    case KNIT_INTEGER:
        return NULL;
    case KNIT_REAL:
        return isnan(v->u.r) ? "a NaN REAL" : NULL;
    case KNIT_TEXT:
    case KNIT_BLOB:
        return v->u.b.n == 0 || v->u.b.p != NULL ? NULL : "bytes missing";
    }
    return "an unknown storage class";
}

static int sites_ok(const knit_orset_t *s, size_t nsites)
{
    for (size_t i = 0; i < s->vv.len; i++)
        if (s->vv.e[i].site >= nsites)
            return 0;
    for (size_t i = 0; i < s->ncloud; i++)
        if (s->cloud[i].site >= nsites)
            return 0;
    for (size_t i = 0; i < s->nelems; i++)
        for (size_t j = 0; j < s->elems[i].ndots; j++)
            if (s->elems[i].dots[j].site >= nsites)
                return 0;
    return 1;
}

/* The first element of s with no JSON form (statement 14), or -1. */
static long unjsonable(const knit_orset_t *s, const char **what)
{
    for (size_t i = 0; i < s->nelems; i++) {
        const knit_orset_elem_t *e = &s->elems[i];
        knit_orset_t one;
        char *json = NULL;
        size_t len;
        int rc;
        if (e->v.type == KNIT_BLOB) {
            *what = "a BLOB";
            return (long)i;
        }
        if (e->v.type != KNIT_TEXT)
            continue;
        /* The JSON writer is the judge of TEXT: a one-element set. */
        memset(&one, 0, sizeof one);
        one.elems = (knit_orset_elem_t *)e;
        one.nelems = 1;
        rc = knit_orset_json(&one, &json, &len);
        knit__free(json);
        if (rc == KNIT_EINVAL) {
            *what = "TEXT that is not valid UTF-8";
            return (long)i;
        }
    }
    return -1;
}

int knit_change_check(const knit_batch_t *b, const knit_change_t *c, char *why,
                      size_t n) /* see validate.h */
{
    const knit_batch_table_t *t;
    const char *col, *p;
    char key[KEY_TEXT_MAX];

    if (c->ns >= b->nns)
        return fail(why, n, KNIT_EINVAL, "change names namespace %u of %zu", c->ns, b->nns);
    if (c->table >= b->ntables)
        return fail(why, n, KNIT_EINVAL, "change names table %u of %zu", c->table, b->ntables);
    t = &b->tables[c->table];
    if (c->site >= b->nsites)
        return fail(why, n, KNIT_EINVAL, "%.60s: change names site %u of %zu", t->name, c->site,
                    b->nsites);
    if (t->npk == 0 || !c->pk)
        return fail(why, n, KNIT_EINVAL, "%.60s: change without a key", t->name);
    if (c->col > t->ncols)
        return fail(why, n, KNIT_EINVAL, "%.60s: column %u of %u", t->name, c->col, t->ncols);
        /* The key is formatted only for a message: this runs for every change. */
#define KEY (knit__key_text(c->pk, t->npk, key, sizeof key), key)
    col = c->col ? t->cols[c->col - 1] : "(row)";
    for (uint32_t i = 0; i < t->npk; i++) {
        if (c->pk[i].type == KNIT_NULL)
            return fail(why, n, KNIT_EINVAL, "%.60s key (%s): key column %u is NULL", t->name, KEY,
                        i + 1);
        if ((p = value_problem(&c->pk[i])) != NULL)
            return fail(why, n, KNIT_EINVAL, "%.60s key (%s): key column %u is %s", t->name, KEY,
                        i + 1, p);
    }
    if (c->cl == 0)
        return fail(why, n, KNIT_EINVAL, "%.60s key (%s): causal length 0", t->name, KEY);
    if (c->col == 0)
        return c->value.type == KNIT_NULL
                   ? 0
                   : fail(why, n, KNIT_EINVAL, "%.60s key (%s): row liveness with a value", t->name,
                          KEY);
    if ((p = value_problem(&c->value)) != NULL)
        return fail(why, n, KNIT_EINVAL, "%.60s key (%s): %.60s: the value is %s", t->name, KEY,
                    col, p);
    if (t->orset[c->col - 1]) {
        knit_orset_t s;
        const char *what = "";
        long bad;
        int rc;
        if (c->value.type != KNIT_BLOB)
            return fail(why, n, KNIT_EINVAL, "%.60s key (%s): %.60s: OR-set value is not a BLOB",
                        t->name, KEY, col);
        rc = knit_orset_decode(c->value.u.b.p, c->value.u.b.n, &s);
        if (rc == KNIT_ENOMEM)
            return fail(why, n, rc, "out of memory");
        if (rc)
            return fail(why, n, KNIT_ECORRUPT, "%.60s key (%s): %.60s: malformed OR-set state",
                        t->name, KEY, col);
        if (!sites_ok(&s, b->nsites)) {
            knit_orset_free(&s);
            return fail(why, n, KNIT_ECORRUPT,
                        "%.60s key (%s): %.60s: OR-set state names an unknown site", t->name, KEY,
                        col);
        }
        bad = unjsonable(&s, &what);
        knit_orset_free(&s);
        if (bad >= 0)
            return fail(why, n, KNIT_EINVAL,
                        "%.60s key (%s): %.60s: OR-set element %ld is %s, which has no JSON form",
                        t->name, KEY, col, bad + 1, what);
    }
    return 0;
#undef KEY
}
