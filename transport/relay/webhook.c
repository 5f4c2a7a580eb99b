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
**   4. Events name provider ids; the identity index (relay_store.h
**      knit_relay_store_identify) maps each to its account, whose
**      namespace may be named after an earlier id of the same person.
**   5. A delivery's effects (index, memberships, system rows merged as a
**      push from the relay's site, and the delivery id's record) are one
**      transaction, committed before the 2xx: a crash before it leaves
**      nothing, and the provider's retry applies it whole.  The delivery
**      id is read inside that transaction too, so two relays sharing a
**      store that get the same delivery apply it once.  An erasure is in
**      it where the store allows (PostgreSQL); the SQLite store's keeps
**      its own transactions (knit_webhook_store_t's erase_in_txn).
**   6. The store is a seam of callbacks (webhook.h knit_webhook_store_t)
**      rather than one store's handle: the same rules, in this file, run
**      on every backend that fills it, and this file includes neither
**      store's header beyond relay_store.h's result type's clear.
*/
#include "webhook.h"

#include <bearssl.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "cred.h"
#include "knit_errors.h"
#include "relay_store.h" /* knit_relay_ident_result_clear, for store.h's result type */
#include "sysrows.h"

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

/* Clerk's primary email: the entry of data.email_addresses whose id is
** data.primary_email_address_id (not the first entry), or NULL. */
static const char *primary_email(json_t *data)
{
    const char *want = json_string_value(json_object_get(data, "primary_email_address_id"));
    json_t *list = json_object_get(data, "email_addresses"), *e;
    size_t i;
    if (!want || !json_is_array(list))
        return NULL;
    json_array_foreach(list, i, e)
    {
        const char *id = json_string_value(json_object_get(e, "id"));
        if (id && strcmp(id, want) == 0)
            return json_string_value(json_object_get(e, "email_address"));
    }
    return NULL;
}

/* A profile value of data: its string, "" for JSON null (cleared), NULL
** when absent (unknown). */
static const char *field(json_t *data, const char *name)
{
    json_t *v = json_object_get(data, name);
    return json_is_null(v) ? "" : json_string_value(v);
}

static uint64_t ms_of(json_t *v)
{
    return json_is_integer(v) && json_integer_value(v) > 0 ? (uint64_t)json_integer_value(v) : 0;
}

/* What the delivery says, read before anything is changed. */
typedef struct event_s {
    const char *type;    /* the event type */
    const char *user;    /* the provider user id it is about, or NULL */
    const char *org;     /* organizationMembership.*: the organization's id */
    const char *role;    /* and the member's role */
    const char *session; /* session.created: the session's id */
    uint64_t updated;    /* data.updated_at (ms), 0 if none */
    uint64_t at;         /* session.created: data.created_at (ms), 0 if none */
    knit_ident_t ident;  /* user.created / user.updated: the person */
} event_t;

/* Reads ev from the JSON body; a reason in msg and 400 when it is not an
** event this relay can apply (0 when it is). */
static int read_event(json_t *root, event_t *ev, char *msg, size_t msgn)
{
    json_t *data = json_object_get(root, "data");
    memset(ev, 0, sizeof *ev);
    ev->type = json_string_value(json_object_get(root, "type"));
    if (!ev->type || !json_is_object(data)) {
        snprintf(msg, msgn, "not a webhook event (no type or data)");
        return 400;
    }
    ev->updated = ms_of(json_object_get(data, "updated_at"));
    if (strncmp(ev->type, "user.", 5) == 0) {
        ev->user = json_string_value(json_object_get(data, "id"));
        ev->ident.id = ev->user;
        ev->ident.email = primary_email(data);
        ev->ident.external_id = json_string_value(json_object_get(data, "external_id"));
        ev->ident.field[KNIT_PROFILE_FIRST_NAME] = field(data, "first_name");
        ev->ident.field[KNIT_PROFILE_LAST_NAME] = field(data, "last_name");
        ev->ident.field[KNIT_PROFILE_IMAGE_URL] = field(data, "image_url");
        ev->ident.updated_ms = ev->updated ? ev->updated : 1; /* an event, not a sign-in */
    } else if (strcmp(ev->type, "session.created") == 0) {
        ev->user = json_string_value(json_object_get(data, "user_id"));
        ev->session = json_string_value(json_object_get(data, "id"));
        ev->at = ms_of(json_object_get(data, "created_at"));
    } else if (strncmp(ev->type, "organizationMembership.", 23) == 0) {
        json_t *org = json_object_get(data, "organization");
        json_t *pud = json_object_get(data, "public_user_data");
        ev->org = json_string_value(json_object_get(org, "id"));
        ev->user = json_string_value(json_object_get(pud, "user_id"));
        ev->role = json_string_value(json_object_get(data, "role"));
        if (!ev->org) {
            snprintf(msg, msgn, "%s event without data.organization.id", ev->type);
            return 400;
        }
    } else {
        return 0; /* other events: recorded */
    }
    if (ev->user) {
        char ns[KNIT_PRINCIPAL_MAX];
        if (knit_auth_user_principal(ev->user, ns, sizeof ns) == 0)
            return 0;
    }
    snprintf(msg, msgn, "%s event without an acceptable user id", ev->type);
    return 400;
}

/* Applies ev to the open group: the identity index, memberships, and the
** rows of the account's system tables (site NULL: none). */
static int apply_event(const knit_webhook_store_t *w, const char *id, const event_t *ev,
                       uint64_t now_ms, const knit_site_t *site, uint64_t stamp,
                       knit_ident_result_t *r, knit_webhook_effect_t *fx, int *mstale)
{
    knit_ident_t in;
    knit_batch_t *b = NULL;
    int rc;
    int user = strncmp(ev->type, "user.", 5) == 0;
    int session = strcmp(ev->type, "session.created") == 0;
    int member = strncmp(ev->type, "organizationMembership.", 23) == 0;

    if (!user && !session && !member)
        return 0;
    if (user) {
        in = ev->ident;
    } else {
        memset(&in, 0, sizeof in);
        in.id = ev->user;
    }
    if ((rc = w->identify(w->data, &in, now_ms, r)) != 0)
        return rc;
    snprintf(fx->account, sizeof fx->account, "%s", r->account);
    snprintf(fx->moved_ns, sizeof fx->moved_ns, "%s", r->moved_from);
    if (r->erased)
        return 0;
    if (r->merged_seq) {
        /* A provisional account's cells were merged into the account. */
        snprintf(fx->wrote_ns, sizeof fx->wrote_ns, "%s", r->account);
        fx->seq = r->merged_seq;
    }
    if (member && (rc = w->membership(w->data, ev->org, ev->user, r->account, ev->role,
                                      strcmp(ev->type, "organizationMembership.deleted") != 0,
                                      ev->updated ? ev->updated : now_ms, mstale)) != 0)
        return rc;
    if (!site ||
        !((user && r->tracks[0] && (r->changed || r->new_row)) || (session && r->tracks[1])))
        return 0;
    if ((rc = knit_batch_new(&b)) != 0)
        return rc;
    if (user)
        rc = knit__sysrows_profile(b, r->account, site, stamp, r);
    else
        rc = knit__sysrows_activity(b, r->account, site, stamp, ev->session ? ev->session : id,
                                    ev->user, "session.created", ev->at ? ev->at : now_ms, "clerk");
    if (rc == 0 && b->nchanges) {
        uint64_t last = 0;
        if ((rc = w->apply(w->data, r->account, b, &last)) == 0 && last) {
            snprintf(fx->wrote_ns, sizeof fx->wrote_ns, "%s", r->account);
            fx->seq = last;
        }
    }
    knit_batch_free(b);
    return rc;
}

int knit__webhook_deliver(const knit_webhook_store_t *w, const uint8_t *key, size_t keylen,
                          const char *id, const char *ts, const char *sigs, const void *body,
                          size_t n, uint64_t now_ms, const knit_site_t *site, uint64_t stamp,
                          char *msg, size_t msgn, knit_webhook_effect_t *fx) /* see webhook.h */
{
    char ns[KNIT_PRINCIPAL_MAX];
    knit_ident_result_t r;
    const char *why;
    json_t *root;
    json_error_t err;
    event_t ev;
    size_t erased = 0;
    int seen = 0, stale = 0, mstale = 0, cleared = 0, rc, status, del, txn, durable = 0;

    memset(fx, 0, sizeof *fx);
    memset(&r, 0, sizeof r);
    if (knit_webhook_verify(key, keylen, id, ts, sigs, body, n, now_ms, &why) != 0) {
        snprintf(msg, msgn, "%s", why);
        return 401;
    }
    root = json_loadb(body, n, JSON_REJECT_DUPLICATES, &err);
    if ((status = read_event(root, &ev, msg, msgn)) != 0) {
        json_decref(root);
        return status;
    }
    status = 200;
    del = strcmp(ev.type, "user.deleted") == 0;
    /* Design note 5: the index, the rows and the delivery's record commit
    ** together, before the 200; the delivery id is read inside. */
    txn = !del || w->erase_in_txn;
    if (txn && (rc = w->begin(w->data)) != 0)
        goto failed;
    if ((rc = w->seen(w->data, id, &seen)) != 0)
        goto failed;
    if (seen) {
        w->rollback(w->data);
        snprintf(msg, msgn, "duplicate delivery %s: already applied", id);
        goto out;
    }
    if (ev.user)
        knit_auth_user_principal(ev.user, ns, sizeof ns);
    if (del) {
        /* The account the id resolves to (its namespace may be named after
        ** an earlier id, design note 4), else user:<id>. */
        if ((rc = w->ident_get(w->data, ev.user, fx->account)) != 0)
            goto failed;
        if (!fx->account[0])
            snprintf(fx->account, sizeof fx->account, "%s", ns);
        rc = w->erase_account(w->data, fx->account, &erased);
        if (rc != 0 && rc != KNIT_ENOTFOUND)
            goto failed;
        durable = !txn; /* done whatever follows: its sessions must end */
        snprintf(fx->erased_ns, sizeof fx->erased_ns, "%s", fx->account);
        if ((!txn && (rc = w->begin(w->data)) != 0) ||
            (rc = w->record(w->data, id, ev.user, ev.updated, &stale)) != 0 ||
            (rc = w->commit(w->data)) != 0)
            goto failed;
        snprintf(msg, msgn, "%s: erased %zu namespace%s", ev.type, erased, erased == 1 ? "" : "s");
        goto out;
    }
    /* The provider made the user (again): its tokens are accepted again. */
    if (strcmp(ev.type, "user.created") == 0 && (rc = w->unerase(w->data, ns, &cleared)) != 0)
        goto failed;
    if ((rc = apply_event(w, id, &ev, now_ms, site, stamp, &r, fx, &mstale)) != 0 ||
        (rc = w->record(w->data, id, ev.user, ev.updated, &stale)) != 0 ||
        (rc = w->commit(w->data)) != 0)
        goto failed;
    stale |= r.stale || mstale;
    if (strncmp(ev.type, "organizationMembership.", 23) == 0 && !mstale && fx->account[0])
        snprintf(fx->member_ns, sizeof fx->member_ns, "%s", fx->account);
    snprintf(msg, msgn, "%s: %s%s%s%s%s%s", ev.type,
             stale ? "stale (a later update was applied)" : "recorded",
             fx->account[0] ? " for " : "", fx->account,
             r.action == KNIT_IDENT_RELINKED ? " (id relinked by email)" : "",
             fx->wrote_ns[0] ? "; rows written" : "",
             cleared ? "; the erased account may sign in again" : "");
out:
    knit_relay_ident_result_clear(&r);
    json_decref(root);
    return status;
failed:
    snprintf(msg, msgn, "store failed: %s", w->errmsg(w->data));
    w->rollback(w->data);
    if (!durable)
        memset(fx, 0, sizeof *fx); /* nothing of it took effect */
    knit_relay_ident_result_clear(&r);
    json_decref(root);
    return 503;
}
