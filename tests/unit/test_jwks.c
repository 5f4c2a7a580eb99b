/*
** test_jwks.c: provider tokens (jwk.h, knit_jwt_verify_keys in auth.h)
** against published vectors, RFC 7515 A.2 (RS256) and A.3 (ES256), with
** the clock injected, and against tokens this test signs itself with
** BearSSL (the A.3 private key) to reach every claim rule: a one-byte
** tamper, alg "none", an algorithm swap (HS256 "signed" with the RSA
** public key), an unknown kid, a key of the wrong type, a token naming
** its own key, the issuer and the authorized parties.
*/
#include <bearssl.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "auth.h"
#include "jwk.h"
#include "test.h"

/* RFC 7515, A.2: the RSA public key and the token. */
#define A2_N                                                                                       \
    "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4" \
    "d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5re" \
    "xMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxX" \
    "FvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ"
#define A_PAYLOAD                                                                                  \
    "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVl" \
    "fQ"
#define A2_TOKEN                                                                                   \
    "eyJhbGciOiJSUzI1NiJ9." A_PAYLOAD                                                              \
    ".cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp" \
    "5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHl" \
    "b1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9Q" \
    "OYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw"
/* RFC 7515, A.3: the EC P-256 key (d is the private part) and the token. */
#define A3_X "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU"
#define A3_Y "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"
#define A3_D "jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI"
#define A3_TOKEN                                                                                   \
    "eyJhbGciOiJFUzI1NiJ9." A_PAYLOAD                                                              \
    ".DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q"

/* The vectors' exp is 1300819380: a clock just before it. */
#define A_NOW_MS UINT64_C(1300819000000)
#define NOW_MS UINT64_C(1800000000000)

static const char RSA_JWKS[] = "{\"keys\":[{\"kty\":\"RSA\",\"n\":\"" A2_N "\",\"e\":\"AQAB\"}]}";
static const char EC_JWKS[] =
    "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"" A3_X "\",\"y\":\"" A3_Y "\"}]}";
/* Two keys with kids, and one that is skipped (an encryption key). */
static const char BOTH_JWKS[] =
    "{\"keys\":[{\"kty\":\"RSA\",\"use\":\"enc\",\"kid\":\"x\",\"n\":\"" A2_N "\",\"e\":\"AQAB\"},"
    "{\"kty\":\"RSA\",\"kid\":\"rsa1\",\"alg\":\"RS256\",\"n\":\"" A2_N "\",\"e\":\"AQAB\"},"
    "{\"kty\":\"EC\",\"kid\":\"ec1\",\"crv\":\"P-256\",\"x\":\"" A3_X "\",\"y\":\"" A3_Y "\"}]}";

static knit_jwks_t *parse(const char *json)
{
    knit_jwks_t *s = NULL;
    char why[200];
    int rc = knit_jwks_parse(json, strlen(json), &s, why, sizeof why);
    if (rc)
        fprintf(stderr, "jwks: %s\n", why);
    CHECK_OK(rc);
    return s;
}

static int verify(const char *tok, const knit_jwks_t *s, uint64_t now, const char *issuer,
                  const char *party, knit_jwt_claims_t *c, const char **why)
{
    knit_jwt_keys_t k;
    memset(&k, 0, sizeof k);
    k.jwks = s;
    k.issuer = issuer;
    k.parties = &party;
    k.nparties = party ? 1 : 0;
    k.skew_ms = 60000;
    return knit_jwt_verify_keys(tok, strlen(tok), &k, now, c, why);
}

/* The vectors verify: their payloads have no "sub", so the refusal that
** comes is the claims' one, after the signature passed.  Their exp is
** checked against the injected clock too (the claims are read). */
static void vector_ok(const char *tok, const char *jwks)
{
    knit_jwks_t *s = parse(jwks);
    const char *why;
    CHECK_EQ_INT(verify(tok, s, A_NOW_MS, NULL, NULL, NULL, &why), KNIT_EAUTH);
    CHECK(strcmp(why, "token sub is missing or not acceptable") == 0);
    knit_jwks_free(s);
}

/* A one-byte change anywhere in the signed part, or of the signature, is a
** bad signature. */
static void vector_tampered(const char *tok, const char *jwks)
{
    knit_jwks_t *s = parse(jwks);
    const char *dot = strrchr(tok, '.');
    size_t n = strlen(tok), sig = (size_t)(dot - tok) + 1;
    size_t at[] = {25, 40, (size_t)(dot - tok) - 2, sig + 5, n - 3};
    for (size_t i = 0; i < sizeof at / sizeof at[0]; i++) {
        char *t = strdup(tok);
        const char *why;
        t[at[i]] = t[at[i]] == 'A' ? 'B' : 'A';
        CHECK_EQ_INT(verify(t, s, A_NOW_MS, NULL, NULL, NULL, &why), KNIT_EAUTH);
        if (strcmp(why, "bad token signature") != 0 && strstr(why, "base64url") == NULL)
            fprintf(stderr, "tamper at %zu: %s\n", at[i], why);
        CHECK(strcmp(why, "bad token signature") == 0 || strstr(why, "base64url") != NULL);
        free(t);
    }
    knit_jwks_free(s);
}

static void rs256_vector(void)
{
    vector_ok(A2_TOKEN, RSA_JWKS);
    vector_tampered(A2_TOKEN, RSA_JWKS);
}

static void es256_vector(void)
{
    vector_ok(A3_TOKEN, EC_JWKS);
    vector_tampered(A3_TOKEN, EC_JWKS);
}

/* BearSSL's PKCS#1 verifier returns the hash it found; the check must
** compare it with the message's own: a one-byte change of the message
** (with the signature kept) is refused by knit_jws_check itself. */
static void rs256_hash_compared(void)
{
    knit_jwks_t *s = parse(RSA_JWKS);
    const char *dot = strrchr(A2_TOKEN, '.');
    uint8_t sig[512];
    size_t ns;
    char msg[256];
    size_t n = (size_t)(dot - A2_TOKEN);
    memcpy(msg, A2_TOKEN, n);
    CHECK_OK(knit_b64url_decode(dot + 1, strlen(dot + 1), sig, &ns));
    CHECK_EQ_INT(ns, 256);
    CHECK_OK(knit_jws_check(&s->keys[0], "RS256", msg, n, sig, ns));
    msg[30] ^= 1;
    CHECK_EQ_INT(knit_jws_check(&s->keys[0], "RS256", msg, n, sig, ns), KNIT_EAUTH);
    msg[30] ^= 1;
    CHECK_EQ_INT(knit_jws_check(&s->keys[0], "ES256", msg, n, sig, ns), KNIT_EAUTH);
    knit_jwks_free(s);
}

/* ---------------------------------------------------------------------- */
/* Tokens signed here (ES256, the A.3 key)                                  */

static char *b64(const void *p, size_t n)
{
    char *o = malloc((n * 4 + 2) / 3 + 1);
    knit_b64url_encode(p, n, o);
    return o;
}

/* header.payload signed with the P-256 private key d (base64url). */
static char *es256_token_with(const char *d64, const char *header, const char *payload)
{
    uint8_t d[32], hash[32], sig[64];
    size_t nd;
    br_ec_private_key sk;
    br_sha256_context h;
    char *hb = b64(header, strlen(header)), *pb = b64(payload, strlen(payload)), *sb, *t;
    size_t n = strlen(hb) + strlen(pb) + 1;
    CHECK_OK(knit_b64url_decode(d64, strlen(d64), d, &nd));
    sk.curve = BR_EC_secp256r1;
    sk.x = d;
    sk.xlen = nd;
    t = malloc(n + 100);
    snprintf(t, n + 100, "%s.%s", hb, pb);
    br_sha256_init(&h);
    br_sha256_update(&h, t, n);
    br_sha256_out(&h, hash);
    CHECK_EQ_INT(
        br_ecdsa_sign_raw_get_default()(br_ec_get_default(), &br_sha256_vtable, hash, &sk, sig),
        64);
    sb = b64(sig, 64);
    strcat(t, ".");
    strcat(t, sb);
    free(hb);
    free(pb);
    free(sb);
    return t;
}

static char *es256_token(const char *header, const char *payload)
{
    return es256_token_with(A3_D, header, payload);
}

/* A P-256 key whose x begins with a zero byte, made by python3-cryptography:
** x at its full 32 bytes, and as PyJWT 2.6 writes it, 31 (jwk.c note 5). */
#define Z_D "k-LwcXsq6Enki-vyA2VssJDL0winjCkOiI4129pvvkI"
#define Z_X_FULL "AORApk_jwuh00jNGWaI599R_AZ7sk5TEHzRprJlvuO8"
#define Z_X_SHORT "5ECmT-PC6HTSM0ZZojn31H8BnuyTlMQfNGmsmW-47w"
#define Z_Y "Co4I7hJwRf2-McQS__w9_5Ry6cUWOlmhpRqaqpEtY0A"
#define Z_JWKS(x, y)                                                                               \
    "{\"keys\":[{\"kty\":\"EC\",\"kid\":\"z\",\"crv\":\"P-256\","                                  \
    "\"x\":\"" x "\",\"y\":\"" y "\"}]}"

/* A coordinate without its leading zero byte is the same key; a shifted or
** over-long one is not. */
static void ec_short_coordinate(void)
{
    static const char ok[] = "{\"sub\":\"u1\",\"exp\":1800000600}";
    char *t = es256_token_with(Z_D, "{\"alg\":\"ES256\",\"kid\":\"z\"}", ok);
    knit_jwks_t *full = parse(Z_JWKS(Z_X_FULL, Z_Y)), *shrt = parse(Z_JWKS(Z_X_SHORT, Z_Y));
    knit_jwks_t *s = NULL;
    knit_jwt_claims_t c;
    const char *why;
    char err[200];
    CHECK_OK(verify(t, full, NOW_MS, NULL, NULL, &c, &why));
    CHECK_OK(verify(t, shrt, NOW_MS, NULL, NULL, &c, &why));
    CHECK(strcmp(c.sub, "u1") == 0);
    CHECK(memcmp(full->keys[0].q, shrt->keys[0].q, sizeof full->keys[0].q) == 0);
    /* y without its first byte (not zero) is another number: nothing verifies. */
    knit_jwks_free(shrt);
    shrt = parse(Z_JWKS(Z_X_FULL, "jgjuEnBF_b4xxBL__D3_lHLpxRY6WaGlGpqqkS1jQA"));
    CHECK_EQ_INT(verify(t, shrt, NOW_MS, NULL, NULL, &c, &why), KNIT_EAUTH);
    CHECK(strcmp(why, "bad token signature") == 0);
    /* 33 bytes (a zero byte added in front) is refused. */
    {
        static const char long_x[] = Z_JWKS("AADkQKZP48LodNIzRlmiOffUfwGe7JOUxB80aayZb7jv", Z_Y);
        CHECK_EQ_INT(knit_jwks_parse(long_x, strlen(long_x), &s, err, sizeof err), KNIT_EINVAL);
        CHECK(s == NULL);
    }
    knit_jwks_free(shrt);
    knit_jwks_free(full);
    free(t);
}

static void claims_checked(void)
{
    knit_jwks_t *s = parse(BOTH_JWKS);
    knit_jwt_claims_t c;
    const char *why;
    char *t;
    static const char ok[] = "{\"sub\":\"user_2abc\",\"iss\":\"https://clerk.example\","
                             "\"azp\":\"https://app.example\",\"exp\":1800000600,"
                             "\"iat\":1799999990,\"nbf\":1799999990}";
    CHECK_EQ_INT(s->n, 2); /* the "enc" key was skipped */

    t = es256_token("{\"alg\":\"ES256\",\"kid\":\"ec1\",\"typ\":\"JWT\"}", ok);
    CHECK_OK(verify(t, s, NOW_MS, "https://clerk.example", "https://app.example", &c, &why));
    CHECK(strcmp(c.sub, "user_2abc") == 0);
    CHECK_EQ_INT(c.exp_ms, UINT64_C(1800000600000));
    CHECK_EQ_INT(verify(t, s, NOW_MS, "https://other.example", NULL, &c, &why), KNIT_EAUTH);
    CHECK(strstr(why, "issuer") != NULL);
    CHECK_EQ_INT(verify(t, s, NOW_MS, NULL, "https://evil.example", &c, &why), KNIT_EAUTH);
    CHECK(strstr(why, "azp") != NULL);
    CHECK_EQ_INT(verify(t, s, NOW_MS + 3600000, NULL, NULL, &c, &why), KNIT_EAUTH);
    CHECK(strcmp(why, "token expired") == 0);
    free(t);

    /* Without azp, aud (string or array) must name the party. */
    t = es256_token("{\"alg\":\"ES256\",\"kid\":\"ec1\"}",
                    "{\"sub\":\"u1\",\"aud\":[\"a\",\"https://app.example\"],\"exp\":1800000600}");
    CHECK_OK(verify(t, s, NOW_MS, NULL, "https://app.example", &c, &why));
    CHECK_EQ_INT(verify(t, s, NOW_MS, NULL, "b", &c, &why), KNIT_EAUTH);
    free(t);

    /* An unknown kid is reported as such (a refetch may find it). */
    t = es256_token("{\"alg\":\"ES256\",\"kid\":\"rotated\"}", ok);
    CHECK_EQ_INT(verify(t, s, NOW_MS, NULL, NULL, &c, &why), KNIT_EAUTH);
    CHECK(c.unknown_kid);
    free(t);
    /* No kid, several keys: which one is not guessed. */
    t = es256_token("{\"alg\":\"ES256\"}", ok);
    CHECK_EQ_INT(verify(t, s, NOW_MS, NULL, NULL, &c, &why), KNIT_EAUTH);
    free(t);
    /* ES256 naming the RSA key: the type must match. */
    t = es256_token("{\"alg\":\"ES256\",\"kid\":\"rsa1\"}", ok);
    CHECK_EQ_INT(verify(t, s, NOW_MS, NULL, NULL, &c, &why), KNIT_EAUTH);
    CHECK(strstr(why, "type") != NULL);
    free(t);
    /* A token that names its own key is refused before any check. */
    t = es256_token("{\"alg\":\"ES256\",\"kid\":\"ec1\",\"jku\":\"https://evil.example/k\"}", ok);
    CHECK_EQ_INT(verify(t, s, NOW_MS, NULL, NULL, &c, &why), KNIT_EAUTH);
    CHECK(strstr(why, "jku") != NULL);
    free(t);
    knit_jwks_free(s);
}

static void hmac(const void *key, size_t kn, const char *msg, uint8_t out[32])
{
    br_hmac_key_context kc;
    br_hmac_context hc;
    br_hmac_key_init(&kc, &br_sha256_vtable, key, kn);
    br_hmac_init(&hc, &kc, 0);
    br_hmac_update(&hc, msg, strlen(msg));
    br_hmac_out(&hc, out);
}

/* alg "none", and HS256 "signed" with the provider's RSA public key (as
** text and as the modulus bytes): refused, also on a relay that accepts
** HS256 with its own secret. */
static void algorithm_swaps(void)
{
    knit_jwks_t *s = parse(RSA_JWKS);
    static const char payload[] = "{\"sub\":\"mallory\",\"exp\":1800000600}";
    const uint8_t secret[] = "a-relay-secret-of-at-least-32-bytes!!";
    const char *why;
    char *hb, *pb, *sb, t[2048];
    uint8_t mac[32];
    knit_jwt_keys_t k;

    memset(&k, 0, sizeof k);
    k.jwks = s;
    k.skew_ms = 60000;
    pb = b64(payload, strlen(payload));
    hb = b64("{\"alg\":\"none\"}", 14);
    snprintf(t, sizeof t, "%s.%s.", hb, pb);
    CHECK_EQ_INT(knit_jwt_verify_keys(t, strlen(t), &k, NOW_MS, NULL, &why), KNIT_EAUTH);
    free(hb);

    hb = b64("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", 27);
    for (int form = 0; form < 2; form++) {
        char signing[1024];
        snprintf(signing, sizeof signing, "%s.%s", hb, pb);
        if (form == 0)
            hmac(RSA_JWKS, strlen(RSA_JWKS), signing, mac);
        else
            hmac(s->keys[0].n, s->keys[0].nlen, signing, mac);
        sb = b64(mac, 32);
        snprintf(t, sizeof t, "%s.%s", signing, sb);
        free(sb);
        k.hs_key = NULL;
        CHECK_EQ_INT(knit_jwt_verify_keys(t, strlen(t), &k, NOW_MS, NULL, &why), KNIT_EAUTH);
        CHECK(strstr(why, "HS256") != NULL);
        k.hs_key = secret;
        k.hs_keylen = sizeof secret - 1;
        CHECK_EQ_INT(knit_jwt_verify_keys(t, strlen(t), &k, NOW_MS, NULL, &why), KNIT_EAUTH);
        CHECK(strcmp(why, "bad token signature") == 0);
    }
    free(hb);
    free(pb);
    knit_jwks_free(s);
}

/* Sets the parser refuses, with a reason. */
static void jwks_refusals(void)
{
    static const char *const bad[] = {
        "",
        "[]",
        "{\"keys\":{}}",
        "{\"keys\":[]}",
        "{\"keys\":[{\"kty\":\"oct\",\"k\":\"c2VjcmV0\"}]}",
        "{\"keys\":[{\"kty\":\"RSA\",\"n\":\"AQAB\",\"e\":\"AQAB\"}]}", /* 24-bit modulus */
        "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-384\",\"x\":\"" A3_X "\",\"y\":\"" A3_Y "\"}]}",
        "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"" A3_X "=\",\"y\":\"" A3_Y "\"}]}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        knit_jwks_t *s = NULL;
        char why[200] = "";
        CHECK_EQ_INT(knit_jwks_parse(bad[i], strlen(bad[i]), &s, why, sizeof why), KNIT_EINVAL);
        CHECK(s == NULL);
        CHECK(why[0] != '\0');
    }
}

KNIT_TESTS(T(rs256_vector), T(es256_vector), T(rs256_hash_compared), T(claims_checked),
           T(algorithm_swaps), T(jwks_refusals), T(ec_short_coordinate))
