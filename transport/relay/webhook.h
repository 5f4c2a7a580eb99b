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
*/
#ifndef KNIT_RELAY_WEBHOOK_H
#define KNIT_RELAY_WEBHOOK_H

#include <stddef.h>
#include <stdint.h>

#include "cred.h"
#include "relay_store.h"

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

/* One delivery to POST /v1/webhooks/clerk, handled against the store:
** signature and timestamp (above), then the body as JSON {"type", "data"}
** as Clerk sends it, then, once per delivery id (a retry is answered 200
** and changes nothing):
**   user.deleted   the account data.id resolves to (else user:<data.id>)
**                  is erased with the anonymous namespaces it claimed and
**                  its identity (knit_relay_store_erase_account), leaving a
**                  tombstone that refuses its tokens;
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
** HLC), merged as a replica's push is.  Everything but an erasure is one
** transaction, committed before the answer.  Returns the HTTP status (200
** after the effect is durable; 400 for a body that is not such JSON, 401
** for a bad signature or timestamp, 503 when the store fails, so the
** provider retries) with a one-line reason in msg, and fills *fx. */
int knit__webhook_deliver(knit_relay_store_t *s, const uint8_t *key, size_t keylen, const char *id,
                          const char *ts, const char *sigs, const void *body, size_t n,
                          uint64_t now_ms, const knit_site_t *site, uint64_t stamp, char *msg,
                          size_t msgn, knit_webhook_effect_t *fx /* OUT */);

#ifdef __cplusplus
}
#endif
#endif
