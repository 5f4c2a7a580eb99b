/*
** webhook.c: Svix-style webhook signatures (API in webhook.h).
**
** Design notes
**   1. base64 here is RFC 4648's standard alphabet with padding.  It is
**      decoded by the strict base64url codec of transport/wire/cred.c
**      after mapping '+' '/' to '-' '_' and dropping the padding, which
**      must be exactly what the length asks for.
**   2. The timestamp is checked before the HMAC is computed, and the
**      signature before the body is parsed (by the caller): a replayed
**      old delivery costs nothing, a forged one never reaches JSON.
**   3. Each "v1," candidate is decoded to 32 bytes and compared with the
**      expected MAC by knit_ct_equal; other versions are skipped.
*/
#include "webhook.h"

#include <bearssl.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "cred.h"
#include "knit_errors.h"

/* Standard base64 s[0..n) into out (holds (n * 3) / 4); note 1. */
static int b64_std(const char *s, size_t n, uint8_t *out, size_t *outn)
{
    char tmp[128];
    size_t k = n;
    if (n == 0 || n > sizeof tmp || n % 4 != 0)
        return KNIT_EINVAL;
    while (k > 0 && s[k - 1] == '=' && n - k < 2)
        k--;
    for (size_t i = 0; i < k; i++) {
        char c = s[i];
        if (c == '-' || c == '_' || c == '=')
            return KNIT_EINVAL;
        tmp[i] = c == '+' ? '-' : c == '/' ? '_' : c;
    }
    return knit_b64url_decode(tmp, k, out, outn) == 0 ? 0 : KNIT_EINVAL;
}

int knit_webhook_secret(const char *secret, uint8_t key[64], size_t *n) /* see webhook.h */
{
    uint8_t buf[96];
    size_t len;
    *n = 0;
    if (!secret || strncmp(secret, "whsec_", 6) != 0)
        return KNIT_EINVAL;
    len = strlen(secret + 6);
    if (len > 88 || b64_std(secret + 6, len, buf, n) != 0 || *n < 16 || *n > 64) {
        *n = 0;
        return KNIT_EINVAL;
    }
    memcpy(key, buf, *n);
    return 0;
}

int knit_webhook_verify(const uint8_t *key, size_t keylen, const char *id, const char *ts,
                        const char *sigs, const void *body, size_t n, uint64_t now_ms,
                        const char **why) /* see webhook.h */
{
    br_hmac_key_context kc;
    br_hmac_context hc;
    uint8_t mac[32];
    uint64_t t = 0, now_s = now_ms / 1000;
    size_t tl = ts ? strlen(ts) : 0;
    const char *p;
    int ok = 0;

    if (!id || !*id || !ts || !sigs) {
        *why = "missing svix-id, svix-timestamp or svix-signature";
        return KNIT_EAUTH;
    }
    if (tl == 0 || tl > 12) {
        *why = "bad webhook timestamp";
        return KNIT_EAUTH;
    }
    for (size_t i = 0; i < tl; i++) {
        if (ts[i] < '0' || ts[i] > '9') {
            *why = "bad webhook timestamp";
            return KNIT_EAUTH;
        }
        t = t * 10 + (uint64_t)(ts[i] - '0');
    }
    if (t + KNIT_WEBHOOK_TOLERANCE_S < now_s || t > now_s + KNIT_WEBHOOK_TOLERANCE_S) {
        *why = "webhook timestamp too far from now (replayed or clock skew)";
        return KNIT_EAUTH;
    }
    br_hmac_key_init(&kc, &br_sha256_vtable, key, keylen);
    br_hmac_init(&hc, &kc, 0);
    br_hmac_update(&hc, id, strlen(id));
    br_hmac_update(&hc, ".", 1);
    br_hmac_update(&hc, ts, tl);
    br_hmac_update(&hc, ".", 1);
    br_hmac_update(&hc, body, n);
    br_hmac_out(&hc, mac);
    for (p = sigs; *p;) {
        const char *end;
        uint8_t cand[48];
        size_t cn;
        while (*p == ' ')
            p++;
        end = p;
        while (*end && *end != ' ')
            end++;
        if (end - p > 3 && strncmp(p, "v1,", 3) == 0 &&
            b64_std(p + 3, (size_t)(end - p - 3), cand, &cn) == 0 && cn == sizeof mac)
            ok |= knit_ct_equal(cand, mac, sizeof mac);
        p = end;
    }
    if (!ok) {
        *why = "bad webhook signature";
        return KNIT_EAUTH;
    }
    return 0;
}

int knit__webhook_deliver(knit_relay_store_t *s, const uint8_t *key, size_t keylen, const char *id,
                          const char *ts, const char *sigs, const void *body, size_t n,
                          uint64_t now_ms, char *msg, size_t msgn) /* see webhook.h */
{
    char ns[KNIT_PRINCIPAL_MAX];
    const char *why, *type, *user = NULL;
    json_t *root, *data, *upd;
    json_error_t err;
    uint64_t updated = 0;
    size_t erased = 0;
    int seen = 0, stale = 0, rc, status = 200;

    if (knit_webhook_verify(key, keylen, id, ts, sigs, body, n, now_ms, &why) != 0) {
        snprintf(msg, msgn, "%s", why);
        return 401;
    }
    root = json_loadb(body, n, JSON_REJECT_DUPLICATES, &err);
    data = json_object_get(root, "data");
    type = json_string_value(json_object_get(root, "type"));
    if (!type || !json_is_object(data)) {
        json_decref(root);
        snprintf(msg, msgn, "not a webhook event (no type or data)");
        return 400;
    }
    if (strncmp(type, "user.", 5) == 0) {
        user = json_string_value(json_object_get(data, "id"));
        upd = json_object_get(data, "updated_at");
        if (json_is_integer(upd) && json_integer_value(upd) > 0)
            updated = (uint64_t)json_integer_value(upd);
        if (!user || knit_auth_user_principal(user, ns, sizeof ns) != 0) {
            json_decref(root);
            snprintf(msg, msgn, "%s event without an acceptable data.id", type);
            return 400;
        }
    }
    if ((rc = knit_relay_store_webhook_seen(s, id, &seen)) != 0)
        goto failed;
    if (seen) {
        snprintf(msg, msgn, "duplicate delivery %s: already applied", id);
        goto out;
    }
    if (strcmp(type, "user.deleted") == 0) {
        rc = knit_relay_store_erase_account(s, ns, &erased);
        if (rc != 0 && rc != KNIT_ENOTFOUND)
            goto failed;
    }
    if ((rc = knit_relay_store_webhook_record(s, id, user, updated, &stale)) != 0)
        goto failed;
    if (strcmp(type, "user.deleted") == 0)
        snprintf(msg, msgn, "%s: erased %zu namespace%s", type, erased, erased == 1 ? "" : "s");
    else
        snprintf(msg, msgn, "%s: %s", type,
                 stale ? "stale (a later update was applied)" : "recorded");
out:
    json_decref(root);
    return status;
failed:
    snprintf(msg, msgn, "store failed: %s", knit_relay_store_errmsg(s));
    json_decref(root);
    return 503;
}
