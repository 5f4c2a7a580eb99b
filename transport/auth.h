/*
** auth.h: credentials the relay accepts, without I/O.
**
** Two kinds of credential open a namespace:
**
**   anonymous  a client-made id and secret.  The relay keeps a random salt
**              and SHA-256(salt, id, secret) per id, never the secret; the
**              first HELLO with an unknown id registers it, and afterwards
**              only the same secret opens "anon:<id>".  A fast hash is
**              enough because the secret is not a password: it is made by
**              the client from a CSPRNG (knit makes 32 random bytes), and the
**              relay refuses secrets shorter than KNIT_ANON_SECRET_MIN.
**   JWT        a compact JWS signed with HMAC-SHA-256 (alg exactly "HS256")
**              under the relay's secret; its "sub" opens "user:<sub>".
**              "exp" is required; "exp", "nbf" and "iat" are checked against
**              the wall time with a small allowance for clock skew.
**
** Nothing here reads a clock, a file or a random source: the wall time, the
** key and the salt come in as arguments.  Every comparison of a secret,
** hash or MAC is constant-time.
**
** Ownership: inputs are read during the call only; knit_jwt_mint() returns
** a string the caller frees with knit__free().
*/
#ifndef KNIT_AUTH_H
#define KNIT_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "knit_errors.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KNIT_JWT_MAX_TOKEN 8192  /* longest token accepted, bytes */
#define KNIT_JWT_MAX_SUB 128     /* longest "sub", bytes */
#define KNIT_JWT_MIN_KEY 32      /* shortest HMAC key accepted, bytes */
#define KNIT_JWT_SKEW_MS 60000   /* default clock-skew allowance */
#define KNIT_ANON_ID_MAX 64      /* longest anonymous id */
#define KNIT_ANON_SECRET_MIN 16  /* shortest anonymous secret, bytes */
#define KNIT_ANON_SECRET_MAX 256 /* longest anonymous secret, bytes */
#define KNIT_ANON_SALT_LEN 16    /* salt bytes */
#define KNIT_ANON_HASH_LEN 32    /* SHA-256 */
#define KNIT_PRINCIPAL_MAX 160   /* buffer that any principal name fits */

/* Claims of a verified token. */
typedef struct knit_jwt_claims_s {
    char sub[KNIT_JWT_MAX_SUB + 1]; /* subject, checked charset, NUL-terminated */
    uint64_t exp_ms;                /* expiry, ms since the epoch */
    uint64_t nbf_ms;                /* not-before, ms (0 = absent) */
    uint64_t iat_ms;                /* issued-at, ms (0 = absent) */
} knit_jwt_claims_t;

/* Verifies a compact HS256 JWT token[0..len) under key.  Refused with
** KNIT_EAUTH, and *why set to a static reason that never quotes the token:
** malformed base64url (padding, stray characters or non-zero spare bits),
** malformed or duplicate-keyed JSON, alg other than exactly "HS256" (so
** "none", "HS512", "RS256" ...), a "crit" header, a bad signature, no or a
** bad "sub", no "exp", expired (now >= exp + skew), not yet valid
** (nbf > now + skew) or issued in the future (iat > now + skew).  KNIT_EINVAL
** for a key shorter than KNIT_JWT_MIN_KEY.  skew_ms is the allowance;
** claims may be NULL. */
KNIT_EXTERN int knit_jwt_verify(const char *token, size_t len, const uint8_t *key, size_t keylen,
                                uint64_t now_ms, uint64_t skew_ms,
                                knit_jwt_claims_t *claims /* OUT */, const char **why /* OUT */);

/* Makes a token for sub, issued at now, expiring ttl_s seconds later:
** header {"alg":"HS256","typ":"JWT"}, payload {"sub","iat","nbf","exp"}.
** KNIT_EINVAL for a bad sub, a zero ttl or a short key. */
KNIT_EXTERN int knit_jwt_mint(const uint8_t *key, size_t keylen, const char *sub, uint64_t now_ms,
                              uint64_t ttl_s, char **out /* OUT, knit__free */);

/* 1 if s is an acceptable "sub": 1..KNIT_JWT_MAX_SUB bytes of
** [A-Za-z0-9._@|+-] (no ':' or '/', so "user:<sub>" names one namespace). */
KNIT_EXTERN int knit_auth_sub_ok(const char *s);
/* 1 if id is an acceptable anonymous id: 1..KNIT_ANON_ID_MAX of [A-Za-z0-9_-]. */
KNIT_EXTERN int knit_anon_id_ok(const char *id);
/* 1 if secret has an acceptable length (KNIT_ANON_SECRET_MIN..MAX bytes). */
KNIT_EXTERN int knit_anon_secret_ok(const char *secret);

/* SHA-256 over "knit.anon.1", salt, id and secret (each length-prefixed). */
KNIT_EXTERN void knit_anon_hash(const uint8_t salt[KNIT_ANON_SALT_LEN], const char *id,
                                const char *secret, uint8_t out[KNIT_ANON_HASH_LEN]);
/* 0 if secret matches the stored salt and hash, else KNIT_EAUTH; the hash
** comparison is constant-time. */
KNIT_EXTERN int knit_anon_check(const uint8_t salt[KNIT_ANON_SALT_LEN],
                                const uint8_t hash[KNIT_ANON_HASH_LEN], const char *id,
                                const char *secret);

/* Principal names: "anon:<id>" and "user:<sub>" into buf[0..n); KNIT_EINVAL
** if the id/sub is not acceptable or buf too small. */
KNIT_EXTERN int knit_auth_anon_principal(const char *id, char *buf, size_t n);
KNIT_EXTERN int knit_auth_user_principal(const char *sub, char *buf, size_t n);

/* 1 if a session of principal may read and write ns.  In protocol version 1
** a principal's only namespace is its own name. */
KNIT_EXTERN int knit_auth_granted(const char *principal, const char *ns);

/* Constant-time equality of a[0..n) and b[0..n): 1 equal, 0 not. */
KNIT_EXTERN int knit_ct_equal(const void *a, const void *b, size_t n);

/* Lower-level pieces, exposed for tests and tools. */
/* base64url without padding; strict decode (KNIT_ECORRUPT); out must hold
** (n * 3) / 4 bytes; *outn gets the count. */
KNIT_EXTERN int knit_b64url_decode(const char *in, size_t n, uint8_t *out, size_t *outn);
/* Encodes into out (holds (n * 4 + 2) / 3 + 1 bytes, NUL-terminated);
** returns the length. */
KNIT_EXTERN size_t knit_b64url_encode(const uint8_t *in, size_t n, char *out);

#ifdef __cplusplus
}
#endif
#endif
