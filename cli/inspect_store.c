/*
** inspect_store.c: the relay store sync-inspect reads, on SQLite or on
** PostgreSQL (see inspect_store.h), and the redaction of passwords in
** PostgreSQL URIs.
*/
#include "inspect_store.h"

#include <string.h>

#include "alloc.h"
#ifdef KNIT_HAVE_PG
#include "store_pg.h"
#endif

#define SECRET_MAX 256 /* longest password this file finds and hides */
#define NSECRETS 6     /* passwords remembered, in their forms (on_secret) */

struct inspect_store_s {
    knit_relay_store_t *sq; /* the SQLite store, or NULL */
#ifdef KNIT_HAVE_PG
    knit_pg_store_t *pg; /* the PostgreSQL store, or NULL */
#endif
    char name[1024];                   /* the path, or the redacted URI */
    char secret[NSECRETS][SECRET_MAX]; /* the URI's passwords in their forms ("" none) */
    int withhold;                      /* one did not fit: show no message of libpq's */
    char msg[1024];                    /* the last message, redacted */
};

int inspect_store_is_uri(const char *arg) /* see inspect_store.h */
{
    return strncmp(arg, "postgresql://", 13) == 0 || strncmp(arg, "postgres://", 11) == 0;
}

/* A URI's parts holding passwords: the userinfo's after its first ':', and
** the value of every password= query parameter.  fn(data, start, len) for
** each, in order.  The userinfo ends at the last '@' before the query, not
** the first '/', so that a password with an unescaped '/' is hidden too
** (at worst a path with an '@' is hidden as well). */
static void each_password(const char *uri, void (*fn)(void *data, size_t at, size_t len),
                          void *data)
{
    const char *p = strstr(uri, "://") + 3, *end = p + strcspn(p, "?#"), *at = NULL;
    for (const char *q = p; q < end; q++)
        if (*q == '@')
            at = q; /* the last '@' ends the userinfo */
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (colon)
            fn(data, (size_t)(colon + 1 - uri), (size_t)(at - colon - 1));
    }
    for (const char *q = strchr(end, '?'); q && *q; q += strcspn(q + 1, "&#") + 1) {
        if (*q == '#')
            break;
        if (strncmp(q + 1, "password=", 9) == 0)
            fn(data, (size_t)(q + 10 - uri), strcspn(q + 10, "&#"));
    }
}

/* Building the redacted copy. */
typedef struct redact_s {
    const char *uri; /* the URI */
    char *out;       /* the copy */
    size_t n, len;   /* its size, the bytes written */
    size_t from;     /* uri[from..] is not copied yet */
} redact_t;

static void put(redact_t *r, const char *p, size_t n)
{
    while (n-- && r->len + 1 < r->n)
        r->out[r->len++] = *p++;
    r->out[r->len] = '\0';
}

static void on_redact(void *data, size_t at, size_t len)
{
    redact_t *r = data;
    put(r, r->uri + r->from, at - r->from);
    put(r, "***", 3);
    r->from = at + len;
}

void inspect_store_redact(const char *arg, char *out, size_t n) /* see inspect_store.h */
{
    redact_t r = {arg, out, n, 0, 0};
    if (!n)
        return;
    out[0] = '\0';
    if (!inspect_store_is_uri(arg)) {
        put(&r, arg, strlen(arg));
        return;
    }
    each_password(arg, on_redact, &r);
    put(&r, arg + r.from, strlen(arg + r.from));
}

static int hexval(int c)
{
    const char *digits = "0123456789abcdef", *d;
    if (c >= 'A' && c <= 'F')
        c += 'a' - 'A';
    d = c ? strchr(digits, c) : NULL;
    return d ? (int)(d - digits) : -1;
}

/* Remembering the passwords to hide them in messages: raw, %-decoded, and
** up to an unescaped '/', where libpq stops reading a userinfo (it then
** reads "user:pass" as host and port, and may quote "pass"). */
typedef struct secrets_s {
    inspect_store_t *s; /* where they go */
    const char *uri;    /* the URI */
    int n;              /* slots used */
} secrets_t;

static void on_secret(void *data, size_t at, size_t len)
{
    secrets_t *c = data;
    char *raw, *dec;
    size_t k = 0;
    if (!len)
        return;
    if (c->n + 3 > NSECRETS || len >= SECRET_MAX) {
        c->s->withhold = 1;
        return;
    }
    raw = c->s->secret[c->n++];
    dec = c->s->secret[c->n++];
    memcpy(raw, c->uri + at, len);
    raw[len] = '\0';
    if (strchr(raw, '/') && raw[0] != '/')
        memcpy(c->s->secret[c->n++], raw, strcspn(raw, "/"));
    for (size_t i = 0; i < len; i++) {
        int hi, lo;
        if (raw[i] == '%' && i + 2 < len && (hi = hexval(raw[i + 1])) >= 0 &&
            (lo = hexval(raw[i + 2])) >= 0) {
            dec[k++] = (char)(hi << 4 | lo);
            i += 2;
        } else {
            dec[k++] = raw[i];
        }
    }
    dec[k] = '\0';
}

/* Copies m into s->msg with every password replaced by "***". */
static const char *scrub(inspect_store_t *s, const char *m)
{
    size_t len = 0;
    if (s->withhold && m[0])
        m = "the server's message is not shown: it might quote the URI's password";
    while (*m && len + 4 < sizeof s->msg) {
        size_t hit = 0;
        for (int i = 0; i < NSECRETS && !hit; i++)
            if (s->secret[i][0] && strncmp(m, s->secret[i], strlen(s->secret[i])) == 0)
                hit = strlen(s->secret[i]);
        if (hit) {
            memcpy(s->msg + len, "***", 3);
            len += 3;
            m += hit;
        } else {
            s->msg[len++] = *m++;
        }
    }
    s->msg[len] = '\0';
    return s->msg;
}

static const char *errmsg(inspect_store_t *s)
{
#ifdef KNIT_HAVE_PG
    if (s->pg)
        return scrub(s, knit_pg_store_errmsg(s->pg));
#endif
    return scrub(s, s->sq ? knit_relay_store_errmsg(s->sq) : "");
}

#ifdef KNIT_HAVE_PG
static int open_pg(const char *cmd, inspect_store_t *s, const char *uri)
{
    const char *m;
    int rc = knit_pg_store_open_readonly(uri, &s->pg);
    if (rc == 0)
        return 0;
    m = s->pg ? scrub(s, knit_pg_store_errmsg(s->pg)) : "";
    if (!m[0])
        m = knit_strerror(rc);
    if (rc == KNIT_EVERSION)
        inspect_err(cmd, "'%s' is a relay store this sync-inspect does not read: %s", s->name, m);
    else if (rc == KNIT_ENOTREPLICA)
        inspect_err(cmd, "'%s' is not a knit relay store: %s", s->name, m);
    else
        inspect_err(cmd, "cannot open relay store '%s': %s (%s)", s->name, m, knit_err_name(rc));
    return INSPECT_EXIT_ERROR;
}
#endif

int inspect_store_open(const char *cmd, const char *arg,
                       inspect_store_t **out) /* see inspect_store.h */
{
    inspect_store_t *s = knit__calloc(1, sizeof *s);
    int rc;
    *out = NULL;
    if (!s) {
        inspect_err(cmd, "out of memory");
        return INSPECT_EXIT_ERROR;
    }
    inspect_store_redact(arg, s->name, sizeof s->name);
    if (!inspect_store_is_uri(arg)) {
        rc = inspect_open_relay(cmd, arg, &s->sq);
    } else {
        secrets_t c = {s, arg, 0};
        each_password(arg, on_secret, &c);
#ifdef KNIT_HAVE_PG
        rc = open_pg(cmd, s, arg);
#else
        inspect_err(cmd,
                    "'%s': this sync-inspect was built without PostgreSQL support (libpq), "
                    "so it reads only SQLite relay stores",
                    s->name);
        rc = INSPECT_EXIT_ERROR;
#endif
    }
    if (rc) {
        inspect_store_close(s);
        return INSPECT_EXIT_ERROR;
    }
    *out = s;
    return 0;
}

void inspect_store_close(inspect_store_t *s) /* see inspect_store.h */
{
    if (!s)
        return;
    knit_relay_store_close(s->sq);
#ifdef KNIT_HAVE_PG
    knit_pg_store_close(s->pg);
#endif
    memset(s->secret, 0, sizeof s->secret);
    knit__free(s);
}

const char *inspect_store_name(const inspect_store_t *s) /* see inspect_store.h */
{
    return s->name;
}

int inspect_store_list(inspect_store_t *s, knit_relay_ns_fn fn,
                       void *data) /* see inspect_store.h */
{
#ifdef KNIT_HAVE_PG
    if (s->pg)
        return knit_pg_store_list(s->pg, fn, data);
#endif
    return knit_relay_store_list(s->sq, fn, data);
}

int inspect_store_list_anon(inspect_store_t *s,
                            int (*fn)(void *data, const char *id, uint64_t created_ms),
                            void *data) /* see inspect_store.h */
{
#ifdef KNIT_HAVE_PG
    if (s->pg)
        return knit_pg_store_list_anon(s->pg, fn, data);
#endif
    return knit_relay_store_list_anon(s->sq, fn, data);
}

int inspect_store_list_schemas(inspect_store_t *s,
                               int (*fn)(void *data, const knit_relay_schema_info_t *info),
                               void *data) /* see inspect_store.h */
{
#ifdef KNIT_HAVE_PG
    if (s->pg)
        return knit_pg_store_list_schemas(s->pg, fn, data);
#endif
    return knit_relay_store_list_schemas(s->sq, fn, data);
}

int inspect_store_seq(inspect_store_t *s, const char *ns, uint64_t *seq) /* see inspect_store.h */
{
#ifdef KNIT_HAVE_PG
    if (s->pg)
        return knit_pg_store_seq(s->pg, ns, seq);
#endif
    return knit_relay_store_seq(s->sq, ns, seq);
}

int inspect_store_digest(inspect_store_t *s, const char *ns,
                         knit_digest_t *out) /* see inspect_store.h */
{
#ifdef KNIT_HAVE_PG
    if (s->pg)
        return knit_pg_store_digest(s->pg, ns, out);
#endif
    return knit_relay_store_digest(s->sq, ns, out);
}

int inspect_store_fail(const char *cmd, inspect_store_t *s, int rc) /* see inspect_store.h */
{
    const char *m = errmsg(s);
    inspect_err(cmd, "%s (%s)", m[0] ? m : knit_strerror(rc), knit_err_name(rc));
    return INSPECT_EXIT_ERROR;
}
