/*
** cred.c: credential names and base64url, shared by the sync client and
** the relay (API in cred.h).  The relay's checks of credentials are in
** transport/relay/auth.c.
*/
#include "cred.h"

#include <stdio.h>
#include <string.h>

int knit_ct_equal(const void *a, const void *b, size_t n) /* see cred.h */
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

int knit_b64url_decode(const char *in, size_t n, uint8_t *out, size_t *outn) /* see cred.h */
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

size_t knit_b64url_encode(const uint8_t *in, size_t n, char *out) /* see cred.h */
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
/* Names                                                                    */

int knit_auth_sub_ok(const char *s) /* see cred.h */
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

int knit_anon_id_ok(const char *id) /* see cred.h */
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

int knit_anon_secret_ok(const char *secret) /* see cred.h */
{
    size_t n;
    if (!secret)
        return 0;
    n = strnlen(secret, KNIT_ANON_SECRET_MAX + 1);
    return n >= KNIT_ANON_SECRET_MIN && n <= KNIT_ANON_SECRET_MAX;
}

int knit_auth_anon_principal(const char *id, char *buf, size_t n) /* see cred.h */
{
    if (!knit_anon_id_ok(id) || (size_t)snprintf(buf, n, "anon:%s", id) >= n)
        return KNIT_EINVAL;
    return 0;
}

int knit_auth_user_principal(const char *sub, char *buf, size_t n) /* see cred.h */
{
    if (!knit_auth_sub_ok(sub) || (size_t)snprintf(buf, n, "user:%s", sub) >= n)
        return KNIT_EINVAL;
    return 0;
}
