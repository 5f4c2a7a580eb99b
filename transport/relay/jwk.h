/*
** jwk.h: the public keys of an identity provider, as a JSON Web Key Set
** (RFC 7517), and the JWS signature checks that use them (RFC 7518):
** RS256 (RSASSA-PKCS1-v1_5 with SHA-256) with an RSA key, ES256 (ECDSA
** P-256 with SHA-256, signature r || s) with an EC key.  Crypto is
** BearSSL's; JSON is jansson's.  No I/O except knit_jwks_load().
**
** A set keeps the keys it can use: "kty" RSA (2048 to 4096 bits) or EC
** with "crv" P-256, whose "use" is absent or "sig".  Keys of other types,
** curves or uses are skipped, not refused: a provider's set may list keys
** for other purposes.  A set with no usable key is refused.
**
** Ownership: a set is one allocation, freed by knit_jwks_free().
*/
#ifndef KNIT_RELAY_JWK_H
#define KNIT_RELAY_JWK_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KNIT_JWK_KID_MAX 128     /* bytes of a "kid" kept (longer: key skipped) */
#define KNIT_JWK_RSA_MAX 512     /* modulus bytes (4096 bits) */
#define KNIT_JWKS_MAX_KEYS 32    /* keys kept from one set */
#define KNIT_JWKS_MAX_TEXT 65536 /* bytes of a JWKS document */

enum { KNIT_JWK_RSA = 1, KNIT_JWK_EC = 2 };

typedef struct knit_jwk_s {
    int kty;                        /* KNIT_JWK_RSA or KNIT_JWK_EC */
    char kid[KNIT_JWK_KID_MAX + 1]; /* "" when the key has none */
    char alg[8];                    /* its "alg" ("RS256", "ES256"), "" when absent */
    uint8_t n[KNIT_JWK_RSA_MAX];    /* RSA modulus, big-endian, no leading zero */
    size_t nlen;                    /* its length */
    uint8_t e[8];                   /* RSA public exponent */
    size_t elen;                    /* its length */
    uint8_t q[65];                  /* EC point, uncompressed: 0x04, x, y */
} knit_jwk_t;

typedef struct knit_jwks_s {
    size_t n;                            /* keys */
    knit_jwk_t keys[KNIT_JWKS_MAX_KEYS]; /* in document order */
} knit_jwks_t;

/* Parses a JWKS document ({"keys": [...]}) into *out.  KNIT_EINVAL with a
** reason in why[0..n) for malformed JSON or a set with no usable key;
** KNIT_ENOMEM. */
int knit_jwks_parse(const char *json, size_t len, knit_jwks_t **out /* OUT */, char *why, size_t n);
/* Reads and parses the file path (KNIT_EIO when it cannot be read). */
int knit_jwks_load(const char *path, knit_jwks_t **out /* OUT */, char *why, size_t n);
/* Frees s (NULL: no-op). */
void knit_jwks_free(knit_jwks_t *s);

/* The key of a token header: the one whose kid matches, or, when the token
** names none and the set holds exactly one key, that key.  NULL otherwise. */
const knit_jwk_t *knit_jwks_find(const knit_jwks_t *s, const char *kid /* may be NULL */);

/* 0 if sig[0..siglen) is a valid signature by k of msg[0..n) under alg
** ("RS256" needs an RSA key, "ES256" an EC key, and a key's own "alg",
** when present, must be alg), else KNIT_EAUTH.  For RS256 the hash BearSSL
** recovers from the signature is compared, in constant time, with the
** SHA-256 of msg computed here. */
int knit_jws_check(const knit_jwk_t *k, const char *alg, const void *msg, size_t n,
                   const uint8_t *sig, size_t siglen);

#ifdef __cplusplus
}
#endif
#endif
