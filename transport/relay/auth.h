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
**              under the relay's secret, or (knit_jwt_verify_keys) with
**              RS256 or ES256 by an identity provider whose keys are a JWKS
**              (jwk.h); its "sub" opens "user:<sub>".
**              "exp" is required; "exp", "nbf" and "iat" are checked against
**              the wall time with a small allowance for clock skew.
**
** Names, principals and base64url, which the sync client shares, are in
** transport/wire/cred.h.  JSON is parsed with jansson.
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

#include "cred.h"
#include "jwk.h"
#include "knit_errors.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KNIT_JWT_MAX_TOKEN 8192 /* longest token accepted, bytes */
#define KNIT_JWT_MIN_KEY 32     /* shortest HMAC key accepted, bytes */
#define KNIT_JWT_SKEW_MS 60000  /* default clock-skew allowance */
#define KNIT_ANON_SALT_LEN 16   /* salt bytes */
#define KNIT_ANON_HASH_LEN 32   /* SHA-256 */

/* Claims of a verified token. */
typedef struct knit_jwt_claims_s {
    char sub[KNIT_JWT_MAX_SUB + 1]; /* subject, checked charset, NUL-terminated */
    uint64_t exp_ms;                /* expiry, ms since the epoch */
    uint64_t nbf_ms;                /* not-before, ms (0 = absent) */
    uint64_t iat_ms;                /* issued-at, ms (0 = absent) */
    int unknown_kid;                /* set on a refusal: the header's kid is not
                                       in the key set (a refetch may find it) */
} knit_jwt_claims_t;

/* What a token may be verified with, and what its claims must say. */
typedef struct knit_jwt_keys_s {
    const uint8_t *hs_key;      /* HS256 key (development), or NULL: HS256 refused */
    size_t hs_keylen;           /* its length, >= KNIT_JWT_MIN_KEY */
    const knit_jwks_t *jwks;    /* RS256 and ES256 keys (jwk.h), or NULL: refused */
    const char *issuer;         /* "iss" must equal it; NULL: not checked */
    const char *const *parties; /* "azp" must be one of them, or, without
                                   "azp", "aud" must name one; when nparties */
    size_t nparties;            /* 0: neither is checked */
    uint64_t skew_ms;           /* allowance on exp, nbf, iat */
} knit_jwt_keys_t;

/* Verifies a compact HS256 JWT token[0..len) under key.  Refused with
** KNIT_EAUTH, and *why set to a static reason that never quotes the token:
** malformed base64url (padding, stray characters or non-zero spare bits);
** malformed or duplicate-keyed JSON, or JSON nested deeper than 16, with
** more than 64 members or a member name over 128 bytes; alg other than
** exactly "HS256" (so "none", "HS512", "RS256" ...); a "crit" header; a bad
** signature; no or a bad "sub"; no "exp"; a time claim that is not an
** integer or a real with a fraction of a second (1.8e9 is refused), or not
** in [0, 10^11) seconds; expired (now >= exp + skew), not yet valid
** (nbf > now + skew) or issued in the future (iat > now + skew).  KNIT_EINVAL
** for a key shorter than KNIT_JWT_MIN_KEY.  skew_ms is the allowance;
** claims may be NULL. */
KNIT_EXTERN int knit_jwt_verify(const char *token, size_t len, const uint8_t *key, size_t keylen,
                                uint64_t now_ms, uint64_t skew_ms,
                                knit_jwt_claims_t *claims /* OUT */, const char **why /* OUT */);

/* Verifies a compact JWT under keys: the rules of knit_jwt_verify, with
** the algorithms keys allow (HS256 with hs_key; RS256 or ES256 with a key
** of jwks, found by the header's "kid", which must match the key's type),
** the signature checked before any claim is read, and then "iss" and
** "azp"/"aud" as keys ask.  "jku", "x5u", "jwk" and "x5c" headers are
** refused: a token never names where its key comes from. */
KNIT_EXTERN int knit_jwt_verify_keys(const char *token, size_t len, const knit_jwt_keys_t *keys,
                                     uint64_t now_ms, knit_jwt_claims_t *claims /* OUT */,
                                     const char **why /* OUT */);

/* Makes a token for sub, issued at now, expiring ttl_s seconds later:
** header {"alg":"HS256","typ":"JWT"}, payload {"sub","iat","nbf","exp"}.
** KNIT_EINVAL for a bad sub, a zero ttl or a short key. */
KNIT_EXTERN int knit_jwt_mint(const uint8_t *key, size_t keylen, const char *sub, uint64_t now_ms,
                              uint64_t ttl_s, char **out /* OUT, knit__free */);

/* SHA-256 over "knit.anon.1", salt, id and secret (each length-prefixed). */
KNIT_EXTERN void knit_anon_hash(const uint8_t salt[KNIT_ANON_SALT_LEN], const char *id,
                                const char *secret, uint8_t out[KNIT_ANON_HASH_LEN]);
/* 0 if secret matches the stored salt and hash, else KNIT_EAUTH; the hash
** comparison is constant-time. */
KNIT_EXTERN int knit_anon_check(const uint8_t salt[KNIT_ANON_SALT_LEN],
                                const uint8_t hash[KNIT_ANON_HASH_LEN], const char *id,
                                const char *secret);

/* 1 if a session of principal may read and write ns as its own: a
** principal's own namespace is its name.  Organization namespaces are
** granted per session, with a role (below). */
KNIT_EXTERN int knit_auth_granted(const char *principal, const char *ns);

/* Roles in a namespace, weakest first.  Viewers read; members and admins
** also write; the owner is the principal in its own namespace. */
enum {
    KNIT_ROLE_NONE = 0,
    KNIT_ROLE_VIEWER = 1,
    KNIT_ROLE_MEMBER = 2,
    KNIT_ROLE_ADMIN = 3,
    KNIT_ROLE_OWNER = 4
};
/* The role a provider's role name gives ("org:admin", "admin",
** "org:member", "basic_member", "org:viewer" ...; the "org:" prefix is
** optional).  A name it does not know gives the weakest role, viewer. */
KNIT_EXTERN int knit_auth_role(const char *provider_role);
KNIT_EXTERN const char *knit_auth_role_name(int role);
/* "org:<id>" into buf, or KNIT_EINVAL when the id is not acceptable
** (the charset and length of a token's sub). */
KNIT_EXTERN int knit_auth_org_ns(const char *org, char *buf, size_t n);

#ifdef __cplusplus
}
#endif
#endif
