/*
** auth.c: JWT HS256 verification and minting, anonymous credential hashing
** and namespace grants (API and policy in auth.h).
**
** A JWT is three base64url segments, header.payload.signature.  Only the
** compact form is accepted, with an algorithm of the allowlist the keys
** make (HS256 with the relay's secret; RS256 and ES256 with a provider's
** JWKS, jwk.h), and the algorithm and key are settled before the signature
** is checked, so a token cannot pick its own verification (alg "none", an
** HS256 token "signed" with a provider's public key, an RS256 token for an
** EC key).  A token never says where its key comes from: "jku", "x5u",
** "jwk" and "x5c" are refused, and a "kid" is only looked up in the set.
** The header and payload are parsed by jansson (docs/ARCHITECTURE.md,
** "Dependencies"), strictly: RFC 8259 text only, one object with nothing
** after it, and duplicate member names refused (JSON_REJECT_DUPLICATES),
** because a parser that takes the first of two "sub"s and one that takes
** the last would disagree about who the token is for.  On top of that this
** file bounds what it accepts: nesting depth, member count and name length.
*/
#include "auth.h"

#include <bearssl.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "value.h"

#define JSON_MAX_DEPTH 16                  /* nesting of values inside the object */
#define JSON_MAX_MEMBERS 64                /* top-level members per object */
#define JSON_MAX_KEY 128                   /* bytes of a member name */
#define MAX_SECONDS UINT64_C(100000000000) /* NumericDate bound (year ~5138) */

/* ---------------------------------------------------------------------- */
/* JSON (jansson)                                                           */

/* 0 if v nests no deeper than depth levels more. */
static int json_depth_ok(json_t *v, int depth)
{
    size_t i;
    const char *k;
    json_t *x;
    if (depth > JSON_MAX_DEPTH)
        return -1;
    if (json_is_array(v)) {
        json_array_foreach(v, i, x) if (json_depth_ok(x, depth + 1)) return -1;
    } else if (json_is_object(v)) {
        json_object_foreach(v, k, x) if (json_depth_ok(x, depth + 1)) return -1;
    }
    return 0;
}

/* Parses p[0..n), which must be one JSON object, into *out (json_decref it).
** Returns NULL, or a static reason. */
static const char *json_object_parse(const uint8_t *p, size_t n, json_t **out)
{
    json_error_t err;
    json_t *o, *x;
    const char *k;
    *out = NULL;
    /* JSON_ALLOW_NUL: a "\u0000" inside a string is refused by the caller
    ** with a reason naming the claim, not as malformed JSON. */
    o = json_loadb((const char *)p, n, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &err);
    if (!o) {
        switch (json_error_code(&err)) {
        case json_error_duplicate_key:
            return "duplicate JSON member";
        case json_error_numeric_overflow:
            return "JSON number out of range";
        case json_error_out_of_memory:
            return "out of memory";
        default:
            return "malformed JSON";
        }
    }
    if (!json_is_object(o)) {
        json_decref(o);
        return "not a JSON object";
    }
    if (json_object_size(o) > JSON_MAX_MEMBERS) {
        json_decref(o);
        return "too many JSON members";
    }
    json_object_foreach(o, k, x)
    {
        if (strlen(k) > JSON_MAX_KEY) {
            json_decref(o);
            return "bad JSON member name";
        }
    }
    if (json_depth_ok(o, 0)) {
        json_decref(o);
        return "malformed JSON: nested too deeply";
    }
    *out = o;
    return NULL;
}

/* Member `name` of o as a string that fits cap bytes with its NUL and holds
** no NUL: 1 and buf filled, 0 when absent, or a static reason in *why (-1):
** "wrong type", or `toolong` when it does not fit or holds a NUL. */
static int json_member_str(json_t *o, const char *name, char *buf, size_t cap, const char *toolong,
                           const char **why)
{
    json_t *v = json_object_get(o, name);
    size_t n;
    if (!v)
        return 0;
    if (!json_is_string(v)) {
        *why = "claim has the wrong type";
        return -1;
    }
    n = json_string_length(v);
    if (n + 1 > cap || strlen(json_string_value(v)) != n) {
        *why = toolong;
        return -1;
    }
    memcpy(buf, json_string_value(v), n + 1);
    return 1;
}

/* Member `name` of o as a NumericDate in whole seconds: 1 and *secs, 0 when
** absent, -1 with *why.  An integer, or a real with a fraction of a second
** (RFC 7519 allows them; the fraction is dropped), below MAX_SECONDS and not
** negative.  A real that is a whole number (1.8e9, 1800000000.0) is refused:
** issuers write whole seconds as integers, and one spelling per value keeps
** the check from depending on notation. */
static int json_member_time(json_t *o, const char *name, uint64_t *secs, const char **why)
{
    json_t *v = json_object_get(o, name);
    if (!v)
        return 0;
    if (json_is_integer(v)) {
        json_int_t x = json_integer_value(v);
        if (x < 0 || (uint64_t)x >= MAX_SECONDS) {
            *why = "time claim out of range";
            return -1;
        }
        *secs = (uint64_t)x;
        return 1;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (!(d >= 0) || d >= (double)MAX_SECONDS || floor(d) == d) {
            *why = "time claim out of range";
            return -1;
        }
        *secs = (uint64_t)d;
        return 1;
    }
    *why = "claim has the wrong type";
    return -1;
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

/* 1 if the string or array v names one of the parties. */
static int names_party(json_t *v, const knit_jwt_keys_t *k)
{
    size_t i;
    json_t *x;
    if (json_is_array(v)) {
        json_array_foreach(v, i, x) if (names_party(x, k)) return 1;
        return 0;
    }
    for (i = 0; json_is_string(v) && i < k->nparties; i++)
        if (strcmp(json_string_value(v), k->parties[i]) == 0)
            return 1;
    return 0;
}

/* The "iss", "azp" and "aud" rules of keys on the verified payload js;
** NULL or a static reason. */
static const char *check_audience(json_t *js, const knit_jwt_keys_t *k)
{
    json_t *iss = json_object_get(js, "iss"), *azp = json_object_get(js, "azp");
    if (k->issuer && (!json_is_string(iss) || strcmp(json_string_value(iss), k->issuer) != 0))
        return "token issuer is not the one configured (--issuer)";
    if (k->nparties == 0)
        return NULL;
    if (azp) /* Clerk names the party in azp and leaves aud out */
        return names_party(azp, k) ? NULL : "token azp is not an authorized party";
    return names_party(json_object_get(js, "aud"), k)
               ? NULL
               : "token aud names no authorized party (--authorized-party)";
}

int knit_jwt_verify_keys(const char *token, size_t len, const knit_jwt_keys_t *keys,
                         uint64_t now_ms, knit_jwt_claims_t *claims,
                         const char **why) /* see auth.h */
{
    static const char *dummy;
    const char *d1, *d2, *reason;
    uint8_t hdr[768], body[KNIT_JWT_MAX_TOKEN], sig[KNIT_JWK_RSA_MAX + 4], mac[32];
    size_t hlen, blen, slen, nh, nb, ns;
    char alg[16], typ[16], kid[KNIT_JWK_KID_MAX + 1], sub[KNIT_JWT_MAX_SUB + 1];
    int halg, htyp, hkid, hcrit, hfetch, psub, pexp = 0, pnbf = 0, piat = 0;
    uint64_t exp_s = 0, nbf_s = 0, iat_s = 0;
    const knit_jwk_t *jwk = NULL;
    knit_jwt_claims_t c;
    json_t *js;

    if (!why)
        why = &dummy;
    *why = NULL;
    if (claims)
        memset(claims, 0, sizeof *claims);
    if (keys->hs_key && keys->hs_keylen < KNIT_JWT_MIN_KEY) {
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

    /* Header first: the algorithm and key decide whether we go further. */
    if (knit_b64url_decode(token, hlen, hdr, &nh))
        REFUSE("bad base64url in token header");
    if ((reason = json_object_parse(hdr, nh, &js)) != NULL)
        REFUSE(reason);
    halg = json_member_str(js, "alg", alg, sizeof alg, "unsupported token algorithm", &reason);
    htyp = json_member_str(js, "typ", typ, sizeof typ, "token typ is not JWT", &reason);
    hkid = json_member_str(js, "kid", kid, sizeof kid, "token kid is not acceptable", &reason);
    hcrit = json_object_get(js, "crit") != NULL;
    hfetch = json_object_get(js, "jku") || json_object_get(js, "x5u") ||
             json_object_get(js, "jwk") || json_object_get(js, "x5c");
    json_decref(js);
    /* "crit" names extensions we would have to understand: refuse. */
    if (hcrit)
        REFUSE("token has critical extensions");
    if (hfetch)
        REFUSE("token names its own key (jku, x5u, jwk or x5c): refused");
    if (halg < 0 || htyp < 0 || hkid < 0)
        REFUSE(reason);
    if (!halg)
        REFUSE("token header has no alg");
    if (htyp && strcmp(typ, "JWT") != 0 && strcmp(typ, "jwt") != 0)
        REFUSE("token typ is not JWT");
    if (strcmp(alg, "HS256") == 0) {
        if (!keys->hs_key)
            REFUSE("HS256 tokens are not accepted here");
    } else if (strcmp(alg, "RS256") == 0 || strcmp(alg, "ES256") == 0) {
        if (!keys->jwks)
            REFUSE("unsupported token algorithm (no provider keys: --jwks-file, --jwks-url)");
        if (!(jwk = knit_jwks_find(keys->jwks, hkid ? kid : NULL))) {
            if (claims)
                claims->unknown_kid = 1;
            REFUSE(hkid ? "token kid is not among the provider's keys"
                        : "token has no kid and the provider has several keys");
        }
        if ((jwk->kty == KNIT_JWK_RSA) != (alg[0] == 'R'))
            REFUSE("token algorithm does not match its key's type");
    } else {
        REFUSE("unsupported token algorithm (HS256, RS256 or ES256)");
    }

    /* Signature, before the payload is believed. */
    if (!jwk) {
        if (slen != 43 || knit_b64url_decode(d2 + 1, slen, sig, &ns) || ns != 32)
            REFUSE("bad token signature");
        hs256(keys->hs_key, keys->hs_keylen, token, (size_t)(d2 - token), mac);
        if (!knit_ct_equal(mac, sig, 32))
            REFUSE("bad token signature");
    } else {
        if (slen > (sizeof sig * 4) / 3 || knit_b64url_decode(d2 + 1, slen, sig, &ns) ||
            knit_jws_check(jwk, alg, token, (size_t)(d2 - token), sig, ns) != 0)
            REFUSE("bad token signature");
    }

    if (knit_b64url_decode(d1 + 1, blen, body, &nb))
        REFUSE("bad base64url in token payload");
    if ((reason = json_object_parse(body, nb, &js)) != NULL)
        REFUSE(reason);
    psub = json_member_str(js, "sub", sub, sizeof sub, "token sub is not acceptable", &reason);
    if (psub >= 0)
        pexp = json_member_time(js, "exp", &exp_s, &reason);
    if (psub >= 0 && pexp >= 0)
        pnbf = json_member_time(js, "nbf", &nbf_s, &reason);
    if (psub >= 0 && pexp >= 0 && pnbf >= 0)
        piat = json_member_time(js, "iat", &iat_s, &reason);
    if (psub >= 0 && pexp >= 0 && pnbf >= 0 && piat >= 0 && psub &&
        (reason = check_audience(js, keys)) != NULL)
        psub = -1;
    json_decref(js);
    if (psub < 0 || pexp < 0 || pnbf < 0 || piat < 0)
        REFUSE(reason);
    if (!psub || !knit_auth_sub_ok(sub))
        REFUSE("token sub is missing or not acceptable");
    if (!pexp)
        REFUSE("token has no exp");
    memset(&c, 0, sizeof c);
    memcpy(c.sub, sub, strlen(sub) + 1);
    c.exp_ms = exp_s * 1000;
    c.nbf_ms = pnbf ? nbf_s * 1000 : 0;
    c.iat_ms = piat ? iat_s * 1000 : 0;
    if (now_ms >= c.exp_ms + keys->skew_ms)
        REFUSE("token expired");
    if (pnbf && c.nbf_ms > now_ms + keys->skew_ms)
        REFUSE("token not yet valid");
    if (piat && c.iat_ms > now_ms + keys->skew_ms)
        REFUSE("token issued in the future");
#undef REFUSE
    if (claims)
        *claims = c;
    return 0;
}

int knit_jwt_verify(const char *token, size_t len, const uint8_t *key, size_t keylen,
                    uint64_t now_ms, uint64_t skew_ms, knit_jwt_claims_t *claims,
                    const char **why) /* see auth.h */
{
    knit_jwt_keys_t k;
    memset(&k, 0, sizeof k);
    if (!key || keylen < KNIT_JWT_MIN_KEY) {
        if (why)
            *why = "relay key too short";
        if (claims)
            memset(claims, 0, sizeof *claims);
        return KNIT_EINVAL;
    }
    k.hs_key = key;
    k.hs_keylen = keylen;
    k.skew_ms = skew_ms;
    return knit_jwt_verify_keys(token, len, &k, now_ms, claims, why);
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

int knit_auth_granted(const char *principal, const char *ns) /* see auth.h */
{
    return principal && ns && principal[0] && strcmp(principal, ns) == 0;
}

int knit_auth_role(const char *r) /* see auth.h */
{
    static const struct {
        const char *name;
        int role;
    } roles[] = {{"admin", KNIT_ROLE_ADMIN},   {"owner", KNIT_ROLE_ADMIN},
                 {"member", KNIT_ROLE_MEMBER}, {"basic_member", KNIT_ROLE_MEMBER},
                 {"editor", KNIT_ROLE_MEMBER}, {"writer", KNIT_ROLE_MEMBER},
                 {"viewer", KNIT_ROLE_VIEWER}, {"reader", KNIT_ROLE_VIEWER},
                 {"guest", KNIT_ROLE_VIEWER}};
    if (!r)
        return KNIT_ROLE_VIEWER;
    if (strncmp(r, "org:", 4) == 0)
        r += 4;
    for (size_t i = 0; i < sizeof roles / sizeof roles[0]; i++)
        if (strcmp(r, roles[i].name) == 0)
            return roles[i].role;
    return KNIT_ROLE_VIEWER;
}

const char *knit_auth_role_name(int role) /* see auth.h */
{
    switch (role) {
    case KNIT_ROLE_VIEWER:
        return "viewer";
    case KNIT_ROLE_MEMBER:
        return "member";
    case KNIT_ROLE_ADMIN:
        return "admin";
    case KNIT_ROLE_OWNER:
        return "owner";
    default:
        return "none";
    }
}

int knit_auth_org_ns(const char *org, char *buf, size_t n) /* see auth.h */
{
    if (!knit_auth_sub_ok(org) || (size_t)snprintf(buf, n, "org:%s", org) >= n)
        return KNIT_EINVAL;
    return 0;
}
