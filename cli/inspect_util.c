/*
** inspect_util.c: error reporting, argument parsing, bounded input reading,
** checked output, and the renderers every command shares: terminal-safe
** text and SQL literals for people, exact JSON for scripts (see
** inspect_util.h).  Nothing here touches SQLite or a replica, so the unit
** tests link it with the CRDT core alone.
*/
#include "inspect_util.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "alloc.h"
#include "knit_errors.h"
#include "utf8.h"

static void verr(const char *cmd, const char *fmt, va_list ap)
{
    fputs("sync-inspect: ", stderr);
    if (cmd)
        fprintf(stderr, "%s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

void inspect_err(const char *cmd, const char *fmt, ...) /* see inspect_util.h */
{
    va_list ap;
    va_start(ap, fmt);
    verr(cmd, fmt, ap);
    va_end(ap);
}

int inspect_usage_err(const char *cmd, const char *fmt, ...) /* see inspect_util.h */
{
    va_list ap;
    va_start(ap, fmt);
    verr(cmd, fmt, ap);
    va_end(ap);
    fprintf(stderr, "Try 'sync-inspect %s%s--help'.\n", cmd ? cmd : "", cmd ? " " : "");
    return INSPECT_EXIT_ERROR;
}

int inspect_read_input(const char *cmd, const char *path, size_t max, uint8_t **buf,
                       size_t *len) /* see inspect_util.h */
{
    int use_stdin = !path || strcmp(path, "-") == 0;
    const char *name = use_stdin ? "standard input" : path;
    FILE *f = use_stdin ? stdin : fopen(path, "rb");
    struct stat st;
    uint8_t *b = NULL, *nb;
    size_t n = 0, cap = 0, got;
    int rc = 0;

    *buf = NULL;
    *len = 0;
    if (!f) {
        inspect_err(cmd, "cannot open '%s': %s", path, strerror(errno));
        return KNIT_EIO;
    }
    /* A regular file that is too big is refused before anything is read. */
    if (fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode) && (uintmax_t)st.st_size > max) {
        inspect_err(cmd, "'%s' is %jd bytes, more than the limit of %zu", name,
                    (intmax_t)st.st_size, max);
        rc = KNIT_ETOOBIG;
        goto done;
    }
    /* Anything else (a pipe, a device) is read until EOF or one byte past
    ** the limit, growing the buffer geometrically. */
    for (;;) {
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 65536;
            if (ncap > max + 1)
                ncap = max + 1;
            if (ncap <= cap) { /* cap == max + 1 and it is full */
                inspect_err(cmd, "%s is more than the limit of %zu bytes", name, max);
                rc = KNIT_ETOOBIG;
                goto done;
            }
            if (!(nb = knit__realloc(b, ncap))) {
                inspect_err(cmd, "out of memory reading %s", name);
                rc = KNIT_ENOMEM;
                goto done;
            }
            b = nb;
            cap = ncap;
        }
        got = fread(b + n, 1, cap - n, f);
        n += got;
        if (got == 0) {
            if (ferror(f)) {
                inspect_err(cmd, "cannot read %s%s%s: %s", use_stdin ? "" : "'", name,
                            use_stdin ? "" : "'", strerror(errno));
                rc = KNIT_EIO;
                goto done;
            }
            break;
        }
    }
    if (n > max) {
        inspect_err(cmd, "%s is more than the limit of %zu bytes", name, max);
        rc = KNIT_ETOOBIG;
    }
done:
    if (!use_stdin)
        fclose(f);
    if (rc) {
        knit__free(b);
        return rc;
    }
    *buf = b;
    *len = n;
    return 0;
}

int inspect_write(const char *cmd, const char *s, size_t n) /* see inspect_util.h */
{
    if ((n && fwrite(s, 1, n, stdout) != n) || fflush(stdout) != 0) {
        inspect_err(cmd, "cannot write output: %s", strerror(errno));
        return KNIT_EIO;
    }
    return 0;
}

/* 1 if the code point would be unsafe on a terminal or in a JSON string
** read by a careless consumer: C0 and C1 controls, DEL, the line and
** paragraph separators, and the bidirectional embeddings, overrides and
** isolates, which can make text read differently from what it holds. */
static int unsafe_cp(uint32_t cp)
{
    return cp < 0x20 || (cp >= 0x7f && cp <= 0x9f) || cp == 0x2028 || cp == 0x2029 ||
           (cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069);
}

/* The inside of a JSON string (no quotes); see inspect_json_string. */
static void json_chars(FILE *f, const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0, k;
    uint32_t cp;
    while (i < n) {
        k = knit__utf8_next(s + i, n - i, &cp);
        if (!k) {
            fputs("\\ufffd", f);
            i++;
            continue;
        }
        if (cp == '"' || cp == '\\')
            fprintf(f, "\\%c", (int)cp);
        else if (cp == '\n')
            fputs("\\n", f);
        else if (cp == '\t')
            fputs("\\t", f);
        else if (cp == '\r')
            fputs("\\r", f);
        else if (unsafe_cp(cp))
            fprintf(f, "\\u%04lx", (unsigned long)cp);
        else
            fwrite(s + i, 1, k, f);
        i += k;
    }
}

void inspect_json_string(FILE *f, const char *str, size_t n) /* see inspect_util.h */
{
    fputc('"', f);
    json_chars(f, str, n);
    fputc('"', f);
}

/* ---------------------------------------------------------------------- */
/* Arguments                                                               */

int inspect_args(const char *cmd, int argc, char **argv, const inspect_opt_t *opts,
                 void (*help)(void), const char **pos, int maxpos,
                 int *npos) /* see inspect_util.h */
{
    int i, done = 0;
    *npos = 0;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *eq;
        const inspect_opt_t *o;
        size_t len;
        if (done || a[0] != '-' || a[1] == '\0') {
            if (*npos >= maxpos)
                return inspect_usage_err(cmd, "unexpected argument '%s'", a);
            pos[(*npos)++] = a;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            done = 1;
            continue;
        }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            help();
            return fflush(stdout) == 0 ? INSPECT_EXIT_OK : INSPECT_EXIT_ERROR;
        }
        eq = strchr(a, '=');
        len = eq ? (size_t)(eq - a) : strlen(a);
        for (o = opts; o && o->name; o++)
            if (strlen(o->name) == len && strncmp(o->name, a, len) == 0)
                break;
        if (!o || !o->name)
            return inspect_usage_err(cmd, "unknown option '%.*s'", (int)len, a);
        if (o->flag) {
            if (eq)
                return inspect_usage_err(cmd, "option '%s' takes no value", o->name);
            *o->flag = 1;
        } else if (eq) {
            *o->value = eq + 1;
        } else if (i + 1 < argc) {
            *o->value = argv[++i];
        } else {
            return inspect_usage_err(cmd, "option '%s' needs a value", o->name);
        }
    }
    return -1;
}

int inspect_u64_arg(const char *cmd, const char *opt, const char *s,
                    uint64_t *out) /* see inspect_util.h */
{
    uint64_t v = 0;
    const char *p = s;
    if (!*p)
        return inspect_usage_err(cmd, "%s needs a number, not an empty string", opt);
    for (; *p; p++) {
        unsigned d = (unsigned)(*p - '0');
        if (d > 9)
            return inspect_usage_err(cmd, "%s needs a non-negative integer, not '%s'", opt, s);
        if (v > (UINT64_MAX - d) / 10)
            return inspect_usage_err(cmd, "%s value '%s' is too large", opt, s);
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

int inspect_finish(const char *cmd, int status) /* see inspect_util.h */
{
    if (ferror(stdout) || fflush(stdout) != 0) {
        inspect_err(cmd, "cannot write output: %s", strerror(errno));
        return INSPECT_EXIT_ERROR;
    }
    return status;
}

/* ---------------------------------------------------------------------- */
/* Rendering                                                               */

void inspect_text(FILE *f, const char *str, size_t n) /* see inspect_util.h */
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0, k;
    uint32_t cp;
    while (i < n) {
        k = knit__utf8_next(s + i, n - i, &cp);
        if (!k)
            fprintf(f, "\\x%02x", s[i++]);
        else if (cp == '\n')
            fputs("\\n", f), i += k;
        else if (cp == '\t')
            fputs("\\t", f), i += k;
        else if (cp == '\r')
            fputs("\\r", f), i += k;
        else if (unsafe_cp(cp) && cp < 0x100)
            fprintf(f, "\\x%02lx", (unsigned long)cp), i += k;
        else if (unsafe_cp(cp))
            fprintf(f, "\\u%04lx", (unsigned long)cp), i += k;
        else
            fwrite(s + i, 1, k, f), i += k;
    }
}

void inspect_hex(FILE *f, const void *p, size_t n) /* see inspect_util.h */
{
    const unsigned char *b = p;
    size_t i;
    for (i = 0; i < n; i++)
        fprintf(f, "%02x", b[i]);
}

void inspect_real(double d, char buf[40]) /* see inspect_util.h */
{
    int prec;
    if (isnan(d)) {
        strcpy(buf, "NaN");
        return;
    }
    if (isinf(d)) {
        strcpy(buf, d > 0 ? "Infinity" : "-Infinity");
        return;
    }
    /* The fewest significant digits that read back exactly. */
    for (prec = 1; prec < 17; prec++) {
        snprintf(buf, 40, "%.*g", prec, d);
        if (strtod(buf, NULL) == d)
            break;
    }
    if (prec == 17)
        snprintf(buf, 40, "%.17g", d);
    if (!strpbrk(buf, ".e"))
        strcat(buf, ".0");
}

/* 1 if s[0..n) is valid UTF-8 without unsafe code points. */
static int safe_text(const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0, k;
    uint32_t cp;
    while (i < n) {
        k = knit__utf8_next(s + i, n - i, &cp);
        if (!k || unsafe_cp(cp))
            return 0;
        i += k;
    }
    return 1;
}

/* Cuts n down to at most max bytes without splitting a UTF-8 sequence. */
static size_t utf8_cut(const char *s, size_t n, size_t max)
{
    if (n <= max)
        return n;
    while (max > 0 && ((unsigned char)s[max] & 0xc0) == 0x80)
        max--;
    return max;
}

/* Writes s[0..n) as the inside of an SQL string literal, quotes doubled;
** json != 0 passes it through the JSON escaper as well. */
static void sql_chars(FILE *f, const char *s, size_t n, int json)
{
    size_t i, start = 0;
    for (i = 0; i <= n; i++) {
        if (i < n && s[i] != '\'')
            continue;
        if (json)
            json_chars(f, s + start, i - start);
        else
            fwrite(s + start, 1, i - start, f);
        if (i < n)
            fputs("''", f);
        start = i + 1;
    }
}

static void sql_real(FILE *f, double d)
{
    char buf[40];
    /* SQLite has no literal for infinity; 9e999 overflows to it, which is
    ** how SQLite's own quote() and JSON write it. */
    if (isinf(d)) {
        fputs(d > 0 ? "9e999" : "-9e999", f);
        return;
    }
    inspect_real(d, buf);
    fputs(isnan(d) ? "NULL" : buf, f);
}

static void sql_blob(FILE *f, const void *p, size_t n)
{
    const unsigned char *b = p;
    size_t i;
    fputs("X'", f);
    for (i = 0; i < n; i++)
        fprintf(f, "%02X", b[i]);
    fputc('\'', f);
}

/* One literal; json selects the exact form written inside a JSON string. */
static void sql_value(FILE *f, const knit_value_t *v, size_t max, int json)
{
    size_t n, shown;
    const char *p;
    switch (v->type) {
    case KNIT_INTEGER:
        fprintf(f, "%lld", (long long)v->u.i);
        return;
    case KNIT_REAL:
        sql_real(f, v->u.r);
        return;
    case KNIT_TEXT:
        p = v->u.b.p ? v->u.b.p : "";
        n = v->u.b.n;
        if (json) {
            fputc('\'', f);
            sql_chars(f, p, n, 1);
            fputc('\'', f);
            return;
        }
        shown = max ? utf8_cut(p, n, max) : n;
        if (safe_text(p, shown)) {
            fputc('\'', f);
            sql_chars(f, p, shown, 0);
            fputc('\'', f);
        } else {
            fputs("CAST(", f);
            sql_blob(f, p, shown);
            fputs(" AS TEXT)", f);
        }
        if (shown < n)
            fprintf(f, "... (%zu bytes)", n);
        return;
    case KNIT_BLOB:
        n = v->u.b.n;
        shown = max && n > max ? max : n;
        sql_blob(f, v->u.b.p, shown);
        if (shown < n)
            fprintf(f, "... (%zu bytes)", n);
        return;
    default:
        fputs("NULL", f);
    }
}

void inspect_sql_value(FILE *f, const knit_value_t *v, size_t max) /* see inspect_util.h */
{
    sql_value(f, v, max, 0);
}

void inspect_sql_list(FILE *f, const knit_value_t *v, size_t n) /* see inspect_util.h */
{
    size_t i;
    for (i = 0; i < n; i++) {
        if (i)
            fputs(", ", f);
        sql_value(f, &v[i], 0, 0);
    }
}

void inspect_json_sql_list(FILE *f, const knit_value_t *v, size_t n) /* see inspect_util.h */
{
    size_t i;
    fputc('"', f);
    for (i = 0; i < n; i++) {
        if (i)
            fputs(", ", f);
        sql_value(f, &v[i], 0, 1);
    }
    fputc('"', f);
}

void inspect_json_value(FILE *f, const knit_value_t *v) /* see inspect_util.h */
{
    char buf[40];
    switch (v->type) {
    case KNIT_INTEGER:
        fprintf(f, "%lld", (long long)v->u.i);
        break;
    case KNIT_REAL:
        inspect_real(v->u.r, buf);
        if (isinf(v->u.r) || isnan(v->u.r))
            inspect_json_string(f, buf, strlen(buf));
        else
            fputs(buf, f);
        break;
    case KNIT_TEXT:
        inspect_json_string(f, v->u.b.p ? v->u.b.p : "", v->u.b.n);
        break;
    case KNIT_BLOB:
        fputs("{\"bytes\": \"", f);
        inspect_hex(f, v->u.b.p, v->u.b.n);
        fputs("\"}", f);
        break;
    default:
        fputs("null", f);
    }
}
