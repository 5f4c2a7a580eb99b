/*
** auth.c: JWT HS256 verification and minting, anonymous credential hashing
** and namespace grants (API and policy in auth.h).
**
** A JWT is three base64url segments, header.payload.signature.  Only the
** compact form with alg "HS256" is accepted, and the algorithm is checked
** before the signature is, so a token cannot pick its own verification
** (alg "none", or an asymmetric alg whose "public key" is our HMAC key).
** The header and payload are parsed by the small strict JSON reader below:
** it accepts RFC 8259 JSON, returns the top-level members this file asks
** for, skips the others (nested up to a fixed depth), and refuses duplicate
** member names, because a parser that takes the first of two "sub"s and one
** that takes the last would disagree about who the token is for.
*/
#include "auth.h"

#include <bearssl.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "value.h"

#define JSON_MAX_DEPTH 16                  /* nesting of skipped values */
#define JSON_MAX_MEMBERS 64                /* top-level members per object */
#define JSON_MAX_KEY 128                   /* bytes of a member name */
#define MAX_SECONDS UINT64_C(100000000000) /* NumericDate bound (year ~5138) */

int knit_ct_equal(const void *a, const void *b, size_t n) /* see auth.h */
{
    const volatile uint8_t *x = a, *y = b;
    uint8_t d = 0;
    for (size_t i = 0; i < n; i++)
        d |= (uint8_t)(x[i] ^ y[i]);
    return d == 0;
}

/* ---------------------------------------------------------------------- */
/* base64url                                                                */

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static int b64val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

int knit_b64url_decode(const char *in, size_t n, uint8_t *out, size_t *outn) /* see auth.h */
{
    uint32_t acc = 0;
    size_t k = 0;
    int bits = 0;

    if (n % 4 == 1)
        return KNIT_ECORRUPT;
    for (size_t i = 0; i < n; i++) {
        int v = b64val((unsigned char)in[i]);
        if (v < 0)
            return KNIT_ECORRUPT; /* '=', '+', '/', whitespace ... */
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[k++] = (uint8_t)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    /* The spare bits of the last character must be zero: one encoding per
    ** byte string. */
    if (acc != 0)
        return KNIT_ECORRUPT;
    *outn = k;
    return 0;
}

size_t knit_b64url_encode(const uint8_t *in, size_t n, char *out) /* see auth.h */
{
    size_t k = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[k++] = B64[v >> 18];
        out[k++] = B64[(v >> 12) & 63];
        out[k++] = B64[(v >> 6) & 63];
        out[k++] = B64[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[k++] = B64[v >> 18];
        out[k++] = B64[(v >> 12) & 63];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[k++] = B64[v >> 18];
        out[k++] = B64[(v >> 12) & 63];
        out[k++] = B64[(v >> 6) & 63];
    }
    out[k] = '\0';
    return k;
}

/* ---------------------------------------------------------------------- */
/* Strict JSON reader                                                       */

typedef struct json_s {
    const uint8_t *p; /* text */
    size_t n;         /* its length */
    size_t i;         /* read position */
} json_t;

/* What the caller wants from an object's members. */
#define JT_STRING 1
#define JT_NUMBER 2
#define JT_ANY 3 /* any value: only presence matters */
typedef struct jfield_s {
    const char *name; /* member name */
    int type;         /* JT_STRING, JT_NUMBER or JT_ANY expected */
    char *str;        /* JT_STRING: buffer for the value */
    size_t cap;       /* its size (value must fit with its NUL) */
    uint64_t num;     /* JT_NUMBER: integer part (fraction dropped) */
    int found;        /* set when present */
} jfield_t;

static void ws(json_t *j)
{
    while (j->i < j->n &&
           (j->p[j->i] == ' ' || j->p[j->i] == '\t' || j->p[j->i] == '\n' || j->p[j->i] == '\r'))
        j->i++;
}

static int hex4(json_t *j, uint32_t *v)
{
    *v = 0;
    if (j->n - j->i < 4)
        return -1;
    for (int k = 0; k < 4; k++) {
        uint8_t c = j->p[j->i++];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0)
            return -1;
        *v = *v << 4 | (uint32_t)d;
    }
    return 0;
}

/* Length of a valid UTF-8 sequence at p[0..n), or 0. */
static size_t utf8_len(const uint8_t *p, size_t n)
{
    uint32_t cp;
    size_t len;
    if (p[0] < 0x80)
        return 1;
    if (p[0] >= 0xc2 && p[0] <= 0xdf)
        len = 2, cp = p[0] & 0x1f;
    else if (p[0] >= 0xe0 && p[0] <= 0xef)
        len = 3, cp = p[0] & 0x0f;
    else if (p[0] >= 0xf0 && p[0] <= 0xf4)
        len = 4, cp = p[0] & 0x07;
    else
        return 0;
    if (n < len)
        return 0;
    for (size_t k = 1; k < len; k++) {
        if ((p[k] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (p[k] & 0x3f);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
        (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
        return 0;
    return len;
}

static size_t put_utf8(uint8_t *o, uint32_t cp)
{
    if (cp < 0x80) {
        o[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (uint8_t)(0xc0 | cp >> 6);
        o[1] = (uint8_t)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (uint8_t)(0xe0 | cp >> 12);
        o[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
        o[2] = (uint8_t)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (uint8_t)(0xf0 | cp >> 18);
    o[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3f));
    o[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
    o[3] = (uint8_t)(0x80 | (cp & 0x3f));
    return 4;
}

/* Reads a string.  out (may be NULL: skip) gets the decoded text and a NUL;
** -1 on bad JSON, -2 when it does not fit in cap or holds a NUL. */
static int jstring(json_t *j, char *out, size_t cap)
{
    size_t k = 0;
    if (j->i >= j->n || j->p[j->i] != '"')
        return -1;
    j->i++;
    for (;;) {
        uint8_t tmp[4];
        size_t m;
        if (j->i >= j->n)
            return -1;
        uint8_t c = j->p[j->i];
        if (c == '"') {
            j->i++;
            break;
        }
        if (c < 0x20)
            return -1;
        if (c == '\\') {
            uint32_t cp;
            if (++j->i >= j->n)
                return -1;
            static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
            uint8_t e = j->p[j->i++];
            const char *hit = e ? strchr(from, e) : NULL;
            if (hit) {
                cp = (uint8_t)to[hit - from];
            } else if (e == 'u') {
                if (hex4(j, &cp))
                    return -1;
                if (cp >= 0xdc00 && cp <= 0xdfff)
                    return -1;
                if (cp >= 0xd800 && cp <= 0xdbff) {
                    uint32_t lo;
                    if (j->n - j->i < 2 || j->p[j->i] != '\\' || j->p[j->i + 1] != 'u')
                        return -1;
                    j->i += 2;
                    if (hex4(j, &lo) || lo < 0xdc00 || lo > 0xdfff)
                        return -1;
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                }
            } else {
                return -1;
            }
            if (cp == 0 && out)
                return -2;
            m = put_utf8(tmp, cp);
        } else {
            m = utf8_len(j->p + j->i, j->n - j->i);
            if (!m)
                return -1;
            memcpy(tmp, j->p + j->i, m);
            j->i += m;
        }
        if (out) {
            if (k + m + 1 > cap)
                return -2;
            memcpy(out + k, tmp, m);
        }
        k += m;
    }
    if (out)
        out[k] = '\0';
    return 0;
}

/* Reads a number; *v = its integer part when it is a non-negative number
** without exponent and below MAX_SECONDS, and *ok says whether it was. */
static int jnumber(json_t *j, uint64_t *v, int *ok)
{
    int neg = 0, expo = 0;
    uint64_t x = 0;
    *ok = 0;
    if (j->i < j->n && j->p[j->i] == '-') {
        neg = 1;
        j->i++;
    }
    if (j->i >= j->n)
        return -1;
    if (j->p[j->i] == '0') {
        j->i++;
    } else if (j->p[j->i] >= '1' && j->p[j->i] <= '9') {
        while (j->i < j->n && j->p[j->i] >= '0' && j->p[j->i] <= '9') {
            if (x <= MAX_SECONDS)
                x = x * 10 + (uint64_t)(j->p[j->i] - '0');
            j->i++;
        }
    } else {
        return -1;
    }
    if (j->i < j->n && j->p[j->i] == '.') {
        j->i++;
        if (j->i >= j->n || j->p[j->i] < '0' || j->p[j->i] > '9')
            return -1;
        while (j->i < j->n && j->p[j->i] >= '0' && j->p[j->i] <= '9')
            j->i++;
    }
    if (j->i < j->n && (j->p[j->i] == 'e' || j->p[j->i] == 'E')) {
        expo = 1;
        j->i++;
        if (j->i < j->n && (j->p[j->i] == '+' || j->p[j->i] == '-'))
            j->i++;
        if (j->i >= j->n || j->p[j->i] < '0' || j->p[j->i] > '9')
            return -1;
        while (j->i < j->n && j->p[j->i] >= '0' && j->p[j->i] <= '9')
            j->i++;
    }
    if (!neg && !expo && x < MAX_SECONDS) {
        *v = x;
        *ok = 1;
    }
    return 0;
}

static int jliteral(json_t *j, const char *lit)
{
    size_t n = strlen(lit);
    if (j->n - j->i < n || memcmp(j->p + j->i, lit, n) != 0)
        return -1;
    j->i += n;
    return 0;
}

static int jskip(json_t *j, int depth)
{
    int dummy;
    uint64_t v;
    if (depth > JSON_MAX_DEPTH)
        return -1;
    ws(j);
    if (j->i >= j->n)
        return -1;
    switch (j->p[j->i]) {
    case '"':
        return jstring(j, NULL, 0);
    case 't':
        return jliteral(j, "true");
    case 'f':
        return jliteral(j, "false");
    case 'n':
        return jliteral(j, "null");
    case '[':
        j->i++;
        ws(j);
        if (j->i < j->n && j->p[j->i] == ']') {
            j->i++;
            return 0;
        }
        for (;;) {
            if (jskip(j, depth + 1))
                return -1;
            ws(j);
            if (j->i >= j->n)
                return -1;
            if (j->p[j->i] == ']') {
                j->i++;
                return 0;
            }
            if (j->p[j->i++] != ',')
                return -1;
        }
    case '{':
        j->i++;
        ws(j);
        if (j->i < j->n && j->p[j->i] == '}') {
            j->i++;
            return 0;
        }
        for (;;) {
            ws(j);
            if (jstring(j, NULL, 0))
                return -1;
            ws(j);
            if (j->i >= j->n || j->p[j->i++] != ':')
                return -1;
            if (jskip(j, depth + 1))
                return -1;
            ws(j);
            if (j->i >= j->n)
                return -1;
            if (j->p[j->i] == '}') {
                j->i++;
                return 0;
            }
            if (j->p[j->i++] != ',')
                return -1;
        }
    default:
        return jnumber(j, &v, &dummy);
    }
}

/* Parses a whole text that must be one object; fills the fields asked for.
** Returns 0, or a static reason. */
static const char *jobject(const uint8_t *p, size_t n, jfield_t *f, size_t nf)
{
    json_t j = {p, n, 0};
    char keys[JSON_MAX_MEMBERS][JSON_MAX_KEY + 1];
    size_t nkeys = 0;

    ws(&j);
    if (j.i >= j.n || j.p[j.i++] != '{')
        return "not a JSON object";
    ws(&j);
    if (j.i < j.n && j.p[j.i] == '}') {
        j.i++;
    } else {
        for (;;) {
            char *key;
            ws(&j);
            if (nkeys == JSON_MAX_MEMBERS)
                return "too many JSON members";
            key = keys[nkeys];
            if (jstring(&j, key, sizeof keys[0]))
                return "bad JSON member name";
            for (size_t k = 0; k < nkeys; k++)
                if (strcmp(keys[k], key) == 0)
                    return "duplicate JSON member";
            nkeys++;
            ws(&j);
            if (j.i >= j.n || j.p[j.i++] != ':')
                return "malformed JSON";
            ws(&j);
            jfield_t *hit = NULL;
            for (size_t k = 0; k < nf; k++)
                if (strcmp(f[k].name, key) == 0)
                    hit = &f[k];
            if (!hit || hit->type == JT_ANY) {
                if (jskip(&j, 1))
                    return "malformed JSON";
                if (hit)
                    hit->found = 1;
            } else if (hit->type == JT_STRING) {
                int rc = jstring(&j, hit->str, hit->cap);
                if (rc == -2)
                    return "JSON string too long";
                if (rc)
                    return "claim has the wrong type";
                hit->found = 1;
            } else {
                int ok;
                if (j.i >= j.n || !(j.p[j.i] == '-' || (j.p[j.i] >= '0' && j.p[j.i] <= '9')))
                    return "claim has the wrong type";
                if (jnumber(&j, &hit->num, &ok))
                    return "malformed JSON";
                if (!ok)
                    return "time claim out of range";
                hit->found = 1;
            }
            ws(&j);
            if (j.i >= j.n)
                return "malformed JSON";
            if (j.p[j.i] == '}') {
                j.i++;
                break;
            }
            if (j.p[j.i++] != ',')
                return "malformed JSON";
        }
    }
    ws(&j);
    if (j.i != j.n)
        return "trailing bytes after JSON";
    return NULL;
}

/* ---------------------------------------------------------------------- */
/* JWT                                                                      */

static void hs256(const uint8_t *key, size_t keylen, const void *msg, size_t n, uint8_t out[32])
{
    br_hmac_key_context kc;
    br_hmac_context hc;
    br_hmac_key_init(&kc, &br_sha256_vtable, key, keylen);
    br_hmac_init(&hc, &kc, 0);
    br_hmac_update(&hc, msg, n);
    br_hmac_out(&hc, out);
}

int knit_auth_sub_ok(const char *s) /* see auth.h */
{
    size_t n = 0;
    if (!s)
        return 0;
    for (; s[n]; n++) {
        unsigned char c = (unsigned char)s[n];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '@' || c == '|' || c == '+' || c == '-'))
            return 0;
        if (n >= KNIT_JWT_MAX_SUB)
            return 0;
    }
    return n > 0;
}

int knit_jwt_verify(const char *token, size_t len, const uint8_t *key, size_t keylen,
                    uint64_t now_ms, uint64_t skew_ms, knit_jwt_claims_t *claims,
                    const char **why) /* see auth.h */
{
    static const char *dummy;
    const char *d1, *d2, *reason;
    uint8_t hdr[768], body[KNIT_JWT_MAX_TOKEN], sig[48], mac[32];
    size_t hlen, blen, slen, nh, nb, ns;
    char alg[16], typ[16], sub[KNIT_JWT_MAX_SUB + 1];
    knit_jwt_claims_t c;

    if (!why)
        why = &dummy;
    *why = NULL;
    if (claims)
        memset(claims, 0, sizeof *claims);
    if (!key || keylen < KNIT_JWT_MIN_KEY) {
        *why = "relay key too short";
        return KNIT_EINVAL;
    }
#define REFUSE(msg)                                                                                \
    do {                                                                                           \
        *why = (msg);                                                                              \
        return KNIT_EAUTH;                                                                         \
    } while (0)
    if (!token || len == 0 || len > KNIT_JWT_MAX_TOKEN)
        REFUSE("token missing or too long");
    if (memchr(token, '\0', len))
        REFUSE("malformed token");
    d1 = memchr(token, '.', len);
    d2 = d1 ? memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - token)) : NULL;
    if (!d1 || !d2 || memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - token)))
        REFUSE("token is not three dot-separated parts");
    hlen = (size_t)(d1 - token);
    blen = (size_t)(d2 - d1 - 1);
    slen = len - (size_t)(d2 + 1 - token);
    if (hlen == 0 || blen == 0)
        REFUSE("empty token part");
    if (hlen > sizeof hdr * 4 / 3)
        REFUSE("token header too long");

    /* Header first: the algorithm decides whether we go any further. */
    if (knit_b64url_decode(token, hlen, hdr, &nh))
        REFUSE("bad base64url in token header");
    jfield_t hf[] = {
        {"alg", JT_STRING, alg, sizeof alg, 0, 0},
        {"typ", JT_STRING, typ, sizeof typ, 0, 0},
        {"crit", JT_ANY, NULL, 0, 0, 0},
    };
    if ((reason = jobject(hdr, nh, hf, 3)) != NULL)
        REFUSE(strcmp(reason, "JSON string too long") == 0 ? "unsupported token algorithm"
                                                           : reason);
    /* "crit" names extensions we would have to understand: refuse. */
    if (hf[2].found)
        REFUSE("token has critical extensions");
    if (!hf[0].found)
        REFUSE("token header has no alg");
    if (strcmp(alg, "HS256") != 0)
        REFUSE("unsupported token algorithm (only HS256)");
    if (hf[1].found && strcmp(typ, "JWT") != 0 && strcmp(typ, "jwt") != 0)
        REFUSE("token typ is not JWT");

    /* Signature, in constant time, before the payload is believed. */
    if (slen != 43 || knit_b64url_decode(d2 + 1, slen, sig, &ns) || ns != 32)
        REFUSE("bad token signature");
    hs256(key, keylen, token, (size_t)(d2 - token), mac);
    if (!knit_ct_equal(mac, sig, 32))
        REFUSE("bad token signature");

    if (knit_b64url_decode(d1 + 1, blen, body, &nb))
        REFUSE("bad base64url in token payload");
    jfield_t pf[] = {
        {"sub", JT_STRING, sub, sizeof sub, 0, 0},
        {"exp", JT_NUMBER, NULL, 0, 0, 0},
        {"nbf", JT_NUMBER, NULL, 0, 0, 0},
        {"iat", JT_NUMBER, NULL, 0, 0, 0},
    };
    if ((reason = jobject(body, nb, pf, 4)) != NULL)
        REFUSE(strcmp(reason, "JSON string too long") == 0 ? "token sub is not acceptable"
                                                           : reason);
    if (!pf[0].found || !knit_auth_sub_ok(sub))
        REFUSE("token sub is missing or not acceptable");
    if (!pf[1].found)
        REFUSE("token has no exp");
    memset(&c, 0, sizeof c);
    memcpy(c.sub, sub, strlen(sub) + 1);
    c.exp_ms = pf[1].num * 1000;
    c.nbf_ms = pf[2].found ? pf[2].num * 1000 : 0;
    c.iat_ms = pf[3].found ? pf[3].num * 1000 : 0;
    if (now_ms >= c.exp_ms + skew_ms)
        REFUSE("token expired");
    if (pf[2].found && c.nbf_ms > now_ms + skew_ms)
        REFUSE("token not yet valid");
    if (pf[3].found && c.iat_ms > now_ms + skew_ms)
        REFUSE("token issued in the future");
#undef REFUSE
    if (claims)
        *claims = c;
    return 0;
}

int knit_jwt_mint(const uint8_t *key, size_t keylen, const char *sub, uint64_t now_ms,
                  uint64_t ttl_s, char **out) /* see auth.h */
{
    static const char header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
    char payload[KNIT_JWT_MAX_SUB + 128];
    uint64_t now_s = now_ms / 1000;
    uint8_t mac[32];
    size_t hn = sizeof header - 1, pn, k;
    char *t;

    *out = NULL;
    if (!key || keylen < KNIT_JWT_MIN_KEY || !knit_auth_sub_ok(sub) || ttl_s == 0 ||
        ttl_s > MAX_SECONDS || now_s + ttl_s >= MAX_SECONDS)
        return KNIT_EINVAL;
    pn = (size_t)snprintf(
        payload, sizeof payload, "{\"sub\":\"%s\",\"iat\":%llu,\"nbf\":%llu,\"exp\":%llu}", sub,
        (unsigned long long)now_s, (unsigned long long)now_s, (unsigned long long)(now_s + ttl_s));
    t = knit__malloc((hn * 4 + 2) / 3 + (pn * 4 + 2) / 3 + 43 + 4);
    if (!t)
        return KNIT_ENOMEM;
    k = knit_b64url_encode((const uint8_t *)header, hn, t);
    t[k++] = '.';
    k += knit_b64url_encode((const uint8_t *)payload, pn, t + k);
    hs256(key, keylen, t, k, mac);
    t[k++] = '.';
    knit_b64url_encode(mac, 32, t + k);
    *out = t;
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Anonymous credentials and grants                                         */

int knit_anon_id_ok(const char *id) /* see auth.h */
{
    size_t n = 0;
    if (!id)
        return 0;
    for (; id[n]; n++) {
        unsigned char c = (unsigned char)id[n];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return 0;
        if (n >= KNIT_ANON_ID_MAX)
            return 0;
    }
    return n > 0;
}

int knit_anon_secret_ok(const char *secret) /* see auth.h */
{
    size_t n;
    if (!secret)
        return 0;
    n = strnlen(secret, KNIT_ANON_SECRET_MAX + 1);
    return n >= KNIT_ANON_SECRET_MIN && n <= KNIT_ANON_SECRET_MAX;
}

static void sha_put(br_sha256_context *h, const void *p, size_t n)
{
    uint8_t len[KNIT_VARINT_MAX];
    br_sha256_update(h, len, knit_varint_put(len, n));
    br_sha256_update(h, p, n);
}

void knit_anon_hash(const uint8_t salt[KNIT_ANON_SALT_LEN], const char *id, const char *secret,
                    uint8_t out[KNIT_ANON_HASH_LEN]) /* see auth.h */
{
    br_sha256_context h;
    br_sha256_init(&h);
    sha_put(&h, "knit.anon.1", 11);
    sha_put(&h, salt, KNIT_ANON_SALT_LEN);
    sha_put(&h, id, strlen(id));
    sha_put(&h, secret, strlen(secret));
    br_sha256_out(&h, out);
}

int knit_anon_check(const uint8_t salt[KNIT_ANON_SALT_LEN], const uint8_t hash[KNIT_ANON_HASH_LEN],
                    const char *id, const char *secret) /* see auth.h */
{
    uint8_t h[KNIT_ANON_HASH_LEN];
    if (!knit_anon_id_ok(id) || !knit_anon_secret_ok(secret))
        return KNIT_EAUTH;
    knit_anon_hash(salt, id, secret, h);
    return knit_ct_equal(h, hash, KNIT_ANON_HASH_LEN) ? 0 : KNIT_EAUTH;
}

int knit_auth_anon_principal(const char *id, char *buf, size_t n) /* see auth.h */
{
    if (!knit_anon_id_ok(id) || (size_t)snprintf(buf, n, "anon:%s", id) >= n)
        return KNIT_EINVAL;
    return 0;
}

int knit_auth_user_principal(const char *sub, char *buf, size_t n) /* see auth.h */
{
    if (!knit_auth_sub_ok(sub) || (size_t)snprintf(buf, n, "user:%s", sub) >= n)
        return KNIT_EINVAL;
    return 0;
}

int knit_auth_granted(const char *principal, const char *ns) /* see auth.h */
{
    return principal && ns && principal[0] && strcmp(principal, ns) == 0;
}
