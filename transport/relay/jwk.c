/*
** jwk.c: JSON Web Key Sets and JWS signature checks (API in jwk.h).
**
** Design notes
**   1. Members are decoded strictly: base64url without padding (cred.h),
**      an RSA modulus of 2048 to 4096 bits without leading zero bytes (as
**      RFC 7518, 6.3.1.1 asks), an exponent of at most 8 bytes, EC
**      coordinates of 1 to 32 bytes.  A key that fails is skipped, and so
**      never chosen; the set is refused only if no key is left.
**   5. RFC 7518, 6.2.1.2 wants each EC coordinate at its full 32 bytes,
**      but some providers strip leading zero bytes, as an unsigned integer
**      (PyJWT 2.6's to_jwk, Debian 12's, does: about 1 key in 128).  The
**      number is the same, so a shorter coordinate is padded on the left.
**      Refusing it would drop that provider's key at random.
**   2. The point of an EC key is checked by BearSSL when a signature is
**      verified (a point not on the curve verifies nothing).
**   3. RS256: br_rsa_pkcs1_vrfy returns the hash it found inside the
**      signature; it does not compare it with anything.  knit_jws_check
**      hashes the message itself and compares the two in constant time.
**      Skipping that comparison would accept any validly signed message
**      for any other message.
**   4. ES256 signatures are the raw r || s of JWS (64 bytes), which is
**      BearSSL's "raw" format: no ASN.1 is involved.
*/
#include "jwk.h"

#include <bearssl.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "cred.h"
#include "knit_errors.h"

/* Member name of o as a string, or NULL. */
static const char *str_member(json_t *o, const char *name)
{
    json_t *v = json_object_get(o, name);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* base64url member name of o into out[0..cap): its length, or 0 if absent,
** malformed or too long. */
static size_t b64_member(json_t *o, const char *name, uint8_t *out, size_t cap)
{
    const char *s = str_member(o, name);
    size_t n, got;
    if (!s || (n = strlen(s)) == 0 || (n * 3) / 4 > cap)
        return 0;
    return knit_b64url_decode(s, n, out, &got) == 0 ? got : 0;
}

/* Fills k from the JWK o; 0 if usable (note 1). */
static int key_from(json_t *o, knit_jwk_t *k)
{
    const char *kty = str_member(o, "kty"), *use = str_member(o, "use");
    const char *kid = str_member(o, "kid"), *alg = str_member(o, "alg");

    memset(k, 0, sizeof *k);
    if (!json_is_object(o) || !kty || (use && strcmp(use, "sig") != 0))
        return -1;
    if (kid && strlen(kid) > KNIT_JWK_KID_MAX)
        return -1;
    if (alg && strlen(alg) >= sizeof k->alg)
        return -1;
    snprintf(k->kid, sizeof k->kid, "%s", kid ? kid : "");
    snprintf(k->alg, sizeof k->alg, "%s", alg ? alg : "");
    if (strcmp(kty, "RSA") == 0) {
        k->kty = KNIT_JWK_RSA;
        k->nlen = b64_member(o, "n", k->n, sizeof k->n);
        k->elen = b64_member(o, "e", k->e, sizeof k->e);
        if (k->nlen < 256 || k->n[0] == 0 || k->elen == 0 || k->e[0] == 0)
            return -1;
        return 0;
    }
    if (strcmp(kty, "EC") == 0) {
        const char *crv = str_member(o, "crv");
        uint8_t x[33], y[33];
        size_t nx, ny;
        if (!crv || strcmp(crv, "P-256") != 0)
            return -1;
        nx = b64_member(o, "x", x, sizeof x);
        ny = b64_member(o, "y", y, sizeof y);
        if (nx == 0 || nx > 32 || ny == 0 || ny > 32)
            return -1;
        k->kty = KNIT_JWK_EC; /* q is zeroed: the padding of note 5 */
        k->q[0] = 0x04;
        memcpy(k->q + 1 + (32 - nx), x, nx);
        memcpy(k->q + 33 + (32 - ny), y, ny);
        return 0;
    }
    return -1;
}

int knit_jwks_parse(const char *json, size_t len, knit_jwks_t **out, char *why,
                    size_t n) /* see jwk.h */
{
    json_error_t err;
    json_t *root, *keys, *o;
    knit_jwks_t *s;
    size_t i, seen = 0;

    *out = NULL;
    if (len > KNIT_JWKS_MAX_TEXT) {
        snprintf(why, n, "JWKS longer than %d bytes", KNIT_JWKS_MAX_TEXT);
        return KNIT_EINVAL;
    }
    root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &err);
    if (!root) {
        snprintf(why, n, "JWKS is not JSON: %s (line %d)", err.text, err.line);
        return KNIT_EINVAL;
    }
    keys = json_object_get(root, "keys");
    if (!json_is_array(keys)) {
        json_decref(root);
        snprintf(why, n, "JWKS has no \"keys\" array");
        return KNIT_EINVAL;
    }
    if (!(s = knit__calloc(1, sizeof *s))) {
        json_decref(root);
        return KNIT_ENOMEM;
    }
    json_array_foreach(keys, i, o)
    {
        seen++;
        if (s->n < KNIT_JWKS_MAX_KEYS && key_from(o, &s->keys[s->n]) == 0)
            s->n++;
    }
    json_decref(root);
    if (s->n == 0) {
        snprintf(why, n, "JWKS has no usable key (%zu listed; RSA 2048+ or EC P-256, for sig)",
                 seen);
        knit__free(s);
        return KNIT_EINVAL;
    }
    *out = s;
    return 0;
}

int knit_jwks_load(const char *path, knit_jwks_t **out, char *why, size_t n) /* see jwk.h */
{
    FILE *f = fopen(path, "rb");
    char *buf;
    size_t len;
    int rc;
    *out = NULL;
    if (!f) {
        snprintf(why, n, "cannot read %s", path);
        return KNIT_EIO;
    }
    if (!(buf = knit__malloc(KNIT_JWKS_MAX_TEXT + 1))) {
        fclose(f);
        return KNIT_ENOMEM;
    }
    len = fread(buf, 1, KNIT_JWKS_MAX_TEXT + 1, f);
    fclose(f);
    if (len > KNIT_JWKS_MAX_TEXT) {
        knit__free(buf);
        snprintf(why, n, "%s: longer than %d bytes", path, KNIT_JWKS_MAX_TEXT);
        return KNIT_EINVAL;
    }
    rc = knit_jwks_parse(buf, len, out, why, n);
    knit__free(buf);
    if (rc == KNIT_EINVAL) {
        char tmp[256];
        snprintf(tmp, sizeof tmp, "%s", why);
        snprintf(why, n, "%s: %s", path, tmp);
    }
    return rc;
}

void knit_jwks_free(knit_jwks_t *s) /* see jwk.h */
{
    knit__free(s);
}

const knit_jwk_t *knit_jwks_find(const knit_jwks_t *s, const char *kid) /* see jwk.h */
{
    if (!s)
        return NULL;
    if (!kid)
        return s->n == 1 ? &s->keys[0] : NULL;
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->keys[i].kid, kid) == 0)
            return &s->keys[i];
    return NULL;
}

int knit_jws_check(const knit_jwk_t *k, const char *alg, const void *msg, size_t n,
                   const uint8_t *sig, size_t siglen) /* see jwk.h */
{
    br_sha256_context h;
    uint8_t mine[32], found[32];

    if (!k || (k->alg[0] && strcmp(k->alg, alg) != 0))
        return KNIT_EAUTH;
    br_sha256_init(&h);
    br_sha256_update(&h, msg, n);
    br_sha256_out(&h, mine);
    if (strcmp(alg, "RS256") == 0 && k->kty == KNIT_JWK_RSA) {
        br_rsa_public_key pk;
        br_rsa_pkcs1_vrfy vrfy = br_rsa_pkcs1_vrfy_get_default();
        pk.n = (unsigned char *)k->n;
        pk.nlen = k->nlen;
        pk.e = (unsigned char *)k->e;
        pk.elen = k->elen;
        if (siglen != k->nlen || !vrfy(sig, siglen, BR_HASH_OID_SHA256, sizeof found, &pk, found))
            return KNIT_EAUTH;
        return knit_ct_equal(found, mine, sizeof mine) ? 0 : KNIT_EAUTH; /* note 3 */
    }
    if (strcmp(alg, "ES256") == 0 && k->kty == KNIT_JWK_EC) {
        br_ec_public_key pk;
        pk.curve = BR_EC_secp256r1;
        pk.q = (unsigned char *)k->q;
        pk.qlen = sizeof k->q;
        if (siglen != 64)
            return KNIT_EAUTH;
        return br_ecdsa_vrfy_raw_get_default()(br_ec_get_default(), mine, sizeof mine, &pk, sig,
                                               siglen)
                   ? 0
                   : KNIT_EAUTH;
    }
    return KNIT_EAUTH;
}
