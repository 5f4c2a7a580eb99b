/*
** cbor_diag.c: a strict, I/O-free CBOR reader that renders one item as JSON
** or diagnostic notation (see cbor_diag.h for the output forms).
**
** The reader walks the input once, writing text as it goes; nothing is
** decoded into a tree, so memory is the output buffer plus one recursion
** frame per nesting level (at most KNIT_CBOR_MAX_DEPTH).  The one exception
** is a JSON map key that is not a text string: it is rendered as diagnostic
** notation into a scratch buffer and then written as a JSON string.  Inside
** that key everything is diagnostic notation, so no byte is rendered twice.
**
** Design notes
**  1. Every length and count is checked against the bytes that remain before
**     it is used, so a head claiming 2^63 bytes fails at once, at its offset.
**  2. The first error wins: it records the offset and a static phrase, and
**     every caller returns at once.  Output built so far is thrown away.
**  3. Offsets are of the item head for errors about an item as a whole, and
**     of the exact byte for invalid UTF-8.
**
** The head of every data item (RFC 8949 section 3):
**
**     byte 0                 bytes 1..k (k = 0, 1, 2, 4 or 8)
**   +-------+-----------+    +------------------------------+
**   | major | add. info |    | argument, big-endian         |
**   | 3 bits| 5 bits    |    | (only for add. info 24..27)  |
**   +-------+-----------+    +------------------------------+
**   add. info 0..23: the argument itself   24..27: 1, 2, 4, 8 bytes follow
**             28..30: reserved (malformed) 31: indefinite length / break
*/
#include "cbor_diag.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "knit_errors.h"
#include "utf8.h"

/* ---------------------------------------------------------------------- */
/* Output buffer                                                           */

typedef struct obuf_s {
    char *b;    /* text so far, NUL-terminated once anything is written */
    size_t len; /* bytes of text, NUL not counted */
    size_t cap; /* allocated bytes */
} obuf_t;

/* Makes room for `need` more bytes plus the NUL. */
static int ob_reserve(obuf_t *o, size_t need)
{
    size_t want, c;
    char *nb;
    if (need > KNIT_CBOR_MAX_OUTPUT - o->len)
        return KNIT_ETOOBIG;
    want = o->len + need + 1;
    if (want <= o->cap)
        return 0;
    c = o->cap ? o->cap : 256;
    while (c < want)
        c *= 2; /* want <= 512 MiB + 1, so this cannot overflow */
    nb = knit__realloc(o->b, c);
    if (!nb)
        return KNIT_ENOMEM;
    o->b = nb;
    o->cap = c;
    return 0;
}

static int ob_put(obuf_t *o, const char *s, size_t n)
{
    int rc = ob_reserve(o, n);
    if (rc)
        return rc;
    memcpy(o->b + o->len, s, n);
    o->len += n;
    o->b[o->len] = '\0';
    return 0;
}

static int ob_str(obuf_t *o, const char *s)
{
    return ob_put(o, s, strlen(s));
}

static int ob_u64(obuf_t *o, uint64_t v)
{
    char tmp[24];
    size_t i = sizeof tmp;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return ob_put(o, tmp + i, sizeof tmp - i);
}

static const char hexdig[] = "0123456789abcdef";

static int ob_hex(obuf_t *o, const uint8_t *p, size_t n)
{
    size_t i;
    int rc;
    if (n > KNIT_CBOR_MAX_OUTPUT / 2)
        return KNIT_ETOOBIG;
    if ((rc = ob_reserve(o, 2 * n)) != 0)
        return rc;
    for (i = 0; i < n; i++) {
        o->b[o->len++] = hexdig[p[i] >> 4];
        o->b[o->len++] = hexdig[p[i] & 15];
    }
    o->b[o->len] = '\0';
    return 0;
}

/* ---------------------------------------------------------------------- */
/* UTF-8                                                                   */

/* Index of the first byte of the first invalid sequence, or n if valid. */
static size_t utf8_check(const uint8_t *s, size_t n)
{
    size_t i = 0, k;
    uint32_t cp;
    while (i < n) {
        k = knit__utf8_next(s + i, n - i, &cp);
        if (!k)
            return i;
        i += k;
    }
    return n;
}

/* Code points written as \uXXXX although JSON would allow them raw: controls
** a terminal may act on, the separators JavaScript treats as line ends, and
** the bidirectional overrides that make text display out of order. */
static int must_escape(uint32_t cp)
{
    return cp < 0x20 || (cp >= 0x7f && cp <= 0x9f) || cp == 0x2028 || cp == 0x2029 ||
           (cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069);
}

/* Writes the body of a quoted string (no quotes).  s must be valid UTF-8;
** every caller checks it first.  The escapes are common to JSON and
** diagnostic notation. */
static int put_escaped(obuf_t *o, const uint8_t *s, size_t n)
{
    size_t i = 0, start = 0, k;
    uint32_t cp;
    int rc;
    char esc[8];
    while (i < n) {
        k = knit__utf8_next(s + i, n - i, &cp);
        if (!k)
            return KNIT_ECORRUPT; /* unreachable: validated by the caller */
        if (cp != '"' && cp != '\\' && !must_escape(cp)) {
            i += k;
            continue;
        }
        if ((rc = ob_put(o, (const char *)s + start, i - start)) != 0)
            return rc;
        switch (cp) {
        case '"':
            rc = ob_put(o, "\\\"", 2);
            break;
        case '\\':
            rc = ob_put(o, "\\\\", 2);
            break;
        case '\n':
            rc = ob_put(o, "\\n", 2);
            break;
        case '\r':
            rc = ob_put(o, "\\r", 2);
            break;
        case '\t':
            rc = ob_put(o, "\\t", 2);
            break;
        case '\b':
            rc = ob_put(o, "\\b", 2);
            break;
        case '\f':
            rc = ob_put(o, "\\f", 2);
            break;
        default:
            snprintf(esc, sizeof esc, "\\u%04x", (unsigned)cp);
            rc = ob_put(o, esc, 6);
        }
        if (rc)
            return rc;
        i += k;
        start = i;
    }
    return ob_put(o, (const char *)s + start, n - start);
}

/* ---------------------------------------------------------------------- */
/* Floats                                                                  */

/* Whether the finite or infinite double with bits b is exactly representable
** in a binary format with `mbits` stored mantissa bits and normal exponents
** emin..emax (half: 10, -14, 15; single: 23, -126, 127).  Done on bits, as
** converting an out-of-range double to float is undefined behaviour. */
static int fits(uint64_t b, int mbits, int emin, int emax)
{
    int e = (int)((b >> 52) & 0x7ff), E, shift;
    uint64_t m = b & ((UINT64_C(1) << 52) - 1);
    if (e == 0x7ff || e == 0)
        return m == 0; /* infinities and zeros fit; double subnormals never do */
    E = e - 1023;
    if (E > emax || E < emin - mbits)
        return 0;
    if (E >= emin)
        return (m & ((UINT64_C(1) << (52 - mbits)) - 1)) == 0;
    shift = 52 - mbits + (emin - E); /* a subnormal in the narrower format */
    return ((m | (UINT64_C(1) << 52)) & ((UINT64_C(1) << shift) - 1)) == 0;
}

static uint64_t half_to_double_bits(uint16_t h)
{
    uint64_t sign = (uint64_t)(h >> 15) << 63;
    int e = (h >> 10) & 0x1f;
    uint64_t m = h & 0x3ff;
    double d;
    uint64_t b;
    if (e == 31)
        return sign | (UINT64_C(0x7ff) << 52) | (m << 42);
    if (e == 0) {
        d = (double)m / 16777216.0; /* m * 2^-24, exact */
        memcpy(&b, &d, 8);
        return sign | b;
    }
    return sign | ((uint64_t)(e - 15 + 1023) << 52) | (m << 42);
}

static uint64_t single_to_double_bits(uint32_t s)
{
    float f;
    double d;
    uint64_t b;
    memcpy(&f, &s, 4);
    d = (double)f; /* exact, NaN payloads aside (handled by the caller) */
    memcpy(&b, &d, 8);
    return b;
}

/* Parses "D[.DDD]e[+-]XX" as printed by "%.*e" into digits and exponent. */
static int parse_e(const char *t, char *digits, int *exp10)
{
    int k = 0;
    for (; *t != 'e'; t++)
        if (*t != '.')
            digits[k++] = *t;
    digits[k] = '\0';
    *exp10 = atoi(t + 1);
    return k;
}

/* Reads back digits D[0].D[1..] x 10^exp10. */
static double read_back(const char *digits, int exp10)
{
    char t[48];
    snprintf(t, sizeof t, "%c.%se%d", digits[0], digits + 1, exp10);
    return strtod(t, NULL);
}

/* Steps the k-digit decimal digits x 10^exp10 one unit in its last place up
** (dir > 0) or down, keeping k digits. */
static void step_digits(char *digits, int k, int *exp10, int dir)
{
    int i = k - 1;
    if (dir > 0) {
        while (i >= 0 && digits[i] == '9')
            digits[i--] = '0';
        if (i >= 0) {
            digits[i]++;
        } else { /* 9.99 -> 10.0: renormalize to 1.00 one decade up */
            digits[0] = '1';
            ++*exp10;
        }
        return;
    }
    while (digits[i] == '0') /* the leading digit is never 0, so i stays >= 0 */
        digits[i--] = '9';
    digits[i]--;
    if (digits[0] == '0') { /* 1.00 -> 0.99: one decade down, 9.99 */
        memmove(digits, digits + 1, (size_t)(k - 1));
        digits[k - 1] = '9';
        --*exp10;
    }
}

/* The shortest digit string that reads back as the finite d >= 0 and, among
** those of that length, the closest to d: what JavaScript and RFC 8949
** Appendix A print.  printf's correctly rounded k digits are the closest
** k-digit decimal; when they miss (at a power of two the round-trip interval
** is lopsided), the only other k-digit candidate is their neighbour on the
** other side of d. */
static int shortest_digits(double d, char *digits, int *exp10)
{
    char tmp[40], alt[24];
    int prec, k = 0, alt_e;
    double c;
    for (prec = 0; prec < 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*e", prec, d);
        k = parse_e(tmp, digits, exp10);
        c = read_back(digits, *exp10);
        if (c == d)
            return k;
        memcpy(alt, digits, (size_t)k + 1);
        alt_e = *exp10;
        step_digits(alt, k, &alt_e, c < d ? 1 : -1);
        if (read_back(alt, alt_e) == d) {
            memcpy(digits, alt, (size_t)k + 1);
            *exp10 = alt_e;
            return k;
        }
    }
    return k; /* not reached: 17 significant digits always read back */
}

/* Text for the finite double d in the style of JavaScript's
** Number.prototype.toString, as RFC 8949 Appendix A uses it, but always with
** a "." or an exponent so that a float never looks like an integer: 1.5,
** 65504.0, 0.00006103515625, 5.960464477539063e-8, 1.0e+300. */
static void fmt_double(char *dst, size_t cap, double d)
{
    char digits[24];
    int k, exp10, point, i;
    size_t at = 0;
    if (signbit(d)) {
        dst[at++] = '-';
        d = -d;
    }
    k = shortest_digits(d, digits, &exp10);
    while (k > 1 && digits[k - 1] == '0')
        k--;
    digits[k] = '\0';
    point = exp10 + 1; /* digits before the decimal point */
    if (point >= k && point <= 21) {
        memcpy(dst + at, digits, (size_t)k);
        at += (size_t)k;
        for (i = k; i < point; i++)
            dst[at++] = '0';
        memcpy(dst + at, ".0", 2);
        at += 2;
    } else if (point > 0 && point <= 21) {
        memcpy(dst + at, digits, (size_t)point);
        at += (size_t)point;
        dst[at++] = '.';
        memcpy(dst + at, digits + point, (size_t)(k - point));
        at += (size_t)(k - point);
    } else if (point > -6 && point <= 0) {
        dst[at++] = '0';
        dst[at++] = '.';
        for (i = point; i < 0; i++)
            dst[at++] = '0';
        memcpy(dst + at, digits, (size_t)k);
        at += (size_t)k;
    } else {
        dst[at++] = digits[0];
        dst[at++] = '.';
        if (k > 1) {
            memcpy(dst + at, digits + 1, (size_t)(k - 1));
            at += (size_t)(k - 1);
        } else {
            dst[at++] = '0';
        }
        at += (size_t)snprintf(dst + at, cap - at, "e%c%d", point - 1 < 0 ? '-' : '+',
                               point - 1 < 0 ? 1 - point : point - 1);
    }
    dst[at] = '\0';
}

/* Renders a float encoded with additional information ai (25, 26 or 27) and
** the given raw bits. */
static int put_float(obuf_t *o, int mode, int ai, uint64_t raw)
{
    uint64_t b;
    int preferred, is_nan;
    char txt[64];
    double d;
    int rc;

    if (ai == 25) {
        b = half_to_double_bits((uint16_t)raw);
        is_nan = (raw & 0x7c00) == 0x7c00 && (raw & 0x3ff);
        preferred = !is_nan || raw == 0x7e00;
    } else if (ai == 26) {
        is_nan = (raw & 0x7f800000) == 0x7f800000 && (raw & 0x7fffff);
        b = is_nan ? 0 : single_to_double_bits((uint32_t)raw);
        preferred = !is_nan && !fits(b, 10, -14, 15);
    } else {
        b = raw;
        is_nan = ((raw >> 52) & 0x7ff) == 0x7ff && (raw & ((UINT64_C(1) << 52) - 1));
        preferred = !is_nan && !fits(b, 23, -126, 127);
    }

    if (is_nan) {
        if (mode == KNIT_CBOR_JSON)
            return ob_str(o, "\"NaN\"");
        if ((rc = ob_str(o, "NaN")) != 0)
            return rc;
        if (ai != 25 && (rc = ob_str(o, ai == 26 ? "_2" : "_3")) != 0)
            return rc;
        if ((ai == 25 && raw == 0x7e00) || (ai == 26 && raw == 0x7fc00000) ||
            (ai == 27 && raw == UINT64_C(0x7ff8000000000000)))
            return 0;
        snprintf(txt, sizeof txt, " /bits 0x%0*llx/", 4 << (ai - 25), (unsigned long long)raw);
        return ob_str(o, txt);
    }
    if ((b << 1) == (UINT64_C(0x7ff) << 53)) { /* infinity */
        const char *s = (b >> 63) ? "-Infinity" : "Infinity";
        if (mode == KNIT_CBOR_JSON)
            return ob_str(o, (b >> 63) ? "\"-Infinity\"" : "\"Infinity\"");
        rc = ob_str(o, s);
    } else {
        memcpy(&d, &b, 8);
        fmt_double(txt, sizeof txt, d);
        rc = ob_str(o, txt);
    }
    if (rc || preferred || mode == KNIT_CBOR_JSON)
        return rc;
    return ob_str(o, ai == 25 ? "_1" : ai == 26 ? "_2" : "_3");
}

/* ---------------------------------------------------------------------- */
/* Reader                                                                  */

typedef struct rd_s {
    const uint8_t *p; /* input */
    size_t n;         /* input length */
    size_t pos;       /* next byte to read */
    size_t err_off;   /* offset of the first error */
    const char *what; /* its description, NULL while there is none */
} rd_t;

typedef struct head_s {
    size_t off;   /* offset of the initial byte */
    int major;    /* 0..7 */
    int ai;       /* additional information, 0..31 (never 28..30) */
    uint64_t arg; /* argument: value, length, count, tag, simple or float bits */
} head_t;

static int fail(rd_t *r, size_t off, const char *what, int code)
{
    if (!r->what) {
        r->err_off = off;
        r->what = what;
    }
    return code;
}

static int read_head(rd_t *r, head_t *h)
{
    uint8_t ib;
    int i, nb;
    h->off = r->pos;
    if (r->pos >= r->n)
        return fail(r, r->pos, r->n ? "unexpected end of input" : "empty input", KNIT_ETRUNCATED);
    ib = r->p[r->pos++];
    h->major = ib >> 5;
    h->ai = ib & 31;
    h->arg = (uint64_t)h->ai;
    if (h->ai < 24 || h->ai == 31)
        return 0;
    if (h->ai > 27)
        return fail(r, h->off, "reserved additional information value (28-30)", KNIT_ECORRUPT);
    nb = 1 << (h->ai - 24);
    if (r->n - r->pos < (size_t)nb)
        return fail(r, h->off, "item head cut short by the end of input", KNIT_ETRUNCATED);
    h->arg = 0;
    for (i = 0; i < nb; i++)
        h->arg = (h->arg << 8) | r->p[r->pos++];
    return 0;
}

/* The encoding indicator for an integer, length, count or tag argument that
** uses a longer head than needed ("_0".."_3"), or "" for the preferred one. */
static const char *indicator(const head_t *h)
{
    static const char *const ind[4] = {"_0", "_1", "_2", "_3"};
    static const uint64_t below[4] = {24, 0x100, 0x10000, UINT64_C(0x100000000)};
    if (h->ai < 24 || h->ai > 27)
        return "";
    return h->arg < below[h->ai - 24] ? ind[h->ai - 24] : "";
}

static int item(rd_t *r, obuf_t *o, int mode, int depth);

/* Checks a string's declared length against what remains and its UTF-8. */
static int string_body(rd_t *r, const head_t *h, const uint8_t **body)
{
    size_t bad;
    if (h->arg > (uint64_t)(r->n - r->pos)) {
        if (h->arg > KNIT_CBOR_MAX_INPUT)
            return fail(r, h->off, "string length exceeds the 64 MiB input limit", KNIT_ETOOBIG);
        return fail(r, h->off, "string runs past the end of input", KNIT_ETRUNCATED);
    }
    *body = r->p + r->pos;
    if (h->major == 3 && (bad = utf8_check(*body, (size_t)h->arg)) != (size_t)h->arg)
        return fail(r, r->pos + bad, "invalid UTF-8 in text string", KNIT_ECORRUPT);
    r->pos += (size_t)h->arg;
    return 0;
}

/* Byte and text strings, definite or indefinite. */
static int string_item(rd_t *r, obuf_t *o, int mode, const head_t *h)
{
    const uint8_t *body;
    head_t c;
    size_t nchunks = 0;
    int rc, text = h->major == 3;
    const char *open = text ? "\"" : (mode == KNIT_CBOR_JSON ? "{\"bytes\": \"" : "h'");
    const char *close = text ? "\"" : (mode == KNIT_CBOR_JSON ? "\"}" : "'");

    if (h->ai != 31) {
        if ((rc = string_body(r, h, &body)) != 0)
            return rc;
        if ((rc = ob_str(o, open)) != 0)
            return rc;
        rc = text ? put_escaped(o, body, (size_t)h->arg) : ob_hex(o, body, (size_t)h->arg);
        if (rc || (rc = ob_str(o, close)) != 0)
            return rc;
        return mode == KNIT_CBOR_DIAG ? ob_str(o, indicator(h)) : 0;
    }

    /* Indefinite: definite chunks of the same major type, then a break.  JSON
    ** joins the chunks into one value; diagnostic notation shows each. */
    if (mode == KNIT_CBOR_JSON && (rc = ob_str(o, open)) != 0)
        return rc;
    for (;;) {
        if (r->pos >= r->n)
            return fail(r, r->pos, "end of input inside an indefinite-length string",
                        KNIT_ETRUNCATED);
        if (r->p[r->pos] == 0xff) {
            r->pos++;
            break;
        }
        if ((rc = read_head(r, &c)) != 0)
            return rc;
        if (c.major != h->major)
            return fail(r, c.off, "indefinite-length string chunk of the wrong type",
                        KNIT_ECORRUPT);
        if (c.ai == 31)
            return fail(r, c.off, "nested indefinite-length string chunk", KNIT_ECORRUPT);
        if ((rc = string_body(r, &c, &body)) != 0)
            return rc;
        if (mode == KNIT_CBOR_DIAG && (rc = ob_str(o, nchunks ? ", " : "(_ ")) != 0)
            return rc;
        if (mode == KNIT_CBOR_DIAG && (rc = ob_str(o, open)) != 0)
            return rc;
        rc = text ? put_escaped(o, body, (size_t)c.arg) : ob_hex(o, body, (size_t)c.arg);
        if (rc)
            return rc;
        if (mode == KNIT_CBOR_DIAG &&
            ((rc = ob_str(o, close)) != 0 || (rc = ob_str(o, indicator(&c))) != 0))
            return rc;
        nchunks++;
    }
    if (mode == KNIT_CBOR_JSON)
        return ob_str(o, close);
    if (!nchunks)
        return ob_str(o, text ? "\"\"_" : "''_");
    return ob_str(o, ")");
}

/* A JSON object key: a text string as itself, anything else as its
** diagnostic notation turned into a JSON string. */
static int json_key(rd_t *r, obuf_t *o, int depth)
{
    obuf_t k = {NULL, 0, 0};
    int rc;
    if (r->pos < r->n && (r->p[r->pos] >> 5) == 3)
        return item(r, o, KNIT_CBOR_JSON, depth);
    rc = item(r, &k, KNIT_CBOR_DIAG, depth);
    if (!rc)
        rc = ob_put(o, "\"", 1);
    if (!rc)
        rc = put_escaped(o, (const uint8_t *)k.b, k.len);
    if (!rc)
        rc = ob_put(o, "\"", 1);
    knit__free(k.b);
    return rc;
}

/* Arrays (major 4) and maps (major 5), definite or indefinite. */
static int container(rd_t *r, obuf_t *o, int mode, int depth, const head_t *h)
{
    int map = h->major == 5, indef = h->ai == 31, rc;
    uint64_t i;

    if (!indef) {
        /* Every item takes at least one byte: a count beyond what remains
        ** is known to be truncated before anything is rendered. */
        uint64_t left = r->n - r->pos;
        if (h->arg > left || (map && h->arg > left / 2)) {
            if (h->arg > KNIT_CBOR_MAX_INPUT)
                return fail(r, h->off,
                            map ? "map size exceeds the 64 MiB input limit"
                                : "array size exceeds the 64 MiB input limit",
                            KNIT_ETOOBIG);
            return fail(r, h->off,
                        map ? "map has more entries than bytes remain"
                            : "array has more items than bytes remain",
                        KNIT_ETRUNCATED);
        }
    }
    if ((rc = ob_str(o, map ? "{" : "[")) != 0)
        return rc;
    if (mode == KNIT_CBOR_DIAG) {
        const char *ind = indef ? "_" : indicator(h);
        if (*ind && ((rc = ob_str(o, ind)) != 0 || (rc = ob_str(o, " ")) != 0))
            return rc;
    }
    for (i = 0; indef || i < h->arg; i++) {
        if (indef) {
            if (r->pos >= r->n)
                return fail(r, r->pos,
                            map ? "end of input inside an indefinite-length map"
                                : "end of input inside an indefinite-length array",
                            KNIT_ETRUNCATED);
            if (r->p[r->pos] == 0xff) {
                r->pos++;
                break;
            }
        }
        if (i && (rc = ob_str(o, ", ")) != 0)
            return rc;
        if (!map) {
            if ((rc = item(r, o, mode, depth + 1)) != 0)
                return rc;
            continue;
        }
        rc = mode == KNIT_CBOR_JSON ? json_key(r, o, depth + 1) : item(r, o, mode, depth + 1);
        if (rc || (rc = ob_str(o, ": ")) != 0)
            return rc;
        if (indef && r->pos < r->n && r->p[r->pos] == 0xff)
            return fail(r, r->pos, "break after a map key with no value", KNIT_ECORRUPT);
        if ((rc = item(r, o, mode, depth + 1)) != 0)
            return rc;
    }
    return ob_str(o, map ? "}" : "]");
}

/* Major type 7: simple values, floats and the (here misplaced) break. */
static int simple_item(rd_t *r, obuf_t *o, int mode, const head_t *h)
{
    static const char *const names[4] = {"false", "true", "null", "undefined"};
    int rc;
    if (h->ai == 31)
        return fail(r, h->off, "break outside an indefinite-length item", KNIT_ECORRUPT);
    if (h->ai >= 25)
        return put_float(o, mode, h->ai, h->arg);
    if (h->ai == 24 && h->arg < 32)
        return fail(r, h->off, "two-byte simple value below 32", KNIT_ECORRUPT);
    if (h->arg >= 20 && h->arg <= 23 && (mode == KNIT_CBOR_DIAG || h->arg != 23))
        return ob_str(o, names[h->arg - 20]);
    if ((rc = ob_str(o, mode == KNIT_CBOR_JSON ? "{\"simple\": " : "simple(")) != 0 ||
        (rc = ob_u64(o, h->arg)) != 0)
        return rc;
    return ob_str(o, mode == KNIT_CBOR_JSON ? "}" : ")");
}

/* Renders the item at r->pos; depth counts the arrays, maps and tags around
** it. */
static int item(rd_t *r, obuf_t *o, int mode, int depth)
{
    head_t h;
    int rc;
    if ((rc = read_head(r, &h)) != 0)
        return rc;
    if (h.ai == 31 && (h.major == 0 || h.major == 1 || h.major == 6))
        return fail(r, h.off, "indefinite length not allowed for this major type", KNIT_ECORRUPT);
    if ((h.major == 4 || h.major == 5 || h.major == 6) && depth >= KNIT_CBOR_MAX_DEPTH)
        return fail(r, h.off, "nesting deeper than 256 levels", KNIT_ETOOBIG);

    switch (h.major) {
    case 0:
        rc = ob_u64(o, h.arg);
        break;
    case 1:
        /* -1 - arg; for arg = 2^64 - 1 that is -2^64, which no uint64 holds. */
        if (h.arg == UINT64_MAX)
            rc = ob_str(o, "-18446744073709551616");
        else if ((rc = ob_str(o, "-")) == 0)
            rc = ob_u64(o, h.arg + 1);
        break;
    case 2:
    case 3:
        return string_item(r, o, mode, &h);
    case 4:
    case 5:
        return container(r, o, mode, depth, &h);
    case 6:
        if (mode == KNIT_CBOR_JSON) {
            if ((rc = ob_str(o, "{\"tag\": ")) != 0 || (rc = ob_u64(o, h.arg)) != 0 ||
                (rc = ob_str(o, ", \"value\": ")) != 0 || (rc = item(r, o, mode, depth + 1)) != 0)
                return rc;
            return ob_str(o, "}");
        }
        if ((rc = ob_u64(o, h.arg)) != 0 || (rc = ob_str(o, indicator(&h))) != 0 ||
            (rc = ob_str(o, "(")) != 0 || (rc = item(r, o, mode, depth + 1)) != 0)
            return rc;
        return ob_str(o, ")");
    default:
        return simple_item(r, o, mode, &h);
    }
    if (rc || mode == KNIT_CBOR_JSON)
        return rc;
    return ob_str(o, indicator(&h));
}

int knit_cbor_to_text(const uint8_t *p, size_t n, int mode, char **out, size_t *outlen,
                      size_t *err_offset, const char **err_what) /* see cbor_diag.h */
{
    rd_t r = {p, n, 0, 0, NULL};
    obuf_t o = {NULL, 0, 0};
    int rc;

    if (out)
        *out = NULL;
    if (outlen)
        *outlen = 0;
    if (err_offset)
        *err_offset = 0;
    if (err_what)
        *err_what = NULL;
    if (!out || !outlen || (!p && n) || (mode != KNIT_CBOR_JSON && mode != KNIT_CBOR_DIAG)) {
        rc = fail(&r, 0, "invalid argument", KNIT_EINVAL);
    } else if (n > KNIT_CBOR_MAX_INPUT) {
        rc = fail(&r, KNIT_CBOR_MAX_INPUT, "input larger than 64 MiB", KNIT_ETOOBIG);
    } else {
        rc = item(&r, &o, mode, 0);
        if (!rc && r.pos != n)
            rc = fail(&r, r.pos, "trailing bytes after the item", KNIT_ECORRUPT);
        if (!rc && !o.b)
            rc = ob_put(&o, "", 0); /* every item writes text; this is a guard */
    }
    if (rc) {
        if (rc == KNIT_ENOMEM || rc == KNIT_ETOOBIG)
            fail(&r, r.pos, rc == KNIT_ENOMEM ? "out of memory" : "output larger than 512 MiB", rc);
        knit__free(o.b);
        if (err_offset)
            *err_offset = r.err_off;
        if (err_what)
            *err_what = r.what;
        return rc;
    }
    *out = o.b;
    *outlen = o.len;
    return 0;
}
