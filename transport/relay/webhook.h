/*
** webhook.h: signed webhook deliveries as Svix sends them for Clerk
** (the "Standard Webhooks" scheme), without I/O: the check of a
** delivery's signature and timestamp, before its body is believed.
**
** A delivery carries three headers, svix-id, svix-timestamp and
** svix-signature (or webhook-id, webhook-timestamp, webhook-signature).
** The signed content is id "." timestamp "." body; the signature is
** HMAC-SHA256 under the secret, the base64 bytes after "whsec_".  The
** signature header is a space-separated list of "v1,<base64>"; any one
** that matches passes (a provider rotating its secret sends two).
**
** The deliveries' effects go through a seam of their own,
** knit_webhook_store_t below, not a particular store: the SQLite store
** fills one (relay_store.h knit_relay_store_webhooks) and so does the
** PostgreSQL store (store_pg.h knit_pg_store_webhooks).  The relay (relay.c)
** picks which; this file knows neither.
*/
#ifndef KNIT_RELAY_WEBHOOK_H
#define KNIT_RELAY_WEBHOOK_H

#include <stddef.h>
#include <stdint.h>

#include "cred.h"
#include "knit.h"
#include "store.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KNIT_WEBHOOK_TOLERANCE_S 300 /* a timestamp further from now is refused */

/* The key of a "whsec_..." secret into key[0..64), its length into *n;
** KNIT_EINVAL when the secret is not "whsec_" and base64 of 16..64 bytes. */
int knit_webhook_secret(const char *secret, uint8_t key[64], size_t *n /* OUT */);

/* 0 if sigs holds a v1 signature of id "." ts "." body[0..n) under key
** and ts (decimal seconds) is within KNIT_WEBHOOK_TOLERANCE_S of now_ms;
** else KNIT_EAUTH with a static reason in *why.  Signatures are compared
** in constant time. */
int knit_webhook_verify(const uint8_t *key, size_t keylen, const char *id, const char *ts,
                        const char *sigs, const void *body, size_t n, uint64_t now_ms,
                        const char **why /* OUT */);

/* The store a delivery is applied to.  Every callback gets data; each
** returns 0 or a KNIT_E* code with the reason in errmsg().  Strings and
** batches passed in are only read during the call.
**
** A delivery is one transaction (webhook.c design note 5): begin, then
** the calls below, then commit, which makes all of them durable at once
** (or rollback: none of them took effect; a no-op when none is open).
** Only erase_account may need transactions of its own: erase_in_txn = 0
** says it is called with none open and commits itself (the SQLite
** store's erasure runs its own transactions, then checkpoints and
** truncates the WAL); then the delivery's record follows in a
** transaction of its own. */
typedef struct knit_webhook_store_s {
    int (*begin)(void *data);     /* opens the delivery's transaction */
    int (*commit)(void *data);    /* makes it durable; on failure nothing of it took effect */
    void (*rollback)(void *data); /* abandons it (no-op when none is open) */
    /* *seen = 1 when delivery id was recorded before (a retry).  Inside the
    ** transaction, so that a backend shared by several relays sees a
    ** delivery another one is applying once it committed. */
    int (*seen)(void *data, const char *id, int *seen /* OUT */);
    /* Records delivery id, inside the transaction; for an event about user
    ** with updated_ms > 0, *stale = 1 when an event of that user with a
    ** later updated_at was recorded before (else the user's updated_at
    ** becomes updated_ms; relay_store.h knit_relay_store_webhook_record). */
    int (*record)(void *data, const char *id, const char *user, uint64_t updated_ms,
                  int *stale /* OUT */);
    /* The account of provider id `id` into account ("" when none); reads. */
    int (*ident_get)(void *data, const char *id, char account[KNIT_IDENT_NS_MAX] /* OUT */);
    /* Erases account ns as relay_store.h's knit_relay_store_erase_account:
    ** its tombstone, ns, the anonymous namespaces it claimed, their
    ** devices and its identity; *erased counts the namespaces.
    ** KNIT_ENOTFOUND when nothing was stored (the rest done all the same). */
    int (*erase_account)(void *data, const char *ns, size_t *erased /* OUT */);
    int erase_in_txn; /* 1: erase_account runs inside the transaction; 0: see above */
    /* Removes the tombstone of ns (*cleared = 1 when there was one). */
    int (*unerase)(void *data, const char *ns, int *cleared /* OUT */);
    /* The identity index, as store.h's identify, inside the transaction;
    ** out is cleared by the caller (knit_relay_ident_result_clear). */
    int (*identify)(void *data, const knit_ident_t *in, uint64_t now_ms,
                    knit_ident_result_t *out /* OUT */);
    /* Records an organization membership (relay_store.h
    ** knit_relay_store_membership's rules, *stale for an older event). */
    int (*membership)(void *data, const char *org, const char *user_id, const char *account,
                      const char *role, int present, uint64_t updated_ms, int *stale /* OUT */);
    /* Merges b, changes of namespace ns from the relay's own site, as a
    ** push (store.h's commit rules); *last_seq = ns's sequence after it (0
    ** when nothing won).  Relays sharing the store learn of it at commit
    ** (store.h attach); the caller tells this relay's engine. */
    int (*apply)(void *data, const char *ns, const knit_batch_t *b, uint64_t *last_seq /* OUT */);
    /* Text of the last failure ("" if none), valid until the next call. */
    const char *(*errmsg)(void *data);
    void *data; /* passed to every callback */
} knit_webhook_store_t;

/* What a delivery changed that the relay must act on. */
typedef struct knit_webhook_effect_s {
    char account[KNIT_PRINCIPAL_MAX];   /* the account the event is about, or "" */
    char erased_ns[KNIT_PRINCIPAL_MAX]; /* user.deleted: the account erased (end its
                                           sessions), else "" */
    char moved_ns[KNIT_PRINCIPAL_MAX];  /* a provisional account an id left (end its
                                           sessions: they sign in to account), else "" */
    char wrote_ns[KNIT_PRINCIPAL_MAX];  /* the namespace rows were written into (its live
                                           subscribers must read them), else "" */
    uint64_t seq;                       /* wrote_ns's sequence after the write */
    char member_ns[KNIT_PRINCIPAL_MAX]; /* the account whose organization membership
                                           or role changed (its sessions must take
                                           their new grants), else "" */
} knit_webhook_effect_t;

/* One delivery to POST /v1/webhooks/clerk, handled against the store w:
** signature and timestamp (above), then the body as JSON {"type", "data"}
** as Clerk sends it, then, once per delivery id (a retry is answered 200
** and changes nothing):
**   user.deleted   the account data.id resolves to (else user:<data.id>)
**                  is erased with the anonymous namespaces it claimed and
**                  its identity (w->erase_account), leaving a tombstone
**                  that refuses its tokens;
**   user.created   the tombstone of user:<data.id>, if any, is removed;
**                  then as user.updated;
**   user.updated   data.id, the primary email (the entry of email_addresses
**                  named by primary_email_address_id), external_id and the
**                  profile go through the identity index; the profile's
**                  changed fields are written to the account's knit_profile
**                  row unless the event is older (updated_at) than the last
**                  applied ("stale");
**   session.created  a knit_activity row (id data.id, user data.user_id,
**                  action "session.created", at data.created_at, source
**                  "clerk") in the account of data.user_id;
**   organizationMembership.created / .deleted  the membership of
**                  data.public_user_data.user_id in data.organization.id,
**                  with data.role, unless older than the one recorded;
**   other events   recorded.
** Rows are written only when site is not NULL and a device of the account
** tracks the table, as changes from site stamped `stamp` (the relay's
** HLC), merged as a replica's push is.  Everything is one transaction,
** committed before the answer (an erasure where w->erase_in_txn is 0: its
** own, then the record's).  Returns the HTTP status (200
** after the effect is durable; 400 for a body that is not such JSON, 401
** for a bad signature or timestamp, 503 when the store fails, so the
** provider retries) with a one-line reason in msg, and fills *fx. */
int knit__webhook_deliver(const knit_webhook_store_t *w, const uint8_t *key, size_t keylen,
                          const char *id, const char *ts, const char *sigs, const void *body,
                          size_t n, uint64_t now_ms, const knit_site_t *site, uint64_t stamp,
                          char *msg, size_t msgn, knit_webhook_effect_t *fx /* OUT */);

#ifdef __cplusplus
}
#endif
#endif
