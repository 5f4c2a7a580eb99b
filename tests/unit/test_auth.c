/*
** test_auth.c: the relay's credential checks (transport/auth.h).
**
** Every refusal the relay promises: a wrong anonymous secret, expired and
** not-yet-valid tokens, forged signatures, alg "none" and other algorithms,
** a missing or unsafe sub, malformed base64url and JSON; and that valid
** tokens, including minted ones, are accepted.
*/
#include <bearssl.h>
#include <string.h>

#include "alloc.h"
#include "auth.h"
#include "sysrows.h"
#include "test.h"

static const uint8_t KEY[] = "0123456789abcdef0123456789abcdef-relay-test-key";
#define KEYLEN (sizeof KEY - 1)
#define NOW UINT64_C(1700000000000) /* ms */

/* Builds header.payload.signature from raw JSON texts, signing with key
** (or with the given signature segment when sig is not NULL). */
static char *make_token(const char *header, const char *payload, const uint8_t *key, size_t keylen,
                        const char *sig)
{
    static char out[16384];
    size_t k = knit_b64url_encode((const uint8_t *)header, strlen(header), out);
    out[k++] = '.';
    k += knit_b64url_encode((const uint8_t *)payload, strlen(payload), out + k);
    if (sig) {
        out[k++] = '.';
        strcpy(out + k, sig);
        return out;
    }
    br_hmac_key_context kc;
    br_hmac_context hc;
    uint8_t mac[32];
    br_hmac_key_init(&kc, &br_sha256_vtable, key, keylen);
    br_hmac_init(&hc, &kc, 0);
    br_hmac_update(&hc, out, k);
    br_hmac_out(&hc, mac);
    out[k++] = '.';
    knit_b64url_encode(mac, 32, out + k);
    return out;
}

#define HS "{\"alg\":\"HS256\",\"typ\":\"JWT\"}"

static int verify(const char *tok, const char **why)
{
    knit_jwt_claims_t c;
    return knit_jwt_verify(tok, strlen(tok), KEY, KEYLEN, NOW, KNIT_JWT_SKEW_MS, &c, why);
}

static void expect_refused(const char *tok, const char *fragment)
{
    const char *why = NULL;
    int rc = verify(tok, &why);
    if (rc != KNIT_EAUTH || !why || (fragment && !strstr(why, fragment))) {
        fprintf(stderr, "token %s: rc %d why %s (wanted '%s')\n", tok, rc, why ? why : "-",
                fragment ? fragment : "");
        CHECK(0);
    }
}

static void jwt_valid(void)
{
    knit_jwt_claims_t c;
    const char *why;
    char *t = make_token(HS, "{\"sub\":\"alice\",\"exp\":1700003600,\"iat\":1700000000}", KEY,
                         KEYLEN, NULL);
    CHECK_OK(knit_jwt_verify(t, strlen(t), KEY, KEYLEN, NOW, KNIT_JWT_SKEW_MS, &c, &why));
    CHECK_STR(c.sub, "alice");
    CHECK_EQ_INT(c.exp_ms, UINT64_C(1700003600000));
    CHECK_EQ_INT(c.iat_ms, NOW);

    /* Extra claims of any shape are skipped; escapes decode; no typ is fine. */
    t = make_token("{\"alg\":\"HS256\",\"kid\":\"k1\"}",
                   " { \"aud\" : [\"a\", {\"x\": [1, 2.5e3, true, null]}], \"s\\u0075b\":"
                   " \"auth0|12.3@x\", \"exp\": 1700003600.75, \"nbf\": 1699999990 } ",
                   KEY, KEYLEN, NULL);
    CHECK_OK(knit_jwt_verify(t, strlen(t), KEY, KEYLEN, NOW, KNIT_JWT_SKEW_MS, &c, &why));
    CHECK_STR(c.sub, "auth0|12.3@x");

    /* Within the skew allowance. */
    t = make_token(HS, "{\"sub\":\"a\",\"exp\":1699999970}", KEY, KEYLEN, NULL);
    CHECK_OK(verify(t, &why));
    t = make_token(HS, "{\"sub\":\"a\",\"exp\":1800000000,\"nbf\":1700000030}", KEY, KEYLEN, NULL);
    CHECK_OK(verify(t, &why));
}

static void jwt_expired(void)
{
    char *t = make_token(HS, "{\"sub\":\"alice\",\"exp\":1699999000}", KEY, KEYLEN, NULL);
    expect_refused(t, "expired");
    t = make_token(HS, "{\"sub\":\"alice\",\"exp\":1700000000}", KEY, KEYLEN, NULL);
    const char *why;
    knit_jwt_claims_t c;
    CHECK_EQ_INT(knit_jwt_verify(t, strlen(t), KEY, KEYLEN, NOW, 0, &c, &why), KNIT_EAUTH);
    /* No exp at all. */
    t = make_token(HS, "{\"sub\":\"alice\"}", KEY, KEYLEN, NULL);
    expect_refused(t, "exp");
    /* exp of the wrong type or out of range. */
    t = make_token(HS, "{\"sub\":\"alice\",\"exp\":\"1800000000\"}", KEY, KEYLEN, NULL);
    expect_refused(t, "type");
    t = make_token(HS, "{\"sub\":\"alice\",\"exp\":-1}", KEY, KEYLEN, NULL);
    expect_refused(t, "range");
    t = make_token(HS, "{\"sub\":\"alice\",\"exp\":1.8e9}", KEY, KEYLEN, NULL);
    expect_refused(t, "range");
    t = make_token(HS, "{\"sub\":\"alice\",\"exp\":99999999999999999999999}", KEY, KEYLEN, NULL);
    expect_refused(t, "range");
}

static void jwt_not_yet_valid(void)
{
    char *t = make_token(HS, "{\"sub\":\"alice\",\"exp\":1800000000,\"nbf\":1700000600}", KEY,
                         KEYLEN, NULL);
    expect_refused(t, "not yet valid");
    t = make_token(HS, "{\"sub\":\"alice\",\"exp\":1800000000,\"iat\":1700000600}", KEY, KEYLEN,
                   NULL);
    expect_refused(t, "future");
}

static void jwt_forged(void)
{
    static const uint8_t other[] = "another-key-that-is-long-enough-to-use-here!";
    char *t =
        make_token(HS, "{\"sub\":\"alice\",\"exp\":1800000000}", other, sizeof other - 1, NULL);
    expect_refused(t, "signature");

    /* A valid token with its payload swapped for another user's. */
    char good[1024], evil[1024];
    strcpy(good, make_token(HS, "{\"sub\":\"alice\",\"exp\":1800000000}", KEY, KEYLEN, NULL));
    strcpy(evil, make_token(HS, "{\"sub\":\"mallory\",\"exp\":1800000000}", KEY, KEYLEN, NULL));
    char *sig = strrchr(good, '.');
    strcpy(strrchr(evil, '.'), sig);
    expect_refused(evil, "signature");

    /* Signature truncated, extended, or one bit flipped. */
    strcpy(evil, good);
    evil[strlen(evil) - 1] = '\0';
    expect_refused(evil, NULL);
    strcpy(evil, good);
    strcat(evil, "AA");
    expect_refused(evil, NULL);
    strcpy(evil, good);
    char *last = strrchr(evil, '.') + 1;
    last[0] = last[0] == 'A' ? 'B' : 'A';
    expect_refused(evil, "signature");
    /* Empty signature. */
    strcpy(evil, good);
    strrchr(evil, '.')[1] = '\0';
    expect_refused(evil, "signature");
}

static void jwt_alg_none(void)
{
    char *t = make_token("{\"alg\":\"none\",\"typ\":\"JWT\"}",
                         "{\"sub\":\"alice\",\"exp\":1800000000}", KEY, KEYLEN, "");
    expect_refused(t, "algorithm");
    /* "none" even with a correct HMAC attached. */
    t = make_token("{\"alg\":\"none\"}", "{\"sub\":\"alice\",\"exp\":1800000000}", KEY, KEYLEN,
                   NULL);
    expect_refused(t, "algorithm");
    t = make_token("{\"alg\":\"None\"}", "{\"sub\":\"alice\",\"exp\":1800000000}", KEY, KEYLEN,
                   NULL);
    expect_refused(t, "algorithm");
    t = make_token("{\"typ\":\"JWT\"}", "{\"sub\":\"alice\",\"exp\":1800000000}", KEY, KEYLEN,
                   NULL);
    expect_refused(t, "alg");
    t = make_token("{\"alg\":null}", "{\"sub\":\"alice\",\"exp\":1800000000}", KEY, KEYLEN, NULL);
    expect_refused(t, NULL);
}

static void jwt_wrong_alg(void)
{
    static const char *algs[] = {"HS512", "HS384", "RS256",  "ES256",
                                 "PS256", "hs256", "HS256 ", "HS2560"};
    char hdr[64];
    for (size_t i = 0; i < sizeof algs / sizeof algs[0]; i++) {
        snprintf(hdr, sizeof hdr, "{\"alg\":\"%s\"}", algs[i]);
        char *t = make_token(hdr, "{\"sub\":\"alice\",\"exp\":1800000000}", KEY, KEYLEN, NULL);
        expect_refused(t, "algorithm");
    }
    /* A very long alg. */
    char *t = make_token("{\"alg\":\"HS256HS256HS256HS256HS256HS256HS256HS256\"}",
                         "{\"sub\":\"alice\",\"exp\":1800000000}", KEY, KEYLEN, NULL);
    expect_refused(t, "algorithm");
    /* Critical extensions are refused; typ must be JWT. */
    t = make_token("{\"alg\":\"HS256\",\"crit\":[\"b64\"],\"b64\":false}",
                   "{\"sub\":\"alice\",\"exp\":1800000000}", KEY, KEYLEN, NULL);
    expect_refused(t, "critical");
    t = make_token("{\"alg\":\"HS256\",\"typ\":\"JWE\"}", "{\"sub\":\"alice\",\"exp\":1800000000}",
                   KEY, KEYLEN, NULL);
    expect_refused(t, "typ");
    /* Duplicate alg: which one would count? Neither. */
    t = make_token("{\"alg\":\"none\",\"alg\":\"HS256\"}", "{\"sub\":\"a\",\"exp\":1800000000}",
                   KEY, KEYLEN, NULL);
    expect_refused(t, "duplicate");
}

static void jwt_sub(void)
{
    char *t = make_token(HS, "{\"exp\":1800000000}", KEY, KEYLEN, NULL);
    expect_refused(t, "sub");
    t = make_token(HS, "{\"sub\":\"\",\"exp\":1800000000}", KEY, KEYLEN, NULL);
    expect_refused(t, "sub");
    t = make_token(HS, "{\"sub\":\"bob:x\",\"exp\":1800000000}", KEY, KEYLEN, NULL);
    expect_refused(t, "sub");
    t = make_token(HS, "{\"sub\":\"../anon\",\"exp\":1800000000}", KEY, KEYLEN, NULL);
    expect_refused(t, "sub");
    t = make_token(HS, "{\"sub\":\"a b\",\"exp\":1800000000}", KEY, KEYLEN, NULL);
    expect_refused(t, "sub");
    t = make_token(HS, "{\"sub\":\"a\\u0000b\",\"exp\":1800000000}", KEY, KEYLEN, NULL);
    expect_refused(t, "sub");
    t = make_token(HS, "{\"sub\":42,\"exp\":1800000000}", KEY, KEYLEN, NULL);
    expect_refused(t, "type");
    t = make_token(HS, "{\"sub\":\"alice\",\"sub\":\"bob\",\"exp\":1800000000}", KEY, KEYLEN, NULL);
    expect_refused(t, "duplicate");
    /* Escaped duplicate: "s\u0075b" is "sub". */
    t = make_token(HS, "{\"sub\":\"alice\",\"s\\u0075b\":\"bob\",\"exp\":1800000000}", KEY, KEYLEN,
                   NULL);
    expect_refused(t, "duplicate");
    char payload[512];
    memset(payload, 0, sizeof payload);
    strcpy(payload, "{\"sub\":\"");
    memset(payload + strlen(payload), 'x', KNIT_JWT_MAX_SUB + 1);
    strcat(payload, "\",\"exp\":1800000000}");
    t = make_token(HS, payload, KEY, KEYLEN, NULL);
    expect_refused(t, "sub");
    CHECK(knit_auth_sub_ok("alice@example.com"));
    CHECK(!knit_auth_sub_ok("user:alice"));
    CHECK(!knit_auth_sub_ok("a/b"));
    CHECK(!knit_auth_sub_ok(""));
}

static void jwt_malformed(void)
{
    char good[1024], bad[1200];
    strcpy(good, make_token(HS, "{\"sub\":\"alice\",\"exp\":1800000000}", KEY, KEYLEN, NULL));
    CHECK_OK(verify(good, NULL));

    /* Padding, standard-alphabet characters, whitespace. */
    snprintf(bad, sizeof bad, "%s=", good);
    expect_refused(bad, NULL);
    strcpy(bad, good);
    bad[3] = '+';
    expect_refused(bad, "base64url");
    strcpy(bad, good);
    bad[5] = '/';
    expect_refused(bad, "base64url");
    snprintf(bad, sizeof bad, " %s", good);
    expect_refused(bad, NULL);
    /* Part counts. */
    expect_refused("abc", "three");
    expect_refused("a.b", "three");
    expect_refused("a.b.c.d", "three");
    expect_refused("..", "empty");
    expect_refused("", NULL);
    /* Non-zero spare bits ("QR" decodes to 'A' plus a stray bit). */
    {
        uint8_t out[8];
        size_t n;
        CHECK_OK(knit_b64url_decode("QQ", 2, out, &n));
        CHECK_EQ_INT(n, 1);
        CHECK_EQ_INT(knit_b64url_decode("QR", 2, out, &n), KNIT_ECORRUPT);
        CHECK_EQ_INT(knit_b64url_decode("Q", 1, out, &n), KNIT_ECORRUPT);
        CHECK_EQ_INT(knit_b64url_decode("QQ==", 4, out, &n), KNIT_ECORRUPT);
    }
    /* Broken JSON, each signed correctly so only the JSON is at fault. */
    static const char *payloads[] = {
        "{\"sub\":\"alice\",\"exp\":1800000000,}",
        "{\"sub\":\"alice\",\"exp\":1800000000",
        "{\"sub\":\"alice\",\"exp\":1800000000}x",
        "{\"sub\":\"alice\" \"exp\":1800000000}",
        "{'sub':'alice','exp':1800000000}",
        "[\"sub\",\"alice\"]",
        "{\"sub\":\"ali\001ce\",\"exp\":1800000000}", /* a control character */
        "{\"sub\":\"alice\",\"exp\":01800000000}",
        "{\"sub\":\"alice\",\"exp\":1800000000,\"x\":[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]}",
        "{\"sub\":\"alice\",\"exp\":1800000000,\"x\":\"\\ud800\"}",
        "{\"sub\":\"alice\",\"exp\":1800000000,\"x\":\"\xc0\xaf\"}",
        "{\"sub\":\"alice\",\"exp\":1800000000,\"x\":tru}",
        "",
    };
    for (size_t i = 0; i < sizeof payloads / sizeof payloads[0]; i++) {
        char *t = make_token(HS, payloads[i], KEY, KEYLEN, NULL);
        expect_refused(t, NULL);
    }
    char *t =
        make_token("{\"alg\":\"HS256\"", "{\"sub\":\"a\",\"exp\":1800000000}", KEY, KEYLEN, NULL);
    expect_refused(t, NULL);
    /* Too long a token; an embedded NUL. */
    static char huge[KNIT_JWT_MAX_TOKEN + 10];
    memset(huge, 'A', sizeof huge - 1);
    expect_refused(huge, "too long");
    {
        const char *why;
        knit_jwt_claims_t c;
        CHECK_EQ_INT(knit_jwt_verify(good, strlen(good) + 1, KEY, KEYLEN, NOW, 0, &c, &why),
                     KNIT_EAUTH);
    }
    /* A key too short to be a key. */
    CHECK_EQ_INT(knit_jwt_verify(good, strlen(good), KEY, 8, NOW, 0, NULL, NULL), KNIT_EINVAL);
}

static void jwt_mint_roundtrip(void)
{
    char *t;
    knit_jwt_claims_t c;
    CHECK_OK(knit_jwt_mint(KEY, KEYLEN, "alice@example.com", NOW, 3600, &t));
    CHECK_OK(knit_jwt_verify(t, strlen(t), KEY, KEYLEN, NOW + 1000, KNIT_JWT_SKEW_MS, &c, NULL));
    CHECK_STR(c.sub, "alice@example.com");
    CHECK_EQ_INT(c.exp_ms, NOW + 3600000);
    /* It expires, and another key does not open it. */
    CHECK_EQ_INT(knit_jwt_verify(t, strlen(t), KEY, KEYLEN, NOW + 3600000 + KNIT_JWT_SKEW_MS,
                                 KNIT_JWT_SKEW_MS, &c, NULL),
                 KNIT_EAUTH);
    static const uint8_t other[] = "another-key-that-is-long-enough-to-use-here!";
    CHECK_EQ_INT(knit_jwt_verify(t, strlen(t), other, sizeof other - 1, NOW, 0, &c, NULL),
                 KNIT_EAUTH);
    knit__free(t);
    CHECK_EQ_INT(knit_jwt_mint(KEY, KEYLEN, "bad:sub", NOW, 60, &t), KNIT_EINVAL);
    CHECK_EQ_INT(knit_jwt_mint(KEY, KEYLEN, "ok", NOW, 0, &t), KNIT_EINVAL);
    CHECK_EQ_INT(knit_jwt_mint(KEY, 10, "ok", NOW, 60, &t), KNIT_EINVAL);
}

static void anon_credentials(void)
{
    uint8_t salt[KNIT_ANON_SALT_LEN], hash[KNIT_ANON_HASH_LEN], h2[KNIT_ANON_HASH_LEN];
    const char *secret = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0";
    memset(salt, 7, sizeof salt);
    knit_anon_hash(salt, "device-1", secret, hash);
    CHECK_OK(knit_anon_check(salt, hash, "device-1", secret));
    CHECK_EQ_INT(knit_anon_check(salt, hash, "device-1", "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV1"),
                 KNIT_EAUTH);
    CHECK_EQ_INT(knit_anon_check(salt, hash, "device-2", secret), KNIT_EAUTH);
    CHECK_EQ_INT(knit_anon_check(salt, hash, "device-1", "short"), KNIT_EAUTH);
    /* The salt matters. */
    salt[0] ^= 1;
    knit_anon_hash(salt, "device-1", secret, h2);
    CHECK(memcmp(hash, h2, sizeof hash) != 0);
    CHECK(knit_anon_id_ok("Ab_9-z"));
    CHECK(!knit_anon_id_ok(""));
    CHECK(!knit_anon_id_ok("a:b"));
    CHECK(!knit_anon_id_ok("a.b"));
    char longid[80];
    memset(longid, 'a', sizeof longid - 1);
    longid[sizeof longid - 1] = '\0';
    CHECK(!knit_anon_id_ok(longid));
    longid[KNIT_ANON_ID_MAX] = '\0';
    CHECK(knit_anon_id_ok(longid));
    CHECK(!knit_anon_secret_ok("0123456789abcde"));
    CHECK(knit_anon_secret_ok("0123456789abcdef"));
}

static void grants(void)
{
    char p[KNIT_PRINCIPAL_MAX];
    CHECK_OK(knit_auth_anon_principal("dev1", p, sizeof p));
    CHECK_STR(p, "anon:dev1");
    CHECK(knit_auth_granted(p, "anon:dev1"));
    CHECK(!knit_auth_granted(p, "anon:dev2"));
    CHECK(!knit_auth_granted(p, "anon:dev1x"));
    CHECK(!knit_auth_granted(p, "user:dev1"));
    CHECK_OK(knit_auth_user_principal("alice", p, sizeof p));
    CHECK_STR(p, "user:alice");
    CHECK(knit_auth_granted(p, "user:alice"));
    CHECK(!knit_auth_granted(p, "user:bob"));
    CHECK(!knit_auth_granted("", ""));
    CHECK_EQ_INT(knit_auth_user_principal("a:b", p, sizeof p), KNIT_EINVAL);
    CHECK_EQ_INT(knit_auth_anon_principal("dev1", p, 6), KNIT_EINVAL);
    CHECK(knit_ct_equal("abc", "abc", 3));
    CHECK(!knit_ct_equal("abc", "abd", 3));
}

/* Organization roles and claims (proto_server.c design note 17): Clerk's
** role names with and without "org:", v2 ("o") and v1 (org_id) claims. */
static void org_roles(void)
{
    static const struct {
        const char *name;
        int role;
    } roles[] = {{"org:admin", KNIT_ROLE_ADMIN},
                 {"admin", KNIT_ROLE_ADMIN},
                 {"owner", KNIT_ROLE_ADMIN},
                 {"org:member", KNIT_ROLE_MEMBER},
                 {"basic_member", KNIT_ROLE_MEMBER},
                 {"editor", KNIT_ROLE_MEMBER},
                 {"org:viewer", KNIT_ROLE_VIEWER},
                 {"guest", KNIT_ROLE_VIEWER},
                 {"superuser", KNIT_ROLE_VIEWER},
                 {"", KNIT_ROLE_VIEWER},
                 {NULL, KNIT_ROLE_VIEWER}};
    for (size_t i = 0; i < sizeof roles / sizeof roles[0]; i++)
        CHECK_EQ_INT(knit_auth_role(roles[i].name), roles[i].role);
    CHECK(knit_auth_role("org:member") > knit_auth_role("org:viewer"));
    char ns[KNIT_PRINCIPAL_MAX];
    CHECK_OK(knit_auth_org_ns("org_29abc", ns, sizeof ns));
    CHECK_STR(ns, "org:org_29abc");
    CHECK_EQ_INT(knit_auth_org_ns("a:b", ns, sizeof ns), KNIT_EINVAL);
    CHECK_EQ_INT(knit_auth_org_ns("", ns, sizeof ns), KNIT_EINVAL);

    knit_token_profile_t tp;
    CHECK_OK(
        knit__token_profile(make_token(HS,
                                       "{\"sub\":\"u1\",\"iat\":1700000000,\"o\":{\"id\":\"org_1\","
                                       "\"rol\":\"admin\",\"slg\":\"acme\"}}",
                                       KEY, KEYLEN, NULL),
                            &tp));
    CHECK_STR(tp.org, "org_1");
    CHECK_STR(tp.org_role, "admin");
    CHECK_EQ_INT(tp.iat_ms, NOW);
    knit__token_profile_free(&tp);
    CHECK_OK(knit__token_profile(
        make_token(HS, "{\"sub\":\"u1\",\"org_id\":\"org_2\",\"org_role\":\"org:viewer\"}", KEY,
                   KEYLEN, NULL),
        &tp));
    CHECK_STR(tp.org, "org_2");
    CHECK_STR(tp.org_role, "org:viewer");
    CHECK_EQ_INT(tp.iat_ms, 0);
    knit__token_profile_free(&tp);
    CHECK_OK(knit__token_profile(make_token(HS, "{\"sub\":\"u1\"}", KEY, KEYLEN, NULL), &tp));
    CHECK(tp.org == NULL && tp.org_role == NULL);
    knit__token_profile_free(&tp);
}

KNIT_TESTS(T(jwt_valid), T(jwt_expired), T(jwt_not_yet_valid), T(jwt_forged), T(jwt_alg_none),
           T(jwt_wrong_alg), T(jwt_sub), T(jwt_malformed), T(jwt_mint_roundtrip),
           T(anon_credentials), T(grants), T(org_roles))
